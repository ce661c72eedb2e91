//! The Access Edge decision end to end: fake remote edges over mutual TLS, a real DNS
//! zone served by hickory-server on loopback, and the lab's federation objects.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sipedge::dns::LabDnsServer;
use sipedge::lab::certs::LeafSpec;
use sipedge::tls::{client_config, TlsMaterial};
use sipedge::tls_store::TlsStore;
use sipedge::transport::{Interface, TlsSource, Transport};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::support::*;
use crate::tls::{accept_tls, tls_server, Pki};

/// The federation sections of the shipped lab config.
pub(crate) fn lab_federation() -> String {
    let lab = include_str!("../../config/lab.toml");
    let after = lab
        .split_once("# ---- Federation")
        .map_or("", |(_, rest)| rest);
    after
        .split_once('\n')
        .map_or("", |(_, rest)| rest)
        .to_string()
}

/// A lab: the edge with mutual TLS on both interfaces, a DNS zone, a pool that answers
/// 200 to everything and reports what it received, and remote edges set up by the test.
pub(crate) struct FedLab {
    pub(crate) pki: Pki,
    pub(crate) edge: TestEdge,
    _zone: LabDnsServer,
    pub(crate) pool_rx: mpsc::UnboundedReceiver<String>,
    /// Where the pool listens (mutual TLS, as pool.contoso.test on 127.0.0.1).
    pub(crate) pool_port: u16,
}

/// A root zone holding the test's records (ports come from the fake edges).
pub(crate) fn zone(records: &str) -> String {
    format!(
        "$ORIGIN .\n$TTL 300\n. IN SOA ns.lab.test. hostmaster.lab.test. ( 1 3600 600 86400 60 )\n. IN NS ns.lab.test.\nns.lab.test. IN A 127.0.0.1\n{records}\n"
    )
}

impl FedLab {
    pub(crate) async fn start(pki: Pki, records: &str, tweak: impl Fn(String) -> String) -> FedLab {
        let (pool_l, pool_a) = tls_server(&pki, "127.0.0.1", "pool.contoso.test").await;
        let pool_port = pool_l.local_addr().unwrap().port();
        let (tx, pool_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = pool_l.accept().await {
                let a = pool_a.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(s) = a.accept(tcp).await else { return };
                    let mut conn = StreamConn::new(s);
                    while let Some(m) = conn.try_recv(Duration::from_secs(30)).await {
                        if !m.starts_with("SIP/2.0") && !m.starts_with("ACK ") {
                            // A test can ask the pool for an error carrying internal diagnostics.
                            match header(&m, "x-test-answer").and_then(|s| s.parse::<u16>().ok()) {
                                Some(code) => {
                                    let diag = "ms-diagnostics: 1003;reason=\"User does not exist\";source=\"pool.contoso.test\"";
                                    conn.send(&response(&m, code, policy_reason(code), &[diag]))
                                        .await;
                                }
                                None => conn.send(&response(&m, 200, "OK", &[])).await,
                            }
                        }
                        let _ = tx.send(m);
                    }
                });
            }
        });
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dns = LabDnsServer::start(&zone(records), None, udp, None).expect("zone");
        let toml = crate::tls::mtls_edge(&pki, pool_port, "")
            + &format!(
                r#"
[hosts]
"pool.contoso.test" = ["127.0.0.1"]

[dns]
servers = ["{dns}"]
timeout_ms = 1000

{fed}
"#,
                dns = dns.udp_addr(),
                fed = tweak(lab_federation()),
            );
        let snap = sipedge::config::Snapshot::from_toml(&toml, Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        let store = TlsStore::from_snapshot(&snap).expect("tls").expect("some");
        let edge = TestEdge::start_with_tls(&toml, Some(store as Arc<dyn TlsSource>)).await;
        FedLab {
            pki,
            edge,
            _zone: dns,
            pool_rx,
            pool_port,
        }
    }

    /// A mutual-TLS connection to one of the edge's interfaces with a certificate for `names`.
    pub(crate) async fn connect(
        &self,
        iface: Interface,
        names: &[&str],
    ) -> StreamConn<tokio_rustls::client::TlsStream<TcpStream>> {
        let leaf = self
            .pki
            .ca
            .issue(&LeafSpec::new(names.iter().copied()))
            .unwrap();
        let (c, k) =
            crate::tls::write_pair(self.pki.dir.path(), &format!("client-{}", names[0]), &leaf);
        let m = TlsMaterial::load(&c, &k, &[self.pki.ca_path()], &[]).unwrap();
        let tcp = TcpStream::connect(self.edge.addr(iface, Transport::Tls))
            .await
            .unwrap();
        let server = match iface {
            Interface::External => "accessedge.contoso.test",
            Interface::Internal => "edge-int.contoso.test",
        };
        let name = rustls_pki_types::ServerName::try_from(server.to_string()).unwrap();
        StreamConn::new(
            tokio_rustls::TlsConnector::from(client_config(&m).unwrap())
                .connect(name, tcp)
                .await
                .expect("handshake"),
        )
    }

    /// The pool's view of the next request it received.
    pub(crate) async fn pool_recv(&mut self) -> String {
        loop {
            let m = tokio::time::timeout(WAIT, self.pool_rx.recv())
                .await
                .expect("the pool received something")
                .expect("open");
            if !m.starts_with("SIP/2.0") {
                return m;
            }
        }
    }
}

