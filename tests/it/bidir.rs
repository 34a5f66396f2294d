//! Bidirectional tests (`send --bidir`): both directions at once over loopback and through
//! `udplab proxy` with a different impairment per direction (each direction loses exactly its
//! own impairment's drops), Ctrl-C on either side, and the help text.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::{
    RecvChild, cell, read_csv, run_bounded, start_proxy, stop_proxy, wait_bounded,
};
use crate::reverse::{check_direction, help, interrupt, json_of, long_run_receiving};

/// The forward and the reverse report of a `--bidir` JSON document.
fn directions(v: &Value) -> (&Value, &Value) {
    let flows = v["flows"].as_array().expect("flows");
    assert_eq!(flows.len(), 2, "one report per direction");
    assert_eq!(flows[0]["direction"], "forward");
    assert_eq!(flows[1]["direction"], "reverse");
    assert!(v.get("total").is_none(), "the directions are not summed");
    (&flows[0], &flows[1])
}

/// A direction's sent, received and lost (the sender's total, the receiver's counts).
fn counts(run: &Value) -> (u64, u64, u64) {
    let st = &run["receiver"]["stats"];
    (
        run["sender"]["sent"].as_u64().expect("sent"),
        st["received"].as_u64().unwrap(),
        st["lost"].as_u64().unwrap(),
    )
}

/// The lost sequences of a `--bidir` loss log, forward then reverse (the reverse ranges follow
/// the `# <run id>: reverse direction` line).
fn lost_by_direction(path: &Path) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let text = std::fs::read_to_string(path).unwrap();
    let (mut fwd, mut rev) = (BTreeSet::new(), BTreeSet::new());
    let mut reverse = false;
    for line in text.lines().skip(1) {
        if line.starts_with('#') {
            reverse |= line.ends_with(": reverse direction");
            continue;
        }
        let f: Vec<u64> = line
            .split(',')
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        let set = if reverse { &mut rev } else { &mut fwd };
        set.extend(f[0]..=f[1]);
    }
    assert!(reverse, "the reverse direction is marked: {text}");
    (fwd, rev)
}

