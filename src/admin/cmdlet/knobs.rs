//! No inert knob (issue 14): every parameter of every cmdlet the admin accepts either
//! changes a decision (verdict, route, marking, or a check of the trail `explain` and
//! `/decisions` show), changes state below the decision that a named test shows on the
//! wire, is refused, or only names and describes objects (what `Get-*` prints).
//!
//! The walk goes over `Cmdlet::ALL` and each cmdlet's parameter table: a parameter with no
//! entry in `effect` fails the test, so a new parameter cannot be added without saying
//! what it does.

use std::path::Path;
use std::time::Instant;

use super::*;
use crate::peer::Interface;
use crate::policy::fixtures::{lab, lab_dns, peer, pool};
use crate::policy::{
    explain, DiscoveredPartnerLimits, Explanation, LimitKey, RequestFacts, SrvAnswer,
};

/// Parameters no entry below covers yet. Empty: every parameter has its check.
const OTHER_BRANCH_PENDING: &[(&str, &str)] = &[];

/// A request whose verdict an entry compares before and after its cmdlet lines.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// From the pool: `user`@contoso.test sends `method` to someone@`domain`.
    Out(&'static str, &'static str, &'static str),
    /// From the pool: alice invites someone@`domain` with audio.
    OutAudio(&'static str),
    /// From outside: `user`@`domain` sends MESSAGE to alice through the peer proving `peer`,
    /// with this verification marking.
    In {
        user: &'static str,
        domain: &'static str,
        peer: &'static str,
        mark: Option<&'static str>,
    },
    /// From outside without a certificate: alice's own REGISTER (a remote user).
    RemoteAlice,
    /// From outside without a certificate: an anonymous user's INVITE to alice's meeting.
    AnonymousJoin,
    /// From the pool: bob@contoso.test sends MESSAGE to `user`@contoso.test (a user homed
    /// on-premises or at a hosting provider).
    ToUser(&'static str),
}

const VERIFIED: &str =
    "ms-source-type=AutoFederation;ms-ep-fqdn=remote.test;ms-source-verified-user=verified";

/// From northwind's edge (a discovered partner in the lab), marked verified.
const IN_NORTHWIND: Probe = Probe::In {
    user: "dave",
    domain: "northwind.test",
    peer: "sip.northwind.test",
    mark: Some(VERIFIED),
};
/// From Skype for a decoration domain that has no SRV record in the lab.
const IN_GMAIL_FROM_SKYPE: Probe = Probe::In {
    user: "erin",
    domain: "gmail.test",
    peer: "federation.messenger.msn.com",
    mark: Some(VERIFIED),
};
const IN_LIVE_FROM_SKYPE: Probe = Probe::In {
    user: "erin",
    domain: "live.com",
    peer: "federation.messenger.msn.com",
    mark: Some(VERIFIED),
};
const IN_TAILSPIN: Probe = Probe::In {
    user: "tom",
    domain: "tailspin.test",
    peer: "sipfed.online.lync.com",
    mark: Some(VERIFIED),
};
const IN_FABRIKAM: Probe = Probe::In {
    user: "frank",
    domain: "fabrikam.test",
    peer: "sip.fabrikam.test",
    mark: Some(VERIFIED),
};
const IN_FROM_CLEARING_HOUSE: Probe = Probe::In {
    user: "carl",
    domain: "anything.test",
    peer: "ch.clearing.test",
    mark: None,
};
const OUT_FABRIKAM: Probe = Probe::Out("alice", "fabrikam.test", "MESSAGE");
const OUT_LIVE: Probe = Probe::Out("alice", "live.com", "MESSAGE");

/// How a parameter shows its effect.
#[derive(Debug, Clone, Copy)]
enum Effect {
    /// The probe's decision or the checks of its trail differ between the lab after
    /// `before` and the lab after `after`.
    Decides {
        before: &'static [&'static str],
        after: &'static [&'static str],
        probe: Probe,
    },
    /// State below the decision: `check` tells the lab after `before` from the lab after
    /// `after`, and the named test shows it on the wire.
    Below {
        before: &'static [&'static str],
        after: &'static [&'static str],
        check: fn(&Snapshot) -> String,
        shown_by: (&'static str, &'static str),
    },
    /// The line is refused; the error says `says`.
    Refused {
        line: &'static str,
        says: &'static str,
    },
    /// The cmdlet runs a check of `domain` against the network and changes nothing; the
    /// named test shows the check's traffic on the wire.
    Checks {
        line: &'static str,
        domain: &'static str,
        shown_by: (&'static str, &'static str),
    },
    /// The parameter names, selects or describes objects: after `after`, `get` prints
    /// `shows` and not `hides`. No SIP path carries it.
    Prints {
        after: &'static [&'static str],
        get: &'static str,
        shows: &'static str,
        hides: &'static str,
    },
}

const NO_PROVIDERS_DEFAULT_ROUTE: &[&str] = &[
    "Remove-CsPublicProvider Skype",
    "Remove-CsHostingProvider LyncOnline",
    "Set-CsAccessEdgeConfiguration -EnablePartnerDiscovery $false -UseDefaultRouting -DefaultRouteFqdn ch.clearing.test",
];
const SKYPE_AGAIN: &str = "New-CsPublicProvider -Identity Skype -ProxyFqdn federation.messenger.msn.com -Enabled $true -NameDecorationRoutingDomain msn.com -NameDecorationExcludedDomainList msn.com,outlook.com,live.com,hotmail.com";

