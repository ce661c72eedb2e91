//! A simulated peer: the Skype PIC gateway, a partner's edge, a hosting provider or the
//! Front End pool, answering as the real one would and misbehaving on request.
//!
//! It speaks mutual TLS with its lab certificate (plain TCP for the lab pool), answers
//! MESSAGE, INVITE (180 then 200 with SDP), SUBSCRIBE (200 then a NOTIFY with PIDF over the
//! same connection), OPTIONS, BYE, absorbs ACK, and records what arrived (with the
//! `ms-edge-proxy-message-trust` the edge put on) so tests and `sipedge send` can show it.
//! Faults ([`Fault`]) come from the spec and can be changed while it runs. The Skype role
//! holds a provisioning [`Gate`]: traffic from or to an organisation that the provider has
//! not provisioned is refused with 403 and ms-diagnostics 1080.
//!
//! Connections reuse the edge's stream task (`transport::stream`), so framing and
//! keep-alive pongs behave exactly like the edge's own.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::{ClientConfig, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::pic::{not_provisioned_diagnostics, LabClock, Provisioning};
use super::topology::{Role, WRONG_NAME_FQDN};
use crate::sip::framing::{FrameError, FrameLimits};
use crate::sip::{build, HeaderName, Message, Method, NameAddr};
use crate::tls::{client_config, server_config, TlsError, TlsMaterial};
use crate::transport::stream::{self, StreamSettings};
use crate::transport::{ConnHandle, Handler, Interface, Peer, PeerIdentity, ReplyTo, Transport};

/// How many received requests a peer keeps by default.
pub const DEFAULT_HISTORY: usize = 64;

/// How long `originate` waits for a final response: longer than the edge's own
/// connect and DNS timeouts, so the edge's answer arrives first.
pub const ORIGINATE_TIMEOUT: Duration = Duration::from_secs(40);

/// The header a simulated peer adds to every response: the `ms-edge-proxy-message-trust`
/// value its request arrived with (or [`NO_TRUST`]), so the sender, on the other side of
/// the edge, sees what the edge put on (`sipedge send` prints it).
pub const RECEIVED_TRUST_HEADER: &str = "X-Lab-Received-Trust";

/// [`RECEIVED_TRUST_HEADER`]'s value when the request carried no trust header.
pub const NO_TRUST: &str = "none";

/// The methods a simulated peer answers, for `Allow`.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, INFO";

/// What a peer does wrong, from its spec or set at run time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Behaves.
    #[default]
    None,
    /// Answers every request this much later.
    Delay(Duration),
    /// Never answers (the sender times out).
    Drop,
    /// Answers every request with this status, with or without an ms-diagnostics value.
    Status {
        code: u16,
        diagnostics: Option<String>,
    },
    /// Closes each connection right after accepting it, before the TLS handshake; the
    /// edge reports 504 + 1047.
    RefuseHandshake,
    /// Presents a certificate for another name; the edge reports 504 + 1010.
    WrongCert,
    /// Its DNS records disappear (the lab zone answers NXDOMAIN for them); the peer
    /// itself behaves. Applied by `lab::faults`, which owns the zone.
    DnsMissing,
    /// Queries for its DNS records are never answered; the peer itself behaves.
    DnsTimeout,
}

impl Fault {
    /// Whether the fault is in the TLS handshake, so open connections must close for the
    /// edge to meet it on its next connection.
    pub fn is_handshake(&self) -> bool {
        matches!(self, Fault::RefuseHandshake | Fault::WrongCert)
    }
}

impl std::fmt::Display for Fault {
    /// The `sipedge admin fault` spelling, e.g. `status 486 --diagnostics "…"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::None => f.write_str("none"),
            Fault::Delay(d) => write!(f, "delay {}", d.as_millis()),
            Fault::Drop => f.write_str("drop"),
            Fault::Status {
                code,
                diagnostics: None,
            } => write!(f, "status {code}"),
            Fault::Status {
                code,
                diagnostics: Some(d),
            } => write!(f, "status {code} --diagnostics {d:?}"),
            Fault::RefuseHandshake => f.write_str("refuse-tls"),
            Fault::WrongCert => f.write_str("wrong-cert"),
            Fault::DnsMissing => f.write_str("dns-missing"),
            Fault::DnsTimeout => f.write_str("dns-timeout"),
        }
    }
}

/// The provisioning state the Skype role consults before letting traffic through.
#[derive(Debug, Clone)]
pub struct Gate {
    pub store: Arc<Provisioning>,
    pub clock: Arc<LabClock>,
}

