//! Topology hiding for the route set: the Record-Route entries the internal side wrote (and
//! the edge's own internal-interface entry) never leave through the external interface in
//! clear. They ride, encrypted and authenticated, inside one parameter of the edge's external
//! entry and are put back, byte for byte, when that entry returns in a response's
//! Record-Route or an in-dialog request's Route.
//!
//! The sealed entry looks like
//! `<sip:accessedge.contoso.test:5061;transport=tls;lr;ms-int-rs=AgX1…>`: `ms-int-rs` is,
//! in base64url without padding, a version byte, the sealing key's id, a random 96-bit
//! nonce and the ChaCha20-Poly1305 ciphertext of the hidden list and its [`Binding`]. It is
//! a URI parameter so that a compliant peer copies it into its route set (RFC 3261
//! §12.1.2). The keys come from the key file (`[topology] key_file`, [`key_file`]), so
//! that a restarted edge, or another edge holding the same file, opens what this one sealed.

pub mod key_file;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use ring::aead;

use crate::policy::{Rejection, Rule};
use crate::peer::PeerIdentity;
use crate::sip::build;
use crate::sip::splice::Splice;
use crate::sip::{HeaderName, Message, NameAddr};
use crate::transport::Interface;

pub use key_file::{Key, KeyFileError, KEY_ID_LEN};

/// The URI parameter carrying the sealed hidden entries.
pub const LIST_PARAM: &str = "ms-int-rs";
/// The `ms-diagnostics` code of a refused hidden route set (a sipedge code: the product's
/// own `ms-route-sig` failures are not documented).
pub const DIAGNOSTICS_CODE: u32 = 1912;

/// First byte of the sealed value, so that the format can change without ambiguity (1 was
/// the signed, unencrypted list of earlier releases).
const VERSION: u8 = 2;
/// Bytes of the nonce carried in every sealed value.
const NONCE_LEN: usize = aead::NONCE_LEN;
/// What precedes the ciphertext: version, key id, nonce.
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// The most entries one list may hold: bounds what a forged list could make us expand.
const MAX_ENTRIES: usize = 32;
/// The AEAD every sealed value uses.
static ALGORITHM: &aead::Algorithm = &aead::CHACHA20_POLY1305;

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

/// What a sealed route set is bound to, so that it cannot be replayed into another dialog or by another peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    pub call_id: String,
    /// The internal party's dialog tag (From tag of a request going out; To tag of the response going out).
    pub tag: String,
    /// The external party's domain (lowercase).
    pub partner: String,
    /// The external peer's proven name when it was known at sealing time, else empty.
    pub peer: String,
}

impl Binding {
    /// The binding of a dialog-creating request leaving through the external interface:
    /// the internal party sent it (From), the external one is addressed (To).
    pub fn of_request_out(m: &Message) -> Binding {
        Binding::of(m, m.from(), m.to())
    }

    /// The binding of a response leaving through the external interface: the internal
    /// party answered (To), the external one sent the request (From).
    pub fn of_response_out(m: &Message) -> Binding {
        Binding::of(m, m.to(), m.from())
    }

    /// Whether an in-dialog request from outside, `m` from a peer that proved `identity`, is
    /// in the dialog this route set was sealed for: same Call-ID, addressed to the internal
    /// party's tag, from the partner's domain, and from the same peer when it was known.
    /// A seal captured from one dialog or by another partner opens nothing else.
    pub fn admits(&self, m: &Message, identity: &PeerIdentity) -> Result<(), RouteSetError> {
        let same_call = m.call_id() == Some(self.call_id.as_str());
        let same_tag = m.to().and_then(|t| t.tag()) == Some(self.tag.as_str());
        let same_partner = self.partner.is_empty()
            || m.from()
                .is_some_and(|f| f.uri.host.eq_ignore_ascii_case(&self.partner));
        let same_peer = self.peer.is_empty() || identity.covers(&self.peer);
        if same_call && same_tag && same_partner && same_peer {
            Ok(())
        } else {
            Err(RouteSetError::OtherDialog)
        }
    }

    fn of(m: &Message, internal: Option<NameAddr<'_>>, external: Option<NameAddr<'_>>) -> Binding {
        Binding {
            call_id: m.call_id().unwrap_or("").to_string(),
            tag: internal.and_then(|na| na.tag()).unwrap_or("").to_string(),
            partner: external
                .map(|na| na.uri.host.to_ascii_lowercase())
                .unwrap_or_default(),
            peer: String::new(),
        }
    }

