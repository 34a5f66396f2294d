//! Units as network people write them: parses rates, sizes, durations, counts and percentages
//! from strings like `100M`, `64K`, `500ms`, `1e6`, `5%`, and formats rates and durations back.
//!
//! Conventions (the ones iperf uses, so command lines carry over):
//! - **Rates are decimal SI bits per second**: `100M` = 100 000 000 bit/s. The prefix is
//!   case-insensitive (`k`/`K`, `m`/`M`, `g`/`G`, `t`/`T`); an optional unit `b`, `bps`,
//!   `bit`, `bits`, `bit/s`, `bits/s` or `b/s` may follow. An upper-case `B` (bytes) is
//!   rejected rather than silently read as bits.
//! - **Sizes are binary bytes**: `64K` = 65 536. `K`/`KB`/`KiB` all mean 1024 (as in iperf),
//!   likewise `M` and `G` (and `T`); the prefix is case-insensitive, a trailing `B` optional.
//!   A lower-case `b` (bits) is rejected.
//! - Numbers are plain decimals with an optional fraction and exponent (`1.5`, `1e6`), never
//!   negative, and are computed exactly: `1.5K` is 1536, `1.3K` is an error because it is not
//!   a whole number of bytes.

use std::time::Duration;

/// A string that is not a valid value of the expected unit. The message names the input and
/// says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {quantity} \"{input}\": {reason}")]
pub struct UnitError {
    quantity: &'static str,
    input: String,
    reason: String,
}

impl UnitError {
    fn new(quantity: &'static str, input: &str, reason: impl Into<String>) -> Self {
        UnitError {
            quantity,
            input: input.to_owned(),
            reason: reason.into(),
        }
    }

    /// What was being parsed: "rate", "size", "duration", "count" or "percentage".
    pub fn quantity(&self) -> &'static str {
        self.quantity
    }

    /// The string that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }
}

const RATE_EXPECTED: &str =
    "expected a number of bit/s with an optional k/M/G/T suffix, like 100M or 1.5G";
const SIZE_EXPECTED: &str = "expected a number of bytes with an optional K/M/G suffix (binary, 1K = 1024), like 1400, 64K or 4MiB";
const DURATION_EXPECTED: &str = "expected a number with a unit ns, us, ms, s, m or h (plain numbers are seconds), like 10s or 500ms";
const COUNT_EXPECTED: &str = "expected a whole number, optionally with a k/M/G suffix or an exponent, like 50000, 10k or 1e6";
const PERCENT_EXPECTED: &str = "expected a percentage with a percent sign, like 5% or 0.5%";

/// An exact decimal number: `mantissa × 10^exp10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    mantissa: u128,
    exp10: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumberError {
    Missing,
    Negative,
    TooManyDigits,
}

impl NumberError {
    fn into_unit_error(self, quantity: &'static str, input: &str, expected: &str) -> UnitError {
        let reason = match self {
            NumberError::Missing => expected.to_owned(),
            NumberError::Negative => format!("negative values are not allowed; {expected}"),
            NumberError::TooManyDigits => "too many digits".to_owned(),
        };
        UnitError::new(quantity, input, reason)
    }
}

/// Exponents beyond this are treated as overflow; keeps `exp10` arithmetic far from i32 limits.
const MAX_EXPONENT: i32 = 1000;

