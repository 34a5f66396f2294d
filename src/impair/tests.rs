//! Engine tests on a manual clock: exact behaviour of each stage, statistics within derived
//! bounds, determinism, and counters that agree with the fates.

use super::*;
use crate::time::ManualClock;

/// 99.9 % two-sided normal quantile.
const Z999: f64 = 3.29;
const STATS_N: usize = 200_000;

fn spec(text: &str) -> ImpairSpec {
    text.parse().unwrap_or_else(|e| panic!("`{text}`: {e}"))
}

/// One run of an engine on a manual clock: fates in offer order, releases in release order.
/// Times are offsets from the clock's start, so runs compare with each other.
struct Trace {
    offered_at: Vec<Duration>,
    fates: Vec<Fate>,
    /// (offer index, release time).
    released: Vec<(u64, Duration)>,
    /// Positions in `released` of each offer index.
    positions: Vec<Vec<usize>>,
    counters: ImpairCounters,
}

impl Trace {
    fn release_times(&self, idx: u64) -> Vec<Duration> {
        self.positions[idx as usize]
            .iter()
            .map(|&pos| self.released[pos].1)
            .collect()
    }

    fn position(&self, idx: u64) -> usize {
        self.positions[idx as usize][0]
    }

    fn count(&self, pred: impl Fn(&Fate) -> bool) -> u64 {
        self.fates.iter().filter(|f| pred(f)).count() as u64
    }

    /// Offer indices of the held-back datagrams, ascending.
    fn held(&self) -> Vec<u64> {
        (0..self.fates.len() as u64)
            .filter(|&i| {
                matches!(
                    self.fates[i as usize],
                    Fate::Passed {
                        held_back: true,
                        ..
                    }
                )
            })
            .collect()
    }
}

/// Releases everything due up to `until`, advancing the clock to each due time exactly.
fn release_until(
    engine: &mut Impairment<u64>,
    clock: &mut ManualClock,
    until: Option<Instant>,
    released: &mut Vec<(u64, Instant)>,
) {
    while let Some(due) = engine.poll_timeout() {
        if until.is_some_and(|until| due > until) {
            break;
        }
        clock.advance_to(due);
        while let Some(idx) = engine.poll_release(clock.now()) {
            released.push((idx, clock.now()));
        }
    }
}

/// Offers datagram i at `offers[i].0` with `offers[i].1` bytes, then drains.
fn run(spec_text: &str, offers: impl IntoIterator<Item = (Duration, usize)>) -> Trace {
    let mut engine = Impairment::new(&spec(spec_text));
    let mut clock = ManualClock::new(0);
    let start = clock.now();
    let mut offered_at = Vec::new();
    let mut fates = Vec::new();
    let mut released = Vec::new();
    for (i, (offset, len)) in offers.into_iter().enumerate() {
        let t = start + offset;
        release_until(&mut engine, &mut clock, Some(t), &mut released);
        clock.advance_to(t);
        offered_at.push(offset);
        fates.push(engine.handle(t, len, i as u64));
    }
    release_until(&mut engine, &mut clock, None, &mut released);
    assert_eq!(engine.pending(), 0);
    let released: Vec<(u64, Duration)> = released
        .into_iter()
        .map(|(idx, at)| (idx, at - start))
        .collect();
    let mut positions = vec![Vec::new(); fates.len()];
    for (pos, &(idx, _)) in released.iter().enumerate() {
        positions[idx as usize].push(pos);
    }
    Trace {
        offered_at,
        fates,
        released,
        positions,
        counters: engine.counters(),
    }
}

/// `n` datagrams of `len` bytes, one every `gap`.
fn evenly(n: usize, gap: Duration, len: usize) -> impl Iterator<Item = (Duration, usize)> {
    (0..n).map(move |i| (gap * i as u32, len))
}

fn binomial_bound(n: f64, p: f64) -> f64 {
    Z999 * (n * p * (1.0 - p)).sqrt()
}

fn assert_within(what: &str, measured: f64, expected: f64, bound: f64) {
    assert!(
        (measured - expected).abs() <= bound,
        "{what}: measured {measured}, expected {expected} ± {bound}"
    );
}

