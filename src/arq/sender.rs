//! The sending half of the reliable layer: message window, packet records, RTT estimate, loss
//! detection (adaptive packet threshold, time threshold), probe timeout, give-ups.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{AckFrame, ArqConfig, ArqDeadline, ArqOrdering, GRANULARITY_NS, RDataFrame};

/// Most credits (retransmissions beyond the paced rate) saved up: bounds a burst.
const MAX_REXMIT_CREDIT: f64 = 32.0;

/// Floor of the probe timeout's variance term, instead of RFC 9002's 1 ms kGranularity: a
/// real host stalls a thread for milliseconds (a VM's vCPU, the scheduler under load), and a
/// probe fired in such a stall resends a message that was only late. Measured through `udplab
/// proxy` at 1 % loss both ways on this 2-vCPU VM, 10 000 messages at 1000/s, load ~5: 1 ms
/// sent 1122 probes (0.11 duplicate arrivals per message), 5 ms 88–334, 10 ms 0–6 (≤ 0.0014).
/// KCP's fast mode waits at least 30 ms (IKCP_RTO_NDL). Loss while data flows is found by the
/// packet and time thresholds and the receiver's heartbeat ACKs, not by this timer, so the
/// floor slows recovery only after everything (data and ACKs) went silent.
const PTO_VARIANCE_FLOOR_NS: u64 = 10_000_000;
/// The probe period doubles at most this many times: a path that comes back after a long
/// outage (or a loss model whose bursts only end with more datagrams) is probed again soon.
const MAX_PTO_BACKOFF_EXP: u32 = 4;
/// Highest packet threshold adaptation may reach.
const MAX_PACKET_THRESHOLD: u32 = 1024;
/// Time threshold factor, in 1/1024: RFC 9002's 9/8.
const TIME_THRESHOLD: u64 = 1152;
/// Largest reordering window adaptation may reach, ns.
const MAX_REORDER_WINDOW_NS: u64 = 500_000_000;

/// Why a message was sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    PacketThreshold,
    TimeThreshold,
    Probe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MsgStatus {
    /// Offered, never sent.
    Queued,
    /// Sent, neither acknowledged nor given up.
    Outstanding,
    Acked,
    GivenUp,
}

/// One message of the window. 32 bytes.
#[derive(Debug, Clone, Copy)]
struct Msg {
    /// Monotonic time of the first transmission (0 while queued).
    first_send_ns: u64,
    /// Packet number of the newest transmission.
    last_pn: u64,
    transmissions: u16,
    status: MsgStatus,
    /// Waiting in the retransmission queue.
    queued_again: bool,
    /// The transmission that was a repeat copy (sent right after the one before it), 0: none.
    copy_transmission: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PktStatus {
    InFlight,
    Acked,
    /// Declared lost by `cause`.
    Lost(Cause),
}

/// One sent packet. 32 bytes.
#[derive(Debug, Clone, Copy)]
struct Pkt {
    message_id: u64,
    sent_ns: u64,
    /// Largest packet number acknowledged when this one was declared lost.
    largest_acked_at_loss: u64,
    status: PktStatus,
    /// Which transmission of its message this was (1 = the first).
    transmission: u16,
}

// The memory bound in the module doc counts 32 bytes per packet record.
const _: () = assert!(std::mem::size_of::<Pkt>() <= 32);

/// The sender's counters and estimates (monotonic ns).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArqSenderStats {
    /// Messages offered (accepted into the window).
    pub messages: u64,
    /// Messages acknowledged (by range or by the receiver's cumulative point).
    pub messages_acked: u64,
    /// Messages given up after `max_transmissions`.
    pub messages_given_up: u64,
    /// Messages given up unacknowledged because their deadline passed (deadline mode; some
    /// may still have been delivered, the receiver's `deadline_drops` says).
    pub deadline_given_up: u64,
    /// Messages given up by the session give-up (no ACK progress for `idle_give_up_ns`).
    pub session_give_up_messages: u64,
    pub session_given_up: bool,
    /// Offers refused because the window was full.
    pub window_full: u64,
    /// RData datagrams sent, first transmissions and retransmissions.
    pub data_datagrams: u64,
    /// Their UDP payload bytes.
    pub data_bytes: u64,
    pub first_transmissions: u64,
    pub retransmissions: u64,
    pub rexmit_packet_threshold: u64,
    pub rexmit_time_threshold: u64,
    pub rexmit_pto: u64,
    /// Retransmissions sent beyond the paced rate (on the budget).
    pub rexmit_over_pace: u64,
    /// Retransmissions that were not needed: of a packet acknowledged after it had been
    /// declared lost, and probes sent while an earlier transmission was still on its way
    /// (`unneeded_probes`).
    pub spurious_retransmissions: u64,
    /// Of `spurious_retransmissions`, probe-timeout retransmissions whose message an earlier
    /// transmission, still in flight, delivered.
    #[serde(default)]
    pub unneeded_probes: u64,
    /// Of `retransmissions`, repeat copies: a third or later transmission sent twice in a row
    /// because the copy paid (see [`ArqConfig::repeat_from_transmission`]).
    #[serde(default)]
    pub repeat_copies: u64,
    /// Of `spurious_retransmissions`, repeat copies whose twin was acknowledged first.
    #[serde(default)]
    pub unneeded_copies: u64,
    pub packets_acked: u64,
    pub packets_declared_lost: u64,
    /// Probe timeouts that fired.
    pub pto_events: u64,
    /// Acks taken into account.
    pub acks_received: u64,
    /// Their bytes (re-encoded size).
    pub ack_bytes_received: u64,
    /// Acks naming a packet number or message never sent: counted and ignored.
    pub bogus_acks: u64,
    /// Acks of another session: counted and ignored.
    pub foreign_acks: u64,
    /// Packet records dropped to hold the memory bound while still in flight.
    pub packet_records_forgotten: u64,
    pub srtt_ns: u64,
    pub rttvar_ns: u64,
    /// 0 until the first sample.
    pub min_rtt_ns: u64,
    pub latest_rtt_ns: u64,
    pub rtt_samples: u64,
    /// Packet threshold at the end (raised by observed reordering).
    pub packet_threshold: u32,
    /// Reordering window at the end, ns: the time threshold's floor, raised to 9/8 of the
    /// longest delay of a packet wrongly declared lost by time (RACK's reo_wnd).
    pub reorder_window_ns: u64,
    /// Most packets in flight at once.
    pub max_in_flight: u64,
    /// Most messages in the window at once.
    pub max_window: u64,
}

