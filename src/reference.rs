//! Reference data (SPEC §2): `contracts.csv`, `balances.csv`, `vouchers.csv`,
//! `history.csv`. Strict: any bad row makes the input unusable (exit 2), and every
//! problem is listed, each with its file and line.

use crate::csvread::{read_rows, Columns, Row};
use crate::ids::{intern_product, is_valid_id, is_valid_product, parse_uin, Product, Uin};
use crate::money::{Exact8, Money, NumberError};
use crate::snapshot::Snapshot;
use crate::time::{Cycle, Month, Ts};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// The cycle a contract applies to: a postpaid cycle, or prepaid orders.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum ContractCycle {
    Postpaid(Cycle),
    Prepaid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContractKind {
    /// The rate paid, 0 < rate ≤ 1.
    Discount(Exact8),
    /// The price per unit (postpaid only).
    UnitPrice(Exact8),
    /// (from quantity, price per unit) with the first tier from 0, ascending (postpaid only).
    Tiered(Vec<(Exact8, Exact8)>),
    /// The order's price whatever its list price (prepaid only).
    FixedPrice(Money),
}

/// A contract as a ledger line names it: its owner (the pricing UIN) and its id.
/// Made once per contract when the reference data is loaded and never freed (as
/// interned product codes are): the millions of lines of a day priced by it each
/// hold one plain pointer, with no reference count for their threads to share.
#[derive(Debug, PartialEq, Eq)]
pub struct ContractName {
    pub owner_uin: Uin,
    pub contract_id: Box<str>,
}

pub type ContractRef = &'static ContractName;

impl ContractName {
    pub fn leak(owner_uin: Uin, contract_id: &str) -> ContractRef {
        Box::leak(Box::new(ContractName { owner_uin, contract_id: contract_id.into() }))
    }
}

#[derive(Clone, Debug)]
pub struct Contract {
    pub name: ContractRef,
    pub owner_uin: Uin,
    pub product: String,
    pub cycle: ContractCycle,
    pub kind: ContractKind,
    pub valid_from: Ts,
    pub valid_to: Option<Ts>,
}

impl Contract {
    pub fn is_valid_at(&self, t: Ts) -> bool {
        self.valid_from <= t && self.valid_to.is_none_or(|to| t < to)
    }
}

/// Contracts by (owner, product, cycle); validated so that at most one is valid at any instant.
#[derive(Default, Debug)]
pub struct Contracts {
    /// Each key's contracts in a slice of their own (one, mostly): collected in
    /// place, the lists kept the room for four of the list they were grown in,
    /// ~300 bytes of slack a contract.
    by_key: rustc_hash::FxHashMap<(Uin, Product, ContractCycle), Box<[Contract]>>,
    /// The owners of any contract: most accounts have none, and this small set
    /// (kilobytes, in cache) turns them away before the product's text is hashed
    /// and the large map probed.
    owners: rustc_hash::FxHashSet<Uin>,
}

