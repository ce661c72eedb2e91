//! External access policy: which local users may reach federation, public providers and
//! public-provider audio/video. Resolution: user tag > site > global (b.3 step 10, b.4 step 1).

use std::fmt;
use std::ops::ControlFlow;

use super::{Ctx, Rejection, SourceClass, Step};
use crate::config::{ExternalAccessPolicy, Federation, PolicyScope};
use crate::sip::ms_headers::SourceNetwork;

/// Where the effective policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// A tag granted to the user.
    User,
    /// The user's site policy.
    Site,
    Global,
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicySource::User => "user",
            PolicySource::Site => "site",
            PolicySource::Global => "global",
        })
    }
}

/// The external access policy in force for `user@host`: the granted tag, else the
/// user's site policy, else global.
pub fn effective_policy(
    fed: &Federation,
    user: &str,
    host: &str,
) -> (ExternalAccessPolicy, PolicySource) {
    if let Some(grant) = fed.grant(user, host) {
        if let Some(p) = grant
            .policy
            .as_ref()
            .and_then(|tag| fed.policy(&PolicyScope::Tag(tag.clone())))
        {
            return (p.clone(), PolicySource::User);
        }
        if let Some(p) = grant
            .site
            .as_ref()
            .and_then(|site| fed.policy(&PolicyScope::Site(site.clone())))
        {
            return (p.clone(), PolicySource::Site);
        }
    }
    (fed.global_policy(), PolicySource::Global)
}

/// The edge switches (b.3 step 1, b.4 step 1): AllowFederatedUsers for federation and
/// providers, AllowOutsideUsers for remote users.
pub(super) fn apply_edge_switches(cx: &mut Ctx<'_>) -> Step {
    let fed = &cx.snap.federation;
    let remote_user = cx.inbound()
        && cx.peer.identity.is_anonymous()
        && cx.snap.is_local_domain(cx.req.from_host);
    if remote_user {
        if !fed.access_edge.allow_outside_users {
            return cx.reject(
                "edge-switches",
                Rejection::outside_users_disabled(&fed.codes),
            );
        }
        cx.pass("edge-switches", "AllowOutsideUsers");
        return ControlFlow::Continue(());
    }
    if !fed.access_edge.allow_federated_users {
        return cx.reject("edge-switches", Rejection::federation_disabled(&fed.codes));
    }
    cx.pass("edge-switches", "AllowFederatedUsers");
    ControlFlow::Continue(())
}

/// Outbound, before any DNS: a user whose policy allows neither federation nor public
/// cloud cannot reach any external domain.
pub(super) fn user_may_leave(cx: &mut Ctx<'_>) -> Step {
    if cx.inbound() || cx.ends_or_confirms_dialog() {
        return ControlFlow::Continue(());
    }
    let (user, host) = cx.local_user();
    let (p, from) = effective_policy(&cx.snap.federation, user, host);
    if p.enable_federation_access || p.enable_public_cloud_access {
        cx.pass(
            "user-may-leave",
            format_args!("{user}@{host}: {} ({from})", p.scope),
        );
        return ControlFlow::Continue(());
    }
    let r = Rejection::user_federation_denied(
        &cx.snap.federation.codes,
        &format!("{user}@{host}"),
        &p.scope.to_string(),
    );
    cx.reject("user-may-leave", r)
}

/// The local user's policy for the network on the other side: federation needs
/// EnableFederationAccess; public providers EnablePublicCloudAccess, and an INVITE
/// offering audio or video EnablePublicCloudAudioVideoAccess too.
pub(super) fn apply_access_policy(cx: &mut Ctx<'_>) -> Step {
    // Split-domain traffic stays inside the organisation: no external access policy.
    if cx.source == SourceClass::InternetUser
        || matches!(cx.source, SourceClass::SplitDomainUser { .. })
        || cx.ends_or_confirms_dialog()
    {
        return ControlFlow::Continue(());
    }
    let fed = &cx.snap.federation;
    let network = if cx.inbound() {
        cx.source.network(fed)
    } else {
        cx.target.as_ref().and_then(|t| t.network(fed))
    };
    let Some(network) = network else {
        return ControlFlow::Continue(());
    };
    let (user, host) = cx.local_user();
    let (p, from) = effective_policy(fed, user, host);
    type Refusal = fn(&crate::config::Codes, &str, &str) -> Rejection;
    let refusal: Option<Refusal> = match network {
        SourceNetwork::Federation if !p.enable_federation_access => {
            Some(Rejection::user_federation_denied)
        }
        SourceNetwork::PublicCloud if !p.enable_public_cloud_access => {
            Some(Rejection::user_public_cloud_denied)
        }
        SourceNetwork::PublicCloud
            if cx.req.is("INVITE")
                && cx.req.media.any()
                && !p.enable_public_cloud_audio_video_access =>
        {
            Some(Rejection::user_public_cloud_av_denied)
        }
        _ => None,
    };
    if let Some(refuse) = refusal {
        let r = refuse(&fed.codes, &format!("{user}@{host}"), &p.scope.to_string());
        return cx.reject("access-policy", r);
    }
    cx.pass(
        "access-policy",
        format_args!(
            "{user}@{host} may use {} ({}, from {from})",
            network.as_str(),
            p.scope
        ),
    );
    ControlFlow::Continue(())
}

impl<'a> Ctx<'a> {
    /// The local user the policy applies to: the recipient inbound, the sender outbound.
    fn local_user(&self) -> (&'a str, &'a str) {
        if self.inbound() {
            (self.target_user().unwrap_or(""), self.target_host())
        } else {
            (self.req.from_user.unwrap_or(""), self.req.from_host)
        }
    }
}