impl ArqSenderStats {
    /// Packet numbers sent and never acknowledged: the loss before recovery.
    pub fn raw_lost_packets(&self) -> u64 {
        self.data_datagrams.saturating_sub(self.packets_acked)
    }
}

/// The sending state machine of one reliable session (sans-IO, quinn's shape).
#[derive(Debug)]
pub struct ArqSender {
    cfg: ArqConfig,
    session_id: u32,
    /// Wall clock minus monotonic clock, ns (wrapping), for the frames' wall-clock stamps.
    wall_offset_ns: u64,
    /// Messages `msg_base..next_msg_id`; everything below `msg_base` is acknowledged or given
    /// up. Invariant: `msgs.len() == next_msg_id - msg_base <= max_in_flight`.
    msgs: VecDeque<Msg>,
    msg_base: u64,
    next_msg_id: u64,
    /// First message never sent (`msg_base ≤ next_unsent ≤ next_msg_id`).
    next_unsent: u64,
    finished: bool,
    /// Messages to send again, oldest loss first; each at most once (`Msg::queued_again`).
    rexmit: VecDeque<(u64, Cause)>,
    /// Probes the PTO asked for and not yet sent.
    probes_pending: u32,
    /// A retransmission that goes out a second time, next (a repeat copy).
    repeat: Option<(u64, Cause)>,
    /// Packets `pkt_base..next_pn`. Invariant: `pkts.len() <= 4 × max_in_flight`.
    pkts: VecDeque<Pkt>,
    pkt_base: u64,
    next_pn: u64,
    /// Lowest packet number that may still be in flight (a scan hint).
    scan_from: u64,
    in_flight: u64,
    largest_acked: Option<u64>,
    /// When the largest acknowledged packet was sent (its record may be gone).
    largest_acked_sent_ns: Option<u64>,
    srtt_ns: u64,
    rttvar_ns: u64,
    min_rtt_ns: u64,
    latest_rtt_ns: u64,
    has_rtt_sample: bool,
    pto_count: u32,
    last_ack_eliciting_ns: Option<u64>,
    loss_time_ns: Option<u64>,
    last_progress_ns: u64,
    /// Paced slots not used yet (by new data or by a retransmission out of credit).
    slots: u32,
    credit: f64,
    packet_threshold: u32,
    /// Floor of the time threshold learnt from spurious retransmissions, ns.
    reorder_window_ns: u64,
    stats: ArqSenderStats,
}

