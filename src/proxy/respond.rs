//! The only place a refusal or a failure becomes a SIP response, logged once: the builders
//! below, and the `Core` methods that send them through a server transaction or
//! statelessly.

use std::net::SocketAddr;

use bytes::BytesMut;

use crate::policy::{Diagnostics, Rejection};
use crate::sip::{build, Message, ParseError};
use crate::transport::pool::ConnectError;
use crate::transport::Interface;

/// The methods the edge relays, for `Allow` on its own OPTIONS answer.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, SUBSCRIBE, NOTIFY, BENOTIFY, UPDATE, PRACK, REFER, SERVICE";

/// Builds the response for a rejection. `ms-diagnostics` is only written toward the
/// internal interface; outside it becomes `ms-diagnostics-public` without `source`.
pub fn rejection(
    req: &Message,
    r: &Rejection,
    to: Interface,
    source: Option<SocketAddr>,
    to_tag: &str,
    edge_fqdn: &str,
) -> BytesMut {
    let mut extra: Vec<(&str, String)> = Vec::new();
    if let Some(d) = &r.diagnostics {
        match to {
            Interface::Internal => {
                extra.push(("ms-diagnostics", with_source(d, edge_fqdn).header_value()))
            }
            Interface::External => extra.push(("ms-diagnostics-public", d.public_value())),
        }
    }
    if let Some(s) = r.retry_after {
        extra.push(("Retry-After", s.to_string()));
    }
    build::response(req, r.status, r.reason, source, Some(to_tag), &extra)
}

fn with_source(d: &Diagnostics, edge_fqdn: &str) -> Diagnostics {
    if d.params
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("source"))
    {
        d.clone()
    } else {
        d.clone().param("source", edge_fqdn)
    }
}

/// A 200 to OPTIONS addressed to the edge itself. No `Supported`: a proxy needs no option
/// tag to relay, and the edge implements none of Path, Outbound, GRUU or timers itself.
pub fn options_ok(req: &Message, source: Option<SocketAddr>, to_tag: &str) -> BytesMut {
    build::response(
        req,
        200,
        "OK",
        source,
        Some(to_tag),
        &[
            ("Allow", ALLOW.to_string()),
            ("Accept", "application/sdp".to_string()),
        ],
    )
}

/// A 400 naming what was wrong with the request (416 for a scheme it cannot route, 505 for
/// another SIP version).
pub fn bad_request(
    req: &Message,
    err: &ParseError,
    source: Option<SocketAddr>,
    to_tag: &str,
) -> BytesMut {
    build::response(
        req,
        err.status(),
        &err.reason_phrase(),
        source,
        Some(to_tag),
        &[],
    )
}

/// A 420 listing the Proxy-Require option tags the edge does not support.
pub fn bad_extension(
    req: &Message,
    tags: &str,
    source: Option<SocketAddr>,
    to_tag: &str,
) -> BytesMut {
    build::response(
        req,
        420,
        "Bad Extension",
        source,
        Some(to_tag),
        &[("Unsupported", tags.to_string())],
    )
}

/// The rejection for an outbound connection that could not be made. Toward a federated
/// peer over TLS: the Access Edge's 1010 (certificate trust) or 1047 (negotiation). Toward
/// the pool, or over plain TCP, the federation TLS code would send the reader to the wrong
/// place, so those say "next hop unreachable" (1046) and name the interface.
pub fn connect_failure(
    err: &ConnectError,
    target: &str,
    exit: Interface,
    transport: crate::transport::Transport,
) -> Rejection {
    let federated_tls = exit == Interface::External && transport == crate::transport::Transport::Tls;
    let unreachable = |winsock: &str| Rejection::next_hop_unreachable(target, exit, winsock);
    match err {
        ConnectError::Handshake { name, source } => {
            match crate::tls::classify_outbound_failure(source) {
                crate::tls::OutboundTlsFailure::CertTrust {
                    error_type,
                    hresult,
                } => Rejection::tls_certificate_trust(name, &error_type, hresult),
                crate::tls::OutboundTlsFailure::Handshake { detail } if federated_tls => {
                    Rejection::tls_negotiation(name, &detail)
                }
                crate::tls::OutboundTlsFailure::Handshake { detail } => unreachable(&detail),
            }
        }
        ConnectError::HandshakeTimeout { name } if federated_tls => {
            Rejection::tls_negotiation(name, "10060(WSAETIMEDOUT)")
        }
        ConnectError::Connect { source, .. } if federated_tls => {
            Rejection::tls_negotiation(target, winsock_of(source))
        }
        ConnectError::ConnectTimeout { .. } if federated_tls => {
            Rejection::tls_negotiation(target, "10060(WSAETIMEDOUT)")
        }
        ConnectError::HandshakeTimeout { .. } | ConnectError::ConnectTimeout { .. } => {
            unreachable("10060(WSAETIMEDOUT)")
        }
        ConnectError::Connect { source, .. } => unreachable(winsock_of(source)),
        ConnectError::NoTls(_) | ConnectError::BadName(_) => Rejection::no_outbound_tls(target),
    }
}

