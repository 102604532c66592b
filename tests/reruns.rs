//! SPEC §12 and §4.4: reruns, refused gaps, thread counts and row order.

use crate::common::*;
use orgsettle::job::{self, Failure};
use std::collections::BTreeMap;
use std::path::Path;

fn demo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo")
}

#[test]
fn rerunning_the_last_day_is_byte_identical() {
    let out = tempfile::tempdir().unwrap();
    job::run(&demo(), out.path(), None, None, quiet()).unwrap();
    let before = tree(out.path());
    job::daily(&demo(), out.path(), day("2026-11-02"), quiet()).unwrap();
    assert_eq!(tree(out.path()), before);
}

#[test]
fn rerunning_an_earlier_day_discards_the_later_days() {
    let to = Some(day("2026-10-31"));
    let out = tempfile::tempdir().unwrap();
    job::run(&demo(), out.path(), None, to, quiet()).unwrap();
    let before = tree(out.path());
    job::daily(&demo(), out.path(), day("2026-10-30"), quiet()).unwrap();
    let after = tree(out.path());
    assert!(!out.path().join("days/2026-10-31").exists());
    assert!(!out.path().join("state/2026-10-31.json").exists());
    // The October FOCUS rows are appended day by day: the rerun cut them back to
    // those of Oct 30.
    let focus = "state/focus-2026-10.csv";
    assert!(before[focus].len() > after[focus].len() && before[focus].starts_with(&after[focus]));
    let kept: BTreeMap<_, _> = before.into_iter().filter(|(k, _)| !k.contains("2026-10-31") && k != focus).collect();
    let after: BTreeMap<_, _> = after.into_iter().filter(|(k, _)| k != focus).collect();
    assert_eq!(after, kept, "days up to the rerun day are unchanged");
    // Continuing settles the discarded day again, identically.
    job::run(&demo(), out.path(), None, to, quiet()).unwrap();
    let again = tempfile::tempdir().unwrap();
    job::run(&demo(), again.path(), None, to, quiet()).unwrap();
    assert_eq!(tree(out.path()), tree(again.path()));
}

#[test]
fn a_closed_month_is_never_run_again() {
    let out = tempfile::tempdir().unwrap();
    job::run(&demo(), out.path(), None, None, quiet()).unwrap();
    let before = tree(out.path());
    // The close removed the states no run can start from again: those before Nov 1.
    // The usage ids first seen in October stay: November's states still remember
    // them (Nov 1 accepted no new usage record, so it has no id file). October's
    // aggregates are in the file Oct 31 wrote (Nov 1 settled no line).
    let states: Vec<&String> = before.keys().filter(|k| k.starts_with("state/")).collect();
    assert_eq!(
        states,
        [
            "state/2026-10-30.usage-ids",
            "state/2026-10-31.month-2026-10.bin",
            "state/2026-10-31.usage-ids",
            "state/2026-11-01.json",
            "state/2026-11-02.json",
            "state/2026-11-02.month-2026-11.bin",
            "state/2026-11-02.usage-ids",
            "state/focus-2026-11.csv"
        ]
    );
    let last = orgsettle::store::Store::new(out.path()).load(day("2026-11-02")).unwrap();
    let listed: Vec<String> = last.seen.usage_files.keys().map(|d| d.to_string()).collect();
    assert_eq!(listed, ["2026-10-30", "2026-10-31", "2026-11-02"]);
    assert_eq!(last.seen.usage.len() as u64, last.seen.usage_files.values().sum::<u64>());
    // As Nov 3 starts from it: every id file is read (every remembered id kept: no
    // ids wanted are given).
    let store = orgsettle::store::Store::new(out.path());
    let keep_all = || None;
    let next = |d: &str| Some(orgsettle::store::NextDay { day: day(d), wanted: &keep_all });
    let mut for_nov3 = store.load_for(day("2026-11-02"), next("2026-11-03")).unwrap();
    // The order, recharge and transfer ids are set aside, read back from the
    // state file when the day's records are checked.
    assert!(last.seen.holds_records() && !for_nov3.seen.holds_records());
    assert_ne!(for_nov3.seen, last.seen);
    store.hold_records(&mut for_nov3.seen).unwrap();
    assert!(!last.seen.orders.is_empty() && !last.seen.recharges.is_empty());
    assert_eq!(for_nov3.seen, last.seen);
    // As Dec 1 would start from it: October's ids are forgotten (§4.2), so their
    // files are not read at all.
    let for_dec1 = store.load_for(day("2026-11-02"), next("2026-12-01")).unwrap();
    assert_eq!(for_dec1.seen.usage_files.keys().map(|d| d.to_string()).collect::<Vec<_>>(), ["2026-11-02"]);
    assert_eq!(for_dec1.seen.usage.len() as u64, last.seen.usage_files[&day("2026-11-02")]);
    assert!(for_dec1.seen.usage.len() < last.seen.usage.len());
    let month_files: Vec<(String, String)> = last.month_files.iter().map(|(m, d)| (m.to_string(), d.to_string())).collect();
    assert_eq!(month_files, [("2026-10".into(), "2026-10-31".into()), ("2026-11".into(), "2026-11-02".into())]);
    assert_eq!(last.months.keys().map(|m| m.to_string()).collect::<Vec<_>>(), ["2026-10", "2026-11"]);
    assert!(!last.months[&orgsettle::time::Month::parse("2026-11").unwrap()].merged.is_empty());
    for d in ["2026-10-31", "2026-11-01"] {
        let err = job::daily(&demo(), out.path(), day(d), quiet()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("month 2026-10 is closed"), "{err}");
    }
    // Closing again gives byte-identical files.
    job::close(&demo(), out.path(), orgsettle::time::Month::parse("2026-10").unwrap(), quiet()).unwrap();
    assert_eq!(tree(out.path()), before);
}

