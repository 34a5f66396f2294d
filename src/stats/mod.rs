//! The receiver's per-datagram accounting: loss (RFC 7680) and loss periods (RFC 3357),
//! duplicates, late and stale arrivals, reordering (RFC 4737), jitter (RFC 3550), IPDV
//! (RFC 3393), one-way latency and PDV (RFC 5481), per interval and for the whole run.
//!
//! Sans-IO: every time is a u64 nanosecond timestamp passed in. Memory is fixed at construction
//! (the duplicate window, the record-high ring, the IPDV ring, the histograms) and never grows
//! with the length of the run; the growable parts are the optional loss-range list, which
//! holds what the caller has not drained yet, and the closed interval rows waiting for their
//! losses (at most `rows::MAX_PENDING_ROWS`).
//!
//! Hot path: `on_datagram` for an in-order unique datagram touches one bitmap word, a few
//! counters, the RFC 3550 estimator, one IPDV ring slot and the *interval* histograms; the run
//! histograms are only updated when an interval closes.
//!
//! Interval rows: arrival figures (received, bytes, duplicates, late, reordering, delays) count
//! in the row during which the datagram arrived; losses count in the row in which the lost
//! datagram was *sent* (`rows.rs`), so a row is published by `poll_interval` only once its
//! losses are final, about Tmax after it closed.

mod delay;
mod hist;
pub mod marking;
mod reorder;
mod rows;
mod window;

use std::collections::VecDeque;
use std::ops::RangeInclusive;

pub use hist::{HISTOGRAM_MAX_NS, LatencyHistogram, SignedHistogram, pdv_from_latency};

use crate::summary::ReceiverStatsSummary;
use delay::DelayTracker;
use reorder::{ReorderTally, ReorderTracker};
use rows::RowLosses;
use window::{DuplicateWindow, FinishOutcome, LossTally, Verdict};

/// Sequences at or above this are never valid (a sender cannot get there); refusing them keeps
/// the window arithmetic far from u64 overflow whatever arrives.
pub const SEQ_LIMIT: u64 = 1 << 62;

/// Settings of the receiver's accounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsConfig {
    /// Sequences the duplicate window covers (rounded up to a power of two, at least 64). It
    /// should cover rate x Tmax: a sequence more than this far behind the highest seen is
    /// declared lost early (and a copy of it arriving later is `late`, or `stale` once the
    /// ring has moved on).
    pub window_bits: usize,
    /// RFC 7680 Tmax: a missing sequence is declared lost once it has been overtaken for this
    /// long (checked in `on_tick` / `close_interval`).
    pub loss_horizon_ns: u64,
    /// Keep the lost sequence ranges for `drain_loss_ranges`.
    pub record_loss_ranges: bool,
}

impl StatsConfig {
    /// Window size that covers `pps` x Tmax sequences (so that nothing is declared lost
    /// before Tmax by the window wrapping), as a power of two, at least the default 2^17 and
    /// at most 2^30. Each 64-sequence word costs 32 bytes (bitmap, overtaken stamp, and the
    /// send times of its lowest and highest received sequence): 64 KiB at the default 2^17,
    /// 512 MiB at 2^30.
    pub fn window_bits_for(pps: f64, loss_horizon_ns: u64) -> usize {
        let needed = (pps.max(0.0) * loss_horizon_ns as f64 / 1e9).ceil();
        let needed = if needed.is_finite() {
            needed.min((1u64 << 30) as f64) as usize
        } else {
            1 << 30
        };
        needed.max(1 << 17).next_power_of_two()
    }
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            window_bits: 1 << 17,
            loss_horizon_ns: 1_000_000_000,
            record_loss_ranges: false,
        }
    }
}

/// How one datagram was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First copy of its sequence, counted as received. `reordered` per RFC 4737.
    Unique { reordered: bool },
    /// Extra copy of a sequence already received (or already counted late).
    Duplicate,
    /// First copy of a sequence already declared lost: not counted as received.
    Late,
    /// Too old for the window to classify, or (after `finish`) a sequence the sender never
    /// sent; the latter is counted in `out_of_range()`, not in `stale`.
    Stale,
}