#[test]
fn bidir_over_loopback_counts_each_direction_exactly_and_reports_both() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bidir.csv");
    let recv_csv = dir.path().join("recv.csv");
    let recv = RecvChild::start(&["--once", "--csv", recv_csv.to_str().unwrap()]);
    let out = run_bounded(
        &[
            "send",
            &recv.addr,
            "--bidir",
            "--count",
            "3000",
            "--pps",
            "3000",
            "--size",
            "100",
            "--quiet",
            "--json",
            "-",
            "--csv",
            csv.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let v = json_of(&out);
    let (fwd, rev) = directions(&v);
    for (what, run) in [("forward", fwd), ("reverse", rev)] {
        let (sent, received, lost) = counts(run);
        assert_eq!(sent, 3000, "{what}: the whole count was sent");
        assert_eq!(received + lost, sent, "{what}: sent == received + lost");
        assert_eq!(run["interrupted"], false, "{what}");
        // Loopback loses only what a buffer drops.
        assert!(
            lost <= run["receiver"]["rcvbuf_drops"].as_u64().unwrap_or(0),
            "{what}: lost {lost}"
        );
    }
    assert_eq!(fwd["run_id"], rev["run_id"], "one test, one handshake");
    // The text goes to stderr with JSON on stdout: two labelled blocks.
    let text = String::from_utf8_lossy(&out.stderr);
    let f = text.find("forward: this side sent").expect("forward block");
    let r = text
        .find("reverse: the receiver sent")
        .expect("reverse block");
    assert!(f < r, "{text}");
    // CSV: a sender and a receiver row per direction.
    let (header, rows) = read_csv(&csv);
    assert_eq!(rows.len(), 4);
    let dirs: Vec<(&str, &str)> = rows
        .iter()
        .map(|row| (cell(&header, row, "direction"), cell(&header, row, "role")))
        .collect();
    assert_eq!(
        dirs,
        [
            ("forward", "sender"),
            ("forward", "receiver"),
            ("reverse", "sender"),
            ("reverse", "receiver"),
        ]
    );
    for row in &rows {
        assert_eq!(cell(&header, row, "sent"), "3000");
    }
    // The receiver reports both of its halves: what it measured and what it sent.
    let (status, text) = recv.finish(Duration::from_secs(30));
    assert!(status.success(), "{text}");
    let (header, rows) = read_csv(&recv_csv);
    let mut roles: Vec<(&str, &str)> = rows
        .iter()
        .map(|row| (cell(&header, row, "role"), cell(&header, row, "direction")))
        .collect();
    roles.sort();
    assert_eq!(roles, [("receiver", "forward"), ("sender", "reverse")]);
}

#[test]
fn loopback_bidir_runs_both_directions_in_one_command() {
    let _net = crate::common::network_shared();
    let out = run_bounded(
        &[
            "loopback", "--bidir", "--count", "2000", "--pps", "4000", "--size", "64", "--quiet",
            "--json", "-",
        ],
        Duration::from_secs(60),
    );
    let v = json_of(&out);
    let (fwd, rev) = directions(&v);
    for run in [fwd, rev] {
        let (sent, received, lost) = counts(run);
        assert_eq!(sent, 2000);
        assert_eq!(received + lost, 2000);
    }
}

#[test]
fn each_direction_of_a_bidir_test_loses_exactly_its_own_impairments_drops() {
    let _net = crate::common::network_shared();
    let (fwd_spec, rev_spec, n) = ("loss=8%,seed=5", "loss=3%,seed=11", 3000u64);
    let dir = tempfile::tempdir().unwrap();
    let pjson = dir.path().join("proxy.json");
    let loss_log = dir.path().join("loss.csv");
    let recv = RecvChild::start(&["--once"]);
    let (proxy, paddr) = start_proxy(&[
        "--listen",
        "127.0.0.1:0",
        "--to",
        &recv.addr,
        "--impair",
        fwd_spec,
        "--reverse-impair",
        rev_spec,
        "--interval",
        "0s",
        "--duration",
        "120s",
        "--json",
        pjson.to_str().unwrap(),
    ]);
    let count = n.to_string();
    let out = run_bounded(
        &[
            "send",
            &paddr,
            "--bidir",
            "--count",
            &count,
            "--pps",
            "3000",
            "--size",
            "100",
            "--quiet",
            "--json",
            "-",
            "--loss-log",
            loss_log.to_str().unwrap(),
        ],
        Duration::from_secs(90),
    );
    let pout = stop_proxy(proxy);
    assert_eq!(pout.status.code(), Some(130));
    let v = json_of(&out);
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&pjson).unwrap()).unwrap();
    drop(recv);
    let (fwd, rev) = directions(&v);
    let (lost_fwd, lost_rev) = lost_by_direction(&loss_log);
    for (what, run, lost, spec) in [
        ("forward", fwd, &lost_fwd, fwd_spec),
        ("reverse", rev, &lost_rev, rev_spec),
    ] {
        let (sent, received, lost_count) = counts(run);
        assert_eq!(sent, n, "{what}");
        assert_eq!(received + lost_count, n, "{what}: sent == received + lost");
        assert_eq!(
            lost_count,
            lost.len() as u64,
            "{what}: the log has every loss"
        );
        let others = p[what]["rcvbuf_drops"].as_u64().unwrap()
            + p[what]["send_errors"].as_u64().unwrap()
            + run["receiver"]["rcvbuf_drops"].as_u64().unwrap_or(0)
            + run["sender"]["send_errors"].as_u64().unwrap();
        check_direction(what, spec, lost, n, others, &p[what]);
    }
    // Different seeds and rates: the two directions' losses are not one pattern.
    assert_ne!(lost_fwd, lost_rev);
}

