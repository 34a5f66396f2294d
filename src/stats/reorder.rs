//! RFC 4737 reordering: reordered count, reordering extent (§4.2.2) with its distribution, and
//! n-reordering (§5) for n = 1..3, over unique arrivals only.
//!
//! Extent of a reordered packet at arrival position i is i - j, where j is the earliest arrival
//! position of a packet with a larger sequence. That packet is always a *record high* (its
//! sequence exceeded everything before it), i.e. an in-order arrival, so keeping the record highs
//! is enough: they are stored as runs of (position, sequence) that both step by one, which is
//! one run per loss or reordering event rather than one entry per datagram, and found by binary
//! search. The ring keeps the last `RECORD_RUNS` runs; if the answer lies before them the extent
//! is reported as the distance to the oldest run kept (a lower bound) and counted in `capped`.

use crate::summary::ExtentBucket;

/// Record-high runs kept for the extent search (each run spans >= 1 arrival position).
pub(crate) const RECORD_RUNS: usize = 1 << 16;
/// Extent buckets: [1],[2],[3],[4,7],[8,15],...,[2^39,2^40-1],[2^40,..].
pub(crate) const EXTENT_BUCKETS: usize = 42;

/// Reordering figures since the last `take_tally`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReorderTally {
    pub reordered: u64,
    pub extent_max: u64,
    pub extent_counts: [u64; EXTENT_BUCKETS],
    pub n_reordered: [u64; 3],
}

impl Default for ReorderTally {
    fn default() -> Self {
        Self {
            reordered: 0,
            extent_max: 0,
            extent_counts: [0; EXTENT_BUCKETS],
            n_reordered: [0; 3],
        }
    }
}

impl ReorderTally {
    pub(crate) fn merge(&mut self, other: &ReorderTally) {
        self.reordered += other.reordered;
        self.extent_max = self.extent_max.max(other.extent_max);
        for (a, b) in self.extent_counts.iter_mut().zip(other.extent_counts) {
            *a += b;
        }
        for (a, b) in self.n_reordered.iter_mut().zip(other.n_reordered) {
            *a += b;
        }
    }

    /// Non-empty buckets, ascending.
    pub(crate) fn buckets(&self) -> Vec<ExtentBucket> {
        self.extent_counts
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(index, &count)| {
                let (lo, hi) = bucket_bounds(index);
                ExtentBucket { lo, hi, count }
            })
            .collect()
    }
}

/// Bucket of an extent >= 1.
#[inline]
pub(crate) fn bucket_index(extent: u64) -> usize {
    if extent <= 3 {
        extent.saturating_sub(1) as usize
    } else {
        // floor(log2(extent)) + 1: 4..7 -> 3, 8..15 -> 4, ...
        ((64 - extent.leading_zeros()) as usize).min(EXTENT_BUCKETS - 1)
    }
}

pub(crate) fn bucket_bounds(index: usize) -> (u64, u64) {
    match index {
        0..=2 => (index as u64 + 1, index as u64 + 1),
        _ if index == EXTENT_BUCKETS - 1 => (1 << (index - 1), u64::MAX),
        _ => (1 << (index - 1), (1 << index) - 1),
    }
}

/// Record highs at positions pos0.., sequences seq0.., both stepping by one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RecordRun {
    pos0: u64,
    seq0: u64,
    len: u64,
}

pub(crate) struct ReorderTracker {
    /// Unique arrivals so far = arrival position of the next one.
    arrivals: u64,
    /// Sequences of the last unique arrivals, at `position & 3`.
    recent: [u64; 4],
    /// Run being extended (len 0 before the first arrival).
    current: RecordRun,
    /// Closed runs, oldest overwritten first.
    runs: Box<[RecordRun]>,
    runs_closed: u64,
    /// Extents reported as lower bounds because the record ring no longer reached back.
    capped: u64,
    tally: ReorderTally,
}

