//! A call's messages drawn as a ladder: one column for the sender, two for the edge's
//! interfaces, one for the far side; one row per message, and under each request the edge
//! decided, its decision and rule.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::{first_line, Captured, Direction};
use crate::peer::Interface;

/// What the edge decided about one request of the call (from its decision log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeNote {
    pub interface: Interface,
    pub method: String,
    pub outcome: String,
    pub rule: String,
    pub status: u16,
}

/// One drawn row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Seconds since the call's first kept message.
    pub offset: f64,
    /// Columns 0..4: sender, edge's sender-side interface, edge's other interface, far side.
    pub from: usize,
    pub to: usize,
    pub first_line: String,
    pub transport: String,
    /// `forward allowed-domain → 200` under a request the edge decided.
    pub decision: Option<String>,
    pub raw: String,
}

/// The four columns' titles and, under them, the addresses seen there.
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    pub call_id: String,
    pub columns: [String; 4],
    pub addresses: [String; 4],
    pub rows: Vec<Row>,
}

impl Ladder {
    /// The ladder of `messages` (oldest first), each request the edge decided annotated
    /// with the first note of its interface and method not yet used.
    pub fn new(call_id: &str, messages: &[Captured], notes: &[EdgeNote]) -> Ladder {
        let sender_side = match messages.first() {
            Some(m) if m.direction == Direction::Sent => other(m.interface),
            Some(m) => m.interface,
            None => Interface::Internal,
        };
        let side = |i: Interface| usize::from(i != sender_side);
        let columns = [
            format!("sender ({sender_side})"),
            format!("edge {sender_side}"),
            format!("edge {}", other(sender_side)),
            "far side".to_string(),
        ];
        let mut addresses: [String; 4] = Default::default();
        let start = messages.first().map_or(SystemTime::UNIX_EPOCH, |m| m.at);
        let mut used = vec![false; notes.len()];
        let mut rows = Vec::new();
        for m in messages {
            let s = side(m.interface);
            let (peer_col, edge_col) = if s == 0 { (0, 1) } else { (3, 2) };
            for (col, addr) in [(peer_col, m.remote), (edge_col, m.local)] {
                if addresses[col].is_empty() {
                    addresses[col] = addr.to_string();
                }
            }
            let (from, to) = match m.direction {
                Direction::Received => (peer_col, edge_col),
                Direction::Sent => (edge_col, peer_col),
            };
            let line = first_line(&m.bytes);
            let decision = (m.direction == Direction::Received && !line.starts_with("SIP/2.0"))
                .then(|| {
                    let method = line.split(' ').next().unwrap_or("");
                    let i = (0..notes.len()).find(|&i| {
                        !used[i] && notes[i].interface == m.interface && notes[i].method == method
                    })?;
                    used[i] = true;
                    let n = &notes[i];
                    Some(format!("{} {} → {}", n.outcome, n.rule, n.status))
                })
                .flatten();
            rows.push(Row {
                offset: m.at.duration_since(start).unwrap_or_default().as_secs_f64(),
                from,
                to,
                first_line: line,
                transport: m.transport.to_string(),
                decision,
                raw: String::from_utf8_lossy(&m.bytes).into_owned(),
            });
        }
        Ladder {
            call_id: call_id.to_string(),
            columns,
            addresses,
            rows,
        }
    }

