//! Administration in the Management Shell's language, over a loopback-only HTTP endpoint.
//!
//! - `cmdlet`: a cmdlet line → a new snapshot or a property list (pure).
//! - `http`: just enough HTTP/1.1 for the endpoint, and the blocking client `sipedge admin` uses.
//! - `persist`: writes a change back to the config file, keeping its comments.
//! - `state`: the file that lets `sipedge admin` find a local edge without flags.
//!
//! # Routes
//! | Route | Token | Answer |
//! |---|---|---|
//! | `GET /` | yes, or `?token=` | the status page (`status_page`): lab roles and faults, the last decisions linking to their ladders, the main counters; HTML, reloads itself every 5 s |
//! | `GET /health` | no | `ok`; in a lab also a line per tripwire peer (contacts of the blocked domain's edge) |
//! | `POST /cmdlet` (body: the line) | yes | 200 + the output; 400 + the error; `?persist=1` also writes the config file (refused when it no longer holds the running objects, listing them); `?persist=all` writes every running object |
//! | `GET /config` | yes | the live federation objects as the `Get-*` cmdlets print them |
//! | `GET /trace?call-id=X[&raw=1]` | yes | the ladder of one call from the `[trace]` ring: a column per side, a row per message, the edge's decisions; `raw` adds the messages |
//! | `GET /ladder?call-id=X` | yes, or `?token=` | the same ladder as an HTML page (a table, no script) |
//! | `GET /decisions[?n=N][&format=json]` | yes | the last N decisions (default 20, at most 256), oldest first: a line each (RFC 3339 time, outcome, final status, rule, …), then its trail of checks; with `format=json` an array of objects (`decision_json`) |
//! | `GET /metrics` | yes | the counters in the Prometheus text format (`crate::metrics`) |
//! | `GET /watch-list` | yes | the discovered partners: watch-listed or suspicious first, each with its period so far; the last report |
//! | `POST /watch-list/release` (body: a domain) | yes | 200: off the watch list and out of the suspicious throttle; 404 + what is watched |
//! | `POST /provision` (body: `key=value` lines, see `lab::pic::Request::from_form`) | yes | lab only: 200 + `PIC-0001 Submitted`; 400 + the rejection |
//! | `GET /provisioning-status` | yes | lab only: one line per provisioning request |
//! | `POST /clock/advance` (body: a duration, `30d`) | yes | lab only: 200 + the new lab time |
//! | `POST /lab/fault` (body: `<role>`, `<fault>` and its arguments, one per line) | yes | lab only: 200 + what changed; 400 + the valid choices (`lab::faults`) |
//! | `GET /lab/fault` | yes | lab only: each simulated peer's current fault |
//!
//! The token is a bearer token (`Authorization: Bearer <token>`): `[admin] token`, or one
//! generated at start. Every route but `/health` (a liveness probe) takes the token,
//! `/metrics` included: it names rules and peers' traffic, and Prometheus sends a bearer
//! token with `authorization: { credentials: … }` in the scrape config. The two pages a
//! browser opens, `GET /` and `GET /ladder`, also take it as `?token=` (a link cannot send
//! a header); the status page carries it in its links and asks for no referrer. Peers that are not loopback addresses are answered 403 whatever
//! they send. A change builds a new snapshot and swaps it in with `Live::store`;
//! transactions in flight keep the snapshot they started with. Changes are serialized so
//! two administrators cannot lose each other's change.

pub mod cmdlet;
pub mod http;
pub mod persist;
pub mod state;
pub mod status_page;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::Live;
use crate::proxy::Core;

/// How long one admin connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a refused peer's request is read (and thrown away) before the close, and
/// for how long: enough for any request line and headers, little for a peer with no access.
const REFUSED_DRAIN_BYTES: usize = 64 * 1024;
const REFUSED_DRAIN_TIME: Duration = Duration::from_secs(1);

