//! Money: ledger amounts (exactly two decimals, the fen) and rated amounts (full precision).
//!
//! SPEC §1.1. Ledger amounts are a whole number of fen in an `i64`. Rated amounts are exact fixed-point integers at 16 fractional digits:
//! the product of two 8-digit inputs is exact at 16 digits, and an `i128` holds it
//! with room to spare, where `Decimal`'s 96-bit mantissa would silently round any
//! product above about 7.9e12. Rounding from rated to ledger happens only in
//! [`Rated::round_to_money_half_away_from_zero`].

use std::fmt;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

/// Fractional digits of a rated amount.
pub const RATED_SCALE: u32 = 16;
/// Fractional digits of an "exact at 8 digits" input field (quantity, unit price...).
pub const INPUT_SCALE: u32 = 8;
/// Inputs with more integer digits than this are out of range (`bad_value`): they
/// cannot be real bills, and the limit keeps every product exact in an `i128`.
pub const MAX_INTEGER_DIGITS: usize = 15;
/// Fractional digits beyond this are refused outright (`bad_amount_scale`).
pub const MAX_FRACTION_DIGITS: usize = 20;

const fn pow10(n: u32) -> i128 {
    let mut v: i128 = 1;
    let mut i = 0;
    while i < n {
        v *= 10;
        i += 1;
    }
    v
}

/// A ledger amount: a whole number of fen, always written with two decimals.
///
/// Held as an `i64` count of fen (8 bytes, integer arithmetic): every ledger
/// amount is bounded by the input limits well inside it, and arithmetic that
/// would leave it is a broken invariant (a panic, mapped to exit 1 before
/// anything is written). Until 2026-12-02 it was a `rust_decimal::Decimal` of
/// scale 2 (16 bytes, slower arithmetic) already limited to this range on output.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn from_fen(fen: i64) -> Money {
        Money(fen)
    }

    /// The amount in fen.
    pub fn fen(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
    pub fn min(self, other: Money) -> Money {
        Money(self.0.min(other.0))
    }
    pub fn max(self, other: Money) -> Money {
        Money(self.0.max(other.0))
    }

    /// Parse a ledger amount written as a plain decimal that is a whole number of fen.
    pub fn parse(text: &str) -> Result<Money, NumberError> {
        let parsed = PlainDecimal::parse(text)?;
        let fen = parsed.scaled_to(2).ok_or(NumberError::Scale)?;
        let fen = i64::try_from(fen).map_err(|_| NumberError::Range)?;
        Ok(Money::from_fen(fen))
    }

    /// This amount as a rated amount (exact, no rounding).
    pub fn to_rated(self) -> Rated {
        Rated(self.fen() as i128 * pow10(RATED_SCALE - 2))
    }
}

const OUT_OF_RANGE: &str = "ledger amount out of i64 fen range";

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0.checked_add(rhs.0).expect(OUT_OF_RANGE))
    }
}
impl Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0.checked_sub(rhs.0).expect(OUT_OF_RANGE))
    }
}
impl Neg for Money {
    type Output = Money;
    fn neg(self) -> Money {
        Money(self.0.checked_neg().expect(OUT_OF_RANGE))
    }
}
impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        *self = *self + rhs;
    }
}
impl SubAssign for Money {
    fn sub_assign(&mut self, rhs: Money) {
        *self = *self - rhs;
    }
}
impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, |a, b| a + b)
    }
}

