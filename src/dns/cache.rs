//! A bounded DNS cache in front of any [`RecordSource`], honouring record TTLs.
//!
//! The Access Edge caches SRV results (`DnsSrvCacheRecordCount`) so that a burst of
//! messages to one partner costs one lookup. Answers are kept for their TTL, "no
//! records" for the SOA's negative TTL, and the oldest entry makes room when full.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{normalize_name, Answer, BoxFuture, RecordSource, Resolve, ResolveError, SrvTarget};

/// How long "no records" is remembered when the server sent no SOA (RFC 2308 allows
/// negative caching only with one, but a missing partner should not cost a lookup per
/// message either).
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(60);

/// Upper bound on any cached TTL, so a zone typo (TTL of weeks) cannot pin a stale
/// target for longer than a day.
const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Caches the answers of an inner [`RecordSource`] for their TTL.
///
/// Timeouts and other failures are not cached: the next message retries. Two
/// concurrent misses for one name both go to the source; the later answer wins.
pub struct CachingResolver<R> {
    inner: R,
    /// Read at every insertion, so a DnsSrvCacheRecordCount change applies at once.
    capacity: Capacity,
    negative_ttl: Duration,
    /// Entries and their age order; a std mutex because it is never held across an await.
    state: Mutex<CacheState>,
    hits: AtomicU64,
    misses: AtomicU64,
    clock: Clock,
}

/// Counters for metrics; `lookups == hits + misses`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    pub lookups: u64,
    pub hits: u64,
    pub misses: u64,
}

type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;
type Capacity = Arc<dyn Fn() -> usize + Send + Sync>;

impl<R: RecordSource> CachingResolver<R> {
    /// Caches at most `capacity` answers (one per name and record type); 0 disables
    /// caching but still counts lookups.
    pub fn new(inner: R, capacity: usize) -> Self {
        CachingResolver {
            inner,
            capacity: Arc::new(move || capacity),
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            state: Mutex::new(CacheState::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            clock: Arc::new(Instant::now),
        }
    }

    /// Sets how long "no records" is kept when the answer carried no SOA.
    /// Defaults to [`DEFAULT_NEGATIVE_TTL`].
    /// Takes the capacity from `capacity` at each insertion (the edge reads the live
    /// config's DnsSrvCacheRecordCount); a smaller value evicts the oldest answers then.
    pub fn with_capacity_from(mut self, capacity: impl Fn() -> usize + Send + Sync + 'static) -> Self {
        self.capacity = Arc::new(capacity);
        self
    }

    pub fn with_negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Replaces the clock, so tests step time by hand instead of sleeping.
    #[cfg(test)]
    pub(crate) fn with_clock(
        mut self,
        clock: impl Fn() -> Instant + Send + Sync + 'static,
    ) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Lookup, hit and miss counts since creation.
    pub fn stats(&self) -> DnsStats {
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        DnsStats {
            lookups: hits + misses,
            hits,
            misses,
        }
    }

    /// Number of answers currently held, expired ones included until touched or evicted.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every answer, so the next lookup of each name asks the source (the lab
    /// flushes it when it breaks or restores a peer's DNS records).
    pub fn clear(&self) {
        let mut state = self.lock();
        state.entries.clear();
        state.by_age.clear();
    }

    /// The shared path of `srv` and `ip`: serve from the cache or ask the source and
    /// remember its answer.
    async fn cached<'a, T: Cacheable>(
        &'a self,
        key: Key,
        fetch: impl FnOnce(&str) -> BoxFuture<'a, Result<Answer<T>, ResolveError>>,
    ) -> Result<Vec<T>, ResolveError> {
        let now = (self.clock)();
        let found = self
            .lock()
            .get(&key, now)
            .map(|value| value.map(|records| T::unwrap(records).to_vec()));
        if let Some(found) = found {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return found.ok_or(ResolveError::NoRecords { name: key.name });
        }
        self.misses.fetch_add(1, Ordering::Relaxed);

        let answer = fetch(&key.name).await?;
        let (value, ttl) = match &answer {
            Answer::Records { records, ttl } => (Some(T::wrap(records.clone())), *ttl),
            Answer::NoRecords { negative_ttl } => (None, negative_ttl.unwrap_or(self.negative_ttl)),
        };
        let ttl = ttl.min(MAX_TTL);
        let capacity = (self.capacity)();
        if capacity > 0 && !ttl.is_zero() {
            let expires = (self.clock)() + ttl;
            self.lock().insert(key.clone(), value, expires, capacity);
        }
        answer.into_result(&key.name)
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        // A panic while holding the lock cannot leave a half-written entry worth
        // refusing service over: at worst an entry is missing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<R: RecordSource> Resolve for CachingResolver<R> {
    fn srv(&self, name: &str) -> BoxFuture<'_, Result<Vec<SrvTarget>, ResolveError>> {
        let key = Key::new(Kind::Srv, name);
        Box::pin(self.cached(key, move |name| self.inner.srv_records(name)))
    }

