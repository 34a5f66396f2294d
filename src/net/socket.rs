//! UDP socket creation: bind with the requested buffer sizes and receive options, report what
//! the kernel actually granted, and resolve the addresses users type.
//!
//! Buffer sizes follow the kernel's own arithmetic. On Linux `setsockopt(SO_RCVBUF, n)` stores
//! `2 * min(n, net.core.rmem_max)` (the extra half is bookkeeping overhead) and `getsockopt`
//! reports that doubled value. So on Linux a buffer counts as *clamped* when the effective
//! (getsockopt) value is below `2 * requested`; elsewhere when it is below `requested`. The
//! report shows both numbers, unadjusted.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use crate::summary::BufferInfo;

/// Largest buffer size passed to the kernel: Linux caps the doubled value at `INT_MAX`, so it
/// never stores more than `INT_MAX / 2` from a request.
const MAX_BUFFER_REQUEST: u64 = (i32::MAX / 2) as u64;

/// What to ask of a new socket. `Default` asks for nothing beyond a plain UDP socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// SO_RCVBUF in bytes (None: kernel default).
    pub rcvbuf: Option<u64>,
    /// SO_SNDBUF in bytes (None: kernel default).
    pub sndbuf: Option<u64>,
    /// Use SO_RCVBUFFORCE/SO_SNDBUFFORCE to exceed net.core.{r,w}mem_max (needs CAP_NET_ADMIN).
    pub force_buffers: bool,
    /// Ask for kernel receive timestamps (SO_TIMESTAMPNS, CLOCK_REALTIME).
    pub kernel_timestamps: bool,
    /// Ask for the receive-queue drop counter with each datagram (SO_RXQ_OVFL).
    pub rxq_overflow: bool,
    /// Ask for UDP generic receive offload (coalesced buffers split by `RecvBatch`).
    pub gro: bool,
}

/// A bound socket and what the kernel granted of the requested options.
#[derive(Debug)]
pub struct BoundSocket {
    pub socket: UdpSocket,
    pub local_addr: SocketAddr,
    pub rcvbuf: BufferInfo,
    pub sndbuf: BufferInfo,
    /// True when SO_TIMESTAMPNS is enabled (requested and accepted).
    pub kernel_timestamps: bool,
    /// True when SO_RXQ_OVFL is enabled (requested and accepted).
    pub rxq_overflow: bool,
    /// True when UDP_GRO is enabled (requested and accepted).
    pub gro: bool,
    /// One line per thing the user should know: clamped buffers, options the kernel refused.
    pub warnings: Vec<String>,
}

