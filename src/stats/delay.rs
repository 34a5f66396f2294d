//! Delay variation: the RFC 3550 interarrival jitter estimator (in arrival order) and RFC 3393
//! IPDV between consecutive sequences (whatever order the pair arrives in).

use super::hist::SignedHistogram;

/// Slots of the (sequence, delay) ring used to pair k with k+1. A pair whose members arrive more
/// than this many sequences apart is not measured.
pub(crate) const IPDV_RING: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct DelaySample {
    seq: u64,
    /// One-way delay R - S as a signed value (clock offset included: it cancels in IPDV).
    transit: i64,
}

pub(crate) struct DelayTracker {
    have_previous: bool,
    previous_transit: i64,
    /// RFC 3550 J, nanoseconds.
    jitter_ns: f64,
    ring: Box<[DelaySample]>,
}

impl Default for DelayTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl DelayTracker {
    pub(crate) fn new() -> Self {
        // Slot i starts with sequence i + 1, which never maps to slot i: no false pair.
        let ring = (0..IPDV_RING as u64)
            .map(|i| DelaySample {
                seq: i + 1,
                transit: 0,
            })
            .collect();
        Self {
            have_previous: false,
            previous_transit: 0,
            jitter_ns: 0.0,
            ring,
        }
    }

    /// One unique arrival (first copy). `transit` = R - S (wrapping, as i64).
    #[inline(always)]
    pub(crate) fn on_unique(&mut self, seq: u64, transit: i64, ipdv: &mut SignedHistogram) {
        // RFC 3550: D(i-1,i) = (R_i - R_{i-1}) - (S_i - S_{i-1}) = transit_i - transit_{i-1}.
        if self.have_previous {
            // i64 -> f64 then abs: one cvtsi2sd (u64 -> f64 needs a longer sequence on x86-64);
            // equal to |d| as f64 since rounding is symmetric.
            let d = transit.wrapping_sub(self.previous_transit) as f64;
            self.jitter_ns += (d.abs() - self.jitter_ns) * (1.0 / 16.0);
        }
        self.have_previous = true;
        self.previous_transit = transit;

        const MASK: u64 = IPDV_RING as u64 - 1;
        let below = self.ring[(seq.wrapping_sub(1) & MASK) as usize];
        if below.seq == seq.wrapping_sub(1) && seq != 0 {
            ipdv.record(transit.wrapping_sub(below.transit));
        }
        let above = self.ring[(seq.wrapping_add(1) & MASK) as usize];
        if above.seq == seq.wrapping_add(1) && seq != u64::MAX {
            ipdv.record(above.transit.wrapping_sub(transit));
        }
        self.ring[(seq & MASK) as usize] = DelaySample { seq, transit };
    }

    pub(crate) fn jitter_ns(&self) -> f64 {
        self.jitter_ns
    }

    pub(crate) fn capacity_bytes(&self) -> usize {
        self.ring.len() * std::mem::size_of::<DelaySample>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_follows_rfc3550_by_hand() {
        // (send, recv) in arrival order; transits 100, 105, 100, 110.
        let packets = [(0u64, 100u64), (10, 115), (20, 120), (30, 140)];
        let mut t = DelayTracker::new();
        let mut ipdv = SignedHistogram::new();
        for (seq, (s, r)) in packets.into_iter().enumerate() {
            t.on_unique(seq as u64, (r - s) as i64, &mut ipdv);
        }
        // |D| = 5, 5, 10.
        let mut j = 0.0f64;
        j += (5.0 - j) / 16.0;
        j += (5.0 - j) / 16.0;
        j += (10.0 - j) / 16.0;
        assert_eq!(t.jitter_ns(), j);
        // IPDV: +5, -5, +10.
        let s = ipdv.summary().expect("three pairs");
        assert_eq!((s.count, s.min_ns, s.p50_ns, s.max_ns), (3, -5, 5, 10));
    }

    #[test]
    fn ipdv_pairs_counted_once_in_any_order() {
        let mut t = DelayTracker::new();
        let mut ipdv = SignedHistogram::new();
        // Arrival order 2, 0, 1, 3 with delays 20, 0, 10, 31.
        for (seq, transit) in [(2u64, 20i64), (0, 0), (1, 10), (3, 31)] {
            t.on_unique(seq, transit, &mut ipdv);
        }
        // Pairs (0,1)=10, (1,2)=10, (2,3)=11.
        let s = ipdv.summary().expect("pairs");
        assert_eq!((s.count, s.min_ns, s.max_ns), (3, 10, 11));
    }

    #[test]
    fn no_false_pairs_from_initial_ring_or_far_sequences() {
        let mut t = DelayTracker::new();
        let mut ipdv = SignedHistogram::new();
        t.on_unique(0, 5, &mut ipdv);
        t.on_unique(IPDV_RING as u64 + 1, 7, &mut ipdv); // same slot as 1, not a neighbour
        t.on_unique(2 * IPDV_RING as u64 - 1, 9, &mut ipdv); // slot of u64 wrap neighbours
        assert!(ipdv.is_empty());
    }
}
