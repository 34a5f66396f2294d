//! `udplab proxy`: relays any UDP traffic between clients and one target, impairing each
//! direction with the shared sans-IO engine, and counts what it did.
//!
//! Each client address gets its own upstream socket (so replies find their way back), held
//! while the client is active: relay state expires after `client_idle` without a datagram
//! either way, and at most `max_clients` are held at once. A client beyond that, or one for
//! which no socket can be opened (no file descriptor left), is refused and counted, and
//! served once others expire. One thread serves every socket through one poll(2); with an
//! impairment, datagrams go into the engine and a release thread per impaired direction sends
//! them at their due time, sleeping then spinning, because socket timeouts are too coarse
//! (milliseconds) to release a `delay=20ms,jitter=1ms` stream faithfully. The proxy thus runs
//! at most three threads of its own (besides the signal thread) whatever the number of
//! clients, and holds at most `max_clients` open files plus a fixed few (plus sockets of
//! expired clients whose datagrams are still held by the forward impairment).

use std::collections::HashMap;
use std::io::{self, ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::auth::Key;
use crate::error::SetupError;
use crate::impair::{ImpairSpec, Impairment};
use crate::net::{self, RecvBatch, SocketOptions};
use crate::report;
use crate::run::{Stop, wait_until};
use crate::summary::{DocumentHeader, ImpairCounters};
use crate::time;
use crate::units;

/// Default of `--max-clients`: clients relayed for at once.
pub const DEFAULT_MAX_CLIENTS: usize = 256;
/// Default of `--client-idle`: a client's relay state is dropped after this long without a
/// datagram in either direction.
pub const DEFAULT_CLIENT_IDLE: Duration = Duration::from_secs(60);
/// Socket buffer asked for when the user gives none: relaying must not be the bottleneck.
const DEFAULT_BUFFER: u64 = 4 << 20;

/// Validated proxy settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub target: SocketAddr,
    pub forward: Option<ImpairSpec>,
    pub reverse: Option<ImpairSpec>,
    /// Zero: no interval lines.
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub buffers: Option<u64>,
    /// Most clients relayed for at once (at least 1); more are refused.
    pub max_clients: usize,
    /// How long a client's relay state outlives its last datagram (either direction).
    pub client_idle: Duration,
    /// With a key, only authenticated udplab datagrams are relayed (both directions); the rest
    /// is counted and dropped before it can claim a client slot.
    pub key: Option<Key>,
}

/// One direction's counters.
#[derive(Debug, Default)]
struct DirCounters {
    received: AtomicU64,
    sent: AtomicU64,
    send_errors: AtomicU64,
    rcvbuf_drops: AtomicU64,
    unauthenticated: AtomicU64,
}

impl DirCounters {
    /// Whether `data` may be relayed: always without a key; with one, only when its tag
    /// verifies (a failure is counted in this direction's `unauthenticated`).
    fn authentic(&self, key: Option<&Key>, data: &[u8]) -> bool {
        let ok = key.is_none_or(|k| k.verify(data).is_some());
        if !ok {
            self.unauthenticated.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

/// One direction's final figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DirectionReport {
    pub received: u64,
    pub sent: u64,
    pub send_errors: u64,
    /// Datagrams the kernel dropped because the proxy's own receive buffer was full (loss the
    /// proxy added, not the impairment); summed over the direction's sockets.
    pub rcvbuf_drops: u64,
    pub impairment: Option<String>,
    pub impair: Option<ImpairCounters>,
    /// With `--key`: datagrams whose tag did not verify, dropped (counted in `received`).
    pub unauthenticated: u64,
}

/// What a proxy run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProxyReport {
    pub listen: String,
    pub target: String,
    pub duration_s: f64,
    /// Clients served: client addresses given relay state (one client that expired and came
    /// back counts twice).
    pub clients: u64,
    /// Clients held when the proxy stopped.
    pub clients_active: u64,
    /// Most clients held at once.
    pub clients_max_concurrent: u64,
    /// New clients refused: beyond `max_clients`, or no socket could be opened for them (out
    /// of file descriptors). The proxy keeps nothing about a refused client, so each of its
    /// datagrams is a new attempt, refused and counted again.
    pub clients_refused: u64,
    /// Clients whose relay state expired after `client_idle_s` without traffic.
    pub clients_expired: u64,
    pub max_clients: u64,
    pub client_idle_s: f64,
    /// Datagrams from refused clients, dropped (not relayed; counted in `forward.received`).
    pub rejected: u64,
    pub forward: DirectionReport,
    pub reverse: DirectionReport,
}

type Released<T> = Arc<(Mutex<Impairment<T>>, Condvar)>;

/// A direction's impairment stage: the engine plus the thread that releases from it.
struct Stage<T: Clone + Send + 'static> {
    shared: Released<T>,
    thread: JoinHandle<()>,
}

