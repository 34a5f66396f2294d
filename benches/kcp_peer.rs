//! The peers udplab's `--reliable` is measured against in the `reliable` scenario of
//! benches/compare.sh: both ends of a KCP session (the `kcp` crate, fast mode) driven the stock
//! way or eagerly, and both ends of one kernel TCP stream, over real sockets.
//!
//! ```text
//! kcp_peer kcp-recv --bind ADDR --count N --drive stock|eager [--size B] [--wnd W] [--max-s S]
//! kcp_peer kcp-send ADDR --count N --drive stock|eager [--size B] [--rate MSG/S] [--wnd W]
//! kcp_peer tcp-recv --bind ADDR --count N [--size B] [--max-s S]
//! kcp_peer tcp-send ADDR --count N [--size B] [--rate MSG/S]
//! kcp_peer               (as `cargo bench` runs it: a loopback self-check of both drives)
//! ```
//!
//! Receivers print `listening on ADDR` first, then every end prints one JSON line of its figures
//! at the end. Each message carries the wall-clock time it was due by the sender's schedule (one
//! host, one clock), so the receiver's delivery latency is one-way, from the schedule. Counters of datagrams, bytes and KCP segments are
//! taken from what each end really wrote and read, parsed from the KCP wire format, because
//! the crate does not expose its retransmission count.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kcp::{KCP_OVERHEAD, Kcp};
use serde_json::{Value, json};
use udplab::time::{now, wall_ns};

/// KCP's data command (IKCP_CMD_PUSH) and acknowledgement command (IKCP_CMD_ACK).
const KCP_CMD_PUSH: u8 = 81;
const KCP_CMD_ACK: u8 = 82;
/// Conversation id both ends agree on.
const CONV: u32 = 0x75_64_70_6c;
/// The longest any single wait lasts: the "1 ms poll" that replaces a socket read timeout.
const POLL_TICK: Duration = Duration::from_millis(1);
/// Message header: scheduled wall-clock ns (u64 LE) then message number (u32 LE).
const MSG_HEADER: usize = 12;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Drive {
    /// `update()` at every 1 ms tick; KCP flushes at its own 10 ms interval.
    Stock,
    /// `flush()` right after every `send()` and every `input()` (as kcp-go does), plus the ticks.
    Eager,
}

struct Opts {
    addr: Option<String>,
    bind: String,
    count: u32,
    size: usize,
    rate: f64,
    wnd: u16,
    drive: Drive,
    max: Duration,
    linger: Duration,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        addr: None,
        bind: "127.0.0.1:0".into(),
        count: 20_000,
        size: 1200,
        rate: 1000.0,
        wnd: 256,
        drive: Drive::Eager,
        max: Duration::from_secs(120),
        linger: Duration::from_millis(1000),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--bind" => o.bind = val()?,
            "--count" => o.count = val()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--size" => o.size = val()?.parse().map_err(|e| format!("--size: {e}"))?,
            "--rate" => o.rate = val()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--wnd" => o.wnd = val()?.parse().map_err(|e| format!("--wnd: {e}"))?,
            "--max-s" => {
                o.max =
                    Duration::from_secs_f64(val()?.parse().map_err(|e| format!("--max-s: {e}"))?)
            }
            "--linger-ms" => {
                o.linger =
                    Duration::from_millis(val()?.parse().map_err(|e| format!("--linger-ms: {e}"))?)
            }
            "--drive" => {
                o.drive = match val()?.as_str() {
                    "stock" => Drive::Stock,
                    "eager" => Drive::Eager,
                    d => return Err(format!("--drive: stock or eager, not {d}")),
                }
            }
            s if !s.starts_with('-') && o.addr.is_none() => o.addr = Some(s.to_string()),
            s => return Err(format!("unknown argument {s}")),
        }
    }
    if o.size < MSG_HEADER || o.count == 0 || o.rate <= 0.0 || o.wnd < 128 {
        return Err("need --size >= 12, --count >= 1, --rate > 0, --wnd >= 128".into());
    }
    Ok(o)
}

