//! Plain result structs shared by the stats, the sessions and the report writers.
//!
//! Everything here is data: `Serialize`/`Deserialize` so the receiver's results can travel to the
//! sender as JSON and be written as JSON/CSV. Times are integer nanoseconds (`_ns`) inside the
//! program; the report writers convert to the documented units (`_us`, `_s`, `_bps`).

use serde::{Deserialize, Serialize};

/// Version of the JSON report and of the receiver-results payload on the wire. 2: one document
/// shape for every command (`ReportDocument`), echo and loss-range fields in the results.
pub const REPORT_VERSION: u32 = 2;

/// `schema` of a send/loopback/recv report document (`ReportDocument`).
pub const REPORT_SCHEMA: &str = "udplab.report.v2";

/// Lost sequence ranges a receiver carries back to a sender that asked for them: bounds the
/// results transfer (and the receiver's memory) however lossy the path. Ranges beyond it are
/// counted in `ReceiverReport::loss_ranges_not_kept`.
pub const MAX_CARRIED_LOSS_RANGES: usize = 100_000;

/// Interval rows a report keeps (an hour at the default 1 s interval): memory and the results
/// transfer stay bounded however long a run lasts. Later rows are still printed live.
pub const MAX_KEPT_INTERVALS: usize = 3600;

/// Appends `row` unless `rows` already holds `MAX_KEPT_INTERVALS`; counts it in `not_kept` then.
pub fn keep_interval(rows: &mut Vec<IntervalRow>, row: IntervalRow, not_kept: &mut u64) {
    if rows.len() < MAX_KEPT_INTERVALS {
        rows.push(row);
    } else {
        *not_kept += 1;
    }
}

/// Percentiles of an unsigned time distribution (one-way latency, RTT, PDV, schedule lateness).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ns: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// Percentiles of a one-way delay D = R - S, which is signed: it is negative when the receiver's
/// clock is behind the sender's by more than the path delay. Same fields as `LatencySummary`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SignedLatencySummary {
    pub count: u64,
    pub min_ns: i64,
    pub mean_ns: f64,
    pub p50_ns: i64,
    pub p90_ns: i64,
    pub p99_ns: i64,
    pub p999_ns: i64,
    pub max_ns: i64,
}

impl From<LatencySummary> for SignedLatencySummary {
    fn from(l: LatencySummary) -> Self {
        let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        SignedLatencySummary {
            count: l.count,
            min_ns: signed(l.min_ns),
            mean_ns: l.mean_ns,
            p50_ns: signed(l.p50_ns),
            p90_ns: signed(l.p90_ns),
            p99_ns: signed(l.p99_ns),
            p999_ns: signed(l.p999_ns),
            max_ns: signed(l.max_ns),
        }
    }
}

/// Percentiles of a signed time distribution (IPDV, RFC 3393).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SignedSummary {
    pub count: u64,
    pub min_ns: i64,
    pub p01_ns: i64,
    pub p50_ns: i64,
    pub p99_ns: i64,
    pub max_ns: i64,
}

/// One bucket of the reordering-extent distribution: `count` reordered datagrams whose extent
/// (RFC 4737 §4.2.2) lies in `lo..=hi`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtentBucket {
    pub lo: u64,
    pub hi: u64,
    pub count: u64,
}

