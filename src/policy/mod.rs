//! `decide(request, peer, snapshot, dns)`: what the edge does with one request.
//!
//! Pure (no I/O, no clock), so tests drive it with literals. The proxy extracts the few
//! facts the decision needs (`RequestFacts`) from the message, asks `dns_needed` which DNS
//! answer the decision depends on, resolves it, and acts on the `Decision`. After a
//! `Forward` whose `limit` is set, it calls `DiscoveredPartnerLimits::admit` (state).
//!
//! # The decision order (access-edge.md §b.3, §b.4)
//! 1. hops and loops (`check_hops`); OPTIONS to the edge is answered; in-dialog requests
//!    follow our Record-Route.
//! 2. no federation sections configured → static routing (`routes`, `default_route`).
//! 3. internal → local domain: the pool, or for a user homed at a hosting provider that
//!    shares our address space (split domain), that provider.
//! 4. no relay: external → non-local refused, internal → external needs a local From.
//! 5. edge switches: AllowFederatedUsers / AllowOutsideUsers; `ms-split-domain-info` must
//!    match the From and To domains (1017).
//! 6. blocked list: the From domain (inbound) or Request-URI domain (outbound); an allowed
//!    domain with MarkForMonitoring is marked in the trail (and counted by the proxy).
//! 7. source classification (b.2) and verification: the peer must speak for the From domain.
//! 8. method filter (1027).
//! 9. verification level → `ms-source-verified-user` (inbound).
//! 10. the local user may leave at all (outbound, before DNS).
//! 11. target classification: default route, allowed ProxyFqdn, SRV (1008, 1009,
//!     providers by SRV target, discovery).
//! 12. external access policy (user > site > global): federation, public cloud, public-cloud A/V.
//! 13. an unverified sender reaches only recipients whose contact list holds them.
//! 14. route choice and header work (trust header, marking, strip lists).

mod access;
mod classify;
mod dns;
mod limits;
mod reject;
mod route;
mod verify;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

use std::ops::ControlFlow;

pub use access::{effective_policy, PolicySource};
pub use classify::{same_domain, SourceClass, TargetClass};
pub use dns::{DnsFacts, DnsQuestion, SrvAnswer, SrvTarget};
pub use limits::{DiscoveredPartnerLimits, LimitKey, PartnerEvent, PartnerReport, SUSPICIOUS_RATE};
pub use reject::{reason_phrase, Diagnostics, Rejection, Rule};
pub use route::response_trust;

use crate::config::{NextHop, Snapshot};
use crate::sip::ms_headers::{MessageTrust, Verified};
use crate::peer::{Interface, Peer, Transport};

/// The facts about a request that routing and policy look at, borrowed from the message.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts<'a> {
    /// Method token as sent (`MESSAGE`, `INVITE`…).
    pub method: &'a str,
    /// Request-URI user part, if any.
    pub uri_user: Option<&'a str>,
    /// Request-URI host (lowercase; IPv6 without brackets).
    pub uri_host: &'a str,
    /// From URI user part, if any.
    pub from_user: Option<&'a str>,
    /// From URI host (lowercase).
    pub from_host: &'a str,
    /// To URI user part, if any.
    pub to_user: Option<&'a str>,
    /// To URI host (lowercase).
    pub to_host: &'a str,
    /// Max-Forwards as received; `None` when absent.
    pub max_forwards: Option<u32>,
    /// A Via of ours with this request's loop key was found (RFC 3261 §16.3 step 4).
    pub looped: bool,
    /// An in-dialog request whose route set the edge recognised as its own (from outside:
    /// its sealed entry, bound to this dialog): the interface the last of its entries names,
    /// which is where the request leaves. `None` for every request without a To tag.
    pub routed_exit: Option<Interface>,
    /// Whether a Route header is left after popping ours (the next hop is its first entry).
    pub has_remaining_route: bool,
    /// The Request-URI names the edge itself (no user part, host = one of our FQDNs or addresses).
    pub addressed_to_edge: bool,
    /// The `ms-edge-proxy-message-trust` value that arrived (first one), if any. Inbound it
    /// is the peer's own verification marking (UseSourceVerification); it is always
    /// stripped and replaced by ours.
    pub trust_header: Option<&'a str>,
    /// Media the SDP body offers (INVITE/UPDATE with `application/sdp`).
    pub media: Media,
    /// The To header has a tag: the request is inside a dialog. Out-of-dialog requests are
    /// the "new requests" the discovered-partner contacts limit counts and refuses.
    pub in_dialog: bool,
    /// The Request-URI or To names a conference endpoint of ours (`opaque=app:conf:…`, the
    /// focus or an MCU): what an anonymous user may reach, and nothing else.
    pub meeting: bool,
    /// The `ms-split-domain-info` value that arrived (first one), if any.
    pub split_domain_info: Option<&'a str>,
}

