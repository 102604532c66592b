//! Instants, business days and months in Beijing time (SPEC §1.2, §4.1).
//!
//! An instant is nanoseconds since the Unix epoch (UTC). The business calendar is a
//! fixed UTC+08:00 with no daylight saving; days and months are half-open intervals.

use chrono::{DateTime, Datelike, NaiveDate};
#[cfg(test)]
use chrono::{FixedOffset, TimeZone};
use std::fmt;

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const NANOS_PER_HOUR: i64 = 3_600 * NANOS_PER_SECOND;
const NANOS_PER_DAY: i64 = 24 * NANOS_PER_HOUR;
const BEIJING_OFFSET_NANOS: i64 = 8 * NANOS_PER_HOUR;

#[cfg(test)]
fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset")
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// An instant, in nanoseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Ts(pub i64);

impl Ts {
    /// Parse RFC 3339 with an explicit offset; anything else is `bad_timestamp`.
    pub fn parse(text: &str) -> Option<Ts> {
        // chrono also accepts a space or lower-case 't' between date and time;
        // SPEC §1.2 asks for RFC 3339, whose grammar uses 'T'.
        if text.as_bytes().get(10) != Some(&b'T') {
            return None;
        }
        if let Some(ts) = Ts::parse_common(text.as_bytes()) {
            return Some(ts);
        }
        let parsed = DateTime::parse_from_rfc3339(text).ok()?;
        parsed.timestamp_nanos_opt().map(Ts)
    }

    /// The shape nearly every input row has, `YYYY-MM-DDTHH:MM:SS±HH:MM` with a
    /// year in 1970..=2999 (nanoseconds end in 2262), no fraction and no leap second, read without chrono
    /// (a usage row has two timestamps; chrono's parser was a tenth of reading).
    /// None means "not this shape or not valid": the caller then asks chrono, so
    /// what is accepted and what it means never differ from chrono's reading
    /// (the property test below compares both on that shape, valid or not).
    fn parse_common(b: &[u8]) -> Option<Ts> {
        if b.len() != 25 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' || b[22] != b':' {
            return None;
        }
        let sign = match b[19] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        // Every digit position checked at once (a byte below '0' wraps above 9),
        // then each number read from its digits.
        const DIGITS: [usize; 18] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23, 24];
        let b: &[u8; 25] = b.try_into().ok()?;
        let digit = |at: usize| i64::from(b[at].wrapping_sub(b'0'));
        let mut not_digits = false;
        for at in DIGITS {
            not_digits |= b[at].wrapping_sub(b'0') > 9;
        }
        if not_digits {
            return None;
        }
        let two = |at: usize| digit(at) * 10 + digit(at + 1);
        let (year, month, day) = (two(0) * 100 + two(2), two(5), two(8));
        let (hour, minute, second) = (two(11), two(14), two(17));
        let (offset_hours, offset_minutes) = (two(20), two(23));
        if !(1970..=2999).contains(&year) || !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        if offset_hours > 23 || offset_minutes > 59 {
            return None;
        }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month as usize - 1];
        if day < 1 || day > month_days {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let offset = sign * (offset_hours * 3_600 + offset_minutes * 60);
        let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset;
        // Beyond 2262 nanoseconds leave i64: chrono decides (and refuses).
        seconds.checked_mul(NANOS_PER_SECOND).map(Ts)
    }

    /// `parse`, remembering the instants of recent texts in `cache`.
    pub fn parse_cached(text: &str, cache: &mut TsCache) -> Option<Ts> {
        let Ok(b) = <&[u8; 25]>::try_from(text.as_bytes()) else {
            return Ts::parse(text);
        };
        let words = [
            u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
            u64::from(b[24]),
        ];
        let mixed = words[0] ^ words[1].rotate_left(21) ^ words[2].rotate_left(42) ^ words[3];
        let slot = (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - TS_CACHE_BITS)) as usize;
        if let Some((held, ts)) = cache.slots[slot] {
            if held == words {
                return Some(ts);
            }
        }
        let ts = Ts::parse(text)?;
        cache.slots[slot] = Some((words, ts));
        Some(ts)
    }

    /// One nanosecond before this instant (a period's last instant is its end minus this).
    pub fn pred(self) -> Ts {
        Ts(self.0 - 1)
    }

    /// chrono's reading of the instant in +08:00 (what `day` is tested against).
    #[cfg(test)]
    fn to_beijing(self) -> DateTime<FixedOffset> {
        let secs = self.0.div_euclid(NANOS_PER_SECOND);
        let nanos = self.0.rem_euclid(NANOS_PER_SECOND) as u32;
        beijing().timestamp_opt(secs, nanos).single().expect("instant within chrono's range")
    }

    /// The business day that contains this instant (every usage row asks for its
    /// period's, and chrono's way there was ~140 instructions a call).
    pub fn day(self) -> Day {
        let (year, month, day) = self.beijing_date();
        Day(NaiveDate::from_ymd_opt(year as i32, month, day).expect("an instant's date is within chrono's range"))
    }

    pub fn month(self) -> Month {
        let (year, month, _) = self.beijing_date();
        Month { year: year as i32, month }
    }

    /// The Beijing calendar date of this instant, by arithmetic: +08:00 is a whole
    /// number of hours, so the day is that of the hour count moved by 8 (no sum
    /// that could leave i64, even at its ends).
    fn beijing_date(self) -> (i64, u32, u32) {
        let hours = self.0.div_euclid(NANOS_PER_HOUR) + BEIJING_OFFSET_NANOS / NANOS_PER_HOUR;
        civil_from_days(hours.div_euclid(24))
    }
}

