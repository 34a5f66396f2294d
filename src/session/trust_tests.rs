//! The receiver's trust rules on the sans-IO session, on a manual clock: address validation,
//! ownership, no amplification, bounded memory, no lockout, plausibility, other versions.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::time::ManualClock;

const PEER: &str = "192.0.2.9:4000";
/// Same host as PEER, another port: a stranger on the sender's machine.
const SAME_HOST: &str = "192.0.2.9:4001";
const STRANGER: &str = "198.51.100.3:5000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn params() -> TestParams {
    TestParams {
        payload_size: 100,
        echo: true,
        interval: Duration::from_secs(1),
        tmax: Duration::from_millis(300),
        count: 0,
        duration: Duration::ZERO,
        rate_bps: 0,
        pps_milli: 1_000_000,
        loss_ranges: false,
        pattern: HelloPattern::Cbr,
        marking: Default::default(),
        omit: Duration::ZERO,
        reliable: None,
    }
}

fn server(max_sessions: usize) -> ReceiverServer {
    ReceiverServer::new(ServerConfig {
        max_sessions,
        ..ServerConfig::default()
    })
}

fn emitted(msg: &Message<'_>) -> Vec<u8> {
    emit(msg)
}

fn hello(id: u32, p: &TestParams, cookie: u64) -> Vec<u8> {
    let mut h = p.hello(id);
    h.cookie = cookie;
    emitted(&Message::Hello(h))
}

fn data(id: u32, seq: u64) -> [u8; 100] {
    let mut buf = [0u8; 100];
    DataHeader {
        session_id: id,
        seq,
        send_ns: 1,
    }
    .write(Kind::Data, &mut buf);
    buf
}

/// Everything the receiver sent, parsed.
fn replies(srv: &mut ReceiverServer) -> Vec<(SocketAddr, Vec<u8>)> {
    std::iter::from_fn(|| srv.poll_transmit()).collect()
}

fn ack_of(bytes: &[u8]) -> HelloAck {
    match wire::parse(bytes) {
        Ok(Message::HelloAck(a)) => a,
        other => panic!("not a HelloAck: {other:?}"),
    }
}

