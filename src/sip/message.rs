//! A parsed SIP message: the original bytes plus an index of the start line and headers.
//!
//! Nothing is copied: every field is a byte range into the received buffer, and typed
//! views are parsed on demand from those ranges. Edits are made by `Splice`, which copies
//! the untouched ranges around the changed ones, so a relayed message is never
//! re-serialised.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;
use memchr::memchr;

use super::framing::{parse_content_length, trim};
use super::header::HeaderName;
use super::uri::{NameAddr, Uri};
use super::via::Via;

/// Why a message could not be parsed. Requests that fail get a 400 naming the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The first line is neither `METHOD URI SIP/2.0` nor `SIP/2.0 CODE REASON`.
    #[error("malformed start line")]
    BadStartLine,
    /// The SIP version is not 2.0.
    #[error("unsupported SIP version")]
    BadVersion,
    /// The Request-URI cannot be parsed.
    #[error("malformed Request-URI")]
    BadRequestUri,
    /// A header line without a colon, or with an empty name.
    #[error("malformed header line")]
    BadHeaderLine,
    /// The header block does not end with an empty line.
    #[error("header block not terminated")]
    Unterminated,
    /// A mandatory header is missing.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// A mandatory header cannot be parsed.
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// The same single-valued header appears twice with different values.
    #[error("conflicting {0} headers")]
    Duplicate(&'static str),
    /// Content-Length is larger than the data received.
    #[error("Content-Length larger than the message body")]
    BodyTooShort,
    /// The CSeq method does not match the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMismatch,
    /// The Request-URI is not a SIP or SIPS URI: a proxy cannot route it (RFC 3261 §16.3
    /// step 1, answered 416).
    #[error("unsupported URI scheme `{0}`")]
    UnsupportedScheme(String),
    /// The Request-URI carries `?headers`, which a proxy must not forward (RFC 4475 §3.1.2.14).
    #[error("Request-URI with headers")]
    RequestUriHeaders,
    /// A From, To or Contact URI holding `?headers` is not enclosed in `<>` (RFC 3261 §20,
    /// RFC 4475 §3.1.2.13).
    #[error("{0} URI with ?headers outside <>")]
    UnenclosedUri(&'static str),
}

impl ParseError {
    /// The status a request failing this way is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::BadVersion => 505,
            ParseError::UnsupportedScheme(_) => 416,
            _ => 400,
        }
    }

    /// The reason phrase of that answer, naming the problem where the status is generic.
    pub fn reason_phrase(&self) -> String {
        match self {
            ParseError::BadVersion => "Version Not Supported".to_string(),
            ParseError::UnsupportedScheme(_) => "Unsupported URI Scheme".to_string(),
            other => format!("Bad Request - {other}"),
        }
    }
}

/// A SIP method. `Other` keeps unknown extension methods, which a proxy must relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Message,
    Subscribe,
    Notify,
    Info,
    Refer,
    Update,
    Prack,
    Publish,
    Benotify,
    Service,
    Other,
}

impl Method {
    pub fn from_bytes(b: &[u8]) -> Method {
        match b {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"MESSAGE" => Method::Message,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"INFO" => Method::Info,
            b"REFER" => Method::Refer,
            b"UPDATE" => Method::Update,
            b"PRACK" => Method::Prack,
            b"PUBLISH" => Method::Publish,
            b"BENOTIFY" => Method::Benotify,
            b"SERVICE" => Method::Service,
            _ => Method::Other,
        }
    }

    /// Requests that create a dialog, and so get a Record-Route.
    pub fn creates_dialog(self) -> bool {
        matches!(self, Method::Invite | Method::Subscribe | Method::Refer)
    }
}

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: Method,
        method_range: Range<usize>,
        uri: Range<usize>,
    },
    Response {
        status: u16,
        reason: Range<usize>,
    },
}

/// One header line (or a continuation-folded group of lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderLine {
    pub name: HeaderName,
    /// The name as written.
    pub name_range: Range<usize>,
    /// The value, trimmed; may contain folded line breaks when `folded`.
    pub value: Range<usize>,
    /// The whole line including its CRLF: what to remove to drop the header.
    pub line: Range<usize>,
    /// The value spans continuation lines (RFC 3261 §7.3.1 folding).
    pub folded: bool,
}

