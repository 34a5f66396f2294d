//! The reliable layer's two frames, RData (kind 3) and Ack (kind 4): their fields, QUIC
//! variable-length integers, the ACK range set in QUIC gap coding, and panic-free decoding.
//!
//! The byte layouts are documented with every other message in [`crate::wire`]; this module
//! owns the owned frame types the state machines exchange.

use crate::wire::{self, Kind, Message, WireError};

/// Length of an RData header; an RData datagram is this header plus padding up to the payload
/// size (so the reliable mode needs a payload of at least this many bytes).
pub const RDATA_HEADER_LEN: usize = 64;
/// Most packet-number ranges one ACK carries (the first included).
pub const MAX_ACK_RANGES: usize = 32;
/// Smallest well-formed Ack: prefix, four one-byte varints and the range count.
pub const ACK_MIN_LEN: usize = wire::PREFIX_LEN + 5;
/// Largest Ack: prefix, three 8-byte varints, the count byte, and 32 ranges of two 8-byte
/// varints (the first range has only its length): what a receiver must be ready to send.
pub const ACK_MAX_LEN: usize = wire::PREFIX_LEN + 3 * 8 + 1 + 8 + (MAX_ACK_RANGES - 1) * 16;

/// Largest value a QUIC variable-length integer holds (2^62 − 1).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Reliable data: one transmission of one message under a packet number never used before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RDataFrame {
    pub session_id: u32,
    /// Never reused: a retransmission of the same message gets a new one, so every RTT sample
    /// is exact and every spurious retransmission is visible.
    pub packet_number: u64,
    /// The application message this datagram carries, 0 for the first message.
    pub message_id: u64,
    /// 1 for the first transmission of the message, 2 for the first retransmission, ...
    pub transmission: u16,
    /// Sender wall clock at the message's first transmission, ns since the Unix epoch.
    pub first_send_ns: u64,
    /// Sender wall clock at this transmission, ns since the Unix epoch.
    pub send_ns: u64,
    /// The sender will never send a message below this id again (all of them acknowledged or
    /// given up): a receiver stops waiting for the missing ones (SRT's drop request). Never
    /// above `message_id`.
    pub skip_below: u64,
    /// The largest packet number the sender has seen acknowledged, plus one (0: none yet): the
    /// receiver stops repeating ACK ranges below it.
    pub acked_below: u64,
}

/// One range of acknowledged packet numbers, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckRange {
    pub smallest: u64,
    pub largest: u64,
}

/// Up to [`MAX_ACK_RANGES`] disjoint ranges in descending order, separated by at least one
/// missing packet number; inline, so an ACK never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckRanges {
    len: u8,
    ranges: [AckRange; MAX_ACK_RANGES],
}

impl std::fmt::Debug for AckRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Default for AckRanges {
    fn default() -> Self {
        AckRanges {
            len: 0,
            ranges: [AckRange {
                smallest: 0,
                largest: 0,
            }; MAX_ACK_RANGES],
        }
    }
}

impl AckRanges {
    /// The ranges, highest first.
    pub fn as_slice(&self) -> &[AckRange] {
        &self.ranges[..usize::from(self.len)]
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a range below the last one. False (and nothing added) when full, or when the
    /// range is not strictly below the previous one with a gap of at least one, or inverted.
    pub fn push(&mut self, smallest: u64, largest: u64) -> bool {
        if self.len() == MAX_ACK_RANGES || smallest > largest || largest > VARINT_MAX {
            return false;
        }
        if let Some(last) = self.as_slice().last()
            && largest.saturating_add(2) > last.smallest
        {
            return false;
        }
        self.ranges[self.len()] = AckRange { smallest, largest };
        self.len += 1;
        true
    }

    /// Whether `pn` lies in one of the ranges.
    pub fn contains(&self, pn: u64) -> bool {
        self.as_slice()
            .iter()
            .any(|r| r.smallest <= pn && pn <= r.largest)
    }
}

/// Acknowledgement: what the receiver has, in packet numbers (ranges) and in messages (the
/// cumulative point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckFrame {
    pub session_id: u32,
    /// Largest packet number received; the top of the first range.
    pub largest: u64,
    /// How long the receiver held this ACK after receiving `largest`, ns (whole µs on the wire).
    pub ack_delay_ns: u64,
    /// Every message below this id was received (or skipped on the sender's word).
    pub delivered_below: u64,
    /// Received packet numbers, highest range first; the first range ends at `largest`.
    pub ranges: AckRanges,
}

