//! Simulation tests: sender and receiver sessions joined by an in-memory link on a manual clock.
//! The link drops, duplicates and reorders exactly what the test says (or what a seeded
//! impairment decides), and the receiver's report must match that exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use udplab::impair::{Fate, ImpairSpec, Impairment};
use udplab::session::{
    ReceiverServer, SenderControl, SenderEvent, ServerConfig, ServerEvent, TestParams,
};
use udplab::stats::{Arrival, ReceiverStats, StatsConfig};
use udplab::summary::ReceiverReport;
use udplab::time::ManualClock;
use udplab::wire::{DATA_HEADER_LEN, DataHeader, Kind};

const WALL0: u64 = 1_800_000_000_000_000_000;
const GAP_NS: u64 = 10_000;
const PAYLOAD: usize = 200;

fn params(tmax: Duration) -> TestParams {
    TestParams {
        payload_size: PAYLOAD as u32,
        echo: false,
        interval: Duration::from_millis(100),
        tmax,
        count: 0,
        duration: Duration::ZERO,
        rate_bps: 0,
        pps_milli: 0,
        loss_ranges: false,
        pattern: udplab::wire::HelloPattern::Cbr,
        marking: Default::default(),
        omit: Duration::ZERO,
        reliable: None,
    }
}

/// One arrival on the simulated link.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    seq: u64,
    /// Sender clock at send, ns after WALL0.
    send_off: u64,
    /// Receiver clock at arrival, ns after WALL0.
    recv_off: u64,
}

/// Runs a whole session: handshake, the given deliveries, Fin with `total_sent`, results.
/// Returns the receiver's report and the loss ranges it logged.
fn run_session(deliveries: &[Delivery], total_sent: u64) -> (ReceiverReport, Vec<(u64, u64)>) {
    let mut clock = ManualClock::new(WALL0);
    let sender: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let mut server = ReceiverServer::new(ServerConfig {
        max_sessions: 1,
        rcvbuf: Default::default(),
        sndbuf: Default::default(),
        timestamp_source: "sim".into(),
        record_loss_ranges: true,
        ..ServerConfig::default()
    });
    let mut ctl = SenderControl::new(0xfeed, params(Duration::from_millis(200)), clock.now());
    let mut lost = Vec::new();
    let mut echo = [0u8; DATA_HEADER_LEN];
    let mut results = None;

    let pump = |clock: &ManualClock,
                server: &mut ReceiverServer,
                ctl: &mut SenderControl,
                lost: &mut Vec<(u64, u64)>,
                results: &mut Option<ReceiverReport>,
                echo: &mut [u8; DATA_HEADER_LEN]| {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(msg) = ctl.poll_transmit() {
                server.handle_datagram(clock.now(), clock.wall_ns(), sender, &msg, echo);
                moved = true;
            }
            while let Some((to, msg)) = server.poll_transmit() {
                assert_eq!(to, sender);
                ctl.handle_datagram(clock.now(), &msg);
                moved = true;
            }
            while let Some(ev) = server.poll_event() {
                if let ServerEvent::Lost { ranges, .. } = ev {
                    lost.extend(ranges.iter().map(|r| (*r.start(), *r.end())));
                }
            }
            while let Some(ev) = ctl.poll_event() {
                match ev {
                    SenderEvent::Results(r) => *results = Some(*r),
                    SenderEvent::Failed(e) => panic!("control failed: {e}"),
                    SenderEvent::Accepted { .. } => {}
                    // Forward tests only: a reverse test's results.
                    SenderEvent::SenderResults { .. } => panic!("not a reverse test"),
                }
            }
            if !moved {
                return;
            }
        }
    };
    pump(
        &clock,
        &mut server,
        &mut ctl,
        &mut lost,
        &mut results,
        &mut echo,
    );

    let mut buf = vec![0u8; PAYLOAD];
    let t_start = clock.wall_ns() - WALL0;
    for d in deliveries {
        let target = WALL0 + t_start + d.recv_off;
        clock.advance(Duration::from_nanos(target.saturating_sub(clock.wall_ns())));
        DataHeader {
            session_id: 0xfeed,
            seq: d.seq,
            send_ns: WALL0 + t_start + d.send_off,
        }
        .write(Kind::Data, &mut buf);
        server.handle_datagram(clock.now(), clock.wall_ns(), sender, &buf, &mut echo);
        if server.poll_timeout().is_some_and(|t| clock.now() >= t) {
            server.handle_timeout(clock.now());
        }
    }
    ctl.finish(clock.now(), total_sent, total_sent * PAYLOAD as u64, 0);
    for _ in 0..200 {
        pump(
            &clock,
            &mut server,
            &mut ctl,
            &mut lost,
            &mut results,
            &mut echo,
        );
        if results.is_some() {
            break;
        }
        clock.advance(Duration::from_millis(50));
        server.handle_timeout(clock.now());
        ctl.handle_timeout(clock.now());
    }
    (results.expect("results came back"), lost)
}

