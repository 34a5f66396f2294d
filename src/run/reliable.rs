//! `--reliable` over real sockets: the sender's thread that drives the sans-IO `ArqSender`
//! (pacing slots become offers, retransmissions go first, ACKs are read between sends, timers
//! wait in ppoll, never in a busy loop), the loopback impairment of the ACK direction, and the
//! ARQ settings a run builds from its options.

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::arq::{
    AckFrame, ArqConfig, ArqDeadline, ArqOrdering, ArqReport, ArqSender, ArqSenderStats,
};
use crate::auth::Key;
use crate::cli::ReliableArg;
use crate::config::ReliableSettings;
use crate::impair::{ImpairSpec, Impairment};
use crate::net::{self, RecvBatch, SendMode};
use crate::pacing::{Pacer, Pattern};
use crate::stats::LatencyHistogram;
use crate::summary::{ImpairCounters, ReliableReport};
use crate::time;
use crate::wire::{self, Message};

use super::send::{DataResult, LiveCounters, count_error};

/// Smallest `--size` with `--reliable`: the RData header.
pub const MIN_RELIABLE_SIZE: usize = crate::arq::frame::RDATA_HEADER_LEN;

/// The ACK direction's impairment seed is the data direction's, changed, so the two
/// directions get independent fates from one `seed=`.
const ACK_SEED_SALT: u64 = 0xACC0_5EED_0000_0001;

/// Longest the thread waits without looking at `halt`.
const MAX_WAIT: Duration = Duration::from_millis(20);
/// The last stretch before a deadline is waited by yielding, not in ppoll: a sleeping thread
/// wakes some tens of microseconds late.
const SPIN: Duration = Duration::from_micros(60);

/// The ARQ configuration of a run: the layer's defaults, the user's tuning, the handshake's
/// round trip as the first RTT estimate.
pub fn arq_config(
    r: &ReliableSettings,
    payload: usize,
    initial_rtt_ns: u64,
    pps: Option<f64>,
) -> ArqConfig {
    let defaults = ArqConfig::default();
    let (ordering, deadline) = match r.mode {
        ReliableArg::Ordered => (ArqOrdering::Ordered, ArqDeadline::None),
        ReliableArg::Unordered => (ArqOrdering::Unordered, ArqDeadline::None),
        ReliableArg::Deadline(d) => (
            ArqOrdering::Ordered,
            ArqDeadline::After {
                ns: u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            },
        ),
        ReliableArg::DeadlineRtt(t) => (
            ArqOrdering::Ordered,
            ArqDeadline::RttMultiple { times_1000: t },
        ),
    };
    ArqConfig {
        ordering,
        deadline,
        rexmit_budget: r.rexmit_budget.unwrap_or(defaults.rexmit_budget),
        max_in_flight: r.window.unwrap_or(defaults.max_in_flight),
        recv_window: r
            .window
            .map_or(defaults.recv_window, |w| defaults.recv_window.max(w)),
        max_transmissions: r.max_transmissions.unwrap_or(defaults.max_transmissions),
        idle_give_up_ns: r.give_up.map_or(defaults.idle_give_up_ns, |d| {
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
        }),
        initial_rtt_ns: if initial_rtt_ns > 0 {
            initial_rtt_ns
        } else {
            defaults.initial_rtt_ns
        },
        payload_size: payload as u32,
        repeat_from_transmission: r.repeat_from.unwrap_or(defaults.repeat_from_transmission),
        // Unpaced (--rate max): 0, the window alone limits.
        send_interval_ns: pps
            .filter(|p| p.is_finite() && *p > 0.0)
            .map_or(0, |p| (1e9 / p) as u64),
        ..defaults
    }
}

/// The mode as the report names it (`ordered`, `unordered`, `deadline=10ms`, `deadline=4rtt`).
pub fn mode_name(mode: ReliableArg) -> String {
    match mode {
        ReliableArg::Ordered => "ordered".into(),
        ReliableArg::Unordered => "unordered".into(),
        ReliableArg::Deadline(d) => format!("deadline={}", short_duration(d)),
        ReliableArg::DeadlineRtt(t) if t % 1000 == 0 => format!("deadline={}rtt", t / 1000),
        ReliableArg::DeadlineRtt(t) => format!("deadline={}rtt", f64::from(t) / 1000.0),
    }
}

/// `10ms`, `1500us`, `2s`: the largest unit that writes `d` exactly, as the user would.
fn short_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    for (unit, name) in [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")] {
        if ns.is_multiple_of(unit) {
            return format!("{}{name}", ns / unit);
        }
    }
    format!("{ns}ns")
}