/// The month of instants, the last month found kept with its bounds: a day's
/// usage rows and lines are nearly all of one or two months, and the calendar's
/// way to a month (`Ts::month`) was ~1.5% of a 10M-row day.
#[derive(Clone, Copy, Default)]
pub struct MonthOf {
    last: Option<(Ts, Ts, Month)>,
}

impl MonthOf {
    /// `t.month()`, and whether it is not the month of the call before.
    pub fn month(&mut self, t: Ts) -> (Month, bool) {
        match self.last {
            Some((start, end, month)) if start <= t && t < end => (month, false),
            _ => {
                let month = t.month();
                self.last = Some((month.start(), month.end(), month));
                (month, true)
            }
        }
    }
}

const TS_CACHE_BITS: u32 = 6;

/// The instants of recently parsed 25-byte timestamps (the common shape), by the
/// text's bytes: a day's usage rows hold a few hundred distinct timestamps in
/// millions of fields, so nearly every one is a lookup rather than a parse
/// (~250 instructions). Only texts that parsed are kept; a text is compared
/// whole, so a lookup gives what `Ts::parse` gives.
pub struct TsCache {
    slots: [Option<([u64; 4], Ts)>; 1 << TS_CACHE_BITS],
}

impl Default for TsCache {
    fn default() -> TsCache {
        TsCache { slots: [None; 1 << TS_CACHE_BITS] }
    }
}

/// Proleptic Gregorian (year, month, day) of a count of days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`): formatting is on the hot path of every
/// output row, and this is several times faster than going through chrono.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Ts {
    /// Append the §1.2 output form (`2026-11-05T13:00:00+08:00`) to `out`.
    pub fn write_to(self, out: &mut String) {
        let local = self.0 + BEIJING_OFFSET_NANOS;
        let days = local.div_euclid(NANOS_PER_DAY);
        let in_day = local.rem_euclid(NANOS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let secs = in_day / NANOS_PER_SECOND;
        let nanos = in_day % NANOS_PER_SECOND;
        let two = |out: &mut String, v: i64| {
            out.push((b'0' + (v / 10) as u8) as char);
            out.push((b'0' + (v % 10) as u8) as char);
        };
        if (0..=9999).contains(&year) {
            two(out, year / 100);
            two(out, year % 100);
        } else {
            out.push_str(&format!("{year:04}"));
        }
        out.push('-');
        two(out, i64::from(month));
        out.push('-');
        two(out, i64::from(day));
        out.push('T');
        two(out, secs / 3600);
        out.push(':');
        two(out, secs / 60 % 60);
        out.push(':');
        two(out, secs % 60);
        if nanos != 0 {
            let frac = format!("{nanos:09}");
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push_str("+08:00");
    }
}

/// Written in +08:00 with seconds; fractional seconds only when not zero.
impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(32);
        self.write_to(&mut text);
        f.write_str(&text)
    }
}

/// A business day (Beijing calendar date).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Day(pub NaiveDate);

