//! `sipedge check-partner <domain>` and `Test-CsFederatedPartner -Domain <domain>`: the
//! chain the edge walks to reach a federated domain, one step at a time, with what the
//! edge would answer when a step fails and what to fix.
//!
//! Nothing here decides or resolves on its own: the route is `policy::explain` on an
//! OPTIONS from a user of ours (the same pipeline the proxy runs, with the SRV answer the
//! proxy would ask for, through `proxy::srv_answer`), the address comes from
//! `proxy::forward::resolve_address`, the connection from the pool's own
//! `connect_tcp` and `tls_handshake`, and a failure becomes the refusal
//! `proxy::respond::connect_failure` builds. Then the OPTIONS goes over that connection,
//! marked as the edge marks it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Federation is mutual TLS: the refusals are the edge's for a federated peer over TLS.
const FEDERATION_TRANSPORT: crate::transport::Transport = crate::transport::Transport::Tls;

use bytes::{Buf as _, Bytes, BytesMut};
use rustls::{CertificateError, ClientConfig};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::config::Snapshot;
use crate::dns::Resolve;
use crate::policy::{
    self, Decision, DnsFacts, Rejection, Route, Rule, SrvAnswer, Target, TargetClass,
};
use crate::sip::framing::{self, FrameLimits, Scan};
use crate::sip::ms_headers::DiagnosticsValue;
use crate::sip::{HeaderName, Message};
use crate::transport::pool::ConnectError;
use crate::transport::{Interface, Peer, PeerIdentity, Transport};

/// How long the OPTIONS may take to get its final response: long enough for a loaded
/// partner edge, short enough that the admin client (30 s) hears the answer.
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(10);

/// The user part of the From the probe is sent as: no grant names it, so the global
/// external access policy applies, as for most users.
pub const PROBE_USER: &str = "check-partner";

/// What the check works with: the config, and the edge's resolver and outbound TLS.
pub struct Probe<'a> {
    pub snap: &'a Snapshot,
    /// `None`: every lookup fails, as it would in an edge without a resolver.
    pub resolver: Option<&'a dyn Resolve>,
    /// The client configuration of the external interface (our certificate, our trust
    /// anchors); `None` when the interface has no TLS material.
    pub tls: Option<Arc<ClientConfig>>,
}

/// The outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    /// Not reached, or not part of this route (a ProxyFqdn needs no SRV).
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// `policy`, `srv`, `same-domain`, `address`, `tcp`, `tls`, `cert-chain`,
    /// `cert-expiry`, `cert-names`, `options`.
    pub step: &'static str,
    pub result: Outcome,
    /// The next hop the step is about (`host:port`), for the steps per target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub detail: String,
    /// On a failure: the status the edge answers the internal user with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// On a failure: the `ms-diagnostics` code the edge sends (1008, 1009, 1010, 1047…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u32>,
    /// On a failure: the whole `ms-diagnostics` value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<String>,
    /// On a failure: what to change, and where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Every step for one domain, in the order the edge takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerReport {
    pub domain: String,
    /// The From of the probe (a user of ours under the global policy).
    pub from: String,
    /// True when a target answered the OPTIONS with 2xx.
    pub passed: bool,
    pub steps: Vec<Step>,
}

/// Why the check could not run at all (as opposed to a step failing).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The argument is not a DNS name.
    #[error("`{0}` is not a domain; expected a DNS name, e.g. fabrikam.test")]
    BadDomain(String),
    /// The config's outbound TLS material could not be loaded.
    #[error("loading the external interface's TLS material: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The lab zone of the config could not be served.
    #[error("{0}")]
    Dns(#[from] crate::explain::ExplainError),
}

/// A domain as the cmdlets read one (`-Domain`): the same validator.
pub fn parse_domain(s: &str) -> Result<String, CheckError> {
    crate::admin::cmdlet::dns_name(s).ok_or_else(|| CheckError::BadDomain(s.to_string()))
}

