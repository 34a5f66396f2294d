//! The driver: sockets, threads, clocks and signals around the sans-IO sessions, and the
//! writing of reports at the end of a run.
//!
//! The timed data path runs on dedicated OS threads (tokio's 1 ms timer cannot pace 100k
//! datagrams/s evenly); tokio runs what is not timed to the microsecond: signal handling here.

pub mod flows;
pub mod flows_reliable;
pub mod loopback;
pub mod plot;
pub mod proxy;
pub mod recv;
pub mod reliable;
pub mod reverse;
pub mod send;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{JsonOut, Outputs, Thresholds};
use crate::error::{Outcome, SetupError};
use crate::report;
use crate::summary::{ReceiverReport, RunReport, ThresholdCheck, Verdict};
use crate::time;

/// How far the user has asked us to stop: 0 running, 1 stop and report, 2 stop waiting for the
/// peer too. A third signal exits at once (exit code 130).
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicU8>);

impl Stop {
    pub fn new() -> Self {
        Stop::default()
    }

    /// Stop sending/receiving and report what was measured.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= 1
    }

    /// Also stop waiting for the peer's results.
    pub fn abandon(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= 2
    }

    /// Raises the stop level by one; returns the new level.
    pub fn escalate(&self) -> u8 {
        self.0.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }

    /// Sets the level to at least `level` (used to end a loopback receiver).
    pub fn raise_to(&self, level: u8) {
        self.0.fetch_max(level, Ordering::Relaxed);
    }
}

/// Installs Ctrl-C and SIGTERM handling on a small tokio runtime in a background thread.
pub fn install_signal_handlers(stop: &Stop) -> io::Result<()> {
    let stop = stop.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("udplab-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                #[cfg(unix)]
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .ok();
                loop {
                    #[cfg(unix)]
                    {
                        let term_recv = async {
                            match term.as_mut() {
                                Some(t) => {
                                    t.recv().await;
                                }
                                None => std::future::pending::<()>().await,
                            }
                        };
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {},
                            _ = term_recv => {},
                        }
                    }
                    #[cfg(not(unix))]
                    let _ = tokio::signal::ctrl_c().await;
                    match stop.escalate() {
                        1 => print_stderr(
                            "udplab: interrupted: finishing and reporting what was measured (again: stop waiting for the peer)"
                        ),
                        2 => print_stderr("udplab: not waiting for the peer any longer (again: quit at once)"),
                        _ => std::process::exit(130),
                    }
                }
            });
        })?;
    Ok(())
}

/// Output problems met while the run went on: (path, OS error), one per file. A failed report
/// file does not stop the run or the other outputs; `main` prints these and exits with 2.
static FAILED_OUTPUTS: Mutex<Vec<OutputFailure>> = Mutex::new(Vec::new());
/// Set once stdout is gone (EPIPE: `udplab send ... | head -1`): nothing more is printed there,
/// the measurement and the files go on.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// Warnings already printed, so each reaches stderr once however many places report it.
static WARNED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A report output that could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFailure {
    /// The file as the user gave it, or `stdout`.
    pub path: String,
    /// The OS error (or the reason), once.
    pub reason: String,
}

impl std::fmt::Display for OutputFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write {}: {}", self.path, self.reason)
    }
}

/// Notes that `path` could not be written (the first reason per path is kept).
pub fn record_output_failure(path: &str, reason: impl std::fmt::Display) {
    let mut failed = FAILED_OUTPUTS.lock().unwrap_or_else(|e| e.into_inner());
    if !failed.iter().any(|f| f.path == path) {
        failed.push(OutputFailure {
            path: path.to_string(),
            reason: reason.to_string(),
        });
    }
}

