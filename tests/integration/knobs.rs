//! Knobs that were accepted and did nothing (issue 14), seen on the wire: AlwaysUnverifiable
//! and the recipients' contact lists, MarkForMonitoring, AllowAnonymousUsers and
//! EnableOutsideAccess.

use sipedge::transport::{Interface, Transport};

use crate::federation::{msg, northwind_connected_with, NORTHWIND_MARK};
use crate::support::*;

/// dan@northwind.test's MESSAGE to `user`@contoso.test through northwind's edge, marked
/// verified as that edge marks its requests; the edge's answer.
async fn dan_to<S>(northwind: &mut StreamConn<S>, user: &str, id: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    dan_marked_to(northwind, NORTHWIND_MARK, user, id).await
}

/// [`dan_to`] with another trust marking line.
async fn dan_marked_to<S>(northwind: &mut StreamConn<S>, mark: &str, user: &str, id: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let to = format!("sip:{user}@contoso.test");
    northwind
        .send(&msg("MESSAGE", "sip:dan@northwind.test", &to, id, &[mark]))
        .await;
    northwind.recv().await
}

/// Applies cmdlet lines to a running edge's live config, as the admin endpoint does.
fn admin(edge: &TestEdge, lines: &[&str]) {
    for line in lines {
        let live = edge.edge.live();
        let next = sipedge::admin::cmdlet::apply(&live.load(), line)
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .snapshot
            .expect("a change");
        live.store(next);
    }
}

