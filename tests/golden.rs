//! The demo fixture: `run` over fixtures/demo must reproduce fixtures/demo/expected
//! (days and months) byte for byte. `ORGSETTLE_BLESS=1 cargo test golden` rewrites the expected files
//! for review as a diff.

use crate::common::{quiet, tree};
use std::path::Path;

#[test]
fn demo_matches_expected_outputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo");
    let out = tempfile::tempdir().unwrap();
    orgsettle::job::run(&root, out.path(), None, None, quiet()).expect("demo runs");
    // Everything but the engine's own state.
    std::fs::remove_dir_all(out.path().join("state")).unwrap();
    let produced = out.path().to_path_buf();
    let expected = root.join("expected");
    if std::env::var_os("ORGSETTLE_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&expected);
        for (rel, bytes) in tree(&produced) {
            let target = expected.join(&rel);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(target, bytes).unwrap();
        }
        return;
    }
    let (got, want) = (tree(&produced), tree(&expected));
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "the set of output files differs");
    for (rel, bytes) in want {
        assert_eq!(String::from_utf8_lossy(&got[&rel]), String::from_utf8_lossy(&bytes), "{rel} differs from the expected file");
    }
}
