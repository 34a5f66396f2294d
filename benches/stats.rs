//! Criterion benchmarks of the receiver's per-datagram accounting (`ReceiverStats::on_datagram`).
//!
//! One iteration = one datagram, in steady state, at a simulated 1 Mpps: sender timestamps
//! every 1 µs, receive = send + 50 µs + up to ~1 µs of deterministic jitter. Every 1024
//! datagrams `on_tick` runs (time-based loss finalization, as a receive loop would), and every
//! 1,000,000 datagrams (1 s) `close_interval` closes an interval (histogram merge + reset) and
//! the final rows are polled; both are included, amortised over the datagrams. The window is sized for rate x Tmax
//! (2^20 sequences for 1 Mpps x 1 s).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use udplab::stats::{ReceiverStats, StatsConfig};

const GAP_NS: u64 = 1_000;
const DELAY_NS: u64 = 50_000;
const TICK_EVERY: u64 = 1024;
const INTERVAL_EVERY: u64 = 1_000_000;

fn new_stats() -> ReceiverStats {
    ReceiverStats::new(StatsConfig {
        window_bits: 1 << 20,
        loss_horizon_ns: 1_000_000_000,
        record_loss_ranges: false,
    })
}

/// Feeds the next delivered datagram; `seq` advances past dropped ones.
#[inline(always)]
fn deliver(stats: &mut ReceiverStats, seq: u64, count: &mut u64) {
    let send = 1_000_000_000 + seq * GAP_NS;
    // Cheap deterministic jitter (0..1023 ns) without an RNG on the measured path.
    let recv = send + DELAY_NS + (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54);
    // The monotonic clock runs with the receive timestamps here (no clock step).
    black_box(stats.on_datagram(black_box(seq), send, recv, recv, 1200));
    *count += 1;
    if count.is_multiple_of(TICK_EVERY) {
        stats.on_tick(recv);
    }
    if count.is_multiple_of(INTERVAL_EVERY) {
        stats.close_interval(recv);
        while let Some(row) = stats.poll_interval() {
            black_box(row);
        }
    }
}

fn bench_in_order(c: &mut Criterion) {
    let mut group = c.benchmark_group("stats");
    group.throughput(Throughput::Elements(1));
    group.bench_function("stats_on_datagram_in_order", |b| {
        let mut stats = new_stats();
        let (mut seq, mut count) = (0u64, 0u64);
        b.iter(|| {
            deliver(&mut stats, seq, &mut count);
            seq += 1;
        });
    });
    group.bench_function("stats_on_datagram_with_loss_1pct", |b| {
        // Drop pattern precomputed (1 % Bernoulli), indexed by sequence.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let dropped: Vec<bool> = (0..1 << 16).map(|_| rng.random_bool(0.01)).collect();
        let mask = dropped.len() as u64 - 1;
        let mut stats = new_stats();
        let (mut seq, mut count) = (0u64, 0u64);
        b.iter(|| {
            while dropped[(seq & mask) as usize] {
                seq += 1;
            }
            deliver(&mut stats, seq, &mut count);
            seq += 1;
        });
    });
    group.finish();
}

criterion_group!(benches, bench_in_order);
criterion_main!(benches);
