use std::path::Path;

use super::*;

const BASE: &str = crate::config::TCP_EDGE;

/// The lab before the seed procedure: Messenger pre-created and disabled.
const PRE_PIC: &str = r#"
[access_edge]
allow_federated_users = true

[[public_provider]]
identity = "Messenger"
proxy_fqdn = "federation.messenger.msn.com"
enabled = false

[[hosting_provider]]
identity = "LyncOnline"
proxy_fqdn = "sipfed.online.lync.com"
enabled = true

[[allowed_domain]]
domain = "fabrikam.test"
proxy_fqdn = "sip.fabrikam.test"

[[blocked_domain]]
domain = "adatum.test"

[[external_access_policy]]
identity = "NoFederation"
"#;

const SEED_NEW: &str = r#"New-CsPublicProvider -Identity Skype -ProxyFqdn federation.messenger.msn.com -IconUrl "https://images.edge.messenger.live.com/Messenger_16x16.png" -VerificationLevel 2 -Enabled 1"#;
const SEED_LONG: &str = r#"New-CsPublicProvider -ProxyFqdn federation.messenger.msn.com -Enabled 1 -Identity Skype -VerificationLevel 2 -NameDecorationRoutingDomain msn.com -NameDecorationExcludedDomainList "msn.com,outlook.com,live.com,hotmail.com" -IconUrl "https://images.edge.messenger.live.com/Messenger_16x16.png""#;

fn snap(extra: &str) -> Snapshot {
    Snapshot::from_toml(&format!("{BASE}{extra}"), Path::new(".")).unwrap_or_else(|e| panic!("{e}"))
}

fn run(s: &Snapshot, line: &str) -> Snapshot {
    match apply(s, line) {
        Ok(r) => r.snapshot.expect("a change"),
        Err(e) => panic!("{line}: {e}"),
    }
}

fn output(s: &Snapshot, line: &str) -> String {
    let r = apply(s, line).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert!(r.snapshot.is_none(), "Get-* changes nothing");
    r.output
}

fn err(s: &Snapshot, line: &str) -> CmdletError {
    match apply(s, line) {
        Ok(_) => panic!("{line}: should be refused"),
        Err(e) => e,
    }
}