/// What `cmdlet`'s `param` does, shown by one concrete check.
fn effect(cmdlet: &str, param: &str) -> Option<Effect> {
    use Effect::*;
    let decides = |after: &'static [&'static str], probe| Decides {
        before: &[],
        after,
        probe,
    };
    let get_filter = |get: &'static str, shows, hides| Prints {
        after: &[
            "New-CsAllowedDomain -Identity litware.test -Comment other",
            "New-CsBlockedDomain -Identity wingtip.test",
            "New-CsExternalAccessPolicy -Identity Other",
            "New-CsPublicProvider -Identity Other -ProxyFqdn other.test -Enabled $false",
            "Set-CsLabContactList alice@contoso.test -Contacts dave@fabrikam.test",
            "Set-CsLabContactList bob@contoso.test -Contacts dave@fabrikam.test",
        ],
        get,
        shows,
        hides,
    };
    Some(match (cmdlet, param) {
        // === Get-* ===
        ("Get-CsAccessEdgeConfiguration", "Identity") => Refused {
            line: "Get-CsAccessEdgeConfiguration -Identity site:Paris",
            says: "the only Identity is global",
        },
        ("Get-CsPublicProvider", p) => get_filter(
            if p == "Identity" { "Get-CsPublicProvider -Identity skype" } else { "Get-CsPublicProvider -Filter Sk*" },
            "Identity                         : Skype",
            "Other",
        ),
        ("Get-CsHostingProvider", p) => Prints {
            after: &["New-CsHostingProvider -Identity Other -ProxyFqdn other.test -Enabled $false"],
            get: if p == "Identity" { "Get-CsHostingProvider LyncOnline" } else { "Get-CsHostingProvider -Filter Lync*" },
            shows: "LyncOnline",
            hides: "Other",
        },
        ("Get-CsAllowedDomain", p) => get_filter(
            if p == "Identity" { "Get-CsAllowedDomain fabrikam.test" } else { "Get-CsAllowedDomain -Filter fab*" },
            "fabrikam.test",
            "litware",
        ),
        ("Get-CsBlockedDomain", p) => get_filter(
            if p == "Identity" { "Get-CsBlockedDomain adatum.test" } else { "Get-CsBlockedDomain -Filter ada*" },
            "adatum.test",
            "wingtip",
        ),
        ("Get-CsExternalAccessPolicy", p) => get_filter(
            if p == "Identity" { "Get-CsExternalAccessPolicy NoFederation" } else { "Get-CsExternalAccessPolicy -Filter Tag:NoF*" },
            "Tag:NoFederation",
            "Other",
        ),
        ("Get-CsLabContactList", p) => get_filter(
            if p == "Identity" { "Get-CsLabContactList sip:alice@contoso.test" } else { "Get-CsLabContactList -Filter ali*" },
            "alice@contoso.test",
            "bob",
        ),

        // === Set-CsAccessEdgeConfiguration ===
        ("Set-CsAccessEdgeConfiguration", "Identity") => Refused {
            line: "Set-CsAccessEdgeConfiguration -Identity site:Paris -AllowFederatedUsers $true",
            says: "the only Identity is global",
        },
        ("Set-CsAccessEdgeConfiguration", "AllowFederatedUsers") => decides(
            &["Set-CsAccessEdgeConfiguration -AllowFederatedUsers $false"],
            OUT_FABRIKAM,
        ),
        ("Set-CsAccessEdgeConfiguration", "AllowOutsideUsers") => decides(
            &["Set-CsAccessEdgeConfiguration -AllowOutsideUsers $false"],
            Probe::RemoteAlice,
        ),
        ("Set-CsAccessEdgeConfiguration", "AllowAnonymousUsers") => decides(
            &["Set-CsAccessEdgeConfiguration -AllowAnonymousUsers $true"],
            Probe::AnonymousJoin,
        ),
        ("Set-CsAccessEdgeConfiguration", "EnablePartnerDiscovery") => decides(
            &["Set-CsAccessEdgeConfiguration -EnablePartnerDiscovery $false"],
            IN_NORTHWIND,
        ),
        ("Set-CsAccessEdgeConfiguration", "UseDnsSrvRouting") => Decides {
            before: NO_PROVIDERS_DEFAULT_ROUTE,
            after: &[
                "Remove-CsPublicProvider Skype",
                "Remove-CsHostingProvider LyncOnline",
                "Set-CsAccessEdgeConfiguration -EnablePartnerDiscovery $false -UseDefaultRouting -DefaultRouteFqdn ch.clearing.test",
                "Set-CsAccessEdgeConfiguration -UseDnsSrvRouting",
            ],
            probe: OUT_FABRIKAM,
        },
        ("Set-CsAccessEdgeConfiguration", "UseDefaultRouting" | "DefaultRouteFqdn") => Decides {
            before: &[
                "Remove-CsPublicProvider Skype",
                "Remove-CsHostingProvider LyncOnline",
                "Set-CsAccessEdgeConfiguration -EnablePartnerDiscovery $false",
            ],
            after: NO_PROVIDERS_DEFAULT_ROUTE,
            probe: OUT_FABRIKAM,
        },
        ("Set-CsAccessEdgeConfiguration", "IsPublicProvider") => Decides {
            before: NO_PROVIDERS_DEFAULT_ROUTE,
            after: &[
                "Remove-CsPublicProvider Skype",
                "Remove-CsHostingProvider LyncOnline",
                "Set-CsAccessEdgeConfiguration -EnablePartnerDiscovery $false -UseDefaultRouting -DefaultRouteFqdn ch.clearing.test -IsPublicProvider $true",
            ],
            probe: Probe::Out("bob", "fabrikam.test", "MESSAGE"),
        },
        ("Set-CsAccessEdgeConfiguration", "VerificationLevel") => Decides {
            before: NO_PROVIDERS_DEFAULT_ROUTE,
            after: &[
                "Remove-CsPublicProvider Skype",
                "Remove-CsHostingProvider LyncOnline",
                "Set-CsAccessEdgeConfiguration -EnablePartnerDiscovery $false -UseDefaultRouting -DefaultRouteFqdn ch.clearing.test -VerificationLevel AlwaysUnverifiable",
            ],
            probe: IN_FROM_CLEARING_HOUSE,
        },
        ("Set-CsAccessEdgeConfiguration", "DiscoveredPartnerVerificationLevel") => decides(
            &["Set-CsAccessEdgeConfiguration -DiscoveredPartnerVerificationLevel AlwaysUnverifiable"],
            IN_NORTHWIND,
        ),
        ("Set-CsAccessEdgeConfiguration", "MarkSourceVerifiableOnOutgoingMessages") => decides(
            &["Set-CsAccessEdgeConfiguration -MarkSourceVerifiableOnOutgoingMessages $false"],
            OUT_FABRIKAM,
        ),
        ("Set-CsAccessEdgeConfiguration", "DiscoveredPartnerStandardRate") => Below {
            before: &[],
            after: &["Set-CsAccessEdgeConfiguration -DiscoveredPartnerStandardRate 1"],
            check: |s| admitted(s, &["alice", "alice", "alice"]),
            shown_by: (
                "tests/integration/federation.rs",
                "discovered_partners_are_rate_and_contact_limited",
            ),
        },
        ("Set-CsAccessEdgeConfiguration", "MaxContactsPerDiscoveredPartner") => Below {
            before: &[],
            after: &["Set-CsAccessEdgeConfiguration -MaxContactsPerDiscoveredPartner 1"],
            check: |s| admitted(s, &["alice", "bob"]),
            shown_by: (
                "tests/integration/federation.rs",
                "discovered_partners_are_rate_and_contact_limited",
            ),
        },
        ("Set-CsAccessEdgeConfiguration", "EnableDiscoveredPartnerContactsLimit") => Below {
            before: &["Set-CsAccessEdgeConfiguration -MaxContactsPerDiscoveredPartner 1"],
            after: &["Set-CsAccessEdgeConfiguration -MaxContactsPerDiscoveredPartner 1 -EnableDiscoveredPartnerContactsLimit $false"],
            check: |s| admitted(s, &["alice", "bob"]),
            shown_by: (
                "tests/integration/federation.rs",
                "discovered_partners_are_rate_and_contact_limited",
            ),
        },
        ("Set-CsAccessEdgeConfiguration", "DnsSrvCacheRecordCount") => Below {
            before: &[],
            after: &["Set-CsAccessEdgeConfiguration -DnsSrvCacheRecordCount 1"],
            // The edge's resolver reads this value at every insertion (edge.rs).
            check: |s| s.federation.access_edge.dns_srv_cache_record_count.to_string(),
            shown_by: (
                "src/dns/cache.rs",
                "the_capacity_follows_its_source_at_each_insertion",
            ),
        },

        // === public providers ===
        ("New-CsPublicProvider", "Identity" | "ProxyFqdn" | "Enabled") => Decides {
            before: &["Remove-CsPublicProvider Skype"],
            after: &["Remove-CsPublicProvider Skype", SKYPE_AGAIN],
            probe: OUT_LIVE,
        },
        ("New-CsPublicProvider", "VerificationLevel") => Decides {
            before: &["Remove-CsPublicProvider Skype", SKYPE_AGAIN],
            after: &[
                "Remove-CsPublicProvider Skype",
                "New-CsPublicProvider -Identity Skype -ProxyFqdn federation.messenger.msn.com -Enabled $true -NameDecorationExcludedDomainList live.com -VerificationLevel AlwaysUnverifiable",
            ],
            probe: IN_LIVE_FROM_SKYPE,
        },
        ("New-CsPublicProvider", "NameDecorationDomain") => Decides {
            before: &["Remove-CsPublicProvider Skype", SKYPE_AGAIN],
            after: &[
                "Remove-CsPublicProvider Skype",
                "New-CsPublicProvider -Identity Skype -ProxyFqdn federation.messenger.msn.com -Enabled $true -NameDecorationDomain gmail.test",
            ],
            probe: IN_GMAIL_FROM_SKYPE,
        },
        ("New-CsPublicProvider", "NameDecorationRoutingDomain") => Decides {
            before: &["Remove-CsPublicProvider Skype", SKYPE_AGAIN],
            after: &[
                "Remove-CsPublicProvider Skype",
                "New-CsPublicProvider -Identity Skype -ProxyFqdn federation.messenger.msn.com -Enabled $true -NameDecorationRoutingDomain gmail.test",
            ],
            probe: IN_GMAIL_FROM_SKYPE,
        },
        ("New-CsPublicProvider", "NameDecorationExcludedDomainList") => Decides {
            before: &["Remove-CsPublicProvider Skype", SKYPE_AGAIN],
            after: &[
                "Remove-CsPublicProvider Skype",
                "New-CsPublicProvider -Identity Skype -ProxyFqdn federation.messenger.msn.com -Enabled $true -NameDecorationExcludedDomainList gmail.test",
            ],
            probe: IN_GMAIL_FROM_SKYPE,
        },
        ("New-CsPublicProvider", "IconUrl") => Prints {
            after: &[
                "Remove-CsPublicProvider Skype",
                "New-CsPublicProvider Skype -ProxyFqdn federation.messenger.msn.com -Enabled 1 -IconUrl https://images.test/skype.png",
            ],
            get: "Get-CsPublicProvider Skype",
            shows: "IconUrl                          : https://images.test/skype.png",
            hides: "Messenger_16x16",
        },
        ("Set-CsPublicProvider", "IconUrl") => Prints {
            after: &["Set-CsPublicProvider Skype -IconUrl https://images.test/skype.png"],
            get: "Get-CsPublicProvider Skype",
            shows: "IconUrl                          : https://images.test/skype.png",
            hides: "Messenger_16x16",
        },
        ("Set-CsPublicProvider", "Identity" | "Enabled") => {
            decides(&["Set-CsPublicProvider -Identity Skype -Enabled $false"], OUT_LIVE)
        }
        ("Set-CsPublicProvider", "ProxyFqdn") => decides(
            &["Set-CsPublicProvider Skype -ProxyFqdn federation.other.test"],
            OUT_LIVE,
        ),
        ("Set-CsPublicProvider", "VerificationLevel") => decides(
            &["Set-CsPublicProvider Skype -VerificationLevel AlwaysUnverifiable"],
            IN_LIVE_FROM_SKYPE,
        ),
        ("Set-CsPublicProvider", "NameDecorationDomain") => decides(
            &["Set-CsPublicProvider Skype -NameDecorationDomain gmail.test"],
            IN_GMAIL_FROM_SKYPE,
        ),
        ("Set-CsPublicProvider", "NameDecorationRoutingDomain") => decides(
            &["Set-CsPublicProvider Skype -NameDecorationRoutingDomain gmail.test"],
            IN_GMAIL_FROM_SKYPE,
        ),
        ("Set-CsPublicProvider", "NameDecorationExcludedDomainList") => decides(
            &["Set-CsPublicProvider Skype -NameDecorationExcludedDomainList msn.com,gmail.test"],
            IN_GMAIL_FROM_SKYPE,
        ),
        ("Remove-CsPublicProvider", "Identity") => {
            decides(&["Remove-CsPublicProvider -Identity Skype"], OUT_LIVE)
        }
        // PowerShell's prompt controls: the admin never prompts, so the removal happens
        // as with -Force.
        ("Remove-CsPublicProvider", "Force" | "Confirm") => decides(
            &["Remove-CsPublicProvider Skype -Force -Confirm:$false"],
            OUT_LIVE,
        ),

        // === hosting providers ===
        ("New-CsHostingProvider", "Identity" | "ProxyFqdn" | "Enabled") => Decides {
            before: &["Remove-CsHostingProvider LyncOnline"],
            after: &[
                "Remove-CsHostingProvider LyncOnline",
                "New-CsHostingProvider -Identity LyncOnline -ProxyFqdn sipfed.online.lync.com -Enabled $false",
            ],
            probe: Probe::Out("alice", "tailspin.test", "MESSAGE"),
        },
        ("New-CsHostingProvider", "VerificationLevel") => Decides {
            before: &[
                "Remove-CsHostingProvider LyncOnline",
                "New-CsHostingProvider -Identity LyncOnline -ProxyFqdn sipfed.online.lync.com -Enabled $true",
            ],
            after: &[
                "Remove-CsHostingProvider LyncOnline",
                "New-CsHostingProvider -Identity LyncOnline -ProxyFqdn sipfed.online.lync.com -Enabled $true -VerificationLevel AlwaysUnverifiable",
            ],
            probe: IN_TAILSPIN,
        },
        ("Set-CsHostingProvider", "Identity" | "Enabled") => decides(
            &["Set-CsHostingProvider -Identity LyncOnline -Enabled $false"],
            Probe::Out("alice", "tailspin.test", "MESSAGE"),
        ),
        // What the provider's clients are told (hybrid users' autodiscovery, their SIP
        // port): no SIP path of the edge carries either.
        ("New-CsHostingProvider", "AutodiscoverUrl" | "SipClientPort") => Prints {
            after: &[
                "Remove-CsHostingProvider LyncOnline",
                "New-CsHostingProvider LyncOnline -ProxyFqdn sipfed.online.lync.com -Enabled 1 -AutodiscoverUrl https://webdir.test/Autodiscover -SipClientPort 5443",
            ],
            get: "Get-CsHostingProvider LyncOnline",
            shows: "AutodiscoverUrl           : https://webdir.test/Autodiscover\nSipClientPort             : 5443",
            hides: "webdir.online.lync.com",
        },
        ("Set-CsHostingProvider", "AutodiscoverUrl" | "SipClientPort") => Prints {
            after: &["Set-CsHostingProvider LyncOnline -AutodiscoverUrl https://webdir.test/Autodiscover -SipClientPort 5443"],
            get: "Get-CsHostingProvider LyncOnline",
            shows: "AutodiscoverUrl           : https://webdir.test/Autodiscover\nSipClientPort             : 5443",
            hides: "webdir.online.lync.com",
        },
        ("Set-CsHostingProvider", "VerificationLevel") => decides(
            &["Set-CsHostingProvider LyncOnline -VerificationLevel AlwaysUnverifiable"],
            IN_TAILSPIN,
        ),
        ("Remove-CsHostingProvider", "Identity" | "Force" | "Confirm") => decides(
            &["Remove-CsHostingProvider -Identity LyncOnline -Force -Confirm:$false"],
            Probe::Out("alice", "tailspin.test", "MESSAGE"),
        ),

        // === allowed domains ===
        ("New-CsAllowedDomain", "Identity") => {
            decides(&["New-CsAllowedDomain -Identity northwind.test"], IN_NORTHWIND)
        }
        ("New-CsAllowedDomain", "Domain") => {
            decides(&["New-CsAllowedDomain -Domain northwind.test"], IN_NORTHWIND)
        }
        ("New-CsAllowedDomain", "ProxyFqdn") => Decides {
            before: &["New-CsAllowedDomain northwind.test"],
            after: &["New-CsAllowedDomain northwind.test -ProxyFqdn sip.northwind.test:5071"],
            probe: Probe::Out("alice", "northwind.test", "MESSAGE"),
        },
        ("New-CsAllowedDomain", "MarkForMonitoring") => Decides {
            before: &["New-CsAllowedDomain northwind.test"],
            after: &["New-CsAllowedDomain northwind.test -MarkForMonitoring $true"],
            probe: IN_NORTHWIND,
        },
        ("New-CsAllowedDomain", "VerificationLevel") => Decides {
            before: &["New-CsAllowedDomain northwind.test"],
            after: &["New-CsAllowedDomain northwind.test -VerificationLevel AlwaysUnverifiable"],
            probe: IN_NORTHWIND,
        },
        ("New-CsAllowedDomain", "Comment") => Prints {
            after: &["New-CsAllowedDomain northwind.test -Comment 'partner since 2013'"],
            get: "Get-CsAllowedDomain northwind.test",
            shows: "Comment           : partner since 2013",
            hides: "Federated partner, direct",
        },
        ("Set-CsAllowedDomain", "Comment") => Prints {
            after: &["Set-CsAllowedDomain fabrikam.test -Comment 'partner since 2013'"],
            get: "Get-CsAllowedDomain fabrikam.test",
            shows: "Comment           : partner since 2013",
            hides: "Federated partner, direct",
        },
        ("Set-CsAllowedDomain", "Identity" | "ProxyFqdn") => decides(
            &["Set-CsAllowedDomain -Identity fabrikam.test -ProxyFqdn $null"],
            OUT_FABRIKAM,
        ),
        ("Set-CsAllowedDomain", "MarkForMonitoring") => decides(
            &["Set-CsAllowedDomain fabrikam.test -MarkForMonitoring $true"],
            IN_FABRIKAM,
        ),
        ("Set-CsAllowedDomain", "VerificationLevel") => decides(
            &["Set-CsAllowedDomain fabrikam.test -VerificationLevel AlwaysUnverifiable"],
            IN_FABRIKAM,
        ),
        ("Remove-CsAllowedDomain", "Identity" | "Force" | "Confirm") => decides(
            &["Remove-CsAllowedDomain -Identity fabrikam.test -Force -Confirm:$false"],
            OUT_FABRIKAM,
        ),

        // === blocked domains ===
        ("New-CsBlockedDomain", "Identity") => {
            decides(&["New-CsBlockedDomain -Identity northwind.test"], IN_NORTHWIND)
        }
        ("New-CsBlockedDomain", "Domain") => {
            decides(&["New-CsBlockedDomain -Domain northwind.test"], IN_NORTHWIND)
        }
        ("New-CsBlockedDomain", "Comment") => Prints {
            after: &["New-CsBlockedDomain wingtip.test -Comment 'never contact'"],
            get: "Get-CsBlockedDomain wingtip.test",
            shows: "Comment  : never contact",
            hides: "Has SRV records",
        },
        ("Set-CsBlockedDomain", "Identity" | "Comment") => Prints {
            after: &["Set-CsBlockedDomain -Identity adatum.test -Comment 'never contact'"],
            get: "Get-CsBlockedDomain adatum.test",
            shows: "Comment  : never contact",
            hides: "Has SRV records",
        },
        ("Remove-CsBlockedDomain", "Identity" | "Force" | "Confirm") => decides(
            &["Remove-CsBlockedDomain -Identity adatum.test -Force -Confirm:$false"],
            Probe::Out("alice", "adatum.test", "MESSAGE"),
        ),

        // === external access policies ===
        ("New-CsExternalAccessPolicy", "Identity") => decides(
            &[
                "New-CsExternalAccessPolicy -Identity Closed",
                "Grant-CsExternalAccessPolicy alice Closed",
            ],
            OUT_FABRIKAM,
        ),
        ("New-CsExternalAccessPolicy", "EnableFederationAccess") => Decides {
            before: &[
                "New-CsExternalAccessPolicy -Identity X -EnablePublicCloudAccess $true",
                "Grant-CsExternalAccessPolicy alice X",
            ],
            after: &[
                "New-CsExternalAccessPolicy -Identity X -EnablePublicCloudAccess $true -EnableFederationAccess $true",
                "Grant-CsExternalAccessPolicy alice X",
            ],
            probe: OUT_FABRIKAM,
        },
        ("New-CsExternalAccessPolicy", "EnablePublicCloudAccess") => Decides {
            before: &[
                "New-CsExternalAccessPolicy -Identity X -EnableFederationAccess $true",
                "Grant-CsExternalAccessPolicy alice X",
            ],
            after: &[
                "New-CsExternalAccessPolicy -Identity X -EnableFederationAccess $true -EnablePublicCloudAccess $true",
                "Grant-CsExternalAccessPolicy alice X",
            ],
            probe: OUT_LIVE,
        },
        ("New-CsExternalAccessPolicy", "EnablePublicCloudAudioVideoAccess") => Decides {
            before: &[
                "New-CsExternalAccessPolicy -Identity X -EnablePublicCloudAccess $true",
                "Grant-CsExternalAccessPolicy alice X",
            ],
            after: &[
                "New-CsExternalAccessPolicy -Identity X -EnablePublicCloudAccess $true -EnablePublicCloudAudioVideoAccess $true",
                "Grant-CsExternalAccessPolicy alice X",
            ],
            probe: Probe::OutAudio("live.com"),
        },
        ("New-CsExternalAccessPolicy", "EnableOutsideAccess") => Decides {
            before: &[
                "New-CsExternalAccessPolicy -Identity X",
                "Grant-CsExternalAccessPolicy alice X",
            ],
            after: &[
                "New-CsExternalAccessPolicy -Identity X -EnableOutsideAccess $true",
                "Grant-CsExternalAccessPolicy alice X",
            ],
            probe: Probe::RemoteAlice,
        },
        ("New-CsExternalAccessPolicy", "EnableXmppAccess") => Refused {
            line: "New-CsExternalAccessPolicy -Identity X -EnableXmppAccess $true",
            says: "EnableXmppAccess is not modelled",
        },
        ("New-CsExternalAccessPolicy", "Description") => Prints {
            after: &["New-CsExternalAccessPolicy X -Description contractors"],
            get: "Get-CsExternalAccessPolicy X",
            shows: "Description                       : contractors",
            hides: "Tag:NoFederation",
        },
        ("Set-CsExternalAccessPolicy", "Description") => Prints {
            after: &["Set-CsExternalAccessPolicy NoFederation -Description 'contractors'"],
            get: "Get-CsExternalAccessPolicy NoFederation",
            shows: "Description                       : contractors",
            hides: "Tag:Other",
        },
        ("Set-CsExternalAccessPolicy", "Identity" | "EnableFederationAccess") => decides(
            &["Set-CsExternalAccessPolicy -Identity global -EnableFederationAccess $false"],
            OUT_FABRIKAM,
        ),
        ("Set-CsExternalAccessPolicy", "EnablePublicCloudAccess") => decides(
            &["Set-CsExternalAccessPolicy global -EnablePublicCloudAccess $false"],
            OUT_LIVE,
        ),
        ("Set-CsExternalAccessPolicy", "EnablePublicCloudAudioVideoAccess") => decides(
            &["Set-CsExternalAccessPolicy global -EnablePublicCloudAudioVideoAccess $true"],
            Probe::OutAudio("live.com"),
        ),
        ("Set-CsExternalAccessPolicy", "EnableOutsideAccess") => decides(
            &["Set-CsExternalAccessPolicy global -EnableOutsideAccess $false"],
            Probe::RemoteAlice,
        ),
        ("Set-CsExternalAccessPolicy", "EnableXmppAccess") => Refused {
            line: "Set-CsExternalAccessPolicy global -EnableXmppAccess $true",
            says: "EnableXmppAccess is not modelled",
        },
        ("Remove-CsExternalAccessPolicy", "Identity" | "Force" | "Confirm") => decides(
            &["Remove-CsExternalAccessPolicy -Identity global -Force -Confirm:$false"],
            OUT_FABRIKAM,
        ),
        ("Grant-CsExternalAccessPolicy", "Identity" | "PolicyName") => decides(
            &["Grant-CsExternalAccessPolicy -Identity alice@contoso.test -PolicyName NoFederation"],
            OUT_FABRIKAM,
        ),

        // === the lab's simulated contact lists ===
        ("Set-CsLabContactList", "Identity" | "Contacts") => Decides {
            before: &["Set-CsAccessEdgeConfiguration -DiscoveredPartnerVerificationLevel AlwaysUnverifiable"],
            after: &[
                "Set-CsAccessEdgeConfiguration -DiscoveredPartnerVerificationLevel AlwaysUnverifiable",
                "Set-CsLabContactList -Identity alice@contoso.test -Contacts sip:dave@northwind.test",
            ],
            probe: IN_NORTHWIND,
        },

        // === split domain: users homed at a hosting provider that shares our domains ===
        ("New-CsHostingProvider", "EnabledSharedAddressSpace" | "HostsOCSUsers") => Decides {
            before: &[
                "Remove-CsHostingProvider LyncOnline",
                "New-CsHostingProvider -Identity LyncOnline -ProxyFqdn sipfed.online.lync.com -Enabled $true",
            ],
            after: &[
                "Remove-CsHostingProvider LyncOnline",
                "New-CsHostingProvider -Identity LyncOnline -ProxyFqdn sipfed.online.lync.com -Enabled $true -EnabledSharedAddressSpace $true -HostsOCSUsers $true",
                "Move-CsUser -Identity dave@contoso.test -Target sipfed.online.lync.com",
            ],
            probe: Probe::ToUser("dave"),
        },
        // While a user is homed there, the provider must keep sharing and hosting.
        ("Set-CsHostingProvider", "EnabledSharedAddressSpace") => Refused {
            line: "Set-CsHostingProvider LyncOnline -EnabledSharedAddressSpace $false",
            says: "is homed at",
        },
        ("Set-CsHostingProvider", "HostsOCSUsers") => Refused {
            line: "Set-CsHostingProvider LyncOnline -HostsOCSUsers $false",
            says: "is homed at",
        },
        ("New-CsHostingProvider", "IsLocal") => Decides {
            before: &[
                "Remove-CsHostingProvider LyncOnline",
                "New-CsHostingProvider -Identity LyncOnline -ProxyFqdn sipfed.online.lync.com -Enabled $true -EnabledSharedAddressSpace $true -HostsOCSUsers $true",
                "Move-CsUser -Identity dave@contoso.test -Target sipfed.online.lync.com",
            ],
            after: &[
                "Remove-CsHostingProvider LyncOnline",
                "New-CsHostingProvider -Identity LyncOnline -ProxyFqdn sipfed.online.lync.com -Enabled $true -EnabledSharedAddressSpace $true -HostsOCSUsers $true -IsLocal $true",
                "Move-CsUser -Identity dave@contoso.test -Target sipfed.online.lync.com",
            ],
            probe: Probe::ToUser("dave"),
        },
        ("Set-CsHostingProvider", "IsLocal") => decides(
            &["Set-CsHostingProvider LyncOnline -IsLocal $true"],
            Probe::ToUser("dave"),
        ),
        ("Move-CsUser", "Identity" | "Target") => decides(
            &["Move-CsUser -Identity alice@contoso.test -Target sipfed.online.lync.com"],
            Probe::ToUser("alice"),
        ),
        ("Get-CsUser", "Identity") => Prints {
            after: &[],
            get: "Get-CsUser -Identity dave@contoso.test",
            shows: "sipfed.online.lync.com",
            hides: "carol",
        },
        ("Get-CsUser", "Filter") => Prints {
            after: &[],
            get: "Get-CsUser -Filter dav*",
            shows: "dave@contoso.test",
            hides: "carol",
        },

        // === the outbound connections and the discovered-partner report ===
        ("Set-CsAccessEdgeConfiguration", "OutgoingTlsCountForFederatedPartners") => Below {
            before: &[],
            after: &["Set-CsAccessEdgeConfiguration -OutgoingTlsCountForFederatedPartners 1"],
            check: |s| format!("{} per partner", s.connections_per_next_hop(Interface::External)),
            shown_by: (
                "tests/integration/partner_traffic.rs",
                "outgoing_tls_count_for_federated_partners_is_how_many_connections_a_partner_gets_under_load",
            ),
        },
        ("Set-CsAccessEdgeConfiguration", "DiscoveredPartnerReportPeriodMinutes") => Below {
            before: &[],
            after: &["Set-CsAccessEdgeConfiguration -DiscoveredPartnerReportPeriodMinutes 1"],
            check: |s| {
                let mut limits = DiscoveredPartnerLimits::new();
                let t0 = Instant::now();
                limits.report(&s.federation, t0);
                let later = t0 + std::time::Duration::from_secs(120);
                format!("reported after 2 minutes: {}", limits.report(&s.federation, later).is_some())
            },
            shown_by: (
                "tests/integration/partner_traffic.rs",
                "a_discovered_partner_whose_requests_mostly_fail_is_throttled_watched_and_released",
            ),
        },

        // === checks that change nothing ===
        ("Test-CsFederatedPartner", "Domain") => Checks {
            line: "Test-CsFederatedPartner -Domain fabrikam.test",
            domain: "fabrikam.test",
            shown_by: (
                "tests/integration/partner.rs",
                "fabrikam_skype_and_northwind_pass_and_each_peer_receives_the_options",
            ),
        },
        _ => return None,
    })
}

