//! Rewriting a relayed message by splicing: Via, Max-Forwards, Record-Route, Route,
//! and the headers the edge alone may set.

use std::fmt;
use std::ops::Range;

use bytes::BytesMut;

use crate::sip::message::split_commas;
use crate::sip::splice::Splice;
use crate::sip::{HeaderName, Message};

/// Default Max-Forwards when a request has none (RFC 3261 §16.6 step 3).
pub const DEFAULT_MAX_FORWARDS: u32 = 70;

/// Everything that changes when a request is relayed.
///
/// Text parts are `Display` values the rewrite formats straight into its output, so a
/// relayed request costs no String per edit.
pub struct RequestEdits<'a> {
    /// Our Via value (`SIP/2.0/TLS host:port;branch=…`), placed on top.
    pub via: &'a dyn fmt::Display,
    /// `received`/`rport` for the previous top Via: offset and text.
    pub received: Option<(usize, &'a dyn fmt::Display)>,
    /// Record-Route values to put on top, in order.
    pub record_route: Vec<String>,
    /// Route values to pop (ours), as (header line index, value range).
    pub pop_routes: &'a [(usize, Range<usize>)],
    /// Header names to drop entirely (e.g. a trust header that arrived from outside).
    pub remove: &'a [HeaderName],
    /// Whole header lines to add (`Name: value`, no CRLF).
    pub add: &'a [&'a dyn fmt::Display],
    /// Add `Content-Length` when absent (a datagram relayed over a stream).
    pub add_content_length: bool,
}

impl Default for RequestEdits<'_> {
    fn default() -> Self {
        RequestEdits {
            via: &"",
            received: None,
            record_route: Vec::new(),
            pop_routes: &[],
            remove: &[],
            add: &[],
            add_content_length: false,
        }
    }
}

/// The edge's own Via value, formatted where it is written.
#[derive(Debug, Clone, Copy)]
pub struct OurVia<'a> {
    /// `UDP`, `TCP` or `TLS`.
    pub transport: &'static str,
    /// The interface's FQDN (an IPv6 literal gets its brackets here).
    pub host: &'a str,
    pub port: u16,
    pub branch: &'a str,
}

impl fmt::Display for OurVia<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SIP/2.0/{} {}:{};branch={};rport",
            self.transport,
            crate::sip::uri::UriHost(self.host),
            self.port,
            self.branch
        )
    }
}

/// The trust header line the edge adds, formatted where it is written.
pub struct TrustLine<'a>(pub &'a crate::sip::ms_headers::MessageTrust);

impl fmt::Display for TrustLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ms-edge-proxy-message-trust: {}", self.0)
    }
}

/// The `ms-split-domain-info` line of split-domain traffic.
struct SplitLine;

impl fmt::Display for SplitLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ms-split-domain-info: {}", crate::policy::SPLIT_INTRA)
    }
}

/// Builds the relayed request.
pub fn rewrite_request(m: &Message, e: &RequestEdits<'_>) -> BytesMut {
    let buf: &[u8] = m.bytes();
    let mut s = Splice::new(&buf[..m.body_range().end]);
    let headers = m.headers();
    let first_via = headers
        .iter()
        .find(|h| h.name == HeaderName::Via)
        .map_or(m.headers_end(), |h| h.line.start);
    s.insert_fmt(first_via, format_args!("Via: {}\r\n", e.via));
    if let Some((at, text)) = e.received {
        s.insert_fmt(at, format_args!("{text}"));
    }
    match headers.iter().find(|h| h.name == HeaderName::MaxForwards) {
        Some(h) => {
            let mf = m
                .max_forwards()
                .ok()
                .flatten()
                .unwrap_or(DEFAULT_MAX_FORWARDS + 1);
            s.replace_fmt(h.value.clone(), format_args!("{}", mf.saturating_sub(1)));
        }
        None => s.insert_fmt(
            m.headers_end(),
            format_args!("Max-Forwards: {DEFAULT_MAX_FORWARDS}\r\n"),
        ),
    }
    if !e.record_route.is_empty() {
        let at = headers
            .iter()
            .find(|h| h.name == HeaderName::RecordRoute)
            .map_or(m.headers_end(), |h| h.line.start);
        for v in &e.record_route {
            s.insert_fmt(at, format_args!("Record-Route: {v}\r\n"));
        }
    }
    pop_values(m, &mut s, e.pop_routes);
    for h in headers.iter().filter(|h| e.remove.contains(&h.name)) {
        s.remove(h.line.clone());
    }
    for line in e.add {
        s.insert_fmt(m.headers_end(), format_args!("{line}\r\n"));
    }
    if e.add_content_length && m.header(HeaderName::ContentLength).is_none() {
        s.insert_fmt(
            m.headers_end(),
            format_args!("Content-Length: {}\r\n", m.body().len()),
        );
    }
    s.finish()
}

