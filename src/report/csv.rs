//! CSV reports: the per-run summary rows (`--csv`) and the per-interval rows (`--intervals-csv`).
//!
//! Column lists are a public contract documented in `results/README.md`: they only grow, names
//! and order never change. A cell is empty when its figure does not apply or is unknown, never
//! a stand-in 0 or NaN. Times are µs with 3 decimals, rates bit/s with 1 decimal.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{loss_denominator, measured, measured_signed, percent, return_path};
use crate::arq::ArqReceiverStats;
use crate::net::marking::dscp_of;
use crate::summary::{
    BufferInfo, IntervalRow, LatencySummary, MAX_CARRIED_LOSS_RANGES, ReceiverReport,
    ReliableReport, RunReport, SenderReport, SignedLatencySummary,
};

/// First line of a `--loss-log` file.
pub const LOSS_LOG_HEADER: &str = "run_id,first_seq,last_seq";

/// Columns of the summary CSV, in order. Append new ones at the end only.
pub const SUMMARY_COLUMNS: [&str; 132] = [
    "run_id",
    "role",
    "target",
    "payload_bytes",
    "duration_s",
    "sent",
    "received",
    "lost",
    "loss_pct",
    "duplicates",
    "reordered",
    "reordered_pct",
    "reorder_extent_max",
    "loss_periods",
    "loss_period_max",
    "jitter_us",
    "ipdv_p50_us",
    "ipdv_p99_us",
    "latency_min_us",
    "latency_p50_us",
    "latency_p90_us",
    "latency_p99_us",
    "latency_p999_us",
    "latency_max_us",
    "rtt_p50_us",
    "rtt_p99_us",
    "rate_target_bps",
    "rate_achieved_bps",
    "send_errors",
    "sndbuf_bytes",
    "rcvbuf_bytes",
    // Extras, after the core set.
    "started_at",
    "pattern",
    "late",
    "stale",
    "n_reordered_1",
    "n_reordered_2",
    "n_reordered_3",
    "ipdv_abs_p99_us",
    "pdv_p99_us",
    "latency_mean_us",
    "rtt_min_us",
    "rtt_p90_us",
    "rtt_p999_us",
    "rtt_max_us",
    "pps_achieved",
    "pps_target",
    "received_bytes",
    "rcvbuf_drops",
    "timestamp_source",
    "foreign_datagrams",
    "tmax_s",
    "schedule_lateness_p99_us",
    "sndbuf_requested_bytes",
    "rcvbuf_requested_bytes",
    "impairment",
    "impair_dropped",
    "impair_duplicated",
    "impair_reordered",
    "interrupted",
    "gap_p50_us",
    "gap_p99_us",
    "rcvbuf_drops_pct",
    "send_mode",
    "verdict",
    "echo_sent",
    "echo_received",
    "echo_lost",
    "echo_loss_pct",
    "echo_rcvbuf_drops",
    "unauthenticated",
    "refused_by_allow",
    "implausible",
    "rcvbuf_drops_shared",
    "tos_sent",
    "dscp_sent",
    "dscp_kept",
    "dscp_remarked",
    "tos_received",
    "ttl_sent",
    "ttl_received",
    "df",
    "emsgsize",
    "path_mtu",
    "direction",
    "labels",
    // --reliable (empty cells without it).
    "reliable_mode",
    "reliable_impaired",
    "messages",
    "delivered",
    "residual_lost",
    "residual_loss_pct",
    "raw_lost_packets",
    "raw_loss_pct",
    "retransmissions",
    "retransmissions_per_message",
    "rexmit_packet_threshold",
    "rexmit_time_threshold",
    "rexmit_pto",
    "spurious_retransmissions",
    "spurious_per_message",
    "duplicate_arrivals",
    "duplicate_arrivals_per_message",
    "ack_datagrams",
    "ack_bytes",
    "ack_datagram_pct",
    "ack_byte_pct",
    "goodput_bps",
    "wire_efficiency_pct",
    "delivery_ordered_p50_us",
    "delivery_ordered_p99_us",
    "delivery_ordered_max_us",
    "delivery_unordered_p50_us",
    "delivery_unordered_p99_us",
    "delivery_unordered_max_us",
    "delivery_tx1_p99_us",
    "delivery_tx2_p99_us",
    "delivery_tx3plus_p99_us",
    "recovery_p99_us",
    "hol_wait_p99_us",
    "hol_waited_pct",
    "deadline_drops",
    "messages_given_up",
    "srtt_us",
    "rttvar_us",
    "min_rtt_us",
    "packet_threshold",
    "reorder_window_us",
    "max_in_flight",
    "max_buffered",
    "bogus_acks",
    "repeat_copies",
];

/// How many of the summary's last columns are `--reliable`'s.
const RELIABLE_COLUMN_COUNT: usize = 46;

/// Columns of the interval CSV, in order. Names match the summary's where they mean the same.
pub const INTERVAL_COLUMNS: [&str; 32] = [
    "run_id",
    "role",
    "start_s",
    "end_s",
    "sent",
    "received",
    "lost",
    "loss_pct",
    "duplicates",
    "reordered",
    "loss_periods",
    "jitter_us",
    "ipdv_p50_us",
    "ipdv_p99_us",
    "latency_min_us",
    "latency_p50_us",
    "latency_p99_us",
    "latency_max_us",
    "rtt_p50_us",
    "rtt_p99_us",
    "rate_bps",
    "pps",
    "send_errors",
    "late",
    // --reliable (empty cells without it): sender rows the first four, receiver rows the rest.
    "retransmissions",
    "spurious_retransmissions",
    "messages_acked",
    "srtt_us",
    "delivered",
    "duplicate_arrivals",
    "ack_datagrams",
    "ack_bytes",
];

/// Whether a writer starts with the header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    Include,
    Omit,
}

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The file already holds CSV with other columns; appending would mix two layouts.
    #[error(
        "{}: its CSV header is not udplab's ({found_columns} columns, expected \
         {expected_columns}; first difference at column {first_difference}); \
         nothing was written: choose a new file",
        .path.display()
    )]
    HeaderMismatch {
        path: PathBuf,
        expected_columns: usize,
        found_columns: usize,
        /// 1-based index of the first column whose name differs.
        first_difference: usize,
    },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("writing CSV: {0}")]
    Csv(#[from] ::csv::Error),
}

/// Summary rows for whichever roles the report holds: sender first, then receiver.
pub fn summary_records(report: &RunReport) -> Vec<Vec<String>> {
    let mut rows = Vec::with_capacity(2);
    if let Some(sender) = &report.sender {
        rows.push(sender_summary_row(report, sender).into_cells());
    }
    if let Some(receiver) = &report.receiver {
        rows.push(receiver_summary_row(report, receiver).into_cells());
    }
    rows
}

/// Interval rows: the sender's intervals, then the receiver's.
pub fn interval_records(report: &RunReport) -> Vec<Vec<String>> {
    let sender_rows = report.sender.iter().flat_map(|s| s.intervals.iter());
    let receiver_rows = report.receiver.iter().flat_map(|r| r.intervals.iter());
    sender_rows
        .chain(receiver_rows)
        .map(|row| interval_record(&report.run_id, row))
        .collect()
}

