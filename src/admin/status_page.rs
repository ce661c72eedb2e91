//! The admin endpoint's status page (`GET /`): the lab's roles and faults, the last
//! decisions with their final status (each linking to its ladder) and the main counters,
//! as one server-rendered HTML page that reloads itself. Nothing to build and no script:
//! a `<meta http-equiv="refresh">` does the refreshing.
//!
//! [`render`] is pure (data in, page out); the route gathers the data. Everything that
//! came from the network (Call-IDs, URIs, rule notes, diagnostics) is HTML-escaped, and a
//! Content-Security-Policy that allows no script at all backs the escaping up.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::http::percent_encode;
use crate::proxy::record::DecisionRecord;
use crate::trace::ladder::escape;

/// How often the page reloads itself, in seconds.
pub const REFRESH_SECS: u32 = 5;

/// One simulated peer of the lab, as the page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRow {
    pub role: String,
    pub fqdn: String,
    pub address: String,
    /// `listening`, the PIC state, a tripwire's contacts (`lab::run::role_state`).
    pub state: String,
    /// The injected fault (`sipedge admin fault`), `None` when it has none.
    pub fault: Option<String>,
}

/// What the page shows.
#[derive(Debug, Clone)]
pub struct Status<'a> {
    /// The edge's external FQDN, for the title.
    pub edge: &'a str,
    pub now: SystemTime,
    /// The lab's simulated peers and the lab clock; `None` outside `sipedge lab`.
    pub lab: Option<(&'a [RoleRow], SystemTime)>,
    /// The decision log's last records, oldest first (shown newest first).
    pub decisions: &'a [DecisionRecord],
    /// Whether the edge keeps ladders (`[trace] ring_bytes` > 0): only then is a Call-ID a link.
    pub ladders: bool,
    /// The counters in the Prometheus text format, as `/metrics` serves them.
    pub metrics: &'a str,
    /// The admin token, carried in the links so that a browser following them is let in.
    pub token: &'a str,
}

/// The counter families the page shows, in order, with their caption.
const COUNTERS: &[(&str, &str)] = &[
    ("sipedge_messages_total", "SIP messages"),
    ("sipedge_decisions_total", "decisions"),
    ("sipedge_responses_total", "responses sent or relayed"),
    (
        "sipedge_transaction_duration_seconds_count",
        "finished transactions",
    ),
    ("sipedge_transactions", "transactions in flight"),
    ("sipedge_open_connections", "open connections"),
    ("sipedge_tls_handshakes_total", "TLS handshakes"),
    (
        "sipedge_tls_handshake_failures_total",
        "failed TLS handshakes",
    ),
    ("sipedge_flagged_partners", "flagged discovered partners"),
    ("sipedge_trace_dropped_total", "messages not traced"),
];

const STYLE: &str = "body{font-family:sans-serif;margin:1em 2em}table{border-collapse:collapse;margin-bottom:1em}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}td.mono,a.ladder{font-family:monospace}.s2{color:#080}.s3,.s4,.s5,.s6{color:#b00;font-weight:bold}.fault{color:#b00}p.meta{color:#666}";

/// The page.
pub fn render(s: &Status) -> String {
    let mut out = String::with_capacity(8192);
    let edge = escape(s.edge);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>sipedge status {edge}</title><style>{STYLE}</style></head><body>\n\
         <h1>sipedge status: {edge}</h1>\n<p class=\"meta\">at {}",
        crate::logfmt::rfc3339(s.now)
    );
    if let Some((_, lab_time)) = s.lab {
        let _ = write!(out, "; lab time {}", crate::logfmt::rfc3339(lab_time));
    }
    let _ = writeln!(out, "; refreshes every {REFRESH_SECS} s</p>");
    roles(&mut out, s.lab.map(|(r, _)| r));
    decisions(&mut out, s);
    counters(&mut out, s.metrics);
    out.push_str("</body></html>\n");
    out
}

