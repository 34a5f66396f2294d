//! Per-test counts of the TOS bytes and TTLs Data arrived with, summarised against the marking
//! the sender announced: how many kept their DSCP, how many were re-marked, which TTLs showed.

use crate::net::marking::{dscp_of, ecn_of};
use crate::summary::{MarkingSummary, TosCount, TtlCount};
use crate::wire::HelloMarking;

/// Two 256-entry tables, one per byte value: one increment each per datagram.
#[derive(Debug, Clone)]
pub struct MarkingCounter {
    tos: Box<[u64; 256]>,
    ttl: Box<[u64; 256]>,
    tos_unknown: u64,
    ttl_unknown: u64,
}

impl Default for MarkingCounter {
    fn default() -> Self {
        MarkingCounter {
            tos: Box::new([0; 256]),
            ttl: Box::new([0; 256]),
            tos_unknown: 0,
            ttl_unknown: 0,
        }
    }
}

impl MarkingCounter {
    /// Heap bytes one counter holds (for the receiver's memory budget).
    pub const MEMORY: u64 = 2 * 256 * 8;

    /// Counts one datagram's TOS byte and TTL (None: not reported by the kernel).
    #[inline]
    pub fn record(&mut self, tos: Option<u8>, ttl: Option<u8>) {
        match tos {
            Some(t) => self.tos[usize::from(t)] += 1,
            None => self.tos_unknown += 1,
        }
        match ttl {
            Some(t) => self.ttl[usize::from(t)] += 1,
            None => self.ttl_unknown += 1,
        }
    }

    /// The counts against what the sender said it sent.
    pub fn summary(&self, sent: HelloMarking) -> MarkingSummary {
        let want = dscp_of(sent.tos.unwrap_or(0));
        let mut out = MarkingSummary {
            tos_sent: sent.tos,
            ttl_sent: sent.ttl,
            tos_unknown: self.tos_unknown,
            ttl_unknown: self.ttl_unknown,
            ..MarkingSummary::default()
        };
        for (tos, &count) in (0..=u8::MAX).zip(self.tos.iter()) {
            if count == 0 {
                continue;
            }
            if dscp_of(tos) == want {
                out.dscp_kept += count;
            } else {
                out.dscp_remarked += count;
            }
            out.tos_received.push(TosCount {
                tos,
                dscp: dscp_of(tos),
                ecn: ecn_of(tos),
                count,
            });
        }
        out.ttl_received = (0..=u8::MAX)
            .zip(self.ttl.iter())
            .filter(|(_, c)| **c > 0)
            .map(|(ttl, &count)| TtlCount { ttl, count })
            .collect();
        out
    }
}

impl MarkingSummary {
    /// Adds another flow's counts (flows of one run share the sender's marking).
    pub fn merge(&mut self, other: &MarkingSummary) {
        self.tos_sent = self.tos_sent.or(other.tos_sent);
        self.ttl_sent = self.ttl_sent.or(other.ttl_sent);
        self.dscp_kept += other.dscp_kept;
        self.dscp_remarked += other.dscp_remarked;
        self.tos_unknown += other.tos_unknown;
        self.ttl_unknown += other.ttl_unknown;
        for t in &other.tos_received {
            match self.tos_received.iter_mut().find(|x| x.tos == t.tos) {
                Some(x) => x.count += t.count,
                None => self.tos_received.push(*t),
            }
        }
        self.tos_received.sort_by_key(|t| t.tos);
        for t in &other.ttl_received {
            match self.ttl_received.iter_mut().find(|x| x.ttl == t.ttl) {
                Some(x) => x.count += t.count,
                None => self.ttl_received.push(*t),
            }
        }
        self.ttl_received.sort_by_key(|t| t.ttl);
    }

    /// Datagrams whose TOS byte was seen.
    pub fn tos_seen(&self) -> u64 {
        self.dscp_kept + self.dscp_remarked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_and_remarked_compare_the_dscp_only() {
        let mut c = MarkingCounter::default();
        for _ in 0..5 {
            c.record(Some(0xb8), Some(63)); // EF, Not-ECT
        }
        c.record(Some(0xbb), Some(63)); // EF with CE: still EF
        c.record(Some(0x20), Some(62)); // CS1: re-marked, one hop more
        c.record(Some(0x00), None); // bleached
        c.record(None, Some(63));
        let s = c.summary(HelloMarking {
            tos: Some(0xb8),
            ttl: Some(64),
        });
        assert_eq!((s.dscp_kept, s.dscp_remarked, s.tos_unknown), (6, 2, 1));
        assert_eq!(
            (s.tos_sent, s.ttl_sent, s.ttl_unknown),
            (Some(0xb8), Some(64), 1)
        );
        let tos: Vec<(u8, u8, u8, u64)> = s
            .tos_received
            .iter()
            .map(|t| (t.tos, t.dscp, t.ecn, t.count))
            .collect();
        assert_eq!(
            tos,
            [
                (0x00, 0, 0, 1),
                (0x20, 8, 0, 1),
                (0xb8, 46, 0, 5),
                (0xbb, 46, 3, 1)
            ]
        );
        let ttl: Vec<(u8, u64)> = s.ttl_received.iter().map(|t| (t.ttl, t.count)).collect();
        assert_eq!(ttl, [(62, 1), (63, 7)]);
    }

    #[test]
    fn without_a_sent_marking_cs0_is_expected() {
        let mut c = MarkingCounter::default();
        c.record(Some(0), Some(64));
        c.record(Some(0x02), Some(64)); // ECT(0): still DSCP 0
        c.record(Some(0x28), Some(64));
        let s = c.summary(HelloMarking::default());
        assert_eq!((s.dscp_kept, s.dscp_remarked), (2, 1));
        assert_eq!(s.tos_seen(), 3);
    }

    #[test]
    fn flows_merge_by_value() {
        let mut a = MarkingCounter::default();
        a.record(Some(0xb8), Some(63));
        let mut b = MarkingCounter::default();
        b.record(Some(0xb8), Some(62));
        b.record(Some(0x20), Some(63));
        let sent = HelloMarking {
            tos: Some(0xb8),
            ttl: None,
        };
        let mut total = a.summary(sent);
        total.merge(&b.summary(sent));
        assert_eq!((total.dscp_kept, total.dscp_remarked), (2, 1));
        assert_eq!(
            total
                .tos_received
                .iter()
                .map(|t| (t.tos, t.count))
                .collect::<Vec<_>>(),
            [(0x20, 1), (0xb8, 2)]
        );
        assert_eq!(
            total
                .ttl_received
                .iter()
                .map(|t| (t.ttl, t.count))
                .collect::<Vec<_>>(),
            [(62, 1), (63, 2)]
        );
    }
}
