//! Small exact parsers and canonical formatters for the units an impairment spec uses:
//! percentages, durations, bit rates and byte sizes.
//!
//! Values are parsed from decimal text into integers (parts per billion, nanoseconds, bits/s,
//! bytes) without going through floating point, so `Display` can print them back exactly and the
//! canonical spec parses back to the identical spec. Errors are short reasons; the spec parser
//! wraps them with the offending item and an example.

/// Parts per billion in 100 %.
pub(crate) const PPB_FULL: u32 = 1_000_000_000;

/// Parses an unsigned decimal (`12`, `0.5`, `.5`, `3.`) and returns `value × multiplier`, which
/// must come out a whole number.
fn parse_scaled(digits: &str, multiplier: u128, what: &str) -> Result<u128, String> {
    if digits.starts_with('-') {
        return Err(format!("{what} cannot be negative"));
    }
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return Err(format!("`{digits}` is not a number"));
    }
    // 30 significant digits stay far inside u128 even after multiplying by 10^9.
    if int_part.len() + frac_part.len() > 30 {
        return Err(format!("`{digits}` has too many digits"));
    }
    let mut mantissa: u128 = 0;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        mantissa = mantissa * 10 + u128::from(b - b'0');
    }
    let scale = 10u128.pow(frac_part.len() as u32);
    let scaled = mantissa
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{digits}` is too large"))?;
    if scaled % scale != 0 {
        return Err(format!("`{digits}` is more precise than {what} can be"));
    }
    Ok(scaled / scale)
}

/// `1.5%` → 15_000_000 parts per billion. Must end in `%` and lie in 0–100 %.
pub(crate) fn parse_percent(s: &str) -> Result<u32, String> {
    let Some(number) = s.strip_suffix('%') else {
        return Err(format!("`{s}` is not a percentage: write it with a % sign"));
    };
    if number.trim_start().starts_with('-') {
        return Err(format!("`{s}` is outside 0–100%"));
    }
    let ppb = parse_scaled(number, 10_000_000, "a percentage (7 decimals at most)")?;
    if ppb > u128::from(PPB_FULL) {
        return Err(format!("`{s}` is outside 0–100%"));
    }
    Ok(ppb as u32)
}

/// 15_000_000 ppb → `1.5%`.
pub(crate) fn format_percent(ppb: u32) -> String {
    let whole = ppb / 10_000_000;
    let frac = ppb % 10_000_000;
    if frac == 0 {
        format!("{whole}%")
    } else {
        let frac = format!("{frac:07}");
        format!("{whole}.{}%", frac.trim_end_matches('0'))
    }
}

const DURATION_UNITS: [(&str, u128); 5] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
];

/// `20ms`, `1.5ms`, `250us`, `250µs`, `100ns`, `2s` → nanoseconds. A unit is required.
pub(crate) fn parse_duration_ns(s: &str) -> Result<u64, String> {
    // Longest suffixes first so `ms` is not read as `s`.
    let unit = DURATION_UNITS
        .iter()
        .filter(|(suffix, _)| s.ends_with(suffix))
        .max_by_key(|(suffix, _)| suffix.len());
    let Some(&(suffix, ns_per_unit)) = unit else {
        return Err(format!("`{s}` needs a time unit (ns, us, µs, ms or s)"));
    };
    let number = &s[..s.len() - suffix.len()];
    let ns = parse_scaled(number, ns_per_unit, "a duration (whole nanoseconds)")?;
    u64::try_from(ns).map_err(|_| format!("`{s}` is too long"))
}

/// Nanoseconds → the largest unit that shows the value as a whole number (`1500us`, `20ms`).
pub(crate) fn format_duration_ns(ns: u64) -> String {
    for (suffix, per) in [("s", 1_000_000_000u64), ("ms", 1_000_000), ("us", 1_000)] {
        if ns != 0 && ns.is_multiple_of(per) {
            return format!("{}{suffix}", ns / per);
        }
    }
    format!("{ns}ns")
}

/// `10M`, `1.5G`, `500k`, `64000`, optionally followed by `bps` → bits per second (decimal SI).
pub(crate) fn parse_rate_bps(s: &str) -> Result<u64, String> {
    let body = s.strip_suffix("bps").unwrap_or(s);
    let (number, multiplier) = match body.as_bytes().last() {
        Some(b'k' | b'K') => (&body[..body.len() - 1], 1_000),
        Some(b'M') => (&body[..body.len() - 1], 1_000_000),
        Some(b'G') => (&body[..body.len() - 1], 1_000_000_000),
        _ => (body, 1),
    };
    let bps = parse_scaled(number, multiplier, "a rate (whole bits per second)")?;
    if bps == 0 {
        return Err("a rate must be above 0".to_string());
    }
    u64::try_from(bps).map_err(|_| format!("`{s}` is too large"))
}

/// Bits per second → the largest SI suffix that shows it as a whole number (`10M`, `1500M`).
pub(crate) fn format_rate_bps(bps: u64) -> String {
    for (suffix, per) in [("G", 1_000_000_000u64), ("M", 1_000_000), ("k", 1_000)] {
        if bps != 0 && bps.is_multiple_of(per) {
            return format!("{}{suffix}", bps / per);
        }
    }
    bps.to_string()
}

/// `64K`, `1M`, `1500`, optionally followed by `B` or `iB` → bytes (binary: K = 1024).
pub(crate) fn parse_size_bytes(s: &str) -> Result<u64, String> {
    let body = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s);
    let (number, multiplier) = match body.as_bytes().last() {
        Some(b'k' | b'K') => (&body[..body.len() - 1], 1 << 10),
        Some(b'M') => (&body[..body.len() - 1], 1 << 20),
        Some(b'G') => (&body[..body.len() - 1], 1 << 30),
        _ => (body, 1),
    };
    let bytes = parse_scaled(number, multiplier, "a size (whole bytes)")?;
    u64::try_from(bytes).map_err(|_| format!("`{s}` is too large"))
}

/// Bytes → the largest binary suffix that shows it as a whole number (`64K`, `1500`).
pub(crate) fn format_size_bytes(bytes: u64) -> String {
    for (suffix, per) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if bytes != 0 && bytes.is_multiple_of(per) {
            return format!("{}{suffix}", bytes / per);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_parse_exactly_and_print_back() {
        assert_eq!(parse_percent("1%"), Ok(10_000_000));
        assert_eq!(parse_percent("0.5%"), Ok(5_000_000));
        assert_eq!(parse_percent("100%"), Ok(PPB_FULL));
        assert_eq!(parse_percent("0%"), Ok(0));
        assert_eq!(parse_percent(".25%"), Ok(2_500_000));
        assert_eq!(parse_percent("0.0000001%"), Ok(1));
        for text in ["1%", "0.5%", "100%", "0%", "12.3456789%", "0.0000001%"] {
            assert_eq!(format_percent(parse_percent(text).unwrap()), text);
        }
        assert!(parse_percent("1").is_err());
        assert!(parse_percent("100.1%").is_err());
        assert!(parse_percent("-1%").is_err());
        assert!(parse_percent("0.00000001%").is_err());
        assert!(parse_percent("x%").is_err());
        assert!(parse_percent("%").is_err());
        assert!(parse_percent("1.2.3%").is_err());
    }

    #[test]
    fn durations_parse_exactly_and_print_back() {
        assert_eq!(parse_duration_ns("20ms"), Ok(20_000_000));
        assert_eq!(parse_duration_ns("1.5ms"), Ok(1_500_000));
        assert_eq!(parse_duration_ns("250us"), Ok(250_000));
        assert_eq!(parse_duration_ns("250µs"), Ok(250_000));
        assert_eq!(parse_duration_ns("7ns"), Ok(7));
        assert_eq!(parse_duration_ns("2s"), Ok(2_000_000_000));
        assert_eq!(parse_duration_ns("0ms"), Ok(0));
        assert_eq!(format_duration_ns(1_500_000), "1500us");
        assert_eq!(format_duration_ns(20_000_000), "20ms");
        assert_eq!(format_duration_ns(2_000_000_000), "2s");
        assert_eq!(format_duration_ns(7), "7ns");
        assert_eq!(format_duration_ns(0), "0ns");
        for ns in [0, 1, 999, 1_000, 1_500_000, 3_000_000_000, 123_456_789] {
            assert_eq!(parse_duration_ns(&format_duration_ns(ns)), Ok(ns));
        }
        assert!(parse_duration_ns("20").is_err());
        assert!(parse_duration_ns("-5ms").is_err());
        assert!(parse_duration_ns("0.5ns").is_err());
        assert!(parse_duration_ns("ms").is_err());
        assert!(parse_duration_ns("5 ms").is_err());
    }

    #[test]
    fn rates_are_decimal_si() {
        assert_eq!(parse_rate_bps("10M"), Ok(10_000_000));
        assert_eq!(parse_rate_bps("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_rate_bps("500k"), Ok(500_000));
        assert_eq!(parse_rate_bps("500K"), Ok(500_000));
        assert_eq!(parse_rate_bps("64000"), Ok(64_000));
        assert_eq!(parse_rate_bps("10Mbps"), Ok(10_000_000));
        assert_eq!(format_rate_bps(1_500_000_000), "1500M");
        assert_eq!(format_rate_bps(10_000_000), "10M");
        assert_eq!(format_rate_bps(1_234), "1234");
        for bps in [1, 1_000, 1_500_000_000, 2_000_000_000, 123_456] {
            assert_eq!(parse_rate_bps(&format_rate_bps(bps)), Ok(bps));
        }
        assert!(parse_rate_bps("0").is_err());
        assert!(parse_rate_bps("0.5").is_err());
        assert!(parse_rate_bps("-1M").is_err());
        assert!(parse_rate_bps("fast").is_err());
    }

    #[test]
    fn sizes_are_binary() {
        assert_eq!(parse_size_bytes("64K"), Ok(65_536));
        assert_eq!(parse_size_bytes("64KiB"), Ok(65_536));
        assert_eq!(parse_size_bytes("1M"), Ok(1_048_576));
        assert_eq!(parse_size_bytes("1500"), Ok(1_500));
        assert_eq!(parse_size_bytes("1500B"), Ok(1_500));
        assert_eq!(parse_size_bytes("1.5K"), Ok(1_536));
        assert_eq!(format_size_bytes(65_536), "64K");
        assert_eq!(format_size_bytes(1_500), "1500");
        for bytes in [1, 1_024, 1_536, 3 << 30, 99_999] {
            assert_eq!(parse_size_bytes(&format_size_bytes(bytes)), Ok(bytes));
        }
        assert!(parse_size_bytes("1.1K").is_err());
        assert!(parse_size_bytes("-1K").is_err());
    }
}
