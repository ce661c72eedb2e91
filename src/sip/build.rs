//! Messages the edge writes itself: local responses, hop-by-hop ACK and CANCEL.
//!
//! They copy the header lines RFC 3261 §8.2.6 / §17.1.1.3 / §9.1 ask for from the request
//! byte for byte, so IPv6 hosts, compact forms and unknown parameters survive.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use bytes::{BufMut, BytesMut};

use super::header::HeaderName;
use super::message::Message;
use super::splice::Splice;

/// Extra header lines for a local response: `(name, value)`.
pub type ExtraHeaders<'a> = &'a [(&'a str, String)];

/// Ends a message being written: `Content-Type` and `Content-Length` then the body, or
/// `Content-Length: 0` and the blank line when there is none.
pub fn write_body<W: std::fmt::Write>(out: &mut W, body: Option<(&str, &str)>) {
    let _ = match body {
        Some((ctype, b)) => write!(
            out,
            "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ),
        None => out.write_str("Content-Length: 0\r\n\r\n"),
    };
}

/// Builds a response to `req`. `source` adds `received`/`rport` to the top Via
/// (RFC 3261 §18.2.1, RFC 3581); `to_tag` is added to To when it has none and status > 100.
pub fn response(
    req: &Message,
    status: u16,
    reason: &str,
    source: Option<SocketAddr>,
    to_tag: Option<&str>,
    extra: ExtraHeaders<'_>,
) -> BytesMut {
    let buf: &[u8] = req.bytes();
    let mut out = BytesMut::with_capacity(512);
    let _ = write!(out, "SIP/2.0 {status} {reason}\r\n");
    let mut first_via = true;
    for h in req.headers() {
        match h.name {
            HeaderName::Via => {
                if first_via {
                    first_via = false;
                    match source.and_then(|s| received_edit(req, s)) {
                        Some((at, text)) => {
                            let mut sp = Splice::new(&buf[h.line.clone()]);
                            sp.insert_fmt(at - h.line.start, format_args!("{text}"));
                            out.put_slice(&sp.finish());
                        }
                        None => out.put_slice(&buf[h.line.clone()]),
                    }
                } else {
                    out.put_slice(&buf[h.line.clone()]);
                }
            }
            HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                out.put_slice(&buf[h.line.clone()])
            }
            HeaderName::To => {
                let has_tag = req.to().is_some_and(|t| t.tag().is_some());
                match to_tag.filter(|_| status > 100 && !has_tag) {
                    Some(tag) => {
                        out.put_slice(&buf[h.line.start..h.value.end]);
                        let _ = write!(out, ";tag={tag}\r\n");
                    }
                    None => out.put_slice(&buf[h.line.clone()]),
                }
            }
            _ => {}
        }
    }
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.put_slice(b"Content-Length: 0\r\n\r\n");
    out
}

/// Where and what to insert into the top Via so the response can find its way back:
/// `received` when the sent-by host differs from the source IP, and the `rport` value
/// when the client asked for it (RFC 3581). `None` when nothing is needed.
pub fn received_edit(req: &Message, source: SocketAddr) -> Option<(usize, ViaReceived)> {
    let (_, range) = req.first_value(HeaderName::Via)?;
    let via = req.top_via()?;
    let ip = source.ip();
    let wants_rport = via.param("rport").is_some_and(str::is_empty);
    let sent_by_ip = via
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let received = ((sent_by_ip != Some(ip) || wants_rport) && via.param("received").is_none())
        .then_some(ip);
    if received.is_none() && !wants_rport {
        return None;
    }
    if wants_rport {
        // Replace the bare `rport` flag by `rport=<port>`: find its offset in the value.
        let value = req.text(range.clone());
        if let Some(off) = find_param_flag(value, "rport") {
            let at = range.start + off + "rport".len();
            // received goes after rport; keep one edit by appending it here.
            let rport = Some(source.port());
            return Some((at, ViaReceived { rport, received }));
        }
    }
    Some((
        range.end,
        ViaReceived {
            rport: None,
            received,
        },
    ))
}

/// The text `received_edit` inserts: `=<port>` completing a bare `rport`, then
/// `;received=<ip>` when wanted. Formatted where it is written, never as a String.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViaReceived {
    pub rport: Option<u16>,
    pub received: Option<IpAddr>,
}

impl std::fmt::Display for ViaReceived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(port) = self.rport {
            write!(f, "={port}")?;
        }
        if let Some(ip) = self.received {
            write!(f, ";received={ip}")?;
        }
        Ok(())
    }
}

/// Offset of a flag parameter (`;name` not followed by `=`) in a header value.
fn find_param_flag(value: &str, name: &str) -> Option<usize> {
    let mut off = 0;
    for part in value.split(';') {
        let trimmed = part.trim();
        if off > 0 && trimmed.eq_ignore_ascii_case(name) {
            let lead = part.len() - part.trim_start().len();
            return Some(off + lead);
        }
        off += part.len() + 1;
    }
    None
}