impl Day {
    /// Parse `YYYY-MM-DD` exactly.
    pub fn parse(text: &str) -> Option<Day> {
        if text.len() != 10 {
            return None;
        }
        NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().map(Day)
    }
    /// The day's first instant, 00:00 +08:00.
    pub fn start(self) -> Ts {
        let midnight = self.0.and_hms_opt(0, 0, 0).expect("midnight exists");
        let utc_nanos = midnight.and_utc().timestamp() * NANOS_PER_SECOND;
        Ts(utc_nanos - BEIJING_OFFSET_NANOS)
    }
    /// The next day's first instant (the end of this day, exclusive).
    pub fn end(self) -> Ts {
        self.next().start()
    }
    pub fn next(self) -> Day {
        Day(self.0.succ_opt().expect("date in range"))
    }
    pub fn prev(self) -> Day {
        Day(self.0.pred_opt().expect("date in range"))
    }
    pub fn month(self) -> Month {
        Month { year: self.0.year(), month: self.0.month() }
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

/// A business month.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

/// A month in 4 bytes, year × 12 + month − 1 (a ledger line's bill month: 8 bytes
/// of each of millions of lines as a `Month`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PackedMonth(i32);

impl From<Month> for PackedMonth {
    fn from(m: Month) -> PackedMonth {
        PackedMonth(m.year * 12 + m.month as i32 - 1)
    }
}

impl PackedMonth {
    pub fn get(self) -> Month {
        Month { year: self.0.div_euclid(12), month: self.0.rem_euclid(12) as u32 + 1 }
    }
}

impl Month {
    /// Parse `YYYY-MM` exactly.
    pub fn parse(text: &str) -> Option<Month> {
        let (y, m) = text.split_once('-')?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let month = Month { year: y.parse().ok()?, month: m.parse().ok()? };
        (1..=12).contains(&month.month).then_some(month)
    }
    pub fn first_day(self) -> Day {
        Day(NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("valid month"))
    }
    pub fn start(self) -> Ts {
        self.first_day().start()
    }
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month { year: self.year + 1, month: 1 }
        } else {
            Month { year: self.year, month: self.month + 1 }
        }
    }
    pub fn prev(self) -> Month {
        if self.month == 1 {
            Month { year: self.year - 1, month: 12 }
        } else {
            Month { year: self.year, month: self.month - 1 }
        }
    }
    pub fn end(self) -> Ts {
        self.next().start()
    }
}

impl Month {
    /// Append `YYYY-MM` to `out`.
    pub fn write_to(self, out: &mut String) {
        if (0..=9999).contains(&self.year) {
            let y = self.year as u32;
            for d in [y / 1000, y / 100 % 10, y / 10 % 10, y % 10] {
                out.push((b'0' + d as u8) as char);
            }
            out.push('-');
            out.push((b'0' + (self.month / 10) as u8) as char);
            out.push((b'0' + (self.month % 10) as u8) as char);
        } else {
            out.push_str(&self.to_string());
        }
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// A postpaid settlement cycle (SPEC §4.1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Cycle {
    // Declared in byte order of their names, so the derived order is the §1.4 string order.
    Daily,
    Hourly,
    Monthly,
}

impl Cycle {
    pub fn parse(text: &str) -> Option<Cycle> {
        match text {
            "hourly" => Some(Cycle::Hourly),
            "daily" => Some(Cycle::Daily),
            "monthly" => Some(Cycle::Monthly),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Cycle::Hourly => "hourly",
            Cycle::Daily => "daily",
            Cycle::Monthly => "monthly",
        }
    }

    /// The period `[start, end)` of this cycle that contains `t`.
    pub fn period_containing(self, t: Ts) -> (Ts, Ts) {
        match self {
            Cycle::Hourly => {
                // +08:00 is a whole number of hours, so UTC hours are Beijing hours.
                let start = t.0.div_euclid(NANOS_PER_HOUR) * NANOS_PER_HOUR;
                (Ts(start), Ts(start + NANOS_PER_HOUR))
            }
            Cycle::Daily => {
                let local = t.0 + BEIJING_OFFSET_NANOS;
                let start = local.div_euclid(NANOS_PER_DAY) * NANOS_PER_DAY - BEIJING_OFFSET_NANOS;
                (Ts(start), Ts(start + NANOS_PER_DAY))
            }
            Cycle::Monthly => {
                let month = t.month();
                (month.start(), month.end())
            }
        }
    }
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Ts {
        Ts::parse(text).unwrap()
    }

    fn chrono_reading(text: &str) -> Option<Ts> {
        DateTime::parse_from_rfc3339(text).ok()?.timestamp_nanos_opt().map(Ts)
    }

