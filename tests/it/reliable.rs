//! `--reliable` end to end over real loopback sockets: everything delivered despite loss on
//! data and ACKs, both ends' counts agreeing, the unordered and deadline modes, and a separate
//! `udplab recv` behind `udplab proxy` impairing both directions.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::{RecvChild, cell, read_csv, run_bounded, start_proxy, stop_proxy};

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Runs `udplab loopback --reliable ...` and returns its one flow's JSON report.
fn loopback(args: &[&str], dir: &Path, tag: &str) -> Value {
    let json = dir.join(format!("{tag}.json"));
    let mut full = vec!["loopback", "--quiet", "--size", "200"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--json", json.to_str().unwrap()]);
    let out = run_bounded(&full, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{:?}: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    v["flows"][0].clone()
}

/// What both views of one reliable run must agree on, whatever the mode.
fn check_both_views(f: &Value, count: u64) {
    let r = &f["reliable"];
    let sender = &f["sender"];
    let receiver = &f["receiver"];
    let rr = &receiver["reliable"];
    assert_eq!(r["receiver_results"], true);
    assert_eq!(u(&r["messages"]), count);
    // Every RData the sender's thread sent is one packet number; the receiver's plain
    // statistics count them by packet number (the path's raw loss) against that total.
    assert_eq!(u(&r["data_datagrams"]), u(&sender["sent"]));
    let st = &receiver["stats"];
    assert_eq!(u(&st["expected"]), u(&sender["sent"]));
    assert_eq!(u(&st["received"]) + u(&st["lost"]), u(&st["expected"]));
    // The ARQ receiver saw exactly the RData the plain statistics received (no duplicate
    // packet numbers exist: a retransmission takes a new one).
    assert_eq!(u(&rr["data_datagrams"]), u(&st["received"]));
    // The merged report is the receiver's word for what it delivered and acknowledged.
    assert_eq!(r["delivered"], rr["delivered"]);
    assert_eq!(r["ack_datagrams"], rr["ack_datagrams"]);
    assert_eq!(
        u(&r["delivered"]) + u(&r["residual_lost"]),
        u(&r["messages"])
    );
    // ACKs that reached the sender are at most those sent; no amplification.
    assert!(u(&r["sender"]["acks_received"]) <= u(&rr["ack_datagrams"]));
    assert!(u(&rr["ack_datagrams"]) <= u(&rr["data_datagrams"]));
    assert!(u(&rr["ack_bytes"]) <= u(&rr["data_bytes"]));
    // Retransmissions are the datagrams beyond one per message.
    assert_eq!(
        u(&r["retransmissions"]),
        u(&r["data_datagrams"]) - u(&r["messages"])
    );
    assert_eq!(
        u(&r["retransmissions"]),
        u(&r["rexmit_packet_threshold"]) + u(&r["rexmit_time_threshold"]) + u(&r["rexmit_pto"])
    );
    assert_eq!(r["bogus_acks"], 0);
}

#[test]
fn loopback_reliable_delivers_everything_through_loss_on_data_and_acks() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("runs.csv");
    let f = loopback(
        &[
            "--reliable",
            "--impair",
            "loss=20%,seed=3",
            "--count",
            "3000",
            "--pps",
            "3000",
            "--csv",
            csv.to_str().unwrap(),
        ],
        dir.path(),
        "ordered",
    );
    let r = &f["reliable"];
    assert_eq!(r["mode"], "ordered");
    assert_eq!(r["impaired"], "data+acks");
    assert_eq!(u(&r["delivered"]), 3000);
    assert_eq!(u(&r["residual_lost"]), 0);
    check_both_views(&f, 3000);
    // The impairment dropped data: every drop was a raw loss the layer recovered.
    let dropped = u(&f["sender"]["impair_counters"]["dropped"]);
    assert!(dropped > 300, "20% of 3000+ datagrams, got {dropped}");
    assert!(u(&f["receiver"]["stats"]["lost"]) >= dropped);
    assert!(u(&r["retransmissions"]) >= dropped);
    // ...and ACKs were impaired too (loopback impairs both directions).
    assert!(u(&r["ack_impair_counters"]["dropped"]) > 0);
    assert!(r["latency_ordered"]["count"].as_u64().unwrap() == 3000);
    assert!(r["latency_tx2"]["count"].as_u64().unwrap() > 0);
    // The interval rows add up to the run's figures.
    let sum = |role: &str, field: &str| -> u64 {
        f[role]["intervals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| u(&row["reliable"][field]))
            .sum()
    };
    assert_eq!(sum("sender", "retransmissions"), u(&r["retransmissions"]));
    assert_eq!(sum("receiver", "delivered"), 3000);
    assert_eq!(sum("receiver", "ack_datagrams"), u(&r["ack_datagrams"]));
    // The CSV rows carry the same figures at the end of the row.
    let (header, rows) = read_csv(&csv);
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(cell(&header, row, "reliable_mode"), "ordered");
        assert_eq!(cell(&header, row, "delivered"), "3000");
        assert_eq!(cell(&header, row, "residual_lost"), "0");
        assert_eq!(
            cell(&header, row, "retransmissions"),
            r["retransmissions"].to_string()
        );
    }
}

#[test]
fn unordered_delivers_everything_as_it_arrives() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let f = loopback(
        &[
            "--reliable",
            "unordered",
            "--impair",
            "loss=10%,seed=7",
            "--count",
            "2000",
            "--pps",
            "2000",
        ],
        dir.path(),
        "unordered",
    );
    let r = &f["reliable"];
    assert_eq!(r["mode"], "unordered");
    assert_eq!(u(&r["delivered"]), 2000);
    check_both_views(&f, 2000);
    assert_eq!(u(&r["latency_unordered"]["count"]), 2000);
    // Each message's arrival comes no later than its in-order point, so every quantile of
    // the unordered delivery latency is at most the ordered one's.
    for q in ["p50_ns", "p99_ns", "max_ns"] {
        assert!(
            u(&r["latency_unordered"][q]) <= u(&r["latency_ordered"][q]),
            "{q}: {r}"
        );
    }
}

