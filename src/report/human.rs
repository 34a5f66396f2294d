//! Human-readable terminal output: the end-of-run summary table and the per-interval lines.
//!
//! Numbers are shown with 3 significant digits in scaled units (µs, Mbit/s, KiB); the exact
//! figures are in the CSV and JSON reports.

use std::io::{self, Write};

use super::{loss_denominator, measured, measured_signed, percent, return_path};
use crate::net::marking::{dscp_label, dscp_name, dscp_of, ecn_name};
use crate::summary::{
    BufferInfo, Direction, IntervalRow, LatencySummary, ReceiverReport, ReliableReport, RunReport,
    SenderReport, SignedLatencySummary,
};

/// Writes the run summary: a header line and the sender/receiver table. Warnings are not part
/// of it: the driver prints them on stderr, once each, before the report (`run::warn`).
pub fn write_human<W: Write>(mut w: W, report: &RunReport) -> io::Result<()> {
    let interrupted = if report.interrupted {
        " (interrupted: figures cover what was measured)"
    } else {
        ""
    };
    writeln!(
        w,
        "udplab run {}: target {}, payload {} B, pattern {}, started {}{interrupted}",
        report.run_id, report.target, report.payload_bytes, report.pattern, report.started_at
    )?;
    if report.direction == Direction::Reverse {
        // Which host is which column: the receiver sent, the command's side measured.
        writeln!(
            w,
            "direction: reverse (-R): the sender column is `udplab recv`, which sent the data; the receiver column is the side that ran `send -R` (or `--bidir`) and measured"
        )?;
    }
    let table = summary_table(report);
    write_table(&mut w, &table)?;
    if let Some(r) = &report.reliable {
        write_reliable(&mut w, r)?;
    }
    w.flush()
}