pub(crate) fn msg(method: &str, from: &str, to: &str, id: &str, extra: &[&str]) -> String {
    request(
        method,
        to,
        from,
        to,
        &format!("SIP/2.0/TLS 10.0.0.9:5061;branch=z9hG4bK{id}"),
        id,
        extra,
        "",
    )
}

/// A remote edge listening on `ip` with a certificate for `name`; answers 200 and
/// forwards what it received.
pub(crate) async fn remote_edge(
    pki: &Pki,
    ip: &str,
    name: &str,
) -> (u16, mpsc::UnboundedReceiver<String>) {
    remote_edge_answering(pki, ip, name, 200).await
}

/// A remote edge that answers every request with `status` (no diagnostics).
async fn remote_edge_answering(
    pki: &Pki,
    ip: &str,
    name: &str,
    status: u16,
) -> (u16, mpsc::UnboundedReceiver<String>) {
    let (l, a) = tls_server(pki, ip, name).await;
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let mut conn = accept_tls(&l, &a).await;
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(m) = conn.try_recv(Duration::from_secs(30)).await {
                    if !m.starts_with("SIP/2.0") && !m.starts_with("ACK ") {
                        conn.send(&response(&m, status, policy_reason(status), &[]))
                            .await;
                    }
                    let _ = tx.send(m);
                }
            });
        }
    });
    (port, rx)
}

fn policy_reason(status: u16) -> &'static str {
    sipedge::policy::reason_phrase(status)
}

/// Where nothing listens: port 1 on an address no test binds. A port taken by binding
/// and dropping a listener could be handed to another test's listener in the meantime.
const CLOSED_ADDR: &str = "127.0.0.66";
const CLOSED_PORT: u16 = 1;

pub(crate) const BASE_RECORDS: &str = "
_sipfederationtls._tcp.adatum.test. IN SRV 10 100 5061 sip.adatum.test.
_sipfederationtls._tcp.badsrv.test. IN SRV 10 100 5061 sip.elsewhere.test.
sip.adatum.test. IN A 127.0.0.7
sip.elsewhere.test. IN A 127.0.0.8
";

