//! A hand-made hostile client (its own UDP socket, datagrams built byte by byte from the wire
//! format documented in `src/wire.rs`) next to a real `udplab send` → `udplab recv` test over
//! loopback: the real test's counts stay exact, its exit code is unaffected, and the stranger
//! never gets more bytes back than it sent (issue 7's attack table).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::common::{network_shared, udplab, wait_bounded};

const LIMIT: Duration = Duration::from_secs(60);

// ----- datagrams by the documented offsets (wire version 2) -----

fn prefix(kind: u8, id: u32) -> Vec<u8> {
    let mut b = vec![0x55, 0x44, 2, kind];
    b.extend_from_slice(&id.to_be_bytes());
    b
}

fn u64s(mut b: Vec<u8>, fields: &[u64]) -> Vec<u8> {
    for f in fields {
        b.extend_from_slice(&f.to_be_bytes());
    }
    b
}

/// Hello (72 bytes): payload_size, flags, interval, tmax, count, duration, rate, pps_milli, cookie.
fn hello(id: u32, tmax_ns: u64, pps_milli: u64, cookie: u64) -> Vec<u8> {
    let mut b = prefix(16, id);
    b.extend_from_slice(&1200u32.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    u64s(b, &[1_000_000_000, tmax_ns, 0, 0, 0, pps_milli, cookie])
}

/// Fin (40 bytes): total_sent, total_bytes, send_errors, secret.
fn fin(id: u32, total: u64, secret: u64) -> Vec<u8> {
    u64s(prefix(18, id), &[total, total * 1200, 0, secret])
}

/// Abort (24 bytes): reason, 7 reserved, secret.
fn abort(id: u32, reason: u8, secret: u64) -> Vec<u8> {
    let mut b = prefix(22, id);
    b.extend_from_slice(&[reason, 0, 0, 0, 0, 0, 0, 0]);
    u64s(b, &[secret])
}

/// ResultReq (16 bytes): secret.
fn result_req(id: u32, secret: u64) -> Vec<u8> {
    u64s(prefix(20, id), &[secret])
}

/// Data (24 bytes, no padding): seq, send_ns.
fn data(id: u32, seq: u64) -> Vec<u8> {
    u64s(prefix(1, id), &[seq, 0])
}

/// A stranger's socket that keeps count of what it sent and what came back.
struct Stranger {
    sock: UdpSocket,
    to: SocketAddr,
    sent_bytes: u64,
    received_bytes: u64,
    next_sentinel: u32,
}

/// A HelloAck as the stranger reads it: status, reason, retry_after_s, cookie, secret.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ack {
    status: u8,
    reason: u8,
    cookie: u64,
    secret: u64,
}

fn ack_of(b: &[u8]) -> Option<Ack> {
    if b.len() < 44 || b[..3] != [0x55, 0x44, 2] || b[3] != 17 {
        return None;
    }
    let long = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    Some(Ack {
        status: b[8],
        reason: b[9],
        cookie: long(20),
        secret: long(28),
    })
}

impl Stranger {
    fn new(to: &str) -> Stranger {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Stranger {
            sock,
            to: to.parse().unwrap(),
            sent_bytes: 0,
            received_bytes: 0,
            next_sentinel: 0xFFFF_FF00,
        }
    }

    fn send(&mut self, b: &[u8]) {
        self.sock.send_to(b, self.to).unwrap();
        self.sent_bytes += b.len() as u64;
    }

    /// Everything the receiver answered to what was sent so far: a cookie-less Hello goes last,
    /// and the receiver handles datagrams in order, so once its retry is back every earlier
    /// answer is in (no sleeping and guessing). Returns the answers before it.
    fn answers(&mut self) -> Vec<Vec<u8>> {
        let id = self.next_sentinel;
        self.next_sentinel += 1;
        self.send(&hello(id, 1_000_000_000, 1_000_000, 0));
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..10_000 {
            let (n, from) = self
                .sock
                .recv_from(&mut buf)
                .expect("the receiver answers a Hello");
            assert_eq!(from, self.to);
            self.received_bytes += n as u64;
            let b = buf[..n].to_vec();
            if b.len() >= 8 && b[3] == 17 && b[4..8] == id.to_be_bytes() {
                assert_eq!(ack_of(&b).map(|a| a.status), Some(3), "a retry");
                return got;
            }
            got.push(b);
        }
        panic!("no answer to the sentinel");
    }

