//! MESSAGE over TLS in both directions, mutual TLS on the listeners, and what the sender
//! sees when the far side's certificate or handshake fails. Certificates are minted here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sipedge::lab::certs::{LabCa, Leaf, LeafSpec, Validity};
use sipedge::tls::{client_config, server_config, TlsMaterial};
use sipedge::tls_store::TlsStore;
use sipedge::transport::{Interface, TlsSource, Transport};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca: LabCa,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().expect("tempdir"),
            ca: LabCa::generate("test lab CA").expect("ca"),
        }
    }

    pub(crate) fn ca_path(&self) -> PathBuf {
        let p = self.dir.path().join("ca.crt");
        if !p.exists() {
            std::fs::write(&p, self.ca.cert_pem()).expect("write ca");
        }
        p
    }

    pub(crate) fn leaf(&self, file: &str, spec: LeafSpec) -> (PathBuf, PathBuf) {
        let leaf: Leaf = self.ca.issue(&spec).expect("leaf");
        write_pair(self.dir.path(), file, &leaf)
    }

    pub(crate) fn material(&self, file: &str, spec: LeafSpec) -> TlsMaterial {
        let (c, k) = self.leaf(file, spec);
        TlsMaterial::load(&c, &k, &[self.ca_path()], &[]).expect("material")
    }
}

pub(crate) fn write_pair(dir: &Path, file: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
    let c = dir.join(format!("{file}.crt"));
    let k = dir.join(format!("{file}.key"));
    std::fs::write(&c, &leaf.cert_pem).expect("write cert");
    std::fs::write(&k, &leaf.key_pem).expect("write key");
    (c, k)
}

fn tls_config(pki: &Pki, pool: std::net::SocketAddr, partner_port: u16) -> String {
    tls_config_with(pki, pool, partner_port, "", "")
}

/// The `[edge]` section, both interfaces over mutual TLS on ephemeral ports with
/// certificates from `pki` for the edge's two names, and the pool at
/// `pool.contoso.test:<pool_port>` over TLS. `external_tls` is added to the external
/// interface's tls table (e.g. `crls = [...]`).
pub(crate) fn mtls_edge(pki: &Pki, pool_port: u16, external_tls: &str) -> String {
    let (ec, ek) = pki.leaf("accessedge", LeafSpec::new(["accessedge.contoso.test"]));
    let (ic, ik) = pki.leaf("edge-int", LeafSpec::new(["edge-int.contoso.test"]));
    let ca = pki.ca_path();
    format!(
        r#"
[edge]
local_domains = ["contoso.test"]

[interfaces.external]
fqdn = "accessedge.contoso.test"
address = "127.0.0.1"
tls_port = 0
[interfaces.external.tls]
cert = "{ec}"
key = "{ek}"
trust_anchors = ["{ca}"]
{external_tls}

[interfaces.internal]
fqdn = "edge-int.contoso.test"
address = "127.0.0.2"
tls_port = 0
[interfaces.internal.tls]
cert = "{ic}"
key = "{ik}"
trust_anchors = ["{ca}"]

[pool]
target = "pool.contoso.test:{pool_port}"
transport = "tls"
"#,
        ec = ec.display(),
        ek = ek.display(),
        ic = ic.display(),
        ik = ik.display(),
        ca = ca.display(),
    )
}

/// `crls` goes into the external interface's tls table; `extra` is appended.
fn tls_config_with(
    pki: &Pki,
    pool: std::net::SocketAddr,
    partner_port: u16,
    crls: &str,
    extra: &str,
) -> String {
    mtls_edge(pki, pool.port(), &format!("crls = [{crls}]"))
        + &format!(
            r#"
[[routes]]
domain = "fabrikam.test"
target = "sip.fabrikam.test:{partner_port}"
transport = "tls"

[[routes]]
domain = "wrongname.test"
target = "sip.wrongname.test:{partner_port}"
transport = "tls"

[[routes]]
domain = "refused.test"
target = "sip.refused.test:1"
transport = "tls"

{extra}

[hosts]
"pool.contoso.test" = ["127.0.0.1"]
"sip.fabrikam.test" = ["127.0.0.3"]
"sip.wrongname.test" = ["127.0.0.3"]
"sip.refused.test" = ["127.0.0.3"]
"#,
        )
}

