//! The receiving half of the reliable layer: dedup, ordered / unordered / deadline delivery
//! through a bounded reorder window, the ACK policy, and the delivery-side statistics.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::frame::{AckRanges, MAX_ACK_RANGES};
use super::{AckFrame, ArqConfig, ArqDeadline, ArqOrdering, RDataFrame};
use crate::stats::LatencyHistogram;
use crate::summary::LatencySummary;

/// Most received packet-number ranges remembered (the lowest are forgotten first).
const MAX_PN_RANGES: usize = 2 * MAX_ACK_RANGES;
/// Most heartbeat ACKs sent during one silence of the data direction.
const MAX_HEARTBEATS: u32 = 32;

/// A message handed to the application side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub message_id: u64,
    /// Sender wall clock at the message's first transmission.
    pub first_send_ns: u64,
    /// Receiver wall clock when its first copy arrived.
    pub arrival_wall_ns: u64,
    /// Receiver wall clock when it was delivered (later than the arrival when it waited for
    /// an earlier message in ordered mode).
    pub delivery_wall_ns: u64,
    /// Transmission number of the copy that arrived first.
    pub transmission: u16,
}

/// A slot of the reorder window. 32 bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    received: bool,
    transmission: u16,
    first_send_ns: u64,
    arrival_wall_ns: u64,
}

/// The receiver's counters and distributions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArqReceiverStats {
    /// RData datagrams of this session received, duplicates included.
    pub data_datagrams: u64,
    /// Their bytes on the wire (UDP payload).
    pub data_bytes: u64,
    /// Messages received at least once.
    pub unique_messages: u64,
    /// Messages handed to the application side.
    pub delivered: u64,
    /// Copies of a message already received (spurious retransmissions, path duplicates).
    pub duplicate_arrivals: u64,
    /// Datagrams that were a retransmission (transmission ≥ 2).
    pub retransmitted_arrivals: u64,
    /// Messages beyond the reorder window: dropped unacknowledged (the sender sends again).
    pub window_drops: u64,
    /// Missing messages skipped on the sender's word (given up there).
    pub skipped: u64,
    /// Of those, in deadline mode: the deadline drops.
    pub deadline_drops: u64,
    /// Messages the end of the session found still missing (after `finish`; in deadline mode
    /// also counted in `deadline_drops`).
    pub missing_at_finish: u64,
    /// Messages the receiver knew of at the end (`finish`'s total: the highest message id
    /// any RData named, plus one); `None` before `finish`. The sender's count may be higher:
    /// the last messages, if none of their transmissions arrived and no later RData named
    /// them, never reached the receiver's knowledge (see [`super::ArqReport`]).
    #[serde(default)]
    pub messages_known: Option<u64>,
    /// RData of another session: counted and ignored.
    pub foreign: u64,
    pub ack_datagrams: u64,
    pub ack_bytes: u64,
    /// ACKs held back because they would have exceeded the data received (count or bytes).
    pub acks_held_for_amplification: u64,
    /// Of `ack_datagrams`, the heartbeats: sent while the data direction was silent.
    #[serde(default)]
    pub heartbeat_acks: u64,
    /// Of `ack_datagrams`, the second copies sent while ACKs seemed lost.
    #[serde(default)]
    pub repeated_acks: u64,
    /// First send → first arrival, every message (the unordered view).
    pub latency_unordered: Option<LatencySummary>,
    /// First send → in-order delivery point (the ordered view), every message.
    pub latency_ordered: Option<LatencySummary>,
    /// Unordered latency of messages whose first arriving copy was transmission 1, 2, 3+.
    pub latency_tx1: Option<LatencySummary>,
    pub latency_tx2: Option<LatencySummary>,
    pub latency_tx3plus: Option<LatencySummary>,
    /// First send → delivery (in the mode's order) of messages that needed a retransmission.
    pub recovery_latency: Option<LatencySummary>,
    /// Arrival → in-order delivery point, of the messages that waited.
    pub hol_wait: Option<LatencySummary>,
    /// Messages that waited for an earlier one before their in-order point.
    pub hol_waited: u64,
    /// Most messages held in the reorder window (received, not yet in order) at once.
    pub max_buffered: u64,
}

