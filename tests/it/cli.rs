//! CLI tests: the built binary over loopback, its reports, its errors and exit codes.

use std::time::Duration;

use serde_json::Value;

use crate::common::{LineWatch, RecvChild, cell, num, read_csv, run_bounded, udplab};

/// A live sender interval line that counted datagrams: `[   0.00-   0.20 s] sent      201 ...`.
fn is_sender_interval_with_data(line: &str) -> bool {
    line.split_once("] sent")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

const REQUIRED_COLUMNS: &str = "run_id,role,target,payload_bytes,duration_s,sent,received,lost,loss_pct,duplicates,reordered,reordered_pct,reorder_extent_max,loss_periods,loss_period_max,jitter_us,ipdv_p50_us,ipdv_p99_us,latency_min_us,latency_p50_us,latency_p90_us,latency_p99_us,latency_p999_us,latency_max_us,rtt_p50_us,rtt_p99_us,rate_target_bps,rate_achieved_bps,send_errors,sndbuf_bytes,rcvbuf_bytes";

#[test]
fn recv_and_send_write_both_rows_with_every_datagram_accounted() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("r.csv");
    let json = dir.path().join("r.json");
    let recv_csv = dir.path().join("recv.csv");
    let recv = RecvChild::start(&["--once", "--csv", recv_csv.to_str().unwrap()]);
    let out = run_bounded(
        &[
            "send",
            &recv.addr,
            "--pps",
            "20000",
            "--size",
            "200",
            "--count",
            "50000",
            "--csv",
            csv.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "send failed: {stderr}");
    let (status, _) = recv.finish(Duration::from_secs(20));
    assert!(status.success());

    let (header, rows) = read_csv(&csv);
    let required: Vec<&str> = REQUIRED_COLUMNS.split(',').collect();
    assert_eq!(
        &header[..required.len()],
        &required[..],
        "stable leading columns"
    );
    assert_eq!(rows.len(), 2, "one sender and one receiver row");
    let roles: Vec<&str> = rows.iter().map(|r| cell(&header, r, "role")).collect();
    assert_eq!(roles, ["sender", "receiver"]);
    for row in &rows {
        assert_eq!(num(&header, row, "sent"), 50_000);
        assert_eq!(
            num(&header, row, "received") + num(&header, row, "lost"),
            50_000
        );
        assert_eq!(num(&header, row, "payload_bytes"), 200);
        assert_eq!(
            cell(&header, row, "run_id"),
            cell(&header, &rows[0], "run_id")
        );
    }
    // The receiver wrote its own view too, with the same run id.
    let (rh, rrows) = read_csv(&recv_csv);
    assert_eq!(rrows.len(), 1);
    assert_eq!(cell(&rh, &rrows[0], "role"), "receiver");
    assert_eq!(
        cell(&rh, &rrows[0], "run_id"),
        cell(&header, &rows[0], "run_id")
    );

    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(v["flows"][0]["sender"]["sent"], 50_000);
    let st = &v["flows"][0]["receiver"]["stats"];
    assert_eq!(st["expected"], 50_000);
    assert_eq!(
        st["received"].as_u64().unwrap() + st["lost"].as_u64().unwrap(),
        50_000
    );
    assert_eq!(st["duplicates"], 0, "loopback never duplicates");
    // One-way latency is measured for every datagram received.
    assert_eq!(
        st["latency"]["count"].as_u64().unwrap(),
        st["received"].as_u64().unwrap()
    );
}

#[test]
fn appending_keeps_one_header_and_a_foreign_header_is_refused() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("runs.csv");
    for _ in 0..2 {
        let out = run_bounded(
            &[
                "loopback",
                "--count",
                "300",
                "--pps",
                "3000",
                "--quiet",
                "--csv",
                csv.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("run_id,")).count(), 1);
    assert_eq!(text.lines().count(), 5, "header + 2 runs × 2 roles");

    let other = dir.path().join("other.csv");
    std::fs::write(&other, "a,b,c\n1,2,3\n").unwrap();
    let out = run_bounded(
        &[
            "loopback",
            "--count",
            "100",
            "--pps",
            "1000",
            "--quiet",
            "--csv",
            other.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(&other).unwrap(),
        "a,b,c\n1,2,3\n",
        "file untouched"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("header"), "{stderr}");
}

#[test]
fn loopback_prints_a_full_report_and_echo_gives_rtt() {
    let _net = crate::common::network_shared();
    let out = run_bounded(
        &[
            "loopback",
            "--duration",
            "1s",
            "--pps",
            "2000",
            "--size",
            "100",
            "--echo",
            "--interval",
            "500ms",
        ],
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for label in ["sent", "received", "lost", "jitter", "RTT", "one-way"] {
        assert!(stdout.contains(label), "report lacks {label}:\n{stdout}");
    }

    let out = run_bounded(
        &[
            "loopback", "--count", "2000", "--pps", "4000", "--echo", "--json", "-",
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is pure JSON");
    let rtt = &v["flows"][0]["sender"]["rtt"];
    assert!(rtt["count"].as_u64().unwrap() > 0, "{v}");
    assert!(rtt["p50_ns"].as_u64().unwrap() > 0);
    assert_eq!(v["flows"][0]["sender"]["echo_replies"], rtt["count"]);
}

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    let _net = crate::common::network_shared();
    let cases: &[&[&str]] = &[
        &["send", "127.0.0.1:9", "--rate", "0"],
        &["send", "127.0.0.1:9", "--rate", "10X"],
        &["send", "127.0.0.1:9", "--size", "10"],
        &["send", "127.0.0.1:9", "--size", "70000"],
        &["send", "127.0.0.1:9", "--duration", "-1s"],
        &["send", "127.0.0.1:9", "--pattern", "zigzag"],
        &["send", "999.1.1.1:5210", "--count", "1"],
        &["send", "127.0.0.1:99999", "--count", "1"],
        &["recv", "--bind", "not-an-address:x"],
        &["loopback", "--impair", "loss=120%"],
        &["loopback", "--impair", "bogus=1"],
    ];
    for args in cases {
        let out = run_bounded(args, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.trim().is_empty(), "{args:?} gave no message");
    }
}

#[test]
fn port_in_use_and_absent_receiver_fail_fast_with_exit_2() {
    let _net = crate::common::network_shared();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_bounded(&["recv", "--bind", &addr], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));

    // Nobody listens on the address we just freed: a clear error within seconds, not a hang.
    drop(taken);
    let out = run_bounded(&["send", &addr, "--count", "10"], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&addr), "{stderr}");
}

#[test]
fn thresholds_turn_a_run_into_a_check() {
    let _net = crate::common::network_shared();
    let common = [
        "loopback",
        "--count",
        "2000",
        "--pps",
        "20000",
        "--quiet",
        "--impair",
        "loss=20%,seed=3",
    ];
    let out = run_bounded(
        &[&common[..], &["--max-loss", "1%"]].concat(),
        Duration::from_secs(30),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-loss"));
    let out = run_bounded(
        &[&common[..], &["--max-loss", "50%"]].concat(),
        Duration::from_secs(30),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn foreign_datagrams_are_counted_and_ignored() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let recv = RecvChild::start(&["--once"]);
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..50u8 {
        junk.send_to(&[i; 40], &recv.addr).unwrap();
    }
    let out = run_bounded(
        &[
            "send",
            &recv.addr,
            "--count",
            "1000",
            "--pps",
            "5000",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // Sent before the test started: not this test's (issue 7: a test's report counts what
    // arrived during its own time; tests/it/hostile.rs counts junk sent during a test).
    assert_eq!(v["flows"][0]["receiver"]["foreign_datagrams"], 0);
    let st = &v["flows"][0]["receiver"]["stats"];
    assert_eq!(
        st["received"].as_u64().unwrap() + st["lost"].as_u64().unwrap(),
        1000
    );
    assert_eq!(st["duplicates"], 0);
    drop(recv);
}

#[test]
fn interrupt_reports_what_was_measured() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let mut child = udplab()
        .args([
            "loopback",
            "--duration",
            "60s",
            "--pps",
            "1000",
            "--interval",
            "200ms",
            "--json",
        ])
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once data is flowing: the sender has closed an interval with datagrams in it.
    let stdout = LineWatch::new(child.stdout.take().unwrap());
    stdout.wait_for(1, is_sender_interval_with_data, Duration::from_secs(30));
    // SAFETY: plain kill(2) of our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = crate::common::wait_bounded(child, Duration::from_secs(20));
    stdout.finish();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["flows"][0]["interrupted"], true);
    let sent = v["flows"][0]["sender"]["sent"].as_u64().unwrap();
    assert!(sent > 0 && sent < 60_000, "sent {sent}");
    let st = &v["flows"][0]["receiver"]["stats"];
    assert_eq!(
        st["expected"].as_u64().unwrap(),
        sent,
        "the totals still reached the receiver"
    );
    assert_eq!(
        st["received"].as_u64().unwrap() + st["lost"].as_u64().unwrap(),
        sent
    );
}

#[test]
fn help_has_examples() {
    let _net = crate::common::network_shared();
    let out = run_bounded(&["--help"], Duration::from_secs(10));
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("Examples:") && s.contains("udplab loopback"));
    let out = run_bounded(&["proxy", "--help"], Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Gilbert-Elliott"));
}

#[test]
fn parallel_flows_report_each_flow_and_their_total() {
    let _net = crate::common::network_shared();
    let out = run_bounded(
        &[
            "loopback", "--flows", "3", "--count", "3000", "--pps", "3000", "--size", "100",
            "--json", "-",
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let flows = v["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 3);
    let ids: std::collections::BTreeSet<&str> = flows
        .iter()
        .map(|f| f["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "each flow is its own session");
    let mut received = 0;
    for f in flows {
        assert_eq!(f["sender"]["sent"], 3000);
        let st = &f["receiver"]["stats"];
        assert_eq!(
            st["received"].as_u64().unwrap() + st["lost"].as_u64().unwrap(),
            3000
        );
        received += st["received"].as_u64().unwrap();
    }
    let total = &v["total"];
    assert_eq!(total["sender"]["sent"], 9000);
    assert_eq!(
        total["receiver"]["stats"]["received"].as_u64().unwrap(),
        received
    );
}

#[test]
fn ipv6_loopback_works_where_present() {
    let _net = crate::common::network_shared();
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipping: no IPv6 loopback here");
        return;
    }
    let out = run_bounded(
        &[
            "loopback", "--ipv6", "--count", "500", "--pps", "5000", "--json", "-",
        ],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["flows"][0]["target"]
            .as_str()
            .unwrap()
            .starts_with("[::1]:")
    );
    let st = &v["flows"][0]["receiver"]["stats"];
    assert_eq!(
        st["received"].as_u64().unwrap() + st["lost"].as_u64().unwrap(),
        500
    );
}

#[test]
fn interrupting_the_receiver_writes_its_view_and_stops_the_sender() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let rjson = dir.path().join("recv.json");
    let recv = RecvChild::start(&["--once", "--quiet", "--json", rjson.to_str().unwrap()]);
    let mut sender = udplab()
        .args([
            "send",
            &recv.addr,
            "--duration",
            "60s",
            "--pps",
            "1000",
            "--interval",
            "200ms",
            "--json",
            "-",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once three intervals carried data (about 600 datagrams sent; the JSON on
    // stdout moves the text to stderr).
    let stderr = LineWatch::new(sender.stderr.take().unwrap());
    stderr.wait_for(3, is_sender_interval_with_data, Duration::from_secs(30));
    let pid = recv.child.as_ref().unwrap().id();
    // SAFETY: plain kill(2) of our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGINT);
    }
    let (status, _) = recv.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(130));
    let line = std::fs::read_to_string(&rjson).unwrap();
    let r: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(r["flows"][0]["interrupted"], true);
    let got = r["flows"][0]["receiver"]["stats"]["received"]
        .as_u64()
        .unwrap();
    assert!(got > 100, "received {got}");
    // The receiver's Abort ends the sender well before its 60 s.
    let out = crate::common::wait_bounded(sender, Duration::from_secs(20));
    stderr.finish();
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["flows"][0]["interrupted"], true);
    assert!(s["flows"][0]["sender"]["sent"].as_u64().unwrap() < 30_000);
}

#[test]
fn receive_buffer_overflow_is_told_apart_exactly() {
    let _net = crate::common::network_shared();
    // A tiny receive buffer and an unpaced sender: on loopback the only place datagrams can be
    // dropped is our socket, so every lost datagram must show up as a receive-buffer drop.
    let recv = RecvChild::start(&["--once", "--quiet", "--rcvbuf", "4K"]);
    let out = run_bounded(
        &[
            "send", &recv.addr, "--rate", "max", "--size", "64", "--count", "20000", "--quiet",
            "--json", "-",
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rx = &v["flows"][0]["receiver"];
    let tx = &v["flows"][0]["sender"];
    let lost = rx["stats"]["lost"].as_u64().unwrap();
    assert!(lost > 0, "a 4 KiB buffer should overflow: {v}");
    assert_eq!(rx["stats"]["received"].as_u64().unwrap() + lost, 20_000);
    // Every datagram lost on loopback was dropped at the receiver's buffer, unless its send
    // failed. The socket's drop count also holds the control datagrams that met the full
    // buffer (a Fin sent right behind the data, retried 200 ms later): at most all of them.
    let at_buffer = lost - tx["send_errors"].as_u64().unwrap();
    let drops = rx["rcvbuf_drops"].as_u64().unwrap();
    let control = tx["control_sent"].as_u64().unwrap();
    assert!(
        at_buffer <= drops && drops <= at_buffer + control,
        "data lost at the buffer {at_buffer}, socket drops {drops}, control datagrams {control}"
    );
    drop(recv);
}