impl Money {
    /// Append `12.30` / `-6.00` / `0.00` to `out` (the hot path of every output row).
    /// The text's length is known from the number of digits, so it is written
    /// right to left, two digits at a time, straight into `out`'s spare room
    /// (10M calls on a 1M-row day).
    pub fn write_to(self, out: &mut String) {
        let fen = self.fen();
        // Most of a ledger row's seven amounts are nothing (no discount, voucher,
        // gift or credit).
        if fen == 0 {
            out.put("0.00");
            return;
        }
        let mut abs = fen.unsigned_abs();
        let whole_digits = (abs / 100).checked_ilog10().map_or(1, |d| d as usize + 1);
        let n = usize::from(fen < 0) + whole_digits + 3;
        // SAFETY (for `as_mut_vec`): only ASCII (digits, '.', '-') is written, so
        // `out` stays UTF-8.
        let bytes = unsafe { out.as_mut_vec() };
        bytes.reserve(n);
        let text = &mut bytes.spare_capacity_mut()[..n];
        fn put_pair(text: &mut [std::mem::MaybeUninit<u8>], at: usize, pair: &[u8]) {
            text[at].write(pair[0]);
            text[at + 1].write(pair[1]);
        }
        let mut at = n - 2;
        put_pair(text, at, digit_pair(abs % 100));
        abs /= 100;
        at -= 1;
        text[at].write(b'.');
        while abs >= 100 {
            at -= 2;
            put_pair(text, at, digit_pair(abs % 100));
            abs /= 100;
        }
        if abs >= 10 {
            at -= 2;
            put_pair(text, at, digit_pair(abs));
        } else {
            at -= 1;
            text[at].write(b'0' + abs as u8);
        }
        if fen < 0 {
            at -= 1;
            text[at].write(b'-');
        }
        assert_eq!(at, 0, "the text fills the room counted for it");
        let len = bytes.len();
        // SAFETY: the `n` bytes past `len` were reserved and all written above
        // (`at` came down to 0 from `n`, every byte from there on set once).
        unsafe { bytes.set_len(len + n) };
    }
}

/// The two decimal digits of `n` < 100.
fn digit_pair(n: u64) -> &'static [u8] {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let n = n as usize * 2;
    &PAIRS[n..n + 2]
}

/// `bytes` appended to `out`, as `extend_from_slice`, a short slice (up to 32
/// bytes, as nearly all of a CSV row's fields are) copied inline by two
/// overlapping loads and stores rather than by a call to memcpy: rendering
/// appends ~50 fields a ledger line, and those calls were ~5% of a day's CPU
/// (up to 16 bytes; the timestamps, 25 bytes, still called it: ~0.7% more).
#[inline(always)]
pub(crate) fn append_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    if n > 32 {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(n);
    let len = out.len();
    // SAFETY: `reserve` made room for `n` bytes past `len`. Every load reads inside
    // `bytes` (offsets 0..n) and every store writes inside `len..len + n` (a pair
    // overlaps when `n` is below twice its width), so all `n` bytes are written
    // before `set_len` counts them.
    unsafe {
        let src = bytes.as_ptr();
        let dst = out.as_mut_ptr().add(len);
        if n >= 16 {
            let (head, tail) = (src.cast::<u128>().read_unaligned(), src.add(n - 16).cast::<u128>().read_unaligned());
            dst.cast::<u128>().write_unaligned(head);
            dst.add(n - 16).cast::<u128>().write_unaligned(tail);
        } else if n >= 8 {
            let (head, tail) = (src.cast::<u64>().read_unaligned(), src.add(n - 8).cast::<u64>().read_unaligned());
            dst.cast::<u64>().write_unaligned(head);
            dst.add(n - 8).cast::<u64>().write_unaligned(tail);
        } else if n >= 4 {
            let (head, tail) = (src.cast::<u32>().read_unaligned(), src.add(n - 4).cast::<u32>().read_unaligned());
            dst.cast::<u32>().write_unaligned(head);
            dst.add(n - 4).cast::<u32>().write_unaligned(tail);
        } else if n > 0 {
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
        out.set_len(len + n);
    }
}

/// `text` appended to a `String` through [`append_bytes`].
pub(crate) trait PushText {
    fn put(&mut self, text: &str);
}

impl PushText for String {
    #[inline(always)]
    fn put(&mut self, text: &str) {
        // SAFETY: a whole `str` is appended, so the string stays UTF-8.
        append_bytes(unsafe { self.as_mut_vec() }, text.as_bytes());
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(24);
        self.write_to(&mut text);
        f.write_str(&text)
    }
}
impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({self})")
    }
}

/// Text ("12.30") in human-readable formats (the state JSON); the amount in fen as
/// an integer in binary ones (the month aggregates).
impl serde::Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_string())
        } else {
            s.serialize_i128(i128::from(self.0))
        }
    }
}
impl<'de> serde::Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            Money::parse(&text).map_err(|e| serde::de::Error::custom(format!("bad money {text:?}: {e}")))
        } else {
            let fen = i128::deserialize(d)?;
            i64::try_from(fen).map(Money).map_err(|_| serde::de::Error::custom(format!("bad money of {fen} fen: out of range")))
        }
    }
}

/// A rated amount: exact, 16 fractional digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
// 8-byte aligned (not i128's 16): every settlement line and ledger line holds
// these, and the padding that alignment put around them cost ~8% of a day's memory.
#[repr(Rust, packed(8))]
pub struct Rated(i128);