/// Writes the summary rows (and the header if asked) to `w`.
pub fn write_summary_csv<W: Write>(
    w: W,
    report: &RunReport,
    header: Header,
) -> Result<(), CsvError> {
    write_records(w, &SUMMARY_COLUMNS, header, &summary_records(report))
}

/// Writes the interval rows (and the header if asked) to `w`.
pub fn write_interval_csv<W: Write>(
    w: W,
    report: &RunReport,
    header: Header,
) -> Result<(), CsvError> {
    write_records(w, &INTERVAL_COLUMNS, header, &interval_records(report))
}

/// Appends the summary rows to `path`, writing the header first when the file is new or
/// empty. Returns the number of rows written. A file with another header is left untouched.
pub fn append_summary_csv(path: &Path, report: &RunReport) -> Result<usize, CsvError> {
    append_records(path, &SUMMARY_COLUMNS, &summary_records(report))
}

/// Appends the interval rows to `path`, with the same header rules as [`append_summary_csv`].
pub fn append_interval_csv(path: &Path, report: &RunReport) -> Result<usize, CsvError> {
    append_records(path, &INTERVAL_COLUMNS, &interval_records(report))
}

/// Writes a sender's `--loss-log`: the header, then the lost ranges the receiver carried back
/// for each run. A run whose ranges were cut at `MAX_CARRIED_LOSS_RANGES` ends with a `#`
/// comment line saying how many were not carried.
pub fn write_loss_log<W: Write>(mut w: W, runs: &[&RunReport]) -> io::Result<()> {
    let mut text = format!("{LOSS_LOG_HEADER}\n");
    for (i, run) in runs.iter().enumerate() {
        if i > 0 && run.direction != runs[i - 1].direction {
            // `--bidir`: one run id, two directions; the second's ranges follow this line.
            text += &format!("# {}: {} direction\n", run.run_id, run.direction.as_str());
        }
        let Some(receiver) = &run.receiver else {
            text += &format!(
                "# {}: no lost ranges: the receiver's results never came back\n",
                run.run_id
            );
            continue;
        };
        for [first, last] in &receiver.loss_ranges {
            text += &format!("{},{first},{last}\n", run.run_id);
        }
        if receiver.loss_ranges_not_kept > 0 {
            text += &format!(
                "# {}: {} further lost ranges not carried back (limit {MAX_CARRIED_LOSS_RANGES})\n",
                run.run_id, receiver.loss_ranges_not_kept
            );
        }
    }
    w.write_all(text.as_bytes())?;
    w.flush()
}

fn csv_writer<W: Write>(w: W) -> ::csv::Writer<W> {
    ::csv::WriterBuilder::new()
        .terminator(::csv::Terminator::Any(b'\n'))
        .from_writer(w)
}

fn write_records<W: Write>(
    w: W,
    columns: &[&str],
    header: Header,
    records: &[Vec<String>],
) -> Result<(), CsvError> {
    let mut writer = csv_writer(w);
    if header == Header::Include {
        writer.write_record(columns)?;
    }
    for record in records {
        debug_assert_eq!(record.len(), columns.len());
        writer.write_record(record)?;
    }
    writer.flush().map_err(::csv::Error::from)?;
    Ok(())
}

fn append_records(
    path: &Path,
    columns: &[&str],
    records: &[Vec<String>],
) -> Result<usize, CsvError> {
    let io_error = |source| CsvError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Reads go from the start; with O_APPEND every write lands at the end whatever the position.
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();

    let mut bytes = Vec::new();
    let header = if len == 0 {
        Header::Include
    } else {
        check_header(&file, path, columns)?;
        // A file whose last line lacks its newline (edited by hand) would glue our first row
        // onto it.
        if !ends_with_newline(&mut file, len).map_err(io_error)? {
            bytes.push(b'\n');
        }
        Header::Omit
    };
    write_records(&mut bytes, columns, header, records)?;
    // One write, so a crash cannot leave half a row behind.
    file.write_all(&bytes).map_err(io_error)?;
    file.flush().map_err(io_error)?;
    Ok(records.len())
}