fn in_order(seqs: impl IntoIterator<Item = u64>) -> Vec<Delivery> {
    seqs.into_iter()
        .enumerate()
        .map(|(i, s)| Delivery {
            seq: s,
            send_off: s * GAP_NS,
            recv_off: i as u64 * GAP_NS + 50_000,
        })
        .collect()
}

#[test]
fn chosen_drops_duplicates_and_reorders_come_out_exactly() {
    let dropped: BTreeSet<u64> = [10, 11, 12, 500, 998, 999].into();
    let mut order: Vec<u64> = (0..1000).filter(|s| !dropped.contains(s)).collect();
    // 300 arrives after 301..=305 (extent 5, 3-reordered); 701 before 700 (extent 1).
    let p300 = order.iter().position(|&s| s == 300).unwrap();
    let s300 = order.remove(p300);
    let p305 = order.iter().position(|&s| s == 305).unwrap();
    order.insert(p305 + 1, s300);
    let p700 = order.iter().position(|&s| s == 700).unwrap();
    order.swap(p700, p700 + 1);
    // 100 arrives three times, 200 twice.
    let p100 = order.iter().position(|&s| s == 100).unwrap();
    order.insert(p100 + 1, 100);
    order.insert(p100 + 2, 100);
    let p200 = order.iter().position(|&s| s == 200).unwrap();
    order.insert(p200 + 5, 200);

    let (report, lost) = run_session(&in_order(order), 1000);
    let st = &report.stats;
    assert_eq!(st.expected, 1000);
    assert_eq!(st.lost, 6);
    assert_eq!(st.received, 994);
    assert_eq!(st.received_bytes, 994 * PAYLOAD as u64);
    assert_eq!(st.loss_periods, 3);
    assert_eq!(st.loss_period_max, 3);
    assert_eq!(st.duplicates, 3);
    assert_eq!(st.reordered, 2);
    assert_eq!(st.reorder_extent_max, 5);
    assert_eq!(st.n_reordered, [2, 1, 1]);
    assert_eq!(st.late, 0);
    assert_eq!(st.stale, 0);
    assert_eq!(lost, vec![(10, 12), (500, 500), (998, 999)]);
    assert_eq!(st.latency.unwrap().count, 994);
    // Interval rows add up to the run.
    let rows: Vec<_> = report
        .intervals
        .iter()
        .filter_map(|r| r.stats.as_ref())
        .collect();
    assert_eq!(rows.iter().map(|s| s.received).sum::<u64>(), 994);
    assert_eq!(rows.iter().map(|s| s.lost).sum::<u64>(), 6);
    assert_eq!(rows.iter().map(|s| s.duplicates).sum::<u64>(), 3);
}

/// RFC 4737 reordered sequences of an arrival order (first copies only), by the definition.
fn reference_reordered(arrivals: &[u64]) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    let mut next_exp = None::<u64>;
    let mut out = BTreeSet::new();
    for &s in arrivals {
        if !seen.insert(s) {
            continue;
        }
        match next_exp {
            Some(n) if s < n => {
                out.insert(s);
            }
            _ => next_exp = Some(s + 1),
        }
    }
    out
}

/// Pushes `count` datagrams through a seeded impairment at `pps`; returns the fates and the
/// link's output as (seq, release time offset).
fn impaired_link(spec: &str, pps: u64, count: u64) -> (BTreeMap<u64, Fate>, Vec<(u64, u64)>) {
    let spec: ImpairSpec = spec.parse().expect("valid spec");
    let mut imp: Impairment<u64> = Impairment::new(&spec);
    let mut clock = ManualClock::new(0);
    let t0 = clock.now();
    let gap = 1_000_000_000 / pps;
    let mut fates = BTreeMap::new();
    let mut out = Vec::new();
    for k in 0..count {
        clock.advance_to(t0 + Duration::from_nanos(k * gap));
        // Release what fell due before this send, at its own time.
        while let Some(t) = imp.poll_timeout() {
            if t > clock.now() {
                break;
            }
            let s = imp.poll_release(t).expect("due item");
            out.push((s, (t - t0).as_nanos() as u64));
        }
        let fate = imp.handle(clock.now(), PAYLOAD, k);
        fates.insert(k, fate);
        while let Some(s) = imp.poll_release(clock.now()) {
            out.push((s, (clock.now() - t0).as_nanos() as u64));
        }
    }
    while let Some(t) = imp.poll_timeout() {
        let s = imp.poll_release(t).expect("due item");
        out.push((s, (t - t0).as_nanos() as u64));
    }
    assert_eq!(imp.pending(), 0);
    (fates, out)
}

