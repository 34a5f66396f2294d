//! `udplab suite` and `udplab compare`: named scenarios from a suite file run one after another
//! in this process, their repeats reduced to a median and spread, judged against thresholds
//! and a baseline, and written as JSON, CSV and JUnit for CI.

pub mod compare;
pub mod file;
pub mod junit;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::compare::{ChangeVerdict, MetricChange, Spread, Tolerances};
use self::file::Scenario;
use crate::cli::{Command, CompareArgs, SuiteArgs};
use crate::config::{self, DEFAULT_PORT, JsonOut, Outputs, SendConfig};
use crate::error::{Outcome, UsageError};
use crate::report;
use crate::run::{self, Stop};
use crate::summary::{DocumentHeader, ReportDocument, RunReport, ThresholdCheck, Verdict};
use crate::{net, time};

/// `schema` of a suite document.
pub const SUITE_SCHEMA: &str = "udplab.suite.v1";

/// Columns of `udplab suite --csv`: the summary CSV's (sender row), then these.
pub const SUITE_EXTRA_COLUMNS: [&str; 2] = ["scenario", "repeat"];

/// The JSON of `udplab suite --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SuiteDocument {
    #[serde(flatten)]
    pub header: DocumentHeader,
    /// The suite file as given.
    pub file: String,
    /// When the suite started, RFC 3339 UTC.
    pub started_at: String,
    /// `udplab suite --label` tags (each run also carries them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The baseline compared with, when given.
    #[serde(default)]
    pub baseline: Option<String>,
    pub scenarios: Vec<ScenarioResult>,
    /// The worst scenario verdict.
    pub verdict: Verdict,
}

/// One scenario: every repeat's run report, the median and spread of each metric, the
/// thresholds judged on the medians, and the comparison with the baseline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub name: String,
    /// The equivalent command line.
    pub command: String,
    pub repeat: u32,
    /// Wall time of all its repeats, seconds.
    pub time_s: f64,
    pub runs: Vec<RunReport>,
    /// Median and spread (min..max) over the repeats, by metric (see `compare::METRICS`).
    pub metrics: BTreeMap<String, Spread>,
    /// Each threshold judged on the median of the repeats' measurements.
    pub thresholds: Vec<ThresholdCheck>,
    /// Each metric against the baseline's same-named scenario (empty without a baseline).
    #[serde(default)]
    pub regressions: Vec<MetricChange>,
    /// fail when a threshold failed or a metric regressed; incomplete when a threshold could
    /// not be measured or the scenario could not run.
    pub verdict: Verdict,
    /// Why the scenario could not run (setup error), if it could not.
    #[serde(default)]
    pub error: Option<String>,
}

impl ScenarioResult {
    /// A `--reliable` scenario: its loss and latency thresholds judged what the application
    /// side got (residual loss, delivery latency), and its lines say so.
    pub fn is_reliable(&self) -> bool {
        self.runs.first().is_some_and(|r| r.reliable.is_some())
    }
}

/// The thresholds judged on the median over the repeats: one repeat's own checks; over
/// several, each threshold's median measurement against its limit (not judged when any repeat
/// could not measure it).
pub fn median_checks(runs: &[RunReport]) -> Vec<ThresholdCheck> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    if runs.len() == 1 {
        return first.thresholds.clone();
    }
    first
        .thresholds
        .iter()
        .map(|c| {
            let mut values = Vec::new();
            let mut reason = None;
            for (i, run) in runs.iter().enumerate() {
                match run.thresholds.iter().find(|o| o.name == c.name) {
                    Some(ThresholdCheck {
                        measured: Some(v), ..
                    }) => values.push(*v),
                    other => {
                        let why = other
                            .and_then(|o| o.reason.clone())
                            .unwrap_or_else(|| "not judged".into());
                        reason.get_or_insert(format!("repeat {}: {why}", i + 1));
                    }
                }
            }
            let median = compare::spread(&values).map(|s| s.median);
            match (reason, median) {
                (None, Some(m)) => ThresholdCheck {
                    measured: Some(m),
                    passed: m <= c.limit,
                    reason: None,
                    ..c.clone()
                },
                (why, _) => ThresholdCheck {
                    measured: None,
                    passed: false,
                    reason: Some(why.unwrap_or_else(|| "no repeat measured it".into())),
                    ..c.clone()
                },
            }
        })
        .collect()
}