/// Moves the lab's online user home, which removing the hosting provider requires first.
const DAVE_HOME: &str = "Move-CsUser -Identity dave@contoso.test -Target pool.contoso.test";

fn lab_after(lines: &[&str]) -> Result<Snapshot, String> {
    // An entry that removes LyncOnline means the provider, not dave's home: he moves first.
    let removes_provider = lines
        .iter()
        .any(|l| l.starts_with("Remove-CsHostingProvider"));
    let first = if removes_provider {
        &[DAVE_HOME][..]
    } else {
        &[]
    };
    first
        .iter()
        .chain(lines)
        .try_fold(lab(), |s, line| match apply(&s, line) {
            Ok(r) => Ok(r.snapshot.unwrap_or(s)),
            Err(e) => Err(format!("{line}: {e}")),
        })
}

fn run_probe(probe: Probe, snap: &Snapshot) -> Explanation {
    let to_alice = RequestFacts {
        method: "MESSAGE",
        uri_user: Some("alice"),
        uri_host: "contoso.test",
        to_user: Some("alice"),
        to_host: "contoso.test",
        max_forwards: Some(70),
        ..RequestFacts::default()
    };
    let out = |user, domain, method| RequestFacts {
        method,
        uri_user: Some("someone"),
        uri_host: domain,
        from_user: Some(user),
        from_host: "contoso.test",
        to_user: Some("someone"),
        to_host: domain,
        max_forwards: Some(70),
        ..RequestFacts::default()
    };
    let pool = pool();
    // gmail.test, a decoration domain of no provider in the lab, has no SRV record.
    let dns = lab_dns().with_srv("gmail.test", SrvAnswer::NoRecords);
    match probe {
        Probe::Out(user, domain, method) => explain(&out(user, domain, method), &pool, snap, &dns),
        Probe::ToUser(user) => {
            let req = RequestFacts {
                uri_user: Some(user),
                to_user: Some(user),
                from_user: Some("bob"),
                from_host: "contoso.test",
                ..to_alice
            };
            explain(&req, &pool, snap, &dns)
        }
        Probe::OutAudio(domain) => {
            let mut req = out("alice", domain, "INVITE");
            req.media.audio = true;
            explain(&req, &pool, snap, &dns)
        }
        Probe::In {
            user,
            domain,
            peer: name,
            mark,
        } => {
            let req = RequestFacts {
                from_user: Some(user),
                from_host: domain,
                trust_header: mark,
                ..to_alice
            };
            explain(&req, &peer(Interface::External, &[name]), snap, &dns)
        }
        Probe::RemoteAlice => {
            let req = RequestFacts {
                method: "REGISTER",
                from_user: Some("alice"),
                from_host: "contoso.test",
                ..to_alice
            };
            explain(&req, &peer(Interface::External, &[]), snap, &dns)
        }
        Probe::AnonymousJoin => {
            let req = RequestFacts {
                method: "INVITE",
                from_user: Some("guest"),
                from_host: "anonymous.invalid",
                meeting: true,
                ..to_alice
            };
            explain(&req, &peer(Interface::External, &[]), snap, &dns)
        }
    }
}

