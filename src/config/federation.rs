//! Federation objects: the Lync Management Shell's Cs* objects as typed configuration.
//!
//! Each TOML section mirrors one cmdlet family and carries the real product's defaults
//! (access-edge.md §a.1). Keys are the cmdlet parameter names in snake_case:
//!
//! | TOML                                   | cmdlet object / parameter                                |
//! |----------------------------------------|----------------------------------------------------------|
//! | `[access_edge]`                        | `Set-CsAccessEdgeConfiguration` (Identity `global`)      |
//! | `allow_federated_users`                | `AllowFederatedUsers` (default false)                    |
//! | `allow_outside_users`                  | `AllowOutsideUsers` (default true)                       |
//! | `allow_anonymous_users`                | `AllowAnonymousUsers` (default false)                    |
//! | `enable_partner_discovery`             | `EnablePartnerDiscovery` (default false)                 |
//! | `routing = "dns_srv"`                  | `-UseDnsSrvRouting` (the default)                        |
//! | `routing = "default_route"`            | `-UseDefaultRouting` with `default_route_fqdn` (`DefaultRouteFqdn`), `verification_level` (`VerificationLevel`), `is_public_provider` (`IsPublicProvider`) |
//! | `discovered_partner_verification_level`| `DiscoveredPartnerVerificationLevel` (default UseSourceVerification, [inferred]) |
//! | `discovered_partner_standard_rate`     | `DiscoveredPartnerStandardRate` (20 msg/s)               |
//! | `enable_discovered_partner_contacts_limit` | `EnableDiscoveredPartnerContactsLimit` (true)        |
//! | `max_contacts_per_discovered_partner`  | `MaxContactsPerDiscoveredPartner` (1000)                 |
//! | `discovered_partner_report_period_minutes` | `DiscoveredPartnerReportPeriodMinutes` (60)          |
//! | `mark_source_verifiable_on_outgoing_messages` | `MarkSourceVerifiableOnOutgoingMessages` (true)   |
//! | `outgoing_tls_count_for_federated_partners` | `OutgoingTlsCountForFederatedPartners` (4, 1–4)     |
//! | `dns_srv_cache_record_count`           | `DnsSrvCacheRecordCount` (no product default; 1000 here) |
//! | `[[public_provider]]`                  | `New-CsPublicProvider`                                   |
//! | `[[hosting_provider]]`                 | `New-CsHostingProvider`                                  |
//! | `[[allowed_domain]]`                   | `New-CsAllowedDomain` (`domain` = Identity/Domain)       |
//! | `[[blocked_domain]]`                   | `New-CsBlockedDomain`                                    |
//! | `[[external_access_policy]]`           | `New-CsExternalAccessPolicy` (`identity` = `global`, `site:<name>` or a tag) |
//! | `[[user]]`                             | `Grant-CsExternalAccessPolicy` (`user` = sip URI or user name, `policy` = tag), the user's site, `Move-CsUser -Target` (`hosting_provider` = a hosting provider's ProxyFqdn for a user homed online; absent: on-premises), and sipedge's simulated contact list `contacts` (`Set-CsLabContactList`) |
//! | `[diagnostics]`                        | sipedge only: status and ms-diagnostics codes the product does not document |
//!
//! sipedge-only keys in `[access_edge]`: `unmarked_source` (what UseSourceVerification does
//! when the peer sent no marking: `"reject"`, the provider/allowed-domain documentation, or
//! `"unverified"`, the default-route documentation; the default route always uses
//! `"unverified"`), `federated_methods` (the methods that may cross federation, 1027), and
//! when a discovered partner is suspicious (throttled to 1 msg/s, 503 + 1913):
//! `suspicious_min_failures` (default 20) failed responses from inside in one report
//! period, making at least `suspicious_failure_percent` (default 80) of its answered
//! requests.
//!
//! Refused as not modelled: `enable_xmpp_access = true` (no XMPP gateway). `icon_url` and
//! `autodiscover_url` must be absolute http(s) URLs (client data; no SIP path of the edge
//! carries them).
//!
//! `VerificationLevel` is accepted by name or by number; the numbers are an assumption
//! (no source prints them): 0 AlwaysVerifiable, 1 AlwaysUnverifiable, 2 UseSourceVerification.
//!
//! When none of the federation sections is present, `Federation::enabled()` is false and
//! the edge keeps the static routing of `routes` / `default_route` (bench configs). As soon
//! as one is present, the product defaults apply — including AllowFederatedUsers = false.

use std::collections::HashSet;
use std::fmt;

use super::index::{Lists, LookupIndex};

/// The federation configuration: the edge switches, the providers, the domain lists, the
/// external access policies and their grants. Plain data, so the admin layer can clone,
/// change and re-validate it (`conflicts`).
#[derive(Debug, Clone, PartialEq)]
pub struct Federation {
    /// Whether any federation section was configured. False → static routing (issue 2).
    pub configured: bool,
    pub access_edge: AccessEdge,
    pub public_providers: Vec<PublicProvider>,
    pub hosting_providers: Vec<HostingProvider>,
    pub allowed_domains: Vec<AllowedDomain>,
    pub blocked_domains: Vec<BlockedDomain>,
    /// Always holds a `global` policy (all switches off unless configured).
    pub external_access_policies: Vec<ExternalAccessPolicy>,
    pub users: Vec<UserGrant>,
    /// Statuses and codes for refusals the product does not document.
    pub codes: Codes,
    /// Hash indexes over the allowed and blocked lists and the grants, built on first
    /// lookup (a cache: leave it at its default).
    pub index: LookupIndex,
}

/// `CsAccessEdgeConfiguration`, the single global object.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessEdge {
    pub allow_federated_users: bool,
    pub allow_outside_users: bool,
    pub allow_anonymous_users: bool,
    pub enable_partner_discovery: bool,
    pub routing: FederationRouting,
    pub discovered_partner_verification_level: VerificationLevel,
    /// Messages per second per discovered partner domain.
    pub discovered_partner_standard_rate: u32,
    pub enable_discovered_partner_contacts_limit: bool,
    pub max_contacts_per_discovered_partner: u32,
    pub discovered_partner_report_period_minutes: u32,
    pub mark_source_verifiable_on_outgoing_messages: bool,
    /// 1–4 parallel outbound TLS connections per partner.
    pub outgoing_tls_count_for_federated_partners: u8,
    pub dns_srv_cache_record_count: u32,
    /// sipedge: UseSourceVerification with no marking from a provider, allowed domain or
    /// discovered partner. Default `Reject`.
    pub unmarked_source: UnmarkedSource,
    /// sipedge: methods that may cross federation; others get 1027. Uppercase.
    pub federated_methods: Vec<String>,
    /// sipedge: failed responses (4xx–6xx from inside) a discovered partner needs in one
    /// report period before it can be suspicious. Default 20 ([inferred]; the product
    /// documents only "ratio of failed to successful responses").
    pub suspicious_min_failures: u32,
    /// sipedge: the share of a discovered partner's answered requests, in percent, that
    /// must fail for it to be suspicious (throttled to 1 msg/s). Default 80 ([inferred]).
    pub suspicious_failure_percent: u32,
}

/// How federation traffic finds its next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FederationRouting {
    /// `-UseDnsSrvRouting`: `_sipfederationtls._tcp.<domain>` SRV per partner (default).
    DnsSrv,
    /// `-UseDefaultRouting`: everything to one next hop (a clearing house).
    DefaultRoute {
        fqdn: String,
        port: u16,
        verification_level: VerificationLevel,
        is_public_provider: bool,
    },
}

/// How far the edge trusts a source's claim that its user is who they say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerificationLevel {
    /// 0 (assumed): everything verified; the marking is added if missing.
    AlwaysVerifiable,
    /// 1 (assumed): everything unverified (delivered only to users who list the sender).
    AlwaysUnverifiable,
    /// 2 (assumed): copy the peer's own marking.
    UseSourceVerification,
}

impl VerificationLevel {
    /// The cmdlet name.
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationLevel::AlwaysVerifiable => "AlwaysVerifiable",
            VerificationLevel::AlwaysUnverifiable => "AlwaysUnverifiable",
            VerificationLevel::UseSourceVerification => "UseSourceVerification",
        }
    }

    /// By name (case-insensitive) or by the assumed number 0/1/2.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "alwaysverifiable" | "0" => Some(VerificationLevel::AlwaysVerifiable),
            "alwaysunverifiable" | "1" => Some(VerificationLevel::AlwaysUnverifiable),
            "usesourceverification" | "2" => Some(VerificationLevel::UseSourceVerification),
            _ => None,
        }
    }
}

impl fmt::Display for VerificationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What UseSourceVerification does when the peer sent no marking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmarkedSource {
    Reject,
    MarkUnverified,
}

