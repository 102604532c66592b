//! The day's control totals and the books check (SPEC §11.2 `summary.json`).
//!
//! Invariant: the check is computed from the output rows, independently of the
//! engine's own bookkeeping: for every account, closing cash = opening cash +
//! recharges + transfers in − transfers out − the cash and credit parts of the
//! lines it is responsible for (refund lines carry −share); gift falls exactly by
//! the gift parts; no voucher is used past its amount. A failure aborts the run.

use crate::engine::{LedgerLine, LineStatus};
use crate::ids::Uin;
use crate::ingest::{FileCounts, RechargeRecord, TransferKind};
use crate::job::{all_counts, DayResult};
use crate::money::Money;
use crate::snapshot::Snapshot;
use crate::state::State;
use crate::time::Day;
use rayon::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Default, Clone, Copy)]
struct Movement {
    cash: Money,
    gift: Money,
}

/// The ledger's sums and what its lines moved on each responsible account, taken
/// as the day's lines are settled, a run of them at a time (exact sums: the order
/// of adding does not change them).
#[derive(Default)]
pub struct LedgerTotals {
    totals: [Money; 7],
    lines: u64,
    settled: u64,
    failed: u64,
    moved: rustc_hash::FxHashMap<Uin, Movement>,
}

impl LedgerTotals {
    /// Add one line.
    pub fn add_line(&mut self, l: &LedgerLine) {
        for (t, v) in self.totals.iter_mut().zip([
            l.list_amount,
            l.discount_amount(),
            l.payable_amount,
            l.voucher_amount,
            l.cash_amount,
            l.gift_amount,
            l.credit_amount,
        ]) {
            *t += v;
        }
        self.lines += 1;
        match l.status {
            LineStatus::Settled => self.settled += 1,
            LineStatus::PaymentFailed => self.failed += 1,
        }
        let m = self.moved.entry(l.responsible_uin).or_default();
        m.cash -= l.cash_amount + l.credit_amount;
        m.gift -= l.gift_amount;
    }

    /// The sums of `parts` (one an organization), on all cores.
    pub fn sum(parts: Vec<LedgerTotals>) -> LedgerTotals {
        parts.into_par_iter().reduce(LedgerTotals::default, LedgerTotals::merge)
    }

    /// Both sums; the larger map takes the smaller's entries.
    fn merge(self, other: LedgerTotals) -> LedgerTotals {
        let (mut a, b) = if self.moved.len() >= other.moved.len() { (self, other) } else { (other, self) };
        for (t, v) in a.totals.iter_mut().zip(b.totals) {
            *t += v;
        }
        a.lines += b.lines;
        a.settled += b.settled;
        a.failed += b.failed;
        for (uin, m) in b.moved {
            let into = a.moved.entry(uin).or_default();
            into.cash += m.cash;
            into.gift += m.gift;
        }
        a
    }

    /// How many lines were added.
    pub fn lines(&self) -> u64 {
        self.lines
    }
}

/// What the day's voucher usage rows used (`voucher_usage.csv`, streamed as the
/// day settles): how many rows, their sum, and each voucher's sum.
#[derive(Default)]
pub struct VoucherTotals {
    rows: u64,
    total: Money,
    by_voucher: BTreeMap<String, Money>,
}

impl VoucherTotals {
    /// Add the next rows.
    pub fn add(&mut self, uses: &[crate::engine::VoucherUse]) {
        for u in uses {
            self.rows += 1;
            self.total += u.amount;
            match self.by_voucher.get_mut(&u.voucher_id) {
                Some(sum) => *sum += u.amount,
                None => {
                    self.by_voucher.insert(u.voucher_id.clone(), u.amount);
                }
            }
        }
    }
}

