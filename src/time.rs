//! The only module that reads OS clocks; everything else takes time as an argument.
//!
//! Two clocks matter. Monotonic time (`Instant`) drives schedules, timeouts and intervals.
//! Wall-clock nanoseconds since the Unix epoch (`CLOCK_REALTIME`, the clock kernel receive
//! timestamps use) go on the wire as send timestamps, so one-way delay is exact on one host and
//! as good as the clock sync between two.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Current monotonic time.
#[allow(clippy::disallowed_methods)] // the one sanctioned place
pub fn now() -> Instant {
    Instant::now()
}

/// Current wall-clock time in nanoseconds since the Unix epoch.
#[allow(clippy::disallowed_methods)] // the one sanctioned place
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Formats wall-clock nanoseconds as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(wall_ns: u64) -> String {
    let secs = wall_ns / 1_000_000_000;
    let millis = (wall_ns / 1_000_000) % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// A clock the tests advance by hand, so a whole session runs deterministically.
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    elapsed: Duration,
    wall_start_ns: u64,
}

impl ManualClock {
    /// A manual clock whose wall time starts at `wall_start_ns`.
    pub fn new(wall_start_ns: u64) -> Self {
        ManualClock {
            start: now(),
            elapsed: Duration::ZERO,
            wall_start_ns,
        }
    }

    pub fn now(&self) -> Instant {
        self.start + self.elapsed
    }

    pub fn wall_ns(&self) -> u64 {
        self.wall_start_ns + self.elapsed.as_nanos() as u64
    }

    pub fn advance(&mut self, by: Duration) {
        self.elapsed += by;
    }

    /// Moves the clock forward to `t` (never backwards).
    pub fn advance_to(&mut self, t: Instant) {
        if t > self.now() {
            self.elapsed = t - self.start;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        // 2026-11-22T12:34:56.789Z
        assert_eq!(
            rfc3339(1_795_350_896_789_000_000),
            "2026-11-22T12:34:56.789Z"
        );
        // Leap day 2024-02-29T00:00:00Z
        assert_eq!(
            rfc3339(1_709_164_800_000_000_000),
            "2024-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn manual_clock_advances_both_clocks() {
        let mut c = ManualClock::new(1_000);
        let t0 = c.now();
        c.advance(Duration::from_micros(5));
        assert_eq!(c.now() - t0, Duration::from_micros(5));
        assert_eq!(c.wall_ns(), 6_000);
        c.advance_to(t0); // backwards: ignored
        assert_eq!(c.wall_ns(), 6_000);
    }
}
