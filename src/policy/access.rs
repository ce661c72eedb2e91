//! External access policy: which local users may reach federation, public providers and
//! public-provider audio/video. Resolution: user tag > site > global (b.3 step 10, b.4 step 1).

use std::fmt;
use std::ops::ControlFlow;

use super::{Ctx, Rejection, SourceClass, Step};
use crate::config::{ExternalAccessPolicy, Federation, PolicyScope};
use crate::sip::ms_headers::{SourceNetwork, Verified};

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

/// Who sends a request from outside without a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutsideUser {
    /// From one of our domains: one of our users, remote.
    Remote,
    /// From a foreign domain, to one of our meetings: an anonymous participant.
    AnonymousInMeeting,
}

impl Ctx<'_> {
    /// The outside user sending this request, if it comes from one (no certificate).
    fn outside_user(&self) -> Option<OutsideUser> {
        if !self.inbound() || !self.peer.identity.is_anonymous() {
            return None;
        }
        if self.snap.is_local_domain(self.req.from_host) {
            Some(OutsideUser::Remote)
        } else if self.req.meeting {
            Some(OutsideUser::AnonymousInMeeting)
        } else {
            // Anything else proves nothing: `classify_source` refuses it (anonymous-peer).
            None
        }
    }
}

/// The edge switches (b.3 step 1, b.4 step 1): AllowOutsideUsers for remote and anonymous
/// users, AllowFederatedUsers for federation and providers.
pub(super) fn apply_edge_switches(cx: &mut Ctx<'_>) -> Step {
    let fed = &cx.snap.federation;
    let Some(user) = cx.outside_user() else {
        if !fed.access_edge.allow_federated_users {
            return cx.reject("edge-switches", Rejection::federation_disabled(&fed.codes));
        }
        cx.pass("edge-switches", "AllowFederatedUsers");
        return ControlFlow::Continue(());
    };
    if !fed.access_edge.allow_outside_users {
        return cx.reject(
            "edge-switches",
            Rejection::outside_users_disabled(&fed.codes),
        );
    }
    match user {
        OutsideUser::Remote => remote_user_may_enter(cx),
        OutsideUser::AnonymousInMeeting => anonymous_user_may_join(cx),
    }
}

/// A remote user needs EnableOutsideAccess in their external access policy: the pool
/// refuses the others' sign-in from outside (b.1), which the edge plays here like the
/// rest of the simulated pool. Ending or confirming a dialog is never refused.
fn remote_user_may_enter(cx: &mut Ctx<'_>) -> Step {
    if cx.ends_or_confirms_dialog() {
        cx.pass("edge-switches", "AllowOutsideUsers; ends or confirms a dialog");
        return ControlFlow::Continue(());
    }
    let fed = &cx.snap.federation;
    let (user, host) = (cx.req.from_user.unwrap_or(""), cx.req.from_host);
    let (p, from) = effective_policy(fed, user, host);
    if !p.enable_outside_access {
        let r = Rejection::user_outside_access_denied(
            &fed.codes,
            &format!("{user}@{host}"),
            &p.scope.to_string(),
        );
        return cx.reject("edge-switches", r);
    }
    cx.pass(
        "edge-switches",
        format_args!(
            "AllowOutsideUsers; {user}@{host} has EnableOutsideAccess ({}, from {from})",
            p.scope
        ),
    );
    ControlFlow::Continue(())
}

/// An anonymous user may join one of our meetings only with AllowAnonymousUsers.
fn anonymous_user_may_join(cx: &mut Ctx<'_>) -> Step {
    let fed = &cx.snap.federation;
    if !fed.access_edge.allow_anonymous_users {
        let r = Rejection::anonymous_users_disabled(&fed.codes, cx.req.from_host);
        return cx.reject("edge-switches", r);
    }
    cx.pass(
        "edge-switches",
        "AllowOutsideUsers, AllowAnonymousUsers: an anonymous user joins a meeting",
    );
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

/// An unverified message (AlwaysUnverifiable, or the peer's own unverified marking) is
/// delivered only to a recipient whose contact list holds the sender (access-edge.md §a.1
/// VerificationLevel, §b.3 step 10). Requests inside a dialog belong to one already let in.
pub(super) fn apply_contact_list(cx: &mut Ctx<'_>) -> Step {
    if !cx.inbound() || cx.verified != Some(Verified::Unverified) || cx.req.in_dialog {
        return ControlFlow::Continue(());
    }
    let fed = &cx.snap.federation;
    let (user, host) = cx.local_user();
    let sender = format!(
        "{}@{}",
        cx.req.from_user.unwrap_or(""),
        cx.req.from_host
    );
    if fed.grant(user, host).is_some_and(|g| g.has_contact(&sender)) {
        cx.pass(
            "contact-list",
            format_args!("unverified {sender} is a contact of {user}@{host}"),
        );
        return ControlFlow::Continue(());
    }
    let r = Rejection::unverified_not_contact(&fed.codes, &sender, &format!("{user}@{host}"));
    cx.reject("contact-list", r)
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
