//! TOML schema → `Snapshot`.
//!
//! The raw serde structs refuse unknown keys; `build` then turns strings into typed values
//! and collects every problem before failing, so one run of `check-config` shows them all.
//! Each problem names the key, the line it is on and what would be valid.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::federation::raw::{
    RawAccessEdge, RawAllowedDomain, RawBlockedDomain, RawDiagnostics, RawFederation,
    RawHostingProvider, RawPolicy, RawPublicProvider, RawUser,
};
use super::{
    AdminSettings, EdgeSettings, InterfaceSettings, LabSettings, Limits, NextHop, Snapshot,
    StaticRoute, Timers, TlsSettings, TopologySettings, TraceSettings,
};
use crate::peer::Transport;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The text is not valid TOML, or a key is unknown or has the wrong type.
    #[error("{}line {}: {message}", file_prefix(.file), line_text(*.line))]
    Syntax {
        file: Option<PathBuf>,
        line: Option<usize>,
        message: String,
    },
    /// The TOML is well-formed but some values are not acceptable.
    #[error("{}", render_problems(.file, .problems))]
    Invalid {
        file: Option<PathBuf>,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems found, one per bad key (a syntax error counts as one).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Io { path, source } => vec![Problem {
                key: String::new(),
                line: None,
                message: format!("cannot read {}: {source}", path.display()),
            }],
            ConfigError::Syntax { line, message, .. } => vec![Problem {
                key: String::new(),
                line: *line,
                message: message.clone(),
            }],
            ConfigError::Invalid { problems, .. } => problems.clone(),
        }
    }

    fn with_file(self, path: &Path) -> ConfigError {
        match self {
            ConfigError::Syntax { line, message, .. } => ConfigError::Syntax {
                file: Some(path.to_path_buf()),
                line,
                message,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                file: Some(path.to_path_buf()),
                problems,
            },
            other => other,
        }
    }
}

/// One bad value: which key, on which line, and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `interfaces.external.udp_port`.
    pub key: String,
    /// 1-based line of the key in the file, when known.
    pub line: Option<usize>,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: `{}`: {}",
            line_text(self.line),
            self.key,
            self.message
        )
    }
}

fn line_text(line: Option<usize>) -> String {
    line.map_or_else(|| "?".to_string(), |l| l.to_string())
}

fn file_prefix(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!("{}: ", f.display()))
        .unwrap_or_default()
}

fn render_problems(file: &Option<PathBuf>, problems: &[Problem]) -> String {
    let mut out = format!(
        "{}{} problem(s) in the configuration",
        file_prefix(file),
        problems.len()
    );
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

/// Reads and parses a file; relative paths inside resolve against its directory.
pub(super) fn load(path: &Path) -> Result<Snapshot, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut snapshot = parse(&text, base).map_err(|e| e.with_file(path))?;
    snapshot.source = Some(path.to_path_buf());
    Ok(snapshot)
}

/// Parses a document into a validated snapshot.
pub(super) fn parse(text: &str, base_dir: &Path) -> Result<Snapshot, ConfigError> {
    if let Err(e) = toml::from_str::<toml::Table>(text) {
        return Err(ConfigError::Syntax {
            file: None,
            line: e.span().map(|s| line_of_offset(text, s.start)),
            message: e.message().trim().to_string(),
        });
    }
    let (raw, mut problems) = schema_problems(text);
    let mut b = Builder {
        lines: KeyLines::new(text),
        problems: Vec::new(),
        base_dir,
    };
    let snapshot = raw.map(|raw| b.build(raw));
    problems.append(&mut b.problems);
    match snapshot {
        Some(snapshot) if problems.is_empty() => Ok(snapshot),
        _ => Err(ConfigError::Invalid {
            file: None,
            problems,
        }),
    }
}

/// Deserializes well-formed TOML into the schema, collecting every unknown key and wrong
/// type rather than the first: each offending `key = value` line is commented out (so
/// line numbers stay true) and the text tried again. Gives the schema when what is left
/// fits it, so the value checks can run on the rest.
fn schema_problems(text: &str) -> (Option<RawConfig>, Vec<Problem>) {
    const MOST: usize = 64;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut problems = Vec::new();
    let mut commented: Vec<String> = Vec::new();
    for _ in 0..MOST {
        let current = lines.join("\n");
        let e = match toml::from_str::<RawConfig>(&current) {
            Ok(raw) => return (Some(raw), problems),
            Err(e) => e,
        };
        let message = e.message().trim().to_string();
        // A required key that was commented out for its own problem is not a second one.
        let follows_own = commented
            .iter()
            .any(|k| message.starts_with(&format!("missing field `{k}`")));
        if follows_own {
            break;
        }
        let line = e.span().map(|s| line_of_offset(&current, s.start));
        let (key, name) = line.map_or((String::new(), None), |l| key_at(&lines, l));
        problems.push(Problem { key, line, message });
        let (Some(l), Some(name)) = (line, name) else {
            break;
        };
        lines[l - 1] = format!("# {}", lines[l - 1]);
        if toml::from_str::<toml::Table>(&lines.join("\n")).is_err() {
            break;
        }
        commented.push(name);
    }
    (None, problems)
}

