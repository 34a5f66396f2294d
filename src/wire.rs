//! udplab datagram formats: parse and emit every message, sans-IO, never panicking on input.
//!
//! Every udplab message is one UDP datagram. All integers are unsigned and big-endian (network
//! byte order). Offsets and sizes are in bytes from the start of the UDP payload.
//!
//! # Common prefix (every message, 8 bytes)
//!
//! | offset | size | field        | value                                             |
//! |-------:|-----:|--------------|---------------------------------------------------|
//! | 0      | 2    | `magic`      | `0x5544` (ASCII "UD")                             |
//! | 2      | 1    | `version`    | `2`                                               |
//! | 3      | 1    | `kind`       | message kind, table below                         |
//! | 4      | 4    | `session_id` | chosen at random by the sender, a label for one test (not a key) |
//!
//! | kind | message       | direction           | size                     |
//! |-----:|---------------|---------------------|--------------------------|
//! | 1    | `Data`        | sender → receiver   | 24 + padding (≤ 65507)   |
//! | 2    | `Echo`        | receiver → sender   | 24                       |
//! | 3    | `RData`       | sender → receiver   | 64 + padding (≤ 65507)   |
//! | 4    | `Ack`         | receiver → sender   | 13 to 553 (varints)      |
//! | 16   | `Hello`       | sender → receiver   | 72 (96 with `reliable`)  |
//! | 17   | `HelloAck`    | receiver → sender   | 44                       |
//! | 18   | `Fin`         | sender → receiver   | 40                       |
//! | 19   | `FinAck`      | receiver → sender   | 24                       |
//! | 20   | `ResultReq`   | sender → receiver   | 16                       |
//! | 21   | `ResultChunk` | receiver → sender   | 24 + `len`               |
//! | 22   | `Abort`       | either              | 24                       |
//!
//! A datagram with another magic, another version or an unknown kind is rejected. A message
//! longer than its size above is accepted and the extra bytes are ignored, so a later version
//! can append fields. Reserved bytes and unknown flag bits are sent as zero and ignored.
//!
//! # Trust (version 2)
//!
//! Version 2 adds what lets a receiver face strangers (see the README, "Running a receiver
//! others can reach"):
//!
//! - **Address validation.** A Hello without a valid `cookie` is answered with a HelloAck of
//!   status 3 (retry) carrying a cookie: a keyed hash of the Hello's source address and port,
//!   its session id and a 10 s time bucket, under a secret the receiver drew at start. The
//!   receiver keeps nothing for it. The sender repeats its Hello with that cookie; only then is
//!   a test created. Cookies are accepted in their bucket and the next one (10 to 20 s).
//! - **Ownership.** The accepting HelloAck carries the test's `secret` (64 random bits); every
//!   later control message in either direction (Fin, FinAck, ResultReq, ResultChunk, Abort)
//!   carries it, and each side ignores the ones without it. The receiver takes a test's Data and
//!   control only from the address it validated.
//! - **No amplification.** Every answer to a Hello (44 bytes) is smaller than the Hello (72),
//!   and an Echo (24) is never larger than its Data, so nothing sent to an unvalidated address
//!   is larger than what came from it.
//! - **Other versions.** A receiver answers a Hello of another version with the 8-byte prefix
//!   alone, carrying its own version, kind HelloAck and the Hello's session id (never larger
//!   than the Hello): a sender of any version that reads this prefix can say "the receiver
//!   speaks udplab wire version N". See [`version_reply`] and [`foreign_version`].
//!
//! # Data (kind 1) and Echo (kind 2)
//!
//! | offset | size | field     | meaning                                                   |
//! |-------:|-----:|-----------|-----------------------------------------------------------|
//! | 8      | 8    | `seq`     | sequence number, 0 for the first datagram of a test       |
//! | 16     | 8    | `send_ns` | sender wall clock at send, nanoseconds since Unix epoch   |
//!
//! A Data datagram is 24 header bytes followed by padding up to the configured payload size
//! (at most [`MAX_PAYLOAD`]); the padding is sent as zero bytes and its content is ignored, but
//! the parser reports the datagram's total length. An Echo carries the header of the Data
//! datagram it answers, unchanged, with kind 2 and no padding: an Echo is never larger than the
//! Data datagram that caused it (the smallest Data datagram is 24 bytes), so a receiver cannot
//! be used to amplify traffic. Data carries no secret (the header stays 24 bytes): the receiver
//! counts it only from the test's validated address.
//!
//! # RData (kind 3): sender → receiver, reliable data (`--reliable`, see [`crate::arq`])
//!
//! | offset | size | field            | meaning                                              |
//! |-------:|-----:|------------------|------------------------------------------------------|
//! | 8      | 8    | `packet_number`  | never reused: a retransmission gets a new one        |
//! | 16     | 8    | `message_id`     | the message carried, 0 for the first                 |
//! | 24     | 8    | `first_send_ns`  | sender wall clock at the message's first transmission, ns since Unix epoch |
//! | 32     | 8    | `send_ns`        | sender wall clock at this transmission               |
//! | 40     | 8    | `skip_below`     | no message below this id will be sent again (acknowledged or given up); ≤ `message_id` |
//! | 48     | 8    | `acked_below`    | largest packet number the sender saw acknowledged + 1 (0: none): the receiver stops repeating ranges below it |
//! | 56     | 2    | `transmission`   | 1 for the first transmission, 2 for the first retransmission, ...; never 0 |
//! | 58     | 6    | reserved         | zero                                                 |
//!
//! Then padding up to the payload size, as Data. A `transmission` of 0 or a `skip_below` above
//! `message_id` is rejected (`BadField`).
//!
//! # Ack (kind 4): receiver → sender, acknowledges RData
//!
//! After the prefix, fields are QUIC variable-length integers (RFC 9000 §16: the top two bits
//! of the first byte give the length, 1, 2, 4 or 8 bytes), so a typical Ack is about 20 bytes:
//!
//! | field             | size     | meaning                                                   |
//! |-------------------|---------:|-----------------------------------------------------------|
//! | `largest`         | varint   | largest packet number received                            |
//! | `ack_delay_us`    | varint   | µs between receiving `largest` and sending this Ack       |
//! | `delivered_below` | varint   | every message below this id was received (or skipped on the sender's word) |
//! | `range_count`     | 1        | ranges after the first, 0..=31                            |
//! | `first_range`     | varint   | the first range is `largest − first_range ..= largest`    |
//! | (`gap`, `len`) × `range_count` | varint × 2 | QUIC gap coding: the next range's top is the previous range's smallest − `gap` − 2; it spans `len` + 1 packet numbers downwards |
//!
//! A range running below packet number 0, or more than 31 extra ranges, is rejected
//! (`BadField`); bytes after the last range are ignored. An Ack is never larger than
//! [`crate::arq::frame::ACK_MAX_LEN`] (553) bytes and in practice much smaller than the RData
//! (≥ 64 bytes) that caused it; the receiver sends at most one Ack per RData received.
//!
//! # Hello (kind 16): sender → receiver, starts a test
//!
//! | offset | size | field          | meaning                                                |
//! |-------:|-----:|----------------|--------------------------------------------------------|
//! | 8      | 4    | `payload_size` | size of each Data datagram's UDP payload, bytes        |
//! | 12     | 4    | `flags`        | bit 0: echo requested (receiver answers Data with Echo); bit 1: lost ranges requested in the results; bit 2: reliable (the ACK/retransmit layer: RData and Ack replace Data, parameters at 72..96, see below); bit 4: bidirectional (forward and reverse at once, each measured on its own); bit 3: reverse (the receiver sends the Data, paced as this Hello says, to the validated sender, which measures; the results carry the receiver's sender-side report); bit 5: multicast announcement (see below); bits 8–15: send pattern (0 not said, 1 cbr, 2 poisson, 3 burst, 4 unpaced); bits 16–31: burst size (0 = not said) |
//! | 16     | 8    | `interval_ns`  | reporting interval, ns                                 |
//! | 24     | 8    | `tmax_ns`      | waiting time for late datagrams after the end (RFC 7680), ns |
//! | 32     | 8    | `count`        | datagrams the sender will send, 0 = not fixed          |
//! | 40     | 8    | `duration_ns`  | test duration, ns, 0 = not fixed                       |
//! | 48     | 8    | `rate_bps`     | target rate, bit/s of UDP payload, 0 = unpaced         |
//! | 56     | 8    | `pps_milli`    | target datagrams per second × 1000, 0 = unpaced        |
//! | 64     | 8    | `cookie`       | 0 in the first Hello; then the cookie of the receiver's retry answer (v2) |
//! | 72     | 24   | reliable       | the reliable-mode parameters (flag bit 2), table below; zero without |
//! | 96     | 8    | `omit_ns`      | warm-up excluded from the statistics (`--omit`), ns; the Hello is 104 bytes when it is not 0, else it ends at 72 (absent reads as 0) |
//!
//! A Hello with flag bit 5 set is a **multicast announcement**: sent by `udplab send` to a
//! group address (several times at the start, then about once a second so that late joiners
//! learn the parameters), never answered. Only a receiver that joined the group (`recv --join`)
//! takes it: it starts measuring that sender's Data without a cookie or a secret, because it
//! never sends anything to a multicast sender (nothing can be amplified). The sender's Fin
//! then carries `secret` 0, repeated; with `--key` the tag authenticates announcement, Data and
//! Fin. A unicast receiver counts an announcement as foreign.
//!
//! Appended fields, read when the Hello is long enough and zero/absent otherwise (a Hello
//! that needs none of them stays 72 bytes; bytes between the fields present are sent as zero):
//!
//! | offset | size | field          | meaning                                                |
//! |-------:|-----:|----------------|--------------------------------------------------------|
//! | 104    | 1    | `mark_flags`   | bit 0: `tos` is set (`--dscp`/`--tos`); bit 1: `ttl` is set (`--ttl`) |
//! | 105    | 1    | `tos`          | the TOS / traffic-class byte the sender marks its Data with |
//! | 106    | 1    | `ttl`          | the TTL / hop limit the sender sends with              |
//! | 107    | 5    | reserved       | zero                                                   |
//!
//! Appended Hello fields (a Hello may be longer than 72 bytes; an older receiver ignores the
//! rest). Flag bit 2 (`reliable`, `--reliable`) says the test runs the ACK/retransmit layer:
//! Data is replaced by RData, answered by Ack. Its parameters follow the 72 bytes:
//!
//! | offset | size | field              | meaning                                            |
//! |-------:|-----:|--------------------|----------------------------------------------------|
//! | 72     | 1    | `reliable_mode`    | 1 ordered, 2 unordered, 3 deadline (ordered; late messages given up) |
//! | 73     | 1    | `reliable_flags`   | bit 7: `deadline` is a multiple of the smoothed RTT × 1000, not ns; other bits zero |
//! | 74     | 6    | reserved           | zero                                               |
//! | 80     | 8    | `deadline`         | mode 3: ns after a message's first send (or RTT multiple × 1000); else 0 |
//! | 88     | 4    | `window`           | the sender's in-flight window, messages (the receiver sizes its reorder buffer from it; 0 = receiver's default) |
//! | 92     | 4    | `rexmit_budget_pct`| retransmissions may exceed the paced rate by this many percent (the receiver's plausibility bound on packet numbers follows it) |
//!
//! A Hello with bit 2 set but shorter than 96 bytes asks for an ordered reliable test with the
//! receiver's defaults; an unknown `reliable_mode` is an error.
//!
//! The parser checks only the layout; whether the parameters are acceptable (for example
//! `payload_size` between [`DATA_HEADER_LEN`] and [`MAX_PAYLOAD`]) is the receiver's decision,
//! answered with a HelloAck status.
//!
//! # HelloAck (kind 17): receiver → sender
//!
//! | offset | size | field              | meaning                                            |
//! |-------:|-----:|--------------------|----------------------------------------------------|
//! | 8      | 1    | `status`           | 0 = accepted, 1 = busy with other tests, 2 = rejected, 3 = retry: repeat the Hello with `cookie` |
//! | 9      | 1    | `reason`           | why rejected: 0 not said, 1 payload size, 2 interval, 3 Tmax above `limit` ns, 4 rate × Tmax above `limit` sequences, 5 memory budget (`limit` bytes free), 6 session id in use from another address (v2), 7 reverse test faster than `limit` bit/s or unpaced, 8 reverse test without a count or duration, or longer than `limit` ns |
//! | 10     | 2    | `retry_after_s`    | busy: seconds after which a test is likely to have ended (v2) |
//! | 12     | 8    | `rcvbuf_effective` | receive buffer the kernel granted (SO_RCVBUF read back), bytes |
//! | 20     | 8    | `cookie`           | retry: the cookie the next Hello carries; else 0 (v2) |
//! | 28     | 8    | `secret`           | accepted: the test's secret, carried by every later control message; else 0 (v2) |
//! | 36     | 8    | `limit`            | rejected: the limit `reason` names; else 0 (v2)    |
//!
//! # Fin (kind 18): sender → receiver, the sender has finished
//!
//! | offset | size | field         | meaning                                                 |
//! |-------:|-----:|---------------|---------------------------------------------------------|
//! | 8      | 8    | `total_sent`  | sequences `0..total_sent` were consumed by sends        |
//! | 16     | 8    | `total_bytes` | UDP payload bytes sent                                  |
//! | 24     | 8    | `send_errors` | sends that failed (ENOBUFS, EAGAIN, ...)                |
//! | 32     | 8    | `secret`      | the test's secret (v2)                                  |
//!
//! # FinAck (kind 19): receiver → sender
//!
//! | offset | size | field     | meaning                                                     |
//! |-------:|-----:|-----------|-------------------------------------------------------------|
//! | 8      | 8    | `tmax_ns` | how long the receiver waits for late datagrams before its results are ready, ns |
//! | 16     | 8    | `secret`  | the test's secret (v2)                                      |
//!
//! # ResultReq (kind 20): sender → receiver, asks for the results
//!
//! | offset | size | field    | meaning                         |
//! |-------:|-----:|----------|---------------------------------|
//! | 8      | 8    | `secret` | the test's secret (v2)          |
//!
//! # ResultChunk (kind 21): receiver → sender, one slice of the JSON results
//!
//! | offset | size  | field    | meaning                                                   |
//! |-------:|------:|----------|-----------------------------------------------------------|
//! | 8      | 1     | `status` | 0 = ready, 1 = not ready yet (retry later)                |
//! | 9      | 1     | reserved | zero                                                      |
//! | 10     | 2     | `index`  | index of this chunk, `0..count`                           |
//! | 12     | 2     | `count`  | number of chunks in the whole result                      |
//! | 14     | 2     | `len`    | bytes of data in this chunk                               |
//! | 16     | 8     | `secret` | the test's secret (v2)                                    |
//! | 24     | `len` | `data`   | bytes `index × 1200 ..` of the JSON result document       |
//!
//! Chunks carry [`RESULT_CHUNK_DATA`] (1200) bytes each except the last, so a chunk fits an
//! IPv6 minimum-MTU path. When ready, `count ≥ 1` and `index < count`, else the chunk is
//! rejected. When not ready, `index`, `count` and `len` should be 0. A `len` larger than the
//! bytes present is an error; bytes after the data are ignored.
//!
//! In a reverse test (Hello flag bit 3) the Data flows receiver → sender, from the receiver's
//! listening address to the test's validated address, and the sender measures it. The sender
//! sends ResultReq from acceptance on, every 200 ms: while the receiver sends they are its
//! keep-alive (unanswered; 10 s without one stops the Data), and once its data thread has
//! ended the result document is `{"version", "report" (empty), "sender": the receiver's
//! sender-side report}`; its `sent` ends the sender's measurement as a Fin's `total_sent`
//! ends the receiver's. A receiver interrupted mid-test sends the chunks unasked, with
//! `"interrupted": true` in the document. An Abort from the sender stops the Data; the
//! results follow as usual.
//!
//! # Abort (kind 22): either direction, the test ended early
//!
//! | offset | size | field    | meaning                         |
//! |-------:|-----:|----------|---------------------------------|
//! | 8      | 1    | `reason` | 1 = user interrupt, 2 = error   |
//! | 9      | 7    | reserved | zero (v2)                       |
//! | 16     | 8    | `secret` | the test's secret (v2)          |

