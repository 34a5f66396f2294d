//! Batched datagram I/O on a bound socket: `recvmmsg` with kernel timestamps, the SO_RXQ_OVFL
//! drop counter and GRO splitting on receive; `send`, `sendmmsg` or UDP GSO on send. Linux
//! first; elsewhere the same API falls back to one plain `recv_from`/`send` per datagram.

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;

// The API contract lists these with the batch calls; they live in their own modules.
pub use super::cpu::{parse_cpu_list, pin_current_thread};
pub use super::snmp::{UdpSnmp, udp_snmp, udp6_snmp};

/// Largest UDP payload over IPv4 (65535 − 20 − 8); also safe for IPv6.
const MAX_UDP_PAYLOAD: usize = 65_507;
/// The kernel's cap on segments in one GSO send (UDP_MAX_SEGMENTS on older kernels).
const MAX_GSO_SEGMENTS: usize = 64;
/// The kernel caps one recvmmsg/sendmmsg call at UIO_MAXIOV messages.
const MAX_BATCH: usize = 1024;

/// What the kernel said about one received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes of this datagram in the buffer.
    pub len: usize,
    /// Sender's address (IPv4 peers of a dual-stack socket appear v4-mapped).
    pub src: SocketAddr,
    /// Kernel receive time, CLOCK_REALTIME nanoseconds since the epoch (SO_TIMESTAMPNS).
    pub kernel_ts_ns: Option<u64>,
    /// The datagram was longer than the buffer and was cut (MSG_TRUNC); `len` is what was kept.
    pub truncated: bool,
    /// The IPv4 TOS / IPv6 traffic-class byte it arrived with (IP_RECVTOS / IPV6_RECVTCLASS,
    /// see `sockopts::enable_receive_marks`); None when not asked for or not reported.
    pub tos: Option<u8>,
    /// The IPv4 TTL / IPv6 hop limit it arrived with (IP_RECVTTL / IPV6_RECVHOPLIMIT).
    pub ttl: Option<u8>,
}

/// One datagram's place in the receive buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    offset: usize,
    meta: RecvMeta,
}

/// Splits one received buffer into its datagrams: `stride` is the UDP_GRO segment size when the
/// kernel coalesced several datagrams, each `stride` bytes except perhaps the last.
fn push_segments(
    out: &mut Vec<Segment>,
    base_offset: usize,
    meta: RecvMeta,
    stride: Option<usize>,
) {
    let stride = match stride {
        Some(s) if s > 0 && s < meta.len => s,
        _ => {
            out.push(Segment {
                offset: base_offset,
                meta,
            });
            return;
        }
    };
    let mut start = 0;
    while start < meta.len {
        let len = stride.min(meta.len - start);
        let is_last = start + len == meta.len;
        out.push(Segment {
            offset: base_offset + start,
            meta: RecvMeta {
                len,
                // Only the tail of a cut buffer is incomplete.
                truncated: meta.truncated && is_last,
                ..meta
            },
        });
        start += len;
    }
}

/// The socket's cumulative drop count, widened to u64 across the kernel's u32 wrap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DropCounter {
    last_raw: Option<u32>,
    total: u64,
}

impl DropCounter {
    /// Takes a raw kernel value. Values arrive in queue order, so they never go backwards
    /// except across the u32 wrap, or when a value stamped at enqueue time is older than one
    /// read directly (SO_MEMINFO); forward distances below 2^31 count as growth, anything
    /// else as such a stale value.
    // Only Linux reports drop counts (SO_RXQ_OVFL, SO_MEMINFO); the fallback never calls this.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn observe(&mut self, raw: u32) {
        match self.last_raw {
            None => {
                // The kernel counts from socket creation.
                self.total = u64::from(raw);
                self.last_raw = Some(raw);
            }
            Some(last) => {
                let delta = raw.wrapping_sub(last);
                if delta != 0 && delta < 1 << 31 {
                    self.total += u64::from(delta);
                    self.last_raw = Some(raw);
                }
            }
        }
    }

    fn total(&self) -> Option<u64> {
        self.last_raw.map(|_| self.total)
    }
}

/// Receive buffers for one socket, allocated once and reused by every [`RecvBatch::recv`].
pub struct RecvBatch {
    buf_size: usize,
    bufs: Vec<u8>,
    segments: Vec<Segment>,
    drops: DropCounter,
    #[cfg(target_os = "linux")]
    sys: linux::RecvState,
}

impl fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBatch")
            .field("batch", &(self.bufs.len() / self.buf_size))
            .field("buf_size", &self.buf_size)
            .field("datagrams", &self.segments.len())
            .field("drops", &self.drops)
            .finish()
    }
}

impl RecvBatch {
    /// Room for `batch` messages of `buf_size` bytes each (with GRO use 65536, the largest
    /// coalesced buffer). `batch` is kept within 1..=1024 (the kernel's per-call limit) and
    /// `buf_size` at least 1.
    pub fn new(batch: usize, buf_size: usize) -> Self {
        let batch = batch.clamp(1, MAX_BATCH);
        let buf_size = buf_size.max(1);
        RecvBatch {
            buf_size,
            bufs: vec![0; batch * buf_size],
            // One entry per message; GRO buffers split into more grow it once, and `clear`
            // keeps the capacity, so the steady state allocates nothing.
            segments: Vec::with_capacity(batch),
            drops: DropCounter::default(),
            #[cfg(target_os = "linux")]
            sys: linux::RecvState::new(batch),
        }
    }

