//! Paying a line (SPEC §7.2, §7.3): vouchers in their order, then cash, gift and
//! credit. Pure: no files, no clock.
//!
//! Invariant: every `Payment` satisfies voucher + cash + gift + credit = the amount,
//! and no voucher is used past its remaining amount.

use crate::money::Money;
use crate::reference::{Voucher, VoucherScope};
use crate::state::AccountState;
use crate::time::Ts;

/// What a line needs to know to pick vouchers.
#[derive(Clone, Copy, Debug)]
pub enum LineTiming {
    /// A postpaid line and its whole period [start, end).
    Postpaid { period_start: Ts, period_end: Ts },
    /// A prepaid order placed at this instant.
    Prepaid { created_at: Ts },
}

/// A voucher of the responsible account with what is left of it.
#[derive(Clone, Debug)]
pub struct VoucherBalance<'v> {
    pub voucher: &'v Voucher,
    pub remaining: Money,
}

/// How a line of amount A is paid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Payment {
    pub voucher: Money,
    pub cash: Money,
    pub gift: Money,
    pub credit: Money,
    /// (index into the voucher list, amount), in the order used.
    pub voucher_uses: Vec<(usize, Money)>,
}

fn applies(v: &VoucherBalance, product: &str, amount: Money, timing: LineTiming) -> bool {
    let voucher = v.voucher;
    let scope_ok = matches!(
        (voucher.scope, timing),
        (VoucherScope::All, _)
            | (VoucherScope::Postpaid, LineTiming::Postpaid { .. })
            | (VoucherScope::Prepaid, LineTiming::Prepaid { .. })
    );
    let time_ok = match timing {
        LineTiming::Postpaid { period_start, period_end } => {
            voucher.valid_from <= period_start && period_end <= voucher.valid_to
        }
        LineTiming::Prepaid { created_at } => voucher.valid_from <= created_at && created_at < voucher.valid_to,
    };
    v.remaining.is_positive()
        && scope_ok
        && time_ok
        && (voucher.products.is_empty() || voucher.products.contains(product))
        && voucher.min_charge.is_none_or(|m| amount >= m)
}

/// The order vouchers are used in (§7.3): earliest `valid_to`, then the larger
/// deduction for this line (computed once, before any is used), then the smaller
/// remaining amount, then `voucher_id`.
pub fn voucher_order(vouchers: &[VoucherBalance], product: &str, amount: Money, timing: LineTiming) -> Vec<usize> {
    let mut chosen: Vec<usize> = (0..vouchers.len()).filter(|&i| applies(&vouchers[i], product, amount, timing)).collect();
    chosen.sort_by(|&a, &b| {
        let (va, vb) = (&vouchers[a], &vouchers[b]);
        va.voucher
            .valid_to
            .cmp(&vb.voucher.valid_to)
            .then_with(|| vb.remaining.min(amount).cmp(&va.remaining.min(amount)))
            .then_with(|| va.remaining.cmp(&vb.remaining))
            .then_with(|| va.voucher.voucher_id.cmp(&vb.voucher.voucher_id))
    });
    chosen
}

/// Split `amount` (≥ 0) over vouchers, cash, gift and credit without changing anything.
pub fn plan_payment(
    amount: Money,
    account: &AccountState,
    vouchers: &[VoucherBalance],
    product: &str,
    timing: LineTiming,
) -> Payment {
    let mut owed = amount;
    let mut payment = Payment::default();
    if !amount.is_positive() {
        return payment;
    }
    for index in voucher_order(vouchers, product, amount, timing) {
        if !owed.is_positive() {
            break;
        }
        let take = vouchers[index].remaining.min(owed);
        payment.voucher_uses.push((index, take));
        payment.voucher += take;
        owed -= take;
    }
    if account.cash.is_positive() {
        payment.cash = account.cash.min(owed);
        owed -= payment.cash;
    }
    if account.gift.is_positive() {
        payment.gift = account.gift.min(owed);
        owed -= payment.gift;
    }
    payment.credit = owed;
    assert_eq!(
        payment.voucher + payment.cash + payment.gift + payment.credit,
        amount,
        "payment parts must sum to the payable amount"
    );
    payment
}

/// A prepaid order may use credit but never go into arrears (§7.2).
pub fn prepaid_can_settle(payment: &Payment, account: &AccountState) -> bool {
    payment.credit.is_zero() || account.cash - payment.cash - payment.credit >= -account.credit_limit
}

