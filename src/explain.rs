//! `sipedge explain`: what the edge would do with a request, and why, without sending it.
//!
//! It runs the same `policy::explain` the proxy runs, with real DNS answers (the config's
//! name servers, or its lab zone served for the occasion), and prints the trail of checks.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::Snapshot;
use crate::dns::{order_srv, HickoryResolver, LabDnsServer, Resolve};
use crate::policy::{self, Check, Decision, DnsFacts, Outcome, Route, SrvAnswer};
use crate::sip::Message;
use crate::transport::{Interface, Peer, PeerIdentity, Transport};

/// The request to explain.
#[derive(Debug, Clone)]
pub struct ExplainRequest {
    pub from: String,
    pub to: String,
    pub method: String,
    /// The interface the request arrives on; `None`: as `send` picks it (internal when
    /// From is one of our domains, else external).
    pub interface: Option<Interface>,
    /// Names the sender's certificate carries; empty from outside means the certificate
    /// `send` presents there (the federated partner's).
    pub peer_cert_names: Vec<String>,
    /// The sender's `ms-edge-proxy-message-trust`: `None` is what `send` puts there (the
    /// partner edge's verified marking from outside, none from inside); `Some("none")`:
    /// unmarked; anything else is the header value.
    pub trust: Option<String>,
    /// Media an SDP offer would carry: "audio", "video" or "audio,video".
    pub sdp: Option<String>,
}

/// Why an explanation could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The request built from the arguments is not valid SIP.
    #[error("the request is not valid SIP: {0}")]
    BadRequest(String),
    /// The lab zone could not be served.
    #[error("lab zone: {0}")]
    Zone(String),
}

/// Decides `req` against `snap` and renders the decision, its trail, the route and headers.
pub async fn explain(snap: &Snapshot, req: &ExplainRequest) -> Result<String, ExplainError> {
    let from_host = crate::sip::NameAddr::parse(&req.from)
        .map(|n| n.uri.host.to_string())
        .unwrap_or_default();
    let interface = req
        .interface
        .unwrap_or_else(|| crate::send::default_interface(snap, &from_host));
    let peer_cert_names = match (&req.peer_cert_names[..], interface) {
        ([], Interface::External) => vec![crate::send::default_cert(interface).to_string()],
        (names, _) => names.to_vec(),
    };
    let trust = match req.trust.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("none") => None,
        Some(t) => Some(t.to_string()),
        None => (interface == Interface::External)
            .then(|| crate::send::edge_marking(&peer_cert_names[0])),
    };
    let text = request_text(req, trust.as_deref());
    let m = Message::parse(Bytes::from(text), true)
        .map_err(|e| ExplainError::BadRequest(e.to_string()))?;
    m.validate_request()
        .map_err(|e| ExplainError::BadRequest(e.to_string()))?;
    let facts = crate::proxy::request_facts(&m);
    let peer = Peer {
        interface,
        transport: Transport::Tls,
        addr: SocketAddr::from(([192, 0, 2, 1], 5061)),
        identity: PeerIdentity::new(&peer_cert_names),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Request:  {} {} from {} on the {} interface (peer certificate names: {}; ms-edge-proxy-message-trust: {})",
        req.method,
        req.to,
        req.from,
        interface,
        if peer_cert_names.is_empty() {
            "none".to_string()
        } else {
            peer_cert_names.join(", ")
        },
        trust.as_deref().unwrap_or("none")
    );
    let dns = match policy::dns_needed(&facts, &peer, snap) {
        None => DnsFacts::none(),
        Some(q) => {
            let (resolver, _zone) = resolver_for(snap).await?;
            let answer = match resolver {
                None => SrvAnswer::Failed("no DNS resolver".into()),
                Some(r) => match r.srv(&q.name()).await {
                    Ok(records) => SrvAnswer::Records(order_srv(records, &mut rand::rng())),
                    Err(e) if e.is_no_records() => SrvAnswer::NoRecords,
                    Err(e) => SrvAnswer::Failed(e.to_string()),
                },
            };
            let _ = writeln!(
                out,
                "DNS:      {} -> {}",
                q.name(),
                describe_answer(&answer)
            );
            DnsFacts::answer(&q, answer)
        }
    };
    let e = policy::explain(&facts, &peer, snap, &dns);
    let _ = writeln!(out, "Trail:");
    render_trail(&mut out, &e.trail);
    match &e.decision {
        Decision::AnswerOptions => {
            let _ = writeln!(out, "Decision: answered by the edge: 200 OK with Allow");
        }
        Decision::Reject(r) => {
            let _ = writeln!(
                out,
                "Decision: REJECT {} {} (rule {})",
                r.status, r.reason, r.rule
            );
            if let Some(d) = &r.diagnostics {
                let _ = writeln!(out, "          ms-diagnostics: {}", d.header_value());
            }
            if let Some(s) = r.retry_after {
                let _ = writeln!(out, "          Retry-After: {s}");
            }
        }
        Decision::Forward(f) => {
            let _ = writeln!(
                out,
                "Decision: FORWARD through the {} interface (rule {})",
                f.exit, f.rule
            );
            let _ = writeln!(out, "Source:   {:?}", f.source);
            match &f.route {
                Route::NextHop(h) => {
                    let _ = writeln!(out, "Route:    {}:{} over {}", h.host, h.port, h.transport);
                }
                Route::RequestTarget => {
                    let _ = writeln!(
                        out,
                        "Route:    the next Route entry or the Request-URI (in-dialog)"
                    );
                }
                Route::Targets(ts) => {
                    for (i, t) in ts.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "{}{}:{} over {} (certificate must name {})",
                            if i == 0 { "Route:    " } else { "then:     " },
                            t.host,
                            t.port,
                            t.transport,
                            t.tls_name
                        );
                    }
                }
            }
            if f.strip.trust_header || f.insert_trust.is_some() {
                let _ = writeln!(
                    out,
                    "Headers:  - ms-edge-proxy-message-trust (whatever arrived)"
                );
            }
            if let Some(t) = &f.insert_trust {
                let _ = writeln!(
                    out,
                    "          + ms-edge-proxy-message-trust: {}",
                    t.header_value()
                );
            }
            if f.strip.diagnostics {
                let _ = writeln!(
                    out,
                    "          - ms-diagnostics (never leaves through the external interface)"
                );
            }
            if f.split_domain {
                let _ = writeln!(
                    out,
                    "          + ms-split-domain-info: {} (any that arrived replaced)",
                    crate::policy::SPLIT_INTRA
                );
            }
            if f.limit.is_some() {
                let _ = writeln!(
                    out,
                    "Limits:   discovered partner: rate and contact limits apply"
                );
            }
        }
    }
    Ok(out)
}