/// What the reliable data thread needs, moved into it.
pub(super) struct ReliablePlan {
    pub session_id: u32,
    pub payload: usize,
    pub pps: Option<f64>,
    pub pattern: Pattern,
    pub seed: u64,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    /// Impairment of the data direction, before the socket.
    pub impair: Option<ImpairSpec>,
    /// Loopback: the same impairment hits the ACKs as they arrive (with its own fates).
    pub impair_acks: bool,
    pub cpu: Option<usize>,
    pub key: Option<Key>,
    pub arq: ArqConfig,
    /// Where the datagrams that are not ACKs (the receiver's control) go, already opened.
    pub control: mpsc::Sender<Vec<u8>>,
}

/// What the reliable data thread did, beyond what a plain run reports.
pub(super) struct ReliableResult {
    pub arq: ArqSenderStats,
    /// ACK datagrams that reached the sender's socket for this test (before the loopback's
    /// ACK impairment), and their bytes.
    pub acks_received: u64,
    pub ack_bytes_received: u64,
    /// The ACK direction's impairment counters (loopback).
    pub ack_impair: Option<ImpairCounters>,
    /// Replies whose `--key` tag did not verify.
    pub unauthenticated: u64,
    /// Pacing slots that found the window full (no new message could be queued).
    pub window_blocked: u64,
    /// Messages offered (queued by the ARQ layer).
    pub messages: u64,
    /// The layer's settings (the report carries them).
    pub config: ArqConfig,
    /// From the first transmission until everything was acknowledged or given up, ns.
    pub transfer_ns: u64,
}

/// The run's `--reliable` report: the sender's figures with the receiver's (when its results
/// came back), merged by the ARQ layer.
pub(super) fn report(
    settings: &ReliableSettings,
    result: ReliableResult,
    receiver: Option<&crate::summary::ReceiverReport>,
    impaired: bool,
) -> ReliableReport {
    let receiver_stats = receiver.and_then(|r| r.reliable.clone());
    ReliableReport {
        mode: mode_name(settings.mode),
        impaired: match (impaired, settings.impair_acks) {
            (false, _) => "none",
            (true, false) => "data",
            (true, true) => "data+acks",
        }
        .into(),
        receiver_results: receiver_stats.is_some(),
        window_blocked: result.window_blocked,
        ack_impair_counters: result.ack_impair,
        arq: ArqReport::new(
            Some(result.config),
            result.arq,
            receiver_stats.unwrap_or_default(),
            result.transfer_ns,
        ),
        flows_combined: None,
    }
}

