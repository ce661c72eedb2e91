//! Lync-shaped messages (`benches/fixtures/`), shared by the benches and the tests so a
//! bench cannot silently measure a parse error.
//!
//! The files are written by `benches/fixtures/generate.py` (CRLF line ends, exact
//! Content-Length); the tests below check each one frames and parses whole.

/// An IM as a federated Lync client sends it: TLS-DSK Authentication-Info, GRUU Contact with
/// `+sip.instance`, the `Supported` list, `ms-text-format`/`ms-im-format`, a trust header.
pub const MESSAGE: &[u8] = include_bytes!("../../benches/fixtures/message.sip");
/// A federated audio+video INVITE with the full SDP Lync emits (ICE candidates, IPv6
/// candidates, SRTP keys, the codec list).
pub const INVITE: &[u8] = include_bytes!("../../benches/fixtures/invite.sip");
/// A presence SUBSCRIBE with a batch subscription (`application/msrtc-adrl-categorylist+xml`).
pub const SUBSCRIBE: &[u8] = include_bytes!("../../benches/fixtures/subscribe.sip");
/// The pool's 200 OK to the INVITE: two Via values (the edge's on top) and the
/// Record-Route set.
pub const OK: &[u8] = include_bytes!("../../benches/fixtures/ok.sip");

/// Every fixture with a short name for bench labels.
pub const ALL: [(&str, &[u8]); 4] = [
    ("MESSAGE", MESSAGE),
    ("INVITE", INVITE),
    ("SUBSCRIBE", SUBSCRIBE),
    ("200 OK", OK),
];

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::proxy::request_facts;
    use crate::sip::framing::{scan, FrameLimits, Scan};
    use crate::sip::{HeaderName, Message};

    fn parse(bytes: &'static [u8]) -> Message {
        Message::parse(Bytes::from_static(bytes), false).expect("fixture parses")
    }

    #[test]
    fn every_fixture_frames_as_one_whole_message_and_validates() {
        for (name, bytes) in ALL {
            assert_eq!(
                scan(bytes, &FrameLimits::default()),
                Ok(Scan::Message { len: bytes.len() }),
                "{name}"
            );
            let m = parse(bytes);
            let valid = if m.is_request() {
                m.validate_request()
            } else {
                m.validate_response()
            };
            assert_eq!(valid, Ok(()), "{name}");
            assert_eq!(m.body_range().end, bytes.len(), "{name}");
            assert!(!m.body().is_empty(), "{name} has a body");
        }
    }

    #[test]
    fn fixtures_carry_what_the_decision_and_rewrite_read() {
        let m = parse(MESSAGE);
        let f = request_facts(&m);
        assert_eq!(
            (f.method, f.from_host, f.uri_host),
            ("MESSAGE", "fabrikam.test", "contoso.test")
        );
        assert!(f.trust_header.is_some());
        assert_eq!(m.header_value(HeaderName::ContentType).as_deref(), Some("text/plain; charset=UTF-8;msgr=WAAtAE0ATQBTAC0ASQBNAC0ARgBvAHIAbQBhAHQAOgAgAEYATgA9AFMAZQBnAG8AZQAlADIAMABVAEkAOwAgAEUARgA9ADsAIABDAE8APQAwADsAIABDAFMAPQAwADsAIABQAEYAPQAwAA0ACgANAAoADQAKAA"));

        let m = parse(INVITE);
        let f = request_facts(&m);
        assert!(f.media.audio && f.media.video, "{:?}", f.media);
        assert!(f.is_dialog_creating());

        let m = parse(SUBSCRIBE);
        assert_eq!(request_facts(&m).method, "SUBSCRIBE");

        let m = parse(OK);
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.values(HeaderName::Via).len(), 2);
        assert_eq!(m.values(HeaderName::RecordRoute).len(), 3);
        assert_eq!(m.cseq().map(|c| c.method_str), Some("INVITE"));
    }
}