/// `CsPublicProvider`: a public IM provider (PIC), e.g. Skype.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicProvider {
    pub identity: String,
    pub proxy_fqdn: String,
    /// Default AlwaysVerifiable.
    pub verification_level: VerificationLevel,
    /// A disabled provider is treated as not configured, except that routing to it is refused.
    pub enabled: bool,
    pub icon_url: Option<String>,
    pub name_decoration_domain: Option<String>,
    pub name_decoration_routing_domain: Option<String>,
    pub name_decoration_excluded_domain_list: Vec<String>,
}

impl PublicProvider {
    /// The SIP domains this provider speaks for without a DNS check: its name-decoration
    /// routing domain, decoration domain and excluded (Microsoft account) domains.
    pub fn speaks_for(&self, domain: &str) -> bool {
        self.name_decoration_routing_domain
            .iter()
            .chain(self.name_decoration_domain.iter())
            .chain(self.name_decoration_excluded_domain_list.iter())
            .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// `CsHostingProvider`: a hosted federation partner, e.g. LyncOnline.
#[derive(Debug, Clone, PartialEq)]
pub struct HostingProvider {
    pub identity: String,
    pub proxy_fqdn: String,
    /// The port the ProxyFqdn is dialled on (`ProxyFqdn host:port`, a sipedge extension
    /// as for allowed domains, so a lab provider may listen elsewhere); default 5061.
    pub proxy_port: u16,
    pub enabled: bool,
    /// Shares our SIP domains (split domain, hybrid): our users homed at this provider
    /// (`[[user]] hosting_provider`) are routed to it, and it may speak for them.
    pub enabled_shared_address_space: bool,
    /// Hosts Lync/SfB users (HostsOCSUsers): only then may users be homed at it; a shared
    /// address space without it hosts other services (Exchange UM).
    pub hosts_ocs_users: bool,
    /// Its proxy is inside our own topology (IsLocal): the edge reaches it through the
    /// internal interface, without the federation marking.
    pub is_local: bool,
    /// Default AlwaysVerifiable.
    pub verification_level: VerificationLevel,
    pub autodiscover_url: Option<String>,
    /// Default 443.
    pub sip_client_port: u16,
}

/// `CsAllowedDomain`: a partner domain on the allowed list.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedDomain {
    pub domain: String,
    /// With it: a direct partner (no SRV); without: enhanced federation through SRV.
    pub proxy_fqdn: Option<String>,
    /// The port the ProxyFqdn is dialled on (`ProxyFqdn host:port`); default 5061.
    pub proxy_port: u16,
    /// Default UseSourceVerification.
    pub verification_level: VerificationLevel,
    pub mark_for_monitoring: bool,
    pub comment: Option<String>,
}

impl HostingProvider {
    /// ProxyFqdn as the cmdlets print it and the config file holds it (see
    /// [`proxy_fqdn_text`]).
    pub fn proxy_fqdn_text(&self) -> String {
        proxy_fqdn_text(&self.proxy_fqdn, self.proxy_port)
    }

    /// Whether our users may be homed here: it shares our address space and hosts users.
    pub fn hosts_our_users(&self) -> bool {
        self.enabled_shared_address_space && self.hosts_ocs_users
    }
}

/// `host`, or `host:port` when the port is not the federation port.
pub fn proxy_fqdn_text(host: &str, port: u16) -> String {
    match port {
        FEDERATION_PORT => host.to_string(),
        port => format!("{host}:{port}"),
    }
}

impl AllowedDomain {
    /// ProxyFqdn as the cmdlets print it and the config file holds it: `host`, or
    /// `host:port` when the port is not the federation port.
    pub fn proxy_fqdn_text(&self) -> Option<String> {
        self.proxy_fqdn
            .as_ref()
            .map(|host| proxy_fqdn_text(host, self.proxy_port))
    }
}

/// The port federation uses when none is given (`_sipfederationtls._tcp`, ProxyFqdn).
pub const FEDERATION_PORT: u16 = 5061;

/// Splits a ProxyFqdn value, `host` or `host:port`, into the host and the port (5061 when
/// none is given). The one check of this field, shared by the TOML loader and the cmdlets;
/// the host itself is then checked as a DNS name.
pub fn split_proxy_fqdn(value: &str) -> Result<(&str, u16), String> {
    match value.rsplit_once(':') {
        None => Ok((value, FEDERATION_PORT)),
        Some((host, port)) => match port.parse::<u16>() {
            Ok(p) if p > 0 && !host.is_empty() => Ok((host, p)),
            _ => Err(format!(
                "`{value}` is not a ProxyFqdn; expected a DNS name with an optional port from 1 to 65535, e.g. \"sip.fabrikam.test\" or \"sip.fabrikam.test:5071\""
            )),
        },
    }
}

/// An absolute `http`/`https` URL whose host is a DNS name (with an optional port): a
/// public provider's IconUrl, a hosting provider's AutodiscoverUrl. The one check of these
/// fields, shared by the TOML loader and the cmdlets.
pub fn http_url(value: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "`{value}` is not a URL; expected an absolute http or https URL, e.g. \"https://images.edge.messenger.live.com/Messenger_16x16.png\""
        )
    };
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(bad)?;
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok_and(|p| p > 0) => h,
        Some(_) => return Err(bad()),
        None => authority,
    };
    let dns = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if dns {
        Ok(v.to_string())
    } else {
        Err(bad())
    }
}

/// EnableXmppAccess: XMPP federation (the XMPP gateway, port 5269) is outside what sipedge
/// models, so only `false` is accepted. The one check of this field, shared by the TOML
/// loader and the cmdlets.
pub fn xmpp_access(enable: bool) -> Result<bool, String> {
    if enable {
        Err("EnableXmppAccess is not modelled: sipedge has no XMPP gateway (XMPP federation, port 5269), so a user could never use it; leave it $false".to_string())
    } else {
        Ok(false)
    }
}

/// An address as people type it (`sip:alice@contoso.test`, `alice@contoso.test`, `alice`),
/// trimmed, lowercased and without the `sip:` scheme: how users and contacts are kept.
pub fn sip_address(value: &str) -> String {
    let v = value.trim();
    v.strip_prefix("sip:")
        .or_else(|| v.strip_prefix("SIP:"))
        .unwrap_or(v)
        .to_ascii_lowercase()
}

/// One entry of a user's simulated contact list: `sip:dave@fabrikam.test` or
/// `dave@fabrikam.test`, lowercased without the scheme. The one check of this field,
/// shared by the TOML loader and the cmdlets.
pub fn contact(value: &str) -> Result<String, String> {
    let v = sip_address(value);
    let ok = match v.split_once('@') {
        Some((user, host)) => {
            !user.is_empty()
                && !user.contains(|c: char| c.is_whitespace() || c == '@' || c == ';')
                && !host.is_empty()
                && host.split('.').all(|l| {
                    !l.is_empty()
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        }
        None => false,
    };
    if ok {
        Ok(v)
    } else {
        Err(format!(
            "`{value}` is not a contact; expected a SIP address, e.g. \"sip:dave@fabrikam.test\""
        ))
    }
}

/// `CsBlockedDomain`: traffic to and from it is refused, even with discovery on.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockedDomain {
    pub domain: String,
    pub comment: Option<String>,
}

/// Where an external access policy applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyScope {
    Global,
    /// `site:<name>`: applies to the users of that site.
    Site(String),
    /// A tag, applied to users by a grant.
    Tag(String),
}

impl PolicyScope {
    /// `global`, `site:<name>`, `tag:<name>` or a bare tag name.
    pub fn parse(s: &str) -> Option<PolicyScope> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("global") {
            return Some(PolicyScope::Global);
        }
        let (scope, name) = match s.split_once(':') {
            Some((p, n)) if p.eq_ignore_ascii_case("site") => (true, n),
            Some((p, n)) if p.eq_ignore_ascii_case("tag") => (false, n),
            Some(_) => return None,
            None => (false, s),
        };
        if name.is_empty() {
            return None;
        }
        Some(if scope {
            PolicyScope::Site(name.to_string())
        } else {
            PolicyScope::Tag(name.to_string())
        })
    }

    fn matches(&self, other: &PolicyScope) -> bool {
        match (self, other) {
            (PolicyScope::Global, PolicyScope::Global) => true,
            (PolicyScope::Site(a), PolicyScope::Site(b))
            | (PolicyScope::Tag(a), PolicyScope::Tag(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }
}

impl fmt::Display for PolicyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyScope::Global => f.write_str("global"),
            PolicyScope::Site(n) => write!(f, "site:{n}"),
            PolicyScope::Tag(n) => write!(f, "tag:{n}"),
        }
    }
}

/// `CsExternalAccessPolicy`: per-user gates, all off by default.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalAccessPolicy {
    pub scope: PolicyScope,
    pub enable_federation_access: bool,
    pub enable_public_cloud_access: bool,
    pub enable_public_cloud_audio_video_access: bool,
    pub enable_outside_access: bool,
    pub enable_xmpp_access: bool,
    pub description: Option<String>,
}

impl ExternalAccessPolicy {
    /// A policy with every switch off (the cmdlet's defaults).
    pub fn closed(scope: PolicyScope) -> Self {
        ExternalAccessPolicy {
            scope,
            enable_federation_access: false,
            enable_public_cloud_access: false,
            enable_public_cloud_audio_video_access: false,
            enable_outside_access: false,
            enable_xmpp_access: false,
            description: None,
        }
    }
}

