//! The simulated peers behind a real edge: the Skype PIC gateway with its provisioning
//! gate, INVITE and SUBSCRIBE answers, the echo back through the edge, an inbound request
//! a peer originates, and each fault as the sender on the internal side sees it.
//!
//! Everything is on ephemeral ports: the edge (mutual TLS on both interfaces, the lab's
//! federation sections), a DNS zone whose SRV records point at the simulated peers, a
//! simulated pool (the edge's internal next hop) and a simulated Skype gateway.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sipedge::dns::LabDnsServer;
use sipedge::lab::certs::LeafSpec;
use sipedge::lab::peer::{Fault, Gate, PeerSpec, PeerTls, SimPeer};
use sipedge::lab::pic::{self, LabClock, Provisioning};
use sipedge::lab::topology::Role;
use sipedge::tls::{client_config, server_config, TlsMaterial};
use sipedge::tls_store::TlsStore;
use sipedge::transport::{Interface, TlsSource, Transport};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::federation::{lab_federation, zone};
use crate::support::*;
use crate::tls::{write_pair, Pki};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The edge, its zone, a simulated pool and a simulated Skype gateway.
struct PeerLab {
    pki: Pki,
    edge: TestEdge,
    _zone: LabDnsServer,
    pool: SimPeer,
    skype: SimPeer,
    pic: Arc<Provisioning>,
    clock: Arc<LabClock>,
}

struct Options {
    /// The Skype gateway checks provisioning.
    gated: bool,
    echo: bool,
    invite_failure: Option<u16>,
    fault: Fault,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            gated: false,
            echo: false,
            invite_failure: None,
            fault: Fault::None,
        }
    }
}

/// Mutual-TLS configs for a lab host, plus the wrong-name config.
fn peer_tls(pki: &Pki, fqdn: &str) -> PeerTls {
    let own = pki.material(fqdn, LeafSpec::new([fqdn]));
    let wrong = pki.material("wrong", LeafSpec::new(["sip.elsewhere.test"]));
    PeerTls {
        server: server_config(&own, true).unwrap(),
        client: client_config(&own).unwrap(),
        wrong_name: Some(server_config(&wrong, true).unwrap()),
    }
}