    fn ip(&self, host: &str) -> BoxFuture<'_, Result<Vec<IpAddr>, ResolveError>> {
        let key = Key::new(Kind::Ip, host);
        Box::pin(self.cached(key, move |host| self.inner.ip_records(host)))
    }
}

// === impl CacheState ===

/// The cache proper: entries by key, and the same keys by insertion order so the
/// oldest is found without a scan.
#[derive(Default)]
struct CacheState {
    entries: HashMap<Key, Entry>,
    by_age: BTreeMap<u64, Key>,
    next_seq: u64,
}

struct Entry {
    /// `None` is a cached "no records".
    value: Option<Records>,
    expires: Instant,
    seq: u64,
}

impl CacheState {
    /// The live entry for `key`; an expired one is dropped and reported as absent.
    fn get(&mut self, key: &Key, now: Instant) -> Option<Option<&Records>> {
        let expired = self.entries.get(key)?.expires <= now;
        if expired {
            self.remove(key);
            return None;
        }
        self.entries.get(key).map(|e| e.value.as_ref())
    }

    fn insert(&mut self, key: Key, value: Option<Records>, expires: Instant, capacity: usize) {
        self.remove(&key);
        while self.entries.len() >= capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_age.insert(seq, key.clone());
        self.entries.insert(
            key,
            Entry {
                value,
                expires,
                seq,
            },
        );
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.entries.remove(key) {
            self.by_age.remove(&old.seq);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Srv,
    Ip,
}

/// One cached question: record kind and normalized name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    name: String,
}

impl Key {
    fn new(kind: Kind, name: &str) -> Self {
        Key {
            kind,
            name: normalize_name(name),
        }
    }
}

/// Cached records of either kind; the key's kind says which.
enum Records {
    Srv(Vec<SrvTarget>),
    Ip(Vec<IpAddr>),
}

/// Moves a record type in and out of [`Records`], so `cached` is written once.
trait Cacheable: Clone + Send + Sync + 'static {
    fn wrap(records: Vec<Self>) -> Records;
    fn unwrap(records: &Records) -> &[Self];
}

impl Cacheable for SrvTarget {
    fn wrap(records: Vec<Self>) -> Records {
        Records::Srv(records)
    }
    fn unwrap(records: &Records) -> &[Self] {
        match records {
            Records::Srv(r) => r,
            Records::Ip(_) => &[],
        }
    }
}

