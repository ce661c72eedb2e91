//! Route choice: the pool, static routes (no federation), the default route, an allowed
//! partner's ProxyFqdn, SRV targets (allowed, discovered, providers).

use std::ops::ControlFlow;

use super::{
    Ctx, Decision, Forward, LimitKey, Rejection, ResponseTrust, Route, SourceClass, SrvTarget,
    Step, Strip, Target, TargetClass,
};
use crate::config::{FederationRouting, Snapshot, VerificationLevel};
use crate::sip::ms_headers::{MessageTrust, SourceType, Verified};
use crate::peer::Interface;


/// Without federation sections, the issue-2 static routing: local domains to the pool,
/// others (from inside only) to their static route or the default route.
pub(super) fn static_routing_without_federation(cx: &mut Ctx<'_>) -> Step {
    if cx.snap.federation.enabled() {
        return ControlFlow::Continue(());
    }
    let snap = cx.snap;
    let req = cx.req;
    let arrival = cx.peer.interface;
    let forward = |exit: Interface, hop: &crate::config::NextHop, rule: &'static str| {
        Decision::Forward(Forward {
            exit,
            route: Route::NextHop(hop.clone()),
            rule,
            source: SourceClass::Unclassified,
            target: None,
            insert_trust: None,
            strip: Strip::crossing(arrival, exit),
            limit: None,
            response_trust: None,
            split_domain: false,
        })
    };
    let decision = if snap.is_local_domain(req.uri_host) {
        forward(Interface::Internal, &snap.pool, "local-domain")
    } else if arrival == Interface::External {
        Decision::Reject(Rejection::relay_denied(req.uri_host))
    } else if let Some(r) = snap
        .routes
        .iter()
        .find(|r| r.domain.eq_ignore_ascii_case(req.uri_host))
    {
        forward(Interface::External, &r.next_hop, "static-route")
    } else if let Some(hop) = &snap.default_route {
        forward(Interface::External, hop, "default-route")
    } else {
        Decision::Reject(Rejection::no_route(req.uri_host))
    };
    cx.decided("static-routing", "no federation sections: static routes");
    ControlFlow::Break(decision)
}

/// Internal → one of our domains: back to the pool (no federation involved).
pub(super) fn local_domain_to_pool(cx: &mut Ctx<'_>) -> Step {
    if cx.inbound() || cx.in_dialog_route() || !cx.snap.is_local_domain(cx.req.uri_host) {
        return ControlFlow::Continue(());
    }
    if let Some(r) = super::verify::split_domain_mismatch(cx, cx.snap.is_local_domain(cx.req.from_host)) {
        return cx.reject("split-domain-info", r);
    }
    cx.decided("local-domain", "internal request for a local domain");
    ControlFlow::Break(Decision::Forward(Forward {
        exit: Interface::Internal,
        route: Route::NextHop(cx.snap.pool.clone()),
        rule: "local-domain",
        source: SourceClass::Internal,
        target: Some(TargetClass::Local),
        insert_trust: None,
        strip: Strip::crossing(Interface::Internal, Interface::Internal),
        limit: None,
        response_trust: None,
        split_domain: false,
    }))
}

/// The last step: where the request goes and which headers the proxy changes.
pub(super) fn choose_route(cx: &mut Ctx<'_>) -> Decision {
    if cx.inbound() {
        inbound_route(cx)
    } else {
        outbound_route(cx)
    }
}

/// External → internal: to the pool, with the edge's own trust header.
fn inbound_route(cx: &mut Ctx<'_>) -> Decision {
    let fed = &cx.snap.federation;
    let trust = cx.source.source_type().map(|source_type| MessageTrust {
        source_type,
        ep_fqdn: cx.snap.external.fqdn.clone(),
        verified: cx.verified,
        network: cx.source.network(fed),
        remote_fqdn: cx.remote_fqdn.take(),
    });
    let limit = match &cx.source {
        // Ending a dialog is not a new message to throttle.
        SourceClass::DiscoveredPartner { .. } if cx.ends_or_confirms_dialog() => None,
        SourceClass::DiscoveredPartner { domain } => Some(LimitKey {
            partner: domain.clone(),
            local_uri: format!(
                "{}@{}",
                cx.target_user().unwrap_or("").to_ascii_lowercase(),
                cx.target_host().to_ascii_lowercase()
            ),
            new_request: !cx.req.in_dialog,
        }),
        _ => None,
    };
    let split_domain = matches!(cx.source, SourceClass::SplitDomainUser { .. });
    let rule = match &cx.source {
        SourceClass::InternetUser => "remote-user",
        SourceClass::SplitDomainUser { .. } => "split-domain",
        _ => "federation-inbound",
    };
    // Inside a dialog the route set, already restored from our seal, leads to the pool.
    let route = if cx.in_dialog_route() {
        cx.decided("route", "in-dialog: the restored route set");
        Route::RequestTarget
    } else {
        cx.decided(
            "route",
            format_args!("to the pool {}:{}", cx.snap.pool.host, cx.snap.pool.port),
        );
        Route::NextHop(cx.snap.pool.clone())
    };
    Decision::Forward(Forward {
        exit: Interface::Internal,
        route,
        rule,
        // The route is the last step: what the checks found moves into the decision.
        source: std::mem::replace(&mut cx.source, SourceClass::Unclassified),
        target: cx.target.take(),
        insert_trust: trust,
        strip: Strip::crossing(Interface::External, Interface::Internal),
        limit,
        response_trust: None,
        split_domain,
    })
}

