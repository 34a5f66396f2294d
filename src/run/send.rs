//! The sender's driver: handshake, the paced data thread, echo/RTT and intervals, then the
//! end-of-test exchange that brings the receiver's results back. Toward a multicast group there
//! is no handshake and nothing comes back: announcements, the data, a repeated Fin.

use std::io::{self, BufWriter, ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::auth::Key;
use crate::config::{Rate, SendConfig};
use crate::error::SetupError;
use crate::impair::{Fate, Impairment};
use crate::net::{self, RecvBatch, SendMode, SocketOptions};
use crate::pacing::Pacer;
use crate::pacing::Pattern;
use crate::report;
use crate::run::{OutputFile, Stop, reliable, text_writer, wait_until};
use crate::session::{
    ControlError, MULTICAST_ANNOUNCE_EVERY, SenderControl, SenderEvent, TestParams,
    multicast_announcement, multicast_fin,
};
use crate::stats::LatencyHistogram;
use crate::summary::{
    ImpairCounters, IntervalRow, MAX_KEPT_INTERVALS, REPORT_VERSION, ReceiverReport, RunReport,
    SenderReport, keep_interval,
};
use crate::time;
use crate::wire::{DataHeader, HelloPattern, Kind};

/// Live counters the data thread publishes for interval lines.
#[derive(Debug, Default)]
pub(crate) struct LiveCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// `--reliable`: the ARQ sender's running totals, for its interval figures.
    pub(crate) retransmissions: AtomicU64,
    pub(crate) spurious: AtomicU64,
    pub(crate) messages_acked: AtomicU64,
    pub(crate) srtt_ns: AtomicU64,
}

/// What the data thread did.
#[derive(Debug)]
pub(crate) struct DataResult {
    pub(crate) sent: u64,
    pub(crate) bytes: u64,
    pub(crate) errors_enobufs: u64,
    pub(crate) errors_eagain: u64,
    /// Larger than the path MTU with `--df` (EMSGSIZE).
    pub(crate) errors_emsgsize: u64,
    pub(crate) errors_other: u64,
    pub(crate) first: Option<Instant>,
    pub(crate) last: Option<Instant>,
    pub(crate) lateness: Option<LatencyHistogram>,
    pub(crate) gaps: LatencyHistogram,
    /// How late the impairment's releases left against their planned time.
    pub(crate) release_lateness: LatencyHistogram,
    pub(crate) impair: Option<ImpairCounters>,
    pub(crate) mode: SendMode,
    pub(crate) warnings: Vec<String>,
}

impl DataResult {
    pub(crate) fn errors(&self) -> u64 {
        self.errors_enobufs + self.errors_eagain + self.errors_emsgsize + self.errors_other
    }
}

/// What the data thread needs, moved into it: the sender's own test, or (with `dest`) a
/// receiver's reverse test.
pub(crate) struct DataPlan {
    pub(crate) session_id: u32,
    pub(crate) payload: usize,
    pub(crate) pps: Option<f64>,
    pub(crate) pattern: crate::pacing::Pattern,
    pub(crate) seed: u64,
    pub(crate) duration: Option<Duration>,
    pub(crate) count: Option<u64>,
    pub(crate) batch: usize,
    pub(crate) mode: SendMode,
    pub(crate) impair: Option<crate::impair::ImpairSpec>,
    pub(crate) impair_log: Option<BufWriter<OutputFile>>,
    pub(crate) cpu: Option<usize>,
    /// Tags every Data datagram (`--key`).
    pub(crate) key: Option<Key>,
    /// Where the Data goes from an unconnected socket (a receiver's reverse test: its
    /// validated peer); None: the connected socket's peer.
    pub(crate) dest: Option<SocketAddr>,
}

/// A running data thread, stoppable through `halt`.
pub(crate) struct DataThread {
    pub(crate) handle: thread::JoinHandle<DataResult>,
    pub(crate) halt: Arc<AtomicBool>,
    pub(crate) live: Arc<LiveCounters>,
}

/// Starts [`data_loop`] for `plan` on its own thread, sending on `sock`.
pub(crate) fn spawn_data_thread(sock: UdpSocket, plan: DataPlan) -> io::Result<DataThread> {
    let live = Arc::new(LiveCounters::default());
    let halt = Arc::new(AtomicBool::new(false));
    let handle = {
        let live = Arc::clone(&live);
        let halt = Arc::clone(&halt);
        thread::Builder::new()
            .name("udplab-send".into())
            .spawn(move || data_loop(&sock, plan, &halt, &live))?
    };
    Ok(DataThread { handle, halt, live })
}

