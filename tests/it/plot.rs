//! `udplab plot` (well-formed SVG with the expected series and axes, rendered to PNG by a real
//! SVG renderer), `udplab completions` and `udplab man`.
//!
//! The committed PNGs under `results/` come from `loopback_plots_render_to_png` run with
//! `UDPLAB_WRITE_PLOTS=1` (see results/README.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use udplab::summary::{
    DocumentHeader, IntervalRow, PercentilePoint, REPORT_SCHEMA, REPORT_VERSION, ReceiverReport,
    ReceiverStatsSummary, ReportDocument, RunReport, SenderReport, SignedLatencySummary,
    percentile_ladder,
};

use crate::common::{network_shared, run_bounded};

const LIMIT: Duration = Duration::from_secs(60);

fn row(role: &str, i: usize, rate_bps: f64, stats: Option<ReceiverStatsSummary>) -> IntervalRow {
    IntervalRow {
        role: role.into(),
        start_s: i as f64,
        end_s: i as f64 + 1.0,
        sent: if stats.is_none() { 1000 } else { 0 },
        stats,
        rate_bps,
        pps: 1000.0,
        ..IntervalRow::default()
    }
}

/// A known run: 5 intervals per role, 12 percentile points and the maximum, 3 lost ranges.
fn known_run(run_id: &str, lost: u64, latency_scale: i64) -> ReportDocument {
    let intervals = 5;
    let receiver_rows = (0..intervals)
        .map(|i| {
            let stats = ReceiverStatsSummary {
                received: 1000 - lost,
                lost,
                jitter_ns: 1_000.0 * (i + 1) as f64,
                ..ReceiverStatsSummary::default()
            };
            row("receiver", i, 9_000_000.0, Some(stats))
        })
        .collect();
    let mut percentiles: Vec<PercentilePoint> = percentile_ladder()
        .take(12)
        .enumerate()
        .map(|(k, percentile)| PercentilePoint {
            percentile,
            value_ns: latency_scale * (10 + k as i64),
        })
        .collect();
    percentiles.push(PercentilePoint {
        percentile: 100.0,
        value_ns: latency_scale * 40,
    });
    let run = RunReport {
        version: REPORT_VERSION,
        run_id: run_id.into(),
        started_at: "2026-11-29T12:00:00Z".into(),
        target: "127.0.0.1:5210".into(),
        payload_bytes: 1200,
        pattern: "cbr".into(),
        sender: Some(SenderReport {
            sent: 5000,
            intervals: (0..intervals)
                .map(|i| row("sender", i, 9_600_000.0, None))
                .collect(),
            ..SenderReport::default()
        }),
        receiver: Some(ReceiverReport {
            stats: ReceiverStatsSummary {
                expected: 5000,
                received: 5000 - 5 * lost,
                lost: 5 * lost,
                jitter_ns: 3_000.0,
                latency: Some(SignedLatencySummary {
                    count: 5000 - 5 * lost,
                    p99_ns: latency_scale * 20,
                    max_ns: latency_scale * 40,
                    ..SignedLatencySummary::default()
                }),
                latency_percentiles: percentiles,
                ..ReceiverStatsSummary::default()
            },
            rate_achieved_bps: 9_000_000.0,
            intervals: receiver_rows,
            ..ReceiverReport::default()
        }),
        ..RunReport::default()
    };
    ReportDocument {
        header: DocumentHeader {
            version: REPORT_VERSION,
            schema: REPORT_SCHEMA.into(),
            tool: "udplab".into(),
            tool_version: "0.1.0".into(),
            command: "udplab loopback --count 5000 --impair 'loss=1%'".into(),
        },
        flows: vec![run.clone()],
        total: run,
    }
}

fn write_json(dir: &Path, name: &str, doc: &ReportDocument) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    path
}