/// Internal → external: the targets of the classified domain, marked per
/// MarkSourceVerifiableOnOutgoingMessages.
fn outbound_route(cx: &mut Ctx<'_>) -> Decision {
    let Some(target) = cx.target.take() else {
        // classify_target always sets it outbound; refuse rather than guess.
        return Decision::Reject(Rejection::no_route(cx.req.uri_host));
    };
    let srv = |t: &[SrvTarget]| t.iter().map(|t| Target::tls(&t.target, t.port)).collect();
    let (targets, rule): (Vec<Target>, &'static str) = match &target {
        TargetClass::Local => (Vec::new(), "local-domain"),
        TargetClass::HostedUser {
            proxy_fqdn, port, ..
        } => (vec![Target::tls(proxy_fqdn, *port)], "split-domain"),
        TargetClass::DefaultRoute { fqdn, port } => {
            (vec![Target::tls(fqdn, *port)], "default-route")
        }
        TargetClass::DirectPartner {
            proxy_fqdn, port, ..
        } => (
            vec![Target::tls(proxy_fqdn, *port)],
            "allowed-proxy-fqdn",
        ),
        TargetClass::AllowedDomain { targets, .. } => (srv(targets), "allowed-domain-srv"),
        TargetClass::Provider {
            targets,
            public: true,
            ..
        } => (srv(targets), "public-provider"),
        TargetClass::Provider {
            targets,
            public: false,
            ..
        } => (srv(targets), "hosting-provider"),
        TargetClass::Discovered { targets, .. } => (srv(targets), "discovered-partner"),
    };
    let marking = outbound_marking(cx.snap);
    let response_trust = response_trust(&target, cx.snap);
    let route = if cx.in_dialog_route() {
        // The classification above still ran (blocked list, user policy, media); the next
        // hop is the dialog's route set, not the domain's servers.
        cx.decided("route", format_args!("in-dialog to {}: the route set", target.domain()));
        Route::RequestTarget
    } else {
        let first = targets
            .first()
            .map(|t| format!("{}:{}", t.host, t.port))
            .unwrap_or_default();
        cx.decided(
            "route",
            format_args!("{rule}: {first} ({} target(s))", targets.len()),
        );
        Route::Targets(targets)
    };
    Decision::Forward(Forward {
        exit: Interface::External,
        route,
        rule: if cx.in_dialog_route() { "dialog-route" } else { rule },
        source: std::mem::replace(&mut cx.source, SourceClass::Unclassified),
        target: Some(target),
        insert_trust: Some(marking),
        strip: Strip::crossing(Interface::Internal, Interface::External),
        limit: None,
        response_trust,
        split_domain: false,
    })
}

/// The marking a remote edge with UseSourceVerification reads on what leaves through the
/// external interface ([inferred] format: our trust header with
/// ms-source-type=EdgeProxyGenerated), per MarkSourceVerifiableOnOutgoingMessages.
fn outbound_marking(snap: &Snapshot) -> MessageTrust {
    MessageTrust {
        source_type: SourceType::EdgeProxyGenerated,
        ep_fqdn: snap.external.fqdn.clone(),
        verified: Some(
            if snap
                .federation
                .access_edge
                .mark_source_verifiable_on_outgoing_messages
            {
                Verified::Verified
            } else {
                Verified::Unverified
            },
        ),
        network: None,
        remote_fqdn: None,
    }
}