/// What the receiver measured, for one interval or for the whole run.
///
/// Definitions are in DESIGN.md and `results/README.md`. For an interval row, what arrives
/// (received, bytes, duplicates, late, stale, reordering, delays) counts in the interval in
/// which it arrived, while `lost`, `loss_periods` and `loss_period_max` count the datagrams
/// *sent* in the interval that were lost: the send time of a lost sequence is interpolated
/// between the sender timestamps of the received sequences around its loss period. A loss
/// period counts in the row where it starts. Each lost datagram is in exactly one row, so the
/// rows add up to the run total; a row is published once its losses are final (about Tmax
/// after the interval ended).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReceiverStatsSummary {
    /// Datagrams the sender reported sending (known only at the end; 0 in interval rows).
    pub expected: u64,
    /// Distinct sequences received within Tmax.
    pub received: u64,
    /// UDP payload bytes of those distinct datagrams.
    pub received_bytes: u64,
    /// Sequences never received within Tmax (RFC 7680). Duplicates never offset losses. In an
    /// interval row: those sent in the interval.
    pub lost: u64,
    /// Datagrams that arrived after their sequence had been declared lost (not counted received).
    pub late: u64,
    /// Arrivals too old for the duplicate window to classify (duplicate or very late).
    pub stale: u64,
    /// Extra copies of a sequence already received.
    pub duplicates: u64,
    /// RFC 4737 reordered datagrams (arrived with s < NextExp).
    pub reordered: u64,
    pub reorder_extent_max: u64,
    pub reorder_extent: Vec<ExtentBucket>,
    /// RFC 4737 n-reordering counts for n = 1, 2, 3.
    pub n_reordered: [u64; 3],
    /// RFC 3357 loss periods: maximal runs of consecutive lost sequences. In an interval row:
    /// the periods whose first lost datagram was sent in the interval.
    pub loss_periods: u64,
    /// The longest of those periods, in datagrams.
    pub loss_period_max: u64,
    /// RFC 3550 interarrival jitter estimate (J += (|D| - J)/16), nanoseconds.
    pub jitter_ns: f64,
    /// RFC 3393 IPDV between consecutive sequences both received (signed).
    pub ipdv: Option<SignedSummary>,
    /// Magnitude of the IPDV values.
    pub ipdv_abs: Option<LatencySummary>,
    /// One-way delay D = R - S (receiver clock minus sender clock), as measured: negative values
    /// stay negative (the receiver's clock is behind the sender's), so the figures show the
    /// clock offset instead of hiding it.
    pub latency: Option<SignedLatencySummary>,
    /// RFC 5481 PDV: D - min D (never negative; a constant clock offset cancels).
    pub pdv: Option<LatencySummary>,
    /// Datagrams whose one-way delay came out negative (clocks not synchronised); they are in
    /// `latency` with their negative value.
    pub negative_delays: u64,
    /// Receive time of the first and last counted datagram (receiver clock, ns since epoch).
    pub first_recv_ns: Option<u64>,
    pub last_recv_ns: Option<u64>,
    /// Datagrams from the test's sender whose sequence was implausibly far ahead of what it can
    /// have sent by then (declared count, or 2 × (declared rate × (time since the test was
    /// accepted + 1 s) + burst size) + 4096): counted here only, never moving the window.
    #[serde(default)]
    pub implausible: u64,
    /// One-way delay at the percentiles of `percentile_ladder()` (run summaries only, empty in
    /// interval rows): what a percentile plot (`udplab plot`) draws. Ladder entries beyond the
    /// resolution of the sample (1 − p < 1 / count) are left out; the last point is 100 %, the
    /// maximum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_percentiles: Vec<PercentilePoint>,
}

/// Steps of `percentile_ladder` per decade of 1/(1 − p).
pub const LADDER_STEPS_PER_DECADE: u32 = 5;
/// Decades of 1/(1 − p) `percentile_ladder` spans: up to 99.9999 %.
pub const LADDER_DECADES: u32 = 6;

/// The percentiles (0–100) of `latency_percentiles`, ascending: p = 1 − 10^(−k/5) for
/// k = 0..=30, i.e. five per decade of 1/(1 − p) from 0 % to 99.9999 %, evenly spaced on the
/// log axis of an HdrHistogram percentile plot (90 %, 99 %, 99.9 % ... are exact steps).
pub fn percentile_ladder() -> impl Iterator<Item = f64> {
    (0..=LADDER_STEPS_PER_DECADE * LADDER_DECADES).map(|k| {
        let tail = 10f64.powf(-f64::from(k) / f64::from(LADDER_STEPS_PER_DECADE));
        100.0 * (1.0 - tail)
    })
}

/// One point of a percentile distribution: the value at or below which `percentile` % of the
/// samples lie (HdrHistogram's rank rule, clamped into the exact minimum and maximum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PercentilePoint {
    pub percentile: f64,
    pub value_ns: i64,
}

