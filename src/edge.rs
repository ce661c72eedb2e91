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
use crate::proxy::topology::Hider;
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
    /// The admin endpoint could not be bound.
    #[error("cannot bind the admin endpoint on {addr}: {source}")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A TLS listener is configured but no TLS material was loaded.
    #[error("the {0} interface has a TLS listener but no TLS configuration")]
    NoTls(Interface),
    /// The topology key file could not be read, created or understood.
    #[error("{0}")]
    TopologyKey(#[from] crate::proxy::topology::KeyFileError),
    /// The lab zone's DNS server could not bind its address.
    #[error("cannot bind the lab DNS zone's server on {addr} ({transport}): {source}")]
    ZoneBind {
        transport: Transport,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A `[trace]` file could not be created or the HEP socket bound.
    #[error("[trace]: {0}")]
    Trace(std::io::Error),
    /// The lab zone could not be read or served.
    #[error("lab DNS zone {path}: {detail}")]
    Zone {
        path: std::path::PathBuf,
        detail: String,
    },
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
    /// The lab zone server's sockets, when the config serves a zone.
    pub dns_udp: Option<UdpSocket>,
    pub dns_tcp: Option<TcpListener>,
    /// The admin endpoint's listener, when the config has `[admin]`.
    pub admin: Option<TcpListener>,
}

impl Sockets {
    /// Binds every listener the snapshot asks for (port 0 = ephemeral).
    pub async fn bind(snap: &Snapshot) -> Result<Sockets, StartError> {
        let (dns_udp, dns_tcp) = match snap.dns.zone_listen {
            Some(addr) => {
                let err = |transport, source| StartError::ZoneBind {
                    transport,
                    addr,
                    source,
                };
                let udp = UdpSocket::bind(addr)
                    .await
                    .map_err(|e| err(Transport::Udp, e))?;
                let bound = udp.local_addr().map_err(|e| err(Transport::Udp, e))?;
                // TCP on the same port when it is free; UDP alone is enough for the lab.
                let tcp = TcpListener::bind(bound).await.ok();
                (Some(udp), tcp)
            }
            None => (None, None),
        };
        let admin =
            match &snap.admin {
                Some(a) => Some(TcpListener::bind(a.listen).await.map_err(|source| {
                    StartError::AdminBind {
                        addr: a.listen,
                        source,
                    }
                })?),
                None => None,
            };
        Ok(Sockets {
            external: bind_interface(snap, Interface::External).await?,
            internal: bind_interface(snap, Interface::Internal).await?,
            dns_udp,
            dns_tcp,
            admin,
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
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
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

/// The hider of `[topology]`: the key file's keys, else a key drawn for this process.
fn hider(snap: &Snapshot) -> Result<Hider, StartError> {
    match &snap.topology.key_file {
        Some(path) => Ok(Hider::from_key_file(path)?),
        None => {
            tracing::warn!("no [topology] key_file: hidden route sets are sealed under a key drawn for this process, so in-dialog requests from outside will not survive a restart nor reach another edge");
            Ok(Hider::random()?)
        }
    }
}

/// Reader tasks per UDP socket: one per core, at most 4.
fn udp_readers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4)
}

/// A running edge.
pub struct Edge {
    core: Arc<Core>,
    live: Arc<Live>,
    addrs: HashMap<(Interface, Transport), SocketAddr>,
    accept_shutdown: CancellationToken,
    conn_shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    zone: Option<crate::dns::LabDnsServer>,
    resolver: Option<Arc<crate::dns::CachingResolver<crate::dns::HickoryResolver>>>,
    admin: Option<(SocketAddr, String)>,
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
        let topology = hider(&snap)?;
        let tap = crate::trace::Tap::start(&snap.trace, &snap.external.fqdn)
            .map_err(StartError::Trace)?;
        let tls = match crate::trace::keylog::key_log(snap.trace.keylog.as_deref())
            .map_err(StartError::Trace)?
        {
            Some(log) => tls.map(|t| crate::trace::keylog::KeyLogging::wrap(t, log)),
            None => tls,
        };
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
        let zone = match (sockets.dns_udp, &snap.dns.zone_file) {
            (Some(udp), Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| StartError::Zone {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
                let server = crate::dns::LabDnsServer::start(&text, None, udp, sockets.dns_tcp)
                    .map_err(|e| StartError::Zone {
                        path: path.clone(),
                        detail: e.to_string(),
                    })?;
                tracing::info!(addr = %server.udp_addr(), zone = %path.display(), "lab DNS zone served");
                Some(server)
            }
            _ => None,
        };
        let servers: Vec<SocketAddr> = if !snap.dns.servers.is_empty() {
            snap.dns.servers.clone()
        } else {
            zone.iter().map(|z| z.udp_addr()).collect()
        };
        let hickory = if servers.is_empty() {
            crate::dns::HickoryResolver::system()
        } else {
            crate::dns::HickoryResolver::with_name_servers(&servers, snap.dns.timeout)
        };
        let resolver = match hickory {
            Ok(h) => {
                let live = Arc::clone(&live);
                Some(Arc::new(
                    crate::dns::CachingResolver::new(h, 0).with_capacity_from(move || {
                        live.load()
                            .federation
                            .access_edge
                            .dns_srv_cache_record_count as usize
                    }),
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "no DNS resolver: only IP literals and [hosts] resolve");
                None
            }
        };
        let core = Core::new(CoreParts {
            live: live.clone(),
            udp: udp_sockets.clone(),
            ports,
            tls: tls.clone(),
            resolver: resolver.clone().map(|r| r as Arc<dyn crate::dns::Resolve>),
            conn_shutdown: conn_shutdown.clone(),
            topology,
            tap: tap.clone(),
        });
        if let Some(tap) = &tap {
            for (iface, sock) in &udp_sockets {
                crate::transport::tap::register_datagram_socket(sock, *iface, tap);
            }
        }
        let caps = ConnectionCaps::new(
            snap.limits.max_connections,
            snap.limits.max_connections_per_ip,
        );
        let mut tasks = Vec::new();
        for (iface, sock) in udp_sockets {
            tracing::info!(interface = %iface, transport = "udp", addr = %addrs[&(iface, Transport::Udp)], fqdn = %snap.interface(iface).fqdn, "listening");
            // Several readers per socket, so datagrams are parsed and relayed on every core.
            for _ in 0..udp_readers() {
                tasks.push(tokio::spawn(udp::run(
                    sock.clone(),
                    iface,
                    core.clone(),
                    conn_shutdown.clone(),
                )));
            }
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
                metrics: core.metrics().clone(),
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
        let mut admin = None;
        if let Some(listener) = sockets.admin {
            let token = snap
                .admin
                .as_ref()
                .and_then(|a| a.token.clone())
                .unwrap_or_else(crate::admin::generate_token);
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "admin endpoint listening");
                admin = Some((addr, token.clone()));
            }
            tasks.push(tokio::spawn(crate::admin::serve(
                listener,
                live.clone(),
                core.clone(),
                resolver.clone(),
                token,
                accept_shutdown.clone(),
            )));
        }
        Ok(Edge {
            core,
            live,
            addrs,
            admin,
            accept_shutdown,
            conn_shutdown,
            tasks,
            zone,
            resolver,
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

    /// The admin endpoint's bound address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(a, _)| *a)
    }

    /// The admin endpoint's bearer token (configured or generated at start).
    pub fn admin_token(&self) -> Option<&str> {
        self.admin.as_ref().map(|(_, t)| t.as_str())
    }

    /// The address of the in-process lab zone server, when one runs.
    pub fn zone_addr(&self) -> Option<SocketAddr> {
        self.zone.as_ref().map(|z| z.udp_addr())
    }

    /// The caching resolver, for the counters `/metrics` reports.
    pub fn dns_cache(&self) -> Option<crate::admin::DnsCache> {
        self.resolver.clone()
    }

    /// DNS lookups and cache hits so far.
    pub fn dns_stats(&self) -> Option<crate::dns::DnsStats> {
        self.resolver.as_ref().map(|r| r.stats())
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
        if let Some(z) = self.zone {
            z.shutdown().await;
        }
        DrainReport {
            abandoned,
            took: started.elapsed(),
        }
    }
}