/// Runs one test against the receiver in `cfg` and returns the whole run's report.
pub fn run(cfg: &SendConfig, stop: &Stop) -> anyhow::Result<RunReport> {
    if cfg.reverse {
        return crate::run::reverse::run(cfg, stop);
    }
    let started_wall = time::wall_ns();
    if let Some((_, log)) = &cfg.hdr_log {
        log.set_start(started_wall);
    }
    let bound = net::bind(
        cfg.bind.unwrap_or_else(|| net::unspecified_for(&cfg.addr)),
        &SocketOptions {
            // --reliable reads its ACKs on this socket while sending: unless the user chose,
            // ask for loopback's 4 MiB (at most net.core.rmem_max, so nothing is clamped).
            rcvbuf: cfg.rcvbuf.or(cfg.reliable.map(|_| {
                net::rcvbuf_limit().map_or(crate::run::loopback::LOOPBACK_RCVBUF, |l| {
                    l.min(crate::run::loopback::LOOPBACK_RCVBUF)
                })
            })),
            sndbuf: cfg.sndbuf,
            force_buffers: cfg.force_buf,
            // Echo arrival times for RTT; with --bidir, the reverse Data's one-way delay.
            kernel_timestamps: cfg.echo || cfg.bidir,
            // With --bidir this side measures: its own buffer's drops too.
            rxq_overflow: cfg.bidir,
            ..SocketOptions::default()
        },
    )
    .map_err(|e| match cfg.bind {
        Some(b) => SetupError(format!("--bind {b}: {e}")),
        None => SetupError(e.to_string()),
    })?;
    // Before any datagram leaves (the Hello included): a refused option is an error, never a
    // test that silently ran unmarked.
    let marking = net::sockopts::Marking {
        tos: cfg.tos,
        ttl: cfg.ttl,
        multicast: cfg.addr.ip().is_multicast(),
        df: cfg.df,
    };
    net::sockopts::apply_marking(&bound.socket, &marking)
        .map_err(|e| SetupError(format!("marking the sender's socket: {e}")))?;
    // What the report shows is what the kernel holds, read back, not what was asked.
    let in_force = if marking == net::sockopts::Marking::default() {
        None
    } else {
        net::sockopts::marking_in_force(&bound.socket).ok()
    };
    // Named as the sender's: in loopback the receiver's own socket gets its own warning.
    let mut warnings: Vec<String> = bound
        .warnings
        .iter()
        .map(|w| format!("the sender's socket: {w}"))
        .collect();
    for w in &warnings {
        crate::run::warn(w);
    }
    // A second handle: `bound` stays whole for the reverse half's report (`--bidir`).
    let sock = bound
        .socket
        .try_clone()
        .map_err(|e| SetupError(format!("cloning the socket: {e}")))?;
    // A group target: announced, never answered (see `session::MulticastReceive`).
    let group = cfg.addr.ip().is_multicast();
    if group {
        net::multicast::configure_sender(&sock, cfg.addr.ip(), cfg.ttl, cfg.iface)
            .map_err(|e| SetupError(format!("setting up multicast toward {}: {e}", cfg.target)))?;
    }
    sock.connect(cfg.addr)
        .map_err(|e| SetupError(format!("cannot reach {}: {e}", cfg.target)))?;

    let session_id = crate::run::session_id();
    let run_id = format!("{session_id:08x}");
    let params = test_params(cfg);
    let start = time::now();
    let mut ctl = if cfg.bidir {
        SenderControl::bidir(session_id, params, start)
    } else {
        SenderControl::new(session_id, params, start)
    };
    // `--bidir`: the receiver's Data is measured from the handshake on (it sends once it
    // accepts, and its accepting answer may be lost).
    let mut measure = cfg
        .bidir
        .then(|| crate::run::reverse::Measure::new(cfg, session_id, &params, start));
    let key = cfg.key.as_ref();
    let mut replies = Replies::new(session_id, cfg.key.clone());
    // Echoes of warm-up datagrams (`--omit`) give no RTT sample, as the receiver counts none.
    replies.warmup = params.warmup_sequences();
    let announcement = multicast_announcement(session_id, &params);
    if group {
        // No handshake with a group: the announcement, a few times in case one is lost.
        send_repeated(&sock, &announcement, key, stop)
            .map_err(|e| SetupError(format!("sending to {}: {e}", cfg.target)))?;
        warnings.push(format!(
            "{} is a multicast group: each receiver (udplab recv --join) reports on its own; \
             this is the sender's side only",
            cfg.addr.ip()
        ));
    }

    // Handshake (none with a group). The last Hello's round trip seeds `--reliable`'s RTT
    // estimate.
    let handshake_rtt = if let Some(m) = measure.as_mut() {
        handshake(&sock, &mut ctl, m, cfg, stop)?
    } else if !group {
        handshake(&sock, &mut ctl, &mut replies, cfg, stop)?
    } else {
        Duration::ZERO
    };

    let mut text = text_writer(&cfg.outputs);
    let interval_stream = crate::run::open_interval_stream(&cfg.outputs)?;
    // Each closed interval goes to the NDJSON stream and to `--flows`' progress line.
    let publish = |row: &IntervalRow| {
        if let Some(stream) = &interval_stream
            && let Err(e) = stream.write(&run_id, row)
        {
            crate::run::warn(&format!(
                "--intervals-json: {e}: no more interval lines are streamed"
            ));
        }
        if let Some(tap) = &cfg.live_rows {
            // The progress printer may have gone (it never goes before the flows end).
            let _ = tap.send((cfg.flow_index, row.clone()));
        }
    };
    let impair_log = match &cfg.impair_log {
        Some(path) => {
            // A failed write (disk full) is recorded for the exit code, never ends the run.
            let mut w = BufWriter::new(
                OutputFile::create(path).with_context(|| format!("creating {}", path.display()))?,
            );
            writeln!(w, "seq,fate")?;
            Some(w)
        }
        None => None,
    };
    let choice = choose_send_mode(
        cfg.send_mode,
        cfg.addr,
        net::is_local_destination(cfg.addr.ip()),
        net::gso_supported(&sock),
        cfg.batch.min(net::max_gso_segments(cfg.payload_size)),
    );
    let mode = choice.mode;
    let plan = DataPlan {
        session_id,
        payload: cfg.payload_size,
        pps: cfg.pps(),
        pattern: cfg.pattern,
        seed: cfg.seed.unwrap_or(u64::from(session_id)),
        duration: cfg.duration,
        count: cfg.count,
        batch: cfg.batch,
        mode,
        impair: cfg.impair,
        impair_log,
        cpu: (!cfg.cpus.is_empty()).then(|| cfg.cpus[cfg.flow_index % cfg.cpus.len()]),
        key: cfg.key.clone(),
        dest: None,
    };
    let data_sock = sock.try_clone().context("cloning the socket")?;
    // With --reliable the data thread reads the socket (the ACKs) and hands the receiver's
    // control over this channel.
    let (control_tx, control_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let (data, halt, live) = match cfg.reliable {
        None => {
            let DataThread { handle, halt, live } =
                spawn_data_thread(data_sock, plan).context("starting the send thread")?;
            (SenderThread::Plain(handle), halt, live)
        }
        Some(r) => {
            let live = Arc::new(LiveCounters::default());
            let halt = Arc::new(AtomicBool::new(false));
            let spawn = thread::Builder::new().name("udplab-send".into());
            {
                let reliable_plan = reliable::ReliablePlan {
                    session_id,
                    payload: plan.payload,
                    pps: plan.pps,
                    pattern: plan.pattern,
                    seed: plan.seed,
                    duration: plan.duration,
                    count: plan.count,
                    impair: plan.impair,
                    impair_acks: r.impair_acks,
                    cpu: plan.cpu,
                    key: plan.key.clone(),
                    arq: reliable::arq_config(
                        &r,
                        cfg.payload_size,
                        u64::try_from(handshake_rtt.as_nanos()).unwrap_or(u64::MAX),
                        plan.pps,
                    ),
                    control: control_tx,
                };
                let handle = {
                    let live = Arc::clone(&live);
                    let halt = Arc::clone(&halt);
                    spawn
                        .spawn(move || {
                            reliable::sender_loop(&data_sock, reliable_plan, &halt, &live)
                        })
                        .context("starting the send thread")?
                };
                (SenderThread::Reliable(handle), halt, live)
            }
        }
    };

    // While data flows: echoes, control, interval lines.
    let start = time::now();
    let mut rtt_total = LatencyHistogram::new();
    let mut intervals: Vec<IntervalRow> = Vec::new();
    let mut intervals_not_kept = 0u64;
    let mut next_tick = start + cfg.interval;
    let mut next_announcement = start + MULTICAST_ANNOUNCE_EVERY;
    let mut prev = (0u64, 0u64, 0u64);
    let mut reliable_prev = [0u64; 3];
    let mut peer_aborted = false;
    // The receiver's results: its measurement, and (`--bidir`) what it sent with whether it
    // was interrupted.
    let mut receiver: Option<ReceiverReport> = None;
    let mut reverse_sender: Option<(SenderReport, bool)> = None;
    if !cfg.outputs.quiet {
        report::write_interval_header(&mut text, "sender")?;
        if measure.is_some() {
            report::write_interval_header(&mut text, "receiver")?;
        }
    }
    while !data.is_finished() {
        if stop.requested() || peer_aborted || ctl.is_done() {
            halt.store(true, Ordering::Relaxed);
        }
        let wake = next_tick.min(time::now() + Duration::from_millis(20));
        if cfg.reliable.is_some() {
            // The data thread reads the socket; the receiver's control comes from it.
            if let Ok(msg) = control_rx.recv_timeout(wake.saturating_duration_since(time::now())) {
                ctl.handle_datagram(time::now(), &msg);
                while let Ok(msg) = control_rx.try_recv() {
                    ctl.handle_datagram(time::now(), &msg);
                }
            }
        } else {
            // ICMP errors (the receiver went away) are the data thread's to count.
            let _ = match measure.as_mut() {
                Some(m) => HandshakeRx::receive(m, &sock, Some(wake), &mut ctl),
                None => replies.receive(&sock, Some(wake), &mut ctl),
            };
            if let Some(m) = measure.as_mut() {
                m.tick(
                    time::now(),
                    cfg,
                    &mut text,
                    interval_stream.as_ref(),
                    &run_id,
                )?;
            }
        }
        if group && time::now() >= next_announcement {
            // Late joiners learn the test; members see the sender is alive. Best effort.
            let _ = send_tagged(&sock, &announcement, key);
            next_announcement += MULTICAST_ANNOUNCE_EVERY;
        }
        while let Some(ev) = ctl.poll_event() {
            match ev {
                SenderEvent::Failed(ControlError::PeerAborted) => {
                    peer_aborted = true;
                    warnings.push("the receiver ended the test early".into());
                }
                // `--bidir`: an interrupted receiver pushes its results while data flows.
                SenderEvent::Results(r) => receiver = Some(*r),
                SenderEvent::SenderResults {
                    report,
                    interrupted,
                } => reverse_sender = Some((*report, interrupted)),
                _ => {}
            }
        }
        let now = time::now();
        if now >= next_tick {
            let start_s =
                (intervals.len() as u64 + intervals_not_kept) as f64 * cfg.interval.as_secs_f64();
            log_rtt(cfg, start_s, cfg.interval.as_secs_f64(), &replies.rtt);
            let mut row = sender_row(
                &live,
                &mut prev,
                &mut replies.rtt,
                &mut rtt_total,
                (intervals.len() as u64 + intervals_not_kept) as f64 * cfg.interval.as_secs_f64(),
                cfg.interval.as_secs_f64(),
            );
            if cfg.reliable.is_some() {
                row.reliable = Some(reliable_row(&live, &mut reliable_prev));
            }
            if !cfg.outputs.quiet {
                report::write_interval_line(&mut text, &row)?;
                text.flush()?;
            }
            publish(&row);
            keep_interval(&mut intervals, row, &mut intervals_not_kept);
            next_tick += cfg.interval;
        }
    }
    let (result, reliable_result) = match data {
        SenderThread::Plain(h) => (
            h.join()
                .map_err(|_| anyhow::anyhow!("the send thread panicked"))?,
            None,
        ),
        SenderThread::Reliable(h) => {
            let r = h
                .join()
                .map_err(|_| anyhow::anyhow!("the send thread panicked"))?;
            // Control that came in as the thread ended.
            while let Ok(msg) = control_rx.try_recv() {
                ctl.handle_datagram(time::now(), &msg);
            }
            let (data, extras) = r;
            replies.unauthenticated += extras.unauthenticated;
            (data, Some(extras))
        }
    };
    warnings.extend(result.warnings.iter().cloned());
    // A GSO refusal switched the run to sendmmsg: what the choice said about GSO is moot.
    let choice = if result.mode == choice.mode {
        choice
    } else {
        SendModeChoice {
            mode: result.mode,
            note: None,
            warning: None,
        }
    };
    warnings.extend(choice.warning.iter().cloned());
    // The last, partial interval, when anything was sent in it.
    let elapsed = time::now().saturating_duration_since(start).as_secs_f64();
    let start_s = (intervals.len() as u64 + intervals_not_kept) as f64 * cfg.interval.as_secs_f64();
    if elapsed > start_s + 1e-3 && live.sent.load(Ordering::Relaxed) > prev.0 {
        log_rtt(cfg, start_s, elapsed - start_s, &replies.rtt);
        let mut row = sender_row(
            &live,
            &mut prev,
            &mut replies.rtt,
            &mut rtt_total,
            start_s,
            elapsed - start_s,
        );
        if cfg.reliable.is_some() {
            row.reliable = Some(reliable_row(&live, &mut reliable_prev));
        }
        if !cfg.outputs.quiet {
            report::write_interval_line(&mut text, &row)?;
        }
        publish(&row);
        keep_interval(&mut intervals, row, &mut intervals_not_kept);
    }
    text.flush()?;

    // End of test: totals to the receiver, then its results back.
    // Our receive buffer's drops once the echoes are in, before the result chunks come (a
    // burst a small buffer may drop too, which is not the return path's loss).
    let mut echo_rcvbuf_drops = None;
    if group {
        // The totals travel in the Fin, repeated; nobody answers it.
        let fin = multicast_fin(session_id, result.sent, result.bytes, result.errors());
        if let Err(e) = send_repeated(&sock, &fin, key, stop) {
            warnings.push(format!("sending the Fin to the group: {e}"));
        }
    } else if !peer_aborted && !ctl.is_done() {
        ctl.finish(time::now(), result.sent, result.bytes, result.errors());
        loop {
            if stop.requested() {
                // `--bidir`: the receiver's data stops too (its forward half drains as usual).
                ctl.stop_bidir_reverse();
            }
            if cfg.echo && echo_rcvbuf_drops.is_none() && ctl.requesting_results(time::now()) {
                echo_rcvbuf_drops = replies.batch.refresh_rxq_dropped(&sock).ok().flatten();
            }
            flush_control(&sock, &mut ctl, key);
            match ctl.poll_event() {
                Some(SenderEvent::Results(r)) => {
                    receiver = Some(*r);
                    if measure.is_none() {
                        break;
                    }
                }
                Some(SenderEvent::SenderResults {
                    report,
                    interrupted,
                }) => reverse_sender = Some((*report, interrupted)),
                Some(SenderEvent::Failed(e)) => {
                    warnings.push(format!("no results from the receiver: {e}"));
                    break;
                }
                Some(SenderEvent::Accepted { .. }) => {}
                None if ctl.is_done() => break,
                None => {}
            }
            if stop.abandon() {
                ctl.abort();
                flush_control(&sock, &mut ctl, key);
                warnings.push("interrupted while waiting for the receiver's results".into());
                break;
            }
            let wake = ctl
                .poll_timeout()
                .map(|t| t.min(time::now() + Duration::from_millis(50)));
            let received = match measure.as_mut() {
                Some(m) => HandshakeRx::receive(m, &sock, wake, &mut ctl),
                None => replies.receive(&sock, wake, &mut ctl),
            };
            match received {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(e) => warnings.push(format!("receiving results: {e}")),
            }
            if let Some(m) = measure.as_mut() {
                m.tick(
                    time::now(),
                    cfg,
                    &mut text,
                    interval_stream.as_ref(),
                    &run_id,
                )?;
            }
            ctl.handle_timeout(time::now());
        }
    }
    // Echoes that came after the last interval row: their own log interval, so the log's
    // counts add up to the report's.
    if !replies.rtt.is_empty() {
        let last_end = intervals.last().map_or(0.0, |r| r.end_s).max(start_s);
        let now_s = time::now().saturating_duration_since(start).as_secs_f64();
        log_rtt(cfg, last_end, (now_s - last_end).max(0.0), &replies.rtt);
    }
    // `--bidir`: the receiver's late Data still counts for Tmax after its totals came.
    if let Some(m) = measure.as_mut()
        && reverse_sender.is_some()
    {
        let until = time::now() + params.tmax;
        while time::now() < until && !stop.abandon() {
            match HandshakeRx::receive(m, &sock, Some(until), &mut ctl) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e.into()),
            }
            m.tick(
                time::now(),
                cfg,
                &mut text,
                interval_stream.as_ref(),
                &run_id,
            )?;
        }
    }
    rtt_total.add(&replies.rtt);
    // Echo replies our own receive buffer dropped: return-path loss that is this host's.
    if cfg.echo && echo_rcvbuf_drops.is_none() {
        echo_rcvbuf_drops = replies.batch.refresh_rxq_dropped(&sock).ok().flatten();
    }

    let duration_s = match (result.first, result.last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    // Achieved rate over the sends' own span: n datagrams span n-1 gaps.
    let pps_achieved = if result.sent >= 2 && duration_s > 0.0 {
        (result.sent - 1) as f64 / duration_s
    } else {
        0.0
    };
    let not_kept = intervals_not_kept + receiver.as_ref().map_or(0, |r| r.intervals_not_kept);
    if not_kept > 0 {
        warnings.push(format!(
            "{not_kept} interval rows beyond the first {MAX_KEPT_INTERVALS} per side were printed but not kept in this report"
        ));
    }
    if let Some(r) = &receiver {
        if r.rcvbuf.clamped {
            warnings.push(format!(
                "the receiver's SO_RCVBUF was clamped by its kernel to {} bytes",
                r.rcvbuf.effective
            ));
        }
        if r.sndbuf.clamped {
            warnings.push(format!(
                "the receiver's SO_SNDBUF (echo replies and control) was clamped by its kernel to {} bytes",
                r.sndbuf.effective
            ));
        }
        warnings.extend(r.stats.clock_warning());
    }
    let sender = SenderReport {
        sent: result.sent,
        sent_bytes: result.bytes,
        send_errors: result.errors(),
        send_errors_enobufs: result.errors_enobufs,
        send_errors_eagain: result.errors_eagain,
        duration_s,
        rate_target_bps: cfg.rate_bps,
        rate_achieved_bps: pps_achieved * cfg.payload_size as f64 * 8.0,
        pps_target: cfg.pps(),
        pps_achieved,
        schedule_lateness: result.lateness.as_ref().and_then(LatencyHistogram::summary),
        inter_departure: result.gaps.summary(),
        rtt: rtt_total.summary(),
        omit_s: cfg.omit.as_secs_f64(),
        omitted_sequences: params.warmup_sequences().min(result.sent),
        echo_replies: replies.echoes,
        echo_rcvbuf_drops,
        control_sent: ctl.control_sent(),
        sndbuf: bound.sndbuf,
        rcvbuf: bound.rcvbuf,
        impairment: cfg.impair.as_ref().map(ToString::to_string),
        impair_counters: result.impair,
        impair_release_lateness: result.release_lateness.summary(),
        send_mode: choice.mode.to_string(),
        send_mode_note: choice.note,
        intervals,
        intervals_not_kept,
        unauthenticated: key.map(|_| replies.unauthenticated),
        tos: cfg.tos.and(in_force.map(|m| m.tos)),
        ttl: cfg.ttl.and(in_force.map(|m| m.ttl)),
        df: in_force.is_some_and(|m| m.df),
        send_errors_emsgsize: result.errors_emsgsize,
        // What the kernel learned of the path by the end (ICMP "fragmentation needed").
        path_mtu: if cfg.df {
            net::sockopts::path_mtu(&sock).ok()
        } else {
            None
        },
    };
    // `--bidir`: the receiver pushed its results because it was interrupted.
    let peer_interrupted = reverse_sender.as_ref().is_some_and(|(_, i)| *i);
    let bidir_reverse = match measure {
        Some(m) => {
            let mut rev_warnings = Vec::new();
            if peer_interrupted {
                rev_warnings.push("the receiver was interrupted: it stopped sending early".into());
            }
            if reverse_sender.is_none() {
                rev_warnings
                    .push("no totals from the receiver: the figures cover what was seen".into());
            }
            let interrupted = stop.requested() || peer_interrupted || reverse_sender.is_none();
            let mut rev = m.into_report(
                cfg,
                &bound,
                &mut text,
                interval_stream.as_ref(),
                reverse_sender.map(|(s, _)| s),
                interrupted,
            )?;
            rev.warnings.splice(0..0, rev_warnings);
            rev.started_at = time::rfc3339(started_wall);
            Some(Box::new(rev))
        }
        None => None,
    };
    let mut run = RunReport {
        version: REPORT_VERSION,
        run_id,
        started_at: time::rfc3339(started_wall),
        target: cfg.target.clone(),
        payload_bytes: cfg.payload_size as u32,
        pattern: match cfg.rate {
            Rate::Max => "max".into(),
            Rate::Pps(_) => cfg.pattern.to_string(),
        },
        echo: cfg.echo,
        sender: Some(sender),
        receiver,
        warnings,
        interrupted: stop.requested() || peer_aborted || peer_interrupted,
        bidir_reverse,
        labels: cfg.labels.clone(),
        ..RunReport::default()
    };
    if let (Some(settings), Some(result)) = (cfg.reliable.as_ref(), reliable_result) {
        let r = reliable::report(
            settings,
            result,
            run.receiver.as_ref(),
            cfg.impair.is_some(),
        );
        if !r.receiver_results {
            run.warnings.push(
                "--reliable: the receiver's results did not come back: delivered messages, \
                 delivery latency and ACKs sent are unknown"
                    .into(),
            );
        }
        if r.arq.session_given_up {
            run.warnings.push(format!(
                "--reliable: the transfer was given up (no ACK progress for {:.1} s)",
                r.arq.config.as_ref().map_or(0, |c| c.idle_give_up_ns) as f64 / 1e9
            ));
        }
        run.reliable = Some(r);
    }
    // One flow writes its loss log here; `--flows` writes every flow's into one file.
    if let Some(path) = cfg.outputs.loss_log.as_ref().filter(|_| cfg.flows <= 1) {
        let mut runs = vec![&run];
        runs.extend(run.bidir_reverse.as_deref());
        write_loss_log_file(path, &runs);
        strip_loss_ranges(&mut run);
        if let Some(rev) = run.bidir_reverse.as_deref_mut() {
            strip_loss_ranges(rev);
        }
    }
    Ok(run)
}

