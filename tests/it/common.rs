//! Shared helpers for the integration tests: running the built binary with bounded waits.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};
use std::thread;
use std::time::Duration;

/// Tests that put real traffic through the machine hold this shared; a test whose assertions
/// are about timing (emulated delay) holds it alone, so our own parallel senders and receivers
/// do not compete with it for the two cores.
static NETWORK: RwLock<()> = RwLock::new(());

pub fn network_shared() -> RwLockReadGuard<'static, ()> {
    NETWORK.read().unwrap_or_else(|e| e.into_inner())
}

pub fn network_exclusive() -> RwLockWriteGuard<'static, ()> {
    NETWORK.write().unwrap_or_else(|e| e.into_inner())
}

pub fn udplab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_udplab"))
}

/// Runs udplab with `args`, killing it if it runs longer than `limit`.
pub fn run_bounded(args: &[&str], limit: Duration) -> Output {
    let child = udplab()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn udplab");
    wait_bounded(child, limit)
}

/// Waits for `child` at most `limit`, then kills it (and fails the test).
pub fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let status = wait_status(&mut child, limit);
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

fn wait_status(child: &mut Child, limit: Duration) -> ExitStatus {
    let step = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if waited >= limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("udplab did not finish within {limit:?}");
        }
        thread::sleep(step);
        waited += step;
    }
}

/// A `udplab recv` child whose address was read from its first stdout line.
pub struct RecvChild {
    pub child: Option<Child>,
    pub addr: String,
    rest: Option<thread::JoinHandle<Vec<u8>>>,
}

impl RecvChild {
    pub fn start(extra: &[&str]) -> Self {
        let mut child = udplab()
            .args(["recv", "--bind", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn udplab recv");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let rest = thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            let _ = tx.send(first);
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        });
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("recv printed its address");
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        RecvChild {
            child: Some(child),
            addr,
            rest: Some(rest),
        }
    }

    /// Waits for a `--once` receiver to exit; returns its status and the rest of its stdout.
    pub fn finish(mut self, limit: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("child");
        let status = wait_status(&mut child, limit);
        let rest = self.rest.take().map(|t| t.join().unwrap_or_default());
        (
            status,
            String::from_utf8_lossy(&rest.unwrap_or_default()).into_owned(),
        )
    }

    /// Waits for a `--once` receiver to exit; returns its status and its stderr (warnings are
    /// a few lines: they fit the pipe while it runs).
    pub fn finish_stderr(mut self, limit: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("child");
        let status = wait_status(&mut child, limit);
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        (status, stderr)
    }
}

impl Drop for RecvChild {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads a CSV file into header + rows of strings.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).expect("open csv");
    let header = r
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    let rows = r
        .records()
        .map(|rec| rec.expect("row").iter().map(String::from).collect())
        .collect();
    (header, rows)
}

/// The value of `column` in `row`.
pub fn cell<'a>(header: &[String], row: &'a [String], column: &str) -> &'a str {
    let i = header
        .iter()
        .position(|h| h == column)
        .unwrap_or_else(|| panic!("no column {column}"));
    &row[i]
}

pub fn num(header: &[String], row: &[String], column: &str) -> u64 {
    cell(header, row, column)
        .parse()
        .unwrap_or_else(|_| panic!("{column} = {:?} is not a number", cell(header, row, column)))
}

/// Lines of a child's output stream as they come, read by a background thread that also keeps
/// the whole text: a test waits for what it needs to see instead of sleeping and guessing.
pub struct LineWatch {
    lines: mpsc::Receiver<String>,
    all: thread::JoinHandle<String>,
}

impl LineWatch {
    pub fn new(stream: impl Read + Send + 'static) -> Self {
        let (tx, lines) = mpsc::channel();
        let all = thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
            all
        });
        LineWatch { lines, all }
    }

    /// Waits until `count` lines satisfying `wanted` have been seen, at most `limit` (then the
    /// test fails, naming what it waited for).
    pub fn wait_for(&self, count: usize, wanted: impl Fn(&str) -> bool, limit: Duration) {
        let deadline = udplab::time::now() + limit;
        let mut seen = 0;
        while seen < count {
            let left = deadline.saturating_duration_since(udplab::time::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => seen += 1,
                Ok(_) => {}
                Err(_) => panic!("saw {seen} of {count} awaited lines within {limit:?}"),
            }
        }
    }

    /// Everything the stream carried, once it closed.
    pub fn finish(self) -> String {
        drop(self.lines);
        self.all.join().unwrap_or_default()
    }
}

/// Starts `udplab proxy` and reads its listening address from the first stdout line.
pub fn start_proxy(args: &[&str]) -> (Child, String) {
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

/// Interrupts a `udplab proxy` child (as Ctrl-C would) and waits for its exit and output.
pub fn stop_proxy(proxy: Child) -> Output {
    // SAFETY: plain kill(2) of our own child.
    unsafe {
        libc::kill(proxy.id() as libc::pid_t, libc::SIGINT);
    }
    wait_bounded(proxy, Duration::from_secs(20))
}
