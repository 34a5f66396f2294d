//! The receiver's driver: binds, prints its address, feeds batches of datagrams (with kernel
//! timestamps and receive-queue drop counts) to the `ReceiverServer`, and reports each test.

use std::collections::HashMap;
use std::io::{BufWriter, ErrorKind, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use crate::auth::{AllowList, Key, TAG_LEN};
use crate::config::RecvConfig;
use crate::error::SetupError;
use crate::net::SendMode;
use crate::net::multicast::{Iface, Membership};
use crate::net::{self, BoundSocket, RecvBatch, SocketOptions};
use crate::pacing::Pattern;
use crate::report;
use crate::run::send::{DataPlan, DataResult, DataThread};
use crate::run::{OutputFile, Stop, text_writer, write_outputs};
use crate::session::MAX_REVERSE_DURATION;
use crate::session::{
    GateTotals, MulticastReceive, ReceiverServer, ServerConfig, ServerEvent, TestParams,
};
use crate::stats::LatencyHistogram;
use crate::summary::{
    Direction, MAX_KEPT_INTERVALS, REPORT_VERSION, ReceiverReport, RunReport, SenderReport,
};
use crate::time;
use crate::wire::{self, HelloPattern};
use std::sync::atomic::Ordering;

/// How long the receive loop keeps busy-polling after the last datagram before it blocks.
const BUSY_POLL_AFTER_DATA: Duration = Duration::from_millis(2);
/// Longest the receive loop blocks before looking at its timers.
const RECV_TICK: Duration = Duration::from_millis(5);
/// Shortest read timeout while a reliable test's timers are due soon.
const RELIABLE_MIN_TICK: Duration = Duration::from_micros(50);
/// How long a `--once` receiver keeps answering result requests after the last one.
const ONCE_QUIET: Duration = Duration::from_secs(1);

/// A bound receiver, ready to run.
pub struct Receiver {
    cfg: RecvConfig,
    bound: BoundSocket,
}

/// What a receiver run produced.
#[derive(Debug, Default)]
pub struct RecvOutcome {
    /// The receiver's report of every test that ended.
    pub reports: Vec<RunReport>,
    pub interrupted: bool,
}

impl Receiver {
    /// Binds the socket (so the caller knows the address before any test starts). `[::]` is
    /// dual-stack, or `0.0.0.0` on a host without IPv6 (see [`net::bind_listener`]).
    pub fn bind(cfg: RecvConfig) -> Result<Self, SetupError> {
        let opts = SocketOptions {
            rcvbuf: cfg.rcvbuf,
            sndbuf: cfg.sndbuf,
            force_buffers: cfg.force_buf,
            kernel_timestamps: cfg.kernel_timestamps,
            rxq_overflow: true,
            gro: cfg.gro,
        };
        let bound = match &cfg.multicast {
            None => net::bind_listener(cfg.bind, &opts).map_err(|e| SetupError(e.to_string()))?,
            Some(m) => bind_member(m, cfg.bind.port(), &opts)?,
        };
        let mut bound = bound;
        // Every test reports the TOS and TTL its Data arrived with; a kernel that will not
        // say is not fatal (the counts then show them as unknown).
        if let Err(e) = net::sockopts::enable_receive_marks(&bound.socket) {
            bound.warnings.push(format!(
                "no received TOS/TTL (the marking report stays empty): {e}"
            ));
        }
        // `--dscp`/`--tos`: echoes and control leave marked; refused is an error, as on send.
        net::sockopts::apply_marking(
            &bound.socket,
            &net::sockopts::Marking {
                tos: cfg.tos,
                ..net::sockopts::Marking::default()
            },
        )
        .map_err(|e| SetupError(format!("--dscp/--tos on the receiver's socket: {e}")))?;
        Ok(Receiver { cfg, bound })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.bound.local_addr
    }

    /// What binding had to warn about (clamped buffers, missing timestamps).
    pub fn warnings(&self) -> &[String] {
        &self.bound.warnings
    }

    /// Serves tests until Ctrl-C (or, with `once`, until one test ended and its results went out).
    pub fn run(self, stop: &Stop) -> anyhow::Result<RecvOutcome> {
        let Receiver { cfg, bound } = self;
        let sock = &bound.socket;
        if let Some(cpu) = cfg.cpus.first().copied()
            && let Err(e) = net::pin_current_thread(cpu)
        {
            crate::run::warn(&format!(
                "could not pin the receive thread to CPU {cpu}: {e}"
            ));
        }
        if !cfg.silent {
            for w in &bound.warnings {
                crate::run::warn(w);
            }
        }
        let mut text = text_writer(&cfg.outputs);
        let interval_stream = crate::run::open_interval_stream(&cfg.outputs)?;
        let mut loss_log = match &cfg.outputs.loss_log {
            Some(path) => {
                // A failed write (disk full) is recorded for the exit code, never ends the run.
                let mut w = BufWriter::new(
                    OutputFile::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                );
                writeln!(w, "{}", report::LOSS_LOG_HEADER)?;
                Some(w)
            }
            None => None,
        };
        let mut server = ReceiverServer::new(ServerConfig {
            max_sessions: cfg.max_sessions,
            rcvbuf: bound.rcvbuf,
            sndbuf: bound.sndbuf,
            timestamp_source: if bound.kernel_timestamps {
                "kernel".into()
            } else {
                "user".into()
            },
            record_loss_ranges: loss_log.is_some(),
            max_memory: cfg.max_memory,
            // Cookie key and test secrets: from the OS, whatever any seed says.
            rng_seed: {
                let mut seed = [0u8; 32];
                crate::run::os_random(&mut seed);
                seed
            },
            multicast: cfg.multicast.map(|m| MulticastReceive { source: m.source }),
            max_reverse_bps: cfg.max_reverse_bps,
        });
        if let Some(m) = &cfg.multicast
            && !cfg.silent
        {
            writeln!(text, "{}", describe_membership(m))?;
            text.flush()?;
        }
        let mut announcements_refused = 0;
        let mut batch = RecvBatch::new(64, 65536);
        server.export_latency_histograms(cfg.hdr_log.is_some());
        // The kernel reports the overflow counter only once it is non-zero: start from 0.
        if bound.rxq_overflow {
            server.set_rxq_dropped(Some(0));
        }
        let mut echo = [0u8; wire::DATA_HEADER_LEN];
        // With a key, an echo is the header and its tag: still no larger than the Data (≥ 40
        // bytes with a key) it answers.
        let mut tagged_echo = [0u8; wire::DATA_HEADER_LEN + TAG_LEN];
        let mut gate = Gate::new(cfg.key.clone(), cfg.allow.clone());
        server.set_gate_totals(gate.totals());
        if !cfg.silent {
            for line in gate.describe() {
                writeln!(text, "{line}")?;
            }
            text.flush()?;
        }
        let mut started: HashMap<u32, (u64, TestParams)> = HashMap::new();
        // Reverse tests whose Data this receiver is sending.
        let mut sending: HashMap<u32, Sending> = HashMap::new();
        let mut outcome = RecvOutcome::default();
        // A fixed short read timeout: timers (intervals, Tmax) need only millisecond accuracy,
        // and re-arming it per batch would cost a syscall per batch on the hot path.
        sock.set_read_timeout(Some(RECV_TICK))?;
        // With --busy-poll, while datagrams flow the socket is polled without blocking
        // (yielding between polls) so this thread's CPU never idles: waking an idle vCPU can
        // take a millisecond, which a small buffer may not absorb at high rates.
        let mut polling = false;
        let mut last_data = time::now();
        // A reliable test's ACK timers (delayed ACKs, ~ms) need a wake-up at their time, not
        // at the next RECV_TICK: while one runs, the read timeout follows the next timer.
        let mut read_timeout = RECV_TICK;
        loop {
            let want_poll = cfg.busy_poll
                && time::now().saturating_duration_since(last_data) < BUSY_POLL_AFTER_DATA;
            if want_poll != polling {
                sock.set_nonblocking(want_poll)?;
                polling = want_poll;
            }
            if !polling && server.has_reliable_session() {
                let wanted = server
                    .poll_timeout()
                    .map_or(RECV_TICK, |t| t.saturating_duration_since(time::now()))
                    .clamp(RELIABLE_MIN_TICK, RECV_TICK);
                // In 50 µs steps: a new timeout (a syscall) only when the timer moved.
                let wanted = Duration::from_micros(wanted.as_micros() as u64 / 50 * 50)
                    .max(RELIABLE_MIN_TICK);
                if wanted != read_timeout {
                    sock.set_read_timeout(Some(wanted))?;
                    read_timeout = wanted;
                }
            } else if read_timeout != RECV_TICK {
                sock.set_read_timeout(Some(RECV_TICK))?;
                read_timeout = RECV_TICK;
            }
            match batch.recv(sock) {
                Ok(n) => {
                    let now = time::now();
                    last_data = now;
                    for i in 0..n {
                        let (buf, meta) = batch.get(i);
                        // Without --key and --allow this is the one extra (predictable) branch.
                        let buf = if gate.open {
                            buf
                        } else {
                            match gate.admit(buf, meta.src) {
                                Some(b) => b,
                                None => {
                                    server.set_gate_totals(gate.totals());
                                    continue;
                                }
                            }
                        };
                        let recv_ns = meta.kernel_ts_ns.unwrap_or_else(time::wall_ns);
                        let marks = crate::session::Marks {
                            tos: meta.tos,
                            ttl: meta.ttl,
                        };
                        if server
                            .handle_datagram_marked(now, recv_ns, meta.src, buf, &mut echo, marks)
                        {
                            let reply: &[u8] = match &gate.key {
                                None => &echo,
                                Some(key) => {
                                    tagged_echo[..wire::DATA_HEADER_LEN].copy_from_slice(&echo);
                                    key.sign(&mut tagged_echo);
                                    &tagged_echo
                                }
                            };
                            // Best effort: a lost echo is an RTT sample lost, never a retry;
                            // one never sent is not the return path's loss.
                            if sock.send_to(reply, meta.src).is_err() {
                                server.echo_not_sent(&echo);
                            }
                        }
                    }
                    server.set_rxq_dropped(batch.rxq_dropped());
                }
                Err(e) if polling && e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                // An earlier reply hit a closed port: nothing to do with this socket's health.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e).context("receiving"),
            }
            let now = time::now();
            if server.poll_timeout().is_some_and(|t| now >= t) {
                // Drops after the last datagram are only visible by asking the socket.
                if bound.rxq_overflow
                    && let Ok(total) = batch.refresh_rxq_dropped(sock)
                {
                    server.set_rxq_dropped(total);
                }
                server.handle_timeout(now);
            }
            // Reverse tests whose data thread ended: their totals become their results.
            let done: Vec<u32> = sending
                .iter()
                .filter(|(_, s)| s.thread.handle.is_finished())
                .map(|(id, _)| *id)
                .collect();
            for id in done {
                if let Some(s) = sending.remove(&id) {
                    let run = s.finish(&mut server, id, &bound, false)?;
                    if !cfg.silent {
                        write_outputs(&run, &cfg.outputs, true);
                    }
                    outcome.reports.push(run);
                }
            }
            if stop.requested() {
                // Ctrl-C: every reverse test stops sending, and its totals go to its client
                // at once (it will not get to ask), before the other tests are interrupted.
                for (id, s) in sending.drain() {
                    s.thread.halt.store(true, Ordering::Relaxed);
                    let run = s.finish(&mut server, id, &bound, true)?;
                    if !cfg.silent {
                        write_outputs(&run, &cfg.outputs, true);
                    }
                    outcome.reports.push(run);
                }
                server.interrupt_all(now);
                outcome.interrupted = true;
            }
            if server.announcements_refused() > announcements_refused {
                announcements_refused = server.announcements_refused();
                crate::run::warn(&format!(
                    "{announcements_refused} multicast announcements not taken: already measuring \
                     --max-sessions {} senders (or over --max-memory, or bad parameters)",
                    cfg.max_sessions
                ));
            }
            // A group member has nothing to send: the session queues nothing for it.
            while let Some((dst, mut msg)) = server.poll_transmit() {
                if let Some(key) = &gate.key {
                    key.append_tag(&mut msg);
                }
                let _ = sock.send_to(&msg, dst);
            }
            while let Some(ev) = server.poll_event() {
                match ev {
                    ServerEvent::Started {
                        session_id,
                        peer,
                        params,
                    } => {
                        // An IPv4 peer of the dual-stack socket is shown as IPv4.
                        let peer = net::shown_addr(peer);
                        started.insert(session_id, (time::wall_ns(), params));
                        if cfg.silent && !cfg.outputs.quiet {
                            // Loopback: the caller prints the rest; the live lines are ours.
                            report::write_interval_header(&mut text, "receiver")?;
                            text.flush()?;
                        } else if !cfg.silent {
                            writeln!(
                                text,
                                "{}test {session_id:08x} from {peer}: {} B datagrams{}{}, report every {:?}, Tmax {:?}",
                                if cfg.multicast.is_some() {
                                    "multicast "
                                } else {
                                    ""
                                },
                                params.payload_size,
                                if params.echo { ", echo on" } else { "" },
                                if params.reliable.is_some() {
                                    ", reliable"
                                } else {
                                    ""
                                },
                                params.interval,
                                params.tmax
                            )?;
                            if !cfg.outputs.quiet {
                                report::write_interval_header(&mut text, "receiver")?;
                            }
                            text.flush()?;
                        }
                    }
                    ServerEvent::StartSending {
                        session_id,
                        peer,
                        params,
                    } => {
                        let plan = reverse_plan(session_id, &params, peer, gate.key.clone());
                        let thread = sock
                            .try_clone()
                            .and_then(|s| crate::run::send::spawn_data_thread(s, plan))
                            .context("starting a reverse test's send thread")?;
                        if !cfg.silent {
                            writeln!(
                                text,
                                "test {session_id:08x} from {}: reverse, sending {} B datagrams at {} datagrams/s to it",
                                net::shown_addr(peer),
                                params.payload_size,
                                params.pps_milli as f64 / 1000.0,
                            )?;
                            text.flush()?;
                        }
                        sending.insert(
                            session_id,
                            Sending {
                                thread,
                                started_wall: time::wall_ns(),
                                params,
                            },
                        );
                    }
                    ServerEvent::StopSending { session_id } => {
                        if let Some(s) = sending.get(&session_id) {
                            s.thread.halt.store(true, Ordering::Relaxed);
                        }
                    }
                    ServerEvent::Interval { session_id, row } => {
                        if !cfg.outputs.quiet {
                            report::write_interval_line(&mut text, &row)?;
                            text.flush()?;
                        }
                        if let Some(stream) = &interval_stream
                            && let Err(e) = stream.write(&format!("{session_id:08x}"), &row)
                        {
                            crate::run::warn(&format!(
                                "--intervals-json: {e}: no more interval lines are streamed"
                            ));
                        }
                    }
                    ServerEvent::IntervalLatency {
                        start_s,
                        end_s,
                        histogram,
                        ..
                    } => {
                        if let Some(log) = &cfg.hdr_log {
                            let tag = report::hdrlog::LATENCY_TAG;
                            log.record(tag, start_s, end_s - start_s, &histogram);
                        }
                    }
                    ServerEvent::Lost { session_id, ranges } => {
                        if let Some(w) = loss_log.as_mut() {
                            for r in ranges {
                                writeln!(w, "{session_id:08x},{},{}", r.start(), r.end())?;
                            }
                        }
                    }
                    ServerEvent::Finished {
                        session_id, report, ..
                    } => {
                        // The session reports the socket's refusals over this test's time.
                        let (wall, params) = started
                            .remove(&session_id)
                            .unwrap_or((time::wall_ns(), zero_params()));
                        let run = receiver_run_report(
                            session_id,
                            bound.local_addr,
                            &bound.warnings,
                            wall,
                            &params,
                            *report,
                        );
                        if let Some(w) = loss_log.as_mut() {
                            w.flush()?;
                        }
                        if !cfg.silent {
                            write_outputs(&run, &cfg.outputs, true);
                        }
                        outcome.reports.push(run);
                    }
                }
            }
            if outcome.interrupted {
                break;
            }
            if cfg.once && server.may_exit_once(time::now(), ONCE_QUIET) {
                break;
            }
        }
        if let Some(w) = loss_log.as_mut() {
            w.flush()?;
        }
        Ok(outcome)
    }
}

/// A group member's socket: bound to the group on `port` (shared, so several members on one
/// host each get every datagram), then joined.
fn bind_member(m: &Membership, port: u16, opts: &SocketOptions) -> Result<BoundSocket, SetupError> {
    let addr = m.bind_addr(port);
    let bound = net::bind_shared(addr, opts).map_err(|e| SetupError(e.to_string()))?;
    net::multicast::join(&bound.socket, m).map_err(|e| {
        SetupError(format!(
            "joining {}{}: {e}{}",
            m.group,
            m.source.map(|s| format!(" from {s}")).unwrap_or_default(),
            if m.iface.is_none() {
                " (no route for the group? give the interface with --iface)"
            } else {
                ""
            }
        ))
    })?;
    Ok(bound)
}

/// The start-up line of a group member.
fn describe_membership(m: &Membership) -> String {
    let source = match m.source {
        Some(s) => format!("source-specific, from {s} only"),
        None => "any source".into(),
    };
    let iface = match m.iface {
        Some(Iface::Index(i)) => format!(" on interface {i}"),
        Some(Iface::V4(a)) => format!(" on interface {a}"),
        None => String::new(),
    };
    format!(
        "joined {} ({source}){iface}: each sender is measured and reported here, nothing is sent back",
        m.group
    )
}

/// A reverse test this receiver sends the Data of.
struct Sending {
    thread: DataThread,
    started_wall: u64,
    params: TestParams,
}

impl Sending {
    /// Waits for the data thread (stopped or done), hands its totals to the session as the
    /// test's results (`push`: sent to the client at once), and returns this receiver's report
    /// of the test: its sending side.
    fn finish(
        self,
        server: &mut ReceiverServer,
        session_id: u32,
        bound: &BoundSocket,
        push: bool,
    ) -> anyhow::Result<RunReport> {
        let result = self
            .thread
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("a reverse test's send thread panicked"))?;
        for w in &result.warnings {
            crate::run::warn(w);
        }
        let report = reverse_sender_report(&result, &self.params, bound);
        server.reverse_done(time::now(), session_id, report.clone(), push);
        Ok(RunReport {
            version: REPORT_VERSION,
            run_id: format!("{session_id:08x}"),
            started_at: time::rfc3339(self.started_wall),
            target: bound.local_addr.to_string(),
            payload_bytes: self.params.payload_size,
            pattern: pattern_name(self.params.pattern),
            echo: false,
            sender: Some(report),
            receiver: None,
            warnings: result.warnings,
            interrupted: push,
            direction: Direction::Reverse,
            ..RunReport::default()
        })
    }
}