/// What the Hello announces: the test as `cfg` describes it.
pub(crate) fn test_params(cfg: &SendConfig) -> TestParams {
    TestParams {
        payload_size: cfg.payload_size as u32,
        echo: cfg.echo,
        interval: cfg.interval,
        tmax: cfg.tmax,
        count: cfg.count.unwrap_or(0),
        duration: cfg.duration.unwrap_or(Duration::ZERO),
        rate_bps: cfg.rate_bps.map_or(0, |r| r as u64),
        pps_milli: cfg.pps().map_or(0, |p| (p * 1000.0) as u64),
        // The receiver keeps its lost ranges for us only when there is a log to write.
        loss_ranges: cfg.outputs.loss_log.is_some(),
        pattern: hello_pattern(cfg),
        omit: cfg.omit,
        marking: crate::wire::HelloMarking {
            tos: cfg.tos,
            ttl: cfg.ttl,
        },
        reliable: cfg.reliable.map(|r| r.hello()),
    }
}

/// What the handshake reads the receiver's answers with: the forward sender's [`Replies`], or
/// a reverse test's measurement (Data can arrive before the accepting answer, if that was lost).
pub(crate) trait HandshakeRx {
    /// Receives what has arrived, waiting at most until `deadline`; control goes to `ctl`.
    fn receive(
        &mut self,
        sock: &UdpSocket,
        deadline: Option<Instant>,
        ctl: &mut SenderControl,
    ) -> io::Result<()>;
    /// Datagrams dropped so far because their `--key` tag did not verify.
    fn unauthenticated(&self) -> u64;
}

