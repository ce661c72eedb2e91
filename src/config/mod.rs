//! `Snapshot`: the immutable, typed configuration every other module reads.
//!
//! A TOML file is parsed and validated once (`file.rs`) into these types, so the rest of
//! the edge never sees a string where it needs a value. A reload or an admin change builds
//! a new `Snapshot` and swaps it in (`live.rs`); in-flight transactions keep theirs.

mod federation;
mod file;
mod index;
mod live;
#[cfg(test)]
mod schema_keys;
pub mod values;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use federation::{
    contact, http_url, sip_address, split_proxy_fqdn, xmpp_access, AccessEdge, AllowedDomain,
    BlockedDomain, Code, Codes, Conflict, ExternalAccessPolicy, Federation, FederationRouting,
    HostingProvider, PolicyScope, PublicProvider, UnmarkedSource, UserGrant, VerificationLevel,
    DEFAULT_FEDERATED_METHODS, FEDERATION_PORT,
};
pub use file::{line_of_key, ConfigError, Problem};
pub use index::LookupIndex;
pub use live::Live;

use crate::peer::{Interface, Transport};

/// The federation sections of the shipped `config/lab.toml` (everything after its
/// "---- Federation" marker line), so tests and fuzz targets run against exactly what the
/// lab ships.
pub fn lab_federation_sections() -> &'static str {
    let lab = include_str!("../../config/lab.toml");
    let after = lab
        .split_once("# ---- Federation")
        .map_or("", |(_, rest)| rest);
    after.split_once('\n').map_or("", |(_, rest)| rest)
}

/// The smallest edge: both interfaces over TCP on ephemeral ports, contoso.test local,
/// the pool at 127.0.0.1:5070. Tests, benches and fuzz targets add their sections to it.
pub const TCP_EDGE: &str = r#"[edge]
local_domains = ["contoso.test"]

[interfaces.external]
fqdn = "accessedge.contoso.test"
address = "127.0.0.1"
tcp_port = 0

[interfaces.internal]
fqdn = "edge-int.contoso.test"
address = "127.0.0.2"
tcp_port = 0

[pool]
target = "127.0.0.1:5070"
transport = "tcp"
"#;

/// The whole configuration of one edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Edge-wide settings: local SIP domains, drain deadline.
    pub edge: EdgeSettings,
    /// The interface facing federated partners and providers.
    pub external: InterfaceSettings,
    /// The interface facing the Front End pool.
    pub internal: InterfaceSettings,
    /// Where requests for the local domains go: the Front End pool.
    pub pool: NextHop,
    /// Static per-domain routes for non-local domains (exact domain match).
    pub routes: Vec<StaticRoute>,
    /// Where non-local domains without a static route go; `None` means 404.
    pub default_route: Option<NextHop>,
    /// Static name → address map consulted before DNS (lab and tests).
    pub hosts: HashMap<String, Vec<IpAddr>>,
    /// Hard limits on messages and connections.
    pub limits: Limits,
    /// RFC 3261 transaction timers.
    pub timers: Timers,
    /// Lab-only settings that weaken security on purpose.
    pub lab: LabSettings,
    /// Where DNS questions go, and the lab's in-process zone server.
    pub dns: DnsSettings,
    /// Federation objects (access edge, providers, domain lists, external access
    /// policies). `federation.enabled()` is false when no federation section is present:
    /// the edge then routes with `routes` / `default_route` only (static routing).
    pub federation: Federation,
    /// The loopback admin endpoint (`[admin]`); `None` means no endpoint.
    pub admin: Option<AdminSettings>,
    /// Where the keys sealing hidden route sets come from (`[topology]`).
    pub topology: TopologySettings,
    /// What the edge records of the messages it handles (`[trace]`): pcap, HEP, TLS key
    /// log, the per-call ring behind `sipedge admin trace`.
    pub trace: TraceSettings,
    /// The file this snapshot was read from, for reloads and error messages.
    pub source: Option<PathBuf>,
}

impl Snapshot {
    /// Parses and validates a TOML document. Relative paths resolve against `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Snapshot, ConfigError> {
        file::parse(text, base_dir)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Snapshot, ConfigError> {
        file::load(path)
    }

    /// How many connections the edge keeps open toward one next hop reached through
    /// `exit`: `[access_edge] outgoing_tls_count_for_federated_partners`
    /// (OutgoingTlsCountForFederatedPartners) for federation traffic leaving through the
    /// external interface, `[limits] connections_per_target` for every other next hop. The
    /// two never apply to the same target, so neither overrides the other.
    pub fn connections_per_next_hop(&self, exit: Interface) -> usize {
        if exit == Interface::External && self.federation.enabled() {
            usize::from(
                self.federation
                    .access_edge
                    .outgoing_tls_count_for_federated_partners,
            )
        } else {
            self.limits.connections_per_target
        }
    }

