//! Host-wide UDP counters from /proc/net/snmp and /proc/net/snmp6, for tests and the
//! benchmark's cross-check against what udplab counted itself.

/// The UDP counters of one address family. Host-wide: every socket on the machine adds to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpSnmp {
    pub in_datagrams: u64,
    pub no_ports: u64,
    pub in_errors: u64,
    pub out_datagrams: u64,
    pub rcvbuf_errors: u64,
    pub sndbuf_errors: u64,
}

impl UdpSnmp {
    /// Counter-wise `self - earlier`, saturating at zero, for before/after comparisons.
    pub fn since(&self, earlier: &UdpSnmp) -> UdpSnmp {
        UdpSnmp {
            in_datagrams: self.in_datagrams.saturating_sub(earlier.in_datagrams),
            no_ports: self.no_ports.saturating_sub(earlier.no_ports),
            in_errors: self.in_errors.saturating_sub(earlier.in_errors),
            out_datagrams: self.out_datagrams.saturating_sub(earlier.out_datagrams),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(earlier.sndbuf_errors),
        }
    }

    fn from_named(mut get: impl FnMut(&str) -> Option<u64>) -> Option<UdpSnmp> {
        Some(UdpSnmp {
            in_datagrams: get("InDatagrams")?,
            no_ports: get("NoPorts")?,
            in_errors: get("InErrors")?,
            out_datagrams: get("OutDatagrams")?,
            rcvbuf_errors: get("RcvbufErrors")?,
            sndbuf_errors: get("SndbufErrors")?,
        })
    }
}

/// IPv4 UDP counters from /proc/net/snmp; None where unreadable (not Linux, no procfs).
pub fn udp_snmp() -> Option<UdpSnmp> {
    parse_snmp(&std::fs::read_to_string("/proc/net/snmp").ok()?)
}

/// IPv6 UDP counters from /proc/net/snmp6; None where unreadable or IPv6 is absent.
pub fn udp6_snmp() -> Option<UdpSnmp> {
    parse_snmp6(&std::fs::read_to_string("/proc/net/snmp6").ok()?)
}

/// Parses the `Udp:` header line and the value line that follows it.
fn parse_snmp(text: &str) -> Option<UdpSnmp> {
    let mut udp_lines = text.lines().filter_map(|l| l.strip_prefix("Udp:"));
    let names: Vec<&str> = udp_lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp_lines.next()?.split_whitespace().collect();
    if names.len() != values.len() {
        return None;
    }
    UdpSnmp::from_named(|want| {
        let at = names.iter().position(|n| *n == want)?;
        values[at].parse().ok()
    })
}

/// Parses `Udp6<Name> <value>` lines.
fn parse_snmp6(text: &str) -> Option<UdpSnmp> {
    UdpSnmp::from_named(|want| {
        text.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?.strip_prefix("Udp6")?;
            if name != want {
                return None;
            }
            fields.next()?.parse().ok()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "\
Ip: Forwarding DefaultTTL
Ip: 1 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 85 1 7 86 5 2 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 9 9 9 9 9 9 9 9 9
";

    const SNMP6: &str = "\
Ip6InReceives                   \t12
Udp6InDatagrams                 \t40
Udp6NoPorts                     \t3
Udp6InErrors                    \t4
Udp6OutDatagrams                \t41
Udp6RcvbufErrors                \t4
Udp6SndbufErrors                \t0
UdpLite6InDatagrams             \t99
";

    #[test]
    fn parses_the_ipv4_udp_block_not_udplite() {
        let expected = UdpSnmp {
            in_datagrams: 85,
            no_ports: 1,
            in_errors: 7,
            out_datagrams: 86,
            rcvbuf_errors: 5,
            sndbuf_errors: 2,
        };
        assert_eq!(parse_snmp(SNMP), Some(expected));
    }

    #[test]
    fn parses_the_ipv6_udp_lines() {
        let expected = UdpSnmp {
            in_datagrams: 40,
            no_ports: 3,
            in_errors: 4,
            out_datagrams: 41,
            rcvbuf_errors: 4,
            sndbuf_errors: 0,
        };
        assert_eq!(parse_snmp6(SNMP6), Some(expected));
    }

    #[test]
    fn malformed_input_is_none() {
        assert_eq!(parse_snmp(""), None);
        assert_eq!(parse_snmp("Udp: InDatagrams NoPorts\nUdp: 1\n"), None);
        assert_eq!(parse_snmp("Udp: InDatagrams\nUdp: 1\n"), None);
        assert_eq!(parse_snmp6("Udp6InDatagrams 1\n"), None);
    }

    #[test]
    fn since_subtracts_counter_wise() {
        let a = UdpSnmp {
            in_datagrams: 10,
            rcvbuf_errors: 3,
            ..UdpSnmp::default()
        };
        let b = UdpSnmp {
            in_datagrams: 25,
            rcvbuf_errors: 4,
            ..UdpSnmp::default()
        };
        let d = b.since(&a);
        assert_eq!((d.in_datagrams, d.rcvbuf_errors, d.no_ports), (15, 1, 0));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_hosts_counters() {
        let before = udp_snmp().expect("/proc/net/snmp is readable on Linux");
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        let after = udp_snmp().unwrap();
        // Host-wide and shared with other processes: only growth is guaranteed.
        assert!(after.out_datagrams > before.out_datagrams);
    }
}