impl<T: Clone + Send + 'static> Stage<T> {
    fn start(
        spec: &ImpairSpec,
        done: Arc<AtomicBool>,
        send: impl Fn(T) + Send + 'static,
    ) -> io::Result<Self> {
        let shared: Released<T> = Arc::new((Mutex::new(Impairment::new(spec)), Condvar::new()));
        let s2 = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("udplab-release".into())
            .spawn(move || release_loop(&s2, &done, &send))?;
        Ok(Stage { shared, thread })
    }

    fn offer(&self, now: Instant, item: T, len: usize) {
        let (lock, cv) = &*self.shared;
        let mut imp = lock.lock().unwrap_or_else(|e| e.into_inner());
        let before = imp.poll_timeout();
        imp.handle(now, len, item);
        // Wake the release thread only when the earliest deadline moved earlier.
        if imp.poll_timeout() != before {
            cv.notify_one();
        }
    }

    fn finish(self) -> ImpairCounters {
        self.shared.1.notify_all();
        let _ = self.thread.join();
        let (lock, _) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).counters()
    }
}

fn release_loop<T: Clone>(shared: &Released<T>, done: &AtomicBool, send: &impl Fn(T)) {
    let (lock, cv) = &**shared;
    loop {
        let mut imp = lock.lock().unwrap_or_else(|e| e.into_inner());
        if done.load(Ordering::Relaxed) {
            // Whatever is still inside the emulated network is delivered now.
            let rest = imp.flush_all();
            drop(imp);
            for item in rest {
                send(item);
            }
            return;
        }
        let now = time::now();
        if let Some(item) = imp.poll_release(now) {
            drop(imp);
            send(item);
            continue;
        }
        match imp.poll_timeout() {
            None => {
                let _ = cv.wait_timeout(imp, Duration::from_millis(50));
            }
            Some(t) if t.saturating_duration_since(now) > Duration::from_millis(2) => {
                // Nap on the condvar (new earlier arrivals wake it), spin the rest below.
                let nap = t.saturating_duration_since(now) - Duration::from_millis(1);
                let _ = cv.wait_timeout(imp, nap.min(Duration::from_millis(50)));
            }
            Some(t) => {
                drop(imp);
                wait_until(t, || done.load(Ordering::Relaxed));
            }
        }
    }
}

/// Longest wait in the poll loop: how soon a Ctrl-C or the end of `--duration` is seen.
const MAX_POLL_WAIT: Duration = Duration::from_millis(50);

/// One client's relay state: its own upstream socket (so the target's replies find their way
/// back to it) and when it last sent or was sent anything.
struct Client {
    upstream: Arc<UdpSocket>,
    last_active: Instant,
}

/// Every client the proxy relays for, at most `max` at once; and what became of clients.
struct ClientTable {
    by_addr: HashMap<SocketAddr, Client>,
    max: usize,
    idle: Duration,
    served: u64,
    refused: u64,
    expired: u64,
    max_concurrent: u64,
    /// A client came or went since the poll set was built.
    changed: bool,
}

impl ClientTable {
    fn new(max: usize, idle: Duration) -> Self {
        ClientTable {
            by_addr: HashMap::new(),
            max,
            idle,
            served: 0,
            refused: 0,
            expired: 0,
            max_concurrent: 0,
            changed: true,
        }
    }

    fn admit(&mut self, addr: SocketAddr, upstream: Arc<UdpSocket>, now: Instant) {
        self.by_addr.insert(
            addr,
            Client {
                upstream,
                last_active: now,
            },
        );
        self.served += 1;
        self.max_concurrent = self.max_concurrent.max(self.by_addr.len() as u64);
        self.changed = true;
    }