/// A fresh random token: 32 hex digits (128 bits).
pub fn generate_token() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Joins command-line words back into one cmdlet line, quoting the words a shell
/// unquoted (those with spaces, quotes or nothing in them) so the line parses as typed.
pub fn cmdlet_line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && !w.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '`')
            {
                w.clone()
            } else if !w.contains('\'') {
                format!("'{w}'")
            } else {
                format!("'{}'", w.replace('\'', "''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The edge's caching resolver, whose counters `/metrics` reports.
pub type DnsCache = Arc<crate::dns::CachingResolver<crate::dns::HickoryResolver>>;
/// The lab's PIC provisioning, when the endpoint belongs to `sipedge lab`: the simulated
/// Skype gateway's store, the lab clock, and whether an FQDN resolves in the lab zone.
#[derive(Clone)]
pub struct LabControl {
    pub store: Arc<crate::lab::pic::Provisioning>,
    pub clock: Arc<crate::lab::pic::LabClock>,
    pub resolves: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// The simulated peers' faults and the lab zone.
    pub faults: Arc<crate::lab::faults::FaultControl>,
    /// Every simulated peer; the tripwires among them (the blocked domain's edge, any
    /// contact with which is the edge's failure) are reported by `/health`.
    pub peers: Vec<LabPeer>,
}

/// One simulated peer of the lab, as the admin endpoint reports it.
#[derive(Clone)]
pub struct LabPeer {
    pub role: crate::lab::topology::Role,
    /// The address it listens on (ephemeral in tests).
    pub address: std::net::SocketAddr,
    pub contacts: crate::lab::peer::ContactLog,
}

/// What the endpoint works on.
struct Admin {
    live: Arc<Live>,
    core: Arc<Core>,
    dns: Option<DnsCache>,
    token: String,
    lab: Option<LabControl>,
    /// Held while a change is computed and installed.
    writes: tokio::sync::Mutex<()>,
}

/// Serves the admin endpoint on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    live: Arc<Live>,
    core: Arc<Core>,
    dns: Option<DnsCache>,
    token: String,
    shutdown: CancellationToken,
) {
    serve_with(listener, live, core, dns, token, None, shutdown).await
}

/// [`serve`], plus the lab routes when `lab` is given.
#[allow(clippy::too_many_arguments)]
pub async fn serve_with(
    listener: TcpListener,
    live: Arc<Live>,
    core: Arc<Core>,
    dns: Option<DnsCache>,
    token: String,
    lab: Option<LabControl>,
    shutdown: CancellationToken,
) {
    let admin = Arc::new(Admin {
        live,
        core,
        dns,
        token,
        lab,
        writes: tokio::sync::Mutex::new(()),
    });
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            if !peer.ip().is_loopback() {
                tracing::warn!(%peer, "admin connection from a non-loopback peer refused");
                refuse(stream).await;
                return;
            }
            admin.connection(stream, peer).await;
        });
    }
}

/// Answers a non-loopback peer 403 without reading its request, then closes gently: the
/// write side first, then what it sent is read and thrown away (bounded), because closing
/// with its request unread would reset the connection and the peer could lose the answer.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = http::write_response(
        &mut stream,
        403,
        "the admin endpoint answers loopback peers only\n",
    )
    .await;
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 4096];
    let drain = async {
        let mut read = 0;
        while read < REFUSED_DRAIN_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(REFUSED_DRAIN_TIME, drain).await;
}

impl Admin {
    /// Reads one request (within [`REQUEST_TIMEOUT`]), answers it, closes. The answer may
    /// take longer than the request: `Test-CsFederatedPartner` waits on the partner.
    async fn connection(&self, mut stream: TcpStream, peer: std::net::SocketAddr) {
        let read = tokio::time::timeout(REQUEST_TIMEOUT, http::read_request(&mut stream)).await;
        let (status, body) = match read {
            Err(_) => {
                tracing::debug!(%peer, "admin request timed out");
                return;
            }
            Ok(Ok(req)) => {
                let (status, body) = self.handle(&req).await;
                if status == 200 && req.path == "/decisions" && wants_json(&req) {
                    let _ = http::write_typed(&mut stream, status, "application/json", &body).await;
                    return;
                }
                if status == 200 && (req.path == "/ladder" || req.path == "/") {
                    let html = "text/html; charset=utf-8";
                    let _ = http::write_typed(&mut stream, status, html, &body).await;
                    return;
                }
                (status, body)
            }
            Ok(Err(http::HttpError::Closed)) | Ok(Err(http::HttpError::Io(_))) => return,
            Ok(Err(e @ http::HttpError::BodyTooLarge)) => (413, format!("{e}\n")),
            Ok(Err(e)) => (400, format!("{e}\n")),
        };
        let _ = http::write_response(&mut stream, status, &body).await;
    }