/// What a simulated peer is.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// Its FQDN: Via sent-by, Contact, and `ms-ep-fqdn` of the marking it sends.
    pub fqdn: String,
    /// The SIP domains its users live in (never gated).
    pub domains: Vec<String>,
    /// Reply to each IM with a MESSAGE back to the sender through the edge.
    pub echo: bool,
    /// Answer INVITE with this failure status instead of 180 + 200.
    pub invite_failure: Option<u16>,
    /// The fault it starts with.
    pub fault: Fault,
    /// Provisioning gate (the Skype role).
    pub gate: Option<Gate>,
    /// Mark its own requests verified (`ms-edge-proxy-message-trust`), as a remote
    /// edge does; the internal pool does not.
    pub mark_requests: bool,
    /// How many received requests to keep.
    pub history: usize,
    /// Any contact is a failure of the edge (the blocked domain's peer): logged as a warning.
    pub tripwire: bool,
    /// An organisation's SIP domains it shares (a hosting provider in a split domain):
    /// it answers there only for the users in `hosted_users`, 404 for the rest (they are
    /// homed on the organisation's own pool).
    pub shared_domains: Vec<String>,
    /// The users of `shared_domains` homed here (`user@domain`, lowercase).
    pub hosted_users: Vec<String>,
}

/// The TLS configurations of a peer. `wrong_name` presents a leaf for another name and
/// is used while the fault is [`Fault::WrongCert`].
#[derive(Clone)]
pub struct PeerTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    pub wrong_name: Option<Arc<ServerConfig>>,
}

/// A request the peer received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub method: String,
    pub uri: String,
    pub from: String,
    pub to: String,
    pub call_id: String,
    /// The `ms-edge-proxy-message-trust` value that arrived, if any.
    pub trust: Option<String>,
    /// The whole message as text.
    pub text: String,
}

/// A response the peer received to a request it sent (NOTIFY, echo, originate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub reason: String,
    pub call_id: String,
    /// The CSeq method.
    pub method: String,
    /// The `ms-diagnostics` value, if any.
    pub diagnostics: Option<String>,
    pub text: String,
}

/// Why `originate` got no answer.
#[derive(Debug, thiserror::Error)]
pub enum OriginateError {
    /// The provider refuses to send to an organisation it has not provisioned.
    #[error("{0} is not provisioned for public IM connectivity")]
    NotProvisioned(String),
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {name} failed: {source}")]
    Handshake {
        name: String,
        source: std::io::Error,
    },
    #[error("invalid TLS server name `{0}`")]
    BadName(String),
    #[error("no final response within {0:?}")]
    Timeout(Duration),
    #[error("the connection closed before a final response")]
    Closed,
}

/// Changes a running peer's fault from elsewhere (the lab's admin endpoint); cloneable,
/// and it keeps the peer's shared state alive only as long as it is held.
#[derive(Clone)]
pub struct FaultSwitch {
    shared: Arc<Shared>,
}

/// Reads a peer's contacts from elsewhere (the lab's table and `/health`): every TCP
/// connection it accepted, whether or not TLS followed.
#[derive(Clone)]
pub struct ContactLog {
    shared: Arc<Shared>,
}

/// How often, and from where last, a peer was contacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Contacts {
    pub count: u64,
    pub last_from: Option<SocketAddr>,
}

/// A running simulated peer; stops when dropped or shut down.
pub struct SimPeer {
    shared: Arc<Shared>,
    local: SocketAddr,
    shutdown: CancellationToken,
}

/// The state the connections share.
struct Shared {
    spec: PeerSpec,
    local: SocketAddr,
    transport: Transport,
    tls: Option<PeerTls>,
    fault: Mutex<Fault>,
    /// Cancels the connections open now (a child of `shutdown`); replaced when a
    /// handshake fault is set, so the edge must reconnect and meet the fault.
    conns: Mutex<CancellationToken>,
    received: Mutex<VecDeque<Received>>,
    answers: Mutex<VecDeque<Answer>>,
    contacts: Mutex<Contacts>,
    /// Our client transactions by Via branch: where their final response goes.
    pending: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    arrived: Notify,
    shutdown: CancellationToken,
    /// Itself, so the `&self` handler callbacks can spawn delayed answers.
    me: Weak<Shared>,
}

// === impl PeerSpec ===

