//! Duplicate/loss window: a ring bitmap over recent sequence numbers that classifies every
//! arrival (new, duplicate, late, stale) and finalizes sequences, in order, into RFC 7680
//! losses and RFC 3357 loss periods.
//!
//! Sequence `s` lives in word `s / 64` of an unbounded bit array; the ring keeps the last
//! `nwords` words (those up to the word holding the highest sequence seen). `base` is the lowest
//! sequence not yet finalized: below it a sequence is decided (received or lost), from it up to
//! `head` it is pending. Finalization reads whole words (count/trailing zeros), so its cost is
//! per word, not per sequence, and a jump over never-seen words is counted arithmetically.
//!
//! For each word the window also keeps the send timestamps of its lowest and highest received
//! sequence. When a loss period is finalized it goes to a `LossSink` with the nearest such
//! known send times below and above it, so that the losses can be placed in the interval in
//! which they were sent (`rows.rs`). A period that crosses a word boundary is bracketed by its
//! exact neighbours; one inside a word by that word's lowest and highest received sequence.

use std::ops::RangeInclusive;

/// What the window made of one arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// New sequence at or above the highest seen (RFC 4737: in order).
    InOrder,
    /// New sequence below the highest seen, still pending (RFC 4737: reordered).
    Reordered,
    /// A copy of a sequence already received (or already counted late).
    Duplicate,
    /// First copy of a sequence that had already been declared lost.
    Late,
    /// Too old for the ring to tell duplicate from late.
    Stale,
}

/// Losses of a whole run (declared so far) or of one interval row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LossTally {
    pub lost: u64,
    /// Loss periods counted: for the run, every period started so far; for a row, the periods
    /// whose first lost sequence was sent in it.
    pub periods: u64,
    /// Longest of those periods (for the run, a period still growing counts with its length
    /// so far).
    pub period_max: u64,
}

/// A received sequence and its sender timestamp: a point of the sequence-to-send-time map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Known {
    pub seq: u64,
    pub send_ns: u64,
}

/// Receives finalized loss periods and finalized received sequences, in sequence order.
pub(crate) trait LossSink {
    /// `len` consecutive lost sequences from `start`, a whole RFC 3357 loss period. `lower` and
    /// `upper` are the nearest known send times around it (None at the start and the end of
    /// the test); `rate` is two known points far apart, for extrapolating where one is None.
    fn on_period(
        &mut self,
        start: u64,
        len: u64,
        lower: Option<Known>,
        upper: Option<Known>,
        rate: Option<(Known, Known)>,
    );
    /// Everything up to `point.seq` is decided.
    fn on_known(&mut self, point: Known);
}

/// A sink that ignores everything (tests of the window alone).
impl LossSink for () {
    fn on_period(
        &mut self,
        _: u64,
        _: u64,
        _: Option<Known>,
        _: Option<Known>,
        _: Option<(Known, Known)>,
    ) {
    }
    fn on_known(&mut self, _: Known) {}
}

/// What `finish` found beyond the sender's total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FinishOutcome {
    /// Distinct sequences >= total_sent that were counted as received before `finish` (the
    /// ones still in the ring; exact unless `finalized_beyond_total`).
    pub excess_received: u64,
    /// Finalization had already moved past total_sent (a bogus sequence >= total_sent + window
    /// arrived): loss counts beyond total_sent cannot be separated any more.
    pub finalized_beyond_total: bool,
}

