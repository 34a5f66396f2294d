//! Simulation tests of the reliable layer: issue 10's target table, cell by cell.

use super::*;
use crate::arq::ArqDeadline;

fn show(label: &str, r: &SimResult) {
    let rep = &r.report;
    let ms = |s: Option<crate::summary::LatencySummary>,
              f: fn(&crate::summary::LatencySummary) -> u64| {
        s.map_or(f64::NAN, |s| f(&s) as f64 / 1e6)
    };
    println!(
        "{label}: msgs {} delivered {} resid {} rexmit/msg {:.4} (pt {} tt {} pto {}) spur/msg {:.4} dup/msg {:.4} ackB/dataB {:.4} ord p50 {:.3} p99 {:.3} max {:.3} mean {:.3} unord p99 {:.3} deadline drops {} thr {} end {:.1}s viol {} timeout {}",
        rep.messages,
        rep.delivered,
        rep.residual_lost,
        rep.retransmissions_per_message,
        rep.rexmit_packet_threshold,
        rep.rexmit_time_threshold,
        rep.rexmit_pto,
        rep.spurious_per_message,
        rep.duplicate_arrivals_per_message,
        rep.ack_byte_share,
        ms(rep.latency_ordered, |s| s.p50_ns),
        ms(rep.latency_ordered, |s| s.p99_ns),
        ms(rep.latency_ordered, |s| s.max_ns),
        rep.latency_ordered.map_or(f64::NAN, |s| s.mean_ns / 1e6),
        ms(rep.latency_unordered, |s| s.p99_ns),
        rep.deadline_drops,
        rep.packet_threshold,
        r.end_ns as f64 / 1e9,
        r.order_violations,
        r.timed_out,
    );
}

#[test]
fn smoke_table() {
    for loss in [
        "loss=1%",
        "loss=5%",
        "loss=20%",
        "loss=ge:p=1.316%,r=25%,h=0%,k=100%",
        "loss=5%,delay=20ms",
        "jitter=5ms",
        "none",
    ] {
        for (mode, cfg) in [
            ("ordered", ArqConfig::default()),
            (
                "unordered",
                ArqConfig {
                    ordering: ArqOrdering::Unordered,
                    ..ArqConfig::default()
                },
            ),
            (
                "deadline",
                ArqConfig {
                    deadline: ArqDeadline::After { ns: 10_000_000 },
                    ..ArqConfig::default()
                },
            ),
        ] {
            let r = run(&SimConfig::paced(cfg, loss, 20_000).unwrap());
            show(&format!("{loss} {mode}"), &r);
        }
    }
}
