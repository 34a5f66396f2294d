//! The receiver's numbers through a whole session on a manual clock: interval rows count each
//! lost datagram in the interval in which it was sent (and add up to the run), rows are printed
//! once final, and one-way latency is reported signed when the clocks disagree.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use udplab::report::{self, Header};
use udplab::session::{
    ReceiverServer, SenderControl, SenderEvent, ServerConfig, ServerEvent, TestParams,
};
use udplab::summary::{IntervalRow, ReceiverReport, RunReport};
use udplab::time::ManualClock;
use udplab::wire::{DATA_HEADER_LEN, DataHeader, Kind};

const WALL0: u64 = 1_800_000_000_000_000_000;
const PAYLOAD: usize = 100;
const MS: u64 = 1_000_000;

/// A session at 1000 datagrams/s, 1 s interval rows and Tmax 1 s.
struct Sim {
    clock: ManualClock,
    server: ReceiverServer,
    ctl: SenderControl,
    peer: SocketAddr,
    echo: [u8; DATA_HEADER_LEN],
    /// Receiver rows in the order they were announced, with the test time (ms) they came at.
    rows: Vec<(u64, IntervalRow)>,
    results: Option<ReceiverReport>,
    /// The receiver's wall clock minus the sender's.
    receiver_wall_offset: i64,
}

impl Sim {
    fn new(receiver_wall_offset: i64) -> Sim {
        let clock = ManualClock::new(WALL0);
        let params = TestParams {
            payload_size: PAYLOAD as u32,
            echo: false,
            interval: Duration::from_secs(1),
            tmax: Duration::from_secs(1),
            count: 0,
            duration: Duration::ZERO,
            rate_bps: 0,
            pps_milli: 1_000_000,
            loss_ranges: false,
            pattern: udplab::wire::HelloPattern::Cbr,
            marking: Default::default(),
            omit: Duration::ZERO,
            reliable: None,
        };
        let server = ReceiverServer::new(ServerConfig {
            max_sessions: 1,
            rcvbuf: Default::default(),
            sndbuf: Default::default(),
            timestamp_source: "sim".into(),
            record_loss_ranges: false,
            ..ServerConfig::default()
        });
        let ctl = SenderControl::new(0x5eed, params, clock.now());
        let mut sim = Sim {
            clock,
            server,
            ctl,
            peer: "192.0.2.7:5000".parse().unwrap(),
            echo: [0; DATA_HEADER_LEN],
            rows: Vec::new(),
            results: None,
            receiver_wall_offset,
        };
        sim.pump();
        sim
    }

    fn receiver_wall(&self) -> u64 {
        self.clock
            .wall_ns()
            .wrapping_add_signed(self.receiver_wall_offset)
    }

    fn ms(&self) -> u64 {
        (self.clock.wall_ns() - WALL0) / MS
    }

