//! Source checks: no relay, the peer speaks for the From domain, the method may cross
//! federation, and how far the sender's identity is trusted (`ms-source-verified-user`).

use std::ops::ControlFlow;

use super::{classify::same_domain, Ctx, Rejection, SourceClass, Step};
use crate::config::{FederationRouting, UnmarkedSource, VerificationLevel};
use crate::sip::ms_headers::{HeaderError, MessageTrust, Verified};

/// The edge is no open relay: external → non-local is refused, and internal → external
/// needs a From in one of our domains.
pub(super) fn no_relay(cx: &mut Ctx<'_>) -> Step {
    let req = cx.req;
    let target = cx.target_host();
    if cx.inbound() && !cx.snap.is_local_domain(target) {
        return cx.reject("no-relay", Rejection::relay_denied(target));
    }
    if !cx.inbound() && !cx.snap.is_local_domain(req.from_host) {
        return cx.reject("no-relay", Rejection::foreign_from_outbound(req.from_host));
    }
    cx.pass("no-relay", "one side of the edge is ours");
    ControlFlow::Continue(())
}

/// The peer must speak for the From domain: the provider's ProxyFqdn (its decoration
/// domains, or SRV of the From domain pointing at it), or for AutoFederation a
/// same-domain SRV target of the From domain that the certificate names.
pub(super) fn verify_source(cx: &mut Ctx<'_>) -> Step {
    if !cx.inbound() {
        return ControlFlow::Continue(());
    }
    // Lent out for the check (the check records into `cx`), not copied.
    let source = std::mem::replace(&mut cx.source, SourceClass::Unclassified);
    let step = verify_source_as(cx, &source);
    cx.source = source;
    step
}

fn verify_source_as(cx: &mut Ctx<'_>, source: &SourceClass) -> Step {
    let fed = &cx.snap.federation;
    // Lowercased only when it is not already (it almost always is).
    let from_host = cx.req.from_host;
    let from: std::borrow::Cow<'_, str> = if from_host.bytes().any(|b| b.is_ascii_uppercase()) {
        from_host.to_ascii_lowercase().into()
    } else {
        from_host.into()
    };
    let provider_fqdn = match source {
        SourceClass::PublicProvider { proxy_fqdn, .. } => {
            let speaks = fed
                .public_provider_by_fqdn(proxy_fqdn)
                .is_some_and(|p| p.speaks_for(&from));
            if speaks {
                cx.remote_fqdn = Some(proxy_fqdn.clone());
                cx.pass(
                    "verify-source",
                    format_args!("{from} is a name-decoration domain of {proxy_fqdn}"),
                );
                return ControlFlow::Continue(());
            }
            Some(proxy_fqdn.clone())
        }
        SourceClass::HostingProvider { proxy_fqdn, .. } => Some(proxy_fqdn.clone()),
        SourceClass::AllowedDomain { .. } | SourceClass::DiscoveredPartner { .. } => None,
        SourceClass::DirectPartner { proxy_fqdn, .. } => {
            cx.remote_fqdn = Some(proxy_fqdn.clone());
            cx.pass(
                "verify-source",
                format_args!("certificate names the ProxyFqdn {proxy_fqdn}"),
            );
            return ControlFlow::Continue(());
        }
        SourceClass::SplitDomainUser { proxy_fqdn, .. } => {
            cx.remote_fqdn = Some(proxy_fqdn.clone());
            cx.pass(
                "verify-source",
                format_args!(
                    "{}@{from} is homed at {proxy_fqdn}, which shares our address space",
                    cx.req.from_user.unwrap_or("")
                ),
            );
            return ControlFlow::Continue(());
        }
        SourceClass::DefaultRoute { fqdn } => {
            cx.remote_fqdn = Some(fqdn.clone());
            cx.pass(
                "verify-source",
                format_args!("the default route {fqdn} speaks for every domain"),
            );
            return ControlFlow::Continue(());
        }
        SourceClass::InternetUser | SourceClass::Internal | SourceClass::Unclassified => {
            cx.pass("verify-source", "remote user; the pool authenticates");
            return ControlFlow::Continue(());
        }
    };
    let peer = cx.peer_name().to_string();
    let records = match cx.srv(&from) {
        Ok(r) => r,
        Err(r) => return cx.reject("verify-source", r),
    };
    let codes = &cx.snap.federation.codes;
    if let Some(fqdn) = provider_fqdn {
        if records.iter().any(|t| t.target.eq_ignore_ascii_case(&fqdn)) {
            cx.remote_fqdn = Some(fqdn.clone());
            cx.pass("verify-source", format_args!("SRV of {from} points at {fqdn}"));
            return ControlFlow::Continue(());
        }
        return cx.reject(
            "verify-source",
            Rejection::source_not_verified(codes, &from, &peer),
        );
    }
    let same: Vec<_> = records
        .iter()
        .filter(|t| same_domain(&t.target, &from))
        .collect();
    if let Some(t) = same.iter().find(|t| cx.peer.identity.covers(&t.target)) {
        cx.remote_fqdn = Some(t.target.clone());
        cx.pass(
            "verify-source",
            format_args!("SRV target {} of {from} is in the certificate", t.target),
        );
        return ControlFlow::Continue(());
    }
    let provider_target = records.iter().any(|t| {
        fed.public_provider_by_fqdn(&t.target).is_some()
            || fed.hosting_provider_by_fqdn(&t.target).is_some()
    });
    if same.is_empty() && !provider_target {
        // SIPPROXY_E_EPROUTING_MSG_ALLOWED_DOMAIN_NO_SRV_MATCH
        return cx.reject("verify-source", Rejection::srv_no_match(&from, records));
    }
    // SIPPROXY_E_ROUTING_MSG_CERT_MISMATCH
    cx.reject(
        "verify-source",
        Rejection::source_not_verified(codes, &from, &peer),
    )
}

