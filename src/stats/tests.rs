//! Tests of `ReceiverStats` as a whole: hand-made streams with known answers, the RFC 4737
//! examples, time-based loss, interval additivity, a randomized differential test against a
//! naive reference, and the memory bound.

use std::collections::{BTreeMap, HashSet};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::reorder::{EXTENT_BUCKETS, bucket_bounds, bucket_index};
use super::*;
use crate::summary::ExtentBucket;

const GAP_NS: u64 = 10_000;
const DELAY_NS: u64 = 50_000;

fn stats() -> ReceiverStats {
    ReceiverStats::new(StatsConfig::default())
}

/// Feeds sequences in the given arrival order: sent every GAP_NS, received one GAP_NS per
/// arrival position after a fixed delay. Returns the verdicts.
fn feed(st: &mut ReceiverStats, seqs: &[u64]) -> Vec<Arrival> {
    seqs.iter()
        .enumerate()
        .map(|(k, &s)| {
            st.on_datagram(
                s,
                s * GAP_NS,
                k as u64 * GAP_NS + DELAY_NS,
                k as u64 * GAP_NS + DELAY_NS,
                100,
            )
        })
        .collect()
}

#[test]
fn dropped_set_gives_exact_loss_and_periods() {
    let mut st = ReceiverStats::new(StatsConfig {
        record_loss_ranges: true,
        ..StatsConfig::default()
    });
    let dropped = [3u64, 4, 5, 9];
    let seqs: Vec<u64> = (0..20).filter(|s| !dropped.contains(s)).collect();
    feed(&mut st, &seqs);
    st.finish(20, 1_000_000);
    let s = st.summary();
    assert_eq!(s.expected, 20);
    assert_eq!(s.received, 16);
    assert_eq!(s.received_bytes, 1600);
    assert_eq!(s.lost, 4);
    assert_eq!(s.loss_periods, 2);
    assert_eq!(s.loss_period_max, 3);
    assert_eq!((s.duplicates, s.reordered, s.late, s.stale), (0, 0, 0, 0));
    assert_eq!(st.drain_loss_ranges(), vec![3..=5, 9..=9]);
    assert!(st.drain_loss_ranges().is_empty());
}

#[test]
fn duplicates_are_exact_and_never_offset_loss() {
    let mut st = stats();
    // 7 and 11 are lost; 2 arrives three times, 15 twice (one copy long after).
    let seqs = [0, 1, 2, 2, 3, 4, 5, 6, 2, 8, 9, 10, 12, 13, 14, 15, 16, 15];
    let verdicts = feed(&mut st, &seqs);
    assert_eq!(verdicts[3], Arrival::Duplicate);
    assert_eq!(verdicts[17], Arrival::Duplicate);
    st.finish(17, 0);
    let s = st.summary();
    assert_eq!(s.duplicates, 3);
    assert_eq!(s.received, 15);
    assert_eq!(s.lost, 2);
    assert_eq!(s.loss_periods, 2);
    assert_eq!(s.reordered, 0, "duplicates do not count as reordered");
}

#[test]
fn datagram_moved_back_k_positions_has_extent_k() {
    for k in 1..=40usize {
        let mut seqs: Vec<u64> = (0..100).collect();
        let moved = seqs.remove(30);
        seqs.insert(30 + k, moved);
        let mut st = stats();
        let verdicts = feed(&mut st, &seqs);
        assert_eq!(verdicts[30 + k], Arrival::Unique { reordered: true });
        let s = st.summary();
        assert_eq!(s.reordered, 1, "k={k}");
        assert_eq!(s.reorder_extent_max, k as u64, "k={k}");
        let (lo, hi) = bucket_bounds(bucket_index(k as u64));
        assert_eq!(s.reorder_extent, vec![ExtentBucket { lo, hi, count: 1 }]);
        // All k packets before it are larger: it is n-reordered for every n <= k.
        let expect_n: Vec<u64> = (1..=3).map(|n| (k >= n) as u64).collect();
        assert_eq!(s.n_reordered.to_vec(), expect_n, "k={k}");
    }
}