/// Socket set-up and address errors. Each message is one line naming the problem.
#[derive(thiserror::Error, Debug)]
pub enum NetError {
    #[error("address {0} is already in use")]
    AddrInUse(SocketAddr),
    #[error("address {0} is not available on this host (no local interface has that IP)")]
    AddrNotAvailable(SocketAddr),
    #[error("binding {0} is not permitted (ports below 1024 need root or CAP_NET_BIND_SERVICE)")]
    PermissionDenied(SocketAddr),
    #[error("cannot resolve {target:?}: {reason}")]
    Resolve { target: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl NetError {
    fn io(what: impl Into<String>, source: io::Error) -> Self {
        NetError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Creates a UDP socket bound to `addr` with the requested options.
///
/// No SO_REUSEADDR: a busy port is an error ([`NetError::AddrInUse`]), never silently shared.
/// Binding the IPv6 wildcard `[::]` clears IPV6_V6ONLY so the one socket also serves IPv4
/// peers (their addresses then appear as `[::ffff:a.b.c.d]:port`); where the OS refuses, a
/// warning says the socket is IPv6-only. Options the kernel refuses (timestamps, SO_RXQ_OVFL,
/// GRO, forced buffers) are not errors: the matching flag stays false and a warning says why.
pub fn bind(addr: SocketAddr, opts: &SocketOptions) -> Result<BoundSocket, NetError> {
    bind_socket(addr, opts, false)
}

/// Binds like [`bind`], but with SO_REUSEADDR: several group members on one host (`recv
/// --join`) bind the same group address and port, and each gets its own copy of every datagram.
pub fn bind_shared(addr: SocketAddr, opts: &SocketOptions) -> Result<BoundSocket, NetError> {
    bind_socket(addr, opts, true)
}

fn bind_socket(
    addr: SocketAddr,
    opts: &SocketOptions,
    shared: bool,
) -> Result<BoundSocket, NetError> {
    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| NetError::io(format!("creating an {family} UDP socket"), e))?;
    let mut warnings = Vec::new();

    if let IpAddr::V6(ip) = addr.ip()
        && ip.is_unspecified()
        && let Err(e) = socket.set_only_v6(false)
    {
        warnings.push(format!(
            "IPV6_V6ONLY: could not clear it ({e}); {addr} serves IPv6 peers only"
        ));
    }

    if shared {
        socket
            .set_reuse_address(true)
            .map_err(|e| NetError::io("setting SO_REUSEADDR", e))?;
    }
    socket.bind(&addr.into()).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => NetError::AddrInUse(addr),
        io::ErrorKind::AddrNotAvailable => NetError::AddrNotAvailable(addr),
        io::ErrorKind::PermissionDenied => NetError::PermissionDenied(addr),
        _ => NetError::io(format!("binding {addr}"), e),
    })?;

    let rcvbuf = configure_buffer(
        &socket,
        BufferKind::Receive,
        opts.rcvbuf,
        opts.force_buffers,
        &mut warnings,
    )?;
    let sndbuf = configure_buffer(
        &socket,
        BufferKind::Send,
        opts.sndbuf,
        opts.force_buffers,
        &mut warnings,
    )?;

    let kernel_timestamps =
        opts.kernel_timestamps && platform::enable_kernel_timestamps(&socket, &mut warnings);
    let rxq_overflow = opts.rxq_overflow && platform::enable_rxq_overflow(&socket, &mut warnings);
    let gro = opts.gro && platform::enable_gro(&socket, &mut warnings);

    let socket: UdpSocket = socket.into();
    let local_addr = socket
        .local_addr()
        .map_err(|e| NetError::io("reading the bound address", e))?;
    Ok(BoundSocket {
        socket,
        local_addr,
        rcvbuf,
        sndbuf,
        kernel_timestamps,
        rxq_overflow,
        gro,
        warnings,
    })
}

/// Binds a receiver's socket. The IPv6 wildcard `[::]` (the default of `udplab recv`) is
/// dual-stack, serving IPv4 and IPv6 peers on one socket as `iperf3 -s` does; on a host
/// without IPv6 it falls back to `0.0.0.0` with the same port, with a warning saying so.
/// Every other address binds exactly as [`bind`] does.
pub fn bind_listener(addr: SocketAddr, opts: &SocketOptions) -> Result<BoundSocket, NetError> {
    let wildcard_v6 = matches!(addr.ip(), IpAddr::V6(ip) if ip.is_unspecified());
    match bind(addr, opts) {
        Err(e) if wildcard_v6 && ipv6_unavailable(&e) => {
            let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
            let mut bound = bind(v4, opts)?;
            bound.warnings.insert(
                0,
                format!("IPv6 is not available on this host ({e}); listening on {v4}, IPv4 only"),
            );
            Ok(bound)
        }
        other => other,
    }
}

/// The error says this host has no IPv6 (no AF_INET6 sockets, or no IPv6 address to bind),
/// not that the address is busy or forbidden.
fn ipv6_unavailable(e: &NetError) -> bool {
    match e {
        NetError::AddrNotAvailable(_) => true,
        NetError::Io { source, .. } => {
            source.kind() == io::ErrorKind::Unsupported
                || source.kind() == io::ErrorKind::AddrNotAvailable
                || platform::is_family_unsupported(source)
        }
        _ => false,
    }
}

/// Which of the two socket buffers, with the names the kernel and the sysctls use for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BufferKind {
    Receive,
    Send,
}

impl BufferKind {
    fn option_name(self) -> &'static str {
        match self {
            BufferKind::Receive => "SO_RCVBUF",
            BufferKind::Send => "SO_SNDBUF",
        }
    }

    fn force_option_name(self) -> &'static str {
        match self {
            BufferKind::Receive => "SO_RCVBUFFORCE",
            BufferKind::Send => "SO_SNDBUFFORCE",
        }
    }

    fn sysctl_name(self) -> &'static str {
        match self {
            BufferKind::Receive => "net.core.rmem_max",
            BufferKind::Send => "net.core.wmem_max",
        }
    }

    fn get(self, socket: &Socket) -> io::Result<usize> {
        match self {
            BufferKind::Receive => socket.recv_buffer_size(),
            BufferKind::Send => socket.send_buffer_size(),
        }
    }

    fn set(self, socket: &Socket, size: usize) -> io::Result<()> {
        match self {
            BufferKind::Receive => socket.set_recv_buffer_size(size),
            BufferKind::Send => socket.set_send_buffer_size(size),
        }
    }
}

