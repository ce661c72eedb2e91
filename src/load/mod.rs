//! `sipedge load`: a SIP load generator, and `sipedge sink`, the trivial responder it is
//! measured against.
//!
//! The generator keeps one writer and one reader task per connection (UDP socket, TCP or
//! TLS connection). Requests come from templates rendered once per connection with only
//! the transaction id patched; answers are framed and indexed with `crate::sip` (no
//! full parse). Open loop sends on a fixed schedule and measures latency from the
//! scheduled time, so a slow proxy cannot hide queueing by slowing the generator down.

pub mod chart;
mod client;
pub mod sink;
pub mod stats;
pub mod template;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::tls::{TlsError, TlsMaterial};
use crate::transport::Transport;
use client::{Conn, Out, Pace, RunShared};
pub use client::{T1, T2};
pub use stats::{Second, Summary};
pub use template::Scenario;

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "give a rate, a concurrency, or both (a closed loop capped at the rate), each above 0"
    )]
    BadPace,
    #[error("--connections must be between 1 and 65535")]
    BadConnections,
    #[error("binding a socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} ({name}): {source}")]
    Handshake {
        addr: SocketAddr,
        name: String,
        source: std::io::Error,
    },
    #[error("TLS material: {0}")]
    Tls(#[from] TlsError),
    #[error("TLS transport needs a certificate (--cert)")]
    NoCert,
    #[error("bad TLS server name `{0}`")]
    ServerName(String),
}

/// A lab certificate by name: `<dir>/<name>.crt` and `.key`, trusting `<dir>/ca.crt` and
/// any extra anchors.
#[derive(Debug, Clone)]
pub struct CertChoice {
    pub dir: PathBuf,
    pub name: String,
    pub extra_anchors: Vec<PathBuf>,
}

impl CertChoice {
    pub fn load(&self) -> Result<TlsMaterial, TlsError> {
        let mut anchors = vec![self.dir.join("ca.crt")];
        anchors.extend(self.extra_anchors.iter().cloned());
        TlsMaterial::load(
            &self.dir.join(format!("{}.crt", self.name)),
            &self.dir.join(format!("{}.key", self.name)),
            &anchors,
            &[],
        )
    }
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub target: SocketAddr,
    pub transport: Transport,
    pub cert: Option<CertChoice>,
    /// The name the server's certificate must carry; default the target's IP.
    pub server_name: Option<String>,
    /// Open loop at this many transactions per second; with `concurrency`, the closed
    /// loop's cap.
    pub rate: Option<f64>,
    /// Closed loop with this many outstanding.
    pub concurrency: Option<usize>,
    pub duration: Duration,
    pub connections: usize,
    pub scenario: Scenario,
    pub from: String,
    pub to: String,
    /// A transaction without its final answer after this long is a timeout.
    pub timeout: Duration,
    /// Print a progress line on stderr once a second.
    pub progress: bool,
    /// An `ms-edge-proxy-message-trust` value for the initial requests (what a remote
    /// Access Edge marks its requests with), or none.
    pub trust: Option<String>,
}

/// Starts a connection's reader and writer once every connection exists.
type StartIo = Box<dyn FnOnce(Arc<Vec<Arc<Conn>>>, Arc<RunShared>, CancellationToken) + Send>;

