//! Management Shell cmdlet lines → a new snapshot, or the property list a `Get-*` prints.
//!
//! Pure and synchronous: `apply` reads a snapshot and a line as an administrator types it
//! (`New-CsPublicProvider -Identity Skype -ProxyFqdn federation.messenger.msn.com …`) and
//! returns the snapshot to install, validated as the product validates (Identity and
//! ProxyFqdn unique across public and hosting providers, a domain on one list only,
//! default routing without providers, Remove of something that does not exist).
//!
//! PowerShell forms understood: `Verb-Noun` and parameter names in any case, unambiguous
//! parameter-name prefixes, `-Name value` and `-Name:value`, switch parameters
//! (`-UseDnsSrvRouting`), "double" and 'single' quoted strings (`""`, `''` and backtick
//! escapes), `$true`/`$false`/`True`/`False`/`1`/`0`, `$null` to clear an optional value,
//! comma lists (`"msn.com,outlook.com"` or `msn.com,outlook.com`), and `-Identity` (for
//! Grant also `-PolicyName`) given positionally, as PowerShell allows.
//!
//! `Get-/Set-CsLabContactList` are sipedge's own: a lab user's simulated contact list, which
//! the product keeps in the user's client and the edge needs for unverified senders.
//! `-EnableXmppAccess $true` is refused as not modelled.
//!
//! `VerificationLevel` takes a name or a number; the numbers are an assumption (no source
//! prints them): 0 AlwaysVerifiable, 1 AlwaysUnverifiable, 2 UseSourceVerification.

use std::fmt::{self, Write as _};

use crate::config::{
    AllowedDomain, BlockedDomain, ExternalAccessPolicy, Federation, FederationRouting,
    HostingProvider, PolicyScope, PublicProvider, Snapshot, UserGrant, VerificationLevel,
};

/// What a cmdlet line did.
#[derive(Debug, Clone)]
pub struct CmdletResult {
    /// The snapshot to install; `None` for `Get-*`, which change nothing.
    pub snapshot: Option<Snapshot>,
    /// What PowerShell prints: property lists for `Get-*`, nothing for the others.
    pub output: String,
    /// `Test-CsFederatedPartner -Domain D`: the domain to walk the chain to. The walk
    /// needs the network, so the caller (the admin endpoint) runs `check_partner`.
    pub test_partner: Option<String>,
}

/// Why a line was refused. Each message names what would have been valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CmdletError {
    /// The line could not be read: an unterminated quote, a value with no parameter.
    #[error("{0}")]
    Syntax(String),
    /// The first word is not a cmdlet sipedge supports.
    #[error("`{name}` is not a supported cmdlet; valid cmdlets: {}", .valid.join(", "))]
    UnknownCmdlet { name: String, valid: Vec<String> },
    /// A parameter the cmdlet does not take.
    #[error("{cmdlet}: no parameter -{param}; valid parameters: {}", dashed(.valid))]
    UnknownParameter {
        cmdlet: String,
        param: String,
        valid: Vec<String>,
    },
    /// A value the parameter does not accept.
    #[error("{cmdlet}: `{value}` is not valid for -{param}; expected {expected}")]
    BadValue {
        cmdlet: String,
        param: String,
        value: String,
        expected: String,
    },
    /// A value the shared field validator (`config`) refuses; the message says why.
    #[error("{cmdlet}: -{param}: {message}")]
    Invalid {
        cmdlet: String,
        param: String,
        message: String,
    },
    /// A required parameter is missing.
    #[error("{cmdlet}: -{param} is required")]
    MissingParameter { cmdlet: String, param: String },
    /// The cmdlet is well-formed but the product would refuse it.
    #[error("{cmdlet}: {message}")]
    Refused { cmdlet: String, message: String },
}

fn dashed(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("-{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs one cmdlet line against `snapshot`.
pub fn apply(snapshot: &Snapshot, line: &str) -> Result<CmdletResult, CmdletError> {
    let tokens = tokenize(line)?;
    let Some((first, rest)) = tokens.split_first() else {
        return Err(CmdletError::Syntax(
            "the line is empty; type a cmdlet, e.g. Get-CsPublicProvider".into(),
        ));
    };
    let name = match first {
        Token::Word(w) => w.text.as_str(),
        Token::Param { name, .. } => name.as_str(),
    };
    let cmd = Cmdlet::find(name).ok_or_else(|| CmdletError::UnknownCmdlet {
        name: name.to_string(),
        valid: Cmdlet::ALL.iter().map(|c| c.name()).collect(),
    })?;
    let args = bind(cmd, rest)?;
    if cmd.verb == Verb::Test {
        let domain = args.text("Domain").ok_or_else(|| cmd.missing("Domain"))?;
        return Ok(CmdletResult {
            snapshot: None,
            output: String::new(),
            test_partner: Some(domain.to_string()),
        });
    }
    if cmd.verb == Verb::Get {
        let output = get(cmd, &snapshot.federation, &args)?;
        return Ok(CmdletResult {
            snapshot: None,
            output,
            test_partner: None,
        });
    }
    if !snapshot.federation.configured
        && (!snapshot.routes.is_empty() || snapshot.default_route.is_some())
    {
        return Err(cmd.refused(
            "this edge routes statically ([[routes]] / default_route in its config); federation cmdlets need a config with federation sections, like config/lab.toml",
        ));
    }
    let mut next = snapshot.clone();
    if cmd.verb == Verb::Move {
        move_user(cmd, &mut next, &args)?;
    } else {
        change(
            cmd,
            &mut next.federation,
            &snapshot.edge.local_domains,
            &args,
        )?;
    }
    next.federation.configured = true;
    if let Some(c) = next.federation.conflicts().into_iter().next() {
        return Err(cmd.refused(c.message));
    }
    Ok(CmdletResult {
        snapshot: Some(next),
        output: String::new(),
        test_partner: None,
    })
}

/// Every federation object as the `Get-*` cmdlets print them, one family after another
/// (the admin endpoint's `/config`).
pub fn render_config(fed: &Federation) -> String {
    let mut out = String::new();
    for cmd in Cmdlet::ALL.iter().filter(|c| c.verb == Verb::Get) {
        let text = get(*cmd, fed, &Args::default()).unwrap_or_default();
        let _ = writeln!(out, "# {}\n", cmd.name());
        if !text.is_empty() {
            out.push_str(&text);
            out.push('\n');
        }
    }
    out.push_str("# Grant-CsExternalAccessPolicy (user : policy tag, site, home)\n\n");
    for g in &fed.users {
        let _ = writeln!(
            out,
            "{} : {}{}{}",
            g.user,
            g.policy.as_deref().unwrap_or("(none)"),
            g.site
                .as_deref()
                .map(|s| format!(", site {s}"))
                .unwrap_or_default(),
            g.hosting_provider
                .as_deref()
                .map(|h| format!(", homed at {h}"))
                .unwrap_or_default()
        );
    }
    out
}

// === tokens ===

/// A word of the line; `quoted` when any part of it was inside quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    quoted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// `-Name`, or `-Name:value` with the value attached.
    Param {
        name: String,
        value: Option<Word>,
    },
    Word(Word),
}

/// Splits a line into words and parameters, PowerShell style.
fn tokenize(line: &str) -> Result<Vec<Token>, CmdletError> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut text = String::new();
        let mut quoted = false;
        // Where the parameter name ends (`-Name:value`), and whether the leading '-' was bare.
        let mut first_bare = None;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' => {
                    quoted = true;
                    first_bare.get_or_insert(false);
                    loop {
                        match chars.next() {
                            None => {
                                return Err(CmdletError::Syntax(format!(
                                    "the string starting at `\"{text}` has no closing \""
                                )))
                            }
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                text.push('"');
                            }
                            Some('"') => break,
                            Some('`') => match chars.next() {
                                Some('n') => text.push('\n'),
                                Some('t') => text.push('\t'),
                                Some(e) => text.push(e),
                                None => {}
                            },
                            Some(ch) => text.push(ch),
                        }
                    }
                }
                '\'' => {
                    quoted = true;
                    first_bare.get_or_insert(false);
                    loop {
                        match chars.next() {
                            None => {
                                return Err(CmdletError::Syntax(format!(
                                    "the string starting at `'{text}` has no closing '"
                                )))
                            }
                            Some('\'') if chars.peek() == Some(&'\'') => {
                                chars.next();
                                text.push('\'');
                            }
                            Some('\'') => break,
                            Some(ch) => text.push(ch),
                        }
                    }
                }
                '`' => {
                    first_bare.get_or_insert(true);
                    if let Some(e) = chars.next() {
                        text.push(e);
                    }
                }
                _ => {
                    first_bare.get_or_insert(true);
                    text.push(c);
                }
            }
        }
        let is_param = first_bare == Some(true)
            && text.starts_with('-')
            && text[1..].starts_with(|c: char| c.is_ascii_alphabetic());
        if is_param {
            let body = &text[1..];
            let (name, value) = match body.split_once(':') {
                Some((n, v)) => (
                    n.to_string(),
                    Some(Word {
                        text: v.to_string(),
                        quoted,
                    }),
                ),
                None => (body.to_string(), None),
            };
            out.push(Token::Param { name, value });
        } else {
            out.push(Token::Word(Word { text, quoted }));
        }
    }
}

