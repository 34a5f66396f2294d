//! What the reports show and their shape, end to end: the return path of `--echo`, the
//! sender's loss log, the NDJSON interval stream, the one JSON document shape, the receiver's
//! own CSV row, and live interval lines of `loopback` and `--flows`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::common::{
    RecvChild, cell, num, read_csv, run_bounded, start_proxy, stop_proxy, udplab, wait_bounded,
};

const LIMIT: Duration = Duration::from_secs(60);

fn stdout_json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "udplab failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

/// Item 8: 30% drop each way through the proxy; the text and the CSV show both directions.
#[test]
fn echo_return_path_loss_is_in_the_text_and_the_csv() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("s.csv");
    let recv = RecvChild::start(&["--once", "--quiet"]);
    let (proxy, paddr) = start_proxy(&[
        "--listen",
        "127.0.0.1:0",
        "--to",
        &recv.addr,
        "--impair",
        "loss=30%,seed=11",
        "--reverse-impair",
        "loss=30%,seed=12",
        "--interval",
        "0s",
        "--duration",
        "60s",
    ]);
    let out = run_bounded(
        &[
            "send",
            &paddr,
            "--count",
            "2000",
            "--pps",
            "2000",
            "--size",
            "100",
            "--echo",
            "--quiet",
            "--csv",
            csv.to_str().unwrap(),
        ],
        LIMIT,
    );
    stop_proxy(proxy);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |label: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in\n{text}"))
            .to_string()
    };
    line("lost (forward path)");
    let echoes = line("echo replies (return path)");
    let return_lost = line("lost (return path)");

    let (h, rows) = read_csv(&csv);
    let sender = rows
        .iter()
        .find(|r| cell(&h, r, "role") == "sender")
        .unwrap();
    let receiver = rows
        .iter()
        .find(|r| cell(&h, r, "role") == "receiver")
        .unwrap();
    let echo_sent = num(&h, sender, "echo_sent");
    let echo_received = num(&h, sender, "echo_received");
    let echo_lost = num(&h, sender, "echo_lost");
    // "Expected" on the return path is the receiver's count of replies sent: one per arrival
    // (the proxy neither duplicates nor delays here, so arrivals are the distinct received).
    assert_eq!(echo_sent, num(&h, sender, "received"));
    assert_eq!(echo_received + echo_lost, echo_sent);
    assert_eq!(num(&h, receiver, "echo_sent"), echo_sent);
    assert_eq!(num(&h, receiver, "echo_lost"), echo_lost);
    assert!(
        echoes.contains(&format!("{echo_received} received")),
        "{echoes}"
    );
    assert!(echoes.contains(&format!("{echo_sent} sent")), "{echoes}");
    assert!(
        return_lost.contains(&format!("{echo_lost} (")),
        "{return_lost}"
    );
    // 30% of ~1400 replies: binomial sd ≈ 1.2 points; the band is five of them each side.
    let return_pct: f64 = cell(&h, sender, "echo_loss_pct").parse().unwrap();
    let forward_pct: f64 = cell(&h, sender, "loss_pct").parse().unwrap();
    assert!((24.0..36.0).contains(&return_pct), "return {return_pct}%");
    assert!(
        (24.0..36.0).contains(&forward_pct),
        "forward {forward_pct}%"
    );
    drop(recv);
}

/// Item 8: duplicates are answered too, so the return path's "sent" is the receiver's own
/// count of replies, not the distinct datagrams it received.
#[test]
fn echo_sent_counts_every_reply_the_receiver_sent() {
    let _net = crate::common::network_shared();
    let out = run_bounded(
        &[
            "loopback",
            "--count",
            "2000",
            "--pps",
            "5000",
            "--impair",
            "dup=20%,seed=3",
            "--echo",
            "--quiet",
            "--json",
            "-",
        ],
        LIMIT,
    );
    let v = stdout_json(&out);
    let flow = &v["flows"][0];
    let rx = &flow["receiver"];
    let st = &rx["stats"];
    assert!(u(&st["duplicates"]) > 0, "dup=20% made no duplicates: {st}");
    assert_eq!(
        u(&rx["echo_sent"]),
        u(&st["received"]) + u(&st["duplicates"]) + u(&st["late"]) + u(&st["stale"])
    );
    assert!(u(&flow["sender"]["echo_replies"]) <= u(&rx["echo_sent"]));
}

