//! The bounded, sharded transaction table with its timer queue.
//!
//! Sharded so that connection tasks on different cores rarely contend; bounded so that a
//! flood of distinct transactions gets 503 instead of exhausting memory: by count
//! (`max_transactions`) and by the bytes the entries keep alive (`memory_budget_bytes`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::TxnKey;

/// What a value keeps alive on the heap, for the table's byte budget.
pub trait Retained {
    fn retained_bytes(&self) -> usize;
}

impl Retained for u32 {
    fn retained_bytes(&self) -> usize {
        0
    }
}

/// What one entry costs besides its value's own heap bytes: the value's box, two map slots
/// and two timer entries (a map or heap that has just doubled is half empty, and a
/// transaction is often scheduled twice), and the key's id (shared by all of them).
/// Counting the slots once left RSS 40 % above the budget under a flood.
fn entry_cost<V: Retained>(key: &TxnKey, value: &V) -> usize {
    std::mem::size_of::<V>()
        + 2 * std::mem::size_of::<(TxnKey, Slot<V>)>()
        + 2 * std::mem::size_of::<Reverse<(Instant, u64, TxnKey)>>()
        + key.id.len()
        + value.retained_bytes()
}

/// A value in its own allocation, with the bytes it was last accounted for. Boxed because
/// a transaction is several hundred bytes: inline, every slot of a map that keeps 800 000
/// answered UDP transactions for Timer J would be that large, empty ones included, and
/// each doubling would move them all.
struct Slot<V> {
    value: Box<V>,
    cost: usize,
}

const SHARDS: usize = 32;

/// Why a transaction could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TableFull {
    /// The table is at its configured capacity, in transactions or in bytes.
    #[error("transaction table full")]
    Full,
    /// A transaction with this key exists (a retransmission processed concurrently).
    #[error("transaction exists")]
    Exists,
}

struct Shard<V> {
    map: HashMap<TxnKey, Slot<V>, foldhash::fast::RandomState>,
    timers: BinaryHeap<Reverse<(Instant, u64, TxnKey)>>,
    seq: u64,
}

/// Transactions by key, each with an optional deadline.
pub struct Table<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    // Branch ids come from the network, so the seed is random per process; foldhash
    // rather than SipHash because hashing was ~3% of the relay's CPU in perf.
    hasher: foldhash::fast::RandomState,
    len: AtomicUsize,
    capacity: usize,
    /// Bytes the entries keep alive (`entry_cost`), and the most they may.
    bytes: AtomicUsize,
    budget: usize,
}

