//! Impairment end to end over real loopback sockets: the receiver's accounting against the
//! impairment's own log, run-to-run repeatability, delay percentiles, and the proxy.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::common::{RecvChild, run_bounded, udplab, wait_bounded};

/// Sequences the impairment log marks with `fate` (drop, qdrop, dup, hold).
fn fates(path: &Path, fate: &str) -> BTreeSet<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .filter(|(_, f)| *f == fate)
        .map(|(s, _)| s.parse().unwrap())
        .collect()
}

/// Every sequence in the receiver's loss log (`run_id,first_seq,last_seq` ranges).
fn lost(path: &Path) -> BTreeSet<u64> {
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

fn loopback_json(
    args: &[&str],
    dir: &Path,
    tag: &str,
) -> (Value, std::path::PathBuf, std::path::PathBuf) {
    let json = dir.join(format!("{tag}.json"));
    let ilog = dir.join(format!("{tag}.impair.csv"));
    let llog = dir.join(format!("{tag}.lost.csv"));
    let mut full = vec!["loopback", "--quiet", "--size", "64", "--rcvbuf", "4M"];
    full.extend_from_slice(args);
    let (j, i, l) = (
        json.to_str().unwrap(),
        ilog.to_str().unwrap(),
        llog.to_str().unwrap(),
    );
    full.extend_from_slice(&["--json", j, "--impair-log", i, "--loss-log", l]);
    let out = run_bounded(&full, Duration::from_secs(90));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (v, ilog, llog)
}

#[test]
fn loopback_losses_and_duplicates_equal_the_impairment_log_and_repeat_exactly() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--count",
        "20000",
        "--pps",
        "20000",
        "--impair",
        "loss=5%,dup=1%,seed=11",
    ];
    let mut previous: Option<BTreeSet<u64>> = None;
    for run in 0..2 {
        let (v, ilog, llog) = loopback_json(&args, dir.path(), &format!("run{run}"));
        let rx = &v["flows"][0]["receiver"];
        assert_eq!(
            rx["rcvbuf_drops"], 0,
            "loopback itself dropped: the premise failed"
        );
        let dropped = fates(&ilog, "drop");
        let lost_seqs = lost(&llog);
        assert!(!dropped.is_empty());
        assert_eq!(lost_seqs, dropped, "lost = dropped, datagram by datagram");
        let st = &rx["stats"];
        assert_eq!(st["lost"].as_u64().unwrap(), dropped.len() as u64);
        assert_eq!(
            st["duplicates"].as_u64().unwrap(),
            fates(&ilog, "dup").len() as u64
        );
        let counters = &v["flows"][0]["sender"]["impair_counters"];
        assert_eq!(counters["dropped"].as_u64().unwrap(), dropped.len() as u64);
        if let Some(prev) = &previous {
            assert_eq!(prev, &lost_seqs, "same seed, same lost sequences");
        }
        previous = Some(lost_seqs);
    }
}

#[test]
fn held_back_datagrams_are_exactly_the_reordered_ones() {
    let _net = crate::common::network_shared();
    // Without loss, a held datagram is always overtaken (it waits for a later one), and no
    // other datagram is: the receiver's RFC 4737 count must equal the holds.
    let dir = tempfile::tempdir().unwrap();
    let (v, ilog, _) = loopback_json(
        &[
            "--count",
            "10000",
            "--pps",
            "20000",
            "--impair",
            "reorder=3%:2,dup=1%,seed=5",
        ],
        dir.path(),
        "reorder",
    );
    let holds = fates(&ilog, "hold");
    let st = &v["flows"][0]["receiver"]["stats"];
    assert!(!holds.is_empty());
    assert_eq!(st["reordered"].as_u64().unwrap(), holds.len() as u64);
    assert_eq!(
        st["duplicates"].as_u64().unwrap(),
        fates(&ilog, "dup").len() as u64
    );
    assert_eq!(st["lost"], 0);
}

