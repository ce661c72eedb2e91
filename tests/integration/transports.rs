//! The core relay over UDP and TCP: both directions, the proxy rules of RFC 3261 §16,
//! stream framing, and what goes wrong on purpose.

use std::time::Duration;

use sipedge::transport::{Interface, Transport};

use crate::support::*;

async fn edge_with_udp_pool() -> (TestEdge, UdpPeer, UdpPeer) {
    let pool = UdpPeer::bind("127.0.0.1").await;
    let partner = UdpPeer::bind("127.0.0.3").await;
    let edge = TestEdge::start(&base_config(pool.addr(), "udp", partner.addr(), "udp")).await;
    (edge, pool, partner)
}

#[tokio::test]
async fn message_over_udp_from_outside_reaches_the_pool_and_the_answer_comes_back() {
    let (edge, pool, _partner) = edge_with_udp_pool().await;
    let client = UdpPeer::bind("127.0.0.9").await;
    let via = format!(
        "SIP/2.0/UDP 127.0.0.9:{};branch=z9hG4bKc1;rport",
        client.addr().port()
    );
    let req = request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:alice@fabrikam.test",
        "sip:bob@contoso.test",
        &via,
        "udp-in-1",
        &["Content-Type: text/plain"],
        "hello",
    );
    client
        .send(edge.addr(Interface::External, Transport::Udp), &req)
        .await;

    let (got, from) = pool.recv().await;
    assert_eq!(first_line(&got), "MESSAGE sip:bob@contoso.test SIP/2.0");
    assert_eq!(
        from.ip().to_string(),
        "127.0.0.2",
        "leaves through the internal interface"
    );
    let vias = headers(&got, "via");
    assert_eq!(vias.len(), 2);
    assert!(
        vias[0].starts_with(&format!(
            "SIP/2.0/UDP edge-int.contoso.test:{};branch=z9hG4bK",
            edge.addr(Interface::Internal, Transport::Udp).port()
        )),
        "{}",
        vias[0]
    );
    assert_eq!(
        vias[1],
        format!(
            "SIP/2.0/UDP 127.0.0.9:{};branch=z9hG4bKc1;rport={};received=127.0.0.9",
            client.addr().port(),
            client.addr().port()
        )
    );
    assert_eq!(header(&got, "max-forwards"), Some("69"));
    assert!(got.ends_with("\r\n\r\nhello"));
    assert!(
        headers(&got, "record-route").is_empty(),
        "MESSAGE is not dialog-creating"
    );

    // An independent parser (rsip) reads what the edge put on the wire.
    let parsed = rsip::SipMessage::try_from(got.as_str()).expect("rsip parses the relayed request");
    assert!(
        matches!(parsed, rsip::SipMessage::Request(ref r) if r.method == rsip::Method::Message)
    );

    pool.send(from, &response(&got, 200, "OK", &[])).await;
    let (answer, _) = client.recv().await;
    assert_eq!(status_of(&answer), 200);
    assert_eq!(headers(&answer, "via"), vec![vias[1]]);
    assert!(
        rsip::SipMessage::try_from(answer.as_str()).is_ok(),
        "rsip parses the relayed response"
    );
}

#[tokio::test]
async fn message_over_tcp_from_inside_leaves_through_the_external_interface() {
    let pool = UdpPeer::bind("127.0.0.1").await;
    let partner = TcpPeer::bind("127.0.0.3").await;
    let edge = TestEdge::start(&base_config(pool.addr(), "udp", partner.addr(), "tcp")).await;
    let mut client = tcp_connect(edge.addr(Interface::Internal, Transport::Tcp)).await;
    let req = request(
        "MESSAGE",
        "sip:carol@fabrikam.test",
        "sip:alice@contoso.test",
        "sip:carol@fabrikam.test",
        "SIP/2.0/TCP pool.contoso.test:5070;branch=z9hG4bKt1",
        "tcp-out-1",
        &[],
        "hi",
    );
    client.send(&req).await;

    let mut far = partner.accept().await;
    let got = far.recv().await;
    assert_eq!(first_line(&got), "MESSAGE sip:carol@fabrikam.test SIP/2.0");
    assert_eq!(
        far.io.peer_addr().unwrap().ip().to_string(),
        "127.0.0.1",
        "from the external address"
    );
    // Outside only the edge's Via shows (topology hiding); the sender's comes back on the
    // answer with its `received`.
    let vias = headers(&got, "via");
    assert_eq!(vias.len(), 1, "{got}");
    assert!(
        vias[0].starts_with("SIP/2.0/TCP accessedge.contoso.test:"),
        "{}",
        vias[0]
    );
    far.send(&response(&got, 200, "OK", &[])).await;
    let answer = client.recv().await;
    assert_eq!(status_of(&answer), 200);
    let vias = headers(&answer, "via");
    assert_eq!(vias.len(), 1, "{answer}");
    assert!(
        vias[0].starts_with("SIP/2.0/TCP pool.contoso.test:5070;branch=z9hG4bKt1;")
            && vias[0].contains("received=127.0.0.1"),
        "{}",
        vias[0]
    );
}

