//! `Rejection`: every reason the edge refuses a request, with its status and diagnostics.
//!
//! `proxy::respond` is the only code that turns a `Rejection` into a SIP response.

use std::fmt::Write as _;

/// A refusal: status, reason phrase, optional `ms-diagnostics`, optional Retry-After.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
    pub diagnostics: Option<Diagnostics>,
    /// Seconds for a Retry-After header (503 under load or rate limits).
    pub retry_after: Option<u32>,
    /// The rule that fired, for the one log line and metrics.
    pub rule: &'static str,
}

/// An `ms-diagnostics` value: `<code>;reason="<text>"[;name="value"]*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    pub code: u32,
    pub reason: String,
    pub params: Vec<(String, String)>,
}

impl Diagnostics {
    pub fn new(code: u32, reason: impl Into<String>) -> Self {
        Diagnostics {
            code,
            reason: reason.into(),
            params: Vec::new(),
        }
    }

    pub fn param(mut self, name: &str, value: impl Into<String>) -> Self {
        self.params.push((name.to_string(), value.into()));
        self
    }

    /// The header value, e.g. `1008;reason="Unable to resolve DNS SRV record";domain="x"`.
    pub fn header_value(&self) -> String {
        let mut s = format!("{};reason=\"{}\"", self.code, escape(&self.reason));
        for (k, v) in &self.params {
            let _ = write!(s, ";{k}=\"{}\"", escape(v));
        }
        s
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Rejection {
    pub fn new(status: u16, reason: &'static str, rule: &'static str) -> Self {
        Rejection {
            status,
            reason,
            diagnostics: None,
            retry_after: None,
            rule,
        }
    }

    pub fn with_diagnostics(mut self, d: Diagnostics) -> Self {
        self.diagnostics = Some(d);
        self
    }

    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Max-Forwards reached 0 (RFC 3261 §16.3 step 3).
    pub fn too_many_hops() -> Self {
        Rejection::new(483, "Too Many Hops", "max-forwards")
    }

    /// The request already passed through this edge (RFC 3261 §16.3 step 4).
    pub fn loop_detected() -> Self {
        Rejection::new(482, "Loop Detected", "loop")
    }

    /// A request from outside for a domain that is not ours: the edge is no open relay.
    pub fn relay_denied(domain: &str) -> Self {
        Rejection::new(403, "Forbidden", "no-external-relay").with_diagnostics(
            Diagnostics::new(
                1000,
                "Relaying from the external interface to a non-local domain is not allowed",
            )
            .param("domain", domain),
        )
    }

    /// No route for a non-local domain.
    pub fn no_route(domain: &str) -> Self {
        Rejection::new(404, "Not Found", "no-route").with_diagnostics(
            Diagnostics::new(1001, "No route for the domain").param("domain", domain),
        )
    }

    /// The transaction table is full.
    pub fn overloaded() -> Self {
        Rejection::new(503, "Service Unavailable", "overload").with_retry_after(5)
    }
}
