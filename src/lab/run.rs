//! `sipedge lab` as a library: the edge, every simulated peer of [`ROLES`], the lab zone
//! and the admin endpoint with the PIC provisioning routes, in one process.
//!
//! [`Lab::start`] takes a loaded snapshot and [`LabOptions`]. With `ephemeral` every
//! listener binds port 0 (tests): the pool next hop is pointed at the simulated pool, and
//! the zone's SRV records are rewritten to the ports actually bound, so live.com still
//! leads to the simulated Skype gateway. The lab always serves the config's zone itself
//! (rewritten) and points the edge's resolver at it.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::admin::{LabControl, LabPeer};
use crate::config::{Live, Snapshot};
use crate::dns::LabDnsServer;
use crate::edge::{DrainReport, Edge, Sockets};
use crate::lab::faults::FaultControl;
use crate::lab::peer::{ContactLog, Gate, PeerSpec, PeerTls, SimPeer};
use crate::lab::pic::{self, LabClock, Provisioning};
use crate::lab::topology::{Role, ROLES};
use crate::transport::{Interface, TlsSource, Transport};

/// How to start a lab.
#[derive(Debug)]
pub struct LabOptions {
    /// Bind every listener on port 0 instead of the config's and the topology's ports.
    pub ephemeral: bool,
    /// Where the peers' lab certificates are (`<fqdn>.crt`, `<fqdn>.key`, `ca.crt`).
    pub certs_dir: PathBuf,
    /// The lab clock the PIC provisioning is judged by.
    pub clock: Arc<LabClock>,
    /// The PIC provisioning delay in lab time.
    pub pic_delay: Duration,
    /// Whether the organisation starts provisioned at the Skype gateway. `None`: it is
    /// when the config already has an enabled public provider for the gateway's FQDN
    /// (the lab after the seed procedure, config/lab.toml), and is not otherwise
    /// (config/lab-pre-pic.toml).
    pub provisioned: Option<bool>,
}

impl LabOptions {
    /// Fixed DESIGN ports, wall-time clock, the 30-day delay, certificates beside `config`.
    pub fn for_config(config: &std::path::Path) -> LabOptions {
        LabOptions {
            ephemeral: false,
            certs_dir: crate::lab::topology::certs_dir_for(config),
            clock: Arc::new(LabClock::wall(1)),
            pic_delay: pic::DEFAULT_DELAY,
            provisioned: None,
        }
    }
}

/// A running lab.
pub struct Lab {
    edge: Edge,
    peers: Vec<(Role, SimPeer)>,
    zone: LabDnsServer,
    admin: Option<(SocketAddr, String)>,
    admin_stop: CancellationToken,
    pic: Arc<Provisioning>,
    clock: Arc<LabClock>,
    domains: Vec<String>,
}