/// Checks every counter against the fates and the releases.
fn assert_counters_match(trace: &Trace) {
    let c = trace.counters;
    assert_eq!(c.offered, trace.fates.len() as u64);
    assert_eq!(c.dropped, trace.count(|f| *f == Fate::Dropped));
    assert_eq!(c.queue_dropped, trace.count(|f| *f == Fate::QueueDropped));
    let (mut copies, mut duplicated, mut delayed, mut held) = (0, 0, 0, 0);
    for fate in &trace.fates {
        if let Fate::Passed {
            copies: n,
            delayed: d,
            held_back: h,
        } = *fate
        {
            assert!(n == 1 || n == 2);
            copies += u64::from(n);
            duplicated += u64::from(n - 1);
            delayed += u64::from(d);
            held += u64::from(h);
        }
    }
    assert_eq!(c.duplicated, duplicated);
    assert_eq!(c.delayed, delayed);
    assert_eq!(c.reordered, held);
    assert_eq!(c.released, copies);
    assert_eq!(c.released, trace.released.len() as u64);
}

#[test]
fn noop_passes_everything_through_at_once_in_order() {
    let mut engine = Impairment::new(&spec("none"));
    let clock = ManualClock::new(0);
    let now = clock.now();
    for i in 0..1000u64 {
        let fate = engine.handle(now, 100, i);
        assert_eq!(
            fate,
            Fate::Passed {
                copies: 1,
                delayed: false,
                held_back: false
            }
        );
        assert_eq!(engine.poll_timeout(), Some(now));
        assert_eq!(engine.poll_release(now), Some(i));
        assert_eq!(engine.poll_release(now), None);
    }
    assert_eq!(engine.poll_timeout(), None);
    let trace = run("none", evenly(500, Duration::from_micros(3), 64));
    assert!(
        trace
            .released
            .iter()
            .enumerate()
            .all(|(pos, &(idx, at))| pos as u64 == idx && at == trace.offered_at[pos])
    );
    assert_counters_match(&trace);
}

#[test]
fn same_seed_same_fates_and_order_different_seed_differs() {
    let base = "loss=10%,dup=5%,rate=100M,queue=8K,delay=2ms,jitter=1ms:normal,reorder=5%:2";
    let offers = || evenly(20_000, Duration::from_micros(50), 1200);
    let a = run(&format!("{base},seed=42"), offers());
    let b = run(&format!("{base},seed=42"), offers());
    assert_eq!(a.fates, b.fates);
    assert_eq!(a.released, b.released);
    assert_eq!(a.counters, b.counters);
    let c = run(&format!("{base},seed=43"), offers());
    assert_ne!(a.fates, c.fates);
    assert_ne!(a.released, c.released);
    for trace in [&a, &c] {
        assert_counters_match(trace);
        // Every stage actually did something in this run.
        let k = trace.counters;
        assert!(k.dropped > 0 && k.queue_dropped > 0 && k.duplicated > 0 && k.reordered > 0);
    }
}

#[test]
fn stages_do_not_shift_each_others_decisions() {
    let offers = || evenly(20_000, Duration::from_micros(10), 100);
    let dropped = |t: &Trace| -> Vec<u64> {
        (0..t.fates.len() as u64)
            .filter(|&i| t.fates[i as usize] == Fate::Dropped)
            .collect()
    };
    let alone = run("loss=5%,seed=3", offers());
    let combined = run("loss=5%,dup=10%,jitter=1ms,reorder=3%,seed=3", offers());
    assert_eq!(dropped(&alone), dropped(&combined));
    // Same seed: a higher loss drops a superset.
    let more = run("loss=10%,seed=3", offers());
    let more_dropped = dropped(&more);
    assert!(more_dropped.len() > dropped(&alone).len());
    assert!(
        dropped(&alone)
            .iter()
            .all(|i| more_dropped.binary_search(i).is_ok())
    );
}

