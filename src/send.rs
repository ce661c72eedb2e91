//! `sipedge send`: one request into a running edge, as the pool or a federated partner
//! would send it, and what came back.
//!
//! It connects to the chosen interface of the edge a config describes (UDP, TCP, or
//! mutual TLS with a lab certificate), sends MESSAGE, OPTIONS, INVITE or SUBSCRIBE, answers
//! any request the edge sends it meanwhile with 200 (a NOTIFY, an echo), and reports the
//! final response: status line, `ms-diagnostics` (or `ms-diagnostics-public`), and the
//! trust marking the far side received when the far side is a simulated peer (which copies
//! it into [`RECEIVED_TRUST_HEADER`]). Through the external interface it marks its requests
//! verified as a remote Access Edge does (`ms-edge-proxy-message-trust` naming its
//! certificate), since the edge refuses unmarked ones from UseSourceVerification sources.
//! An INVITE is completed: ACK for any final response,
//! and BYE after a 2xx, so no dialog is left behind. SUBSCRIBE is sent with `Expires: 0`
//! (a one-time fetch, RFC 6665 §4.1.2.3) for the same reason.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::time::Instant;

use crate::config::Snapshot;
use crate::lab::peer::{NO_TRUST, RECEIVED_TRUST_HEADER};
use crate::lab::topology::Role;
use crate::sip::framing::{self, FrameLimits, Scan};
use crate::sip::{build, HeaderName, Message, NameAddr};
use crate::tls::{client_config, TlsError, TlsMaterial};
use crate::transport::{Interface, Transport};

/// Default wait for a final response: longer than the edge's own DNS, connect and
/// Timer F limits with the default config, so the edge's answer arrives first.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(40);

/// UDP retransmission interval until a response arrives (RFC 3261 T1).
const UDP_T1: Duration = Duration::from_millis(500);

/// The methods `send` knows how to complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMethod {
    Message,
    Options,
    Invite,
    Subscribe,
}

/// What to send.
#[derive(Debug, Clone)]
pub struct SendRequest {
    /// From URI, e.g. `sip:alice@contoso.test`.
    pub from: String,
    /// Request-URI and To, e.g. `sip:sam@live.com`.
    pub to: String,
    pub method: SendMethod,
    /// The edge interface it enters; `None`: internal when From is one of the edge's
    /// domains, external otherwise.
    pub via: Option<Interface>,
    /// `None`: TLS when the interface listens for it, else TCP, else UDP.
    pub transport: Option<Transport>,
    /// The lab certificate presented over TLS (`<certs>/<NAME>.crt`); `None`: the
    /// pool's for internal, the partner's for external.
    pub cert: Option<String>,
    /// Body text (MESSAGE: `text/plain`; INVITE: replaces the SDP offer).
    pub body: Option<String>,
    pub timeout: Duration,
    /// The edge's address for that interface and transport, when it is not the one the
    /// config gives (an edge bound to ephemeral ports, e.g. `sipedge lab --ephemeral`).
    pub edge: Option<SocketAddr>,
    /// Where the running edge or lab bound its listeners (its state file), used when
    /// `edge` is not given: the config's ports may be 0 (ephemeral).
    pub bound: Vec<crate::admin::state::Listener>,
    /// The local address to send from (a loopback alias the lab maps to a partner, say);
    /// `None`: whatever the system picks.
    pub source: Option<std::net::IpAddr>,
}

/// The final response, and what `send` did after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: u16,
    /// E.g. `SIP/2.0 200 OK`.
    pub status_line: String,
    pub diagnostics: Option<String>,
    pub diagnostics_public: Option<String>,
    /// [`RECEIVED_TRUST_HEADER`] of the response: `None` when the far side is not a
    /// simulated peer (or the edge answered itself).
    pub received_trust: Option<String>,
    /// For INVITE: the ACK and BYE, e.g. `ACK sent; BYE: SIP/2.0 200 OK`.
    pub dialog: Option<String>,
    /// Where it was sent, e.g. `internal tls 127.0.0.2:5061`.
    pub sent_to: String,
    /// The Call-ID it used, to find the exchange in logs and `/decisions`.
    pub call_id: String,
    /// Every message sent (`true`) and received (`false`), in order: `send -v` prints them.
    pub transcript: Vec<(bool, String)>,
}

