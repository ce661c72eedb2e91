//! The proxy core: the ordered pipeline from a received message to what goes out.
//!
//! Requests: validate → match a transaction → decide (`policy::decide`) → resolve →
//! rewrite (`forward`) → send over the pool. Responses: match the client transaction →
//! relay back over the server transaction's connection. Every refusal goes through
//! `respond`, once, with one log line.

pub mod amplification;
pub mod forward;
pub mod quota;
pub mod record;
pub mod respond;
pub mod topology;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::config::{Live, Snapshot};
use crate::metrics::Direction;
use crate::policy::{self, Decision, DnsFacts, Rejection, RequestFacts, Route, SrvAnswer};
use crate::sip::framing::FrameError;
use crate::sip::{build, HeaderName, Message, Method, Uri};
use crate::transport::pool::{ConnectContext, ConnectError, Pool, PoolKey};
use crate::transport::stream::StreamSettings;
use crate::transport::{
    conn, ConnHandle, Handler, Interface, Peer, Registry, ReplyTo, TlsSource,
    Transport,
};
use crate::txn::{
    self, client, server, ClientTxn, MethodKey, ResponseAction, ServerTxn, Side, Table,
    TimerValues, TxnKey,
};

/// Our branches start with this after the magic cookie, so our own Vias are recognisable.
const BRANCH_PREFIX: &str = "z9hG4bKse";

/// The actual listening ports of one interface (after binding port 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ports {
    pub udp: Option<u16>,
    pub tcp: Option<u16>,
    pub tls: Option<u16>,
}

impl Ports {
    pub fn get(&self, t: Transport) -> Option<u16> {
        match t {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
            Transport::Tls => self.tls,
        }
    }
}

/// What the core needs from the outside world at start.
pub struct CoreParts {
    pub live: Arc<Live>,
    pub udp: HashMap<Interface, Arc<UdpSocket>>,
    pub ports: HashMap<Interface, Ports>,
    pub tls: Option<Arc<dyn TlsSource>>,
    pub resolver: Option<Arc<dyn crate::dns::Resolve>>,
    pub conn_shutdown: CancellationToken,
    /// Seals the internal route set (`topology`), under the keys the edge loaded at start.
    pub topology: topology::Hider,
}

/// The proxy core, shared by every transport task.
pub struct Core {
    live: Arc<Live>,
    txns: Table<Entry>,
    registry: Registry,
    pool: Pool,
    udp: HashMap<Interface, Arc<UdpSocket>>,
    ports: HashMap<Interface, Ports>,
    tls: Option<Arc<dyn TlsSource>>,
    resolver: Option<Arc<dyn crate::dns::Resolve>>,
    /// Discovered-partner rate and contact limits (only discovered partners' requests
    /// take this lock).
    limits: std::sync::Mutex<policy::DiscoveredPartnerLimits>,
    conn_shutdown: CancellationToken,
    draining: AtomicBool,
    /// Pending requests per external source IP (`limits.max_pending_per_source`).
    quota: Arc<quota::SourceQuota>,
    decisions: record::DecisionLog,
    /// Targets whose last connect failed: until when to answer at once, how many times
    /// in a row, and the answer.
    failures: std::sync::Mutex<HashMap<PoolKey, (Instant, u32, Rejection)>>,
    seq: AtomicU64,
    metrics: Arc<crate::metrics::Metrics>,
    instance: u32,
    /// Seals the internal route set into what leaves outside (`topology`).
    topology: topology::Hider,
    me: OnceLock<Weak<Core>>,
}

enum Entry {
    Server(ServerEntry),
    Client(ClientEntry),
}

struct ServerEntry {
    fsm: ServerTxn,
    request: Message,
    reply: ReplyTo,
    source: SocketAddr,
    arrival: Interface,
    /// When the request arrived; taken when the first final response leaves (latency).
    received: Option<Instant>,
    last: Option<Bytes>,
    client: Option<TxnKey>,
    to_tag: String,
    /// The request's place in its source's quota, until the final response leaves.
    slot: Option<quota::QuotaSlot>,
    /// The decision made for it, recorded with the final outcome when the final response
    /// leaves (so a forward that a limit or a failed connection refused is logged as such).
    decision: Option<Box<PendingDecision>>,
}

/// A decision waiting for its request's final response to be recorded.
struct PendingDecision {
    peer: Peer,
    snap: Arc<Snapshot>,
    dns: DnsFacts,
    outcome: &'static str,
    rule: &'static str,
    sealed_route: bool,
}

struct ClientEntry {
    fsm: ClientTxn,
    bytes: Bytes,
    dest: Option<ReplyTo>,
    server: TxnKey,
    /// The forwarded INVITE, to build the hop-by-hop ACK and CANCEL.
    forwarded: Option<Message>,
    cancel_pending: bool,
    arrival: Interface,
    /// Where the request left, and the domain it was for (for 1034 diagnostics).
    exit: Interface,
    domain: String,
    target: String,
    /// The transaction's span, entered again when its responses and timers are handled.
    span: tracing::Span,
    /// What is needed to try the next SRV target when this one answers 503.
    retry: Option<Box<Retry>>,
    /// The Via lines hidden from the external side, put back on the response (`topology`).
    hidden_via: Option<Bytes>,
    /// The marking responses from outside carry inward (`policy::Forward::response_trust`).
    response_trust: Option<Arc<policy::ResponseTrust>>,
}

/// A forwarded request with targets left to try (RFC 3263 §4.3: on 503, the next one).
struct Retry {
    request: Message,
    peer: Peer,
    forward: policy::Forward,
    plan: RoutePlan,
    snap: Arc<Snapshot>,
    remaining: Vec<Target>,
}

/// Where a forwarded request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    transport: Transport,
    /// The name the server's certificate must carry (SNI), for TLS.
    tls_name: Option<String>,
    /// The address of the connection (or datagram source) the dialog's external peer used:
    /// reached over that flow while it lasts (RFC 5923 / RFC 5626), whatever the URI says.
    flow: Option<SocketAddr>,
}

impl Core {
    pub fn new(parts: CoreParts) -> Arc<Core> {
        let snap = parts.live.load();
        let core = Arc::new(Core {
            txns: Table::new(snap.limits.max_transactions),
            live: parts.live,
            registry: Registry::default(),
            pool: Pool::default(),
            udp: parts.udp,
            ports: parts.ports,
            tls: parts.tls,
            resolver: parts.resolver,
            limits: std::sync::Mutex::new(policy::DiscoveredPartnerLimits::new()),
            conn_shutdown: parts.conn_shutdown,
            draining: AtomicBool::new(false),
            quota: quota::SourceQuota::new(),
            decisions: record::DecisionLog::default(),
            failures: std::sync::Mutex::new(HashMap::new()),
            seq: AtomicU64::new(1),
            metrics: Arc::default(),
            instance: rand::random(),
            topology: parts.topology,
            me: OnceLock::new(),
        });
        let _ = core.me.set(Arc::downgrade(&core));
        core
    }

    /// Transactions in flight.
    pub fn transactions(&self) -> usize {
        self.txns.len()
    }

    /// Requests still waiting for their final response: what a graceful stop waits for.
    pub fn pending(&self) -> usize {
        self.txns
            .count(|e| matches!(e, Entry::Server(s) if !s.fsm.is_final()))
    }

    /// Requests from `ip` still waiting for their final response.
    pub fn pending_from(&self, ip: IpAddr) -> usize {
        self.quota.pending(ip)
    }

    /// Open stream connections (inbound and outbound).
    pub fn connections(&self) -> usize {
        self.registry.len()
    }