fn plot(args: &[&str]) -> String {
    let out = run_bounded(&[&["plot"], args].concat(), LIMIT);
    assert!(
        out.status.success(),
        "plot {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The element carrying `data-series="name"`.
fn series<'a>(doc: &'a roxmltree::Document, name: &str) -> roxmltree::Node<'a, 'a> {
    doc.descendants()
        .find(|n| n.attribute("data-series") == Some(name))
        .unwrap_or_else(|| panic!("no series {name}"))
}

fn polyline_points(doc: &roxmltree::Document, name: &str) -> Vec<(f64, f64)> {
    let node = series(doc, name);
    assert_eq!(node.tag_name().name(), "polyline");
    node.attribute("points")
        .unwrap()
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

fn texts<'a>(doc: &'a roxmltree::Document, class: &str) -> Vec<&'a str> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text") && n.attribute("class") == Some(class))
        .filter_map(|n| n.text())
        .collect()
}

#[test]
fn a_run_plot_has_every_series_with_its_points_and_axes_with_units() {
    let dir = tempfile::tempdir().unwrap();
    let json = write_json(dir.path(), "run.json", &known_run("run-known", 10, 1_000));
    let loss_log = dir.path().join("loss.csv");
    std::fs::write(
        &loss_log,
        "run_id,first_seq,last_seq\nrun-known,100,109\nother,1,1\nrun-known,2000,2019\nrun-known,4000,4019\n",
    )
    .unwrap();
    let svg = plot(&[
        json.to_str().unwrap(),
        "--loss-log",
        loss_log.to_str().unwrap(),
    ]);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");

    let latency = polyline_points(&doc, "latency");
    assert_eq!(latency.len(), 12, "the percentile points below 100 %");
    // The percentile axis grows to the right and latency grows upwards (smaller SVG y).
    assert!(
        latency
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 > w[1].1)
    );
    assert_eq!(series(&doc, "latency-max").tag_name().name(), "line");
    for name in ["sent-rate", "received-rate", "lost", "jitter"] {
        assert_eq!(
            polyline_points(&doc, name).len(),
            5,
            "{name}: one per interval"
        );
    }
    let ranges: Vec<_> = series(&doc, "loss-ranges")
        .children()
        .filter(|n| n.has_tag_name("rect"))
        .collect();
    assert_eq!(
        ranges.len(),
        3,
        "this run's three lost ranges, not the other run's"
    );

    let titles = texts(&doc, "panel-title");
    assert_eq!(titles.len(), 5, "{titles:?}");
    assert!(titles[0].contains("percentile"), "{titles:?}");
    let x_titles = texts(&doc, "x-title");
    assert!(
        x_titles.contains(&"time since the test start (s)"),
        "{x_titles:?}"
    );
    assert!(
        x_titles.contains(&"sequence number (datagrams)"),
        "{x_titles:?}"
    );
    let y_titles = texts(&doc, "y-title");
    for wanted in [
        "one-way latency (µs)",
        "rate (Mbit/s)",
        "lost (datagrams)",
        "jitter (µs)",
    ] {
        assert!(y_titles.contains(&wanted), "{wanted} in {y_titles:?}");
    }
    let x_ticks = texts(&doc, "x-tick");
    for wanted in ["0%", "90%", "99%"] {
        assert!(x_ticks.contains(&wanted), "{wanted} in {x_ticks:?}");
    }
    assert!(texts(&doc, "title")[0].contains("run-known"));
    let caption = texts(&doc, "caption").join("");
    assert!(
        caption.contains("command: udplab loopback --count 5000"),
        "{caption}"
    );
    assert!(texts(&doc, "marker").contains(&"max 40 µs"));
}

#[test]
fn without_loss_ranges_the_pattern_panel_says_how_to_get_them() {
    let dir = tempfile::tempdir().unwrap();
    let json = write_json(dir.path(), "run.json", &known_run("r", 10, 1_000));
    let svg = plot(&[json.to_str().unwrap()]);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert!(
        !doc.descendants()
            .any(|n| n.attribute("data-series") == Some("loss-ranges"))
    );
    assert!(texts(&doc, "note").iter().any(|t| t.contains("--loss-log")));
}