// === cmdlets and their parameters ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    New,
    Set,
    Remove,
    Grant,
    Test,
    Move,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Noun {
    AccessEdgeConfiguration,
    PublicProvider,
    HostingProvider,
    AllowedDomain,
    BlockedDomain,
    ExternalAccessPolicy,
    FederatedPartner,
    LabContactList,
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cmdlet {
    verb: Verb,
    noun: Noun,
}

/// How a parameter's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Any text; `$null` clears.
    Text,
    /// A DNS name, lowercased; `$null` clears.
    Fqdn,
    /// An allowed domain's ProxyFqdn: a DNS name with an optional `:port`.
    ProxyFqdn,
    /// Comma-separated DNS names; `$null` empties.
    List,
    /// Comma-separated SIP addresses (`config::contact`); `$null` empties.
    Contacts,
    /// An absolute http(s) URL (`config::http_url`); `$null` clears.
    Url,
    Bool,
    /// Present means true; `-Name:$false` means false.
    Switch,
    Level,
    /// An integer in an inclusive range.
    Number(u32, u32),
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    name: &'static str,
    kind: Kind,
}

const fn p(name: &'static str, kind: Kind) -> Spec {
    Spec { name, kind }
}

const IDENTITY: Spec = p("Identity", Kind::Text);
const GET: &[Spec] = &[IDENTITY, p("Filter", Kind::Text)];
const REMOVE: &[Spec] = &[
    IDENTITY,
    p("Force", Kind::Switch),
    p("Confirm", Kind::Switch),
];
const PUBLIC: &[Spec] = &[
    IDENTITY,
    p("ProxyFqdn", Kind::Fqdn),
    p("Enabled", Kind::Bool),
    p("VerificationLevel", Kind::Level),
    p("IconUrl", Kind::Url),
    p("NameDecorationDomain", Kind::Fqdn),
    p("NameDecorationRoutingDomain", Kind::Fqdn),
    p("NameDecorationExcludedDomainList", Kind::List),
];
const HOSTING_NEW: &[Spec] = &[
    IDENTITY,
    p("ProxyFqdn", Kind::ProxyFqdn),
    p("Enabled", Kind::Bool),
    p("EnabledSharedAddressSpace", Kind::Bool),
    p("HostsOCSUsers", Kind::Bool),
    p("IsLocal", Kind::Bool),
    p("VerificationLevel", Kind::Level),
    p("AutodiscoverUrl", Kind::Url),
    p("SipClientPort", Kind::Number(1, 65535)),
];
/// ProxyFqdn of a hosting provider cannot be changed in place (remove and re-create).
const HOSTING_SET: &[Spec] = &[
    IDENTITY,
    p("Enabled", Kind::Bool),
    p("EnabledSharedAddressSpace", Kind::Bool),
    p("HostsOCSUsers", Kind::Bool),
    p("IsLocal", Kind::Bool),
    p("VerificationLevel", Kind::Level),
    p("AutodiscoverUrl", Kind::Url),
    p("SipClientPort", Kind::Number(1, 65535)),
];
const ALLOWED_NEW: &[Spec] = &[
    IDENTITY,
    p("Domain", Kind::Fqdn),
    p("ProxyFqdn", Kind::ProxyFqdn),
    p("Comment", Kind::Text),
    p("MarkForMonitoring", Kind::Bool),
    p("VerificationLevel", Kind::Level),
];
const ALLOWED_SET: &[Spec] = &[
    IDENTITY,
    p("ProxyFqdn", Kind::ProxyFqdn),
    p("Comment", Kind::Text),
    p("MarkForMonitoring", Kind::Bool),
    p("VerificationLevel", Kind::Level),
];
const BLOCKED_NEW: &[Spec] = &[IDENTITY, p("Domain", Kind::Fqdn), p("Comment", Kind::Text)];
const BLOCKED_SET: &[Spec] = &[IDENTITY, p("Comment", Kind::Text)];
/// sipedge only: a lab user's simulated contact list (no product cmdlet holds it; the
/// product reads it from the user's client).
const CONTACTS_SET: &[Spec] = &[IDENTITY, p("Contacts", Kind::Contacts)];
const POLICY: &[Spec] = &[
    IDENTITY,
    p("EnableFederationAccess", Kind::Bool),
    p("EnablePublicCloudAccess", Kind::Bool),
    p("EnablePublicCloudAudioVideoAccess", Kind::Bool),
    p("EnableOutsideAccess", Kind::Bool),
    p("EnableXmppAccess", Kind::Bool),
    p("Description", Kind::Text),
];
const GRANT: &[Spec] = &[IDENTITY, p("PolicyName", Kind::Text)];
const TEST_PARTNER: &[Spec] = &[p("Domain", Kind::Fqdn)];
/// Move-CsUser: `-Target` is a hosting provider's ProxyFqdn (homed online) or one of our
/// pools (homed on-premises).
const MOVE_USER: &[Spec] = &[IDENTITY, p("Target", Kind::Fqdn)];
const EDGE_GET: &[Spec] = &[IDENTITY];
const EDGE_SET: &[Spec] = &[
    IDENTITY,
    p("AllowFederatedUsers", Kind::Bool),
    p("AllowOutsideUsers", Kind::Bool),
    p("AllowAnonymousUsers", Kind::Bool),
    p("EnablePartnerDiscovery", Kind::Bool),
    p("UseDnsSrvRouting", Kind::Switch),
    p("UseDefaultRouting", Kind::Switch),
    p("DefaultRouteFqdn", Kind::Text),
    p("IsPublicProvider", Kind::Bool),
    p("VerificationLevel", Kind::Level),
    p("DiscoveredPartnerVerificationLevel", Kind::Level),
    p("DiscoveredPartnerStandardRate", Kind::Number(1, 1_000_000)),
    p("EnableDiscoveredPartnerContactsLimit", Kind::Bool),
    p(
        "MaxContactsPerDiscoveredPartner",
        Kind::Number(1, 1_000_000),
    ),
    p(
        "DiscoveredPartnerReportPeriodMinutes",
        Kind::Number(1, 1_000_000),
    ),
    p("MarkSourceVerifiableOnOutgoingMessages", Kind::Bool),
    p("OutgoingTlsCountForFederatedPartners", Kind::Number(1, 4)),
    p("DnsSrvCacheRecordCount", Kind::Number(1, 10_000_000)),
];

