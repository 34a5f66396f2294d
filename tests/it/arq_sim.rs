//! Issue 10's target table, held by deterministic simulations of the reliable layer (sans-IO
//! sender and receiver over the seeded impairment engine on both directions, virtual clock,
//! 1000 messages/s of 1200 B, 30 µs base one-way delay). Each test prints the cells it checks.

use udplab::arq::sim::{self, SimConfig, SimResult};
use udplab::arq::{ArqConfig, ArqDeadline, ArqOrdering};
use udplab::summary::LatencySummary;

const GE5: &str = "loss=ge:p=1.316%,r=25%,h=0%,k=100%";
const MS: f64 = 1e6;

fn ordered() -> ArqConfig {
    ArqConfig::default()
}

fn unordered() -> ArqConfig {
    ArqConfig {
        ordering: ArqOrdering::Unordered,
        ..ArqConfig::default()
    }
}

fn deadline_10ms() -> ArqConfig {
    ArqConfig {
        deadline: ArqDeadline::After { ns: 10_000_000 },
        ..ArqConfig::default()
    }
}

fn simulate(cfg: ArqConfig, impair: &str, messages: u64) -> SimResult {
    let r = sim::run(&SimConfig::paced(cfg, impair, messages).expect("impairment spec parses"));
    assert!(
        !r.timed_out,
        "{impair}: the simulation ran out of virtual time"
    );
    assert_eq!(
        r.order_violations, 0,
        "{impair}: a message delivered twice or out of order"
    );
    r
}

fn lat(s: Option<LatencySummary>) -> LatencySummary {
    s.expect("latency recorded")
}

fn ms(ns: u64) -> f64 {
    ns as f64 / MS
}

/// One line per cell: the evidence the report quotes.
fn cell(row: &str, impair: &str, value: f64, bound: &str) {
    println!("ARQ-TABLE | {row:<40} | {impair:<36} | {value:>10.4} | {bound}");
}

/// The loss rows of the table for one impairment: delivered, retransmissions, duplicates,
/// ACK share, ordered and unordered latency, and `deadline=10ms` drops.
#[allow(clippy::too_many_arguments)]
fn table_column(
    impair: &str,
    messages: u64,
    rexmit_bound: f64,
    dup_bound: f64,
    ordered_p99_ms: f64,
    ordered_max_ms: f64,
    unordered_p99_ms: f64,
    deadline_drop_share: f64,
) {
    let o = simulate(ordered(), impair, messages);
    let u = simulate(unordered(), impair, messages);
    for (mode, r) in [("ordered", &o), ("unordered", &u)] {
        cell(
            &format!("delivered share ({mode})"),
            impair,
            r.report.delivered as f64 / r.report.messages as f64,
            "= 1",
        );
        assert_eq!(r.report.messages, messages);
        assert_eq!(
            r.report.delivered, messages,
            "{impair} {mode}: residual loss"
        );
        assert_eq!(r.report.residual_lost, 0);
    }
    // Retransmissions per message: the bound as written, and exactness: no more than the
    // datagrams the impairment dropped (every retransmission replaces a real loss).
    let rpm = o.report.retransmissions_per_message;
    cell(
        "retransmissions per message",
        impair,
        rpm,
        &format!("<= {rexmit_bound}"),
    );
    assert!(
        rpm <= rexmit_bound,
        "{impair}: {rpm} retransmissions per message"
    );
    assert!(
        o.report.retransmissions <= o.data_dropped,
        "{impair}: more retransmissions than losses"
    );
    let dpm = o.report.duplicate_arrivals_per_message;
    cell(
        "duplicate arrivals per message",
        impair,
        dpm,
        &format!("<= {dup_bound}"),
    );
    assert!(dpm <= dup_bound, "{impair}: {dpm} duplicates per message");
    for (mode, r) in [("ordered", &o), ("unordered", &u)] {
        let share = r.report.ack_byte_share;
        cell(
            &format!("ACK bytes / data bytes ({mode})"),
            impair,
            share,
            "<= 0.02",
        );
        assert!(
            share <= 0.02,
            "{impair} {mode}: ACK bytes {share} of data bytes"
        );
    }
    let ol = lat(o.report.latency_ordered);
    cell(
        "ordered latency p99 ms",
        impair,
        ms(ol.p99_ns),
        &format!("<= {ordered_p99_ms}"),
    );
    assert!(
        ms(ol.p99_ns) <= ordered_p99_ms,
        "{impair}: ordered p99 {} ms",
        ms(ol.p99_ns)
    );
    cell(
        "ordered latency max ms",
        impair,
        ms(ol.max_ns),
        &format!("<= {ordered_max_ms}"),
    );
    assert!(
        ms(ol.max_ns) <= ordered_max_ms,
        "{impair}: ordered max {} ms (longest data loss run {}, ACK loss run {})",
        ms(ol.max_ns),
        o.longest_data_loss_run,
        o.longest_ack_loss_run
    );
    // Unordered mode delivers on arrival: its delivery latency is the unordered view.
    let ul = lat(u.report.latency_unordered);
    cell(
        "unordered latency p99 ms",
        impair,
        ms(ul.p99_ns),
        &format!("<= {unordered_p99_ms}"),
    );
    assert!(
        ms(ul.p99_ns) <= unordered_p99_ms,
        "{impair}: unordered p99 {} ms",
        ms(ul.p99_ns)
    );

    let d = simulate(deadline_10ms(), impair, messages);
    let drops = d.report.deadline_drops as f64 / d.report.messages as f64;
    cell(
        "deadline=10ms dropped share",
        impair,
        drops,
        &format!("<= {deadline_drop_share}"),
    );
    assert!(
        drops <= deadline_drop_share,
        "{impair}: {} deadline drops",
        d.report.deadline_drops
    );
    assert_eq!(
        d.report.delivered + d.report.deadline_drops,
        d.report.messages,
        "{impair}: every message delivered or counted as a deadline drop"
    );
}

