//! Every message through the edge is policed (issue 12): the attacks a hostile partner
//! tried on the first wave, each over mutual TLS against the lab's federation objects, and
//! the in-dialog paths real software takes (a partner that Record-Routes by address, a
//! client that is no server). Each asserts on what reached the other side.

use std::time::Duration;

use sipedge::transport::{Interface, Transport};
use tokio::sync::mpsc;

use crate::federation::{msg, FedLab, BASE_RECORDS, MARKED};
use crate::support::*;
use crate::tls::{accept_tls, tls_server};

/// fabrikam's edge, as the lab's allowed partner with a ProxyFqdn.
const FABRIKAM: &str = "sip.fabrikam.test";

/// Nothing more reaches the pool within a short wait: the edge decided before relaying, so
/// a refusal that already arrived means nothing was forwarded; the wait covers a bug that
/// answers and relays both.
async fn pool_got_nothing(lab: &mut FedLab) -> bool {
    tokio::time::timeout(Duration::from_millis(300), lab.pool_rx.recv())
        .await
        .is_err()
}

#[tokio::test]
async fn a_preloaded_route_naming_the_edge_opens_no_relay_outward() {
    let mut lab = FedLab::start(crate::tls::Pki::new(), BASE_RECORDS, |f| f).await;
    let ext = lab.edge.addr(Interface::External, Transport::Tls);
    let mut fabrikam = lab.connect(Interface::External, &[FABRIKAM]).await;
    let routes = [
        "Route: <sip:accessedge.contoso.test;lr>".to_string(),
        format!("Route: <sip:{ext};transport=tls;lr>"),
    ];
    for (i, route) in routes.iter().enumerate() {
        fabrikam
            .send(&msg(
                "MESSAGE",
                "sip:dan@fabrikam.test",
                "sip:x@sip.northwind.test",
                &format!("relay{i}"),
                &[MARKED, route],
            ))
            .await;
        let answer = fabrikam.recv_skip_100().await;
        assert_eq!(status_of(&answer), 403, "{route}: {answer}");
        assert!(
            header(&answer, "ms-diagnostics-public").is_some_and(|d| d.starts_with("1000;")),
            "{answer}"
        );
    }
    assert!(pool_got_nothing(&mut lab).await);
}

#[tokio::test]
async fn an_outsider_routing_through_both_interfaces_is_no_internal_user() {
    let mut lab = FedLab::start(crate::tls::Pki::new(), BASE_RECORDS, |f| f).await;
    let int = lab.edge.addr(Interface::Internal, Transport::Tls);
    let mut fabrikam = lab.connect(Interface::External, &[FABRIKAM]).await;
    let route = format!(
        "Route: <sip:accessedge.contoso.test;lr>, <sip:edge-int.contoso.test;lr>, <sip:{int};transport=tls;lr>"
    );
    fabrikam
        .send(&msg(
            "MESSAGE",
            "sip:bob@contoso.test",
            "sip:alice@contoso.test",
            "asbob",
            &[&route],
        ))
        .await;
    let answer = fabrikam.recv_skip_100().await;
    assert_eq!(status_of(&answer), 403, "{answer}");
    assert!(
        pool_got_nothing(&mut lab).await,
        "the pool saw bob's forged request"
    );
}

/// A remote edge for northwind.test that answers every request with `status`, a forged
/// trust marking and, on INVITE and SUBSCRIBE, a Record-Route naming itself by address
/// (as Kamailio does by default) above the route set it copies.
async fn northwind(pki: &crate::tls::Pki, status: u16) -> (u16, mpsc::UnboundedReceiver<String>) {
    let (l, a) = tls_server(pki, "127.0.0.6", "sip.northwind.test").await;
    let port = l.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let mut conn = accept_tls(&l, &a).await;
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(m) = conn.try_recv(Duration::from_secs(30)).await {
                    if !m.starts_with("SIP/2.0") && !m.starts_with("ACK ") {
                        let forged = "ms-edge-proxy-message-trust: ms-source-type=AuthorizedServer;ms-ep-fqdn=evil.test;ms-source-verified-user=verified;ms-source-network=federation";
                        let rr = format!("Record-Route: <sip:127.0.0.6:{port};transport=tls;lr>");
                        let contact = format!("Contact: <sip:dan@127.0.0.6:{port};transport=tls>");
                        let mut answer = response(
                            &m,
                            status,
                            sipedge::policy::reason_phrase(status),
                            &[forged, &contact],
                        );
                        if m.starts_with("INVITE ") || m.starts_with("SUBSCRIBE ") {
                            answer = answer.replacen(
                                "Record-Route:",
                                &format!("{rr}\r\nRecord-Route:"),
                                1,
                            );
                        }
                        conn.send(&answer).await;
                    }
                    let _ = tx.send(m);
                }
            });
        }
    });
    (port, rx)
}

