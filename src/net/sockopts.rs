//! IP-level options of a bound UDP socket: the TOS / traffic-class byte, TTL / hop limit and
//! Don't Fragment a test sends with (`--dscp`, `--tos`, `--ttl`, `--df`), asking the kernel for
//! each received datagram's TOS and TTL, and reading back what is in force (the path MTU the
//! kernel learned included). Linux; elsewhere every call is `Unsupported`.
//!
//! An IPv6 socket carries IPv4 traffic as v4-mapped addresses (the receiver's dual-stack
//! `[::]`, a sender bound to a mapped address): such datagrams take the IPv4 options, so on
//! an IPv6 socket both the IPv6 and the IPv4 option are set, the IPv4 one best-effort.

use std::io;
use std::net::UdpSocket;

/// What to mark outgoing datagrams with. `Default` changes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marking {
    /// IP_TOS / IPV6_TCLASS byte (DSCP << 2 | ECN).
    pub tos: Option<u8>,
    /// IP_TTL / IPV6_UNICAST_HOPS (and the multicast TTL when `multicast`).
    pub ttl: Option<u8>,
    /// Set the multicast TTL / hop limit too (the destination is a group).
    pub multicast: bool,
    /// IP_MTU_DISCOVER = DO / IPV6_DONTFRAG: never fragment, fail with EMSGSIZE instead.
    pub df: bool,
}

/// What the kernel has in force on a socket, read back with getsockopt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MarkingInForce {
    pub tos: u8,
    pub ttl: u8,
    pub df: bool,
}