impl Contracts {
    /// Every contract's name, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = ContractRef> + '_ {
        self.by_key.values().flatten().map(|c| c.name)
    }

    pub fn applicable(&self, owner: Uin, product: Product, cycle: ContractCycle, t: Ts) -> Option<&Contract> {
        if !self.owners.contains(&owner) {
            return None;
        }
        self.by_key.get(&(owner, product, cycle))?.iter().find(|c| c.is_valid_at(t))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VoucherScope {
    Prepaid,
    Postpaid,
    All,
}

#[derive(Clone, Debug)]
pub struct Voucher {
    pub voucher_id: String,
    pub owner_uin: Uin,
    pub amount: Money,
    pub valid_from: Ts,
    pub valid_to: Ts,
    /// Empty = every product.
    pub products: BTreeSet<String>,
    pub scope: VoucherScope,
    pub min_charge: Option<Money>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpeningBalance {
    pub cash: Money,
    pub gift: Money,
    pub credit_limit: Money,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRow {
    pub org_id: String,
    pub month: Month,
    pub member_uin: Uin,
    pub product: String,
    pub total: Money,
}

/// All reference data of an input directory.
#[derive(Default, Debug)]
pub struct Reference {
    pub contracts: Contracts,
    pub balances: BTreeMap<Uin, OpeningBalance>,
    /// By owner, then voucher_id.
    pub vouchers: BTreeMap<Uin, Vec<Voucher>>,
    pub history: Vec<HistoryRow>,
}

impl Reference {
    pub fn load(input: &Path, snapshot: &Snapshot) -> Result<Reference, Vec<String>> {
        // The four files are read on all cores; their problems are listed in file order.
        let (mut p1, mut p2, mut p3, mut p4) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let ((contracts, balances), (vouchers, history)) = rayon::join(
            || {
                rayon::join(
                    || load_contracts(&input.join("contracts.csv"), snapshot, &mut p1),
                    || load_balances(&input.join("balances.csv"), snapshot, &mut p2),
                )
            },
            || {
                rayon::join(
                    || load_vouchers(&input.join("vouchers.csv"), snapshot, &mut p3),
                    || load_history(&input.join("history.csv"), snapshot, &mut p4),
                )
            },
        );
        let problems: Vec<String> = [p1, p2, p3, p4].concat();
        if problems.is_empty() {
            Ok(Reference { contracts, balances, vouchers, history })
        } else {
            Err(problems)
        }
    }
}

/// Collects the problems of one reference file, each with its line.
struct Problems<'a> {
    file: &'static str,
    out: &'a mut Vec<String>,
}

impl Problems<'_> {
    fn at(&mut self, line: u64, message: impl std::fmt::Display) {
        self.out.push(format!("{} line {line}: {message}", self.file));
    }
}

fn read_strict(
    path: &Path,
    file: &'static str,
    columns: &Columns,
    problems: &mut Vec<String>,
    mut on_row: impl FnMut(u64, Vec<&str>, &mut Problems),
) {
    let mut p = Problems { file, out: problems };
    let result = read_rows(path, file, columns, None, |row| match row {
        Row::Bad { line, message, .. } => p.at(line, format!("bad_row: {message}")),
        Row::Fields { line, fields } => on_row(line, fields.all(), &mut p),
    });
    if let Err(e) = result {
        problems.push(e.to_string());
    }
}

fn uin_in_snapshot(text: &str, column: &str, snapshot: &Snapshot) -> Result<Uin, String> {
    let uin = parse_uin(text).ok_or_else(|| format!("{column} {text:?} is not a UIN"))?;
    snapshot.find(uin).map(|_| uin).ok_or_else(|| format!("{column} {uin} is not an account of the snapshot"))
}

fn money_field(text: &str, column: &str) -> Result<Money, String> {
    Money::parse(text).map_err(|e| match e {
        NumberError::Scale => format!("{column} {text:?} is not a whole number of fen"),
        other => format!("{column} {text:?}: {other}"),
    })
}

fn exact8_field(text: &str, column: &str) -> Result<Exact8, String> {
    Exact8::parse(text).map_err(|e| match e {
        NumberError::Scale => format!("{column} {text:?} has more than 8 fractional digits"),
        other => format!("{column} {text:?}: {other}"),
    })
}

fn ts_field(text: &str, column: &str) -> Result<Ts, String> {
    Ts::parse(text).ok_or_else(|| format!("{column} {text:?} is not an RFC 3339 timestamp with an offset"))
}

fn id_field(text: &str, column: &str) -> Result<String, String> {
    valid_id(text, column).map(str::to_string)
}

fn valid_id<'t>(text: &'t str, column: &str) -> Result<&'t str, String> {
    if is_valid_id(text) {
        Ok(text)
    } else {
        Err(format!("{column} {text:?} is not a valid id"))
    }
}

fn product_field(text: &str) -> Result<String, String> {
    if is_valid_product(text) {
        Ok(text.to_string())
    } else {
        Err(format!("product {text:?} is not a product code"))
    }
}