pub use crate::arq::frame::{ACK_MIN_LEN, AckFrame, AckView, RDATA_HEADER_LEN, RDataFrame};

/// First two bytes of every udplab datagram: ASCII "UD".
pub const MAGIC: u16 = 0x5544;
/// Wire format version this module speaks.
pub const VERSION: u8 = 2;
/// Length of the common prefix: magic, version, kind, session id.
pub const PREFIX_LEN: usize = 8;
/// Length of the Data and Echo header; the smallest Data datagram.
pub const DATA_HEADER_LEN: usize = 24;
/// Largest UDP payload over IPv4 (65535 − 8 UDP − 20 IP); the largest Data datagram.
pub const MAX_PAYLOAD: usize = 65507;
/// Data bytes a receiver puts in each ResultChunk but the last.
pub const RESULT_CHUNK_DATA: usize = 1200;
/// Length of a ResultChunk before its data.
pub const RESULT_CHUNK_HEADER_LEN: usize = 24;

/// Length of a Hello: every answer to it (a HelloAck, or the other-version prefix) is shorter.
pub const HELLO_LEN: usize = 72;
/// Offset of a Hello's `omit_ns`, after the 24 bytes reserved for reliable-mode parameters.
pub const HELLO_OMIT_OFFSET: usize = 96;
/// Length of a Hello that carries `omit_ns`.
pub const HELLO_OMIT_LEN: usize = HELLO_OMIT_OFFSET + 8;
/// Length of a HelloAck.
pub const HELLO_ACK_LEN: usize = 44;
const FIN_LEN: usize = 40;
const FIN_ACK_LEN: usize = 24;
const RESULT_REQ_LEN: usize = 16;
const ABORT_LEN: usize = 24;

/// Where the sender's marking starts in a Hello, and where a Hello carrying it ends.
const HELLO_MARKING_AT: usize = 104;
const HELLO_MARKING_END: usize = 112;
const MARK_FLAG_TOS: u8 = 1;
const MARK_FLAG_TTL: u8 = 1 << 1;

const HELLO_FLAG_ECHO: u32 = 1;
const HELLO_FLAG_LOSS_RANGES: u32 = 1 << 1;
const HELLO_FLAG_MULTICAST: u32 = 1 << 5;
const HELLO_FLAG_REVERSE: u32 = 1 << 3;
const HELLO_FLAG_RELIABLE: u32 = 1 << 2;
/// Length of a Hello that carries the reliable-mode parameters (flag bit 2).
pub const HELLO_RELIABLE_LEN: usize = 96;
/// `reliable_flags` bit 7: the deadline is an RTT multiple × 1000.
const RELIABLE_DEADLINE_RTT: u8 = 0x80;
const HELLO_FLAG_BIDIR: u32 = 1 << 4;
const HELLO_PATTERN_SHIFT: u32 = 8;
const HELLO_BURST_SHIFT: u32 = 16;

/// The first four bytes of a Data / Echo datagram as one big-endian word, for the hot path.
const DATA_PREFIX: u32 = prefix_word(Kind::Data);
const ECHO_PREFIX: u32 = prefix_word(Kind::Echo);

const fn prefix_word(kind: Kind) -> u32 {
    ((MAGIC as u32) << 16) | ((VERSION as u32) << 8) | kind as u32
}

/// The 8-byte common prefix of a message of `kind` for `session_id`.
pub fn prefix_bytes(kind: Kind, session_id: u32) -> [u8; PREFIX_LEN] {
    let mut out = [0u8; PREFIX_LEN];
    out[..4].copy_from_slice(&prefix_word(kind).to_be_bytes());
    out[4..].copy_from_slice(&session_id.to_be_bytes());
    out
}

/// Message kind, the byte at offset 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Data = 1,
    Echo = 2,
    RData = 3,
    Ack = 4,
    Hello = 16,
    HelloAck = 17,
    Fin = 18,
    FinAck = 19,
    ResultReq = 20,
    ResultChunk = 21,
    Abort = 22,
}