/// Splits `s` (already trimmed) into a leading non-negative decimal number and the rest (the
/// unit, with leading spaces removed). Grammar: `[+] digits [. digits] [(e|E) [+|-] digits]`,
/// at least one digit before the exponent.
fn split_number(s: &str) -> Result<(Decimal, &str), NumberError> {
    let bytes = s.as_bytes();
    let mut pos = 0;
    match bytes.first() {
        Some(b'-') => return Err(NumberError::Negative),
        Some(b'+') => pos = 1,
        _ => {}
    }
    let mut mantissa: u128 = 0;
    let mut exp10: i32 = 0;
    let mut digits = 0usize;
    let mut seen_point = false;
    while let Some(&b) = bytes.get(pos) {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(u128::from(b - b'0')))
                    .ok_or(NumberError::TooManyDigits)?;
                if seen_point {
                    exp10 -= 1;
                }
                digits += 1;
            }
            b'.' if !seen_point => seen_point = true,
            _ => break,
        }
        pos += 1;
    }
    if digits == 0 {
        return Err(NumberError::Missing);
    }
    // An exponent only when 'e' is followed by digits, so a unit starting with 'e' stays a unit.
    if let Some(b'e' | b'E') = bytes.get(pos) {
        let mut at = pos + 1;
        let negative = match bytes.get(at) {
            Some(b'-') => {
                at += 1;
                true
            }
            Some(b'+') => {
                at += 1;
                false
            }
            _ => false,
        };
        let start = at;
        let mut exponent: i32 = 0;
        while let Some(&b @ b'0'..=b'9') = bytes.get(at) {
            exponent = (exponent * 10 + i32::from(b - b'0')).min(MAX_EXPONENT);
            at += 1;
        }
        if at > start {
            exp10 += if negative { -exponent } else { exponent };
            pos = at;
        }
    }
    // Trailing zeros of the fraction carry no value; dropping them keeps later products small.
    while exp10 < 0 && mantissa.is_multiple_of(10) && mantissa != 0 {
        mantissa /= 10;
        exp10 += 1;
    }
    Ok((Decimal { mantissa, exp10 }, s[pos..].trim_start()))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ScaleError {
    Overflow,
    /// The exact value, which is not a whole number.
    NotWhole(f64),
}

/// `number × multiplier` as a u64: exactly, or rounded half up when `round` is set.
fn scale(number: Decimal, multiplier: u64, round: bool) -> Result<u64, ScaleError> {
    if number.mantissa == 0 || multiplier == 0 {
        return Ok(0);
    }
    let product = number
        .mantissa
        .checked_mul(u128::from(multiplier))
        .ok_or(ScaleError::Overflow)?;
    let whole = if number.exp10 >= 0 {
        let power = 10u128
            .checked_pow(number.exp10.unsigned_abs())
            .ok_or(ScaleError::Overflow)?;
        product.checked_mul(power).ok_or(ScaleError::Overflow)?
    } else {
        let Some(divisor) = 10u128.checked_pow(number.exp10.unsigned_abs()) else {
            // The divisor exceeds u128, so the value is below 2^128 / 10^39 < 0.5.
            return if round {
                Ok(0)
            } else {
                Err(ScaleError::NotWhole(0.0))
            };
        };
        if round {
            product / divisor + u128::from(product % divisor >= divisor.div_ceil(2))
        } else if product % divisor == 0 {
            product / divisor
        } else {
            return Err(ScaleError::NotWhole(product as f64 / divisor as f64));
        }
    };
    u64::try_from(whole).map_err(|_| ScaleError::Overflow)
}

/// Index of the SI / binary prefix letter `c` (k=1, m=2, g=3, t=4), case-insensitive.
fn prefix_power(c: char) -> Option<u32> {
    match c.to_ascii_lowercase() {
        'k' => Some(1),
        'm' => Some(2),
        'g' => Some(3),
        't' => Some(4),
        _ => None,
    }
}

/// Splits an optional leading prefix letter off `unit`: (power, rest).
fn split_prefix(unit: &str) -> (u32, &str) {
    let mut chars = unit.chars();
    match chars.next().and_then(prefix_power) {
        Some(power) => (power, chars.as_str()),
        None => (0, unit),
    }
}

/// Parses a rate in bit/s, decimal SI: `100M` = 100 000 000, `1.5G`, `64k`, `2500`, `100Mbps`,
/// `100mbit`. Rates are whole bit/s: fractions are rounded to the nearest, and a rate between 0
/// and 1 bit/s is refused (it would round to 0 or be shown as 1). `0` parses as 0 (the caller
/// decides whether an unpaced 0 is allowed).
pub fn parse_rate_bps(s: &str) -> Result<u64, UnitError> {
    const QUANTITY: &str = "rate";
    let text = s.trim();
    let (number, unit) =
        split_number(text).map_err(|e| e.into_unit_error(QUANTITY, s, RATE_EXPECTED))?;
    let (power, suffix) = split_prefix(unit);
    match suffix {
        "" | "b" | "bps" | "bit" | "bits" | "bit/s" | "bits/s" | "b/s" => {}
        _ if suffix.starts_with('B') => {
            return Err(UnitError::new(
                QUANTITY,
                s,
                "rates are in bits per second and B means bytes; write b or bit, like 100M or 100Mbit",
            ));
        }
        _ => return Err(UnitError::new(QUANTITY, s, RATE_EXPECTED)),
    }
    let multiplier = 1000u64.pow(power);
    // Only a value that is not a whole number can lie strictly between 0 and 1.
    if let Err(ScaleError::NotWhole(value)) = scale(number, multiplier, false)
        && value < 1.0
    {
        return Err(UnitError::new(
            QUANTITY,
            s,
            "below 1 bit/s, the lowest rate udplab paces (use --pps for fractions of a datagram per second)",
        ));
    }
    scale(number, multiplier, true)
        .map_err(|_| UnitError::new(QUANTITY, s, "too large (at most 2^64 − 1 bit/s)"))
}

