//! `udplab plot`, `udplab completions`, `udplab man`: read the report files, draw, write the
//! output (the drawing itself is `report::plot`).

use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::cli::PlotArgs;
use crate::error::UsageError;
use crate::report::plot;
use crate::suite::{SUITE_SCHEMA, load_comparable};
use crate::summary::{REPORT_SCHEMA, ReportDocument};

/// The `schema` of a JSON document file.
fn schema_of(path: &Path) -> anyhow::Result<(String, Value)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("{}: not JSON: {e}", path.display())))?;
    let schema = value
        .get("schema")
        .and_then(Value::as_str)
        .unwrap_or("none")
        .to_string();
    Ok((schema, value))
}

/// `udplab plot`: draws and writes the SVG (a failed write is recorded for the exit code).
/// A run report alone gives the run's details; a suite, or anything with `--baseline`, gives
/// each scenario's key metrics (against the baseline's).
pub fn run(args: &PlotArgs) -> anyhow::Result<()> {
    let (schema, value) = schema_of(&args.input)?;
    let svg = if schema == REPORT_SCHEMA && args.baseline.is_none() {
        let doc: ReportDocument = serde_json::from_value(value).map_err(|e| {
            UsageError(format!(
                "{}: not a udplab run report: {e}",
                args.input.display()
            ))
        })?;
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
    } else {
        if schema != REPORT_SCHEMA && schema != SUITE_SCHEMA {
            return Err(UsageError(format!(
                "{}: schema {schema}: `udplab plot` draws run reports ({REPORT_SCHEMA}, from \
                 `send`/`loopback --json`) and suites ({SUITE_SCHEMA}, from `suite --json`)",
                args.input.display()
            ))
            .into());
        }
        let current = load_comparable(&args.input)?;
        let mut caption = format!("current: {} ({})", args.input.display(), current.kind);
        let baseline = match &args.baseline {
            Some(path) => {
                let base = load_comparable(path)?;
                caption.push_str(&format!(" · baseline: {} ({})", path.display(), base.kind));
                base.scenarios
            }
            None => Vec::new(),
        };
        caption.push_str(" · bars: median over the repeats, whiskers: min..max");
        plot::comparison_svg(&current.scenarios, &baseline, &caption)
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