impl Lab {
    /// Starts the peers, the zone, the edge and the admin endpoint.
    pub async fn start(mut snap: Snapshot, opts: LabOptions) -> anyhow::Result<Lab> {
        let zone_path = snap
            .dns
            .zone_file
            .clone()
            .context("the lab needs [dns] zone_file (the lab zone, config/lab.zone)")?;
        let zone_text = std::fs::read_to_string(&zone_path)
            .with_context(|| format!("reading the lab zone {}", zone_path.display()))?;

        // The provisioning gate of the Skype gateway.
        let pic = Arc::new(Provisioning::new(opts.pic_delay));
        let clock = opts.clock.clone();
        let skype_fqdn = Role::Skype.spec().fqdn;
        let provisioned = opts.provisioned.unwrap_or_else(|| {
            snap.federation
                .public_providers
                .iter()
                .any(|p| p.enabled && p.proxy_fqdn.eq_ignore_ascii_case(skype_fqdn))
        });
        if provisioned {
            let request = pic::Request {
                agreement_number: "LAB-PRESEED".into(),
                access_edge_fqdn: snap.external.fqdn.clone(),
                sip_domains: snap.edge.local_domains.clone(),
                additional_edge_fqdns: vec![],
                contact: "lab".into(),
            };
            let back = clock.now() - opts.pic_delay;
            pic.submit(request, back, &|_| true)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }

        // The simulated peers.
        let mut peers = Vec::new();
        for spec in ROLES {
            let port = if opts.ephemeral { 0 } else { spec.port };
            let addr = SocketAddr::new(spec.addr, port);
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the {} peer on {addr}", spec.role))?;
            let tls = match spec.transport {
                Transport::Tls => Some(
                    PeerTls::from_lab_dir(&opts.certs_dir, spec.fqdn).with_context(|| {
                        format!(
                            "loading {} certificates from {}",
                            spec.fqdn,
                            opts.certs_dir.display()
                        )
                    })?,
                ),
                _ => None,
            };
            let mut peer_spec = PeerSpec::for_role(spec.role);
            if let Some((domains, users)) = split_domain_of(&snap, spec.fqdn) {
                peer_spec = peer_spec.hosting(domains, users);
            }
            if spec.role == Role::Skype {
                peer_spec = peer_spec.gated(Gate {
                    store: pic.clone(),
                    clock: clock.clone(),
                });
            }
            peers.push((spec.role, SimPeer::start(peer_spec, listener, tls)));
        }

        // The edge's listeners, on port 0 in ephemeral mode.
        if opts.ephemeral {
            for s in [&mut snap.external, &mut snap.internal] {
                for p in [&mut s.udp_port, &mut s.tcp_port, &mut s.tls_port] {
                    if p.is_some() {
                        *p = Some(0);
                    }
                }
            }
            if let Some(a) = &mut snap.admin {
                a.listen.set_port(0);
            }
            let pool = &peers
                .iter()
                .find(|(r, _)| *r == Role::Pool)
                .expect("the pool is in ROLES")
                .1;
            snap.pool.host = pool.local_addr().ip().to_string();
            snap.pool.port = pool.local_addr().port();
            // An allowed domain's ProxyFqdn is dialled on its own port, not through SRV:
            // point the ones naming a lab peer at the port that peer bound.
            for d in &mut snap.federation.allowed_domains {
                let bound = d.proxy_fqdn.as_deref().and_then(|fqdn| {
                    peers
                        .iter()
                        .find(|(r, _)| r.spec().fqdn.eq_ignore_ascii_case(fqdn))
                });
                if let Some((_, peer)) = bound {
                    d.proxy_port = peer.local_addr().port();
                }
            }
            // A hosting provider is dialled on its ProxyFqdn's port: the one its peer bound.
            for h in &mut snap.federation.hosting_providers {
                if let Some((_, p)) = peers
                    .iter()
                    .find(|(r, _)| r.spec().fqdn.eq_ignore_ascii_case(&h.proxy_fqdn))
                {
                    h.proxy_port = p.local_addr().port();
                }
            }
        }
        let zone_listen = snap
            .dns
            .zone_listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let zone_listen = if opts.ephemeral {
            SocketAddr::new(zone_listen.ip(), 0)
        } else {
            zone_listen
        };
        snap.dns.zone_file = None;
        snap.dns.zone_listen = None;
        let mut sockets = Sockets::bind(&snap).await?;
        let admin_listener = sockets.admin.take();

        // The zone, with SRV ports pointing at what was bound.
        let edge_tls_port = sockets
            .external
            .tls
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port());
        let mut ports: Vec<(String, u16)> = peers
            .iter()
            .map(|(r, p)| (r.spec().fqdn.to_string(), p.local_addr().port()))
            .collect();
        if let Some(p) = edge_tls_port {
            ports.push((snap.external.fqdn.clone(), p));
        }
        let zone_text = rewrite_srv_ports(&zone_text, &ports);
        let names = zone_names(&zone_text);
        let udp = UdpSocket::bind(zone_listen)
            .await
            .with_context(|| format!("binding the lab zone on {zone_listen}"))?;
        let tcp = TcpListener::bind(udp.local_addr()?).await.ok();
        let zone = LabDnsServer::start(&zone_text, None, udp, tcp)
            .map_err(|e| anyhow::anyhow!("lab zone {}: {e}", zone_path.display()))?;
        snap.dns.servers = vec![zone.udp_addr()];

        let tls =
            crate::tls_store::TlsStore::from_snapshot(&snap).context("loading TLS material")?;
        let token = snap
            .admin
            .as_ref()
            .and_then(|a| a.token.clone())
            .unwrap_or_else(crate::admin::generate_token);
        let domains = snap.edge.local_domains.clone();
        let live = Arc::new(Live::new(snap));
        let edge = Edge::start(live.clone(), sockets, tls.map(|t| t as Arc<dyn TlsSource>))?;

