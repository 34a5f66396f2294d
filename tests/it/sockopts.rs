//! `--dscp`/`--tos`, `--ttl`, `--df` and `send --bind` over loopback: the marking set on send is
//! the one the receiver saw (IP_RECVTOS / IP_RECVTTL on `lo`), in the JSON, the CSV and the text.

use std::net::UdpSocket;
use std::time::Duration;

use serde_json::Value;

use crate::common::{RecvChild, cell, network_shared, read_csv, run_bounded};

const LIMIT: Duration = Duration::from_secs(30);

fn json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).expect("json written");
    serde_json::from_str(&text).expect("valid json")
}

#[test]
fn dscp_and_ttl_set_on_send_are_seen_on_receive() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let send_json = dir.path().join("send.json");
    let csv = dir.path().join("runs.csv");
    let recv = RecvChild::start(&["--once", "--quiet", "--dscp", "AF41"]);
    let out = run_bounded(
        &[
            "send",
            &recv.addr,
            "--count",
            "300",
            "--pps",
            "3000",
            "--dscp",
            "EF",
            "--ttl",
            "9",
            "--echo",
            "--json",
            send_json.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
        ],
        LIMIT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = recv.finish(LIMIT);
    assert!(status.success());

    let doc = json(&send_json);
    let flow = &doc["flows"][0];
    assert_eq!(flow["sender"]["tos"], 0xb8, "read back from the socket");
    assert_eq!(flow["sender"]["ttl"], 9);
    let received = flow["receiver"]["stats"]["received"].as_u64().unwrap();
    assert!(received > 0);
    let m = &flow["receiver"]["marking"];
    assert_eq!(m["tos_sent"], 0xb8, "announced in the Hello");
    assert_eq!(m["ttl_sent"], 9);
    // Every counted Data datagram (duplicates included: none on lo) had the marking sent.
    assert_eq!(m["dscp_kept"].as_u64(), Some(received));
    assert_eq!(m["dscp_remarked"], 0);
    assert_eq!(
        m["tos_received"],
        serde_json::json!([{"tos": 184, "dscp": 46, "ecn": 0, "count": received}])
    );
    assert_eq!(
        m["ttl_received"],
        serde_json::json!([{"ttl": 9, "count": received}])
    );

    let (header, rows) = read_csv(&csv);
    for row in &rows {
        assert_eq!(cell(&header, row, "dscp_sent"), "46");
        assert_eq!(cell(&header, row, "dscp_kept"), received.to_string());
        assert_eq!(cell(&header, row, "dscp_remarked"), "0");
        assert_eq!(
            cell(&header, row, "tos_received"),
            format!("184:{received}")
        );
        assert_eq!(cell(&header, row, "ttl_received"), format!("9:{received}"));
    }
    let squeezed = |label: &str| {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in {text}"));
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert_eq!(
        squeezed("DSCP kept / re-marked"),
        format!("DSCP kept / re-marked EF (46) (TOS 0xb8) {received} / 0")
    );
    assert_eq!(
        squeezed("TTL sent / received"),
        format!("TTL sent / received 9 9 ×{received}")
    );
}

#[test]
fn tos_with_ecn_bits_over_ipv6_loopback() {
    let _net = network_shared();
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipping: no IPv6 loopback");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let send_json = dir.path().join("send.json");
    let out = run_bounded(
        &[
            "loopback",
            "--ipv6",
            "--count",
            "200",
            "--pps",
            "2000",
            "--tos",
            "0x21",
            "-q",
            "--json",
            send_json.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&send_json);
    let flow = &doc["flows"][0];
    let received = flow["receiver"]["stats"]["received"].as_u64().unwrap();
    let m = &flow["receiver"]["marking"];
    // TOS 0x21 = DSCP 8 (CS1) with ECN ECT(1): the traffic class arrives whole.
    assert_eq!(
        m["tos_received"],
        serde_json::json!([{"tos": 33, "dscp": 8, "ecn": 1, "count": received}])
    );
    assert_eq!(m["dscp_kept"].as_u64(), Some(received));
    // No --ttl: the hop limit the receiver saw is still reported (the route's default).
    assert_eq!(m["ttl_sent"], Value::Null);
    assert_eq!(m["ttl_received"].as_array().map(Vec::len), Some(1));
}

#[test]
fn df_reports_the_path_mtu_of_loopback() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let send_json = dir.path().join("send.json");
    let out = run_bounded(
        &[
            "loopback",
            "--count",
            "50",
            "--pps",
            "1000",
            "--df",
            "-q",
            "--json",
            send_json.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flow = &json(&send_json)["flows"][0];
    assert_eq!(flow["sender"]["df"], true);
    assert_eq!(flow["sender"]["send_errors_emsgsize"], 0);
    // lo's MTU (65536 on Linux) bounds what a --df sender may send here.
    let mtu = flow["sender"]["path_mtu"].as_u64().expect("path MTU read");
    assert!(mtu >= 1280, "{mtu}");
}

#[test]
fn bind_sets_the_source_address_and_port() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let send_json = dir.path().join("send.json");
    // A port the kernel just handed out and took back: free, never a fixed number.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let source = format!("127.0.0.1:{port}");
    let recv = RecvChild::start(&["--once", "--quiet"]);
    let out = run_bounded(
        &[
            "send",
            &recv.addr,
            "--bind",
            &source,
            "--count",
            "20",
            "--pps",
            "1000",
            "-q",
            "--json",
            send_json.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = recv.finish(LIMIT);
    let flow = &json(&send_json)["flows"][0];
    assert_eq!(
        flow["receiver"]["peer"],
        source.as_str(),
        "the receiver saw our source"
    );
}

#[test]
fn bind_refuses_a_foreign_address_or_the_other_family() {
    // No receiver needed: both are refused before anything is sent.
    let out = run_bounded(
        &[
            "send",
            "127.0.0.1:5210",
            "--bind",
            "192.0.2.1",
            "--count",
            "1",
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--bind 192.0.2.1:0: address 192.0.2.1:0 is not available on this host"),
        "{err}"
    );
    let out = run_bounded(
        &["send", "127.0.0.1:5210", "--bind", "::1", "--count", "1"],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("an IPv6 source cannot reach the IPv4 target"),
        "{err}"
    );
}

#[test]
fn marking_options_are_validated_and_documented() {
    for (args, needle) in [
        (&["--dscp", "EF", "--tos", "4"][..], "cannot be used with"),
        (&["--dscp", "64"], "0..=63"),
        (&["--dscp", "AF44"], "0..=63"),
        (&["--tos", "256"], "0..=255"),
        (&["--ttl", "0"], "1..=255"),
    ] {
        let mut argv = vec!["send", "127.0.0.1:5210"];
        argv.extend_from_slice(args);
        let out = run_bounded(&argv, LIMIT);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let help = run_bounded(&["send", "--help"], LIMIT);
    let help = String::from_utf8_lossy(&help.stdout);
    for example in [
        "--dscp EF",
        "--tos 0xb8",
        "--ttl 3",
        "--df --size 1472",
        "--bind 192.0.2.1:6000",
    ] {
        assert!(help.contains(example), "{example} missing from send --help");
    }
    let help = run_bounded(&["recv", "--help"], LIMIT);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("udplab recv --dscp EF"), "{help}");
}

/// `recv --dscp` marks what the receiver sends: its answer to a Hello arrives AF41-marked.
#[test]
fn recv_dscp_marks_the_receivers_replies() {
    use udplab::net::RecvBatch;
    use udplab::net::sockopts::enable_receive_marks;
    use udplab::wire::{self, Hello, HelloMarking, HelloPattern, Message};

    let _net = network_shared();
    let recv = RecvChild::start(&["--quiet", "--dscp", "AF41"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(&recv.addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    enable_receive_marks(&client).unwrap();
    let mut hello = Vec::new();
    Message::Hello(Hello {
        session_id: 0x5eed_0001,
        payload_size: 1200,
        echo: false,
        loss_ranges: false,
        reverse: false,
        bidir: false,
        multicast: false,
        pattern: HelloPattern::Cbr,
        interval_ns: 1_000_000_000,
        tmax_ns: 1_000_000_000,
        count: 10,
        duration_ns: 0,
        rate_bps: 0,
        pps_milli: 10_000,
        cookie: 0,
        marking: HelloMarking::default(),
        omit_ns: 0,
        reliable: None,
    })
    .emit(&mut hello);
    client.send(&hello).unwrap();
    let mut batch = RecvBatch::new(1, 2048);
    let n = batch.recv(&client).expect("the receiver answers the Hello");
    assert_eq!(n, 1);
    let (reply, meta) = batch.get(0);
    assert!(matches!(wire::parse(reply), Ok(Message::HelloAck(_))));
    assert_eq!(meta.tos, Some(34 << 2), "AF41 on the receiver's reply");
    // Not --once: ended here (its Drop kills it).
    drop(recv);
}