impl Cmdlet {
    const ALL: &'static [Cmdlet] = &{
        use Noun::*;
        use Verb::*;
        const fn c(verb: Verb, noun: Noun) -> Cmdlet {
            Cmdlet { verb, noun }
        }
        [
            c(Get, AccessEdgeConfiguration),
            c(Set, AccessEdgeConfiguration),
            c(Get, PublicProvider),
            c(New, PublicProvider),
            c(Set, PublicProvider),
            c(Remove, PublicProvider),
            c(Get, HostingProvider),
            c(New, HostingProvider),
            c(Set, HostingProvider),
            c(Remove, HostingProvider),
            c(Get, AllowedDomain),
            c(New, AllowedDomain),
            c(Set, AllowedDomain),
            c(Remove, AllowedDomain),
            c(Get, BlockedDomain),
            c(New, BlockedDomain),
            c(Set, BlockedDomain),
            c(Remove, BlockedDomain),
            c(Get, ExternalAccessPolicy),
            c(New, ExternalAccessPolicy),
            c(Set, ExternalAccessPolicy),
            c(Remove, ExternalAccessPolicy),
            c(Grant, ExternalAccessPolicy),
            c(Test, FederatedPartner),
            c(Get, LabContactList),
            c(Set, LabContactList),
            c(Get, User),
            c(Move, User),
        ]
    };

    fn name(&self) -> String {
        self.to_string()
    }

    fn find(name: &str) -> Option<Cmdlet> {
        Cmdlet::ALL
            .iter()
            .copied()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    fn specs(&self) -> &'static [Spec] {
        use Noun::*;
        use Verb::*;
        match (self.verb, self.noun) {
            (Get, AccessEdgeConfiguration) => EDGE_GET,
            (Set, AccessEdgeConfiguration) => EDGE_SET,
            (Get, _) => GET,
            (Remove, _) => REMOVE,
            (New | Set, PublicProvider) => PUBLIC,
            (New, HostingProvider) => HOSTING_NEW,
            (Set, HostingProvider) => HOSTING_SET,
            (New, AllowedDomain) => ALLOWED_NEW,
            (Set, AllowedDomain) => ALLOWED_SET,
            (New, BlockedDomain) => BLOCKED_NEW,
            (Set, BlockedDomain) => BLOCKED_SET,
            (Set, LabContactList) => CONTACTS_SET,
            (New | Set, ExternalAccessPolicy) => POLICY,
            (Grant, ExternalAccessPolicy) => GRANT,
            (Test, FederatedPartner) => TEST_PARTNER,
            (Move, User) => MOVE_USER,
            _ => &[],
        }
    }

    /// Parameters that may be given without their name, in order.
    fn positional(&self) -> &'static [&'static str] {
        if self.verb == Verb::Grant {
            &["Identity", "PolicyName"]
        } else if self.verb == Verb::Test {
            &["Domain"]
        } else {
            &["Identity"]
        }
    }

    fn refused(&self, message: impl Into<String>) -> CmdletError {
        CmdletError::Refused {
            cmdlet: self.name(),
            message: message.into(),
        }
    }

    fn missing(&self, param: &str) -> CmdletError {
        CmdletError::MissingParameter {
            cmdlet: self.name(),
            param: param.to_string(),
        }
    }
}

impl fmt::Display for Cmdlet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.verb {
            Verb::Get => "Get",
            Verb::New => "New",
            Verb::Set => "Set",
            Verb::Remove => "Remove",
            Verb::Grant => "Grant",
            Verb::Test => "Test",
            Verb::Move => "Move",
        };
        let noun = match self.noun {
            Noun::AccessEdgeConfiguration => "CsAccessEdgeConfiguration",
            Noun::PublicProvider => "CsPublicProvider",
            Noun::HostingProvider => "CsHostingProvider",
            Noun::AllowedDomain => "CsAllowedDomain",
            Noun::BlockedDomain => "CsBlockedDomain",
            Noun::ExternalAccessPolicy => "CsExternalAccessPolicy",
            Noun::FederatedPartner => "CsFederatedPartner",
            Noun::LabContactList => "CsLabContactList",
            Noun::User => "CsUser",
        };
        write!(f, "{verb}-{noun}")
    }
}

// === binding ===

/// A typed parameter value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Bool(bool),
    Level(VerificationLevel),
    Number(u32),
    List(Vec<String>),
    /// `$null`: clear an optional value.
    Null,
}

/// The parameters of one call, by their canonical names.
#[derive(Debug, Default)]
struct Args {
    values: Vec<(&'static str, Value)>,
}

impl Args {
    fn get(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn text(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        }
    }

    /// `Some(None)` when cleared with `$null`.
    fn opt_text(&self, name: &str) -> Option<Option<String>> {
        match self.get(name)? {
            Value::Text(t) => Some(Some(t.clone())),
            _ => Some(None),
        }
    }

    fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    fn level(&self, name: &str) -> Option<VerificationLevel> {
        match self.get(name) {
            Some(Value::Level(l)) => Some(*l),
            _ => None,
        }
    }

    fn number(&self, name: &str) -> Option<u32> {
        match self.get(name) {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        }
    }

