//! Who is on the other side of a message: the interface it crossed, the transport, the
//! peer's address and the names it proved.
//!
//! Plain data with no I/O, so that `sip`, `txn`, `policy` and `config` can name a peer
//! without depending on the transports and their async runtime. `transport` re-exports it all.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

/// The side of the edge a message arrived on or leaves through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    /// Faces the organisation's Front End pool.
    Internal,
    /// Faces federated partners, public and hosting providers.
    External,
}

impl Interface {
    /// Lowercase name used in logs, metrics and config keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Internal => "internal",
            Interface::External => "external",
        }
    }

    /// The other side of the edge.
    pub fn other(self) -> Interface {
        match self {
            Interface::Internal => Interface::External,
            Interface::External => Interface::Internal,
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Interface {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "internal" => Ok(Interface::Internal),
            "external" => Ok(Interface::External),
            other => Err(format!(
                "unknown interface `{other}`, expected internal or external"
            )),
        }
    }
}

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The token used in Via headers (`SIP/2.0/UDP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// Lowercase name used in URIs (`transport=tls`), logs and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// Streams need Content-Length framing; datagrams carry one message each.
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "tls" => Ok(Transport::Tls),
            other => Err(format!(
                "unknown transport `{other}`, expected udp, tcp or tls"
            )),
        }
    }
}

/// The names a peer has proven it owns: the DNS SAN names of its verified TLS client
/// certificate (the CN only when there is no SAN), or the lab-only source-address mapping.
/// Empty when the peer proved nothing (plain TCP/UDP without a mapping).
///
/// Shared (`Arc`): every request from a connection carries its peer's identity, and a
/// clone must not copy the names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    names: Arc<[String]>,
}

impl PeerIdentity {
    /// An identity from certificate or configured names; names are lowercased.
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut names: Vec<String> = names
            .into_iter()
            .map(|n| n.as_ref().trim_end_matches('.').to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect();
        names.dedup();
        PeerIdentity {
            names: names.into(),
        }
    }

    /// A peer that proved nothing.
    pub fn anonymous() -> Self {
        PeerIdentity::default()
    }

    /// The proven names, lowercase.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn is_anonymous(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether `fqdn` is covered by one of the names (RFC 6125: exact match, or a
    /// `*.` wildcard standing for exactly one left-most label).
    pub fn covers(&self, fqdn: &str) -> bool {
        let fqdn = fqdn.trim_end_matches('.');
        self.names.iter().any(|n| name_matches(n, fqdn))
    }
}

/// RFC 6125 name match: case-insensitive, a wildcard matches one label only.
pub fn name_matches(pattern: &str, fqdn: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix("*.") {
        match fqdn.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
            None => false,
        }
    } else {
        pattern.eq_ignore_ascii_case(fqdn)
    }
}

/// Who sent a message: the interface, transport and address it came from, and what the
/// peer proved about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub interface: Interface,
    pub transport: Transport,
    pub addr: SocketAddr,
    pub identity: PeerIdentity,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_one_label_only() {
        assert!(name_matches("*.fabrikam.test", "sip.fabrikam.test"));
        assert!(!name_matches("*.fabrikam.test", "a.sip.fabrikam.test"));
        assert!(!name_matches("*.fabrikam.test", "fabrikam.test"));
        assert!(name_matches("SIP.fabrikam.test", "sip.FABRIKAM.test"));
    }

    #[test]
    fn identity_lowercases_and_trims() {
        let id = PeerIdentity::new(["Sip.Fabrikam.Test.", ""]);
        assert_eq!(id.names(), ["sip.fabrikam.test"]);
        assert!(id.covers("sip.fabrikam.test."));
        assert!(PeerIdentity::anonymous().is_anonymous());
    }
}