#[test]
fn focus_rows_past_the_committed_length_are_cut_back_and_a_shortened_file_is_refused() {
    let clean = tempfile::tempdir().unwrap();
    job::run(&demo(), clean.path(), None, None, quiet()).unwrap();
    let to = Some(day("2026-10-31"));
    let focus = "state/focus-2026-10.csv";
    // Rows left by a run that did not commit are cut off by the next run.
    let out = tempfile::tempdir().unwrap();
    job::run(&demo(), out.path(), None, to, quiet()).unwrap();
    let mut bytes = std::fs::read(out.path().join(focus)).unwrap();
    let committed = bytes.len();
    bytes.extend_from_slice(b"1.00,uncommitted row\n");
    std::fs::write(out.path().join(focus), &bytes).unwrap();
    job::run(&demo(), out.path(), None, None, quiet()).unwrap();
    assert_eq!(tree(out.path()), tree(clean.path()));
    // A month file shorter than its state records was changed outside orgsettle.
    let out = tempfile::tempdir().unwrap();
    job::run(&demo(), out.path(), None, to, quiet()).unwrap();
    let bytes = std::fs::read(out.path().join(focus)).unwrap();
    std::fs::write(out.path().join(focus), &bytes[..committed - 1]).unwrap();
    let err = job::run(&demo(), out.path(), None, None, quiet()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Failure::Internal(_)), "{message}");
    assert!(message.contains("focus-2026-10.csv holds") && message.contains(&format!("the state records {committed}")), "{message}");
}

#[test]
fn a_day_without_the_previous_state_is_refused_and_writes_nothing() {
    let out = tempfile::tempdir().unwrap();
    job::daily(&demo(), out.path(), day("2026-10-30"), quiet()).unwrap();
    let before = tree(out.path());
    let err = job::daily(&demo(), out.path(), day("2026-11-01"), quiet()).unwrap_err();
    assert!(matches!(err, Failure::Refused(_)), "{err}");
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("needs the state after 2026-10-31"), "{err}");
    assert_eq!(tree(out.path()), before);
}