    fn list(&self, name: &str) -> Option<Vec<String>> {
        match self.get(name)? {
            Value::List(l) => Some(l.clone()),
            _ => Some(Vec::new()),
        }
    }
}

fn bind(cmd: Cmdlet, tokens: &[Token]) -> Result<Args, CmdletError> {
    let specs = cmd.specs();
    let mut args = Args::default();
    let mut positional = cmd.positional().iter();
    let mut it = tokens.iter();
    while let Some(t) = it.next() {
        let (spec, word) = match t {
            Token::Param { name, value } => {
                let spec = resolve(cmd, specs, name)?;
                let word = match (spec.kind, value) {
                    (_, Some(v)) => Some(v.clone()),
                    (Kind::Switch, None) => None,
                    (_, None) => match it.next() {
                        Some(Token::Word(w)) => Some(w.clone()),
                        _ => {
                            return Err(CmdletError::Syntax(format!(
                                "{cmd}: -{} needs a value",
                                spec.name
                            )))
                        }
                    },
                };
                (spec, word)
            }
            Token::Word(w) => {
                let Some(name) = positional.next() else {
                    return Err(CmdletError::Syntax(format!(
                        "{cmd}: `{}` is not a parameter value; name the parameter, e.g. -Identity",
                        w.text
                    )));
                };
                let spec = specs
                    .iter()
                    .find(|s| s.name == *name)
                    .copied()
                    .unwrap_or(IDENTITY);
                (spec, Some(w.clone()))
            }
        };
        if args.has(spec.name) {
            return Err(CmdletError::Syntax(format!(
                "{cmd}: -{} is given twice",
                spec.name
            )));
        }
        let value = typed(cmd, spec, word.as_ref())?;
        args.values.push((spec.name, value));
    }
    Ok(args)
}

/// The parameter `name` (any case, or an unambiguous prefix) names.
fn resolve(cmd: Cmdlet, specs: &[Spec], name: &str) -> Result<Spec, CmdletError> {
    if let Some(s) = specs.iter().find(|s| s.name.eq_ignore_ascii_case(name)) {
        return Ok(*s);
    }
    let lower = name.to_ascii_lowercase();
    let matches: Vec<&Spec> = specs
        .iter()
        .filter(|s| s.name.to_ascii_lowercase().starts_with(&lower))
        .collect();
    match matches.as_slice() {
        [one] => Ok(**one),
        _ => Err(CmdletError::UnknownParameter {
            cmdlet: cmd.name(),
            param: name.to_string(),
            valid: if matches.is_empty() {
                specs.iter().map(|s| s.name.to_string()).collect()
            } else {
                matches.iter().map(|s| s.name.to_string()).collect()
            },
        }),
    }
}

fn typed(cmd: Cmdlet, spec: Spec, word: Option<&Word>) -> Result<Value, CmdletError> {
    let invalid = |message: String| CmdletError::Invalid {
        cmdlet: cmd.name(),
        param: spec.name.to_string(),
        message,
    };
    let bad = |value: &str, expected: &str| CmdletError::BadValue {
        cmdlet: cmd.name(),
        param: spec.name.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    };
    let Some(w) = word else {
        return Ok(Value::Bool(true));
    };
    let text = w.text.trim();
    let lower = text.to_ascii_lowercase();
    let variable = !w.quoted && text.starts_with('$');
    if variable && lower == "$null" {
        return match spec.kind {
            Kind::Text | Kind::Fqdn | Kind::ProxyFqdn | Kind::List | Kind::Contacts | Kind::Url
                if spec.name != "Identity" =>
            {
                Ok(Value::Null)
            }
            _ => Err(bad(text, "a value; $null only clears optional text")),
        };
    }
    const BOOL: &str = "$true or $false (also True/False, 1/0)";
    let boolean = || match lower.as_str() {
        "$true" | "true" | "1" => Some(true),
        "$false" | "false" | "0" => Some(false),
        _ => None,
    };
    if variable && boolean().is_none() {
        return Err(bad(
            text,
            "a literal value; variables other than $true, $false and $null are not supported",
        ));
    }
    match spec.kind {
        Kind::Bool | Kind::Switch => boolean().map(Value::Bool).ok_or_else(|| bad(text, BOOL)),
        Kind::Level => VerificationLevel::parse(text)
            .map(Value::Level)
            .ok_or_else(|| {
                bad(
                    text,
                    "AlwaysVerifiable (0), AlwaysUnverifiable (1) or UseSourceVerification (2)",
                )
            }),
        Kind::Number(min, max) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .map(Value::Number)
            .ok_or_else(|| bad(text, &format!("a whole number from {min} to {max}"))),
        Kind::ProxyFqdn => crate::config::split_proxy_fqdn(text)
            .map_err(|e| bad(text, &e))
            .and_then(|(host, port)| {
                let host = dns_name(host).ok_or_else(|| {
                    bad(
                        text,
                        "a DNS name with an optional port, e.g. sip.fabrikam.test:5071",
                    )
                })?;
                Ok(Value::Text(match port {
                    crate::config::FEDERATION_PORT => host,
                    port => format!("{host}:{port}"),
                }))
            }),
        Kind::Fqdn => dns_name(text)
            .map(Value::Text)
            .ok_or_else(|| bad(text, "a DNS name, e.g. sip.fabrikam.test")),
        Kind::List => text
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| {
                dns_name(d)
                    .ok_or_else(|| bad(d, "comma-separated DNS names, e.g. \"msn.com,live.com\""))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List),
        Kind::Contacts => text
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| crate::config::contact(c).map_err(invalid))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List),
        Kind::Url => crate::config::http_url(text)
            .map(Value::Text)
            .map_err(invalid),
        Kind::Text => {
            let t = match lower.as_str() {
                "$true" => "True",
                "$false" => "False",
                _ => text,
            };
            if spec.name == "Identity" && t.is_empty() {
                return Err(bad(t, "a non-empty Identity"));
            }
            Ok(Value::Text(t.to_string()))
        }
    }
}

/// A DNS name as the config loader takes it (`config::values::dns_name`): `-Domain`,
/// `-ProxyFqdn`…, and the argument of `sipedge check-partner`.
pub fn dns_name(s: &str) -> Option<String> {
    crate::config::values::dns_name(s).ok()
}

// === Get-* ===