#[test]
fn bernoulli_loss_within_binomial_bounds() {
    for (text, p) in [("1%", 0.01), ("5%", 0.05), ("20%", 0.20)] {
        let trace = run(
            &format!("loss={text},seed=7"),
            evenly(STATS_N, Duration::from_micros(1), 100),
        );
        let n = STATS_N as f64;
        let lost = trace.count(|f| *f == Fate::Dropped) as f64;
        assert_within(&format!("loss={text}"), lost, n * p, binomial_bound(n, p));
        assert_counters_match(&trace);
    }
}

/// Loss bursts (runs of consecutive drops) that ended before the last datagram.
fn complete_bursts(fates: &[Fate]) -> Vec<u64> {
    let mut bursts = Vec::new();
    let mut run = 0;
    for fate in fates {
        if *fate == Fate::Dropped {
            run += 1;
        } else if run > 0 {
            bursts.push(run);
            run = 0;
        }
    }
    bursts
}

#[test]
fn bernoulli_bursts_are_geometric() {
    // Runs of losses are iid geometric: mean 1/(1−p), variance p/(1−p)².
    let p: f64 = 0.2;
    let trace = run(
        "loss=20%,seed=11",
        evenly(STATS_N, Duration::from_micros(1), 100),
    );
    let bursts = complete_bursts(&trace.fates);
    let count = bursts.len() as f64;
    let mean = bursts.iter().sum::<u64>() as f64 / count;
    let expected = spec("loss=20%").loss.expected_mean_burst().unwrap();
    assert_within(
        "bernoulli burst",
        mean,
        expected,
        Z999 * (p / (1.0 - p).powi(2) / count).sqrt(),
    );
}

/// 99.9 % bound on the number of GE losses among n datagrams.
///
/// The loss indicators are a two-state hidden Markov chain with second eigenvalue
/// λ = 1 − p − r. Their covariance at lag j ≥ 1 is πG·πB·(ℓB − ℓG)²·λʲ, so the asymptotic
/// variance of the count is n·[L(1−L) + 2·πG·πB·(ℓB − ℓG)²·λ/(1−λ)] (CLT for Markov chains).
/// Starting in Good rather than stationary shifts the expected count by at most
/// πB·|ℓB − ℓG|/(1 − |λ|), which is added.
fn ge_loss_bound(model: LossModel, n: f64) -> f64 {
    let LossModel::GilbertElliott { p, r, h, k } = model else {
        panic!("not GE");
    };
    let (p, r) = (p.as_f64(), r.as_f64());
    let (loss_good, loss_bad) = (1.0 - k.as_f64(), 1.0 - h.as_f64());
    let pi_bad = p / (p + r);
    let pi_good = 1.0 - pi_bad;
    let lambda = 1.0 - p - r;
    let mean = model.expected_loss();
    let spread = (loss_bad - loss_good).powi(2);
    let variance = mean * (1.0 - mean) + 2.0 * pi_good * pi_bad * spread * lambda / (1.0 - lambda);
    let start_bias = pi_bad * (loss_bad - loss_good).abs() / (1.0 - lambda.abs());
    Z999 * (n * variance).sqrt() + start_bias
}

#[test]
fn gilbert_loss_and_burst_length_match_analytic_values() {
    let text = "loss=ge:p=0.5%,r=20%,seed=5";
    let model = spec(text).loss;
    let trace = run(text, evenly(STATS_N, Duration::from_micros(1), 100));
    let n = STATS_N as f64;
    let lost = trace.count(|f| *f == Fate::Dropped) as f64;
    assert_within(
        "GE loss",
        lost,
        n * model.expected_loss(),
        ge_loss_bound(model, n),
    );
    // With h = 0, k = 100 % a burst is a stay in Bad: iid geometric with mean 1/r and variance
    // (1 − r)/r², so the mean of B bursts is within 3.29·sqrt((1 − r)/(r²·B)).
    let r = 0.2;
    let bursts = complete_bursts(&trace.fates);
    let count = bursts.len() as f64;
    assert!(count > 500.0, "{count} bursts");
    let mean = bursts.iter().sum::<u64>() as f64 / count;
    let expected = model.expected_mean_burst().unwrap();
    assert!((expected - 1.0 / r).abs() < 1e-9);
    assert_within(
        "GE burst",
        mean,
        expected,
        Z999 * ((1.0 - r) / (r * r * count)).sqrt(),
    );
    assert_counters_match(&trace);
}

