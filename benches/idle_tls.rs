//! Idle mutual-TLS connections: what one held connection costs the proxy in memory, and
//! how many mutual-TLS handshakes a second it completes.
//!
//! ```text
//! cargo bench --bench idle_tls -- [--connections 10000] [--config config/bench-tls.toml]
//!     [--target 127.0.0.1:5061 --pid PID] [--server-name accessedge.contoso.test]
//!     [--cert sip.fabrikam.test] [--no-verify] [--concurrency 64] [--sources 20]
//!     [--handshakes N]
//! ```
//!
//! Without `--pid` it starts `target/release/sipedge run --config <config>` and stops it by
//! its PID at the end; with `--pid` any proxy can be measured (`benches/handshakes.sh` runs
//! it against sipedge and Kamailio). Connections come from `--sources` loopback addresses
//! (127.0.1.1, 127.0.1.2, …) so that a per-address connection cap does not stop them.
//! The client presents the lab certificate `certs/<--cert>.crt` and never resumes a
//! session, so every handshake is a full mutual-TLS handshake.
//!
//! Holding (default), one line: `IDLE proxy_pid=.. connections=.. failed=..
//! handshakes_per_s=.. processes=.. rss_before_kb=.. rss_after_kb=.. pss_before_kb=..
//! pss_after_kb=.. bytes_per_connection=.. pss_bytes_per_connection=.. alive_after_hold=..
//! tls=.. suite=.. kx=..`; memory is summed over the proxy's process tree (RSS counts a
//! shared page in every process, PSS splits it), bytes per connection from the RSS sum.
//!
//! With `--handshakes N`: N handshakes, `--concurrency` at a time, each connection closed
//! once the proxy has answered a CRLFCRLF keep-alive over it (so the proxy has verified the
//! client's certificate and serves the connection: a TLS 1.3 client finishes before the
//! server does). One line: `HANDSHAKES proxy_pid=.. concurrency=.. done=.. failed=..
//! seconds=.. handshakes_per_s=.. tls=.. suite=.. kx=..`.

use std::collections::BTreeMap;
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

#[path = "idle_tls/proc_tree.rs"]
mod proc_tree;

struct Args {
    connections: usize,
    config: PathBuf,
    target: SocketAddr,
    pid: Option<u32>,
    server_name: String,
    no_verify: bool,
    concurrency: usize,
    sources: u8,
    cert: String,
    handshakes: Option<usize>,
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
        cert: "sip.fabrikam.test".into(),
        handshakes: None,
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
            "--cert" => a.cert = value("--cert")?,
            "--handshakes" => a.handshakes = Some(num(&value("--handshakes")?)?),
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

fn client_config(certs: &Path, cert: &str, no_verify: bool) -> Result<Arc<ClientConfig>, String> {
    let material = sipedge::tls::TlsMaterial::load(
        &certs.join(format!("{cert}.crt")),
        &certs.join(format!("{cert}.key")),
        &[certs.join("ca.crt")],
        &[],
    )
    .map_err(|e| format!("lab certificates in {}: {e}", certs.display()))?;
    let mut cfg = (*sipedge::tls::client_config(&material).map_err(|e| e.to_string())?).clone();
    // A resumed handshake skips both certificate checks; only full ones are measured.
    cfg.resumption = rustls::client::Resumption::disabled();
    if no_verify {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        cfg.dangerous()
            .set_certificate_verifier(Arc::new(AnyServer(provider)));
    }
    Ok(Arc::new(cfg))
}

/// Failures by kind as one space-free field, e.g. `none` or `connection_refused:3`.
fn failures_field(failures: &BTreeMap<String, usize>) -> String {
    if failures.is_empty() {
        return "none".into();
    }
    let kinds: Vec<String> = failures
        .iter()
        .map(|(kind, n)| format!("{}:{n}", kind.replace(' ', "_")))
        .collect();
    kinds.join(",")
}

/// What was negotiated, so that runs against two proxies can be checked to be alike.
fn negotiated(stream: &TlsStream<tokio::net::TcpStream>) -> String {
    let conn = stream.get_ref().1;
    let name = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    format!(
        "tls={} suite={} kx={}",
        name(conn.protocol_version().map(|v| format!("{v:?}"))),
        name(
            conn.negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
        ),
        name(
            conn.negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name()))
        ),
    )
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

