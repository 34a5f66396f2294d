//! Latency and signed-delay histograms in HdrHistogram's layout (3 significant digits,
//! 1 ns .. 100 s), recorded with a branch-free inline counter increment and summarised through
//! `hdrhistogram::Histogram`.
//!
//! Why not `Histogram::saturating_record` directly: on the receiver's hot path it is an
//! out-of-line call that also maintains min/max/total, and measured at ~15 ns per value, half
//! the per-datagram budget. The counts array here has exactly HdrHistogram's bucket layout
//! (same index for every value, checked in the tests), so converting it into an
//! `hdrhistogram::Histogram` for percentiles is exact.
//!
//! The minimum and maximum are tracked exactly beside the counts (two compare-and-moves per
//! value): a bucket edge is up to 0.1 % off (14.999552 ms for a 15.000001 ms minimum), which
//! is wrong for a figure users read as a bound. Percentiles are HdrHistogram's (top of the
//! bucket), clamped into the exact [min, max].

use hdrhistogram::Histogram;

use crate::summary::{
    LatencySummary, PercentilePoint, SignedLatencySummary, SignedSummary, percentile_ladder,
};

/// Highest recordable value: 100 s in nanoseconds. Larger values are clamped to it.
pub const HISTOGRAM_MAX_NS: u64 = 100_000_000_000;
/// HdrHistogram precision: 3 significant digits (0.1 % relative error above 2048 ns).
const SIGNIFICANT_DIGITS: u8 = 3;

/// HdrHistogram's layout for lowest discernible value 1 and 3 significant digits: unit
/// magnitude 0, 2048 sub-buckets (single-unit resolution up to 2 x 10^3), half of them used in
/// every bucket after the first.
mod layout {
    pub(super) const SUB_BUCKET_COUNT_MAGNITUDE: u32 = 11;
    pub(super) const SUB_BUCKET_HALF_COUNT_MAGNITUDE: u32 = SUB_BUCKET_COUNT_MAGNITUDE - 1;
    pub(super) const SUB_BUCKET_HALF_COUNT: u64 = 1 << SUB_BUCKET_HALF_COUNT_MAGNITUDE;
    pub(super) const SUB_BUCKET_MASK: u64 = (1 << SUB_BUCKET_COUNT_MAGNITUDE) - 1;
    pub(super) const LEADING_ZERO_COUNT_BASE: u32 = 64 - SUB_BUCKET_COUNT_MAGNITUDE;

    /// Counts-array length covering HISTOGRAM_MAX_NS (HdrHistogram's `buckets_to_cover` and
    /// `num_bins`).
    pub(super) const LEN: usize = {
        let mut buckets = 1u64;
        let mut smallest_untrackable = 1u64 << SUB_BUCKET_COUNT_MAGNITUDE;
        while smallest_untrackable <= super::HISTOGRAM_MAX_NS {
            smallest_untrackable <<= 1;
            buckets += 1;
        }
        ((buckets + 1) * SUB_BUCKET_HALF_COUNT) as usize
    };

    /// Counts index of a value <= HISTOGRAM_MAX_NS (HdrHistogram's `index_for`).
    #[inline(always)]
    pub(super) fn index_of(value: u64) -> usize {
        let bucket = LEADING_ZERO_COUNT_BASE - (value | SUB_BUCKET_MASK).leading_zeros();
        let sub_bucket = value >> bucket;
        (((bucket as u64 + 1) << SUB_BUCKET_HALF_COUNT_MAGNITUDE) + sub_bucket
            - SUB_BUCKET_HALF_COUNT) as usize
    }

    /// Lowest value of a counts index (HdrHistogram's `value_for`).
    pub(super) fn lowest_value_of(index: usize) -> u64 {
        let index = index as u64;
        let bucket = (index >> SUB_BUCKET_HALF_COUNT_MAGNITUDE) as i64 - 1;
        let sub_bucket = (index & (SUB_BUCKET_HALF_COUNT - 1)) + SUB_BUCKET_HALF_COUNT;
        if bucket < 0 {
            sub_bucket - SUB_BUCKET_HALF_COUNT
        } else {
            sub_bucket << bucket
        }
    }
}