/// `ms-split-domain-info` must name the traffic the From and To domains make: only
/// `ms-traffic-type=SplitIntra`, and only between two of our domains while a hosting
/// provider shares them (access-edge.md: 1017 "Domain type analysis indicates that the
/// ms-split-domain-info header in the message is the wrong type"). No header, no check.
pub(super) fn check_split_domain_info(cx: &mut Ctx<'_>) -> Step {
    let intra = cx.snap.is_local_domain(cx.req.from_host) && cx.snap.is_local_domain(cx.target_host());
    match split_domain_mismatch(cx, intra) {
        Some(r) => cx.reject("split-domain-info", r),
        None => ControlFlow::Continue(()),
    }
}

/// The 1017 refusal when the request's `ms-split-domain-info` does not fit `intra` (From
/// and To both ours); `None` when it fits or is absent.
pub(super) fn split_domain_mismatch(cx: &mut Ctx<'_>, intra: bool) -> Option<Rejection> {
    let value = cx.req.split_domain_info?.trim();
    let intra = intra && cx.snap.federation.shared_address_space().is_some();
    if intra && value.eq_ignore_ascii_case(super::SPLIT_INTRA) {
        cx.pass("split-domain-info", format_args!("{value}: From and To share our split domain"));
        return None;
    }
    Some(Rejection::split_domain_mismatch(
        cx.req.from_host,
        cx.target_host(),
        value,
    ))
}

/// Only some methods may cross federation (b.3 step 5); REGISTER never does. Remote users
/// are not federation and are not filtered.
pub(super) fn filter_method(cx: &mut Ctx<'_>) -> Step {
    if cx.source == SourceClass::InternetUser {
        return ControlFlow::Continue(());
    }
    let fed = &cx.snap.federation;
    let method = cx.req.method;
    if fed
        .access_edge
        .federated_methods
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
    {
        cx.pass("method-filter", format_args!("{method} may cross federation"));
        return ControlFlow::Continue(());
    }
    let r = Rejection::method_not_federated(&fed.codes, method);
    cx.reject("method-filter", r)
}

