//! `Rejection`: every reason the edge refuses a request, with its status and diagnostics.
//!
//! `proxy::respond` is the only code that turns a `Rejection` into a SIP response. It puts
//! the diagnostics in `ms-diagnostics` toward the internal interface and in
//! `ms-diagnostics-public` (`Diagnostics::public_value`: code, reason and only the
//! parameters in `PUBLIC_PARAMS`) toward the external one.
//!
//! Every refusal is a variant of [`Rule`], with its status and code; README's "Refusals"
//! table lists them all with what each means, and a test below keeps the two in step.
//! Codes the product does not document are configurable in `[diagnostics]` (`config::Codes`).

use std::fmt::Write as _;

use crate::config::{Code, Codes};
use crate::peer::Interface;
use crate::policy::dns::SrvTarget;
use crate::sip::ms_headers::HeaderError;

/// Every refusal the edge can produce, one variant each. Closed on purpose: a new refusal
/// is a new variant here, a constructor on [`Rejection`] below, and a row in README's
/// refusal table (a test checks that the table and this type agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    MaxForwards,
    Loop,
    NoExternalRelay,
    ForeignFromOutbound,
    NoRoute,
    Overload,
    SourceOverload,
    ShuttingDown,
    CancelNoMatch,
    Cancelled,
    ClientTimeout,
    UriScheme,
    UnsupportedTransport,
    NoTargets,
    NoTarget,
    NoUdpOnInterface,
    SendFailed,
    DnsNoAddress,
    FederationDisabled,
    OutsideUsersDisabled,
    BlockedDomain,
    PartnerNotAllowed,
    SourceNotVerified,
    LocalDomainFromOutside,
    AnonymousPeer,
    UnmarkedSource,
    MethodNotFederated,
    UserFederationDenied,
    UserPublicCloudDenied,
    UserPublicCloudAvDenied,
    UserOutsideAccessDenied,
    AnonymousUsersDisabled,
    UnverifiedNotContact,
    ProviderDisabled,
    SrvNotFound,
    SrvNoMatch,
    TlsCertificateTrust,
    TlsNegotiation,
    NextHopUnreachable,
    NoOutboundTls,
    RateLimited,
    ContactsLimit,
    SuspiciousPartner,
    SplitDomainMismatch,
    RouteSetUnknownKey,
    RouteSetBadSeal,
    RouteSetMalformed,
    RouteSetOtherDialog,
}