fn empty_hdr() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// An HdrHistogram holding exactly the given counts (same layout).
fn hdr_from_counts(counts: &[u64]) -> Histogram<u64> {
    let mut hist = empty_hdr();
    for (index, &count) in counts.iter().enumerate() {
        if count > 0 {
            hist.saturating_record_n(layout::lowest_value_of(index), count);
        }
    }
    hist
}

fn latency_summary_of(h: &Histogram<u64>) -> Option<LatencySummary> {
    if h.is_empty() {
        return None;
    }
    Some(LatencySummary {
        count: h.len(),
        min_ns: h.min(),
        mean_ns: h.mean(),
        p50_ns: h.value_at_quantile(0.50),
        p90_ns: h.value_at_quantile(0.90),
        p99_ns: h.value_at_quantile(0.99),
        p999_ns: h.value_at_quantile(0.999),
        max_ns: h.max(),
    })
}

/// Puts the exact extremes into a bucket-based summary and keeps every other figure within
/// them (a bucket's top can lie above the largest value recorded in it).
fn with_exact_bounds(s: LatencySummary, min_ns: u64, max_ns: u64) -> LatencySummary {
    let clamp = |v: u64| v.clamp(min_ns, max_ns);
    LatencySummary {
        count: s.count,
        min_ns,
        mean_ns: s.mean_ns.clamp(min_ns as f64, max_ns as f64),
        p50_ns: clamp(s.p50_ns),
        p90_ns: clamp(s.p90_ns),
        p99_ns: clamp(s.p99_ns),
        p999_ns: clamp(s.p999_ns),
        max_ns,
    }
}

/// Value of the `rank`-th smallest recorded sample (1-based), at the top of its equivalence
/// range, like `value_at_quantile`.
fn value_at_rank(h: &Histogram<u64>, rank: u64) -> u64 {
    let mut seen = 0u64;
    for v in h.iter_recorded() {
        seen += v.count_at_value();
        if seen >= rank {
            return v.value_iterated_to();
        }
    }
    h.max()
}

