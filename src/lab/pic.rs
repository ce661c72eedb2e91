//! PIC provisioning: the public provider's side of the seed document's procedure.
//!
//! Before Skype federation works, the organisation asks the provider to provision its SIP
//! domains (agreement number, Access Edge FQDN, domains, contact), and in real life waited
//! up to 30 days. [`Provisioning`] keeps those requests and [`LabClock`] is the time they
//! are judged by, so the lab can run that month in a second. Both are pure: the clock's
//! wall reading is the only I/O, and tests use a manual clock they advance by hand.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The provisioning delay of the real service: up to 30 days.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// The ms-diagnostics code the simulated provider answers with while a domain is not
/// provisioned. A sipedge choice: no public source gives the provider's own code, and
/// 1080 is unused by the edge's 10xx codes.
pub const NOT_PROVISIONED_CODE: u32 = 1080;

/// The reason text that goes with [`NOT_PROVISIONED_CODE`].
pub const NOT_PROVISIONED_REASON: &str =
    "The federated organization has not been provisioned for public IM connectivity";

/// The ms-diagnostics value for a refused domain, e.g.
/// `1080;reason="The federated organization has not been provisioned for public IM connectivity";domain="contoso.test"`.
pub fn not_provisioned_diagnostics(domain: &str) -> String {
    format!("{NOT_PROVISIONED_CODE};reason=\"{NOT_PROVISIONED_REASON}\";domain=\"{domain}\"")
}

// === LabClock ===

/// Lab time: starts at a given instant (wall time by default), runs `speed` times faster
/// than real time, and can be advanced by hand.
#[derive(Debug)]
pub struct LabClock {
    start: SystemTime,
    speed: u32,
    source: Source,
    advanced: Mutex<Duration>,
}

#[derive(Debug)]
enum Source {
    /// Real time elapsed since this instant drives the clock.
    Wall(Instant),
    /// Only `advance` moves the clock (tests).
    Manual,
}

impl LabClock {
    /// A clock that starts at wall time now and runs `speed` times faster (1 = real time).
    pub fn wall(speed: u32) -> LabClock {
        LabClock {
            start: SystemTime::now(),
            speed: speed.max(1),
            source: Source::Wall(Instant::now()),
            advanced: Mutex::new(Duration::ZERO),
        }
    }

    /// A clock that stands still at `start` until advanced; tests never sleep.
    pub fn manual(start: SystemTime) -> LabClock {
        LabClock {
            start,
            speed: 1,
            source: Source::Manual,
            advanced: Mutex::new(Duration::ZERO),
        }
    }

    /// Lab time now.
    pub fn now(&self) -> SystemTime {
        let real = match &self.source {
            Source::Wall(base) => base.elapsed(),
            Source::Manual => Duration::ZERO,
        };
        self.at(real)
    }

    /// Lab time after `real_elapsed` of real time: start + elapsed × speed + advances.
    /// Pure, so the speed-up is tested without waiting.
    pub fn at(&self, real_elapsed: Duration) -> SystemTime {
        let advanced = *self.advanced.lock().unwrap_or_else(|p| p.into_inner());
        self.start + real_elapsed.saturating_mul(self.speed) + advanced
    }

    /// Moves lab time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut a = self.advanced.lock().unwrap_or_else(|p| p.into_inner());
        *a += by;
    }

    /// How many times faster than real time the clock runs.
    pub fn speed(&self) -> u32 {
        self.speed
    }
}

// === Provisioning ===

/// A provisioning request as the PIC site took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The licence agreement number.
    pub agreement_number: String,
    /// The Access Edge FQDN the provider will accept traffic from.
    pub access_edge_fqdn: String,
    /// The organisation's SIP domains (at least one).
    pub sip_domains: Vec<String>,
    /// Further Access Edge FQDNs of the organisation.
    pub additional_edge_fqdns: Vec<String>,
    /// Who the provider contacts.
    pub contact: String,
}

/// A request's number, shown as `PIC-0001`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub u64);

/// Where a request is in the provider's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Just taken, no lab time has passed yet.
    Submitted,
    /// Validated, waiting for the provisioning delay.
    Pending,
    /// Traffic from and to its domains flows.
    Provisioned,
    /// Refused at validation.
    Rejected { reason: String },
}