impl Kind {
    /// All kinds, in wire-value order.
    pub const ALL: [Kind; 11] = [
        Kind::Data,
        Kind::Echo,
        Kind::RData,
        Kind::Ack,
        Kind::Hello,
        Kind::HelloAck,
        Kind::Fin,
        Kind::FinAck,
        Kind::ResultReq,
        Kind::ResultChunk,
        Kind::Abort,
    ];

    /// The kind with wire value `value`, if any.
    pub const fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            1 => Kind::Data,
            2 => Kind::Echo,
            3 => Kind::RData,
            4 => Kind::Ack,
            16 => Kind::Hello,
            17 => Kind::HelloAck,
            18 => Kind::Fin,
            19 => Kind::FinAck,
            20 => Kind::ResultReq,
            21 => Kind::ResultChunk,
            22 => Kind::Abort,
            _ => return None,
        })
    }

    /// Smallest well-formed datagram of this kind, in bytes.
    pub const fn min_len(self) -> usize {
        match self {
            Kind::Data | Kind::Echo => DATA_HEADER_LEN,
            Kind::RData => RDATA_HEADER_LEN,
            Kind::Ack => ACK_MIN_LEN,
            Kind::Hello => HELLO_LEN,
            Kind::HelloAck => HELLO_ACK_LEN,
            Kind::Fin => FIN_LEN,
            Kind::FinAck => FIN_ACK_LEN,
            Kind::ResultReq => RESULT_REQ_LEN,
            Kind::ResultChunk => RESULT_CHUNK_HEADER_LEN,
            Kind::Abort => ABORT_LEN,
        }
    }

    /// The message name used in this module's documentation and in errors.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Data => "Data",
            Kind::Echo => "Echo",
            Kind::RData => "RData",
            Kind::Ack => "Ack",
            Kind::Hello => "Hello",
            Kind::HelloAck => "HelloAck",
            Kind::Fin => "Fin",
            Kind::FinAck => "FinAck",
            Kind::ResultReq => "ResultReq",
            Kind::ResultChunk => "ResultChunk",
            Kind::Abort => "Abort",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a datagram is not a well-formed udplab message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the message (or the common prefix) needs.
    #[error("{what} too short: {got} bytes, need at least {need}")]
    TooShort {
        /// `"datagram"` when even the common prefix is missing, else the message name.
        what: &'static str,
        need: usize,
        got: usize,
    },
    /// Not a udplab datagram.
    #[error("not a udplab datagram: magic 0x{0:04x}, expected 0x5544")]
    BadMagic(u16),
    /// A udplab datagram of a version this build does not speak.
    #[error("unsupported udplab wire version {0}, this build speaks version 2")]
    BadVersion(u8),
    /// A kind byte this version does not define.
    #[error("unknown udplab message kind {0}")]
    UnknownKind(u8),
    /// A field holds a value its message does not define; names the field.
    #[error("invalid value in field {0}")]
    BadField(&'static str),
    /// A well-formed message of another kind than the caller asked for.
    #[error("expected another message kind, got {0}")]
    UnexpectedKind(Kind),
    /// A ResultChunk whose `len` runs past the end of the datagram.
    #[error("ResultChunk claims {len} data bytes but only {available} are present")]
    ChunkTruncated { len: usize, available: usize },
}

/// The header shared by Data and Echo datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataHeader {
    pub session_id: u32,
    pub seq: u64,
    /// Sender wall clock at send, ns since the Unix epoch.
    pub send_ns: u64,
}

/// The send pattern a Hello announces, so the receiver's own report can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HelloPattern {
    /// Not said (an older sender, or a code this version does not know).
    #[default]
    Unknown,
    Cbr,
    Poisson,
    /// Bursts of this many datagrams (0: the size did not fit the field).
    Burst(u16),
    /// Unpaced (`--rate max`).
    Unpaced,
}

impl HelloPattern {
    fn flags(self) -> u32 {
        let (kind, burst) = match self {
            HelloPattern::Unknown => (0, 0),
            HelloPattern::Cbr => (1, 0),
            HelloPattern::Poisson => (2, 0),
            HelloPattern::Burst(n) => (3, u32::from(n)),
            HelloPattern::Unpaced => (4, 0),
        };
        kind << HELLO_PATTERN_SHIFT | burst << HELLO_BURST_SHIFT
    }

    fn from_flags(flags: u32) -> Self {
        match (flags >> HELLO_PATTERN_SHIFT) & 0xFF {
            1 => HelloPattern::Cbr,
            2 => HelloPattern::Poisson,
            3 => HelloPattern::Burst((flags >> HELLO_BURST_SHIFT) as u16),
            4 => HelloPattern::Unpaced,
            _ => HelloPattern::Unknown,
        }
    }
}

/// Hello: the sender's test parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hello {
    pub session_id: u32,
    pub payload_size: u32,
    /// Flag bit 0: the receiver should answer each Data datagram with an Echo.
    pub echo: bool,
    /// Flag bit 1: the receiver should carry its lost sequence ranges back in the results.
    pub loss_ranges: bool,
    /// Flag bit 3: a reverse test (`send -R`): the receiver sends the Data, the sender measures.
    pub reverse: bool,
    /// Flag bit 4: a bidirectional test (`send --bidir`): the sender sends its Data as in a
    /// forward test and the receiver at the same time sends Data back as in a reverse test;
    /// the results carry both the receiver's measurement and its sender-side report.
    pub bidir: bool,
    /// Flag bits 8–31: the send pattern, for the receiver's report.
    pub pattern: HelloPattern,
    pub interval_ns: u64,
    pub tmax_ns: u64,
    /// 0 = not fixed.
    pub count: u64,
    /// 0 = not fixed.
    pub duration_ns: u64,
    /// 0 = unpaced.
    pub rate_bps: u64,
    /// Target datagrams per second × 1000; 0 = unpaced.
    pub pps_milli: u64,
    /// 0 in a first Hello; then the cookie of the receiver's retry answer.
    pub cookie: u64,
    /// Flag bit 5: a multicast announcement, sent to a group and never answered.
    pub multicast: bool,
    /// How the sender marks its Data (offsets 104..112), so the receiver can tell how many
    /// arrived re-marked.
    pub marking: HelloMarking,
    /// Warm-up excluded from the statistics (`--omit`), ns; 0 = none. Sent only when not 0
    /// (the Hello then grows to [`HELLO_OMIT_LEN`] bytes).
    pub omit_ns: u64,
    /// Flag bit 2 and bytes 72..96: the test runs the ACK/retransmit layer (`--reliable`).
    pub reliable: Option<HelloReliable>,
}

/// The IP marking a sender sets on its Data, announced in its Hello.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HelloMarking {
    /// TOS / traffic-class byte (`--dscp`, `--tos`); None: the sender left the default.
    pub tos: Option<u8>,
    /// TTL / hop limit (`--ttl`); None: the route's default.
    pub ttl: Option<u8>,
}

/// Delivery mode of a reliable test, as the Hello's `reliable_mode` byte carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReliableMode {
    /// Every message exactly once, in order.
    #[default]
    Ordered,
    /// Every message exactly once, as it arrives.
    Unordered,
    /// In order; a message still missing its deadline after its first send is given up.
    Deadline,
}

/// The reliable-mode parameters of a Hello (bytes 72..96).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HelloReliable {
    pub mode: ReliableMode,
    /// Mode `Deadline`: ns after a message's first send, or (with `deadline_in_rtt`) a multiple
    /// of the smoothed RTT × 1000.
    pub deadline: u64,
    pub deadline_in_rtt: bool,
    /// The sender's in-flight window in messages; 0: the receiver's default.
    pub window: u32,
    /// Retransmissions may exceed the paced rate by this many percent.
    pub rexmit_budget_pct: u32,
}

impl HelloReliable {
    fn parse(buf: &[u8]) -> Result<Self, WireError> {
        if buf.len() < HELLO_RELIABLE_LEN {
            return Ok(HelloReliable::default());
        }
        let mode = match buf[72] {
            1 => ReliableMode::Ordered,
            2 => ReliableMode::Unordered,
            3 => ReliableMode::Deadline,
            _ => return Err(WireError::BadField("Hello.reliable_mode")),
        };
        Ok(HelloReliable {
            mode,
            deadline_in_rtt: buf[73] & RELIABLE_DEADLINE_RTT != 0,
            deadline: be_u64(buf, 80),
            window: be_u32(buf, 88),
            rexmit_budget_pct: be_u32(buf, 92),
        })
    }

    fn emit(&self, out: &mut Vec<u8>) {
        let mode = match self.mode {
            ReliableMode::Ordered => 1,
            ReliableMode::Unordered => 2,
            ReliableMode::Deadline => 3,
        };
        let flags = if self.deadline_in_rtt {
            RELIABLE_DEADLINE_RTT
        } else {
            0
        };
        out.extend_from_slice(&[mode, flags, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&self.deadline.to_be_bytes());
        out.extend_from_slice(&self.window.to_be_bytes());
        out.extend_from_slice(&self.rexmit_budget_pct.to_be_bytes());
    }
}

/// The receiver's answer to a Hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HelloStatus {
    Accepted = 0,
    /// Busy with another test.
    Busy = 1,
    /// Bad parameters, or beyond the receiver's limits; `reason` says which.
    Rejected = 2,
    /// Address validation: repeat the Hello with the `cookie` of this answer.
    Retry = 3,
}

impl HelloStatus {
    const fn from_u8(value: u8) -> Option<HelloStatus> {
        match value {
            0 => Some(HelloStatus::Accepted),
            1 => Some(HelloStatus::Busy),
            2 => Some(HelloStatus::Rejected),
            3 => Some(HelloStatus::Retry),
            _ => None,
        }
    }
}

/// Why a receiver rejected a Hello (HelloAck `reason`); unknown codes read as `Unspecified`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RejectReason {
    #[default]
    Unspecified = 0,
    PayloadSize = 1,
    Interval = 2,
    /// Tmax above `limit` ns.
    Tmax = 3,
    /// Rate × Tmax (the duplicate window) above `limit` sequences.
    Window = 4,
    /// The receiver's memory budget has `limit` bytes left, less than the test needs.
    Memory = 5,
    /// Another address already runs a test with this session id.
    SessionInUse = 6,
    /// A reverse test asked for more than `limit` bit/s (`recv --max-reverse-rate`), or for
    /// an unpaced one.
    ReverseRate = 7,
    /// A reverse test must end by itself: a count or a duration of at most `limit` ns.
    ReverseLength = 8,
}