/// A local user's grant: the policy tag applied to them and their site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserGrant {
    /// `alice@contoso.test` (from a sip URI) or a bare user name `alice`; lowercase.
    pub user: String,
    /// The tag granted with Grant-CsExternalAccessPolicy.
    pub policy: Option<String>,
    /// The user's site, whose `site:<name>` policy applies when no tag is granted.
    pub site: Option<String>,
    /// The user's simulated contact list (`user@domain`, lowercase): the senders an
    /// unverified message may reach this user from (access-edge.md §a.1, §b.3 step 10).
    pub contacts: Vec<String>,
    /// Where the user is homed (Get-CsUser's HostingProvider; `Move-CsUser -Target`): the
    /// ProxyFqdn of a hosting provider that shares our address space, or `None` for the
    /// on-premises pool (`SRV:`).
    pub hosting_provider: Option<String>,
}

impl UserGrant {
    /// The one check of a user a grant names (the `[[user]]` loader and
    /// Grant-CsExternalAccessPolicy): `sip:alice@contoso.test`, `alice@contoso.test` or a
    /// bare `alice`, in one of the edge's own domains (a policy applies to local users
    /// only). Gives the stored form, lowercase without `sip:`.
    pub fn parse_user(text: &str, local_domains: &[String]) -> Result<String, String> {
        let name = sip_address(text);
        let (user, domain) = match name.split_once('@') {
            Some((u, d)) => (u, Some(d)),
            None => (name.as_str(), None),
        };
        let user_ok =
            !user.is_empty() && !user.contains(|c: char| c.is_whitespace() || c == '@' || c == ':');
        let domain_ok = domain.is_none_or(|d| super::values::dns_name(d).is_ok());
        if !user_ok || !domain_ok {
            return Err(format!(
                "`{text}` is not a user; expected sip:alice@contoso.test, alice@contoso.test or alice"
            ));
        }
        if let Some(d) = domain {
            if !local_domains.iter().any(|l| l.eq_ignore_ascii_case(d)) {
                return Err(format!(
                    "`{text}` is not a user of this edge's domains ({}); external access policies apply to local users only",
                    local_domains.join(", ")
                ));
            }
        }
        Ok(name)
    }

    /// Whether `sender` (`user@host`) is on this user's contact list.
    pub fn has_contact(&self, sender: &str) -> bool {
        self.contacts.iter().any(|c| c.eq_ignore_ascii_case(sender))
    }

    /// Whether this grant is for `user@host`.
    pub fn is_for(&self, user: &str, host: &str) -> bool {
        match self.user.split_once('@') {
            Some((u, h)) => u.eq_ignore_ascii_case(user) && h.eq_ignore_ascii_case(host),
            None => self.user.eq_ignore_ascii_case(user),
        }
    }
}

/// A status and ms-diagnostics code for one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub status: u16,
    pub code: u32,
}

impl Code {
    pub const fn new(status: u16, code: u32) -> Code {
        Code { status, code }
    }
}

/// Statuses and codes the sources mark [unverified] or [inferred]; `[diagnostics]` in the
/// config overrides them. Codes 1901–1999 are sipedge's own, since the product's are
/// undocumented; 1008, 1010 and 1027 are the product's.
#[derive(Debug, Clone, PartialEq)]
pub struct Codes {
    /// AllowFederatedUsers is off. Default 403 / 1901.
    pub federation_disabled: Code,
    /// AllowOutsideUsers is off (remote user). Default 403 / 1902.
    pub outside_users_disabled: Code,
    /// The partner domain is on the blocked list. Default 403 / 1903.
    pub blocked_domain: Code,
    /// Not allowed, not a provider, and discovery is off. Default 403 / 1904.
    pub partner_not_allowed: Code,
    /// The peer does not speak for the From domain. Default 403 / 1010 (b.3 step 4).
    pub source_not_verified: Code,
    /// UseSourceVerification and the peer sent no marking. Default 403 / 1905.
    pub unmarked_source: Code,
    /// The local user's policy denies federation. Default 403 / 1906.
    pub user_federation_denied: Code,
    /// The local user's policy denies public cloud (PIC). Default 403 / 1907.
    pub user_public_cloud_denied: Code,
    /// The local user's policy denies public-cloud audio/video. Default 403 / 1908.
    pub user_public_cloud_av_denied: Code,
    /// A remote user whose policy has EnableOutsideAccess off. Default 403 / 1920.
    pub user_outside_access_denied: Code,
    /// An unverified sender who is not on the recipient's contact list. Default 403 / 1921.
    pub unverified_not_contact: Code,
    /// An anonymous user joining a meeting while AllowAnonymousUsers is off. Default 403 / 1922.
    pub anonymous_users_disabled: Code,
    /// The domain's SRV points at a disabled provider. Default 403 / 1909.
    pub provider_disabled: Code,
    /// Method may not cross federation. Default 403 / 1027 (status [unverified]).
    pub method_not_allowed: Code,
    /// No SRV record. Default 504 / 1008 (status [inferred]).
    pub srv_not_found: Code,
    /// Discovered partner over DiscoveredPartnerStandardRate. Default 503 / 1910.
    pub rate_limited: Code,
    /// Retry-After seconds with `rate_limited`. Default 1.
    pub rate_limited_retry_after_s: u32,
    /// Discovered partner on the watch list (contacts limit). Default 503 / 1911.
    pub contacts_limit: Code,
    /// Retry-After seconds with `contacts_limit`. Default 3600.
    pub contacts_limit_retry_after_s: u32,
    /// Suspicious discovered partner over its 1 msg/s throttle. Default 503 / 1913.
    pub suspicious_partner: Code,
    /// Retry-After seconds with `suspicious_partner`. Default 1.
    pub suspicious_partner_retry_after_s: u32,
}

impl Default for Codes {
    fn default() -> Self {
        Codes {
            federation_disabled: Code::new(403, 1901),
            outside_users_disabled: Code::new(403, 1902),
            blocked_domain: Code::new(403, 1903),
            partner_not_allowed: Code::new(403, 1904),
            source_not_verified: Code::new(403, 1010),
            unmarked_source: Code::new(403, 1905),
            user_federation_denied: Code::new(403, 1906),
            user_public_cloud_denied: Code::new(403, 1907),
            user_public_cloud_av_denied: Code::new(403, 1908),
            user_outside_access_denied: Code::new(403, 1920),
            unverified_not_contact: Code::new(403, 1921),
            anonymous_users_disabled: Code::new(403, 1922),
            provider_disabled: Code::new(403, 1909),
            method_not_allowed: Code::new(403, 1027),
            srv_not_found: Code::new(504, 1008),
            rate_limited: Code::new(503, 1910),
            rate_limited_retry_after_s: 1,
            contacts_limit: Code::new(503, 1911),
            contacts_limit_retry_after_s: 3600,
            suspicious_partner: Code::new(503, 1913),
            suspicious_partner_retry_after_s: 1,
        }
    }
}

/// The methods that may cross federation by default (b.3 step 5, [inferred]).
pub const DEFAULT_FEDERATED_METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "MESSAGE",
    "INFO",
    "SUBSCRIBE",
    "NOTIFY",
    "BENOTIFY",
    "OPTIONS",
    "UPDATE",
    "PRACK",
    "REFER",
    "SERVICE",
];

impl Default for AccessEdge {
    fn default() -> Self {
        AccessEdge {
            allow_federated_users: false,
            allow_outside_users: true,
            allow_anonymous_users: false,
            enable_partner_discovery: false,
            routing: FederationRouting::DnsSrv,
            discovered_partner_verification_level: VerificationLevel::UseSourceVerification,
            discovered_partner_standard_rate: 20,
            enable_discovered_partner_contacts_limit: true,
            max_contacts_per_discovered_partner: 1000,
            discovered_partner_report_period_minutes: 60,
            mark_source_verifiable_on_outgoing_messages: true,
            outgoing_tls_count_for_federated_partners: 4,
            dns_srv_cache_record_count: 1000,
            unmarked_source: UnmarkedSource::Reject,
            federated_methods: DEFAULT_FEDERATED_METHODS
                .iter()
                .map(|m| m.to_string())
                .collect(),
            suspicious_min_failures: 20,
            suspicious_failure_percent: 80,
        }
    }
}

impl Default for Federation {
    fn default() -> Self {
        Federation {
            configured: false,
            access_edge: AccessEdge::default(),
            public_providers: Vec::new(),
            hosting_providers: Vec::new(),
            allowed_domains: Vec::new(),
            blocked_domains: Vec::new(),
            external_access_policies: vec![ExternalAccessPolicy::closed(PolicyScope::Global)],
            users: Vec::new(),
            codes: Codes::default(),
            index: LookupIndex::default(),
        }
    }
}