/// Sets one buffer as requested and reads back what the kernel granted.
fn configure_buffer(
    socket: &Socket,
    kind: BufferKind,
    requested: Option<u64>,
    force: bool,
    warnings: &mut Vec<String>,
) -> Result<BufferInfo, NetError> {
    let read_effective = |socket: &Socket| {
        kind.get(socket)
            .map(|n| n as u64)
            .map_err(|e| NetError::io(format!("reading {}", kind.option_name()), e))
    };
    let Some(requested) = requested else {
        return Ok(BufferInfo {
            requested: None,
            effective: read_effective(socket)?,
            clamped: false,
            forced: false,
        });
    };

    // Beyond what the kernel accepts: ask for the most; the clamp warning below then says
    // what was granted (one warning per buffer, not one for asking and one for getting).
    let asked = requested.min(MAX_BUFFER_REQUEST);

    let forced = force && platform::force_buffer(socket, kind, asked, warnings);
    if !forced && let Err(e) = kind.set(socket, asked as usize) {
        // Some systems (macOS, the BSDs) refuse oversized requests instead of clamping them;
        // the read-back below then shows what the socket has, and the clamp warning explains.
        warnings.push(format!(
            "{}: setting {asked} bytes failed: {e}",
            kind.option_name()
        ));
    }

    let effective = read_effective(socket)?;
    let clamped = asked < requested || effective < platform::expected_effective(asked);
    if clamped {
        warnings.push(clamp_warning(kind, requested, effective, forced));
    }
    Ok(BufferInfo {
        requested: Some(requested),
        effective,
        clamped,
        forced,
    })
}

fn clamp_warning(kind: BufferKind, requested: u64, effective: u64, forced: bool) -> String {
    let option = if forced {
        kind.force_option_name()
    } else {
        kind.option_name()
    };
    let head = format!("{option}: requested {requested} bytes, kernel gave {effective}");
    if forced {
        return head;
    }
    match platform::buffer_limit(kind) {
        Some(limit) => format!(
            "{head} (capped by {} = {limit}); raise it with `sysctl -w {}={requested}` or use \
             --force-buf as root",
            kind.sysctl_name(),
            kind.sysctl_name()
        ),
        None => format!("{head} (capped by the system's socket buffer limit)"),
    }
}

/// Resolves what a user typed as a peer or bind address.
///
/// Accepts `host:port`, `[v6]:port`, a bare IP (`127.0.0.1`, `::1`, `[::1]`) or a bare host
/// name; the last two take `default_port`. An unbracketed IPv6 address is all address:
/// `::1:5210` is the IPv6 address `::1:5210`, so write `[::1]:5210` to give a port. A name with both IPv4 and IPv6 addresses resolves
/// to its first IPv4 address, which every receiver serves (the default `[::]` dual-stack one,
/// and one bound to `0.0.0.0` or on a host without IPv6); write the IPv6 address explicitly
/// to use it.
pub fn resolve(target: &str, default_port: u16) -> Result<SocketAddr, NetError> {
    let fail = |reason: String| NetError::Resolve {
        target: target.to_string(),
        reason,
    };
    let text = target.trim();
    if text.is_empty() {
        return Err(fail("empty address".to_string()));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| SocketAddr::new(ip.into(), default_port))
            .map_err(|_| fail(format!("{inner:?} is not an IPv6 address")));
    }
    if text.starts_with('[') {
        return Err(fail(
            "expected [IPv6 address]:port, e.g. [::1]:5210".to_string(),
        ));
    }

    let (host, port) = match text.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => {
            return Err(fail(
                "IPv6 addresses with a port need brackets, e.g. [::1]:5210".to_string(),
            ));
        }
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .map_err(|_| fail(format!("invalid port {port:?} (expected 0-65535)")))?;
            (host, port)
        }
        None => (text, default_port),
    };
    if host.is_empty() {
        return Err(fail("missing host name".to_string()));
    }
    if let Some(bad) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(fail(format!("{bad:?} cannot appear in a host name")));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| fail("the name has no addresses".to_string()))
}

