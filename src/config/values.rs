//! The checks of values that both the TOML loader (`file.rs`, `federation.rs`) and the
//! Management Shell cmdlets (`admin::cmdlet`) accept, written once so a value one of them
//! takes the other cannot refuse, and both say the same thing about a bad one.

/// A DNS name (an FQDN or a SIP domain), lowercased without a trailing dot: labels of
/// letters, digits, `-` and `_` (seen in real deployments), at most 63 bytes each and 253
/// in all. The error says what would be valid.
pub fn dns_name(value: &str) -> Result<String, String> {
    let v = value.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(v)
    } else {
        Err(format!(
            "`{value}` is not a DNS name; expected labels of letters, digits and '-', e.g. \"contoso.test\""
        ))
    }
}

/// `trace.hep` / `--hep`: a collector's address, HOST:PORT with an IP address.
pub fn hep_collector(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse().map_err(|_| {
        format!(
            "`{text}` is not an IP address and port of a HEP collector, e.g. \"127.0.0.1:9060\""
        )
    })
}

/// `trace.pcap_max_bytes`: at least one whole largest packet and some.
pub fn pcap_max_bytes(n: u64) -> Result<u64, String> {
    const LEAST: u64 = 1024 * 1024;
    if n < LEAST {
        Err(format!(
            "{n} is below {LEAST} (1 MiB); a pcap file rotates once it would grow past this"
        ))
    } else {
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_settings_validators_name_what_is_valid() {
        assert!(hep_collector("127.0.0.1:9060").is_ok());
        assert!(hep_collector("[::1]:9060").is_ok());
        assert!(hep_collector("homer:9060")
            .unwrap_err()
            .contains("IP address"));
        assert!(pcap_max_bytes(1000).unwrap_err().contains("1 MiB"));
    }

    #[test]
    fn a_dns_name_is_lowercased_and_loses_its_root_dot() {
        assert_eq!(
            dns_name("Sip.Fabrikam.Test.").as_deref(),
            Ok("sip.fabrikam.test")
        );
        assert_eq!(
            dns_name("_sip_1.contoso.test").as_deref(),
            Ok("_sip_1.contoso.test")
        );
        for bad in ["", ".", "a..b", "x@live.com", "live com", &"a".repeat(64)] {
            assert!(dns_name(bad).is_err(), "{bad:?}");
        }
    }
}
