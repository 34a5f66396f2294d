//! The driver: sockets, threads, clocks and signals around the sans-IO sessions, and the
//! writing of reports at the end of a run.
//!
//! The timed data path runs on dedicated OS threads (tokio's 1 ms timer cannot pace 100k
//! datagrams/s evenly); tokio runs what is not timed to the microsecond: signal handling here.

pub mod flows;
pub mod loopback;
pub mod proxy;
pub mod recv;
pub mod send;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{JsonOut, Outputs, Thresholds};
use crate::error::Outcome;
use crate::report;
use crate::summary::RunReport;
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
                        1 => eprintln!(
                            "udplab: interrupted: finishing and reporting what was measured (again: stop waiting for the peer)"
                        ),
                        2 => eprintln!("udplab: not waiting for the peer any longer (again: quit at once)"),
                        _ => std::process::exit(130),
                    }
                }
            });
        })?;
    Ok(())
}

/// Where the human-readable text goes: stdout, or stderr when stdout carries JSON.
pub fn text_writer(outputs: &Outputs) -> Box<dyn Write> {
    if outputs.json_on_stdout() {
        Box::new(io::stderr())
    } else {
        Box::new(io::stdout())
    }
}

/// Writes the summary and the requested files for a finished run.
pub fn write_outputs(
    report: &RunReport,
    outputs: &Outputs,
    json_append: bool,
) -> anyhow::Result<()> {
    let mut text = text_writer(outputs);
    report::write_human(&mut text, report)?;
    text.flush()?;
    if let Some(path) = &outputs.csv {
        report::append_summary_csv(path, report)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &outputs.intervals_csv {
        report::append_interval_csv(path, report)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match &outputs.json {
        Some(JsonOut::Stdout) => {
            let mut out = io::stdout().lock();
            report::write_json(&mut out, report)?;
            writeln!(out)?;
            out.flush()?;
        }
        Some(JsonOut::File(path)) => write_json_file(path, report, json_append)
            .with_context(|| format!("writing {}", path.display()))?,
        None => {}
    }
    Ok(())
}

fn write_json_file(path: &Path, report: &RunReport, append: bool) -> anyhow::Result<()> {
    if append {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let mut w = BufWriter::new(file);
        serde_json::to_writer(&mut w, report)?;
        writeln!(w)?;
        w.flush()?;
    } else {
        let mut w = BufWriter::new(File::create(path)?);
        report::write_json(&mut w, report)?;
        writeln!(w)?;
        w.flush()?;
    }
    Ok(())
}

/// Compares a finished run with the user's limits.
pub fn check_thresholds(report: &RunReport, th: &Thresholds) -> Outcome {
    if !th.any() {
        return Outcome::Passed;
    }
    let mut failed = Vec::new();
    let Some(rx) = report.receiver.as_ref() else {
        return Outcome::ThresholdFailed(vec![
            "the receiver's results never came back, so the thresholds could not be checked".into(),
        ]);
    };
    let st = &rx.stats;
    let sent = st
        .expected
        .max(report.sender.as_ref().map_or(0, |s| s.sent));
    if let Some(max) = th.max_loss {
        let loss = if sent > 0 {
            st.lost as f64 / sent as f64
        } else {
            0.0
        };
        if loss > max {
            failed.push(format!(
                "loss {:.4}% > --max-loss {:.4}%",
                loss * 100.0,
                max * 100.0
            ));
        }
    }
    if let Some(max) = th.max_dup
        && st.duplicates > max
    {
        failed.push(format!("duplicates {} > --max-dup {max}", st.duplicates));
    }
    if let Some(max) = th.max_reorder {
        let r = if st.received > 0 {
            st.reordered as f64 / st.received as f64
        } else {
            0.0
        };
        if r > max {
            failed.push(format!(
                "reordered {:.4}% > --max-reorder {:.4}%",
                r * 100.0,
                max * 100.0
            ));
        }
    }
    if let Some(max) = th.max_jitter
        && st.jitter_ns > max.as_nanos() as f64
    {
        failed.push(format!(
            "jitter {:.1} µs > --max-jitter {:.1} µs",
            st.jitter_ns / 1e3,
            max.as_nanos() as f64 / 1e3
        ));
    }
    if let Some(max) = th.max_latency_p99 {
        match st.latency {
            Some(l) if l.p99_ns > max.as_nanos() as i64 => failed.push(format!(
                "one-way latency p99 {:.1} µs > --max-latency-p99 {:.1} µs",
                l.p99_ns as f64 / 1e3,
                max.as_nanos() as f64 / 1e3
            )),
            Some(_) => {}
            None => failed.push("no latency measured for --max-latency-p99".into()),
        }
    }
    if let Some(max) = th.max_rtt_p99 {
        match report.sender.as_ref().and_then(|s| s.rtt) {
            Some(r) if r.p99_ns > max.as_nanos() as u64 => failed.push(format!(
                "RTT p99 {:.1} µs > --max-rtt-p99 {:.1} µs",
                r.p99_ns as f64 / 1e3,
                max.as_nanos() as f64 / 1e3
            )),
            Some(_) => {}
            None => failed.push("no RTT measured for --max-rtt-p99 (use --echo)".into()),
        }
    }
    if failed.is_empty() {
        Outcome::Passed
    } else {
        Outcome::ThresholdFailed(failed)
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

/// A session id (also the run id) from the seed when given, else from the clock and pid.
pub fn session_id(seed: Option<u64>) -> u32 {
    let x = seed.unwrap_or_else(|| time::wall_ns() ^ (u64::from(std::process::id()) << 32));
    // SplitMix64 finaliser: spreads nearby seeds over the whole id space.
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u32
}
