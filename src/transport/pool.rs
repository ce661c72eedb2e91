//! Outbound connections, keyed by (interface, transport, address, TLS name), reused for
//! every request to that peer.

use crate::metrics::{TlsFailure, TlsSide};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use super::conn::ConnHandle;
use super::stream::{self, StreamSettings};
use super::{Handler, Interface, Peer, PeerIdentity, TlsSource, Transport};

/// Messages waiting on a connection beyond which it counts as backed up: the peer reads
/// slower than the edge writes, so a further connection (up to the per-target count) is
/// worth its handshake.
const BACKED_UP: usize = 64;

/// Which connection a message needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub interface: Interface,
    pub transport: Transport,
    pub addr: SocketAddr,
    /// TLS server name (SNI and the name the certificate must contain).
    pub server_name: Option<String>,
}

/// Why an outbound connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed (refused, unreachable…).
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// TCP connect did not finish in time.
    #[error("connect to {addr} timed out")]
    ConnectTimeout { addr: SocketAddr },
    /// The TLS handshake failed; the source says whether certificates were at fault.
    #[error("TLS handshake with {name} failed: {source}")]
    Handshake {
        name: String,
        source: std::io::Error,
    },
    /// The TLS handshake did not finish in time.
    #[error("TLS handshake with {name} timed out")]
    HandshakeTimeout { name: String },
    /// The interface has no certificate material for outbound TLS.
    #[error("no TLS client configuration on the {0} interface")]
    NoTls(Interface),
    /// The TLS server name is not a valid DNS name or IP address.
    #[error("invalid TLS server name `{0}`")]
    BadName(String),
}

