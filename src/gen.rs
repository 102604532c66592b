//! `orgsettle gen`: a deterministic synthetic input directory for a seed, at any
//! scale, exercising every rule (SPEC §13). It streams: a day's usage rows are
//! written as they are drawn, so memory grows with accounts, not rows.
//!
//! Shape: organization sizes are skewed (a few large, many small); each account
//! owns resources in proportion to a skewed weight; a resource pushes one record per
//! settlement period, ~70% of rows hourly, ~25% daily, ~5% monthly (monthly rows only
//! on a month's last day, when the month has ended); payer periods start and end
//! mid-month; members leave; one organization in 500 is created at noon of the
//! first day (its accounts' earlier usage is `before_org`).
//!
//! What a real push gets wrong, in small shares: late hourly rows (0.5%, the day
//! before), upstream retries (0.1%, exact repeats), bad timestamps (0.05%), and one
//! row of each other usage reject of SPEC §14 in every 10,000 (`USAGE_FAULTS`,
//! at fixed places, so that a small day has them all too). Each day's orders,
//! recharges and transfers likewise carry every reject and refusal that applies
//! to them, at fixed places. `tests/gen.rs` settles a generated input and checks
//! that every one of them shows.
//!
//! The scale benchmark keeps generated inputs between runs: a change of what this
//! writes must bump `GEN_SHAPE` in `benches/scale.py`, so that they are made again.

use crate::time::{Day, Ts};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenOptions {
    pub orgs: u64,
    pub accounts: u64,
    pub days: u64,
    pub usage_per_day: u64,
    pub seed: u64,
    pub start: Day,
}

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }
}

const PRODUCTS: [(&str, u64); 6] = [("cvm", 12_000), ("cbs", 3_500), ("cos", 800), ("cdn", 450), ("cdb", 9_000), ("clb", 2_000)];
const REGIONS: [&str; 4] = ["ap-guangzhou", "ap-shanghai", "ap-beijing", "ap-hongkong"];

const HOUR: i64 = 3_600_000_000_000;
const DAY: i64 = 24 * HOUR;
/// A UIN no generated snapshot holds (generated UINs start at 100000000001).
const UNKNOWN_UIN: u64 = 99_999_999_999;

/// The usage rejects written at fixed places: one of each in every `FAULT_EVERY`
/// rows, whatever the seed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum UsageFault {
    /// A negative quantity (`bad_value`).
    NegativeQuantity,
    /// A quantity with 9 fractional digits (`bad_amount_scale`).
    NineDigits,
    /// `list_amount` off by one in its 8th digit (`list_amount_mismatch`).
    Mismatch,
    /// The period after the day's, not ended by the end of the day (`period_not_ended`).
    NotEnded,
    /// `usage_end` an hour past the end of the period (`spans_periods`).
    Spans,
    /// An owner the snapshot does not hold (`unknown_account`).
    Unknown,
    /// A period 61 days back, in a month before the first day's: closed (`month_closed`).
    Closed,
    /// Sent again with the same id and another quantity (`conflicting_duplicate`).
    Conflict,
}

const USAGE_FAULTS: [UsageFault; 8] = [
    UsageFault::NegativeQuantity,
    UsageFault::NineDigits,
    UsageFault::Mismatch,
    UsageFault::NotEnded,
    UsageFault::Spans,
    UsageFault::Unknown,
    UsageFault::Closed,
    UsageFault::Conflict,
];
const FAULT_EVERY: u64 = 10_000;

/// The fault of the `n`-th row of a day (from 0), if it has one.
fn usage_fault(n: u64) -> Option<UsageFault> {
    let place = n % FAULT_EVERY;
    if place % 1_000 == 17 {
        USAGE_FAULTS.get((place / 1_000) as usize).copied()
    } else {
        None
    }
}

/// The order rejects and special cases written at fixed places of each day's
/// orders (one of each in every 500 orders; every day has at least 40).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OrderFault {
    /// Placed the next day (`future_time`).
    Future,
    /// A charge with a refund amount too (`bad_order_amounts`).
    BothAmounts,
    /// Money back for a resource never charged (`unknown_resource`).
    NeverCharged,
    /// A free order (list 0.00) and then money back for it (`refund_exceeds_paid`).
    ExceedsPaid,
    /// Placed the day before: late, settled.
    Late,
}