/// Runs one parsed scenario command once and judges it.
fn run_once(
    command: Command,
    labels: &BTreeMap<String, String>,
    stop: &Stop,
) -> anyhow::Result<RunReport> {
    let quiet = |cfg: &mut SendConfig| {
        cfg.outputs = Outputs {
            quiet: true,
            ..Outputs::default()
        };
        cfg.labels.extend(labels.clone());
    };
    let (cfg, mut report) = match command {
        Command::Send(cmd) => {
            let addr = net::resolve(&cmd.target, DEFAULT_PORT)?;
            config::check_destination(&cmd.target, addr)?;
            let mut cfg =
                SendConfig::from_args(&cmd.target, addr, &cmd.opts, Duration::from_secs(10))?;
            quiet(&mut cfg);
            let report = if cfg.flows > 1 {
                run::flows::run(&cfg, stop)?.total
            } else {
                run::send::run(&cfg, stop)?
            };
            (cfg, report)
        }
        Command::Loopback(cmd) => {
            let placeholder = if cmd.ipv6 { "[::1]:0" } else { "127.0.0.1:0" };
            let addr = placeholder
                .parse()
                .map_err(|_| UsageError("loopback address".into()))?;
            let mut cfg =
                SendConfig::from_args(placeholder, addr, &cmd.opts, Duration::from_secs(5))?;
            quiet(&mut cfg);
            let rx = run::loopback::LoopbackReceiver {
                ipv6: cmd.ipv6,
                kernel_timestamps: !cmd.no_kernel_timestamps,
                gro: cmd.gro,
            };
            let report = if cfg.flows > 1 {
                run::loopback::with_receiver(cfg.clone(), rx, stop, run::flows::run)?.total
            } else {
                run::loopback::run(cfg.clone(), rx, stop)?
            };
            (cfg, report)
        }
        _ => anyhow::bail!("a scenario is a loopback or send test"),
    };
    run::judge(&mut report, &cfg.thresholds);
    Ok(report)
}

/// Checks every scenario's options (clap, then the configuration rules) before anything runs,
/// so a typo in the last scenario does not cost the run time of the others.
fn validate(scenario: &Scenario) -> Result<(), UsageError> {
    let at = |e: UsageError| {
        UsageError(format!(
            "line {}: scenario \"{}\": {}",
            scenario.line, scenario.name, e.0
        ))
    };
    match scenario.parse_command()? {
        Command::Send(cmd) => {
            // The address is resolved when the scenario runs (a receiver may start later).
            let addr = "127.0.0.1:5210".parse().expect("an address");
            SendConfig::from_args(&cmd.target, addr, &cmd.opts, Duration::from_secs(10))
                .map(drop)
                .map_err(at)
        }
        Command::Loopback(cmd) => {
            let addr = "127.0.0.1:0".parse().expect("an address");
            SendConfig::from_args("127.0.0.1:0", addr, &cmd.opts, Duration::from_secs(5))
                .map(drop)
                .map_err(at)
        }
        _ => Err(at(UsageError("not a loopback or send test".into()))),
    }
}

/// One progress line on a finished repeat.
fn progress_line(index: usize, total: usize, s: &Scenario, repeat: u32, run: &RunReport) -> String {
    let m = compare::run_metrics(run);
    let value = |name: &str, unit: &str| {
        compare::format_value(
            unit,
            m.get(name)
                .copied()
                .flatten()
                .and_then(|v| compare::spread(&[v])),
        )
    };
    let repeat = if s.repeat > 1 {
        format!(" (repeat {repeat}/{})", s.repeat)
    } else {
        String::new()
    };
    format!(
        "[{index}/{total}] {}{repeat}: loss {}, latency p99 {}, jitter {}, rate {}: {}",
        s.name,
        value("loss", "pct"),
        value("latency_p99", "ns"),
        value("jitter", "ns"),
        value("rate", "bps"),
        run.verdict.as_str()
    )
}