    async fn handle(&self, req: &http::Request) -> (u16, String) {
        const ROUTES: &str =
            "routes: GET / (the status page), GET /health, GET /config, GET /decisions, GET /trace?call-id=X[&raw=1], GET /ladder?call-id=X, GET /metrics, GET /watch-list, POST /watch-list/release, POST /cmdlet[?persist=1]; in a lab also POST /provision, GET /provisioning-status, POST /clock/advance, GET|POST /lab/fault";
        let method = req.method.as_str();
        match req.path.as_str() {
            "/health" if method == "GET" => return (200, self.health()),
            "/"
            | "/health"
            | "/config"
            | "/decisions"
            | "/trace"
            | "/ladder"
            | "/metrics"
            | "/provisioning-status"
            | "/watch-list"
                if method != "GET" =>
            {
                return (405, format!("{} takes GET; {ROUTES}\n", req.path))
            }
            "/provision" | "/clock/advance" | "/watch-list/release" if method != "POST" => {
                return (405, format!("{} takes POST; {ROUTES}\n", req.path))
            }
            "/lab/fault" if method != "GET" && method != "POST" => {
                return (405, format!("/lab/fault takes GET or POST; {ROUTES}\n"))
            }
            "/provision" | "/provisioning-status" | "/clock/advance" | "/lab/fault"
                if self.lab.is_none() =>
            {
                return (
                    404,
                    format!(
                        "{} exists in `sipedge lab` only (this edge simulates no provider)\n",
                        req.path
                    ),
                )
            }
            "/provision" | "/provisioning-status" | "/clock/advance" | "/lab/fault" => {}
            "/cmdlet" if method != "POST" => {
                return (
                    405,
                    format!("/cmdlet takes POST with the cmdlet line as body; {ROUTES}\n"),
                )
            }
            "/"
            | "/config"
            | "/decisions"
            | "/trace"
            | "/ladder"
            | "/metrics"
            | "/cmdlet"
            | "/watch-list"
            | "/watch-list/release" => {}
            other => return (404, format!("no route {other}; {ROUTES}\n")),
        }
        if !self.authorized(req) {
            return (
                401,
                "missing or wrong token; send Authorization: Bearer <token> ([admin] token, or the state file of the running edge); a browser may add ?token=<token> to GET / and GET /ladder\n".into(),
            );
        }
        match req.path.as_str() {
            "/" => (200, self.status_page()),
            "/config" => (200, cmdlet::render_config(&self.live.load().federation)),
            "/decisions" => match (decisions_wanted(&req.query), wants_json_checked(req)) {
                (Ok(n), Ok(false)) => (200, self.decisions(n)),
                (Ok(n), Ok(true)) => (200, self.decisions_json(n)),
                (Err(e), _) | (_, Err(e)) => (400, e),
            },
            "/trace" | "/ladder" => self.trace(req),
            "/metrics" => (200, self.metrics()),
            "/watch-list" => (200, self.watch_list()),
            "/watch-list/release" => self.release(req),
            "/provision" | "/provisioning-status" | "/clock/advance" => self.pic(req),
            "/lab/fault" => self.fault(req).await,
            _ => self.cmdlet(req).await,
        }
    }

    /// Whether `req` carries the token: as a bearer header, or, for the pages a browser
    /// opens (`GET /` and `GET /ladder`), as `?token=` since a link cannot send a header.
    fn authorized(&self, req: &http::Request) -> bool {
        if let Some(t) = req.bearer() {
            return same(t, &self.token);
        }
        let page = req.method == "GET" && matches!(req.path.as_str(), "/" | "/ladder");
        page && req
            .param("token")
            .is_some_and(|t| same(&http::percent_decode(t), &self.token))
    }