impl RejectReason {
    const fn from_u8(value: u8) -> RejectReason {
        match value {
            1 => RejectReason::PayloadSize,
            2 => RejectReason::Interval,
            3 => RejectReason::Tmax,
            4 => RejectReason::Window,
            5 => RejectReason::Memory,
            6 => RejectReason::SessionInUse,
            7 => RejectReason::ReverseRate,
            8 => RejectReason::ReverseLength,
            _ => RejectReason::Unspecified,
        }
    }
}

/// HelloAck: receiver → sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HelloAck {
    pub session_id: u32,
    pub status: HelloStatus,
    /// Receive buffer size the kernel granted, bytes.
    pub rcvbuf_effective: u64,
    /// Rejected: why.
    pub reason: RejectReason,
    /// Busy: seconds after which a test is likely to have ended.
    pub retry_after_s: u16,
    /// Retry: the cookie the next Hello carries.
    pub cookie: u64,
    /// Accepted: the test's secret, carried by every later control message.
    pub secret: u64,
    /// Rejected: the limit `reason` names (ns, sequences or bytes).
    pub limit: u64,
}

/// Fin: the sender's totals at the end of the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fin {
    pub session_id: u32,
    /// Sequences `0..total_sent` were consumed by sends.
    pub total_sent: u64,
    pub total_bytes: u64,
    pub send_errors: u64,
    pub secret: u64,
}

/// FinAck: receiver → sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FinAck {
    pub session_id: u32,
    /// How long the receiver waits for late datagrams before its results are ready, ns.
    pub tmax_ns: u64,
    pub secret: u64,
}

/// ResultChunk: one slice of the receiver's JSON results, borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResultChunk<'a> {
    pub session_id: u32,
    /// False: results are not ready yet, ask again later.
    pub ready: bool,
    pub index: u16,
    pub count: u16,
    pub secret: u64,
    pub data: &'a [u8],
}

/// Why a test was aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AbortReason {
    /// The user interrupted the test (Ctrl-C, SIGTERM).
    Interrupted = 1,
    Error = 2,
}

impl AbortReason {
    const fn from_u8(value: u8) -> Option<AbortReason> {
        match value {
            1 => Some(AbortReason::Interrupted),
            2 => Some(AbortReason::Error),
            _ => None,
        }
    }
}

/// Any udplab message, as parsed from (or to be emitted into) one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Message<'a> {
    /// `len` is the whole datagram's length, padding included.
    Data {
        header: DataHeader,
        len: usize,
    },
    Echo(DataHeader),
    /// `len` is the whole datagram's length, padding included.
    RData {
        frame: RDataFrame,
        len: usize,
    },
    Ack(AckView<'a>),
    Hello(Hello),
    HelloAck(HelloAck),
    Fin(Fin),
    FinAck(FinAck),
    ResultReq {
        session_id: u32,
        secret: u64,
    },
    ResultChunk(ResultChunk<'a>),
    Abort {
        session_id: u32,
        reason: AbortReason,
        secret: u64,
    },
}

/// Reads a big-endian integer at a fixed offset. Callers check the length first; the `get`
/// keeps this panic-free even if one forgot.
fn be_u16(buf: &[u8], at: usize) -> u16 {
    buf.get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u16::from_be_bytes)
}

fn be_u32(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn be_u64(buf: &[u8], at: usize) -> u64 {
    buf.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// Parses one datagram. Never panics; any input that is not a well-formed message of this
/// version is an error.
pub fn parse(buf: &[u8]) -> Result<Message<'_>, WireError> {
    if buf.len() < PREFIX_LEN {
        return Err(WireError::TooShort {
            what: "datagram",
            need: PREFIX_LEN,
            got: buf.len(),
        });
    }
    let magic = be_u16(buf, 0);
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if buf[2] != VERSION {
        return Err(WireError::BadVersion(buf[2]));
    }
    let kind = Kind::from_u8(buf[3]).ok_or(WireError::UnknownKind(buf[3]))?;
    if buf.len() < kind.min_len() {
        return Err(WireError::TooShort {
            what: kind.name(),
            need: kind.min_len(),
            got: buf.len(),
        });
    }
    let session_id = be_u32(buf, 4);
    let data_header = || DataHeader {
        session_id,
        seq: be_u64(buf, 8),
        send_ns: be_u64(buf, 16),
    };
    Ok(match kind {
        Kind::Data => Message::Data {
            header: data_header(),
            len: buf.len(),
        },
        Kind::Echo => Message::Echo(data_header()),
        Kind::RData => Message::RData {
            frame: parse_rdata(session_id, buf)?,
            len: buf.len(),
        },
        Kind::Ack => Message::Ack(AckView::parse(session_id, buf)?),
        Kind::Hello => Message::Hello(Hello {
            session_id,
            payload_size: be_u32(buf, 8),
            echo: be_u32(buf, 12) & HELLO_FLAG_ECHO != 0,
            loss_ranges: be_u32(buf, 12) & HELLO_FLAG_LOSS_RANGES != 0,
            reverse: be_u32(buf, 12) & HELLO_FLAG_REVERSE != 0,
            bidir: be_u32(buf, 12) & HELLO_FLAG_BIDIR != 0,
            pattern: HelloPattern::from_flags(be_u32(buf, 12)),
            interval_ns: be_u64(buf, 16),
            tmax_ns: be_u64(buf, 24),
            count: be_u64(buf, 32),
            duration_ns: be_u64(buf, 40),
            rate_bps: be_u64(buf, 48),
            pps_milli: be_u64(buf, 56),
            cookie: be_u64(buf, 64),
            multicast: be_u32(buf, 12) & HELLO_FLAG_MULTICAST != 0,
            marking: match buf.get(HELLO_MARKING_AT..HELLO_MARKING_END) {
                Some(m) => HelloMarking {
                    tos: (m[0] & MARK_FLAG_TOS != 0).then_some(m[1]),
                    ttl: (m[0] & MARK_FLAG_TTL != 0).then_some(m[2]),
                },
                None => HelloMarking::default(),
            },
            // An appended field: absent in a shorter Hello (older sender, or no --omit).
            omit_ns: if buf.len() >= HELLO_OMIT_LEN {
                be_u64(buf, HELLO_OMIT_OFFSET)
            } else {
                0
            },
            reliable: if be_u32(buf, 12) & HELLO_FLAG_RELIABLE != 0 {
                Some(HelloReliable::parse(buf)?)
            } else {
                None
            },
        }),
        Kind::HelloAck => Message::HelloAck(HelloAck {
            session_id,
            status: HelloStatus::from_u8(buf[8]).ok_or(WireError::BadField("HelloAck.status"))?,
            reason: RejectReason::from_u8(buf[9]),
            retry_after_s: be_u16(buf, 10),
            rcvbuf_effective: be_u64(buf, 12),
            cookie: be_u64(buf, 20),
            secret: be_u64(buf, 28),
            limit: be_u64(buf, 36),
        }),
        Kind::Fin => Message::Fin(Fin {
            session_id,
            total_sent: be_u64(buf, 8),
            total_bytes: be_u64(buf, 16),
            send_errors: be_u64(buf, 24),
            secret: be_u64(buf, 32),
        }),
        Kind::FinAck => Message::FinAck(FinAck {
            session_id,
            tmax_ns: be_u64(buf, 8),
            secret: be_u64(buf, 16),
        }),
        Kind::ResultReq => Message::ResultReq {
            session_id,
            secret: be_u64(buf, 8),
        },
        Kind::ResultChunk => Message::ResultChunk(parse_result_chunk(session_id, buf)?),
        Kind::Abort => Message::Abort {
            session_id,
            reason: AbortReason::from_u8(buf[8]).ok_or(WireError::BadField("Abort.reason"))?,
            secret: be_u64(buf, 16),
        },
    })
}

fn parse_rdata(session_id: u32, buf: &[u8]) -> Result<RDataFrame, WireError> {
    let frame = RDataFrame {
        session_id,
        packet_number: be_u64(buf, 8),
        message_id: be_u64(buf, 16),
        first_send_ns: be_u64(buf, 24),
        send_ns: be_u64(buf, 32),
        skip_below: be_u64(buf, 40),
        acked_below: be_u64(buf, 48),
        transmission: be_u16(buf, 56),
    };
    if frame.transmission == 0 {
        return Err(WireError::BadField("RData.transmission"));
    }
    if frame.skip_below > frame.message_id {
        return Err(WireError::BadField("RData.skip_below"));
    }
    Ok(frame)
}

fn parse_result_chunk(session_id: u32, buf: &[u8]) -> Result<ResultChunk<'_>, WireError> {
    let ready = match buf[8] {
        0 => true,
        1 => false,
        _ => return Err(WireError::BadField("ResultChunk.status")),
    };
    let index = be_u16(buf, 10);
    let count = be_u16(buf, 12);
    if ready && index >= count {
        return Err(WireError::BadField("ResultChunk.index"));
    }
    let len = usize::from(be_u16(buf, 14));
    let available = buf.len() - RESULT_CHUNK_HEADER_LEN;
    let data = buf
        .get(RESULT_CHUNK_HEADER_LEN..RESULT_CHUNK_HEADER_LEN + len)
        .ok_or(WireError::ChunkTruncated { len, available })?;
    Ok(ResultChunk {
        session_id,
        ready,
        index,
        count,
        secret: be_u64(buf, 16),
        data,
    })
}

/// The session id of anything that looks like a udplab datagram of this version (right magic
/// and version, at least 8 bytes), whatever its kind: lets a receiver answer a datagram it
/// cannot otherwise parse (for example with a rejecting HelloAck).
pub fn session_id_of(buf: &[u8]) -> Option<u32> {
    if buf.len() >= PREFIX_LEN && be_u16(buf, 0) == MAGIC && buf[2] == VERSION {
        Some(be_u32(buf, 4))
    } else {
        None
    }
}