/// A baseline or compared document, reduced to its scenarios' metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparable {
    /// `suite` or `run`.
    pub kind: &'static str,
    pub scenarios: Vec<(String, BTreeMap<String, Spread>)>,
}

/// Reads a suite JSON (`udplab suite --json`) or a run JSON (`--json` of send/loopback). A
/// run is one scenario, named by its `scenario` label, else `run`.
pub fn load_comparable(path: &Path) -> Result<Comparable, UsageError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read {shown}: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| UsageError(format!("{shown}: not JSON: {e}")))?;
    let invalid = |e: serde_json::Error| UsageError(format!("{shown}: {e}"));
    match value.get("schema").and_then(|s| s.as_str()) {
        Some(SUITE_SCHEMA) => {
            let doc: SuiteDocument = serde_json::from_value(value).map_err(invalid)?;
            Ok(Comparable {
                kind: "suite",
                scenarios: doc
                    .scenarios
                    .into_iter()
                    .map(|s| (s.name, s.metrics))
                    .collect(),
            })
        }
        Some(crate::summary::REPORT_SCHEMA) => {
            let doc: ReportDocument = serde_json::from_value(value).map_err(invalid)?;
            let name = doc
                .total
                .labels
                .get("scenario")
                .cloned()
                .unwrap_or_else(|| "run".into());
            Ok(Comparable {
                kind: "run",
                scenarios: vec![(name, compare::metric_spreads(&[doc.total]))],
            })
        }
        other => Err(UsageError(format!(
            "{shown}: not a udplab suite or run report (schema {}; expected {SUITE_SCHEMA} or {})",
            other.unwrap_or("missing"),
            crate::summary::REPORT_SCHEMA
        ))),
    }
}

/// The baseline's metrics for scenario `name`: the same-named one, or the only one when both
/// sides hold a single scenario.
pub fn baseline_for<'a>(
    base: &'a Comparable,
    name: &str,
    single: bool,
) -> Option<&'a BTreeMap<String, Spread>> {
    base.scenarios
        .iter()
        .find(|(n, _)| n == name)
        .or_else(|| (single && base.scenarios.len() == 1).then(|| &base.scenarios[0]))
        .map(|(_, m)| m)
}

/// Runs `udplab suite`.
pub fn run_suite(args: &SuiteArgs, stop: &Stop) -> anyhow::Result<Outcome> {
    let shown = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| UsageError(format!("cannot read {shown}: {e}")))?;
    let scenarios = file::parse(&text).map_err(|e| UsageError(format!("{shown}: {}", e.0)))?;
    for s in &scenarios {
        validate(s).map_err(|e| UsageError(format!("{shown}: {}", e.0)))?;
    }
    let tolerances = Tolerances::parse(args.max_regression.as_deref())?;
    let baseline = args.baseline.as_deref().map(load_comparable).transpose()?;
    let outputs = Outputs {
        json: args.json.clone().map(JsonOut::File),
        ..Outputs::default()
    };
    let logs: Vec<&Path> = args
        .csv
        .iter()
        .chain(&args.junit)
        .map(|p| p.as_path())
        .collect();
    let checked = run::check_outputs(&outputs, &logs)?;
    let suite_labels: BTreeMap<String, String> = args.label.iter().cloned().collect();
    let started_wall = time::wall_ns();
    let mut out = run::Stdout;
    let mut results = Vec::new();
    let total = scenarios.len();
    for (i, s) in scenarios.iter().enumerate() {
        let mut labels = suite_labels.clone();
        labels.insert("scenario".into(), s.name.clone());
        let started = time::now();
        let mut result = ScenarioResult {
            name: s.name.clone(),
            command: s.command(),
            repeat: s.repeat,
            ..ScenarioResult::default()
        };
        for r in 1..=s.repeat {
            if stop.requested() {
                break;
            }
            match run_once(s.parse_command()?, &labels, stop) {
                Ok(run) => {
                    let _ = writeln!(out, "{}", progress_line(i + 1, total, s, r, &run));
                    let _ = out.flush();
                    result.runs.push(run);
                }
                Err(e) => {
                    let msg = e
                        .chain()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(": ");
                    let _ = writeln!(out, "[{}/{total}] {}: error: {msg}", i + 1, s.name);
                    result.error = Some(msg);
                    break;
                }
            }
        }
        result.time_s = started.elapsed().as_secs_f64();
        result.metrics = compare::metric_spreads(&result.runs);
        result.thresholds = median_checks(&result.runs);
        if let Some(base) = &baseline
            && let Some(a) = baseline_for(base, &s.name, total == 1)
        {
            result.regressions = compare::compare_metrics(a, &result.metrics, &tolerances);
        }
        result.verdict = scenario_verdict(&result);
        results.push(result);
        if stop.requested() {
            break;
        }
    }
    let doc = SuiteDocument {
        header: report::document_header(SUITE_SCHEMA),
        file: shown.clone(),
        started_at: time::rfc3339(started_wall),
        labels: suite_labels,
        baseline: args.baseline.as_ref().map(|p| p.display().to_string()),
        verdict: results
            .iter()
            .fold(Verdict::None, |v, s| v.worst(s.verdict)),
        scenarios: results,
    };
    let _ = write!(out, "{}", summary_text(&doc));
    let _ = out.flush();
    write_suite_outputs(args, &doc, started_wall);
    checked.remove_unwritten();
    Ok(suite_outcome(&doc, stop.requested()))
}