impl Cacheable for IpAddr {
    fn wrap(records: Vec<Self>) -> Records {
        Records::Ip(records)
    }
    fn unwrap(records: &Records) -> &[Self] {
        match records {
            Records::Ip(r) => r,
            Records::Srv(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::StaticResolver;

    const FABRIKAM: &str = "_sipfederationtls._tcp.fabrikam.test";

    /// A clock the test moves by hand.
    #[derive(Clone)]
    struct ManualClock(Arc<Mutex<Instant>>);

    impl ManualClock {
        fn new() -> Self {
            ManualClock(Arc::new(Mutex::new(Instant::now())))
        }
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    fn fabrikam() -> Vec<SrvTarget> {
        vec![SrvTarget::new(10, 100, 5061, "sip.fabrikam.test")]
    }

    fn cache(
        source: StaticResolver,
        capacity: usize,
        clock: &ManualClock,
    ) -> CachingResolver<StaticResolver> {
        let clock = clock.clone();
        CachingResolver::new(source, capacity).with_clock(move || clock.now())
    }

    #[tokio::test]
    async fn second_lookup_is_a_hit() {
        let clock = ManualClock::new();
        let dns = cache(StaticResolver::new().srv(FABRIKAM, fabrikam()), 10, &clock);

        assert_eq!(dns.srv(FABRIKAM).await.unwrap(), fabrikam());
        // Case and trailing dot do not make a different entry.
        let upper = format!("{}.", FABRIKAM.to_uppercase());
        assert_eq!(dns.srv(&upper).await.unwrap(), fabrikam());

        assert_eq!(dns.inner.queries(), 1);
        assert_eq!(
            dns.stats(),
            DnsStats {
                lookups: 2,
                hits: 1,
                misses: 1
            }
        );
    }

    #[tokio::test]
    async fn entries_expire_with_their_ttl() {
        let clock = ManualClock::new();
        let source = StaticResolver::new()
            .ttl(Duration::from_secs(30))
            .srv(FABRIKAM, fabrikam());
        let dns = cache(source, 10, &clock);

        dns.srv(FABRIKAM).await.unwrap();
        clock.advance(Duration::from_secs(29));
        dns.srv(FABRIKAM).await.unwrap();
        assert_eq!(dns.inner.queries(), 1);

        clock.advance(Duration::from_secs(1));
        dns.srv(FABRIKAM).await.unwrap();
        assert_eq!(dns.inner.queries(), 2);
        assert_eq!(
            dns.stats(),
            DnsStats {
                lookups: 3,
                hits: 1,
                misses: 2
            }
        );
    }

    #[tokio::test]
    async fn zero_ttl_is_not_cached() {
        let clock = ManualClock::new();
        let source = StaticResolver::new()
            .ttl(Duration::ZERO)
            .srv(FABRIKAM, fabrikam());
        let dns = cache(source, 10, &clock);
        dns.srv(FABRIKAM).await.unwrap();
        dns.srv(FABRIKAM).await.unwrap();
        assert_eq!(dns.inner.queries(), 2);
        assert!(dns.is_empty());
    }

    #[tokio::test]
    async fn no_records_is_cached_for_the_default_negative_ttl() {
        let clock = ManualClock::new();
        let dns = cache(StaticResolver::new(), 10, &clock);
        let name = "_sipfederationtls._tcp.nowhere.test";

        let err = dns.srv(name).await.unwrap_err();
        assert!(err.is_no_records());
        assert_eq!(err.name(), name);
        clock.advance(DEFAULT_NEGATIVE_TTL - Duration::from_secs(1));
        assert!(dns.srv(name).await.unwrap_err().is_no_records());
        assert_eq!(dns.inner.queries(), 1);

        clock.advance(Duration::from_secs(1));
        assert!(dns.srv(name).await.unwrap_err().is_no_records());
        assert_eq!(dns.inner.queries(), 2);
    }

    #[tokio::test]
    async fn no_records_uses_the_soa_negative_ttl_when_given() {
        let clock = ManualClock::new();
        let source = StaticResolver::new().negative_ttl(Duration::from_secs(5));
        let dns = cache(source, 10, &clock);
        dns.ip("nowhere.test").await.unwrap_err();
        clock.advance(Duration::from_secs(5));
        dns.ip("nowhere.test").await.unwrap_err();
        assert_eq!(dns.inner.queries(), 2);
    }

    #[tokio::test]
    async fn timeouts_are_not_cached() {
        let clock = ManualClock::new();
        let dns = cache(StaticResolver::new().timeout(FABRIKAM), 10, &clock);
        for _ in 0..2 {
            let err = dns.srv(FABRIKAM).await.unwrap_err();
            assert!(matches!(err, ResolveError::Timeout { .. }), "{err}");
        }
        assert_eq!(dns.inner.queries(), 2);
        assert!(dns.is_empty());
    }

    #[tokio::test]
    async fn full_cache_evicts_the_oldest_entry() {
        let clock = ManualClock::new();
        let source = StaticResolver::new()
            .ip("a.test", vec!["127.0.0.1".parse().unwrap()])
            .ip("b.test", vec!["127.0.0.2".parse().unwrap()])
            .ip("c.test", vec!["127.0.0.3".parse().unwrap()]);
        let dns = cache(source, 2, &clock);

        dns.ip("a.test").await.unwrap();
        dns.ip("b.test").await.unwrap();
        dns.ip("c.test").await.unwrap(); // evicts a.test
        assert_eq!(dns.len(), 2);
        assert_eq!(dns.inner.queries(), 3);

        dns.ip("b.test").await.unwrap();
        dns.ip("c.test").await.unwrap();
        assert_eq!(dns.inner.queries(), 3);
        dns.ip("a.test").await.unwrap(); // a miss again, evicts b.test
        assert_eq!(dns.inner.queries(), 4);
        assert_eq!(
            dns.stats(),
            DnsStats {
                lookups: 6,
                hits: 2,
                misses: 4
            }
        );
    }

    #[tokio::test]
    async fn srv_and_ip_of_one_name_are_separate_entries() {
        let clock = ManualClock::new();
        let source = StaticResolver::new()
            .srv("x.test", fabrikam())
            .ip("x.test", vec!["127.0.0.9".parse().unwrap()]);
        let dns = cache(source, 10, &clock);
        assert_eq!(dns.srv("x.test").await.unwrap(), fabrikam());
        assert_eq!(
            dns.ip("x.test").await.unwrap(),
            vec!["127.0.0.9".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(dns.len(), 2);
    }

    #[tokio::test]
    async fn capacity_zero_never_caches() {
        let clock = ManualClock::new();
        let dns = cache(StaticResolver::new().srv(FABRIKAM, fabrikam()), 0, &clock);
        dns.srv(FABRIKAM).await.unwrap();
        dns.srv(FABRIKAM).await.unwrap();
        assert_eq!(
            dns.stats(),
            DnsStats {
                lookups: 2,
                hits: 0,
                misses: 2
            }
        );
    }

    #[tokio::test]
    async fn the_capacity_follows_its_source_at_each_insertion() {
        let clock = ManualClock::new();
        let limit = Arc::new(std::sync::atomic::AtomicUsize::new(2));
        let source = StaticResolver::new()
            .srv(FABRIKAM, fabrikam())
            .srv("_sipfederationtls._tcp.northwind.test", fabrikam())
            .srv("_sipfederationtls._tcp.tailspin.test", fabrikam());
        let read = Arc::clone(&limit);
        let dns = cache(source, 0, &clock)
            .with_capacity_from(move || read.load(std::sync::atomic::Ordering::Relaxed));
        dns.srv(FABRIKAM).await.unwrap();
        dns.srv("_sipfederationtls._tcp.northwind.test").await.unwrap();
        dns.srv("_sipfederationtls._tcp.tailspin.test").await.unwrap();
        assert_eq!(dns.len(), 2);
        limit.store(1, std::sync::atomic::Ordering::Relaxed);
        dns.srv(FABRIKAM).await.unwrap();
        assert_eq!(dns.len(), 1, "a smaller DnsSrvCacheRecordCount evicts at the next insertion");
    }

    #[test]
    fn usable_as_a_trait_object() {
        let dns: Arc<dyn Resolve> = Arc::new(CachingResolver::new(StaticResolver::new(), 1));
        drop(dns);
    }
}
