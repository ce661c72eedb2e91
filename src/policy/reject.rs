//! `Rejection`: every reason the edge refuses a request, with its status and diagnostics.
//!
//! `proxy::respond` is the only code that turns a `Rejection` into a SIP response. It puts
//! the diagnostics in `ms-diagnostics` toward the internal interface and in
//! `ms-diagnostics-public` (`Diagnostics::public_value`: code, reason and only the
//! parameters in `PUBLIC_PARAMS`) toward the external one.
//!
//! | reason (rule)                  | status | ms-diagnostics | source of the value |
//! |--------------------------------|--------|----------------|---------------------|
//! | `max-forwards`                 | 483    | —              | RFC 3261 |
//! | `loop`                         | 482    | —              | RFC 3261 |
//! | `no-external-relay`            | 403    | 1000           | sipedge |
//! | `no-route` (static routing)    | 404    | 1001           | sipedge |
//! | `overload`                     | 503    | — (Retry-After 5) | sipedge |
//! | `srv-not-found`                | 504\*  | 1008 Unable to resolve DNS SRV record | code S16, status [inferred] |
//! | `srv-no-match`                 | 504    | 1009 No match for domain in DNS SRV results; domain, fqdn1… | S13 |
//! | `source-not-verified` / `local-domain-from-outside` / `anonymous-peer` | 403\* | 1010\* Certificate trust with another server could not be established | b.3 step 4 code, status per issue 4 |
//! | `cert-mismatch` (proxy, outbound TLS) | 504 | 1010 … SEC_E_WRONG_PRINCIPAL | S13 |
//! | `tls-failed` (proxy, outbound TLS) | 504 | 1047 Failed to complete TLS negotiation with a federated peer server | code S15, status [inferred] |
//! | `method-not-federated`         | 403\*  | 1027\* Cannot route this type of SIP request to or from federated partners | code S14, status [unverified] |
//! | `federation-disabled`          | 403\*  | 1901\* | [unverified] |
//! | `outside-users-disabled`       | 403\*  | 1902\* | [unverified] |
//! | `blocked-domain`               | 403\*  | 1903\* | [unverified] |
//! | `partner-not-allowed`          | 403\*  | 1904\* | [unverified] |
//! | `unmarked-source` (no marking, or one lacking a field: the reason names it) | 403\*  | 1905\* | [unverified] |
//! | `user-federation-denied`       | 403\*  | 1906\* | [unverified] |
//! | `user-public-cloud-denied`     | 403\*  | 1907\* | [unverified] |
//! | `user-public-cloud-av-denied`  | 403\*  | 1908\* | [unverified] |
//! | `provider-disabled`            | 403\*  | 1909\* | [inferred] |
//! | `rate-limited`                 | 503\*  | 1910\* (Retry-After 1\*) | [inferred] |
//! | `contacts-limit`               | 503\*  | 1911\* (Retry-After 3600\*) | [inferred] |
//! | 1034 (responses, proxy)        | remote | 1034 Previous hop federated peer did not report diagnostic information | S14, S18; `sip::ms_headers` |
//!
//! \* configurable in `[diagnostics]` (`config::Codes`).

use std::fmt::Write as _;

use crate::config::{Code, Codes};
use crate::policy::dns::SrvTarget;
use crate::sip::ms_headers::HeaderError;

