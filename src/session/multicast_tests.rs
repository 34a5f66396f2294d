//! A group member (`recv --join`) on the sans-IO session with a manual clock: tests start from
//! announcements and end with the sender's Fin or its silence, each sender on its own, within
//! --max-sessions, and nothing is ever sent.

use super::*;
use crate::time::ManualClock;

const SENDER: &str = "192.0.2.9:4000";
const OTHER_SENDER: &str = "192.0.2.10:4000";
const STRANGER: &str = "198.51.100.3:5000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn params() -> TestParams {
    TestParams {
        payload_size: 100,
        // A group sender never asks for echoes; an announcement that does is not answered.
        echo: true,
        interval: Duration::from_secs(1),
        tmax: Duration::from_millis(300),
        count: 1000,
        duration: Duration::ZERO,
        rate_bps: 0,
        pps_milli: 1_000_000,
        loss_ranges: true,
        pattern: HelloPattern::Cbr,
        marking: Default::default(),
        omit: Duration::ZERO,
        reliable: None,
    }
}

fn member(max_sessions: usize, source: Option<&str>) -> ReceiverServer {
    ReceiverServer::new(ServerConfig {
        max_sessions,
        multicast: Some(MulticastReceive {
            source: source.map(|s| addr(s).ip()),
        }),
        ..ServerConfig::default()
    })
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

/// Feeds one datagram; the member must never want to answer it.
fn feed(srv: &mut ReceiverServer, clock: &ManualClock, from: &str, buf: &[u8]) {
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    let echoed = srv.handle_datagram(clock.now(), clock.wall_ns(), addr(from), buf, &mut echo);
    assert!(!echoed, "a group member never echoes");
    assert_eq!(srv.poll_transmit(), None, "a group member never sends");
}

fn events(srv: &mut ReceiverServer) -> Vec<ServerEvent> {
    std::iter::from_fn(|| srv.poll_event()).collect()
}

fn finished(evs: &[ServerEvent]) -> Vec<(u32, ReceiverReport)> {
    evs.iter()
        .filter_map(|e| match e {
            ServerEvent::Finished {
                session_id, report, ..
            } => Some((*session_id, (**report).clone())),
            _ => None,
        })
        .collect()
}

/// Runs the clock past every timer, with nothing to send.
fn drain(srv: &mut ReceiverServer, clock: &mut ManualClock, by: Duration) {
    let end = clock.now() + by;
    while clock.now() < end {
        clock.advance(Duration::from_millis(50));
        srv.handle_timeout(clock.now());
        assert_eq!(srv.poll_transmit(), None, "a group member never sends");
    }
}

#[test]
fn an_announced_test_is_measured_exactly_and_nothing_is_ever_sent() {
    let mut clock = ManualClock::new(1_000);
    let mut srv = member(4, None);
    let ann = multicast_announcement(7, &params());
    for _ in 0..3 {
        feed(&mut srv, &clock, SENDER, &ann);
    }
    let evs = events(&mut srv);
    assert_eq!(evs.len(), 1, "one test for three announcements: {evs:?}");
    let ServerEvent::Started { params: p, .. } = &evs[0] else {
        panic!("{evs:?}");
    };
    assert!(
        !p.echo && !p.loss_ranges,
        "nothing goes back to a group sender"
    );
    // 1000 sent; every 10th lost on the way, and one duplicate.
    for seq in (0..1000u64).filter(|s| s % 10 != 3) {
        feed(&mut srv, &clock, SENDER, &data(7, seq));
    }
    feed(&mut srv, &clock, SENDER, &data(7, 500));
    // Another announcement in the middle changes nothing.
    feed(&mut srv, &clock, SENDER, &ann);
    let fin = multicast_fin(7, 1000, 100_000, 2);
    for _ in 0..3 {
        feed(&mut srv, &clock, SENDER, &fin);
    }
    drain(&mut srv, &mut clock, Duration::from_secs(1));
    let done = finished(&events(&mut srv));
    assert_eq!(done.len(), 1);
    let r = &done[0].1;
    assert!(!r.interrupted);
    assert_eq!(r.stats.expected, 1000);
    assert_eq!(r.stats.received, 900);
    assert_eq!(r.stats.lost, 100);
    assert_eq!(r.stats.duplicates, 1);
    assert_eq!(r.echo_sent, 0);
    assert_eq!(r.foreign_datagrams, 0);
    assert!(srv.may_exit_once(clock.now(), Duration::from_secs(1)));
}

#[test]
fn a_unicast_receiver_counts_an_announcement_as_foreign_and_answers_nothing() {
    let clock = ManualClock::new(0);
    let mut srv = ReceiverServer::new(ServerConfig::default());
    let mut echo = [0u8; wire::DATA_HEADER_LEN];
    let ann = multicast_announcement(7, &params());
    srv.handle_datagram(clock.now(), 0, addr(SENDER), &ann, &mut echo);
    assert_eq!(srv.poll_transmit(), None);
    assert_eq!(srv.foreign_datagrams(), 1);
    assert_eq!(srv.active_sessions(), 0);
}

#[test]
fn a_member_answers_no_hello_request_or_other_version_and_counts_them() {
    let clock = ManualClock::new(0);
    let mut srv = member(4, None);
    let mut unicast = Vec::new();
    Message::Hello(params().hello(9)).emit(&mut unicast);
    feed(&mut srv, &clock, STRANGER, &unicast);
    feed(
        &mut srv,
        &clock,
        STRANGER,
        &emit(&Message::ResultReq {
            session_id: 9,
            secret: 0,
        }),
    );
    let mut other_version = unicast.clone();
    other_version[2] = 1;
    feed(&mut srv, &clock, STRANGER, &other_version);
    feed(&mut srv, &clock, STRANGER, b"not udplab at all");
    assert_eq!(srv.foreign_datagrams(), 4);
    assert_eq!(srv.active_sessions(), 0);
}

#[test]
fn only_the_announcing_address_owns_its_test() {
    let mut clock = ManualClock::new(0);
    let mut srv = member(4, None);
    feed(
        &mut srv,
        &clock,
        SENDER,
        &multicast_announcement(7, &params()),
    );
    for seq in 0..10 {
        feed(&mut srv, &clock, SENDER, &data(7, seq));
    }
    // A stranger's Data, Fin and announcement for the same id change nothing.
    feed(&mut srv, &clock, STRANGER, &data(7, 10));
    feed(&mut srv, &clock, STRANGER, &multicast_fin(7, 10, 0, 0));
    feed(
        &mut srv,
        &clock,
        STRANGER,
        &multicast_announcement(7, &params()),
    );
    // A Fin with a secret is not a group sender's.
    feed(
        &mut srv,
        &clock,
        SENDER,
        &emit(&Message::Fin(Fin {
            session_id: 7,
            total_sent: 5,
            total_bytes: 0,
            send_errors: 0,
            secret: 99,
        })),
    );
    assert_eq!(srv.active_sessions(), 1);
    assert!(matches!(
        srv.sessions.get(&7).map(|s| &s.state),
        Some(RxState::Running)
    ));
    feed(&mut srv, &clock, SENDER, &multicast_fin(7, 12, 0, 0));
    drain(&mut srv, &mut clock, Duration::from_secs(1));
    let done = finished(&events(&mut srv));
    let r = &done[0].1;
    assert_eq!((r.stats.received, r.stats.lost), (10, 2));
    assert_eq!(r.foreign_datagrams, 4);
}

#[test]
fn with_a_source_only_that_sender_starts_a_test() {
    let clock = ManualClock::new(0);
    let mut srv = member(4, Some(SENDER));
    feed(
        &mut srv,
        &clock,
        OTHER_SENDER,
        &multicast_announcement(1, &params()),
    );
    assert_eq!(srv.active_sessions(), 0);
    assert_eq!(srv.foreign_datagrams(), 1);
    // Another port of the same host is the same source (SSM filters by address).
    feed(
        &mut srv,
        &clock,
        "192.0.2.9:4999",
        &multicast_announcement(2, &params()),
    );
    assert_eq!(srv.active_sessions(), 1);
}

#[test]
fn a_member_tracks_at_most_max_sessions_senders_and_counts_the_rest() {
    let mut clock = ManualClock::new(0);
    let mut srv = member(2, None);
    for (id, from) in [(1, SENDER), (2, OTHER_SENDER)] {
        feed(
            &mut srv,
            &clock,
            from,
            &multicast_announcement(id, &params()),
        );
    }
    for _ in 0..2 {
        feed(
            &mut srv,
            &clock,
            STRANGER,
            &multicast_announcement(3, &params()),
        );
    }
    assert_eq!(srv.active_sessions(), 2);
    assert_eq!(srv.announcements_refused(), 2, "each repeat counts");
    for seq in 0..5 {
        feed(&mut srv, &clock, SENDER, &data(1, seq));
        feed(&mut srv, &clock, OTHER_SENDER, &data(2, seq));
        feed(&mut srv, &clock, STRANGER, &data(3, seq));
    }
    for (id, from) in [(1, SENDER), (2, OTHER_SENDER)] {
        feed(&mut srv, &clock, from, &multicast_fin(id, 5, 0, 0));
    }
    drain(&mut srv, &mut clock, Duration::from_secs(1));
    let done = finished(&events(&mut srv));
    assert_eq!(done.len(), 2);
    for (_, r) in &done {
        assert_eq!((r.stats.received, r.stats.lost), (5, 0));
    }
}

#[test]
fn a_silent_sender_is_reported_tmax_after_its_announcement_rhythm_stops() {
    let mut clock = ManualClock::new(0);
    let mut srv = member(4, None);
    feed(
        &mut srv,
        &clock,
        SENDER,
        &multicast_announcement(7, &params()),
    );
    for seq in 0..20 {
        feed(&mut srv, &clock, SENDER, &data(7, seq));
    }
    // Tmax (300 ms) + the announcement period (1 s), less a step: still running.
    drain(&mut srv, &mut clock, Duration::from_millis(1200));
    assert_eq!(srv.active_sessions(), 1);
    drain(&mut srv, &mut clock, Duration::from_millis(200));
    let done = finished(&events(&mut srv));
    assert_eq!(done.len(), 1);
    assert!(done[0].1.interrupted, "no Fin: the total is not known");
    assert_eq!(done[0].1.stats.received, 20);
}

#[test]
fn a_late_joiner_measures_from_the_first_datagram_it_hears() {
    let clock = ManualClock::new(0);
    let mut srv = member(4, None);
    feed(
        &mut srv,
        &clock,
        SENDER,
        &multicast_announcement(7, &params()),
    );
    // The sender has been sending for a while: far beyond what the clock allows from zero.
    for seq in 5_000_000..5_000_010 {
        feed(&mut srv, &clock, SENDER, &data(7, seq));
    }
    assert_eq!(srv.implausible(), 0);
    // The bound still holds from there.
    feed(&mut srv, &clock, SENDER, &data(7, 900_000_000));
    assert_eq!(srv.implausible(), 1);
}

mod never_sends {
    use proptest::prelude::*;

    use super::*;

    const FROM: [&str; 3] = [SENDER, OTHER_SENDER, STRANGER];

    /// One datagram a group member may meet: the real messages of a few tests, and garbage.
    #[derive(Debug, Clone)]
    enum Op {
        Announce {
            from: usize,
            id: u32,
        },
        Data {
            from: usize,
            id: u32,
            seq: u64,
        },
        Fin {
            from: usize,
            id: u32,
            total: u64,
        },
        UnicastHello {
            from: usize,
            id: u32,
            cookie: u64,
        },
        Control {
            from: usize,
            id: u32,
            secret: u64,
            kind: u8,
        },
        Raw {
            from: usize,
            bytes: Vec<u8>,
        },
        Wait {
            ms: u16,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let from = 0..FROM.len();
        let id = 1u32..4;
        prop_oneof![
            (from.clone(), id.clone()).prop_map(|(from, id)| Op::Announce { from, id }),
            (from.clone(), id.clone(), 0u64..5000).prop_map(|(from, id, seq)| Op::Data {
                from,
                id,
                seq
            }),
            (from.clone(), id.clone(), 0u64..5000).prop_map(|(from, id, total)| Op::Fin {
                from,
                id,
                total
            }),
            (from.clone(), id.clone(), any::<u64>())
                .prop_map(|(from, id, cookie)| Op::UnicastHello { from, id, cookie }),
            (from.clone(), id.clone(), any::<u64>(), 0u8..3).prop_map(
                |(from, id, secret, kind)| Op::Control {
                    from,
                    id,
                    secret,
                    kind
                }
            ),
            (from, proptest::collection::vec(any::<u8>(), 0..120))
                .prop_map(|(from, bytes)| Op::Raw { from, bytes }),
            (0u16..3000).prop_map(|ms| Op::Wait { ms }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever arrives, in any order, a group member sends nothing at all (so it cannot
        /// amplify or reflect), never panics, and never tracks more than --max-sessions senders.
        #[test]
        fn a_group_member_sends_nothing_whatever_arrives(
            ops in proptest::collection::vec(op(), 1..200)
        ) {
            let mut clock = ManualClock::new(0);
            let mut srv = member(2, None);
            let mut echo = [0u8; wire::DATA_HEADER_LEN];
            for op in ops {
                let (from, bytes) = match op {
                    Op::Announce { from, id } => (from, multicast_announcement(id, &params())),
                    Op::Data { from, id, seq } => (from, data(id, seq).to_vec()),
                    Op::Fin { from, id, total } => (from, multicast_fin(id, total, 0, 0)),
                    Op::UnicastHello { from, id, cookie } => {
                        let mut h = params().hello(id);
                        h.cookie = cookie;
                        (from, emit(&Message::Hello(h)))
                    }
                    Op::Control { from, id, secret, kind } => (
                        from,
                        emit(&match kind {
                            0 => Message::ResultReq { session_id: id, secret },
                            1 => Message::Abort {
                                session_id: id,
                                reason: AbortReason::Interrupted,
                                secret,
                            },
                            _ => Message::Fin(Fin {
                                session_id: id,
                                total_sent: 10,
                                total_bytes: 0,
                                send_errors: 0,
                                secret,
                            }),
                        }),
                    ),
                    Op::Raw { from, bytes } => (from, bytes),
                    Op::Wait { ms } => {
                        clock.advance(Duration::from_millis(u64::from(ms)));
                        srv.handle_timeout(clock.now());
                        prop_assert_eq!(srv.poll_transmit(), None);
                        continue;
                    }
                };
                let echoed = srv.handle_datagram(
                    clock.now(),
                    clock.wall_ns(),
                    addr(FROM[from]),
                    &bytes,
                    &mut echo,
                );
                prop_assert!(!echoed);
                prop_assert_eq!(srv.poll_transmit(), None);
                prop_assert!(srv.active_sessions() <= 2);
            }
            srv.interrupt_all(clock.now());
            prop_assert_eq!(srv.poll_transmit(), None, "not even an Abort on Ctrl-C");
        }
    }
}
