//! `Live`: the current snapshot, swapped atomically on reload or admin change.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Snapshot;

/// The edge's current configuration. Readers take an `Arc<Snapshot>` and keep it for the
/// whole transaction, so a swap never changes the rules in the middle of one.
#[derive(Debug)]
pub struct Live {
    current: ArcSwap<Snapshot>,
}

impl Live {
    pub fn new(snapshot: Snapshot) -> Self {
        Live {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The snapshot in force now.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Installs a new snapshot; transactions that already hold the old one keep it.
    pub fn store(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}