impl Rated {
    pub const ZERO: Rated = Rated(0);

    /// The exact value in units of 10^-16, as kept aside between stages of a day
    /// (`spill`); `from_bits` gives it back.
    pub fn to_bits(self) -> i128 {
        self.0
    }

    pub fn from_bits(bits: i128) -> Rated {
        Rated(bits)
    }

    /// The product of two exact 8-digit values, exact at 16 digits.
    #[inline]
    pub fn product(a: Exact8, b: Exact8) -> Option<Rated> {
        let (a, b) = (a.0, b.0);
        // Two factors that fit in an i64 cannot overflow an i128, and their product
        // is one 64×64-bit multiply (the checked 128-bit one is a library call).
        match (i64::try_from(a), i64::try_from(b)) {
            (Ok(a), Ok(b)) => Some(Rated(i128::from(a) * i128::from(b))),
            _ => a.checked_mul(b).map(Rated),
        }
    }

    pub fn from_exact8(a: Exact8) -> Rated {
        Rated(a.0 * pow10(RATED_SCALE - INPUT_SCALE))
    }

    pub fn checked_add(self, rhs: Rated) -> Option<Rated> {
        self.0.checked_add(rhs.0).map(Rated)
    }

    /// Round to the fen, half away from zero (SPEC §1.1: 2.345 → 2.35, −2.345 → −2.35).
    pub fn round_to_money_half_away_from_zero(self) -> Money {
        let fen = round_half_away_from_zero(self.0, RATED_SCALE - 2);
        Money::from_fen(i64::try_from(fen).expect("rated amount beyond the ledger's range"))
    }

    /// Round to 8 fractional digits, half away from zero (the list-amount check of §4.2).
    pub fn round_to_exact8_half_away_from_zero(self) -> Exact8 {
        Exact8(round_half_away_from_zero(self.0, RATED_SCALE - INPUT_SCALE))
    }
}

/// Divide by 10^digits, rounding half away from zero. A value that fits in an
/// i64 (almost every amount) is divided as one: a division by a constant is a
/// multiply, while a 128-bit division is a library call (a tenth of reading a
/// usage row). Both give the same quotient.
#[inline]
fn round_half_away_from_zero(value: i128, digits: u32) -> i128 {
    if let Ok(narrow) = i64::try_from(value) {
        if digits < 19 {
            let unit = pow10(digits) as i64;
            let (quotient, remainder) = (narrow / unit, (narrow % unit).abs());
            // remainder < unit ≤ 10^18, so twice it fits in an i64.
            return i128::from(if remainder * 2 >= unit { quotient + narrow.signum() } else { quotient });
        }
    }
    let unit = pow10(digits);
    let quotient = value / unit;
    let remainder = (value % unit).abs();
    if remainder * 2 >= unit {
        quotient + value.signum()
    } else {
        quotient
    }
}

/// An input value exact at 8 fractional digits (quantity, unit price, list amount,
/// contract rates and prices), as an integer count of 10^-8.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
#[repr(Rust, packed(8))] // as `Rated`
pub struct Exact8(pub i128);

impl Exact8 {
    pub const ZERO: Exact8 = Exact8(0);
    pub const ONE: Exact8 = Exact8(pow10(INPUT_SCALE));

    pub fn parse(text: &str) -> Result<Exact8, NumberError> {
        let parsed = PlainDecimal::parse(text)?;
        parsed.scaled_to(INPUT_SCALE).map(Exact8).ok_or(NumberError::Scale)
    }
    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
    pub fn checked_sub(self, rhs: Exact8) -> Option<Exact8> {
        self.0.checked_sub(rhs.0).map(Exact8)
    }
    pub fn min(self, rhs: Exact8) -> Exact8 {
        Exact8(self.0.min(rhs.0))
    }
}

impl Exact8 {
    /// Append the shortest plain decimal (`12.5`, `-3`, `0.00000001`), as
    /// `Display` writes it, without allocating (a FOCUS row writes one).
    pub fn write_to(self, out: &mut String) {
        let unit = pow10(INPUT_SCALE) as u128;
        if self.0 < 0 {
            out.push('-');
        }
        let abs = self.0.unsigned_abs();
        // Nearly every quantity fits in a u64, whose division is an instruction,
        // not a 128-bit library call.
        if let Ok(abs) = u64::try_from(abs) {
            let unit = unit as u64;
            out.push_str(itoa::Buffer::new().format(abs / unit));
            write_fraction(out, abs % unit);
            return;
        }
        out.push_str(itoa::Buffer::new().format(abs / unit));
        write_fraction(out, (abs % unit) as u64);
    }
}