/// Two objects that may not coexist, named by their config keys (`blocked_domain[0].domain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The key reported (the later of the two places).
    pub key: String,
    /// The other place involved.
    pub other: String,
    pub message: String,
}

// === impl Federation ===

impl Federation {
    /// Whether the federation decision applies; false means static routing.
    pub fn enabled(&self) -> bool {
        self.configured
    }

    /// The blocked-list entry for `domain`.
    pub fn blocked(&self, domain: &str) -> Option<&BlockedDomain> {
        let i = self.index.blocked(&self.lists(), domain)?;
        self.blocked_domains.get(i)
    }

    /// The allowed-list entry for `domain`.
    pub fn allowed(&self, domain: &str) -> Option<&AllowedDomain> {
        let i = self.index.allowed(&self.lists(), domain)?;
        self.allowed_domains.get(i)
    }

    /// The lists the lookup index covers.
    fn lists(&self) -> Lists<'_> {
        Lists {
            allowed: &self.allowed_domains,
            blocked: &self.blocked_domains,
            users: &self.users,
        }
    }

    /// The public provider (enabled or not) whose ProxyFqdn is `fqdn`.
    pub fn public_provider_by_fqdn(&self, fqdn: &str) -> Option<&PublicProvider> {
        self.public_providers
            .iter()
            .find(|p| p.proxy_fqdn.eq_ignore_ascii_case(fqdn))
    }

    /// The hosting provider (enabled or not) whose ProxyFqdn is `fqdn`.
    pub fn hosting_provider_by_fqdn(&self, fqdn: &str) -> Option<&HostingProvider> {
        self.hosting_providers
            .iter()
            .find(|p| p.proxy_fqdn.eq_ignore_ascii_case(fqdn))
    }

    /// The hosting provider `user@host` is homed at, if not on-premises (split domain).
    pub fn home_of(&self, user: &str, host: &str) -> Option<&HostingProvider> {
        let fqdn = self.grant(user, host)?.hosting_provider.as_ref()?;
        self.hosting_provider_by_fqdn(fqdn)
    }

    /// An enabled hosting provider sharing our SIP domains (split domain), if any.
    pub fn shared_address_space(&self) -> Option<&HostingProvider> {
        self.hosting_providers
            .iter()
            .find(|h| h.enabled && h.enabled_shared_address_space)
    }

    /// The policy with exactly this scope.
    pub fn policy(&self, scope: &PolicyScope) -> Option<&ExternalAccessPolicy> {
        self.external_access_policies
            .iter()
            .find(|p| p.scope.matches(scope))
    }

    /// The global policy (always present; a closed one if somehow missing).
    pub fn global_policy(&self) -> ExternalAccessPolicy {
        self.policy(&PolicyScope::Global)
            .cloned()
            .unwrap_or_else(|| ExternalAccessPolicy::closed(PolicyScope::Global))
    }

    /// The grant of `user@host`, if any.
    pub fn grant(&self, user: &str, host: &str) -> Option<&UserGrant> {
        let i = self.index.grant(&self.lists(), user, host)?;
        self.users.get(i)
    }

    /// Every pair of objects the product refuses to hold together: a domain on both lists,
    /// a provider Identity or ProxyFqdn used twice across public and hosting providers,
    /// default routing while providers exist, a grant naming a missing tag.
    pub fn conflicts(&self) -> Vec<Conflict> {
        let mut out = Vec::new();
        for (i, b) in self.blocked_domains.iter().enumerate() {
            if let Some(j) = self.index.allowed(&self.lists(), &b.domain) {
                out.push(Conflict {
                    key: format!("blocked_domain[{i}].domain"),
                    other: format!("allowed_domain[{j}].domain"),
                    message: format!(
                        "`{}` is on both the allowed and the blocked list; a domain may be on one only",
                        b.domain
                    ),
                });
            }
        }
        let providers: Vec<(String, &str, &str)> = self
            .public_providers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    format!("public_provider[{i}]"),
                    p.identity.as_str(),
                    p.proxy_fqdn.as_str(),
                )
            })
            .chain(self.hosting_providers.iter().enumerate().map(|(i, p)| {
                (
                    format!("hosting_provider[{i}]"),
                    p.identity.as_str(),
                    p.proxy_fqdn.as_str(),
                )
            }))
            .collect();
        for (n, (key, identity, fqdn)) in providers.iter().enumerate() {
            for (okey, oidentity, ofqdn) in &providers[..n] {
                if identity.eq_ignore_ascii_case(oidentity) {
                    out.push(Conflict {
                        key: format!("{key}.identity"),
                        other: format!("{okey}.identity"),
                        message: format!(
                            "provider Identity `{identity}` is already used; Identity must be unique across public and hosting providers"
                        ),
                    });
                }
                if fqdn.eq_ignore_ascii_case(ofqdn) {
                    out.push(Conflict {
                        key: format!("{key}.proxy_fqdn"),
                        other: format!("{okey}.proxy_fqdn"),
                        message: format!(
                            "ProxyFqdn `{fqdn}` is already used; ProxyFqdn must be unique across public and hosting providers"
                        ),
                    });
                }
            }
        }
        if matches!(
            self.access_edge.routing,
            FederationRouting::DefaultRoute { .. }
        ) {
            if let Some((key, identity, _)) = providers.first() {
                out.push(Conflict {
                    key: "access_edge.routing".to_string(),
                    other: key.clone(),
                    message: format!(
                        "default routing requires removing all public and hosting providers, but provider `{identity}` exists; use routing = \"dns_srv\" or remove the providers"
                    ),
                });
            }
        }
        for (i, g) in self.users.iter().enumerate() {
            if let Some(fqdn) = &g.hosting_provider {
                let message = match self.hosting_provider_by_fqdn(fqdn) {
                    None => Some(format!(
                        "`{}` is homed at `{fqdn}`, which is no hosting provider's ProxyFqdn; existing: {}",
                        g.user,
                        self.hosting_providers.iter().map(|h| h.proxy_fqdn.as_str()).collect::<Vec<_>>().join(", ")
                    )),
                    Some(h) if !h.hosts_our_users() => Some(format!(
                        "`{}` is homed at `{fqdn}`, but hosting provider `{}` does not host our users (it needs EnabledSharedAddressSpace and HostsOCSUsers)",
                        g.user, h.identity
                    )),
                    Some(_) => None,
                };
                if let Some(message) = message {
                    out.push(Conflict {
                        key: format!("user[{i}].hosting_provider"),
                        other: String::new(),
                        message,
                    });
                }
            }
            if let Some(tag) = &g.policy {
                if self.policy(&PolicyScope::Tag(tag.clone())).is_none() {
                    out.push(Conflict {
                        key: format!("user[{i}].policy"),
                        other: String::new(),
                        message: format!(
                            "no [[external_access_policy]] with identity `{tag}`; a grant needs an existing tag"
                        ),
                    });
                }
            }
        }
        out
    }
}

// === raw schema ===

pub(super) mod raw {
    //! The serde view of the federation sections; `Builder::federation` types it.

    use serde::Deserialize;

    /// The federation sections of a config file, lifted out of `RawConfig`.
    #[derive(Debug, Default)]
    pub struct RawFederation {
        pub access_edge: Option<RawAccessEdge>,
        pub public_provider: Vec<RawPublicProvider>,
        pub hosting_provider: Vec<RawHostingProvider>,
        pub allowed_domain: Vec<RawAllowedDomain>,
        pub blocked_domain: Vec<RawBlockedDomain>,
        pub external_access_policy: Vec<RawPolicy>,
        pub user: Vec<RawUser>,
        pub diagnostics: Option<RawDiagnostics>,
    }

    impl RawFederation {
        pub fn is_configured(&self) -> bool {
            self.access_edge.is_some()
                || !self.public_provider.is_empty()
                || !self.hosting_provider.is_empty()
                || !self.allowed_domain.is_empty()
                || !self.blocked_domain.is_empty()
                || !self.external_access_policy.is_empty()
                || !self.user.is_empty()
        }
    }

    /// A VerificationLevel: a name or 0/1/2.
    #[derive(Debug, Clone, Deserialize)]
    #[serde(untagged)]
    pub enum RawLevel {
        Number(i64),
        Name(String),
    }

    impl RawLevel {
        pub fn text(&self) -> String {
            match self {
                RawLevel::Number(n) => n.to_string(),
                RawLevel::Name(s) => s.clone(),
            }
        }
    }

    /// A domain list: a TOML array or the cmdlet's comma-separated string.
    #[derive(Debug, Clone, Deserialize)]
    #[serde(untagged)]
    pub enum RawDomainList {
        List(Vec<String>),
        Csv(String),
    }