impl AckFrame {
    /// Appends the Ack datagram's bytes to `out` (layout in [`crate::wire`]). Values beyond
    /// [`VARINT_MAX`] are clamped (packet numbers never get there).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&wire::prefix_bytes(Kind::Ack, self.session_id));
        put_varint(out, self.largest);
        put_varint(out, self.ack_delay_ns / 1000);
        put_varint(out, self.delivered_below);
        let ranges = self.ranges.as_slice();
        out.push(ranges.len().saturating_sub(1) as u8);
        let Some(first) = ranges.first() else {
            // No range: an empty first range at `largest` keeps the frame well-formed.
            put_varint(out, 0);
            return;
        };
        put_varint(out, first.largest - first.smallest);
        let mut previous_smallest = first.smallest;
        for r in &ranges[1..] {
            put_varint(out, previous_smallest - r.largest - 2);
            put_varint(out, r.largest - r.smallest);
            previous_smallest = r.smallest;
        }
    }

    /// Bytes [`AckFrame::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let ranges = self.ranges.as_slice();
        let mut len = wire::PREFIX_LEN
            + varint_len(self.largest)
            + varint_len(self.ack_delay_ns / 1000)
            + varint_len(self.delivered_below)
            + 1;
        let Some(first) = ranges.first() else {
            return len + 1;
        };
        len += varint_len(first.largest - first.smallest);
        let mut previous_smallest = first.smallest;
        for r in &ranges[1..] {
            len +=
                varint_len(previous_smallest - r.largest - 2) + varint_len(r.largest - r.smallest);
            previous_smallest = r.smallest;
        }
        len
    }

    /// The Ack in `buf`, or why it is not one. Never panics.
    pub fn decode(buf: &[u8]) -> Result<AckFrame, WireError> {
        match wire::parse(buf)? {
            Message::Ack(view) => Ok(view.frame()),
            other => Err(WireError::UnexpectedKind(other.kind())),
        }
    }
}

impl RDataFrame {
    /// Writes the 64-byte header into `buf[..64]`, leaving the padding after it untouched.
    ///
    /// # Panics
    ///
    /// If `buf.len() < RDATA_HEADER_LEN`.
    pub fn write(&self, buf: &mut [u8]) {
        let header = &mut buf[..RDATA_HEADER_LEN];
        header[..8].copy_from_slice(&wire::prefix_bytes(Kind::RData, self.session_id));
        for (i, field) in [
            self.packet_number,
            self.message_id,
            self.first_send_ns,
            self.send_ns,
            self.skip_below,
            self.acked_below,
        ]
        .into_iter()
        .enumerate()
        {
            header[8 + 8 * i..16 + 8 * i].copy_from_slice(&field.to_be_bytes());
        }
        header[56..58].copy_from_slice(&self.transmission.to_be_bytes());
        header[58..64].fill(0);
    }

    /// The frame in `buf` (an RData of any length ≥ 64), or why it is not one. Never panics.
    pub fn decode(buf: &[u8]) -> Result<RDataFrame, WireError> {
        match wire::parse(buf)? {
            Message::RData { frame, .. } => Ok(frame),
            other => Err(WireError::UnexpectedKind(other.kind())),
        }
    }
}

