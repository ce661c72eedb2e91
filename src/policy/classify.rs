//! Who is on the other side: the source (b.2) and the target domain (b.4 step 3).

use std::ops::ControlFlow;

use super::{Ctx, Rejection, SrvTarget, Step};
use crate::config::{Federation, FederationRouting};
use crate::sip::ms_headers::{SourceNetwork, SourceType};

/// What the sender of a request was classified as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceClass {
    /// Not classified: static routing (no federation sections) or an in-dialog request.
    Unclassified,
    /// The Front End pool, on the internal interface.
    Internal,
    /// Peer certificate names an enabled public provider's ProxyFqdn (b.2 row 1).
    PublicProvider {
        identity: String,
        proxy_fqdn: String,
    },
    /// Peer certificate names an enabled hosting provider's ProxyFqdn (b.2 row 2).
    HostingProvider {
        identity: String,
        proxy_fqdn: String,
    },
    /// A hosting provider that shares our address space, speaking for one of our users it
    /// hosts (split domain: From is one of our domains, the user is homed there).
    SplitDomainUser {
        identity: String,
        proxy_fqdn: String,
    },
    /// The peer is the default route (clearing house).
    DefaultRoute { fqdn: String },
    /// Allowed domain with ProxyFqdn, and the certificate names it (b.2 row 3).
    DirectPartner { domain: String, proxy_fqdn: String },
    /// Allowed domain without ProxyFqdn (b.2 row 4).
    AllowedDomain { domain: String },
    /// Not listed, partner discovery on (b.2 row 5): rate- and contact-limited.
    DiscoveredPartner { domain: String },
    /// A remote user of ours (no proven name, From one of our domains).
    InternetUser,
}

impl SourceClass {
    /// The `ms-source-type` for the trust header.
    pub fn source_type(&self) -> Option<SourceType> {
        Some(match self {
            SourceClass::Unclassified | SourceClass::Internal => return None,
            SourceClass::PublicProvider { .. }
            | SourceClass::HostingProvider { .. }
            | SourceClass::SplitDomainUser { .. }
            | SourceClass::DefaultRoute { .. } => SourceType::AuthorizedServer,
            SourceClass::DirectPartner { .. } => SourceType::DirectPartner,
            SourceClass::AllowedDomain { .. } | SourceClass::DiscoveredPartner { .. } => {
                SourceType::AutoFederation
            }
            SourceClass::InternetUser => SourceType::InternetUser,
        })
    }

    /// The `ms-source-network` for the trust header (default route: per IsPublicProvider).
    pub fn network(&self, fed: &Federation) -> Option<SourceNetwork> {
        match self {
            SourceClass::Unclassified | SourceClass::Internal | SourceClass::InternetUser => None,
            SourceClass::PublicProvider { .. } => Some(SourceNetwork::PublicCloud),
            SourceClass::DefaultRoute { .. } => Some(default_route_network(fed)),
            _ => Some(SourceNetwork::Federation),
        }
    }
}

/// What the Request-URI domain of an outbound request was classified as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetClass {
    /// One of our domains: the pool.
    Local,
    /// `UseDefaultRouting`: everything to DefaultRouteFqdn.
    DefaultRoute { fqdn: String, port: u16 },
    /// Allowed domain with ProxyFqdn: straight to it (on its port), no SRV.
    DirectPartner {
        domain: String,
        proxy_fqdn: String,
        port: u16,
    },
    /// Allowed domain without ProxyFqdn: its same-domain SRV targets.
    AllowedDomain {
        domain: String,
        targets: Vec<SrvTarget>,
    },
    /// A user of one of our domains homed at a hosting provider that shares our address
    /// space (split domain): straight to the provider's ProxyFqdn, through the internal
    /// interface when the provider IsLocal.
    HostedUser {
        domain: String,
        identity: String,
        proxy_fqdn: String,
        port: u16,
        is_local: bool,
    },
    /// The domain's SRV target is an enabled provider's ProxyFqdn (public or hosting).
    Provider {
        domain: String,
        identity: String,
        public: bool,
        targets: Vec<SrvTarget>,
    },
    /// Not listed, discovery on: its same-domain SRV targets.
    Discovered {
        domain: String,
        targets: Vec<SrvTarget>,
    },
}

impl TargetClass {
    /// The domain the target was classified for (empty for the pool and the default route).
    pub fn domain(&self) -> &str {
        match self {
            TargetClass::Local | TargetClass::DefaultRoute { .. } => "",
            TargetClass::DirectPartner { domain, .. }
            | TargetClass::HostedUser { domain, .. }
            | TargetClass::AllowedDomain { domain, .. }
            | TargetClass::Provider { domain, .. }
            | TargetClass::Discovered { domain, .. } => domain,
        }
    }

