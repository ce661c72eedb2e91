//! Framing and parsing cost of Lync-shaped messages (`sip::fixtures`): the first stages
//! of every relayed message (scan a stream buffer for a whole message, then index its
//! headers and check what a proxy needs).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sipedge::sip::framing::{scan, FrameLimits, Scan};
use sipedge::sip::{fixtures, Message};

fn framing(c: &mut Criterion) {
    let limits = FrameLimits::default();
    let mut group = c.benchmark_group("framing");
    for (name, bytes) in fixtures::ALL {
        assert_eq!(scan(bytes, &limits), Ok(Scan::Message { len: bytes.len() }));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("scan {name} ({} bytes)", bytes.len()), |b| {
            b.iter(|| scan(black_box(bytes), &limits))
        });
        let wire = Bytes::from_static(bytes);
        group.bench_function(format!("scan + index + validate {name}"), |b| {
            b.iter(|| {
                let m = Message::parse(black_box(wire.clone()), false).expect("fixture parses");
                let valid = if m.is_request() {
                    m.validate_request()
                } else {
                    m.validate_response()
                };
                black_box(valid.is_ok())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
