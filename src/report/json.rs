//! JSON reports: the one document shape of every run (`ReportDocument`), its one-line NDJSON
//! form, and the live NDJSON interval stream (`--intervals-json`).
//!
//! The layout is documented in `results/README.md`: every document starts with `version`,
//! `schema`, `tool`, `tool_version` and `command`, then a `flows` array (one entry for a single
//! flow) and their `total`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use serde::Serialize;

use crate::summary::{
    DocumentHeader, IntervalRow, REPORT_SCHEMA, REPORT_VERSION, ReportDocument, RunReport,
};

/// The header every document starts with, for `schema`, naming this process's command line.
pub fn document_header(schema: &str) -> DocumentHeader {
    DocumentHeader {
        version: REPORT_VERSION,
        schema: schema.to_string(),
        tool: "udplab".to_string(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        command: command_line(),
    }
}

/// The document of one flow: the flow itself and, as its total, the same figures without the
/// interval rows (which would only repeat).
pub fn single_flow_document(report: &RunReport) -> ReportDocument {
    let mut total = report.clone();
    if let Some(s) = total.sender.as_mut() {
        s.intervals.clear();
    }
    if let Some(r) = total.receiver.as_mut() {
        r.intervals.clear();
        r.loss_ranges.clear();
    }
    ReportDocument {
        header: document_header(REPORT_SCHEMA),
        flows: vec![report.clone()],
        total,
    }
}

/// The document of several flows and their total.
pub fn flows_document(flows: &[RunReport], total: &RunReport) -> ReportDocument {
    ReportDocument {
        header: document_header(REPORT_SCHEMA),
        flows: flows.to_vec(),
        total: total.clone(),
    }
}

/// The document of a bidirectional test (`--bidir`): the header, then `flows` with the
/// forward and the reverse report, each naming its `direction`. There is no `total`: the two
/// directions are two measurements, not parts of one.
pub fn bidir_document(forward: &RunReport, reverse: &RunReport) -> serde_json::Value {
    let mut flows = Vec::new();
    for (report, direction) in [(forward, "forward"), (reverse, "reverse")] {
        let mut flow = serde_json::to_value(report).unwrap_or_default();
        if let Some(map) = flow.as_object_mut() {
            map.insert("direction".into(), direction.into());
        }
        flows.push(flow);
    }
    let mut doc = serde_json::to_value(document_header(REPORT_SCHEMA)).unwrap_or_default();
    if let Some(map) = doc.as_object_mut() {
        map.insert("flows".into(), flows.into());
    }
    doc
}

/// Writes one flow's run as a pretty JSON document followed by a newline.
pub fn write_json<W: Write>(w: W, report: &RunReport) -> io::Result<()> {
    write_document(w, &single_flow_document(report))
}

/// Writes one flow's run as a single compact line (NDJSON: `recv` appends one per test).
pub fn write_json_line<W: Write>(w: W, report: &RunReport) -> io::Result<()> {
    write_line(w, &single_flow_document(report))
}

/// Writes any document (or the proxy's) pretty, followed by a newline.
pub fn write_document<W: Write, T: Serialize>(mut w: W, document: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut w, document)?;
    w.write_all(b"\n")?;
    w.flush()
}

/// Writes `value` as one compact JSON line, in a single write so a reader never sees half.
fn write_line<W: Write, T: Serialize>(mut w: W, value: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

/// One line of the interval stream: the run it belongs to, then the `IntervalRow` fields.
#[derive(Serialize)]
struct StreamedInterval<'a> {
    run_id: &'a str,
    #[serde(flatten)]
    row: &'a IntervalRow,
}

/// Writes one interval as a single compact JSON line (NDJSON), for streaming.
pub fn write_interval_ndjson<W: Write>(w: W, run_id: &str, row: &IntervalRow) -> io::Result<()> {
    write_line(w, &StreamedInterval { run_id, row })
}

/// The command line as run: arguments joined by spaces, each shell-quoted when it needs it, so
/// the line can be pasted back into a shell. The program is named `udplab` whatever its path.
pub fn command_line() -> String {
    let mut args = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    let program = args.next().map(|p| {
        if p.rsplit('/').next() == Some("udplab") {
            "udplab".to_string()
        } else {
            p
        }
    });
    program
        .into_iter()
        .chain(args)
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `arg` as a POSIX shell reads it back: as is when it holds only safe characters, else in
/// single quotes (a quote inside becomes `'\''`).
pub fn shell_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

// ---- the live interval stream (`--intervals-json`) ----------------------------------------

/// Where live interval lines go: stdout or a file, shared by every writer in the process.
type Sink = Mutex<SinkState>;

struct SinkState {
    out: Box<dyn Write + Send>,
    /// A write failed (closed pipe, full disk): the stream stops, the measurement goes on.
    failed: bool,
}

fn sink(out: Box<dyn Write + Send>) -> Arc<Sink> {
    Arc::new(Mutex::new(SinkState { out, failed: false }))
}

/// An open NDJSON interval stream. Loopback's two halves and parallel flows write to the same
/// one; each line goes out whole under a lock and is flushed, so lines never interleave and a
/// reader sees each interval as it closes.
#[derive(Clone)]
pub struct IntervalStream {
    sink: Arc<Sink>,
}

impl std::fmt::Debug for IntervalStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntervalStream")
    }
}