    /// The counters behind the admin endpoint's `/metrics`.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// Stops taking new requests (they get 503); in-flight transactions go on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    fn handler(&self) -> Option<Arc<dyn Handler>> {
        let me = self.me.get()?.upgrade()?;
        Some(me)
    }

    fn next_tag(&self) -> String {
        // Sized up front: formatting into an empty String would grow it twice.
        let mut tag = String::with_capacity(32);
        let _ = write!(
            tag,
            "{:08x}{:x}",
            self.instance,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        tag
    }

    // === requests ===

    fn on_request(&self, m: Message, peer: &Peer, reply: &ReplyTo) {
        if let Err(e) = m.validate_request() {
            let status = e.status();
            tracing::info!(peer = %peer.addr, interface = %peer.interface, reason = %e, status, "request refused");
            self.respond_stateless(&m, peer, reply, status, |tag| {
                respond::bad_request(&m, &e, Some(peer.addr), tag)
            });
            return;
        }
        if let Some(tags) = unsupported_proxy_require(&m) {
            tracing::info!(peer = %peer.addr, interface = %peer.interface, %tags, "request refused: 420");
            self.respond_stateless(&m, peer, reply, 420, |tag| {
                respond::bad_extension(&m, &tags, Some(peer.addr), tag)
            });
            return;
        }
        // === topology hiding: a Route of ours from outside gets its hidden entries back ===
        let (m, sealed_route) = match self.expand_inbound_route(m, peer, reply) {
            Some(opened) => opened,
            None => return,
        };
        let Some(via) = m.top_via() else { return };
        // One span per transaction; debug level so that it costs nothing at the default level.
        let span = tracing::debug_span!("txn", call_id = m.call_id().unwrap_or(""), method = m.method_str(), interface = %peer.interface);
        let _entered = span.enter();
        let method = m.method();
        let to_tag = m.to().and_then(|t| t.tag());
        let server_id = server_txn_id(&m, via.branch(), via.host, via.port, to_tag);
        match method {
            Method::Ack => {
                // A pre-3261 ACK carries the To tag of the final response, which an INVITE
                // outside a dialog lacked: with no INVITE under its own id, it is matched
                // without the tag.
                let invite = TxnKey::new(Side::Server, server_id.clone(), MethodKey::Invite);
                let known = via.is_rfc3261() || self.txns.with(&invite, |_| ((), None)).is_some();
                let server_id = if known {
                    server_id
                } else {
                    server_txn_id(&m, via.branch(), via.host, via.port, None)
                };
                return self.on_ack(m, peer, reply, server_id, sealed_route);
            }
            Method::Cancel => return self.on_cancel(m, peer, reply, server_id),
            _ => {}
        }
        let key = TxnKey::new(Side::Server, server_id, method_key(method));
        let retransmitted = self.txns.with(&key, |e| match e {
            Entry::Server(s) => match s.fsm.on_retransmission() {
                server::RetransmitAction::Resend => {
                    (s.last.clone().map(|b| (b, s.reply.clone())), None)
                }
                server::RetransmitAction::Absorb => (None, None),
            },
            Entry::Client(_) => (None, None),
        });
        if let Some(resend) = retransmitted {
            if let Some((bytes, to)) = resend {
                let _ = to.send(bytes);
            }
            return;
        }
        let snap = self.live.load();
        if self.draining.load(Ordering::Acquire) {
            let r = Rejection::new(503, "Service Unavailable", "shutting-down").with_retry_after(5);
            self.reject_stateless(&m, peer, reply, &r, &snap);
            return;
        }
        let mut entry = self.server_entry(&m, peer, reply, method == Method::Invite, &snap);
        if peer.interface == Interface::External {
            // The internal side is the organisation's own pool, one address for everyone.
            let max = quota::limit(
                snap.limits.max_pending_per_source,
                self.txns.len(),
                self.txns.capacity(),
            );
            match self.quota.admit(peer.addr.ip(), max) {
                Some(slot) => entry.slot = Some(slot),
                None => {
                    let r = Rejection::new(503, "Service Unavailable", "source-overload")
                        .with_retry_after(5);
                    self.reject_stateless(&m, peer, reply, &r, &snap);
                    return;
                }
            }
        }
        match self.txns.insert(key.clone(), Entry::Server(entry), None) {
            Ok(()) => {}
            // The same request read by another reader at the same moment: a retransmission.
            Err(crate::txn::TableFull::Exists) => return,
            Err(crate::txn::TableFull::Full) => {
                self.reject_stateless(&m, peer, reply, &Rejection::overloaded(), &snap);
                return;
            }
        }
        if method == Method::Invite {
            // 100 Trying at once so the previous hop stops retransmitting (§16.2).
            let trying = build::response(&m, 100, "Trying", Some(peer.addr), None, &[]);
            self.send_local(&key, 100, trying);
        }
        let peer = self.identify(peer, &snap);
        let plan = self.route_plan(&m, &snap, peer.interface, sealed_route);
        let facts = self.facts(&m, &plan, &snap);
        let question = match policy::decide_or_ask(&facts, &peer, &snap) {
            Ok(decision) => {
                return self.act(key, &m, decision, &peer, &plan, &snap, DnsFacts::none());
            }
            Err(q) => q,
        };
        let Some(resolver) = self.resolver.clone() else {
            let dns = DnsFacts::answer(
                &question,
                SrvAnswer::Failed("no DNS resolver configured".into()),
            );
            let decision = policy::decide(&facts, &peer, &snap, &dns);
            return self.act(key, &m, decision, &peer, &plan, &snap, dns);
        };
        let Some(me) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        let span = tracing::Span::current();
        tokio::spawn(async move {
            let _entered = span.enter();
            let dns = srv_answer(resolver.as_ref(), &question).await;
            // The facts borrow the message, which moved into this task: take them again.
            let facts = me.facts(&m, &plan, &snap);
            let decision = policy::decide(&facts, &peer, &snap, &dns);
            me.act(key, &m, decision, &peer, &plan, &snap, dns);
        });
    }

    /// Records the decision and carries it out.
    #[allow(clippy::too_many_arguments)]
    fn act(
        &self,
        key: TxnKey,
        m: &Message,
        decision: Decision,
        peer: &Peer,
        plan: &RoutePlan,
        snap: &Arc<Snapshot>,
        dns: DnsFacts,
    ) {
        self.note_decision(&key, peer, snap, dns, &decision, plan.sealed);
        match decision {
            Decision::Reject(r) => self.reject(&key, &r, snap),
            Decision::AnswerOptions => {
                let tag = self.server_tag(&key);
                let ok = respond::options_ok(m, Some(peer.addr), &tag);
                self.send_local(&key, 200, ok);
            }
            Decision::Forward(f) => {
                if let Some(limit) = &f.limit {
                    let admitted = self.limits.lock().unwrap_or_else(|p| p.into_inner()).admit(
                        &snap.federation,
                        limit,
                        Instant::now(),
                    );
                    if let Err(r) = admitted {
                        return self.reject(&key, &r, snap);
                    }
                }
                let targets = match self.targets_for(m, &f.route, plan) {
                    Ok(t) => t,
                    Err(r) => return self.reject(&key, &r, snap),
                };
                tracing::debug!(rule = f.rule, exit = %f.exit, target = %targets[0].host, "forwarding");
                self.forward(key, m, peer, &f, targets, plan, snap);
            }
        }
    }

    /// Keeps the decision with its server transaction until the final response leaves.
    fn note_decision(
        &self,
        key: &TxnKey,
        peer: &Peer,
        snap: &Arc<Snapshot>,
        dns: DnsFacts,
        d: &Decision,
        sealed_route: bool,
    ) {
        let (outcome, rule) = match d {
            Decision::Forward(f) => ("forward", f.rule),
            Decision::Reject(r) => ("reject", r.rule),
            Decision::AnswerOptions => ("answer", "options-to-edge"),
        };
        let pending = Box::new(PendingDecision {
            peer: peer.clone(),
            snap: Arc::clone(snap),
            dns,
            outcome,
            rule,
            sealed_route,
        });
        self.txns.with(key, |e| {
            if let Entry::Server(s) = e {
                s.decision = Some(pending);
            }
            ((), None)
        });
    }

    /// Records a decision with the final status its request got.
    fn record(&self, request: &Message, p: PendingDecision, status: u16) {
        self.metrics.decision(p.outcome, p.rule);
        self.decisions.record(record::Recorded {
            at: std::time::SystemTime::now(),
            request: Bytes::copy_from_slice(request.bytes()),
            datagram: p.peer.transport == Transport::Udp,
            peer: p.peer,
            snap: p.snap,
            dns: p.dns,
            outcome: p.outcome,
            rule: p.rule,
            status,
            sealed_route: p.sealed_route,
        });
    }

    /// A kept decision as people read it, with its trail rebuilt from the recorded inputs.
    fn describe(&self, r: record::Recorded) -> record::DecisionRecord {
        let m = Message::parse(r.request, r.datagram);
        let text = |f: fn(&Message) -> Option<&str>| {
            m.as_ref().ok().and_then(f).unwrap_or("").to_string()
        };
        let trail = match &m {
            Ok(m) => {
                let plan = self.route_plan(m, &r.snap, r.peer.interface, r.sealed_route);
                let facts = self.facts(m, &plan, &r.snap);
                policy::explain(&facts, &r.peer, &r.snap, &r.dns).trail
            }
            // It parsed when it was decided; the same bytes cannot fail now.
            Err(_) => Vec::new(),
        };
        record::DecisionRecord {
            at: r.at,
            call_id: text(Message::call_id),
            method: text(|m| Some(m.method_str())),
            request_uri: text(|m| m.uri_range().map(|range| m.text(range))),
            interface: r.peer.interface,
            transport: r.peer.transport,
            peer: r.peer.addr,
            identity: r.peer.identity.names().to_vec(),
            outcome: r.outcome,
            rule: r.rule,
            status: r.status,
            trail,
        }
    }

    /// Every decision kept, oldest first.
    pub fn recent_decisions(&self) -> Vec<record::DecisionRecord> {
        self.last_decisions(record::KEEP)
    }

    /// The last `n` decisions, oldest first (the admin endpoint's `/decisions`).
    pub fn last_decisions(&self, n: usize) -> Vec<record::DecisionRecord> {
        let kept = self.decisions.recent(n);
        kept.into_iter().map(|r| self.describe(r)).collect()
    }

    /// A new server transaction for a request just received.
    fn server_entry(
        &self,
        m: &Message,
        peer: &Peer,
        reply: &ReplyTo,
        invite: bool,
        snap: &Snapshot,
    ) -> ServerEntry {
        ServerEntry {
            fsm: ServerTxn::new(invite, reply.is_reliable(), TimerValues::from(&snap.timers)),
            request: m.clone(),
            reply: reply.clone(),
            source: peer.addr,
            arrival: peer.interface,
            received: Some(Instant::now()),
            last: None,
            client: None,
            to_tag: self.next_tag(),
            slot: None,
            decision: None,
        }
    }

    /// Adds the lab-only identity of a plain TCP/UDP sender on the external interface.
    fn identify(&self, peer: &Peer, snap: &Snapshot) -> Peer {
        let mut peer = peer.clone();
        if peer.identity.is_anonymous()
            && peer.transport != Transport::Tls
            && peer.interface == Interface::External
        {
            if let Some(identity) = snap.lab.source_identities.get(&peer.addr.ip()) {
                peer.identity = identity.clone();
            }
        }
        peer
    }

    fn on_ack(
        &self,
        m: Message,
        peer: &Peer,
        reply: &ReplyTo,
        server_id: String,
        sealed_route: bool,
    ) {
        let key = TxnKey::new(Side::Server, server_id, MethodKey::Invite);
        let now = Instant::now();
        let absorbed = self.txns.with(&key, |e| match e {
            Entry::Server(s) => {
                let matched = s.fsm.on_ack(now);
                (matched, s.fsm.deadline())
            }
            Entry::Client(_) => (false, None),
        });
        if absorbed == Some(true) {
            return;
        }
        // An ACK for a 2xx is end to end: relay it statelessly along the route set, after
        // the same decision as any request in the dialog (which may need the partner's SRV).
        let snap = self.live.load();
        let peer = self.identify(peer, &snap);
        let plan = self.route_plan(&m, &snap, peer.interface, sealed_route);
        let facts = self.facts(&m, &plan, &snap);
        let question = match policy::decide_or_ask(&facts, &peer, &snap) {
            Ok(decision) => return self.relay_ack(&m, &peer, &plan, &snap, decision),
            Err(q) => q,
        };
        let (Some(resolver), Some(me)) = (
            self.resolver.clone(),
            self.me.get().and_then(Weak::upgrade),
        ) else {
            tracing::info!(peer = %peer.addr, "ACK dropped: its decision needs DNS and no resolver is configured");
            return;
        };
        let _ = reply;
        tokio::spawn(async move {
            let dns = srv_answer(resolver.as_ref(), &question).await;
            let facts = me.facts(&m, &plan, &snap);
            let decision = policy::decide(&facts, &peer, &snap, &dns);
            me.relay_ack(&m, &peer, &plan, &snap, decision);
        });
    }

    /// Relays an end-to-end ACK as decided, or drops it with one log line.
    fn relay_ack(
        &self,
        m: &Message,
        peer: &Peer,
        plan: &RoutePlan,
        snap: &Snapshot,
        decision: Decision,
    ) {
        match decision {
            Decision::Forward(f) => {
                if let Ok(targets) = self.targets_for(m, &f.route, plan) {
                    let branch = stateless_branch(m);
                    let bytes = self.rewrite_for(m, peer, &f, &targets[0], &branch, plan, snap);
                    self.metrics.message(f.exit, Direction::Out, Method::Ack);
                    self.send_stateless(f.exit, &targets[0], bytes);
                }
            }
            Decision::Reject(r) => {
                tracing::info!(peer = %peer.addr, rule = r.rule, "ACK dropped");
            }
            Decision::AnswerOptions => {}
        }
    }

    fn on_cancel(&self, m: Message, peer: &Peer, reply: &ReplyTo, server_id: String) {
        let invite_key = TxnKey::new(Side::Server, server_id.clone(), MethodKey::Invite);
        let cancel_key = TxnKey::new(Side::Server, server_id, MethodKey::Cancel);
        // A retransmitted CANCEL gets the same 200 again.
        let resend = self.txns.with(&cancel_key, |e| match e {
            Entry::Server(s) => (s.last.clone(), None),
            Entry::Client(_) => (None, None),
        });
        if let Some(last) = resend {
            if let Some(b) = last {
                let _ = reply.send(b);
            }
            return;
        }
        let client = self.txns.with(&invite_key, |e| match e {
            Entry::Server(s) if !s.fsm.is_final() => (Some(s.client.clone()), None),
            _ => (None, None),
        });
        let snap = self.live.load();
        let Some(Some(client)) = client else {
            let r = Rejection::new(481, "Call/Transaction Does Not Exist", "cancel-no-match");
            self.reject_stateless(&m, peer, reply, &r, &snap);
            return;
        };
        if client.is_none() {
            // Nothing forwarded yet: the INVITE ends here with 487 (§16.10).
            self.reject(
                &invite_key,
                &Rejection::new(487, "Request Terminated", "cancelled"),
                &snap,
            );
        }
        let entry = self.server_entry(&m, peer, reply, false, &snap);
        match self
            .txns
            .insert(cancel_key.clone(), Entry::Server(entry), None)
        {
            Ok(()) => {}
            // The same request read by another reader at the same moment: a retransmission.
            Err(crate::txn::TableFull::Exists) => return,
            Err(crate::txn::TableFull::Full) => {
                self.reject_stateless(&m, peer, reply, &Rejection::overloaded(), &snap);
                return;
            }
        }
        let tag = self.server_tag(&cancel_key);
        let ok = build::response(&m, 200, "OK", Some(peer.addr), Some(&tag), &[]);
        self.send_local(&cancel_key, 200, ok);
        // Hop by hop: cancel our branch once it is proceeding, or as soon as it is.
        let Some(client) = client else { return };
        let send = self.txns.with(&client, |e| match e {
            Entry::Client(c) => {
                if c.fsm.is_proceeding() {
                    c.fsm.mark_cancelled();
                    (
                        c.forwarded
                            .as_ref()
                            .and_then(build::cancel_for)
                            .map(|b| (b.freeze(), c.dest.clone())),
                        c.fsm.deadline(),
                    )
                } else {
                    c.cancel_pending = true;
                    (None, None)
                }
            }
            Entry::Server(_) => (None, None),
        });
        if let Some(Some((bytes, Some(dest)))) = send {
            let _ = dest.send(bytes);
        }
    }

    /// Which Route entries name this edge (removed before relaying) and, for a request in a
    /// dialog whose route set is ours to follow, where it leaves. From outside only a route
    /// set restored from our own seal is followed (`sealed_route`); a request without a To
    /// tag is never in a dialog, whatever its Route says, and is decided from scratch.
    fn route_plan(
        &self,
        m: &Message,
        snap: &Snapshot,
        arrival: Interface,
        sealed_route: bool,
    ) -> RoutePlan {
        let mut plan = RoutePlan {
            sealed: sealed_route,
            ..RoutePlan::default()
        };
        let in_dialog = m.to().is_some_and(|t| t.tag().is_some());
        let follow = in_dialog && (arrival == Interface::Internal || sealed_route);
        for (line, range) in m.values(HeaderName::Route) {
            let value = m.text(range.clone());
            let Some(na) = crate::sip::NameAddr::parse(value) else {
                plan.next = Some(range);
                break;
            };
            match self.interface_named(snap, na.uri.host, na.uri.port) {
                Some(iface) => {
                    if follow {
                        plan.exit = Some(iface);
                        // Only the internal side's route sets carry flows: the pool is trusted.
                        if arrival == Interface::Internal && plan.flow.is_none() {
                            plan.flow = na.uri.param(FLOW_PARAM).and_then(Flow::decode);
                        }
                    }
                    plan.pops.push((line, range));
                }
                None => {
                    plan.next = Some(range);
                    break;
                }
            }
        }
        plan
    }

    /// Whether a route entry names this edge's external interface.
    fn names_external(&self, snap: &Snapshot, na: &crate::sip::NameAddr<'_>) -> bool {
        self.interface_named(snap, na.uri.host, na.uri.port) == Some(Interface::External)
    }

    /// A request from outside with any sealed Route entry of ours expanded (`topology`), and
    /// whether one was (only then may its Route lead through the edge); `None` when it was
    /// refused (403 + ms-diagnostics-public, or an ACK dropped).
    fn expand_inbound_route(
        &self,
        m: Message,
        peer: &Peer,
        reply: &ReplyTo,
    ) -> Option<(Message, bool)> {
        if peer.interface != Interface::External || m.header(HeaderName::Route).is_none() {
            return Some((m, false));
        }
        let snap = self.live.load();
        let datagram = peer.transport == Transport::Udp;
        match self
            .topology
            .expand_route(&m, datagram, |na| self.names_external(&snap, na))
        {
            Ok(Some((expanded, binding))) => match binding.admits(&expanded, &peer.identity) {
                Ok(()) => Some((expanded, true)),
                Err(e) => {
                    if m.method() == Method::Ack {
                        tracing::info!(peer = %peer.addr, reason = %e, "ACK dropped: its Route belongs to another dialog");
                    } else {
                        self.reject_stateless(&m, peer, reply, &e.rejection(), &snap);
                    }
                    None
                }
            },
            Ok(None) => Some((m, false)),
            Err(e) if m.method() == Method::Ack => {
                tracing::info!(peer = %peer.addr, reason = %e, "ACK dropped: its Route does not verify");
                None
            }
            Err(e) => {
                self.reject_stateless(&m, peer, reply, &e.rejection(), &snap);
                None
            }
        }
    }

    /// The interface a URI host names, if it names this edge.
    fn interface_named(&self, snap: &Snapshot, host: &str, port: Option<u16>) -> Option<Interface> {
        for iface in [Interface::External, Interface::Internal] {
            let s = snap.interface(iface);
            if s.fqdn.eq_ignore_ascii_case(host) {
                return Some(iface);
            }
            if host.parse::<IpAddr>().ok() == Some(s.address) {
                let ports = self.ports.get(&iface).copied().unwrap_or_default();
                let p = port.unwrap_or(5060);
                if [ports.udp, ports.tcp, ports.tls].contains(&Some(p)) || port.is_none() {
                    return Some(iface);
                }
            }
        }
        None
    }

    fn facts<'m>(&self, m: &'m Message, plan: &RoutePlan, snap: &Snapshot) -> RequestFacts<'m> {
        let mut facts = request_facts(m);
        facts.addressed_to_edge = m.uri().is_some_and(|u| {
            u.user.is_none() && self.interface_named(snap, u.host, u.port).is_some()
        });
        facts.looped = self.is_loop(m);
        facts.routed_exit = plan.exit;
        facts.has_remaining_route = plan.next.is_some();
        facts
    }

    /// RFC 3261 §16.3 step 4: a Via of ours carrying the same loop hash means the request
    /// came back unchanged (a spiral would change the hash).
    fn is_loop(&self, m: &Message) -> bool {
        let hash = loop_hash(m);
        m.values(HeaderName::Via).iter().any(|(_, r)| {
            crate::sip::Via::parse(m.text(r.clone()))
                .and_then(|v| v.branch())
                .and_then(|b| b.strip_prefix(BRANCH_PREFIX))
                .and_then(|rest| rest.get(..8))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                == Some(hash)
        })
    }

    /// The ordered next hops of a forwarded request.
    fn targets_for(
        &self,
        m: &Message,
        route: &Route,
        plan: &RoutePlan,
    ) -> Result<Vec<Target>, Rejection> {
        match route {
            Route::NextHop(hop) => Ok(vec![Target {
                host: hop.host.clone(),
                port: hop.port,
                transport: hop.transport,
                tls_name: (hop.transport == Transport::Tls).then(|| hop.host.clone()),
                flow: None,
            }]),
            Route::Targets(list) if !list.is_empty() => Ok(list
                .iter()
                .map(|t| Target {
                    host: t.host.clone(),
                    port: t.port,
                    transport: t.transport,
                    tls_name: Some(t.tls_name.clone()),
                    flow: None,
                })
                .collect()),
            Route::Targets(_) => Err(Rejection::new(504, "Server Time-out", "no-targets")),
            Route::RequestTarget => {
                let text = match &plan.next {
                    Some(r) => crate::sip::NameAddr::parse(m.text(r.clone())).map(|na| na.uri),
                    None => m.uri(),
                };
                let uri: Uri<'_> = text
                    .filter(|u| !u.host.is_empty())
                    .ok_or_else(|| Rejection::new(416, "Unsupported URI Scheme", "uri-scheme"))?;
                let transport = match uri.param("transport") {
                    Some(t) => t.parse::<Transport>().map_err(|_| {
                        Rejection::new(503, "Service Unavailable", "unsupported-transport")
                    })?,
                    None if uri.is_sips() => Transport::Tls,
                    None => Transport::Udp,
                };
                let port = uri.port.unwrap_or(if transport == Transport::Tls {
                    5061
                } else {
                    5060
                });
                let host = uri.host.to_ascii_lowercase();
                // Inside a dialog with an external peer, its flow and proven name win over
                // the URI: its Contact or Record-Route may be an address it never listens on,
                // or one its certificate does not name.
                if let Some(flow) = &plan.flow {
                    return Ok(vec![Target {
                        tls_name: (flow.transport == Transport::Tls)
                            .then(|| flow.name.clone().unwrap_or_else(|| host.clone())),
                        host,
                        port,
                        transport: flow.transport,
                        flow: Some(flow.addr),
                    }]);
                }
                Ok(vec![Target {
                    tls_name: (transport == Transport::Tls).then(|| host.clone()),
                    host,
                    port,
                    transport,
                    flow: None,
                }])
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        server_key: TxnKey,
        m: &Message,
        peer: &Peer,
        f: &policy::Forward,
        mut targets: Vec<Target>,
        plan: &RoutePlan,
        snap: &Arc<Snapshot>,
    ) {
        let exit = f.exit;
        let branch = self.new_branch(m, peer.interface);
        if m.wire().len() + 200 > snap.limits.udp_mtu {
            // RFC 3261 §18.1.1: a large request goes over a congestion-controlled transport.
            for t in targets.iter_mut().filter(|t| t.transport == Transport::Udp) {
                t.transport = Transport::Tcp;
            }
        }
        let bytes = self.rewrite_for(m, peer, f, &targets[0], &branch, plan, snap);
        let invite = m.method() == Method::Invite;
        let forwarded = if invite {
            Message::parse(bytes.clone(), false).ok()
        } else {
            None
        };
        let client_key = TxnKey::new(Side::Client, branch, method_key(m.method()));
        let fsm = ClientTxn::new(
            invite,
            targets[0].transport.is_stream(),
            TimerValues::from(&snap.timers),
            Instant::now(),
        );
        let deadline = fsm.deadline();
        let entry = ClientEntry {
            fsm,
            bytes: bytes.clone(),
            dest: None,
            server: server_key.clone(),
            forwarded,
            cancel_pending: false,
            retry: (targets.len() > 1).then(|| {
                Box::new(Retry {
                    request: m.clone(),
                    peer: peer.clone(),
                    forward: f.clone(),
                    plan: plan.clone(),
                    snap: snap.clone(),
                    remaining: targets[1..].to_vec(),
                })
            }),
            arrival: peer.interface,
            exit,
            domain: m
                .uri()
                .map(|u| u.host.to_ascii_lowercase())
                .unwrap_or_default(),
            target: targets[0].host.clone(),
            span: tracing::Span::current(),
            // === topology hiding: the Via lines the external side does not see ===
            hidden_via: topology::hides(peer.interface, exit).then(|| {
                topology::via_lines(m, build::received_edit(m, peer.addr).as_ref())
            }),
            response_trust: f.response_trust.clone(),
        };
        if self
            .txns
            .insert(client_key.clone(), Entry::Client(entry), deadline)
            .is_err()
        {
            return self.reject(&server_key, &Rejection::overloaded(), snap);
        }
        self.txns.with(&server_key, |e| {
            if let Entry::Server(s) = e {
                s.client = Some(client_key.clone());
            }
            ((), None)
        });
        self.metrics.message(exit, Direction::Out, m.method());
        if self.try_send_flow(&client_key, exit, &targets[0], &bytes) {
            return;
        }
        if targets.len() == 1 {
            if let Ok(addr) = self.resolve_now(&targets[0], snap) {
                if self.try_send_now(&client_key, exit, &targets[0], addr, &bytes, snap) {
                    return;
                }
            }
        }
        let Some(me) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        let snap = snap.clone();
        let span = tracing::Span::current();
        tokio::spawn(async move {
            let _entered = span.enter();
            me.connect_targets(client_key, exit, targets, bytes, snap)
                .await;
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn rewrite_for(
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
        let via = forward::OurVia {
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
        // The trust header is the edge's alone: whatever arrived is dropped before ours goes on.
        let remove: &[HeaderName] = match (
            f.strip.trust_header || f.insert_trust.is_some(),
            f.strip.diagnostics,
        ) {
            (true, true) => &[HeaderName::MsTrust, HeaderName::MsDiagnostics],
            (true, false) => &[HeaderName::MsTrust],
            (false, true) => &[HeaderName::MsDiagnostics],
            (false, false) => &[],
        };
        let trust = f.insert_trust.as_ref().map(forward::TrustLine);
        let trust_lines: [&dyn std::fmt::Display; 1];
        let add: &[&dyn std::fmt::Display] = match &trust {
            Some(t) => {
                trust_lines = [t];
                &trust_lines
            }
            None => &[],
        };
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
        let edits = forward::RequestEdits {
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
        forward::rewrite_request(m, &edits).freeze()
    }

    /// A Record-Route value naming one interface by its FQDN (never an IP: Lync ignores those;
    /// only an interface configured with an address for its name, as in IPv6 tests, gives one).
    fn rr_value(&self, snap: &Snapshot, iface: Interface, transport: Transport) -> String {
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

    /// Resolves without awaiting: IP literals and the static hosts table.
    fn resolve_now(&self, t: &Target, snap: &Snapshot) -> Result<SocketAddr, Rejection> {
        if let Ok(ip) = t.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, t.port));
        }
        match snap.hosts.get(&t.host).and_then(|v| v.first()) {
            Some(ip) => Ok(SocketAddr::new(*ip, t.port)),
            None => Err(no_address(&t.host)),
        }
    }

    /// Resolves through the hosts table, then DNS A/AAAA.
    async fn resolve_target(&self, t: &Target, snap: &Snapshot) -> Result<SocketAddr, Rejection> {
        if let Ok(a) = self.resolve_now(t, snap) {
            return Ok(a);
        }
        let Some(resolver) = &self.resolver else {
            return Err(no_address(&t.host));
        };
        match resolver.ip(&t.host).await {
            Ok(ips) if !ips.is_empty() => Ok(SocketAddr::new(ips[0], t.port)),
            Ok(_) => Err(no_address(&t.host)),
            Err(e) => {
                tracing::info!(host = %t.host, error = %e, "address lookup failed");
                Err(no_address(&t.host))
            }
        }
    }

    fn new_branch(&self, m: &Message, arrival: Interface) -> String {
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

    fn pool_key(exit: Interface, target: &Target, addr: SocketAddr) -> PoolKey {
        PoolKey {
            interface: exit,
            transport: target.transport,
            addr,
            server_name: if target.transport == Transport::Tls {
                target.tls_name.clone()
            } else {
                None
            },
        }
    }

    /// Sends over the flow the dialog's external peer used, while it lasts. False: there is
    /// none, and the target is connected to as usual (verified against the peer's name).
    fn try_send_flow(&self, key: &TxnKey, exit: Interface, target: &Target, bytes: &Bytes) -> bool {
        let Some(addr) = target.flow else {
            return false;
        };
        let dest = match target.transport {
            Transport::Udp => match self.udp.get(&exit) {
                Some(socket) => ReplyTo::Datagram {
                    socket: socket.clone(),
                    to: addr,
                },
                None => return false,
            },
            t => match self.registry.find(t, addr) {
                Some(c) => ReplyTo::Stream(c),
                None => return false,
            },
        };
        self.set_dest(key, &dest);
        dest.send(bytes.clone()).is_ok()
    }

    /// Sends without awaiting when it can: UDP, or a pooled connection that is open, or a
    /// target inside its backoff window (answered at once). False: a connection is needed.
    fn try_send_now(
        &self,
        key: &TxnKey,
        exit: Interface,
        target: &Target,
        addr: SocketAddr,
        bytes: &Bytes,
        snap: &Snapshot,
    ) -> bool {
        if target.transport == Transport::Udp {
            let Some(socket) = self.udp.get(&exit).cloned() else {
                let r = Rejection::new(503, "Service Unavailable", "no-udp-on-interface");
                self.fail_client(key, &r, snap);
                return true;
            };
            let dest = ReplyTo::Datagram { socket, to: addr };
            self.set_dest(key, &dest);
            if let Err(e) = dest.send(bytes.clone()) {
                tracing::info!(%addr, error = %e, "datagram send failed");
            }
            return true;
        }
        let pool_key = Self::pool_key(exit, target, addr);
        if let Some(c) = self.pool.get(&pool_key) {
            let dest = ReplyTo::Stream(c);
            self.set_dest(key, &dest);
            if dest.send(bytes.clone()).is_ok() {
                return true;
            }
        }
        if let Some(r) = self.backing_off(&pool_key) {
            // The peer failed moments ago: answer at once instead of hammering it.
            self.fail_client(key, &r, snap);
            return true;
        }
        false
    }

    /// Tries the targets in order (SRV failover): resolve, connect, send. When all fail,
    /// the last failure answers the request.
    async fn connect_targets(
        &self,
        key: TxnKey,
        exit: Interface,
        targets: Vec<Target>,
        bytes: Bytes,
        snap: Arc<Snapshot>,
    ) {
        let mut last: Option<Rejection> = None;
        for t in &targets {
            let addr = match self.resolve_target(t, &snap).await {
                Ok(a) => a,
                Err(r) => {
                    last = Some(r);
                    continue;
                }
            };
            if t.transport == Transport::Udp {
                self.try_send_now(&key, exit, t, addr, &bytes, &snap);
                return;
            }
            let pool_key = Self::pool_key(exit, t, addr);
            if let Some(r) = self.backing_off(&pool_key) {
                last = Some(r);
                continue;
            }
            let Some(ctx) = self.connect_context(exit, &snap) else {
                return;
            };
            match self.pool.get_or_connect(&pool_key, &ctx).await {
                Ok(c) => {
                    self.connect_succeeded(&pool_key);
                    let dest = ReplyTo::Stream(c);
                    self.set_dest(&key, &dest);
                    if let Err(e) = dest.send(bytes) {
                        tracing::info!(target = %t.host, error = %e, "send failed");
                        let r = Rejection::new(503, "Service Unavailable", "send-failed")
                            .with_retry_after(5);
                        self.fail_client(&key, &r, &snap);
                    }
                    return;
                }
                Err(e) => {
                    tracing::info!(target = %t.host, %addr, error = %e, "outbound connection failed");
                    let r = respond::connect_failure(&e, &t.host);
                    self.connect_failed(&pool_key, &r);
                    last = Some(r);
                }
            }
        }
        let r = last.unwrap_or_else(|| Rejection::new(503, "Service Unavailable", "no-target"));
        self.fail_client(&key, &r, &snap);
    }

    /// The stored failure of a target still inside its reconnect backoff window.
    fn backing_off(&self, key: &PoolKey) -> Option<Rejection> {
        let m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (until, _, r) = m.get(key)?;
        (Instant::now() < *until).then(|| r.clone())
    }

    /// Starts or lengthens the backoff: 250 ms, doubling per consecutive failure, at most 30 s.
    fn connect_failed(&self, key: &PoolKey, r: &Rejection) {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = m.get(key).map_or(0, |(_, c, _)| *c) + 1;
        let wait = std::time::Duration::from_millis(250 * (1u64 << (count - 1).min(7)))
            .min(std::time::Duration::from_secs(30));
        m.insert(key.clone(), (Instant::now() + wait, count, r.clone()));
        if m.len() > 10_000 {
            let now = Instant::now();
            m.retain(|_, (until, _, _)| *until > now);
        }
    }

    /// Forgets every target's reconnect backoff, so the next request connects at once
    /// (the lab calls it when a peer's fault changes).
    pub fn reset_backoff(&self) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn connect_succeeded(&self, key: &PoolKey) {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(key);
    }

    fn connect_context(&self, exit: Interface, snap: &Snapshot) -> Option<ConnectContext> {
        Some(ConnectContext {
            local_ip: snap.interface(exit).address,
            connect_timeout: snap.limits.connect_timeout,
            handshake_timeout: snap.limits.tls_handshake_timeout,
            max_per_key: snap.limits.connections_per_target,
            settings: stream_settings(snap),
            keepalive: snap.limits.keepalive_interval,
            tls: self.tls.clone(),
            handler: self.handler()?,
            shutdown: self.conn_shutdown.clone(),
            metrics: self.metrics.clone(),
        })
    }

    fn set_dest(&self, key: &TxnKey, dest: &ReplyTo) {
        self.txns.with(key, |e| {
            if let Entry::Client(c) = e {
                c.dest = Some(dest.clone());
            }
            ((), None)
        });
    }

    /// A client transaction could not even send: answer its server transaction.
    fn fail_client(&self, key: &TxnKey, r: &Rejection, snap: &Snapshot) {
        if let Some(Entry::Client(c)) = self.txns.remove(key) {
            self.reject(&c.server, r, snap);
        }
    }

    fn send_stateless(&self, exit: Interface, target: &Target, bytes: Bytes) {
        if let Some(addr) = target.flow {
            let sent = match target.transport {
                Transport::Udp => self
                    .udp
                    .get(&exit)
                    .is_some_and(|s| conn::send_datagram(s, addr, bytes.clone()).is_ok()),
                t => self
                    .registry
                    .find(t, addr)
                    .is_some_and(|c| c.send(bytes.clone()).is_ok()),
            };
            if sent {
                return;
            }
        }
        let snap = self.live.load();
        let Ok(addr) = self.resolve_now(target, &snap) else {
            // A name (e.g. the Contact of a 2xx an ACK goes to): resolve it off the
            // read path, then send, rather than drop the ACK.
            let Some(me) = self.me.get().and_then(Weak::upgrade) else {
                return;
            };
            let target = target.clone();
            tokio::spawn(async move {
                let snap = me.live.load();
                match me.resolve_target(&target, &snap).await {
                    Ok(addr) => me.send_stateless_to(exit, &target, addr, bytes, &snap),
                    Err(r) => {
                        tracing::info!(host = %target.host, rule = r.rule, "stateless request dropped: no address")
                    }
                }
            });
            return;
        };
        self.send_stateless_to(exit, target, addr, bytes, &snap);
    }

    /// [`send_stateless`](Self::send_stateless) once the target's address is known.
    fn send_stateless_to(
        &self,
        exit: Interface,
        target: &Target,
        addr: SocketAddr,
        bytes: Bytes,
        snap: &Snapshot,
    ) {
        if target.transport == Transport::Udp {
            if let Some(s) = self.udp.get(&exit) {
                let _ = conn::send_datagram(s, addr, bytes);
            }
            return;
        }
        let pool_key = Self::pool_key(exit, target, addr);
        if let Some(c) = self
            .pool
            .get(&pool_key)
            .or_else(|| self.registry.find(target.transport, addr))
        {
            let _ = c.send(bytes);
            return;
        }
        let Some(ctx) = self.connect_context(exit, snap) else {
            return;
        };
        let Some(me) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        tokio::spawn(async move {
            if let Ok(c) = me.pool.get_or_connect(&pool_key, &ctx).await {
                let _ = c.send(bytes);
            }
        });
    }

    // === responses ===

    fn on_response(&self, m: Message, peer: &Peer) {
        if let Err(e) = m.validate_response() {
            tracing::info!(peer = %peer.addr, reason = %e, "response dropped: malformed");
            return;
        }
        // === topology hiding: a Record-Route of ours from outside gets its hidden entries back ===
        // (Only a response with a Record-Route pays for this: not the hot MESSAGE path.)
        let m = match peer.interface {
            Interface::External if m.header(HeaderName::RecordRoute).is_some() => {
                let snap = self.live.load();
                let m = self
                    .topology
                    .expand_record_route(&m, peer.transport == Transport::Udp, |na| {
                        self.names_external(&snap, na)
                    })
                    .unwrap_or(m);
                self.mark_flow(m, &self.identify(peer, &snap), &snap)
            }
            _ => m,
        };
        let Some(via) = m.top_via() else { return };
        let Some(branch) = via.branch().filter(|b| b.starts_with(BRANCH_PREFIX)) else {
            tracing::info!(peer = %peer.addr, "response dropped: top Via is not ours");
            return;
        };
        let status = m.status().unwrap_or(0);
        let key = TxnKey::new(Side::Client, branch, method_key(m.method()));
        let now = Instant::now();
        let outcome = self.txns.with(&key, |e| match e {
            Entry::Client(c) => {
                let action = c.fsm.on_response(status, now);
                let retry = (status == 503
                    && matches!(
                        action,
                        ResponseAction::Forward | ResponseAction::AckAndForward
                    ))
                .then(|| c.retry.take())
                .flatten();
                let ack = matches!(
                    action,
                    ResponseAction::AckAndForward | ResponseAction::AckOnly
                )
                .then(|| c.forwarded.as_ref().and_then(|f| build::ack_for(f, &m)))
                .flatten()
                .map(|b| (b.freeze(), c.dest.clone()));
                let cancel =
                    (status < 200 && status > 100 && c.cancel_pending && c.fsm.is_proceeding())
                        .then(|| {
                            c.cancel_pending = false;
                            c.fsm.mark_cancelled();
                            c.forwarded
                                .as_ref()
                                .and_then(build::cancel_for)
                                .map(|b| (b.freeze(), c.dest.clone()))
                        })
                        .flatten();
                (
                    (
                        action,
                        ack,
                        cancel,
                        c.server.clone(),
                        (
                            c.arrival,
                            c.exit,
                            c.domain.clone(),
                            c.target.clone(),
                            c.hidden_via.clone(),
                            c.response_trust.clone(),
                        ),
                        c.span.clone(),
                        retry,
                    ),
                    c.fsm.deadline(),
                )
            }
            Entry::Server(_) => (
                (
                    ResponseAction::Absorb,
                    None,
                    None,
                    key.clone(),
                    (
                        Interface::Internal,
                        Interface::Internal,
                        String::new(),
                        String::new(),
                        None,
                        None,
                    ),
                    tracing::Span::none(),
                    None,
                ),
                None,
            ),
        });
        let Some((
            action,
            ack,
            cancel,
            server_key,
            (arrival, exit, domain, target, hidden_via, response_trust),
            span,
            retry,
        )) = outcome
        else {
            // §16.7: no transaction: relay statelessly by the next Via.
            return self.relay_stateless(&m, branch, peer.interface);
        };
        let _entered = span.enter();
        tracing::debug!(status, "response");
        for (bytes, dest) in [ack, cancel].into_iter().flatten() {
            if let Some(d) = dest {
                let _ = d.send(bytes);
            }
        }
        if !matches!(
            action,
            ResponseAction::Forward | ResponseAction::AckAndForward
        ) || status == 100
        {
            return;
        }
        if let Some(r) = retry {
            // RFC 3263 §4.3: a 503 moves on to the next target, as a new client transaction.
            tracing::info!(target = %target, "503 from the target; trying the next one");
            self.txns.remove(&key);
            return self.forward(
                server_key,
                &r.request,
                &r.peer,
                &r.forward,
                r.remaining,
                &r.plan,
                &r.snap,
            );
        }
        let mut edits = self.response_edits(
            &m,
            arrival,
            peer.interface,
            Some((exit, &domain, &target)),
            response_trust.as_deref(),
        );
        edits.restore_via = hidden_via;
        let out = forward::rewrite_response(&m, &edits).freeze();
        self.send_on_server(&server_key, status, out);
    }

    /// A response from outside whose Record-Route holds our internal entry, with the
    /// responding peer's flow added to it: the pool's requests in the dialog then reach that
    /// peer over its connection, or by the name it proved (not by a bare address).
    fn mark_flow(&self, m: Message, peer: &Peer, snap: &Snapshot) -> Message {
        let found = m.values(HeaderName::RecordRoute).into_iter().find(|(_, r)| {
            crate::sip::NameAddr::parse(m.text(r.clone())).is_some_and(|na| {
                na.uri.param(FLOW_PARAM).is_none()
                    && self.interface_named(snap, na.uri.host, na.uri.port)
                        == Some(Interface::Internal)
            })
        });
        let Some((_, range)) = found else { return m };
        let marked = Flow::of(peer).mark(m.text(range.clone()));
        let mut splice = crate::sip::splice::Splice::new(&m.bytes()[..m.body_range().end]);
        splice.replace(range, marked);
        let bytes = splice.finish().freeze();
        Message::parse(bytes, peer.transport == Transport::Udp).unwrap_or(m)
    }

    /// Header hygiene on a relayed response. Toward the external interface `ms-diagnostics`
    /// and `Warning` are dropped, as both name internal servers; the diagnostics' code and
    /// reason may go as `ms-diagnostics-public`, without the parameters an internal server
    /// wrote. Toward the internal one, a federated peer's error without diagnostics gets
    /// the Access Edge's 1034 line.
    fn response_edits(
        &self,
        m: &Message,
        to: Interface,
        arrived_on: Interface,
        from: Option<(Interface, &str, &str)>,
        trust: Option<&policy::ResponseTrust>,
    ) -> forward::ResponseEdits<'static> {
        let mut edits = forward::ResponseEdits::default();
        let diagnostics = m.header_value(HeaderName::MsDiagnostics);
        match to {
            Interface::External => {
                edits.remove = &[HeaderName::MsDiagnostics, HeaderName::Warning];
                // === topology hiding: entries above our external one leave only sealed ===
                let hidden = m.header(HeaderName::RecordRoute).and_then(|_| {
                    let snap = self.live.load();
                    self.topology.hide_response(
                        m,
                        |na| self.names_external(&snap, na),
                        &topology::Binding::of_response_out(m),
                    )
                });
                if let Some(line) = hidden {
                    edits.remove = &[
                        HeaderName::MsDiagnostics,
                        HeaderName::Warning,
                        HeaderName::RecordRoute,
                    ];
                    edits.add.push(line);
                }
                if let Some(d) = diagnostics {
                    if m.header(HeaderName::MsDiagnosticsPublic).is_none() {
                        if let Ok(mut v) = crate::sip::ms_headers::DiagnosticsValue::parse(&d) {
                            v.params.clear();
                            edits.add.push(format!("ms-diagnostics-public: {v}"));
                        }
                    }
                }
            }
            Interface::Internal => {
                // The trust marking is the edge's alone, on responses as on requests: what a
                // peer wrote is dropped, and the edge's own goes on (access-edge.md).
                if arrived_on == Interface::External {
                    edits.remove = &[HeaderName::MsTrust];
                    if let Some(t) = trust {
                        let arrived = m.header_value(HeaderName::MsTrust);
                        let line = forward::TrustLine(&t.for_response(arrived.as_deref()));
                        edits.add.push(line.to_string());
                    }
                }
                let status = m.status().unwrap_or(0);
                if let Some((Interface::External, domain, peer_server)) = from {
                    if status >= 300 && diagnostics.is_none() {
                        let snap = self.live.load();
                        let v = crate::sip::ms_headers::DiagnosticsValue::previous_hop_silent(
                            domain,
                            peer_server,
                            &snap.external.fqdn,
                        );
                        edits.add.push(format!("ms-diagnostics: {v}"));
                    }
                }
            }
        }
        edits
    }

    /// Relays a response that matches no transaction by its next Via (RFC 3261 §16.11).
    fn relay_stateless(&self, m: &Message, branch: &str, arrived_on: Interface) {
        let vias = m.values(HeaderName::Via);
        let Some((_, next)) = vias.get(1) else { return };
        let Some(via) = crate::sip::Via::parse(m.text(next.clone())) else {
            return;
        };
        let iface = if branch[BRANCH_PREFIX.len()..].chars().nth(8) == Some('e') {
            Interface::External
        } else {
            Interface::Internal
        };
        let host = via.param("received").unwrap_or(via.host);
        let port = via
            .param("rport")
            .and_then(|p| p.parse().ok())
            .or(via.port)
            .unwrap_or(5060);
        let Ok(ip) = host.parse::<IpAddr>() else {
            return;
        };
        let addr = SocketAddr::new(ip, port);
        let edits = self.response_edits(m, iface, arrived_on, None, None);
        let out = forward::rewrite_response(m, &edits).freeze();
        self.metrics.message(iface, Direction::Out, m.method());
        self.metrics.response(m.status().unwrap_or(0));
        match via.transport.parse::<Transport>() {
            Ok(Transport::Udp) => {
                if let Some(s) = self.udp.get(&iface) {
                    let _ = conn::send_datagram(s, addr, out);
                }
            }
            Ok(t) => {
                if let Some(c) = self.registry.find(t, addr) {
                    let _ = c.send_reply(out);
                }
            }
            Err(_) => {}
        }
    }

    // === answering ===

    fn server_tag(&self, key: &TxnKey) -> String {
        self.txns
            .with(key, |e| match e {
                Entry::Server(s) => (s.to_tag.clone(), None),
                Entry::Client(_) => (String::new(), None),
            })
            .unwrap_or_default()
    }

    /// Sends a response through its server transaction (stores it for retransmissions).
    fn send_on_server(&self, key: &TxnKey, status: u16, bytes: Bytes) {
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
                        if let Some(t) = s.received.take() {
                            self.metrics
                                .transaction_done(now.saturating_duration_since(t));
                        }
                        decided = s.decision.take().map(|d| (s.request.clone(), d));
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
        if let Err(e) = reply.send(bytes) {
            tracing::info!(error = %e, "response could not be sent");
        }
        if let Some((request, d)) = decided {
            self.record(&request, *d, status);
        }
    }

    /// Refuses a request that has a server transaction; logs the reason once.
    fn reject(&self, key: &TxnKey, r: &Rejection, snap: &Snapshot) {
        let parts = self.txns.with(key, |e| match e {
            Entry::Server(s) => {
                // Whatever was decided before, this refusal is what the request got.
                if let Some(d) = &mut s.decision {
                    d.outcome = "reject";
                    d.rule = r.rule;
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
    fn send_local(&self, key: &TxnKey, status: u16, bytes: bytes::BytesMut) {
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
    fn reject_stateless(
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

    fn respond_stateless(
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
    fn send_local_response(
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

    // === timers ===

    /// Fires due transaction timers; the edge calls this every few milliseconds.
    pub fn tick(&self, now: Instant) {
        for key in self.txns.due(now) {
            let action = self.txns.with(&key, |e| match e {
                Entry::Client(c) => {
                    let a = c.fsm.on_timer(now);
                    let out = match a {
                        Some(client::TimerAction::Retransmit) => {
                            Tick::Send(c.bytes.clone(), c.dest.clone())
                        }
                        Some(client::TimerAction::Cancel) => Tick::Send(
                            c.forwarded
                                .as_ref()
                                .and_then(build::cancel_for)
                                .map(|b| b.freeze())
                                .unwrap_or_default(),
                            c.dest.clone(),
                        ),
                        Some(client::TimerAction::Timeout) => {
                            Tick::Timeout(c.server.clone(), c.target.clone(), c.span.clone())
                        }
                        Some(client::TimerAction::Terminate) => Tick::Remove,
                        None => Tick::Nothing,
                    };
                    (out, c.fsm.deadline())
                }
                Entry::Server(s) => {
                    let out = match s.fsm.on_timer(now) {
                        Some(server::TimerAction::Retransmit) => {
                            Tick::Send(s.last.clone().unwrap_or_default(), Some(s.reply.clone()))
                        }
                        Some(server::TimerAction::Terminate) => Tick::Remove,
                        None => Tick::Nothing,
                    };
                    (out, s.fsm.deadline())
                }
            });
            match action {
                Some(Tick::Send(bytes, Some(dest))) if !bytes.is_empty() => {
                    let _ = dest.send(bytes);
                }
                Some(Tick::Timeout(server, target, span)) => {
                    let _entered = span.enter();
                    self.txns.remove(&key);
                    let snap = self.live.load();
                    tracing::info!(target = %target, "no final response before the transaction timed out");
                    self.reject(
                        &server,
                        &Rejection::new(408, "Request Timeout", "client-timeout"),
                        &snap,
                    );
                }
                Some(Tick::Remove) => {
                    self.txns.remove(&key);
                }
                _ => {}
            }
        }
    }
}

/// The facts the decision needs that come from the message alone (no route set, no loop
/// check): what `sipedge explain` and the proxy share.
pub fn request_facts(m: &Message) -> RequestFacts<'_> {
    let uri = m.uri();
    let from = m.from();
    let to = m.to();
    RequestFacts {
        method: m.method_str(),
        uri_user: uri.and_then(|u| u.user),
        uri_host: uri.map_or("", |u| u.host),
        from_user: from.and_then(|f| f.uri.user),
        from_host: from.map_or("", |f| f.uri.host),
        to_user: to.and_then(|t| t.uri.user),
        to_host: to.map_or("", |t| t.uri.host),
        max_forwards: m.max_forwards().ok().flatten(),
        looped: false,
        routed_exit: None,
        has_remaining_route: false,
        addressed_to_edge: false,
        trust_header: m
            .header(HeaderName::MsTrust)
            .map(|h| m.text(h.value.clone())),
        media: sdp_media(m),
        in_dialog: to.is_some_and(|t| t.tag().is_some()),
    }
}

/// The Proxy-Require option tags of a request, when it has any: the edge implements no
/// proxy extension, so any tag is refused with 420 (RFC 3261 §16.3 step 5). ACK and CANCEL
/// are exempt, since they cannot be answered on their own.
fn unsupported_proxy_require(m: &Message) -> Option<String> {
    if matches!(m.method(), Method::Ack | Method::Cancel) {
        return None;
    }
    let tags: Vec<&str> = m
        .values(HeaderName::ProxyRequire)
        .into_iter()
        .map(|(_, r)| m.text(r))
        .filter(|t| !t.is_empty())
        .collect();
    (!tags.is_empty()).then(|| tags.join(", "))
}

/// How large a response the edge may write to this sender: the size of its datagram (or
/// the minimal response, when that is larger: `amplification`), for a UDP source on the
/// external interface (unverified, perhaps spoofed). Streams have done a handshake, and
/// the internal side is the organisation's own pool.
fn datagram_budget(reply: &ReplyTo, m: &Message, arrival: Interface) -> Option<usize> {
    (arrival == Interface::External && matches!(reply, ReplyTo::Datagram { .. }))
        .then(|| m.bytes().len())
}

/// `bytes` within `budget` (see `amplification`): cut down to the minimal response at
/// worst, so every request still gets its answer.
fn fit_for(bytes: bytes::BytesMut, budget: Option<usize>) -> Bytes {
    match budget {
        Some(budget) => amplification::fit(bytes, budget),
        None => bytes.freeze(),
    }
}

/// The answer to the SRV question a decision asked, as the decision reads it.
async fn srv_answer(resolver: &dyn crate::dns::Resolve, question: &policy::DnsQuestion) -> DnsFacts {
    let answer = match resolver.srv(&question.name()).await {
        Ok(records) => SrvAnswer::Records(crate::dns::order_srv(records, &mut rand::rng())),
        Err(e) if e.is_no_records() => SrvAnswer::NoRecords,
        Err(e) => SrvAnswer::Failed(e.to_string()),
    };
    DnsFacts::answer(question, answer)
}

/// A refusal for a host name that has no address.
fn no_address(host: &str) -> Rejection {
    Rejection::new(504, "Server Time-out", "dns-no-address").with_diagnostics(
        crate::policy::Diagnostics::new(1008, "Unable to resolve DNS record").param("fqdn", host),
    )
}

/// Which media an SDP offer in the body proposes (for the public-cloud A/V policy).
fn sdp_media(m: &Message) -> policy::Media {
    let is_sdp = m
        .header_value(HeaderName::ContentType)
        .is_some_and(|c| c.trim().to_ascii_lowercase().starts_with("application/sdp"));
    let mut media = policy::Media::default();
    if is_sdp {
        for line in m.body().split(|b| *b == b'\n') {
            if line.starts_with(b"m=audio") {
                media.audio = true;
            } else if line.starts_with(b"m=video") {
                media.video = true;
            }
        }
    }
    media
}

enum Tick {
    Send(Bytes, Option<ReplyTo>),
    Timeout(TxnKey, String, tracing::Span),
    Remove,
    Nothing,
}

/// Our Route entries to pop and the rest of the route set.
#[derive(Debug, Clone, Default)]
struct RoutePlan {
    pops: Vec<(usize, Range<usize>)>,
    /// Where an in-dialog request leaves; `None` when its route set is not ours to follow.
    exit: Option<Interface>,
    next: Option<Range<usize>>,
    /// The dialog's external peer, as our own Record-Route entry remembered it.
    flow: Option<Flow>,
    /// The request's route set was restored from the edge's own seal.
    sealed: bool,
}

/// The URI parameter of the edge's internal Record-Route entry that remembers how the
/// dialog's external peer was reached, as Lync's `ms-received-cid` does on its Via.
const FLOW_PARAM: &str = "ms-flow";

/// How a dialog's external peer was reached: its transport, the remote address of its
/// connection (or its datagrams), and the name it proved, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flow {
    transport: Transport,
    addr: SocketAddr,
    name: Option<String>,
}

impl Flow {
    /// The flow a message from `peer` came over.
    fn of(peer: &Peer) -> Flow {
        Flow {
            transport: peer.transport,
            addr: peer.addr,
            name: peer.identity.names().first().cloned(),
        }
    }

    /// The parameter value: base64url, so that addresses and names need no URI escaping.
    fn encode(&self) -> String {
        use base64::Engine as _;
        let text = format!(
            "{}|{}|{}",
            self.transport.as_str(),
            self.addr,
            self.name.as_deref().unwrap_or("")
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    fn decode(value: &str) -> Option<Flow> {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value)
            .ok()?;
        let text = std::str::from_utf8(&raw).ok()?;
        let mut parts = text.splitn(3, '|');
        let transport = parts.next()?.parse().ok()?;
        let addr = parts.next()?.parse().ok()?;
        let name = parts.next().filter(|n| !n.is_empty()).map(str::to_string);
        Some(Flow {
            transport,
            addr,
            name,
        })
    }

    /// `entry` (a Record-Route value) with this flow added as a URI parameter.
    fn mark(&self, entry: &str) -> String {
        let param = format!(";{FLOW_PARAM}={}", self.encode());
        match entry.rfind('>') {
            Some(gt) => format!("{}{param}{}", &entry[..gt], &entry[gt..]),
            None => format!("{entry}{param}"),
        }
    }
}

impl Handler for Core {
    fn on_message(&self, msg: Bytes, peer: &Peer, reply: &ReplyTo) {
        let datagram = peer.transport == Transport::Udp;
        // A cheap handle (reference-counted) kept to answer a request that fails to parse.
        let msg_copy = msg.clone();
        // Streams enforce the limit while framing; a datagram arrives whole.
        let limit = datagram.then(|| self.live.load().limits.max_message_size);
        match Message::parse(msg, datagram) {
            Ok(m) if limit.is_some_and(|l| m.bytes().len() > l) => {
                tracing::info!(peer = %peer.addr, interface = %peer.interface, size = m.bytes().len(), "datagram over max_message_size: 513");
                if m.is_request() && m.top_via().is_some() {
                    self.respond_stateless(&m, peer, reply, 513, |tag| {
                        build::response(
                            &m,
                            513,
                            "Message Too Large",
                            Some(peer.addr),
                            Some(tag),
                            &[],
                        )
                    });
                }
            }
            Ok(m) => {
                self.metrics
                    .message(peer.interface, Direction::In, m.method());
                if m.is_request() {
                    self.on_request(m, peer, reply)
                } else {
                    self.on_response(m, peer)
                }
            }
            Err(e) => {
                // A request whose header block still names a Via is answered (400, or 505 for
                // another SIP version); anything else has nowhere to send an answer.
                match Message::reply_head(&msg_copy) {
                    Some(head) => {
                        let status = e.status();
                        tracing::info!(peer = %peer.addr, interface = %peer.interface, transport = %peer.transport, reason = %e, status, "request refused: unparseable");
                        // The head is shorter than what arrived; the budget is what arrived.
                        let budget =
                            datagram_budget(reply, &head, peer.interface).map(|_| msg_copy.len());
                        self.send_local_response(&head, budget, peer, reply, status, |tag| {
                            respond::bad_request(&head, &e, Some(peer.addr), tag)
                        });
                    }
                    None => {
                        tracing::info!(peer = %peer.addr, interface = %peer.interface, transport = %peer.transport, reason = %e, "message dropped: unparseable");
                    }
                }
            }
        }
    }

    fn on_frame_error(&self, head: Bytes, err: FrameError, peer: &Peer, reply: &ReplyTo) {
        let (status, reason) = match err {
            FrameError::TooLarge { .. } => (513, "Message Too Large"),
            _ => (400, "Bad Request"),
        };
        tracing::info!(peer = %peer.addr, interface = %peer.interface, reason = %err, status, "stream framing failed; closing");
        // Answer when the header block is readable: parse it as if it had no body.
        if let Some(m) = Message::reply_head(&head) {
            let tag = self.next_tag();
            let phrase = if status == 513 {
                reason.to_string()
            } else {
                format!("{reason} - {err}")
            };
            let bytes = build::response(&m, status, &phrase, Some(peer.addr), Some(&tag), &[]);
            self.metrics
                .message(peer.interface, Direction::Out, m.method());
            self.metrics.response(status);
            let _ = reply.send(bytes.freeze());
        }
    }

    fn on_open(&self, conn: &ConnHandle) {
        self.registry.add(conn);
    }

    fn on_closed(&self, conn: &ConnHandle, reason: &str) {
        tracing::debug!(peer = %conn.remote(), transport = %conn.transport(), reason, "connection closed");
        self.registry.remove(conn);
        self.pool.remove(conn);
    }
}

pub(crate) fn stream_settings(snap: &Snapshot) -> StreamSettings {
    StreamSettings {
        limits: crate::sip::framing::FrameLimits {
            max_message_size: snap.limits.max_message_size,
            max_headers: snap.limits.max_headers,
        },
        idle_timeout: snap.limits.idle_timeout,
        header_timeout: snap.limits.header_timeout,
        read_backpressure: true,
        keepalive: None,
    }
}

fn method_key(m: Method) -> MethodKey {
    match m {
        Method::Invite | Method::Ack => MethodKey::Invite,
        Method::Cancel => MethodKey::Cancel,
        _ => MethodKey::Other,
    }
}

/// Server transaction id: branch + sent-by (§17.2.3); for pre-3261 senders a hash of what
/// §17.2.3 matches them by instead (Request-URI, To tag, From tag, Call-ID, CSeq number,
/// top Via sent-by), without the method so that a CANCEL or ACK finds its INVITE's id.
fn server_txn_id(
    m: &Message,
    branch: Option<&str>,
    host: &str,
    port: Option<u16>,
    to_tag: Option<&str>,
) -> String {
    match branch {
        Some(b) if b.starts_with(crate::sip::via::MAGIC_COOKIE) => {
            let mut id = String::with_capacity(b.len() + host.len() + 8);
            let _ = write!(id, "{b}|{host}:{}", port.unwrap_or(0));
            id
        }
        _ => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            m.uri_range().map(|r| m.text(r)).hash(&mut h);
            m.call_id().hash(&mut h);
            m.from().and_then(|f| f.tag()).hash(&mut h);
            to_tag.hash(&mut h);
            m.cseq().map(|c| c.seq).hash(&mut h);
            format!("rfc2543-{:x}|{host}:{}", h.finish(), port.unwrap_or(0))
        }
    }
}

/// The loop-detection hash of §16.6 step 8: fields that change when a request spirals.
fn loop_hash(m: &Message) -> u32 {
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
fn stateless_branch(m: &Message) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.top_via().and_then(|v| v.branch()).hash(&mut h);
    format!("{BRANCH_PREFIX}{:08x}s{:x}", loop_hash(m), h.finish())
}

fn log_rejection(m: &Message, r: &Rejection, source: SocketAddr, arrival: Interface) {
    tracing::info!(
        call_id = m.call_id().unwrap_or(""),
        method = m.method_str(),
        interface = %arrival,
        peer = %source,
        status = r.status,
        rule = r.rule,
        diagnostics = r.diagnostics.as_ref().map(|d| d.code),
        "request refused"
    );
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Core>();
    let _ = txn::TimerValues::default();
    let _: Option<ConnectError> = None;
}