/// The largest SO_RCVBUF an unprivileged request gets (net.core.rmem_max), where known.
pub fn rcvbuf_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        platform::buffer_limit(BufferKind::Receive)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// True when datagrams to `ip` never leave this host: a loopback address, the unspecified
/// address (which the kernel delivers locally), or an address assigned to one of this host's
/// interfaces in the current network namespace (getifaddrs). Nothing forwards such datagrams,
/// so a GSO batch to them is split into datagrams before anything can drop it. When the
/// interface list cannot be read the answer is false: the caller then chooses as for a
/// remote host, which is the safe side. IPv4-mapped IPv6 addresses count as their IPv4 form.
pub fn is_local_destination(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback()
        || ip.is_unspecified()
        || platform::interface_addresses().is_ok_and(|own| own.contains(&ip))
}

/// `addr` as people write it: an IPv4-mapped IPv6 peer (`[::ffff:a.b.c.d]:port`, how IPv4
/// peers of a dual-stack socket appear) becomes `a.b.c.d:port`; everything else is unchanged.
/// For display and reports only: replies still go to the address the socket gave.
pub fn shown_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The wildcard address of `peer`'s family with port 0: what a sender binds before connecting.
pub fn unspecified_for(peer: &SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        SocketAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
    }
}

#[cfg(target_os = "linux")]
mod platform {
    //! Linux: forced buffers, kernel timestamps, SO_RXQ_OVFL and UDP_GRO via libc.

    use std::io;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::os::fd::AsRawFd;

    use socket2::Socket;

    use super::BufferKind;
    use crate::net::sys::setsockopt_int;