#[tokio::test]
async fn outbound_discovery_fails_over_to_the_next_srv_target_and_marks_the_request() {
    let pki = Pki::new();
    let (port, mut far) = remote_edge(&pki, "127.0.0.6", "sip2.northwind.test").await;
    let records = format!(
        "{BASE_RECORDS}
_sipfederationtls._tcp.northwind.test. IN SRV 10 100 {CLOSED_PORT} sip1.northwind.test.
_sipfederationtls._tcp.northwind.test. IN SRV 20 100 {port} sip2.northwind.test.
sip1.northwind.test. IN A {CLOSED_ADDR}
sip2.northwind.test. IN A 127.0.0.6
"
    );
    let lab = FedLab::start(pki, &records, |f| f).await;
    let mut alice = lab
        .connect(Interface::Internal, &["pool.contoso.test"])
        .await;
    alice
        .send(&msg(
            "MESSAGE",
            "sip:alice@contoso.test",
            "sip:dan@northwind.test",
            "fo1",
            &[],
        ))
        .await;
    let answer = alice.recv().await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let got = tokio::time::timeout(WAIT, far.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first_line(&got), "MESSAGE sip:dan@northwind.test SIP/2.0");
    assert_eq!(
        headers(&got, "ms-edge-proxy-message-trust"),
        ["ms-source-type=EdgeProxyGenerated;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified"],
        "MarkSourceVerifiableOnOutgoingMessages"
    );
    assert!(header(&got, "ms-diagnostics").is_none());
}

#[tokio::test]
async fn skype_is_reached_through_federation_messenger_msn_com_from_the_zone() {
    let pki = Pki::new();
    let (port, mut skype) = remote_edge(&pki, "127.0.0.4", "federation.messenger.msn.com").await;
    let records = format!(
        "{BASE_RECORDS}
_sipfederationtls._tcp.live.com. IN SRV 10 100 {port} federation.messenger.msn.com.
federation.messenger.msn.com. IN A 127.0.0.4
"
    );
    let lab = FedLab::start(pki, &records, |f| f).await;
    let mut alice = lab
        .connect(Interface::Internal, &["pool.contoso.test"])
        .await;
    alice
        .send(&msg(
            "MESSAGE",
            "sip:alice@contoso.test",
            "sip:sam@live.com",
            "sk1",
            &[],
        ))
        .await;
    assert_eq!(status_of(&alice.recv().await), 200);
    let got = tokio::time::timeout(WAIT, skype.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first_line(&got), "MESSAGE sip:sam@live.com SIP/2.0");
    let seen = lab
        .edge
        .edge
        .core()
        .recent_decisions()
        .into_iter()
        .find(|d| d.call_id == "sk1")
        .expect("recorded");
    assert_eq!(seen.outcome, "forward");

    // bob's policy (NoPublicCloud) keeps him off Skype; carol may not federate at all.
    alice
        .send(&msg(
            "MESSAGE",
            "sip:bob@contoso.test",
            "sip:sam@live.com",
            "sk2",
            &[],
        ))
        .await;
    let refused = alice.recv().await;
    assert_eq!(status_of(&refused), 403);
    assert!(
        header(&refused, "ms-diagnostics")
            .unwrap_or("")
            .starts_with("1907;"),
        "{refused}"
    );
    alice
        .send(&msg(
            "MESSAGE",
            "sip:carol@contoso.test",
            "sip:sam@live.com",
            "sk3",
            &[],
        ))
        .await;
    let refused = alice.recv().await;
    assert_eq!(status_of(&refused), 403, "{refused}");
}

#[tokio::test]
async fn inbound_trust_header_is_the_edges_own_and_a_forged_one_is_replaced() {
    let pki = Pki::new();
    let records = format!(
        "{BASE_RECORDS}
_sipfederationtls._tcp.live.com. IN SRV 10 100 5061 federation.messenger.msn.com.
federation.messenger.msn.com. IN A 127.0.0.4
"
    );
    let mut lab = FedLab::start(pki, &records, |f| f).await;
    let mut skype = lab
        .connect(Interface::External, &["federation.messenger.msn.com"])
        .await;
    let forged = "ms-edge-proxy-message-trust: ms-source-type=EdgeProxyGenerated;ms-ep-fqdn=evil.test;ms-source-verified-user=verified";
    skype
        .send(&msg(
            "MESSAGE",
            "sip:sam@live.com",
            "sip:alice@contoso.test",
            "in1",
            &[forged],
        ))
        .await;
    assert_eq!(status_of(&skype.recv().await), 200);
    let got = lab.pool_recv().await;
    assert_eq!(
        headers(&got, "ms-edge-proxy-message-trust"),
        ["ms-source-type=AuthorizedServer;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=publiccloud;ms-remote-fqdn=federation.messenger.msn.com"]
    );
}