impl RequestFacts<'_> {
    /// Whether the method is `m` (case-insensitive).
    pub fn is(&self, m: &str) -> bool {
        self.method.eq_ignore_ascii_case(m)
    }

    /// INVITE or SUBSCRIBE outside a dialog (REFER too).
    pub fn is_dialog_creating(&self) -> bool {
        !self.in_dialog && (self.is("INVITE") || self.is("SUBSCRIBE") || self.is("REFER"))
    }
}

/// The media an SDP offer contains (`m=audio`, `m=video`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Media {
    pub audio: bool,
    pub video: bool,
}

impl Media {
    pub fn any(self) -> bool {
        self.audio || self.video
    }
}

/// What the edge does with a request.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a Decision is moved once per request; boxing the forward would allocate on the hot path"
)]
pub enum Decision {
    /// Relay it.
    Forward(Forward),
    /// Refuse it with this status and diagnostics.
    Reject(Rejection),
    /// Answer it ourselves (OPTIONS to the edge): 200 with Allow.
    AnswerOptions,
}

impl Decision {
    /// The rejection, if this is one.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Decision::Reject(r) => Some(r),
            _ => None,
        }
    }
}

/// Where and how a request is relayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// The interface the request leaves through.
    pub exit: Interface,
    /// How the next hop is found.
    pub route: Route,
    /// Which rule chose the route, for logs and metrics.
    pub rule: &'static str,
    /// What the source was classified as.
    pub source: SourceClass,
    /// What the target was classified as (`None` for static routing and in-dialog).
    pub target: Option<TargetClass>,
    /// The `ms-edge-proxy-message-trust` value to insert, after stripping any that
    /// arrived: the edge's classification inbound, the outbound marking
    /// (MarkSourceVerifiableOnOutgoingMessages) outbound.
    pub insert_trust: Option<MessageTrust>,
    /// Headers the proxy removes before relaying.
    pub strip: Strip,
    /// Set for traffic from a discovered partner: the proxy must pass it through
    /// `DiscoveredPartnerLimits::admit` before relaying.
    pub limit: Option<LimitKey>,
    /// The marking the responses that come back from outside carry inward, in place of
    /// whatever marking they arrived with (`None`: they only lose theirs).
    pub response_trust: Option<std::sync::Arc<ResponseTrust>>,
    /// Traffic between the two halves of a split domain (our on-premises users and those
    /// homed at a hosting provider): the proxy replaces any `ms-split-domain-info` with
    /// `ms-traffic-type=SplitIntra` ([`SPLIT_INTRA`]).
    pub split_domain: bool,
}

/// The `ms-split-domain-info` value of traffic inside a split domain.
pub const SPLIT_INTRA: &str = "ms-traffic-type=SplitIntra";

/// The edge's marking for responses from the external side to a request it relayed out.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseTrust {
    pub trust: MessageTrust,
    /// UseSourceVerification: `ms-source-verified-user` is copied from the marking the
    /// response arrived with (unverified when it had none).
    pub copy_verified: bool,
}

impl ResponseTrust {
    /// The marking to insert on a response that arrived with `arrived` (its own trust
    /// header value, if any).
    pub fn for_response(&self, arrived: Option<&str>) -> MessageTrust {
        let mut trust = self.trust.clone();
        if self.copy_verified {
            trust.verified = Some(
                arrived
                    .and_then(|v| MessageTrust::parse(v).ok())
                    .and_then(|t| t.verified)
                    .unwrap_or(Verified::Unverified),
            );
        }
        trust
    }
}

/// Headers removed before relaying.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Strip {
    /// Every `ms-edge-proxy-message-trust` (inbound: only the edge may set it; outbound:
    /// internal markings never leave).
    pub trust_header: bool,
    /// `ms-diagnostics` (never leaves through the external interface; `ms-diagnostics-public` does).
    pub diagnostics: bool,
}

impl Strip {
    /// What crossing from `arrival` to `exit` removes.
    pub fn crossing(arrival: Interface, exit: Interface) -> Strip {
        Strip {
            trust_header: arrival == Interface::External || exit == Interface::External,
            diagnostics: exit == Interface::External,
        }
    }
}

/// How the next hop of a forwarded request is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A configured next hop: the pool, a static route, the default route.
    NextHop(NextHop),
    /// The first remaining Route entry, or else the Request-URI (loose routing, in-dialog).
    RequestTarget,
    /// Federation targets in the order to try (failover on connect failure, timeout, 503).
    Targets(Vec<Target>),
}

