//! Header names the edge looks at, with RFC 3261 §7.3.3 compact forms.

/// A header name, case-insensitive, compact forms folded into their long names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    Route,
    RecordRoute,
    ContentLength,
    ContentType,
    Contact,
    Supported,
    Require,
    ProxyRequire,
    Allow,
    RetryAfter,
    Event,
    /// `ms-edge-proxy-message-trust`: set by the edge alone.
    MsTrust,
    /// `ms-diagnostics`: never leaves through the external interface.
    MsDiagnostics,
    /// `ms-diagnostics-public`: the topology-safe variant.
    MsDiagnosticsPublic,
    /// `Warning`: its warn-agent names the host that wrote it, so it stays inside.
    Warning,
    /// `ms-split-domain-info`: the traffic type of a split (hybrid) domain, e.g.
    /// `ms-traffic-type=SplitIntra`; checked against the From and To domains.
    MsSplitDomainInfo,
    /// Anything else: relayed untouched.
    Other,
}

impl HeaderName {
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                b'm' => HeaderName::Contact,
                b'k' => HeaderName::Supported,
                b'o' => HeaderName::Event,
                _ => HeaderName::Other,
            };
        }
        const NAMES: &[(&[u8], HeaderName)] = &[
            (b"via", HeaderName::Via),
            (b"from", HeaderName::From),
            (b"to", HeaderName::To),
            (b"call-id", HeaderName::CallId),
            (b"cseq", HeaderName::CSeq),
            (b"max-forwards", HeaderName::MaxForwards),
            (b"route", HeaderName::Route),
            (b"record-route", HeaderName::RecordRoute),
            (b"content-length", HeaderName::ContentLength),
            (b"content-type", HeaderName::ContentType),
            (b"contact", HeaderName::Contact),
            (b"supported", HeaderName::Supported),
            (b"require", HeaderName::Require),
            (b"proxy-require", HeaderName::ProxyRequire),
            (b"allow", HeaderName::Allow),
            (b"retry-after", HeaderName::RetryAfter),
            (b"event", HeaderName::Event),
            (b"ms-edge-proxy-message-trust", HeaderName::MsTrust),
            (b"ms-diagnostics", HeaderName::MsDiagnostics),
            (b"ms-diagnostics-public", HeaderName::MsDiagnosticsPublic),
            (b"warning", HeaderName::Warning),
            (b"ms-split-domain-info", HeaderName::MsSplitDomainInfo),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(HeaderName::Other, |(_, h)| *h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_insensitive() {
        assert_eq!(HeaderName::from_bytes(b"v"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"V"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"CALL-ID"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"i"), HeaderName::CallId);
        assert_eq!(
            HeaderName::from_bytes(b"Ms-Edge-Proxy-Message-Trust"),
            HeaderName::MsTrust
        );
        assert_eq!(HeaderName::from_bytes(b"X-Foo"), HeaderName::Other);
    }
}