/// The data thread's plan for a reverse test: the Hello's size, pace, pattern, count and
/// duration (at most [`MAX_REVERSE_DURATION`]), to `peer` (the validated address) only.
fn reverse_plan(
    session_id: u32,
    params: &TestParams,
    peer: SocketAddr,
    key: Option<Key>,
) -> DataPlan {
    let longest = if params.duration.is_zero() {
        MAX_REVERSE_DURATION
    } else {
        params.duration.min(MAX_REVERSE_DURATION)
    };
    DataPlan {
        session_id,
        payload: params.payload_size as usize,
        pps: Some(params.pps_milli as f64 / 1000.0),
        pattern: match params.pattern {
            HelloPattern::Poisson => Pattern::Poisson,
            HelloPattern::Burst(n) if n > 0 => Pattern::Burst(u32::from(n)),
            _ => Pattern::Cbr,
        },
        seed: u64::from(session_id),
        duration: Some(longest),
        count: (params.count > 0).then_some(params.count),
        batch: 32,
        // One send_to per datagram: the socket is shared by every test.
        mode: SendMode::Plain,
        impair: None,
        impair_log: None,
        cpu: None,
        key,
        dest: Some(peer),
    }
}

/// What the receiver's data thread sent in a reverse test, as a sender reports it.
fn reverse_sender_report(
    result: &DataResult,
    params: &TestParams,
    bound: &BoundSocket,
) -> SenderReport {
    let duration_s = match (result.first, result.last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let pps_achieved = if result.sent >= 2 && duration_s > 0.0 {
        (result.sent - 1) as f64 / duration_s
    } else {
        0.0
    };
    SenderReport {
        sent: result.sent,
        sent_bytes: result.bytes,
        send_errors: result.errors(),
        send_errors_enobufs: result.errors_enobufs,
        send_errors_eagain: result.errors_eagain,
        duration_s,
        rate_target_bps: (params.rate_bps > 0).then_some(params.rate_bps as f64),
        rate_achieved_bps: pps_achieved * f64::from(params.payload_size) * 8.0,
        pps_target: Some(params.pps_milli as f64 / 1000.0),
        pps_achieved,
        schedule_lateness: result.lateness.as_ref().and_then(LatencyHistogram::summary),
        inter_departure: result.gaps.summary(),
        sndbuf: bound.sndbuf,
        rcvbuf: bound.rcvbuf,
        send_mode: result.mode.to_string(),
        send_mode_note: Some(
            "reverse test: one send_to per datagram from the receiver's socket".into(),
        ),
        ..SenderReport::default()
    }
}

/// Datagrams the receiver's gate dropped, since the socket was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct GateCounts {
    /// Tags that did not verify (`--key`).
    unauthenticated: u64,
    /// Sources outside `--allow`.
    refused_by_allow: u64,
}