#[test]
fn loss_1_percent() {
    table_column("loss=1%", 100_000, 0.0105, 0.0001, 2.5, 5.0, 2.0, 0.0);
}

#[test]
fn loss_5_percent() {
    table_column("loss=5%", 20_000, 0.055, 0.001, 3.0, 7.0, 2.0, 0.0);
}

#[test]
fn loss_20_percent() {
    table_column("loss=20%", 20_000, 0.27, 0.002, 8.0, 30.0, 7.0, 0.0005);
}

#[test]
fn gilbert_elliott_5_percent() {
    table_column(GE5, 20_000, 0.057, 0.001, 8.0, 20.0, 7.0, 0.01);
}

/// The `delay=20ms` row for one seed: ordered and unordered runs, the cells printed.
fn delay_row(impair: &str, ordered_cfg: ArqConfig) -> (LatencySummary, f64, SimResult) {
    let o = simulate(ordered_cfg, impair, 20_000);
    let u = simulate(unordered(), impair, 20_000);
    assert_eq!(o.report.delivered, 20_000);
    assert_eq!(u.report.delivered, 20_000);
    let ol = lat(o.report.latency_ordered);
    cell("ordered latency mean ms", impair, ol.mean_ns / MS, "<= 50");
    cell("ordered latency p99 ms", impair, ms(ol.p99_ns), "<= 100");
    cell("ordered latency max ms", impair, ms(ol.max_ns), "<= 145");
    let up99 = ms(lat(u.report.latency_unordered).p99_ns);
    cell("unordered latency p99 ms", impair, up99, "<= 70");
    (ol, up99, o)
}

#[test]
fn delay_20ms_each_way_at_5_percent() {
    // Six seeds, not one: the tail here is a handful of messages lost two or three times, so
    // one lucky seed would prove little.
    for seed in 1..=6 {
        let impair = format!("loss=5%,delay=20ms,seed={seed}");
        let (ol, up99, o) = delay_row(&impair, ordered());
        assert!(
            ol.mean_ns / MS <= 50.0,
            "{impair}: mean {}",
            ol.mean_ns / MS
        );
        assert!(
            ms(ol.p99_ns) <= 100.0,
            "{impair}: ordered p99 {} ms",
            ms(ol.p99_ns)
        );
        assert!(ms(ol.max_ns) <= 145.0, "{impair}: max {} ms", ms(ol.max_ns));
        assert!(up99 <= 70.0, "{impair}: unordered p99 {up99} ms");
        // Copies went out (this path is where they pay) and cost what the rule says: about
        // p² datagrams per message (p = 5 %: 0.0025), not more.
        let copies = o.sender.repeat_copies as f64 / 20_000.0;
        cell("repeat copies per message", &impair, copies, "<= 0.005");
        assert!(
            o.sender.repeat_copies > 0 && copies <= 0.005,
            "{impair}: {copies}"
        );
    }
}

