//! Crash safety (SPEC §12): a run killed at every write step leaves the previous
//! committed state intact, never a half-written output, and the rerun gives the
//! same files as an uninterrupted run.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn demo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo")
}

/// Published files only: staging folders and temporary files start with '.'.
fn published(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    tree(dir).into_iter().filter(|(k, _)| !k.split('/').any(|part| part.starts_with('.'))).collect()
}

fn orgsettle(args: &[&str], crash_at: Option<u64>) -> bool {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orgsettle"));
    cmd.args(args).arg("--quiet");
    if let Some(n) = crash_at {
        cmd.env("ORGSETTLE_CRASH_AT", n.to_string());
    }
    cmd.output().expect("binary runs").status.success()
}

fn copy_tree(from: &Path, to: &Path) {
    for (rel, bytes) in tree(from) {
        let target = to.join(rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
}

fn assert_same_tree(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>, step: u64) {
    let names = |t: &BTreeMap<String, Vec<u8>>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "rerun after a crash at step {step}: the set of files differs");
    for (name, bytes) in want {
        assert!(got[name] == *bytes, "rerun after a crash at step {step}: {name} differs from a clean run");
    }
}

/// Every committed day and closed month equals the uninterrupted run's.
fn assert_consistent(out: &Path, reference: &BTreeMap<String, Vec<u8>>, step: u64) {
    let now = published(out);
    // A close removes the states of the days before the 1st of the next month, so
    // before it has run those states may still be there.
    let first_kept = reference.keys().filter(|k| k.starts_with("state/") && k.ends_with(".json")).min().cloned().unwrap_or_default();
    for (rel, bytes) in &now {
        if rel.starts_with("state/") && !reference.contains_key(rel) && *rel < first_kept {
            continue;
        }
        if rel.starts_with("state/focus-") {
            // A FOCUS month file is appended to in place: a crash can leave rows past
            // its committed length (cut back by the next run), and the close of its
            // month removes it. What it holds is always a prefix of the clean run's.
            if let Some(clean) = reference.get(rel) {
                assert!(clean.starts_with(bytes), "after a crash at step {step}, {rel} is not a prefix of a clean run's");
            }
            continue;
        }
        if rel.starts_with("state/") || rel.starts_with("days/") || rel.starts_with("months/") {
            assert!(Some(bytes) == reference.get(rel), "after a crash at step {step}, {rel} differs from a clean run");
        }
    }
    // A committed day has all of its files.
    for rel in now.keys().filter(|k| k.starts_with("state/")) {
        let day = rel.trim_start_matches("state/").trim_end_matches(".json");
        let expected: Vec<_> = reference.keys().filter(|k| k.starts_with(&format!("days/{day}/"))).collect();
        for file in expected {
            assert!(now.contains_key(file), "after a crash at step {step}, committed day {day} lacks {file}");
        }
    }
}

#[test]
fn a_run_killed_at_every_write_step_recovers_identically() {
    let input = demo();
    let input = input.to_str().unwrap();
    let clean = tempfile::tempdir().unwrap();
    assert!(orgsettle(&["run", "--input", input, "--out", clean.path().to_str().unwrap()], None));
    let reference = published(clean.path());

    // The starting point: the first two days committed.
    let start = tempfile::tempdir().unwrap();
    let start_out = start.path().to_str().unwrap();
    assert!(orgsettle(&["run", "--input", input, "--out", start_out, "--to", "2026-10-31"], None));

    let mut crashes = 0;
    for step in 1..500 {
        let work = tempfile::tempdir().unwrap();
        copy_tree(start.path(), work.path());
        let out = work.path().to_str().unwrap();
        let finished = orgsettle(&["run", "--input", input, "--out", out], Some(step));
        if finished {
            break;
        }
        crashes += 1;
        assert_consistent(work.path(), &reference, step);
        assert!(orgsettle(&["run", "--input", input, "--out", out], None), "rerun after a crash at step {step}");
        assert_same_tree(&published(work.path()), &reference, step);
    }
    eprintln!("crash test: {crashes} write steps interrupted and recovered");
    assert!(crashes > 50, "only {crashes} write steps were exercised");
}

/// Day D run again while it is committed keeps its FOCUS rows aside until its
/// books check: killed at any write step, D is either still committed with all
/// of its files, or uncommitted with D−1 intact; either way a rerun gives the
/// files of an uninterrupted run.
#[test]
fn a_committed_day_run_again_and_killed_at_every_write_step_recovers_identically() {
    let input = demo();
    let input = input.to_str().unwrap();
    let start = tempfile::tempdir().unwrap();
    let start_out = start.path().to_str().unwrap();
    assert!(orgsettle(&["run", "--input", input, "--out", start_out, "--to", "2026-10-31"], None));
    let reference = published(start.path());
    assert!(reference.contains_key("state/2026-10-31.json") && reference.contains_key("state/focus-2026-10.csv"));
    let mut crashes = 0;
    for step in 1..500 {
        let work = tempfile::tempdir().unwrap();
        copy_tree(start.path(), work.path());
        let out = work.path().to_str().unwrap();
        let again = ["daily", "--input", input, "--out", out, "--date", "2026-10-31"];
        if orgsettle(&again, Some(step)) {
            assert_same_tree(&published(work.path()), &reference, step);
            break;
        }
        crashes += 1;
        assert_consistent(work.path(), &reference, step);
        let committed = work.path().join("state/2026-10-31.json").exists();
        if committed {
            // D's FOCUS rows are all still there (rows past them are cut by the next run).
            let focus = std::fs::read(work.path().join("state/focus-2026-10.csv")).expect("the month file");
            assert!(focus.starts_with(&reference["state/focus-2026-10.csv"]), "after a crash at step {step}, committed D lost FOCUS rows");
        }
        let rerun = if committed { again } else { ["run", "--input", input, "--out", out, "--to", "2026-10-31"] };
        assert!(orgsettle(&rerun, None), "rerun after a crash at step {step}");
        assert_same_tree(&published(work.path()), &reference, step);
    }
    eprintln!("crash test of a run again: {crashes} write steps interrupted and recovered");
    assert!(crashes > 10, "only {crashes} write steps were exercised");
}
