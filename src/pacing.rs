//! Absolute-schedule pacer: when datagram k is due (cbr, Poisson or bursts), never drifting.
//!
//! Deadline k is computed from the start time and k, not from the previous send, so a late send
//! never shifts the rest of the schedule (iperf3's 1 ms timer tick is exactly the drift-and-burst
//! behaviour this avoids). Sans-IO: the caller passes `now` and sleeps itself.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};

/// How departures are spread in time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// Constant bit rate: evenly spaced departures.
    Cbr,
    /// Exponential inter-departure gaps with the same mean (RFC 3432-style Poisson sampling).
    Poisson,
    /// `n` datagrams back to back, then a pause, with the same average rate.
    Burst(u32),
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Cbr => f.write_str("cbr"),
            Pattern::Poisson => f.write_str("poisson"),
            Pattern::Burst(n) => write!(f, "burst={n}"),
        }
    }
}

impl FromStr for Pattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cbr" => Ok(Pattern::Cbr),
            "poisson" => Ok(Pattern::Poisson),
            _ => {
                let n = s
                    .strip_prefix("burst=")
                    .or_else(|| s.strip_prefix("burst:"))
                    .ok_or_else(|| {
                        format!("invalid pattern \"{s}\": expected cbr, poisson or burst=N")
                    })?;
                match n.parse::<u32>() {
                    Ok(n) if n >= 1 => Ok(Pattern::Burst(n)),
                    _ => Err(format!(
                        "invalid burst size \"{n}\": expected a whole number of datagrams ≥ 1, like burst=10"
                    )),
                }
            }
        }
    }
}

/// Tells when each datagram of a paced stream is due.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    /// Mean gap between departures, nanoseconds.
    gap_ns: f64,
    pattern: Pattern,
    /// Index of the next datagram.
    k: u64,
    /// Offset of the next deadline from `start`, nanoseconds (Poisson accumulates it).
    next_offset_ns: f64,
    rng: ChaCha8Rng,
    exp: Option<Exp<f64>>,
}

impl Pacer {
    /// A pacer for `pps` datagrams per second starting at `start`. `seed` fixes the Poisson draw.
    pub fn new(start: Instant, pps: f64, pattern: Pattern, seed: u64) -> Self {
        assert!(pps > 0.0 && pps.is_finite(), "pps must be positive");
        let gap_ns = 1e9 / pps;
        let exp = match pattern {
            Pattern::Poisson => Exp::new(1.0 / gap_ns).ok(),
            _ => None,
        };
        let mut pacer = Pacer {
            start,
            gap_ns,
            pattern,
            k: 0,
            next_offset_ns: 0.0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            exp,
        };
        pacer.next_offset_ns = pacer.offset_of(0);
        pacer
    }

    fn offset_of(&mut self, k: u64) -> f64 {
        match self.pattern {
            Pattern::Cbr => k as f64 * self.gap_ns,
            Pattern::Burst(n) => {
                let n = u64::from(n);
                (k / n * n) as f64 * self.gap_ns
            }
            Pattern::Poisson => {
                if k == 0 {
                    0.0
                } else {
                    let draw = self.exp.map_or(self.gap_ns, |e| e.sample(&mut self.rng));
                    self.next_offset_ns + draw
                }
            }
        }
    }

    /// Deadline of the next datagram.
    pub fn next_deadline(&self) -> Instant {
        self.start + Duration::from_nanos(self.next_offset_ns as u64)
    }

    /// Index of the next datagram (how many deadlines have been consumed).
    pub fn index(&self) -> u64 {
        self.k
    }

    /// Consumes the next deadline and returns it.
    pub fn advance(&mut self) -> Instant {
        let due = self.next_deadline();
        self.k += 1;
        self.next_offset_ns = self.offset_of(self.k);
        due
    }

    /// The schedule's start.
    pub fn start(&self) -> Instant {
        self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;

    #[test]
    fn cbr_is_absolute_and_evenly_spaced() {
        let t0 = ManualClock::new(0).now();
        let mut p = Pacer::new(t0, 100_000.0, Pattern::Cbr, 1);
        let deadlines: Vec<Instant> = (0..1_000_001).map(|_| p.advance()).collect();
        assert_eq!(deadlines[0], t0);
        assert_eq!(deadlines[1] - t0, Duration::from_micros(10));
        // After a million datagrams the schedule has not drifted by even a nanosecond.
        assert_eq!(deadlines[1_000_000] - t0, Duration::from_secs(10));
    }

    #[test]
    fn burst_sends_n_back_to_back_at_the_same_mean_rate() {
        let t0 = ManualClock::new(0).now();
        let mut p = Pacer::new(t0, 1000.0, Pattern::Burst(4), 1);
        let d: Vec<Duration> = (0..12).map(|_| p.advance() - t0).collect();
        assert_eq!(&d[0..4], &[Duration::ZERO; 4]);
        assert_eq!(&d[4..8], &[Duration::from_millis(4); 4]);
        assert_eq!(&d[8..12], &[Duration::from_millis(8); 4]);
    }

    #[test]
    fn poisson_has_the_right_mean_and_is_seeded() {
        let t0 = ManualClock::new(0).now();
        let n = 200_000u64;
        let run = |seed| {
            let mut p = Pacer::new(t0, 10_000.0, Pattern::Poisson, seed);
            (0..=n).map(|_| p.advance() - t0).last().unwrap()
        };
        let total = run(7);
        assert_eq!(total, run(7), "same seed, same schedule");
        assert_ne!(total, run(8));
        // Sum of n exponential gaps with mean 100 µs: sd = 100 µs·sqrt(n) ≈ 44.7 ms; allow 5 sd.
        let mean_s = 20.0;
        assert!((total.as_secs_f64() - mean_s).abs() < 5.0 * 1e-4 * (n as f64).sqrt());
    }

    #[test]
    fn pattern_parses_and_prints() {
        assert_eq!("cbr".parse::<Pattern>().unwrap(), Pattern::Cbr);
        assert_eq!("poisson".parse::<Pattern>().unwrap(), Pattern::Poisson);
        assert_eq!("burst=10".parse::<Pattern>().unwrap(), Pattern::Burst(10));
        assert_eq!(Pattern::Burst(10).to_string(), "burst=10");
        assert!("burst=0".parse::<Pattern>().is_err());
        assert!("zigzag".parse::<Pattern>().is_err());
    }
}