/// A refusal: status, reason phrase, optional `ms-diagnostics`, optional Retry-After.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
    pub diagnostics: Option<Diagnostics>,
    /// Seconds for a Retry-After header (503 under load or rate limits).
    pub retry_after: Option<u32>,
    /// The rule that fired, for the one log line and metrics.
    pub rule: &'static str,
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
pub const PUBLIC_PARAMS: &[&str] = &["domain", "method", "ErrorType", "HRESULT", "WinsockFailureCode"];

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Rejection {
    pub fn new(status: u16, reason: &'static str, rule: &'static str) -> Self {
        Rejection {
            status,
            reason,
            diagnostics: None,
            retry_after: None,
            rule,
        }
    }

    pub fn with_diagnostics(mut self, d: Diagnostics) -> Self {
        self.diagnostics = Some(d);
        self
    }

    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Max-Forwards reached 0 (RFC 3261 §16.3 step 3).
    pub fn too_many_hops() -> Self {
        Rejection::new(483, "Too Many Hops", "max-forwards")
    }

    /// The request already passed through this edge (RFC 3261 §16.3 step 4).
    pub fn loop_detected() -> Self {
        Rejection::new(482, "Loop Detected", "loop")
    }

    /// A request from outside for a domain that is not ours: the edge is no open relay.
    pub fn relay_denied(domain: &str) -> Self {
        Rejection::new(403, "Forbidden", "no-external-relay").with_diagnostics(
            Diagnostics::new(
                1000,
                "Relaying from the external interface to a non-local domain is not allowed",
            )
            .param("domain", domain),
        )
    }

    /// No route for a non-local domain.
    pub fn no_route(domain: &str) -> Self {
        Rejection::new(404, "Not Found", "no-route").with_diagnostics(
            Diagnostics::new(1001, "No route for the domain").param("domain", domain),
        )
    }

    /// The transaction table is full.
    pub fn overloaded() -> Self {
        Rejection::new(503, "Service Unavailable", "overload").with_retry_after(5)
    }

    // === federation (access-edge.md §b.3–b.5) ===

    /// A refusal whose status and code come from `[diagnostics]`.
    pub fn configured(code: Code, text: &str, rule: &'static str) -> Self {
        Rejection::new(code.status, reason_phrase(code.status), rule)
            .with_diagnostics(Diagnostics::new(code.code, text))
    }

    /// AllowFederatedUsers is off.
    pub fn federation_disabled(c: &Codes) -> Self {
        Rejection::configured(
            c.federation_disabled,
            "Federation is disabled on this edge (AllowFederatedUsers)",
            "federation-disabled",
        )
    }

    /// AllowOutsideUsers is off and a remote user's request arrived.
    pub fn outside_users_disabled(c: &Codes) -> Self {
        Rejection::configured(
            c.outside_users_disabled,
            "Remote user access is disabled on this edge (AllowOutsideUsers)",
            "outside-users-disabled",
        )
    }

    /// The partner domain is on the blocked list (both directions).
    pub fn blocked_domain(c: &Codes, domain: &str) -> Self {
        with_param(
            Rejection::configured(
                c.blocked_domain,
                "The domain is on the blocked list",
                "blocked-domain",
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
                "partner-not-allowed",
            ),
            "domain",
            domain,
        )
    }

    /// The authenticated peer does not speak for the From domain (certificate names vs
    /// the allowed ProxyFqdn, the From domain's SRV targets, the provider's ProxyFqdn).
    pub fn source_not_verified(c: &Codes, domain: &str, peer: &str) -> Self {
        Rejection::configured(
            c.source_not_verified,
            "Certificate trust with another server could not be established",
            "source-not-verified",
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
        let mut r = Rejection::source_not_verified(c, domain, peer);
        r.rule = "local-domain-from-outside";
        r
    }

    /// An external peer that proved no name claims a foreign domain.
    pub fn anonymous_peer(c: &Codes, domain: &str) -> Self {
        let mut r = Rejection::source_not_verified(c, domain, "");
        r.rule = "anonymous-peer";
        r
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
            Rejection::configured(c.unmarked_source, &text, "unmarked-source"),
            "PeerServer",
            peer,
        )
    }

    /// The local user's external access policy denies federation.
    pub fn user_federation_denied(c: &Codes, user: &str, policy: &str) -> Self {
        Rejection::configured(
            c.user_federation_denied,
            "The user's external access policy does not allow federation",
            "user-federation-denied",
        )
        .add_params(&[("user", user), ("policy", policy)])
    }

    /// The local user's external access policy denies public IM providers.
    pub fn user_public_cloud_denied(c: &Codes, user: &str, policy: &str) -> Self {
        Rejection::configured(
            c.user_public_cloud_denied,
            "The user's external access policy does not allow public cloud access",
            "user-public-cloud-denied",
        )
        .add_params(&[("user", user), ("policy", policy)])
    }

    /// The local user's policy denies audio/video with public IM providers.
    pub fn user_public_cloud_av_denied(c: &Codes, user: &str, policy: &str) -> Self {
        Rejection::configured(
            c.user_public_cloud_av_denied,
            "The user's external access policy does not allow public cloud audio/video",
            "user-public-cloud-av-denied",
        )
        .add_params(&[("user", user), ("policy", policy)])
    }

    /// The domain's SRV points at a provider that is disabled.
    pub fn provider_disabled(c: &Codes, identity: &str, domain: &str) -> Self {
        Rejection::configured(
            c.provider_disabled,
            "The provider is disabled",
            "provider-disabled",
        )
        .add_params(&[("provider", identity), ("domain", domain)])
    }

    /// The method may not cross federation (e.g. REGISTER).
    pub fn method_not_federated(c: &Codes, method: &str) -> Self {
        with_param(
            Rejection::configured(
                c.method_not_allowed,
                "Cannot route this type of SIP request to or from federated partners",
                "method-not-federated",
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
                "srv-not-found",
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
        Rejection::new(504, "Server Time-out", "srv-no-match").with_diagnostics(d)
    }

    /// The partner's certificate lacks the SRV target / ProxyFqdn (proxy, outbound TLS).
    pub fn cert_mismatch(tls_target: &str, peer_server: &str) -> Self {
        Rejection::new(504, "Server Time-out", "cert-mismatch").with_diagnostics(
            Diagnostics::new(
                1010,
                "Certificate trust with another server could not be established",
            )
            .param(
                "ErrorType",
                "The peer certificate does not contain a matching FQDN",
            )
            .param("tls-target", tls_target)
            .param("PeerServer", peer_server)
            .param("HRESULT", "0x80090322(SEC_E_WRONG_PRINCIPAL)"),
        )
    }

    /// The TLS handshake with the partner failed (proxy, outbound TLS).
    pub fn tls_failed(winsock_code: &str, description: &str) -> Self {
        Rejection::new(504, "Server Time-out", "tls-failed").with_diagnostics(
            Diagnostics::new(
                1047,
                "Failed to complete TLS negotiation with a federated peer server",
            )
            .param("WinsockFailureCode", winsock_code)
            .param("WinsockFailureDescription", description),
        )
    }

    /// A discovered partner is over DiscoveredPartnerStandardRate.
    pub fn rate_limited(c: &Codes, partner: &str) -> Self {
        with_param(
            Rejection::configured(
                c.rate_limited,
                "Discovered partner exceeded its message rate (DiscoveredPartnerStandardRate)",
                "rate-limited",
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
                "contacts-limit",
            ),
            "domain",
            partner,
        )
        .with_retry_after(c.contacts_limit_retry_after_s)
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
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
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
                Rejection::cert_mismatch("a", "b"),
                504,
                "Server Time-out",
                1010,
            ),
            (
                Rejection::tls_failed("10054(WSAECONNRESET)", "x"),
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
        let refusals = [
            Rejection::too_many_hops(),
            Rejection::loop_detected(),
            Rejection::relay_denied("northwind.test"),
            Rejection::no_route("northwind.test"),
            Rejection::overloaded(),
            Rejection::configured(c.blocked_domain, "configured", "configured"),
            Rejection::federation_disabled(&c),
            Rejection::outside_users_disabled(&c),
            Rejection::blocked_domain(&c, "adatum.test"),
            Rejection::partner_not_allowed(&c, "northwind.test"),
            Rejection::source_not_verified(&c, "fabrikam.test", fqdn),
            Rejection::local_domain_from_outside(&c, "contoso.test", addr),
            Rejection::anonymous_peer(&c, "fabrikam.test"),
            Rejection::unmarked_source(&c, fqdn, None),
            Rejection::unmarked_source(&c, addr, Some(&flaw)),
            Rejection::user_federation_denied(&c, user, policy),
            Rejection::user_public_cloud_denied(&c, user, policy),
            Rejection::user_public_cloud_av_denied(&c, user, policy),
            Rejection::provider_disabled(&c, "LyncOnline", "tailspin.test"),
            Rejection::method_not_federated(&c, "REGISTER"),
            Rejection::srv_not_found(&c, "nowhere.test", Some(&format!("no answer from {addr}:53"))),
            Rejection::srv_no_match("badsrv.test", std::slice::from_ref(&target)),
            Rejection::cert_mismatch(fqdn, fqdn),
            Rejection::tls_failed("10054(WSAECONNRESET)", &format!("reset by {addr}")),
            Rejection::rate_limited(&c, "northwind.test"),
            Rejection::contacts_limit(&c, "northwind.test"),
        ];
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
}