    /// The IP addresses of this network namespace's interfaces (getifaddrs).
    pub(super) fn interface_addresses() -> io::Result<Vec<IpAddr>> {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: `head` is a valid place for the list pointer; on success the list stays
        // valid until the freeifaddrs below, and nothing of it is kept past that.
        if unsafe { libc::getifaddrs(&mut head) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut node = head;
        while !node.is_null() {
            // SAFETY: `node` is a non-null element of the list getifaddrs returned.
            let ifa = unsafe { &*node };
            if !ifa.ifa_addr.is_null() {
                // SAFETY: a non-null ifa_addr points to a sockaddr whose sa_family tells its
                // real type; it is read unaligned, at the size that family guarantees.
                let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
                if family == libc::AF_INET {
                    // SAFETY: as above, an AF_INET sockaddr is a sockaddr_in.
                    let sin = unsafe {
                        std::ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in>())
                    };
                    out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))));
                } else if family == libc::AF_INET6 {
                    // SAFETY: as above, an AF_INET6 sockaddr is a sockaddr_in6.
                    let sin6 = unsafe {
                        std::ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in6>())
                    };
                    out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                }
            }
            node = ifa.ifa_next;
        }
        // SAFETY: `head` came from a successful getifaddrs and is freed exactly once.
        unsafe { libc::freeifaddrs(head) };
        Ok(out)
    }

    /// The kernel has no such address family (IPv6 disabled at boot, or no IPv6 module).
    pub(super) fn is_family_unsupported(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EAFNOSUPPORT | libc::EPFNOSUPPORT | libc::EPROTONOSUPPORT)
        )
    }

    /// Linux reports twice the stored request (see the module comment).
    pub(super) fn expected_effective(asked: u64) -> u64 {
        asked * 2
    }

    /// net.core.rmem_max / wmem_max, read fresh so the warning shows the current limit.
    pub(super) fn buffer_limit(kind: BufferKind) -> Option<u64> {
        let path = match kind {
            BufferKind::Receive => "/proc/sys/net/core/rmem_max",
            BufferKind::Send => "/proc/sys/net/core/wmem_max",
        };
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Tries SO_*BUFFORCE; false (with a warning) when not permitted, so the caller falls
    /// back to the ordinary option.
    pub(super) fn force_buffer(
        socket: &Socket,
        kind: BufferKind,
        asked: u64,
        warnings: &mut Vec<String>,
    ) -> bool {
        let name = match kind {
            BufferKind::Receive => libc::SO_RCVBUFFORCE,
            BufferKind::Send => libc::SO_SNDBUFFORCE,
        };
        // `asked` ≤ INT_MAX / 2 (MAX_BUFFER_REQUEST), so the cast is lossless.
        match setsockopt_int(socket.as_raw_fd(), libc::SOL_SOCKET, name, asked as i32) {
            Ok(()) => true,
            Err(e) => {
                let why = if e.raw_os_error() == Some(libc::EPERM) {
                    "not permitted (needs root or CAP_NET_ADMIN)".to_string()
                } else {
                    e.to_string()
                };
                warnings.push(format!(
                    "{}: {why}; used {} instead",
                    kind.force_option_name(),
                    kind.option_name()
                ));
                false
            }
        }
    }

    fn enable(
        socket: &Socket,
        level: libc::c_int,
        name: libc::c_int,
        what: &str,
        consequence: &str,
        warnings: &mut Vec<String>,
    ) -> bool {
        match setsockopt_int(socket.as_raw_fd(), level, name, 1) {
            Ok(()) => true,
            Err(e) => {
                warnings.push(warning(what, &e, consequence));
                false
            }
        }
    }

    fn warning(what: &str, e: &io::Error, consequence: &str) -> String {
        format!("{what}: the kernel refused it ({e}); {consequence}")
    }

    pub(super) fn enable_kernel_timestamps(socket: &Socket, warnings: &mut Vec<String>) -> bool {
        enable(
            socket,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            "SO_TIMESTAMPNS",
            "receive times are read in user space",
            warnings,
        )
    }

    pub(super) fn enable_rxq_overflow(socket: &Socket, warnings: &mut Vec<String>) -> bool {
        enable(
            socket,
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            "SO_RXQ_OVFL",
            "receive-buffer drops cannot be told apart from path loss",
            warnings,
        )
    }

    pub(super) fn enable_gro(socket: &Socket, warnings: &mut Vec<String>) -> bool {
        enable(
            socket,
            libc::SOL_UDP,
            libc::UDP_GRO,
            "UDP_GRO",
            "datagrams are received one by one",
            warnings,
        )
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    //! Elsewhere: plain socket2 options only; the Linux extras are reported as unavailable.

    use socket2::Socket;

    use super::BufferKind;

    pub(super) fn expected_effective(asked: u64) -> u64 {
        asked
    }

    /// Off Linux, std's error kinds are what is known.
    pub(super) fn is_family_unsupported(e: &std::io::Error) -> bool {
        e.kind() == std::io::ErrorKind::Unsupported
    }

    /// Not read off Linux: only loopback and unspecified destinations count as local there.
    pub(super) fn interface_addresses() -> std::io::Result<Vec<std::net::IpAddr>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "interface addresses are read on Linux only",
        ))
    }

    pub(super) fn buffer_limit(_kind: BufferKind) -> Option<u64> {
        None
    }

    pub(super) fn force_buffer(
        _socket: &Socket,
        kind: BufferKind,
        _asked: u64,
        warnings: &mut Vec<String>,
    ) -> bool {
        warnings.push(format!(
            "{}: Linux only; used {} instead",
            kind.force_option_name(),
            kind.option_name()
        ));
        false
    }

    fn unavailable(what: &str, consequence: &str, warnings: &mut Vec<String>) -> bool {
        warnings.push(format!(
            "{what}: not available on this platform; {consequence}"
        ));
        false
    }

    pub(super) fn enable_kernel_timestamps(_socket: &Socket, warnings: &mut Vec<String>) -> bool {
        unavailable(
            "SO_TIMESTAMPNS",
            "receive times are read in user space",
            warnings,
        )
    }

    pub(super) fn enable_rxq_overflow(_socket: &Socket, warnings: &mut Vec<String>) -> bool {
        unavailable(
            "SO_RXQ_OVFL",
            "receive-buffer drops cannot be told apart from path loss",
            warnings,
        )
    }

    pub(super) fn enable_gro(_socket: &Socket, warnings: &mut Vec<String>) -> bool {
        unavailable("UDP_GRO", "datagrams are received one by one", warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_v4() -> SocketAddr {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)
    }

    #[test]
    fn bind_reports_the_local_address() {
        let bound = bind(loopback_v4(), &SocketOptions::default()).unwrap();
        assert_eq!(bound.local_addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_ne!(bound.local_addr.port(), 0);
        assert_eq!(bound.socket.local_addr().unwrap(), bound.local_addr);
        assert!(bound.warnings.is_empty(), "{:?}", bound.warnings);
        assert_eq!(bound.rcvbuf.requested, None);
        assert!(bound.rcvbuf.effective > 0);
        assert!(!bound.rcvbuf.clamped && !bound.rcvbuf.forced);
    }

    #[test]
    fn binding_a_busy_address_is_addr_in_use() {
        let first = bind(loopback_v4(), &SocketOptions::default()).unwrap();
        let err = bind(first.local_addr, &SocketOptions::default()).unwrap_err();
        assert!(
            matches!(err, NetError::AddrInUse(a) if a == first.local_addr),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("address {} is already in use", first.local_addr)
        );
    }

    #[test]
    fn binding_a_foreign_address_is_addr_not_available() {
        // 192.0.2.0/24 is TEST-NET-1: never assigned to a host.
        let addr: SocketAddr = "192.0.2.1:0".parse().unwrap();
        let err = bind(addr, &SocketOptions::default()).unwrap_err();
        assert!(
            matches!(err, NetError::AddrNotAvailable(a) if a == addr),
            "{err:?}"
        );
    }

    #[test]
    fn ipv6_loopback_binds_where_present() {
        let addr = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 0);
        match bind(addr, &SocketOptions::default()) {
            Ok(bound) => {
                assert_eq!(bound.local_addr.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
                assert_ne!(bound.local_addr.port(), 0);
            }
            Err(e) => eprintln!("skipping: IPv6 loopback not available here ({e})"),
        }
    }

    #[test]
    fn ipv6_wildcard_also_serves_ipv4() {
        let addr = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0);
        let bound = match bind(addr, &SocketOptions::default()) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("skipping: IPv6 not available here ({e})");
                return;
            }
        };
        if !bound.warnings.is_empty() {
            eprintln!("skipping: dual-stack refused: {:?}", bound.warnings);
            return;
        }
        let port = bound.local_addr.port();
        bound
            .socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let sender = UdpSocket::bind(loopback_v4()).unwrap();
        sender.send_to(b"v4", (Ipv4Addr::LOCALHOST, port)).unwrap();
        let mut buf = [0u8; 16];
        let (n, src) = bound.socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"v4");
        let SocketAddr::V6(src) = src else {
            panic!("expected a v4-mapped IPv6 source, got {src}")
        };
        assert_eq!(src.ip().to_ipv4_mapped(), Some(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn a_modest_buffer_request_is_granted() {
        const ONE_MIB: u64 = 1 << 20;
        let opts = SocketOptions {
            rcvbuf: Some(ONE_MIB),
            sndbuf: Some(ONE_MIB),
            ..SocketOptions::default()
        };
        let bound = bind(loopback_v4(), &opts).unwrap();
        for info in [bound.rcvbuf, bound.sndbuf] {
            assert_eq!(info.requested, Some(ONE_MIB));
            assert!(info.effective >= ONE_MIB, "{info:?}");
            assert!(!info.clamped && !info.forced, "{info:?}");
        }
        #[cfg(target_os = "linux")]
        assert_eq!(bound.rcvbuf.effective, 2 * ONE_MIB, "Linux reports twice");
        assert!(bound.warnings.is_empty(), "{:?}", bound.warnings);
    }

    /// A request above net.core.rmem_max (64 MiB, or twice the limit if that is larger).
    #[cfg(target_os = "linux")]
    fn oversized_rcvbuf_request() -> Option<(u64, u64)> {
        let limit = platform::buffer_limit(BufferKind::Receive)?;
        let request = (64u64 << 20).max(limit * 2);
        (request <= MAX_BUFFER_REQUEST).then_some((request, limit))
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_oversized_buffer_request_is_clamped_with_a_warning() {
        let Some((request, limit)) = oversized_rcvbuf_request() else {
            eprintln!("skipping: net.core.rmem_max is too large to exceed");
            return;
        };
        let opts = SocketOptions {
            rcvbuf: Some(request),
            ..SocketOptions::default()
        };
        let bound = bind(loopback_v4(), &opts).unwrap();
        assert!(bound.rcvbuf.clamped, "{:?}", bound.rcvbuf);
        assert!(!bound.rcvbuf.forced);
        assert_eq!(bound.rcvbuf.effective, 2 * limit);
        assert_eq!(bound.warnings.len(), 1, "{:?}", bound.warnings);
        let expected = format!(
            "SO_RCVBUF: requested {request} bytes, kernel gave {} (capped by net.core.rmem_max = \
             {limit}); raise it with `sysctl -w net.core.rmem_max={request}` or use --force-buf \
             as root",
            2 * limit
        );
        assert_eq!(bound.warnings[0], expected);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn forced_buffers_exceed_the_limit_or_fall_back_with_a_warning() {
        let Some((request, _limit)) = oversized_rcvbuf_request() else {
            eprintln!("skipping: net.core.rmem_max is too large to exceed");
            return;
        };
        let opts = SocketOptions {
            rcvbuf: Some(request),
            force_buffers: true,
            ..SocketOptions::default()
        };
        let bound = bind(loopback_v4(), &opts).unwrap();
        if bound.rcvbuf.forced {
            assert_eq!(bound.rcvbuf.effective, 2 * request);
            assert!(!bound.rcvbuf.clamped);
            assert!(bound.warnings.is_empty(), "{:?}", bound.warnings);
        } else {
            // Without CAP_NET_ADMIN: the fallback is announced, then the clamp.
            assert!(bound.rcvbuf.clamped);
            assert!(
                bound.warnings[0].starts_with("SO_RCVBUFFORCE: not permitted"),
                "{:?}",
                bound.warnings
            );
            assert!(bound.warnings[1].contains("net.core.rmem_max"));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn receive_options_are_enabled_on_linux() {
        let opts = SocketOptions {
            kernel_timestamps: true,
            rxq_overflow: true,
            gro: true,
            ..SocketOptions::default()
        };
        let bound = bind(loopback_v4(), &opts).unwrap();
        assert!(bound.kernel_timestamps && bound.rxq_overflow && bound.gro);
        assert!(bound.warnings.is_empty(), "{:?}", bound.warnings);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&bound.socket);
        let get = |level, name| crate::net::sys::getsockopt_int(fd, level, name).unwrap();
        assert_eq!(get(libc::SOL_SOCKET, libc::SO_TIMESTAMPNS), 1);
        assert_eq!(get(libc::SOL_SOCKET, libc::SO_RXQ_OVFL), 1);
        assert_eq!(get(libc::SOL_UDP, libc::UDP_GRO), 1);
    }

    #[test]
    fn resolve_accepts_the_usual_forms() {
        let v4: SocketAddr = "127.0.0.1:5210".parse().unwrap();
        let v6: SocketAddr = "[::1]:5210".parse().unwrap();
        assert_eq!(resolve("127.0.0.1:5210", 1).unwrap(), v4);
        assert_eq!(resolve("127.0.0.1", 5210).unwrap(), v4);
        assert_eq!(resolve(" 127.0.0.1 ", 5210).unwrap(), v4);
        assert_eq!(resolve("[::1]:5210", 1).unwrap(), v6);
        assert_eq!(resolve("::1", 5210).unwrap(), v6);
        assert_eq!(resolve("[::1]", 5210).unwrap(), v6);
        let local = resolve("localhost:7", 1).unwrap();
        assert!(local.ip().is_loopback(), "{local}");
        assert_eq!(local.port(), 7);
        assert_eq!(resolve("localhost", 5210).unwrap().port(), 5210);
    }

    #[test]
    fn resolve_rejects_bad_input_with_a_reason() {
        let reason = |t: &str| match resolve(t, 5210) {
            Err(NetError::Resolve { target, reason }) => {
                assert_eq!(target, t);
                reason
            }
            other => panic!("{t:?}: expected a Resolve error, got {other:?}"),
        };
        assert_eq!(reason(""), "empty address");
        assert!(reason("127.0.0.1:99999").contains("invalid port"));
        assert!(reason("127.0.0.1:http").contains("invalid port"));
        assert!(reason("::1:http").contains("need brackets"));
        // Without brackets a trailing number is part of the IPv6 address, never a port.
        assert_eq!(
            resolve("::1:5210", 7).unwrap(),
            SocketAddr::new("::1:5210".parse::<IpAddr>().unwrap(), 7)
        );
        assert!(reason("[::1").contains("expected [IPv6 address]:port"));
        assert!(reason("[nope]").contains("not an IPv6 address"));
        assert_eq!(reason(":5210"), "missing host name");
        // Checked before any lookup, so no DNS server is involved.
        assert_eq!(reason("no such host"), "' ' cannot appear in a host name");
        let err = resolve("bad/host:1", 5210).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot resolve \"bad/host:1\": '/' cannot appear in a host name"
        );
    }

    #[test]
    fn unspecified_matches_the_family() {
        let v4: SocketAddr = "10.1.2.3:9".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        assert_eq!(unspecified_for(&v4), "0.0.0.0:0".parse().unwrap());
        assert_eq!(unspecified_for(&v6), "[::]:0".parse().unwrap());
    }

    #[test]
    fn loopback_and_own_addresses_are_local_destinations() {
        for ip in [
            "127.0.0.1",
            "127.0.0.2",
            "::1",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_local_destination(ip), "{ip}");
        }
        // TEST-NET and documentation addresses are never assigned to a test machine.
        for ip in [
            "192.0.2.1",
            "198.51.100.7",
            "2001:db8::1",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_local_destination(ip), "{ip}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_address_of_this_hosts_interfaces_is_local() {
        let own = platform::interface_addresses().expect("getifaddrs");
        assert!(
            own.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "lo's 127.0.0.1 is listed: {own:?}"
        );
        // A non-loopback address of this host (where there is one) is local too: the kernel
        // delivers datagrams to it through lo, never forwarding them.
        for ip in own {
            assert!(is_local_destination(ip), "{ip}");
        }
    }

    #[test]
    fn ipv4_mapped_peers_are_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5210".parse().unwrap();
        assert_eq!(shown_addr(mapped).to_string(), "127.0.0.1:5210");
        for unchanged in ["[::1]:5210", "127.0.0.1:9", "[2001:db8::1]:1"] {
            let a: SocketAddr = unchanged.parse().unwrap();
            assert_eq!(shown_addr(a), a);
        }
    }

    #[test]
    fn a_dual_stack_listener_serves_ipv4_and_ipv6() {
        let bound = bind_listener("[::]:0".parse().unwrap(), &SocketOptions::default())
            .expect("[::] binds, or falls back to 0.0.0.0");
        if bound.local_addr.is_ipv4() {
            eprintln!("no IPv6 here: fell back to {}", bound.local_addr);
            assert!(
                bound.warnings[0].contains("IPv4 only"),
                "{:?}",
                bound.warnings
            );
            return;
        }
        assert!(bound.warnings.is_empty(), "{:?}", bound.warnings);
        bound
            .socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let port = bound.local_addr.port();
        let v4 = UdpSocket::bind(loopback_v4()).unwrap();
        v4.send_to(b"v4", (Ipv4Addr::LOCALHOST, port)).unwrap();
        let mut buf = [0u8; 16];
        let (_, src) = bound.socket.recv_from(&mut buf).unwrap();
        assert_eq!(shown_addr(src), v4.local_addr().unwrap());
        // Replies to the v4-mapped address reach the IPv4 peer.
        bound.socket.send_to(b"back", src).unwrap();
        v4.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let (n, from) = v4.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"back");
        assert_eq!(from.port(), port);
    }

    #[test]
    fn only_a_missing_ipv6_falls_back() {
        let wildcard: SocketAddr = "[::]:5210".parse().unwrap();
        assert!(ipv6_unavailable(&NetError::AddrNotAvailable(wildcard)));
        assert!(ipv6_unavailable(&NetError::io(
            "creating an IPv6 UDP socket",
            io::Error::from(io::ErrorKind::Unsupported)
        )));
        #[cfg(target_os = "linux")]
        assert!(ipv6_unavailable(&NetError::io(
            "creating an IPv6 UDP socket",
            io::Error::from_raw_os_error(libc::EAFNOSUPPORT)
        )));
        // A busy port or a forbidden one is the user's to fix, never silently moved.
        assert!(!ipv6_unavailable(&NetError::AddrInUse(wildcard)));
        assert!(!ipv6_unavailable(&NetError::PermissionDenied(wildcard)));
        #[cfg(target_os = "linux")]
        assert!(!ipv6_unavailable(&NetError::io(
            "binding [::]:5210",
            io::Error::from_raw_os_error(libc::EACCES)
        )));
    }

    #[test]
    fn errors_are_one_line() {
        let err = NetError::io(
            "binding 127.0.0.1:1",
            io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        assert!(!err.to_string().contains('\n'));
        assert!(err.to_string().starts_with("binding 127.0.0.1:1: "));
    }
}