#[test]
fn rfc4737_examples() {
    // RFC 4737 numbers from 1; sequence 0 is simply never sent here (no finish).
    let mut st = stats();
    feed(&mut st, &[1, 2, 3, 5, 6, 7, 8, 4]);
    let s = st.summary();
    assert_eq!((s.reordered, s.reorder_extent_max), (1, 4));
    assert_eq!(s.n_reordered, [1, 1, 1]);

    let mut st = stats();
    feed(&mut st, &[1, 2, 4, 5, 3]);
    let s = st.summary();
    assert_eq!((s.reordered, s.reorder_extent_max), (1, 2));
    assert_eq!(s.n_reordered, [1, 1, 0]);

    // Two late packets in a row: 4 (extent 3: 5 arrived 3 positions earlier) and 3 (extent 4).
    let mut st = stats();
    feed(&mut st, &[1, 2, 5, 6, 7, 4, 3, 8]);
    let s = st.summary();
    assert_eq!((s.reordered, s.reorder_extent_max), (2, 4));
    // 4 follows 7,6,5: 3-reordered. 3 follows 4,7,6 (all > 3): 3-reordered too.
    assert_eq!(s.n_reordered, [2, 2, 2]);
    assert_eq!(
        s.reorder_extent,
        vec![
            ExtentBucket {
                lo: 3,
                hi: 3,
                count: 1
            },
            ExtentBucket {
                lo: 4,
                hi: 7,
                count: 1
            }
        ]
    );
}

#[test]
fn n_reordering_needs_all_n_predecessors_larger() {
    let mut st = stats();
    // 5 follows 7 only (1-reordered); 6 follows 5 (not even 1-reordered);
    // 2 follows 6,5,7... (3-reordered).
    feed(&mut st, &[0, 1, 3, 4, 7, 5, 6, 2, 8]);
    let s = st.summary();
    assert_eq!(s.reordered, 3);
    assert_eq!(s.n_reordered, [2, 1, 1]);
}

#[test]
fn tail_loss_comes_from_finish() {
    let mut st = ReceiverStats::new(StatsConfig {
        record_loss_ranges: true,
        ..StatsConfig::default()
    });
    let seqs: Vec<u64> = (0..10).chain(12..200).collect();
    feed(&mut st, &seqs);
    st.finish(250, 0);
    let s = st.summary();
    assert_eq!((s.expected, s.received, s.lost), (250, 198, 52));
    assert_eq!((s.loss_periods, s.loss_period_max), (2, 50));
    assert_eq!(st.drain_loss_ranges(), vec![10..=11, 200..=249]);
}

#[test]
fn loss_spanning_the_ring_wrap_is_one_period() {
    let mut st = ReceiverStats::new(StatsConfig {
        window_bits: 128,
        record_loss_ranges: true,
        ..StatsConfig::default()
    });
    // 120..=140 crosses the physical end of the 2-word ring; 300..=1000 is larger than the
    // whole ring (counted without ever being in it).
    let seqs: Vec<u64> = (0..2000)
        .filter(|s| !(120..=140).contains(s) && !(300..=1000).contains(s))
        .collect();
    feed(&mut st, &seqs);
    st.finish(2000, 0);
    let s = st.summary();
    assert_eq!(s.lost, 21 + 701);
    assert_eq!(s.loss_periods, 2);
    assert_eq!(s.loss_period_max, 701);
    assert_eq!(s.received + s.lost, 2000);
    assert_eq!(st.drain_loss_ranges(), vec![120..=140, 300..=1000]);
}

#[test]
fn late_after_time_based_loss_then_duplicate() {
    let tmax = 1_000_000_000;
    let mut st = ReceiverStats::new(StatsConfig {
        loss_horizon_ns: tmax,
        ..StatsConfig::default()
    });
    // 0..200 except 5, one per microsecond.
    for s in (0..200u64).filter(|&s| s != 5) {
        st.on_datagram(s, s * 1000, s * 1000 + 10, s * 1000 + 10, 64);
    }
    // Word 0 was overtaken when 64 arrived (received at 64_010 ns).
    st.on_tick(64_010 + tmax - 1);
    assert_eq!(st.summary().lost, 0);
    st.on_tick(64_010 + tmax);
    let declared = st.summary();
    assert_eq!(
        (
            declared.lost,
            declared.loss_periods,
            declared.loss_period_max
        ),
        (1, 1, 1)
    );
    let late_at = 2 * tmax;
    assert_eq!(st.on_datagram(5, 5000, late_at, late_at, 64), Arrival::Late);
    assert_eq!(
        st.on_datagram(5, 5000, late_at + 1, late_at + 1, 64),
        Arrival::Duplicate
    );
    st.finish(200, late_at + 2);
    let s = st.summary();
    assert_eq!((s.received, s.lost, s.late, s.duplicates), (199, 1, 1, 1));
    assert_eq!(s.received_bytes, 199 * 64);
    assert_eq!(
        s.last_recv_ns,
        Some(199 * 1000 + 10),
        "late copies are not counted"
    );
}

