//! `udplab proxy` limits (issue 7): thousands of one-datagram clients leave its open files and
//! threads bounded, clients beyond `--max-clients` or beyond the file-descriptor limit are
//! refused and counted, and refused clients are served once others expire.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::common::{LineWatch, RecvChild, network_shared, run_bounded, udplab, wait_bounded};

/// How long any single wait of these tests may take before it fails.
const LIMIT: Duration = Duration::from_secs(20);

/// What the proxy's interval line says about its clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ClientsLine {
    forward_received: u64,
    active: u64,
    refused: u64,
    expired: u64,
}

/// Parses `[ t s] forward: received N relayed … | clients: active A refused R expired E`.
fn clients_line(line: &str) -> Option<ClientsLine> {
    let forward = line.split_once("forward: received ")?.1;
    let forward_received = forward.split_whitespace().next()?.parse().ok()?;
    let clients = line.split_once("| clients: ")?.1;
    let words: Vec<&str> = clients.split_whitespace().collect();
    let value = |name: &str| -> Option<u64> {
        let i = words.iter().position(|w| *w == name)?;
        words.get(i + 1)?.parse().ok()
    };
    Some(ClientsLine {
        forward_received,
        active: value("active")?,
        refused: value("refused")?,
        expired: value("expired")?,
    })
}

/// A running `udplab proxy` whose stderr (interval lines, warnings) is watched line by line.
struct ProxyChild {
    /// Taken by `stop`; killed on drop (a failed test leaves no proxy behind).
    child: Option<Child>,
    addr: String,
    stderr: LineWatch,
}

