//! Requests in flight per external source IP.
//!
//! The transaction table is bounded as a whole; this keeps one flooding peer from taking
//! all of it, so everyone else is still served while that peer gets 503 + Retry-After.
//! Several flooding peers together are kept out of the table's last quarter (`limit`), so
//! a source with a few requests pending still finds room when the table is crowded.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Shards of the per-source counts: requests from different sources rarely share a lock,
/// so there is no global lock on the request path.
const SHARDS: usize = 64;

/// The table's share, out of `CROWDED_OF`, past which it is crowded (see `limit`).
const CROWDED_AT: usize = 3;
const CROWDED_OF: usize = 4;
/// Once crowded, a source may hold at most `capacity / LIGHT_SHARE` pending requests: a
/// peer at an ordinary rate holds a handful (200/s answered within a second: 200 at most,
/// against 3 125 of the default table), a flooding one all it can get.
const LIGHT_SHARE: usize = 32;

/// How many pending requests a source may have now: `max_per_source`, or, once the
/// transaction table holds `CROWDED_AT / CROWDED_OF` of its `capacity`, only what a light
/// source holds (`capacity / LIGHT_SHARE`, at least 1). The sources that filled the table
/// are then refused, while the last quarter stays for the others.
pub fn limit(max_per_source: usize, table_len: usize, capacity: usize) -> usize {
    if table_len.saturating_mul(CROWDED_OF) < capacity.saturating_mul(CROWDED_AT) {
        max_per_source
    } else {
        let floor = LIGHT_FLOOR.min(capacity / 8);
        max_per_source.min((capacity / LIGHT_SHARE).max(floor).max(1))
    }
}

/// A source with this many pending requests is light however small the table: when large
/// entries shrink the byte budget's table to a few hundred, `capacity / LIGHT_SHARE` is a
/// dozen, fewer than a partner at 100/s holds while the machine is slow (seen: 503s to the
/// legitimate sender of the memory-budget flood test, under a loaded CI machine). At most an
/// eighth of the table, so a tiny one still keeps room for others.
const LIGHT_FLOOR: usize = 64;

/// Once the table is crowded, the most transactions one source may hold, answered or not:
/// a quarter of what the table can hold. An answered request still stays for Timer J
/// (32 s over UDP), so a flood the pool answers at once fills the table as surely as one
/// it never answers; a partner at an ordinary rate holds far less (200/s over UDP: 6 400).
pub fn held_limit(table_len: usize, capacity: usize) -> usize {
    if table_len.saturating_mul(CROWDED_OF) < capacity.saturating_mul(CROWDED_AT) {
        usize::MAX
    } else {
        (capacity / HELD_SHARE).max(1)
    }
}

/// `held_limit`'s share: a quarter of the table.
const HELD_SHARE: usize = 4;

/// Per source IP: requests pending (no final response yet) and transactions held
/// (answered or not, until they end). One map, so a request is admitted under one lock.
#[derive(Debug)]
pub struct SourceQuota {
    shards: Box<[Mutex<Counts>]>,
    hasher: foldhash::fast::RandomState,
}

impl Default for SourceQuota {
    fn default() -> Self {
        SourceQuota {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
        }
    }
}

/// One shard: each source's `[pending, held]`.
type Counts = HashMap<IpAddr, [usize; 2]>;

/// Which count a slot holds a place in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Until the final response leaves.
    Pending = 0,
    /// Until the transaction ends (Timer J over UDP).
    Held = 1,
}

/// One request's place in one of its source's counts, given back when dropped.
#[derive(Debug)]
pub struct QuotaSlot {
    ip: IpAddr,
    count: Count,
    quota: Arc<SourceQuota>,
}

