//! Bidirectional tests (`send --bidir`) on the sans-IO session, on a manual clock: one
//! validated session measures the client's Data while the driver sends, the results wait for
//! both halves whichever ends first, and Abort, silence and Ctrl-C stop the sending half
//! without losing the measured one.

use super::*;
use crate::time::ManualClock;

const PEER: &str = "192.0.2.9:4000";
const ID: u32 = 0xb1d1;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// 1000 datagrams of 100 B at 1000/s.
fn params() -> TestParams {
    TestParams {
        payload_size: 100,
        echo: false,
        interval: Duration::from_secs(1),
        tmax: Duration::from_millis(300),
        count: 1000,
        duration: Duration::ZERO,
        rate_bps: 800_000,
        pps_milli: 1_000_000,
        loss_ranges: false,
        pattern: HelloPattern::Cbr,
        marking: Default::default(),
        omit: Duration::ZERO,
        reliable: None,
    }
}

/// Delivers everything queued on both sides until nothing moves; returns how many datagrams
/// the receiver sent anywhere but PEER (none, if it behaves).
fn pump(clock: &ManualClock, ctl: &mut SenderControl, srv: &mut ReceiverServer) -> usize {
    let mut elsewhere = 0;
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    loop {
        let mut moved = false;
        while let Some(m) = ctl.poll_transmit() {
            srv.handle_datagram(clock.now(), clock.wall_ns(), addr(PEER), &m, &mut echo);
            moved = true;
        }
        while let Some((dst, m)) = srv.poll_transmit() {
            if dst == addr(PEER) {
                ctl.handle_datagram(clock.now(), &m);
            } else {
                elsewhere += 1;
            }
            moved = true;
        }
        if !moved {
            return elsewhere;
        }
    }
}

fn events(srv: &mut ReceiverServer) -> Vec<ServerEvent> {
    std::iter::from_fn(|| srv.poll_event()).collect()
}

/// A bidirectional test accepted from PEER, and the receiver's events up to then.
fn accepted(clock: &ManualClock, srv: &mut ReceiverServer) -> (SenderControl, Vec<ServerEvent>) {
    let mut ctl = SenderControl::bidir(ID, params(), clock.now());
    assert_eq!(pump(clock, &mut ctl, srv), 0);
    assert!(matches!(
        ctl.poll_event(),
        Some(SenderEvent::Accepted { .. })
    ));
    (ctl, events(srv))
}

/// The client's Data with sequences `seqs`, from PEER.
fn data(clock: &ManualClock, srv: &mut ReceiverServer, seqs: impl Iterator<Item = u64>) {
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    for seq in seqs {
        let mut buf = [0u8; 100];
        DataHeader {
            session_id: ID,
            seq,
            send_ns: clock.wall_ns(),
        }
        .write(Kind::Data, &mut buf);
        assert!(!srv.handle_datagram(clock.now(), clock.wall_ns(), addr(PEER), &buf, &mut echo));
    }
}

fn sent_report(sent: u64) -> SenderReport {
    SenderReport {
        sent,
        sent_bytes: sent * 100,
        ..SenderReport::default()
    }
}

/// Steps the clock 100 ms at a time, pumping, until the client has its results (or gave up).
fn until_done(clock: &mut ManualClock, ctl: &mut SenderControl, srv: &mut ReceiverServer) {
    steps(clock, ctl, srv, 200);
}

/// At most `n` steps of 100 ms, pumping, ending early once the client is done.
fn steps(clock: &mut ManualClock, ctl: &mut SenderControl, srv: &mut ReceiverServer, n: usize) {
    for _ in 0..n {
        if ctl.is_done() {
            return;
        }
        clock.advance(Duration::from_millis(100));
        ctl.handle_timeout(clock.now());
        srv.handle_timeout(clock.now());
        pump(clock, ctl, srv);
    }
}