    /// The settings of one interface.
    pub fn interface(&self, which: Interface) -> &InterfaceSettings {
        match which {
            Interface::Internal => &self.internal,
            Interface::External => &self.external,
        }
    }

    /// Whether `domain` is one of the organisation's own SIP domains (case-insensitive).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.edge
            .local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// `[topology]`: the keys that seal the internal route set into what leaves outside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologySettings {
    /// The key file (one key per line, the first seals, see `proxy::topology::key_file`),
    /// created with a fresh key when missing; `None` → a key drawn per process, so that
    /// in-dialog requests do not survive a restart. Read once when the edge starts: a
    /// reload (SIGHUP) does not change the keys.
    pub key_file: Option<PathBuf>,
}

/// `[trace]`: what the edge records of every SIP message it receives or sends. Read once
/// when the edge starts: a reload (SIGHUP) does not change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    /// A pcap file each message is written to as one packet (decrypted, with synthesised
    /// IP and UDP/TCP headers); `None` → no pcap.
    pub pcap: Option<PathBuf>,
    /// The pcap file is renamed to `FILE.1` (replacing the previous one) once it would grow
    /// past this, and a new one begun.
    pub pcap_max_bytes: u64,
    /// A HEPv3 collector (Homer, `sngrep -L udp:HOST:PORT`) each message is sent to.
    pub hep: Option<std::net::SocketAddr>,
    /// The HEP capture agent id (chunk 0x000c).
    pub hep_node_id: u32,
    /// The HEP node name (chunk 0x0013); `None` → the external interface's FQDN.
    pub hep_node_name: Option<String>,
    /// The HEP authentication key (chunk 0x000e), when the collector wants one.
    pub hep_password: Option<String>,
    /// A file the TLS secrets are appended to in the NSS key log format, for Wireshark.
    pub keylog: Option<PathBuf>,
    /// Bytes of recent messages kept per Call-ID for `sipedge admin trace`; 0 → none kept.
    pub ring_bytes: usize,
}

impl TraceSettings {
    /// Default of `pcap_max_bytes`: 100 MiB.
    pub const DEFAULT_PCAP_MAX_BYTES: u64 = 100 * 1024 * 1024;
    /// The ring `config/lab.toml` keeps: 4 MiB, some thousands of messages. Not the
    /// default: recording costs the writer thread about a microsecond per message, which
    /// an edge under load should pay only when asked to.
    pub const LAB_RING_BYTES: usize = 4 * 1024 * 1024;

    /// Something is recorded: a file, a collector or the ring.
    pub fn records(&self) -> bool {
        self.pcap.is_some() || self.hep.is_some() || self.ring_bytes > 0
    }
}

impl Default for TraceSettings {
    fn default() -> Self {
        TraceSettings {
            pcap: None,
            pcap_max_bytes: Self::DEFAULT_PCAP_MAX_BYTES,
            hep: None,
            hep_node_id: 0,
            hep_node_name: None,
            hep_password: None,
            keylog: None,
            ring_bytes: 0,
        }
    }
}

/// `[admin]`: the loopback-only admin endpoint (Management Shell cmdlets over HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where it listens; a loopback address (port 0 = ephemeral).
    pub listen: std::net::SocketAddr,
    /// The bearer token clients must send; `None` → one is generated at start and written
    /// to the state file (`admin::state`).
    pub token: Option<String>,
}

/// Edge-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeSettings {
    /// The organisation's SIP domains, lowercase (e.g. `contoso.test`).
    pub local_domains: Vec<String>,
    /// How long in-flight transactions may run after SIGINT/SIGTERM. Default 5 s.
    pub drain_timeout: Duration,
}

/// One interface: its FQDN (used in Via and Record-Route, never an IP), its address and
/// the ports it listens on.
#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceSettings {
    /// The FQDN this side of the edge is known by (Record-Route, Via sent-by).
    pub fqdn: String,
    /// The local address listeners bind to and outbound connections leave from.
    pub address: IpAddr,
    /// UDP listener port; `None` disables it, `Some(0)` asks for an ephemeral port.
    pub udp_port: Option<u16>,
    /// TCP listener port; `None` disables it, `Some(0)` asks for an ephemeral port.
    pub tcp_port: Option<u16>,
    /// TLS listener port; `None` disables it, `Some(0)` asks for an ephemeral port.
    pub tls_port: Option<u16>,
    /// Certificate material; required when `tls_port` is set or TLS next hops are used.
    pub tls: Option<TlsSettings>,
}

