//! `--key` and `recv --allow` over loopback: keyed tests count exactly, a stranger's
//! unauthenticated datagrams are counted and change nothing, a key mismatch or an address
//! outside `--allow` gives the sender a clear error (exit 2), and the receiver never answers.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::common::{RecvChild, run_bounded, udplab, wait_bounded};

/// Writes a key file with `secret` (and a line end, as `echo` would) into `dir`.
fn key_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The receiver's own report (first NDJSON line of `recv --json`).
fn receiver_doc(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(text.lines().next().expect("one report line")).unwrap()
}

/// Every datagram sent is received or lost, once; loopback loses only at the receiver's
/// buffer (or in a failed send), so nothing beyond its own drops may go missing.
fn assert_exact(flow: &Value, count: u64) {
    let tx = &flow["sender"];
    let rx = &flow["receiver"];
    let st = &rx["stats"];
    assert_eq!(tx["sent"].as_u64(), Some(count), "{flow}");
    assert_eq!(st["expected"].as_u64(), Some(count), "{flow}");
    let (received, lost) = (
        st["received"].as_u64().unwrap(),
        st["lost"].as_u64().unwrap(),
    );
    assert_eq!(received + lost, count, "{flow}");
    assert_eq!(st["duplicates"].as_u64(), Some(0), "{flow}");
    assert_eq!(st["stale"].as_u64(), Some(0), "{flow}");
    let at_buffer = lost - tx["send_errors"].as_u64().unwrap();
    let drops = rx["rcvbuf_drops"].as_u64().unwrap_or(0);
    assert!(
        at_buffer <= drops,
        "lost {lost} beyond the buffer's {drops} drops: {flow}"
    );
}