/// The client's two results: the receiver's measurement, then what it sent.
fn results(ctl: &mut SenderControl) -> (ReceiverReport, SenderReport, bool) {
    let Some(SenderEvent::Results(report)) = ctl.poll_event() else {
        panic!("the forward half's results first");
    };
    let Some(SenderEvent::SenderResults {
        report: sender,
        interrupted,
    }) = ctl.poll_event()
    else {
        panic!("then the reverse half's totals");
    };
    (*report, *sender, interrupted)
}

#[test]
fn a_bidir_test_measures_the_client_and_tells_the_driver_to_send_to_it() {
    let clock = ManualClock::new(1_000);
    let mut srv = ReceiverServer::new(ServerConfig::default());
    let (_ctl, evs) = accepted(&clock, &mut srv);
    assert_eq!(
        evs,
        vec![
            ServerEvent::Started {
                session_id: ID,
                peer: addr(PEER),
                params: params(),
            },
            ServerEvent::StartSending {
                session_id: ID,
                peer: addr(PEER),
                params: params(),
            },
        ]
    );
    assert!(srv.memory_in_use() > 0, "the forward half keeps its window");
    data(&clock, &mut srv, 0..10);
    assert_eq!(srv.foreign_datagrams(), 0, "its Data is counted");
}

#[test]
fn a_bidir_test_beyond_the_reverse_limit_is_refused() {
    let clock = ManualClock::new(1_000);
    let mut srv = ReceiverServer::new(ServerConfig {
        max_reverse_bps: 100_000,
        ..ServerConfig::default()
    });
    let mut ctl = SenderControl::bidir(ID, params(), clock.now());
    pump(&clock, &mut ctl, &mut srv);
    assert!(matches!(
        ctl.poll_event(),
        Some(SenderEvent::Failed(ControlError::Rejected(_)))
    ));
    assert!(events(&mut srv).is_empty(), "nothing is measured or sent");
}

#[test]
fn results_wait_for_the_forward_half_when_the_sending_ends_first() {
    let mut clock = ManualClock::new(1_000);
    let mut srv = ReceiverServer::new(ServerConfig::default());
    let (mut ctl, _) = accepted(&clock, &mut srv);
    // The driver's data ends first: nothing is ready while the client still sends.
    srv.reverse_done(clock.now(), ID, sent_report(1000), false);
    assert_eq!(srv.active_sessions(), 1);
    data(&clock, &mut srv, (0..1000).filter(|s| s % 10 != 3));
    ctl.finish(clock.now(), 1000, 100_000, 0);
    pump(&clock, &mut ctl, &mut srv);
    until_done(&mut clock, &mut ctl, &mut srv);
    let (report, sender, interrupted) = results(&mut ctl);
    assert_eq!(report.stats.received, 900);
    assert_eq!(report.stats.lost, 100);
    assert!(!report.interrupted);
    assert_eq!(sender.sent, 1000);
    assert!(!interrupted);
}

#[test]
fn results_wait_for_the_sending_half_when_the_forward_half_ends_first() {
    let mut clock = ManualClock::new(1_000);
    let mut srv = ReceiverServer::new(ServerConfig::default());
    let (mut ctl, _) = accepted(&clock, &mut srv);
    data(&clock, &mut srv, 0..1000);
    ctl.finish(clock.now(), 1000, 100_000, 0);
    pump(&clock, &mut ctl, &mut srv);
    // Drained and measured; for 3 s the requests only keep the sending half alive (its
    // planned second is long over: the client waits for its totals all the same).
    steps(&mut clock, &mut ctl, &mut srv, 30);
    assert!(!ctl.is_done(), "no results before the totals");
    assert!(ctl.poll_event().is_none(), "and no failure");
    assert_eq!(srv.active_sessions(), 1);
    assert!(
        events(&mut srv)
            .iter()
            .any(|e| matches!(e, ServerEvent::Finished { .. })),
        "the forward half is reported when measured"
    );
    srv.reverse_done(clock.now(), ID, sent_report(777), false);
    until_done(&mut clock, &mut ctl, &mut srv);
    let (report, sender, _) = results(&mut ctl);
    assert_eq!(report.stats.received, 1000);
    assert_eq!(report.stats.lost, 0);
    assert_eq!(sender.sent, 777);
    assert_eq!(srv.active_sessions(), 0);
}

