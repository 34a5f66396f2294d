//! `udplab suite`, `udplab compare` and `--label` through the built binary: the example suite
//! passes on loopback, a regressed copy fails with a JUnit failure naming the threshold, the
//! JUnit output is valid against the vendored schema and parses back, and `compare` on two
//! stored runs gives a known table and exit code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{RecvChild, network_shared, run_bounded};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Validates `xml` against the vendored JUnit schema with xmllint. Without xmllint the check
/// is skipped with a printed reason, except in CI (`CI` set), where .ci/run installs it.
fn validate_junit(xml: &Path) {
    let schema = repo("tests/it/data/junit-10.xsd");
    let out = match Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .arg(xml)
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            println!(
                "skipping the JUnit schema validation: xmllint not runnable ({e}); .ci/run installs libxml2-utils"
            );
            return;
        }
        Err(e) => panic!("xmllint is needed in CI (libxml2-utils): {e}"),
    };
    assert!(
        out.status.success(),
        "{} is not valid against junit-10.xsd: {}",
        xml.display(),
        text(&out.stderr)
    );
}

/// A JUnit testcase as parsed back: name and its (element, type, message) children.
type Case = (String, Vec<(String, String, String)>);

fn junit_cases(xml: &str) -> (usize, usize, Vec<Case>) {
    let doc = roxmltree::Document::parse(xml).expect("well-formed JUnit XML");
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .expect("a testsuite");
    let attr = |name: &str| suite.attribute(name).unwrap().parse::<usize>().unwrap();
    let cases = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|c| {
            let problems = c
                .children()
                .filter(|n| n.has_tag_name("failure") || n.has_tag_name("error"))
                .map(|n| {
                    (
                        n.tag_name().name().to_string(),
                        n.attribute("type").unwrap_or("").to_string(),
                        n.attribute("message").unwrap_or("").to_string(),
                    )
                })
                .collect();
            (c.attribute("name").unwrap().to_string(), problems)
        })
        .collect::<Vec<_>>();
    assert_eq!(attr("tests"), cases.len());
    (attr("failures"), attr("errors"), cases)
}