async fn start_edge(pki: &Pki, pool: std::net::SocketAddr, partner_port: u16) -> TestEdge {
    start_edge_toml(tls_config(pki, pool, partner_port)).await
}

async fn start_edge_toml(toml: String) -> TestEdge {
    let snap = sipedge::config::Snapshot::from_toml(&toml, Path::new(".")).expect("config");
    let store = TlsStore::from_snapshot(&snap).expect("tls").expect("some");
    TestEdge::start_with_tls(&toml, Some(store as Arc<dyn TlsSource>)).await
}

/// A TLS server (a partner's edge or the pool) that requires a client certificate.
/// Whether the external listener refuses a client with this configuration: in the
/// handshake, or (TLS 1.3) on the first exchange after it.
pub(crate) async fn is_refused(
    ext: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> bool {
    let tcp = TcpStream::connect(ext).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("accessedge.contoso.test").expect("name");
    match tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
    {
        Err(_) => true,
        Ok(s) => {
            let mut s = StreamConn::new(s);
            s.send("\r\n\r\n").await;
            s.read_raw(Duration::from_secs(2)).await != b"\r\n"
        }
    }
}

/// A client that trusts `ca` and presents no certificate.
pub(crate) fn without_client_certificate(
    ca: rustls_pki_types::CertificateDer<'static>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("CA certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

pub(crate) async fn tls_server(
    pki: &Pki,
    ip: &str,
    name: &str,
) -> (TcpListener, tokio_rustls::TlsAcceptor) {
    let m = pki.material(name, LeafSpec::new([name]));
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&m, true).expect("server config"));
    (
        TcpListener::bind(format!("{ip}:0")).await.expect("bind"),
        acceptor,
    )
}

pub(crate) async fn accept_tls(
    l: &TcpListener,
    a: &tokio_rustls::TlsAcceptor,
) -> StreamConn<tokio_rustls::server::TlsStream<TcpStream>> {
    let (tcp, _) = tokio::time::timeout(WAIT, l.accept())
        .await
        .expect("accept in time")
        .expect("accept");
    let s = a.accept(tcp).await.expect("handshake with the edge");
    StreamConn::new(s)
}

pub(crate) async fn tls_client(
    pki: &Pki,
    to: std::net::SocketAddr,
    my_name: &str,
    server_name: &str,
) -> std::io::Result<StreamConn<tokio_rustls::client::TlsStream<TcpStream>>> {
    let m = pki.material(my_name, LeafSpec::new([my_name]));
    let connector = tokio_rustls::TlsConnector::from(client_config(&m).expect("client config"));
    let tcp = TcpStream::connect(to).await?;
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string()).expect("name");
    let mut s = StreamConn::new(connector.connect(name, tcp).await?);
    // With TLS 1.3 a refused client certificate shows up on the first read.
    s.send("\r\n\r\n").await;
    match s.read_raw(Duration::from_secs(2)).await.as_slice() {
        b"\r\n" => Ok(s),
        _ => Err(std::io::Error::other("refused after the handshake")),
    }
}

