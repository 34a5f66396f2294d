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
            // Capped so the ns value re-encodes to the same µs (a saturated product would not).
            ack_delay_ns: ack_delay_us.min(u64::MAX / 1000) * 1000,
            delivered_below,
            ranges,
        },
        at,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(ack: &AckFrame) -> Vec<u8> {
        let mut out = Vec::new();
        ack.encode(&mut out);
        out
    }

    #[test]
    fn an_ack_delay_beyond_u64_nanoseconds_round_trips() {
        // Found by the property below in CI: 0x418938_00000000 µs overflows u64 in ns.
        let mut bytes = vec![0x55, 0x44, wire::VERSION, 4, 0, 0, 0, 0];
        bytes.extend_from_slice(&[0xE1, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0xC0, 0x41, 0x89, 0x38, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0, 0, 0]);
        let frame = AckFrame::decode(&bytes).expect("a well-formed Ack");
        assert_eq!(frame.ack_delay_ns, u64::MAX / 1000 * 1000);
        assert_eq!(AckFrame::decode(&encoded(&frame)), Ok(frame));
    }

    #[test]
    fn ack_golden_vector_and_size() {
        let mut ranges = AckRanges::default();
        assert!(ranges.push(20_000, 20_010));
        assert!(ranges.push(19_990, 19_997));
        let ack = AckFrame {
            session_id: 7,
            largest: 20_010,
            ack_delay_ns: 250_000,
            delivered_below: 19_000,
            ranges,
        };
        let golden = [
            0x55, 0x44, 0x02, 0x04, // magic, version 2, kind Ack (4)
            0x00, 0x00, 0x00, 0x07, // session_id
            0x80, 0x00, 0x4E, 0x2A, // largest 20010 (4-byte varint)
            0x40, 0xFA, // ack delay 250 µs
            0x80, 0x00, 0x4A, 0x38, // delivered_below 19000
            0x01, // one range after the first
            0x0A, // first range 20000..=20010
            0x01, 0x07, // gap 1 (20000 - 19997 - 2), len 7: 19990..=19997
        ];
        assert_eq!(encoded(&ack), golden);
        assert_eq!(ack.encoded_len(), golden.len());
        assert_eq!(AckFrame::decode(&golden), Ok(ack));
    }

    #[test]
    fn bad_ack_ranges_are_named() {
        let mut ranges = AckRanges::default();
        assert!(ranges.push(5, 10));
        let ack = AckFrame {
            session_id: 1,
            largest: 10,
            ack_delay_ns: 0,
            delivered_below: 0,
            ranges,
        };
        let good = encoded(&ack);
        let mut first = good.clone();
        *first.last_mut().unwrap() = 11; // first range below packet number 0
        assert_eq!(
            AckFrame::decode(&first),
            Err(WireError::BadField("Ack.first_range"))
        );
        let mut count = good.clone();
        count[11] = 32;
        assert_eq!(
            AckFrame::decode(&count),
            Err(WireError::BadField("Ack.range_count"))
        );
        let mut gap = good.clone();
        gap[11] = 1;
        gap.extend_from_slice(&[0x04, 0x00]); // next top would be 5 - 4 - 2 < 0
        assert_eq!(AckFrame::decode(&gap), Err(WireError::BadField("Ack.gap")));
    }

    #[test]
    fn rdata_checks_its_fields() {
        let frame = RDataFrame {
            session_id: 3,
            packet_number: 10,
            message_id: 8,
            transmission: 1,
            first_send_ns: 1,
            send_ns: 2,
            skip_below: 8,
            acked_below: 9,
        };
        let mut buf = vec![0u8; 1200];
        frame.write(&mut buf);
        assert_eq!(RDataFrame::decode(&buf), Ok(frame));
        let mut zero = buf.clone();
        zero[56..58].fill(0);
        assert_eq!(
            RDataFrame::decode(&zero),
            Err(WireError::BadField("RData.transmission"))
        );
        let mut skip = buf.clone();
        skip[40..48].copy_from_slice(&9u64.to_be_bytes());
        assert_eq!(
            RDataFrame::decode(&skip),
            Err(WireError::BadField("RData.skip_below"))
        );
        assert_eq!(
            RDataFrame::decode(&buf[..63]),
            Err(WireError::TooShort {
                what: "RData",
                need: 64,
                got: 63
            })
        );
        assert!(matches!(
            AckFrame::decode(&buf),
            Err(WireError::UnexpectedKind(Kind::RData))
        ));
    }

    fn arb_ack() -> impl Strategy<Value = AckFrame> {
        (
            any::<u32>(),
            0..VARINT_MAX,
            any::<u32>(),
            0..VARINT_MAX,
            proptest::collection::vec((0u64..100_000, 0u64..100_000), 0..MAX_ACK_RANGES),
        )
            .prop_map(|(session_id, largest, delay_us, delivered_below, steps)| {
                // Build valid descending ranges from the top down while they fit above 0.
                let mut ranges = AckRanges::default();
                let mut top = Some(largest);
                for (i, (len, gap)) in steps.into_iter().enumerate() {
                    let Some(t) = top else { break };
                    let smallest = t.saturating_sub(len);
                    assert!(ranges.push(smallest, t) || i > 0);
                    top = smallest.checked_sub(gap + 2);
                }
                if ranges.is_empty() {
                    ranges.push(largest, largest);
                }
                AckFrame {
                    session_id,
                    largest,
                    ack_delay_ns: u64::from(delay_us) * 1000,
                    delivered_below,
                    ranges,
                }
            })
    }

    proptest! {
        #[test]
        fn ack_roundtrips_and_predicts_its_length(ack in arb_ack(), trailing in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut bytes = encoded(&ack);
            prop_assert_eq!(bytes.len(), ack.encoded_len());
            prop_assert!(bytes.len() <= ACK_MAX_LEN);
            prop_assert_eq!(AckFrame::decode(&bytes), Ok(ack));
            bytes.extend_from_slice(&trailing);
            prop_assert_eq!(AckFrame::decode(&bytes), Ok(ack), "trailing bytes are ignored");
            for cut in 0..ack.encoded_len() {
                prop_assert!(AckFrame::decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn rdata_roundtrips_with_padding(
            v in any::<[u64; 5]>(),
            session_id in any::<u32>(),
            transmission in 1u16..,
            skip in any::<u64>(),
            pad in 0usize..1200,
        ) {
            let frame = RDataFrame {
                session_id,
                packet_number: v[0],
                message_id: v[1],
                transmission,
                first_send_ns: v[2],
                send_ns: v[3],
                skip_below: skip.min(v[1]),
                acked_below: v[4],
            };
            let mut buf = vec![0xA5u8; RDATA_HEADER_LEN + pad];
            frame.write(&mut buf);
            prop_assert_eq!(RDataFrame::decode(&buf), Ok(frame));
            prop_assert_eq!(wire::parse(&buf), Ok(Message::RData { frame, len: buf.len() }));
            let mut emitted = Vec::new();
            Message::RData { frame, len: buf.len() }.emit(&mut emitted);
            prop_assert_eq!(&emitted[..], &buf[..RDATA_HEADER_LEN]);
        }

        #[test]
        fn arbitrary_acks_and_rdata_never_panic(kind in 3u8..=4, rest in proptest::collection::vec(any::<u8>(), 0..700)) {
            let mut bytes = vec![0x55, 0x44, wire::VERSION, kind];
            bytes.extend_from_slice(&rest);
            match wire::parse(&bytes) {
                Ok(Message::Ack(view)) => {
                    // What parses re-encodes to the same bytes and decodes to the same frame.
                    let frame = view.frame();
                    prop_assert!(!frame.ranges.is_empty());
                    prop_assert!(frame.ranges.as_slice().iter().all(|r| r.smallest <= r.largest && r.largest <= frame.largest));
                    let again = encoded(&frame);
                    prop_assert_eq!(AckFrame::decode(&again), Ok(frame));
                }
                Ok(Message::RData { frame, .. }) => {
                    prop_assert!(frame.transmission >= 1 && frame.skip_below <= frame.message_id);
                }
                Ok(other) => prop_assert!(false, "kind {} parsed as {:?}", kind, other.kind()),
                Err(_) => {}
            }
        }
    }
}
