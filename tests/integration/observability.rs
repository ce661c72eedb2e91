//! The admin endpoint of a running lab after real traffic: `/decisions` with each
//! decision's trail, and the TLS and DNS counters of `/metrics`. The lab is the embedded
//! one, laid out in a temporary directory with freshly generated certificates.

use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject as _;
use sipedge::config::Snapshot;
use sipedge::explain::ExplainRequest;
use sipedge::lab::embedded;
use sipedge::lab::run::{Lab, LabOptions};
use sipedge::lab::topology::Role;
use sipedge::transport::{Interface, Transport};
use tokio::net::TcpStream;

use crate::lab::admin;
use crate::metrics::{sum, value};
use crate::support::*;
use crate::tls::{is_refused, without_client_certificate};

/// A lab from the embedded config (its discovered partner `sip.northwind.test` included).
struct Fixture {
    lab: Lab,
    certs: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let prepared = embedded::prepare(&dir.path().join("lab")).expect("prepare");
    let snap = Snapshot::load(&prepared.config).unwrap_or_else(|e| panic!("{e}"));
    let mut opts = LabOptions::for_config(&prepared.config);
    opts.ephemeral = true;
    let lab = Lab::start(snap, opts).await.expect("lab starts");
    Fixture {
        lab,
        certs: prepared.certs_dir,
        _dir: dir,
    }
}

impl Fixture {
    /// Where the edge's external interface takes TLS.
    fn external_tls(&self) -> std::net::SocketAddr {
        let edge = self.lab.edge();
        edge.local_addr(Interface::External, Transport::Tls)
            .unwrap()
    }

    /// A TLS client presenting the lab certificate of `name`.
    fn client_config(&self, name: &str) -> std::sync::Arc<rustls::ClientConfig> {
        let material = sipedge::tls::TlsMaterial::load(
            &self.certs.join(format!("{name}.crt")),
            &self.certs.join(format!("{name}.key")),
            &[self.certs.join("ca.crt")],
            &[],
        )
        .unwrap();
        sipedge::tls::client_config(&material).unwrap()
    }
}

/// A MESSAGE from `from` to `to` through the internal interface; the final answer.
async fn send(lab: &Lab, from: &str, to: &str, id: &str) -> String {
    let internal = lab.edge().local_addr(Interface::Internal, Transport::Tcp);
    message_over_tcp(internal.unwrap(), from, to, id).await
}

async fn metrics(lab: &Lab) -> String {
    let (status, text) = admin(lab, "GET", "/metrics", "").await;
    assert_eq!(status, 200, "{text}");
    text
}

