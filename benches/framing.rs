//! Framing and parsing cost of a Lync-shaped MESSAGE: the first stages of every relayed
//! message (scan for a whole message, then index its headers).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use sipedge::sip::framing::{scan, FrameLimits};
use sipedge::sip::Message;

const MESSAGE: &str = "MESSAGE sip:bob@contoso.test SIP/2.0\r\n\
Via: SIP/2.0/TLS 10.0.0.5:5061;branch=z9hG4bK4e2d.b1c0d5e3a8f0;ms-received-port=5061;ms-received-cid=6DA00\r\n\
Max-Forwards: 70\r\n\
From: \"Fay Fabrikam\" <sip:fay@fabrikam.test>;tag=8f21c0a6b1;epid=5d1a2b3c4d\r\n\
To: <sip:bob@contoso.test>\r\n\
Call-ID: 9c0f1e2d3c4b5a69788796a5b4c3d2e1\r\n\
CSeq: 1 MESSAGE\r\n\
Contact: <sip:fay@fabrikam.test;opaque=user:epid:AbCdEfGh;gruu>\r\n\
User-Agent: UCCAPI/15.0.4569.1503 OC/15.0.4569.1503 (Microsoft Lync)\r\n\
ms-edge-proxy-message-trust: ms-source-type=DirectPartner;ms-ep-fqdn=sip.fabrikam.test;ms-source-verified-user=verified;ms-source-network=federation\r\n\
Supported: ms-dialog-route-set-update\r\n\
Content-Type: text/plain; charset=UTF-8\r\n\
Content-Length: 26\r\n\
\r\n\
Hello from fabrikam.test!\n";

fn framing(c: &mut Criterion) {
    let bytes = Bytes::from_static(MESSAGE.as_bytes());
    let limits = FrameLimits::default();
    c.bench_function("scan a Lync MESSAGE", |b| {
        b.iter(|| scan(std::hint::black_box(&bytes), &limits))
    });
    c.bench_function("scan + index a Lync MESSAGE", |b| {
        b.iter(|| {
            let m = Message::parse(std::hint::black_box(bytes.clone()), false).expect("parses");
            std::hint::black_box(m.top_via().map(|v| v.branch().map(str::len)));
        })
    });
}

criterion_group!(benches, framing);
criterion_main!(benches);