/// `*` wildcard match, case-insensitive (`-Filter`).
fn glob(pattern: &str, text: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let t = text.to_ascii_lowercase();
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let mut rest = t.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

fn get(cmd: Cmdlet, fed: &Federation, args: &Args) -> Result<String, CmdletError> {
    let identity = args.text("Identity");
    let filter = args.text("Filter");
    let wanted = |id: &str| {
        identity.is_none_or(|i| i.eq_ignore_ascii_case(id)) && filter.is_none_or(|f| glob(f, id))
    };
    let blocks: Vec<Block> = match cmd.noun {
        Noun::AccessEdgeConfiguration => {
            if let Some(i) = identity.filter(|i| !i.eq_ignore_ascii_case("global")) {
                return Err(
                    cmd.refused(format!("`{i}` does not exist; the only Identity is global"))
                );
            }
            vec![access_edge_block(fed)]
        }
        Noun::PublicProvider => fed
            .public_providers
            .iter()
            .filter(|p| wanted(&p.identity))
            .map(public_block)
            .collect(),
        Noun::HostingProvider => fed
            .hosting_providers
            .iter()
            .filter(|p| wanted(&p.identity))
            .map(hosting_block)
            .collect(),
        Noun::AllowedDomain => fed
            .allowed_domains
            .iter()
            .filter(|d| wanted(&d.domain))
            .map(allowed_block)
            .collect(),
        Noun::BlockedDomain => fed
            .blocked_domains
            .iter()
            .filter(|d| wanted(&d.domain))
            .map(blocked_block)
            .collect(),
        Noun::LabContactList => fed
            .users
            .iter()
            .filter(|g| {
                !g.contacts.is_empty()
                    && identity.is_none_or(|i| crate::config::sip_address(i) == g.user)
                    && filter.is_none_or(|f| glob(f, &g.user))
            })
            .map(|g| {
                vec![
                    ("Identity", g.user.clone()),
                    ("Contacts", format!("{{{}}}", g.contacts.join(", "))),
                ]
            })
            .collect(),
        Noun::User => fed
            .users
            .iter()
            .filter(|g| identity.is_none_or(|i| same_user(&user_name(i), &g.user)))
            .filter(|g| filter.is_none_or(|f| glob(f, &g.user)))
            .map(user_block)
            .collect(),
        Noun::ExternalAccessPolicy => {
            let scope = identity.map(|i| policy_scope(cmd, i)).transpose()?;
            fed.external_access_policies
                .iter()
                .filter(|p| {
                    scope
                        .as_ref()
                        .is_none_or(|s| *s == p.scope || scope_eq(s, &p.scope))
                })
                .filter(|p| filter.is_none_or(|f| glob(f, &policy_identity(&p.scope))))
                .map(policy_block)
                .collect()
        }
        // A test, not an object: there is nothing to list.
        Noun::FederatedPartner => Vec::new(),
    };
    if blocks.is_empty() {
        if let Some(i) = identity {
            return Err(cmd.refused(format!(
                "`{i}` does not exist; existing identities: {}",
                existing(cmd.noun, fed)
            )));
        }
    }
    Ok(render(&blocks))
}

fn scope_eq(a: &PolicyScope, b: &PolicyScope) -> bool {
    match (a, b) {
        (PolicyScope::Global, PolicyScope::Global) => true,
        (PolicyScope::Site(x), PolicyScope::Site(y))
        | (PolicyScope::Tag(x), PolicyScope::Tag(y)) => x.eq_ignore_ascii_case(y),
        _ => false,
    }
}

/// One object: property names and values, in the order PowerShell lists them.
type Block = Vec<(&'static str, String)>;

/// Format-List output: `Name : value`, names padded to the longest, a blank line between
/// objects.
fn render(blocks: &[Block]) -> String {
    let mut out = String::new();
    for (i, b) in blocks.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let width = b.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (n, v) in b {
            let line = format!("{n:<width$} : {v}");
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

fn yes(b: bool) -> String {
    if b { "True" } else { "False" }.to_string()
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

fn public_block(p: &PublicProvider) -> Block {
    vec![
        ("Identity", p.identity.clone()),
        ("Name", p.identity.clone()),
        ("ProxyFqdn", p.proxy_fqdn.clone()),
        ("IconUrl", opt(&p.icon_url)),
        ("NameDecorationDomain", opt(&p.name_decoration_domain)),
        (
            "NameDecorationRoutingDomain",
            opt(&p.name_decoration_routing_domain),
        ),
        (
            "NameDecorationExcludedDomainList",
            if p.name_decoration_excluded_domain_list.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", p.name_decoration_excluded_domain_list.join(", "))
            },
        ),
        ("Enabled", yes(p.enabled)),
        ("VerificationLevel", p.verification_level.to_string()),
    ]
}

fn hosting_block(p: &HostingProvider) -> Block {
    vec![
        ("Identity", p.identity.clone()),
        ("Name", p.identity.clone()),
        ("ProxyFqdn", p.proxy_fqdn_text()),
        ("VerificationLevel", p.verification_level.to_string()),
        ("Enabled", yes(p.enabled)),
        (
            "EnabledSharedAddressSpace",
            yes(p.enabled_shared_address_space),
        ),
        ("HostsOCSUsers", yes(p.hosts_ocs_users)),
        ("IsLocal", yes(p.is_local)),
        ("AutodiscoverUrl", opt(&p.autodiscover_url)),
        ("SipClientPort", p.sip_client_port.to_string()),
    ]
}

/// A user as Get-CsUser prints the parts sipedge models: HostingProvider `SRV:` means the
/// on-premises pool.
fn user_block(g: &UserGrant) -> Block {
    vec![
        ("Identity", g.user.clone()),
        ("SipAddress", format!("sip:{}", g.user)),
        (
            "HostingProvider",
            g.hosting_provider.clone().unwrap_or_else(|| "SRV:".into()),
        ),
        ("ExternalAccessPolicy", opt(&g.policy)),
        ("Site", opt(&g.site)),
    ]
}

fn allowed_block(d: &AllowedDomain) -> Block {
    vec![
        ("Identity", d.domain.clone()),
        ("Domain", d.domain.clone()),
        ("ProxyFqdn", opt(&d.proxy_fqdn_text())),
        ("Comment", opt(&d.comment)),
        ("MarkForMonitoring", yes(d.mark_for_monitoring)),
        ("VerificationLevel", d.verification_level.to_string()),
    ]
}

fn blocked_block(d: &BlockedDomain) -> Block {
    vec![
        ("Identity", d.domain.clone()),
        ("Domain", d.domain.clone()),
        ("Comment", opt(&d.comment)),
    ]
}

/// `Global`, `Site:Paris`, `Tag:NoPublicCloud`: the Identity PowerShell prints.
fn policy_identity(s: &PolicyScope) -> String {
    match s {
        PolicyScope::Global => "Global".into(),
        PolicyScope::Site(n) => format!("Site:{n}"),
        PolicyScope::Tag(n) => format!("Tag:{n}"),
    }
}

fn policy_block(p: &ExternalAccessPolicy) -> Block {
    vec![
        ("Identity", policy_identity(&p.scope)),
        ("Description", opt(&p.description)),
        ("EnableFederationAccess", yes(p.enable_federation_access)),
        ("EnableXmppAccess", yes(p.enable_xmpp_access)),
        ("EnablePublicCloudAccess", yes(p.enable_public_cloud_access)),
        (
            "EnablePublicCloudAudioVideoAccess",
            yes(p.enable_public_cloud_audio_video_access),
        ),
        ("EnableOutsideAccess", yes(p.enable_outside_access)),
    ]
}

fn access_edge_block(fed: &Federation) -> Block {
    let ae = &fed.access_edge;
    let mut b = vec![
        ("Identity", "Global".to_string()),
        ("AllowAnonymousUsers", yes(ae.allow_anonymous_users)),
        ("AllowFederatedUsers", yes(ae.allow_federated_users)),
        ("AllowOutsideUsers", yes(ae.allow_outside_users)),
        ("EnablePartnerDiscovery", yes(ae.enable_partner_discovery)),
        (
            "DiscoveredPartnerVerificationLevel",
            ae.discovered_partner_verification_level.to_string(),
        ),
        (
            "DiscoveredPartnerStandardRate",
            ae.discovered_partner_standard_rate.to_string(),
        ),
        (
            "EnableDiscoveredPartnerContactsLimit",
            yes(ae.enable_discovered_partner_contacts_limit),
        ),
        (
            "MaxContactsPerDiscoveredPartner",
            ae.max_contacts_per_discovered_partner.to_string(),
        ),
        (
            "DiscoveredPartnerReportPeriodMinutes",
            ae.discovered_partner_report_period_minutes.to_string(),
        ),
        (
            "MarkSourceVerifiableOnOutgoingMessages",
            yes(ae.mark_source_verifiable_on_outgoing_messages),
        ),
        (
            "OutgoingTlsCountForFederatedPartners",
            ae.outgoing_tls_count_for_federated_partners.to_string(),
        ),
        (
            "DnsSrvCacheRecordCount",
            ae.dns_srv_cache_record_count.to_string(),
        ),
    ];
    match &ae.routing {
        FederationRouting::DnsSrv => b.push(("RoutingMethod", "UseDnsSrvRouting".into())),
        FederationRouting::DefaultRoute {
            fqdn,
            port,
            verification_level,
            is_public_provider,
        } => {
            b.push(("RoutingMethod", "UseDefaultRouting".into()));
            b.push((
                "DefaultRouteFqdn",
                if *port == 5061 {
                    fqdn.clone()
                } else {
                    format!("{fqdn}:{port}")
                },
            ));
            b.push(("IsPublicProvider", yes(*is_public_provider)));
            b.push(("VerificationLevel", verification_level.to_string()));
        }
    }
    b
}

/// The identities that exist, for "does not exist" messages.
fn existing(noun: Noun, fed: &Federation) -> String {
    let names: Vec<String> = match noun {
        Noun::AccessEdgeConfiguration => vec!["global".into()],
        Noun::PublicProvider => fed
            .public_providers
            .iter()
            .map(|p| p.identity.clone())
            .collect(),
        Noun::HostingProvider => fed
            .hosting_providers
            .iter()
            .map(|p| p.identity.clone())
            .collect(),
        Noun::AllowedDomain => fed
            .allowed_domains
            .iter()
            .map(|d| d.domain.clone())
            .collect(),
        Noun::BlockedDomain => fed
            .blocked_domains
            .iter()
            .map(|d| d.domain.clone())
            .collect(),
        Noun::ExternalAccessPolicy => fed
            .external_access_policies
            .iter()
            .map(|p| policy_identity(&p.scope))
            .collect(),
        Noun::FederatedPartner => Vec::new(),
        Noun::LabContactList => fed
            .users
            .iter()
            .filter(|g| !g.contacts.is_empty())
            .map(|g| g.user.clone())
            .collect(),
        Noun::User => fed.users.iter().map(|g| g.user.clone()).collect(),
    };
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

// === New / Set / Remove / Grant ===

fn policy_scope(cmd: Cmdlet, identity: &str) -> Result<PolicyScope, CmdletError> {
    PolicyScope::parse(identity).ok_or_else(|| CmdletError::BadValue {
        cmdlet: cmd.name(),
        param: "Identity".into(),
        value: identity.into(),
        expected: "global, site:<name> or a tag name".into(),
    })
}

fn change(
    cmd: Cmdlet,
    fed: &mut Federation,
    local_domains: &[String],
    args: &Args,
) -> Result<(), CmdletError> {
    if cmd.noun == Noun::AccessEdgeConfiguration {
        return set_access_edge(cmd, fed, args);
    }
    let identity = match (args.text("Identity"), args.text("Domain")) {
        (Some(i), _) => i.to_string(),
        (None, Some(d)) if cmd.verb == Verb::New => d.to_string(),
        _ => return Err(cmd.missing("Identity")),
    };
    let not_found = |fed: &Federation| {
        cmd.refused(format!(
            "cannot find `{identity}`; existing identities: {}",
            existing(cmd.noun, fed)
        ))
    };
    let exists = || cmd.refused(format!("`{identity}` already exists"));
    match (cmd.verb, cmd.noun) {
        (Verb::Remove, Noun::ExternalAccessPolicy) => {
            let scope = policy_scope(cmd, &identity)?;
            let Some(i) = fed
                .external_access_policies
                .iter()
                .position(|p| scope_eq(&p.scope, &scope))
            else {
                return Err(not_found(fed));
            };
            if scope == PolicyScope::Global {
                // The global policy cannot be deleted; removing it resets it.
                fed.external_access_policies[i] = ExternalAccessPolicy::closed(PolicyScope::Global);
            } else {
                fed.external_access_policies.remove(i);
            }
        }
        (Verb::Remove, noun) => {
            let before = count(noun, fed);
            match noun {
                Noun::PublicProvider => fed.public_providers.retain(|p| !p.is(&identity)),
                Noun::HostingProvider => fed.hosting_providers.retain(|p| !p.is(&identity)),
                Noun::AllowedDomain => fed.allowed_domains.retain(|d| !d.is(&identity)),
                Noun::BlockedDomain => fed.blocked_domains.retain(|d| !d.is(&identity)),
                _ => {}
            }
            if count(noun, fed) == before {
                return Err(not_found(fed));
            }
        }
        (Verb::New, Noun::PublicProvider) => {
            if fed.public_providers.iter().any(|p| p.is(&identity)) {
                return Err(exists());
            }
            let proxy_fqdn = args
                .text("ProxyFqdn")
                .ok_or_else(|| cmd.missing("ProxyFqdn"))?;
            let enabled = args.bool("Enabled").ok_or_else(|| cmd.missing("Enabled"))?;
            let mut p = PublicProvider {
                identity: identity.clone(),
                proxy_fqdn: proxy_fqdn.to_string(),
                verification_level: VerificationLevel::AlwaysVerifiable,
                enabled,
                icon_url: None,
                name_decoration_domain: None,
                name_decoration_routing_domain: None,
                name_decoration_excluded_domain_list: Vec::new(),
            };
            set_public(&mut p, args);
            fed.public_providers.push(p);
        }
        (Verb::Set, Noun::PublicProvider) => {
            let Some(p) = named(&mut fed.public_providers, &identity) else {
                return Err(not_found(fed));
            };
            set_public(p, args);
        }
        (Verb::New, Noun::HostingProvider) => {
            if fed.hosting_providers.iter().any(|p| p.is(&identity)) {
                return Err(exists());
            }
            let proxy_fqdn = args
                .text("ProxyFqdn")
                .ok_or_else(|| cmd.missing("ProxyFqdn"))?;
            let enabled = args.bool("Enabled").ok_or_else(|| cmd.missing("Enabled"))?;
            let mut p = HostingProvider {
                identity: identity.clone(),
                proxy_fqdn: proxy_fqdn.to_string(),
                proxy_port: crate::config::FEDERATION_PORT,
                enabled,
                enabled_shared_address_space: false,
                hosts_ocs_users: false,
                is_local: false,
                verification_level: VerificationLevel::AlwaysVerifiable,
                autodiscover_url: None,
                sip_client_port: 443,
            };
            set_hosting(&mut p, args);
            fed.hosting_providers.push(p);
        }
        (Verb::Set, Noun::HostingProvider) => {
            let Some(p) = named(&mut fed.hosting_providers, &identity) else {
                return Err(not_found(fed));
            };
            set_hosting(p, args);
        }
        (Verb::New, Noun::AllowedDomain) => {
            let domain = domain_identity(cmd, &identity, args)?;
            if fed.allowed(&domain).is_some() {
                return Err(exists());
            }
            let mut d = AllowedDomain {
                domain,
                proxy_fqdn: None,
                proxy_port: crate::config::FEDERATION_PORT,
                verification_level: VerificationLevel::UseSourceVerification,
                mark_for_monitoring: false,
                comment: None,
            };
            set_allowed(&mut d, args);
            fed.allowed_domains.push(d);
        }
        (Verb::Set, Noun::AllowedDomain) => {
            let Some(d) = named(&mut fed.allowed_domains, &identity) else {
                return Err(not_found(fed));
            };
            set_allowed(d, args);
        }
        (Verb::Set, Noun::BlockedDomain) => {
            let Some(d) = named(&mut fed.blocked_domains, &identity) else {
                return Err(not_found(fed));
            };
            if let Some(v) = args.opt_text("Comment") {
                d.comment = v;
            }
        }
        (Verb::Set, Noun::LabContactList) => {
            set_contacts(cmd, fed, local_domains, &identity, args)?
        }
        (Verb::New, Noun::BlockedDomain) => {
            let domain = domain_identity(cmd, &identity, args)?;
            if fed.blocked(&domain).is_some() {
                return Err(exists());
            }
            fed.blocked_domains.push(BlockedDomain {
                domain,
                comment: args.opt_text("Comment").flatten(),
            });
        }
        (Verb::New, Noun::ExternalAccessPolicy) => {
            let scope = policy_scope(cmd, &identity)?;
            if fed.policy(&scope).is_some() {
                return Err(cmd.refused(format!(
                    "`{}` already exists; use Set-CsExternalAccessPolicy",
                    policy_identity(&scope)
                )));
            }
            let mut p = ExternalAccessPolicy::closed(scope);
            set_policy(cmd, &mut p, args)?;
            fed.external_access_policies.push(p);
        }
        (Verb::Set, Noun::ExternalAccessPolicy) => {
            let scope = policy_scope(cmd, &identity)?;
            let Some(p) = fed
                .external_access_policies
                .iter_mut()
                .find(|p| scope_eq(&p.scope, &scope))
            else {
                return Err(not_found(fed));
            };
            set_policy(cmd, p, args)?;
        }
        (Verb::Grant, Noun::ExternalAccessPolicy) => {
            grant(cmd, fed, local_domains, &identity, args)?
        }
        _ => return Err(cmd.refused("not supported")),
    }
    Ok(())
}

fn count(noun: Noun, fed: &Federation) -> usize {
    match noun {
        Noun::PublicProvider => fed.public_providers.len(),
        Noun::HostingProvider => fed.hosting_providers.len(),
        Noun::AllowedDomain => fed.allowed_domains.len(),
        Noun::BlockedDomain => fed.blocked_domains.len(),
        _ => fed.external_access_policies.len(),
    }
}

/// The domain of New-CsAllowedDomain / New-CsBlockedDomain: -Identity or -Domain (equal
/// when both are given).
fn domain_identity(cmd: Cmdlet, identity: &str, args: &Args) -> Result<String, CmdletError> {
    let bad = || CmdletError::BadValue {
        cmdlet: cmd.name(),
        param: "Identity".into(),
        value: identity.into(),
        expected: "a DNS domain, e.g. fabrikam.com".into(),
    };
    let domain = dns_name(identity).ok_or_else(bad)?;
    if let Some(d) = args.text("Domain") {
        if !d.eq_ignore_ascii_case(&domain) {
            return Err(cmd.refused(format!(
                "-Identity `{identity}` and -Domain `{d}` differ; give one of them"
            )));
        }
    }
    Ok(domain)
}

fn set_public(p: &mut PublicProvider, args: &Args) {
    if let Some(f) = args.text("ProxyFqdn") {
        p.proxy_fqdn = f.to_string();
    }
    if let Some(b) = args.bool("Enabled") {
        p.enabled = b;
    }
    if let Some(l) = args.level("VerificationLevel") {
        p.verification_level = l;
    }
    if let Some(v) = args.opt_text("IconUrl") {
        p.icon_url = v;
    }
    if let Some(v) = args.opt_text("NameDecorationDomain") {
        p.name_decoration_domain = v;
    }
    if let Some(v) = args.opt_text("NameDecorationRoutingDomain") {
        p.name_decoration_routing_domain = v;
    }
    if let Some(v) = args.list("NameDecorationExcludedDomainList") {
        p.name_decoration_excluded_domain_list = v;
    }
}

fn set_hosting(p: &mut HostingProvider, args: &Args) {
    // Checked by `Kind::ProxyFqdn` when the arguments were read.
    if let Some(Ok((host, port))) = args.text("ProxyFqdn").map(crate::config::split_proxy_fqdn) {
        p.proxy_fqdn = host.to_string();
        p.proxy_port = port;
    }
    if let Some(b) = args.bool("Enabled") {
        p.enabled = b;
    }
    if let Some(b) = args.bool("EnabledSharedAddressSpace") {
        p.enabled_shared_address_space = b;
    }
    if let Some(b) = args.bool("HostsOCSUsers") {
        p.hosts_ocs_users = b;
    }
    if let Some(b) = args.bool("IsLocal") {
        p.is_local = b;
    }
    if let Some(l) = args.level("VerificationLevel") {
        p.verification_level = l;
    }
    if let Some(v) = args.opt_text("AutodiscoverUrl") {
        p.autodiscover_url = v;
    }
    if let Some(n) = args.number("SipClientPort") {
        p.sip_client_port = n as u16;
    }
}

fn set_allowed(d: &mut AllowedDomain, args: &Args) {
    if let Some(v) = args.opt_text("ProxyFqdn") {
        // Checked by `Kind::ProxyFqdn` when the arguments were read.
        let (host, port) = match v.as_deref().map(crate::config::split_proxy_fqdn) {
            Some(Ok((host, port))) => (Some(host.to_string()), port),
            _ => (None, crate::config::FEDERATION_PORT),
        };
        d.proxy_fqdn = host;
        d.proxy_port = port;
    }
    if let Some(v) = args.opt_text("Comment") {
        d.comment = v;
    }
    if let Some(b) = args.bool("MarkForMonitoring") {
        d.mark_for_monitoring = b;
    }
    if let Some(l) = args.level("VerificationLevel") {
        d.verification_level = l;
    }
}

fn set_policy(cmd: Cmdlet, p: &mut ExternalAccessPolicy, args: &Args) -> Result<(), CmdletError> {
    if let Some(b) = args.bool("EnableXmppAccess") {
        crate::config::xmpp_access(b).map_err(|message| CmdletError::Invalid {
            cmdlet: cmd.name(),
            param: "EnableXmppAccess".into(),
            message,
        })?;
    }
    for (name, field) in [
        ("EnableFederationAccess", &mut p.enable_federation_access),
        ("EnablePublicCloudAccess", &mut p.enable_public_cloud_access),
        (
            "EnablePublicCloudAudioVideoAccess",
            &mut p.enable_public_cloud_audio_video_access,
        ),
        ("EnableOutsideAccess", &mut p.enable_outside_access),
    ] {
        if let Some(b) = args.bool(name) {
            *field = b;
        }
    }
    if let Some(v) = args.opt_text("Description") {
        p.description = v;
    }
    Ok(())
}

/// A user as Grant and Set-CsLabContactList name one: `sip:alice@contoso.test`,
/// `alice@contoso.test` or `alice`, lowercased without the scheme.
fn user_identity(
    cmd: Cmdlet,
    identity: &str,
    local_domains: &[String],
) -> Result<String, CmdletError> {
    UserGrant::parse_user(identity, local_domains).map_err(|e| cmd.refused(e))
}

/// Set-CsLabContactList -Identity <user> -Contacts <addresses | $null>: the simulated
/// contact list an unverified sender must be on to reach the user.
fn set_contacts(
    cmd: Cmdlet,
    fed: &mut Federation,
    local_domains: &[String],
    identity: &str,
    args: &Args,
) -> Result<(), CmdletError> {
    let user = user_identity(cmd, identity, local_domains)?;
    let contacts = args
        .list("Contacts")
        .ok_or_else(|| cmd.missing("Contacts"))?;
    update_user(fed, user, |g| g.contacts = contacts);
    Ok(())
}

/// A user entry with no tag, no site, no contacts and homed on-premises says nothing: it
/// goes.
fn drop_if_empty(users: &mut Vec<UserGrant>, i: usize) {
    let g = &users[i];
    if g.policy.is_none()
        && g.site.is_none()
        && g.contacts.is_empty()
        && g.hosting_provider.is_none()
    {
        users.remove(i);
    }
}

/// Grant-CsExternalAccessPolicy -Identity <user> -PolicyName <tag | $null>.
fn grant(
    cmd: Cmdlet,
    fed: &mut Federation,
    local_domains: &[String],
    identity: &str,
    args: &Args,
) -> Result<(), CmdletError> {
    let user = UserGrant::parse_user(identity, local_domains).map_err(|e| cmd.refused(e))?;
    let tag =
        match args.opt_text("PolicyName") {
            None => return Err(cmd.missing("PolicyName")),
            Some(None) => None,
            Some(Some(name)) => match PolicyScope::parse(&name) {
                Some(PolicyScope::Tag(t)) => {
                    let Some(p) = fed.policy(&PolicyScope::Tag(t.clone())) else {
                        return Err(cmd.refused(format!(
                            "no external access policy `Tag:{t}`; existing: {}",
                            existing(Noun::ExternalAccessPolicy, fed)
                        )));
                    };
                    match &p.scope {
                        PolicyScope::Tag(exact) => Some(exact.clone()),
                        _ => Some(t),
                    }
                }
                _ => return Err(CmdletError::BadValue {
                    cmdlet: cmd.name(),
                    param: "PolicyName".into(),
                    value: name,
                    expected:
                        "a tag policy name or $null (global and site policies apply by themselves)"
                            .into(),
                }),
            },
        };
    update_user(fed, user, |g| g.policy = tag);
    Ok(())
}

/// `sip:alice@contoso.test` → `alice@contoso.test`, lowercase.
fn user_name(identity: &str) -> String {
    crate::config::sip_address(identity)
}

/// Whether a user as typed (`alice@contoso.test` or `alice`) is the grant's user.
fn same_user(typed: &str, granted: &str) -> bool {
    typed == granted || typed.split('@').next() == Some(granted)
}

/// Move-CsUser -Identity <user@one of our domains> -Target <fqdn>: homes the user at the
/// hosting provider whose ProxyFqdn is the target (split domain), or back on-premises when
/// the target is one of our pools (the `[pool]` host, or a name in one of our domains).
fn move_user(cmd: Cmdlet, snap: &mut Snapshot, args: &Args) -> Result<(), CmdletError> {
    let identity = args
        .text("Identity")
        .ok_or_else(|| cmd.missing("Identity"))?;
    let target = args.text("Target").ok_or_else(|| cmd.missing("Target"))?;
    let user = user_name(identity);
    let local = user
        .split_once('@')
        .is_some_and(|(u, h)| !u.is_empty() && snap.is_local_domain(h));
    if !local {
        return Err(CmdletError::BadValue {
            cmdlet: cmd.name(),
            param: "Identity".into(),
            value: identity.into(),
            expected: format!(
                "a user of one of our SIP domains ({}), e.g. sip:dave@{}",
                snap.edge.local_domains.join(", "),
                snap.edge
                    .local_domains
                    .first()
                    .map_or("contoso.test", |d| d.as_str())
            ),
        });
    }
    let fed = &mut snap.federation;
    let home = if let Some(h) = fed.hosting_provider_by_fqdn(target) {
        Some(h.proxy_fqdn.clone())
    } else if target.eq_ignore_ascii_case(&snap.pool.host)
        || target.split_once('.').is_some_and(|(_, d)| {
            snap.edge
                .local_domains
                .iter()
                .any(|l| l.eq_ignore_ascii_case(d))
        })
    {
        None
    } else {
        let providers: Vec<&str> = fed
            .hosting_providers
            .iter()
            .map(|h| h.proxy_fqdn.as_str())
            .collect();
        return Err(CmdletError::BadValue {
            cmdlet: cmd.name(),
            param: "Target".into(),
            value: target.into(),
            expected: format!(
                "a hosting provider's ProxyFqdn ({}) to home the user online, or one of our pools ({} or a name in {}) to home it on-premises",
                if providers.is_empty() { "none configured".to_string() } else { providers.join(", ") },
                snap.pool.host,
                snap.edge.local_domains.join(", ")
            ),
        });
    };
    update_user(fed, user, |g| g.hosting_provider = home);
    Ok(())
}

/// Changes `user`'s entry (made when missing) and drops it when nothing is left on it: no
/// tag, no site, homed on-premises.
fn update_user(fed: &mut Federation, user: String, change: impl FnOnce(&mut UserGrant)) {
    let i = match fed.users.iter().position(|g| g.user == user) {
        Some(i) => i,
        None => {
            fed.users.push(UserGrant {
                user,
                policy: None,
                site: None,
                hosting_provider: None,
                contacts: Vec::new(),
            });
            fed.users.len() - 1
        }
    };
    change(&mut fed.users[i]);
    drop_if_empty(&mut fed.users, i);
}

fn set_access_edge(cmd: Cmdlet, fed: &mut Federation, args: &Args) -> Result<(), CmdletError> {
    if let Some(i) = args.text("Identity") {
        if !i.eq_ignore_ascii_case("global") {
            return Err(cmd.refused(format!("`{i}` does not exist; the only Identity is global")));
        }
    }
    let srv = args.bool("UseDnsSrvRouting") == Some(true);
    let default = args.bool("UseDefaultRouting") == Some(true);
    if srv && default {
        return Err(cmd.refused(
            "-UseDnsSrvRouting and -UseDefaultRouting are two routing methods; give one",
        ));
    }
    let ae = &mut fed.access_edge;
    for (name, field) in [
        ("AllowFederatedUsers", &mut ae.allow_federated_users),
        ("AllowOutsideUsers", &mut ae.allow_outside_users),
        ("AllowAnonymousUsers", &mut ae.allow_anonymous_users),
        ("EnablePartnerDiscovery", &mut ae.enable_partner_discovery),
        (
            "EnableDiscoveredPartnerContactsLimit",
            &mut ae.enable_discovered_partner_contacts_limit,
        ),
        (
            "MarkSourceVerifiableOnOutgoingMessages",
            &mut ae.mark_source_verifiable_on_outgoing_messages,
        ),
    ] {
        if let Some(b) = args.bool(name) {
            *field = b;
        }
    }
    if let Some(l) = args.level("DiscoveredPartnerVerificationLevel") {
        ae.discovered_partner_verification_level = l;
    }
    for (name, field) in [
        (
            "DiscoveredPartnerStandardRate",
            &mut ae.discovered_partner_standard_rate,
        ),
        (
            "MaxContactsPerDiscoveredPartner",
            &mut ae.max_contacts_per_discovered_partner,
        ),
        (
            "DiscoveredPartnerReportPeriodMinutes",
            &mut ae.discovered_partner_report_period_minutes,
        ),
        ("DnsSrvCacheRecordCount", &mut ae.dns_srv_cache_record_count),
    ] {
        if let Some(n) = args.number(name) {
            *field = n;
        }
    }
    if let Some(n) = args.number("OutgoingTlsCountForFederatedPartners") {
        ae.outgoing_tls_count_for_federated_partners = n as u8;
    }
    let route_fqdn = match args.get("DefaultRouteFqdn") {
        None => None,
        Some(Value::Text(t)) => Some(host_port(t).ok_or_else(|| CmdletError::BadValue {
            cmdlet: cmd.name(),
            param: "DefaultRouteFqdn".into(),
            value: t.clone(),
            expected: "a DNS name with an optional port, e.g. ch.clearing.test or ch.clearing.test:5061".into(),
        })?),
        Some(_) => return Err(cmd.refused("-DefaultRouteFqdn cannot be cleared; use -UseDnsSrvRouting")),
    };
    if srv {
        ae.routing = FederationRouting::DnsSrv;
    } else if default && !matches!(ae.routing, FederationRouting::DefaultRoute { .. }) {
        let Some((fqdn, port)) = route_fqdn.clone() else {
            return Err(cmd.missing("DefaultRouteFqdn"));
        };
        ae.routing = FederationRouting::DefaultRoute {
            fqdn,
            port,
            verification_level: VerificationLevel::AlwaysVerifiable,
            is_public_provider: false,
        };
    }
    match &mut ae.routing {
        FederationRouting::DnsSrv => {
            for name in ["DefaultRouteFqdn", "IsPublicProvider", "VerificationLevel"] {
                if args.has(name) {
                    return Err(
                        cmd.refused(format!("-{name} only applies with -UseDefaultRouting"))
                    );
                }
            }
        }
        FederationRouting::DefaultRoute {
            fqdn,
            port,
            verification_level,
            is_public_provider,
        } => {
            if let Some((f, p)) = route_fqdn {
                *fqdn = f;
                *port = p;
            }
            if let Some(l) = args.level("VerificationLevel") {
                *verification_level = l;
            }
            if let Some(b) = args.bool("IsPublicProvider") {
                *is_public_provider = b;
            }
            if ae.enable_partner_discovery {
                return Err(cmd.refused(
                    "partner discovery needs -UseDnsSrvRouting; with -UseDefaultRouting set -EnablePartnerDiscovery $false",
                ));
            }
        }
    }
    Ok(())
}

/// `host` or `host:port` (default 5061).
fn host_port(s: &str) -> Option<(String, u16)> {
    match s.rsplit_once(':') {
        Some((h, p)) => {
            let port: u16 = p.parse().ok().filter(|p| *p != 0)?;
            Some((dns_name(h)?, port))
        }
        None => Some((dns_name(s)?, 5061)),
    }
}

/// A federation object a cmdlet finds by its identity: a provider's Identity, a domain's
/// name, compared without regard to case as the Management Shell does.
trait Named {
    fn name(&self) -> &str;

    fn is(&self, identity: &str) -> bool {
        self.name().eq_ignore_ascii_case(identity)
    }
}

impl Named for PublicProvider {
    fn name(&self) -> &str {
        &self.identity
    }
}

impl Named for HostingProvider {
    fn name(&self) -> &str {
        &self.identity
    }
}

impl Named for AllowedDomain {
    fn name(&self) -> &str {
        &self.domain
    }
}

impl Named for BlockedDomain {
    fn name(&self) -> &str {
        &self.domain
    }
}

/// The object of this identity, to change it.
fn named<'a, T: Named>(items: &'a mut [T], identity: &str) -> Option<&'a mut T> {
    items.iter_mut().find(|t| t.is(identity))
}

#[cfg(test)]
mod knobs;
#[cfg(test)]
mod tests;