#[test]
fn the_example_suite_passes_with_valid_reports_and_a_regressed_copy_fails() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let out_path = |name: &str| dir.path().join(name);
    let example = repo("ci/udp.toml");
    let (junit, json, csv) = (
        out_path("report.xml"),
        out_path("main.json"),
        out_path("suite.csv"),
    );
    let out = run_bounded(
        &[
            "suite",
            example.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
            "--label",
            "commit=abc123",
        ],
        Duration::from_secs(120),
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    // One progress line per repeat: clean runs 3 times, impaired once.
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("[1/2] clean (repeat "))
            .count(),
        3,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("[2/2] impaired: loss "))
            .count(),
        1,
        "{stdout}"
    );

    validate_junit(&junit);
    let xml = std::fs::read_to_string(&junit).unwrap();
    let (failures, errors, cases) = junit_cases(&xml);
    assert_eq!((failures, errors), (0, 0), "{xml}");
    let names: Vec<&str> = cases.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["clean", "impaired"]);
    assert!(cases.iter().all(|c| c.1.is_empty()), "{xml}");
    assert!(
        xml.contains(r#"<property name="label.commit" value="abc123"/>"#),
        "{xml}"
    );

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["schema"], "udplab.suite.v1");
    assert_eq!(doc["verdict"], "pass");
    let clean = &doc["scenarios"][0];
    assert_eq!(clean["name"], "clean");
    assert_eq!(clean["runs"].as_array().unwrap().len(), 3);
    let loss = &clean["metrics"]["loss"];
    assert_eq!(loss["n"], 3);
    assert!(loss["min"].as_f64().unwrap() <= loss["median"].as_f64().unwrap());
    assert!(loss["median"].as_f64().unwrap() <= loss["max"].as_f64().unwrap());
    // Labels reach every run: the suite's, the scenario's own, and the scenario name.
    let labels = &doc["scenarios"][1]["runs"][0]["labels"];
    assert_eq!(labels["commit"], "abc123");
    assert_eq!(labels["path"], "emulated");
    assert_eq!(labels["scenario"], "impaired");
    // The impairment is seeded: the same datagrams are lost on every machine. Each drop is a
    // counted loss or a warm-up datagram (`omit`) that never arrived.
    let impaired = &doc["scenarios"][1]["runs"][0];
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    let rx = &impaired["receiver"];
    assert_eq!(n(&rx["omitted_sequences"]), 400);
    assert_eq!(
        n(&impaired["sender"]["impair_counters"]["dropped"]),
        n(&rx["stats"]["lost"]) + 400 - n(&rx["omitted"])
    );

    let csv_text = std::fs::read_to_string(&csv).unwrap();
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    // The summary columns (labels is column 86, results/README.md), then the suite's two.
    assert_eq!(header[85], "labels");
    assert_eq!(header[header.len() - 2..], ["scenario", "repeat"]);
    assert_eq!(header.len(), udplab::report::csv::SUMMARY_COLUMNS.len() + 2);
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    let tail: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[r.len() - 2].as_str(), r[r.len() - 1].as_str()))
        .collect();
    assert_eq!(
        tail,
        [
            ("clean", "1"),
            ("clean", "2"),
            ("clean", "3"),
            ("impaired", "1")
        ]
    );
    assert_eq!(rows[3][85], "commit=abc123;path=emulated;scenario=impaired");

    // The same suite with ten times the impairment loss, against the first run as baseline.
    let original = std::fs::read_to_string(&example).unwrap();
    let regressed = original.replace("loss=1%,reorder=1%,seed=7", "loss=10%,reorder=1%,seed=7");
    assert_ne!(
        regressed, original,
        "the example's impairment line changed: update this test"
    );
    let bad = out_path("regressed.toml");
    std::fs::write(&bad, regressed).unwrap();
    let bad_junit = out_path("regressed.xml");
    let out = run_bounded(
        &[
            "suite",
            bad.to_str().unwrap(),
            "--junit",
            bad_junit.to_str().unwrap(),
            "--baseline",
            json.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{stderr}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains("scenario impaired: threshold failed: loss "),
        "{stderr}"
    );
    validate_junit(&bad_junit);
    let xml = std::fs::read_to_string(&bad_junit).unwrap();
    let (failures, _, cases) = junit_cases(&xml);
    assert!(failures >= 1, "{xml}");
    let impaired = &cases.iter().find(|c| c.0 == "impaired").unwrap().1;
    let threshold = impaired
        .iter()
        .find(|(el, kind, _)| el == "failure" && kind == "threshold")
        .expect("a threshold failure");
    assert!(
        threshold.2.starts_with("max_loss: threshold failed: loss "),
        "{}",
        threshold.2
    );
    assert!(
        threshold.2.contains("> --max-loss 2.00%"),
        "{}",
        threshold.2
    );
    let regression = impaired
        .iter()
        .find(|(el, kind, _)| el == "failure" && kind == "regression")
        .expect("a regression failure");
    assert!(
        regression
            .2
            .starts_with("loss regressed against the baseline: "),
        "{}",
        regression.2
    );
}