/// Per-arrival counters kept directly on the hot path (the window and the reorder tracker keep
/// their own tallies).
#[derive(Debug, Clone, Copy)]
struct ArrivalCounts {
    received: u64,
    received_bytes: u64,
    late: u64,
    stale: u64,
    duplicates: u64,
    negative_delays: u64,
    /// u64::MAX while nothing was counted.
    first_recv_ns: u64,
    last_recv_ns: u64,
}

impl Default for ArrivalCounts {
    fn default() -> Self {
        Self {
            received: 0,
            received_bytes: 0,
            late: 0,
            stale: 0,
            duplicates: 0,
            negative_delays: 0,
            first_recv_ns: u64::MAX,
            last_recv_ns: 0,
        }
    }
}

/// Everything countable about a stretch of datagrams (an interval, or several merged). Losses
/// are kept apart (the window's run tally and `RowLosses`); `loss` is only filled in to build
/// a summary.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    arrivals: ArrivalCounts,
    loss: LossTally,
    reorder: ReorderTally,
}

impl Tally {
    fn merge(&mut self, other: &Tally) {
        let (a, b) = (&mut self.arrivals, &other.arrivals);
        a.received += b.received;
        a.received_bytes += b.received_bytes;
        a.late += b.late;
        a.stale += b.stale;
        a.duplicates += b.duplicates;
        a.negative_delays += b.negative_delays;
        a.first_recv_ns = a.first_recv_ns.min(b.first_recv_ns);
        a.last_recv_ns = a.last_recv_ns.max(b.last_recv_ns);
        self.loss.lost += other.loss.lost;
        self.loss.periods += other.loss.periods;
        self.loss.period_max = self.loss.period_max.max(other.loss.period_max);
        self.reorder.merge(&other.reorder);
    }
}

/// What `finish` established.
#[derive(Debug, Clone, Copy)]
struct Finished {
    total_sent: u64,
    outcome: FinishOutcome,
}

/// The receiver's accounting for one test.
pub struct ReceiverStats {
    cfg: StatsConfig,
    window: DuplicateWindow,
    reorder: ReorderTracker,
    delay: DelayTracker,
    /// Sequences >= this are not counted (SEQ_LIMIT before `finish`, total_sent after).
    seq_limit: u64,
    out_of_range: u64,
    interval: ArrivalCounts,
    /// One-way delay, signed (a receiver clock behind the sender's gives negative values).
    interval_latency: SignedHistogram,
    interval_ipdv: SignedHistogram,
    /// Losses per interval row by send time, and which rows are final.
    rows: RowLosses,
    /// Closed rows waiting for their losses to be final (arrival figures, losses still 0),
    /// as many as `rows` holds pending.
    pending_rows: VecDeque<ReceiverStatsSummary>,
    /// Sum of the closed intervals' arrivals.
    closed: Tally,
    closed_latency: SignedHistogram,
    closed_ipdv: SignedHistogram,
    finished: Option<Finished>,
    /// Implausible sequences in the open interval and in the closed ones (kept apart from the
    /// hot path's counters, which fill exactly one cache line).
    implausible_interval: u64,
    implausible_closed: u64,
}

impl ReceiverStats {
    pub fn new(cfg: StatsConfig) -> Self {
        let mut cfg = cfg;
        cfg.window_bits = cfg.window_bits.max(64).next_power_of_two();
        Self {
            window: DuplicateWindow::new(cfg.window_bits, cfg.record_loss_ranges),
            reorder: ReorderTracker::new(),
            delay: DelayTracker::new(),
            seq_limit: SEQ_LIMIT,
            out_of_range: 0,
            interval: ArrivalCounts::default(),
            interval_latency: SignedHistogram::new(),
            interval_ipdv: SignedHistogram::new(),
            rows: RowLosses::new(),
            pending_rows: VecDeque::new(),
            closed: Tally::default(),
            closed_latency: SignedHistogram::new(),
            closed_ipdv: SignedHistogram::new(),
            finished: None,
            implausible_interval: 0,
            implausible_closed: 0,
            cfg,
        }
    }

