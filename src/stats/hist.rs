//! Latency and signed-delay histograms (HdrHistogram, 3 significant digits, 1 ns .. 100 s) and
//! their conversion into the plain summary structs.

use hdrhistogram::Histogram;

use crate::summary::{LatencySummary, SignedSummary};

/// Highest recordable value: 100 s in nanoseconds. Larger values are clamped to it.
pub const HISTOGRAM_MAX_NS: u64 = 100_000_000_000;
/// HdrHistogram precision: 3 significant digits (0.1 % relative error above 2048 ns).
const SIGNIFICANT_DIGITS: u8 = 3;

/// Unsigned nanosecond distribution (one-way latency, RTT, schedule lateness, |IPDV|).
///
/// Values are clamped into 0 ..= 100 s (saturating) so recording never fails.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        Self { hist }
    }

    /// Records one value (ns), clamped to the histogram's range.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns);
    }

    /// Adds every value of `other` into `self`.
    pub fn add(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides, so the addition cannot run out of range.
        self.hist
            .add(&other.hist)
            .expect("histograms with identical bounds always add");
    }

    pub fn reset(&mut self) {
        self.hist.reset();
    }

    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// count, min, mean, p50, p90, p99, p99.9, max; None when nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.hist.is_empty() {
            return None;
        }
        let h = &self.hist;
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

    /// Bytes held by the counts array (fixed at construction).
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.hist.distinct_values() * std::mem::size_of::<u64>()
    }

    /// Value of the `rank`-th smallest recorded sample (1-based), at the top of its
    /// equivalence range, like `value_at_quantile`.
    fn value_at_rank(&self, rank: u64) -> u64 {
        let mut seen = 0u64;
        for v in self.hist.iter_recorded() {
            seen += v.count_at_value();
            if seen >= rank {
                return v.value_iterated_to();
            }
        }
        self.hist.max()
    }
}

/// RFC 5481 PDV from a one-way delay summary: every figure minus the minimum delay.
pub fn pdv_from_latency(latency: &LatencySummary) -> LatencySummary {
    let min = latency.min_ns;
    LatencySummary {
        count: latency.count,
        min_ns: 0,
        mean_ns: (latency.mean_ns - min as f64).max(0.0),
        p50_ns: latency.p50_ns - min,
        p90_ns: latency.p90_ns - min,
        p99_ns: latency.p99_ns - min,
        p999_ns: latency.p999_ns - min,
        max_ns: latency.max_ns - min,
    }
}

/// Signed nanosecond distribution (RFC 3393 IPDV): two unsigned histograms, one for values
/// >= 0 and one for the magnitudes of negative values, combined by rank.
#[derive(Debug, Clone, Default)]
pub struct SignedHistogram {
    non_negative: LatencyHistogram,
    negative_magnitude: LatencyHistogram,
}

impl SignedHistogram {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn record(&mut self, value: i64) {
        if value >= 0 {
            self.non_negative.record(value as u64);
        } else {
            self.negative_magnitude.record(value.unsigned_abs());
        }
    }

    pub fn add(&mut self, other: &SignedHistogram) {
        self.non_negative.add(&other.non_negative);
        self.negative_magnitude.add(&other.negative_magnitude);
    }

    pub fn reset(&mut self) {
        self.non_negative.reset();
        self.negative_magnitude.reset();
    }

    pub fn len(&self) -> u64 {
        self.non_negative.len() + self.negative_magnitude.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value at quantile `q` of the signed distribution, with HdrHistogram's rank rule
    /// (rank = max(1, ceil(q * count))). Sorted ascending, the negative values come first in
    /// decreasing magnitude, so rank r <= #negatives is the (#negatives - r + 1)-th smallest
    /// magnitude, negated.
    fn value_at_quantile(&self, q: f64) -> i64 {
        let total = self.len();
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let negatives = self.negative_magnitude.len();
        if rank <= negatives {
            let magnitude = self.negative_magnitude.value_at_rank(negatives - rank + 1);
            -(magnitude as i64)
        } else {
            self.non_negative.value_at_rank(rank - negatives) as i64
        }
    }

    /// count, min, p1, p50, p99, max; None when nothing was recorded.
    pub fn summary(&self) -> Option<SignedSummary> {
        if self.is_empty() {
            return None;
        }
        let min_ns = if self.negative_magnitude.is_empty() {
            self.non_negative.hist.min() as i64
        } else {
            -(self.negative_magnitude.hist.max() as i64)
        };
        let max_ns = if self.non_negative.is_empty() {
            -(self.negative_magnitude.hist.min_nz() as i64)
        } else {
            self.non_negative.hist.max() as i64
        };
        Some(SignedSummary {
            count: self.len(),
            min_ns,
            p01_ns: self.value_at_quantile(0.01),
            p50_ns: self.value_at_quantile(0.50),
            p99_ns: self.value_at_quantile(0.99),
            max_ns,
        })
    }

    /// Summary of the magnitudes |value|.
    pub fn abs_summary(&self) -> Option<LatencySummary> {
        let mut magnitudes = self.non_negative.clone();
        magnitudes.add(&self.negative_magnitude);
        magnitudes.summary()
    }

    pub(crate) fn capacity_bytes(&self) -> usize {
        self.non_negative.capacity_bytes() + self.negative_magnitude.capacity_bytes()
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
            assert_close(a.p50_ns as i64, reference_quantile(&magnitudes, 0.5), "|p50|");
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
        let mut h = LatencyHistogram::new();
        for v in [1000u64, 1200, 1500, 1900, 2000] {
            h.record(v);
        }
        let lat = h.summary().expect("non-empty");
        let pdv = pdv_from_latency(&lat);
        assert_eq!(pdv.count, lat.count);
        assert_eq!(pdv.min_ns, 0);
        assert_eq!(pdv.p50_ns, lat.p50_ns - lat.min_ns);
        assert_eq!(pdv.p90_ns, lat.p90_ns - lat.min_ns);
        assert_eq!(pdv.p99_ns, lat.p99_ns - lat.min_ns);
        assert_eq!(pdv.p999_ns, lat.p999_ns - lat.min_ns);
        assert_eq!(pdv.max_ns, lat.max_ns - lat.min_ns);
        assert_eq!(pdv.mean_ns, lat.mean_ns - lat.min_ns as f64);
        // Values below 2048 ns are exact: PDV p50 is 1500 - 1000.
        assert_eq!(pdv.p50_ns, 500);
    }
}