/// What one end wrote to or read from the wire, counted from the KCP segments themselves.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct WireCount {
    datagrams: u64,
    bytes: u64,
    push_segments: u64,
    ack_segments: u64,
    other_segments: u64,
    /// Datagrams whose segments did not parse (never expected from our own peer).
    malformed: u64,
}

impl WireCount {
    /// Counts one datagram; returns the sequence numbers of its PUSH segments.
    fn add(&mut self, datagram: &[u8]) -> Vec<u32> {
        self.datagrams += 1;
        self.bytes += datagram.len() as u64;
        let mut sns = Vec::new();
        let mut rest = datagram;
        while !rest.is_empty() {
            let Some(header) = rest.get(..KCP_OVERHEAD) else {
                self.malformed += 1;
                break;
            };
            let cmd = header[4];
            let sn = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
            let len = u32::from_le_bytes([header[20], header[21], header[22], header[23]]) as usize;
            let Some(next) = rest.get(KCP_OVERHEAD + len..) else {
                self.malformed += 1;
                break;
            };
            match cmd {
                KCP_CMD_PUSH => {
                    self.push_segments += 1;
                    sns.push(sn);
                }
                KCP_CMD_ACK => self.ack_segments += 1,
                _ => self.other_segments += 1,
            }
            rest = next;
        }
        sns
    }

    fn json(&self) -> Value {
        json!({
            "datagrams": self.datagrams, "bytes": self.bytes, "push_segments": self.push_segments,
            "ack_segments": self.ack_segments, "other_segments": self.other_segments,
            "malformed": self.malformed,
        })
    }
}

/// KCP's output: one `write` is one datagram to the peer (once the peer is known).
struct UdpOut {
    sock: Rc<UdpSocket>,
    peer: Rc<RefCell<Option<SocketAddr>>>,
    sent: Rc<RefCell<WireCount>>,
    send_errors: Rc<RefCell<u64>>,
}

impl Write for UdpOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(peer) = *self.peer.borrow() else {
            return Ok(buf.len());
        };
        self.sent.borrow_mut().add(buf);
        // A full socket buffer is a loss like any other: KCP retransmits it.
        if self.sock.send_to(buf, peer).is_err() {
            *self.send_errors.borrow_mut() += 1;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Waits until `sock` is readable or `timeout` (at most one tick) passed: ppoll(2) takes a
/// nanosecond timeout on a high-resolution timer, unlike SO_RCVTIMEO's kernel-tick granularity.
fn wait_readable(sock: &impl AsRawFd, timeout: Duration) {
    let timeout = timeout.min(POLL_TICK);
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}

/// The wall-clock time a message was due by the sender's schedule (`due`, on the monotonic
/// clock that read `start` when the wall clock read `start_wall`). Latency counts from there, so
/// a sender that falls behind (TCP blocked on a full send buffer, a busy CPU) shows in it.
fn scheduled_wall_ns(start: Instant, start_wall: u64, due: Instant) -> u64 {
    start_wall + due.duration_since(start).as_nanos() as u64
}

fn kcp_ms(start: Instant, t: Instant) -> u32 {
    t.duration_since(start).as_millis() as u32
}

fn new_kcp(out: UdpOut, wnd: u16) -> Kcp<UdpOut> {
    let mut kcp = Kcp::new(CONV, out);
    // Fast mode: nodelay, 10 ms interval, fast resend after 2 duplicate ACKs, no congestion window.
    kcp.set_nodelay(true, 10, 2, true);
    kcp.set_wndsize(wnd, wnd);
    kcp.set_mtu(1400).expect("MTU 1400 is valid");
    kcp
}

struct Shared {
    sock: Rc<UdpSocket>,
    peer: Rc<RefCell<Option<SocketAddr>>>,
    sent: Rc<RefCell<WireCount>>,
    send_errors: Rc<RefCell<u64>>,
}

fn udp_end(bind: &str) -> io::Result<Shared> {
    let sock = UdpSocket::bind(bind)?;
    sock.set_nonblocking(true)?;
    let s2 = socket2::SockRef::from(&sock);
    s2.set_recv_buffer_size(4 << 20)?;
    s2.set_send_buffer_size(4 << 20)?;
    Ok(Shared {
        sock: Rc::new(sock),
        peer: Rc::new(RefCell::new(None)),
        sent: Rc::new(RefCell::new(WireCount::default())),
        send_errors: Rc::new(RefCell::new(0)),
    })
}

impl Shared {
    fn out(&self) -> UdpOut {
        UdpOut {
            sock: self.sock.clone(),
            peer: self.peer.clone(),
            sent: self.sent.clone(),
            send_errors: self.send_errors.clone(),
        }
    }
}

fn drive_name(d: Drive) -> &'static str {
    match d {
        Drive::Stock => "stock",
        Drive::Eager => "eager",
    }
}