/// Why nothing usable came back.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("`{0}` is not a SIP URI (expected e.g. sip:alice@contoso.test)")]
    BadUri(String),
    #[error("the edge's {interface} interface has no {transport} listener in the config")]
    NoListener {
        interface: Interface,
        transport: Transport,
    },
    #[error("the edge's {interface} {transport} port is 0 (ephemeral) in the config; give the bound port with --edge")]
    EphemeralPort {
        interface: Interface,
        transport: Transport,
    },
    #[error("cannot reach the edge's {interface} interface at {addr} ({transport}): {error}")]
    Unreachable {
        interface: Interface,
        transport: Transport,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot load the lab certificate `{name}` from {}: {error}", dir.display())]
    Certificate {
        name: String,
        dir: PathBuf,
        error: TlsError,
    },
    #[error("TLS handshake with the edge at {addr} (as {server_name}) failed: {error}")]
    Handshake {
        addr: SocketAddr,
        server_name: String,
        error: std::io::Error,
    },
    #[error("no final response from the edge at {addr} within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("the edge at {addr} closed the connection before a final response")]
    Closed { addr: SocketAddr },
    #[error("the edge at {addr} sent a message that cannot be framed: {detail}")]
    Garbled { addr: SocketAddr, detail: String },
    #[error("i/o with the edge at {addr}: {error}")]
    Io {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// The interface a request from `from_host` enters by default: internal when it is one of
/// the edge's own domains (a pool user), else external (a partner's user). `explain` uses
/// the same default.
pub fn default_interface(snap: &Snapshot, from_host: &str) -> Interface {
    if snap.is_local_domain(from_host) {
        Interface::Internal
    } else {
        Interface::External
    }
}

/// The certificate a request through `interface` presents by default: the pool's inside,
/// the federated partner's (sip.fabrikam.test) outside.
pub fn default_cert(interface: Interface) -> &'static str {
    match interface {
        Interface::Internal => Role::Pool,
        Interface::External => Role::Partner,
    }
    .spec()
    .fqdn
}

/// The verified marking a remote Access Edge named `fqdn` puts on its requests; `send`
/// adds it through the external interface, and `explain` assumes it there by default.
pub fn edge_marking(fqdn: &str) -> String {
    format!("ms-source-type=EdgeProxyGenerated;ms-ep-fqdn={fqdn};ms-source-verified-user=verified")
}

/// Sends `req` to the edge `snap` describes; certificates come from `certs_dir`.
pub async fn send(
    snap: &Snapshot,
    certs_dir: &Path,
    req: &SendRequest,
) -> Result<Outcome, SendError> {
    let from = NameAddr::parse(&req.from).ok_or_else(|| SendError::BadUri(req.from.clone()))?;
    NameAddr::parse(&req.to).ok_or_else(|| SendError::BadUri(req.to.clone()))?;
    let interface = req
        .via
        .unwrap_or_else(|| default_interface(snap, from.uri.host));
    let side = snap.interface(interface);
    let transport = req.transport.unwrap_or(if side.tls_port.is_some() {
        Transport::Tls
    } else if side.tcp_port.is_some() {
        Transport::Tcp
    } else {
        Transport::Udp
    });
    let bound = req
        .bound
        .iter()
        .find(|l| l.interface == interface && l.transport == transport)
        .map(|l| l.addr);
    let addr = match req.edge.or(bound) {
        Some(addr) => addr,
        None => {
            let port = match transport {
                Transport::Udp => side.udp_port,
                Transport::Tcp => side.tcp_port,
                Transport::Tls => side.tls_port,
            }
            .ok_or(SendError::NoListener {
                interface,
                transport,
            })?;
            if port == 0 {
                return Err(SendError::EphemeralPort {
                    interface,
                    transport,
                });
            }
            SocketAddr::new(side.address, port)
        }
    };
    let mut conn = Conn::open(
        addr,
        req.source,
        interface,
        transport,
        &side.fqdn,
        certs_dir,
        req.cert.as_deref(),
    )
    .await?;
    let deadline = Instant::now() + req.timeout;
    let mut call = Call::new(req, conn.local, transport);
    if interface == Interface::External {
        call.marking = Some(conn.identity.clone());
    }
    let first = call.initial();
    let response = conn.transact(&first, deadline).await?;
    let mut dialog = None;
    if req.method == SendMethod::Invite {
        let status = response.status().unwrap_or(0);
        conn.send(&call.ack(&first, &response)).await?;
        let mut done = "ACK sent".to_string();
        if (200..300).contains(&status) {
            let bye = call.bye(&first, &response);
            match conn.transact(&bye, deadline).await {
                Ok(r) => {
                    let _ = write!(done, "; BYE: {}", status_line(&r));
                    if let Some(d) = r.header_value(HeaderName::MsDiagnostics) {
                        let _ = write!(done, " (ms-diagnostics: {})", d.trim());
                    }
                }
                Err(e) => {
                    let _ = write!(done, "; BYE failed: {e}");
                }
            }
        }
        dialog = Some(done);
    }
    let value = |n| response.header_value(n).map(|v| v.trim().to_string());
    Ok(Outcome {
        status: response.status().unwrap_or(0),
        status_line: status_line(&response),
        diagnostics: value(HeaderName::MsDiagnostics),
        diagnostics_public: value(HeaderName::MsDiagnosticsPublic),
        received_trust: header_named(&response, RECEIVED_TRUST_HEADER),
        dialog,
        sent_to: format!("{interface} {transport} {addr}"),
        call_id: call.call_id.clone(),
        transcript: std::mem::take(&mut conn.transcript),
    })
}

// === impl Outcome ===

impl Outcome {
    /// Whether the request succeeded (2xx): `sipedge send` exits 0 then.
    pub fn success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// What `sipedge send -v` prints first: each message sent and received, in order.
    pub fn render_transcript(&self) -> String {
        let mut out = String::new();
        for (sent, text) in &self.transcript {
            let _ = writeln!(out, "{}", if *sent { "--> sent" } else { "<-- received" });
            for line in text.trim_end().lines() {
                let _ = writeln!(out, "    {line}");
            }
            out.push('\n');
        }
        out
    }

    /// The lines `sipedge send` prints.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", self.status_line);
        match (&self.diagnostics, &self.diagnostics_public) {
            (Some(d), _) => {
                let _ = writeln!(out, "ms-diagnostics: {d}");
            }
            (None, Some(d)) => {
                let _ = writeln!(out, "ms-diagnostics-public: {d}");
            }
            (None, None) => out.push_str("ms-diagnostics: (none)\n"),
        }
        let trust = match self.received_trust.as_deref() {
            Some(NO_TRUST) => "(none arrived)",
            Some(t) => t,
            None => "(unknown: the far side is not a simulated peer, or the edge answered)",
        };
        let _ = writeln!(out, "ms-edge-proxy-message-trust at the far side: {trust}");
        if let Some(d) = &self.dialog {
            let _ = writeln!(out, "dialog: {d}");
        }
        let _ = writeln!(out, "sent to: {}", self.sent_to);
        let _ = writeln!(out, "call-id: {}", self.call_id);
        out
    }
}

