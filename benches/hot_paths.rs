//! Criterion benchmarks of the hot paths: parsing a usage row's numbers and time,
//! pricing, the waterfall, refund allocation and writing the ledger.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use orgsettle::engine::{LedgerLine, LineDetail, LineKind, LineStatus, PostpaidUsage};
use orgsettle::money::{Exact8, Money, Rated};
use orgsettle::pricing::price_usage;
use orgsettle::reference::{parse_tiers, Contract, ContractCycle, ContractKind, Voucher, VoucherScope};
use orgsettle::refunds::allocate_largest_remainder;
use orgsettle::settlement::{plan_payment, LineTiming, VoucherBalance};
use orgsettle::state::AccountState;
use orgsettle::time::{Cycle, Day, Ts};
use std::collections::BTreeSet;

fn parsing(c: &mut Criterion) {
    c.bench_function("parse usage numbers and timestamps", |b| {
        b.iter(|| {
            let q = Exact8::parse(black_box("12.5")).unwrap();
            let p = Exact8::parse(black_box("0.03125")).unwrap();
            let l = Exact8::parse(black_box("0.390625")).unwrap();
            let t = Ts::parse(black_box("2026-11-01T10:00:00+08:00")).unwrap();
            let ok = Rated::product(q, p).map(Rated::round_to_exact8_half_away_from_zero) == Some(l);
            black_box((ok, Cycle::Hourly.period_containing(t)))
        })
    });
}

fn pricing(c: &mut Criterion) {
    let tiered = Contract {
        name: orgsettle::reference::ContractName::leak(1, "c"),
        owner_uin: 1,
        product: "cos".into(),
        cycle: ContractCycle::Postpaid(Cycle::Daily),
        kind: ContractKind::Tiered(parse_tiers("0:0.50|100:0.40|1000:0.30").unwrap()),
        valid_from: Ts(0),
        valid_to: None,
    };
    let q = Exact8::parse("1234.5").unwrap();
    let l = Exact8::parse("617.25").unwrap();
    c.bench_function("price a usage record (tiered)", |b| b.iter(|| price_usage(Some(black_box(&tiered)), q, l)));
}

fn waterfall(c: &mut Criterion) {
    let vouchers: Vec<Voucher> = (0..4)
        .map(|i| Voucher {
            voucher_id: format!("v{i}"),
            owner_uin: 1,
            amount: Money::from_fen(500 + i),
            valid_from: Ts(0),
            valid_to: Ts(1_000_000 + i64::from(i as i32)),
            products: BTreeSet::new(),
            scope: VoucherScope::All,
            min_charge: None,
        })
        .collect();
    let balances: Vec<VoucherBalance> = vouchers.iter().map(|v| VoucherBalance { voucher: v, remaining: v.amount }).collect();
    let account = AccountState { cash: Money::from_fen(1000), gift: Money::from_fen(300), credit_limit: Money::ZERO, suspended: false };
    let timing = LineTiming::Postpaid { period_start: Ts(10), period_end: Ts(20) };
    c.bench_function("plan the waterfall with 4 vouchers", |b| {
        b.iter(|| plan_payment(black_box(Money::from_fen(2345)), &account, &balances, "cvm", timing))
    });
}

fn refunds(c: &mut Criterion) {
    let bases: Vec<(u64, Money)> = (1..=8).map(|i| (i, Money::from_fen(1000 * i as i64 + 7))).collect();
    c.bench_function("largest-remainder refund over 8 payers", |b| {
        b.iter(|| allocate_largest_remainder(black_box(Money::from_fen(12345)), &bases))
    });
}

fn ledger(c: &mut Criterion) {
    let line = LedgerLine {
        charge_time: Ts::parse("2026-11-01T11:00:00+08:00").unwrap(),
        bill_month: Day::parse("2026-11-01").unwrap().month().into(),
        kind: LineKind::Postpaid,
        org_id: Box::leak(Box::new("org-1".to_string())),
        owner_uin: 100000000003,
        responsible_uin: 100000000002,
        product: orgsettle::ids::intern_product("cvm"),
        detail: LineDetail::Postpaid(PostpaidUsage {
            cycle: Cycle::Hourly,
            late: None,
            start: Ts::parse("2026-11-01T10:00:00+08:00").unwrap(),
            records: 3,
            quantity: Exact8::parse("3").unwrap(),
        }),
        list_amount: Money::from_fen(1583),
        payable_amount: Money::from_fen(1108),
        contract: Some(orgsettle::reference::ContractName::leak(100000000002, "c-fin")),
        voucher_amount: Money::from_fen(1108),
        cash_amount: Money::ZERO,
        gift_amount: Money::ZERO,
        credit_amount: Money::ZERO,
        status: LineStatus::Settled,
        place: (0, 0),
    };
    let lines = vec![line; 10_000];
    let day = Day::parse("2026-11-01").unwrap();
    c.bench_function("write 10k ledger lines", |b| b.iter(|| orgsettle::reports::ledger_csv(day, black_box(&lines))));
}

criterion_group!(benches, parsing, pricing, waterfall, refunds, ledger);
criterion_main!(benches);