impl Default for ReorderTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl ReorderTracker {
    pub(crate) fn new() -> Self {
        Self {
            arrivals: 0,
            recent: [0; 4],
            current: RecordRun::default(),
            runs: vec![RecordRun::default(); RECORD_RUNS].into_boxed_slice(),
            runs_closed: 0,
            capped: 0,
            tally: ReorderTally::default(),
        }
    }

    /// A unique arrival at or above NextExp: a new record high.
    #[inline]
    pub(crate) fn on_in_order(&mut self, seq: u64) {
        let pos = self.arrivals;
        let run = &mut self.current;
        if pos == run.pos0 + run.len && seq == run.seq0 + run.len {
            run.len += 1;
        } else {
            self.start_run(pos, seq);
        }
        self.recent[(pos & 3) as usize] = seq;
        self.arrivals = pos + 1;
    }

    #[cold]
    fn start_run(&mut self, pos: u64, seq: u64) {
        if self.current.len > 0 {
            let slot = (self.runs_closed as usize) & (RECORD_RUNS - 1);
            self.runs[slot] = self.current;
            self.runs_closed += 1;
        }
        self.current = RecordRun {
            pos0: pos,
            seq0: seq,
            len: 1,
        };
    }

    /// A unique arrival below NextExp. There has been an in-order arrival with a larger
    /// sequence before it (NextExp > seq).
    #[cold]
    pub(crate) fn on_reordered(&mut self, seq: u64) {
        let pos = self.arrivals;
        let (first_above, capped) = self.first_position_above(seq);
        self.capped += capped as u64;
        let extent = pos - first_above;
        let t = &mut self.tally;
        t.reordered += 1;
        t.extent_max = t.extent_max.max(extent);
        t.extent_counts[bucket_index(extent)] += 1;
        for n in 1..=3u64 {
            if pos >= n && self.recent[((pos - n) & 3) as usize] > seq {
                t.n_reordered[n as usize - 1] += 1;
            } else {
                break;
            }
        }
        self.recent[(pos & 3) as usize] = seq;
        self.arrivals = pos + 1;
    }