#[tokio::test]
async fn the_edge_is_no_open_relay() {
    let (edge, _pool, partner) = edge_with_udp_pool().await;
    let client = UdpPeer::bind("127.0.0.9").await;
    let req = request(
        "MESSAGE",
        "sip:carol@fabrikam.test",
        "sip:mallory@evil.test",
        "sip:carol@fabrikam.test",
        "SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKr1",
        "relay-1",
        // A client-sized request: over UDP the edge's optional lines (here the public
        // diagnostics) must fit in what the sender sent (no amplification).
        &[LYNC_UA, LYNC_UA],
        "",
    );
    client
        .send(edge.addr(Interface::External, Transport::Udp), &req)
        .await;
    let (answer, _) = client.recv().await;
    assert_eq!(status_of(&answer), 403, "{answer}");
    assert!(
        header(&answer, "ms-diagnostics-public").is_some(),
        "{answer}"
    );
    assert!(
        header(&answer, "ms-diagnostics").is_none(),
        "internal diagnostics never go outside"
    );
    assert!(partner.try_recv(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn max_forwards_zero_gives_483_but_options_to_the_edge_gets_200() {
    let (edge, pool, _partner) = edge_with_udp_pool().await;
    let client = UdpPeer::bind("127.0.0.9").await;
    let to = edge.addr(Interface::External, Transport::Udp);
    let req = request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:alice@fabrikam.test",
        "sip:bob@contoso.test",
        "SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKm0",
        "mf-0",
        &[],
        "",
    )
    .replace("Max-Forwards: 70", "Max-Forwards: 0");
    client.send(to, &req).await;
    let (answer, _) = client.recv().await;
    assert_eq!(first_line(&answer), "SIP/2.0 483 Too Many Hops");
    assert!(pool.try_recv(Duration::from_millis(200)).await.is_none());

    let opt = request(
        "OPTIONS",
        "sip:accessedge.contoso.test",
        "sip:probe@fabrikam.test",
        "sip:accessedge.contoso.test",
        "SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKo0",
        "opt-0",
        &[LYNC_UA, LYNC_UA],
        "",
    )
    .replace("Max-Forwards: 70", "Max-Forwards: 0");
    client.send(to, &opt).await;
    let (answer, _) = client.recv().await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(header(&answer, "allow").is_some_and(|a| a.contains("MESSAGE") && a.contains("INVITE")));
}

#[tokio::test]
async fn the_options_answer_claims_no_extension_the_edge_does_not_implement() {
    let (edge, _pool, _partner) = edge_with_udp_pool().await;
    let mut client = tcp_connect(edge.addr(Interface::External, Transport::Tcp)).await;
    let opt = request(
        "OPTIONS",
        "sip:accessedge.contoso.test",
        "sip:probe@fabrikam.test",
        "sip:accessedge.contoso.test",
        "SIP/2.0/TCP 127.0.0.9;branch=z9hG4bKsup1",
        "sup-1",
        &[],
        "",
    )
    .replace("Max-Forwards: 70", "Max-Forwards: 0");
    client.send(&opt).await;
    let answer = client.recv().await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    // Neither Path (RFC 3327) nor Outbound (RFC 5626) is implemented: no Supported claims them.
    for supported in headers(&answer, "supported") {
        for tag in supported.split(',').map(str::trim) {
            assert!(
                !tag.eq_ignore_ascii_case("path") && !tag.eq_ignore_ascii_case("outbound"),
                "{answer}"
            );
        }
    }
}

#[tokio::test]
async fn a_request_that_comes_back_unchanged_is_a_loop() {
    // Route loop.test to the edge's own internal UDP listener: the request leaves and
    // arrives again with our Via on it.
    let pool = UdpPeer::bind("127.0.0.1").await;
    let internal_udp = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let port = internal_udp.local_addr().unwrap().port();
    let toml = base_config(pool.addr(), "udp", "127.0.0.3:5061".parse().unwrap(), "udp")
        + &format!("\n[[routes]]\ndomain = \"loop.test\"\ntarget = \"127.0.0.2:{port}\"\ntransport = \"udp\"\n");
    let snap = sipedge::config::Snapshot::from_toml(&toml, std::path::Path::new(".")).unwrap();
    let mut sockets = sipedge::edge::Sockets::bind(&snap).await.unwrap();
    sockets.internal.udp = Some(internal_udp);
    let edge = sipedge::edge::Edge::start(
        std::sync::Arc::new(sipedge::config::Live::new(snap)),
        sockets,
        None,
    )
    .unwrap();
    let client = UdpPeer::bind("127.0.0.2").await;
    let req = request(
        "MESSAGE",
        "sip:x@loop.test",
        "sip:alice@contoso.test",
        "sip:x@loop.test",
        &format!(
            "SIP/2.0/UDP 127.0.0.2:{};branch=z9hG4bKl1",
            client.addr().port()
        ),
        "loop-1",
        &[],
        "",
    );
    client
        .send(
            edge.local_addr(Interface::Internal, Transport::Udp)
                .unwrap(),
            &req,
        )
        .await;
    let (answer, _) = client.recv_final_or_request().await;
    assert_eq!(first_line(&answer), "SIP/2.0 482 Loop Detected", "{answer}");
}

#[tokio::test]
async fn malformed_requests_get_400_naming_the_problem() {
    let (edge, pool, _partner) = edge_with_udp_pool().await;
    let client = UdpPeer::bind("127.0.0.9").await;
    let to = edge.addr(Interface::External, Transport::Udp);
    // Client-sized requests (LYNC_UA): over UDP the detail must fit in what was sent.
    let no_call_id = format!("MESSAGE sip:bob@contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKb1\r\nFrom: <sip:a@fabrikam.test>;tag=1\r\nTo: <sip:bob@contoso.test>\r\nCSeq: 1 MESSAGE\r\n{LYNC_UA}\r\nContent-Length: 0\r\n\r\n");
    client.send(to, &no_call_id).await;
    let (answer, _) = client.recv().await;
    assert_eq!(
        first_line(&answer),
        "SIP/2.0 400 Bad Request - missing Call-ID header"
    );
    let bad_mf = request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:a@fabrikam.test",
        "sip:bob@contoso.test",
        "SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKb2",
        "bad-mf",
        &[LYNC_UA],
        "",
    )
    .replace("Max-Forwards: 70", "Max-Forwards: many");
    client.send(to, &bad_mf).await;
    let (answer, _) = client.recv().await;
    assert_eq!(
        first_line(&answer),
        "SIP/2.0 400 Bad Request - malformed Max-Forwards header"
    );
    // Garbage is dropped, and the edge goes on serving.
    client.send(to, "\u{1}\u{2}garbage\r\n\r\n").await;
    let ok = request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:a@fabrikam.test",
        "sip:bob@contoso.test",
        "SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKb3",
        "after-garbage",
        &[],
        "",
    );
    client.send(to, &ok).await;
    let (got, _) = pool.recv().await;
    assert_eq!(header(&got, "call-id"), Some("after-garbage"));
}