/// northwind.test's complete marking, as its edge sends it.
pub(crate) const NORTHWIND_MARK: &str = "ms-edge-proxy-message-trust: ms-source-type=AutoFederation;ms-ep-fqdn=sip.northwind.test;ms-source-verified-user=verified;ms-source-network=federation";

/// A lab where northwind.test is a discovered partner (SRV to sip.northwind.test), and
/// northwind's edge connected to the external interface.
async fn northwind_connected() -> (
    FedLab,
    StreamConn<tokio_rustls::client::TlsStream<TcpStream>>,
) {
    northwind_connected_with(|f| f).await
}

/// [`northwind_connected`] with the federation sections changed by `tweak`.
pub(crate) async fn northwind_connected_with(
    tweak: impl Fn(String) -> String,
) -> (
    FedLab,
    StreamConn<tokio_rustls::client::TlsStream<TcpStream>>,
) {
    let pki = Pki::new();
    let records = format!(
        "{BASE_RECORDS}
_sipfederationtls._tcp.northwind.test. IN SRV 10 100 5061 sip.northwind.test.
sip.northwind.test. IN A 127.0.0.6
"
    );
    let lab = FedLab::start(pki, &records, tweak).await;
    let northwind = lab
        .connect(Interface::External, &["sip.northwind.test"])
        .await;
    (lab, northwind)
}

/// Holds discovered partners to `rate` requests a second and `contacts` local contacts.
fn discovered_limits(rate: u32, contacts: u32) -> impl Fn(String) -> String {
    move |f| {
        f.replace(
            "discovered_partner_standard_rate = 20",
            &format!("discovered_partner_standard_rate = {rate}"),
        )
        .replace(
            "max_contacts_per_discovered_partner = 1000",
            &format!("max_contacts_per_discovered_partner = {contacts}"),
        )
    }
}

#[tokio::test]
async fn spoofed_from_external_relay_and_blocked_domains_are_refused() {
    let (lab, mut northwind) = northwind_connected().await;
    let mark = NORTHWIND_MARK;

    // A northwind edge speaking for fabrikam.test.
    northwind
        .send(&msg(
            "MESSAGE",
            "sip:eve@fabrikam.test",
            "sip:alice@contoso.test",
            "sp1",
            &[mark],
        ))
        .await;
    let r = northwind.recv().await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert!(
        header(&r, "ms-diagnostics").is_none(),
        "internal diagnostics stay inside"
    );
    assert!(
        header(&r, "ms-diagnostics-public")
            .unwrap_or("")
            .starts_with("1010;"),
        "{r}"
    );
    assert!(
        !header(&r, "ms-diagnostics-public")
            .unwrap_or("")
            .contains("source="),
        "no internal names leak: {r}"
    );

    // External to external.
    northwind
        .send(&msg(
            "MESSAGE",
            "sip:dan@northwind.test",
            "sip:sam@live.com",
            "sp2",
            &[mark],
        ))
        .await;
    let r = northwind.recv().await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert!(
        header(&r, "ms-diagnostics-public")
            .unwrap_or("")
            .starts_with("1000;"),
        "{r}"
    );

    // Blocked, inbound: adatum's edge.
    let mut adatum = lab.connect(Interface::External, &["sip.adatum.test"]).await;
    adatum
        .send(&msg(
            "MESSAGE",
            "sip:x@adatum.test",
            "sip:alice@contoso.test",
            "bl1",
            &[mark],
        ))
        .await;
    let r = adatum.recv().await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert!(
        header(&r, "ms-diagnostics-public")
            .unwrap_or("")
            .starts_with("1903;"),
        "{r}"
    );

    // Blocked, outbound, and the DNS refusals.
    let mut alice = lab
        .connect(Interface::Internal, &["pool.contoso.test"])
        .await;
    for (to, status, code) in [
        ("sip:x@adatum.test", 403, "1903;"),
        ("sip:x@nowhere.test", 504, "1008;"),
        ("sip:x@badsrv.test", 504, "1009;"),
    ] {
        alice
            .send(&msg(
                "MESSAGE",
                "sip:alice@contoso.test",
                to,
                &format!("out-{code}"),
                &[],
            ))
            .await;
        let r = alice.recv().await;
        assert_eq!(status_of(&r), status, "{to}: {r}");
        assert!(
            header(&r, "ms-diagnostics").unwrap_or("").starts_with(code),
            "{to}: {r}"
        );
    }
}