impl ArqSender {
    pub fn new(cfg: ArqConfig, session_id: u32, now_ns: u64) -> Self {
        let window = cfg.max_in_flight.max(1) as usize;
        let initial_rtt = cfg.initial_rtt_ns.max(1);
        let packet_threshold = cfg.initial_packet_threshold.max(1);
        ArqSender {
            msgs: VecDeque::with_capacity(window),
            pkts: VecDeque::with_capacity(window),
            rexmit: VecDeque::with_capacity(window.min(1024)),
            cfg,
            session_id,
            wall_offset_ns: 0,
            msg_base: 0,
            next_msg_id: 0,
            next_unsent: 0,
            finished: false,
            probes_pending: 0,
            repeat: None,
            pkt_base: 0,
            next_pn: 0,
            scan_from: 0,
            in_flight: 0,
            largest_acked: None,
            largest_acked_sent_ns: None,
            srtt_ns: initial_rtt,
            rttvar_ns: initial_rtt / 2,
            min_rtt_ns: 0,
            latest_rtt_ns: 0,
            has_rtt_sample: false,
            pto_count: 0,
            last_ack_eliciting_ns: None,
            loss_time_ns: None,
            last_progress_ns: now_ns,
            slots: 0,
            credit: MAX_REXMIT_CREDIT,
            packet_threshold,
            reorder_window_ns: 0,
            stats: ArqSenderStats::default(),
        }
    }

    /// Tells the sender the wall clock (`wall_ns`, ns since the Unix epoch) that goes with
    /// monotonic `now_ns`: frames carry wall-clock stamps derived from it (the latency a
    /// receiver measures needs a common clock). Without it, frames carry monotonic ns.
    pub fn set_wall_clock(&mut self, now_ns: u64, wall_ns: u64) {
        self.wall_offset_ns = wall_ns.wrapping_sub(now_ns);
    }

    fn window_len(&self) -> u64 {
        self.next_msg_id - self.msg_base
    }

    fn msg(&self, id: u64) -> Option<&Msg> {
        self.msgs
            .get(usize::try_from(id.checked_sub(self.msg_base)?).ok()?)
    }

    fn msg_mut(&mut self, id: u64) -> Option<&mut Msg> {
        self.msgs
            .get_mut(usize::try_from(id.checked_sub(self.msg_base)?).ok()?)
    }

    fn pkt_mut(&mut self, pn: u64) -> Option<&mut Pkt> {
        self.pkts
            .get_mut(usize::try_from(pn.checked_sub(self.pkt_base)?).ok()?)
    }

    fn is_done_msg(&self, id: u64) -> bool {
        self.msg(id)
            .is_none_or(|m| matches!(m.status, MsgStatus::Acked | MsgStatus::GivenUp))
    }

    /// A paced slot for new data has come: queues the next message if the window has room
    /// (true), else counts a full window (false). Each call also earns `rexmit_budget` of a
    /// retransmission beyond the paced rate.
    pub fn offer(&mut self, _now_ns: u64) -> bool {
        self.credit = (self.credit + self.cfg.rexmit_budget.max(0.0)).min(MAX_REXMIT_CREDIT);
        // One unused slot may carry over (a retransmission out of credit takes it).
        self.slots = (self.slots + 1).min(2);
        if self.finished || self.stats.session_given_up {
            return false;
        }
        if self.window_len() >= u64::from(self.cfg.max_in_flight.max(1)) {
            self.stats.window_full += 1;
            return false;
        }
        self.msgs.push_back(Msg {
            first_send_ns: 0,
            last_pn: 0,
            transmissions: 0,
            status: MsgStatus::Queued,
            queued_again: false,
            copy_transmission: 0,
        });
        self.next_msg_id += 1;
        self.stats.messages += 1;
        self.stats.max_window = self.stats.max_window.max(self.window_len());
        true
    }

