//! `orgsettle gen` (SPEC §13, the scale issue): the same bytes for a seed, the
//! shape it promises, and an input that exercises every rule: settled, it shows
//! every reject of §14 and every refusal of §9.

use crate::common::*;
use orgsettle::gen::{generate, GenOptions};
use orgsettle::job;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn options(seed: u64, days: u64, usage_per_day: u64) -> GenOptions {
    GenOptions { orgs: 60, accounts: 900, days, usage_per_day, seed, start: day("2026-10-31") }
}

/// The CSV rows of a file after its header, split at commas (of the columns
/// read here, none holds a comma; a reject's message, the last, may).
fn rows(path: &Path) -> Vec<Vec<String>> {
    read(path).lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

/// How often each value of column `column` occurs.
fn counts(rows: &[Vec<String>], column: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r[column].clone()).or_insert(0) += 1;
    }
    out
}

#[test]
fn one_seed_writes_the_same_bytes_and_another_seed_other_bytes() {
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    generate(a.path(), &options(5, 2, 3_000)).unwrap();
    generate(b.path(), &options(5, 2, 3_000)).unwrap();
    generate(c.path(), &options(6, 2, 3_000)).unwrap();
    let (a, b, c) = (tree(a.path()), tree(b.path()), tree(c.path()));
    let names: Vec<&String> = a.keys().collect();
    assert_eq!(
        names,
        [
            "balances.csv",
            "contracts.csv",
            "days/2026-10-31/orders.csv",
            "days/2026-10-31/recharges.csv",
            "days/2026-10-31/transfers.csv",
            "days/2026-10-31/usage.csv",
            "days/2026-11-01/orders.csv",
            "days/2026-11-01/recharges.csv",
            "days/2026-11-01/transfers.csv",
            "days/2026-11-01/usage.csv",
            "history.csv",
            "org.json",
            "vouchers.csv",
        ]
    );
    assert!(a == b, "two runs of one seed differ");
    assert_eq!(c.keys().collect::<Vec<_>>(), names);
    for name in ["org.json", "balances.csv", "days/2026-10-31/usage.csv", "days/2026-11-01/orders.csv"] {
        assert_ne!(a[name], c[name], "{name} is the same for seeds 5 and 6");
    }
}

#[test]
fn rows_come_70_25_5_by_cycle_from_skewed_accounts_and_organizations() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(dir.path(), &options(7, 2, 40_000)).unwrap();
    assert_eq!((summary.orgs, summary.accounts, summary.usage_rows), (60, 900, 80_000));
    // Rows drawn by cycle, each record id once (repeats and conflicting re-sends
    // come on top of them). Monthly rows only on the month's last day.
    let by_cycle = |file: &str| {
        let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in rows(&dir.path().join(file)) {
            ids.entry(r[5].clone()).or_default().insert(r[0].clone());
        }
        ids.into_iter().map(|(cycle, ids)| (cycle, ids.len())).collect::<Vec<_>>()
    };
    let want = |h: usize, d: usize, m: usize| {
        let mut v = vec![("daily".to_string(), d), ("hourly".to_string(), h)];
        if m > 0 {
            v.push(("monthly".to_string(), m));
        }
        v
    };
    assert_eq!(by_cycle("days/2026-10-31/usage.csv"), want(28_000, 10_000, 2_000));
    assert_eq!(by_cycle("days/2026-11-01/usage.csv"), want(28_000, 12_000, 0));

    // Skew: the busiest tenth of the accounts push at least 40% of the rows, and
    // the largest organization has at least twice the members of the median one.
    let usage = rows(&dir.path().join("days/2026-10-31/usage.csv"));
    let per_owner = counts(&usage, 1);
    let mut per_account: Vec<usize> = rows(&dir.path().join("balances.csv")).iter().map(|r| per_owner.get(&r[0]).copied().unwrap_or(0)).collect();
    assert_eq!(per_account.len(), 900);
    per_account.sort_unstable_by(|a, b| b.cmp(a));
    let top: usize = per_account[..90].iter().sum();
    assert!(top * 10 >= usage.len() * 4, "the busiest 90 accounts push {top} of {} rows", usage.len());
    let snapshot: serde_json::Value = serde_json::from_str(&read(&dir.path().join("org.json"))).unwrap();
    let mut sizes: Vec<usize> = snapshot["orgs"].as_array().unwrap().iter().map(|o| o["members"].as_array().unwrap().len()).collect();
    sizes.sort_unstable();
    assert!(sizes[59] >= 2 * sizes[30], "organization sizes {sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 900);
}