    /// The network the target belongs to, for the user's external access policy.
    pub fn network(&self, fed: &Federation) -> Option<SourceNetwork> {
        match self {
            TargetClass::Local => None,
            TargetClass::Provider { public: true, .. } => Some(SourceNetwork::PublicCloud),
            TargetClass::DefaultRoute { .. } => Some(default_route_network(fed)),
            _ => Some(SourceNetwork::Federation),
        }
    }
}

fn default_route_network(fed: &Federation) -> SourceNetwork {
    match fed.access_edge.routing {
        FederationRouting::DefaultRoute {
            is_public_provider: true,
            ..
        } => SourceNetwork::PublicCloud,
        _ => SourceNetwork::Federation,
    }
}

/// The SRV-target rule: `target` is exactly one label followed by `domain`
/// (`sip.contoso.com` for contoso.com; not `sip.contoso-edge.com`, not `sip.it.contoso.com`).
pub fn same_domain(target: &str, domain: &str) -> bool {
    let target = target.trim_end_matches('.');
    match target.split_once('.') {
        Some((label, rest)) => {
            !label.is_empty() && rest.eq_ignore_ascii_case(domain.trim_end_matches('.'))
        }
        None => false,
    }
}

/// Blocked list, both directions: the From domain inbound, the Request-URI domain outbound.
pub(super) fn check_blocked_list(cx: &mut Ctx<'_>) -> Step {
    if cx.ends_or_confirms_dialog() {
        cx.pass("blocked-list", "ends or confirms a dialog already allowed");
        return ControlFlow::Continue(());
    }
    let fed = &cx.snap.federation;
    let domain = cx.partner_domain();
    if let Some(b) = fed.blocked(domain) {
        let r = Rejection::blocked_domain(&fed.codes, &b.domain);
        return cx.reject("blocked-list", r);
    }
    cx.pass("blocked-list", format_args!("{domain} is not blocked"));
    ControlFlow::Continue(())
}

/// MarkForMonitoring: traffic with a monitored allowed domain is marked in the trail
/// (`explain`, `/decisions`); the proxy counts it (`sipedge_monitored_decisions_total`).
pub(super) fn mark_for_monitoring(cx: &mut Ctx<'_>) {
    if let Some(domain) = cx.monitored_domain() {
        cx.pass(
            "monitoring",
            format_args!("{domain} is marked for monitoring (MarkForMonitoring)"),
        );
    }
}

/// Classifies the source (b.2). Outbound, the source is the pool.
pub(super) fn classify_source(cx: &mut Ctx<'_>) -> Step {
    if !cx.inbound() {
        cx.source = super::SourceClass::Internal;
        cx.pass("classify-source", "internal (Front End pool)");
        return ControlFlow::Continue(());
    }
    let fed = &cx.snap.federation;
    let from = cx.req.from_host;
    let id = &cx.peer.identity;
    let class = if cx.snap.is_local_domain(from) {
        let from_user = cx.req.from_user.unwrap_or("");
        if id.is_anonymous() {
            SourceClass::InternetUser
        } else if let Some(h) = fed
            .home_of(from_user, from)
            .filter(|h| h.enabled && !h.is_local && id.covers(&h.proxy_fqdn))
        {
            SourceClass::SplitDomainUser {
                identity: h.identity.clone(),
                proxy_fqdn: h.proxy_fqdn.clone(),
            }
        } else {
            // Also a provider sharing our address space that speaks for a user it does
            // not host: our directory homes that user elsewhere.
            let r = Rejection::local_domain_from_outside(&fed.codes, from, cx.peer_name());
            return cx.reject("classify-source", r);
        }
    } else if id.is_anonymous() && cx.req.meeting {
        // The edge switches let an anonymous meeting join this far (AllowAnonymousUsers);
        // like a remote user, the pool authenticates it.
        SourceClass::InternetUser
    } else if id.is_anonymous() {
        let r = Rejection::anonymous_peer(&fed.codes, from);
        return cx.reject("classify-source", r);
    } else if let Some(class) = classify_peer(fed, from, |fqdn| id.covers(fqdn)) {
        class
    } else if let Some(a) = fed.allowed(from) {
        match &a.proxy_fqdn {
            Some(_) => {
                let r = Rejection::source_not_verified(&fed.codes, from, cx.peer_name());
                return cx.reject("classify-source", r);
            }
            None => SourceClass::AllowedDomain {
                domain: a.domain.clone(),
            },
        }
    } else if discovery_on(fed) {
        SourceClass::DiscoveredPartner {
            domain: from.to_ascii_lowercase(),
        }
    } else {
        let r = Rejection::partner_not_allowed(&fed.codes, from);
        return cx.reject("classify-source", r);
    };
    cx.pass("classify-source", format_args!("{class:?}"));
    cx.source = class;
    ControlFlow::Continue(())
}

