//! The `load` and `sink` subcommands: argument parsing and output, the work is in
//! `sipedge::load`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use sipedge::load::{self, chart, sink, CertChoice, LoadConfig, Scenario};
use sipedge::transport::Transport;

/// `sipedge load`.
#[derive(Args)]
pub struct LoadArgs {
    /// Where to send, e.g. 127.0.0.1:5060 [default: the running edge or lab's external
    /// interface for --transport, from its state file].
    #[arg(long)]
    target: Option<SocketAddr>,
    /// The config of the running edge or lab to load (when several run).
    #[arg(long)]
    config: Option<PathBuf>,
    /// udp, tcp or tls.
    #[arg(long, default_value = "udp")]
    transport: Transport,
    /// TLS: the lab certificate to present, by name (`<certs>/<NAME>.crt` and `.key`).
    #[arg(long, default_value = "sip.fabrikam.test")]
    cert: String,
    /// Directory of the lab certificates (with ca.crt, the trust anchor) [default: the
    /// running lab's, else ./certs].
    #[arg(long)]
    certs: Option<PathBuf>,
    /// TLS: another trust anchor (PEM), e.g. the SIPp harness's CA for Kamailio.
    #[arg(long)]
    ca: Vec<PathBuf>,
    /// The ms-edge-proxy-message-trust the requests carry, or `none` [default: with the
    /// running lab as target, the verified marking of the --cert edge, as `send` does;
    /// with --target, none].
    #[arg(long)]
    trust: Option<String>,
    /// TLS: the name the server's certificate must carry (default: the target's IP).
    #[arg(long)]
    server_name: Option<String>,
    /// Open loop: transactions per second, sent on schedule whatever the answers. With
    /// --concurrency: the cap of the closed loop, at most this many new transactions per
    /// second across all connections (a token bucket holding 10 ms of it).
    #[arg(long, required_unless_present_any = ["concurrency", "sweep"])]
    rate: Option<f64>,
    /// Closed loop: transactions kept outstanding.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Seconds of sending (per step with --sweep).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Connections (TCP/TLS) or sockets (UDP) the load is spread over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// What one transaction is.
    #[arg(long, value_enum, default_value_t = Scenario::Message)]
    scenario: Scenario,
    /// From URI.
    #[arg(long, default_value = "sip:alice@fabrikam.test")]
    from: String,
    /// Request-URI and To.
    #[arg(long, default_value = "sip:bob@contoso.test")]
    to: String,
    /// Seconds without a final answer before a transaction counts as timed out.
    #[arg(long, default_value_t = 8.0)]
    timeout: f64,
    /// Print the summary as JSON on stdout (an array of steps with --sweep).
    #[arg(long)]
    json: bool,
    /// Draw an SVG chart here.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Open-loop steps START:END:STEP (rates), one run of --duration each.
    #[arg(long, conflicts_with_all = ["rate", "concurrency"])]
    sweep: Option<String>,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
    /// Failed or timed-out transactions tolerated before `load` exits 1 (a single run; a
    /// --sweep reports each step and exits 0, as it is meant to find where failures begin).
    #[arg(long, default_value_t = 0)]
    max_failures: u64,
}

/// `sipedge sink`.
#[derive(Args)]
pub struct SinkArgs {
    /// Address to listen on (port 0 picks one; the address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:5070")]
    listen: SocketAddr,
    /// udp, tcp or tls.
    #[arg(long, default_value = "udp")]
    transport: Transport,
    /// TLS: the lab certificate to present, by name.
    #[arg(long, default_value = "pool.contoso.test")]
    cert: String,
    /// Directory of the lab certificates (with ca.crt) [default: the running lab's, else
    /// ./certs].
    #[arg(long)]
    certs: Option<PathBuf>,
    /// TLS: require a client certificate from the lab CA.
    #[arg(long)]
    mtls: bool,
    /// Answer every request with this status instead of 200.
    #[arg(long, default_value_t = 200)]
    status: u16,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{name} {v}: must be a positive number of seconds"))
}

/// The running edge or lab a tool without an address talks to (its state file): the one
/// running `config`, else the only one.
fn running(
    config: Option<&std::path::Path>,
) -> anyhow::Result<Option<sipedge::admin::state::Running>> {
    let dir = sipedge::admin::state::default_dir();
    sipedge::admin::state::choose(&dir, config).map_err(anyhow::Error::msg)
}