/// The receiving state machine of one reliable session (sans-IO, quinn's shape).
#[derive(Debug)]
pub struct ArqReceiver {
    cfg: ArqConfig,
    session_id: u32,
    /// First message neither received nor skipped: every message below it has reached its
    /// in-order point. Slots cover `base .. base + recv_window`.
    base: u64,
    /// `slots[id % recv_window]` for `id` in the window.
    slots: Vec<Slot>,
    /// Received messages at or above `base`.
    buffered: u64,
    /// Received packet numbers, ascending, disjoint, separated by gaps; at most
    /// `MAX_PN_RANGES`.
    pn_ranges: VecDeque<(u64, u64)>,
    largest_pn: Option<u64>,
    largest_pn_at_ns: u64,
    /// RData received since the last ACK.
    unacked: u32,
    /// Arrival of the latest RData of this session (monotonic ns).
    last_arrival_ns: Option<u64>,
    /// Smoothed spacing of the sender's consecutive packet numbers (their send stamps), ns.
    send_gap_ns: u64,
    /// Send stamp of the largest packet number received (sender's clock).
    largest_send_ns: u64,
    /// Heartbeat ACKs sent since the latest RData arrived.
    heartbeats: u32,
    heartbeat_due: bool,
    /// When the latest ACK left (monotonic ns).
    last_ack_ns: u64,
    /// The oldest ACK (its largest, when it left) whose news the sender's `acked_below` has
    /// not shown yet.
    unconfirmed_ack: Option<(u64, u64)>,
    /// Shortest time from an ACK leaving to the first RData showing it arrived, ns: the
    /// round trip plus at most one send interval (0 before the first sample).
    confirm_rtt_ns: u64,
    /// ACKs still to send for the latest RData (two while ACKs seem lost).
    acks_to_send: u32,
    ack_now: bool,
    ack_deadline_ns: Option<u64>,
    deliveries: VecDeque<Delivered>,
    hist_unordered: LatencyHistogram,
    hist_ordered: LatencyHistogram,
    hist_tx: [LatencyHistogram; 3],
    hist_recovery: LatencyHistogram,
    hist_hol: LatencyHistogram,
    stats: ArqReceiverStats,
}

impl ArqReceiver {
    pub fn new(cfg: ArqConfig, session_id: u32, _now_ns: u64) -> Self {
        let window = cfg.recv_window.max(1) as usize;
        ArqReceiver {
            slots: vec![Slot::default(); window],
            cfg,
            session_id,
            base: 0,
            buffered: 0,
            pn_ranges: VecDeque::with_capacity(MAX_PN_RANGES + 1),
            largest_pn: None,
            largest_pn_at_ns: 0,
            unacked: 0,
            last_arrival_ns: None,
            send_gap_ns: 0,
            largest_send_ns: 0,
            heartbeats: 0,
            heartbeat_due: false,
            last_ack_ns: 0,
            unconfirmed_ack: None,
            confirm_rtt_ns: 0,
            acks_to_send: 0,
            ack_now: false,
            ack_deadline_ns: None,
            deliveries: VecDeque::new(),
            hist_unordered: LatencyHistogram::new(),
            hist_ordered: LatencyHistogram::new(),
            hist_tx: [
                LatencyHistogram::new(),
                LatencyHistogram::new(),
                LatencyHistogram::new(),
            ],
            hist_recovery: LatencyHistogram::new(),
            hist_hol: LatencyHistogram::new(),
            stats: ArqReceiverStats::default(),
        }
    }

    fn window(&self) -> u64 {
        self.slots.len() as u64
    }

    fn slot(&mut self, id: u64) -> &mut Slot {
        let n = self.slots.len() as u64;
        &mut self.slots[(id % n) as usize]
    }

