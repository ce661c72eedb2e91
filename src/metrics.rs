//! Counters for `/metrics`, rendered in the Prometheus text exposition format (0.0.4).
//!
//! Every label set is fixed and indexed directly (interface × direction × method, status
//! 100..=699, TLS side × reason), so recording is one relaxed atomic add. Decision rules
//! are `&'static str`s: each claims a slot of a small open-addressed table once
//! (`OnceLock`), after which recording is a hash of the rule name and an atomic add.
//! No lock is taken on the message path.
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `sipedge_messages_total` | counter | `interface`, `direction` (`in`/`out`), `method` |
//! | `sipedge_decisions_total` | counter | `outcome` (`forward`/`reject`/`answer`), `rule` |
//! | `sipedge_monitored_decisions_total` | counter | `outcome`: decisions on traffic with an allowed domain marked MarkForMonitoring |
//! | `sipedge_responses_total` | counter | `status` (responses the edge sends or relays) |
//! | `sipedge_transaction_duration_seconds` | histogram | request received → final response sent |
//! | `sipedge_tls_handshakes_total` | counter | `side` (`inbound`/`outbound`), `result` (`ok`/`failed`) |
//! | `sipedge_tls_handshake_failures_total` | counter | `side`, `reason` |
//! | `sipedge_dns_lookups_total`, `sipedge_dns_cache_hits_total` | counter | |
//! | `sipedge_open_connections` | gauge | |
//! | `sipedge_discovered_partner_events_total` | counter | `event` (`suspicious`, `watch-listed`, `released`, `report`) |
//! | `sipedge_flagged_partners` | gauge | discovered partners on the watch list or throttled as suspicious |
//! | `sipedge_trace_dropped_total` | counter | messages `[trace]` did not record because its writer fell behind (only while recording) |
//! | `sipedge_transactions`, `sipedge_transaction_bytes` | gauge | transactions in flight and the bytes they keep alive (`memory_budget_bytes`) |
//! | `sipedge_suppressed_log_lines_total` | counter | `reason` (`crate::lograte`) |

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use crate::sip::Method;
use crate::transport::Interface;

const METHODS: [&str; 17] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "MESSAGE",
    "SUBSCRIBE",
    "NOTIFY",
    "INFO",
    "REFER",
    "UPDATE",
    "PRACK",
    "PUBLISH",
    "BENOTIFY",
    "SERVICE",
    "OTHER",
];

fn method_index(m: Method) -> usize {
    match m {
        Method::Invite => 0,
        Method::Ack => 1,
        Method::Bye => 2,
        Method::Cancel => 3,
        Method::Options => 4,
        Method::Register => 5,
        Method::Message => 6,
        Method::Subscribe => 7,
        Method::Notify => 8,
        Method::Info => 9,
        Method::Refer => 10,
        Method::Update => 11,
        Method::Prack => 12,
        Method::Publish => 13,
        Method::Benotify => 14,
        Method::Service => 15,
        Method::Other => 16,
    }
}

const INTERFACES: [Interface; 2] = [Interface::Internal, Interface::External];

fn iface_index(i: Interface) -> usize {
    match i {
        Interface::Internal => 0,
        Interface::External => 1,
    }
}

/// Which way a message went through an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In = 0,
    Out = 1,
}

const DIRECTIONS: [&str; 2] = ["in", "out"];

/// Which end of the TLS handshake the edge played.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSide {
    /// An accepted connection (the edge is the server).
    Inbound = 0,
    /// A pool connection (the edge is the client).
    Outbound = 1,
}

const SIDES: [&str; 2] = ["inbound", "outbound"];

/// Why a TLS handshake failed, coarsely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// It did not finish in time.
    Timeout = 0,
    /// The certificate was refused (ours or theirs), or none was presented.
    Certificate = 1,
    /// The peer sent an alert that is not about certificates.
    Alert = 2,
    /// Any other TLS protocol error (versions, ciphers, malformed records).
    Protocol = 3,
    /// The connection broke (reset, EOF) before the handshake finished.
    Io = 4,
}

const FAILURES: [&str; 5] = ["timeout", "certificate", "alert", "protocol", "io"];

