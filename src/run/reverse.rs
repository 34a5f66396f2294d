//! The client of a reverse test (`send -R`): it opens the test through the usual handshake,
//! then measures the Data the receiver sends with the receiver's own statistics core, and
//! takes the receiver's sender-side report (its totals) as the end of the test.

use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use crate::auth::Key;
use crate::config::SendConfig;
use crate::error::SetupError;
use crate::net::{self, RecvBatch, SocketOptions};
use crate::report;
use crate::run::send::{HandshakeRx, flush_control, handshake, strip_loss_ranges, test_params};
use crate::run::{Stop, text_writer};
use crate::session::{SenderControl, SenderEvent, TestParams};
use crate::stats::{ReceiverStats, StatsConfig};
use crate::summary::{
    Direction, IntervalRow, MAX_CARRIED_LOSS_RANGES, MAX_KEPT_INTERVALS, REPORT_VERSION,
    ReceiverReport, RunReport, SenderReport, keep_interval,
};
use crate::time;
use crate::wire::{self, DataHeader};

/// Longest the receive loop blocks before looking at its timers.
const RECV_TICK: Duration = Duration::from_millis(5);

/// How long the receiver plans to send for `params` (what the results may take to come).
fn planned_length(params: &TestParams) -> Duration {
    let by_count = (params.count > 0 && params.pps_milli > 0).then(|| {
        Duration::from_secs_f64((params.count as f64 * 1000.0 / params.pps_milli as f64).min(1e6))
    });
    match (params.duration > Duration::ZERO, by_count) {
        (true, Some(c)) => params.duration.min(c),
        (true, None) => params.duration,
        (false, Some(c)) => c,
        (false, None) => crate::session::MAX_REVERSE_DURATION,
    }
}

/// The measuring half of a reverse test: the stats core and what it needs around it.
pub(crate) struct Measure {
    session_id: u32,
    stats: ReceiverStats,
    tmax: Duration,
    started: Instant,
    interval: Duration,
    next_interval: Instant,
    interval_index: u64,
    row_spans: std::collections::VecDeque<(f64, f64)>,
    intervals: Vec<IntervalRow>,
    intervals_not_kept: u64,
    loss_ranges: Vec<[u64; 2]>,
    loss_ranges_not_kept: u64,
    /// Datagrams that were not this test's (another session's Data, not udplab's).
    foreign: u64,
    /// Datagrams whose `--key` tag did not verify.
    unauthenticated: u64,
    key: Option<Key>,
    /// Taken out while its datagrams are counted (always back in between).
    batch: Option<RecvBatch>,
}

impl HandshakeRx for Measure {
    fn receive(
        &mut self,
        sock: &std::net::UdpSocket,
        deadline: Option<Instant>,
        ctl: &mut SenderControl,
    ) -> std::io::Result<()> {
        let wait = deadline
            .map_or(RECV_TICK, |d| d.saturating_duration_since(time::now()))
            .clamp(Duration::from_micros(100), Duration::from_millis(50));
        sock.set_read_timeout(Some(wait))?;
        match self.receive_batch(sock, ctl) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
            other => other,
        }
    }

    fn unauthenticated(&self) -> u64 {
        self.unauthenticated
    }
}

impl Measure {
    /// Measures test `session_id`'s Data from `start` on (the handshake's start: the receiver
    /// sends once it accepts, and its accepting answer may be lost).
    pub(crate) fn new(
        cfg: &SendConfig,
        session_id: u32,
        params: &TestParams,
        start: Instant,
    ) -> Self {
        Measure {
            session_id,
            stats: ReceiverStats::new(StatsConfig {
                window_bits: params.window_bits(),
                loss_horizon_ns: params.tmax.as_nanos() as u64,
                record_loss_ranges: cfg.outputs.loss_log.is_some(),
            }),
            tmax: params.tmax,
            started: start,
            interval: cfg.interval,
            next_interval: start + cfg.interval,
            interval_index: 0,
            row_spans: std::collections::VecDeque::new(),
            intervals: Vec::new(),
            intervals_not_kept: 0,
            loss_ranges: Vec::new(),
            loss_ranges_not_kept: 0,
            foreign: 0,
            unauthenticated: 0,
            key: cfg.key.clone(),
            batch: Some(RecvBatch::new(
                64,
                cfg.payload_size.max(2048) + auth_room(cfg.key.as_ref()),
            )),
        }
    }