impl ProxyChild {
    /// Starts `udplab proxy --listen 127.0.0.1:0 ARGS`, through `sh -c 'ulimit -n N; exec …'`
    /// when `open_files` is given.
    fn start(args: &[&str], open_files: Option<u32>) -> Self {
        let mut cmd = match open_files {
            None => {
                let mut c = udplab();
                c.args(["proxy", "--listen", "127.0.0.1:0"]).args(args);
                c
            }
            Some(n) => {
                let mut c = std::process::Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_udplab"))
                    .args(["proxy", "--listen", "127.0.0.1:0"])
                    .args(args);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn udplab proxy");
        let stderr = LineWatch::new(child.stderr.take().expect("stderr"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        });
        let line = rx
            .recv_timeout(LIMIT)
            .expect("the proxy printed its address");
        let addr = line
            .strip_prefix("proxy listening on ")
            .and_then(|l| l.split(',').next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        ProxyChild {
            child: Some(child),
            addr,
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for an interval line whose client figures satisfy `wanted`; returns them.
    fn wait_for_clients(&self, what: &str, wanted: impl Fn(&ClientsLine) -> bool) -> ClientsLine {
        let seen = std::cell::Cell::new(None);
        // Printed with the test's output should the wait fail.
        eprintln!("waiting for an interval line showing {what}");
        self.stderr.wait_for(
            1,
            |line| match clients_line(line) {
                Some(c) if wanted(&c) => {
                    seen.set(Some(c));
                    true
                }
                _ => false,
            },
            LIMIT,
        );
        seen.get().expect("the matching line was kept")
    }

    /// Ctrl-C: the proxy stops (exit code 130) and writes its report; returns its stderr.
    fn stop(mut self) -> String {
        let child = self.child.take().expect("running");
        // SAFETY: plain kill(2) of our own child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
        let out = wait_bounded(child, LIMIT);
        let stderr = std::mem::replace(&mut self.stderr, LineWatch::new(std::io::empty())).finish();
        assert_eq!(out.status.code(), Some(130), "{stderr}");
        stderr
    }
}

impl Drop for ProxyChild {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Entries of /proc/PID/fd: the process's open files.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// The `Threads:` figure of /proc/PID/status.
fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read /proc/PID/status")
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Threads: line")
}

/// Raises this process's soft open-file limit to at least `n` (within the hard limit): the
/// test holds one socket per client so that no two clients share an address.
fn allow_open_files(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the one live rlimit struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < n as libc::rlim_t {
            lim.rlim_cur = (n as libc::rlim_t).min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    assert!(
        lim.rlim_cur >= n as libc::rlim_t,
        "this test needs {n} open files; the hard limit is {}",
        lim.rlim_max
    );
}

/// A loopback socket standing in for the proxy's target.
fn target_socket() -> (UdpSocket, String) {
    let t = UdpSocket::bind("127.0.0.1:0").unwrap();
    t.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let addr = t.local_addr().unwrap().to_string();
    (t, addr)
}

/// Every datagram queued at `target` now (it has a short read timeout), as text.
fn drain(target: &UdpSocket) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = target.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    got
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("proxy JSON")).expect("JSON")
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

const CLIENTS: usize = 2000;
const MAX_CLIENTS: usize = 64;
/// Files the proxy may hold beyond one per client: stdio, its listening socket, the signal
/// thread's descriptors, with room to spare. Independent of how many clients come.
const FIXED_FILES: usize = 16;
/// main thread, signal thread (no impairment: no release thread); one spare.
const MAX_THREADS: u64 = 3;

#[test]
fn two_thousand_one_datagram_clients_leave_files_and_threads_bounded_then_a_real_test_works() {
    let _net = network_shared();
    allow_open_files(CLIENTS as u64 + 256);
    let dir = tempfile::tempdir().unwrap();
    let pjson = dir.path().join("proxy.json");
    let recv = RecvChild::start(&["--once"]);
    let max_clients = MAX_CLIENTS.to_string();
    let proxy = ProxyChild::start(
        &[
            "--to",
            &recv.addr,
            "--max-clients",
            &max_clients,
            // Longer than the real sender's silence between its Fin and its result request
            // (Tmax, 1 s): it must stay one client, on one address, for the whole test.
            "--client-idle",
            "2s",
            "--interval",
            "50ms",
            "--json",
            pjson.to_str().unwrap(),
        ],
        None,
    );
    let pid = proxy.pid();
    // Set-up is over once the loop prints: the figures without any client.
    proxy.wait_for_clients("the first interval", |c| c.active == 0);
    let files_idle = open_files(pid);
    let threads_idle = threads(pid);
    assert!(
        files_idle <= FIXED_FILES,
        "{files_idle} files with no client"
    );

    // Each client is its own socket, kept open so that no two share an address; they send in
    // waves the proxy is seen to take in, so its receive buffer never overflows.
    let mut clients = Vec::with_capacity(CLIENTS);
    let (mut most_files, mut most_threads) = (files_idle, threads_idle);
    while clients.len() < CLIENTS {
        for _ in 0..100 {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.send_to(b"one datagram from a stranger", &proxy.addr)
                .unwrap();
            clients.push(s);
        }
        let sent = clients.len() as u64;
        let c = proxy.wait_for_clients(&format!("{sent} datagrams received"), |c| {
            c.forward_received >= sent
        });
        assert!(c.active <= MAX_CLIENTS as u64, "{c:?}");
        most_files = most_files.max(open_files(pid));
        most_threads = most_threads.max(threads(pid));
    }
    assert!(
        most_files <= MAX_CLIENTS + FIXED_FILES && most_files <= files_idle + MAX_CLIENTS,
        "{most_files} open files ({files_idle} without clients, at most {MAX_CLIENTS} clients)"
    );
    assert!(most_threads <= MAX_THREADS, "{most_threads} threads");
    assert_eq!(most_threads, threads_idle, "no thread per client");

    // The proxy's own expiry frees every place, and closes the clients' sockets.
    let c = proxy.wait_for_clients("every client expired", |c| {
        c.active == 0 && c.expired >= MAX_CLIENTS as u64
    });
    // Every client was served or refused (some of the first may have expired while the
    // later ones still came: more were served then, never more than the cap at once).
    let flood_served = c.active + c.expired;
    assert_eq!(flood_served + c.refused, CLIENTS as u64, "{c:?}");
    assert!(c.refused >= (CLIENTS - MAX_CLIENTS) as u64 / 2, "{c:?}");
    assert!(
        open_files(pid) <= files_idle + 2,
        "expired clients' sockets are closed"
    );

    // Then a real test through the proxy: exact counts.
    let count = 3000u64;
    let out = run_bounded(
        &[
            "send",
            &proxy.addr,
            "--count",
            &count.to_string(),
            "--pps",
            "3000",
            "--size",
            "200",
            "--quiet",
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
    let (status, _) = recv.finish(LIMIT);
    assert!(status.success(), "recv --once ran the real test");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let flow = &v["flows"][0];
    let st = &flow["receiver"]["stats"];
    assert_eq!(u(&flow["sender"]["sent"]), count);
    assert_eq!(u(&st["received"]) + u(&st["lost"]), count);
    let stderr = proxy.stop();
    let p = read_json(&pjson);
    // Only a buffer on the way (the proxy's or the receiver's) can have lost anything.
    let buffers = u(&p["forward"]["rcvbuf_drops"]) + u(&flow["receiver"]["rcvbuf_drops"]);
    assert!(u(&st["lost"]) <= buffers, "lost {} {stderr}", st["lost"]);

    // The real sender is one more client (its data and control share one address).
    assert_eq!(u(&p["clients"]), flood_served + 1, "{p}");
    assert_eq!(u(&p["clients_max_concurrent"]), MAX_CLIENTS as u64);
    assert_eq!(u(&p["clients_refused"]), c.refused);
    assert_eq!(u(&p["rejected"]), c.refused);
    assert_eq!(
        u(&p["clients_expired"]) + u(&p["clients_active"]),
        flood_served + 1
    );
    assert_eq!(u(&p["max_clients"]), MAX_CLIENTS as u64);
    assert!(stderr.contains("new clients are refused"), "{stderr}");
    drop(clients);
}

/// Sends `A{i}` from socket i every 20 ms until `stop` (at most 20 s): clients kept active.
fn keep_alive(
    sockets: Vec<UdpSocket>,
    to: String,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for _ in 0..1000 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            for (i, s) in sockets.iter().enumerate() {
                let _ = s.send_to(format!("A{i}").as_bytes(), &to);
            }
            thread::sleep(Duration::from_millis(20));
        }
    })
}

#[test]
fn a_refused_client_is_served_once_others_expire() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let pjson = dir.path().join("proxy.json");
    let (target, taddr) = target_socket();
    let proxy = ProxyChild::start(
        &[
            "--to",
            &taddr,
            "--max-clients",
            "4",
            "--client-idle",
            "500ms",
            "--interval",
            "50ms",
            "--json",
            pjson.to_str().unwrap(),
        ],
        None,
    );
    // Four clients fill the proxy and stay active.
    let first: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let alive = keep_alive(first, proxy.addr.clone(), Arc::clone(&stop));
    proxy.wait_for_clients("4 active clients", |c| c.active == 4);

    // Four more are refused while those are active.
    let later: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (i, s) in later.iter().enumerate() {
        s.send_to(format!("B{i}").as_bytes(), &proxy.addr).unwrap();
    }
    let c = proxy.wait_for_clients("4 refused clients", |c| c.refused >= 4);
    assert_eq!((c.active, c.refused, c.expired), (4, 4, 0), "{c:?}");

    // The first four fall silent; the proxy's own count says when they expired.
    stop.store(true, Ordering::Relaxed);
    alive.join().unwrap();
    proxy.wait_for_clients("4 expired clients", |c| c.expired >= 4 && c.active == 0);
    let before = drain(&target);
    assert!(
        before.iter().all(|d| d.starts_with('A')),
        "a refused client's datagram was relayed: {before:?}"
    );

    // Now the refused clients are served.
    for (i, s) in later.iter().enumerate() {
        s.send_to(format!("B{i}").as_bytes(), &proxy.addr).unwrap();
    }
    let wanted: BTreeSet<String> = (0..4).map(|i| format!("B{i}")).collect();
    let mut got = BTreeSet::new();
    let deadline = udplab::time::now() + LIMIT;
    while got != wanted && udplab::time::now() < deadline {
        got.extend(drain(&target).into_iter().filter(|d| d.starts_with('B')));
    }
    assert_eq!(got, wanted, "the once-refused clients reach the target");

    let stderr = proxy.stop();
    let p = read_json(&pjson);
    assert_eq!(u(&p["clients"]), 8, "{p}");
    assert_eq!(u(&p["clients_refused"]), 4);
    assert_eq!(u(&p["clients_max_concurrent"]), 4);
    assert!(u(&p["clients_expired"]) >= 4);
    assert_eq!(p["client_idle_s"].as_f64(), Some(0.5));
    // And a warning said why.
    assert!(stderr.contains("new clients are refused"), "{stderr}");
}

#[test]
fn a_client_without_a_file_descriptor_is_refused_and_the_proxy_goes_on() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let pjson = dir.path().join("proxy.json");
    let (target, taddr) = target_socket();
    // Far fewer descriptors than --max-clients allows clients.
    let proxy = ProxyChild::start(
        &[
            "--to",
            &taddr,
            "--client-idle",
            "300ms",
            "--interval",
            "50ms",
            "--json",
            pjson.to_str().unwrap(),
        ],
        Some(32),
    );
    let clients: Vec<UdpSocket> = (0..60)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for s in &clients {
        s.send_to(b"stranger", &proxy.addr).unwrap();
    }
    let c = proxy.wait_for_clients("60 datagrams taken in", |c| c.forward_received >= 60);
    assert!(
        c.refused > 0,
        "32 descriptors cannot hold 60 clients: {c:?}"
    );
    assert_eq!(c.active + c.expired + c.refused, 60, "{c:?}");

    // Once they expire, a new client is served.
    proxy.wait_for_clients("every client expired", |c| c.active == 0 && c.expired > 0);
    drain(&target);
    let late = UdpSocket::bind("127.0.0.1:0").unwrap();
    late.send_to(b"late client", &proxy.addr).unwrap();
    let mut got = Vec::new();
    let deadline = udplab::time::now() + LIMIT;
    while !got.iter().any(|d| d == "late client") && udplab::time::now() < deadline {
        got.extend(drain(&target));
    }
    assert!(got.iter().any(|d| d == "late client"), "{got:?}");

    let stderr = proxy.stop();
    let p = read_json(&pjson);
    assert!(stderr.contains("no socket for a new client"), "{stderr}");
    assert!(stderr.contains("Too many open files"), "{stderr}");
    assert_eq!(u(&p["clients"]) + u(&p["clients_refused"]), 61, "{p}");
    assert!(u(&p["clients_refused"]) > 0);
    drop(clients);
}

#[test]
fn the_interval_line_parses() {
    let line = "[   1.00 s] forward: received 12 relayed 10 (+10) | reverse: received 0 relayed 0 (+0) | clients: active 3 refused 2 expired 1";
    assert_eq!(
        clients_line(line),
        Some(ClientsLine {
            forward_received: 12,
            active: 3,
            refused: 2,
            expired: 1
        })
    );
    assert_eq!(
        clients_line("[   1.00 s] forward: received 12 relayed 10 (+10)"),
        None
    );
}

#[test]
fn the_help_states_the_limits_and_their_defaults_and_zero_is_refused() {
    let out = run_bounded(&["proxy", "--help"], LIMIT);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--max-clients",
        "[default: 256]",
        "--client-idle",
        "[default: 60s]",
        "refused",
        "expire",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    for (flag, value) in [("--max-clients", "0"), ("--client-idle", "0s")] {
        let out = run_bounded(
            &[
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                flag,
                value,
            ],
            LIMIT,
        );
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
    }
}