/// Runs the load once and returns its summary.
pub async fn run(cfg: &LoadConfig) -> Result<Summary, LoadError> {
    let connections = cfg.connections;
    if connections == 0 || connections > 0xffff {
        return Err(LoadError::BadConnections);
    }
    let paces: Vec<Pace> = match (cfg.rate, cfg.concurrency) {
        (Some(r), None) if r > 0.0 && r.is_finite() => {
            // A whole number of transactions, so `sent` is exactly rate × duration.
            let total = (r * cfg.duration.as_secs_f64()).round() as u64;
            (0..connections)
                .map(|k| Pace::Every {
                    rate: r,
                    first: k as u64,
                    stride: connections as u64,
                    total,
                })
                .collect()
        }
        (r, Some(n)) if n > 0 && r.is_none_or(|r| r > 0.0 && r.is_finite()) => (0..connections)
            .map(|k| Pace::Outstanding(n / connections + usize::from(k < n % connections)))
            .collect(),
        _ => return Err(LoadError::BadPace),
    };
    let run_token = format!("{:08x}", rand::random::<u32>());
    let stop = CancellationToken::new();
    let local_ip: std::net::IpAddr = if cfg.target.is_ipv4() {
        [127, 0, 0, 1].into()
    } else {
        std::net::Ipv6Addr::LOCALHOST.into()
    };
    let local_ip = if cfg.target.ip().is_loopback() {
        local_ip
    } else {
        unspecified(cfg.target)
    };

    // Where NOTIFYs for our subscriptions can arrive when they do not come back on the
    // connection that carried the SUBSCRIBE (a proxy opens a connection to our Contact).
    let listener = if cfg.transport.is_stream() && cfg.scenario == Scenario::Subscribe {
        let addr = SocketAddr::new(local_ip, 0);
        Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| LoadError::Bind { addr, source })?,
        )
    } else {
        None
    };
    let listen_addr = listener.as_ref().and_then(|l| l.local_addr().ok());

    let tls = match cfg.transport {
        Transport::Tls => {
            let m = cfg.cert.as_ref().ok_or(LoadError::NoCert)?.load()?;
            Some(m)
        }
        _ => None,
    };

    let mut conns = Vec::with_capacity(connections);
    enum Io {
        Udp(Arc<UdpSocket>),
        Stream(StartIo),
    }
    let mut ios = Vec::with_capacity(connections);
    for (index, pace) in paces.iter().enumerate() {
        let party = |local: SocketAddr, contact: SocketAddr| template::Party {
            from: cfg.from.clone(),
            to: cfg.to.clone(),
            transport: cfg.transport,
            local,
            contact,
            run: run_token.clone(),
            trust: cfg.trust.clone(),
        };
        match cfg.transport {
            Transport::Udp => {
                let addr = SocketAddr::new(local_ip, 0);
                let s = crate::edge::bind_udp(addr)
                    .map_err(|source| LoadError::Bind { addr, source })?;
                let local = s
                    .local_addr()
                    .map_err(|source| LoadError::Bind { addr, source })?;
                let s = Arc::new(s);
                conns.push(Arc::new(Conn::new(
                    index,
                    party(local, local),
                    Out::Udp(s.clone(), cfg.target),
                    *pace,
                )));
                ios.push(Io::Udp(s));
            }
            Transport::Tcp | Transport::Tls => {
                let tcp =
                    TcpStream::connect(cfg.target)
                        .await
                        .map_err(|source| LoadError::Connect {
                            addr: cfg.target,
                            source,
                        })?;
                let _ = tcp.set_nodelay(true);
                let local = tcp.local_addr().map_err(|source| LoadError::Connect {
                    addr: cfg.target,
                    source,
                })?;
                let (tx, rx) = mpsc::unbounded_channel();
                let contact = listen_addr.unwrap_or(local);
                conns.push(Arc::new(Conn::new(
                    index,
                    party(local, contact),
                    Out::Stream(tx.clone()),
                    *pace,
                )));
                let reply = Out::Stream(tx);
                let start_io: StartIo = match &tls {
                    None => {
                        let (rd, wr) = tcp.into_split();
                        Box::new(move |c, r, s| {
                            tokio::spawn(client::stream_writer(wr, rx));
                            tokio::spawn(client::stream_reader(rd, reply, c, r, s));
                        })
                    }
                    Some(m) => {
                        let name = cfg
                            .server_name
                            .clone()
                            .unwrap_or_else(|| cfg.target.ip().to_string());
                        let sn = crate::tls::server_name(&name)
                            .map_err(|_| LoadError::ServerName(name.clone()))?;
                        let connector =
                            tokio_rustls::TlsConnector::from(crate::tls::client_config(m)?);
                        let stream = connector.connect(sn, tcp).await.map_err(|source| {
                            LoadError::Handshake {
                                addr: cfg.target,
                                name: name.clone(),
                                source,
                            }
                        })?;
                        let (rd, wr) = tokio::io::split(stream);
                        Box::new(move |c, r, s| {
                            tokio::spawn(client::stream_writer(wr, rx));
                            tokio::spawn(client::stream_reader(rd, reply, c, r, s));
                        })
                    }
                };
                ios.push(Io::Stream(start_io));
            }
        }
    }
    let conns = Arc::new(conns);

    // Start a little ahead so every task is waiting when the schedule begins.
    let start = Instant::now() + Duration::from_millis(20);
    let run = Arc::new(RunShared {
        scenario: cfg.scenario,
        reliable: cfg.transport.is_stream(),
        timeout: cfg.timeout,
        start,
        end: start + cfg.duration,
        writers_left: AtomicUsize::new(connections),
        run_token,
        cap: match (cfg.rate, cfg.concurrency) {
            (Some(r), Some(_)) => Some(std::sync::Mutex::new(client::RateCap::new(r))),
            _ => None,
        },
    });

    if let Some(l) = listener {
        tokio::spawn(accept_notifies(
            l,
            tls.clone(),
            conns.clone(),
            run.clone(),
            stop.clone(),
        ));
    }
    for io in ios {
        match io {
            Io::Udp(s) => {
                tokio::spawn(client::udp_reader(
                    s,
                    conns.clone(),
                    run.clone(),
                    stop.clone(),
                ));
            }
            Io::Stream(f) => f(conns.clone(), run.clone(), stop.clone()),
        }
    }
    let mut writers = Vec::new();
    let mut timers = Vec::new();
    for (c, pace) in conns.iter().zip(paces) {
        writers.push(tokio::spawn(client::writer(c.clone(), run.clone(), pace)));
        timers.push(tokio::spawn(client::timers(c.clone(), run.clone())));
    }

    let per_second = report_seconds(&conns, &run, cfg.progress, &timers).await;
    for t in timers {
        let _ = t.await;
    }
    for w in writers {
        let _ = w.await;
    }
    stop.cancel();

    let mut total = stats::Recorder::default();
    for c in conns.iter() {
        total.merge(&c.lock().rec);
    }
    // What is still in the connections' recorders arrived after the last full second.
    let overall = per_second_total(&per_second, total);
    let duration_s = cfg.duration.as_secs_f64();
    Ok(Summary {
        target: cfg.target.to_string(),
        transport: cfg.transport.to_string(),
        scenario: cfg.scenario.as_str().into(),
        mode: match (cfg.rate, cfg.concurrency) {
            (Some(_), Some(_)) => "concurrency-capped",
            (Some(_), None) => "rate",
            _ => "concurrency",
        }
        .into(),
        rate: cfg.rate.unwrap_or(0.0),
        concurrency: cfg.concurrency.unwrap_or(0),
        connections,
        duration_s,
        sent: overall.sent,
        ok: overall.ok,
        failed: overall.failed(),
        timeouts: overall.timeouts,
        errors: overall
            .errors
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        retransmissions: overall.retransmissions,
        achieved_rate: overall.ok as f64 / duration_s,
        latency_ms: overall.answered().then(|| overall.latency_ms()),
        per_second: per_second.into_iter().map(|(s, _)| s).collect(),
    })
}

