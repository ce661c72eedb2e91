//! Connection handles and the registry of open connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{Interface, PeerIdentity, Transport};

/// Messages queued per connection before a new message the edge starts toward the peer
/// (a relayed request) sees `SendError::Full`: bounded so a peer that stops reading cannot
/// make the edge buffer without limit.
pub const SEND_QUEUE: usize = 4096;

/// The channel's real capacity. Replies to requests the peer itself sent may go past
/// `SEND_QUEUE` up to this: each answers a request the edge already accepted and relayed,
/// so dropping it would lose a transaction the peer cannot see fail (over a stream nobody
/// retransmits). Their number is bounded by what the peer sent while its reads were
/// still open (they pause at `SEND_QUEUE / 2`) and by its pending-request quota.
pub const CHANNEL_CAPACITY: usize = SEND_QUEUE * 16;

/// Why a message could not be handed to a connection or socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is gone.
    #[error("connection closed")]
    Closed,
    /// The connection's send queue (or the UDP deferred-send queue) is full.
    #[error("send queue full")]
    Full,
    /// The datagram could not be sent.
    #[error("datagram send failed: {0}")]
    Datagram(String),
}

/// A handle to one open stream connection: cheap to clone, sends without awaiting.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    inner: Arc<ConnInner>,
}

#[derive(Debug)]
struct ConnInner {
    id: u64,
    tx: mpsc::Sender<Bytes>,
    remote: SocketAddr,
    local: SocketAddr,
    transport: Transport,
    interface: Interface,
    identity: PeerIdentity,
    /// Where this connection's messages are recorded (`transport::tap`).
    tap: Option<Arc<crate::trace::Tap>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl ConnHandle {
    pub fn new(
        tx: mpsc::Sender<Bytes>,
        remote: SocketAddr,
        local: SocketAddr,
        transport: Transport,
        interface: Interface,
        identity: PeerIdentity,
        tap: Option<Arc<crate::trace::Tap>>,
    ) -> Self {
        ConnHandle {
            inner: Arc::new(ConnInner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                tx,
                remote,
                local,
                transport,
                interface,
                identity,
                tap,
            }),
        }
    }

    pub fn id(&self) -> u64 {
        self.inner.id
    }
    pub fn remote(&self) -> SocketAddr {
        self.inner.remote
    }
    pub fn local(&self) -> SocketAddr {
        self.inner.local
    }
    pub fn transport(&self) -> Transport {
        self.inner.transport
    }
    pub fn interface(&self) -> Interface {
        self.inner.interface
    }
    pub fn identity(&self) -> &PeerIdentity {
        &self.inner.identity
    }
    pub fn tap(&self) -> Option<&crate::trace::Tap> {
        self.inner.tap.as_deref()
    }