impl HandshakeRx for Replies {
    fn receive(
        &mut self,
        sock: &UdpSocket,
        deadline: Option<Instant>,
        ctl: &mut SenderControl,
    ) -> io::Result<()> {
        Replies::receive(self, sock, deadline, ctl)
    }

    fn unauthenticated(&self) -> u64 {
        self.unauthenticated
    }
}

/// Runs the handshake until the receiver accepts (`Ok`: the round trip of the last Hello, which
/// seeds `--reliable`'s RTT estimate) or it fails (the error the user sees).
pub(crate) fn handshake(
    sock: &UdpSocket,
    ctl: &mut SenderControl,
    replies: &mut impl HandshakeRx,
    cfg: &SendConfig,
    stop: &Stop,
) -> anyhow::Result<Duration> {
    let key = cfg.key.as_ref();
    let mut last_hello_at = time::now();
    loop {
        let before = ctl.control_sent();
        flush_control(sock, ctl, key);
        if ctl.control_sent() > before {
            last_hello_at = time::now();
        }
        match ctl.poll_event() {
            Some(SenderEvent::Accepted { .. }) => {
                return Ok(time::now().saturating_duration_since(last_hello_at));
            }
            Some(SenderEvent::Failed(e)) => {
                if key.is_some() && replies.unauthenticated() > 0 {
                    // A receiver without the key answered: it takes our tag for padding and
                    // may have started the test. End it rather than leave it waiting.
                    ctl.abort();
                    flush_control(sock, ctl, key);
                }
                return Err(SetupError(handshake_failure(
                    &cfg.target,
                    &e,
                    key.is_some(),
                    replies.unauthenticated(),
                ))
                .into());
            }
            _ => {}
        }
        if stop.requested() {
            return Err(SetupError("interrupted before the test started".into()).into());
        }
        match replies.receive(sock, ctl.poll_timeout(), ctl) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                return Err(SetupError(format!(
                    "{}: nothing is listening there (the host answered port unreachable); start `udplab recv` first",
                    cfg.target
                ))
                .into());
            }
            Err(e) => return Err(SetupError(format!("{}: {e}", cfg.target)).into()),
        }
        ctl.handle_timeout(time::now());
    }
}

