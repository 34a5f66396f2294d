//! Reverse tests (`send -R`) over loopback and through `udplab proxy` with a different
//! impairment per direction, a stranger's reverse request (no data for it), the receiver's
//! limits, Ctrl-C on either side, and the help text.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use udplab::impair::{Fate, ImpairSpec, Impairment};
use udplab::wire::{self, Hello, HelloPattern, Message};

use crate::common::{
    LineWatch, RecvChild, cell, read_csv, run_bounded, start_proxy, stop_proxy, udplab,
    wait_bounded,
};

/// Every sequence in a loss log (`run_id,first_seq,last_seq` ranges).
fn lost_seqs(path: &Path) -> BTreeSet<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .flat_map(|l| {
            let f: Vec<u64> = l.split(',').skip(1).map(|x| x.parse().unwrap()).collect();
            f[0]..=f[1]
        })
        .collect()
}

/// For each of the first `n` datagrams a direction's impairment is offered, whether `spec`
/// drops it: the proxy's engine, fed the same sequence.
pub(crate) fn drops(spec: &str, n: usize) -> Vec<bool> {
    let spec: ImpairSpec = spec.parse().unwrap();
    let mut imp: Impairment<()> = Impairment::new(&spec);
    let now = udplab::time::now();
    (0..n)
        .map(|_| matches!(imp.handle(now, 100, ()), Fate::Dropped))
        .collect()
}

pub(crate) fn json_of(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn reverse_over_loopback_counts_exactly_and_both_sides_report_it() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rev.csv");
    let recv_csv = dir.path().join("recv.csv");
    let recv = RecvChild::start(&["--once", "--csv", recv_csv.to_str().unwrap()]);
    let out = run_bounded(
        &[
            "send",
            &recv.addr,
            "-R",
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
    let run = &v["flows"][0];
    assert_eq!(run["direction"], "reverse");
    assert_eq!(
        run["sender"]["sent"], 3000,
        "the receiver's total came back"
    );
    let st = &run["receiver"]["stats"];
    let (received, lost) = (
        st["received"].as_u64().unwrap(),
        st["lost"].as_u64().unwrap(),
    );
    assert_eq!(received + lost, 3000, "sent == received + lost");
    assert_eq!(st["expected"], 3000);
    // Loopback loses only what a buffer drops, and says so.
    assert_eq!(lost, run["receiver"]["rcvbuf_drops"].as_u64().unwrap());
    let (header, rows) = read_csv(&csv);
    assert_eq!(header[84], "direction", "column 85 (results/README.md)");
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(cell(&header, row, "direction"), "reverse");
        assert_eq!(cell(&header, row, "sent"), "3000");
    }
    let (status, text) = recv.finish(Duration::from_secs(30));
    assert!(status.success());
    assert!(
        text.contains(": reverse, sending 100 B datagrams"),
        "{text}"
    );
    // The receiver's own report: one sender row, its sending.
    let (header, rows) = read_csv(&recv_csv);
    assert_eq!(rows.len(), 1);
    assert_eq!(cell(&header, &rows[0], "role"), "sender");
    assert_eq!(cell(&header, &rows[0], "sent"), "3000");
    assert_eq!(cell(&header, &rows[0], "direction"), "reverse");
}

#[test]
fn loopback_reverse_runs_the_whole_test_in_one_command() {
    let _net = crate::common::network_shared();
    let out = run_bounded(
        &[
            "loopback", "-R", "--count", "2000", "--pps", "4000", "--size", "64", "--quiet",
            "--json", "-",
        ],
        Duration::from_secs(60),
    );
    let v = json_of(&out);
    let run = &v["flows"][0];
    assert_eq!(run["direction"], "reverse");
    assert_eq!(run["sender"]["sent"], 2000);
    let st = &run["receiver"]["stats"];
    assert_eq!(
        st["received"].as_u64().unwrap() + st["lost"].as_u64().unwrap(),
        2000
    );
    // A forward run's JSON does not name a direction (it is unchanged).
    let out = run_bounded(
        &[
            "loopback", "--count", "100", "--pps", "1000", "--quiet", "--json", "-",
        ],
        Duration::from_secs(60),
    );
    let v = json_of(&out);
    assert!(v["flows"][0].get("direction").is_none());
}

/// Runs `send` (with `reverse`: `send -R`) through a proxy impairing the forward direction
/// with `fwd` and the reverse one with `rev`; returns the run's JSON, its loss log and the
/// proxy's JSON.
fn through_proxy(reverse: bool, fwd: &str, rev: &str, count: u64) -> (Value, BTreeSet<u64>, Value) {
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
        fwd,
        "--reverse-impair",
        rev,
        "--interval",
        "0s",
        "--duration",
        "120s",
        "--json",
        pjson.to_str().unwrap(),
    ]);
    let count = count.to_string();
    let mut args = vec![
        "send",
        &paddr,
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
    ];
    if reverse {
        args.push("-R");
    }
    let out = run_bounded(&args, Duration::from_secs(90));
    let pout = stop_proxy(proxy);
    assert_eq!(pout.status.code(), Some(130));
    let v = json_of(&out);
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&pjson).unwrap()).unwrap();
    drop(recv);
    (v, lost_seqs(&loss_log), p)
}