fn check_header(file: &File, path: &Path, columns: &[&str]) -> Result<(), CsvError> {
    let mut first_line = Vec::new();
    BufReader::new(file)
        .read_until(b'\n', &mut first_line)
        .map_err(|source| CsvError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let found = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(first_line.as_slice())
        .records()
        .next()
        .transpose()?
        .unwrap_or_default();
    let found: Vec<&str> = found.iter().collect();
    if found == columns {
        return Ok(());
    }
    let first_difference = found
        .iter()
        .zip(columns)
        .position(|(a, b)| a != b)
        .unwrap_or(found.len().min(columns.len()))
        + 1;
    Err(CsvError::HeaderMismatch {
        path: path.to_path_buf(),
        expected_columns: columns.len(),
        found_columns: found.len(),
        first_difference,
    })
}

fn ends_with_newline(file: &mut File, len: u64) -> io::Result<bool> {
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

// ---- cell formatting -------------------------------------------------------------------

/// Nanoseconds as microseconds with 3 decimals, exactly (no float rounding).
fn us_from_ns(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

fn us_from_signed_ns(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    format!("{sign}{}", us_from_ns(ns.unsigned_abs()))
}

fn us_from_f64_ns(ns: f64) -> String {
    if ns.is_finite() {
        format!("{:.3}", ns / 1000.0)
    } else {
        String::new()
    }
}

/// Rates (bit/s, datagrams/s) and percentages: 1 or more decimals, empty when not finite.
fn decimal(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        String::new()
    }
}

fn pct_cell(value: Option<f64>) -> String {
    value.map(|p| decimal(p, 4)).unwrap_or_default()
}

fn seconds(value: f64) -> String {
    decimal(value, 6)
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// The six cells a latency-like summary can fill; all empty when it was not measured.
#[derive(Default)]
struct LatencyCells {
    min: String,
    mean: String,
    p50: String,
    p90: String,
    p99: String,
    p999: String,
    max: String,
}

impl LatencyCells {
    fn of(summary: Option<&LatencySummary>) -> Self {
        measured(summary).map_or_else(Self::default, |s| Self {
            min: us_from_ns(s.min_ns),
            mean: us_from_f64_ns(s.mean_ns),
            p50: us_from_ns(s.p50_ns),
            p90: us_from_ns(s.p90_ns),
            p99: us_from_ns(s.p99_ns),
            p999: us_from_ns(s.p999_ns),
            max: us_from_ns(s.max_ns),
        })
    }

    /// One-way latency, printed signed (negative when the clocks disagree).
    fn of_signed(summary: Option<&SignedLatencySummary>) -> Self {
        summary
            .filter(|s| s.count > 0)
            .map_or_else(Self::default, |s| Self {
                min: us_from_signed_ns(s.min_ns),
                mean: us_from_f64_ns(s.mean_ns),
                p50: us_from_signed_ns(s.p50_ns),
                p90: us_from_signed_ns(s.p90_ns),
                p99: us_from_signed_ns(s.p99_ns),
                p999: us_from_signed_ns(s.p999_ns),
                max: us_from_signed_ns(s.max_ns),
            })
    }
}

/// One summary row under construction, one field per column, all empty by default.
#[derive(Default)]
struct SummaryRow {
    run_id: String,
    role: String,
    target: String,
    payload_bytes: String,
    duration_s: String,
    sent: String,
    received: String,
    lost: String,
    loss_pct: String,
    duplicates: String,
    reordered: String,
    reordered_pct: String,
    reorder_extent_max: String,
    loss_periods: String,
    loss_period_max: String,
    jitter_us: String,
    ipdv_p50_us: String,
    ipdv_p99_us: String,
    latency: LatencyCells,
    rtt: LatencyCells,
    rate_target_bps: String,
    rate_achieved_bps: String,
    send_errors: String,
    sndbuf_bytes: String,
    rcvbuf_bytes: String,
    started_at: String,
    pattern: String,
    late: String,
    stale: String,
    n_reordered: [String; 3],
    ipdv_abs_p99_us: String,
    pdv_p99_us: String,
    pps_achieved: String,
    pps_target: String,
    received_bytes: String,
    rcvbuf_drops: String,
    timestamp_source: String,
    foreign_datagrams: String,
    tmax_s: String,
    schedule_lateness_p99_us: String,
    sndbuf_requested_bytes: String,
    rcvbuf_requested_bytes: String,
    impairment: String,
    impair_dropped: String,
    impair_duplicated: String,
    impair_reordered: String,
    interrupted: String,
    gap_p50_us: String,
    gap_p99_us: String,
    rcvbuf_drops_pct: String,
    send_mode: String,
    verdict: String,
    echo_sent: String,
    echo_received: String,
    echo_lost: String,
    echo_loss_pct: String,
    echo_rcvbuf_drops: String,
    unauthenticated: String,
    refused_by_allow: String,
    implausible: String,
    rcvbuf_drops_shared: String,
    tos_sent: String,
    dscp_sent: String,
    dscp_kept: String,
    dscp_remarked: String,
    tos_received: String,
    ttl_sent: String,
    ttl_received: String,
    df: String,
    emsgsize: String,
    path_mtu: String,
    direction: String,
    labels: String,
    /// The `--reliable` cells; empty: none of them applies.
    reliable: Vec<String>,
}

impl SummaryRow {
    fn new(report: &RunReport, role: &str) -> Self {
        Self {
            run_id: report.run_id.clone(),
            role: role.to_string(),
            target: report.target.clone(),
            payload_bytes: report.payload_bytes.to_string(),
            started_at: report.started_at.clone(),
            pattern: report.pattern.clone(),
            verdict: report.verdict.as_str().to_string(),
            direction: report.direction.as_str().to_string(),
            labels: labels_cell(&report.labels),
            ..Self::default()
        }
    }

    /// The return path (`--echo`): the receiver's echo replies against the sender's count.
    fn fill_return_path(&mut self, report: &RunReport) {
        if let Some(receiver) = report.receiver.as_ref().filter(|_| report.echo) {
            self.echo_sent = receiver.echo_sent.to_string();
        }
        if let Some(path) = return_path(report) {
            self.echo_received = path.received.to_string();
            self.echo_lost = path.lost.to_string();
            self.echo_loss_pct = pct_cell(path.loss_pct);
            self.echo_rcvbuf_drops = opt(path.sender_rcvbuf_drops);
        }
    }

    /// The receiver's measurements: shown on the receiver row and copied onto the sender row
    /// so one row tells the end-to-end outcome.
    fn fill_receiver_outcome(&mut self, report: &RunReport, receiver: &ReceiverReport) {
        let stats = &receiver.stats;
        self.received = stats.received.to_string();
        self.lost = stats.lost.to_string();
        self.loss_pct = pct_cell(loss_denominator(report).and_then(|n| percent(stats.lost, n)));
        self.duplicates = stats.duplicates.to_string();
        self.reordered = stats.reordered.to_string();
        self.reordered_pct = pct_cell(percent(stats.reordered, stats.received));
        self.reorder_extent_max = stats.reorder_extent_max.to_string();
        self.loss_periods = stats.loss_periods.to_string();
        self.loss_period_max = stats.loss_period_max.to_string();
        self.jitter_us = us_from_f64_ns(stats.jitter_ns);
        if let Some(ipdv) = measured_signed(stats.ipdv.as_ref()) {
            self.ipdv_p50_us = us_from_signed_ns(ipdv.p50_ns);
            self.ipdv_p99_us = us_from_signed_ns(ipdv.p99_ns);
        }
        self.latency = LatencyCells::of_signed(stats.latency.as_ref());
        self.late = stats.late.to_string();
        self.stale = stats.stale.to_string();
        self.n_reordered = stats.n_reordered.map(|n| n.to_string());
        self.ipdv_abs_p99_us = LatencyCells::of(stats.ipdv_abs.as_ref()).p99;
        self.pdv_p99_us = LatencyCells::of(stats.pdv.as_ref()).p99;
        self.received_bytes = stats.received_bytes.to_string();
        self.rcvbuf_drops = opt(receiver.rcvbuf_drops);
        // Shared with other tests, the socket's drops are not a share of this test's datagrams.
        self.rcvbuf_drops_pct = pct_cell(
            receiver
                .rcvbuf_drops
                .filter(|_| !receiver.rcvbuf_drops_shared)
                .zip(loss_denominator(report))
                .and_then(|(d, n)| percent(d, n)),
        );
        self.implausible = stats.implausible.to_string();
        self.rcvbuf_drops_shared = receiver.rcvbuf_drops_shared.to_string();
        self.timestamp_source = receiver.timestamp_source.clone();
        self.foreign_datagrams = receiver.foreign_datagrams.to_string();
        self.tmax_s = seconds(receiver.tmax_s);
        self.refused_by_allow = opt(receiver.refused_by_allow);
        let m = &receiver.marking;
        self.tos_sent = opt(m.tos_sent);
        self.dscp_sent = opt(m.tos_sent.map(dscp_of));
        // Empty when the receiver saw no TOS at all (not reported), not "0 kept".
        if m.tos_seen() > 0 {
            self.dscp_kept = m.dscp_kept.to_string();
            self.dscp_remarked = m.dscp_remarked.to_string();
        }
        self.tos_received = value_counts(m.tos_received.iter().map(|v| (v.tos, v.count)));
        self.ttl_sent = opt(m.ttl_sent);
        self.ttl_received = value_counts(m.ttl_received.iter().map(|v| (v.ttl, v.count)));
    }

    /// The sender's settings and counts that also explain the receiver's figures.
    fn fill_sender_context(&mut self, sender: &SenderReport) {
        self.rate_target_bps = sender
            .rate_target_bps
            .map(|r| decimal(r, 1))
            .unwrap_or_default();
        self.pps_target = sender.pps_target.map(|r| decimal(r, 1)).unwrap_or_default();
        self.send_errors = sender.send_errors.to_string();
        self.impairment = sender.impairment.clone().unwrap_or_default();
        if let Some(counters) = &sender.impair_counters {
            self.impair_dropped = (counters.dropped + counters.queue_dropped).to_string();
            self.impair_duplicated = counters.duplicated.to_string();
            self.impair_reordered = counters.reordered.to_string();
        }
        // The sender's own read-back wins over what the receiver was told.
        if sender.tos.is_some() {
            self.tos_sent = opt(sender.tos);
            self.dscp_sent = opt(sender.tos.map(dscp_of));
        }
        if sender.ttl.is_some() {
            self.ttl_sent = opt(sender.ttl);
        }
        self.df = sender.df.to_string();
        self.emsgsize = sender.send_errors_emsgsize.to_string();
        self.path_mtu = opt(sender.path_mtu);
    }

    fn fill_buffers(&mut self, sndbuf: &BufferInfo, rcvbuf: &BufferInfo) {
        self.sndbuf_bytes = sndbuf.effective.to_string();
        self.rcvbuf_bytes = rcvbuf.effective.to_string();
        self.sndbuf_requested_bytes = opt(sndbuf.requested);
        self.rcvbuf_requested_bytes = opt(rcvbuf.requested);
    }

    fn into_cells(self) -> Vec<String> {
        let [n1, n2, n3] = self.n_reordered;
        let cells = vec![
            self.run_id,
            self.role,
            self.target,
            self.payload_bytes,
            self.duration_s,
            self.sent,
            self.received,
            self.lost,
            self.loss_pct,
            self.duplicates,
            self.reordered,
            self.reordered_pct,
            self.reorder_extent_max,
            self.loss_periods,
            self.loss_period_max,
            self.jitter_us,
            self.ipdv_p50_us,
            self.ipdv_p99_us,
            self.latency.min,
            self.latency.p50,
            self.latency.p90,
            self.latency.p99,
            self.latency.p999,
            self.latency.max,
            self.rtt.p50,
            self.rtt.p99,
            self.rate_target_bps,
            self.rate_achieved_bps,
            self.send_errors,
            self.sndbuf_bytes,
            self.rcvbuf_bytes,
            self.started_at,
            self.pattern,
            self.late,
            self.stale,
            n1,
            n2,
            n3,
            self.ipdv_abs_p99_us,
            self.pdv_p99_us,
            self.latency.mean,
            self.rtt.min,
            self.rtt.p90,
            self.rtt.p999,
            self.rtt.max,
            self.pps_achieved,
            self.pps_target,
            self.received_bytes,
            self.rcvbuf_drops,
            self.timestamp_source,
            self.foreign_datagrams,
            self.tmax_s,
            self.schedule_lateness_p99_us,
            self.sndbuf_requested_bytes,
            self.rcvbuf_requested_bytes,
            self.impairment,
            self.impair_dropped,
            self.impair_duplicated,
            self.impair_reordered,
            self.interrupted,
            self.gap_p50_us,
            self.gap_p99_us,
            self.rcvbuf_drops_pct,
            self.send_mode,
            self.verdict,
            self.echo_sent,
            self.echo_received,
            self.echo_lost,
            self.echo_loss_pct,
            self.echo_rcvbuf_drops,
            self.unauthenticated,
            self.refused_by_allow,
            self.implausible,
            self.rcvbuf_drops_shared,
            self.tos_sent,
            self.dscp_sent,
            self.dscp_kept,
            self.dscp_remarked,
            self.tos_received,
            self.ttl_sent,
            self.ttl_received,
            self.df,
            self.emsgsize,
            self.path_mtu,
            self.direction,
            self.labels,
        ];
        let mut cells = cells;
        if self.reliable.is_empty() {
            cells.extend(std::iter::repeat_n(String::new(), RELIABLE_COLUMN_COUNT));
        } else {
            cells.extend(self.reliable);
        }
        debug_assert_eq!(cells.len(), SUMMARY_COLUMNS.len());
        cells
    }
}

/// A histogram cell: `value:count` pairs by value, `;`-separated (`184:995;32:5`).
fn value_counts(pairs: impl Iterator<Item = (u8, u64)>) -> String {
    pairs
        .map(|(v, n)| format!("{v}:{n}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The `labels` cell: `key=value` pairs by key, joined with `;` (empty without labels).
pub fn labels_cell(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

fn sender_summary_row(report: &RunReport, sender: &SenderReport) -> SummaryRow {
    let mut row = SummaryRow::new(report, "sender");
    if let Some(receiver) = &report.receiver {
        row.fill_receiver_outcome(report, receiver);
    }
    row.fill_sender_context(sender);
    row.fill_buffers(&sender.sndbuf, &sender.rcvbuf);
    row.duration_s = seconds(sender.duration_s);
    row.sent = sender.sent.to_string();
    row.rate_achieved_bps = decimal(sender.rate_achieved_bps, 1);
    row.pps_achieved = decimal(sender.pps_achieved, 1);
    row.rtt = LatencyCells::of(sender.rtt.as_ref());
    row.schedule_lateness_p99_us = LatencyCells::of(sender.schedule_lateness.as_ref()).p99;
    let gaps = LatencyCells::of(sender.inter_departure.as_ref());
    row.gap_p50_us = gaps.p50;
    row.gap_p99_us = gaps.p99;
    row.send_mode = sender.send_mode.clone();
    row.unauthenticated = opt(sender.unauthenticated);
    row.interrupted = report.interrupted.to_string();
    row.fill_return_path(report);
    if let Some(r) = &report.reliable {
        row.reliable = reliable_cells(r);
    }
    row
}

/// The `--reliable` cells of a run (the merged figures: both rows of a sender's report carry
/// them; a receiver's own report has only its side, see [`receiver_reliable_cells`]).
fn reliable_cells(r: &ReliableReport) -> Vec<String> {
    let a = &r.arq;
    let lat = |l: &Option<LatencySummary>| LatencyCells::of(l.as_ref());
    let (ordered, unordered) = (lat(&a.latency_ordered), lat(&a.latency_unordered));
    let receiver = |v: String| if r.receiver_results { v } else { String::new() };
    // The `--flows` total: the RTT estimator's state is each flow's own (no total).
    let per_flow = |v: String| {
        if r.flows_combined.is_some() {
            String::new()
        } else {
            v
        }
    };
    let pct = |share: f64| decimal(share * 100.0, 4);
    [
        r.mode.clone(),
        r.impaired.clone(),
        a.messages.to_string(),
        receiver(a.delivered.to_string()),
        receiver(a.residual_lost.to_string()),
        receiver(pct(a.residual_loss)),
        a.raw_lost_packets.to_string(),
        pct(a.raw_loss),
        a.retransmissions.to_string(),
        decimal(a.retransmissions_per_message, 6),
        a.rexmit_packet_threshold.to_string(),
        a.rexmit_time_threshold.to_string(),
        a.rexmit_pto.to_string(),
        a.spurious_retransmissions.to_string(),
        decimal(a.spurious_per_message, 6),
        receiver(a.duplicate_arrivals.to_string()),
        receiver(decimal(a.duplicate_arrivals_per_message, 6)),
        receiver(a.ack_datagrams.to_string()),
        receiver(a.ack_bytes.to_string()),
        receiver(pct(a.ack_datagram_share)),
        receiver(pct(a.ack_byte_share)),
        receiver(decimal(a.goodput_bps, 1)),
        receiver(pct(a.wire_efficiency)),
        ordered.p50,
        ordered.p99,
        ordered.max,
        unordered.p50,
        unordered.p99,
        unordered.max,
        lat(&a.latency_tx1).p99,
        lat(&a.latency_tx2).p99,
        lat(&a.latency_tx3plus).p99,
        lat(&a.recovery_latency).p99,
        lat(&a.hol_wait).p99,
        receiver(pct(a.hol_waited_share)),
        a.deadline_drops.to_string(),
        a.messages_given_up.to_string(),
        per_flow(us_from_ns(a.srtt_ns)),
        per_flow(us_from_ns(a.rttvar_ns)),
        us_from_ns(a.min_rtt_ns),
        a.packet_threshold.to_string(),
        us_from_ns(a.reorder_window_ns),
        a.max_in_flight.to_string(),
        receiver(a.max_buffered.to_string()),
        a.bogus_acks.to_string(),
        a.sender.repeat_copies.to_string(),
    ]
    .into()
}

/// A receiver's own report of a reliable test: the cells its side measured.
fn receiver_reliable_cells(a: &ArqReceiverStats) -> Vec<String> {
    let lat = |l: &Option<LatencySummary>| LatencyCells::of(l.as_ref());
    let (ordered, unordered) = (lat(&a.latency_ordered), lat(&a.latency_unordered));
    let mut cells = vec![String::new(); RELIABLE_COLUMN_COUNT];
    let mut set = |column: &str, value: String| {
        if let Some(i) = SUMMARY_COLUMNS[SUMMARY_COLUMNS.len() - RELIABLE_COLUMN_COUNT..]
            .iter()
            .position(|c| *c == column)
        {
            cells[i] = value;
        }
    };
    set("delivered", a.delivered.to_string());
    set("duplicate_arrivals", a.duplicate_arrivals.to_string());
    set("ack_datagrams", a.ack_datagrams.to_string());
    set("ack_bytes", a.ack_bytes.to_string());
    set("delivery_ordered_p50_us", ordered.p50);
    set("delivery_ordered_p99_us", ordered.p99);
    set("delivery_ordered_max_us", ordered.max);
    set("delivery_unordered_p50_us", unordered.p50);
    set("delivery_unordered_p99_us", unordered.p99);
    set("delivery_unordered_max_us", unordered.max);
    set("delivery_tx1_p99_us", lat(&a.latency_tx1).p99);
    set("delivery_tx2_p99_us", lat(&a.latency_tx2).p99);
    set("delivery_tx3plus_p99_us", lat(&a.latency_tx3plus).p99);
    set("recovery_p99_us", lat(&a.recovery_latency).p99);
    set("hol_wait_p99_us", lat(&a.hol_wait).p99);
    set("max_buffered", a.max_buffered.to_string());
    cells
}

fn receiver_summary_row(report: &RunReport, receiver: &ReceiverReport) -> SummaryRow {
    let mut row = SummaryRow::new(report, "receiver");
    row.fill_receiver_outcome(report, receiver);
    if let Some(sender) = &report.sender {
        row.fill_sender_context(sender);
    }
    row.fill_buffers(&receiver.sndbuf, &receiver.rcvbuf);
    row.duration_s = seconds(receiver.duration_s);
    // 0 means the end-of-test exchange never told the receiver the sender's total.
    row.sent = opt(Some(receiver.stats.expected).filter(|&n| n > 0));
    row.rate_achieved_bps = decimal(receiver.rate_achieved_bps, 1);
    row.pps_achieved = decimal(receiver.pps_achieved, 1);
    row.interrupted = (report.interrupted || receiver.interrupted).to_string();
    row.unauthenticated = opt(receiver.unauthenticated);
    row.fill_return_path(report);
    match (&report.reliable, &receiver.reliable) {
        (Some(r), _) => row.reliable = reliable_cells(r),
        (None, Some(a)) => row.reliable = receiver_reliable_cells(a),
        (None, None) => {}
    }
    row
}

/// One interval row. Receiver rows carry `stats`; sender rows carry `sent`, `send_errors` and
/// the echo RTT instead.
fn interval_record(run_id: &str, row: &IntervalRow) -> Vec<String> {
    let is_sender = row.stats.is_none();
    let rtt = LatencyCells::of(row.rtt.as_ref());
    let mut cells = vec![
        run_id.to_string(),
        row.role.clone(),
        seconds(row.start_s),
        seconds(row.end_s),
        opt(is_sender.then_some(row.sent)),
    ];
    match &row.stats {
        Some(stats) => {
            let latency = LatencyCells::of_signed(stats.latency.as_ref());
            let ipdv = measured_signed(stats.ipdv.as_ref());
            cells.extend([
                stats.received.to_string(),
                stats.lost.to_string(),
                // Interval rows have no sender total: lost is a share of what the interval
                // accounted for (received + declared lost).
                pct_cell(percent(stats.lost, stats.received + stats.lost)),
                stats.duplicates.to_string(),
                stats.reordered.to_string(),
                stats.loss_periods.to_string(),
                us_from_f64_ns(stats.jitter_ns),
                opt(ipdv.map(|s| us_from_signed_ns(s.p50_ns))),
                opt(ipdv.map(|s| us_from_signed_ns(s.p99_ns))),
                latency.min,
                latency.p50,
                latency.p99,
                latency.max,
            ]);
        }
        None => cells.extend(std::iter::repeat_n(String::new(), 13)),
    }
    cells.extend([
        rtt.p50,
        rtt.p99,
        decimal(row.rate_bps, 1),
        decimal(row.pps, 1),
        opt(is_sender.then_some(row.send_errors)),
        opt(row.stats.as_ref().map(|s| s.late)),
    ]);
    match &row.reliable {
        Some(r) if is_sender => cells.extend([
            r.retransmissions.to_string(),
            r.spurious_retransmissions.to_string(),
            r.messages_acked.to_string(),
            us_from_ns(r.srtt_ns),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]),
        Some(r) => cells.extend([
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            r.delivered.to_string(),
            r.duplicate_arrivals.to_string(),
            r.ack_datagrams.to_string(),
            r.ack_bytes.to_string(),
        ]),
        None => cells.extend(std::iter::repeat_n(String::new(), 8)),
    }
    debug_assert_eq!(cells.len(), INTERVAL_COLUMNS.len());
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;
    use std::collections::HashMap;

    /// Parses CSV text into header-keyed rows.
    fn parse(text: &str) -> (Vec<String>, Vec<HashMap<String, String>>) {
        let mut reader = ::csv::Reader::from_reader(text.as_bytes());
        let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        let rows = reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                headers
                    .iter()
                    .cloned()
                    .zip(r.iter().map(String::from))
                    .collect()
            })
            .collect();
        (headers, rows)
    }

    fn summary_text(report: &RunReport, header: Header) -> String {
        let mut out = Vec::new();
        write_summary_csv(&mut out, report, header).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn summary_has_the_documented_core_columns_first() {
        let core = "run_id,role,target,payload_bytes,duration_s,sent,received,lost,loss_pct,\
            duplicates,reordered,reordered_pct,reorder_extent_max,loss_periods,loss_period_max,\
            jitter_us,ipdv_p50_us,ipdv_p99_us,latency_min_us,latency_p50_us,latency_p90_us,\
            latency_p99_us,latency_p999_us,latency_max_us,rtt_p50_us,rtt_p99_us,\
            rate_target_bps,rate_achieved_bps,send_errors,sndbuf_bytes,rcvbuf_bytes";
        let header_line = SUMMARY_COLUMNS.join(",");
        assert!(header_line.starts_with(&format!("{core},started_at,")));
        let unique: std::collections::HashSet<_> = SUMMARY_COLUMNS.iter().collect();
        assert_eq!(unique.len(), SUMMARY_COLUMNS.len(), "column names repeat");
    }

    #[test]
    fn every_column_is_documented_in_the_results_readme() {
        let readme = include_str!("../../results/README.md");
        for column in SUMMARY_COLUMNS.iter().chain(&INTERVAL_COLUMNS) {
            assert!(
                readme.contains(&format!("`{column}`")),
                "{column} is not documented in results/README.md"
            );
        }
    }

    #[test]
    fn summary_rows_for_both_roles_parse_back() {
        let report = fixtures::run_report();
        let text = summary_text(&report, Header::Include);
        let (headers, rows) = parse(&text);
        assert_eq!(headers, SUMMARY_COLUMNS);
        assert_eq!(rows.len(), 2);
        let (sender, receiver) = (&rows[0], &rows[1]);
        let stats = &report.receiver.as_ref().unwrap().stats;
        let s = report.sender.as_ref().unwrap();

        assert_eq!(sender["role"], "sender");
        assert_eq!(receiver["role"], "receiver");
        assert_eq!(sender["sent"], s.sent.to_string());
        assert_eq!(receiver["sent"], stats.expected.to_string());
        for row in [sender, receiver] {
            assert_eq!(row["run_id"], "run-42");
            assert_eq!(row["received"], stats.received.to_string());
            assert_eq!(row["lost"], stats.lost.to_string());
            // 100 · 50 / 10000, against the sender's sequence total.
            let loss: f64 = row["loss_pct"].parse().unwrap();
            assert!((loss - 100.0 * 50.0 / 10_000.0).abs() < 1e-9);
            let reordered: f64 = row["reordered_pct"].parse().unwrap();
            assert!((reordered - 100.0 * 20.0 / 9_950.0).abs() < 1e-4);
            assert_eq!(row["jitter_us"], "1.234"); // 1234.25 ns, 3 decimals
            assert_eq!(row["ipdv_p50_us"], "-0.120");
            assert_eq!(row["latency_p50_us"], "9.234");
            assert_eq!(row["latency_p99_us"], "24.007");
            assert_eq!(row["send_errors"], "10");
            assert_eq!(row["rate_target_bps"], "9600000.0");
            assert_eq!(row["impair_dropped"], "45");
            assert_eq!(row["timestamp_source"], "kernel");
            assert_eq!(row["interrupted"], "false");
        }
        assert_eq!(sender["rtt_p50_us"], "21.234");
        assert_eq!(
            receiver["rtt_p50_us"], "",
            "rtt does not apply to the receiver row"
        );
        assert_eq!(sender["rate_achieved_bps"], "9590400.0");
        assert_eq!(receiver["rate_achieved_bps"], "9552000.0");
        assert_eq!(sender["sndbuf_bytes"], "425984");
        assert_eq!(sender["sndbuf_requested_bytes"], (4u64 << 20).to_string());
        assert_eq!(
            sender["rcvbuf_requested_bytes"], "",
            "kernel default: no request"
        );
        assert_eq!(receiver["rcvbuf_bytes"], (16u64 << 20).to_string());
        assert_eq!(receiver["schedule_lateness_p99_us"], "");
        // The impairment spec holds a comma: the crate must quote it, and it reads back whole.
        assert_eq!(sender["impairment"], "loss=1%,dup=0.1%");
    }

    #[test]
    fn key_and_allow_refusals_have_their_own_columns() {
        let report = fixtures::run_report();
        let (headers, rows) = parse(&summary_text(&report, Header::Include));
        assert_eq!(headers[70..72], ["unauthenticated", "refused_by_allow"]);
        // No key, no --allow: unknown, not zero.
        for row in &rows {
            assert_eq!(row["unauthenticated"], "");
            assert_eq!(row["refused_by_allow"], "");
        }
        let mut keyed = report.clone();
        keyed.sender.as_mut().unwrap().unauthenticated = Some(3);
        let receiver = keyed.receiver.as_mut().unwrap();
        receiver.unauthenticated = Some(5);
        receiver.refused_by_allow = Some(2);
        let (_, rows) = parse(&summary_text(&keyed, Header::Include));
        // Each role's own count of what it dropped.
        assert_eq!(rows[0]["unauthenticated"], "3");
        assert_eq!(rows[1]["unauthenticated"], "5");
        assert_eq!(rows[0]["refused_by_allow"], "2");
        assert_eq!(rows[1]["refused_by_allow"], "2");
    }

    #[test]
    fn markings_have_their_columns_at_the_end() {
        let mut report = fixtures::run_report();
        let (headers, rows) = parse(&summary_text(&report, Header::Include));
        assert_eq!(
            headers[74..84],
            [
                "tos_sent",
                "dscp_sent",
                "dscp_kept",
                "dscp_remarked",
                "tos_received",
                "ttl_sent",
                "ttl_received",
                "df",
                "emsgsize",
                "path_mtu"
            ]
        );
        // Nothing set, nothing seen: empty, not zero.
        assert_eq!(rows[1]["dscp_kept"], "");
        assert_eq!(rows[1]["tos_sent"], "");
        let sender = report.sender.as_mut().unwrap();
        sender.tos = Some(0xb8);
        sender.ttl = Some(9);
        sender.df = true;
        sender.send_errors_emsgsize = 7;
        sender.path_mtu = Some(1280);
        let r = report.receiver.as_mut().unwrap();
        r.marking.tos_sent = Some(0xb8);
        r.marking.ttl_sent = Some(9);
        r.marking.dscp_kept = 95;
        r.marking.dscp_remarked = 5;
        r.marking.tos_received = vec![
            crate::summary::TosCount {
                tos: 0x20,
                dscp: 8,
                ecn: 0,
                count: 5,
            },
            crate::summary::TosCount {
                tos: 0xb8,
                dscp: 46,
                ecn: 0,
                count: 95,
            },
        ];
        r.marking.ttl_received = vec![crate::summary::TtlCount { ttl: 8, count: 100 }];
        let (_, rows) = parse(&summary_text(&report, Header::Include));
        for row in &rows {
            assert_eq!(row["tos_sent"], "184");
            assert_eq!(row["dscp_sent"], "46");
            assert_eq!(row["dscp_kept"], "95");
            assert_eq!(row["dscp_remarked"], "5");
            assert_eq!(row["tos_received"], "32:5;184:95");
            assert_eq!(row["ttl_sent"], "9");
            assert_eq!(row["ttl_received"], "8:100");
            assert_eq!(row["df"], "true");
            assert_eq!(row["emsgsize"], "7");
            assert_eq!(row["path_mtu"], "1280");
        }
    }

    #[test]
    fn implausible_and_a_shared_socket_have_their_columns_at_the_end() {
        let mut report = fixtures::run_report();
        let (headers, rows) = parse(&summary_text(&report, Header::Include));
        // Columns 73 and 74 (later columns, such as `labels`, come after them).
        assert_eq!(headers[72..74], ["implausible", "rcvbuf_drops_shared"]);
        assert_eq!(
            headers[86], "reliable_mode",
            "the --reliable block follows them"
        );
        assert_eq!(rows[0]["rcvbuf_drops_shared"], "false");
        assert_eq!(rows[0]["rcvbuf_drops_pct"], "0.0000");
        let receiver = report.receiver.as_mut().unwrap();
        receiver.stats.implausible = 4;
        receiver.rcvbuf_drops = Some(30_000);
        receiver.rcvbuf_drops_shared = true;
        let (_, rows) = parse(&summary_text(&report, Header::Include));
        for row in &rows {
            assert_eq!(row["implausible"], "4");
            assert_eq!(row["rcvbuf_drops_shared"], "true");
            assert_eq!(row["rcvbuf_drops"], "30000", "the socket's count, given");
            assert_eq!(
                row["rcvbuf_drops_pct"], "",
                "not a share of this test's 10000 datagrams"
            );
        }
    }

    #[test]
    fn the_direction_has_column_85_and_names_each_run() {
        let mut report = fixtures::run_report();
        let (headers, rows) = parse(&summary_text(&report, Header::Include));
        // Column 85, after the marking columns 75-84 (results/README.md numbers them from 1);
        // `labels` (86) came later.
        assert_eq!(headers[84], "direction");
        assert_eq!(headers[85], "labels");
        assert_eq!(headers.len(), SUMMARY_COLUMNS.len());
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r["direction"] == "forward"));
        report.direction = crate::summary::Direction::Reverse;
        let (_, rows) = parse(&summary_text(&report, Header::Include));
        assert_eq!(rows[0]["role"], "sender");
        assert!(rows.iter().all(|r| r["direction"] == "reverse"));
    }

    #[test]
    fn the_return_path_has_its_own_columns_at_the_end() {
        let report = fixtures::run_report();
        let (headers, rows) = parse(&summary_text(&report, Header::Include));
        // Columns 66–70, where they were appended (later columns come after them).
        assert_eq!(
            headers[65..70],
            [
                "echo_sent",
                "echo_received",
                "echo_lost",
                "echo_loss_pct",
                "echo_rcvbuf_drops"
            ]
        );
        for row in &rows {
            assert_eq!(
                row["echo_sent"], "9960",
                "the receiver's count of replies sent"
            );
            assert_eq!(row["echo_received"], "9900");
            assert_eq!(row["echo_lost"], "60");
            let pct: f64 = row["echo_loss_pct"].parse().unwrap();
            assert!((pct - 100.0 * 60.0 / 9960.0).abs() < 1e-4);
            assert_eq!(row["echo_rcvbuf_drops"], "12");
        }

        let mut receiver_only = report.clone();
        receiver_only.sender = None;
        let (_, rows) = parse(&summary_text(&receiver_only, Header::Include));
        assert_eq!(rows[0]["echo_sent"], "9960");
        assert_eq!(
            rows[0]["echo_received"], "",
            "the sender's count is not known"
        );

        let mut no_echo = report;
        no_echo.echo = false;
        let (_, rows) = parse(&summary_text(&no_echo, Header::Include));
        for row in &rows {
            for column in ["echo_sent", "echo_received", "echo_lost", "echo_loss_pct"] {
                assert_eq!(row[column], "", "{column} without --echo");
            }
        }
    }

    #[test]
    fn unknown_figures_are_empty_cells_not_zero() {
        let mut report = fixtures::run_report();
        report.receiver = None;
        let sender = report.sender.as_mut().unwrap();
        sender.rate_target_bps = None;
        sender.rtt = None;
        let (_, rows) = parse(&summary_text(&report, Header::Include));
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        for column in [
            "received",
            "lost",
            "loss_pct",
            "reordered_pct",
            "jitter_us",
            "latency_p50_us",
            "rtt_p50_us",
            "rtt_max_us",
            "rate_target_bps",
            "rcvbuf_drops",
        ] {
            assert_eq!(row[column], "", "{column} should be empty");
        }
        assert_eq!(row["sent"], "9990");
    }

    #[test]
    fn receiver_only_report_writes_one_receiver_row() {
        let mut report = fixtures::run_report();
        report.sender = None;
        let receiver = report.receiver.as_mut().unwrap();
        receiver.stats.expected = 0;
        receiver.stats.received = 0;
        receiver.stats.latency = Some(SignedLatencySummary::default());
        let (_, rows) = parse(&summary_text(&report, Header::Include));
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row["role"], "receiver");
        assert_eq!(row["sent"], "", "sender total unknown");
        assert_eq!(row["loss_pct"], "");
        assert_eq!(row["reordered_pct"], "", "percent of 0 received");
        assert_eq!(row["latency_min_us"], "", "an empty histogram is not 0 µs");
        assert_eq!(row["send_errors"], "");
        assert_eq!(row["rate_target_bps"], "");
    }

    #[test]
    fn omitted_header_writes_rows_only() {
        let report = fixtures::run_report();
        let text = summary_text(&report, Header::Omit);
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with("run-42,sender,"));
    }

    #[test]
    fn appending_to_a_file_with_our_header_adds_rows_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.csv");
        let report = fixtures::run_report();
        assert_eq!(append_summary_csv(&path, &report).unwrap(), 2);
        assert_eq!(append_summary_csv(&path, &report).unwrap(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let (headers, rows) = parse(&text);
        assert_eq!(headers, SUMMARY_COLUMNS);
        assert_eq!(rows.len(), 4);
        assert_eq!(text.matches("run_id,role").count(), 1, "one header only");
    }

    #[test]
    fn appending_to_an_empty_file_writes_the_header() {
        let file = tempfile::NamedTempFile::new().unwrap();
        append_summary_csv(file.path(), &fixtures::run_report()).unwrap();
        let (headers, rows) = parse(&std::fs::read_to_string(file.path()).unwrap());
        assert_eq!(headers, SUMMARY_COLUMNS);
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn appending_after_a_line_without_newline_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.csv");
        let report = fixtures::run_report();
        append_summary_csv(&path, &report).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.pop(); // drop the trailing newline
        std::fs::write(&path, &text).unwrap();
        append_summary_csv(&path, &report).unwrap();
        let (_, rows) = parse(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r["interrupted"] == "false"));
    }

    #[test]
    fn a_different_header_is_an_error_and_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.csv");
        // An older layout: our first columns minus the last core one.
        let old = format!("{}\nr1,sender\n", SUMMARY_COLUMNS[..30].join(","));
        std::fs::write(&path, &old).unwrap();
        let err = append_summary_csv(&path, &fixtures::run_report()).unwrap_err();
        match &err {
            CsvError::HeaderMismatch {
                expected_columns,
                found_columns,
                first_difference,
                ..
            } => {
                assert_eq!(*expected_columns, SUMMARY_COLUMNS.len());
                assert_eq!(*found_columns, 30);
                assert_eq!(*first_difference, 31);
            }
            other => panic!("expected HeaderMismatch, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("old.csv") && message.contains("new file"));
        assert!(!message.contains('\n'), "one-line message");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), old);
    }

    #[test]
    fn a_renamed_column_is_a_mismatch_at_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("renamed.csv");
        let mut columns = INTERVAL_COLUMNS.map(String::from);
        columns[7] = "loss_percent".to_string();
        std::fs::write(&path, format!("{}\n", columns.join(","))).unwrap();
        let err = append_interval_csv(&path, &fixtures::run_report()).unwrap_err();
        assert!(matches!(
            err,
            CsvError::HeaderMismatch {
                first_difference: 8,
                found_columns,
                ..
            } if found_columns == INTERVAL_COLUMNS.len()
        ));
    }

    #[test]
    fn interval_rows_for_both_roles() {
        let report = fixtures::run_report();
        let mut out = Vec::new();
        write_interval_csv(&mut out, &report, Header::Include).unwrap();
        let (headers, rows) = parse(std::str::from_utf8(&out).unwrap());
        assert_eq!(headers, INTERVAL_COLUMNS);
        assert_eq!(rows.len(), 2);
        let (sender, receiver) = (&rows[0], &rows[1]);

        assert_eq!(sender["role"], "sender");
        assert_eq!(sender["start_s"], "0.000000");
        assert_eq!(sender["end_s"], "1.000000");
        assert_eq!(sender["sent"], "1000");
        assert_eq!(sender["send_errors"], "1");
        assert_eq!(sender["received"], "");
        assert_eq!(sender["loss_pct"], "");
        assert_eq!(sender["late"], "");
        assert_eq!(sender["rtt_p99_us"], "60.007");
        assert_eq!(sender["rate_bps"], "9600000.0");

        assert_eq!(receiver["role"], "receiver");
        assert_eq!(receiver["sent"], "");
        assert_eq!(receiver["send_errors"], "");
        assert_eq!(receiver["received"], "990");
        assert_eq!(receiver["lost"], "10");
        let loss: f64 = receiver["loss_pct"].parse().unwrap();
        assert!((loss - 100.0 * 10.0 / 1000.0).abs() < 1e-9);
        assert_eq!(receiver["late"], "2");
        assert_eq!(receiver["ipdv_p99_us"], "8.500");
        assert_eq!(receiver["latency_max_us"], "80.000");
        assert_eq!(receiver["rtt_p50_us"], "");
        assert!(rows.iter().all(|r| r["run_id"] == "run-42"));
    }

    #[test]
    fn interval_file_appends_under_one_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intervals.csv");
        let report = fixtures::run_report();
        append_interval_csv(&path, &report).unwrap();
        append_interval_csv(&path, &report).unwrap();
        let (headers, rows) = parse(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(headers, INTERVAL_COLUMNS);
        assert_eq!(rows.len(), 4);
    }

    #[test]
    fn the_loss_log_lists_each_runs_ranges_and_says_what_was_cut() {
        let mut report = fixtures::run_report();
        let receiver = report.receiver.as_mut().unwrap();
        receiver.loss_ranges = vec![[3, 5], [9, 9]];
        receiver.loss_ranges_not_kept = 7;
        let mut out = Vec::new();
        write_loss_log(&mut out, &[&report]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "run_id,first_seq,last_seq\nrun-42,3,5\nrun-42,9,9\n\
                 # run-42: 7 further lost ranges not carried back (limit {MAX_CARRIED_LOSS_RANGES})\n"
            )
        );
        report.receiver = None;
        let mut out = Vec::new();
        write_loss_log(&mut out, &[&report]).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("# run-42: no lost ranges: the receiver's results never came back\n")
        );
    }

    #[test]
    fn microsecond_cells_are_exact() {
        assert_eq!(us_from_ns(0), "0.000");
        assert_eq!(us_from_ns(1_234_567), "1234.567");
        assert_eq!(us_from_signed_ns(-5), "-0.005");
        assert_eq!(us_from_signed_ns(i64::MIN), "-9223372036854775.808");
        assert_eq!(us_from_f64_ns(f64::NAN), "");
        assert_eq!(decimal(f64::INFINITY, 1), "");
    }

    #[test]
    fn a_flows_total_leaves_the_per_flow_reliable_cells_empty() {
        let mut report = fixtures::run_report();
        let arq = crate::arq::ArqReport {
            messages: 4000,
            delivered: 4000,
            retransmissions: 200,
            retransmissions_per_message: 0.05,
            srtt_ns: 40_000,
            rttvar_ns: 9_000,
            min_rtt_ns: 20_000,
            latency_ordered: Some(LatencySummary {
                count: 4000,
                p99_ns: 2_000_000,
                max_ns: 3_000_000,
                ..LatencySummary::default()
            }),
            ..Default::default()
        };
        report.reliable = Some(ReliableReport {
            mode: "ordered".into(),
            impaired: "data+acks".into(),
            receiver_results: true,
            arq,
            ..Default::default()
        });
        let (_, rows) = parse(&summary_text(&report, Header::Include));
        assert_eq!(rows[0]["srtt_us"], "40.000");
        assert_eq!(rows[0]["delivery_ordered_p99_us"], "2000.000");
        // The total of --flows: no RTT estimate of its own, no percentiles (combine leaves
        // them out), the counts filled.
        let reliable = report.reliable.as_mut().unwrap();
        reliable.flows_combined = Some(2);
        reliable.arq.latency_ordered = None;
        let (_, rows) = parse(&summary_text(&report, Header::Include));
        for row in &rows {
            assert_eq!(row["srtt_us"], "");
            assert_eq!(row["rttvar_us"], "");
            assert_eq!(row["delivery_ordered_p99_us"], "");
            assert_eq!(row["min_rtt_us"], "20.000");
            assert_eq!(row["messages"], "4000");
            assert_eq!(row["delivered"], "4000");
            assert_eq!(row["retransmissions_per_message"], "0.050000");
        }
    }
}