/// Settings for new outbound connections.
#[derive(Clone)]
pub struct ConnectContext {
    pub local_ip: std::net::IpAddr,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_per_key: usize,
    pub settings: StreamSettings,
    /// Idle interval after which an outbound connection sends a CRLFCRLF ping.
    pub keepalive: Duration,
    pub tls: Option<Arc<dyn TlsSource>>,
    pub handler: Arc<dyn Handler>,
    pub shutdown: CancellationToken,
    /// Where TLS handshakes are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The pool of outbound connections.
#[derive(Default)]
pub struct Pool {
    conns: Mutex<HashMap<PoolKey, Vec<ConnHandle>>>,
    connecting: Mutex<HashMap<PoolKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl Pool {
    /// A live pooled connection for `key`, the least busy one, without awaiting.
    pub fn get(&self, key: &PoolKey) -> Option<ConnHandle> {
        let mut m = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let v = m.get_mut(key)?;
        v.retain(|c| !c.is_closed());
        v.iter().min_by_key(|c| c.queued()).cloned()
    }

    /// A pooled connection for `key` to send on now, unless another one is wanted: none is
    /// open, or every open one is backed up and fewer than `max` are open (the caller then
    /// connects with [`Pool::get_or_connect`]). This is how load spreads over up to `max`
    /// connections to one peer.
    pub fn reusable(&self, key: &PoolKey, max: usize) -> Option<ConnHandle> {
        if self.wants_more(key, max) {
            return None;
        }
        self.get(key)
    }

    /// Number of live connections for `key`.
    pub fn count(&self, key: &PoolKey) -> usize {
        let m = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        m.get(key)
            .map_or(0, |v| v.iter().filter(|c| !c.is_closed()).count())
    }

    /// Whether another connection is worth opening: none yet, or all are backed up and
    /// the per-target limit allows one more.
    fn wants_more(&self, key: &PoolKey, max: usize) -> bool {
        let m = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(key) {
            None => true,
            Some(v) => {
                let mut live = v.iter().filter(|c| !c.is_closed()).peekable();
                if live.peek().is_none() {
                    return true;
                }
                let mut open = 0;
                for c in live {
                    if c.queued() <= BACKED_UP {
                        return false;
                    }
                    open += 1;
                }
                open < max
            }
        }
    }

    /// A connection for `key`: an existing one, or a new one (one connect at a time per key,
    /// so a burst of requests to a new peer opens one connection, not hundreds).
    pub async fn get_or_connect(
        &self,
        key: &PoolKey,
        ctx: &ConnectContext,
    ) -> Result<ConnHandle, ConnectError> {
        if !self.wants_more(key, ctx.max_per_key) {
            if let Some(c) = self.get(key) {
                return Ok(c);
            }
        }
        let gate = {
            let mut m = self.connecting.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(key.clone()).or_default().clone()
        };
        let _guard = gate.lock().await;
        if !self.wants_more(key, ctx.max_per_key) {
            if let Some(c) = self.get(key) {
                return Ok(c);
            }
        }
        let c = connect(key, ctx).await?;
        let mut m = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(key.clone()).or_default().push(c.clone());
        Ok(c)
    }

    /// Forgets a closed connection.
    pub fn remove(&self, c: &ConnHandle) {
        let mut m = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for v in m.values_mut() {
            v.retain(|x| x.id() != c.id());
        }
        m.retain(|_, v| !v.is_empty());
    }
}

async fn connect(key: &PoolKey, ctx: &ConnectContext) -> Result<ConnHandle, ConnectError> {
    let tcp = connect_tcp(key.addr, ctx.local_ip, ctx.connect_timeout).await?;
    let local = tcp.local_addr().map_err(|source| ConnectError::Connect {
        addr: key.addr,
        source,
    })?;
    if key.transport != Transport::Tls {
        return Ok(spawn(tcp, key, local, PeerIdentity::anonymous(), ctx));
    }
    let tls = ctx.tls.as_ref().ok_or(ConnectError::NoTls(key.interface))?;
    let config = tls
        .client(key.interface)
        .ok_or(ConnectError::NoTls(key.interface))?;
    let name = key
        .server_name
        .clone()
        .unwrap_or_else(|| key.addr.ip().to_string());
    let stream = match tls_handshake(tcp, config, &name, ctx.handshake_timeout).await {
        Ok(s) => {
            ctx.metrics.tls_ok(TlsSide::Outbound);
            s
        }
        Err(e) => {
            let failure = match &e {
                ConnectError::Handshake { source, .. } => TlsFailure::of(source),
                _ => TlsFailure::Timeout,
            };
            if !matches!(e, ConnectError::BadName(_)) {
                ctx.metrics.tls_failed(TlsSide::Outbound, failure);
            }
            return Err(e);
        }
    };
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| tls.identity(c))
        .unwrap_or_default();
    Ok(spawn(stream, key, local, identity, ctx))
}

/// The TCP half of an outbound connection: from `local_ip` (the interface's own address,
/// so peers see the right side of the edge) to `addr`, within `timeout`.
/// `check-partner` walks the same step the pool takes.
pub async fn connect_tcp(
    addr: SocketAddr,
    local_ip: std::net::IpAddr,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|source| ConnectError::Connect { addr, source })?;
    if local_ip.is_ipv4() == addr.is_ipv4() && !local_ip.is_unspecified() {
        socket
            .bind(SocketAddr::new(local_ip, 0))
            .map_err(|source| ConnectError::Connect { addr, source })?;
    }
    let tcp = match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(ConnectError::Connect { addr, source }),
        Err(_) => return Err(ConnectError::ConnectTimeout { addr }),
    };
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// The TLS half: the handshake as a client with `config` (our certificate, our trust
/// anchors), verifying the server's certificate for `name`, within `timeout`.
pub async fn tls_handshake(
    tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
    name: &str,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
    let server_name = rustls_pki_types::ServerName::try_from(name.to_string())
        .map_err(|_| ConnectError::BadName(name.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(timeout, connector.connect(server_name, tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(ConnectError::Handshake {
            name: name.to_string(),
            source,
        }),
        Err(_) => Err(ConnectError::HandshakeTimeout {
            name: name.to_string(),
        }),
    }
}

fn spawn<S>(
    io: S,
    key: &PoolKey,
    local: SocketAddr,
    identity: PeerIdentity,
    ctx: &ConnectContext,
) -> ConnHandle
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let peer = Peer {
        interface: key.interface,
        transport: key.transport,
        addr: key.addr,
        identity,
    };
    let (handle, rx) = stream::channel(&peer, local, ctx.handler.tap());
    ctx.handler.on_open(&handle);
    let h = handle.clone();
    let handler = ctx.handler.clone();
    let mut settings = ctx.settings;
    settings.keepalive = Some(ctx.keepalive);
    settings.read_backpressure = false;
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        stream::run(io, h, rx, peer, handler, settings, shutdown).await;
    });
    handle
}