/// A parsed message over its original bytes.
#[derive(Debug, Clone)]
pub struct Message {
    buf: Bytes,
    start: StartLine,
    headers: Vec<HeaderLine>,
    /// Offset where the header block's terminating empty line begins.
    headers_end: usize,
    body: Range<usize>,
}

impl Message {
    /// Parses a complete message. `datagram` relaxes Content-Length: absent means "the
    /// rest of the datagram", and bytes beyond it are ignored (RFC 3261 §18.3).
    pub fn parse(buf: Bytes, datagram: bool) -> Result<Message, ParseError> {
        let b: &[u8] = &buf;
        let first_nl = memchr(b'\n', b).ok_or(ParseError::BadStartLine)?;
        let first_end = if first_nl > 0 && b[first_nl - 1] == b'\r' {
            first_nl - 1
        } else {
            first_nl
        };
        let start = parse_start_line(b, 0..first_end)?;
        let mut headers: Vec<HeaderLine> = Vec::with_capacity(16);
        let mut pos = first_nl + 1;
        let headers_end;
        let body_start;
        loop {
            let rel = memchr(b'\n', &b[pos..]).ok_or(ParseError::Unterminated)?;
            let end = pos + rel;
            let line_end = if end > pos && b[end - 1] == b'\r' {
                end - 1
            } else {
                end
            };
            if line_end == pos {
                headers_end = pos;
                body_start = end + 1;
                break;
            }
            if b[pos] == b' ' || b[pos] == b'\t' {
                // Continuation: the previous header's value runs on.
                let prev = headers.last_mut().ok_or(ParseError::BadHeaderLine)?;
                let extra = trim_range(b, pos..line_end);
                if !extra.is_empty() {
                    prev.value.end = extra.end;
                    if prev.value.is_empty() {
                        prev.value.start = extra.start;
                    }
                }
                prev.line.end = end + 1;
                prev.folded = true;
                pos = end + 1;
                continue;
            }
            let colon = memchr(b':', &b[pos..line_end]).ok_or(ParseError::BadHeaderLine)? + pos;
            let name_range = trim_range(b, pos..colon);
            if name_range.is_empty() || b[name_range.clone()].iter().any(|c| !is_token_char(*c)) {
                return Err(ParseError::BadHeaderLine);
            }
            headers.push(HeaderLine {
                name: HeaderName::from_bytes(&b[name_range.clone()]),
                name_range,
                value: trim_range(b, colon + 1..line_end),
                line: pos..end + 1,
                folded: false,
            });
            pos = end + 1;
        }
        let mut cl = None;
        for h in headers
            .iter()
            .filter(|h| h.name == HeaderName::ContentLength)
        {
            let v = parse_content_length(&b[h.value.clone()])
                .map_err(|_| ParseError::Malformed("Content-Length"))?;
            if cl.is_some_and(|c| c != v) {
                return Err(ParseError::Duplicate("Content-Length"));
            }
            cl = Some(v);
        }
        let available = b.len() - body_start;
        let body_len = match cl {
            Some(n) if n > available => return Err(ParseError::BodyTooShort),
            Some(n) => n,
            None if datagram => available,
            None => return Err(ParseError::Missing("Content-Length")),
        };
        Ok(Message {
            start,
            headers,
            headers_end,
            body: body_start..body_start + body_len,
            buf,
        })
    }

    /// A header-only request to answer an unparseable one with: its header lines up to the
    /// first empty line, without Content-Length, under a neutral start line, so that the
    /// answer copies Via, From, To, Call-ID and CSeq. `None` for responses (never answered)
    /// and for bytes without a Via (no answer can be matched to them).
    pub fn reply_head(buf: &[u8]) -> Option<Message> {
        if buf.starts_with(b"SIP/") {
            return None;
        }
        let rest = &buf[memchr(b'\n', buf)? + 1..];
        let end = memchr::memmem::find(rest, b"\r\n\r\n").map_or(rest.len(), |e| e + 2);
        let mut head = Vec::with_capacity(end + 48);
        head.extend_from_slice(b"UNPARSEABLE sip:invalid SIP/2.0\r\n");
        for line in rest[..end].split_inclusive(|b| *b == b'\n') {
            let name = trim(line.split(|b| *b == b':').next().unwrap_or_default());
            if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
                head.extend_from_slice(line);
            }
        }
        if !head.ends_with(b"\n") {
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let m = Message::parse(Bytes::from(head), true).ok()?;
        // The answer goes back where the request came from; the Via is only copied, so one
        // of another SIP version (RFC 4475 badvers) is enough.
        m.header(HeaderName::Via).is_some().then_some(m)
    }

