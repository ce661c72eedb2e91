//! No amplification toward UDP senders on the external interface: a datagram source is
//! unverified (it may be spoofed), so a response the edge writes itself is never larger
//! than the datagram that caused it.
//!
//! Optional header lines go first, then the detail after the standard reason phrase; the
//! echo RFC 3261 §8.2.6 requires (Via, From, To, Call-ID, CSeq), the To tag and Retry-After
//! stay. A response that still does not fit (a bare request in compact form) is not sent:
//! the sender's retransmissions, or a client-sized request, get an answer.

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
    let mut lines: Vec<String> = head.split("\r\n").map(str::to_string).collect();
    let size = |lines: &[String]| lines.iter().map(|h| h.len() + 2).sum::<usize>() + 2;
    for name in OPTIONAL {
        lines.retain(|h| !is_named(h, name));
        if size(&lines) <= budget {
            return Some(join(&lines));
        }
    }
    // "SIP/2.0 400 Bad Request - <detail>" → "SIP/2.0 400 Bad Request".
    if let Some((short, _)) = lines[0].split_once(" - ") {
        lines[0] = short.to_string();
    }
    (size(&lines) <= budget).then(|| join(&lines))
}

fn join(lines: &[String]) -> Bytes {
    let mut out = lines.join("\r\n");
    out.push_str("\r\n\r\n");
    Bytes::from(out)
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
    fn the_reason_detail_goes_before_giving_up_and_retry_after_stays() {
        let r = "SIP/2.0 400 Bad Request - missing Call-ID header\r\nVia: v\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n";
        let out = fit(BytesMut::from(r), 80).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "SIP/2.0 400 Bad Request\r\nVia: v\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n"
        );
        assert!(
            fit(BytesMut::from(r), 60).is_none(),
            "nothing smaller is a response"
        );
    }
}
