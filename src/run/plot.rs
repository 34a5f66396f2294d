//! `udplab plot`, `udplab completions`, `udplab man`: read the report files, draw, write the
//! output (the drawing itself is `report::plot`).

use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::cli::PlotArgs;
use crate::error::UsageError;
use crate::report::plot::{self, ScenarioMetrics};
use crate::summary::{REPORT_SCHEMA, ReportDocument};

/// Reads a run report, refusing anything else with a message naming what it is.
pub fn read_report(path: &Path) -> anyhow::Result<ReportDocument> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("{}: not JSON: {e}", path.display())))?;
    let schema = value.get("schema").and_then(Value::as_str).unwrap_or("none");
    if schema != REPORT_SCHEMA {
        return Err(UsageError(format!(
            "{}: schema {schema}: `udplab plot` draws run reports ({REPORT_SCHEMA}, from \
             `send`/`loopback --json`)",
            path.display()
        ))
        .into());
    }
    serde_json::from_value(value)
        .map_err(|e| UsageError(format!("{}: not a udplab run report: {e}", path.display())).into())
}

/// The key metrics of every flow of a report, and their total when there are several.
pub fn scenarios_of(doc: &ReportDocument) -> Vec<ScenarioMetrics> {
    if doc.flows.len() <= 1 {
        return doc
            .flows
            .iter()
            .map(|run| ScenarioMetrics::of_run("run", run))
            .collect();
    }
    let mut scenarios: Vec<ScenarioMetrics> = doc
        .flows
        .iter()
        .enumerate()
        .map(|(i, run)| ScenarioMetrics::of_run(&format!("flow {}", i + 1), run))
        .collect();
    scenarios.push(ScenarioMetrics::of_run("total", &doc.total));
    scenarios
}

/// `udplab plot`: draws and writes the SVG (a failed write is recorded for the exit code).
pub fn run(args: &PlotArgs) -> anyhow::Result<()> {
    let doc = read_report(&args.input)?;
    let svg = match &args.baseline {
        Some(base_path) => {
            let base = read_report(base_path)?;
            let caption = format!(
                "current: {} (run {}) · baseline: {} (run {})",
                args.input.display(),
                doc.flows.first().map_or("?", |r| r.run_id.as_str()),
                base_path.display(),
                base.flows.first().map_or("?", |r| r.run_id.as_str()),
            );
            plot::comparison_svg(&scenarios_of(&doc), &scenarios_of(&base), &caption)
        }
        None => {
            let ranges = match &args.loss_log {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let run_id = doc.flows.get(args.flow).map_or("", |r| r.run_id.as_str());
                    Some(
                        plot::loss_ranges_from_log(&text, run_id)
                            .map_err(|e| UsageError(format!("{}: {e}", path.display())))?,
                    )
                }
                None => None,
            };
            plot::run_svg(&doc, args.flow, ranges.as_ref()).map_err(|e| UsageError(e.to_string()))?
        }
    };
    if args.output.as_os_str() == "-" {
        use std::io::Write;
        let mut out = crate::run::Stdout;
        out.write_all(svg.as_bytes())?;
        out.flush()?;
    } else {
        crate::run::write_file(&args.output, svg.as_bytes(), false);
    }
    Ok(())
}