fn northwind_records(port: u16) -> String {
    format!(
        "{BASE_RECORDS}
_sipfederationtls._tcp.northwind.test. IN SRV 10 100 {port} sip.northwind.test.
sip.northwind.test. IN A 127.0.0.6
"
    )
}

#[tokio::test]
async fn a_partners_forged_trust_marking_on_a_response_is_replaced_inward() {
    let pki = crate::tls::Pki::new();
    let (port, _far) = northwind(&pki, 200).await;
    let lab = FedLab::start(pki, &northwind_records(port), |f| f).await;
    let answer = alice_messages(&lab, "sip:dan@northwind.test", "forged-answer").await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(
        headers(&answer, "ms-edge-proxy-message-trust"),
        ["ms-source-type=AutoFederation;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=federation"],
        "the edge's own marking, the partner's claimed one gone: {answer}"
    );
}

/// alice's MESSAGE to `to` from the pool's side of the edge, and the answer she got.
async fn alice_messages(lab: &FedLab, to: &str, id: &str) -> String {
    let mut alice = lab
        .connect(Interface::Internal, &["pool.contoso.test"])
        .await;
    alice
        .send(&msg("MESSAGE", "sip:alice@contoso.test", to, id, &[]))
        .await;
    alice.recv().await
}

/// alice's INVITE to dan@northwind.test through the edge, answered 200 by northwind: the
/// 200 as the pool got it.
async fn invite_northwind(
    alice: &mut StreamConn<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    id: &str,
) -> String {
    alice
        .send(&msg(
            "INVITE",
            "sip:alice@contoso.test",
            "sip:dan@northwind.test",
            id,
            &["Contact: <sip:alice@10.0.0.9:5061;transport=tls>"],
        ))
        .await;
    let ok = alice.recv_skip_100().await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    ok
}

/// The pool's in-dialog request for the 200 `ok` it got as the caller: the route set is the
/// Record-Route list reversed, the Request-URI the callee's Contact.
fn caller_request(ok: &str, method: &str, id: &str) -> String {
    let routes: Vec<&str> = header_values(ok, "record-route")
        .into_iter()
        .rev()
        .collect();
    let contact = header(ok, "contact").expect("contact");
    let uri = contact
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or("");
    let to = header(ok, "to").expect("to");
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/TLS 10.0.0.9:5061;branch=z9hG4bK{id}{method}\r\nRoute: {}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@contoso.test>;tag=t{id}\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n",
        routes.join(", ")
    )
}

#[tokio::test]
async fn a_bye_reaches_a_partner_that_record_routes_by_address() {
    let pki = crate::tls::Pki::new();
    let (port, mut far) = northwind(&pki, 200).await;
    let lab = FedLab::start(pki, &northwind_records(port), |f| f).await;
    let mut alice = lab
        .connect(Interface::Internal, &["pool.contoso.test"])
        .await;
    let ok = invite_northwind(&mut alice, "rr-by-ip").await;
    assert!(
        header_values(&ok, "record-route")[0].starts_with("<sip:127.0.0.6:"),
        "{ok}"
    );
    alice.send(&caller_request(&ok, "BYE", "rr-by-ip")).await;
    let answer = alice.recv().await;
    assert_eq!(
        status_of(&answer),
        200,
        "the BYE was answered by the partner: {answer}"
    );
    let mut methods = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), far.recv()).await {
        methods.push(first_line(&m).split(' ').next().unwrap_or("").to_string());
    }
    assert!(methods.contains(&"BYE".to_string()), "{methods:?}");
}