    impl RawDomainList {
        pub fn items(&self) -> Vec<String> {
            match self {
                RawDomainList::List(v) => v.clone(),
                RawDomainList::Csv(s) => s
                    .split(',')
                    .map(|d| d.trim().to_string())
                    .filter(|d| !d.is_empty())
                    .collect(),
            }
        }
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawAccessEdge {
        pub allow_federated_users: Option<bool>,
        pub allow_outside_users: Option<bool>,
        pub allow_anonymous_users: Option<bool>,
        pub enable_partner_discovery: Option<bool>,
        pub routing: Option<String>,
        pub default_route_fqdn: Option<String>,
        pub verification_level: Option<RawLevel>,
        pub is_public_provider: Option<bool>,
        pub discovered_partner_verification_level: Option<RawLevel>,
        pub discovered_partner_standard_rate: Option<u32>,
        pub enable_discovered_partner_contacts_limit: Option<bool>,
        pub max_contacts_per_discovered_partner: Option<u32>,
        pub discovered_partner_report_period_minutes: Option<u32>,
        pub mark_source_verifiable_on_outgoing_messages: Option<bool>,
        pub outgoing_tls_count_for_federated_partners: Option<i64>,
        pub dns_srv_cache_record_count: Option<u32>,
        pub unmarked_source: Option<String>,
        pub federated_methods: Option<Vec<String>>,
        pub suspicious_min_failures: Option<u32>,
        pub suspicious_failure_percent: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawPublicProvider {
        pub identity: String,
        pub proxy_fqdn: String,
        pub enabled: bool,
        pub verification_level: Option<RawLevel>,
        pub icon_url: Option<String>,
        pub name_decoration_domain: Option<String>,
        pub name_decoration_routing_domain: Option<String>,
        pub name_decoration_excluded_domain_list: Option<RawDomainList>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawHostingProvider {
        pub identity: String,
        pub proxy_fqdn: String,
        pub enabled: bool,
        #[serde(default)]
        pub enabled_shared_address_space: bool,
        #[serde(default)]
        pub hosts_ocs_users: bool,
        #[serde(default)]
        pub is_local: bool,
        pub verification_level: Option<RawLevel>,
        pub autodiscover_url: Option<String>,
        pub sip_client_port: Option<u16>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawAllowedDomain {
        pub domain: String,
        pub proxy_fqdn: Option<String>,
        pub verification_level: Option<RawLevel>,
        #[serde(default)]
        pub mark_for_monitoring: bool,
        pub comment: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawBlockedDomain {
        pub domain: String,
        pub comment: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawPolicy {
        pub identity: String,
        #[serde(default)]
        pub enable_federation_access: bool,
        #[serde(default)]
        pub enable_public_cloud_access: bool,
        #[serde(default)]
        pub enable_public_cloud_audio_video_access: bool,
        #[serde(default)]
        pub enable_outside_access: bool,
        #[serde(default)]
        pub enable_xmpp_access: bool,
        pub description: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawUser {
        /// `sip:alice@contoso.test`, `alice@contoso.test` or `alice`.
        pub user: String,
        pub policy: Option<String>,
        pub site: Option<String>,
        /// The simulated contact list: `sip:dave@fabrikam.test` or `dave@fabrikam.test`.
        #[serde(default)]
        pub contacts: Vec<String>,
        /// A hosting provider's ProxyFqdn (homed online); absent: on-premises.
        pub hosting_provider: Option<String>,
    }

    #[derive(Debug, Clone, Copy, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawCode {
        pub status: Option<u16>,
        pub code: Option<u32>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawDiagnostics {
        pub federation_disabled: Option<RawCode>,
        pub outside_users_disabled: Option<RawCode>,
        pub blocked_domain: Option<RawCode>,
        pub partner_not_allowed: Option<RawCode>,
        pub source_not_verified: Option<RawCode>,
        pub unmarked_source: Option<RawCode>,
        pub user_federation_denied: Option<RawCode>,
        pub user_public_cloud_denied: Option<RawCode>,
        pub user_public_cloud_av_denied: Option<RawCode>,
        pub user_outside_access_denied: Option<RawCode>,
        pub unverified_not_contact: Option<RawCode>,
        pub anonymous_users_disabled: Option<RawCode>,
        pub provider_disabled: Option<RawCode>,
        pub method_not_allowed: Option<RawCode>,
        pub srv_not_found: Option<RawCode>,
        pub rate_limited: Option<RawCode>,
        pub rate_limited_retry_after_s: Option<u32>,
        pub contacts_limit: Option<RawCode>,
        pub contacts_limit_retry_after_s: Option<u32>,
        pub suspicious_partner: Option<RawCode>,
        pub suspicious_partner_retry_after_s: Option<u32>,
    }
}

// === validation ===

use raw::*;

use super::file::{split_host_port, Builder};

impl Builder<'_> {
    /// Types and validates the federation sections; every problem is collected.
    pub(super) fn federation(
        &mut self,
        raw: RawFederation,
        local_domains: &[String],
    ) -> Federation {
        let mut fed = Federation {
            configured: raw.is_configured(),
            ..Federation::default()
        };
        if let Some(ae) = raw.access_edge {
            fed.access_edge = self.access_edge(ae);
        }
        for (i, p) in raw.public_provider.into_iter().enumerate() {
            let key = format!("public_provider[{i}]");
            let pp = PublicProvider {
                identity: self.identity(&format!("{key}.identity"), &p.identity),
                proxy_fqdn: self.fqdn(&format!("{key}.proxy_fqdn"), &p.proxy_fqdn),
                verification_level: self.level(
                    &format!("{key}.verification_level"),
                    p.verification_level.as_ref(),
                    VerificationLevel::AlwaysVerifiable,
                ),
                enabled: p.enabled,
                icon_url: p.icon_url.and_then(|u| match http_url(&u) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        self.problem(&format!("{key}.icon_url"), e);
                        None
                    }
                }),
                name_decoration_domain: p
                    .name_decoration_domain
                    .map(|d| self.fqdn(&format!("{key}.name_decoration_domain"), &d)),
                name_decoration_routing_domain: p
                    .name_decoration_routing_domain
                    .map(|d| self.fqdn(&format!("{key}.name_decoration_routing_domain"), &d)),
                name_decoration_excluded_domain_list: p
                    .name_decoration_excluded_domain_list
                    .map(|l| l.items())
                    .unwrap_or_default()
                    .iter()
                    .map(|d| self.fqdn(&format!("{key}.name_decoration_excluded_domain_list"), d))
                    .collect(),
            };
            fed.public_providers.push(pp);
        }
        for (i, h) in raw.hosting_provider.into_iter().enumerate() {
            let key = format!("hosting_provider[{i}]");
            let proxy_key = format!("{key}.proxy_fqdn");
            let (proxy_fqdn, proxy_port) = match split_proxy_fqdn(&h.proxy_fqdn) {
                Ok((host, port)) => (self.fqdn(&proxy_key, host), port),
                Err(e) => {
                    self.problem(&proxy_key, e);
                    (h.proxy_fqdn.clone(), FEDERATION_PORT)
                }
            };
            let hp = HostingProvider {
                identity: self.identity(&format!("{key}.identity"), &h.identity),
                proxy_fqdn,
                proxy_port,
                enabled: h.enabled,
                enabled_shared_address_space: h.enabled_shared_address_space,
                hosts_ocs_users: h.hosts_ocs_users,
                is_local: h.is_local,
                verification_level: self.level(
                    &format!("{key}.verification_level"),
                    h.verification_level.as_ref(),
                    VerificationLevel::AlwaysVerifiable,
                ),
                autodiscover_url: h.autodiscover_url.and_then(|u| match http_url(&u) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        self.problem(&format!("{key}.autodiscover_url"), e);
                        None
                    }
                }),
                sip_client_port: match h.sip_client_port {
                    Some(0) => {
                        self.problem(
                            &format!("{key}.sip_client_port"),
                            "0 is not a port; SipClientPort allows 1 to 65535",
                        );
                        443
                    }
                    port => port.unwrap_or(443),
                },
            };
            fed.hosting_providers.push(hp);
        }
        // Sets rather than lookups on the growing lists: building stays linear in their size.
        let mut seen = HashSet::new();
        for (i, a) in raw.allowed_domain.into_iter().enumerate() {
            let key = format!("allowed_domain[{i}]");
            let domain = self.fqdn(&format!("{key}.domain"), &a.domain);
            if !seen.insert(domain.to_ascii_lowercase()) {
                self.problem(
                    &format!("{key}.domain"),
                    format!("`{domain}` is already on the allowed list"),
                );
            }
            let proxy_key = format!("{key}.proxy_fqdn");
            let (proxy_fqdn, proxy_port) = match a.proxy_fqdn.as_deref().map(split_proxy_fqdn) {
                None => (None, FEDERATION_PORT),
                Some(Ok((host, port))) => (Some(self.fqdn(&proxy_key, host)), port),
                Some(Err(e)) => {
                    self.problem(&proxy_key, e);
                    (None, FEDERATION_PORT)
                }
            };
            let ad = AllowedDomain {
                domain,
                proxy_fqdn,
                proxy_port,
                verification_level: self.level(
                    &format!("{key}.verification_level"),
                    a.verification_level.as_ref(),
                    VerificationLevel::UseSourceVerification,
                ),
                mark_for_monitoring: a.mark_for_monitoring,
                comment: a.comment,
            };
            fed.allowed_domains.push(ad);
        }
        seen.clear();
        for (i, b) in raw.blocked_domain.into_iter().enumerate() {
            let key = format!("blocked_domain[{i}].domain");
            let domain = self.fqdn(&key, &b.domain);
            if !seen.insert(domain.to_ascii_lowercase()) {
                self.problem(&key, format!("`{domain}` is already on the blocked list"));
            }
            fed.blocked_domains.push(BlockedDomain {
                domain,
                comment: b.comment,
            });
        }
        fed.external_access_policies.clear();
        for (i, p) in raw.external_access_policy.into_iter().enumerate() {
            let key = format!("external_access_policy[{i}].identity");
            if let Err(e) = xmpp_access(p.enable_xmpp_access) {
                self.problem(
                    &format!("external_access_policy[{i}].enable_xmpp_access"),
                    e,
                );
            }
            let Some(scope) = PolicyScope::parse(&p.identity) else {
                self.problem(
                    &key,
                    format!("`{}` is not a policy identity; expected \"global\", \"site:<name>\" or a tag name", p.identity),
                );
                continue;
            };
            if fed.policy(&scope).is_some() {
                self.problem(&key, format!("policy `{scope}` is defined twice"));
                continue;
            }
            fed.external_access_policies.push(ExternalAccessPolicy {
                scope,
                enable_federation_access: p.enable_federation_access,
                enable_public_cloud_access: p.enable_public_cloud_access,
                enable_public_cloud_audio_video_access: p.enable_public_cloud_audio_video_access,
                enable_outside_access: p.enable_outside_access,
                enable_xmpp_access: false,
                description: p.description,
            });
        }
        if fed.policy(&PolicyScope::Global).is_none() {
            fed.external_access_policies
                .insert(0, ExternalAccessPolicy::closed(PolicyScope::Global));
        }
        seen.clear();
        for (i, u) in raw.user.into_iter().enumerate() {
            let key = format!("user[{i}].user");
            let name = match UserGrant::parse_user(&u.user, local_domains) {
                Ok(name) => name,
                Err(e) => {
                    self.problem(&key, e);
                    u.user.clone()
                }
            };
            if !seen.insert(name.clone()) {
                self.problem(&key, format!("user `{name}` has two grants"));
            }
            let policy = u.policy.map(|p| {
                match PolicyScope::parse(&p) {
                    Some(PolicyScope::Tag(t)) => t,
                    _ => {
                        self.problem(
                            &format!("user[{i}].policy"),
                            format!("`{p}` is not a tag; grants name a tag policy, site and global policies apply by themselves"),
                        );
                        p
                    }
                }
            });
            let contacts = u
                .contacts
                .iter()
                .filter_map(|c| match contact(c) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        self.problem(&format!("user[{i}].contacts"), e);
                        None
                    }
                })
                .collect();
            let hosting_provider = u.hosting_provider.map(|f| {
                let key = format!("user[{i}].hosting_provider");
                self.fqdn(&key, &f)
            });
            fed.users.push(UserGrant {
                user: name,
                policy,
                site: u.site,
                contacts,
                hosting_provider,
            });
        }
        if let Some(d) = raw.diagnostics {
            fed.codes = self.codes(d);
        }
        for c in fed.conflicts() {
            self.conflict(&c);
        }
        fed
    }