/// The certificates a tool presents: `--certs`, else the running lab's, else ./certs.
fn certs_dir(given: Option<PathBuf>, lab: Option<&sipedge::admin::state::Running>) -> PathBuf {
    given
        .or_else(|| lab.map(|r| sipedge::lab::topology::certs_dir_for(&r.config)))
        .unwrap_or_else(|| PathBuf::from("certs"))
}

pub fn load(a: LoadArgs) -> anyhow::Result<ExitCode> {
    let lab = running(a.config.as_deref())?;
    let (target, found_server_name) = match a.target {
        Some(t) => (t, None),
        None => {
            let lab = lab.as_ref().context(
                "no --target given and no running edge or lab found (start one, or give --target ADDR)",
            )?;
            let addr = lab
                .listener(sipedge::transport::Interface::External, a.transport)
                .with_context(|| {
                    format!(
                        "{} has no external {} listener; give --target",
                        lab.describe(),
                        a.transport
                    )
                })?;
            let snap =
                sipedge::config::Snapshot::load(&lab.config).map_err(|e| anyhow::anyhow!("{e}"))?;
            (addr, Some(snap.external.fqdn.clone()))
        }
    };
    let certs = certs_dir(a.certs.clone(), lab.as_ref());
    let cfg = LoadConfig {
        target,
        transport: a.transport,
        cert: Some(CertChoice {
            dir: certs,
            name: a.cert.clone(),
            extra_anchors: a.ca.clone(),
        }),
        server_name: a.server_name.clone().or(found_server_name),
        rate: a.rate,
        concurrency: a.concurrency,
        duration: seconds("duration", a.duration)?,
        connections: a.connections,
        scenario: a.scenario,
        from: a.from.clone(),
        to: a.to.clone(),
        timeout: seconds("timeout", a.timeout)?,
        progress: !a.quiet,
        trust: match a.trust.as_deref() {
            Some(t) if t.eq_ignore_ascii_case("none") => None,
            Some(t) => Some(t.to_string()),
            None if a.target.is_none() => Some(sipedge::send::edge_marking(&a.cert)),
            None => None,
        },
    };
    let rt = runtime()?;
    let summaries = match &a.sweep {
        None => vec![rt.block_on(load::run(&cfg)).context("load run")?],
        Some(spec) => {
            let rates = load::sweep_rates(spec).map_err(anyhow::Error::msg)?;
            let mut out = Vec::new();
            for r in rates {
                let step = LoadConfig {
                    rate: Some(r),
                    concurrency: None,
                    ..cfg.clone()
                };
                if !a.quiet {
                    eprintln!("sweep step: {r}/s for {}s", a.duration);
                }
                let s = rt
                    .block_on(load::run(&step))
                    .with_context(|| format!("sweep step at {r}/s"))?;
                eprintln!("{}", s.line());
                out.push(s);
            }
            out
        }
    };
    if a.sweep.is_none() {
        eprintln!("{}", summaries[0].line());
    }
    if let Some(path) = &a.chart {
        match &a.sweep {
            Some(_) => chart::sweep(&summaries, path)?,
            None => chart::over_time(&summaries[0], path)?,
        }
    }
    if a.json {
        let text = match &a.sweep {
            Some(_) => serde_json::to_string_pretty(&summaries),
            None => serde_json::to_string_pretty(&summaries[0]),
        }
        .context("writing JSON")?;
        println!("{text}");
    }
    let s = &summaries[0];
    if a.sweep.is_none() && s.failed > a.max_failures {
        eprintln!(
            "load: {} of {} transactions failed ({} timed out), more than --max-failures {}",
            s.failed, s.sent, s.timeouts, a.max_failures
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn sink(a: SinkArgs) -> anyhow::Result<ExitCode> {
    let certs = match &a.certs {
        Some(c) => c.clone(),
        None => certs_dir(None, running(None).ok().flatten().as_ref()),
    };
    let tls = match a.transport {
        Transport::Tls => Some(
            CertChoice {
                dir: certs.clone(),
                name: a.cert.clone(),
                extra_anchors: vec![],
            }
            .load()
            .with_context(|| format!("loading certificate {} from {}", a.cert, certs.display()))?,
        ),
        _ => None,
    };
    let cfg = sink::SinkConfig {
        transport: a.transport,
        status: a.status,
        tls,
        require_client_cert: a.mtls,
    };
    let rt = runtime()?;
    rt.block_on(async move {
        let s = sink::Sink::bind(a.listen, cfg).await?;
        // Scripts and tests read the bound address from this line.
        println!("sink listening {} {}", a.transport, s.local_addr());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let stop = tokio_util::sync::CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            on_signal.cancel();
            Ok::<_, std::io::Error>(())
        });
        s.serve(stop).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
