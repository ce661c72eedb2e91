//! The proxy core. A received message goes through the steps below, each in its own file,
//! in the order a reader expects (kamailio's request route, pingora's phases):
//!
//! Requests (`Core::on_request`):
//! 1. `sanity::is_sane`: well formed enough to act on (400, 416, 420, 505, 513).
//! 2. `hidden::restore_hidden_route`: our sealed Route entry from outside gets its route
//!    set back, if it is bound to this dialog and peer (403 + 1912 otherwise).
//! 3. `transaction::match_transaction`: ACK, CANCEL, retransmissions; a server transaction.
//! 4. `dialog::route_plan`: in a dialog whose route set is ours to follow, or decided afresh.
//! 5. `decide::decide`: the policy pipeline (`policy::decide`), with its SRV answer.
//! 6. `limits::admit_limits`: the discovered-partner rate and contact limits.
//! 7. `rewrite::rewrite_for`: Via, Max-Forwards, Record-Route, the trust marking.
//! 8. `forward::forward`: next hops, the connection (the dialog peer's flow first), failover.
//!
//! Responses (`response::on_response`): match the client transaction, restore what topology
//! hiding kept, mark trust, relay. Every refusal becomes a response in `respond`, once, with
//! one log line; `timers::tick` fires the transactions' timers.

pub mod amplification;
mod decide;
pub use decide::ACCESS_TARGET;
mod dialog;
pub mod forward;
mod hidden;
pub mod limits;
pub mod quota;
pub mod record;
pub mod respond;
mod response;
pub mod rewrite;
mod sanity;
mod timers;
pub mod topology;
mod transaction;

#[cfg(test)]
mod tests;

pub use decide::{request_facts, srv_answer};
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
use crate::policy::{self, Decision, DnsFacts, Rejection, RequestFacts, Route, Rule, SrvAnswer};
use crate::sip::framing::FrameError;
use crate::sip::{build, HeaderName, Message, Method, Uri};
use crate::transport::pool::{ConnectContext, ConnectError, Pool, PoolKey};
use crate::transport::stream::StreamSettings;
use crate::transport::{
    conn, ConnHandle, Handler, Interface, Peer, Registry, ReplyTo, TlsSource, Transport,
};
use crate::txn::{
    self, client, server, ClientTxn, MethodKey, ResponseAction, ServerTxn, Side, Table,
    TimerValues, TxnKey,
};

// What the steps share with each other (each step reads the others through `use super::*`).
use decide::PendingDecision;
use dialog::{Flow, RoutePlan};
use forward::{Retry, Target};
use respond::datagram_budget;
use rewrite::{loop_hash, stateless_branch};
use transaction::method_key;

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
    /// Where every message is recorded (`[trace]`); `None` records nothing.
    pub tap: Option<Arc<crate::trace::Tap>>,
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
    /// The last DiscoveredPartnerReportPeriodMinutes report, and when it was made.
    partner_report: std::sync::Mutex<Option<limits::PublishedReport>>,
    conn_shutdown: CancellationToken,
    draining: AtomicBool,
    /// Per external source IP: pending requests (`limits.max_pending_per_source`) and
    /// server transactions held, answered or not (an answered one stays for Timer J): once
    /// the table is crowded, the share of a source whose requests are answered at once but
    /// fill it (`quota::held_limit`).
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
    tap: Option<Arc<crate::trace::Tap>>,
    me: OnceLock<Weak<Core>>,
}

enum Entry {
    Server(ServerEntry),
    Client(ClientEntry),
}

impl crate::txn::Retained for Entry {
    /// The heap bytes an entry keeps alive: the messages, the response kept for
    /// retransmissions and the strings (the snapshot and the connections are shared).
    fn retained_bytes(&self) -> usize {
        let bytes = |b: &Option<Bytes>| b.as_ref().map_or(0, Bytes::len);
        match self {
            Entry::Server(s) => {
                s.request.retained_bytes()
                    + bytes(&s.last)
                    + s.to_tag.len()
                    + s.decision.as_ref().map_or(0, |_| std::mem::size_of::<decide::PendingDecision>())
            }
            Entry::Client(c) => {
                c.bytes.len()
                    + c.forwarded.as_ref().map_or(0, Message::retained_bytes)
                    + bytes(&c.hidden_via)
                    + c.domain.len()
                    + c.target.len()
                    + c.retry.as_ref().map_or(0, |r| {
                        std::mem::size_of::<forward::Retry>()
                            + r.request.retained_bytes()
                            + r.remaining.len() * std::mem::size_of::<forward::Target>()
                    })
            }
        }
    }
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
    /// Its place among the transactions its source holds, given back when it ends.
    held_slot: Option<quota::QuotaSlot>,
    /// The decision made for it, recorded with the final outcome when the final response
    /// leaves (so a forward that a limit or a failed connection refused is logged as such).
    decision: Option<PendingDecision>,
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
    /// The name the external sender of the request proved: a route set sealed into the
    /// response going back to it is bound to that peer.
    requester: Option<crate::peer::PeerIdentity>,
    /// The discovered partner that sent the request: the final answer from inside counts
    /// toward its failed/successful ratio (`limits`).
    partner: Option<String>,
}