/// Records one interval's RTT histogram in the `--hdr-log`, when there is one and `--echo`
/// gives RTTs.
fn log_rtt(cfg: &SendConfig, start_s: f64, secs: f64, rtt: &LatencyHistogram) {
    if let Some((_, log)) = cfg.hdr_log.as_ref().filter(|_| cfg.echo) {
        log.record(
            report::hdrlog::RTT_TAG,
            start_s,
            secs,
            &rtt.to_hdrhistogram(),
        );
    }
}

/// Writes the `--hdr-log` collected during the run (after the loopback receiver has ended, so
/// its last interval is in). A failed write is recorded for the exit code.
pub fn write_hdr_log(cfg: &SendConfig) {
    let Some((path, log)) = &cfg.hdr_log else {
        return;
    };
    if log.not_kept() > 0 {
        crate::run::warn(&format!(
            "--hdr-log: {} interval histograms beyond the first {} per tag were not logged",
            log.not_kept(),
            report::hdrlog::MAX_LOGGED_PER_TAG
        ));
    }
    let mut bytes = Vec::new();
    match log.write(&mut bytes) {
        Ok(()) => crate::run::write_file(path, &bytes, false),
        Err(e) => crate::run::record_output_failure(&path.display().to_string(), e),
    }
}

/// The data thread of a plain or a reliable run.
enum SenderThread {
    Plain(thread::JoinHandle<DataResult>),
    Reliable(thread::JoinHandle<(DataResult, reliable::ReliableResult)>),
}

impl SenderThread {
    fn is_finished(&self) -> bool {
        match self {
            SenderThread::Plain(h) => h.is_finished(),
            SenderThread::Reliable(h) => h.is_finished(),
        }
    }
}

/// Writes the lost ranges the receiver carried back for `runs` to `path`.
/// A failed write is recorded for the exit code (the other outputs are still written).
pub fn write_loss_log_file(path: &std::path::Path, runs: &[&RunReport]) {
    let mut bytes = Vec::new();
    match report::write_loss_log(&mut bytes, runs) {
        Ok(()) => crate::run::write_file(path, &bytes, false),
        Err(e) => crate::run::record_output_failure(&path.display().to_string(), e),
    }
}

/// Drops the lost ranges from a report once they are in the loss log: the JSON report would
/// only repeat them, up to `MAX_CARRIED_LOSS_RANGES` of them.
pub fn strip_loss_ranges(run: &mut RunReport) {
    if let Some(r) = run.receiver.as_mut() {
        r.loss_ranges = Vec::new();
    }
}

/// The pattern the Hello announces, so the receiver's report names it.
fn hello_pattern(cfg: &SendConfig) -> HelloPattern {
    match (cfg.rate, cfg.pattern) {
        (Rate::Max, _) => HelloPattern::Unpaced,
        (_, Pattern::Cbr) => HelloPattern::Cbr,
        (_, Pattern::Poisson) => HelloPattern::Poisson,
        // A burst size beyond the field is announced as a burst of unknown size.
        (_, Pattern::Burst(n)) => HelloPattern::Burst(u16::try_from(n).unwrap_or(0)),
    }
}

/// How the data thread hands datagrams to the kernel, and what the report says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SendModeChoice {
    mode: SendMode,
    /// Why this mode, or what it does to the measurement: shown on the send-mode line.
    note: Option<String>,
    /// For the report's warnings: batching can shape the loss pattern on this path.
    warning: Option<String>,
}

/// The send mode for a test to `dest`: the user's, or `auto`'s rule ([`net::auto_send_mode`]:
/// GSO only when `dest_is_local`, else sendmmsg). GSO toward another host is the user's
/// explicit choice, and the report then says that batches of up to `gso_batch` datagrams
/// can be lost whole on a forwarded path.
fn choose_send_mode(
    requested: Option<SendMode>,
    dest: std::net::SocketAddr,
    dest_is_local: bool,
    gso_supported: bool,
    gso_batch: usize,
) -> SendModeChoice {
    let Some(mode) = requested else {
        let mode = net::auto_send_mode(dest_is_local, gso_supported);
        let why = match (mode, dest_is_local) {
            (SendMode::Gso, _) => "auto: the destination is this host, nothing forwards",
            (_, false) => "auto: one packet per datagram toward another host",
            (_, true) => "auto: no UDP GSO here",
        };
        return SendModeChoice {
            mode,
            note: Some(why.into()),
            warning: None,
        };
    };
    if mode != SendMode::Gso || dest_is_local || gso_batch < 2 {
        return SendModeChoice {
            mode,
            note: None,
            warning: None,
        };
    }
    SendModeChoice {
        mode,
        note: Some(format!(
            "batches of up to {gso_batch} datagrams travel as one packet: the loss pattern can be batch-shaped"
        )),
        warning: Some(format!(
            "--send-mode gso toward {dest}, which is not this host: each batch of up to \
             {gso_batch} datagrams leaves as one GSO packet, and where a veth, bridge, container \
             network or virtual NIC forwards it unsegmented, a drop on the way takes the whole \
             batch. Loss then comes in batch-sized bursts (loss periods, longest period) that \
             the path would not inflict on separate datagrams; --send-mode auto or mmsg sends \
             one packet per datagram"
        )),
    }
}