const ORDER_FAULTS: [OrderFault; 5] = [OrderFault::Future, OrderFault::BothAmounts, OrderFault::NeverCharged, OrderFault::ExceedsPaid, OrderFault::Late];

fn order_fault(i: u64) -> Option<OrderFault> {
    let place = i % 500;
    if place % 7 == 3 {
        ORDER_FAULTS.get((place / 7) as usize).copied()
    } else {
        None
    }
}

struct Account {
    uin: u64,
    /// Cumulative resource weight, for drawing owners.
    weight: u64,
}

/// The members each day's transfers are for: those with `fund_transfer`, and
/// for the refusals of SPEC §9 the first account of each kind found (none when
/// the snapshot has none).
#[derive(Default)]
struct TransferCast {
    /// Members with `fund_transfer` that pay for themselves throughout.
    self_pay: Vec<u64>,
    /// Members with `fund_transfer` and a payer period.
    paid: Vec<u64>,
    /// A management account (`unknown_member`: it is not a member).
    manager: Option<u64>,
    /// A member with `fund_transfer`, self-pay throughout, never leaving, with
    /// 500.00 of cash or more, of an organization older than the first day.
    steady: Option<u64>,
    /// A member without `fund_transfer` (`no_permission`).
    no_permission: Option<u64>,
    /// A member with `fund_transfer`, paid for from before the first day on (`not_self_pay`).
    paid_for: Option<u64>,
}

fn ts(t: Ts) -> String {
    t.to_string()
}

