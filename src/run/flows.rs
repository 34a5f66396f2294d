//! `--flows N`: several tests side by side, each with its own socket, session and threads, and
//! the per-flow results with their total.

use std::io::{self, Write};
use std::thread;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::{JsonOut, Outputs, SendConfig, Thresholds};
use crate::error::Outcome;
use crate::report;
use crate::run::{
    Stdout, Stop, check_thresholds, outcome_of, record_csv_failure, send, text_writer,
    threshold_lines, warn, write_file,
};
use crate::summary::{
    ExtentBucket, ImpairCounters, REPORT_VERSION, ReceiverReport, ReceiverStatsSummary, RunReport,
    SenderReport, Verdict,
};

/// A multi-flow run: every flow's own report and their total.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowsReport {
    pub version: u32,
    pub flows: Vec<RunReport>,
    /// Counts and rates summed over the flows. Percentiles cannot be added, so latency, IPDV,
    /// PDV and RTT are left out (see each flow); jitter and the maxima are the worst flow's;
    /// `rcvbuf_drops` is the largest per-flow figure, because every flow shares one receive
    /// socket and each flow's figure already counts the socket's drops during its test.
    pub total: RunReport,
}

/// Runs `cfg.flows` tests at once against `cfg.addr`.
pub fn run(cfg: &SendConfig, stop: &Stop) -> anyhow::Result<FlowsReport> {
    let handles: Vec<_> = (0..cfg.flows)
        .map(|i| {
            let mut flow = cfg.clone();
            flow.flow_index = i;
            flow.seed = cfg.seed.map(|s| s.wrapping_add(i as u64));
            // Each flow draws its own fates from the same spec.
            if let Some(spec) = flow.impair.as_mut() {
                spec.seed = spec.seed.wrapping_add(i as u64);
            }
            // Flows print nothing themselves; the table and files come at the end.
            flow.outputs = Outputs {
                quiet: true,
                ..Outputs::default()
            };
            let stop = stop.clone();
            thread::Builder::new()
                .name(format!("udplab-flow{i}"))
                .spawn(move || send::run(&flow, &stop))
        })
        .collect::<Result<_, _>>()
        .context("starting the flows")?;
    let mut flows = Vec::with_capacity(cfg.flows);
    for (i, h) in handles.into_iter().enumerate() {
        let report = h
            .join()
            .map_err(|_| anyhow::anyhow!("flow {i} panicked"))?
            .with_context(|| format!("flow {i}"))?;
        flows.push(report);
    }
    let total = total_of(&flows);
    Ok(FlowsReport {
        version: REPORT_VERSION,
        flows,
        total,
    })
}

/// Checks the thresholds on every flow and on the total (first, so every file carries the
/// verdicts), prints one line per flow and the total, and writes the files. A file that fails
/// is recorded for the exit code; the others are still written.
pub fn write_outputs(
    r: &FlowsReport,
    outputs: &Outputs,
    th: &Thresholds,
) -> anyhow::Result<Outcome> {
    let mut r = r.clone();
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
        if let Some(path) = &outputs.csv
            && let Err(e) = report::append_summary_csv(path, f)
        {
            record_csv_failure(path, &e);
        }
        if let Some(path) = &outputs.intervals_csv
            && let Err(e) = report::append_interval_csv(path, f)
        {
            record_csv_failure(path, &e);
        }
    }
    match &outputs.json {
        Some(JsonOut::Stdout) => {
            let mut out = Stdout;
            serde_json::to_writer_pretty(&mut out, &r)?;
            writeln!(out)?;
        }
        Some(JsonOut::File(path)) => {
            let mut s = serde_json::to_string_pretty(&r)?;
            s.push('\n');
            write_file(path, s.as_bytes(), false);
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
        let (fl, un) = threshold_lines(&f.thresholds, &format!("flow {i}: "));
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
    let (fl, un) = threshold_lines(&r.total.thresholds, "total: ");
    failed.extend(fl);
    unmeasured.extend(un);
    outcome_of(verdict, failed, unmeasured, r.total.interrupted)
}

fn write_table(w: &mut dyn Write, r: &FlowsReport) -> io::Result<()> {
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

/// Sums counts and rates over the flows; see `FlowsReport::total` for what is not summed.
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
        sndbuf: senders[0].sndbuf,
        rcvbuf: senders[0].rcvbuf,
        impairment: senders[0].impairment.clone(),
        impair_counters: senders
            .iter()
            .filter_map(|s| s.impair_counters)
            .reduce(add_counters),
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
        ..RunReport::default()
    }
}

fn add_counters(a: ImpairCounters, b: ImpairCounters) -> ImpairCounters {
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

    #[test]
    fn a_flow_without_results_leaves_the_total_without_a_receiver() {
        let mut partial = flow(100, 0, 0);
        partial.receiver = None;
        let t = total_of(&[flow(100, 1, 0), partial]);
        assert!(t.receiver.is_none());
        assert_eq!(t.sender.unwrap().sent, 200);
    }
}