    /// No more new messages will be offered.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// The next RData to send: probes, then retransmissions (on credit, or in a paced slot),
    /// then queued new messages (in a paced slot). `None`: nothing to send now.
    pub fn poll_transmit(&mut self, now_ns: u64) -> Option<RDataFrame> {
        if self.stats.session_given_up {
            return None;
        }
        while self.probes_pending > 0 {
            self.probes_pending -= 1;
            if let Some(id) = self.oldest_outstanding() {
                return Some(self.transmit(now_ns, id, Some(Cause::Probe)));
            }
        }
        if let Some((id, cause)) = self.repeat {
            if self.is_done_msg(id) {
                self.repeat = None;
            } else if self.take_rexmit_allowance() {
                self.repeat = None;
                self.stats.repeat_copies += 1;
                let frame = self.transmit(now_ns, id, Some(cause));
                if let Some(m) = self.msg_mut(id) {
                    m.copy_transmission = frame.transmission;
                }
                return Some(frame);
            } else {
                return None;
            }
        }
        while let Some(&(id, cause)) = self.rexmit.front() {
            if self.is_done_msg(id) {
                self.rexmit.pop_front();
                continue;
            }
            if !self.take_rexmit_allowance() {
                break;
            }
            self.rexmit.pop_front();
            if let Some(m) = self.msg_mut(id) {
                m.queued_again = false;
            }
            let frame = self.transmit(now_ns, id, Some(cause));
            if self.copy_pays(frame.transmission) {
                self.repeat = Some((id, cause));
            }
            return Some(frame);
        }
        if self.next_unsent < self.next_msg_id && self.slots > 0 {
            self.slots -= 1;
            let id = self.next_unsent;
            self.next_unsent += 1;
            return Some(self.transmit(now_ns, id, None));
        }
        None
    }

    /// A retransmission may go now: on the budget's credit (beyond the pace) or in a paced slot.
    fn take_rexmit_allowance(&mut self) -> bool {
        if self.credit >= 1.0 {
            self.credit -= 1.0;
            self.stats.rexmit_over_pace += 1;
            true
        } else if self.slots > 0 {
            self.slots -= 1;
            true
        } else {
            false
        }
    }

    /// Whether transmission number `transmission` of a message, just sent, should go out a
    /// second time right away. A copy costs one datagram; it saves, when the first copy is
    /// lost (probability p, the session's loss so far), one more round trip of waiting for
    /// every message that waits on this one: srtt / send interval messages when ordered
    /// (head-of-line), just this one when unordered. It pays when p × that ≥ 1. Only from
    /// [`ArqConfig::repeat_from_transmission`] on, so copies cost about p² datagrams per
    /// message and cut the tail (messages lost twice) where one more round trip costs most.
    fn copy_pays(&self, transmission: u16) -> bool {
        let from = self.cfg.repeat_from_transmission;
        if from == 0 || transmission < from || self.stats.data_datagrams == 0 {
            return false;
        }
        let p = self.stats.packets_declared_lost as f64 / self.stats.data_datagrams as f64;
        let waiting = match self.cfg.ordering {
            ArqOrdering::Unordered => 1.0,
            ArqOrdering::Ordered if self.cfg.send_interval_ns == 0 => f64::INFINITY,
            ArqOrdering::Ordered => {
                (self.srtt_ns as f64 / self.cfg.send_interval_ns as f64).max(1.0)
            }
        };
        p > 0.0 && p * waiting >= 1.0
    }

    fn oldest_outstanding(&self) -> Option<u64> {
        (self.msg_base..self.next_unsent).find(|&id| {
            self.msg(id)
                .is_some_and(|m| m.status == MsgStatus::Outstanding)
        })
    }

    fn transmit(&mut self, now_ns: u64, id: u64, cause: Option<Cause>) -> RDataFrame {
        if self.pkts.len() >= 4 * self.cfg.max_in_flight.max(1) as usize {
            // Memory bound: forget the oldest record even if still in flight; its message
            // stays outstanding (a probe or the cumulative point settles it).
            if let Some(p) = self.pkts.pop_front() {
                if p.status == PktStatus::InFlight {
                    self.in_flight -= 1;
                    self.stats.packet_records_forgotten += 1;
                }
                self.pkt_base += 1;
                self.scan_from = self.scan_from.max(self.pkt_base);
            }
        }
        let pn = self.next_pn;
        self.next_pn += 1;
        let msg_base = self.msg_base;
        let acked_below = self.largest_acked.map_or(0, |l| l + 1);
        let wall = self.wall_offset_ns;
        let session_id = self.session_id;
        let m = self
            .msg_mut(id)
            .expect("transmit is only called for a message in the window");
        if m.status == MsgStatus::Queued {
            m.status = MsgStatus::Outstanding;
            m.first_send_ns = now_ns;
        }
        m.transmissions = m.transmissions.saturating_add(1);
        m.last_pn = pn;
        let transmission = m.transmissions;
        let frame = RDataFrame {
            session_id,
            packet_number: pn,
            message_id: id,
            transmission,
            first_send_ns: m.first_send_ns.wrapping_add(wall),
            send_ns: now_ns.wrapping_add(wall),
            skip_below: msg_base,
            acked_below,
        };
        self.pkts.push_back(Pkt {
            message_id: id,
            sent_ns: now_ns,
            largest_acked_at_loss: 0,
            status: PktStatus::InFlight,
            transmission,
        });
        self.in_flight += 1;
        self.stats.max_in_flight = self.stats.max_in_flight.max(self.in_flight);
        self.last_ack_eliciting_ns = Some(now_ns);
        self.stats.data_datagrams += 1;
        self.stats.data_bytes += u64::from(self.cfg.payload_size);
        match cause {
            None => self.stats.first_transmissions += 1,
            Some(cause) => {
                self.stats.retransmissions += 1;
                match cause {
                    Cause::PacketThreshold => self.stats.rexmit_packet_threshold += 1,
                    Cause::TimeThreshold => self.stats.rexmit_time_threshold += 1,
                    Cause::Probe => self.stats.rexmit_pto += 1,
                }
            }
        }
        frame
    }