    /// The configuration in effect (window rounded to a power of two).
    pub fn config(&self) -> &StatsConfig {
        &self.cfg
    }

    /// Accounts one datagram: sequence, sender timestamp and receive timestamp (both wall
    /// clock, ns since the epoch: they give the one-way delay and nothing else), the monotonic
    /// time `now_ns` (ns from any fixed origin; one reading per received batch is enough), and
    /// the payload bytes.
    ///
    /// `now_ns` is the clock of `on_tick`, `close_interval` and `finish`: it stamps when
    /// sequences were overtaken, so Tmax is timed on it. A step of the wall clock (NTP, a
    /// manual change) moves one-way delays but never declares a loss early or late.
    /// A sequence >= SEQ_LIMIT (or >= total_sent after `finish`) is counted only in
    /// `out_of_range()` and reported as `Stale`.
    #[inline]
    pub fn on_datagram(
        &mut self,
        seq: u64,
        send_ns: u64,
        recv_ns: u64,
        now_ns: u64,
        bytes: usize,
    ) -> Arrival {
        if seq >= self.seq_limit {
            self.out_of_range += 1;
            return Arrival::Stale;
        }
        match self.window.classify(seq, send_ns, now_ns, &mut self.rows) {
            Verdict::InOrder => {
                self.reorder.on_in_order(seq);
                self.count_unique(seq, send_ns, recv_ns, now_ns, bytes);
                Arrival::Unique { reordered: false }
            }
            Verdict::Reordered => {
                self.reorder.on_reordered(seq);
                self.count_unique(seq, send_ns, recv_ns, now_ns, bytes);
                Arrival::Unique { reordered: true }
            }
            Verdict::Duplicate => {
                self.interval.duplicates += 1;
                Arrival::Duplicate
            }
            Verdict::Late => {
                self.interval.late += 1;
                Arrival::Late
            }
            Verdict::Stale => {
                self.interval.stale += 1;
                Arrival::Stale
            }
        }
    }

    /// Counts a datagram whose sequence is implausibly far ahead of what its sender can have sent
    /// by now (the session's check). It is counted here only: it never moves the window, so a
    /// forged far-ahead sequence cannot turn the genuine ones into `stale` or `lost`.
    pub fn on_implausible(&mut self) {
        self.implausible_interval += 1;
    }

    #[inline(always)]
    fn count_unique(&mut self, seq: u64, send_ns: u64, recv_ns: u64, now_ns: u64, bytes: usize) {
        let c = &mut self.interval;
        c.received += 1;
        c.received_bytes += bytes as u64;
        c.first_recv_ns = c.first_recv_ns.min(recv_ns);
        c.last_recv_ns = c.last_recv_ns.max(recv_ns);
        // Two's complement: a receive clock behind the sender's gives a negative delay.
        let transit = recv_ns.wrapping_sub(send_ns) as i64;
        c.negative_delays += (transit < 0) as u64;
        self.interval_latency.record(transit);
        self.rows.on_arrival(send_ns, now_ns);
        self.delay.on_unique(seq, transit, &mut self.interval_ipdv);
    }

    /// Declares lost every missing sequence that has been overtaken (a higher sequence
    /// received) for at least Tmax, `now_ns` being the monotonic clock of `on_datagram`.
    /// Cheap when nothing is due: call it as often as convenient.
    /// Sequences in the 64-sequence word holding the highest one seen wait for `finish`.
    pub fn on_tick(&mut self, now_ns: u64) {
        if self.finished.is_none() {
            self.window
                .on_tick(now_ns, self.cfg.loss_horizon_ns, &mut self.rows);
        }
    }

