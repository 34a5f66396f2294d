//! Deterministic simulation of one reliable session: an [`ArqSender`] and an [`ArqReceiver`]
//! joined by two seeded impairment engines ([`crate::impair`], the specs the CLI takes), one
//! per direction (RData and ACKs), plus a constant base one-way delay, on a virtual clock.
//!
//! No sockets, no real time: the same settings give the same figures on every machine, so
//! the target table of issue 10 is held by ordinary tests (see the tests below and
//! `tests/it/arq_sim.rs`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{
    AckFrame, ArqConfig, ArqOrdering, ArqReceiver, ArqReceiverStats, ArqReport, ArqSender,
    ArqSenderStats, RDataFrame,
};
use crate::impair::{Fate, ImpairSpec, Impairment};

/// Wall clock of the virtual clock's origin (any fixed epoch; only differences matter).
const WALL_ORIGIN_NS: u64 = 1_700_000_000_000_000_000;

/// One simulated run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub arq: ArqConfig,
    pub session_id: u32,
    /// Messages the sender offers.
    pub messages: u64,
    /// Paced new-message slots per second.
    pub pps: u64,
    /// Impairment of the RData direction.
    pub data_impair: ImpairSpec,
    /// Impairment of the ACK direction.
    pub ack_impair: ImpairSpec,
    /// Constant one-way delay added after the impairment, both directions (loopback's ~30 µs).
    pub base_delay_ns: u64,
    /// Give up the simulation (not the session) after this much virtual time.
    pub max_virtual_ns: u64,
}

/// Datagrams of `payload` bytes at `pps` through `spec` without any recovery (the plain,
/// unreliable run): how many of `count` are delivered per second of sending.
pub fn unreliable_delivered_rate(spec: &ImpairSpec, pps: u64, count: u64, payload: usize) -> f64 {
    let origin = crate::time::now();
    let mut imp: Impairment<()> = Impairment::new(spec);
    let mut delivered = 0u64;
    for k in 0..count {
        if matches!(
            imp.handle(at(origin, k * 1_000_000_000 / pps.max(1)), payload, ()),
            Fate::Passed { .. }
        ) {
            delivered += 1;
        }
    }
    delivered as f64 * pps as f64 / count.max(1) as f64
}

impl SimConfig {
    /// The reference source: `messages` of 1200 B at 1000/s, the same impairment on
    /// both directions, 30 µs base delay.
    pub fn paced(mut arq: ArqConfig, impair: &str, messages: u64) -> Result<Self, String> {
        let spec: ImpairSpec = impair.parse().map_err(|e| format!("{impair}: {e}"))?;
        if arq.send_interval_ns == 0 {
            arq.send_interval_ns = 1_000_000;
        }
        Ok(SimConfig {
            arq,
            session_id: 0x5EED,
            messages,
            pps: 1000,
            data_impair: spec,
            ack_impair: with_other_seed(spec),
            base_delay_ns: 30_000,
            max_virtual_ns: messages.saturating_mul(1_000_000) + 120_000_000_000,
        })
    }
}

/// The ACK direction draws its own fates: same settings, another seed.
fn with_other_seed(mut spec: ImpairSpec) -> ImpairSpec {
    spec.seed = spec.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    spec
}

/// What a simulated run measured.
#[derive(Debug, Clone)]
pub struct SimResult {
    pub report: ArqReport,
    pub sender: ArqSenderStats,
    pub receiver: ArqReceiverStats,
    /// Virtual time when the sender was done, ns.
    pub end_ns: u64,
    /// Deliveries out of the mode's order or of a message delivered before.
    pub order_violations: u64,
    /// Largest buffer footprint seen (`state_bytes`), sender and receiver.
    pub max_sender_state_bytes: usize,
    pub max_receiver_state_bytes: usize,
    /// The run hit `max_virtual_ns` before the sender was done.
    pub timed_out: bool,
    /// RData datagrams the data direction's impairment dropped, and its longest run of
    /// consecutive drops (a message first sent in such a run waits at least that many sends).
    pub data_dropped: u64,
    pub longest_data_loss_run: u64,
    /// The same for ACKs.
    pub ack_dropped: u64,
    pub longest_ack_loss_run: u64,
}

/// A datagram crossing the simulated link.
#[derive(Debug, Clone)]
enum Wire {
    Data(RDataFrame),
    /// Boxed: an ACK carries its 32 ranges inline.
    Ack(Box<AckFrame>),
}

struct Link {
    imp: Impairment<Wire>,
    loss_run: u64,
    longest_loss_run: u64,
    /// Released by the impairment, arriving after the base delay: (arrival ns, datagram).
    fifo: VecDeque<(u64, Wire)>,
}

impl Link {
    fn new(spec: &ImpairSpec) -> Self {
        Link {
            imp: Impairment::new(spec),
            loss_run: 0,
            longest_loss_run: 0,
            fifo: VecDeque::new(),
        }
    }

    fn next_event(&self, origin: Instant) -> Option<u64> {
        let imp = self.imp.poll_timeout().map(|t| ns_of(origin, t));
        let fifo = self.fifo.front().map(|(t, _)| *t);
        min_opt(imp, fifo)
    }

    fn release(&mut self, origin: Instant, now: u64, base_delay: u64) {
        while let Some(w) = self.imp.poll_release(at(origin, now)) {
            self.fifo.push_back((now + base_delay, w));
        }
    }