#[test]
fn general_gilbert_elliott_loss_matches_analytic_value() {
    let text = "loss=ge:p=1%,r=10%,h=50%,k=99%,seed=8";
    let model = spec(text).loss;
    let trace = run(text, evenly(STATS_N, Duration::from_micros(1), 100));
    let n = STATS_N as f64;
    let lost = trace.count(|f| *f == Fate::Dropped) as f64;
    assert_within(
        "general GE loss",
        lost,
        n * model.expected_loss(),
        ge_loss_bound(model, n),
    );
}

#[test]
fn duplicates_follow_their_original_and_match_the_ratio() {
    // Jitter makes the release order differ from the offer order; copies still stick.
    let trace = run(
        "dup=5%,delay=1ms,jitter=1ms,seed=2",
        evenly(STATS_N, Duration::from_micros(5), 100),
    );
    let n = STATS_N as f64;
    let duplicated = trace.count(|f| matches!(f, Fate::Passed { copies: 2, .. })) as f64;
    assert_within("dup", duplicated, n * 0.05, binomial_bound(n, 0.05));
    let mut seen_copies = 0;
    for pair in trace.released.windows(2) {
        if pair[0].0 == pair[1].0 {
            assert_eq!(pair[0].1, pair[1].1, "copy released at the same time");
            seen_copies += 1;
        }
    }
    assert_eq!(seen_copies, trace.counters.duplicated);
    for (idx, fate) in trace.fates.iter().enumerate() {
        let expected = match fate {
            Fate::Passed { copies, .. } => usize::from(*copies),
            _ => 0,
        };
        assert_eq!(trace.release_times(idx as u64).len(), expected);
    }
    assert_counters_match(&trace);
}

#[test]
fn reorder_ratio_within_binomial_bounds() {
    let trace = run(
        "reorder=2%:2,seed=4",
        evenly(STATS_N, Duration::from_micros(1), 100),
    );
    let n = STATS_N as f64;
    let held = trace.held().len() as f64;
    assert_within("reorder", held, n * 0.02, binomial_bound(n, 0.02));
    assert_counters_match(&trace);
}

/// RFC 4737 extent of each reordered datagram, as (offer index, extent).
fn reorder_extents(released: &[(u64, Duration)]) -> Vec<(u64, usize)> {
    // prefix_max[j] = largest index among released[..=j]: non-decreasing, so the first earlier
    // arrival with a larger index is a binary search away.
    let mut prefix_max: Vec<u64> = Vec::with_capacity(released.len());
    let mut extents = Vec::new();
    for (pos, &(idx, _)) in released.iter().enumerate() {
        let max_before = prefix_max.last().copied();
        if max_before.is_some_and(|m| idx < m) {
            let first_later = prefix_max.partition_point(|&m| m <= idx);
            extents.push((idx, pos - first_later));
        }
        prefix_max.push(max_before.map_or(idx, |m| m.max(idx)));
    }
    extents
}