// === impl SendMethod ===

impl SendMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            SendMethod::Message => "MESSAGE",
            SendMethod::Options => "OPTIONS",
            SendMethod::Invite => "INVITE",
            SendMethod::Subscribe => "SUBSCRIBE",
        }
    }
}

impl FromStr for SendMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "MESSAGE" => Ok(SendMethod::Message),
            "OPTIONS" => Ok(SendMethod::Options),
            "INVITE" => Ok(SendMethod::Invite),
            "SUBSCRIBE" => Ok(SendMethod::Subscribe),
            other => Err(format!(
                "unknown method `{other}`, expected MESSAGE, OPTIONS, INVITE or SUBSCRIBE"
            )),
        }
    }
}

impl std::fmt::Display for SendMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// === the call: the requests of one exchange ===

/// The identifiers shared by the requests of one exchange.
struct Call<'a> {
    req: &'a SendRequest,
    local: SocketAddr,
    transport: Transport,
    call_id: String,
    from_tag: String,
    /// The `ms-ep-fqdn` of the verified marking a remote edge puts on its requests.
    marking: Option<String>,
}

/// A request written and the Via branch its responses carry.
struct Outgoing {
    bytes: Bytes,
    branch: String,
    method: &'static str,
}

impl<'a> Call<'a> {
    fn new(req: &'a SendRequest, local: SocketAddr, transport: Transport) -> Call<'a> {
        Call {
            req,
            local,
            transport,
            call_id: format!("{}@sipedge-send", token()),
            from_tag: token(),
            marking: None,
        }
    }

    fn initial(&mut self) -> Outgoing {
        let r = self.req;
        let mut extra: Vec<(&str, String)> = vec![("Contact", self.contact())];
        let body = match r.method {
            SendMethod::Message => Some((
                "text/plain",
                r.body
                    .clone()
                    .unwrap_or_else(|| "hello from sipedge send".into()),
            )),
            SendMethod::Invite => Some((
                "application/sdp",
                r.body.clone().unwrap_or_else(|| sdp_offer(self.local)),
            )),
            SendMethod::Subscribe => {
                extra.push(("Event", "presence".into()));
                extra.push(("Accept", "application/pidf+xml".into()));
                extra.push(("Expires", "0".into()));
                None
            }
            SendMethod::Options => {
                extra.push(("Accept", "application/sdp".into()));
                None
            }
        };
        self.write(
            r.method.as_str(),
            &r.to,
            &format!("<{}>", r.to),
            1,
            &[],
            &extra,
            body.as_ref().map(|(c, b)| (*c, b.as_str())),
            None,
        )
    }

    /// The ACK of an INVITE: hop by hop (same branch) for an error, end to end (new
    /// branch, to the Contact, through the Record-Route set) for a 2xx.
    fn ack(&self, invite: &Outgoing, response: &Message) -> Bytes {
        let to = response
            .header_value(HeaderName::To)
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| format!("<{}>", self.req.to));
        let status = response.status().unwrap_or(0);
        if (200..300).contains(&status) {
            let (uri, routes) = dialog_target(response, &self.req.to);
            self.write("ACK", &uri, &to, 1, &routes, &[], None, None)
                .bytes
        } else {
            self.write(
                "ACK",
                &self.req.to,
                &to,
                1,
                &[],
                &[],
                None,
                Some(&invite.branch),
            )
            .bytes
        }
    }

