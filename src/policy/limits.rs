//! Discovered-partner limits (b.3 step 6): a token bucket per partner domain at
//! DiscoveredPartnerStandardRate, and a cap on the distinct local URIs a partner may
//! address (MaxContactsPerDiscoveredPartner) after which it is on the watch list.
//!
//! This is state, so it lives outside `decide`: the proxy calls `admit` for a `Forward`
//! whose `limit` is set. Every method takes `now` explicitly, so tests step time by hand.

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

/// Per-partner statistics for one DiscoveredPartnerReportPeriodMinutes period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerReport {
    pub partner: String,
    pub admitted: u64,
    pub rate_limited: u64,
    pub contacts_refused: u64,
    pub distinct_contacts: usize,
    pub watch_listed: bool,
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
    admitted: u64,
    rate_limited: u64,
    contacts_refused: u64,
}

impl DiscoveredPartnerLimits {
    pub fn new() -> Self {
        DiscoveredPartnerLimits::default()
    }

    /// Admits one request or refuses it: watch-listed partners get no new requests; a new
    /// local URI beyond the contacts limit puts the partner on the watch list; over the
    /// rate, 503 + Retry-After. Settings and codes come from the current snapshot.
    pub fn admit(
        &mut self,
        fed: &Federation,
        key: &LimitKey,
        now: Instant,
    ) -> Result<(), Rejection> {
        let ae = &fed.access_edge;
        let rate = f64::from(ae.discovered_partner_standard_rate.max(1));
        let last_prune = *self.last_prune.get_or_insert(now);
        if now.saturating_duration_since(last_prune) >= PRUNE_EVERY {
            self.last_prune = Some(now);
            self.prune(fed, now);
        }
        let st = self
            .partners
            .entry(key.partner.clone())
            .or_insert_with(|| PartnerState {
                tokens: rate,
                refilled: now,
                contacts: HashSet::new(),
                watch_listed: false,
                admitted: 0,
                rate_limited: 0,
                contacts_refused: 0,
            });
        if ae.enable_discovered_partner_contacts_limit && key.new_request {
            if st.watch_listed {
                st.contacts_refused += 1;
                return Err(Rejection::contacts_limit(&fed.codes, &key.partner));
            }
            if !st.contacts.contains(&key.local_uri) {
                if st.contacts.len() >= ae.max_contacts_per_discovered_partner as usize {
                    st.watch_listed = true;
                    st.contacts_refused += 1;
                    return Err(Rejection::contacts_limit(&fed.codes, &key.partner));
                }
                st.contacts.insert(key.local_uri.clone());
            }
        }
        let elapsed = now.saturating_duration_since(st.refilled).as_secs_f64();
        st.tokens = (st.tokens + elapsed * rate).min(rate);
        st.refilled = now;
        if st.tokens < 1.0 {
            st.rate_limited += 1;
            return Err(Rejection::rate_limited(&fed.codes, &key.partner));
        }
        st.tokens -= 1.0;
        st.admitted += 1;
        Ok(())
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
        self.partners
            .retain(|_, s| s.watch_listed || now.saturating_duration_since(s.refilled) < idle);
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

    /// Takes a partner off the watch list and forgets its contacts (the admin's
    /// "add it to the allowed list" usually follows).
    pub fn release(&mut self, partner: &str) {
        if let Some(s) = self.partners.get_mut(&partner.to_ascii_lowercase()) {
            s.watch_listed = false;
            s.contacts.clear();
        }
    }

    /// Once every DiscoveredPartnerReportPeriodMinutes: the period's statistics per
    /// partner (counters restart; contacts and the watch list persist).
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
                let r = PartnerReport {
                    partner: p.clone(),
                    admitted: s.admitted,
                    rate_limited: s.rate_limited,
                    contacts_refused: s.contacts_refused,
                    distinct_contacts: s.contacts.len(),
                    watch_listed: s.watch_listed,
                };
                s.admitted = 0;
                s.rate_limited = 0;
                s.contacts_refused = 0;
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
        l.release("northwind.test");
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