/// What a datagram passes before the session sees it: `--allow`, then the `--key` tag. A
/// dropped datagram is counted and never answered.
struct Gate {
    key: Option<Key>,
    allow: Option<AllowList>,
    /// Neither is set: every datagram goes straight to the session.
    open: bool,
    counts: GateCounts,
}

impl Gate {
    fn new(key: Option<Key>, allow: Option<AllowList>) -> Self {
        Gate {
            open: key.is_none() && allow.is_none(),
            key,
            allow,
            counts: GateCounts::default(),
        }
    }

    /// The refusal totals for the session, None where a check is not in force.
    fn totals(&self) -> GateTotals {
        GateTotals {
            unauthenticated: self.key.as_ref().map(|_| self.counts.unauthenticated),
            refused_by_allow: self.allow.as_ref().map(|_| self.counts.refused_by_allow),
        }
    }

    /// What the session should see of `datagram` from `src`, or None when it is dropped.
    #[inline]
    fn admit<'a>(&mut self, datagram: &'a [u8], src: SocketAddr) -> Option<&'a [u8]> {
        if let Some(allow) = &self.allow
            && !allow.admits(src)
        {
            self.counts.refused_by_allow += 1;
            return None;
        }
        match &self.key {
            None => Some(datagram),
            Some(key) => {
                let opened = key.open(datagram);
                if opened.is_none() {
                    self.counts.unauthenticated += 1;
                }
                opened
            }
        }
    }

    /// The receiver's start-up lines about who it accepts (none when it accepts everyone).
    fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.key.is_some() {
            lines.push(
                "accepting only datagrams tagged with the shared key (--key / UDPLAB_KEY)".into(),
            );
        }
        if let Some(allow) = &self.allow {
            let list: Vec<String> = allow.prefixes().iter().map(ToString::to_string).collect();
            lines.push(format!("accepting datagrams only from {}", list.join(", ")));
        }
        lines
    }
}