#[test]
fn tmax_is_timed_on_the_monotonic_clock_whatever_the_wall_clock_does() {
    const HOUR: u64 = 3_600_000_000_000;
    const WALL0: u64 = 1_800_000_000_000_000_000;
    let tmax = 1_000_000_000;
    for wall_step in [HOUR as i64, -(HOUR as i64)] {
        let mut st = ReceiverStats::new(StatsConfig {
            loss_horizon_ns: tmax,
            ..StatsConfig::default()
        });
        // 0..200 except 5, one per millisecond of monotonic time; the wall clock (receive
        // timestamps) steps by an hour after sequence 64 overtook 5.
        for s in (0..200u64).filter(|&s| s != 5) {
            let now = 1_000_000 + s * 1_000_000;
            let step = if s > 80 { wall_step } else { 0 };
            let wall = (WALL0 + now).wrapping_add_signed(step);
            st.on_datagram(s, WALL0 + now - 20_000, wall, now, 64);
        }
        // Word 0 was overtaken when 64 arrived, at monotonic 65 ms.
        let overtaken = 1_000_000 + 64 * 1_000_000;
        st.on_tick(overtaken + tmax - 1);
        assert_eq!(st.summary().lost, 0, "step {wall_step}: before Tmax");
        st.on_tick(overtaken + tmax);
        assert_eq!(st.summary().lost, 1, "step {wall_step}: at Tmax");
        // The step shows where it belongs: in the one-way delays (clamped to 100 s).
        let lat = st.summary().latency.expect("latency");
        assert!(lat.max_ns - lat.min_ns >= HISTOGRAM_MAX_NS as i64 - 20_000);
    }
}

#[test]
fn stale_beyond_the_window() {
    let mut st = ReceiverStats::new(StatsConfig {
        window_bits: 1024,
        ..StatsConfig::default()
    });
    let seqs: Vec<u64> = (0..5000).collect();
    feed(&mut st, &seqs);
    // The ring holds the last 16 words, up to the one holding 4999: 4032..5055.
    assert_eq!(st.on_datagram(4031, 0, 0, 0, 1), Arrival::Stale);
    assert_eq!(st.on_datagram(3, 0, 0, 0, 1), Arrival::Stale);
    assert_eq!(st.on_datagram(4032, 0, 0, 0, 1), Arrival::Duplicate);
    let s = st.summary();
    assert_eq!((s.stale, s.duplicates, s.received), (2, 1, 5000));
}

#[test]
fn displacement_beyond_a_small_window_is_lost_and_stale() {
    // A 128-sequence window: seq 10 displaced by 100 positions is still pending (reordered);
    // seq 20 displaced by 300 is forced out as lost before it arrives, then too old to tell.
    let mut st = ReceiverStats::new(StatsConfig {
        window_bits: 128,
        ..StatsConfig::default()
    });
    let mut seqs: Vec<u64> = (0..1000).filter(|&s| s != 10 && s != 20).collect();
    seqs.insert(100, 10);
    seqs.insert(300, 20);
    let verdicts = feed(&mut st, &seqs);
    assert_eq!(verdicts[100], Arrival::Unique { reordered: true });
    assert_eq!(verdicts[300], Arrival::Stale);
    st.finish(1000, 0);
    let s = st.summary();
    assert_eq!((s.received, s.lost, s.stale, s.late), (999, 1, 1, 0));
    assert_eq!(s.reordered, 1);
}

#[test]
fn out_of_range_after_and_before_finish() {
    let mut st = stats();
    // 12 and 13 are bogus (the sender will say it sent 10).
    let verdicts = feed(&mut st, &[0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 8]);
    assert_eq!(verdicts[10], Arrival::Unique { reordered: true });
    st.finish(10, 0);
    assert_eq!(st.out_of_range(), 2);
    assert_eq!(st.on_datagram(10, 0, 0, 0, 1), Arrival::Stale);
    assert_eq!(st.on_datagram(u64::MAX, 0, 0, 0, 1), Arrival::Stale);
    assert_eq!(st.out_of_range(), 4);
    // A never-seen sequence below total_sent arriving after the end is late.
    assert_eq!(st.on_datagram(9, 0, 0, 0, 1), Arrival::Late);
    let s = st.summary();
    assert_eq!(
        (s.expected, s.received, s.lost, s.stale, s.late),
        (10, 9, 1, 0, 1)
    );
}