/// Unsigned nanosecond distribution (one-way latency, RTT, schedule lateness, |IPDV|).
///
/// Values are clamped into 0 ..= 100 s so recording never fails.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Box<[u64]>,
    total: u64,
    /// Exact smallest and largest (clamped) value recorded; u64::MAX and 0 while empty.
    min: u64,
    max: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// Bytes one histogram holds, whatever it records (memory budgets count it).
    pub const CAPACITY_BYTES: usize = layout::LEN * std::mem::size_of::<u64>();

    pub fn new() -> Self {
        Self {
            counts: vec![0u64; layout::LEN].into_boxed_slice(),
            total: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Records one value (ns), clamped to 100 s.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let ns = ns.min(HISTOGRAM_MAX_NS);
        self.counts[layout::index_of(ns)] += 1;
        self.total += 1;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    /// Adds every value of `other` into `self`.
    pub fn add(&mut self, other: &LatencyHistogram) {
        if other.total == 0 {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn reset(&mut self) {
        if self.total > 0 {
            self.counts.fill(0);
            self.total = 0;
            self.min = u64::MAX;
            self.max = 0;
        }
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// count, min, mean, p50, p90, p99, p99.9, max (min and max exact); None when nothing was
    /// recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.is_empty() {
            return None;
        }
        latency_summary_of(&self.to_hdrhistogram())
            .map(|s| with_exact_bounds(s, self.min, self.max))
    }

    /// The same distribution as an `hdrhistogram::Histogram` (for other percentiles, or
    /// serialization).
    pub fn to_hdrhistogram(&self) -> Histogram<u64> {
        hdr_from_counts(&self.counts)
    }
}

/// RFC 5481 PDV from a one-way delay summary: every figure minus the (exact) minimum delay, so
/// PDV min is 0 and PDV max is max D - min D exactly, whatever the clock offset.
pub fn pdv_from_latency(latency: &SignedLatencySummary) -> LatencySummary {
    let min = latency.min_ns;
    let above_min = |v: i64| v.saturating_sub(min).max(0) as u64;
    LatencySummary {
        count: latency.count,
        min_ns: 0,
        mean_ns: (latency.mean_ns - min as f64).max(0.0),
        p50_ns: above_min(latency.p50_ns),
        p90_ns: above_min(latency.p90_ns),
        p99_ns: above_min(latency.p99_ns),
        p999_ns: above_min(latency.p999_ns),
        max_ns: above_min(latency.max_ns),
    }
}

/// Signed nanosecond distribution (RFC 3393 IPDV): counts for values >= 0 followed by counts
/// for the magnitudes of negative values (one array, so recording does not branch on the sign),
/// combined by rank for percentiles.
#[derive(Debug, Clone)]
pub struct SignedHistogram {
    /// `[0, LEN)`: values >= 0; `[LEN, 2 LEN)`: magnitudes of negative values.
    counts: Box<[u64]>,
    total: u64,
    /// Exact smallest and largest (clamped) value recorded; i64::MAX and i64::MIN while empty.
    min: i64,
    max: i64,
}

impl Default for SignedHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl SignedHistogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0u64; 2 * layout::LEN].into_boxed_slice(),
            total: 0,
            min: i64::MAX,
            max: i64::MIN,
        }
    }

    /// Records one value (ns); magnitudes are clamped to 100 s.
    #[inline]
    pub fn record(&mut self, value: i64) {
        const MAX: i64 = HISTOGRAM_MAX_NS as i64;
        let value = value.clamp(-MAX, MAX);
        let half = (value < 0) as usize * layout::LEN;
        self.counts[half + layout::index_of(value.unsigned_abs())] += 1;
        self.total += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    pub fn add(&mut self, other: &SignedHistogram) {
        if other.total == 0 {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn reset(&mut self) {
        if self.total > 0 {
            self.counts.fill(0);
            self.total = 0;
            self.min = i64::MAX;
            self.max = i64::MIN;
        }
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The latency ladder (count, min, mean, p50, p90, p99, p99.9, max) of signed values (one-way
    /// delay); min and max exact, the rest within them. None when nothing was recorded.
    pub fn latency_summary(&self) -> Option<SignedLatencySummary> {
        if self.is_empty() {
            return None;
        }
        let (non_negative, negative) = self.split_hdr();
        let at_quantile = self.quantile_fn(&non_negative, &negative);
        let sum = non_negative.mean() * non_negative.len() as f64
            - negative.mean() * negative.len() as f64;
        let clamp = |v: i64| v.clamp(self.min, self.max);
        Some(SignedLatencySummary {
            count: self.total,
            min_ns: self.min,
            mean_ns: (sum / self.total as f64).clamp(self.min as f64, self.max as f64),
            p50_ns: clamp(at_quantile(0.50)),
            p90_ns: clamp(at_quantile(0.90)),
            p99_ns: clamp(at_quantile(0.99)),
            p999_ns: clamp(at_quantile(0.999)),
            max_ns: self.max,
        })
    }

    /// Quantiles by HdrHistogram's rank rule (rank = max(1, ceil(q * count))). Sorted ascending,
    /// the negative values come first in decreasing magnitude, so rank r <= #negatives is the
    /// (#negatives - r + 1)-th smallest magnitude, negated.
    fn quantile_fn<'a>(
        &self,
        non_negative: &'a Histogram<u64>,
        negative: &'a Histogram<u64>,
    ) -> impl Fn(f64) -> i64 + 'a {
        let negatives = negative.len();
        let total = self.total;
        move |q: f64| {
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            if rank <= negatives {
                -(value_at_rank(negative, negatives - rank + 1) as i64)
            } else {
                value_at_rank(non_negative, rank - negatives) as i64
            }
        }
    }

    /// The distribution at each percentile of `percentile_ladder()` the sample resolves
    /// (1 − p ≥ 1 / count), then 100 % at the exact maximum: a percentile plot's points.
    /// Empty when nothing was recorded.
    pub fn percentile_points(&self) -> Vec<PercentilePoint> {
        if self.is_empty() {
            return Vec::new();
        }
        let (non_negative, negative) = self.split_hdr();
        let at_quantile = self.quantile_fn(&non_negative, &negative);
        // The tolerance keeps 99.9 % (computed as 100 · (1 − 10^−3)) in for 1000 samples.
        let resolved = |p: &f64| (100.0 - p) / 100.0 * self.total as f64 >= 1.0 - 1e-9;
        let mut points: Vec<PercentilePoint> = percentile_ladder()
            .take_while(resolved)
            .map(|percentile| PercentilePoint {
                percentile,
                value_ns: if percentile == 0.0 {
                    self.min
                } else {
                    at_quantile(percentile / 100.0).clamp(self.min, self.max)
                },
            })
            .collect();
        points.push(PercentilePoint {
            percentile: 100.0,
            value_ns: self.max,
        });
        points
    }

    /// The recorded values as one `hdrhistogram::Histogram` (HdrHistogram's tools take no
    /// negative values): a negative one-way delay, from clocks out of sync, counts as 0, so the
    /// count stays the run's.
    pub fn to_non_negative_hdrhistogram(&self) -> Histogram<u64> {
        let (mut hist, negative) = self.split_hdr();
        if !negative.is_empty() {
            hist.saturating_record_n(0, negative.len());
        }
        hist
    }

    /// (values >= 0, magnitudes of negative values) as HdrHistograms.
    fn split_hdr(&self) -> (Histogram<u64>, Histogram<u64>) {
        let (non_negative, negative) = self.counts.split_at(layout::LEN);
        (hdr_from_counts(non_negative), hdr_from_counts(negative))
    }

    /// count, min, p1, p50, p99, max (min and max exact); None when nothing was recorded.
    pub fn summary(&self) -> Option<SignedSummary> {
        if self.is_empty() {
            return None;
        }
        let (non_negative, negative) = self.split_hdr();
        let at_quantile = self.quantile_fn(&non_negative, &negative);
        let total = self.total;
        let clamp = |v: i64| v.clamp(self.min, self.max);
        Some(SignedSummary {
            count: total,
            min_ns: self.min,
            p01_ns: clamp(at_quantile(0.01)),
            p50_ns: clamp(at_quantile(0.50)),
            p99_ns: clamp(at_quantile(0.99)),
            max_ns: self.max,
        })
    }

    /// Summary of the magnitudes |value|. The maximum is exact; so is the minimum unless
    /// values of both signs were recorded (then it is the bucket edge of the smallest).
    pub fn abs_summary(&self) -> Option<LatencySummary> {
        if self.is_empty() {
            return None;
        }
        let (mut magnitudes, negative) = self.split_hdr();
        magnitudes
            .add(&negative)
            .expect("histograms with identical bounds always add");
        let s = latency_summary_of(&magnitudes)?;
        let max = self.min.unsigned_abs().max(self.max.unsigned_abs());
        let min = if self.min >= 0 {
            self.min.unsigned_abs()
        } else if self.max <= 0 {
            self.max.unsigned_abs()
        } else {
            s.min_ns.min(max)
        };
        Some(with_exact_bounds(s, min, max))
    }

    pub(crate) fn capacity_bytes(&self) -> usize {
        self.counts.len() * std::mem::size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Sorted-vector reference with the same rank rule as HdrHistogram.
    fn reference_quantile(sorted: &[i64], q: f64) -> i64 {
        let n = sorted.len() as u64;
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        sorted[(rank - 1) as usize]
    }

    /// HdrHistogram with 3 significant digits reports a value within 1/1024 of the truth
    /// (exact below 2048).
    fn assert_close(got: i64, want: i64, what: &str) {
        let tolerance = want.unsigned_abs() / 1024;
        assert!(
            got.abs_diff(want) <= tolerance,
            "{what}: got {got}, want {want} (±{tolerance})"
        );
    }

    #[test]
    fn percentile_points_follow_the_ladder_up_to_what_the_sample_resolves() {
        let mut h = SignedHistogram::new();
        // 1..=1000 µs: the value at p is p·1000 µs (within HdrHistogram's 0.1 %).
        for us in 1..=1000i64 {
            h.record(us * 1000);
        }
        let points = h.percentile_points();
        // 1000 samples resolve 1 − p ≥ 0.001: k = 0..=15 of the ladder (0 % .. 99.9 %), then max.
        assert_eq!(points.len(), 17);
        assert_eq!(points[0].percentile, 0.0);
        assert_eq!(points[0].value_ns, 1000, "0 % is the exact minimum");
        assert!((points[5].percentile - 90.0).abs() < 1e-9);
        assert!(
            (points[5].value_ns - 900_000).abs() <= 900,
            "{:?}",
            points[5]
        );
        assert!((points[10].percentile - 99.0).abs() < 1e-9);
        assert!(
            (points[10].value_ns - 990_000).abs() <= 990,
            "{:?}",
            points[10]
        );
        assert!((points[15].percentile - 99.9).abs() < 1e-9);
        assert_eq!(points[16].percentile, 100.0);
        assert_eq!(points[16].value_ns, 1_000_000, "100 % is the exact maximum");
        assert!(points.windows(2).all(|w| w[0].percentile < w[1].percentile));
        assert!(points.windows(2).all(|w| w[0].value_ns <= w[1].value_ns));
        assert!(SignedHistogram::new().percentile_points().is_empty());
    }

    #[test]
    fn negative_delays_count_as_zero_in_the_exported_histogram() {
        let mut h = SignedHistogram::new();
        for v in [-5_000, -1, 0, 7, 1_000_000] {
            h.record(v);
        }
        let hdr = h.to_non_negative_hdrhistogram();
        assert_eq!(hdr.len(), 5);
        assert_eq!(hdr.count_at(0), 3);
        assert_eq!(hdr.count_at(7), 1);
        assert!(hdr.max() >= 1_000_000 && hdr.max() <= 1_001_000);
    }
    #[test]
    fn layout_matches_hdrhistogram() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut ours = LatencyHistogram::new();
        let mut theirs = empty_hdr();
        assert_eq!(layout::LEN, theirs.distinct_values());
        let edges = [
            0u64,
            1,
            2047,
            2048,
            2049,
            4095,
            4096,
            1 << 20,
            HISTOGRAM_MAX_NS - 1,
        ];
        let random = (0..20_000).map(|k| {
            let bits = rng.random_range(0..37u32);
            (rng.random::<u64>() >> (64 - bits.max(1))) + k % 3
        });
        for v in edges.into_iter().chain(random) {
            let v = v.min(HISTOGRAM_MAX_NS);
            ours.record(v);
            theirs.record(v).expect("in range");
            assert_eq!(
                layout::lowest_value_of(layout::index_of(v)),
                theirs.lowest_equivalent(v),
                "value {v}"
            );
        }
        assert!(ours.to_hdrhistogram() == theirs);
        // Same percentiles; the extremes are the exact values (0 and HISTOGRAM_MAX_NS - 1 among
        // the edges above), not HdrHistogram's bucket edges.
        let exact =
            latency_summary_of(&theirs).map(|s| with_exact_bounds(s, 0, HISTOGRAM_MAX_NS - 1));
        assert_eq!(ours.summary(), exact);
        // Clamping: above 100 s counts as 100 s.
        ours.record(u64::MAX);
        theirs.record(HISTOGRAM_MAX_NS).expect("in range");
        assert!(ours.to_hdrhistogram() == theirs);
    }

    #[test]
    fn latency_summary_matches_sorted_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut h = LatencyHistogram::new();
        let mut values: Vec<i64> = (0..10_000)
            .map(|_| rng.random_range(0..5_000_000i64))
            .collect();
        for &v in &values {
            h.record(v as u64);
        }
        values.sort_unstable();
        let s = h.summary().expect("non-empty");
        assert_eq!(s.count, values.len() as u64);
        assert_close(s.min_ns as i64, values[0], "min");
        assert_close(s.max_ns as i64, *values.last().unwrap(), "max");
        assert_close(s.p50_ns as i64, reference_quantile(&values, 0.5), "p50");
        assert_close(s.p90_ns as i64, reference_quantile(&values, 0.9), "p90");
        assert_close(s.p99_ns as i64, reference_quantile(&values, 0.99), "p99");
        assert_close(s.p999_ns as i64, reference_quantile(&values, 0.999), "p999");
        let mean = values.iter().sum::<i64>() as f64 / values.len() as f64;
        assert!((s.mean_ns - mean).abs() <= mean / 1000.0);
    }

    #[test]
    fn latency_values_are_clamped_not_dropped() {
        let mut h = LatencyHistogram::new();
        h.record(0);
        h.record(u64::MAX);
        let s = h.summary().expect("non-empty");
        assert_eq!(s.count, 2);
        assert_eq!(s.min_ns, 0);
        assert!(s.max_ns >= HISTOGRAM_MAX_NS && s.max_ns <= HISTOGRAM_MAX_NS / 1000 * 1001);
        assert!(LatencyHistogram::new().summary().is_none());
    }

    #[test]
    fn min_and_max_are_exact_not_bucket_edges() {
        // Uniform 15..25 ms, as `--impair delay=20ms,jitter=5ms` gives: bucket edges there are
        // 8192 ns apart, so an edge-based minimum reads 14.999552 ms.
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        let values: Vec<u64> = (0..3000)
            .map(|_| rng.random_range(15_000_001..25_000_000u64))
            .collect();
        let (lo, hi) = (*values.iter().min().unwrap(), *values.iter().max().unwrap());
        let mut h = LatencyHistogram::new();
        let mut signed = SignedHistogram::new();
        for &v in &values {
            h.record(v);
            signed.record(v as i64);
            signed.record(-(v as i64));
        }
        let s = h.summary().expect("non-empty");
        assert_eq!((s.min_ns, s.max_ns), (lo, hi));
        assert!(s.min_ns <= s.p50_ns && s.p999_ns <= s.max_ns);
        assert!(s.mean_ns >= lo as f64 && s.mean_ns <= hi as f64);
        let s = signed.summary().expect("non-empty");
        assert_eq!((s.min_ns, s.max_ns), (-(hi as i64), hi as i64));
        let a = signed.abs_summary().expect("non-empty");
        assert_eq!(a.max_ns, hi);

        // One repeated value: every figure is that value, none a bucket edge around it.
        let mut h = LatencyHistogram::new();
        let mut n = SignedHistogram::new();
        for _ in 0..3 {
            h.record(15_000_001);
            n.record(-15_000_001);
        }
        let s = h.summary().expect("non-empty");
        assert_eq!(
            [s.min_ns, s.p50_ns, s.p99_ns, s.p999_ns, s.max_ns],
            [15_000_001; 5]
        );
        assert_eq!(s.mean_ns, 15_000_001.0);
        let s = n.summary().expect("non-empty");
        assert_eq!([s.min_ns, s.p01_ns, s.p99_ns, s.max_ns], [-15_000_001; 4]);
        let a = n.abs_summary().expect("non-empty");
        assert_eq!((a.min_ns, a.max_ns), (15_000_001, 15_000_001));

        // Merging and resetting keep the extremes right.
        let mut merged = LatencyHistogram::new();
        merged.add(&h);
        let mut other = LatencyHistogram::new();
        other.record(7);
        merged.add(&other);
        let s = merged.summary().expect("non-empty");
        assert_eq!((s.min_ns, s.max_ns), (7, 15_000_001));
        merged.reset();
        merged.record(9);
        let s = merged.summary().expect("non-empty");
        assert_eq!((s.min_ns, s.max_ns), (9, 9));
    }

    #[test]
    fn signed_percentiles_match_sorted_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        // Several shapes: mixed signs, all negative, all non-negative, small exact values.
        let shapes: [(i64, i64, usize); 4] = [
            (-3_000_000, 2_000_000, 5001),
            (-900_000, -1, 777),
            (0, 700_000, 1234),
            (-1500, 1500, 999),
        ];
        for (lo, hi, n) in shapes {
            let mut h = SignedHistogram::new();
            let mut values: Vec<i64> = (0..n).map(|_| rng.random_range(lo..=hi)).collect();
            for &v in &values {
                h.record(v);
            }
            values.sort_unstable();
            let s = h.summary().expect("non-empty");
            assert_eq!(s.count, n as u64);
            assert_close(s.min_ns, values[0], "min");
            assert_close(s.max_ns, values[n - 1], "max");
            assert_close(s.p01_ns, reference_quantile(&values, 0.01), "p01");
            assert_close(s.p50_ns, reference_quantile(&values, 0.5), "p50");
            assert_close(s.p99_ns, reference_quantile(&values, 0.99), "p99");
            assert!(s.min_ns <= s.p01_ns && s.p01_ns <= s.p50_ns);
            assert!(s.p50_ns <= s.p99_ns && s.p99_ns <= s.max_ns);

            let mut magnitudes: Vec<i64> = values.iter().map(|v| v.abs()).collect();
            magnitudes.sort_unstable();
            let a = h.abs_summary().expect("non-empty");
            assert_eq!(a.count, n as u64);
            assert_close(
                a.p50_ns as i64,
                reference_quantile(&magnitudes, 0.5),
                "|p50|",
            );
            assert_close(a.max_ns as i64, magnitudes[n - 1], "|max|");
        }
    }

    #[test]
    fn signed_histograms_add_and_reset() {
        let mut a = SignedHistogram::new();
        let mut b = SignedHistogram::new();
        a.record(-5);
        b.record(7);
        b.record(-9);
        a.add(&b);
        let s = a.summary().expect("non-empty");
        assert_eq!((s.count, s.min_ns, s.p50_ns, s.max_ns), (3, -9, -5, 7));
        a.reset();
        assert!(a.is_empty() && a.summary().is_none());
    }

    #[test]
    fn pdv_is_latency_minus_min() {
        let mut h = SignedHistogram::new();
        for v in [1000i64, 1200, 1500, 1900, 2000] {
            h.record(v);
        }
        let lat = h.latency_summary().expect("non-empty");
        let pdv = pdv_from_latency(&lat);
        assert_eq!(pdv.count, lat.count);
        assert_eq!(pdv.min_ns, 0);
        assert_eq!(pdv.p50_ns as i64, lat.p50_ns - lat.min_ns);
        assert_eq!(pdv.p90_ns as i64, lat.p90_ns - lat.min_ns);
        assert_eq!(pdv.p99_ns as i64, lat.p99_ns - lat.min_ns);
        assert_eq!(pdv.p999_ns as i64, lat.p999_ns - lat.min_ns);
        assert_eq!(pdv.max_ns as i64, lat.max_ns - lat.min_ns);
        assert_eq!(pdv.mean_ns, lat.mean_ns - lat.min_ns as f64);
        // Values below 2048 ns are exact: PDV p50 is 1500 - 1000.
        assert_eq!(pdv.p50_ns, 500);
    }

    #[test]
    fn signed_latency_ladder_matches_sorted_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        // A receiver clock 3 ms behind: delays of -3 ms + (0.1 .. 2 ms), mostly negative.
        for (lo, hi) in [
            (-2_900_000i64, -1_000_000),
            (-2_000_000, 500_000),
            (10, 9_000),
        ] {
            let mut h = SignedHistogram::new();
            let mut values: Vec<i64> = (0..4001).map(|_| rng.random_range(lo..=hi)).collect();
            for &v in &values {
                h.record(v);
            }
            values.sort_unstable();
            let s = h.latency_summary().expect("non-empty");
            assert_eq!(s.count, values.len() as u64);
            assert_eq!((s.min_ns, s.max_ns), (values[0], *values.last().unwrap()));
            assert_close(s.p50_ns, reference_quantile(&values, 0.5), "p50");
            assert_close(s.p90_ns, reference_quantile(&values, 0.9), "p90");
            assert_close(s.p99_ns, reference_quantile(&values, 0.99), "p99");
            assert_close(s.p999_ns, reference_quantile(&values, 0.999), "p999");
            let mean = values.iter().sum::<i64>() as f64 / values.len() as f64;
            assert!((s.mean_ns - mean).abs() <= mean.abs() / 500.0 + 1.0, "mean");
            // PDV does not see the offset.
            let pdv = pdv_from_latency(&s);
            assert_eq!(pdv.max_ns, (values.last().unwrap() - values[0]) as u64);
        }
    }
}