    fn pump(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(m) = self.ctl.poll_transmit() {
                let wall = self.receiver_wall();
                self.server
                    .handle_datagram(self.clock.now(), wall, self.peer, &m, &mut self.echo);
                moved = true;
            }
            while let Some((_, m)) = self.server.poll_transmit() {
                self.ctl.handle_datagram(self.clock.now(), &m);
                moved = true;
            }
            while let Some(ev) = self.server.poll_event() {
                if let ServerEvent::Interval { row, .. } = ev {
                    self.rows.push((self.ms(), *row));
                }
            }
            while let Some(ev) = self.ctl.poll_event() {
                match ev {
                    SenderEvent::Results(r) => self.results = Some(*r),
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
    }

    fn timeouts(&mut self) {
        if self
            .server
            .poll_timeout()
            .is_some_and(|t| self.clock.now() >= t)
        {
            self.server.handle_timeout(self.clock.now());
        }
        self.ctl.handle_timeout(self.clock.now());
        self.pump();
    }

    /// Sends `count` datagrams, one per ms; those in `dropped` never arrive, the others arrive
    /// `delay` later (in send order). Then Fin, Tmax, results.
    fn run(mut self, count: u64, dropped: &BTreeSet<u64>, delay: Duration) -> Sim {
        let start = self.clock.now();
        let mut buf = [0u8; PAYLOAD];
        for seq in 0..count {
            let send_at = start + Duration::from_millis(seq);
            self.clock.advance_to(send_at);
            self.timeouts();
            if dropped.contains(&seq) {
                continue;
            }
            let send_ns = self.clock.wall_ns();
            self.clock.advance(delay);
            DataHeader {
                session_id: 0x5eed,
                seq,
                send_ns,
            }
            .write(Kind::Data, &mut buf);
            let wall = self.receiver_wall();
            self.server
                .handle_datagram(self.clock.now(), wall, self.peer, &buf, &mut self.echo);
        }
        self.clock.advance_to(start + Duration::from_millis(count));
        self.ctl
            .finish(self.clock.now(), count, count * PAYLOAD as u64, 0);
        self.pump();
        for _ in 0..400 {
            if self.results.is_some() {
                break;
            }
            self.clock.advance(Duration::from_millis(10));
            self.timeouts();
        }
        assert!(self.results.is_some(), "results came back");
        self
    }
}

fn lost_in(rows: &[IntervalRow]) -> Vec<u64> {
    rows.iter()
        .map(|r| r.stats.as_ref().expect("receiver row").lost)
        .collect()
}

/// The case: losses in the first second are declared a Tmax later, yet row 0 must hold
/// exactly them, later rows exactly theirs, and the rows must add up to the run total.
#[test]
fn each_lost_datagram_is_in_the_row_of_its_send_time() {
    let row0: BTreeSet<u64> = (100..=199).chain([500, 998, 999]).collect();
    let row1: BTreeSet<u64> = (1200..=1209).collect();
    let row2: BTreeSet<u64> = [2500, 2998, 2999].into();
    let dropped: BTreeSet<u64> = row0.iter().chain(&row1).chain(&row2).copied().collect();
    let sim = Sim::new(0).run(3000, &dropped, Duration::from_micros(300));
    let report = sim.results.as_ref().unwrap();
    let rows: Vec<IntervalRow> = report.intervals.clone();
    assert_eq!(
        rows.len(),
        4,
        "three full rows and the partial one: {rows:#?}"
    );
    assert_eq!(lost_in(&rows), vec![103, 10, 3, 0]);
    let periods: Vec<(u64, u64)> = rows
        .iter()
        .map(|r| {
            let s = r.stats.as_ref().unwrap();
            (s.loss_periods, s.loss_period_max)
        })
        .collect();
    assert_eq!(periods, vec![(3, 100), (1, 10), (2, 2), (0, 0)]);
    // Received by arrival: everything of a second but its losses (each arrives 0.3 ms late).
    let received: Vec<u64> = rows
        .iter()
        .map(|r| r.stats.as_ref().unwrap().received)
        .collect();
    assert_eq!(received, vec![1000 - 103, 1000 - 10, 1000 - 3, 0]);
    // Rows add up to the run.
    assert_eq!(lost_in(&rows).iter().sum::<u64>(), report.stats.lost);
    assert_eq!(report.stats.lost, dropped.len() as u64);
    let sum_periods: u64 = periods.iter().map(|p| p.0).sum();
    assert_eq!(sum_periods, report.stats.loss_periods);
    // The rows printed live are exactly the kept rows, in order, each printed once, and no
    // earlier than Tmax after its interval ended (when its losses are final).
    let live: Vec<&IntervalRow> = sim.rows.iter().map(|(_, r)| r).collect();
    assert_eq!(live, rows.iter().collect::<Vec<_>>());
    for (at_ms, row) in &sim.rows[..3] {
        let end_ms = (row.end_s * 1000.0).round() as u64;
        assert!(
            *at_ms >= end_ms + 1000,
            "row ending {end_ms} ms printed at {at_ms} ms"
        );
        assert!(
            *at_ms <= end_ms + 1000 + 200,
            "row ending {end_ms} ms printed at {at_ms} ms"
        );
    }
}

/// A receiver whose wall clock is 40 ms behind the sender's measures delays of 300 µs - 40 ms:
/// the report keeps them negative and warns, PDV is unaffected.
#[test]
fn a_receiver_clock_behind_gives_signed_latency_and_a_warning() {
    let sim = Sim::new(-40 * MS as i64).run(2000, &BTreeSet::new(), Duration::from_micros(300));
    let report = sim.results.unwrap();
    let lat = report.stats.latency.expect("latency");
    assert_eq!(
        (lat.min_ns, lat.max_ns),
        (300_000 - 40 * MS as i64, 300_000 - 40 * MS as i64)
    );
    assert_eq!(lat.p50_ns, lat.min_ns);
    assert_eq!(report.stats.negative_delays, 2000);
    let pdv = report.stats.pdv.expect("pdv");
    assert_eq!((pdv.min_ns, pdv.max_ns), (0, 0));
    let warning = report.stats.clock_warning().expect("warning");
    assert!(
        warning.starts_with("one-way delay minimum is -39.700 ms"),
        "{warning}"
    );

    // The writers print the sign.
    let run = RunReport {
        receiver: Some(report),
        ..RunReport::default()
    };
    let mut csv = Vec::new();
    report::write_summary_csv(&mut csv, &run, Header::Include).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(col("latency_min_us"), "-39700.000");
    assert_eq!(col("latency_p50_us"), "-39700.000");
    let mut text = Vec::new();
    report::write_human(&mut text, &run).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("one-way latency min") && text.contains("-39.7 ms"),
        "{text}"
    );
}