/// Parses a size in bytes, binary: `64K` = 65 536, `4M` = 4 194 304, `1G`, `4MiB`, `64KB`
/// (binary too, as in iperf), `1400`, `1400B`. A fraction is allowed when the result is a whole
/// number of bytes (`1.5K` = 1536).
pub fn parse_size_bytes(s: &str) -> Result<u64, UnitError> {
    const QUANTITY: &str = "size";
    let text = s.trim();
    let (number, unit) =
        split_number(text).map_err(|e| e.into_unit_error(QUANTITY, s, SIZE_EXPECTED))?;
    let (power, suffix) = split_prefix(unit);
    let valid_suffix = match suffix {
        "" | "B" => true,
        "iB" => power > 0,
        _ => false,
    };
    if !valid_suffix {
        let reason = if suffix.ends_with('b') {
            "sizes are in bytes and b means bits; write B or nothing, like 64K or 64KB".to_owned()
        } else {
            SIZE_EXPECTED.to_owned()
        };
        return Err(UnitError::new(QUANTITY, s, reason));
    }
    scale(number, 1024u64.pow(power), false).map_err(|e| {
        let reason = match e {
            ScaleError::Overflow => "too large (at most 2^64 − 1 bytes)".to_owned(),
            ScaleError::NotWhole(v) => format!("{v} is not a whole number of bytes"),
        };
        UnitError::new(QUANTITY, s, reason)
    })
}

/// Parses a duration: `10s`, `500ms`, `1.5s`, `250us` / `250µs`, `100ns`, `2m` (minutes),
/// `1h`; a plain number is seconds (`90`). Resolution is 1 ns; finer values are an error.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    const QUANTITY: &str = "duration";
    let text = s.trim();
    let (number, unit) =
        split_number(text).map_err(|e| e.into_unit_error(QUANTITY, s, DURATION_EXPECTED))?;
    let ns_per_unit: u64 = match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(UnitError::new(QUANTITY, s, DURATION_EXPECTED)),
    };
    let ns = scale(number, ns_per_unit, false).map_err(|e| {
        let reason = match e {
            ScaleError::Overflow => "too long (at most about 584 years)".to_owned(),
            ScaleError::NotWhole(_) => "finer than the 1 ns resolution".to_owned(),
        };
        UnitError::new(QUANTITY, s, reason)
    })?;
    Ok(Duration::from_nanos(ns))
}

/// Parses a count: `50000`, `1k` = 1000, `10M` = 10 000 000 (decimal SI, prefix
/// case-insensitive), `1e6`. Must be a whole number.
pub fn parse_count(s: &str) -> Result<u64, UnitError> {
    const QUANTITY: &str = "count";
    let text = s.trim();
    let (number, unit) =
        split_number(text).map_err(|e| e.into_unit_error(QUANTITY, s, COUNT_EXPECTED))?;
    let (power, suffix) = split_prefix(unit);
    if !suffix.is_empty() {
        return Err(UnitError::new(QUANTITY, s, COUNT_EXPECTED));
    }
    scale(number, 1000u64.pow(power), false).map_err(|e| {
        let reason = match e {
            ScaleError::Overflow => "too large (at most 2^64 − 1)".to_owned(),
            ScaleError::NotWhole(v) => format!("{v} is not a whole number"),
        };
        UnitError::new(QUANTITY, s, reason)
    })
}