    /// The status page: gathers the lab's roles and faults, the decision log, the counters,
    /// and hands them to [`status_page::render`].
    fn status_page(&self) -> String {
        let snap = self.live.load();
        let roles: Option<(Vec<status_page::RoleRow>, std::time::SystemTime)> =
            self.lab.as_ref().map(|lab| {
                let now = lab.clock.now();
                let faults = lab.faults.current();
                let rows = lab
                    .peers
                    .iter()
                    .map(|p| {
                        let spec = p.role.spec();
                        let fault = faults
                            .iter()
                            .find(|(r, _, _)| *r == p.role)
                            .map(|(_, _, f)| f)
                            .filter(|f| **f != crate::lab::peer::Fault::None);
                        status_page::RoleRow {
                            role: p.role.to_string(),
                            fqdn: spec.fqdn.to_string(),
                            address: format!("{} {}", spec.transport, p.address),
                            state: crate::lab::run::role_state(
                                p.role,
                                &p.contacts,
                                &lab.store,
                                now,
                                &snap.edge.local_domains,
                            ),
                            fault: fault.map(|f| f.to_string()),
                        }
                    })
                    .collect();
                (rows, now)
            });
        let decisions = self.core.last_decisions(DECISIONS_DEFAULT);
        let metrics = self.metrics();
        status_page::render(&status_page::Status {
            edge: &snap.external.fqdn,
            now: std::time::SystemTime::now(),
            lab: roles.as_ref().map(|(r, t)| (r.as_slice(), *t)),
            decisions: &decisions,
            ladders: self.core.trace().is_some() && snap.trace.ring_bytes > 0,
            metrics: &metrics,
            token: &self.token,
        })
    }

    /// `ok`, and in a lab one line per tripwire peer: `tripwire blocked sip.adatum.test:
    /// tripwire: not contacted (0 contacts)` or `… TRIPPED: 1 contact(s), last from …`.
    fn health(&self) -> String {
        let mut out = String::from("ok\n");
        let peers = self.lab.iter().flat_map(|l| &l.peers);
        for p in peers.filter(|p| p.role.is_tripwire()) {
            let _ = writeln!(
                out,
                "tripwire {} {}: {}",
                p.role,
                p.contacts.fqdn(),
                p.contacts.tripwire_state()
            );
        }
        out
    }

    /// The lab routes: PIC provisioning requests and the lab clock.
    fn pic(&self, req: &http::Request) -> (u16, String) {
        use crate::lab::pic;
        let Some(lab) = &self.lab else {
            return (404, "no lab on this endpoint\n".into());
        };
        let body = String::from_utf8_lossy(&req.body);
        match req.path.as_str() {
            "/provision" => {
                let request = match pic::Request::from_form(&body) {
                    Ok(r) => r,
                    Err(e) => return (400, format!("{e}\n")),
                };
                let resolves = lab.resolves.clone();
                match lab
                    .store
                    .submit(request, lab.clock.now(), &move |f: &str| resolves(f))
                {
                    Ok(id) => {
                        tracing::info!(%id, "PIC provisioning request submitted");
                        (
                            200,
                            format!(
                                "{id} Submitted; provisioned after {} days of lab time\n",
                                lab.store.delay().as_secs() / 86_400
                            ),
                        )
                    }
                    Err(r) => (400, format!("{r}\n")),
                }
            }
            "/provisioning-status" => {
                let now = lab.clock.now();
                (200, pic::render_status(&lab.store.all(now), now))
            }
            _ => match pic::parse_duration(&body) {
                Ok(by) => {
                    lab.clock.advance(by);
                    let now = lab.clock.now();
                    let at = crate::logfmt::rfc3339(now);
                    tracing::info!(advanced_s = by.as_secs(), "lab clock advanced");
                    (
                        200,
                        format!(
                            "lab clock advanced by {}s; lab time is now {at}\n",
                            by.as_secs()
                        ),
                    )
                }
                Err(e) => (400, format!("{e}\n")),
            },
        }
    }

    /// `GET /lab/fault` lists the faults; `POST` sets one. A change also flushes the edge's
    /// DNS cache and reconnect backoff, so the next request meets the new behaviour
    /// instead of a cached answer or a remembered failure.
    async fn fault(&self, req: &http::Request) -> (u16, String) {
        let Some(lab) = &self.lab else {
            return (404, "no lab on this endpoint\n".into());
        };
        if req.method == "GET" {
            return (200, lab.faults.render());
        }
        let body = String::from_utf8_lossy(&req.body);
        let words: Vec<&str> = body.lines().filter(|l| !l.trim().is_empty()).collect();
        let _guard = self.writes.lock().await;
        let applied = crate::lab::faults::parse(&words).and_then(|r| lab.faults.apply(&r));
        match applied {
            Ok(out) => {
                if let Some(dns) = &self.dns {
                    dns.clear();
                }
                self.core.reset_backoff();
                (200, out)
            }
            Err(e) => (400, format!("{e}\n")),
        }
    }