/// Certificate material of one interface.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    /// PEM certificate chain presented by this interface (server and client side).
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CA certificates peers must chain to.
    pub trust_anchors: Vec<PathBuf>,
    /// PEM or DER CRL files; a revoked peer certificate is refused.
    pub crls: Vec<PathBuf>,
    /// Whether inbound TLS requires a client certificate (mutual TLS). Default true.
    pub require_client_cert: bool,
}

/// A next hop: host (FQDN or IP literal), port and transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub host: String,
    pub port: u16,
    pub transport: Transport,
}

/// A static route: requests for `domain` go to `next_hop`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    /// Lowercase SIP domain, matched exactly against the Request-URI host.
    pub domain: String,
    pub next_hop: NextHop,
}

/// Hard limits; each has a default in `config/example.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest message accepted, headers and body (default 65 536). A larger request → 513.
    pub max_message_size: usize,
    /// Most header lines in one message (default 256).
    pub max_headers: usize,
    /// A stream connection with no traffic for this long is closed (default 300 s).
    pub idle_timeout: Duration,
    /// A message begun on a stream (headers and body) must be complete within this, or the
    /// connection is closed: a slowloris peer cannot hold a connection by trickling bytes
    /// (default 10 s).
    pub header_timeout: Duration,
    /// A TLS handshake must finish within this (default 5 s).
    pub tls_handshake_timeout: Duration,
    /// A request larger than this is not sent over UDP when a stream transport exists
    /// (RFC 3261 §18.1.1; default 1300).
    pub udp_mtu: usize,
    /// Inbound connections held at once, all interfaces (default 20 000).
    pub max_connections: usize,
    /// Inbound connections held at once from one source IP (default 1 000).
    pub max_connections_per_ip: usize,
    /// Transactions in flight; over it new requests get 503 + Retry-After (default 100 000).
    pub max_transactions: usize,
    /// Requests from one external source IP still waiting for their final response; over
    /// it that source's new requests get 503 + Retry-After, so one flooding peer cannot
    /// take the whole transaction table from everyone else (default 10 000).
    pub max_pending_per_source: usize,
    /// Bytes the transaction table may keep alive (each transaction accounted by its
    /// messages, kept response and strings), and a sixty-fourth of it for the decision log;
    /// over it new requests get 503 + Retry-After like over `max_transactions`
    /// (default 256 MiB).
    pub memory_budget_bytes: usize,
    /// Outbound connections kept per next hop that is not a federated partner: the Front
    /// End pool, and static routes when no federation section is configured (1–4, default
    /// 4). With federation configured, the connections per partner, provider or default
    /// route through the external interface are OutgoingTlsCountForFederatedPartners
    /// instead (`Snapshot::connections_per_next_hop`).
    pub connections_per_target: usize,
    /// How long to wait for an outbound TCP connect (default 5 s).
    pub connect_timeout: Duration,
    /// Idle outbound connections send a CRLFCRLF keep-alive after this (default 30 s).
    pub keepalive_interval: Duration,
}

/// RFC 3261 timer values (Table 4).
#[derive(Debug, Clone, PartialEq)]
pub struct Timers {
    /// RTT estimate; default 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses; default 4 s.
    pub t2: Duration,
    /// Maximum duration a message remains in the network; default 5 s.
    pub t4: Duration,
    /// Proxy INVITE transaction timeout (Timer C, > 3 min); default 181 s.
    pub timer_c: Duration,
}

/// DNS: explicit name servers (or the system resolver), and optionally a zone file the
/// edge serves itself on a loopback address (the lab), which then answers its questions.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    /// Name servers (ip:port); empty means the system resolver, or the lab zone when set.
    pub servers: Vec<std::net::SocketAddr>,
    /// Per-lookup timeout (default 2 s).
    pub timeout: Duration,
    /// RFC 1035 master file served in-process.
    pub zone_file: Option<PathBuf>,
    /// Where the zone is served (UDP and TCP; port 0 = ephemeral).
    pub zone_listen: Option<std::net::SocketAddr>,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            servers: Vec::new(),
            timeout: Duration::from_secs(2),
            zone_file: None,
            zone_listen: None,
        }
    }
}

/// Lab-only settings. Each weakens a guarantee the production edge gives, on purpose.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabSettings {
    /// Source IP → FQDN: plain TCP/UDP senders on the external interface from these
    /// addresses are treated as if they had proven that name. For labs and benchmarks only.
    pub source_identities: HashMap<IpAddr, crate::peer::PeerIdentity>,
}