impl PeerSpec {
    /// A well-behaved peer for `fqdn` serving `domains`.
    pub fn new<I, S>(fqdn: &str, domains: I) -> PeerSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PeerSpec {
            fqdn: fqdn.to_string(),
            domains: domains.into_iter().map(Into::into).collect(),
            echo: false,
            invite_failure: None,
            fault: Fault::None,
            gate: None,
            mark_requests: true,
            history: DEFAULT_HISTORY,
            tripwire: false,
            shared_domains: Vec::new(),
            hosted_users: Vec::new(),
        }
    }

    /// Shares `domains` with an organisation and hosts `users` of them (split domain).
    pub fn hosting(mut self, domains: Vec<String>, users: Vec<String>) -> PeerSpec {
        self.shared_domains = domains;
        self.hosted_users = users;
        self
    }

    /// The lab role's peer from the topology table (the Skype role without a gate: add
    /// one with [`PeerSpec::gated`]).
    pub fn for_role(role: Role) -> PeerSpec {
        let r = role.spec();
        let mut spec = PeerSpec::new(r.fqdn, r.domains.iter().copied());
        spec.mark_requests = role != Role::Pool;
        spec.tripwire = role.is_tripwire();
        spec
    }

    pub fn gated(mut self, gate: Gate) -> PeerSpec {
        self.gate = Some(gate);
        self
    }

    pub fn echo(mut self, on: bool) -> PeerSpec {
        self.echo = on;
        self
    }

    pub fn fault(mut self, fault: Fault) -> PeerSpec {
        self.fault = fault;
        self
    }
}

// === impl PeerTls ===

impl PeerTls {
    /// The lab files of `fqdn` in `certs_dir` (`<fqdn>.crt`, `<fqdn>.key`, `ca.crt`),
    /// plus the wrong-name leaf ([`WRONG_NAME_FQDN`]) when its files exist.
    pub fn from_lab_dir(certs_dir: &Path, fqdn: &str) -> Result<PeerTls, TlsError> {
        let ca = [certs_dir.join("ca.crt")];
        let load = |name: &str| {
            TlsMaterial::load(
                &certs_dir.join(format!("{name}.crt")),
                &certs_dir.join(format!("{name}.key")),
                &ca,
                &[],
            )
        };
        let own = load(fqdn)?;
        let wrong_name = if certs_dir.join(format!("{WRONG_NAME_FQDN}.crt")).exists() {
            Some(server_config(&load(WRONG_NAME_FQDN)?, true)?)
        } else {
            None
        };
        Ok(PeerTls {
            server: server_config(&own, true)?,
            client: client_config(&own)?,
            wrong_name,
        })
    }
}

// === impl SimPeer ===

