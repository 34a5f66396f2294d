//! Seeded, sans-IO impairment engine: decides each datagram's fate (loss, duplication, rate
//! limiting, delay, jitter, reordering) and when it is released, from a caller-supplied clock.
//!
//! Shared by the sender (impairment applied before the socket) and by `udplab proxy` (one engine
//! per direction). It never reads a clock, sleeps or touches a socket: the driver offers
//! datagrams with [`Impairment::handle`], sleeps until [`Impairment::poll_timeout`], and takes
//! what is due with [`Impairment::poll_release`].
//!
//! # Pipeline
//!
//! Each offered datagram goes through, in this order:
//!
//! 1. **loss**: Bernoulli or Gilbert-Elliott ([`GE_HELP`]); a lost datagram is
//!    [`Fate::Dropped`].
//! 2. **dup**: with probability P an extra copy, released right after the original at the same
//!    time (the pair travels together through the later stages).
//! 3. **rate**: a bottleneck link of `rate` bit/s with a byte queue. The queue holds the bytes
//!    accepted and not yet fully serialized (the one on the wire included); an arrival that would
//!    push it past `queue` is tail-dropped ([`Fate::QueueDropped`]). Otherwise it departs at
//!    `max(now, link_free_at) + len·8/rate`, computed in whole nanoseconds with the remainder
//!    carried, so back-to-back spacing is exact over any number of datagrams. A duplicate pair
//!    occupies the link twice; if only the original fits, the copy is not made.
//! 4. **delay + jitter**: release = departure + delay + jitter sample, never before the
//!    departure. Uniform jitter is U(−j, +j) in whole nanoseconds; normal jitter is N(0, j²)
//!    rounded to the nanosecond. Jitter alone reorders datagrams, as on a real path.
//! 5. **reorder**: with probability P a datagram is held back until N later datagrams (offered
//!    after it; copies not counted) have been released, and goes right after the N-th (and its
//!    copy). For an isolated held datagram that is an RFC 4737 reordering extent of exactly N,
//!    whatever the rate. It is never released before its own delayed time, and at the latest
//!    `reorder-hold` after it, so nothing is held forever.
//!
//! # Determinism
//!
//! Each stage has its own ChaCha8 stream (seeded from `seed`, stream id per stage) and draws a
//! fixed amount per offered datagram, dropped or not. So the same seed and the same sequence of
//! `(now, len)` give the same fates on every run and machine, and changing one stage's settings
//! leaves the other stages' per-datagram decisions unchanged (with the same seed, `loss=1%` drops
//! a subset of what `loss=2%` drops). Decisions use integer arithmetic (probabilities are exact
//! parts per billion); the only floating point is the normal jitter sample.
//!
//! # Cost
//!
//! With a no-op spec, datagrams go through a FIFO and out at once. Without jitter, release
//! times are non-decreasing, so a FIFO replaces the heap. Memory is what is in flight: the rate
//! queue, the delay window, and held datagrams (at most `reorder-hold` worth).

mod spec;
mod units;

pub use spec::{
    DEFAULT_QUEUE_BYTES, DEFAULT_REORDER_HOLD, DEFAULT_SEED, GE_HELP, IMPAIR_HELP, ImpairError,
    ImpairSpec, Jitter, JitterDist, LossModel, Probability, RateLimit, Reorder,
};

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::summary::ImpairCounters;
use units::PPB_FULL;

/// What [`Impairment::handle`] decided for one offered datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fate {
    /// Lost by the loss model.
    Dropped,
    /// Tail-dropped by the rate limiter's full queue.
    QueueDropped,
    /// Will be released: `copies` is 2 when duplicated; `delayed` when delay + jitter came to
    /// more than zero; `held_back` when the reorder stage holds it behind later datagrams.
    Passed {
        copies: u8,
        delayed: bool,
        held_back: bool,
    },
}