impl ReceiverStatsSummary {
    /// The warning a report carries when the one-way delay minimum is negative: the receiver's
    /// clock is behind the sender's by at least that much, so one-way delays are offset by it.
    pub fn clock_warning(&self) -> Option<String> {
        let min_ns = self.latency.filter(|l| l.count > 0)?.min_ns;
        if min_ns >= 0 {
            return None;
        }
        let ms = min_ns.unsigned_abs() as f64 / 1e6;
        Some(format!(
            "one-way delay minimum is -{ms:.3} ms: the clocks of sender and receiver differ by at \
             least {ms:.3} ms ({} datagrams had a negative one-way delay; RTT and PDV are not \
             affected)",
            self.negative_delays
        ))
    }
}

/// Requested and effective socket buffer size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferInfo {
    /// What the user asked for (None: kernel default).
    pub requested: Option<u64>,
    /// What getsockopt reports after setting (Linux reports twice the usable size).
    pub effective: u64,
    /// True when the kernel gave less than requested (net.core.rmem_max / wmem_max).
    pub clamped: bool,
    /// True when SO_RCVBUFFORCE/SO_SNDBUFFORCE was used.
    pub forced: bool,
}

/// What an impairment engine did, by its own count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpairCounters {
    /// Datagrams offered to the impairment.
    pub offered: u64,
    /// Dropped by the loss model (Bernoulli or Gilbert-Elliott).
    pub dropped: u64,
    /// Tail-dropped by the rate limiter's queue.
    pub queue_dropped: u64,
    /// Extra copies emitted.
    pub duplicated: u64,
    /// Datagrams held for a non-zero delay (delay and/or jitter).
    pub delayed: u64,
    /// Datagrams deliberately held back behind later ones.
    pub reordered: u64,
    /// Datagrams released (including duplicates).
    pub released: u64,
}

/// The receiver's view of one test, as sent back to the sender.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReceiverReport {
    pub stats: ReceiverStatsSummary,
    /// Seconds from the first to the last counted datagram.
    pub duration_s: f64,
    /// Received payload bits per second over `duration_s`.
    pub rate_achieved_bps: f64,
    pub pps_achieved: f64,
    pub rcvbuf: BufferInfo,
    pub sndbuf: BufferInfo,
    /// Datagrams the kernel dropped because the receive buffer was full (SO_RXQ_OVFL), when the
    /// platform reports it.
    pub rcvbuf_drops: Option<u64>,
    /// "kernel" (SO_TIMESTAMPNS) or "user" (clock read after recv).
    pub timestamp_source: String,
    /// Datagrams that were not udplab's or belonged to another session.
    pub foreign_datagrams: u64,
    /// Waiting time for late datagrams after the sender's end (RFC 7680 Tmax).
    pub tmax_s: f64,
    /// Per-interval rows (receiver side), the first `MAX_KEPT_INTERVALS`.
    pub intervals: Vec<IntervalRow>,
    /// Interval rows beyond `MAX_KEPT_INTERVALS`: printed live, not kept in the report.
    #[serde(default)]
    pub intervals_not_kept: u64,
    /// True when the receiver was interrupted before the test ended.
    pub interrupted: bool,
    /// Echo replies the receiver handed to its socket (`--echo`): one per Data datagram that
    /// arrived, duplicates and late ones included. The return path's "expected".
    #[serde(default)]
    pub echo_sent: u64,
    /// The sender's address as the receiver saw it (after any NAT).
    #[serde(default)]
    pub peer: String,
    /// Lost sequence ranges `[first, last]`, in order, when the sender asked for them
    /// (`send --loss-log`); at most `MAX_CARRIED_LOSS_RANGES`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loss_ranges: Vec<[u64; 2]>,
    /// Lost ranges beyond `MAX_CARRIED_LOSS_RANGES`, not carried back.
    #[serde(default)]
    pub loss_ranges_not_kept: u64,
    /// Datagrams the receiver dropped during this test because their `--key` tag did not
    /// verify (they name no test: the socket's count over the test's time). None without a
    /// key, and in the copy carried back to the sender (the receiver's driver counts them, not
    /// its session).
    #[serde(default)]
    pub unauthenticated: Option<u64>,
    /// Datagrams the receiver dropped during this test because their source was outside
    /// `recv --allow` (the socket's count over the test's time). None without `--allow`, and in
    /// the copy carried back to the sender.
    #[serde(default)]
    pub refused_by_allow: Option<u64>,
    /// True when other tests ran on the receiver's socket during this one: `rcvbuf_drops` is
    /// then the socket's count over this test's time, shared with them, not this test's own.
    #[serde(default)]
    pub rcvbuf_drops_shared: bool,
    /// The TOS bytes and TTLs this test's Data arrived with, against what the sender set.
    #[serde(default)]
    pub marking: MarkingSummary,
    /// The `--omit` warm-up the sender asked for, seconds (0: none).
    #[serde(default)]
    pub omit_s: f64,
    /// Sequences `0..omitted_sequences` were the warm-up: in no statistic (`stats.expected`
    /// counts the rest).
    #[serde(default)]
    pub omitted_sequences: u64,
    /// Warm-up datagrams that arrived (duplicates included), not counted.
    #[serde(default)]
    pub omitted: u64,
    /// `--reliable`: the ARQ receiver's figures (its `stats` then count RData datagrams by
    /// packet number: the path's raw loss before recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reliable: Option<crate::arq::ArqReceiverStats>,
}