fn load_contracts(path: &Path, snapshot: &Snapshot, problems: &mut Vec<String>) -> Contracts {
    let columns = Columns {
        required: &["contract_id", "owner_uin", "product", "cycle", "kind", "value", "valid_from"],
        optional: &["valid_to"],
    };
    let mut all: Vec<(u64, Contract)> = Vec::new();
    // Keyed by the leaked names' ids: no copy of an id a row.
    let mut ids: rustc_hash::FxHashMap<&'static str, u64> = rustc_hash::FxHashMap::default();
    read_strict(path, "contracts.csv", &columns, problems, |line, f, p| {
        let parsed = (|| -> Result<Contract, String> {
            let contract_id = valid_id(f[0], "contract_id")?;
            let owner_uin = uin_in_snapshot(f[1], "owner_uin", snapshot)?;
            let product = product_field(f[2])?;
            let cycle = match f[3] {
                "prepaid" => ContractCycle::Prepaid,
                other => ContractCycle::Postpaid(Cycle::parse(other).ok_or_else(|| format!("cycle {other:?} is unknown"))?),
            };
            let value = f[5];
            let kind = match (f[4], cycle) {
                ("discount", _) => {
                    let rate = exact8_field(value, "value")?;
                    if !rate.is_positive() || rate > Exact8::ONE {
                        return Err(format!("discount rate {value:?} must be > 0 and ≤ 1"));
                    }
                    ContractKind::Discount(rate)
                }
                ("unit_price", ContractCycle::Postpaid(_)) => {
                    let price = exact8_field(value, "value")?;
                    if price.is_negative() {
                        return Err(format!("unit price {value:?} is negative"));
                    }
                    ContractKind::UnitPrice(price)
                }
                ("tiered", ContractCycle::Postpaid(_)) => ContractKind::Tiered(parse_tiers(value)?),
                ("fixed_price", ContractCycle::Prepaid) => {
                    let price = money_field(value, "value")?;
                    if price.is_negative() {
                        return Err(format!("fixed price {value:?} is negative"));
                    }
                    ContractKind::FixedPrice(price)
                }
                ("unit_price" | "tiered", ContractCycle::Prepaid) => {
                    return Err(format!("kind {} is for postpaid cycles only", f[4]))
                }
                ("fixed_price", _) => return Err("kind fixed_price is for the prepaid cycle only".into()),
                (other, _) => return Err(format!("kind {other:?} is unknown")),
            };
            let valid_from = ts_field(f[6], "valid_from")?;
            let valid_to = if f[7].is_empty() { None } else { Some(ts_field(f[7], "valid_to")?) };
            if valid_to.is_some_and(|to| to <= valid_from) {
                return Err("valid_from is not before valid_to".into());
            }
            let name = ContractName::leak(owner_uin, contract_id);
            Ok(Contract { name, owner_uin, product, cycle, kind, valid_from, valid_to })
        })();
        match parsed {
            Err(message) => p.at(line, message),
            Ok(c) => {
                if let Some(first) = ids.insert(&c.name.contract_id, line) {
                    p.at(line, format!("contract_id {} already appears on line {first}", c.name.contract_id));
                } else {
                    all.push((line, c));
                }
            }
        }
    });
    let mut by_key: rustc_hash::FxHashMap<(Uin, Product, ContractCycle), Vec<(u64, Contract)>> = rustc_hash::FxHashMap::default();
    for (line, c) in all {
        by_key.entry((c.owner_uin, intern_product(&c.product), c.cycle)).or_default().push((line, c));
    }
    let mut ambiguous = Vec::new();
    for list in by_key.values_mut() {
        list.sort_by(|a, b| a.1.valid_from.cmp(&b.1.valid_from).then(a.1.name.contract_id.cmp(&b.1.name.contract_id)));
        for i in 0..list.len() {
            for j in i + 1..list.len() {
                let (a, b) = (&list[i].1, &list[j].1);
                if a.valid_to.is_none_or(|to| b.valid_from < to) && b.valid_to.is_none_or(|to| a.valid_from < to) {
                    ambiguous.push(format!(
                        "contracts.csv line {}: contracts {} and {} (line {}) of owner {} for {} {:?} overlap: ambiguous price",
                        list[j].0, a.name.contract_id, b.name.contract_id, list[i].0, a.owner_uin, a.product, a.cycle
                    ));
                }
            }
        }
    }
    ambiguous.sort();
    problems.extend(ambiguous);
    Contracts {
        owners: by_key.keys().map(|k| k.0).collect(),
        by_key: by_key.into_iter().map(|(k, v)| (k, v.into_iter().map(|(_, c)| c).collect::<Vec<_>>().into_boxed_slice())).collect(),
    }
}

