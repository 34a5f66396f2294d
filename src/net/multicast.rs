//! Multicast socket options: a group sender's TTL / hop limit, outgoing interface and loopback
//! delivery, and a group member's membership (any-source and source-specific, IPv4 and IPv6).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use socket2::{InterfaceIndexOrAddress, SockRef};

/// Multicast TTL / hop limit when `--ttl` is not given: the local network only, as the
/// kernel's own default.
pub const DEFAULT_MULTICAST_TTL: u8 = 1;

/// The interface a group is sent on or joined on (`--iface NAME|INDEX|ADDR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iface {
    /// An interface index (a name is resolved to its index when parsed).
    Index(u32),
    /// An IPv4 address of the interface (IPv4 groups only).
    V4(Ipv4Addr),
}

impl Iface {
    /// Parses an interface name (`eth0`), index (`2`) or IPv4 address (`192.0.2.1`).
    pub fn parse(s: &str) -> Result<Iface, String> {
        let s = s.trim();
        if let Ok(v4) = s.parse::<Ipv4Addr>() {
            return Ok(Iface::V4(v4));
        }
        if s.parse::<Ipv6Addr>().is_ok() {
            return Err(format!(
                "\"{s}\": an IPv6 interface is named by its name or index (e.g. eth0), not an address"
            ));
        }
        if let Ok(index) = s.parse::<u32>() {
            return Ok(Iface::Index(index));
        }
        match interface_index(s) {
            Some(index) => Ok(Iface::Index(index)),
            None => Err(format!(
                "no network interface named \"{s}\" (give a name from `ip link`, an index or an IPv4 address)"
            )),
        }
    }

    /// The index an IPv6 option needs; an IPv4 address cannot name an IPv6 interface.
    fn index_v6(self) -> io::Result<u32> {
        match self {
            Iface::Index(i) => Ok(i),
            Iface::V4(a) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--iface {a}: an IPv6 group needs the interface's name or index"),
            )),
        }
    }
}

#[cfg(unix)]
fn interface_index(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

#[cfg(not(unix))]
fn interface_index(_name: &str) -> Option<u32> {
    None
}

/// Sets up a socket that sends to a group: the TTL / hop limit, the outgoing interface, and
/// loopback delivery on (so a member on the sending host receives too, and a one-host test
/// works).
pub fn configure_sender(
    sock: &UdpSocket,
    group: IpAddr,
    ttl: Option<u8>,
    iface: Option<Iface>,
) -> io::Result<()> {
    let sock = SockRef::from(sock);
    let ttl = u32::from(ttl.unwrap_or(DEFAULT_MULTICAST_TTL));
    match group {
        IpAddr::V4(_) => {
            sock.set_multicast_ttl_v4(ttl)?;
            sock.set_multicast_loop_v4(true)?;
            match iface {
                None => {}
                Some(Iface::V4(addr)) => sock.set_multicast_if_v4(&addr)?,
                Some(Iface::Index(index)) => set_multicast_if_v4_index(&sock, index)?,
            }
        }
        IpAddr::V6(_) => {
            sock.set_multicast_hops_v6(ttl)?;
            sock.set_multicast_loop_v6(true)?;
            if let Some(iface) = iface {
                sock.set_multicast_if_v6(iface.index_v6()?)?;
            }
        }
    }
    Ok(())
}

/// IP_MULTICAST_IF by interface index (struct ip_mreqn), which socket2 offers only by address.
#[cfg(target_os = "linux")]
fn set_multicast_if_v4_index(sock: &SockRef<'_>, index: u32) -> io::Result<()> {
    let mreqn = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: index as libc::c_int,
    };
    setsockopt(sock, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreqn)
}

#[cfg(not(target_os = "linux"))]
fn set_multicast_if_v4_index(_sock: &SockRef<'_>, _index: u32) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "an IPv4 --iface by name or index needs Linux: give the interface's IPv4 address",
    ))
}

/// A group membership: `--join GROUP [--source S] [--iface I]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub group: IpAddr,
    /// Source-specific (SSM): only this sender's datagrams are delivered.
    pub source: Option<IpAddr>,
    pub iface: Option<Iface>,
}

