//! Topology hiding for the route set: the Record-Route entries the internal side wrote (and
//! the edge's own internal-interface entry) never leave through the external interface in
//! clear. They ride, encoded and signed, inside one parameter of the edge's external entry
//! and are put back, byte for byte, when that entry returns in a response's Record-Route or
//! an in-dialog request's Route.
//!
//! The sealed entry looks like
//! `<sip:accessedge.contoso.test:5061;transport=tls;lr;ms-int-rs=AQFi…;ms-rs-sig=3q2-…>`:
//! `ms-int-rs` is the hidden list (base64url, no padding), `ms-rs-sig` the first 16 bytes of
//! its HMAC-SHA256 under a key drawn at random when the process starts. Both are URI
//! parameters so that a compliant peer copies them into its route set (RFC 3261 §12.1.2).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use ring::hmac;

use crate::policy::{Diagnostics, Rejection};
use crate::sip::build;
use crate::sip::splice::Splice;
use crate::sip::{HeaderName, Message, NameAddr};
use crate::transport::Interface;

/// The URI parameter carrying the hidden entries.
pub const LIST_PARAM: &str = "ms-int-rs";
/// The URI parameter carrying the list's signature.
pub const SIG_PARAM: &str = "ms-rs-sig";
/// The `ms-diagnostics` code of a refused hidden route set (a sipedge code: the product's
/// own `ms-route-sig` failures are not documented).
pub const DIAGNOSTICS_CODE: u32 = 1912;

/// Bytes of the HMAC kept: 128 bits is plenty against forgery and keeps the entry short.
const SIG_LEN: usize = 16;
/// First byte of the encoded list, so that the format can change without ambiguity.
const VERSION: u8 = 1;
/// The most entries one list may hold: bounds what a forged list could make us expand.
const MAX_ENTRIES: usize = 32;

/// Where the hidden entries stood in Record-Route relative to the edge's external entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Below it: a request the internal side sent out (its entries were added before ours).
    Below,
    /// Above it: a response to a request from outside (the internal side added after us).
    Above,
}

impl Side {
    fn byte(self) -> u8 {
        match self {
            Side::Below => b'b',
            Side::Above => b'a',
        }
    }

    fn from_byte(b: u8) -> Option<Side> {
        match b {
            b'b' => Some(Side::Below),
            b'a' => Some(Side::Above),
            _ => None,
        }
    }
}

/// Why a route entry claiming to be ours was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteSetError {
    #[error("the hidden route set carries no signature")]
    MissingSignature,
    #[error("the hidden route set's signature does not verify")]
    BadSignature,
    #[error("the hidden route set is malformed")]
    Malformed,
}

impl RouteSetError {
    /// The rule name for the one log line and the metrics.
    pub fn rule(self) -> &'static str {
        match self {
            RouteSetError::MissingSignature => "route-set-unsigned",
            RouteSetError::BadSignature => "route-set-bad-signature",
            RouteSetError::Malformed => "route-set-malformed",
        }
    }

    /// The 403 an in-dialog request with this route gets.
    pub fn rejection(self) -> Rejection {
        Rejection::new(403, "Forbidden", self.rule())
            .with_diagnostics(Diagnostics::new(DIAGNOSTICS_CODE, self.to_string()))
    }
}

/// An entry of ours that carried a hidden list, opened and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Our entry as it was before it was sealed.
    pub plain: String,
    pub side: Side,
    /// The hidden entries, the one nearest the edge first (the order of a Route set that
    /// enters through the external interface).
    pub hidden: Vec<String>,
}

/// Seals and opens hidden route sets under one process-wide key.
pub struct Hider {
    key: hmac::Key,
}

impl std::fmt::Debug for Hider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hider { key: <secret> }")
    }
}

impl Hider {
    /// A hider with a fresh random key: route sets sealed by an earlier process no longer open.
    pub fn random() -> Self {
        Hider::with_key(&rand::random::<[u8; 32]>())
    }