#[test]
fn a_keyed_test_counts_exactly_and_the_key_may_come_from_the_environment() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "k", "a shared key of thirty-two bytes");
    let other = key_file(dir.path(), "other", "another key, also long enough");
    let rjson = dir.path().join("recv.json");
    // Serves tests one after another: three senders below.
    let recv = RecvChild::start(&[
        "--key",
        key.to_str().unwrap(),
        "--quiet",
        "--json",
        rjson.to_str().unwrap(),
    ]);
    let send = |args: &[&str], env_key: Option<&str>| {
        let mut cmd = udplab();
        cmd.args([
            "send", &recv.addr, "--pps", "5000", "--size", "64", "--count", "2000",
        ])
        .args(["--echo", "--quiet", "--json", "-"])
        .args(args)
        .env_remove("UDPLAB_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some(k) = env_key {
            cmd.env("UDPLAB_KEY", k);
        }
        let out = wait_bounded(cmd.spawn().unwrap(), Duration::from_secs(60));
        assert!(out.status.success(), "{}", stderr_of(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["flows"][0].clone()
    };
    for flow in [
        // --key FILE.
        send(&["--key", key.to_str().unwrap()], None),
        // No --key: UDPLAB_KEY (the file's line end is not part of the key).
        send(&[], Some("a shared key of thirty-two bytes")),
        // --key wins over UDPLAB_KEY.
        send(
            &["--key", key.to_str().unwrap()],
            Some(&std::fs::read_to_string(&other).unwrap()),
        ),
    ] {
        assert_exact(&flow, 2000);
        let tx = &flow["sender"];
        assert_eq!(tx["unauthenticated"].as_u64(), Some(0), "{flow}");
        // Keyed echoes (24 + 16 bytes) come back and verify.
        assert!(tx["echo_replies"].as_u64().unwrap() > 0, "{flow}");
        assert_eq!(flow["payload_bytes"].as_u64(), Some(64));
        // The tag sits inside the 64 bytes: the receiver counts what the sender sent.
        let st = &flow["receiver"]["stats"];
        assert_eq!(
            st["received_bytes"].as_u64(),
            Some(64 * st["received"].as_u64().unwrap())
        );
    }
    drop(recv);
    let r = receiver_doc(&rjson);
    assert_eq!(
        r["flows"][0]["receiver"]["unauthenticated"].as_u64(),
        Some(0)
    );
    assert_eq!(r["flows"][0]["receiver"]["refused_by_allow"], Value::Null);
}

#[test]
fn a_key_mismatch_is_a_clear_error_not_a_silent_timeout() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "k", "the receiver's key, 32 bytes long");
    let other = key_file(dir.path(), "other", "the sender's key, a different one");
    let keyed = RecvChild::start(&["--key", key.to_str().unwrap()]);
    let keyless = RecvChild::start(&[]);
    // Both refusals run at once: each waits out the 3 s handshake.
    let attempt = |addr: String, key: Option<PathBuf>| {
        thread::spawn(move || {
            let mut args = vec!["send".to_string(), addr, "--count".into(), "100".into()];
            if let Some(k) = key {
                args.extend(["--key".into(), k.to_str().unwrap().to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_bounded(&args, Duration::from_secs(30))
        })
    };
    let wrong_key = attempt(keyed.addr.clone(), Some(other.clone()));
    let no_key = attempt(keyed.addr.clone(), None);
    let receiver_without_key = attempt(keyless.addr.clone(), Some(other));
    for (out, needles) in [
        (
            wrong_key.join().unwrap(),
            &[
                "no authenticated answer",
                "do sender and receiver use the same --key?",
            ][..],
        ),
        (
            no_key.join().unwrap(),
            &["no answer from a udplab receiver", "--key"][..],
        ),
        (
            receiver_without_key.join().unwrap(),
            &[
                "do sender and receiver use the same --key?",
                "came back without a valid tag",
            ][..],
        ),
    ] {
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        }
    }
}

/// A `udplab recv` child whose stdout lines arrive on a channel as they are printed.
struct WatchedRecv {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    addr: String,
}

impl WatchedRecv {
    fn start(args: &[&str]) -> Self {
        let mut child = udplab()
            .args(["recv", "--bind", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut watched = WatchedRecv {
            child: Some(child),
            lines,
            addr: String::new(),
        };
        let first = watched.next_line_with("listening on ");
        watched.addr = first["listening on ".len()..].trim().to_string();
        watched
    }

    /// Waits (at most 30 s) for the next line starting with `prefix`.
    fn next_line_with(&self, prefix: &str) -> String {
        let deadline = udplab::time::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(udplab::time::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line starting with {prefix:?} within 30 s"),
            }
        }
    }
}

impl WatchedRecv {
    /// Waits for a `--once` receiver to exit, at most `limit`.
    fn finish(mut self, limit: Duration) -> std::process::ExitStatus {
        wait_bounded(self.child.take().expect("child"), limit).status
    }
}

impl Drop for WatchedRecv {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A datagram in udplab's documented layout: magic "UD", version, kind, session id, then
/// `fields` (big-endian). Hand-made, as a stranger would.
fn handmade(kind: u8, session_id: u32, fields: &[u64]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&udplab::wire::MAGIC.to_be_bytes());
    d.push(udplab::wire::VERSION);
    d.push(kind);
    d.extend_from_slice(&session_id.to_be_bytes());
    for f in fields {
        d.extend_from_slice(&f.to_be_bytes());
    }
    d
}

#[test]
fn a_strangers_unauthenticated_datagrams_are_counted_and_change_nothing() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "k", "the test's key, thirty-two bytes");
    let rjson = dir.path().join("recv.json");
    // A buffer with room for the stranger's bursts next to the real data.
    let recv = WatchedRecv::start(&[
        "--once",
        "--rcvbuf",
        "4M",
        "--key",
        key.to_str().unwrap(),
        "--json",
        rjson.to_str().unwrap(),
    ]);
    let count = 4000u64;
    let sender = udplab()
        .args(["send", &recv.addr, "--pps", "2000", "--size", "200"])
        .args([
            "--count",
            &count.to_string(),
            "--key",
            key.to_str().unwrap(),
        ])
        .args(["--quiet", "--json", "-"])
        .env_remove("UDPLAB_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The receiver names the test once it started: "test 1a2b3c4d from ...".
    let banner = recv.next_line_with("test ");
    let session_id = u32::from_str_radix(&banner[5..13], 16).unwrap();
    // The stranger knows the session id and the wire format, not the key: well-formed Data
    // far ahead and repeated, a Fin with a small total, a ResultReq, an Abort, garbage, and the
    // same messages with a tag made with another key.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let wrong = udplab::auth::Key::from_secret(b"a stranger's guess at the key", "test").unwrap();
    let mut forged = vec![
        handmade(1, session_id, &[1 << 30, 0, 0]),
        handmade(1, session_id, &[3, 0, 0]),
        handmade(18, session_id, &[100, 100 * 200, 0]),
        handmade(20, session_id, &[]),
        {
            let mut abort = handmade(22, session_id, &[]);
            abort.push(1);
            abort
        },
        b"not udplab at all".to_vec(),
    ];
    let tagged: Vec<Vec<u8>> = forged
        .iter()
        .map(|d| {
            let mut t = d.clone();
            wrong.append_tag(&mut t);
            t
        })
        .collect();
    forged.extend(tagged);
    let rounds = 50;
    for _ in 0..rounds {
        for d in &forged {
            stranger.send_to(d, &recv.addr).unwrap();
        }
        // Spread over the test (pacing, not waiting for anything).
        thread::sleep(Duration::from_millis(2));
    }
    let stranger_sent = (rounds * forged.len()) as u64;
    let out = wait_bounded(sender, Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let flow = &v["flows"][0];
    assert_exact(flow, count);
    assert_eq!(flow["interrupted"], false, "the forged Abort ended nothing");
    assert_eq!(flow["sender"]["unauthenticated"].as_u64(), Some(0));
    // The receiver's own report counts the stranger's datagrams, all of them unless its
    // buffer dropped some (then the drops account for the rest).
    assert!(recv.finish(Duration::from_secs(20)).success());
    let r = receiver_doc(&rjson);
    let rx = &r["flows"][0]["receiver"];
    let unauthenticated = rx["unauthenticated"].as_u64().unwrap();
    let drops = rx["rcvbuf_drops"].as_u64().unwrap_or(0);
    assert!(
        unauthenticated <= stranger_sent && unauthenticated + drops >= stranger_sent,
        "stranger sent {stranger_sent}, counted {unauthenticated}, buffer drops {drops}"
    );
    assert_eq!(rx["stats"]["expected"].as_u64(), Some(count));
    assert_eq!(
        rx["foreign_datagrams"].as_u64(),
        Some(0),
        "none reached the session"
    );
    // The same count travels back with the results: one command shows both sides.
    assert_eq!(
        flow["receiver"]["unauthenticated"], rx["unauthenticated"],
        "the sender's copy of the receiver's report"
    );
}

#[test]
fn allow_refuses_other_addresses_silently_and_admits_its_own() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let rjson = dir.path().join("recv.json");
    let elsewhere = RecvChild::start(&["--allow", "10.0.0.0/8"]);
    let refused = run_bounded(
        &["send", &elsewhere.addr, "--count", "100"],
        Duration::from_secs(30),
    );
    let stderr = stderr_of(&refused);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no answer from a udplab receiver"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow"), "{stderr}");
    drop(elsewhere);

    let local = RecvChild::start(&[
        "--once",
        "--allow",
        "10.0.0.0/8",
        "--allow",
        "127.0.0.0/8",
        "--json",
        rjson.to_str().unwrap(),
    ]);
    let out = run_bounded(
        &[
            "send",
            &local.addr,
            "--pps",
            "5000",
            "--count",
            "1000",
            "--quiet",
            "--json",
            "-",
        ],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_exact(&v["flows"][0], 1000);
    let (status, banner) = local.finish(Duration::from_secs(20));
    assert!(status.success());
    assert!(
        banner.contains("accepting datagrams only from 10.0.0.0/8, 127.0.0.0/8"),
        "{banner}"
    );
    let r = receiver_doc(&rjson);
    assert_eq!(
        r["flows"][0]["receiver"]["refused_by_allow"].as_u64(),
        Some(0)
    );
    assert_eq!(r["flows"][0]["receiver"]["unauthenticated"], Value::Null);
}