/// Why the handshake failed, as the sender prints it. Silence is what a receiver with another
/// key (or none), or an `--allow` list without us, answers: the message says so.
fn handshake_failure(target: &str, e: &ControlError, keyed: bool, unauthenticated: u64) -> String {
    match e {
        ControlError::NoReceiver(secs) if keyed => {
            let seen = if unauthenticated > 0 {
                format!(
                    "{unauthenticated} datagrams came back without a valid tag: the receiver \
                     probably runs without --key (one with another key stays silent)"
                )
            } else {
                "nothing came back: is `udplab recv` running there with the same key, does its \
                 --allow list include this host, and is UDP allowed through?"
                    .to_string()
            };
            format!(
                "{target}: no authenticated answer within {secs:.1} s: do sender and receiver use \
                 the same --key? ({seen})"
            )
        }
        ControlError::NoReceiver(_) => format!(
            "{target}: {e} (a receiver started with --key answers only senders with the same \
             key, and one with --allow only the addresses it lists)"
        ),
        _ => format!("{target}: {e}"),
    }
}

/// What comes back from the receiver while and after data flows: echoes (RTT) and control.
pub(crate) struct Replies {
    session_id: u32,
    batch: RecvBatch,
    /// RTT of the echoes received in the current interval.
    rtt: LatencyHistogram,
    echoes: u64,
    /// Sequences `0..warmup` are the `--omit` warm-up: their echoes give no RTT sample.
    warmup: u64,
    /// Every reply must carry this key's tag (`--key`).
    key: Option<Key>,
    /// Replies dropped because their tag did not verify.
    unauthenticated: u64,
}

impl Replies {
    pub(crate) fn new(session_id: u32, key: Option<Key>) -> Self {
        Replies {
            session_id,
            // Result chunks are the largest replies: 16 + 1200 bytes (+ 16 with a key).
            batch: RecvBatch::new(32, 2048),
            rtt: LatencyHistogram::new(),
            echoes: 0,
            warmup: 0,
            key,
            unauthenticated: 0,
        }
    }

    /// Receives what has arrived, waiting at most until `deadline` (None: 50 ms).
    fn receive(
        &mut self,
        sock: &UdpSocket,
        deadline: Option<Instant>,
        ctl: &mut SenderControl,
    ) -> io::Result<()> {
        let now = time::now();
        let wait = deadline
            .map_or(Duration::from_millis(50), |d| {
                d.saturating_duration_since(now)
            })
            .clamp(Duration::from_micros(100), Duration::from_millis(50));
        sock.set_read_timeout(Some(wait))?;
        let n = match self.batch.recv(sock) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => 0,
            Err(e) => return Err(e),
        };
        for i in 0..n {
            let (buf, meta) = self.batch.get(i);
            let buf = match &self.key {
                None => buf,
                Some(key) => match key.open(buf) {
                    Some(opened) => opened,
                    None => {
                        self.unauthenticated += 1;
                        continue;
                    }
                },
            };
            match DataHeader::parse_echo(buf) {
                Some(h) if h.session_id == self.session_id => {
                    // The kernel's arrival time: the RTT of the path, not of this thread's
                    // scheduling (it shares a core with the spinning send thread).
                    let arrival = meta.kernel_ts_ns.unwrap_or_else(time::wall_ns);
                    if h.seq >= self.warmup {
                        self.rtt.record(arrival.saturating_sub(h.send_ns));
                    }
                    self.echoes += 1;
                }
                Some(_) => {}
                None => ctl.handle_datagram(time::now(), buf),
            }
        }
        Ok(())
    }
}

fn sender_row(
    live: &LiveCounters,
    prev: &mut (u64, u64, u64),
    rtt_interval: &mut LatencyHistogram,
    rtt_total: &mut LatencyHistogram,
    start_s: f64,
    secs: f64,
) -> IntervalRow {
    let now = (
        live.sent.load(Ordering::Relaxed),
        live.bytes.load(Ordering::Relaxed),
        live.errors.load(Ordering::Relaxed),
    );
    let (sent, bytes, errors) = (now.0 - prev.0, now.1 - prev.1, now.2 - prev.2);
    *prev = now;
    let rtt = rtt_interval.summary();
    rtt_total.add(rtt_interval);
    rtt_interval.reset();
    IntervalRow {
        role: "sender".into(),
        start_s,
        end_s: start_s + secs,
        sent,
        send_errors: errors,
        stats: None,
        rtt,
        rate_bps: bytes as f64 * 8.0 / secs,
        pps: sent as f64 / secs,
        reliable: None,
    }
}

/// How many times a multicast sender sends its first announcement and its Fin, and the pause
/// between two: a receiver misses one only if all are lost.
const MULTICAST_REPEATS: usize = 3;
const MULTICAST_REPEAT_GAP: Duration = Duration::from_millis(20);

/// Sends `msg` (tagged when there is a key) [`MULTICAST_REPEATS`] times, paced; the first
/// failure is returned.
fn send_repeated(sock: &UdpSocket, msg: &[u8], key: Option<&Key>, stop: &Stop) -> io::Result<()> {
    for i in 0..MULTICAST_REPEATS {
        if i > 0 {
            if stop.abandon() {
                break;
            }
            thread::sleep(MULTICAST_REPEAT_GAP);
        }
        send_tagged(sock, msg, key)?;
    }
    Ok(())
}

fn send_tagged(sock: &UdpSocket, msg: &[u8], key: Option<&Key>) -> io::Result<()> {
    match key {
        None => sock.send(msg).map(drop),
        Some(key) => {
            let mut tagged = msg.to_vec();
            key.append_tag(&mut tagged);
            sock.send(&tagged).map(drop)
        }
    }
}

/// The ARQ sender's figures over one interval: retransmissions, spurious ones and messages
/// acknowledged since `prev` (updated), and the smoothed RTT now.
fn reliable_row(live: &LiveCounters, prev: &mut [u64; 3]) -> crate::summary::ReliableInterval {
    let now = [
        live.retransmissions.load(Ordering::Relaxed),
        live.spurious.load(Ordering::Relaxed),
        live.messages_acked.load(Ordering::Relaxed),
    ];
    let row = crate::summary::ReliableInterval {
        retransmissions: now[0] - prev[0],
        spurious_retransmissions: now[1] - prev[1],
        messages_acked: now[2] - prev[2],
        srtt_ns: live.srtt_ns.load(Ordering::Relaxed),
        ..Default::default()
    };
    *prev = now;
    row
}

/// Sends queued control datagrams, tagged when there is a key. Failures are retried by the
/// session's own timers.
pub(crate) fn flush_control(sock: &UdpSocket, ctl: &mut SenderControl, key: Option<&Key>) {
    while let Some(mut msg) = ctl.poll_transmit() {
        if let Some(key) = key {
            key.append_tag(&mut msg);
        }
        let _ = sock.send(&msg);
    }
}

/// Tags each `size`-byte datagram laid out back to back in `batch` (a GSO buffer or the
/// messages of one sendmmsg): the receiver sees them one by one.
fn sign_each(key: &Key, batch: &mut [u8], size: usize) {
    for datagram in batch.chunks_exact_mut(size) {
        key.sign(datagram);
    }
}

