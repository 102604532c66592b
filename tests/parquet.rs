//! `--format parquet`: the Parquet copies read back equal to the CSV files.
#![cfg(feature = "parquet")]

use orgsettle::job::{self, Options};
use orgsettle::money::Exact8;
use orgsettle::time::Ts;
use std::path::Path;

fn csv_cells(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader.records().map(|r| r.unwrap().iter().map(String::from).collect()).collect();
    (header, rows)
}

/// Same cells, timestamps compared as instants (FOCUS writes them in UTC).
fn assert_same(csv: &Path) {
    let parquet = csv.with_extension("parquet");
    let (h1, r1) = csv_cells(csv);
    let (h2, r2) = orgsettle::parquet::parquet_to_cells(&std::fs::read(&parquet).unwrap()).unwrap();
    assert_eq!(h1, h2, "{}", parquet.display());
    assert_eq!(r1.len(), r2.len());
    assert!(!r1.is_empty(), "{} has rows to compare", csv.display());
    for (a, b) in r1.iter().zip(&r2) {
        for ((x, y), column) in a.iter().zip(b).zip(&h1) {
            if let (Some(tx), Some(ty)) = (Ts::parse(x), Ts::parse(y)) {
                assert_eq!(tx, ty, "{column}");
            } else if column == "PricingQuantity" {
                assert_eq!(Exact8::parse(x).unwrap(), Exact8::parse(y).unwrap(), "{column}");
            } else {
                assert_eq!(x, y, "{column} in {}", parquet.display());
            }
        }
    }
}

#[test]
fn parquet_copies_equal_the_csv_files_and_are_deterministic() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo");
    let opts = Options { quiet: true, parquet: true, ..Options::default() };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    job::run(&demo, a.path(), None, None, opts).unwrap();
    job::run(&demo, b.path(), None, None, opts).unwrap();
    for f in ["days/2026-10-30/ledger.csv", "days/2026-11-02/ledger.csv", "months/2026-10/merged_bill.csv", "months/2026-10/focus.csv"] {
        assert_same(&a.path().join(f));
        let p = Path::new(f).with_extension("parquet");
        assert_eq!(read_bytes(&a.path().join(&p)), read_bytes(&b.path().join(&p)), "{} is not byte-identical", p.display());
    }
}

fn read_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}