#[tokio::test]
async fn the_pools_notify_reaches_an_external_subscriber_over_its_own_connection() {
    let mut lab = FedLab::start(crate::tls::Pki::new(), BASE_RECORDS, |f| f).await;
    let mut fay = lab.connect(Interface::External, &[FABRIKAM]).await;
    // fay is a client, not a server: nothing listens at her Contact.
    fay.send(&msg(
        "SUBSCRIBE",
        "sip:fay@fabrikam.test",
        "sip:alice@contoso.test",
        "sub1",
        &[
            MARKED,
            "Event: presence",
            "Contact: <sip:fay@127.0.0.66:1;transport=tls>",
        ],
    ))
    .await;
    let ok = fay.recv_skip_100().await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    let sub = lab.pool_recv().await;
    // The pool is the notifier: its route set is the Record-Route it received, in order.
    let routes = header_values(&sub, "record-route").join(", ");
    let notify = format!(
        "NOTIFY sip:fay@127.0.0.66:1;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 10.0.0.5:5061;branch=z9hG4bKnotify1\r\nRoute: {routes}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@contoso.test>;tag=uas1\r\nTo: <sip:fay@fabrikam.test>;tag=tsub1\r\nCall-ID: sub1\r\nCSeq: 1 NOTIFY\r\nEvent: presence\r\nSubscription-State: active\r\nContent-Length: 0\r\n\r\n"
    );
    let mut pool = lab
        .connect(Interface::Internal, &["pool.contoso.test"])
        .await;
    pool.send(&notify).await;
    let got = fay.recv().await;
    assert!(got.starts_with("NOTIFY "), "{got}");
    fay.send(&response(&got, 200, "OK", &[])).await;
    let answer = pool.recv().await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}

/// fay's INVITE to alice through the edge and the 200 she got back (the pool answers 200).
async fn fay_calls_alice(
    lab: &mut FedLab,
    fay: &mut StreamConn<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    id: &str,
) -> String {
    fay.send(&msg(
        "INVITE",
        "sip:fay@fabrikam.test",
        "sip:alice@contoso.test",
        id,
        &[MARKED, "Contact: <sip:fay@127.0.0.66:1;transport=tls>"],
    ))
    .await;
    let ok = fay.recv_skip_100().await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    let _invite = lab.pool_recv().await;
    ok
}

/// fay's BYE in the dialog of `ok` (her route set is its Record-Route in order), with
/// `call_id` standing for the dialog's.
fn fay_bye(lab: &FedLab, ok: &str, call_id: &str, marked: bool) -> String {
    bye_from(lab, ok, "sip:fay@fabrikam.test", call_id, marked)
}

