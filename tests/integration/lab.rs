//! `sipedge lab` composed in-process on ephemeral ports, and the seed document's procedure
//! run in its order in the lab before it (config/lab-pre-pic.toml): alice cannot reach a
//! live.com user; the PIC provisioning request is submitted; the two Management Shell
//! commands run verbatim; the lab clock is advanced 30 days; alice's MESSAGE arrives at the
//! simulated Skype gateway.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sipedge::config::Snapshot;
use sipedge::lab::pic::{self, LabClock};
use sipedge::lab::run::{Lab, LabOptions};
use sipedge::lab::topology::Role;
use sipedge::transport::{Interface, Transport};

use crate::support::*;

pub(crate) fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

async fn start(config: &str) -> Lab {
    start_with(config, |_| {}).await
}

/// The lab of `config` on ephemeral ports with a manual clock, after `edit` changed its
/// snapshot (shorter timers, say).
pub(crate) async fn start_with(config: &str, edit: impl FnOnce(&mut Snapshot)) -> Lab {
    let path = repo(config);
    let mut snap = Snapshot::load(&path).unwrap_or_else(|e| panic!("{e}"));
    edit(&mut snap);
    let mut opts = LabOptions::for_config(&path);
    opts.ephemeral = true;
    opts.clock = Arc::new(LabClock::manual(SystemTime::now()));
    Lab::start(snap, opts).await.expect("lab starts")
}

/// One admin request, as `sipedge admin` sends it.
pub(crate) async fn admin(
    lab: &Lab,
    method: &'static str,
    path: &'static str,
    body: &str,
) -> (u16, String) {
    let endpoint = format!("http://{}", lab.admin_addr().expect("admin"));
    let token = lab.admin_token().unwrap().to_string();
    let body = body.to_string();
    tokio::task::spawn_blocking(move || {
        sipedge::admin::http::send(&endpoint, method, path, Some(&token), &body).unwrap()
    })
    .await
    .unwrap()
}

/// alice's MESSAGE to sam@live.com, as the pool relays it over TCP.
pub(crate) fn im(id: &str) -> String {
    im_to("sip:sam@live.com", id, "hello sam")
}

/// alice's MESSAGE to `to`, as the pool relays it over TCP.
pub(crate) fn im_to(to: &str, id: &str, body: &str) -> String {
    request(
        "MESSAGE",
        to,
        "sip:alice@contoso.test",
        to,
        &format!("SIP/2.0/TCP 10.0.0.9:5060;branch=z9hG4bK{id}"),
        id,
        &["Content-Type: text/plain"],
        body,
    )
}

/// The request `peer` received that matches `pred`, which must carry the lab edge's
/// outbound marking (`ms-ep-fqdn=accessedge.contoso.test`).
pub(crate) async fn arrived_marked(
    peer: &sipedge::lab::peer::SimPeer,
    pred: impl Fn(&sipedge::lab::peer::Received) -> bool,
) -> sipedge::lab::peer::Received {
    let got = peer
        .wait_for(WAIT, pred)
        .await
        .unwrap_or_else(|| panic!("nothing arrived at {}", peer.spec().fqdn));
    assert!(
        got.trust
            .as_deref()
            .unwrap_or("")
            .contains("ms-ep-fqdn=accessedge.contoso.test"),
        "the edge's marking: {got:?}"
    );
    got
}

/// alice's MESSAGE to sam@live.com through the internal interface; the final answer.
async fn alice_says(lab: &Lab, id: &str) -> String {
    alice_sends(lab, &im(id)).await
}

/// `msg` sent to the internal interface over a new TCP connection; the final answer.
pub(crate) async fn alice_sends(lab: &Lab, msg: &str) -> String {
    let mut conn = tcp_connect(
        lab.edge()
            .local_addr(Interface::Internal, Transport::Tcp)
            .unwrap(),
    )
    .await;
    conn.send(msg).await;
    conn.recv_skip_100().await
}