/// Bytes a QUIC varint of `v` takes (1, 2, 4 or 8).
pub const fn varint_len(v: u64) -> usize {
    if v < 1 << 6 {
        1
    } else if v < 1 << 14 {
        2
    } else if v < 1 << 30 {
        4
    } else {
        8
    }
}

/// Appends `v` (clamped to [`VARINT_MAX`]) as a QUIC variable-length integer (RFC 9000 §16).
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    let v = v.min(VARINT_MAX);
    match varint_len(v) {
        1 => out.push(v as u8),
        2 => out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes()),
        4 => out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v | 0xC000_0000_0000_0000).to_be_bytes()),
    }
}

/// Reads a QUIC varint at `*at`, advancing it; `None` when the bytes run out.
pub fn get_varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let first = *buf.get(*at)?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(*at..at.checked_add(len)?)?;
    let mut v = u64::from(first & 0x3F);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    *at += len;
    Some(v)
}

/// A parsed Ack, borrowed from its datagram, its ranges already checked: [`AckView::frame`]
/// decodes it without failing. Only the bytes are kept, so [`crate::wire::Message`] stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckView<'a> {
    session_id: u32,
    /// The Ack's bytes as received, up to the end of its last range (trailing bytes excluded).
    bytes: &'a [u8],
}

impl<'a> AckView<'a> {
    /// The decoded frame.
    pub fn frame(&self) -> AckFrame {
        // The bytes were checked by `parse`; decoding them again cannot fail.
        decode_ack(self.session_id, self.bytes).map_or(
            AckFrame {
                session_id: self.session_id,
                largest: 0,
                ack_delay_ns: 0,
                delivered_below: 0,
                ranges: AckRanges::default(),
            },
            |(frame, _)| frame,
        )
    }

    /// The Ack's bytes up to the end of its last range.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn session_id(&self) -> u32 {
        self.session_id
    }

    /// Parses the Ack in `buf` (whose prefix the caller checked). Never panics.
    pub(crate) fn parse(session_id: u32, buf: &'a [u8]) -> Result<AckView<'a>, WireError> {
        let (_, end) = decode_ack(session_id, buf)?;
        Ok(AckView {
            session_id,
            bytes: buf.get(..end).unwrap_or(buf),
        })
    }
}

/// Decodes an Ack datagram: the frame and the offset where its last range ends.
fn decode_ack(session_id: u32, buf: &[u8]) -> Result<(AckFrame, usize), WireError> {
    let short = WireError::TooShort {
        what: "Ack",
        need: ACK_MIN_LEN,
        got: buf.len(),
    };
    let mut at = wire::PREFIX_LEN;
    let next = |at: &mut usize| get_varint(buf, at).ok_or(short);
    let largest = next(&mut at)?;
    let ack_delay_us = next(&mut at)?;
    let delivered_below = next(&mut at)?;
    let extra = usize::from(*buf.get(at).ok_or(short)?);
    at += 1;
    if extra >= MAX_ACK_RANGES {
        return Err(WireError::BadField("Ack.range_count"));
    }
    let first_len = next(&mut at)?;
    let mut smallest = largest
        .checked_sub(first_len)
        .ok_or(WireError::BadField("Ack.first_range"))?;
    let mut ranges = AckRanges::default();
    ranges.push(smallest, largest);
    for _ in 0..extra {
        let gap = next(&mut at)?;
        let len = next(&mut at)?;
        let top = smallest
            .checked_sub(gap)
            .and_then(|v| v.checked_sub(2))
            .ok_or(WireError::BadField("Ack.gap"))?;
        smallest = top
            .checked_sub(len)
            .ok_or(WireError::BadField("Ack.range"))?;
        ranges.push(smallest, top);
    }
    Ok((
        AckFrame {
            session_id,
            largest,
            ack_delay_ns: ack_delay_us.saturating_mul(1000),
            delivered_below,
            ranges,
        },
        at,
    ))
}
