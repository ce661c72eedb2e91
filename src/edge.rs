//! Starting and stopping the edge: bind the listeners, run the tasks, drain on shutdown.
//!
//! `Edge::start` takes sockets that are already bound, so tests bind port 0 and read
//! back the ports; `Sockets::bind` binds what a config asks for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Live, Snapshot};
use crate::proxy::{stream_settings, Core, CoreParts, Ports};
use crate::transport::listen::{accept_loop, AcceptContext, ConnectionCaps};
use crate::transport::{udp, Interface, TlsSource, Transport};

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot bind {transport} on {addr} ({interface} interface): {source}")]
    Bind {
        interface: Interface,
        transport: Transport,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A TLS listener is configured but no TLS material was loaded.
    #[error("the {0} interface has a TLS listener but no TLS configuration")]
    NoTls(Interface),
}

/// The bound sockets of one interface.
#[derive(Debug, Default)]
pub struct InterfaceSockets {
    pub udp: Option<UdpSocket>,
    pub tcp: Option<TcpListener>,
    pub tls: Option<TcpListener>,
}

/// The bound sockets of both interfaces.
#[derive(Debug, Default)]
pub struct Sockets {
    pub external: InterfaceSockets,
    pub internal: InterfaceSockets,
}

impl Sockets {
    /// Binds every listener the snapshot asks for (port 0 = ephemeral).
    pub async fn bind(snap: &Snapshot) -> Result<Sockets, StartError> {
        Ok(Sockets {
            external: bind_interface(snap, Interface::External).await?,
            internal: bind_interface(snap, Interface::Internal).await?,
        })
    }
}

async fn bind_interface(snap: &Snapshot, iface: Interface) -> Result<InterfaceSockets, StartError> {
    let s = snap.interface(iface);
    let err = |transport, port, source| StartError::Bind {
        interface: iface,
        transport,
        addr: SocketAddr::new(s.address, port),
        source,
    };
    let mut out = InterfaceSockets::default();
    if let Some(p) = s.udp_port {
        let sock =
            bind_udp(SocketAddr::new(s.address, p)).map_err(|e| err(Transport::Udp, p, e))?;
        out.udp = Some(sock);
    }
    if let Some(p) = s.tcp_port {
        out.tcp = Some(
            TcpListener::bind(SocketAddr::new(s.address, p))
                .await
                .map_err(|e| err(Transport::Tcp, p, e))?,
        );
    }
    if let Some(p) = s.tls_port {
        out.tls = Some(
            TcpListener::bind(SocketAddr::new(s.address, p))
                .await
                .map_err(|e| err(Transport::Tls, p, e))?,
        );
    }
    Ok(out)
}

/// A UDP socket with large buffers: bursts at benchmark rates overflow the defaults.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(8 * 1024 * 1024);
    let _ = s.set_send_buffer_size(8 * 1024 * 1024);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// A running edge.
pub struct Edge {
    core: Arc<Core>,
    live: Arc<Live>,
    addrs: HashMap<(Interface, Transport), SocketAddr>,
    accept_shutdown: CancellationToken,
    conn_shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// What happened during a graceful stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Requests still without a final response when the deadline hit (0 = all finished).
    pub abandoned: usize,
    pub took: Duration,
}

impl Edge {
    /// Starts the edge on already-bound sockets.
    pub fn start(
        live: Arc<Live>,
        sockets: Sockets,
        tls: Option<Arc<dyn TlsSource>>,
    ) -> Result<Edge, StartError> {
        let snap = live.load();
        let accept_shutdown = CancellationToken::new();
        let conn_shutdown = CancellationToken::new();
        let mut addrs = HashMap::new();
        let mut udp_sockets = HashMap::new();
        let mut ports: HashMap<Interface, Ports> = HashMap::new();
        let mut listeners = Vec::new();
        for (iface, socks) in [
            (Interface::External, sockets.external),
            (Interface::Internal, sockets.internal),
        ] {
            let p = ports.entry(iface).or_default();
            if let Some(u) = socks.udp {
                if let Ok(a) = u.local_addr() {
                    addrs.insert((iface, Transport::Udp), a);
                    p.udp = Some(a.port());
                }
                udp_sockets.insert(iface, Arc::new(u));
            }
            if let Some(t) = socks.tcp {
                if let Ok(a) = t.local_addr() {
                    addrs.insert((iface, Transport::Tcp), a);
                    p.tcp = Some(a.port());
                }
                listeners.push((iface, Transport::Tcp, t));
            }
            if let Some(t) = socks.tls {
                if tls.as_ref().and_then(|s| s.server(iface)).is_none() {
                    return Err(StartError::NoTls(iface));
                }
                if let Ok(a) = t.local_addr() {
                    addrs.insert((iface, Transport::Tls), a);
                    p.tls = Some(a.port());
                }
                listeners.push((iface, Transport::Tls, t));
            }
        }
        let core = Core::new(CoreParts {
            live: live.clone(),
            udp: udp_sockets.clone(),
            ports,
            tls: tls.clone(),
            conn_shutdown: conn_shutdown.clone(),
        });
        let caps = ConnectionCaps::new(
            snap.limits.max_connections,
            snap.limits.max_connections_per_ip,
        );
        let mut tasks = Vec::new();
        for (iface, sock) in udp_sockets {
            tracing::info!(interface = %iface, transport = "udp", addr = %addrs[&(iface, Transport::Udp)], fqdn = %snap.interface(iface).fqdn, "listening");
            tasks.push(tokio::spawn(udp::run(
                sock,
                iface,
                core.clone(),
                conn_shutdown.clone(),
            )));
        }
        for (iface, transport, listener) in listeners {
            tracing::info!(interface = %iface, %transport, addr = %addrs[&(iface, transport)], fqdn = %snap.interface(iface).fqdn, "listening");
            let ctx = AcceptContext {
                interface: iface,
                handler: core.clone(),
                settings: stream_settings(&snap),
                caps: caps.clone(),
                shutdown: accept_shutdown.clone(),
                conn_shutdown: conn_shutdown.clone(),
            };
            tasks.push(tokio::spawn(accept_loop(
                listener,
                transport,
                tls.clone(),
                snap.limits.tls_handshake_timeout,
                ctx,
            )));
        }
        let ticker = core.clone();
        let tick_stop = conn_shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(10));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = every.tick() => ticker.tick(Instant::now()),
                    _ = tick_stop.cancelled() => return,
                }
            }
        }));
        Ok(Edge {
            core,
            live,
            addrs,
            accept_shutdown,
            conn_shutdown,
            tasks,
        })
    }

    /// The bound address of a listener.
    pub fn local_addr(&self, iface: Interface, transport: Transport) -> Option<SocketAddr> {
        self.addrs.get(&(iface, transport)).copied()
    }

    /// The live configuration (reloads swap it).
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Graceful stop: refuse new work, let in-flight transactions finish until `deadline`,
    /// then close everything.
    pub async fn shutdown(self, deadline: Duration) -> DrainReport {
        let started = Instant::now();
        self.accept_shutdown.cancel();
        self.core.start_draining();
        while self.core.pending() > 0 && started.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let abandoned = self.core.pending();
        self.conn_shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
        DrainReport {
            abandoned,
            took: started.elapsed(),
        }
    }
}
