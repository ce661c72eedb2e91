//! One MESSAGE round trip through the real edge on loopback (client → edge → pool → edge
//! → client), over UDP and over TCP, with a window of requests in flight. The time per
//! iteration is the relay's throughput cost with the client and pool on the same cores.

mod support;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sipedge::config::TraceSettings;
use sipedge::transport::Transport;
use support::Relay;

fn relay(c: &mut Criterion) {
    let mut group = c.benchmark_group("relay MESSAGE round trip");
    group.throughput(Throughput::Elements(1));
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut relay = Relay::start(transport, || {})
            .unwrap_or_else(|e| panic!("start the {transport:?} relay: {e}"));
        // Connections, transaction table shards and caches warm before timing.
        relay.round_trips(500);
        group.bench_function(format!("{transport:?}, window {}", support::WINDOW), |b| {
            b.iter_custom(|iters| relay.round_trips(iters))
        });
        assert_eq!(relay.lost, 0, "{transport:?}: requests without an answer");
    }
    group.finish();
    // What `[trace]` costs the relay: nothing recorded, the default ring, ring and pcap.
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut group = c.benchmark_group("relay MESSAGE round trip, [trace]");
    group.throughput(Throughput::Elements(1));
    let defaults = TraceSettings::default();
    for (name, trace) in [
        (
            "off",
            TraceSettings {
                ring_bytes: 0,
                ..defaults.clone()
            },
        ),
        ("ring", defaults.clone()),
        (
            "ring+pcap",
            TraceSettings {
                pcap: Some(dir.path().join("relay.pcap")),
                ..defaults.clone()
            },
        ),
    ] {
        let mut relay = Relay::start_traced(Transport::Udp, || {}, Some(trace))
            .unwrap_or_else(|e| panic!("start the relay: {e}"));
        relay.round_trips(500);
        group.bench_function(format!("Udp, {name}"), |b| {
            b.iter_custom(|iters| relay.round_trips(iters))
        });
        assert_eq!(relay.lost, 0, "{name}: requests without an answer");
    }
    group.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