#[tokio::test]
async fn oversize_request_on_a_stream_gets_513_and_the_connection_closes() {
    let (edge, _pool, _partner) = edge_with_udp_pool().await;
    let mut client = tcp_connect(edge.addr(Interface::External, Transport::Tcp)).await;
    let body = "x".repeat(5000);
    let req = request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:a@fabrikam.test",
        "sip:bob@contoso.test",
        "SIP/2.0/TCP 127.0.0.9;branch=z9hG4bKbig",
        "big",
        &[],
        &body,
    );
    client.send(&req).await;
    let answer = client.recv().await;
    assert_eq!(first_line(&answer), "SIP/2.0 513 Message Too Large");
    assert!(client.closed_within(Duration::from_secs(2)).await);
}

#[tokio::test]
async fn missing_content_length_on_a_stream_gets_400() {
    let (edge, _pool, _partner) = edge_with_udp_pool().await;
    let mut client = tcp_connect(edge.addr(Interface::External, Transport::Tcp)).await;
    client.send("MESSAGE sip:bob@contoso.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.9;branch=z9hG4bKncl\r\nFrom: <sip:a@fabrikam.test>;tag=1\r\nTo: <sip:bob@contoso.test>\r\nCall-ID: ncl\r\nCSeq: 1 MESSAGE\r\n\r\n").await;
    let answer = client.recv().await;
    assert!(
        first_line(&answer).starts_with("SIP/2.0 400 Bad Request"),
        "{answer}"
    );
}

