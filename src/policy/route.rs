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
    let rule = match &cx.source {
        SourceClass::InternetUser => "remote-user",
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
    })
}

/// Internal → external: the targets of the classified domain, marked per
/// MarkSourceVerifiableOnOutgoingMessages.
fn outbound_route(cx: &mut Ctx<'_>) -> Decision {
    let fed = &cx.snap.federation;
    let Some(target) = cx.target.take() else {
        // classify_target always sets it outbound; refuse rather than guess.
        return Decision::Reject(Rejection::no_route(cx.req.uri_host));
    };
    let srv = |t: &[SrvTarget]| t.iter().map(|t| Target::tls(&t.target, t.port)).collect();
    let (targets, rule): (Vec<Target>, &'static str) = match &target {
        TargetClass::Local => (Vec::new(), "local-domain"),
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
    // The marking a remote edge with UseSourceVerification reads ([inferred] format: our
    // trust header with ms-source-type=EdgeProxyGenerated).
    let marking = MessageTrust {
        source_type: SourceType::EdgeProxyGenerated,
        ep_fqdn: cx.snap.external.fqdn.clone(),
        verified: Some(
            if fed.access_edge.mark_source_verifiable_on_outgoing_messages {
                Verified::Verified
            } else {
                Verified::Unverified
            },
        ),
        network: None,
        remote_fqdn: None,
    };
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
    })
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