#[test]
fn a_baseline_plot_has_a_bar_pair_per_scenario_and_metric() {
    let dir = tempfile::tempdir().unwrap();
    let current = write_json(dir.path(), "pr.json", &known_run("pr", 20, 2_000));
    let baseline = write_json(dir.path(), "main.json", &known_run("main", 10, 1_000));
    let out = dir.path().join("diff.svg");
    let stdout = plot(&[
        current.to_str().unwrap(),
        "--baseline",
        baseline.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.is_empty(), "the SVG went to the file");
    let svg = std::fs::read_to_string(&out).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let groups = |name: &str| -> Vec<roxmltree::Node> {
        doc.descendants()
            .filter(|n| n.attribute("data-series") == Some(name))
            .collect()
    };
    let (before, after) = (groups("baseline"), groups("current"));
    assert_eq!(before.len(), 4, "loss, latency p99, jitter, rate");
    assert_eq!(after.len(), 4);
    for g in before.iter().chain(&after) {
        assert_eq!(g.children().filter(|n| n.has_tag_name("rect")).count(), 1);
    }
    // Loss: 1 % before, 2 % after: the current bar is twice as tall.
    let height = |g: &roxmltree::Node| -> f64 {
        let rect = g.children().find(|n| n.has_tag_name("rect")).unwrap();
        rect.attribute("height").unwrap().parse().unwrap()
    };
    let ratio = height(&after[0]) / height(&before[0]);
    assert!((ratio - 2.0).abs() < 0.02, "{ratio}");
    let y_titles = texts(&doc, "y-title");
    assert_eq!(
        y_titles,
        vec![
            "loss (%)",
            "latency p99 (µs)",
            "jitter (µs)",
            "rate (Mbit/s)"
        ]
    );
    assert!(texts(&doc, "x-tick").contains(&"run"));
}

#[test]
fn plot_refuses_what_is_not_a_run_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.json");
    std::fs::write(&path, r#"{"schema":"udplab.proxy.v2"}"#).unwrap();
    let out = run_bounded(&["plot", path.to_str().unwrap()], LIMIT);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("schema udplab.proxy.v2"), "{stderr}");
    let json = write_json(dir.path(), "run.json", &known_run("r", 1, 1));
    let out = run_bounded(&["plot", json.to_str().unwrap(), "--flow", "3"], LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 flow(s)"));
}

/// Renders an SVG with resvg (system fonts, as a reader's viewer would) and checks it drew.
fn render_png(svg: &str) -> Vec<u8> {
    let mut options = resvg::usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    let tree = resvg::usvg::Tree::from_str(svg, &options).expect("resvg parses the SVG");
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).unwrap();
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    // Something besides the background was painted: the series' blue.
    let blue = pixmap
        .pixels()
        .iter()
        .filter(|p| p.red() < 40 && p.blue() > 150)
        .count();
    assert!(blue > 100, "the plot drew its series ({blue} blue pixels)");
    pixmap.encode_png().unwrap()
}