/// Item 8: on loopback nothing on the path drops echo replies; whatever the return path lost
/// was dropped by the sender's own receive buffer, and the report says how many.
#[test]
fn return_path_loss_at_the_senders_own_buffer_is_told_apart() {
    let _net = crate::common::network_shared();
    let out = run_bounded(
        &[
            "loopback", "--rate", "max", "--size", "64", "--count", "20000", "--echo", "--rcvbuf",
            "4K", "--quiet", "--json", "-",
        ],
        LIMIT,
    );
    let v = stdout_json(&out);
    let flow = &v["flows"][0];
    let lost = u(&flow["receiver"]["echo_sent"]) - u(&flow["sender"]["echo_replies"]);
    let drops = u(&flow["sender"]["echo_rcvbuf_drops"]);
    // A control datagram (a retried FinAck or result chunk) may be among the buffer's drops.
    assert!(
        lost <= drops && drops <= lost + 10,
        "return path lost {lost}, sender's buffer dropped {drops}"
    );
}

/// Lines of a `run_id,first_seq,last_seq` loss log, header checked.
fn loss_log_rows(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("run_id,first_seq,last_seq"));
    lines.map(String::from).collect()
}

/// Item 10: `send --loss-log` writes the receiver's lost ranges, as the receiver saw them.
#[test]
fn send_loss_log_holds_the_receivers_lost_ranges() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let recv_log = dir.path().join("recv-lost.csv");
    let send_log = dir.path().join("send-lost.csv");
    let recv = RecvChild::start(&[
        "--once",
        "--quiet",
        "--loss-log",
        recv_log.to_str().unwrap(),
    ]);
    let out = run_bounded(
        &[
            "send",
            &recv.addr,
            "--count",
            "3000",
            "--pps",
            "5000",
            "--impair",
            "loss=10%,seed=21",
            "--quiet",
            "--loss-log",
            send_log.to_str().unwrap(),
            "--json",
            "-",
        ],
        LIMIT,
    );
    let v = stdout_json(&out);
    let (status, _) = recv.finish(Duration::from_secs(20));
    assert!(status.success());
    let flow = &v["flows"][0];
    let run_id = flow["run_id"].as_str().unwrap();
    let rows = loss_log_rows(&send_log);
    assert!(!rows.is_empty(), "10% loss gave no lost ranges");
    assert_eq!(rows, loss_log_rows(&recv_log), "the receiver's own log");
    let mut lost = 0;
    for row in &rows {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[0], run_id);
        let (first, last): (u64, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        assert!(first <= last && last < 3000, "{row}");
        lost += last - first + 1;
    }
    assert_eq!(lost, u(&flow["receiver"]["stats"]["lost"]));
    assert_eq!(flow["receiver"]["loss_ranges_not_kept"], 0);
    assert!(
        flow["receiver"].get("loss_ranges").is_none(),
        "the ranges are in the log, not repeated in the JSON"
    );
}

/// Item 11: `--intervals-json -` streams each interval as it closes, one line each.
#[test]
fn intervals_json_streams_a_line_per_interval_as_it_closes() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let mut child = udplab()
        .args([
            "loopback",
            "--duration",
            "2s",
            "--pps",
            "2000",
            "--interval",
            "100ms",
            "--intervals-json",
            "-",
            "--json",
        ])
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let _ = tx.send(());
            lines.push(line);
        }
        lines
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("a first interval line");
    // The first line came while the 2 s test still ran: streamed, not written at the end.
    assert!(child.try_wait().unwrap().is_none(), "udplab already ended");
    let out = wait_bounded(child, LIMIT);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("udplab run"), "the summary goes to stderr");
    let lines = reader.join().unwrap();
    let rows: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let role = |r: &Value| r["role"].as_str().unwrap().to_string();
    let senders: Vec<&Value> = rows.iter().filter(|r| role(r) == "sender").collect();
    let receivers: Vec<&Value> = rows.iter().filter(|r| role(r) == "receiver").collect();
    assert!(senders.len() >= 15, "{} sender rows", senders.len());
    assert!(receivers.len() >= 15, "{} receiver rows", receivers.len());
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let flow = &doc["flows"][0];
    assert!(rows.iter().all(|r| r["run_id"] == flow["run_id"]));
    // Each streamed line is the interval row the report keeps, plus its run_id.
    let without_run_id = |rows: &[&Value]| -> Vec<Value> {
        rows.iter()
            .map(|r| {
                let mut r = (*r).clone();
                r.as_object_mut().unwrap().remove("run_id");
                r
            })
            .collect()
    };
    assert_eq!(
        Value::Array(without_run_id(&senders)),
        flow["sender"]["intervals"]
    );
    assert_eq!(
        Value::Array(without_run_id(&receivers)),
        flow["receiver"]["intervals"]
    );
}