    /// Declares due losses and closes the interval rows that ended by `now`; the rows whose
    /// losses are final are printed (unless `quiet`) and streamed.
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        cfg: &SendConfig,
        text: &mut impl Write,
        stream: Option<&report::IntervalStream>,
        run_id: &str,
    ) -> anyhow::Result<()> {
        self.stats.on_tick(self.now_ns(now));
        while now >= self.next_interval {
            let secs = self.interval.as_secs_f64();
            let end_s = (self.interval_index + 1) as f64 * secs;
            self.close_row(now, end_s);
            self.next_interval += self.interval;
        }
        publish(self, cfg, text, stream, run_id)
    }

    /// Receives one batch: this test's Data to the statistics, the rest to `ctl`.
    pub(crate) fn receive_batch(
        &mut self,
        sock: &std::net::UdpSocket,
        ctl: &mut SenderControl,
    ) -> std::io::Result<()> {
        let Some(mut batch) = self.batch.take() else {
            return Ok(());
        };
        let received = batch.recv(sock);
        let now = time::now();
        for i in 0..*received.as_ref().unwrap_or(&0) {
            let (buf, meta) = batch.get(i);
            let recv_ns = meta.kernel_ts_ns.unwrap_or_else(time::wall_ns);
            self.datagram(now, recv_ns, buf, ctl);
        }
        self.batch = Some(batch);
        received.map(|_| ())
    }

    fn now_ns(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_nanos() as u64
    }

    /// Feeds one received datagram: this test's Data to the statistics, the rest to `ctl`.
    fn datagram(
        &mut self,
        now: Instant,
        recv_ns: u64,
        buf: &[u8],
        ctl: &mut SenderControl,
    ) -> bool {
        let buf = match &self.key {
            None => buf,
            Some(key) => match key.open(buf) {
                Some(opened) => opened,
                None => {
                    self.unauthenticated += 1;
                    return false;
                }
            },
        };
        match DataHeader::parse_data(buf) {
            Some(h) if h.session_id == self.session_id => {
                let now_ns = self.now_ns(now);
                self.stats
                    .on_datagram(h.seq, h.send_ns, recv_ns, now_ns, buf.len());
                true
            }
            Some(_) => {
                self.foreign += 1;
                false
            }
            None => {
                if wire::parse(buf).is_err() {
                    self.foreign += 1;
                }
                ctl.handle_datagram(now, buf);
                false
            }
        }
    }

    /// Closes the open interval row at `now`; it ends at `end_s`.
    fn close_row(&mut self, now: Instant, end_s: f64) {
        let start_s = self.interval_index as f64 * self.interval.as_secs_f64();
        let now_ns = self.now_ns(now);
        self.stats.close_interval(now_ns);
        self.row_spans.push_back((start_s, end_s));
        self.interval_index += 1;
    }

    /// The rows whose losses are final, in order (printed once, with their final figures).
    fn final_rows(&mut self) -> Vec<IntervalRow> {
        let mut rows = Vec::new();
        while let Some(stats) = self.stats.poll_interval() {
            let (start_s, end_s) = self.row_spans.pop_front().unwrap_or_default();
            let dt = (end_s - start_s).max(1e-9);
            let row = IntervalRow {
                role: "receiver".into(),
                start_s,
                end_s,
                rate_bps: stats.received_bytes as f64 * 8.0 / dt,
                pps: stats.received as f64 / dt,
                stats: Some(stats),
                ..IntervalRow::default()
            };
            keep_interval(
                &mut self.intervals,
                row.clone(),
                &mut self.intervals_not_kept,
            );
            rows.push(row);
        }
        for r in self.stats.drain_loss_ranges() {
            if self.loss_ranges.len() < MAX_CARRIED_LOSS_RANGES {
                self.loss_ranges.push([*r.start(), *r.end()]);
            } else {
                self.loss_ranges_not_kept += 1;
            }
        }
        rows
    }
}