/// One federation target: the proxy resolves `host` (A/AAAA) and connects with TLS,
/// expecting `tls_name` in the certificate (else 504 + 1010).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    /// The name the partner's certificate must contain: the SRV target or ProxyFqdn.
    pub tls_name: String,
}

impl Target {
    /// A mutual-TLS target whose certificate must carry `host`.
    pub fn tls(host: &str, port: u16) -> Target {
        Target {
            host: host.to_string(),
            port,
            transport: Transport::Tls,
            tls_name: host.to_string(),
        }
    }
}

/// One check of the pipeline and what came of it; `explain` and `/decisions` show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The check ran and let the request continue; the note says what it found.
    Passed(String),
    /// The check made the decision (a refusal or the route).
    Decided(String),
}

/// A decision with the trail of checks that led to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub decision: Decision,
    pub trail: Vec<Check>,
}

/// Decides what the edge does with one request from `peer`.
///
/// `dns` holds the answer to `dns_needed`'s question; a needed answer that is missing is
/// treated as a failed lookup (504 + 1008).
pub fn decide(req: &RequestFacts<'_>, peer: &Peer, snap: &Snapshot, dns: &DnsFacts) -> Decision {
    let mut cx = Ctx::new(req, peer, snap, dns, false);
    run(&mut cx)
}

/// The decision when it needs no DNS answer, or the question it needs answered first.
///
/// What the proxy calls for every request: one pass through the checks, without the
/// trail (`/decisions` rebuilds that from the recorded inputs when someone reads it).
pub fn decide_or_ask(
    req: &RequestFacts<'_>,
    peer: &Peer,
    snap: &Snapshot,
) -> Result<Decision, DnsQuestion> {
    let none = DnsFacts::none();
    let mut cx = Ctx::new(req, peer, snap, &none, false);
    let decision = run(&mut cx);
    match cx.dns_wanted {
        Some(q) => Err(q),
        None => Ok(decision),
    }
}

fn run(cx: &mut Ctx<'_>) -> Decision {
    let decision = match pipeline(cx) {
        ControlFlow::Break(d) | ControlFlow::Continue(d) => d,
    };
    cx.finish(decision)
}

/// `decide`, with the trail of checks that ran and the one that decided.
pub fn explain(
    req: &RequestFacts<'_>,
    peer: &Peer,
    snap: &Snapshot,
    dns: &DnsFacts,
) -> Explanation {
    let mut cx = Ctx::new(req, peer, snap, dns, true);
    let decision = run(&mut cx);
    Explanation {
        decision,
        trail: cx.trail.unwrap_or_default(),
    }
}

/// The allowed domain marked for monitoring (MarkForMonitoring) that this request's
/// partner domain is: the From domain inbound, the target domain outbound. The proxy counts
/// such decisions; the pipeline marks them in the trail.
pub fn monitored_domain(req: &RequestFacts<'_>, peer: &Peer, snap: &Snapshot) -> Option<String> {
    let none = DnsFacts::none();
    let cx = Ctx::new(req, peer, snap, &none, false);
    cx.monitored_domain().map(str::to_string)
}

/// The DNS question the decision for this request depends on, if any. The proxy resolves
/// it and passes the answer to `decide` in `DnsFacts`.
pub fn dns_needed(req: &RequestFacts<'_>, peer: &Peer, snap: &Snapshot) -> Option<DnsQuestion> {
    let none = DnsFacts::none();
    let mut cx = Ctx::new(req, peer, snap, &none, false);
    let _ = pipeline(&mut cx);
    cx.dns_wanted
}

/// The checklist. Each step either lets the request continue or decides.
fn pipeline(cx: &mut Ctx<'_>) -> ControlFlow<Decision, Decision> {
    check_hops(cx)?;
    answer_options(cx)?;
    follow_dialog_route(cx)?;
    route::static_routing_without_federation(cx)?;
    route::split_domain_outbound(cx)?;
    route::local_domain_to_pool(cx)?;
    verify::no_relay(cx)?;
    access::apply_edge_switches(cx)?;
    verify::check_split_domain_info(cx)?;
    classify::check_blocked_list(cx)?;
    classify::mark_for_monitoring(cx);
    classify::classify_source(cx)?;
    verify::verify_source(cx)?;
    verify::filter_method(cx)?;
    verify::apply_verification_level(cx)?;
    access::user_may_leave(cx)?;
    classify::classify_target(cx)?;
    access::apply_access_policy(cx)?;
    access::apply_contact_list(cx)?;
    ControlFlow::Continue(route::choose_route(cx))
}