impl Membership {
    /// Whether the addresses make sense together: a multicast group, a unicast source of the
    /// same family.
    pub fn check(&self) -> Result<(), String> {
        if !self.group.is_multicast() {
            return Err(format!(
                "--join {}: not a multicast group (IPv4 224.0.0.0/4, IPv6 ff00::/8)",
                self.group
            ));
        }
        if let Some(source) = self.source {
            if source.is_ipv4() != self.group.is_ipv4() {
                return Err(format!(
                    "--source {source}: not of the same family as the group {}",
                    self.group
                ));
            }
            if source.is_multicast() || source.is_unspecified() {
                return Err(format!(
                    "--source {source}: give the sender's unicast address"
                ));
            }
        }
        if let (IpAddr::V6(_), Some(Iface::V4(a))) = (self.group, self.iface) {
            return Err(format!(
                "--iface {a}: an IPv6 group needs the interface's name or index"
            ));
        }
        Ok(())
    }

    /// The address a member binds: the group itself (so the socket receives this group's
    /// datagrams only, not every datagram to the port) with the port given.
    pub fn bind_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.group, port)
    }
}

/// Joins `m` on `sock`: IP_ADD_MEMBERSHIP / IPV6_ADD_MEMBERSHIP, or for a source-specific
/// membership IP_ADD_SOURCE_MEMBERSHIP / MCAST_JOIN_SOURCE_GROUP. On Linux, also clears
/// IP_MULTICAST_ALL so the socket gets only the groups it joined itself.
pub fn join(sock: &UdpSocket, m: &Membership) -> io::Result<()> {
    let sock = SockRef::from(sock);
    match (m.group, m.source) {
        (IpAddr::V4(group), None) => {
            let iface = match m.iface {
                None => InterfaceIndexOrAddress::Address(Ipv4Addr::UNSPECIFIED),
                Some(Iface::V4(a)) => InterfaceIndexOrAddress::Address(a),
                Some(Iface::Index(i)) => InterfaceIndexOrAddress::Index(i),
            };
            sock.join_multicast_v4_n(&group, &iface)?;
        }
        (IpAddr::V4(group), Some(IpAddr::V4(source))) => match m.iface {
            None => sock.join_ssm_v4(&source, &group, &Ipv4Addr::UNSPECIFIED)?,
            Some(Iface::V4(a)) => sock.join_ssm_v4(&source, &group, &a)?,
            Some(Iface::Index(i)) => join_source_group(&sock, m.group, source.into(), i)?,
        },
        (IpAddr::V6(group), None) => {
            let index = m.iface.map(Iface::index_v6).transpose()?.unwrap_or(0);
            sock.join_multicast_v6(&group, index)?;
        }
        (IpAddr::V6(_), Some(source @ IpAddr::V6(_))) => {
            let index = m.iface.map(Iface::index_v6).transpose()?.unwrap_or(0);
            join_source_group(&sock, m.group, source, index)?;
        }
        (_, Some(source)) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--source {source}: not of the same family as the group"),
            ));
        }
    }
    #[cfg(target_os = "linux")]
    {
        // Best effort: binding the group address already filters what arrives.
        let _ = match m.group {
            IpAddr::V4(_) => sock.set_multicast_all_v4(false),
            IpAddr::V6(_) => sock.set_multicast_all_v6(false),
        };
    }
    Ok(())
}

/// MCAST_JOIN_SOURCE_GROUP (RFC 3678): the protocol-independent source-specific join, used for
/// IPv6 and for an IPv4 interface given by index.
#[cfg(target_os = "linux")]
fn join_source_group(
    sock: &SockRef<'_>,
    group: IpAddr,
    source: IpAddr,
    index: u32,
) -> io::Result<()> {
    let storage = |ip: IpAddr| -> libc::sockaddr_storage {
        let addr = socket2::SockAddr::from(SocketAddr::new(ip, 0));
        // SAFETY: sockaddr_storage is plain data, valid when zeroed; the copy stays within
        // both (a SockAddr is at most a sockaddr_storage).
        unsafe {
            let mut out: libc::sockaddr_storage = std::mem::zeroed();
            std::ptr::copy_nonoverlapping(
                addr.as_ptr().cast::<u8>(),
                (&raw mut out).cast::<u8>(),
                addr.len() as usize,
            );
            out
        }
    };
    let req = libc::group_source_req {
        gsr_interface: index,
        gsr_group: storage(group),
        gsr_source: storage(source),
    };
    let level = match group {
        IpAddr::V4(_) => libc::IPPROTO_IP,
        IpAddr::V6(_) => libc::IPPROTO_IPV6,
    };
    setsockopt(sock, level, libc::MCAST_JOIN_SOURCE_GROUP, &req)
}

#[cfg(not(target_os = "linux"))]
fn join_source_group(
    _sock: &SockRef<'_>,
    _group: IpAddr,
    _source: IpAddr,
    _index: u32,
) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "source-specific IPv6 membership needs Linux",
    ))
}