/// Runs one reverse test against the receiver in `cfg` and returns the whole run's report:
/// the receiver's sending side as `sender`, this side's measurement as `receiver`.
pub fn run(cfg: &SendConfig, stop: &Stop) -> anyhow::Result<RunReport> {
    let started_wall = time::wall_ns();
    let bound = net::bind(
        cfg.bind.unwrap_or_else(|| net::unspecified_for(&cfg.addr)),
        &SocketOptions {
            rcvbuf: cfg.rcvbuf,
            sndbuf: cfg.sndbuf,
            force_buffers: cfg.force_buf,
            // This side measures one-way delay and its own buffer's drops.
            kernel_timestamps: true,
            rxq_overflow: true,
            ..SocketOptions::default()
        },
    )
    .map_err(|e| SetupError(e.to_string()))?;
    let mut warnings: Vec<String> = bound
        .warnings
        .iter()
        .map(|w| format!("the measuring socket: {w}"))
        .collect();
    for w in &warnings {
        crate::run::warn(w);
    }
    let sock = &bound.socket;
    // Connected: only the receiver's address reaches this socket (the kernel filters the
    // rest), and a NAT or firewall sees a flow this side opened.
    sock.connect(cfg.addr)
        .map_err(|e| SetupError(format!("cannot reach {}: {e}", cfg.target)))?;
    let session_id = crate::run::session_id();
    let run_id = format!("{session_id:08x}");
    let params = test_params(cfg);
    let key = cfg.key.as_ref();
    // The measurement starts with the handshake: the receiver sends from the moment it
    // accepts, and its accepting answer may be lost (then the Data comes first).
    let start = time::now();
    let mut ctl = SenderControl::with_direction(session_id, params, true, start);
    let mut m = Measure::new(cfg, session_id, &params, start);
    handshake(sock, &mut ctl, &mut m, cfg, stop)?;
    ctl.await_reverse_results(time::now(), planned_length(&params));
    let mut text = text_writer(&cfg.outputs);
    let interval_stream = crate::run::open_interval_stream(&cfg.outputs)?;
    if !cfg.outputs.quiet {
        report::write_interval_header(&mut text, "receiver")?;
        text.flush()?;
    }
    sock.set_read_timeout(Some(RECV_TICK))?;
    let mut sender: Option<SenderReport> = None;
    // When the totals arrived: late Data still counts for Tmax after it.
    let mut drain_until: Option<Instant> = None;
    let mut stopping = false;
    let mut failed = false;
    let mut peer_interrupted = false;
    loop {
        match m.receive_batch(sock, &mut ctl) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock
                        | ErrorKind::TimedOut
                        | ErrorKind::Interrupted
                        | ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(e.into()),
        }
        let now = time::now();
        ctl.handle_timeout(now);
        flush_control(sock, &mut ctl, key);
        while let Some(ev) = ctl.poll_event() {
            match ev {
                SenderEvent::SenderResults {
                    report,
                    interrupted,
                } => {
                    if interrupted {
                        peer_interrupted = true;
                        warnings
                            .push("the receiver was interrupted: it stopped sending early".into());
                    }
                    sender = Some(*report);
                    drain_until = Some(now + params.tmax);
                }
                SenderEvent::Failed(e) => {
                    warnings.push(format!("no results from the receiver: {e}"));
                    failed = true;
                }
                SenderEvent::Accepted { .. } | SenderEvent::Results(_) => {}
            }
        }
        if stop.requested() && !stopping && sender.is_none() {
            // Stop the receiver's data; its totals still come back.
            stopping = true;
            ctl.stop_reverse(now);
            flush_control(sock, &mut ctl, key);
        }
        m.tick(now, cfg, &mut text, interval_stream.as_ref(), &run_id)?;
        if failed || drain_until.is_some_and(|t| now >= t) || stop.abandon() {
            break;
        }
    }
    let interrupted = stop.requested() || peer_interrupted || sender.is_none();
    let mut run = m.into_report(
        cfg,
        &bound,
        &mut text,
        interval_stream.as_ref(),
        sender,
        interrupted,
    )?;
    // This side's warnings first, then the measurement's.
    run.warnings.splice(0..0, warnings);
    run.started_at = time::rfc3339(started_wall);
    if let Some(path) = cfg.outputs.loss_log.as_ref() {
        crate::run::send::write_loss_log_file(path, &[&run]);
        strip_loss_ranges(&mut run);
    }
    Ok(run)
}