/// Several organizations with interleaved rows, so that thread count and row
/// order have something to disturb.
fn many_orgs(reverse_rows: bool) -> Scenario {
    let s = Scenario::new();
    let mut orgs = Vec::new();
    let mut usage = vec![USAGE_HEADER.trim_end().to_string()];
    let mut orders = vec![ORDERS_HEADER.trim_end().to_string()];
    for o in 0..6u64 {
        let m = 1000 * (o + 1);
        orgs.push(format!(
            r#"{{"org_id":"org-{o}","created_at":"2026-01-01T00:00:00+08:00","management_uin":{m},
            "entities":[{{"entity_id":"e","admin_uin":{}}}],"departments":[{{"dept_id":"root"}}],"members":[
            {{"uin":{m},"entity_id":"e","dept_id":"root","join_mode":"management","joined_at":"2026-01-01T00:00:00+08:00"}},
            {{"uin":{},"entity_id":"e","dept_id":"root","join_mode":"created","joined_at":"2026-01-01T00:00:00+08:00"}},
            {{"uin":{},"entity_id":"e","dept_id":"root","join_mode":"created","joined_at":"2026-01-01T00:00:00+08:00",
              "payer_periods":[{{"payer_uin":{},"from":"2026-10-01T05:00:00+08:00"}}]}}]}}"#,
            m + 1, m + 1, m + 2, m + 1
        ));
        for h in 0..8u64 {
            for (k, owner) in [m, m + 1, m + 2].into_iter().enumerate() {
                let q = (h * 7 + k as u64 * 3 + o) % 11 + 1;
                usage.push(format!(
                    "u-{o}-{h}-{k},{owner},ins-{owner},cvm,r1,hourly,2026-10-01T{h:02}:00:00+08:00,2026-10-01T{h:02}:30:00+08:00,{q},0.333,{}.{:03}",
                    q * 333 / 1000,
                    q * 333 % 1000
                ));
            }
        }
        orders.push(format!("ord-{o}-a,{},res-{o},cbs,new,2026-10-01T06:00:00+08:00,{},", m + 2, 40 + o));
        orders.push(format!("ord-{o}-b,{},res-{o},cbs,refund,2026-10-01T07:00:00+08:00,,{}.01", m + 2, 10 + o));
    }
    if reverse_rows {
        usage[1..].reverse();
        orders[1..].reverse();
    }
    s.file("org.json", &format!(r#"{{"snapshot_at":"2026-10-01T00:00:00+08:00","orgs":[{}]}}"#, orgs.join(",")));
    s.file("balances.csv", "uin,cash,gift,credit_limit\n1000,5.00,1.00,0\n2001,30.00,0,10\n");
    s.file("days/2026-10-01/usage.csv", &(usage.join("\n") + "\n"));
    s.file("days/2026-10-01/orders.csv", &(orders.join("\n") + "\n"));
    s
}

#[test]
fn outputs_do_not_depend_on_thread_count() {
    let one = many_orgs(false);
    let two = many_orgs(false);
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    pool(1).install(|| one.run()).unwrap();
    pool(2).install(|| two.run()).unwrap();
    assert_eq!(tree(&one.out()), tree(&two.out()));
    assert!(one.rows("days/2026-10-01/ledger.csv").len() > 100);
}

#[test]
fn outputs_do_not_depend_on_row_order() {
    let forward = many_orgs(false);
    let reversed = many_orgs(true);
    forward.run().unwrap();
    reversed.run().unwrap();
    let (a, b) = (tree(&forward.out()), tree(&reversed.out()));
    // Every file but rejects.csv (which names physical lines) is byte-identical.
    for (name, bytes) in &a {
        if !name.ends_with("rejects.csv") {
            assert_eq!(Some(bytes), b.get(name), "{name} differs");
        }
    }
}

#[test]
fn outputs_do_not_depend_on_how_a_day_is_cut_into_runs() {
    // Runs of 1, 2 and 5 lines cut every instant between owners, put payer
    // changes, orders and refunds between runs, and end runs inside an
    // organization's lines; each must give the files of one run a day.
    let whole = many_orgs(false);
    whole.run().unwrap();
    let expected = tree(&whole.out());
    assert!(whole.rows("days/2026-10-01/ledger.csv").len() > 100);
    for lines in [1, 2, 5] {
        let cut = many_orgs(false);
        job::run(&cut.input(), &cut.out(), None, None, job::Options { run_rows: Some(lines), ..quiet() }).unwrap();
        assert_eq!(tree(&cut.out()), expected, "runs of {lines} lines");
    }
    // The demo: late lines of the day before, several days, a month closed.
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo");
    let (one, cut) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    job::run(&demo, one.path(), None, None, quiet()).unwrap();
    job::run(&demo, cut.path(), None, None, job::Options { run_rows: Some(1), ..quiet() }).unwrap();
    assert_eq!(tree(cut.path()), tree(one.path()));
}

#[test]
fn a_day_of_several_reading_batches_settles_alike_on_one_and_two_threads() {
    // More usage rows than four of reading's batches (16k rows each, three in
    // flight): the spill's full buffers are written while the next batch is
    // read, and every row must still be settled exactly once, whatever the
    // thread count.
    let input = tempfile::tempdir().unwrap();
    let day = orgsettle::time::Day::parse("2026-10-31").unwrap();
    let options = orgsettle::gen::GenOptions { orgs: 40, accounts: 400, days: 1, usage_per_day: 80_000, seed: 11, start: day };
    orgsettle::gen::generate(input.path(), &options).unwrap();
    // The generator's rows, with its share of repeated and malformed ones (one a line).
    let usage = std::fs::read_to_string(input.path().join("days/2026-10-31/usage.csv")).unwrap();
    let rows = usage.lines().count() as u64 - 1;
    assert!(rows > 4 * 16 * 1024, "{rows} usage rows");
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    pool(1).install(|| job::daily(input.path(), one.path(), day, quiet())).unwrap();
    pool(2).install(|| job::daily(input.path(), two.path(), day, quiet())).unwrap();
    assert_eq!(tree(one.path()), tree(two.path()));
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(one.path().join("days/2026-10-31/summary.json")).unwrap()).unwrap();
    let counts = &summary["files"]["usage.csv"];
    let count = |name: &str| counts[name].as_u64().unwrap();
    assert_eq!(count("rows"), rows);
    assert_eq!(count("accepted") + count("duplicates") + count("rejected"), rows);
    assert!(count("accepted") > rows * 9 / 10, "{counts}");
    assert!(summary["ledger"]["lines"].as_u64().unwrap() > 10_000, "{}", summary["ledger"]);
}