/// Monotonic nanoseconds since `origin` (the ARQ layer's clock).
fn mono_ns(origin: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// The timed reliable data path: paced offers, ARQ transmissions, ACKs, timers.
pub(super) fn sender_loop(
    sock: &UdpSocket,
    mut plan: ReliablePlan,
    halt: &AtomicBool,
    live: &LiveCounters,
) -> (DataResult, ReliableResult) {
    let mut warnings = Vec::new();
    if let Some(cpu) = plan.cpu
        && let Err(e) = net::pin_current_thread(cpu)
    {
        warnings.push(format!("could not pin the send thread to CPU {cpu}: {e}"));
    }
    net::tighten_timer_slack();
    if let Err(e) = sock.set_nonblocking(true) {
        warnings.push(format!("could not make the socket non-blocking: {e}"));
    }
    let payload = plan.payload;
    let origin = time::now();
    let start = origin;
    let end = plan.duration.map(|d| start + d);
    let limit = plan.count.unwrap_or(u64::MAX);
    let mut arq = ArqSender::new(plan.arq.clone(), plan.session_id, 0);
    let mut pacer = plan
        .pps
        .map(|pps| Pacer::new(start, pps, plan.pattern, plan.seed));
    let mut lateness = pacer.as_ref().map(|_| LatencyHistogram::new());
    let mut data_imp: Option<Impairment<Vec<u8>>> = plan.impair.as_ref().map(Impairment::new);
    let mut ack_imp: Option<Impairment<Vec<u8>>> =
        plan.impair.filter(|_| plan.impair_acks).map(|spec| {
            Impairment::new(&ImpairSpec {
                seed: spec.seed ^ ACK_SEED_SALT,
                ..spec
            })
        });
    let mut data = DataResult {
        sent: 0,
        bytes: 0,
        errors_enobufs: 0,
        errors_eagain: 0,
        errors_emsgsize: 0,
        errors_other: 0,
        first: None,
        last: None,
        lateness: None,
        gaps: LatencyHistogram::new(),
        release_lateness: LatencyHistogram::new(),
        impair: None,
        mode: SendMode::Plain,
        warnings: Vec::new(),
    };
    let mut res = ReliableResult {
        arq: arq.stats(),
        acks_received: 0,
        ack_bytes_received: 0,
        ack_impair: None,
        unauthenticated: 0,
        window_blocked: 0,
        messages: 0,
        config: plan.arq.clone(),
        transfer_ns: 0,
    };
    let key = plan.key.take();
    let mut buf = vec![0u8; payload];
    let mut batch = RecvBatch::new(32, 2048);
    let mut finished = false;
    let halted = || halt.load(Ordering::Relaxed);
    loop {
        if halted() {
            break;
        }
        let now = time::now();
        let now_ns = mono_ns(origin, now);
        // Frames carry the wall clock (the receiver's one-way latency needs a common clock):
        // re-read with each round so NTP's slewing of the wall clock is followed.
        arq.set_wall_clock(now_ns, time::wall_ns());
        // New messages: one per pacing slot (window permitting), or as many as the window
        // takes when unpaced (window-limited bulk). Every slot also earns the layer its
        // retransmission allowance, so slots keep coming after the last new message until
        // everything is acknowledged.
        if !finished && (end.is_some_and(|e| now >= e) || res.messages >= limit) {
            arq.finish();
            finished = true;
        }
        match pacer.as_mut() {
            None if finished => {
                arq.offer(now_ns);
            }
            None => {
                while res.messages < limit && arq.offer(now_ns) {
                    res.messages += 1;
                }
            }
            Some(p) => {
                while p.next_deadline() <= now {
                    let due = p.advance();
                    if !finished && (res.messages >= limit || end.is_some_and(|e| due >= e)) {
                        arq.finish();
                        finished = true;
                    }
                    if finished {
                        arq.offer(now_ns);
                        continue;
                    }
                    if let Some(l) = lateness.as_mut() {
                        l.record((now - due).as_nanos() as u64);
                    }
                    if arq.offer(now_ns) {
                        res.messages += 1;
                    } else {
                        res.window_blocked += 1;
                    }
                }
            }
        }
        // ACKs (and the receiver's control) that arrived, before the timers: after a stall of
        // this thread (a loaded CPU), ACKs waiting in the socket must count before a probe
        // timeout that only looks due because nobody read them.
        receive(
            sock,
            &mut batch,
            &key,
            &mut res,
            &plan.control,
            |bytes| match ack_imp.as_mut() {
                None => {
                    if let Some(ack) = decode_ack(bytes, plan.session_id) {
                        arq.handle_ack(mono_ns(origin, time::now()), &ack);
                    }
                }
                Some(imp) => {
                    let _ = imp.handle(time::now(), bytes.len(), bytes.to_vec());
                }
            },
        );
        if let Some(imp) = ack_imp.as_mut() {
            let now = time::now();
            while imp.poll_timeout().is_some_and(|t| t <= now) {
                let Some(bytes) = imp.poll_release(now) else {
                    break;
                };
                if let Some(ack) = decode_ack(&bytes, plan.session_id) {
                    arq.handle_ack(mono_ns(origin, now), &ack);
                }
            }
        }
        // The layer's clock never goes back: the ACKs above were handled at later times.
        let now_ns = mono_ns(origin, time::now());
        if arq.poll_timeout().is_some_and(|t| t <= now_ns) {
            arq.handle_timeout(now_ns);
        }
        // Probes and retransmissions first (the layer orders them), then new messages.
        while let Some(frame) = arq.poll_transmit(now_ns) {
            frame.write(&mut buf);
            if let Some(k) = &key {
                k.sign(&mut buf);
            }
            let t = time::now();
            match data.last {
                None => data.first = Some(t),
                Some(prev) => data.gaps.record((t - prev).as_nanos() as u64),
            }
            data.last = Some(t);
            data.sent += 1;
            data.bytes += payload as u64;
            match data_imp.as_mut() {
                None => {
                    if let Err(e) = sock.send(&buf) {
                        count_send_error(&mut data, &e);
                    }
                }
                Some(imp) => {
                    let _ = imp.handle(t, payload, buf.clone());
                }
            }
        }
        if let Some(imp) = data_imp.as_mut() {
            release_data(imp, sock, time::now(), &mut data);
        }
        let stats = arq.stats();
        live.retransmissions
            .store(stats.retransmissions, Ordering::Relaxed);
        live.spurious
            .store(stats.spurious_retransmissions, Ordering::Relaxed);
        live.messages_acked
            .store(stats.messages_acked, Ordering::Relaxed);
        live.srtt_ns.store(stats.srtt_ns, Ordering::Relaxed);
        live.sent.store(data.sent, Ordering::Relaxed);
        live.bytes.store(data.bytes, Ordering::Relaxed);
        live.errors.store(data.errors(), Ordering::Relaxed);
        if finished && arq.is_done() && data_imp.as_ref().is_none_or(|i| i.pending() == 0) {
            break;
        }
        // Sleep until the next thing to do: a pacing slot, an ARQ timer, an impairment
        // release, or an arriving ACK.
        let now = time::now();
        let mut wake = now + MAX_WAIT;
        if let Some(p) = pacer.as_ref() {
            wake = wake.min(p.next_deadline());
        }
        if let Some(t) = arq.poll_timeout() {
            wake = wake.min(origin + Duration::from_nanos(t));
        }
        for t in [
            data_imp.as_ref().and_then(Impairment::poll_timeout),
            ack_imp.as_ref().and_then(Impairment::poll_timeout),
        ]
        .into_iter()
        .flatten()
        {
            wake = wake.min(t);
        }
        wait(sock, wake);
    }
    if let Some(imp) = data_imp.as_mut() {
        // Halted: what is still inside the emulated network leaves at once.
        for bytes in imp.flush_all() {
            if let Err(e) = sock.send(&bytes) {
                count_send_error(&mut data, &e);
            }
        }
        data.impair = Some(imp.counters());
    }
    res.ack_impair = ack_imp.as_ref().map(Impairment::counters);
    res.arq = arq.stats();
    res.transfer_ns = data.first.map_or(0, |f| mono_ns(f, time::now()));
    data.lateness = lateness;
    data.warnings = warnings;
    live.errors.store(data.errors(), Ordering::Relaxed);
    let _ = sock.set_nonblocking(false);
    (data, res)
}

/// Waits until `wake` or until the socket has something to read.
fn wait(sock: &UdpSocket, wake: Instant) {
    let now = time::now();
    if wake <= now {
        return;
    }
    let left = wake - now;
    if left > SPIN {
        let _ = net::wait_readable(sock, left - SPIN);
    } else {
        std::thread::yield_now();
    }
}

/// Reads every datagram waiting on the socket: ACKs of this test go to `on_ack`, the
/// receiver's control to the control channel, anything with a bad tag is counted.
fn receive(
    sock: &UdpSocket,
    batch: &mut RecvBatch,
    key: &Option<Key>,
    res: &mut ReliableResult,
    control: &mpsc::Sender<Vec<u8>>,
    mut on_ack: impl FnMut(&[u8]),
) {
    loop {
        let n = match batch.recv(sock) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // An ICMP error for an earlier send (the receiver went away): its control says so.
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        for i in 0..n {
            let (buf, _) = batch.get(i);
            let buf = match key {
                None => buf,
                Some(k) => match k.open(buf) {
                    Some(b) => b,
                    None => {
                        res.unauthenticated += 1;
                        continue;
                    }
                },
            };
            if buf.len() > 3 && buf[3] == wire::Kind::Ack as u8 {
                res.acks_received += 1;
                res.ack_bytes_received += buf.len() as u64;
                on_ack(buf);
            } else {
                let _ = control.send(buf.to_vec());
            }
        }
    }
}

/// The Ack in `bytes` if it is one of this test's (the layer counts bogus contents).
fn decode_ack(bytes: &[u8], session_id: u32) -> Option<AckFrame> {
    match wire::parse(bytes) {
        Ok(Message::Ack(view)) => Some(view.frame()).filter(|a| a.session_id == session_id),
        _ => None,
    }
}

fn release_data(
    imp: &mut Impairment<Vec<u8>>,
    sock: &UdpSocket,
    now: Instant,
    res: &mut DataResult,
) {
    while let Some(due) = imp.poll_timeout().filter(|&t| t <= now) {
        let Some(bytes) = imp.poll_release(now) else {
            break;
        };
        res.release_lateness
            .record(time::now().saturating_duration_since(due).as_nanos() as u64);
        if let Err(e) = sock.send(&bytes) {
            count_send_error(res, &e);
        }
    }
}

fn count_send_error(res: &mut DataResult, e: &std::io::Error) {
    count_error(res, e, 1);
}