/// The dotted key a `key = value` line (1-based) sets, under the table header above it,
/// and the key's own name; a header line gives the table's name and no key.
fn key_at(lines: &[String], line: usize) -> (String, Option<String>) {
    let header = |l: &str| {
        let t = l.trim();
        t.starts_with('[')
            .then(|| t.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    };
    let table = lines[..line - 1]
        .iter()
        .rev()
        .find_map(|l| header(l))
        .unwrap_or_default();
    let here = lines.get(line - 1).map_or("", String::as_str);
    if let Some(h) = header(here) {
        return (h, None);
    }
    match here.split_once('=') {
        Some((k, _)) if !here.trim_start().starts_with('#') => {
            let name = k.trim().trim_matches('"').to_string();
            let key = if table.is_empty() {
                name.clone()
            } else {
                format!("{table}.{name}")
            };
            (key, Some(name))
        }
        _ => (table, None),
    }
}

// === raw schema ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    edge: RawEdge,
    interfaces: RawInterfaces,
    pool: RawNextHop,
    #[serde(default)]
    routes: Vec<RawRoute>,
    default_route: Option<RawNextHop>,
    #[serde(default)]
    hosts: HashMap<String, Vec<String>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    timers: RawTimers,
    #[serde(default)]
    lab: RawLab,
    #[serde(default)]
    dns: RawDns,
    // Federation sections (federation.rs); absent → static routing.
    access_edge: Option<RawAccessEdge>,
    #[serde(default)]
    public_provider: Vec<RawPublicProvider>,
    #[serde(default)]
    hosting_provider: Vec<RawHostingProvider>,
    #[serde(default)]
    allowed_domain: Vec<RawAllowedDomain>,
    #[serde(default)]
    blocked_domain: Vec<RawBlockedDomain>,
    #[serde(default)]
    external_access_policy: Vec<RawPolicy>,
    #[serde(default)]
    user: Vec<RawUser>,
    diagnostics: Option<RawDiagnostics>,
    admin: Option<RawAdmin>,
    #[serde(default)]
    topology: RawTopology,
    #[serde(default)]
    trace: RawTrace,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrace {
    pcap: Option<PathBuf>,
    pcap_max_bytes: Option<u64>,
    hep: Option<String>,
    hep_node_id: Option<u32>,
    hep_node_name: Option<String>,
    hep_password: Option<String>,
    keylog: Option<PathBuf>,
    ring_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdge {
    local_domains: Vec<String>,
    #[serde(default = "default_drain_ms")]
    drain_timeout_ms: u64,
}

fn default_drain_ms() -> u64 {
    5_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterfaces {
    external: RawInterface,
    internal: RawInterface,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    fqdn: String,
    address: String,
    udp_port: Option<u16>,
    tcp_port: Option<u16>,
    tls_port: Option<u16>,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    trust_anchors: Vec<PathBuf>,
    #[serde(default)]
    crls: Vec<PathBuf>,
    #[serde(default = "default_true")]
    require_client_cert: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNextHop {
    target: String,
    transport: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    domain: String,
    target: String,
    transport: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_message_size: usize,
    max_headers: usize,
    idle_timeout_s: u64,
    header_timeout_ms: u64,
    tls_handshake_timeout_ms: u64,
    udp_mtu: usize,
    max_connections: usize,
    max_connections_per_ip: usize,
    max_transactions: usize,
    max_pending_per_source: usize,
    memory_budget_bytes: usize,
    connections_per_target: usize,
    connect_timeout_ms: u64,
    keepalive_interval_ms: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_message_size: 65_536,
            max_headers: 256,
            idle_timeout_s: 300,
            header_timeout_ms: 10_000,
            tls_handshake_timeout_ms: 5_000,
            udp_mtu: 1_300,
            max_connections: 20_000,
            max_connections_per_ip: 1_000,
            max_transactions: 100_000,
            max_pending_per_source: 10_000,
            memory_budget_bytes: 256 * 1024 * 1024,
            connections_per_target: 4,
            connect_timeout_ms: 5_000,
            keepalive_interval_ms: 30_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimers {
    t1_ms: u64,
    t2_ms: u64,
    t4_ms: u64,
    timer_c_s: u64,
}

impl Default for RawTimers {
    fn default() -> Self {
        RawTimers {
            t1_ms: 500,
            t2_ms: 4_000,
            t4_ms: 5_000,
            timer_c_s: 181,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    #[serde(default)]
    servers: Vec<String>,
    timeout_ms: Option<u64>,
    zone_file: Option<PathBuf>,
    zone_listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLab {
    #[serde(default)]
    source_identities: HashMap<String, String>,
}

// === validation ===

pub(super) struct Builder<'a> {
    pub(super) lines: KeyLines,
    problems: Vec<Problem>,
    base_dir: &'a Path,
}

impl Builder<'_> {
    pub(super) fn problem(&mut self, key: &str, message: impl Into<String>) {
        let line = self.lines.line_of(key);
        self.problems.push(Problem {
            key: key.to_string(),
            line,
            message: message.into(),
        });
    }

    fn build(&mut self, raw: RawConfig) -> Snapshot {
        let edge = self.edge(raw.edge);
        let external = self.interface("interfaces.external", raw.interfaces.external);
        let internal = self.interface("interfaces.internal", raw.interfaces.internal);
        self.distinct_listeners(&external, &internal);
        let pool = self.next_hop("pool", &raw.pool.target, &raw.pool.transport);
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.into_iter().enumerate() {
            let key = format!("routes[{i}]");
            let domain = self.domain(&format!("{key}.domain"), &r.domain);
            if routes.iter().any(|x: &StaticRoute| x.domain == domain) {
                self.problem(
                    &format!("{key}.domain"),
                    format!("`{domain}` already has a route; each domain may appear once"),
                );
            }
            let next_hop = self.next_hop(&key, &r.target, &r.transport);
            routes.push(StaticRoute { domain, next_hop });
        }
        let default_route = raw
            .default_route
            .map(|r| self.next_hop("default_route", &r.target, &r.transport));
        let hosts = self.hosts(raw.hosts);
        let limits = self.limits(raw.limits);
        let timers = self.timers(raw.timers);
        let lab = self.lab(raw.lab);
        let dns = self.dns(raw.dns);
        let admin = raw.admin.map(|a| self.admin(a));
        let topology = TopologySettings {
            key_file: raw.topology.key_file.map(|p| self.base_dir.join(p)),
        };
        let trace = self.trace(raw.trace);
        let federation = self.federation(
            RawFederation {
                access_edge: raw.access_edge,
                public_provider: raw.public_provider,
                hosting_provider: raw.hosting_provider,
                allowed_domain: raw.allowed_domain,
                blocked_domain: raw.blocked_domain,
                external_access_policy: raw.external_access_policy,
                user: raw.user,
                diagnostics: raw.diagnostics,
            },
            &edge.local_domains,
        );
        if federation.enabled() {
            // Federation decides routes for non-local domains; a static route beside it
            // would be silently ignored, so it is refused instead.
            if !routes.is_empty() {
                self.problem(
                    "routes",
                    "static routes are not used when federation sections are present; remove [[routes]] or the federation sections",
                );
            }
            if default_route.is_some() {
                self.problem(
                    "default_route",
                    "the static default_route is not used with federation; use [access_edge] routing = \"default_route\" with default_route_fqdn",
                );
            }
        }
        let snapshot = Snapshot {
            edge,
            external,
            internal,
            pool,
            routes,
            default_route,
            hosts,
            limits,
            timers,
            lab,
            dns,
            federation,
            admin,
            topology,
            trace,
            source: None,
        };
        self.tls_needed(&snapshot);
        snapshot
    }

    fn trace(&mut self, raw: RawTrace) -> TraceSettings {
        let defaults = TraceSettings::default();
        let hep = raw
            .hep
            .and_then(|h| match super::values::hep_collector(&h) {
                Ok(a) => Some(a),
                Err(e) => {
                    self.problem("trace.hep", e);
                    None
                }
            });
        let pcap_max_bytes = raw.pcap_max_bytes.unwrap_or(defaults.pcap_max_bytes);
        if let Err(e) = super::values::pcap_max_bytes(pcap_max_bytes) {
            self.problem("trace.pcap_max_bytes", e);
        }
        TraceSettings {
            pcap: raw.pcap.map(|p| self.base_dir.join(p)),
            pcap_max_bytes,
            hep,
            hep_node_id: raw.hep_node_id.unwrap_or(defaults.hep_node_id),
            hep_node_name: raw.hep_node_name,
            hep_password: raw.hep_password,
            keylog: raw.keylog.map(|p| self.base_dir.join(p)),
            ring_bytes: raw.ring_bytes.unwrap_or(defaults.ring_bytes),
        }
    }

    fn admin(&mut self, raw: RawAdmin) -> AdminSettings {
        let listen = match raw.listen.parse::<SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => a,
            Ok(a) => {
                self.problem(
                    "admin.listen",
                    format!("`{a}` is not a loopback address; the admin endpoint listens on 127.0.0.1 or ::1 only, e.g. \"127.0.0.1:5080\""),
                );
                a
            }
            Err(_) => {
                self.problem(
                    "admin.listen",
                    format!(
                        "`{}` is not an address:port, e.g. \"127.0.0.1:5080\" (port 0 = ephemeral)",
                        raw.listen
                    ),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };
        if let Some(t) = &raw.token {
            if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                self.problem(
                    "admin.token",
                    "a token is at least 16 printable characters without spaces; leave it out to have one generated at start",
                );
            }
        }
        AdminSettings {
            listen,
            token: raw.token,
        }
    }

    fn edge(&mut self, raw: RawEdge) -> EdgeSettings {
        if raw.local_domains.is_empty() {
            self.problem(
                "edge.local_domains",
                "at least one local SIP domain is required, e.g. [\"contoso.test\"]",
            );
        }
        let local_domains = raw
            .local_domains
            .iter()
            .map(|d| self.domain("edge.local_domains", d))
            .collect();
        EdgeSettings {
            local_domains,
            drain_timeout: Duration::from_millis(raw.drain_timeout_ms),
        }
    }

    fn interface(&mut self, key: &str, raw: RawInterface) -> InterfaceSettings {
        // An address literal may stand for the name (an IPv6-only lab has no DNS name for
        // the edge); Via and Record-Route then carry it, bracketed when IPv6.
        let fqdn = match raw.fqdn.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => self.fqdn(&format!("{key}.fqdn"), &raw.fqdn),
        };
        let address = match raw.address.parse::<IpAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.problem(
                    &format!("{key}.address"),
                    format!(
                        "`{}` is not an IP address; expected e.g. \"127.0.0.1\" or \"::1\"",
                        raw.address
                    ),
                );
                IpAddr::from([0, 0, 0, 0])
            }
        };
        if raw.udp_port.is_none() && raw.tcp_port.is_none() && raw.tls_port.is_none() {
            self.problem(
                key,
                "the interface listens on nothing; set at least one of udp_port, tcp_port, tls_port",
            );
        }
        let tls = raw.tls.map(|t| TlsSettings {
            cert: self.base_dir.join(t.cert),
            key: self.base_dir.join(t.key),
            trust_anchors: t
                .trust_anchors
                .into_iter()
                .map(|p| self.base_dir.join(p))
                .collect(),
            crls: t.crls.into_iter().map(|p| self.base_dir.join(p)).collect(),
            require_client_cert: t.require_client_cert,
        });
        if raw.tls_port.is_some() && tls.is_none() {
            self.problem(
                &format!("{key}.tls_port"),
                format!(
                    "a TLS listener needs certificates: add a [{key}.tls] table with cert and key"
                ),
            );
        }
        if let Some(t) = &tls {
            if t.trust_anchors.is_empty() {
                self.problem(
                    &format!("{key}.tls.trust_anchors"),
                    "mutual TLS needs at least one trust anchor (a PEM CA file)",
                );
            }
        }
        InterfaceSettings {
            fqdn,
            address,
            udp_port: raw.udp_port,
            tcp_port: raw.tcp_port,
            tls_port: raw.tls_port,
            tls,
        }
    }

    /// Two interfaces may not bind the same address, port and transport.
    fn distinct_listeners(&mut self, ext: &InterfaceSettings, int: &InterfaceSettings) {
        if ext.address != int.address {
            return;
        }
        for (name, a, b) in [
            ("udp_port", ext.udp_port, int.udp_port),
            ("tcp_port", ext.tcp_port, int.tcp_port),
            ("tls_port", ext.tls_port, int.tls_port),
        ] {
            if let (Some(a), Some(b)) = (a, b) {
                if a == b && a != 0 {
                    self.problem(
                        &format!("interfaces.internal.{name}"),
                        format!(
                            "port {a} is already used by interfaces.external on the same address; \
                             use another port or address"
                        ),
                    );
                }
            }
        }
    }

    fn tls_needed(&mut self, s: &Snapshot) {
        let mut hops: Vec<(&str, &NextHop)> = vec![("pool", &s.pool)];
        hops.extend(s.routes.iter().map(|r| ("routes", &r.next_hop)));
        if let Some(d) = &s.default_route {
            hops.push(("default_route", d));
        }
        let mut missing = Vec::new();
        for (key, hop) in hops {
            if hop.transport != Transport::Tls {
                continue;
            }
            let iface = if key == "pool" {
                &s.internal
            } else {
                &s.external
            };
            let iface_key = if key == "pool" {
                "internal"
            } else {
                "external"
            };
            if iface.tls.is_none() {
                missing.push((key, iface_key));
            }
        }
        for (key, iface) in missing {
            self.problem(
                key,
                format!("a TLS next hop needs certificates on the {iface} interface: add [interfaces.{iface}.tls]"),
            );
        }
    }

    fn next_hop(&mut self, key: &str, target: &str, transport: &str) -> NextHop {
        let transport = match transport.parse::<Transport>() {
            Ok(t) => t,
            Err(e) => {
                self.problem(&format!("{key}.transport"), e);
                Transport::Udp
            }
        };
        let (host, port) = match split_host_port(target) {
            Some((h, p)) => (h, p),
            None => {
                self.problem(
                    &format!("{key}.target"),
                    format!(
                        "`{target}` is not host:port; expected e.g. \"sip.fabrikam.test:5061\", \
                         \"127.0.0.1:5070\" or \"[::1]:5060\""
                    ),
                );
                (String::new(), 0)
            }
        };
        NextHop {
            host,
            port,
            transport,
        }
    }

    fn domain(&mut self, key: &str, value: &str) -> String {
        self.fqdn(key, value)
    }

    pub(super) fn fqdn(&mut self, key: &str, value: &str) -> String {
        super::values::dns_name(value).unwrap_or_else(|message| {
            self.problem(key, message);
            value.trim_end_matches('.').to_ascii_lowercase()
        })
    }

    fn hosts(&mut self, raw: HashMap<String, Vec<String>>) -> HashMap<String, Vec<IpAddr>> {
        let mut out = HashMap::new();
        let mut names: Vec<_> = raw.into_iter().collect();
        names.sort();
        for (name, addrs) in names {
            let key = format!("hosts.{name}");
            let name = self.fqdn(&key, &name);
            let mut ips = Vec::new();
            for a in addrs {
                match a.parse::<IpAddr>() {
                    Ok(ip) => ips.push(ip),
                    Err(_) => self.problem(
                        &key,
                        format!("`{a}` is not an IP address; expected e.g. [\"127.0.0.3\"]"),
                    ),
                }
            }
            out.insert(name, ips);
        }
        out
    }

    fn limits(&mut self, r: RawLimits) -> Limits {
        let positive = |b: &mut Self, key: &str, v: u64| {
            if v == 0 {
                b.problem(&format!("limits.{key}"), "must be greater than 0");
            }
        };
        positive(self, "max_message_size", r.max_message_size as u64);
        positive(self, "max_headers", r.max_headers as u64);
        positive(self, "idle_timeout_s", r.idle_timeout_s);
        positive(self, "header_timeout_ms", r.header_timeout_ms);
        positive(self, "tls_handshake_timeout_ms", r.tls_handshake_timeout_ms);
        positive(self, "max_connections", r.max_connections as u64);
        positive(
            self,
            "max_connections_per_ip",
            r.max_connections_per_ip as u64,
        );
        positive(self, "max_transactions", r.max_transactions as u64);
        positive(
            self,
            "max_pending_per_source",
            r.max_pending_per_source as u64,
        );
        positive(self, "memory_budget_bytes", r.memory_budget_bytes as u64);
        positive(self, "connect_timeout_ms", r.connect_timeout_ms);
        positive(self, "keepalive_interval_ms", r.keepalive_interval_ms);
        if r.max_message_size > 16 * 1024 * 1024 {
            self.problem(
                "limits.max_message_size",
                "at most 16 MiB (16777216); SIP messages are small",
            );
        }
        if !(1..=4).contains(&r.connections_per_target) {
            self.problem(
                "limits.connections_per_target",
                format!(
                    "{} is out of range; connections per Front End pool or static next hop allow 1 to 4 (federated partners take [access_edge] outgoing_tls_count_for_federated_partners)",
                    r.connections_per_target
                ),
            );
        }
        if r.udp_mtu < 200 || r.udp_mtu > 65_000 {
            self.problem(
                "limits.udp_mtu",
                format!(
                    "{} is out of range; expected 200 to 65000 (RFC 3261 uses 1300)",
                    r.udp_mtu
                ),
            );
        }
        Limits {
            max_message_size: r.max_message_size,
            max_headers: r.max_headers,
            idle_timeout: Duration::from_secs(r.idle_timeout_s),
            header_timeout: Duration::from_millis(r.header_timeout_ms),
            tls_handshake_timeout: Duration::from_millis(r.tls_handshake_timeout_ms),
            udp_mtu: r.udp_mtu,
            max_connections: r.max_connections,
            max_connections_per_ip: r.max_connections_per_ip,
            max_transactions: r.max_transactions,
            max_pending_per_source: r.max_pending_per_source,
            memory_budget_bytes: r.memory_budget_bytes,
            connections_per_target: r.connections_per_target,
            connect_timeout: Duration::from_millis(r.connect_timeout_ms),
            keepalive_interval: Duration::from_millis(r.keepalive_interval_ms),
        }
    }

    fn timers(&mut self, r: RawTimers) -> Timers {
        if r.t1_ms == 0 {
            self.problem(
                "timers.t1_ms",
                "must be greater than 0 (RFC 3261 default 500)",
            );
        }
        if r.t2_ms < r.t1_ms {
            self.problem(
                "timers.t2_ms",
                "must be at least t1_ms (RFC 3261 default 4000)",
            );
        }
        if r.timer_c_s < 180 {
            self.problem(
                "timers.timer_c_s",
                format!(
                    "{} is too short; RFC 3261 §16.6 requires more than 180 s",
                    r.timer_c_s
                ),
            );
        }
        Timers {
            t1: Duration::from_millis(r.t1_ms),
            t2: Duration::from_millis(r.t2_ms),
            t4: Duration::from_millis(r.t4_ms),
            timer_c: Duration::from_secs(r.timer_c_s),
        }
    }

    fn dns(&mut self, r: RawDns) -> super::DnsSettings {
        let mut servers = Vec::new();
        for s in &r.servers {
            match s.parse::<SocketAddr>() {
                Ok(a) => servers.push(a),
                Err(_) => self.problem(
                    "dns.servers",
                    format!("`{s}` is not ip:port; expected e.g. \"127.0.0.1:5353\""),
                ),
            }
        }
        let zone_listen = r.zone_listen.as_deref().and_then(|z| match z.parse::<SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => Some(a),
            Ok(_) => {
                self.problem("dns.zone_listen", format!("`{z}` is not a loopback address; the lab zone is served on 127.0.0.0/8 or ::1 only"));
                None
            }
            Err(_) => {
                self.problem("dns.zone_listen", format!("`{z}` is not ip:port; expected e.g. \"127.0.0.1:5353\""));
                None
            }
        });
        if r.zone_file.is_some() != r.zone_listen.is_some() {
            self.problem(
                "dns.zone_file",
                "zone_file and zone_listen go together: the zone is served where zone_listen says",
            );
        }
        super::DnsSettings {
            servers,
            timeout: Duration::from_millis(r.timeout_ms.unwrap_or(2_000).max(1)),
            zone_file: r.zone_file.map(|p| self.base_dir.join(p)),
            zone_listen,
        }
    }

    fn lab(&mut self, r: RawLab) -> LabSettings {
        let mut source_identities = HashMap::new();
        let mut entries: Vec<_> = r.source_identities.into_iter().collect();
        entries.sort();
        for (addr, name) in entries {
            let key = "lab.source_identities";
            match addr.parse::<IpAddr>() {
                Ok(ip) => {
                    let name = self.fqdn(key, &name);
                    source_identities.insert(ip, crate::peer::PeerIdentity::new([name]));
                }
                Err(_) => self.problem(
                    key,
                    format!("`{addr}` is not an IP address; keys are source IPs, e.g. \"127.0.0.1\" = \"sip.fabrikam.test\""),
                ),
            }
        }
        LabSettings { source_identities }
    }
}

/// Splits `host:port`, `[v6]:port`; the host is lowercased.
pub(crate) fn split_host_port(s: &str) -> Option<(String, u16)> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some((sa.ip().to_string(), sa.port()));
    }
    let (host, port) = s.rsplit_once(':')?;
    if host.is_empty() || host.contains(':') || host.contains('[') {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    if port == 0 {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

// === key → line ===

/// Finds the line of a dotted key (`routes[1].transport`) in the source text.
/// The 1-based line of a dotted key (`interfaces.external.tls.cert`, `user[2].user`) in a
/// config text, for problems found after loading (`sipedge check-config`'s start checks).
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    KeyLines::new(text).line_of(key)
}

pub(super) struct KeyLines {
    text: String,
    doc: Option<toml_edit::Document<String>>,
}

impl KeyLines {
    fn new(text: &str) -> Self {
        KeyLines {
            text: text.to_string(),
            doc: toml_edit::Document::parse(text.to_string()).ok(),
        }
    }

    pub(super) fn line_of(&self, key: &str) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut item = doc.as_item();
        let mut span = item.span();
        for part in key.split('.') {
            let (name, index) = match part.split_once('[') {
                Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            let next = match item.get(name) {
                Some(n) => n,
                None => break,
            };
            // Keys carry their own span; values inside inline tables may not.
            if let Some(table) = item.as_table_like() {
                if let Some((k, _)) = table.get_key_value(name) {
                    span = k.span().or(span);
                }
            }
            item = next;
            span = item.span().or(span);
            if let Some(i) = index {
                match item.as_array_of_tables().and_then(|a| a.get(i)) {
                    Some(t) => {
                        span = t.span().or(span);
                        // Continue inside the i-th table.
                        return self.line_in_table(t, key.split_once(']')?.1, span);
                    }
                    None => break,
                }
            }
        }
        span.map(|s| line_of_offset(&self.text, s.start))
    }

    fn line_in_table(
        &self,
        table: &toml_edit::Table,
        rest: &str,
        span: Option<std::ops::Range<usize>>,
    ) -> Option<usize> {
        let rest = rest.trim_start_matches('.');
        let mut span = span;
        if !rest.is_empty() {
            if let Some((k, v)) = table.get_key_value(rest.split('.').next().unwrap_or(rest)) {
                span = k.span().or(v.span()).or(span);
            }
        }
        span.map(|s| line_of_offset(&self.text, s.start))
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[edge]
local_domains = ["contoso.test"]

[interfaces.external]
fqdn = "accessedge.contoso.test"
address = "127.0.0.1"
udp_port = 0

[interfaces.internal]
fqdn = "edge-int.contoso.test"
address = "127.0.0.2"
udp_port = 0

[pool]
target = "127.0.0.1:5070"
transport = "udp"
"#;

    fn parse_str(text: &str) -> Result<Snapshot, ConfigError> {
        parse(text, Path::new("/etc/sipedge"))
    }

    const EXAMPLE: &str = include_str!("../../config/example.toml");

    #[test]
    fn the_example_config_names_every_key_the_loader_accepts() {
        let accepted = super::super::schema_keys::leaf_keys::<RawConfig>();
        // The walker reads the schema: a handful of keys would mean it stopped early.
        assert!(accepted.len() > 60, "{accepted:?}");
        let named = super::super::schema_keys::documented_keys(EXAMPLE)
            .expect("example.toml with its commented-out keys is TOML");
        let missing: Vec<&String> = accepted.iter().filter(|k| !named.contains(*k)).collect();
        assert!(
            missing.is_empty(),
            "config/example.toml says it documents every key but does not name {missing:?}"
        );
    }

    #[test]
    fn the_example_config_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        if let Err(e) = parse(EXAMPLE, &dir) {
            panic!("config/example.toml does not load: {e}");
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let s = parse_str(MINIMAL).expect("minimal config parses");
        assert_eq!(s.edge.local_domains, ["contoso.test"]);
        assert_eq!(s.edge.drain_timeout, Duration::from_secs(5));
        assert_eq!(s.limits.max_message_size, 65_536);
        assert_eq!(s.limits.connections_per_target, 4);
        assert_eq!(s.timers.t1, Duration::from_millis(500));
        assert_eq!(s.pool.host, "127.0.0.1");
        assert_eq!(s.pool.port, 5070);
        assert!(s.is_local_domain("CONTOSO.test"));
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let text = MINIMAL.replace(
            "udp_port = 0\n\n[interfaces.internal]",
            "udp_port = 0\nudp_prot = 1\n\n[interfaces.internal]",
        );
        let err = parse_str(&text).unwrap_err();
        let p = &err.problems()[0];
        assert_eq!(p.line, Some(9), "{err}");
        assert_eq!(p.key, "interfaces.external.udp_prot", "{err}");
        assert!(p.message.contains("udp_prot"), "{err}");
        assert!(
            p.message.contains("udp_port"),
            "names the valid keys: {err}"
        );
    }

    #[test]
    fn every_unknown_key_and_wrong_type_is_reported_at_once_with_the_value_problems() {
        let text = MINIMAL
            .replace(
                "udp_port = 0\n\n[interfaces.internal]",
                "udp_port = \"five\"\nudp_prot = 1\n\n[interfaces.internal]",
            )
            .replace("transport = \"udp\"", "transport = \"sctp\"");
        let err = parse_str(&text).unwrap_err();
        let got: Vec<(String, Option<usize>)> = err
            .problems()
            .into_iter()
            .map(|p| (p.key, p.line))
            .collect();
        let want = [
            ("interfaces.external.udp_port", 8),
            ("interfaces.external.udp_prot", 9),
            ("pool.transport", 18),
        ];
        for (key, line) in want {
            assert!(
                got.contains(&(key.to_string(), Some(line))),
                "{key} on line {line} in {err}"
            );
        }
        let text = MINIMAL.replace("fqdn = \"edge-int.contoso.test\"", "fqdn = 7");
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.problems()[0].key, "interfaces.internal.fqdn", "{err}");
        // A required key commented out for its own type error is not reported missing.
        assert!(!err.to_string().contains("missing field"), "{err}");
    }

    #[test]
    fn bad_values_are_all_reported_with_key_and_line() {
        let text = MINIMAL
            .replace("address = \"127.0.0.2\"", "address = \"edge-int\"")
            .replace("transport = \"udp\"", "transport = \"sctp\"")
            + "\n[limits]\nconnections_per_target = 9\n";
        let err = parse_str(&text).unwrap_err();
        let problems = err.problems();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "interfaces.internal.address",
                "pool.transport",
                "limits.connections_per_target"
            ],
            "{err}"
        );
        assert_eq!(problems[0].line, Some(12));
        assert!(problems[1].message.contains("udp, tcp or tls"));
        assert_eq!(problems[2].line, Some(20));
        assert!(problems[2].message.contains("1 to 4"));
    }

    #[test]
    fn relative_tls_paths_resolve_against_the_config_directory() {
        let text = MINIMAL.replace(
            "[interfaces.internal]",
            "tls_port = 0\n[interfaces.external.tls]\ncert = \"../certs/a.crt\"\nkey = \"../certs/a.key\"\ntrust_anchors = [\"../certs/ca.crt\"]\n\n[interfaces.internal]",
        );
        let s = parse_str(&text).expect("parses");
        let tls = s.external.tls.expect("tls");
        assert_eq!(tls.cert, Path::new("/etc/sipedge/../certs/a.crt"));
        assert!(tls.require_client_cert);
    }

    #[test]
    fn trace_records_nothing_by_default_and_files_resolve_against_the_config_directory() {
        let plain = parse_str(MINIMAL).expect("parses").trace;
        assert_eq!(plain, TraceSettings::default());
        assert!(!plain.records() && plain.pcap.is_none() && plain.hep.is_none());
        let s = parse_str(&format!(
            "{MINIMAL}\n[trace]\npcap = \"cap/edge.pcap\"\npcap_max_bytes = 2000000\nhep = \"127.0.0.1:9060\"\nhep_node_id = 7\nhep_node_name = \"edge1\"\nkeylog = \"/tmp/k.log\"\nring_bytes = 0\n"
        ))
        .expect("parses")
        .trace;
        assert_eq!(
            s.pcap.as_deref(),
            Some(Path::new("/etc/sipedge/cap/edge.pcap"))
        );
        assert_eq!(s.pcap_max_bytes, 2_000_000);
        assert_eq!(s.hep, Some("127.0.0.1:9060".parse().unwrap()));
        assert_eq!(
            (s.hep_node_id, s.hep_node_name.as_deref()),
            (7, Some("edge1"))
        );
        assert_eq!(s.keylog.as_deref(), Some(Path::new("/tmp/k.log")));
        assert_eq!(s.ring_bytes, 0);
        let err = parse_str(&format!(
            "{MINIMAL}\n[trace]\nhep = \"homer:9060\"\npcap_max_bytes = 10\n"
        ))
        .unwrap_err();
        let keys: Vec<String> = err.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["trace.hep", "trace.pcap_max_bytes"], "{err}");
    }

    #[test]
    fn the_topology_key_file_resolves_against_the_config_directory_and_is_optional() {
        let s = parse_str(&format!(
            "{MINIMAL}\n[topology]\nkey_file = \"keys/topology.key\"\n"
        ))
        .expect("parses");
        assert_eq!(
            s.topology.key_file.as_deref(),
            Some(Path::new("/etc/sipedge/keys/topology.key"))
        );
        assert_eq!(parse_str(MINIMAL).expect("parses").topology.key_file, None);
        let err = parse_str(&format!("{MINIMAL}\n[topology]\nkey = \"x\"\n")).unwrap_err();
        assert!(err.to_string().contains("unknown field `key`"), "{err}");
    }

    #[test]
    fn tls_listener_without_certificates_is_refused() {
        let text = MINIMAL.replace(
            "udp_port = 0\n\n[interfaces.internal]",
            "udp_port = 0\ntls_port = 5061\n\n[interfaces.internal]",
        );
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.problems()[0].key, "interfaces.external.tls_port");
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("sip.fabrikam.test:5061"),
            Some(("sip.fabrikam.test".into(), 5061))
        );
        assert_eq!(split_host_port("[::1]:5060"), Some(("::1".into(), 5060)));
        assert_eq!(
            split_host_port("127.0.0.1:5070"),
            Some(("127.0.0.1".into(), 5070))
        );
        assert_eq!(split_host_port("sip.fabrikam.test"), None);
        assert_eq!(split_host_port("::1"), None);
    }
}