    /// Takes an ACK into account. An ACK of another session, or naming a packet number or a
    /// message never sent, is counted and ignored.
    pub fn handle_ack(&mut self, now_ns: u64, ack: &AckFrame) {
        if ack.session_id != self.session_id {
            self.stats.foreign_acks += 1;
            return;
        }
        let bogus = ack.largest >= self.next_pn
            || ack.delivered_below > self.next_unsent
            || ack
                .ranges
                .as_slice()
                .iter()
                .any(|r| r.largest > ack.largest);
        if bogus {
            self.stats.bogus_acks += 1;
            return;
        }
        self.stats.acks_received += 1;
        self.stats.ack_bytes_received += ack.encoded_len() as u64;

        let previous_largest = self.largest_acked;
        let mut progress = false;
        let mut largest_newly_acked = false;
        for r in ack.ranges.as_slice() {
            let lo = r.smallest.max(self.pkt_base);
            let hi = r.largest.min(self.next_pn.saturating_sub(1));
            if lo > hi {
                continue;
            }
            for pn in lo..=hi {
                let newly = self.on_packet_acked(now_ns, pn, previous_largest);
                progress |= newly;
                if newly && pn == ack.largest {
                    largest_newly_acked = true;
                }
            }
        }
        if previous_largest.is_none_or(|l| ack.largest > l) {
            self.largest_acked = Some(ack.largest);
            self.largest_acked_sent_ns = self.pkt_mut(ack.largest).map(|p| p.sent_ns);
            if largest_newly_acked && let Some(p) = self.pkt_mut(ack.largest) {
                let sample = now_ns.saturating_sub(p.sent_ns);
                self.update_rtt(sample, ack.ack_delay_ns);
            }
        }
        // The cumulative point: every message below it reached the receiver.
        let upto = ack.delivered_below.min(self.next_unsent);
        let mut id = self.msg_base;
        while id < upto {
            if let Some(m) = self.msg_mut(id)
                && m.status == MsgStatus::Outstanding
            {
                m.status = MsgStatus::Acked;
                self.stats.messages_acked += 1;
                progress = true;
            }
            id += 1;
        }
        if progress {
            self.pto_count = 0;
            self.last_progress_ns = now_ns;
        }
        self.detect_lost(now_ns);
        self.detect_lost_beyond_largest(now_ns, ack);
        self.trim(now_ns);
    }

    /// An ACK also says what had not arrived when it was made: nothing after `largest`
    /// reached the receiver in the `ack_delay` after `largest` did. A packet sent after
    /// `largest` but more than the reordering margin before `largest`'s send time plus that
    /// delay would have been in this ACK: it is lost (time threshold), though nothing beyond
    /// it was acknowledged. This is what recovers a burst that swallows every datagram after
    /// the loss: the receiver's heartbeat ACKs during the silence carry the growing delay.
    fn detect_lost_beyond_largest(&mut self, now_ns: u64, ack: &AckFrame) {
        let Some(largest) = self.largest_acked else {
            return;
        };
        if ack.largest != largest {
            return; // an older ACK, overtaken: it says nothing about now
        }
        let Some(sent_largest) = self.largest_acked_sent_ns else {
            return;
        };
        let made = sent_largest.saturating_add(ack.ack_delay_ns).min(now_ns);
        let margin = self
            .loss_delay()
            .saturating_sub(self.min_rtt_ns)
            .max(GRANULARITY_NS);
        let Some(cutoff) = made.checked_sub(margin) else {
            return;
        };
        let mut pn = largest + 1;
        while pn < self.next_pn {
            let Some(p) = self.pkt_mut(pn) else {
                pn += 1;
                continue;
            };
            if p.sent_ns > cutoff {
                break; // sent in packet-number order: the rest is later still
            }
            if p.status == PktStatus::InFlight {
                p.status = PktStatus::Lost(Cause::TimeThreshold);
                p.largest_acked_at_loss = largest;
                let message_id = p.message_id;
                self.in_flight -= 1;
                self.stats.packets_declared_lost += 1;
                self.on_packet_lost(pn, message_id, Cause::TimeThreshold);
            }
            pn += 1;
        }
    }