    /// Records a message of this connection, when its edge records.
    #[inline]
    pub(super) fn capture(&self, direction: crate::trace::Direction, msg: &Bytes) {
        if let Some(tap) = &self.inner.tap {
            tap.capture(direction, self.interface(), self.transport(), self.local(), self.remote(), msg);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.inner.tx.is_closed()
    }

    /// Queues a message the edge starts toward the peer (a relayed request): refused
    /// once `SEND_QUEUE` messages wait, so the caller can answer 503 or try another
    /// connection.
    pub fn send(&self, msg: Bytes) -> Result<(), SendError> {
        if self.queued() >= SEND_QUEUE {
            return if self.is_closed() {
                Err(SendError::Closed)
            } else {
                Err(SendError::Full)
            };
        }
        self.enqueue(msg)
    }

    /// Queues a reply to a request this peer sent: may use the room past `SEND_QUEUE`
    /// (see `CHANNEL_CAPACITY`).
    pub fn send_reply(&self, msg: Bytes) -> Result<(), SendError> {
        self.enqueue(msg)
    }

    fn enqueue(&self, msg: Bytes) -> Result<(), SendError> {
        self.inner.tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// How many messages wait in the queue (to spread load over pooled connections).
    pub fn queued(&self) -> usize {
        CHANNEL_CAPACITY.saturating_sub(self.inner.tx.capacity())
    }
}

/// Where a reply (or any message) goes: a datagram socket and address, or a connection.
#[derive(Debug, Clone)]
pub enum ReplyTo {
    Datagram {
        socket: Arc<UdpSocket>,
        to: SocketAddr,
    },
    Stream(ConnHandle),
}

impl ReplyTo {
    pub fn send(&self, msg: Bytes) -> Result<(), SendError> {
        match self {
            ReplyTo::Stream(c) => c.send_reply(msg),
            ReplyTo::Datagram { socket, to } => send_datagram(socket, *to, msg),
        }
    }

    pub fn transport(&self) -> Transport {
        match self {
            ReplyTo::Stream(c) => c.transport(),
            ReplyTo::Datagram { .. } => Transport::Udp,
        }
    }

    pub fn is_reliable(&self) -> bool {
        self.transport().is_stream()
    }
}

/// Datagram sends waiting for socket buffer space at once; past it a datagram is dropped
/// (UDP may lose it anyway, and the sender's transaction retransmits) rather than queueing
/// without bound behind a full socket.
pub const DEFERRED_DATAGRAMS: usize = 1024;

static DEFERRED: AtomicUsize = AtomicUsize::new(0);
/// Set while datagrams are being dropped, so the overflow is logged once per episode.
static DROPPING: AtomicBool = AtomicBool::new(false);

/// Sends a datagram without awaiting; when the socket buffer is full the send finishes
/// in a small task rather than blocking the caller, at most `DEFERRED_DATAGRAMS` at once.
pub fn send_datagram(socket: &Arc<UdpSocket>, to: SocketAddr, msg: Bytes) -> Result<(), SendError> {
    super::tap::datagram_sent(socket, to, &msg);
    match socket.try_send_to(&msg, to) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            if DEFERRED.fetch_add(1, Ordering::AcqRel) >= DEFERRED_DATAGRAMS {
                DEFERRED.fetch_sub(1, Ordering::AcqRel);
                if !DROPPING.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        limit = DEFERRED_DATAGRAMS,
                        "UDP send queue full; dropping datagrams until it drains"
                    );
                }
                return Err(SendError::Full);
            }
            let socket = socket.clone();
            tokio::spawn(async move {
                if let Err(e) = socket.send_to(&msg, to).await {
                    tracing::debug!(%to, error = %e, "datagram send failed");
                }
                if DEFERRED.fetch_sub(1, Ordering::AcqRel) == 1
                    && DROPPING.swap(false, Ordering::AcqRel)
                {
                    tracing::info!("UDP send queue drained");
                }
            });
            Ok(())
        }
        Err(e) => Err(SendError::Datagram(e.to_string())),
    }
}

/// Open stream connections by remote address, for responses routed by Via when no
/// transaction remembers the connection (RFC 3261 §18.2.2).
#[derive(Debug, Default)]
pub struct Registry {
    by_remote: Mutex<HashMap<(Transport, SocketAddr), Vec<ConnHandle>>>,
}

impl Registry {
    pub fn add(&self, c: &ConnHandle) {
        let mut m = self.by_remote.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((c.transport(), c.remote()))
            .or_default()
            .push(c.clone());
    }

    pub fn remove(&self, c: &ConnHandle) {
        let mut m = self.by_remote.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = m.get_mut(&(c.transport(), c.remote())) {
            v.retain(|x| x.id() != c.id());
            if v.is_empty() {
                m.remove(&(c.transport(), c.remote()));
            }
        }
    }

    /// A live connection to `remote` over `transport`, if one is open.
    pub fn find(&self, transport: Transport, remote: SocketAddr) -> Option<ConnHandle> {
        let m = self.by_remote.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(transport, remote))?
            .iter()
            .find(|c| !c.is_closed())
            .cloned()
    }

    pub fn len(&self) -> usize {
        let m = self.by_remote.lock().unwrap_or_else(|p| p.into_inner());
        m.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> (ConnHandle, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let addr: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        let h = ConnHandle::new(
            tx,
            addr,
            addr,
            Transport::Tls,
            Interface::External,
            PeerIdentity::anonymous(),
            None,
        );
        (h, rx)
    }

    #[test]
    fn new_messages_stop_at_the_send_queue_but_replies_to_the_peer_still_go() {
        let (h, mut rx) = handle();
        for _ in 0..SEND_QUEUE {
            h.send(Bytes::from_static(b"request")).unwrap();
        }
        assert_eq!(h.queued(), SEND_QUEUE);
        assert_eq!(h.send(Bytes::from_static(b"one more")), Err(SendError::Full));
        // A reply answers a request the edge already accepted from this peer: not dropped.
        h.send_reply(Bytes::from_static(b"200 OK")).unwrap();
        assert_eq!(h.queued(), SEND_QUEUE + 1);
        for _ in SEND_QUEUE + 1..CHANNEL_CAPACITY {
            h.send_reply(Bytes::from_static(b"200 OK")).unwrap();
        }
        assert_eq!(
            h.send_reply(Bytes::from_static(b"200 OK")),
            Err(SendError::Full),
            "the channel itself stays bounded"
        );
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"request"));
        drop(rx);
        assert_eq!(h.send(Bytes::from_static(b"x")), Err(SendError::Closed));
        assert_eq!(h.send_reply(Bytes::from_static(b"x")), Err(SendError::Closed));
    }
}