    /// The original bytes (including anything after the body in a datagram).
    pub fn bytes(&self) -> &Bytes {
        &self.buf
    }

    /// The message bytes up to the end of the body.
    pub fn wire(&self) -> Bytes {
        self.buf.slice(..self.body.end)
    }

    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method, or the CSeq method of a response.
    pub fn method(&self) -> Method {
        match &self.start {
            StartLine::Request { method, .. } => *method,
            StartLine::Response { .. } => self.cseq().map_or(Method::Other, |c| c.method),
        }
    }

    /// The method token as written (requests), or the CSeq method (responses).
    pub fn method_str(&self) -> &str {
        match &self.start {
            StartLine::Request { method_range, .. } => self.text(method_range.clone()),
            StartLine::Response { .. } => self.cseq().map_or("", |c| c.method_str),
        }
    }

    /// Status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Reason phrase of a response.
    pub fn reason(&self) -> &str {
        match &self.start {
            StartLine::Response { reason, .. } => self.text(reason.clone()),
            _ => "",
        }
    }

    /// Byte range of the Request-URI.
    pub fn uri_range(&self) -> Option<Range<usize>> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri.clone()),
            _ => None,
        }
    }

    /// The parsed Request-URI.
    pub fn uri(&self) -> Option<Uri<'_>> {
        self.uri_range().and_then(|r| Uri::parse(self.text(r)))
    }

    pub fn headers(&self) -> &[HeaderLine] {
        &self.headers
    }

    /// Keeps only the start line (method, Request-URI or status): what a finished
    /// transaction still reads while it waits out Timer J, without holding the whole
    /// message and its header index for those 32 s.
    pub fn keep_start_line(&mut self) {
        let end = memchr(b'\n', &self.buf).map_or(self.buf.len(), |n| n + 1);
        self.buf = Bytes::copy_from_slice(&self.buf[..end]);
        self.headers = Vec::new();
        self.headers_end = end;
        self.body = end..end;
    }

    /// Bytes this message keeps alive besides itself: its text and its header index.
    pub fn retained_bytes(&self) -> usize {
        self.buf.len() + self.headers.capacity() * std::mem::size_of::<HeaderLine>()
    }

    /// Offset where the empty line ending the headers starts (where new headers go).
    pub fn headers_end(&self) -> usize {
        self.headers_end
    }

    pub fn body(&self) -> &[u8] {
        &self.buf[self.body.clone()]
    }

    pub fn body_range(&self) -> Range<usize> {
        self.body.clone()
    }

    /// Text of a byte range; non-UTF-8 bytes make it empty (SIP headers are UTF-8).
    pub fn text(&self, r: Range<usize>) -> &str {
        std::str::from_utf8(&self.buf[r]).unwrap_or("")
    }

    /// The first header line with this name.
    pub fn header(&self, name: HeaderName) -> Option<&HeaderLine> {
        self.headers.iter().find(|h| h.name == name)
    }

    /// The value of the first header with this name, unfolded when it spans lines.
    pub fn header_value(&self, name: HeaderName) -> Option<Cow<'_, str>> {
        self.header(name).map(|h| self.value_of(h))
    }

    /// A header's value as text, continuation line breaks replaced by a space.
    pub fn value_of(&self, h: &HeaderLine) -> Cow<'_, str> {
        let raw = self.text(h.value.clone());
        if h.folded {
            Cow::Owned(unfold(raw))
        } else {
            Cow::Borrowed(raw)
        }
    }

    /// Every comma-separated value of every header line with this name, in order, with
    /// the index of its line and its byte range (for splicing).
    pub fn values(&self, name: HeaderName) -> Vec<(usize, Range<usize>)> {
        let mut out = Vec::new();
        for (i, h) in self
            .headers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.name == name)
        {
            for r in split_commas(&self.buf, h.value.clone()) {
                out.push((i, r));
            }
        }
        out
    }

    /// The top Via value.
    pub fn top_via(&self) -> Option<Via<'_>> {
        let (_, r) = self.first_value(HeaderName::Via)?;
        Via::parse(self.text(r))
    }

    /// The byte range of the first value of a header (the top Via, the first Route…).
    pub fn first_value(&self, name: HeaderName) -> Option<(usize, Range<usize>)> {
        let (i, h) = self
            .headers
            .iter()
            .enumerate()
            .find(|(_, h)| h.name == name)?;
        split_commas(&self.buf, h.value.clone())
            .next()
            .map(|r| (i, r))
    }

    /// Number of Via values (all lines).
    pub fn via_count(&self) -> usize {
        self.values(HeaderName::Via).len()
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header(HeaderName::CallId)
            .map(|h| self.text(h.value.clone()))
            .filter(|s| !s.is_empty())
    }

    pub fn cseq(&self) -> Option<CSeq<'_>> {
        CSeq::parse(self.text(self.header(HeaderName::CSeq)?.value.clone()))
    }

    pub fn from(&self) -> Option<NameAddr<'_>> {
        NameAddr::parse(self.text(self.header(HeaderName::From)?.value.clone()))
    }

    pub fn to(&self) -> Option<NameAddr<'_>> {
        NameAddr::parse(self.text(self.header(HeaderName::To)?.value.clone()))
    }

    /// Max-Forwards: `Ok(None)` when absent, an error when present but not a number.
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        match self.header(HeaderName::MaxForwards) {
            None => Ok(None),
            Some(h) => {
                let v = trim(&self.buf[h.value.clone()]);
                if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
                    return Err(ParseError::Malformed("Max-Forwards"));
                }
                Ok(Some(
                    v.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')),
                ))
            }
        }
    }

    /// Checks what a proxy needs of a request (RFC 3261 §16.3 step 1 and §8.1.1):
    /// Via, From, To, Call-ID, CSeq (matching the method), a numeric Max-Forwards.
    pub fn validate_request(&self) -> Result<(), ParseError> {
        let uri = self.uri().ok_or(ParseError::BadRequestUri)?;
        if !uri.is_sip() {
            return Err(ParseError::UnsupportedScheme(uri.scheme.to_string()));
        }
        if uri.headers.is_some() {
            return Err(ParseError::RequestUriHeaders);
        }
        self.validate_common()?;
        let cseq = self.cseq().ok_or(ParseError::Malformed("CSeq"))?;
        if let StartLine::Request { method_range, .. } = &self.start {
            if cseq.method_str != self.text(method_range.clone()) {
                return Err(ParseError::CSeqMismatch);
            }
        }
        self.max_forwards()?;
        for (name, label) in [
            (HeaderName::From, "From"),
            (HeaderName::To, "To"),
            (HeaderName::Contact, "Contact"),
        ] {
            let bare_with_headers = self
                .values(name)
                .into_iter()
                .any(|(_, r)| addr_spec_with_headers(self.text(r)));
            if bare_with_headers {
                return Err(ParseError::UnenclosedUri(label));
            }
        }
        Ok(())
    }

    /// Checks what a proxy needs of a response: Via, From, To, Call-ID, CSeq.
    pub fn validate_response(&self) -> Result<(), ParseError> {
        self.validate_common()
    }

    fn validate_common(&self) -> Result<(), ParseError> {
        if self.header(HeaderName::Via).is_none() {
            return Err(ParseError::Missing("Via"));
        }
        if self.top_via().is_none() {
            return Err(ParseError::Malformed("Via"));
        }
        for (name, label) in [
            (HeaderName::From, "From"),
            (HeaderName::To, "To"),
            (HeaderName::CallId, "Call-ID"),
            (HeaderName::CSeq, "CSeq"),
        ] {
            let count = self.headers.iter().filter(|h| h.name == name).count();
            if count == 0 {
                return Err(ParseError::Missing(label));
            }
            if count > 1 {
                return Err(ParseError::Duplicate(label));
            }
        }
        if self.from().is_none() {
            return Err(ParseError::Malformed("From"));
        }
        if self.to().is_none() {
            return Err(ParseError::Malformed("To"));
        }
        if self.call_id().is_none() {
            return Err(ParseError::Malformed("Call-ID"));
        }
        if self.cseq().is_none() {
            return Err(ParseError::Malformed("CSeq"));
        }
        Ok(())
    }
}