/// What `status` reports about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: Id,
    pub state: State,
    pub request: Request,
    pub submitted_at: SystemTime,
    /// When it is (or will be) provisioned; `None` for a rejected request.
    pub provisioned_at: Option<SystemTime>,
}

/// A request refused at validation; it is kept, so `status(id)` reports it too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provisioning request {id} rejected: {reason}")]
pub struct Rejected {
    pub id: Id,
    pub reason: String,
}

/// The provider's provisioning requests.
#[derive(Debug)]
pub struct Provisioning {
    delay: Duration,
    entries: Mutex<Vec<Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    id: Id,
    request: Request,
    submitted_at: SystemTime,
    rejected: Option<String>,
}

impl Provisioning {
    /// A store approving valid requests after `delay` of lab time ([`DEFAULT_DELAY`] in the lab).
    pub fn new(delay: Duration) -> Provisioning {
        Provisioning {
            delay,
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Takes a request at lab time `now`. `resolves` says whether an FQDN resolves (the lab
    /// zone, or a fixed answer in tests). Validation: an agreement number, at least one
    /// SIP domain, every Access Edge FQDN resolves, and no domain already in a live request.
    pub fn submit(
        &self,
        request: Request,
        now: SystemTime,
        resolves: &dyn Fn(&str) -> bool,
    ) -> Result<Id, Rejected> {
        let mut entries = self.lock();
        let id = Id(entries.len() as u64 + 1);
        let rejected = validate(&request, &entries, resolves).err();
        entries.push(Entry {
            id,
            request,
            submitted_at: now,
            rejected: rejected.clone(),
        });
        match rejected {
            Some(reason) => Err(Rejected { id, reason }),
            None => Ok(id),
        }
    }

    /// A request's state at lab time `now`.
    pub fn status(&self, id: Id, now: SystemTime) -> Option<Status> {
        let entries = self.lock();
        let e = entries.iter().find(|e| e.id == id)?;
        Some(self.status_of(e, now))
    }

    /// Every request, oldest first, at lab time `now`.
    pub fn all(&self, now: SystemTime) -> Vec<Status> {
        self.lock().iter().map(|e| self.status_of(e, now)).collect()
    }

    /// Whether `domain` belongs to a provisioned request at lab time `now`.
    pub fn is_provisioned(&self, domain: &str, now: SystemTime) -> bool {
        self.lock().iter().any(|e| {
            e.rejected.is_none()
                && has_domain(&e.request, domain)
                && now >= e.submitted_at + self.delay
        })
    }

    /// The provisioning delay in lab time.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    fn status_of(&self, e: &Entry, now: SystemTime) -> Status {
        let due = e.submitted_at + self.delay;
        let state = match &e.rejected {
            Some(reason) => State::Rejected {
                reason: reason.clone(),
            },
            None if now >= due => State::Provisioned,
            None if now > e.submitted_at => State::Pending,
            None => State::Submitted,
        };
        Status {
            id: e.id,
            state,
            request: e.request.clone(),
            submitted_at: e.submitted_at,
            provisioned_at: e.rejected.is_none().then_some(due),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for Provisioning {
    fn default() -> Self {
        Provisioning::new(DEFAULT_DELAY)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PIC-{:04}", self.0)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Submitted => f.write_str("Submitted"),
            State::Pending => f.write_str("Pending"),
            State::Provisioned => f.write_str("Provisioned"),
            State::Rejected { reason } => write!(f, "Rejected ({reason})"),
        }
    }
}

fn has_domain(r: &Request, domain: &str) -> bool {
    r.sip_domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
}

/// The first reason to refuse `r`, checked in the order the PIC site asked for the fields.
fn validate(r: &Request, earlier: &[Entry], resolves: &dyn Fn(&str) -> bool) -> Result<(), String> {
    if r.agreement_number.trim().is_empty() {
        return Err("an agreement number is required".into());
    }
    if r.access_edge_fqdn.trim().is_empty() {
        return Err("an Access Edge FQDN is required".into());
    }
    for fqdn in std::iter::once(&r.access_edge_fqdn).chain(&r.additional_edge_fqdns) {
        if !resolves(fqdn) {
            return Err(format!("the Access Edge FQDN {fqdn} does not resolve"));
        }
    }
    if r.sip_domains.iter().all(|d| d.trim().is_empty()) {
        return Err("at least one SIP domain is required".into());
    }
    for d in &r.sip_domains {
        if let Some(e) = earlier
            .iter()
            .find(|e| e.rejected.is_none() && has_domain(&e.request, d))
        {
            return Err(format!("the SIP domain {d} is already in request {}", e.id));
        }
    }
    Ok(())
}

// === The admin wire forms ===

impl Request {
    /// Reads the admin endpoint's `key=value` lines: `agreement`, `edge_fqdn`, `domain`
    /// (repeatable), `additional_fqdn` (repeatable), `contact`. Blank lines are skipped.
    pub fn from_form(text: &str) -> Result<Request, String> {
        let mut r = Request {
            agreement_number: String::new(),
            access_edge_fqdn: String::new(),
            sip_domains: Vec::new(),
            additional_edge_fqdns: Vec::new(),
            contact: String::new(),
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("`{line}` is not key=value"));
            };
            let v = v.trim().to_string();
            match k.trim() {
                "agreement" => r.agreement_number = v,
                "edge_fqdn" => r.access_edge_fqdn = v,
                "domain" => r.sip_domains.push(v),
                "additional_fqdn" => r.additional_edge_fqdns.push(v),
                "contact" => r.contact = v,
                other => {
                    return Err(format!(
                        "unknown field `{other}`; valid fields: agreement, edge_fqdn, domain, additional_fqdn, contact"
                    ))
                }
            }
        }
        Ok(r)
    }

    /// The `key=value` lines [`Request::from_form`] reads.
    pub fn to_form(&self) -> String {
        let mut out = format!(
            "agreement={}\nedge_fqdn={}\n",
            self.agreement_number, self.access_edge_fqdn
        );
        for d in &self.sip_domains {
            out.push_str(&format!("domain={d}\n"));
        }
        for f in &self.additional_edge_fqdns {
            out.push_str(&format!("additional_fqdn={f}\n"));
        }
        if !self.contact.is_empty() {
            out.push_str(&format!("contact={}\n", self.contact));
        }
        out
    }
}

/// One line per request, as `sipedge admin provisioning-status` prints it, e.g.
/// `PIC-0001 Pending domains=contoso.test edge=accessedge.contoso.test provisioned-in=29d 0h`.
pub fn render_status(all: &[Status], now: SystemTime) -> String {
    if all.is_empty() {
        return "no provisioning request\n".to_string();
    }
    let mut out = String::new();
    for s in all {
        out.push_str(&format!(
            "{} {} domains={} edge={}",
            s.id,
            s.state,
            s.request.sip_domains.join(","),
            s.request.access_edge_fqdn
        ));
        if let (State::Submitted | State::Pending, Some(at)) = (&s.state, s.provisioned_at) {
            let left = at.duration_since(now).unwrap_or_default().as_secs();
            out.push_str(&format!(
                " provisioned-in={}d {}h",
                left / 86_400,
                left % 86_400 / 3600
            ));
        }
        out.push('\n');
    }
    out
}

/// A lab-time duration: a number followed by `d`, `h`, `m` or `s` (`30d`, `12h`), or
/// several of them (`1d12h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("`{text}` is not a duration; write e.g. 30d, 12h, 90m or 1d12h");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            'd' => 86_400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn contoso() -> Request {
        Request {
            agreement_number: "AG-1234".into(),
            access_edge_fqdn: "accessedge.contoso.test".into(),
            sip_domains: vec!["contoso.test".into()],
            additional_edge_fqdns: vec![],
            contact: "admin@contoso.test".into(),
        }
    }