#[test]
fn seeded_impairment_matches_the_receivers_accounting_datagram_by_datagram() {
    let count = 50_000;
    let (fates, out) = impaired_link("loss=3%,dup=2%,reorder=2%:3,seed=9", 50_000, count);
    let dropped: BTreeSet<u64> = fates
        .iter()
        .filter(|(_, f)| matches!(f, Fate::Dropped | Fate::QueueDropped))
        .map(|(s, _)| *s)
        .collect();
    let duplicated: BTreeSet<u64> = fates
        .iter()
        .filter(|(_, f)| matches!(f, Fate::Passed { copies: 2, .. }))
        .map(|(s, _)| *s)
        .collect();
    let arrivals: Vec<u64> = out.iter().map(|(s, _)| *s).collect();
    let expected_reordered = reference_reordered(&arrivals);
    assert!(!dropped.is_empty() && !duplicated.is_empty() && !expected_reordered.is_empty());

    // Receiver accounting, datagram by datagram.
    let mut stats = ReceiverStats::new(StatsConfig {
        loss_horizon_ns: 1_000_000_000,
        record_loss_ranges: true,
        ..StatsConfig::default()
    });
    let mut reordered = BTreeSet::new();
    let mut dup_seqs = BTreeSet::new();
    for (s, t) in &out {
        let send = WALL0 + s * (1_000_000_000 / 50_000);
        match stats.on_datagram(*s, send, WALL0 + t + 30_000, t + 30_000, PAYLOAD) {
            Arrival::Unique { reordered: true } => {
                reordered.insert(*s);
            }
            Arrival::Duplicate => {
                dup_seqs.insert(*s);
            }
            Arrival::Unique { .. } => {}
            other => panic!("unexpected {other:?} for {s}"),
        }
    }
    let end = out.last().unwrap().1 + 1_000_000;
    stats.finish(count, end);
    let lost: BTreeSet<u64> = stats
        .drain_loss_ranges()
        .into_iter()
        .flat_map(|r| r.collect::<Vec<_>>())
        .collect();
    assert_eq!(lost, dropped, "lost sequences = dropped sequences");
    assert_eq!(dup_seqs, duplicated, "duplicated sequences");
    assert_eq!(reordered, expected_reordered, "reordered sequences");
    let sum = stats.summary();
    assert_eq!(sum.lost, dropped.len() as u64);
    assert_eq!(sum.duplicates, duplicated.len() as u64);
    assert_eq!(sum.received, count - dropped.len() as u64);

    // And the whole session chain reports the same counts.
    let deliveries: Vec<Delivery> = out
        .iter()
        .map(|(s, t)| Delivery {
            seq: *s,
            send_off: s * (1_000_000_000 / 50_000),
            recv_off: t + 30_000,
        })
        .collect();
    let (report, ranges) = run_session(&deliveries, count);
    assert_eq!(report.stats.lost, dropped.len() as u64);
    assert_eq!(report.stats.duplicates, duplicated.len() as u64);
    assert_eq!(report.stats.reordered, expected_reordered.len() as u64);
    let lost2: BTreeSet<u64> = ranges.iter().flat_map(|&(a, b)| a..=b).collect();
    assert_eq!(lost2, dropped);
}

/// The regression table: loss × reorder × send rate through a 20 Mbit/s bottleneck, measured
/// by the full session chain and compared with the checked-in snapshot. Any change in
/// accounting (or in the impairment's decisions) shows up as a diff of this table.
#[test]
fn impairment_sweep_matches_the_snapshot() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/snapshots/impair_sweep.csv");
    let mut table = String::from(
        "loss,reorder,pps,sent,received,lost,loss_periods,loss_period_max,duplicates,reordered,reorder_extent_max,n_reordered_1,n_reordered_2,n_reordered_3,late,impair_dropped,impair_queue_dropped\n",
    );
    let count = 20_000;
    for loss in ["0%", "1%", "5%"] {
        for reorder in ["0%", "2%:3"] {
            for pps in [1_000u64, 10_000, 50_000] {
                let spec =
                    format!("loss={loss},reorder={reorder},dup=0.5%,rate=20M,queue=32K,seed=2026");
                let (fates, out) = impaired_link(&spec, pps, count);
                let gap = 1_000_000_000 / pps;
                let deliveries: Vec<Delivery> = out
                    .iter()
                    .map(|(s, t)| Delivery {
                        seq: *s,
                        send_off: s * gap,
                        recv_off: t + 30_000,
                    })
                    .collect();
                let (report, _) = run_session(&deliveries, count);
                let st = report.stats;
                let dropped = fates
                    .values()
                    .filter(|f| matches!(f, Fate::Dropped))
                    .count();
                let qdropped = fates
                    .values()
                    .filter(|f| matches!(f, Fate::QueueDropped))
                    .count();
                assert_eq!(st.lost, (dropped + qdropped) as u64, "{spec} at {pps} pps");
                table.push_str(&format!(
                    "{loss},{reorder},{pps},{},{},{},{},{},{},{},{},{},{},{},{},{dropped},{qdropped}\n",
                    st.expected,
                    st.received,
                    st.lost,
                    st.loss_periods,
                    st.loss_period_max,
                    st.duplicates,
                    st.reordered,
                    st.reorder_extent_max,
                    st.n_reordered[0],
                    st.n_reordered[1],
                    st.n_reordered[2],
                    st.late,
                ));
            }
        }
    }
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &table).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing {}: run with UPDATE_SNAPSHOTS=1 once and commit it",
            path.display()
        )
    });
    if expected != table {
        let diff: Vec<String> = expected
            .lines()
            .zip(table.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        panic!(
            "the accounting changed against the snapshot:\n{}",
            diff.join("\n")
        );
    }
}
