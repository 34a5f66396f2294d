//! The metrics a suite or `udplab compare` judges, their median and spread over repeats, the
//! `--max-regression` tolerances, and the judgement of a change against them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::UsageError;
use crate::report;
use crate::summary::RunReport;

/// Which way a metric gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worse {
    Higher,
    Lower,
}

/// A metric compared between runs: its name (as in `--max-regression`), unit, direction, and
/// the default tolerance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricDef {
    pub name: &'static str,
    /// `pct` (0–100), `count`, `ns` or `bps`, as in the JSON.
    pub unit: &'static str,
    pub worse: Worse,
    /// None: shown, but judged only when `--max-regression` names it (timing metrics are noisy
    /// on shared machines; a CI job opts into gating them).
    pub default_tolerance: Option<Tolerance>,
}

/// Every metric, in table order.
pub const METRICS: [MetricDef; 9] = [
    MetricDef {
        name: "loss",
        unit: "pct",
        worse: Worse::Higher,
        default_tolerance: Some(Tolerance::Points(0.1)),
    },
    MetricDef {
        name: "reorder",
        unit: "pct",
        worse: Worse::Higher,
        default_tolerance: Some(Tolerance::Points(0.1)),
    },
    MetricDef {
        name: "duplicates",
        unit: "count",
        worse: Worse::Higher,
        default_tolerance: Some(Tolerance::Points(0.0)),
    },
    MetricDef {
        name: "jitter",
        unit: "ns",
        worse: Worse::Higher,
        default_tolerance: None,
    },
    MetricDef {
        name: "latency_p50",
        unit: "ns",
        worse: Worse::Higher,
        default_tolerance: None,
    },
    MetricDef {
        name: "latency_p99",
        unit: "ns",
        worse: Worse::Higher,
        default_tolerance: None,
    },
    MetricDef {
        name: "rtt_p50",
        unit: "ns",
        worse: Worse::Higher,
        default_tolerance: None,
    },
    MetricDef {
        name: "rtt_p99",
        unit: "ns",
        worse: Worse::Higher,
        default_tolerance: None,
    },
    MetricDef {
        name: "rate",
        unit: "bps",
        worse: Worse::Lower,
        default_tolerance: None,
    },
];

fn metric(name: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|m| m.name == name)
}

/// One run's value of each metric; None where it was not measured (no echo: no RTT).
pub fn run_metrics(run: &RunReport) -> BTreeMap<&'static str, Option<f64>> {
    let rx = run.receiver.as_ref();
    let stats = rx.map(|r| &r.stats);
    let sender = run.sender.as_ref();
    let latency = stats.and_then(|s| s.latency).filter(|l| l.count > 0);
    let rtt = sender.and_then(|s| report::measured(s.rtt.as_ref()));
    let loss = stats.and_then(|s| report::percent(s.lost, report::loss_denominator(run)?));
    let values = [
        ("loss", loss),
        (
            "reorder",
            stats.and_then(|s| report::percent(s.reordered, s.received)),
        ),
        ("duplicates", stats.map(|s| s.duplicates as f64)),
        (
            "jitter",
            stats.filter(|s| s.received >= 2).map(|s| s.jitter_ns),
        ),
        ("latency_p50", latency.map(|l| l.p50_ns as f64)),
        ("latency_p99", latency.map(|l| l.p99_ns as f64)),
        ("rtt_p50", rtt.map(|r| r.p50_ns as f64)),
        ("rtt_p99", rtt.map(|r| r.p99_ns as f64)),
        (
            "rate",
            rx.filter(|r| r.stats.received > 0)
                .map(|r| r.rate_achieved_bps),
        ),
    ];
    values.into_iter().collect()
}

/// A metric over a scenario's repeats: the median (what thresholds and comparisons use) and
/// the spread (min..max) that tells noise from change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Repeats that measured it.
    pub n: usize,
}

