//! `udplab plot`: SVG charts of a run report (latency percentiles, per-interval rate, loss and
//! jitter, the loss pattern) and of runs against a baseline (key metrics before and after).
//!
//! Plots see only the report documents, like every other writer; drawing is in `report::svg`.

use std::collections::BTreeMap;
use std::fmt;

use crate::report::svg::{COLOURS, Canvas, Frame, nice_ticks, short_number};
use crate::suite::compare::Spread;
use crate::summary::{
    IntervalRow, LADDER_DECADES, PercentilePoint, ReceiverReport, ReportDocument, RunReport,
};

const WIDTH: f64 = 960.0;
const LEFT: f64 = 90.0;
const PANEL_WIDTH: f64 = WIDTH - LEFT - 40.0;
const PANEL_HEIGHT: f64 = 220.0;
/// From one panel's top to the next one's.
const PANEL_PITCH: f64 = PANEL_HEIGHT + 100.0;
/// Caption characters per line.
const CAPTION_CHARS: usize = 130;

/// Series names (`data-series` attributes) of a run plot.
pub mod series {
    pub const LATENCY: &str = "latency";
    pub const LATENCY_MAX: &str = "latency-max";
    pub const SENT_RATE: &str = "sent-rate";
    pub const RECEIVED_RATE: &str = "received-rate";
    pub const LOST: &str = "lost";
    pub const JITTER: &str = "jitter";
    pub const LOSS_RANGES: &str = "loss-ranges";
    pub const BASELINE: &str = "baseline";
    pub const CURRENT: &str = "current";
}

/// A time unit chosen for the size of the values: the divisor from nanoseconds and its name.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TimeUnit {
    per_ns: f64,
    name: &'static str,
}

fn time_unit(max_ns: f64) -> TimeUnit {
    if max_ns >= 10_000_000.0 {
        TimeUnit {
            per_ns: 1e6,
            name: "ms",
        }
    } else {
        TimeUnit {
            per_ns: 1e3,
            name: "µs",
        }
    }
}

/// A bit-rate unit chosen for the size of the values.
fn rate_unit(max_bps: f64) -> (f64, &'static str) {
    if max_bps >= 1e9 {
        (1e9, "Gbit/s")
    } else if max_bps >= 1e6 {
        (1e6, "Mbit/s")
    } else {
        (1e3, "kbit/s")
    }
}

/// What can go wrong before drawing.
#[derive(Debug, Clone, PartialEq)]
pub enum PlotError {
    /// The document has no flow with that index.
    NoSuchFlow { index: usize, flows: usize },
}

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlotError::NoSuchFlow { index, flows } => write!(
                f,
                "the report has {flows} flow(s); --flow {index} names none (flows count from 0)"
            ),
        }
    }
}

impl std::error::Error for PlotError {}

/// Lost sequence ranges `[first, last]` of one run, from its JSON or its `--loss-log`.
pub type LossRanges = Vec<[u64; 2]>;

