//! IP header markings a test sets and observes: DSCP/TOS names and values (RFC 2474, RFC 4594,
//! RFC 5865), the TOS byte layout (DSCP in the top six bits, ECN in the low two, RFC 3168) and
//! the hop-limit range. Pure parsing and naming; the socket options live in `socket`.

/// The DSCP code points people write by name: class selectors, assured forwarding (RFC 2597),
/// expedited forwarding (RFC 3246) and voice admit (RFC 5865).
pub const DSCP_NAMES: &[(&str, u8)] = &[
    ("CS0", 0),
    ("CS1", 8),
    ("CS2", 16),
    ("CS3", 24),
    ("CS4", 32),
    ("CS5", 40),
    ("CS6", 48),
    ("CS7", 56),
    ("AF11", 10),
    ("AF12", 12),
    ("AF13", 14),
    ("AF21", 18),
    ("AF22", 20),
    ("AF23", 22),
    ("AF31", 26),
    ("AF32", 28),
    ("AF33", 30),
    ("AF41", 34),
    ("AF42", 36),
    ("AF43", 38),
    ("EF", 46),
    ("VA", 44),
];

/// Largest DSCP value (six bits).
pub const MAX_DSCP: u8 = 63;

/// The DSCP of a TOS / traffic-class byte.
pub fn dscp_of(tos: u8) -> u8 {
    tos >> 2
}

/// The ECN field of a TOS / traffic-class byte.
pub fn ecn_of(tos: u8) -> u8 {
    tos & 0b11
}

/// The TOS byte that carries `dscp` with ECN 0 (Not-ECT).
pub fn tos_of_dscp(dscp: u8) -> u8 {
    dscp << 2
}

/// The RFC name of a DSCP value, when it has one.
pub fn dscp_name(dscp: u8) -> Option<&'static str> {
    DSCP_NAMES
        .iter()
        .find(|(_, v)| *v == dscp)
        .map(|(name, _)| *name)
}

/// A DSCP value as people read it: `EF (46)`, or the bare number when it has no name.
pub fn dscp_label(dscp: u8) -> String {
    match dscp_name(dscp) {
        Some(name) => format!("{name} ({dscp})"),
        None => dscp.to_string(),
    }
}

/// The ECN field's RFC 3168 name.
pub fn ecn_name(ecn: u8) -> &'static str {
    match ecn & 0b11 {
        0 => "Not-ECT",
        1 => "ECT(1)",
        2 => "ECT(0)",
        _ => "CE",
    }
}

/// `--dscp`: a name (EF, AF41, CS5, VA; any case) or a number 0..=63 (decimal, or hex with 0x).
pub fn parse_dscp(s: &str) -> Result<u8, String> {
    let text = s.trim();
    if let Some((_, v)) = DSCP_NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
    {
        return Ok(*v);
    }
    match parse_byte(text) {
        Some(v) if v <= MAX_DSCP => Ok(v),
        _ => Err(format!(
            "\"{s}\" is not a DSCP: give a name (EF, AF11..AF43, CS0..CS7, VA) or a number 0..=63, \
             e.g. --dscp EF"
        )),
    }
}

/// `--tos`: the whole TOS / traffic-class byte, 0..=255 (decimal, or hex with 0x, e.g. 0xb8).
pub fn parse_tos(s: &str) -> Result<u8, String> {
    parse_byte(s.trim()).ok_or_else(|| {
        format!(
            "\"{s}\" is not a TOS byte: give a number 0..=255 (or hex, e.g. 0xb8 for EF); \
             for a DSCP use --dscp"
        )
    })
}

/// `--ttl`: an IPv4 TTL / IPv6 hop limit, 1..=255.
pub fn parse_ttl(s: &str) -> Result<u8, String> {
    match parse_byte(s.trim()) {
        Some(v) if v >= 1 => Ok(v),
        _ => Err(format!(
            "\"{s}\" is not a TTL: give a hop count 1..=255, e.g. --ttl 64"
        )),
    }
}

fn parse_byte(text: &str) -> Option<u8> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16).ok(),
        None => text.parse::<u8>().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dscp_names_are_the_rfc_code_points() {
        assert_eq!(parse_dscp("EF"), Ok(46));
        assert_eq!(parse_dscp("ef"), Ok(46));
        assert_eq!(parse_dscp("AF41"), Ok(34));
        assert_eq!(parse_dscp("af11"), Ok(10));
        assert_eq!(parse_dscp("AF43"), Ok(38));
        assert_eq!(parse_dscp("CS5"), Ok(40));
        assert_eq!(parse_dscp("CS1"), Ok(8));
        assert_eq!(parse_dscp("VA"), Ok(44));
        assert_eq!(parse_dscp("63"), Ok(63));
        assert_eq!(parse_dscp("0x2e"), Ok(46));
        // Every AFxy is 8x + 2y (RFC 2597), every CSx is 8x.
        for x in 1..=4u8 {
            for y in 1..=3u8 {
                assert_eq!(parse_dscp(&format!("AF{x}{y}")), Ok(8 * x + 2 * y));
            }
        }
        for x in 0..=7u8 {
            assert_eq!(parse_dscp(&format!("CS{x}")), Ok(8 * x));
        }
    }

    #[test]
    fn out_of_range_markings_are_refused_with_the_expected_form() {
        for bad in ["64", "-1", "AF44", "XX", "", "0x40"] {
            let e = parse_dscp(bad).unwrap_err();
            assert!(e.contains("0..=63"), "{bad}: {e}");
        }
        assert_eq!(parse_tos("184"), Ok(184));
        assert_eq!(parse_tos("0xB8"), Ok(184));
        assert!(parse_tos("256").unwrap_err().contains("0..=255"));
        assert!(parse_tos("EF").unwrap_err().contains("--dscp"));
        assert_eq!(parse_ttl("1"), Ok(1));
        assert_eq!(parse_ttl("255"), Ok(255));
        assert!(parse_ttl("0").unwrap_err().contains("1..=255"));
        assert!(parse_ttl("256").is_err());
    }

    #[test]
    fn tos_byte_splits_into_dscp_and_ecn() {
        assert_eq!(tos_of_dscp(46), 0xb8);
        assert_eq!(dscp_of(0xb8), 46);
        assert_eq!(dscp_of(0xbb), 46);
        assert_eq!(ecn_of(0xbb), 3);
        assert_eq!(ecn_name(3), "CE");
        assert_eq!(ecn_name(2), "ECT(0)");
        assert_eq!(dscp_label(46), "EF (46)");
        assert_eq!(dscp_label(7), "7");
    }
}
