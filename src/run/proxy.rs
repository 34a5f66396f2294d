//! `udplab proxy`: relays any UDP traffic between clients and one target, impairing each
//! direction with the shared sans-IO engine, and counts what it did.
//!
//! Each client address gets its own upstream socket (so replies find their way back). A relay
//! thread reads each direction; with an impairment, datagrams go into the engine and a release
//! thread sends them at their due time, sleeping then spinning, because socket timeouts are too
//! coarse (milliseconds) to release a `delay=20ms,jitter=1ms` stream faithfully.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::error::SetupError;
use crate::impair::{ImpairSpec, Impairment};
use crate::net::{self, RecvBatch, SocketOptions};
use crate::report;
use crate::run::{Stop, wait_until};
use crate::summary::{DocumentHeader, ImpairCounters};
use crate::time;

/// Most clients one proxy relays for; datagrams from more are counted and dropped.
const MAX_CLIENTS: usize = 1024;
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
}

/// One direction's counters.
#[derive(Debug, Default)]
struct DirCounters {
    received: AtomicU64,
    sent: AtomicU64,
    send_errors: AtomicU64,
    rcvbuf_drops: AtomicU64,
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
}

/// What a proxy run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProxyReport {
    pub listen: String,
    pub target: String,
    pub duration_s: f64,
    pub clients: u64,
    /// Datagrams from clients beyond the client limit, dropped.
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
            eprintln!("warning: {w}");
        }
    }
    let local = listen.local_addr;
    let listen_sock = Arc::new(listen.socket);
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
    let rejected = Arc::new(AtomicU64::new(0));

    // Forward stage: items carry the client's upstream socket.
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
            Some(Arc::new(Stage::start(
                spec,
                Arc::clone(&done),
                move |(to, data): (SocketAddr, Vec<u8>)| {
                    count_send(&rev, ls.send_to(&data, to));
                },
            )?))
        }
        None => None,
    };

    let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut reverse_threads = Vec::new();
    let mut batch = RecvBatch::new(64, 65536);
    listen_sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut next_line = (cfg.interval > Duration::ZERO).then(|| started + cfg.interval);
    let mut prev = (0u64, 0u64);
    loop {
        let now = time::now();
        if stop.requested() || cfg.duration.is_some_and(|d| now >= started + d) {
            break;
        }
        if let Some(t) = next_line
            && now >= t
        {
            let f = fwd.sent.load(Ordering::Relaxed);
            let r = rev.sent.load(Ordering::Relaxed);
            eprintln!(
                "[{:7.2} s] forward: received {} relayed {} (+{}) | reverse: received {} relayed {} (+{})",
                now.saturating_duration_since(started).as_secs_f64(),
                fwd.received.load(Ordering::Relaxed),
                f,
                f - prev.0,
                rev.received.load(Ordering::Relaxed),
                r,
                r - prev.1
            );
            prev = (f, r);
            next_line = Some(t + cfg.interval);
        }
        let n = match batch.recv(&listen_sock) {
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
                continue;
            }
            Err(e) => return Err(e).context("proxy: receiving from clients"),
        };
        let now = time::now();
        // Unimpaired datagrams go out with one sendmmsg per run of the same client.
        let mut run: Vec<&[u8]> = Vec::new();
        let mut run_up: Option<Arc<UdpSocket>> = None;
        for i in 0..n {
            let (data, meta) = batch.get(i);
            fwd.received.fetch_add(1, Ordering::Relaxed);
            let up = match clients.get(&meta.src) {
                Some(up) => Arc::clone(up),
                None => {
                    if clients.len() >= MAX_CLIENTS {
                        rejected.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let up = Arc::new(upstream_socket(cfg.target, &opts)?);
                    clients.insert(meta.src, Arc::clone(&up));
                    reverse_threads.push(spawn_reverse(
                        Arc::clone(&up),
                        meta.src,
                        Arc::clone(&listen_sock),
                        reverse_stage.clone(),
                        Arc::clone(&rev),
                        Arc::clone(&done),
                    )?);
                    up
                }
            };
            match &forward_stage {
                Some(stage) => stage.offer(now, (up, data.to_vec()), data.len()),
                None => {
                    if run_up.as_ref().is_some_and(|r| !Arc::ptr_eq(r, &up)) {
                        relay_run(&fwd, run_up.as_deref(), &mut run);
                    }
                    run_up = Some(up);
                    run.push(data);
                }
            }
        }
        relay_run(&fwd, run_up.as_deref(), &mut run);
    }
    done.store(true, Ordering::Relaxed);
    if let Ok(Some(n)) = batch.refresh_rxq_dropped(&listen_sock) {
        fwd.rcvbuf_drops.fetch_add(n, Ordering::Relaxed);
    }
    for t in reverse_threads {
        let _ = t.join();
    }
    let forward_impair = forward_stage.map(Stage::finish);
    let reverse_impair = reverse_stage
        .and_then(|s| Arc::try_unwrap(s).ok())
        .map(Stage::finish);
    let dir =
        |c: &DirCounters, spec: &Option<ImpairSpec>, imp: Option<ImpairCounters>| DirectionReport {
            received: c.received.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            send_errors: c.send_errors.load(Ordering::Relaxed),
            rcvbuf_drops: c.rcvbuf_drops.load(Ordering::Relaxed),
            impairment: spec.as_ref().map(ToString::to_string),
            impair: imp,
        };
    Ok(ProxyReport {
        listen: local.to_string(),
        target: cfg.target.to_string(),
        duration_s: time::now().saturating_duration_since(started).as_secs_f64(),
        clients: clients.len() as u64,
        rejected: rejected.load(Ordering::Relaxed),
        forward: dir(&fwd, &cfg.forward, forward_impair),
        reverse: dir(&rev, &cfg.reverse, reverse_impair),
    })
}

fn upstream_socket(target: SocketAddr, opts: &SocketOptions) -> anyhow::Result<UdpSocket> {
    let b =
        net::bind(net::unspecified_for(&target), opts).map_err(|e| SetupError(e.to_string()))?;
    b.socket
        .connect(target)
        .with_context(|| format!("proxy: connecting to {target}"))?;
    b.socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(b.socket)
}

type ReverseStage = Option<Arc<Stage<(SocketAddr, Vec<u8>)>>>;

fn spawn_reverse(
    up: Arc<UdpSocket>,
    client: SocketAddr,
    listen: Arc<UdpSocket>,
    stage: ReverseStage,
    rev: Arc<DirCounters>,
    done: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("udplab-reverse".into())
        .spawn(move || {
            let mut batch = RecvBatch::new(64, 65536);
            while !done.load(Ordering::Relaxed) {
                let n = match batch.recv(&up) {
                    Ok(n) => n,
                    Err(_) => continue, // timeouts, and ICMP errors from a target not yet up
                };
                let now = time::now();
                for i in 0..n {
                    let (data, _) = batch.get(i);
                    rev.received.fetch_add(1, Ordering::Relaxed);
                    match &stage {
                        Some(s) => s.offer(now, (client, data.to_vec()), data.len()),
                        None => count_send(&rev, listen.send_to(data, client)),
                    }
                }
            }
            if let Ok(Some(n)) = batch.refresh_rxq_dropped(&up) {
                rev.rcvbuf_drops.fetch_add(n, Ordering::Relaxed);
            }
        })
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
        "proxy {} -> {}: {:.2} s, {} client(s){}",
        r.listen,
        r.target,
        r.duration_s,
        r.clients,
        if r.rejected > 0 {
            format!(
                ", {} datagrams from clients over the limit dropped",
                r.rejected
            )
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
    }
}