#[test]
fn five_percent_loss_over_200k_datagrams_is_within_bounds_and_repeatable() {
    let _net = crate::common::network_shared();
    // The check: loss=5%,seed=1 over 200000 datagrams at 50000/s.
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--count",
        "200000",
        "--pps",
        "50000",
        "--impair",
        "loss=5%,seed=1",
    ];
    let (a, _, la) = loopback_json(&args, dir.path(), "a");
    let (b, _, lb) = loopback_json(&args, dir.path(), "b");
    for v in [&a, &b] {
        let st = &v["flows"][0]["receiver"]["stats"];
        let pct = 100.0 * st["lost"].as_f64().unwrap() / st["expected"].as_f64().unwrap();
        assert!((4.8..=5.2).contains(&pct), "loss {pct}%");
    }
    assert_eq!(lost(&la), lost(&lb));
}

#[test]
fn delay_and_jitter_show_up_as_one_way_latency() {
    let _net = crate::common::network_exclusive();
    let out = run_bounded(
        &[
            "loopback",
            "--quiet",
            "--count",
            "3000",
            "--pps",
            "1000",
            "--size",
            "100",
            "--impair",
            "delay=20ms,jitter=5ms,seed=4",
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
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lat = &v["flows"][0]["receiver"]["stats"]["latency"];
    let ms = |k: &str| lat[k].as_f64().unwrap() / 1e6;
    // When this fails, the emulator's own lateness tells whether the machine was overloaded.
    let late = &v["flows"][0]["sender"]["impair_release_lateness"];
    let why = format!(
        "emulator release lateness p50 {} ns, p99 {} ns",
        late["p50_ns"], late["p99_ns"]
    );
    // Uniform 15..25 ms: the delay is added after the send timestamp, so it can only add.
    assert!(ms("min_ns") >= 15.0, "min {}; {why}", ms("min_ns"));
    assert!(
        (ms("p50_ns") - 20.0).abs() <= 1.0,
        "p50 {}; {why}",
        ms("p50_ns")
    );
    assert!(
        (ms("p90_ns") - 24.0).abs() <= 1.0,
        "p90 {}; {why}",
        ms("p90_ns")
    );
    // Jitter reorders datagrams, as it would on a real path.
    assert!(
        v["flows"][0]["receiver"]["stats"]["reordered"]
            .as_u64()
            .unwrap()
            > 0
    );
}

/// Starts `udplab proxy` and reads its listening address from the first stdout line.
fn start_proxy(args: &[&str]) -> (Child, String) {
    let mut child = udplab()
        .arg("proxy")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let addr = line
        .strip_prefix("proxy listening on ")
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("unexpected {line:?}"))
        .to_string();
    (child, addr)
}

#[test]
fn proxy_relays_an_unmodified_test_and_its_drops_are_the_loss() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let pjson = dir.path().join("proxy.json");
    let recv = RecvChild::start(&["--once"]);
    let (proxy, paddr) = start_proxy(&[
        "--listen",
        "127.0.0.1:0",
        "--to",
        &recv.addr,
        "--impair",
        "loss=10%,seed=5",
        "--interval",
        "0s",
        "--duration",
        "60s",
        "--json",
        pjson.to_str().unwrap(),
    ]);
    let out = run_bounded(
        &[
            "send", &paddr, "--count", "5000", "--pps", "5000", "--size", "100", "--quiet",
            "--json", "-",
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SAFETY: plain kill(2) of our own child.
    unsafe {
        libc::kill(proxy.id() as libc::pid_t, libc::SIGINT);
    }
    let pout = wait_bounded(proxy, Duration::from_secs(20));
    assert_eq!(pout.status.code(), Some(130));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&pjson).unwrap()).unwrap();
    let st = &v["flows"][0]["receiver"]["stats"];
    let lost = st["lost"].as_u64().unwrap();
    assert_eq!(st["received"].as_u64().unwrap() + lost, 5000);
    // What the proxy lost: its impairment's drops plus any drops at its own receive buffer.
    let dropped = p["forward"]["impair"]["dropped"].as_u64().unwrap()
        + p["forward"]["rcvbuf_drops"].as_u64().unwrap();
    // The proxy drops control datagrams too (they are retried): at most a handful.
    assert!(
        lost <= dropped && dropped <= lost + 20,
        "lost {lost}, proxy dropped {dropped}"
    );
    assert!((300..=700).contains(&lost), "10% of 5000, got {lost}");
    assert!(p["forward"]["received"].as_u64().unwrap() >= 5000);
    assert_eq!(p["forward"]["send_errors"], 0);
    drop(recv);
}