/// `sipedge check-partner`: the check with the resolver and TLS material the edge of
/// `snap` would build (its lab zone served for the occasion).
pub async fn check_with_config(domain: &str, snap: &Snapshot) -> Result<PartnerReport, CheckError> {
    let domain = parse_domain(domain)?;
    let (resolver, _zone) = crate::explain::resolver_for(snap).await?;
    let tls = crate::tls_store::TlsStore::from_snapshot(snap)?
        .and_then(|t| crate::transport::TlsSource::client(t.as_ref(), Interface::External));
    let probe = Probe {
        snap,
        resolver: resolver.as_deref(),
        tls,
    };
    Ok(check(&domain, &probe).await)
}

/// Walks the chain for `domain` (already validated, lowercase).
pub async fn check(domain: &str, probe: &Probe<'_>) -> PartnerReport {
    let snap = probe.snap;
    let local = snap
        .edge
        .local_domains
        .first()
        .map(String::as_str)
        .unwrap_or("localhost");
    let from = format!("sip:{PROBE_USER}@{local}");
    let mut report = PartnerReport {
        domain: domain.to_string(),
        from: from.clone(),
        passed: false,
        steps: Vec::new(),
    };

    // 1. The decision, as if the pool relayed the OPTIONS to the internal interface.
    let pool_via = format!(
        "SIP/2.0/TCP {}:{};branch=z9hG4bK{}",
        snap.pool.host,
        snap.pool.port,
        token()
    );
    let (call_id, tag) = (token(), token());
    let inbound_text = options_text(domain, &from, &pool_via, &call_id, &tag, None);
    let forward = match route(domain, probe, inbound_text, &mut report).await {
        Some(f) => f,
        None => return report,
    };
    let Route::Targets(targets) = &forward.route else {
        // `route` reported it: not a federation route.
        return report;
    };
    let marking = forward.insert_trust.as_ref().map(|t| t.header_value());

    // 2. Each target in turn, as the edge fails over.
    for t in targets {
        let via = format!(
            "SIP/2.0/TLS {}:{};branch=z9hG4bK{}",
            snap.external.fqdn,
            snap.external.tls_port.unwrap_or(crate::config::FEDERATION_PORT),
            token()
        );
        let wire = options_text(domain, &from, &via, &call_id, &tag, marking.as_deref());
        if walk_target(t, probe, wire, &mut report).await {
            report.passed = true;
            break;
        }
    }
    report
}

// === the decision ===

