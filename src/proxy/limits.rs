//! Step 6, limits: a request from a discovered partner (open federation) passes its rate
//! and new-contacts limits before it is relayed (503 + 1910 / 1911 otherwise). Only such
//! requests take the lock.

use super::*;

impl Core {
    /// Whether the limits let a forward through; the refusal otherwise.
    pub(super) fn admit_limits(&self, f: &policy::Forward, snap: &Snapshot) -> Result<(), Rejection> {
        let Some(limit) = &f.limit else {
            return Ok(());
        };
        self.limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(&snap.federation, limit, Instant::now())
    }
}