// Stream ids keep the stages' random sequences independent of one another.
const STREAM_LOSS: u64 = 1;
const STREAM_DUP: u64 = 2;
const STREAM_JITTER: u64 = 3;
const STREAM_REORDER: u64 = 4;

fn stage_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// True with probability `p`, decided on integers so it is exact and portable.
fn chance(rng: &mut ChaCha8Rng, p: Probability) -> bool {
    rng.random_range(0..PPB_FULL) < p.ppb()
}

struct LossStage {
    model: LossModel,
    in_bad: bool,
    rng: ChaCha8Rng,
}

impl LossStage {
    fn lose(&mut self) -> bool {
        match self.model {
            LossModel::None => false,
            LossModel::Bernoulli { p } => chance(&mut self.rng, p),
            LossModel::GilbertElliott { p, r, h, k } => {
                // Transition first, then the state's delivery probability (see GE_HELP).
                let leave = if self.in_bad { r } else { p };
                if chance(&mut self.rng, leave) {
                    self.in_bad = !self.in_bad;
                }
                let deliver = if self.in_bad { h } else { k };
                !chance(&mut self.rng, deliver)
            }
        }
    }
}

struct RateStage {
    bits_per_sec: u64,
    queue_limit: u64,
    /// When the link finishes serializing everything accepted so far.
    link_free_at: Option<Instant>,
    /// Fractional nanosecond of `link_free_at`, as a numerator over `bits_per_sec`.
    carry: u64,
    /// (departure, bytes) of what is accepted and not yet departed, in departure order.
    in_flight: VecDeque<(Instant, u64)>,
    queued_bytes: u64,
}

impl RateStage {
    /// Admits `copies` datagrams of `len` bytes arriving at `now`: their common departure time
    /// and how many were admitted, or `None` when the original does not fit the queue.
    fn admit(&mut self, now: Instant, len: u64, copies: u8) -> Option<(Instant, u8)> {
        while let Some(&(departure, bytes)) = self.in_flight.front() {
            if departure > now {
                break;
            }
            self.in_flight.pop_front();
            self.queued_bytes -= bytes;
        }
        let room = self.queue_limit.saturating_sub(self.queued_bytes);
        if len > room {
            return None;
        }
        let copies = if copies == 2 && 2 * len > room {
            1
        } else {
            copies
        };
        let bytes = len * u64::from(copies);
        let start = match self.link_free_at {
            Some(free) if free >= now => free,
            _ => {
                self.carry = 0;
                now
            }
        };
        let numerator = u128::from(bytes) * 8 * 1_000_000_000 + u128::from(self.carry);
        let rate = u128::from(self.bits_per_sec);
        let serialization_ns = u64::try_from(numerator / rate).unwrap_or(u64::MAX);
        self.carry = (numerator % rate) as u64;
        let departure = start + Duration::from_nanos(serialization_ns);
        self.link_free_at = Some(departure);
        self.in_flight.push_back((departure, bytes));
        self.queued_bytes += bytes;
        Some((departure, copies))
    }
}

enum JitterSampler {
    Uniform,
    Normal,
}

struct JitterStage {
    amount_ns: i64,
    sampler: JitterSampler,
    rng: ChaCha8Rng,
}

impl JitterStage {
    /// Signed offset in nanoseconds.
    fn sample(&mut self) -> i64 {
        match self.sampler {
            JitterSampler::Uniform => self.rng.random_range(-self.amount_ns..=self.amount_ns),
            JitterSampler::Normal => {
                let z: f64 = StandardNormal.sample(&mut self.rng);
                // `as` saturates; only absurd multi-century jitter could get there.
                (z * self.amount_ns as f64).round() as i64
            }
        }
    }
}

/// An accepted datagram and its duplicate, if any.
struct Unit<T> {
    /// Offer order.
    idx: u64,
    item: T,
    copy: Option<T>,
}

/// A unit due at `at`, ordered so the max-heap pops the earliest (ties: offer order).
struct Scheduled<T> {
    at: Instant,
    unit: Unit<T>,
}

