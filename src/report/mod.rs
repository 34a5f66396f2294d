//! Report writers: human summary, CSV rows, JSON; they see only the plain structs in `summary`.
//!
//! Every writer takes an `io::Write` (or, for appending CSV, a path) so it can be tested
//! against strings. The figures both the CSV rows and the human table derive from the summary
//! structs (percentages, the loss denominator, "is this distribution empty") live here so the
//! two outputs can never disagree.

pub mod csv;
pub mod hdrlog;
pub mod human;
pub mod json;
pub mod plot;
pub mod svg;

pub use self::csv::{
    CsvError, Header, INTERVAL_COLUMNS, LOSS_LOG_HEADER, SUMMARY_COLUMNS, append_interval_csv,
    append_summary_csv, interval_records, summary_records, write_interval_csv, write_loss_log,
    write_summary_csv,
};
pub use self::human::{write_human, write_interval_header, write_interval_line};
pub use self::json::{
    IntervalStream, bidir_document, command_line, document_header, flows_document, shell_quote,
    single_flow_document, write_document, write_interval_ndjson, write_json, write_json_line,
};

use crate::summary::{LatencySummary, RunReport, SignedSummary};

/// The return path of an `--echo` run (receiver → sender), as irtt splits up and down: echo
/// replies the receiver sent, how many reached the sender, how many did not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ReturnPath {
    /// Echo replies the receiver handed to its socket (the return path's "sent").
    pub sent: u64,
    /// Echo replies the sender received.
    pub received: u64,
    /// `sent − received` (0 when the path duplicated replies).
    pub lost: u64,
    /// 100 · lost / sent; None when nothing was sent.
    pub loss_pct: Option<f64>,
    /// Of `lost`, dropped at the sender's own receive buffer (when reported).
    pub sender_rcvbuf_drops: Option<u64>,
}

/// The return path's figures: needs `--echo`, the sender's count and the receiver's results.
pub(crate) fn return_path(report: &RunReport) -> Option<ReturnPath> {
    if !report.echo {
        return None;
    }
    let sent = report.receiver.as_ref()?.echo_sent;
    let sender = report.sender.as_ref()?;
    let lost = sent.saturating_sub(sender.echo_replies);
    Some(ReturnPath {
        sent,
        received: sender.echo_replies,
        lost,
        loss_pct: percent(lost, sent),
        sender_rcvbuf_drops: sender.echo_rcvbuf_drops,
    })
}

/// `100 · part / whole`, or None when `whole` is 0 (a percentage of nothing is not 0 %).
pub(crate) fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

/// The number of datagrams the run's loss is a fraction of: the sender's sequence total as the
/// receiver learnt it in the end-of-test exchange (it includes sequences consumed by failed
/// sends, which count as lost), else the sender's own `sent`. None when neither is known.
pub(crate) fn loss_denominator(report: &RunReport) -> Option<u64> {
    let expected = report
        .receiver
        .as_ref()
        .map(|r| r.stats.expected)
        .filter(|&n| n > 0);
    expected.or_else(|| report.sender.as_ref().map(|s| s.sent).filter(|&n| n > 0))
}

/// A distribution that holds at least one sample; an empty one reads as "not measured".
pub(crate) fn measured(summary: Option<&LatencySummary>) -> Option<&LatencySummary> {
    summary.filter(|s| s.count > 0)
}

/// Signed counterpart of [`measured`].
pub(crate) fn measured_signed(summary: Option<&SignedSummary>) -> Option<&SignedSummary> {
    summary.filter(|s| s.count > 0)
}