/// How a test's Data arrived marked (IP_RECVTOS / IP_RECVTTL on the receiver), against the
/// marking the sender announced in its Hello (`--dscp`/`--tos`, `--ttl`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MarkingSummary {
    /// The TOS / traffic-class byte the sender set; None: it set none (the kernel sends 0).
    pub tos_sent: Option<u8>,
    /// The TTL / hop limit the sender set; None: the route's default.
    pub ttl_sent: Option<u8>,
    /// Datagrams whose DSCP is the one sent (0 when the sender set none). ECN bits are not
    /// compared: routers may set CE on the way.
    pub dscp_kept: u64,
    /// Datagrams that arrived with another DSCP: re-marked (or bleached) on the way.
    pub dscp_remarked: u64,
    /// Datagrams whose TOS byte the kernel did not report (platform without IP_RECVTOS).
    pub tos_unknown: u64,
    /// Received TOS bytes and how many datagrams had each, by value.
    pub tos_received: Vec<TosCount>,
    /// Received TTLs / hop limits and how many datagrams had each, by value: more than one
    /// value means the path changed length during the test (or ran over several paths).
    pub ttl_received: Vec<TtlCount>,
    /// Datagrams whose TTL the kernel did not report.
    pub ttl_unknown: u64,
}

/// One TOS byte value seen on receive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TosCount {
    /// The whole byte; `dscp` and `ecn` are its two parts.
    pub tos: u8,
    pub dscp: u8,
    pub ecn: u8,
    pub count: u64,
}

/// One TTL / hop-limit value seen on receive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TtlCount {
    pub ttl: u8,
    pub count: u64,
}