    /// One recvmmsg (MSG_WAITFORONE): blocks for the first datagram up to the socket's read
    /// timeout, then takes whatever else is already queued, up to the batch size. Returns how
    /// many datagrams are available through [`get`](Self::get) (GRO buffers split into their
    /// segments). A timeout is `Err` with kind `WouldBlock` (or `TimedOut`); EINTR is retried.
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        self.segments.clear();
        self.recv_platform(sock)?;
        Ok(self.segments.len())
    }

    #[cfg(target_os = "linux")]
    fn recv_platform(&mut self, sock: &UdpSocket) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let count = self
            .sys
            .receive(sock.as_raw_fd(), &mut self.bufs, self.buf_size)?;
        for i in 0..count {
            let msg = self.sys.message(i, self.buf_size);
            if let Some(raw) = msg.drops {
                self.drops.observe(raw);
            }
            push_segments(
                &mut self.segments,
                i * self.buf_size,
                msg.meta,
                msg.gro_stride,
            );
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn recv_platform(&mut self, sock: &UdpSocket) -> io::Result<()> {
        let (len, src) = loop {
            match sock.recv_from(&mut self.bufs[..self.buf_size]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        let meta = RecvMeta {
            len: len.min(self.buf_size),
            src,
            kernel_ts_ns: None,
            truncated: false,
            tos: None,
            ttl: None,
        };
        push_segments(&mut self.segments, 0, meta, None);
        Ok(())
    }

    /// Datagram `i` of the last [`recv`](Self::recv) (`i` < the count it returned). GRO
    /// segments share their buffer's meta (source, timestamp). Panics when `i` is out of range.
    pub fn get(&self, i: usize) -> (&[u8], &RecvMeta) {
        let seg = &self.segments[i];
        (&self.bufs[seg.offset..seg.offset + seg.meta.len], &seg.meta)
    }

    /// The datagrams of the last [`recv`](Self::recv), in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &RecvMeta)> + '_ {
        self.segments
            .iter()
            .map(|seg| (&self.bufs[seg.offset..seg.offset + seg.meta.len], &seg.meta))
    }

    /// The latest cumulative count of datagrams the kernel dropped on this socket because its
    /// receive buffer was full (SO_RXQ_OVFL), as a u64 that survives the kernel's u32 wrap.
    ///
    /// The kernel attaches the counter to a datagram only once it is non-zero, and stamps it
    /// when the datagram is queued: `None` with SO_RXQ_OVFL enabled means no drop has been
    /// seen yet, and drops after the last queued datagram show only with the next one. Call
    /// [`refresh_rxq_dropped`](Self::refresh_rxq_dropped) at the end of a test to read the
    /// counter as it is now.
    pub fn rxq_dropped(&self) -> Option<u64> {
        self.drops.total()
    }

    /// Reads the socket's drop counter now (SO_MEMINFO, Linux ≥ 4.6), folds it into
    /// [`rxq_dropped`](Self::rxq_dropped) and returns the result, `Some(0)` when nothing was
    /// dropped. Works whether or not SO_RXQ_OVFL is enabled. Unsupported elsewhere.
    pub fn refresh_rxq_dropped(&mut self, sock: &UdpSocket) -> io::Result<Option<u64>> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let raw = super::sys::socket_drops(sock.as_raw_fd())?;
            self.drops.observe(raw);
            Ok(self.drops.total())
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = sock;
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "reading the socket drop counter needs Linux",
            ))
        }
    }
}

/// How the sender hands datagrams to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendMode {
    /// One `send()` per datagram.
    #[default]
    Plain,
    /// Up to 64 datagrams per `sendmmsg()` (Linux; plain sends elsewhere).
    Mmsg,
    /// One `sendmsg()` with UDP_SEGMENT: the kernel splits the buffer (Linux ≥ 4.18).
    Gso,
}

impl SendMode {
    fn name(self) -> &'static str {
        match self {
            SendMode::Plain => "plain",
            SendMode::Mmsg => "mmsg",
            SendMode::Gso => "gso",
        }
    }
}

impl fmt::Display for SendMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SendMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [SendMode::Plain, SendMode::Mmsg, SendMode::Gso]
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown send mode {s:?} (expected plain, mmsg or gso)"))
    }
}

/// The mode `--send-mode auto` uses: GSO only toward a destination on this host, where the
/// kernel splits each batch before anything could drop it; sendmmsg (one packet per datagram,
/// still one syscall per batch) toward every other host. A GSO super-packet can cross veth
/// pairs, bridges, container networks and many virtual NICs unsegmented, so a drop on the way
/// (a router's queue, a firewall rule) takes the whole batch and the receiver sees burst loss
/// the path would not inflict on separate datagrams. Plain sends where neither is available.
pub fn auto_send_mode(destination_is_local: bool, gso_supported: bool) -> SendMode {
    if destination_is_local && gso_supported {
        SendMode::Gso
    } else if cfg!(target_os = "linux") {
        SendMode::Mmsg
    } else {
        SendMode::Plain
    }
}

/// Whether the kernel accepts UDP_SEGMENT on this socket (getsockopt probe; Linux ≥ 4.18).
///
/// A `true` here can still meet EIO at send time when the route's device has no checksum
/// offload; callers should then fall back to [`SendMode::Mmsg`].
pub fn gso_supported(sock: &UdpSocket) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        super::sys::getsockopt_int(sock.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = sock;
        false
    }
}

/// How many `seg_size`-byte datagrams fit in one GSO send: min(64, 65507 / seg_size), ≥ 1.
pub fn max_gso_segments(seg_size: usize) -> usize {
    MAX_UDP_PAYLOAD
        .checked_div(seg_size)
        .unwrap_or(1)
        .clamp(1, MAX_GSO_SEGMENTS)
}