pub(crate) struct DuplicateWindow {
    /// Ring of bit words; word `w` is at slot `w & word_mask`.
    bits: Box<[u64]>,
    /// Per slot: monotonic time at which `head` first moved past the end of that word.
    overtaken_ns: Box<[u64]>,
    /// Per slot: send timestamps of the lowest and highest received sequence of the word
    /// (meaningless while the word's bits are 0).
    lo_send: Box<[u64]>,
    hi_send: Box<[u64]>,
    word_mask: u64,
    nwords: u64,
    /// Highest sequence seen + 1 (0 before any arrival). Equals RFC 4737 NextExp.
    head: u64,
    /// Word holding `head - 1` (0 before any arrival). Bits above `head` in it are clear.
    top_word: u64,
    /// Lowest sequence not yet finalized. Word-aligned until `finish`.
    base: u64,
    /// The loss run ending at `base - 1` that may still continue (length 0: none open).
    run_start: u64,
    run_len: u64,
    /// Known send time just below the open run (None: it started at the first sequence).
    run_lower: Option<Known>,
    /// Highest finalized received sequence with its send time.
    last_known: Option<Known>,
    /// First received sequence of the test with its send time.
    first_known: Option<Known>,
    /// Rate points frozen by `finish` before it extends the head over the never-seen tail.
    final_rate: Option<(Known, Known)>,
    tally: LossTally,
    record_ranges: bool,
    ranges: Vec<RangeInclusive<u64>>,
    /// First sequence of the open run not yet emitted into `ranges`.
    range_emit_from: u64,
}

impl DuplicateWindow {
    /// `window_bits` must be a power of two >= 64.
    pub(crate) fn new(window_bits: usize, record_ranges: bool) -> Self {
        assert!(
            window_bits >= 64 && window_bits.is_power_of_two(),
            "window_bits must be a power of two >= 64"
        );
        let nwords = window_bits / 64;
        Self {
            bits: vec![0u64; nwords].into_boxed_slice(),
            overtaken_ns: vec![0u64; nwords].into_boxed_slice(),
            lo_send: vec![0u64; nwords].into_boxed_slice(),
            hi_send: vec![0u64; nwords].into_boxed_slice(),
            word_mask: nwords as u64 - 1,
            nwords: nwords as u64,
            head: 0,
            top_word: 0,
            base: 0,
            run_start: 0,
            run_len: 0,
            run_lower: None,
            last_known: None,
            first_known: None,
            final_rate: None,
            tally: LossTally::default(),
            record_ranges,
            ranges: Vec::new(),
            range_emit_from: 0,
        }
    }

    #[inline]
    fn slot(&self, word: u64) -> usize {
        (word & self.word_mask) as usize
    }

    /// Lowest word the ring still holds.
    #[inline]
    fn ring_lo_word(&self) -> u64 {
        (self.top_word + 1).saturating_sub(self.nwords)
    }

    /// Classifies one arrival and records it. `seq` must be < SEQ_LIMIT (the caller filters).
    /// `send_ns` is the sender's timestamp, `now_ns` the monotonic clock.
    #[inline]
    pub(crate) fn classify<S: LossSink>(
        &mut self,
        seq: u64,
        send_ns: u64,
        now_ns: u64,
        sink: &mut S,
    ) -> Verdict {
        let word = seq >> 6;
        let bit = 1u64 << (seq & 63);
        if seq >= self.head {
            if word != self.top_word {
                self.advance_top_word(word, now_ns, sink);
            }
            self.head = seq + 1;
            let slot = self.slot(word);
            // In order, so the highest received of its word; the lowest if the first.
            if self.bits[slot] == 0 {
                self.first_received_in_word(slot, seq, send_ns);
            }
            self.hi_send[slot] = send_ns;
            self.bits[slot] |= bit;
            return Verdict::InOrder;
        }
        self.classify_behind(seq, send_ns, word, bit)
    }

    #[cold]
    fn first_received_in_word(&mut self, slot: usize, seq: u64, send_ns: u64) {
        self.lo_send[slot] = send_ns;
        if self.first_known.is_none() {
            self.first_known = Some(Known { seq, send_ns });
        }
    }

    fn classify_behind(&mut self, seq: u64, send_ns: u64, word: u64, bit: u64) -> Verdict {
        if word < self.ring_lo_word() {
            return Verdict::Stale;
        }
        let slot = self.slot(word);
        let bits = self.bits[slot];
        if bits & bit != 0 {
            return Verdict::Duplicate;
        }
        // Mark it so a further copy is a duplicate, whether it counts or comes late.
        self.bits[slot] |= bit;
        if seq < self.base {
            return Verdict::Late;
        }
        // Pending word: keep its lowest and highest received send times right.
        if bits == 0 || bit < bits & bits.wrapping_neg() {
            self.lo_send[slot] = send_ns;
        }
        if bits == 0 || bit > bits {
            self.hi_send[slot] = send_ns;
        }
        Verdict::Reordered
    }