    fn is_full(&self) -> bool {
        self.by_addr.len() >= self.max
    }

    /// Drops every client silent for the idle time; returns their upstream sockets so their
    /// drop counters can be read before they close.
    fn expire(&mut self, now: Instant) -> Vec<Arc<UdpSocket>> {
        let idle = self.idle;
        let mut gone = Vec::new();
        self.by_addr.retain(|_, c| {
            let keep = now.saturating_duration_since(c.last_active) < idle;
            if !keep {
                gone.push(Arc::clone(&c.upstream));
            }
            keep
        });
        if !gone.is_empty() {
            self.expired += gone.len() as u64;
            self.changed = true;
        }
        gone
    }
}

/// The single-threaded relay: one poll over the listening socket and every client's upstream
/// socket. Impaired directions hand datagrams to their release thread; the rest is sent here.
struct Relay {
    listen: Arc<UdpSocket>,
    target: SocketAddr,
    upstream_opts: SocketOptions,
    clients: ClientTable,
    fwd: Arc<DirCounters>,
    rev: Arc<DirCounters>,
    rejected: u64,
    forward_stage: Option<Stage<(Arc<UdpSocket>, Vec<u8>)>>,
    reverse_stage: Option<Stage<(SocketAddr, Vec<u8>)>>,
    fwd_batch: RecvBatch,
    rev_batch: RecvBatch,
    key: Option<Key>,
    /// Client of poll index i + 1 (index 0 is the listening socket).
    polled: Vec<SocketAddr>,
    poll: net::PollSet,
}

impl Relay {
    fn rebuild_poll_set(&mut self) {
        self.poll.clear();
        self.polled.clear();
        self.poll.push(&self.listen);
        for (addr, c) in &self.clients.by_addr {
            self.poll.push(&c.upstream);
            self.polled.push(*addr);
        }
        self.clients.changed = false;
    }

    /// Waits up to `timeout`, then serves every socket that became readable, one batch each.
    fn poll_once(&mut self, timeout: Duration) -> anyhow::Result<()> {
        if self.clients.changed {
            self.rebuild_poll_set();
        }
        self.poll
            .wait(timeout)
            .context("proxy: waiting for datagrams")?;
        if self.poll.is_ready(0) {
            self.forward()?;
        }
        for i in 0..self.polled.len() {
            if self.poll.is_ready(i + 1) {
                let client = self.polled[i];
                self.reverse(client);
            }
        }
        Ok(())
    }