    /// Marks `pn` acknowledged; true when that is news (it was in flight or declared lost).
    fn on_packet_acked(&mut self, now_ns: u64, pn: u64, largest_before: Option<u64>) -> bool {
        let Some(p) = self.pkt_mut(pn) else {
            return false;
        };
        let (message_id, status, sent_ns, transmission) =
            (p.message_id, p.status, p.sent_ns, p.transmission);
        if status == PktStatus::Acked {
            return false;
        }
        p.status = PktStatus::Acked;
        self.stats.packets_acked += 1;
        match status {
            PktStatus::InFlight => {
                self.in_flight -= 1;
                // A packet still in flight is never retransmitted for loss, so later
                // transmissions of its message were probes, and this packet shows they were
                // not needed: spurious too (the receiver counts them as duplicate arrivals).
                if let Some(m) = self.msg(message_id)
                    && m.status == MsgStatus::Outstanding
                    && m.transmissions > transmission
                {
                    let unneeded = u64::from(m.transmissions - transmission);
                    // One of them may be a repeat copy rather than a probe.
                    let copies = u64::from(m.copy_transmission > transmission);
                    self.stats.spurious_retransmissions += unneeded;
                    self.stats.unneeded_copies += copies;
                    self.stats.unneeded_probes += unneeded - copies;
                }
            }
            PktStatus::Lost(cause) => {
                // Acknowledged after it was declared lost: the retransmission was spurious.
                self.stats.spurious_retransmissions += 1;
                if !self.cfg.fixed_packet_threshold {
                    // RACK: wait for as much reordering as was just seen, in packets (it
                    // arrived after packets up to `largest_before`) and in time.
                    let distance = largest_before.unwrap_or(pn).saturating_sub(pn) + 1;
                    let distance = u32::try_from(distance).unwrap_or(u32::MAX);
                    self.packet_threshold = self
                        .packet_threshold
                        .max(distance.min(MAX_PACKET_THRESHOLD));
                    if cause == Cause::TimeThreshold {
                        let took = now_ns
                            .saturating_sub(sent_ns)
                            .saturating_mul(TIME_THRESHOLD)
                            / 1024;
                        self.reorder_window_ns =
                            self.reorder_window_ns.max(took.min(MAX_REORDER_WINDOW_NS));
                    }
                }
            }
            PktStatus::Acked => {}
        }
        if let Some(m) = self.msg_mut(message_id)
            && matches!(m.status, MsgStatus::Outstanding)
        {
            m.status = MsgStatus::Acked;
            self.stats.messages_acked += 1;
        }
        true
    }

    /// RFC 9002 §5.3.
    fn update_rtt(&mut self, latest: u64, ack_delay: u64) {
        self.latest_rtt_ns = latest;
        self.stats.rtt_samples += 1;
        if !self.has_rtt_sample {
            self.has_rtt_sample = true;
            self.min_rtt_ns = latest;
            self.srtt_ns = latest;
            self.rttvar_ns = latest / 2;
            return;
        }
        self.min_rtt_ns = self.min_rtt_ns.min(latest);
        let ack_delay = ack_delay.min(self.cfg.max_ack_delay_ns);
        let adjusted = if latest >= self.min_rtt_ns + ack_delay {
            latest - ack_delay
        } else {
            latest
        };
        let deviation = self.srtt_ns.abs_diff(adjusted);
        self.rttvar_ns = (3 * self.rttvar_ns + deviation) / 4;
        self.srtt_ns = (7 * self.srtt_ns + adjusted) / 8;
    }