impl TlsFailure {
    /// Classifies the error a tokio-rustls handshake returned.
    pub fn of(err: &std::io::Error) -> TlsFailure {
        use rustls::{AlertDescription as A, Error as E};
        match err.get_ref().and_then(|e| e.downcast_ref::<E>()) {
            Some(
                E::InvalidCertificate(_)
                | E::NoCertificatesPresented
                | E::AlertReceived(
                    A::BadCertificate
                    | A::UnsupportedCertificate
                    | A::CertificateRevoked
                    | A::CertificateExpired
                    | A::CertificateUnknown
                    | A::UnknownCA
                    | A::CertificateRequired,
                ),
            ) => TlsFailure::Certificate,
            Some(E::AlertReceived(_)) => TlsFailure::Alert,
            Some(_) => TlsFailure::Protocol,
            None if err.kind() == std::io::ErrorKind::TimedOut => TlsFailure::Timeout,
            None => TlsFailure::Io,
        }
    }
}

/// Upper bounds (seconds) of the latency histogram's buckets; `+Inf` is implicit.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 32.0,
];

/// A histogram with fixed buckets; counts are kept per bucket and summed when rendered.
pub struct Histogram {
    /// Non-cumulative counts; the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len() + 1],
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut total = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Relaxed);
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |v| v.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {total}");
        }
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {total}");
    }
}

const OUTCOMES: [&str; 3] = ["forward", "reject", "answer"];
const RULE_SLOTS: usize = 128;

/// `(outcome, rule)` → count, without a lock: a slot's key is set once, then only added to.
struct RuleTable {
    keys: [OnceLock<(u8, &'static str)>; RULE_SLOTS],
    counts: [AtomicU64; RULE_SLOTS],
    /// Decisions whose rule found no free slot.
    overflow: AtomicU64,
}

impl Default for RuleTable {
    fn default() -> Self {
        RuleTable {
            keys: [const { OnceLock::new() }; RULE_SLOTS],
            counts: [const { AtomicU64::new(0) }; RULE_SLOTS],
            overflow: AtomicU64::new(0),
        }
    }
}

impl RuleTable {
    fn add(&self, outcome: u8, rule: &'static str) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (outcome, rule).hash(&mut h);
        let start = h.finish() as usize;
        for i in 0..RULE_SLOTS {
            let slot = (start + i) % RULE_SLOTS;
            let key = self.keys[slot].get_or_init(|| (outcome, rule));
            if key.0 == outcome && key.1 == rule {
                self.counts[slot].fetch_add(1, Relaxed);
                return;
            }
        }
        self.overflow.fetch_add(1, Relaxed);
    }
}

/// What happened to a discovered partner (`sipedge_discovered_partner_events_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartnerMetric {
    /// It became suspicious and is throttled to 1 msg/s.
    Suspicious = 0,
    /// It went on the watch list (MaxContactsPerDiscoveredPartner).
    WatchListed = 1,
    /// An administrator released it.
    Released = 2,
    /// A DiscoveredPartnerReportPeriodMinutes report was published.
    Report = 3,
}

const PARTNER_EVENTS: [&str; 4] = ["suspicious", "watch-listed", "released", "report"];

/// What `/metrics` reads from elsewhere at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub open_connections: usize,
    /// `(lookups, cache hits)`, when the edge has a caching resolver.
    pub dns: Option<(u64, u64)>,
    /// Discovered partners on the watch list or throttled as suspicious.
    pub flagged_partners: usize,
    /// Transactions in flight and the bytes they keep alive.
    pub transactions: usize,
    pub transaction_bytes: usize,
}

/// The edge's counters; one per `Core`, shared by every task.
pub struct Metrics {
    /// `[interface][direction][method]`.
    messages: [[[AtomicU64; METHODS.len()]; 2]; 2],
    decisions: RuleTable,
    /// `[outcome]`: decisions on traffic with a MarkForMonitoring domain.
    monitored: [AtomicU64; OUTCOMES.len()],
    /// Index `status - 100` for 100..=699.
    responses: [AtomicU64; 600],
    latency: Histogram,
    /// `[side][0 = ok, 1 = failed]`.
    tls: [[AtomicU64; 2]; 2],
    /// `[side][reason]`.
    tls_failures: [[AtomicU64; FAILURES.len()]; 2],
    /// By `PartnerMetric`.
    partners: [AtomicU64; PARTNER_EVENTS.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            messages: [const { [const { [const { AtomicU64::new(0) }; METHODS.len()] }; 2] }; 2],
            decisions: RuleTable::default(),
            monitored: [const { AtomicU64::new(0) }; OUTCOMES.len()],
            responses: [const { AtomicU64::new(0) }; 600],
            latency: Histogram::default(),
            tls: [const { [const { AtomicU64::new(0) }; 2] }; 2],
            tls_failures: [const { [const { AtomicU64::new(0) }; FAILURES.len()] }; 2],
            partners: [const { AtomicU64::new(0) }; PARTNER_EVENTS.len()],
        }
    }
}