    fn bye(&self, _invite: &Outgoing, response: &Message) -> Outgoing {
        let to = response
            .header_value(HeaderName::To)
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        let (uri, routes) = dialog_target(response, &self.req.to);
        self.write("BYE", &uri, &to, 2, &routes, &[], None, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        method: &'static str,
        uri: &str,
        to: &str,
        cseq: u32,
        routes: &[String],
        extra: &[(&str, String)],
        body: Option<(&str, &str)>,
        branch: Option<&str>,
    ) -> Outgoing {
        let branch = branch
            .map(str::to_string)
            .unwrap_or_else(|| format!("z9hG4bK{}", token()));
        let mut out = String::with_capacity(768);
        let _ = write!(
            out,
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <{}>;tag={}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n",
            self.transport.via_token(),
            self.local,
            self.req.from,
            self.from_tag,
            self.call_id,
        );
        for r in routes {
            let _ = write!(out, "Route: {r}\r\n");
        }
        if let Some(fqdn) = self.marking.as_deref().filter(|_| method != "ACK") {
            let _ = write!(
                out,
                "ms-edge-proxy-message-trust: {}\r\n",
                edge_marking(fqdn)
            );
        }
        for (n, v) in extra {
            let _ = write!(out, "{n}: {v}\r\n");
        }
        let _ = write!(
            out,
            "User-Agent: sipedge-send/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        build::write_body(&mut out, body);
        Outgoing {
            bytes: Bytes::from(out),
            branch,
            method,
        }
    }

    fn contact(&self) -> String {
        let user = NameAddr::parse(&self.req.from)
            .and_then(|n| n.uri.user)
            .unwrap_or("sipedge-send");
        format!(
            "<sip:{user}@{};transport={}>",
            self.local,
            self.transport.as_str()
        )
    }
}

/// The Request-URI (the 2xx's Contact) and Route set (its Record-Route, reversed) of a
/// dialog the UAC created.
fn dialog_target(response: &Message, fallback: &str) -> (String, Vec<String>) {
    let uri = response
        .header_value(HeaderName::Contact)
        .map(|c| crate::lab::peer::uri_text(&c).to_string())
        .unwrap_or_else(|| fallback.to_string());
    let mut routes: Vec<String> = response
        .values(HeaderName::RecordRoute)
        .into_iter()
        .map(|(_, r)| response.text(r).trim().to_string())
        .collect();
    routes.reverse();
    (uri, routes)
}

// === the connection ===

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

enum Link {
    Stream { io: Box<dyn Io>, buf: BytesMut },
    Datagram(UdpSocket),
}

/// One connection to the edge (or a connected UDP socket).
struct Conn {
    link: Link,
    remote: SocketAddr,
    local: SocketAddr,
    /// The name of the certificate presented (TLS), else the local address.
    identity: String,
    /// The interface it enters, for error messages.
    interface: Interface,
    /// What went each way (`Outcome::transcript`).
    transcript: Vec<(bool, String)>,
}

impl Conn {
    async fn open(
        addr: SocketAddr,
        source: Option<std::net::IpAddr>,
        interface: Interface,
        transport: Transport,
        server_name: &str,
        certs_dir: &Path,
        cert: Option<&str>,
    ) -> Result<Conn, SendError> {
        let unreachable = |error| SendError::Unreachable {
            interface,
            transport,
            addr,
            error,
        };
        let local: SocketAddr = match source {
            Some(ip) => (ip, 0).into(),
            None if addr.is_ipv4() => ([0, 0, 0, 0], 0).into(),
            None => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        if transport == Transport::Udp {
            let socket = UdpSocket::bind(local).await.map_err(unreachable)?;
            socket.connect(addr).await.map_err(unreachable)?;
            let local = socket.local_addr().map_err(unreachable)?;
            return Ok(Conn {
                link: Link::Datagram(socket),
                remote: addr,
                local,
                identity: local.ip().to_string(),
                interface,
                transcript: Vec::new(),
            });
        }
        // The TLS config first: a missing certificate is reported before any connection.
        let tls = match transport {
            Transport::Tls => {
                let name = cert
                    .map(str::to_string)
                    .unwrap_or_else(|| default_cert(interface).to_string());
                let config = TlsMaterial::load(
                    &certs_dir.join(format!("{name}.crt")),
                    &certs_dir.join(format!("{name}.key")),
                    &[certs_dir.join("ca.crt")],
                    &[],
                )
                .and_then(|m| client_config(&m))
                .map_err(|error| SendError::Certificate {
                    name: name.clone(),
                    dir: certs_dir.to_path_buf(),
                    error,
                })?;
                Some((config, name))
            }
            _ => None,
        };
        let connect = async {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if source.is_some() {
                socket.bind(local)?;
            }
            socket.connect(addr).await
        };
        let tcp = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| {
                unreachable(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out after 5 s",
                ))
            })?
            .map_err(unreachable)?;
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().map_err(unreachable)?;
        let mut identity = local.ip().to_string();
        let io: Box<dyn Io> = match tls {
            None => Box::new(tcp),
            Some((config, cert_name)) => {
                identity = cert_name;
                let handshake = |error| SendError::Handshake {
                    addr,
                    server_name: server_name.to_string(),
                    error,
                };
                let name = rustls_pki_types::ServerName::try_from(server_name.to_string())
                    .map_err(|e| {
                        handshake(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                    })?;
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(&config))
                    .connect(name, tcp)
                    .await
                    .map_err(handshake)?;
                Box::new(stream)
            }
        };
        Ok(Conn {
            link: Link::Stream {
                io,
                buf: BytesMut::with_capacity(4096),
            },
            remote: addr,
            local,
            identity,
            interface,
            transcript: Vec::new(),
        })
    }

    async fn send(&mut self, bytes: &Bytes) -> Result<(), SendError> {
        self.transcript
            .push((true, String::from_utf8_lossy(bytes).into_owned()));
        let remote = self.remote;
        let io_err = |error| SendError::Io {
            addr: remote,
            error,
        };
        match &mut self.link {
            Link::Stream { io, .. } => {
                io.write_all(bytes).await.map_err(io_err)?;
                io.flush().await.map_err(io_err)
            }
            Link::Datagram(s) => s.send(bytes).await.map(|_| ()).map_err(io_err),
        }
    }

    /// Sends `req` and waits for its final response, answering any request that arrives
    /// meanwhile with 200 and retransmitting over UDP until something arrives.
    async fn transact(&mut self, req: &Outgoing, deadline: Instant) -> Result<Message, SendError> {
        self.send(&req.bytes).await?;
        let mut heard = false;
        let mut resend_at = Instant::now() + UDP_T1;
        loop {
            let wake = match (&self.link, heard) {
                (Link::Datagram(_), false) => resend_at.min(deadline),
                _ => deadline,
            };
            let Some(m) = self.recv(wake).await? else {
                if Instant::now() >= deadline {
                    return Err(SendError::Timeout {
                        addr: self.remote,
                        after: deadline.elapsed(),
                    });
                }
                self.send(&req.bytes).await?;
                resend_at = Instant::now() + UDP_T1;
                continue;
            };
            self.transcript
                .push((false, String::from_utf8_lossy(m.bytes()).into_owned()));
            if m.is_request() {
                if m.method_str() != "ACK" {
                    let ok = build::response(&m, 200, "OK", None, Some(&token()), &[]);
                    self.send(&ok.freeze()).await?;
                }
                continue;
            }
            let ours = m.top_via().and_then(|v| v.branch().map(str::to_string))
                == Some(req.branch.clone())
                && m.cseq().is_some_and(|c| c.method_str == req.method);
            if !ours {
                continue;
            }
            heard = true;
            if m.status().unwrap_or(0) >= 200 {
                return Ok(m);
            }
        }
    }

    /// The next message, or `None` when `until` passes first.
    async fn recv(&mut self, until: Instant) -> Result<Option<Message>, SendError> {
        let remote = self.remote;
        let interface = self.interface;
        match &mut self.link {
            Link::Datagram(s) => {
                let mut buf = vec![0u8; 65_536];
                loop {
                    let n = match tokio::time::timeout_at(until, s.recv(&mut buf)).await {
                        Err(_) => return Ok(None),
                        Ok(Ok(n)) => n,
                        // An ICMP port unreachable surfaces here: nothing listens.
                        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                            return Err(SendError::Unreachable {
                                interface,
                                transport: Transport::Udp,
                                addr: remote,
                                error,
                            })
                        }
                        Ok(Err(error)) => {
                            return Err(SendError::Io {
                                addr: remote,
                                error,
                            })
                        }
                    };
                    if let Ok(m) = Message::parse(Bytes::copy_from_slice(&buf[..n]), true) {
                        return Ok(Some(m));
                    }
                }
            }
            Link::Stream { io, buf } => loop {
                match framing::scan(buf, &FrameLimits::default()) {
                    Ok(Scan::Message { len }) => {
                        let bytes = buf.split_to(len).freeze();
                        match Message::parse(bytes, false) {
                            Ok(m) => return Ok(Some(m)),
                            Err(e) => {
                                return Err(SendError::Garbled {
                                    addr: remote,
                                    detail: e.to_string(),
                                })
                            }
                        }
                    }
                    Ok(Scan::KeepAlive { len, ping }) => {
                        buf.advance(len);
                        if ping {
                            let _ = io.write_all(b"\r\n").await;
                        }
                        continue;
                    }
                    Ok(Scan::Incomplete) => {}
                    Err(e) => {
                        return Err(SendError::Garbled {
                            addr: remote,
                            detail: e.to_string(),
                        })
                    }
                }
                let mut chunk = [0u8; 8192];
                match tokio::time::timeout_at(until, io.read(&mut chunk)).await {
                    Err(_) => return Ok(None),
                    Ok(Ok(0)) => return Err(SendError::Closed { addr: remote }),
                    Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                    Ok(Err(error)) => {
                        return Err(SendError::Io {
                            addr: remote,
                            error,
                        })
                    }
                }
            },
        }
    }
}