#[cfg(target_os = "linux")]
fn setsockopt<T>(
    sock: &SockRef<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `value` points to a live T of the size given, as the option expects.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(addr: &str) -> UdpSocket {
        UdpSocket::bind(addr).expect("bind a test socket")
    }

    #[test]
    fn interfaces_parse_by_address_index_and_name() {
        assert_eq!(
            Iface::parse("192.0.2.1"),
            Ok(Iface::V4(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_eq!(Iface::parse("3"), Ok(Iface::Index(3)));
        assert!(matches!(Iface::parse("lo"), Ok(Iface::Index(i)) if i > 0));
        let e = Iface::parse("no-such-if0").unwrap_err();
        assert!(e.contains("no network interface named"), "{e}");
        let e = Iface::parse("fe80::1").unwrap_err();
        assert!(e.contains("name or index"), "{e}");
    }

    #[test]
    fn ipv4_sender_options_read_back() {
        let sock = udp("127.0.0.1:0");
        let group: IpAddr = "239.1.2.3".parse().unwrap();
        configure_sender(&sock, group, Some(7), Some(Iface::V4(Ipv4Addr::LOCALHOST))).unwrap();
        let r = SockRef::from(&sock);
        assert_eq!(r.multicast_ttl_v4().unwrap(), 7);
        assert!(r.multicast_loop_v4().unwrap());
        assert_eq!(r.multicast_if_v4().unwrap(), Ipv4Addr::LOCALHOST);
        // Without --ttl: the local network only.
        let plain = udp("127.0.0.1:0");
        configure_sender(&plain, group, None, None).unwrap();
        assert_eq!(SockRef::from(&plain).multicast_ttl_v4().unwrap(), 1);
    }

    #[test]
    fn ipv6_sender_options_read_back() {
        let Ok(sock) = UdpSocket::bind("[::1]:0") else {
            println!("skipped: no IPv6 loopback here");
            return;
        };
        let lo = Iface::parse("lo").unwrap();
        configure_sender(&sock, "ff15::1:2".parse().unwrap(), Some(4), Some(lo)).unwrap();
        let r = SockRef::from(&sock);
        assert_eq!(r.multicast_hops_v6().unwrap(), 4);
        assert!(r.multicast_loop_v6().unwrap());
        assert_eq!(Iface::Index(r.multicast_if_v6().unwrap()), lo);
        let e = configure_sender(
            &sock,
            "ff15::1:2".parse().unwrap(),
            None,
            Some(Iface::V4(Ipv4Addr::LOCALHOST)),
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn memberships_are_checked_before_joining() {
        let m = |group: &str, source: Option<&str>| Membership {
            group: group.parse().unwrap(),
            source: source.map(|s| s.parse().unwrap()),
            iface: None,
        };
        assert!(m("239.1.2.3", None).check().is_ok());
        assert!(m("232.1.2.3", Some("192.0.2.1")).check().is_ok());
        assert!(m("ff3e::8000:1", Some("2001:db8::1")).check().is_ok());
        assert!(
            m("192.0.2.1", None)
                .check()
                .unwrap_err()
                .contains("not a multicast group")
        );
        assert!(
            m("239.1.2.3", Some("2001:db8::1"))
                .check()
                .unwrap_err()
                .contains("same family")
        );
        assert!(
            m("239.1.2.3", Some("239.0.0.1"))
                .check()
                .unwrap_err()
                .contains("unicast")
        );
    }

    /// A join the kernel refuses is an error, not silence; one it accepts shows in
    /// IP_MULTICAST_ALL being cleared (Linux), the one membership effect a socket reads back.
    #[test]
    fn joining_on_loopback_is_accepted_or_refused_with_an_error() {
        let sock = udp("0.0.0.0:0");
        let lo = Iface::V4(Ipv4Addr::LOCALHOST);
        let asm = Membership {
            group: "239.255.77.1".parse().unwrap(),
            source: None,
            iface: Some(lo),
        };
        match join(&sock, &asm) {
            Ok(()) => {
                #[cfg(target_os = "linux")]
                assert!(!SockRef::from(&sock).multicast_all_v4().unwrap());
                // Joining the same group twice on one interface is refused by the kernel.
                assert!(join(&sock, &asm).is_err());
            }
            Err(e) => println!("loopback refused the join ({e}): nothing more to read back"),
        }
        let bad = Membership {
            group: "239.255.77.1".parse().unwrap(),
            source: Some("::1".parse().unwrap()),
            iface: None,
        };
        assert_eq!(
            join(&sock, &bad).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