    proptest::proptest! {
        /// `MonthOf` answers as `Ts::month` for any sequence of instants (month
        /// ends and starts to the nanosecond among them), and says when the
        /// month is not the last call's.
        #[test]
        fn month_of_answers_as_the_calendar(
            picks in proptest::collection::vec((0usize..6, -2i64..3), 1..40),
        ) {
            // Month boundaries of Beijing time around 2026 and 2027's turn, and
            // one instant inside a month.
            let anchors = [
                ts("2026-10-01T00:00:00+08:00"), ts("2026-11-01T00:00:00+08:00"), ts("2026-12-01T00:00:00+08:00"),
                ts("2027-01-01T00:00:00+08:00"), ts("2027-03-01T00:00:00+08:00"), ts("2026-10-31T16:00:00+08:00"),
            ];
            let mut months = MonthOf::default();
            let mut last = None;
            for (anchor, nanos) in picks {
                let t = Ts(anchors[anchor].0 + nanos);
                let (month, changed) = months.month(t);
                proptest::prop_assert_eq!(month, t.month(), "{:?}", t);
                proptest::prop_assert_eq!(changed, last != Some(month), "{:?}", t);
                last = Some(month);
            }
        }
    }

    proptest::proptest! {
        /// The fast path never accepts what chrono refuses and never reads a
        /// different instant: digits anywhere in the shape, valid dates or not.
        #[test]
        fn the_common_shape_reads_as_chrono_reads_it(
            year in 1900i64..3100, month in 0i64..14, day in 0i64..33,
            hour in 0i64..26, minute in 0i64..62, second in 0i64..62,
            sign in proptest::sample::select(vec!['+', '-']), offset_hours in 0i64..26, offset_minutes in 0i64..62,
        ) {
            let text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{sign}{offset_hours:02}:{offset_minutes:02}");
            let fast = Ts::parse_common(text.as_bytes());
            if fast.is_some() {
                proptest::prop_assert_eq!(fast, chrono_reading(&text), "{}", text);
            }
            proptest::prop_assert_eq!(Ts::parse(&text), chrono_reading(&text), "{}", text);
        }
    }

    proptest::proptest! {
        /// The business day by arithmetic is chrono's reading of the instant in
        /// +08:00, over the whole range of instants (both ends of i64 included).
        #[test]
        fn the_day_of_an_instant_is_chronos(nanos in proptest::num::i64::ANY) {
            let t = Ts(nanos);
            let expected = t.to_beijing().date_naive();
            proptest::prop_assert_eq!(t.day(), Day(expected));
            proptest::prop_assert_eq!(t.month(), Month { year: expected.year(), month: expected.month() });
        }
    }

    proptest::proptest! {
        /// Through the cache a text reads as `parse` reads it, however texts
        /// share its slots, valid or not, of the common length or not.
        #[test]
        fn a_cached_timestamp_is_the_parsed_one(
            texts in proptest::collection::vec(
                (0i64..30, 0i64..26, 0i64..3, proptest::sample::select(vec!["+08:00", "-00:00", "+8:00", "Z", "+08:0x"])),
                1..300,
            ),
        ) {
            let mut cache = TsCache::default();
            for (day, hour, second, zone) in texts {
                let text = format!("2026-10-{day:02}T{hour:02}:00:{second:02}{zone}");
                proptest::prop_assert_eq!(Ts::parse_cached(&text, &mut cache), Ts::parse(&text), "{}", text);
            }
        }
    }

    #[test]
    fn the_day_turns_at_beijing_midnight() {
        for (text, day) in [
            ("2026-10-31T23:59:59+08:00", "2026-10-31"), ("2026-10-31T16:00:00Z", "2026-11-01"),
            ("2026-10-31T15:59:59Z", "2026-10-31"), ("1969-12-31T16:00:00Z", "1970-01-01"),
            ("1969-12-31T15:59:59Z", "1969-12-31"), ("2000-02-29T00:00:00+08:00", "2000-02-29"),
        ] {
            assert_eq!(ts(text).day().to_string(), day, "{text}");
            assert_eq!(ts(text).day(), Day(ts(text).to_beijing().date_naive()), "{text}");
        }
        for nanos in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
            assert_eq!(Ts(nanos).day(), Day(Ts(nanos).to_beijing().date_naive()), "{nanos}");
        }
    }