#[test]
fn bogus_sequence_far_beyond_total_never_gives_negative_or_excess_loss() {
    let mut st = ReceiverStats::new(StatsConfig {
        window_bits: 128,
        ..StatsConfig::default()
    });
    feed(&mut st, &[0, 1, 2, 3, 1_000_000]);
    st.finish(6, 0);
    let s = st.summary();
    assert_eq!(s.expected, 6);
    assert_eq!(s.received, 4);
    assert_eq!(s.lost, 2);
}

#[test]
fn window_sized_for_rate_and_tmax() {
    assert_eq!(StatsConfig::window_bits_for(1000.0, 1_000_000_000), 1 << 17);
    assert_eq!(StatsConfig::window_bits_for(1e6, 1_000_000_000), 1 << 20);
    assert_eq!(StatsConfig::window_bits_for(1e6, 3_000_000_000), 1 << 22);
    assert_eq!(
        StatsConfig::window_bits_for(f64::INFINITY, u64::MAX),
        1 << 30
    );
    assert_eq!(StatsConfig::window_bits_for(f64::NAN, 1), 1 << 17);
}

#[test]
fn absurd_sequences_neither_panic_nor_overflow() {
    let mut st = ReceiverStats::new(StatsConfig {
        window_bits: 128,
        record_loss_ranges: true,
        ..StatsConfig::default()
    });
    assert_eq!(st.on_datagram(u64::MAX, 0, 0, 0, 1), Arrival::Stale);
    assert_eq!(st.on_datagram(SEQ_LIMIT, 0, 0, 0, 1), Arrival::Stale);
    assert_eq!(st.out_of_range(), 2);
    st.on_datagram(0, 0, 1, 1, 1);
    assert_eq!(
        st.on_datagram(SEQ_LIMIT - 1, 0, 2, 2, 1),
        Arrival::Unique { reordered: false }
    );
    st.on_tick(u64::MAX);
    st.close_interval(u64::MAX);
    st.finish(u64::MAX, u64::MAX);
    assert_eq!(st.poll_interval().map(|r| r.lost), Some(SEQ_LIMIT - 2));
    let s = st.summary();
    assert_eq!(s.expected, SEQ_LIMIT);
    assert_eq!(s.received, 2);
    assert_eq!(s.lost, SEQ_LIMIT - 2);
    assert_eq!(s.loss_periods, 1);
    assert_eq!(st.drain_loss_ranges(), vec![1..=SEQ_LIMIT - 2]);
}

#[test]
fn jitter_pdv_and_latency_from_a_known_stream() {
    let mut st = stats();
    // (seq, send, recv): transits 100, 105, 100, 110, 130 ns.
    let packets = [
        (0u64, 0u64, 100u64),
        (1, 10, 115),
        (2, 20, 120),
        (3, 30, 140),
        (4, 40, 170),
    ];
    for (seq, send, recv) in packets {
        st.on_datagram(seq, send, recv, recv, 10);
    }
    let transits: Vec<i64> = packets.iter().map(|p| (p.2 - p.1) as i64).collect();
    let mut j = 0.0f64;
    for w in transits.windows(2) {
        j += ((w[1] - w[0]).abs() as f64 - j) / 16.0;
    }
    let s = st.summary();
    assert_eq!(s.jitter_ns, j);
    let lat = s.latency.expect("latency");
    assert_eq!(
        (lat.count, lat.min_ns, lat.max_ns, lat.p50_ns),
        (5, 100, 130, 105)
    );
    let pdv = s.pdv.expect("pdv");
    assert_eq!((pdv.min_ns, pdv.p50_ns, pdv.max_ns), (0, 5, 30));
    assert_eq!(pdv.mean_ns, lat.mean_ns - 100.0);
    // IPDV: +5, -5, +10, +20.
    let ipdv = s.ipdv.expect("ipdv");
    assert_eq!((ipdv.count, ipdv.min_ns, ipdv.max_ns), (4, -5, 20));
    let abs = s.ipdv_abs.expect("|ipdv|");
    assert_eq!((abs.count, abs.min_ns, abs.max_ns), (4, 5, 20));
    assert_eq!((s.first_recv_ns, s.last_recv_ns), (Some(100), Some(170)));
    // Interval J is the current value, not reset.
    st.close_interval(1000);
    st.close_interval(2000);
    st.finish(5, 3000);
    let iv = st.poll_interval().expect("final after finish");
    assert_eq!(iv.jitter_ns, j);
    let empty = st.poll_interval().expect("final after finish");
    assert_eq!(empty.jitter_ns, j);
    assert_eq!(
        (empty.received, empty.first_recv_ns, empty.latency),
        (0, None, None)
    );
}