#[test]
fn without_repeat_copies_the_delay_row_misses_its_tail() {
    // Why the copies exist: a message lost twice is delivered at best ~102 ms after its first
    // send (five crossings of the 20 ms path plus two waits for a later packet to show each
    // loss), holding the next messages behind it; one lost three times, ~143 ms, holds about
    // forty. Without copies more than 1 % of messages exceed 100 ms on this path.
    let no_copies = ArqConfig {
        repeat_from_transmission: 0,
        ..ArqConfig::default()
    };
    let (ol, _, o) = delay_row("loss=5%,delay=20ms,seed=1", no_copies);
    assert_eq!(o.sender.repeat_copies, 0);
    assert!(ms(ol.p99_ns) > 100.0, "ordered p99 {} ms", ms(ol.p99_ns));
}

#[test]
fn repeat_copies_stay_off_where_they_do_not_pay() {
    // At 20 % loss on a 60 µs path a lost message holds up no other (srtt is far below the
    // 1 ms send interval), and unordered delivery never holds one up: p × 1 < 1, no copy.
    for (cfg, impair) in [
        (ordered(), "loss=20%"),
        (ordered(), "loss=5%"),
        (unordered(), "loss=20%,delay=20ms"),
        (ordered(), "loss=1%,delay=20ms"),
    ] {
        let r = simulate(cfg, impair, 5_000);
        assert_eq!(r.sender.repeat_copies, 0, "{impair}");
        assert_eq!(r.report.delivered, 5_000, "{impair}");
    }
}

#[test]
fn no_loss_ordered_p50_is_within_50us_of_the_plain_one_way_latency() {
    let r = simulate(ordered(), "none", 20_000);
    // The plain run's one-way latency on this link is the base delay, 30 µs, for every datagram.
    let p50 = lat(r.report.latency_ordered).p50_ns;
    cell(
        "no loss: ordered p50 - plain one-way us",
        "none",
        (p50 as f64 - 30_000.0) / 1e3,
        "<= 50",
    );
    assert!(p50 <= 30_000 + 50_000, "ordered p50 {p50} ns");
    assert_eq!(r.report.retransmissions, 0);
}

#[test]
fn jitter_5ms_spurious_retransmissions_stay_under_2_percent_with_the_adaptive_threshold() {
    let r = simulate(ordered(), "jitter=5ms", 20_000);
    let spurious = r.report.spurious_per_message;
    cell(
        "jitter=5ms spurious per message (adaptive)",
        "jitter=5ms",
        spurious,
        "<= 0.02",
    );
    assert!(spurious <= 0.02, "{spurious}");
    assert!(r.report.duplicate_arrivals_per_message <= 0.02);
    assert!(
        r.report.packet_threshold > 1,
        "reordering raised the packet threshold"
    );
    assert!(
        r.report.reorder_window_ns > 1_000_000,
        "reordering widened the time threshold"
    );
}

#[test]
fn jitter_5ms_with_a_fixed_threshold_of_3_is_much_worse() {
    let fixed = ArqConfig {
        initial_packet_threshold: 3,
        fixed_packet_threshold: true,
        ..ArqConfig::default()
    };
    let r = simulate(fixed, "jitter=5ms", 20_000);
    let spurious = r.report.spurious_per_message;
    cell(
        "jitter=5ms spurious per message (fixed 3)",
        "jitter=5ms",
        spurious,
        "> 0.02 (regression guard)",
    );
    assert!(
        spurious > 0.02,
        "a fixed threshold should show the reordering cost: {spurious}"
    );
    assert_eq!(r.report.packet_threshold, 3);
}

#[test]
fn bulk_goodput_at_1_percent_loss() {
    // `--rate max`: the sender's CPU paces it (100 000 sends/s here, retransmissions included:
    // no budget beyond it), window-limited (default window), 1200 B, loss=1% both ways.
    let impair = "loss=1%";
    let spec: udplab::impair::ImpairSpec = impair.parse().unwrap();
    let pps = 100_000;
    let messages = 200_000;
    let arq = ArqConfig {
        rexmit_budget: 0.0,
        ..ArqConfig::default()
    };
    let mut cfg = SimConfig::paced(arq, impair, messages).unwrap();
    cfg.pps = pps;
    // Unpaced, as `--rate max` configures the layer.
    cfg.arq.send_interval_ns = 0;
    let r = sim::run(&cfg);
    assert!(!r.timed_out);
    assert_eq!(r.report.delivered, messages);
    let goodput_msgs = r.report.delivered as f64 / (r.end_ns as f64 / 1e9);
    let unreliable = sim::unreliable_delivered_rate(&spec, pps, messages, 1200);
    let ratio = goodput_msgs / unreliable;
    cell(
        "bulk goodput / unreliable delivered rate",
        impair,
        ratio,
        ">= 0.9 x 0.99 = 0.891",
    );
    assert!(
        ratio >= 0.9 * (1.0 - 0.01),
        "goodput {goodput_msgs}/s vs unreliable {unreliable}/s"
    );
}