    /// Closes the open interval row at monotonic `now_ns`, after declaring due losses. Its
    /// arrival figures are fixed now (counters are deltas; jitter is the current RFC 3550
    /// estimate); its losses are those sent in it, final once `poll_interval` returns it.
    pub fn close_interval(&mut self, now_ns: u64) {
        self.on_tick(now_ns);
        let tally = Tally {
            arrivals: std::mem::take(&mut self.interval),
            loss: LossTally::default(),
            reorder: self.reorder.take_tally(),
        };
        let mut row = self.build_summary(&tally, &self.interval_latency, &self.interval_ipdv, 0);
        row.implausible = std::mem::take(&mut self.implausible_interval);
        self.implausible_closed += row.implausible;
        self.pending_rows.push_back(row);
        self.rows.close_row(now_ns);
        self.closed.merge(&tally);
        self.closed_latency.add(&self.interval_latency);
        self.closed_ipdv.add(&self.interval_ipdv);
        self.interval_latency.reset();
        self.interval_ipdv.reset();
    }

    /// The open interval's one-way latency as an `hdrhistogram::Histogram` (what
    /// `close_interval` is about to close; negative delays count as 0).
    pub fn interval_latency_hdr(&self) -> hdrhistogram::Histogram<u64> {
        self.interval_latency.to_non_negative_hdrhistogram()
    }

    /// The oldest closed interval row whose figures are final, in order: every datagram sent
    /// in it has been received or declared lost (always, after `finish`). Its `lost`,
    /// `loss_periods` and `loss_period_max` count the datagrams *sent* in it (a loss period in
    /// the row where it starts); the rows add up to the run's totals.
    pub fn poll_interval(&mut self) -> Option<ReceiverStatsSummary> {
        let loss = self.rows.pop_final(self.finished.is_some())?;
        let mut row = self.pending_rows.pop_front()?;
        row.lost = loss.lost;
        row.loss_periods = loss.periods;
        row.loss_period_max = loss.period_max;
        Some(row)
    }

    /// End of test: the sender sent sequences `0..total_sent`. Declares every missing one lost
    /// (tail losses included; the caller has already waited Tmax, so nothing waits for time).
    /// Later arrivals with a sequence >= total_sent are counted in `out_of_range()` only.
    ///
    /// Sequences >= total_sent that arrived *before* this call (a misbehaving sender) were
    /// counted as received then; the run summary removes them again from `received` (and counts
    /// them in `out_of_range`). Interval rows keep them. Should such a bogus
    /// sequence have been more than a whole window above total_sent, losses beyond total_sent
    /// had already been declared; the run summary then reports lost = expected - received.
    /// Calling `finish` again has no effect. A total above SEQ_LIMIT is taken as SEQ_LIMIT.
    pub fn finish(&mut self, total_sent: u64, now_ns: u64) {
        if self.finished.is_some() {
            return;
        }
        let total_sent = total_sent.min(SEQ_LIMIT);
        let outcome = self.window.finish(total_sent, now_ns, &mut self.rows);
        self.out_of_range += outcome.excess_received;
        self.seq_limit = total_sent;
        self.finished = Some(Finished {
            total_sent,
            outcome,
        });
    }

    /// The whole run so far, open interval included. `expected` is total_sent after `finish`,
    /// else 0.
    pub fn summary(&self) -> ReceiverStatsSummary {
        let mut tally = self.closed;
        tally.merge(&Tally {
            arrivals: self.interval,
            loss: self.window.tally(),
            reorder: *self.reorder.tally(),
        });
        let mut latency = self.closed_latency.clone();
        latency.add(&self.interval_latency);
        let mut ipdv = self.closed_ipdv.clone();
        ipdv.add(&self.interval_ipdv);
        let mut expected = 0;
        if let Some(f) = self.finished {
            expected = f.total_sent;
            let received = tally
                .arrivals
                .received
                .saturating_sub(f.outcome.excess_received)
                .min(f.total_sent);
            tally.arrivals.received = received;
            if f.outcome.finalized_beyond_total {
                tally.loss.lost = f.total_sent - received;
            }
            debug_assert_eq!(tally.loss.lost + received, f.total_sent);
        }
        let mut summary = self.build_summary(&tally, &latency, &ipdv, expected);
        summary.implausible = self.implausible_closed + self.implausible_interval;
        summary.latency_percentiles = latency.percentile_points();
        summary
    }

