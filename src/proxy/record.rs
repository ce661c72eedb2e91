//! The last decisions the edge made, for people asking "why was my message refused?".
//!
//! Recording never blocks a request: under contention a record is skipped rather than
//! waited for, so this is no global lock on the hot path. A record keeps the decision's
//! trail of checks as the policy built it (moved, not copied); it becomes text only when
//! `/decisions` is read.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::policy::Check;
use crate::transport::{Interface, Transport};

/// How many decisions are kept.
pub const KEEP: usize = 256;

/// One decision: who asked, what for, what the edge did and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRecord {
    pub at: SystemTime,
    pub call_id: String,
    pub method: String,
    pub request_uri: String,
    pub interface: Interface,
    pub transport: Transport,
    pub peer: SocketAddr,
    /// The names the peer proved (certificate SAN / lab mapping); empty when none.
    pub identity: Vec<String>,
    /// `forward`, `reject` or `answer`.
    pub outcome: &'static str,
    /// The rule that decided.
    pub rule: &'static str,
    /// Status for rejections, 0 otherwise.
    pub status: u16,
    /// The checks that ran, the deciding one last (what `sipedge explain` prints).
    pub trail: Vec<Check>,
}

/// A bounded ring of recent decisions.
#[derive(Debug, Default)]
pub struct DecisionLog {
    ring: Mutex<VecDeque<DecisionRecord>>,
}

impl DecisionLog {
    /// Keeps a record unless another thread is recording right now.
    pub fn record(&self, r: DecisionRecord) {
        if let Ok(mut ring) = self.ring.try_lock() {
            if ring.len() == KEEP {
                ring.pop_front();
            }
            ring.push_back(r);
        }
    }

    /// The last `n` recorded decisions, oldest first.
    pub fn recent(&self, n: usize) -> Vec<DecisionRecord> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter()
            .skip(ring.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}