fn zero_params() -> TestParams {
    TestParams {
        payload_size: 0,
        echo: false,
        interval: Duration::from_secs(1),
        tmax: Duration::ZERO,
        count: 0,
        duration: Duration::ZERO,
        rate_bps: 0,
        pps_milli: 0,
        loss_ranges: false,
        pattern: HelloPattern::Unknown,
        marking: Default::default(),
        omit: Duration::ZERO,
        reliable: None,
    }
}

/// The pattern the sender announced, as the sender's own report names it; empty when the
/// sender did not say (an older udplab).
fn pattern_name(pattern: HelloPattern) -> String {
    match pattern {
        HelloPattern::Unknown => String::new(),
        HelloPattern::Cbr => "cbr".into(),
        HelloPattern::Poisson => "poisson".into(),
        HelloPattern::Burst(0) => "burst".into(),
        HelloPattern::Burst(n) => format!("burst={n}"),
        HelloPattern::Unpaced => "max".into(),
    }
}

/// A receiver's own report of one test. `target` is this receiver's bound address (the sender's
/// address is `receiver.peer`).
fn receiver_run_report(
    session_id: u32,
    local: SocketAddr,
    socket_warnings: &[String],
    started_wall: u64,
    params: &TestParams,
    report: ReceiverReport,
) -> RunReport {
    // The socket's own warnings (clamped buffers, with the sysctl to raise), word for word as
    // at start: each test's report carries them, and stderr shows each text once.
    let mut warnings = socket_warnings.to_vec();
    if report.intervals_not_kept > 0 {
        warnings.push(format!(
            "{} interval rows beyond the first {MAX_KEPT_INTERVALS} were printed but not kept in this report",
            report.intervals_not_kept
        ));
    }
    warnings.extend(report.stats.clock_warning());
    RunReport {
        version: REPORT_VERSION,
        run_id: format!("{session_id:08x}"),
        started_at: time::rfc3339(started_wall),
        target: local.to_string(),
        payload_bytes: params.payload_size,
        pattern: pattern_name(params.pattern),
        echo: params.echo,
        sender: None,
        interrupted: report.interrupted,
        receiver: Some(report),
        warnings,
        ..RunReport::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &[u8]) -> Key {
        Key::from_secret(secret, "test").unwrap()
    }

    #[test]
    fn an_open_gate_passes_everything_and_counts_nothing() {
        let mut gate = Gate::new(None, None);
        assert!(gate.open);
        assert!(gate.describe().is_empty());
        let src: SocketAddr = "192.0.2.1:9".parse().unwrap();
        assert_eq!(gate.admit(b"anything", src), Some(&b"anything"[..]));
        assert_eq!(gate.counts, GateCounts::default());
    }

    #[test]
    fn the_gate_drops_and_counts_strangers_and_bad_tags() {
        let allow = AllowList::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let mut gate = Gate::new(Some(key(b"the receiver's key!")), allow);
        assert!(!gate.open);
        let inside: SocketAddr = "[::ffff:127.0.0.1]:9".parse().unwrap();
        let outside: SocketAddr = "10.0.0.1:9".parse().unwrap();
        let mut good = b"a control message".to_vec();
        key(b"the receiver's key!").append_tag(&mut good);
        let mut other = b"a control message".to_vec();
        key(b"somebody else's key").append_tag(&mut other);
        assert_eq!(gate.admit(&good, inside), Some(&b"a control message"[..]));
        assert_eq!(gate.admit(&good, outside), None);
        assert_eq!(gate.admit(&other, inside), None);
        assert_eq!(gate.admit(b"a control message", inside), None);
        assert_eq!(
            gate.counts,
            GateCounts {
                unauthenticated: 2,
                refused_by_allow: 1
            }
        );
        let said = gate.describe().join("\n");
        assert!(
            said.contains("shared key") && said.contains("127.0.0.0/8"),
            "{said}"
        );
    }
}