/// Write the whole input directory.
pub fn generate(out: &Path, o: &GenOptions) -> std::io::Result<GenSummary> {
    let mut rng = Rng(o.seed ^ 0x5EED);
    fs::create_dir_all(out.join("days"))?;
    let orgs = o.orgs.max(1);
    let accounts_total = o.accounts.max(orgs * 2);
    let created = Day::parse("2026-01-01").expect("date").start();
    let first = o.start.start();
    let month_start = o.start.month().start();
    let last_day = Day(o.start.0 + chrono::Days::new(o.days.max(1) - 1));

    // Organization sizes: everyone gets 2 (management + admin), the rest by a skewed draw.
    let mut sizes = vec![2u64; orgs as usize];
    for _ in 0..accounts_total - orgs * 2 {
        let a = rng.below(orgs);
        let b = rng.below(orgs);
        sizes[a.min(b) as usize] += 1; // min of two draws: skewed toward small indices
    }

    // The snapshot as of the end of the last day: it already knows every change
    // of the days generated.
    let mut snapshot = String::with_capacity(accounts_total as usize * 300);
    snapshot.push_str(&format!("{{\"snapshot_at\":\"{}\",\"inheritance_blacklist\":[\"cdn\"],\"orgs\":[", ts(last_day.end())));
    let mut contracts = BufWriter::new(File::create(out.join("contracts.csv"))?);
    writeln!(contracts, "contract_id,owner_uin,product,cycle,kind,value,valid_from,valid_to")?;
    let mut balances = BufWriter::new(File::create(out.join("balances.csv"))?);
    writeln!(balances, "uin,cash,gift,credit_limit")?;
    let mut vouchers = BufWriter::new(File::create(out.join("vouchers.csv"))?);
    writeln!(vouchers, "voucher_id,owner_uin,kind,amount,valid_from,valid_to,products,scope,min_charge")?;
    let mut history = BufWriter::new(File::create(out.join("history.csv"))?);
    writeln!(history, "org_id,month,member_uin,product,total")?;

    let mut accounts: Vec<Account> = Vec::with_capacity(accounts_total as usize);
    let mut cast = TransferCast::default();
    let mut thin_accounts: Vec<u64> = Vec::new();
    let mut cumulative = 0u64;
    let mut uin = 100_000_000_000u64;
    for (oi, &size) in sizes.iter().enumerate() {
        let org = oi as u64;
        // One organization in 500 (the 50th, the 550th, ...) is created at noon
        // of the first day.
        let young = oi % 500 == 49;
        let org_created = if young { Ts(first.0 + 12 * HOUR) } else { created };
        let m = uin + 1;
        let admin = uin + 2;
        uin += size + 1;
        cast.manager.get_or_insert(m);
        if oi > 0 {
            snapshot.push(',');
        }
        let _ = write!(
            snapshot,
            "{{\"org_id\":\"org-{org:06}\",\"created_at\":\"{}\",\"management_uin\":{m},\"entities\":[{{\"entity_id\":\"e1\",\"name\":\"Entity {org}\",\"admin_uin\":{admin}}}],\"departments\":[{{\"dept_id\":\"root\",\"name\":\"Root\"}},{{\"dept_id\":\"d1\",\"parent_id\":\"root\"}}],\"members\":[",
            ts(org_created)
        );
        let _ = write!(snapshot, "{{\"uin\":{m},\"name\":\"hq-{org}\",\"entity_id\":\"e1\",\"dept_id\":\"root\",\"join_mode\":\"management\",\"joined_at\":\"{}\"}}", ts(org_created));
        let _ = write!(snapshot, ",{{\"uin\":{admin},\"name\":\"finance-{org}\",\"entity_id\":\"e1\",\"dept_id\":\"root\",\"join_mode\":\"created\",\"joined_at\":\"{}\",\"permissions\":[\"merged_bill\"]}}", ts(org_created));
        for k in 0..size {
            let account = m + k;
            // Opening cash in fen: management accounts hold the organization's
            // funds; a fifth of the admins (who pay for members) and 5% of the
            // members start with under 1.00, no gift and no credit, so that the
            // day's charges put some into arrears and recharges lift some out.
            let thin = match k {
                0 => false,
                1 => rng.chance(200_000),
                _ => rng.chance(50_000),
            };
            let cash = match k {
                0 => 5_000_000 + rng.below(20_000_000),
                _ if thin => rng.below(100),
                _ => rng.below(200_000),
            };
            if thin {
                thin_accounts.push(account);
            }
            if k >= 2 {
                let mut perms = vec!["\"merged_bill\""];
                let inherits = rng.chance(400_000);
                if inherits {
                    perms.push("\"discount_inheritance\"");
                }
                let transfer = rng.chance(300_000);
                if transfer {
                    perms.push("\"fund_transfer\"");
                } else if !young {
                    cast.no_permission.get_or_insert(account);
                }
                // Payer periods: most from long ago; some start or end inside the days
                // generated. Members of a young organization pay for themselves.
                let mut period = String::new();
                let roll = if young { 9 } else { rng.below(10) };
                if roll < 4 {
                    let payer = if rng.chance(500_000) { admin } else { m };
                    let (from, to) = match roll {
                        0 | 1 => (created.0 + 86_400_000_000_000, None),
                        2 => (created.0 + 86_400_000_000_000, Some(first.0 + (rng.below(o.days.max(1) * 24) as i64) * HOUR + HOUR / 2)),
                        _ => (first.0 + (rng.below(o.days.max(1) * 24) as i64) * HOUR, None),
                    };
                    period = match to {
                        None => format!("{{\"payer_uin\":{payer},\"from\":\"{}\"}}", ts(Ts(from))),
                        Some(to) => format!("{{\"payer_uin\":{payer},\"from\":\"{}\",\"to\":\"{}\"}}", ts(Ts(from)), ts(Ts(to))),
                    };
                    if transfer {
                        cast.paid.push(account);
                        if roll < 2 {
                            cast.paid_for.get_or_insert(account);
                        }
                    }
                } else if transfer {
                    cast.self_pay.push(account);
                    if !young && cash >= 50_000 {
                        cast.steady.get_or_insert(account);
                    }
                }
                // 2% of the self-paying members without fund_transfer leave inside
                // the days generated; 1% of those paying for themselves have an
                // account-level discount (SPEC §3.1 rule 6 allows it only there).
                let mut more = String::new();
                if roll >= 4 && !transfer && !young && rng.chance(20_000) {
                    let left = first.0 + (rng.below(o.days.max(1) * 24) as i64) * HOUR + HOUR / 2;
                    let _ = write!(more, ",\"left_at\":\"{}\"", ts(Ts(left)));
                }
                if roll >= 4 && rng.chance(10_000) {
                    more.push_str(",\"has_account_level_discount\":true");
                }
                let _ = write!(
                    snapshot,
                    ",{{\"uin\":{account},\"name\":\"member-{account}\",\"entity_id\":\"e1\",\"dept_id\":\"d1\",\"join_mode\":\"invited\",\"joined_at\":\"{}\"{more},\"permissions\":[{}],\"payer_periods\":[{period}]}}",
                    ts(Ts(org_created.0 + HOUR)),
                    perms.join(",")
                );
            }
            // Resource weight: heavy-tailed.
            let w = 1 + rng.below(4) * rng.below(4) * rng.below(8);
            cumulative += w;
            accounts.push(Account { uin: account, weight: cumulative });
            let (gift, credit) = (rng.below(50), rng.below(3) * 500);
            let (gift, credit) = if thin { (0, 0) } else { (gift, credit) };
            writeln!(balances, "{account},{}.{:02},{gift}.00,{credit}.00", cash / 100, cash % 100)?;
            if rng.chance(100_000) {
                // Both kinds, every scope, product lists and minimum charges; a
                // few valid from noon of the first day.
                let kind = if rng.chance(300_000) { "cash_coupon" } else { "voucher" };
                let scope = ["all", "all", "all", "postpaid", "prepaid"][rng.below(5) as usize];
                let products = ["", "", "", "", "cvm|cdb", "cos"][rng.below(6) as usize];
                let min_charge = if rng.chance(200_000) { "1.00" } else { "" };
                let from = if rng.chance(100_000) { Ts(first.0 + 12 * HOUR) } else { month_start };
                writeln!(
                    vouchers,
                    "v-{account},{account},{kind},{}.00,{},{},{products},{scope},{min_charge}",
                    10 + rng.below(200),
                    ts(from),
                    ts(Day(o.start.0 + chrono::Days::new(o.days + 30)).start())
                )?;
            }
        }
        snapshot.push_str("]}");
        // Contracts of the management account and the admin: every kind; in one
        // organization in 10, a monthly one too and a clb contract that another
        // replaces during the first days (the others keep to six, as before).
        writeln!(contracts, "c-{m}-cvm-h,{m},cvm,hourly,discount,0.{},{},", 70 + rng.below(25), ts(org_created))?;
        writeln!(contracts, "c-{m}-cbs-p,{m},cbs,prepaid,fixed_price,{}.00,{},", 50 + rng.below(50), ts(org_created))?;
        if oi % 10 == 0 {
            let switch = Ts(org_created.0.max(first.0) + 18 * HOUR);
            writeln!(contracts, "c-{m}-cdb-m,{m},cdb,monthly,discount,0.9{},{},", rng.below(10), ts(org_created))?;
            writeln!(contracts, "c-{m}-clb-h1,{m},clb,hourly,discount,0.80,{},{}", ts(org_created), ts(switch))?;
            writeln!(contracts, "c-{m}-clb-h2,{m},clb,hourly,unit_price,0.015,{},", ts(switch))?;
        }
        writeln!(contracts, "c-{admin}-cvm-h,{admin},cvm,hourly,discount,0.{},{},", 60 + rng.below(30), ts(org_created))?;
        writeln!(contracts, "c-{admin}-cos-d,{admin},cos,daily,tiered,0:0.008|1000:0.006|10000:0.004,{},", ts(org_created))?;
        writeln!(contracts, "c-{admin}-cdb-h,{admin},cdb,hourly,unit_price,0.08,{},", ts(org_created))?;
        writeln!(contracts, "c-{admin}-cvm-p,{admin},cvm,prepaid,discount,0.85,{},", ts(org_created))?;
        // The five months before the first day's: what the management account
        // and the admin paid for themselves (SPEC §11.4), for the first closes'
        // six-month window. Young organizations have none.
        if !young {
            let mut month = o.start.month();
            for _ in 0..5 {
                month = month.prev();
                for who in [m, admin] {
                    let (product, _) = PRODUCTS[rng.below(PRODUCTS.len() as u64) as usize];
                    let total = rng.below(5_000_000);
                    writeln!(history, "org-{org:06},{month},{who},{product},{}.{:02}", total / 100, total % 100)?;
                }
            }
        }
    }
    snapshot.push_str("]}\n");
    fs::write(out.join("org.json"), snapshot)?;
    contracts.flush()?;
    balances.flush()?;
    vouchers.flush()?;
    history.flush()?;

    let mut summary = GenSummary::default();
    for d in 0..o.days {
        let day = Day(o.start.0 + chrono::Days::new(d));
        let dir = out.join("days").join(day.to_string());
        fs::create_dir_all(&dir)?;
        summary.usage_rows += write_usage(&dir, day, d, o, &accounts, &mut rng)?;
        write_orders(&dir, day, d, &accounts, &mut rng, o)?;
        write_money_moves(&dir, day, d, (&accounts, &thin_accounts), &cast, &mut rng)?;
    }
    summary.accounts = accounts.len() as u64;
    summary.orgs = orgs;
    Ok(summary)
}