#[test]
fn latency_and_pdv_extremes_are_exact() {
    // Delays uniform in 15..25 ms (`--impair delay=20ms,jitter=5ms`): the reported minimum must
    // be the smallest delay measured, never the bucket edge below it (14.999552 ms).
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut st = stats();
    let mut delays = Vec::new();
    for seq in 0..3000u64 {
        let send = 1_000_000_000 + seq * 1_000_000;
        let delay = rng.random_range(15_000_000..=25_000_000u64);
        delays.push(delay);
        st.on_datagram(seq, send, send + delay, send + delay, 100);
    }
    let (lo, hi) = (*delays.iter().min().unwrap(), *delays.iter().max().unwrap());
    let s = st.summary();
    let lat = s.latency.expect("latency");
    assert_eq!((lat.min_ns as u64, lat.max_ns as u64), (lo, hi));
    assert!(lat.min_ns >= 15_000_000);
    let pdv = s.pdv.expect("pdv");
    assert_eq!((pdv.min_ns, pdv.max_ns), (0, hi - lo));
    assert!(pdv.p50_ns <= pdv.max_ns);
}

#[test]
fn negative_delays_are_reported_as_measured() {
    let mut st = stats();
    st.on_datagram(0, 1000, 900, 900, 1);
    st.on_datagram(1, 1000, 1500, 1500, 1);
    let s = st.summary();
    assert_eq!(s.negative_delays, 1);
    let lat = s.latency.expect("latency");
    assert_eq!((lat.min_ns, lat.max_ns), (-100, 500));
    // IPDV uses the signed delays: 500 - (-100).
    assert_eq!(s.ipdv.expect("ipdv").max_ns, 600);
    assert_eq!(s.pdv.expect("pdv").max_ns, 600);
}

#[test]
fn a_clock_offset_shows_in_latency_and_cancels_in_pdv() {
    // The same path (delays 40..60 µs) measured with synchronised clocks and with a receiver
    // clock 10 ms behind the sender's.
    let delay = |seq: u64| 40_000 + (seq * 7919) % 20_001;
    let run = |receiver_behind_ns: u64| {
        let mut st = stats();
        for seq in 0..1000u64 {
            let send = 20_000_000 + seq * GAP_NS;
            st.on_datagram(
                seq,
                send,
                send + delay(seq) - receiver_behind_ns,
                send + delay(seq) - receiver_behind_ns,
                100,
            );
        }
        st.summary()
    };
    let lo = (0..1000).map(delay).min().unwrap() as i64;
    let hi = (0..1000).map(delay).max().unwrap() as i64;
    let (synced, offset) = (run(0), run(10_000_000));
    let (a, b) = (synced.latency.unwrap(), offset.latency.unwrap());
    assert_eq!((a.min_ns, a.max_ns), (lo, hi));
    assert_eq!((b.min_ns, b.max_ns), (lo - 10_000_000, hi - 10_000_000));
    assert!(b.p50_ns < 0 && b.p99_ns < 0 && b.mean_ns < 0.0, "{b:?}");
    assert_eq!(offset.negative_delays, 1000);
    // Every percentile moves by the offset (to the histogram's precision); PDV does not move.
    assert!((a.p50_ns - 10_000_000 - b.p50_ns).abs() <= 10_000_000 / 1000);
    let (pa, pb) = (synced.pdv.unwrap(), offset.pdv.unwrap());
    assert_eq!((pa.min_ns, pa.max_ns), (0, (hi - lo) as u64));
    assert_eq!((pb.min_ns, pb.max_ns), (0, (hi - lo) as u64));
    assert!(pb.p50_ns.abs_diff(pa.p50_ns) <= 10_000_000 / 1000);
    assert!(offset.clock_warning().is_some() && synced.clock_warning().is_none());
}

/// Adds interval rows the way a report would.
#[derive(Default, Debug, PartialEq)]
struct Sums {
    received: u64,
    received_bytes: u64,
    lost: u64,
    late: u64,
    stale: u64,
    duplicates: u64,
    reordered: u64,
    loss_periods: u64,
    loss_period_max: u64,
    reorder_extent_max: u64,
    n_reordered: [u64; 3],
    negative_delays: u64,
    latency_count: u64,
    ipdv_count: u64,
}

