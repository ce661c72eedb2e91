//! Transactions (RFC 3261 §17): keys, the bounded table, and the sans-I/O state machines.
//!
//! The state machines never read a clock or touch a socket: time comes in as `now`, and
//! they answer with what to do. The proxy owns the I/O and a tick that feeds timers in.

pub mod client;
pub mod server;
mod table;

pub use client::{ClientTxn, ResponseAction};
pub use server::ServerTxn;
pub use table::{Retained, Table, TableFull};

use std::sync::Arc;
use std::time::Duration;

/// Which side of the proxy a transaction is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// A request we received (keyed by the sender's branch and sent-by).
    Server,
    /// A request we forwarded (keyed by the branch we generated).
    Client,
}

/// Method class for matching: ACK matches its INVITE; CANCEL has its own transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MethodKey {
    Invite,
    Cancel,
    Other,
}

/// Identifies a transaction (RFC 3261 §17.1.3 and §17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnKey {
    pub side: Side,
    /// Branch (and for server transactions the sent-by) as one string. Shared: a key is
    /// cloned into the table, its timers and its sibling entries several times a message.
    pub id: Arc<str>,
    pub method: MethodKey,
}

impl TxnKey {
    pub fn new(side: Side, id: impl Into<Arc<str>>, method: MethodKey) -> Self {
        TxnKey {
            side,
            id: id.into(),
            method,
        }
    }
}

/// The timer values a transaction uses (RFC 3261 Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerValues {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    pub timer_c: Duration,
}

impl Default for TimerValues {
    fn default() -> Self {
        TimerValues {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_c: Duration::from_secs(181),
        }
    }
}

impl From<&crate::config::Timers> for TimerValues {
    fn from(t: &crate::config::Timers) -> Self {
        TimerValues {
            t1: t.t1,
            t2: t.t2,
            t4: t.t4,
            timer_c: t.timer_c,
        }
    }
}