/// Whether a name-addr value is a bare addr-spec whose URI holds `?`: without `<>` the
/// header parameters and the URI headers cannot be told apart, so RFC 3261 §20 forbids it.
fn addr_spec_with_headers(value: &str) -> bool {
    let v = value.trim_start();
    if v.starts_with('<') || v.starts_with('"') || v.contains('<') {
        return false;
    }
    v.split(';').next().is_some_and(|uri| uri.contains('?'))
}

/// CSeq: sequence number and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: Method,
    pub method_str: &'a str,
}

impl<'a> CSeq<'a> {
    pub fn parse(v: &'a str) -> Option<CSeq<'a>> {
        let mut it = v.split_ascii_whitespace();
        let seq = it.next()?.parse::<u32>().ok()?;
        let method_str = it.next()?;
        if it.next().is_some() || !method_str.bytes().all(is_token_char) {
            return None;
        }
        Some(CSeq {
            seq,
            method: Method::from_bytes(method_str.as_bytes()),
            method_str,
        })
    }
}

fn parse_start_line(b: &[u8], r: Range<usize>) -> Result<StartLine, ParseError> {
    let line = &b[r.clone()];
    if line.starts_with(b"SIP/") {
        let sp1 = memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
        if &line[..sp1] != b"SIP/2.0" {
            return Err(ParseError::BadVersion);
        }
        let rest = &line[sp1 + 1..];
        let code_end = memchr(b' ', rest).unwrap_or(rest.len());
        let code = &rest[..code_end];
        if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadStartLine);
        }
        let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        if !(100..=699).contains(&status) {
            return Err(ParseError::BadStartLine);
        }
        let reason_start = (r.start + sp1 + 1 + code_end + 1).min(r.end);
        return Ok(StartLine::Response {
            status,
            reason: reason_start..r.end,
        });
    }
    let sp1 = memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
    let method = &line[..sp1];
    if method.is_empty() || !method.iter().all(|c| is_token_char(*c)) {
        return Err(ParseError::BadStartLine);
    }
    let rest = &line[sp1 + 1..];
    let sp2 = memchr(b' ', rest).ok_or(ParseError::BadStartLine)?;
    let version = &rest[sp2 + 1..];
    // Extra spaces anywhere in the start line (RFC 4475 lwsstart, trws) are malformed, not
    // another version: the splice relays the start line as it came, so it must be exact.
    if !version.starts_with(b"SIP/") || version.iter().any(u8::is_ascii_whitespace) {
        return Err(ParseError::BadStartLine);
    }
    if version != b"SIP/2.0" {
        return Err(ParseError::BadVersion);
    }
    let uri = r.start + sp1 + 1..r.start + sp1 + 1 + sp2;
    if uri.is_empty() {
        return Err(ParseError::BadRequestUri);
    }
    Ok(StartLine::Request {
        method: Method::from_bytes(method),
        method_range: r.start..r.start + sp1,
        uri,
    })
}