#[tokio::test]
async fn message_over_mutual_tls_in_both_directions() {
    let pki = Pki::new();
    let (pool_l, pool_a) = tls_server(&pki, "127.0.0.1", "pool.contoso.test").await;
    let (partner_l, partner_a) = tls_server(&pki, "127.0.0.3", "sip.fabrikam.test").await;
    let edge = start_edge(
        &pki,
        pool_l.local_addr().unwrap(),
        partner_l.local_addr().unwrap().port(),
    )
    .await;

    // Inside → out: the pool's connection to the internal interface, relayed to fabrikam.
    let mut inside = tls_client(
        &pki,
        edge.addr(Interface::Internal, Transport::Tls),
        "pool.contoso.test",
        "edge-int.contoso.test",
    )
    .await
    .expect("mutual TLS with the internal interface");
    let req = request(
        "MESSAGE",
        "sip:carol@fabrikam.test",
        "sip:alice@contoso.test",
        "sip:carol@fabrikam.test",
        "SIP/2.0/TLS pool.contoso.test:5061;branch=z9hG4bKtls1",
        "tls-out",
        &[],
        "hi",
    );
    inside.send(&req).await;
    let mut partner = accept_tls(&partner_l, &partner_a).await;
    let got = partner.recv().await;
    assert!(
        headers(&got, "via")[0].starts_with("SIP/2.0/TLS accessedge.contoso.test:"),
        "{got}"
    );
    let (_, conn) = partner.io.get_ref();
    let names = sipedge::tls::peer_identity(
        conn.peer_certificates()
            .expect("the edge presented a client certificate"),
    );
    assert_eq!(names.names(), ["accessedge.contoso.test"]);
    partner.send(&response(&got, 200, "OK", &[])).await;
    assert_eq!(status_of(&inside.recv().await), 200);

    // Outside → in: the partner's own connection to the external interface, to the pool.
    let mut outside = tls_client(
        &pki,
        edge.addr(Interface::External, Transport::Tls),
        "sip.fabrikam.test",
        "accessedge.contoso.test",
    )
    .await
    .expect("mutual TLS with the external interface");
    let req = request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:carol@fabrikam.test",
        "sip:bob@contoso.test",
        "SIP/2.0/TLS sip.fabrikam.test:5061;branch=z9hG4bKtls2",
        "tls-in",
        &[],
        "hello",
    );
    outside.send(&req).await;
    let mut pool = accept_tls(&pool_l, &pool_a).await;
    let got = pool.recv().await;
    assert_eq!(first_line(&got), "MESSAGE sip:bob@contoso.test SIP/2.0");
    assert!(
        headers(&got, "via")[0].starts_with("SIP/2.0/TLS edge-int.contoso.test:"),
        "{got}"
    );
    pool.send(&response(&got, 200, "OK", &[])).await;
    assert_eq!(status_of(&outside.recv().await), 200);

    // A hundred more requests to the partner reuse the pooled connection.
    for i in 0..100 {
        let r = request(
            "MESSAGE",
            "sip:carol@fabrikam.test",
            "sip:alice@contoso.test",
            "sip:carol@fabrikam.test",
            &format!("SIP/2.0/TLS pool.contoso.test:5061;branch=z9hG4bKmany{i}"),
            &format!("many-{i}"),
            &[],
            "",
        );
        inside.send(&r).await;
        let got = partner.recv().await;
        partner.send(&response(&got, 200, "OK", &[])).await;
        assert_eq!(status_of(&inside.recv().await), 200);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), partner_l.accept())
            .await
            .is_err(),
        "no second connection was opened"
    );
}

#[tokio::test]
async fn listeners_require_a_trusted_client_certificate_and_keep_serving() {
    let pki = Pki::new();
    let (pool_l, _) = tls_server(&pki, "127.0.0.1", "pool.contoso.test").await;
    let edge = start_edge(&pki, pool_l.local_addr().unwrap(), 1).await;
    let ext = edge.addr(Interface::External, Transport::Tls);

    // No client certificate at all.
    let refused = is_refused(ext, without_client_certificate(pki.ca.cert_der())).await;
    assert!(refused, "a client without a certificate is refused");

    // A certificate from another CA.
    let other = Pki::new();
    let stranger = other
        .ca
        .issue(&LeafSpec::new(["sip.stranger.test"]))
        .unwrap();
    let (c, k) = write_pair(pki.dir.path(), "stranger", &stranger);
    let m2 = TlsMaterial::load(&c, &k, &[pki.ca_path()], &[]).unwrap();
    let refused = is_refused(ext, client_config(&m2).unwrap()).await;
    assert!(refused, "a certificate from an unknown CA is refused");

    // An expired certificate from the right CA.
    let expired = pki
        .ca
        .issue(&LeafSpec::new(["old.fabrikam.test"]).validity(Validity::Expired))
        .unwrap();
    let (c, k) = write_pair(pki.dir.path(), "expired", &expired);
    let m = TlsMaterial::load(&c, &k, &[pki.ca_path()], &[]).unwrap();
    let refused = is_refused(ext, client_config(&m).unwrap()).await;
    assert!(refused, "an expired certificate is refused");

    // The next good client still gets in.
    assert!(
        tls_client(&pki, ext, "sip.fabrikam.test", "accessedge.contoso.test")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn outbound_failures_become_504_with_the_access_edge_diagnostics() {
    let pki = Pki::new();
    let (pool_l, _) = tls_server(&pki, "127.0.0.1", "pool.contoso.test").await;
    // The far side presents sip.fabrikam.test, but the route expects sip.wrongname.test.
    let (partner_l, partner_a) = tls_server(&pki, "127.0.0.3", "sip.fabrikam.test").await;
    let edge = start_edge(
        &pki,
        pool_l.local_addr().unwrap(),
        partner_l.local_addr().unwrap().port(),
    )
    .await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = partner_l.accept().await {
            let a = partner_a.clone();
            tokio::spawn(async move {
                let _ = a.accept(tcp).await;
            });
        }
    });
    let mut inside = tls_client(
        &pki,
        edge.addr(Interface::Internal, Transport::Tls),
        "pool.contoso.test",
        "edge-int.contoso.test",
    )
    .await
    .expect("connect");
    let req = request(
        "MESSAGE",
        "sip:x@wrongname.test",
        "sip:alice@contoso.test",
        "sip:x@wrongname.test",
        "SIP/2.0/TLS pool.contoso.test:5061;branch=z9hG4bKwn1",
        "wrong-name",
        &[],
        "",
    );
    inside.send(&req).await;
    let answer = inside.recv().await;
    assert_eq!(status_of(&answer), 504, "{answer}");
    let diag = header(&answer, "ms-diagnostics").expect("diagnostics toward the inside");
    assert!(
        diag.starts_with(
            "1010;reason=\"Certificate trust with another server could not be established\""
        ),
        "{diag}"
    );
    assert!(diag.contains("tls-target=\"sip.wrongname.test\""), "{diag}");
    assert!(diag.contains("SEC_E_WRONG_PRINCIPAL"), "{diag}");

    let req = request(
        "MESSAGE",
        "sip:x@refused.test",
        "sip:alice@contoso.test",
        "sip:x@refused.test",
        "SIP/2.0/TLS pool.contoso.test:5061;branch=z9hG4bKrf1",
        "refused",
        &[],
        "",
    );
    inside.send(&req).await;
    let answer = inside.recv().await;
    assert_eq!(status_of(&answer), 504, "{answer}");
    let diag = header(&answer, "ms-diagnostics").expect("diagnostics");
    assert!(
        diag.starts_with(
            "1047;reason=\"Failed to complete TLS negotiation with a federated peer server\""
        ),
        "{diag}"
    );
    assert!(diag.contains("WSAECONNREFUSED"), "{diag}");
}