#[derive(Debug, Default)]
pub struct GenSummary {
    pub orgs: u64,
    pub accounts: u64,
    /// Usage rows drawn, not counting the repeats written after some of them
    /// (upstream retries and conflicting re-sends).
    pub usage_rows: u64,
}

fn pick_owner<'a>(accounts: &'a [Account], rng: &mut Rng) -> &'a Account {
    let total = accounts.last().map_or(1, |a| a.weight);
    let x = rng.below(total);
    let i = accounts.partition_point(|a| a.weight <= x);
    &accounts[i.min(accounts.len() - 1)]
}

/// One usage record as drawn, before its fault.
struct Draft<'a> {
    id: &'a str,
    owner: u64,
    res: u64,
    cycle: &'static str,
    start: Ts,
    end: Ts,
}

/// Write one usage row (and its repeat, when it has one) with its fault.
fn write_row(w: &mut impl Write, line: &mut String, rng: &mut Rng, day: Day, row: &Draft, fault: Option<UsageFault>) -> std::io::Result<()> {
    let (product, price) = PRODUCTS[(row.res % PRODUCTS.len() as u64) as usize];
    let region = REGIONS[(row.owner % 4) as usize];
    // quantity in thousandths × price in 1e-5 gives list_amount exactly at 1e-8.
    let q = 1 + rng.below(5_000);
    let p = price + rng.below(50);
    let bad_timestamp = rng.chance(500);
    let repeat = rng.chance(1_000);
    let (mut owner, mut start, mut end) = (row.owner, row.start, row.end);
    match fault {
        Some(UsageFault::NotEnded) => {
            (start, end) = match row.cycle {
                "hourly" => (day.next().start(), Ts(day.next().start().0 + HOUR)),
                "daily" => (day.next().start(), day.next().end()),
                _ => (day.month().next().start(), day.month().next().end()),
            }
        }
        Some(UsageFault::Spans) => end = Ts(end.0 + HOUR),
        Some(UsageFault::Unknown) => owner = UNKNOWN_UIN,
        Some(UsageFault::Closed) => {
            (start, end) = match row.cycle {
                "monthly" => (day.month().prev().prev().start(), day.month().prev().prev().end()),
                _ => (Ts(start.0 - 61 * DAY), Ts(end.0 - 61 * DAY)),
            }
        }
        _ => {}
    }
    let render = |line: &mut String, q: u64| {
        let amount = q * p + u64::from(fault == Some(UsageFault::Mismatch));
        let sign = if fault == Some(UsageFault::NegativeQuantity) { "-" } else { "" };
        let more = if fault == Some(UsageFault::NineDigits) { "000001" } else { "" };
        line.clear();
        let _ = write!(line, "{},{owner},res-{owner}-{},{product},{region},{},", row.id, row.res, row.cycle);
        if bad_timestamp {
            line.push_str("2026-13-45T00:00:00");
        } else {
            start.write_to(line);
        }
        line.push(',');
        end.write_to(line);
        let _ = writeln!(
            line,
            ",{sign}{}.{:03}{more},{}.{:05},{}.{:08}",
            q / 1000,
            q % 1000,
            p / 100_000,
            p % 100_000,
            amount / 100_000_000,
            amount % 100_000_000
        );
    };
    render(line, q);
    w.write_all(line.as_bytes())?;
    if repeat {
        w.write_all(line.as_bytes())?; // an upstream retry: an exact duplicate
    }
    if fault == Some(UsageFault::Conflict) {
        render(line, q + 1);
        w.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// Usage rows of one day: resources push one record per period.
fn write_usage(dir: &Path, day: Day, d: u64, o: &GenOptions, accounts: &[Account], rng: &mut Rng) -> std::io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(dir.join("usage.csv"))?);
    w.write_all(b"record_id,owner_uin,resource_id,product,region,cycle,usage_start,usage_end,quantity,list_unit_price,list_amount\n")?;
    let month_end = day.next().start() == day.month().end();
    let target = o.usage_per_day;
    let monthly_rows = if month_end { target / 20 } else { 0 };
    let daily_rows = target / 4 + (target / 20 - monthly_rows);
    let hourly_rows = target - daily_rows - monthly_rows;
    let hourly_resources = hourly_rows.div_ceil(24);
    let mut written = 0u64;
    let mut line = String::with_capacity(256);
    let mut id = String::with_capacity(32);
    let mut draft = |rng: &mut Rng, id: &mut String, n: u64, owner: &Account, res: u64, cycle: &'static str, start: Ts, end: Ts, written: &mut u64| {
        id.clear();
        let _ = write!(id, "u{d}-{n}");
        let fault = usage_fault(*written);
        *written += 1;
        write_row(&mut w, &mut line, rng, day, &Draft { id, owner: owner.uin, res, cycle, start, end }, fault)
    };
    for r in 0..hourly_resources {
        let owner = pick_owner(accounts, rng);
        let res = rng.below(8);
        for h in 0..24 {
            if written >= hourly_rows {
                break;
            }
            // A late push: the same hour of the day before.
            let late = rng.chance(5_000);
            let base = if late { day.start().0 - DAY } else { day.start().0 };
            let start = Ts(base + h * HOUR);
            draft(rng, &mut id, r * 24 + h as u64, owner, res, "hourly", start, Ts(start.0 + HOUR), &mut written)?;
        }
    }
    for r in 0..daily_rows {
        let owner = pick_owner(accounts, rng);
        let res = 10 + rng.below(8);
        draft(rng, &mut id, 10_000_000_000 + r, owner, res, "daily", day.start(), day.end(), &mut written)?;
    }
    for r in 0..monthly_rows {
        let owner = pick_owner(accounts, rng);
        let res = 20 + rng.below(8);
        draft(rng, &mut id, 20_000_000_000 + r, owner, res, "monthly", day.month().start(), day.month().end(), &mut written)?;
    }
    w.flush()?;
    Ok(written)
}