fn winsock_of(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "10061(WSAECONNREFUSED)",
        std::io::ErrorKind::TimedOut => "10060(WSAETIMEDOUT)",
        std::io::ErrorKind::ConnectionAborted => "10053(WSAECONNABORTED)",
        _ => "10054(WSAECONNRESET)",
    }
}

// === sending: through the server transaction, or statelessly ===

use super::*;

impl Core {
    pub(super) fn server_tag(&self, key: &TxnKey) -> String {
        self.txns
            .with(key, |e| match e {
                Entry::Server(s) => (s.to_tag.clone(), None),
                Entry::Client(_) => (String::new(), None),
            })
            .unwrap_or_default()
    }

    /// Sends a response through its server transaction (stores it for retransmissions).
    pub(super) fn send_on_server(&self, key: &TxnKey, status: u16, bytes: Bytes) {
        let now = Instant::now();
        let send = self.txns.with(key, |e| match e {
            Entry::Server(s) => {
                if s.fsm.on_send(status, now) {
                    s.last = Some(bytes.clone());
                    self.metrics
                        .message(s.arrival, Direction::Out, s.request.method());
                    self.metrics.response(status);
                    let mut decided = None;
                    if status >= 200 {
                        s.slot = None;
                        let took = s.received.take().map(|t| now.saturating_duration_since(t));
                        if let Some(took) = took {
                            self.metrics.transaction_done(took);
                        }
                        decided = s.decision.take().map(|d| (s.request.clone(), d, took));
                        if s.fsm.only_resends_final() {
                            // Held for Timer J with only its response to resend: the table's
                            // byte budget then holds four times as many (issue 16).
                            s.request.keep_start_line();
                        }
                    }
                    (Some((s.reply.clone(), decided)), s.fsm.deadline())
                } else {
                    (None, None)
                }
            }
            Entry::Client(_) => (None, None),
        });
        let Some(Some((reply, decided))) = send else {
            return;
        };
        // A failure's ms-diagnostics says why: the record keeps that response (a clone of
        // `Bytes` shares the buffer, nothing is copied) and reads it only when asked.
        let failure = (status >= 300).then(|| bytes.clone());
        if let Err(e) = reply.send(bytes) {
            tracing::info!(error = %e, "response could not be sent");
        }
        if let Some((request, d, took)) = decided {
            self.record(&request, d, status, took, failure);
        }
    }

    /// Refuses a request that has a server transaction; logs the reason once.
    pub(super) fn reject(&self, key: &TxnKey, r: &Rejection, snap: &Snapshot) {
        let parts = self.txns.with(key, |e| match e {
            Entry::Server(s) => {
                // Whatever was decided before, this refusal is what the request got.
                if let Some(d) = &mut s.decision {
                    d.outcome = "reject";
                    d.rule = r.rule.name();
                }
                (
                Some((
                    s.request.clone(),
                    s.source,
                    s.arrival,
                    s.to_tag.clone(),
                    datagram_budget(&s.reply, &s.request, s.arrival),
                )),
                None,
                )
            }
            Entry::Client(_) => (None, None),
        });
        let Some(Some((req, source, arrival, tag, budget))) = parts else {
            return;
        };
        log_rejection(&req, r, source, arrival);
        // `source` in diagnostics names the edge by its external FQDN, as the product does.
        let fqdn = &snap.external.fqdn;
        let bytes = respond::rejection(&req, r, arrival, Some(source), &tag, fqdn);
        self.send_on_server(key, r.status, fit_for(bytes, budget));
    }