/// The sender's view of one test.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SenderReport {
    pub sent: u64,
    pub sent_bytes: u64,
    /// Failed sends (ENOBUFS, EAGAIN, ...); the sequence was consumed and counts as lost.
    pub send_errors: u64,
    pub send_errors_enobufs: u64,
    pub send_errors_eagain: u64,
    /// Seconds from the first to the last send.
    pub duration_s: f64,
    /// Target payload bits per second (None: unpaced, `--rate max`).
    pub rate_target_bps: Option<f64>,
    pub rate_achieved_bps: f64,
    pub pps_target: Option<f64>,
    pub pps_achieved: f64,
    /// How far sends fell behind their scheduled deadline.
    pub schedule_lateness: Option<LatencySummary>,
    /// Time between consecutive sends (datagrams handed over in one batch have gap 0).
    #[serde(default)]
    pub inter_departure: Option<LatencySummary>,
    /// Round-trip times from `--echo` replies.
    pub rtt: Option<LatencySummary>,
    /// The `--omit` warm-up, seconds (0: none).
    #[serde(default)]
    pub omit_s: f64,
    /// Datagrams sent in the warm-up (sequences `0..omitted_sequences`): in `sent`, but in no
    /// statistic on either side.
    #[serde(default)]
    pub omitted_sequences: u64,
    pub echo_replies: u64,
    /// Datagrams the sender's own receive buffer dropped (SO_MEMINFO) with `--echo`: echo
    /// replies that reached this host but not udplab, so part of the return path's loss is
    /// ours. None without `--echo` or where the platform does not report it.
    #[serde(default)]
    pub echo_rcvbuf_drops: Option<u64>,
    /// Control datagrams (Hello, Fin, ResultReq, Abort) sent to the receiver, retries
    /// included: what besides data could have met the receiver's full buffer, and how hard
    /// the control exchange had to work.
    #[serde(default)]
    pub control_sent: u64,
    pub sndbuf: BufferInfo,
    pub rcvbuf: BufferInfo,
    /// The impairment spec applied in the sender, canonical form.
    pub impairment: Option<String>,
    pub impair_counters: Option<ImpairCounters>,
    /// How late the impairment released datagrams against their planned time (delay, jitter,
    /// rate, reorder): the emulation's own inaccuracy, caused by thread scheduling. Large
    /// values mean the measured delays include the emulator's lateness.
    #[serde(default)]
    pub impair_release_lateness: Option<LatencySummary>,
    /// How datagrams were handed to the kernel: "plain", "mmsg" (sendmmsg) or "gso" (UDP GSO).
    #[serde(default)]
    pub send_mode: String,
    /// Why `auto` chose `send_mode`, or how the mode can shape the loss pattern (GSO toward
    /// another host); shown after the mode on the text report's send-mode line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_mode_note: Option<String>,
    /// Per-interval rows (sender side), the first `MAX_KEPT_INTERVALS`.
    pub intervals: Vec<IntervalRow>,
    /// Interval rows beyond `MAX_KEPT_INTERVALS`: printed live, not kept in the report.
    #[serde(default)]
    pub intervals_not_kept: u64,
    /// Datagrams that reached the sender without a valid `--key` tag (a receiver without the
    /// key, or a stranger), dropped. None without a key.
    #[serde(default)]
    pub unauthenticated: Option<u64>,
    /// The TOS / traffic-class byte in force on the data socket (read back with getsockopt)
    /// when `--dscp`/`--tos` set one.
    #[serde(default)]
    pub tos: Option<u8>,
    /// The TTL / hop limit in force on the data socket when `--ttl` set one.
    #[serde(default)]
    pub ttl: Option<u8>,
    /// Don't Fragment was in force (`--df`).
    #[serde(default)]
    pub df: bool,
    /// Sends refused with EMSGSIZE: larger than the path MTU with `--df` (part of
    /// `send_errors`; their sequences count as lost).
    #[serde(default)]
    pub send_errors_emsgsize: u64,
    /// The path MTU the kernel held for the receiver at the end of the test (IP_MTU /
    /// IPV6_MTU), with `--df`: the interface MTU, or what ICMP taught it on the way.
    #[serde(default)]
    pub path_mtu: Option<u32>,
}

/// One interval line, sender or receiver. Fields that do not apply to the role are None/0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IntervalRow {
    pub role: String,
    /// Interval start and end, seconds since the test start.
    pub start_s: f64,
    pub end_s: f64,
    pub sent: u64,
    pub send_errors: u64,
    /// Receiver-side figures for the interval (None on sender rows).
    pub stats: Option<ReceiverStatsSummary>,
    /// RTT from echo replies received in the interval (sender rows).
    pub rtt: Option<LatencySummary>,
    /// Payload bits per second sent (sender) or received (receiver) in the interval.
    pub rate_bps: f64,
    pub pps: f64,
    /// `--reliable`: the ARQ layer's figures over the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reliable: Option<ReliableInterval>,
}