impl<V: Retained> Table<V> {
    pub fn new(capacity: usize, budget: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::default(),
                    timers: BinaryHeap::new(),
                    seq: 0,
                })
            })
            .collect();
        Table {
            shards,
            hasher: Default::default(),
            len: AtomicUsize::new(0),
            capacity,
            bytes: AtomicUsize::new(0),
            budget,
        }
    }

    /// Bytes the entries keep alive now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The most transactions the table can hold now: `capacity`, or fewer when entries of
    /// the present average size would use up the byte budget first.
    pub fn effective_capacity(&self) -> usize {
        let (len, bytes) = (self.len(), self.bytes());
        if len == 0 || bytes == 0 {
            return self.capacity;
        }
        let fit = (self.budget as u128 * len as u128 / bytes as u128) as usize;
        self.capacity.min(fit.max(1))
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// The most transactions the table holds (`limits.max_transactions`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &TxnKey) -> &Mutex<Shard<V>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    fn lock<'a>(&self, m: &'a Mutex<Shard<V>>) -> std::sync::MutexGuard<'a, Shard<V>> {
        // A panic while holding a shard must not take the whole proxy down with it.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts a new transaction with its first deadline; fails when the table is full or
    /// the key is taken (the existing transaction is kept).
    pub fn insert(
        &self,
        key: TxnKey,
        value: V,
        deadline: Option<Instant>,
    ) -> Result<(), TableFull> {
        let cost = entry_cost(&key, &value);
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err(TableFull::Full);
        }
        if self.bytes.fetch_add(cost, Ordering::AcqRel) + cost > self.budget {
            self.bytes.fetch_sub(cost, Ordering::AcqRel);
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err(TableFull::Full);
        }
        let mut s = self.lock(self.shard(&key));
        if s.map.contains_key(&key) {
            self.bytes.fetch_sub(cost, Ordering::AcqRel);
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err(TableFull::Exists);
        }
        if let Some(at) = deadline {
            s.seq += 1;
            let seq = s.seq;
            s.timers.push(Reverse((at, seq, key.clone())));
        }
        s.map.insert(
            key,
            Slot {
                value: Box::new(value),
                cost,
            },
        );
        Ok(())
    }

    /// Runs `f` on the transaction, if present. `f` returns its result and the new
    /// deadline to schedule (None keeps the timers as they are). Never hold across await.
    pub fn with<R>(
        &self,
        key: &TxnKey,
        f: impl FnOnce(&mut V) -> (R, Option<Instant>),
    ) -> Option<R> {
        let mut s = self.lock(self.shard(key));
        let Slot { value: v, cost } = s.map.get_mut(key)?;
        let (r, deadline) = f(v);
        // A response kept for retransmissions, a forwarded copy: an entry may grow (past
        // the budget too: only new entries are refused).
        let now = entry_cost(key, &**v);
        if now != *cost {
            if now > *cost {
                self.bytes.fetch_add(now - *cost, Ordering::AcqRel);
            } else {
                self.bytes.fetch_sub(*cost - now, Ordering::AcqRel);
            }
            *cost = now;
        }
        if let Some(at) = deadline {
            s.seq += 1;
            let seq = s.seq;
            s.timers.push(Reverse((at, seq, key.clone())));
        }
        Some(r)
    }

    /// Removes a transaction, returning it.
    pub fn remove(&self, key: &TxnKey) -> Option<V> {
        let Slot { value: v, cost } = self.lock(self.shard(key)).map.remove(key)?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(cost, Ordering::AcqRel);
        Some(*v)
    }

    /// Keys whose scheduled instant is at or before `now`. A key may be reported for a
    /// deadline that has since moved: callers ask the state machine, which knows.
    pub fn due(&self, now: Instant) -> Vec<TxnKey> {
        let mut out = Vec::new();
        for m in self.shards.iter() {
            let mut s = self.lock(m);
            let first = out.len();
            while let Some(Reverse((at, _, _))) = s.timers.peek() {
                if *at > now {
                    break;
                }
                if let Some(Reverse((_, _, key))) = s.timers.pop() {
                    if s.map.contains_key(&key) {
                        out.push(key);
                    }
                }
            }
            // A key sits in one shard only, so removing duplicates per shard is enough;
            // sorting keeps it O(n log n) where a linear `contains` went quadratic under load.
            out[first..].sort_unstable();
            let mut kept = first;
            for i in first..out.len() {
                if kept == first || out[i] != out[kept - 1] {
                    out.swap(kept, i);
                    kept += 1;
                }
            }
            out.truncate(kept);
        }
        out
    }

    /// How many transactions satisfy `pred` (a full scan: for shutdown and tests only).
    pub fn count(&self, pred: impl Fn(&V) -> bool) -> usize {
        self.shards
            .iter()
            .map(|m| self.lock(m).map.values().filter(|s| pred(&s.value)).count())
            .sum()
    }

    /// Keys of all transactions on one side (for draining at shutdown).
    pub fn keys(&self) -> Vec<TxnKey> {
        let mut out = Vec::new();
        for m in self.shards.iter() {
            out.extend(self.lock(m).map.keys().cloned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{MethodKey, Side};
    use std::time::Duration;

    fn key(n: u32) -> TxnKey {
        TxnKey::new(Side::Client, format!("z9hG4bK{n}"), MethodKey::Other)
    }

    #[test]
    fn bounded_and_timers_due_in_order() {
        let t: Table<u32> = Table::new(2, usize::MAX);
        let t0 = Instant::now();
        t.insert(key(1), 1, Some(t0 + Duration::from_millis(5)))
            .unwrap();
        t.insert(key(2), 2, Some(t0 + Duration::from_millis(1)))
            .unwrap();
        assert_eq!(t.insert(key(3), 3, None), Err(TableFull::Full));
        t.remove(&key(2));
        assert_eq!(
            t.insert(key(1), 9, None),
            Err(TableFull::Exists),
            "an existing key is kept"
        );
        assert_eq!(t.with(&key(1), |v| (*v, None)), Some(1));
        t.insert(key(2), 2, None).unwrap();
        assert_eq!(t.due(t0), Vec::<TxnKey>::new());
        assert_eq!(t.due(t0 + Duration::from_millis(2)), vec![key(2)]);
        assert_eq!(t.with(&key(1), |v| (*v, None)), Some(1));
        assert_eq!(t.remove(&key(1)), Some(1));
        assert_eq!(
            t.due(t0 + Duration::from_millis(10)),
            Vec::<TxnKey>::new(),
            "removed keys are not reported"
        );
        t.insert(key(3), 3, None).unwrap();
        assert_eq!(t.len(), 2);
    }

    /// A value of a given heap size.
    struct Sized(usize);
    impl Retained for Sized {
        fn retained_bytes(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn the_byte_budget_refuses_new_entries_and_removal_gives_the_bytes_back() {
        let one = entry_cost(&key(1), &Sized(1000));
        let t: Table<Sized> = Table::new(100, 2 * one + one / 2);
        t.insert(key(1), Sized(1000), None).unwrap();
        t.insert(key(2), Sized(1000), None).unwrap();
        assert_eq!(t.bytes(), 2 * one);
        assert_eq!(t.insert(key(3), Sized(1000), None), Err(TableFull::Full));
        assert_eq!(t.effective_capacity(), 2, "two entries of this size fit");
        t.insert(key(3), Sized(10), None).unwrap();
        // An entry that grows is accounted again (a kept response).
        t.with(&key(3), |v| {
            v.0 = 20;
            ((), None)
        });
        assert_eq!(t.bytes(), 2 * one + entry_cost(&key(3), &Sized(20)));
        t.remove(&key(1));
        t.remove(&key(2));
        t.remove(&key(3));
        assert_eq!(t.bytes(), 0);
        assert_eq!(t.effective_capacity(), 100);
    }

    #[test]
    fn a_key_rescheduled_several_times_is_due_once() {
        let t: Table<u32> = Table::new(100, usize::MAX);
        let t0 = Instant::now();
        for n in 0..20 {
            t.insert(key(n), n, Some(t0 + Duration::from_millis(1)))
                .unwrap();
            for later in 2..5 {
                t.with(&key(n), |_| ((), Some(t0 + Duration::from_millis(later))));
            }
        }
        let mut due = t.due(t0 + Duration::from_millis(10));
        assert_eq!(due.len(), 20, "{due:?}");
        due.sort();
        due.dedup();
        assert_eq!(due.len(), 20);
        assert!(t.due(t0 + Duration::from_millis(10)).is_empty());
    }
}