    /// Sends a response the edge wrote itself through its server transaction, cut down
    /// for an external datagram sender (`amplification`).
    pub(super) fn send_local(&self, key: &TxnKey, status: u16, bytes: bytes::BytesMut) {
        let budget = self
            .txns
            .with(key, |e| match e {
                Entry::Server(s) => (datagram_budget(&s.reply, &s.request, s.arrival), None),
                Entry::Client(_) => (None, None),
            })
            .flatten();
        self.send_on_server(key, status, fit_for(bytes, budget));
    }

    /// Refuses a request without creating state (table full, draining, unmatched CANCEL).
    pub(super) fn reject_stateless(
        &self,
        m: &Message,
        peer: &Peer,
        reply: &ReplyTo,
        r: &Rejection,
        snap: &Snapshot,
    ) {
        log_rejection(m, r, peer.addr, peer.interface);
        let fqdn = &snap.interface(peer.interface).fqdn;
        let tag = self.next_tag();
        let bytes = respond::rejection(m, r, peer.interface, Some(peer.addr), &tag, fqdn);
        let bytes = fit_for(bytes, datagram_budget(reply, m, peer.interface));
        self.metrics
            .message(peer.interface, Direction::Out, m.method());
        self.metrics.response(r.status);
        let _ = reply.send(bytes);
    }

    pub(super) fn respond_stateless(
        &self,
        m: &Message,
        peer: &Peer,
        reply: &ReplyTo,
        status: u16,
        build: impl FnOnce(&str) -> bytes::BytesMut,
    ) {
        let budget = datagram_budget(reply, m, peer.interface);
        self.send_local_response(m, budget, peer, reply, status, build);
    }

    /// Sends a locally built response within `budget` (see `datagram_budget`).
    pub(super) fn send_local_response(
        &self,
        m: &Message,
        budget: Option<usize>,
        peer: &Peer,
        reply: &ReplyTo,
        status: u16,
        build: impl FnOnce(&str) -> bytes::BytesMut,
    ) {
        let tag = self.next_tag();
        let bytes = fit_for(build(&tag), budget);
        self.metrics
            .message(peer.interface, Direction::Out, m.method());
        self.metrics.response(status);
        let _ = reply.send(bytes);
    }
}

/// How large a response the edge may write to this sender: the size of its datagram (or
/// the minimal response, when that is larger: `amplification`), for a UDP source on the
/// external interface (unverified, perhaps spoofed). Streams have done a handshake, and
/// the internal side is the organisation's own pool.
pub(super) fn datagram_budget(reply: &ReplyTo, m: &Message, arrival: Interface) -> Option<usize> {
    (arrival == Interface::External && matches!(reply, ReplyTo::Datagram { .. }))
        .then(|| m.bytes().len())
}

/// `bytes` within `budget` (see `amplification`): cut down to the minimal response at
/// worst, so every request still gets its answer.
pub(super) fn fit_for(bytes: bytes::BytesMut, budget: Option<usize>) -> Bytes {
    match budget {
        Some(budget) => amplification::fit(bytes, budget),
        None => bytes.freeze(),
    }
}

pub(super) fn log_rejection(m: &Message, r: &Rejection, source: SocketAddr, arrival: Interface) {
    if !crate::lograte::LOGS.admit(crate::lograte::Noisy::RequestRefused, source.ip()) {
        return;
    }
    tracing::info!(
        call_id = m.call_id().unwrap_or(""),
        method = m.method_str(),
        interface = %arrival,
        peer = %source,
        status = r.status,
        rule = r.rule.name(),
        diagnostics = r.diagnostics.as_ref().map(|d| d.code),
        "request refused"
    );
}