/// Sends `count` datagrams of `seg_size` bytes laid out back to back at the start of `buf` on
/// a *connected* socket.
///
/// Returns how many the kernel accepted. An error before the first datagram is `Err`; an
/// error after some were sent returns `Ok(n)` with `n < count` (the next call reports the
/// error). Gso sends all or nothing and needs `count ≤ max_gso_segments(seg_size)`. A `buf`
/// shorter than `count * seg_size`, a zero `seg_size` or too many GSO segments is
/// `InvalidInput`; Gso off Linux is `Unsupported`. EINTR is retried.
pub fn send_batch(
    sock: &UdpSocket,
    mode: SendMode,
    buf: &[u8],
    seg_size: usize,
    count: usize,
) -> io::Result<usize> {
    if count == 0 {
        return Ok(0);
    }
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    if seg_size == 0 {
        return Err(invalid("datagram size 0".to_string()));
    }
    let needed = seg_size
        .checked_mul(count)
        .filter(|&n| n <= buf.len())
        .ok_or_else(|| {
            invalid(format!(
                "buffer of {} bytes is too short for {count} datagrams of {seg_size} bytes",
                buf.len()
            ))
        })?;
    let buf = &buf[..needed];
    match mode {
        SendMode::Plain => send_plain(sock, buf, seg_size),
        SendMode::Mmsg => send_mmsg(sock, buf, seg_size),
        SendMode::Gso => {
            let max = max_gso_segments(seg_size);
            if count > max || seg_size > MAX_UDP_PAYLOAD {
                return Err(invalid(format!(
                    "{count} datagrams of {seg_size} bytes exceed one GSO send (max {max})"
                )));
            }
            if count == 1 {
                // A single segment needs no offload; some drivers dislike GSO of one.
                return send_plain(sock, buf, seg_size);
            }
            send_gso(sock, buf, seg_size)
        }
    }
}

fn send_plain(sock: &UdpSocket, buf: &[u8], seg_size: usize) -> io::Result<usize> {
    let mut sent = 0;
    for datagram in buf.chunks_exact(seg_size) {
        let result = loop {
            match sock.send(datagram) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        if let Err(e) = result {
            return if sent == 0 { Err(e) } else { Ok(sent) };
        }
        sent += 1;
    }
    Ok(sent)
}

#[cfg(not(target_os = "linux"))]
fn send_mmsg(sock: &UdpSocket, buf: &[u8], seg_size: usize) -> io::Result<usize> {
    send_plain(sock, buf, seg_size)
}

#[cfg(target_os = "linux")]
fn send_mmsg(sock: &UdpSocket, buf: &[u8], seg_size: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    linux::send_mmsg(sock.as_raw_fd(), buf, seg_size)
}

#[cfg(not(target_os = "linux"))]
fn send_gso(_sock: &UdpSocket, _buf: &[u8], _seg_size: usize) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "UDP GSO needs Linux",
    ))
}

#[cfg(target_os = "linux")]
fn send_gso(sock: &UdpSocket, buf: &[u8], seg_size: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    linux::send_gso(sock.as_raw_fd(), buf, seg_size)
}

/// Sends datagrams of any sizes on a *connected* socket: sendmmsg on Linux, one send each
/// elsewhere. Returns how many were handed to the kernel; an error before the first is Err.
pub fn send_each(sock: &UdpSocket, datagrams: &[&[u8]]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        linux::send_mmsg_slices(sock.as_raw_fd(), datagrams)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut sent = 0;
        for d in datagrams {
            if let Err(e) = sock.send(d) {
                return if sent == 0 { Err(e) } else { Ok(sent) };
            }
            sent += 1;
        }
        Ok(sent)
    }
}

/// The kernel ran out of buffer space for an outgoing datagram (ENOBUFS).
pub fn is_enobufs(e: &io::Error) -> bool {
    #[cfg(unix)]
    const ENOBUFS: Option<i32> = Some(libc::ENOBUFS);
    #[cfg(windows)]
    const ENOBUFS: Option<i32> = Some(10055); // WSAENOBUFS
    #[cfg(not(any(unix, windows)))]
    const ENOBUFS: Option<i32> = None;
    ENOBUFS.is_some() && e.raw_os_error() == ENOBUFS
}