/// One line per check, indented two spaces: `pass` or `DECIDED`, the check, its note.
/// `explain` and the admin endpoint's `/decisions` print trails this way.
pub fn render_trail(out: &mut String, trail: &[Check]) {
    for c in trail {
        let (word, note) = match &c.outcome {
            Outcome::Passed(note) => ("pass", note),
            Outcome::Decided(note) => ("DECIDED", note),
        };
        let _ = writeln!(out, "  {word:<8} {:<22} {note}", c.name);
    }
}

/// An SRV answer on one line (`explain`, `check-partner`).
pub fn describe_answer(a: &SrvAnswer) -> String {
    match a {
        SrvAnswer::NoRecords => "no records".into(),
        SrvAnswer::Failed(e) => format!("lookup failed: {e}"),
        SrvAnswer::Records(r) => r
            .iter()
            .map(|t| {
                format!(
                    "{}:{} (priority {}, weight {})",
                    t.target, t.port, t.priority, t.weight
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A resolver as the edge would build it; the lab zone is served while the returned
/// server is held (`explain`, `check-partner`).
pub async fn resolver_for(
    snap: &Snapshot,
) -> Result<(Option<Arc<dyn Resolve>>, Option<LabDnsServer>), ExplainError> {
    let mut zone = None;
    let mut servers = snap.dns.servers.clone();
    if servers.is_empty() {
        if let Some(path) = &snap.dns.zone_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ExplainError::Zone(format!("{}: {e}", path.display())))?;
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .map_err(|e| ExplainError::Zone(e.to_string()))?;
            let z = LabDnsServer::start(&text, None, udp, None)
                .map_err(|e| ExplainError::Zone(e.to_string()))?;
            servers.push(z.udp_addr());
            zone = Some(z);
        }
    }
    let r = if servers.is_empty() {
        HickoryResolver::system()
    } else {
        HickoryResolver::with_name_servers(&servers, snap.dns.timeout)
    };
    Ok((r.ok().map(|r| Arc::new(r) as Arc<dyn Resolve>), zone))
}

fn request_text(req: &ExplainRequest, trust: Option<&str>) -> String {
    let body = match &req.sdp {
        Some(media) => {
            let mut b = String::from(
                "v=0\r\no=- 0 0 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n",
            );
            for m in media.split(',').map(str::trim) {
                let _ = write!(b, "m={m} 5004 RTP/AVP 0\r\n");
            }
            b
        }
        None => String::new(),
    };
    let trust = trust
        .map(|t| format!("ms-edge-proxy-message-trust: {t}\r\n"))
        .unwrap_or_default();
    let ctype = if req.sdp.is_some() {
        "Content-Type: application/sdp\r\n"
    } else {
        ""
    };
    format!(
        "{m} {to} SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKexplain\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag=explain\r\nTo: <{to}>\r\nCall-ID: explain\r\nCSeq: 1 {m}\r\n{trust}{ctype}Content-Length: {len}\r\n\r\n{body}",
        m = req.method,
        to = req.to,
        from = req.from,
        len = body.len()
    )
}