#[tokio::test]
async fn pipelined_and_split_messages_on_tcp_are_all_relayed() {
    let (edge, pool, _partner) = edge_with_udp_pool().await;
    let mut client = tcp_connect(edge.addr(Interface::External, Transport::Tcp)).await;
    let m = |id: &str| {
        request(
            "MESSAGE",
            "sip:bob@contoso.test",
            "sip:a@fabrikam.test",
            "sip:bob@contoso.test",
            &format!("SIP/2.0/TCP 127.0.0.9;branch=z9hG4bK{id}"),
            id,
            &[],
            "body",
        )
    };
    client.send(&(m("p1") + &m("p2"))).await;
    let third = m("p3");
    for chunk in third.as_bytes().chunks(7) {
        client.send_bytes(chunk).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (got, _) = pool.recv().await;
        ids.push(header(&got, "call-id").unwrap_or("").to_string());
        assert!(got.ends_with("\r\n\r\nbody"));
    }
    ids.sort();
    assert_eq!(ids, ["p1", "p2", "p3"]);
}

#[tokio::test]
async fn crlf_keepalive_ping_gets_a_pong() {
    let (edge, _pool, _partner) = edge_with_udp_pool().await;
    let mut client = tcp_connect(edge.addr(Interface::External, Transport::Tcp)).await;
    client.send("\r\n\r\n").await;
    assert_eq!(client.read_raw(WAIT).await, b"\r\n");
}

#[tokio::test]
async fn invite_dialog_across_both_interfaces_follows_the_record_route_set() {
    let (edge, _pool, partner) = edge_with_udp_pool().await;
    let alice = UdpPeer::bind("127.0.0.2").await;
    let int = edge.addr(Interface::Internal, Transport::Udp);
    let ext = edge.addr(Interface::External, Transport::Udp);
    let alice_contact = format!("<sip:alice@127.0.0.2:{}>", alice.addr().port());
    let invite = request(
        "INVITE",
        "sip:carol@fabrikam.test",
        "sip:alice@contoso.test",
        "sip:carol@fabrikam.test",
        &format!(
            "SIP/2.0/UDP 127.0.0.2:{};branch=z9hG4bKinv1",
            alice.addr().port()
        ),
        "dialog-1",
        &[
            &format!("Contact: {alice_contact}"),
            "Content-Type: application/sdp",
        ],
        "v=0\r\n",
    );
    alice.send(int, &invite).await;
    let (trying, _) = alice.recv().await;
    assert_eq!(status_of(&trying), 100);

    let (got, edge_src) = partner.recv().await;
    assert_eq!(edge_src.ip().to_string(), "127.0.0.1");
    // Outside, only the external entry shows; the internal one rides sealed inside it
    // (`topology.rs` covers the hiding in depth).
    let sealed = headers(&got, "record-route");
    assert_eq!(sealed.len(), 1, "one entry outside: {got}");
    assert!(
        sealed[0].starts_with(&format!(
            "<sip:accessedge.contoso.test:{};transport=udp;lr;ms-int-rs=",
            ext.port()
        )),
        "{got}"
    );
    assert!(!sealed[0].contains("edge-int"), "{got}");
    let rr = [
        format!(
            "<sip:accessedge.contoso.test:{};transport=udp;lr>",
            ext.port()
        ),
        format!(
            "<sip:edge-int.contoso.test:{};transport=udp;lr>",
            int.port()
        ),
    ];
    let carol_contact = format!("Contact: <sip:carol@127.0.0.3:{}>", partner.addr().port());
    partner
        .send(edge_src, &response(&got, 180, "Ringing", &[]))
        .await;
    partner
        .send(edge_src, &response(&got, 200, "OK", &[&carol_contact]))
        .await;
    let (ringing, _) = alice.recv().await;
    assert_eq!(status_of(&ringing), 180);
    let (ok, _) = alice.recv().await;
    assert_eq!(status_of(&ok), 200);
    assert_eq!(
        crate::topology::without_flows(header_values(&ok, "record-route")),
        rr,
        "the whole route set reaches the caller (our internal entry also remembers the flow)"
    );

    // The caller's route set is the Record-Route list reversed.
    let ack = format!(
        "ACK sip:carol@127.0.0.3:{} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:{};branch=z9hG4bKack1\r\nRoute: {}\r\nRoute: {}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@contoso.test>;tag=tdialog-1\r\nTo: <sip:carol@fabrikam.test>;tag=uas1\r\nCall-ID: dialog-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        partner.addr().port(),
        alice.addr().port(),
        rr[1],
        rr[0]
    );
    alice.send(int, &ack).await;
    let (got_ack, from) = partner.recv().await;
    assert_eq!(
        first_line(&got_ack),
        format!("ACK sip:carol@127.0.0.3:{} SIP/2.0", partner.addr().port())
    );
    assert!(
        headers(&got_ack, "route").is_empty(),
        "our Route entries are popped: {got_ack}"
    );
    assert_eq!(
        from.ip().to_string(),
        "127.0.0.1",
        "ACK leaves through the external interface"
    );

    // The callee's BYE comes back in through the external interface.
    let bye = format!(
        "BYE sip:alice@127.0.0.2:{} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:{};branch=z9hG4bKbye1\r\nRoute: {}\r\nMax-Forwards: 70\r\nFrom: <sip:carol@fabrikam.test>;tag=uas1\r\nTo: <sip:alice@contoso.test>;tag=tdialog-1\r\nCall-ID: dialog-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        alice.addr().port(),
        partner.addr().port(),
        sealed[0]
    );
    partner.send(ext, &bye).await;
    let (got_bye, from) = alice.recv().await;
    assert_eq!(
        first_line(&got_bye),
        format!("BYE sip:alice@127.0.0.2:{} SIP/2.0", alice.addr().port())
    );
    assert_eq!(
        from.ip().to_string(),
        "127.0.0.2",
        "BYE leaves through the internal interface"
    );
    alice.send(from, &response(&got_bye, 200, "OK", &[])).await;
    let (bye_ok, _) = partner.recv().await;
    assert_eq!(status_of(&bye_ok), 200);
    assert_eq!(header(&bye_ok, "cseq"), Some("2 BYE"));
}