fn unspecified(target: SocketAddr) -> std::net::IpAddr {
    if target.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    }
}

/// The per-second recorders added up, plus what was left in the connections at the end.
fn per_second_total(
    seconds: &[(Second, stats::Recorder)],
    rest: stats::Recorder,
) -> stats::Recorder {
    let mut total = rest;
    for (_, r) in seconds {
        total.merge(r);
    }
    total
}

/// Once a second: takes each connection's counters, prints the progress line and keeps the
/// second for the chart; returns when every timer task has finished.
async fn report_seconds(
    conns: &Arc<Vec<Arc<Conn>>>,
    run: &RunShared,
    progress: bool,
    timers: &[tokio::task::JoinHandle<()>],
) -> Vec<(Second, stats::Recorder)> {
    let mut out = Vec::new();
    let mut tick =
        tokio::time::interval_at(run.start + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        let finished = timers.iter().all(|t| t.is_finished());
        if finished {
            break;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
        }
        let mut sec = stats::Recorder::default();
        let mut outstanding = 0;
        for c in conns.iter() {
            let mut st = c.lock();
            sec.merge(&st.rec);
            st.rec = stats::Recorder::default();
            drop(st);
            outstanding += c.outstanding();
        }
        let t = run.start.elapsed().as_secs_f64();
        let l = sec.latency_ms();
        if progress {
            eprintln!(
                "t={t:>5.1}s sent={} ok={} failed={} retrans={} outstanding={} p50={:.2}ms p99={:.2}ms",
                sec.sent,
                sec.ok,
                sec.failed(),
                sec.retransmissions,
                outstanding,
                l.p50,
                l.p99
            );
        }
        out.push((
            Second {
                t,
                sent: sec.sent,
                ok: sec.ok,
                failed: sec.failed(),
                p99_ms: l.p99,
            },
            sec,
        ));
    }
    out
}