/// The day's summary (SPEC §11.2) once its books check: `ledger` holds the sums
/// of every ledger line of `result`'s day, `vouchers` those of its voucher usage.
pub fn check_and_summarize(
    day: Day,
    base: &State,
    result: &DayResult,
    (ledger, vouchers): (LedgerTotals, VoucherTotals),
    recharges: &[RechargeRecord],
    counts: &BTreeMap<&'static str, FileCounts>,
    snapshot: &Snapshot,
) -> Result<serde_json::Value, String> {
    let LedgerTotals { totals, lines, settled, failed, mut moved } = ledger;
    let mut recharged = Money::ZERO;
    for r in recharges {
        moved.entry(r.uin).or_default().cash += r.amount;
        recharged += r.amount;
    }
    let (mut transferred_in, mut transferred_out, mut accepted, mut refused) = (Money::ZERO, Money::ZERO, 0u64, 0u64);
    for t in &result.transfers {
        let Some(amount) = t.moved else {
            refused += 1;
            continue;
        };
        accepted += 1;
        let management = t.management_uin.expect("an accepted transfer has an org");
        let (from, to) = match t.kind {
            TransferKind::In => {
                transferred_in += amount;
                (management, t.member_uin)
            }
            TransferKind::Out => {
                transferred_out += amount;
                (t.member_uin, management)
            }
        };
        moved.entry(from).or_default().cash -= amount;
        moved.entry(to).or_default().cash += amount;
    }

    let mut checked = 0u64;
    for uin in snapshot.all_uins() {
        let opening = base.accounts.get(&uin).map(|a| (a.cash, a.gift)).unwrap_or((Money::ZERO, Money::ZERO));
        let closing = result.state.accounts.get(&uin).ok_or_else(|| format!("account {uin} has no closing balance"))?;
        let m = moved.get(&uin).copied().unwrap_or_default();
        if opening.0 + m.cash != closing.cash {
            let (org, _) = snapshot.find(uin).expect("snapshot account");
            return Err(format!(
                "org {}: account {uin}: cash check failed: opening {} + movements {} ≠ closing {}",
                org.org_id, opening.0, m.cash, closing.cash
            ));
        }
        if opening.1 + m.gift != closing.gift || closing.gift.is_negative() {
            return Err(format!("account {uin}: gift check failed: opening {} + movements {} ≠ closing {}", opening.1, m.gift, closing.gift));
        }
        checked += 1;
    }

    let VoucherTotals { rows: voucher_rows, total: voucher_total, by_voucher: used_today } = vouchers;
    if voucher_total != totals[3] {
        return Err(format!("voucher usage {voucher_total} ≠ the ledger's voucher amounts {}", totals[3]));
    }
    for (id, amount) in &used_today {
        let before = base.vouchers_used.get(id).copied().unwrap_or(Money::ZERO);
        let after = result.state.vouchers_used.get(id).copied().unwrap_or(Money::ZERO);
        if before + *amount != after || !amount.is_positive() {
            return Err(format!("voucher {id}: used {before} + {amount} today ≠ {after}"));
        }
    }

    let shutdowns = result.events.iter().filter(|e| e.shutdown).count();
    let money = |m: Money| m.to_string();
    Ok(json!({
        "run_day": day.to_string(),
        "files": all_counts(counts),
        "ledger": {
            "lines": lines,
            "settled": settled,
            "payment_failed": failed,
            "list_amount": money(totals[0]),
            "discount_amount": money(totals[1]),
            "payable_amount": money(totals[2]),
            "voucher_amount": money(totals[3]),
            "cash_amount": money(totals[4]),
            "gift_amount": money(totals[5]),
            "credit_amount": money(totals[6]),
        },
        "recharges": { "count": recharges.len(), "amount": money(recharged) },
        "transfers": {
            "accepted": accepted,
            "refused": refused,
            "in_amount": money(transferred_in),
            "out_amount": money(transferred_out),
        },
        "voucher_usage": { "rows": voucher_rows, "amount": money(voucher_total) },
        "events": { "shutdown": shutdowns, "reversal": result.events.len() - shutdowns },
        "rejects": result.rejected_rows(),
        "cash_check": { "accounts": checked, "passed": true },
    }))
}