/// A scenario's verdict: its thresholds on the medians, a regression fails it, a scenario
/// that could not run (or not every repeat) is incomplete at best.
fn scenario_verdict(s: &ScenarioResult) -> Verdict {
    let mut v = Verdict::of(&s.thresholds);
    if s.regressions
        .iter()
        .any(|c| c.verdict == ChangeVerdict::Regressed)
    {
        v = v.worst(Verdict::Fail);
    }
    if s.error.is_some() || s.runs.len() < s.repeat as usize {
        v = v.worst(Verdict::Incomplete);
    }
    v
}

/// The text after the progress lines: each scenario's verdict, thresholds and changes.
pub fn summary_text(doc: &SuiteDocument) -> String {
    let mut t = String::new();
    use std::fmt::Write as _;
    let n = doc.scenarios.len();
    let plural = if n == 1 { "" } else { "s" };
    let _ = writeln!(t, "\nsuite {}: {n} scenario{plural}", doc.file);
    for s in &doc.scenarios {
        let verdict = if s.error.is_some() {
            "error"
        } else {
            s.verdict.as_str()
        };
        let _ = writeln!(t, "  {:<24} {verdict}", s.name);
        for c in &s.thresholds {
            let _ = writeln!(t, "    {}", run::describe_check(c, s.is_reliable()));
        }
    }
    for s in doc.scenarios.iter().filter(|s| !s.regressions.is_empty()) {
        t.push('\n');
        compare::write_table(&mut t, &s.name, &s.regressions);
    }
    t
}

/// The exit outcome: a failed threshold or a regression gives 1, a scenario that could not
/// run or measure gives 3.
fn suite_outcome(doc: &SuiteDocument, interrupted: bool) -> Outcome {
    let mut failed = Vec::new();
    let mut unmeasured = Vec::new();
    for s in &doc.scenarios {
        let (f, u) = run::threshold_lines(
            &s.thresholds,
            &format!("scenario {}: ", s.name),
            s.is_reliable(),
        );
        failed.extend(f);
        unmeasured.extend(u);
        for c in s
            .regressions
            .iter()
            .filter(|c| c.verdict == ChangeVerdict::Regressed)
        {
            failed.push(format!(
                "scenario {}: {}",
                s.name,
                compare::describe_regression(c)
            ));
        }
        if let Some(e) = &s.error {
            unmeasured.push(format!("scenario {}: could not run: {e}", s.name));
        }
    }
    run::outcome_of(doc.verdict, failed, unmeasured, interrupted)
}