/// The `--reliable` block: what recovery cost (counts, shares, latency, the estimator's state).
fn write_reliable<W: Write>(w: &mut W, r: &ReliableReport) -> io::Result<()> {
    let a = &r.arq;
    writeln!(
        w,
        "reliable {}: impairment on {}{}",
        r.mode,
        match r.impaired.as_str() {
            "none" => "no direction",
            "data" => "data only (ACKs: udplab proxy --reverse-impair)",
            "data+acks" => "data and ACKs",
            other => other,
        },
        if r.receiver_results {
            ""
        } else {
            " (the receiver's results are missing: its figures are not known)"
        }
    )?;
    let mut t = Table {
        columns: (String::new(), String::new(), String::new()),
        rows: Vec::new(),
    };
    let one = |t: &mut Table, label: &str, value: String| t.row(label, Some(value), None);
    let pct = |part: f64| fmt_pct(part * 100.0);
    if r.receiver_results {
        one(
            &mut t,
            "delivered / messages",
            format!(
                "{} / {} (residual loss {} = {})",
                a.delivered,
                a.messages,
                a.residual_lost,
                pct(a.residual_loss)
            ),
        );
    } else {
        one(&mut t, "messages", a.messages.to_string());
    }
    one(
        &mut t,
        "raw loss (never acknowledged)",
        format!(
            "{} of {} datagrams ({})",
            a.raw_lost_packets,
            a.data_datagrams,
            pct(a.raw_loss)
        ),
    );
    one(
        &mut t,
        "retransmissions per message",
        format!(
            "{} ({}: packet threshold {}, time threshold {}, probe timeout {}{})",
            sig3(a.retransmissions_per_message),
            a.retransmissions,
            a.rexmit_packet_threshold,
            a.rexmit_time_threshold,
            a.rexmit_pto,
            if a.sender.repeat_copies > 0 {
                format!("; of them {} repeat copies", a.sender.repeat_copies)
            } else {
                String::new()
            }
        ),
    );
    one(
        &mut t,
        "spurious rexmits / duplicates",
        format!(
            "{} ({} per message) / {} arrived twice ({} per message)",
            a.spurious_retransmissions,
            sig3(a.spurious_per_message),
            a.duplicate_arrivals,
            sig3(a.duplicate_arrivals_per_message)
        ),
    );
    if r.receiver_results {
        one(
            &mut t,
            "ACK datagrams / bytes",
            format!(
                "{} ({} of data datagrams) / {} ({} of data bytes)",
                a.ack_datagrams,
                pct(a.ack_datagram_share),
                fmt_bytes(a.ack_bytes),
                pct(a.ack_byte_share)
            ),
        );
        one(
            &mut t,
            "goodput / wire efficiency",
            format!("{} / {}", fmt_bps(a.goodput_bps), pct(a.wire_efficiency)),
        );
    }
    let three = |l: &LatencySummary| {
        format!(
            "{} / {} / {}",
            fmt_ns(l.p50_ns),
            fmt_ns(l.p99_ns),
            fmt_ns(l.max_ns)
        )
    };
    for (label, l) in [
        ("delivery ordered p50/p99/max", &a.latency_ordered),
        ("delivery unordered p50/p99/max", &a.latency_unordered),
        ("  sent once", &a.latency_tx1),
        ("  sent twice", &a.latency_tx2),
        ("  sent 3+ times", &a.latency_tx3plus),
        ("recovery p50/p99/max", &a.recovery_latency),
        ("head-of-line wait p50/p99/max", &a.hol_wait),
    ] {
        if let Some(l) = measured(l.as_ref()) {
            one(&mut t, label, three(l));
        }
    }
    if r.receiver_results {
        one(
            &mut t,
            "waited behind a gap",
            format!("{} of delivered messages", pct(a.hol_waited_share)),
        );
    }
    one(
        &mut t,
        "deadline drops / given up",
        format!(
            "{} / {}{}",
            a.deadline_drops,
            a.messages_given_up,
            if a.session_given_up {
                " (the whole transfer was given up)"
            } else {
                ""
            }
        ),
    );
    one(
        &mut t,
        "srtt / rttvar / min RTT",
        format!(
            "{} / {} / {}",
            fmt_ns(a.srtt_ns),
            fmt_ns(a.rttvar_ns),
            fmt_ns(a.min_rtt_ns)
        ),
    );
    one(
        &mut t,
        "reordering threshold",
        format!(
            "{} packets, reordering window {}",
            a.packet_threshold,
            fmt_ns(a.reorder_window_ns)
        ),
    );
    one(
        &mut t,
        "max in flight / max buffered",
        format!("{} / {} messages", a.max_in_flight, a.max_buffered),
    );
    if a.bogus_acks > 0 {
        one(&mut t, "bogus ACKs ignored", a.bogus_acks.to_string());
    }
    if let Some(c) = &r.ack_impair_counters {
        one(
            &mut t,
            "ACK impairment dropped",
            format!("{} of {}", c.dropped + c.queue_dropped, c.offered),
        );
    }
    // The empty header line stays out.
    for (label, value, _) in &t.rows {
        let width = t
            .rows
            .iter()
            .map(|r| r.0.chars().count())
            .max()
            .unwrap_or(0);
        let line = format!("  {label:<width$}  {value}");
        writeln!(w, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Writes the line that introduces a role's interval lines, saying what the fields mean.
pub fn write_interval_header<W: Write>(mut w: W, role: &str) -> io::Result<()> {
    let legend = if role == "receiver" {
        "recv/lost/dup/reord/late are datagrams (lost = sent in the interval and lost; \
         a line appears once its losses are final, about Tmax after the interval), \
         jitter is RFC 3550, lat is one-way latency"
    } else {
        "sent is datagrams, rate is payload bit/s, err is send errors (ENOBUFS/EAGAIN), \
         rtt is from echo replies"
    };
    writeln!(w, "{role} intervals: {legend}")
}

/// Writes one fixed-width interval line. Receiver rows (those with `stats`) show what
/// arrived; sender rows show what was sent.
pub fn write_interval_line<W: Write>(mut w: W, row: &IntervalRow) -> io::Result<()> {
    let mut line = format!("[{:>7.2}-{:>7.2} s]", row.start_s, row.end_s);
    match &row.stats {
        Some(stats) => {
            let loss = percent(stats.lost, stats.received + stats.lost);
            // One-way latency is signed (clock offset between two hosts).
            let latency = stats.latency.as_ref().filter(|l| l.count > 0);
            line += &format!(
                " recv {:>8}  rate {:>11}  lost {:>6} ({:>6})  dup {:>5}  reord {:>5}  \
                 late {:>5}  jitter {:>9}  lat p50 {:>9} p99 {:>9}",
                stats.received,
                fmt_bps(row.rate_bps),
                stats.lost,
                loss.map_or_else(|| "-".to_string(), fmt_pct),
                stats.duplicates,
                stats.reordered,
                stats.late,
                fmt_ns_f64(stats.jitter_ns),
                latency.map_or_else(|| "-".to_string(), |l| fmt_signed_ns(l.p50_ns)),
                latency.map_or_else(|| "-".to_string(), |l| fmt_signed_ns(l.p99_ns)),
            );
        }
        None => {
            line += &format!(
                " sent {:>8}  rate {:>11}  pps {:>10}  err {:>5}",
                row.sent,
                fmt_bps(row.rate_bps),
                fmt_pps(row.pps),
                row.send_errors,
            );
            if let Some(rtt) = measured(row.rtt.as_ref()) {
                line += &format!(
                    "  rtt p50 {:>9} p99 {:>9}",
                    fmt_ns(rtt.p50_ns),
                    fmt_ns(rtt.p99_ns)
                );
            }
        }
    }
    writeln!(w, "{line}")
}

// ---- the summary table ------------------------------------------------------------------

/// Label, sender cell, receiver cell.
type TableRow = (String, String, String);

struct Table {
    columns: TableRow,
    rows: Vec<TableRow>,
}

impl Table {
    /// Adds a row unless neither side has a figure for it.
    fn row(&mut self, label: &str, sender: Option<String>, receiver: Option<String>) {
        if sender.is_some() || receiver.is_some() {
            self.rows.push((
                label.to_string(),
                sender.unwrap_or_default(),
                receiver.unwrap_or_default(),
            ));
        }
    }
}

fn write_table<W: Write>(w: &mut W, table: &Table) -> io::Result<()> {
    let all = || std::iter::once(&table.columns).chain(&table.rows);
    // Widths in chars: Rust's padding counts chars, and the cells hold "µ" and "→".
    let label_width = all().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let sender_width = all().map(|r| r.1.chars().count()).max().unwrap_or(0);
    for (label, sender, receiver) in all() {
        let line = format!("  {label:<label_width$}  {sender:<sender_width$}  {receiver}");
        writeln!(w, "{}", line.trim_end())?;
    }
    Ok(())
}

fn summary_table(report: &RunReport) -> Table {
    let sender = report.sender.as_ref();
    let receiver = report.receiver.as_ref();
    let stats = receiver.map(|r| &r.stats);
    let mut t = Table {
        columns: (
            String::new(),
            if sender.is_some() {
                "sender"
            } else {
                "sender (none)"
            }
            .to_string(),
            if receiver.is_some() {
                "receiver"
            } else {
                "receiver (no report)"
            }
            .to_string(),
        ),
        rows: Vec::new(),
    };
    let on_receiver = |f: &dyn Fn(&ReceiverReport) -> String| receiver.map(f);
    let on_sender = |f: &dyn Fn(&SenderReport) -> String| sender.map(f);

    t.row(
        "duration",
        on_sender(&|s| fmt_seconds(s.duration_s)),
        on_receiver(&|r| fmt_seconds(r.duration_s)),
    );
    t.row(
        "sent",
        on_sender(&|s| s.sent.to_string()),
        stats
            .map(|s| s.expected)
            .filter(|&n| n > 0)
            .map(|n| n.to_string()),
    );
    t.row("received", None, stats.map(|s| s.received.to_string()));
    let loss_pct = stats.and_then(|s| loss_denominator(report).and_then(|n| percent(s.lost, n)));
    let return_path = return_path(report);
    // With echo replies the run measures both directions: say which one each loss is.
    let forward_lost = if return_path.is_some() {
        "lost (forward path)"
    } else {
        "lost"
    };
    t.row(
        forward_lost,
        None,
        stats.map(|s| with_pct(s.lost, loss_pct)),
    );
    t.row(
        "loss periods / longest",
        None,
        stats.map(|s| format!("{} / {}", s.loss_periods, s.loss_period_max)),
    );
    t.row("duplicates", None, stats.map(|s| s.duplicates.to_string()));
    t.row(
        "late / stale",
        None,
        stats.map(|s| format!("{} / {}", s.late, s.stale)),
    );
    t.row(
        "implausible (far ahead)",
        None,
        stats.map(|s| s.implausible.to_string()),
    );
    t.row(
        "reordered",
        None,
        stats.map(|s| with_pct(s.reordered, percent(s.reordered, s.received))),
    );
    t.row(
        "reorder extent max",
        None,
        stats.map(|s| s.reorder_extent_max.to_string()),
    );
    t.row(
        "n-reordering n=1/2/3",
        None,
        stats.map(|s| {
            let [n1, n2, n3] = s.n_reordered;
            format!("{n1} / {n2} / {n3}")
        }),
    );
    t.row(
        "jitter (RFC 3550)",
        None,
        stats.map(|s| fmt_ns_f64(s.jitter_ns)),
    );
    t.row(
        "IPDV p50 / p99",
        None,
        stats
            .and_then(|s| measured_signed(s.ipdv.as_ref()))
            .map(|i| format!("{} / {}", fmt_signed_ns(i.p50_ns), fmt_signed_ns(i.p99_ns))),
    );
    latency_rows(
        &mut t,
        "one-way latency",
        None,
        stats.and_then(|s| s.latency.as_ref().filter(|l| l.count > 0)),
    );
    t.row(
        "PDV p99 (RFC 5481)",
        None,
        stats
            .and_then(|s| measured(s.pdv.as_ref()))
            .map(|p| fmt_ns(p.p99_ns)),
    );
    t.row(
        "negative one-way delays",
        None,
        stats
            .filter(|s| s.negative_delays > 0)
            .map(|s| format!("{} (clocks not in sync)", s.negative_delays)),
    );
    if report.echo {
        let rtt = sender.and_then(|s| measured(s.rtt.as_ref()));
        if rtt.is_none() {
            t.row("RTT (echo)", Some("no replies".to_string()), None);
        }
        let rtt = rtt.copied().map(SignedLatencySummary::from);
        latency_rows(&mut t, "RTT (echo)", rtt.as_ref(), None);
    }
    if report.echo {
        // Each side shows its own count, so a report with one side still shows it.
        t.row(
            "echo replies (return path)",
            sender.map(|s| format!("{} received", s.echo_replies)),
            receiver.map(|r| format!("{} sent", r.echo_sent)),
        );
    }
    if let Some(path) = return_path {
        let mut cell = with_pct(path.lost, path.loss_pct);
        if let Some(drops) = path.sender_rcvbuf_drops.filter(|&d| d > 0) {
            cell += &format!(", {drops} dropped by our receive buffer");
        }
        t.row("lost (return path)", Some(cell), None);
    }
    t.row(
        "rate target",
        on_sender(&|s| match (s.rate_target_bps, s.pps_target) {
            (Some(bps), Some(pps)) => format!("{}, {}", fmt_bps(bps), fmt_pps(pps)),
            (Some(bps), None) => fmt_bps(bps),
            (None, Some(pps)) => fmt_pps(pps),
            (None, None) => "unpaced (max)".to_string(),
        }),
        None,
    );
    t.row(
        "rate achieved",
        on_sender(&|s| {
            format!(
                "{}, {}",
                fmt_bps(s.rate_achieved_bps),
                fmt_pps(s.pps_achieved)
            )
        }),
        on_receiver(&|r| {
            format!(
                "{}, {}",
                fmt_bps(r.rate_achieved_bps),
                fmt_pps(r.pps_achieved)
            )
        }),
    );
    t.row(
        "schedule lateness p99",
        sender
            .and_then(|s| measured(s.schedule_lateness.as_ref()))
            .map(|l| fmt_ns(l.p99_ns)),
        None,
    );
    t.row(
        "send mode",
        sender
            .filter(|s| !s.send_mode.is_empty())
            .map(|s| match &s.send_mode_note {
                Some(note) => format!("{} ({note})", s.send_mode),
                None => s.send_mode.clone(),
            }),
        None,
    );
    t.row(
        "send gap p50 / p99",
        sender
            .and_then(|s| measured(s.inter_departure.as_ref()))
            .map(|g| format!("{} / {}", fmt_ns(g.p50_ns), fmt_ns(g.p99_ns))),
        None,
    );
    t.row(
        "send errors (ENOBUFS/EAGAIN)",
        on_sender(&|s| {
            format!(
                "{} ({} / {})",
                s.send_errors, s.send_errors_enobufs, s.send_errors_eagain
            )
        }),
        None,
    );
    t.row(
        "SO_SNDBUF requested→effective",
        on_sender(&|s| fmt_buffer(&s.sndbuf)),
        on_receiver(&|r| fmt_buffer(&r.sndbuf)),
    );
    t.row(
        "SO_RCVBUF requested→effective",
        on_sender(&|s| fmt_buffer(&s.rcvbuf)),
        on_receiver(&|r| fmt_buffer(&r.rcvbuf)),
    );
    t.row(
        "rcvbuf drops (SO_RXQ_OVFL)",
        None,
        on_receiver(&|r| {
            let shared = if r.rcvbuf_drops_shared {
                " (the socket's, shared with other tests)"
            } else {
                ""
            };
            r.rcvbuf_drops
                .map_or_else(|| "not reported".to_string(), |n| format!("{n}{shared}"))
        }),
    );
    t.row(
        "timestamp source",
        None,
        on_receiver(&|r| r.timestamp_source.clone()),
    );
    t.row(
        "Tmax (loss wait)",
        None,
        on_receiver(&|r| fmt_seconds(r.tmax_s)),
    );
    // `--omit`: what the statistics above leave out, on each side.
    t.row(
        "warm-up omitted (--omit)",
        sender
            .filter(|s| s.omit_s > 0.0)
            .map(|s| format!("{}: {} sent", fmt_seconds(s.omit_s), s.omitted_sequences)),
        receiver.filter(|r| r.omit_s > 0.0).map(|r| {
            format!(
                "{}: {} sequences, {} arrived",
                fmt_seconds(r.omit_s),
                r.omitted_sequences,
                r.omitted
            )
        }),
    );
    t.row(
        "foreign datagrams",
        None,
        receiver
            .filter(|r| r.foreign_datagrams > 0)
            .map(|r| r.foreign_datagrams.to_string()),
    );
    // Shown whenever a key (or an --allow list) was in force, zero included: it says so.
    t.row(
        "unauthenticated (--key)",
        sender
            .and_then(|s| s.unauthenticated)
            .map(|n| n.to_string()),
        receiver
            .and_then(|r| r.unauthenticated)
            .map(|n| n.to_string()),
    );
    t.row(
        "refused by --allow",
        None,
        receiver
            .and_then(|r| r.refused_by_allow)
            .map(|n| n.to_string()),
    );
    t.row(
        "impairment",
        sender.and_then(|s| s.impairment.clone()),
        None,
    );
    if let Some(c) = sender.and_then(|s| s.impair_counters.as_ref()) {
        t.row(
            "impair offered / released",
            Some(format!("{} / {}", c.offered, c.released)),
            None,
        );
        t.row(
            "impair dropped (loss / queue)",
            Some(format!("{} / {}", c.dropped, c.queue_dropped)),
            None,
        );
        t.row(
            "impair duplicated / reordered",
            Some(format!("{} / {}", c.duplicated, c.reordered)),
            None,
        );
        t.row("impair delayed", Some(c.delayed.to_string()), None);
    }
    t.row(
        "impair release late p50 / p99",
        sender
            .and_then(|s| measured(s.impair_release_lateness.as_ref()))
            .map(|l| format!("{} / {}", fmt_ns(l.p50_ns), fmt_ns(l.p99_ns))),
        None,
    );
    marking_rows(&mut t, sender, receiver);
    t
}

/// `--dscp`/`--tos`, `--ttl` and `--df` rows: shown when the sender set the option, or when the
/// receiver saw something worth saying without it (DSCP re-marked from CS0, several TTLs).
fn marking_rows(t: &mut Table, sender: Option<&SenderReport>, receiver: Option<&ReceiverReport>) {
    let marks = receiver.map(|r| &r.marking);
    let tos_shown = marks.filter(|m| m.tos_sent.is_some() || m.dscp_remarked > 0);
    t.row(
        "DSCP kept / re-marked",
        sender
            .and_then(|s| s.tos)
            .map(|tos| format!("{} (TOS 0x{tos:02x})", dscp_label(dscp_of(tos)))),
        tos_shown.map(|m| format!("{} / {}", m.dscp_kept, m.dscp_remarked)),
    );
    t.row(
        "DSCP/ECN received",
        None,
        tos_shown.map(|m| {
            let cells: Vec<String> = m
                .tos_received
                .iter()
                .map(|v| {
                    let name = dscp_name(v.dscp).map_or_else(|| v.dscp.to_string(), String::from);
                    match v.ecn {
                        0 => format!("{name} {}", v.count),
                        ecn => format!("{name}+{} {}", ecn_name(ecn), v.count),
                    }
                })
                .collect();
            cells.join(", ")
        }),
    );
    t.row(
        "TTL sent / received",
        sender.and_then(|s| s.ttl).map(|ttl| ttl.to_string()),
        marks
            .filter(|m| m.ttl_sent.is_some() || m.ttl_received.len() > 1)
            .map(|m| {
                let cells: Vec<String> = m
                    .ttl_received
                    .iter()
                    .map(|v| format!("{} ×{}", v.ttl, v.count))
                    .collect();
                cells.join(", ")
            }),
    );
    t.row(
        "don't fragment: EMSGSIZE / path MTU",
        sender.filter(|s| s.df).map(|s| {
            let mtu = s
                .path_mtu
                .map_or_else(|| "not reported".to_string(), |m| m.to_string());
            format!("{} / {mtu}", s.send_errors_emsgsize)
        }),
        None,
    );
}

/// Reads one figure out of a latency summary.
type PickNs = fn(&SignedLatencySummary) -> i64;

/// min, p50, p90, p99, p99.9 and max rows for a distribution measured on either side.
fn latency_rows(
    t: &mut Table,
    label: &str,
    sender: Option<&SignedLatencySummary>,
    receiver: Option<&SignedLatencySummary>,
) {
    let picks: [(&str, PickNs); 6] = [
        ("min", |l| l.min_ns),
        ("p50", |l| l.p50_ns),
        ("p90", |l| l.p90_ns),
        ("p99", |l| l.p99_ns),
        ("p99.9", |l| l.p999_ns),
        ("max", |l| l.max_ns),
    ];
    for (name, pick) in picks {
        t.row(
            &format!("{label} {name}"),
            sender.map(|l| fmt_signed_ns(pick(l))),
            receiver.map(|l| fmt_signed_ns(pick(l))),
        );
    }
}

fn with_pct(count: u64, pct: Option<f64>) -> String {
    match pct {
        Some(p) => format!("{count} ({})", fmt_pct(p)),
        None => count.to_string(),
    }
}

fn fmt_buffer(buffer: &BufferInfo) -> String {
    let requested = buffer
        .requested
        .map_or_else(|| "default".to_string(), fmt_bytes);
    let mut cell = format!("{requested} → {}", fmt_bytes(buffer.effective));
    if buffer.clamped {
        cell += " (clamped)";
    }
    if buffer.forced {
        cell += " (forced)";
    }
    cell
}

// ---- number formatting -------------------------------------------------------------------

/// `value` with 3 significant digits ("1.23", "12.3", "123"); larger values keep all their
/// integer digits.
fn sig3(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let decimals_for = |v: f64| (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{value:.*}", decimals_for(value));
    // Rounding can carry into the next power of ten (9.996 → "10.00"): redo with its digits.
    let rounded: f64 = text.parse().unwrap_or(value);
    format!("{rounded:.*}", decimals_for(rounded))
}

/// `value` in the largest unit of `units` (factor, name; ascending) that keeps it ≥ 1 once
/// rounded to 3 significant digits.
fn scaled(value: f64, units: &[(f64, &str)]) -> String {
    if !value.is_finite() {
        return "-".to_string();
    }
    let mut chosen = units[0];
    for &unit in units {
        let rounded: f64 = sig3(value.abs() / unit.0).parse().unwrap_or(0.0);
        if rounded >= 1.0 {
            chosen = unit;
        }
    }
    format!("{} {}", sig3(value / chosen.0), chosen.1)
}

fn fmt_ns_f64(ns: f64) -> String {
    if ns.is_finite() && ns.abs() < 999.5 {
        // Sub-nanosecond digits mean nothing for a clock reading; `+ 0.0` turns -0 into 0.
        return format!("{} ns", ns.round() + 0.0);
    }
    scaled(ns, &[(1.0, "ns"), (1e3, "µs"), (1e6, "ms"), (1e9, "s")])
}

fn fmt_ns(ns: u64) -> String {
    fmt_ns_f64(ns as f64)
}

fn fmt_signed_ns(ns: i64) -> String {
    fmt_ns_f64(ns as f64)
}

fn fmt_seconds(s: f64) -> String {
    fmt_ns_f64(s * 1e9)
}

fn fmt_bps(bps: f64) -> String {
    scaled(
        bps,
        &[
            (1.0, "bit/s"),
            (1e3, "kbit/s"),
            (1e6, "Mbit/s"),
            (1e9, "Gbit/s"),
            (1e12, "Tbit/s"),
        ],
    )
}

fn fmt_pps(pps: f64) -> String {
    scaled(pps, &[(1.0, "pps"), (1e3, "kpps"), (1e6, "Mpps")])
}

fn fmt_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    scaled(
        bytes as f64,
        &[
            (1.0, "B"),
            (1024.0, "KiB"),
            (1024.0 * 1024.0, "MiB"),
            (1024.0 * 1024.0 * 1024.0, "GiB"),
        ],
    )
}

/// Percentages with 2 decimals; a non-zero share below 0.01 % keeps 3 significant digits so
/// it never reads as 0.
fn fmt_pct(pct: f64) -> String {
    if pct > 0.0 && pct < 0.01 {
        format!("{}%", sig3(pct))
    } else {
        format!("{pct:.2}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;
    use crate::summary::{TosCount, TtlCount};

    fn human(report: &RunReport) -> String {
        let mut out = Vec::new();
        write_human(&mut out, report).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn line_starting<'a>(text: &'a str, label: &str) -> &'a str {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no line {label:?} in\n{text}"))
    }

    /// The line starting with `label`, its runs of spaces squeezed to one.
    fn squeezed_line(text: &str, label: &str) -> String {
        line_starting(text, label)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Char column where `needle` starts in `line`.
    fn column_of(line: &str, needle: &str) -> usize {
        let byte = line
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {line:?}"));
        line[..byte].chars().count()
    }

    #[test]
    fn formatters_scale_to_three_significant_digits() {
        assert_eq!(fmt_ns(850), "850 ns");
        assert_eq!(fmt_ns(12_345), "12.3 µs");
        assert_eq!(fmt_ns(4_561_000), "4.56 ms");
        assert_eq!(fmt_ns(1_200_000_000), "1.20 s");
        assert_eq!(
            fmt_ns(999_600),
            "1.00 ms",
            "rounding carries into the next unit"
        );
        assert_eq!(fmt_ns(999_700_000_000), "1000 s");
        assert_eq!(fmt_signed_ns(-1_500), "-1.50 µs");
        assert_eq!(fmt_bps(100e6), "100 Mbit/s");
        assert_eq!(fmt_bps(1.5e9), "1.50 Gbit/s");
        assert_eq!(fmt_bps(0.0), "0 bit/s");
        assert_eq!(fmt_pps(20_000.0), "20.0 kpps");
        assert_eq!(fmt_bytes(212_992), "208 KiB");
        assert_eq!(fmt_bytes(4 << 20), "4.00 MiB");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_pct(0.5), "0.50%");
        assert_eq!(fmt_pct(0.001234), "0.00123%");
        assert_eq!(fmt_pct(0.0), "0.00%");
    }

    #[test]
    fn summary_shows_both_roles_in_aligned_columns() {
        let report = fixtures::run_report();
        let text = human(&report);
        let first = text.lines().next().unwrap();
        for part in [
            "run-42",
            "127.0.0.1:9000",
            "1200 B",
            "cbr",
            "2025-01-02T03:04:05Z",
        ] {
            assert!(first.contains(part), "{part} missing from {first:?}");
        }

        let header = text.lines().nth(1).unwrap();
        let receiver_column = column_of(header, "receiver");
        let sender_column = column_of(header, "sender");

        // 10000 expected by the receiver vs 9990 sent: the receiver column lines up.
        let sent = line_starting(&text, "sent");
        assert_eq!(column_of(sent, "9990"), sender_column);
        assert_eq!(column_of(sent, "10000"), receiver_column);

        let achieved = line_starting(&text, "rate achieved");
        assert_eq!(column_of(achieved, "9.59 Mbit/s"), sender_column);
        assert_eq!(column_of(achieved, "9.55 Mbit/s"), receiver_column);

        let lost = line_starting(&text, "lost (forward path)");
        assert_eq!(column_of(lost, "50 (0.50%)"), receiver_column);
        // The return path, as irtt splits up and down: the receiver's echoes sent against the
        // sender's replies received.
        let echoes = line_starting(&text, "echo replies (return path)");
        assert_eq!(column_of(echoes, "9900 received"), sender_column);
        assert_eq!(column_of(echoes, "9960 sent"), receiver_column);
        let return_lost = line_starting(&text, "lost (return path)");
        assert_eq!(
            column_of(return_lost, "60 (0.60%), 12 dropped by our receive buffer"),
            sender_column
        );
        let jitter = line_starting(&text, "jitter (RFC 3550)");
        assert_eq!(column_of(jitter, "1.23 µs"), receiver_column);

        let sndbuf = line_starting(&text, "SO_SNDBUF requested→effective");
        assert_eq!(
            column_of(sndbuf, "4.00 MiB → 416 KiB (clamped)"),
            sender_column
        );
        let rcvbuf = line_starting(&text, "SO_RCVBUF requested→effective");
        assert_eq!(
            column_of(rcvbuf, "8.00 MiB → 16.0 MiB (forced)"),
            receiver_column
        );

        for label in [
            "loss periods / longest",
            "duplicates",
            "late / stale",
            "implausible (far ahead)",
            "reordered",
            "reorder extent max",
            "n-reordering n=1/2/3",
            "IPDV p50 / p99",
            "one-way latency min",
            "one-way latency p99.9",
            "one-way latency max",
            "PDV p99 (RFC 5481)",
            "RTT (echo) p50",
            "rate target",
            "send errors (ENOBUFS/EAGAIN)",
            "rcvbuf drops (SO_RXQ_OVFL)",
            "timestamp source",
            "impairment",
            "impair dropped (loss / queue)",
        ] {
            line_starting(&text, label);
        }
        let p50 = line_starting(&text, "one-way latency p50");
        assert_eq!(column_of(p50, "9.23 µs"), receiver_column);
        let rtt = line_starting(&text, "RTT (echo) p50");
        assert_eq!(column_of(rtt, "21.2 µs"), sender_column);
        let errors = line_starting(&text, "send errors");
        assert!(errors.ends_with("10 (8 / 2)"));

        // Warnings go to stderr before the report (`run::warn`), never into the summary.
        assert!(!text.contains(&report.warnings[0]), "{text}");
    }

    #[test]
    fn a_receivers_own_report_shows_the_echo_replies_it_sent() {
        let mut report = fixtures::run_report();
        report.sender = None;
        let text = human(&report);
        let header = text.lines().nth(1).unwrap();
        let echoes = line_starting(&text, "echo replies (return path)");
        assert_eq!(
            column_of(echoes, "9960 sent"),
            column_of(header, "receiver")
        );
        assert!(
            !text.contains("lost (return path)"),
            "unknown without the sender"
        );
    }

    #[test]
    fn key_and_allow_refusals_show_only_when_in_force() {
        let report = fixtures::run_report();
        let text = human(&report);
        assert!(!text.contains("unauthenticated"), "{text}");
        assert!(!text.contains("refused by --allow"), "{text}");
        let mut keyed = report.clone();
        keyed.sender.as_mut().unwrap().unauthenticated = Some(0);
        let receiver = keyed.receiver.as_mut().unwrap();
        receiver.unauthenticated = Some(7);
        receiver.refused_by_allow = Some(4);
        let text = human(&keyed);
        let line = |label: &str| squeezed_line(&text, label);
        assert_eq!(
            line("unauthenticated (--key)"),
            "unauthenticated (--key) 0 7"
        );
        assert_eq!(line("refused by --allow"), "refused by --allow 4");
    }

    #[test]
    fn markings_show_only_when_set_or_changed_on_the_way() {
        let report = fixtures::run_report();
        let text = human(&report);
        for label in ["DSCP", "TTL", "don't fragment"] {
            assert!(!text.contains(label), "{label}: {text}");
        }
        let mut marked = report.clone();
        let sender = marked.sender.as_mut().unwrap();
        sender.tos = Some(0xb8);
        sender.ttl = Some(9);
        sender.df = true;
        sender.send_errors_emsgsize = 12;
        sender.path_mtu = Some(1280);
        let r = marked.receiver.as_mut().unwrap();
        r.marking = crate::summary::MarkingSummary {
            tos_sent: Some(0xb8),
            ttl_sent: Some(9),
            dscp_kept: 90,
            dscp_remarked: 10,
            tos_received: vec![
                TosCount {
                    tos: 0x20,
                    dscp: 8,
                    ecn: 0,
                    count: 10,
                },
                TosCount {
                    tos: 0xbb,
                    dscp: 46,
                    ecn: 3,
                    count: 90,
                },
            ],
            ttl_received: vec![
                TtlCount { ttl: 7, count: 40 },
                TtlCount { ttl: 8, count: 60 },
            ],
            ..Default::default()
        };
        let text = human(&marked);
        let line = |label: &str| squeezed_line(&text, label);
        assert_eq!(
            line("DSCP kept / re-marked"),
            "DSCP kept / re-marked EF (46) (TOS 0xb8) 90 / 10"
        );
        assert_eq!(
            line("DSCP/ECN received"),
            "DSCP/ECN received CS1 10, EF+CE 90"
        );
        assert_eq!(
            line("TTL sent / received"),
            "TTL sent / received 9 7 ×40, 8 ×60"
        );
        assert_eq!(
            line("don't fragment: EMSGSIZE / path MTU"),
            "don't fragment: EMSGSIZE / path MTU 12 / 1280"
        );
        // Bleached on the way although the sender set nothing: still said.
        let mut bleached = report.clone();
        let r = bleached.receiver.as_mut().unwrap();
        r.marking.dscp_remarked = 3;
        r.marking.tos_received = vec![TosCount {
            tos: 0x20,
            dscp: 8,
            ecn: 0,
            count: 3,
        }];
        let text = human(&bleached);
        assert_eq!(
            squeezed_line(&text, "DSCP kept / re-marked"),
            "DSCP kept / re-marked 0 / 3"
        );
    }

    #[test]
    fn implausible_sequences_and_a_shared_socket_are_shown() {
        let mut report = fixtures::run_report();
        let receiver = report.receiver.as_mut().unwrap();
        receiver.stats.implausible = 2;
        receiver.rcvbuf_drops = Some(30);
        receiver.rcvbuf_drops_shared = true;
        let text = human(&report);
        let line = |label: &str| squeezed_line(&text, label);
        assert_eq!(line("implausible (far ahead)"), "implausible (far ahead) 2");
        assert_eq!(
            line("rcvbuf drops (SO_RXQ_OVFL)"),
            "rcvbuf drops (SO_RXQ_OVFL) 30 (the socket's, shared with other tests)"
        );
    }

    #[test]
    fn a_reliable_run_shows_its_cost_block() {
        let mut report = fixtures::run_report();
        assert!(!human(&report).contains("reliable"));
        report.reliable = Some(ReliableReport {
            mode: "deadline=10ms".into(),
            impaired: "data+acks".into(),
            receiver_results: true,
            arq: crate::arq::ArqReport {
                messages: 1000,
                delivered: 990,
                residual_lost: 10,
                residual_loss: 0.01,
                retransmissions: 55,
                retransmissions_per_message: 0.055,
                rexmit_packet_threshold: 30,
                rexmit_time_threshold: 20,
                rexmit_pto: 5,
                deadline_drops: 10,
                ack_datagrams: 500,
                ack_datagram_share: 0.47,
                srtt_ns: 40_000,
                ..Default::default()
            },
            ..Default::default()
        });
        let text = human(&report);
        assert!(
            text.contains("reliable deadline=10ms: impairment on data and ACKs"),
            "{text}"
        );
        assert_eq!(
            squeezed_line(&text, "delivered / messages"),
            "delivered / messages 990 / 1000 (residual loss 10 = 1.00%)"
        );
        assert!(
            squeezed_line(&text, "retransmissions per message")
                .ends_with("0.0550 (55: packet threshold 30, time threshold 20, probe timeout 5)"),
            "{text}"
        );
        assert!(squeezed_line(&text, "deadline drops / given up").ends_with("10 / 0"));
        // Without the receiver's results its figures are not shown as zeros.
        report.reliable.as_mut().unwrap().receiver_results = false;
        let text = human(&report);
        assert!(text.contains("results are missing"), "{text}");
        assert!(!text.contains("delivered / messages"), "{text}");
        assert!(!text.contains("goodput"), "{text}");
    }

    #[test]
    fn missing_receiver_and_echo_drop_their_rows() {
        let mut report = fixtures::run_report();
        report.receiver = None;
        report.echo = false;
        report.interrupted = true;
        let text = human(&report);
        assert!(text.lines().next().unwrap().contains("interrupted"));
        assert!(text.contains("receiver (no report)"));
        assert!(!text.contains("jitter"));
        assert!(!text.contains("RTT"));
        assert!(!text.contains("one-way"));
        assert!(!text.contains("return path"));
        line_starting(&text, "sent");
    }

    #[test]
    fn interval_lines_for_each_role() {
        let report = fixtures::run_report();
        let mut out = Vec::new();
        write_interval_header(&mut out, "sender").unwrap();
        write_interval_line(&mut out, &report.sender.as_ref().unwrap().intervals[0]).unwrap();
        write_interval_header(&mut out, "receiver").unwrap();
        write_interval_line(&mut out, &report.receiver.as_ref().unwrap().intervals[0]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("sender intervals:"));
        assert!(lines[1].starts_with("[   0.00-   1.00 s] sent     1000  rate 9.60 Mbit/s"));
        assert!(lines[1].contains("err     1"));
        assert!(lines[1].contains("rtt p50   21.2 µs"));
        assert!(lines[2].starts_with("receiver intervals:"));
        let recv = lines[3];
        assert!(recv.contains("recv      990"));
        assert!(recv.contains("lost     10 ( 1.00%)"));
        assert!(recv.contains("jitter   1.23 µs"));
        assert!(recv.contains("lat p50   9.23 µs p99   24.0 µs"));
        // Fixed width: the receiver fields start where the sender's do.
        assert_eq!(column_of(lines[1], " sent"), column_of(recv, " recv"));
    }
}