/// The data's lost sequences against the impairment's fates: the handshake's two datagrams
/// (Hello and its cookie retry one way, the two HelloAcks the other) come first in each
/// direction, then the Data in sequence order. Every datagram the impairment dropped is lost,
/// and what else is lost is exactly what a socket buffer dropped (counted) or failed to send.
pub(crate) fn check_direction(
    what: &str,
    spec: &str,
    lost: &BTreeSet<u64>,
    count: u64,
    other_losses: u64,
    proxy_dir: &Value,
) {
    let fates = drops(spec, count as usize + 2);
    assert!(
        !fates[0] && !fates[1],
        "{what}: the seed of {spec} drops a handshake datagram; pick another"
    );
    let expected: BTreeSet<u64> = (0..count).filter(|&i| fates[i as usize + 2]).collect();
    assert!(
        expected.len() > count as usize / 50,
        "{what}: {spec} drops something"
    );
    assert!(
        expected.is_subset(lost),
        "{what}: the impairment dropped {:?} which arrived",
        expected.difference(lost).take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        (lost.len() - expected.len()) as u64,
        other_losses,
        "{what}: lost {} = the impairment's {} + the buffers' drops and send errors",
        lost.len(),
        expected.len()
    );
    // The proxy dropped at least the Data's share in that direction (control it dropped
    // afterwards was retried).
    assert!(proxy_dir["impair"]["dropped"].as_u64().unwrap() >= expected.len() as u64);
}

#[test]
fn each_direction_loses_exactly_what_its_own_impairment_drops() {
    let _net = crate::common::network_shared();
    let (fwd, rev, n) = ("loss=8%,seed=5", "loss=3%,seed=11", 3000u64);
    // The reverse test: the receiver's Data crosses the proxy's reverse direction.
    let (v, lost, p) = through_proxy(true, fwd, rev, n);
    let run = &v["flows"][0];
    assert_eq!(run["direction"], "reverse");
    assert_eq!(run["sender"]["sent"], n);
    let st = &run["receiver"]["stats"];
    assert_eq!(
        st["received"].as_u64().unwrap() + st["lost"].as_u64().unwrap(),
        n
    );
    assert_eq!(st["lost"].as_u64().unwrap(), lost.len() as u64);
    let others = p["reverse"]["rcvbuf_drops"].as_u64().unwrap()
        + p["reverse"]["send_errors"].as_u64().unwrap()
        + run["receiver"]["rcvbuf_drops"].as_u64().unwrap()
        + run["sender"]["send_errors"].as_u64().unwrap();
    check_direction("reverse", rev, &lost, n, others, &p["reverse"]);
    // The same two impairments on a forward test: its Data crosses the forward direction and
    // loses what the other impairment drops.
    let (v, lost, p) = through_proxy(false, fwd, rev, n);
    let run = &v["flows"][0];
    assert!(run.get("direction").is_none());
    let others = p["forward"]["rcvbuf_drops"].as_u64().unwrap()
        + p["forward"]["send_errors"].as_u64().unwrap()
        + run["receiver"]["rcvbuf_drops"].as_u64().unwrap()
        + run["sender"]["send_errors"].as_u64().unwrap();
    check_direction("forward", fwd, &lost, n, others, &p["forward"]);
}

#[test]
fn a_reverse_request_from_an_unvalidated_address_gets_no_data() {
    let _net = crate::common::network_shared();
    let recv = RecvChild::start(&["--once"]);
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent_bytes = 0;
    for cookie in [0, 0x0123_4567_89ab_cdef] {
        // A reverse test as a stranger asks for it: without a valid cookie (it cannot read the
        // retry answer sent to the address it forges; here it guesses one).
        let hello = Hello {
            session_id: 0x0bad_f00d,
            payload_size: 1400,
            echo: false,
            loss_ranges: false,
            reverse: true,
            bidir: false,
            multicast: false,
            pattern: HelloPattern::Cbr,
            interval_ns: 1_000_000_000,
            tmax_ns: 1_000_000_000,
            count: 0,
            duration_ns: 10_000_000_000,
            rate_bps: 11_200_000,
            pps_milli: 1_000_000,
            cookie,
            marking: Default::default(),
            omit_ns: 0,
            reliable: None,
        };
        let mut bytes = Vec::new();
        Message::Hello(hello).emit(&mut bytes);
        sent_bytes += stranger.send_to(&bytes, &recv.addr).unwrap();
    }
    // A real reverse test runs to its end meanwhile (the stranger's Hellos were handled
    // before it: one socket, in order).
    let out = run_bounded(
        &[
            "send", &recv.addr, "-R", "--count", "1000", "--pps", "2000", "--size", "100",
            "--quiet", "--json", "-",
        ],
        Duration::from_secs(60),
    );
    let v = json_of(&out);
    assert_eq!(v["flows"][0]["sender"]["sent"], 1000);
    let (status, _) = recv.finish(Duration::from_secs(30));
    assert!(status.success());
    // All the stranger got: one retry answer per Hello, never larger than it.
    stranger.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    while let Ok(n) = stranger.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    assert_eq!(got.len(), 2, "{got:?}");
    let got_bytes: usize = got.iter().map(Vec::len).sum();
    assert!(got_bytes <= sent_bytes, "{got_bytes} > {sent_bytes}");
    for g in &got {
        assert!(
            matches!(wire::parse(g), Ok(Message::HelloAck(_))),
            "no data: {g:?}"
        );
    }
}