/// RFC 3261 token characters.
pub(crate) fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

fn trim_range(b: &[u8], r: Range<usize>) -> Range<usize> {
    let s = &b[r.clone()];
    let start = s
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    r.start + start..r.start + end
}

fn unfold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut ws = false;
    for c in s.chars() {
        if c == '\r' || c == '\n' || c == ' ' || c == '\t' {
            ws = true;
        } else {
            if ws && !out.is_empty() {
                out.push(' ');
            }
            ws = false;
            out.push(c);
        }
    }
    out
}

/// Splits a header value on commas that are outside quotes and angle brackets, returning
/// trimmed ranges of the non-empty parts.
pub fn split_commas(b: &[u8], r: Range<usize>) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut pos = r.start;
    let end = r.end;
    std::iter::from_fn(move || {
        while pos < end {
            let start = pos;
            let mut in_quotes = false;
            let mut in_angle = false;
            let mut i = pos;
            while i < end {
                match b[i] {
                    b'\\' if in_quotes => i += 1,
                    b'"' => in_quotes = !in_quotes,
                    b'<' if !in_quotes => in_angle = true,
                    b'>' if !in_quotes => in_angle = false,
                    b',' if !in_quotes && !in_angle => break,
                    _ => {}
                }
                i += 1;
            }
            let i = i.min(end);
            pos = i + 1;
            let part = trim_range(b, start..i);
            if !part.is_empty() {
                return Some(part);
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const INVITE: &str = "INVITE sip:bob@contoso.test SIP/2.0\r\n\
Via: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bKabc, SIP/2.0/TLS 10.0.0.2:5061;branch=z9hG4bKdef\r\n\
v: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKghi;rport\r\n\
Max-Forwards: 69\r\n\
f: \"Alice, A.\" <sip:alice@fabrikam.test>;tag=1928\r\n\
t: sip:bob@contoso.test\r\n\
i: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Subject: lunch\r\n  and more\r\n\
l: 4\r\n\
\r\n\
v=0\n";

    fn msg(s: &str) -> Message {
        Message::parse(Bytes::copy_from_slice(s.as_bytes()), false).expect("parses")
    }

    #[test]
    fn parses_request_with_compact_forms_and_folding() {
        let m = msg(INVITE);
        assert_eq!(m.method(), Method::Invite);
        assert_eq!(m.uri().expect("uri").host, "contoso.test");
        assert_eq!(m.via_count(), 3);
        assert_eq!(m.top_via().expect("via").branch(), Some("z9hG4bKabc"));
        assert_eq!(m.max_forwards(), Ok(Some(69)));
        let from = m.from().expect("from");
        assert_eq!(from.uri.host, "fabrikam.test");
        assert_eq!(from.tag(), Some("1928"));
        assert_eq!(m.to().expect("to").tag(), None);
        assert_eq!(m.call_id(), Some("a84b4c76e66710"));
        assert_eq!(m.cseq().expect("cseq").seq, 314159);
        assert_eq!(
            m.header_value(HeaderName::Other).as_deref(),
            Some("lunch and more")
        );
        assert_eq!(m.body(), b"v=0\n");
        assert!(m.validate_request().is_ok());
    }

    #[test]
    fn a_message_cut_to_its_start_line_keeps_its_method_and_uri_and_nothing_else() {
        let mut m = msg(INVITE);
        let before = m.retained_bytes();
        m.keep_start_line();
        assert_eq!(m.method(), Method::Invite);
        assert_eq!(m.uri().expect("uri").host, "contoso.test");
        assert!(m.headers().is_empty() && m.body().is_empty());
        assert_eq!(m.retained_bytes(), "INVITE sip:bob@contoso.test SIP/2.0\r\n".len());
        assert!(m.retained_bytes() * 5 < before, "{before} -> {}", m.retained_bytes());
    }

    #[test]
    fn ipv6_via_in_third_value() {
        let m = msg(INVITE);
        let vias = m.values(HeaderName::Via);
        let third = Via::parse(m.text(vias[2].1.clone())).expect("via");
        assert_eq!(third.host, "2001:db8::1");
        assert_eq!(third.port, Some(5060));
        assert!(third.has_param("rport"));
    }

    #[test]
    fn response_start_line() {
        let m = msg("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(m.status(), Some(180));
        assert_eq!(m.reason(), "Ringing");
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        let cases: &[&str] = &[
            "",
            "\r\n",
            "INVITE\r\n\r\n",
            "INVITE sip:a@b SIP/3.0\r\nContent-Length: 0\r\n\r\n",
            "INVITE sip:a@b SIP/2.0\r\nNoColon\r\nContent-Length: 0\r\n\r\n",
            "INVITE sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nshort",
            "SIP/2.0 99 Bad\r\nContent-Length: 0\r\n\r\n",
            "INVITE sip:a@b SIP/2.0\r\nContent-Length: 0\r\n",
        ];
        for c in cases {
            assert!(
                Message::parse(Bytes::copy_from_slice(c.as_bytes()), false).is_err(),
                "{c:?}"
            );
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let m = msg("MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(m.validate_request(), Err(ParseError::Missing("Call-ID")));
        let m = msg("MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(m.validate_request(), Err(ParseError::CSeqMismatch));
        let m = msg("MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: ten\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            m.validate_request(),
            Err(ParseError::Malformed("Max-Forwards"))
        );
    }

    #[test]
    fn datagram_body_without_content_length() {
        let m = Message::parse(
            Bytes::from_static(b"MESSAGE sip:a@b SIP/2.0\r\nVia: x\r\n\r\nhi"),
            true,
        )
        .expect("parses");
        assert_eq!(m.body(), b"hi");
        let m = Message::parse(
            Bytes::from_static(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 1\r\n\r\nhi"),
            true,
        )
        .expect("parses");
        assert_eq!(m.body(), b"h");
    }

    #[test]
    fn comma_split_respects_quotes_and_brackets() {
        let b = br#"<sip:a@b;x=1,2>, "c, d" <sip:c@d>,sip:e@f"#;
        let parts: Vec<_> = split_commas(b, 0..b.len())
            .map(|r| std::str::from_utf8(&b[r]).unwrap_or(""))
            .collect();
        assert_eq!(parts, ["<sip:a@b;x=1,2>", "\"c, d\" <sip:c@d>", "sip:e@f"]);
    }

    // === the forms RFC 3261 §7.3 allows, one test each ===

    #[test]
    fn compact_forms_are_the_long_headers() {
        let m = msg("MESSAGE sip:bob@contoso.test SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@fabrikam.test>;tag=1\r\nt: <sip:bob@contoso.test>\r\ni: c1\r\nCSeq: 1 MESSAGE\r\nm: <sip:a@h>\r\nk: path\r\nc: text/plain\r\nl: 2\r\n\r\nhi");
        assert!(m.validate_request().is_ok());
        assert_eq!(m.call_id(), Some("c1"));
        assert!(m.header(HeaderName::Contact).is_some());
        assert!(m.header(HeaderName::Supported).is_some());
        assert_eq!(
            m.header_value(HeaderName::ContentType).as_deref(),
            Some("text/plain")
        );
        assert_eq!(m.body(), b"hi");
    }

    #[test]
    fn folded_header_values_unfold_and_keep_their_line() {
        // RFC 3261 §7.3.1: a line starting with SP or HTAB continues the previous value.
        let text = "MESSAGE sip:bob@contoso.test SIP/2.0\r\nVia: SIP/2.0/TCP a.test;\r\n branch=z9hG4bK1 ,\r\n\tSIP/2.0/UDP b.test;branch=z9hG4bK2\r\nFrom:\r\n <sip:a@fabrikam.test>\r\n  ;tag=1\r\nTo: <sip:bob@contoso.test>\r\nCall-ID: c\r\nCSeq: 1\r\n MESSAGE\r\nX-Note: one\r\n two\r\nContent-Length: 0\r\n\r\n";
        let m = msg(text);
        assert!(m.validate_request().is_ok(), "{:?}", m.validate_request());
        assert_eq!(m.via_count(), 2);
        assert_eq!(m.top_via().and_then(|v| v.branch()), Some("z9hG4bK1"));
        assert_eq!(m.from().and_then(|f| f.tag()), Some("1"));
        assert_eq!(m.cseq().map(|c| c.method), Some(Method::Message));
        let note = m
            .headers()
            .iter()
            .find(|h| m.text(h.name_range.clone()) == "X-Note");
        let note = note.map(|h| (m.value_of(h).into_owned(), m.text(h.line.clone())));
        assert_eq!(note.as_ref().map(|n| n.0.as_str()), Some("one two"));
        // Relayed as it came: the whole folded line, continuation included.
        assert_eq!(
            note.map(|n| n.1.to_string()).as_deref(),
            Some("X-Note: one\r\n two\r\n")
        );
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let m = msg("MESSAGE sip:bob@contoso.test SIP/2.0\r\nvIA: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFROM: <sip:a@fabrikam.test>;tag=1\r\nto: <sip:bob@contoso.test>\r\ncall-id: c\r\ncseq: 1 MESSAGE\r\nMAX-forwards: 5\r\ncontent-LENGTH: 0\r\n\r\n");
        assert!(m.validate_request().is_ok());
        assert_eq!(m.max_forwards(), Ok(Some(5)));
    }

    #[test]
    fn several_values_on_one_line_and_across_lines() {
        let m = msg("MESSAGE sip:bob@contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK2\r\nVia: SIP/2.0/TLS c;branch=z9hG4bK3\r\nRoute: <sip:r1.test;lr>, <sip:r2.test;lr>\r\nRoute: <sip:r3.test;lr>\r\nFrom: <sip:a@f>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(m.via_count(), 3);
        let routes: Vec<String> = m
            .values(HeaderName::Route)
            .into_iter()
            .map(|(_, r)| m.text(r).to_string())
            .collect();
        assert_eq!(
            routes,
            ["<sip:r1.test;lr>", "<sip:r2.test;lr>", "<sip:r3.test;lr>"]
        );
        let second = m.values(HeaderName::Via)[1].1.clone();
        assert_eq!(
            Via::parse(m.text(second)).map(|v| v.host),
            Some("2001:db8::1")
        );
    }

    #[test]
    fn unknown_headers_are_kept_as_they_came() {
        let m = msg("MESSAGE sip:bob@contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@f>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nUnknownHeaderWithUnusualValue: ;;,,;;,;\r\nC%6Fntact: <sip:x@y>\r\nContent-Length: 0\r\n\r\n");
        let unknown: Vec<&str> = m
            .headers()
            .iter()
            .filter(|h| h.name == HeaderName::Other)
            .map(|h| m.text(h.line.clone()))
            .collect();
        assert_eq!(
            unknown,
            [
                "UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n",
                "C%6Fntact: <sip:x@y>\r\n"
            ]
        );
        assert!(
            m.header(HeaderName::Contact).is_none(),
            "C%6Fntact is not Contact"
        );
    }

    #[test]
    fn refusals_name_their_status() {
        assert_eq!(ParseError::BadVersion.status(), 505);
        assert_eq!(ParseError::UnsupportedScheme("tel".into()).status(), 416);
        assert_eq!(ParseError::Missing("Via").status(), 400);
        let m = msg("OPTIONS tel:+14255550100 SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@f>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            m.validate_request(),
            Err(ParseError::UnsupportedScheme("tel".into()))
        );
        let m = msg("INVITE sip:a@b?Route=%3Csip:x%3E SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@f>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(m.validate_request(), Err(ParseError::RequestUriHeaders));
        for line in ["OPTIONS sip:a@b SIP/2.0  ", "OPTIONS  sip:a@b  SIP/2.0"] {
            let text = format!("{line}\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(
                Message::parse(Bytes::from(text), false).err(),
                Some(ParseError::BadStartLine)
            );
        }
    }

    #[test]
    fn a_uri_with_headers_outside_angle_brackets_is_a_bad_request() {
        let regbadct = "REGISTER sip:example.com SIP/2.0\r\nTo: sip:user@example.com\r\nFrom: sip:user@example.com;tag=998332\r\nMax-Forwards: 70\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nVia: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw\r\nContact: sip:user@example.com?Route=%3Csip:sip.example.com%3E\r\nl: 0\r\n\r\n";
        let err = msg(regbadct).validate_request();
        assert_eq!(err, Err(ParseError::UnenclosedUri("Contact")));
        assert_eq!(
            err.map_err(|e| e.reason_phrase()),
            Err("Bad Request - Contact URI with ?headers outside <>".to_string())
        );
        // RFC 4475 §3.3.14 regescrt: the same URI inside <> is valid.
        let enclosed = regbadct.replace(
            "Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "Contact: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>",
        );
        assert_eq!(msg(&enclosed).validate_request(), Ok(()));
        let from = regbadct
            .replace("Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E", "Contact: *")
            .replace("From: sip:user@example.com;tag", "From: sip:user@example.com?x=y;tag");
        assert_eq!(
            msg(&from).validate_request(),
            Err(ParseError::UnenclosedUri("From"))
        );
    }

    #[test]
    fn an_unparseable_request_still_has_a_head_to_answer() {
        let raw = b"OPTIONS sip:a@b SIP/7.0\r\nVia: SIP/7.0/UDP c.example.com;branch=z9hG4bK1\r\nCall-ID: v7\r\nCSeq: 1 OPTIONS\r\nContent-Length: 99\r\n\r\n";
        let head = Message::reply_head(raw).expect("a head");
        assert_eq!(head.call_id(), Some("v7"));
        assert!(head.header(HeaderName::ContentLength).is_none());
        assert!(Message::reply_head(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n").is_none());
        assert!(Message::reply_head(b"garbage without via\r\nX: y\r\n\r\n").is_none());
    }
}