impl Measure {
    /// Ends the measurement (the receiver's `sender` totals end it as a Fin does; without them,
    /// what was seen) and returns the reverse direction's report, with the measurement's own
    /// warnings.
    pub(crate) fn into_report(
        mut self,
        cfg: &SendConfig,
        bound: &net::BoundSocket,
        text: &mut impl Write,
        stream: Option<&report::IntervalStream>,
        sender: Option<SenderReport>,
        interrupted: bool,
    ) -> anyhow::Result<RunReport> {
        let mut warnings = Vec::new();
        let m = &mut self;
        let sock = &bound.socket;
        let run_id = format!("{:08x}", m.session_id);
        let now = time::now();
        let total = match &sender {
            Some(s) => s.sent,
            None => m.stats.seen_end(),
        };
        m.stats.finish(total, m.now_ns(now));
        let elapsed = now.saturating_duration_since(m.started).as_secs_f64();
        let start_s = m.interval_index as f64 * m.interval.as_secs_f64();
        if elapsed > start_s {
            m.close_row(now, elapsed);
        }
        publish(m, cfg, text, stream, &run_id)?;
        text.flush()?;
        let rcvbuf_drops = match m.batch.as_mut().filter(|_| bound.rxq_overflow) {
            Some(batch) => batch
                .refresh_rxq_dropped(sock)
                .ok()
                .flatten()
                .or(batch.rxq_dropped())
                .or(Some(0)),
            None => None,
        };
        let stats = m.stats.summary();
        let duration_s = match (stats.first_recv_ns, stats.last_recv_ns) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => 0.0,
        };
        let per_s = |x: f64| {
            if duration_s > 0.0 {
                x / duration_s
            } else {
                0.0
            }
        };
        warnings.extend(stats.clock_warning());
        if m.intervals_not_kept > 0 {
            warnings.push(format!(
            "{} interval rows beyond the first {MAX_KEPT_INTERVALS} were printed but not kept in this report",
            m.intervals_not_kept
        ));
        }
        let receiver = ReceiverReport {
            duration_s,
            rate_achieved_bps: per_s(stats.received_bytes as f64 * 8.0),
            pps_achieved: per_s(stats.received as f64),
            rcvbuf: bound.rcvbuf,
            sndbuf: bound.sndbuf,
            rcvbuf_drops,
            timestamp_source: if bound.kernel_timestamps {
                "kernel".into()
            } else {
                "user".into()
            },
            foreign_datagrams: m.foreign,
            rcvbuf_drops_shared: false,
            tmax_s: m.tmax.as_secs_f64(),
            intervals: std::mem::take(&mut m.intervals),
            intervals_not_kept: m.intervals_not_kept,
            interrupted,
            echo_sent: 0,
            peer: cfg.addr.to_string(),
            loss_ranges: std::mem::take(&mut m.loss_ranges),
            loss_ranges_not_kept: m.loss_ranges_not_kept,
            unauthenticated: cfg.key.as_ref().map(|_| m.unauthenticated),
            refused_by_allow: None,
            // The reverse client does not read its Data's TOS/TTL: no marking report.
            marking: Default::default(),
            // --omit and --reliable are refused with -R and --bidir.
            omit_s: 0.0,
            omitted_sequences: 0,
            omitted: 0,
            reliable: None,
            stats,
        };
        let sender = sender.map(|mut s| {
            s.control_sent = 0;
            s
        });
        Ok(RunReport {
            version: REPORT_VERSION,
            run_id,
            target: cfg.target.clone(),
            payload_bytes: cfg.payload_size as u32,
            pattern: cfg.pattern.to_string(),
            echo: false,
            sender,
            receiver: Some(receiver),
            warnings,
            interrupted,
            direction: Direction::Reverse,
            labels: cfg.labels.clone(),
            ..RunReport::default()
        })
    }
}

/// Room for the `--key` tag after the largest datagram.
fn auth_room(key: Option<&Key>) -> usize {
    key.map_or(0, |_| crate::auth::TAG_LEN)
}

/// Prints, streams and keeps the rows whose losses are final.
fn publish(
    m: &mut Measure,
    cfg: &SendConfig,
    text: &mut impl Write,
    stream: Option<&report::IntervalStream>,
    run_id: &str,
) -> anyhow::Result<()> {
    for row in m.final_rows() {
        if !cfg.outputs.quiet {
            report::write_interval_line(&mut *text, &row)?;
            text.flush()?;
        }
        if let Some(stream) = stream
            && let Err(e) = stream.write(run_id, &row)
        {
            crate::run::warn(&format!(
                "--intervals-json: {e}: no more interval lines are streamed"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::HelloPattern;

    fn params(count: u64, duration: Duration, pps_milli: u64) -> TestParams {
        TestParams {
            payload_size: 100,
            echo: false,
            interval: Duration::from_secs(1),
            tmax: Duration::from_secs(1),
            count,
            duration,
            rate_bps: 0,
            pps_milli,
            loss_ranges: false,
            pattern: HelloPattern::Cbr,
            marking: Default::default(),
            omit: Duration::ZERO,
            reliable: None,
        }
    }

    #[test]
    fn the_planned_length_is_whichever_limit_ends_first() {
        let ten_s = Duration::from_secs(10);
        assert_eq!(planned_length(&params(0, ten_s, 1000)), ten_s);
        assert_eq!(
            planned_length(&params(2000, Duration::ZERO, 1_000_000)),
            Duration::from_secs(2)
        );
        assert_eq!(
            planned_length(&params(2000, ten_s, 1_000_000)),
            Duration::from_secs(2)
        );
        assert_eq!(
            planned_length(&params(0, Duration::ZERO, 1000)),
            crate::session::MAX_REVERSE_DURATION
        );
    }
}