    fn access_edge(&mut self, r: RawAccessEdge) -> AccessEdge {
        let d = AccessEdge::default();
        let routing = match r.routing.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("dns_srv") | Some("dnssrv") => {
                for (set, name) in [
                    (r.default_route_fqdn.is_some(), "default_route_fqdn"),
                    (r.verification_level.is_some(), "verification_level"),
                    (r.is_public_provider.is_some(), "is_public_provider"),
                ] {
                    if set {
                        self.problem(
                            &format!("access_edge.{name}"),
                            "only valid with routing = \"default_route\" (UseDefaultRouting)",
                        );
                    }
                }
                FederationRouting::DnsSrv
            }
            Some("default_route") | Some("defaultroute") => {
                if r.enable_partner_discovery == Some(true) {
                    self.problem(
                        "access_edge.enable_partner_discovery",
                        "partner discovery needs routing = \"dns_srv\"; default routing sends everything to default_route_fqdn",
                    );
                }
                let (fqdn, port) = match &r.default_route_fqdn {
                    None => {
                        self.problem(
                            "access_edge.routing",
                            "default routing needs default_route_fqdn, e.g. \"ch.example.test\"",
                        );
                        (String::new(), 5061)
                    }
                    Some(f) => match split_host_port(f) {
                        Some((h, p)) => (self.fqdn("access_edge.default_route_fqdn", &h), p),
                        None => (self.fqdn("access_edge.default_route_fqdn", f), 5061),
                    },
                };
                FederationRouting::DefaultRoute {
                    fqdn,
                    port,
                    verification_level: self.level(
                        "access_edge.verification_level",
                        r.verification_level.as_ref(),
                        VerificationLevel::AlwaysVerifiable,
                    ),
                    is_public_provider: r.is_public_provider.unwrap_or(false),
                }
            }
            Some(other) => {
                self.problem(
                    "access_edge.routing",
                    format!("`{other}` is not a routing method; expected \"dns_srv\" or \"default_route\""),
                );
                FederationRouting::DnsSrv
            }
        };
        let tls_count = r
            .outgoing_tls_count_for_federated_partners
            .unwrap_or(i64::from(d.outgoing_tls_count_for_federated_partners));
        if !(1..=4).contains(&tls_count) {
            self.problem(
                "access_edge.outgoing_tls_count_for_federated_partners",
                format!("{tls_count} is out of range; OutgoingTlsCountForFederatedPartners allows 1 to 4"),
            );
        }
        let rate = r
            .discovered_partner_standard_rate
            .unwrap_or(d.discovered_partner_standard_rate);
        if rate == 0 {
            self.problem(
                "access_edge.discovered_partner_standard_rate",
                "must be at least 1 message per second (default 20)",
            );
        }
        let unmarked_source = match r.unmarked_source.as_deref() {
            None | Some("reject") => UnmarkedSource::Reject,
            Some("unverified") => UnmarkedSource::MarkUnverified,
            Some(other) => {
                self.problem(
                    "access_edge.unmarked_source",
                    format!("`{other}` is not valid; expected \"reject\" or \"unverified\""),
                );
                UnmarkedSource::Reject
            }
        };
        let federated_methods = match r.federated_methods {
            None => d.federated_methods,
            Some(v) => {
                if v.iter()
                    .any(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()))
                {
                    self.problem(
                        "access_edge.federated_methods",
                        "methods are SIP method tokens, e.g. [\"INVITE\", \"MESSAGE\"]",
                    );
                }
                v.iter().map(|m| m.to_ascii_uppercase()).collect()
            }
        };
        let suspicious_failure_percent = r
            .suspicious_failure_percent
            .unwrap_or(d.suspicious_failure_percent);
        if !(1..=100).contains(&suspicious_failure_percent) {
            self.problem(
                "access_edge.suspicious_failure_percent",
                format!("{suspicious_failure_percent} is out of range; a share of failed responses from 1 to 100 percent (default 80)"),
            );
        }
        AccessEdge {
            suspicious_min_failures: r
                .suspicious_min_failures
                .unwrap_or(d.suspicious_min_failures)
                .max(1),
            suspicious_failure_percent,
            allow_federated_users: r.allow_federated_users.unwrap_or(d.allow_federated_users),
            allow_outside_users: r.allow_outside_users.unwrap_or(d.allow_outside_users),
            allow_anonymous_users: r.allow_anonymous_users.unwrap_or(d.allow_anonymous_users),
            enable_partner_discovery: r
                .enable_partner_discovery
                .unwrap_or(d.enable_partner_discovery),
            routing,
            discovered_partner_verification_level: self.level(
                "access_edge.discovered_partner_verification_level",
                r.discovered_partner_verification_level.as_ref(),
                d.discovered_partner_verification_level,
            ),
            discovered_partner_standard_rate: rate,
            enable_discovered_partner_contacts_limit: r
                .enable_discovered_partner_contacts_limit
                .unwrap_or(d.enable_discovered_partner_contacts_limit),
            max_contacts_per_discovered_partner: r
                .max_contacts_per_discovered_partner
                .unwrap_or(d.max_contacts_per_discovered_partner),
            discovered_partner_report_period_minutes: r
                .discovered_partner_report_period_minutes
                .unwrap_or(d.discovered_partner_report_period_minutes),
            mark_source_verifiable_on_outgoing_messages: r
                .mark_source_verifiable_on_outgoing_messages
                .unwrap_or(d.mark_source_verifiable_on_outgoing_messages),
            outgoing_tls_count_for_federated_partners: tls_count.clamp(1, 4) as u8,
            dns_srv_cache_record_count: r
                .dns_srv_cache_record_count
                .unwrap_or(d.dns_srv_cache_record_count),
            unmarked_source,
            federated_methods,
        }
    }

    fn level(
        &mut self,
        key: &str,
        raw: Option<&RawLevel>,
        default: VerificationLevel,
    ) -> VerificationLevel {
        let Some(raw) = raw else { return default };
        match VerificationLevel::parse(&raw.text()) {
            Some(l) => l,
            None => {
                self.problem(
                    key,
                    format!(
                        "`{}` is not a VerificationLevel; expected AlwaysVerifiable (0), AlwaysUnverifiable (1) or UseSourceVerification (2)",
                        raw.text()
                    ),
                );
                default
            }
        }
    }

    fn identity(&mut self, key: &str, value: &str) -> String {
        let v = value.trim();
        if v.is_empty() {
            self.problem(key, "an Identity is required, e.g. \"Skype\"");
        }
        v.to_string()
    }

    fn codes(&mut self, r: RawDiagnostics) -> Codes {
        let d = Codes::default();
        let code = |b: &mut Self, name: &str, raw: Option<RawCode>, default: Code| {
            let Some(raw) = raw else { return default };
            let c = Code {
                status: raw.status.unwrap_or(default.status),
                code: raw.code.unwrap_or(default.code),
            };
            if !(400..=699).contains(&c.status) {
                b.problem(
                    &format!("diagnostics.{name}"),
                    format!("status {} is not a SIP failure status (400–699)", c.status),
                );
            }
            if c.code == 0 {
                b.problem(
                    &format!("diagnostics.{name}"),
                    "an ms-diagnostics code must be positive",
                );
            }
            c
        };
        Codes {
            federation_disabled: code(
                self,
                "federation_disabled",
                r.federation_disabled,
                d.federation_disabled,
            ),
            outside_users_disabled: code(
                self,
                "outside_users_disabled",
                r.outside_users_disabled,
                d.outside_users_disabled,
            ),
            blocked_domain: code(self, "blocked_domain", r.blocked_domain, d.blocked_domain),
            partner_not_allowed: code(
                self,
                "partner_not_allowed",
                r.partner_not_allowed,
                d.partner_not_allowed,
            ),
            source_not_verified: code(
                self,
                "source_not_verified",
                r.source_not_verified,
                d.source_not_verified,
            ),
            unmarked_source: code(
                self,
                "unmarked_source",
                r.unmarked_source,
                d.unmarked_source,
            ),
            user_federation_denied: code(
                self,
                "user_federation_denied",
                r.user_federation_denied,
                d.user_federation_denied,
            ),
            user_public_cloud_denied: code(
                self,
                "user_public_cloud_denied",
                r.user_public_cloud_denied,
                d.user_public_cloud_denied,
            ),
            user_public_cloud_av_denied: code(
                self,
                "user_public_cloud_av_denied",
                r.user_public_cloud_av_denied,
                d.user_public_cloud_av_denied,
            ),
            user_outside_access_denied: code(
                self,
                "user_outside_access_denied",
                r.user_outside_access_denied,
                d.user_outside_access_denied,
            ),
            unverified_not_contact: code(
                self,
                "unverified_not_contact",
                r.unverified_not_contact,
                d.unverified_not_contact,
            ),
            anonymous_users_disabled: code(
                self,
                "anonymous_users_disabled",
                r.anonymous_users_disabled,
                d.anonymous_users_disabled,
            ),
            provider_disabled: code(
                self,
                "provider_disabled",
                r.provider_disabled,
                d.provider_disabled,
            ),
            method_not_allowed: code(
                self,
                "method_not_allowed",
                r.method_not_allowed,
                d.method_not_allowed,
            ),
            srv_not_found: code(self, "srv_not_found", r.srv_not_found, d.srv_not_found),
            rate_limited: code(self, "rate_limited", r.rate_limited, d.rate_limited),
            rate_limited_retry_after_s: r
                .rate_limited_retry_after_s
                .unwrap_or(d.rate_limited_retry_after_s),
            contacts_limit: code(self, "contacts_limit", r.contacts_limit, d.contacts_limit),
            contacts_limit_retry_after_s: r
                .contacts_limit_retry_after_s
                .unwrap_or(d.contacts_limit_retry_after_s),
            suspicious_partner: code(
                self,
                "suspicious_partner",
                r.suspicious_partner,
                d.suspicious_partner,
            ),
            suspicious_partner_retry_after_s: r
                .suspicious_partner_retry_after_s
                .unwrap_or(d.suspicious_partner_retry_after_s),
        }
    }

    /// A conflict between two places becomes one problem naming both (key and line).
    fn conflict(&mut self, c: &Conflict) {
        let message = if c.other.is_empty() {
            c.message.clone()
        } else {
            let line = self
                .lines
                .line_of(&c.other)
                .map_or_else(|| "?".to_string(), |l| l.to_string());
            format!(
                "{} (conflicts with `{}` at line {line})",
                c.message, c.other
            )
        };
        self.problem(&c.key, message);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{ConfigError, Snapshot};

    const BASE: &str = crate::config::TCP_EDGE;

    fn parse(extra: &str) -> Result<Snapshot, ConfigError> {
        Snapshot::from_toml(&format!("{BASE}{extra}"), Path::new("."))
    }

    fn problems(extra: &str) -> Vec<crate::config::Problem> {
        parse(extra).expect_err("should be refused").problems()
    }

    /// The 1-based line of the first line containing `needle` in BASE + extra.
    fn line(extra: &str, needle: &str, nth: usize) -> usize {
        format!("{BASE}{extra}")
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(needle))
            .nth(nth)
            .map(|(i, _)| i + 1)
            .expect("needle")
    }

    #[test]
    fn absent_sections_mean_static_routing_with_product_defaults() {
        let s = parse("").unwrap();
        let f = &s.federation;
        assert!(!f.enabled());
        let ae = &f.access_edge;
        assert!(!ae.allow_federated_users && ae.allow_outside_users && !ae.allow_anonymous_users);
        assert!(!ae.enable_partner_discovery);
        assert_eq!(ae.routing, FederationRouting::DnsSrv);
        assert_eq!(ae.discovered_partner_standard_rate, 20);
        assert!(ae.enable_discovered_partner_contacts_limit);
        assert_eq!(ae.max_contacts_per_discovered_partner, 1000);
        assert_eq!(ae.discovered_partner_report_period_minutes, 60);
        assert!(ae.mark_source_verifiable_on_outgoing_messages);
        assert_eq!(ae.outgoing_tls_count_for_federated_partners, 4);
        assert_eq!(
            f.global_policy(),
            ExternalAccessPolicy::closed(PolicyScope::Global)
        );
        assert_eq!(f.codes, Codes::default());
    }

    #[test]
    fn lab_federation_file_parses() {
        let s = parse(crate::config::lab_federation_sections()).unwrap_or_else(|e| panic!("{e}"));
        let f = &s.federation;
        assert!(f.enabled());
        assert!(f.access_edge.allow_federated_users && f.access_edge.enable_partner_discovery);
        let skype = &f.public_providers[0];
        assert_eq!(
            (
                skype.identity.as_str(),
                skype.proxy_fqdn.as_str(),
                skype.enabled,
                skype.verification_level
            ),
            (
                "Skype",
                "federation.messenger.msn.com",
                true,
                VerificationLevel::UseSourceVerification
            )
        );
        assert_eq!(
            skype.icon_url.as_deref(),
            Some("https://images.edge.messenger.live.com/Messenger_16x16.png")
        );
        assert_eq!(
            skype.name_decoration_routing_domain.as_deref(),
            Some("msn.com")
        );
        assert_eq!(
            skype.name_decoration_excluded_domain_list,
            ["msn.com", "outlook.com", "live.com", "hotmail.com"]
        );
        assert_eq!(f.public_providers.len(), 1, "no Messenger provider");
        let lync = &f.hosting_providers[0];
        assert_eq!(
            (lync.identity.as_str(), lync.proxy_fqdn.as_str()),
            ("LyncOnline", "sipfed.online.lync.com")
        );
        assert!(lync.enabled_shared_address_space && lync.hosts_ocs_users && !lync.is_local);
        assert_eq!(lync.sip_client_port, 443);
        let fab = f.allowed("FABRIKAM.test").unwrap();
        assert_eq!(fab.proxy_fqdn.as_deref(), Some("sip.fabrikam.test"));
        assert_eq!(
            fab.verification_level,
            VerificationLevel::UseSourceVerification
        );
        assert!(f.blocked("adatum.test").is_some());
        assert_eq!(
            f.grant("bob", "contoso.test").unwrap().policy.as_deref(),
            Some("NoPublicCloud")
        );
        assert_eq!(
            f.grant("carol", "contoso.test").unwrap().policy.as_deref(),
            Some("NoFederation")
        );
        assert!(f.grant("alice", "contoso.test").is_none());
    }

    #[test]
    fn verification_level_by_name_or_number() {
        for (v, want) in [
            ("0", VerificationLevel::AlwaysVerifiable),
            ("1", VerificationLevel::AlwaysUnverifiable),
            ("2", VerificationLevel::UseSourceVerification),
            (
                "\"alwaysunverifiable\"",
                VerificationLevel::AlwaysUnverifiable,
            ),
        ] {
            let s = parse(&format!(
                "[[allowed_domain]]\ndomain = \"x.test\"\nverification_level = {v}\n"
            ))
            .unwrap();
            assert_eq!(
                s.federation.allowed_domains[0].verification_level, want,
                "{v}"
            );
        }
        let p = problems("[[allowed_domain]]\ndomain = \"x.test\"\nverification_level = 3\n");
        assert_eq!(p[0].key, "allowed_domain[0].verification_level");
        assert!(
            p[0].message.contains("UseSourceVerification (2)"),
            "{}",
            p[0].message
        );
    }

    #[test]
    fn domain_on_both_lists_names_both_places() {
        let extra = "[[allowed_domain]]\ndomain = \"fabrikam.test\"\n[[blocked_domain]]\ndomain = \"adatum.test\"\n[[blocked_domain]]\ndomain = \"Fabrikam.test\"\n";
        let p = problems(extra);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "blocked_domain[1].domain");
        assert_eq!(p[0].line, Some(line(extra, "Fabrikam", 0)));
        let allowed_line = line(extra, "fabrikam.test", 0);
        assert!(
            p[0].message.contains(&format!(
                "`allowed_domain[0].domain` at line {allowed_line}"
            )),
            "{}",
            p[0].message
        );
    }

    #[test]
    fn provider_identity_and_fqdn_unique_across_public_and_hosting() {
        let extra = "[[public_provider]]\nidentity = \"Skype\"\nproxy_fqdn = \"federation.messenger.msn.com\"\nenabled = true\n\
                     [[hosting_provider]]\nidentity = \"skype\"\nproxy_fqdn = \"sipfed.online.lync.com\"\nenabled = true\n\
                     [[hosting_provider]]\nidentity = \"LyncOnline\"\nproxy_fqdn = \"federation.messenger.msn.com\"\nenabled = true\n";
        let p = problems(extra);
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "hosting_provider[0].identity",
                "hosting_provider[1].proxy_fqdn"
            ]
        );
        assert!(
            p[0].message.contains(&format!(
                "`public_provider[0].identity` at line {}",
                line(extra, "\"Skype\"", 0)
            )),
            "{}",
            p[0].message
        );
        assert_eq!(
            p[1].line,
            Some(line(extra, "federation.messenger.msn.com", 1))
        );
        assert!(
            p[1].message.contains("public_provider[0].proxy_fqdn"),
            "{}",
            p[1].message
        );
    }

    #[test]
    fn default_route_with_providers_is_one_problem_naming_both() {
        let extra = "[access_edge]\nrouting = \"default_route\"\ndefault_route_fqdn = \"ch.clearing.test\"\n\
                     [[hosting_provider]]\nidentity = \"LyncOnline\"\nproxy_fqdn = \"sipfed.online.lync.com\"\nenabled = true\n";
        let p = problems(extra);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "access_edge.routing");
        assert_eq!(p[0].line, Some(line(extra, "routing =", 0)));
        assert!(
            p[0].message.contains(&format!(
                "`hosting_provider[0]` at line {}",
                line(extra, "[[hosting_provider]]", 0)
            )),
            "{}",
            p[0].message
        );
        assert!(p[0].message.contains("LyncOnline"));
    }

    #[test]
    fn default_route_settings_are_checked() {
        let p = problems(
            "[access_edge]\nrouting = \"default_route\"\nenable_partner_discovery = true\n",
        );
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "access_edge.enable_partner_discovery",
                "access_edge.routing"
            ]
        );
        let p = problems("[access_edge]\ndefault_route_fqdn = \"ch.test\"\noutgoing_tls_count_for_federated_partners = 5\n");
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "access_edge.default_route_fqdn",
                "access_edge.outgoing_tls_count_for_federated_partners"
            ]
        );
        let s = parse("[access_edge]\nrouting = \"default_route\"\ndefault_route_fqdn = \"ch.test:5071\"\nverification_level = 1\nis_public_provider = true\n").unwrap();
        assert_eq!(
            s.federation.access_edge.routing,
            FederationRouting::DefaultRoute {
                fqdn: "ch.test".into(),
                port: 5071,
                verification_level: VerificationLevel::AlwaysUnverifiable,
                is_public_provider: true
            }
        );
    }

    #[test]
    fn policies_and_grants_are_checked() {
        let p = problems(
            "[[external_access_policy]]\nidentity = \"global\"\n[[external_access_policy]]\nidentity = \"Global\"\n\
             [[external_access_policy]]\nidentity = \"bogus:x\"\n[[user]]\nuser = \"sip:dave@contoso.test\"\npolicy = \"Missing\"\n",
        );
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "external_access_policy[1].identity",
                "external_access_policy[2].identity",
                "user[0].policy"
            ]
        );
        let s = parse("[[external_access_policy]]\nidentity = \"site:Paris\"\nenable_federation_access = true\n").unwrap();
        let f = &s.federation;
        assert!(
            f.policy(&PolicyScope::Global).is_some(),
            "global always exists"
        );
        assert!(
            f.policy(&PolicyScope::Site("paris".into()))
                .unwrap()
                .enable_federation_access
        );
    }

    #[test]
    fn partners_get_outgoing_tls_count_and_every_other_next_hop_connections_per_target() {
        use crate::peer::Interface;
        let s = parse("[limits]\nconnections_per_target = 3\n[access_edge]\noutgoing_tls_count_for_federated_partners = 1\n").unwrap();
        assert_eq!(s.connections_per_next_hop(Interface::External), 1);
        assert_eq!(s.connections_per_next_hop(Interface::Internal), 3);
        // Without federation sections the external next hops are static routes.
        let s = parse("[limits]\nconnections_per_target = 3\n").unwrap();
        assert_eq!(s.connections_per_next_hop(Interface::External), 3);
    }

    #[test]
    fn static_routes_beside_federation_are_refused() {
        let p = problems("[[routes]]\ndomain = \"fabrikam.test\"\ntarget = \"127.0.0.3:5060\"\ntransport = \"tcp\"\n[[blocked_domain]]\ndomain = \"adatum.test\"\n");
        assert_eq!(p[0].key, "routes");
    }

    #[test]
    fn diagnostics_table_overrides_and_checks() {
        let s = parse("[diagnostics]\nrate_limited = { status = 480, code = 1950 }\nrate_limited_retry_after_s = 7\n").unwrap();
        assert!(
            !s.federation.enabled(),
            "[diagnostics] alone does not enable federation"
        );
        assert_eq!(s.federation.codes.rate_limited, Code::new(480, 1950));
        assert_eq!(s.federation.codes.rate_limited_retry_after_s, 7);
        assert_eq!(s.federation.codes.blocked_domain, Code::new(403, 1903));
        let p = problems("[diagnostics]\nblocked_domain = { status = 200 }\n");
        assert_eq!(p[0].key, "diagnostics.blocked_domain");
        let unknown = parse("[diagnostics]\nblocked = { status = 403 }\n").unwrap_err();
        assert_eq!(
            unknown.problems()[0].key,
            "diagnostics.blocked",
            "{unknown}"
        );
    }

    #[test]
    fn a_proxy_fqdn_may_carry_a_port_and_a_bad_one_is_reported_with_its_key() {
        assert_eq!(
            split_proxy_fqdn("sip.fabrikam.test"),
            Ok(("sip.fabrikam.test", 5061))
        );
        assert_eq!(
            split_proxy_fqdn("sip.fabrikam.test:5071"),
            Ok(("sip.fabrikam.test", 5071))
        );
        for bad in [
            "sip.fabrikam.test:0",
            "sip.fabrikam.test:65536",
            "sip.fabrikam.test:",
            ":5071",
        ] {
            assert!(split_proxy_fqdn(bad).is_err(), "{bad}");
        }
        let base = crate::config::TCP_EDGE;
        let text = format!("{base}\n[[allowed_domain]]\ndomain = \"fabrikam.test\"\nproxy_fqdn = \"sip.fabrikam.test:99999\"\n");
        let e = crate::config::Snapshot::from_toml(&text, std::path::Path::new("."))
            .expect_err("port out of range");
        assert!(
            e.to_string().contains("allowed_domain[0].proxy_fqdn"),
            "{e}"
        );
    }

    #[test]
    fn conflicts_work_on_typed_objects_for_the_admin_layer() {
        let mut f = Federation::default();
        assert!(f.conflicts().is_empty());
        f.allowed_domains.push(AllowedDomain {
            domain: "x.test".into(),
            proxy_fqdn: None,
            proxy_port: FEDERATION_PORT,
            verification_level: VerificationLevel::UseSourceVerification,
            mark_for_monitoring: false,
            comment: None,
        });
        f.blocked_domains.push(BlockedDomain {
            domain: "X.test".into(),
            comment: None,
        });
        let c = f.conflicts();
        assert_eq!(
            (c[0].key.as_str(), c[0].other.as_str()),
            ("blocked_domain[0].domain", "allowed_domain[0].domain")
        );
    }
}