/// What every JSON document udplab writes starts with: which format, which program, which
/// command line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DocumentHeader {
    /// Report format version (`REPORT_VERSION`).
    pub version: u32,
    /// What the rest of the document is: `udplab.report.v2` or `udplab.proxy.v2`.
    pub schema: String,
    /// Always "udplab".
    pub tool: String,
    /// The udplab release that wrote the document.
    pub tool_version: String,
    /// The command line as run, shell-quoted where needed.
    pub command: String,
}

/// The JSON report of `send`, `loopback` and `recv`: one entry per flow (one for a single
/// flow) and their total.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportDocument {
    #[serde(flatten)]
    pub header: DocumentHeader,
    pub flows: Vec<RunReport>,
    /// Several flows: counts and rates summed (see `results/README.md`). One flow: that flow's
    /// figures, without its interval rows.
    pub total: RunReport,
}

/// A whole run (one flow), as written to JSON and flattened into CSV rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub version: u32,
    pub run_id: String,
    /// Test start, RFC 3339 UTC.
    pub started_at: String,
    /// The receiver's address as given.
    pub target: String,
    pub payload_bytes: u32,
    pub pattern: String,
    pub echo: bool,
    pub sender: Option<SenderReport>,
    pub receiver: Option<ReceiverReport>,
    /// Things the user should know (clamped buffers, no results from the receiver, ...).
    pub warnings: Vec<String>,
    /// True when the run was cut short (Ctrl-C/SIGTERM): figures cover what was measured.
    pub interrupted: bool,
    /// Each threshold the user gave (`--max-loss`, ...), with what was measured against it.
    #[serde(default)]
    pub thresholds: Vec<ThresholdCheck>,
    /// The thresholds' outcome, decided before any report is written.
    #[serde(default)]
    pub verdict: Verdict,
    /// Which way the data went: `forward` (the sender sends, the receiver measures) or
    /// `reverse` (`send -R`: the receiver sends, the sender measures). Absent in the JSON of a
    /// forward run, which is unchanged.
    #[serde(default, skip_serializing_if = "Direction::is_forward")]
    pub direction: Direction,
    /// `--label KEY=VALUE` tags (a CI job's commit, host, scenario), by key.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--reliable`: what the ACK/retransmit layer cost, both ends' figures merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reliable: Option<ReliableReport>,
    /// `--bidir`: the reverse direction's report, beside this forward one (the writers show
    /// the two as two reports, each with its `direction`; never serialized inside this one).
    #[serde(skip)]
    pub bidir_reverse: Option<Box<RunReport>>,
}

/// Which way a test's data went, as the reports name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The command's side sends, the receiver measures.
    #[default]
    Forward,
    /// `-R/--reverse`: the receiver sends, the command's side measures.
    Reverse,
}

impl Direction {
    pub fn is_forward(&self) -> bool {
        *self == Direction::Forward
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::Reverse => "reverse",
        }
    }
}

/// A `--reliable` run: the mode, where the impairment applied, and the ARQ layer's figures
/// (sender's and receiver's views merged; shares are fractions, times ns).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReliableReport {
    /// `ordered`, `unordered`, `deadline=10ms` or `deadline=4rtt`.
    pub mode: String,
    /// Directions `--impair` hit: `none`, `data` (send: ACKs only through `udplab proxy
    /// --reverse-impair`) or `data+acks` (loopback).
    pub impaired: String,
    /// False when the receiver's results never came back: the receiver's figures (delivered,
    /// latency, ACKs sent) are then missing, and residual loss is not known.
    pub receiver_results: bool,
    /// Pacing slots that found the window full (no new message could be queued).
    pub window_blocked: u64,
    /// The ACK direction's impairment counters (loopback).
    pub ack_impair_counters: Option<ImpairCounters>,
    #[serde(flatten)]
    pub arq: crate::arq::ArqReport,
    /// The `--flows` total only: how many flows' figures this combines (counts summed, shares
    /// recomputed from the sums; see `results/README.md`). Absent in a flow's own report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows_combined: Option<u64>,
}