impl PeerLab {
    async fn start(opts: Options) -> PeerLab {
        let pki = Pki::new();
        let pool_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool_port = pool_l.local_addr().unwrap().port();
        let pool = SimPeer::start(
            PeerSpec::for_role(Role::Pool),
            pool_l,
            Some(peer_tls(&pki, "pool.contoso.test")),
        );

        let clock = Arc::new(LabClock::manual(SystemTime::now()));
        let pic = Arc::new(Provisioning::default());
        let mut spec = PeerSpec::for_role(Role::Skype)
            .echo(opts.echo)
            .fault(opts.fault);
        spec.invite_failure = opts.invite_failure;
        if opts.gated {
            spec = spec.gated(Gate {
                store: pic.clone(),
                clock: clock.clone(),
            });
        }
        let skype_l = TcpListener::bind("127.0.0.4:0").await.unwrap();
        let skype_port = skype_l.local_addr().unwrap().port();
        let skype = SimPeer::start(
            spec,
            skype_l,
            Some(peer_tls(&pki, "federation.messenger.msn.com")),
        );

        let records = format!(
            "_sipfederationtls._tcp.live.com. IN SRV 10 100 {skype_port} federation.messenger.msn.com.
federation.messenger.msn.com. IN A 127.0.0.4
accessedge.contoso.test. IN A 127.0.0.1
"
        );
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dns = LabDnsServer::start(&zone(&records), None, udp, None).expect("zone");
        let toml = crate::tls::mtls_edge(&pki, pool_port, "")
            + &format!(
                r#"
[hosts]
"pool.contoso.test" = ["127.0.0.1"]

[dns]
servers = ["{dns}"]
timeout_ms = 1000

[timers]
t1_ms = 50
t2_ms = 4000

{fed}
"#,
                dns = dns.udp_addr(),
                fed = lab_federation(),
            );
        let snap = sipedge::config::Snapshot::from_toml(&toml, Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        let store = TlsStore::from_snapshot(&snap).expect("tls").expect("some");
        let edge = TestEdge::start_with_tls(&toml, Some(store as Arc<dyn TlsSource>)).await;
        PeerLab {
            pki,
            edge,
            _zone: dns,
            pool,
            skype,
            pic,
            clock,
        }
    }

    /// alice's client: a mutual-TLS connection to the internal interface as the pool.
    async fn alice(&self) -> StreamConn<tokio_rustls::client::TlsStream<TcpStream>> {
        let leaf = self
            .pki
            .ca
            .issue(&LeafSpec::new(["pool.contoso.test"]))
            .unwrap();
        let (c, k) = write_pair(self.pki.dir.path(), "client-pool", &leaf);
        let m = TlsMaterial::load(&c, &k, &[self.pki.ca_path()], &[]).unwrap();
        let tcp = TcpStream::connect(self.edge.addr(Interface::Internal, Transport::Tls))
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("edge-int.contoso.test").unwrap();
        StreamConn::new(
            tokio_rustls::TlsConnector::from(client_config(&m).unwrap())
                .connect(name, tcp)
                .await
                .expect("handshake"),
        )
    }

    /// Submits contoso.test for provisioning, checking FQDNs against the test's zone.
    fn provision(&self) -> pic::Id {
        let request = pic::Request {
            agreement_number: "AG-0001".into(),
            access_edge_fqdn: "accessedge.contoso.test".into(),
            sip_domains: vec!["contoso.test".into()],
            additional_edge_fqdns: vec![],
            contact: "admin@contoso.test".into(),
        };
        let in_zone = |fqdn: &str| fqdn == "accessedge.contoso.test";
        self.pic
            .submit(request, self.clock.now(), &in_zone)
            .expect("accepted")
    }
}

fn im(to: &str, id: &str, body: &str) -> String {
    request(
        "MESSAGE",
        to,
        "sip:alice@contoso.test",
        to,
        &format!("SIP/2.0/TLS 10.0.0.9:5061;branch=z9hG4bK{id}"),
        id,
        &["Content-Type: text/plain"],
        body,
    )
}

/// Sends `msg` and returns the first non-100 answer.
async fn exchange<S>(conn: &mut StreamConn<S>, msg: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    conn.send(msg).await;
    conn.recv_skip_100().await
}

#[tokio::test]
async fn the_skype_gateway_refuses_an_unprovisioned_organisation_until_pic_approves_it() {
    let lab = PeerLab::start(Options {
        gated: true,
        ..Options::default()
    })
    .await;
    let mut alice = lab.alice().await;

    // Before provisioning: 403 from the gateway, relayed with its diagnostics.
    let r = exchange(&mut alice, &im("sip:sam@live.com", "pic1", "hello")).await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert_eq!(
        header(&r, "ms-diagnostics"),
        Some(pic::not_provisioned_diagnostics("contoso.test").as_str()),
        "{r}"
    );
    let got = lab
        .skype
        .wait_for(WAIT, |m| m.call_id == "pic1")
        .await
        .expect("the IM reached the gateway");
    assert_eq!(
        got.trust.as_deref(),
        Some("ms-source-type=EdgeProxyGenerated;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified"),
        "the edge's outbound marking"
    );

    // Nor does the gateway send toward contoso.test on its own.
    let edge = lab.edge.addr(Interface::External, Transport::Tls);
    let sent = lab
        .skype
        .originate(
            edge,
            "accessedge.contoso.test",
            "sip:alice@contoso.test",
            "sip:sam@live.com",
            "hi",
        )
        .await;
    assert!(
        matches!(&sent, Err(sipedge::lab::peer::OriginateError::NotProvisioned(d)) if d == "contoso.test"),
        "{sent:?}"
    );

    // Submitted, then pending: still refused.
    let id = lab.provision();
    lab.clock.advance(29 * DAY);
    assert_eq!(
        lab.pic.status(id, lab.clock.now()).unwrap().state,
        pic::State::Pending
    );
    let r = exchange(&mut alice, &im("sip:sam@live.com", "pic2", "hello")).await;
    assert_eq!(status_of(&r), 403, "{r}");

    // Thirty days of lab time later the same IM goes through.
    lab.clock.advance(DAY);
    let r = exchange(&mut alice, &im("sip:sam@live.com", "pic3", "hello")).await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(lab
        .skype
        .wait_for(WAIT, |m| m.call_id == "pic3")
        .await
        .is_some());
}

#[tokio::test]
async fn invite_rings_then_answers_with_sdp_and_subscribe_gets_a_pidf_notify_at_the_pool() {
    let lab = PeerLab::start(Options::default()).await;
    let mut alice = lab.alice().await;
    // An IM session, as Lync opens one (alice's global policy keeps A/V off the public cloud).
    let offer = "v=0\r\no=alice 1 1 IN IP4 10.0.0.9\r\ns=session\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=message 5060 sip null\r\n";
    let invite = request(
        "INVITE",
        "sip:sam@live.com",
        "sip:alice@contoso.test",
        "sip:sam@live.com",
        "SIP/2.0/TLS 10.0.0.9:5061;branch=z9hG4bKinv1",
        "inv1",
        &[
            "Contact: <sip:alice@10.0.0.9:5061;transport=tls>",
            "Content-Type: application/sdp",
        ],
        offer,
    );
    alice.send(&invite).await;
    let ringing = alice.recv_skip_100().await;
    assert_eq!(status_of(&ringing), 180, "{ringing}");
    let ok = alice.recv_skip_100().await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    assert_eq!(header(&ok, "content-type"), Some("application/sdp"));
    let body = ok.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(
        body.starts_with("v=0\r\n") && body.contains("m=message "),
        "{ok}"
    );

    // SUBSCRIBE: 200, then the NOTIFY crosses the edge back to the pool.
    let pool_port = lab.pool.local_addr().port();
    let contact = format!("Contact: <sip:alice@pool.contoso.test:{pool_port};transport=tls>");
    let subscribe = request(
        "SUBSCRIBE",
        "sip:sam@live.com",
        "sip:alice@contoso.test",
        "sip:sam@live.com",
        "SIP/2.0/TLS 10.0.0.9:5061;branch=z9hG4bKsub1",
        "sub1",
        &["Event: presence", "Expires: 600", &contact],
        "",
    );
    let r = exchange(&mut alice, &subscribe).await;
    assert_eq!(status_of(&r), 200, "{r}");
    let notify = lab
        .pool
        .wait_for(WAIT, |m| m.method == "NOTIFY" && m.call_id == "sub1")
        .await
        .expect("the NOTIFY reached the pool");
    assert_eq!(header(&notify.text, "event"), Some("presence"));
    assert_eq!(
        header(&notify.text, "content-type"),
        Some("application/pidf+xml")
    );
    assert!(
        notify.text.contains(
            "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:sam@live.com\">"
        ),
        "{}",
        notify.text
    );
    assert!(
        header(&notify.text, "subscription-state")
            .unwrap_or("")
            .starts_with("active"),
        "{}",
        notify.text
    );
    let answered = lab
        .skype
        .wait_for_answer(WAIT, |a| a.method == "NOTIFY")
        .await
        .expect("the pool's 200 came back through the edge");
    assert_eq!(answered.status, 200);
}

#[tokio::test]
async fn the_echo_crosses_the_edge_both_ways_and_a_peer_can_originate() {
    let lab = PeerLab::start(Options {
        echo: true,
        invite_failure: Some(486),
        ..Options::default()
    })
    .await;
    let mut alice = lab.alice().await;
    let r = exchange(&mut alice, &im("sip:sam@live.com", "echo1", "ping")).await;
    assert_eq!(status_of(&r), 200, "{r}");
    let echo = lab
        .pool
        .wait_for(WAIT, |m| {
            m.method == "MESSAGE" && m.text.ends_with("echo: ping")
        })
        .await
        .expect("the echo came back to the pool");
    assert_eq!(echo.uri, "sip:alice@contoso.test");
    assert!(echo.from.starts_with("<sip:sam@live.com>"), "{}", echo.from);
    assert_eq!(
        echo.trust.as_deref(),
        Some("ms-source-type=AuthorizedServer;ms-ep-fqdn=accessedge.contoso.test;ms-source-verified-user=verified;ms-source-network=publiccloud;ms-remote-fqdn=federation.messenger.msn.com"),
    );

    // A Skype user messages alice on their own: in through the external interface.
    let answer = lab
        .skype
        .originate(
            lab.edge.addr(Interface::External, Transport::Tls),
            "accessedge.contoso.test",
            "sip:alice@contoso.test",
            "sip:sam@live.com",
            "hi alice",
        )
        .await
        .expect("an answer");
    assert_eq!(answer.status, 200, "{}", answer.text);
    let got = lab
        .pool
        .wait_for(WAIT, |m| m.text.ends_with("hi alice"))
        .await
        .expect("at the pool");
    assert!(got
        .trust
        .unwrap_or_default()
        .contains("ms-source-network=publiccloud"));

    // OPTIONS and BYE are answered as a real peer would.
    let options = request(
        "OPTIONS",
        "sip:sam@live.com",
        "sip:alice@contoso.test",
        "sip:sam@live.com",
        "SIP/2.0/TLS 10.0.0.9:5061;branch=z9hG4bKopt1",
        "opt1",
        &[],
        "",
    );
    let r = exchange(&mut alice, &options).await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(header(&r, "allow").unwrap_or("").contains("MESSAGE"), "{r}");
    assert!(header(&r, "supported").is_some(), "{r}");

    // A peer configured to refuse calls answers INVITE with its failure status.
    let invite = request(
        "INVITE",
        "sip:sam@live.com",
        "sip:alice@contoso.test",
        "sip:sam@live.com",
        "SIP/2.0/TLS 10.0.0.9:5061;branch=z9hG4bKinvf",
        "invf",
        &["Contact: <sip:alice@10.0.0.9:5061;transport=tls>"],
        "",
    );
    let r = exchange(&mut alice, &invite).await;
    assert_eq!(status_of(&r), 486, "{r}");
}

#[tokio::test]
async fn a_status_fault_is_relayed_with_its_diagnostics_or_gets_1034() {
    let lab = PeerLab::start(Options::default()).await;
    let mut alice = lab.alice().await;
    lab.skype.set_fault(Fault::Status {
        code: 480,
        diagnostics: Some("2000;reason=\"Temporarily unavailable\"".into()),
    });
    let r = exchange(&mut alice, &im("sip:sam@live.com", "st1", "x")).await;
    assert_eq!(status_of(&r), 480, "{r}");
    assert_eq!(
        header(&r, "ms-diagnostics"),
        Some("2000;reason=\"Temporarily unavailable\""),
        "{r}"
    );

    lab.skype.set_fault(Fault::Status {
        code: 486,
        diagnostics: None,
    });
    let r = exchange(&mut alice, &im("sip:sam@live.com", "st2", "x")).await;
    assert_eq!(status_of(&r), 486, "{r}");
    assert!(
        header(&r, "ms-diagnostics")
            .unwrap_or("")
            .starts_with("1034;"),
        "{r}"
    );

    lab.skype
        .set_fault(Fault::Delay(Duration::from_millis(300)));
    let t0 = std::time::Instant::now();
    let r = exchange(&mut alice, &im("sip:sam@live.com", "st3", "x")).await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(t0.elapsed() >= Duration::from_millis(300));

    lab.skype.set_fault(Fault::Drop);
    alice.send(&im("sip:sam@live.com", "st4", "x")).await;
    let r = alice
        .try_recv(Duration::from_secs(10))
        .await
        .expect("the edge gives up on a silent peer");
    assert_eq!(status_of(&r), 408, "{r}");
    assert!(lab
        .skype
        .wait_for(WAIT, |m| m.call_id == "st4")
        .await
        .is_some());
}

#[tokio::test]
async fn a_refused_handshake_is_504_with_1047() {
    let lab = PeerLab::start(Options {
        fault: Fault::RefuseHandshake,
        ..Options::default()
    })
    .await;
    let mut alice = lab.alice().await;
    let r = exchange(&mut alice, &im("sip:sam@live.com", "hs1", "x")).await;
    assert_eq!(status_of(&r), 504, "{r}");
    assert!(
        header(&r, "ms-diagnostics")
            .unwrap_or("")
            .starts_with("1047;"),
        "{r}"
    );
    assert!(lab.skype.received().is_empty());
}

#[tokio::test]
async fn a_wrong_name_certificate_is_504_with_1010() {
    let lab = PeerLab::start(Options {
        fault: Fault::WrongCert,
        ..Options::default()
    })
    .await;
    let mut alice = lab.alice().await;
    let r = exchange(&mut alice, &im("sip:sam@live.com", "wn1", "x")).await;
    assert_eq!(status_of(&r), 504, "{r}");
    assert!(
        header(&r, "ms-diagnostics")
            .unwrap_or("")
            .starts_with("1010;"),
        "{r}"
    );
    assert!(lab.skype.received().is_empty());
}
