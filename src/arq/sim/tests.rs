//! Unit tests of the reliable layer's state machines on a manual clock, and of its memory
//! bound over long simulated runs. The target table is in `tests/it/arq_sim.rs`.

use super::*;
use crate::arq::frame::AckRanges;
use crate::arq::{ArqDeadline, ArqOrdering, Delivered};

fn ack(session_id: u32, largest: u64, ranges: &[(u64, u64)], delivered_below: u64) -> AckFrame {
    let mut r = AckRanges::default();
    for &(lo, hi) in ranges {
        assert!(r.push(lo, hi));
    }
    AckFrame {
        session_id,
        largest,
        ack_delay_ns: 0,
        delivered_below,
        ranges: r,
    }
}

fn sender_with(n: u64) -> (ArqSender, Vec<RDataFrame>) {
    sender_with_config(ArqConfig::default(), n)
}

/// A sender of `cfg` that sent messages `0..n`, one per millisecond.
fn sender_with_config(cfg: ArqConfig, n: u64) -> (ArqSender, Vec<RDataFrame>) {
    let mut s = ArqSender::new(cfg, 9, 0);
    let mut sent = Vec::new();
    for k in 0..n {
        assert!(s.offer(k * 1_000_000));
        sent.push(
            s.poll_transmit(k * 1_000_000)
                .expect("a paced slot sends the new message"),
        );
    }
    (s, sent)
}

#[test]
fn an_ack_for_a_packet_number_never_sent_is_rejected_and_counted() {
    let (mut s, _) = sender_with(3);
    let before = s.stats();
    s.handle_ack(3_000_000, &ack(9, 3, &[(0, 3)], 0)); // packet 3 was never sent
    s.handle_ack(3_000_000, &ack(9, 2, &[(0, 2)], 4)); // message 3 was never sent
    s.handle_ack(3_000_000, &ack(8, 2, &[(0, 2)], 0)); // another session
    let after = s.stats();
    assert_eq!(after.bogus_acks, 2);
    assert_eq!(after.foreign_acks, 1);
    assert_eq!(after.packets_acked, 0, "nothing of a rejected ACK is taken");
    assert_eq!(after.messages_acked, before.messages_acked);
    assert_eq!(after.acks_received, 0);
    // A genuine ACK still works afterwards.
    s.handle_ack(3_100_000, &ack(9, 2, &[(0, 2)], 3));
    assert_eq!(s.stats().packets_acked, 3);
    s.finish();
    assert!(s.is_done());
}

