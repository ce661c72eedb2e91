//! Discovered-partner limits (b.3 step 6): a token bucket per partner domain at
//! DiscoveredPartnerStandardRate, and a cap on the distinct local URIs a partner may
//! address (MaxContactsPerDiscoveredPartner) after which it is on the watch list. A partner
//! whose requests mostly fail inside (the pool answers 4xx–6xx: unknown users, refused
//! calls) is suspicious and throttled to [`SUSPICIOUS_RATE`] (access-edge.md: "ratio of
//! failed to successful responses ⇒ throttled to 1 msg/s"). Every
//! DiscoveredPartnerReportPeriodMinutes the statistics are reported and start again.
//!
//! This is state, so it lives outside `decide`: the proxy calls `admit` for a `Forward`
//! whose `limit` is set, and `record_response` with the final status the pool gave it.
//! Every method takes `now` explicitly, so tests step time by hand.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::Rejection;
use crate::config::Federation;

/// What one request from a discovered partner counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitKey {
    /// The partner's SIP domain (From domain), lowercase.
    pub partner: String,
    /// The local URI addressed (`user@host`), lowercase.
    pub local_uri: String,
    /// Out-of-dialog request: counts towards, and is refused by, the contacts limit.
    pub new_request: bool,
}

/// Messages per second a suspicious partner is held to (access-edge.md §b.7).
pub const SUSPICIOUS_RATE: f64 = 1.0;

/// Per-partner statistics for one DiscoveredPartnerReportPeriodMinutes period (or the
/// period so far, in [`DiscoveredPartnerLimits::partners`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerReport {
    pub partner: String,
    pub admitted: u64,
    /// Refused over DiscoveredPartnerStandardRate, or over [`SUSPICIOUS_RATE`] while suspicious.
    pub rate_limited: u64,
    pub contacts_refused: u64,
    /// Final responses from inside to its requests: 2xx, and 4xx–6xx but 487.
    pub succeeded: u64,
    pub failed: u64,
    pub distinct_contacts: usize,
    pub watch_listed: bool,
    pub suspicious: bool,
}

/// What a recorded response or an admitted request changed, for the log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartnerEvent {
    /// The partner just became suspicious (throttled to [`SUSPICIOUS_RATE`]).
    Suspicious,
    /// The partner just went on the watch list (MaxContactsPerDiscoveredPartner).
    WatchListed,
}

/// The limits' state for all discovered partners.
#[derive(Debug, Default)]
pub struct DiscoveredPartnerLimits {
    partners: HashMap<String, PartnerState>,
    last_report: Option<Instant>,
    last_prune: Option<Instant>,
}

/// How often `admit` looks for partners to forget.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct PartnerState {
    tokens: f64,
    refilled: Instant,
    contacts: HashSet<String>,
    watch_listed: bool,
    suspicious: bool,
    admitted: u64,
    rate_limited: u64,
    contacts_refused: u64,
    succeeded: u64,
    failed: u64,
}

impl PartnerState {
    fn new(tokens: f64, now: Instant) -> PartnerState {
        PartnerState {
            tokens,
            refilled: now,
            contacts: HashSet::new(),
            watch_listed: false,
            suspicious: false,
            admitted: 0,
            rate_limited: 0,
            contacts_refused: 0,
            succeeded: 0,
            failed: 0,
        }
    }

    fn report(&self, partner: &str) -> PartnerReport {
        PartnerReport {
            partner: partner.to_string(),
            admitted: self.admitted,
            rate_limited: self.rate_limited,
            contacts_refused: self.contacts_refused,
            succeeded: self.succeeded,
            failed: self.failed,
            distinct_contacts: self.contacts.len(),
            watch_listed: self.watch_listed,
            suspicious: self.suspicious,
        }
    }

    /// Whether the period's responses make the partner suspicious: at least
    /// `suspicious_min_failures` failures, and failures at least
    /// `suspicious_failure_percent` of all its answered requests.
    fn failing(&self, fed: &Federation) -> bool {
        let ae = &fed.access_edge;
        let answered = self.succeeded + self.failed;
        self.failed >= u64::from(ae.suspicious_min_failures)
            && self.failed * 100 >= u64::from(ae.suspicious_failure_percent) * answered
    }
}

impl DiscoveredPartnerLimits {
    pub fn new() -> Self {
        DiscoveredPartnerLimits::default()
    }