#[tokio::test]
async fn cancel_of_a_pending_invite_is_forwarded_hop_by_hop() {
    let (edge, _pool, partner) = edge_with_udp_pool().await;
    let alice = UdpPeer::bind("127.0.0.2").await;
    let int = edge.addr(Interface::Internal, Transport::Udp);
    let via = format!(
        "SIP/2.0/UDP 127.0.0.2:{};branch=z9hG4bKcan1",
        alice.addr().port()
    );
    let invite = request(
        "INVITE",
        "sip:carol@fabrikam.test",
        "sip:alice@contoso.test",
        "sip:carol@fabrikam.test",
        &via,
        "cancel-1",
        &[],
        "",
    );
    alice.send(int, &invite).await;
    let (got, edge_src) = partner.recv().await;
    partner
        .send(edge_src, &response(&got, 180, "Ringing", &[]))
        .await;
    let (_trying, _) = alice.recv().await;
    let (ringing, _) = alice.recv().await;
    assert_eq!(status_of(&ringing), 180);

    let cancel = invite
        .replace("INVITE sip:", "CANCEL sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    alice.send(int, &cancel).await;
    let (cancel_ok, _) = alice.recv().await;
    assert_eq!(status_of(&cancel_ok), 200);
    assert_eq!(header(&cancel_ok, "cseq"), Some("1 CANCEL"));

    let (got_cancel, _) = partner.recv().await;
    assert!(
        first_line(&got_cancel).starts_with("CANCEL sip:carol@fabrikam.test"),
        "{got_cancel}"
    );
    assert_eq!(
        headers(&got_cancel, "via")[0],
        headers(&got, "via")[0],
        "same branch as the INVITE it cancels"
    );
    partner
        .send(edge_src, &response(&got_cancel, 200, "OK", &[]))
        .await;
    partner
        .send(edge_src, &response(&got, 487, "Request Terminated", &[]))
        .await;
    let (terminated, _) = alice.recv().await;
    assert_eq!(status_of(&terminated), 487);
    // The edge acknowledges the 487 itself (hop by hop).
    let (ack, _) = partner.recv().await;
    assert!(
        first_line(&ack).starts_with("ACK sip:carol@fabrikam.test"),
        "{ack}"
    );
    assert_eq!(header(&ack, "cseq"), Some("1 ACK"));
}

#[tokio::test]
async fn udp_retransmissions_are_absorbed_and_answered_from_the_transaction() {
    let (edge, pool, _partner) = edge_with_udp_pool().await;
    let client = UdpPeer::bind("127.0.0.9").await;
    let to = edge.addr(Interface::External, Transport::Udp);
    let req = request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:a@fabrikam.test",
        "sip:bob@contoso.test",
        "SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKre1",
        "retrans",
        &[],
        "",
    );
    client.send(to, &req).await;
    let (got, from) = pool.recv().await;
    client.send(to, &req).await;
    assert!(
        pool.try_recv(Duration::from_millis(300)).await.is_none(),
        "the retransmission is absorbed"
    );
    pool.send(from, &response(&got, 200, "OK", &[])).await;
    let (a, _) = client.recv().await;
    assert_eq!(status_of(&a), 200);
    client.send(to, &req).await;
    let (again, _) = client.recv().await;
    assert_eq!(
        status_of(&again),
        200,
        "a late retransmission gets the stored answer"
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_the_transaction_in_flight_finish() {
    let (edge, pool, _partner) = edge_with_udp_pool().await;
    let client = UdpPeer::bind("127.0.0.9").await;
    let to = edge.addr(Interface::External, Transport::Udp);
    let req = request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:a@fabrikam.test",
        "sip:bob@contoso.test",
        "SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKsd1",
        "shutdown-1",
        &[],
        "",
    );
    client.send(to, &req).await;
    let (got, from) = pool.recv().await;
    let stopping = tokio::spawn(edge.edge.shutdown(Duration::from_secs(3)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let late = request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:a@fabrikam.test",
        "sip:bob@contoso.test",
        "SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKsd2",
        "shutdown-2",
        &[LYNC_UA],
        "",
    );
    client.send(to, &late).await;
    let (refused, _) = client.recv().await;
    assert_eq!(
        status_of(&refused),
        503,
        "new work is refused while draining"
    );
    assert!(header(&refused, "retry-after").is_some());
    pool.send(from, &response(&got, 200, "OK", &[])).await;
    let (answer, _) = client.recv().await;
    assert_eq!(
        status_of(&answer),
        200,
        "the transaction in flight finishes"
    );
    let report = stopping.await.unwrap();
    assert_eq!(report.abandoned, 0);
    assert!(report.took < Duration::from_secs(3));
}

#[tokio::test]
async fn a_next_hop_that_never_answers_gives_408() {
    let pool = UdpPeer::bind("127.0.0.1").await;
    let partner = UdpPeer::bind("127.0.0.3").await;
    let toml = base_config(pool.addr(), "udp", partner.addr(), "udp")
        + "\n[timers]\nt1_ms = 20\nt2_ms = 80\n";
    let edge = TestEdge::start(&toml).await;
    let client = UdpPeer::bind("127.0.0.9").await;
    let req = request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:a@fabrikam.test",
        "sip:bob@contoso.test",
        "SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKto1",
        "timeout-1",
        &[],
        "",
    );
    client
        .send(edge.addr(Interface::External, Transport::Udp), &req)
        .await;
    let (first, _) = pool.recv().await;
    let (retransmitted, _) = pool.recv().await;
    assert_eq!(first, retransmitted, "Timer E retransmits the same bytes");
    let (answer, _) = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = client.recv().await;
            if status_of(&r.0) >= 200 {
                return r;
            }
        }
    })
    .await
    .expect("an answer after Timer F");
    assert_eq!(first_line(&answer), "SIP/2.0 408 Request Timeout");
}

