//! `--reliable` with `--flows N`: the flows' ARQ figures combined into the total's (counts
//! summed, shares recomputed from the sums, never averaged) and the per-flow reliable table.
//!
//! Each flow's receiver sends back its delivery latency as percentiles, not as a histogram, and
//! percentiles of several flows cannot be combined: the total has no latency percentiles (the
//! text shows `-` and says why). Its maxima are exact (the largest flow's).

use std::io::{self, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::arq::{ArqReceiverStats, ArqReport, ArqSenderStats};
use crate::summary::{LatencySummary, ReliableReport, RunReport};

/// The footnote under the reliable table's total row.
pub const TOTAL_LATENCY_NOTE: &str = "the total's p99 is \"-\": each flow's receiver reports its \
     delivery latency as percentiles, not as a histogram, and percentiles of flows cannot be \
     combined (an average of percentiles is not a percentile); the total's max is the largest \
     flow's (exact)";

/// The total's `reliable` report: `None` unless every flow has one. Counts are summed over the
/// flows and every share is recomputed from the sums; the estimator's state (srtt, rttvar) and
/// the latency percentiles are per flow only (0 and null); min RTT is the smallest flow's; the
/// packet threshold, reordering window, most in flight and most buffered are the largest
/// flow's (each flow's own, not at one moment); goodput is all flows' delivered payload over
/// the longest flow's transfer time (the flows run side by side).
pub fn combine(flows: &[RunReport]) -> Option<ReliableReport> {
    let reports: Vec<&ReliableReport> = flows.iter().filter_map(|f| f.reliable.as_ref()).collect();
    let first = reports.first()?;
    if reports.len() != flows.len() {
        return None;
    }
    let senders: Vec<&ArqSenderStats> = reports.iter().map(|r| &r.arq.sender).collect();
    let receivers: Vec<&ArqReceiverStats> = reports.iter().map(|r| &r.arq.receiver).collect();
    let sender = sum_senders(&senders);
    let receiver = sum_receivers(&receivers);
    let duration_ns = reports.iter().map(|r| r.arq.duration_ns).max().unwrap_or(0);
    // The payload size (for goodput) is every flow's; the rest of the settings (the first RTT
    // estimate is each flow's handshake) are in each flow's report.
    let mut arq = ArqReport::new(first.arq.config.clone(), sender, receiver, duration_ns);
    arq.config = None;
    // Each flow's deadline drops include the last messages its receiver never knew of (its
    // own sender's word, settled per flow by `ArqReport::new`); summed receivers cannot redo
    // that, so the total takes the flows' settled counts.
    arq.deadline_drops = reports.iter().map(|r| r.arq.deadline_drops).sum();
    Some(ReliableReport {
        mode: first.mode.clone(),
        impaired: first.impaired.clone(),
        receiver_results: reports.iter().all(|r| r.receiver_results),
        window_blocked: reports.iter().map(|r| r.window_blocked).sum(),
        ack_impair_counters: reports
            .iter()
            .map(|r| r.ack_impair_counters)
            .collect::<Option<Vec<_>>>()
            .and_then(|all| all.into_iter().reduce(super::flows::add_counters)),
        flows_combined: Some(flows.len() as u64),
        arq,
    })
}

/// Every whole-number field of `all` summed by name, the others left at their default. The
/// ARQ layer's statistics are counters (a counter added there is summed here without a change
/// here); the few fields that are not counts are set by the callers.
fn sum_by_name<T: Serialize + DeserializeOwned + Default>(all: &[&T]) -> T {
    let Ok(Value::Object(mut total)) = serde_json::to_value(T::default()) else {
        return T::default();
    };
    for stats in all {
        let Ok(Value::Object(fields)) = serde_json::to_value(stats) else {
            continue;
        };
        for (name, value) in fields {
            if let (Some(add), Some(sum)) =
                (value.as_u64(), total.get_mut(&name).filter(|v| v.is_u64()))
            {
                *sum = Value::from(sum.as_u64().unwrap_or(0).saturating_add(add));
            }
        }
    }
    serde_json::from_value(Value::Object(total)).unwrap_or_default()
}

/// The senders' counts summed; their estimator state is not summable (see [`combine`]).
fn sum_senders(all: &[&ArqSenderStats]) -> ArqSenderStats {
    let most = |f: fn(&ArqSenderStats) -> u64| all.iter().map(|s| f(s)).max().unwrap_or(0);
    ArqSenderStats {
        session_given_up: all.iter().any(|s| s.session_given_up),
        // Each flow's own estimate: a sum or an average of them is no flow's RTT.
        srtt_ns: 0,
        rttvar_ns: 0,
        latest_rtt_ns: 0,
        min_rtt_ns: all
            .iter()
            .map(|s| s.min_rtt_ns)
            .filter(|&v| v > 0)
            .min()
            .unwrap_or(0),
        // Each flow's own end state or maximum, not at one moment: the largest flow's.
        packet_threshold: all.iter().map(|s| s.packet_threshold).max().unwrap_or(0),
        reorder_window_ns: most(|s| s.reorder_window_ns),
        max_in_flight: most(|s| s.max_in_flight),
        max_window: most(|s| s.max_window),
        ..sum_by_name(all)
    }
}

/// The receivers' counts summed; latency percentiles cannot be (see [`combine`]).
fn sum_receivers(all: &[&ArqReceiverStats]) -> ArqReceiverStats {
    ArqReceiverStats {
        max_buffered: all.iter().map(|r| r.max_buffered).max().unwrap_or(0),
        // The latency summaries are not numbers: `sum_by_name` leaves them None.
        ..sum_by_name(all)
    }
}

/// Whether the delivery latency the table shows is the ordered one (`ordered`, `deadline=`)
/// or the unordered one.
fn ordered_view(mode: &str) -> bool {
    mode != "unordered"
}

/// The delivery latency of the run's mode (the receiver's figure: none without its results).
fn delivery_latency(r: &ReliableReport) -> Option<&LatencySummary> {
    if !r.receiver_results {
        return None;
    }
    let a = &r.arq;
    if ordered_view(&r.mode) {
        a.latency_ordered.as_ref()
    } else {
        a.latency_unordered.as_ref()
    }
    .filter(|l| l.count > 0)
}

/// The largest of the flows' delivery latency maxima: exact, unlike any percentile of the
/// total. `None` when a flow has no latency.
fn max_of_flows(flows: &[RunReport]) -> Option<u64> {
    flows
        .iter()
        .map(|f| {
            f.reliable
                .as_ref()
                .and_then(delivery_latency)
                .map(|l| l.max_ns)
        })
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}

/// The reliable table of a `--flows` run: one row per flow and the total (counts summed,
/// shares from the sums), then the footnotes. Writes nothing when no flow is reliable.
pub fn write_table(w: &mut dyn Write, flows: &[RunReport], total: &RunReport) -> io::Result<()> {
    let Some(first) = flows.iter().find_map(|f| f.reliable.as_ref()) else {
        return Ok(());
    };
    let ordered = ordered_view(&first.mode);
    let deadline = first.mode.starts_with("deadline");
    let view = if ordered { "ord" } else { "unord" };
    writeln!(
        w,
        "reliable {}: impairment on {}; messages are what the application side got (after \
         recovery); shares are of the summed counts in the total",
        first.mode,
        match first.impaired.as_str() {
            "none" => "no direction",
            "data" => "data only (ACKs: udplab proxy --reverse-impair)",
            "data+acks" => "data and ACKs",
            other => other,
        }
    )?;
    let mut header = format!(
        "{:<6} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10} {:>10} {:>8} {:>12} {:>13} {:>13}",
        "flow",
        "messages",
        "delivered",
        "resid",
        "resid %",
        "rexmit",
        "rexmit/msg",
        "dup/msg",
        "ack B %",
        "goodput Mb/s",
        format!("{view} p99 µs"),
        format!("{view} max µs"),
    );
    if deadline {
        header.push_str(&format!(" {:>10}", "dl drops"));
    }
    writeln!(w, "{header}")?;
    for (i, f) in flows.iter().enumerate() {
        let latency = f.reliable.as_ref().and_then(delivery_latency);
        write_row(
            w,
            &i.to_string(),
            f.reliable.as_ref(),
            latency.map(|l| l.p99_ns),
            latency.map(|l| l.max_ns),
            deadline,
        )?;
    }
    // The total: its figures are the combined counts; its p99 cannot be had (see the note).
    write_row(
        w,
        "total",
        total.reliable.as_ref(),
        None,
        max_of_flows(flows),
        deadline,
    )?;
    writeln!(w, "  (1) {TOTAL_LATENCY_NOTE}")?;
    if flows
        .iter()
        .any(|f| f.reliable.as_ref().is_some_and(|r| !r.receiver_results))
    {
        writeln!(
            w,
            "  (2) \"-\": that flow's receiver results did not come back (its delivered \
             messages, duplicates and ACKs are not known)"
        )?;
    }
    Ok(())
}

fn write_row(
    w: &mut dyn Write,
    name: &str,
    r: Option<&ReliableReport>,
    p99_ns: Option<u64>,
    max_ns: Option<u64>,
    deadline: bool,
) -> io::Result<()> {
    let dash = || "-".to_string();
    let rx = r.filter(|r| r.receiver_results).map(|r| &r.arq);
    let a = r.map(|r| &r.arq);
    let us = |ns: Option<u64>| ns.map_or_else(dash, |v| format!("{:.1}", v as f64 / 1e3));
    let mut line = format!(
        "{:<6} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10} {:>10} {:>8} {:>12} {:>13} {:>13}",
        name,
        a.map_or_else(dash, |a| a.messages.to_string()),
        rx.map_or_else(dash, |a| a.delivered.to_string()),
        rx.map_or_else(dash, |a| a.residual_lost.to_string()),
        rx.map_or_else(dash, |a| format!("{:.3}", a.residual_loss * 100.0)),
        a.map_or_else(dash, |a| a.retransmissions.to_string()),
        a.map_or_else(dash, |a| format!("{:.4}", a.retransmissions_per_message)),
        rx.map_or_else(dash, |a| format!("{:.4}", a.duplicate_arrivals_per_message)),
        rx.map_or_else(dash, |a| format!("{:.2}", a.ack_byte_share * 100.0)),
        rx.map_or_else(dash, |a| format!("{:.2}", a.goodput_bps / 1e6)),
        if name == "total" {
            format!("{} (1)", us(p99_ns))
        } else {
            us(p99_ns)
        },
        us(max_ns),
    );
    if deadline {
        line.push_str(&format!(
            " {:>10}",
            rx.map_or_else(dash, |a| a.deadline_drops.to_string())
        ));
    }
    writeln!(w, "{line}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arq::ArqConfig;

    fn latency(p99_ns: u64, max_ns: u64) -> LatencySummary {
        LatencySummary {
            count: 10,
            p50_ns: p99_ns / 2,
            p99_ns,
            max_ns,
            ..LatencySummary::default()
        }
    }

    /// One flow's report as the run builds it: both ends' stats merged by `ArqReport::new`.
    fn flow(messages: u64, rexmits: u64, acks: u64, srtt_ns: u64, lat: (u64, u64)) -> RunReport {
        let sender = ArqSenderStats {
            messages,
            data_datagrams: messages + rexmits,
            data_bytes: (messages + rexmits) * 100,
            retransmissions: rexmits,
            rexmit_pto: rexmits,
            packets_acked: messages,
            srtt_ns,
            rttvar_ns: srtt_ns / 4,
            min_rtt_ns: srtt_ns / 2,
            max_in_flight: rexmits + 3,
            packet_threshold: 3,
            ..ArqSenderStats::default()
        };
        let receiver = ArqReceiverStats {
            delivered: messages,
            unique_messages: messages,
            duplicate_arrivals: 1,
            ack_datagrams: acks,
            ack_bytes: acks * 20,
            latency_ordered: Some(latency(lat.0, lat.1)),
            latency_unordered: Some(latency(lat.0, lat.1)),
            max_buffered: rexmits,
            ..ArqReceiverStats::default()
        };
        let config = ArqConfig {
            payload_size: 100,
            ..ArqConfig::default()
        };
        RunReport {
            reliable: Some(ReliableReport {
                mode: "ordered".into(),
                impaired: "data+acks".into(),
                receiver_results: true,
                arq: ArqReport::new(Some(config), sender, receiver, 1_000_000_000),
                ..ReliableReport::default()
            }),
            ..RunReport::default()
        }
    }

    #[test]
    fn the_total_sums_counts_and_recomputes_shares_from_the_sums() {
        let flows = [
            flow(1000, 50, 500, 40_000, (2_000, 5_000)),
            flow(3000, 30, 1000, 80_000, (6_000, 7_000)),
        ];
        let t = combine(&flows).unwrap();
        let a = &t.arq;
        assert_eq!((a.messages, a.delivered, a.residual_lost), (4000, 4000, 0));
        assert_eq!(a.retransmissions, 80);
        assert_eq!(a.rexmit_pto, 80);
        assert_eq!(a.duplicate_arrivals, 2);
        assert_eq!((a.ack_datagrams, a.ack_bytes), (1500, 30_000));
        assert_eq!(a.data_datagrams, 4080);
        // From the sums, not the mean of the flows' shares (0.05 and 0.01 average to 0.03).
        assert_eq!(a.retransmissions_per_message, 80.0 / 4000.0);
        assert_eq!(a.ack_byte_share, 30_000.0 / 408_000.0);
        assert_eq!(a.duplicate_arrivals_per_message, 2.0 / 4000.0);
        // All delivered payload over the longest transfer (both 1 s).
        assert_eq!(a.goodput_bps, 4000.0 * 100.0 * 8.0);
        assert_eq!(a.wire_efficiency, 400_000.0 / (408_000.0 + 30_000.0));
        // Percentiles and the RTT estimate are per flow only; min RTT and maxima are exact.
        assert!(a.latency_ordered.is_none() && a.latency_unordered.is_none());
        assert_eq!((a.srtt_ns, a.rttvar_ns), (0, 0));
        assert_eq!(a.min_rtt_ns, 20_000);
        assert_eq!(a.max_in_flight, 53);
        assert_eq!(a.max_buffered, 50);
        assert!(a.config.is_none());
        assert_eq!(t.flows_combined, Some(2));
        assert!(t.receiver_results);
        assert_eq!(max_of_flows(&flows), Some(7_000));
    }

    #[test]
    fn the_total_keeps_the_deadline_drops_each_flow_settled() {
        // Two deadline flows of 10 messages; each sender gave its last one up at the deadline
        // before any RData named it: each receiver knew of 9, so each flow counts 1 drop.
        let deadline_flow = || {
            let config = ArqConfig {
                deadline: crate::arq::ArqDeadline::After { ns: 200_000 },
                ..ArqConfig::default()
            };
            let sender = ArqSenderStats {
                messages: 10,
                deadline_given_up: 1,
                ..ArqSenderStats::default()
            };
            let receiver = ArqReceiverStats {
                delivered: 9,
                messages_known: Some(9),
                ..ArqReceiverStats::default()
            };
            RunReport {
                reliable: Some(ReliableReport {
                    mode: "deadline=200us".into(),
                    receiver_results: true,
                    arq: ArqReport::new(Some(config), sender, receiver, 1_000_000),
                    ..ReliableReport::default()
                }),
                ..RunReport::default()
            }
        };
        let flows = [deadline_flow(), deadline_flow()];
        assert_eq!(flows[0].reliable.as_ref().unwrap().arq.deadline_drops, 1);
        let t = combine(&flows).unwrap();
        assert_eq!((t.arq.residual_lost, t.arq.deadline_drops), (2, 2));
    }

    /// `T` with every whole-number field set to `n` (what serde sees of it).
    fn all_counts<T: Serialize + DeserializeOwned + Default>(n: u64) -> T {
        let Ok(Value::Object(mut fields)) = serde_json::to_value(T::default()) else {
            panic!("not a struct")
        };
        for v in fields.values_mut().filter(|v| v.is_u64()) {
            *v = Value::from(n);
        }
        serde_json::from_value(Value::Object(fields)).unwrap()
    }

    /// The whole-number fields of `stats` that are not `expected`, by name.
    fn fields_not(stats: &impl Serialize, expected: u64) -> Vec<(String, u64)> {
        let Ok(Value::Object(fields)) = serde_json::to_value(stats) else {
            panic!("not a struct")
        };
        fields
            .into_iter()
            .filter_map(|(k, v)| v.as_u64().map(|v| (k, v)))
            .filter(|(_, v)| *v != expected)
            .collect()
    }

    #[test]
    fn every_counter_is_summed_and_the_rest_is_named() {
        let (one, two): (ArqSenderStats, ArqSenderStats) = (all_counts(1), all_counts(2));
        let total = sum_senders(&[&one, &two]);
        // Counters: 1 + 2. The estimator's state: 0; min RTT the smallest, the maxima and the
        // threshold the largest.
        let mut not_summed = fields_not(&total, 3);
        not_summed.sort();
        assert_eq!(
            not_summed,
            [
                ("latest_rtt_ns".to_string(), 0),
                ("max_in_flight".to_string(), 2),
                ("max_window".to_string(), 2),
                ("min_rtt_ns".to_string(), 1),
                ("packet_threshold".to_string(), 2),
                ("reorder_window_ns".to_string(), 2),
                ("rttvar_ns".to_string(), 0),
                ("srtt_ns".to_string(), 0),
            ]
        );
        assert!(total.retransmissions == 3 && total.messages == 3);
        let (one, two): (ArqReceiverStats, ArqReceiverStats) = (all_counts(1), all_counts(2));
        let total = sum_receivers(&[&one, &two]);
        assert_eq!(fields_not(&total, 3), [("max_buffered".to_string(), 2)]);
        assert_eq!(total.delivered, 3);
    }

    #[test]
    fn residual_loss_of_the_total_is_summed_lost_over_summed_messages() {
        let mut flows = [flow(1000, 0, 10, 1, (1, 1)), flow(9000, 0, 10, 1, (1, 1))];
        // Flow 0 lost 100 of 1000 (10 %), flow 1 none: the total lost 1 %, not 5 %.
        let f0 = flows[0].reliable.as_mut().unwrap();
        let mut receiver = f0.arq.receiver.clone();
        receiver.delivered = 900;
        f0.arq = ArqReport::new(
            f0.arq.config.clone(),
            f0.arq.sender.clone(),
            receiver,
            f0.arq.duration_ns,
        );
        let t = combine(&flows).unwrap();
        assert_eq!(t.arq.residual_lost, 100);
        assert_eq!(t.arq.residual_loss, 0.01);
    }

    #[test]
    fn a_flow_without_reliable_figures_leaves_the_total_without() {
        let flows = [flow(10, 0, 5, 1, (1, 1)), RunReport::default()];
        assert!(combine(&flows).is_none());
        assert!(combine(&[]).is_none());
        // A flow whose receiver results are missing makes the total's receiver side unknown.
        let mut flows = [flow(10, 0, 5, 1, (1, 1)), flow(10, 0, 5, 1, (1, 1))];
        flows[1].reliable.as_mut().unwrap().receiver_results = false;
        assert!(!combine(&flows).unwrap().receiver_results);
    }

    #[test]
    fn the_table_shows_each_flow_and_a_total_without_a_combined_percentile() {
        let flows = [
            flow(1000, 50, 500, 40_000, (2_000, 5_000)),
            flow(3000, 30, 1000, 80_000, (6_000, 7_000)),
        ];
        let total = RunReport {
            reliable: combine(&flows),
            ..RunReport::default()
        };
        let mut out = Vec::new();
        write_table(&mut out, &flows, &total).unwrap();
        let text = String::from_utf8(out).unwrap();
        let row = |name: &str| -> Vec<String> {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("no row {name}: {text}"))
                .split_whitespace()
                .map(String::from)
                .collect()
        };
        assert_eq!(row("0")[1..5], ["1000", "1000", "0", "0.000"]);
        assert_eq!(row("0")[6], "0.0500");
        assert_eq!(row("0")[10..12], ["2.0", "5.0"]);
        let total_row = row("total");
        assert_eq!(
            total_row[1..7],
            ["4000", "4000", "0", "0.000", "80", "0.0200"]
        );
        // No percentile of the total, the footnote says why; the max is the largest flow's.
        assert_eq!(total_row[10..13], ["-", "(1)", "7.0"]);
        assert!(text.contains("percentiles of flows cannot be"), "{text}");
        assert!(text.contains("ord p99 µs"), "{text}");
        assert!(!text.contains("dl drops"), "{text}");
        assert!(!text.contains("(2)"), "{text}");
    }

    #[test]
    fn a_flow_without_receiver_results_shows_dashes_not_zeros() {
        let mut flows = [
            flow(1000, 50, 500, 40_000, (2_000, 5_000)),
            flow(3000, 30, 1000, 80_000, (6_000, 7_000)),
        ];
        for f in &mut flows {
            f.reliable.as_mut().unwrap().mode = "deadline=10ms".into();
        }
        flows[1].reliable.as_mut().unwrap().receiver_results = false;
        let total = RunReport {
            reliable: combine(&flows),
            ..RunReport::default()
        };
        let mut out = Vec::new();
        write_table(&mut out, &flows, &total).unwrap();
        let text = String::from_utf8(out).unwrap();
        let cells = |name: &str| -> Vec<String> {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap()
                .split_whitespace()
                .map(String::from)
                .collect()
        };
        // Messages and retransmissions are the sender's; delivered and the deadline drops
        // are the receiver's, unknown for flow 1 and so for the total.
        assert_eq!(cells("1")[1..4], ["3000", "-", "-"]);
        assert_eq!(cells("1")[5], "30");
        assert_eq!(
            cells("1")[10..],
            ["-", "-", "-"],
            "latency and deadline drops"
        );
        assert_eq!(cells("total")[1..4], ["4000", "-", "-"]);
        assert_eq!(cells("total")[10..], ["-", "(1)", "-", "-"]);
        assert_eq!(cells("0").last().unwrap(), "0", "flow 0's deadline drops");
        assert!(text.contains("dl drops"), "{text}");
        assert!(
            text.contains("(2) \"-\": that flow's receiver results"),
            "{text}"
        );
    }
}