    /// Admits one request or refuses it: watch-listed partners get no new requests; a new
    /// local URI beyond the contacts limit puts the partner on the watch list; over the
    /// rate (DiscoveredPartnerStandardRate, or [`SUSPICIOUS_RATE`] while suspicious), 503 +
    /// Retry-After. Settings and codes come from the current snapshot.
    pub fn admit(
        &mut self,
        fed: &Federation,
        key: &LimitKey,
        now: Instant,
    ) -> Result<(), Rejection> {
        self.admit_noting(fed, key, now).map_err(|(r, _)| r)
    }

    /// [`admit`](Self::admit), also saying when the refusal put the partner on the watch list.
    pub fn admit_noting(
        &mut self,
        fed: &Federation,
        key: &LimitKey,
        now: Instant,
    ) -> Result<(), (Rejection, Option<PartnerEvent>)> {
        let ae = &fed.access_edge;
        let last_prune = *self.last_prune.get_or_insert(now);
        if now.saturating_duration_since(last_prune) >= PRUNE_EVERY {
            self.last_prune = Some(now);
            self.prune(fed, now);
        }
        let standard = f64::from(ae.discovered_partner_standard_rate.max(1));
        let st = self
            .partners
            .entry(key.partner.clone())
            .or_insert_with(|| PartnerState::new(standard, now));
        if ae.enable_discovered_partner_contacts_limit && key.new_request {
            if st.watch_listed {
                st.contacts_refused += 1;
                return Err((Rejection::contacts_limit(&fed.codes, &key.partner), None));
            }
            if !st.contacts.contains(&key.local_uri) {
                if st.contacts.len() >= ae.max_contacts_per_discovered_partner as usize {
                    st.watch_listed = true;
                    st.contacts_refused += 1;
                    let r = Rejection::contacts_limit(&fed.codes, &key.partner);
                    return Err((r, Some(PartnerEvent::WatchListed)));
                }
                st.contacts.insert(key.local_uri.clone());
            }
        }
        let rate = if st.suspicious { SUSPICIOUS_RATE } else { standard };
        let elapsed = now.saturating_duration_since(st.refilled).as_secs_f64();
        st.tokens = (st.tokens + elapsed * rate).min(rate);
        st.refilled = now;
        if st.tokens < 1.0 {
            st.rate_limited += 1;
            let r = if st.suspicious {
                Rejection::suspicious_partner(&fed.codes, &key.partner)
            } else {
                Rejection::rate_limited(&fed.codes, &key.partner)
            };
            return Err((r, None));
        }
        st.tokens -= 1.0;
        st.admitted += 1;
        Ok(())
    }

    /// Counts the final response the pool gave to one of `partner`'s admitted requests;
    /// `Some(Suspicious)` when that made the partner suspicious. A 487 is not counted
    /// either way: a cancelled call is the caller's choice, not a failed lookup.
    pub fn record_response(
        &mut self,
        fed: &Federation,
        partner: &str,
        status: u16,
    ) -> Option<PartnerEvent> {
        let st = self.partners.get_mut(partner)?;
        match status {
            200..=299 => st.succeeded += 1,
            487 => return None,
            400..=699 => st.failed += 1,
            _ => return None,
        }
        if st.suspicious || !st.failing(fed) {
            return None;
        }
        st.suspicious = true;
        st.tokens = st.tokens.min(SUSPICIOUS_RATE);
        Some(PartnerEvent::Suspicious)
    }

    /// Forgets partners not seen for a whole report period and not watch-listed, so that
    /// the map holds only recent partners (their bucket would be full again anyway).
    fn prune(&mut self, fed: &Federation, now: Instant) {
        let idle = Duration::from_secs(
            u64::from(
                fed.access_edge
                    .discovered_partner_report_period_minutes
                    .max(1),
            ) * 60,
        );
        self.partners.retain(|_, s| {
            s.watch_listed || s.suspicious || now.saturating_duration_since(s.refilled) < idle
        });
    }

    /// Partners the limits currently remember.
    pub fn len(&self) -> usize {
        self.partners.len()
    }

    /// Whether no partner is remembered.
    pub fn is_empty(&self) -> bool {
        self.partners.is_empty()
    }