fn write_orders(dir: &Path, day: Day, d: u64, accounts: &[Account], rng: &mut Rng, o: &GenOptions) -> std::io::Result<()> {
    let mut w = BufWriter::new(File::create(dir.join("orders.csv"))?);
    writeln!(w, "order_id,owner_uin,resource_id,product,action,created_at,list_amount,refund_amount")?;
    let n = (o.usage_per_day / 1000).max(40);
    for i in 0..n {
        let owner = pick_owner(accounts, rng).uin;
        let at = Ts(day.start().0 + rng.below(20 * 3600) as i64 * 1_000_000_000);
        let product = if rng.chance(500_000) { "cvm" } else { "cbs" };
        let resource = format!("pre-{owner}-{}", rng.below(3));
        let list = format!("{}.{:02}", 20 + rng.below(500), rng.below(100));
        let hour_later = ts(Ts(at.0 + HOUR));
        match order_fault(i) {
            Some(OrderFault::Future) => writeln!(w, "o{d}-{i},{owner},{resource},{product},new,{},{list},", ts(Ts(day.next().start().0 + 2 * HOUR)))?,
            Some(OrderFault::BothAmounts) => writeln!(w, "o{d}-{i},{owner},{resource},{product},new,{},{list},1.00", ts(at))?,
            Some(OrderFault::NeverCharged) => writeln!(w, "o{d}-{i},{owner},pre-{owner}-never,{product},refund,{},,1.00", ts(at))?,
            Some(OrderFault::ExceedsPaid) => {
                // cdn is on the inheritance blacklist and nobody has a contract for
                // it: the order is priced at its list, 0.00, and paid by no one.
                writeln!(w, "o{d}-{i},{owner},pre-{owner}-free,cdn,new,{},0.00,", ts(at))?;
                writeln!(w, "o{d}-{i}-r,{owner},pre-{owner}-free,cdn,refund,{hour_later},,1.00")?;
            }
            Some(OrderFault::Late) => writeln!(w, "o{d}-{i},{owner},{resource},{product},new,{},{list},", ts(Ts(day.prev().start().0 + 10 * HOUR)))?,
            None => {
                let action = ["new", "new", "new", "new", "new", "new", "renew", "renew", "upgrade", "upgrade"][rng.below(10) as usize];
                writeln!(w, "o{d}-{i},{owner},{resource},{product},{action},{},{list},", ts(at))?;
                if rng.chance(150_000) {
                    let back = if rng.chance(500_000) { "refund" } else { "downgrade" };
                    writeln!(w, "o{d}-{i}-r,{owner},{resource},{product},{back},{hour_later},,{}.00", 1 + rng.below(20))?;
                }
            }
        }
    }
    w.flush()
}

