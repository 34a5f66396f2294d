//! The reliable layer (`--reliable`): sans-IO ACK/retransmit state machines, their frames,
//! statistics and a deterministic simulation over the impairment engine.
//!
//! Shape after quinn-proto: [`ArqSender`] and [`ArqReceiver`] never touch a socket or a clock.
//! Time comes in as `now_ns` (monotonic ns, any origin, non-decreasing) on every `handle_*` /
//! `poll_*` call; the next deadline goes out from `poll_timeout()`. The driver feeds datagrams
//! (`handle_data`, `handle_ack`), sends what `poll_transmit` / `poll_ack` return, and calls
//! `handle_timeout` when `poll_timeout` is due. [`sim`] joins both over the seeded impairment
//! engine on a virtual clock.
//!
//! # Design (RFC 9002, RFC 9000 §13.2, RFC 8985, KCP, SRT)
//!
//! - A retransmission is the same message under a new, never-reused packet number: every RTT
//!   sample is exact and a message acknowledged under a packet number already declared lost is
//!   a detected spurious retransmission.
//! - Loss: packet threshold (starts at [`ArqConfig::initial_packet_threshold`], raised to the
//!   observed reordering distance after each spurious retransmission, as RACK does) and time
//!   threshold (9/8 × max(srtt, latest RTT), at least 1 ms, and at least the reordering
//!   window: 9/8 of the longest delay of a packet wrongly declared lost by time, as RACK's
//!   reo_wnd grows after a DSACK). An ACK also dates what had not arrived: nothing after its
//!   largest reached the receiver in the `ack_delay` after the largest did, so a packet sent
//!   after the largest but more than the reordering margin (the time threshold's excess
//!   over the minimum RTT, at least 1 ms) before the largest's send time plus that delay is
//!   lost by time too, though nothing beyond it was acknowledged.
//!   Probe timeout (RFC 9002 §6.2; its variance term at least 10 ms, not 1 ms, so a thread
//!   stall of the host sends no probe) with exponential backoff sends the oldest outstanding
//!   message again and marks nothing lost. No congestion control: the sender's own pacing
//!   rules; retransmissions go before new data and may exceed the paced rate by
//!   [`ArqConfig::rexmit_budget`].
//! - ACKs (RFC 9000 §13.2): every [`ArqConfig::ack_every`]-th RData or after
//!   [`ArqConfig::max_ack_delay_ns`], at once on a new gap or an out-of-order arrival; at most
//!   one ACK per RData received and never more ACK bytes than RData bytes received (counted
//!   over the session). Ranges are repeated until the sender's `acked_below` shows it has seen
//!   them.
//! - Bursts (a Gilbert-Elliott path loses runs of datagrams each way): when the data
//!   direction falls silent for two send intervals (at least `max_ack_delay`), the receiver
//!   sends heartbeat ACKs, one per send interval after that (at most 32 per silence), whose
//!   growing ACK delay lets the sender declare what it sent since lost (the rule above) and
//!   retransmit while the burst lasts; and while a message is missing and the sender's
//!   `acked_below` shows an ACK sent more than a confirmation round trip ago never arrived,
//!   each ACK goes twice. Bursts are counted in datagrams, so both use up a burst sooner
//!   than the paced data alone would; neither sends a message again that arrived.
//! - Repeat copies (sender only): a message's third and later transmissions go out twice in
//!   a row when the copy pays: the session's loss so far p times the messages one more round
//!   trip holds up (srtt / send interval when ordered, since every later message waits at the
//!   head of the line; 1 when unordered) is at least 1, i.e. the copy is expected to spare
//!   at least one message a round trip of waiting. On a long path (40 ms RTT at 1000/s and 5 %
//!   loss) a message lost twice otherwise waits a third round trip (~143 ms) holding ~40
//!   messages behind it; the copies cost about p² datagrams per message. On a short path, or
//!   unordered, they never pay and never go. [`ArqConfig::repeat_from_transmission`].
//! - Give-up: a message after [`ArqConfig::max_transmissions`] transmissions, or in deadline
//!   mode once its deadline after its first send has passed; the whole session after
//!   [`ArqConfig::idle_give_up_ns`] without ACK progress. Each RData carries `skip_below` (no
//!   message below it will be sent again), so the receiver stops waiting for given-up messages.
//!
//! # Memory (bounded by the windows, never by the run's length)
//!
//! With W = `max_in_flight` and R = `recv_window` (messages), per session:
//!
//! - sender: message ring W × 24 bytes + packet records ≤ 4·W × 32 bytes + retransmission
//!   queue ≤ 2·W × 16 bytes + fixed fields: **≤ 192·W + 1 KiB**;
//! - receiver: window R × 24 bytes + delivery queue ≤ 2·R × 40 bytes (drained by the driver
//!   after each call) + at most 65 packet-number ranges × 16 bytes + fixed fields:
//!   **≤ 104·R + 2 KiB**, plus seven latency histograms of fixed size
//!   ([`crate::stats::LatencyHistogram`], the same whatever the run's length).
//!
//! [`ArqSender::state_bytes`] and [`ArqReceiver::state_bytes`] count the buffers' capacities;
//! a test holds them under these formulas over long runs. The defaults (W = R = 4096) give at
//! most 769 KiB for the sender and 418 KiB for the receiver, plus the receiver's histograms.