/// The policy, srv and same-domain steps; the forward decision when the route leads out.
async fn route(
    domain: &str,
    probe: &Probe<'_>,
    text: String,
    report: &mut PartnerReport,
) -> Option<policy::Forward> {
    let snap = probe.snap;
    let m = match Message::parse(Bytes::from(text), true) {
        Ok(m) => m,
        Err(e) => {
            report.steps.push(policy_fail_text(
                &format!("the probe for {domain} is not valid SIP: {e}"),
                None,
                "give a domain name, e.g. fabrikam.test",
            ));
            return None;
        }
    };
    let facts = crate::proxy::request_facts(&m);
    let pool_addr = crate::proxy::forward::resolve_static(&snap.pool.host, snap.pool.port, snap)
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], snap.pool.port)));
    let peer = Peer {
        interface: Interface::Internal,
        transport: snap.pool.transport,
        addr: pool_addr,
        identity: PeerIdentity::anonymous(),
    };
    let question = policy::dns_needed(&facts, &peer, snap);
    let dns = match (&question, probe.resolver) {
        (None, _) => DnsFacts::none(),
        (Some(q), Some(r)) => crate::proxy::srv_answer(r, q).await,
        (Some(q), None) => DnsFacts::answer(
            q,
            SrvAnswer::Failed("no DNS resolver configured".into()),
        ),
    };
    let decision = policy::explain(&facts, &peer, snap, &dns).decision;
    let srv = question.as_ref().and_then(|q| dns.srv(q.domain()).map(|a| (q.name(), a)));

    let refusal = decision.rejection();
    let srv_refused = refusal.is_some_and(|r| matches!(r.rule, Rule::SrvNotFound | Rule::SrvNoMatch));
    match (&decision, refusal) {
        (_, Some(r)) if !srv_refused => {
            report.steps.push(refused(
                "policy",
                None,
                match &srv {
                    None => format!("the edge refuses {domain} (rule {})", r.rule),
                    Some((name, answer)) => format!(
                        "the edge refuses {domain} (rule {}), after {name} -> {}",
                        r.rule,
                        crate::explain::describe_answer(answer)
                    ),
                },
                r,
                policy_fix(r, domain),
            ));
            return None;
        }
        (Decision::AnswerOptions, _) => {
            report.steps.push(policy_fail_text(
                &format!("{domain} names this edge itself: it answers the OPTIONS on its own"),
                None,
                "give the partner's SIP domain",
            ));
            return None;
        }
        (Decision::Forward(f), _) if f.target == Some(TargetClass::Local) => {
            report.steps.push(policy_fail_text(
                &format!("{domain} is one of our own domains: it goes to the pool"),
                None,
                "give the partner's SIP domain",
            ));
            return None;
        }
        (Decision::Forward(f), _) if !matches!(f.route, Route::Targets(_)) => {
            report.steps.push(policy_fail_text(
                "the edge relays it to a configured next hop, not to a federated partner (static routing: the config has no federation sections)",
                None,
                "add the federation sections (access_edge, allowed_domain…), like config/lab.toml",
            ));
            return None;
        }
        (Decision::Forward(f), _) => report.steps.push(pass(
            "policy",
            None,
            format!("{} (rule {})", describe_target(f.target.as_ref()), f.rule),
        )),
        _ => report.steps.push(pass(
            "policy",
            None,
            "nothing refuses it before the SRV lookup".to_string(),
        )),
    }

    // The SRV lookup and the same-domain rule.
    match (&srv, refusal) {
        (None, _) => {
            report.steps.push(skip("srv", None, "not asked: the route needs no SRV lookup (a ProxyFqdn or the default route is dialled directly)"));
            report.steps.push(skip("same-domain", None, "not asked: no SRV targets"));
        }
        (Some((name, _)), Some(r)) if r.rule == Rule::SrvNotFound => {
            report.steps.push(refused(
                "srv",
                None,
                format!("{name}: no usable records"),
                r,
                format!(
                    "publish {name} (port 5061, the partner's Access Edge), or add the partner with New-CsAllowedDomain -Identity {domain} -ProxyFqdn <its Access Edge FQDN>"
                ),
            ));
            report.steps.push(skip("same-domain", None, "not reached"));
            return None;
        }
        (Some((name, answer)), refusal) => {
            report
                .steps
                .push(pass("srv", None, format!("{name} -> {}", crate::explain::describe_answer(answer))));
            if let Some(r) = refusal {
                report.steps.push(refused(
                    "same-domain",
                    None,
                    format!("no SRV target is in {domain}, and none is an enabled provider's ProxyFqdn"),
                    r,
                    format!(
                        "the partner must name its Access Edge under {domain} in the SRV record; or, if that target is really its edge, add New-CsAllowedDomain -Identity {domain} -ProxyFqdn <the target> so the edge dials it directly"
                    ),
                ));
                return None;
            }
            let Decision::Forward(f) = &decision else {
                return None;
            };
            report.steps.push(pass("same-domain", None, same_domain_note(f.target.as_ref(), domain)));
        }
    }
    match decision {
        Decision::Forward(f) => Some(f),
        _ => None,
    }
}