/// The KCP sending end: `count` messages of `size` bytes at `rate` per second, then waits until
/// KCP has every one acknowledged (bounded by `max`).
fn kcp_send(o: &Opts, ready: Option<SocketAddr>) -> Result<Value, String> {
    let target: SocketAddr = match ready {
        Some(a) => a,
        None => o
            .addr
            .as_deref()
            .ok_or("kcp-send needs ADDR")?
            .parse()
            .map_err(|e| format!("ADDR: {e}"))?,
    };
    let bind = if target.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let bind = if target.ip().is_loopback() {
        bind
    } else {
        "0.0.0.0:0"
    };
    let end = udp_end(bind).map_err(|e| format!("bind: {e}"))?;
    *end.peer.borrow_mut() = Some(target);
    let mut kcp = new_kcp(end.out(), o.wnd);
    let mut received = WireCount::default();
    let mut foreign = 0u64;
    let (start, first_wall) = (now(), wall_ns());
    kcp.update(0).map_err(|e| format!("kcp: {e}"))?;
    let period = Duration::from_secs_f64(1.0 / o.rate);
    let mut next_send = start;
    let mut handed = 0u32;
    let mut msg = vec![0u8; o.size];
    let mut buf = vec![0u8; 65536];
    let mut all_acked_at = None;
    loop {
        let t = now();
        while handed < o.count && t >= next_send {
            msg[..8]
                .copy_from_slice(&scheduled_wall_ns(start, first_wall, next_send).to_le_bytes());
            msg[8..12].copy_from_slice(&handed.to_le_bytes());
            kcp.send(&msg).map_err(|e| format!("kcp send: {e}"))?;
            handed += 1;
            next_send += period;
            if o.drive == Drive::Eager {
                kcp.update(kcp_ms(start, now()))
                    .map_err(|e| format!("kcp: {e}"))?;
                kcp.flush().map_err(|e| format!("kcp: {e}"))?;
            }
        }
        loop {
            match end.sock.recv_from(&mut buf) {
                Ok((n, from)) if from == target => {
                    received.add(&buf[..n]);
                    if kcp.input(&buf[..n]).is_ok() && o.drive == Drive::Eager {
                        kcp.update(kcp_ms(start, now()))
                            .map_err(|e| format!("kcp: {e}"))?;
                        kcp.flush().map_err(|e| format!("kcp: {e}"))?;
                    }
                }
                Ok(_) => foreign += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
        kcp.update(kcp_ms(start, now()))
            .map_err(|e| format!("kcp: {e}"))?;
        if handed == o.count && kcp.wait_snd() == 0 {
            all_acked_at = Some(now());
            break;
        }
        if now().duration_since(start) > o.max {
            break;
        }
        let wait = if handed < o.count {
            next_send.saturating_duration_since(now())
        } else {
            POLL_TICK
        };
        wait_readable(&*end.sock, wait);
    }
    let sent = *end.sent.borrow();
    let elapsed = all_acked_at.unwrap_or_else(now).duration_since(start);
    Ok(json!({
        "role": "sender", "peer": "kcp", "drive": drive_name(o.drive), "count": o.count,
        "size": o.size, "rate": o.rate, "wnd": o.wnd, "handed": handed,
        "all_acked": all_acked_at.is_some(), "unacked": kcp.wait_snd(),
        "elapsed_s": elapsed.as_secs_f64(), "start_wall_ns": first_wall,
        // Each message is one KCP segment (size < MSS), so every PUSH beyond the first of a
        // message is a retransmission.
        "retransmissions": sent.push_segments.saturating_sub(u64::from(handed)),
        "sent": sent.json(), "received": received.json(), "foreign": foreign,
        "send_errors": *end.send_errors.borrow(),
    }))
}

/// Latency percentiles of `v` (ns, sorted in place) in ms, nearest-rank.
fn latency_ms(v: &mut [u64]) -> Value {
    if v.is_empty() {
        return json!({});
    }
    v.sort_unstable();
    let pick = |q: f64| {
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1] as f64 / 1e6
    };
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1e6;
    json!({ "mean": mean, "p50": pick(0.50), "p99": pick(0.99), "max": pick(1.0),
            "min": pick(0.0) })
}

/// Delivery bookkeeping shared by the KCP and TCP receiving ends.
struct Deliveries {
    size: usize,
    latencies: Vec<u64>,
    out_of_order: u64,
    next_expected: u32,
    first_send_ns: Option<u64>,
    last_delivery_ns: u64,
    delivered_bytes: u64,
}

impl Deliveries {
    fn new(size: usize, count: u32) -> Self {
        Deliveries {
            size,
            latencies: Vec::with_capacity(count as usize),
            out_of_order: 0,
            next_expected: 0,
            first_send_ns: None,
            last_delivery_ns: 0,
            delivered_bytes: 0,
        }
    }

    fn deliver(&mut self, msg: &[u8]) {
        let at = wall_ns();
        let Some((ts, seq)) = msg.get(..MSG_HEADER).map(|h| {
            (
                u64::from_le_bytes(h[..8].try_into().unwrap()),
                u32::from_le_bytes(h[8..12].try_into().unwrap()),
            )
        }) else {
            return;
        };
        if seq != self.next_expected {
            self.out_of_order += 1;
        }
        self.next_expected = seq.wrapping_add(1);
        self.first_send_ns = Some(self.first_send_ns.map_or(ts, |f| f.min(ts)));
        self.latencies.push(at.saturating_sub(ts));
        self.last_delivery_ns = at;
        self.delivered_bytes += msg.len() as u64;
    }

    fn json(mut self) -> Value {
        let span_s = self
            .first_send_ns
            .map(|f| self.last_delivery_ns.saturating_sub(f) as f64 / 1e9)
            .unwrap_or(0.0);
        let goodput = if span_s > 0.0 {
            self.delivered_bytes as f64 * 8.0 / span_s
        } else {
            0.0
        };
        json!({
            "delivered": self.latencies.len(), "size": self.size,
            "out_of_order_deliveries": self.out_of_order,
            "latency_ms": latency_ms(&mut self.latencies),
            "goodput_bps": goodput, "span_s": span_s,
        })
    }
}

/// The KCP receiving end: answers only the first address that sent it a valid KCP segment of
/// our conversation; stops `linger` after its last input once everything was delivered.
fn kcp_recv(o: &Opts, end: Shared) -> Result<Value, String> {
    let mut kcp = new_kcp(end.out(), o.wnd);
    let mut received = WireCount::default();
    let mut seen = vec![false; o.count as usize];
    let mut duplicates = 0u64;
    let mut foreign = 0u64;
    let mut deliveries = Deliveries::new(o.size, o.count);
    let mut buf = vec![0u8; 65536];
    let mut msg = vec![0u8; o.size.max(65536)];
    let mut start = None;
    let mut last_input = now();
    let mut begun = now();
    loop {
        loop {
            match end.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let dg = &buf[..n];
                    let known = *end.peer.borrow();
                    match known {
                        Some(p) if p != from => {
                            foreign += 1;
                            continue;
                        }
                        None if kcp::get_conv(dg) != CONV || n < KCP_OVERHEAD => {
                            foreign += 1;
                            continue;
                        }
                        None => {
                            *end.peer.borrow_mut() = Some(from);
                            let t = now();
                            start = Some(t);
                            begun = t;
                            kcp.update(0).map_err(|e| format!("kcp: {e}"))?;
                        }
                        Some(_) => {}
                    }
                    last_input = now();
                    for sn in received.add(dg) {
                        match seen.get_mut(sn as usize) {
                            Some(s) if *s => duplicates += 1,
                            Some(s) => *s = true,
                            None => {}
                        }
                    }
                    let ok = kcp.input(dg).is_ok();
                    if ok && o.drive == Drive::Eager {
                        let st = start.expect("set at the first input");
                        kcp.update(kcp_ms(st, now()))
                            .map_err(|e| format!("kcp: {e}"))?;
                        // flush_ack() only encodes the ACKs; flush() writes them.
                        kcp.flush().map_err(|e| format!("kcp: {e}"))?;
                    }
                    while let Ok(n) = kcp.recv(&mut msg) {
                        deliveries.deliver(&msg[..n]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
        if let Some(st) = start {
            kcp.update(kcp_ms(st, now()))
                .map_err(|e| format!("kcp: {e}"))?;
        }
        let done = deliveries.latencies.len() as u64 >= u64::from(o.count);
        if done && now().duration_since(last_input) >= o.linger {
            break;
        }
        if now().duration_since(begun) > o.max {
            break;
        }
        wait_readable(&*end.sock, POLL_TICK);
    }
    let sent = *end.sent.borrow();
    let mut v = deliveries.json();
    let extra = json!({
        "role": "receiver", "peer": "kcp", "drive": drive_name(o.drive), "count": o.count,
        "wnd": o.wnd, "duplicate_arrivals": duplicates, "sent": sent.json(),
        "received": received.json(), "foreign": foreign,
        "send_errors": *end.send_errors.borrow(),
    });
    merge(&mut v, extra);
    Ok(v)
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

/// The TCP receiving end: one connection, `count` messages of `size` bytes.
fn tcp_recv(o: &Opts, listener: TcpListener) -> Result<Value, String> {
    let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let deadline = now() + o.max;
    let mut d = Deliveries::new(o.size, o.count);
    let mut msg = vec![0u8; o.size];
    let mut complete = true;
    for _ in 0..o.count {
        // Whatever TCP manages by the deadline is reported, not lost to an outer timeout.
        let left = deadline.saturating_duration_since(now());
        if left.is_zero()
            || s.set_read_timeout(Some(left)).is_err()
            || s.read_exact(&mut msg).is_err()
        {
            complete = false;
            break;
        }
        d.deliver(&msg);
    }
    let mut v = d.json();
    merge(
        &mut v,
        json!({ "role": "receiver", "peer": "tcp", "count": o.count, "complete": complete,
                "max_s": o.max.as_secs_f64() }),
    );
    Ok(v)
}

fn tcp_retransmissions(s: &TcpStream) -> Option<u32> {
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        (rc == 0).then_some(info.tcpi_total_retrans)
    }
}

/// The TCP sending end: `count` messages at `rate` on one stream with TCP_NODELAY.
fn tcp_send(o: &Opts) -> Result<Value, String> {
    let target: SocketAddr = o
        .addr
        .as_deref()
        .ok_or("tcp-send needs ADDR")?
        .parse()
        .map_err(|e| format!("ADDR: {e}"))?;
    let mut s = TcpStream::connect(target).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let period = Duration::from_secs_f64(1.0 / o.rate);
    let (start, first_wall) = (now(), wall_ns());
    let mut next = start;
    let mut msg = vec![0u8; o.size];
    let deadline = start + o.max;
    let mut written = 0u32;
    for i in 0..o.count {
        let wait = next.saturating_duration_since(now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        msg[..8].copy_from_slice(&scheduled_wall_ns(start, first_wall, next).to_le_bytes());
        msg[8..12].copy_from_slice(&i.to_le_bytes());
        // A stalled stream (heavy loss) stops at the deadline instead of blocking for ever.
        let left = deadline.saturating_duration_since(now());
        if left.is_zero() || s.set_write_timeout(Some(left)).is_err() || s.write_all(&msg).is_err()
        {
            break;
        }
        written += 1;
        next += period;
    }
    let retrans = tcp_retransmissions(&s);
    // Orderly close: the receiver reads to the end.
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.read(&mut [0u8; 1]);
    Ok(json!({
        "role": "sender", "peer": "tcp", "count": o.count, "written": written, "size": o.size, "rate": o.rate,
        "elapsed_s": now().duration_since(start).as_secs_f64(),
        "tcp_total_retrans": retrans,
    }))
}

fn print_listening(addr: SocketAddr) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

/// `cargo bench` runs this with no command (and tests/it/reliable_peers.rs calls it): both KCP
/// drives over loopback without a proxy, bounded by 500 messages and 20 s each.
pub fn self_check() -> Result<(), String> {
    checks::wire_count_parses_merged_segments();
    checks::wire_count_survives_truncation();
    checks::latency_percentiles_are_nearest_rank();
    for drive in [Drive::Stock, Drive::Eager] {
        let args: Vec<String> = [
            "--count",
            "500",
            "--rate",
            "2000",
            "--max-s",
            "20",
            "--linger-ms",
            "100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut o = parse_opts(&args)?;
        o.drive = drive;
        let end = udp_end("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let addr = end.sock.local_addr().map_err(|e| e.to_string())?;
        let sender = std::thread::spawn(move || {
            let o = parse_opts(&args).expect("parsed above");
            let o = Opts { drive, ..o };
            kcp_send(&o, Some(addr))
        });
        let r = kcp_recv(&o, end)?;
        let s = sender.join().map_err(|_| "sender panicked".to_string())??;
        println!("{s}\n{r}");
        if r["delivered"] != json!(o.count) || s["all_acked"] != json!(true) {
            return Err(format!(
                "{drive:?}: not everything delivered and acknowledged"
            ));
        }
    }
    println!("kcp_peer self-check: both drives delivered and acknowledged everything");
    Ok(())
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(cmd) = args.first() else {
        return self_check();
    };
    let o = parse_opts(&args[1..])?;
    let v = match cmd.as_str() {
        "kcp-send" => kcp_send(&o, None)?,
        "kcp-recv" => {
            let end = udp_end(&o.bind).map_err(|e| format!("bind {}: {e}", o.bind))?;
            print_listening(end.sock.local_addr().map_err(|e| e.to_string())?);
            kcp_recv(&o, end)?
        }
        "tcp-send" => tcp_send(&o)?,
        "tcp-recv" => {
            let l = TcpListener::bind(&o.bind).map_err(|e| format!("bind {}: {e}", o.bind))?;
            print_listening(l.local_addr().map_err(|e| e.to_string())?);
            tcp_recv(&o, l)?
        }
        c => return Err(format!("unknown command {c}")),
    };
    println!("{v}");
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        let _ = writeln!(io::stderr(), "kcp_peer: {e}");
        std::process::exit(2);
    }
}

/// Checks of the wire counting and the percentiles, run by the self-check (`cargo bench` runs a
/// `harness = false` target as a plain program, so `#[test]`s here would never run) and by
/// tests/it/reliable_peers.rs, which includes this file as a module.
pub mod checks {
    use super::*;

    fn segment(cmd: u8, sn: u32, payload: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&CONV.to_le_bytes());
        b.extend_from_slice(&[cmd, 0, 0, 1]);
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&sn.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(payload as u32).to_le_bytes());
        b.extend(std::iter::repeat_n(7u8, payload));
        b
    }

    pub fn wire_count_parses_merged_segments() {
        let mut dg = segment(KCP_CMD_ACK, 4, 0);
        dg.extend(segment(KCP_CMD_PUSH, 9, 1200));
        dg.extend(segment(KCP_CMD_ACK, 5, 0));
        let mut c = WireCount::default();
        assert_eq!(c.add(&dg), vec![9]);
        assert_eq!(
            (c.datagrams, c.bytes, c.push_segments, c.ack_segments),
            (1, dg.len() as u64, 1, 2)
        );
        assert_eq!(c.malformed, 0);
    }

    pub fn wire_count_survives_truncation() {
        let dg = segment(KCP_CMD_PUSH, 1, 100);
        let mut c = WireCount::default();
        for cut in 1..dg.len() {
            c.add(&dg[..cut]);
        }
        assert_eq!(c.push_segments, 0);
        assert_eq!(c.malformed, dg.len() as u64 - 1);
    }

    pub fn latency_percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().map(|ms| ms * 1_000_000).collect();
        let l = latency_ms(&mut v);
        assert_eq!(
            (l["p50"].as_f64(), l["p99"].as_f64(), l["max"].as_f64()),
            (Some(50.0), Some(99.0), Some(100.0))
        );
    }
}