    fn build_summary(
        &self,
        tally: &Tally,
        latency: &SignedHistogram,
        ipdv: &SignedHistogram,
        expected: u64,
    ) -> ReceiverStatsSummary {
        let a = &tally.arrivals;
        let latency = latency.latency_summary();
        let counted = a.received > 0;
        ReceiverStatsSummary {
            expected,
            received: a.received,
            received_bytes: a.received_bytes,
            lost: tally.loss.lost,
            late: a.late,
            stale: a.stale,
            duplicates: a.duplicates,
            implausible: 0,
            reordered: tally.reorder.reordered,
            reorder_extent_max: tally.reorder.extent_max,
            reorder_extent: tally.reorder.buckets(),
            n_reordered: tally.reorder.n_reordered,
            loss_periods: tally.loss.periods,
            loss_period_max: tally.loss.period_max,
            jitter_ns: self.delay.jitter_ns(),
            ipdv: ipdv.summary(),
            ipdv_abs: ipdv.abs_summary(),
            pdv: latency.as_ref().map(pdv_from_latency),
            latency,
            negative_delays: a.negative_delays,
            first_recv_ns: counted.then_some(a.first_recv_ns),
            last_recv_ns: counted.then_some(a.last_recv_ns),
            latency_percentiles: Vec::new(),
        }
    }

    /// Lost sequence ranges declared since the last drain, in order, adjacent runs merged
    /// (empty unless `record_loss_ranges`). The declared part of a loss period still open is
    /// included; its continuation comes with a later drain. Undrained ranges accumulate.
    pub fn drain_loss_ranges(&mut self) -> Vec<RangeInclusive<u64>> {
        self.window.drain_ranges()
    }

    /// One past the highest sequence seen: what the sender must have sent at least. Used as the
    /// total when a test ends without the sender's count (interrupted, or the peer went silent).
    pub fn seen_end(&self) -> u64 {
        self.window.head()
    }

    /// Datagrams with a sequence the sender never sent (>= total_sent), as far as known.
    pub fn out_of_range(&self) -> u64 {
        self.out_of_range
    }

    /// Reordered datagrams whose extent was reported as a lower bound because the earliest
    /// larger sequence was older than the record-high ring reaches (65536 runs back).
    pub fn reorder_extent_capped(&self) -> u64 {
        self.reorder.capped()
    }

    /// Bytes a `ReceiverStats` with a window of `window_bits` sequences holds (the window
    /// rounded as `new` rounds it): 32 bytes per 64 sequences of window (bitmap, overtaken stamp,
    /// lowest and highest send time) plus the fixed rings and histograms, whatever the window.
    /// What a receiver's memory budget counts per test; equal to `capacity_bytes`.
    pub fn memory_for(window_bits: usize) -> usize {
        static FIXED: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let fixed = *FIXED.get_or_init(|| {
            let probe = ReceiverStats::new(StatsConfig {
                window_bits: 64,
                ..StatsConfig::default()
            });
            probe.capacity_bytes() - probe.window.capacity_bytes()
        });
        let bits = window_bits.clamp(64, 1 << 40).next_power_of_two();
        bits / 64 * 32 + fixed
    }

    /// Bytes of the fixed-size structures (window, rings, histograms); constant for the
    /// lifetime of the value.
    pub fn capacity_bytes(&self) -> usize {
        self.window.capacity_bytes()
            + self.reorder.capacity_bytes()
            + self.delay.capacity_bytes()
            + self.interval_latency.capacity_bytes()
            + self.closed_latency.capacity_bytes()
            + self.interval_ipdv.capacity_bytes()
            + self.closed_ipdv.capacity_bytes()
    }
}

#[cfg(test)]
mod tests;
