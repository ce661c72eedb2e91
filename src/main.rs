//! The `sipedge` command: run the edge, check a config, make lab certificates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use sipedge::config::{Live, Snapshot};
use sipedge::edge::{Edge, Sockets};

mod load_cli;

#[derive(Parser)]
#[command(
    name = "sipedge",
    version,
    about = "A SIP/TLS Access Edge for Lync 2013 / Skype for Business federation labs"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge until SIGINT/SIGTERM; SIGHUP reloads the config and certificates.
    Run {
        /// The configuration file.
        #[arg(long, default_value = "config/lab.toml")]
        config: PathBuf,
    },
    /// Run the whole lab in one process: the edge, every simulated peer of the DESIGN
    /// topology, the lab zone and the admin endpoint (with PIC provisioning), until
    /// SIGINT/SIGTERM. Run it from the repository: the default config is config/lab.toml
    /// (certificates from certs/).
    Lab {
        /// The lab configuration (config/lab-pre-pic.toml for the lab before the seed procedure).
        #[arg(long, default_value = "config/lab.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file without starting anything.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Show what the edge would do with a request, and why, without sending anything.
    Explain {
        /// The configuration file.
        #[arg(long, default_value = "config/lab.toml")]
        config: PathBuf,
        /// From URI, e.g. sip:alice@contoso.test.
        #[arg(long)]
        from: String,
        /// Request-URI and To, e.g. sip:x@live.com.
        #[arg(long)]
        to: String,
        /// The interface the request arrives on.
        #[arg(long, default_value = "internal")]
        interface: sipedge::transport::Interface,
        /// A name in the sender's certificate (repeat for several).
        #[arg(long = "peer-cert-name")]
        peer_cert_names: Vec<String>,
        /// SIP method.
        #[arg(long, default_value = "MESSAGE")]
        method: String,
        /// Media offered in an SDP body: audio, video or audio,video.
        #[arg(long)]
        sdp: Option<String>,
    },
    /// Run one simulated peer of the lab topology alone (mutual TLS with its lab certificate).
    Peer {
        /// skype, partner, pool or hosting.
        #[arg(long)]
        role: sipedge::lab::topology::Role,
        /// The lab configuration; certificates are read from the `certs/` beside it.
        #[arg(long, default_value = "config/lab.toml")]
        config: PathBuf,
        /// Answer each IM with a MESSAGE back through the edge.
        #[arg(long)]
        echo: bool,
        /// Skype only: start with no organisation provisioned (PIC refuses with 403 + 1080).
        #[arg(long)]
        unprovisioned: bool,
    },
    /// Run a Management Shell cmdlet on a running edge's admin endpoint.
    ///
    /// In a running `sipedge lab` three more commands are recognised before cmdlets:
    /// `provision --agreement N --edge-fqdn F --domain D [--domain ...]
    /// [--additional-fqdn F ...] [--contact C]`, `provisioning-status` and
    /// `advance-clock 30d`.
    ///
    /// The line is sent as typed, e.g. `sipedge admin Remove-CsPublicProvider -Identity
    /// Messenger`. Without --endpoint/--token the state file the edge wrote at start is read
    /// ($XDG_RUNTIME_DIR/sipedge/admin.json or /tmp/sipedge-<uid>/admin.json). The flags may
    /// also follow the line.
    Admin {
        /// The admin endpoint, e.g. http://127.0.0.1:5080.
        #[arg(long)]
        endpoint: Option<String>,
        /// The bearer token ([admin] token, or the generated one in the state file).
        #[arg(long)]
        token: Option<String>,
        /// Also write the change into the edge's config file, keeping its comments.
        #[arg(long)]
        persist: bool,
        /// The cmdlet line.
        #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
        line: Vec<String>,
    },
    /// Generate SIP load against a proxy (or a sink) and report rate, latency and errors.
    Load(load_cli::LoadArgs),
    /// Answer every SIP request at once, statelessly (a stand-in UAS for load tests).
    Sink(load_cli::SinkArgs),
    /// Regenerate the lab CA and one certificate per lab FQDN.
    Certs {
        /// Output directory.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::Lab { config } => lab(config),
        Command::CheckConfig { file } => check_config(&file),
        Command::Certs { out } => certs(&out),
        Command::Load(args) => load_cli::load(args),
        Command::Sink(args) => load_cli::sink(args),
        Command::Peer {
            role,
            config,
            echo,
            unprovisioned,
        } => peer(role, &config, echo, unprovisioned),
        Command::Admin {
            endpoint,
            token,
            persist,
            line,
        } => admin(endpoint, token, persist, line),
        Command::Explain {
            config,
            from,
            to,
            interface,
            peer_cert_names,
            method,
            sdp,
        } => explain(
            &config,
            sipedge::explain::ExplainRequest {
                from,
                to,
                method: method.to_ascii_uppercase(),
                interface,
                peer_cert_names,
                sdp,
            },
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sipedge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,hickory_server=warn,hickory_proto=warn,hickory_resolver=warn",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    match Snapshot::load(file) {
        Ok(s) => {
            println!(
                "{}: OK (local domains: {}; external {} / internal {})",
                file.display(),
                s.edge.local_domains.join(", "),
                s.external.fqdn,
                s.internal.fqdn
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn explain(
    config: &std::path::Path,
    req: sipedge::explain::ExplainRequest,
) -> anyhow::Result<ExitCode> {
    let snapshot = Snapshot::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let text = runtime.block_on(sipedge::explain::explain(&snapshot, &req))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// `sipedge admin`: sends the line, prints the answer, exit 0 on success and 1 otherwise.
fn admin(
    mut endpoint: Option<String>,
    mut token: Option<String>,
    mut persist: bool,
    args: Vec<String>,
) -> anyhow::Result<ExitCode> {
    // Flags after the line arrive inside it (the line takes every word after the cmdlet).
    let mut words = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--persist" => persist = true,
            "--endpoint" => endpoint = it.next(),
            "--token" => token = it.next(),
            _ => match (a.strip_prefix("--endpoint="), a.strip_prefix("--token=")) {
                (Some(e), _) => endpoint = Some(e.to_string()),
                (_, Some(t)) => token = Some(t.to_string()),
                _ => words.push(a),
            },
        }
    }
    let (method, path, line) = match admin_request(&words, persist)? {
        Some(r) => r,
        None => (
            "POST",
            if persist {
                "/cmdlet?persist=1"
            } else {
                "/cmdlet"
            },
            sipedge::admin::cmdlet_line(&words),
        ),
    };
    let (endpoint, token) = match (endpoint, token) {
        (Some(e), Some(t)) => (e, t),
        (e, t) => {
            let path = sipedge::admin::state::default_path();
            let (se, st) = sipedge::admin::state::read(&path).with_context(|| {
                format!(
                    "no --endpoint/--token given and no running edge found in {}",
                    path.display()
                )
            })?;
            (e.unwrap_or(se), t.unwrap_or(st))
        }
    };
    let (status, body) = sipedge::admin::http::send(&endpoint, method, path, Some(&token), &line)
        .with_context(|| format!("cannot reach the admin endpoint {endpoint}"))?;
    if status == 200 {
        print!("{body}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprint!("{body}");
        Ok(ExitCode::FAILURE)
    }
}

/// The lab keywords of `sipedge admin` (recognised before cmdlet lines): the method,
/// route and body to send; `None` for a cmdlet line.
fn admin_request(
    words: &[String],
    persist: bool,
) -> anyhow::Result<Option<(&'static str, &'static str, String)>> {
    let Some((first, rest)) = words.split_first() else {
        return Ok(None);
    };
    let keyword = first.to_ascii_lowercase();
    if !matches!(
        keyword.as_str(),
        "provision" | "provisioning-status" | "advance-clock"
    ) {
        return Ok(None);
    }
    anyhow::ensure!(!persist, "--persist applies to cmdlets only");
    match keyword.as_str() {
        "provisioning-status" => {
            anyhow::ensure!(rest.is_empty(), "provisioning-status takes no arguments");
            Ok(Some(("GET", "/provisioning-status", String::new())))
        }
        "advance-clock" => match rest {
            [d] => Ok(Some(("POST", "/clock/advance", d.clone()))),
            _ => anyhow::bail!("usage: sipedge admin advance-clock <duration, e.g. 30d>"),
        },
        _ => {
            let mut body = String::new();
            let mut it = rest.iter();
            while let Some(flag) = it.next() {
                let (name, inline) = match flag.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (flag.as_str(), None),
                };
                let key = match name {
                    "--agreement" => "agreement",
                    "--edge-fqdn" => "edge_fqdn",
                    "--domain" => "domain",
                    "--additional-fqdn" => "additional_fqdn",
                    "--contact" => "contact",
                    other => anyhow::bail!(
                        "provision: unknown option `{other}`; valid: --agreement, --edge-fqdn, --domain, --additional-fqdn, --contact"
                    ),
                };
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .with_context(|| format!("provision: {name} needs a value"))?,
                };
                body.push_str(&format!("{key}={value}\n"));
            }
            Ok(Some(("POST", "/provision", body)))
        }
    }
}

fn certs(out: &std::path::Path) -> anyhow::Result<ExitCode> {
    let written = sipedge::lab::certs::write_lab_set(out)
        .with_context(|| format!("writing lab certificates to {}", out.display()))?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn peer(
    role: sipedge::lab::topology::Role,
    config: &std::path::Path,
    echo: bool,
    unprovisioned: bool,
) -> anyhow::Result<ExitCode> {
    use sipedge::lab::{peer, pic, topology};
    let spec = role.spec();
    let tls = match spec.transport {
        sipedge::transport::Transport::Tls => {
            let dir = topology::certs_dir_for(config);
            Some(
                peer::PeerTls::from_lab_dir(&dir, spec.fqdn).with_context(|| {
                    format!("loading {} certificates from {}", spec.fqdn, dir.display())
                })?,
            )
        }
        _ => None,
    };
    let mut peer_spec = peer::PeerSpec::for_role(role).echo(echo);
    if role == topology::Role::Skype && unprovisioned {
        peer_spec = peer_spec.gated(peer::Gate {
            store: Arc::new(pic::Provisioning::default()),
            clock: Arc::new(pic::LabClock::wall(1)),
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let addr = spec.socket_addr();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let _peer = peer::SimPeer::start(peer_spec, listener, tls);
        println!(
            "{role}: {} listening on {addr} ({})",
            spec.fqdn, spec.transport
        );
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok(ExitCode::SUCCESS)
    })
}

fn run(config: PathBuf) -> anyhow::Result<ExitCode> {
    let snapshot = Snapshot::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let drain = snapshot.edge.drain_timeout;
        let tls = sipedge::tls_store::TlsStore::from_snapshot(&snapshot)
            .context("loading TLS material")?;
        let sockets = Sockets::bind(&snapshot).await?;
        let live = Arc::new(Live::new(snapshot));
        let edge = Edge::start(
            live.clone(),
            sockets,
            tls.clone()
                .map(|t| t as Arc<dyn sipedge::transport::TlsSource>),
        )?;
        let state = write_admin_state(edge.admin_addr(), edge.admin_token());
        let waited = wait_for_signals(&config, &live, tls.as_deref()).await;
        if let Some(p) = state {
            let _ = std::fs::remove_file(p);
        }
        waited?;
        tracing::info!(
            deadline_ms = drain.as_millis() as u64,
            "shutting down: draining in-flight transactions"
        );
        let report = edge.shutdown(drain).await;
        tracing::info!(
            abandoned = report.abandoned,
            took_ms = report.took.as_millis() as u64,
            "stopped"
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Writes the admin state file so `sipedge admin` finds this process; its path, if written.
fn write_admin_state(addr: Option<std::net::SocketAddr>, token: Option<&str>) -> Option<PathBuf> {
    let (addr, token) = (addr?, token?);
    let path = sipedge::admin::state::default_path();
    match sipedge::admin::state::write(&path, &format!("http://{addr}"), token) {
        Ok(()) => {
            tracing::info!(state = %path.display(), "admin endpoint and token written");
            Some(path)
        }
        Err(e) => {
            tracing::warn!(error = %e, state = %path.display(), "cannot write the admin state file; use sipedge admin --endpoint/--token");
            None
        }
    }
}

/// `sipedge lab`: everything in one process until SIGINT/SIGTERM.
fn lab(config: PathBuf) -> anyhow::Result<ExitCode> {
    use sipedge::lab::run::{Lab, LabOptions};
    let snapshot = Snapshot::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let drain = snapshot.edge.drain_timeout;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let lab = Lab::start(snapshot, LabOptions::for_config(&config)).await?;
        let state = write_admin_state(lab.admin_addr(), lab.admin_token());
        println!("sipedge lab ({})\n", config.display());
        print!("{}", lab.table());
        println!("\nTry next:");
        println!("  sipedge admin Get-CsPublicProvider");
        println!("  sipedge admin provisioning-status");
        println!(
            "  sipedge explain --config {} --from sip:alice@contoso.test --to sip:sam@live.com",
            config.display()
        );
        println!("\nCtrl-C stops the lab.");
        let waited = wait_for_stop().await;
        if let Some(p) = state {
            let _ = std::fs::remove_file(p);
        }
        waited?;
        tracing::info!("shutting down the lab");
        let report = lab.shutdown(drain).await;
        tracing::info!(abandoned = report.abandoned, "lab stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Waits for SIGINT or SIGTERM.
async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    }
}

/// Serves until SIGINT or SIGTERM; SIGHUP reloads the config file and certificates.
async fn wait_for_signals(
    config: &std::path::Path,
    live: &Live,
    tls: Option<&sipedge::tls_store::TlsStore>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => match Snapshot::load(config) {
                Ok(s) => {
                    if let Some(t) = tls {
                        if let Err(e) = t.reload(&s) {
                            tracing::error!(error = %e, "certificate reload failed; keeping the old certificates");
                            continue;
                        }
                    }
                    live.store(s);
                    tracing::info!(config = %config.display(), "configuration reloaded");
                }
                Err(e) => tracing::error!(error = %e, "reload failed; keeping the running configuration"),
            },
        }
    }
}