/// One step's result: continue, or the decision.
type Step = ControlFlow<Decision>;

/// Max-Forwards and loop checks (RFC 3261 §16.3 steps 3 and 4).
fn check_hops(cx: &mut Ctx<'_>) -> Step {
    let req = cx.req;
    if req.max_forwards == Some(0) && !(req.addressed_to_edge && req.is("OPTIONS")) {
        return cx.reject("hops", Rejection::too_many_hops());
    }
    if req.looped {
        return cx.reject("hops", Rejection::loop_detected());
    }
    ControlFlow::Continue(())
}

/// OPTIONS addressed to the edge itself is answered here (keep-alives, health checks).
fn answer_options(cx: &mut Ctx<'_>) -> Step {
    let req = cx.req;
    if req.addressed_to_edge && req.is("OPTIONS") && !req.has_remaining_route {
        cx.decided("answer-options", "OPTIONS to the edge itself");
        return ControlFlow::Break(Decision::AnswerOptions);
    }
    ControlFlow::Continue(())
}

/// In-dialog requests follow the route set the edge recognised. From inside back inside or
/// toward one of our remote users, and without federation sections, the route is the whole
/// decision; a request from or to a federated peer goes on through the source checks,
/// limits and media policy, and the route only replaces the choice of next hop.
fn follow_dialog_route(cx: &mut Ctx<'_>) -> Step {
    let Some(exit) = cx.req.routed_exit else {
        return ControlFlow::Continue(());
    };
    if cx.inbound() && exit == Interface::External {
        // A sealed route set always leads inside: anything else is a relay attempt.
        return cx.reject("dialog-route", Rejection::relay_denied(cx.req.to_host));
    }
    // A user of ours homed at a hosting provider is no remote user: the split-domain step
    // below marks what goes to its provider.
    let toward_remote_user = !cx.inbound()
        && cx.snap.is_local_domain(cx.req.to_host)
        && cx
            .snap
            .federation
            .home_of(cx.req.to_user.unwrap_or(""), cx.req.to_host)
            .is_none();
    let whole_decision =
        !cx.snap.federation.enabled() || (!cx.inbound() && (exit == Interface::Internal || toward_remote_user));
    if !whole_decision {
        cx.pass(
            "dialog-route",
            format_args!("in-dialog, leaves through the {exit} interface; checks go on"),
        );
        return ControlFlow::Continue(());
    }
    cx.decided(
        "dialog-route",
        format_args!("in-dialog, leaves through the {exit} interface"),
    );
    let response_trust = (toward_remote_user && exit == Interface::External).then(|| std::sync::Arc::new(ResponseTrust {
        trust: MessageTrust {
            source_type: crate::sip::ms_headers::SourceType::InternetUser,
            ep_fqdn: cx.snap.external.fqdn.clone(),
            verified: None,
            network: None,
            remote_fqdn: None,
        },
        copy_verified: false,
    }));
    ControlFlow::Break(Decision::Forward(Forward {
        exit,
        route: Route::RequestTarget,
        rule: "dialog-route",
        source: SourceClass::Unclassified,
        target: None,
        insert_trust: None,
        strip: Strip::crossing(cx.peer.interface, exit),
        limit: None,
        response_trust,
        split_domain: false,
    }))
}

// === impl Ctx ===

/// The per-request context the steps share: inputs, what earlier steps found, the trail.
pub(crate) struct Ctx<'a> {
    pub req: &'a RequestFacts<'a>,
    pub peer: &'a Peer,
    pub snap: &'a Snapshot,
    pub dns: &'a DnsFacts,
    /// The checks so far; `None` when nobody will read them (the proxy's hot path).
    pub trail: Option<Vec<Check>>,
    /// The DNS question a step needed but `dns` did not answer.
    pub dns_wanted: Option<DnsQuestion>,
    pub source: SourceClass,
    pub target: Option<TargetClass>,
    /// Inbound: the `ms-source-verified-user` value to insert.
    pub verified: Option<Verified>,
    /// Inbound: the peer FQDN to report as `ms-remote-fqdn`.
    pub remote_fqdn: Option<String>,
}

impl<'a> Ctx<'a> {
    fn new(
        req: &'a RequestFacts<'a>,
        peer: &'a Peer,
        snap: &'a Snapshot,
        dns: &'a DnsFacts,
        keep_trail: bool,
    ) -> Self {
        Ctx {
            req,
            peer,
            snap,
            dns,
            trail: keep_trail.then(|| Vec::with_capacity(16)),
            dns_wanted: None,
            source: SourceClass::Unclassified,
            target: None,
            verified: None,
            remote_fqdn: None,
        }
    }

