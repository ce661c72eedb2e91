//! No amplification toward UDP senders: a datagram source is unverified (it may be spoofed),
//! so a response the edge writes itself is never larger than the datagram that caused it.
//!
//! Optional header lines go first, then the detail after the standard reason phrase, then
//! Retry-After; a response whose mandatory part (the copied Via, From, To, Call-ID, CSeq)
//! is still too large is not sent at all.

use bytes::{Bytes, BytesMut};

/// Header lines that only inform, dropped first, in this order.
const OPTIONAL: &[&str] = &[
    "accept",
    "supported",
    "allow",
    "warning",
    "ms-diagnostics-public",
    "ms-diagnostics",
];

/// `response` cut down to at most `budget` bytes, or `None` when it cannot be.
pub fn fit(response: BytesMut, budget: usize) -> Option<Bytes> {
    if response.len() <= budget {
        return Some(response.freeze());
    }
    let text = std::str::from_utf8(&response).ok()?;
    let (head, _) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let mut status = lines.next()?.to_string();
    let mut headers: Vec<&str> = lines.collect();
    let size = |status: &str, headers: &[&str]| {
        status.len() + 2 + headers.iter().map(|h| h.len() + 2).sum::<usize>() + 2
    };
    for name in OPTIONAL.iter().chain(["", "retry-after"].iter()) {
        if name.is_empty() {
            // "SIP/2.0 400 Bad Request - <detail>" → "SIP/2.0 400 Bad Request".
            if let Some((short, _)) = status.split_once(" - ") {
                status = short.to_string();
            }
        } else {
            headers.retain(|h| !is_named(h, name));
        }
        if size(&status, &headers) <= budget {
            let mut out = String::with_capacity(budget);
            out.push_str(&status);
            out.push_str("\r\n");
            for h in &headers {
                out.push_str(h);
                out.push_str("\r\n");
            }
            out.push_str("\r\n");
            return Some(Bytes::from(out));
        }
    }
    None
}

fn is_named(line: &str, name: &str) -> bool {
    line.split_once(':')
        .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:e>;tag=1\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE\r\nSupported: ms-dialog-route-set-update\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn a_response_within_the_budget_is_untouched() {
        let out = fit(BytesMut::from(OK), OK.len()).unwrap();
        assert_eq!(out, OK.as_bytes());
    }

    #[test]
    fn optional_lines_go_first_and_the_mandatory_ones_stay() {
        let out = fit(BytesMut::from(OK), OK.len() - 10).unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(out.len() <= OK.len() - 10);
        assert!(!text.contains("Supported:"), "{text}");
        assert!(
            text.contains("Allow:"),
            "dropped only what was needed: {text}"
        );
        assert!(text.starts_with("SIP/2.0 200 OK\r\nVia: "));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn the_reason_detail_and_retry_after_go_before_giving_up() {
        let r = "SIP/2.0 400 Bad Request - missing Call-ID header\r\nVia: v\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n";
        let out = fit(BytesMut::from(r), 60).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "SIP/2.0 400 Bad Request\r\nVia: v\r\nContent-Length: 0\r\n\r\n"
        );
        assert!(
            fit(BytesMut::from(r), 20).is_none(),
            "nothing smaller exists"
        );
    }
}
