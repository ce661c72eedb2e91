//! The admin endpoint driven through the real `sipedge admin` binary: the seed's two
//! commands verbatim, Get output, the live snapshot swapped, errors and refusals, --persist.

use std::net::SocketAddr;
use std::process::Output;

use sipedge::config::Snapshot;
use sipedge::policy::{self, Decision, DnsFacts, RequestFacts, Route, SrvAnswer, SrvTarget};
use sipedge::transport::{Interface, Peer, PeerIdentity, Transport};

use crate::support::TestEdge;

pub(crate) const SEED_REMOVE: &[&str] = &["Remove-CsPublicProvider", "-Identity", "Messenger"];
/// As a shell passes it: the quotes are gone, each word is one argument.
pub(crate) const SEED_NEW: &[&str] = &[
    "New-CsPublicProvider",
    "-Identity",
    "Skype",
    "-ProxyFqdn",
    "federation.messenger.msn.com",
    "-IconUrl",
    "https://images.edge.messenger.live.com/Messenger_16x16.png",
    "-VerificationLevel",
    "2",
    "-Enabled",
    "1",
];

/// The lab before the seed procedure: Messenger pre-created and disabled, no Skype.
fn config() -> String {
    r#"# Edge for the admin test.
[edge]
local_domains = ["contoso.test"]

[interfaces.external]
fqdn = "accessedge.contoso.test"
address = "127.0.0.1"
tcp_port = 0

[interfaces.internal]
fqdn = "edge-int.contoso.test"
address = "127.0.0.2"
tcp_port = 0

[pool]
target = "127.0.0.1:5070"
transport = "tcp"

[admin]
listen = "127.0.0.1:0"

[access_edge]
allow_federated_users = true # the master switch
enable_partner_discovery = true

# Lync 2013 ships it pre-created and disabled.
[[public_provider]]
identity = "Messenger"
proxy_fqdn = "federation.messenger.msn.com"
enabled = false

# Everyone may federate and reach public clouds.
[[external_access_policy]]
identity = "global"
enable_federation_access = true
enable_public_cloud_access = true
"#
    .to_string()
}

/// Runs `sipedge admin <args> --endpoint … --token <token>`.
async fn admin(edge: &TestEdge, token: &str, args: &[&str]) -> Output {
    let endpoint = format!("http://{}", edge.edge.admin_addr().expect("admin endpoint"));
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("admin")
        .args(args)
        .args(["--endpoint", &endpoint, "--token", token])
        .output()
        .await
        .expect("run sipedge admin")
}

fn token(edge: &TestEdge) -> String {
    edge.edge.admin_token().expect("token").to_string()
}