/// The send was refused because the datagram exceeds the path MTU and may not be fragmented.
pub fn is_emsgsize(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::EMSGSIZE)
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    use super::{Marking, MarkingInForce};
    use crate::net::sys::{getsockopt_int, setsockopt_int};

    fn is_v6(sock: &UdpSocket) -> io::Result<bool> {
        Ok(matches!(sock.local_addr()?, SocketAddr::V6(_)))
    }

    fn named(what: &str, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{what}: {e}"))
    }

    /// Sets the IPv6 option (an error) and, on an IPv6 socket, the IPv4 one for v4-mapped
    /// traffic (best effort); on an IPv4 socket only the IPv4 one (an error).
    fn set_both(
        sock: &UdpSocket,
        v4: (libc::c_int, &str),
        v6: (libc::c_int, &str),
        value: libc::c_int,
    ) -> io::Result<()> {
        let fd = sock.as_raw_fd();
        if is_v6(sock)? {
            setsockopt_int(fd, libc::IPPROTO_IPV6, v6.0, value).map_err(|e| named(v6.1, e))?;
            let _ = setsockopt_int(fd, libc::IPPROTO_IP, v4.0, value);
            Ok(())
        } else {
            setsockopt_int(fd, libc::IPPROTO_IP, v4.0, value).map_err(|e| named(v4.1, e))
        }
    }

    pub(super) fn apply(sock: &UdpSocket, m: &Marking) -> io::Result<()> {
        if let Some(tos) = m.tos {
            set_both(
                sock,
                (libc::IP_TOS, "IP_TOS"),
                (libc::IPV6_TCLASS, "IPV6_TCLASS"),
                tos.into(),
            )?;
        }
        if let Some(ttl) = m.ttl {
            set_both(
                sock,
                (libc::IP_TTL, "IP_TTL"),
                (libc::IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS"),
                ttl.into(),
            )?;
            if m.multicast {
                set_both(
                    sock,
                    (libc::IP_MULTICAST_TTL, "IP_MULTICAST_TTL"),
                    (libc::IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS"),
                    ttl.into(),
                )?;
            }
        }
        if m.df {
            set_both(
                sock,
                (libc::IP_MTU_DISCOVER, "IP_MTU_DISCOVER"),
                (libc::IPV6_MTU_DISCOVER, "IPV6_MTU_DISCOVER"),
                libc::IP_PMTUDISC_DO,
            )?;
            if is_v6(sock)? {
                setsockopt_int(sock.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1)
                    .map_err(|e| named("IPV6_DONTFRAG", e))?;
            }
        }
        Ok(())
    }

    pub(super) fn in_force(sock: &UdpSocket) -> io::Result<MarkingInForce> {
        let fd = sock.as_raw_fd();
        let get =
            |level, name, what: &str| getsockopt_int(fd, level, name).map_err(|e| named(what, e));
        if is_v6(sock)? {
            let hops = get(
                libc::IPPROTO_IPV6,
                libc::IPV6_UNICAST_HOPS,
                "IPV6_UNICAST_HOPS",
            )?;
            // -1 means "the route's default", which getsockopt already resolves on Linux.
            Ok(MarkingInForce {
                tos: get(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, "IPV6_TCLASS")? as u8,
                ttl: u8::try_from(hops).unwrap_or(64),
                df: get(libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, "IPV6_DONTFRAG")? != 0,
            })
        } else {
            Ok(MarkingInForce {
                tos: get(libc::IPPROTO_IP, libc::IP_TOS, "IP_TOS")? as u8,
                ttl: get(libc::IPPROTO_IP, libc::IP_TTL, "IP_TTL")? as u8,
                df: get(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, "IP_MTU_DISCOVER")?
                    == libc::IP_PMTUDISC_DO,
            })
        }
    }

    pub(super) fn enable_receive_marks(sock: &UdpSocket) -> io::Result<()> {
        let fd = sock.as_raw_fd();
        if is_v6(sock)? {
            setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1)
                .map_err(|e| named("IPV6_RECVTCLASS", e))?;
            setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)
                .map_err(|e| named("IPV6_RECVHOPLIMIT", e))?;
            // IPv4 peers of a dual-stack socket report through the IPv4 options.
            let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 1);
            let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1);
        } else {
            setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 1)
                .map_err(|e| named("IP_RECVTOS", e))?;
            setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)
                .map_err(|e| named("IP_RECVTTL", e))?;
        }
        Ok(())
    }

    pub(super) fn path_mtu(sock: &UdpSocket) -> io::Result<u32> {
        let fd = sock.as_raw_fd();
        let peer = sock.peer_addr()?;
        let mtu = match (is_v6(sock)?, peer.ip().to_canonical().is_ipv4()) {
            // A v4-mapped peer's route is an IPv4 route.
            (true, true) => getsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU)
                .or_else(|_| getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU)),
            (true, false) => getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU),
            (false, _) => getsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU),
        }?;
        u32::try_from(mtu).map_err(|_| io::Error::other(format!("path MTU {mtu}")))
    }
}

#[cfg(not(target_os = "linux"))]
fn unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "IP marking options need Linux")
}

/// Sets what `m` asks for on `sock` (bound, before any send). An option the kernel refuses is
/// an error naming it: a test that asked for EF must not silently send CS0.
pub fn apply_marking(sock: &UdpSocket, m: &Marking) -> io::Result<()> {
    if *m == Marking::default() {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        linux::apply(sock, m)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = sock;
        Err(unsupported())
    }
}

/// The TOS byte, unicast TTL / hop limit and DF setting in force on `sock` (getsockopt).
pub fn marking_in_force(sock: &UdpSocket) -> io::Result<MarkingInForce> {
    #[cfg(target_os = "linux")]
    {
        linux::in_force(sock)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = sock;
        Err(unsupported())
    }
}

/// Asks for each received datagram's TOS byte and TTL / hop limit as control messages
/// (IP_RECVTOS + IP_RECVTTL, IPV6_RECVTCLASS + IPV6_RECVHOPLIMIT); `RecvBatch` decodes them.
pub fn enable_receive_marks(sock: &UdpSocket) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        linux::enable_receive_marks(sock)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = sock;
        Err(unsupported())
    }
}

