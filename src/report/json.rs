//! JSON reports: the whole run as one pretty object, and intervals as NDJSON lines.
//!
//! The layout is `RunReport`'s serde form, `version` first; it is documented in
//! `results/README.md`.

use std::io::{self, Write};

use crate::summary::{IntervalRow, RunReport};

/// Writes the whole run as pretty JSON followed by a newline.
pub fn write_json<W: Write>(mut w: W, report: &RunReport) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut w, report)?;
    w.write_all(b"\n")?;
    w.flush()
}

/// Writes one interval as a single compact JSON line (NDJSON), for streaming.
pub fn write_interval_ndjson<W: Write>(mut w: W, row: &IntervalRow) -> io::Result<()> {
    // Serialise first, so a failure never leaves half a line on the stream.
    let mut line = serde_json::to_vec(row)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn run_report_roundtrips_with_version_first() {
        let report = fixtures::run_report();
        let mut out = Vec::new();
        write_json(&mut out, &report).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("}\n"));
        let first_field = text.lines().nth(1).unwrap().trim_start();
        assert_eq!(first_field, format!("\"version\": {},", report.version));
        let back: RunReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn receiver_only_report_roundtrips() {
        let mut report = fixtures::run_report();
        report.sender = None;
        let mut out = Vec::new();
        write_json(&mut out, &report).unwrap();
        let back: RunReport = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, report);
        assert!(back.sender.is_none());
    }

    #[test]
    fn intervals_are_one_compact_line_each() {
        let report = fixtures::run_report();
        let rows = [
            &report.sender.as_ref().unwrap().intervals[0],
            &report.receiver.as_ref().unwrap().intervals[0],
        ];
        let mut out = Vec::new();
        for row in rows {
            write_interval_ndjson(&mut out, row).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for (line, row) in lines.iter().zip(rows) {
            let back: IntervalRow = serde_json::from_str(line).unwrap();
            assert_eq!(&back, row);
        }
    }
}
