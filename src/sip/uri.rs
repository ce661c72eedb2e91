//! SIP URIs and name-addr values (`"Alice" <sip:alice@host>;tag=x`), parsed as views.

/// A SIP or SIPS URI (other schemes keep only `scheme` and an empty host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: &'a str,
    pub user: Option<&'a str>,
    /// Host without IPv6 brackets.
    pub host: &'a str,
    pub port: Option<u16>,
    /// URI parameters, starting after the first `;` (e.g. `transport=tls;lr`).
    pub params: &'a str,
    /// The `?headers` part, without the `?`, when present.
    pub headers: Option<&'a str>,
}

impl<'a> Uri<'a> {
    /// Parses `sip:`/`sips:` URIs; other schemes (tel:, im:, pres:) are kept with an empty host.
    pub fn parse(s: &'a str) -> Option<Uri<'a>> {
        let s = s.trim();
        let colon = s.find(':')?;
        let scheme = &s[..colon];
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
        {
            return None;
        }
        let rest = &s[colon + 1..];
        let is_sip = scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips");
        if !is_sip {
            return if rest.is_empty() {
                None
            } else {
                Some(Uri {
                    scheme,
                    user: None,
                    host: "",
                    port: None,
                    params: "",
                    headers: None,
                })
            };
        }
        // userinfo may hold `?`, `;` and `:` (RFC 4475 intmeth, semiuri) but never an
        // unescaped `@`, so the first `@` ends it; `?headers` can only follow the host part.
        let (user, hostport) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hostport, headers) = match hostport.split_once('?') {
            Some((h, hdrs)) => (h, Some(hdrs)),
            None => (hostport, None),
        };
        let (host, after) = if let Some(v6) = hostport.strip_prefix('[') {
            let close = v6.find(']')?;
            (&v6[..close], &v6[close + 1..])
        } else {
            let end = hostport.find([':', ';']).unwrap_or(hostport.len());
            (&hostport[..end], &hostport[end..])
        };
        // A host name or IPv4 address is letters, digits, `-` and `.` (RFC 3261 §25.1);
        // `_` is let through as real deployments use it. Anything else, such as the
        // second `@` of `x@@live.com`, means the URI is not what its writer meant.
        let host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        let v6_char = |c: char| c.is_ascii_hexdigit() || matches!(c, ':' | '.');
        let is_v6 = hostport.starts_with('[');
        if host.is_empty()
            || (is_v6 && !host.chars().all(v6_char))
            || (!is_v6 && !host.chars().all(host_char))
        {
            return None;
        }
        let (port, params) = if let Some(p) = after.strip_prefix(':') {
            let end = p.find(';').unwrap_or(p.len());
            let port = p[..end].parse::<u16>().ok()?;
            (Some(port), p[end..].strip_prefix(';').unwrap_or(""))
        } else if let Some(p) = after.strip_prefix(';') {
            (None, p)
        } else if after.is_empty() {
            (None, "")
        } else {
            return None;
        };
        Some(Uri {
            scheme,
            user: user.filter(|u| !u.is_empty()),
            host,
            port,
            params,
            headers,
        })
    }

    /// `sip:` or `sips:`: the only schemes the edge routes.
    pub fn is_sip(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("sip") || self.is_sips()
    }

    /// `sips:` URIs require TLS.
    pub fn is_sips(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("sips")
    }

    /// A URI parameter value (`transport`, `maddr`…); flags return `Some("")`.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        param_in(self.params, name)
    }

    /// The `lr` flag of a loose router.
    pub fn is_loose_router(&self) -> bool {
        self.param("lr").is_some()
    }
}

/// A host as written in a URI or a Via sent-by: IPv6 literals in brackets (RFC 3261 §19.1.1,
/// RFC 5118 §4.1), names and IPv4 as they are.
/// Formatted where it is written, so the hot path allocates nothing for it.
#[derive(Debug, Clone, Copy)]
pub struct UriHost<'a>(pub &'a str);

impl std::fmt::Display for UriHost<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.contains(':') && !self.0.starts_with('[') {
            write!(f, "[{}]", self.0)
        } else {
            f.write_str(self.0)
        }
    }
}

/// Looks up `name` in a `;`-separated parameter list, case-insensitively.
pub fn param_in<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').find_map(|p| {
        let p = p.trim();
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A From/To/Contact/Route value: optional display name, a URI and header parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    pub display: Option<&'a str>,
    pub uri: Uri<'a>,
    /// Header parameters after the URI (e.g. `tag=1928`), without the leading `;`.
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    pub fn parse(s: &'a str) -> Option<NameAddr<'a>> {
        let s = s.trim();
        let lt = find_unquoted(s, b'<');
        match lt {
            Some(lt) => {
                let gt = s[lt..].find('>')? + lt;
                let display = s[..lt].trim();
                let inner = &s[lt + 1..gt];
                // `< sip:x >` (RFC 4475 badaspec) and an unquoted display name with
                // non-token characters (baddn) are malformed, not guessed at.
                if inner.trim() != inner || !valid_display_name(display) {
                    return None;
                }
                let uri = Uri::parse(inner)?;
                let params = s[gt + 1..].trim_start();
                let params = params.strip_prefix(';').unwrap_or(params);
                Some(NameAddr {
                    display: (!display.is_empty()).then_some(display),
                    uri,
                    params,
                })
            }
            None => {
                // addr-spec: URI parameters cannot appear, so `;` starts header params.
                let end = s.find(';').unwrap_or(s.len());
                let uri = Uri::parse(&s[..end])?;
                Some(NameAddr {
                    display: None,
                    uri,
                    params: s[end..].strip_prefix(';').unwrap_or(""),
                })
            }
        }
    }

    pub fn tag(&self) -> Option<&'a str> {
        param_in(self.params, "tag").filter(|t| !t.is_empty())
    }
}

