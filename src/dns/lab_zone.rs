//! The lab's DNS server: an RFC 1035 master file served by hickory-server on loopback.
//!
//! The lab runs the production DNS path (hickory-resolver over UDP/TCP) against this
//! server, so SRV discovery, NXDOMAIN and timeouts behave as they would on the
//! Internet while nothing leaves 127.0.0.0/8. One file may hold several zones: every
//! SOA record starts one, and each record belongs to the deepest zone above it.
//!
//! Names can be broken while the server runs ([`ZoneFaults`]): a name marked
//! [`DnsFault::Missing`] gets NXDOMAIN whatever the zone holds, and a query for a name
//! marked [`DnsFault::Timeout`] is never answered, so the asker times out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, RecordSet, RecordType, RrKey};
use hickory_proto::serialize::txt::Parser;
use hickory_resolver::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponseBuilder, ZoneHandler, ZoneType,
};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

/// How long an idle TCP client may keep a connection: long enough for a resolver's
/// retry, short enough that a stuck test does not pin a task.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Outgoing response buffer per TCP connection, in bytes (hickory's usual size).
const TCP_RESPONSE_BUFFER: usize = 4096;

/// A running authoritative DNS server for the lab zones.
///
/// Dropping it aborts the server tasks; [`shutdown`](Self::shutdown) stops them gracefully.
pub struct LabDnsServer {
    server: Server<FaultyCatalog>,
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    zones: Vec<String>,
    faults: ZoneFaults,
    /// SRV owner names by target host (lowercase, no trailing dot).
    srv_by_target: HashMap<String, BTreeSet<String>>,
}

/// How a name is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFault {
    /// Answered NXDOMAIN, as if its records were deleted.
    Missing,
    /// Never answered.
    Timeout,
}

/// The names broken on purpose, shared between the server and whoever breaks them.
#[derive(Debug, Clone, Default)]
pub struct ZoneFaults {
    /// Lowercase names without the trailing dot; a std lock, never held across an await.
    names: Arc<RwLock<HashMap<String, DnsFault>>>,
}

/// The catalog, behind the fault check every query passes first.
struct FaultyCatalog {
    catalog: Catalog,
    faults: ZoneFaults,
}

/// Why a zone file could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// `origin_hint` is not a valid domain name.
    #[error("invalid zone origin {origin}: {detail}")]
    BadOrigin { origin: String, detail: String },
    /// The master file does not parse (syntax, unknown type, relative name without origin).
    #[error("cannot parse zone file: {detail}")]
    Parse { detail: String },
    /// The file has no SOA record, so it defines no zone.
    #[error("zone file has no soa record")]
    NoSoa,
    /// A record lies outside every zone the file's SOA records define.
    #[error("record {name} is outside every zone in the file")]
    OutsideZones { name: String },
    /// hickory refused a zone's records.
    #[error("cannot load zone {origin}: {detail}")]
    Load { origin: String, detail: String },
    /// The sockets handed in have no local address.
    #[error("cannot read the dns socket address: {0}")]
    Io(#[from] std::io::Error),
}

impl LabDnsServer {
    /// Parses `zone_text` and serves it on the already-bound sockets, so tests can bind
    /// port 0. `origin_hint` is the origin for relative names before any `$ORIGIN`;
    /// without one it is the root, as for a file holding only absolute names. The zones
    /// served are those the file's SOA records define, whatever the origin.
    ///
    /// Must be called inside a Tokio runtime: the server runs as spawned tasks.
    pub fn start(
        zone_text: &str,
        origin_hint: Option<&str>,
        udp: UdpSocket,
        tcp: Option<TcpListener>,
    ) -> Result<Self, ZoneError> {
        let origin = origin_hint
            .map(|o| {
                Name::from_ascii(o).map_err(|e| ZoneError::BadOrigin {
                    origin: o.to_owned(),
                    detail: e.to_string(),
                })
            })
            .transpose()?
            .unwrap_or_else(Name::root);
        let records = parse_zone(zone_text, origin)?;
        let srv_by_target = srv_owners_by_target(&records);

        let mut catalog = Catalog::new();
        let mut zones = Vec::new();
        for (apex, records) in split_zones(records)? {
            let name = apex.to_string();
            let handler = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
                Name::from(&apex),
                records,
                ZoneType::Primary,
                AxfrPolicy::Deny,
            )
            .map_err(|detail| ZoneError::Load {
                origin: name.clone(),
                detail,
            })?;
            let handlers: Vec<Arc<dyn ZoneHandler>> = vec![Arc::new(handler)];
            catalog.upsert(apex, handlers);
            zones.push(name);
        }

