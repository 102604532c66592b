//! The demo fixture: `run` over fixtures/demo must reproduce fixtures/demo/expected
//! byte for byte. `ORGSETTLE_BLESS=1 cargo test golden` rewrites the expected files
//! for review as a diff.

use crate::common::quiet;
use std::path::{Path, PathBuf};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn demo_matches_expected_outputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo");
    let out = tempfile::tempdir().unwrap();
    orgsettle::job::run(&root, out.path(), None, None, quiet()).expect("demo runs");
    let produced = out.path().join("days");
    let expected = root.join("expected/days");
    if std::env::var_os("ORGSETTLE_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&expected);
        for rel in files_under(&produced) {
            let target = expected.join(&rel);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(produced.join(&rel), target).unwrap();
        }
        return;
    }
    let want = files_under(&expected);
    assert_eq!(files_under(&produced), want, "the set of output files differs");
    for rel in want {
        let got = std::fs::read_to_string(produced.join(&rel)).unwrap();
        let exp = std::fs::read_to_string(expected.join(&rel)).unwrap();
        assert_eq!(got, exp, "{} differs from the expected file", rel.display());
    }
}