    /// The request arrived on the external interface.
    pub fn inbound(&self) -> bool {
        self.peer.interface == Interface::External
    }

    /// The domain on the other side of the edge: From (inbound) or the target (outbound).
    pub fn partner_domain(&self) -> &'a str {
        if self.inbound() {
            self.req.from_host
        } else {
            self.target_host()
        }
    }

    /// The allowed domain with MarkForMonitoring this request's partner domain is, if any.
    pub fn monitored_domain(&self) -> Option<&'a str> {
        let fed: &'a crate::config::Federation = &self.snap.federation;
        let crosses = self.inbound() || !self.snap.is_local_domain(self.target_host());
        if !fed.enabled() || !crosses {
            return None;
        }
        fed.allowed(self.partner_domain())
            .filter(|a| a.mark_for_monitoring)
            .map(|a| a.domain.as_str())
    }

    /// Whether the request follows a route set the edge recognised (it is in a dialog).
    pub fn in_dialog_route(&self) -> bool {
        self.req.routed_exit.is_some()
    }

    /// A BYE or ACK inside a dialog: it ends or confirms what was already allowed, so a
    /// list or policy changed since is not applied to it (the call would hang otherwise).
    pub fn ends_or_confirms_dialog(&self) -> bool {
        self.in_dialog_route() && (self.req.is("BYE") || self.req.is("ACK"))
    }

    /// The user the request is for: To inside a dialog (the Request-URI is then the remote
    /// party's Contact), the Request-URI otherwise.
    pub fn target_user(&self) -> Option<&'a str> {
        if self.in_dialog_route() {
            self.req.to_user
        } else {
            self.req.uri_user
        }
    }

    /// The host of [`target_user`](Self::target_user)'s address.
    pub fn target_host(&self) -> &'a str {
        if self.in_dialog_route() {
            self.req.to_host
        } else {
            self.req.uri_host
        }
    }

    /// The peer's proven name for diagnostics (first certificate name).
    pub fn peer_name(&self) -> &str {
        self.peer
            .identity
            .names()
            .first()
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Notes a check that let the request continue. The note is formatted only when the
    /// trail is kept: callers pass `format_args!`, which allocates nothing.
    pub fn pass(&mut self, name: &'static str, note: impl std::fmt::Display) {
        if let Some(trail) = &mut self.trail {
            trail.push(Check {
                name,
                outcome: Outcome::Passed(note.to_string()),
            });
        }
    }

    /// Notes the check that decided.
    pub fn decided(&mut self, name: &'static str, note: impl std::fmt::Display) {
        if let Some(trail) = &mut self.trail {
            trail.push(Check {
                name,
                outcome: Outcome::Decided(note.to_string()),
            });
        }
    }

    /// Records the refusal in the trail and stops the pipeline.
    pub fn reject(&mut self, name: &'static str, r: Rejection) -> Step {
        self.decided(
            name,
            format_args!("{} {} ({})", r.status, r.reason, r.rule),
        );
        ControlFlow::Break(Decision::Reject(r))
    }

    /// The SRV answer for `domain`; a missing one is recorded as the question to ask.
    pub fn srv(&mut self, domain: &str) -> Result<&'a [SrvTarget], Rejection> {
        let dns: &'a DnsFacts = self.dns;
        match dns.srv(domain) {
            Some(SrvAnswer::Records(r)) if !r.is_empty() => Ok(r),
            Some(SrvAnswer::Records(_)) | Some(SrvAnswer::NoRecords) => Err(
                Rejection::srv_not_found(&self.snap.federation.codes, domain, None),
            ),
            Some(SrvAnswer::Failed(e)) => Err(Rejection::srv_not_found(
                &self.snap.federation.codes,
                domain,
                Some(e),
            )),
            None => {
                self.dns_wanted = Some(DnsQuestion::FederationSrv {
                    domain: domain.to_ascii_lowercase(),
                });
                Err(Rejection::srv_not_found(
                    &self.snap.federation.codes,
                    domain,
                    Some("not resolved"),
                ))
            }
        }
    }

    /// Adds the edge's `source` to federation diagnostics (the proxy drops it outward).
    fn finish(&self, mut d: Decision) -> Decision {
        if let Decision::Reject(r) = &mut d {
            if self.snap.federation.enabled() {
                if let Some(diag) = r.diagnostics.take() {
                    let diag = if diag.get("source").is_none() {
                        diag.param("source", self.snap.external.fqdn.as_str())
                    } else {
                        diag
                    };
                    r.diagnostics = Some(diag);
                }
            }
        }
        d
    }
}