    /// Earliest arrival position of a record high with sequence > `seq`, and whether that is
    /// only the oldest one still held (the true one may be older).
    fn first_position_above(&self, seq: u64) -> (u64, bool) {
        let held_closed = self.runs_closed.min(RECORD_RUNS as u64);
        let first_closed = self.runs_closed - held_closed;
        let count = held_closed + 1; // + the current run
        let run_at = |k: u64| -> RecordRun {
            if k < held_closed {
                self.runs[((first_closed + k) as usize) & (RECORD_RUNS - 1)]
            } else {
                self.current
            }
        };
        // Number of runs whose first sequence is <= seq (seq0 strictly increases).
        let (mut lo, mut hi) = (0u64, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if run_at(mid).seq0 <= seq {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return (run_at(0).pos0, first_closed > 0);
        }
        let run = run_at(lo - 1);
        if seq < run.seq0 + run.len - 1 {
            (run.pos0 + (seq - run.seq0) + 1, false)
        } else {
            // The last run ends with the highest sequence seen, which is > seq, so a next
            // run exists.
            (run_at(lo).pos0, false)
        }
    }

    pub(crate) fn take_tally(&mut self) -> ReorderTally {
        std::mem::take(&mut self.tally)
    }

    pub(crate) fn tally(&self) -> &ReorderTally {
        &self.tally
    }

    pub(crate) fn capped(&self) -> u64 {
        self.capped
    }

    pub(crate) fn capacity_bytes(&self) -> usize {
        self.runs.len() * std::mem::size_of::<RecordRun>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds unique sequences in arrival order, deciding in-order vs reordered by NextExp.
    fn run(seqs: &[u64]) -> ReorderTracker {
        let mut t = ReorderTracker::new();
        let mut next_exp = 0;
        for &s in seqs {
            if s >= next_exp {
                next_exp = s + 1;
                t.on_in_order(s);
            } else {
                t.on_reordered(s);
            }
        }
        t
    }

    #[test]
    fn buckets_cover_all_extents_once() {
        assert_eq!(bucket_index(1), 0);
        assert_eq!(bucket_index(3), 2);
        assert_eq!(bucket_index(4), 3);
        assert_eq!(bucket_index(7), 3);
        assert_eq!(bucket_index(8), 4);
        assert_eq!(bucket_index(1 << 40), EXTENT_BUCKETS - 1);
        assert_eq!(bucket_index(u64::MAX), EXTENT_BUCKETS - 1);
        for index in 0..EXTENT_BUCKETS {
            let (lo, hi) = bucket_bounds(index);
            assert_eq!(bucket_index(lo), index);
            assert_eq!(bucket_index(hi), index);
            if index + 1 < EXTENT_BUCKETS {
                assert_eq!(bucket_bounds(index + 1).0, hi + 1);
            }
        }
    }

    #[test]
    fn rfc4737_late_packet_extent() {
        // 1,2,3,5,6,7,8,4: 4 arrives at position 7 (0-based); the first larger, 5, at 3.
        let t = run(&[1, 2, 3, 5, 6, 7, 8, 4]);
        assert_eq!(t.tally.reordered, 1);
        assert_eq!(t.tally.extent_max, 4);
        assert_eq!(t.tally.n_reordered, [1, 1, 1]);
    }

    #[test]
    fn rfc4737_two_late_packets() {
        // 1,2,4,5,3: 3 is reordered, extent 5th - 3rd = 2, and 2-reordered (4, 5 > 3) but not
        // 3-reordered (2 < 3).
        let t = run(&[1, 2, 4, 5, 3]);
        assert_eq!(t.tally.reordered, 1);
        assert_eq!(t.tally.extent_max, 2);
        assert_eq!(t.tally.n_reordered, [1, 1, 0]);
        // 1,2,3,4,7,5,6,8: 5 (extent 1) and 6 (extent 2) reordered; 6 follows 5 < 6, so it is
        // not even 1-reordered.
        let t = run(&[1, 2, 3, 4, 7, 5, 6, 8]);
        assert_eq!(t.tally.reordered, 2);
        assert_eq!(t.tally.extent_max, 2);
        assert_eq!(t.tally.n_reordered, [1, 0, 0]);
        assert_eq!(
            t.tally.buckets(),
            vec![
                ExtentBucket {
                    lo: 1,
                    hi: 1,
                    count: 1
                },
                ExtentBucket {
                    lo: 2,
                    hi: 2,
                    count: 1
                }
            ]
        );
    }

    #[test]
    fn first_packet_larger_than_a_later_one() {
        // 5 arrives first, then 3: the earliest larger is position 0, extent 1.
        let t = run(&[5, 3, 6]);
        assert_eq!(t.tally.reordered, 1);
        assert_eq!(t.tally.extent_max, 1);
    }

    #[test]
    fn extent_found_across_many_runs() {
        // Sequences 5, 15, 25, ... are skipped (a new run after each); then 55 arrives after
        // 0..200. The earliest larger packet is 56.
        let seqs: Vec<u64> = (0..200).filter(|s| s % 10 != 5).chain([55]).collect();
        let t = run(&seqs);
        let pos_56 = seqs.iter().position(|&s| s == 56).unwrap() as u64;
        assert_eq!(t.tally.extent_max, seqs.len() as u64 - 1 - pos_56);
        assert_eq!(t.capped(), 0);
    }

    #[test]
    fn extent_capped_when_ring_no_longer_reaches() {
        // Odd sequences only, so every arrival starts a new run: more than RECORD_RUNS runs.
        // Then 0 arrives: its earliest larger packet (seq 1) is in a run no longer held.
        let seqs: Vec<u64> = (1..(RECORD_RUNS as u64 * 2 + 10) * 2)
            .step_by(2)
            .chain([0])
            .collect();
        let t = run(&seqs);
        assert_eq!(t.capped(), 1);
        assert_eq!(t.tally.reordered, 1);
        // The true extent is the whole history; the reported one is a lower bound.
        assert!(t.tally.extent_max < seqs.len() as u64 - 1);
        assert!(t.tally.extent_max >= RECORD_RUNS as u64);
    }
}
