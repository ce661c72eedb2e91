//! Pre-built requests: each is rendered once per connection, and only the transaction id
//! (in Call-ID, branch and tags) is patched per send, so sending costs a memcpy.

use std::net::SocketAddr;

use crate::transport::Transport;

/// What one load "transaction" is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// MESSAGE → 200 (the shared harness's scenario).
    Message,
    /// OPTIONS → 200.
    Options,
    /// INVITE → 100/180/200 → ACK, then BYE → 200; counted as one transaction, latency
    /// INVITE → 200.
    InviteDialog,
    /// SUBSCRIBE → 200 and the NOTIFY answered 200; latency SUBSCRIBE → 200.
    Subscribe,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Message => "message",
            Scenario::Options => "options",
            Scenario::InviteDialog => "invite-dialog",
            Scenario::Subscribe => "subscribe",
        }
    }
}

/// Width of the id written into every placeholder: 16 hex digits of a `u64`.
pub const ID_LEN: usize = 16;
const PLACEHOLDER: &[u8; ID_LEN] = b"%%%%%%%%%%%%%%%%";

/// A request with the byte offsets where the transaction id goes.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
    slots: Vec<usize>,
}

impl Template {
    fn new(text: String) -> Template {
        let bytes = text.into_bytes();
        let slots = memchr::memmem::find_iter(&bytes, PLACEHOLDER).collect();
        Template { bytes, slots }
    }

    /// Appends the request for transaction `id` to `out`.
    pub fn render(&self, id: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let hex = hex_id(id);
        for &s in &self.slots {
            out[start + s..start + s + ID_LEN].copy_from_slice(&hex);
        }
    }
}

/// The id as 16 lowercase hex digits.
pub fn hex_id(id: u64) -> [u8; ID_LEN] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; ID_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// Reads the id back from a Call-ID this generator wrote (`<16 hex>-<run>@...`).
pub fn id_from_call_id(call_id: &str, run: &str) -> Option<u64> {
    let (hex, rest) = call_id.split_at_checked(ID_LEN)?;
    let rest = rest.strip_prefix('-')?;
    if !rest.starts_with(run) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Everything a connection needs to write its requests.
#[derive(Debug, Clone)]
pub struct Templates {
    /// The scenario's first request (MESSAGE, OPTIONS, INVITE or SUBSCRIBE).
    pub initial: Template,
}

/// The addresses and names that go into the requests.
#[derive(Debug, Clone)]
pub struct Party {
    pub from: String,
    pub to: String,
    pub transport: Transport,
    /// Our address as written in Via.
    pub local: SocketAddr,
    /// Where in-dialog requests for us go (our Contact).
    pub contact: SocketAddr,
    /// A token that keeps one run's Call-IDs and branches apart from another's.
    pub run: String,
    /// The `ms-edge-proxy-message-trust` value the initial requests carry, if any.
    pub trust: Option<String>,
}

/// The small text body of the harness's MESSAGE.
pub const MESSAGE_BODY: &str = "Hello from sipedge load: a short instant message.";

/// Offer for the INVITE: one audio stream.
pub const SDP_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

impl Templates {
    pub fn new(scenario: Scenario, p: &Party) -> Templates {
        let (method, extra, ctype, body) = match scenario {
            Scenario::Message => ("MESSAGE", String::new(), "text/plain", MESSAGE_BODY),
            Scenario::Options => ("OPTIONS", "Accept: application/sdp\r\n".into(), "", ""),
            Scenario::InviteDialog => ("INVITE", contact_line(p), "application/sdp", SDP_OFFER),
            Scenario::Subscribe => (
                "SUBSCRIBE",
                format!("{}Event: presence\r\nExpires: 60\r\n", contact_line(p)),
                "",
                "",
            ),
        };
        let extra = match &p.trust {
            Some(t) => format!("ms-edge-proxy-message-trust: {t}\r\n{extra}"),
            None => extra,
        };
        Templates {
            initial: Template::new(request_text(
                p, method, &p.to, "1", &extra, ctype, body, None,
            )),
        }
    }
}

fn contact_line(p: &Party) -> String {
    format!(
        "Contact: <sip:load@{};transport={}>\r\n",
        p.contact,
        p.transport.as_str()
    )
}

/// A whole request; `%%…` placeholders take the id. `to_tag` is for in-dialog requests.
#[allow(clippy::too_many_arguments)]
fn request_text(
    p: &Party,
    method: &str,
    ruri: &str,
    cseq: &str,
    extra: &str,
    ctype: &str,
    body: &str,
    to_tag: Option<&str>,
) -> String {
    let ph = std::str::from_utf8(PLACEHOLDER).unwrap_or_default();
    let ctype = if ctype.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {ctype}\r\n")
    };
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/{t} {local};branch=z9hG4bK{run}{ph}{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <{from}>;tag={ph}\r\n\
         To: <{to}>{to_tag}\r\n\
         Call-ID: {ph}-{run}@sipedge-load\r\n\
         CSeq: {cseq} {method}\r\n\
         User-Agent: sipedge-load\r\n\
         {extra}{ctype}Content-Length: {len}\r\n\r\n{body}",
        t = p.transport.via_token(),
        local = p.local,
        run = p.run,
        from = p.from,
        to = p.to,
        len = body.len(),
    )
}