    async fn cmdlet(&self, req: &http::Request) -> (u16, String) {
        let Ok(line) = std::str::from_utf8(&req.body) else {
            return (400, "the cmdlet line is not UTF-8\n".into());
        };
        let line = line.trim().to_string();
        let guard = self.writes.lock().await;
        let before = self.live.load();
        let result = match cmdlet::apply(&before, &line) {
            Ok(r) => r,
            Err(e) => return (400, format!("{e}\n")),
        };
        if let Some(domain) = result.test_partner {
            // A walk to the partner takes seconds: changes need not wait for it.
            drop(guard);
            return self.test_partner(&before, &domain).await;
        }
        let Some(next) = result.snapshot else {
            return (200, result.output);
        };
        let scope = match req.param("persist") {
            Some("all") => Some(persist::Scope::All),
            _ if req.flag("persist") => Some(persist::Scope::Change),
            _ => None,
        };
        if let Some(scope) = scope {
            let (b, n) = (before.clone(), next.clone());
            match tokio::task::spawn_blocking(move || persist::persist(&b, &n, scope)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return (409, format!("not applied: {e}\n")),
                Err(e) => return (500, format!("not applied: {e}\n")),
            }
        }
        self.live.store(next);
        tracing::info!(cmdlet = %line, persisted = scope.is_some(), "admin change applied");
        (200, result.output)
    }

    /// `Test-CsFederatedPartner`: the walk with the edge's own resolver and outbound TLS;
    /// 200 when the partner answered, 424 (and the report) when a step failed.
    async fn test_partner(&self, snap: &crate::config::Snapshot, domain: &str) -> (u16, String) {
        let probe = crate::check_partner::Probe {
            snap,
            resolver: self.core.resolver().map(|r| r.as_ref()),
            tls: self
                .core
                .tls()
                .and_then(|t| t.client(crate::transport::Interface::External)),
        };
        let report = crate::check_partner::check(domain, &probe).await;
        tracing::info!(%domain, passed = report.passed, code = ?report.code(), "Test-CsFederatedPartner");
        (if report.passed { 200 } else { 424 }, report.render())
    }

    fn metrics(&self) -> String {
        let gauges = crate::metrics::Gauges {
            open_connections: self.core.connections(),
            flagged_partners: self.core.flagged_partners(),
            transactions: self.core.transactions(),
            transaction_bytes: self.core.transaction_bytes(),
            dns: self.dns.as_ref().map(|r| {
                let s = r.stats();
                (s.lookups, s.hits)
            }),
        };
        let mut out = self.core.metrics().render(&gauges);
        if let Some(tap) = self.core.trace() {
            crate::metrics::render_trace_dropped(&mut out, tap.dropped());
        }
        out
    }

    /// `/trace?call-id=X[&raw=1]` (the ladder as text) and `/ladder?call-id=X` (as HTML).
    fn trace(&self, req: &http::Request) -> (u16, String) {
        let Some(call_id) = req.param("call-id").map(http::percent_decode) else {
            return (
                400,
                format!("{} takes ?call-id=CALL-ID (percent-encoded)\n", req.path),
            );
        };
        let Some(tap) = self.core.trace() else {
            return (
                404,
                "this edge records nothing: [trace] ring_bytes = 0 and no pcap or hep\n".into(),
            );
        };
        let messages = tap.call(&call_id);
        let notes: Vec<_> = self
            .core
            .recent_decisions()
            .into_iter()
            .filter(|d| d.call_id == call_id)
            .map(|d| crate::trace::ladder::EdgeNote {
                interface: d.interface,
                method: d.method,
                outcome: d.outcome.to_string(),
                rule: d.rule.to_string(),
                status: d.status,
            })
            .collect();
        let ladder = crate::trace::ladder::Ladder::new(&call_id, &messages, &notes);
        if req.path == "/ladder" {
            (200, ladder.html())
        } else {
            (200, ladder.text(req.flag("raw")))
        }
    }