/// Removes some values of multi-valued headers: a whole line when all its values go.
/// `pops` come grouped by line, ours first within a line (they are the top values).
fn pop_values(m: &Message, s: &mut Splice<'_>, pops: &[(usize, Range<usize>)]) {
    let buf: &[u8] = m.bytes();
    let mut rest = pops;
    while let Some((line, _)) = rest.first() {
        let line = *line;
        let n = rest.iter().take_while(|(i, _)| *i == line).count();
        let (group, next) = rest.split_at(n);
        rest = next;
        let Some(h) = m.headers().get(line) else {
            continue;
        };
        let popped = |r: &Range<usize>| group.iter().any(|(_, p)| p == r);
        let mut values = split_commas(buf, h.value.clone());
        let Some(first) = values.next() else {
            continue;
        };
        // Values popped are always a prefix (ours come first): cut up to the first kept one.
        match std::iter::once(first.clone())
            .chain(values)
            .find(|r| !popped(r))
        {
            Some(kept) => s.remove(first.start..kept.start),
            None => s.remove(h.line.clone()),
        }
    }
}

/// What changes when a response is relayed back: our Via goes, headers may be added or
/// dropped.
#[derive(Debug, Default)]
pub struct ResponseEdits<'a> {
    pub remove: &'a [HeaderName],
    pub add: Vec<String>,
    /// Via lines hidden from the next hop, put back where the top Via was (`topology`).
    pub restore_via: Option<bytes::Bytes>,
}

/// Builds the relayed response: the top Via value (ours) removed.
pub fn rewrite_response(m: &Message, e: &ResponseEdits<'_>) -> BytesMut {
    let buf: &[u8] = m.bytes();
    let mut s = Splice::new(&buf[..m.body_range().end]);
    if let Some((line, top)) = m.first_value(HeaderName::Via) {
        pop_values(m, &mut s, &[(line, top)]);
        if let Some(via) = &e.restore_via {
            s.insert(m.headers()[line].line.start, via);
        }
    }
    for h in m.headers().iter().filter(|h| e.remove.contains(&h.name)) {
        s.remove(h.line.clone());
    }
    for line in &e.add {
        s.insert_fmt(m.headers_end(), format_args!("{line}\r\n"));
    }
    s.finish()
}

// === the edits the edge makes to a request it relays ===

