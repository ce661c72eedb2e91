//! The Via header: transport, sent-by and parameters.

use super::uri::param_in;

/// The RFC 3261 magic cookie that marks a unique branch.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// One Via value, parsed as a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// `UDP`, `TCP`, `TLS`… as written.
    pub transport: &'a str,
    /// sent-by host without IPv6 brackets.
    pub host: &'a str,
    pub port: Option<u16>,
    /// Parameters after sent-by, without the leading `;`.
    pub params: &'a str,
}

impl<'a> Via<'a> {
    pub fn parse(s: &'a str) -> Option<Via<'a>> {
        let s = s.trim();
        let (proto, rest) = split_ws(s)?;
        let mut parts = proto.split('/').map(str::trim);
        let (name, version, transport) = (parts.next()?, parts.next()?, parts.next()?);
        if !name.eq_ignore_ascii_case("SIP")
            || version != "2.0"
            || transport.is_empty()
            || parts.next().is_some()
        {
            return None;
        }
        let rest = rest.trim_start();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), rest[i + 1..].trim()),
            None => (rest.trim(), ""),
        };
        let (host, port) = if let Some(v6) = sent_by.strip_prefix('[') {
            let close = v6.find(']')?;
            let after = v6[close + 1..].trim();
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.trim().parse().ok()?),
                None if after.is_empty() => None,
                None => return None,
            };
            (&v6[..close], port)
        } else {
            match sent_by.rsplit_once(':') {
                Some((h, p)) => (h.trim(), Some(p.trim().parse().ok()?)),
                None => (sent_by, None),
            }
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return None;
        }
        // Every `;` but a trailing one must introduce a parameter (RFC 4475 badinv01:
        // `;;,;,,`); a stray `;` at the end is tolerated, since clients do send it.
        let mut segments = params.split(';').map(str::trim).peekable();
        while let Some(p) = segments.next() {
            if p.is_empty() && !params.is_empty() && segments.peek().is_some() {
                return None;
            }
        }
        Some(Via {
            transport,
            host,
            port,
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&'a str> {
        param_in(self.params, name)
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.param(name).is_some()
    }

    pub fn branch(&self) -> Option<&'a str> {
        self.param("branch").filter(|b| !b.is_empty())
    }

    /// Whether the branch carries the RFC 3261 magic cookie.
    pub fn is_rfc3261(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(MAGIC_COOKIE))
    }
}

fn split_ws(s: &str) -> Option<(&str, &str)> {
    // "SIP / 2.0 / UDP host" may carry spaces around slashes (RFC 4475 wsinv); the
    // protocol ends at the first whitespace not followed or preceded by '/'.
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            let before = s[..i].trim_end();
            let after = s[i..].trim_start();
            if before.ends_with('/') || after.starts_with('/') {
                i += 1;
                continue;
            }
            let proto_end = i;
            let rest_start = s.len() - after.len();
            return Some((&s[..proto_end], &s[rest_start..]));
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_forms() {
        let v = Via::parse("SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bKx;rport;received=1.2.3.4")
            .expect("via");
        assert_eq!(
            (v.transport, v.host, v.port),
            ("TLS", "10.0.0.1", Some(5061))
        );
        assert_eq!(v.branch(), Some("z9hG4bKx"));
        assert_eq!(v.param("rport"), Some(""));
        assert!(v.is_rfc3261());
        let v = Via::parse("SIP / 2.0 / UDP [::1]:5060 ; branch=z9hG4bK1").expect("spaced v6");
        assert_eq!((v.transport, v.host, v.port), ("UDP", "::1", Some(5060)));
        let v = Via::parse("SIP/2.0/UDP host.example").expect("no port");
        assert_eq!(v.port, None);
        assert!(Via::parse("SIP/2.0/UDP").is_none());
        assert!(Via::parse("SIP/3.0/UDP h").is_none());
        assert!(Via::parse("SIP/2.0/UDP h:port").is_none());
    }

    #[test]
    fn via_parameters_are_case_insensitive_and_never_empty() {
        let v = Via::parse("SIP/2.0/UDP h;BRANCH=z9hG4bKx;RPort").expect("via");
        assert_eq!(v.branch(), Some("z9hG4bKx"));
        assert!(v.has_param("rport"));
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;").is_none());
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;branch=z9hG4bK1").is_none());
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;branch=z9hG4bK1;").is_some());
        let v =
            Via::parse("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3")
                .expect("RFC 5118 4.5");
        assert_eq!((v.host, v.branch()), ("2001:db8::9:1", Some("z9hG4bKas3")));
    }
}