/// Polls `/metrics` until `done` holds (handshakes are counted by the listener's task,
/// after the client has seen its result); at most five seconds.
async fn metrics_when(lab: &Lab, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(lab).await;
        if done(&text) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/decisions` split into entries: the decision line and its trail lines.
fn entries(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        match (line.strip_prefix("  "), out.last_mut()) {
            (Some(_), Some((_, trail))) => trail.push(line.to_string()),
            _ => out.push((line.to_string(), Vec::new())),
        }
    }
    out
}

#[tokio::test]
async fn decisions_show_the_last_n_with_the_trail_explain_prints() {
    let f = start().await;
    let ok = send(&f.lab, "sip:alice@contoso.test", "sip:sam@live.com", "dec1").await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    let refused = send(&f.lab, "sip:bob@contoso.test", "sip:sam@live.com", "dec2").await;
    assert_eq!(status_of(&refused), 403, "{refused}");

    let (status, text) = admin(&f.lab, "GET", "/decisions?n=2", "").await;
    assert_eq!(status, 200, "{text}");
    let got = entries(&text);
    assert_eq!(got.len(), 2, "{text}");
    let (alice, bob) = (&got[0], &got[1]);
    // The final status the request got, not a placeholder.
    assert!(alice.0.contains(" forward 200 "), "{text}");
    assert!(alice.0.contains("call-id=dec1"), "{text}");
    assert!(
        bob.0
            .contains(" reject 403 user-public-cloud-denied MESSAGE sip:sam@live.com internal/tcp"),
        "{text}"
    );
    assert!(bob.0.ends_with("call-id=dec2"), "{text}");

    // Each trail is the one `sipedge explain` prints for the same request and snapshot.
    let snap = f.lab.edge().live().load();
    for ((_, trail), from) in [
        (alice, "sip:alice@contoso.test"),
        (bob, "sip:bob@contoso.test"),
    ] {
        let req = ExplainRequest {
            from: from.into(),
            to: "sip:sam@live.com".into(),
            method: "MESSAGE".into(),
            interface: Some(Interface::Internal),
            peer_cert_names: vec![],
            trust: None,
            sdp: None,
        };
        let explained = sipedge::explain::explain(&snap, &req).await.unwrap();
        let expected: Vec<&str> = explained
            .lines()
            .skip_while(|l| *l != "Trail:")
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .collect();
        assert!(expected.len() >= 5, "{explained}");
        assert_eq!(trail, &expected, "{text}\n---\n{explained}");
    }
    assert!(
        bob.1
            .last()
            .unwrap()
            .starts_with("  DECIDED  access-policy"),
        "{text}"
    );

    // The default shows both (it is larger than two); n=1 the last; nonsense is refused.
    let (_, all) = admin(&f.lab, "GET", "/decisions", "").await;
    assert!(entries(&all).len() >= 2 && all.ends_with(&text), "{all}");
    let (_, one) = admin(&f.lab, "GET", "/decisions?n=1", "").await;
    assert_eq!(entries(&one), vec![bob.clone()]);
    let (status, why) = admin(&f.lab, "GET", "/decisions?n=zero", "").await;
    assert_eq!(status, 400, "{why}");
    assert!(why.contains("from 1 to 256"), "{why}");
    // The JSON form holds the same decision; an unknown form is refused, not ignored.
    let (status, json) = admin(&f.lab, "GET", "/decisions?n=1&format=json", "").await;
    assert_eq!(status, 200, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect(&json);
    assert_eq!(
        (&v[0]["call_id"], &v[0]["status"], &v[0]["rule"]),
        (
            &serde_json::json!("dec2"),
            &serde_json::json!(403),
            &serde_json::json!("user-public-cloud-denied")
        ),
        "{json}"
    );
    let (status, why) = admin(&f.lab, "GET", "/decisions?format=xml", "").await;
    assert_eq!(status, 400, "{why}");
    assert!(why.contains("format= takes json or text"), "{why}");
    f.lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn tls_handshakes_and_failures_are_counted_by_reason() {
    let f = start().await;
    let ext = f.external_tls();
    let before = metrics(&f.lab).await;
    let series = |result: &str| {
        format!("sipedge_tls_handshakes_total{{side=\"inbound\",result=\"{result}\"}}")
    };
    let failures = |reason: &str| {
        format!("sipedge_tls_handshake_failures_total{{side=\"inbound\",reason=\"{reason}\"}}")
    };

    // A client that presents no certificate.
    let ca = rustls_pki_types::CertificateDer::from_pem_file(f.certs.join("ca.crt")).unwrap();
    assert!(is_refused(ext, without_client_certificate(ca)).await);
    // A connection closed before its ClientHello.
    drop(TcpStream::connect(ext).await.unwrap());
    // The partner with its lab certificate.
    assert!(!is_refused(ext, f.client_config("sip.fabrikam.test")).await);

    let delta = |after: &str, s: &str| value(after, s) - value(&before, s);
    let after = metrics_when(&f.lab, |t| delta(t, &series("failed")) >= 2).await;
    assert_eq!(delta(&after, &failures("certificate")), 1, "{after}");
    assert_eq!(delta(&after, &failures("io")), 1, "{after}");
    for other in ["timeout", "alert", "protocol"] {
        assert_eq!(delta(&after, &failures(other)), 0, "{other}: {after}");
    }
    assert_eq!(delta(&after, &series("failed")), 2, "{after}");
    assert_eq!(delta(&after, &series("ok")), 1, "{after}");
    f.lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_discovered_partner_is_looked_up_once_then_served_from_the_cache() {
    let f = start().await;
    let lookups = "sipedge_dns_lookups_total";
    let hits = "sipedge_dns_cache_hits_total";
    let mut seen = vec![metrics(&f.lab).await];
    for (id, to) in [
        ("dns1", "sip:nina@northwind.test"),
        ("dns2", "sip:nils@northwind.test"),
    ] {
        let r = send(&f.lab, "sip:alice@contoso.test", to, id).await;
        assert_eq!(status_of(&r), 200, "{r}");
        seen.push(metrics(&f.lab).await);
    }
    let (m0, m1, m2) = (&seen[0], &seen[1], &seen[2]);
    let d = |a: &str, b: &str, s: &str| value(b, s) - value(a, s);
    // Each request resolves two names: the SRV of northwind.test and the A record of its
    // target sip.northwind.test. The first asks the lab's DNS for both (two lookups, no
    // hit); the second finds both in the cache (two lookups, two hits).
    assert_eq!((d(m0, m1, lookups), d(m0, m1, hits)), (2, 0), "{m1}");
    assert_eq!((d(m1, m2, lookups), d(m1, m2, hits)), (2, 2), "{m2}");
    // Both requests reached the partner, as a discovered partner.
    for id in ["dns1", "dns2"] {
        let got = f
            .lab
            .peer(Role::Discovered)
            .wait_for(WAIT, |m| m.call_id == id)
            .await;
        assert!(got.is_some(), "{id} reached sip.northwind.test");
    }
    let rule = "rule=\"discovered-partner\"";
    assert_eq!(
        sum(m2, "sipedge_decisions_total", rule) - sum(m0, "sipedge_decisions_total", rule),
        2,
        "{m2}"
    );
    f.lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn open_connections_follow_the_connections_held_to_the_edge() {
    let f = start().await;
    let gauge = "sipedge_open_connections";
    let base = value(&metrics(&f.lab).await, gauge);
    let internal = f.lab.edge().local_addr(Interface::Internal, Transport::Tcp);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = tcp_connect(internal.unwrap()).await;
        // A keep-alive answered proves the edge has taken the connection in.
        c.send("\r\n\r\n").await;
        assert_eq!(c.read_raw(WAIT).await, b"\r\n");
        held.push(c);
    }
    let open = metrics_when(&f.lab, |t| value(t, gauge) == base + 3).await;
    assert_eq!(value(&open, gauge), base + 3, "{open}");
    drop(held);
    let closed = metrics_when(&f.lab, |t| value(t, gauge) == base).await;
    assert_eq!(value(&closed, gauge), base, "{closed}");
    f.lab.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_partner_users_subscribe_gets_its_notify_over_the_partners_connection() {
    let f = start().await;
    // fabrikam's edge connects to the external interface with its lab certificate.
    let tcp = TcpStream::connect(f.external_tls()).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let name = rustls_pki_types::ServerName::try_from("accessedge.contoso.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(f.client_config("sip.fabrikam.test"))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let mut fabrikam = StreamConn::new(tls);

    // dan watches alice; his Contact is the address of this connection, where nothing
    // listens: the NOTIFY can only come back over the connection itself.
    let contact = format!("Contact: <sip:dan@{local};transport=tls>");
    let subscribe = request(
        "SUBSCRIBE",
        "sip:alice@contoso.test",
        "sip:dan@fabrikam.test",
        "sip:alice@contoso.test",
        &format!("SIP/2.0/TLS {local};branch=z9hG4bKsub1;rport"),
        "sub1",
        &[
            "ms-edge-proxy-message-trust: ms-source-type=EdgeProxyGenerated;ms-ep-fqdn=sip.fabrikam.test;ms-source-verified-user=verified",
            &contact,
            "Event: presence",
            "Accept: application/pidf+xml",
            "Expires: 3600",
        ],
        "",
    );
    fabrikam.send(&subscribe).await;
    let ok = fabrikam.recv_skip_100().await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    assert_eq!(header(&ok, "cseq"), Some("1 SUBSCRIBE"), "{ok}");

    // The pool's NOTIFY in that dialog reaches dan, and his 200 reaches the pool.
    let notify = fabrikam.recv().await;
    assert!(
        first_line(&notify).starts_with(&format!("NOTIFY sip:dan@{local}")),
        "{notify}"
    );
    assert_eq!(header(&notify, "call-id"), Some("sub1"), "{notify}");
    assert!(notify.contains("<basic>open</basic>"), "{notify}");
    fabrikam.send(&response(&notify, 200, "OK", &[])).await;
    let answer = f
        .lab
        .peer(Role::Pool)
        .wait_for_answer(WAIT, |a| a.call_id == "sub1" && a.method == "NOTIFY")
        .await
        .expect("the pool got an answer to its NOTIFY");
    assert_eq!(answer.status, 200, "{}", answer.text);

    // The edge logged both as forwarded with their 200s; nothing for sub1 got a 504.
    let core = f.lab.edge().core();
    for method in ["SUBSCRIBE", "NOTIFY"] {
        let d = recorded_decision(core, "sub1", method).await;
        assert_eq!((d.outcome, d.status), ("forward", 200), "{method}: {d:?}");
    }
    let (status, text) = admin(&f.lab, "GET", "/decisions", "").await;
    assert_eq!(status, 200, "{text}");
    let sub1: Vec<_> = entries(&text)
        .into_iter()
        .filter(|(line, _)| line.ends_with("call-id=sub1"))
        .collect();
    assert_eq!(sub1.len(), 2, "{text}");
    assert!(
        sub1.iter().all(|(line, _)| !line.contains(" 504 ")),
        "{text}"
    );
    f.lab.shutdown(Duration::from_millis(200)).await;
}
