//! Idle mutual-TLS connections: what one held connection costs the proxy in memory, and
//! how many mutual-TLS handshakes a second it completes.
//!
//! ```text
//! cargo bench --bench idle_tls -- [--connections 10000] [--config config/bench-tls.toml]
//!     [--target 127.0.0.1:5061 --pid PID] [--server-name accessedge.contoso.test]
//!     [--no-verify] [--concurrency 64] [--sources 20]
//! ```
//!
//! Without `--pid` it starts `target/release/sipedge run --config <config>` and stops it by
//! its PID at the end. Connections come from `--sources` loopback addresses
//! (127.0.1.1, 127.0.1.2, …) so that a per-address connection cap does not stop them.
//! The client presents the lab certificate of `sip.fabrikam.test`. Output, one line:
//! `IDLE proxy_pid=.. connections=.. handshakes_per_s=.. rss_before_kb=.. rss_after_kb=..
//! bytes_per_connection=.. alive_after_hold=..`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

struct Args {
    connections: usize,
    config: PathBuf,
    target: SocketAddr,
    pid: Option<u32>,
    server_name: String,
    no_verify: bool,
    concurrency: usize,
    sources: u8,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        connections: 10_000,
        config: PathBuf::from("config/bench-tls.toml"),
        target: "127.0.0.1:5061".parse().map_err(|e| format!("{e}"))?,
        pid: None,
        server_name: "accessedge.contoso.test".into(),
        no_verify: false,
        concurrency: 64,
        sources: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--connections" => a.connections = num(&value("--connections")?)?,
            "--config" => a.config = value("--config")?.into(),
            "--target" => {
                a.target = value("--target")?
                    .parse()
                    .map_err(|e| format!("--target: {e}"))?
            }
            "--pid" => a.pid = Some(num(&value("--pid")?)?),
            "--server-name" => a.server_name = value("--server-name")?,
            "--no-verify" => a.no_verify = true,
            "--concurrency" => a.concurrency = num(&value("--concurrency")?)?,
            "--sources" => a.sources = num(&value("--sources")?)?,
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("not a number: {s}"))
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Accepts any server certificate: only for measuring a proxy whose certificate is not
/// from the lab CA (the Kamailio anchor's), where the handshake cost is what counts.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client_config(certs: &Path, no_verify: bool) -> Result<Arc<ClientConfig>, String> {
    let material = sipedge::tls::TlsMaterial::load(
        &certs.join("sip.fabrikam.test.crt"),
        &certs.join("sip.fabrikam.test.key"),
        &[certs.join("ca.crt")],
        &[],
    )
    .map_err(|e| format!("lab certificates in {}: {e}", certs.display()))?;
    let verified = sipedge::tls::client_config(&material).map_err(|e| e.to_string())?;
    if !no_verify {
        return Ok(verified);
    }
    let mut cfg = (*verified).clone();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    cfg.dangerous()
        .set_certificate_verifier(Arc::new(AnyServer(provider)));
    Ok(Arc::new(cfg))
}

async fn connect(
    connector: &TlsConnector,
    name: &ServerName<'static>,
    source: IpAddr,
    target: SocketAddr,
) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(target).await?;
    connector.connect(name.clone(), tcp).await
}

fn start_edge(config: &Path) -> Result<Child, String> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/sipedge");
    Command::new(&bin)
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e} (cargo build --release first)", bin.display()))
}

/// Sends a CRLFCRLF keep-alive on a held connection and waits for the CRLF pong (RFC 5626
/// §4.4.1): the connection is still served after being held idle.
async fn alive(stream: &mut TlsStream<tokio::net::TcpStream>) -> bool {
    let probe = async {
        stream.write_all(b"\r\n\r\n").await.ok()?;
        let mut buf = [0u8; 2];
        stream.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), probe).await,
        Ok(Some(true))
    )
}

async fn run(a: Args) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let connector = TlsConnector::from(client_config(&root.join("certs"), a.no_verify)?);
    let name = ServerName::try_from(a.server_name.clone()).map_err(|e| e.to_string())?;

    let mut child = None;
    let pid = match a.pid {
        Some(p) => p,
        None => {
            let c = start_edge(&root.join(&a.config))?;
            let p = c.id();
            child = Some(c);
            p
        }
    };
    let up = Instant::now();
    while tokio::net::TcpStream::connect(a.target).await.is_err() {
        if up.elapsed() > Duration::from_secs(20) {
            return Err(format!("nothing listens on {} after 20 s", a.target));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kb(pid).ok_or("cannot read the proxy's RSS")?;

    let started = Instant::now();
    let sources: Vec<IpAddr> = (1..=a.sources.max(1))
        .map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 1, n)))
        .collect();
    let gate = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (connector, name, source) =
            (connector.clone(), name.clone(), sources[i % sources.len()]);
        let target = a.target;
        tasks.push(tokio::spawn(async move {
            let r = connect(&connector, &name, source, target).await;
            drop(permit);
            r
        }));
    }
    let mut held = Vec::with_capacity(a.connections);
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => *failures.entry(e.kind().to_string()).or_default() += 1,
            Err(e) => *failures.entry(e.to_string()).or_default() += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kb(pid).ok_or("cannot read the proxy's RSS")?;
    let stride = (held.len() / 100).max(1);
    let probed = held.len().div_ceil(stride).min(100);
    let mut alive_count = 0;
    for s in held.iter_mut().step_by(stride).take(100) {
        alive_count += alive(s).await as usize;
    }
    let per_conn = (after.saturating_sub(before) * 1024) / (held.len().max(1) as u64);
    println!(
        "IDLE proxy_pid={pid} connections={} failed={failures:?} handshakes_per_s={:.0} rss_before_kb={before} rss_after_kb={after} bytes_per_connection={per_conn} alive_after_hold={alive_count}/{probed}",
        held.len(),
        held.len() as f64 / elapsed,
    );
    drop(held);
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("idle_tls: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("idle_tls: {e}");
        std::process::exit(1);
    }
}