    /// Takes one RData datagram (`wire_bytes` long) received at monotonic `now_ns` and wall
    /// clock `wall_ns`.
    pub fn handle_data(
        &mut self,
        now_ns: u64,
        wall_ns: u64,
        frame: &RDataFrame,
        wire_bytes: usize,
    ) {
        if frame.session_id != self.session_id {
            self.stats.foreign += 1;
            return;
        }
        self.stats.data_datagrams += 1;
        self.stats.data_bytes += wire_bytes as u64;
        if frame.transmission >= 2 {
            self.stats.retransmitted_arrivals += 1;
        }
        let id = frame.message_id;
        // The sender will not send these again: stop waiting for them (at most a window's
        // worth per datagram, so a forged far skip costs no more than a window).
        let skip_to = frame.skip_below.min(id).min(self.base + self.window());
        self.skip_to(skip_to, wall_ns);
        let accepted = if id < self.base {
            self.stats.duplicate_arrivals += 1;
            true
        } else if id >= self.base + self.window() {
            self.stats.window_drops += 1;
            false
        } else if self.slot(id).received {
            self.stats.duplicate_arrivals += 1;
            true
        } else {
            self.on_new_message(wall_ns, frame);
            true
        };
        self.forget_ranges_below(frame.acked_below);
        if accepted {
            if self
                .largest_pn
                .is_some_and(|l| frame.packet_number == l + 1)
            {
                let gap = frame.send_ns.wrapping_sub(self.largest_send_ns);
                // A gap longer than a second is a pause, not the pace.
                if gap <= 1_000_000_000 {
                    self.send_gap_ns = if self.send_gap_ns == 0 {
                        gap
                    } else {
                        (7 * self.send_gap_ns + gap) / 8
                    };
                }
            }
            if self.largest_pn.is_none_or(|l| frame.packet_number > l) {
                self.largest_send_ns = frame.send_ns;
            }
            self.last_arrival_ns = Some(now_ns);
            self.heartbeats = 0;
            self.heartbeat_due = false;
            let acks_lost = self.check_ack_confirmed(now_ns, frame.acked_below);
            self.on_packet_received(now_ns, frame.packet_number);
            if self.ack_now {
                // While a message is missing and the sender shows it did not get an ACK it
                // should have had by now, the ACK goes twice: the ACK direction is in a
                // burst, and each copy uses up one of its datagrams, so the sender learns of
                // the gap sooner (still at most one ACK per RData over the session).
                self.acks_to_send = if acks_lost && self.buffered > 0 { 2 } else { 1 };
            }
        }
    }

    /// Takes the sender's `acked_below` of an RData arriving at `now_ns`: true when an ACK
    /// sent more than a round trip and a send interval ago has still not shown up there.
    fn check_ack_confirmed(&mut self, now_ns: u64, acked_below: u64) -> bool {
        let Some((largest, sent_ns)) = self.unconfirmed_ack else {
            return false;
        };
        if acked_below > largest {
            let sample = now_ns.saturating_sub(sent_ns);
            if self.confirm_rtt_ns == 0 || sample < self.confirm_rtt_ns {
                self.confirm_rtt_ns = sample;
            }
            self.unconfirmed_ack = None;
            return false;
        }
        self.confirm_rtt_ns > 0 && now_ns >= sent_ns + self.confirm_rtt_ns + self.send_gap_ns.max(1)
    }

    fn on_new_message(&mut self, wall_ns: u64, frame: &RDataFrame) {
        let id = frame.message_id;
        *self.slot(id) = Slot {
            received: true,
            transmission: frame.transmission,
            first_send_ns: frame.first_send_ns,
            arrival_wall_ns: wall_ns,
        };
        self.buffered += 1;
        self.stats.max_buffered = self.stats.max_buffered.max(self.buffered);
        self.stats.unique_messages += 1;
        let latency = wall_ns.saturating_sub(frame.first_send_ns);
        self.hist_unordered.record(latency);
        let tx = usize::from(frame.transmission.clamp(1, 3)) - 1;
        self.hist_tx[tx].record(latency);
        if self.cfg.ordering == ArqOrdering::Unordered {
            self.deliver(id, wall_ns, wall_ns);
        }
        self.advance(wall_ns);
    }

    fn deliver(&mut self, id: u64, arrival_wall_ns: u64, wall_ns: u64) {
        let s = *self.slot(id);
        if s.transmission >= 2 {
            self.hist_recovery
                .record(wall_ns.saturating_sub(s.first_send_ns));
        }
        self.stats.delivered += 1;
        self.deliveries.push_back(Delivered {
            message_id: id,
            first_send_ns: s.first_send_ns,
            arrival_wall_ns,
            delivery_wall_ns: wall_ns,
            transmission: s.transmission,
        });
    }

    /// Moves `base` over the received messages at its head: their in-order point is now.
    fn advance(&mut self, wall_ns: u64) {
        while self.slot(self.base).received {
            let id = self.base;
            let s = *self.slot(id);
            self.hist_ordered
                .record(wall_ns.saturating_sub(s.first_send_ns));
            let wait = wall_ns.saturating_sub(s.arrival_wall_ns);
            if wait > 0 {
                self.stats.hol_waited += 1;
                self.hist_hol.record(wait);
            }
            if self.cfg.ordering == ArqOrdering::Ordered {
                self.deliver(id, s.arrival_wall_ns, wall_ns);
            }
            *self.slot(id) = Slot::default();
            self.buffered -= 1;
            self.base += 1;
        }
    }