    fn fields(&self) -> [&str; 4] {
        [&self.call_id, &self.tag, &self.partner, &self.peer]
    }
}

/// Why a route entry claiming to be ours was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteSetError {
    #[error("the hidden route set was sealed under a key this edge does not hold")]
    UnknownKey,
    #[error("the hidden route set does not verify under this edge's key")]
    BadSeal,
    #[error("the hidden route set is malformed")]
    Malformed,
    #[error("the hidden route set belongs to another dialog or peer")]
    OtherDialog,
}

impl RouteSetError {
    /// The rule, for the one log line and the metrics.
    pub fn rule(self) -> Rule {
        match self {
            RouteSetError::UnknownKey => Rule::RouteSetUnknownKey,
            RouteSetError::BadSeal => Rule::RouteSetBadSeal,
            RouteSetError::Malformed => Rule::RouteSetMalformed,
            RouteSetError::OtherDialog => Rule::RouteSetOtherDialog,
        }
    }

    /// The 403 + 1912 an in-dialog request with this route gets.
    pub fn rejection(self) -> Rejection {
        Rejection::route_set(self.rule(), &self.to_string())
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
    /// What the route set was sealed for.
    pub binding: Binding,
}

/// One key of the hider, with the id that names it in sealed values.
struct SealKey {
    id: [u8; KEY_ID_LEN],
    key: aead::LessSafeKey,
}

impl SealKey {
    fn new(key: &Key) -> Result<SealKey, KeyFileError> {
        let unbound = aead::UnboundKey::new(ALGORITHM, key).map_err(|_| KeyFileError::Unusable)?;
        Ok(SealKey {
            id: key_file::key_id(key),
            key: aead::LessSafeKey::new(unbound),
        })
    }
}

/// Seals hidden route sets under the first of its keys and opens them under any.
pub struct Hider {
    sealing: SealKey,
    previous: Vec<SealKey>,
}

impl std::fmt::Debug for Hider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hider { keys: <secret> }")
    }
}

impl Hider {
    /// A hider with a fresh random key: route sets sealed by an earlier process no longer open.
    pub fn random() -> Result<Self, KeyFileError> {
        Hider::new(&rand::random::<Key>(), &[])
    }

    /// A hider that seals under `sealing` and also opens what `previous` keys sealed.
    pub fn new(sealing: &Key, previous: &[Key]) -> Result<Self, KeyFileError> {
        Ok(Hider {
            sealing: SealKey::new(sealing)?,
            previous: previous.iter().map(SealKey::new).collect::<Result<_, _>>()?,
        })
    }

    /// A hider with the keys of a key file, which is created (mode 0600, one fresh key)
    /// when missing. Read once: a reload does not change the keys, a restart does.
    pub fn from_key_file(path: &std::path::Path) -> Result<Self, KeyFileError> {
        let keys = key_file::load_or_create(path)?;
        let (sealing, previous) = keys
            .split_first()
            .ok_or_else(|| KeyFileError::Empty(path.to_path_buf()))?;
        Hider::new(sealing, previous)
    }