impl SimPeer {
    /// Serves `listener` (already bound, so tests use port 0): TLS when `tls` is given,
    /// plain TCP otherwise.
    pub fn start(spec: PeerSpec, listener: TcpListener, tls: Option<PeerTls>) -> SimPeer {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let shutdown = CancellationToken::new();
        let shared = Arc::new_cyclic(|me| Shared {
            fault: Mutex::new(spec.fault.clone()),
            conns: Mutex::new(shutdown.child_token()),
            received: Mutex::new(VecDeque::new()),
            answers: Mutex::new(VecDeque::new()),
            contacts: Mutex::new(Contacts::default()),
            pending: Mutex::new(HashMap::new()),
            arrived: Notify::new(),
            transport: if tls.is_some() {
                Transport::Tls
            } else {
                Transport::Tcp
            },
            spec,
            local,
            tls,
            shutdown: shutdown.clone(),
            me: me.clone(),
        });
        tokio::spawn(accept_loop(listener, shared.clone()));
        SimPeer {
            shared,
            local,
            shutdown,
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn spec(&self) -> &PeerSpec {
        &self.shared.spec
    }

    /// Changes the fault for new requests and connections (see [`FaultSwitch::set`]).
    pub fn set_fault(&self, fault: Fault) {
        self.fault_switch().set(fault);
    }

    pub fn fault(&self) -> Fault {
        lock(&self.shared.fault).clone()
    }

    /// A handle that changes this peer's fault while it runs.
    pub fn fault_switch(&self) -> FaultSwitch {
        FaultSwitch {
            shared: self.shared.clone(),
        }
    }

    /// The connections it accepted so far.
    pub fn contacts(&self) -> Contacts {
        *lock(&self.shared.contacts)
    }

    /// Waits until it has accepted at least `n` connections, or `wait` passes; the
    /// contacts then.
    pub async fn wait_for_contacts(&self, n: u64, wait: Duration) -> Contacts {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.shared.arrived.notified();
            let c = self.contacts();
            if c.count >= n || tokio::time::Instant::now() >= deadline {
                return c;
            }
            let tick = tokio::time::Instant::now() + Duration::from_millis(50);
            let _ = tokio::time::timeout_at(tick.min(deadline), notified).await;
        }
    }

    /// A handle that reads its contacts while it runs.
    pub fn contact_log(&self) -> ContactLog {
        ContactLog {
            shared: self.shared.clone(),
        }
    }

    /// The requests received, oldest first (the last `history` of them).
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).iter().cloned().collect()
    }

    /// The responses received to requests this peer sent.
    pub fn answers(&self) -> Vec<Answer> {
        lock(&self.shared.answers).iter().cloned().collect()
    }

    /// Waits until a received request matches `pred`, or `wait` passes.
    pub async fn wait_for(
        &self,
        wait: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        self.wait_in(&self.shared.received, wait, pred).await
    }

    /// Waits until an answer to one of its own requests matches `pred`.
    pub async fn wait_for_answer(
        &self,
        wait: Duration,
        pred: impl Fn(&Answer) -> bool,
    ) -> Option<Answer> {
        self.wait_in(&self.shared.answers, wait, pred).await
    }

    /// Waits until an entry of `list` matches `pred`, woken by each arrival (and every
    /// 50 ms, in case an arrival came between the check and the wait).
    async fn wait_in<T: Clone>(
        &self,
        list: &Mutex<VecDeque<T>>,
        wait: Duration,
        pred: impl Fn(&T) -> bool,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.shared.arrived.notified();
            if let Some(t) = lock(list).iter().find(|t| pred(t)) {
                return Some(t.clone());
            }
            let tick = tokio::time::Instant::now() + Duration::from_millis(50);
            if tokio::time::timeout_at(tick.min(deadline), notified)
                .await
                .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return None;
            }
        }
    }

    /// Sends one MESSAGE from `from` to `to` over a new connection to the edge at `edge`
    /// (TLS with our client certificate, `edge_name` being the name its certificate must
    /// hold) and returns the final response.
    pub async fn originate(
        &self,
        edge: SocketAddr,
        edge_name: &str,
        to: &str,
        from: &str,
        body: &str,
    ) -> Result<Answer, OriginateError> {
        let s = &self.shared;
        if let Some(domain) = s.refused_domain(&[host_of(to)]) {
            return Err(OriginateError::NotProvisioned(domain));
        }
        let tcp = TcpStream::connect(edge)
            .await
            .map_err(|source| OriginateError::Connect { addr: edge, source })?;
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().unwrap_or(s.local);
        let conn = match &s.tls {
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from(edge_name.to_string())
                    .map_err(|_| OriginateError::BadName(edge_name.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(tls.client.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|source| OriginateError::Handshake {
                        name: edge_name.to_string(),
                        source,
                    })?;
                s.clone().serve(stream, edge, local, Transport::Tls)
            }
            None => s.clone().serve(tcp, edge, local, Transport::Tcp),
        };
        let req = OutRequest {
            method: "MESSAGE",
            uri: to.to_string(),
            from: format!("<{from}>;tag={}", token()),
            to: format!("<{to}>"),
            call_id: format!("{}@{}", token(), s.spec.fqdn),
            route: Vec::new(),
            extra: Vec::new(),
            body: Some(("text/plain", body.to_string())),
        };
        let (bytes, rx) = s.prepare(&req);
        conn.send(bytes).map_err(|_| OriginateError::Closed)?;
        let answer = tokio::time::timeout(ORIGINATE_TIMEOUT, rx)
            .await
            .map_err(|_| OriginateError::Timeout(ORIGINATE_TIMEOUT))?
            .map_err(|_| OriginateError::Closed);
        drop(conn);
        answer
    }

    /// Stops accepting and closes its connections.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

// === impl FaultSwitch ===

impl FaultSwitch {
    /// Changes the fault for the next request and connection. Setting a handshake fault
    /// ([`Fault::is_handshake`]) also closes the open connections: the edge keeps a
    /// connection per peer, and would otherwise never handshake again.
    pub fn set(&self, fault: Fault) {
        let close = fault.is_handshake();
        *lock(&self.shared.fault) = fault;
        if close {
            let mut conns = lock(&self.shared.conns);
            conns.cancel();
            *conns = self.shared.shutdown.child_token();
        }
    }

    pub fn get(&self) -> Fault {
        lock(&self.shared.fault).clone()
    }

    /// The FQDN of the peer it controls.
    pub fn fqdn(&self) -> &str {
        &self.shared.spec.fqdn
    }
}

// === impl ContactLog ===

impl ContactLog {
    pub fn get(&self) -> Contacts {
        *lock(&self.shared.contacts)
    }

    /// The FQDN of the peer it reads.
    pub fn fqdn(&self) -> &str {
        &self.shared.spec.fqdn
    }

    /// The tripwire's state in words: `not contacted`, or `TRIPPED: …`.
    pub fn tripwire_state(&self) -> String {
        let c = self.get();
        match c.last_from {
            None => "tripwire: not contacted (0 contacts)".to_string(),
            Some(from) => format!("TRIPPED: {} contact(s), last from {from}", c.count),
        }
    }
}

impl Drop for SimPeer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

// === impl Shared ===

async fn accept_loop(listener: TcpListener, s: Arc<Shared>) {
    loop {
        let (tcp, addr) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(peer = %s.spec.fqdn, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = s.shutdown.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        {
            let mut c = lock(&s.contacts);
            c.count += 1;
            c.last_from = Some(addr);
        }
        s.arrived.notify_waiters();
        if s.spec.tripwire {
            tracing::warn!(peer = %s.spec.fqdn, from = %addr, "tripwire: a peer that must never be contacted was contacted");
        }
        let s = s.clone();
        tokio::spawn(async move {
            let local = tcp.local_addr().unwrap_or(s.local);
            let fault = lock(&s.fault).clone();
            let Some(tls) = s.tls.clone() else {
                s.serve(tcp, addr, local, Transport::Tcp);
                return;
            };
            let config = match fault {
                Fault::RefuseHandshake => {
                    tracing::info!(peer = %s.spec.fqdn, from = %addr, "fault: closing before the TLS handshake");
                    drop(tcp);
                    return;
                }
                Fault::WrongCert => tls.wrong_name.clone().unwrap_or(tls.server.clone()),
                _ => tls.server.clone(),
            };
            match tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                Ok(stream) => {
                    s.serve(stream, addr, local, Transport::Tls);
                }
                Err(e) => {
                    tracing::info!(peer = %s.spec.fqdn, from = %addr, error = %e, "TLS handshake failed")
                }
            }
        });
    }
}

impl Shared {
    /// Runs a connection on the edge's stream task; returns its handle for sending.
    fn serve<S>(
        self: Arc<Self>,
        io: S,
        remote: SocketAddr,
        local: SocketAddr,
        transport: Transport,
    ) -> ConnHandle
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let peer = Peer {
            interface: Interface::External,
            transport,
            addr: remote,
            identity: PeerIdentity::anonymous(),
        };
        let (handle, rx) = stream::channel(&peer, local, None);
        let settings = StreamSettings {
            limits: FrameLimits::default(),
            idle_timeout: Duration::from_secs(600),
            header_timeout: Duration::from_secs(10),
            read_backpressure: false,
            keepalive: None,
        };
        let shutdown = lock(&self.conns).clone();
        let h = handle.clone();
        tokio::spawn(stream::run(io, h, rx, peer, self, settings, shutdown));
        handle
    }

    fn on_request(self: &Arc<Self>, m: Message, reply: &ReplyTo) {
        self.record(&m);
        if m.method() == Method::Ack {
            return;
        }
        match lock(&self.fault).clone() {
            Fault::Drop => (),
            Fault::Delay(d) => {
                let me = self.clone();
                let reply = reply.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    me.answer(&m, &reply);
                });
            }
            Fault::Status { code, diagnostics } => {
                let extra: Vec<(&str, String)> = diagnostics
                    .into_iter()
                    .map(|d| ("ms-diagnostics", d))
                    .collect();
                send(
                    reply,
                    respond(&m, code, crate::policy::reason_phrase(code), &extra, None),
                );
            }
            Fault::None
            | Fault::RefuseHandshake
            | Fault::WrongCert
            | Fault::DnsMissing
            | Fault::DnsTimeout => self.answer(&m, reply),
        }
    }

    /// Answers as a real peer: the provisioning gate first, then by method.
    fn answer(self: &Arc<Self>, m: &Message, reply: &ReplyTo) {
        let from_host = m.from().map(|f| f.uri.host).unwrap_or("");
        let to_host = m.uri().map(|u| u.host).unwrap_or("");
        if let Some(domain) = self.refused_domain(&[from_host, to_host]) {
            let diag = not_provisioned_diagnostics(&domain);
            send(
                reply,
                respond(m, 403, "Forbidden", &[("ms-diagnostics", diag)], None),
            );
            return;
        }
        if !self.hosts(m) {
            send(reply, respond(m, 404, "Not Found", &[], None));
            return;
        }
        match m.method() {
            Method::Message => {
                send(reply, respond(m, 200, "OK", &[], None));
                if self.spec.echo {
                    self.echo(m, reply);
                }
            }
            Method::Invite => match self.spec.invite_failure {
                Some(code) => send(
                    reply,
                    respond(m, code, crate::policy::reason_phrase(code), &[], None),
                ),
                None => {
                    let tag = token();
                    let contact = ("Contact", self.contact());
                    send(
                        reply,
                        respond_tagged(
                            m,
                            180,
                            "Ringing",
                            &tag,
                            std::slice::from_ref(&contact),
                            None,
                        ),
                    );
                    let sdp = sdp_answer(m.body(), self.local);
                    send(
                        reply,
                        respond_tagged(
                            m,
                            200,
                            "OK",
                            &tag,
                            &[contact],
                            Some(("application/sdp", &sdp)),
                        ),
                    );
                }
            },
            Method::Subscribe => {
                let tag = token();
                let expires = m
                    .headers()
                    .iter()
                    .find(|h| m.text(h.name_range.clone()).eq_ignore_ascii_case("expires"))
                    .map(|h| m.value_of(h).trim().to_string())
                    .unwrap_or_else(|| "3600".into());
                let extra = [("Expires", expires.clone()), ("Contact", self.contact())];
                send(reply, respond_tagged(m, 200, "OK", &tag, &extra, None));
                self.notify(m, &tag, &expires, reply);
            }
            Method::Options => {
                let extra = [
                    ("Allow", ALLOW.to_string()),
                    ("Supported", "ms-dialog-route-set-update, timer".to_string()),
                    (
                        "Accept",
                        "application/sdp, text/plain, application/pidf+xml".to_string(),
                    ),
                ];
                send(reply, respond(m, 200, "OK", &extra, None));
            }
            Method::Bye
            | Method::Cancel
            | Method::Notify
            | Method::Benotify
            | Method::Info
            | Method::Update
            | Method::Prack => send(reply, respond(m, 200, "OK", &[], None)),
            _ => send(
                reply,
                respond(
                    m,
                    405,
                    "Method Not Allowed",
                    &[("Allow", ALLOW.to_string())],
                    None,
                ),
            ),
        }
    }

    /// The echo: a MESSAGE from the user the IM was for back to its sender, over the same
    /// connection, so it crosses the edge the other way.
    fn echo(self: &Arc<Self>, m: &Message, reply: &ReplyTo) {
        let (Some(from), Some(to)) = (m.header(HeaderName::From), m.header(HeaderName::To)) else {
            return;
        };
        let sender = uri_text(&m.value_of(from)).to_string();
        let me = uri_text(&m.value_of(to)).to_string();
        let body = format!("echo: {}", String::from_utf8_lossy(m.body()));
        let req = OutRequest {
            method: "MESSAGE",
            uri: sender.clone(),
            from: format!("<{me}>;tag={}", token()),
            to: format!("<{sender}>"),
            call_id: format!("{}@{}", token(), self.spec.fqdn),
            route: Vec::new(),
            extra: Vec::new(),
            body: Some(("text/plain", body)),
        };
        let (bytes, _rx) = self.prepare(&req);
        send(reply, bytes);
    }

    /// The first NOTIFY of a subscription: PIDF for the watched user, in the dialog the
    /// 200 created (Route from the Record-Route set, Request-URI from Contact).
    fn notify(self: &Arc<Self>, m: &Message, tag: &str, expires: &str, reply: &ReplyTo) {
        let (Some(from), Some(to)) = (m.header(HeaderName::From), m.header(HeaderName::To)) else {
            return;
        };
        let subscriber = m.value_of(from).trim().to_string();
        let watched = m.value_of(to).trim().to_string();
        let presentity = uri_text(&watched).to_string();
        let target = m
            .header(HeaderName::Contact)
            .map(|c| uri_text(&m.value_of(c)).to_string())
            .unwrap_or_else(|| uri_text(&subscriber).to_string());
        let route = m
            .values(HeaderName::RecordRoute)
            .into_iter()
            .map(|(_, r)| m.text(r).trim().to_string())
            .collect();
        let event = m
            .header_value(HeaderName::Event)
            .map(|e| e.trim().to_string())
            .unwrap_or_else(|| "presence".into());
        let pidf = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{presentity}\">\r\n<tuple id=\"sipedge\"><status><basic>open</basic></status><contact>{presentity}</contact></tuple>\r\n</presence>\r\n"
        );
        let req = OutRequest {
            method: "NOTIFY",
            uri: target,
            from: format!("{watched};tag={tag}"),
            to: subscriber,
            call_id: m.call_id().unwrap_or("").to_string(),
            route,
            extra: vec![
                ("Event", event),
                ("Subscription-State", format!("active;expires={expires}")),
            ],
            body: Some(("application/pidf+xml", pidf)),
        };
        let (bytes, _rx) = self.prepare(&req);
        send(reply, bytes);
    }

    /// Whether the request is for a user this peer has: any user of its own domains, and
    /// in a shared (split) domain only the users homed here.
    fn hosts(&self, m: &Message) -> bool {
        let Some(uri) = m.uri() else { return true };
        let shared = self
            .spec
            .shared_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(uri.host));
        if !shared || m.method() == Method::Ack {
            return true;
        }
        let user = format!("{}@{}", uri.user.unwrap_or(""), uri.host).to_ascii_lowercase();
        // Inside a dialog the Request-URI is our Contact: the To user is who it is for.
        let to = m
            .to()
            .filter(|t| t.tag().is_some())
            .map(|t| format!("{}@{}", t.uri.user.unwrap_or(""), t.uri.host).to_ascii_lowercase());
        self.spec.hosted_users.contains(&user)
            || to.is_some_and(|t| self.spec.hosted_users.contains(&t))
    }

    /// The first domain of `domains` (not ours) the provider has not provisioned.
    fn refused_domain(&self, domains: &[&str]) -> Option<String> {
        let gate = self.spec.gate.as_ref()?;
        let now = gate.clock.now();
        domains
            .iter()
            .filter(|d| !d.is_empty())
            .filter(|d| !self.spec.domains.iter().any(|o| o.eq_ignore_ascii_case(d)))
            .find(|d| !gate.store.is_provisioned(d, now))
            .map(|d| d.to_ascii_lowercase())
    }

    fn contact(&self) -> String {
        format!(
            "<sip:{}:{};transport={}>",
            self.spec.fqdn,
            self.local.port(),
            self.transport.as_str()
        )
    }

    /// Writes a request of ours and registers its client transaction.
    fn prepare(&self, r: &OutRequest) -> (Bytes, oneshot::Receiver<Answer>) {
        let branch = format!("z9hG4bK{}", token());
        let mut out = String::with_capacity(768);
        let _ = write!(
            out,
            "{} {} SIP/2.0\r\nVia: SIP/2.0/{} {}:{};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {}\r\n",
            r.method,
            r.uri,
            self.transport.via_token(),
            self.spec.fqdn,
            self.local.port(),
            r.from,
            r.to,
            r.call_id,
            rand::random::<u16>() as u32 + 1,
            r.method,
        );
        for route in &r.route {
            let _ = write!(out, "Route: {route}\r\n");
        }
        let _ = write!(out, "Contact: {}\r\n", self.contact());
        if self.spec.mark_requests {
            let _ = write!(
                out,
                "ms-edge-proxy-message-trust: ms-source-type=EdgeProxyGenerated;ms-ep-fqdn={};ms-source-verified-user=verified\r\n",
                self.spec.fqdn
            );
        }
        for (name, value) in &r.extra {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        build::write_body(&mut out, r.body.as_ref().map(|(c, b)| (*c, b.as_str())));
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(branch, tx);
        (Bytes::from(out), rx)
    }

    fn on_response(&self, m: Message) {
        let Some(status) = m.status() else { return };
        if status < 200 {
            return;
        }
        let answer = Answer {
            status,
            reason: m.reason().to_string(),
            call_id: m.call_id().unwrap_or("").to_string(),
            method: m
                .cseq()
                .map(|c| c.method_str.to_string())
                .unwrap_or_default(),
            diagnostics: m
                .header_value(HeaderName::MsDiagnostics)
                .map(|d| d.trim().to_string()),
            text: String::from_utf8_lossy(m.bytes()).into_owned(),
        };
        push_bounded(&self.answers, answer.clone(), self.spec.history);
        let branch = m.top_via().and_then(|v| v.branch().map(str::to_string));
        if let Some(tx) = branch.and_then(|b| lock(&self.pending).remove(&b)) {
            let _ = tx.send(answer);
        }
        self.arrived.notify_waiters();
    }

    fn record(&self, m: &Message) {
        let value = |n| m.header_value(n).map(|v| v.trim().to_string());
        let r = Received {
            method: m.method_str().to_string(),
            uri: m
                .uri_range()
                .map(|r| m.text(r).to_string())
                .unwrap_or_default(),
            from: value(HeaderName::From).unwrap_or_default(),
            to: value(HeaderName::To).unwrap_or_default(),
            call_id: m.call_id().unwrap_or("").to_string(),
            trust: value(HeaderName::MsTrust),
            text: String::from_utf8_lossy(m.bytes()).into_owned(),
        };
        push_bounded(&self.received, r, self.spec.history);
        self.arrived.notify_waiters();
    }
}

