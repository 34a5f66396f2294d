//! `--flows N`: several tests side by side, each with its own socket, session and threads, a
//! live progress line per interval summed over the flows, and the per-flow results with their
//! total.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::Context;

use crate::config::{JsonOut, Outputs, SendConfig, Thresholds};
use crate::error::Outcome;
use crate::report;
use crate::run::{
    Stdout, Stop, append_csv_rows, check_thresholds, outcome_of, record_output_failure, send,
    text_writer, threshold_lines, warn, write_file,
};
use crate::summary::{
    ExtentBucket, ImpairCounters, IntervalRow, REPORT_VERSION, ReceiverReport,
    ReceiverStatsSummary, RunReport, SenderReport, Verdict,
};

/// A multi-flow run: every flow's own report and their total.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowsReport {
    pub flows: Vec<RunReport>,
    /// Counts and rates summed over the flows. Percentiles cannot be added, so latency, IPDV,
    /// PDV and RTT are left out (see each flow); jitter and the maxima are the worst flow's;
    /// `rcvbuf_drops` is the largest per-flow figure, because every flow shares one receive
    /// socket and each flow's figure already counts the socket's drops during its test.
    pub total: RunReport,
}

/// Runs `cfg.flows` tests at once against `cfg.addr`.
pub fn run(cfg: &SendConfig, stop: &Stop) -> anyhow::Result<FlowsReport> {
    // Held for the whole run so every flow writes into this one stream (not a truncated copy).
    let _interval_stream = crate::run::open_interval_stream(&cfg.outputs)?;
    let (row_tx, row_rx) = mpsc::channel();
    let handles: Vec<_> = (0..cfg.flows)
        .map(|i| {
            let mut flow = cfg.clone();
            flow.flow_index = i;
            flow.seed = cfg.seed.map(|s| s.wrapping_add(i as u64));
            // Each flow draws its own fates from the same spec.
            if let Some(spec) = flow.impair.as_mut() {
                spec.seed = spec.seed.wrapping_add(i as u64);
            }
            // Flows print nothing themselves: their rows come here for the progress line, the
            // table and files at the end. Each asks its receiver for the lost ranges when there
            // is a loss log (written below, one file for all flows) and streams its intervals.
            flow.outputs = Outputs {
                quiet: true,
                loss_log: cfg.outputs.loss_log.clone(),
                intervals_json: cfg.outputs.intervals_json.clone(),
                ..Outputs::default()
            };
            flow.live_rows = Some(row_tx.clone());
            let stop = stop.clone();
            thread::Builder::new()
                .name(format!("udplab-flow{i}"))
                .spawn(move || send::run(&flow, &stop))
        })
        .collect::<Result<_, _>>()
        .context("starting the flows")?;
    drop(row_tx);
    let mut progress = Progress::new(cfg.flows, cfg.interval.as_secs_f64());
    let mut text = text_writer(&cfg.outputs);
    if !cfg.outputs.quiet {
        writeln!(
            text,
            "intervals of all {} flows, summed: sent is datagrams, rate is payload bit/s, err is send errors",
            cfg.flows
        )?;
    }
    // Until every flow's sender has hung up its end of the channel.
    loop {
        match row_rx.recv_timeout(Duration::from_millis(200)) {
            Ok((_flow, row)) => {
                for line in progress.add(row) {
                    if !cfg.outputs.quiet {
                        report::write_interval_line(&mut text, &line)?;
                        text.flush()?;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for line in progress.rest() {
        if !cfg.outputs.quiet {
            report::write_interval_line(&mut text, &line)?;
        }
    }
    text.flush()?;
    let mut flows = Vec::with_capacity(cfg.flows);
    for (i, h) in handles.into_iter().enumerate() {
        let report = h
            .join()
            .map_err(|_| anyhow::anyhow!("flow {i} panicked"))?
            .with_context(|| format!("flow {i}"))?;
        flows.push(report);
    }
    if let Some(path) = &cfg.outputs.loss_log {
        send::write_loss_log_file(path, &flows.iter().collect::<Vec<_>>());
        flows.iter_mut().for_each(send::strip_loss_ranges);
    }
    let total = total_of(&flows);
    Ok(FlowsReport { flows, total })
}

/// Gathers the flows' sender rows into one row per interval: a line is due once every flow
/// has closed that interval (flows start within milliseconds of each other, so their
/// intervals line up by index).
struct Progress {
    flows: usize,
    /// The report interval, seconds.
    interval_s: f64,
    /// By interval index: the summed row and how many flows it holds.
    pending: BTreeMap<u64, (IntervalRow, usize)>,
}

impl Progress {
    fn new(flows: usize, interval_s: f64) -> Self {
        Progress {
            flows,
            interval_s,
            pending: BTreeMap::new(),
        }
    }

    /// Adds one flow's row; returns the rows now complete, in time order.
    fn add(&mut self, row: IntervalRow) -> Vec<IntervalRow> {
        // Intervals start a whole number of intervals after the flow's start.
        let index = (row.start_s / self.interval_s).round() as u64;
        let (sum, count) = self.pending.entry(index).or_insert_with(|| {
            (
                IntervalRow {
                    role: "sender".into(),
                    start_s: row.start_s,
                    end_s: row.end_s,
                    ..IntervalRow::default()
                },
                0,
            )
        });
        sum.sent += row.sent;
        sum.send_errors += row.send_errors;
        sum.rate_bps += row.rate_bps;
        sum.pps += row.pps;
        sum.end_s = sum.end_s.max(row.end_s);
        *count += 1;
        let mut done = Vec::new();
        // Complete intervals leave in order; a later one never overtakes an open earlier one.
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().1 < self.flows {
                break;
            }
            done.push(entry.remove().0);
        }
        done
    }

    /// What is left once the flows ended (intervals some flows did not reach), in time order.
    fn rest(&mut self) -> Vec<IntervalRow> {
        std::mem::take(&mut self.pending)
            .into_values()
            .map(|(row, _)| row)
            .collect()
    }
}

/// Checks the thresholds on every flow and on the total (first, so every file carries the
/// verdicts), prints one line per flow and the total, and writes the files. A file that fails
/// is recorded for the exit code; the others are still written.
pub fn write_outputs(
    mut r: FlowsReport,
    outputs: &Outputs,
    th: &Thresholds,
) -> anyhow::Result<Outcome> {
    let outcome = judge(&mut r, th);
    for f in &r.flows {
        for warning in &f.warnings {
            warn(warning);
        }
    }
    let mut text = text_writer(outputs);
    write_table(&mut text, &r)?;
    text.flush()?;
    for f in r.flows.iter().chain(std::iter::once(&r.total)) {
        append_csv_rows(outputs, f);
    }
    let document = report::flows_document(&r.flows, &r.total);
    match &outputs.json {
        Some(JsonOut::Stdout) => {
            let _ = report::write_document(Stdout, &document);
        }
        Some(JsonOut::File(path)) => {
            let mut bytes = Vec::new();
            match report::write_document(&mut bytes, &document) {
                Ok(()) => write_file(path, &bytes, false),
                Err(e) => record_output_failure(&path.display().to_string(), e),
            }
        }
        None => {}
    }
    Ok(outcome)
}

/// Judges every flow and the total against `th` and stores the checks in their reports. The
/// total's own checks cover counts only (it has no percentiles); its `verdict` is the whole
/// run's: the worst of every flow's and its own.
fn judge(r: &mut FlowsReport, th: &Thresholds) -> Outcome {
    let mut verdict = Verdict::None;
    let (mut failed, mut unmeasured) = (Vec::new(), Vec::new());
    for (i, f) in r.flows.iter_mut().enumerate() {
        f.thresholds = check_thresholds(f, th);
        f.verdict = Verdict::of(&f.thresholds);
        verdict = verdict.worst(f.verdict);
        let (fl, un) = threshold_lines(&f.thresholds, &format!("flow {i}: "), f.reliable.is_some());
        failed.extend(fl);
        unmeasured.extend(un);
    }
    let total_th = Thresholds {
        max_latency_p99: None,
        max_rtt_p99: None,
        max_jitter: None,
        ..*th
    };
    r.total.thresholds = check_thresholds(&r.total, &total_th);
    verdict = verdict.worst(Verdict::of(&r.total.thresholds));
    r.total.verdict = verdict;
    let (fl, un) = threshold_lines(&r.total.thresholds, "total: ", r.total.reliable.is_some());
    failed.extend(fl);
    unmeasured.extend(un);
    outcome_of(verdict, failed, unmeasured, r.total.interrupted)
}

fn write_table(w: &mut dyn Write, r: &FlowsReport) -> io::Result<()> {
    let reliable = r.flows.iter().any(|f| f.reliable.is_some());
    if reliable {
        writeln!(
            w,
            "datagrams (--reliable): sent, received and lost count RData datagrams, \
             retransmissions included; lost % is the raw loss of the path before recovery, not \
             message loss (that is the reliable table's resid %)"
        )?;
    }
    writeln!(
        w,
        "{:<6} {:<9} {:>11} {:>11} {:>9} {:>8} {:>6} {:>6} {:>10} {:>10} {:>10} {:>14}",
        "flow",
        "run_id",
        "sent",
        "received",
        "lost",
        "lost %",
        "dup",
        "reord",
        "jitter µs",
        "lat p50 µs",
        "lat p99 µs",
        "recv Mbit/s"
    )?;
    for (i, f) in r.flows.iter().enumerate() {
        write_line(w, &i.to_string(), f)?;
    }
    write_line(w, "total", &r.total)?;
    if reliable {
        crate::run::flows_reliable::write_table(w, &r.flows, &r.total)?;
    }
    Ok(())
}

fn write_line(w: &mut dyn Write, name: &str, f: &RunReport) -> io::Result<()> {
    let sent = f.sender.as_ref().map_or(0, |s| s.sent);
    let cell = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rx = f.receiver.as_ref();
    let st = rx.map(|r| &r.stats);
    let expected = st.map_or(sent, |s| s.expected.max(sent));
    writeln!(
        w,
        "{:<6} {:<9} {:>11} {:>11} {:>9} {:>8} {:>6} {:>6} {:>10} {:>10} {:>10} {:>14}",
        name,
        f.run_id,
        sent,
        cell(st.map(|s| s.received.to_string())),
        cell(st.map(|s| s.lost.to_string())),
        cell(
            st.filter(|_| expected > 0)
                .map(|s| format!("{:.3}", 100.0 * s.lost as f64 / expected as f64))
        ),
        cell(st.map(|s| s.duplicates.to_string())),
        cell(st.map(|s| s.reordered.to_string())),
        cell(st.map(|s| format!("{:.1}", s.jitter_ns / 1e3))),
        cell(
            st.and_then(|s| s.latency)
                .map(|l| format!("{:.1}", l.p50_ns as f64 / 1e3))
        ),
        cell(
            st.and_then(|s| s.latency)
                .map(|l| format!("{:.1}", l.p99_ns as f64 / 1e3))
        ),
        cell(rx.map(|r| format!("{:.1}", r.rate_achieved_bps / 1e6))),
    )
}

/// Sums counts and rates over the flows: percentiles cannot be added, so latency, IPDV, PDV and
/// RTT are left out (see each flow); jitter and the maxima are the worst flow's;
/// `rcvbuf_drops` is the largest per-flow figure, because every flow shares one receive socket
/// and each flow's figure already counts the socket's drops during its test.
pub fn total_of(flows: &[RunReport]) -> RunReport {
    let first = flows.first().cloned().unwrap_or_default();
    let senders: Vec<&SenderReport> = flows.iter().filter_map(|f| f.sender.as_ref()).collect();
    let receivers: Vec<&ReceiverReport> =
        flows.iter().filter_map(|f| f.receiver.as_ref()).collect();
    let sum = |f: &dyn Fn(&SenderReport) -> f64| senders.iter().map(|s| f(s)).sum::<f64>();
    let sender = (!senders.is_empty()).then(|| SenderReport {
        sent: senders.iter().map(|s| s.sent).sum(),
        sent_bytes: senders.iter().map(|s| s.sent_bytes).sum(),
        send_errors: senders.iter().map(|s| s.send_errors).sum(),
        send_errors_enobufs: senders.iter().map(|s| s.send_errors_enobufs).sum(),
        send_errors_eagain: senders.iter().map(|s| s.send_errors_eagain).sum(),
        duration_s: senders.iter().map(|s| s.duration_s).fold(0.0, f64::max),
        rate_target_bps: senders.iter().map(|s| s.rate_target_bps).sum(),
        rate_achieved_bps: sum(&|s| s.rate_achieved_bps),
        pps_target: senders.iter().map(|s| s.pps_target).sum(),
        pps_achieved: sum(&|s| s.pps_achieved),
        echo_replies: senders.iter().map(|s| s.echo_replies).sum(),
        echo_rcvbuf_drops: senders
            .iter()
            .filter_map(|s| s.echo_rcvbuf_drops)
            .reduce(|a, b| a + b),
        control_sent: senders.iter().map(|s| s.control_sent).sum(),
        tos: senders[0].tos,
        ttl: senders[0].ttl,
        df: senders[0].df,
        send_errors_emsgsize: senders.iter().map(|s| s.send_errors_emsgsize).sum(),
        path_mtu: senders.iter().filter_map(|s| s.path_mtu).min(),
        unauthenticated: senders
            .iter()
            .filter_map(|s| s.unauthenticated)
            .reduce(|a, b| a + b),
        sndbuf: senders[0].sndbuf,
        rcvbuf: senders[0].rcvbuf,
        impairment: senders[0].impairment.clone(),
        impair_counters: senders
            .iter()
            .filter_map(|s| s.impair_counters)
            .reduce(add_counters),
        omit_s: senders[0].omit_s,
        omitted_sequences: senders.iter().map(|s| s.omitted_sequences).sum(),
        ..SenderReport::default()
    });
    let receiver = (receivers.len() == flows.len() && !receivers.is_empty()).then(|| {
        let stats: Vec<&ReceiverStatsSummary> = receivers.iter().map(|r| &r.stats).collect();
        let total = |f: &dyn Fn(&ReceiverStatsSummary) -> u64| stats.iter().map(|s| f(s)).sum();
        let most = |f: &dyn Fn(&ReceiverStatsSummary) -> u64| {
            stats.iter().map(|s| f(s)).max().unwrap_or(0)
        };
        ReceiverReport {
            stats: ReceiverStatsSummary {
                expected: total(&|s| s.expected),
                received: total(&|s| s.received),
                received_bytes: total(&|s| s.received_bytes),
                lost: total(&|s| s.lost),
                late: total(&|s| s.late),
                stale: total(&|s| s.stale),
                duplicates: total(&|s| s.duplicates),
                reordered: total(&|s| s.reordered),
                reorder_extent_max: most(&|s| s.reorder_extent_max),
                reorder_extent: merge_buckets(stats.iter().map(|s| &s.reorder_extent)),
                n_reordered: [0, 1, 2].map(|n| total(&|s| s.n_reordered[n])),
                loss_periods: total(&|s| s.loss_periods),
                loss_period_max: most(&|s| s.loss_period_max),
                jitter_ns: stats.iter().map(|s| s.jitter_ns).fold(0.0, f64::max),
                negative_delays: total(&|s| s.negative_delays),
                first_recv_ns: stats.iter().filter_map(|s| s.first_recv_ns).min(),
                last_recv_ns: stats.iter().filter_map(|s| s.last_recv_ns).max(),
                implausible: total(&|s| s.implausible),
                ..ReceiverStatsSummary::default()
            },
            duration_s: receivers.iter().map(|r| r.duration_s).fold(0.0, f64::max),
            rate_achieved_bps: receivers.iter().map(|r| r.rate_achieved_bps).sum(),
            pps_achieved: receivers.iter().map(|r| r.pps_achieved).sum(),
            rcvbuf: receivers[0].rcvbuf,
            sndbuf: receivers[0].sndbuf,
            rcvbuf_drops: receivers.iter().filter_map(|r| r.rcvbuf_drops).max(),
            timestamp_source: receivers[0].timestamp_source.clone(),
            foreign_datagrams: receivers
                .iter()
                .map(|r| r.foreign_datagrams)
                .max()
                .unwrap_or(0),
            tmax_s: receivers[0].tmax_s,
            intervals: Vec::new(),
            intervals_not_kept: 0,
            interrupted: receivers.iter().any(|r| r.interrupted),
            echo_sent: receivers.iter().map(|r| r.echo_sent).sum(),
            peer: String::new(),
            loss_ranges: Vec::new(),
            loss_ranges_not_kept: receivers.iter().map(|r| r.loss_ranges_not_kept).sum(),
            unauthenticated: None,
            refused_by_allow: None,
            // The socket's drops, given once (the largest flow's figure covers the others').
            rcvbuf_drops_shared: receivers.len() > 1
                || receivers.iter().any(|r| r.rcvbuf_drops_shared),
            marking: receivers.iter().fold(Default::default(), |mut m, r| {
                m.merge(&r.marking);
                m
            }),
            omit_s: receivers[0].omit_s,
            omitted_sequences: receivers.iter().map(|r| r.omitted_sequences).sum(),
            omitted: receivers.iter().map(|r| r.omitted).sum(),
            // Each flow's receiver side of the reliable figures is in its own report; the
            // total's combined figures are in `RunReport::reliable`.
            reliable: None,
        }
    });
    RunReport {
        version: REPORT_VERSION,
        run_id: format!("total-{}", flows.len()),
        started_at: first.started_at,
        target: first.target,
        payload_bytes: first.payload_bytes,
        pattern: first.pattern,
        echo: first.echo,
        sender,
        receiver,
        warnings: Vec::new(),
        interrupted: flows.iter().any(|f| f.interrupted),
        labels: first.labels,
        // --reliable: counts summed, shares recomputed from the sums.
        reliable: crate::run::flows_reliable::combine(flows),
        ..RunReport::default()
    }
}

/// Two impairment counters' sum (the `--flows` total's, also for the ACK direction).
pub(super) fn add_counters(a: ImpairCounters, b: ImpairCounters) -> ImpairCounters {
    ImpairCounters {
        offered: a.offered + b.offered,
        dropped: a.dropped + b.dropped,
        queue_dropped: a.queue_dropped + b.queue_dropped,
        duplicated: a.duplicated + b.duplicated,
        delayed: a.delayed + b.delayed,
        reordered: a.reordered + b.reordered,
        released: a.released + b.released,
    }
}

fn merge_buckets<'a>(all: impl Iterator<Item = &'a Vec<ExtentBucket>>) -> Vec<ExtentBucket> {
    let mut merged: Vec<ExtentBucket> = Vec::new();
    for b in all.flatten() {
        match merged.iter_mut().find(|m| m.lo == b.lo && m.hi == b.hi) {
            Some(m) => m.count += b.count,
            None => merged.push(*b),
        }
    }
    merged.sort_by_key(|b| b.lo);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(sent: u64, lost: u64, drops: u64) -> RunReport {
        RunReport {
            run_id: format!("f{sent}"),
            sender: Some(SenderReport {
                sent,
                pps_achieved: 1000.0,
                ..SenderReport::default()
            }),
            receiver: Some(ReceiverReport {
                stats: ReceiverStatsSummary {
                    expected: sent,
                    received: sent - lost,
                    lost,
                    loss_period_max: lost,
                    reorder_extent: vec![ExtentBucket {
                        lo: 1,
                        hi: 1,
                        count: 2,
                    }],
                    ..ReceiverStatsSummary::default()
                },
                rcvbuf_drops: Some(drops),
                ..ReceiverReport::default()
            }),
            ..RunReport::default()
        }
    }

    #[test]
    fn total_sums_counts_and_keeps_the_worst_of_maxima() {
        let t = total_of(&[flow(100, 3, 5), flow(200, 7, 9)]);
        let s = t.sender.unwrap();
        assert_eq!(s.sent, 300);
        assert_eq!(s.pps_achieved, 2000.0);
        let r = t.receiver.unwrap();
        assert_eq!(
            (r.stats.expected, r.stats.received, r.stats.lost),
            (300, 290, 10)
        );
        assert_eq!(r.stats.loss_period_max, 7);
        assert_eq!(
            r.rcvbuf_drops,
            Some(9),
            "one shared socket: the largest, not the sum"
        );
        assert_eq!(
            r.stats.reorder_extent,
            vec![ExtentBucket {
                lo: 1,
                hi: 1,
                count: 4
            }]
        );
        assert!(r.stats.latency.is_none(), "percentiles are not summed");
    }

    fn sender_row(start_s: f64, end_s: f64, sent: u64) -> IntervalRow {
        IntervalRow {
            role: "sender".into(),
            start_s,
            end_s,
            sent,
            rate_bps: sent as f64 * 8.0,
            ..IntervalRow::default()
        }
    }

    #[test]
    fn progress_prints_an_interval_once_every_flow_closed_it() {
        let mut p = Progress::new(2, 1.0);
        assert!(p.add(sender_row(0.0, 1.0, 10)).is_empty());
        assert!(p.add(sender_row(1.0, 2.0, 11)).is_empty());
        let done = p.add(sender_row(0.0, 1.0, 20));
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].start_s, done[0].end_s, done[0].sent),
            (0.0, 1.0, 30)
        );
        assert_eq!(done[0].rate_bps, 240.0);
        let done = p.add(sender_row(1.0, 2.0, 21));
        assert_eq!(done[0].sent, 32);
        // A last, partial interval only one flow reached comes out at the end.
        assert!(p.add(sender_row(2.0, 2.4, 5)).is_empty());
        let rest = p.rest();
        assert_eq!(rest.len(), 1);
        assert_eq!(
            (rest[0].start_s, rest[0].end_s, rest[0].sent),
            (2.0, 2.4, 5)
        );
    }

    #[test]
    fn a_flow_without_results_leaves_the_total_without_a_receiver() {
        let mut partial = flow(100, 0, 0);
        partial.receiver = None;
        let t = total_of(&[flow(100, 1, 0), partial]);
        assert!(t.receiver.is_none());
        assert_eq!(t.sender.unwrap().sent, 200);
    }
}
