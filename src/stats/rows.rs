//! Interval rows' losses by send time: each lost datagram is counted in the interval row in
//! which it was sent, and a row is published only once no further loss can land in it.
//!
//! A datagram is declared lost Tmax after it was overtaken (or at the end of the test), so by
//! then its own interval has long closed; counting it where it was declared put a bottleneck's
//! losses a second or two late and made the rows after the sender stopped look like 90-100 %
//! loss. Instead, the send time of a lost sequence is interpolated linearly between the send
//! timestamps of the received sequences around its loss period (the window supplies them;
//! beyond the first or last received sequence it is extrapolated at the run's mean rate), and
//! mapped onto the receiver's monotonic clock by the smallest one-way offset seen
//! (max(send - now) over the received datagrams: "sent, plus the path's base delay"). The
//! interval rows then hold every lost datagram in the row of its send time, and they add up to
//! the run total exactly.
//!
//! Finality: losses are finalized in sequence order, and sequence order is send order, so once
//! a period or a received sequence sent in row r is finalized, nothing later can land before
//! row r (attributions are clamped to keep this true even if the sender's clock steps back).
//! Rows before that frontier are final. At most `MAX_PENDING_ROWS` rows wait: beyond that the
//! oldest is published as it stands and the frontier moves past it (bounded memory first).

use std::collections::VecDeque;

use super::window::{Known, LossSink, LossTally};

/// Closed rows that may wait for their losses; beyond this the oldest is published anyway.
pub(crate) const MAX_PENDING_ROWS: usize = 4096;

pub(crate) struct RowLosses {
    /// Index of the row at the front of `pending` (rows below it are published).
    first_row: u64,
    /// Closed rows not yet published: their end on the monotonic clock and their losses.
    pending: VecDeque<(u64, LossTally)>,
    /// Losses of the open row (index first_row + pending.len()).
    open: LossTally,
    /// Lowest row a loss can still land in: rows below it are final.
    frontier: u64,
    /// max(send_ns - now_ns) over received datagrams: send time minus this is the monotonic
    /// time the datagram would arrive at with the smallest delay seen. i64::MIN: none yet.
    offset: i64,
}

impl Default for RowLosses {
    fn default() -> Self {
        Self::new()
    }
}

impl RowLosses {
    pub(crate) fn new() -> Self {
        Self {
            first_row: 0,
            pending: VecDeque::new(),
            open: LossTally::default(),
            frontier: 0,
            offset: i64::MIN,
        }
    }

    /// A received datagram: its send time and the monotonic time it arrived by.
    #[inline(always)]
    pub(crate) fn on_arrival(&mut self, send_ns: u64, now_ns: u64) {
        self.offset = self.offset.max(send_ns.wrapping_sub(now_ns) as i64);
    }

    /// Closes the open row at `end_ns` (monotonic). Publishes nothing by itself.
    pub(crate) fn close_row(&mut self, end_ns: u64) {
        self.pending
            .push_back((end_ns, std::mem::take(&mut self.open)));
        if self.pending.len() > MAX_PENDING_ROWS {
            self.frontier = self.frontier.max(self.first_row + 1);
        }
    }

    /// The oldest closed row's losses once they are final (all of them after `finish`).
    pub(crate) fn pop_final(&mut self, finished: bool) -> Option<LossTally> {
        if self.pending.is_empty() || !(finished || self.first_row < self.frontier) {
            return None;
        }
        self.first_row += 1;
        self.pending.pop_front().map(|(_, tally)| tally)
    }

    fn open_row(&self) -> u64 {
        self.first_row + self.pending.len() as u64
    }

    /// Monotonic time of a send timestamp (see `offset`).
    fn time_of(&self, send_ns: u64) -> i128 {
        if self.offset == i64::MIN {
            return 0;
        }
        send_ns as i128 - self.offset as i128
    }

    /// Row whose span holds monotonic time `t`, never below the frontier.
    fn row_of(&self, t: i128) -> u64 {
        let closed_before = self
            .pending
            .partition_point(|&(end, _)| i128::from(end) <= t);
        (self.first_row + closed_before as u64).max(self.frontier)
    }

    fn tally(&mut self, row: u64) -> &mut LossTally {
        match self.pending.get_mut((row - self.first_row) as usize) {
            Some((_, tally)) => tally,
            None => &mut self.open,
        }
    }
}

/// Largest time difference the interpolation multiplies (2^63 ns, 292 years), so that products
/// with sequence differences (< 2^62) stay far inside i128 whatever timestamps arrive.
const TIME_SPAN_MAX: i128 = 1 << 63;

/// Send time as a line over sequence numbers: t(s) = t0 + (s - s0) * num / den, num >= 0.
struct Line {
    s0: i128,
    t0: i128,
    num: i128,
    den: i128,
}

impl Line {
    fn through(a: (i128, i128), b: (i128, i128)) -> Option<Line> {
        let den = b.0 - a.0;
        (den > 0).then(|| Line {
            s0: a.0,
            t0: a.1,
            num: (b.1 - a.1).clamp(0, TIME_SPAN_MAX),
            den,
        })
    }

    fn at(&self, s: i128) -> i128 {
        self.t0 + ((s - self.s0) * self.num).div_euclid(self.den)
    }

    /// How many of the sequences start..start+len have a time below `t`.
    fn count_below(&self, t: i128, start: i128, len: i128) -> i128 {
        if self.num == 0 {
            return if self.t0 < t { len } else { 0 };
        }
        // s - s0 < (t - t0) * den / num, i.e. s - s0 <= ceil(...) - 1.
        let dt = (t - self.t0).clamp(-TIME_SPAN_MAX, TIME_SPAN_MAX);
        let bound = -((-dt * self.den).div_euclid(self.num));
        (self.s0 + bound - start).clamp(0, len)
    }
}