impl SourceQuota {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn shard(&self, ip: IpAddr) -> MutexGuard<'_, Counts> {
        let i = self.hasher.hash_one(ip) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pending and a held slot for one more request from `ip`, or `None` when it already
    /// has `max_pending` pending or `max_held` held.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        max_pending: usize,
        max_held: usize,
    ) -> Option<(QuotaSlot, QuotaSlot)> {
        let mut m = self.shard(ip);
        let n = m.entry(ip).or_insert([0, 0]);
        if n[Count::Pending as usize] >= max_pending || n[Count::Held as usize] >= max_held {
            if *n == [0, 0] {
                m.remove(&ip);
            }
            return None;
        }
        n[Count::Pending as usize] += 1;
        n[Count::Held as usize] += 1;
        let slot = |count| QuotaSlot {
            ip,
            count,
            quota: self.clone(),
        };
        Some((slot(Count::Pending), slot(Count::Held)))
    }

    /// Pending requests from `ip`.
    pub fn pending(&self, ip: IpAddr) -> usize {
        self.shard(ip)
            .get(&ip)
            .map_or(0, |n| n[Count::Pending as usize])
    }

    /// Sources with at least one pending or held request (the map never holds idle ones).
    pub fn sources(&self) -> usize {
        self.shards
            .iter()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

impl Drop for QuotaSlot {
    fn drop(&mut self) {
        let mut m = self.quota.shard(self.ip);
        if let Some(n) = m.get_mut(&self.ip) {
            n[self.count as usize] -= 1;
            if *n == [0, 0] {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_at_its_limit_is_refused_until_a_slot_is_given_back() {
        let q = SourceQuota::new();
        let a: IpAddr = "127.0.0.9".parse().unwrap();
        let b: IpAddr = "127.0.0.10".parse().unwrap();
        let (s1, _h1) = q.admit(a, 2, usize::MAX).expect("first");
        let _s2 = q.admit(a, 2, usize::MAX).expect("second");
        assert!(q.admit(a, 2, usize::MAX).is_none(), "third from the same source");
        assert!(q.admit(b, 2, usize::MAX).is_some(), "another source is not affected");
        drop(s1);
        assert_eq!(q.pending(a), 1);
        let _s3 = q.admit(a, 2, 3).expect("a pending slot came back");
        assert!(
            q.admit(a, 2, 3).is_none(),
            "three held: the answered one still holds its place"
        );
    }

    #[test]
    fn a_crowded_table_keeps_its_last_quarter_for_light_sources() {
        assert_eq!(limit(500, 0, 8000), 500, "an empty table");
        assert_eq!(limit(500, 5999, 8000), 500, "just under three quarters");
        assert_eq!(limit(500, 6000, 8000), 250, "crowded: 8000 / 32");
        assert_eq!(limit(100, 8000, 8000), 100, "never above the source's own limit");
        assert_eq!(limit(500, 30, 40), 5, "a tiny table: an eighth of it");
        assert_eq!(limit(500, 3, 4), 1, "a tinier one still admits one");
        assert_eq!(limit(500, 300, 400), 50, "a table made small by large entries");
        assert_eq!(limit(500, 1500, 2000), 64, "the floor, above 2000 / 32");
        assert_eq!(limit(500, usize::MAX, usize::MAX), 500, "no overflow");
    }

    #[test]
    fn a_crowded_table_lets_one_source_hold_a_quarter_of_it() {
        assert_eq!(held_limit(5999, 8000), usize::MAX, "not crowded: no share");
        assert_eq!(held_limit(6000, 8000), 2000);
        assert_eq!(held_limit(3, 3), 1, "a tiny table still admits one");
    }

    #[test]
    fn idle_sources_leave_the_map() {
        let q = SourceQuota::new();
        let ip = "10.0.0.1".parse().unwrap();
        let (pending, held) = q.admit(ip, 5, 5).expect("admitted");
        assert_eq!(q.sources(), 1);
        drop(pending);
        assert_eq!(q.sources(), 1, "still held");
        drop(held);
        assert_eq!(q.sources(), 0);
        assert!(q.admit(ip, 0, 5).is_none());
        assert_eq!(q.sources(), 0, "a refused source leaves nothing behind");
    }
}
