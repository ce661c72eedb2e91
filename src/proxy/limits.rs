//! Step 6, limits: a request from a discovered partner (open federation) passes its rate
//! and new-contacts limits before it is relayed (503 + 1910 / 1911, or 1913 while the
//! partner is suspicious). The final answers from inside to its requests feed the
//! suspicious-partner ratio; every DiscoveredPartnerReportPeriodMinutes the statistics are
//! reported. Discovered partners' requests take the lock; the ticker only tries it.

use std::time::SystemTime;

use super::*;
use crate::metrics::PartnerMetric;
use crate::policy::{PartnerEvent, PartnerReport};

/// One DiscoveredPartnerReportPeriodMinutes report, as the admin view shows it.
#[derive(Debug, Clone)]
pub struct PublishedReport {
    pub at: SystemTime,
    pub partners: Vec<PartnerReport>,
}

impl Core {
    /// Whether the limits let a forward through; the refusal otherwise.
    pub(super) fn admit_limits(&self, f: &policy::Forward, snap: &Snapshot) -> Result<(), Rejection> {
        let Some(limit) = &f.limit else {
            return Ok(());
        };
        let admitted = self
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit_noting(&snap.federation, limit, Instant::now());
        admitted.map_err(|(r, event)| {
            if let Some(e) = event {
                self.partner_event(&limit.partner, e);
            }
            r
        })
    }

    /// Counts the final answer from inside to a discovered partner's request.
    pub(super) fn partner_answered(&self, partner: &str, status: u16) {
        let snap = self.live.load();
        let event = self
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record_response(&snap.federation, partner, status);
        if let Some(e) = event {
            self.partner_event(partner, e);
        }
    }

    fn partner_event(&self, partner: &str, e: PartnerEvent) {
        match e {
            PartnerEvent::Suspicious => {
                tracing::warn!(partner, "discovered partner is suspicious (most of its requests fail): throttled to 1 message per second");
                self.metrics.partner(PartnerMetric::Suspicious);
            }
            PartnerEvent::WatchListed => {
                tracing::warn!(partner, "discovered partner addressed more than MaxContactsPerDiscoveredPartner users: on the watch list");
                self.metrics.partner(PartnerMetric::WatchListed);
            }
        }
    }

    /// Publishes the discovered-partner report when a DiscoveredPartnerReportPeriodMinutes
    /// period has passed: one log line per partner, kept for the admin view. Called by the
    /// ticker, which skips a turn rather than wait while a request holds the limits.
    pub(super) fn report_partners(&self, now: Instant) {
        let snap = self.live.load();
        let report = {
            let Ok(mut limits) = self.limits.try_lock() else {
                return;
            };
            limits.report(&snap.federation, now)
        };
        let Some(partners) = report else { return };
        for p in &partners {
            tracing::info!(
                partner = %p.partner,
                admitted = p.admitted,
                rate_limited = p.rate_limited,
                contacts_refused = p.contacts_refused,
                succeeded = p.succeeded,
                failed = p.failed,
                distinct_contacts = p.distinct_contacts,
                watch_listed = p.watch_listed,
                suspicious = p.suspicious,
                "discovered partner report"
            );
        }
        self.metrics.partner(PartnerMetric::Report);
        *self.partner_report.lock().unwrap_or_else(|p| p.into_inner()) = Some(PublishedReport {
            at: SystemTime::now(),
            partners,
        });
    }

    /// Every discovered partner the limits remember, with its period so far.
    pub fn discovered_partners(&self) -> Vec<PartnerReport> {
        self.limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .partners()
    }

    /// Partners on the watch list or throttled as suspicious (the `/metrics` gauge).
    pub fn flagged_partners(&self) -> usize {
        self.limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flagged()
    }

    /// The last published report, if a period has passed.
    pub fn last_partner_report(&self) -> Option<PublishedReport> {
        self.partner_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes `partner` off the watch list and out of the suspicious throttle; false when
    /// it was neither.
    pub fn release_partner(&self, partner: &str) -> bool {
        let released = self
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(partner);
        if released {
            tracing::info!(partner, "discovered partner released by the administrator");
            self.metrics.partner(PartnerMetric::Released);
        }
        released
    }
}
