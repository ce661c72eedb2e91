//! The `sipedge` command: run the edge, check a config, make lab certificates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use sipedge::config::{Live, Snapshot};
use sipedge::edge::{Edge, Sockets};
use sipedge::proxy::ACCESS_TARGET;

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
    /// Human-readable lines; fields as key=value, quoted the logfmt way.
    Text,
    /// One JSON object per line.
    Json,
    /// logfmt: time=, level=, target=, msg= and every field as key=value.
    Logfmt,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge until SIGINT/SIGTERM; SIGHUP reloads the config and certificates.
    Run {
        /// The configuration file [default: the embedded lab config, see `lab`].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log one INFO line per finished transaction (target sipedge::access).
        #[arg(long)]
        access_log: bool,
        #[command(flatten)]
        capture: Capture,
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
        /// Write a lab of your own into DIR (lab.toml, lab.zone, certs/) and exit; run it
        /// with `sipedge lab --config DIR/lab.toml`.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "ephemeral", "print_config"])]
        init: Option<PathBuf>,
        /// Log one INFO line per finished transaction (target sipedge::access).
        #[arg(long)]
        access_log: bool,
        #[command(flatten)]
        capture: Capture,
    },
    /// Validate a configuration file without starting anything.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Walk the chain the edge would walk to a federated domain, without a running edge:
    /// the policy, the `_sipfederationtls._tcp` SRV lookup, the same-domain rule, A/AAAA,
    /// TCP, TLS with our certificate, the partner's certificate, an OPTIONS round trip.
    ///
    /// One line per step; a failure shows the status and ms-diagnostics the edge would
    /// answer with (1008, 1009, 1010, 1047…) and what to fix. Exit 0 when the partner
    /// answered, 1 when a step failed. The same as `sipedge admin
    /// Test-CsFederatedPartner -Domain D` on a running edge.
    CheckPartner {
        /// The partner's SIP domain, e.g. fabrikam.test.
        domain: String,
        /// The configuration file of the edge [default: the embedded lab config, see `lab`].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what the edge would do with a request, and why, without sending anything.
    Explain {
        #[command(flatten)]
        ends: Ends,
        /// The interface the request arrives on [default: as `send` picks it: internal when
        /// From is one of our domains, else external].
        #[arg(long)]
        interface: Option<sipedge::transport::Interface>,
        /// A name in the sender's certificate (repeat for several) [default from outside:
        /// the certificate `send` presents, sip.fabrikam.test].
        #[arg(long = "peer-cert-name")]
        peer_cert_names: Vec<String>,
        /// The sender's ms-edge-proxy-message-trust value, or `none` [default: what `send`
        /// puts there: from outside the partner edge's verified marking, inside nothing].
        #[arg(long)]
        trust: Option<String>,
        /// SIP method.
        #[arg(long, default_value = "MESSAGE")]
        method: String,
        /// Media offered in an SDP body: audio, video or audio,video.
        #[arg(long)]
        sdp: Option<String>,
    },
    /// Run one simulated peer of the lab topology alone (mutual TLS with its lab certificate).
    Peer {
        /// skype, partner, discovered, pool, hosting or blocked.
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
    /// discovered, pool, hosting, blocked; faults: delay MS, drop, status CODE [--diagnostics TEXT],
    /// refuse-tls, wrong-cert, dns-missing, dns-timeout, clear; `fault` alone lists them).
    ///
    /// The line is sent as typed, e.g. `sipedge admin Remove-CsPublicProvider -Identity
    /// Messenger`. Without --endpoint/--token the state file the edge wrote at start is read
    /// ($XDG_RUNTIME_DIR/sipedge/edges/<pid>.json or /tmp/sipedge-<uid>/edges/): the one
    /// edge running, or the one running --config FILE. The flags may also follow the line.
    ///
    /// More read what the edge saw: `decisions [N] [--json]` (the last N decisions with
    /// their final status and trail of checks, default 20; --json for a JSON array),
    /// `trace CALL-ID [--raw]` (the call's ladder: a column for the sender, the edge's two
    /// interfaces and the far side, a row per message with the edge's decision; --raw
    /// prints the messages), `metrics` (the counters, Prometheus text) and
    /// `watch-list` (the discovered partners, watch-listed or suspicious first, and the last
    /// DiscoveredPartnerReportPeriodMinutes report); `release DOMAIN` takes a partner off
    /// the watch list and out of the suspicious throttle.
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
        /// Write the change and every other running federation object into the config
        /// file (also changes made earlier without --persist).
        #[arg(long)]
        persist_all: bool,
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
        #[arg(long, value_name = "HOST:PORT", value_parser = host_port_arg)]
        edge: Option<std::net::SocketAddr>,
        /// The local address to send from, e.g. a loopback alias that `[lab]
        /// source_identities` maps to a partner [default: the system's choice].
        #[arg(long)]
        source: Option<std::net::IpAddr>,
        /// Print the request sent and every message received (and the ACK/BYE of an INVITE).
        #[arg(short, long)]
        verbose: bool,
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
    /// Print the shell completion script for SHELL on stdout, e.g.
    /// `sipedge completions bash > ~/.local/share/bash-completion/completions/sipedge`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout, or write one page per command into a directory,
    /// e.g. `sipedge man --dir ~/.local/share/man/man1`.
    Man {
        /// Write sipedge.1 and a sipedge-COMMAND.1 per subcommand into DIR.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `[trace]` settings given on the command line (`run`, `lab`); each replaces the config's.
#[derive(clap::Args, Debug, Default)]
struct Capture {
    /// Write every SIP message the edge receives or sends (TLS decrypted) to FILE as pcap.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Send every SIP message as HEPv3 over UDP to a collector (Homer, `sngrep -L udp:HOST:PORT`).
    #[arg(long, value_name = "HOST:PORT", value_parser = sipedge::config::values::hep_collector)]
    hep: Option<std::net::SocketAddr>,
    /// Append the TLS secrets to FILE (NSS key log format) for Wireshark.
    #[arg(long, value_name = "FILE")]
    keylog: Option<PathBuf>,
}

impl Capture {
    fn apply(self, snap: &mut Snapshot) {
        if let Some(p) = self.pcap {
            snap.trace.pcap = Some(p);
        }
        if let Some(h) = self.hep {
            snap.trace.hep = Some(h);
        }
        if let Some(k) = self.keylog {
            snap.trace.keylog = Some(k);
        }
    }
}

/// The edge's config and the two ends of a request (`explain`, `send`).
#[derive(clap::Args)]
struct Ends {
    /// The configuration file of the edge [default: the embedded lab config, see `lab`].
    #[arg(long)]
    config: Option<PathBuf>,
    /// From URI, e.g. sip:alice@contoso.test.
    #[arg(long, value_parser = sip_uri_arg)]
    from: String,
    /// Request-URI and To, e.g. sip:x@live.com.
    #[arg(long, value_parser = sip_uri_arg)]
    to: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let access_log = matches!(
        cli.command,
        Command::Run {
            access_log: true,
            ..
        } | Command::Lab {
            access_log: true,
            ..
        }
    );
    init_logging(cli.log_format, access_log);
    let result = match cli.command {
        Command::Run {
            config, capture, ..
        } => config_or_embedded(config).and_then(|(c, _)| run(c, capture)),
        Command::Lab {
            init: Some(dir), ..
        } => lab_init(&dir),
        Command::Lab {
            config,
            ephemeral,
            print_config,
            init: None,
            capture,
            ..
        } => lab(config, ephemeral, print_config, capture),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "sipedge", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => man(dir),
        Command::CheckConfig { file } => check_config(&file),
        Command::CheckPartner {
            domain,
            config,
            json,
        } => config_or_embedded(config).and_then(|(c, _)| check_partner(&c, &domain, json)),
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
            verbose,
        } => config_of_running(config).and_then(|(config, running)| {
            send(
                &config,
                verbose,
                sipedge::send::SendRequest {
                    bound: running.map(|r| r.listeners).unwrap_or_default(),
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
            persist_all,
            line,
        } => admin(endpoint, token, (persist, persist_all), line),
        Command::Explain {
            ends: Ends { config, from, to },
            interface,
            peer_cert_names,
            trust,
            method,
            sdp,
        } => config_of_running(config).and_then(|(config, _)| {
            explain(
                &config,
                sipedge::explain::ExplainRequest {
                    from,
                    to,
                    method: method.to_ascii_uppercase(),
                    interface,
                    peer_cert_names,
                    trust,
                    sdp,
                },
            )
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sipedge: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// A `sip:`/`sips:` URI the edge's own parser accepts, checked before anything is sent.
fn sip_uri_arg(s: &str) -> Result<String, String> {
    match sipedge::sip::NameAddr::parse(s) {
        Some(n) if n.uri.is_sip() && !n.uri.host.is_empty() => Ok(s.to_string()),
        _ => Err("not a SIP URI: expected sip:user@host, e.g. sip:alice@contoso.test (one `@`, a host name or address)".to_string()),
    }
}

/// HOST:PORT, the host a name or an address (`localhost:5061`, `127.0.0.2:5060`,
/// `[::1]:5061`); a name is resolved here, first address first.
fn host_port_arg(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("expected HOST:PORT ({e})"))?;
    addrs
        .next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message
/// before it already holds (our errors often name their source in their own text).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `sipedge man`: the page of `sipedge` on stdout, or with `--dir` one page per command
/// written there (sipedge.1, sipedge-run.1, …: the pages sipedge(1) names).
fn man(dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let cmd = <Cli as clap::CommandFactory>::command();
    if let Some(dir) = dir {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        clap_mangen::generate_to(cmd, &dir)
            .with_context(|| format!("writing the man pages into {}", dir.display()))?;
        println!("{}", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .context("rendering the man page")?;
    std::io::stdout()
        .write_all(&out)
        .context("writing the man page")?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat, access_log: bool) {
    use std::io::IsTerminal as _;
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,hickory_server=warn,hickory_proto=warn,hickory_resolver=warn",
        )
    });
    // The flag decides whether access lines are written, whatever RUST_LOG says; when off
    // the callsite is disabled once and for all, so the hot path only reads its interest.
    let level = if access_log { "info" } else { "off" };
    if let Ok(d) = format!("{ACCESS_TARGET}={level}").parse() {
        filter = filter.add_directive(d);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder
            .fmt_fields(sipedge::logfmt::Fields { message_key: None })
            .init(),
        LogFormat::Json => builder.json().init(),
        LogFormat::Logfmt => builder
            .fmt_fields(sipedge::logfmt::Fields {
                message_key: Some("msg"),
            })
            .event_format(sipedge::logfmt::Logfmt)
            .init(),
    }
}

fn check_config(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let loaded = Snapshot::load(file).map(|s| {
        let problems = sipedge::preflight::check(&s);
        (s, problems)
    });
    match loaded {
        Ok((_, problems)) if !problems.is_empty() => {
            eprintln!(
                "{}: {} problem(s) `sipedge run` would refuse at start",
                file.display(),
                problems.len()
            );
            for p in problems {
                eprintln!("  {p}");
            }
            Ok(ExitCode::FAILURE)
        }
        Ok((s, _)) => {
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

/// `sipedge check-partner`: the report on stdout, exit 0 when the partner answered.
fn check_partner(config: &std::path::Path, domain: &str, json: bool) -> anyhow::Result<ExitCode> {
    let snapshot = Snapshot::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(sipedge::check_partner::check_with_config(domain, &snapshot))?;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render());
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
    (mut persist, mut persist_all): (bool, bool),
    args: Vec<String>,
) -> anyhow::Result<ExitCode> {
    // Flags after the line arrive inside it (the line takes every word after the cmdlet).
    let mut config: Option<PathBuf> = None;
    let mut words = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--persist" => persist = true,
            "--persist-all" => persist_all = true,
            "--config" => config = it.next().map(PathBuf::from),
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
        admin_read(&words, persist || persist_all)?,
        admin_request(&words, persist || persist_all)?,
    ) {
        (Some(path), _) => ("GET", path, String::new()),
        (None, Some((method, path, body))) => (method, path.to_string(), body),
        (None, None) => (
            "POST",
            if persist_all {
                "/cmdlet?persist=all"
            } else if persist {
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
            let dir = sipedge::admin::state::default_dir();
            let running = sipedge::admin::state::choose(&dir, config.as_deref())
                .map_err(|m| anyhow::anyhow!(m))?;
            let found = running
                .as_ref()
                .and_then(|r| Some((r.endpoint.clone()?, r.token.clone()?)));
            let Some((se, st)) = found else {
                anyhow::bail!(
                    "no --endpoint/--token given and no running edge{} with an admin endpoint found in {}",
                    config.map(|c| format!(" on {}", c.display())).unwrap_or_default(),
                    dir.display()
                );
            };
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

/// `sipedge admin decisions [N] [--json]`, `metrics` and `watch-list`: the route to read, `None`
/// for anything else.
fn admin_read(words: &[String], persist: bool) -> anyhow::Result<Option<String>> {
    let Some((first, rest)) = words.split_first() else {
        return Ok(None);
    };
    let first = first.to_ascii_lowercase();
    // Only `decisions` has a JSON form: elsewhere `--json` stays a word, and is refused.
    let json = first == "decisions" && rest.iter().any(|w| w == "--json");
    let rest: Vec<&str> = rest
        .iter()
        .map(String::as_str)
        .filter(|w| !(json && *w == "--json"))
        .collect();
    let path = match (first.as_str(), rest.as_slice()) {
        ("decisions", []) if json => "/decisions?format=json".to_string(),
        ("decisions", []) => "/decisions".to_string(),
        ("decisions", [n]) if json => format!("/decisions?n={n}&format=json"),
        ("decisions", [n]) => format!("/decisions?n={n}"),
        ("decisions", _) => anyhow::bail!("usage: sipedge admin decisions [N] [--json]"),
        ("trace", [id]) => format!(
            "/trace?call-id={}",
            sipedge::admin::http::percent_encode(id)
        ),
        ("trace", [id, raw]) | ("trace", [raw, id]) if *raw == "--raw" => format!(
            "/trace?call-id={}&raw=1",
            sipedge::admin::http::percent_encode(id)
        ),
        ("trace", _) => anyhow::bail!("usage: sipedge admin trace CALL-ID [--raw]"),
        ("metrics", []) => "/metrics".to_string(),
        ("metrics", _) => anyhow::bail!("usage: sipedge admin metrics"),
        ("watch-list", []) => "/watch-list".to_string(),
        ("watch-list", _) => anyhow::bail!("usage: sipedge admin watch-list"),
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
        "provision" | "provisioning-status" | "advance-clock" | "fault" | "release"
    ) {
        return Ok(None);
    }
    anyhow::ensure!(!persist, "--persist applies to cmdlets only");
    match keyword.as_str() {
        "release" => match rest {
            [domain] => Ok(Some(("POST", "/watch-list/release", domain.clone()))),
            _ => anyhow::bail!("usage: sipedge admin release <discovered partner domain>"),
        },
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
fn send(
    config: &std::path::Path,
    verbose: bool,
    req: sipedge::send::SendRequest,
) -> anyhow::Result<ExitCode> {
    let snapshot = Snapshot::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let certs_dir = sipedge::lab::topology::certs_dir_for(config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outcome = runtime
        .block_on(sipedge::send::send(&snapshot, &certs_dir, &req))
        .with_context(|| format!("{} {} → {}", req.method, req.from, req.to))?;
    if verbose {
        print!("{}", outcome.render_transcript());
    }
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

fn run(config: PathBuf, capture: Capture) -> anyhow::Result<ExitCode> {
    let mut snapshot = Snapshot::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    capture.apply(&mut snapshot);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let drain = snapshot.edge.drain_timeout;
        // The handlers are in place before the first "listening" line, so a signal sent
        // as soon as the edge is up is handled, not fatal.
        let signals = stop_signals()?;
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
        let admin = edge.admin_addr().zip(edge.admin_token());
        let state = write_state("run", &config, &edge, admin);
        let waited = wait_for_signals(signals, &config, &live, tls.as_deref()).await;
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

/// Writes this process's state file so the other commands find it; its path, if written.
fn write_state(
    kind: &str,
    config: &std::path::Path,
    edge: &Edge,
    admin: Option<(std::net::SocketAddr, &str)>,
) -> Option<PathBuf> {
    use sipedge::admin::state::{self, Listener, Running};
    use sipedge::transport::{Interface, Transport};
    let mut listeners = Vec::new();
    for interface in [Interface::External, Interface::Internal] {
        for transport in [Transport::Tls, Transport::Tcp, Transport::Udp] {
            if let Some(addr) = edge.local_addr(interface, transport) {
                listeners.push(Listener {
                    interface,
                    transport,
                    addr,
                });
            }
        }
    }
    let running = Running {
        pid: std::process::id(),
        kind: kind.to_string(),
        config: std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf()),
        endpoint: admin.map(|(a, _)| format!("http://{a}")),
        token: admin.map(|(_, t)| t.to_string()),
        listeners,
    };
    let dir = state::default_dir();
    match state::write(&dir, &running) {
        Ok(path) => {
            tracing::info!(state = %path.display(), "state file written: the other sipedge commands find this {kind} by it");
            Some(path)
        }
        Err(e) => {
            tracing::warn!(error = %e, state = %dir.display(), "cannot write the state file; give the other commands --config (and admin --endpoint/--token)");
            None
        }
    }
}

/// The config a tool reads and the running edge or lab it talks to: with `--config`, the
/// one running that file if any; without, the only one running, else the embedded lab.
fn config_of_running(
    config: Option<PathBuf>,
) -> anyhow::Result<(PathBuf, Option<sipedge::admin::state::Running>)> {
    let dir = sipedge::admin::state::default_dir();
    let running =
        sipedge::admin::state::choose(&dir, config.as_deref()).map_err(|m| anyhow::anyhow!(m))?;
    match (config, running) {
        (Some(c), r) => Ok((c, r)),
        (None, Some(r)) => Ok((r.config.clone(), Some(r))),
        (None, None) => config_or_embedded(None).map(|(c, _)| (c, None)),
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

/// `sipedge lab --init DIR`.
fn lab_init(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let made = sipedge::lab::embedded::init(dir)
        .with_context(|| format!("writing a lab into {}", dir.display()))?;
    println!("{}", made.config.display());
    println!("{}", dir.join("lab.zone").display());
    println!("{}/", made.certs_dir.display());
    println!(
        "\nrun it with: sipedge lab --config {}",
        made.config.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `sipedge lab`: everything in one process until SIGINT/SIGTERM.
fn lab(
    config: Option<PathBuf>,
    ephemeral: bool,
    print_config: bool,
    capture: Capture,
) -> anyhow::Result<ExitCode> {
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
    let mut snapshot = Snapshot::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    capture.apply(&mut snapshot);
    let drain = snapshot.edge.drain_timeout;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let mut opts = LabOptions::for_config(&config);
        opts.ephemeral = ephemeral;
        let lab = Lab::start(snapshot, opts).await?;
        let admin = lab.admin_addr().zip(lab.admin_token());
        let state = write_state("lab", &config, lab.edge(), admin);
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
        // The handlers are in place before the line that says a signal stops the lab.
        let stop = stop_signals()?;
        println!("\nCtrl-C stops the lab.");
        let waited = wait_for_stop(stop).await;
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

/// The handlers of SIGTERM, SIGINT and SIGHUP, in that order.
fn stop_signals() -> anyhow::Result<[tokio::signal::unix::Signal; 3]> {
    use tokio::signal::unix::{signal, SignalKind};
    Ok([
        signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
        signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        signal(SignalKind::hangup()).context("installing SIGHUP handler")?,
    ])
}

/// Waits for SIGINT, SIGTERM or SIGHUP. The lab drains on SIGHUP as on SIGTERM rather
/// than reload: it rewrites its config at start (bound ports, peer addresses), which a
/// reload from the file would undo; a closed terminal then stops it cleanly.
async fn wait_for_stop(signals: [tokio::signal::unix::Signal; 3]) -> anyhow::Result<()> {
    let [mut term, mut int, mut hup] = signals;
    tokio::select! {
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
        _ = hup.recv() => {
            tracing::info!("SIGHUP: the lab drains and stops (it does not reload; restart it to read its config again)");
            Ok(())
        }
    }
}

/// Serves until SIGINT or SIGTERM; SIGHUP reloads the config file and certificates.
async fn wait_for_signals(
    signals: [tokio::signal::unix::Signal; 3],
    config: &std::path::Path,
    live: &Live,
    tls: Option<&sipedge::tls_store::TlsStore>,
) -> anyhow::Result<()> {
    let [mut term, mut int, mut hup] = signals;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(line: &str) -> Result<Option<String>, String> {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        admin_read(&words, false).map_err(|e| e.to_string())
    }

    #[test]
    fn admin_decisions_json_asks_for_the_json_form_and_json_elsewhere_is_refused() {
        assert_eq!(read("decisions"), Ok(Some("/decisions".into())));
        assert_eq!(
            read("decisions --json"),
            Ok(Some("/decisions?format=json".into()))
        );
        assert_eq!(
            read("Decisions 5 --json"),
            Ok(Some("/decisions?n=5&format=json".into()))
        );
        assert_eq!(
            read("decisions --json 5"),
            Ok(Some("/decisions?n=5&format=json".into()))
        );
        assert!(read("decisions 5 6").unwrap_err().contains("[--json]"));
        assert_eq!(
            read("metrics --json"),
            Err("usage: sipedge admin metrics".into())
        );
        assert_eq!(read("Get-CsAllowedDomain --json"), Ok(None));
    }
}