    /// The discovered partners the edge watches: those on the watch list or throttled as
    /// suspicious first, then the rest, each with its period so far; then the last report.
    fn watch_list(&self) -> String {
        let mut partners = self.core.discovered_partners();
        partners.sort_by_key(|p| !(p.watch_listed || p.suspicious));
        let mut out = String::new();
        if partners.is_empty() {
            out.push_str("no discovered partner has sent anything\n");
        }
        for p in &partners {
            let state = match (p.watch_listed, p.suspicious) {
                (true, true) => "watch-listed, suspicious",
                (true, false) => "watch-listed",
                (false, true) => "suspicious",
                (false, false) => "ok",
            };
            let _ = writeln!(out, "{} {state}: {}", p.partner, partner_line(p));
        }
        if let Some(r) = self.core.last_partner_report() {
            let at = crate::logfmt::rfc3339(r.at);
            let _ = writeln!(
                out,
                "\nlast report at {at} (every DiscoveredPartnerReportPeriodMinutes):"
            );
            for p in &r.partners {
                let _ = writeln!(out, "{}: {}", p.partner, partner_line(p));
            }
        }
        out
    }

    /// Takes the partner named in the body off the watch list and out of the throttle.
    fn release(&self, req: &http::Request) -> (u16, String) {
        let domain = String::from_utf8_lossy(&req.body)
            .trim()
            .to_ascii_lowercase();
        if domain.is_empty() {
            return (
                400,
                "the body names the partner domain to release, e.g. northwind.test\n".into(),
            );
        }
        if self.core.release_partner(&domain) {
            tracing::info!(partner = %domain, "admin released a discovered partner");
            return (200, format!("{domain} released: off the watch list, at DiscoveredPartnerStandardRate again\n"));
        }
        let flagged: Vec<String> = self
            .core
            .discovered_partners()
            .into_iter()
            .filter(|p| p.watch_listed || p.suspicious)
            .map(|p| p.partner)
            .collect();
        let listed = if flagged.is_empty() {
            "none".to_string()
        } else {
            flagged.join(", ")
        };
        (
            404,
            format!(
                "{domain} is neither on the watch list nor suspicious; watched now: {listed}\n"
            ),
        )
    }

