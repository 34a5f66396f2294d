//! CI gates and outputs of the built binary: thresholds and their verdict, exit codes, output
//! files checked before the run and failing independently, a closed stdout, warnings, and the
//! parsing and display of option values.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{RecvChild, cell, read_csv, run_bounded, udplab, wait_bounded};

const LIMIT: Duration = Duration::from_secs(30);

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("JSON written")).expect("JSON")
}

/// The one flow of a single-flow report document.
fn flow(path: &Path) -> Value {
    json(path)["flows"][0].clone()
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["thresholds"]
        .as_array()
        .expect("thresholds array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

/// Lines of `text` that occur more than once.
fn repeated_lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut repeated: Vec<&str> = lines
        .iter()
        .filter(|l| lines.iter().filter(|m| m == l).count() > 1)
        .copied()
        .collect();
    repeated.dedup();
    repeated
}

#[test]
fn a_percentage_threshold_without_a_percent_sign_is_refused() {
    let _net = crate::common::network_shared();
    // `--max-loss 0.5` used to mean 50%: a 5.6% loss passed the gate.
    for (option, value, right) in [
        ("--max-loss", "0.5", "0.5% (0.5% = 5 in 1000)"),
        ("--max-loss", "1", "1% (1% = 10 in 1000)"),
        ("--max-reorder", "0.01", "0.01% (0.01% = 0.1 in 1000)"),
    ] {
        let out = run_bounded(
            &[
                "loopback", "-q", "-n", "100", "--pps", "10000", option, value,
            ],
            LIMIT,
        );
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{option} {value}: {stderr}");
        assert!(
            stderr.contains(&format!("write it with a percent sign, e.g. {right}")),
            "{option} {value}: {stderr}"
        );
        assert!(stdout_of(&out).is_empty(), "no test ran");
    }
    // Written with %, the same gate catches the seeded 5% loss.
    let out = run_bounded(
        &[
            "loopback",
            "-q",
            "-n",
            "2000",
            "--pps",
            "20000",
            "--impair",
            "loss=5%,seed=1",
            "--max-loss",
            "0.5%",
        ],
        LIMIT,
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("threshold failed: loss ") && stderr.contains("> --max-loss 0.50%"),
        "{stderr}"
    );
}

#[test]
fn a_run_that_sent_nothing_does_not_pass_its_threshold() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let out = run_bounded(
        &[
            "loopback",
            "-q",
            "-t",
            "1ns",
            "--max-loss",
            "0%",
            "--json",
            report.to_str().unwrap(),
        ],
        LIMIT,
    );
    let v = flow(&report);
    let stderr = stderr_of(&out);
    // The send loop checks its end before its first datagram; one clock read later than 1 ns
    // (always, on any machine we know) means nothing is sent.
    if v["sender"]["sent"] == 0 {
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert_eq!(v["verdict"], "incomplete");
        let c = check(&v, "max_loss");
        assert_eq!(c["passed"], false);
        assert!(c["measured"].is_null(), "{c}");
        assert_eq!(c["reason"], "nothing was sent");
        assert!(
            stderr.contains("threshold not judged: --max-loss: nothing was sent"),
            "{stderr}"
        );
    } else {
        eprintln!("note: this machine sent a datagram within 1 ns; the verdict is then real");
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert_eq!(v["verdict"], "pass");
    }
}