/// One interval of a `--reliable` run: sender rows carry the sender's figures, receiver rows
/// the receiver's; counts are over the interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReliableInterval {
    /// Sender: retransmissions sent, by any cause.
    pub retransmissions: u64,
    /// Sender: retransmissions found spurious.
    pub spurious_retransmissions: u64,
    /// Sender: messages acknowledged.
    pub messages_acked: u64,
    /// Sender: smoothed RTT at the interval's end, ns.
    pub srtt_ns: u64,
    /// Receiver: messages delivered to the application side.
    pub delivered: u64,
    /// Receiver: RData datagrams that carried a message already received.
    pub duplicate_arrivals: u64,
    /// Receiver: ACK datagrams sent, and their bytes.
    pub ack_datagrams: u64,
    pub ack_bytes: u64,
}

/// One threshold compared with the run's measurement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThresholdCheck {
    /// The option without dashes, `_` for `-`: `max_loss`, `max_dup`, `max_reorder`,
    /// `max_jitter`, `max_latency_p99`, `max_rtt_p99`.
    pub name: String,
    /// The limit, in `unit`.
    pub limit: f64,
    /// What the run measured, in `unit`; None when there was nothing to judge.
    pub measured: Option<f64>,
    /// `pct` (percent, 0–100), `count` (datagrams) or `ns` (nanoseconds, as everywhere in the
    /// JSON).
    pub unit: String,
    /// True only when measured and within the limit.
    pub passed: bool,
    /// Why it could not be measured (None when it was).
    pub reason: Option<String>,
}

/// What the thresholds say about a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No threshold was given.
    #[default]
    None,
    /// Every threshold was measured and met.
    Pass,
    /// At least one measured value exceeded its threshold.
    Fail,
    /// None failed, but at least one could not be measured (results never came back, nothing
    /// sent, no samples).
    Incomplete,
}

impl Verdict {
    /// The word used in the JSON and the CSV `verdict` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::None => "none",
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Incomplete => "incomplete",
        }
    }

    /// The verdict of a set of checks: fail wins over incomplete, which wins over pass.
    pub fn of(checks: &[ThresholdCheck]) -> Verdict {
        if checks.is_empty() {
            Verdict::None
        } else if checks.iter().any(|c| !c.passed && c.measured.is_some()) {
            Verdict::Fail
        } else if checks.iter().any(|c| c.measured.is_none()) {
            Verdict::Incomplete
        } else {
            Verdict::Pass
        }
    }

    /// The worse of two verdicts (for a multi-flow run's total).
    pub fn worst(self, other: Verdict) -> Verdict {
        let rank = |v: Verdict| match v {
            Verdict::None => 0,
            Verdict::Pass => 1,
            Verdict::Incomplete => 2,
            Verdict::Fail => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_delay_minimum_warns_with_the_offset() {
        let mut st = ReceiverStatsSummary {
            negative_delays: 7,
            latency: Some(SignedLatencySummary {
                count: 10,
                min_ns: -2_500_000,
                max_ns: 1_000,
                ..SignedLatencySummary::default()
            }),
            ..ReceiverStatsSummary::default()
        };
        assert_eq!(
            st.clock_warning().as_deref(),
            Some(
                "one-way delay minimum is -2.500 ms: the clocks of sender and receiver differ by \
                 at least 2.500 ms (7 datagrams had a negative one-way delay; RTT and PDV are not \
                 affected)"
            )
        );
        st.latency.as_mut().unwrap().min_ns = 0;
        assert_eq!(st.clock_warning(), None);
        st.latency = None;
        assert_eq!(st.clock_warning(), None);
    }

    #[test]
    fn interval_rows_are_capped_and_the_rest_counted() {
        let mut rows = Vec::new();
        let mut not_kept = 0;
        for i in 0..MAX_KEPT_INTERVALS + 5 {
            let row = IntervalRow {
                start_s: i as f64,
                ..IntervalRow::default()
            };
            keep_interval(&mut rows, row, &mut not_kept);
        }
        assert_eq!(rows.len(), MAX_KEPT_INTERVALS);
        assert_eq!(not_kept, 5);
        assert_eq!(
            rows.last().unwrap().start_s,
            (MAX_KEPT_INTERVALS - 1) as f64
        );
    }
}