/// The SVG of one flow of a run report: latency percentiles, rate, loss and jitter per
/// interval, and the loss pattern. `loss_ranges` (from `--loss-log`) stand in when the JSON
/// carries none.
pub fn run_svg(
    doc: &ReportDocument,
    flow: usize,
    loss_ranges: Option<&LossRanges>,
) -> Result<String, PlotError> {
    let run = doc.flows.get(flow).ok_or(PlotError::NoSuchFlow {
        index: flow,
        flows: doc.flows.len(),
    })?;
    let mut canvas = Canvas::new(WIDTH);
    let title = format!("udplab run {}", run.run_id);
    canvas.text(20.0, 30.0, 20.0, "start", "title", &title);
    let mut caption = format!(
        "started {} · target {} · {} B datagrams, {}",
        run.started_at, run.target, run.payload_bytes, run.pattern
    );
    if doc.flows.len() > 1 {
        caption.push_str(&format!(" · flow {} of {}", flow + 1, doc.flows.len()));
    }
    let mut y = canvas.wrapped_text(20.0, 52.0, 12.0, CAPTION_CHARS, &caption);
    y = canvas.wrapped_text(
        20.0,
        y,
        12.0,
        CAPTION_CHARS,
        &format!("command: {}", doc.header.command),
    );
    let mut top = y + 45.0;
    let receiver = run.receiver.as_ref();

    latency_panel(&mut canvas, top, receiver);
    top += PANEL_PITCH;
    let sender_rows = run.sender.as_ref().map_or(&[][..], |s| &s.intervals[..]);
    let receiver_rows = receiver.map_or(&[][..], |r| &r.intervals[..]);
    rate_panel(&mut canvas, top, sender_rows, receiver_rows);
    top += PANEL_PITCH;
    loss_panel(&mut canvas, top, receiver_rows);
    top += PANEL_PITCH;
    jitter_panel(&mut canvas, top, receiver_rows);
    top += PANEL_PITCH;
    let ranges = receiver
        .map(|r| &r.loss_ranges)
        .filter(|r| !r.is_empty())
        .or(loss_ranges);
    loss_pattern_panel(&mut canvas, top, run, ranges);
    Ok(canvas.finish(&title))
}

fn frame(top: f64, x: (f64, f64), y: (f64, f64), x_log: bool) -> Frame {
    Frame {
        left: LEFT,
        top,
        width: PANEL_WIDTH,
        height: PANEL_HEIGHT,
        x,
        y,
        x_log,
    }
}

/// "99.9%" for 99.9; the label of a decade of the percentile axis.
fn percentile_label(decade: u32) -> String {
    if decade == 0 {
        return "0%".into();
    }
    let p = 100.0 * (1.0 - 10f64.powi(-(decade as i32)));
    format!("{}%", short_number(p))
}

/// x of a percentile point on the percentile axis: 1/(1 − p).
fn percentile_x(p: &PercentilePoint) -> f64 {
    1.0 / (1.0 - p.percentile / 100.0)
}

fn latency_panel(canvas: &mut Canvas, top: f64, receiver: Option<&ReceiverReport>) {
    let title = "One-way latency by percentile (HdrHistogram style)";
    let points: Vec<PercentilePoint> = receiver
        .map(|r| r.stats.latency_percentiles.clone())
        .unwrap_or_default();
    // The last point is 100 %, the maximum: at 1/(1 − p) = ∞ it is drawn as a line instead.
    let (finite, max) = match points.split_last() {
        Some((last, rest)) if last.percentile >= 100.0 => (rest.to_vec(), Some(last.value_ns)),
        _ => (points.clone(), None),
    };
    let last_x = finite.last().map_or(1.0, percentile_x);
    let decades = (last_x.log10().ceil().max(1.0) as u32).min(LADDER_DECADES);
    let x_range = (1.0, 10f64.powi(decades as i32));
    let max_ns = max
        .or(finite.last().map(|p| p.value_ns))
        .unwrap_or(0)
        .max(0) as f64;
    let unit = time_unit(max_ns);
    let (y_ticks, y_top) = nice_ticks(0.0, max_ns / unit.per_ns * 1.05);
    let f = frame(top, x_range, (0.0, y_top), true);
    let x_ticks: Vec<(f64, String)> = (0..=decades)
        .map(|d| (10f64.powi(d as i32), percentile_label(d)))
        .collect();
    canvas.axes(
        &f,
        title,
        "percentile (log scale of 1/(1 − p))",
        &format!("one-way latency ({})", unit.name),
        &x_ticks,
        &y_ticks,
    );
    if finite.is_empty() {
        let why = if receiver.is_some() {
            "no latency percentiles in this report (written by udplab 0.1 or later with results)"
        } else {
            "no receiver results in this report: no one-way latency"
        };
        canvas.note(&f, why);
        return;
    }
    let data: Vec<(f64, f64)> = finite
        .iter()
        .map(|p| (percentile_x(p), p.value_ns as f64 / unit.per_ns))
        .collect();
    canvas.polyline(&f, series::LATENCY, COLOURS[0], &data);
    if let Some(max) = max {
        let value = max as f64 / unit.per_ns;
        canvas.marker_line(
            &f,
            series::LATENCY_MAX,
            value,
            &format!("max {} {}", short_number(value), unit.name),
        );
    }
    canvas.legend(&f, &[("one-way latency", COLOURS[0])]);
}