#[tokio::test]
async fn a_request_too_big_for_udp_goes_over_tcp_to_the_same_port() {
    let pool = UdpPeer::bind("127.0.0.1").await;
    let pool_tcp = tokio::net::TcpListener::bind(pool.addr())
        .await
        .expect("tcp on the same port");
    let partner = UdpPeer::bind("127.0.0.3").await;
    let edge = TestEdge::start(&base_config(pool.addr(), "udp", partner.addr(), "udp")).await;
    let client = UdpPeer::bind("127.0.0.9").await;
    let body = "y".repeat(1500);
    let req = request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:a@fabrikam.test",
        "sip:bob@contoso.test",
        "SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKbig1",
        "big-udp",
        &[],
        &body,
    );
    client
        .send(edge.addr(Interface::External, Transport::Udp), &req)
        .await;
    let (tcp, _) = tokio::time::timeout(WAIT, pool_tcp.accept())
        .await
        .expect("a TCP connection")
        .expect("accept");
    let mut conn = StreamConn::new(tcp);
    let got = conn.recv().await;
    assert!(
        headers(&got, "via")[0].starts_with("SIP/2.0/TCP edge-int.contoso.test:"),
        "{}",
        headers(&got, "via")[0]
    );
    assert_eq!(header(&got, "content-length"), Some("1500"));
    assert!(
        pool.try_recv(Duration::from_millis(100)).await.is_none(),
        "nothing over UDP"
    );
    conn.send(&response(&got, 200, "OK", &[])).await;
    assert_eq!(status_of(&client.recv().await.0), 200);
}