    /// A validated Hello: the first gets a cookie, the second carries it. Returns the answer.
    fn validated_hello(&mut self, id: u32, tmax_ns: u64, pps_milli: u64) -> Ack {
        self.send(&hello(id, tmax_ns, pps_milli, 0));
        let first = self.answers();
        assert_eq!(first.len(), 1, "one answer to a Hello");
        let retry = ack_of(&first[0]).expect("a HelloAck");
        assert_eq!(retry.status, 3, "a first Hello is answered with a retry");
        self.send(&hello(id, tmax_ns, pps_milli, retry.cookie));
        let second = self.answers();
        assert_eq!(second.len(), 1);
        ack_of(&second[0]).expect("a HelloAck")
    }

    fn assert_no_amplification(&self) {
        assert!(
            self.received_bytes <= self.sent_bytes,
            "the stranger got {} bytes back for {} sent",
            self.received_bytes,
            self.sent_bytes
        );
    }
}

/// A `udplab recv` child whose stdout lines arrive on a channel.
struct Recv {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
}

impl Recv {
    fn start(extra: &[&str]) -> Recv {
        let mut child = udplab()
            .args(["recv", "--bind", "127.0.0.1:0", "-q"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn udplab recv");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("recv printed its address");
        let addr = first
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_string();
        Recv { child, addr, lines }
    }

    /// Waits for the line announcing a test and returns its session id.
    fn test_started(&self) -> u32 {
        for _ in 0..1000 {
            let line = self.lines.recv_timeout(LIMIT).expect("a test started");
            if let Some(rest) = line.strip_prefix("test ") {
                return u32::from_str_radix(&rest[..8], 16).expect("hex session id");
            }
        }
        panic!("no test line");
    }
}

impl Drop for Recv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sender(addr: &str, count: &str, json: &std::path::Path, extra: &[&str]) -> Child {
    udplab()
        .args([
            "send", addr, "--count", count, "--pps", "20000", "-q", "--json",
        ])
        .arg(json)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn udplab send")
}

fn flow(json: &std::path::Path) -> Value {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    v["flows"][0].clone()
}

/// The real test's figures are exact: every sequence sent is received or lost, any loss is the
/// receiver's own buffer's, nothing is duplicated, stale, late or implausible.
fn assert_exact(flow: &Value, count: u64) {
    let st = &flow["receiver"]["stats"];
    let n = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(n(&flow["sender"]["sent"]), count);
    assert_eq!(n(&st["expected"]), count);
    assert_eq!(n(&st["received"]) + n(&st["lost"]), count);
    let drops = flow["receiver"]["rcvbuf_drops"].as_u64().unwrap_or(0);
    assert!(
        n(&st["lost"]) <= drops,
        "lost {} beyond the receiver's own drops {drops}",
        st["lost"]
    );
    for zero in ["duplicates", "stale", "late", "implausible"] {
        assert_eq!(n(&st[zero]), 0, "{zero}");
    }
    assert_eq!(flow["interrupted"], false);
    assert_eq!(flow["receiver"]["interrupted"], false);
}

#[test]
fn strangers_who_know_the_session_id_cannot_end_falsify_or_read_a_real_test() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let recv = Recv::start(&[]);
    let mut real = sender(&recv.addr, "40000", &json, &[]);
    let id = recv.test_started();
    let mut stranger = Stranger::new(&recv.addr);
    // The attack table: Abort and Fin (total 100, total 10^9) with the printed id and guessed
    // secrets, result requests, far-ahead Data, garbage, a Hello of wire version 1.
    let mut foreign = 0u64;
    for secret in [0u64, 1, u64::from(id), u64::MAX] {
        for b in [
            abort(id, 1, secret),
            abort(id, 2, secret),
            fin(id, 100, secret),
            fin(id, 1_000_000_000, secret),
            result_req(id, secret),
        ] {
            stranger.send(&b);
            foreign += 1;
        }
    }
    for seq in [300_000u64, 1_000_000_000, (1 << 30) - 1, 5] {
        stranger.send(&data(id, seq));
        foreign += 1;
    }
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0u8; 40],
        &[0x55, 0x44, 2, 99, 0, 0, 0, 0],
    ] {
        stranger.send(junk);
        foreign += 1;
    }
    let mut v1 = hello(id, 1_000_000_000, 1_000_000, 0);
    v1.truncate(64);
    v1[2] = 1;
    stranger.send(&v1);
    foreign += 1;
    let answers = stranger.answers();
    assert_eq!(
        answers.len(),
        1,
        "only the version 1 Hello is answered: {answers:?}"
    );
    assert_eq!(answers[0], [0x55, 0x44, 2, 17, v1[4], v1[5], v1[6], v1[7]]);
    // Did the attack land while the test ran? The sender exits only after its results.
    let during = real.try_wait().unwrap().is_none();
    let out = wait_bounded(real, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let f = flow(&json);
    assert_exact(&f, 40_000);
    let seen = f["receiver"]["foreign_datagrams"].as_u64().unwrap();
    let drops = f["receiver"]["rcvbuf_drops"].as_u64().unwrap_or(0);
    if during {
        // Every one counted, less any the receiver's full buffer dropped.
        assert!(
            seen <= foreign && seen + drops >= foreign,
            "foreign {seen} of {foreign}, drops {drops}"
        );
    } else {
        eprintln!("note: the sender finished before the attack landed; foreign count not checked");
    }
    // After the test: its results stay available to the sender only.
    for secret in [0u64, 1, u64::from(id)] {
        stranger.send(&result_req(id, secret));
    }
    assert!(stranger.answers().is_empty(), "no results for a stranger");
    stranger.assert_no_amplification();
}

