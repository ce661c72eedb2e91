//! hickory-resolver behind [`Resolve`] and [`RecordSource`]: real DNS for the edge and the lab.
//!
//! Hickory's own cache is switched off: [`CachingResolver`](super::CachingResolver) is
//! the one cache, so its size and counters are the ones the operator configures and sees.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData, Record};
use hickory_resolver::TokioResolver;

use super::{normalize_name, Answer, BoxFuture, RecordSource, Resolve, ResolveError, SrvTarget};

/// A resolver that asks real DNS servers.
#[derive(Clone)]
pub struct HickoryResolver {
    inner: TokioResolver,
    /// Bounds a whole lookup when the caller chose one; `None` leaves it to the system
    /// configuration's timeout and attempts.
    deadline: Option<Duration>,
}

/// Why a [`HickoryResolver`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The system configuration (`/etc/resolv.conf` on Unix) is missing or unreadable.
    #[error("cannot read the system dns configuration: {detail}")]
    SystemConfig { detail: String },
    /// `with_name_servers` was given no server.
    #[error("no dns name server given")]
    NoNameServers,
    /// hickory refused the configuration.
    #[error("cannot build the dns resolver: {detail}")]
    Build { detail: String },
}

impl HickoryResolver {
    /// Uses the operating system's resolver configuration (name servers, timeout, attempts).
    pub fn system() -> Result<Self, BuildError> {
        let mut builder = TokioResolver::builder_tokio().map_err(|e| BuildError::SystemConfig {
            detail: e.to_string(),
        })?;
        edge_options(builder.options_mut());
        let inner = builder.build().map_err(|e| BuildError::Build {
            detail: e.to_string(),
        })?;
        Ok(HickoryResolver {
            inner,
            deadline: None,
        })
    }

    /// Asks exactly these servers (UDP, and TCP for truncated answers), e.g. the lab zone
    /// on loopback. `timeout` bounds each whole lookup; there is one attempt per server.
    pub fn with_name_servers(
        servers: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Self, BuildError> {
        if servers.is_empty() {
            return Err(BuildError::NoNameServers);
        }
        let name_servers = servers
            .iter()
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut ns.connections {
                    connection.port = addr.port();
                }
                ns
            })
            .collect();
        let mut opts = ResolverOpts::default();
        edge_options(&mut opts);
        opts.timeout = timeout;
        opts.attempts = 1;
        let inner = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()
        .map_err(|e| BuildError::Build {
            detail: e.to_string(),
        })?;
        Ok(HickoryResolver {
            inner,
            deadline: Some(timeout),
        })
    }

    /// Runs one lookup under the deadline and turns hickory's outcome into ours.
    async fn run<T>(
        &self,
        name: &str,
        lookup: impl std::future::Future<Output = Result<Vec<Record>, NetError>>,
        extract: impl Fn(&RData) -> Option<T>,
    ) -> Result<Answer<T>, ResolveError> {
        let result = match self.deadline {
            Some(deadline) => tokio::time::timeout(deadline, lookup)
                .await
                .unwrap_or(Err(NetError::Timeout)),
            None => lookup.await,
        };
        match result {
            Ok(answers) => {
                let ttl = answers.iter().map(|r| r.ttl).min().unwrap_or(0);
                let records: Vec<T> = answers.iter().filter_map(|r| extract(&r.data)).collect();
                if records.is_empty() {
                    // e.g. only a CNAME, or an SRV of "." (RFC 2782: service not offered).
                    Ok(Answer::NoRecords { negative_ttl: None })
                } else {
                    Ok(Answer::Records {
                        records,
                        ttl: Duration::from_secs(u64::from(ttl)),
                    })
                }
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(no_records))) => Ok(Answer::NoRecords {
                negative_ttl: no_records
                    .negative_ttl
                    .map(|secs| Duration::from_secs(u64::from(secs))),
            }),
            Err(NetError::Timeout) => Err(ResolveError::Timeout {
                name: normalize_name(name),
            }),
            Err(e) => Err(ResolveError::Other {
                name: normalize_name(name),
                detail: e.to_string(),
            }),
        }
    }
}

impl RecordSource for HickoryResolver {
    fn srv_records(&self, name: &str) -> BoxFuture<'_, Result<Answer<SrvTarget>, ResolveError>> {
        let name = name.to_owned();
        Box::pin(async move {
            let fqdn = absolute(&name)?;
            let lookup = async {
                let lookup = self.inner.srv_lookup(fqdn).await?;
                Ok(lookup.answers().to_vec())
            };
            self.run(&name, lookup, |data| match data {
                RData::SRV(srv) if !srv.target.is_root() => Some(SrvTarget::new(
                    srv.priority,
                    srv.weight,
                    srv.port,
                    &srv.target.to_ascii(),
                )),
                _ => None,
            })
            .await
        })
    }

    fn ip_records(&self, host: &str) -> BoxFuture<'_, Result<Answer<IpAddr>, ResolveError>> {
        let host = host.to_owned();
        Box::pin(async move {
            if let Ok(ip) = host.parse::<IpAddr>() {
                // A literal needs no DNS; it never expires.
                return Ok(Answer::Records {
                    records: vec![ip],
                    ttl: Duration::from_secs(u64::from(u32::MAX)),
                });
            }
            let fqdn = absolute(&host)?;
            let lookup = async {
                let lookup = self.inner.lookup_ip(fqdn).await?;
                Ok(lookup.as_lookup().answers().to_vec())
            };
            self.run(&host, lookup, |data| data.ip_addr()).await
        })
    }
}

impl Resolve for HickoryResolver {
    fn srv(&self, name: &str) -> BoxFuture<'_, Result<Vec<SrvTarget>, ResolveError>> {
        let name = name.to_owned();
        Box::pin(async move { self.srv_records(&name).await?.into_result(&name) })
    }

    fn ip(&self, host: &str) -> BoxFuture<'_, Result<Vec<IpAddr>, ResolveError>> {
        let host = host.to_owned();
        Box::pin(async move { self.ip_records(&host).await?.into_result(&host) })
    }
}

/// The options the edge needs on top of a base configuration.
fn edge_options(opts: &mut ResolverOpts) {
    // Our CachingResolver is the cache; a second one would serve stale TTLs to it.
    opts.cache_size = 0;
    // Partners may publish only AAAA or only A; ask both at once.
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
}

/// Parses `name` as an absolute name, so no search domain is ever appended.
fn absolute(name: &str) -> Result<Name, ResolveError> {
    let mut parsed = Name::from_ascii(name).map_err(|e| ResolveError::Other {
        name: normalize_name(name),
        detail: e.to_string(),
    })?;
    parsed.set_fqdn(true);
    Ok(parsed)
}