/// Streams open in this process, by file, so a second opener shares the first's file instead
/// of truncating it.
fn open_streams() -> &'static Mutex<HashMap<PathBuf, Weak<Sink>>> {
    static STREAMS: OnceLock<Mutex<HashMap<PathBuf, Weak<Sink>>>> = OnceLock::new();
    STREAMS.get_or_init(Default::default)
}

impl IntervalStream {
    /// The stream on stdout.
    pub fn stdout() -> Self {
        IntervalStream {
            sink: sink(Box::new(io::stdout())),
        }
    }

    /// The stream into `path`: created (truncated) by the first opener in this process, shared
    /// by the later ones while it is open.
    pub fn file(path: &std::path::Path) -> io::Result<Self> {
        let mut streams = open_streams().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sink) = streams.get(path).and_then(Weak::upgrade) {
            return Ok(IntervalStream { sink });
        }
        let shared = sink(Box::new(File::create(path)?));
        streams.retain(|_, s| s.strong_count() > 0);
        streams.insert(path.to_path_buf(), Arc::downgrade(&shared));
        Ok(IntervalStream { sink: shared })
    }

    /// Writes one interval line and flushes it. The first failure is returned (for one
    /// warning); the stream then stays silent, so a closed reader never stops a measurement.
    pub fn write(&self, run_id: &str, row: &IntervalRow) -> io::Result<()> {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        if sink.failed {
            return Ok(());
        }
        let written = write_interval_ndjson(&mut sink.out, run_id, row);
        sink.failed = written.is_err();
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;
    use serde_json::Value;

    #[test]
    fn a_share_reads_back_exactly() {
        // A ratio from a reliable flows total (ack_bytes / data_bytes) that serde_json's
        // default parser read back one ULP off: compare and baselines need what was written.
        let share = 2_374_800f64 / 49_331_200f64;
        for v in [
            share,
            0.048139276649746196,
            0.1 + 0.2,
            f64::MIN_POSITIVE,
            1e300,
        ] {
            let text = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<f64>(&text).unwrap(), v, "{text}");
        }
    }

    #[test]
    fn a_single_run_is_a_document_with_one_flow_and_its_total() {
        let report = fixtures::run_report();
        let mut out = Vec::new();
        write_json(&mut out, &report).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("}\n"));
        let first_field = text.lines().nth(1).unwrap().trim_start();
        assert_eq!(first_field, format!("\"version\": {REPORT_VERSION},"));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(v["schema"], REPORT_SCHEMA);
        assert_eq!(v["tool"], "udplab");
        assert_eq!(v["tool_version"], env!("CARGO_PKG_VERSION"));
        assert!(!v["command"].as_str().unwrap().is_empty());
        let back: ReportDocument = serde_json::from_str(&text).unwrap();
        assert_eq!(back.flows, vec![report.clone()]);
        assert_eq!(back.total.run_id, report.run_id);
        assert_eq!(
            back.total.receiver.unwrap().stats,
            report.receiver.unwrap().stats
        );
        assert!(back.total.sender.unwrap().intervals.is_empty());
    }

    #[test]
    fn receiver_only_report_roundtrips_as_one_line() {
        let mut report = fixtures::run_report();
        report.sender = None;
        let mut out = Vec::new();
        write_json_line(&mut out, &report).unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let back: ReportDocument = serde_json::from_slice(&out).unwrap();
        assert_eq!(back.flows, vec![report]);
        assert!(back.flows[0].sender.is_none());
    }

    #[test]
    fn intervals_are_one_compact_line_each_with_their_run() {
        let report = fixtures::run_report();
        let rows = [
            &report.sender.as_ref().unwrap().intervals[0],
            &report.receiver.as_ref().unwrap().intervals[0],
        ];
        let mut out = Vec::new();
        for row in rows {
            write_interval_ndjson(&mut out, "run-42", row).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for (line, row) in lines.iter().zip(rows) {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["run_id"], "run-42");
            let back: IntervalRow = serde_json::from_value(v).unwrap();
            assert_eq!(&back, row);
        }
    }

    #[test]
    fn a_file_stream_is_shared_while_open_and_truncated_when_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.ndjson");
        let row = IntervalRow::default();
        {
            let a = IntervalStream::file(&path).unwrap();
            let b = IntervalStream::file(&path).unwrap();
            a.write("a", &row).unwrap();
            b.write("b", &row).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        }
        let c = IntervalStream::file(&path).unwrap();
        c.write("c", &row).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    /// A writer that accepts nothing, like a closed pipe.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_stream_reports_once_then_stays_silent() {
        let stream = IntervalStream {
            sink: sink(Box::new(Closed)),
        };
        let row = IntervalRow::default();
        assert!(stream.write("a", &row).is_err());
        assert!(stream.write("a", &row).is_ok(), "no second failure");
    }

    #[test]
    fn arguments_are_quoted_only_when_a_shell_needs_it() {
        assert_eq!(shell_quote("--impair"), "--impair");
        assert_eq!(shell_quote("loss=5%,seed=1"), "loss=5%,seed=1");
        assert_eq!(shell_quote("[::1]:5210"), "'[::1]:5210'");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