    fn loss_delay(&self) -> u64 {
        let rtt = self.srtt_ns.max(self.latest_rtt_ns);
        (rtt.saturating_mul(TIME_THRESHOLD) / 1024)
            .max(self.reorder_window_ns)
            .max(GRANULARITY_NS)
    }

    /// RFC 9002 §6.1: packet and time thresholds below the largest acknowledged.
    fn detect_lost(&mut self, now_ns: u64) {
        self.loss_time_ns = None;
        let Some(largest) = self.largest_acked else {
            return;
        };
        let loss_delay = self.loss_delay();
        let lost_before = now_ns.saturating_sub(loss_delay);
        let threshold = u64::from(self.packet_threshold);
        // Move the scan hint past what is no longer in flight.
        while self.scan_from < self.next_pn
            && self
                .pkt_mut(self.scan_from)
                .is_none_or(|p| p.status != PktStatus::InFlight)
        {
            self.scan_from += 1;
        }
        let mut pn = self.scan_from;
        while pn < largest {
            let Some(p) = self.pkt_mut(pn) else {
                pn += 1;
                continue;
            };
            if p.status == PktStatus::InFlight {
                let cause = if largest >= pn + threshold {
                    Some(Cause::PacketThreshold)
                } else if p.sent_ns <= lost_before {
                    Some(Cause::TimeThreshold)
                } else {
                    None
                };
                match cause {
                    Some(cause) => {
                        p.status = PktStatus::Lost(cause);
                        p.largest_acked_at_loss = largest;
                        let message_id = p.message_id;
                        self.in_flight -= 1;
                        self.stats.packets_declared_lost += 1;
                        self.on_packet_lost(pn, message_id, cause);
                    }
                    None => {
                        let at = p.sent_ns + loss_delay;
                        self.loss_time_ns = Some(self.loss_time_ns.map_or(at, |t| t.min(at)));
                    }
                }
            }
            pn += 1;
        }
    }

    fn on_packet_lost(&mut self, pn: u64, message_id: u64, cause: Cause) {
        let max_tx = self.cfg.max_transmissions.max(1);
        let Some(m) = self.msg_mut(message_id) else {
            return;
        };
        // Only the newest transmission's loss matters (a probe copy may still be in flight).
        if m.status != MsgStatus::Outstanding || m.last_pn != pn || m.queued_again {
            return;
        }
        if u32::from(m.transmissions) >= max_tx {
            m.status = MsgStatus::GivenUp;
            self.stats.messages_given_up += 1;
            return;
        }
        m.queued_again = true;
        self.rexmit.push_back((message_id, cause));
    }

    /// Drops what is settled from the fronts of both rings.
    fn trim(&mut self, now_ns: u64) {
        while let Some(m) = self.msgs.front() {
            if matches!(m.status, MsgStatus::Acked | MsgStatus::GivenUp) {
                self.msgs.pop_front();
                self.msg_base += 1;
            } else {
                break;
            }
        }
        let cap = 2 * self.cfg.max_in_flight.max(1) as usize;
        // A lost record stays long enough for a late ACK of it to show a spurious
        // retransmission: two probe periods.
        let keep_lost_ns = 2 * self.pto_base();
        while let Some(p) = self.pkts.front() {
            let settled = match p.status {
                PktStatus::InFlight => false,
                PktStatus::Acked => true,
                // A lost record is kept while its message is open (a late ACK of it is a
                // spurious retransmission to detect), up to the cap.
                PktStatus::Lost(_) => {
                    now_ns >= p.sent_ns.saturating_add(keep_lost_ns) || self.pkts.len() > cap
                }
            };
            if !settled {
                break;
            }
            self.pkts.pop_front();
            self.pkt_base += 1;
        }
        self.scan_from = self.scan_from.max(self.pkt_base);
    }

    /// Something sent is not settled: packets in flight, or an outstanding message whose
    /// packet record was forgotten under the memory bound (the probe settles it).
    fn pto_armed(&self) -> bool {
        self.in_flight > 0 || self.outstanding()
    }

    fn outstanding(&self) -> bool {
        self.msg_base < self.next_unsent
    }

    fn pto_base(&self) -> u64 {
        self.srtt_ns + (4 * self.rttvar_ns).max(PTO_VARIANCE_FLOOR_NS) + self.cfg.max_ack_delay_ns
    }

    fn pto_period(&self) -> u64 {
        self.pto_base()
            .saturating_mul(1u64 << self.pto_count.min(MAX_PTO_BACKOFF_EXP))
    }