/// The median and spread of `values` (None when empty). An even count takes the mean of the
/// two middle values.
pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// The spread of every metric over `runs`: a metric missing in any run is left out.
pub fn metric_spreads(runs: &[RunReport]) -> BTreeMap<String, Spread> {
    let per_run: Vec<_> = runs.iter().map(run_metrics).collect();
    let mut out = BTreeMap::new();
    for m in METRICS {
        let values: Option<Vec<f64>> = per_run.iter().map(|r| r.get(m.name).copied()?).collect();
        if let Some(s) = values.as_deref().and_then(spread) {
            out.insert(m.name.to_string(), s);
        }
    }
    out
}

/// How much worse a metric may get: absolute (percentage points for a percentage, datagrams
/// for a count) or relative percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tolerance {
    /// In the metric's unit: `loss=+0.1pp` (percentage points), `duplicates=+5` (datagrams).
    Points(f64),
    /// Percent of the baseline's median: `latency_p99=+20%`.
    Relative(f64),
}

impl Tolerance {
    /// `+0.1pp`, `+5`, `+20%` for a metric in `unit`.
    pub fn show(self, unit: &str) -> String {
        match self {
            Tolerance::Points(p) if unit == "pct" => format!("+{p}pp"),
            Tolerance::Points(p) => format!("+{p}"),
            Tolerance::Relative(r) => format!("+{r}%"),
        }
    }
}

/// Tolerances per judged metric: the defaults, overridden and extended by `--max-regression`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerances(pub BTreeMap<&'static str, Tolerance>);

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances(
            METRICS
                .iter()
                .filter_map(|m| Some((m.name, m.default_tolerance?)))
                .collect(),
        )
    }
}

impl Tolerances {
    /// Parses `loss=+0.1pp,latency_p99=+20%` on top of the defaults. The sign is optional and
    /// means "worse by" whichever way the metric gets worse (`rate=-10%` and `rate=10%` agree).
    pub fn parse(spec: Option<&str>) -> Result<Self, UsageError> {
        let mut t = Tolerances::default();
        let Some(spec) = spec else { return Ok(t) };
        let names = || {
            METRICS
                .iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, tol) = item.split_once('=').ok_or_else(|| {
                UsageError(format!(
                    "--max-regression {item}: expected METRIC=TOLERANCE, like loss=+0.1pp or \
                     latency_p99=+20%"
                ))
            })?;
            let m = metric(name.trim()).ok_or_else(|| {
                UsageError(format!(
                    "--max-regression: unknown metric `{name}`; metrics: {}",
                    names()
                ))
            })?;
            let tol = tol.trim().trim_start_matches(['+', '-']);
            let number = |s: &str| -> Result<f64, UsageError> {
                s.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| {
                        UsageError(format!(
                            "--max-regression {item}: `{s}` is not a number of 0 or more"
                        ))
                    })
            };
            let parsed = if let Some(p) = tol.strip_suffix("pp") {
                if m.unit != "pct" {
                    return Err(UsageError(format!(
                        "--max-regression {item}: pp (percentage points) is for the percentage \
                         metrics loss and reorder; use a relative tolerance like {}=+20%",
                        m.name
                    )));
                }
                Tolerance::Points(number(p)?)
            } else if let Some(r) = tol.strip_suffix('%') {
                Tolerance::Relative(number(r)?)
            } else if m.unit == "count" {
                Tolerance::Points(number(tol)?)
            } else {
                return Err(UsageError(format!(
                    "--max-regression {item}: give the unit: {}% (relative), like {}=+{}",
                    if m.unit == "pct" {
                        "pp (absolute points) or "
                    } else {
                        ""
                    },
                    m.name,
                    if m.unit == "pct" { "0.1pp" } else { "20%" }
                )));
            };
            t.0.insert(m.name, parsed);
        }
        Ok(t)
    }
}

/// What a change of one metric means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeVerdict {
    Same,
    Better,
    /// Worse, but within the repeats' spread: not told apart from noise.
    Noise,
    /// Worse, within the tolerance.
    Within,
    /// Worse beyond the tolerance and the spread.
    Regressed,
    /// Changed, with no tolerance given for the metric: shown, not judged.
    Unjudged,
    /// Measured on one side only.
    Missing,
}