/// The fractional digits of an `Exact8` (`frac` < 10^8), without trailing zeros,
/// after a point; nothing when it is 0.
fn write_fraction(out: &mut String, mut frac: u64) {
    if frac == 0 {
        return;
    }
    let mut digits = INPUT_SCALE as usize;
    while frac.is_multiple_of(10) {
        frac /= 10;
        digits -= 1;
    }
    out.push('.');
    let mut buffer = itoa::Buffer::new();
    let text = buffer.format(frac);
    for _ in text.len()..digits {
        out.push('0');
    }
    out.push_str(text);
}

impl fmt::Display for Exact8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(40);
        self.write_to(&mut text);
        f.write_str(&text)
    }
}

/// Why a number field was refused; maps to `bad_value` or `bad_amount_scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("not a plain decimal (digits, optional '-' and '.')")]
    Syntax,
    #[error("more fractional digits than allowed")]
    Scale,
    #[error("out of range (more than {MAX_INTEGER_DIGITS} integer digits)")]
    Range,
}

/// The longest text `PlainDecimal::parse_short` reads: 19 digits at most, below
/// u64::MAX.
const SHORT_TEXT: usize = 19;

/// A decimal exactly as written: `-?[0-9]+(\.[0-9]+)?` (SPEC §1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlainDecimal {
    /// The digits without the point, trailing fractional zeros removed.
    mantissa: i128,
    /// Fractional digits left after removing trailing zeros.
    scale: u32,
}

impl PlainDecimal {
    pub fn parse(text: &str) -> Result<PlainDecimal, NumberError> {
        // Nearly every amount read is short: at most 19 digits, which a u64 holds.
        if text.len() <= SHORT_TEXT {
            Self::parse_short(text.as_bytes())
        } else {
            Self::parse_wide(text)
        }
    }

    /// `parse` of a text of at most `SHORT_TEXT` bytes, in one pass over them with
    /// u64 arithmetic: the same value, or the same error, as `parse_wide` (syntax
    /// before scale before range; a test compares the two). A fifth of the time of
    /// checking a usage row went to the three amounts parsed the wide way.
    fn parse_short(bytes: &[u8]) -> Result<PlainDecimal, NumberError> {
        let negative = bytes.first() == Some(&b'-');
        let int_start = usize::from(negative);
        let mut pos = int_start;
        let mut mantissa: u64 = 0;
        while let Some(&b) = bytes.get(pos).filter(|b| b.is_ascii_digit()) {
            mantissa = mantissa * 10 + u64::from(b - b'0');
            pos += 1;
        }
        if pos == int_start {
            return Err(NumberError::Syntax);
        }
        let int_digits = pos - int_start - bytes[int_start..pos].iter().take_while(|&&b| b == b'0').count();
        let mut scale = 0;
        if pos < bytes.len() {
            if bytes[pos] != b'.' {
                return Err(NumberError::Syntax);
            }
            pos += 1;
            let frac_start = pos;
            // The value and scale up to the last non-zero fractional digit:
            // trailing zeros are not part of the scale.
            let mut kept = mantissa;
            for (i, &b) in bytes[frac_start..].iter().enumerate() {
                if !b.is_ascii_digit() {
                    return Err(NumberError::Syntax);
                }
                mantissa = mantissa * 10 + u64::from(b - b'0');
                if b != b'0' {
                    kept = mantissa;
                    scale = i + 1;
                }
            }
            if frac_start == bytes.len() {
                return Err(NumberError::Syntax);
            }
            mantissa = kept;
        }
        if scale > MAX_FRACTION_DIGITS {
            return Err(NumberError::Scale);
        }
        if int_digits > MAX_INTEGER_DIGITS {
            return Err(NumberError::Range);
        }
        let magnitude = i128::from(mantissa);
        Ok(PlainDecimal { mantissa: if negative { -magnitude } else { magnitude }, scale: scale as u32 })
    }