    /// Moves the top of the ring to `new_top` (> top_word): finalizes what would be
    /// overwritten, stamps the words just overtaken, clears the newly covered words.
    #[cold]
    fn advance_top_word<S: LossSink>(&mut self, new_top: u64, now_ns: u64, sink: &mut S) {
        let new_ring_lo = (new_top + 1).saturating_sub(self.nwords);
        let force_to = new_ring_lo * 64;
        if self.base < force_to {
            self.finalize_to(force_to, sink);
        }
        for w in self.top_word.max(new_ring_lo)..new_top {
            let slot = self.slot(w);
            self.overtaken_ns[slot] = now_ns;
        }
        for w in (self.top_word + 1).max(new_ring_lo)..=new_top {
            let slot = self.slot(w);
            self.bits[slot] = 0;
        }
        self.top_word = new_top;
    }

    /// One past the highest sequence seen (0 before any arrival).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Finalizes every whole word that the head overtook at least `horizon_ns` before `now_ns`.
    /// The word holding the highest sequence seen waits for `finish`.
    pub(crate) fn on_tick<S: LossSink>(&mut self, now_ns: u64, horizon_ns: u64, sink: &mut S) {
        while self.base < self.top_word * 64 {
            let word = self.base >> 6;
            let overtaken = self.overtaken_ns[self.slot(word)];
            if now_ns < overtaken.saturating_add(horizon_ns) {
                break;
            }
            self.finalize_to((word + 1) * 64, sink);
        }
    }

    /// Decides every sequence in `base..target`. Words up to `top_word` are read from the ring
    /// (which holds all of them, as base >= ring_lo * 64); words above it were never seen.
    fn finalize_to<S: LossSink>(&mut self, target: u64, sink: &mut S) {
        while self.base < target {
            let word = self.base >> 6;
            let word_seq = word * 64;
            if word > self.top_word {
                self.extend_run(self.base, target - self.base, self.last_known);
                self.base = target;
                break;
            }
            let end = target.min(word_seq + 64);
            let lo = (self.base - word_seq) as u32;
            let hi = (end - word_seq) as u32;
            self.finalize_bits(word, lo, hi, sink);
            self.base = end;
        }
    }

    /// Finalizes bits `lo..hi` (0 <= lo < hi <= 64) of `word`.
    fn finalize_bits<S: LossSink>(&mut self, word: u64, lo: u32, hi: u32, sink: &mut S) {
        let slot = self.slot(word);
        let bits = self.bits[slot];
        let word_seq = word * 64;
        // The word's lowest and highest received sequence, with their send times.
        let (lo_known, hi_known) = if bits == 0 {
            (None, None)
        } else {
            let lo_bit = bits.trailing_zeros() as u64;
            let hi_bit = 63 - bits.leading_zeros() as u64;
            (
                Some(Known {
                    seq: word_seq + lo_bit,
                    send_ns: self.lo_send[slot],
                }),
                Some(Known {
                    seq: word_seq + hi_bit,
                    send_ns: self.hi_send[slot],
                }),
            )
        };
        // The known point just below a sequence of this word, and just above.
        let below = |seq: u64, last: Option<Known>| match (lo_known, hi_known) {
            (Some(_), Some(h)) if seq > h.seq => Some(h),
            (Some(l), Some(_)) if seq > l.seq => Some(l),
            _ => last,
        };
        let above = |seq: u64| match (lo_known, hi_known) {
            (Some(l), Some(_)) if seq <= l.seq => Some(l),
            (Some(_), Some(h)) => Some(h),
            _ => None,
        };
        let zeros = !bits & bit_range_mask(lo, hi);
        let mut pos = lo;
        while pos < hi {
            let rest = zeros >> pos;
            if rest == 0 {
                // Only received sequences remain in lo..hi.
                self.close_run(above(word_seq + pos as u64), sink);
                break;
            }
            let received = rest.trailing_zeros();
            if received > 0 {
                self.close_run(above(word_seq + pos as u64), sink);
            }
            pos += received;
            let lost = (!(zeros >> pos)).trailing_zeros().min(hi - pos);
            let start = word_seq + pos as u64;
            self.extend_run(start, lost as u64, below(start, self.last_known));
            pos += lost;
        }
        if let Some(h) = hi_known
            && h.seq < word_seq + hi as u64
        {
            self.last_known = Some(h);
            sink.on_known(h);
        }
    }