    /// Whether the partner is on the watch list.
    pub fn is_watch_listed(&self, partner: &str) -> bool {
        self.partners
            .get(&partner.to_ascii_lowercase())
            .is_some_and(|s| s.watch_listed)
    }

    /// The watch-listed partners, sorted.
    pub fn watch_list(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .partners
            .iter()
            .filter(|(_, s)| s.watch_listed)
            .map(|(p, _)| p.clone())
            .collect();
        v.sort();
        v
    }

    /// Every partner remembered, with its statistics for the period so far, sorted; the
    /// admin view of the watch list.
    pub fn partners(&self) -> Vec<PartnerReport> {
        let mut v: Vec<PartnerReport> = self.partners.iter().map(|(p, s)| s.report(p)).collect();
        v.sort_by(|a, b| a.partner.cmp(&b.partner));
        v
    }

    /// How many partners are on the watch list or throttled as suspicious.
    pub fn flagged(&self) -> usize {
        self.partners
            .values()
            .filter(|s| s.watch_listed || s.suspicious)
            .count()
    }

    /// Takes a partner off the watch list and out of the suspicious throttle, and forgets
    /// its contacts and responses (the admin's "add it to the allowed list" usually
    /// follows). False when the partner was neither watch-listed nor suspicious.
    pub fn release(&mut self, partner: &str) -> bool {
        let Some(s) = self.partners.get_mut(&partner.to_ascii_lowercase()) else {
            return false;
        };
        if !(s.watch_listed || s.suspicious) {
            return false;
        }
        // A full bucket: the next refill in `admit` caps it at the partner's rate.
        s.tokens = f64::INFINITY;
        s.watch_listed = false;
        s.suspicious = false;
        s.contacts.clear();
        s.succeeded = 0;
        s.failed = 0;
        true
    }