    fn lab_zone(name: &str) -> bool {
        name.ends_with(".contoso.test")
    }

    fn start() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn a_valid_request_is_provisioned_after_thirty_days_of_lab_time() {
        let clock = LabClock::manual(start());
        let pic = Provisioning::default();
        let id = pic.submit(contoso(), clock.now(), &lab_zone).unwrap();
        assert_eq!(id.to_string(), "PIC-0001");
        assert_eq!(pic.status(id, clock.now()).unwrap().state, State::Submitted);
        assert!(!pic.is_provisioned("contoso.test", clock.now()));

        clock.advance(29 * DAY);
        assert_eq!(pic.status(id, clock.now()).unwrap().state, State::Pending);
        assert!(!pic.is_provisioned("contoso.test", clock.now()));

        clock.advance(DAY);
        let s = pic.status(id, clock.now()).unwrap();
        assert_eq!(s.state, State::Provisioned);
        assert_eq!(s.provisioned_at, Some(start() + 30 * DAY));
        assert!(pic.is_provisioned("CONTOSO.test", clock.now()));
        assert!(!pic.is_provisioned("fabrikam.test", clock.now()));
    }

    #[test]
    fn invalid_requests_are_rejected_with_a_reason_and_kept() {
        let pic = Provisioning::new(DAY);
        let now = start();
        let no_domain = Request {
            sip_domains: vec![],
            ..contoso()
        };
        let r = pic.submit(no_domain, now, &lab_zone).unwrap_err();
        assert_eq!(r.reason, "at least one SIP domain is required");
        assert!(matches!(
            pic.status(r.id, now).unwrap().state,
            State::Rejected { .. }
        ));

        let unresolvable = Request {
            access_edge_fqdn: "edge.nowhere.test".into(),
            ..contoso()
        };
        let r = pic.submit(unresolvable, now, &lab_zone).unwrap_err();
        assert!(
            r.reason.contains("edge.nowhere.test does not resolve"),
            "{r}"
        );
        let extra = Request {
            additional_edge_fqdns: vec!["edge2.nowhere.test".into()],
            ..contoso()
        };
        assert!(pic.submit(extra, now, &lab_zone).is_err());

        // Rejected requests never provision, whatever the time.
        assert!(!pic.is_provisioned("contoso.test", now + 365 * DAY));

        let first = pic.submit(contoso(), now, &lab_zone).unwrap();
        let dup = pic.submit(contoso(), now, &lab_zone).unwrap_err();
        assert!(dup.reason.contains(&first.to_string()), "{dup}");
        assert_eq!(pic.all(now).len(), 5);
    }