/// An interrupted `--bidir` run's two directions: each (sent, received + lost).
fn interrupted_directions(json: &Path) -> [(u64, u64); 2] {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let (fwd, rev) = directions(&v);
    [fwd, rev].map(|run| {
        assert_eq!(run["interrupted"], true);
        let (sent, received, lost) = counts(run);
        (sent, received + lost)
    })
}

#[test]
fn ctrl_c_at_the_bidir_client_stops_both_directions_and_loses_nothing() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let recv = RecvChild::start(&["--once"]);
    let (child, lines) = long_run_receiving(&recv.addr, "--bidir", &json);
    interrupt(child.id());
    let out = wait_bounded(child, Duration::from_secs(30));
    lines.finish();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, (sent, accounted)) in interrupted_directions(&json).into_iter().enumerate() {
        assert!(sent > 0 && sent < 60_000, "direction {i}: sent {sent}");
        assert_eq!(accounted, sent, "direction {i}: sent == received + lost");
    }
    // The receiver ended both halves and exits (--once).
    let (status, _) = recv.finish(Duration::from_secs(30));
    assert!(status.success());
}

#[test]
fn ctrl_c_at_the_receiver_ends_both_directions_and_their_results_reach_the_client() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let mut recv = RecvChild::start(&[]);
    let (child, lines) = long_run_receiving(&recv.addr, "--bidir", &json);
    let rx = recv.child.take().unwrap();
    interrupt(rx.id());
    let rx_out = wait_bounded(rx, Duration::from_secs(30));
    assert_eq!(rx_out.status.code(), Some(130));
    let out = wait_bounded(child, Duration::from_secs(30));
    lines.finish();
    assert_eq!(
        out.status.code(),
        Some(130),
        "the run was cut short: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let [(fwd_sent, fwd_seen), (rev_sent, rev_accounted)] = interrupted_directions(&json);
    assert!(rev_sent > 0 && rev_sent < 60_000, "reverse sent {rev_sent}");
    assert_eq!(rev_accounted, rev_sent, "reverse: sent == received + lost");
    // The receiver measured the forward Data up to its interruption: what it saw is within
    // what was sent (the client kept sending until the results came).
    assert!(
        fwd_seen > 0 && fwd_seen <= fwd_sent,
        "{fwd_seen} of {fwd_sent}"
    );
}

#[test]
fn help_shows_bidir_with_an_example_and_refuses_what_it_cannot_do() {
    let text = help(&["send", "--help"]);
    assert!(text.contains("--bidir"), "{text}");
    assert!(
        text.contains("Example: udplab send 192.0.2.7 --bidir --rate 20M --duration 10s"),
        "{text}"
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains("udplab send 192.0.2.7 --bidir"),
        "README shows --bidir"
    );
    for extra in [&["--echo"][..], &["-R"], &["--rate", "max"], &["-P", "2"]] {
        let mut args = vec!["send", "127.0.0.1:9", "--bidir", "--count", "10"];
        args.extend_from_slice(extra);
        let out = run_bounded(&args, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{extra:?} is refused");
    }
}

#[test]
fn thresholds_are_judged_per_direction_and_say_which() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    // Without --echo no RTT is measured in either direction: incomplete (exit 3), once each.
    let out = run_bounded(
        &[
            "loopback",
            "--bidir",
            "--count",
            "500",
            "--pps",
            "2000",
            "--quiet",
            "--max-rtt-p99",
            "1ms",
            "--json",
            json.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    for direction in ["forward", "reverse"] {
        assert!(
            stderr.contains(&format!(
                "udplab: {direction}: threshold not judged: --max-rtt-p99"
            )),
            "{stderr}"
        );
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let (fwd, rev) = directions(&v);
    for run in [fwd, rev] {
        assert_eq!(run["verdict"], "incomplete");
        assert_eq!(run["thresholds"][0]["name"], "max_rtt_p99");
    }
}