/// Computes `ms-source-verified-user` from the matched object's VerificationLevel (b.3
/// step 7). UseSourceVerification copies the peer's marking; without one the request is
/// refused (providers, allowed domains, discovered partners; `unmarked_source` may say
/// "unverified" instead) or marked unverified (default route).
pub(super) fn apply_verification_level(cx: &mut Ctx<'_>) -> Step {
    if !cx.inbound() {
        return ControlFlow::Continue(());
    }
    let fed = &cx.snap.federation;
    let (level, unmarked) = match &cx.source {
        SourceClass::PublicProvider { proxy_fqdn, .. } => (
            fed.public_provider_by_fqdn(proxy_fqdn)
                .map(|p| p.verification_level),
            fed.access_edge.unmarked_source,
        ),
        SourceClass::HostingProvider { proxy_fqdn, .. }
        | SourceClass::SplitDomainUser { proxy_fqdn, .. } => (
            fed.hosting_provider_by_fqdn(proxy_fqdn)
                .map(|h| h.verification_level),
            fed.access_edge.unmarked_source,
        ),
        SourceClass::DirectPartner { domain, .. } | SourceClass::AllowedDomain { domain } => (
            fed.allowed(domain).map(|a| a.verification_level),
            fed.access_edge.unmarked_source,
        ),
        SourceClass::DiscoveredPartner { .. } => (
            Some(fed.access_edge.discovered_partner_verification_level),
            fed.access_edge.unmarked_source,
        ),
        SourceClass::DefaultRoute { .. } => match &fed.access_edge.routing {
            FederationRouting::DefaultRoute {
                verification_level, ..
            } => (Some(*verification_level), UnmarkedSource::MarkUnverified),
            FederationRouting::DnsSrv => (None, UnmarkedSource::MarkUnverified),
        },
        SourceClass::InternetUser | SourceClass::Internal | SourceClass::Unclassified => {
            (None, UnmarkedSource::Reject)
        }
    };
    let Some(level) = level else {
        return ControlFlow::Continue(());
    };
    // What is wrong with the peer's marking, when it sent one, so a refusal can say so.
    let (marking, flaw) = match cx.req.trust_header.map(MessageTrust::parse) {
        None => (None, None),
        Some(Ok(MessageTrust {
            verified: Some(v), ..
        })) => (Some(v), None),
        Some(Ok(_)) => (None, Some(HeaderError::Missing("ms-source-verified-user"))),
        Some(Err(e)) => (None, Some(e)),
    };
    // Inside a dialog the sealed route already proved the dialog and the partner; a peer
    // that marks only the requests that open dialogs (as non-Lync servers do) must not
    // lose its ACK or BYE, so an absent marking there means unverified, never a refusal.
    let unmarked = if cx.in_dialog_route() && flaw.is_none() {
        UnmarkedSource::MarkUnverified
    } else {
        unmarked
    };
    let verified = match (level, marking, unmarked) {
        (VerificationLevel::AlwaysVerifiable, _, _) => Verified::Verified,
        (VerificationLevel::AlwaysUnverifiable, _, _) => Verified::Unverified,
        (VerificationLevel::UseSourceVerification, Some(m), _) => m,
        (VerificationLevel::UseSourceVerification, None, UnmarkedSource::MarkUnverified) => {
            Verified::Unverified
        }
        (VerificationLevel::UseSourceVerification, None, UnmarkedSource::Reject) => {
            let r = Rejection::unmarked_source(&fed.codes, cx.peer_name(), flaw.as_ref());
            return cx.reject("verification-level", r);
        }
    };
    cx.pass(
        "verification-level",
        format_args!("{level}: {}", verified.as_str()),
    );
    cx.verified = Some(verified);
    ControlFlow::Continue(())
}