fn roles(out: &mut String, lab: Option<&[RoleRow]>) {
    out.push_str("<h2>Lab roles</h2>\n");
    let Some(rows) = lab else {
        out.push_str("<p id=\"roles\">not a lab: this edge simulates no peers</p>\n<h2>Active faults</h2>\n<p id=\"faults\">none (faults exist in <code>sipedge lab</code> only)</p>\n");
        return;
    };
    out.push_str("<table id=\"roles\"><tr><th>role</th><th>FQDN</th><th>address</th><th>state</th><th>fault</th></tr>\n");
    for r in rows {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td{}>{}</td></tr>",
            escape(&r.role),
            escape(&r.fqdn),
            escape(&r.address),
            escape(&r.state),
            if r.fault.is_some() {
                " class=\"fault\""
            } else {
                ""
            },
            escape(r.fault.as_deref().unwrap_or("none"))
        );
    }
    out.push_str("</table>\n<h2>Active faults</h2>\n");
    let active: Vec<&RoleRow> = rows.iter().filter(|r| r.fault.is_some()).collect();
    if active.is_empty() {
        out.push_str("<p id=\"faults\">none</p>\n");
        return;
    }
    out.push_str("<ul id=\"faults\">\n");
    for r in active {
        let _ = writeln!(
            out,
            "<li class=\"fault\">{} ({}): {}</li>",
            escape(&r.role),
            escape(&r.fqdn),
            escape(r.fault.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</ul>\n");
}

fn decisions(out: &mut String, s: &Status) {
    let _ = writeln!(
        out,
        "<h2>Last decisions</h2>\n<p class=\"meta\">newest first; {}</p>",
        if s.ladders {
            "a Call-ID links to its ladder"
        } else {
            "no ladders: [trace] ring_bytes = 0"
        }
    );
    if s.decisions.is_empty() {
        out.push_str("<p id=\"decisions\">no decision yet</p>\n");
        return;
    }
    out.push_str("<table id=\"decisions\"><tr><th>time</th><th>Call-ID</th><th>request</th><th>from</th><th>outcome</th><th>rule</th><th>final status</th><th>took</th><th>ms-diagnostics</th></tr>\n");
    let token = percent_encode(s.token);
    for d in s.decisions.iter().rev() {
        let call_id = escape(&d.call_id);
        let call = if s.ladders {
            let href = format!(
                "/ladder?call-id={}&token={token}",
                percent_encode(&d.call_id)
            );
            format!(
                "<a class=\"ladder\" href=\"{}\">{call_id}</a>",
                escape(&href)
            )
        } else {
            call_id
        };
        let status = match d.status {
            0 => "<td>none</td>".to_string(),
            code => format!("<td class=\"s{}\">{code}</td>", code / 100),
        };
        let took = d
            .took
            .map(|t| format!("{:.1} ms", t.as_secs_f64() * 1000.0))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<tr class=\"decision\"><td>{}</td><td>{call}</td><td class=\"mono\">{} {}</td><td>{}/{} {}</td><td>{}</td><td>{}</td>{status}<td>{took}</td><td>{}</td></tr>",
            crate::logfmt::rfc3339(d.at),
            escape(&d.method),
            escape(&d.request_uri),
            d.interface,
            d.transport,
            d.peer,
            escape(d.outcome),
            escape(d.rule),
            escape(d.ms_diagnostics.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</table>\n");
}

fn counters(out: &mut String, metrics: &str) {
    out.push_str("<h2>Counters</h2>\n<table id=\"counters\"><tr><th>counter</th><th>labels</th><th>value</th></tr>\n");
    for (family, caption) in COUNTERS {
        for (labels, value) in samples(metrics, family) {
            let _ = writeln!(
                out,
                "<tr><td title=\"{}\">{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                escape(family),
                escape(caption),
                escape(labels),
                escape(value)
            );
        }
    }
    out.push_str("</table>\n");
}

/// The samples of one family in the Prometheus text format: (labels as written, value).
/// Labelled samples at zero are left out, as `/metrics` leaves most of them out.
fn samples<'m>(metrics: &'m str, family: &str) -> Vec<(&'m str, &'m str)> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = match series.strip_prefix(family)? {
                "" => "",
                rest => rest.strip_prefix('{')?.strip_suffix('}')?,
            };
            (labels.is_empty() || value != "0").then_some((labels, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Interface, Transport};
    use std::time::Duration;

    fn decision(call_id: &str, status: u16) -> DecisionRecord {
        DecisionRecord {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            call_id: call_id.into(),
            method: "MESSAGE".into(),
            request_uri: "sip:dan@tailspin.test".into(),
            from: "<sip:alice@contoso.test>".into(),
            to: "<sip:dan@tailspin.test>".into(),
            interface: Interface::Internal,
            transport: Transport::Tls,
            peer: "127.0.0.1:40000".parse().unwrap(),
            identity: vec![],
            outcome: "forward",
            rule: "allowed-domain",
            status,
            took: Some(Duration::from_micros(2500)),
            ms_diagnostics: None,
            trail: vec![],
        }
    }

    fn page<'a>(decisions: &'a [DecisionRecord], lab: Option<&'a [RoleRow]>) -> String {
        render(&Status {
            edge: "accessedge.contoso.test",
            now: SystemTime::UNIX_EPOCH,
            lab: lab.map(|r| (r, SystemTime::UNIX_EPOCH)),
            decisions,
            ladders: true,
            metrics: "# HELP sipedge_open_connections x\nsipedge_open_connections 3\nsipedge_messages_total{interface=\"internal\",direction=\"in\",method=\"MESSAGE\"} 2\nsipedge_responses_total{status=\"200\"} 0\nsipedge_transaction_duration_seconds_count 1\nsipedge_transaction_duration_seconds_sum 0.1\n",
            token: "t0k en",
        })
    }

    #[test]
    fn a_hostile_call_id_is_escaped_in_the_text_and_in_its_ladder_link() {
        let hostile = "<script>alert(1)</script>\"'&x";
        let mut d = decision(hostile, 403);
        d.ms_diagnostics = Some("1000;reason=\"<img src=x onerror=alert(2)>\"".into());
        d.request_uri = "sip:<b>@x".into();
        let html = page(&[d], None);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>@"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;x</a>"),
            "{html}"
        );
        assert!(
            html.contains(
                "href=\"/ladder?call-id=%3Cscript%3Ealert%281%29%3C%2Fscript%3E%22%27%26x&amp;token=t0k%20en\""
            ),
            "{html}"
        );
        assert!(html.contains("<td class=\"s4\">403</td>"), "{html}");
    }

    #[test]
    fn decisions_are_newest_first_with_their_final_status_and_the_token_in_each_link() {
        let html = page(&[decision("first", 200), decision("second", 504)], None);
        let (a, b) = (
            html.find(">second<").unwrap(),
            html.find(">first<").unwrap(),
        );
        assert!(a < b, "{html}");
        assert_eq!(html.matches("&amp;token=t0k%20en\"").count(), 2, "{html}");
        assert!(html.contains("<td class=\"s5\">504</td>"), "{html}");
        assert!(html.contains("<td>2.5 ms</td>"), "{html}");
        assert!(
            html.contains(&format!(
                "<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">"
            )),
            "{html}"
        );
        assert!(html.contains("not a lab"), "{html}");
    }

    #[test]
    fn roles_show_their_state_and_only_active_faults_are_listed() {
        let rows = [
            RoleRow {
                role: "partner".into(),
                fqdn: "sip.fabrikam.test".into(),
                address: "tls 127.0.0.1:5061".into(),
                state: "listening".into(),
                fault: Some("status 503".into()),
            },
            RoleRow {
                role: "blocked".into(),
                fqdn: "sip.adatum.test".into(),
                address: "tls 127.0.0.1:5062".into(),
                state: "listening; tripwire: not contacted (0 contacts)".into(),
                fault: None,
            },
        ];
        let html = page(&[], Some(&rows));
        assert!(
            html.contains("<li class=\"fault\">partner (sip.fabrikam.test): status 503</li>"),
            "{html}"
        );
        assert_eq!(html.matches("<li").count(), 1, "{html}");
        assert!(html.contains("tripwire: not contacted"), "{html}");
        assert!(html.contains("lab time"), "{html}");
        assert!(html.contains("no decision yet"), "{html}");
    }

    #[test]
    fn counters_come_from_the_metrics_text_leaving_out_labelled_zeros() {
        let html = page(&[], None);
        assert!(
            html.contains(">open connections</td><td class=\"mono\"></td><td>3</td>"),
            "{html}"
        );
        assert!(
            html.contains("interface=&quot;internal&quot;,direction=&quot;in&quot;,method=&quot;MESSAGE&quot;</td><td>2</td>"),
            "{html}"
        );
        assert!(!html.contains("status=&quot;200&quot;"), "{html}");
        assert!(
            html.contains(">finished transactions</td><td class=\"mono\"></td><td>1</td>"),
            "{html}"
        );
        assert!(!html.contains("_sum"), "{html}");
    }
}