impl Core {
    pub fn new(parts: CoreParts) -> Arc<Core> {
        let snap = parts.live.load();
        let core = Arc::new(Core {
            txns: Table::new(
                snap.limits.max_transactions,
                snap.limits.memory_budget_bytes - snap.limits.memory_budget_bytes / 64,
            ),
            live: parts.live,
            registry: Registry::default(),
            pool: Pool::default(),
            udp: parts.udp,
            ports: parts.ports,
            tls: parts.tls,
            resolver: parts.resolver,
            limits: std::sync::Mutex::new(policy::DiscoveredPartnerLimits::new()),
            partner_report: std::sync::Mutex::new(None),
            conn_shutdown: parts.conn_shutdown,
            draining: AtomicBool::new(false),
            quota: quota::SourceQuota::new(),
            // A sixty-fourth of the memory budget (4 MiB of the default 256 MiB): 256
            // records of 16 KiB each.
            decisions: record::DecisionLog::with_budget(snap.limits.memory_budget_bytes / 64),
            failures: std::sync::Mutex::new(HashMap::new()),
            seq: AtomicU64::new(1),
            metrics: Arc::default(),
            instance: rand::random(),
            topology: parts.topology,
            tap: parts.tap,
            me: OnceLock::new(),
        });
        let _ = core.me.set(Arc::downgrade(&core));
        core
    }

    /// Transactions in flight.
    pub fn transactions(&self) -> usize {
        self.txns.len()
    }

    /// Bytes the transactions in flight keep alive (what `memory_budget_bytes` bounds).
    pub fn transaction_bytes(&self) -> usize {
        self.txns.bytes()
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

    /// Where every message is recorded, when the edge records (`[trace]`).
    pub fn trace(&self) -> Option<&Arc<crate::trace::Tap>> {
        self.tap.as_ref()
    }

    /// Open stream connections (inbound and outbound).
    pub fn connections(&self) -> usize {
        self.registry.len()
    }

    /// The counters behind the admin endpoint's `/metrics`.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The resolver the edge's decisions and next hops go through.
    pub fn resolver(&self) -> Option<&Arc<dyn crate::dns::Resolve>> {
        self.resolver.as_ref()
    }

    /// Where the edge's outbound TLS configurations come from.
    pub fn tls(&self) -> Option<&Arc<dyn TlsSource>> {
        self.tls.as_ref()
    }

    /// Stops taking new requests (they get 503); in-flight transactions go on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub(super) fn handler(&self) -> Option<Arc<dyn Handler>> {
        let me = self.me.get()?.upgrade()?;
        Some(me)
    }

    pub(super) fn next_tag(&self) -> String {
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

    /// The path of a request, one step a line; each step's file says what it decides.
    fn on_request(&self, m: Message, peer: &Peer, reply: &ReplyTo) {
        // 1. sanity.rs: well formed enough to act on, before any policy looks at it.
        if !self.is_sane(&m, peer, reply) {
            return;
        }
        // 2. hidden.rs: our sealed Route entry gets its hidden route set back, if it is
        //    bound to this dialog and peer.
        let Some((m, sealed_route)) = self.restore_hidden_route(m, peer, reply) else {
            return;
        };
        // One span per transaction; debug level so that it costs nothing at the default level.
        let span = tracing::debug_span!("txn", call_id = m.call_id().unwrap_or(""), method = m.method_str(), interface = %peer.interface);
        let _entered = span.enter();
        // 3. transaction.rs: ACK, CANCEL and retransmissions end here; a new request gets
        //    a server transaction.
        let snap = self.live.load();
        let Some(key) = self.match_transaction(&m, peer, reply, sealed_route, &snap) else {
            return;
        };
        // 4. dialog.rs: in a dialog whose route set is ours to follow, or decided afresh.
        let peer = self.identify(peer, &snap);
        let plan = self.route_plan(&m, &snap, peer.interface, sealed_route);
        // 5. decide.rs: the policy pipeline, then what its verdict says: refuse
        //    (respond.rs), 6. the discovered-partner limits (limits.rs), 7. rewrite
        //    (rewrite.rs) and 8. forward (forward.rs).
        self.decide(key, m, peer, plan, snap);
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
                self.refuse_oversize(&m, peer, reply)
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
            Err(e) => self.refuse_unparseable(&msg_copy, &e, peer, reply),
        }
    }

    fn on_frame_error(&self, head: Bytes, err: FrameError, peer: &Peer, reply: &ReplyTo) {
        self.refuse_unframed(&head, err, peer, reply);
    }

    fn on_open(&self, conn: &ConnHandle) {
        self.registry.add(conn);
    }

    fn tap(&self) -> Option<Arc<crate::trace::Tap>> {
        self.tap.clone()
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

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Core>();
    let _ = txn::TimerValues::default();
    let _: Option<ConnectError> = None;
}