#[test]
fn oversized_claims_are_refused_with_reasons_and_memory_stays_bounded() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let recv = Recv::start(&[]);
    let mut stranger = Stranger::new(&recv.addr);
    // 16 validated Hellos with Tmax 600 s, then 16 with the largest rate at Tmax 60 s.
    for i in 0..16u32 {
        let ack = stranger.validated_hello(0x1000 + i, 600_000_000_000, 0);
        assert_eq!((ack.status, ack.reason), (2, 3), "Tmax refused");
        let ack = stranger.validated_hello(0x2000 + i, 60_000_000_000, u64::MAX);
        assert_eq!((ack.status, ack.reason), (2, 4), "rate × Tmax refused");
        stranger.send(&data(0x2000 + i, (1 << 30) - 1));
    }
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", recv.child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("VmRSS:")
                        .map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
                })
                .flatten()
        });
    if let Some(kib) = rss_kib {
        assert!(
            kib < 64 << 10,
            "receiver RSS {kib} KiB after the oversized Hellos"
        );
    }
    // A real test still runs, and its sender prints the receiver's reason when it asks too much.
    let out = wait_bounded(
        sender(&recv.addr, "2000", &json, &["--tmax", "120s"]),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the receiver refuses Tmax above 60 s"),
        "{stderr}"
    );
    let out = wait_bounded(sender(&recv.addr, "2000", &json, &[]), LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exact(&flow(&json), 2000);
    stranger.assert_no_amplification();
}

#[test]
fn once_is_not_consumed_by_a_strangers_datagrams() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let mut recv = Recv::start(&["--once"]);
    let mut stranger = Stranger::new(&recv.addr);
    // The table's three datagrams: a Hello, a Fin and an Abort for the same id.
    stranger.send(&hello(0x4242, 600_000_000_000, 0, 0));
    stranger.send(&fin(0x4242, 3, 0));
    stranger.send(&abort(0x4242, 1, 0));
    let answers = stranger.answers();
    assert_eq!(answers.len(), 1, "only the Hello is answered, with a retry");
    assert!(
        recv.child.try_wait().unwrap().is_none(),
        "--once still waiting"
    );
    let out = wait_bounded(sender(&recv.addr, "2000", &json, &[]), LIMIT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exact(&flow(&json), 2000);
    // Now --once has its test and exits by itself.
    let mut waited = 0;
    while recv.child.try_wait().unwrap().is_none() {
        assert!(
            waited < 3000,
            "recv --once did not exit after the real test"
        );
        thread::sleep(Duration::from_millis(10));
        waited += 1;
    }
    stranger.assert_no_amplification();
}

#[test]
fn the_same_seed_twice_gives_two_session_ids() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let recv = Recv::start(&[]);
    let mut ids = Vec::new();
    for i in 0..2 {
        let json = dir.path().join(format!("r{i}.json"));
        let out = wait_bounded(sender(&recv.addr, "100", &json, &["--seed", "5"]), LIMIT);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(flow(&json)["run_id"].as_str().unwrap().to_string());
        assert_eq!(
            recv.test_started(),
            u32::from_str_radix(&ids[i], 16).unwrap()
        );
    }
    assert_ne!(ids[0], ids[1], "--seed fixes fates, not identities");
}
