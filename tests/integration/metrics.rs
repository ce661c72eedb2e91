//! `/metrics` on the admin endpoint moves by exactly the traffic sent.

use sipedge::transport::{Interface, Transport};

use crate::support::{base_config, first_line, request, response, status_of, TestEdge, UdpPeer};

/// The value of the one sample whose line starts with `series` (0 when absent).
pub(crate) fn value(text: &str, series: &str) -> u64 {
    let found: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .collect();
    assert!(found.len() <= 1, "{series} twice in\n{text}");
    found.first().copied().unwrap_or(0)
}

/// The sum of the samples of a family whose labels contain `label`.
pub(crate) fn sum(text: &str, family: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn counters_move_with_forwarded_and_refused_requests() {
    let pool = UdpPeer::bind("127.0.0.1").await;
    let partner = UdpPeer::bind("127.0.0.3").await;
    let toml = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        base_config(pool.addr(), "udp", partner.addr(), "udp")
    );
    let edge = TestEdge::start(&toml).await;
    let endpoint = format!("http://{}", edge.edge.admin_addr().unwrap());
    let token = edge.edge.admin_token().unwrap().to_string();
    let fetch = {
        move |t: Option<String>| {
            let endpoint = endpoint.clone();
            tokio::task::spawn_blocking(move || {
                sipedge::admin::http::send(&endpoint, "GET", "/metrics", t.as_deref(), "").unwrap()
            })
        }
    };
    let (status, before) = fetch(Some(token.clone())).await.unwrap();
    assert_eq!(status, 200, "{before}");
    assert_eq!(fetch(None).await.unwrap().0, 401);

    let client = UdpPeer::bind("127.0.0.9").await;
    let ext = edge.addr(Interface::External, Transport::Udp);
    for i in 0..2 {
        let via = format!(
            "SIP/2.0/UDP 127.0.0.9:{};branch=z9hG4bKm{i};rport",
            client.addr().port()
        );
        let req = request(
            "MESSAGE",
            "sip:bob@contoso.test",
            "sip:alice@fabrikam.test",
            "sip:bob@contoso.test",
            &via,
            &format!("metrics-{i}"),
            &[],
            "",
        );
        client.send(ext, &req).await;
        let (got, from) = pool.recv().await;
        assert!(first_line(&got).starts_with("MESSAGE "), "{got}");
        pool.send(from, &response(&got, 200, "OK", &[])).await;
        let (answer, _) = client.recv().await;
        assert_eq!(status_of(&answer), 200, "{answer}");
    }
    // Neither side is ours: refused.
    let via = format!(
        "SIP/2.0/UDP 127.0.0.9:{};branch=z9hG4bKmx;rport",
        client.addr().port()
    );
    let req = request(
        "MESSAGE",
        "sip:eve@elsewhere.test",
        "sip:alice@fabrikam.test",
        "sip:eve@elsewhere.test",
        &via,
        "metrics-refused",
        // Client-sized, so the refusal fits within it over UDP (no amplification).
        &[crate::support::LYNC_UA],
        "",
    );
    client.send(ext, &req).await;
    let (answer, _) = client.recv().await;
    let refused = status_of(&answer);
    assert!(refused >= 400, "{answer}");

    let (_, after) = fetch(Some(token)).await.unwrap();
    let delta = |series: &str| value(&after, series) - value(&before, series);
    let msgs = |i: &str, d: &str| {
        delta(&format!(
            "sipedge_messages_total{{interface=\"{i}\",direction=\"{d}\",method=\"MESSAGE\"}}"
        ))
    };
    assert_eq!(msgs("external", "in"), 3, "{after}");
    assert_eq!(msgs("internal", "out"), 2, "{after}");
    assert_eq!(msgs("internal", "in"), 2, "{after}");
    assert_eq!(msgs("external", "out"), 3, "{after}");
    assert_eq!(delta("sipedge_responses_total{status=\"200\"}"), 2);
    assert_eq!(
        delta(&format!("sipedge_responses_total{{status=\"{refused}\"}}")),
        1
    );
    let outcome = |o: &str| {
        let l = format!("outcome=\"{o}\"");
        sum(&after, "sipedge_decisions_total", &l) - sum(&before, "sipedge_decisions_total", &l)
    };
    assert_eq!((outcome("forward"), outcome("reject")), (2, 1), "{after}");
    assert_eq!(delta("sipedge_transaction_duration_seconds_count"), 3);
    assert_eq!(
        delta("sipedge_transaction_duration_seconds_bucket{le=\"+Inf\"}"),
        3
    );
    assert!(after.contains("# TYPE sipedge_open_connections gauge\n"));
}