/// Delivers everything queued on both sides until nothing moves, sender at `from`.
fn pump_from(
    clock: &ManualClock,
    from: SocketAddr,
    ctl: &mut SenderControl,
    srv: &mut ReceiverServer,
) {
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    for _ in 0..100 {
        let mut moved = false;
        while let Some(m) = ctl.poll_transmit() {
            srv.handle_datagram(clock.now(), clock.wall_ns(), from, &m, &mut echo);
            moved = true;
        }
        while let Some((to, m)) = srv.poll_transmit() {
            if to == from {
                ctl.handle_datagram(clock.now(), &m);
            }
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// A validated, accepted test from PEER: the sender and its secret.
fn accepted(
    clock: &ManualClock,
    srv: &mut ReceiverServer,
    id: u32,
    p: TestParams,
) -> SenderControl {
    let mut ctl = SenderControl::new(id, p, clock.now());
    pump_from(clock, addr(PEER), &mut ctl, srv);
    assert!(
        matches!(ctl.poll_event(), Some(SenderEvent::Accepted { .. })),
        "the test was accepted"
    );
    assert_ne!(ctl.secret(), 0);
    ctl
}

/// Runs `ctl`'s test to its results from PEER, delivering `seqs` first.
fn finish_test(
    clock: &mut ManualClock,
    srv: &mut ReceiverServer,
    ctl: &mut SenderControl,
    seqs: std::ops::Range<u64>,
) -> ReceiverReport {
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    let total = seqs.end;
    for seq in seqs {
        srv.handle_datagram(
            clock.now(),
            clock.wall_ns(),
            addr(PEER),
            &data(ctl.session_id(), seq),
            &mut echo,
        );
    }
    ctl.finish(clock.now(), total, total * 100, 0);
    for _ in 0..100 {
        pump_from(clock, addr(PEER), ctl, srv);
        if ctl.is_done() {
            break;
        }
        clock.advance(Duration::from_millis(50));
        ctl.handle_timeout(clock.now());
        srv.handle_timeout(clock.now());
    }
    loop {
        match ctl.poll_event() {
            Some(SenderEvent::Results(r)) => return *r,
            Some(SenderEvent::Failed(e)) => panic!("{e}"),
            Some(_) => {}
            None => panic!("no results"),
        }
    }
}

#[test]
fn siphash_matches_the_reference_vectors() {
    // SipHash-2-4 test vectors (Aumasson, Bernstein): key 00..0f, messages 00..(len-1).
    let key = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];
    let msg: Vec<u8> = (0u8..64).collect();
    assert_eq!(siphash24(key, &msg[..0]), 0x726f_db47_dd0e_0e31);
    assert_eq!(siphash24(key, &msg[..1]), 0x74f8_39c5_93dc_67fd);
    assert_eq!(siphash24(key, &msg[..15]), 0xa129_ca61_49be_45e5);
    assert_eq!(siphash24(key, &msg[..63]), 0x958a_324c_eb06_4572);
}

#[test]
fn a_first_hello_gets_a_stateless_retry_no_larger_than_it() {
    let clock = ManualClock::new(0);
    let mut srv = server(4);
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    let h = hello(5, &params(), 0);
    srv.handle_datagram(clock.now(), 0, addr(STRANGER), &h, &mut echo);
    let out = replies(&mut srv);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, addr(STRANGER));
    assert!(out[0].1.len() < h.len(), "{} < {}", out[0].1.len(), h.len());
    let ack = ack_of(&out[0].1);
    assert_eq!(ack.status, HelloStatus::Retry);
    assert_ne!(ack.cookie, 0);
    assert_eq!(ack.secret, 0);
    assert_eq!(srv.active_sessions(), 0, "nothing is kept for it");
    assert_eq!(srv.memory_in_use(), 0);
    assert_eq!(srv.poll_event(), None);
    assert_eq!(srv.retries_sent(), 1);
    // 10,000 half-open handshakes from 10,000 ports still keep nothing.
    for port in 0..10_000u16 {
        let from = SocketAddr::new(addr(STRANGER).ip(), port);
        srv.handle_datagram(
            clock.now(),
            0,
            from,
            &hello(u32::from(port), &params(), 0),
            &mut echo,
        );
    }
    assert_eq!(srv.active_sessions(), 0);
    assert_eq!(srv.memory_in_use(), 0);
    assert_eq!(replies(&mut srv).len(), 10_000);
}

#[test]
fn a_cookie_is_bound_to_address_port_and_id_and_expires() {
    let mut clock = ManualClock::new(0);
    let mut srv = server(4);
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    let p = params();
    let get_cookie = |srv: &mut ReceiverServer, clock: &ManualClock, from: &str, id: u32| {
        let mut echo = [0u8; wire::DATA_HEADER_LEN];
        srv.handle_datagram(clock.now(), 0, addr(from), &hello(id, &p, 0), &mut echo);
        ack_of(&replies(srv)[0].1).cookie
    };
    let status =
        |srv: &mut ReceiverServer, clock: &ManualClock, from: &str, id: u32, cookie: u64| {
            let mut echo = [0u8; wire::DATA_HEADER_LEN];
            srv.handle_datagram(
                clock.now(),
                0,
                addr(from),
                &hello(id, &p, cookie),
                &mut echo,
            );
            ack_of(&replies(srv)[0].1).status
        };
    let cookie = get_cookie(&mut srv, &clock, PEER, 9);
    // Another port of the same host, another host, another session id: not valid there.
    assert_eq!(
        status(&mut srv, &clock, SAME_HOST, 9, cookie),
        HelloStatus::Retry
    );
    assert_eq!(
        status(&mut srv, &clock, STRANGER, 9, cookie),
        HelloStatus::Retry
    );
    assert_eq!(
        status(&mut srv, &clock, PEER, 10, cookie),
        HelloStatus::Retry
    );
    assert_eq!(
        status(&mut srv, &clock, PEER, 9, cookie ^ 1),
        HelloStatus::Retry
    );
    assert_eq!(srv.active_sessions(), 0);
    // Expired: two buckets later.
    let old = cookie;
    clock.advance(COOKIE_BUCKET * 2);
    assert_eq!(status(&mut srv, &clock, PEER, 9, old), HelloStatus::Retry);
    assert_eq!(srv.active_sessions(), 0);
    // Fresh, and still valid in the next bucket.
    let cookie = get_cookie(&mut srv, &clock, PEER, 9);
    clock.advance(COOKIE_BUCKET);
    assert_eq!(
        status(&mut srv, &clock, PEER, 9, cookie),
        HelloStatus::Accepted
    );
    assert_eq!(srv.active_sessions(), 1);
    // A receiver with another secret does not take it.
    let mut other = ReceiverServer::new(ServerConfig {
        rng_seed: [8; 32],
        ..ServerConfig::default()
    });
    other.handle_datagram(clock.now(), 0, addr(PEER), &hello(9, &p, cookie), &mut echo);
    assert_eq!(ack_of(&replies(&mut other)[0].1).status, HelloStatus::Retry);
}

#[test]
fn strangers_control_messages_change_nothing_and_get_no_answer() {
    let mut clock = ManualClock::new(1_000_000_000);
    let mut srv = server(4);
    let mut ctl = accepted(&clock, &mut srv, 0x77, params());
    let secret = ctl.secret();
    assert_eq!(srv.poll_event_kinds(), ["started"]);
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    for seq in 0..100 {
        srv.handle_datagram(clock.now(), 1, addr(PEER), &data(0x77, seq), &mut echo);
    }
    let foreign_before = srv.foreign_datagrams();
    // Strangers who know the id (and even the secret: off-path they cannot, but a forged
    // address is checked too) from another port, another host; and PEER without the secret.
    let attacks: Vec<(SocketAddr, Vec<u8>)> = [SAME_HOST, STRANGER]
        .iter()
        .flat_map(|from| {
            [0, secret].into_iter().flat_map(move |s| {
                vec![
                    (
                        addr(from),
                        emitted(&Message::Fin(Fin {
                            session_id: 0x77,
                            total_sent: 10,
                            total_bytes: 0,
                            send_errors: 0,
                            secret: s,
                        })),
                    ),
                    (
                        addr(from),
                        emitted(&Message::Fin(Fin {
                            session_id: 0x77,
                            total_sent: 1_000_000_000,
                            total_bytes: 0,
                            send_errors: 0,
                            secret: s,
                        })),
                    ),
                    (
                        addr(from),
                        emitted(&Message::Abort {
                            session_id: 0x77,
                            reason: AbortReason::Error,
                            secret: s,
                        }),
                    ),
                    (
                        addr(from),
                        emitted(&Message::ResultReq {
                            session_id: 0x77,
                            secret: s,
                        }),
                    ),
                    (addr(from), data(0x77, 1_000_000).to_vec()),
                    (addr(from), data(0x77, 5).to_vec()),
                ]
            })
        })
        .chain([1u64, secret ^ 1, u64::MAX].into_iter().flat_map(|s| {
            vec![
                (
                    addr(PEER),
                    emitted(&Message::Fin(Fin {
                        session_id: 0x77,
                        total_sent: 10,
                        total_bytes: 0,
                        send_errors: 0,
                        secret: s,
                    })),
                ),
                (
                    addr(PEER),
                    emitted(&Message::Abort {
                        session_id: 0x77,
                        reason: AbortReason::Error,
                        secret: s,
                    }),
                ),
                (
                    addr(PEER),
                    emitted(&Message::ResultReq {
                        session_id: 0x77,
                        secret: s,
                    }),
                ),
            ]
        }))
        .collect();
    for (from, bytes) in &attacks {
        assert!(
            !srv.handle_datagram(clock.now(), 1, *from, bytes, &mut echo),
            "no echo to a stranger"
        );
    }
    assert!(replies(&mut srv).is_empty(), "nothing is answered");
    assert_eq!(
        srv.foreign_datagrams() - foreign_before,
        attacks.len() as u64
    );
    assert_eq!(srv.active_sessions(), 1, "the test runs on");
    assert_eq!(srv.poll_event_kinds(), Vec::<&str>::new());
    let r = finish_test(&mut clock, &mut srv, &mut ctl, 100..200);
    assert_eq!(r.stats.expected, 200);
    assert_eq!(r.stats.received, 200);
    assert_eq!(r.stats.lost, 0);
    assert_eq!(r.stats.duplicates, 0);
    assert!(!r.interrupted);
    assert_eq!(r.foreign_datagrams, attacks.len() as u64);
}

#[test]
fn results_go_only_to_the_validated_address_with_the_secret() {
    let mut clock = ManualClock::new(1_000_000_000);
    let mut srv = server(4);
    let mut ctl = accepted(&clock, &mut srv, 0x78, params());
    let secret = ctl.secret();
    let r = finish_test(&mut clock, &mut srv, &mut ctl, 0..50);
    assert_eq!(r.stats.received, 50);
    // The finished test's results linger: a stranger's request (any secret) gets nothing.
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    for (from, s) in [
        (SAME_HOST, secret),
        (STRANGER, secret),
        (STRANGER, 0),
        (PEER, secret ^ 4),
    ] {
        let req = emitted(&Message::ResultReq {
            session_id: 0x78,
            secret: s,
        });
        srv.handle_datagram(clock.now(), 0, addr(from), &req, &mut echo);
        assert!(replies(&mut srv).is_empty(), "{from} secret {s:x}");
    }
    // The owner still gets them, at its address.
    let req = emitted(&Message::ResultReq {
        session_id: 0x78,
        secret,
    });
    srv.handle_datagram(clock.now(), 0, addr(PEER), &req, &mut echo);
    let out = replies(&mut srv);
    assert!(!out.is_empty());
    assert!(out.iter().all(|(to, m)| *to == addr(PEER)
        && matches!(wire::parse(m), Ok(Message::ResultChunk(c)) if c.secret == secret)));
}

#[test]
fn a_hello_of_another_version_gets_a_short_answer_and_no_state() {
    let clock = ManualClock::new(0);
    let mut srv = server(4);
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    // A version 1 Hello: 64 bytes.
    let mut v1 = hello(0xabc, &params(), 0);
    v1.truncate(64);
    v1[2] = 1;
    srv.handle_datagram(clock.now(), 0, addr(STRANGER), &v1, &mut echo);
    let out = replies(&mut srv);
    assert_eq!(out.len(), 1);
    assert!(out[0].1.len() <= v1.len());
    assert_eq!(out[0].1, [0x55, 0x44, wire::VERSION, 17, 0, 0, 0x0a, 0xbc]);
    assert_eq!(srv.active_sessions(), 0);
    // Other kinds of another version are not answered.
    v1[3] = Kind::Fin as u8;
    srv.handle_datagram(clock.now(), 0, addr(STRANGER), &v1, &mut echo);
    assert!(replies(&mut srv).is_empty());
    // A sender of this version hearing a version 3 receiver says so.
    let mut ctl = SenderControl::new(0xabc, params(), clock.now());
    let _ = ctl.poll_transmit();
    ctl.handle_datagram(clock.now(), &[0x55, 0x44, 3, 17, 0, 0, 0x0a, 0xbc]);
    match ctl.poll_event() {
        Some(SenderEvent::Failed(e)) => {
            assert_eq!(e, ControlError::WrongVersion(3));
            assert_eq!(
                e.to_string(),
                "the receiver speaks udplab wire version 3; this udplab speaks version 2"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_sender_ignores_replies_without_the_secret() {
    let clock = ManualClock::new(0);
    let mut srv = server(4);
    let mut ctl = accepted(&clock, &mut srv, 0x79, params());
    let secret = ctl.secret();
    ctl.finish(clock.now(), 10, 1000, 0);
    let _ = ctl.poll_transmit();
    for s in [0, secret ^ 1] {
        ctl.handle_datagram(
            clock.now(),
            &emitted(&Message::Abort {
                session_id: 0x79,
                reason: AbortReason::Error,
                secret: s,
            }),
        );
        ctl.handle_datagram(
            clock.now(),
            &emitted(&Message::FinAck(FinAck {
                session_id: 0x79,
                tmax_ns: 0,
                secret: s,
            })),
        );
        ctl.handle_datagram(
            clock.now(),
            &emitted(&Message::ResultChunk(ResultChunk {
                session_id: 0x79,
                ready: true,
                index: 0,
                count: 1,
                secret: s,
                data: b"{}",
            })),
        );
    }
    assert_eq!(ctl.poll_event(), None, "nothing happened");
    assert!(!ctl.is_done());
    assert_eq!(ctl.ignored(), 6);
    assert!(
        !ctl.requesting_results(clock.now()),
        "still waiting for the real FinAck"
    );
}

#[test]
fn every_control_message_of_the_sender_carries_the_secret() {
    let mut clock = ManualClock::new(0);
    let mut srv = server(4);
    let mut ctl = accepted(&clock, &mut srv, 0x7a, params());
    let secret = ctl.secret();
    ctl.finish(clock.now(), 0, 0, 0);
    let fin = ctl.poll_transmit().unwrap();
    assert!(matches!(wire::parse(&fin), Ok(Message::Fin(f)) if f.secret == secret));
    clock.advance(FIN_TIMEOUT / 2);
    ctl.handle_timeout(clock.now());
    let again = ctl.poll_transmit().unwrap();
    assert_eq!(again, fin);
    ctl.abort();
    let abort = ctl.poll_transmit().unwrap();
    assert!(matches!(wire::parse(&abort), Ok(Message::Abort { secret: s, .. }) if s == secret));
}

#[test]
fn the_same_session_id_from_another_address_is_refused_clearly() {
    let clock = ManualClock::new(0);
    let mut srv = server(4);
    let _a = accepted(&clock, &mut srv, 0x55, params());
    let mut b = SenderControl::new(0x55, params(), clock.now());
    pump_from(&clock, addr(STRANGER), &mut b, &mut srv);
    match b.poll_event() {
        Some(SenderEvent::Failed(ControlError::Rejected(text))) => {
            assert!(
                text.contains("already runs a test with this session id"),
                "{text}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(srv.active_sessions(), 1);
}

#[test]
fn tmax_and_window_beyond_the_caps_are_refused_with_the_reason() {
    let clock = ManualClock::new(0);
    let mut srv = server(16);
    let long = TestParams {
        tmax: Duration::from_secs(600),
        ..params()
    };
    let mut ctl = SenderControl::new(1, long, clock.now());
    pump_from(&clock, addr(PEER), &mut ctl, &mut srv);
    match ctl.poll_event() {
        Some(SenderEvent::Failed(e)) => {
            assert_eq!(e.to_string(), "the receiver refuses Tmax above 60 s")
        }
        other => panic!("{other:?}"),
    }
    let fast = TestParams {
        pps_milli: u64::MAX,
        tmax: Duration::from_secs(60),
        ..params()
    };
    let mut ctl = SenderControl::new(2, fast, clock.now());
    pump_from(&clock, addr(PEER), &mut ctl, &mut srv);
    match ctl.poll_event() {
        Some(SenderEvent::Failed(e)) => assert!(
            e.to_string()
                .contains("rate × Tmax above 268435456 datagrams"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(srv.active_sessions(), 0);
    assert_eq!(srv.memory_in_use(), 0);
}

#[test]
fn the_memory_budget_refuses_a_test_that_does_not_fit() {
    let clock = ManualClock::new(0);
    let one = ReceiverStats::memory_for(params().window_bits()) as u64;
    let mut srv = ReceiverServer::new(ServerConfig {
        max_sessions: 16,
        max_memory: one * 2 + one / 2,
        ..ServerConfig::default()
    });
    let _a = accepted(&clock, &mut srv, 1, params());
    let _b = accepted(&clock, &mut srv, 2, params());
    assert_eq!(srv.memory_in_use(), 2 * one);
    let mut c = SenderControl::new(3, params(), clock.now());
    pump_from(&clock, addr(PEER), &mut c, &mut srv);
    match c.poll_event() {
        Some(SenderEvent::Failed(ControlError::Rejected(text))) => {
            assert!(text.contains("memory budget"), "{text}");
            assert!(
                text.contains(&format!("{} KiB left", (one / 2) / 1024)),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(srv.active_sessions(), 2);
    // The 16 Hellos with the largest window that the attack table used all fail to fit the
    // default budget beyond what it holds.
    let mut srv = server(16);
    let big = TestParams {
        pps_milli: 0,
        tmax: MAX_TMAX,
        ..params()
    };
    let per_test = ReceiverStats::memory_for(big.window_bits()) as u64;
    let mut accepted_n = 0;
    for id in 0..16 {
        let mut ctl = SenderControl::new(100 + id, big, clock.now());
        pump_from(
            &clock,
            SocketAddr::new(addr(PEER).ip(), 6000 + id as u16),
            &mut ctl,
            &mut srv,
        );
        if matches!(ctl.poll_event(), Some(SenderEvent::Accepted { .. })) {
            accepted_n += 1;
        }
    }
    assert_eq!(accepted_n as u64, DEFAULT_MAX_MEMORY / per_test);
    assert!(srv.memory_in_use() <= DEFAULT_MAX_MEMORY);
}

#[test]
fn memory_for_is_what_the_statistics_hold() {
    for bits in [64usize, 1 << 17, 1 << 20, 3_000_000] {
        let stats = ReceiverStats::new(StatsConfig {
            window_bits: bits,
            ..StatsConfig::default()
        });
        assert_eq!(
            ReceiverStats::memory_for(bits),
            stats.capacity_bytes(),
            "{bits}"
        );
    }
}

#[test]
fn a_silent_test_is_dropped_even_while_draining_and_its_memory_freed() {
    let mut clock = ManualClock::new(0);
    let mut srv = server(1);
    let p = TestParams {
        tmax: MAX_TMAX,
        ..params()
    };
    let mut ctl = accepted(&clock, &mut srv, 0x33, p);
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    srv.handle_datagram(clock.now(), 1, addr(PEER), &data(0x33, 0), &mut echo);
    ctl.finish(clock.now(), 1_000, 100_000, 0);
    pump_from(&clock, addr(PEER), &mut ctl, &mut srv);
    // The sender vanishes while the receiver drains: the test ends Tmax after the Fin.
    let t0 = clock.now();
    while srv.active_sessions() > 0 {
        clock.advance(Duration::from_millis(500));
        srv.handle_timeout(clock.now());
        assert!(clock.now() - t0 <= MAX_TMAX + Duration::from_secs(1));
    }
    assert!(srv.memory_in_use() < ReceiverStats::memory_for(p.window_bits()) as u64);
    // A test that never sends anything is dropped after the silence timeout.
    let mut srv = server(1);
    let _idle = accepted(&clock, &mut srv, 0x34, p);
    let t0 = clock.now();
    while srv.active_sessions() > 0 {
        clock.advance(Duration::from_millis(500));
        srv.handle_timeout(clock.now());
        assert!(clock.now() - t0 <= PEER_SILENCE_TIMEOUT + Duration::from_secs(1));
    }
    assert!(
        !srv.may_exit_once(clock.now() + RESULTS_LINGER, Duration::ZERO),
        "no data: --once waits on"
    );
}

#[test]
fn once_is_not_consumed_by_strangers() {
    let mut clock = ManualClock::new(0);
    let mut srv = server(1);
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    // Strangers: unvalidated Hellos, Fins and Aborts for a guessed id, garbage.
    for i in 0..3u32 {
        srv.handle_datagram(
            clock.now(),
            0,
            addr(STRANGER),
            &hello(i, &params(), 0),
            &mut echo,
        );
        srv.handle_datagram(
            clock.now(),
            0,
            addr(STRANGER),
            &emitted(&Message::Fin(Fin {
                session_id: i,
                total_sent: 1,
                total_bytes: 1,
                send_errors: 0,
                secret: 0,
            })),
            &mut echo,
        );
        srv.handle_datagram(
            clock.now(),
            0,
            addr(STRANGER),
            &emitted(&Message::Abort {
                session_id: i,
                reason: AbortReason::Error,
                secret: 0,
            }),
            &mut echo,
        );
    }
    // A stranger that validates its own address but sends no data, then aborts.
    let mut empty = SenderControl::new(0x99, params(), clock.now());
    pump_from(&clock, addr(STRANGER), &mut empty, &mut srv);
    empty.abort();
    pump_from(&clock, addr(STRANGER), &mut empty, &mut srv);
    assert_eq!(srv.completed_sessions(), 1);
    clock.advance(RESULTS_LINGER + Duration::from_secs(1));
    srv.handle_timeout(clock.now());
    assert!(!srv.may_exit_once(clock.now(), Duration::ZERO));
    // The real test counts.
    let mut ctl = accepted(&clock, &mut srv, 0x42, params());
    let r = finish_test(&mut clock, &mut srv, &mut ctl, 0..10);
    assert_eq!(r.stats.received, 10);
    assert!(srv.may_exit_once(clock.now() + Duration::from_secs(2), Duration::from_secs(1)));
}

#[test]
fn implausible_sequences_are_counted_and_never_move_the_window() {
    let mut clock = ManualClock::new(1_000_000_000);
    let mut srv = server(1);
    // Unpaced, 20,000 datagrams: the count is the bound.
    let p = TestParams {
        count: 20_000,
        pps_milli: 0,
        ..params()
    };
    let mut ctl = accepted(&clock, &mut srv, 0x11, p);
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    for seq in 0..10_000 {
        srv.handle_datagram(clock.now(), 1, addr(PEER), &data(0x11, seq), &mut echo);
    }
    // Far ahead of the declared count, or of any count: from the peer's own address (forged).
    for seq in [20_000, 300_000, 1_000_000_000, (1 << 62) - 1, u64::MAX] {
        assert!(
            !srv.handle_datagram(clock.now(), 1, addr(PEER), &data(0x11, seq), &mut echo),
            "no echo"
        );
    }
    assert_eq!(srv.implausible(), 5);
    let r = finish_test(&mut clock, &mut srv, &mut ctl, 10_000..20_000);
    assert_eq!(r.stats.received, 20_000);
    assert_eq!(r.stats.lost, 0);
    assert_eq!(r.stats.stale, 0);
    assert_eq!(r.stats.late, 0);
    assert_eq!(r.stats.implausible, 5);
    assert_eq!(r.echo_sent, 20_000);

    // Without a count: the declared rate × time bounds it, and the bound grows with time.
    let p = TestParams {
        pps_milli: 1_000_000, // 1000/s
        ..params()
    };
    let mut srv = server(1);
    let _ctl = accepted(&clock, &mut srv, 0x12, p);
    let far = 1_000_000;
    srv.handle_datagram(clock.now(), 1, addr(PEER), &data(0x12, far), &mut echo);
    assert_eq!(srv.implausible(), 1, "1000/s cannot reach 10^6 at once");
    assert_eq!(
        p.plausible_end(Duration::ZERO),
        2 * 1000 + PLAUSIBLE_SLACK_SEQS
    );
    clock.advance(Duration::from_secs(600));
    srv.handle_datagram(clock.now(), 1, addr(PEER), &data(0x12, far), &mut echo);
    assert_eq!(srv.implausible(), 1, "after 600 s at 1000/s it can");
}

#[test]
fn a_burst_pattern_widens_the_plausible_bound_by_its_burst() {
    let bursty = TestParams {
        pps_milli: 1_000_000,
        pattern: HelloPattern::Burst(50_000),
        ..params()
    };
    assert_eq!(
        bursty.plausible_end(Duration::ZERO),
        2 * (1000 + 50_000) + PLAUSIBLE_SLACK_SEQS
    );
    let huge = TestParams {
        count: 7_000_000,
        pattern: HelloPattern::Burst(0),
        ..bursty
    };
    assert_eq!(
        huge.plausible_end(Duration::ZERO),
        7_000_000,
        "only the count bounds it"
    );
}

#[test]
fn busy_answers_name_when_to_retry() {
    let clock = ManualClock::new(0);
    let mut srv = server(1);
    let five = TestParams {
        duration: Duration::from_secs(5),
        ..params()
    };
    let _a = accepted(&clock, &mut srv, 1, five);
    let mut b = SenderControl::new(2, params(), clock.now());
    pump_from(&clock, addr(STRANGER), &mut b, &mut srv);
    match b.poll_event() {
        Some(SenderEvent::Failed(e)) => {
            assert_eq!(e, ControlError::Busy(6), "5 s + Tmax 0.3 s, rounded up");
            assert_eq!(
                e.to_string(),
                "the receiver is busy with other tests; retry in 6 s"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn per_test_counters_cover_the_tests_own_time() {
    let mut clock = ManualClock::new(1_000_000_000);
    let mut srv = server(4);
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    srv.set_rxq_dropped(Some(0));
    for _ in 0..7 {
        srv.handle_datagram(clock.now(), 0, addr(STRANGER), b"garbage before", &mut echo);
    }
    srv.set_rxq_dropped(Some(40));
    // The driver's refusals (key and --allow): only `--key` is in force here.
    srv.set_gate_totals(GateTotals {
        unauthenticated: Some(100),
        refused_by_allow: None,
    });
    let mut ctl = accepted(&clock, &mut srv, 0x21, params());
    for _ in 0..3 {
        srv.handle_datagram(clock.now(), 0, addr(STRANGER), b"garbage during", &mut echo);
    }
    srv.set_rxq_dropped(Some(45));
    srv.set_gate_totals(GateTotals {
        unauthenticated: Some(112),
        refused_by_allow: None,
    });
    let r = finish_test(&mut clock, &mut srv, &mut ctl, 0..10);
    assert_eq!(r.foreign_datagrams, 3, "not the 7 before the test");
    assert_eq!(r.rcvbuf_drops, Some(5), "not the 40 before the test");
    assert_eq!(r.unauthenticated, Some(12), "not the 100 before the test");
    assert_eq!(r.refused_by_allow, None, "not in force");
    assert!(!r.rcvbuf_drops_shared, "alone on the socket");
    // Two tests at once: each says the drop count is the socket's.
    let mut a = accepted(&clock, &mut srv, 0x22, params());
    let mut b = SenderControl::new(0x23, params(), clock.now());
    pump_from(&clock, addr(SAME_HOST), &mut b, &mut srv);
    assert!(matches!(b.poll_event(), Some(SenderEvent::Accepted { .. })));
    let ra = finish_test(&mut clock, &mut srv, &mut a, 0..10);
    assert!(ra.rcvbuf_drops_shared);
}

impl ReceiverServer {
    /// The kinds of the pending events, drained (for assertions).
    fn poll_event_kinds(&mut self) -> Vec<&'static str> {
        std::iter::from_fn(|| self.poll_event())
            .map(|e| match e {
                ServerEvent::Started { .. } => "started",
                ServerEvent::Interval { .. } => "interval",
                ServerEvent::Lost { .. } => "lost",
                ServerEvent::IntervalLatency { .. } => "interval-latency",
                ServerEvent::Finished { .. } => "finished",
                ServerEvent::StartSending { .. } => "start sending",
                ServerEvent::StopSending { .. } => "stop sending",
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests: arbitrary datagram sequences from many addresses.
// ---------------------------------------------------------------------------------------------

const ADDRS: [&str; 6] = [
    "192.0.2.1:1000",
    "192.0.2.1:1001",
    "192.0.2.2:1000",
    "[2001:db8::1]:1000",
    "[::ffff:192.0.2.1]:1000",
    "203.0.113.9:53",
];
const IDS: [u32; 4] = [1, 2, 0xdead_beef, 0];

#[derive(Debug, Clone)]
enum Op {
    Raw {
        from: usize,
        bytes: Vec<u8>,
    },
    /// A Hello; `cookie`: 0 none, 1 the last one this address was sent, 2 a guess.
    Hello {
        from: usize,
        id: usize,
        cookie: u8,
        tmax_s: u8,
        pps: u32,
        count: u16,
        guess: u64,
    },
    Data {
        from: usize,
        id: usize,
        seq: u64,
        len: u8,
    },
    /// A control message; `known`: the secret this address learned (if any), else `guess`.
    Control {
        from: usize,
        id: usize,
        kind: u8,
        known: bool,
        guess: u64,
        total: u64,
    },
    Advance {
        ms: u16,
    },
    Interrupt,
}

fn arb_op() -> impl Strategy<Value = Op> {
    let from = 0..ADDRS.len();
    let id = 0..IDS.len();
    prop_oneof![
        (from.clone(), proptest::collection::vec(any::<u8>(), 0..120))
            .prop_map(|(from, bytes)| Op::Raw { from, bytes }),
        (
            from.clone(),
            id.clone(),
            0u8..3,
            0u8..70,
            any::<u32>(),
            any::<u16>(),
            any::<u64>()
        )
            .prop_map(|(from, id, cookie, tmax_s, pps, count, guess)| Op::Hello {
                from,
                id,
                cookie,
                tmax_s,
                pps,
                count,
                guess
            }),
        (
            from.clone(),
            id.clone(),
            prop_oneof![0u64..300, any::<u64>()],
            24u8..=200
        )
            .prop_map(|(from, id, seq, len)| Op::Data { from, id, seq, len }),
        (from, id, 0u8..3, any::<bool>(), any::<u64>(), 0u64..400).prop_map(
            |(from, id, kind, known, guess, total)| Op::Control {
                from,
                id,
                kind,
                known,
                guess,
                total
            }
        ),
        (0u16..15_000).prop_map(|ms| Op::Advance { ms }),
        Just(Op::Interrupt),
    ]
}

/// Drives a receiver with `ops`, checking after every step that nothing sent to an address
/// that never started a test is larger than what came from it, in total and per reply.
fn run_ops(ops: &[Op], max_sessions: usize, max_memory: u64) -> Result<(), TestCaseError> {
    let mut clock = ManualClock::new(1_000_000_000);
    let mut srv = ReceiverServer::new(ServerConfig {
        max_sessions,
        max_memory,
        ..ServerConfig::default()
    });
    let addrs: Vec<SocketAddr> = ADDRS.iter().map(|a| addr(a)).collect();
    let mut received: HashMap<SocketAddr, u64> = HashMap::new();
    let mut sent: HashMap<SocketAddr, u64> = HashMap::new();
    let mut validated: HashSet<SocketAddr> = HashSet::new();
    let mut cookies: HashMap<(SocketAddr, u32), u64> = HashMap::new();
    let mut secrets: HashMap<(SocketAddr, u32), u64> = HashMap::new();
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    for op in ops {
        let (from, bytes): (SocketAddr, Vec<u8>) = match op {
            Op::Raw { from, bytes } => (addrs[*from], bytes.clone()),
            Op::Hello {
                from,
                id,
                cookie,
                tmax_s,
                pps,
                count,
                guess,
            } => {
                let a = addrs[*from];
                let p = TestParams {
                    tmax: Duration::from_secs(u64::from(*tmax_s)),
                    pps_milli: u64::from(*pps),
                    count: u64::from(*count),
                    ..params()
                };
                let c = match cookie {
                    0 => 0,
                    1 => cookies.get(&(a, IDS[*id])).copied().unwrap_or(0),
                    _ => *guess,
                };
                (a, hello(IDS[*id], &p, c))
            }
            Op::Data { from, id, seq, len } => {
                let mut buf = vec![0u8; usize::from(*len)];
                DataHeader {
                    session_id: IDS[*id],
                    seq: *seq,
                    send_ns: 1,
                }
                .write(Kind::Data, &mut buf);
                (addrs[*from], buf)
            }
            Op::Control {
                from,
                id,
                kind,
                known,
                guess,
                total,
            } => {
                let a = addrs[*from];
                let session_id = IDS[*id];
                let secret = if *known {
                    secrets.get(&(a, session_id)).copied().unwrap_or(*guess)
                } else {
                    *guess
                };
                let msg = match kind {
                    0 => Message::Fin(Fin {
                        session_id,
                        total_sent: *total,
                        total_bytes: 0,
                        send_errors: 0,
                        secret,
                    }),
                    1 => Message::ResultReq { session_id, secret },
                    _ => Message::Abort {
                        session_id,
                        reason: AbortReason::Interrupted,
                        secret,
                    },
                };
                (a, emitted(&msg))
            }
            Op::Advance { ms } => {
                clock.advance(Duration::from_millis(u64::from(*ms)));
                srv.handle_timeout(clock.now());
                (addrs[0], Vec::new())
            }
            Op::Interrupt => {
                srv.interrupt_all(clock.now());
                (addrs[0], Vec::new())
            }
        };
        if !bytes.is_empty() {
            *received.entry(from).or_default() += bytes.len() as u64;
            if srv.handle_datagram(clock.now(), clock.wall_ns(), from, &bytes, &mut echo) {
                prop_assert!(echo.len() <= bytes.len());
                *sent.entry(from).or_default() += echo.len() as u64;
                prop_assert!(validated.contains(&from), "echo to an unvalidated address");
            }
        }
        while let Some(ev) = srv.poll_event() {
            if let ServerEvent::Started { peer, .. } = ev {
                validated.insert(peer);
            }
        }
        for (to, m) in replies(&mut srv) {
            *sent.entry(to).or_default() += m.len() as u64;
            if !validated.contains(&to) {
                prop_assert_eq!(to, from, "an unvalidated address only hears answers");
                prop_assert!(
                    m.len() <= bytes.len(),
                    "reply {} > datagram {}",
                    m.len(),
                    bytes.len()
                );
            }
            if let Ok(Message::HelloAck(a)) = wire::parse(&m) {
                if a.cookie != 0 {
                    cookies.insert((to, a.session_id), a.cookie);
                }
                if a.secret != 0 {
                    secrets.insert((to, a.session_id), a.secret);
                }
            }
        }
        for a in &addrs {
            if !validated.contains(a) {
                let out = sent.get(a).copied().unwrap_or(0);
                let inn = received.get(a).copied().unwrap_or(0);
                prop_assert!(out <= inn, "{a}: sent {out} > received {inn}");
            }
        }
        prop_assert!(srv.active_sessions() <= max_sessions);
        prop_assert!(
            srv.memory_in_use() <= max_memory.max(1 << 24),
            "memory {}",
            srv.memory_in_use()
        );
    }
    Ok(())
}

proptest! {
    /// Never amplify: over arbitrary datagram sequences from many addresses, total bytes sent
    /// to an address that never started a test are at most the bytes received from it.
    #[test]
    fn never_sends_an_unvalidated_address_more_than_it_sent(
        ops in proptest::collection::vec(arb_op(), 1..80),
        max_sessions in 1usize..4,
    ) {
        run_ops(&ops, max_sessions, DEFAULT_MAX_MEMORY)?;
    }

    /// The session state machines under arbitrary input (a bounded fuzz that runs in CI): no
    /// panic, the limits hold, even with a budget too small for most tests.
    #[test]
    fn receiver_survives_arbitrary_datagrams_with_a_tight_budget(
        ops in proptest::collection::vec(arb_op(), 1..80),
    ) {
        run_ops(&ops, 2, 3 << 20)?;
    }

    /// The sender's control under arbitrary replies: no panic; what it sends stays well-formed,
    /// names its session, and carries the secret once it has one.
    #[test]
    fn sender_control_survives_arbitrary_replies(
        replies in proptest::collection::vec(
            (0usize..10, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..60)),
            0..40,
        ),
    ) {
        let mut clock = ManualClock::new(0);
        let mut srv = server(1);
        let mut ctl = accepted(&clock, &mut srv, 0x4242, params());
        let secret = ctl.secret();
        ctl.finish(clock.now(), 5, 500, 0);
        let kinds = [0u8, 1, 2, 16, 17, 18, 19, 20, 21, 22];
        for (k, ours, tail) in &replies {
            let mut buf = vec![0x55, 0x44, wire::VERSION, kinds[*k]];
            buf.extend_from_slice(&(if *ours { 0x4242u32 } else { 7 }).to_be_bytes());
            buf.extend_from_slice(tail);
            ctl.handle_datagram(clock.now(), &buf);
            clock.advance(Duration::from_millis(30));
            ctl.handle_timeout(clock.now());
            while let Some(m) = ctl.poll_transmit() {
                let parsed = wire::parse(&m);
                prop_assert!(parsed.is_ok());
                let parsed = parsed.unwrap();
                prop_assert_eq!(parsed.session_id(), 0x4242);
                match parsed {
                    Message::Fin(f) => prop_assert_eq!(f.secret, secret),
                    Message::ResultReq { secret: s, .. } => prop_assert_eq!(s, secret),
                    Message::Abort { secret: s, .. } => prop_assert_eq!(s, secret),
                    _ => {}
                }
            }
            while ctl.poll_event().is_some() {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Interval latency histograms (`--hdr-log`): every counted delay in exactly one of them.
// ---------------------------------------------------------------------------------------------

#[test]
fn exported_interval_latency_histograms_add_up_to_the_reports_latency() {
    let mut clock = ManualClock::new(1_000_000_000);
    let mut srv = server(1);
    srv.export_latency_histograms(true);
    let mut ctl = accepted(&clock, &mut srv, 0x31, params());
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    // Three 1 s intervals with 10 datagrams each, then 10 more in the last, partial one.
    for second in 0..3u64 {
        for seq in second * 10..second * 10 + 10 {
            let d = data(ctl.session_id(), seq);
            srv.handle_datagram(clock.now(), clock.wall_ns(), addr(PEER), &d, &mut echo);
        }
        clock.advance(Duration::from_secs(1));
        srv.handle_timeout(clock.now());
    }
    let report = finish_test(&mut clock, &mut srv, &mut ctl, 30..40);
    let mut spans = Vec::new();
    let mut logged = 0;
    while let Some(event) = srv.poll_event() {
        if let ServerEvent::IntervalLatency {
            session_id,
            start_s,
            end_s,
            histogram,
        } = event
        {
            assert_eq!(session_id, 0x31);
            spans.push((start_s, end_s));
            logged += histogram.len();
        }
    }
    assert_eq!(report.stats.latency.unwrap().count, 40);
    assert_eq!(logged, 40, "every delay in exactly one interval histogram");
    assert_eq!(&spans[..3], [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]);
    assert!(
        spans.windows(2).all(|w| w[0].1 <= w[1].0 + 1e-9),
        "{spans:?}"
    );
    // Without the export, no such events.
    let mut quiet = server(1);
    let mut ctl = accepted(&clock, &mut quiet, 0x32, params());
    finish_test(&mut clock, &mut quiet, &mut ctl, 0..5);
    assert!(!quiet.poll_event_kinds().contains(&"interval-latency"));
}
