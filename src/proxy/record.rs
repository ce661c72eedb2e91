//! The last decisions the edge made, for people asking "why was my message refused?".
//!
//! Recording never blocks a request: under contention a record is skipped rather than
//! waited for, so this is no global lock on the hot path. A record keeps the decision's
//! inputs (the request's bytes, the peer as identified, the config snapshot and the DNS
//! answers), not its trail: the decision is a pure function of them, so the trail of
//! checks is rebuilt when `/decisions` is read, and the hot path formats none of it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::config::Snapshot;
use crate::policy::{Check, DnsFacts};
use crate::transport::{Interface, Peer, Transport};

/// How many decisions are kept.
pub const KEEP: usize = 256;

/// One decision: who asked, what for, what the edge did and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRecord {
    pub at: SystemTime,
    pub call_id: String,
    pub method: String,
    pub request_uri: String,
    /// The From and To header values as they arrived.
    pub from: String,
    pub to: String,
    pub interface: Interface,
    pub transport: Transport,
    pub peer: SocketAddr,
    /// The names the peer proved (certificate SAN / lab mapping); empty when none.
    pub identity: Vec<String>,
    /// `forward`, `reject` or `answer`.
    pub outcome: &'static str,
    /// The rule that decided.
    pub rule: &'static str,
    /// The final status the request got: the edge's refusal or answer, or the one relayed.
    pub status: u16,
    /// From the request's arrival to its final response leaving.
    pub took: Option<Duration>,
    /// The ms-diagnostics of a final response of 300 or more (the edge's own reason, or
    /// the far side's).
    pub ms_diagnostics: Option<String>,
    /// The checks that ran, the deciding one last (what `sipedge explain` prints).
    pub trail: Vec<Check>,
}

/// What the log keeps of one decision: its inputs and its verdict.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: SystemTime,
    /// The request as the decision saw it, copied so no receive buffer stays pinned.
    pub request: Bytes,
    /// It arrived as a datagram (parsed with the datagram rules again).
    pub datagram: bool,
    /// The peer as identified (lab mapping applied).
    pub peer: Peer,
    pub snap: Arc<Snapshot>,
    pub dns: DnsFacts,
    pub outcome: &'static str,
    pub rule: &'static str,
    /// The final status the request got (relayed or the edge's own).
    pub status: u16,
    /// From the request's arrival to its final response leaving.
    pub took: Option<Duration>,
    /// A final response of 300 or more as sent (shared with the transaction, not copied):
    /// its ms-diagnostics is read from it when `/decisions` is read. With the request this
    /// at most doubles what the ring holds: both are bounded by the framing's message size.
    pub failure: Option<Bytes>,
    /// Its route set was restored from the edge's own seal (the decision depends on it).
    pub sealed_route: bool,
}

/// A bounded ring of recent decisions: at most `KEEP`, and at most `budget` bytes.
#[derive(Debug)]
pub struct DecisionLog {
    ring: Mutex<(VecDeque<Recorded>, usize)>,
    budget: usize,
}

impl Default for DecisionLog {
    fn default() -> Self {
        DecisionLog::with_budget(usize::MAX)
    }
}

/// What one record keeps alive (the snapshot is shared with the edge).
fn cost(r: &Recorded) -> usize {
    std::mem::size_of::<Recorded>() + r.request.len()
}

impl DecisionLog {
    /// A log holding at most `budget` bytes of records (oldest dropped first).
    pub fn with_budget(budget: usize) -> Self {
        DecisionLog {
            ring: Mutex::new((VecDeque::new(), 0)),
            budget,
        }
    }

    /// Keeps a record unless another thread is recording right now.
    pub fn record(&self, r: Recorded) {
        if let Ok(mut guard) = self.ring.try_lock() {
            let (ring, bytes) = &mut *guard;
            *bytes += cost(&r);
            ring.push_back(r);
            while ring.len() > KEEP || (*bytes > self.budget && ring.len() > 1) {
                if let Some(old) = ring.pop_front() {
                    *bytes -= cost(&old);
                }
            }
        }
    }

    /// Bytes the kept records hold (at most `budget`, unless one record alone is larger).
    pub fn bytes(&self) -> usize {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// The last `n` recorded decisions, oldest first.
    pub fn recent(&self, n: usize) -> Vec<Recorded> {
        let guard = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let ring = &guard.0;
        ring.iter()
            .skip(ring.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}