#[tokio::test]
async fn an_always_unverifiable_partner_reaches_only_users_who_list_it() {
    let (mut lab, mut northwind) = northwind_connected_with(|f| {
        f + "
[[allowed_domain]]
domain = \"northwind.test\"
verification_level = \"AlwaysUnverifiable\"

[[user]]
user = \"sip:alice@contoso.test\"
contacts = [\"sip:dan@northwind.test\"]
"
    })
    .await;
    // alice lists dan: delivered, marked unverified whatever northwind claimed.
    assert_eq!(
        status_of(&dan_to(&mut northwind, "alice", "uv1").await),
        200
    );
    let got = lab.pool_recv().await;
    assert_eq!(header(&got, "call-id"), Some("uv1"));
    assert_eq!(
        headers(&got, "ms-edge-proxy-message-trust"),
        ["ms-source-type=AutoFederation;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=unverified;ms-source-network=federation;ms-remote-fqdn=sip.northwind.test"]
    );
    // bob lists nobody: refused at the edge, the pool sees nothing.
    let r = dan_to(&mut northwind, "bob", "uv2").await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert_eq!(diagnostics_code(&r, "ms-diagnostics-public"), "1921", "{r}");
    // Once bob lists dan (Set-CsLabContactList), the same message goes through.
    admin(
        &lab.edge,
        &["Set-CsLabContactList bob@contoso.test -Contacts sip:dan@northwind.test"],
    );
    assert_eq!(status_of(&dan_to(&mut northwind, "bob", "uv3").await), 200);
    assert_eq!(header(&lab.pool_recv().await, "call-id"), Some("uv3"));
}

#[tokio::test]
async fn traffic_with_a_monitored_domain_is_counted_and_marked_in_the_decision_log() {
    let (lab, mut northwind) = northwind_connected_with(|f| {
        f + "
[[allowed_domain]]
domain = \"northwind.test\"
mark_for_monitoring = true
"
    })
    .await;
    assert_eq!(
        status_of(&dan_to(&mut northwind, "alice", "mon1").await),
        200
    );
    // carol may not federate: refused, and still monitored.
    assert_eq!(
        status_of(&dan_to(&mut northwind, "carol", "mon2").await),
        403
    );
    let core = lab.edge.edge.core();
    for id in ["mon1", "mon2"] {
        let d = recorded_decision(core, id, "MESSAGE").await;
        assert!(
            d.trail.iter().any(|c| c.name == "monitoring"),
            "{id}: {:?}",
            d.trail
        );
    }
    let text = lab.edge.metrics_text();
    let family = "sipedge_monitored_decisions_total";
    assert_eq!(
        crate::metrics::sum(&text, family, "outcome=\"forward\""),
        1,
        "{text}"
    );
    assert_eq!(
        crate::metrics::sum(&text, family, "outcome=\"reject\""),
        1,
        "{text}"
    );
    // Unmarked again: nothing more is counted.
    admin(
        &lab.edge,
        &["Set-CsAllowedDomain northwind.test -MarkForMonitoring $false"],
    );
    assert_eq!(
        status_of(&dan_to(&mut northwind, "alice", "mon3").await),
        200
    );
    let d = recorded_decision(core, "mon3", "MESSAGE").await;
    assert!(
        !d.trail.iter().any(|c| c.name == "monitoring"),
        "{:?}",
        d.trail
    );
    assert_eq!(crate::metrics::sum(&lab.edge.metrics_text(), family, ""), 2);
}

/// Federation on, the global policy without outside access, plain TCP: a connection from
/// 127.0.0.1 proves no name (a remote user, or an anonymous one).
fn outside_config(pool: std::net::SocketAddr) -> String {
    crate::legit::tcp_edge(&pool.to_string())
        + r#"
[access_edge]
allow_federated_users = true

[[external_access_policy]]
identity = "global"
enable_federation_access = true
"#
}

#[tokio::test]
async fn anonymous_meeting_joins_and_remote_users_follow_allow_anonymous_users_and_enable_outside_access(
) {
    let pool = TcpPeer::bind("127.0.0.5").await;
    let edge = TestEdge::start(&outside_config(pool.addr())).await;
    let mut outside = tcp_connect(edge.addr(Interface::External, Transport::Tcp)).await;
    let focus = "sip:alice@contoso.test;gruu;opaque=app:conf:focus:id:7Q2DKZ9R";
    let join = |id: &str| {
        request(
            "INVITE",
            focus,
            "sip:guest-7@anonymous.invalid",
            focus,
            &format!("SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK{id}"),
            id,
            &[],
            "",
        )
    };
    let register = |id: &str| {
        request(
            "REGISTER",
            "sip:contoso.test",
            "sip:alice@contoso.test",
            "sip:alice@contoso.test",
            &format!("SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK{id}"),
            id,
            &[],
            "",
        )
    };
    outside.send(&join("an1")).await;
    let r = outside.recv_skip_100().await;
    assert_eq!(
        (status_of(&r), diagnostics_code(&r, "ms-diagnostics-public")),
        (403, "1922"),
        "{r}"
    );
    outside.send(&register("ro1")).await;
    let r = outside.recv_skip_100().await;
    assert_eq!(
        (status_of(&r), diagnostics_code(&r, "ms-diagnostics-public")),
        (403, "1920"),
        "{r}"
    );

    admin(
        &edge,
        &[
            "Set-CsAccessEdgeConfiguration -AllowAnonymousUsers $true",
            "Set-CsExternalAccessPolicy global -EnableOutsideAccess $true",
        ],
    );
    outside.send(&join("an2")).await;
    let mut pool_conn = pool.accept().await;
    let got = pool_conn.recv().await;
    assert_eq!(header(&got, "call-id"), Some("an2"));
    assert_eq!(
        headers(&got, "ms-edge-proxy-message-trust"),
        ["ms-source-type=InternetUser;ms-ep-fqdn=accessedge.contoso.test"]
    );
    outside.send(&register("ro2")).await;
    let got = pool_conn.recv().await;
    assert_eq!(header(&got, "call-id"), Some("ro2"));
}

#[tokio::test]
async fn a_clearing_house_or_forwarding_proxy_marking_is_the_peers_own_verification() {
    let (mut lab, mut northwind) = northwind_connected_with(|f| f).await;
    for source_type in ["ClearingHouse", "ForwardingProxy"] {
        let marked = |verified: &str| {
            format!("ms-edge-proxy-message-trust: ms-source-type={source_type};ms-ep-fqdn=ch.clearing.test;ms-source-verified-user={verified}")
        };
        // Verified: copied (UseSourceVerification), and the edge's own marking replaces it.
        let id = format!("{source_type}-v");
        let r = dan_marked_to(&mut northwind, &marked("verified"), "alice", &id).await;
        assert_eq!(status_of(&r), 200, "{source_type}");
        let got = lab.pool_recv().await;
        assert_eq!(
            headers(&got, "ms-edge-proxy-message-trust"),
            ["ms-source-type=AutoFederation;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=federation;ms-remote-fqdn=sip.northwind.test"],
            "{source_type}"
        );
        // Unverified: copied too, so only a recipient listing dan would get it.
        let id = format!("{source_type}-u");
        let r = dan_marked_to(&mut northwind, &marked("unverified"), "alice", &id).await;
        assert_eq!(
            (status_of(&r), diagnostics_code(&r, "ms-diagnostics-public")),
            (403, "1921"),
            "{source_type}: {r}"
        );
    }
}
