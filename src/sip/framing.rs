//! Stream framing: CRLF keep-alives, end of headers, Content-Length, size limits.
//!
//! `scan` says "not yet" cheaply: nothing is allocated until a whole message is in the
//! buffer, and an incomplete message is a variant, not an error.

use memchr::memchr;

/// Limits applied while framing.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// Largest message, headers plus body.
    pub max_message_size: usize,
    /// Most header lines.
    pub max_headers: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_message_size: 65_536,
            max_headers: 256,
        }
    }
}

/// What the start of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// More bytes are needed.
    Incomplete,
    /// A keep-alive of this many bytes: `\r\n\r\n` (a ping, answered with `\r\n`) or a
    /// lone `\r\n` (a pong).
    KeepAlive { len: usize, ping: bool },
    /// A complete message of this many bytes.
    Message { len: usize },
}

/// Why a stream cannot be framed; the connection cannot be trusted after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The message (or its header block) is larger than the limit.
    #[error("message of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    /// More header lines than the limit.
    #[error("more than {limit} header lines")]
    TooManyHeaders { limit: usize },
    /// A message on a stream without Content-Length cannot be delimited (RFC 3261 §18.3).
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// Content-Length is not a decimal number.
    #[error("malformed Content-Length")]
    BadContentLength,
    /// Two Content-Length headers disagree: where the next message starts is unknown.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// More keep-alive bytes in a row than any peer needs (RFC 5626 pings are 4 bytes).
    #[error("more than {limit} bytes of keep-alives in a row")]
    KeepAliveRun { limit: usize },
}

/// The most keep-alive bytes (CRLF) a stream may send in one run without a message: a
/// peer pings with 4 bytes and waits for the pong, so a longer run is a flood.
pub const MAX_KEEPALIVE_RUN: usize = 1024;

/// Looks at the start of `buf` and says whether a whole message is there.
pub fn scan(buf: &[u8], limits: &FrameLimits) -> Result<Scan, FrameError> {
    if buf.is_empty() {
        return Ok(Scan::Incomplete);
    }
    if buf[0] == b'\r' || buf[0] == b'\n' {
        return Ok(scan_keepalive(buf));
    }
    let head = match find_header_end(buf, limits)? {
        Some(h) => h,
        None => {
            if buf.len() > limits.max_message_size {
                return Err(FrameError::TooLarge {
                    size: buf.len(),
                    limit: limits.max_message_size,
                });
            }
            return Ok(Scan::Incomplete);
        }
    };
    let body_len = match head.content_length {
        Some(n) => n,
        None => return Err(FrameError::MissingContentLength),
    };
    let total = head.body_start.saturating_add(body_len);
    if total > limits.max_message_size {
        return Err(FrameError::TooLarge {
            size: total,
            limit: limits.max_message_size,
        });
    }
    if buf.len() < total {
        Ok(Scan::Incomplete)
    } else {
        Ok(Scan::Message { len: total })
    }
}

fn scan_keepalive(buf: &[u8]) -> Scan {
    if buf.starts_with(b"\r\n\r\n") {
        return Scan::KeepAlive { len: 4, ping: true };
    }
    if buf == b"\r" || buf == b"\r\n" || buf == b"\r\n\r" {
        // A pong or the start of a ping: wait a little, unless nothing else can follow.
        return if buf == b"\r\n" {
            Scan::KeepAlive {
                len: 2,
                ping: false,
            }
        } else {
            Scan::Incomplete
        };
    }
    if buf.starts_with(b"\r\n") {
        return Scan::KeepAlive {
            len: 2,
            ping: false,
        };
    }
    // A bare LF: tolerate as a one-byte keep-alive.
    Scan::KeepAlive {
        len: 1,
        ping: false,
    }
}

/// Where the header block ends and what Content-Length says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadInfo {
    /// Offset of the first body byte.
    pub body_start: usize,
    /// Content-Length, if the header is present.
    pub content_length: Option<usize>,
}

