//! The only place a refusal or a failure becomes a SIP response, logged once.

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

/// The rejection for an outbound connection that could not be made. TLS failures carry
/// the Access Edge's 1010 (certificate trust) or 1047 (negotiation) diagnostics.
pub fn connect_failure(err: &ConnectError, target: &str) -> Rejection {
    match err {
        ConnectError::Handshake { name, source } => {
            match crate::tls::classify_outbound_failure(source) {
                crate::tls::OutboundTlsFailure::CertTrust {
                    error_type,
                    hresult,
                } => Rejection::new(504, "Server Time-out", "tls-certificate-trust")
                    .with_diagnostics(
                        Diagnostics::new(
                            1010,
                            "Certificate trust with another server could not be established",
                        )
                        .param("ErrorType", error_type)
                        .param("tls-target", name.clone())
                        .param("PeerServer", name.clone())
                        .param("HRESULT", hresult),
                    ),
                crate::tls::OutboundTlsFailure::Handshake { detail } => {
                    tls_negotiation(name, &detail)
                }
            }
        }
        ConnectError::HandshakeTimeout { name } => tls_negotiation(name, "10060(WSAETIMEDOUT)"),
        ConnectError::Connect { source, .. } => tls_negotiation(target, winsock_of(source)),
        ConnectError::ConnectTimeout { .. } => tls_negotiation(target, "10060(WSAETIMEDOUT)"),
        ConnectError::NoTls(_) | ConnectError::BadName(_) => {
            Rejection::new(503, "Service Unavailable", "no-outbound-tls").with_diagnostics(
                Diagnostics::new(
                    1047,
                    "Failed to complete TLS negotiation with a federated peer server",
                )
                .param("PeerServer", target),
            )
        }
    }
}

fn tls_negotiation(peer: &str, winsock: &str) -> Rejection {
    Rejection::new(504, "Server Time-out", "tls-negotiation").with_diagnostics(
        Diagnostics::new(
            1047,
            "Failed to complete TLS negotiation with a federated peer server",
        )
        .param("WinsockFailureCode", winsock)
        .param("PeerServer", peer),
    )
}

fn winsock_of(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "10061(WSAECONNREFUSED)",
        std::io::ErrorKind::TimedOut => "10060(WSAETIMEDOUT)",
        std::io::ErrorKind::ConnectionAborted => "10053(WSAECONNABORTED)",
        _ => "10054(WSAECONNRESET)",
    }
}