#[test]
fn a_retransmission_gets_a_new_packet_number_and_counts_its_cause() {
    let (mut s, sent) = sender_with(3);
    assert_eq!(
        sent.iter().map(|f| f.packet_number).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    // Packet 0 missing, 1 and 2 acknowledged 2.1 ms after packet 0 left: lost by the packet
    // threshold (1) and by time (1 ms floor): the packet threshold is checked first.
    s.handle_ack(2_100_000, &ack(9, 2, &[(1, 2)], 0));
    let again = s
        .poll_transmit(2_100_000)
        .expect("retransmission goes at once (budget)");
    assert_eq!(again.message_id, 0);
    assert_eq!(again.packet_number, 3, "never reused");
    assert_eq!(again.transmission, 2);
    assert_eq!(again.first_send_ns, sent[0].first_send_ns);
    let st = s.stats();
    assert_eq!(st.retransmissions, 1);
    assert_eq!(st.rexmit_packet_threshold, 1);
    assert_eq!(st.rtt_samples, 1);
    // The original arrives after all: a spurious retransmission, detected and counted.
    s.handle_ack(2_200_000, &ack(9, 2, &[(0, 2)], 0));
    assert_eq!(s.stats().spurious_retransmissions, 1);
}

#[test]
fn the_probe_timeout_marks_nothing_lost_and_sends_the_oldest_message_again() {
    let (mut s, _) = sender_with(2);
    s.finish();
    let t = s
        .poll_timeout()
        .expect("a PTO is armed while packets are in flight");
    s.handle_timeout(t);
    let probe = s.poll_transmit(t).expect("the probe");
    assert_eq!(probe.message_id, 0);
    assert_eq!(probe.transmission, 2);
    let second = s.poll_transmit(t).expect("a second probe");
    assert_eq!(second.message_id, 0);
    assert_eq!(second.packet_number, probe.packet_number + 1);
    assert_eq!(s.poll_transmit(t), None);
    let st = s.stats();
    assert_eq!(st.pto_events, 1);
    assert_eq!(st.rexmit_pto, 2);
    assert_eq!(st.packets_declared_lost, 0, "a PTO declares nothing lost");
    // Backoff: the next probe waits twice as long.
    let t2 = s.poll_timeout().unwrap();
    assert!(
        t2 - t >= 2 * (t - 1_000_000) - 1,
        "backoff doubles the period"
    );
}

#[test]
fn probes_whose_message_had_arrived_count_as_spurious() {
    // Message 0 is in flight (its ACK is merely late) when the probe timeout sends it twice
    // more; then the ACK of its first packet comes: both probes were not needed.
    let (mut s, sent) = sender_with(1);
    s.finish();
    let t = s.poll_timeout().expect("a PTO is armed");
    s.handle_timeout(t);
    let probes: Vec<RDataFrame> = std::iter::from_fn(|| s.poll_transmit(t)).collect();
    assert_eq!(probes.len(), 2);
    let first = sent[0].packet_number;
    s.handle_ack(t + 1, &ack(9, first, &[(first, first)], 1));
    let st = s.stats();
    assert_eq!(st.messages_acked, 1);
    assert_eq!(st.rexmit_pto, 2);
    assert_eq!(st.unneeded_probes, 2);
    assert_eq!(
        st.spurious_retransmissions, 2,
        "the sender's view matches the receiver's duplicates"
    );
    // A later ACK of the probes changes nothing: the message was settled by the first.
    let last = probes[1].packet_number;
    s.handle_ack(t + 2, &ack(9, last, &[(first, last)], 1));
    assert_eq!(s.stats().spurious_retransmissions, 2);
}

#[test]
fn a_message_is_given_up_after_max_transmissions_and_the_receiver_skips_it() {
    let cfg = ArqConfig {
        max_transmissions: 2,
        ack_every: 1,
        ..ArqConfig::default()
    };
    let mut s = ArqSender::new(cfg.clone(), 1, 0);
    let mut r = ArqReceiver::new(cfg, 1, 0);
    let mut now = 0;
    let mut pn_of_0 = Vec::new();
    for k in 0..6u64 {
        now = k * 1_000_000;
        s.offer(now);
        while let Some(f) = s.poll_transmit(now) {
            if f.message_id == 0 {
                pn_of_0.push(f.packet_number); // message 0 is always lost
                continue;
            }
            r.handle_data(now, now, &f, 1200);
            if let Some(a) = r.poll_ack(now) {
                s.handle_ack(now, &a);
            }
        }
    }
    assert_eq!(pn_of_0.len(), 2, "two transmissions, then given up");
    assert_eq!(s.stats().messages_given_up, 1);
    assert_eq!(s.skip_below(), 6, "everything else acknowledged");
    // The next RData tells the receiver not to wait for message 0 any longer.
    now += 1_000_000;
    s.offer(now);
    let f = s.poll_transmit(now).unwrap();
    assert_eq!(f.skip_below, 6);
    r.handle_data(now, now, &f, 1200);
    let delivered: Vec<Delivered> = std::iter::from_fn(|| r.poll_delivery()).collect();
    assert_eq!(delivered.first().map(|d| d.message_id), Some(1));
    assert_eq!(delivered.len(), 6, "messages 1..=6 in order");
    assert_eq!(r.stats().skipped, 1);
}

#[test]
fn the_receiver_never_sends_more_acks_than_data_it_received() {
    let cfg = ArqConfig {
        ack_every: 1,
        ..ArqConfig::default()
    };
    let mut r = ArqReceiver::new(cfg, 1, 0);
    assert_eq!(
        r.poll_ack(0),
        None,
        "nothing received, nothing to acknowledge"
    );
    let f = RDataFrame {
        session_id: 1,
        packet_number: 5,
        message_id: 0,
        transmission: 1,
        first_send_ns: 0,
        send_ns: 0,
        skip_below: 0,
        acked_below: 0,
    };
    // A tiny datagram: its ACK would be larger than what came in, so none is sent.
    r.handle_data(0, 0, &f, 8);
    assert_eq!(r.poll_ack(0), None);
    assert_eq!(r.stats().acks_held_for_amplification, 1);
    r.handle_data(
        0,
        0,
        &RDataFrame {
            packet_number: 6,
            ..f
        },
        1200,
    );
    let a = r.poll_ack(0).expect("now the bytes allow an ACK");
    assert_eq!(a.largest, 6);
    assert!(a.ranges.contains(5) && a.ranges.contains(6));
    assert_eq!(r.poll_ack(0), None, "one ACK per trigger");
    let st = r.stats();
    assert!(st.ack_datagrams <= st.data_datagrams);
    assert!(st.ack_bytes <= st.data_bytes);
    assert_eq!(st.duplicate_arrivals, 1, "message 0 twice");
}

#[test]
fn rdata_of_another_session_is_counted_and_ignored() {
    let mut r = ArqReceiver::new(ArqConfig::default(), 1, 0);
    let f = RDataFrame {
        session_id: 2,
        packet_number: 0,
        message_id: 0,
        transmission: 1,
        first_send_ns: 0,
        send_ns: 0,
        skip_below: 0,
        acked_below: 0,
    };
    r.handle_data(0, 0, &f, 1200);
    assert_eq!(r.stats().foreign, 1);
    assert_eq!(r.stats().data_datagrams, 0);
    assert_eq!(r.poll_delivery(), None);
    assert_eq!(r.poll_ack(10_000_000), None);
}

/// W = R messages; sender ≤ 192·W + 1 KiB, receiver ≤ 104·R + 2 KiB (module doc).
fn bounds(w: u64) -> (usize, usize) {
    use crate::arq::{
        RECEIVER_BYTES_PER_WINDOW_MESSAGE, RECEIVER_FIXED_BYTES, SENDER_BYTES_PER_WINDOW_MESSAGE,
        SENDER_FIXED_BYTES,
    };
    assert_eq!(
        (
            SENDER_BYTES_PER_WINDOW_MESSAGE,
            RECEIVER_BYTES_PER_WINDOW_MESSAGE
        ),
        (192, 104),
        "the module doc and README state these"
    );
    (
        (SENDER_BYTES_PER_WINDOW_MESSAGE * w + SENDER_FIXED_BYTES) as usize,
        (RECEIVER_BYTES_PER_WINDOW_MESSAGE * w + RECEIVER_FIXED_BYTES) as usize,
    )
}

#[test]
fn memory_stays_under_the_stated_bound_and_does_not_grow_with_run_length() {
    let arq = ArqConfig {
        max_in_flight: 256,
        recv_window: 256,
        ..ArqConfig::default()
    };
    let run_for = |messages: u64, impair: &str| {
        let mut cfg = SimConfig::paced(arq.clone(), impair, messages).unwrap();
        cfg.pps = 20_000; // fills the window when the RTT is long
        let r = run(&cfg);
        assert!(!r.timed_out);
        assert_eq!(r.report.delivered, messages, "{impair}: {:#?}", r.sender);
        r
    };
    let (sender_bound, receiver_bound) = bounds(256);
    for impair in ["loss=ge:p=1.316%,r=25%,h=0%,k=100%,delay=20ms", "loss=20%"] {
        let short = run_for(20_000, impair);
        let long = run_for(200_000, impair);
        for r in [&short, &long] {
            assert!(r.sender.max_window <= 256);
            assert!(
                r.max_sender_state_bytes <= sender_bound,
                "{} > {sender_bound}",
                r.max_sender_state_bytes
            );
            assert!(
                r.max_receiver_state_bytes <= receiver_bound,
                "{} > {receiver_bound}",
                r.max_receiver_state_bytes
            );
        }
        println!(
            "{impair}: sender {} / {} bytes, receiver {} / {} bytes (20k / 200k messages)",
            short.max_sender_state_bytes,
            long.max_sender_state_bytes,
            short.max_receiver_state_bytes,
            long.max_receiver_state_bytes
        );
    }
}

#[test]
fn deadline_by_rtt_multiple_gives_up_after_that_many_rtts() {
    let cfg = ArqConfig {
        deadline: ArqDeadline::RttMultiple { times_1000: 4000 },
        initial_rtt_ns: 1_000_000,
        ..ArqConfig::default()
    };
    let mut s = ArqSender::new(cfg, 1, 0);
    s.offer(0);
    s.finish();
    let f = s.poll_transmit(0).unwrap();
    assert_eq!(f.message_id, 0);
    // No ACK ever: the deadline (4 × 1 ms srtt) comes before the idle give-up.
    let mut now = 0;
    while !s.is_done() {
        now = s.poll_timeout().expect("a deadline is armed");
        s.handle_timeout(now);
        while s.poll_transmit(now).is_some() {}
    }
    assert_eq!(now, 4_000_000);
    assert_eq!(s.stats().deadline_given_up, 1);
}

const MS_NS: u64 = 1_000_000;
/// One-way delay of the hand-driven exchanges below.
const OWD_NS: u64 = 30_000;

#[test]
fn a_heartbeat_ack_in_a_data_silence_declares_the_burst_lost_by_time() {
    let mut s = ArqSender::new(ArqConfig::default(), 9, 0);
    let mut r = ArqReceiver::new(ArqConfig::default(), 9, 0);
    let mut frames = Vec::new();
    for k in 0..5 {
        assert!(s.offer(k * MS_NS));
        frames.push(s.poll_transmit(k * MS_NS).expect("a paced slot sends"));
        if k == 1 {
            // Packets 0 and 1 arrive (the second ACK-eliciting one is acknowledged at once);
            // 2, 3 and 4 are lost in a burst.
            for f in &frames {
                let at = f.send_ns + OWD_NS;
                r.handle_data(at, at, f, 1200);
            }
            let a = r
                .poll_ack(MS_NS + OWD_NS)
                .expect("every second RData is acknowledged");
            assert_eq!(a.largest, 1);
            s.handle_ack(MS_NS + 2 * OWD_NS, &a);
        }
    }
    // The ordinary ACK says nothing about packets sent after it: no retransmission yet.
    assert_eq!(s.poll_transmit(4 * MS_NS), None);
    assert_eq!(s.stats().packets_declared_lost, 0);
    // The data direction is silent: two send intervals (2 ms) after the last arrival the
    // receiver sends a heartbeat repeating what it has, with the delay since.
    let hb_at = r.poll_timeout().expect("a heartbeat is scheduled");
    assert_eq!(hb_at, MS_NS + OWD_NS + 2 * MS_NS);
    r.handle_timeout(hb_at);
    let hb = r.poll_ack(hb_at).expect("the heartbeat ACK");
    assert_eq!((hb.largest, hb.ack_delay_ns), (1, 2 * MS_NS));
    assert_eq!(r.poll_ack(hb_at), None, "one heartbeat at a time");
    assert_eq!(r.stats().heartbeat_acks, 1);
    assert!(r.poll_timeout().is_some_and(|t| t > hb_at), "the next one");
    // Packet 1 left at 1 ms, and 2 ms later nothing after it had arrived: packet 2 (sent at
    // 2 ms, more than the 1 ms margin before 3 ms) is lost; 3 and 4 are too recent to tell.
    s.handle_ack(hb_at + OWD_NS, &hb);
    let st = s.stats();
    assert_eq!(st.packets_declared_lost, 1);
    let again = s
        .poll_transmit(hb_at + OWD_NS)
        .expect("the lost message goes again at once");
    assert_eq!((again.message_id, again.transmission), (2, 2));
    assert_eq!(s.stats().rexmit_time_threshold, 1);
    // It arrives: a gap is filled, nothing was spurious.
    let now = hb_at + 2 * OWD_NS;
    r.handle_data(now, now, &again, 1200);
    assert_eq!(r.stats().duplicate_arrivals, 0);
    assert!(r.poll_ack(now).is_some(), "a gap is acknowledged at once");
    assert!(
        r.poll_timeout().is_some(),
        "heartbeats would follow a silence"
    );
    // At the end of the session the silence is no burst: no more heartbeats.
    r.finish(now, 5);
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn acks_go_twice_while_a_message_is_missing_and_the_sender_shows_it_missed_an_ack() {
    let mut r = ArqReceiver::new(ArqConfig::default(), 4, 0);
    let frame = |pn: u64, acked_below: u64| RDataFrame {
        session_id: 4,
        packet_number: pn,
        message_id: pn,
        transmission: 1,
        first_send_ns: pn * MS_NS,
        send_ns: pn * MS_NS,
        skip_below: 0,
        acked_below,
    };
    let arrive = |r: &mut ArqReceiver, pn: u64, acked_below: u64| {
        let at = pn * MS_NS + OWD_NS;
        r.handle_data(at, at, &frame(pn, acked_below), 1200);
        std::iter::from_fn(|| r.poll_ack(at)).count()
    };
    assert_eq!(
        arrive(&mut r, 0, 0),
        0,
        "the first RData waits for a second"
    );
    assert_eq!(arrive(&mut r, 1, 0), 1);
    // Packet 2 shows the sender got that ACK (1 ms after it left: the confirmation time).
    assert_eq!(arrive(&mut r, 2, 2), 0);
    assert_eq!(arrive(&mut r, 3, 2), 1, "ACK of packets 2 and 3");
    // Packet 4 is lost; packet 5 opens a gap, and its `acked_below` still does not show the
    // ACK of packet 3, sent 2 ms ago (more than the confirmation time plus a send interval):
    // ACKs are being lost, so this one goes twice.
    assert_eq!(arrive(&mut r, 5, 2), 2);
    assert_eq!(r.stats().repeated_acks, 1);
    // Once the sender shows it has the news, one ACK per gap again.
    assert_eq!(arrive(&mut r, 6, 6), 1);
    assert_eq!(r.stats().repeated_acks, 1);
    // Never more ACKs than RData over the session.
    assert!(r.stats().ack_datagrams <= r.stats().data_datagrams);
}

/// Message 0 lost twice on a path of round trip `rtt` with 1 ms sends: its second
/// transmission went alone (copies start at the third); returns the sender at the moment the
/// ACK showing the second loss arrived, and that moment.
fn lose_message_zero_twice(cfg: ArqConfig, rtt: u64) -> (ArqSender, u64) {
    let (mut s, _) = sender_with_config(cfg, 3);
    let t1 = 2_000_000 + rtt;
    s.handle_ack(t1, &ack(9, 2, &[(1, 2)], 0));
    let second = s.poll_transmit(t1).expect("retransmission");
    assert_eq!((second.message_id, second.transmission), (0, 2));
    assert_eq!(
        s.poll_transmit(t1),
        None,
        "no copy of a second transmission"
    );
    assert!(s.offer(t1 + 1_000_000));
    let newer = s.poll_transmit(t1 + 1_000_000).expect("message 3");
    // The retransmission is lost too: message 3 arrived, packet 3 did not.
    let t2 = t1 + 1_000_000 + rtt;
    let pn = newer.packet_number;
    s.handle_ack(t2, &ack(9, pn, &[(pn, pn), (1, 2)], 0));
    (s, t2)
}

#[test]
fn a_third_transmission_goes_twice_where_a_copy_pays_and_an_unneeded_copy_is_counted() {
    // 1 ms sends on a 40 ms round trip, ordered: one more round trip holds up 40 messages, so
    // with two of five packets lost (p × 40 ≥ 1) a third transmission goes out twice.
    let cfg = ArqConfig {
        send_interval_ns: 1_000_000,
        initial_rtt_ns: 40_000_000,
        ..ArqConfig::default()
    };
    let (mut s, t2) = lose_message_zero_twice(cfg, 40_000_000);
    // The third transmission and its copy go back to back.
    let third = s.poll_transmit(t2).expect("third transmission");
    let copy = s.poll_transmit(t2).expect("its copy");
    assert_eq!((third.message_id, third.transmission), (0, 3));
    assert_eq!((copy.message_id, copy.transmission), (0, 4));
    assert_eq!(copy.packet_number, third.packet_number + 1);
    let st = s.stats();
    assert_eq!(st.repeat_copies, 1);
    assert_eq!(st.retransmissions, 3, "a copy is a retransmission");
    // The third transmission arrives first: the copy was not needed, and says so.
    s.handle_ack(
        125_000_000,
        &ack(
            9,
            third.packet_number,
            &[(third.packet_number - 1, third.packet_number), (1, 2)],
            1,
        ),
    );
    let st = s.stats();
    assert_eq!(st.unneeded_copies, 1);
    assert_eq!(st.unneeded_probes, 0, "a copy is no probe");
    assert_eq!(st.spurious_retransmissions, 1);
}

#[test]
fn no_copy_when_disabled_or_when_it_does_not_pay() {
    // The scenario above (message 0 lost twice: p = 2/5 of the packets sent)
    // with the copies disabled, with unordered delivery (only the message itself waits:
    // p × 1 < 1), and with a 1 ms round trip (p × 1 < 1): the third transmission goes alone.
    let cases = [
        (0, ArqOrdering::Ordered, 40_000_000u64),
        (3, ArqOrdering::Unordered, 40_000_000),
        (3, ArqOrdering::Ordered, 1_000_000),
    ];
    for (repeat_from_transmission, ordering, rtt) in cases {
        let cfg = ArqConfig {
            send_interval_ns: 1_000_000,
            initial_rtt_ns: rtt,
            repeat_from_transmission,
            ordering,
            ..ArqConfig::default()
        };
        let (mut s, t2) = lose_message_zero_twice(cfg, rtt);
        assert_eq!(s.poll_transmit(t2).map(|f| f.transmission), Some(3));
        assert_eq!(
            s.poll_transmit(t2),
            None,
            "{repeat_from_transmission} {ordering:?} {rtt}"
        );
        assert_eq!(s.stats().repeat_copies, 0);
    }
}

#[test]
fn the_probe_timeout_waits_out_a_host_stall_on_a_short_path() {
    // A 100 µs round trip: RFC 9002's 1 ms floor would probe 3.1 ms after the last send, and a
    // thread stall of a loaded host lasts that long. The floor of 10 ms holds the probe back.
    let cfg = ArqConfig {
        initial_rtt_ns: 100_000,
        ..ArqConfig::default()
    };
    let (mut s, _) = sender_with_config(cfg, 2);
    s.handle_ack(100_000, &ack(9, 0, &[(0, 0)], 1));
    assert!(s.stats().srtt_ns <= 200_000);
    let pto = s.poll_timeout().expect("message 1 is outstanding");
    assert!(
        pto >= 1_000_000 + 10_000_000 + 2_000_000,
        "probe at {pto} ns, sooner than 10 ms + max_ack_delay after the last send"
    );
}