fn describe_target(t: Option<&TargetClass>) -> String {
    match t {
        Some(TargetClass::DirectPartner {
            domain,
            proxy_fqdn,
            port,
        }) => format!("allowed domain {domain} with ProxyFqdn {proxy_fqdn}:{port}"),
        Some(TargetClass::AllowedDomain { domain, .. }) => {
            format!("allowed domain {domain}, found by SRV")
        }
        Some(TargetClass::Provider {
            identity, public, ..
        }) => format!(
            "{} provider {identity}",
            if *public { "public" } else { "hosting" }
        ),
        Some(TargetClass::Discovered { domain, .. }) => format!(
            "discovered partner {domain} (open federation: discovered-partner limits apply)"
        ),
        Some(TargetClass::DefaultRoute { fqdn, port }) => format!("the default route {fqdn}:{port}"),
        Some(TargetClass::HostedUser {
            identity,
            proxy_fqdn,
            port,
            ..
        }) => format!("a user homed at hosting provider {identity} ({proxy_fqdn}:{port})"),
        Some(TargetClass::Local) | None => "relayed".to_string(),
    }
}

fn same_domain_note(t: Option<&TargetClass>, domain: &str) -> String {
    match t {
        Some(TargetClass::Provider {
            identity, targets, ..
        }) => format!(
            "{} is the ProxyFqdn of the provider {identity}",
            targets.first().map_or("the target", |t| t.target.as_str())
        ),
        Some(TargetClass::AllowedDomain { targets, .. } | TargetClass::Discovered { targets, .. }) => {
            format!(
                "in {domain}: {}",
                targets
                    .iter()
                    .map(|t| t.target.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        _ => format!("the targets are in {domain}"),
    }
}

/// What to change when the policy refuses the domain.
fn policy_fix(r: &Rejection, domain: &str) -> String {
    let param = |name: &str| {
        r.diagnostics
            .as_ref()
            .and_then(|d| d.get(name))
            .unwrap_or("")
            .to_string()
    };
    match r.rule {
        Rule::FederationDisabled => "Set-CsAccessEdgeConfiguration -AllowFederatedUsers $true".into(),
        Rule::BlockedDomain => format!("{domain} is on the blocked list: Remove-CsBlockedDomain -Identity {domain}"),
        Rule::PartnerNotAllowed => format!(
            "New-CsAllowedDomain -Identity {domain} (with -ProxyFqdn <its Access Edge> to skip SRV), or Set-CsAccessEdgeConfiguration -EnablePartnerDiscovery $true"
        ),
        Rule::ProviderDisabled => format!(
            "the provider {} is disabled: Set-CsPublicProvider (or Set-CsHostingProvider) -Identity {} -Enabled $true",
            param("provider"),
            param("provider")
        ),
        Rule::UserFederationDenied => format!(
            "users on the {} external access policy may not federate: Set-CsExternalAccessPolicy -Identity {} -EnableFederationAccess $true",
            param("policy"),
            param("policy")
        ),
        Rule::UserPublicCloudDenied | Rule::UserPublicCloudAvDenied => format!(
            "users on the {} external access policy may not reach public providers: Set-CsExternalAccessPolicy -Identity {} -EnablePublicCloudAccess $true",
            param("policy"),
            param("policy")
        ),
        Rule::NoRoute => "the config routes nothing there: add federation sections or a [[routes]] entry".into(),
        rule => format!("see the refusal `{rule}` in README's refusal table"),
    }
}

// === one target ===

/// address, tcp, tls, the certificate, options: true when the OPTIONS got a 2xx.
async fn walk_target(t: &Target, probe: &Probe<'_>, wire: String, report: &mut PartnerReport) -> bool {
    let snap = probe.snap;
    let at = Some(format!("{}:{}", t.host, t.port));
    let domain = report.domain.clone();
    let steps = &mut report.steps;

    let addr = match crate::proxy::forward::resolve_address(&t.host, t.port, snap, probe.resolver).await {
        Ok(a) => {
            steps.push(pass("address", at.clone(), format!("{} -> {}", t.host, a.ip())));
            a
        }
        Err(r) => {
            steps.push(refused(
                "address",
                at,
                format!("{} has no A/AAAA record", t.host),
                &r,
                format!("publish an A (or AAAA) record for {}", t.host),
            ));
            return false;
        }
    };
    if t.transport != Transport::Tls {
        steps.push(policy_fail_text(
            &format!("the route leaves over {}, not mutual TLS", t.transport),
            at,
            "federation routes are TLS on 5061",
        ));
        return false;
    }

    let local_ip = snap.interface(Interface::External).address;
    let tcp = match crate::transport::pool::connect_tcp(addr, local_ip, snap.limits.connect_timeout).await {
        Ok(s) => {
            steps.push(pass("tcp", at.clone(), format!("{local_ip} -> {addr}")));
            s
        }
        Err(e) => {
            let r = crate::proxy::respond::connect_failure(&e, &t.host, Interface::External, FEDERATION_TRANSPORT);
            steps.push(refused(
                "tcp",
                at,
                e.to_string(),
                &r,
                format!("nothing accepts connections on {addr}: the partner's Access Edge must listen there (TLS, port {}) and firewalls must let us in", t.port),
            ));
            return false;
        }
    };

    let Some(config) = probe.tls.clone() else {
        let r = crate::proxy::respond::connect_failure(&ConnectError::NoTls(Interface::External), &t.host, Interface::External, FEDERATION_TRANSPORT);
        steps.push(refused(
            "tls",
            at,
            "the external interface has no TLS certificate".into(),
            &r,
            "configure [interfaces.external.tls] cert, key and trust_anchors".into(),
        ));
        return false;
    };
    let started = Instant::now();
    let mut stream = match crate::transport::pool::tls_handshake(tcp, config, &t.tls_name, snap.limits.tls_handshake_timeout).await {
        Ok(s) => s,
        Err(e) => {
            certificate_failure(&e, t, at, snap, steps);
            return false;
        }
    };
    let (version, certs) = {
        let conn = stream.get_ref().1;
        (
            conn.protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_else(|| "TLS".into()),
            conn.peer_certificates().map(<[_]>::to_vec).unwrap_or_default(),
        )
    };
    steps.push(pass(
        "tls",
        at.clone(),
        format!(
            "{version} with our certificate for {} in {} ms",
            snap.external.fqdn,
            started.elapsed().as_millis()
        ),
    ));
    let (chain, expiry) = describe_chain(&certs);
    steps.push(pass("cert-chain", at.clone(), chain));
    steps.push(pass("cert-expiry", at.clone(), expiry));
    steps.push(pass(
        "cert-names",
        at.clone(),
        format!(
            "{} (must name {})",
            crate::tls::peer_identity(&certs).names().join(", "),
            t.tls_name
        ),
    ));

    // The OPTIONS over that connection.
    let started = Instant::now();
    match round_trip(&mut stream, wire.as_bytes()).await {
        Ok(m) if (200..300).contains(&m.status().unwrap_or(0)) => {
            steps.push(pass(
                "options",
                at,
                format!(
                    "{} {} in {} ms",
                    m.status().unwrap_or(0),
                    m.reason(),
                    started.elapsed().as_millis()
                ),
            ));
            true
        }
        Ok(m) => {
            let status = m.status().unwrap_or(0);
            // A partner's refusal without diagnostics reaches alice with the edge's 1034.
            let diagnostics = m
                .header_value(HeaderName::MsDiagnostics)
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| {
                    DiagnosticsValue::previous_hop_silent(
                        &domain,
                        &t.host,
                        &snap.external.fqdn,
                    )
                    .to_string()
                });
            steps.push(Step {
                step: "options",
                result: Outcome::Fail,
                target: at,
                detail: format!(
                    "the partner answered {status} {}; the edge relays that answer",
                    m.reason()
                ),
                status: Some(status),
                code: crate::sip::ms_headers::diagnostics_code(&diagnostics),
                diagnostics: Some(diagnostics),
                fix: Some("the partner's edge refuses us: its ms-diagnostics says why (for 403, check that it allows our domain and our edge's FQDN)".into()),
            });
            false
        }
        Err(RoundTrip::TimedOut) => {
            let (status, _) = Rule::ClientTimeout.default_status_and_code();
            steps.push(Step {
                step: "options",
                result: Outcome::Fail,
                target: at,
                detail: format!("no final response within {} s", ROUND_TRIP_TIMEOUT.as_secs()),
                status: Some(status),
                code: None,
                diagnostics: None,
                fix: Some("the partner's edge accepts TLS but does not answer SIP: check its logs".into()),
            });
            false
        }
        Err(RoundTrip::Io(e)) => {
            let r = crate::proxy::respond::connect_failure(
                &ConnectError::Handshake {
                    name: t.tls_name.clone(),
                    source: e,
                },
                &t.host,
                Interface::External,
                FEDERATION_TRANSPORT,
            );
            steps.push(refused(
                "options",
                at,
                "the partner closed the connection instead of answering".into(),
                &r,
                format!(
                    "with TLS 1.3 a peer that refuses our certificate closes here: the partner must trust our CA and the name {}",
                    snap.external.fqdn
                ),
            ));
            false
        }
        Err(RoundTrip::Garbled(e)) => {
            steps.push(Step {
                step: "options",
                result: Outcome::Fail,
                target: at,
                detail: format!("the answer is not SIP: {e}"),
                status: None,
                code: None,
                diagnostics: None,
                fix: Some("the port answers something other than SIP over TLS".into()),
            });
            false
        }
    }
}

/// The failed handshake: which certificate check refused the peer (chain, then validity,
/// then the name, in the order the verifier takes them), or a negotiation failure.
fn certificate_failure(
    e: &ConnectError,
    t: &Target,
    at: Option<String>,
    snap: &Snapshot,
    steps: &mut Vec<Step>,
) {
    let r = crate::proxy::respond::connect_failure(e, &t.host, Interface::External, FEDERATION_TRANSPORT);
    let refused_cert = match e {
        ConnectError::Handshake { source, .. } => crate::tls::refused_certificate(source),
        _ => None,
    };
    let Some(cert) = refused_cert else {
        steps.push(refused(
            "tls",
            at,
            e.to_string(),
            &r,
            format!(
                "the partner did not complete TLS with our certificate ({}): it must trust our CA, and accept TLS 1.2 or 1.3",
                snap.external.fqdn
            ),
        ));
        return;
    };
    let anchors = snap
        .external
        .tls
        .as_ref()
        .map(|t| {
            t.trust_anchors
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    match cert {
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            let presented = match cert {
                CertificateError::NotValidForNameContext { presented, .. } => presented
                    .iter()
                    .map(|n| presented_name(n))
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => "other names".into(),
            };
            steps.push(pass("cert-chain", at.clone(), "issued by a CA we trust".into()));
            steps.push(pass("cert-expiry", at.clone(), "valid now".into()));
            steps.push(refused(
                "cert-names",
                at,
                format!("the certificate names {presented}, not {}", t.tls_name),
                &r,
                format!(
                    "the partner's certificate must carry {} as a DNS SAN; or, if {presented} is the edge to use, correct the SRV target or ProxyFqdn",
                    t.tls_name
                ),
            ));
        }
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => {
            steps.push(pass("cert-chain", at.clone(), "issued by a CA we trust".into()));
            steps.push(refused(
                "cert-expiry",
                at,
                format!("the certificate is outside its validity ({cert:?})"),
                &r,
                "the partner must renew its certificate (or the clocks disagree)".into(),
            ));
        }
        other => steps.push(refused(
            "cert-chain",
            at,
            format!("the certificate does not verify: {other:?}"),
            &r,
            format!(
                "add the partner's CA to [interfaces.external.tls] trust_anchors (now: {anchors}), or the partner must present a certificate from a CA we trust"
            ),
        )),
    }
}

/// A name as the verifier reports it (`DnsName("sip.x.test")`), as the certificate holds it.
fn presented_name(n: &str) -> &str {
    n.split_once("(\"")
        .and_then(|(_, rest)| rest.strip_suffix("\")"))
        .unwrap_or(n)
}

/// The chain and validity lines of a verified certificate chain.
fn describe_chain(certs: &[rustls_pki_types::CertificateDer<'_>]) -> (String, String) {
    let parsed: Vec<_> = certs
        .iter()
        .filter_map(|c| x509_parser::parse_x509_certificate(c).ok().map(|(_, x)| x))
        .collect();
    let Some(leaf) = parsed.first() else {
        return ("verified".into(), "valid now".into());
    };
    let issuer = parsed.last().map_or(String::new(), |c| c.issuer().to_string());
    let chain = format!(
        "{} certificate(s) up to {issuer}, verified against our trust anchors",
        certs.len()
    );
    let not_after = leaf.validity().not_after;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let days = (not_after.timestamp() - now) / 86_400;
    let expiry = if days < 30 {
        format!("valid until {not_after} ({days} days left: renew soon)")
    } else {
        format!("valid until {not_after} ({days} days left)")
    };
    (chain, expiry)
}

// === the OPTIONS ===

enum RoundTrip {
    TimedOut,
    Io(std::io::Error),
    Garbled(String),
}

/// Sends `request` and reads until its final response (provisional ones are skipped).
async fn round_trip<S>(io: &mut S, request: &[u8]) -> Result<Message, RoundTrip>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let until = tokio::time::Instant::now() + ROUND_TRIP_TIMEOUT;
    io.write_all(request).await.map_err(RoundTrip::Io)?;
    io.flush().await.map_err(RoundTrip::Io)?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match framing::scan(&buf, &FrameLimits::default()) {
            Ok(Scan::Message { len }) => {
                let m = Message::parse(buf.split_to(len).freeze(), false)
                    .map_err(|e| RoundTrip::Garbled(e.to_string()))?;
                if !m.is_request() && m.status().unwrap_or(0) >= 200 {
                    return Ok(m);
                }
                continue;
            }
            Ok(Scan::KeepAlive { len, .. }) => {
                buf.advance(len);
                continue;
            }
            Ok(Scan::Incomplete) => {}
            Err(e) => return Err(RoundTrip::Garbled(e.to_string())),
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(until, io.read(&mut chunk)).await {
            Err(_) => return Err(RoundTrip::TimedOut),
            Ok(Ok(0)) => {
                return Err(RoundTrip::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "closed before a final response",
                )))
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(RoundTrip::Io(e)),
        }
    }
}

/// The probe: an OPTIONS to the domain, with the edge's marking when it leaves.
fn options_text(
    domain: &str,
    from: &str,
    via: &str,
    call_id: &str,
    tag: &str,
    marking: Option<&str>,
) -> String {
    let mut s = format!(
        "OPTIONS sip:{domain} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag={tag}\r\nTo: <sip:{domain}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nAccept: application/sdp\r\n"
    );
    if let Some(m) = marking {
        let _ = write!(s, "{}: {m}\r\n", crate::sip::ms_headers::TRUST_HEADER);
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s
}

fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

// === steps ===

fn pass(step: &'static str, target: Option<String>, detail: String) -> Step {
    Step {
        step,
        result: Outcome::Pass,
        target,
        detail,
        status: None,
        code: None,
        diagnostics: None,
        fix: None,
    }
}

fn skip(step: &'static str, target: Option<String>, detail: &str) -> Step {
    Step {
        result: Outcome::Skip,
        ..pass(step, target, detail.to_string())
    }
}

/// A failed step with the refusal the edge would answer.
fn refused(step: &'static str, target: Option<String>, detail: String, r: &Rejection, fix: String) -> Step {
    Step {
        step,
        result: Outcome::Fail,
        target,
        detail,
        status: Some(r.status),
        code: r.code(),
        diagnostics: r.diagnostics.as_ref().map(|d| d.header_value()),
        fix: Some(fix),
    }
}

/// A failed policy step that is not one of the edge's refusals (the domain is ours…).
fn policy_fail_text(detail: &str, target: Option<String>, fix: &str) -> Step {
    Step {
        result: Outcome::Fail,
        fix: Some(fix.to_string()),
        ..pass("policy", target, detail.to_string())
    }
}

// === impl PartnerReport ===

impl PartnerReport {
    /// The failing step's `ms-diagnostics` code: the one the edge sends for this domain.
    pub fn code(&self) -> Option<u32> {
        self.failure().and_then(|s| s.code)
    }

    /// The last failed step (the one that decided, after any failover).
    pub fn failure(&self) -> Option<&Step> {
        if self.passed {
            return None;
        }
        self.steps.iter().rev().find(|s| s.result == Outcome::Fail)
    }

    /// One line per step; a failure adds the edge's answer and the fix, indented.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Test-CsFederatedPartner -Domain {} (the edge's route for an OPTIONS from {})\n",
            self.domain, self.from
        );
        for s in &self.steps {
            let word = match s.result {
                Outcome::Pass => "pass",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "skip",
            };
            let target = s.target.as_deref().map(|t| format!("[{t}] ")).unwrap_or_default();
            let _ = writeln!(out, "  {word:<4}  {:<11}  {target}{}", s.step, s.detail);
            if s.result == Outcome::Fail {
                if let Some(status) = s.status {
                    let _ = writeln!(
                        out,
                        "                     edge answers: {status} {}{}",
                        crate::policy::reason_phrase(status),
                        s.diagnostics
                            .as_deref()
                            .map(|d| format!(", ms-diagnostics: {d}"))
                            .unwrap_or_default()
                    );
                }
                if let Some(fix) = &s.fix {
                    let _ = writeln!(out, "                     fix: {fix}");
                }
            }
        }
        match (self.passed, self.code()) {
            (true, _) => out.push_str("Result: PASS\n"),
            (false, Some(c)) => {
                let _ = writeln!(out, "Result: FAIL (ms-diagnostics {c})");
            }
            (false, None) => out.push_str("Result: FAIL\n"),
        }
        out
    }

    /// The report as JSON, for scripts (`--json`).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("code".into(), self.code().into());
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_names_lose_the_verifiers_wrapping() {
        assert_eq!(presented_name("DnsName(\"sip.elsewhere.test\")"), "sip.elsewhere.test");
        assert_eq!(presented_name("sip.x.test"), "sip.x.test");
    }

    #[test]
    fn the_probe_is_an_options_for_the_domain_with_the_marking_when_given() {
        let text = options_text(
            "fabrikam.test",
            "sip:check-partner@contoso.test",
            "SIP/2.0/TLS accessedge.contoso.test:5061;branch=z9hG4bKx",
            "c1",
            "t1",
            Some("ms-source-type=EdgeProxyGenerated;ms-ep-fqdn=accessedge.contoso.test"),
        );
        let m = Message::parse(Bytes::from(text), true).expect("valid SIP");
        m.validate_request().expect("a valid request");
        let facts = crate::proxy::request_facts(&m);
        assert_eq!((facts.method, facts.uri_host), ("OPTIONS", "fabrikam.test"));
        assert_eq!(facts.from_host, "contoso.test");
        assert!(!facts.addressed_to_edge);
        assert_eq!(
            m.header_value(HeaderName::MsTrust).as_deref(),
            Some("ms-source-type=EdgeProxyGenerated;ms-ep-fqdn=accessedge.contoso.test")
        );
    }

    #[test]
    fn domains_are_read_by_the_cmdlets_validator() {
        assert_eq!(parse_domain("Fabrikam.Test.").unwrap(), "fabrikam.test");
        assert!(matches!(parse_domain("x@@live.com"), Err(CheckError::BadDomain(_))));
    }
}