impl Sums {
    fn add(&mut self, s: &ReceiverStatsSummary) {
        self.received += s.received;
        self.received_bytes += s.received_bytes;
        self.lost += s.lost;
        self.late += s.late;
        self.stale += s.stale;
        self.duplicates += s.duplicates;
        self.reordered += s.reordered;
        self.loss_periods += s.loss_periods;
        self.loss_period_max = self.loss_period_max.max(s.loss_period_max);
        self.reorder_extent_max = self.reorder_extent_max.max(s.reorder_extent_max);
        for n in 0..3 {
            self.n_reordered[n] += s.n_reordered[n];
        }
        self.negative_delays += s.negative_delays;
        self.latency_count += s.latency.map_or(0, |l| l.count);
        self.ipdv_count += s.ipdv.map_or(0, |l| l.count);
    }

    fn of(s: &ReceiverStatsSummary) -> Self {
        let mut sums = Sums::default();
        sums.add(s);
        sums
    }
}

/// Adds every interval row that is final; returns how many.
fn drain_rows(st: &mut ReceiverStats, sums: &mut Sums) -> usize {
    std::iter::from_fn(|| st.poll_interval())
        .map(|row| sums.add(&row))
        .count()
}

#[test]
fn interval_deltas_add_up_to_run_totals() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let total = 50_000u64;
    // Tmax of 300 datagram gaps and a 512-sequence window: some displaced datagrams come late,
    // some very old copies are stale; loss is declared by time and by the window.
    let mut st = ReceiverStats::new(StatsConfig {
        window_bits: 512,
        loss_horizon_ns: 300 * GAP_NS,
        record_loss_ranges: false,
    });
    let arrivals = random_arrivals(&mut rng, total, 0.05, 0.02, 0.03, 2000);
    let mut sums = Sums::default();
    let (mut closed, mut published) = (0, 0);
    for (k, a) in arrivals.iter().enumerate() {
        let now = a.recv_ns;
        st.on_datagram(a.seq, a.send_ns, a.recv_ns, a.recv_ns, 200);
        if k % 97 == 0 {
            st.on_tick(now);
        }
        if k % 4000 == 3999 {
            st.close_interval(now);
            closed += 1;
            published += drain_rows(&mut st, &mut sums);
        }
    }
    assert!(published > 0, "rows are published while the test runs");
    let end = arrivals.last().expect("arrivals").recv_ns + 1;
    st.finish(total, end);
    st.close_interval(end);
    published += drain_rows(&mut st, &mut sums);
    assert_eq!(published, closed + 1);
    let run = st.summary();
    assert_eq!(sums, Sums::of(&run));
    assert!(run.late > 0 && run.stale > 0 && run.lost > 0 && run.reordered > 0);
    assert_eq!(run.received + run.lost, total);
    assert_eq!(run.expected, total);
}

#[derive(Debug, Clone, Copy)]
struct TestArrival {
    seq: u64,
    send_ns: u64,
    recv_ns: u64,
}

/// A seeded arrival order over sequences 0..total: `drop_p` of them lost (sometimes in bursts),
/// `dup_p` duplicated (the copy up to 30 positions later), `displace_p` moved up to
/// `max_displacement` positions later.
fn random_arrivals(
    rng: &mut ChaCha8Rng,
    total: u64,
    drop_p: f64,
    dup_p: f64,
    displace_p: f64,
    max_displacement: u64,
) -> Vec<TestArrival> {
    let mut keyed: Vec<(u64, u64)> = Vec::new(); // (order key, seq)
    let mut s = 0u64;
    while s < total {
        if rng.random_bool(drop_p) {
            // Burst of 1..=8 lost sequences.
            s += rng.random_range(1..=8u64);
            continue;
        }
        let mut key = s * 4;
        if rng.random_bool(displace_p) {
            key += rng.random_range(1..=max_displacement) * 4 + 1;
        }
        keyed.push((key, s));
        if rng.random_bool(dup_p) {
            keyed.push((key + rng.random_range(0..=30u64) * 4 + 2, s));
        }
        s += 1;
    }
    keyed.sort_by_key(|&(key, _)| key);
    keyed
        .into_iter()
        .enumerate()
        .map(|(k, (_, seq))| TestArrival {
            seq,
            send_ns: 1_000_000 + seq * GAP_NS,
            recv_ns: 1_000_000 + k as u64 * GAP_NS + DELAY_NS + rng.random_range(0..5_000u64),
        })
        .collect()
}

