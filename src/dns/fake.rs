//! An in-memory resolver for tests: fixed answers, simulated timeouts, a query counter.
//!
//! Policy, proxy and cache tests use it instead of sockets, so they are fast and never
//! flaky. Anything not configured answers "no records", like an authoritative server
//! for a zone that lacks the name.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{normalize_name, Answer, BoxFuture, RecordSource, Resolve, ResolveError, SrvTarget};

/// A test double for [`Resolve`] and [`RecordSource`], built with chained calls.
///
/// The builder methods `srv` and `ip` shadow the [`Resolve`] methods of the same name,
/// so query it as a `dyn Resolve` (as the edge does) or with `Resolve::srv(&dns, name)`.
///
/// ```
/// use sipedge::dns::{SrvTarget, StaticResolver};
/// let dns = StaticResolver::new()
///     .srv("_sipfederationtls._tcp.fabrikam.test", vec![SrvTarget::new(10, 100, 5061, "sip.fabrikam.test")])
///     .ip("sip.fabrikam.test", vec!["127.0.0.3".parse().unwrap()])
///     .timeout("_sipfederationtls._tcp.slow.test");
/// ```
#[derive(Debug)]
pub struct StaticResolver {
    srv: HashMap<String, Vec<SrvTarget>>,
    ip: HashMap<String, Vec<IpAddr>>,
    timeouts: HashSet<String>,
    ttl: Duration,
    negative_ttl: Option<Duration>,
    queries: AtomicUsize,
}

impl StaticResolver {
    /// An empty resolver: every name has no records; answers carry a 300 s TTL.
    pub fn new() -> Self {
        StaticResolver {
            srv: HashMap::new(),
            ip: HashMap::new(),
            timeouts: HashSet::new(),
            ttl: Duration::from_secs(300),
            negative_ttl: None,
            queries: AtomicUsize::new(0),
        }
    }

    /// Answers SRV queries for `name` with `records`.
    pub fn srv(mut self, name: &str, records: Vec<SrvTarget>) -> Self {
        self.srv.insert(normalize_name(name), records);
        self
    }

    /// Answers A/AAAA queries for `host` with `addrs`.
    pub fn ip(mut self, host: &str, addrs: Vec<IpAddr>) -> Self {
        self.ip.insert(normalize_name(host), addrs);
        self
    }

    /// Makes every query for `name` (SRV or IP) fail with [`ResolveError::Timeout`] at once.
    pub fn timeout(mut self, name: &str) -> Self {
        self.timeouts.insert(normalize_name(name));
        self
    }

    /// Sets the TTL of every positive answer (default 300 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the negative TTL reported with "no records", as a SOA would (default none).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// How many queries reached this resolver, so cache tests can see what was cached.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }

    fn answer<T: Clone>(
        &self,
        table: &HashMap<String, Vec<T>>,
        name: &str,
    ) -> Result<Answer<T>, ResolveError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let name = normalize_name(name);
        if self.timeouts.contains(&name) {
            return Err(ResolveError::Timeout { name });
        }
        Ok(match table.get(&name) {
            Some(records) if !records.is_empty() => Answer::Records {
                records: records.clone(),
                ttl: self.ttl,
            },
            _ => Answer::NoRecords {
                negative_ttl: self.negative_ttl,
            },
        })
    }
}

impl Default for StaticResolver {
    fn default() -> Self {
        StaticResolver::new()
    }
}

impl RecordSource for StaticResolver {
    fn srv_records(&self, name: &str) -> BoxFuture<'_, Result<Answer<SrvTarget>, ResolveError>> {
        let answer = self.answer(&self.srv, name);
        Box::pin(async move { answer })
    }

    fn ip_records(&self, host: &str) -> BoxFuture<'_, Result<Answer<IpAddr>, ResolveError>> {
        let answer = self.answer(&self.ip, host);
        Box::pin(async move { answer })
    }
}

impl Resolve for StaticResolver {
    fn srv(&self, name: &str) -> BoxFuture<'_, Result<Vec<SrvTarget>, ResolveError>> {
        let result = self
            .answer(&self.srv, name)
            .and_then(|a| a.into_result(name));
        Box::pin(async move { result })
    }

    fn ip(&self, host: &str) -> BoxFuture<'_, Result<Vec<IpAddr>, ResolveError>> {
        let result = self
            .answer(&self.ip, host)
            .and_then(|a| a.into_result(host));
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_what_it_was_given() {
        let target = SrvTarget::new(10, 100, 5061, "sip.fabrikam.test");
        let dns = StaticResolver::new()
            .srv("_sipfederationtls._tcp.fabrikam.test", vec![target.clone()])
            .ip("sip.fabrikam.test", vec!["127.0.0.3".parse().unwrap()])
            .timeout("slow.test");
        // The builder's `srv`/`ip` shadow the trait's; callers hold a `dyn Resolve` anyway.
        let resolve: &dyn Resolve = &dns;

        assert_eq!(
            resolve
                .srv("_sipfederationtls._tcp.Fabrikam.test.")
                .await
                .unwrap(),
            vec![target]
        );
        assert_eq!(
            resolve.ip("sip.fabrikam.test").await.unwrap(),
            vec!["127.0.0.3".parse::<IpAddr>().unwrap()]
        );
        assert!(resolve
            .srv("_sipfederationtls._tcp.nowhere.test")
            .await
            .unwrap_err()
            .is_no_records());
        assert_eq!(
            resolve.ip("slow.test").await.unwrap_err(),
            ResolveError::Timeout {
                name: "slow.test".into()
            }
        );
        assert_eq!(dns.queries(), 4);
    }
}