    fn deadline_ns(&self) -> Option<u64> {
        match self.cfg.deadline {
            ArqDeadline::None => None,
            ArqDeadline::After { ns } => Some(ns),
            ArqDeadline::RttMultiple { times_1000 } => {
                Some(self.srtt_ns.saturating_mul(u64::from(times_1000)) / 1000)
            }
        }
    }

    /// The oldest outstanding message's deadline (deadline mode).
    fn next_deadline(&self) -> Option<u64> {
        let dur = self.deadline_ns()?;
        let id = self.oldest_outstanding()?;
        Some(self.msg(id)?.first_send_ns.saturating_add(dur))
    }

    /// When `handle_timeout` should next be called: loss time, probe timeout, a message's
    /// deadline or the session give-up, whichever comes first.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.stats.session_given_up {
            return None;
        }
        let mut next = self.loss_time_ns;
        let mut at = |t: Option<u64>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: u64| n.min(t)));
            }
        };
        if self.loss_time_ns.is_none()
            && self.pto_armed()
            && let Some(last) = self.last_ack_eliciting_ns
        {
            at(Some(last.saturating_add(self.pto_period())));
        }
        at(self.next_deadline());
        if self.outstanding() {
            at(Some(
                self.last_progress_ns
                    .saturating_add(self.cfg.idle_give_up_ns),
            ));
        }
        next
    }

    /// Runs what is due at `now_ns`.
    pub fn handle_timeout(&mut self, now_ns: u64) {
        if self.stats.session_given_up {
            return;
        }
        if self.outstanding()
            && now_ns
                >= self
                    .last_progress_ns
                    .saturating_add(self.cfg.idle_give_up_ns)
        {
            self.give_up_session();
            return;
        }
        if let Some(dur) = self.deadline_ns() {
            for id in self.msg_base..self.next_unsent {
                let Some(m) = self.msg_mut(id) else { break };
                if m.status != MsgStatus::Outstanding {
                    continue;
                }
                if m.first_send_ns.saturating_add(dur) > now_ns {
                    break; // first sends are in id order
                }
                m.status = MsgStatus::GivenUp;
                self.stats.deadline_given_up += 1;
            }
        }
        if self.loss_time_ns.is_some_and(|t| t <= now_ns) {
            self.detect_lost(now_ns);
        } else if self.loss_time_ns.is_none()
            && self.pto_armed()
            && self
                .last_ack_eliciting_ns
                .is_some_and(|last| now_ns >= last.saturating_add(self.pto_period()))
        {
            // Probe timeout: marks nothing lost, sends the oldest outstanding message again.
            self.pto_count += 1;
            self.stats.pto_events += 1;
            // Two probes (RFC 9002 §6.2.4): one lost probe does not cost another period.
            self.probes_pending = 2;
            // Re-arm from now even if the probe cannot go out at once.
            self.last_ack_eliciting_ns = Some(now_ns);
        }
        self.trim(now_ns);
    }

    fn give_up_session(&mut self) {
        self.stats.session_given_up = true;
        for m in self.msgs.iter_mut() {
            if matches!(m.status, MsgStatus::Outstanding | MsgStatus::Queued) {
                m.status = MsgStatus::GivenUp;
                self.stats.session_give_up_messages += 1;
            }
        }
        self.rexmit.clear();
        self.trim(self.last_progress_ns);
    }

    /// Finished, and every message acknowledged or given up (or the session given up).
    pub fn is_done(&self) -> bool {
        self.stats.session_given_up || (self.finished && self.msg_base == self.next_msg_id)
    }

    /// The sender will never send a message below this id again.
    pub fn skip_below(&self) -> u64 {
        self.msg_base
    }

    /// Counters and estimates so far.
    pub fn stats(&self) -> ArqSenderStats {
        let mut s = self.stats.clone();
        s.srtt_ns = self.srtt_ns;
        s.rttvar_ns = self.rttvar_ns;
        s.min_rtt_ns = self.min_rtt_ns;
        s.latest_rtt_ns = self.latest_rtt_ns;
        s.packet_threshold = self.packet_threshold;
        s.reorder_window_ns = self.reorder_window_ns;
        s
    }

    /// Bytes the sender's buffers hold (their capacities) plus its fixed size: what the
    /// memory bound in the module documentation limits.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.msgs.capacity() * std::mem::size_of::<Msg>()
            + self.pkts.capacity() * std::mem::size_of::<Pkt>()
            + self.rexmit.capacity() * std::mem::size_of::<(u64, Cause)>()
    }
}