/// Shared sample data for the writers' unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::summary::{
        BufferInfo, ExtentBucket, ImpairCounters, IntervalRow, LatencySummary, REPORT_VERSION,
        ReceiverReport, ReceiverStatsSummary, RunReport, SenderReport, SignedSummary,
    };

    pub fn latency(base_ns: u64) -> LatencySummary {
        LatencySummary {
            count: 1000,
            min_ns: base_ns,
            mean_ns: base_ns as f64 * 1.5 + 0.25,
            p50_ns: base_ns + 1_234,
            p90_ns: base_ns * 2,
            p99_ns: base_ns * 3 + 7,
            p999_ns: base_ns * 4,
            max_ns: base_ns * 10,
        }
    }

    pub fn receiver_stats() -> ReceiverStatsSummary {
        ReceiverStatsSummary {
            expected: 10_000,
            received: 9_950,
            received_bytes: 9_950 * 1200,
            lost: 50,
            late: 2,
            stale: 1,
            duplicates: 3,
            reordered: 20,
            reorder_extent_max: 4,
            reorder_extent: vec![ExtentBucket {
                lo: 1,
                hi: 1,
                count: 15,
            }],
            n_reordered: [20, 6, 1],
            loss_periods: 7,
            loss_period_max: 12,
            jitter_ns: 1_234.25,
            ipdv: Some(SignedSummary {
                count: 9_900,
                min_ns: -40_000,
                p01_ns: -9_000,
                p50_ns: -120,
                p99_ns: 8_500,
                max_ns: 41_000,
            }),
            ipdv_abs: Some(latency(100)),
            latency: Some(latency(8_000).into()),
            pdv: Some(latency(0)),
            negative_delays: 0,
            first_recv_ns: Some(1_000_000_000),
            last_recv_ns: Some(11_000_000_000),
            implausible: 0,
            latency_percentiles: Vec::new(),
        }
    }

    fn interval(role: &str, start_s: f64, stats: Option<ReceiverStatsSummary>) -> IntervalRow {
        let is_sender = stats.is_none();
        IntervalRow {
            role: role.to_string(),
            start_s,
            end_s: start_s + 1.0,
            sent: if is_sender { 1000 } else { 0 },
            send_errors: if is_sender { 1 } else { 0 },
            stats,
            rtt: is_sender.then(|| latency(20_000)),
            rate_bps: 9_600_000.0,
            pps: 1000.0,
            reliable: None,
        }
    }

    /// A run with both roles, echo, impairment and one interval per role.
    pub fn run_report() -> RunReport {
        let mut interval_stats = receiver_stats();
        interval_stats.expected = 0;
        interval_stats.received = 990;
        interval_stats.lost = 10;
        RunReport {
            version: REPORT_VERSION,
            run_id: "run-42".to_string(),
            started_at: "2025-01-02T03:04:05Z".to_string(),
            target: "127.0.0.1:9000".to_string(),
            payload_bytes: 1200,
            pattern: "cbr".to_string(),
            echo: true,
            sender: Some(SenderReport {
                sent: 9_990,
                sent_bytes: 9_990 * 1200,
                send_errors: 10,
                send_errors_enobufs: 8,
                send_errors_eagain: 2,
                duration_s: 10.0,
                rate_target_bps: Some(9_600_000.0),
                rate_achieved_bps: 9_590_400.0,
                pps_target: Some(1000.0),
                pps_achieved: 999.0,
                schedule_lateness: Some(latency(3_000)),
                inter_departure: None,
                send_mode: "gso".into(),
                send_mode_note: None,
                impair_release_lateness: None,
                rtt: Some(latency(20_000)),
                echo_replies: 9_900,
                echo_rcvbuf_drops: Some(12),
                control_sent: 3,
                sndbuf: BufferInfo {
                    requested: Some(4 << 20),
                    effective: 425_984,
                    clamped: true,
                    forced: false,
                },
                rcvbuf: BufferInfo {
                    requested: None,
                    effective: 212_992,
                    clamped: false,
                    forced: false,
                },
                impairment: Some("loss=1%,dup=0.1%".to_string()),
                impair_counters: Some(ImpairCounters {
                    offered: 9_990,
                    dropped: 40,
                    queue_dropped: 5,
                    duplicated: 3,
                    delayed: 0,
                    reordered: 20,
                    released: 9_948,
                }),
                intervals: vec![interval("sender", 0.0, None)],
                omit_s: 0.0,
                omitted_sequences: 0,
                intervals_not_kept: 0,
                unauthenticated: None,
                tos: None,
                ttl: None,
                df: false,
                send_errors_emsgsize: 0,
                path_mtu: None,
            }),
            receiver: Some(ReceiverReport {
                stats: receiver_stats(),
                duration_s: 10.0,
                rate_achieved_bps: 9_552_000.0,
                pps_achieved: 995.0,
                rcvbuf: BufferInfo {
                    requested: Some(8 << 20),
                    effective: 16 << 20,
                    clamped: false,
                    forced: true,
                },
                sndbuf: BufferInfo {
                    requested: None,
                    effective: 212_992,
                    clamped: false,
                    forced: false,
                },
                rcvbuf_drops: Some(0),
                timestamp_source: "kernel".to_string(),
                foreign_datagrams: 0,
                tmax_s: 2.0,
                intervals: vec![interval("receiver", 0.0, Some(interval_stats))],
                intervals_not_kept: 0,
                interrupted: false,
                echo_sent: 9_960,
                peer: "127.0.0.1:41000".to_string(),
                loss_ranges: Vec::new(),
                loss_ranges_not_kept: 0,
                unauthenticated: None,
                refused_by_allow: None,
                rcvbuf_drops_shared: false,
                marking: Default::default(),
                omit_s: 0.0,
                omitted_sequences: 0,
                omitted: 0,
                reliable: None,
            }),
            warnings: vec!["SO_SNDBUF clamped to 425984 bytes (net.core.wmem_max)".to_string()],
            interrupted: false,
            ..RunReport::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_of_nothing_is_unknown() {
        assert_eq!(percent(5, 0), None);
        assert_eq!(percent(1, 4), Some(25.0));
    }

    #[test]
    fn return_path_is_the_receivers_echoes_against_the_senders_replies() {
        let mut report = fixtures::run_report();
        let path = return_path(&report).unwrap();
        assert_eq!((path.sent, path.received, path.lost), (9_960, 9_900, 60));
        assert_eq!(path.sender_rcvbuf_drops, Some(12));
        assert!((path.loss_pct.unwrap() - 100.0 * 60.0 / 9_960.0).abs() < 1e-9);
        report.echo = false;
        assert_eq!(return_path(&report), None);
        report.echo = true;
        report.receiver = None;
        assert_eq!(
            return_path(&report),
            None,
            "unknown without the receiver's count"
        );
    }

    #[test]
    fn loss_denominator_prefers_the_receivers_expected_total() {
        let mut report = fixtures::run_report();
        assert_eq!(loss_denominator(&report), Some(10_000));
        report.receiver.as_mut().unwrap().stats.expected = 0;
        assert_eq!(loss_denominator(&report), Some(9_990));
        report.sender = None;
        assert_eq!(loss_denominator(&report), None);
    }
}