/// The ACK a proxy's client transaction sends for a non-2xx final response to an INVITE
/// it forwarded (RFC 3261 §17.1.1.3): same Request-URI, top Via, Route set, From,
/// Call-ID, CSeq number; To from the response.
pub fn ack_for(forwarded: &Message, response: &Message) -> Option<BytesMut> {
    let uri = forwarded.uri_range()?;
    let (_, via) = forwarded.first_value(HeaderName::Via)?;
    let cseq = forwarded.cseq()?;
    let to = response.header(HeaderName::To)?;
    let mut out = BytesMut::with_capacity(384);
    let _ = write!(
        out,
        "ACK {} SIP/2.0\r\nVia: {}\r\n",
        forwarded.text(uri),
        forwarded.text(via)
    );
    copy_lines(
        &mut out,
        forwarded,
        &[HeaderName::Route, HeaderName::From, HeaderName::CallId],
    );
    out.put_slice(&response.bytes()[to.line.clone()]);
    let _ = write!(
        out,
        "CSeq: {} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        cseq.seq
    );
    Some(out)
}

/// A CANCEL for an INVITE this edge forwarded (RFC 3261 §9.1): same Request-URI, top Via
/// (so the same branch), Route set, From, To, Call-ID and CSeq number.
pub fn cancel_for(forwarded: &Message) -> Option<BytesMut> {
    let uri = forwarded.uri_range()?;
    let (_, via) = forwarded.first_value(HeaderName::Via)?;
    let cseq = forwarded.cseq()?;
    let mut out = BytesMut::with_capacity(384);
    let _ = write!(
        out,
        "CANCEL {} SIP/2.0\r\nVia: {}\r\n",
        forwarded.text(uri),
        forwarded.text(via)
    );
    copy_lines(
        &mut out,
        forwarded,
        &[
            HeaderName::Route,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
        ],
    );
    let _ = write!(
        out,
        "CSeq: {} CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        cseq.seq
    );
    Some(out)
}

fn copy_lines(out: &mut BytesMut, m: &Message, names: &[HeaderName]) {
    for h in m.headers().iter().filter(|h| names.contains(&h.name)) {
        out.put_slice(&m.bytes()[h.line.clone()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const REQ: &str = "MESSAGE sip:bob@contoso.test SIP/2.0\r\n\
Via: SIP/2.0/UDP client.fabrikam.test:5060;branch=z9hG4bK776;rport\r\n\
Via: SIP/2.0/TLS 10.1.1.1;branch=z9hG4bK1\r\n\
From: <sip:alice@fabrikam.test>;tag=88\r\n\
To: <sip:bob@contoso.test>\r\n\
Call-ID: c1\r\n\
CSeq: 7 MESSAGE\r\n\
Route: <sip:x>\r\n\
Content-Length: 2\r\n\r\nhi";

    fn req() -> Message {
        Message::parse(Bytes::from_static(REQ.as_bytes()), false).expect("parses")
    }

    #[test]
    fn local_response_copies_the_right_lines() {
        let r = response(
            &req(),
            483,
            "Too Many Hops",
            Some("192.0.2.4:4000".parse().unwrap()),
            Some("edge1"),
            &[("Retry-After", "5".into())],
        );
        let text = String::from_utf8(r.to_vec()).unwrap();
        assert_eq!(
            text,
            "SIP/2.0 483 Too Many Hops\r\n\
Via: SIP/2.0/UDP client.fabrikam.test:5060;branch=z9hG4bK776;rport=4000;received=192.0.2.4\r\n\
Via: SIP/2.0/TLS 10.1.1.1;branch=z9hG4bK1\r\n\
From: <sip:alice@fabrikam.test>;tag=88\r\n\
To: <sip:bob@contoso.test>;tag=edge1\r\n\
Call-ID: c1\r\n\
CSeq: 7 MESSAGE\r\n\
Retry-After: 5\r\n\
Content-Length: 0\r\n\r\n"
        );
        let parsed = Message::parse(r.freeze(), false).expect("reparses");
        assert_eq!(parsed.status(), Some(483));
    }

    #[test]
    fn received_only_when_host_differs() {
        let m = Message::parse(Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"), false).unwrap();
        assert_eq!(received_edit(&m, "192.0.2.4:5060".parse().unwrap()), None);
        let (_, t) = received_edit(&m, "192.0.2.9:5060".parse().unwrap()).unwrap();
        assert_eq!(t.to_string(), ";received=192.0.2.9");
    }

    #[test]
    fn cancel_keeps_branch_and_route() {
        let c = cancel_for(&req()).unwrap();
        let text = String::from_utf8(c.to_vec()).unwrap();
        assert!(text.starts_with("CANCEL sip:bob@contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP client.fabrikam.test:5060;branch=z9hG4bK776;rport\r\n"), "{text}");
        assert!(text.contains("Route: <sip:x>\r\n") && text.contains("CSeq: 7 CANCEL\r\n"));
    }
}