/// A GSO send the kernel or the route will not do, so the caller should fall back to
/// [`SendMode::Mmsg`]: EIO (the device has no checksum offload), EINVAL (a segment larger than
/// the path MTU, too many segments), ENOPROTOOPT/EOPNOTSUPP (no UDP_SEGMENT in this kernel),
/// or `Unsupported` (GSO off Linux).
pub fn is_gso_refused(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::Unsupported {
        return true;
    }
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
        )
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// The socket would block (EAGAIN/EWOULDBLOCK): send buffer full, or a read timeout expired.
pub fn is_eagain(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

#[cfg(target_os = "linux")]
mod linux {
    //! The libc side of batched I/O: recvmmsg state, cmsg parsing, sendmmsg and GSO sends.

    use std::io;
    use std::mem;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::RawFd;
    use std::ptr;

    use super::RecvMeta;

    /// Control-message space per datagram: a timespec (32 bytes with header), SO_RXQ_OVFL,
    /// UDP_GRO, the TOS and the TTL (24 each), with room to spare for anything else the
    /// kernel adds (a full buffer silently loses the last messages: MSG_CTRUNC).
    const CONTROL_LEN: usize = 192;
    /// Datagrams per sendmmsg call; the header arrays live on the stack.
    const MMSG_CHUNK: usize = 64;

    /// Control buffer aligned for `cmsghdr` (whose alignment is at most 8 on Linux).
    #[derive(Clone, Copy)]
    #[repr(C, align(8))]
    struct ControlBuf([u8; CONTROL_LEN]);

    /// What one recvmmsg slot held, decoded.
    pub(super) struct Message {
        pub(super) meta: RecvMeta,
        pub(super) gro_stride: Option<usize>,
        pub(super) drops: Option<u32>,
    }

    /// The per-message kernel structures of a `RecvBatch`, allocated once.
    pub(super) struct RecvState {
        names: Vec<libc::sockaddr_storage>,
        controls: Vec<ControlBuf>,
        iovecs: Vec<libc::iovec>,
        headers: Vec<libc::mmsghdr>,
    }

    // SAFETY: the raw pointers inside `iovecs` and `headers` only ever point into buffers
    // owned by the same `RecvBatch`; they are rewritten before every recvmmsg call and are
    // never dereferenced by Rust code except while `&self`/`&mut self` is held, so moving the
    // state to another thread cannot create shared access.
    unsafe impl Send for RecvState {}

    impl RecvState {
        pub(super) fn new(batch: usize) -> Self {
            // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all
            // zero bytes is a valid value (null pointers, zero lengths, AF_UNSPEC).
            let (name, iovec, header) = unsafe {
                (
                    mem::zeroed::<libc::sockaddr_storage>(),
                    mem::zeroed::<libc::iovec>(),
                    mem::zeroed::<libc::mmsghdr>(),
                )
            };
            RecvState {
                names: vec![name; batch],
                controls: vec![ControlBuf([0; CONTROL_LEN]); batch],
                iovecs: vec![iovec; batch],
                headers: vec![header; batch],
            }
        }

        /// One recvmmsg into `bufs` (`headers.len()` slots of `buf_size` bytes each).
        pub(super) fn receive(
            &mut self,
            fd: RawFd,
            bufs: &mut [u8],
            buf_size: usize,
        ) -> io::Result<usize> {
            let slots = self.headers.len();
            assert!(bufs.len() >= slots * buf_size, "receive buffers too small");
            let base = bufs.as_mut_ptr();
            for i in 0..slots {
                self.iovecs[i] = libc::iovec {
                    // SAFETY: i * buf_size + buf_size ≤ bufs.len() (asserted above), so the
                    // offset stays inside the allocation.
                    iov_base: unsafe { base.add(i * buf_size) }.cast(),
                    iov_len: buf_size,
                };
                let hdr = &mut self.headers[i];
                hdr.msg_len = 0;
                // The kernel overwrites the name/control lengths and flags: reset every call.
                hdr.msg_hdr.msg_name = (&raw mut self.names[i]).cast();
                hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
                hdr.msg_hdr.msg_iov = &raw mut self.iovecs[i];
                hdr.msg_hdr.msg_iovlen = 1;
                hdr.msg_hdr.msg_control = self.controls[i].0.as_mut_ptr().cast();
                hdr.msg_hdr.msg_controllen = CONTROL_LEN as _;
                hdr.msg_hdr.msg_flags = 0;
            }
            loop {
                // SAFETY: every header points at live, exclusively borrowed memory of the
                // sizes given (names, one iovec into `bufs`, a control buffer), and `slots`
                // is the header count. A null timeout means "no recvmmsg timeout" (the
                // socket's SO_RCVTIMEO still applies to the first datagram).
                let rc = unsafe {
                    libc::recvmmsg(
                        fd,
                        self.headers.as_mut_ptr(),
                        slots as libc::c_uint,
                        libc::MSG_WAITFORONE as _,
                        ptr::null_mut(),
                    )
                };
                if rc >= 0 {
                    return Ok(rc as usize);
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }

        /// Decodes slot `i` after `receive` filled it.
        pub(super) fn message(&self, i: usize, buf_size: usize) -> Message {
            let hdr = &self.headers[i];
            let mut msg = Message {
                meta: RecvMeta {
                    len: (hdr.msg_len as usize).min(buf_size),
                    src: sockaddr_to_std(&self.names[i], hdr.msg_hdr.msg_namelen)
                        .unwrap_or_else(unknown_source),
                    kernel_ts_ns: None,
                    truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                    tos: None,
                    ttl: None,
                },
                gro_stride: None,
                drops: None,
            };
            // SAFETY: after recvmmsg, msg_control/msg_controllen describe the part of
            // `controls[i]` the kernel filled with well-formed control messages (it shrinks
            // msg_controllen to what it wrote); CMSG_FIRSTHDR/CMSG_NXTHDR stay within it.
            let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr.msg_hdr) };
            while !cmsg.is_null() {
                // SAFETY: `cmsg` is non-null and points at a complete cmsghdr inside the buffer.
                let (level, kind) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
                match (level, kind) {
                    (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                        if let Some(ts) = read_cmsg::<libc::timespec>(cmsg) {
                            msg.meta.kernel_ts_ns = timespec_ns(&ts);
                        }
                    }
                    (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                        msg.drops = read_cmsg::<u32>(cmsg);
                    }
                    (libc::SOL_UDP, libc::UDP_GRO) => {
                        msg.gro_stride = read_cmsg::<libc::c_int>(cmsg)
                            .and_then(|s| usize::try_from(s).ok())
                            .filter(|&s| s > 0);
                    }
                    // IPv4 reports the TOS as one byte, the TTL as an int; IPv6 both as ints.
                    (libc::IPPROTO_IP, libc::IP_TOS) => msg.meta.tos = read_cmsg::<u8>(cmsg),
                    (libc::IPPROTO_IP, libc::IP_TTL) => {
                        msg.meta.ttl = read_cmsg::<libc::c_int>(cmsg).and_then(byte);
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                        msg.meta.tos = read_cmsg::<libc::c_int>(cmsg).and_then(byte);
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                        msg.meta.ttl = read_cmsg::<libc::c_int>(cmsg).and_then(byte);
                    }
                    _ => {}
                }
                // SAFETY: as for CMSG_FIRSTHDR; returns null past the last message.
                cmsg = unsafe { libc::CMSG_NXTHDR(&hdr.msg_hdr, cmsg) };
            }
            msg
        }
    }

    /// Reads a control message's payload as `T` when it is long enough to hold one.
    fn read_cmsg<T: Copy>(cmsg: *const libc::cmsghdr) -> Option<T> {
        // SAFETY: callers pass a non-null cmsghdr from CMSG_FIRSTHDR/NXTHDR, which lies wholly
        // inside the control buffer; CMSG_LEN is pure arithmetic.
        // cmsg_len is size_t on glibc but socklen_t on musl, hence the inferred cast.
        let (len, want): (usize, usize) = unsafe {
            (
                (*cmsg).cmsg_len as _,
                libc::CMSG_LEN(mem::size_of::<T>() as u32) as _,
            )
        };
        if len < want {
            return None;
        }
        // SAFETY: cmsg_len ≥ CMSG_LEN(size_of T), so size_of T bytes follow CMSG_DATA inside
        // the buffer; the payload may be unaligned for T, hence read_unaligned. T is one of
        // timespec/u32/c_int, valid for any bit pattern.
        Some(unsafe { ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<T>()) })
    }

    /// A TOS/TTL control value the kernel gave as an int (always 0..=255 in practice).
    fn byte(v: libc::c_int) -> Option<u8> {
        u8::try_from(v).ok()
    }

    fn timespec_ns(ts: &libc::timespec) -> Option<u64> {
        let secs = u64::try_from(ts.tv_sec).ok()?;
        let nanos = u64::try_from(ts.tv_nsec).ok()?;
        let ns = secs.checked_mul(1_000_000_000)?.checked_add(nanos)?;
        (ns > 0).then_some(ns)
    }

    /// The source address used when the kernel did not report one (never expected for UDP).
    fn unknown_source() -> SocketAddr {
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)
    }

    /// Converts a kernel-filled socket address; None for families other than IPv4/IPv6.
    fn sockaddr_to_std(
        storage: &libc::sockaddr_storage,
        len: libc::socklen_t,
    ) -> Option<SocketAddr> {
        let len = len as usize;
        match libc::c_int::from(storage.ss_family) {
            libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a sockaddr_in, the kernel wrote at
                // least that many bytes, and sockaddr_storage is aligned for every sockaddr.
                let sin = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    fn retry_eintr(mut call: impl FnMut() -> isize) -> io::Result<usize> {
        loop {
            let rc = call();
            if rc >= 0 {
                return Ok(rc as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// sendmmsg over `buf` cut into `seg_size` datagrams, in chunks of [`MMSG_CHUNK`].
    pub(super) fn send_mmsg(fd: RawFd, buf: &[u8], seg_size: usize) -> io::Result<usize> {
        let datagrams: Vec<&[u8]> = buf.chunks_exact(seg_size).collect();
        send_mmsg_slices(fd, &datagrams)
    }

    /// sendmmsg of datagrams of any sizes on a connected socket, `MMSG_CHUNK` per call.
    pub(super) fn send_mmsg_slices(fd: RawFd, datagrams: &[&[u8]]) -> io::Result<usize> {
        let count = datagrams.len();
        let mut sent = 0;
        while sent < count {
            let chunk = (count - sent).min(MMSG_CHUNK);
            // SAFETY: all-zero iovec/mmsghdr are valid values (null pointers, zero lengths).
            let mut iovecs: [libc::iovec; MMSG_CHUNK] = unsafe { mem::zeroed() };
            // SAFETY: as above.
            let mut headers: [libc::mmsghdr; MMSG_CHUNK] = unsafe { mem::zeroed() };
            for (j, (iov, hdr)) in iovecs
                .iter_mut()
                .zip(headers.iter_mut())
                .take(chunk)
                .enumerate()
            {
                let datagram = datagrams[sent + j];
                // The kernel only reads from iov_base on send; the cast to *mut is for the
                // C type, not for writing.
                iov.iov_base = datagram.as_ptr().cast_mut().cast();
                iov.iov_len = datagram.len();
                hdr.msg_hdr.msg_iov = iov;
                hdr.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: the first `chunk` headers each point at one iovec that covers a live
            // slice of `datagrams`; no name (the socket is connected) and no control data.
            let result = retry_eintr(|| unsafe {
                libc::sendmmsg(fd, headers.as_mut_ptr(), chunk as libc::c_uint, 0) as isize
            });
            match result {
                Ok(n) => {
                    sent += n;
                    if n < chunk {
                        return Ok(sent);
                    }
                }
                Err(e) => return if sent == 0 { Err(e) } else { Ok(sent) },
            }
        }
        Ok(sent)
    }

    /// One sendmsg of all of `buf` with a UDP_SEGMENT control message of `seg_size`.
    pub(super) fn send_gso(fd: RawFd, buf: &[u8], seg_size: usize) -> io::Result<usize> {
        let segment = u16::try_from(seg_size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "GSO segment too large"))?;
        let mut iov = libc::iovec {
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        };
        let mut control = ControlBuf([0; CONTROL_LEN]);
        // SAFETY: all-zero msghdr is valid (no name, no iovecs, no control).
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is pure arithmetic.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as _;
        // SAFETY: msg_control points at `control` (CONTROL_LEN ≥ CMSG_SPACE(2) bytes, aligned
        // for cmsghdr), so CMSG_FIRSTHDR is non-null and the header plus a u16 payload fit.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
            ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        }
        // SAFETY: `msg` points at one iovec over the live `buf` (only read by the kernel) and
        // at the control buffer set up above; all outlive the call.
        let written = retry_eintr(|| unsafe { libc::sendmsg(fd, &msg, 0) })?;
        if written != buf.len() {
            return Err(io::Error::other(format!(
                "GSO send wrote {written} of {} bytes",
                buf.len()
            )));
        }
        Ok(buf.len() / seg_size)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn timespecs_convert_to_nanoseconds() {
            let ts = libc::timespec {
                tv_sec: 2,
                tv_nsec: 5,
            };
            assert_eq!(timespec_ns(&ts), Some(2_000_000_005));
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            assert_eq!(timespec_ns(&zero), None);
            let negative = libc::timespec {
                tv_sec: -1,
                tv_nsec: 0,
            };
            assert_eq!(timespec_ns(&negative), None);
        }

        #[test]
        fn unknown_families_have_no_address() {
            // SAFETY: all-zero sockaddr_storage is AF_UNSPEC.
            let storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
            assert_eq!(sockaddr_to_std(&storage, 128), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::socket::{BoundSocket, SocketOptions, bind};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    const READ_TIMEOUT: Duration = Duration::from_secs(5);

    fn receiver(ip: IpAddr, opts: &SocketOptions) -> BoundSocket {
        let bound = bind(SocketAddr::new(ip, 0), opts).unwrap();
        bound.socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        bound
    }

    fn connected_sender(to: SocketAddr) -> UdpSocket {
        let sock = UdpSocket::bind(SocketAddr::new(to.ip(), 0)).unwrap();
        sock.connect(to).unwrap();
        sock
    }

    /// `count` datagrams of `size` bytes, each distinct: index in the first 4 bytes, then a
    /// pattern that depends on index and position.
    fn datagrams(count: usize, size: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(count * size);
        for i in 0..count {
            let mut d: Vec<u8> = (0..size).map(|j| (i * 7 + j) as u8).collect();
            d[..4].copy_from_slice(&(i as u32).to_be_bytes());
            buf.extend_from_slice(&d);
        }
        buf
    }

    /// Receives until `want` datagrams arrived (bounded: every recv waits at most
    /// READ_TIMEOUT, and there are at most `want` successful rounds).
    fn receive_all(
        rx: &UdpSocket,
        batch: &mut RecvBatch,
        want: usize,
    ) -> (Vec<Vec<u8>>, Vec<RecvMeta>, Vec<usize>) {
        let (mut data, mut metas, mut per_call) = (Vec::new(), Vec::new(), Vec::new());
        while data.len() < want {
            let n = batch
                .recv(rx)
                .unwrap_or_else(|e| panic!("after {} of {want} datagrams: {e}", data.len()));
            assert!(n > 0);
            per_call.push(n);
            for (bytes, meta) in batch.iter() {
                assert_eq!(bytes.len(), meta.len);
                data.push(bytes.to_vec());
                metas.push(*meta);
            }
        }
        (data, metas, per_call)
    }

    fn check_mode(mode: SendMode, ip: IpAddr, timestamps: bool) {
        const COUNT: usize = 32;
        const SIZE: usize = 200;
        let rx = receiver(
            ip,
            &SocketOptions {
                kernel_timestamps: timestamps,
                ..SocketOptions::default()
            },
        );
        // Kernel timestamps are Linux-only; elsewhere the option is refused with a warning.
        #[cfg(target_os = "linux")]
        assert_eq!(rx.kernel_timestamps, timestamps, "{:?}", rx.warnings);
        let tx = connected_sender(rx.local_addr);
        let payload = datagrams(COUNT, SIZE);
        assert_eq!(send_batch(&tx, mode, &payload, SIZE, COUNT).unwrap(), COUNT);

        let mut batch = RecvBatch::new(16, 2048);
        let (data, metas, _) = receive_all(&rx.socket, &mut batch, COUNT);
        assert_eq!(data.len(), COUNT, "{mode}");
        for (i, (d, meta)) in data.iter().zip(&metas).enumerate() {
            assert_eq!(
                d.as_slice(),
                &payload[i * SIZE..(i + 1) * SIZE],
                "{mode} #{i}"
            );
            assert_eq!(meta.src, tx.local_addr().unwrap());
            assert!(!meta.truncated);
            if rx.kernel_timestamps {
                assert!(meta.kernel_ts_ns.is_some_and(|t| t > 0), "{mode} #{i}");
            } else {
                assert_eq!(meta.kernel_ts_ns, None);
            }
        }
    }

    #[test]
    fn plain_sends_arrive_intact_and_in_order() {
        check_mode(SendMode::Plain, Ipv4Addr::LOCALHOST.into(), true);
    }

    #[test]
    fn mmsg_sends_arrive_intact_and_in_order() {
        check_mode(SendMode::Mmsg, Ipv4Addr::LOCALHOST.into(), true);
    }

    #[test]
    fn gso_sends_arrive_as_separate_datagrams() {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        if !gso_supported(&probe) {
            eprintln!("skipping: UDP GSO not supported here");
            return;
        }
        check_mode(SendMode::Gso, Ipv4Addr::LOCALHOST.into(), true);
    }

    #[test]
    fn without_timestamps_there_are_none() {
        check_mode(SendMode::Mmsg, Ipv4Addr::LOCALHOST.into(), false);
    }

    #[test]
    fn ipv6_sources_are_decoded() {
        if UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("skipping: IPv6 loopback not available here");
            return;
        }
        check_mode(SendMode::Mmsg, Ipv6Addr::LOCALHOST.into(), true);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn gro_buffers_are_split_into_their_segments() {
        const COUNT: usize = 32;
        const SIZE: usize = 200;
        const BATCH: usize = 4;
        let rx = receiver(
            Ipv4Addr::LOCALHOST.into(),
            &SocketOptions {
                gro: true,
                kernel_timestamps: true,
                ..SocketOptions::default()
            },
        );
        assert!(rx.gro, "{:?}", rx.warnings);
        let tx = connected_sender(rx.local_addr);
        if !gso_supported(&tx) {
            eprintln!("skipping: UDP GSO not supported here");
            return;
        }
        let payload = datagrams(COUNT, SIZE);
        assert_eq!(
            send_batch(&tx, SendMode::Gso, &payload, SIZE, COUNT).unwrap(),
            COUNT
        );

        let mut batch = RecvBatch::new(BATCH, 65_536);
        let (data, metas, per_call) = receive_all(&rx.socket, &mut batch, COUNT);
        assert_eq!(data.len(), COUNT);
        for (i, d) in data.iter().enumerate() {
            assert_eq!(d.as_slice(), &payload[i * SIZE..(i + 1) * SIZE], "#{i}");
        }
        // One recv returning more datagrams than it has slots proves a coalesced buffer was
        // split (loopback delivers a GSO send to a GRO socket as one buffer).
        assert_eq!(per_call, vec![COUNT], "the GSO send was not coalesced");
        let first = metas[0];
        assert!(first.kernel_ts_ns.is_some());
        assert!(
            metas
                .iter()
                .all(|m| m.src == first.src && m.kernel_ts_ns == first.kernel_ts_ns)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn receive_buffer_drops_are_counted_exactly() {
        // Fewer than net.core.netdev_max_backlog (1000 by default): loopback then cannot drop
        // in the per-CPU backlog, so every datagram is either queued or dropped at the socket,
        // where sk_drops counts it.
        const SENT: usize = 300;
        const SIZE: usize = 200;
        let rx = receiver(
            Ipv4Addr::LOCALHOST.into(),
            &SocketOptions {
                rcvbuf: Some(4096),
                rxq_overflow: true,
                ..SocketOptions::default()
            },
        );
        assert!(rx.rxq_overflow);
        rx.socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let tx = connected_sender(rx.local_addr);
        let payload = datagrams(SENT, SIZE);
        assert_eq!(
            send_batch(&tx, SendMode::Plain, &payload, SIZE, SENT).unwrap(),
            SENT
        );

        // Drain until every datagram is accounted for as received or dropped; delivery on
        // loopback can lag the send when softirqs are deferred, hence the bounded wait.
        let mut batch = RecvBatch::new(64, 2048);
        let mut received = Vec::new();
        let mut dropped = 0;
        for _ in 0..100 {
            match batch.recv(&rx.socket) {
                Ok(_) => received.extend(batch.iter().map(|(d, _)| d.to_vec())),
                Err(e) if is_eagain(&e) || e.kind() == io::ErrorKind::TimedOut => {}
                Err(e) => panic!("{e}"),
            }
            dropped = batch.refresh_rxq_dropped(&rx.socket).unwrap().unwrap();
            if received.len() as u64 + dropped == SENT as u64 {
                break;
            }
        }
        assert!(dropped > 0, "a 4 KiB buffer should overflow");
        assert_eq!(received.len() as u64 + dropped, SENT as u64);
        // What was kept is an in-order subset of what was sent.
        let mut next = 0;
        for d in &received {
            let i = u32::from_be_bytes(d[..4].try_into().unwrap()) as usize;
            assert!(i >= next && d.as_slice() == &payload[i * SIZE..(i + 1) * SIZE]);
            next = i + 1;
        }

        // The SO_RXQ_OVFL path: a fresh batch sees the counter on the next datagram.
        tx.send(b"probe").unwrap();
        rx.socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut fresh = RecvBatch::new(4, 2048);
        assert_eq!(fresh.rxq_dropped(), None);
        assert_eq!(fresh.recv(&rx.socket).unwrap(), 1);
        assert_eq!(fresh.get(0).0, b"probe");
        assert_eq!(fresh.rxq_dropped(), Some(dropped));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn drop_count_without_drops_is_zero_after_refresh() {
        let rx = receiver(Ipv4Addr::LOCALHOST.into(), &SocketOptions::default());
        let mut batch = RecvBatch::new(1, 64);
        assert_eq!(batch.rxq_dropped(), None);
        assert_eq!(batch.refresh_rxq_dropped(&rx.socket).unwrap(), Some(0));
    }

    #[test]
    fn truncated_datagrams_are_flagged() {
        let rx = receiver(Ipv4Addr::LOCALHOST.into(), &SocketOptions::default());
        let tx = connected_sender(rx.local_addr);
        tx.send(&[9u8; 100]).unwrap();
        let mut batch = RecvBatch::new(2, 40);
        assert_eq!(batch.recv(&rx.socket).unwrap(), 1);
        let (bytes, meta) = batch.get(0);
        assert_eq!(bytes, &[9u8; 40][..]);
        assert_eq!(meta.len, 40);
        #[cfg(target_os = "linux")]
        assert!(meta.truncated);
    }

    #[test]
    fn a_read_timeout_is_would_block() {
        let rx = receiver(Ipv4Addr::LOCALHOST.into(), &SocketOptions::default());
        rx.socket
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let err = RecvBatch::new(4, 64).recv(&rx.socket).unwrap_err();
        assert!(
            is_eagain(&err) || err.kind() == io::ErrorKind::TimedOut,
            "{err}"
        );
    }

    #[test]
    fn errors_before_the_first_datagram_are_err() {
        // Not connected: every mode fails on the first datagram (EDESTADDRREQ).
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let payload = datagrams(4, 100);
        for mode in [SendMode::Plain, SendMode::Mmsg, SendMode::Gso] {
            if mode == SendMode::Gso && !gso_supported(&sock) {
                continue;
            }
            assert!(send_batch(&sock, mode, &payload, 100, 4).is_err(), "{mode}");
        }
    }

    #[test]
    fn bad_send_arguments_are_invalid_input() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let kind = |r: io::Result<usize>| r.unwrap_err().kind();
        let buf = vec![0u8; 1000];
        assert_eq!(
            kind(send_batch(&sock, SendMode::Plain, &buf, 0, 1)),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(send_batch(&sock, SendMode::Mmsg, &buf, 100, 11)),
            io::ErrorKind::InvalidInput
        );
        let big = vec![0u8; 100 * 65];
        assert_eq!(
            kind(send_batch(&sock, SendMode::Gso, &big, 100, 65)),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(send_batch(&sock, SendMode::Plain, &buf, 100, 0).unwrap(), 0);
    }

    #[test]
    fn gso_segment_limits() {
        assert_eq!(max_gso_segments(1400), 46);
        assert_eq!(max_gso_segments(200), 64);
        assert_eq!(max_gso_segments(1), 64);
        assert_eq!(max_gso_segments(65_507), 1);
        assert_eq!(max_gso_segments(70_000), 1);
        assert_eq!(max_gso_segments(0), 1);
    }

    #[test]
    fn auto_uses_gso_only_toward_this_host() {
        assert_eq!(auto_send_mode(true, true), SendMode::Gso);
        // Toward another host every datagram is its own packet, GSO or not in the kernel.
        let batched = if cfg!(target_os = "linux") {
            SendMode::Mmsg
        } else {
            SendMode::Plain
        };
        assert_eq!(auto_send_mode(false, true), batched);
        assert_eq!(auto_send_mode(false, false), batched);
        assert_eq!(auto_send_mode(true, false), batched);
    }

    #[test]
    fn send_modes_parse_and_print() {
        for mode in [SendMode::Plain, SendMode::Mmsg, SendMode::Gso] {
            assert_eq!(mode.to_string().parse::<SendMode>(), Ok(mode));
        }
        assert_eq!("GSO".parse::<SendMode>(), Ok(SendMode::Gso));
        assert_eq!(
            "fast".parse::<SendMode>(),
            Err("unknown send mode \"fast\" (expected plain, mmsg or gso)".to_string())
        );
    }

    #[test]
    fn error_classifiers() {
        #[cfg(unix)]
        assert!(is_enobufs(&io::Error::from_raw_os_error(libc::ENOBUFS)));
        assert!(!is_enobufs(&io::Error::from(io::ErrorKind::WouldBlock)));
        assert!(is_eagain(&io::Error::from(io::ErrorKind::WouldBlock)));
        #[cfg(unix)]
        assert!(is_eagain(&io::Error::from_raw_os_error(libc::EAGAIN)));
        assert!(!is_eagain(&io::Error::from(
            io::ErrorKind::ConnectionRefused
        )));
    }

    /// Each datagram's TOS byte and TTL arrive with it once asked for, on both families and
    /// on a dual-stack socket's IPv4 peers, and not at all when not asked for.
    #[cfg(target_os = "linux")]
    #[test]
    fn received_tos_and_ttl_come_with_each_datagram() {
        use crate::net::sockopts::{Marking, apply_marking, enable_receive_marks};
        let cases: [(IpAddr, IpAddr); 3] = [
            (Ipv4Addr::LOCALHOST.into(), Ipv4Addr::LOCALHOST.into()),
            (Ipv6Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()),
            (Ipv6Addr::UNSPECIFIED.into(), Ipv4Addr::LOCALHOST.into()),
        ];
        for (bind_ip, send_ip) in cases {
            let Ok(rx) = bind(SocketAddr::new(bind_ip, 0), &SocketOptions::default()) else {
                eprintln!("skipping {bind_ip}: cannot bind");
                continue;
            };
            rx.socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
            let to = SocketAddr::new(send_ip, rx.local_addr.port());
            let tx = connected_sender(to);
            // Not asked for: nothing reported.
            tx.send(&[1u8; 40]).unwrap();
            let mut batch = RecvBatch::new(4, 2048);
            let (_, metas, _) = receive_all(&rx.socket, &mut batch, 1);
            assert_eq!((metas[0].tos, metas[0].ttl), (None, None), "{bind_ip}");
            enable_receive_marks(&rx.socket).unwrap();
            let marking = Marking {
                tos: Some(0xb9),
                ttl: Some(5),
                ..Marking::default()
            };
            apply_marking(&tx, &marking).unwrap();
            tx.send(&[2u8; 40]).unwrap();
            let (_, metas, _) = receive_all(&rx.socket, &mut batch, 1);
            assert_eq!(metas[0].tos, Some(0xb9), "{bind_ip} <- {send_ip}");
            assert_eq!(metas[0].ttl, Some(5), "{bind_ip} <- {send_ip}");
        }
    }

    fn meta(len: usize, truncated: bool) -> RecvMeta {
        RecvMeta {
            len,
            src: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 9),
            kernel_ts_ns: Some(42),
            truncated,
            tos: None,
            ttl: None,
        }
    }

    #[test]
    fn gro_splitting_handles_short_tails_and_single_datagrams() {
        let mut out = Vec::new();
        push_segments(&mut out, 1000, meta(450, false), Some(200));
        let spans: Vec<(usize, usize)> = out.iter().map(|s| (s.offset, s.meta.len)).collect();
        assert_eq!(spans, vec![(1000, 200), (1200, 200), (1400, 50)]);
        assert!(out.iter().all(|s| s.meta.kernel_ts_ns == Some(42)));

        for stride in [None, Some(0), Some(450), Some(500)] {
            out.clear();
            push_segments(&mut out, 0, meta(450, false), stride);
            assert_eq!(out.len(), 1, "{stride:?}");
            assert_eq!(out[0].meta.len, 450);
        }
        out.clear();
        push_segments(&mut out, 0, meta(0, false), Some(200));
        assert_eq!(out.len(), 1, "an empty datagram is still a datagram");

        out.clear();
        push_segments(&mut out, 0, meta(400, true), Some(200));
        let flags: Vec<bool> = out.iter().map(|s| s.meta.truncated).collect();
        assert_eq!(flags, vec![false, true]);
    }

    #[test]
    fn drop_counter_widens_across_the_u32_wrap() {
        let mut c = DropCounter::default();
        assert_eq!(c.total(), None);
        c.observe(5);
        assert_eq!(c.total(), Some(5));
        c.observe(5);
        assert_eq!(c.total(), Some(5));
        // Climb to just below the wrap in steps under 2^31, then wrap.
        for raw in [1 << 30, 2 << 30, 3 << 30, u32::MAX - 1] {
            c.observe(raw);
        }
        assert_eq!(c.total(), Some(u64::from(u32::MAX - 1)));
        c.observe(3); // MAX-1 → MAX → 0 → 1 → 2 → 3: 5 more
        let wrapped = u64::from(u32::MAX - 1) + 5;
        assert_eq!(c.total(), Some(wrapped));
        // A value stamped before the latest one (older) is ignored, not read as a wrap.
        c.observe(1);
        assert_eq!(c.total(), Some(wrapped));
        c.observe(10);
        assert_eq!(c.total(), Some(wrapped + 7));
    }

    #[test]
    fn recv_batch_can_move_to_the_receive_thread() {
        fn assert_send<T: Send>(_: &T) {}
        assert_send(&RecvBatch::new(2, 16));
    }

    #[test]
    fn recv_batch_sizes_are_kept_in_range() {
        let b = RecvBatch::new(0, 0);
        assert_eq!((b.bufs.len(), b.buf_size), (1, 1));
        let b = RecvBatch::new(5000, 8);
        assert_eq!(b.bufs.len(), MAX_BATCH * 8);
    }
}