fn write_money_moves(
    dir: &Path,
    day: Day,
    d: u64,
    (accounts, thin): (&[Account], &[u64]),
    cast: &TransferCast,
    rng: &mut Rng,
) -> std::io::Result<()> {
    let at = |seconds: i64| ts(Ts(day.start().0 + seconds * 1_000_000_000));
    let mut r = BufWriter::new(File::create(dir.join("recharges.csv"))?);
    writeln!(r, "recharge_id,uin,at,amount")?;
    for i in 0..(accounts.len() as u64 / 50).max(8) {
        // Every 4th recharge is for an account that started thin.
        let a = match (i % 4, thin.is_empty()) {
            (2, false) => thin[rng.below(thin.len() as u64) as usize],
            _ => accounts[rng.below(accounts.len() as u64) as usize].uin,
        };
        let when = rng.below(86_000) as i64;
        let amount = 10 + rng.below(500);
        // Every 500th from the 2nd: the next day (`future_time`), an unknown
        // account, an amount below the fen (`bad_amount_scale`), a field short
        // (`bad_row`; usage.csv has none, so that DuckDB reads it whole in the
        // scale benchmark).
        match i % 500 {
            1 => writeln!(r, "rc{d}-{i},{a},{},{amount}.00", ts(Ts(day.next().start().0 + HOUR)))?,
            3 => writeln!(r, "rc{d}-{i},{UNKNOWN_UIN},{},{amount}.00", at(when))?,
            5 => writeln!(r, "rc{d}-{i},{a},{},{amount}.001", at(when))?,
            7 => writeln!(r, "rc{d}-{i},{a},{}", at(when))?,
            _ => writeln!(r, "rc{d}-{i},{a},{},{amount}.00", at(when))?,
        }
    }
    r.flush()?;
    let mut t = BufWriter::new(File::create(dir.join("transfers.csv"))?);
    writeln!(t, "transfer_id,kind,member_uin,at,amount,source_transfer_id")?;
    // Each refusal of SPEC §9 and the two rejects that apply to transfers, every day.
    if let Some(x) = cast.steady {
        writeln!(t, "t{d}-x1,in,{x},{},100.00,", at(3600))?;
        writeln!(t, "t{d}-x2,out,{x},{},0.01,", at(4200))?; // unknown_source
        writeln!(t, "t{d}-x3,out,{x},{},100.01,t{d}-x1", at(4800))?; // exceeds_source
        writeln!(t, "t{d}-x4,in,{x},{},1.005,", at(5400))?; // bad_amount
        writeln!(t, "t{d}-x5,in,{x},{},100000000.00,", at(6000))?; // insufficient_cash
        writeln!(t, "t{d}-x6,sideways,{x},{},1.00,", at(6600))?; // bad_value
        writeln!(t, "t{d}-x7,in,{x},{},1.00,", ts(Ts(day.next().start().0 + 2 * HOUR)))?; // future_time
    }
    if let Some(m) = cast.manager {
        writeln!(t, "t{d}-x8,in,{m},{},1.00,", at(7200))?; // unknown_member
    }
    if let Some(member) = cast.no_permission {
        writeln!(t, "t{d}-x9,in,{member},{},1.00,", at(7800))?; // no_permission
    }
    if let Some(member) = cast.paid_for {
        writeln!(t, "t{d}-x10,in,{member},{},1.00,", at(8400))?; // not_self_pay
    }
    for (i, member) in cast.self_pay.iter().chain(&cast.paid).enumerate() {
        if !rng.chance(200_000) {
            continue;
        }
        let when = (3600 + rng.below(40_000)) as i64;
        writeln!(t, "t{d}-{i},in,{member},{},{}.00,", at(when), 5 + rng.below(100))?;
        if rng.chance(300_000) {
            writeln!(t, "t{d}-{i}-o,out,{member},{},{}.00,t{d}-{i}", at(when + 3600), 1 + rng.below(10))?;
        }
    }
    t.flush()
}