    /// `len` consecutive lost sequences from `start` (which continues the open run, if any);
    /// `lower` is the known send time below `start` should this open a new run.
    fn extend_run(&mut self, start: u64, len: u64, lower: Option<Known>) {
        self.tally.lost += len;
        if self.run_len == 0 {
            self.tally.periods += 1;
            self.run_start = start;
            self.run_lower = lower;
            self.range_emit_from = start;
        }
        self.run_len += len;
        self.tally.period_max = self.tally.period_max.max(self.run_len);
    }

    /// A received sequence (or the end of the test) ends the open loss run; `upper` is the known
    /// send time above it (None at the end of the test).
    fn close_run<S: LossSink>(&mut self, upper: Option<Known>, sink: &mut S) {
        if self.run_len > 0 {
            if self.record_ranges {
                let end = self.run_start + self.run_len;
                if self.range_emit_from < end {
                    push_merged(&mut self.ranges, self.range_emit_from..=end - 1);
                }
            }
            let rate = if self.run_lower.is_none() || upper.is_none() {
                self.rate_points()
            } else {
                None
            };
            sink.on_period(self.run_start, self.run_len, self.run_lower, upper, rate);
            self.run_len = 0;
        }
    }

    /// The first received sequence and the highest one, with their send times (for
    /// extrapolating send times beyond the known points).
    fn rate_points(&self) -> Option<(Known, Known)> {
        if self.final_rate.is_some() {
            return self.final_rate;
        }
        let first = self.first_known?;
        let top = self.slot(self.top_word);
        if self.bits[top] == 0 || self.head == 0 {
            return None;
        }
        let last = Known {
            seq: self.head - 1,
            send_ns: self.hi_send[top],
        };
        (last.seq > first.seq).then_some((first, last))
    }

    /// End of test: the sender sent sequences `0..total_sent`. Finalizes all of them (never-seen
    /// tail included) and reports what was counted beyond `total_sent`.
    pub(crate) fn finish<S: LossSink>(
        &mut self,
        total_sent: u64,
        now_ns: u64,
        sink: &mut S,
    ) -> FinishOutcome {
        let mut outcome = FinishOutcome {
            excess_received: 0,
            finalized_beyond_total: self.base > total_sent,
        };
        self.final_rate = self.rate_points();
        if self.head > total_sent {
            let from = total_sent.max(self.ring_lo_word() * 64);
            outcome.excess_received = self.count_set(from, self.head);
        } else if total_sent > self.head {
            // Cover the never-seen tail so that copies arriving after the end classify as late.
            let new_top = (total_sent - 1) >> 6;
            if new_top != self.top_word {
                self.advance_top_word(new_top, now_ns, sink);
            }
            self.head = total_sent;
        }
        if self.base < total_sent {
            self.finalize_to(total_sent, sink);
        }
        self.close_run(None, sink);
        outcome
    }

    /// Number of set bits for sequences in `from..to`, all within the ring.
    fn count_set(&self, from: u64, to: u64) -> u64 {
        let mut count = 0u64;
        let mut seq = from;
        while seq < to {
            let word = seq >> 6;
            let word_seq = word * 64;
            let end = to.min(word_seq + 64);
            let mask = bit_range_mask((seq - word_seq) as u32, (end - word_seq) as u32);
            count += (self.bits[self.slot(word)] & mask).count_ones() as u64;
            seq = end;
        }
        count
    }

    /// Losses declared so far in the whole run.
    pub(crate) fn tally(&self) -> LossTally {
        self.tally
    }

    /// Lost ranges finalized since the last drain; the finalized part of a still-open run is
    /// included (its continuation comes in a later drain).
    pub(crate) fn drain_ranges(&mut self) -> Vec<RangeInclusive<u64>> {
        if self.record_ranges && self.run_len > 0 {
            let end = self.run_start + self.run_len;
            if self.range_emit_from < end {
                push_merged(&mut self.ranges, self.range_emit_from..=end - 1);
                self.range_emit_from = end;
            }
        }
        std::mem::take(&mut self.ranges)
    }