#[test]
fn compare_two_stored_runs_prints_the_known_table_and_exits_1_on_a_regression() {
    let a = repo("tests/it/data/compare-a.json");
    let b = repo("tests/it/data/compare-b.json");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let out = run_bounded(&["compare", a, b], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let table: Vec<String> = text(&out.stdout)
        .lines()
        .skip(2)
        .map(str::to_string)
        .collect();
    let expected = [
        "scenario lossy",
        "  metric                                A                          B      change  verdict",
        "  loss                             1.100%                     2.700%    +1.600pp  REGRESSED (tolerance +0.1pp)",
        "  reorder                          0.000%                     0.000%    +0.000pp  same",
        "  duplicates                            0                          0          +0  same",
        "  jitter                          50.8 ns                     167 ns     +228.5%  not judged",
        "  latency_p50                     26.5 µs                    17.4 µs      -34.4%  better",
        "  latency_p99                      334 µs                    8.22 ms    +2361.4%  not judged",
        "  rate                        31.7 Mbit/s                31.2 Mbit/s       -1.7%  not judged",
        "verdict: 1 regression(s)",
    ];
    assert_eq!(table, expected);
    assert_eq!(
        text(&out.stderr).trim(),
        "udplab: scenario lossy: loss regressed against the baseline: 1.100% -> 2.700% (+1.600pp, tolerance +0.1pp)"
    );
    // Within wider tolerances: exit 0, and the loss row says so.
    let out = run_bounded(
        &["compare", a, b, "--max-regression", "loss=+2pp"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("+1.600pp  within (tolerance +2pp)"));
    // A run against itself: every metric the same.
    let out = run_bounded(&["compare", a, a], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0));
    let same = text(&out.stdout);
    assert_eq!(
        same.lines().filter(|l| l.ends_with("  same")).count(),
        7,
        "{same}"
    );
    // Not a udplab report: a usage error naming the file.
    let out = run_bounded(
        &["compare", a, repo("Cargo.toml").to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("Cargo.toml: not JSON"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_bad_suite_file_is_refused_before_anything_runs_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (content, needle) in [
        (
            "[[scenario]]\nname = \"a\"\ncount = 10\nratee = \"1M\"\n",
            "line 4: unknown key `ratee`",
        ),
        // The first scenario is fine: the second's bad value stops the suite before it runs.
        (
            "[[scenario]]\nname = \"a\"\ncount = 10\n\n[[scenario]]\nname = \"b\"\nrate = \"0\"\n",
            "line 5: scenario \"b\": --rate 0",
        ),
        (
            "[[scenario]]\nname = \"a\"\nsize = \"huge\"\n",
            "line 3: scenario \"a\": ",
        ),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, content).unwrap();
        let out = run_bounded(&["suite", file.to_str().unwrap()], Duration::from_secs(30));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{content}: {stderr}");
        assert!(stderr.contains(needle), "{content}: {stderr}");
        assert!(out.stdout.is_empty(), "nothing ran: {}", text(&out.stdout));
    }
}

#[test]
fn labels_reach_the_run_json_and_csv() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let (json, csv) = (dir.path().join("run.json"), dir.path().join("run.csv"));
    let out = run_bounded(
        &[
            "loopback",
            "--count",
            "50",
            "--pps",
            "5000",
            "--tmax",
            "100ms",
            "-q",
            "--label",
            "host=ci",
            "--label",
            "commit=3f2a9c1",
            "--json",
            json.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        doc["total"]["labels"],
        serde_json::json!({"commit": "3f2a9c1", "host": "ci"})
    );
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let at = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "labels")
        .unwrap();
    for row in reader.records() {
        assert_eq!(&row.unwrap()[at], "commit=3f2a9c1;host=ci");
    }
    let out = run_bounded(
        &["loopback", "--label", "no-equals"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("expected KEY=VALUE"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_unmeasurable_threshold_is_a_junit_error_and_exit_3() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rtt.toml");
    // RTT needs --echo: the threshold cannot be measured, which is not a failure.
    std::fs::write(
        &file,
        "[[scenario]]\nname = \"no-echo\"\ncount = 50\npps = 5000\ntmax = \"100ms\"\nmax-rtt-p99 = \"10ms\"\n",
    )
    .unwrap();
    let junit = dir.path().join("r.xml");
    let out = run_bounded(
        &[
            "suite",
            file.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("scenario no-echo: threshold not judged: --max-rtt-p99"),
        "{stderr}"
    );
    validate_junit(&junit);
    let xml = std::fs::read_to_string(&junit).unwrap();
    let (failures, errors, cases) = junit_cases(&xml);
    assert_eq!((failures, errors), (0, 1), "{xml}");
    assert_eq!(cases.len(), 1);
    let (element, kind, message) = &cases[0].1[0];
    assert_eq!((element.as_str(), kind.as_str()), ("error", "incomplete"));
    assert!(message.contains("no RTT samples (use --echo)"), "{message}");
}

#[test]
fn send_scenarios_reach_a_receiver_and_one_that_cannot_run_is_a_junit_error() {
    let _net = network_shared();
    let receiver = RecvChild::start(&["--once"]);
    // A port nothing listens on: the loopback host answers port unreachable at once.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("send.toml");
    std::fs::write(
        &file,
        format!(
            "[[scenario]]\nname = \"remote\"\ntarget = \"{}\"\ncount = 200\npps = 5000\n\
             size = 100\ntmax = \"100ms\"\nmax-dup = 0\n\n\
             [[scenario]]\nname = \"nobody\"\ntarget = \"{closed}\"\ncount = 10\n\
             max-loss = \"1%\"\n",
            receiver.addr
        ),
    )
    .unwrap();
    let (junit, json) = (dir.path().join("r.xml"), dir.path().join("s.json"));
    let out = run_bounded(
        &[
            "suite",
            file.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let stderr = text(&out.stderr);
    // Nothing failed, but one scenario could not run: incomplete.
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n{stderr}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains("scenario nobody: could not run: "),
        "{stderr}"
    );
    let (status, _) = receiver.finish(Duration::from_secs(30));
    assert!(status.success());
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let remote = &doc["scenarios"][0];
    assert_eq!(remote["verdict"], "pass");
    assert_eq!(remote["runs"][0]["sender"]["sent"], 200);
    assert_eq!(remote["runs"][0]["receiver"]["stats"]["expected"], 200);
    assert_eq!(doc["scenarios"][1]["verdict"], "incomplete");
    validate_junit(&junit);
    let xml = std::fs::read_to_string(&junit).unwrap();
    let (failures, errors, cases) = junit_cases(&xml);
    assert_eq!((failures, errors), (0, 1), "{xml}");
    assert!(cases[0].1.is_empty(), "{xml}");
    assert_eq!(cases[1].1.len(), 1, "{xml}");
    assert_eq!(
        (cases[1].1[0].0.as_str(), cases[1].1[0].1.as_str()),
        ("error", "setup")
    );
}

#[test]
fn omit_leaves_the_warm_up_out_of_both_sides_statistics_exactly() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("omit.json");
    // 1000 datagrams/s, 200 ms warm-up: sequences 0..200 of 600. The seeded impairment loses
    // datagrams in the warm-up and after it; only the latter may count.
    let out = run_bounded(
        &[
            "loopback",
            "--count",
            "600",
            "--pps",
            "1000",
            "--size",
            "100",
            "--omit",
            "200ms",
            "--tmax",
            "200ms",
            "--impair",
            "loss=5%,seed=11",
            "--echo",
            "-q",
            "--json",
            json.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("warm-up omitted (--omit)"),
        "{}",
        text(&out.stdout)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let run = &doc["total"];
    let (sender, receiver) = (&run["sender"], &run["receiver"]);
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert_eq!(n(&sender["sent"]), 600);
    assert_eq!(n(&sender["omitted_sequences"]), 200);
    assert_eq!(n(&receiver["omitted_sequences"]), 200);
    assert_eq!(receiver["omit_s"], 0.2);
    let stats = &receiver["stats"];
    assert_eq!(n(&stats["expected"]), 400);
    assert_eq!(n(&stats["received"]) + n(&stats["lost"]), 400);
    // Every impairment drop is either a counted loss or a warm-up datagram that never came.
    let dropped = n(&sender["impair_counters"]["dropped"]);
    let warmup_dropped = 200 - n(&receiver["omitted"]);
    assert!(warmup_dropped > 0, "the seed drops some warm-up datagrams");
    assert_eq!(n(&stats["lost"]) + warmup_dropped, dropped);
    // RTT samples only after the warm-up: one per counted arrival's echo (loopback loses none).
    assert_eq!(n(&sender["rtt"]["count"]), n(&stats["received"]));
    assert_eq!(
        n(&sender["echo_replies"]),
        n(&stats["received"]) + n(&receiver["omitted"])
    );
}