impl Metrics {
    /// A message received on (`In`) or sent through (`Out`) an interface.
    pub fn message(&self, iface: Interface, dir: Direction, method: Method) {
        self.messages[iface_index(iface)][dir as usize][method_index(method)].fetch_add(1, Relaxed);
    }

    /// A policy decision; `outcome` is `forward`, `reject` or `answer`.
    pub fn decision(&self, outcome: &str, rule: &'static str) {
        let o = OUTCOMES.iter().position(|x| *x == outcome).unwrap_or(1) as u8;
        self.decisions.add(o, rule);
    }

    /// A decision on traffic with an allowed domain marked for monitoring.
    pub fn monitored_decision(&self, outcome: &str) {
        let o = OUTCOMES.iter().position(|x| *x == outcome).unwrap_or(1);
        self.monitored[o].fetch_add(1, Relaxed);
    }

    /// A response the edge sent (generated or relayed). Statuses outside 100..=699 are not counted.
    pub fn response(&self, status: u16) {
        if let Some(c) = (status as usize)
            .checked_sub(100)
            .and_then(|i| self.responses.get(i))
        {
            c.fetch_add(1, Relaxed);
        }
    }

    /// The time from a request's arrival to its final response leaving.
    pub fn transaction_done(&self, took: Duration) {
        self.latency.observe(took);
    }

    /// Something happened to a discovered partner.
    pub fn partner(&self, e: PartnerMetric) {
        self.partners[e as usize].fetch_add(1, Relaxed);
    }

    pub fn tls_ok(&self, side: TlsSide) {
        self.tls[side as usize][0].fetch_add(1, Relaxed);
    }

    pub fn tls_failed(&self, side: TlsSide, why: TlsFailure) {
        self.tls[side as usize][1].fetch_add(1, Relaxed);
        self.tls_failures[side as usize][why as usize].fetch_add(1, Relaxed);
    }