/// Parses a percentage into a fraction: `5%` = 0.05, `0.5%` = 0.005. The `%` is required: a
/// bare `0.5` could mean 0.5 % or 50 %, and a CI gate must not guess (the `--impair` spec has
/// the same rule). The result must lie within 0..=1.
pub fn parse_percent(s: &str) -> Result<f64, UnitError> {
    const QUANTITY: &str = "percentage";
    let text = s.trim();
    let (number, unit) =
        split_number(text).map_err(|e| e.into_unit_error(QUANTITY, s, PERCENT_EXPECTED))?;
    match unit {
        "%" => {}
        "" => {
            // Show the right form with the user's own number, and what it means.
            let per_thousand: f64 = format!("{}e{}", number.mantissa, number.exp10 + 1)
                .parse()
                .unwrap_or(f64::NAN);
            return Err(UnitError::new(
                QUANTITY,
                s,
                format!(
                    "write it with a percent sign, e.g. {text}% ({text}% = {per_thousand} in 1000)"
                ),
            ));
        }
        _ => return Err(UnitError::new(QUANTITY, s, PERCENT_EXPECTED)),
    }
    // Let the standard library round the exact decimal once, so "5%" is exactly 0.05_f64.
    let fraction: f64 = format!("{}e{}", number.mantissa, number.exp10 - 2)
        .parse()
        .map_err(|_| UnitError::new(QUANTITY, s, PERCENT_EXPECTED))?;
    if fraction > 1.0 {
        return Err(UnitError::new(QUANTITY, s, "more than 100%"));
    }
    Ok(fraction)
}

/// Formats `value` (in the base unit of `units`) with three significant digits and the largest
/// unit that keeps the number ≥ 1. `units` is (size in base units, name), ascending.
/// `min_prefixed_decimals` is the least number of decimals shown for every unit but the first.
fn format_scaled(value: f64, units: &[(f64, &str)], min_prefixed_decimals: usize) -> String {
    format_scaled_digits(value, units, min_prefixed_decimals, 3)
}

/// [`format_scaled`] with `digits` significant digits instead of three.
fn format_scaled_digits(
    value: f64,
    units: &[(f64, &str)],
    min_prefixed_decimals: usize,
    digits: i32,
) -> String {
    let base = units[0].1;
    if !value.is_finite() {
        return format!("{value} {base}");
    }
    if value == 0.0 {
        return format!("0 {base}");
    }
    let sign = if value < 0.0 { "-" } else { "" };
    let magnitude = value.abs();
    let mut unit = units
        .iter()
        .rposition(|&(size, _)| magnitude >= size)
        .unwrap_or(0);
    loop {
        let scaled = magnitude / units[unit].0;
        let rounded = round_significant(scaled, digits);
        // Rounding may carry into the next unit: 999.6 ns is "1.00 µs", not "1000 ns".
        if rounded >= 1000.0 && unit + 1 < units.len() {
            unit += 1;
            continue;
        }
        let mut decimals = decimals_for_significant(rounded, digits);
        if unit > 0 {
            decimals = decimals.max(min_prefixed_decimals);
        }
        return format!("{sign}{rounded:.decimals$} {}", units[unit].1);
    }
}

/// Digits before the decimal point of a positive number (0 for numbers below 1), as the
/// exponent `floor(log10(x)) + 1`.
fn integer_digits(x: f64) -> i32 {
    x.log10().floor() as i32 + 1
}

fn round_significant(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits - integer_digits(x));
    (x * scale).round() / scale
}

fn decimals_for_significant(x: f64, digits: i32) -> usize {
    // Capped so a tiny value prints as a short string, not 300 zeros.
    (digits - integer_digits(x)).clamp(0, 12) as usize
}

/// Formats a rate with three significant digits and an SI prefix: `950 bit/s`,
/// `12.5 kbit/s`, `1.50 Gbit/s`. Prefixed values always show one decimal, so an exact
/// 100 Mbit/s reads `100.0 Mbit/s`.
pub fn format_rate_bps(bps: f64) -> String {
    const UNITS: [(f64, &str); 5] = [
        (1.0, "bit/s"),
        (1e3, "kbit/s"),
        (1e6, "Mbit/s"),
        (1e9, "Gbit/s"),
        (1e12, "Tbit/s"),
    ];
    format_scaled(bps, &UNITS, 1)
}