#[test]
fn bad_keys_and_prefixes_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let short = key_file(dir.path(), "short", "too short");
    let good = key_file(dir.path(), "good", "a long enough key for udplab");
    for (args, needle) in [
        (
            vec!["send", "127.0.0.1:9", "--key", short.to_str().unwrap()],
            "the key has 9 bytes; use at least 16",
        ),
        (
            vec![
                "recv",
                "--bind",
                "127.0.0.1:0",
                "--key",
                "/nonexistent/udplab.key",
            ],
            "--key /nonexistent/udplab.key",
        ),
        (
            vec!["loopback", "--key", good.to_str().unwrap(), "--size", "30"],
            "--size 40 or more",
        ),
        (
            vec!["recv", "--bind", "127.0.0.1:0", "--allow", "10.0.0.1/8"],
            "did you mean 10.0.0.0/8?",
        ),
    ] {
        let out = run_bounded(&args, Duration::from_secs(20));
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn a_keyed_proxy_relays_the_keyed_test_and_strangers_take_no_client_place() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "k", "a shared key of thirty-two bytes");
    let key = key.to_str().unwrap();
    let pjson = dir.path().join("proxy.json");
    let recv = RecvChild::start(&["--key", key, "--once", "--quiet"]);
    // Room for 4 clients: without the key check, 300 strangers would fill it at once.
    let (proxy, paddr) = crate::common::start_proxy(&[
        "--listen",
        "127.0.0.1:0",
        "--to",
        &recv.addr,
        "--key",
        key,
        "--max-clients",
        "4",
        "--interval",
        "0s",
        "--duration",
        "60s",
        "--json",
        pjson.to_str().unwrap(),
    ]);
    let strangers: Vec<UdpSocket> = (0..300)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for s in &strangers {
        s.send_to(&handmade(16, 7, &[0; 8]), &paddr).unwrap();
    }
    let out = run_bounded(
        &[
            "send", &paddr, "--key", key, "--count", "3000", "--pps", "10000", "--size", "64",
            "--quiet", "--json", "-",
        ],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_exact(&v["flows"][0], 3000);
    let pout = crate::common::stop_proxy(proxy);
    assert_eq!(pout.status.code(), Some(130));
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&pjson).unwrap()).unwrap();
    // Each stranger's datagram was dropped unauthenticated (less any the proxy's own buffer
    // dropped), none became a client, none was refused for want of room.
    let dropped = p["forward"]["unauthenticated"].as_u64().unwrap();
    let buffer = p["forward"]["rcvbuf_drops"].as_u64().unwrap();
    assert!(dropped <= 300 && dropped + buffer >= 300, "{p}");
    assert_eq!(p["clients_refused"], 0, "{p}");
    assert_eq!(p["clients"], 1, "only the real sender became a client: {p}");
    drop(recv);
}