#[test]
fn isolated_held_datagram_has_exact_extent_and_composes_with_delay() {
    let n_after = 3u64;
    let delay = Duration::from_millis(20);
    let gap = Duration::from_millis(1);
    let trace = run("reorder=4%:3,delay=20ms,seed=6", evenly(20_000, gap, 100));
    let held = trace.held();
    let last = trace.fates.len() as u64 - 1;
    let isolated: Vec<u64> = held
        .iter()
        .copied()
        .filter(|&i| i + n_after <= last && held.iter().all(|&j| j == i || j.abs_diff(i) > n_after))
        .collect();
    assert!(isolated.len() > 100, "{} isolated", isolated.len());
    let extents = reorder_extents(&trace.released);
    for &i in &isolated {
        let pos = trace.position(i);
        // Released right after i+1..=i+N, at the N-th one's (delayed) release time.
        let before: Vec<u64> = trace.released[pos - n_after as usize..pos]
            .iter()
            .map(|&(idx, _)| idx)
            .collect();
        assert_eq!(before, (i + 1..=i + n_after).collect::<Vec<_>>());
        let trigger_at = trace.offered_at[(i + n_after) as usize] + delay;
        assert_eq!(trace.release_times(i), vec![trigger_at]);
        let extent = extents.iter().find(|&&(idx, _)| idx == i).map(|&(_, e)| e);
        assert_eq!(extent, Some(n_after as usize));
    }
    // Non-held datagrams keep exactly the configured delay.
    for (idx, fate) in trace.fates.iter().enumerate() {
        if let Fate::Passed {
            held_back: false,
            delayed,
            ..
        } = *fate
        {
            assert!(delayed);
            assert_eq!(
                trace.release_times(idx as u64),
                vec![trace.offered_at[idx] + delay]
            );
        }
    }
    assert_counters_match(&trace);
}

#[test]
fn extent_one_goes_right_after_the_next_datagram_and_its_copy() {
    let trace = run(
        "reorder=10%,dup=30%,seed=12",
        evenly(10_000, Duration::from_micros(100), 100),
    );
    let held = trace.held();
    let mut checked = 0;
    for &i in &held {
        let next = i + 1;
        if next as usize >= trace.fates.len()
            || held.binary_search(&next).is_ok()
            || held.binary_search(&(i - 1)).is_ok()
        {
            continue;
        }
        let pos = trace.position(i);
        let trigger_copies = trace.release_times(next).len();
        let before: Vec<u64> = trace.released[pos - trigger_copies..pos]
            .iter()
            .map(|&(idx, _)| idx)
            .collect();
        assert_eq!(before, vec![next; trigger_copies]);
        checked += 1;
    }
    assert!(checked > 100);
    assert_counters_match(&trace);
}

#[test]
fn hold_timeout_releases_when_too_few_follow() {
    // Everything held: nothing ever triggers, so each goes at its own time + hold, in order.
    let trace = run(
        "reorder=100%:2,reorder-hold=50ms,seed=1",
        evenly(5, Duration::from_millis(1), 100),
    );
    let hold = Duration::from_millis(50);
    let expected: Vec<(u64, Duration)> = (0..5)
        .map(|i| (i, trace.offered_at[i as usize] + hold))
        .collect();
    assert_eq!(trace.released, expected);

    // Offer until one is held, then fewer than N later ones: it times out after them.
    let text = "reorder=30%:3,reorder-hold=40ms,seed=9";
    let mut engine = Impairment::new(&spec(text));
    let mut clock = ManualClock::new(0);
    let start = clock.now();
    let mut i = 0u64;
    loop {
        let fate = engine.handle(clock.now(), 100, i);
        if matches!(
            fate,
            Fate::Passed {
                held_back: true,
                ..
            }
        ) {
            break;
        }
        assert_eq!(engine.poll_release(clock.now()), Some(i));
        clock.advance(Duration::from_millis(1));
        i += 1;
    }
    let held_idx = i;
    let held_at = clock.now();
    let mut not_held_followers = Vec::new();
    for follower in held_idx + 1..=held_idx + 2 {
        clock.advance(Duration::from_millis(1));
        let fate = engine.handle(clock.now(), 100, follower);
        if matches!(
            fate,
            Fate::Passed {
                held_back: false,
                ..
            }
        ) {
            not_held_followers.push(follower);
        }
    }
    let mut released = Vec::new();
    release_until(&mut engine, &mut clock, None, &mut released);
    let held_pos = released.iter().position(|&(idx, _)| idx == held_idx);
    let held_pos = held_pos.expect("held datagram released");
    assert_eq!(released[held_pos].1, held_at + Duration::from_millis(40));
    // Followers not held went out at their own time, before the timed-out one.
    for follower in not_held_followers {
        let pos = released.iter().position(|&(idx, _)| idx == follower);
        assert!(pos.is_some_and(|pos| pos < held_pos), "{follower}");
    }
    assert!(released.iter().all(|&(_, at)| at >= start));
    assert_eq!(engine.pending(), 0);
}

