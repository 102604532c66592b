//! Pricing and discount inheritance (SPEC §5). Pure: no I/O, no state.
//!
//! Invariant: every priced amount is an exact rated amount; nothing here rounds.

use crate::ids::Product;
use crate::money::{Exact8, Rated};
use crate::reference::{Contract, ContractCycle, ContractKind, Contracts};
use crate::snapshot::{AccountCard, Member, Org, Snapshot};
use crate::time::Ts;

/// Which contract prices a line of `owner` for `product` (SPEC §5.2).
///
/// `decided_at` is the instant that decides the source (the period's last instant
/// for usage, `created_at` for orders); `valid_at` the instant the contract's
/// validity must contain (the period start for usage, `created_at` for orders).
#[allow(clippy::too_many_arguments)] // the inputs of §5.2, each a different thing
pub fn choose_contract<'c>(
    snapshot: &Snapshot,
    contracts: &'c Contracts,
    org: &Org,
    owner: &Member,
    product: Product,
    cycle: ContractCycle,
    decided_at: Ts,
    valid_at: Ts,
) -> Option<&'c Contract> {
    let card = AccountCard {
        org: 0,
        member: 0,
        org_created_at: org.created_at,
        management_uin: org.management_uin,
        joined_at: owner.joined_at,
        discount_inheritance: owner.permissions.discount_inheritance,
    };
    choose_contract_by_card(snapshot, contracts, owner.uin, &card, || owner, product, cycle, decided_at, valid_at)
}

/// `choose_contract` for the account `uin` with `card`: `owner` gives its member
/// struct, read only when the account inherits (for its payer periods).
#[allow(clippy::too_many_arguments)]
pub fn choose_contract_by_card<'c, 'm>(
    snapshot: &Snapshot,
    contracts: &'c Contracts,
    uin: crate::ids::Uin,
    card: &AccountCard,
    owner: impl FnOnce() -> &'m Member,
    product: Product,
    cycle: ContractCycle,
    decided_at: Ts,
    valid_at: Ts,
) -> Option<&'c Contract> {
    let inherits = card.discount_inheritance && !snapshot.inheritance_blacklist.contains(product) && decided_at >= card.joined_at;
    if !inherits {
        return contracts.applicable(uin, product, cycle, valid_at);
    }
    // Inheritance outlives membership: a former member keeps its former
    // management account as its source.
    let source = owner().payer_at(decided_at).unwrap_or(card.management_uin);
    contracts.applicable(source, product, cycle, valid_at)
}

/// The priced amount of one usage record: exact, before any rounding.
pub fn price_usage(contract: Option<&Contract>, quantity: Exact8, list_amount: Exact8) -> Option<Rated> {
    match contract.map(|c| &c.kind) {
        None => Some(Rated::from_exact8(list_amount)),
        Some(ContractKind::Discount(rate)) => Rated::product(list_amount, *rate),
        Some(ContractKind::UnitPrice(price)) => Rated::product(quantity, *price),
        Some(ContractKind::Tiered(tiers)) => price_tiered(tiers, quantity),
        Some(ContractKind::FixedPrice(_)) => {
            unreachable!("fixed_price contracts have the prepaid cycle and never match usage")
        }
    }
}

/// Graduated tiers over the record's own quantity: each tier prices the units
/// that fall inside it.
fn price_tiered(tiers: &[(Exact8, Exact8)], quantity: Exact8) -> Option<Rated> {
    let mut total = Rated::ZERO;
    for (i, &(start, price)) in tiers.iter().enumerate() {
        if quantity <= start {
            break;
        }
        let end = tiers.get(i + 1).map(|t| t.0);
        let upper = end.map_or(quantity, |e| quantity.min(e));
        let units = upper.checked_sub(start)?;
        total = total.checked_add(Rated::product(units, price)?)?;
    }
    Some(total)
}

/// The priced amount of one charge order.
pub fn price_order(contract: Option<&Contract>, list_amount: Exact8) -> Option<Rated> {
    match contract.map(|c| &c.kind) {
        None => Some(Rated::from_exact8(list_amount)),
        Some(ContractKind::Discount(rate)) => Rated::product(list_amount, *rate),
        Some(ContractKind::FixedPrice(price)) => Some(price.to_rated()),
        Some(ContractKind::UnitPrice(_) | ContractKind::Tiered(_)) => {
            unreachable!("unit_price and tiered contracts are postpaid only and never match orders")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::parse_tiers;

    fn e8(s: &str) -> Exact8 {
        Exact8::parse(s).unwrap()
    }

    fn contract(kind: ContractKind) -> Contract {
        Contract {
            name: crate::reference::ContractName::leak(1, "c"),
            owner_uin: 1,
            product: "cvm".into(),
            cycle: ContractCycle::Postpaid(crate::time::Cycle::Hourly),
            kind,
            valid_from: Ts(0),
            valid_to: None,
        }
    }

    #[test]
    fn graduated_tiers_price_each_band() {
        let c = contract(ContractKind::Tiered(parse_tiers("0:0.50|100:0.40|1000:0.30").unwrap()));
        // 100 × 0.50 + 900 × 0.40 + 200 × 0.30 = 50 + 360 + 60 = 470
        let priced = price_usage(Some(&c), e8("1200"), e8("999")).unwrap();
        assert_eq!(priced.round_to_money_half_away_from_zero().to_string(), "470.00");
        let priced = price_usage(Some(&c), e8("50"), e8("999")).unwrap();
        assert_eq!(priced.round_to_money_half_away_from_zero().to_string(), "25.00");
        let priced = price_usage(Some(&c), e8("100.5"), e8("999")).unwrap();
        assert_eq!(priced.round_to_money_half_away_from_zero().to_string(), "50.20");
    }

    #[test]
    fn discount_and_unit_price() {
        let d = contract(ContractKind::Discount(e8("0.8")));
        assert_eq!(price_usage(Some(&d), e8("3"), e8("12.345")).unwrap(), Rated::from_exact8(e8("9.876")));
        let u = contract(ContractKind::UnitPrice(e8("0.125")));
        assert_eq!(price_usage(Some(&u), e8("3"), e8("12.345")).unwrap(), Rated::from_exact8(e8("0.375")));
        assert_eq!(price_usage(None, e8("3"), e8("12.345")).unwrap(), Rated::from_exact8(e8("12.345")));
    }
}