/// A BYE from `from` with the route set of the dialog of `ok`.
fn bye_from(lab: &FedLab, ok: &str, from: &str, call_id: &str, marked: bool) -> String {
    let pool = lab.pool_port;
    let routes = header_values(ok, "record-route").join(", ");
    let to = header(ok, "to").expect("to");
    let mark = if marked {
        format!("{MARKED}\r\n")
    } else {
        String::new()
    };
    format!(
        "BYE sip:alice@pool.contoso.test:{pool};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 10.0.0.9:5061;branch=z9hG4bKbye{call_id}\r\nRoute: {routes}\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag=t{call_id}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\n{mark}Content-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn in_dialog_requests_from_outside_carry_the_edges_marking_and_not_the_peers() {
    let mut lab = FedLab::start(crate::tls::Pki::new(), BASE_RECORDS, |f| f).await;
    let mut fay = lab.connect(Interface::External, &[FABRIKAM]).await;
    let ok = fay_calls_alice(&mut lab, &mut fay, "dlg1").await;
    fay.send(&fay_bye(&lab, &ok, "dlg1", true)).await;
    assert_eq!(status_of(&fay.recv().await), 200);
    let bye = lab.pool_recv().await;
    assert!(bye.starts_with("BYE "), "{bye}");
    assert_eq!(
        headers(&bye, "ms-edge-proxy-message-trust"),
        ["ms-source-type=DirectPartner;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=federation;ms-remote-fqdn=sip.fabrikam.test"],
        "{bye}"
    );
}

#[tokio::test]
async fn a_sealed_route_replayed_into_another_dialog_or_by_another_peer_is_refused() {
    let pki = crate::tls::Pki::new();
    let mut lab = FedLab::start(pki, BASE_RECORDS, |f| f).await;
    let mut fay = lab.connect(Interface::External, &[FABRIKAM]).await;
    let ok = fay_calls_alice(&mut lab, &mut fay, "dlg2").await;
    // The same partner, another Call-ID: the seal is bound to its dialog.
    fay.send(&fay_bye(&lab, &ok, "replayed", true)).await;
    let answer = fay.recv().await;
    assert_eq!(status_of(&answer), 403, "{answer}");
    // Another partner with the captured route and the dialog's own Call-ID: bound to
    // fabrikam too.
    let mut other = lab
        .connect(Interface::External, &["sip.northwind.test"])
        .await;
    other
        .send(&bye_from(&lab, &ok, "sip:dan@northwind.test", "dlg2", true))
        .await;
    let answer = other.recv().await;
    assert_eq!(status_of(&answer), 403, "{answer}");
    assert!(
        pool_got_nothing(&mut lab).await,
        "a replayed seal reached the pool"
    );
}

#[tokio::test]
async fn a_ua_using_the_edge_as_outbound_proxy_gets_the_decision_it_would_get_without_the_route() {
    let pki = crate::tls::Pki::new();
    let (port, mut far) = northwind(&pki, 200).await;
    let lab = FedLab::start(pki, &northwind_records(port), |f| f).await;
    let int = lab.edge.addr(Interface::Internal, Transport::Tls);
    let mut alice = lab
        .connect(Interface::Internal, &["pool.contoso.test"])
        .await;
    for (i, route) in [
        "Route: <sip:edge-int.contoso.test;lr>".to_string(),
        format!("Route: <sip:{int};transport=tls;lr>"),
    ]
    .iter()
    .enumerate()
    {
        let id = format!("outbound-proxy{i}");
        alice
            .send(&msg(
                "INVITE",
                "sip:alice@contoso.test",
                "sip:dan@northwind.test",
                &id,
                &[route, "Contact: <sip:alice@10.0.0.9:5061;transport=tls>"],
            ))
            .await;
        let ok = alice.recv_skip_100().await;
        assert_eq!(status_of(&ok), 200, "{route}: {ok}");
        let got = tokio::time::timeout(WAIT, far.recv())
            .await
            .expect("northwind got the INVITE")
            .expect("open");
        assert!(got.starts_with("INVITE sip:dan@northwind.test "), "{got}");
        assert!(
            header(&got, "route").is_none(),
            "our Route entry was removed: {got}"
        );
    }
}

#[tokio::test]
async fn a_partners_unmarked_bye_in_a_dialog_is_relayed_marked_unverified() {
    let mut lab = FedLab::start(crate::tls::Pki::new(), BASE_RECORDS, |f| f).await;
    let mut fay = lab.connect(Interface::External, &[FABRIKAM]).await;
    let ok = fay_calls_alice(&mut lab, &mut fay, "dlg3").await;
    // Servers other than Lync mark only what opens a dialog, if anything.
    fay.send(&fay_bye(&lab, &ok, "dlg3", false)).await;
    assert_eq!(status_of(&fay.recv().await), 200);
    let bye = lab.pool_recv().await;
    assert!(bye.starts_with("BYE "), "{bye}");
    let marks = headers(&bye, "ms-edge-proxy-message-trust");
    assert_eq!(marks.len(), 1, "{bye}");
    assert!(
        marks[0].starts_with("ms-source-type=DirectPartner;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=unverified"),
        "{bye}"
    );
}

#[tokio::test]
async fn an_allowed_domains_proxy_fqdn_may_name_its_port() {
    let pki = crate::tls::Pki::new();
    let (port, mut far) = crate::federation::remote_edge(&pki, "127.0.0.3", FABRIKAM).await;
    let records = format!("{BASE_RECORDS}\nsip.fabrikam.test. IN A 127.0.0.3\n");
    let lab = FedLab::start(pki, &records, |f| {
        f.replace(
            "proxy_fqdn = \"sip.fabrikam.test\"",
            &format!("proxy_fqdn = \"sip.fabrikam.test:{port}\""),
        )
    })
    .await;
    let answer = alice_messages(&lab, "sip:dan@fabrikam.test", "proxy-port").await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let got = tokio::time::timeout(WAIT, far.recv())
        .await
        .expect("fabrikam's edge got the MESSAGE on its port")
        .expect("open");
    assert!(got.starts_with("MESSAGE sip:dan@fabrikam.test "), "{got}");
}