/// The middle of an interval row, seconds since the test start.
fn mid(row: &IntervalRow) -> f64 {
    (row.start_s + row.end_s) / 2.0
}

fn time_range(rows: &[&[IntervalRow]]) -> (f64, f64) {
    let end = rows
        .iter()
        .flat_map(|r| r.iter())
        .map(|r| r.end_s)
        .fold(0.0, f64::max);
    (0.0, if end > 0.0 { end } else { 1.0 })
}

fn time_ticks(x: (f64, f64)) -> Vec<(f64, String)> {
    let (ticks, _) = nice_ticks(x.0, x.1);
    ticks
        .into_iter()
        .filter(|t| *t <= x.1 + 1e-9)
        .map(|t| (t, short_number(t)))
        .collect()
}

const TIME_TITLE: &str = "time since the test start (s)";

fn rate_panel(canvas: &mut Canvas, top: f64, sender: &[IntervalRow], receiver: &[IntervalRow]) {
    let x = time_range(&[sender, receiver]);
    let max = sender
        .iter()
        .chain(receiver)
        .map(|r| r.rate_bps)
        .fold(0.0, f64::max);
    let (per, unit) = rate_unit(max);
    let (y_ticks, y_top) = nice_ticks(0.0, max / per * 1.05);
    let f = frame(top, x, (0.0, y_top), false);
    canvas.axes(
        &f,
        "Payload rate per interval",
        TIME_TITLE,
        &format!("rate ({unit})"),
        &time_ticks(x),
        &y_ticks,
    );
    if sender.is_empty() && receiver.is_empty() {
        canvas.note(&f, "no interval rows in this report");
        return;
    }
    let points = |rows: &[IntervalRow]| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (mid(r), r.rate_bps / per)).collect()
    };
    let mut legend = Vec::new();
    if !sender.is_empty() {
        canvas.polyline(&f, series::SENT_RATE, COLOURS[0], &points(sender));
        legend.push(("sent", COLOURS[0]));
    }
    if !receiver.is_empty() {
        canvas.polyline(&f, series::RECEIVED_RATE, COLOURS[1], &points(receiver));
        legend.push(("received", COLOURS[1]));
    }
    canvas.legend(&f, &legend);
}

fn loss_panel(canvas: &mut Canvas, top: f64, receiver: &[IntervalRow]) {
    let x = time_range(&[receiver]);
    let lost: Vec<(f64, f64)> = receiver
        .iter()
        .map(|r| (mid(r), r.stats.as_ref().map_or(0, |s| s.lost) as f64))
        .collect();
    let max = lost.iter().map(|p| p.1).fold(0.0, f64::max);
    let (y_ticks, y_top) = nice_ticks(0.0, (max * 1.05).max(1.0));
    let f = frame(top, x, (0.0, y_top), false);
    canvas.axes(
        &f,
        "Lost datagrams per interval (by send time, RFC 7680)",
        TIME_TITLE,
        "lost (datagrams)",
        &time_ticks(x),
        &y_ticks,
    );
    if receiver.is_empty() {
        canvas.note(&f, "no receiver interval rows in this report");
        return;
    }
    canvas.polyline(&f, series::LOST, COLOURS[1], &lost);
    canvas.legend(&f, &[("lost", COLOURS[1])]);
}