impl<T> Scheduled<T> {
    fn key(&self) -> (Instant, u64) {
        (self.at, self.unit.idx)
    }
}

impl<T> PartialEq for Scheduled<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<T> Eq for Scheduled<T> {}

impl<T> PartialOrd for Scheduled<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Scheduled<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// Units waiting for their release time, earliest first.
enum ReleaseQueue<T> {
    /// Release times arrive non-decreasing (no jitter): a FIFO, no heap work.
    Fifo(VecDeque<Scheduled<T>>),
    Heap(BinaryHeap<Scheduled<T>>),
}

impl<T> ReleaseQueue<T> {
    fn push(&mut self, scheduled: Scheduled<T>) {
        match self {
            ReleaseQueue::Fifo(fifo) => {
                if fifo.back().is_none_or(|last| last.key() <= scheduled.key()) {
                    fifo.push_back(scheduled);
                } else {
                    // Not expected without jitter; kept correct rather than assumed.
                    let pos = fifo.partition_point(|s| s.key() <= scheduled.key());
                    fifo.insert(pos, scheduled);
                }
            }
            ReleaseQueue::Heap(heap) => heap.push(scheduled),
        }
    }

    fn peek_key(&self) -> Option<(Instant, u64)> {
        match self {
            ReleaseQueue::Fifo(fifo) => fifo.front().map(Scheduled::key),
            ReleaseQueue::Heap(heap) => heap.peek().map(Scheduled::key),
        }
    }

    fn pop(&mut self) -> Option<Scheduled<T>> {
        match self {
            ReleaseQueue::Fifo(fifo) => fifo.pop_front(),
            ReleaseQueue::Heap(heap) => heap.pop(),
        }
    }
}

/// A held-back unit waiting for `remaining` later releases or its deadline.
struct Held<T> {
    unit: Unit<T>,
    /// Its own release time from the earlier stages.
    at: Instant,
    deadline: Instant,
    remaining: u32,
}

struct ReorderStage<T> {
    p: Probability,
    extent: u32,
    hold: Duration,
    rng: ChaCha8Rng,
    /// In offer order. Every release of a later datagram decrements all older entries, so
    /// `remaining` is non-decreasing along the deque and the entries reaching zero are always a
    /// prefix; each entry is decremented at most `extent` times, so the work is amortized O(N).
    held: VecDeque<Held<T>>,
    deadlines: BTreeSet<(Instant, u64)>,
    /// Triggered units, released right after the datagram that triggered them.
    ready: VecDeque<Unit<T>>,
}

impl<T> ReorderStage<T> {
    fn hold(&mut self, unit: Unit<T>, at: Instant) {
        let deadline = at + self.hold;
        self.deadlines.insert((deadline, unit.idx));
        self.held.push_back(Held {
            unit,
            at,
            deadline,
            remaining: self.extent,
        });
    }

    /// Removes the held unit whose deadline `(deadline, idx)` has come.
    fn take_timed_out(&mut self, deadline: Instant, idx: u64) -> Option<Unit<T>> {
        self.deadlines.remove(&(deadline, idx));
        let pos = self.held.binary_search_by_key(&idx, |h| h.unit.idx).ok()?;
        self.held.remove(pos).map(|h| h.unit)
    }

    /// Counts the release of datagram `idx` at `at` toward every older held datagram.
    fn on_release(&mut self, idx: u64, at: Instant, queue: &mut ReleaseQueue<T>) {
        for held in self.held.iter_mut() {
            if held.unit.idx >= idx {
                break;
            }
            held.remaining -= 1;
        }
        while self.held.front().is_some_and(|h| h.remaining == 0) {
            let Some(held) = self.held.pop_front() else {
                break;
            };
            self.deadlines.remove(&(held.deadline, held.unit.idx));
            if held.at <= at {
                self.ready.push_back(held.unit);
            } else {
                // Jitter already made it later than the trigger: keep its own time.
                queue.push(Scheduled {
                    at: held.at,
                    unit: held.unit,
                });
            }
        }
    }
}