/// Formats a duration given in nanoseconds with three significant digits: `850 ns`,
/// `12.3 µs`, `4.56 ms`, `1.20 s`. Negative values (a signed delay variation) keep their sign.
pub fn format_duration_ns(ns: f64) -> String {
    format_scaled(ns, &DURATION_UNITS, 0)
}

const DURATION_UNITS: [(f64, &str); 4] = [(1.0, "ns"), (1e3, "µs"), (1e6, "ms"), (1e9, "s")];

/// Formats a measured duration and the limit it is compared with (both in ns) so that two
/// different values never print alike: three significant digits, more while they would
/// (`1.0004 ms` against `1.0000 ms`, not `1.00 ms > 1.00 ms`).
pub fn format_duration_pair_ns(measured: f64, limit: f64) -> (String, String) {
    distinct_pair(measured, limit, |v, digits| {
        format_scaled_digits(v, &DURATION_UNITS, 0, digits)
    })
}

/// Formats two percentages (0–100) for a comparison the same way: at least two decimals,
/// more while two different values would print alike (`0.50005%` against `0.50000%`).
pub fn format_percent_pair(measured: f64, limit: f64) -> (String, String) {
    distinct_pair(measured, limit, |v, digits| {
        format!("{:.*}%", (digits - 1) as usize, v)
    })
}