#[test]
fn a_reverse_test_beyond_the_receivers_limit_is_refused_with_the_reason() {
    let _net = crate::common::network_shared();
    let recv = RecvChild::start(&["--max-reverse-rate", "1M"]);
    let out = run_bounded(
        &[
            "send",
            &recv.addr,
            "-R",
            "--rate",
            "10M",
            "--duration",
            "1s",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("up to 1000000 bit/s (recv --max-reverse-rate)"),
        "{err}"
    );
    // Options a reverse test cannot honour are usage errors, before any datagram.
    for (extra, name) in [
        ("--echo", "--echo"),
        ("--impair=loss=1%", "--impair"),
        ("--flows=2", "--flows"),
        ("--rate=max", "--rate max"),
    ] {
        let out = run_bounded(
            &["send", &recv.addr, "-R", "--count", "10", extra],
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), Some(2), "{extra}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("--reverse cannot be combined with {name}")),
            "{err}"
        );
    }
}

/// Starts `send DIRECTION` (`-R` or `--bidir`) for a long test and waits until it has printed
/// a receiver interval line with data in it (the receiver's Data flows).
pub(crate) fn long_run_receiving(
    addr: &str,
    direction: &str,
    json: &Path,
) -> (std::process::Child, LineWatch) {
    let mut child = udplab()
        .args([
            "send",
            addr,
            direction,
            "--duration",
            "60s",
            "--pps",
            "1000",
            "--size",
            "100",
            "--interval",
            "200ms",
            "--tmax",
            "200ms",
            "--json",
        ])
        .arg(json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = LineWatch::new(child.stdout.take().unwrap());
    lines.wait_for(
        1,
        |l| l.starts_with('[') && l.contains(" recv ") && !l.contains(" recv        0 "),
        Duration::from_secs(30),
    );
    (child, lines)
}

pub(crate) fn interrupt(pid: u32) {
    // SAFETY: plain kill(2) of our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGINT);
    }
}

/// What an interrupted reverse run reported: the receiver's total, and received + lost.
fn interrupted_counts(json: &Path) -> (u64, u64) {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let run = &v["flows"][0];
    assert_eq!(run["interrupted"], true);
    assert_eq!(run["direction"], "reverse");
    let sent = run["sender"]["sent"]
        .as_u64()
        .expect("the receiver's total");
    let st = &run["receiver"]["stats"];
    (
        sent,
        st["received"].as_u64().unwrap() + st["lost"].as_u64().unwrap(),
    )
}

#[test]
fn ctrl_c_at_the_client_stops_the_data_and_loses_none() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let recv = RecvChild::start(&["--once"]);
    let (child, lines) = long_run_receiving(&recv.addr, "-R", &json);
    interrupt(child.id());
    let out = wait_bounded(child, Duration::from_secs(30));
    lines.finish();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (sent, accounted) = interrupted_counts(&json);
    assert!(
        sent > 0 && sent < 60_000,
        "sent {sent}: the receiver stopped"
    );
    assert_eq!(accounted, sent, "sent == received + lost");
    // The receiver ended the test and exits (--once).
    let (status, _) = recv.finish(Duration::from_secs(30));
    assert!(status.success());
}

#[test]
fn ctrl_c_at_the_receiver_stops_the_data_and_its_total_reaches_the_client() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let mut recv = RecvChild::start(&[]);
    let (child, lines) = long_run_receiving(&recv.addr, "-R", &json);
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
    let (sent, accounted) = interrupted_counts(&json);
    assert!(sent > 0 && sent < 60_000, "sent {sent}");
    assert_eq!(accounted, sent, "sent == received + lost");
}

/// Help text with its line wrapping undone.
pub(crate) fn help(args: &[&str]) -> String {
    let out = run_bounded(args, Duration::from_secs(30));
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn help_shows_the_reverse_options_with_examples() {
    let text = help(&["send", "--help"]);
    assert!(text.contains("-R, --reverse"), "{text}");
    assert!(
        text.contains("Example: udplab send 192.0.2.7 -R --rate 20M --duration 10s"),
        "{text}"
    );
    let text = help(&["recv", "--help"]);
    assert!(text.contains("--max-reverse-rate"), "{text}");
    assert!(
        text.contains("Example: udplab recv --max-reverse-rate 1G"),
        "{text}"
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains("udplab send 192.0.2.7 -R"),
        "README shows -R"
    );
    assert!(
        readme.contains("--max-reverse-rate"),
        "README names the limit"
    );
}
