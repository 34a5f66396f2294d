//! `--hdr-log FILE`: the per-interval latency (tag `latency`) and RTT (tag `rtt`) histograms in
//! HdrHistogram's interval-log format (V2 deflate), for HistogramLogAnalyzer, hdr-plot and
//! HistogramLogProcessor.
//!
//! The receiver half (loopback) and the sender record into one shared `HdrLog` while the test
//! runs; each histogram is kept compressed (a few hundred bytes instead of the 220 KiB of its
//! counts), and the file is written once at the end, entries in time order.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

use crate::summary::MAX_KEPT_INTERVALS;

/// Tag of the one-way latency histograms.
pub const LATENCY_TAG: &str = "latency";
/// Tag of the RTT histograms (`--echo`).
pub const RTT_TAG: &str = "rtt";
/// Histograms kept per tag (an hour of 1 s intervals, like the report's interval rows); later
/// ones are counted in `not_kept` and warned about.
pub const MAX_LOGGED_PER_TAG: usize = MAX_KEPT_INTERVALS + 1;
/// `Interval_Max` is written in milliseconds (values are nanoseconds), the unit HdrHistogram's
/// tools assume by default.
const MAX_VALUE_DIVISOR: f64 = 1e6;

struct Entry {
    tag: &'static str,
    start_s: f64,
    secs: f64,
    /// V2 deflate serialization of the histogram.
    compressed: Vec<u8>,
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    not_kept: u64,
    /// The test start (wall clock, ns since the epoch): the log's StartTime and BaseTime.
    start_wall_ns: u64,
}

/// An interval log being collected; clones share it (the loopback receiver and the sender).
#[derive(Clone, Default)]
pub struct HdrLog {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for HdrLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HdrLog")
    }
}

impl PartialEq for HdrLog {
    /// The same log (for comparing configurations).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }
}

impl HdrLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the histogram of the interval `start_s .. start_s + secs` (seconds since the
    /// test start) under `tag`. An empty histogram is recorded too: an interval with no samples
    /// is a fact HdrHistogram's tools show as a gap.
    pub fn record(&self, tag: &'static str, start_s: f64, secs: f64, histogram: &Histogram<u64>) {
        let mut compressed = Vec::new();
        // Serializing into a Vec cannot fail for a histogram within its own bounds.
        if V2DeflateSerializer::new()
            .serialize(histogram, &mut compressed)
            .is_err()
        {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.entries.iter().filter(|e| e.tag == tag).count() >= MAX_LOGGED_PER_TAG {
            state.not_kept += 1;
            return;
        }
        state.entries.push(Entry {
            tag,
            start_s: start_s.max(0.0),
            secs: secs.max(0.0),
            compressed,
        });
    }

    /// Sets the test start the interval times count from (wall clock, ns since the epoch).
    pub fn set_start(&self, start_wall_ns: u64) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .start_wall_ns = start_wall_ns;
    }

    /// Histograms beyond `MAX_LOGGED_PER_TAG`, not in the log.
    pub fn not_kept(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .not_kept
    }

    /// Writes the log: header (start time = the test start, see `set_start`), then every
    /// histogram in order of start time (latency before RTT at equal times).
    pub fn write<W: Write>(&self, mut out: W) -> io::Result<()> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let start_wall_ns = state.start_wall_ns;
        let mut order: Vec<&Entry> = state.entries.iter().collect();
        order.sort_by(|a, b| a.start_s.total_cmp(&b.start_s).then(a.tag.cmp(b.tag)));
        let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(start_wall_ns);
        let mut serializer = V2DeflateSerializer::new();
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment("udplab --hdr-log: values in nanoseconds; tags latency (one-way) and rtt")
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(MAX_VALUE_DIVISOR)
            .begin_log_with(&mut out, &mut serializer)?;
        for entry in order {
            let histogram: Histogram<u64> = Deserializer::new()
                .deserialize(&mut &entry.compressed[..])
                .map_err(|e| io::Error::other(format!("{e:?}")))?;
            log.write_histogram(
                &histogram,
                Duration::from_secs_f64(entry.start_s),
                Duration::from_secs_f64(entry.secs),
                Tag::new(entry.tag),
            )
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        }
        drop(log);
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap();
        for &v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn the_log_reads_back_with_its_tags_times_and_counts() {
        let log = HdrLog::new();
        log.record(RTT_TAG, 1.0, 1.0, &histogram(&[50_000, 60_000]));
        log.record(LATENCY_TAG, 1.0, 1.0, &histogram(&[20_000, 30_000, 40_000]));
        log.record(LATENCY_TAG, 0.0, 1.0, &histogram(&[10_000]));
        log.set_start(1_700_000_000_000_000_000);
        let mut out = Vec::new();
        log.write(&mut out).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("#[StartTime: 1700000000.000"), "{text}");
        let mut seen = Vec::new();
        for entry in IntervalLogIterator::new(&out) {
            if let LogEntry::Interval(h) = entry.unwrap() {
                let bytes = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    h.encoded_histogram(),
                )
                .unwrap();
                let back: Histogram<u64> =
                    Deserializer::new().deserialize(&mut &bytes[..]).unwrap();
                seen.push((
                    h.tag().map(|t| t.as_str().to_string()),
                    h.start_timestamp().as_secs_f64(),
                    back.len(),
                ));
            }
        }
        assert_eq!(
            seen,
            vec![
                (Some("latency".into()), 0.0, 1),
                (Some("latency".into()), 1.0, 3),
                (Some("rtt".into()), 1.0, 2),
            ]
        );
    }

    #[test]
    fn histograms_beyond_the_cap_are_counted() {
        let log = HdrLog::new();
        let h = histogram(&[1]);
        for i in 0..MAX_LOGGED_PER_TAG + 2 {
            log.record(RTT_TAG, i as f64, 1.0, &h);
        }
        log.record(LATENCY_TAG, 0.0, 1.0, &h);
        assert_eq!(log.not_kept(), 2);
    }
}