/// Runs a line that must succeed; returns its output.
async fn ok(edge: &TestEdge, args: &[&str]) -> String {
    let out = admin(edge, &token(edge), args).await;
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// What the live snapshot decides for alice's MESSAGE to a live.com user, whose SRV
/// record points at federation.messenger.msn.com.
fn alice_to_live_com(snap: &Snapshot) -> Decision {
    let facts = RequestFacts {
        method: "MESSAGE",
        uri_user: Some("sam"),
        uri_host: "live.com",
        from_user: Some("alice"),
        from_host: "contoso.test",
        to_user: Some("sam"),
        to_host: "live.com",
        max_forwards: Some(70),
        ..RequestFacts::default()
    };
    let peer = Peer {
        interface: Interface::Internal,
        transport: Transport::Tls,
        addr: "127.0.0.9:40000".parse::<SocketAddr>().unwrap(),
        identity: PeerIdentity::new(["pool.contoso.test"]),
    };
    let dns = match policy::dns_needed(&facts, &peer, snap) {
        Some(q) => DnsFacts::answer(
            &q,
            SrvAnswer::Records(vec![SrvTarget::new(
                10,
                100,
                5061,
                "federation.messenger.msn.com",
            )]),
        ),
        None => DnsFacts::none(),
    };
    policy::decide(&facts, &peer, snap, &dns)
}

fn goes_to_skype(d: &Decision) -> bool {
    matches!(d, Decision::Forward(f) if matches!(&f.route, Route::Targets(t) if t.iter().any(|t| t.host == "federation.messenger.msn.com")))
}

#[tokio::test]
async fn seed_commands_verbatim_swap_the_live_snapshot() {
    let edge = TestEdge::start(&config()).await;
    let before = alice_to_live_com(&edge.edge.live().load());
    assert!(!goes_to_skype(&before), "{before:?}");

    assert_eq!(ok(&edge, SEED_REMOVE).await, "");
    assert_eq!(ok(&edge, SEED_NEW).await, "");
    assert_eq!(
        ok(&edge, &["Get-CsPublicProvider"]).await,
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
    let after = alice_to_live_com(&edge.edge.live().load());
    assert!(goes_to_skype(&after), "{after:?}");

    // The longer seed form, with a quoted argument holding a comma list, after a removal.
    ok(&edge, &["Remove-CsPublicProvider", "Skype"]).await;
    assert!(!goes_to_skype(&alice_to_live_com(&edge.edge.live().load())));
    ok(
        &edge,
        &[
            "New-CsPublicProvider",
            "-ProxyFqdn",
            "federation.messenger.msn.com",
            "-Enabled",
            "1",
            "-Identity",
            "Skype",
            "-VerificationLevel",
            "2",
            "-NameDecorationRoutingDomain",
            "msn.com",
            "-NameDecorationExcludedDomainList",
            "msn.com,outlook.com,live.com,hotmail.com",
            "-IconUrl",
            "https://images.edge.messenger.live.com/Messenger_16x16.png",
        ],
    )
    .await;
    let p = &edge.edge.live().load().federation.public_providers[0];
    assert_eq!(p.name_decoration_excluded_domain_list.len(), 4);
    // A comment with spaces survives the trip through the shell and the line.
    ok(
        &edge,
        &[
            "New-CsBlockedDomain",
            "-Identity",
            "adatum.test",
            "-Comment",
            "never, ever",
        ],
    )
    .await;
    assert_eq!(
        edge.edge
            .live()
            .load()
            .federation
            .blocked("adatum.test")
            .unwrap()
            .comment
            .as_deref(),
        Some("never, ever")
    );
}

#[tokio::test]
async fn errors_exit_1_and_name_the_choices() {
    let edge = TestEdge::start(&config()).await;
    let out = admin(&edge, &token(&edge), &["Get-CsFooBar"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`Get-CsFooBar` is not a supported cmdlet; valid cmdlets: Get-CsAccessEdgeConfiguration"), "{err}");
    let out = admin(
        &edge,
        &token(&edge),
        &["Remove-CsPublicProvider", "-Identity", "Yahoo"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("existing identities: Messenger"));
    // Skype beside Messenger: the same ProxyFqdn.
    let out = admin(&edge, &token(&edge), SEED_NEW).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("ProxyFqdn `federation.messenger.msn.com` is already used"));
    assert_eq!(edge.edge.live().load().federation.public_providers.len(), 1);
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_health_config_decisions_answer() {
    let edge = TestEdge::start(&config()).await;
    let out = admin(&edge, "not-the-token", SEED_REMOVE).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong token"));
    assert_eq!(
        edge.edge.live().load().federation.public_providers.len(),
        1,
        "nothing changed"
    );

    let endpoint = format!("http://{}", edge.edge.admin_addr().unwrap());
    let t = token(&edge);
    let (health, config, decisions, unauth) = tokio::task::spawn_blocking(move || {
        use sipedge::admin::http::send;
        (
            send(&endpoint, "GET", "/health", None, "").unwrap(),
            send(&endpoint, "GET", "/config", Some(&t), "").unwrap(),
            send(&endpoint, "GET", "/decisions", Some(&t), "").unwrap(),
            send(&endpoint, "GET", "/config", None, "").unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(health, (200, "ok\n".to_string()));
    assert_eq!(config.0, 200);
    assert!(
        config
            .1
            .contains("Identity                         : Messenger"),
        "{}",
        config.1
    );
    assert_eq!(decisions.0, 200);
    assert_eq!(unauth.0, 401);
}

#[tokio::test]
async fn persist_rewrites_the_config_keeping_comments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, config()).unwrap();
    let snap = Snapshot::load(&path).unwrap();
    let edge = TestEdge::start_snapshot(snap).await;
    ok(
        &edge,
        &[
            "Remove-CsPublicProvider",
            "-Identity",
            "Messenger",
            "--persist",
        ],
    )
    .await;
    let mut with_persist = SEED_NEW.to_vec();
    with_persist.push("--persist");
    ok(&edge, &with_persist).await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# Edge for the admin test.\n"), "{text}");
    assert!(
        text.contains("allow_federated_users = true # the master switch"),
        "{text}"
    );
    assert!(
        text.contains(
            "# Everyone may federate and reach public clouds.\n[[external_access_policy]]"
        ),
        "{text}"
    );
    assert!(!text.contains("identity = \"Messenger\""), "{text}");
    assert!(text.contains("identity = \"Skype\""), "{text}");
    let back = Snapshot::load(&path).unwrap();
    assert_eq!(back.federation, edge.edge.live().load().federation);
}

#[tokio::test]
async fn persist_after_an_unpersisted_change_names_the_difference_and_persist_all_writes_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, config()).unwrap();
    let edge = TestEdge::start_snapshot(Snapshot::load(&path).unwrap()).await;
    ok(&edge, SEED_REMOVE).await;
    let remove_only = edge.edge.live().load().federation.clone();

    let mut with_persist = SEED_NEW.to_vec();
    with_persist.push("--persist");
    let out = admin(&edge, &token(&edge), &with_persist).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[[public_provider]] messenger: file only"),
        "the earlier unpersisted removal is named: {err}"
    );
    assert!(
        err.contains("--persist-all"),
        "the way out is offered: {err}"
    );
    assert_eq!(
        edge.edge.live().load().federation,
        remove_only,
        "nothing was applied"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), config());

    let mut with_all = SEED_NEW.to_vec();
    with_all.push("--persist-all");
    ok(&edge, &with_all).await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("identity = \"Messenger\""), "{text}");
    assert!(text.contains("identity = \"Skype\""), "{text}");
    assert!(text.starts_with("# Edge for the admin test.\n"), "{text}");
    let back = Snapshot::load(&path).unwrap();
    assert_eq!(back.federation, edge.edge.live().load().federation);
}

#[tokio::test]
async fn sipedge_admin_refuses_a_non_url_icon_and_xmpp_access_and_sets_a_blocked_domains_comment() {
    let edge = TestEdge::start(&config()).await;
    let t = token(&edge);
    for (args, says) in [
        (
            &["Set-CsPublicProvider", "Messenger", "-IconUrl", "not a url"][..],
            "-IconUrl: `not a url` is not a URL",
        ),
        (
            &[
                "Set-CsExternalAccessPolicy",
                "global",
                "-EnableXmppAccess",
                "$true",
            ][..],
            "EnableXmppAccess is not modelled",
        ),
    ] {
        let out = admin(&edge, &t, args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let before = edge.edge.live().load();
    assert_eq!(
        before.federation.public_providers[0].icon_url, None,
        "nothing changed"
    );
    ok(&edge, &["New-CsBlockedDomain", "adatum.test"]).await;
    ok(
        &edge,
        &[
            "Set-CsBlockedDomain",
            "adatum.test",
            "-Comment",
            "never contact",
        ],
    )
    .await;
    assert_eq!(
        ok(&edge, &["Get-CsBlockedDomain"]).await,
        "Identity : adatum.test\nDomain   : adatum.test\nComment  : never contact\n"
    );
}