    #[test]
    fn the_common_shape_is_read_without_chrono_on_edge_dates() {
        for text in [
            "1970-01-01T00:00:00+00:00", "2000-02-29T23:59:59+08:00", "2026-12-31T16:00:00-08:00",
            "2100-03-01T00:00:00+08:00", "2262-04-11T23:47:16+00:00", "2026-11-05T13:00:00-00:00",
        ] {
            assert_eq!(Ts::parse_common(text.as_bytes()), chrono_reading(text), "{text}");
            assert!(Ts::parse_common(text.as_bytes()).is_some(), "{text}");
        }
        for text in ["2100-02-29T00:00:00+08:00", "2262-04-11T23:47:17+00:00", "2026-11-05T23:59:60+08:00", "2026-11-31T00:00:00+08:00"] {
            assert_eq!(Ts::parse_common(text.as_bytes()), None, "{text}");
        }
        // A byte just below '0' or just above '9' in any digit position.
        let good = "2026-11-05T13:00:00+08:00";
        for at in [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23, 24] {
            for wrong in ['/', ':', ' ', 'a'] {
                let mut text = good.to_string();
                text.replace_range(at..at + 1, &wrong.to_string());
                assert_eq!(Ts::parse_common(text.as_bytes()), None, "{text}");
                assert_eq!(Ts::parse(&text), None, "{text}");
            }
        }
    }

    #[test]
    fn timestamps_need_an_offset() {
        assert!(Ts::parse("2026-11-05T13:00:00").is_none());
        assert!(Ts::parse("2026-11-05 13:00:00+08:00").is_none());
        assert_eq!(ts("2026-11-05T05:00:00Z"), ts("2026-11-05T13:00:00+08:00"));
    }

    #[test]
    fn output_is_beijing_time_with_fraction_only_when_set() {
        assert_eq!(ts("2026-11-05T05:00:00Z").to_string(), "2026-11-05T13:00:00+08:00");
        assert_eq!(ts("2026-11-05T05:00:00.500Z").to_string(), "2026-11-05T13:00:00.5+08:00");
        assert_eq!(ts("2026-11-04T16:00:00Z").day().to_string(), "2026-11-05");
    }

    #[test]
    fn periods_follow_the_beijing_calendar() {
        let t = ts("2026-11-01T07:30:00+08:00");
        let (s, e) = Cycle::Daily.period_containing(t);
        assert_eq!((s.to_string(), e.to_string()), ("2026-11-01T00:00:00+08:00".into(), "2026-11-02T00:00:00+08:00".into()));
        let (s, e) = Cycle::Monthly.period_containing(ts("2026-12-31T23:59:59+08:00"));
        assert_eq!((s.to_string(), e.to_string()), ("2026-12-01T00:00:00+08:00".into(), "2027-01-01T00:00:00+08:00".into()));
        let (s, e) = Cycle::Hourly.period_containing(ts("2026-11-01T23:10:00+08:00"));
        assert_eq!((s.to_string(), e.to_string()), ("2026-11-01T23:00:00+08:00".into(), "2026-11-02T00:00:00+08:00".into()));
        assert_eq!(e.pred().day().to_string(), "2026-11-01");
    }

    #[test]
    fn fast_formatting_matches_chrono_across_centuries() {
        for (secs, nanos) in [(0i64, 0u32), (951_782_400, 0), (1_793_491_200, 500_000_000), (-86_400 * 400, 1), (4_102_444_799, 999_999_999), (7_258_118_399, 0)] {
            let t = Ts(secs * 1_000_000_000 + i64::from(nanos));
            let expected = t.to_beijing().format("%Y-%m-%dT%H:%M:%S%.f+08:00").to_string();
            let expected = expected.replace(".000000000+", "+");
            let expected = match expected.split_once('.') {
                Some((head, tail)) => {
                    let (frac, zone) = tail.split_at(tail.len() - 6);
                    format!("{head}.{}{zone}", frac.trim_end_matches('0'))
                }
                None => expected,
            };
            assert_eq!(t.to_string(), expected);
        }
    }

    #[test]
    fn a_packed_month_is_the_month_it_was_made_from() {
        for year in [-262_000, -1, 0, 1, 1970, 2026, 9999, 262_000] {
            for month in 1..=12 {
                let m = Month { year, month };
                assert_eq!(PackedMonth::from(m).get(), m);
            }
        }
        assert_eq!(std::mem::size_of::<PackedMonth>(), 4);
    }

    #[test]
    fn cycles_sort_as_their_names() {
        let mut v = vec![Cycle::Monthly, Cycle::Hourly, Cycle::Daily];
        v.sort();
        assert_eq!(v, vec![Cycle::Daily, Cycle::Hourly, Cycle::Monthly]);
    }
}