/// Writes `--json`, `--csv` and `--junit`, recording failures for the exit code.
fn write_suite_outputs(args: &SuiteArgs, doc: &SuiteDocument, started_wall: u64) {
    if let Some(path) = &args.json {
        let mut bytes = Vec::new();
        match report::write_document(&mut bytes, doc) {
            Ok(()) => run::write_file(path, &bytes, false),
            Err(e) => run::record_output_failure(&path.display().to_string(), e),
        }
    }
    if let Some(path) = &args.csv {
        match suite_csv(doc) {
            Ok(bytes) => run::write_file(path, &bytes, false),
            Err(e) => run::record_output_failure(&path.display().to_string(), e),
        }
    }
    if let Some(path) = &args.junit {
        let name = args
            .file
            .file_stem()
            .map_or("suite".into(), |s| s.to_string_lossy().into_owned());
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        // JUnit's timestamp has no zone and no fraction: the UTC time to the second.
        let stamp: String = time::rfc3339(started_wall).chars().take(19).collect();
        let xml = junit::write_junit(doc, &name, &hostname, &stamp);
        run::write_file(path, xml.as_bytes(), false);
    }
}

/// `udplab suite --csv`: the summary CSV's sender row of every repeat, then scenario, repeat.
pub fn suite_csv(doc: &SuiteDocument) -> Result<Vec<u8>, ::csv::Error> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let header: Vec<&str> = report::SUMMARY_COLUMNS
        .iter()
        .chain(&SUITE_EXTRA_COLUMNS)
        .copied()
        .collect();
    w.write_record(&header)?;
    for s in &doc.scenarios {
        for (i, run) in s.runs.iter().enumerate() {
            if let Some(mut row) = report::summary_records(run).into_iter().next() {
                row.push(s.name.clone());
                row.push((i + 1).to_string());
                w.write_record(&row)?;
            }
        }
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

/// Runs `udplab compare A B`.
pub fn compare_files(args: &CompareArgs) -> anyhow::Result<Outcome> {
    let tolerances = Tolerances::parse(args.max_regression.as_deref())?;
    let a = load_comparable(&args.a)?;
    let b = load_comparable(&args.b)?;
    let (text, regressions) = compare_text(&a, &b, &tolerances, &args.a, &args.b);
    let mut out = run::Stdout;
    let _ = write!(out, "{text}");
    let _ = out.flush();
    Ok(if regressions.is_empty() {
        Outcome::Passed
    } else {
        Outcome::ThresholdFailed(regressions)
    })
}

/// The comparison table of two documents and one line per regression.
pub fn compare_text(
    a: &Comparable,
    b: &Comparable,
    tolerances: &Tolerances,
    a_path: &Path,
    b_path: &Path,
) -> (String, Vec<String>) {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(t, "A: {} ({})", a_path.display(), a.kind);
    let _ = writeln!(t, "B: {} ({})", b_path.display(), b.kind);
    let mut regressions = Vec::new();
    let single = a.scenarios.len() == 1 && b.scenarios.len() == 1;
    for (name, mb) in &b.scenarios {
        let Some(ma) = baseline_for(a, name, single) else {
            let _ = writeln!(t, "scenario {name}: only in B, nothing to compare");
            continue;
        };
        let changes = compare::compare_metrics(ma, mb, tolerances);
        compare::write_table(&mut t, name, &changes);
        for c in changes
            .iter()
            .filter(|c| c.verdict == ChangeVerdict::Regressed)
        {
            regressions.push(format!(
                "scenario {name}: {}",
                compare::describe_regression(c)
            ));
        }
    }
    for (name, _) in &a.scenarios {
        if !single && !b.scenarios.iter().any(|(n, _)| n == name) {
            let _ = writeln!(t, "scenario {name}: only in A, nothing to compare");
        }
    }
    let _ = writeln!(
        t,
        "verdict: {}",
        if regressions.is_empty() {
            "no regression beyond the tolerances".to_string()
        } else {
            format!("{} regression(s)", regressions.len())
        }
    );
    (t, regressions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, limit: f64, measured: Option<f64>) -> ThresholdCheck {
        ThresholdCheck {
            name: name.into(),
            limit,
            measured,
            unit: "pct".into(),
            passed: measured.is_some_and(|m| m <= limit),
            reason: measured.is_none().then(|| "nothing was sent".to_string()),
        }
    }

    fn run_with(checks: Vec<ThresholdCheck>) -> RunReport {
        RunReport {
            thresholds: checks,
            ..RunReport::default()
        }
    }

    #[test]
    fn a_threshold_applies_to_the_median_of_the_repeats() {
        // One bad repeat out of three: the median (0.2%) passes the 0.5% limit.
        let runs = [0.1, 2.0, 0.2].map(|v| run_with(vec![check("max_loss", 0.5, Some(v))]));
        let c = median_checks(&runs);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].measured, Some(0.2));
        assert!(c[0].passed);
        // Two bad ones: the median fails.
        let runs = [0.1, 2.0, 0.9].map(|v| run_with(vec![check("max_loss", 0.5, Some(v))]));
        let c = median_checks(&runs);
        assert_eq!((c[0].measured, c[0].passed), (Some(0.9), false));
        assert_eq!(Verdict::of(&c), Verdict::Fail);
        // One repeat that could not measure it: not judged, saying which repeat.
        let runs = [Some(0.1), None, Some(0.2)].map(|v| run_with(vec![check("max_loss", 0.5, v)]));
        let c = median_checks(&runs);
        assert_eq!(c[0].measured, None);
        assert_eq!(c[0].reason.as_deref(), Some("repeat 2: nothing was sent"));
        assert_eq!(Verdict::of(&c), Verdict::Incomplete);
        // A single repeat keeps its own checks (exact comparisons).
        let one = [run_with(vec![check("max_loss", 0.5, Some(0.6))])];
        assert_eq!(median_checks(&one), one[0].thresholds);
    }

    #[test]
    fn a_regression_fails_the_scenario_and_an_error_makes_it_incomplete() {
        let mut s = ScenarioResult {
            repeat: 1,
            runs: vec![RunReport::default()],
            thresholds: vec![check("max_loss", 0.5, Some(0.1))],
            ..ScenarioResult::default()
        };
        assert_eq!(scenario_verdict(&s), Verdict::Pass);
        let spread = |v: f64| {
            Some(Spread {
                median: v,
                min: v,
                max: v,
                n: 1,
            })
        };
        s.regressions.push(MetricChange {
            metric: "loss".into(),
            unit: "pct".into(),
            a: spread(0.0),
            b: spread(5.0),
            tolerance: Some(compare::Tolerance::Points(0.1)),
            verdict: ChangeVerdict::Regressed,
        });
        assert_eq!(scenario_verdict(&s), Verdict::Fail);
        s.regressions.clear();
        s.error = Some("no receiver answering".into());
        assert_eq!(scenario_verdict(&s), Verdict::Incomplete);
    }

    #[test]
    fn a_reliable_scenario_names_residual_loss_in_its_lines() {
        let failing = vec![check("max_loss", 0.5, Some(0.6))];
        let mut s = ScenarioResult {
            name: "rel".into(),
            repeat: 1,
            runs: vec![RunReport::default()],
            thresholds: failing,
            ..ScenarioResult::default()
        };
        let doc = |s: &ScenarioResult| SuiteDocument {
            scenarios: vec![s.clone()],
            ..SuiteDocument::default()
        };
        assert!(!s.is_reliable());
        assert!(!summary_text(&doc(&s)).contains("residual loss"));
        s.runs[0].reliable = Some(crate::summary::ReliableReport::default());
        assert!(s.is_reliable());
        let text = summary_text(&doc(&s));
        assert!(
            text.contains("residual loss (messages never delivered)"),
            "{text}"
        );
        let (failed, _) = run::threshold_lines(&s.thresholds, "", s.is_reliable());
        assert!(failed[0].contains("residual loss"), "{failed:?}");
    }
}
