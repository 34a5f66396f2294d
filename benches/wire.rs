//! Criterion benchmarks of the per-datagram wire hot paths: header encode, header decode,
//! and the generic parser on a Data datagram.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use udplab::wire::{self, DataHeader, Kind};

/// A typical payload size: fits a 1500-byte Ethernet MTU with IPv4/IPv6 and UDP headers.
const DATAGRAM_LEN: usize = 1400;

fn sample_header() -> DataHeader {
    DataHeader {
        session_id: 0x0102_0304,
        seq: 123_456_789,
        send_ns: 1_700_000_000_000_000_000,
    }
}

fn sample_datagram() -> Vec<u8> {
    let mut buf = vec![0u8; DATAGRAM_LEN];
    sample_header().write(Kind::Data, &mut buf);
    buf
}

fn encode_data_header(c: &mut Criterion) {
    let mut buf = vec![0u8; DATAGRAM_LEN];
    let mut header = sample_header();
    c.bench_function("encode_data_header", |b| {
        b.iter(|| {
            // A changing sequence number, as in a real send loop.
            header.seq = header.seq.wrapping_add(1);
            black_box(header).write(Kind::Data, black_box(&mut buf[..]));
        })
    });
    black_box(&buf);
}

fn decode_data_header(c: &mut Criterion) {
    let buf = sample_datagram();
    c.bench_function("decode_data_header", |b| {
        b.iter(|| DataHeader::parse_data(black_box(&buf[..])))
    });
}

fn parse_message_data(c: &mut Criterion) {
    let buf = sample_datagram();
    c.bench_function("parse_message_data", |b| {
        b.iter(|| wire::parse(black_box(&buf[..])))
    });
}

criterion_group!(
    benches,
    encode_data_header,
    decode_data_header,
    parse_message_data
);
criterion_main!(benches);
