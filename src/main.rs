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
        /// The configuration file [default: the embedded lab config, see `lab`].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the whole lab in one process: the edge, every simulated peer of the DESIGN
    /// topology, the lab zone and the admin endpoint (with PIC provisioning), until
    /// SIGINT/SIGTERM.
    ///
    /// Without --config it runs the lab config built into the binary (equal to
    /// config/lab.toml), written with the lab zone to a private per-user directory
    /// ($XDG_DATA_HOME/sipedge/lab, else ~/.local/share/sipedge/lab), where the lab
    /// certificates are generated on first use; so it runs from any directory.
    Lab {
        /// The lab configuration (config/lab-pre-pic.toml for the lab before the seed
        /// procedure) [default: the embedded one].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Bind every listener (edge, peers, zone, admin) on an ephemeral port, e.g. to run
        /// beside another lab or in a test.
        #[arg(long)]
        ephemeral: bool,
        /// Print the configuration the lab would run and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Validate a configuration file without starting anything.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Show what the edge would do with a request, and why, without sending anything.
    Explain {
        #[command(flatten)]
        ends: Ends,
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
        /// The lab configuration; certificates are read from the `certs/` beside it
        /// [default: the embedded lab config, see `lab`].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Answer each IM with a MESSAGE back through the edge.
        #[arg(long)]
        echo: bool,
        /// Skype only: start with no organisation provisioned (PIC refuses with 403 + 1080).
        #[arg(long)]
        unprovisioned: bool,
    },
    /// Run a Management Shell cmdlet on a running edge's admin endpoint.
    ///
    /// In a running `sipedge lab` more commands are recognised before cmdlets:
    /// `provision --agreement N --edge-fqdn F --domain D [--domain ...]
    /// [--additional-fqdn F ...] [--contact C]`, `provisioning-status`,
    /// `advance-clock 30d`, and `fault <role> <fault> [args]` (roles: skype, partner,
    /// pool, hosting; faults: delay MS, drop, status CODE [--diagnostics TEXT],
    /// refuse-tls, wrong-cert, dns-missing, dns-timeout, clear; `fault` alone lists them).
    ///
    /// The line is sent as typed, e.g. `sipedge admin Remove-CsPublicProvider -Identity
    /// Messenger`. Without --endpoint/--token the state file the edge wrote at start is read
    /// ($XDG_RUNTIME_DIR/sipedge/admin.json or /tmp/sipedge-<uid>/admin.json). The flags may
    /// also follow the line.
    ///
    /// Two more read what the edge saw: `decisions [N]` (the last N decisions with their
    /// trail of checks, default 20) and `metrics` (the counters, Prometheus text).
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
    /// Send one request to the edge of a config and print the response status, its
    /// ms-diagnostics and the trust header that arrived at the far side (when that is a
    /// simulated peer). Exit 0 on 2xx, 1 otherwise.
    ///
    /// An INVITE is acknowledged, and ended with a BYE after a 2xx; a SUBSCRIBE is a
    /// one-time fetch (Expires: 0). TLS presents a lab certificate from the certs/ beside
    /// the config.
    Send {
        #[command(flatten)]
        ends: Ends,
        /// MESSAGE, OPTIONS, INVITE or SUBSCRIBE.
        #[arg(long, default_value = "MESSAGE")]
        method: sipedge::send::SendMethod,
        /// The edge interface the request enters [default: internal when From is one of
        /// the edge's domains, external otherwise].
        #[arg(long)]
        via: Option<sipedge::transport::Interface>,
        /// udp, tcp or tls [default: tls when the interface listens for it, else tcp, else udp].
        #[arg(long)]
        transport: Option<sipedge::transport::Transport>,
        /// The lab certificate to present over TLS (certs/NAME.crt) [default: the pool's
        /// for internal, the partner's for external].
        #[arg(long)]
        cert: Option<String>,
        /// The body (MESSAGE text; for INVITE it replaces the SDP offer).
        #[arg(long)]
        body: Option<String>,
        /// Seconds to wait for the final response.
        #[arg(long, default_value_t = sipedge::send::DEFAULT_TIMEOUT.as_secs())]
        timeout: u64,
        /// The edge's address for that interface and transport when it differs from the
        /// config's (`sipedge lab --ephemeral` prints it).
        #[arg(long)]
        edge: Option<std::net::SocketAddr>,
        /// The local address to send from, e.g. a loopback alias that `[lab]
        /// source_identities` maps to a partner [default: the system's choice].
        #[arg(long)]
        source: Option<std::net::IpAddr>,
    },
    /// Generate SIP load against a proxy (or a sink) and report rate, latency and errors.
    Load(load_cli::LoadArgs),
    /// Answer every SIP request at once, statelessly (a stand-in UAS for load tests).
    Sink(load_cli::SinkArgs),
    /// Put a fresh key first in a topology key file ([topology] key_file), keeping the
    /// previous sealing key for opening only; older keys are dropped.
    ///
    /// Restart every edge that reads the file afterwards (the keys are read at start):
    /// dialogs set up before this rotation keep working, those from before the previous
    /// one get 403 + 1912.
    RotateKey {
        /// The key file.
        file: PathBuf,
    },
    /// Regenerate the lab CA and one certificate per lab FQDN, and create the lab's
    /// topology key (topology.key) when it is missing.
    Certs {
        /// Output directory.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Also issue a leaf for this FQDN from the same CA (a partner's server brought
        /// into the lab, e.g. sip.partner.test); repeat for several.
        #[arg(long = "name", value_name = "FQDN")]
        names: Vec<String>,
    },
}

