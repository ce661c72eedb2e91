//! No amplification toward UDP senders on the external interface: a datagram source is
//! unverified (it may be spoofed), so a response the edge writes itself is never larger
//! than needed: at most the larger of the datagram that caused it and the *minimal*
//! response.
//!
//! The minimal response is what RFC 3261 §8.2.6 requires: the status line with the
//! standard reason phrase only, the Via, From, To (with its tag), Call-ID and CSeq lines
//! echoed, Retry-After when the response has one, and `Content-Length: 0`. Within the
//! budget, optional header lines go first, then the detail after the standard reason
//! phrase; a response that still does not fit is cut down to the minimal one. So every
//! request is answered, and a bare request in compact form (smaller than any answer to it)
//! gets exactly the minimal answer: a spoofed sender gains at most the few bytes the
//! echo and the To tag add.

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

/// Header lines the minimal response keeps, long and compact names (RFC 3261 §7.3.3).
const MANDATORY: &[&str] = &[
    "via",
    "v",
    "from",
    "f",
    "to",
    "t",
    "call-id",
    "i",
    "cseq",
    "retry-after",
    "content-length",
    "l",
];

/// `response` cut down to at most `max(budget, minimal)` bytes, where `minimal` is the
/// size of its minimal form (see the module doc).
pub fn fit(response: BytesMut, budget: usize) -> Bytes {
    if response.len() <= budget {
        return response.freeze();
    }
    let mut lines = head_lines(&response);
    for name in OPTIONAL {
        lines.retain(|h| !is_named(h, name));
        if size(&lines) <= budget {
            return join(&lines);
        }
    }
    // "SIP/2.0 400 Bad Request - <detail>" → "SIP/2.0 400 Bad Request".
    if let Some(first) = lines.first_mut() {
        if let Some(at) = find(first, b" - ") {
            first.truncate(at);
        }
    }
    if size(&lines) > budget {
        // Whatever else is left (Unsupported, Server…) goes: the minimal form, which no
        // budget can refuse.
        let mut first = true;
        lines.retain(|h| std::mem::take(&mut first) || MANDATORY.iter().any(|n| is_named(h, n)));
    }
    join(&lines)
}

/// The header block's lines, without the body or the blank line that ends it.
fn head_lines(message: &[u8]) -> Vec<Vec<u8>> {
    let head = match find(message, b"\r\n\r\n") {
        Some(end) => &message[..end],
        None => message,
    };
    head.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Bytes on the wire of `lines` as a header block with its blank line.
fn size(lines: &[Vec<u8>]) -> usize {
    lines.iter().map(|h| h.len() + 2).sum::<usize>() + 2
}

fn join(lines: &[Vec<u8>]) -> Bytes {
    let mut out = Vec::with_capacity(size(lines));
    for l in lines {
        out.extend_from_slice(l);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn is_named(line: &[u8], name: &str) -> bool {
    line.iter().position(|b| *b == b':').is_some_and(|colon| {
        line[..colon]
            .trim_ascii()
            .eq_ignore_ascii_case(name.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:e>;tag=1\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE\r\nSupported: ms-dialog-route-set-update\r\nContent-Length: 0\r\n\r\n";

    /// The size of the minimal form of `response`: what `fit` returns for a budget of 0.
    fn minimal_size(response: &[u8]) -> usize {
        fit(BytesMut::from(response), 0).len()
    }

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn a_response_within_the_budget_is_untouched() {
        let out = fit(BytesMut::from(OK), OK.len());
        assert_eq!(out, OK.as_bytes());
    }

    #[test]
    fn optional_lines_go_first_and_the_mandatory_ones_stay() {
        let out = fit(BytesMut::from(OK), OK.len() - 10);
        let text = text(&out);
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
    fn the_reason_detail_goes_before_the_other_lines_and_retry_after_stays() {
        let r = "SIP/2.0 400 Bad Request - missing Call-ID header\r\nVia: v\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n";
        let out = fit(BytesMut::from(r), 80);
        assert_eq!(
            text(&out),
            "SIP/2.0 400 Bad Request\r\nVia: v\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn below_the_minimal_size_the_answer_is_the_minimal_response() {
        // A compact-form request's echo, plus lines no budget this small can keep.
        let r = "SIP/2.0 503 Service Unavailable - table crowded\r\nv:SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\r\nf:<sip:a@b.test>;tag=1\r\nt:<sip:c@d.test>;tag=e1\r\ni:abc\r\nCSeq:1 MESSAGE\r\nServer: sipedge\r\nUnsupported: foo\r\nms-diagnostics-public: 1034;reason=\"x\"\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n";
        let minimal = "SIP/2.0 503 Service Unavailable\r\nv:SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\r\nf:<sip:a@b.test>;tag=1\r\nt:<sip:c@d.test>;tag=e1\r\ni:abc\r\nCSeq:1 MESSAGE\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n";
        for budget in [0, 40, minimal.len() - 1, minimal.len()] {
            let out = fit(BytesMut::from(r), budget);
            assert_eq!(text(&out), minimal, "budget {budget}");
        }
        assert_eq!(minimal_size(r.as_bytes()), minimal.len());
        // One byte over the minimal size keeps nothing else (the Server line is 17 bytes).
        assert_eq!(fit(BytesMut::from(r), minimal.len() + 1).len(), minimal.len());
    }

    #[test]
    fn the_answer_is_never_larger_than_the_budget_or_the_minimal_size() {
        for budget in 0..OK.len() + 5 {
            let out = fit(BytesMut::from(OK), budget);
            assert!(
                out.len() <= budget.max(minimal_size(OK.as_bytes())),
                "budget {budget}: {}",
                text(&out)
            );
        }
    }

    #[test]
    fn bytes_that_are_no_text_are_cut_without_a_panic() {
        let mut r = b"SIP/2.0 400 Bad Request\r\nVia: \xff\xfe\r\nX-Junk: \xc3\x28 long enough to go\r\nCall-ID: \xf0\r\nContent-Length: 0\r\n\r\n".to_vec();
        let out = fit(BytesMut::from(&r[..]), 10);
        assert_eq!(
            &out[..],
            b"SIP/2.0 400 Bad Request\r\nVia: \xff\xfe\r\nCall-ID: \xf0\r\nContent-Length: 0\r\n\r\n"
        );
        // No blank line at all: the lines are still a header block.
        r.truncate(30);
        assert!(fit(BytesMut::from(&r[..]), 0).ends_with(b"\r\n\r\n"));
    }
}