/// Where a route goes: a domain, a host name mapped to 127.0.0.3, and a port.
fn route(domain: &str, port: u16) -> String {
    format!("[[routes]]\ndomain = \"{domain}\"\ntarget = \"sip.{domain}:{port}\"\ntransport = \"tls\"\n")
}

fn hosts_line(domain: &str) -> String {
    format!("\"sip.{domain}\" = [\"127.0.0.3\"]\n")
}

#[tokio::test]
async fn a_revoked_client_certificate_is_refused_and_the_identity_reaches_the_decision() {
    let pki = Pki::new();
    let revoked = pki
        .ca
        .issue(&LeafSpec::new(["sip.revoked.test"]).serial(4242))
        .unwrap();
    let crl = pki.dir.path().join("lab.crl");
    std::fs::write(&crl, pki.ca.crl(&[revoked.serial]).unwrap()).unwrap();
    let (pool_l, pool_a) = tls_server(&pki, "127.0.0.1", "pool.contoso.test").await;
    let toml = tls_config_with(
        &pki,
        pool_l.local_addr().unwrap(),
        1,
        &format!("\"{}\"", crl.display()),
        "",
    );
    let edge = start_edge_toml(toml).await;
    let ext = edge.addr(Interface::External, Transport::Tls);

    let (c, k) = write_pair(pki.dir.path(), "revoked", &revoked);
    let m = TlsMaterial::load(&c, &k, &[pki.ca_path()], &[]).unwrap();
    let refused = is_refused(ext, client_config(&m).unwrap()).await;
    assert!(refused, "a revoked certificate is refused");

    // A good partner gets in, and the decision sees exactly its certificate's SAN names.
    let partner = pki
        .ca
        .issue(&LeafSpec::new(["sip.fabrikam.test", "fabrikam.test"]))
        .unwrap();
    let (c, k) = write_pair(pki.dir.path(), "partner2", &partner);
    let m = TlsMaterial::load(&c, &k, &[pki.ca_path()], &[]).unwrap();
    let tcp = TcpStream::connect(ext).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("accessedge.contoso.test").unwrap();
    let mut outside = StreamConn::new(
        tokio_rustls::TlsConnector::from(client_config(&m).unwrap())
            .connect(name, tcp)
            .await
            .expect("handshake"),
    );
    let req = request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:carol@fabrikam.test",
        "sip:bob@contoso.test",
        "SIP/2.0/TLS sip.fabrikam.test:5061;branch=z9hG4bKid1",
        "identity-1",
        &[],
        "",
    );
    outside.send(&req).await;
    let mut pool = accept_tls(&pool_l, &pool_a).await;
    let got = pool.recv().await;
    pool.send(&response(&got, 200, "OK", &[])).await;
    assert_eq!(status_of(&outside.recv().await), 200);
    let seen = edge
        .edge
        .core()
        .recent_decisions()
        .into_iter()
        .find(|d| d.call_id == "identity-1")
        .expect("decision recorded");
    assert_eq!(seen.identity, ["sip.fabrikam.test", "fabrikam.test"]);
    assert_eq!(seen.interface, Interface::External);
}