    /// A hider with a given key (tests; two edges sharing a secret).
    pub fn with_key(secret: &[u8]) -> Self {
        Hider {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Our entry `ours` with `hidden` (nearest the edge first) sealed into its URI.
    pub fn seal(&self, ours: &str, side: Side, hidden: &[&str]) -> String {
        let mut payload = Vec::with_capacity(2 + hidden.iter().map(|h| h.len() + 2).sum::<usize>());
        payload.push(VERSION);
        payload.push(side.byte());
        for h in hidden {
            // A header value longer than 64 KiB cannot pass framing; cut rather than wrap.
            let h = &h.as_bytes()[..h.len().min(u16::MAX as usize)];
            payload.extend_from_slice(&(h.len() as u16).to_be_bytes());
            payload.extend_from_slice(h);
        }
        let list = B64.encode(&payload);
        let sig = B64.encode(self.tag(list.as_bytes()));
        let params = format!(";{LIST_PARAM}={list};{SIG_PARAM}={sig}");
        match ours.rfind('>') {
            Some(gt) => {
                let mut out = String::with_capacity(ours.len() + params.len());
                out.push_str(&ours[..gt]);
                out.push_str(&params);
                out.push_str(&ours[gt..]);
                out
            }
            None => format!("<{ours}{params}>"),
        }
    }

    /// Opens an entry: `Ok(None)` when it carries neither of our parameters or `ours` says
    /// it does not name this edge; an error when it claims a hidden list that does not verify.
    pub fn open(
        &self,
        value: &str,
        ours: impl Fn(&NameAddr<'_>) -> bool,
    ) -> Result<Option<Opened>, RouteSetError> {
        let Some(na) = NameAddr::parse(value) else {
            return Ok(None);
        };
        let (list, sig) = (na.uri.param(LIST_PARAM), na.uri.param(SIG_PARAM));
        if (list.is_none() && sig.is_none()) || !ours(&na) {
            return Ok(None);
        }
        let list = list.ok_or(RouteSetError::Malformed)?;
        let sig = sig
            .filter(|s| !s.is_empty())
            .ok_or(RouteSetError::MissingSignature)?;
        let sig = B64.decode(sig).map_err(|_| RouteSetError::BadSignature)?;
        if !same(&sig, &self.tag(list.as_bytes())) {
            return Err(RouteSetError::BadSignature);
        }
        let payload = B64.decode(list).map_err(|_| RouteSetError::Malformed)?;
        let (side, hidden) = decode(&payload).ok_or(RouteSetError::Malformed)?;
        Ok(Some(Opened {
            plain: strip_ours(value),
            side,
            hidden,
        }))
    }

    /// The Record-Route value a dialog-creating request leaving through the external
    /// interface carries instead of all of its Record-Route: our external entry `ext`, with
    /// our internal entry `int` and every entry the internal side wrote sealed inside.
    pub fn hide_request(&self, m: &Message, ext: &str, int: &str) -> String {
        let existing = m.values(HeaderName::RecordRoute);
        let mut hidden: Vec<&str> = Vec::with_capacity(existing.len() + 1);
        hidden.push(int);
        hidden.extend(existing.into_iter().map(|(_, r)| m.text(r)));
        self.seal(ext, Side::Below, &hidden)
    }

    /// The Record-Route line a response leaving through the external interface carries
    /// instead of all of its Record-Route, when entries stand above our external entry (the
    /// one `is_external` recognises): those are sealed into it. `None` when nothing is to hide.
    pub fn hide_response(
        &self,
        m: &Message,
        is_external: impl Fn(&NameAddr<'_>) -> bool,
    ) -> Option<String> {
        let values = m.values(HeaderName::RecordRoute);
        let texts: Vec<&str> = values.into_iter().map(|(_, r)| m.text(r)).collect();
        let at = texts.iter().position(|v| {
            NameAddr::parse(v).is_some_and(|na| {
                is_external(&na)
                    && na.uri.param(LIST_PARAM).is_none()
                    && na.uri.param(SIG_PARAM).is_none()
            })
        })?;
        if at == 0 {
            return None;
        }
        let hidden: Vec<&str> = texts[..at].iter().rev().copied().collect();
        let mut line = String::from("Record-Route: ");
        line.push_str(&self.seal(texts[at], Side::Above, &hidden));
        for v in &texts[at + 1..] {
            line.push_str(", ");
            line.push_str(v);
        }
        Some(line)
    }

    /// A response that arrived on the external interface with its Record-Route expanded
    /// back to what the internal side would have seen; `None` when nothing of ours is in it.
    /// An entry that does not verify loses our parameters and is logged: a response cannot
    /// be refused, and what it claimed is not passed inward.
    pub fn expand_record_route(
        &self,
        m: &Message,
        datagram: bool,
        ours: impl Fn(&NameAddr<'_>) -> bool,
    ) -> Option<Message> {
        m.header(HeaderName::RecordRoute)?;
        self.expand(m, HeaderName::RecordRoute, datagram, &ours, |o| match o {
            Ok(o) => Ok(joined(&o, o.side)),
            Err((e, value)) => {
                tracing::warn!(reason = %e, call_id = m.call_id().unwrap_or(""), "Record-Route claiming a hidden route set dropped its claim");
                Ok(strip_ours(value))
            }
        })
        .ok()
        .flatten()
    }

    /// A request that arrived on the external interface with its Route expanded back to the
    /// route set it would carry without hiding; `None` when nothing of ours is in it.
    pub fn expand_route(
        &self,
        m: &Message,
        datagram: bool,
        ours: impl Fn(&NameAddr<'_>) -> bool,
    ) -> Result<Option<Message>, RouteSetError> {
        if m.header(HeaderName::Route).is_none() {
            return Ok(None);
        }
        // In a Route set the hidden entries always follow ours, nearest first.
        self.expand(m, HeaderName::Route, datagram, &ours, |o| {
            o.map(|o| joined(&o, Side::Below)).map_err(|(e, _)| e)
        })
    }

    /// Replaces every value of `name` that opens with what `with` makes of it, and parses
    /// the result again.
    fn expand(
        &self,
        m: &Message,
        name: HeaderName,
        datagram: bool,
        ours: &dyn Fn(&NameAddr<'_>) -> bool,
        with: impl Fn(Result<Opened, (RouteSetError, &str)>) -> Result<String, RouteSetError>,
    ) -> Result<Option<Message>, RouteSetError> {
        let mut splice: Option<Splice<'_>> = None;
        for (_, r) in m.values(name) {
            let value = m.text(r.clone());
            let text = match self.open(value, ours) {
                Ok(None) => continue,
                Ok(Some(o)) => with(Ok(o))?,
                Err(e) => with(Err((e, value)))?,
            };
            splice
                .get_or_insert_with(|| Splice::new(&m.bytes()[..m.body_range().end]))
                .replace(r, text);
        }
        let Some(splice) = splice else {
            return Ok(None);
        };
        Message::parse(splice.finish().freeze(), datagram)
            .map(Some)
            .map_err(|_| RouteSetError::Malformed)
    }

    /// The truncated HMAC of `data`.
    fn tag(&self, data: &[u8]) -> [u8; SIG_LEN] {
        let mut out = [0; SIG_LEN];
        out.copy_from_slice(&hmac::sign(&self.key, data).as_ref()[..SIG_LEN]);
        out
    }
}

/// Whether a request relayed from `arrival` to `exit` has its route set and Via hidden:
/// only what goes from the internal side out through the external interface.
pub fn hides(arrival: Interface, exit: Interface) -> bool {
    arrival == Interface::Internal && exit == Interface::External
}

/// The Via lines of `m` as they would have been relayed (the top one with its
/// `received`/`rport` edit): what the response gets back when Via is hidden outward.
pub fn via_lines(m: &Message, received: Option<&(usize, build::ViaReceived)>) -> Bytes {
    let buf: &[u8] = m.bytes();
    let mut out = Vec::with_capacity(128);
    for h in m.headers().iter().filter(|h| h.name == HeaderName::Via) {
        match received {
            Some((at, text)) if h.line.contains(at) => {
                out.extend_from_slice(&buf[h.line.start..*at]);
                let _ = std::io::Write::write_fmt(&mut out, format_args!("{text}"));
                out.extend_from_slice(&buf[*at..h.line.end]);
            }
            _ => out.extend_from_slice(&buf[h.line.clone()]),
        }
    }
    Bytes::from(out)
}

/// Our entry and the hidden ones, comma-separated in header order.
fn joined(o: &Opened, side: Side) -> String {
    let mut out = String::with_capacity(
        o.plain.len() + o.hidden.iter().map(|h| h.len() + 2).sum::<usize>(),
    );
    let mut push = |v: &str| {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(v);
    };
    match side {
        Side::Below => {
            push(&o.plain);
            o.hidden.iter().for_each(|h| push(h));
        }
        Side::Above => {
            o.hidden.iter().rev().for_each(|h| push(h));
            push(&o.plain);
        }
    }
    out
}

/// Reads the payload: version, side, then length-prefixed entries. Entries must be text
/// without line breaks, so that even a list we sealed cannot inject a header.
fn decode(p: &[u8]) -> Option<(Side, Vec<String>)> {
    let (&version, rest) = p.split_first()?;
    let (&side, mut rest) = rest.split_first()?;
    if version != VERSION {
        return None;
    }
    let side = Side::from_byte(side)?;
    let mut hidden = Vec::new();
    while !rest.is_empty() {
        if hidden.len() == MAX_ENTRIES || rest.len() < 2 {
            return None;
        }
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let entry = rest.get(2..2 + len)?;
        let text = std::str::from_utf8(entry).ok()?;
        if text.is_empty() || text.contains(['\r', '\n']) {
            return None;
        }
        hidden.push(text.to_string());
        rest = &rest[2 + len..];
    }
    Some((side, hidden))
}

/// The entry without our two URI parameters: what it was before `seal`.
fn strip_ours(value: &str) -> String {
    let (start, end) = match (value.find('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => (a + 1, b),
        _ => (0, value.len()),
    };
    let mut out = String::with_capacity(value.len());
    out.push_str(&value[..start]);
    for (i, piece) in value[start..end].split(';').enumerate() {
        let key = piece.split('=').next().unwrap_or("").trim();
        if i > 0 && (key.eq_ignore_ascii_case(LIST_PARAM) || key.eq_ignore_ascii_case(SIG_PARAM)) {
            continue;
        }
        if i > 0 {
            out.push(';');
        }
        out.push_str(piece);
    }
    out.push_str(&value[end..]);
    out
}

/// Constant-time equality, so that a forger learns nothing from how long a check took.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