/// Straightforward (quadratic where it is simplest) reference for the differential test.
#[derive(Debug, Default, PartialEq)]
struct Reference {
    received: u64,
    received_bytes: u64,
    duplicates: u64,
    lost: u64,
    loss_periods: u64,
    loss_period_max: u64,
    reordered: u64,
    extent_max: u64,
    extent_buckets: Vec<ExtentBucket>,
    n_reordered: [u64; 3],
    ipdv_count: u64,
    first_recv_ns: Option<u64>,
    last_recv_ns: Option<u64>,
}

fn reference(arrivals: &[TestArrival], total: u64, bytes: impl Fn(u64) -> u64) -> Reference {
    let mut r = Reference::default();
    let mut seen = HashSet::new();
    let mut unique: Vec<TestArrival> = Vec::new();
    for a in arrivals {
        if seen.insert(a.seq) {
            unique.push(*a);
        } else {
            r.duplicates += 1;
        }
    }
    r.received = unique.len() as u64;
    r.received_bytes = unique.iter().map(|a| bytes(a.seq)).sum();
    r.lost = total - r.received;
    let mut run = 0u64;
    for s in 0..total {
        if seen.contains(&s) {
            run = 0;
        } else {
            if run == 0 {
                r.loss_periods += 1;
            }
            run += 1;
            r.loss_period_max = r.loss_period_max.max(run);
        }
    }
    let mut next_exp = 0u64;
    let mut counts = [0u64; EXTENT_BUCKETS];
    for (i, a) in unique.iter().enumerate() {
        if a.seq >= next_exp {
            next_exp = a.seq + 1;
            continue;
        }
        r.reordered += 1;
        let j = unique[..i]
            .iter()
            .position(|b| b.seq > a.seq)
            .expect("exists");
        let extent = (i - j) as u64;
        r.extent_max = r.extent_max.max(extent);
        counts[bucket_index(extent)] += 1;
        for n in 1..=3usize {
            if i >= n && unique[i - n..i].iter().all(|b| b.seq > a.seq) {
                r.n_reordered[n - 1] += 1;
            }
        }
    }
    r.extent_buckets = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(k, &count)| {
            let (lo, hi) = bucket_bounds(k);
            ExtentBucket { lo, hi, count }
        })
        .collect();
    r.ipdv_count = (0..total.saturating_sub(1))
        .filter(|k| seen.contains(k) && seen.contains(&(k + 1)))
        .count() as u64;
    r.first_recv_ns = unique.iter().map(|a| a.recv_ns).min();
    r.last_recv_ns = unique.iter().map(|a| a.recv_ns).max();
    r
}

#[test]
fn randomized_differential_against_reference() {
    for seed in [1u64, 2, 3] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let total = 20_000u64;
        let arrivals = random_arrivals(&mut rng, total, 0.02, 0.02, 0.04, 300);
        let bytes = |seq: u64| 100 + seq % 50;
        let want = reference(&arrivals, total, bytes);

        // The window covers the whole run and Tmax never passes: nothing is late or stale.
        let mut st = ReceiverStats::new(StatsConfig {
            window_bits: 1 << 15,
            loss_horizon_ns: u64::MAX,
            record_loss_ranges: true,
        });
        let mut interval_sums = Sums::default();
        for (k, a) in arrivals.iter().enumerate() {
            st.on_datagram(
                a.seq,
                a.send_ns,
                a.recv_ns,
                a.recv_ns,
                bytes(a.seq) as usize,
            );
            if k % 1500 == 0 {
                st.close_interval(a.recv_ns);
                drain_rows(&mut st, &mut interval_sums);
            }
        }
        st.finish(total, u64::MAX);
        st.close_interval(u64::MAX);
        drain_rows(&mut st, &mut interval_sums);
        let s = st.summary();
        let got = Reference {
            received: s.received,
            received_bytes: s.received_bytes,
            duplicates: s.duplicates,
            lost: s.lost,
            loss_periods: s.loss_periods,
            loss_period_max: s.loss_period_max,
            reordered: s.reordered,
            extent_max: s.reorder_extent_max,
            extent_buckets: s.reorder_extent.clone(),
            n_reordered: s.n_reordered,
            ipdv_count: s.ipdv.map_or(0, |i| i.count),
            first_recv_ns: s.first_recv_ns,
            last_recv_ns: s.last_recv_ns,
        };
        assert_eq!(got, want, "seed {seed}");
        assert!(want.reordered > 100 && want.duplicates > 100 && want.lost > 100);
        assert_eq!((s.late, s.stale), (0, 0));
        assert_eq!(interval_sums, Sums::of(&s), "seed {seed}");

        // Loss ranges reproduce exactly the missing set.
        let seen: HashSet<u64> = arrivals.iter().map(|a| a.seq).collect();
        let missing: Vec<u64> = (0..total).filter(|k| !seen.contains(k)).collect();
        let from_ranges: Vec<u64> = st.drain_loss_ranges().into_iter().flatten().collect();
        assert_eq!(from_ranges, missing);

        // Jitter: the same RFC 3550 recursion over unique arrivals in arrival order.
        let mut firsts = HashSet::new();
        let mut j = 0.0f64;
        let mut prev: Option<i64> = None;
        for a in arrivals.iter().filter(|a| firsts.insert(a.seq)) {
            let transit = a.recv_ns as i64 - a.send_ns as i64;
            if let Some(p) = prev {
                j += ((transit - p).unsigned_abs() as f64 - j) / 16.0;
            }
            prev = Some(transit);
        }
        assert_eq!(s.jitter_ns, j, "seed {seed}");
    }
}