/// Internal → a user of one of our domains homed at a hosting provider (split domain,
/// access-edge.md §b.4 step 3b): to that provider's ProxyFqdn, not the pool. Hybrid traffic
/// needs AllowFederatedUsers (which "also governs split-domain traffic") and an enabled
/// provider; no external access policy applies (it is the organisation's own user). From
/// another of our users it is SplitIntra traffic and marked so; the pool relaying a
/// partner's request to the user is federation traffic to the provider.
pub(super) fn split_domain_outbound(cx: &mut Ctx<'_>) -> Step {
    if cx.inbound() || !cx.snap.federation.enabled() {
        return ControlFlow::Continue(());
    }
    let (user, host) = (cx.target_user().unwrap_or(""), cx.target_host());
    if !cx.snap.is_local_domain(host) {
        return ControlFlow::Continue(());
    }
    let fed = &cx.snap.federation;
    let Some(h) = fed.home_of(user, host) else {
        return ControlFlow::Continue(());
    };
    if !fed.access_edge.allow_federated_users {
        return cx.reject("split-domain", Rejection::federation_disabled(&fed.codes));
    }
    if !h.enabled {
        let r = Rejection::provider_disabled(&fed.codes, &h.identity, host);
        return cx.reject("split-domain", r);
    }
    let intra = cx.snap.is_local_domain(cx.req.from_host);
    if let Some(r) = super::verify::split_domain_mismatch(cx, intra) {
        return cx.reject("split-domain-info", r);
    }
    let exit = if h.is_local {
        Interface::Internal
    } else {
        Interface::External
    };
    let target = TargetClass::HostedUser {
        domain: host.to_ascii_lowercase(),
        identity: h.identity.clone(),
        proxy_fqdn: h.proxy_fqdn.clone(),
        port: h.proxy_port,
        is_local: h.is_local,
    };
    let route = if cx.in_dialog_route() {
        Route::RequestTarget
    } else {
        Route::Targets(vec![Target::tls(&h.proxy_fqdn, h.proxy_port)])
    };
    cx.decided(
        "split-domain",
        format_args!(
            "{user}@{host} is homed at {} ({}), through the {exit} interface",
            h.proxy_fqdn, h.identity
        ),
    );
    let outside = exit == Interface::External;
    ControlFlow::Break(Decision::Forward(Forward {
        exit,
        route,
        rule: "split-domain",
        source: SourceClass::Internal,
        insert_trust: outside.then(|| outbound_marking(cx.snap)),
        strip: Strip::crossing(Interface::Internal, exit),
        limit: None,
        response_trust: if outside {
            response_trust(&target, cx.snap)
        } else {
            None
        },
        target: Some(target),
        split_domain: intra,
    }))
}

/// The marking responses from `target` carry inward: the class the edge gave the far side
/// when it chose it, like the marking on a request from that side (access-edge.md, the
/// trust header row: requests **and** responses from outside).
pub fn response_trust(target: &TargetClass, snap: &Snapshot) -> Option<std::sync::Arc<ResponseTrust>> {
    let fed = &snap.federation;
    let (source_type, level) = match target {
        TargetClass::Local => return None,
        TargetClass::DefaultRoute { .. } => (
            SourceType::AuthorizedServer,
            match &fed.access_edge.routing {
                FederationRouting::DefaultRoute {
                    verification_level, ..
                } => *verification_level,
                FederationRouting::DnsSrv => VerificationLevel::UseSourceVerification,
            },
        ),
        TargetClass::HostedUser { proxy_fqdn, .. } => (
            SourceType::AuthorizedServer,
            fed.hosting_provider_by_fqdn(proxy_fqdn)
                .map_or(VerificationLevel::UseSourceVerification, |h| h.verification_level),
        ),
        TargetClass::Provider { identity, public, .. } => (
            SourceType::AuthorizedServer,
            if *public {
                fed.public_providers
                    .iter()
                    .find(|p| &p.identity == identity)
                    .map(|p| p.verification_level)
            } else {
                fed.hosting_providers
                    .iter()
                    .find(|h| &h.identity == identity)
                    .map(|h| h.verification_level)
            }
            .unwrap_or(VerificationLevel::UseSourceVerification),
        ),
        TargetClass::DirectPartner { domain, .. } => (
            SourceType::DirectPartner,
            fed.allowed(domain)
                .map_or(VerificationLevel::UseSourceVerification, |a| a.verification_level),
        ),
        TargetClass::AllowedDomain { domain, .. } => (
            SourceType::AutoFederation,
            fed.allowed(domain)
                .map_or(VerificationLevel::UseSourceVerification, |a| a.verification_level),
        ),
        TargetClass::Discovered { .. } => (
            SourceType::AutoFederation,
            fed.access_edge.discovered_partner_verification_level,
        ),
    };
    let (verified, copy_verified) = match level {
        VerificationLevel::AlwaysVerifiable => (Some(Verified::Verified), false),
        VerificationLevel::AlwaysUnverifiable => (Some(Verified::Unverified), false),
        VerificationLevel::UseSourceVerification => (Some(Verified::Unverified), true),
    };
    Some(std::sync::Arc::new(ResponseTrust {
        trust: MessageTrust {
            source_type,
            ep_fqdn: snap.external.fqdn.clone(),
            verified,
            network: target.network(fed),
            remote_fqdn: None,
        },
        copy_verified,
    }))
}