    /// One batch from the listening socket, relayed to each client's upstream socket.
    fn forward(&mut self) -> anyhow::Result<()> {
        let n = match self.fwd_batch.recv(&self.listen) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock
                        | ErrorKind::TimedOut
                        | ErrorKind::Interrupted
                        | ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e).context("proxy: receiving from clients"),
        };
        let now = time::now();
        // Unimpaired datagrams go out with one sendmmsg per run of the same client.
        let mut run: Vec<&[u8]> = Vec::new();
        let mut run_up: Option<Arc<UdpSocket>> = None;
        for i in 0..n {
            let (data, meta) = self.fwd_batch.get(i);
            self.fwd.received.fetch_add(1, Ordering::Relaxed);
            // Checked before admission: a stranger without the key never takes a client slot.
            if !self.fwd.authentic(self.key.as_ref(), data) {
                continue;
            }
            let Some(up) = upstream_for(
                &mut self.clients,
                self.target,
                &self.upstream_opts,
                meta.src,
                now,
            ) else {
                self.rejected += 1;
                continue;
            };
            match &self.forward_stage {
                Some(stage) => stage.offer(now, (up, data.to_vec()), data.len()),
                None => {
                    if run_up.as_ref().is_some_and(|r| !Arc::ptr_eq(r, &up)) {
                        relay_run(&self.fwd, run_up.as_deref(), &mut run);
                    }
                    run_up = Some(up);
                    run.push(data);
                }
            }
        }
        relay_run(&self.fwd, run_up.as_deref(), &mut run);
        Ok(())
    }

    /// One batch from a client's upstream socket, relayed back to the client.
    fn reverse(&mut self, client: SocketAddr) {
        let Some(c) = self.clients.by_addr.get_mut(&client) else {
            return;
        };
        let n = match self.rev_batch.recv(&c.upstream) {
            Ok(n) => n,
            Err(_) => return, // ICMP errors from a target not yet up, spurious wake-ups
        };
        let now = time::now();
        c.last_active = now;
        for i in 0..n {
            let (data, _) = self.rev_batch.get(i);
            self.rev.received.fetch_add(1, Ordering::Relaxed);
            if !self.rev.authentic(self.key.as_ref(), data) {
                continue;
            }
            match &self.reverse_stage {
                Some(s) => s.offer(now, (client, data.to_vec()), data.len()),
                None => count_send(&self.rev, self.listen.send_to(data, client)),
            }
        }
    }

    /// Expires idle clients, adding what their sockets dropped to the reverse direction.
    fn expire(&mut self, now: Instant) {
        for up in self.clients.expire(now) {
            self.count_upstream_drops(&up);
        }
    }

    fn count_upstream_drops(&self, up: &UdpSocket) {
        if let Ok(n) = net::socket_drops(up) {
            self.rev.rcvbuf_drops.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The upstream socket of a client, admitting a new one when there is room and a file
/// descriptor for its socket; `None` means refused (counted). Takes the relay's fields, not
/// the relay: its caller holds a borrow of the receive batch.
fn upstream_for(
    clients: &mut ClientTable,
    target: SocketAddr,
    opts: &SocketOptions,
    src: SocketAddr,
    now: Instant,
) -> Option<Arc<UdpSocket>> {
    if let Some(c) = clients.by_addr.get_mut(&src) {
        c.last_active = now;
        return Some(Arc::clone(&c.upstream));
    }
    if clients.is_full() {
        clients.refused += 1;
        super::warn(&format!(
            "proxy: {} clients (--max-clients) are being relayed for: new clients are refused \
             (counted in clients_refused) until some stay idle for {} and expire",
            clients.max,
            units::format_duration_ns(clients.idle.as_nanos() as f64)
        ));
        return None;
    }
    match upstream_socket(target, opts) {
        Ok(up) => {
            let up = Arc::new(up);
            clients.admit(src, Arc::clone(&up), now);
            Some(up)
        }
        Err(e) => {
            // Out of file descriptors (or any other socket failure once the target was
            // reachable at start): this client is refused, the proxy goes on.
            clients.refused += 1;
            super::warn(&format!(
                "proxy: no socket for a new client ({e}): such clients are refused (counted \
                 in clients_refused) until others expire; raise `ulimit -n` or lower \
                 --max-clients"
            ));
            None
        }
    }
}

/// Runs the proxy until Ctrl-C or `duration`, printing `proxy listening on ADDR` first.
pub fn run(cfg: &ProxyConfig, stop: &Stop) -> anyhow::Result<ProxyReport> {
    let buffers = Some(cfg.buffers.unwrap_or(DEFAULT_BUFFER));
    let opts = SocketOptions {
        rcvbuf: buffers,
        sndbuf: buffers,
        rxq_overflow: true,
        ..SocketOptions::default()
    };
    let listen = net::bind(cfg.listen, &opts).map_err(|e| SetupError(e.to_string()))?;
    if cfg.buffers.is_some() {
        for w in &listen.warnings {
            crate::run::warn(w);
        }
    }
    // Upstream sockets' drops are read once, when they close (SO_MEMINFO), so they need no
    // per-datagram counter.
    let upstream_opts = SocketOptions {
        rxq_overflow: false,
        ..opts.clone()
    };
    // A target the proxy can never reach is a setup error now, not a refusal per client.
    drop(upstream_socket(cfg.target, &upstream_opts).map_err(SetupError)?);
    let local = listen.local_addr;
    let listen_sock = Arc::new(listen.socket);
    // Only read once poll(2) says so; the timeout guards against a spurious wake-up.
    listen_sock.set_read_timeout(Some(MAX_POLL_WAIT))?;
    {
        let mut out = io::stdout().lock();
        writeln!(
            out,
            "proxy listening on {local}, relaying to {}",
            cfg.target
        )?;
        out.flush()?;
    }
    let started = time::now();
    let done = Arc::new(AtomicBool::new(false));
    let fwd = Arc::new(DirCounters::default());
    let rev = Arc::new(DirCounters::default());

    // Forward stage: items carry the client's upstream socket (kept open while queued).
    let forward_stage = match &cfg.forward {
        Some(spec) => {
            let fwd = Arc::clone(&fwd);
            Some(Stage::start(
                spec,
                Arc::clone(&done),
                move |(up, data): (Arc<UdpSocket>, Vec<u8>)| {
                    count_send(&fwd, up.send(&data));
                },
            )?)
        }
        None => None,
    };
    // Reverse stage: items carry the client address; sent from the listening socket.
    let reverse_stage = match &cfg.reverse {
        Some(spec) => {
            let rev = Arc::clone(&rev);
            let ls = Arc::clone(&listen_sock);
            Some(Stage::start(
                spec,
                Arc::clone(&done),
                move |(to, data): (SocketAddr, Vec<u8>)| {
                    count_send(&rev, ls.send_to(&data, to));
                },
            )?)
        }
        None => None,
    };

    let mut relay = Relay {
        listen: listen_sock,
        target: cfg.target,
        upstream_opts,
        clients: ClientTable::new(cfg.max_clients.max(1), cfg.client_idle),
        fwd: Arc::clone(&fwd),
        rev: Arc::clone(&rev),
        rejected: 0,
        forward_stage,
        reverse_stage,
        fwd_batch: RecvBatch::new(64, 65536),
        rev_batch: RecvBatch::new(64, 65536),
        key: cfg.key.clone(),
        polled: Vec::new(),
        poll: net::PollSet::new(),
    };
    // Idle clients are looked for four times per idle time (at most once a second), so one
    // expires between `client_idle` and 1.25 × `client_idle` after its last datagram.
    let sweep_every = (cfg.client_idle / 4).clamp(Duration::from_millis(1), Duration::from_secs(1));
    let mut next_sweep = started + sweep_every;
    let mut next_line = (cfg.interval > Duration::ZERO).then(|| started + cfg.interval);
    let mut prev = (0u64, 0u64);
    loop {
        let now = time::now();
        if stop.requested() || cfg.duration.is_some_and(|d| now >= started + d) {
            break;
        }
        if now >= next_sweep {
            relay.expire(now);
            next_sweep = now + sweep_every;
        }
        if let Some(t) = next_line
            && now >= t
        {
            let f = fwd.sent.load(Ordering::Relaxed);
            let r = rev.sent.load(Ordering::Relaxed);
            super::print_stderr(&format!(
                "[{:7.2} s] forward: received {} relayed {} (+{}) | reverse: received {} relayed {} (+{}) | clients: active {} refused {} expired {}",
                now.saturating_duration_since(started).as_secs_f64(),
                fwd.received.load(Ordering::Relaxed),
                f,
                f - prev.0,
                rev.received.load(Ordering::Relaxed),
                r,
                r - prev.1,
                relay.clients.by_addr.len(),
                relay.clients.refused,
                relay.clients.expired,
            ));
            prev = (f, r);
            next_line = Some(t + cfg.interval);
        }
        let mut wake = (now + MAX_POLL_WAIT).min(next_sweep);
        if let Some(t) = next_line {
            wake = wake.min(t);
        }
        relay.poll_once(wake.saturating_duration_since(now))?;
    }
    done.store(true, Ordering::Relaxed);
    if let Ok(Some(n)) = relay.fwd_batch.refresh_rxq_dropped(&relay.listen) {
        fwd.rcvbuf_drops.fetch_add(n, Ordering::Relaxed);
    }
    for c in relay.clients.by_addr.values() {
        relay.count_upstream_drops(&c.upstream);
    }
    let forward_impair = relay.forward_stage.take().map(Stage::finish);
    let reverse_impair = relay.reverse_stage.take().map(Stage::finish);
    let dir =
        |c: &DirCounters, spec: &Option<ImpairSpec>, imp: Option<ImpairCounters>| DirectionReport {
            received: c.received.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            send_errors: c.send_errors.load(Ordering::Relaxed),
            rcvbuf_drops: c.rcvbuf_drops.load(Ordering::Relaxed),
            impairment: spec.as_ref().map(ToString::to_string),
            impair: imp,
            unauthenticated: c.unauthenticated.load(Ordering::Relaxed),
        };
    let t = &relay.clients;
    Ok(ProxyReport {
        listen: local.to_string(),
        target: cfg.target.to_string(),
        duration_s: time::now().saturating_duration_since(started).as_secs_f64(),
        clients: t.served,
        clients_active: t.by_addr.len() as u64,
        clients_max_concurrent: t.max_concurrent,
        clients_refused: t.refused,
        clients_expired: t.expired,
        max_clients: t.max as u64,
        client_idle_s: t.idle.as_secs_f64(),
        rejected: relay.rejected,
        forward: dir(&fwd, &cfg.forward, forward_impair),
        reverse: dir(&rev, &cfg.reverse, reverse_impair),
    })
}

/// A new client's socket toward the target: bound to an ephemeral port and connected, so the
/// target sees one address per client and its replies arrive on this socket only.
fn upstream_socket(target: SocketAddr, opts: &SocketOptions) -> Result<UdpSocket, String> {
    let b = net::bind(net::unspecified_for(&target), opts).map_err(|e| e.to_string())?;
    b.socket
        .connect(target)
        .map_err(|e| format!("proxy: connecting to {target}: {e}"))?;
    // Only read once poll(2) says so; the timeout guards against a spurious wake-up.
    b.socket
        .set_read_timeout(Some(MAX_POLL_WAIT))
        .map_err(|e| e.to_string())?;
    Ok(b.socket)
}

/// Sends a run of datagrams to one upstream socket; a datagram the kernel refuses is counted
/// as a send error and skipped.
fn relay_run(c: &DirCounters, up: Option<&UdpSocket>, run: &mut Vec<&[u8]>) {
    let Some(up) = up else {
        return;
    };
    let mut off = 0;
    while off < run.len() {
        match net::send_each(up, &run[off..]) {
            Ok(0) | Err(_) => {
                c.send_errors.fetch_add(1, Ordering::Relaxed);
                off += 1;
            }
            Ok(k) => {
                c.sent.fetch_add(k as u64, Ordering::Relaxed);
                off += k;
            }
        }
    }
    run.clear();
}

fn count_send(c: &DirCounters, r: io::Result<usize>) {
    match r {
        Ok(_) => c.sent.fetch_add(1, Ordering::Relaxed),
        Err(_) => c.send_errors.fetch_add(1, Ordering::Relaxed),
    };
}

/// `schema` of the proxy's JSON document.
pub const PROXY_SCHEMA: &str = "udplab.proxy.v2";

/// The proxy's JSON document: the header every udplab document starts with, then the counters.
#[derive(Serialize)]
struct ProxyDocument<'a> {
    #[serde(flatten)]
    header: DocumentHeader,
    #[serde(flatten)]
    report: &'a ProxyReport,
}

/// Writes the proxy's final counters as a pretty JSON document (`--json`).
pub fn write_json<W: Write>(w: W, r: &ProxyReport) -> io::Result<()> {
    report::write_document(
        w,
        &ProxyDocument {
            header: report::document_header(PROXY_SCHEMA),
            report: r,
        },
    )
}

/// Prints the final counters.
pub fn write_summary(w: &mut dyn Write, r: &ProxyReport) -> io::Result<()> {
    writeln!(
        w,
        "proxy {} -> {}: {:.2} s, {} client(s) served (at most {} at once, limit {}), {} active at the end, {} expired after {} idle, {} refused{}",
        r.listen,
        r.target,
        r.duration_s,
        r.clients,
        r.clients_max_concurrent,
        r.max_clients,
        r.clients_active,
        r.clients_expired,
        units::format_duration_ns(r.client_idle_s * 1e9),
        r.clients_refused,
        if r.rejected > 0 {
            format!(" ({} datagrams dropped)", r.rejected)
        } else {
            String::new()
        }
    )?;
    for (name, d) in [("forward", &r.forward), ("reverse", &r.reverse)] {
        write!(
            w,
            "  {name:<8} received {:>10}  relayed {:>10}  send errors {}  dropped at the proxy's receive buffer {}",
            d.received, d.sent, d.send_errors, d.rcvbuf_drops
        )?;
        if d.unauthenticated > 0 {
            write!(w, "  unauthenticated (dropped) {}", d.unauthenticated)?;
        }
        match (&d.impairment, &d.impair) {
            (Some(spec), Some(c)) => writeln!(
                w,
                "\n           impairment {spec}: dropped {} (queue {}), duplicated {}, delayed {}, reordered {}",
                c.dropped, c.queue_dropped, c.duplicated, c.delayed, c.reordered
            )?,
            _ => writeln!(w)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket() -> Arc<UdpSocket> {
        Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn the_table_holds_at_most_max_clients_and_expires_only_idle_ones() {
        let idle = Duration::from_secs(60);
        let t0 = time::now();
        let mut table = ClientTable::new(2, idle);
        table.admit(addr(1), socket(), t0);
        assert!(!table.is_full());
        table.admit(addr(2), socket(), t0 + Duration::from_secs(30));
        assert!(table.is_full());
        assert_eq!(table.max_concurrent, 2);
        // Just before the idle time nobody goes; at it, only the older client does.
        assert!(table.expire(t0 + idle - Duration::from_nanos(1)).is_empty());
        assert_eq!(table.expire(t0 + idle).len(), 1);
        assert!(table.by_addr.contains_key(&addr(2)));
        assert!(!table.is_full(), "an expired client frees its place");
        assert_eq!((table.served, table.expired), (2, 1));
        table.admit(addr(3), socket(), t0 + idle);
        assert_eq!((table.served, table.max_concurrent), (3, 2));
    }

    #[test]
    fn traffic_keeps_a_client_and_a_full_table_refuses_and_counts() {
        let idle = Duration::from_millis(200);
        let t0 = time::now();
        let target = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target_addr = target.local_addr().unwrap();
        let opts = SocketOptions::default();
        let mut table = ClientTable::new(1, idle);
        let first = upstream_for(&mut table, target_addr, &opts, addr(1), t0).unwrap();
        // The same client gets the same socket, and its datagram renews it.
        let again = upstream_for(&mut table, target_addr, &opts, addr(1), t0 + idle / 2).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert!(upstream_for(&mut table, target_addr, &opts, addr(2), t0 + idle / 2).is_none());
        assert_eq!(table.refused, 1);
        assert!(table.expire(t0 + idle).is_empty(), "renewed at idle / 2");
        assert_eq!(table.expire(t0 + idle + idle / 2).len(), 1);
        assert!(upstream_for(&mut table, target_addr, &opts, addr(2), t0 + 2 * idle).is_some());
        assert_eq!((table.served, table.refused, table.expired), (2, 1, 1));
    }

    #[test]
    fn the_summary_names_every_client_figure() {
        let r = ProxyReport {
            clients: 70,
            clients_active: 3,
            clients_max_concurrent: 64,
            clients_refused: 1936,
            clients_expired: 67,
            max_clients: 64,
            client_idle_s: 60.0,
            rejected: 1936,
            ..ProxyReport::default()
        };
        let mut out = Vec::new();
        write_summary(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        let first = text.lines().next().unwrap();
        assert!(
            first.contains("70 client(s) served (at most 64 at once, limit 64), 3 active at the end, 67 expired after 60.0 s idle, 1936 refused (1936 datagrams dropped)"),
            "{first}"
        );
    }

    #[test]
    fn the_json_document_has_the_common_header_then_the_counters() {
        let r = ProxyReport {
            listen: "127.0.0.1:7000".into(),
            forward: DirectionReport {
                received: 10,
                sent: 9,
                ..DirectionReport::default()
            },
            ..ProxyReport::default()
        };
        let mut out = Vec::new();
        write_json(&mut out, &r).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["version"], crate::summary::REPORT_VERSION);
        assert_eq!(v["schema"], PROXY_SCHEMA);
        assert_eq!(v["tool"], "udplab");
        assert_eq!(v["tool_version"], env!("CARGO_PKG_VERSION"));
        assert!(v["command"].is_string());
        assert_eq!(v["listen"], "127.0.0.1:7000");
        assert_eq!(v["forward"]["sent"], 9);
        for field in [
            "clients",
            "clients_active",
            "clients_max_concurrent",
            "clients_refused",
            "clients_expired",
            "max_clients",
            "client_idle_s",
        ] {
            assert!(v[field].is_number(), "{field}");
        }
    }
}
