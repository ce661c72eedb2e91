//! The entry points the cargo-fuzz targets in `fuzz/` call, kept in the library so that
//! `cargo test` replays the committed corpus and every crash input through the same code.
//!
//! Each function takes arbitrary bytes and panics only when an invariant of the code under
//! test is broken (that panic is the finding); bad input itself must never panic.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;

use bytes::Bytes;

use crate::config::Snapshot;
use crate::policy::{self, DnsFacts, SrvAnswer, SrvTarget};
use crate::proxy::rewrite::{rewrite_request, RequestEdits};
use crate::proxy::request_facts;
use crate::sip::framing::{scan, FrameLimits, Scan};
use crate::sip::{HeaderName, Message};
use crate::transport::{Interface, Peer, PeerIdentity, Transport};

/// Stream framing over arbitrary chunks: the first byte picks the chunk size, the rest is
/// fed to a buffer the way a TCP reader would, and every frame taken must lie inside it.
pub fn framing(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    let limits = FrameLimits {
        max_message_size: 4096,
        max_headers: 64,
    };
    let mut buf: Vec<u8> = Vec::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        // Bounded by the buffer: each frame removes at least one byte.
        while !buf.is_empty() {
            match scan(&buf, &limits) {
                Ok(Scan::Incomplete) => break,
                Ok(Scan::KeepAlive { len, .. }) | Ok(Scan::Message { len }) => {
                    assert!(len > 0 && len <= buf.len(), "frame {len} of {}", buf.len());
                    if let Ok(Scan::Message { .. }) = scan(&buf, &limits) {
                        // A framed message parses as a stream message or is refused, never panics.
                        let _ = Message::parse(Bytes::copy_from_slice(&buf[..len]), false);
                    }
                    buf.drain(..len);
                }
                Err(_) => {
                    // The connection would be closed: start over with the next chunk.
                    buf.clear();
                }
            }
        }
    }
}

/// Parse → relay rewrite (serialise) → parse: a request the edge accepts must come out
/// of the rewrite as a message that parses again, with the same start line, the same
/// headers (plus ours) and the same body.
pub fn roundtrip(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let datagram = first & 1 == 1;
    let Ok(m) = Message::parse(Bytes::copy_from_slice(rest), datagram) else {
        return;
    };
    if !m.is_request() || m.validate_request().is_err() {
        return;
    }
    let received = m
        .first_value(HeaderName::Via)
        .map(|(_, r)| (r.end, &";received=127.0.0.1;rport=5060" as &dyn std::fmt::Display));
    let edits = RequestEdits {
        via: &"SIP/2.0/UDP [::1]:5060;branch=z9hG4bKfuzz",
        received,
        record_route: vec!["<sip:edge.contoso.test;lr>".to_string()],
        add_content_length: true,
        ..RequestEdits::default()
    };
    let out = rewrite_request(&m, &edits).freeze();
    let again = match Message::parse(out.clone(), false) {
        Ok(again) => again,
        Err(e) => panic!("rewritten request does not parse ({e}): {out:?}"),
    };
    assert!(again.validate_request().is_ok(), "rewritten: {out:?}");
    assert_eq!(again.method_str(), m.method_str());
    assert_eq!(
        again.uri_range().map(|r| again.text(r).to_string()),
        m.uri_range().map(|r| m.text(r).to_string())
    );
    assert_eq!(again.call_id(), m.call_id());
    assert_eq!(again.via_count(), m.via_count() + 1);
    assert_eq!(again.body(), m.body());
    let top = again.top_via().map(|v| (v.host.to_string(), v.port));
    assert_eq!(top, Some(("::1".to_string(), Some(5060))));
    let unknown = |msg: &Message| -> Vec<Vec<u8>> {
        msg.headers()
            .iter()
            .filter(|h| h.name == HeaderName::Other)
            .map(|h| msg.bytes()[h.line.clone()].to_vec())
            .collect()
    };
    assert_eq!(unknown(&again), unknown(&m), "unknown headers changed");
}

/// The decision on a parsed request from a fuzzed peer, against the lab snapshot: the
/// first byte picks interface and transport, the bytes up to the first NUL are the peer's
/// certificate names (comma-separated), the rest is the message.
pub fn decide(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (names, msg) = match rest.iter().position(|b| *b == 0) {
        Some(nul) => (&rest[..nul], &rest[nul + 1..]),
        None => (&[][..], rest),
    };
    let names = String::from_utf8_lossy(names);
    let peer = Peer {
        interface: if first & 1 == 0 {
            Interface::External
        } else {
            Interface::Internal
        },
        transport: match (first >> 1) % 3 {
            0 => Transport::Udp,
            1 => Transport::Tcp,
            _ => Transport::Tls,
        },
        addr: SocketAddr::from(([127, 0, 0, 9], 40000)),
        identity: PeerIdentity::new(names.split(',')),
    };
    let Ok(m) = Message::parse(Bytes::copy_from_slice(msg), true) else {
        return;
    };
    if !m.is_request() {
        return;
    }
    let facts = request_facts(&m);
    // A lab config that no longer builds would make this target test nothing.
    let Some(snap) = lab_snapshot() else {
        panic!("the lab snapshot does not build");
    };
    let dns = match policy::dns_needed(&facts, &peer, snap) {
        Some(q) => lab_dns().with_srv(q.domain(), lab_answer(q.domain())),
        None => lab_dns(),
    };
    let decision = policy::decide(&facts, &peer, snap, &dns);
    if let Some(r) = decision.rejection() {
        assert!(
            (300..=699).contains(&r.status),
            "rejection status {}",
            r.status
        );
    }
}

/// The lab's edge with the federation sections `config/lab.toml` ships.
fn lab_snapshot() -> Option<&'static Snapshot> {
    static SNAP: OnceLock<Option<Snapshot>> = OnceLock::new();
    SNAP.get_or_init(|| {
        let text = format!(
            "{}\n{}",
            crate::config::TCP_EDGE,
            crate::config::lab_federation_sections()
        );
        Snapshot::from_toml(&text, Path::new(".")).ok()
    })
    .as_ref()
}


/// DESIGN's `_sipfederationtls._tcp` records.
fn lab_dns() -> DnsFacts {
    [
        "fabrikam.test",
        "northwind.test",
        "adatum.test",
        "msn.com",
        "live.com",
        "tailspin.test",
    ]
    .iter()
    .fold(DnsFacts::none(), |d, dom| d.with_srv(dom, lab_answer(dom)))
}

/// The SRV answer the lab zone gives for a domain; unknown domains have none.
fn lab_answer(domain: &str) -> SrvAnswer {
    let target = match domain {
        "msn.com" | "live.com" => "federation.messenger.msn.com".to_string(),
        "tailspin.test" => "sipfed.online.lync.com".to_string(),
        "fabrikam.test" | "northwind.test" | "adatum.test" => format!("sip.{domain}"),
        _ => return SrvAnswer::NoRecords,
    };
    SrvAnswer::Records(vec![SrvTarget::new(0, 0, 5061, &target)])
}