#[tokio::test]
async fn a_peer_that_stalls_mid_handshake_does_not_delay_another_peer() {
    let pki = Pki::new();
    let (pool_l, _) = tls_server(&pki, "127.0.0.1", "pool.contoso.test").await;
    let (partner_l, partner_a) = tls_server(&pki, "127.0.0.3", "sip.fabrikam.test").await;
    // Accepts TCP, never speaks TLS.
    let staller = TcpListener::bind("127.0.0.3:0").await.unwrap();
    let stall_port = staller.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = staller.accept().await {
            held.push(tcp);
        }
    });
    let extra = route("stall.test", stall_port) + "\n[limits]\ntls_handshake_timeout_ms = 1500\n";
    let toml = tls_config_with(
        &pki,
        pool_l.local_addr().unwrap(),
        partner_l.local_addr().unwrap().port(),
        "",
        &extra,
    )
    .replace(
        "[hosts]\n",
        &format!("[hosts]\n{}", hosts_line("stall.test")),
    );
    let edge = start_edge_toml(toml).await;
    let mut inside = tls_client(
        &pki,
        edge.addr(Interface::Internal, Transport::Tls),
        "pool.contoso.test",
        "edge-int.contoso.test",
    )
    .await
    .expect("connect");

    inside
        .send(&request(
            "MESSAGE",
            "sip:x@stall.test",
            "sip:alice@contoso.test",
            "sip:x@stall.test",
            "SIP/2.0/TLS pool.contoso.test;branch=z9hG4bKst1",
            "stall-1",
            &[],
            "",
        ))
        .await;
    let started = std::time::Instant::now();
    inside
        .send(&request(
            "MESSAGE",
            "sip:carol@fabrikam.test",
            "sip:alice@contoso.test",
            "sip:carol@fabrikam.test",
            "SIP/2.0/TLS pool.contoso.test;branch=z9hG4bKst2",
            "stall-2",
            &[],
            "",
        ))
        .await;
    let mut partner = accept_tls(&partner_l, &partner_a).await;
    let got = partner.recv().await;
    partner.send(&response(&got, 200, "OK", &[])).await;
    let first = inside.recv().await;
    assert_eq!(
        header(&first, "call-id"),
        Some("stall-2"),
        "the healthy peer answers first"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "not held up by the stalled handshake"
    );
    let second = inside.recv().await;
    assert_eq!(header(&second, "call-id"), Some("stall-1"));
    assert_eq!(status_of(&second), 504);
    let diag = header(&second, "ms-diagnostics").unwrap_or("");
    assert!(
        diag.starts_with("1047;") && diag.contains("WSAETIMEDOUT"),
        "{diag}"
    );
}