#[tokio::test]
async fn connections_over_the_per_ip_cap_are_refused_and_others_still_served() {
    let pool = UdpPeer::bind("127.0.0.1").await;
    let partner = UdpPeer::bind("127.0.0.3").await;
    let toml = base_config(pool.addr(), "udp", partner.addr(), "udp").replace(
        "max_message_size = 4096",
        "max_message_size = 4096\nmax_connections_per_ip = 2",
    );
    let edge = TestEdge::start(&toml).await;
    let ext = edge.addr(Interface::External, Transport::Tcp);
    let connect_from = |ip: &'static str| async move {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        StreamConn::new(s.connect(ext).await.unwrap())
    };
    let mut a = connect_from("127.0.0.9").await;
    let mut b = connect_from("127.0.0.9").await;
    let mut c = connect_from("127.0.0.9").await;
    assert!(
        c.closed_within(Duration::from_secs(2)).await,
        "the third connection from one IP is closed"
    );
    let mut d = connect_from("127.0.0.10").await;
    for (conn, name) in [(&mut a, "a"), (&mut b, "b"), (&mut d, "d")] {
        conn.send("\r\n\r\n").await;
        assert_eq!(
            conn.read_raw(WAIT).await,
            b"\r\n",
            "connection {name} is served"
        );
    }
}

#[tokio::test]
async fn plain_senders_have_an_identity_only_when_the_lab_maps_their_address() {
    let pool = UdpPeer::bind("127.0.0.1").await;
    let partner = UdpPeer::bind("127.0.0.3").await;
    let toml = base_config(pool.addr(), "udp", partner.addr(), "udp")
        + "\n[lab]\nsource_identities = { \"127.0.0.9\" = \"sip.fabrikam.test\" }\n";
    let edge = TestEdge::start(&toml).await;
    let to = edge.addr(Interface::External, Transport::Udp);
    for (ip, id) in [("127.0.0.9", "mapped"), ("127.0.0.10", "unmapped")] {
        let c = UdpPeer::bind(ip).await;
        c.send(
            to,
            &request(
                "MESSAGE",
                "sip:bob@contoso.test",
                "sip:fay@fabrikam.test",
                "sip:bob@contoso.test",
                &format!("SIP/2.0/UDP {ip};branch=z9hG4bK{id}"),
                id,
                &[],
                "",
            ),
        )
        .await;
        let (got, from) = pool.recv().await;
        pool.send(from, &response(&got, 200, "OK", &[])).await;
        assert_eq!(status_of(&c.recv().await.0), 200);
    }
    let decisions = edge.edge.core().recent_decisions();
    let of = |id: &str| {
        decisions
            .iter()
            .find(|d| d.call_id == id)
            .map(|d| d.identity.clone())
            .expect("recorded")
    };
    assert_eq!(of("mapped"), ["sip.fabrikam.test"]);
    assert!(of("unmapped").is_empty());
}

#[tokio::test]
async fn the_global_connection_cap_and_the_idle_timeout_close_connections() {
    let pool = UdpPeer::bind("127.0.0.1").await;
    let partner = UdpPeer::bind("127.0.0.3").await;
    let toml = base_config(pool.addr(), "udp", partner.addr(), "udp")
        .replace(
            "max_message_size = 4096",
            "max_message_size = 4096\nmax_connections = 2",
        )
        .replace("idle_timeout_s = 30", "idle_timeout_s = 1");
    let edge = TestEdge::start(&toml).await;
    let ext = edge.addr(Interface::External, Transport::Tcp);
    let mut a = tcp_connect(ext).await;
    let _b = tcp_connect(ext).await;
    let mut c = tcp_connect(ext).await;
    assert!(
        c.closed_within(Duration::from_millis(800)).await,
        "over the global cap the connection is closed"
    );
    a.send("\r\n\r\n").await;
    assert_eq!(a.read_raw(WAIT).await, b"\r\n");
    let started = std::time::Instant::now();
    assert!(
        a.closed_within(Duration::from_secs(3)).await,
        "an idle connection is closed"
    );
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test]
async fn a_response_without_a_transaction_is_relayed_by_its_next_via() {
    let (edge, _pool, _partner) = edge_with_udp_pool().await;
    let client = UdpPeer::bind("127.0.0.9").await;
    let port = client.addr().port();
    // A late 2xx retransmission: our branch (arrived on the external side), no transaction.
    let stray = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP edge-int.contoso.test:5060;branch=z9hG4bKse0000abcde1.1\r\nVia: SIP/2.0/UDP 127.0.0.9:{port};branch=z9hG4bKorig;received=127.0.0.9;rport={port}\r\nFrom: <sip:a@fabrikam.test>;tag=1\r\nTo: <sip:bob@contoso.test>;tag=2\r\nCall-ID: stray-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let pool_side = UdpPeer::bind("127.0.0.1").await;
    pool_side
        .send(edge.addr(Interface::Internal, Transport::Udp), &stray)
        .await;
    let (got, from) = client.recv().await;
    assert_eq!(status_of(&got), 200);
    assert_eq!(headers(&got, "via").len(), 1, "our Via is removed: {got}");
    assert_eq!(
        from,
        edge.addr(Interface::External, Transport::Udp),
        "sent from the external interface"
    );
}