        let admin_stop = CancellationToken::new();
        let mut admin = None;
        if let Some(listener) = admin_listener {
            admin = Some((listener.local_addr()?, token.clone()));
            let faults = peers
                .iter()
                .map(|(role, peer)| {
                    (
                        *role,
                        peer.fault_switch(),
                        zone.names_of_host(role.spec().fqdn),
                    )
                })
                .collect();
            let control = LabControl {
                faults: Arc::new(FaultControl::new(faults, zone.faults())),
                peers: peers
                    .iter()
                    .map(|(role, p)| LabPeer {
                        role: *role,
                        address: p.local_addr(),
                        contacts: p.contact_log(),
                    })
                    .collect(),
                store: pic.clone(),
                clock: clock.clone(),
                resolves: Arc::new(move |fqdn: &str| {
                    names.contains(&fqdn.trim_end_matches('.').to_ascii_lowercase())
                }),
            };
            tokio::spawn(crate::admin::serve_with(
                listener,
                live,
                edge.core().clone(),
                edge.dns_cache(),
                token,
                Some(control),
                admin_stop.clone(),
            ));
        }
        Ok(Lab {
            edge,
            peers,
            zone,
            admin,
            admin_stop,
            pic,
            clock,
            domains,
        })
    }

    pub fn edge(&self) -> &Edge {
        &self.edge
    }

    /// The simulated peer playing `role`.
    pub fn peer(&self, role: Role) -> &SimPeer {
        &self
            .peers
            .iter()
            .find(|(r, _)| *r == role)
            .expect("every role runs in the lab")
            .1
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(a, _)| *a)
    }

    pub fn admin_token(&self) -> Option<&str> {
        self.admin.as_ref().map(|(_, t)| t.as_str())
    }

    pub fn zone_addr(&self) -> SocketAddr {
        self.zone.udp_addr()
    }

    pub fn provisioning(&self) -> &Arc<Provisioning> {
        &self.pic
    }

    pub fn clock(&self) -> &Arc<LabClock> {
        &self.clock
    }

    /// The table `sipedge lab` prints: role, FQDN, address, state.
    pub fn table(&self) -> String {
        let snap = self.edge.live().load();
        let mut rows: Vec<[String; 4]> = Vec::new();
        for iface in [Interface::External, Interface::Internal] {
            let s = snap.interface(iface);
            let addrs: Vec<String> = [Transport::Tls, Transport::Tcp, Transport::Udp]
                .into_iter()
                .filter_map(|t| self.edge.local_addr(iface, t).map(|a| format!("{t} {a}")))
                .collect();
            rows.push([
                format!("edge {iface}"),
                s.fqdn.clone(),
                addrs.join(", "),
                "listening".into(),
            ]);
        }
        let now = self.clock.now();
        for (role, peer) in &self.peers {
            let spec = role.spec();
            let state = role_state(*role, &peer.contact_log(), &self.pic, now, &self.domains);
            rows.push([
                role.to_string(),
                spec.fqdn.to_string(),
                format!("{} {}", spec.transport, peer.local_addr()),
                state,
            ]);
        }
        rows.push([
            "dns".into(),
            "(lab zone)".into(),
            format!("udp {}", self.zone.udp_addr()),
            "serving".into(),
        ]);
        if let Some(a) = self.admin_addr() {
            rows.push([
                "admin".into(),
                "-".into(),
                format!("http://{a}"),
                "listening (loopback only)".into(),
            ]);
        }
        let header = [
            "ROLE".to_string(),
            "FQDN".into(),
            "ADDRESS".into(),
            "STATE".into(),
        ];
        let mut widths = [0usize; 4];
        for r in std::iter::once(&header).chain(&rows) {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&header).chain(&rows) {
            let _ = writeln!(
                out,
                "{:w0$}  {:w1$}  {:w2$}  {}",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            );
        }
        out
    }

    /// Stops the admin endpoint, the edge (draining until `deadline`), the peers and the zone.
    pub async fn shutdown(self, deadline: Duration) -> DrainReport {
        self.admin_stop.cancel();
        let report = self.edge.shutdown(deadline).await;
        for (_, p) in &self.peers {
            p.shutdown();
        }
        self.zone.shutdown().await;
        report
    }
}