#[test]
fn a_damaged_month_file_fails_the_next_day_once_settled_and_leaves_out_as_it_was() {
    // A day reads the aggregates of the months it adds to only when it folds its
    // sums in, after its runs have written the ledger aside and appended FOCUS
    // rows: a month file that cannot be read then must still fail the day (exit 1,
    // naming the file) and leave OUT as it was. 2026-10-31 adds to October.
    let out = tempfile::tempdir().unwrap();
    job::run(&demo(), out.path(), None, Some(day("2026-10-30")), quiet()).unwrap();
    let month_file = out.path().join("state/2026-10-30.month-2026-10.bin");
    let bytes = std::fs::read(&month_file).unwrap();
    std::fs::write(&month_file, &bytes[..bytes.len() - 1]).unwrap();
    let before = tree(out.path());
    let err = job::daily(&demo(), out.path(), day("2026-10-31"), quiet()).unwrap_err();
    assert_eq!(err.exit_code(), 1, "{err}");
    assert!(err.to_string().contains(&month_file.display().to_string()), "{err}");
    let after = tree(out.path());
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    assert!(after == before, "a failed day changed OUT");
    // Mended, the day settles as in a clean run.
    std::fs::write(&month_file, &bytes).unwrap();
    job::daily(&demo(), out.path(), day("2026-10-31"), quiet()).unwrap();
    let clean = tempfile::tempdir().unwrap();
    job::run(&demo(), clean.path(), None, Some(day("2026-10-31")), quiet()).unwrap();
    let (got, want) = (tree(out.path()), tree(clean.path()));
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    assert!(got == want, "the mended day's files differ from a clean run's");
}