impl ChangeVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeVerdict::Same => "same",
            ChangeVerdict::Better => "better",
            ChangeVerdict::Noise => "noise",
            ChangeVerdict::Within => "within",
            ChangeVerdict::Regressed => "REGRESSED",
            ChangeVerdict::Unjudged => "not judged",
            ChangeVerdict::Missing => "n/a",
        }
    }
}

/// One metric of one scenario, A (baseline) against B.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricChange {
    pub metric: String,
    pub unit: String,
    pub a: Option<Spread>,
    pub b: Option<Spread>,
    /// None: no tolerance given (the change is shown, not judged).
    pub tolerance: Option<Tolerance>,
    pub verdict: ChangeVerdict,
}

/// Judges B's `b` against the baseline's `a` for metric `m`. Worse by no more than the
/// tolerance is `within`; worse but with either median inside the other side's spread (with
/// more than one repeat) is `noise`; only a change beyond both is `regressed`. Without a
/// tolerance a worse value is `unjudged`.
pub fn judge_change(
    m: &MetricDef,
    a: Option<Spread>,
    b: Option<Spread>,
    tol: Option<Tolerance>,
) -> ChangeVerdict {
    let (Some(a), Some(b)) = (a, b) else {
        return ChangeVerdict::Missing;
    };
    let worse_by = match m.worse {
        Worse::Higher => b.median - a.median,
        Worse::Lower => a.median - b.median,
    };
    if worse_by == 0.0 {
        return ChangeVerdict::Same;
    }
    if worse_by < 0.0 {
        return ChangeVerdict::Better;
    }
    let Some(tol) = tol else {
        return ChangeVerdict::Unjudged;
    };
    let allowed = match tol {
        Tolerance::Points(p) => p,
        Tolerance::Relative(r) => a.median.abs() * r / 100.0,
    };
    if worse_by <= allowed {
        return ChangeVerdict::Within;
    }
    let inside = |x: f64, s: Spread| s.n > 1 && s.min <= x && x <= s.max;
    if inside(b.median, a) || inside(a.median, b) {
        return ChangeVerdict::Noise;
    }
    ChangeVerdict::Regressed
}

/// Every metric of one scenario compared (those measured on neither side left out).
pub fn compare_metrics(
    a: &BTreeMap<String, Spread>,
    b: &BTreeMap<String, Spread>,
    tolerances: &Tolerances,
) -> Vec<MetricChange> {
    METRICS
        .iter()
        .filter(|m| a.contains_key(m.name) || b.contains_key(m.name))
        .map(|m| {
            let tol = tolerances.0.get(m.name).copied();
            let (sa, sb) = (a.get(m.name).copied(), b.get(m.name).copied());
            MetricChange {
                metric: m.name.to_string(),
                unit: m.unit.to_string(),
                a: sa,
                b: sb,
                tolerance: tol,
                verdict: judge_change(m, sa, sb, tol),
            }
        })
        .collect()
}

/// A value in its unit for the table: `0.500%`, `12.3 µs`, `9.99 Mbit/s`, `3`; a spread
/// adds `[min..max]`.
pub fn format_value(unit: &str, s: Option<Spread>) -> String {
    let one = |v: f64| match unit {
        "pct" => format!("{v:.3}%"),
        "ns" => crate::units::format_duration_ns(v),
        "bps" => crate::units::format_rate_bps(v),
        _ => format!("{v}"),
    };
    match s {
        None => "-".to_string(),
        Some(s) if s.n > 1 && s.min != s.max => {
            format!("{} [{}..{}]", one(s.median), one(s.min), one(s.max))
        }
        Some(s) => one(s.median),
    }
}

/// The change from A to B: points for percentages, relative otherwise.
pub fn format_change(c: &MetricChange) -> String {
    let (Some(a), Some(b)) = (c.a, c.b) else {
        return "-".to_string();
    };
    let d = b.median - a.median;
    if c.unit == "pct" {
        format!("{d:+.3}pp")
    } else if c.unit == "count" {
        format!("{d:+}")
    } else if a.median != 0.0 {
        format!("{:+.1}%", 100.0 * d / a.median.abs())
    } else if d == 0.0 {
        "+0.0%".to_string()
    } else {
        format!("{d:+}")
    }
}