impl Rule {
    /// Every rule, in README's order.
    pub const ALL: &'static [Rule] = &[
        Rule::MaxForwards,
        Rule::Loop,
        Rule::NoExternalRelay,
        Rule::ForeignFromOutbound,
        Rule::NoRoute,
        Rule::Overload,
        Rule::SourceOverload,
        Rule::ShuttingDown,
        Rule::CancelNoMatch,
        Rule::Cancelled,
        Rule::ClientTimeout,
        Rule::UriScheme,
        Rule::UnsupportedTransport,
        Rule::NoTargets,
        Rule::NoTarget,
        Rule::NoUdpOnInterface,
        Rule::SendFailed,
        Rule::DnsNoAddress,
        Rule::FederationDisabled,
        Rule::OutsideUsersDisabled,
        Rule::BlockedDomain,
        Rule::PartnerNotAllowed,
        Rule::SourceNotVerified,
        Rule::LocalDomainFromOutside,
        Rule::AnonymousPeer,
        Rule::UnmarkedSource,
        Rule::MethodNotFederated,
        Rule::UserFederationDenied,
        Rule::UserPublicCloudDenied,
        Rule::UserPublicCloudAvDenied,
        Rule::UserOutsideAccessDenied,
        Rule::AnonymousUsersDisabled,
        Rule::UnverifiedNotContact,
        Rule::ProviderDisabled,
        Rule::SrvNotFound,
        Rule::SrvNoMatch,
        Rule::TlsCertificateTrust,
        Rule::TlsNegotiation,
        Rule::NextHopUnreachable,
        Rule::NoOutboundTls,
        Rule::RateLimited,
        Rule::ContactsLimit,
        Rule::SuspiciousPartner,
        Rule::SplitDomainMismatch,
        Rule::RouteSetUnknownKey,
        Rule::RouteSetBadSeal,
        Rule::RouteSetMalformed,
        Rule::RouteSetOtherDialog,
    ];

    /// The name in logs, metrics (`rule="…"`), `/decisions` and README.
    pub fn name(self) -> &'static str {
        match self {
            Rule::MaxForwards => "max-forwards",
            Rule::Loop => "loop",
            Rule::NoExternalRelay => "no-external-relay",
            Rule::ForeignFromOutbound => "foreign-from-outbound",
            Rule::NoRoute => "no-route",
            Rule::Overload => "overload",
            Rule::SourceOverload => "source-overload",
            Rule::ShuttingDown => "shutting-down",
            Rule::CancelNoMatch => "cancel-no-match",
            Rule::Cancelled => "cancelled",
            Rule::ClientTimeout => "client-timeout",
            Rule::UriScheme => "uri-scheme",
            Rule::UnsupportedTransport => "unsupported-transport",
            Rule::NoTargets => "no-targets",
            Rule::NoTarget => "no-target",
            Rule::NoUdpOnInterface => "no-udp-on-interface",
            Rule::SendFailed => "send-failed",
            Rule::DnsNoAddress => "dns-no-address",
            Rule::FederationDisabled => "federation-disabled",
            Rule::OutsideUsersDisabled => "outside-users-disabled",
            Rule::BlockedDomain => "blocked-domain",
            Rule::PartnerNotAllowed => "partner-not-allowed",
            Rule::SourceNotVerified => "source-not-verified",
            Rule::LocalDomainFromOutside => "local-domain-from-outside",
            Rule::AnonymousPeer => "anonymous-peer",
            Rule::UnmarkedSource => "unmarked-source",
            Rule::MethodNotFederated => "method-not-federated",
            Rule::UserFederationDenied => "user-federation-denied",
            Rule::UserPublicCloudDenied => "user-public-cloud-denied",
            Rule::UserPublicCloudAvDenied => "user-public-cloud-av-denied",
            Rule::UserOutsideAccessDenied => "user-outside-access-denied",
            Rule::AnonymousUsersDisabled => "anonymous-users-disabled",
            Rule::UnverifiedNotContact => "unverified-not-contact",
            Rule::ProviderDisabled => "provider-disabled",
            Rule::SrvNotFound => "srv-not-found",
            Rule::SrvNoMatch => "srv-no-match",
            Rule::TlsCertificateTrust => "tls-certificate-trust",
            Rule::TlsNegotiation => "tls-negotiation",
            Rule::NextHopUnreachable => "next-hop-unreachable",
            Rule::NoOutboundTls => "no-outbound-tls",
            Rule::RateLimited => "rate-limited",
            Rule::ContactsLimit => "contacts-limit",
            Rule::SuspiciousPartner => "suspicious-partner",
            Rule::SplitDomainMismatch => "split-domain-mismatch",
            Rule::RouteSetUnknownKey => "route-set-unknown-key",
            Rule::RouteSetBadSeal => "route-set-bad-seal",
            Rule::RouteSetMalformed => "route-set-malformed",
            Rule::RouteSetOtherDialog => "route-set-other-dialog",
        }
    }

    /// The status and `ms-diagnostics` code with the default `[diagnostics]` (the ones
    /// `Codes` holds can be configured; the rest are fixed).
    pub fn default_status_and_code(self) -> (u16, Option<u32>) {
        let c = Codes::default();
        let configured = |code: Code| (code.status, Some(code.code));
        match self {
            Rule::MaxForwards => (483, None),
            Rule::Loop => (482, None),
            Rule::NoExternalRelay | Rule::ForeignFromOutbound => (403, Some(1000)),
            Rule::NoRoute => (404, Some(1001)),
            Rule::Overload
            | Rule::SourceOverload
            | Rule::ShuttingDown
            | Rule::UnsupportedTransport
            | Rule::NoTarget
            | Rule::NoUdpOnInterface
            | Rule::SendFailed => (503, None),
            Rule::CancelNoMatch => (481, None),
            Rule::Cancelled => (487, None),
            Rule::ClientTimeout => (408, None),
            Rule::UriScheme => (416, None),
            Rule::NoTargets => (504, None),
            Rule::DnsNoAddress => (504, Some(1008)),
            Rule::FederationDisabled => configured(c.federation_disabled),
            Rule::OutsideUsersDisabled => configured(c.outside_users_disabled),
            Rule::BlockedDomain => configured(c.blocked_domain),
            Rule::PartnerNotAllowed => configured(c.partner_not_allowed),
            Rule::SourceNotVerified | Rule::LocalDomainFromOutside | Rule::AnonymousPeer => {
                configured(c.source_not_verified)
            }
            Rule::UnmarkedSource => configured(c.unmarked_source),
            Rule::MethodNotFederated => configured(c.method_not_allowed),
            Rule::UserFederationDenied => configured(c.user_federation_denied),
            Rule::UserPublicCloudDenied => configured(c.user_public_cloud_denied),
            Rule::UserPublicCloudAvDenied => configured(c.user_public_cloud_av_denied),
            Rule::UserOutsideAccessDenied => configured(c.user_outside_access_denied),
            Rule::AnonymousUsersDisabled => configured(c.anonymous_users_disabled),
            Rule::UnverifiedNotContact => configured(c.unverified_not_contact),
            Rule::ProviderDisabled => configured(c.provider_disabled),
            Rule::SrvNotFound => configured(c.srv_not_found),
            Rule::SrvNoMatch => (504, Some(1009)),
            Rule::TlsCertificateTrust => (504, Some(1010)),
            Rule::TlsNegotiation => (504, Some(1047)),
            Rule::NextHopUnreachable => (504, Some(NEXT_HOP_CODE)),
            Rule::NoOutboundTls => (503, Some(1047)),
            Rule::RateLimited => configured(c.rate_limited),
            Rule::ContactsLimit => configured(c.contacts_limit),
            Rule::SuspiciousPartner => configured(c.suspicious_partner),
            Rule::SplitDomainMismatch => (403, Some(1017)),
            Rule::RouteSetUnknownKey
            | Rule::RouteSetBadSeal
            | Rule::RouteSetMalformed
            | Rule::RouteSetOtherDialog => (403, Some(ROUTE_SET_CODE)),
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<&str> for Rule {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

/// The `ms-diagnostics` code of a connection that could not be made to the pool, or to a
/// peer over plain TCP: the product's "Failed to connect to a peer server" (its number
/// is remembered from Lync logs, not documented: [inferred]).
pub const NEXT_HOP_CODE: u32 = 1046;

/// The `ms-diagnostics` code of a refused hidden route set (a sipedge code: the product's
/// own route-signature failures are not documented).
pub const ROUTE_SET_CODE: u32 = 1912;

/// A refusal as it goes on the wire: status, reason phrase, optional `ms-diagnostics`,
/// optional Retry-After, and the [`Rule`] it comes from. Built only by the constructors
/// below; `proxy::respond` turns it into the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
    pub diagnostics: Option<Diagnostics>,
    /// Seconds for a Retry-After header (503 under load or rate limits).
    pub retry_after: Option<u32>,
    /// The rule that fired, for the one log line and metrics.
    pub rule: Rule,
}

/// An `ms-diagnostics` value: `<code>;reason="<text>"[;name="value"]*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    pub code: u32,
    pub reason: String,
    pub params: Vec<(String, String)>,
}

impl Diagnostics {
    pub fn new(code: u32, reason: impl Into<String>) -> Self {
        Diagnostics {
            code,
            reason: reason.into(),
            params: Vec::new(),
        }
    }

    pub fn param(mut self, name: &str, value: impl Into<String>) -> Self {
        self.params.push((name.to_string(), value.into()));
        self
    }

    /// The header value, e.g. `1008;reason="Unable to resolve DNS SRV record";domain="x"`.
    pub fn header_value(&self) -> String {
        let mut s = format!("{};reason=\"{}\"", self.code, escape(&self.reason));
        for (k, v) in &self.params {
            let _ = write!(s, ";{k}=\"{}\"", escape(v));
        }
        s
    }

    /// The value for `ms-diagnostics-public`: the code, the reason and only the
    /// parameters in `PUBLIC_PARAMS`.
    pub fn public_value(&self) -> String {
        let mut public = self.clone();
        public
            .params
            .retain(|(k, _)| PUBLIC_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(k)));
        public.header_value()
    }

    /// A parameter by name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The parameters a refusal may show outside: each echoes what the sender itself wrote (the
/// domain it named or came from, its method) or names a fixed error kind, never a local user,
/// policy, server name or address.
pub const PUBLIC_PARAMS: &[&str] = &[
    "domain",
    "method",
    "ErrorType",
    "HRESULT",
    "WinsockFailureCode",
    "summary",
];

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Rejection {
    /// The refusal of `rule` with its fixed status and no diagnostics yet.
    fn new(rule: Rule) -> Self {
        let (status, _) = rule.default_status_and_code();
        Rejection {
            status,
            reason: reason_phrase(status),
            diagnostics: None,
            retry_after: None,
            rule,
        }
    }

    fn with_diagnostics(mut self, d: Diagnostics) -> Self {
        self.diagnostics = Some(d);
        self
    }

    fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Max-Forwards reached 0 (RFC 3261 §16.3 step 3).
    pub fn too_many_hops() -> Self {
        Rejection::new(Rule::MaxForwards)
    }

    /// The request already passed through this edge (RFC 3261 §16.3 step 4).
    pub fn loop_detected() -> Self {
        Rejection::new(Rule::Loop)
    }

    /// A request from outside for a domain that is not ours: the edge is no open relay.
    pub fn relay_denied(domain: &str) -> Self {
        Rejection::relay(Rule::NoExternalRelay, domain)
    }

    /// A request from inside for outside whose From is not one of our domains.
    pub fn foreign_from_outbound(domain: &str) -> Self {
        Rejection::relay(Rule::ForeignFromOutbound, domain)
    }

    fn relay(rule: Rule, domain: &str) -> Self {
        Rejection::new(rule).with_diagnostics(
            Diagnostics::new(
                1000,
                "Relaying from the external interface to a non-local domain is not allowed",
            )
            .param("domain", domain),
        )
    }

    /// No route for a non-local domain.
    pub fn no_route(domain: &str) -> Self {
        Rejection::new(Rule::NoRoute).with_diagnostics(
            Diagnostics::new(1001, "No route for the domain").param("domain", domain),
        )
    }

    /// The transaction table is full.
    pub fn overloaded() -> Self {
        Rejection::new(Rule::Overload).with_retry_after(5)
    }

    /// A refusal of one of the proxy's own rules that carry no diagnostics (source
    /// overload, draining, CANCEL matching, timeouts, next hops the edge cannot use); the
    /// 503s ask the sender to come back in 5 s.
    pub fn plain(rule: Rule) -> Self {
        let r = Rejection::new(rule);
        match rule {
            Rule::SourceOverload | Rule::ShuttingDown | Rule::SendFailed => r.with_retry_after(5),
            _ => r,
        }
    }

    /// The next hop's host name has no address.
    pub fn dns_no_address(host: &str) -> Self {
        Rejection::new(Rule::DnsNoAddress).with_diagnostics(
            Diagnostics::new(1008, "Unable to resolve DNS record").param("fqdn", host),
        )
    }

    /// A Route entry claiming to be the edge's sealed one that does not open or belongs to
    /// another dialog; `why` says which (`proxy::topology::RouteSetError`).
    pub fn route_set(rule: Rule, why: &str) -> Self {
        Rejection::new(rule).with_diagnostics(Diagnostics::new(ROUTE_SET_CODE, why))
    }

    // === federation (access-edge.md §b.3–b.5) ===

    /// A refusal whose status and code come from `[diagnostics]`.
    fn configured(code: Code, text: &str, rule: Rule) -> Self {
        let mut r = Rejection::new(rule);
        r.status = code.status;
        r.reason = reason_phrase(code.status);
        r.with_diagnostics(Diagnostics::new(code.code, text))
    }

    /// AllowFederatedUsers is off.
    pub fn federation_disabled(c: &Codes) -> Self {
        Rejection::configured(
            c.federation_disabled,
            "Federation is disabled on this edge (AllowFederatedUsers)",
            Rule::FederationDisabled,
        )
    }

    /// AllowOutsideUsers is off and a remote user's request arrived.
    pub fn outside_users_disabled(c: &Codes) -> Self {
        Rejection::configured(
            c.outside_users_disabled,
            "Remote user access is disabled on this edge (AllowOutsideUsers)",
            Rule::OutsideUsersDisabled,
        )
    }

    /// The partner domain is on the blocked list (both directions).
    pub fn blocked_domain(c: &Codes, domain: &str) -> Self {
        with_param(
            Rejection::configured(
                c.blocked_domain,
                "The domain is on the blocked list",
                Rule::BlockedDomain,
            ),
            "domain",
            domain,
        )
    }

    /// The domain is neither allowed nor a provider, and partner discovery is off.
    pub fn partner_not_allowed(c: &Codes, domain: &str) -> Self {
        with_param(
            Rejection::configured(
                c.partner_not_allowed,
                "The domain is not an allowed partner and partner discovery is off",
                Rule::PartnerNotAllowed,
            ),
            "domain",
            domain,
        )
    }

    /// The authenticated peer does not speak for the From domain (certificate names vs
    /// the allowed ProxyFqdn, the From domain's SRV targets, the provider's ProxyFqdn).
    pub fn source_not_verified(c: &Codes, domain: &str, peer: &str) -> Self {
        Rejection::not_verified(c, domain, peer, Rule::SourceNotVerified)
    }

    fn not_verified(c: &Codes, domain: &str, peer: &str, rule: Rule) -> Self {
        Rejection::configured(
            c.source_not_verified,
            "Certificate trust with another server could not be established",
            rule,
        )
        .add_params(&[
            (
                "ErrorType",
                "The peer certificate does not contain a matching FQDN",
            ),
            ("domain", domain),
            ("PeerServer", peer),
        ])
    }

    /// A federated peer claims one of our own domains in From (internal → internal through
    /// the external interface).
    pub fn local_domain_from_outside(c: &Codes, domain: &str, peer: &str) -> Self {
        Rejection::not_verified(c, domain, peer, Rule::LocalDomainFromOutside)
    }

    /// An external peer that proved no name claims a foreign domain.
    pub fn anonymous_peer(c: &Codes, domain: &str) -> Self {
        Rejection::not_verified(c, domain, "", Rule::AnonymousPeer)
    }

    /// UseSourceVerification, and the peer sent no verification marking (`flaw` is `None`)
    /// or one that lacks a field or holds a value out of its enumeration.
    pub fn unmarked_source(c: &Codes, peer: &str, flaw: Option<&HeaderError>) -> Self {
        let text = match flaw {
            None => "The source did not mark the message verified or unverified (UseSourceVerification)".to_string(),
            Some(HeaderError::Missing(field)) => {
                format!("The source's marking lacks {field} (UseSourceVerification)")
            }
            Some(other) => format!("The source's marking is invalid: {other} (UseSourceVerification)"),
        };
        with_param(
            Rejection::configured(c.unmarked_source, &text, Rule::UnmarkedSource),
            "PeerServer",
            peer,
        )
    }

    /// The local user's external access policy denies federation.
    pub fn user_federation_denied(c: &Codes, user: &str, policy: &str) -> Self {
        Rejection::configured(
            c.user_federation_denied,
            "The user's external access policy does not allow federation",
            Rule::UserFederationDenied,
        )
        .add_params(&[("user", user), ("policy", policy)])
    }

    /// The local user's external access policy denies public IM providers.
    pub fn user_public_cloud_denied(c: &Codes, user: &str, policy: &str) -> Self {
        Rejection::configured(
            c.user_public_cloud_denied,
            "The user's external access policy does not allow public cloud access",
            Rule::UserPublicCloudDenied,
        )
        .add_params(&[("user", user), ("policy", policy)])
    }

    /// The local user's policy denies audio/video with public IM providers.
    pub fn user_public_cloud_av_denied(c: &Codes, user: &str, policy: &str) -> Self {
        Rejection::configured(
            c.user_public_cloud_av_denied,
            "The user's external access policy does not allow public cloud audio/video",
            Rule::UserPublicCloudAvDenied,
        )
        .add_params(&[("user", user), ("policy", policy)])
    }

    /// A remote user whose external access policy has EnableOutsideAccess off (the pool
    /// refuses such a user's sign-in from outside; access-edge.md §b.1).
    pub fn user_outside_access_denied(c: &Codes, user: &str, policy: &str) -> Self {
        Rejection::configured(
            c.user_outside_access_denied,
            "The user's external access policy does not allow remote access (EnableOutsideAccess)",
            Rule::UserOutsideAccessDenied,
        )
        .add_params(&[("user", user), ("policy", policy)])
    }

    /// An anonymous user joining a meeting while AllowAnonymousUsers is off.
    pub fn anonymous_users_disabled(c: &Codes, domain: &str) -> Self {
        with_param(
            Rejection::configured(
                c.anonymous_users_disabled,
                "Anonymous users may not join meetings through this edge (AllowAnonymousUsers)",
                Rule::AnonymousUsersDisabled,
            ),
            "domain",
            domain,
        )
    }

    /// An unverified message for a user whose contact list does not hold the sender
    /// (AlwaysUnverifiable, or an unverified marking; access-edge.md §b.3 step 10).
    pub fn unverified_not_contact(c: &Codes, sender: &str, user: &str) -> Self {
        Rejection::configured(
            c.unverified_not_contact,
            "The sender is unverified and not on the recipient's contact list",
            Rule::UnverifiedNotContact,
        )
        .add_params(&[("sender", sender), ("user", user)])
    }

    /// The domain's SRV points at a provider that is disabled.
    pub fn provider_disabled(c: &Codes, identity: &str, domain: &str) -> Self {
        Rejection::configured(
            c.provider_disabled,
            "The provider is disabled",
            Rule::ProviderDisabled,
        )
        .add_params(&[("provider", identity), ("domain", domain)])
    }

    /// The method may not cross federation (e.g. REGISTER).
    pub fn method_not_federated(c: &Codes, method: &str) -> Self {
        with_param(
            Rejection::configured(
                c.method_not_allowed,
                "Cannot route this type of SIP request to or from federated partners",
                Rule::MethodNotFederated,
            ),
            "method",
            method,
        )
    }

    /// No `_sipfederationtls._tcp` SRV record (or the lookup failed).
    pub fn srv_not_found(c: &Codes, domain: &str, error: Option<&str>) -> Self {
        let r = with_param(
            Rejection::configured(
                c.srv_not_found,
                "Unable to resolve DNS SRV record",
                Rule::SrvNotFound,
            ),
            "domain",
            domain,
        );
        match error {
            Some(e) => with_param(r, "error", e),
            None => r,
        }
    }

    /// SRV records exist but no target is `<label>.<domain>` (nor an enabled provider).
    pub fn srv_no_match(domain: &str, targets: &[SrvTarget]) -> Self {
        let mut d = Diagnostics::new(1009, "No match for domain in DNS SRV results")
            .param("domain", domain);
        for (i, t) in targets.iter().enumerate() {
            d = d.param(
                &format!("fqdn{}", i + 1),
                format!("{}:{}", t.target, t.port),
            );
        }
        Rejection::new(Rule::SrvNoMatch).with_diagnostics(d)
    }

    /// The partner's certificate does not verify for the name the edge connected to
    /// (proxy, outbound TLS): `error_type` and `hresult` as the product words them.
    pub fn tls_certificate_trust(tls_target: &str, error_type: &str, hresult: &str) -> Self {
        Rejection::new(Rule::TlsCertificateTrust).with_diagnostics(
            Diagnostics::new(
                1010,
                "Certificate trust with another server could not be established",
            )
            .param("ErrorType", error_type)
            .param("tls-target", tls_target)
            .param("PeerServer", tls_target)
            .param("HRESULT", hresult),
        )
    }

    /// The TCP connection or TLS handshake with the partner failed (proxy, outbound TLS).
    pub fn tls_negotiation(peer: &str, winsock_code: &str) -> Self {
        Rejection::new(Rule::TlsNegotiation).with_diagnostics(
            Diagnostics::new(
                1047,
                "Failed to complete TLS negotiation with a federated peer server",
            )
            .param("WinsockFailureCode", winsock_code)
            .param("PeerServer", peer),
        )
    }

    /// The TCP connection (or a TLS handshake) with the pool, or with a peer over plain
    /// TCP, failed: says which side, so nobody goes looking at federation certificates.
    pub fn next_hop_unreachable(peer: &str, exit: Interface, winsock_code: &str) -> Self {
        let reason = match exit {
            Interface::Internal => "Failed to connect to the internal next hop (the Front End pool)",
            Interface::External => "Failed to connect to a peer server",
        };
        Rejection::new(Rule::NextHopUnreachable).with_diagnostics(
            Diagnostics::new(NEXT_HOP_CODE, reason)
                .param("WinsockFailureCode", winsock_code)
                .param("PeerServer", peer),
        )
    }

    /// The exit interface has no TLS client configuration, or the name is not one TLS can
    /// verify.
    pub fn no_outbound_tls(peer: &str) -> Self {
        Rejection::new(Rule::NoOutboundTls).with_diagnostics(
            Diagnostics::new(
                1047,
                "Failed to complete TLS negotiation with a federated peer server",
            )
            .param("PeerServer", peer),
        )
    }

    /// A discovered partner is over DiscoveredPartnerStandardRate.
    pub fn rate_limited(c: &Codes, partner: &str) -> Self {
        with_param(
            Rejection::configured(
                c.rate_limited,
                "Discovered partner exceeded its message rate (DiscoveredPartnerStandardRate)",
                Rule::RateLimited,
            ),
            "domain",
            partner,
        )
        .with_retry_after(c.rate_limited_retry_after_s)
    }

    /// A discovered partner addressed more than MaxContactsPerDiscoveredPartner local
    /// URIs and is on the watch list.
    pub fn contacts_limit(c: &Codes, partner: &str) -> Self {
        with_param(
            Rejection::configured(
                c.contacts_limit,
                "Discovered partner is on the watch list (MaxContactsPerDiscoveredPartner)",
                Rule::ContactsLimit,
            ),
            "domain",
            partner,
        )
        .with_retry_after(c.contacts_limit_retry_after_s)
    }

    /// A discovered partner whose requests mostly fail inside is suspicious, and over the
    /// 1 msg/s it is throttled to.
    pub fn suspicious_partner(c: &Codes, partner: &str) -> Self {
        with_param(
            Rejection::configured(
                c.suspicious_partner,
                "Discovered partner is suspicious (most of its requests fail) and throttled to 1 message per second",
                Rule::SuspiciousPartner,
            ),
            "domain",
            partner,
        )
        .with_retry_after(c.suspicious_partner_retry_after_s)
    }

    /// The request's `ms-split-domain-info` does not fit its From and To domains (a
    /// SplitIntra marking between domains that do not both belong to our split domain).
    pub fn split_domain_mismatch(from_domain: &str, to_domain: &str, info: &str) -> Self {
        Rejection::new(Rule::SplitDomainMismatch).with_diagnostics(
            Diagnostics::new(1017, "Cannot route From and To domains in this combination")
                .param(
                    "summary",
                    "Domain type analysis indicates that the ms-split-domain-info header in the message is the wrong type",
                )
                .param("domain", from_domain)
                .param("ToDomain", to_domain)
                .param("ms-split-domain-info", info),
        )
    }

    /// The ms-diagnostics code, if any.
    pub fn code(&self) -> Option<u32> {
        self.diagnostics.as_ref().map(|d| d.code)
    }

    fn add_params(mut self, params: &[(&str, &str)]) -> Self {
        for (k, v) in params {
            self = with_param(self, k, v);
        }
        self
    }
}

fn with_param(mut r: Rejection, name: &str, value: &str) -> Rejection {
    if let Some(d) = r.diagnostics.take() {
        r.diagnostics = Some(d.param(name, value));
    }
    r
}

/// The RFC 3261 reason phrase of a status the policy uses.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Unsupported URI Scheme",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        603 => "Decline",
        606 => "Not Acceptable",
        _ => "Request Refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults() {
        let c = Codes::default();
        let cases: &[(Rejection, u16, &str, u32)] = &[
            (
                Rejection::srv_not_found(&c, "nowhere.test", None),
                504,
                "Server Time-out",
                1008,
            ),
            (
                Rejection::srv_no_match("badsrv.test", &[]),
                504,
                "Server Time-out",
                1009,
            ),
            (
                Rejection::tls_certificate_trust("a", "b", "c"),
                504,
                "Server Time-out",
                1010,
            ),
            (
                Rejection::tls_negotiation("x", "10054(WSAECONNRESET)"),
                504,
                "Server Time-out",
                1047,
            ),
            (
                Rejection::method_not_federated(&c, "REGISTER"),
                403,
                "Forbidden",
                1027,
            ),
            (
                Rejection::source_not_verified(&c, "a", "b"),
                403,
                "Forbidden",
                1010,
            ),
            (Rejection::federation_disabled(&c), 403, "Forbidden", 1901),
            (
                Rejection::blocked_domain(&c, "adatum.test"),
                403,
                "Forbidden",
                1903,
            ),
            (
                Rejection::rate_limited(&c, "x"),
                503,
                "Service Unavailable",
                1910,
            ),
        ];
        for (r, status, phrase, code) in cases {
            assert_eq!(
                (r.status, r.reason, r.code()),
                (*status, *phrase, Some(*code)),
                "{}",
                r.rule
            );
        }
        assert_eq!(Rejection::rate_limited(&c, "x").retry_after, Some(1));
    }

    #[test]
    fn srv_no_match_lists_targets() {
        let r = Rejection::srv_no_match(
            "badsrv.test",
            &[SrvTarget::new(0, 0, 5061, "sip.elsewhere.test")],
        );
        assert_eq!(
            r.diagnostics.unwrap().header_value(),
            "1009;reason=\"No match for domain in DNS SRV results\";domain=\"badsrv.test\";fqdn1=\"sip.elsewhere.test:5061\""
        );
    }

    #[test]
    fn no_refusal_names_an_internal_user_policy_server_or_address_in_its_public_form() {
        let c = Codes::default();
        // Internal-looking values everywhere a refusal takes a name; `domain` and `method`
        // get what a sender writes, since those are the parameters kept outside.
        let (user, policy, fqdn, addr) = (
            "carol@contoso.test",
            "tag:NoFederation",
            "pool.contoso.test",
            "10.1.2.3",
        );
        let internal = [user, policy, fqdn, addr, "carol", "NoFederation", "pool.contoso"];
        let target = SrvTarget::new(0, 0, 5061, fqdn);
        let flaw = HeaderError::Missing("ms-ep-fqdn");
        let refusals: Vec<Rejection> = Rule::ALL
            .iter()
            .map(|&rule| example(rule, &c, (user, policy, fqdn, addr)))
            .chain([
                Rejection::unmarked_source(&c, addr, Some(&flaw)),
                Rejection::srv_no_match("badsrv.test", std::slice::from_ref(&target)),
            ])
            .collect();
        for r in refusals {
            let Some(d) = &r.diagnostics else { continue };
            let public = d.public_value().to_ascii_lowercase();
            for name in internal {
                assert!(
                    !public.contains(&name.to_ascii_lowercase()),
                    "{}: {name} in {public}",
                    r.rule
                );
            }
            assert!(!public.contains("lynconline"), "{}: {public}", r.rule);
        }
    }

    #[test]
    fn public_value_drops_source() {
        let d = Diagnostics::new(1008, "Unable to resolve DNS SRV record")
            .param("domain", "x.test")
            .param("source", "accessedge.contoso.test");
        assert_eq!(
            d.public_value(),
            "1008;reason=\"Unable to resolve DNS SRV record\";domain=\"x.test\""
        );
    }

    /// One refusal of `rule`, with internal-looking values wherever a constructor takes
    /// one. The match is exhaustive: a new rule does not compile until it has an example.
    fn example(rule: Rule, c: &Codes, (user, policy, fqdn, addr): (&str, &str, &str, &str)) -> Rejection {
        match rule {
            Rule::MaxForwards => Rejection::too_many_hops(),
            Rule::Loop => Rejection::loop_detected(),
            Rule::NoExternalRelay => Rejection::relay_denied("northwind.test"),
            Rule::ForeignFromOutbound => Rejection::foreign_from_outbound("northwind.test"),
            Rule::NoRoute => Rejection::no_route("northwind.test"),
            Rule::Overload => Rejection::overloaded(),
            Rule::SourceOverload => Rejection::plain(Rule::SourceOverload),
            Rule::ShuttingDown => Rejection::plain(Rule::ShuttingDown),
            Rule::CancelNoMatch => Rejection::plain(Rule::CancelNoMatch),
            Rule::Cancelled => Rejection::plain(Rule::Cancelled),
            Rule::ClientTimeout => Rejection::plain(Rule::ClientTimeout),
            Rule::UriScheme => Rejection::plain(Rule::UriScheme),
            Rule::UnsupportedTransport => Rejection::plain(Rule::UnsupportedTransport),
            Rule::NoTargets => Rejection::plain(Rule::NoTargets),
            Rule::NoTarget => Rejection::plain(Rule::NoTarget),
            Rule::NoUdpOnInterface => Rejection::plain(Rule::NoUdpOnInterface),
            Rule::SendFailed => Rejection::plain(Rule::SendFailed),
            Rule::DnsNoAddress => Rejection::dns_no_address(fqdn),
            Rule::FederationDisabled => Rejection::federation_disabled(c),
            Rule::OutsideUsersDisabled => Rejection::outside_users_disabled(c),
            Rule::BlockedDomain => Rejection::blocked_domain(c, "adatum.test"),
            Rule::PartnerNotAllowed => Rejection::partner_not_allowed(c, "northwind.test"),
            Rule::SourceNotVerified => Rejection::source_not_verified(c, "fabrikam.test", fqdn),
            Rule::LocalDomainFromOutside => {
                Rejection::local_domain_from_outside(c, "contoso.test", addr)
            }
            Rule::AnonymousPeer => Rejection::anonymous_peer(c, "fabrikam.test"),
            Rule::UnmarkedSource => Rejection::unmarked_source(c, fqdn, None),
            Rule::MethodNotFederated => Rejection::method_not_federated(c, "REGISTER"),
            Rule::UserFederationDenied => Rejection::user_federation_denied(c, user, policy),
            Rule::UserPublicCloudDenied => Rejection::user_public_cloud_denied(c, user, policy),
            Rule::UserPublicCloudAvDenied => {
                Rejection::user_public_cloud_av_denied(c, user, policy)
            }
            Rule::UserOutsideAccessDenied => Rejection::user_outside_access_denied(c, user, policy),
            Rule::AnonymousUsersDisabled => Rejection::anonymous_users_disabled(c, "anonymous.invalid"),
            Rule::UnverifiedNotContact => {
                Rejection::unverified_not_contact(c, "dave@northwind.test", user)
            }
            Rule::ProviderDisabled => Rejection::provider_disabled(c, "LyncOnline", "tailspin.test"),
            Rule::SrvNotFound => {
                Rejection::srv_not_found(c, "nowhere.test", Some(&format!("no answer from {addr}:53")))
            }
            Rule::SrvNoMatch => Rejection::srv_no_match("badsrv.test", &[]),
            Rule::TlsCertificateTrust => Rejection::tls_certificate_trust(
                fqdn,
                "The peer certificate does not contain a matching FQDN",
                "0x80090322(SEC_E_WRONG_PRINCIPAL)",
            ),
            Rule::TlsNegotiation => Rejection::tls_negotiation(addr, "10054(WSAECONNRESET)"),
            Rule::NextHopUnreachable => {
                Rejection::next_hop_unreachable(addr, Interface::Internal, "10061(WSAECONNREFUSED)")
            }
            Rule::NoOutboundTls => Rejection::no_outbound_tls(fqdn),
            Rule::RateLimited => Rejection::rate_limited(c, "northwind.test"),
            Rule::ContactsLimit => Rejection::contacts_limit(c, "northwind.test"),
            Rule::SuspiciousPartner => Rejection::suspicious_partner(c, "northwind.test"),
            Rule::SplitDomainMismatch => {
                Rejection::split_domain_mismatch("my.contoso.test", "contoso.test", "ms-traffic-type=SplitIntra")
            }
            Rule::RouteSetUnknownKey
            | Rule::RouteSetBadSeal
            | Rule::RouteSetMalformed
            | Rule::RouteSetOtherDialog => Rejection::route_set(rule, "the hidden route set is malformed"),
        }
    }

    #[test]
    fn every_rule_refuses_with_its_documented_status_and_code() {
        let c = Codes::default();
        let internal = ("carol@contoso.test", "tag:NoFederation", "pool.contoso.test", "10.1.2.3");
        for &rule in Rule::ALL {
            let r = example(rule, &c, internal);
            assert_eq!(r.rule, rule);
            assert_eq!((r.status, r.code()), rule.default_status_and_code(), "{rule}");
            assert_eq!(r.reason, reason_phrase(r.status), "{rule}");
        }
        let names: std::collections::HashSet<_> = Rule::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), Rule::ALL.len(), "rule names are unique");
    }

    /// README's refusal table, `| rule | status | ms-diagnostics | when |`, as
    /// (rule, status, code) rows.
    fn readme_refusals() -> Vec<(String, u16, Option<u32>)> {
        let readme = include_str!("../../README.md");
        let table = readme
            .split_once("### Refusals")
            .map(|(_, rest)| rest)
            .expect("README has a Refusals section");
        table
            .lines()
            .skip_while(|l| !l.starts_with("| rule"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let digits = |s: &str| s.chars().take_while(char::is_ascii_digit).collect::<String>();
                let rule = cells[1].trim_matches('`').to_string();
                let status = digits(cells[2]).parse().unwrap_or_else(|_| panic!("status in {l}"));
                let code = digits(cells[3]).parse().ok();
                (rule, status, code)
            })
            .collect()
    }

    #[test]
    fn the_readme_refusal_table_lists_every_rule_with_its_status_and_code() {
        let rows = readme_refusals();
        let documented: Vec<&str> = rows.iter().map(|(r, _, _)| r.as_str()).collect();
        let rules: Vec<&str> = Rule::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(documented, rules, "README's table and Rule::ALL, in order");
        for ((name, status, code), rule) in rows.iter().zip(Rule::ALL) {
            assert_eq!((*status, *code), rule.default_status_and_code(), "{name}");
        }
    }
}