#[test]
fn rate_limiter_spaces_departures_exactly() {
    // 1000 bytes at 8 Mbit/s serialize in exactly 1 ms.
    let trace = run("rate=8M,queue=64K", (0..10).map(|_| (Duration::ZERO, 1000)));
    let expected: Vec<(u64, Duration)> =
        (0..10).map(|i| (i, Duration::from_millis(i + 1))).collect();
    assert_eq!(trace.released, expected);

    // A rate that does not divide: cumulative departure k is floor(k·len·8·10⁹/rate), no drift;
    // the delay adds on top.
    let (len, rate) = (1000u64, 3_000_000u64);
    let trace = run(
        "rate=3M,queue=1M,delay=5ms",
        (0..1000).map(|_| (Duration::ZERO, len as usize)),
    );
    for (k, &(idx, at)) in trace.released.iter().enumerate() {
        assert_eq!(idx, k as u64);
        let ns = (k as u64 + 1) * len * 8 * 1_000_000_000 / rate;
        assert_eq!(at, Duration::from_millis(5) + Duration::from_nanos(ns));
    }

    // An idle link starts fresh: departure = arrival + serialization.
    let trace = run(
        "rate=8M",
        [(Duration::ZERO, 500), (Duration::from_secs(1), 1000)],
    );
    assert_eq!(
        trace.release_times(1),
        vec![Duration::from_secs(1) + Duration::from_millis(1)]
    );
}

#[test]
fn rate_limiter_tail_drops_when_the_queue_is_full() {
    // Queue of 3000 bytes: a burst of five 1000-byte datagrams keeps three; 1 ms later the first
    // has departed and one more fits behind the third.
    let mut offers: Vec<(Duration, usize)> = (0..5).map(|_| (Duration::ZERO, 1000)).collect();
    offers.push((Duration::from_millis(1), 1000));
    offers.push((Duration::from_millis(1), 1000));
    let trace = run("rate=8M,queue=3000", offers);
    let passed = Fate::Passed {
        copies: 1,
        delayed: false,
        held_back: false,
    };
    assert_eq!(
        trace.fates,
        vec![
            passed,
            passed,
            passed,
            Fate::QueueDropped,
            Fate::QueueDropped,
            passed,
            Fate::QueueDropped
        ]
    );
    assert_eq!(trace.counters.queue_dropped, 2 + 1);
    assert_eq!(trace.release_times(5), vec![Duration::from_millis(4)]);
    assert_counters_match(&trace);

    // A duplicate pair that does not fit keeps only the original.
    let mut engine = Impairment::new(&spec("dup=100%,rate=8M,queue=1500"));
    let now = ManualClock::new(0).now();
    assert_eq!(
        engine.handle(now, 1000, 0u64),
        Fate::Passed {
            copies: 1,
            delayed: false,
            held_back: false
        }
    );
    assert_eq!(engine.counters().duplicated, 0);
    assert_eq!(engine.flush_all(), vec![0]);
}

fn delays_ns(trace: &Trace) -> Vec<i128> {
    let mut delays: Vec<i128> = trace
        .released
        .iter()
        .map(|&(idx, at)| (at - trace.offered_at[idx as usize]).as_nanos() as i128)
        .collect();
    delays.sort_unstable();
    delays
}

#[test]
fn uniform_jitter_stays_in_range_and_centres_on_the_delay() {
    let (delay, jitter) = (10_000_000i128, 2_000_000i128);
    let trace = run(
        "delay=10ms,jitter=2ms:uniform,seed=13",
        evenly(STATS_N, Duration::from_micros(10), 100),
    );
    let delays = delays_ns(&trace);
    let min = delays[0];
    let max = delays[delays.len() - 1];
    let median = delays[delays.len() / 2];
    assert!(
        min >= delay - jitter && max <= delay + jitter,
        "{min}..{max}"
    );
    // The sample reaches close to both ends of the range.
    assert!(min < delay - jitter + jitter / 100 && max > delay + jitter - jitter / 100);
    assert!((median - delay).abs() <= jitter / 100, "median {median}");
    // Jitter larger than the gap reorders.
    assert!(reorder_extents(&trace.released).len() > 1000);
    assert_counters_match(&trace);
}