/// Formats `a` and `b` with `format(value, digits)` for digits = 3, 4, ... until the two
/// strings differ (or the values are equal, or 15 digits were reached).
fn distinct_pair(a: f64, b: f64, format: impl Fn(f64, i32) -> String) -> (String, String) {
    let mut digits = 3;
    loop {
        let pair = (format(a, digits), format(b, digits));
        if pair.0 != pair.1 || a == b || digits >= 15 {
            return pair;
        }
        digits += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        // Fuzz every option parser: any text is parsed or refused with a message, never a
        // panic, and what parses prints back in a form that parses to the same value.
        #[test]
        fn option_parsers_never_panic(text in "\\PC{0,24}|[0-9.]{1,12}[a-zA-Z%µ]{0,3}") {
            let _ = parse_rate_bps(&text);
            let _ = parse_size_bytes(&text);
            if let Ok(d) = parse_duration(&text) {
                let shown = format!("{}ns", d.as_nanos());
                proptest::prop_assert_eq!(parse_duration(&shown).ok(), Some(d));
            }
            let _ = parse_count(&text);
            if let Ok(p) = parse_percent(&text) {
                proptest::prop_assert!(p.is_finite() && p >= 0.0);
            }
        }
    }

    fn err_text<T: std::fmt::Debug>(r: Result<T, UnitError>) -> String {
        r.expect_err("input must be rejected").to_string()
    }

    #[test]
    fn rates() {
        let cases: &[(&str, u64)] = &[
            ("100M", 100_000_000),
            ("1.5G", 1_500_000_000),
            ("64k", 64_000),
            ("64K", 64_000),
            ("2500", 2500),
            ("0", 0),
            ("100Mbps", 100_000_000),
            ("100mbit", 100_000_000),
            ("100Mbit/s", 100_000_000),
            ("100 Mb", 100_000_000),
            ("1T", 1_000_000_000_000),
            ("2.5e3", 2500),
            ("1e9", 1_000_000_000),
            (" 10M ", 10_000_000),
            ("+5k", 5000),
            ("1.0004k", 1000),
            ("1.0005k", 1001),
            ("18446744073709551615", u64::MAX),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_rate_bps(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_rates() {
        assert_eq!(
            err_text(parse_rate_bps("10X")),
            r#"invalid rate "10X": expected a number of bit/s with an optional k/M/G/T suffix, like 100M or 1.5G"#
        );
        for bad in [
            "",
            " ",
            "M",
            "-5M",
            "nan",
            "NaN",
            "inf",
            "1..5M",
            "10MM",
            "1e",
            "0x10",
            "18446744073709551616",
            "20000000T",
            "1.5.5",
        ] {
            let e = parse_rate_bps(bad).expect_err(bad);
            assert_eq!(e.input(), bad);
            assert_eq!(e.quantity(), "rate");
        }
        assert!(err_text(parse_rate_bps("-5M")).contains("negative"));
        assert!(err_text(parse_rate_bps("100MB")).contains("B means bytes"));
        assert!(err_text(parse_rate_bps("100MBps")).contains("B means bytes"));
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, u64)] = &[
            ("1400", 1400),
            ("1400B", 1400),
            ("64K", 65_536),
            ("64k", 65_536),
            ("64KB", 65_536),
            ("64KiB", 65_536),
            ("4M", 4_194_304),
            ("4MiB", 4_194_304),
            ("1G", 1 << 30),
            ("1GB", 1 << 30),
            ("1.5K", 1536),
            ("0.5M", 524_288),
            ("2 MiB", 2 << 20),
            ("1e3", 1000),
            ("0", 0),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_size_bytes(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_sizes() {
        assert!(err_text(parse_size_bytes("1.3K")).contains("1331.2 is not a whole number"));
        assert!(err_text(parse_size_bytes("0.5")).contains("not a whole number"));
        assert!(err_text(parse_size_bytes("4mb")).contains("b means bits"));
        assert!(err_text(parse_size_bytes("64Kb")).contains("b means bits"));
        assert!(err_text(parse_size_bytes("-1K")).contains("negative"));
        for bad in ["", "K", "iB", "10iB", "10X", "1KiBB", "nan", "16777216T"] {
            let e = parse_size_bytes(bad).expect_err(bad);
            assert_eq!(e.quantity(), "size", "{bad}");
        }
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Duration)] = &[
            ("10s", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("250μs", Duration::from_micros(250)),
            ("100ns", Duration::from_nanos(100)),
            ("2m", Duration::from_secs(120)),
            ("2min", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("90", Duration::from_secs(90)),
            ("0.5", Duration::from_millis(500)),
            ("1.5us", Duration::from_nanos(1500)),
            ("10 ms", Duration::from_millis(10)),
            ("0", Duration::ZERO),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_durations() {
        assert!(err_text(parse_duration("-1s")).contains("negative"));
        assert!(err_text(parse_duration("1.5ns")).contains("1 ns resolution"));
        assert!(err_text(parse_duration("10000000h")).contains("too long"));
        assert_eq!(
            err_text(parse_duration("10 sec")),
            r#"invalid duration "10 sec": expected a number with a unit ns, us, ms, s, m or h (plain numbers are seconds), like 10s or 500ms"#
        );
        for bad in ["", "s", "10x", "10S", "10MS", "inf", "1e"] {
            parse_duration(bad).expect_err(bad);
        }
    }

    #[test]
    fn counts() {
        let cases: &[(&str, u64)] = &[
            ("50000", 50_000),
            ("1k", 1000),
            ("1K", 1000),
            ("10M", 10_000_000),
            ("1e6", 1_000_000),
            ("1.5e3", 1500),
            ("2.5k", 2500),
            ("1G", 1_000_000_000),
            ("0", 0),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_count(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_counts() {
        assert!(err_text(parse_count("1.5")).contains("1.5 is not a whole number"));
        assert!(err_text(parse_count("1e-1")).contains("not a whole number"));
        assert!(err_text(parse_count("-3")).contains("negative"));
        assert!(err_text(parse_count("1e20")).contains("too large"));
        for bad in ["", "k", "10x", "10kb", "1e99999"] {
            parse_count(bad).expect_err(bad);
        }
    }

    #[test]
    fn percents() {
        let cases: &[(&str, f64)] = &[
            ("5%", 0.05),
            ("0.5%", 0.005),
            ("100%", 1.0),
            ("0%", 0.0),
            ("0.7%", 0.007),
            ("5 %", 0.05),
            ("1e-1%", 0.001),
        ];
        for &(input, want) in cases {
            // Exact: the decimal is rounded once to f64, like the literal.
            assert_eq!(parse_percent(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_percents() {
        // A bare number is ambiguous (0.5 % or 50 %?): refused, showing the right form.
        assert_eq!(
            err_text(parse_percent("0.5")),
            r#"invalid percentage "0.5": write it with a percent sign, e.g. 0.5% (0.5% = 5 in 1000)"#
        );
        assert!(err_text(parse_percent("5")).contains("e.g. 5% (5% = 50 in 1000)"));
        assert!(err_text(parse_percent("1")).contains("e.g. 1%"));
        assert!(err_text(parse_percent("0.05")).contains("0.05% = 0.5 in 1000"));
        assert!(err_text(parse_percent("0")).contains("e.g. 0%"));
        assert!(err_text(parse_percent("101%")).contains("more than 100%"));
        assert!(err_text(parse_percent("-1%")).contains("negative"));
        for bad in ["", "%", "5%%", "abc", "nan", "1e400"] {
            parse_percent(bad).expect_err(bad);
        }
    }

    #[test]
    fn rates_below_one_bit_per_second_are_refused_not_rounded() {
        for bad in ["0.5", "0.4", "0.999", "1e-3", "0.0001k"] {
            assert!(
                err_text(parse_rate_bps(bad)).contains("below 1 bit/s"),
                "{bad}"
            );
        }
        assert_eq!(parse_rate_bps("0"), Ok(0));
        assert_eq!(parse_rate_bps("0.0"), Ok(0));
        assert_eq!(parse_rate_bps("1"), Ok(1));
        assert_eq!(parse_rate_bps("0.001k"), Ok(1));
        assert_eq!(parse_rate_bps("1.5"), Ok(2));
    }

    #[test]
    fn compared_values_print_apart() {
        // A failed limit never reads "0.0 µs > 0.0 µs" or "1.00 ms > 1.00 ms".
        assert_eq!(
            format_duration_pair_ns(1_120.0, 1.0),
            ("1.12 µs".to_string(), "1.00 ns".to_string())
        );
        assert_eq!(
            format_duration_pair_ns(1_000_400.0, 1_000_000.0),
            ("1.0004 ms".to_string(), "1.0000 ms".to_string())
        );
        assert_eq!(
            format_duration_pair_ns(1_000_000_001.0, 1e9),
            ("1.000000001 s".to_string(), "1.000000000 s".to_string())
        );
        assert_eq!(
            format_percent_pair(5.6, 0.5),
            ("5.60%".to_string(), "0.50%".to_string())
        );
        assert_eq!(
            format_percent_pair(0.50005, 0.5),
            ("0.50005%".to_string(), "0.50000%".to_string())
        );
        assert_eq!(
            format_percent_pair(0.0, 0.0),
            ("0.00%".to_string(), "0.00%".to_string())
        );
    }

    #[test]
    fn rate_formatting() {
        let cases: &[(f64, &str)] = &[
            (100e6, "100.0 Mbit/s"),
            (1.5e9, "1.50 Gbit/s"),
            (950.0, "950 bit/s"),
            (12_345.0, "12.3 kbit/s"),
            (999_960.0, "1.00 Mbit/s"),
            (999_400.0, "999.0 kbit/s"),
            (1e3, "1.00 kbit/s"),
            (0.0, "0 bit/s"),
            (0.5, "0.500 bit/s"),
            (2.5e13, "25.0 Tbit/s"),
            (f64::NAN, "NaN bit/s"),
        ];
        for &(value, want) in cases {
            assert_eq!(format_rate_bps(value), want, "{value}");
        }
    }

    #[test]
    fn duration_formatting() {
        let cases: &[(f64, &str)] = &[
            (850.0, "850 ns"),
            (12_345.0, "12.3 µs"),
            (4_560_000.0, "4.56 ms"),
            (1.2e9, "1.20 s"),
            (999.6, "1.00 µs"),
            (-12_345.0, "-12.3 µs"),
            (0.0, "0 ns"),
            (0.25, "0.250 ns"),
            (3.6e12, "3600 s"),
            (f64::INFINITY, "inf ns"),
        ];
        for &(value, want) in cases {
            assert_eq!(format_duration_ns(value), want, "{value}");
        }
    }

    #[test]
    fn formatted_rates_parse_back_close() {
        // The two halves agree: what we print, a user can paste back as a rate.
        for bps in [950u64, 12_345, 100_000_000, 1_500_000_000] {
            let text = format_rate_bps(bps as f64);
            let parsed = parse_rate_bps(&text).expect(&text) as f64;
            assert!((parsed - bps as f64).abs() / (bps as f64) < 5e-3, "{text}");
        }
    }
}