    #[test]
    fn the_delay_is_configurable() {
        let clock = LabClock::manual(start());
        let pic = Provisioning::new(Duration::from_secs(60));
        pic.submit(contoso(), clock.now(), &lab_zone).unwrap();
        clock.advance(Duration::from_secs(59));
        assert!(!pic.is_provisioned("contoso.test", clock.now()));
        clock.advance(Duration::from_secs(1));
        assert!(pic.is_provisioned("contoso.test", clock.now()));
    }

    #[test]
    fn a_fast_clock_runs_speed_times_real_time() {
        let clock = LabClock::wall(86_400);
        let t0 = clock.at(Duration::ZERO);
        assert_eq!(clock.at(Duration::from_secs(30)), t0 + 30 * DAY);
        clock.advance(DAY);
        assert_eq!(clock.at(Duration::ZERO), t0 + DAY);
        assert!(clock.now() >= t0 + DAY);
    }

    #[test]
    fn diagnostics_name_the_domain() {
        assert_eq!(
            not_provisioned_diagnostics("contoso.test"),
            "1080;reason=\"The federated organization has not been provisioned for public IM connectivity\";domain=\"contoso.test\""
        );
    }

    #[test]
    fn the_admin_forms_round_trip_and_durations_parse() {
        let r = Request {
            additional_edge_fqdns: vec!["edge2.contoso.test".into()],
            ..contoso()
        };
        assert_eq!(Request::from_form(&r.to_form()), Ok(r));
        assert!(Request::from_form("colour=blue")
            .unwrap_err()
            .contains("valid fields"));
        assert_eq!(parse_duration("30d"), Ok(30 * DAY));
        assert_eq!(parse_duration("1d12h"), Ok(DAY + DAY / 2));
        assert!(parse_duration("30").is_err() && parse_duration("3x").is_err());

        let pic = Provisioning::default();
        let now = start();
        pic.submit(contoso(), now, &lab_zone).unwrap();
        let text = render_status(&pic.all(now + DAY), now + DAY);
        assert_eq!(
            text,
            "PIC-0001 Pending domains=contoso.test edge=accessedge.contoso.test provisioned-in=29d 0h\n"
        );
    }
}
