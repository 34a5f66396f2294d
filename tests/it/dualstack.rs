//! `udplab recv` listens dual-stack by default: IPv4 and IPv6 senders reach the one socket,
//! replies (echoes, results) go back to either, and IPv4 peers are shown as IPv4.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv6Addr, UdpSocket};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::common::{run_bounded, udplab, wait_bounded};

/// A `udplab recv --once` on `[::]:0`: dual-stack like the default `[::]:5210`, on a free port.
struct DualStackReceiver {
    child: Child,
    port: u16,
    /// Everything it printed after the address line, once it exited.
    rest: mpsc::Receiver<String>,
}

impl DualStackReceiver {
    fn start(json: &Path) -> Self {
        let mut child = udplab()
            .args(["recv", "--bind", "[::]:0", "--once", "--quiet", "--json"])
            .arg(json)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn udplab recv");
        let stdout = child.stdout.take().expect("stdout");
        let (first_tx, first_rx) = mpsc::channel();
        let (rest_tx, rest) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            let _ = first_tx.send(first);
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            let _ = rest_tx.send(text);
        });
        let first = first_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("recv printed its address");
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        let port = addr
            .strip_prefix("[::]:")
            .unwrap_or_else(|| panic!("not the dual-stack wildcard: {addr}"))
            .parse()
            .expect("a port");
        DualStackReceiver { child, port, rest }
    }

    /// Waits (bounded) for the receiver to exit and returns what it printed.
    fn finish(self) -> String {
        let out = wait_bounded(self.child, Duration::from_secs(20));
        assert!(out.status.success(), "recv exited with {}", out.status);
        self.rest
            .recv_timeout(Duration::from_secs(10))
            .expect("recv's output")
    }
}

/// One echo test from `host` (an IPv4 or IPv6 literal) to a dual-stack receiver; returns the
/// sender's JSON, the receiver's JSON and the receiver's text.
fn echo_test(host: &str) -> (Value, Value, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let recv_json = dir.path().join("recv.json");
    let send_json = dir.path().join("send.json");
    let recv = DualStackReceiver::start(&recv_json);
    let target = format!("{host}:{}", recv.port);
    let out = run_bounded(
        &[
            "send",
            &target,
            "--count",
            "2000",
            "--pps",
            "20000",
            "--echo",
            "--quiet",
            "--json",
            send_json.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "udplab send to {target} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = recv.finish();
    let read = |p: &Path| -> Value {
        let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        // One object: pretty-printed (send), or one NDJSON line (recv --once).
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}: {s}", p.display()))
    };
    (read(&send_json), read(&recv_json), text)
}

/// The checks both families share: the test ran, results and echoes came back over the
/// dual-stack socket.
fn check_replies(send: &Value) {
    let sender = &send["flows"][0]["sender"];
    let receiver = &send["flows"][0]["receiver"];
    assert!(
        receiver.is_object(),
        "the receiver's results came back: {send}"
    );
    assert_eq!(
        receiver["stats"]["expected"], sender["sent"],
        "the receiver knows how many were sent"
    );
    assert!(
        sender["echo_replies"].as_u64().unwrap_or(0) > 0,
        "echo replies came back: {sender}"
    );
}

#[test]
fn the_default_bind_is_dual_stack() {
    let out = run_bounded(&["recv", "--help"], Duration::from_secs(10));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("[default: [::]:5210]"),
        "recv listens on [::]:5210 by default: {help}"
    );
}

#[test]
fn an_ipv4_sender_reaches_the_dual_stack_receiver_and_is_shown_as_ipv4() {
    let _net = crate::common::network_shared();
    let (send, recv, text) = echo_test("127.0.0.1");
    check_replies(&send);
    let recv_doc = recv.to_string();
    assert!(
        text.contains("from 127.0.0.1:"),
        "the receiver names its IPv4 peer as IPv4: {text}"
    );
    for (what, shown) in [("text", text.as_str()), ("JSON", recv_doc.as_str())] {
        assert!(
            !shown.contains("::ffff:"),
            "the receiver's {what} shows an IPv4-mapped address: {shown}"
        );
    }
    assert!(
        recv_doc.contains("\"127.0.0.1:"),
        "the receiver's report names 127.0.0.1: {recv_doc}"
    );
}

#[test]
fn an_ipv6_sender_reaches_the_dual_stack_receiver() {
    if let Err(e) = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)) {
        eprintln!("skipping: no IPv6 loopback here ({e})");
        return;
    }
    let _net = crate::common::network_shared();
    let (send, recv, text) = echo_test("[::1]");
    check_replies(&send);
    assert!(text.contains("from [::1]:"), "{text}");
    assert!(recv.to_string().contains("\"[::1]:"), "{recv}");
}