    /// The ladder for a terminal; `raw` adds each message under its row.
    pub fn text(&self, raw: bool) -> String {
        const W: usize = 24;
        let mut out = format!("Call-ID: {}\n", self.call_id);
        if self.rows.is_empty() {
            out.push_str("no messages kept for this Call-ID (the ring keeps the most recent calls, see [trace] ring_bytes)\n");
            return out;
        }
        let header = |cells: &[String; 4]| {
            let mut line = " ".repeat(10);
            for c in cells {
                let _ = write!(line, "{:<W$}", truncate(c, W - 1));
            }
            line.trim_end().to_string()
        };
        let _ = writeln!(out, "{}", header(&self.columns));
        let _ = writeln!(out, "{}", header(&self.addresses));
        for r in &self.rows {
            let (lo, hi) = (r.from.min(r.to), r.from.max(r.to));
            let mut lane = String::new();
            for col in 0..4 {
                lane.push('|');
                if col == 3 {
                    break;
                }
                let fill = if col >= lo && col < hi { '-' } else { ' ' };
                let mut seg: Vec<char> = std::iter::repeat_n(fill, W - 1).collect();
                if col == lo && r.from > r.to {
                    seg[0] = '<';
                }
                if col + 1 == hi && r.from < r.to {
                    seg[W - 2] = '>';
                }
                if col == lo {
                    let label: Vec<char> = format!(" {} ", r.transport).chars().collect();
                    seg[2..2 + label.len()].copy_from_slice(&label);
                }
                lane.extend(seg);
            }
            let _ = writeln!(
                out,
                "{:<10}{lane}  {}",
                format!("+{:.3}s", r.offset),
                r.first_line
            );
            if let Some(d) = &r.decision {
                let at = 10 + W * r.to;
                let _ = writeln!(out, "{}* {d}", " ".repeat(at));
            }
            if raw {
                for line in r.raw.lines() {
                    let _ = writeln!(out, "{}{line}", " ".repeat(12));
                }
                out.push('\n');
            }
        }
        out
    }

    /// The same rows as an HTML page: a table, server-rendered, nothing to run.
    pub fn html(&self) -> String {
        let mut out =
            String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ladder ");
        out.push_str(&escape(&self.call_id));
        out.push_str("</title><style>table{border-collapse:collapse;font-family:monospace}td,th{padding:2px 8px;border-bottom:1px solid #ddd}td.lane{text-align:center;color:#06c}</style></head><body>\n");
        let _ = writeln!(out, "<h1>Call-ID {}</h1>", escape(&self.call_id));
        out.push_str("<table class=\"ladder\">\n<tr><th>time</th>");
        for (c, a) in self.columns.iter().zip(&self.addresses) {
            let _ = write!(out, "<th>{}<br>{}</th>", escape(c), escape(a));
        }
        out.push_str("<th>message</th><th>decision</th></tr>\n");
        for r in &self.rows {
            let _ = write!(out, "<tr><td>+{:.3}s</td>", r.offset);
            for col in 0..4 {
                let cell = if col == r.from {
                    if r.from < r.to {
                        "●──▶"
                    } else {
                        "◀──●"
                    }
                } else if col == r.to {
                    "■"
                } else if col > r.from.min(r.to) && col < r.from.max(r.to) {
                    "────"
                } else {
                    ""
                };
                let _ = write!(out, "<td class=\"lane\">{cell}</td>");
            }
            let _ = writeln!(
                out,
                "<td title=\"{}\">{} ({})</td><td>{}</td></tr>",
                escape(&r.raw),
                escape(&r.first_line),
                escape(&r.transport),
                escape(r.decision.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</table>\n</body></html>\n");
        out
    }
}

fn other(i: Interface) -> Interface {
    match i {
        Interface::External => Interface::Internal,
        Interface::Internal => Interface::External,
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Text as HTML text or attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::Transport;

    #[test]
    fn a_hostile_call_id_and_message_are_escaped_on_the_ladder_page() {
        let hostile = "<script>alert(1)</script>";
        let a = "127.0.0.1:5061".parse().unwrap();
        let bytes = format!("MESSAGE sip:<b>@x SIP/2.0\r\nCall-ID: {hostile}\r\n\r\n");
        let msg = Captured {
            at: SystemTime::now(),
            direction: Direction::Received,
            interface: Interface::Internal,
            transport: Transport::Tls,
            local: a,
            remote: a,
            bytes: bytes::Bytes::from(bytes),
        };
        let note = EdgeNote {
            interface: Interface::Internal,
            method: "MESSAGE".into(),
            outcome: "reject".into(),
            rule: "<i>rule</i>".into(),
            status: 403,
        };
        let html = Ladder::new(hostile, &[msg], &[note]).html();
        for raw in ["<script>", "<b>@", "<i>rule"] {
            assert!(!html.contains(raw), "{raw} unescaped: {html}");
        }
        assert!(
            html.contains("<h1>Call-ID &lt;script&gt;alert(1)&lt;/script&gt;</h1>"),
            "{html}"
        );
        assert!(
            html.contains("MESSAGE sip:&lt;b&gt;@x SIP/2.0 (tls)"),
            "{html}"
        );
        assert!(
            html.contains("reject &lt;i&gt;rule&lt;/i&gt; → 403"),
            "{html}"
        );
    }
}