fn jitter_panel(canvas: &mut Canvas, top: f64, receiver: &[IntervalRow]) {
    let x = time_range(&[receiver]);
    let ns: Vec<(f64, f64)> = receiver
        .iter()
        .map(|r| (mid(r), r.stats.as_ref().map_or(0.0, |s| s.jitter_ns)))
        .collect();
    let max = ns.iter().map(|p| p.1).fold(0.0, f64::max);
    let unit = time_unit(max);
    let (y_ticks, y_top) = nice_ticks(0.0, max / unit.per_ns * 1.05);
    let f = frame(top, x, (0.0, y_top), false);
    canvas.axes(
        &f,
        "Jitter per interval (RFC 3550 estimator)",
        TIME_TITLE,
        &format!("jitter ({})", unit.name),
        &time_ticks(x),
        &y_ticks,
    );
    if receiver.is_empty() {
        canvas.note(&f, "no receiver interval rows in this report");
        return;
    }
    let data: Vec<(f64, f64)> = ns.iter().map(|&(t, v)| (t, v / unit.per_ns)).collect();
    canvas.polyline(&f, series::JITTER, COLOURS[2], &data);
    canvas.legend(&f, &[("jitter", COLOURS[2])]);
}

/// Merges ranges that fall on the same pixel column (at `per_px` sequences per pixel), so a
/// run with a million short loss periods stays a drawable SVG.
fn merge_for_pixels(ranges: &[[u64; 2]], per_px: f64) -> Vec<[u64; 2]> {
    let mut merged: Vec<[u64; 2]> = Vec::new();
    for &[first, last] in ranges {
        match merged.last_mut() {
            Some(prev) if (first as f64 - prev[1] as f64) < per_px => prev[1] = prev[1].max(last),
            _ => merged.push([first, last]),
        }
    }
    merged
}

fn loss_pattern_panel(canvas: &mut Canvas, top: f64, run: &RunReport, ranges: Option<&LossRanges>) {
    let expected = run
        .receiver
        .as_ref()
        .map(|r| r.stats.expected)
        .filter(|&n| n > 0)
        .or(run.sender.as_ref().map(|s| s.sent))
        .unwrap_or(0);
    let end = ranges
        .and_then(|r| r.last())
        .map_or(0, |r| r[1] + 1)
        .max(expected)
        .max(1) as f64;
    let height = PANEL_HEIGHT / 3.0;
    let f = Frame {
        height,
        ..frame(top, (0.0, end), (0.0, 1.0), false)
    };
    let (ticks, _) = nice_ticks(0.0, end);
    let x_ticks: Vec<(f64, String)> = ticks
        .into_iter()
        .filter(|t| *t <= end)
        .map(|t| (t, short_number(t)))
        .collect();
    canvas.axes(
        &f,
        "Loss pattern: lost sequence ranges along the run",
        "sequence number (datagrams)",
        "lost",
        &x_ticks,
        &[],
    );
    match ranges {
        None => canvas.note(
            &f,
            "lost ranges not in this report: plot with --loss-log FILE (the run's --loss-log)",
        ),
        Some(r) if r.is_empty() => canvas.note(&f, "no datagram was lost"),
        Some(r) => {
            let merged = merge_for_pixels(r, end / f.width);
            let rects: Vec<(f64, f64, f64, f64)> = merged
                .iter()
                .map(|&[a, b]| (a as f64, 0.0, (b + 1) as f64, 1.0))
                .collect();
            canvas.rects(&f, series::LOSS_RANGES, COLOURS[1], &rects);
            let lost: u64 = r.iter().map(|[a, b]| b - a + 1).sum();
            canvas.legend(
                &f,
                &[(
                    &format!("{} ranges, {lost} datagrams lost", r.len()),
                    COLOURS[1],
                )],
            );
        }
    }
}

