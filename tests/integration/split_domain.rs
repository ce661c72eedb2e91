//! Split domain (hybrid): contoso.test is shared with the hosting provider LyncOnline
//! (EnabledSharedAddressSpace, HostsOCSUsers), where dave@contoso.test is homed. Over
//! mutual TLS on the wire: what the edge sends to LyncOnline for dave, what it accepts
//! from LyncOnline for our domain, and the 1017 refusal of a wrong `ms-split-domain-info`.

use tokio::sync::mpsc;

use crate::federation::{msg, remote_edge, FedLab, BASE_RECORDS, MARKED};
use crate::support::*;
use crate::tls::Pki;
use sipedge::transport::Interface;

const SPLIT_INTRA: &str = "ms-split-domain-info: ms-traffic-type=SplitIntra";

/// The lab with LyncOnline's edge on 127.0.0.5 (its ProxyFqdn given the port it bound).
async fn hybrid_lab() -> (FedLab, mpsc::UnboundedReceiver<String>) {
    let pki = Pki::new();
    let (port, online) = remote_edge(&pki, "127.0.0.5", "sipfed.online.lync.com").await;
    let records = format!("{BASE_RECORDS}\nsipfed.online.lync.com. IN A 127.0.0.5\n");
    let lab = FedLab::start(pki, &records, move |f| {
        f.replace(
            "proxy_fqdn = \"sipfed.online.lync.com\"",
            &format!("proxy_fqdn = \"sipfed.online.lync.com:{port}\""),
        )
    })
    .await;
    (lab, online)
}

#[tokio::test]
async fn a_user_homed_online_is_reached_through_the_hosting_provider_marked_split_intra() {
    let (mut lab, mut online) = hybrid_lab().await;
    let mut pool = lab
        .connect(Interface::Internal, &["pool.contoso.test"])
        .await;
    // carol may not federate (NoFederation), but dave is of her own organisation.
    let (carol, dave) = ("sip:carol@contoso.test", "sip:dave@contoso.test");
    pool.send(&msg("MESSAGE", carol, dave, "hy1", &[])).await;
    let r = pool.recv().await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert_eq!(
        header(&r, "ms-edge-proxy-message-trust"),
        Some("ms-source-type=AuthorizedServer;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=unverified;ms-source-network=federation"),
        "{r}"
    );
    let got = tokio::time::timeout(WAIT, online.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first_line(&got), "MESSAGE sip:dave@contoso.test SIP/2.0");
    assert_eq!(
        headers(&got, "ms-split-domain-info"),
        ["ms-traffic-type=SplitIntra"]
    );
    assert_eq!(
        headers(&got, "ms-edge-proxy-message-trust"),
        ["ms-source-type=EdgeProxyGenerated;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified"]
    );

    // bob is homed on-premises: the pool.
    pool.send(&msg("MESSAGE", carol, "sip:bob@contoso.test", "hy2", &[]))
        .await;
    assert_eq!(status_of(&pool.recv().await), 200);
    let got = lab.pool_recv().await;
    assert_eq!(header(&got, "call-id"), Some("hy2"));
    assert!(online.try_recv().is_err(), "nothing more went online");
}

#[tokio::test]
async fn the_hosting_provider_speaks_for_the_users_it_hosts_and_for_no_other_contoso_user() {
    let (mut lab, _online) = hybrid_lab().await;
    let mut lync = lab
        .connect(Interface::External, &["sipfed.online.lync.com"])
        .await;
    let (dave, alice) = ("sip:dave@contoso.test", "sip:alice@contoso.test");
    lync.send(&msg("MESSAGE", dave, alice, "in1", &[MARKED, SPLIT_INTRA]))
        .await;
    let r = lync.recv().await;
    assert_eq!(status_of(&r), 200, "{r}");
    let got = lab.pool_recv().await;
    assert_eq!(
        headers(&got, "ms-edge-proxy-message-trust"),
        ["ms-source-type=AuthorizedServer;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=federation;ms-remote-fqdn=sipfed.online.lync.com"]
    );
    assert_eq!(
        headers(&got, "ms-split-domain-info"),
        ["ms-traffic-type=SplitIntra"]
    );

    // alice is homed on-premises: LyncOnline does not speak for her.
    lync.send(&msg(
        "MESSAGE",
        alice,
        "sip:bob@contoso.test",
        "in2",
        &[MARKED],
    ))
    .await;
    let r = lync.recv().await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert_eq!(diagnostics_code(&r, "ms-diagnostics-public"), "1010", "{r}");
}

#[tokio::test]
async fn a_split_intra_marking_from_a_domain_that_is_not_ours_is_refused_with_1017() {
    let (lab, _online) = hybrid_lab().await;
    let mut lync = lab
        .connect(Interface::External, &["sipfed.online.lync.com"])
        .await;
    // The support article's case: a tenant domain of the provider that our topology does
    // not have (my.contoso.test), marked as traffic inside the split domain.
    let from = "sip:tia@my.contoso.test";
    lync.send(&msg(
        "MESSAGE",
        from,
        "sip:alice@contoso.test",
        "wt1",
        &[MARKED, SPLIT_INTRA],
    ))
    .await;
    let r = lync.recv().await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert_eq!(
        header(&r, "ms-diagnostics-public"),
        Some("1017;reason=\"Cannot route From and To domains in this combination\";summary=\"Domain type analysis indicates that the ms-split-domain-info header in the message is the wrong type\";domain=\"my.contoso.test\""),
        "{r}"
    );
}