/// The version byte of a datagram that carries udplab's magic but another version than this
/// module's, with its kind byte and session id: how a sender recognises a receiver of another
/// version (`None` for this version's datagrams and for anything else).
pub fn foreign_version(buf: &[u8]) -> Option<(u8, u8, u32)> {
    if buf.len() >= PREFIX_LEN && be_u16(buf, 0) == MAGIC && buf[2] != VERSION {
        Some((buf[2], buf[3], be_u32(buf, 4)))
    } else {
        None
    }
}

/// A receiver's answer to a Hello of another version: the 8-byte prefix with this version,
/// kind HelloAck and the Hello's session id, which a sender of any version can read. `None`
/// unless `buf` is a Hello (kind 16, udplab magic) of another version. Never larger than `buf`.
pub fn version_reply(buf: &[u8]) -> Option<[u8; PREFIX_LEN]> {
    let (_, kind, session_id) = foreign_version(buf)?;
    if kind != Kind::Hello as u8 {
        return None;
    }
    let mut out = [0u8; PREFIX_LEN];
    out[..4].copy_from_slice(&prefix_word(Kind::HelloAck).to_be_bytes());
    out[4..].copy_from_slice(&session_id.to_be_bytes());
    Some(out)
}

impl DataHeader {
    /// Writes the 24-byte header of a Data or Echo datagram into `buf[..24]`, leaving the rest
    /// of `buf` (the padding) untouched. No allocation.
    ///
    /// # Panics
    ///
    /// If `buf.len() < DATA_HEADER_LEN`. In debug builds also if `kind` is neither
    /// [`Kind::Data`] nor [`Kind::Echo`] (a programming error: other kinds have other layouts).
    #[inline]
    pub fn write(&self, kind: Kind, buf: &mut [u8]) {
        debug_assert!(
            matches!(kind, Kind::Data | Kind::Echo),
            "DataHeader::write with kind {kind}"
        );
        let header = &mut buf[..DATA_HEADER_LEN];
        header[0..4].copy_from_slice(&prefix_word(kind).to_be_bytes());
        header[4..8].copy_from_slice(&self.session_id.to_be_bytes());
        header[8..16].copy_from_slice(&self.seq.to_be_bytes());
        header[16..24].copy_from_slice(&self.send_ns.to_be_bytes());
    }

    /// The header of a well-formed Data datagram (any length ≥ 24), else `None`.
    #[inline]
    pub fn parse_data(buf: &[u8]) -> Option<DataHeader> {
        Self::parse_with_prefix(buf, DATA_PREFIX)
    }

    /// The header of a well-formed Echo datagram (any length ≥ 24), else `None`.
    #[inline]
    pub fn parse_echo(buf: &[u8]) -> Option<DataHeader> {
        Self::parse_with_prefix(buf, ECHO_PREFIX)
    }