#[tokio::test]
async fn idle_federation_connections_get_keepalive_pings_and_failing_peers_get_backoff() {
    let pki = Pki::new();
    let (pool_l, _) = tls_server(&pki, "127.0.0.1", "pool.contoso.test").await;
    let (partner_l, partner_a) = tls_server(&pki, "127.0.0.3", "sip.fabrikam.test").await;
    // Accepts and closes at once: every handshake fails.
    let flaky = TcpListener::bind("127.0.0.3:0").await.unwrap();
    let flaky_port = flaky.local_addr().unwrap().port();
    let accepts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepts.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = flaky.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(tcp);
        }
    });
    let extra = route("flaky.test", flaky_port) + "\n[limits]\nkeepalive_interval_ms = 300\n";
    let toml = tls_config_with(
        &pki,
        pool_l.local_addr().unwrap(),
        partner_l.local_addr().unwrap().port(),
        "",
        &extra,
    )
    .replace(
        "[hosts]\n",
        &format!("[hosts]\n{}", hosts_line("flaky.test")),
    );
    let edge = start_edge_toml(toml).await;
    let mut inside = tls_client(
        &pki,
        edge.addr(Interface::Internal, Transport::Tls),
        "pool.contoso.test",
        "edge-int.contoso.test",
    )
    .await
    .expect("connect");

    inside
        .send(&request(
            "MESSAGE",
            "sip:carol@fabrikam.test",
            "sip:alice@contoso.test",
            "sip:carol@fabrikam.test",
            "SIP/2.0/TLS pool.contoso.test;branch=z9hG4bKka1",
            "ka-1",
            &[],
            "",
        ))
        .await;
    let mut partner = accept_tls(&partner_l, &partner_a).await;
    let got = partner.recv().await;
    partner.send(&response(&got, 200, "OK", &[])).await;
    assert_eq!(status_of(&inside.recv().await), 200);
    let ping = partner.read_raw(Duration::from_secs(3)).await;
    assert_eq!(ping, b"\r\n\r\n", "an idle outbound connection is pinged");

    for i in 0..3 {
        inside
            .send(&request(
                "MESSAGE",
                "sip:x@flaky.test",
                "sip:alice@contoso.test",
                "sip:x@flaky.test",
                &format!("SIP/2.0/TLS pool.contoso.test;branch=z9hG4bKfl{i}"),
                &format!("flaky-{i}"),
                &[],
                "",
            ))
            .await;
        let a = inside.recv().await;
        assert_eq!(status_of(&a), 504, "{a}");
        assert!(
            header(&a, "ms-diagnostics")
                .unwrap_or("")
                .starts_with("1047;"),
            "{a}"
        );
    }
    assert_eq!(
        accepts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "within the backoff window the peer is not contacted again"
    );
}

#[tokio::test]
async fn certificate_reload_changes_new_handshakes_and_keeps_open_connections() {
    let pki = Pki::new();
    let (pool_l, pool_a) = tls_server(&pki, "127.0.0.1", "pool.contoso.test").await;
    let toml = tls_config(&pki, pool_l.local_addr().unwrap(), 1);
    let snap = sipedge::config::Snapshot::from_toml(&toml, Path::new(".")).expect("config");
    let store = TlsStore::from_snapshot(&snap).expect("tls").expect("some");
    let edge = TestEdge::start_with_tls(&toml, Some(store.clone() as Arc<dyn TlsSource>)).await;
    let ext = edge.addr(Interface::External, Transport::Tls);
    let served_serial = |s: &tokio_rustls::client::TlsStream<TcpStream>| {
        let der = s.get_ref().1.peer_certificates().expect("server cert")[0].clone();
        let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).expect("x509");
        c.serial.to_string()
    };
    let mut old = tls_client(&pki, ext, "sip.fabrikam.test", "accessedge.contoso.test")
        .await
        .expect("connect");
    let before = served_serial(&old.io);

    // Replace the external certificate on disk, then reload (what SIGHUP does).
    let ext_cert = snap.external.tls.as_ref().expect("tls").cert.clone();
    let ext_key = snap.external.tls.as_ref().expect("tls").key.clone();
    let fresh = pki
        .ca
        .issue(&LeafSpec::new(["accessedge.contoso.test"]).serial(777))
        .unwrap();
    std::fs::write(&ext_cert, &fresh.cert_pem).unwrap();
    std::fs::write(&ext_key, &fresh.key_pem).unwrap();
    store.reload(&snap).expect("reload");

    let new = tls_client(&pki, ext, "sip.fabrikam.test", "accessedge.contoso.test")
        .await
        .expect("connect after reload");
    assert_eq!(served_serial(&new.io), "777");
    assert_ne!(before, "777");
    // The connection opened before the reload still relays.
    old.send(&request(
        "MESSAGE",
        "sip:bob@contoso.test",
        "sip:carol@fabrikam.test",
        "sip:bob@contoso.test",
        "SIP/2.0/TLS sip.fabrikam.test;branch=z9hG4bKrl1",
        "reload-old",
        &[],
        "",
    ))
    .await;
    let mut pool = accept_tls(&pool_l, &pool_a).await;
    let got = pool.recv().await;
    pool.send(&response(&got, 200, "OK", &[])).await;
    assert_eq!(status_of(&old.recv().await), 200);
}