/// Writes Data datagrams: the header, then the tag when there is a key.
struct DataWriter {
    session_id: u32,
    key: Option<Key>,
    /// The destination of an unconnected socket (see [`DataPlan::dest`]).
    dest: Option<SocketAddr>,
}

impl DataWriter {
    /// Writes one whole datagram (`datagram` is exactly `--size` bytes).
    fn write(&self, seq: u64, send_ns: u64, datagram: &mut [u8]) {
        DataHeader {
            session_id: self.session_id,
            seq,
            send_ns,
        }
        .write(Kind::Data, datagram);
        if let Some(key) = &self.key {
            key.sign(datagram);
        }
    }
}

/// Hands `count` datagrams of `seg_size` bytes from `buf` to the kernel: batched on a connected
/// socket; with `dest` (a shared, unconnected socket) one send_to per datagram. As
/// [`net::send_batch`]: the number sent, or the error when the first one failed.
fn send_out(
    sock: &UdpSocket,
    dest: Option<SocketAddr>,
    mode: SendMode,
    buf: &[u8],
    seg_size: usize,
    count: usize,
) -> io::Result<usize> {
    let Some(dest) = dest else {
        return net::send_batch(sock, mode, buf, seg_size, count);
    };
    let mut sent = 0;
    for datagram in buf.chunks_exact(seg_size).take(count) {
        match sock.send_to(datagram, dest) {
            Ok(_) => sent += 1,
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(sent)
}

/// The timed data path: an absolute schedule, batched sends, optional impairment.
pub(crate) fn data_loop(
    sock: &UdpSocket,
    mut plan: DataPlan,
    halt: &AtomicBool,
    live: &LiveCounters,
) -> DataResult {
    let mut warnings = Vec::new();
    if let Some(cpu) = plan.cpu
        && let Err(e) = net::pin_current_thread(cpu)
    {
        warnings.push(format!("could not pin the send thread to CPU {cpu}: {e}"));
    }
    net::tighten_timer_slack();
    let payload = plan.payload;
    let mut mode = plan.mode;
    let batch = match mode {
        SendMode::Gso => plan.batch.min(net::max_gso_segments(payload)),
        _ => plan.batch,
    }
    .max(1);
    let mut buf = vec![0u8; payload * batch];
    let start = time::now();
    let end = plan.duration.map(|d| start + d);
    let limit = plan.count.unwrap_or(u64::MAX);
    let mut pacer = plan
        .pps
        .map(|pps| Pacer::new(start, pps, plan.pattern, plan.seed));
    let mut lateness = pacer.as_ref().map(|_| LatencyHistogram::new());
    let mut impair: Option<Impairment<(u64, u64)>> = plan.impair.as_ref().map(Impairment::new);
    let mut res = DataResult {
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
        mode,
        warnings: Vec::new(),
    };
    let halted = || halt.load(Ordering::Relaxed);
    let writer = DataWriter {
        session_id: plan.session_id,
        key: plan.key.take(),
        dest: plan.dest,
    };
    let mut seq = 0u64;
    let mut scratch = vec![0u8; payload];
    loop {
        if halted() {
            break;
        }
        let mut now = time::now();
        if end.is_some_and(|e| now >= e) || seq >= limit {
            break;
        }
        let n = match pacer.as_mut() {
            None => (limit - seq).min(batch as u64) as usize,
            Some(p) => {
                let due = p.next_deadline();
                if end.is_some_and(|e| due >= e) {
                    break;
                }
                if due > now {
                    let wake = impair
                        .as_ref()
                        .and_then(Impairment::poll_timeout)
                        .map_or(due, |t| t.min(due));
                    wait_until(wake, halted);
                    if let Some(imp) = impair.as_mut() {
                        release_due(imp, sock, &mut scratch, &writer, time::now(), &mut res);
                    }
                    continue;
                }
                let mut n = 0usize;
                while n < batch
                    && seq + (n as u64) < limit
                    && p.next_deadline() <= now
                    && end.is_none_or(|e| p.next_deadline() < e)
                {
                    let due = p.advance();
                    if let Some(l) = lateness.as_mut() {
                        l.record((now - due).as_nanos() as u64);
                    }
                    n += 1;
                }
                n
            }
        };
        if n == 0 {
            break;
        }
        let wall = time::wall_ns();
        match res.last {
            None => res.first = Some(now),
            Some(prev) => {
                // One batch leaves in one syscall: its first datagram carries the gap.
                res.gaps.record((now - prev).as_nanos() as u64);
                for _ in 1..n {
                    res.gaps.record(0);
                }
            }
        }
        match impair.as_mut() {
            None => {
                for i in 0..n {
                    DataHeader {
                        session_id: plan.session_id,
                        seq: seq + i as u64,
                        send_ns: wall,
                    }
                    .write(Kind::Data, &mut buf[i * payload..]);
                }
                // One branch per batch without a key; with one, every datagram of the batch
                // (each GSO segment, each sendmmsg message) carries its own tag.
                if let Some(key) = &writer.key {
                    sign_each(key, &mut buf[..n * payload], payload);
                }
                let mut off = 0usize;
                while off < n {
                    match send_out(
                        sock,
                        writer.dest,
                        mode,
                        &buf[off * payload..n * payload],
                        payload,
                        n - off,
                    ) {
                        Ok(0) => {
                            res.errors_other += 1;
                            off += 1;
                        }
                        Ok(k) => off += k,
                        Err(e) if mode == SendMode::Gso && net::is_gso_refused(&e) => {
                            // Some paths refuse GSO (e.g. a device without segmentation): fall
                            // back for the rest of the run without losing this batch.
                            warnings.push(format!("UDP GSO refused ({e}); sending with sendmmsg"));
                            mode = SendMode::Mmsg;
                            res.mode = mode;
                        }
                        Err(e) => {
                            // GSO is all-or-nothing; sendmmsg failed on its first datagram.
                            let dropped = if mode == SendMode::Gso { n - off } else { 1 };
                            count_error(&mut res, &e, dropped as u64);
                            off += dropped;
                        }
                    }
                }
            }
            Some(imp) => {
                // The emulated network starts after the timestamp was taken, never before it,
                // so a preemption here cannot make a datagram arrive earlier than its delay.
                let offered = time::now();
                for i in 0..n {
                    let s = seq + i as u64;
                    let fate = imp.handle(offered, payload, (s, wall));
                    if let Some(log) = plan.impair_log.as_mut() {
                        log_fate(log, s, &fate);
                    }
                }
                now = time::now();
                release_due(imp, sock, &mut scratch, &writer, now, &mut res);
            }
        }
        seq += n as u64;
        res.sent = seq;
        res.bytes = seq * payload as u64;
        res.last = Some(now);
        live.sent.store(seq, Ordering::Relaxed);
        live.bytes.store(res.bytes, Ordering::Relaxed);
        live.errors.store(res.errors(), Ordering::Relaxed);
    }
    // Datagrams still inside the emulated network arrive at their time (at once when halted).
    if let Some(imp) = impair.as_mut() {
        while imp.pending() > 0 {
            if halted() {
                for (s, ts) in imp.flush_all() {
                    send_one(sock, &mut scratch, &writer, s, ts, &mut res);
                }
                break;
            }
            if let Some(t) = imp.poll_timeout() {
                wait_until(t, halted);
            }
            release_due(imp, sock, &mut scratch, &writer, time::now(), &mut res);
        }
        res.impair = Some(imp.counters());
    }
    if let Some(log) = plan.impair_log.as_mut()
        && let Err(e) = log.flush()
    {
        warnings.push(format!("writing the impairment log: {e}"));
    }
    live.errors.store(res.errors(), Ordering::Relaxed);
    res.lateness = lateness;
    res.warnings = warnings;
    res
}

fn release_due(
    imp: &mut Impairment<(u64, u64)>,
    sock: &UdpSocket,
    scratch: &mut [u8],
    writer: &DataWriter,
    now: Instant,
    res: &mut DataResult,
) {
    // poll_timeout is the due time of the item poll_release hands out next: how late the
    // emulated network delivers it is this thread's scheduling, not the configured delay.
    while let Some(due) = imp.poll_timeout().filter(|&t| t <= now) {
        let Some((s, ts)) = imp.poll_release(now) else {
            break;
        };
        res.release_lateness
            .record(time::now().saturating_duration_since(due).as_nanos() as u64);
        send_one(sock, scratch, writer, s, ts, res);
    }
}

fn send_one(
    sock: &UdpSocket,
    scratch: &mut [u8],
    writer: &DataWriter,
    seq: u64,
    send_ns: u64,
    res: &mut DataResult,
) {
    writer.write(seq, send_ns, scratch);
    let sent = match writer.dest {
        None => sock.send(scratch),
        Some(dest) => sock.send_to(scratch, dest),
    };
    if let Err(e) = sent {
        count_error(res, &e, 1);
    }
}

fn log_fate(log: &mut BufWriter<OutputFile>, seq: u64, fate: &Fate) {
    let what = match fate {
        Fate::Dropped => Some("drop"),
        Fate::QueueDropped => Some("qdrop"),
        Fate::Passed {
            copies, held_back, ..
        } => {
            if *copies > 1 {
                let _ = writeln!(log, "{seq},dup");
            }
            held_back.then_some("hold")
        }
    };
    if let Some(what) = what {
        let _ = writeln!(log, "{seq},{what}");
    }
}

pub(super) fn count_error(res: &mut DataResult, e: &io::Error, n: u64) {
    if net::is_enobufs(e) {
        res.errors_enobufs += n;
    } else if net::is_eagain(e) {
        res.errors_eagain += n;
    } else if net::sockopts::is_emsgsize(e) {
        res.errors_emsgsize += n;
    } else {
        res.errors_other += n;
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn remote() -> SocketAddr {
        "192.0.2.7:5210".parse().unwrap()
    }

    #[test]
    fn a_silent_handshake_names_the_key_and_the_allow_list() {
        let silent = ControlError::NoReceiver(3.0);
        let keyed = handshake_failure("h:1", &silent, true, 0);
        assert!(
            keyed.starts_with("h:1: no authenticated answer within 3.0 s: do sender and receiver use the same --key?"),
            "{keyed}"
        );
        assert!(keyed.contains("--allow list include this host"), "{keyed}");
        let answered = handshake_failure("h:1", &silent, true, 4);
        assert!(
            answered.contains("4 datagrams came back without a valid tag"),
            "{answered}"
        );
        let plain = handshake_failure("h:1", &silent, false, 0);
        assert!(
            plain.contains("no answer from a udplab receiver"),
            "{plain}"
        );
        assert!(
            plain.contains("--key") && plain.contains("--allow"),
            "{plain}"
        );
        // Other failures are what the session says, nothing added.
        assert_eq!(
            handshake_failure("h:1", &ControlError::Busy(11), true, 4),
            format!("h:1: {}", ControlError::Busy(11))
        );
    }

    #[test]
    fn every_datagram_of_a_batch_carries_its_own_tag() {
        let key = Key::from_secret(b"a test key of 20 bytes", "test").unwrap();
        let (size, n) = (100, 5);
        let mut batch = vec![0u8; size * n];
        for (i, datagram) in batch.chunks_exact_mut(size).enumerate() {
            DataHeader {
                session_id: 1,
                seq: i as u64,
                send_ns: 2,
            }
            .write(Kind::Data, datagram);
        }
        sign_each(&key, &mut batch, size);
        for (i, datagram) in batch.chunks_exact(size).enumerate() {
            let header = DataHeader::parse_data(key.verify(datagram).expect("authentic"));
            assert_eq!(header.map(|h| h.seq), Some(i as u64));
        }
    }

    #[test]
    fn a_data_writer_tags_the_datagram_and_keeps_its_size() {
        let key = Key::from_secret(b"a test key of 20 bytes", "test").unwrap();
        let writer = DataWriter {
            session_id: 9,
            key: Some(key.clone()),
            dest: None,
        };
        let mut datagram = vec![0u8; 64];
        writer.write(5, 77, &mut datagram);
        assert_eq!(datagram.len(), 64);
        let header = DataHeader::parse_data(key.verify(&datagram).expect("authentic")).unwrap();
        assert_eq!((header.session_id, header.seq, header.send_ns), (9, 5, 77));
        let plain = DataWriter {
            session_id: 9,
            key: None,
            dest: None,
        };
        let mut untagged = vec![0u8; 64];
        plain.write(5, 77, &mut untagged);
        assert_eq!(untagged[..24], datagram[..24]);
        assert!(untagged[24..].iter().all(|&b| b == 0), "padding stays zero");
        assert_eq!(key.verify(&untagged), None);
    }

    #[test]
    fn auto_never_sends_gso_toward_another_host() {
        let c = choose_send_mode(None, remote(), false, true, 32);
        assert_ne!(c.mode, SendMode::Gso);
        assert_eq!(c.warning, None);
        assert_eq!(
            c.note.as_deref(),
            Some("auto: one packet per datagram toward another host")
        );
    }

    #[test]
    fn auto_keeps_gso_on_this_host() {
        let local: SocketAddr = "127.0.0.1:5210".parse().unwrap();
        let c = choose_send_mode(None, local, true, true, 32);
        assert_eq!(c.mode, SendMode::Gso);
        assert_eq!(c.warning, None);
        assert!(c.note.unwrap().contains("this host"));
    }

    #[test]
    fn explicit_gso_toward_another_host_is_warned_about() {
        let c = choose_send_mode(Some(SendMode::Gso), remote(), false, true, 32);
        assert_eq!(c.mode, SendMode::Gso);
        let warning = c.warning.expect("a warning");
        assert!(warning.contains("192.0.2.7:5210"), "{warning}");
        assert!(warning.contains("up to 32 datagrams"), "{warning}");
        assert!(c.note.expect("a note").contains("batch-shaped"));
    }

    #[test]
    fn explicit_modes_that_cannot_shape_loss_say_nothing() {
        let local: SocketAddr = "[::1]:5210".parse().unwrap();
        for (mode, dest, is_local, batch) in [
            (SendMode::Gso, local, true, 32),
            (SendMode::Gso, remote(), false, 1),
            (SendMode::Mmsg, remote(), false, 32),
            (SendMode::Plain, remote(), false, 32),
        ] {
            let c = choose_send_mode(Some(mode), dest, is_local, true, batch);
            assert_eq!(
                c,
                SendModeChoice {
                    mode,
                    note: None,
                    warning: None
                },
                "{mode} to {dest}"
            );
        }
    }
}