/// The outputs that failed so far (and forgets them).
pub fn take_output_failures() -> Vec<OutputFailure> {
    std::mem::take(&mut *FAILED_OUTPUTS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Prints `message` as a warning on stderr, unless the same warning was printed before.
/// Warnings go to stderr so stdout carries only the report (and JSON with `--json -`).
pub fn warn(message: &str) {
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned.iter().any(|w| w == message) {
        return;
    }
    warned.push(message.to_string());
    // A closed stderr must not end the run (eprintln! would panic).
    let _ = writeln!(io::stderr(), "warning: {message}");
}

/// Prints one line on stderr, ignoring a closed stderr.
pub fn print_stderr(line: &str) {
    let _ = writeln!(io::stderr(), "{line}");
}

/// stdout that never fails the run: on EPIPE it stops printing (the reader went away, as with
/// `| head -1`); on another error (`> /dev/full`) it stops and the error is reported at exit.
#[derive(Debug, Default)]
pub struct Stdout;

impl Stdout {
    fn failed(e: &io::Error) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != io::ErrorKind::BrokenPipe {
            record_output_failure("stdout", e);
        }
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if STDOUT_CLOSED.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        match io::stdout().write_all(buf) {
            Ok(()) => {}
            Err(e) => Stdout::failed(&e),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !STDOUT_CLOSED.load(Ordering::Relaxed)
            && let Err(e) = io::stdout().flush()
        {
            Stdout::failed(&e);
        }
        Ok(())
    }
}

/// stderr for the text report (with `--json -`): never fails the run.
#[derive(Debug, Default)]
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// A log file written while the run goes on (`--loss-log`, `--impair-log`): a failed write
/// (disk full) is recorded for the exit code and the rest of the log is dropped, so the
/// measurement and the other outputs carry on.
#[derive(Debug)]
pub struct OutputFile {
    path: PathBuf,
    file: Option<File>,
}

impl OutputFile {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(OutputFile {
            path: path.to_path_buf(),
            file: Some(File::create(path)?),
        })
    }

    fn failed(&mut self, e: &io::Error) {
        record_output_failure(&self.path.display().to_string(), e);
        self.file = None;
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = self.file.as_mut()
            && let Err(e) = f.write_all(buf)
        {
            self.failed(&e);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(f) = self.file.as_mut()
            && let Err(e) = f.flush()
        {
            self.failed(&e);
        }
        Ok(())
    }
}

/// Files the output check created (they did not exist before the run).
#[derive(Debug, Default)]
pub struct CheckedOutputs {
    created: Vec<PathBuf>,
}

impl CheckedOutputs {
    /// Removes the files the check created that are still empty (the run ended before writing
    /// them), so a failed run leaves no empty report behind.
    pub fn remove_unwritten(&self) {
        for path in &self.created {
            if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Checks before the test starts that every output file can be written: opens each for
/// appending (creating it when missing, never truncating: an existing JSON or log keeps its
/// content until the run has something to replace it with), which catches a missing
/// directory, a directory, and a missing permission. An existing CSV must carry udplab's
/// header. A device such as `/dev/full` passes here; its failure shows when written.
pub fn check_outputs(outputs: &Outputs, logs: &[&Path]) -> Result<CheckedOutputs, SetupError> {
    let mut checked = CheckedOutputs::default();
    let json = match &outputs.json {
        Some(JsonOut::File(p)) => Some(p.as_path()),
        _ => None,
    };
    let csvs = [
        (outputs.csv.as_deref(), &report::SUMMARY_COLUMNS[..]),
        (
            outputs.intervals_csv.as_deref(),
            &report::INTERVAL_COLUMNS[..],
        ),
    ];
    let intervals_json = match &outputs.intervals_json {
        Some(JsonOut::File(p)) => Some(p.as_path()),
        _ => None,
    };
    let others = [json, intervals_json, outputs.loss_log.as_deref()]
        .into_iter()
        .flatten()
        .chain(logs.iter().copied());
    let all = csvs
        .iter()
        .filter_map(|(p, cols)| p.map(|p| (p, Some(*cols))))
        .chain(others.map(|p| (p, None)));
    for (path, columns) in all {
        if let Err(reason) = check_output(path, columns, &mut checked) {
            checked.remove_unwritten();
            return Err(SetupError(format!(
                "cannot write {}: {reason}",
                path.display()
            )));
        }
    }
    Ok(checked)
}

fn check_output(
    path: &Path,
    csv_columns: Option<&[&str]>,
    checked: &mut CheckedOutputs,
) -> Result<(), String> {
    let existed = path.symlink_metadata().is_ok();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .or_else(|e| {
            // Write-only files (and devices) cannot be opened for reading too.
            if e.kind() == io::ErrorKind::PermissionDenied {
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
            } else {
                Err(e)
            }
        })
        .map_err(|e| e.to_string())?;
    if !existed {
        checked.created.push(path.to_path_buf());
    }
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if let Some(columns) = csv_columns
        && meta.is_file()
        && meta.len() > 0
    {
        let mut first = String::new();
        let _ = io::BufRead::read_line(&mut io::BufReader::new(&file), &mut first);
        let found: Vec<&str> = first.trim_end_matches(['\n', '\r']).split(',').collect();
        if found != columns {
            return Err(format!(
                "its first line is not udplab's CSV header ({} columns, expected {}); choose a new file",
                found.len(),
                columns.len()
            ));
        }
    }
    Ok(())
}

/// Where the human-readable text goes: stdout, or stderr when stdout carries JSON. Writes to it
/// never fail (see [`Stdout`]).
pub fn text_writer(outputs: &Outputs) -> Box<dyn Write> {
    if outputs.json_on_stdout() {
        Box::new(Stderr)
    } else {
        Box::new(Stdout)
    }
}

/// Writes the summary and the requested files for a finished run. Warnings go to stderr first
/// (once each), then the text summary; every file is attempted even when another failed, and
/// each failure is recorded for the exit code ([`take_output_failures`]).
pub fn write_outputs(report: &RunReport, outputs: &Outputs, json_append: bool) {
    for w in &report.warnings {
        warn(w);
    }
    let mut text = text_writer(outputs);
    let _ = report::write_human(&mut text, report);
    let _ = text.flush();
    append_csv_rows(outputs, report);
    match &outputs.json {
        // A receiver serves test after test: one compact document per line (NDJSON).
        Some(JsonOut::Stdout) if json_append => {
            let _ = report::write_json_line(Stdout, report);
        }
        Some(JsonOut::Stdout) => {
            let mut out = Stdout;
            let _ = report::write_json(&mut out, report);
        }
        Some(JsonOut::File(path)) => {
            let mut bytes = Vec::new();
            let written = if json_append {
                report::write_json_line(&mut bytes, report)
            } else {
                report::write_json(&mut bytes, report)
            };
            if let Err(e) = written {
                record_output_failure(&path.display().to_string(), e);
            } else {
                // Both writers end the document with its newline.
                write_file(path, &bytes, json_append);
            }
        }
        None => {}
    }
}

/// Writes a bidirectional test's two reports (`--bidir`): warnings, then two text blocks
/// labelled forward and reverse, one CSV row set per direction (its `direction` column says
/// which), and one JSON document with both as `flows`.
pub fn write_bidir_outputs(forward: &RunReport, reverse: &RunReport, outputs: &Outputs) {
    for w in forward.warnings.iter().chain(&reverse.warnings) {
        warn(w);
    }
    let mut text = text_writer(outputs);
    for (label, report) in [
        ("forward: this side sent, the receiver measured", forward),
        ("reverse: the receiver sent, this side measured", reverse),
    ] {
        let _ = writeln!(text, "{label}");
        let _ = report::write_human(&mut text, report);
    }
    let _ = text.flush();
    append_csv_rows(outputs, forward);
    append_csv_rows(outputs, reverse);
    let document = report::bidir_document(forward, reverse);
    match &outputs.json {
        Some(JsonOut::Stdout) => {
            let _ = report::write_document(Stdout, &document);
        }
        Some(JsonOut::File(path)) => {
            let mut bytes = Vec::new();
            match report::write_document(&mut bytes, &document) {
                Ok(()) => write_file(path, &bytes, false),
                Err(e) => record_output_failure(&path.display().to_string(), e),
            }
        }
        None => {}
    }
}

/// Appends `report`'s rows to the summary and interval CSV files asked for, recording a
/// failure of either (the other is still written).
pub fn append_csv_rows(outputs: &Outputs, report: &RunReport) {
    if let Some(path) = &outputs.csv
        && let Err(e) = report::append_summary_csv(path, report)
    {
        record_csv_failure(path, &e);
    }
    if let Some(path) = &outputs.intervals_csv
        && let Err(e) = report::append_interval_csv(path, report)
    {
        record_csv_failure(path, &e);
    }
}

/// Writes `bytes` to `path` in one write (appending or replacing), recording a failure. A
/// regular file is replaced through a temporary file and a rename, so a failed write (disk
/// full) leaves the previous content in place instead of a truncated file; anything else (a
/// device, a pipe, a symlink) is written directly.
pub fn write_file(path: &Path, bytes: &[u8], append: bool) {
    let result = if append {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(bytes))
    } else if path.symlink_metadata().is_ok_and(|m| !m.is_file()) {
        File::create(path).and_then(|mut f| f.write_all(bytes))
    } else {
        replace_file(path, bytes)
    };
    if let Err(e) = result {
        record_output_failure(&path.display().to_string(), e);
    }
}

fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".udplab-{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut file = match File::create(&temporary) {
        Ok(f) => f,
        // A writable file in a directory we may not add to: write it in place.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return File::create(path).and_then(|mut f| f.write_all(bytes));
        }
        Err(e) => return Err(e),
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_data())
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Records a CSV failure with the path once (`CsvError` puts the path in its own message).
pub fn record_csv_failure(path: &Path, e: &report::CsvError) {
    let shown = path.display().to_string();
    let reason = match e {
        report::CsvError::Io { source, .. } => source.to_string(),
        other => {
            let text = other.to_string();
            text.strip_prefix(&format!("{shown}: "))
                .map_or(text.clone(), str::to_string)
        }
    };
    record_output_failure(&shown, reason);
}

/// Compares a finished run with the user's limits: one check per threshold given, each with
/// the value measured in its unit, or the reason it could not be measured. A threshold on a
/// run that sent nothing, whose receiver results never came back, or that has no samples for
/// it is not passed (the run is incomplete), never silently passed.
pub fn check_thresholds(report: &RunReport, th: &Thresholds) -> Vec<ThresholdCheck> {
    let mut checks = Vec::new();
    if !th.any() {
        return checks;
    }
    let sent = report.sender.as_ref().map_or(0, |s| s.sent);
    let rx = report.receiver.as_ref();
    // What keeps every receiver-side threshold from being judged, if anything.
    let unjudgeable = if report.sender.is_some() && sent == 0 {
        Some("nothing was sent".to_string())
    } else if rx.is_none() {
        Some("the receiver's results never came back".to_string())
    } else if report::loss_denominator(report).is_none() {
        Some("nothing was sent".to_string())
    } else {
        None
    };
    // `exceeded` decides on the exact measured value; `shown` is it in the check's unit.
    let mut check = |name: &str, unit: &str, limit: f64, measured: Result<(f64, bool), String>| {
        let (measured, passed, reason) = match measured {
            Ok((shown, exceeded)) => (Some(shown), !exceeded, None),
            Err(why) => (None, false, Some(why)),
        };
        checks.push(ThresholdCheck {
            name: name.to_string(),
            limit,
            measured,
            unit: unit.to_string(),
            passed,
            reason,
        });
    };
    let needs_rx = |f: &dyn Fn(&ReceiverReport) -> Result<f64, String>| match (&unjudgeable, rx) {
        (Some(why), _) => Err(why.clone()),
        (None, Some(r)) => f(r),
        (None, None) => Err("the receiver's results never came back".to_string()),
    };
    let ns = |d: Duration| d.as_nanos() as f64;
    let over = |limit: f64| move |v: f64| (v, v > limit);
    if let Some(max) = th.max_loss {
        // Compared as fractions (equal ratios compare equal), shown in percent.
        let loss = match &report.reliable {
            // --reliable: the messages the application side never got (after recovery), not
            // the datagrams the path lost (those the layer recovers).
            Some(rel) => reliable_figure(report, rel, &|a| {
                if a.messages == 0 {
                    return Err("no message was sent".to_string());
                }
                Ok(a.residual_lost as f64 / a.messages as f64)
            }),
            None => needs_rx(&|r| {
                let n = report::loss_denominator(report).unwrap_or(0);
                Ok(r.stats.lost as f64 / n as f64)
            }),
        };
        let loss = loss.map(|f| (percent_of(f), f > max));
        check("max_loss", "pct", percent_of(max), loss);
    }
    if let Some(max) = th.max_dup {
        let dup = needs_rx(&|r| Ok(r.stats.duplicates as f64)).map(over(max as f64));
        check("max_dup", "count", max as f64, dup);
    }
    if let Some(max) = th.max_reorder {
        let share = needs_rx(&|r| {
            if r.stats.received == 0 {
                return Err("no datagram was received".to_string());
            }
            Ok(r.stats.reordered as f64 / r.stats.received as f64)
        });
        let share = share.map(|f| (percent_of(f), f > max));
        check("max_reorder", "pct", percent_of(max), share);
    }
    if let Some(max) = th.max_jitter {
        let jitter = needs_rx(&|r| {
            // Jitter needs the delay difference of two arrivals.
            if r.stats.received < 2 {
                return Err("fewer than 2 datagrams were received".to_string());
            }
            Ok(r.stats.jitter_ns)
        });
        check("max_jitter", "ns", ns(max), jitter.map(over(ns(max))));
    }
    if let Some(max) = th.max_latency_p99 {
        let p99 = match &report.reliable {
            // --reliable: first send → delivery in the mode's order, what the application
            // side waited (the datagrams' one-way latency leaves out recovery).
            Some(rel) => reliable_figure(report, rel, &|a| {
                let view = if rel.mode == "unordered" {
                    a.latency_unordered
                } else {
                    a.latency_ordered
                };
                view.filter(|l| l.count > 0)
                    .map(|l| l.p99_ns as f64)
                    .ok_or_else(|| "no delivery latency samples".to_string())
            }),
            None => needs_rx(&|r| {
                r.stats
                    .latency
                    .filter(|l| l.count > 0)
                    .map(|l| l.p99_ns as f64)
                    .ok_or_else(|| "no one-way latency samples".to_string())
            }),
        };
        check("max_latency_p99", "ns", ns(max), p99.map(over(ns(max))));
    }
    if let Some(max) = th.max_rtt_p99 {
        let rtt = if sent == 0 {
            Err("nothing was sent".to_string())
        } else {
            report
                .sender
                .as_ref()
                .and_then(|s| report::measured(s.rtt.as_ref()))
                .map(|r| r.p99_ns as f64)
                .ok_or_else(|| {
                    if report.echo {
                        "no echo reply came back".to_string()
                    } else {
                        "no RTT samples (use --echo)".to_string()
                    }
                })
        };
        check("max_rtt_p99", "ns", ns(max), rtt.map(over(ns(max))));
    }
    checks
}

/// A `--reliable` figure that needs the receiver's side of the ARQ report, or why it could not
/// be judged.
fn reliable_figure(
    report: &RunReport,
    rel: &crate::summary::ReliableReport,
    figure: &dyn Fn(&crate::arq::ArqReport) -> Result<f64, String>,
) -> Result<f64, String> {
    if report.sender.as_ref().is_some_and(|s| s.sent == 0) {
        Err("nothing was sent".to_string())
    } else if !rel.receiver_results {
        Err("the receiver's results never came back".to_string())
    } else {
        figure(&rel.arq)
    }
}

/// A fraction as a percentage, rounded to 15 significant digits so 0.005 reads 0.5, not
/// 0.5000000000000001.
fn percent_of(fraction: f64) -> f64 {
    format!("{:.14e}", fraction * 100.0)
        .parse()
        .unwrap_or(f64::NAN)
}

/// One line on a threshold: `threshold failed: loss 5.60% > --max-loss 0.50%`, or
/// `threshold not judged: --max-loss: nothing was sent`. Of a `reliable` run's check,
/// `--max-loss` judged residual loss and `--max-latency-p99` the delivery latency, and the
/// line says so.
pub fn describe_check(c: &ThresholdCheck, reliable: bool) -> String {
    let option = format!("--{}", c.name.replace('_', "-"));
    let label = match c.name.as_str() {
        "max_loss" if reliable => "residual loss (messages never delivered)",
        "max_loss" => "loss",
        "max_dup" => "duplicates",
        "max_reorder" => "reordered",
        "max_jitter" => "jitter",
        "max_latency_p99" if reliable => "delivery latency p99",
        "max_latency_p99" => "one-way latency p99",
        "max_rtt_p99" => "RTT p99",
        other => other,
    };
    let Some(measured) = c.measured else {
        return format!(
            "threshold not judged: {option}: {}",
            c.reason.as_deref().unwrap_or("no data")
        );
    };
    let (value, limit) = match c.unit.as_str() {
        "pct" => crate::units::format_percent_pair(measured, c.limit),
        "ns" => crate::units::format_duration_pair_ns(measured, c.limit),
        _ => (format!("{measured}"), format!("{}", c.limit)),
    };
    if c.passed {
        format!("threshold met: {label} {value} <= {option} {limit}")
    } else {
        format!("threshold failed: {label} {value} > {option} {limit}")
    }
}

/// Judges `report` against `th`: stores the checks and the verdict in the report (so every
/// report file carries them) and returns the outcome for the exit code.
pub fn judge(report: &mut RunReport, th: &Thresholds) -> Outcome {
    report.thresholds = check_thresholds(report, th);
    report.verdict = Verdict::of(&report.thresholds);
    let (failed, unmeasured) = threshold_lines(&report.thresholds, "", report.reliable.is_some());
    outcome_of(report.verdict, failed, unmeasured, report.interrupted)
}

/// The lines on the checks that did not pass, each starting with `prefix`: (failed, not
/// measured), of a run that is `reliable` or not (see [`describe_check`]).
pub fn threshold_lines(
    checks: &[ThresholdCheck],
    prefix: &str,
    reliable: bool,
) -> (Vec<String>, Vec<String>) {
    let lines = |failed: bool| -> Vec<String> {
        checks
            .iter()
            .filter(|c| !c.passed && c.measured.is_some() == failed)
            .map(|c| format!("{prefix}{}", describe_check(c, reliable)))
            .collect()
    };
    (lines(true), lines(false))
}

/// The outcome of a verdict. A failed threshold wins over an interrupted run, which wins over
/// an incomplete measurement (the interruption explains it).
pub fn outcome_of(
    verdict: Verdict,
    mut failed: Vec<String>,
    unmeasured: Vec<String>,
    interrupted: bool,
) -> Outcome {
    match verdict {
        Verdict::Fail => {
            failed.extend(unmeasured);
            Outcome::ThresholdFailed(failed)
        }
        _ if interrupted => Outcome::Interrupted,
        Verdict::Incomplete => Outcome::Incomplete(unmeasured),
        Verdict::Pass | Verdict::None => Outcome::Passed,
    }
}

/// Sleeps until `deadline`: coarse sleep, then a spin over the last stretch, because a sleeping
/// thread wakes tens of microseconds late. Returns early when `halt` says so.
pub fn wait_until(deadline: Instant, halt: impl Fn() -> bool) {
    const SPIN: Duration = Duration::from_micros(120);
    const MAX_NAP: Duration = Duration::from_millis(20);
    // Below this, only a pure spin is punctual: a yield can hand the core away for a slice.
    const YIELD_FLOOR: Duration = Duration::from_micros(20);
    loop {
        let now = time::now();
        if now >= deadline || halt() {
            return;
        }
        let left = deadline - now;
        if left > SPIN {
            std::thread::sleep((left - SPIN).min(MAX_NAP));
        } else if left > YIELD_FLOOR {
            // Spin politely: hand the core to any runnable thread (on a 2-core machine that is
            // often our own receiver) and come straight back when there is none.
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Fills `buf` from the operating system's random source (getrandom), or, should the OS
/// refuse, from the thread RNG (itself seeded from the OS).
pub fn os_random(buf: &mut [u8]) {
    use rand::{Rng, TryRng};
    if rand::rngs::SysRng.try_fill_bytes(buf).is_err() {
        rand::rng().fill_bytes(buf);
    }
}

/// A fresh session id (also the run id): random for every run from the OS, whatever `--seed`
/// says (the seed fixes fates and patterns, not identities: two runs with one seed must not
/// collide at a receiver). Never 0.
pub fn session_id() -> u32 {
    loop {
        let mut b = [0u8; 4];
        os_random(&mut b);
        let id = u32::from_be_bytes(b);
        if id != 0 {
            return id;
        }
    }
}

/// Opens the `--intervals-json` stream, if asked for: stdout, or the file (shared with the
/// other writers of this process: loopback's receiver half, parallel flows).
pub fn open_interval_stream(outputs: &Outputs) -> anyhow::Result<Option<report::IntervalStream>> {
    Ok(match &outputs.intervals_json {
        Some(JsonOut::Stdout) => Some(report::IntervalStream::stdout()),
        Some(JsonOut::File(path)) => Some(
            report::IntervalStream::file(path)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
        ),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{
        LatencySummary, ReceiverStatsSummary, SenderReport, SignedLatencySummary,
    };

    fn run(sent: u64, received: u64) -> RunReport {
        RunReport {
            sender: Some(SenderReport {
                sent,
                ..SenderReport::default()
            }),
            receiver: Some(ReceiverReport {
                stats: ReceiverStatsSummary {
                    expected: sent,
                    received,
                    lost: sent - received,
                    ..ReceiverStatsSummary::default()
                },
                ..ReceiverReport::default()
            }),
            ..RunReport::default()
        }
    }

    fn all_thresholds() -> Thresholds {
        Thresholds {
            max_loss: Some(0.0),
            max_dup: Some(0),
            max_reorder: Some(0.0),
            max_jitter: Some(Duration::from_secs(1)),
            max_latency_p99: Some(Duration::from_secs(1)),
            max_rtt_p99: Some(Duration::from_secs(1)),
        }
    }

    /// A `--reliable` run whose path lost 5 % of the datagrams and whose application side
    /// missed `residual` of 1000 messages.
    fn reliable_run(residual: u64) -> RunReport {
        let mut report = run(1050, 1000);
        let latency = |p99_ns: u64| LatencySummary {
            count: 1000 - residual,
            p99_ns,
            max_ns: p99_ns,
            ..LatencySummary::default()
        };
        report.reliable = Some(crate::summary::ReliableReport {
            mode: "ordered".into(),
            receiver_results: true,
            arq: crate::arq::ArqReport {
                messages: 1000,
                delivered: 1000 - residual,
                residual_lost: residual,
                latency_ordered: Some(latency(3_000_000)),
                latency_unordered: Some(latency(1_000_000)),
                ..Default::default()
            },
            ..Default::default()
        });
        report
    }

    #[test]
    fn a_reliable_run_is_judged_on_what_the_application_side_got() {
        let th = Thresholds {
            max_loss: Some(0.001),
            max_latency_p99: Some(Duration::from_millis(2)),
            ..Thresholds::default()
        };
        // Raw loss 50/1050 (4.8 %) but every message delivered: loss passes; the ordered
        // delivery latency (3 ms, not the datagrams' one-way latency) fails.
        let mut report = reliable_run(0);
        let outcome = judge(&mut report, &th);
        assert_eq!(report.thresholds[0].measured, Some(0.0));
        assert!(report.thresholds[0].passed);
        assert_eq!(report.thresholds[1].measured, Some(3e6));
        let Outcome::ThresholdFailed(lines) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(
            lines,
            ["threshold failed: delivery latency p99 3.00 ms > --max-latency-p99 2.00 ms"]
        );
        // Unordered: the unordered delivery latency.
        report.reliable.as_mut().unwrap().mode = "unordered".into();
        judge(&mut report, &th);
        assert_eq!(report.thresholds[1].measured, Some(1e6));
        assert!(report.thresholds[1].passed);
        // 2 of 1000 messages never delivered: 0.2 % > 0.1 %.
        let mut report = reliable_run(2);
        let Outcome::ThresholdFailed(lines) = judge(&mut report, &th) else {
            panic!("residual loss over the limit must fail")
        };
        assert_eq!(report.thresholds[0].measured, Some(0.2));
        assert_eq!(
            lines[0],
            "threshold failed: residual loss (messages never delivered) 0.20% > --max-loss 0.10%"
        );
        // Without the receiver's results residual loss is not known: not judged.
        report.reliable.as_mut().unwrap().receiver_results = false;
        judge(&mut report, &th);
        assert_eq!(report.verdict, Verdict::Incomplete);
        assert_eq!(
            report.thresholds[0].reason.as_deref(),
            Some("the receiver's results never came back")
        );
    }

    #[test]
    fn nothing_sent_is_incomplete_for_every_threshold() {
        let mut report = run(0, 0);
        let outcome = judge(&mut report, &all_thresholds());
        assert_eq!(report.verdict, Verdict::Incomplete);
        assert_eq!(report.thresholds.len(), 6);
        for c in &report.thresholds {
            assert!(!c.passed, "{c:?}");
            assert_eq!(c.measured, None, "{c:?}");
            assert_eq!(c.reason.as_deref(), Some("nothing was sent"), "{c:?}");
        }
        let Outcome::Incomplete(lines) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(
            lines[0],
            "threshold not judged: --max-loss: nothing was sent"
        );
    }

    #[test]
    fn missing_results_or_samples_are_incomplete_not_passed() {
        let mut no_results = run(100, 100);
        no_results.receiver = None;
        let outcome = judge(
            &mut no_results,
            &Thresholds {
                max_dup: Some(5),
                ..Thresholds::default()
            },
        );
        assert!(matches!(outcome, Outcome::Incomplete(_)), "{outcome:?}");
        assert_eq!(
            no_results.thresholds[0].reason.as_deref(),
            Some("the receiver's results never came back")
        );

        // Everything lost: loss is judged (and fails), reordering and the delays cannot be.
        let mut all_lost = run(100, 0);
        judge(&mut all_lost, &all_thresholds());
        assert_eq!(all_lost.verdict, Verdict::Fail);
        let by_name = |n: &str| {
            all_lost
                .thresholds
                .iter()
                .find(|c| c.name == n)
                .unwrap()
                .clone()
        };
        assert_eq!(by_name("max_loss").measured, Some(100.0));
        assert_eq!(by_name("max_dup").measured, Some(0.0));
        assert!(by_name("max_dup").passed);
        for (name, why) in [
            ("max_reorder", "no datagram was received"),
            ("max_jitter", "fewer than 2 datagrams were received"),
            ("max_latency_p99", "no one-way latency samples"),
            ("max_rtt_p99", "no RTT samples (use --echo)"),
        ] {
            let c = by_name(name);
            assert_eq!((c.measured, c.reason.as_deref()), (None, Some(why)));
        }
        // An empty distribution is no sample either.
        let mut empty = run(100, 100);
        empty.receiver.as_mut().unwrap().stats.latency = Some(SignedLatencySummary::default());
        let outcome = judge(
            &mut empty,
            &Thresholds {
                max_latency_p99: Some(Duration::from_millis(1)),
                ..Thresholds::default()
            },
        );
        assert!(matches!(outcome, Outcome::Incomplete(_)), "{outcome:?}");
    }

    #[test]
    fn a_failure_decides_over_an_incomplete_check_and_an_interruption() {
        let mut report = run(1000, 990);
        report.interrupted = true;
        let outcome = judge(
            &mut report,
            &Thresholds {
                max_loss: Some(0.005),
                max_rtt_p99: Some(Duration::from_millis(1)),
                ..Thresholds::default()
            },
        );
        assert_eq!(report.verdict, Verdict::Fail);
        let Outcome::ThresholdFailed(lines) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(
            lines,
            [
                "threshold failed: loss 1.00% > --max-loss 0.50%",
                "threshold not judged: --max-rtt-p99: no RTT samples (use --echo)"
            ]
        );
        // Without the failure, the interruption explains the missing samples.
        let mut report = run(1000, 1000);
        report.interrupted = true;
        let th = Thresholds {
            max_rtt_p99: Some(Duration::from_millis(1)),
            ..Thresholds::default()
        };
        assert_eq!(judge(&mut report, &th), Outcome::Interrupted);
        assert_eq!(report.verdict, Verdict::Incomplete);
    }

    #[test]
    fn limits_and_values_are_stored_in_their_units_and_compared_exactly() {
        let mut report = run(2000, 1990);
        let th = Thresholds {
            max_loss: Some(0.005),
            ..Thresholds::default()
        };
        // 10 of 2000 is exactly 0.5%: met, not failed by a rounding error.
        assert_eq!(judge(&mut report, &th), Outcome::Passed);
        let c = &report.thresholds[0];
        assert_eq!(
            (c.limit, c.measured, c.unit.as_str()),
            (0.5, Some(0.5), "pct")
        );
        assert!(c.passed);
        assert_eq!(report.verdict, Verdict::Pass);
        assert_eq!(
            describe_check(c, false),
            "threshold met: loss 0.50% <= --max-loss 0.50%"
        );
    }

    #[test]
    fn failed_limits_print_apart_from_the_measured_value() {
        let mut report = run(100, 100);
        report.receiver.as_mut().unwrap().stats.jitter_ns = 1_120.0;
        let th = Thresholds {
            max_jitter: Some(Duration::from_nanos(1)),
            ..Thresholds::default()
        };
        let Outcome::ThresholdFailed(lines) = judge(&mut report, &th) else {
            panic!("must fail")
        };
        assert_eq!(
            lines,
            ["threshold failed: jitter 1.12 µs > --max-jitter 1.00 ns"]
        );
        assert_eq!(report.thresholds[0].limit, 1.0);
        assert_eq!(report.thresholds[0].unit, "ns");
    }

    #[test]
    fn a_replaced_file_is_whole_or_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, "old\n").unwrap();
        write_file(&path, b"new\n", false);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        write_file(&path, b"more\n", true);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\nmore\n");
        assert!(
            take_output_failures()
                .iter()
                .all(|f| !f.path.contains("r.json"))
        );
    }

    #[test]
    fn no_thresholds_is_verdict_none_and_passes() {
        let mut report = run(0, 0);
        assert_eq!(judge(&mut report, &Thresholds::default()), Outcome::Passed);
        assert_eq!(report.verdict, Verdict::None);
        assert!(report.thresholds.is_empty());
    }
}