/// Finds the blank line ending the headers and reads Content-Length on the way.
/// `Ok(None)` means the header block is not complete yet.
pub fn find_header_end(buf: &[u8], limits: &FrameLimits) -> Result<Option<HeadInfo>, FrameError> {
    let mut pos = match memchr(b'\n', buf) {
        Some(nl) => nl + 1,
        None => return Ok(None),
    };
    let mut content_length = None;
    let mut headers = 0usize;
    loop {
        let rel = match memchr(b'\n', &buf[pos..]) {
            Some(r) => r,
            None => return Ok(None),
        };
        let end = pos + rel;
        let line_end = if end > pos && buf[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        if line_end == pos {
            return Ok(Some(HeadInfo {
                body_start: end + 1,
                content_length,
            }));
        }
        headers += 1;
        if headers > limits.max_headers {
            return Err(FrameError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        let line = &buf[pos..line_end];
        if let Some(v) = content_length_value(line) {
            let n = parse_content_length(v)?;
            if content_length.is_some_and(|seen| seen != n) {
                return Err(FrameError::ConflictingContentLength);
            }
            content_length = Some(n);
        }
        pos = end + 1;
    }
}

/// The value of a `Content-Length` / `l` header line, or `None` for any other line.
fn content_length_value(line: &[u8]) -> Option<&[u8]> {
    let colon = memchr(b':', line)?;
    let name = trim(&line[..colon]);
    if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
        Some(trim(&line[colon + 1..]))
    } else {
        None
    }
}

/// Parses a Content-Length value: digits only, no sign, bounded.
pub fn parse_content_length(v: &[u8]) -> Result<usize, FrameError> {
    if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
        return Err(FrameError::BadContentLength);
    }
    Ok(v.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0')))
}

pub(crate) fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MSG: &[u8] = b"MESSAGE sip:bob@contoso.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello";

    #[test]
    fn whole_message_with_compact_content_length() {
        assert_eq!(
            scan(MSG, &FrameLimits::default()),
            Ok(Scan::Message { len: MSG.len() })
        );
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for n in 1..MSG.len() {
            assert_eq!(
                scan(&MSG[..n], &FrameLimits::default()),
                Ok(Scan::Incomplete),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn keepalives() {
        let l = FrameLimits::default();
        assert_eq!(
            scan(b"\r\n\r\nINVITE", &l),
            Ok(Scan::KeepAlive { len: 4, ping: true })
        );
        assert_eq!(
            scan(b"\r\n", &l),
            Ok(Scan::KeepAlive {
                len: 2,
                ping: false
            })
        );
        assert_eq!(scan(b"\r\n\r", &l), Ok(Scan::Incomplete));
    }

    #[test]
    fn missing_content_length_is_an_error_on_streams() {
        let m = b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n";
        assert_eq!(
            scan(m, &FrameLimits::default()),
            Err(FrameError::MissingContentLength)
        );
    }

    #[test]
    fn limits() {
        let l = FrameLimits {
            max_message_size: 50,
            max_headers: 2,
        };
        assert!(matches!(scan(MSG, &l), Err(FrameError::TooLarge { .. })));
        let l = FrameLimits {
            max_message_size: 5000,
            max_headers: 1,
        };
        assert_eq!(scan(MSG, &l), Err(FrameError::TooManyHeaders { limit: 1 }));
        let big = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n";
        assert_eq!(
            scan(big, &FrameLimits::default()),
            Err(FrameError::BadContentLength)
        );
        let neg = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: -5\r\n\r\n";
        assert_eq!(
            scan(neg, &FrameLimits::default()),
            Err(FrameError::BadContentLength)
        );
        let huge_cl = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 70000\r\n\r\n";
        assert!(
            matches!(scan(huge_cl, &FrameLimits::default()), Err(FrameError::TooLarge { size, .. }) if size > 70000)
        );
    }

    #[test]
    fn pipelined_messages_frame_one_at_a_time() {
        let mut two = MSG.to_vec();
        two.extend_from_slice(MSG);
        assert_eq!(
            scan(&two, &FrameLimits::default()),
            Ok(Scan::Message { len: MSG.len() })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = scan(&bytes, &FrameLimits::default());
        }
    }

    #[test]
    fn conflicting_content_lengths_cannot_be_framed_and_equal_ones_can() {
        let limits = FrameLimits::default();
        let two = |a: &str, b: &str| {
            format!("MESSAGE sip:a@b SIP/2.0\r\nContent-Length: {a}\r\nl: {b}\r\n\r\nhello")
        };
        assert_eq!(
            scan(two("5", "0").as_bytes(), &limits),
            Err(FrameError::ConflictingContentLength)
        );
        assert_eq!(
            scan(two("5", "5").as_bytes(), &limits),
            Ok(Scan::Message { len: two("5", "5").len() })
        );
    }
}
