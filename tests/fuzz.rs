//! Fuzzing with proptest over arbitrary bytes: no parser panics on any input, and
//! what is accepted round-trips. These run a few hundred cases in `cargo test`;
//! `fuzz/run.sh SECONDS` runs them (and the cargo-fuzz targets where the nightly
//! toolchain allows) for longer.

use orgsettle::ingest::{read_day, ReadContext, DAY_FILES};
use orgsettle::money::{Exact8, Money};
use orgsettle::reference::Contracts;
use orgsettle::snapshot::Snapshot;
use orgsettle::state::SeenIds;
use orgsettle::spill::UsageSpill;
use orgsettle::time::{Day, Month, Ts};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, ..ProptestConfig::default() }
}

const HEADERS: [&str; 4] = [
    "record_id,owner_uin,resource_id,product,region,cycle,usage_start,usage_end,quantity,list_unit_price,list_amount\n",
    "order_id,owner_uin,resource_id,product,action,created_at,list_amount,refund_amount\n",
    "recharge_id,uin,at,amount\n",
    "transfer_id,kind,member_uin,at,amount,source_transfer_id\n",
];

fn snapshot() -> Snapshot {
    let json = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/demo/org.json")).unwrap();
    Snapshot::from_json(&json).unwrap()
}

/// Text that looks like CSV rows: fields from a vocabulary of valid and broken pieces.
fn csv_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just("100000000003".to_string()),
        Just("2026-10-30T10:00:00+08:00".to_string()),
        Just("2026-10-30T11:00:00+08:00".to_string()),
        Just("hourly".to_string()),
        Just("cvm".to_string()),
        Just("1.5".to_string()),
        Just("\"".to_string()),
        Just("".to_string()),
        "[a-z0-9.-]{0,12}",
        "\\PC{0,6}",
    ];
    proptest::collection::vec((piece, prop_oneof![Just(","), Just(","), Just("\n"), Just("\r\n"), Just("\"")]), 0..60)
        .prop_map(|parts| parts.into_iter().flat_map(|(p, s)| [p, s.to_string()]).collect::<String>().into_bytes())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_money_and_number_parsers(text in "\\PC{0,40}") {
        if let Ok(m) = Money::parse(&text) {
            prop_assert_eq!(Money::parse(&m.to_string()), Ok(m));
        }
        if let Ok(q) = Exact8::parse(&text) {
            prop_assert_eq!(Exact8::parse(&q.to_string()), Ok(q));
        }
    }

    #[test]
    fn fuzz_timestamp_and_calendar_parsers(text in "\\PC{0,40}", digits in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})") {
        for t in [text.as_str(), digits.as_str()] {
            if let Some(ts) = Ts::parse(t) {
                prop_assert_eq!(Ts::parse(&ts.to_string()), Some(ts));
            }
            let _ = Day::parse(t);
            let _ = Month::parse(t);
        }
    }

    #[test]
    fn fuzz_day_file_readers(which in 0usize..4, body in csv_like(), raw in proptest::collection::vec(any::<u8>(), 0..200)) {
        let snapshot = snapshot();
        let contracts = Contracts::default();
        let closed = |m: Month| m < Month { year: 2026, month: 10 };
        let ctx = ReadContext { day: Day::parse("2026-10-30").unwrap(), snapshot: &snapshot, contracts: &contracts, is_month_closed: &closed };
        for content in [[HEADERS[which].as_bytes(), &body].concat(), [HEADERS[which].as_bytes(), &raw].concat(), raw.clone()] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(DAY_FILES[which]), &content).unwrap();
            let mut seen = SeenIds::default();
            let mut usage = UsageSpill::new(&dir.path().join(".rows"), ctx.day, &snapshot, &contracts).unwrap();
            if let Ok(input) = read_day(dir.path(), &ctx, &mut seen, &mut usage) {
                // Every row is accepted, a duplicate, or rejected: none is lost.
                let c = input.counts[DAY_FILES[which]];
                prop_assert_eq!(c.rows, c.accepted + c.duplicates + c.rejected);
                prop_assert_eq!(c.rejected, input.rejects.len() as u64 + input.usage_rejects.len());
                // Every accepted usage row is put aside for its line, once.
                usage.finish().unwrap();
                prop_assert_eq!(usage.rows(), if which == 0 { c.accepted } else { 0 });
            }
        }
    }

    #[test]
    fn fuzz_snapshot_loader(raw in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..4000, flip in any::<u8>()) {
        let _ = Snapshot::from_json(&raw);
        let mut json = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/demo/org.json")).unwrap();
        let at = cut % json.len();
        json[at] ^= flip;
        let _ = Snapshot::from_json(&json);
        let _ = Snapshot::from_json(&json[..at]);
    }
}