    /// The exposition text. Counters at zero are left out of labelled families (except
    /// the TLS totals and the histogram), which keeps the page short.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "sipedge_messages_total",
            "counter",
            "SIP messages by interface, direction and method (responses by their CSeq method).",
        );
        for (i, iface) in INTERFACES.iter().enumerate() {
            for (d, dir) in DIRECTIONS.iter().enumerate() {
                for (m, method) in METHODS.iter().enumerate() {
                    let v = self.messages[i][d][m].load(Relaxed);
                    if v > 0 {
                        sample(
                            &mut out,
                            "sipedge_messages_total",
                            &[
                                ("interface", iface.as_str()),
                                ("direction", dir),
                                ("method", method),
                            ],
                            v,
                        );
                    }
                }
            }
        }
        header(
            &mut out,
            "sipedge_decisions_total",
            "counter",
            "Policy decisions by outcome and rule.",
        );
        for (k, c) in self.decisions.keys.iter().zip(&self.decisions.counts) {
            if let Some((o, rule)) = k.get() {
                let labels = [("outcome", OUTCOMES[*o as usize]), ("rule", *rule)];
                sample(
                    &mut out,
                    "sipedge_decisions_total",
                    &labels,
                    c.load(Relaxed),
                );
            }
        }
        let overflow = self.decisions.overflow.load(Relaxed);
        if overflow > 0 {
            let labels = [("outcome", "other"), ("rule", "other")];
            sample(&mut out, "sipedge_decisions_total", &labels, overflow);
        }
        header(
            &mut out,
            "sipedge_monitored_decisions_total",
            "counter",
            "Decisions on traffic with an allowed domain marked MarkForMonitoring, by outcome.",
        );
        for (o, c) in self.monitored.iter().enumerate() {
            let v = c.load(Relaxed);
            if v > 0 {
                sample(
                    &mut out,
                    "sipedge_monitored_decisions_total",
                    &[("outcome", OUTCOMES[o])],
                    v,
                );
            }
        }
        header(
            &mut out,
            "sipedge_responses_total",
            "counter",
            "Responses the edge sent or relayed, by status.",
        );
        for (i, c) in self.responses.iter().enumerate() {
            let v = c.load(Relaxed);
            if v > 0 {
                let status = (i + 100).to_string();
                sample(
                    &mut out,
                    "sipedge_responses_total",
                    &[("status", &status)],
                    v,
                );
            }
        }
        header(
            &mut out,
            "sipedge_transaction_duration_seconds",
            "histogram",
            "Time from a request's arrival to its final response leaving the edge.",
        );
        self.latency
            .render(&mut out, "sipedge_transaction_duration_seconds");
        header(
            &mut out,
            "sipedge_tls_handshakes_total",
            "counter",
            "TLS handshakes by side and result.",
        );
        for (s, side) in SIDES.iter().enumerate() {
            for (r, result) in ["ok", "failed"].iter().enumerate() {
                let labels = [("side", *side), ("result", *result)];
                sample(
                    &mut out,
                    "sipedge_tls_handshakes_total",
                    &labels,
                    self.tls[s][r].load(Relaxed),
                );
            }
        }
        header(
            &mut out,
            "sipedge_tls_handshake_failures_total",
            "counter",
            "Failed TLS handshakes by side and reason.",
        );
        for (s, side) in SIDES.iter().enumerate() {
            for (r, reason) in FAILURES.iter().enumerate() {
                let labels = [("side", *side), ("reason", *reason)];
                sample(
                    &mut out,
                    "sipedge_tls_handshake_failures_total",
                    &labels,
                    self.tls_failures[s][r].load(Relaxed),
                );
            }
        }
        let (lookups, hits) = g.dns.unwrap_or((0, 0));
        header(
            &mut out,
            "sipedge_dns_lookups_total",
            "counter",
            "DNS lookups asked of the caching resolver.",
        );
        sample(&mut out, "sipedge_dns_lookups_total", &[], lookups);
        header(
            &mut out,
            "sipedge_dns_cache_hits_total",
            "counter",
            "DNS lookups answered from the cache.",
        );
        sample(&mut out, "sipedge_dns_cache_hits_total", &[], hits);
        header(
            &mut out,
            "sipedge_open_connections",
            "gauge",
            "Open stream connections, inbound and outbound.",
        );
        sample(
            &mut out,
            "sipedge_open_connections",
            &[],
            g.open_connections as u64,
        );
        header(
            &mut out,
            "sipedge_discovered_partner_events_total",
            "counter",
            "Discovered partners made suspicious, put on the watch list or released, and reports published.",
        );
        for (i, event) in PARTNER_EVENTS.iter().enumerate() {
            let v = self.partners[i].load(Relaxed);
            sample(
                &mut out,
                "sipedge_discovered_partner_events_total",
                &[("event", event)],
                v,
            );
        }
        header(
            &mut out,
            "sipedge_flagged_partners",
            "gauge",
            "Discovered partners on the watch list or throttled as suspicious.",
        );
        sample(
            &mut out,
            "sipedge_flagged_partners",
            &[],
            g.flagged_partners as u64,
        );
        for (name, help, v) in [
            ("sipedge_transactions", "Transactions in flight (server and client).", g.transactions),
            (
                "sipedge_transaction_bytes",
                "Bytes the transactions in flight keep alive, as limits.memory_budget_bytes counts them.",
                g.transaction_bytes,
            ),
        ] {
            header(&mut out, name, "gauge", help);
            sample(&mut out, name, &[], v as u64);
        }
        header(
            &mut out,
            "sipedge_suppressed_log_lines_total",
            "counter",
            "Log lines a peer caused that were counted instead of written (crate::lograte), by reason.",
        );
        for reason in crate::lograte::NOISY {
            let v = crate::lograte::LOGS.suppressed(reason);
            sample(
                &mut out,
                "sipedge_suppressed_log_lines_total",
                &[("reason", reason.name())],
                v,
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], v: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_into(out, val);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {v}");
}