#[test]
fn the_clients_interruption_stops_the_sending_half_and_keeps_the_forward_totals() {
    let mut clock = ManualClock::new(1_000);
    let mut srv = ReceiverServer::new(ServerConfig::default());
    let (mut ctl, _) = accepted(&clock, &mut srv);
    data(&clock, &mut srv, (0..400).filter(|s| *s != 7));
    // Ctrl-C: the Fin with the totals, then the stop for the receiver's data.
    ctl.finish(clock.now(), 400, 40_000, 0);
    ctl.stop_bidir_reverse();
    pump(&clock, &mut ctl, &mut srv);
    let evs = events(&mut srv);
    assert!(
        evs.contains(&ServerEvent::StopSending { session_id: ID }),
        "{evs:?}"
    );
    srv.reverse_done(clock.now(), ID, sent_report(350), false);
    until_done(&mut clock, &mut ctl, &mut srv);
    let (report, sender, _) = results(&mut ctl);
    // The Fin's total ends the forward half: the lost one is counted, nothing is interrupted.
    assert_eq!(report.stats.received, 399);
    assert_eq!(report.stats.lost, 1);
    assert!(!report.interrupted);
    assert_eq!(sender.sent, 350);
}

#[test]
fn a_silent_client_ends_the_forward_half_and_stops_the_sending_one() {
    let mut clock = ManualClock::new(1_000);
    let mut srv = ReceiverServer::new(ServerConfig::default());
    let (_ctl, _) = accepted(&clock, &mut srv);
    data(&clock, &mut srv, 0..50);
    clock.advance(PEER_SILENCE_TIMEOUT + Duration::from_secs(1));
    srv.handle_timeout(clock.now());
    srv.handle_timeout(clock.now());
    let evs = events(&mut srv);
    assert!(evs.iter().any(
        |e| matches!(e, ServerEvent::Finished { report, .. } if report.interrupted && report.stats.received == 50)
    ));
    assert!(evs.contains(&ServerEvent::StopSending { session_id: ID }));
}

#[test]
fn an_interrupted_receiver_pushes_both_halves_to_the_client_while_its_data_flows() {
    let mut clock = ManualClock::new(1_000);
    let mut srv = ReceiverServer::new(ServerConfig::default());
    let (mut ctl, _) = accepted(&clock, &mut srv);
    data(&clock, &mut srv, 0..300);
    clock.advance(Duration::from_millis(300));
    // Ctrl-C at the receiver: its data thread stops and hands over its totals (push), then
    // every running test is interrupted.
    srv.reverse_done(clock.now(), ID, sent_report(290), true);
    srv.interrupt_all(clock.now());
    assert_eq!(pump(&clock, &mut ctl, &mut srv), 0);
    assert!(ctl.is_done(), "the pushed results end the client's test");
    let (report, sender, interrupted) = results(&mut ctl);
    assert!(report.interrupted);
    assert_eq!(report.stats.received, 300);
    assert_eq!(sender.sent, 290);
    assert!(interrupted);
}

#[test]
fn a_bidir_hello_from_an_unvalidated_address_starts_nothing() {
    let clock = ManualClock::new(1_000);
    let mut srv = ReceiverServer::new(ServerConfig::default());
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    let mut hello = params().hello(ID);
    hello.bidir = true;
    // No cookie, then a forged one: each gets one retry answer, never larger than the Hello.
    for cookie in [0, 0x1234_5678_9abc_def0] {
        hello.cookie = cookie;
        let bytes = emit(&Message::Hello(hello));
        srv.handle_datagram(clock.now(), 1, addr(PEER), &bytes, &mut echo);
        let out: Vec<_> = std::iter::from_fn(|| srv.poll_transmit()).collect();
        assert_eq!(out.len(), 1);
        assert!(out[0].1.len() <= bytes.len());
    }
    assert!(
        events(&mut srv).is_empty(),
        "nothing measured, nothing sent"
    );
    assert_eq!(srv.active_sessions(), 0);
}