impl Handler for Shared {
    fn on_message(&self, msg: Bytes, _peer: &Peer, reply: &ReplyTo) {
        let Ok(m) = Message::parse(msg, false) else {
            tracing::debug!(peer = %self.spec.fqdn, "unparsable message ignored");
            return;
        };
        if m.is_request() {
            // The handler is only ever installed as an `Arc<Shared>`; re-derive it to spawn.
            if let Some(me) = self.me.upgrade() {
                me.on_request(m, reply);
            }
        } else {
            self.on_response(m);
        }
    }

    fn on_frame_error(&self, _head: Bytes, err: FrameError, peer: &Peer, _reply: &ReplyTo) {
        tracing::debug!(peer = %self.spec.fqdn, from = %peer.addr, error = %err, "framing error");
    }

    fn on_open(&self, _conn: &ConnHandle) {}

    fn on_closed(&self, _conn: &ConnHandle, _reason: &str) {}
}

// === helpers ===

/// A request this peer sends.
struct OutRequest {
    method: &'static str,
    uri: String,
    /// Full From value, with tag.
    from: String,
    /// Full To value.
    to: String,
    call_id: String,
    route: Vec<String>,
    extra: Vec<(&'static str, String)>,
    body: Option<(&'static str, String)>,
}

fn send(reply: &ReplyTo, bytes: impl Into<Bytes>) {
    let _ = reply.send(bytes.into());
}

fn respond(
    m: &Message,
    status: u16,
    reason: &str,
    extra: &[(&str, String)],
    body: Option<(&str, &str)>,
) -> BytesMut {
    respond_tagged(m, status, reason, &token(), extra, body)
}

/// `sip::build::response` (which copies Via, From, To, Call-ID and CSeq exactly), with a
/// body when there is one, the Record-Route set in a dialog-creating answer, and
/// [`RECEIVED_TRUST_HEADER`] reporting the trust marking the request arrived with.
fn respond_tagged(
    m: &Message,
    status: u16,
    reason: &str,
    tag: &str,
    extra: &[(&str, String)],
    body: Option<(&str, &str)>,
) -> BytesMut {
    let trust = m
        .header_value(HeaderName::MsTrust)
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| NO_TRUST.to_string());
    let mut all: Vec<(&str, String)> = Vec::with_capacity(extra.len() + 3);
    if (101..300).contains(&status) && m.method().creates_dialog() {
        // RFC 3261 §12.1.1: the dialog's route set is the request's Record-Route, so
        // the caller's ACK and BYE come back through the edge.
        all.extend(
            m.values(HeaderName::RecordRoute)
                .into_iter()
                .map(|(_, r)| ("Record-Route", m.text(r).trim().to_string())),
        );
    }
    all.extend(extra.iter().map(|(n, v)| (*n, v.clone())));
    all.push((RECEIVED_TRUST_HEADER, trust));
    let mut out = build::response(m, status, reason, None, Some(tag), &all);
    if let Some((ctype, body)) = body {
        const EMPTY: &[u8] = b"Content-Length: 0\r\n\r\n";
        debug_assert!(out.ends_with(EMPTY));
        out.truncate(out.len() - EMPTY.len());
        build::write_body(&mut out, Some((ctype, body)));
    }
    out
}

/// An SDP answer accepting each offered media line on a port of ours.
fn sdp_answer(offer: &[u8], local: SocketAddr) -> String {
    let ip = local.ip();
    let mut sdp = format!(
        "v=0\r\no=- {} 1 IN IP4 {ip}\r\ns=sipedge simulated peer\r\nc=IN IP4 {ip}\r\nt=0 0\r\n",
        rand::random::<u32>()
    );
    let offer = String::from_utf8_lossy(offer);
    let mut port = 40_000;
    let mut any = false;
    for line in offer.lines().filter(|l| l.starts_with("m=")) {
        let mut parts = line[2..].split_whitespace();
        let (Some(media), Some(_), Some(proto)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let fmts: Vec<&str> = parts.collect();
        let _ = write!(
            sdp,
            "m={media} {port} {proto} {}\r\na=sendrecv\r\n",
            fmts.join(" ")
        );
        port += 2;
        any = true;
    }
    if !any {
        let _ = write!(
            sdp,
            "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        );
    }
    sdp
}

/// The URI inside a From/To/Contact value (`"A" <sip:a@b>;tag=1` → `sip:a@b`).
pub(crate) fn uri_text(value: &str) -> &str {
    let v = value.trim();
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.split(';').next().unwrap_or(v).trim(),
    }
}

/// The host of a SIP URI given as text.
fn host_of(uri: &str) -> &str {
    NameAddr::parse(uri).map(|n| n.uri.host).unwrap_or("")
}

fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn push_bounded<T>(q: &Mutex<VecDeque<T>>, item: T, cap: usize) {
    let mut q = lock(q);
    if q.len() >= cap.max(1) {
        q.pop_front();
    }
    q.push_back(item);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_text_takes_what_is_inside_the_brackets() {
        assert_eq!(
            uri_text("\"Sam\" <sip:sam@live.com>;tag=1"),
            "sip:sam@live.com"
        );
        assert_eq!(uri_text("sip:sam@live.com;tag=1"), "sip:sam@live.com");
        assert_eq!(host_of("sip:alice@contoso.test"), "contoso.test");
    }

    #[test]
    fn the_sdp_answer_mirrors_the_offer() {
        let offer = b"v=0\r\nm=audio 5004 RTP/AVP 0 8\r\nm=video 5006 RTP/AVP 96\r\n";
        let a = sdp_answer(offer, "127.0.0.4:5061".parse().unwrap());
        assert!(a.contains("m=audio 40000 RTP/AVP 0 8\r\n"), "{a}");
        assert!(a.contains("m=video 40002 RTP/AVP 96\r\n"), "{a}");
        assert!(a.starts_with("v=0\r\n"));
        assert!(sdp_answer(b"", "127.0.0.4:5061".parse().unwrap()).contains("m=audio"));
    }
}