/// `0:0.50|100:0.40|1000:0.30`: the first tier starts at 0, thresholds ascend.
pub fn parse_tiers(text: &str) -> Result<Vec<(Exact8, Exact8)>, String> {
    let mut tiers = Vec::new();
    for part in text.split('|') {
        let (from, price) = part.split_once(':').ok_or_else(|| format!("tier {part:?} is not FROM:PRICE"))?;
        let from = exact8_field(from, "tier start")?;
        let price = exact8_field(price, "tier price")?;
        if price.is_negative() {
            return Err(format!("tier price in {part:?} is negative"));
        }
        if let Some(&(last, _)) = tiers.last() {
            if from <= last {
                return Err(format!("tier starts in {text:?} do not ascend"));
            }
        } else if from != Exact8::ZERO {
            return Err(format!("the first tier of {text:?} does not start at 0"));
        }
        tiers.push((from, price));
    }
    Ok(tiers)
}

fn load_balances(path: &Path, snapshot: &Snapshot, problems: &mut Vec<String>) -> BTreeMap<Uin, OpeningBalance> {
    let columns = Columns { required: &["uin", "cash", "gift", "credit_limit"], optional: &[] };
    let mut out = BTreeMap::new();
    let mut lines: HashMap<Uin, u64> = HashMap::new();
    read_strict(path, "balances.csv", &columns, problems, |line, f, p| {
        let parsed = (|| -> Result<(Uin, OpeningBalance), String> {
            let uin = uin_in_snapshot(f[0], "uin", snapshot)?;
            let cash = money_field(f[1], "cash")?;
            let gift = money_field(f[2], "gift")?;
            let credit_limit = money_field(f[3], "credit_limit")?;
            if gift.is_negative() {
                return Err(format!("gift {} is negative", f[2]));
            }
            if credit_limit.is_negative() {
                return Err(format!("credit_limit {} is negative", f[3]));
            }
            Ok((uin, OpeningBalance { cash, gift, credit_limit }))
        })();
        match parsed {
            Err(message) => p.at(line, message),
            Ok((uin, balance)) => {
                if let Some(first) = lines.insert(uin, line) {
                    p.at(line, format!("uin {uin} already has a balance on line {first}"));
                } else {
                    out.insert(uin, balance);
                }
            }
        }
    });
    out
}