/// Item 11: a reader that goes away (`| head -1`) stops the stream, not the measurement.
#[test]
fn a_closed_interval_stream_does_not_stop_the_run() {
    let _net = crate::common::network_shared();
    let mut child = udplab()
        .args([
            "loopback",
            "--count",
            "1500",
            "--pps",
            "5000",
            "--interval",
            "50ms",
            "--intervals-json",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here: stdout is closed after one line.
    serde_json::from_str::<Value>(&first).expect("one NDJSON line");
    let out = wait_bounded(child, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("udplab run"),
        "the summary still came: {stderr}"
    );
    assert!(
        stderr.matches("--intervals-json").count() <= 2,
        "one warning per writer at most: {stderr}"
    );
}

/// Item 12: one document shape for send/loopback, `--flows`, recv and proxy.
#[test]
fn every_json_document_has_the_header_and_a_flows_array() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let spaced = dir.path().join("a dir");
    std::fs::create_dir(&spaced).unwrap();
    let csv = spaced.join("x.csv");
    let check_header = |v: &Value, schema: &str| {
        assert_eq!(v["version"], 2);
        assert_eq!(v["schema"], schema);
        assert_eq!(v["tool"], "udplab");
        assert_eq!(v["tool_version"], env!("CARGO_PKG_VERSION"));
        let command = v["command"].as_str().unwrap();
        assert!(command.starts_with("udplab "), "{command}");
        command.to_string()
    };

    let one = stdout_json(&run_bounded(
        &[
            "loopback",
            "--count",
            "300",
            "--pps",
            "3000",
            "--quiet",
            "--csv",
            csv.to_str().unwrap(),
            "--json",
            "-",
        ],
        LIMIT,
    ));
    let command = check_header(&one, "udplab.report.v2");
    // Shell-quoted where needed: the path with a space comes back as one word.
    assert!(
        command.contains(&format!("--csv '{}'", csv.display())),
        "{command}"
    );
    assert!(command.contains("--count 300 --pps 3000"), "{command}");
    let flows = one["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 1, "a single run is one flow");
    assert_eq!(flows[0]["sender"]["sent"], 300);
    assert_eq!(one["total"]["sender"]["sent"], 300);
    assert_eq!(
        one["total"]["receiver"]["stats"]["received"],
        flows[0]["receiver"]["stats"]["received"]
    );

    let two = stdout_json(&run_bounded(
        &[
            "loopback", "--flows", "2", "--count", "300", "--pps", "3000", "--quiet", "--json", "-",
        ],
        LIMIT,
    ));
    check_header(&two, "udplab.report.v2");
    assert_eq!(two["flows"].as_array().unwrap().len(), 2);
    assert_eq!(two["total"]["sender"]["sent"], 600);

    // recv: one compact document per test, per line.
    let rjson = dir.path().join("recv.json");
    let pjson = dir.path().join("proxy.json");
    let recv = RecvChild::start(&["--once", "--quiet", "--json", rjson.to_str().unwrap()]);
    let (proxy, paddr) = start_proxy(&[
        "--listen",
        "127.0.0.1:0",
        "--to",
        &recv.addr,
        "--interval",
        "0s",
        "--duration",
        "60s",
        "--json",
        pjson.to_str().unwrap(),
    ]);
    let sent = run_bounded(
        &["send", &paddr, "--count", "200", "--pps", "2000", "--quiet"],
        LIMIT,
    );
    assert!(sent.status.success());
    let (status, _) = recv.finish(Duration::from_secs(20));
    assert!(status.success());
    let text = std::fs::read_to_string(&rjson).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let r: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    check_header(&r, "udplab.report.v2");
    assert_eq!(r["flows"].as_array().unwrap().len(), 1);
    assert!(r["flows"][0]["sender"].is_null());
    assert_eq!(r["flows"][0]["receiver"]["stats"]["expected"], 200);

    // The proxy stops on Ctrl-C (exit code 130) and writes its document then.
    assert_eq!(stop_proxy(proxy).status.code(), Some(130));
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&pjson).unwrap()).unwrap();
    check_header(&p, "udplab.proxy.v2");
    assert!(u(&p["forward"]["received"]) >= 200);
}