/// Apply a planned payment to the account and the vouchers.
pub fn apply_payment(payment: &Payment, account: &mut AccountState, vouchers: &mut [VoucherBalance]) {
    account.cash -= payment.cash + payment.credit;
    account.gift -= payment.gift;
    for &(index, amount) in &payment.voucher_uses {
        let v = &mut vouchers[index];
        assert!(amount <= v.remaining, "voucher {} used past its remaining amount", v.voucher.voucher_id);
        v.remaining -= amount;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    fn voucher(id: &str, amount: &str, valid_to: i64) -> Voucher {
        Voucher {
            voucher_id: id.into(),
            owner_uin: 1,
            amount: m(amount),
            valid_from: Ts(0),
            valid_to: Ts(valid_to),
            products: BTreeSet::new(),
            scope: VoucherScope::All,
            min_charge: None,
        }
    }

    const TIMING: LineTiming = LineTiming::Postpaid { period_start: Ts(10), period_end: Ts(20) };

    #[test]
    fn waterfall_vouchers_cash_gift_credit() {
        let vs = [voucher("a", "5.00", 100)];
        let balances = vec![VoucherBalance { voucher: &vs[0], remaining: m("5.00") }];
        let account = AccountState { cash: m("3.00"), gift: m("1.50"), credit_limit: m("100"), suspended: false };
        let p = plan_payment(m("12.00"), &account, &balances, "cvm", TIMING);
        assert_eq!((p.voucher, p.cash, p.gift, p.credit), (m("5.00"), m("3.00"), m("1.50"), m("2.50")));
    }

    #[test]
    fn negative_cash_pays_nothing_and_all_becomes_credit() {
        let account = AccountState { cash: m("-1.00"), gift: m("0"), credit_limit: m("0"), suspended: false };
        let p = plan_payment(m("4.00"), &account, &[], "cvm", TIMING);
        assert_eq!((p.cash, p.credit), (m("0"), m("4.00")));
        assert!(!prepaid_can_settle(&p, &account));
    }

    #[test]
    fn voucher_order_earliest_expiry_then_larger_deduction_then_smaller_remaining_then_id() {
        let vs = [voucher("d", "1.00", 50), voucher("c", "9.00", 60), voucher("b", "3.00", 60), voucher("a", "8.00", 60)];
        let balances: Vec<VoucherBalance> = vs.iter().map(|v| VoucherBalance { voucher: v, remaining: v.amount }).collect();
        // Amount 5: deductions d=1 (expires first), c=5, b=3, a=5; c and a tie at 5,
        // a has the smaller remaining (8 < 9).
        let order = voucher_order(&balances, "cvm", m("5.00"), TIMING);
        let ids: Vec<&str> = order.iter().map(|&i| vs[i].voucher_id.as_str()).collect();
        assert_eq!(ids, ["d", "a", "c", "b"]);
    }

    #[test]
    fn postpaid_voucher_needs_the_whole_period() {
        let vs = [voucher("a", "5.00", 15)];
        let balances = vec![VoucherBalance { voucher: &vs[0], remaining: m("5.00") }];
        assert!(voucher_order(&balances, "cvm", m("1.00"), TIMING).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn waterfall_parts_sum_vouchers_stay_positive_prepaid_never_in_arrears(
            amount in 0i64..100_000,
            cash in -50_000i64..50_000,
            gift in 0i64..20_000,
            limit in 0i64..30_000,
            voucher_fen in proptest::collection::vec((1i64..20_000, 0i64..4), 0..5),
        ) {
            let vs: Vec<Voucher> = voucher_fen.iter().enumerate().map(|(i, &(fen, expiry))| Voucher {
                voucher_id: format!("v{i}"),
                owner_uin: 1,
                amount: Money::from_fen(fen),
                valid_from: Ts(0),
                valid_to: Ts(100 + expiry),
                products: BTreeSet::new(),
                scope: VoucherScope::All,
                min_charge: None,
            }).collect();
            let mut balances: Vec<VoucherBalance> = vs.iter().map(|v| VoucherBalance { voucher: v, remaining: v.amount }).collect();
            let mut account = AccountState { cash: Money::from_fen(cash), gift: Money::from_fen(gift), credit_limit: Money::from_fen(limit), suspended: false };
            let amount = Money::from_fen(amount);
            let timing = LineTiming::Prepaid { created_at: Ts(50) };
            let p = plan_payment(amount, &account, &balances, "cvm", timing);
            proptest::prop_assert_eq!(p.voucher + p.cash + p.gift + p.credit, amount);
            proptest::prop_assert!(!p.cash.is_negative() && !p.gift.is_negative() && !p.credit.is_negative());
            let settles = prepaid_can_settle(&p, &account);
            let before = account;
            apply_payment(&p, &mut account, &mut balances);
            for b in &balances {
                proptest::prop_assert!(!b.remaining.is_negative());
            }
            proptest::prop_assert_eq!(account.gift, before.gift - p.gift);
            if settles {
                proptest::prop_assert!(p.credit.is_zero() || !account.in_arrears());
            }
        }
    }
}
