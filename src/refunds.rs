//! Proportional refund by payer UIN (SPEC §8): the largest-remainder split.
//! Pure: no files, no state.

use crate::ids::Uin;
use crate::money::Money;

/// Split `refund` over payers in proportion to their bases (each > 0), rounded to
/// the fen by the largest remainder method: every share rounded down, the fen left
/// over one each to the largest remainders, ties to the smaller UIN. Returns shares
/// by payer UIN. The caller guarantees 0 < refund ≤ Σ bases.
pub fn allocate_largest_remainder(refund: Money, bases: &[(Uin, Money)]) -> Vec<(Uin, Money)> {
    let total: i128 = bases.iter().map(|(_, b)| i128::from(b.fen())).sum();
    assert!(total > 0, "refund allocation needs a positive total basis");
    let refund_fen = i128::from(refund.fen());
    let mut shares: Vec<(Uin, i128, i128)> = bases
        .iter()
        .map(|&(payer, basis)| {
            let exact = refund_fen * i128::from(basis.fen());
            (payer, exact / total, exact % total)
        })
        .collect();
    let assigned: i128 = shares.iter().map(|s| s.1).sum();
    let mut left = refund_fen - assigned;
    let mut by_remainder: Vec<usize> = (0..shares.len()).collect();
    by_remainder.sort_by(|&a, &b| shares[b].2.cmp(&shares[a].2).then(shares[a].0.cmp(&shares[b].0)));
    for index in by_remainder {
        if left == 0 {
            break;
        }
        shares[index].1 += 1;
        left -= 1;
    }
    let mut out: Vec<(Uin, Money)> =
        shares.into_iter().map(|(payer, fen, _)| (payer, Money::from_fen(fen as i64))).collect();
    out.sort_by_key(|s| s.0);
    let sum: Money = out.iter().map(|s| s.1).sum();
    assert_eq!(sum, refund, "refund shares must sum to the refund");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    #[test]
    fn spec_example_80_20_refund_30() {
        // Order 1 paid by B (uin 2) 80.00, order 2 by A (uin 1) 20.00; refund 30.00.
        let shares = allocate_largest_remainder(m("30.00"), &[(2, m("80.00")), (1, m("20.00"))]);
        assert_eq!(shares, vec![(1, m("6.00")), (2, m("24.00"))]);
    }

    #[test]
    fn leftover_fen_go_to_largest_remainders_ties_to_smaller_uin() {
        // 1.00 over three equal bases: 0.33 each, one fen left, tie → smallest uin.
        let shares = allocate_largest_remainder(m("1.00"), &[(30, m("5")), (10, m("5")), (20, m("5"))]);
        assert_eq!(shares, vec![(10, m("0.34")), (20, m("0.33")), (30, m("0.33"))]);
        // 0.01 over 1:2 → exact shares 0.00333 and 0.00667: the larger remainder wins.
        let shares = allocate_largest_remainder(m("0.01"), &[(1, m("1")), (2, m("2"))]);
        assert_eq!(shares, vec![(1, m("0.00")), (2, m("0.01"))]);
    }

    proptest::proptest! {
        #[test]
        fn shares_sum_exactly_stay_within_a_fen_and_ignore_payer_order(
            bases in proptest::collection::vec(1i64..1_000_000, 1..8),
            refund_permille in 1i64..=1000,
        ) {
            let with_uins: Vec<(Uin, Money)> =
                bases.iter().enumerate().map(|(i, &b)| (i as Uin + 1, Money::from_fen(b))).collect();
            let total: i64 = bases.iter().sum();
            let refund = Money::from_fen((total * refund_permille / 1000).max(1));
            let shares = allocate_largest_remainder(refund, &with_uins);
            let sum: Money = shares.iter().map(|s| s.1).sum();
            proptest::prop_assert_eq!(sum, refund);
            for (&(_, share), &(_, basis)) in shares.iter().zip(&with_uins) {
                // |share − refund × basis / total| < 1 fen, in integers.
                let exact_times_total = i128::from(refund.fen()) * i128::from(basis.fen());
                let diff = i128::from(share.fen()) * i128::from(total) - exact_times_total;
                proptest::prop_assert!(diff.abs() < i128::from(total));
                proptest::prop_assert!(share <= basis);
            }
            let mut reversed = with_uins.clone();
            reversed.reverse();
            proptest::prop_assert_eq!(allocate_largest_remainder(refund, &reversed), shares);
        }
    }
}