#[test]
fn the_verdict_is_in_the_json_and_the_csv_and_incomplete_has_exit_code_3() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let base = [
        "loopback",
        "-q",
        "-n",
        "2000",
        "--pps",
        "20000",
        "--impair",
        "loss=5%,seed=1",
    ];
    let run = |extra: &[&str]| run_bounded(&[&base[..], extra].concat(), LIMIT);

    // A failed threshold and one that cannot be measured (no --echo): the failure decides.
    let out = run(&[
        "--max-loss",
        "1%",
        "--max-dup",
        "0",
        "--max-rtt-p99",
        "1s",
        "--json",
        &path("fail.json"),
        "--csv",
        &path("runs.csv"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let v = flow(&dir.path().join("fail.json"));
    assert_eq!(v["verdict"], "fail");
    let loss = check(&v, "max_loss");
    assert_eq!(loss["unit"], "pct");
    assert_eq!(loss["limit"], 1.0);
    assert!(loss["measured"].as_f64().unwrap() >= 5.0, "{loss}");
    assert_eq!(loss["passed"], false);
    let dup = check(&v, "max_dup");
    assert_eq!(
        (&dup["unit"], &dup["measured"]),
        (&"count".into(), &0.0.into())
    );
    assert_eq!(dup["passed"], true);
    let rtt = check(&v, "max_rtt_p99");
    assert_eq!((&rtt["unit"], &rtt["limit"]), (&"ns".into(), &1e9.into()));
    assert!(rtt["measured"].is_null());
    assert!(rtt["reason"].as_str().unwrap().contains("--echo"), "{rtt}");

    // Only the unmeasurable one: incomplete, its own exit code.
    let out = run(&["--max-rtt-p99", "1s", "--json", &path("incomplete.json")]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert_eq!(
        flow(&dir.path().join("incomplete.json"))["verdict"],
        "incomplete"
    );

    // Met, and none given.
    let out = run(&["--max-loss", "50%", "--csv", &path("runs.csv")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let out = run(&["--csv", &path("runs.csv"), "--json", &path("none.json")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let none = flow(&dir.path().join("none.json"));
    assert_eq!(none["verdict"], "none");
    assert_eq!(none["thresholds"], Value::Array(Vec::new()));

    let (header, rows) = read_csv(&dir.path().join("runs.csv"));
    // Column 65 (columns only grow: later ones follow it).
    assert_eq!(header.get(64).map(String::as_str), Some("verdict"));
    let verdicts: Vec<&str> = rows.iter().map(|r| cell(&header, r, "verdict")).collect();
    // Sender and receiver row of each run.
    assert_eq!(verdicts, ["fail", "fail", "pass", "pass", "none", "none"]);
}

#[test]
fn parallel_flows_carry_the_verdict_and_its_exit_code() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("flows.json");
    let out = run_bounded(
        &[
            "loopback",
            "-q",
            "--flows",
            "2",
            "-n",
            "200",
            "--pps",
            "5000",
            "--max-rtt-p99",
            "1s",
            "--json",
            report.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let v = json(&report);
    assert_eq!(v["total"]["verdict"], "incomplete");
    for flow in v["flows"].as_array().unwrap() {
        assert_eq!(flow["verdict"], "incomplete");
    }
}

#[test]
fn output_files_are_checked_before_the_test_starts() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("r.json");
    let missing = missing.to_str().unwrap();
    let a_dir = dir.path().to_str().unwrap();
    // A test this long would outlast the bound: a quick exit 2 shows it never started.
    let long = ["loopback", "-q", "-n", "1M", "--pps", "1000"];
    for (option, path, os_error) in [
        ("--json", missing, "No such file or directory"),
        ("--csv", a_dir, "Is a directory"),
        ("--intervals-csv", missing, "No such file or directory"),
        ("--loss-log", a_dir, "Is a directory"),
    ] {
        let out = run_bounded(&[&long[..], &[option, path]].concat(), LIMIT);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{option}: {stderr}");
        assert_eq!(
            stderr.trim(),
            format!(
                "udplab: error: cannot write {path}: {os_error} (os error {})",
                if os_error == "Is a directory" { 21 } else { 2 }
            ),
            "{option}: one line, path and OS error once"
        );
        assert!(
            stdout_of(&out).is_empty(),
            "{option}: the test did not start"
        );
    }
    // A file created by the check is removed when the run fails before writing it.
    let csv = dir.path().join("new.csv");
    let out = run_bounded(
        &[
            "loopback",
            "-q",
            "-n",
            "10",
            "--csv",
            csv.to_str().unwrap(),
            "--impair-log",
            missing,
            "--impair",
            "loss=1%",
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(!csv.exists(), "no empty report left behind");
}

#[test]
fn a_failing_output_still_lets_the_others_and_the_summary_be_written() {
    let _net = crate::common::network_shared();
    if !Path::new("/dev/full").exists() {
        eprintln!("skipping: no /dev/full here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let intervals = dir.path().join("i.csv");
    let out = run_bounded(
        &[
            "loopback",
            "-q",
            "-n",
            "300",
            "--pps",
            "10000",
            "--csv",
            "/dev/full",
            "--json",
            report.to_str().unwrap(),
            "--intervals-csv",
            intervals.to_str().unwrap(),
        ],
        LIMIT,
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "udplab: error: cannot write /dev/full: No space left on device (os error 28)"
    );
    assert!(
        stdout_of(&out).starts_with("udplab run "),
        "summary printed"
    );
    assert_eq!(flow(&report)["sender"]["sent"], 300);
    assert!(read_csv(&intervals).1.len() >= 2);

    // The loss log fills up while the receiver runs: the run and its summary go on.
    let csv = dir.path().join("r.csv");
    let out = run_bounded(
        &[
            "loopback",
            "-q",
            "-n",
            "3000",
            "--pps",
            "20000",
            "--impair",
            "loss=20%,seed=4",
            "--loss-log",
            "/dev/full",
            "--csv",
            csv.to_str().unwrap(),
        ],
        LIMIT,
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot write /dev/full: No space left on device"),
        "{stderr}"
    );
    assert!(
        stdout_of(&out).starts_with("udplab run "),
        "summary printed"
    );
    assert_eq!(read_csv(&csv).1.len(), 2);
}

#[test]
fn a_closed_stdout_does_not_stop_the_measurement() {
    let _net = crate::common::network_shared();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("r.csv");
    // As `udplab loopback ... | head -0`: the reader is gone before the first line.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let child = Command::new(env!("CARGO_BIN_EXE_udplab"))
        .args([
            "loopback",
            "-n",
            "400",
            "--pps",
            "4000",
            "-i",
            "20ms",
            "--csv",
            csv.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = wait_bounded(child, LIMIT);
    let stderr = stderr_of(&out);
    // Not killed by SIGPIPE (no code then) and not ended by EPIPE (exit 2).
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    let (header, rows) = read_csv(&csv);
    assert_eq!(rows.len(), 2);
    assert_eq!(cell(&header, &rows[0], "sent"), "400");
}

#[test]
fn warnings_go_to_stderr_once_before_the_report() {
    let _net = crate::common::network_shared();
    // No host has CPU 1023 online: pinning fails with a warning.
    let out = run_bounded(
        &[
            "loopback", "-q", "-n", "50", "--pps", "5000", "--cpu", "1023", "--json", "-",
        ],
        LIMIT,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    serde_json::from_slice::<Value>(&out.stdout).expect("stdout is only the JSON");
    let stderr = stderr_of(&out);
    let lines: Vec<&str> = stderr.lines().collect();
    let warning = lines
        .iter()
        .position(|l| l.starts_with("warning: could not pin the send thread to CPU 1023"))
        .unwrap_or_else(|| panic!("no pinning warning: {stderr}"));
    let report = lines
        .iter()
        .position(|l| l.starts_with("udplab run "))
        .expect("the text report on stderr");
    assert!(warning < report, "warning before the report: {stderr}");
    assert_eq!(stderr.matches("could not pin").count(), 1, "{stderr}");

    let out = run_bounded(
        &[
            "loopback", "-q", "-n", "50", "--pps", "5000", "--cpu", "1023",
        ],
        LIMIT,
    );
    assert!(!stdout_of(&out).contains("warning"), "{}", stdout_of(&out));
    assert_eq!(stderr_of(&out).matches("could not pin").count(), 1);

    // A buffer beyond what the kernel gives: one warning per socket, none repeated.
    let rmem_max: u64 = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u64::MAX);
    if rmem_max < 1 << 29 {
        let out = run_bounded(
            &[
                "loopback", "-q", "-n", "50", "--pps", "5000", "--rcvbuf", "1G",
            ],
            LIMIT,
        );
        let stderr = stderr_of(&out);
        assert!(out.status.success(), "{stderr}");
        assert!(!stdout_of(&out).contains("warning"));
        assert!(repeated_lines(&stderr).is_empty(), "{stderr}");
        assert_eq!(
            stderr
                .matches("SO_RCVBUF: requested 1073741824 bytes")
                .count(),
            1,
            "the sender's socket: {stderr}"
        );
        assert_eq!(
            stderr
                .matches("the receiver's SO_RCVBUF was clamped")
                .count(),
            1,
            "the receiver's socket, from its results: {stderr}"
        );

        // `recv` warns about its own clamped buffer once: at start, not again per test.
        let recv = RecvChild::start(&["--once", "--quiet", "--rcvbuf", "1G"]);
        let out = run_bounded(
            &["send", &recv.addr, "-q", "-n", "50", "--pps", "5000"],
            LIMIT,
        );
        assert!(out.status.success(), "{}", stderr_of(&out));
        let (status, stderr) = recv.finish_stderr(LIMIT);
        assert!(status.success(), "{stderr}");
        assert_eq!(
            stderr.matches("SO_RCVBUF").count(),
            1,
            "one warning for the receiver's one socket: {stderr}"
        );
    } else {
        eprintln!("skipping the buffer warning: net.core.rmem_max is too large to exceed");
    }
}

#[test]
fn a_clamped_receiver_send_buffer_is_warned_about() {
    let _net = crate::common::network_shared();
    let wmem_max: u64 = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u64::MAX);
    if wmem_max >= 1 << 29 {
        eprintln!("skipping: net.core.wmem_max is too large to exceed");
        return;
    }
    let recv = RecvChild::start(&["--once", "--sndbuf", "1G"]);
    let out = run_bounded(
        &["send", &recv.addr, "-q", "-n", "50", "--pps", "5000"],
        LIMIT,
    );
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("warning: the receiver's SO_SNDBUF").count(),
        1,
        "{stderr}"
    );
    assert!(!stdout_of(&out).contains("warning"));
}

#[test]
fn option_values_are_parsed_and_shown_as_documented() {
    let _net = crate::common::network_shared();
    let refused: &[(&[&str], &str)] = &[
        (
            &["send", "127.0.0.1:0", "-n", "1"],
            "port 0 is not a valid destination",
        ),
        (&["loopback", "--impair", "delay=1000000s"], "at most 60s"),
        (&["loopback", "--impair", "jitter=61s"], "at most 60s"),
        (&["loopback", "--pps", "-5"], "invalid packet rate \"-5\""),
        (
            &["loopback", "--seed", "abc"],
            "\"abc\" is not a whole number",
        ),
        (&["loopback", "--rate", "0.5"], "below 1 bit/s"),
    ];
    for (args, needle) in refused {
        let out = run_bounded(args, LIMIT);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        for raw in [
            "unexpected argument",
            "invalid digit",
            "nothing is listening",
        ] {
            assert!(!stderr.contains(raw), "{args:?}: {stderr}");
        }
    }

    // A fractional packet rate is accepted (the wire carries thousandths).
    let out = run_bounded(&["loopback", "-q", "-n", "1", "--pps", "0.5"], LIMIT);
    assert!(out.status.success(), "{}", stderr_of(&out));

    // -i 0 means no interval lines, as `proxy --interval 0`.
    let out = run_bounded(
        &["loopback", "-n", "200", "--pps", "2000", "-i", "0"],
        LIMIT,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = stdout_of(&out);
    assert!(
        stdout.starts_with("udplab run "),
        "only the summary: {stdout}"
    );

    // A limit below the measured value is shown so the two differ: not "> 0.0 µs".
    let out = run_bounded(
        &[
            "loopback",
            "-q",
            "-n",
            "50",
            "--pps",
            "5000",
            "--max-latency-p99",
            "1ns",
        ],
        LIMIT,
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("> --max-latency-p99 1.00 ns"), "{stderr}");
    assert!(!stderr.contains("0.0 µs"), "{stderr}");
}

#[test]
fn help_documents_the_exit_codes() {
    let out = udplab().arg("--help").output().expect("run --help");
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "0    ran",
        "1    ran",
        "2    usage",
        "3    incomplete",
        "130  interrupted",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    let out = udplab()
        .args(["proxy", "--help"])
        .output()
        .expect("run --help");
    assert!(String::from_utf8_lossy(&out.stdout).contains("at most 60s"));
}
