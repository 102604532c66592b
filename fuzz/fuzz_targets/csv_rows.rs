//! Any bytes as any of the four day files: reading never panics and loses no row.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orgsettle::ingest::{read_day, ReadContext, DAY_FILES};
use orgsettle::reference::Contracts;
use orgsettle::snapshot::Snapshot;
use orgsettle::state::SeenIds;
use orgsettle::time::{Day, Month};

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let file = DAY_FILES[which as usize % 4];
    let snapshot = Snapshot::from_json(include_bytes!("../../fixtures/demo/org.json")).unwrap();
    let contracts = Contracts::default();
    let closed = |m: Month| m < Month { year: 2026, month: 10 };
    let ctx = ReadContext { day: Day::parse("2026-10-30").unwrap(), snapshot: &snapshot, contracts: &contracts, is_month_closed: &closed };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(file), body).unwrap();
    if let Ok(input) = read_day(dir.path(), &ctx, &mut SeenIds::default()) {
        let c = input.counts[file];
        assert_eq!(c.rows, c.accepted + c.duplicates + c.rejected);
    }
});
