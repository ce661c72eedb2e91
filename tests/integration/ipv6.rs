//! IPv6 end to end (RFC 5118): the edge listens on [::1], relays a MESSAGE over UDP and TCP,
//! brackets its own IPv6 host in Via and Record-Route, and marks an IPv6 source with
//! `received`/`rport`.

use std::net::SocketAddr;

use sipedge::transport::{Interface, Transport};

use crate::support::*;

/// Both interfaces on ::1, named by the address; contoso.test goes to the pool on [::1].
fn v6_config(pool: SocketAddr) -> String {
    format!(
        r#"
[edge]
local_domains = ["contoso.test"]

[interfaces.external]
fqdn = "::1"
address = "::1"
udp_port = 0
tcp_port = 0

[interfaces.internal]
fqdn = "::1"
address = "::1"
udp_port = 0
tcp_port = 0

[pool]
target = "{pool}"
transport = "udp"
"#
    )
}

/// A MESSAGE whose top Via names another IPv6 host than the one it comes from, so the edge
/// must add `received`, and asks for `rport`.
fn message(transport: &str, call_id: &str) -> String {
    request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:alice@[2001:db8::10]",
        "sip:bob@contoso.test",
        &format!("SIP/2.0/{transport} [2001:db8::9]:5060;branch=z9hG4bK{call_id};rport"),
        call_id,
        &[
            "Contact: <sip:alice@[2001:db8::9]:5060;transport=udp>",
            "Route: <sip:[2001:db8::77];lr>",
        ],
        "hi",
    )
}

fn check_relayed(got: &str, edge_port: u16, client: SocketAddr, transport: &str) {
    let vias = headers(got, "via");
    assert_eq!(vias.len(), 2, "{got}");
    assert!(
        vias[0].starts_with(&format!("SIP/2.0/UDP [::1]:{edge_port};branch=z9hG4bK")),
        "the edge's Via: {}",
        vias[0]
    );
    assert_eq!(
        vias[1],
        format!(
            "SIP/2.0/{transport} [2001:db8::9]:5060;branch=z9hG4bK{};rport={};received=::1",
            header(got, "call-id").unwrap_or(""),
            client.port()
        )
    );
    // IPv6 hosts in Contact and Route pass through untouched.
    assert_eq!(
        header(got, "contact"),
        Some("<sip:alice@[2001:db8::9]:5060;transport=udp>")
    );
    assert_eq!(header(got, "route"), Some("<sip:[2001:db8::77];lr>"));
    assert!(
        rsip::SipMessage::try_from(got).is_ok(),
        "an independent parser reads the relayed request:\n{got}"
    );
}

#[tokio::test]
async fn message_over_udp_on_ipv6_loopback() {
    let pool = UdpPeer::bind("[::1]").await;
    let edge = TestEdge::start(&v6_config(pool.addr())).await;
    let to = edge.addr(Interface::External, Transport::Udp);
    assert!(to.is_ipv6(), "listens on ::1: {to}");
    let client = UdpPeer::bind("[::1]").await;
    client.send(to, &message("UDP", "v6udp")).await;
    let (got, from) = pool.recv().await;
    assert_eq!(from.ip().to_string(), "::1");
    check_relayed(
        &got,
        edge.addr(Interface::Internal, Transport::Udp).port(),
        client.addr(),
        "UDP",
    );
    pool.send(from, &response(&got, 200, "OK", &[])).await;
    let (answer, _) = client.recv().await;
    assert_eq!(status_of(&answer), 200);
    assert_eq!(
        headers(&answer, "via"),
        vec![format!(
            "SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKv6udp;rport={};received=::1",
            client.addr().port()
        )]
    );
}

#[tokio::test]
async fn message_over_tcp_on_ipv6_loopback() {
    let pool = UdpPeer::bind("[::1]").await;
    let edge = TestEdge::start(&v6_config(pool.addr())).await;
    let to = edge.addr(Interface::External, Transport::Tcp);
    assert!(to.is_ipv6(), "listens on ::1: {to}");
    let mut client = tcp_connect(to).await;
    let local = client.io.local_addr().expect("local addr");
    client.send(&message("TCP", "v6tcp")).await;
    let (got, from) = pool.recv().await;
    check_relayed(
        &got,
        edge.addr(Interface::Internal, Transport::Udp).port(),
        local,
        "TCP",
    );
    pool.send(from, &response(&got, 200, "OK", &[])).await;
    let answer = client.recv().await;
    assert_eq!(status_of(&answer), 200);
    assert_eq!(headers(&answer, "via").len(), 1);
}

#[tokio::test]
async fn invite_over_ipv6_gets_a_bracketed_record_route() {
    let pool = UdpPeer::bind("[::1]").await;
    let edge = TestEdge::start(&v6_config(pool.addr())).await;
    let client = UdpPeer::bind("[::1]").await;
    let req = message("UDP", "v6inv")
        .replace("MESSAGE sip:", "INVITE sip:")
        .replace("CSeq: 1 MESSAGE", "CSeq: 1 INVITE");
    client
        .send(edge.addr(Interface::External, Transport::Udp), &req)
        .await;
    let (got, _) = pool.recv().await;
    let rr = headers(&got, "record-route");
    assert!(!rr.is_empty(), "{got}");
    for v in rr {
        assert!(v.starts_with("<sip:[::1]:"), "{v}");
    }
}