    /// Our entry `ours` with `hidden` (nearest the edge first) and `binding` sealed into its URI.
    pub fn seal(&self, ours: &str, side: Side, hidden: &[&str], binding: &Binding) -> String {
        let fields = binding.fields();
        let mut payload = Vec::with_capacity(
            1 + fields
                .iter()
                .chain(hidden)
                .map(|h| h.len() + 2)
                .sum::<usize>(),
        );
        payload.push(side.byte());
        for h in fields.iter().chain(hidden) {
            // A header value longer than 64 KiB cannot pass framing; cut rather than wrap.
            let h = &h.as_bytes()[..h.len().min(u16::MAX as usize)];
            payload.extend_from_slice(&(h.len() as u16).to_be_bytes());
            payload.extend_from_slice(h);
        }
        let params = format!(";{LIST_PARAM}={}", self.encrypt(payload));
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

    /// Opens an entry: `Ok(None)` when it carries no sealed list or `ours` says it does not
    /// name this edge; an error when it claims a sealed list that does not open.
    pub fn open(
        &self,
        value: &str,
        ours: impl Fn(&NameAddr<'_>) -> bool,
    ) -> Result<Option<Opened>, RouteSetError> {
        let Some(na) = NameAddr::parse(value) else {
            return Ok(None);
        };
        let Some(sealed) = na.uri.param(LIST_PARAM) else {
            return Ok(None);
        };
        if !ours(&na) {
            return Ok(None);
        }
        let sealed = B64.decode(sealed).map_err(|_| RouteSetError::Malformed)?;
        let payload = self.decrypt(sealed)?;
        let (side, binding, hidden) = decode(&payload).ok_or(RouteSetError::Malformed)?;
        Ok(Some(Opened {
            plain: strip_ours(value),
            side,
            hidden,
            binding,
        }))
    }

    /// The Record-Route value a dialog-creating request leaving through the external
    /// interface carries instead of all of its Record-Route: our external entry `ext`, with
    /// our internal entry `int` and every entry the internal side wrote sealed inside.
    pub fn hide_request(&self, m: &Message, ext: &str, int: &str, binding: &Binding) -> String {
        let existing = m.values(HeaderName::RecordRoute);
        let mut hidden: Vec<&str> = Vec::with_capacity(existing.len() + 1);
        hidden.push(int);
        hidden.extend(existing.into_iter().map(|(_, r)| m.text(r)));
        self.seal(ext, Side::Below, &hidden, binding)
    }

    /// The Record-Route line a response leaving through the external interface carries
    /// instead of all of its Record-Route, when entries stand above our external entry (the
    /// one `is_external` recognises): those are sealed into it. `None` when nothing is to hide.
    pub fn hide_response(
        &self,
        m: &Message,
        is_external: impl Fn(&NameAddr<'_>) -> bool,
        binding: &Binding,
    ) -> Option<String> {
        let values = m.values(HeaderName::RecordRoute);
        let texts: Vec<&str> = values.into_iter().map(|(_, r)| m.text(r)).collect();
        let at = texts.iter().position(|v| {
            NameAddr::parse(v)
                .is_some_and(|na| is_external(&na) && na.uri.param(LIST_PARAM).is_none())
        })?;
        if at == 0 {
            return None;
        }
        let hidden: Vec<&str> = texts[..at].iter().rev().copied().collect();
        let mut line = String::from("Record-Route: ");
        line.push_str(&self.seal(texts[at], Side::Above, &hidden, binding));
        for v in &texts[at + 1..] {
            line.push_str(", ");
            line.push_str(v);
        }
        Some(line)
    }

    /// A response that arrived on the external interface with its Record-Route expanded
    /// back to what the internal side would have seen; `None` when nothing of ours is in it.
    /// An entry that does not open loses our parameter and is logged: a response cannot
    /// be refused, and what it claimed is not passed inward.
    pub fn expand_record_route(
        &self,
        m: &Message,
        datagram: bool,
        ours: impl Fn(&NameAddr<'_>) -> bool,
    ) -> Option<Message> {
        m.header(HeaderName::RecordRoute)?;
        self.expand(m, HeaderName::RecordRoute, datagram, &ours, |o| match o {
            Ok(o) => Ok(joined(o, o.side)),
            Err((e, value)) => {
                tracing::warn!(reason = %e, call_id = m.call_id().unwrap_or(""), "Record-Route claiming a hidden route set dropped its claim");
                Ok(strip_ours(value))
            }
        })
        .ok()
        .flatten()
        .map(|(m, _)| m)
    }

    /// A request that arrived on the external interface with its Route expanded back to the
    /// route set it would carry without hiding, and the binding the first entry of ours was
    /// sealed with; `None` when nothing of ours is in it.
    pub fn expand_route(
        &self,
        m: &Message,
        datagram: bool,
        ours: impl Fn(&NameAddr<'_>) -> bool,
    ) -> Result<Option<(Message, Binding)>, RouteSetError> {
        if m.header(HeaderName::Route).is_none() {
            return Ok(None);
        }
        // In a Route set the hidden entries always follow ours, nearest first.
        self.expand(m, HeaderName::Route, datagram, &ours, |o| {
            o.map(|o| joined(o, Side::Below)).map_err(|(e, _)| e)
        })
        .map(|expanded| expanded.map(|(m, binding)| (m, binding.unwrap_or_default())))
    }

    /// Replaces every value of `name` that opens with what `with` makes of it, and parses
    /// the result again; with it, the binding of the first value that opened.
    fn expand(
        &self,
        m: &Message,
        name: HeaderName,
        datagram: bool,
        ours: &dyn Fn(&NameAddr<'_>) -> bool,
        with: impl Fn(Result<&Opened, (RouteSetError, &str)>) -> Result<String, RouteSetError>,
    ) -> Result<Option<(Message, Option<Binding>)>, RouteSetError> {
        let mut splice: Option<Splice<'_>> = None;
        let mut first: Option<Binding> = None;
        for (_, r) in m.values(name) {
            let value = m.text(r.clone());
            let text = match self.open(value, ours) {
                Ok(None) => continue,
                Ok(Some(o)) => {
                    let text = with(Ok(&o))?;
                    first.get_or_insert(o.binding);
                    text
                }
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
            .map(|m| Some((m, first)))
            .map_err(|_| RouteSetError::Malformed)
    }

    /// The sealed value of `payload` (base64url): version, key id, nonce, ciphertext and tag.
    fn encrypt(&self, mut payload: Vec<u8>) -> String {
        let key = &self.sealing;
        let nonce = rand::random::<[u8; NONCE_LEN]>();
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        header[1..1 + KEY_ID_LEN].copy_from_slice(&key.id);
        header[1 + KEY_ID_LEN..].copy_from_slice(&nonce);
        let aad = aead::Aad::from(&header[..1 + KEY_ID_LEN]);
        let nonce = aead::Nonce::assume_unique_for_key(nonce);
        // Sealing fails only for a payload past ChaCha20's 256 GiB limit: none reaches that.
        if key
            .key
            .seal_in_place_append_tag(nonce, aad, &mut payload)
            .is_err()
        {
            return String::new();
        }
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&payload);
        B64.encode(out)
    }

    /// The payload of a sealed value, when one of our keys opens it.
    fn decrypt(&self, mut sealed: Vec<u8>) -> Result<Vec<u8>, RouteSetError> {
        if sealed.len() < HEADER_LEN + ALGORITHM.tag_len() || sealed[0] != VERSION {
            return Err(RouteSetError::Malformed);
        }
        let id = &sealed[1..1 + KEY_ID_LEN];
        let key = std::iter::once(&self.sealing)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or(RouteSetError::UnknownKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1 + KEY_ID_LEN..HEADER_LEN]);
        let (header, body) = sealed.split_at_mut(HEADER_LEN);
        let aad = aead::Aad::from(&header[..1 + KEY_ID_LEN]);
        let plain = key
            .key
            .open_in_place(aead::Nonce::assume_unique_for_key(nonce), aad, body)
            .map_err(|_| RouteSetError::BadSeal)?;
        Ok(plain.to_vec())
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

/// Reads the payload: side, the binding's four fields, then the entries, each
/// length-prefixed. Every field must be text without line breaks, so that even a list we
/// sealed cannot inject a header; entries must also be non-empty.
fn decode(p: &[u8]) -> Option<(Side, Binding, Vec<String>)> {
    let (&side, mut rest) = p.split_first()?;
    let side = Side::from_byte(side)?;
    let mut field = || -> Option<String> {
        let len = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
        let text = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
        if text.contains(['\r', '\n']) {
            return None;
        }
        rest = &rest[2 + len..];
        Some(text.to_string())
    };
    let binding = Binding {
        call_id: field()?,
        tag: field()?,
        partner: field()?,
        peer: field()?,
    };
    let mut hidden = Vec::new();
    while let Some(entry) = field() {
        if entry.is_empty() || hidden.len() == MAX_ENTRIES {
            return None;
        }
        hidden.push(entry);
    }
    rest.is_empty().then_some((side, binding, hidden))
}

/// The entry without our URI parameter: what it was before `seal`.
fn strip_ours(value: &str) -> String {
    let (start, end) = match (value.find('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => (a + 1, b),
        _ => (0, value.len()),
    };
    let mut out = String::with_capacity(value.len());
    out.push_str(&value[..start]);
    for (i, piece) in value[start..end].split(';').enumerate() {
        let key = piece.split('=').next().unwrap_or("").trim();
        if i > 0 && key.eq_ignore_ascii_case(LIST_PARAM) {
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

#[cfg(test)]
mod tests;