/// Accepts the connections a proxy opens to our Contact and answers what arrives on them.
async fn accept_notifies(
    listener: TcpListener,
    tls: Option<TlsMaterial>,
    conns: Arc<Vec<Arc<Conn>>>,
    run: Arc<RunShared>,
    stop: CancellationToken,
) {
    let acceptor = tls
        .as_ref()
        .and_then(|m| crate::tls::server_config(m, false).ok())
        .map(tokio_rustls::TlsAcceptor::from);
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = stop.cancelled() => return,
        };
        let (conns, run, stop, acceptor) =
            (conns.clone(), run.clone(), stop.clone(), acceptor.clone());
        tokio::spawn(async move {
            let (tx, rx) = mpsc::unbounded_channel();
            match acceptor {
                None => {
                    let (rd, wr) = tcp.into_split();
                    tokio::spawn(client::stream_writer(wr, rx));
                    client::stream_reader(rd, Out::Stream(tx), conns, run, stop).await;
                }
                Some(a) => {
                    let Ok(s) = a.accept(tcp).await else { return };
                    let (rd, wr) = tokio::io::split(s);
                    tokio::spawn(client::stream_writer(wr, rx));
                    client::stream_reader(rd, Out::Stream(tx), conns, run, stop).await;
                }
            }
        });
    }
}

/// `--sweep START:END:STEP`: the offered rates of a sweep.
pub fn sweep_rates(spec: &str) -> Result<Vec<f64>, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [a, b, s] = parts.as_slice() else {
        return Err(format!(
            "--sweep `{spec}`: expected START:END:STEP, e.g. 1000:8000:1000"
        ));
    };
    let num = |x: &str| {
        x.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0 && v.is_finite())
            .ok_or_else(|| format!("--sweep `{spec}`: `{x}` is not a positive number"))
    };
    let (a, b, s) = (num(a)?, num(b)?, num(s)?);
    if b < a {
        return Err(format!("--sweep `{spec}`: END is below START"));
    }
    let steps = ((b - a) / s).floor() as usize + 1;
    if steps > 1000 {
        return Err(format!("--sweep `{spec}`: more than 1000 steps"));
    }
    Ok((0..steps).map(|i| a + s * i as f64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_spec_is_parsed_and_checked() {
        assert_eq!(
            sweep_rates("100:300:100").unwrap(),
            vec![100.0, 200.0, 300.0]
        );
        assert!(sweep_rates("100:50:10").is_err());
        assert!(sweep_rates("1:2").is_err());
        assert!(sweep_rates("1:x:1").is_err());
        assert!(sweep_rates("1:100000:1").is_err());
    }
}