    fn offer(&mut self, origin: Instant, now: u64, len: usize, w: Wire) {
        if self.imp.handle(at(origin, now), len, w) == Fate::Dropped {
            self.loss_run += 1;
            self.longest_loss_run = self.longest_loss_run.max(self.loss_run);
        } else {
            self.loss_run = 0;
        }
    }

    fn arrival(&mut self, now: u64) -> Option<Wire> {
        if self.fifo.front().is_some_and(|(t, _)| *t <= now) {
            self.fifo.pop_front().map(|(_, w)| w)
        } else {
            None
        }
    }
}

fn at(origin: Instant, ns: u64) -> Instant {
    origin + Duration::from_nanos(ns)
}

fn ns_of(origin: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Runs one session to its end (or to `max_virtual_ns`).
pub fn run(cfg: &SimConfig) -> SimResult {
    let origin = crate::time::now();
    let payload = cfg.arq.payload_size as usize;
    let mut sender = ArqSender::new(cfg.arq.clone(), cfg.session_id, 0);
    sender.set_wall_clock(0, WALL_ORIGIN_NS);
    let mut receiver = ArqReceiver::new(cfg.arq.clone(), cfg.session_id, 0);
    let mut data = Link::new(&cfg.data_impair);
    let mut acks = Link::new(&cfg.ack_impair);
    let mut delivered = vec![false; usize::try_from(cfg.messages).unwrap_or(0)];
    let mut next_in_order = 0u64;
    let mut order_violations = 0u64;
    let mut offered = 0u64;
    let mut slot = 0u64;
    let gap_num = 1_000_000_000u64;
    let pps = cfg.pps.max(1);
    let mut now = 0u64;
    let mut max_sender_state = sender.state_bytes();
    let mut max_receiver_state = receiver.state_bytes();
    let mut timed_out = false;

    loop {
        // The pace goes on after the last new message: retransmissions still take slots.
        let next_slot = Some(slot * gap_num / pps);
        let next = [
            next_slot,
            sender.poll_timeout(),
            receiver.poll_timeout(),
            data.next_event(origin),
            acks.next_event(origin),
        ]
        .into_iter()
        .fold(None, min_opt);
        if sender.is_done() && data.fifo.is_empty() && data.imp.pending() == 0 {
            break;
        }
        let Some(next) = next else { break };
        if next > cfg.max_virtual_ns {
            timed_out = true;
            break;
        }
        now = now.max(next);

        data.release(origin, now, cfg.base_delay_ns);
        acks.release(origin, now, cfg.base_delay_ns);
        while let Some(w) = data.arrival(now) {
            if let Wire::Data(frame) = w {
                receiver.handle_data(now, now + WALL_ORIGIN_NS, &frame, payload);
            }
            while let Some(d) = receiver.poll_delivery() {
                let seen = delivered.get_mut(d.message_id as usize);
                match seen {
                    Some(seen) if !*seen => *seen = true,
                    _ => order_violations += 1,
                }
                if cfg.arq.ordering == ArqOrdering::Ordered {
                    if d.message_id < next_in_order {
                        order_violations += 1;
                    }
                    next_in_order = d.message_id + 1;
                }
            }
            while let Some(ack) = receiver.poll_ack(now) {
                let len = ack.encoded_len();
                acks.offer(origin, now, len, Wire::Ack(Box::new(ack)));
            }
        }
        while let Some(w) = acks.arrival(now) {
            if let Wire::Ack(ack) = w {
                sender.handle_ack(now, &ack);
            }
        }
        if receiver.poll_timeout().is_some_and(|t| t <= now) {
            receiver.handle_timeout(now);
            while let Some(ack) = receiver.poll_ack(now) {
                let len = ack.encoded_len();
                acks.offer(origin, now, len, Wire::Ack(Box::new(ack)));
            }
        }
        if sender.poll_timeout().is_some_and(|t| t <= now) {
            sender.handle_timeout(now);
        }
        if next_slot.is_some_and(|t| t <= now) {
            slot += 1;
            if sender.offer(now) {
                offered += 1;
            }
            if offered == cfg.messages {
                sender.finish();
            }
        }
        while let Some(frame) = sender.poll_transmit(now) {
            data.offer(origin, now, payload, Wire::Data(frame));
        }
        max_sender_state = max_sender_state.max(sender.state_bytes());
        max_receiver_state = max_receiver_state.max(receiver.state_bytes());
    }
    receiver.finish(now + WALL_ORIGIN_NS, offered);
    while let Some(d) = receiver.poll_delivery() {
        match delivered.get_mut(d.message_id as usize) {
            Some(seen) if !*seen => *seen = true,
            _ => order_violations += 1,
        }
    }
    let sender_stats = sender.stats();
    let receiver_stats = receiver.stats();
    SimResult {
        report: ArqReport::new(
            Some(cfg.arq.clone()),
            sender_stats.clone(),
            receiver_stats.clone(),
            now,
        ),
        sender: sender_stats,
        receiver: receiver_stats,
        end_ns: now,
        order_violations,
        max_sender_state_bytes: max_sender_state,
        max_receiver_state_bytes: max_receiver_state,
        timed_out,
        data_dropped: data.imp.counters().dropped,
        longest_data_loss_run: data.longest_loss_run,
        ack_dropped: acks.imp.counters().dropped,
        longest_ack_loss_run: acks.longest_loss_run,
    }
}

#[cfg(test)]
mod tests;