#[test]
fn ipdv_percentiles_match_sorted_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let total = 5_000u64;
    let arrivals = random_arrivals(&mut rng, total, 0.02, 0.0, 0.05, 20);
    let mut st = stats();
    let mut delay = BTreeMap::new();
    for a in &arrivals {
        st.on_datagram(a.seq, a.send_ns, a.recv_ns, a.recv_ns, 1);
        delay.insert(a.seq, a.recv_ns as i64 - a.send_ns as i64);
    }
    let mut ipdv: Vec<i64> = (0..total - 1)
        .filter_map(|k| Some(delay.get(&(k + 1))? - delay.get(&k)?))
        .collect();
    ipdv.sort_unstable();
    let q = |p: f64| {
        let n = ipdv.len() as u64;
        ipdv[(((p * n as f64).ceil() as u64).clamp(1, n) - 1) as usize]
    };
    let close = |got: i64, want: i64| got.abs_diff(want) <= want.unsigned_abs() / 1024;
    let s = st.summary().ipdv.expect("ipdv");
    assert_eq!(s.count, ipdv.len() as u64);
    assert!(close(s.min_ns, ipdv[0]), "{} vs {}", s.min_ns, ipdv[0]);
    assert!(close(s.p01_ns, q(0.01)));
    assert!(close(s.p50_ns, q(0.5)));
    assert!(close(s.p99_ns, q(0.99)));
    assert!(close(s.max_ns, *ipdv.last().unwrap()));
    assert!(s.min_ns < 0 && s.max_ns > 0);
}

#[test]
fn memory_stays_fixed_over_five_million_datagrams() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut st = ReceiverStats::new(StatsConfig {
        window_bits: 1 << 12,
        loss_horizon_ns: 1_000_000,
        record_loss_ranges: true,
    });
    let before = st.capacity_bytes();
    let mut held_back: Option<u64> = None;
    let mut lost_in_ranges = 0u64;
    for seq in 0..5_000_000u64 {
        let now = seq * 1000;
        if rng.random_bool(0.01) {
            continue; // lost
        }
        if held_back.is_none() && rng.random_bool(0.01) {
            held_back = Some(seq); // delivered a little later: reordered
            continue;
        }
        st.on_datagram(seq, now, now + 20_000, now + 20_000, 64);
        if seq % 7 == 0
            && let Some(h) = held_back.take()
        {
            st.on_datagram(h, h * 1000, now + 20_000, now + 20_000, 64);
        }
        if seq % 100_000 == 0 {
            st.close_interval(now);
            while st.poll_interval().is_some() {}
            lost_in_ranges += range_lengths(st.drain_loss_ranges());
        }
    }
    st.finish(5_000_000, 5_000_000_000);
    let s = st.summary();
    assert_eq!(st.capacity_bytes(), before);
    assert_eq!(s.received + s.lost, 5_000_000);
    assert!(s.lost > 40_000 && s.reordered > 1000);
    lost_in_ranges += range_lengths(st.drain_loss_ranges());
    assert_eq!(lost_in_ranges, s.lost);
}

fn range_lengths(ranges: Vec<RangeInclusive<u64>>) -> u64 {
    ranges.into_iter().map(|r| r.end() - r.start() + 1).sum()
}