/// One line on a regressed metric: `loss regressed against the baseline: 1.100% -> 9.100%
/// (+8.000pp, tolerance +0.1pp)`.
pub fn describe_regression(c: &MetricChange) -> String {
    format!(
        "{} regressed against the baseline: {} -> {} ({}, tolerance {})",
        c.metric,
        format_value(&c.unit, c.a),
        format_value(&c.unit, c.b),
        format_change(c),
        c.tolerance.map_or("none".into(), |t| t.show(&c.unit))
    )
}

/// The side-by-side table of one scenario's changes.
pub fn write_table(out: &mut String, scenario: &str, changes: &[MetricChange]) {
    let _ = writeln!(out, "scenario {scenario}");
    let _ = writeln!(
        out,
        "  {:<12} {:>26} {:>26} {:>11}  verdict",
        "metric", "A", "B", "change"
    );
    for c in changes {
        let verdict = match (c.verdict, c.tolerance) {
            (ChangeVerdict::Regressed | ChangeVerdict::Within, Some(t)) => {
                format!("{} (tolerance {})", c.verdict.as_str(), t.show(&c.unit))
            }
            (v, _) => v.as_str().to_string(),
        };
        let _ = writeln!(
            out,
            "  {:<12} {:>26} {:>26} {:>11}  {verdict}",
            c.metric,
            format_value(&c.unit, c.a),
            format_value(&c.unit, c.b),
            format_change(c),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(median: f64, min: f64, max: f64, n: usize) -> Option<Spread> {
        Some(Spread {
            median,
            min,
            max,
            n,
        })
    }

    #[test]
    fn median_and_spread_of_odd_and_even_counts() {
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[3.0, 1.0, 2.0]), s(2.0, 1.0, 3.0, 3));
        assert_eq!(spread(&[4.0, 1.0, 3.0, 2.0]), s(2.5, 1.0, 4.0, 4));
        assert_eq!(spread(&[7.0]), s(7.0, 7.0, 7.0, 1));
        // A non-finite value is no measurement.
        assert_eq!(spread(&[f64::NAN, 5.0]), s(5.0, 5.0, 5.0, 1));
    }

    #[test]
    fn tolerances_parse_points_and_percent_and_refuse_the_rest() {
        let t = Tolerances::parse(Some("loss=+0.5pp, latency_p99=+20%,rate=-5%")).unwrap();
        assert_eq!(t.0["loss"], Tolerance::Points(0.5));
        assert_eq!(t.0["latency_p99"], Tolerance::Relative(20.0));
        assert_eq!(t.0["rate"], Tolerance::Relative(5.0));
        // Untouched metrics keep their default; timing metrics have none unless given.
        assert_eq!(t.0["reorder"], Tolerance::Points(0.1));
        assert_eq!(t.0["duplicates"], Tolerance::Points(0.0));
        assert!(!t.0.contains_key("jitter"));
        let t = Tolerances::parse(Some("duplicates=+5")).unwrap();
        assert_eq!(t.0["duplicates"], Tolerance::Points(5.0));
        assert_eq!(Tolerance::Points(5.0).show("count"), "+5");
        assert_eq!(Tolerance::Points(0.1).show("pct"), "+0.1pp");
        assert_eq!(Tolerance::Relative(20.0).show("ns"), "+20%");
        for (spec, needle) in [
            ("lost=1pp", "unknown metric `lost`"),
            ("latency_p99=5pp", "pp (percentage points) is for"),
            ("loss=0.1", "give the unit"),
            ("loss", "expected METRIC=TOLERANCE"),
            ("loss=xpp", "`x` is not a number"),
        ] {
            let e = Tolerances::parse(Some(spec)).unwrap_err().0;
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }

    #[test]
    fn a_change_is_judged_against_tolerance_and_spread() {
        let loss = metric("loss").unwrap();
        let lat = metric("latency_p99").unwrap();
        let rate = metric("rate").unwrap();
        let pp = Some(Tolerance::Points(0.1));
        let rel = Some(Tolerance::Relative(20.0));
        assert_eq!(
            judge_change(loss, s(1.0, 1.0, 1.0, 1), s(1.0, 1.0, 1.0, 1), pp),
            ChangeVerdict::Same
        );
        assert_eq!(
            judge_change(loss, s(1.0, 1.0, 1.0, 1), s(0.5, 0.5, 0.5, 1), pp),
            ChangeVerdict::Better
        );
        assert_eq!(
            judge_change(
                loss,
                s(1.0, 1.0, 1.0, 1),
                s(1.1, 1.1, 1.1, 1),
                Some(Tolerance::Points(0.2))
            ),
            ChangeVerdict::Within
        );
        assert_eq!(
            judge_change(loss, s(1.0, 1.0, 1.0, 1), s(1.5, 1.5, 1.5, 1), pp),
            ChangeVerdict::Regressed
        );
        // Beyond the tolerance but inside the baseline's repeat spread: noise.
        assert_eq!(
            judge_change(loss, s(1.0, 0.4, 1.8, 3), s(1.5, 1.4, 1.6, 3), pp),
            ChangeVerdict::Noise
        );
        // ... or the baseline's median inside B's spread.
        assert_eq!(
            judge_change(loss, s(1.0, 1.0, 1.0, 1), s(1.5, 0.9, 2.0, 3), pp),
            ChangeVerdict::Noise
        );
        // Relative: 100 µs → 119 µs is within +20%, → 130 µs is not.
        assert_eq!(
            judge_change(
                lat,
                s(100.0, 100.0, 100.0, 1),
                s(119.0, 119.0, 119.0, 1),
                rel
            ),
            ChangeVerdict::Within
        );
        assert_eq!(
            judge_change(
                lat,
                s(100.0, 100.0, 100.0, 1),
                s(130.0, 130.0, 130.0, 1),
                rel
            ),
            ChangeVerdict::Regressed
        );
        // Rate gets worse downwards.
        assert_eq!(
            judge_change(rate, s(100.0, 100.0, 100.0, 1), s(70.0, 70.0, 70.0, 1), rel),
            ChangeVerdict::Regressed
        );
        assert_eq!(
            judge_change(
                rate,
                s(100.0, 100.0, 100.0, 1),
                s(130.0, 130.0, 130.0, 1),
                rel
            ),
            ChangeVerdict::Better
        );
        // A relative tolerance of a zero baseline allows nothing.
        assert_eq!(
            judge_change(lat, s(0.0, 0.0, 0.0, 1), s(1.0, 1.0, 1.0, 1), rel),
            ChangeVerdict::Regressed
        );
        assert_eq!(
            judge_change(lat, None, s(1.0, 1.0, 1.0, 1), rel),
            ChangeVerdict::Missing
        );
        // No tolerance: a worse value is shown, not judged; equal and better still say so.
        let one = s(1.0, 1.0, 1.0, 1);
        assert_eq!(
            judge_change(lat, one, s(9.0, 9.0, 9.0, 1), None),
            ChangeVerdict::Unjudged
        );
        assert_eq!(judge_change(lat, one, one, None), ChangeVerdict::Same);
    }

    #[test]
    fn metrics_of_a_run_and_their_spread_over_repeats() {
        let mut runs = Vec::new();
        for lost in [0u64, 10, 4] {
            let mut r = crate::report::fixtures::run_report();
            let rx = r.receiver.as_mut().unwrap();
            rx.stats.lost = lost;
            runs.push(r);
        }
        let denominator = report::loss_denominator(&runs[0]).unwrap() as f64;
        let spreads = metric_spreads(&runs);
        let loss = spreads["loss"];
        assert_eq!(loss.n, 3);
        assert_eq!(loss.median, 400.0 / denominator);
        assert_eq!((loss.min, loss.max), (0.0, 1000.0 / denominator));
    }
}