impl LossSink for RowLosses {
    fn on_period(
        &mut self,
        start: u64,
        len: u64,
        lower: Option<Known>,
        upper: Option<Known>,
        rate: Option<(Known, Known)>,
    ) {
        let point = |k: Known| (i128::from(k.seq), self.time_of(k.send_ns));
        let slope = rate.and_then(|(a, b)| Line::through(point(a), point(b)));
        let line = match (lower, upper) {
            (Some(l), Some(u)) => Line::through(point(l), point(u)),
            (Some(k), None) | (None, Some(k)) => {
                let (s0, t0) = point(k);
                Some(match slope {
                    Some(r) => Line { s0, t0, ..r },
                    None => Line {
                        s0,
                        t0,
                        num: 0,
                        den: 1,
                    },
                })
            }
            (None, None) => None,
        };
        let (start_i, len_i) = (i128::from(start), i128::from(len));
        let first_row = match &line {
            Some(line) => self.row_of(line.at(start_i)),
            None => self.frontier.max(self.first_row),
        };
        let period = self.tally(first_row);
        period.periods += 1;
        period.period_max = period.period_max.max(len);
        // Split the period's sequences over the rows by their send times.
        let mut row = first_row;
        let mut done = 0i128;
        while done < len_i {
            let below = match (&line, self.pending.get((row - self.first_row) as usize)) {
                (Some(line), Some(&(end, _))) => {
                    line.count_below(i128::from(end), start_i, len_i).max(done)
                }
                _ => len_i,
            };
            self.tally(row).lost += (below - done) as u64;
            done = below;
            if done < len_i {
                row += 1;
            }
        }
        self.frontier = self.frontier.max(row.min(self.open_row()));
    }

    fn on_known(&mut self, point: Known) {
        let row = self.row_of(self.time_of(point.send_ns));
        self.frontier = self.frontier.max(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn known(seq: u64, send_ns: u64) -> Option<Known> {
        Some(Known { seq, send_ns })
    }

    /// Rows of 1 s on the monotonic clock, a sender clock 5 s ahead of it (send = now + 5 s),
    /// one datagram per ms.
    fn rows_of_one_second(closed: u64) -> RowLosses {
        let mut rows = RowLosses::new();
        rows.on_arrival(5_000 * MS, 0);
        for k in 1..=closed {
            rows.close_row(k * 1000 * MS);
        }
        rows
    }

    fn lost_per_row(rows: &mut RowLosses) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(t) = rows.pop_final(true) {
            out.push(t.lost);
        }
        out.push(rows.open.lost);
        out
    }

    #[test]
    fn a_period_across_a_row_boundary_is_split_by_send_time() {
        let mut rows = rows_of_one_second(3);
        // Sequences 901..=1099 lost, sent at 901..=1099 ms: 99 in row 0, 100 in row 1.
        rows.on_period(
            901,
            199,
            known(900, 5_900 * MS),
            known(1100, 6_100 * MS),
            None,
        );
        let p0 = rows.pending[0].1;
        assert_eq!(
            (p0.periods, p0.period_max),
            (1, 199),
            "counted where it starts"
        );
        assert_eq!(lost_per_row(&mut rows), vec![99, 100, 0, 0]);
    }

    #[test]
    fn tail_and_head_losses_are_extrapolated_at_the_mean_rate() {
        let mut rows = rows_of_one_second(3);
        let rate = Some((
            Known {
                seq: 10,
                send_ns: 5_010 * MS,
            },
            Known {
                seq: 1500,
                send_ns: 6_500 * MS,
            },
        ));
        // Head: 0..=9 lost before the first received (10, sent at 10 ms): row 0.
        rows.on_period(0, 10, None, known(10, 5_010 * MS), rate);
        // Tail: 1501..=3499 lost after the last received: sent 1501..3499 ms.
        rows.on_period(1501, 1999, known(1500, 6_500 * MS), None, rate);
        assert_eq!(lost_per_row(&mut rows), vec![10, 499, 1000, 500]);
    }

    #[test]
    fn rows_become_final_when_the_frontier_passes_them() {
        let mut rows = rows_of_one_second(3);
        assert_eq!(rows.pop_final(false), None);
        rows.on_known(Known {
            seq: 500,
            send_ns: 5_500 * MS,
        });
        assert_eq!(rows.pop_final(false), None, "row 0 may still get losses");
        rows.on_known(Known {
            seq: 1500,
            send_ns: 6_500 * MS,
        });
        assert!(rows.pop_final(false).is_some());
        assert_eq!(rows.pop_final(false), None);
        // A period sent in row 0 after row 0 was published lands in the frontier row.
        rows.on_period(100, 5, known(99, 5_099 * MS), known(105, 5_105 * MS), None);
        assert_eq!(rows.pending[0].1.lost, 5);
    }

    #[test]
    fn pending_rows_are_bounded() {
        let mut rows = RowLosses::new();
        let mut published = 0;
        for k in 1..=(MAX_PENDING_ROWS as u64 + 10) {
            rows.close_row(k * MS);
            while rows.pop_final(false).is_some() {
                published += 1;
            }
        }
        assert_eq!(published, 10);
        assert_eq!(rows.pending.len(), MAX_PENDING_ROWS);
    }

    #[test]
    fn nothing_received_puts_the_losses_in_the_first_open_row() {
        let mut rows = RowLosses::new();
        rows.close_row(1000 * MS);
        rows.on_period(0, 1000, None, None, None);
        assert_eq!(lost_per_row(&mut rows), vec![1000, 0]);
    }
}