#[tokio::test]
async fn the_seed_procedure_works_end_to_end_in_the_pre_pic_lab() {
    let lab = start("config/lab-pre-pic.toml").await;
    let table = lab.table();
    assert!(
        table.contains("PIC: contoso.test not provisioned"),
        "{table}"
    );

    // 1. Before: Messenger is disabled and there is no Skype provider.
    let r = alice_says(&lab, "seed1").await;
    assert!(status_of(&r) >= 400, "{r}");
    assert!(lab.peer(Role::Skype).received().is_empty());

    // 2. The provisioning request.
    let (s, out) = admin(
        &lab,
        "POST",
        "/provision",
        "agreement=AG-0001\nedge_fqdn=accessedge.contoso.test\ndomain=contoso.test\ncontact=admin@contoso.test\n",
    )
    .await;
    assert_eq!(s, 200, "{out}");
    assert!(out.starts_with("PIC-0001 Submitted"), "{out}");
    let (s, out) = admin(
        &lab,
        "POST",
        "/provision",
        "agreement=AG-2\nedge_fqdn=edge.nowhere.test\ndomain=x.test\n",
    )
    .await;
    assert_eq!(s, 400, "{out}");
    assert!(out.contains("does not resolve"), "{out}");

    // 3. The two Management Shell commands, verbatim, in the seed's order.
    for line in [
        "Remove-CsPublicProvider -Identity Messenger",
        r#"New-CsPublicProvider -Identity Skype -ProxyFqdn federation.messenger.msn.com -IconUrl "https://images.edge.messenger.live.com/Messenger_16x16.png" -VerificationLevel 2 -Enabled 1"#,
    ] {
        let (s, out) = admin(&lab, "POST", "/cmdlet", line).await;
        assert_eq!(s, 200, "{line}: {out}");
    }

    // Provider in place but the organisation is still pending at the gateway: 403 + 1080.
    let r = alice_says(&lab, "seed2").await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert_eq!(
        header(&r, "ms-diagnostics"),
        Some(pic::not_provisioned_diagnostics("contoso.test").as_str()),
        "{r}"
    );
    let (_, status) = admin(&lab, "GET", "/provisioning-status", "").await;
    assert!(status.starts_with("PIC-0001 Submitted"), "{status}");

    // 4. Thirty days of lab time.
    let (s, out) = admin(&lab, "POST", "/clock/advance", "30d").await;
    assert_eq!(s, 200, "{out}");
    let (_, status) = admin(&lab, "GET", "/provisioning-status", "").await;
    assert!(status.starts_with("PIC-0001 Provisioned"), "{status}");

    // 5. alice's MESSAGE arrives at the simulated Skype gateway.
    let r = alice_says(&lab, "seed3").await;
    assert_eq!(status_of(&r), 200, "{r}");
    let got = arrived_marked(lab.peer(Role::Skype), |m| m.call_id == "seed3").await;
    assert_eq!(got.method, "MESSAGE");
    assert_eq!(got.uri, "sip:sam@live.com");
    assert!(got.from.contains("alice@contoso.test"), "{}", got.from);
    assert!(got.text.ends_with("hello sam"), "{}", got.text);
    lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_lab_after_the_seed_starts_provisioned_and_skype_traffic_flows() {
    let lab = start("config/lab.toml").await;
    let table = lab.table();
    for row in [
        "pool",
        "partner",
        "skype",
        "hosting",
        "PIC: contoso.test provisioned",
    ] {
        assert!(table.contains(row), "{row}: {table}");
    }
    let r = alice_says(&lab, "post1").await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(lab
        .peer(Role::Skype)
        .wait_for(WAIT, |m| m.call_id == "post1")
        .await
        .is_some());
    let (s, out) = admin(&lab, "POST", "/clock/advance", "soon").await;
    assert_eq!(s, 400, "{out}");
    lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_message_to_northwind_reaches_the_discovered_partner_found_by_srv_alone() {
    let lab = start("config/lab.toml").await;
    let table = lab.table();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("discovered") && l.contains("sip.northwind.test")),
        "{table}"
    );
    let r = alice_sends(&lab, &im_to("sip:nina@northwind.test", "nw1", "hello nina")).await;
    assert_eq!(status_of(&r), 200, "{r}");
    let got = arrived_marked(lab.peer(Role::Discovered), |m| m.call_id == "nw1").await;
    assert_eq!(got.uri, "sip:nina@northwind.test");
    // Open federation: the edge classified it as a discovered partner.
    let d = recorded_decision(lab.edge().core(), "nw1", "MESSAGE").await;
    assert_eq!(d.rule, "discovered-partner", "{d:?}");
    lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_adatum_tripwire_stays_untouched_by_blocked_requests_and_counts_a_direct_contact() {
    let lab = start("config/lab.toml").await;
    let health = || async {
        let (s, body) = admin(&lab, "GET", "/health", "").await;
        assert_eq!(s, 200, "{body}");
        body
    };
    let untouched = "tripwire blocked sip.adatum.test: tripwire: not contacted (0 contacts)";
    let body = health().await;
    assert!(
        body.starts_with("ok\n") && body.contains(untouched),
        "{body}"
    );
    assert!(
        lab.table().contains("tripwire: not contacted"),
        "{}",
        lab.table()
    );

    // A request for the blocked domain is refused, and the edge never dials adatum.
    let r = alice_sends(&lab, &im_to("sip:ada@adatum.test", "ad1", "hello ada")).await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert_eq!(diagnostics_code(&r, "ms-diagnostics"), "1903", "{r}");
    assert_eq!(lab.peer(Role::Blocked).contacts().count, 0);
    assert!(health().await.contains(untouched));

    // Anyone connecting to it directly trips it.
    let tripwire = lab.peer(Role::Blocked).local_addr();
    let _conn = tokio::net::TcpStream::connect(tripwire).await.unwrap();
    let c = lab.peer(Role::Blocked).wait_for_contacts(1, WAIT).await;
    assert_eq!(c.count, 1, "{c:?}");
    let body = health().await;
    assert!(
        body.contains(
            "tripwire blocked sip.adatum.test: TRIPPED: 1 contact(s), last from 127.0.0.1:"
        ),
        "{body}"
    );
    assert!(
        lab.table().contains("TRIPPED: 1 contact(s)"),
        "{}",
        lab.table()
    );
    lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_lab_northwind_peer_shows_the_discovered_partner_contacts_limit() {
    let lab = start_with("config/lab.toml", |snap| {
        snap.federation
            .access_edge
            .max_contacts_per_discovered_partner = 2;
    })
    .await;
    let edge = lab
        .edge()
        .local_addr(Interface::External, Transport::Tls)
        .unwrap();
    let mut answers = Vec::new();
    for user in ["u1", "u2", "u3"] {
        let a = lab
            .peer(Role::Discovered)
            .originate(
                edge,
                "accessedge.contoso.test",
                &format!("sip:{user}@contoso.test"),
                "sip:nina@northwind.test",
                "hello",
            )
            .await
            .expect("the edge answers northwind");
        answers.push((
            a.status,
            diagnostics_code(&a.text, "ms-diagnostics-public").to_string(),
        ));
    }
    assert_eq!(answers[0].0, 200, "{answers:?}");
    assert_eq!(answers[1].0, 200, "{answers:?}");
    assert_eq!(
        (answers[2].0, answers[2].1.as_str()),
        (503, "1911"),
        "{answers:?}"
    );
    lab.shutdown(Duration::from_millis(200)).await;
}
