//! Money, 8-digit and timestamp parsers: no panic; what parses round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orgsettle::money::{Exact8, Money};
use orgsettle::time::{Day, Month, Ts};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(m) = Money::parse(text) {
        assert_eq!(Money::parse(&m.to_string()), Ok(m));
    }
    if let Ok(q) = Exact8::parse(text) {
        assert_eq!(Exact8::parse(&q.to_string()), Ok(q));
    }
    if let Some(t) = Ts::parse(text) {
        assert_eq!(Ts::parse(&t.to_string()), Some(t));
    }
    let _ = (Day::parse(text), Month::parse(text));
});