    /// Once every DiscoveredPartnerReportPeriodMinutes: the period's statistics per
    /// partner. Counters restart; contacts and the watch list persist; a suspicious partner
    /// stays throttled only if the period it was throttled in still failed that way.
    pub fn report(&mut self, fed: &Federation, now: Instant) -> Option<Vec<PartnerReport>> {
        let period = Duration::from_secs(
            u64::from(fed.access_edge.discovered_partner_report_period_minutes) * 60,
        );
        let last = *self.last_report.get_or_insert(now);
        if now.saturating_duration_since(last) < period {
            return None;
        }
        self.last_report = Some(now);
        let mut out: Vec<PartnerReport> = self
            .partners
            .iter_mut()
            .map(|(p, s)| {
                let r = s.report(p);
                s.suspicious = s.suspicious && s.failing(fed);
                s.admitted = 0;
                s.rate_limited = 0;
                s.contacts_refused = 0;
                s.succeeded = 0;
                s.failed = 0;
                r
            })
            .collect();
        out.sort_by(|a, b| a.partner.cmp(&b.partner));
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(rate: u32, max_contacts: u32) -> Federation {
        let mut f = Federation::default();
        f.access_edge.discovered_partner_standard_rate = rate;
        f.access_edge.max_contacts_per_discovered_partner = max_contacts;
        f
    }

    /// `fed` with a partner suspicious after `failures` failures making `percent` %.
    fn suspicious_after(failures: u32, percent: u32) -> Federation {
        let mut f = fed(1000, 1000);
        f.access_edge.suspicious_min_failures = failures;
        f.access_edge.suspicious_failure_percent = percent;
        f
    }

    fn key(uri: &str, new_request: bool) -> LimitKey {
        LimitKey {
            partner: "northwind.test".into(),
            local_uri: uri.into(),
            new_request,
        }
    }

    #[test]
    fn token_bucket_refuses_over_rate_and_refills() {
        let f = fed(20, 1000);
        let mut l = DiscoveredPartnerLimits::new();
        let t0 = Instant::now();
        for i in 0..20 {
            assert!(
                l.admit(&f, &key("alice@contoso.test", i == 0), t0).is_ok(),
                "message {i}"
            );
        }
        let r = l
            .admit(&f, &key("alice@contoso.test", false), t0)
            .unwrap_err();
        assert_eq!(
            (r.status, r.code(), r.retry_after),
            (503, Some(1910), Some(1))
        );
        // 50 ms later one token (20/s) is back, and only one.
        let t1 = t0 + Duration::from_millis(50);
        assert!(l.admit(&f, &key("alice@contoso.test", false), t1).is_ok());
        assert!(l.admit(&f, &key("alice@contoso.test", false), t1).is_err());
        // A full second refills the bucket, but not beyond its size.
        let t2 = t1 + Duration::from_secs(10);
        for _ in 0..20 {
            assert!(l.admit(&f, &key("alice@contoso.test", false), t2).is_ok());
        }
        assert!(l.admit(&f, &key("alice@contoso.test", false), t2).is_err());
    }

    #[test]
    fn partners_have_separate_buckets() {
        let f = fed(1, 1000);
        let mut l = DiscoveredPartnerLimits::new();
        let t0 = Instant::now();
        assert!(l.admit(&f, &key("a@contoso.test", true), t0).is_ok());
        assert!(l.admit(&f, &key("a@contoso.test", true), t0).is_err());
        let other = LimitKey {
            partner: "tailwind.test".into(),
            ..key("a@contoso.test", true)
        };
        assert!(l.admit(&f, &other, t0).is_ok());
    }

    #[test]
    fn contacts_limit_watch_lists_the_partner() {
        let f = fed(1000, 3);
        let mut l = DiscoveredPartnerLimits::new();
        let t0 = Instant::now();
        for u in ["a", "b", "c", "a"] {
            assert!(
                l.admit(&f, &key(&format!("{u}@contoso.test"), true), t0)
                    .is_ok(),
                "{u}"
            );
        }
        let r = l.admit(&f, &key("d@contoso.test", true), t0).unwrap_err();
        assert_eq!(
            (r.status, r.code(), r.retry_after),
            (503, Some(1911), Some(3600))
        );
        assert!(l.is_watch_listed("northwind.test"));
        assert_eq!(l.watch_list(), ["northwind.test"]);
        // Further new requests are refused, even to a known contact; in-dialog ones pass.
        assert!(l.admit(&f, &key("a@contoso.test", true), t0).is_err());
        assert!(l.admit(&f, &key("a@contoso.test", false), t0).is_ok());
        assert!(l.release("northwind.test"));
        assert!(l.admit(&f, &key("d@contoso.test", true), t0).is_ok());
    }

    #[test]
    fn contacts_limit_can_be_disabled() {
        let mut f = fed(1000, 1);
        f.access_edge.enable_discovered_partner_contacts_limit = false;
        let mut l = DiscoveredPartnerLimits::new();
        let t0 = Instant::now();
        for u in ["a", "b", "c"] {
            assert!(l
                .admit(&f, &key(&format!("{u}@contoso.test"), true), t0)
                .is_ok());
        }
    }

    #[test]
    fn partners_idle_for_a_report_period_are_forgotten_unless_watch_listed() {
        let f = fed(10, 1);
        let mut l = DiscoveredPartnerLimits::new();
        let t0 = Instant::now();
        assert!(l.admit(&f, &key("sip:a@contoso.test", true), t0).is_ok());
        // Over the contacts limit: on the watch list.
        assert!(l.admit(&f, &key("sip:b@contoso.test", true), t0).is_err());
        assert!(l.is_watch_listed("northwind.test"));
        let mut other = key("sip:a@contoso.test", true);
        other.partner = "tailspin.test".into();
        assert!(l.admit(&f, &other, t0).is_ok());
        assert_eq!(l.len(), 2);
        let period = Duration::from_secs(
            u64::from(f.access_edge.discovered_partner_report_period_minutes) * 60,
        );
        let mut third = key("sip:a@contoso.test", true);
        third.partner = "wingtip.test".into();
        assert!(l.admit(&f, &third, t0 + period + PRUNE_EVERY).is_ok());
        assert_eq!(
            l.len(),
            2,
            "tailspin.test forgotten, the watch-listed one kept"
        );
        assert!(l.is_watch_listed("northwind.test"));
    }

    #[test]
    fn a_partner_whose_requests_mostly_fail_inside_is_throttled_to_one_message_a_second() {
        let f = suspicious_after(4, 80);
        let mut l = DiscoveredPartnerLimits::new();
        let t0 = Instant::now();
        let p = "northwind.test";
        // One success and three failures: not enough failures yet.
        for status in [200, 404, 404, 480] {
            l.admit(&f, &key("a@contoso.test", true), t0).unwrap();
            assert_eq!(l.record_response(&f, p, status), None, "{status}");
        }
        // A cancelled call counts neither way; a fourth failure makes 4 of 5 = 80 %.
        assert_eq!(l.record_response(&f, p, 487), None);
        assert_eq!(
            l.record_response(&f, p, 404),
            Some(PartnerEvent::Suspicious)
        );
        assert_eq!(l.record_response(&f, p, 404), None, "reported once");
        let r = &l.partners()[0];
        assert!(r.suspicious && !r.watch_listed, "{r:?}");
        assert_eq!((r.succeeded, r.failed), (1, 5));
        assert_eq!(l.flagged(), 1);

        // One message now, the next one a second later; the refusal names the throttle.
        let t1 = t0 + Duration::from_millis(10);
        assert!(l.admit(&f, &key("a@contoso.test", false), t1).is_ok());
        let r = l.admit(&f, &key("a@contoso.test", false), t1).unwrap_err();
        assert_eq!(
            (r.status, r.code(), r.retry_after, r.rule),
            (503, Some(1913), Some(1), crate::policy::Rule::SuspiciousPartner)
        );
        let t2 = t1 + Duration::from_secs(1);
        assert!(l.admit(&f, &key("a@contoso.test", false), t2).is_ok());
        assert!(l.admit(&f, &key("a@contoso.test", false), t2).is_err());

        // Released by the admin: the standard rate again.
        assert!(l.release(p));
        assert!(!l.release(p), "nothing left to release");
        assert_eq!(l.flagged(), 0);
        let t3 = t2 + Duration::from_secs(5);
        for _ in 0..10 {
            assert!(l.admit(&f, &key("a@contoso.test", false), t3).is_ok());
        }
    }

    #[test]
    fn mostly_successful_partners_and_few_failures_are_not_suspicious() {
        let f = suspicious_after(3, 50);
        let mut l = DiscoveredPartnerLimits::new();
        let t0 = Instant::now();
        l.admit(&f, &key("a@contoso.test", true), t0).unwrap();
        for _ in 0..10 {
            assert_eq!(l.record_response(&f, "northwind.test", 200), None);
        }
        for _ in 0..5 {
            assert_eq!(l.record_response(&f, "northwind.test", 404), None);
        }
        assert!(!l.partners()[0].suspicious);
        // A partner the limits never admitted is not tracked by a response.
        assert_eq!(l.record_response(&f, "tailspin.test", 404), None);
    }

    #[test]
    fn a_suspicious_partner_stays_throttled_only_while_its_period_still_fails() {
        let f = suspicious_after(2, 80);
        let mut l = DiscoveredPartnerLimits::new();
        let t0 = Instant::now();
        assert_eq!(l.report(&f, t0), None);
        l.admit(&f, &key("a@contoso.test", true), t0).unwrap();
        l.record_response(&f, "northwind.test", 404);
        assert_eq!(
            l.record_response(&f, "northwind.test", 404),
            Some(PartnerEvent::Suspicious)
        );
        let hour = Duration::from_secs(60 * 60);
        let r = l.report(&f, t0 + hour).expect("a report");
        assert!(r[0].suspicious && r[0].failed == 2, "{r:?}");
        assert!(l.partners()[0].suspicious, "its period failed: still throttled");
        // A period without failures clears it.
        l.record_response(&f, "northwind.test", 200);
        assert!(!l.report(&f, t0 + hour * 2).expect("a report")[0].failed > 0);
        assert!(!l.partners()[0].suspicious, "a good period clears it");
    }

    #[test]
    fn report_once_per_period() {
        let f = fed(1000, 1000);
        let mut l = DiscoveredPartnerLimits::new();
        let t0 = Instant::now();
        assert_eq!(l.report(&f, t0), None);
        l.admit(&f, &key("a@contoso.test", true), t0).unwrap();
        assert_eq!(l.report(&f, t0 + Duration::from_secs(59 * 60)), None);
        let r = l
            .report(&f, t0 + Duration::from_secs(60 * 60))
            .expect("a report");
        assert_eq!(r[0].partner, "northwind.test");
        assert_eq!((r[0].admitted, r[0].distinct_contacts), (1, 1));
        let r = l
            .report(&f, t0 + Duration::from_secs(120 * 60))
            .expect("a report");
        assert_eq!(r[0].admitted, 0);
    }
}