#[tokio::test]
async fn with_discovery_off_an_unlisted_domain_is_refused() {
    let pki = Pki::new();
    let records = format!(
        "{BASE_RECORDS}
_sipfederationtls._tcp.northwind.test. IN SRV 10 100 5061 sip.northwind.test.
sip.northwind.test. IN A 127.0.0.6
"
    );
    let lab = FedLab::start(pki, &records, |f| {
        f.replace(
            "enable_partner_discovery = true",
            "enable_partner_discovery = false",
        )
    })
    .await;
    let mut alice = lab
        .connect(Interface::Internal, &["pool.contoso.test"])
        .await;
    alice
        .send(&msg(
            "MESSAGE",
            "sip:alice@contoso.test",
            "sip:dan@northwind.test",
            "do1",
            &[],
        ))
        .await;
    let r = alice.recv().await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert!(
        header(&r, "ms-diagnostics")
            .unwrap_or("")
            .starts_with("1904;"),
        "{r}"
    );
}

#[tokio::test]
async fn discovered_partners_are_rate_and_contact_limited() {
    let (_lab, mut northwind) = northwind_connected_with(discovered_limits(3, 2)).await;
    let mark = NORTHWIND_MARK;
    let mut statuses = Vec::new();
    for i in 0..8 {
        northwind
            .send(&msg(
                "MESSAGE",
                "sip:dan@northwind.test",
                "sip:alice@contoso.test",
                &format!("rl{i}"),
                &[mark],
            ))
            .await;
    }
    let mut throttled = None;
    for _ in 0..8 {
        let r = northwind.recv().await;
        statuses.push(status_of(&r));
        if status_of(&r) == 503 {
            throttled = Some(r);
        }
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    let r = throttled.unwrap_or_else(|| {
        panic!("over DiscoveredPartnerStandardRate some are refused: {statuses:?}")
    });
    assert!(header(&r, "retry-after").is_some(), "{r}");

    // Contacts: alice counted already; bob is the second; dave the third → watch list.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    northwind
        .send(&msg(
            "MESSAGE",
            "sip:dan@northwind.test",
            "sip:bob@contoso.test",
            "cl1",
            &[mark],
        ))
        .await;
    assert_eq!(status_of(&northwind.recv().await), 200);
    northwind
        .send(&msg(
            "MESSAGE",
            "sip:dan@northwind.test",
            "sip:dave@contoso.test",
            "cl2",
            &[mark],
        ))
        .await;
    let r = northwind.recv().await;
    assert_ne!(
        status_of(&r),
        200,
        "a third distinct contact is refused: {r}"
    );
    assert!(
        header(&r, "ms-diagnostics-public")
            .unwrap_or("")
            .starts_with("1911;"),
        "{r}"
    );
}

/// The delta of `sipedge_decisions_total` samples whose labels hold `labels`.
fn decisions_delta(before: &str, after: &str, labels: &str) -> u64 {
    let family = "sipedge_decisions_total";
    crate::metrics::sum(after, family, labels) - crate::metrics::sum(before, family, labels)
}

#[tokio::test]
async fn requests_a_discovered_partner_limit_refuses_are_logged_and_counted_as_rejects() {
    // One token a second, two contacts: the first MESSAGE to alice takes the token, the
    // second (at once) is over the rate; bob is the second contact (over the rate too,
    // unless a second has passed); dave the third, which puts northwind on the watch list.
    let (lab, mut northwind) = northwind_connected_with(discovered_limits(1, 2)).await;
    let before = lab.edge.metrics_text();
    let mut answers = Vec::new();
    for (id, user) in [
        ("lim1", "alice"),
        ("lim2", "alice"),
        ("lim3", "bob"),
        ("lim4", "dave"),
    ] {
        let to = format!("sip:{user}@contoso.test");
        let mark = [NORTHWIND_MARK];
        northwind
            .send(&msg("MESSAGE", "sip:dan@northwind.test", &to, id, &mark))
            .await;
        let r = northwind.recv().await;
        let code = diagnostics_code(&r, "ms-diagnostics-public").to_string();
        answers.push((id, status_of(&r), code));
    }
    let got = |id: &str| answers.iter().find(|a| a.0 == id).unwrap();
    assert_eq!(got("lim1").1, 200, "{answers:?}");
    assert_eq!((got("lim2").1, got("lim2").2.as_str()), (503, "1910"));
    assert_eq!((got("lim4").1, got("lim4").2.as_str()), (503, "1911"));

    // Each is logged with the outcome northwind saw: refusals by the limit's rule.
    let core = lab.edge.edge.core();
    for (id, status, code) in &answers {
        let d = recorded_decision(core, id, "MESSAGE").await;
        let expected = match code.as_str() {
            "1910" => ("reject", "rate-limited"),
            "1911" => ("reject", "contacts-limit"),
            _ => ("forward", "federation-inbound"),
        };
        assert_eq!((d.outcome, d.rule), expected, "{id}: {d:?}");
        assert_eq!(d.status, *status, "{id}: {d:?}");
    }

    // The metric counts them the same way.
    let after = lab.edge.metrics_text();
    let count = |code: &str| answers.iter().filter(|a| a.2 == code).count() as u64;
    let delta = |labels: &str| decisions_delta(&before, &after, labels);
    let rate_limited = "outcome=\"reject\",rule=\"rate-limited\"";
    assert_eq!(delta(rate_limited), count("1910"), "{after}");
    let contacts = "outcome=\"reject\",rule=\"contacts-limit\"";
    assert_eq!(delta(contacts), 1, "{after}");
    let watch_listed = "sipedge_discovered_partner_events_total{event=\"watch-listed\"} 1";
    assert!(after.lines().any(|l| l == watch_listed), "{after}");
    assert!(
        after.lines().any(|l| l == "sipedge_flagged_partners 1"),
        "{after}"
    );
    let forwards = answers.iter().filter(|a| a.1 == 200).count() as u64;
    assert_eq!(delta("outcome=\"forward\""), forwards, "{after}");
}

#[tokio::test]
async fn a_request_whose_outbound_connection_fails_is_logged_and_counted_as_a_reject() {
    let records = format!(
        "{BASE_RECORDS}
_sipfederationtls._tcp.northwind.test. IN SRV 10 100 {CLOSED_PORT} sip.northwind.test.
sip.northwind.test. IN A {CLOSED_ADDR}
"
    );
    let lab = FedLab::start(Pki::new(), &records, |f| f).await;
    let before = lab.edge.metrics_text();
    let mut alice = lab
        .connect(Interface::Internal, &["pool.contoso.test"])
        .await;
    let (from, to) = ("sip:alice@contoso.test", "sip:dan@northwind.test");
    alice.send(&msg("MESSAGE", from, to, "cf1", &[])).await;
    let r = alice.recv().await;
    let got = (status_of(&r), diagnostics_code(&r, "ms-diagnostics"));
    assert_eq!(got, (504, "1047"), "{r}");

    let d = recorded_decision(lab.edge.edge.core(), "cf1", "MESSAGE").await;
    assert_eq!(
        (d.outcome, d.rule, d.status),
        ("reject", "tls-negotiation", 504)
    );
    let after = lab.edge.metrics_text();
    let delta = |labels: &str| decisions_delta(&before, &after, labels);
    let failed = "outcome=\"reject\",rule=\"tls-negotiation\"";
    assert_eq!(delta(failed), 1, "{after}");
    assert_eq!(delta("outcome=\"forward\""), 0, "{after}");
}

pub(crate) const MARKED: &str = "ms-edge-proxy-message-trust: ms-source-type=AutoFederation;ms-ep-fqdn=remote.test;ms-source-verified-user=verified;ms-source-network=federation";

#[tokio::test]
async fn each_source_type_gets_its_trust_header_on_the_internal_side() {
    let pki = Pki::new();
    let records = format!(
        "{BASE_RECORDS}
_sipfederationtls._tcp.northwind.test. IN SRV 10 100 5061 sip.northwind.test.
_sipfederationtls._tcp.tailspin.test. IN SRV 10 100 5061 sipfed.online.lync.com.
sip.northwind.test. IN A 127.0.0.6
sipfed.online.lync.com. IN A 127.0.0.5
"
    );
    let mut lab = FedLab::start(pki, &records, |f| f).await;
    let cases = [
        ("sip.fabrikam.test", "sip:fay@fabrikam.test",
         "ms-source-type=DirectPartner;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=federation;ms-remote-fqdn=sip.fabrikam.test"),
        ("sip.northwind.test", "sip:dan@northwind.test",
         "ms-source-type=AutoFederation;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=federation;ms-remote-fqdn=sip.northwind.test"),
        ("sipfed.online.lync.com", "sip:tia@tailspin.test",
         "ms-source-type=AuthorizedServer;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=federation;ms-remote-fqdn=sipfed.online.lync.com"),
    ];
    for (i, (cert, from, expected)) in cases.into_iter().enumerate() {
        let mut peer = lab.connect(Interface::External, &[cert]).await;
        peer.send(&msg(
            "MESSAGE",
            from,
            "sip:alice@contoso.test",
            &format!("st{i}"),
            &[MARKED],
        ))
        .await;
        let answer = peer.recv().await;
        assert_eq!(status_of(&answer), 200, "{cert}: {answer}");
        let got = lab.pool_recv().await;
        assert_eq!(
            headers(&got, "ms-edge-proxy-message-trust"),
            [expected],
            "{cert}"
        );
    }
}

#[tokio::test]
async fn diagnostics_stay_inside_and_a_silent_partner_error_gets_1034() {
    let pki = Pki::new();
    let (port, _far) = remote_edge_answering(&pki, "127.0.0.6", "sip.northwind.test", 486).await;
    let records = format!(
        "{BASE_RECORDS}
_sipfederationtls._tcp.northwind.test. IN SRV 10 100 {port} sip.northwind.test.
sip.northwind.test. IN A 127.0.0.6
"
    );
    let lab = FedLab::start(pki, &records, |f| f).await;
    // Outbound: the partner answers 486 with no diagnostics.
    let mut alice = lab
        .connect(Interface::Internal, &["pool.contoso.test"])
        .await;
    alice
        .send(&msg(
            "MESSAGE",
            "sip:alice@contoso.test",
            "sip:dan@northwind.test",
            "d1",
            &[],
        ))
        .await;
    let r = alice.recv().await;
    assert_eq!(status_of(&r), 486, "{r}");
    assert_eq!(
        header(&r, "ms-diagnostics"),
        Some("1034;reason=\"Previous hop federated peer did not report diagnostic information\";Domain=\"northwind.test\";PeerServer=\"sip.northwind.test\";source=\"accessedge.contoso.test\"")
    );
    // Inbound: the pool's error carries internal diagnostics; only the public form leaves.
    let mut northwind = lab
        .connect(Interface::External, &["sip.northwind.test"])
        .await;
    northwind
        .send(&msg(
            "MESSAGE",
            "sip:dan@northwind.test",
            "sip:nobody@contoso.test",
            "d2",
            &[MARKED, "X-Test-Answer: 404"],
        ))
        .await;
    let r = northwind.recv().await;
    assert_eq!(status_of(&r), 404, "{r}");
    assert!(header(&r, "ms-diagnostics").is_none(), "{r}");
    assert_eq!(
        header(&r, "ms-diagnostics-public"),
        Some("1003;reason=\"User does not exist\""),
        "{r}"
    );
    assert!(
        !r.contains("pool.contoso.test"),
        "no internal names leave: {r}"
    );
}

#[tokio::test]
async fn a_503_from_the_first_srv_target_moves_on_to_the_next() {
    let pki = Pki::new();
    let (busy, mut busy_rx) =
        remote_edge_answering(&pki, "127.0.0.6", "sip1.northwind.test", 503).await;
    let (good, mut good_rx) = remote_edge(&pki, "127.0.0.6", "sip2.northwind.test").await;
    let records = format!(
        "{BASE_RECORDS}
_sipfederationtls._tcp.northwind.test. IN SRV 10 100 {busy} sip1.northwind.test.
_sipfederationtls._tcp.northwind.test. IN SRV 20 100 {good} sip2.northwind.test.
sip1.northwind.test. IN A 127.0.0.6
sip2.northwind.test. IN A 127.0.0.6
"
    );
    let lab = FedLab::start(pki, &records, |f| f).await;
    let mut alice = lab
        .connect(Interface::Internal, &["pool.contoso.test"])
        .await;
    alice
        .send(&msg(
            "MESSAGE",
            "sip:alice@contoso.test",
            "sip:dan@northwind.test",
            "b1",
            &[],
        ))
        .await;
    let r = alice.recv().await;
    assert_eq!(status_of(&r), 200, "the 503 is not relayed: {r}");
    let first = tokio::time::timeout(WAIT, busy_rx.recv())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(WAIT, good_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(header(&first, "call-id"), Some("b1"));
    assert_eq!(header(&second, "call-id"), Some("b1"));
    assert_ne!(
        headers(&first, "via")[0],
        headers(&second, "via")[0],
        "a new branch for the new target"
    );
}

#[tokio::test]
async fn an_incomplete_trust_marking_is_refused_naming_the_missing_field() {
    let (_lab, mut northwind) = northwind_connected().await;
    let cases = [
        (
            "ms-source-type=AutoFederation;ms-source-verified-user=verified",
            "ms-ep-fqdn",
        ),
        (
            "ms-ep-fqdn=sip.northwind.test;ms-source-verified-user=verified",
            "ms-source-type",
        ),
        (
            "ms-source-type=AutoFederation;ms-ep-fqdn=sip.northwind.test",
            "ms-source-verified-user",
        ),
    ];
    for (i, (mark, missing)) in cases.into_iter().enumerate() {
        northwind
            .send(&msg(
                "MESSAGE",
                "sip:dan@northwind.test",
                "sip:alice@contoso.test",
                &format!("im{i}"),
                &[&format!("ms-edge-proxy-message-trust: {mark}")],
            ))
            .await;
        let r = northwind.recv().await;
        assert_eq!(status_of(&r), 403, "{missing}: {r}");
        let public = header(&r, "ms-diagnostics-public").unwrap_or("");
        assert!(public.starts_with("1905;"), "{missing}: {r}");
        assert!(
            public.contains(&format!("marking lacks {missing}")),
            "the reason names {missing}: {r}"
        );
    }
}

#[tokio::test]
async fn a_refusal_by_a_users_policy_names_neither_the_user_nor_the_policy_outside() {
    let (_lab, mut northwind) = northwind_connected().await;
    northwind
        .send(&msg(
            "MESSAGE",
            "sip:dan@northwind.test",
            "sip:carol@contoso.test",
            "nf1",
            &[NORTHWIND_MARK],
        ))
        .await;
    let r = northwind.recv().await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert!(
        header(&r, "ms-diagnostics-public")
            .unwrap_or("")
            .starts_with("1906;"),
        "{r}"
    );
    // Only the To line the sender wrote may name carol.
    for line in r.lines().filter(|l| !l.starts_with("To:")) {
        assert!(!line.contains("carol"), "{line}\n{r}");
    }
    for internal in [
        "NoFederation",
        "pool.contoso.test",
        "edge-int.contoso.test",
        "127.0.0.2",
    ] {
        assert!(!r.contains(internal), "{internal} leaves: {r}");
    }
}
