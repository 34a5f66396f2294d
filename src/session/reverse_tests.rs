//! Reverse tests (`send -R`) on the sans-IO session, on a manual clock: the receiver is told
//! to send only after address validation and within its limits, stops on Abort, silence or
//! Ctrl-C, and its totals come back to the client as the results.

use super::*;
use crate::time::ManualClock;

const PEER: &str = "192.0.2.9:4000";
const STRANGER: &str = "198.51.100.3:5000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// 10 000 datagrams of 100 B at 1000/s: 800 kbit/s for 10 s.
fn params() -> TestParams {
    TestParams {
        payload_size: 100,
        echo: false,
        interval: Duration::from_secs(1),
        tmax: Duration::from_millis(300),
        count: 10_000,
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

fn server() -> ReceiverServer {
    ReceiverServer::new(ServerConfig::default())
}

/// Delivers everything queued on both sides until nothing moves; returns what the receiver
/// sent anywhere but `from` (nothing, if it behaves).
fn pump(
    clock: &ManualClock,
    from: SocketAddr,
    ctl: &mut SenderControl,
    srv: &mut ReceiverServer,
) -> Vec<SocketAddr> {
    let mut elsewhere = Vec::new();
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    loop {
        let mut moved = false;
        while let Some(m) = ctl.poll_transmit() {
            srv.handle_datagram(clock.now(), clock.wall_ns(), from, &m, &mut echo);
            moved = true;
        }
        while let Some((dst, m)) = srv.poll_transmit() {
            if dst == from {
                ctl.handle_datagram(clock.now(), &m);
            } else {
                elsewhere.push(dst);
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

/// A reverse test accepted from PEER: the client, and the session id.
fn accepted(clock: &ManualClock, srv: &mut ReceiverServer, p: TestParams) -> (SenderControl, u32) {
    let mut ctl = SenderControl::with_direction(0x5eed, p, true, clock.now());
    assert!(pump(clock, addr(PEER), &mut ctl, srv).is_empty());
    assert!(matches!(
        ctl.poll_event(),
        Some(SenderEvent::Accepted { .. })
    ));
    (ctl, 0x5eed)
}

fn sent_report(sent: u64) -> SenderReport {
    SenderReport {
        sent,
        sent_bytes: sent * 100,
        send_errors: 2,
        ..SenderReport::default()
    }
}

#[test]
fn a_validated_reverse_test_tells_the_driver_to_send_to_the_peer_only() {
    let clock = ManualClock::new(1_000);
    let mut srv = server();
    let (_ctl, id) = accepted(&clock, &mut srv, params());
    let evs = events(&mut srv);
    assert_eq!(
        evs,
        vec![ServerEvent::StartSending {
            session_id: id,
            peer: addr(PEER),
            params: params(),
        }],
        "no receiver-side measurement starts"
    );
    assert_eq!(srv.active_sessions(), 1);
    assert_eq!(
        srv.memory_in_use(),
        0,
        "the client measures: no window here"
    );
    // Its Data from the client would be foreign: the receiver measures nothing in it.
    let mut buf = [0u8; 100];
    DataHeader {
        session_id: id,
        seq: 0,
        send_ns: 1,
    }
    .write(Kind::Data, &mut buf);
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    assert!(!srv.handle_datagram(clock.now(), 1, addr(PEER), &buf, &mut echo));
    assert_eq!(srv.foreign_datagrams(), 1);
}

#[test]
fn a_reverse_hello_from_an_unvalidated_or_forged_address_starts_nothing() {
    let clock = ManualClock::new(1_000);
    let mut srv = server();
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    let mut hello = params().hello(7);
    hello.reverse = true;
    for cookie in [0, 0x1234_5678_9abc_def0] {
        hello.cookie = cookie;
        let bytes = emit(&Message::Hello(hello));
        srv.handle_datagram(clock.now(), 1, addr(STRANGER), &bytes, &mut echo);
        let out: Vec<_> = std::iter::from_fn(|| srv.poll_transmit()).collect();
        assert_eq!(out.len(), 1, "one retry answer");
        assert!(
            out[0].1.len() <= bytes.len(),
            "never more bytes than it sent"
        );
        assert!(matches!(
            wire::parse(&out[0].1),
            Ok(Message::HelloAck(HelloAck {
                status: HelloStatus::Retry,
                ..
            }))
        ));
    }
    assert!(events(&mut srv).is_empty(), "nothing is sent to it");
    assert_eq!(srv.active_sessions(), 0);
}

#[test]
fn a_reverse_test_beyond_the_limits_is_refused_with_a_reason() {
    let clock = ManualClock::new(1_000);
    let too_fast = TestParams {
        pps_milli: 200_000_000, // 200k/s × 100 B = 160 Mbit/s > 100 Mbit/s
        ..params()
    };
    let unpaced = TestParams {
        pps_milli: 0,
        rate_bps: 0,
        pattern: HelloPattern::Unpaced,
        ..params()
    };
    let endless = TestParams {
        count: 0,
        duration: Duration::ZERO,
        ..params()
    };
    let too_long = TestParams {
        count: 0,
        duration: MAX_REVERSE_DURATION + Duration::from_secs(1),
        ..params()
    };
    for (p, says) in [
        (too_fast, "100000000 bit/s (recv --max-reverse-rate)"),
        (unpaced, "only paced ones"),
        (endless, "at most 300 s"),
        (too_long, "at most 300 s"),
    ] {
        let mut srv = server();
        let mut ctl = SenderControl::with_direction(9, p, true, clock.now());
        pump(&clock, addr(PEER), &mut ctl, &mut srv);
        match ctl.poll_event() {
            Some(SenderEvent::Failed(ControlError::Rejected(text))) => {
                assert!(text.contains(says), "{text}")
            }
            other => panic!("{p:?}: {other:?}"),
        }
        assert!(events(&mut srv).is_empty());
        assert_eq!(srv.refused(), 1);
    }
    // A receiver with --max-reverse-rate 0 sends none.
    let mut srv = ReceiverServer::new(ServerConfig {
        max_reverse_bps: 0,
        ..ServerConfig::default()
    });
    let mut ctl = SenderControl::with_direction(9, params(), true, clock.now());
    pump(&clock, addr(PEER), &mut ctl, &mut srv);
    assert!(matches!(
        ctl.poll_event(),
        Some(SenderEvent::Failed(ControlError::Rejected(_)))
    ));
}

#[test]
fn the_clients_requests_keep_the_test_alive_and_its_silence_stops_the_data() {
    let mut clock = ManualClock::new(1_000);
    let mut srv = server();
    let (mut ctl, id) = accepted(&clock, &mut srv, params());
    ctl.await_reverse_results(clock.now(), Duration::from_secs(60));
    events(&mut srv);
    // 30 s of requests every CONTROL_RETRY: answered by nothing (no results yet), and the
    // data keeps flowing.
    for _ in 0..150 {
        clock.advance(CONTROL_RETRY);
        ctl.handle_timeout(clock.now());
        srv.handle_timeout(clock.now());
        let mut echo = [0u8; wire::DATA_HEADER_LEN];
        while let Some(m) = ctl.poll_transmit() {
            srv.handle_datagram(clock.now(), 1, addr(PEER), &m, &mut echo);
        }
        assert!(
            srv.poll_transmit().is_none(),
            "a keep-alive is not answered"
        );
    }
    assert!(events(&mut srv).is_empty());
    // The client goes silent: the data stops after PEER_SILENCE_TIMEOUT, not before.
    clock.advance(PEER_SILENCE_TIMEOUT - Duration::from_millis(1));
    srv.handle_timeout(clock.now());
    assert!(events(&mut srv).is_empty());
    clock.advance(Duration::from_millis(1));
    srv.handle_timeout(clock.now());
    assert_eq!(
        events(&mut srv),
        vec![ServerEvent::StopSending { session_id: id }]
    );
    // Once only.
    clock.advance(PEER_SILENCE_TIMEOUT);
    srv.handle_timeout(clock.now());
    assert!(events(&mut srv).is_empty());
}

#[test]
fn the_senders_totals_come_back_as_the_results() {
    let mut clock = ManualClock::new(1_000);
    let mut srv = server();
    let (mut ctl, id) = accepted(&clock, &mut srv, params());
    ctl.await_reverse_results(clock.now(), Duration::from_secs(10));
    events(&mut srv);
    clock.advance(Duration::from_secs(10));
    srv.reverse_done(clock.now(), id, sent_report(9_998), false);
    assert_eq!(srv.completed_with_data(), 1);
    assert_eq!(srv.active_sessions(), 0);
    ctl.handle_timeout(clock.now());
    assert!(pump(&clock, addr(PEER), &mut ctl, &mut srv).is_empty());
    match ctl.poll_event() {
        Some(SenderEvent::SenderResults {
            report: r,
            interrupted: false,
        }) => {
            assert_eq!((r.sent, r.sent_bytes, r.send_errors), (9_998, 999_800, 2));
        }
        other => panic!("{other:?}"),
    }
    assert!(ctl.is_done());
    // A stranger who knows the id and asks gets nothing.
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    let req = emit(&Message::ResultReq {
        session_id: id,
        secret: 1,
    });
    srv.handle_datagram(clock.now(), 1, addr(STRANGER), &req, &mut echo);
    assert!(srv.poll_transmit().is_none());
}

#[test]
fn the_clients_abort_stops_the_data_and_its_totals_still_come_back() {
    let mut clock = ManualClock::new(1_000);
    let mut srv = server();
    let (mut ctl, id) = accepted(&clock, &mut srv, params());
    ctl.await_reverse_results(clock.now(), Duration::from_secs(10));
    events(&mut srv);
    clock.advance(Duration::from_secs(2));
    // A stranger's Abort (wrong address, no secret) changes nothing.
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    let forged = emit(&Message::Abort {
        session_id: id,
        reason: AbortReason::Interrupted,
        secret: ctl.secret(),
    });
    srv.handle_datagram(clock.now(), 1, addr(STRANGER), &forged, &mut echo);
    assert!(events(&mut srv).is_empty());
    // Ctrl-C at the client.
    ctl.stop_reverse(clock.now());
    pump(&clock, addr(PEER), &mut ctl, &mut srv);
    assert_eq!(
        events(&mut srv),
        vec![ServerEvent::StopSending { session_id: id }]
    );
    srv.reverse_done(clock.now(), id, sent_report(2_000), false);
    clock.advance(CONTROL_RETRY);
    ctl.handle_timeout(clock.now());
    pump(&clock, addr(PEER), &mut ctl, &mut srv);
    assert!(matches!(
        ctl.poll_event(),
        Some(SenderEvent::SenderResults { report: r, interrupted: false }) if r.sent == 2_000
    ));
}

#[test]
fn ctrl_c_at_the_receiver_stops_the_data_and_pushes_the_totals_to_the_peer() {
    let mut clock = ManualClock::new(1_000);
    let mut srv = server();
    let (mut ctl, id) = accepted(&clock, &mut srv, params());
    ctl.await_reverse_results(clock.now(), Duration::from_secs(10));
    events(&mut srv);
    clock.advance(Duration::from_secs(1));
    // The driver halts and joins its thread first, then interrupts the rest.
    srv.reverse_done(clock.now(), id, sent_report(1_000), true);
    srv.interrupt_all(clock.now());
    let out: Vec<_> = std::iter::from_fn(|| srv.poll_transmit()).collect();
    assert!(!out.is_empty());
    assert!(out.iter().all(|(dst, _)| *dst == addr(PEER)));
    for (_, m) in &out {
        assert!(
            matches!(wire::parse(m), Ok(Message::ResultChunk(_))),
            "results only, no Abort"
        );
        ctl.handle_datagram(clock.now(), m);
    }
    assert!(matches!(
        ctl.poll_event(),
        Some(SenderEvent::SenderResults { report: r, interrupted: true }) if r.sent == 1_000
    ));
    // interrupt_all on a still-sending reverse test asks the driver to stop it.
    let (_ctl2, id2) = {
        let mut c = SenderControl::with_direction(0x77, params(), true, clock.now());
        pump(&clock, addr(STRANGER), &mut c, &mut srv);
        (c, 0x77)
    };
    events(&mut srv);
    srv.interrupt_all(clock.now());
    assert_eq!(
        events(&mut srv),
        vec![ServerEvent::StopSending { session_id: id2 }]
    );
    assert!(
        srv.poll_transmit().is_none(),
        "its results are not ready yet"
    );
}

#[test]
fn a_forward_hello_and_its_results_are_unchanged() {
    let p = params();
    let mut forward = SenderControl::new(3, p, ManualClock::new(1).now());
    let hello = forward.poll_transmit().unwrap();
    assert_eq!(hello.len(), wire::HELLO_LEN);
    assert_eq!(hello[15] & 0x08, 0, "bit 3 clear");
    let mut reverse = SenderControl::with_direction(3, p, true, ManualClock::new(1).now());
    let rhello = reverse.poll_transmit().unwrap();
    assert_eq!(rhello[15] & 0x08, 0x08);
    assert_eq!(hello[..15], rhello[..15]);
    // A forward test's results envelope has no `sender` member.
    let (_, chunks) = result_chunks(ResultsEnvelope {
        version: REPORT_VERSION,
        report: ReceiverReport::default(),
        sender: None,
        interrupted: false,
    });
    let json: Vec<u8> = chunks.concat();
    assert!(!String::from_utf8(json).unwrap().contains("\"sender\""));
}