/// What an in-dialog request needs from the 2xx that set up the dialog.
#[derive(Debug, Clone)]
pub struct DialogInfo {
    pub remote_target: String,
    pub to_tag: String,
    /// Route set: the 2xx's Record-Route values, reversed (RFC 3261 §12.1.2).
    pub routes: Vec<String>,
}

/// ACK (for a 2xx, `dialog` given; for a non-2xx, same branch as the INVITE) or BYE,
/// rendered for one transaction.
pub fn in_dialog(p: &Party, method: &str, id: u64, dialog: Option<&DialogInfo>) -> Vec<u8> {
    let cseq = if method == "BYE" { "2" } else { "1" };
    let mut extra = String::new();
    let (ruri, tag) = match dialog {
        Some(d) => {
            for r in &d.routes {
                extra.push_str(&format!("Route: {r}\r\n"));
            }
            (d.remote_target.as_str(), Some(d.to_tag.as_str()))
        }
        None => (p.to.as_str(), None),
    };
    // A 2xx ACK and a BYE are new transactions: a distinct branch suffix ("A"/"B").
    let branch_cseq = match (method, dialog) {
        ("ACK", Some(_)) => "A",
        ("BYE", _) => "B",
        _ => cseq,
    };
    let text = request_text(p, method, ruri, cseq, &extra, "", "", tag).replacen(
        &format!(
            "{}{cseq};rport",
            std::str::from_utf8(PLACEHOLDER).unwrap_or_default()
        ),
        &format!(
            "{}{branch_cseq};rport",
            std::str::from_utf8(PLACEHOLDER).unwrap_or_default()
        ),
        1,
    );
    let t = Template::new(text);
    let mut out = Vec::with_capacity(t.bytes.len());
    t.render(id, &mut out);
    out
}

/// A 200 answering a request that reached us (the NOTIFY of a subscription): every Via,
/// From, To, Call-ID and CSeq copied.
pub fn ok_for(req: &crate::sip::Message) -> Vec<u8> {
    use crate::sip::HeaderName;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"SIP/2.0 200 OK\r\n");
    for h in req.headers() {
        if matches!(
            h.name,
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
        ) {
            // `line` ends with its own CRLF.
            out.extend_from_slice(&req.bytes()[h.line.clone()]);
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party() -> Party {
        Party {
            trust: None,
            from: "sip:alice@fabrikam.test".into(),
            to: "sip:bob@contoso.test".into(),
            transport: Transport::Udp,
            local: "127.0.0.1:4000".parse().unwrap(),
            contact: "127.0.0.1:4000".parse().unwrap(),
            run: "r1".into(),
        }
    }

    #[test]
    fn render_patches_every_placeholder_and_parses() {
        let t = Templates::new(Scenario::Message, &party());
        let mut out = Vec::new();
        t.initial.render(0xabc, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains('%'), "{text}");
        let m = crate::sip::Message::parse(bytes::Bytes::from(out), true).unwrap();
        assert_eq!(id_from_call_id(m.call_id().unwrap(), "r1"), Some(0xabc));
        assert_eq!(m.body(), MESSAGE_BODY.as_bytes());
        assert!(text.contains("branch=z9hG4bKr10000000000000abc1;rport"));
    }

    #[test]
    fn ids_of_another_run_are_not_ours() {
        assert_eq!(id_from_call_id("0000000000000001-r2@x", "r1"), None);
        assert_eq!(id_from_call_id("short", "r1"), None);
    }
}