/// The lost ranges of `run_id` in a `--loss-log` CSV (`run_id,first_seq,last_seq`).
pub fn loss_ranges_from_log(csv_text: &str, run_id: &str) -> Result<LossRanges, String> {
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let mut ranges = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("line {}: {e}", i + 2))?;
        if record.get(0) != Some(run_id) {
            continue;
        }
        let field = |n: usize| -> Result<u64, String> {
            record
                .get(n)
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("line {}: column {} is not a sequence number", i + 2, n + 1))
        };
        let (first, last) = (field(1)?, field(2)?);
        if last < first {
            return Err(format!(
                "line {}: last_seq {last} < first_seq {first}",
                i + 2
            ));
        }
        ranges.push([first, last]);
    }
    ranges.sort_unstable();
    Ok(ranges)
}

/// One scenario's metrics: median and spread over its repeats, by metric name (the names of
/// `suite::compare::METRICS`: `loss` in %, `latency_p99` and `jitter` in ns, `rate` in bit/s).
pub type ScenarioMetrics = (String, BTreeMap<String, Spread>);

/// One metric panel of a comparison: title, metric name and axis unit.
struct MetricPanel {
    title: &'static str,
    metric: &'static str,
    /// Divisor and axis title for the largest value.
    unit: fn(f64) -> (f64, String),
}

const COMPARISON_PANELS: [MetricPanel; 4] = [
    MetricPanel {
        title: "Loss",
        metric: "loss",
        unit: |_| (1.0, "loss (%)".into()),
    },
    MetricPanel {
        title: "One-way latency p99",
        metric: "latency_p99",
        unit: |max| {
            let u = time_unit(max);
            (u.per_ns, format!("latency p99 ({})", u.name))
        },
    },
    MetricPanel {
        title: "Jitter (RFC 3550)",
        metric: "jitter",
        unit: |max| {
            let u = time_unit(max);
            (u.per_ns, format!("jitter ({})", u.name))
        },
    },
    MetricPanel {
        title: "Received payload rate",
        metric: "rate",
        unit: |max| {
            let (per, name) = rate_unit(max);
            (per, format!("rate ({name})"))
        },
    },
];

/// Bar width and offsets within a scenario's slot (1 data unit wide).
const BAR_WIDTH: f64 = 0.35;
const BASELINE_OFFSET: f64 = 0.15;
const CURRENT_OFFSET: f64 = 0.5;

