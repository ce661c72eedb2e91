//! Header rewrite and serialisation by splicing, on the Lync-shaped fixtures: the edits
//! the proxy makes to a request from a federated partner relayed to the pool (our Via on
//! top, `received`, Max-Forwards−1, Record-Route for dialog-creating requests, the trust
//! header stripped and ours added) and to the response on its way back (our Via popped).

use std::fmt;
use std::hint::black_box;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};
use sipedge::proxy::rewrite::{rewrite_request, rewrite_response, RequestEdits, ResponseEdits};
use sipedge::sip::build::received_edit;
use sipedge::sip::{fixtures, HeaderName, Message};

const TRUST: &str = "ms-edge-proxy-message-trust: ms-source-type=DirectPartner;ms-ep-fqdn=sip.fabrikam.test;ms-source-verified-user=verified;ms-source-network=federation";

/// The edits the proxy builds for an inbound request leaving toward the pool over TLS,
/// applied: the request as it would be relayed.
fn relay(m: &Message, source: SocketAddr) -> BytesMut {
    let record_route = if m.method().creates_dialog() {
        vec![
            "<sip:edge-int.contoso.test:5061;transport=tls;lr>".to_string(),
            "<sip:accessedge.contoso.test:5061;transport=tls;lr>".to_string(),
        ]
    } else {
        Vec::new()
    };
    let received = received_edit(m, source);
    let edits = RequestEdits {
        via: &"SIP/2.0/TLS edge-int.contoso.test:5061;branch=z9hG4bKse1c9a4f0b2d6e8a.0;rport",
        received: received
            .as_ref()
            .map(|(at, t)| (*at, t as &dyn fmt::Display)),
        record_route,
        pop_routes: &[],
        remove: &[HeaderName::MsTrust],
        add: &[&TRUST],
        add_content_length: true,
    };
    rewrite_request(m, &edits)
}

fn rewrite(c: &mut Criterion) {
    let source: SocketAddr = "198.51.100.7:51734".parse().expect("literal");
    let mut group = c.benchmark_group("rewrite");
    for (name, bytes) in fixtures::ALL {
        let m = Message::parse(Bytes::from_static(bytes), false).expect("fixture parses");
        if m.is_request() {
            // What is measured is what the proxy would send: check it once.
            let out = relay(&m, source).freeze();
            let relayed = Message::parse(out, false).expect("rewritten request parses");
            assert_eq!(relayed.via_count(), m.via_count() + 1, "{name}");
            assert_eq!(relayed.max_forwards(), Ok(Some(69)), "{name}");
            assert_eq!(relayed.values(HeaderName::MsTrust).len(), 1, "{name}");
            group.bench_function(format!("request {name}: edits + splice"), |b| {
                b.iter(|| relay(black_box(&m), source).freeze())
            });
        } else {
            let out = rewrite_response(&m, &ResponseEdits::default()).freeze();
            let relayed = Message::parse(out, false).expect("rewritten response parses");
            assert_eq!(relayed.via_count(), m.via_count() - 1, "{name}");
            group.bench_function(format!("response {name}: pop our Via"), |b| {
                b.iter(|| rewrite_response(black_box(&m), &ResponseEdits::default()).freeze())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, rewrite);
criterion_main!(benches);