        let udp_addr = udp.local_addr()?;
        let tcp_addr = tcp.as_ref().map(TcpListener::local_addr).transpose()?;
        let faults = ZoneFaults::default();
        let mut server = Server::new(FaultyCatalog {
            catalog,
            faults: faults.clone(),
        });
        server.register_socket(udp);
        if let Some(tcp) = tcp {
            server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        }
        Ok(LabDnsServer {
            server,
            udp_addr,
            tcp_addr,
            zones,
            faults,
            srv_by_target,
        })
    }

    /// The handle that breaks and restores names while the server runs.
    pub fn faults(&self) -> ZoneFaults {
        self.faults.clone()
    }

    /// The names a host is found by: its own (A/AAAA) and every SRV name that points at
    /// it, e.g. `federation.messenger.msn.com` and `_sipfederationtls._tcp.live.com`.
    pub fn names_of_host(&self, host: &str) -> Vec<String> {
        let host = crate::dns::normalize_name(host);
        let mut names = vec![host.clone()];
        if let Some(owners) = self.srv_by_target.get(&host) {
            names.extend(owners.iter().cloned());
        }
        names
    }

    /// The UDP address the server answers on.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The TCP address, when a listener was given.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The zone apexes served, in DNS canonical order, e.g. `["."]` for a root zone.
    pub fn zones(&self) -> &[String] {
        &self.zones
    }

    /// Stops accepting queries and waits for the server tasks to end.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::warn!(error = %e, "lab dns server stopped with an error");
        }
    }
}

// === impl ZoneFaults ===

impl ZoneFaults {
    /// Breaks `names` the way `fault` says, or restores them with `None`.
    pub fn set<S: AsRef<str>>(&self, names: &[S], fault: Option<DnsFault>) {
        let mut map = self.names.write().unwrap_or_else(|p| p.into_inner());
        for n in names {
            let n = crate::dns::normalize_name(n.as_ref());
            match fault {
                Some(f) => map.insert(n, f),
                None => map.remove(&n),
            };
        }
    }

    /// How `name` is broken, if it is.
    pub fn get(&self, name: &str) -> Option<DnsFault> {
        let map = self.names.read().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return None;
        }
        map.get(&crate::dns::normalize_name(name)).copied()
    }
}

// === impl FaultyCatalog ===

#[async_trait::async_trait]
impl RequestHandler for FaultyCatalog {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let fault = request
            .queries
            .queries()
            .iter()
            .find_map(|q| self.faults.get(&q.name().to_string()));
        match fault {
            None => {
                self.catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
            Some(DnsFault::Timeout) => {
                // Nothing is sent: the asker waits out its own timeout.
                tracing::debug!(
                    id = request.metadata.id,
                    "lab dns fault: query left unanswered"
                );
                ResponseInfo::from(Header {
                    metadata: Metadata::new(
                        request.metadata.id,
                        MessageType::Response,
                        request.metadata.op_code,
                    ),
                    counts: HeaderCounts::default(),
                })
            }
            Some(DnsFault::Missing) => {
                let response = MessageResponseBuilder::new(&request.queries, None)
                    .error_msg(&request.metadata, ResponseCode::NXDomain);
                match response_handle.send_response(response).await {
                    Ok(info) => info,
                    Err(e) => {
                        tracing::warn!(error = %e, "lab dns: cannot send NXDOMAIN");
                        let mut metadata = Metadata::new(
                            request.metadata.id,
                            MessageType::Response,
                            request.metadata.op_code,
                        );
                        metadata.response_code = ResponseCode::ServFail;
                        ResponseInfo::from(Header {
                            metadata,
                            counts: HeaderCounts::default(),
                        })
                    }
                }
            }
        }
    }
}

/// SRV owner names by the target they point at.
fn srv_owners_by_target(records: &BTreeMap<RrKey, RecordSet>) -> HashMap<String, BTreeSet<String>> {
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (key, set) in records {
        if key.record_type != RecordType::SRV {
            continue;
        }
        for r in set.records_without_rrsigs() {
            if let RData::SRV(srv) = &r.data {
                out.entry(crate::dns::normalize_name(&srv.target.to_ascii()))
                    .or_default()
                    .insert(crate::dns::normalize_name(&key.name.to_string()));
            }
        }
    }
    out
}

/// Parses a master file's records (the part of starting a server that can fail on the
/// file's text, so `check-config` can run it without serving anything).
fn parse_zone(zone_text: &str, origin: Name) -> Result<BTreeMap<RrKey, RecordSet>, ZoneError> {
    let (_, records) = Parser::new(zone_text, None, Some(origin))
        .parse()
        .map_err(|e| ZoneError::Parse {
            detail: e.to_string(),
        })?;
    Ok(records)
}

/// Whether `zone_text` would be served: it parses, with an SOA, every record inside a zone.
pub fn check_zone(zone_text: &str) -> Result<(), ZoneError> {
    split_zones(parse_zone(zone_text, Name::root())?).map(|_| ())
}

/// Groups parsed record sets into zones: one per SOA owner, each record set going to
/// the deepest apex that contains it.
fn split_zones(
    records: BTreeMap<RrKey, RecordSet>,
) -> Result<BTreeMap<LowerName, BTreeMap<RrKey, RecordSet>>, ZoneError> {
    let apexes: Vec<LowerName> = records
        .keys()
        .filter(|key| key.record_type == RecordType::SOA)
        .map(|key| key.name.clone())
        .collect();
    if apexes.is_empty() {
        return Err(ZoneError::NoSoa);
    }
    let mut zones: BTreeMap<LowerName, BTreeMap<RrKey, RecordSet>> = BTreeMap::new();
    for (key, set) in records {
        let apex = apexes
            .iter()
            .filter(|apex| apex.zone_of(&key.name))
            .max_by_key(|apex| apex.num_labels())
            .ok_or_else(|| ZoneError::OutsideZones {
                name: key.name.to_string(),
            })?;
        zones.entry(apex.clone()).or_default().insert(key, set);
    }
    Ok(zones)
}