    #[inline]
    fn parse_with_prefix(buf: &[u8], prefix: u32) -> Option<DataHeader> {
        let header: &[u8; DATA_HEADER_LEN] = buf.get(..DATA_HEADER_LEN)?.try_into().ok()?;
        let word = |at: usize| {
            u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        if word(0) != prefix {
            return None;
        }
        let long = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Some(DataHeader {
            session_id: word(4),
            seq: long(8),
            send_ns: long(16),
        })
    }
}

impl Message<'_> {
    /// The message's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Data { .. } => Kind::Data,
            Message::Echo(_) => Kind::Echo,
            Message::RData { .. } => Kind::RData,
            Message::Ack(_) => Kind::Ack,
            Message::Hello(_) => Kind::Hello,
            Message::HelloAck(_) => Kind::HelloAck,
            Message::Fin(_) => Kind::Fin,
            Message::FinAck(_) => Kind::FinAck,
            Message::ResultReq { .. } => Kind::ResultReq,
            Message::ResultChunk(_) => Kind::ResultChunk,
            Message::Abort { .. } => Kind::Abort,
        }
    }

    /// The session the message belongs to.
    pub fn session_id(&self) -> u32 {
        match self {
            Message::Data { header, .. } | Message::Echo(header) => header.session_id,
            Message::RData { frame, .. } => frame.session_id,
            Message::Ack(view) => view.session_id(),
            Message::Hello(m) => m.session_id,
            Message::HelloAck(m) => m.session_id,
            Message::Fin(m) => m.session_id,
            Message::FinAck(m) => m.session_id,
            Message::ResultReq { session_id, .. } | Message::Abort { session_id, .. } => {
                *session_id
            }
            Message::ResultChunk(m) => m.session_id,
        }
    }

    /// Appends the message's bytes to `out`. Data emits only its 24-byte header and RData its
    /// 64-byte header (their `len` is ignored): the caller appends the padding. An Ack emits the
    /// bytes it was parsed from (build new ones with [`AckFrame::encode`]). A ResultChunk emits its `data` after the
    /// header; `index`/`count` are written as given.
    ///
    /// # Panics
    ///
    /// If a ResultChunk's data is longer than 65535 bytes (its `len` field is 16 bits; chunks
    /// are meant to be [`RESULT_CHUNK_DATA`] bytes).
    pub fn emit(&self, out: &mut Vec<u8>) {
        // Where this message starts: `out` may already hold earlier bytes.
        let start = out.len();
        match self {
            Message::RData { frame, .. } => {
                let at = out.len();
                out.resize(at + RDATA_HEADER_LEN, 0);
                frame.write(&mut out[at..]);
                return;
            }
            Message::Ack(view) => {
                out.extend_from_slice(view.bytes());
                return;
            }
            _ => {}
        }
        out.extend_from_slice(&prefix_word(self.kind()).to_be_bytes());
        out.extend_from_slice(&self.session_id().to_be_bytes());
        match self {
            Message::Data { header, .. } | Message::Echo(header) => {
                out.extend_from_slice(&header.seq.to_be_bytes());
                out.extend_from_slice(&header.send_ns.to_be_bytes());
            }
            Message::RData { .. } | Message::Ack(_) => {}
            Message::Hello(m) => {
                let mut flags = m.pattern.flags();
                if m.echo {
                    flags |= HELLO_FLAG_ECHO;
                }
                if m.loss_ranges {
                    flags |= HELLO_FLAG_LOSS_RANGES;
                }
                if m.multicast {
                    flags |= HELLO_FLAG_MULTICAST;
                }
                if m.reverse {
                    flags |= HELLO_FLAG_REVERSE;
                }
                if m.reliable.is_some() {
                    flags |= HELLO_FLAG_RELIABLE;
                }
                if m.bidir {
                    flags |= HELLO_FLAG_BIDIR;
                }
                out.extend_from_slice(&m.payload_size.to_be_bytes());
                out.extend_from_slice(&flags.to_be_bytes());
                for field in [
                    m.interval_ns,
                    m.tmax_ns,
                    m.count,
                    m.duration_ns,
                    m.rate_bps,
                    m.pps_milli,
                    m.cookie,
                ] {
                    out.extend_from_slice(&field.to_be_bytes());
                }
                if let Some(r) = &m.reliable {
                    // 72..96.
                    r.emit(out);
                }
                let has_marking = m.marking != HelloMarking::default();
                if m.omit_ns != 0 || has_marking {
                    // Appended fields in offset order; 72..96 (no --reliable) and an absent
                    // omit are zero.
                    out.resize(start + HELLO_OMIT_OFFSET, 0);
                    out.extend_from_slice(&m.omit_ns.to_be_bytes());
                }
                if has_marking {
                    let flags = if m.marking.tos.is_some() {
                        MARK_FLAG_TOS
                    } else {
                        0
                    } | if m.marking.ttl.is_some() {
                        MARK_FLAG_TTL
                    } else {
                        0
                    };
                    debug_assert_eq!(out.len(), start + HELLO_MARKING_AT);
                    out.extend_from_slice(&[
                        flags,
                        m.marking.tos.unwrap_or(0),
                        m.marking.ttl.unwrap_or(0),
                        0,
                        0,
                        0,
                        0,
                        0,
                    ]);
                }
            }
            Message::HelloAck(m) => {
                out.extend_from_slice(&[m.status as u8, m.reason as u8]);
                out.extend_from_slice(&m.retry_after_s.to_be_bytes());
                for field in [m.rcvbuf_effective, m.cookie, m.secret, m.limit] {
                    out.extend_from_slice(&field.to_be_bytes());
                }
            }
            Message::Fin(m) => {
                for field in [m.total_sent, m.total_bytes, m.send_errors, m.secret] {
                    out.extend_from_slice(&field.to_be_bytes());
                }
            }
            Message::FinAck(m) => {
                out.extend_from_slice(&m.tmax_ns.to_be_bytes());
                out.extend_from_slice(&m.secret.to_be_bytes());
            }
            Message::ResultReq { secret, .. } => out.extend_from_slice(&secret.to_be_bytes()),
            Message::ResultChunk(m) => {
                let len =
                    u16::try_from(m.data.len()).expect("ResultChunk data longer than 65535 bytes");
                out.extend_from_slice(&[u8::from(!m.ready), 0]);
                out.extend_from_slice(&m.index.to_be_bytes());
                out.extend_from_slice(&m.count.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&m.secret.to_be_bytes());
                out.extend_from_slice(m.data);
            }
            Message::Abort { reason, secret, .. } => {
                out.extend_from_slice(&[*reason as u8, 0, 0, 0, 0, 0, 0, 0]);
                out.extend_from_slice(&secret.to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn emitted(msg: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        msg.emit(&mut out);
        out
    }

    fn sample_hello() -> Hello {
        Hello {
            session_id: 0xDEAD_BEEF,
            payload_size: 1400,
            echo: true,
            loss_ranges: false,
            reverse: false,
            bidir: false,
            pattern: HelloPattern::Unknown,
            interval_ns: 1_000_000_000,
            tmax_ns: 2_000_000_000,
            count: 50_000,
            duration_ns: 0,
            rate_bps: 100_000_000,
            pps_milli: 8_928_571,
            cookie: 0x0102_0304_0506_0708,
            multicast: false,
            marking: HelloMarking::default(),
            omit_ns: 0,
            reliable: None,
        }
    }

    fn sample_rdata() -> RDataFrame {
        RDataFrame {
            session_id: 7,
            packet_number: 1001,
            message_id: 990,
            transmission: 2,
            first_send_ns: 1_700_000_000_123_456_789,
            send_ns: 1_700_000_000_124_456_789,
            skip_below: 980,
            acked_below: 995,
        }
    }

    fn sample_ack() -> AckFrame {
        let mut ranges = crate::arq::AckRanges::default();
        assert!(ranges.push(20_000, 20_010));
        assert!(ranges.push(19_990, 19_997));
        assert!(ranges.push(100, 100));
        AckFrame {
            session_id: 7,
            largest: 20_010,
            ack_delay_ns: 250_000,
            delivered_below: 19_000,
            ranges,
        }
    }

    /// An Ack borrowed from leaked bytes, so samples can stay `'static`.
    fn sample_ack_view() -> AckView<'static> {
        let mut bytes = Vec::new();
        sample_ack().encode(&mut bytes);
        match parse(Box::leak(bytes.into_boxed_slice())) {
            Ok(Message::Ack(view)) => view,
            other => panic!("sample Ack does not parse: {other:?}"),
        }
    }

    #[test]
    fn hello_carries_the_senders_marking_at_104() {
        let hello = Hello {
            marking: HelloMarking {
                tos: Some(0xb8),
                ttl: Some(3),
            },
            ..sample_hello()
        };
        let bytes = emitted(&Message::Hello(hello));
        assert_eq!(bytes.len(), HELLO_MARKING_END);
        assert!(bytes[HELLO_LEN..HELLO_MARKING_AT].iter().all(|&b| b == 0));
        assert_eq!(&bytes[104..112], &[3, 0xb8, 3, 0, 0, 0, 0, 0]);
        assert_eq!(parse(&bytes), Ok(Message::Hello(hello)));
        // Only the TTL: the TOS byte stays unset even when its byte is not zero.
        let mut ttl_only = bytes.clone();
        ttl_only[104] = MARK_FLAG_TTL;
        let Ok(Message::Hello(h)) = parse(&ttl_only) else {
            panic!("must parse")
        };
        assert_eq!(
            h.marking,
            HelloMarking {
                tos: None,
                ttl: Some(3)
            }
        );
        // A Hello cut before the end of the field carries no marking (and still parses).
        let Ok(Message::Hello(h)) = parse(&bytes[..HELLO_MARKING_END - 1]) else {
            panic!("must parse")
        };
        assert_eq!(h.marking, HelloMarking::default());
        // Without a marking the Hello keeps its 72 bytes.
        assert_eq!(emitted(&Message::Hello(sample_hello())).len(), HELLO_LEN);
        const { assert!(HELLO_ACK_LEN < HELLO_LEN) };
    }

    fn ack(status: HelloStatus) -> HelloAck {
        HelloAck {
            session_id: 7,
            status,
            rcvbuf_effective: 425_984,
            reason: RejectReason::Unspecified,
            retry_after_s: 0,
            cookie: 0,
            secret: 0,
            limit: 0,
        }
    }

    fn samples() -> Vec<Message<'static>> {
        let header = DataHeader {
            session_id: 7,
            seq: 42,
            send_ns: 1_700_000_000_123_456_789,
        };
        vec![
            Message::Data {
                header,
                len: DATA_HEADER_LEN,
            },
            Message::Echo(header),
            Message::RData {
                frame: sample_rdata(),
                len: RDATA_HEADER_LEN,
            },
            Message::Ack(sample_ack_view()),
            Message::Hello(sample_hello()),
            Message::HelloAck(HelloAck {
                retry_after_s: 12,
                ..ack(HelloStatus::Busy)
            }),
            Message::Fin(Fin {
                session_id: 7,
                total_sent: 50_000,
                total_bytes: 70_000_000,
                send_errors: 3,
                secret: u64::MAX - 1,
            }),
            Message::FinAck(FinAck {
                session_id: 7,
                tmax_ns: 2_000_000_000,
                secret: 99,
            }),
            Message::ResultReq {
                session_id: 7,
                secret: 5,
            },
            Message::ResultChunk(ResultChunk {
                session_id: 7,
                ready: true,
                index: 1,
                count: 3,
                secret: 6,
                data: br#"{"version":1}"#,
            }),
            Message::Abort {
                session_id: 7,
                reason: AbortReason::Interrupted,
                secret: 8,
            },
        ]
    }

    #[test]
    fn every_message_roundtrips_and_has_its_documented_size() {
        let messages = samples();
        assert_eq!(messages.len(), Kind::ALL.len(), "one sample per kind");
        for msg in &messages {
            let bytes = emitted(msg);
            assert_eq!(parse(&bytes), Ok(*msg), "{}", msg.kind());
            let expected_len = match msg {
                Message::ResultChunk(c) => RESULT_CHUNK_HEADER_LEN + c.data.len(),
                Message::Ack(view) => view.bytes().len(),
                _ => msg.kind().min_len(),
            };
            assert_eq!(bytes.len(), expected_len, "{}", msg.kind());
            assert_eq!(session_id_of(&bytes), Some(msg.session_id()));
        }
    }

    #[test]
    fn kind_values_are_the_documented_ones() {
        let values: Vec<u8> = Kind::ALL.iter().map(|k| *k as u8).collect();
        assert_eq!(values, [1, 2, 3, 4, 16, 17, 18, 19, 20, 21, 22]);
        for kind in Kind::ALL {
            assert_eq!(Kind::from_u8(kind as u8), Some(kind));
        }
        assert_eq!(Kind::from_u8(0), None);
        assert_eq!(Kind::from_u8(5), None);
        assert_eq!(Kind::from_u8(23), None);
    }

    #[test]
    fn data_golden_vector() {
        let header = DataHeader {
            session_id: 0x0102_0304,
            seq: 0x1122_3344_5566_7788,
            send_ns: 0x99AA_BBCC_DDEE_FF00,
        };
        let golden: [u8; 24] = [
            0x55, 0x44, 0x02, 0x01, // magic "UD", version 2, kind Data
            0x01, 0x02, 0x03, 0x04, // session_id
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // seq
            0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF, 0x00, // send_ns
        ];
        let msg = Message::Data { header, len: 24 };
        assert_eq!(emitted(&msg), golden);
        let mut buf = [0u8; 24];
        header.write(Kind::Data, &mut buf);
        assert_eq!(buf, golden);
        assert_eq!(parse(&golden), Ok(msg));

        let mut echo = golden;
        echo[3] = 2;
        let mut buf = [0u8; 24];
        header.write(Kind::Echo, &mut buf);
        assert_eq!(buf, echo);
        assert_eq!(parse(&echo), Ok(Message::Echo(header)));
    }

    #[test]
    fn hello_golden_vector() {
        let golden: [u8; 72] = [
            0x55, 0x44, 0x02, 0x10, // magic, version 2, kind Hello (16)
            0xDE, 0xAD, 0xBE, 0xEF, // session_id
            0x00, 0x00, 0x05, 0x78, // payload_size 1400
            0x00, 0x00, 0x00, 0x01, // flags: echo
            0x00, 0x00, 0x00, 0x00, 0x3B, 0x9A, 0xCA, 0x00, // interval_ns 1e9
            0x00, 0x00, 0x00, 0x00, 0x77, 0x35, 0x94, 0x00, // tmax_ns 2e9
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC3, 0x50, // count 50000
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // duration_ns 0
            0x00, 0x00, 0x00, 0x00, 0x05, 0xF5, 0xE1, 0x00, // rate_bps 1e8
            0x00, 0x00, 0x00, 0x00, 0x00, 0x88, 0x3D, 0x3B, // pps_milli 8928571
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // cookie
        ];
        let msg = Message::Hello(sample_hello());
        assert_eq!(emitted(&msg), golden);
        assert_eq!(parse(&golden), Ok(msg));
    }

    #[test]
    fn data_len_counts_padding() {
        let header = DataHeader {
            session_id: 1,
            seq: 2,
            send_ns: 3,
        };
        let mut buf = vec![0xAB; 1400];
        header.write(Kind::Data, &mut buf);
        assert_eq!(parse(&buf), Ok(Message::Data { header, len: 1400 }));
        assert_eq!(DataHeader::parse_data(&buf), Some(header));
        assert_eq!(DataHeader::parse_echo(&buf), None);
        assert_eq!(buf[24..], [0xAB; 1376], "write leaves the padding alone");
    }

    #[test]
    fn fixed_size_messages_accept_trailing_bytes() {
        for msg in samples() {
            let mut bytes = emitted(&msg);
            bytes.extend_from_slice(&[0xFF; 5]);
            let parsed = parse(&bytes).expect("trailing bytes are accepted");
            match msg {
                Message::RData { frame, .. } => {
                    assert_eq!(
                        parsed,
                        Message::RData {
                            frame,
                            len: bytes.len()
                        }
                    )
                }
                Message::Data { header, .. } => {
                    assert_eq!(
                        parsed,
                        Message::Data {
                            header,
                            len: bytes.len()
                        }
                    )
                }
                _ => assert_eq!(parsed, msg),
            }
        }
    }

    #[test]
    fn hello_appends_omit_only_when_set_and_reads_it_only_when_present() {
        let plain = emitted(&Message::Hello(sample_hello()));
        assert_eq!(plain.len(), HELLO_LEN);
        let hello = Hello {
            omit_ns: 500_000_000,
            ..sample_hello()
        };
        // Emitted after other bytes: the offsets are the message's own.
        let mut out = vec![0xAA; 3];
        Message::Hello(hello).emit(&mut out);
        let bytes = &out[3..];
        assert_eq!(bytes.len(), HELLO_OMIT_LEN);
        assert!(bytes[HELLO_LEN..HELLO_OMIT_OFFSET].iter().all(|&b| b == 0));
        assert_eq!(parse(bytes), Ok(Message::Hello(hello)));
        // Cut before the field: it reads as absent, the rest is intact.
        assert_eq!(
            parse(&bytes[..HELLO_OMIT_LEN - 1]),
            Ok(Message::Hello(Hello {
                omit_ns: 0,
                ..hello
            }))
        );
        // Every answer to the longer Hello is still smaller.
        const { assert!(HELLO_ACK_LEN < HELLO_OMIT_LEN) };
    }

    #[test]
    fn hello_carries_loss_ranges_and_the_pattern_in_its_flags() {
        for pattern in [
            HelloPattern::Cbr,
            HelloPattern::Poisson,
            HelloPattern::Burst(64),
            HelloPattern::Unpaced,
        ] {
            let hello = Hello {
                loss_ranges: true,
                pattern,
                ..sample_hello()
            };
            let bytes = emitted(&Message::Hello(hello));
            assert_eq!(bytes.len(), HELLO_LEN, "the Hello keeps its size");
            assert_eq!(parse(&bytes), Ok(Message::Hello(hello)));
        }
        let burst = emitted(&Message::Hello(Hello {
            pattern: HelloPattern::Burst(64),
            ..sample_hello()
        }));
        assert_eq!(&burst[12..16], &[0x00, 0x40, 0x03, 0x01]);
    }

    #[test]
    fn the_multicast_announcement_is_flag_bit_5_of_a_hello_of_the_usual_size() {
        let hello = Hello {
            multicast: true,
            ..sample_hello()
        };
        let bytes = emitted(&Message::Hello(hello));
        assert_eq!(bytes.len(), HELLO_LEN);
        assert_eq!(
            be_u32(&bytes, 12) & 0xff,
            0b10_0001,
            "bit 5 and the echo bit"
        );
        assert_eq!(parse(&bytes), Ok(Message::Hello(hello)));
        let plain = emitted(&Message::Hello(sample_hello()));
        assert_eq!(be_u32(&plain, 12) & (1 << 5), 0);
    }

    #[test]
    fn a_reverse_hello_sets_flag_bit_3_and_keeps_its_size() {
        let hello = Hello {
            reverse: true,
            bidir: false,
            echo: false,
            pattern: HelloPattern::Cbr,
            ..sample_hello()
        };
        let bytes = emitted(&Message::Hello(hello));
        assert_eq!(bytes.len(), HELLO_LEN);
        assert_eq!(&bytes[12..16], &[0x00, 0x00, 0x01, 0x08]);
        assert_eq!(parse(&bytes), Ok(Message::Hello(hello)));
        let forward = emitted(&Message::Hello(Hello {
            reverse: false,
            bidir: false,
            ..hello
        }));
        assert_eq!(&forward[12..16], &[0x00, 0x00, 0x01, 0x00]);
    }

    #[test]
    fn a_reliable_hello_appends_its_parameters_and_roundtrips() {
        let hello = Hello {
            reliable: Some(HelloReliable {
                mode: ReliableMode::Deadline,
                deadline: 4_000,
                deadline_in_rtt: true,
                window: 1024,
                rexmit_budget_pct: 50,
            }),
            ..sample_hello()
        };
        let bytes = emitted(&Message::Hello(hello));
        assert_eq!(bytes.len(), HELLO_RELIABLE_LEN);
        assert_eq!(
            &bytes[12..16],
            &[0x00, 0x00, 0x00, 0x05],
            "flags: echo | reliable"
        );
        assert_eq!(
            &bytes[72..96],
            &[
                3, 0x80, 0, 0, 0, 0, 0, 0, // mode deadline, deadline in RTT × 1000
                0, 0, 0, 0, 0, 0, 0x0F, 0xA0, // 4000
                0, 0, 0x04, 0x00, // window 1024
                0, 0, 0, 50, // retransmission budget 50%
            ]
        );
        assert_eq!(parse(&bytes), Ok(Message::Hello(hello)));
        // An answer to it is still smaller than any Hello.
        const { assert!(HELLO_ACK_LEN < HELLO_LEN && HELLO_LEN < HELLO_RELIABLE_LEN) };
        // A plain Hello keeps its 72 bytes and says nothing about reliability.
        let plain = emitted(&Message::Hello(sample_hello()));
        assert_eq!(plain.len(), HELLO_LEN);
        assert!(matches!(
            parse(&plain),
            Ok(Message::Hello(Hello { reliable: None, .. }))
        ));
        // The reliable bit without the appended bytes: ordered with the receiver's defaults.
        let mut short = plain.clone();
        short[15] |= 0x04;
        let Ok(Message::Hello(h)) = parse(&short) else {
            panic!("a short reliable Hello parses");
        };
        assert_eq!(h.reliable, Some(HelloReliable::default()));
        // An unknown mode is named.
        let mut bad = bytes.clone();
        bad[72] = 9;
        assert_eq!(parse(&bad), Err(WireError::BadField("Hello.reliable_mode")));
    }

    #[test]
    fn a_bidir_hello_sets_flag_bit_4_and_keeps_its_size() {
        let hello = Hello {
            bidir: true,
            echo: false,
            pattern: HelloPattern::Cbr,
            ..sample_hello()
        };
        let bytes = emitted(&Message::Hello(hello));
        assert_eq!(bytes.len(), HELLO_LEN);
        assert_eq!(&bytes[12..16], &[0x00, 0x00, 0x01, 0x10]);
        assert_eq!(parse(&bytes), Ok(Message::Hello(hello)));
    }

    #[test]
    fn unknown_hello_flag_bits_are_ignored() {
        let mut bytes = emitted(&Message::Hello(sample_hello()));
        bytes[12..16].copy_from_slice(&0xFFFF_FFFEu32.to_be_bytes());
        let Ok(Message::Hello(hello)) = parse(&bytes) else {
            panic!("Hello with unknown flags must parse");
        };
        assert!(!hello.echo);
        bytes[12..16].copy_from_slice(&0x8000_0001u32.to_be_bytes());
        let Ok(Message::Hello(hello)) = parse(&bytes) else {
            panic!("Hello with unknown flags must parse");
        };
        assert!(hello.echo);
    }

    #[test]
    fn prefix_errors() {
        let good = emitted(&Message::ResultReq {
            session_id: 9,
            secret: 1,
        });
        assert_eq!(
            parse(&good[..7]),
            Err(WireError::TooShort {
                what: "datagram",
                need: 8,
                got: 7
            })
        );
        let mut bad = good.clone();
        bad[0] = 0x45;
        assert_eq!(parse(&bad), Err(WireError::BadMagic(0x4544)));
        assert_eq!(session_id_of(&bad), None);
        let mut bad = good.clone();
        bad[2] = 1;
        assert_eq!(parse(&bad), Err(WireError::BadVersion(1)));
        assert_eq!(session_id_of(&bad), None);
        let mut bad = good.clone();
        bad[3] = 99;
        assert_eq!(parse(&bad), Err(WireError::UnknownKind(99)));
        assert_eq!(
            session_id_of(&bad),
            Some(9),
            "session id readable whatever the kind"
        );
        assert_eq!(session_id_of(&good[..7]), None);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for msg in samples() {
            let bytes = emitted(&msg);
            for cut in 0..bytes.len() {
                let result = parse(&bytes[..cut]);
                assert!(
                    result.is_err(),
                    "{} cut to {cut} parsed as {result:?}",
                    msg.kind()
                );
            }
        }
        let header = DataHeader {
            session_id: 1,
            seq: 1,
            send_ns: 1,
        };
        let mut buf = [0u8; 24];
        header.write(Kind::Data, &mut buf);
        for cut in 0..24 {
            assert_eq!(DataHeader::parse_data(&buf[..cut]), None);
        }
        assert_eq!(
            parse(&buf[..23]),
            Err(WireError::TooShort {
                what: "Data",
                need: 24,
                got: 23
            })
        );
    }

    #[test]
    fn bad_enum_fields_are_named() {
        let ack = emitted(&Message::HelloAck(ack(HelloStatus::Accepted)));
        let mut bad = ack.clone();
        bad[8] = 4;
        assert_eq!(parse(&bad), Err(WireError::BadField("HelloAck.status")));

        let abort = emitted(&Message::Abort {
            session_id: 1,
            reason: AbortReason::Error,
            secret: 0,
        });
        for reason in [0u8, 3, 255] {
            let mut bad = abort.clone();
            bad[8] = reason;
            assert_eq!(parse(&bad), Err(WireError::BadField("Abort.reason")));
        }
    }

    #[test]
    fn result_chunk_checks() {
        let data = [b'x'; 40];
        let chunk = ResultChunk {
            session_id: 5,
            ready: true,
            index: 0,
            count: 1,
            secret: 3,
            data: &data,
        };
        let bytes = emitted(&Message::ResultChunk(chunk));
        assert_eq!(bytes.len(), 64);
        // len claims more data than present
        assert_eq!(
            parse(&bytes[..58]),
            Err(WireError::ChunkTruncated {
                len: 40,
                available: 34
            })
        );
        let mut bad = bytes.clone();
        bad[8] = 2;
        assert_eq!(parse(&bad), Err(WireError::BadField("ResultChunk.status")));
        // ready with index == count
        let mut bad = bytes.clone();
        bad[10..12].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(parse(&bad), Err(WireError::BadField("ResultChunk.index")));
        // not ready: index/count are not checked, empty data is fine
        let not_ready = ResultChunk {
            session_id: 5,
            ready: false,
            index: 0,
            count: 0,
            secret: 3,
            data: &[],
        };
        let bytes = emitted(&Message::ResultChunk(not_ready));
        assert_eq!(bytes.len(), RESULT_CHUNK_HEADER_LEN);
        assert_eq!(parse(&bytes), Ok(Message::ResultChunk(not_ready)));
    }

    #[test]
    fn every_answer_to_a_hello_is_smaller_than_the_hello() {
        const { assert!(HELLO_ACK_LEN < HELLO_LEN) };
        assert_eq!(Kind::Hello.min_len(), HELLO_LEN);
        let ack = emitted(&Message::HelloAck(ack(HelloStatus::Retry)));
        assert_eq!(ack.len(), HELLO_ACK_LEN);
    }

    #[test]
    fn a_hello_of_another_version_gets_the_prefix_with_this_version() {
        let mut old = emitted(&Message::Hello(sample_hello()));
        old.truncate(64);
        old[2] = 1; // a version 1 Hello was 64 bytes
        let reply = version_reply(&old).expect("a Hello of another version is answered");
        assert_eq!(reply, [0x55, 0x44, VERSION, 17, 0xDE, 0xAD, 0xBE, 0xEF]);
        assert!(reply.len() <= old.len());
        // Only Hellos are answered, and never this version's own datagrams.
        let mut fin_v1 = old.clone();
        fin_v1[3] = Kind::Fin as u8;
        assert_eq!(version_reply(&fin_v1), None);
        assert_eq!(
            version_reply(&emitted(&Message::Hello(sample_hello()))),
            None
        );
        assert_eq!(version_reply(b"GET / HTTP/1.1"), None);
        // What a sender of this version reads from a receiver of version 3.
        let mut v3 = reply;
        v3[2] = 3;
        assert_eq!(foreign_version(&v3), Some((3, 17, 0xDEAD_BEEF)));
        assert_eq!(foreign_version(&reply), None);
        assert_eq!(foreign_version(&reply[..7]), None);
    }

    #[test]
    fn hello_ack_golden_vector() {
        let golden: [u8; 44] = [
            0x55, 0x44, 0x02, 0x11, // magic, version 2, kind HelloAck (17)
            0x00, 0x00, 0x00, 0x07, // session_id
            0x02, 0x03, 0x00, 0x00, // status rejected, reason Tmax, retry_after_s 0
            0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x80, 0x00, // rcvbuf_effective 425984
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // cookie
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // secret
            0x00, 0x00, 0x00, 0x0D, 0xF8, 0x47, 0x58, 0x00, // limit 60e9 ns
        ];
        let msg = Message::HelloAck(HelloAck {
            reason: RejectReason::Tmax,
            limit: 60_000_000_000,
            ..ack(HelloStatus::Rejected)
        });
        assert_eq!(emitted(&msg), golden);
        assert_eq!(parse(&golden), Ok(msg));
    }

    #[test]
    fn errors_display_what_went_wrong() {
        let e = WireError::TooShort {
            what: "Hello",
            need: 64,
            got: 20,
        };
        assert_eq!(e.to_string(), "Hello too short: 20 bytes, need at least 64");
        assert_eq!(
            WireError::BadMagic(0x1234).to_string(),
            "not a udplab datagram: magic 0x1234, expected 0x5544"
        );
    }

    fn arb_header() -> impl Strategy<Value = DataHeader> {
        (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(session_id, seq, send_ns)| {
            DataHeader {
                session_id,
                seq,
                send_ns,
            }
        })
    }

    fn arb_hello() -> impl Strategy<Value = Hello> {
        let pattern = prop_oneof![
            Just(HelloPattern::Unknown),
            Just(HelloPattern::Cbr),
            Just(HelloPattern::Poisson),
            any::<u16>().prop_map(HelloPattern::Burst),
            Just(HelloPattern::Unpaced),
        ];
        (
            any::<u32>(),
            any::<u32>(),
            any::<[bool; 5]>(),
            pattern,
            any::<[u64; 7]>(),
            any::<(Option<u8>, Option<u8>)>(),
            prop_oneof![Just(0u64), any::<u64>()],
        )
            .prop_map(
                |(
                    session_id,
                    payload_size,
                    [echo, loss_ranges, reverse, multicast, bidir],
                    pattern,
                    v,
                    (tos, ttl),
                    omit_ns,
                )| {
                    Hello {
                        session_id,
                        payload_size,
                        echo,
                        loss_ranges,
                        reverse,
                        bidir,
                        multicast,
                        pattern,
                        interval_ns: v[0],
                        tmax_ns: v[1],
                        count: v[2],
                        duration_ns: v[3],
                        rate_bps: v[4],
                        pps_milli: v[5],
                        cookie: v[6],
                        marking: HelloMarking { tos, ttl },
                        omit_ns,
                        reliable: None,
                    }
                },
            )
    }

    fn arb_reliable() -> impl Strategy<Value = Option<HelloReliable>> {
        let mode = prop_oneof![
            Just(ReliableMode::Ordered),
            Just(ReliableMode::Unordered),
            Just(ReliableMode::Deadline),
        ];
        proptest::option::of(
            (mode, any::<u64>(), any::<bool>(), any::<[u32; 2]>()).prop_map(
                |(mode, deadline, deadline_in_rtt, [window, rexmit_budget_pct])| HelloReliable {
                    mode,
                    deadline,
                    deadline_in_rtt,
                    window,
                    rexmit_budget_pct,
                },
            ),
        )
    }

    /// Every fixed-size (non-borrowing, non-Data) message.
    fn arb_fixed_message() -> impl Strategy<Value = Message<'static>> {
        let status = prop_oneof![
            Just(HelloStatus::Accepted),
            Just(HelloStatus::Busy),
            Just(HelloStatus::Rejected),
            Just(HelloStatus::Retry)
        ];
        let reject = (0u8..8).prop_map(RejectReason::from_u8);
        let reason = prop_oneof![Just(AbortReason::Interrupted), Just(AbortReason::Error)];
        prop_oneof![
            arb_header().prop_map(Message::Echo),
            (arb_hello(), arb_reliable())
                .prop_map(|(h, reliable)| Message::Hello(Hello { reliable, ..h })),
            (
                any::<u32>(),
                status,
                reject,
                any::<u16>(),
                any::<[u64; 4]>()
            )
                .prop_map(|(session_id, status, reason, retry_after_s, v)| {
                    Message::HelloAck(HelloAck {
                        session_id,
                        status,
                        rcvbuf_effective: v[0],
                        reason,
                        retry_after_s,
                        cookie: v[1],
                        secret: v[2],
                        limit: v[3],
                    })
                }),
            (any::<u32>(), any::<[u64; 4]>()).prop_map(|(session_id, v)| Message::Fin(Fin {
                session_id,
                total_sent: v[0],
                total_bytes: v[1],
                send_errors: v[2],
                secret: v[3],
            })),
            (any::<u32>(), any::<[u64; 2]>()).prop_map(|(session_id, v)| Message::FinAck(FinAck {
                session_id,
                tmax_ns: v[0],
                secret: v[1],
            })),
            (any::<u32>(), any::<u64>())
                .prop_map(|(session_id, secret)| Message::ResultReq { session_id, secret }),
            (any::<u32>(), reason, any::<u64>()).prop_map(|(session_id, reason, secret)| {
                Message::Abort {
                    session_id,
                    reason,
                    secret,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let parsed = parse(&bytes);
            let _ = session_id_of(&bytes);
            let data = DataHeader::parse_data(&bytes);
            let echo = DataHeader::parse_echo(&bytes);
            // The hot-path parsers agree with the generic one.
            prop_assert_eq!(data.is_some(), matches!(parsed, Ok(Message::Data { .. })));
            prop_assert_eq!(echo.is_some(), matches!(parsed, Ok(Message::Echo(_))));
        }

        #[test]
        fn parse_never_panics_on_valid_prefix(
            kind in 0u8..32,
            // Past 112 bytes so the Hello's appended fields are parsed too.
            rest in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            // Random bytes rarely carry the magic; force it so the per-kind code runs.
            let mut bytes = vec![0x55, 0x44, VERSION, kind];
            bytes.extend_from_slice(&rest);
            let parsed = parse(&bytes);
            if let Ok(msg) = parsed {
                prop_assert_eq!(msg.kind() as u8, kind);
            }
        }

        #[test]
        fn fixed_messages_roundtrip(msg in arb_fixed_message()) {
            let bytes = emitted(&msg);
            // A Hello grows to the end of its last appended field: the marking (104..112),
            // else the omit (96..104).
            let want = match &msg {
                Message::Hello(h) if h.marking != HelloMarking::default() => HELLO_MARKING_END,
                Message::Hello(h) if h.omit_ns != 0 => HELLO_OMIT_LEN,
                Message::Hello(h) if h.reliable.is_some() => HELLO_RELIABLE_LEN,
                _ => msg.kind().min_len(),
            };
            prop_assert_eq!(bytes.len(), want);
            prop_assert_eq!(parse(&bytes), Ok(msg));
            prop_assert_eq!(session_id_of(&bytes), Some(msg.session_id()));
        }

        #[test]
        fn data_roundtrips_with_padding(header in arb_header(), len in DATA_HEADER_LEN..2000usize) {
            let msg = Message::Data { header, len };
            let mut bytes = emitted(&msg);
            prop_assert_eq!(bytes.len(), DATA_HEADER_LEN);
            bytes.resize(len, 0);
            prop_assert_eq!(parse(&bytes), Ok(msg));
        }

        #[test]
        fn result_chunk_roundtrips(
            session_id in any::<u32>(),
            ready in any::<bool>(),
            index in any::<u16>(),
            extra in any::<u16>(),
            secret in any::<u64>(),
            data in proptest::collection::vec(any::<u8>(), 0..=RESULT_CHUNK_DATA),
        ) {
            // A ready chunk needs index < count; keep count > index without overflow.
            let (index, count) = if ready {
                let index = index.min(u16::MAX - 1);
                (index, index + 1 + extra.min(u16::MAX - 1 - index))
            } else {
                (index, extra)
            };
            let msg = Message::ResultChunk(ResultChunk { session_id, ready, index, count, secret, data: &data });
            let bytes = emitted(&msg);
            prop_assert_eq!(bytes.len(), RESULT_CHUNK_HEADER_LEN + data.len());
            prop_assert_eq!(parse(&bytes), Ok(msg));
        }

        #[test]
        fn data_header_write_parse_roundtrip(header in arb_header(), pad in 0usize..100) {
            let mut buf = vec![0u8; DATA_HEADER_LEN + pad];
            header.write(Kind::Data, &mut buf);
            prop_assert_eq!(DataHeader::parse_data(&buf), Some(header));
            prop_assert_eq!(DataHeader::parse_echo(&buf), None);
            header.write(Kind::Echo, &mut buf);
            prop_assert_eq!(DataHeader::parse_echo(&buf), Some(header));
            prop_assert_eq!(DataHeader::parse_data(&buf), None);
            prop_assert_eq!(parse(&buf), Ok(Message::Echo(header)));
        }

        #[test]
        fn version_helpers_never_panic_and_never_grow(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            if let Some(reply) = version_reply(&bytes) {
                prop_assert!(reply.len() <= bytes.len());
                prop_assert!(parse(&bytes).is_err());
            }
            let _ = foreign_version(&bytes);
        }

        #[test]
        fn truncated_messages_are_errors(msg in arb_fixed_message(), cut in 0usize..72) {
            let bytes = emitted(&msg);
            let cut = cut % bytes.len();
            prop_assert!(parse(&bytes[..cut]).is_err());
        }
    }
}