/// A simulated peer's state in words, as the lab's table and the admin status page show
/// it: `listening`, and for the Skype gateway which local domains PIC provisioned by lab
/// time `now`, for a tripwire whether it was contacted.
pub fn role_state(
    role: Role,
    contacts: &ContactLog,
    pic: &Provisioning,
    now: std::time::SystemTime,
    domains: &[String],
) -> String {
    if role == Role::Skype {
        let (yes, no): (Vec<&String>, Vec<&String>) =
            domains.iter().partition(|d| pic.is_provisioned(d, now));
        let mut parts = vec!["listening".to_string()];
        if !yes.is_empty() {
            parts.push(format!("PIC: {} provisioned", join(&yes)));
        }
        if !no.is_empty() {
            parts.push(format!("PIC: {} not provisioned", join(&no)));
        }
        parts.join("; ")
    } else if role.is_tripwire() {
        format!("listening; {}", contacts.tripwire_state())
    } else {
        "listening".to_string()
    }
}

/// The split domain a hosting provider's peer plays: the organisation's domains, when a
/// hosting provider with `fqdn` as ProxyFqdn hosts its users, and the users homed there.
fn split_domain_of(snap: &Snapshot, fqdn: &str) -> Option<(Vec<String>, Vec<String>)> {
    let fed = &snap.federation;
    let h = fed.hosting_provider_by_fqdn(fqdn)?;
    if !h.hosts_our_users() {
        return None;
    }
    let domains = &snap.edge.local_domains;
    let users = fed
        .users
        .iter()
        .filter(|g| {
            g.hosting_provider
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case(fqdn))
        })
        .flat_map(|g| match g.user.split_once('@') {
            Some(_) => vec![g.user.clone()],
            None => domains.iter().map(|d| format!("{}@{d}", g.user)).collect(),
        })
        .collect();
    Some((domains.clone(), users))
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// Rewrites the port of every SRV record whose target is in `ports` (FQDN → port).
/// Comments on rewritten lines are dropped.
pub fn rewrite_srv_ports(zone: &str, ports: &[(String, u16)]) -> String {
    let mut out = String::with_capacity(zone.len());
    for line in zone.lines() {
        let data = line.split(';').next().unwrap_or("");
        let words: Vec<&str> = data.split_whitespace().collect();
        let srv = words.iter().position(|w| w.eq_ignore_ascii_case("SRV"));
        let port = srv.and_then(|i| {
            let target = words.get(i + 4)?.trim_end_matches('.');
            ports
                .iter()
                .find(|(f, _)| f.eq_ignore_ascii_case(target))
                .map(|(_, p)| (i + 3, *p))
        });
        match port {
            Some((at, p)) if at < words.len() => {
                let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
                w[at] = p.to_string();
                out.push_str(&w.join(" "));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The owner names of a zone's records, lowercase without the trailing dot.
fn zone_names(zone: &str) -> HashSet<String> {
    zone.lines()
        .filter(|l| !l.starts_with(|c: char| c.is_whitespace() || c == ';' || c == '$'))
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_ports_follow_the_bound_listeners() {
        let zone = "; c\n_sipfederationtls._tcp.live.com. IN SRV 10 100 5061 federation.messenger.msn.com. ; x\n_sipfederationtls._tcp.fabrikam.test. IN SRV 10 100 5061 sip.fabrikam.test.\nfederation.messenger.msn.com. IN A 127.0.0.4\n";
        let out = rewrite_srv_ports(zone, &[("federation.messenger.msn.com".into(), 40123)]);
        assert_eq!(
            out,
            "; c\n_sipfederationtls._tcp.live.com. IN SRV 10 100 40123 federation.messenger.msn.com.\n_sipfederationtls._tcp.fabrikam.test. IN SRV 10 100 5061 sip.fabrikam.test.\nfederation.messenger.msn.com. IN A 127.0.0.4\n"
        );
        let names = zone_names(&out);
        assert!(names.contains("federation.messenger.msn.com"));
        assert!(!names.contains("; c"));
    }
}
