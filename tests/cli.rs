//! The binary: exit codes 0/1/2 and messages (SPEC §13).

use crate::common::*;
use std::process::Command;

fn orgsettle(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orgsettle")).args(args).output().expect("binary runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn validate_lists_every_snapshot_violation_and_exits_2() {
    let s = Scenario::new();
    let json = org_json(
        r#",{"uin":3,"entity_id":"nope","dept_id":"root","join_mode":"created","joined_at":"2025-01-01T00:00:00+08:00",
        "has_account_level_discount":true,"payer_periods":[{"payer_uin":2,"from":"2026-02-01T00:00:00+08:00"}]}"#,
    );
    s.file("org.json", &json);
    let (code, _, err) = orgsettle(&["validate", "--input", s.input().to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    for rule in ["entity_id nope does not exist (rule 3.1.3)", "joined_at is before the org's created_at", "account-level discount"] {
        assert!(err.contains(rule), "missing {rule:?} in {err}");
    }
}

#[test]
fn validate_reports_rejected_rows_and_exits_0() {
    let s = Scenario::new();
    s.file("org.json", &org_json(""));
    s.file("days/2026-10-01/recharges.csv", "recharge_id,uin,at,amount\nr1,2,2026-10-01T01:00:00+08:00,1.005\n");
    let (code, out, err) = orgsettle(&["validate", "--input", s.input().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("days/2026-10-01/recharges.csv line 2: bad_amount_scale (r1)"), "{out}");
    assert!(!s.out().exists());
}

#[test]
fn daily_refuses_a_gap_with_exit_2_and_a_bad_folder_name_is_unusable() {
    let s = Scenario::new();
    s.file("org.json", &org_json(""));
    s.file("days/2026-10-01/recharges.csv", "recharge_id,uin,at,amount\n");
    let (i, o) = (s.input(), s.out());
    let (code, _, err) = orgsettle(&["daily", "--quiet", "--input", i.to_str().unwrap(), "--out", o.to_str().unwrap(), "--date", "2026-10-01"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = orgsettle(&["daily", "--input", i.to_str().unwrap(), "--out", o.to_str().unwrap(), "--date", "2026-10-03"]);
    assert_eq!(code, 2);
    assert!(err.contains("needs the state after 2026-10-02"), "{err}");
    s.file("days/october/usage.csv", USAGE_HEADER);
    let (code, _, err) = orgsettle(&["run", "--input", i.to_str().unwrap(), "--out", o.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("days/october: not a day folder"), "{err}");
}

#[test]
fn help_names_every_command() {
    let (code, out, _) = orgsettle(&["--help"]);
    assert_eq!(code, 0);
    for cmd in ["daily", "run", "validate"] {
        assert!(out.contains(cmd), "{out}");
    }
}

#[test]
fn the_allocators_purge_delay_is_a_month_unless_mimalloc_purge_delay_is_set() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo");
    let delay = |set: Option<&str>| -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orgsettle"));
        cmd.args(["validate", "--input", demo.to_str().unwrap()]).env("ORGSETTLE_TIMINGS", "1").env_remove("MIMALLOC_PURGE_DELAY");
        if let Some(ms) = set {
            cmd.env("MIMALLOC_PURGE_DELAY", ms);
        }
        let out = cmd.output().expect("binary runs");
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        err.lines().find_map(|l| l.strip_prefix("timing: the allocator's purge delay: ")).map(str::to_string).unwrap_or_else(|| panic!("{err}"))
    };
    assert_eq!(delay(None), "2592000000 ms");
    assert_eq!(delay(Some("100")), "100 ms");
}

/// The binary leaves a daily run's inputs and result to the process's exit
/// (`Options::exits_after`): its days, state and month files are the library's,
/// day by day over the demo.
#[test]
fn the_binarys_daily_runs_write_what_the_librarys_do() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo");
    let (by_binary, by_library) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"] {
        let (code, _, err) = orgsettle(&["daily", "--quiet", "--input", demo.to_str().unwrap(), "--out", by_binary.path().to_str().unwrap(), "--date", d]);
        assert_eq!(code, 0, "{d}: {err}");
        orgsettle::job::daily(&demo, by_library.path(), day(d), quiet()).unwrap();
    }
    let (got, want) = (tree(by_binary.path()), tree(by_library.path()));
    assert!(want.keys().any(|k| k.ends_with("2026-11-02/ledger.csv")) && want.keys().any(|k| k.contains(".month-")));
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    assert!(got == want, "the binary's files differ from the library's");
}
