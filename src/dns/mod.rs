//! Turns a route into targets: SRV and A/AAAA lookups behind one trait, with a TTL cache.
//!
//! The Access Edge resolves `_sipfederationtls._tcp.<domain>` to find a partner's edge
//! (access-edge.md §b.4 step 3d), orders the answers by RFC 2782, keeps only targets in
//! the partner's own domain and caches the results (`DnsSrvCacheRecordCount`). Everything
//! above this module sees only [`Resolve`], so policy and proxy tests run on a
//! [`StaticResolver`] while the edge and the lab run [`HickoryResolver`] behind a
//! [`CachingResolver`], the lab against its own zone served by [`LabDnsServer`].
//!
//! # Layout
//! - `srv`: RFC 2782 ordering and the "top-level suffix match" rule (pure).
//! - `cache`: [`CachingResolver`], bounded, honouring TTLs, with negative caching.
//! - `hickory`: [`HickoryResolver`], hickory-resolver over the system or chosen servers.
//! - `fake`: [`StaticResolver`], an in-memory resolver for tests.
//! - `lab_zone`: [`LabDnsServer`], an RFC 1035 master file served by hickory-server.

mod cache;
mod fake;
mod hickory;
mod lab_zone;
mod srv;

pub use cache::{CachingResolver, DnsStats, DEFAULT_NEGATIVE_TTL};
pub use fake::StaticResolver;
pub use hickory::{BuildError, HickoryResolver};
pub use lab_zone::{check_zone, DnsFault, LabDnsServer, ZoneError, ZoneFaults};
pub use srv::{order_srv, same_domain};

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

/// A boxed, sendable future; keeps [`Resolve`] object-safe so the edge can hold an
/// `Arc<dyn Resolve>` chosen at start-up (system, lab zone, or a test double).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Resolves the names the edge needs to reach a federated peer.
///
/// Names are absolute whether or not they end in a dot: the edge never relies on a
/// search list, because a partner domain must not silently become a local name.
pub trait Resolve: Send + Sync + 'static {
    /// Looks up SRV records, e.g. `_sipfederationtls._tcp.fabrikam.test`, in the order
    /// the server returned them; callers order them with [`order_srv`].
    fn srv(&self, name: &str) -> BoxFuture<'_, Result<Vec<SrvTarget>, ResolveError>>;

    /// Looks up the A and AAAA records of a host.
    fn ip(&self, host: &str) -> BoxFuture<'_, Result<Vec<IpAddr>, ResolveError>>;
}

/// A DNS source that also says how long its answers stay valid.
///
/// [`CachingResolver`] wraps any `RecordSource`; the TTLs decide how long it keeps an
/// answer. "No records" is an answer here, not an error, because it is cached too.
pub trait RecordSource: Send + Sync + 'static {
    /// Looks up SRV records with their TTL.
    fn srv_records(&self, name: &str) -> BoxFuture<'_, Result<Answer<SrvTarget>, ResolveError>>;

    /// Looks up A and AAAA records with their TTL.
    fn ip_records(&self, host: &str) -> BoxFuture<'_, Result<Answer<IpAddr>, ResolveError>>;
}

/// What a DNS server said about one name and record type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// At least one record; `ttl` is the smallest TTL among them.
    Records { records: Vec<T>, ttl: Duration },
    /// NXDOMAIN or no data of this type; `negative_ttl` comes from the zone's SOA
    /// (RFC 2308) when the server sent one.
    NoRecords { negative_ttl: Option<Duration> },
}

impl<T> Answer<T> {
    /// The records, or [`ResolveError::NoRecords`] naming `name`.
    pub fn into_result(self, name: &str) -> Result<Vec<T>, ResolveError> {
        match self {
            Answer::Records { records, .. } => Ok(records),
            Answer::NoRecords { .. } => Err(ResolveError::NoRecords {
                name: normalize_name(name),
            }),
        }
    }
}

/// Why a lookup gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The name does not exist or has no records of the asked type (NXDOMAIN or
    /// NODATA). For a federation SRV name the edge answers 504 with ms-diagnostics 1008.
    #[error("no dns records for {name}")]
    NoRecords { name: String },
    /// No server answered in time; unlike `NoRecords` this says nothing about the name.
    #[error("dns lookup for {name} timed out")]
    Timeout { name: String },
    /// Any other failure: refused, server failure, malformed name or answer.
    #[error("dns lookup for {name} failed: {detail}")]
    Other { name: String, detail: String },
}

impl ResolveError {
    /// True when DNS said the records do not exist, as opposed to a failed lookup.
    pub fn is_no_records(&self) -> bool {
        matches!(self, ResolveError::NoRecords { .. })
    }

    /// The name that was looked up.
    pub fn name(&self) -> &str {
        match self {
            ResolveError::NoRecords { name }
            | ResolveError::Timeout { name }
            | ResolveError::Other { name, .. } => name,
        }
    }
}

/// One SRV record: where and in which order to try a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SrvTarget {
    /// Lower is tried first (RFC 2782).
    pub priority: u16,
    /// Relative share among targets of the same priority.
    pub weight: u16,
    pub port: u16,
    /// Host name, lowercase, without the trailing dot.
    pub target: String,
}

impl SrvTarget {
    /// Builds a target, normalizing the host name (lowercase, no trailing dot) so that
    /// comparisons with configured FQDNs are plain string equality.
    pub fn new(priority: u16, weight: u16, port: u16, target: &str) -> Self {
        SrvTarget {
            priority,
            weight,
            port,
            target: normalize_name(target),
        }
    }
}

/// Lowercase without the trailing dot: the one spelling of a name used in keys and
/// comparisons, since DNS names are case-insensitive and `a.b.` equals `a.b`.
pub(crate) fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests;