/// Label value escaping: backslash, double quote and newline.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `sipedge_trace_dropped_total`, appended while the edge records (`[trace]`).
pub fn render_trace_dropped(out: &mut String, dropped: u64) {
    header(
        out,
        "sipedge_trace_dropped_total",
        "counter",
        "Messages not recorded (pcap, HEP, ladder ring) because the trace writer fell behind.",
    );
    sample(out, "sipedge_trace_dropped_total", &[], dropped);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every non-comment line is `name{labels} value`, and every family has HELP and TYPE
    /// before its first sample.
    fn check_format(text: &str) {
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(typed.insert(name.to_string()), "TYPE twice: {name}");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect(line);
            value.parse::<f64>().expect(line);
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "sample before TYPE: {line}");
            assert!(name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        }
    }

    #[test]
    fn renders_valid_exposition_text() {
        let m = Metrics::default();
        m.message(Interface::External, Direction::In, Method::Invite);
        m.message(Interface::External, Direction::In, Method::Invite);
        m.message(Interface::Internal, Direction::Out, Method::Other);
        m.decision("forward", "federated-partner");
        m.decision("reject", "blocked-domain");
        m.decision("reject", "blocked-domain");
        m.response(200);
        m.response(99);
        m.response(700);
        m.tls_ok(TlsSide::Inbound);
        m.tls_failed(TlsSide::Outbound, TlsFailure::Certificate);
        let text = m.render(&Gauges {
            open_connections: 3,
            dns: Some((5, 2)),
            flagged_partners: 1,
            transactions: 4,
            transaction_bytes: 4096,
        });
        check_format(&text);
        for line in [
            "# HELP sipedge_messages_total ",
            "# TYPE sipedge_messages_total counter\n",
            "sipedge_messages_total{interface=\"external\",direction=\"in\",method=\"INVITE\"} 2\n",
            "sipedge_messages_total{interface=\"internal\",direction=\"out\",method=\"OTHER\"} 1\n",
            "sipedge_decisions_total{outcome=\"reject\",rule=\"blocked-domain\"} 2\n",
            "sipedge_decisions_total{outcome=\"forward\",rule=\"federated-partner\"} 1\n",
            "sipedge_responses_total{status=\"200\"} 1\n",
            "sipedge_tls_handshakes_total{side=\"inbound\",result=\"ok\"} 1\n",
            "sipedge_tls_handshakes_total{side=\"outbound\",result=\"failed\"} 1\n",
            "sipedge_tls_handshake_failures_total{side=\"outbound\",reason=\"certificate\"} 1\n",
            "sipedge_dns_lookups_total 5\n",
            "sipedge_dns_cache_hits_total 2\n",
            "# TYPE sipedge_open_connections gauge\nsipedge_open_connections 3\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert_eq!(text.matches("sipedge_responses_total{").count(), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "x", &[("a", "q\"b\\s\nn")], 1);
        assert_eq!(out, "x{a=\"q\\\"b\\\\s\\nn\"} 1\n");
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_sum_and_count() {
        let m = Metrics::default();
        for ms in [1, 7, 7, 300, 40_000] {
            m.transaction_done(Duration::from_millis(ms));
        }
        let text = m.render(&Gauges::default());
        check_format(&text);
        let n = "sipedge_transaction_duration_seconds";
        let buckets: Vec<(String, u64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{n}_bucket{{le=\"")))
            .map(|l| {
                let (le, v) = l.split_once("\"} ").unwrap();
                (le.to_string(), v.parse().unwrap())
            })
            .collect();
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(buckets[0], ("0.005".into(), 1));
        assert_eq!(buckets[1], ("0.01".into(), 3));
        assert_eq!(buckets[6], ("0.5".into(), 4));
        assert_eq!(buckets[11], ("32".into(), 4));
        assert_eq!(buckets.last().unwrap(), &("+Inf".to_string(), 5));
        assert!(text.contains(&format!("{n}_sum 40.315\n")), "{text}");
        assert!(text.contains(&format!("{n}_count 5\n")));
    }

    #[test]
    fn many_rules_overflow_into_one_series() {
        let m = Metrics::default();
        let names: Vec<&'static str> = (0..RULE_SLOTS + 5)
            .map(|i| &*Box::leak(format!("r{i}").into_boxed_str()))
            .collect();
        for n in &names {
            m.decision("forward", n);
        }
        let text = m.render(&Gauges::default());
        check_format(&text);
        assert!(text.contains("sipedge_decisions_total{outcome=\"other\",rule=\"other\"} 5\n"));
    }

    #[test]
    fn classifies_handshake_failures() {
        use std::io::{Error, ErrorKind};
        let cert = Error::new(
            ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        );
        assert_eq!(TlsFailure::of(&cert), TlsFailure::Certificate);
        let alert = Error::new(
            ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
        );
        assert_eq!(TlsFailure::of(&alert), TlsFailure::Alert);
        assert_eq!(
            TlsFailure::of(&Error::from(ErrorKind::UnexpectedEof)),
            TlsFailure::Io
        );
    }
}
