//! `--reliable` with `--flows N` over real loopback sockets: every flow's reliable figures in
//! the text, the JSON and the CSV, a total combined from the flows' counts, thresholds judged on
//! what the application side got, and the send options the reliable sender cannot honor
//! refused.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::common::{cell, read_csv, run_bounded};

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// One `udplab loopback --reliable --flows 2 ...` run writing its JSON and CSV into `dir`.
struct FlowsRun {
    out: Output,
    json: Value,
    csv: PathBuf,
}

fn run_flows(args: &[&str], dir: &Path) -> FlowsRun {
    let json = dir.join("flows.json");
    let csv = dir.join("flows.csv");
    let mut full = vec![
        "loopback",
        "--reliable",
        "--flows",
        "2",
        "--size",
        "200",
        "--pps",
        "2000",
        "-i",
        "0",
    ];
    full.extend_from_slice(args);
    full.extend_from_slice(&[
        "--json",
        json.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    let out = run_bounded(&full, Duration::from_secs(120));
    let json = serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "{args:?} wrote no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    }))
    .unwrap();
    FlowsRun { out, json, csv }
}

fn sum(flows: &[Value], field: &str) -> u64 {
    flows.iter().map(|f| u(&f["reliable"][field])).sum()
}

#[test]
fn every_flow_delivers_everything_and_the_total_is_the_sum_of_the_flows() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let count = 1500u64;
    // --max-loss 0%: judged on the messages never delivered, it passes although the path lost
    // datagrams (the raw loss, below).
    let run = run_flows(
        &[
            "--count",
            &count.to_string(),
            "--impair",
            "loss=5%,seed=11",
            "--max-loss",
            "0%",
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&run.out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&run.out.stderr).to_string();
    assert!(run.out.status.success(), "{stdout}\n{stderr}");
    let flows = run.json["flows"].as_array().unwrap().clone();
    assert_eq!(flows.len(), 2);
    for (i, f) in flows.iter().enumerate() {
        let r = &f["reliable"];
        assert_eq!(r["receiver_results"], true, "flow {i}");
        assert_eq!(u(&r["messages"]), count, "flow {i}");
        assert_eq!(u(&r["delivered"]), count, "flow {i}: residual loss 0");
        assert_eq!(u(&r["residual_lost"]), 0, "flow {i}");
        assert!(
            r.get("flows_combined").is_none(),
            "flow {i}: its own report"
        );
        // The path lost datagrams, which the layer recovered: a --max-loss 0% on the raw
        // loss would have failed.
        assert!(u(&f["receiver"]["stats"]["lost"]) > 0, "flow {i}");
        assert!(u(&r["retransmissions"]) > 0, "flow {i}");
        assert_eq!(f["thresholds"][0]["name"], "max_loss");
        assert_eq!(f["thresholds"][0]["measured"], 0.0);
        assert_eq!(f["verdict"], "pass");
    }
    // The total: each count the sum of the flows', each share recomputed from the sums.
    let total = &run.json["total"];
    let t = &total["reliable"];
    assert_eq!(u(&t["flows_combined"]), 2);
    assert_eq!(t["mode"], "ordered");
    assert_eq!(t["impaired"], "data+acks");
    for field in [
        "messages",
        "delivered",
        "residual_lost",
        "retransmissions",
        "rexmit_packet_threshold",
        "rexmit_time_threshold",
        "rexmit_pto",
        "spurious_retransmissions",
        "duplicate_arrivals",
        "data_datagrams",
        "data_bytes",
        "ack_datagrams",
        "ack_bytes",
        "deadline_drops",
        "messages_given_up",
    ] {
        assert_eq!(u(&t[field]), sum(&flows, field), "total {field}");
    }
    assert_eq!(u(&t["messages"]), 2 * count);
    let share = |part: &str, whole: &str| u(&t[part]) as f64 / u(&t[whole]) as f64;
    assert_eq!(
        t["retransmissions_per_message"].as_f64().unwrap(),
        share("retransmissions", "messages")
    );
    assert_eq!(
        t["ack_byte_share"].as_f64().unwrap(),
        share("ack_bytes", "data_bytes")
    );
    assert_eq!(t["residual_loss"].as_f64().unwrap(), 0.0);
    // No percentile of the total (the flows' histograms are not there to merge).
    assert!(t["latency_ordered"].is_null(), "{t}");
    assert_eq!(total["thresholds"][0]["measured"], 0.0);
    assert_eq!(total["verdict"], "pass");

    // CSV: every flow's rows carry its reliable cells, the total's the combined counts.
    let (header, rows) = read_csv(&run.csv);
    assert_eq!(
        rows.len(),
        6,
        "sender and receiver rows of 2 flows and the total"
    );
    for (i, f) in flows.iter().enumerate() {
        let run_id = f["run_id"].as_str().unwrap();
        let mine: Vec<_> = rows
            .iter()
            .filter(|r| cell(&header, r, "run_id") == run_id)
            .collect();
        assert_eq!(mine.len(), 2, "flow {i}");
        for row in mine {
            let c = |column: &str| cell(&header, row, column).to_string();
            assert_eq!(c("reliable_mode"), "ordered");
            assert_eq!(c("messages"), count.to_string());
            assert_eq!(c("delivered"), count.to_string());
            assert_eq!(c("residual_lost"), "0");
            assert_eq!(c("residual_loss_pct"), "0.0000");
            assert_eq!(
                c("retransmissions"),
                f["reliable"]["retransmissions"].to_string()
            );
            for filled in [
                "retransmissions_per_message",
                "duplicate_arrivals_per_message",
                "ack_byte_pct",
                "goodput_bps",
                "delivery_ordered_p99_us",
                "delivery_ordered_max_us",
                "srtt_us",
            ] {
                assert!(!c(filled).is_empty(), "flow {i}: {filled} is empty");
            }
        }
    }
    let total_rows: Vec<_> = rows
        .iter()
        .filter(|r| cell(&header, r, "run_id") == "total-2")
        .collect();
    assert_eq!(total_rows.len(), 2);
    for row in total_rows {
        let c = |column: &str| cell(&header, row, column).to_string();
        assert_eq!(c("messages"), (2 * count).to_string());
        assert_eq!(c("delivered"), (2 * count).to_string());
        assert_eq!(c("retransmissions"), t["retransmissions"].to_string());
        assert_eq!(c("ack_datagrams"), t["ack_datagrams"].to_string());
        // Per flow only: empty, never an average.
        assert_eq!(c("delivery_ordered_p99_us"), "");
        assert_eq!(c("srtt_us"), "");
    }

    // Text: the datagram table says what its loss is, the reliable table has every flow and
    // the total, and the total's missing percentile is explained.
    assert!(
        stdout.contains("lost % is the raw loss of the path before recovery"),
        "{stdout}"
    );
    assert!(
        stdout.contains("reliable ordered: impairment on data and ACKs"),
        "{stdout}"
    );
    let reliable_table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("reliable ordered"))
        .collect();
    let row = |name: &str| -> Vec<&str> {
        reliable_table
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no reliable row {name}: {stdout}"))
            .split_whitespace()
            .collect()
    };
    for (i, f) in flows.iter().enumerate() {
        let cells = row(&i.to_string());
        assert_eq!(
            cells[1..5],
            [&*count.to_string(), &*count.to_string(), "0", "0.000"]
        );
        assert_eq!(cells[5], f["reliable"]["retransmissions"].to_string());
    }
    let total_cells = row("total");
    assert_eq!(total_cells[1], (2 * count).to_string());
    assert_eq!(total_cells[2], (2 * count).to_string());
    assert_eq!(total_cells[5], t["retransmissions"].to_string());
    assert_eq!(total_cells[10..12], ["-", "(1)"]);
    assert!(
        stdout.contains("percentiles of flows cannot be combined"),
        "{stdout}"
    );
}

#[test]
fn max_loss_judges_each_flow_and_the_total_on_residual_loss() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    // One transmission per message: every message the path drops is given up, so residual
    // loss is what the impairment dropped, and the threshold must fail on it.
    let run = run_flows(
        &[
            "--count",
            "600",
            "--impair",
            "loss=20%,seed=3",
            "--max-transmissions",
            "1",
            "--max-loss",
            "1%",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&run.out.stderr).to_string();
    assert_eq!(run.out.status.code(), Some(1), "{stderr}");
    let flows = run.json["flows"].as_array().unwrap();
    let mut lost = 0;
    for (i, f) in flows.iter().enumerate() {
        let r = &f["reliable"];
        let residual = u(&r["residual_lost"]);
        assert!(residual > 0, "flow {i}: nothing given up");
        assert_eq!(u(&r["messages"]), 600);
        let check = &f["thresholds"][0];
        assert_eq!(check["name"], "max_loss");
        let measured = check["measured"].as_f64().unwrap();
        assert!(
            (measured - 100.0 * residual as f64 / 600.0).abs() < 1e-9,
            "flow {i}: {measured} is not its residual loss {residual}/600"
        );
        assert_eq!(f["verdict"], "fail");
        lost += residual;
    }
    // The total's loss: summed residual over summed messages, not an average of the flows'.
    let total = &run.json["total"];
    assert_eq!(u(&total["reliable"]["residual_lost"]), lost);
    let measured = total["thresholds"][0]["measured"].as_f64().unwrap();
    assert!(
        (measured - 100.0 * lost as f64 / 1200.0).abs() < 1e-9,
        "total {measured} vs {lost}/1200"
    );
    assert_eq!(total["verdict"], "fail");
    assert!(
        stderr.contains("total: threshold failed: residual loss (messages never delivered)"),
        "{stderr}"
    );
}

#[test]
fn send_options_the_reliable_sender_cannot_honor_are_refused() {
    for (args, named) in [
        (&["--send-mode", "gso"][..], "--send-mode gso"),
        (&["--send-mode", "mmsg"][..], "--send-mode mmsg"),
        (&["--batch", "8"][..], "--batch 8"),
        (&["--batch", "32"][..], "--batch 32"),
    ] {
        for command in [&["loopback"][..], &["send", "127.0.0.1:9"][..]] {
            let mut full = command.to_vec();
            full.extend_from_slice(&["--reliable", "--count", "10"]);
            full.extend_from_slice(args);
            let out = run_bounded(&full, Duration::from_secs(30));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{full:?}: {stderr}");
            assert!(
                stderr.contains(named) && stderr.contains("cannot be combined with --reliable"),
                "{full:?}: {stderr}"
            );
        }
    }
}

#[test]
fn the_plain_send_mode_is_what_the_reliable_sender_does_and_is_accepted() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("plain.json");
    let out = run_bounded(
        &[
            "loopback",
            "--reliable",
            "--send-mode",
            "plain",
            "--count",
            "20",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["flows"][0]["sender"]["send_mode"], "plain");
    assert_eq!(u(&v["flows"][0]["reliable"]["delivered"]), 20);
}