#[test]
fn normal_jitter_has_the_configured_standard_deviation() {
    let (delay, jitter) = (50e6, 2e6);
    let trace = run(
        "delay=50ms,jitter=2ms:normal,seed=14",
        evenly(STATS_N, Duration::from_micros(10), 100),
    );
    let delays = delays_ns(&trace);
    let n = delays.len() as f64;
    let mean = delays.iter().map(|&d| d as f64).sum::<f64>() / n;
    let variance = delays
        .iter()
        .map(|&d| (d as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    let std = variance.sqrt();
    assert!((std - jitter).abs() <= 0.02 * jitter, "std {std}");
    assert_within("normal mean", mean, delay, Z999 * jitter / n.sqrt());
}

#[test]
fn jitter_larger_than_delay_is_clamped_at_zero() {
    // Offsets in −j..=j: those ≤ −delay are clamped to no extra delay at all.
    let (delay, jitter) = (1_000u64, 1_000_000u64);
    let trace = run(
        "delay=1us,jitter=1ms,seed=15",
        evenly(STATS_N, Duration::from_micros(10), 100),
    );
    let undelayed = trace.count(|f| matches!(f, Fate::Passed { delayed: false, .. })) as f64;
    let p = (jitter - delay + 1) as f64 / (2 * jitter + 1) as f64;
    let n = STATS_N as f64;
    assert_within("clamped", undelayed, n * p, binomial_bound(n, p));
    for &(idx, at) in &trace.released {
        let offered = trace.offered_at[idx as usize];
        assert!(at >= offered);
        let delayed = matches!(
            trace.fates[idx as usize],
            Fate::Passed { delayed: true, .. }
        );
        assert_eq!(delayed, at > offered);
    }
    assert_counters_match(&trace);
}

#[test]
fn flush_all_returns_pending_in_release_order() {
    let text = "dup=10%,delay=1s,jitter=100ms,reorder=10%:2,seed=21";
    let offers: Vec<(Duration, usize)> = evenly(2000, Duration::from_micros(100), 100).collect();
    let drained = run(text, offers.clone());
    let mut engine = Impairment::new(&spec(text));
    let start = ManualClock::new(0).now();
    for (i, &(offset, len)) in offers.iter().enumerate() {
        engine.handle(start + offset, len, i as u64);
    }
    assert_eq!(engine.pending() as u64, drained.counters.released);
    let flushed = engine.flush_all();
    let expected: Vec<u64> = drained.released.iter().map(|&(idx, _)| idx).collect();
    assert_eq!(flushed, expected);
    assert_eq!(engine.pending(), 0);
    assert_eq!(engine.counters(), drained.counters);
}

#[test]
fn everything_combined_keeps_counters_consistent() {
    let trace = run(
        "loss=ge:p=2%,r=30%,h=20%,k=99%,dup=3%,rate=50M,queue=16K,delay=3ms,jitter=500us,reorder=3%:2,reorder-hold=20ms,seed=99",
        (0..50_000).map(|i| {
            (
                Duration::from_micros(20 * i),
                200 + (i as usize * 37) % 1200,
            )
        }),
    );
    assert_counters_match(&trace);
    let c = trace.counters;
    assert!(c.dropped > 0 && c.queue_dropped > 0 && c.duplicated > 0 && c.reordered > 0);
}

#[test]
fn earlier_now_is_treated_as_the_previous_offer_time() {
    let mut engine = Impairment::new(&spec("delay=1ms"));
    let mut clock = ManualClock::new(0);
    let early = clock.now();
    clock.advance(Duration::from_millis(5));
    let late = clock.now();
    engine.handle(late, 10, 0u64);
    engine.handle(early, 10, 1);
    let due = late + Duration::from_millis(1);
    assert_eq!(engine.poll_timeout(), Some(due));
    assert_eq!(engine.poll_release(due), Some(0));
    assert_eq!(engine.poll_release(due), Some(1));
}