/// Sender memory per message of window (W), bytes, and its fixed part: the bound above.
pub const SENDER_BYTES_PER_WINDOW_MESSAGE: u64 = 192;
pub const SENDER_FIXED_BYTES: u64 = 1024;
/// Receiver memory per message of its window (R), bytes, and its fixed part (histograms
/// apart): the bound above, what a receiver counts against its `--max-memory`.
pub const RECEIVER_BYTES_PER_WINDOW_MESSAGE: u64 = 104;
pub const RECEIVER_FIXED_BYTES: u64 = 2048;

pub mod frame;
mod receiver;
mod report;
mod sender;
pub mod sim;

pub use frame::{AckFrame, AckRange, AckRanges, RDataFrame};
pub use receiver::{ArqReceiver, ArqReceiverStats, Delivered};
pub use report::ArqReport;
pub use sender::{ArqSender, ArqSenderStats};

use serde::{Deserialize, Serialize};

/// In which order messages reach the application side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ArqOrdering {
    /// Every message exactly once, in message order (head-of-line waits are measured).
    #[default]
    Ordered,
    /// Every message exactly once, as it arrives.
    Unordered,
}

/// When a message still missing is given up (live media: SRT's too-late drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ArqDeadline {
    /// Never (only `max_transmissions` and the session give-up apply).
    #[default]
    None,
    /// `ns` after the message's first send.
    After { ns: u64 },
    /// `times_1000` / 1000 × the smoothed RTT after the message's first send.
    RttMultiple { times_1000: u32 },
}

/// Settings of one reliable session (both ends use the same).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArqConfig {
    pub ordering: ArqOrdering,
    pub deadline: ArqDeadline,
    /// Sender window: messages between the oldest not yet acknowledged (or given up) and the
    /// newest sent, inclusive. Bounds the sender's memory.
    pub max_in_flight: u32,
    /// Receiver window: messages from the first missing one on that it accepts and tracks.
    /// Bounds the receiver's memory; should be ≥ `max_in_flight`.
    pub recv_window: u32,
    /// A message is given up after this many transmissions have been declared lost.
    pub max_transmissions: u32,
    /// The session gives up when nothing new was acknowledged for this long while messages
    /// are outstanding, ns.
    pub idle_give_up_ns: u64,
    /// RTT before the first sample (the handshake's round trip), ns.
    pub initial_rtt_ns: u64,
    /// Retransmissions may exceed the paced rate by this share of it (0.5 = 50 %).
    pub rexmit_budget: f64,
    /// The receiver acknowledges at the latest this long after an unacknowledged RData, ns.
    pub max_ack_delay_ns: u64,
    /// The receiver acknowledges every this many RData datagrams.
    pub ack_every: u32,
    /// UDP payload size of each RData datagram, bytes (≥ 64).
    pub payload_size: u32,
    /// Packet threshold to start with (RFC 9002's kPacketThreshold is 3).
    pub initial_packet_threshold: u32,
    /// No reordering adaptation (packet threshold and time threshold stay as configured): for
    /// the test that shows why they adapt.
    pub fixed_packet_threshold: bool,
    /// From this transmission of a message on, a retransmission goes out twice in a row when
    /// the copy pays (the session's loss × the messages waiting on it ≥ 1, see
    /// [`ArqSender`]); 0: never. Sender only.
    #[serde(default = "default_repeat_from_transmission")]
    pub repeat_from_transmission: u16,
    /// The paced interval between new messages, ns; 0: unpaced (window-limited bulk).
    /// Sender only: it says how many messages one more round trip holds up.
    #[serde(default)]
    pub send_interval_ns: u64,
}

fn default_repeat_from_transmission() -> u16 {
    ArqConfig::default().repeat_from_transmission
}

impl Default for ArqConfig {
    fn default() -> Self {
        ArqConfig {
            ordering: ArqOrdering::Ordered,
            deadline: ArqDeadline::None,
            max_in_flight: 4096,
            recv_window: 4096,
            max_transmissions: 30,
            idle_give_up_ns: 10_000_000_000,
            initial_rtt_ns: 100_000_000,
            rexmit_budget: 0.5,
            max_ack_delay_ns: 2_000_000,
            ack_every: 2,
            payload_size: 1200,
            initial_packet_threshold: 1,
            fixed_packet_threshold: false,
            repeat_from_transmission: 3,
            send_interval_ns: 0,
        }
    }
}

/// Floor of the time threshold (RFC 9002 kGranularity). The probe timeout's variance term has
/// a larger floor (10 ms), against a real host's scheduling stalls: see `sender.rs`.
pub const GRANULARITY_NS: u64 = 1_000_000;