/// The path MTU the kernel holds for a *connected* socket's destination (IP_MTU / IPV6_MTU):
/// the interface MTU, or less once an ICMP "fragmentation needed" / "packet too big" taught it.
pub fn path_mtu(sock: &UdpSocket) -> io::Result<u32> {
    #[cfg(target_os = "linux")]
    {
        linux::path_mtu(sock)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = sock;
        Err(unsupported())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    fn v4() -> UdpSocket {
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()
    }

    fn v6() -> Option<UdpSocket> {
        UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).ok()
    }

    #[test]
    fn marking_reads_back_with_getsockopt_ipv4() {
        let sock = v4();
        let before = marking_in_force(&sock).unwrap();
        assert_eq!(before.tos, 0);
        assert!(!before.df);
        let m = Marking {
            tos: Some(0xb8),
            ttl: Some(7),
            multicast: false,
            df: true,
        };
        apply_marking(&sock, &m).unwrap();
        let now = marking_in_force(&sock).unwrap();
        assert_eq!(
            now,
            MarkingInForce {
                tos: 0xb8,
                ttl: 7,
                df: true
            }
        );
    }

    #[test]
    fn marking_reads_back_with_getsockopt_ipv6() {
        let Some(sock) = v6() else {
            eprintln!("skipping: no IPv6 loopback");
            return;
        };
        apply_marking(
            &sock,
            &Marking {
                tos: Some(34 << 2),
                ttl: Some(200),
                multicast: true,
                df: true,
            },
        )
        .unwrap();
        let now = marking_in_force(&sock).unwrap();
        assert_eq!((now.tos, now.ttl, now.df), (34 << 2, 200, true));
        use std::os::fd::AsRawFd;
        let hops = crate::net::sys::getsockopt_int(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_MULTICAST_HOPS,
        )
        .unwrap();
        assert_eq!(hops, 200);
    }

    #[test]
    fn multicast_ttl_is_set_only_toward_a_group() {
        use std::os::fd::AsRawFd;
        let sock = v4();
        let mttl = |s: &UdpSocket| {
            crate::net::sys::getsockopt_int(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_MULTICAST_TTL)
                .unwrap()
        };
        let default = mttl(&sock);
        let mut m = Marking {
            ttl: Some(9),
            ..Marking::default()
        };
        apply_marking(&sock, &m).unwrap();
        assert_eq!(mttl(&sock), default);
        m.multicast = true;
        apply_marking(&sock, &m).unwrap();
        assert_eq!(mttl(&sock), 9);
    }

    #[test]
    fn dual_stack_socket_marks_ipv4_peers_too() {
        use std::os::fd::AsRawFd;
        let Ok(sock) = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)) else {
            eprintln!("skipping: no IPv6");
            return;
        };
        apply_marking(
            &sock,
            &Marking {
                tos: Some(0x28),
                ..Marking::default()
            },
        )
        .unwrap();
        let ip_tos =
            crate::net::sys::getsockopt_int(sock.as_raw_fd(), libc::IPPROTO_IP, libc::IP_TOS)
                .unwrap();
        assert_eq!(ip_tos, 0x28);
    }

    #[test]
    fn path_mtu_of_loopback_is_its_interface_mtu() {
        let sock = v4();
        let dst: SocketAddr = (Ipv4Addr::LOCALHOST, 9).into();
        sock.connect(dst).unwrap();
        apply_marking(
            &sock,
            &Marking {
                df: true,
                ..Marking::default()
            },
        )
        .unwrap();
        let mtu = path_mtu(&sock).unwrap();
        assert!(mtu >= 1280, "{mtu}");
        // Larger than the MTU with DF: refused locally with EMSGSIZE.
        let too_big = vec![0u8; (mtu as usize).min(65_000) + 100];
        if (mtu as usize) + 100 <= 65_507 {
            let e = sock.send(&too_big).unwrap_err();
            assert!(is_emsgsize(&e), "{e}");
        }
    }

    #[test]
    fn receive_marks_can_be_enabled_on_both_families() {
        enable_receive_marks(&v4()).unwrap();
        if let Some(s) = v6() {
            enable_receive_marks(&s).unwrap();
        }
    }
}