/// A display name is a quoted string or tokens separated by whitespace (RFC 3261 §25.1).
fn valid_display_name(d: &str) -> bool {
    if d.starts_with('"') {
        return d.len() >= 2 && d.ends_with('"');
    }
    d.bytes()
        .all(|c| c.is_ascii_whitespace() || super::message::is_token_char(c))
}

fn find_unquoted(s: &str, needle: u8) -> Option<usize> {
    let mut quoted = false;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            c if c == needle && !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_forms() {
        let u = Uri::parse("sip:alice@contoso.test:5061;transport=TLS;lr").expect("uri");
        assert_eq!(
            (u.user, u.host, u.port),
            (Some("alice"), "contoso.test", Some(5061))
        );
        assert_eq!(u.param("transport"), Some("TLS"));
        assert!(u.is_loose_router());
        let u = Uri::parse("sip:[2001:db8::10]:5061").expect("v6");
        assert_eq!((u.host, u.port), ("2001:db8::10", Some(5061)));
        let u = Uri::parse("sips:edge.contoso.test").expect("host only");
        assert!(u.is_sips() && u.user.is_none());
        let u = Uri::parse("sip:%61lice@contoso.test?subject=x@y").expect("escaped");
        assert_eq!(u.user, Some("%61lice"));
        assert_eq!(u.host, "contoso.test");
        assert!(Uri::parse("sip:").is_none());
        assert!(Uri::parse("sip:a@b:notaport").is_none());
        assert_eq!(Uri::parse("tel:+14255550100").expect("tel").host, "");
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(UriHost("::1").to_string(), "[::1]");
        assert_eq!(UriHost("[::1]").to_string(), "[::1]");
        assert_eq!(UriHost("2001:db8::9").to_string(), "[2001:db8::9]");
        assert_eq!(UriHost("edge.contoso.test").to_string(), "edge.contoso.test");
        assert_eq!(UriHost("192.0.2.1").to_string(), "192.0.2.1");
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"Bob <x>\" <sip:bob@fabrikam.test>;tag=a1;epid=9").expect("na");
        assert_eq!(n.display, Some("\"Bob <x>\""));
        assert_eq!(n.uri.host, "fabrikam.test");
        assert_eq!(n.tag(), Some("a1"));
        let n = NameAddr::parse("sip:bob@fabrikam.test;tag=zz").expect("addr-spec");
        assert_eq!((n.uri.host, n.tag()), ("fabrikam.test", Some("zz")));
        let n = NameAddr::parse("<sip:edge.contoso.test;transport=tls;lr>").expect("route");
        assert!(n.uri.is_loose_router());
    }

    #[test]
    fn escaped_and_unusual_userinfo() {
        // RFC 4475 esc01, semiuri, intmeth: the first @ ends the userinfo.
        let u = Uri::parse("sip:sips%3Auser%40example.com@example.net").expect("esc01");
        assert_eq!(
            (u.user, u.host),
            (Some("sips%3Auser%40example.com"), "example.net")
        );
        let u = Uri::parse("sip:user;par=u%40example.net@example.com").expect("semiuri");
        assert_eq!(
            (u.user, u.host, u.params),
            (Some("user;par=u%40example.net"), "example.com", "")
        );
        let u = Uri::parse("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com").expect("intmeth");
        assert_eq!((u.host, u.headers), ("example.com", None));
        let u = Uri::parse("sip:user@example.com?Route=%3Csip:example.com%3E").expect("escruri");
        assert_eq!(u.headers, Some("Route=%3Csip:example.com%3E"));
        let u = Uri::parse("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
            .expect("params");
        assert_eq!(u.param("n%61me"), Some("v%61lue%25%34%31"));
    }

    #[test]
    fn parameter_names_are_case_insensitive() {
        let u = Uri::parse("sip:edge.contoso.test;TRANSPORT=tls;LR").expect("uri");
        assert_eq!(u.param("transport"), Some("tls"));
        assert!(u.is_loose_router());
        let n = NameAddr::parse("<sip:a@b>;TAG=x").expect("na");
        assert_eq!(n.tag(), Some("x"));
    }

    #[test]
    fn malformed_name_addrs_are_refused() {
        assert!(NameAddr::parse("\"Watson, Thomas\" < sip:t.watson@example.org >").is_none());
        assert!(NameAddr::parse("Watson, Thomas <sip:t.watson@example.org>").is_none());
        assert!(NameAddr::parse("caller<sip:caller@example.com>;tag=323").is_some());
        assert!(NameAddr::parse("token1~` token2'+_ <sip:mundane@example.com>").is_some());
    }

    #[test]
    fn a_host_that_is_not_a_name_or_an_address_is_not_a_uri() {
        assert!(Uri::parse("sip:x@@live.com").is_none());
        assert!(Uri::parse("sip:x@live com").is_none());
        assert!(Uri::parse("sip:x@live.com>").is_none());
        assert!(Uri::parse("sip:x@[::1;lr]").is_none());
        assert!(Uri::parse("sip:x@sip_1.live.com").is_some());
        assert!(Uri::parse("sip:x@[2001:db8::1]:5061").is_some());
        assert!(Uri::parse("sip:x@192.0.2.1:5060;lr").is_some());
    }
}