    /// Fixed memory of the ring (the loss-range list is bounded by the caller's draining).
    pub(crate) fn capacity_bytes(&self) -> usize {
        (self.bits.len() + self.overtaken_ns.len() + self.lo_send.len() + self.hi_send.len())
            * std::mem::size_of::<u64>()
    }

    #[cfg(test)]
    pub(crate) fn base(&self) -> u64 {
        self.base
    }
}

/// Mask of bits `lo..hi`, 0 <= lo < hi <= 64.
#[inline]
fn bit_range_mask(lo: u32, hi: u32) -> u64 {
    let upper = if hi >= 64 { u64::MAX } else { (1u64 << hi) - 1 };
    upper & (u64::MAX << lo)
}

fn push_merged(ranges: &mut Vec<RangeInclusive<u64>>, range: RangeInclusive<u64>) {
    if let Some(last) = ranges.last_mut()
        && *last.end() + 1 == *range.start()
    {
        *last = *last.start()..=*range.end();
        return;
    }
    ranges.push(range);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(w: &mut DuplicateWindow, seqs: impl IntoIterator<Item = u64>) -> Vec<Verdict> {
        seqs.into_iter()
            .map(|s| w.classify(s, 0, 0, &mut ()))
            .collect()
    }

    #[test]
    fn masks() {
        assert_eq!(bit_range_mask(0, 64), u64::MAX);
        assert_eq!(bit_range_mask(0, 1), 1);
        assert_eq!(bit_range_mask(63, 64), 1 << 63);
        assert_eq!(bit_range_mask(4, 8), 0xF0);
    }

    #[test]
    fn losses_within_one_word_and_across_words() {
        let mut w = DuplicateWindow::new(1 << 10, true);
        // Lose 3..=5, 60..=70 (crosses a word), 130.
        let lost: Vec<u64> = (3..=5).chain(60..=70).chain([130]).collect();
        feed(&mut w, (0..200).filter(|s| !lost.contains(s)));
        let out = w.finish(200, 0, &mut ());
        assert_eq!(out, FinishOutcome::default());
        let t = w.tally();
        assert_eq!(t.lost, lost.len() as u64);
        assert_eq!(t.periods, 3);
        assert_eq!(t.period_max, 11);
        assert_eq!(w.drain_ranges(), vec![3..=5, 60..=70, 130..=130]);
    }

    #[test]
    fn run_spanning_many_finalization_steps_stays_one_period() {
        // 128-bit ring: every new word forces the oldest out, one word at a time.
        let mut w = DuplicateWindow::new(128, true);
        let lost = 100u64..=700;
        feed(&mut w, (0..1000).filter(|s| !lost.contains(s)));
        w.finish(1000, 0, &mut ());
        let t = w.tally();
        assert_eq!(t.lost, 601);
        assert_eq!(t.periods, 1);
        assert_eq!(t.period_max, 601);
        assert_eq!(w.drain_ranges(), vec![100..=700]);
    }

    #[test]
    fn drain_mid_run_then_continue() {
        let mut w = DuplicateWindow::new(128, true);
        feed(&mut w, 0..10);
        // 10..=399 never arrive; seq 400 (word 6) leaves the 2-word ring holding words 5 and 6,
        // so everything below 5 * 64 is forced out.
        w.classify(400, 0, 0, &mut ());
        assert_eq!(w.drain_ranges(), vec![10..=319]);
        feed(&mut w, 401..420);
        w.finish(420, 0, &mut ());
        assert_eq!(w.drain_ranges(), vec![320..=399]);
        let t = w.tally();
        assert_eq!((t.lost, t.periods, t.period_max), (390, 1, 390));
    }

    #[test]
    fn time_based_finalization_is_per_overtaken_word() {
        let mut w = DuplicateWindow::new(1 << 10, false);
        // Word 0 complete except 5; head moves into word 1 at t=100.
        for s in (0..64).filter(|&s| s != 5) {
            w.classify(s, 0, 10, &mut ());
        }
        w.classify(64, 0, 100, &mut ());
        w.on_tick(1099, 1000, &mut ());
        assert_eq!(w.tally().lost, 0, "not yet Tmax after being overtaken");
        w.on_tick(1100, 1000, &mut ());
        assert_eq!(w.base(), 64);
        assert_eq!(w.tally().lost, 1);
        // The head word is never finalized by time.
        w.on_tick(u64::MAX, 1000, &mut ());
        assert_eq!(w.base(), 64);
        // 5 comes late, its copy is a duplicate.
        assert_eq!(w.classify(5, 0, 2000, &mut ()), Verdict::Late);
        assert_eq!(w.classify(5, 0, 2001, &mut ()), Verdict::Duplicate);
    }

    /// Collects what the window hands to a `LossSink`.
    #[derive(Default)]
    struct Periods {
        periods: Vec<(u64, u64, Option<u64>, Option<u64>)>,
        known: Vec<u64>,
    }

    impl LossSink for Periods {
        fn on_period(
            &mut self,
            start: u64,
            len: u64,
            lower: Option<Known>,
            upper: Option<Known>,
            _: Option<(Known, Known)>,
        ) {
            self.periods
                .push((start, len, lower.map(|k| k.seq), upper.map(|k| k.seq)));
        }
        fn on_known(&mut self, point: Known) {
            self.known.push(point.seq);
        }
    }

    #[test]
    fn periods_come_with_the_send_times_around_them() {
        let mut w = DuplicateWindow::new(1 << 10, false);
        let mut sink = Periods::default();
        // Lost: 0..=2 (head), 11..=20 (inside word 0), 62..=70 (across words), 200..=209
        // (tail). Sequence 100 arrives late (reordered), after 101.
        let lost = |s: u64| s <= 2 || (11..=20).contains(&s) || (62..=70).contains(&s);
        let mut order: Vec<u64> = (0..200).filter(|&s| !lost(s) && s != 100).collect();
        let at = order.iter().position(|&s| s == 101).unwrap();
        order.insert(at + 1, 100);
        for s in order {
            // Send time = 1000 * seq, so the sink could interpolate.
            w.classify(s, 1000 * s, 0, &mut sink);
        }
        w.finish(210, 0, &mut sink);
        assert_eq!(
            sink.periods,
            vec![
                (0, 3, None, Some(3)),
                // Inside a word: bracketed by the word's lowest and highest received.
                (11, 10, Some(3), Some(61)),
                // Across words: the exact neighbours.
                (62, 9, Some(61), Some(71)),
                (200, 10, Some(199), None),
            ]
        );
        // Each finalized word's highest received sequence, in order.
        assert_eq!(sink.known, vec![61, 127, 191, 199]);
    }

    #[test]
    fn stale_below_ring() {
        let mut w = DuplicateWindow::new(128, false);
        feed(&mut w, 0..1000);
        // Ring holds words 14 and 15 (seqs 896..1023).
        assert_eq!(w.classify(895, 0, 0, &mut ()), Verdict::Stale);
        assert_eq!(w.classify(896, 0, 0, &mut ()), Verdict::Duplicate);
    }

    #[test]
    fn finish_counts_excess_beyond_total() {
        let mut w = DuplicateWindow::new(1 << 10, false);
        feed(&mut w, (0..10).chain([12, 15]));
        let out = w.finish(11, 0, &mut ());
        assert_eq!(out.excess_received, 2);
        assert!(!out.finalized_beyond_total);
        assert_eq!(w.tally().lost, 1); // seq 10
    }

    #[test]
    fn finish_with_nothing_received() {
        let mut w = DuplicateWindow::new(128, true);
        w.finish(1000, 0, &mut ());
        let t = w.tally();
        assert_eq!((t.lost, t.periods, t.period_max), (1000, 1, 1000));
        assert_eq!(w.drain_ranges(), vec![0..=999]);
        // After the end, a sequence within the ring is late, then duplicate.
        assert_eq!(w.classify(990, 0, 0, &mut ()), Verdict::Late);
        assert_eq!(w.classify(990, 0, 0, &mut ()), Verdict::Duplicate);
        assert_eq!(w.classify(10, 0, 0, &mut ()), Verdict::Stale);
    }
}