#[test]
fn tokenizer_reads_powershell_forms() {
    let t =
        tokenize(r#"Set-X -A 'it''s' -B:"a ""b"" `"c" -Sw -C:$false pos -D "-notparam""#).unwrap();
    let word = |s: &str, q| {
        Token::Word(Word {
            text: s.into(),
            quoted: q,
        })
    };
    let param = |n: &str, v: Option<(&str, bool)>| Token::Param {
        name: n.into(),
        value: v.map(|(t, q)| Word {
            text: t.into(),
            quoted: q,
        }),
    };
    assert_eq!(
        t,
        [
            word("Set-X", false),
            param("A", None),
            word("it's", true),
            param("B", Some(("a \"b\" \"c", true))),
            param("Sw", None),
            param("C", Some(("$false", false))),
            word("pos", false),
            param("D", None),
            word("-notparam", true),
        ]
    );
    assert!(
        matches!(tokenize("New-X -A \"open"), Err(CmdletError::Syntax(m)) if m.contains("no closing"))
    );
}

#[test]
fn seed_commands_work_verbatim() {
    let s = snap(PRE_PIC);
    let s = run(&s, "Remove-CsPublicProvider -Identity Messenger");
    assert!(s.federation.public_providers.is_empty());
    let s = run(&s, SEED_NEW);
    let p = &s.federation.public_providers[0];
    assert_eq!(
        (
            p.identity.as_str(),
            p.proxy_fqdn.as_str(),
            p.enabled,
            p.verification_level
        ),
        (
            "Skype",
            "federation.messenger.msn.com",
            true,
            VerificationLevel::UseSourceVerification
        )
    );
    assert_eq!(
        p.icon_url.as_deref(),
        Some("https://images.edge.messenger.live.com/Messenger_16x16.png")
    );
    assert_eq!(
        output(&s, "Get-CsPublicProvider"),
        "Identity                         : Skype\n\
         Name                             : Skype\n\
         ProxyFqdn                        : federation.messenger.msn.com\n\
         IconUrl                          : https://images.edge.messenger.live.com/Messenger_16x16.png\n\
         NameDecorationDomain             :\n\
         NameDecorationRoutingDomain      :\n\
         NameDecorationExcludedDomainList :\n\
         Enabled                          : True\n\
         VerificationLevel                : UseSourceVerification\n"
    );
}

#[test]
fn long_seed_form_matches_the_shipped_lab() {
    let s = run(
        &run(&snap(PRE_PIC), "Remove-CsPublicProvider Messenger"),
        SEED_LONG,
    );
    let lab = snap(crate::config::lab_federation_sections());
    assert_eq!(
        s.federation.public_providers,
        lab.federation.public_providers
    );
    assert!(output(&s, "get-cspublicprovider skype").contains(
        "NameDecorationExcludedDomainList : {msn.com, outlook.com, live.com, hotmail.com}\n"
    ));
}

#[test]
fn skype_beside_messenger_is_refused_for_its_proxy_fqdn() {
    let e = err(&snap(PRE_PIC), SEED_NEW);
    assert!(
        e.to_string()
            .contains("ProxyFqdn `federation.messenger.msn.com` is already used"),
        "{e}"
    );
    let e = err(
        &snap(PRE_PIC),
        "New-CsHostingProvider -Identity messenger -ProxyFqdn x.test -Enabled $true",
    );
    assert!(
        e.to_string()
            .contains("Identity `messenger` is already used"),
        "{e}"
    );
}

#[test]
fn public_provider_set_and_remove() {
    let s = snap(PRE_PIC);
    let s = run(&s, "Set-CsPublicProvider Messenger -Enabled $true -VerificationLevel AlwaysUnverifiable -IconUrl $null");
    let p = &s.federation.public_providers[0];
    assert!(p.enabled);
    assert_eq!(p.verification_level, VerificationLevel::AlwaysUnverifiable);
    let e = err(&s, "Remove-CsPublicProvider -Identity Yahoo");
    assert_eq!(
        e.to_string(),
        "Remove-CsPublicProvider: cannot find `Yahoo`; existing identities: Messenger"
    );
    let e = err(
        &s,
        "New-CsPublicProvider -Identity AIM -ProxyFqdn sip.oscar.aol.com",
    );
    assert_eq!(
        e,
        CmdletError::MissingParameter {
            cmdlet: "New-CsPublicProvider".into(),
            param: "Enabled".into()
        }
    );
}

#[test]
fn hosting_provider_family() {
    let s = snap(PRE_PIC);
    let s = run(&s, "Remove-CsHostingProvider -Identity LyncOnline");
    let s = run(&s, "New-CsHostingProvider -Identity LyncOnline -ProxyFqdn sipfed.online.lync.com -Enabled $true -EnabledSharedAddressSpace $true -HostsOCSUsers $true -VerificationLevel UseSourceVerification -IsLocal $false -AutodiscoverUrl https://webdir.online.lync.com/Autodiscover/AutodiscoverService.svc/root");
    let h = &s.federation.hosting_providers[0];
    assert!(h.enabled_shared_address_space && h.hosts_ocs_users && !h.is_local);
    let s = run(
        &s,
        "Set-CsHostingProvider -Identity lynconline -Enabled $false -SipClientPort 5061",
    );
    assert_eq!(s.federation.hosting_providers[0].sip_client_port, 5061);
    let out = output(&s, "Get-CsHostingProvider");
    assert!(
        out.starts_with("Identity                  : LyncOnline\n"),
        "{out}"
    );
    assert!(out.contains("Enabled                   : False\n"), "{out}");
    // ProxyFqdn of a hosting provider is immutable: remove and re-create.
    let e = err(
        &s,
        "Set-CsHostingProvider -Identity LyncOnline -ProxyFqdn x.test",
    );
    assert!(
        matches!(&e, CmdletError::UnknownParameter { valid, .. } if !valid.contains(&"ProxyFqdn".to_string())),
        "{e}"
    );
}

#[test]
fn allowed_and_blocked_domains() {
    let s = snap(PRE_PIC);
    let s = run(&s, "New-CsAllowedDomain -Identity Northwind.test -Comment 'direct partner' -MarkForMonitoring $true");
    let d = s.federation.allowed("northwind.test").unwrap();
    assert_eq!(
        (d.comment.as_deref(), d.mark_for_monitoring),
        (Some("direct partner"), true)
    );
    let s = run(
        &s,
        "Set-CsAllowedDomain -Identity northwind.test -ProxyFqdn sip.northwind.test",
    );
    assert_eq!(
        s.federation
            .allowed("northwind.test")
            .unwrap()
            .proxy_fqdn
            .as_deref(),
        Some("sip.northwind.test")
    );
    let e = err(&s, "New-CsBlockedDomain -Identity northwind.test");
    assert!(
        e.to_string()
            .contains("on both the allowed and the blocked list"),
        "{e}"
    );
    let s = run(&s, "New-CsBlockedDomain -Domain litware.test");
    assert!(s.federation.blocked("litware.test").is_some());
    let s = run(&s, "Remove-CsBlockedDomain litware.test");
    assert!(s.federation.blocked("litware.test").is_none());
    assert_eq!(
        output(&s, "Get-CsBlockedDomain"),
        "Identity : adatum.test\nDomain   : adatum.test\nComment  :\n"
    );
    assert_eq!(
        output(&s, "Get-CsAllowedDomain -Filter *wind*")
            .matches("Identity")
            .count(),
        1
    );
    let e = err(&s, "Remove-CsAllowedDomain -Identity nowhere.test");
    assert!(
        e.to_string()
            .contains("existing identities: fabrikam.test, northwind.test"),
        "{e}"
    );
    let e = err(&s, "New-CsAllowedDomain -Identity 'not a domain'");
    assert!(e.to_string().contains("expected a DNS domain"), "{e}");
}

#[test]
fn an_allowed_domains_proxy_fqdn_takes_a_port_and_prints_it() {
    let s = snap(PRE_PIC);
    let s = run(
        &s,
        "New-CsAllowedDomain -Identity northwind.test -ProxyFqdn SIP.northwind.test:5071",
    );
    let d = s.federation.allowed("northwind.test").unwrap();
    assert_eq!(
        (d.proxy_fqdn.as_deref(), d.proxy_port),
        (Some("sip.northwind.test"), 5071)
    );
    let shown = output(&s, "Get-CsAllowedDomain -Identity northwind.test");
    assert!(shown.contains(": sip.northwind.test:5071\n"), "{shown}");
    let s = run(
        &s,
        "Set-CsAllowedDomain -Identity northwind.test -ProxyFqdn sip.northwind.test",
    );
    let d = s.federation.allowed("northwind.test").unwrap();
    assert_eq!(d.proxy_port, 5061, "without a port, the federation port");
    for bad in [
        "sip.northwind.test:0",
        "sip.northwind.test:70000",
        "sip.northwind.test:x",
        ":5071",
    ] {
        let e = err(
            &s,
            &format!("Set-CsAllowedDomain -Identity northwind.test -ProxyFqdn {bad}"),
        );
        assert!(e.to_string().contains("ProxyFqdn"), "{bad}: {e}");
    }
}

#[test]
fn external_access_policies_and_grants() {
    let s = snap(PRE_PIC);
    let s = run(&s, "Set-CsExternalAccessPolicy -Identity Global -EnableFederationAccess $true -EnablePublicCloudAccess $true");
    assert!(s.federation.global_policy().enable_public_cloud_access);
    let s = run(&s, "New-CsExternalAccessPolicy -Identity NoPublicCloud -EnableFederationAccess 1 -Description \"no PIC\"");
    let s = run(
        &s,
        "Grant-CsExternalAccessPolicy -Identity sip:bob@contoso.test -PolicyName NoPublicCloud",
    );
    assert_eq!(
        s.federation
            .grant("bob", "contoso.test")
            .unwrap()
            .policy
            .as_deref(),
        Some("NoPublicCloud")
    );
    let s = run(&s, "Grant-CsExternalAccessPolicy bob@contoso.test $null");
    assert!(s.federation.grant("bob", "contoso.test").is_none());
    let e = err(
        &s,
        "Grant-CsExternalAccessPolicy -Identity bob -PolicyName Missing",
    );
    assert!(
        e.to_string()
            .contains("existing: Global, Tag:NoFederation, Tag:NoPublicCloud"),
        "{e}"
    );
    let out = output(&s, "Get-CsExternalAccessPolicy -Identity NoPublicCloud");
    assert!(out.starts_with("Identity                          : Tag:NoPublicCloud\nDescription                       : no PIC\n"), "{out}");
    // Removing global resets it; removing a tag deletes it.
    let s = run(&s, "Remove-CsExternalAccessPolicy -Identity global");
    assert!(!s.federation.global_policy().enable_federation_access);
    let s = run(
        &s,
        "Remove-CsExternalAccessPolicy -Identity Tag:NoPublicCloud",
    );
    assert!(s
        .federation
        .policy(&PolicyScope::Tag("NoPublicCloud".into()))
        .is_none());
    let e = err(&s, "New-CsExternalAccessPolicy -Identity global");
    assert!(e.to_string().contains("already exists"), "{e}");
}

#[test]
fn access_edge_configuration() {
    let s = snap(PRE_PIC);
    let out = output(&s, "Get-CsAccessEdgeConfiguration");
    assert!(
        out.contains("AllowFederatedUsers                    : True\n"),
        "{out}"
    );
    assert!(
        out.contains("RoutingMethod                          : UseDnsSrvRouting\n"),
        "{out}"
    );
    let s = run(&s, "Set-CsAccessEdgeConfiguration -AllowOutsideUsers 1 -AllowFederatedUsers 1 -EnablePartnerDiscovery 1 -UseDnsSrvRouting");
    assert!(s.federation.access_edge.enable_partner_discovery);
    // Default routing needs the providers gone first, and no partner discovery.
    let e = err(&s, "Set-CsAccessEdgeConfiguration -UseDefaultRouting -DefaultRouteFqdn ch.clearing.test -EnablePartnerDiscovery 0");
    assert!(
        e.to_string()
            .contains("default routing requires removing all public and hosting providers"),
        "{e}"
    );
    let s = run(&s, "Remove-CsPublicProvider Messenger");
    let s = run(&s, "Remove-CsHostingProvider LyncOnline");
    let e = err(
        &s,
        "Set-CsAccessEdgeConfiguration -UseDefaultRouting -DefaultRouteFqdn ch.clearing.test",
    );
    assert!(
        e.to_string()
            .contains("partner discovery needs -UseDnsSrvRouting"),
        "{e}"
    );
    let s = run(&s, "Set-CsAccessEdgeConfiguration -UseDefaultRouting -DefaultRouteFqdn ch.clearing.test -EnablePartnerDiscovery 0 -VerificationLevel AlwaysUnverifiable");
    assert_eq!(
        s.federation.access_edge.routing,
        FederationRouting::DefaultRoute {
            fqdn: "ch.clearing.test".into(),
            port: 5061,
            verification_level: VerificationLevel::AlwaysUnverifiable,
            is_public_provider: false
        }
    );
    let e = err(
        &s,
        "Set-CsAccessEdgeConfiguration -UseDefaultRouting -UseDnsSrvRouting",
    );
    assert!(e.to_string().contains("give one"), "{e}");
    let s = run(&s, "Set-CsAccessEdgeConfiguration -UseDnsSrvRouting");
    assert_eq!(s.federation.access_edge.routing, FederationRouting::DnsSrv);
    let e = err(
        &s,
        "Set-CsAccessEdgeConfiguration -OutgoingTlsCountForFederatedPartners 5",
    );
    assert_eq!(e.to_string(), "Set-CsAccessEdgeConfiguration: `5` is not valid for -OutgoingTlsCountForFederatedPartners; expected a whole number from 1 to 4");
}

#[test]
fn errors_name_the_valid_choices() {
    let s = snap(PRE_PIC);
    let e = err(&s, "Get-CsFooBar");
    assert!(e.to_string().starts_with("`Get-CsFooBar` is not a supported cmdlet; valid cmdlets: Get-CsAccessEdgeConfiguration, Set-CsAccessEdgeConfiguration, Get-CsPublicProvider"), "{e}");
    let e = err(&s, "New-CsBlockedDomain -Identity x.test -Colour red");
    assert_eq!(
        e.to_string(),
        "New-CsBlockedDomain: no parameter -Colour; valid parameters: -Identity, -Domain, -Comment"
    );
    let e = err(&s, "Set-CsPublicProvider Messenger -Enabled maybe");
    assert_eq!(
        e.to_string(),
        "Set-CsPublicProvider: `maybe` is not valid for -Enabled; expected $true or $false (also True/False, 1/0)"
    );
    let e = err(&s, "Set-CsPublicProvider Messenger -VerificationLevel 3");
    assert!(
        e.to_string()
            .contains("AlwaysVerifiable (0), AlwaysUnverifiable (1) or UseSourceVerification (2)"),
        "{e}"
    );
    let e = err(&s, "Set-CsPublicProvider Messenger -Enabled");
    assert!(e.to_string().contains("-Enabled needs a value"), "{e}");
    let e = err(&s, "Set-CsPublicProvider Messenger -NameDecoration msn.com");
    assert!(e.to_string().contains("valid parameters: -NameDecorationDomain, -NameDecorationRoutingDomain, -NameDecorationExcludedDomainList"), "{e}");
    let e = err(&s, "Set-CsPublicProvider Messenger -Enabled $x");
    assert!(e.to_string().contains("variables other than"), "{e}");
    let e = err(&s, "Get-CsPublicProvider -Identity Yahoo");
    assert!(
        e.to_string().contains("existing identities: Messenger"),
        "{e}"
    );
    assert!(matches!(err(&s, "   "), CmdletError::Syntax(_)));
    // Prefixes and any case work, as in PowerShell.
    let s = run(&s, "set-cspublicprovider -iden Messenger -ENABLED:$TRUE");
    assert!(s.federation.public_providers[0].enabled);
}

#[test]
fn static_routing_configs_refuse_changes() {
    let s = snap("[[routes]]\ndomain = \"fabrikam.test\"\ntarget = \"127.0.0.3:5060\"\ntransport = \"tcp\"\n");
    let e = err(&s, "New-CsBlockedDomain -Identity adatum.test");
    assert!(e.to_string().contains("routes statically"), "{e}");
    assert!(output(&s, "Get-CsBlockedDomain").is_empty());
}

#[test]
fn render_config_lists_every_family() {
    let s = snap(crate::config::lab_federation_sections());
    let text = render_config(&s.federation);
    for needle in [
        "# Get-CsAccessEdgeConfiguration",
        "Identity                         : Skype",
        "Identity                  : LyncOnline",
        "Identity          : fabrikam.test",
        "Identity : adatum.test",
        "Tag:NoPublicCloud",
        "bob@contoso.test : NoPublicCloud",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
}

#[test]
fn a_grant_to_someone_outside_the_edge_s_domains_is_refused_like_the_loader_refuses_it() {
    let s = snap(PRE_PIC);
    let s = run(
        &s,
        "New-CsExternalAccessPolicy -Identity NoPublicCloud -EnableFederationAccess 1",
    );
    for (who, says) in [
        (
            "sip:dan@fabrikam.test",
            "not a user of this edge's domains (contoso.test)",
        ),
        ("sip:x@@contoso.test", "is not a user"),
        ("sip:x@contoso test", "is not a user"),
    ] {
        let e = err(
            &s,
            &format!("Grant-CsExternalAccessPolicy -Identity \"{who}\" -PolicyName NoPublicCloud"),
        );
        assert!(e.to_string().contains(says), "{who}: {e}");
        let toml = format!("{PRE_PIC}\n[[user]]\nuser = \"{who}\"\npolicy = \"NoFederation\"\n");
        let loaded = Snapshot::from_toml(&format!("{BASE}{toml}"), Path::new("."));
        let problem = loaded.expect_err("the loader refuses it too").to_string();
        assert!(problem.contains(says), "{who}: {problem}");
    }
    run(
        &s,
        "Grant-CsExternalAccessPolicy -Identity zed -PolicyName NoPublicCloud",
    );
}

#[test]
fn set_cs_blocked_domain_changes_the_comment_of_an_existing_entry_only() {
    let s = snap(PRE_PIC);
    let s = run(
        &s,
        "Set-CsBlockedDomain -Identity adatum.test -Comment 'never contact'",
    );
    assert_eq!(
        output(&s, "Get-CsBlockedDomain adatum.test"),
        "Identity : adatum.test\nDomain   : adatum.test\nComment  : never contact\n"
    );
    let s = run(&s, "Set-CsBlockedDomain adatum.test -Comment $null");
    assert_eq!(s.federation.blocked("adatum.test").unwrap().comment, None);
    let e = err(&s, "Set-CsBlockedDomain -Identity litware.test -Comment x");
    assert!(
        e.to_string()
            .contains("cannot find `litware.test`; existing identities: adatum.test"),
        "{e}"
    );
    // The domain of a blocked entry is its identity: changing it is remove and re-create.
    let e = err(
        &s,
        "Set-CsBlockedDomain -Identity adatum.test -Domain litware.test",
    );
    assert!(matches!(e, CmdletError::UnknownParameter { .. }), "{e}");
}

#[test]
fn an_icon_url_that_is_not_a_url_is_refused_by_the_cmdlet_and_the_loader() {
    let s = snap(PRE_PIC);
    for bad in [
        "not a url",
        "ftp://images.test/x.png",
        "https://",
        "https://bad host/x.png",
        "https://images.test:0/x",
    ] {
        let e = err(
            &s,
            &format!("Set-CsPublicProvider Messenger -IconUrl \"{bad}\""),
        );
        assert!(
            e.to_string()
                .starts_with("Set-CsPublicProvider: -IconUrl: `")
                && e.to_string().contains("is not a URL"),
            "{bad}: {e}"
        );
        let toml = PRE_PIC.replace(
            "enabled = false",
            &format!("enabled = false\nicon_url = \"{bad}\""),
        );
        let problems = Snapshot::from_toml(&format!("{BASE}{toml}"), Path::new("."))
            .expect_err(bad)
            .to_string();
        assert!(
            problems.contains("public_provider[0].icon_url") && problems.contains("is not a URL"),
            "{problems}"
        );
    }
    // The hosting provider's AutodiscoverUrl is the same kind of value, checked the same way.
    let e = err(
        &s,
        "Set-CsHostingProvider LyncOnline -AutodiscoverUrl 'not a url'",
    );
    assert!(e.to_string().contains("is not a URL"), "{e}");
    let toml = PRE_PIC.replace(
        "enabled = true",
        "enabled = true\nautodiscover_url = \"webdir\"",
    );
    let problems = Snapshot::from_toml(&format!("{BASE}{toml}"), Path::new("."))
        .expect_err("autodiscover")
        .to_string();
    assert!(
        problems.contains("hosting_provider[0].autodiscover_url"),
        "{problems}"
    );
    let s = run(
        &s,
        "Set-CsPublicProvider Messenger -IconUrl http://images.test:8080/m.png?s=16",
    );
    assert_eq!(
        s.federation.public_providers[0].icon_url.as_deref(),
        Some("http://images.test:8080/m.png?s=16")
    );
}

#[test]
fn test_cs_federated_partner_names_a_domain_and_changes_nothing() {
    let s = snap(crate::config::lab_federation_sections());
    for line in [
        "Test-CsFederatedPartner -Domain Fabrikam.Test.",
        "test-csfederatedpartner fabrikam.test",
        "Test-CsFederatedPartner -Dom:fabrikam.test",
    ] {
        let r = apply(&s, line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(r.snapshot.is_none(), "{line}");
        assert_eq!(r.test_partner.as_deref(), Some("fabrikam.test"), "{line}");
    }
    let e = err(&s, "Test-CsFederatedPartner");
    assert!(e.to_string().contains("-Domain is required"), "{e}");
    let e = err(&s, "Test-CsFederatedPartner -Domain 'not a domain'");
    assert!(e.to_string().contains("expected a DNS name"), "{e}");
    let e = err(
        &s,
        "Test-CsFederatedPartner -Domain fabrikam.test -TargetFqdn x.test",
    );
    assert!(e.to_string().contains("valid parameters: -Domain"), "{e}");
    assert!(apply(&s, "Get-CsAllowedDomain")
        .unwrap()
        .test_partner
        .is_none());
}

#[test]
fn enable_xmpp_access_true_is_refused_as_not_modelled_by_the_cmdlets_and_the_loader() {
    let s = snap(PRE_PIC);
    for line in [
        "Set-CsExternalAccessPolicy -Identity global -EnableXmppAccess $true",
        "New-CsExternalAccessPolicy -Identity Xmpp -EnableXmppAccess 1",
    ] {
        let e = err(&s, line);
        assert!(
            e.to_string().contains("EnableXmppAccess is not modelled"),
            "{line}: {e}"
        );
    }
    let s = run(
        &s,
        "Set-CsExternalAccessPolicy -Identity global -EnableXmppAccess $false",
    );
    assert!(!s.federation.global_policy().enable_xmpp_access);
    let toml = format!("{BASE}{PRE_PIC}enable_xmpp_access = true\n");
    let problems = Snapshot::from_toml(&toml, Path::new("."))
        .expect_err("xmpp")
        .to_string();
    assert!(
        problems.contains("external_access_policy[0].enable_xmpp_access")
            && problems.contains("EnableXmppAccess is not modelled"),
        "{problems}"
    );
}

#[test]
fn a_users_contact_list_is_set_shown_and_cleared() {
    let s = snap(PRE_PIC);
    let s = run(
        &s,
        "Set-CsLabContactList -Identity sip:alice@contoso.test -Contacts \"sip:Dave@fabrikam.test, erin@northwind.test\"",
    );
    let g = s.federation.grant("alice", "contoso.test").unwrap();
    assert_eq!(g.contacts, ["dave@fabrikam.test", "erin@northwind.test"]);
    assert_eq!(
        output(&s, "Get-CsLabContactList"),
        "Identity : alice@contoso.test\nContacts : {dave@fabrikam.test, erin@northwind.test}\n"
    );
    // A grant keeps the contacts, and clearing the contacts keeps the grant.
    let s = run(
        &s,
        "Grant-CsExternalAccessPolicy alice@contoso.test NoFederation",
    );
    assert_eq!(
        s.federation
            .grant("alice", "contoso.test")
            .unwrap()
            .contacts
            .len(),
        2
    );
    let s = run(
        &s,
        "Set-CsLabContactList alice@contoso.test -Contacts $null",
    );
    let g = s.federation.grant("alice", "contoso.test").unwrap();
    assert_eq!(
        (g.policy.as_deref(), g.contacts.len()),
        (Some("NoFederation"), 0)
    );
    let s = run(&s, "Grant-CsExternalAccessPolicy alice@contoso.test $null");
    assert!(s.federation.users.is_empty());
    let e = err(&s, "Set-CsLabContactList alice -Contacts 'not an address'");
    assert!(e.to_string().contains("is not a contact"), "{e}");
    let toml = format!("{BASE}{PRE_PIC}\n[[user]]\nuser = \"alice\"\ncontacts = [\"dave\"]\n");
    let problems = Snapshot::from_toml(&toml, Path::new("."))
        .expect_err("contact")
        .to_string();
    assert!(
        problems.contains("user[0].contacts") && problems.contains("is not a contact"),
        "{problems}"
    );
}

#[test]
fn move_cs_user_homes_a_user_at_a_hosting_provider_that_shares_our_domains_and_back() {
    let s = snap(PRE_PIC);
    // LyncOnline in PRE_PIC shares nothing yet: nobody can be homed there.
    let e = err(
        &s,
        "Move-CsUser -Identity sip:dave@contoso.test -Target sipfed.online.lync.com",
    );
    assert!(
        e.to_string()
            .contains("EnabledSharedAddressSpace and HostsOCSUsers"),
        "{e}"
    );
    let s = run(
        &s,
        "Set-CsHostingProvider LyncOnline -EnabledSharedAddressSpace $true -HostsOCSUsers $true",
    );
    let s = run(
        &s,
        "Move-CsUser -Identity sip:dave@contoso.test -Target sipfed.online.lync.com",
    );
    assert_eq!(
        s.federation
            .home_of("dave", "contoso.test")
            .map(|h| h.identity.as_str()),
        Some("LyncOnline")
    );
    let out = output(&s, "Get-CsUser dave@contoso.test");
    assert!(
        out.contains("HostingProvider      : sipfed.online.lync.com"),
        "{out}"
    );
    assert_eq!(output(&s, "Get-CsUser -Filter da*"), out);
    assert_eq!(output(&s, "Get-CsUser -Filter erin*"), "");
    // While dave is homed there, the provider keeps hosting our users.
    for line in [
        "Set-CsHostingProvider LyncOnline -EnabledSharedAddressSpace $false",
        "Set-CsHostingProvider LyncOnline -HostsOCSUsers $false",
        "Remove-CsHostingProvider LyncOnline",
    ] {
        let e = err(&s, line);
        assert!(e.to_string().contains("dave@contoso.test"), "{line}: {e}");
    }
    // A grant keeps the home, and moving back on-premises keeps the grant.
    let s = run(
        &s,
        "Grant-CsExternalAccessPolicy dave@contoso.test NoFederation",
    );
    let s = run(
        &s,
        "Move-CsUser dave@contoso.test -Target pool.contoso.test",
    );
    assert!(s.federation.home_of("dave", "contoso.test").is_none());
    let g = s
        .federation
        .grant("dave", "contoso.test")
        .expect("the grant stays");
    assert_eq!(g.policy.as_deref(), Some("NoFederation"));
    assert!(output(&s, "Get-CsUser dave@contoso.test").contains("HostingProvider      : SRV:"));
    // A target that is neither a provider nor one of our pools; a user of another domain.
    let e = err(
        &s,
        "Move-CsUser dave@contoso.test -Target sip.fabrikam.test",
    );
    assert!(e.to_string().contains("sipfed.online.lync.com"), "{e}");
    let e = err(
        &s,
        "Move-CsUser fay@fabrikam.test -Target sipfed.online.lync.com",
    );
    assert!(
        e.to_string()
            .contains("one of our SIP domains (contoso.test)"),
        "{e}"
    );
}

#[test]
fn a_hosting_providers_proxy_fqdn_takes_a_port_and_prints_it() {
    let s = run(
        &snap(""),
        "New-CsHostingProvider -Identity Lab -ProxyFqdn sipfed.online.lync.com:5071 -Enabled $true",
    );
    let h = &s.federation.hosting_providers[0];
    assert_eq!(
        (h.proxy_fqdn.as_str(), h.proxy_port),
        ("sipfed.online.lync.com", 5071)
    );
    assert!(output(&s, "Get-CsHostingProvider Lab")
        .contains("ProxyFqdn                 : sipfed.online.lync.com:5071"));
}
