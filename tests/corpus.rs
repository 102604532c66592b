//! The bad-input corpus: one folder per case under tests/corpus/. A case holds input
//! files laid over tests/corpus/_shared/ and either `expected.txt` ("exit 2" then
//! lines the error must contain) or `expected_rejects.csv` (the exact rejects.csv of
//! 2026-10-02). For a rejected row, "nothing else changes" is checked by settling the
//! input again without the rejected lines: every other output must be identical.
//! `ORGSETTLE_BLESS=1 cargo test corpus` writes the `expected_rejects.csv` files.

use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const DAY: &str = "2026-10-02";

fn case_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('_'))
        .collect();
    dirs.sort();
    dirs
}

/// The case's input files: the shared ones, overlaid by the case's own.
fn input_files(case: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = tree(&case.parent().unwrap().join("_shared"));
    for (name, bytes) in tree(case) {
        if !name.starts_with("expected") {
            files.insert(name, bytes);
        }
    }
    files
}

fn write(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// Drop the given physical lines from each day file.
fn without_lines(files: &BTreeMap<String, Vec<u8>>, drop: &BTreeSet<(String, u64)>) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(name, bytes)| {
            let file = name.rsplit('/').next().unwrap().to_string();
            if !name.starts_with("days/") {
                return (name.clone(), bytes.clone());
            }
            let mut out = Vec::new();
            for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
                if !drop.contains(&(file.clone(), i as u64 + 1)) {
                    out.extend_from_slice(line);
                }
            }
            (name.clone(), out)
        })
        .collect()
}

#[test]
fn every_case_of_the_bad_input_corpus() {
    let bless = std::env::var_os("ORGSETTLE_BLESS").is_some();
    let cases = case_dirs();
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let files = input_files(&case);
        let dir = tempfile::tempdir().unwrap();
        let (input, out) = (dir.path().join("in"), dir.path().join("out"));
        write(&input, &files);
        let result = orgsettle::job::run(&input, &out, None, None, quiet());
        let expected_error = case.join("expected.txt");
        if expected_error.exists() {
            let text = std::fs::read_to_string(&expected_error).unwrap();
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some("exit 2"), "{name}");
            let err = result.expect_err(&name);
            assert_eq!(err.exit_code(), 2, "{name}: {err}");
            let message = err.to_string();
            for want in lines {
                assert!(message.contains(want), "{name}: the error lacks {want:?}:\n{message}");
            }
            assert!(!out.exists(), "{name}: nothing may be written");
            continue;
        }
        result.unwrap_or_else(|e| panic!("{name}: {e}"));
        let rejects = read(&out.join(format!("days/{DAY}/rejects.csv")));
        let expected_path = case.join("expected_rejects.csv");
        if bless {
            std::fs::write(&expected_path, &rejects).unwrap();
        } else {
            assert_eq!(rejects, read(&expected_path), "{name}: rejects.csv");
        }

        // Nothing else changes: without the rejected lines, the other outputs are the same.
        let dropped: BTreeSet<(String, u64)> = rejects
            .lines()
            .skip(1)
            .map(|l| {
                let mut f = l.splitn(3, ',');
                (f.next().unwrap().to_string(), f.next().unwrap().parse().unwrap())
            })
            .collect();
        let clean = tempfile::tempdir().unwrap();
        write(&clean.path().join("in"), &without_lines(&files, &dropped));
        orgsettle::job::run(&clean.path().join("in"), &clean.path().join("out"), None, None, quiet()).unwrap();
        let a = tree(&out.join("days"));
        let b = tree(&clean.path().join("out/days"));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{name}");
        for (file, bytes) in &a {
            if !file.ends_with("rejects.csv") && !file.ends_with("summary.json") {
                assert!(b[file] == *bytes, "{name}: {file} changed because of a rejected row");
            }
        }
    }
}