    /// The last `n` decisions, each a line and then its trail, indented.
    fn decisions(&self, n: usize) -> String {
        let mut out = String::new();
        for d in self.core.last_decisions(n) {
            let took = d
                .took
                .map(|t| format!(" took={:.1}ms", t.as_secs_f64() * 1000.0))
                .unwrap_or_default();
            let diagnostics = d
                .ms_diagnostics
                .as_deref()
                .map(|v| format!(" ms-diagnostics={}", crate::logfmt::value(v)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{} {} {} {} {} {} {}/{} from {} [{}]{took}{diagnostics} call-id={}",
                crate::logfmt::rfc3339(d.at),
                d.outcome,
                d.status,
                d.rule,
                d.method,
                d.request_uri,
                d.interface,
                d.transport,
                d.peer,
                d.identity.join(","),
                d.call_id
            );
            crate::explain::render_trail(&mut out, &d.trail);
        }
        out
    }

    /// The last `n` decisions as a JSON array, oldest first.
    fn decisions_json(&self, n: usize) -> String {
        let all: Vec<serde_json::Value> = self
            .core
            .last_decisions(n)
            .iter()
            .map(decision_json)
            .collect();
        let mut out = serde_json::Value::Array(all).to_string();
        out.push('\n');
        out
    }
}

/// One decision as `/decisions?format=json` gives it.
pub fn decision_json(d: &crate::proxy::record::DecisionRecord) -> serde_json::Value {
    use crate::policy::Outcome;
    let trail: Vec<serde_json::Value> = d
        .trail
        .iter()
        .map(|c| {
            let (result, note) = match &c.outcome {
                Outcome::Passed(note) => ("pass", note),
                Outcome::Decided(note) => ("decided", note),
            };
            serde_json::json!({ "check": c.name, "result": result, "note": note })
        })
        .collect();
    serde_json::json!({
        "time": crate::logfmt::rfc3339(d.at),
        "call_id": d.call_id,
        "method": d.method,
        "request_uri": d.request_uri,
        "from": d.from,
        "to": d.to,
        "interface": d.interface.to_string(),
        "transport": d.transport.to_string(),
        "peer": d.peer.to_string(),
        "identity": d.identity,
        "outcome": d.outcome,
        "rule": d.rule,
        "status": d.status,
        "duration_ms": d.took.map(|t| t.as_secs_f64() * 1000.0),
        "ms_diagnostics": d.ms_diagnostics,
        "trail": trail,
    })
}

/// `format=json` in the query (only `json` and `text` are known).
fn wants_json_checked(req: &http::Request) -> Result<bool, String> {
    match req.query_param("format") {
        None | Some("text") => Ok(false),
        Some("json") => Ok(true),
        Some(other) => Err(format!("format= takes json or text (got `{other}`)\n")),
    }
}

fn wants_json(req: &http::Request) -> bool {
    wants_json_checked(req) == Ok(true)
}

/// A partner's statistics on one line.
fn partner_line(p: &crate::policy::PartnerReport) -> String {
    format!(
        "{} admitted, {} over the rate, {} refused by the contacts limit, {} answered ok, {} failed, {} distinct contacts",
        p.admitted, p.rate_limited, p.contacts_refused, p.succeeded, p.failed, p.distinct_contacts
    )
}

/// How many decisions `/decisions` shows when the query does not say.
pub const DECISIONS_DEFAULT: usize = 20;

/// `n` from `/decisions?n=N`: [`DECISIONS_DEFAULT`] when absent, at most the number kept.
fn decisions_wanted(query: &str) -> Result<usize, String> {
    let keep = crate::proxy::record::KEEP;
    match query.split('&').find_map(|kv| kv.strip_prefix("n=")) {
        None => Ok(DECISIONS_DEFAULT),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n.min(keep)),
            _ => Err(format!(
                "/decisions?n= takes a number from 1 to {keep} (got `{v}`); without it the last {DECISIONS_DEFAULT} are shown\n"
            )),
        },
    }
}

/// Token comparison that does not stop at the first differing byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Snapshot;

    const BASE: &str = "[edge]\nlocal_domains = [\"contoso.test\"]\n[interfaces.external]\nfqdn = \"a.contoso.test\"\naddress = \"127.0.0.1\"\ntcp_port = 0\n[interfaces.internal]\nfqdn = \"b.contoso.test\"\naddress = \"127.0.0.2\"\ntcp_port = 0\n[pool]\ntarget = \"127.0.0.1:5070\"\ntransport = \"tcp\"\n";

    #[test]
    fn admin_section_is_loopback_only_with_a_long_token() {
        let s = Snapshot::from_toml(
            &format!("{BASE}[admin]\nlisten = \"127.0.0.1:0\"\n"),
            std::path::Path::new("."),
        )
        .unwrap();
        assert_eq!(s.admin.unwrap().token, None);
        let e = Snapshot::from_toml(
            &format!("{BASE}[admin]\nlisten = \"0.0.0.0:5080\"\ntoken = \"short\"\n"),
            std::path::Path::new("."),
        )
        .unwrap_err();
        let keys: Vec<_> = e.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["admin.listen", "admin.token"]);
    }

    #[test]
    fn decisions_count_has_a_default_and_a_cap() {
        assert_eq!(decisions_wanted(""), Ok(DECISIONS_DEFAULT));
        assert_eq!(decisions_wanted("x=1&n=3"), Ok(3));
        assert_eq!(decisions_wanted("n=100000"), Ok(crate::proxy::record::KEEP));
        for bad in ["n=0", "n=-1", "n=ten", "n="] {
            assert!(
                decisions_wanted(bad).unwrap_err().contains("1 to 256"),
                "{bad}"
            );
        }
    }

    #[test]
    fn words_are_requoted_into_one_line() {
        let words: Vec<String> = ["New-CsBlockedDomain", "-Comment", "never, ever", "it's", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            cmdlet_line(&words),
            "New-CsBlockedDomain -Comment 'never, ever' 'it''s' ''"
        );
        assert_eq!(generate_token().len(), 32);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