    /// Gives up waiting for every missing message below `to`, delivering what was received.
    fn skip_to(&mut self, to: u64, wall_ns: u64) {
        while self.base < to {
            if !self.slot(self.base).received {
                self.stats.skipped += 1;
                if self.cfg.deadline != ArqDeadline::None {
                    self.stats.deadline_drops += 1;
                }
                self.base += 1;
            }
            self.advance(wall_ns);
        }
    }

    fn forget_ranges_below(&mut self, acked_below: u64) {
        // Keep the range holding the largest: an ACK always has one.
        while self.pn_ranges.len() > 1 && self.pn_ranges[0].1 < acked_below {
            self.pn_ranges.pop_front();
        }
    }

    /// Records packet number `pn` and decides when to acknowledge (RFC 9000 §13.2.1).
    fn on_packet_received(&mut self, now_ns: u64, pn: u64) {
        let immediate = match self.largest_pn {
            None => pn > 0,
            // Out of order, or a new gap below it.
            Some(largest) => pn < largest || pn > largest + 1,
        };
        self.insert_pn(pn);
        if self.largest_pn.is_none_or(|l| pn > l) {
            self.largest_pn = Some(pn);
            self.largest_pn_at_ns = now_ns;
        }
        self.unacked += 1;
        // While a message is missing (something waits behind it, or would in ordered mode),
        // every RData is acknowledged at once: a lost ACK then costs one datagram's spacing,
        // not two, when the sender needs to learn of a loss.
        let blocked = self.buffered > 0;
        if immediate || blocked || self.unacked >= self.cfg.ack_every.max(1) {
            self.ack_now = true;
        } else if self.ack_deadline_ns.is_none() {
            self.ack_deadline_ns = Some(now_ns.saturating_add(self.cfg.max_ack_delay_ns));
        }
    }

    fn insert_pn(&mut self, pn: u64) {
        // Ranges are ascending; most arrivals extend the last one.
        let at = self
            .pn_ranges
            .partition_point(|&(_, hi)| hi.saturating_add(1) < pn);
        match self.pn_ranges.get(at).copied() {
            Some((lo, hi)) if lo <= pn.saturating_add(1) => {
                if pn >= lo && pn <= hi {
                    return;
                }
                let merged = (lo.min(pn), hi.max(pn));
                self.pn_ranges[at] = merged;
                // Joining the next range?
                if let Some(&(next_lo, next_hi)) = self.pn_ranges.get(at + 1)
                    && next_lo <= merged.1 + 1
                {
                    self.pn_ranges[at] = (merged.0, next_hi);
                    self.pn_ranges.remove(at + 1);
                }
            }
            _ => {
                self.pn_ranges.insert(at, (pn, pn));
                if self.pn_ranges.len() > MAX_PN_RANGES {
                    self.pn_ranges.pop_front();
                }
            }
        }
    }

    /// The next ACK to send, if the policy says one is due. Never more ACKs than RData
    /// received, never more ACK bytes than RData bytes received.
    pub fn poll_ack(&mut self, now_ns: u64) -> Option<AckFrame> {
        let due =
            self.unacked > 0 && (self.ack_now || self.ack_deadline_ns.is_some_and(|t| now_ns >= t));
        if !due && !self.heartbeat_due {
            return None;
        }
        let largest = self.largest_pn?;
        let mut ranges = AckRanges::default();
        for &(lo, hi) in self.pn_ranges.iter().rev() {
            if !ranges.push(lo, hi) {
                break;
            }
        }
        let ack = AckFrame {
            session_id: self.session_id,
            largest,
            ack_delay_ns: now_ns.saturating_sub(self.largest_pn_at_ns),
            delivered_below: self.base,
            ranges,
        };
        let len = ack.encoded_len() as u64;
        if self.stats.ack_datagrams >= self.stats.data_datagrams
            || self.stats.ack_bytes + len > self.stats.data_bytes
        {
            self.stats.acks_held_for_amplification += 1;
            return None;
        }
        self.stats.ack_datagrams += 1;
        self.stats.ack_bytes += len;
        if !due {
            self.stats.heartbeat_acks += 1;
        }
        if self.unconfirmed_ack.is_none() {
            self.unconfirmed_ack = Some((largest, now_ns));
        }
        self.heartbeat_due = false;
        self.last_ack_ns = now_ns;
        if self.acks_to_send > 1 {
            // The same ACK once more, at once.
            self.acks_to_send -= 1;
            self.stats.repeated_acks += 1;
            return Some(ack);
        }
        self.acks_to_send = 0;
        self.unacked = 0;
        self.ack_now = false;
        self.ack_deadline_ns = None;
        Some(ack)
    }

