//! Accept loops per interface × stream transport, with connection caps and backoff.

use crate::metrics::{TlsFailure, TlsSide};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::stream::{self, StreamSettings};
use super::{Handler, Interface, Peer, PeerIdentity, TlsSource, Transport};

/// Caps on inbound connections: over either one a new connection is closed at once.
#[derive(Debug)]
pub struct ConnectionCaps {
    global: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    per_ip_max: usize,
}

/// Holds a connection's place under the caps until dropped.
#[derive(Debug)]
pub struct CapPermit {
    _global: OwnedSemaphorePermit,
    ip: IpAddr,
    caps: Arc<ConnectionCaps>,
}

impl Drop for CapPermit {
    fn drop(&mut self) {
        let mut m = self.caps.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl ConnectionCaps {
    pub fn new(global: usize, per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionCaps {
            global: Arc::new(Semaphore::new(global)),
            per_ip: Mutex::new(HashMap::new()),
            per_ip_max: per_ip,
        })
    }

    /// A permit for a connection from `ip`, or the name of the cap that refused it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<CapPermit, &'static str> {
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| "global connection cap reached")?;
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.per_ip_max {
            return Err("per-source-IP connection cap reached");
        }
        *n += 1;
        Ok(CapPermit {
            _global: global,
            ip,
            caps: self.clone(),
        })
    }
}

/// What every accept loop needs.
#[derive(Clone)]
pub struct AcceptContext {
    pub interface: Interface,
    pub handler: Arc<dyn Handler>,
    pub settings: StreamSettings,
    pub caps: Arc<ConnectionCaps>,
    pub shutdown: CancellationToken,
    /// Connections keep running until this fires (after the drain).
    pub conn_shutdown: CancellationToken,
    /// Where TLS handshakes are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Accepts TCP (or, with `tls`, TLS) connections until shutdown.
pub async fn accept_loop(
    listener: TcpListener,
    transport: Transport,
    tls: Option<Arc<dyn TlsSource>>,
    handshake_timeout: Duration,
    ctx: AcceptContext,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = ctx.shutdown.cancelled() => return,
        };
        let (tcp, addr) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // EMFILE and friends: wait instead of spinning.
                tracing::warn!(interface = %ctx.interface, error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let permit = match ctx.caps.admit(addr.ip()) {
            Ok(p) => p,
            Err(why) => {
                if crate::lograte::LOGS.admit(crate::lograte::Noisy::ConnectionRefused, addr.ip()) {
                    tracing::warn!(interface = %ctx.interface, %transport, peer = %addr, reason = why, "connection refused");
                }
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            serve_accepted(tcp, addr, transport, tls, handshake_timeout, ctx, permit).await;
        });
    }
}

async fn serve_accepted(
    tcp: TcpStream,
    addr: SocketAddr,
    transport: Transport,
    tls: Option<Arc<dyn TlsSource>>,
    handshake_timeout: Duration,
    ctx: AcceptContext,
    permit: CapPermit,
) {
    let local = match tcp.local_addr() {
        Ok(l) => l,
        Err(_) => return,
    };
    if transport == Transport::Tls {
        let Some(tls) = tls else { return };
        let Some(config) = tls.server(ctx.interface) else {
            tracing::warn!(interface = %ctx.interface, peer = %addr, "TLS connection refused: no server certificate configured");
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => {
                ctx.metrics.tls_ok(TlsSide::Inbound);
                s
            }
            Ok(Err(e)) => {
                ctx.metrics.tls_failed(TlsSide::Inbound, TlsFailure::of(&e));
                if crate::lograte::LOGS.admit(crate::lograte::Noisy::TlsHandshake, addr.ip()) {
                    tracing::warn!(interface = %ctx.interface, peer = %addr, reason = %tls.failure_reason(&e), "TLS handshake failed");
                }
                return;
            }
            Err(_) => {
                ctx.metrics
                    .tls_failed(TlsSide::Inbound, TlsFailure::Timeout);
                if crate::lograte::LOGS.admit(crate::lograte::Noisy::TlsHandshake, addr.ip()) {
                    tracing::warn!(interface = %ctx.interface, peer = %addr, reason = "handshake timeout", "TLS handshake failed");
                }
                return;
            }
        };
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|certs| tls.identity(certs))
            .unwrap_or_default();
        tracing::debug!(interface = %ctx.interface, peer = %addr, names = ?identity.names(), "TLS peer accepted");
        // A task of its own, so that the handshake's state is freed rather than kept in
        // the connection task's allocation for the connection's whole life.
        tokio::spawn(async move {
            serve(stream, addr, local, Transport::Tls, identity, ctx).await;
            drop(permit);
        });
    } else {
        serve(
            tcp,
            addr,
            local,
            Transport::Tcp,
            PeerIdentity::anonymous(),
            ctx,
        )
        .await;
        drop(permit);
    }
}

async fn serve<S>(
    io: S,
    addr: SocketAddr,
    local: SocketAddr,
    transport: Transport,
    identity: PeerIdentity,
    ctx: AcceptContext,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let peer = Peer {
        interface: ctx.interface,
        transport,
        addr,
        identity,
    };
    let (handle, rx) = stream::channel(&peer, local, ctx.handler.tap());
    ctx.handler.on_open(&handle);
    stream::run(
        io,
        handle,
        rx,
        peer,
        ctx.handler.clone(),
        ctx.settings,
        ctx.conn_shutdown.clone(),
    )
    .await;
}