#[test]
fn a_generated_input_settles_with_every_reject_refusal_and_mode_showing() {
    let input = tempfile::tempdir().unwrap();
    generate(input.path(), &options(3, 2, 30_000)).unwrap();
    let out = tempfile::tempdir().unwrap();
    job::run(input.path(), out.path(), None, None, quiet()).unwrap();
    let days = ["2026-10-31", "2026-11-01"];
    let all = |file: &str| -> Vec<Vec<String>> { days.iter().flat_map(|d| rows(&out.path().join(format!("days/{d}/{file}")))).collect() };

    // Every reject of SPEC §14, each from the file it applies to.
    let rejects = all("rejects.csv");
    let mut reasons: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &rejects {
        reasons.entry(r[0].as_str()).or_default().insert(r[3].as_str());
    }
    let set = |names: &[&'static str]| names.iter().copied().collect::<BTreeSet<&str>>();
    assert_eq!(
        reasons,
        BTreeMap::from([
            ("orders.csv", set(&["bad_order_amounts", "before_org", "future_time", "refund_exceeds_paid", "unknown_resource"])),
            ("recharges.csv", set(&["bad_amount_scale", "bad_row", "future_time", "unknown_account"])),
            ("transfers.csv", set(&["bad_value", "future_time"])),
            (
                "usage.csv",
                set(&[
                    "bad_amount_scale",
                    "bad_timestamp",
                    "bad_value",
                    "before_org",
                    "conflicting_duplicate",
                    "list_amount_mismatch",
                    "month_closed",
                    "period_not_ended",
                    "spans_periods",
                    "unknown_account",
                ])
            ),
        ])
    );
    // The usage faults at fixed places: one of each in every 10,000 rows drawn,
    // so three a day.
    for d in days {
        let day_rejects = rows(&out.path().join(format!("days/{d}/rejects.csv")));
        let usage = counts(&day_rejects.into_iter().filter(|r| r[0] == "usage.csv").collect::<Vec<_>>(), 3);
        for reason in ["bad_amount_scale", "bad_value", "conflicting_duplicate", "list_amount_mismatch", "month_closed", "period_not_ended", "spans_periods", "unknown_account"] {
            assert_eq!(usage.get(reason), Some(&3), "{d}: {reason} in {usage:?}");
        }
        let summary: serde_json::Value = serde_json::from_str(&read(&out.path().join(format!("days/{d}/summary.json")))).unwrap();
        let u = &summary["files"]["usage.csv"];
        assert!(u["duplicates"].as_u64().unwrap() > 0, "{d}: no upstream retries counted: {u}");
        assert_eq!(summary["cash_check"]["passed"], true);
    }

    // Every refusal of §9, and transfers accepted.
    let transfers = all("transfers.csv");
    let refusals: BTreeSet<&str> = transfers.iter().filter(|t| t[6] == "rejected").map(|t| t[7].as_str()).collect();
    assert_eq!(refusals, set(&["bad_amount", "exceeds_source", "insufficient_cash", "no_permission", "not_self_pay", "unknown_member", "unknown_source"]));
    assert!(transfers.iter().any(|t| t[6] == "accepted" && t[1] == "in") && transfers.iter().any(|t| t[6] == "accepted" && t[1] == "out"));

    // Lines of every kind and status, late lines, and every contract kind and cycle pricing some.
    let ledger = all("ledger.csv");
    let kinds: BTreeSet<(&str, &str)> = ledger.iter().map(|l| (l[4].as_str(), l[24].as_str())).collect();
    assert_eq!(kinds, BTreeSet::from([("postpaid", "settled"), ("prepaid", "payment_failed"), ("prepaid", "settled"), ("refund", "settled")]));
    assert!(ledger.iter().any(|l| l[0].contains("|late-")), "no late line");
    let contracts: BTreeSet<&str> = ledger.iter().filter_map(|l| l[19].rsplit('-').next()).filter(|s| !s.is_empty()).collect();
    assert_eq!(contracts, set(&["d", "h", "h1", "h2", "m", "p"]), "contract id suffixes pricing lines");
    let kinds_of_contracts: BTreeSet<String> = {
        let priced: BTreeSet<&str> = ledger.iter().map(|l| l[19].as_str()).collect();
        rows(&input.path().join("contracts.csv")).into_iter().filter(|c| priced.contains(c[0].as_str())).map(|c| format!("{} {}", c[3], c[4])).collect()
    };
    assert_eq!(
        kinds_of_contracts.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        set(&["daily tiered", "hourly discount", "hourly unit_price", "monthly discount", "prepaid discount", "prepaid fixed_price"])
    );
    assert!(ledger.iter().any(|l| l[6] != l[7]), "no line paid by a payer");
    assert!(ledger.iter().any(|l| !l[18].is_empty() && l[18] != l[6]), "no line priced by an inherited contract");

    // Vouchers of both kinds used; the arrears broadcast both ways.
    let used: BTreeSet<String> = all("voucher_usage.csv").into_iter().map(|v| v[1].clone()).collect();
    let used_kinds: BTreeSet<String> = rows(&input.path().join("vouchers.csv")).into_iter().filter(|v| used.contains(&v[0])).map(|v| v[2].clone()).collect();
    assert_eq!(used_kinds, BTreeSet::from(["cash_coupon".to_string(), "voucher".to_string()]));
    let events: BTreeSet<String> = all("events.csv").into_iter().map(|e| e[3].clone()).collect();
    assert_eq!(events, BTreeSet::from(["reversal".to_string(), "shutdown".to_string()]));

    // October closed on November 1st, its six-month window filled from history.csv.
    let months: BTreeSet<String> = rows(&out.path().join("months/2026-10/overview_by_member.csv")).into_iter().map(|r| r[1].clone()).collect();
    assert_eq!(months, ["2026-05", "2026-06", "2026-07", "2026-08", "2026-09", "2026-10"].iter().map(|m| m.to_string()).collect());
}