/// Item 13: the row `recv` writes names the pattern and the receiver's own address.
#[test]
fn the_receivers_own_row_names_the_pattern_and_its_address() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let recv_csv = dir.path().join("recv.csv");
    let send_csv = dir.path().join("send.csv");
    let recv = RecvChild::start(&["--once", "--quiet", "--csv", recv_csv.to_str().unwrap()]);
    let recv_addr = recv.addr.clone();
    let out = run_bounded(
        &[
            "send",
            &recv.addr,
            "--count",
            "500",
            "--pps",
            "5000",
            "--pattern",
            "poisson",
            "--quiet",
            "--csv",
            send_csv.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert!(out.status.success());
    let (status, _) = recv.finish(Duration::from_secs(20));
    assert!(status.success());
    let (rh, rrows) = read_csv(&recv_csv);
    assert_eq!(cell(&rh, &rrows[0], "pattern"), "poisson");
    assert_eq!(cell(&rh, &rrows[0], "target"), recv_addr);
    // The sender's rows say the same.
    let (sh, srows) = read_csv(&send_csv);
    for row in &srows {
        assert_eq!(cell(&sh, row, "pattern"), "poisson");
        assert_eq!(cell(&sh, row, "target"), recv_addr);
    }
}

/// A live interval line is written whole: `[ start- end s] sent|recv ...`.
fn is_interval_line(line: &str) -> bool {
    line.starts_with('[') && (line.contains(" s] sent ") || line.contains(" s] recv "))
}

/// Item 18: loopback prints the receiver's interval lines live, next to the sender's.
#[test]
fn loopback_prints_live_receiver_interval_lines() {
    let _net = crate::common::network_shared();
    let out = run_bounded(
        &[
            "loopback",
            "--count",
            "1500",
            "--pps",
            "5000",
            "--interval",
            "100ms",
        ],
        LIMIT,
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text.find("udplab run").expect("summary");
    let live = &text[..summary];
    assert!(live.contains("receiver intervals:"), "{text}");
    assert!(live.contains("sender intervals:"), "{text}");
    let recv_lines = live.lines().filter(|l| l.contains(" s] recv ")).count();
    let sent_lines = live.lines().filter(|l| l.contains(" s] sent ")).count();
    assert!(recv_lines >= 3, "{recv_lines} receiver lines:\n{text}");
    assert!(sent_lines >= 3, "{sent_lines} sender lines:\n{text}");
    for line in live.lines().filter(|l| l.starts_with('[')) {
        assert!(is_interval_line(line), "mangled line {line:?}");
    }
}

/// Item 18: `--flows N` prints one summed line per interval while the flows run.
#[test]
fn flows_print_one_progress_line_per_interval() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("flows.json");
    let out = run_bounded(
        &[
            "loopback",
            "--flows",
            "2",
            "--count",
            "1000",
            "--pps",
            "4000",
            "--interval",
            "100ms",
            "--json",
            json.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let table = text.find("flow ").expect("the flows table");
    let live = &text[..table];
    assert!(live.contains("intervals of all 2 flows"), "{text}");
    let lines: Vec<&str> = live.lines().filter(|l| l.starts_with('[')).collect();
    assert!(lines.len() >= 2, "{text}");
    assert!(lines.iter().all(|l| is_interval_line(l)), "{text}");
    let sent: u64 = lines
        .iter()
        .map(|l| {
            let after = l.split(" sent ").nth(1).unwrap().trim_start();
            after
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    // Summed over both flows, every sender row shows up once.
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let kept: u64 = doc["flows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["sender"]["intervals"].as_array().unwrap())
        .map(|r| u(&r["sent"]))
        .sum();
    assert_eq!(sent, kept, "{text}");
    // Only the summed lines: no per-flow or receiver lines.
    assert!(!live.contains(" s] recv "), "{text}");
}