use super::*;

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rewrite_for(
        &self,
        m: &Message,
        peer: &Peer,
        f: &policy::Forward,
        target: &Target,
        branch: &str,
        plan: &RoutePlan,
        snap: &Snapshot,
    ) -> Bytes {
        let exit = f.exit;
        let exit_settings = snap.interface(exit);
        let ports = self.ports.get(&exit).copied().unwrap_or_default();
        let via_port = ports
            .get(target.transport)
            .or(ports.tcp)
            .or(ports.udp)
            .unwrap_or(5060);
        let via = OurVia {
            transport: target.transport.via_token(),
            host: &exit_settings.fqdn,
            port: via_port,
            branch,
        };
        let mut record_route = Vec::new();
        if m.method().creates_dialog() {
            let ours = self.rr_value(snap, exit, target.transport);
            // The pool's requests in this dialog come back through this entry: it remembers
            // the flow the external peer used, so they reach that peer over it.
            record_route.push(if peer.interface == Interface::External {
                Flow::of(peer).mark(&ours)
            } else {
                ours
            });
            if exit != peer.interface {
                record_route.push(self.rr_value(snap, peer.interface, peer.transport));
            }
        }
        // The trust header is the edge's alone: whatever arrived is dropped before ours goes
        // on; so is the split-domain marking on split-domain traffic.
        let mut remove_buf = [HeaderName::Other; 3];
        let mut n = 0;
        for (on, name) in [
            (
                f.strip.trust_header || f.insert_trust.is_some(),
                HeaderName::MsTrust,
            ),
            (f.strip.diagnostics, HeaderName::MsDiagnostics),
            (f.split_domain, HeaderName::MsSplitDomainInfo),
        ] {
            if on {
                remove_buf[n] = name;
                n += 1;
            }
        }
        let remove: &[HeaderName] = &remove_buf[..n];
        let trust = f.insert_trust.as_ref().map(TrustLine);
        let split = SplitLine;
        let mut add_buf: [&dyn std::fmt::Display; 2] = [&split, &split];
        let mut n = 0;
        if let Some(t) = &trust {
            add_buf[n] = t;
            n += 1;
        }
        if f.split_domain {
            add_buf[n] = &split;
            n += 1;
        }
        let add: &[&dyn std::fmt::Display] = &add_buf[..n];
        // === topology hiding: outside, only our Via and our sealed Record-Route entry ===
        let hidden_remove: Vec<HeaderName>;
        let (record_route, remove, received) = if topology::hides(peer.interface, exit) {
            let (extra, record_route): (&[HeaderName], _) = match record_route.as_slice() {
                [ext, int] => (
                    &[HeaderName::Via, HeaderName::RecordRoute],
                    vec![self.topology.hide_request(
                        m,
                        ext,
                        int,
                        &topology::Binding::of_request_out(m),
                    )],
                ),
                _ => (&[HeaderName::Via], record_route),
            };
            hidden_remove = [remove, extra].concat();
            (record_route, hidden_remove.as_slice(), None)
        } else {
            (record_route, remove, build::received_edit(m, peer.addr))
        };
        let edits = RequestEdits {
            via: &via,
            received: received
                .as_ref()
                .map(|(at, t)| (*at, t as &dyn std::fmt::Display)),
            record_route,
            pop_routes: &plan.pops,
            remove,
            add,
            add_content_length: target.transport.is_stream(),
        };
        rewrite_request(m, &edits).freeze()
    }

    /// A Record-Route value naming one interface by its FQDN (never an IP: Lync ignores those;
    /// only an interface configured with an address for its name, as in IPv6 tests, gives one).
    pub(super) fn rr_value(&self, snap: &Snapshot, iface: Interface, transport: Transport) -> String {
        let s = snap.interface(iface);
        let ports = self.ports.get(&iface).copied().unwrap_or_default();
        let port = ports
            .get(transport)
            .or(ports.tls)
            .or(ports.tcp)
            .or(ports.udp)
            .unwrap_or(5061);
        format!(
            "<sip:{}:{};transport={};lr>",
            crate::sip::uri::UriHost(&s.fqdn),
            port,
            transport.as_str()
        )
    }

    pub(super) fn new_branch(&self, m: &Message, arrival: Interface) -> String {
        let iface = match arrival {
            Interface::Internal => 'i',
            Interface::External => 'e',
        };
        let mut branch = String::with_capacity(64);
        let _ = write!(
            branch,
            "{BRANCH_PREFIX}{:08x}{iface}{:x}.{:x}",
            loop_hash(m),
            self.instance,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        branch
    }
}

/// The loop-detection hash of §16.6 step 8: fields that change when a request spirals.
pub(super) fn loop_hash(m: &Message) -> u32 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.uri_range().map(|r| m.text(r)).hash(&mut h);
    m.from().and_then(|f| f.tag()).hash(&mut h);
    m.to().and_then(|t| t.tag()).hash(&mut h);
    m.call_id().hash(&mut h);
    m.cseq().map(|c| c.seq).hash(&mut h);
    for (_, r) in m.values(HeaderName::Route) {
        m.text(r).hash(&mut h);
    }
    h.finish() as u32
}