    /// The next message for the application side, in the mode's order. Drain it after every
    /// `handle_data`: its queue holds at most one window's worth.
    pub fn poll_delivery(&mut self) -> Option<Delivered> {
        self.deliveries.pop_front()
    }

    /// When `handle_timeout` (or `poll_ack`) should next be called: the ACK delay, or the
    /// next heartbeat.
    pub fn poll_timeout(&self) -> Option<u64> {
        let ack = if self.unacked > 0 && !self.ack_now {
            self.ack_deadline_ns
        } else {
            None
        };
        match (ack, self.next_heartbeat_ns()) {
            (Some(a), Some(h)) => Some(a.min(h)),
            (a, h) => a.or(h),
        }
    }

    /// A heartbeat ACK is due once the data direction has been silent for two of the
    /// sender's send intervals (at least the maximum ACK delay), then again every send
    /// interval (at least half that delay) after the latest ACK, at most [`MAX_HEARTBEATS`]
    /// times per silence. It repeats what was received with a growing ACK delay: it tells
    /// the sender that what it sent since was lost (a burst), where an ACK on arrival
    /// cannot, since nothing arrives; and each one uses up a datagram of a burst on the ACK
    /// direction, which would otherwise hide the news.
    fn next_heartbeat_ns(&self) -> Option<u64> {
        let last = self.last_arrival_ns?;
        if self.heartbeats >= MAX_HEARTBEATS || self.heartbeat_due || self.unacked > 0 {
            return None;
        }
        let silence = self.cfg.max_ack_delay_ns.max(2 * self.send_gap_ns).max(1);
        let every = (self.cfg.max_ack_delay_ns / 2).max(self.send_gap_ns).max(1);
        Some(
            last.saturating_add(silence)
                .max(self.last_ack_ns.saturating_add(every)),
        )
    }

    pub fn handle_timeout(&mut self, now_ns: u64) {
        if self.ack_deadline_ns.is_some_and(|t| now_ns >= t) && self.unacked > 0 {
            self.ack_now = true;
        }
        if self.next_heartbeat_ns().is_some_and(|t| now_ns >= t) {
            self.heartbeats += 1;
            self.heartbeat_due = true;
        }
    }

    /// The session ended and the sender sent messages `0..total_messages`: delivers what waits
    /// behind a gap and counts what is still missing.
    pub fn finish(&mut self, wall_ns: u64, total_messages: u64) {
        // No more data is coming: the silence is the end, not a burst.
        self.heartbeats = MAX_HEARTBEATS;
        self.heartbeat_due = false;
        self.stats.messages_known = Some(total_messages);
        let in_window = total_messages.min(self.base + self.window());
        while self.base < in_window {
            if !self.slot(self.base).received {
                self.count_missing_at_finish(1);
                self.base += 1;
            }
            self.advance(wall_ns);
        }
        // Beyond the window nothing was kept: all of it is missing.
        if total_messages > self.base {
            self.count_missing_at_finish(total_messages - self.base);
            self.base = total_messages;
        }
    }

    fn count_missing_at_finish(&mut self, n: u64) {
        self.stats.missing_at_finish += n;
        // In deadline mode a message missing at the end was given up at its deadline.
        if self.cfg.deadline != ArqDeadline::None {
            self.stats.deadline_drops += n;
        }
    }

    /// First message not yet at its in-order point.
    pub fn delivered_below(&self) -> u64 {
        self.base
    }

    /// Counters and distributions so far.
    pub fn stats(&self) -> ArqReceiverStats {
        let mut s = self.stats.clone();
        s.latency_unordered = self.hist_unordered.summary();
        s.latency_ordered = self.hist_ordered.summary();
        s.latency_tx1 = self.hist_tx[0].summary();
        s.latency_tx2 = self.hist_tx[1].summary();
        s.latency_tx3plus = self.hist_tx[2].summary();
        s.recovery_latency = self.hist_recovery.summary();
        s.hol_wait = self.hist_hol.summary();
        s
    }

    /// Bytes the receiver's buffers hold (their capacities) plus its fixed size, histograms
    /// excluded (they are fixed-size, [`ArqReceiver::HISTOGRAMS`] of them).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.pn_ranges.capacity() * std::mem::size_of::<(u64, u64)>()
            + self.deliveries.capacity() * std::mem::size_of::<Delivered>()
    }

    /// Latency histograms a receiver keeps (fixed size each, whatever the run's length).
    pub const HISTOGRAMS: usize = 7;
}