/// The impairment engine for one direction. `T` is the datagram (cloned only for duplicates).
pub struct Impairment<T> {
    loss: Option<LossStage>,
    dup: Option<(Probability, ChaCha8Rng)>,
    rate: Option<RateStage>,
    delay_ns: u64,
    jitter: Option<JitterStage>,
    reorder: Option<ReorderStage<T>>,
    queue: ReleaseQueue<T>,
    next_idx: u64,
    last_offer: Option<Instant>,
    /// Due time of the last release: triggered units and copies are due then.
    last_release: Option<Instant>,
    pending_copy: Option<T>,
    /// Datagrams (copies included) accepted and not yet released.
    pending: usize,
    counters: ImpairCounters,
}

impl<T> std::fmt::Debug for Impairment<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Impairment")
            .field("pending", &self.pending)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<T: Clone> Impairment<T> {
    pub fn new(spec: &ImpairSpec) -> Self {
        let seed = spec.seed;
        let loss = (spec.loss != LossModel::None).then(|| LossStage {
            model: spec.loss,
            in_bad: false,
            rng: stage_rng(seed, STREAM_LOSS),
        });
        let dup = (!spec.dup.is_zero()).then(|| (spec.dup, stage_rng(seed, STREAM_DUP)));
        let rate = spec.rate.map(|rate| RateStage {
            bits_per_sec: rate.bits_per_sec.max(1),
            queue_limit: rate.queue_bytes,
            link_free_at: None,
            carry: 0,
            in_flight: VecDeque::new(),
            queued_bytes: 0,
        });
        let jitter = spec
            .jitter
            .filter(|j| !j.amount.is_zero())
            .map(|j| JitterStage {
                amount_ns: i64::try_from(j.amount.as_nanos()).unwrap_or(i64::MAX),
                sampler: match j.dist {
                    JitterDist::Uniform => JitterSampler::Uniform,
                    JitterDist::Normal => JitterSampler::Normal,
                },
                rng: stage_rng(seed, STREAM_JITTER),
            });
        let reorder = spec
            .reorder
            .filter(|r| !r.p.is_zero())
            .map(|r| ReorderStage {
                p: r.p,
                extent: r.extent.max(1),
                hold: r.hold,
                rng: stage_rng(seed, STREAM_REORDER),
                held: VecDeque::new(),
                deadlines: BTreeSet::new(),
                ready: VecDeque::new(),
            });
        let queue = if jitter.is_some() {
            ReleaseQueue::Heap(BinaryHeap::new())
        } else {
            ReleaseQueue::Fifo(VecDeque::new())
        };
        Impairment {
            loss,
            dup,
            rate,
            delay_ns: u64::try_from(spec.delay.as_nanos()).unwrap_or(u64::MAX),
            jitter,
            reorder,
            queue,
            next_idx: 0,
            last_offer: None,
            last_release: None,
            pending_copy: None,
            pending: 0,
            counters: ImpairCounters::default(),
        }
    }

    /// Offers a datagram of `len` bytes at `now` (non-decreasing across calls; an earlier `now`
    /// is treated as the previous one) and says what will happen to it.
    pub fn handle(&mut self, now: Instant, len: usize, item: T) -> Fate {
        let now = self.last_offer.map_or(now, |last| last.max(now));
        self.last_offer = Some(now);
        self.counters.offered += 1;
        let idx = self.next_idx;
        self.next_idx += 1;

        // Every stage draws for every offered datagram, so stages do not shift each other's
        // random sequences.
        let lost = self.loss.as_mut().is_some_and(LossStage::lose);
        let duplicate = self.dup.as_mut().is_some_and(|(p, rng)| chance(rng, *p));
        let jitter_ns = self.jitter.as_mut().map_or(0, JitterStage::sample);
        let held_back = self
            .reorder
            .as_mut()
            .is_some_and(|r| chance(&mut r.rng, r.p));

        if lost {
            self.counters.dropped += 1;
            return Fate::Dropped;
        }
        let mut copies = if duplicate { 2 } else { 1 };
        let departure = match self.rate.as_mut() {
            None => now,
            Some(rate) => match rate.admit(now, len as u64, copies) {
                None => {
                    self.counters.queue_dropped += 1;
                    return Fate::QueueDropped;
                }
                Some((departure, admitted)) => {
                    copies = admitted;
                    departure
                }
            },
        };
        let extra_ns = (i128::from(self.delay_ns) + i128::from(jitter_ns)).max(0);
        let extra_ns = u64::try_from(extra_ns).unwrap_or(u64::MAX);
        let delayed = extra_ns > 0;
        let at = departure + Duration::from_nanos(extra_ns);

        let copy = (copies == 2).then(|| item.clone());
        self.counters.duplicated += u64::from(copies - 1);
        self.counters.delayed += u64::from(delayed);
        self.pending += usize::from(copies);
        let unit = Unit { idx, item, copy };
        match (held_back, self.reorder.as_mut()) {
            (true, Some(reorder)) => {
                self.counters.reordered += 1;
                reorder.hold(unit, at);
            }
            _ => self.queue.push(Scheduled { at, unit }),
        }
        Fate::Passed {
            copies,
            delayed,
            held_back,
        }
    }

    /// The earliest time something is due (possibly already past), or `None` when empty.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ready = self.reorder.as_ref().is_some_and(|r| !r.ready.is_empty());
        if self.pending_copy.is_some() || ready {
            return self.last_release;
        }
        let queued = self.queue.peek_key().map(|(at, _)| at);
        let deadline = self
            .reorder
            .as_ref()
            .and_then(|r| r.deadlines.first().map(|&(at, _)| at));
        match (queued, deadline) {
            (Some(q), Some(d)) => Some(q.min(d)),
            (q, d) => q.or(d),
        }
    }

    /// The next datagram due at or before `now`, in release order (ties: offer order; a
    /// duplicate right after its original; a triggered held datagram right after its trigger).
    pub fn poll_release(&mut self, now: Instant) -> Option<T> {
        if let Some(copy) = self.pending_copy.take() {
            self.pending -= 1;
            self.counters.released += 1;
            return Some(copy);
        }
        if let Some(unit) = self.reorder.as_mut().and_then(|r| r.ready.pop_front()) {
            let at = self.last_release.unwrap_or(now);
            return Some(self.release(unit, at));
        }
        let queued = self.queue.peek_key();
        let deadline = self
            .reorder
            .as_ref()
            .and_then(|r| r.deadlines.first().copied());
        let deadline_first = match (queued, deadline) {
            (Some(q), Some(d)) => d < q,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if deadline_first {
            let (at, idx) = deadline?;
            if at > now {
                return None;
            }
            let unit = self.reorder.as_mut()?.take_timed_out(at, idx)?;
            Some(self.release(unit, at))
        } else {
            let (at, _) = queued?;
            if at > now {
                return None;
            }
            let scheduled = self.queue.pop()?;
            Some(self.release(scheduled.unit, scheduled.at))
        }
    }

    fn release(&mut self, unit: Unit<T>, at: Instant) -> T {
        self.last_release = Some(at);
        self.pending -= 1;
        self.counters.released += 1;
        self.pending_copy = unit.copy;
        if let Some(reorder) = self.reorder.as_mut() {
            reorder.on_release(unit.idx, at, &mut self.queue);
        }
        unit.item
    }

    /// Everything still pending, in release order, as if time ran on until all was due (end of
    /// a test). Counted as released.
    pub fn flush_all(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.pending);
        while let Some(due) = self.poll_timeout() {
            while let Some(item) = self.poll_release(due) {
                out.push(item);
            }
        }
        out
    }

    /// Datagrams (copies included) accepted and not yet released.
    pub fn pending(&self) -> usize {
        self.pending
    }

    pub fn counters(&self) -> ImpairCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests;