/// A branch for a statelessly relayed ACK, the same for each retransmission (§16.11).
pub(super) fn stateless_branch(m: &Message) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.top_via().and_then(|v| v.branch()).hash(&mut h);
    format!("{BRANCH_PREFIX}{:08x}s{:x}", loop_hash(m), h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(s: &str) -> Message {
        Message::parse(Bytes::copy_from_slice(s.as_bytes()), false).expect("parses")
    }

    #[test]
    fn request_rewrite_splices_every_edit() {
        let m = msg("INVITE sip:bob@contoso.test SIP/2.0\r\n\
Via: SIP/2.0/TCP 10.0.0.9:5060;branch=z9hG4bKa\r\n\
Route: <sip:edge-int.contoso.test;lr>, <sip:next.example;lr>\r\n\
Max-Forwards: 10\r\n\
ms-edge-proxy-message-trust: forged\r\n\
Record-Route: <sip:pool.contoso.test;lr>\r\n\
Content-Length: 0\r\n\r\n");
        let routes = m.values(HeaderName::Route);
        let pops = [routes[0].clone()];
        let e = RequestEdits {
            via: &"SIP/2.0/TLS accessedge.contoso.test:5061;branch=z9hG4bKx",
            received: Some((
                m.first_value(HeaderName::Via).unwrap().1.end,
                &";received=10.0.0.8",
            )),
            record_route: vec![
                "<sip:accessedge.contoso.test:5061;transport=tls;lr>".into(),
                "<sip:edge-int.contoso.test:5061;transport=tls;lr>".into(),
            ],
            pop_routes: &pops,
            remove: &[HeaderName::MsTrust],
            add: &[&"ms-edge-proxy-message-trust: ms-source-type=EdgeProxyGenerated"],
            add_content_length: true,
        };
        let out = String::from_utf8(rewrite_request(&m, &e).to_vec()).unwrap();
        assert_eq!(
            out,
            "INVITE sip:bob@contoso.test SIP/2.0\r\n\
Via: SIP/2.0/TLS accessedge.contoso.test:5061;branch=z9hG4bKx\r\n\
Via: SIP/2.0/TCP 10.0.0.9:5060;branch=z9hG4bKa;received=10.0.0.8\r\n\
Route: <sip:next.example;lr>\r\n\
Max-Forwards: 9\r\n\
Record-Route: <sip:accessedge.contoso.test:5061;transport=tls;lr>\r\n\
Record-Route: <sip:edge-int.contoso.test:5061;transport=tls;lr>\r\n\
Record-Route: <sip:pool.contoso.test;lr>\r\n\
Content-Length: 0\r\n\
ms-edge-proxy-message-trust: ms-source-type=EdgeProxyGenerated\r\n\r\n"
        );
    }

    #[test]
    fn missing_max_forwards_becomes_70_and_udp_body_gets_a_length() {
        let m = Message::parse(
            Bytes::from_static(
                b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\nhi",
            ),
            true,
        )
        .unwrap();
        let e = RequestEdits {
            via: &"SIP/2.0/TCP e:5060;branch=z9hG4bK2",
            add_content_length: true,
            ..Default::default()
        };
        let out = String::from_utf8(rewrite_request(&m, &e).to_vec()).unwrap();
        assert!(
            out.ends_with("Max-Forwards: 70\r\nContent-Length: 2\r\n\r\nhi"),
            "{out}"
        );
    }

    #[test]
    fn response_loses_only_the_top_via() {
        let m = msg("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP e:5060;branch=z9hG4bK2, SIP/2.0/UDP c:5060;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n");
        let out =
            String::from_utf8(rewrite_response(&m, &ResponseEdits::default()).to_vec()).unwrap();
        assert_eq!(out, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP c:5060;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n");
        let m = msg("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP e:5060;branch=z9hG4bK2\r\nv: SIP/2.0/UDP c:5060;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n");
        let out =
            String::from_utf8(rewrite_response(&m, &ResponseEdits::default()).to_vec()).unwrap();
        assert_eq!(
            out,
            "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP c:5060;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
        );
    }
}