#[test]
fn deadline_gives_up_late_messages_and_counts_them() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    // A deadline below the time threshold's 1 ms floor: a message whose first transmission
    // is lost cannot be recovered in time, whatever the machine's speed.
    let f = loopback(
        &[
            "--reliable",
            "deadline=200us",
            "--impair",
            "loss=20%,seed=11",
            "--count",
            "2000",
            "--pps",
            "2000",
        ],
        dir.path(),
        "deadline",
    );
    let r = &f["reliable"];
    assert_eq!(r["mode"], "deadline=200us");
    check_both_views(&f, 2000);
    let drops = u(&r["deadline_drops"]);
    assert!(drops > 100, "about 20% of 2000 messages, got {drops}");
    assert!(u(&r["residual_lost"]) > 0);
    assert!(
        u(&r["residual_lost"]) <= u(&r["deadline_drops"]) + u(&r["messages_given_up"]),
        "{r}"
    );
    assert!(u(&r["delivered"]) < 2000);
}

#[test]
fn send_reliable_through_a_proxy_impairing_both_directions_agrees_with_recv() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let rjson = dir.path().join("recv.json");
    let pjson = dir.path().join("proxy.json");
    let recv = RecvChild::start(&["--once", "--json", rjson.to_str().unwrap(), "--quiet"]);
    let (proxy, paddr) = start_proxy(&[
        "--listen",
        "127.0.0.1:0",
        "--to",
        &recv.addr,
        "--impair",
        "loss=5%,seed=5",
        "--reverse-impair",
        "loss=5%,seed=6",
        "--interval",
        "0s",
        "--duration",
        "60s",
        "--json",
        pjson.to_str().unwrap(),
    ]);
    let out = run_bounded(
        &[
            "send",
            &paddr,
            "--reliable",
            "--count",
            "2000",
            "--pps",
            "2000",
            "--size",
            "200",
            "--quiet",
            "--json",
            "-",
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = recv.finish(Duration::from_secs(30));
    assert!(status.success());
    let pout = stop_proxy(proxy);
    assert_eq!(pout.status.code(), Some(130));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &v["flows"][0];
    let r = &f["reliable"];
    assert_eq!(r["impaired"], "none", "send's own --impair was not used");
    assert_eq!(u(&r["delivered"]), 2000);
    assert_eq!(u(&r["residual_lost"]), 0);
    check_both_views(f, 2000);
    // The receiver's own report says the same.
    let own: Value = serde_json::from_str(
        std::fs::read_to_string(&rjson)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let mine = &own["flows"][0]["receiver"];
    assert_eq!(mine["reliable"]["delivered"], r["delivered"]);
    assert_eq!(mine["reliable"]["ack_datagrams"], r["ack_datagrams"]);
    assert_eq!(
        mine["reliable"]["data_datagrams"],
        f["receiver"]["reliable"]["data_datagrams"]
    );
    // The ACKs crossed the proxy and its reverse impairment: the raw loss the sender saw
    // includes the proxy's forward drops, and the reverse direction dropped some ACKs.
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&pjson).unwrap()).unwrap();
    let forward_dropped = u(&p["forward"]["impair"]["dropped"]);
    let reverse_dropped = u(&p["reverse"]["impair"]["dropped"]);
    assert!(forward_dropped > 0 && reverse_dropped > 0, "{p}");
    assert!(u(&p["reverse"]["received"]) >= u(&r["ack_datagrams"]));
    assert!(u(&f["receiver"]["stats"]["lost"]) >= forward_dropped.saturating_sub(20));
}

#[test]
fn reliable_options_are_checked() {
    for (args, needle) in [
        (&["--reliable", "--echo"][..], "--echo with --reliable"),
        (&["--reliable", "--size", "40"], "--size 40"),
        (&["--reliable", "sometimes"], "invalid reliable mode"),
        (&["--window", "8"], "--reliable"),
        (&["--reliable", "--window", "0"], "--window 0"),
    ] {
        let mut full = vec!["loopback", "--count", "10"];
        full.extend_from_slice(args);
        let out = run_bounded(&full, Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
