//! What recording costs the per-message path: `Tap::capture` with the ring only and with
//! pcap on (the hot-path side: a clone of the bytes' handle and a channel push; the writer
//! thread does the rest), against the branch a transport pays when nothing records.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use sipedge::config::TraceSettings;
use sipedge::peer::{Interface, Transport};
use sipedge::trace::{Direction, Tap};

fn capture(tap: Option<&Arc<Tap>>, msg: &Bytes, a: SocketAddr) {
    if let Some(t) = tap {
        t.capture(
            Direction::Received,
            Interface::External,
            Transport::Tls,
            a,
            a,
            msg,
        );
    }
}

fn bench(c: &mut Criterion) {
    let msg = Bytes::from_static(sipedge::sip::fixtures::MESSAGE);
    let a: SocketAddr = "127.0.0.1:5061".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let off = TraceSettings {
        ring_bytes: 0,
        ..TraceSettings::default()
    };
    let ring = TraceSettings::default();
    let pcap = TraceSettings {
        pcap: Some(dir.path().join("bench.pcap")),
        ..TraceSettings::default()
    };
    // Batches below the channel's bound, so every capture is queued (none dropped):
    // "enqueue" times the transport's side alone (the flush is outside the timing),
    // "written" until the writer has written the batch too (pcap, ring); the writer naps
    // up to 10 ms when idle, so "written" includes up to 10 µs of nap per message.
    const BATCH: u64 = 1000;
    let mut g = c.benchmark_group("trace");
    for (name, settings) in [("off", off), ("ring", ring), ("ring+pcap", pcap)] {
        let tap = Tap::start(&settings, "edge.test").unwrap();
        for (what, flush_timed) in [("enqueue", false), ("written", true)] {
            if tap.is_none() && flush_timed {
                continue;
            }
            g.bench_function(format!("{name}/{what}"), |b| {
                b.iter_custom(|iters| {
                    let mut took = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(BATCH);
                        left -= n;
                        let began = Instant::now();
                        for _ in 0..n {
                            capture(black_box(tap.as_ref()), &msg, a);
                        }
                        if !flush_timed {
                            took += began.elapsed();
                        }
                        if let Some(t) = &tap {
                            t.flush();
                        }
                        if flush_timed {
                            took += began.elapsed();
                        }
                    }
                    took
                })
            });
        }
        if let Some(t) = &tap {
            eprintln!("{name}: {} dropped", t.dropped());
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
