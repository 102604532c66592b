//! The snapshot loader and validator on any bytes: an error list, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = orgsettle::snapshot::Snapshot::from_json(data);
});