/// An INVITE shaped like RFC 4475 §3.4.1 (RFC 2543 syntax): no branch, no From tag, no
/// Max-Forwards; `method` and `cseq` vary for its CANCEL and ACK, `to_tag` for the ACK.
fn rfc2543_request(client: &UdpPeer, method: &str, to_tag: &str) -> String {
    format!(
        "{method} sip:UserB@contoso.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.9:{port}\r\n\
From: <sip:+13035551111@ift.client.example.net;user=phone>\r\n\
Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>\r\n\
To: sip:+16505552222@ss1.example.net;user=phone{to_tag}\r\n\
Call-ID: inv2543.1717@ift.client.example.com\r\n\
CSeq: 56 {method}\r\n\
Content-Length: 0\r\n\r\n",
        port = client.addr().port()
    )
}

#[tokio::test]
async fn an_rfc_2543_invite_is_relayed_and_its_retransmission_cancel_and_ack_match_it() {
    let (edge, pool, _partner) = edge_with_udp_pool().await;
    let client = UdpPeer::bind("127.0.0.9").await;
    let to = edge.addr(Interface::External, Transport::Udp);
    let invite = rfc2543_request(&client, "INVITE", "");
    client.send(to, &invite).await;
    let (got, edge_src) = pool.recv().await;
    assert_eq!(first_line(&got), "INVITE sip:UserB@contoso.test SIP/2.0");
    assert_eq!(header(&got, "max-forwards"), Some("70"));
    let (trying, _) = client.recv().await;
    assert_eq!(status_of(&trying), 100, "{trying}");

    // RFC 3261 §17.2.3: same Request-URI, tags, Call-ID, CSeq and top Via is the same INVITE.
    client.send(to, &invite).await;
    assert!(
        pool.try_recv(Duration::from_millis(300)).await.is_none(),
        "the retransmission is absorbed"
    );
    pool.send(edge_src, &response(&got, 180, "Ringing", &[]))
        .await;
    let (ringing, _) = client.recv_final_or_request().await;
    assert_eq!(status_of(&ringing), 180, "{ringing}");

    client
        .send(to, &rfc2543_request(&client, "CANCEL", ""))
        .await;
    let (cancel_ok, _) = client.recv_final_or_request().await;
    assert_eq!(
        (status_of(&cancel_ok), header(&cancel_ok, "cseq")),
        (200, Some("56 CANCEL")),
        "{cancel_ok}"
    );
    let (got_cancel, _) = pool.recv().await;
    assert!(
        first_line(&got_cancel).starts_with("CANCEL "),
        "{got_cancel}"
    );
    pool.send(edge_src, &response(&got_cancel, 200, "OK", &[]))
        .await;
    pool.send(edge_src, &response(&got, 487, "Request Terminated", &[]))
        .await;
    let (terminated, _) = client.recv_final_or_request().await;
    assert_eq!(status_of(&terminated), 487, "{terminated}");
    let (edge_ack, _) = pool.recv().await;
    assert!(first_line(&edge_ack).starts_with("ACK "), "{edge_ack}");

    // The client's ACK for the 487 carries its To tag and ends the transaction at the edge.
    client
        .send(to, &rfc2543_request(&client, "ACK", ";tag=uas1"))
        .await;
    assert!(
        pool.try_recv(Duration::from_millis(300)).await.is_none(),
        "the ACK for the 487 matched the INVITE and went no further"
    );
}

#[tokio::test]
async fn rfc_2543_requests_differing_only_in_their_to_tag_are_two_transactions() {
    let (edge, pool, _partner) = edge_with_udp_pool().await;
    let client = UdpPeer::bind("127.0.0.9").await;
    let to = edge.addr(Interface::External, Transport::Udp);
    // The same request sent into two forked dialogs: RFC 3261 §17.2.3 tells them apart by
    // the To tag alone.
    for tag in ["fork-a", "fork-b"] {
        let req = rfc2543_request(&client, "MESSAGE", &format!(";tag={tag}"));
        client.send(to, &req).await;
        let (got, edge_src) = pool.recv().await;
        assert!(
            header(&got, "to").is_some_and(|t| t.ends_with(tag)),
            "{tag}: {got}"
        );
        // Answered, so that the edge does not retransmit it toward the pool.
        pool.send(edge_src, &response(&got, 200, "OK", &[])).await;
        let (ok, _) = client.recv().await;
        assert_eq!(status_of(&ok), 200, "{tag}: {ok}");
    }
}