fn loopback_json(dir: &Path, name: &str, impair: &str) -> (PathBuf, PathBuf) {
    let json = dir.join(format!("{name}.json"));
    let loss = dir.join(format!("{name}-loss.csv"));
    let out = run_bounded(
        &[
            "loopback",
            "--count",
            "6000",
            "--pps",
            "3000",
            "--interval",
            "200ms",
            "--impair",
            impair,
            "--quiet",
            "--json",
            json.to_str().unwrap(),
            "--loss-log",
            loss.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (json, loss)
}

/// Runs a two-scenario suite (two repeats each) with the given impairment loss and returns
/// its JSON.
fn suite_json(dir: &Path, name: &str, loss: &str) -> PathBuf {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "[[scenario]]\nname = \"small\"\nrepeat = 2\ncount = 1500\npps = 5000\nsize = 200\n\
             tmax = \"100ms\"\nimpair = \"loss={loss},seed=1\"\n\n\
             [[scenario]]\nname = \"large\"\nrepeat = 2\ncount = 1500\npps = 5000\nsize = 1400\n\
             tmax = \"100ms\"\nimpair = \"loss={loss},seed=2\"\n"
        ),
    )
    .unwrap();
    let json = dir.join(format!("{name}.json"));
    let out = run_bounded(
        &[
            "suite",
            file.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert!(
        json.exists(),
        "suite: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json
}

#[test]
fn loopback_plots_render_to_png() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let (pr, pr_loss) = loopback_json(dir.path(), "pr", "loss=ge:p=0.5%,r=20%,seed=7");
    let main_suite = suite_json(dir.path(), "main", "1%");
    let pr_suite = suite_json(dir.path(), "pr-suite", "3%");
    let run_svg = plot(&[
        pr.to_str().unwrap(),
        "--loss-log",
        pr_loss.to_str().unwrap(),
    ]);
    let diff_svg = plot(&[
        pr_suite.to_str().unwrap(),
        "--baseline",
        main_suite.to_str().unwrap(),
    ]);
    // A real run: 6000 datagrams resolve the ladder to 99.9 %, every interval has its point.
    let doc = roxmltree::Document::parse(&run_svg).unwrap();
    assert!(polyline_points(&doc, "latency").len() >= 16);
    assert!(polyline_points(&doc, "received-rate").len() >= 10);
    // The suites: two scenarios on each side, each metric panel a bar per scenario and side.
    let doc = roxmltree::Document::parse(&diff_svg).unwrap();
    for name in ["baseline", "current"] {
        let groups: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute("data-series") == Some(name))
            .collect();
        assert_eq!(groups.len(), 4, "{name}");
        assert!(
            groups
                .iter()
                .all(|g| g.children().filter(|n| n.has_tag_name("rect")).count() == 2)
        );
    }
    let scenarios = texts(&doc, "x-tick");
    assert!(
        scenarios.contains(&"small") && scenarios.contains(&"large"),
        "{scenarios:?}"
    );
    let pngs = [
        ("plot-run.png", render_png(&run_svg)),
        ("plot-baseline.png", render_png(&diff_svg)),
    ];
    if std::env::var_os("UDPLAB_WRITE_PLOTS").is_some() {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        for (name, png) in &pngs {
            std::fs::write(results.join(name), png).unwrap();
        }
    }
}

/// A suite document with the given scenarios: (name, loss % of each repeat).
fn suite_doc(scenarios: &[(&str, &[f64])]) -> udplab::suite::SuiteDocument {
    use udplab::suite::compare::spread;
    udplab::suite::SuiteDocument {
        header: DocumentHeader {
            version: 1,
            schema: udplab::suite::SUITE_SCHEMA.into(),
            tool: "udplab".into(),
            tool_version: "0.1.0".into(),
            command: "udplab suite ci/udp.toml".into(),
        },
        scenarios: scenarios
            .iter()
            .map(|(name, losses)| udplab::suite::ScenarioResult {
                name: (*name).into(),
                repeat: losses.len() as u32,
                metrics: [("loss".to_string(), spread(losses).unwrap())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn a_suite_plot_pairs_scenarios_by_name_with_whiskers_over_the_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, doc: &udplab::suite::SuiteDocument| {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec(doc).unwrap()).unwrap();
        path
    };
    let current = write(
        "pr.json",
        &suite_doc(&[("a", &[1.0, 2.0, 3.0]), ("b", &[4.0]), ("new", &[1.0])]),
    );
    let baseline = write(
        "main.json",
        &suite_doc(&[("b", &[2.0]), ("a", &[1.0, 1.0])]),
    );
    let svg = plot(&[
        current.to_str().unwrap(),
        "--baseline",
        baseline.to_str().unwrap(),
    ]);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let loss_panel = |name: &str| -> Vec<f64> {
        let g = doc
            .descendants()
            .find(|n| n.attribute("data-series") == Some(name))
            .unwrap();
        g.children()
            .filter(|n| n.has_tag_name("rect"))
            .map(|r| r.attribute("height").unwrap().parse().unwrap())
            .collect()
    };
    // Scenarios in the current suite's order; the baseline has no "new".
    assert_eq!(&texts(&doc, "x-tick")[..3], ["a", "b", "new"]);
    let (before, after) = (loss_panel("baseline"), loss_panel("current"));
    assert_eq!((before.len(), after.len()), (2, 3));
    // Medians: a 2 % vs 1 %, b 4 % vs 2 %: twice as tall each.
    assert!((after[0] / before[0] - 2.0).abs() < 0.02);
    assert!((after[1] / before[1] - 2.0).abs() < 0.02);
    // One whisker: scenario a's three current repeats (1..3 %); equal repeats draw none.
    let whiskers = doc
        .descendants()
        .filter(|n| n.attribute("data-series") == Some("current-spread"))
        .count();
    assert_eq!(whiskers, 1);
    assert_eq!(
        doc.descendants()
            .filter(|n| n.attribute("data-series") == Some("baseline-spread"))
            .count(),
        0
    );
    // A suite alone draws its scenarios without a baseline.
    let alone = plot(&[current.to_str().unwrap()]);
    let doc = roxmltree::Document::parse(&alone).unwrap();
    assert!(
        !doc.descendants()
            .any(|n| n.attribute("data-series") == Some("baseline"))
    );
}

#[test]
fn completions_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run_bounded(&["completions", shell], LIMIT);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for sub in ["recv", "send", "loopback", "proxy", "plot"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        assert!(script.contains("--hdr-log"), "{shell}: options too");
    }
    let out = run_bounded(&["completions", "tcsh"], LIMIT);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn the_man_page_documents_the_subcommands_and_their_options() {
    let out = run_bounded(&["man"], LIMIT);
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH udplab"),
        "{}",
        &page[..200]
    );
    for section in [
        "UDPLAB SEND",
        "UDPLAB RECV",
        "UDPLAB LOOPBACK",
        "UDPLAB PLOT",
    ] {
        assert!(page.contains(section), "{section}");
    }
    for option in [
        "\\-\\-rate",
        "\\-\\-max\\-loss",
        "\\-\\-baseline",
        "\\-\\-hdr\\-log",
    ] {
        assert!(page.contains(option), "{option}");
    }
}

/// Sums the histogram counts of each tag in an interval log, read with the hdrhistogram
/// crate's own interval-log iterator and deserializer.
fn counts_by_tag(log: &[u8]) -> std::collections::BTreeMap<String, u64> {
    use base64::Engine;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let mut counts = std::collections::BTreeMap::new();
    for entry in IntervalLogIterator::new(log) {
        if let LogEntry::Interval(h) = entry.expect("a well-formed interval log") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(h.encoded_histogram())
                .unwrap();
            let histogram: hdrhistogram::Histogram<u64> =
                Deserializer::new().deserialize(&mut &bytes[..]).unwrap();
            let tag = h.tag().map_or("", |t| t.as_str()).to_string();
            *counts.entry(tag).or_default() += histogram.len();
        }
    }
    counts
}

#[test]
fn the_hdr_log_holds_every_latency_and_rtt_sample_of_the_report() {
    let _net = network_shared();
    let dir = tempfile::tempdir().unwrap();
    let (json, log) = (dir.path().join("run.json"), dir.path().join("run.hlog"));
    let out = run_bounded(
        &[
            "loopback",
            "--count",
            "3000",
            "--pps",
            "3000",
            "--interval",
            "200ms",
            "--echo",
            "--impair",
            "loss=2%,seed=5",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
            "--hdr-log",
            log.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: ReportDocument = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let run = &doc.flows[0];
    let latency = run.receiver.as_ref().unwrap().stats.latency.unwrap().count;
    let rtt = run.sender.as_ref().unwrap().rtt.unwrap().count;
    assert!(latency > 0 && rtt > 0);
    let text = std::fs::read(&log).unwrap();
    let counts = counts_by_tag(&text);
    assert_eq!(counts.get("latency"), Some(&latency), "{counts:?}");
    assert_eq!(counts.get("rtt"), Some(&rtt), "{counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");
}

#[test]
fn send_hdr_log_without_echo_is_refused_before_sending() {
    let out = run_bounded(
        &["send", "127.0.0.1:9", "--count", "1", "--hdr-log", "x.hlog"],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--echo"));
    assert!(!Path::new("x.hlog").exists());
}
