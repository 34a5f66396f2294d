//! Criterion benchmarks of `--key`'s per-datagram cost: signing a Data datagram in place and
//! opening it on receipt (HMAC-SHA256, 16-byte tag), at the smallest common and a typical size.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use udplab::auth::Key;
use udplab::wire::{DataHeader, Kind};

/// 64 B: small-datagram packet-rate tests; 1200 B: udplab's default `--size`.
const SIZES: [usize; 2] = [64, 1200];

fn key() -> Key {
    Key::from_secret(b"a benchmark key of thirty-two by", "bench").expect("a valid key")
}

fn datagram(size: usize) -> Vec<u8> {
    let mut buf = vec![0u8; size];
    DataHeader {
        session_id: 0x0102_0304,
        seq: 123_456_789,
        send_ns: 1_700_000_000_000_000_000,
    }
    .write(Kind::Data, &mut buf);
    buf
}

fn sign_and_open(c: &mut Criterion) {
    let key = key();
    let mut group = c.benchmark_group("auth");
    for size in SIZES {
        group.throughput(Throughput::Elements(1));
        let mut buf = datagram(size);
        group.bench_with_input(BenchmarkId::new("sign", size), &size, |b, _| {
            b.iter(|| key.sign(black_box(&mut buf[..])))
        });
        key.sign(&mut buf);
        group.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
            b.iter(|| key.open(black_box(&buf[..])).is_some())
        });
        group.bench_with_input(BenchmarkId::new("sign+open", size), &size, |b, _| {
            b.iter(|| {
                key.sign(black_box(&mut buf[..]));
                key.open(black_box(&buf[..])).is_some()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sign_and_open);
criterion_main!(benches);