    fn parse_wide(text: &str) -> Result<PlainDecimal, NumberError> {
        let bytes = text.as_bytes();
        let (negative, body) = match bytes.first() {
            Some(b'-') => (true, &text[1..]),
            _ => (false, text),
        };
        let (int_part, frac_part) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int_part) || frac_part.is_some_and(|f| !all_digits(f)) {
            return Err(NumberError::Syntax);
        }
        let frac = frac_part.unwrap_or("").trim_end_matches('0');
        let int_trimmed = int_part.trim_start_matches('0');
        // Scale is reported before range: a value with too many fractional digits
        // is `bad_amount_scale` (reason 3) whatever its size. No field allows more
        // than 8; the cap keeps 15 integer + 20 fractional digits inside an i128
        // (found by fuzzing: 15 + 30 digits overflowed).
        if frac.len() > MAX_FRACTION_DIGITS {
            return Err(NumberError::Scale);
        }
        if int_trimmed.len() > MAX_INTEGER_DIGITS {
            return Err(NumberError::Range);
        }
        let mut mantissa: i128 = 0;
        for b in int_trimmed.bytes().chain(frac.bytes()) {
            mantissa = mantissa.checked_mul(10).and_then(|m| m.checked_add(i128::from(b - b'0'))).ok_or(NumberError::Range)?;
        }
        if negative {
            mantissa = -mantissa;
        }
        Ok(PlainDecimal { mantissa, scale: frac.len() as u32 })
    }

    /// The value as an integer count of 10^-scale, or None when it has more
    /// (non-zero) fractional digits than that.
    pub fn scaled_to(self, scale: u32) -> Option<i128> {
        if self.scale > scale {
            return None;
        }
        Some(self.mantissa * pow10(scale - self.scale))
    }

    pub fn frac_digits(self) -> u32 {
        self.scale
    }
    pub fn is_negative(self) -> bool {
        self.mantissa < 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rated(text: &str) -> Rated {
        Rated(PlainDecimal::parse(text).unwrap().scaled_to(RATED_SCALE).unwrap())
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(rated("2.345").round_to_money_half_away_from_zero().to_string(), "2.35");
        assert_eq!(rated("-2.345").round_to_money_half_away_from_zero().to_string(), "-2.35");
        assert_eq!(rated("2.3449999999").round_to_money_half_away_from_zero().to_string(), "2.34");
        assert_eq!(rated("-0.004").round_to_money_half_away_from_zero().to_string(), "0.00");
        assert_eq!(rated("0.005").round_to_money_half_away_from_zero().to_string(), "0.01");
    }

    /// The 128-bit arithmetic the narrow fast paths stand in for.
    fn wide_round(value: i128, digits: u32) -> i128 {
        let unit = pow10(digits);
        let (quotient, remainder) = (value / unit, (value % unit).abs());
        if remainder * 2 >= unit { quotient + value.signum() } else { quotient }
    }

    #[test]
    fn narrow_rounding_and_products_equal_the_128_bit_ones_at_the_edges() {
        let edges = [0i128, 1, -1, 49, 50, -50, 51, i128::from(i64::MAX), i128::from(i64::MIN), i128::from(i64::MAX) + 1, i128::from(i64::MIN) - 1];
        for digits in [2, 8, 14, 18, 19, 20] {
            let unit = pow10(digits);
            for v in edges.iter().flat_map(|&e| [e, e.saturating_mul(unit) / 2, e.saturating_mul(unit) / 2 + 1, unit / 2, -(unit / 2), unit / 2 - 1, 1 - unit / 2]) {
                assert_eq!(round_half_away_from_zero(v, digits), wide_round(v, digits), "{v} at {digits}");
            }
        }
        let wide = Exact8(i128::from(i64::MAX) * 1000);
        assert_eq!(Rated::product(wide, Exact8(7)).map(|r| r.0), Some(wide.0 * 7));
        assert_eq!(Rated::product(Exact8(i128::MAX / 2), Exact8(3)).map(|r| r.0), None);
        assert_eq!(Rated::product(Exact8(i128::from(i64::MIN)), Exact8(i128::from(i64::MIN))).map(|r| r.0), Some(i128::from(i64::MIN).pow(2)));
    }

    mod narrow {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn narrow_rounding_and_products_equal_the_128_bit_ones(
                a in prop_oneof![any::<i64>().prop_map(i128::from), any::<i128>().prop_map(|v| v >> 40)],
                b in any::<i64>(),
                digits in prop_oneof![Just(8u32), Just(14u32), 0u32..24],
            ) {
                prop_assert_eq!(round_half_away_from_zero(a, digits), wide_round(a, digits));
                prop_assert_eq!(Rated::product(Exact8(a), Exact8(i128::from(b))).map(|r| r.0), a.checked_mul(i128::from(b)));
            }
        }
    }

    proptest::proptest! {
        /// The one-pass parse of short texts gives what the general one gives:
        /// the same value and scale, or the same error.
        #[test]
        fn short_texts_parse_as_the_general_parse_does(text in "-?[0-9.]{0,19}|[-0-9.x+]{0,19}|-?0*[1-9]{1,17}(\\.[0-9]{1,12}0*)?") {
            proptest::prop_assume!(text.len() <= SHORT_TEXT);
            proptest::prop_assert_eq!(PlainDecimal::parse_short(text.as_bytes()), PlainDecimal::parse_wide(&text));
        }
    }

    #[test]
    fn short_and_general_parse_agree_at_the_limits() {
        for text in [
            "0", "-0", "00", "-00.000", "0.10", "1.0", "9999999999999999999", "999999999999999", "1000000000000000", "0000000000000000001",
            "-999999999999999.9", "0.00000000000000001", "1.10000000000000000", "12345678.123456789", "-", ".", "1.", ".1", "1..2", "-1.-2",
            "1.2.3", "١", "1.٢", "",
        ] {
            assert!(text.len() <= SHORT_TEXT, "{text}");
            assert_eq!(PlainDecimal::parse_short(text.as_bytes()), PlainDecimal::parse_wide(text), "{text:?}");
        }
        assert_eq!(PlainDecimal::parse("9999999999999999999"), Err(NumberError::Range));
        assert_eq!(PlainDecimal::parse("-0000999999999999999.50"), PlainDecimal::parse_wide("-999999999999999.5"));
    }

    #[test]
    fn plain_decimal_syntax() {
        for bad in ["", "-", ".5", "5.", "+1", "1e5", "1,5", " 1", "--1", "0x10", "1.2.3"] {
            assert_eq!(PlainDecimal::parse(bad), Err(NumberError::Syntax), "{bad:?}");
        }
        assert_eq!(PlainDecimal::parse("1234567890123456"), Err(NumberError::Range));
        assert!(PlainDecimal::parse("000000000000000000001").is_ok());
        // Found by cargo fuzz: 15 integer and 30 fractional digits overflowed an i128.
        assert_eq!(PlainDecimal::parse("999999999999999.999999999999999999999999999999"), Err(NumberError::Scale));
        assert!(PlainDecimal::parse("999999999999999.99999999999999999999").is_ok());
    }

    #[test]
    fn ledger_amounts_must_be_whole_fen() {
        assert_eq!(Money::parse("1.5").unwrap().to_string(), "1.50");
        assert_eq!(Money::parse("1.500").unwrap().to_string(), "1.50");
        assert_eq!(Money::parse("1.505"), Err(NumberError::Scale));
        assert_eq!(Money::parse("-0").unwrap().to_string(), "0.00");
        assert_eq!(Money::parse("-3.25").unwrap().to_string(), "-3.25");
    }

    #[test]
    fn money_is_written_as_yuan_and_two_fen_digits() {
        let plain = |fen: i64| {
            let sign = if fen < 0 { "-" } else { "" };
            format!("{sign}{}.{:02}", fen.unsigned_abs() / 100, fen.unsigned_abs() % 100)
        };
        let edges = [0, 1, -1, 9, 10, -10, 99, 100, -100, 101, 12_30, -6_00, i64::MAX, -i64::MAX, i64::MIN];
        let spread = (0..3000i64).map(|i| (i * 7_919_993_317).wrapping_mul(if i % 2 == 0 { 1 } else { -1 }));
        for fen in edges.into_iter().chain(spread) {
            let mut written = String::from("x");
            Money(fen).write_to(&mut written);
            assert_eq!(written, format!("x{}", plain(fen)), "{fen}");
        }
        assert_eq!(Money::from_fen(-1230).to_string(), "-12.30");
    }

    proptest::proptest! {
        /// Every amount of fen, as yuan with two fen digits.
        #[test]
        fn any_money_is_written_as_yuan_and_two_fen_digits(fen in proptest::num::i64::ANY) {
            let sign = if fen < 0 { "-" } else { "" };
            let mut written = String::from("x");
            Money(fen).write_to(&mut written);
            proptest::prop_assert_eq!(written, format!("x{sign}{}.{:02}", fen.unsigned_abs() / 100, fen.unsigned_abs() % 100));
        }
    }

    proptest::proptest! {
        /// `put` appends exactly what `push_str` does, for texts of every length
        /// around its inline copies (0 to 32 bytes) and beyond, after any text.
        #[test]
        fn put_appends_as_push_str_does(before in "\\PC{0,20}", text in "\\PC{0,40}") {
            let mut put = before.clone();
            put.put(&text);
            let mut pushed = before;
            pushed.push_str(&text);
            proptest::prop_assert_eq!(put, pushed);
        }
    }

    #[test]
    fn put_appends_every_short_length() {
        let text = "0123456789abcdefghijklmnopqrstuvwxyz";
        for n in 0..=text.len() {
            let mut out = String::from("x");
            out.put(&text[..n]);
            assert_eq!(out, format!("x{}", &text[..n]), "{n} bytes");
        }
    }

    #[test]
    fn money_never_prints_negative_zero() {
        let m = Money::from_fen(5) - Money::from_fen(5);
        assert_eq!((-m).to_string(), "0.00");
        assert_eq!((-Money::from_fen(0)).to_string(), "0.00");
    }

    #[test]
    fn exact8_products_are_exact() {
        let q = Exact8::parse("123456789012.12345678").unwrap();
        let p = Exact8::parse("99999.99999999").unwrap();
        let product = Rated::product(q, p).unwrap();
        // 123456789012.12345678 × 99999.99999999, exact.
        assert_eq!({ product.0 }, 12_345_678_901_212_345_678_i128 * 9_999_999_999_999i128);
        assert_eq!(Exact8::parse("1.000000001"), Err(NumberError::Scale));
        assert_eq!(Exact8::parse("2.50000000").unwrap().to_string(), "2.5");
    }
    #[test]
    fn exact8_is_written_as_the_shortest_plain_decimal() {
        for (text, written) in [
            ("0", "0"), ("12.5", "12.5"), ("-3", "-3"), ("0.00000001", "0.00000001"), ("-0.5", "-0.5"),
            ("100.10000000", "100.1"), ("7.01020300", "7.010203"), ("999999999999999.99999999", "999999999999999.99999999"),
        ] {
            assert_eq!(Exact8::parse(text).unwrap().to_string(), written, "{text}");
        }
        // Every fractional digit position, both signs, against the plain formula.
        // Both sides of u64::MAX too (the u64 fast path and the 128-bit one).
        let wide = (0..200i128).map(|i| (i128::from(u64::MAX) - 100 + i * 3) * if i % 2 == 0 { 1 } else { -1 });
        let wider = (0..200i128).map(|i| (i * 7_919_993 - 500_000) * 1_000_000_000_000 + i * i);
        for value in (0..2000i128).map(|i| (i * 7_919_993 - 5_000_000_000) * if i % 2 == 0 { 1 } else { 13 }).chain(wide).chain(wider) {
            let v = Exact8(value);
            let unit = pow10(INPUT_SCALE);
            let frac = format!("{:08}", v.0.unsigned_abs() % unit as u128);
            let frac = frac.trim_end_matches('0');
            let sign = if v.0 < 0 { "-" } else { "" };
            let whole = v.0.unsigned_abs() / unit as u128;
            let expected = if frac.is_empty() { format!("{sign}{whole}") } else { format!("{sign}{whole}.{frac}") };
            assert_eq!(v.to_string(), expected);
        }
    }
    #[test]
    #[should_panic(expected = "ledger amount out of i64 fen range")]
    fn money_arithmetic_beyond_the_fen_range_is_a_broken_invariant() {
        let _ = Money::from_fen(i64::MAX) + Money::from_fen(1);
    }

    #[test]
    fn money_is_whole_fen_with_two_decimals_within_the_input_limit() {
        let m = Money::parse("-12.3").unwrap();
        assert_eq!((m.fen(), m.to_string()), (-1230, "-12.30".to_string()));
        assert_eq!((Money::parse("0.01").unwrap() - Money::parse("0.01").unwrap()).to_string(), "0.00");
        // The input limit (15 integer digits) keeps every parsed amount far inside an i64.
        assert_eq!(Money::parse("999999999999999.99").unwrap().fen(), 99_999_999_999_999_999);
        assert_eq!(Money::parse("1000000000000000.00"), Err(NumberError::Range));
        assert_eq!(Money::parse("0.001"), Err(NumberError::Scale));
    }
}
