//! DNS facts: what the proxy resolved before asking for a decision.
//!
//! `decide` never does I/O. The proxy first asks `policy::dns_needed` which question the
//! decision depends on, resolves it (SRV with RFC 2782 ordering), and passes the answer
//! in a `DnsFacts`. Tests build `DnsFacts` by hand.

use std::collections::HashMap;
use std::fmt;

/// A question the decision needs answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DnsQuestion {
    /// `_sipfederationtls._tcp.<domain>` SRV: the partner's federation edges. Asked for the
    /// From domain of inbound AutoFederation traffic (source verification) and for the
    /// Request-URI domain of outbound traffic (discovery).
    FederationSrv { domain: String },
}

impl DnsQuestion {
    /// The owner name to query, e.g. `_sipfederationtls._tcp.fabrikam.test`.
    pub fn name(&self) -> String {
        match self {
            DnsQuestion::FederationSrv { domain } => format!("_sipfederationtls._tcp.{domain}"),
        }
    }

    /// The SIP domain the question is about.
    pub fn domain(&self) -> &str {
        match self {
            DnsQuestion::FederationSrv { domain } => domain,
        }
    }
}

impl fmt::Display for DnsQuestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SRV {}", self.name())
    }
}

/// One SRV record (RFC 2782); the DNS layer's type, so answers pass through unchanged.
pub use crate::dns::SrvTarget;

/// The answer to a federation SRV question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrvAnswer {
    /// Records in the order the resolver chose (priority, then weighted random).
    Records(Vec<SrvTarget>),
    /// NXDOMAIN or no SRV records: 504 + 1008.
    NoRecords,
    /// The lookup failed (timeout, SERVFAIL…): 504 + 1008 with the error.
    Failed(String),
}

/// The DNS answers available to one decision, by SIP domain (lowercase).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsFacts {
    srv: HashMap<String, SrvAnswer>,
}

impl DnsFacts {
    /// No answers: enough for static routing and for requests that need no DNS.
    pub fn none() -> Self {
        DnsFacts::default()
    }

    /// The answer to `question`, as the proxy resolved it.
    pub fn answer(question: &DnsQuestion, answer: SrvAnswer) -> Self {
        DnsFacts::none().with_srv(question.domain(), answer)
    }

    /// Adds the SRV answer for `domain`.
    pub fn with_srv(mut self, domain: &str, answer: SrvAnswer) -> Self {
        self.srv.insert(domain.to_ascii_lowercase(), answer);
        self
    }

    /// The SRV answer for `domain`, if it was resolved.
    pub fn srv(&self, domain: &str) -> Option<&SrvAnswer> {
        self.srv.get(&domain.to_ascii_lowercase())
    }
}