/// What one batch of connections gave: the connections still open (none when each was
/// closed after its keep-alive), failures by kind, the wall time and what was negotiated.
struct Batch {
    held: Vec<TlsStream<tokio::net::TcpStream>>,
    failures: BTreeMap<String, usize>,
    seconds: f64,
    negotiated: String,
}

/// Opens `count` mutual-TLS connections, `a.concurrency` handshakes in flight at a time.
/// With `close` each connection is closed as soon as the proxy answered a keep-alive over
/// it; otherwise all are kept open and returned.
async fn open_batch(
    a: &Args,
    connector: &TlsConnector,
    name: &ServerName<'static>,
    count: usize,
    close: bool,
) -> Result<Batch, String> {
    let sources: Vec<IpAddr> = (1..=a.sources.max(1))
        .map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 1, n)))
        .collect();
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
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
            let r = match r {
                Ok(mut s) if close => {
                    let answered = alive(&mut s).await;
                    let what = negotiated(&s);
                    let _ = s.shutdown().await;
                    if answered {
                        Ok((None, what))
                    } else {
                        Err("no keep-alive answer".to_string())
                    }
                }
                Ok(s) => {
                    let what = negotiated(&s);
                    Ok((Some(s), what))
                }
                Err(e) => Err(e.kind().to_string()),
            };
            drop(permit);
            r
        }));
    }
    let mut batch = Batch {
        held: Vec::with_capacity(if close { 0 } else { count }),
        failures: BTreeMap::new(),
        seconds: 0.0,
        negotiated: "tls=- suite=- kx=-".into(),
    };
    for t in tasks {
        match t.await {
            Ok(Ok((held, what))) => {
                batch.negotiated = what;
                batch.held.extend(held);
            }
            Ok(Err(e)) => *batch.failures.entry(e).or_default() += 1,
            Err(e) => *batch.failures.entry(e.to_string()).or_default() += 1,
        }
    }
    batch.seconds = started.elapsed().as_secs_f64();
    Ok(batch)
}

async fn run(a: Args) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let connector = TlsConnector::from(client_config(&root.join("certs"), &a.cert, a.no_verify)?);
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
    let result = measure(&a, &connector, &name, pid).await;
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
    result
}

async fn measure(
    a: &Args,
    connector: &TlsConnector,
    name: &ServerName<'static>,
    pid: u32,
) -> Result<(), String> {
    let up = Instant::now();
    while tokio::net::TcpStream::connect(a.target).await.is_err() {
        if up.elapsed() > Duration::from_secs(20) {
            return Err(format!("nothing listens on {} after 20 s", a.target));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gone = || format!("the proxy (PID {pid}) is gone");

    if let Some(n) = a.handshakes {
        let b = open_batch(a, connector, name, n, true).await?;
        let done = n - b.failures.values().sum::<usize>();
        proc_tree::memory(pid).ok_or_else(gone)?;
        println!(
            "HANDSHAKES proxy_pid={pid} concurrency={} done={done} failed={} seconds={:.2} handshakes_per_s={:.0} {}",
            a.concurrency,
            failures_field(&b.failures),
            b.seconds,
            done as f64 / b.seconds,
            b.negotiated,
        );
        return Ok(());
    }

    let before = proc_tree::memory(pid).ok_or_else(gone)?;
    let mut b = open_batch(a, connector, name, a.connections, false).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = proc_tree::memory(pid).ok_or_else(gone)?;
    let stride = (b.held.len() / 100).max(1);
    let probed = b.held.len().div_ceil(stride).min(100);
    let mut alive_count = 0;
    for s in b.held.iter_mut().step_by(stride).take(100) {
        alive_count += alive(s).await as usize;
    }
    let held = b.held.len().max(1) as u64;
    println!(
        "IDLE proxy_pid={pid} connections={} failed={} handshakes_per_s={:.0} processes={} rss_before_kb={} rss_after_kb={} pss_before_kb={} pss_after_kb={} bytes_per_connection={} pss_bytes_per_connection={} alive_after_hold={alive_count}/{probed} {}",
        b.held.len(),
        failures_field(&b.failures),
        b.held.len() as f64 / b.seconds,
        after.processes,
        before.rss_kb,
        after.rss_kb,
        before.pss_kb,
        after.pss_kb,
        after.rss_kb.saturating_sub(before.rss_kb) * 1024 / held,
        after.pss_kb.saturating_sub(before.pss_kb) * 1024 / held,
        b.negotiated,
    );
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