fn load_vouchers(path: &Path, snapshot: &Snapshot, problems: &mut Vec<String>) -> BTreeMap<Uin, Vec<Voucher>> {
    let columns = Columns {
        required: &["voucher_id", "owner_uin", "kind", "amount", "valid_from", "valid_to", "products", "scope"],
        optional: &["min_charge"],
    };
    let mut out: BTreeMap<Uin, Vec<Voucher>> = BTreeMap::new();
    let mut ids: HashMap<String, u64> = HashMap::new();
    read_strict(path, "vouchers.csv", &columns, problems, |line, f, p| {
        let parsed = (|| -> Result<Voucher, String> {
            let voucher_id = id_field(f[0], "voucher_id")?;
            let owner_uin = uin_in_snapshot(f[1], "owner_uin", snapshot)?;
            if f[2] != "voucher" && f[2] != "cash_coupon" {
                return Err(format!("kind {:?} is neither voucher nor cash_coupon", f[2]));
            }
            let amount = money_field(f[3], "amount")?;
            if !amount.is_positive() {
                return Err(format!("amount {} is not positive", f[3]));
            }
            let valid_from = ts_field(f[4], "valid_from")?;
            let valid_to = ts_field(f[5], "valid_to")?;
            if valid_to <= valid_from {
                return Err("valid_from is not before valid_to".into());
            }
            let products = if f[6].is_empty() {
                BTreeSet::new()
            } else {
                f[6].split('|').map(product_field).collect::<Result<BTreeSet<_>, _>>()?
            };
            let scope = match f[7] {
                "prepaid" => VoucherScope::Prepaid,
                "postpaid" => VoucherScope::Postpaid,
                "all" => VoucherScope::All,
                other => return Err(format!("scope {other:?} is not prepaid, postpaid or all")),
            };
            let min_charge = if f[8].is_empty() {
                None
            } else {
                let m = money_field(f[8], "min_charge")?;
                if m.is_negative() {
                    return Err(format!("min_charge {} is negative", f[8]));
                }
                Some(m)
            };
            Ok(Voucher { voucher_id, owner_uin, amount, valid_from, valid_to, products, scope, min_charge })
        })();
        match parsed {
            Err(message) => p.at(line, message),
            Ok(v) => {
                if let Some(first) = ids.insert(v.voucher_id.clone(), line) {
                    p.at(line, format!("voucher_id {} already appears on line {first}", v.voucher_id));
                } else {
                    out.entry(v.owner_uin).or_default().push(v);
                }
            }
        }
    });
    for list in out.values_mut() {
        list.sort_by(|a, b| a.voucher_id.cmp(&b.voucher_id));
    }
    out
}

fn load_history(path: &Path, snapshot: &Snapshot, problems: &mut Vec<String>) -> Vec<HistoryRow> {
    let columns = Columns { required: &["org_id", "month", "member_uin", "product", "total"], optional: &[] };
    let mut out = Vec::new();
    let mut keys: HashMap<(String, Month, Uin, String), u64> = HashMap::new();
    read_strict(path, "history.csv", &columns, problems, |line, f, p| {
        let parsed = (|| -> Result<HistoryRow, String> {
            let month = Month::parse(f[1]).ok_or_else(|| format!("month {:?} is not YYYY-MM", f[1]))?;
            let member_uin = uin_in_snapshot(f[2], "member_uin", snapshot)?;
            let (org, _) = snapshot.find(member_uin).expect("checked just above");
            if org.org_id != f[0] {
                return Err(format!("member {member_uin} belongs to org {}, not {:?}", org.org_id, f[0]));
            }
            let product = product_field(f[3])?;
            let total = money_field(f[4], "total")?;
            Ok(HistoryRow { org_id: f[0].to_string(), month, member_uin, product, total })
        })();
        match parsed {
            Err(message) => p.at(line, message),
            Ok(h) => {
                let key = (h.org_id.clone(), h.month, h.member_uin, h.product.clone());
                if let Some(first) = keys.insert(key, line) {
                    p.at(line, format!("the same org, month, member and product already appear on line {first}"));
                } else {
                    out.push(h);
                }
            }
        }
    });
    out.sort_by(|a, b| (&a.org_id, a.month, a.member_uin, &a.product).cmp(&(&b.org_id, b.month, b.member_uin, &b.product)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_parse_and_validate() {
        let t = parse_tiers("0:0.50|100:0.40|1000:0.30").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[1].0, Exact8::parse("100").unwrap());
        assert!(parse_tiers("10:0.5").unwrap_err().contains("does not start at 0"));
        assert!(parse_tiers("0:0.5|0:0.4").unwrap_err().contains("do not ascend"));
        assert!(parse_tiers("0:-1").is_err());
    }
}
