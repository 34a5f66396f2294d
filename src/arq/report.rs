//! `ArqReport`: the sender's and the receiver's figures of one reliable run, merged into what
//! the reports print (issue 10, "What must be measured and reported").

use serde::{Deserialize, Serialize};

use super::{ArqConfig, ArqReceiverStats, ArqSenderStats};
use crate::summary::LatencySummary;

/// One reliable run (or one interval of it), both ends' figures and the ratios derived from
/// them. Shares are fractions (0.05 = 5 %), not percentages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArqReport {
    pub config: Option<ArqConfig>,
    /// Duration the goodput is over, ns.
    pub duration_ns: u64,
    /// Messages the sender offered.
    pub messages: u64,
    /// Messages delivered to the application side.
    pub delivered: u64,
    /// Messages never delivered (after recovery): given up, skipped or missing at the end.
    pub residual_lost: u64,
    pub residual_loss: f64,
    /// Packet numbers never acknowledged (before recovery).
    pub raw_lost_packets: u64,
    pub raw_loss: f64,
    pub retransmissions: u64,
    pub retransmissions_per_message: f64,
    pub rexmit_packet_threshold: u64,
    pub rexmit_time_threshold: u64,
    pub rexmit_pto: u64,
    pub spurious_retransmissions: u64,
    pub spurious_per_message: f64,
    pub duplicate_arrivals: u64,
    pub duplicate_arrivals_per_message: f64,
    pub data_datagrams: u64,
    pub data_bytes: u64,
    pub ack_datagrams: u64,
    pub ack_bytes: u64,
    /// ACK datagrams / RData datagrams sent.
    pub ack_datagram_share: f64,
    /// ACK bytes / RData bytes sent.
    pub ack_byte_share: f64,
    /// Delivered unique payload, bit/s.
    pub goodput_bps: f64,
    /// Delivered unique payload bytes / all bytes sent on the wire (RData and ACKs).
    pub wire_efficiency: f64,
    pub latency_ordered: Option<LatencySummary>,
    pub latency_unordered: Option<LatencySummary>,
    pub latency_tx1: Option<LatencySummary>,
    pub latency_tx2: Option<LatencySummary>,
    pub latency_tx3plus: Option<LatencySummary>,
    pub recovery_latency: Option<LatencySummary>,
    pub hol_wait: Option<LatencySummary>,
    /// Share of delivered messages that waited for an earlier one.
    pub hol_waited_share: f64,
    /// Messages never delivered because their deadline passed (the receiver skipped them).
    pub deadline_drops: u64,
    pub messages_given_up: u64,
    pub session_given_up: bool,
    pub bogus_acks: u64,
    pub srtt_ns: u64,
    pub rttvar_ns: u64,
    pub min_rtt_ns: u64,
    pub packet_threshold: u32,
    pub reorder_window_ns: u64,
    pub max_in_flight: u64,
    pub max_buffered: u64,
    pub sender: ArqSenderStats,
    pub receiver: ArqReceiverStats,
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl ArqReport {
    /// Merges both ends' figures of a run that lasted `duration_ns` with payloads of
    /// `payload_size` bytes.
    pub fn new(
        config: Option<ArqConfig>,
        sender: ArqSenderStats,
        receiver: ArqReceiverStats,
        duration_ns: u64,
    ) -> Self {
        let payload = config.as_ref().map_or(0, |c| u64::from(c.payload_size));
        let messages = sender.messages;
        let delivered = receiver.delivered;
        let residual_lost = messages.saturating_sub(delivered);
        let raw_lost_packets = sender.raw_lost_packets();
        let goodput_bytes = delivered * payload;
        let wire_bytes = sender.data_bytes + receiver.ack_bytes;
        // The last messages of a deadline run may have been lost in every transmission and
        // given up by the sender before any later RData named them: the receiver never knew
        // they existed, so its deadline drops miss them. They were dropped at their deadline.
        let deadline_mode = config
            .as_ref()
            .is_some_and(|c| c.deadline != super::ArqDeadline::None);
        let never_known = match receiver.messages_known {
            Some(known) if deadline_mode => {
                messages.saturating_sub(known).min(sender.deadline_given_up)
            }
            _ => 0,
        };
        ArqReport {
            duration_ns,
            messages,
            delivered,
            residual_lost,
            residual_loss: share(residual_lost, messages),
            raw_lost_packets,
            raw_loss: share(raw_lost_packets, sender.data_datagrams),
            retransmissions: sender.retransmissions,
            retransmissions_per_message: share(sender.retransmissions, messages),
            rexmit_packet_threshold: sender.rexmit_packet_threshold,
            rexmit_time_threshold: sender.rexmit_time_threshold,
            rexmit_pto: sender.rexmit_pto,
            spurious_retransmissions: sender.spurious_retransmissions,
            spurious_per_message: share(sender.spurious_retransmissions, messages),
            duplicate_arrivals: receiver.duplicate_arrivals,
            duplicate_arrivals_per_message: share(receiver.duplicate_arrivals, messages),
            data_datagrams: sender.data_datagrams,
            data_bytes: sender.data_bytes,
            ack_datagrams: receiver.ack_datagrams,
            ack_bytes: receiver.ack_bytes,
            ack_datagram_share: share(receiver.ack_datagrams, sender.data_datagrams),
            ack_byte_share: share(receiver.ack_bytes, sender.data_bytes),
            goodput_bps: if duration_ns == 0 {
                0.0
            } else {
                goodput_bytes as f64 * 8.0 * 1e9 / duration_ns as f64
            },
            wire_efficiency: share(goodput_bytes, wire_bytes),
            latency_ordered: receiver.latency_ordered,
            latency_unordered: receiver.latency_unordered,
            latency_tx1: receiver.latency_tx1,
            latency_tx2: receiver.latency_tx2,
            latency_tx3plus: receiver.latency_tx3plus,
            recovery_latency: receiver.recovery_latency,
            hol_wait: receiver.hol_wait,
            hol_waited_share: share(receiver.hol_waited, delivered),
            deadline_drops: receiver.deadline_drops + never_known,
            messages_given_up: sender.messages_given_up,
            session_given_up: sender.session_given_up,
            bogus_acks: sender.bogus_acks,
            srtt_ns: sender.srtt_ns,
            rttvar_ns: sender.rttvar_ns,
            min_rtt_ns: sender.min_rtt_ns,
            packet_threshold: sender.packet_threshold,
            reorder_window_ns: sender.reorder_window_ns,
            max_in_flight: sender.max_in_flight,
            max_buffered: receiver.max_buffered,
            config,
            sender,
            receiver,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arq::ArqDeadline;

    fn deadline_run(known: Option<u64>) -> ArqReport {
        let cfg = ArqConfig {
            deadline: ArqDeadline::After { ns: 200_000 },
            ..ArqConfig::default()
        };
        // Ten messages; the last was lost in every transmission and given up at its deadline
        // before any later RData could name it: the receiver knew of nine.
        let sender = ArqSenderStats {
            messages: 10,
            deadline_given_up: 1,
            ..ArqSenderStats::default()
        };
        let receiver = ArqReceiverStats {
            delivered: 9,
            messages_known: known,
            ..ArqReceiverStats::default()
        };
        ArqReport::new(Some(cfg), sender, receiver, 1_000_000)
    }

    #[test]
    fn a_last_message_the_receiver_never_knew_of_is_a_deadline_drop() {
        let r = deadline_run(Some(9));
        assert_eq!(r.residual_lost, 1);
        assert_eq!(r.deadline_drops, 1);
        // Without the receiver's end of session (its results never came) nothing is guessed.
        assert_eq!(deadline_run(None).deadline_drops, 0);
    }
}
