//! Just enough HTTP/1.1 for the admin endpoint: one request per connection, bodies framed
//! by Content-Length, answers in `text/plain`. Hand-written rather than hyper/axum: the
//! endpoint has four routes and a one-line body, and compile time matters.

use std::io::{self, Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest request body accepted (a cmdlet line).
pub const MAX_BODY: usize = 64 * 1024;

/// One request as read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without its query, e.g. `/cmdlet`.
    pub path: String,
    /// The query without `?`, e.g. `persist=1`; empty when none.
    pub query: String,
    /// Header names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The value of `key` in the query (`a=1&format=json`), as written (not decoded).
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query
            .split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer(&self) -> Option<&str> {
        let v = self.header("authorization")?;
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }

    /// Whether the query has `name=1` / `name=true` / bare `name`.
    /// A query parameter's value (`persist=all` → `Some("all")`; a bare name → `Some("")`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .find_map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k == name).then_some(v),
                None => (kv == name).then_some(""),
            })
    }

    pub fn flag(&self, name: &str) -> bool {
        self.query.split('&').any(|kv| match kv.split_once('=') {
            Some((k, v)) => k == name && (v == "1" || v.eq_ignore_ascii_case("true")),
            None => kv == name,
        })
    }
}

/// Why a request could not be read; each becomes a 400 (or the connection just closes).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connection closed before a full request")]
    Closed,
    #[error("request head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("request body larger than {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one request: the head up to the blank line, then Content-Length bytes of body.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<Request, HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::HeadTooLarge);
        }
        let mut chunk = [0u8; 2048];
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Err(HttpError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| HttpError::Malformed("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (first.next(), first.next(), first.next())
    else {
        return Err(HttpError::Malformed("request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("not HTTP/1.x"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for l in lines {
        let (n, v) = l
            .split_once(':')
            .ok_or(HttpError::Malformed("header line"))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: Vec::new(),
    };
    let len: usize = match req.header("content-length") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| HttpError::Malformed("Content-Length"))?,
    };
    if len > MAX_BODY {
        return Err(HttpError::BodyTooLarge);
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut chunk = vec![0u8; len - body.len()];
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Err(HttpError::Closed);
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    req.body = body;
    Ok(req)
}

/// Writes a complete `text/plain` response and says the connection closes.
pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    body: &str,
) -> io::Result<()> {
    write_typed(w, status, "text/plain; charset=utf-8", body).await
}

/// Writes a complete response of the given media type and says the connection closes.
pub async fn write_typed<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    content_type: &str,
    body: &str,
) -> io::Result<()> {
    let text = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    w.write_all(text.as_bytes()).await?;
    w.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        424 => "Failed Dependency",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// A query value with its `%XX` escapes (and `+` for space) decoded; a bad escape stays
/// as it is.
pub fn percent_decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` for a query value: everything but unreserved characters as `%XX`.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// === client ===

/// Sends one request to `endpoint` (`http://127.0.0.1:PORT` or `127.0.0.1:PORT`) and
/// returns the status and body. Blocking: `sipedge admin` needs no runtime.
pub fn send(
    endpoint: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> io::Result<(u16, String)> {
    let host = endpoint
        .trim()
        .strip_prefix("http://")
        .unwrap_or(endpoint.trim())
        .trim_end_matches('/');
    let addr = host.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{endpoint}` has no address"),
        )
    })?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP response");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_id_survives_percent_encoding() {
        let id = "a b+c@host;x=%1/é";
        assert_eq!(percent_decode(&percent_encode(id)), id);
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[tokio::test]
    async fn reads_a_request_with_a_body_in_pieces() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for part in [
                "POST /cmdlet?persist=1 HTTP/1.1\r\nAuthorization: Bearer abc\r\n",
                "Content-Length: 20\r\n\r\nGet-CsPublic",
                "Provider",
            ] {
                a.write_all(part.as_bytes()).await.unwrap();
            }
            a
        });
        let req = read_request(&mut b).await.unwrap();
        writer.await.unwrap();
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/cmdlet")
        );
        assert!(req.flag("persist"));
        assert_eq!(req.bearer(), Some("abc"));
        assert_eq!(req.body, b"Get-CsPublicProvider");
    }

    #[tokio::test]
    async fn refuses_oversized_and_malformed_requests() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(
            format!(
                "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY + 1
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        assert!(matches!(
            read_request(&mut b).await,
            Err(HttpError::BodyTooLarge)
        ));
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"GET\r\n\r\n").await.unwrap();
        assert!(matches!(
            read_request(&mut b).await,
            Err(HttpError::Malformed(_))
        ));
    }
}