/// The edge's config and the two ends of a request (`explain`, `send`).
#[derive(clap::Args)]
struct Ends {
    /// The configuration file of the edge [default: the embedded lab config, see `lab`].
    #[arg(long)]
    config: Option<PathBuf>,
    /// From URI, e.g. sip:alice@contoso.test.
    #[arg(long)]
    from: String,
    /// Request-URI and To, e.g. sip:x@live.com.
    #[arg(long)]
    to: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run { config } => config_or_embedded(config).and_then(|(c, _)| run(c)),
        Command::Lab {
            config,
            ephemeral,
            print_config,
        } => lab(config, ephemeral, print_config),
        Command::CheckConfig { file } => check_config(&file),
        Command::Certs { out, names } => certs(&out, &names),
        Command::RotateKey { file } => rotate_key(&file),
        Command::Send {
            ends: Ends { config, from, to },
            method,
            via,
            transport,
            cert,
            body,
            timeout,
            edge,
            source,
        } => config_or_embedded(config).and_then(|(config, _)| {
            send(
                &config,
                sipedge::send::SendRequest {
                    from,
                    to,
                    method,
                    via,
                    transport,
                    cert,
                    body,
                    timeout: std::time::Duration::from_secs(timeout.max(1)),
                    edge,
                    source,
                },
            )
        }),
        Command::Load(args) => load_cli::load(args),
        Command::Sink(args) => load_cli::sink(args),
        Command::Peer {
            role,
            config,
            echo,
            unprovisioned,
        } => config_or_embedded(config)
            .and_then(|(config, _)| peer(role, &config, echo, unprovisioned)),
        Command::Admin {
            endpoint,
            token,
            persist,
            line,
        } => admin(endpoint, token, persist, line),
        Command::Explain {
            ends: Ends { config, from, to },
            interface,
            peer_cert_names,
            method,
            sdp,
        } => config_or_embedded(config).and_then(|(config, _)| {
            explain(
                &config,
                sipedge::explain::ExplainRequest {
                    from,
                    to,
                    method: method.to_ascii_uppercase(),
                    interface,
                    peer_cert_names,
                    sdp,
                },
            )
        }),
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
    let (method, path, line) = match (
        admin_read(&words, persist)?,
        admin_request(&words, persist)?,
    ) {
        (Some(path), _) => ("GET", path, String::new()),
        (None, Some((method, path, body))) => (method, path.to_string(), body),
        (None, None) => (
            "POST",
            if persist {
                "/cmdlet?persist=1"
            } else {
                "/cmdlet"
            }
            .to_string(),
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
    let (status, body) = sipedge::admin::http::send(&endpoint, method, &path, Some(&token), &line)
        .with_context(|| format!("cannot reach the admin endpoint {endpoint}"))?;
    if status == 200 {
        print!("{body}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprint!("{body}");
        Ok(ExitCode::FAILURE)
    }
}

/// `sipedge admin decisions [N]` and `sipedge admin metrics`: the route to read, `None`
/// for anything else.
fn admin_read(words: &[String], persist: bool) -> anyhow::Result<Option<String>> {
    let Some((first, rest)) = words.split_first() else {
        return Ok(None);
    };
    let path = match (first.to_ascii_lowercase().as_str(), rest) {
        ("decisions", []) => "/decisions".to_string(),
        ("decisions", [n]) => format!("/decisions?n={n}"),
        ("decisions", _) => anyhow::bail!("usage: sipedge admin decisions [N]"),
        ("metrics", []) => "/metrics".to_string(),
        ("metrics", _) => anyhow::bail!("usage: sipedge admin metrics"),
        _ => return Ok(None),
    };
    anyhow::ensure!(!persist, "--persist applies to cmdlets only");
    Ok(Some(path))
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
        "provision" | "provisioning-status" | "advance-clock" | "fault"
    ) {
        return Ok(None);
    }
    anyhow::ensure!(!persist, "--persist applies to cmdlets only");
    match keyword.as_str() {
        "provisioning-status" => {
            anyhow::ensure!(rest.is_empty(), "provisioning-status takes no arguments");
            Ok(Some(("GET", "/provisioning-status", String::new())))
        }
        // One argument per line, so a --diagnostics text with spaces needs no quoting;
        // the endpoint validates it and names the valid roles and faults.
        "fault" if rest.is_empty() => Ok(Some(("GET", "/lab/fault", String::new()))),
        "fault" => Ok(Some(("POST", "/lab/fault", rest.join("\n")))),
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

/// `sipedge send`: one request, the report on stdout, exit 0 on 2xx and 1 otherwise.
fn send(config: &std::path::Path, req: sipedge::send::SendRequest) -> anyhow::Result<ExitCode> {
    let snapshot = Snapshot::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let certs_dir = sipedge::lab::topology::certs_dir_for(config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outcome = runtime
        .block_on(sipedge::send::send(&snapshot, &certs_dir, &req))
        .with_context(|| format!("{} {} → {}", req.method, req.from, req.to))?;
    print!("{}", outcome.render());
    Ok(if outcome.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn certs(out: &std::path::Path, names: &[String]) -> anyhow::Result<ExitCode> {
    let written = sipedge::lab::certs::write_lab_set(out, names)
        .with_context(|| format!("writing lab certificates to {}", out.display()))?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `sipedge rotate-key`: prints the ids of the keys the file now holds, sealing key first.
fn rotate_key(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    use sipedge::proxy::topology::key_file;
    let keys = key_file::rotate(file)?;
    for (i, key) in keys.iter().enumerate() {
        let id: String = key_file::key_id(key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let role = if i == 0 { "seals" } else { "opens only" };
        println!("{}: key {id} ({role})", file.display());
    }
    println!("restart the edges that read it to use the new key");
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

/// The config a subcommand reads: the one given, or the embedded lab config written to
/// this user's lab directory (with the lab certificates, generated there when missing).
fn config_or_embedded(
    config: Option<PathBuf>,
) -> anyhow::Result<(PathBuf, Option<sipedge::lab::embedded::Prepared>)> {
    use sipedge::lab::embedded;
    if let Some(c) = config {
        return Ok((c, None));
    }
    let dir = embedded::default_dir();
    let prepared = embedded::prepare(&dir)
        .with_context(|| format!("writing the embedded lab config to {}", dir.display()))?;
    tracing::debug!(config = %prepared.config.display(), "using the embedded lab config");
    Ok((prepared.config.clone(), Some(prepared)))
}

/// `sipedge lab`: everything in one process until SIGINT/SIGTERM.
fn lab(config: Option<PathBuf>, ephemeral: bool, print_config: bool) -> anyhow::Result<ExitCode> {
    use sipedge::lab::run::{Lab, LabOptions};
    if print_config {
        match &config {
            Some(c) => print!(
                "{}",
                std::fs::read_to_string(c).with_context(|| format!("reading {}", c.display()))?
            ),
            None => print!("{}", sipedge::lab::embedded::LAB_TOML),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let given = config.is_some();
    let (config, prepared) = config_or_embedded(config)?;
    let snapshot = Snapshot::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let drain = snapshot.edge.drain_timeout;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let mut opts = LabOptions::for_config(&config);
        opts.ephemeral = ephemeral;
        let lab = Lab::start(snapshot, opts).await?;
        let state = write_admin_state(lab.admin_addr(), lab.admin_token());
        match &prepared {
            None => println!("sipedge lab ({})\n", config.display()),
            Some(p) => {
                println!(
                    "sipedge lab (the embedded config/lab.toml, written to {})",
                    config.display()
                );
                println!(
                    "certificates: {} ({})\n",
                    p.certs_dir.display(),
                    if p.generated_certs {
                        "generated now: the lab CA and one leaf per lab FQDN"
                    } else {
                        "generated at an earlier start"
                    }
                );
            }
        }
        print!("{}", lab.table());
        println!("\nTry next:");
        // With ephemeral ports the config no longer says where the edge listens.
        let edge = ephemeral
            .then(|| {
                lab.edge().local_addr(
                    sipedge::transport::Interface::Internal,
                    sipedge::transport::Transport::Tls,
                )
            })
            .flatten();
        for line in try_next(given.then_some(config.as_path()), edge) {
            println!("  {line}");
        }
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

/// Three commands that work against the running lab: send an IM through it, ask why a
/// request would be refused, and read a federation object.
fn try_next(config: Option<&std::path::Path>, edge: Option<std::net::SocketAddr>) -> [String; 3] {
    let config = config
        .map(|c| {
            let c = c.display().to_string();
            if c.contains(|ch: char| ch.is_whitespace() || ch == '\'') {
                format!(" --config '{}'", c.replace('\'', r"'\''"))
            } else {
                format!(" --config {c}")
            }
        })
        .unwrap_or_default();
    [
        format!(
            "sipedge send{config}{} --from sip:alice@contoso.test --to sip:x@live.com",
            edge.map(|a| format!(" --edge {a}")).unwrap_or_default()
        ),
        format!("sipedge explain{config} --from sip:bob@contoso.test --to sip:x@live.com"),
        "sipedge admin Get-CsPublicProvider".to_string(),
    ]
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