/// The SVG of scenarios against a baseline (or alone, with no baseline): one panel per key
/// metric, per scenario a bar at the median of the baseline and of the current run, with a
/// whisker over the repeats' min..max when there were several. A scenario missing on one side
/// (or a metric not measured) has only the other's bar. When both sides hold one scenario they
/// are paired whatever their names.
pub fn comparison_svg(
    current: &[ScenarioMetrics],
    baseline: &[ScenarioMetrics],
    caption: &str,
) -> String {
    let mut canvas = Canvas::new(WIDTH);
    let title = if baseline.is_empty() {
        "udplab: scenarios"
    } else {
        "udplab: scenarios against the baseline"
    };
    canvas.text(20.0, 30.0, 20.0, "start", "title", title);
    let y = canvas.wrapped_text(20.0, 52.0, 12.0, CAPTION_CHARS, caption);
    let paired = current.len() == 1 && baseline.len() == 1;
    let mut names: Vec<&str> = current.iter().map(|m| m.0.as_str()).collect();
    if !paired {
        for b in baseline {
            if !names.contains(&b.0.as_str()) {
                names.push(&b.0);
            }
        }
    }
    let lookup = |set: &[ScenarioMetrics], i: usize, metric: &str| -> Option<Spread> {
        let found = if paired {
            set.first()
        } else {
            set.iter().find(|m| m.0 == names[i])
        };
        found.and_then(|m| m.1.get(metric).copied())
    };
    let mut top = y + 45.0;
    let slots = names.len().max(1) as f64;
    for panel in &COMPARISON_PANELS {
        let values = |set: &[ScenarioMetrics]| -> Vec<Option<Spread>> {
            (0..names.len())
                .map(|i| lookup(set, i, panel.metric))
                .collect()
        };
        let (before, after) = (values(baseline), values(current));
        let max = before
            .iter()
            .chain(&after)
            .flatten()
            .map(|s| s.max.max(s.median))
            .fold(0.0, f64::max);
        let (per, y_title) = (panel.unit)(max);
        let (y_ticks, y_top) = nice_ticks(0.0, (max / per * 1.15).max(f64::MIN_POSITIVE));
        let f = frame(top, (0.0, slots), (0.0, y_top), false);
        let x_ticks: Vec<(f64, String)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (i as f64 + 0.5, (*n).to_string()))
            .collect();
        canvas.axes(&f, panel.title, "scenario", &y_title, &x_ticks, &y_ticks);
        for (series_name, colour, offset, set) in [
            (series::BASELINE, BASELINE_COLOUR, BASELINE_OFFSET, &before),
            (series::CURRENT, COLOURS[0], CURRENT_OFFSET, &after),
        ] {
            let bars: Vec<(f64, f64, f64, f64)> = set
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let x0 = i as f64 + offset;
                    v.map(|v| (x0, 0.0, x0 + BAR_WIDTH, v.median / per))
                })
                .collect();
            if !bars.is_empty() {
                canvas.rects(&f, series_name, colour, &bars);
            }
            for (i, v) in set.iter().enumerate() {
                let Some(v) = v else { continue };
                let x = i as f64 + offset + BAR_WIDTH / 2.0;
                if v.n > 1 && v.max > v.min {
                    canvas.whisker(&f, series_name, x, v.min / per, v.max / per);
                }
                let label = short_number(v.median / per);
                canvas.text(
                    f.px(x),
                    f.py(v.median.max(v.max) / per) - 5.0,
                    11.0,
                    "middle",
                    "bar-value",
                    &label,
                );
            }
        }
        let mut legend = Vec::new();
        if !baseline.is_empty() {
            legend.push(("baseline", BASELINE_COLOUR));
        }
        legend.push(("current", COLOURS[0]));
        canvas.legend(&f, &legend);
        top += PANEL_PITCH;
    }
    canvas.finish(title)
}

const BASELINE_COLOUR: &str = "#999999";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels_name_the_decades() {
        assert_eq!(percentile_label(0), "0%");
        assert_eq!(percentile_label(1), "90%");
        assert_eq!(percentile_label(3), "99.9%");
    }

    #[test]
    fn ranges_on_one_pixel_merge() {
        let r = [[0, 0], [2, 3], [100, 120], [121, 121], [400, 400]];
        assert_eq!(
            merge_for_pixels(&r, 5.0),
            vec![[0, 3], [100, 121], [400, 400]]
        );
        assert_eq!(merge_for_pixels(&r, 0.5).len(), 5);
    }

    #[test]
    fn the_loss_log_gives_one_runs_ranges_in_order() {
        let log = "run_id,first_seq,last_seq\na,5,7\nb,1,1\na,0,2\n";
        assert_eq!(loss_ranges_from_log(log, "a"), Ok(vec![[0, 2], [5, 7]]));
        assert_eq!(loss_ranges_from_log(log, "c"), Ok(vec![]));
        let e = loss_ranges_from_log("run_id,first_seq,last_seq\na,x,1\n", "a").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(loss_ranges_from_log("run_id,first_seq,last_seq\na,3,1\n", "a").is_err());
    }

    #[test]
    fn a_missing_flow_is_an_error_naming_the_count() {
        let doc = ReportDocument::default();
        let e = run_svg(&doc, 2, None).unwrap_err();
        assert_eq!(e, PlotError::NoSuchFlow { index: 2, flows: 0 });
        assert!(e.to_string().contains("0 flow(s)"));
    }
}