// === helpers ===

fn status_line(m: &Message) -> String {
    format!("SIP/2.0 {} {}", m.status().unwrap_or(0), m.reason())
}

/// The value of a header the edge does not index (matched by name, case-insensitively).
fn header_named(m: &Message, name: &str) -> Option<String> {
    m.headers()
        .iter()
        .find(|h| m.text(h.name_range.clone()).eq_ignore_ascii_case(name))
        .map(|h| m.value_of(h).trim().to_string())
}

/// An audio offer on a port of ours, as a Lync client's INVITE carries.
fn sdp_offer(local: SocketAddr) -> String {
    let ip = local.ip();
    format!(
        "v=0\r\no=- {} 1 IN IP4 {ip}\r\ns=sipedge send\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n",
        rand::random::<u32>()
    )
}

fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_in_any_case_and_name_the_choices() {
        assert_eq!("invite".parse(), Ok(SendMethod::Invite));
        assert_eq!("SUBSCRIBE".parse(), Ok(SendMethod::Subscribe));
        let e = "REGISTER".parse::<SendMethod>().unwrap_err();
        assert!(e.contains("MESSAGE, OPTIONS, INVITE or SUBSCRIBE"), "{e}");
    }

    #[test]
    fn the_dialog_goes_to_the_contact_through_the_reversed_record_route() {
        let r = Message::parse(
            Bytes::from_static(
                b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 127.0.0.1:4000;branch=z9hG4bK1\r\nRecord-Route: <sip:edge-ext;lr>\r\nRecord-Route: <sip:edge-int;lr>\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContact: <sip:c@10.0.0.1:5061;transport=tls>\r\nContent-Length: 0\r\n\r\n",
            ),
            false,
        )
        .unwrap();
        let (uri, routes) = dialog_target(&r, "sip:c@d");
        assert_eq!(uri, "sip:c@10.0.0.1:5061;transport=tls");
        assert_eq!(routes, ["<sip:edge-int;lr>", "<sip:edge-ext;lr>"]);
    }

    #[test]
    fn the_report_prints_diagnostics_and_the_trust_that_arrived() {
        let mut o = Outcome {
            transcript: vec![(true, "MESSAGE sip:x SIP/2.0\r\n\r\n".into())],
            status: 403,
            status_line: "SIP/2.0 403 Forbidden".into(),
            diagnostics: Some("1907;reason=\"x\"".into()),
            diagnostics_public: None,
            received_trust: None,
            dialog: None,
            sent_to: "internal tls 127.0.0.2:5061".into(),
            call_id: "1@sipedge-send".into(),
        };
        let text = o.render();
        assert!(
            text.starts_with("SIP/2.0 403 Forbidden\nms-diagnostics: 1907;"),
            "{text}"
        );
        assert!(text.contains("far side: (unknown"), "{text}");
        assert!(!o.success());
        o.status = 200;
        o.received_trust = Some("ms-source-type=EdgeProxyGenerated".into());
        assert!(o
            .render()
            .contains("far side: ms-source-type=EdgeProxyGenerated"));
        assert!(o.success());
    }
}