/// b.2 rows 1–3 and the default route: classes decided by the peer's certificate names.
fn classify_peer(
    fed: &Federation,
    from: &str,
    covers: impl Fn(&str) -> bool,
) -> Option<SourceClass> {
    if let FederationRouting::DefaultRoute { fqdn, .. } = &fed.access_edge.routing {
        if covers(fqdn) {
            return Some(SourceClass::DefaultRoute { fqdn: fqdn.clone() });
        }
    }
    if let Some(p) = fed
        .public_providers
        .iter()
        .find(|p| p.enabled && covers(&p.proxy_fqdn))
    {
        return Some(SourceClass::PublicProvider {
            identity: p.identity.clone(),
            proxy_fqdn: p.proxy_fqdn.clone(),
        });
    }
    // An IsLocal provider's proxy is inside our topology: a peer outside claiming it is not it.
    if let Some(h) = fed
        .hosting_providers
        .iter()
        .find(|h| h.enabled && !h.is_local && covers(&h.proxy_fqdn))
    {
        return Some(SourceClass::HostingProvider {
            identity: h.identity.clone(),
            proxy_fqdn: h.proxy_fqdn.clone(),
        });
    }
    let a = fed.allowed(from)?;
    let proxy = a.proxy_fqdn.as_ref()?;
    covers(proxy).then(|| SourceClass::DirectPartner {
        domain: a.domain.clone(),
        proxy_fqdn: proxy.clone(),
    })
}

fn discovery_on(fed: &Federation) -> bool {
    fed.access_edge.enable_partner_discovery
        && matches!(fed.access_edge.routing, FederationRouting::DnsSrv)
}

/// Classifies the Request-URI domain of an outbound request (b.4 step 3); inbound, the
/// target is local (`no_relay` refused the rest).
pub(super) fn classify_target(cx: &mut Ctx<'_>) -> Step {
    if cx.inbound() {
        cx.target = Some(TargetClass::Local);
        return ControlFlow::Continue(());
    }
    let fed = &cx.snap.federation;
    let domain = cx.target_host().to_ascii_lowercase();
    if let FederationRouting::DefaultRoute { fqdn, port, .. } = &fed.access_edge.routing {
        return cx.set_target(TargetClass::DefaultRoute {
            fqdn: fqdn.clone(),
            port: *port,
        });
    }
    if let Some((proxy, port)) = fed
        .allowed(&domain)
        .and_then(|a| a.proxy_fqdn.clone().map(|f| (f, a.proxy_port)))
    {
        return cx.set_target(TargetClass::DirectPartner {
            domain,
            proxy_fqdn: proxy,
            port,
        });
    }
    let records = match cx.srv(&domain) {
        Ok(r) => r,
        Err(r) => return cx.reject("classify-target", r),
    };
    // The first target in SRV order that is either a provider or in the domain decides.
    let chosen = records.iter().find(|t| {
        same_domain(&t.target, &domain)
            || fed.public_provider_by_fqdn(&t.target).is_some()
            || fed.hosting_provider_by_fqdn(&t.target).is_some()
    });
    let Some(chosen) = chosen else {
        return cx.reject("classify-target", Rejection::srv_no_match(&domain, records));
    };
    let provider = fed
        .public_provider_by_fqdn(&chosen.target)
        .map(|p| (p.identity.clone(), p.enabled, true))
        .or_else(|| {
            fed.hosting_provider_by_fqdn(&chosen.target)
                .map(|h| (h.identity.clone(), h.enabled, false))
        });
    let class = match provider {
        Some((identity, false, _)) => {
            let r = Rejection::provider_disabled(&fed.codes, &identity, &domain);
            return cx.reject("classify-target", r);
        }
        Some((identity, true, public)) => TargetClass::Provider {
            targets: records
                .iter()
                .filter(|t| t.target.eq_ignore_ascii_case(&chosen.target))
                .cloned()
                .collect(),
            domain,
            identity,
            public,
        },
        None => {
            let targets: Vec<SrvTarget> = records
                .iter()
                .filter(|t| same_domain(&t.target, &domain))
                .cloned()
                .collect();
            if fed.allowed(&domain).is_some() {
                TargetClass::AllowedDomain { domain, targets }
            } else if discovery_on(fed) {
                TargetClass::Discovered { domain, targets }
            } else {
                let r = Rejection::partner_not_allowed(&fed.codes, &domain);
                return cx.reject("classify-target", r);
            }
        }
    };
    cx.set_target(class)
}

impl Ctx<'_> {
    fn set_target(&mut self, class: TargetClass) -> Step {
        self.pass("classify-target", format_args!("{class:?}"));
        self.target = Some(class);
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_domain_rule() {
        for (target, domain, ok) in [
            ("sip.contoso.com", "contoso.com", true),
            ("sipfed.contoso.com.", "contoso.com", true),
            ("SIP.Contoso.com", "contoso.COM", true),
            ("sip.contoso-edge.com", "contoso.com", false),
            ("sip.it.contoso.com", "contoso.com", false),
            ("contoso.com", "contoso.com", false),
            ("federation.messenger.msn.com", "live.com", false),
        ] {
            assert_eq!(same_domain(target, domain), ok, "{target} for {domain}");
        }
    }
}