/// Which of northwind's new requests to these alice-or-bob users the discovered-partner
/// limits admit, sent in the same instant.
fn admitted(snap: &Snapshot, users: &[&str]) -> String {
    let mut limits = DiscoveredPartnerLimits::new();
    let now = Instant::now();
    users
        .iter()
        .map(|u| {
            let key = LimitKey {
                partner: "northwind.test".into(),
                local_uri: format!("{u}@contoso.test"),
                new_request: true,
            };
            match limits.admit(&snap.federation, &key, now) {
                Ok(()) => format!("{u}: admitted"),
                Err(r) => format!("{u}: {}", r.rule),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn names(e: &Explanation) -> Vec<&'static str> {
    e.trail.iter().map(|c| c.name).collect()
}

/// Whether `file` (relative to the crate) defines the test `test`.
fn test_exists(file: &str, test: &str) -> Result<(), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{file}: {e}"))?;
    if text.contains(&format!("fn {test}(")) {
        Ok(())
    } else {
        Err(format!("{file} has no test `{test}`"))
    }
}

/// Runs the entry's check; `Err` says what did not hold.
fn check(cmdlet: &str, param: &str, effect: Effect) -> Result<(), String> {
    let named = |lines: &[&str]| {
        lines.iter().any(|l| {
            l.to_ascii_lowercase()
                .starts_with(&cmdlet.to_ascii_lowercase())
                && (param == "Identity" || l.contains(&format!("-{param}")))
        })
    };
    match effect {
        Effect::Decides {
            before,
            after,
            probe,
        } => {
            if !named(after) {
                return Err(format!("no line of {after:?} runs {cmdlet} -{param}"));
            }
            let (b, a) = (
                run_probe(probe, &lab_after(before)?),
                run_probe(probe, &lab_after(after)?),
            );
            if b.decision == a.decision && names(&b) == names(&a) {
                return Err(format!(
                    "{probe:?} got the same decision and checks: {:?}",
                    a.decision
                ));
            }
        }
        Effect::Below {
            before,
            after,
            check,
            shown_by: (file, test),
        } => {
            if !named(after) && !named(before) {
                return Err(format!("no line runs {cmdlet} -{param}"));
            }
            let (b, a) = (check(&lab_after(before)?), check(&lab_after(after)?));
            if a == b {
                return Err(format!("the state below the decision is the same: {a}"));
            }
            test_exists(file, test)?;
        }
        Effect::Refused { line, says } => {
            if !named(&[line]) {
                return Err(format!("`{line}` does not run {cmdlet} -{param}"));
            }
            match apply(&lab(), line) {
                Ok(_) => return Err(format!("`{line}` was accepted")),
                Err(e) if !e.to_string().contains(says) => {
                    return Err(format!("`{line}`: `{e}` does not say `{says}`"))
                }
                Err(_) => {}
            }
        }
        Effect::Checks {
            line,
            domain,
            shown_by: (file, test),
        } => {
            let r = apply(&lab(), line).map_err(|e| format!("`{line}`: {e}"))?;
            if r.snapshot.is_some() || r.test_partner.as_deref() != Some(domain) {
                return Err(format!("`{line}` does not check {domain} alone"));
            }
            test_exists(file, test)?;
        }
        Effect::Prints {
            after,
            get,
            shows,
            hides,
        } => {
            if !named(after) && !named(&[get]) {
                return Err(format!(
                    "neither {after:?} nor `{get}` runs {cmdlet} -{param}"
                ));
            }
            let out = apply(&lab_after(after)?, get)
                .map_err(|e| format!("{get}: {e}"))?
                .output;
            if !out.contains(shows) || out.contains(hides) {
                return Err(format!("`{get}` printed:\n{out}"));
            }
        }
    }
    Ok(())
}

#[test]
fn every_parameter_of_every_cmdlet_changes_a_decision_or_state_or_is_refused_or_only_names() {
    let mut failures = Vec::new();
    let mut walked = 0;
    for cmd in Cmdlet::ALL {
        let name = cmd.name();
        for spec in cmd.specs() {
            walked += 1;
            let pending = OTHER_BRANCH_PENDING.contains(&(name.as_str(), spec.name));
            match (effect(&name, spec.name), pending) {
                (Some(e), false) => {
                    if let Err(why) = check(&name, spec.name, e) {
                        failures.push(format!("{name} -{}: {why}", spec.name));
                    }
                }
                (None, true) => {}
                (Some(_), true) => failures.push(format!(
                    "{name} -{}: has an effect entry; take it off OTHER_BRANCH_PENDING",
                    spec.name
                )),
                (None, false) => failures.push(format!(
                    "{name} -{}: no entry says what it does (give it an effect, or refuse it as not modelled)",
                    spec.name
                )),
            }
        }
    }
    assert!(walked > 100, "the walk saw {walked} parameters");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// README's cmdlet reference as (cmdlet, parameter) pairs, one row naming several cmdlets.
fn readme_reference() -> Vec<(String, String)> {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split_once("### Cmdlet reference")
        .expect("README has a cmdlet reference")
        .1;
    let section = section.split("\n#").next().unwrap_or("");
    let mut pairs = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(cmdlets), Some(param)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Some(param) = param.strip_prefix("`-").and_then(|p| p.strip_suffix('`')) else {
            continue;
        };
        for cmdlet in cmdlets.split(", ") {
            pairs.push((cmdlet.to_string(), param.to_string()));
        }
    }
    pairs
}

#[test]
fn the_readme_cmdlet_reference_has_a_row_for_every_parameter_and_no_other() {
    let documented = readme_reference();
    let accepted: Vec<(String, String)> = Cmdlet::ALL
        .iter()
        .flat_map(|c| {
            c.specs()
                .iter()
                .map(move |s| (c.name(), s.name.to_string()))
        })
        .collect();
    let missing: Vec<_> = accepted
        .iter()
        .filter(|p| !documented.contains(p))
        .collect();
    let stale: Vec<_> = documented
        .iter()
        .filter(|p| !accepted.contains(p))
        .collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "README's cmdlet reference lacks {missing:?} and names what the admin does not accept: {stale:?}"
    );
}
