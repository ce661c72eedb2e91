//! Run-time fault injection in a running lab: `sipedge admin fault <role> <fault> [args]`.
//!
//! [`parse`] reads the words the administrator typed (the admin endpoint receives them one
//! per line, so arguments with spaces need no quoting). [`FaultControl`] applies a fault to
//! a simulated peer: peer faults go to the peer's [`FaultSwitch`], DNS faults to the lab
//! zone ([`ZoneFaults`]) for the peer's names (its A name and every SRV name pointing at
//! it). The admin endpoint then flushes the edge's DNS cache and reconnect backoff, so the
//! change shows on the very next request rather than after a TTL.

use std::fmt::Write as _;
use std::time::Duration;

use super::peer::{Fault, FaultSwitch};
use super::topology::Role;
use crate::dns::{DnsFault, ZoneFaults};
use crate::transport::Transport;

/// The roles, as `sipedge admin fault` names them.
pub const ROLES_HELP: &str = "skype, partner, discovered, pool, hosting, blocked";

/// The faults, with their arguments.
pub const FAULTS_HELP: &str = "delay MS, drop, status CODE [--diagnostics TEXT], refuse-tls, wrong-cert, dns-missing, dns-timeout, clear";

/// Longest delay accepted: longer than any SIP timer worth testing, short enough that a
/// typo does not park a request for a day.
pub const MAX_DELAY: Duration = Duration::from_secs(600);

/// Why a fault request was refused; each says what would be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("usage: fault <role> <fault> [args]; roles: {ROLES_HELP}; faults: {FAULTS_HELP}")]
    Usage,
    #[error("unknown role `{0}`; valid roles: {ROLES_HELP}")]
    UnknownRole(String),
    #[error("unknown fault `{0}`; valid faults: {FAULTS_HELP}")]
    UnknownFault(String),
    /// A fault's argument is missing or wrong.
    #[error("{fault}: {problem}")]
    BadArgument {
        fault: &'static str,
        problem: String,
    },
    /// The fault cannot happen to this role in the lab (e.g. a TLS fault on the plain-TCP pool).
    #[error("{role}: {why}")]
    NotApplicable { role: Role, why: &'static str },
}

/// A parsed `<role> <fault> [args]`; `fault` is [`Fault::None`] for `clear`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRequest {
    pub role: Role,
    pub fault: Fault,
}

/// Parses `<role> <fault> [args]` as typed after `sipedge admin fault`.
pub fn parse<S: AsRef<str>>(words: &[S]) -> Result<FaultRequest, FaultError> {
    let words: Vec<&str> = words.iter().map(|w| w.as_ref().trim()).collect();
    let (role, name, args) = match words.as_slice() {
        [role, name, args @ ..] => (*role, name.to_ascii_lowercase(), args),
        _ => return Err(FaultError::Usage),
    };
    let role = role
        .parse::<Role>()
        .map_err(|_| FaultError::UnknownRole(role.to_string()))?;
    let fault = match name.as_str() {
        "clear" | "none" => no_args("clear", args, Fault::None)?,
        "drop" => no_args("drop", args, Fault::Drop)?,
        "refuse-tls" => no_args("refuse-tls", args, Fault::RefuseHandshake)?,
        "wrong-cert" => no_args("wrong-cert", args, Fault::WrongCert)?,
        "dns-missing" => no_args("dns-missing", args, Fault::DnsMissing)?,
        "dns-timeout" => no_args("dns-timeout", args, Fault::DnsTimeout)?,
        "delay" => match args {
            [ms] => {
                let ms: u64 = ms.parse().map_err(|_| {
                    bad(
                        "delay",
                        "MS must be a whole number of milliseconds, e.g. delay 2000",
                    )
                })?;
                let d = Duration::from_millis(ms);
                if d > MAX_DELAY {
                    return Err(bad(
                        "delay",
                        format!("at most {} ms", MAX_DELAY.as_millis()),
                    ));
                }
                Fault::Delay(d)
            }
            _ => return Err(bad("delay", "takes one argument, MS (e.g. delay 2000)")),
        },
        "status" => parse_status(args)?,
        other => return Err(FaultError::UnknownFault(other.to_string())),
    };
    Ok(FaultRequest { role, fault })
}

/// The simulated peers' fault switches and the lab zone, as one control surface.
pub struct FaultControl {
    peers: Vec<(Role, FaultSwitch, Vec<String>)>,
    zone: ZoneFaults,
}

impl FaultControl {
    /// `peers`: each role's switch and the DNS names it is found by.
    pub fn new(peers: Vec<(Role, FaultSwitch, Vec<String>)>, zone: ZoneFaults) -> FaultControl {
        FaultControl { peers, zone }
    }

    /// Applies `req` (replacing the role's previous fault) and says what changed.
    pub fn apply(&self, req: &FaultRequest) -> Result<String, FaultError> {
        let (_, switch, names) = self.peers.iter().find(|(r, _, _)| *r == req.role).ok_or(
            FaultError::NotApplicable {
                role: req.role,
                why: "this lab runs no such peer",
            },
        )?;
        check_applicable(req.role, &req.fault)?;
        let dns = match req.fault {
            Fault::DnsMissing => Some(DnsFault::Missing),
            Fault::DnsTimeout => Some(DnsFault::Timeout),
            _ => None,
        };
        // Every fault sets the role's names: a DNS fault breaks them, any other restores them.
        self.zone.set(names, dns);
        switch.set(req.fault.clone());
        tracing::info!(role = %req.role, fault = %req.fault, "lab fault set");
        let mut out = format!("{} ({}): {}", req.role, switch.fqdn(), req.fault);
        if dns.is_some() {
            let _ = write!(out, "; affects {}", names.join(", "));
        }
        out.push('\n');
        Ok(out)
    }

    /// Each role's FQDN and current fault ([`Fault::None`] when it has none), in the
    /// lab's order.
    pub fn current(&self) -> Vec<(Role, String, Fault)> {
        self.peers
            .iter()
            .map(|(role, switch, _)| (*role, switch.fqdn().to_string(), switch.get()))
            .collect()
    }

    /// One line per role: its FQDN and current fault.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (role, fqdn, fault) in self.current() {
            let _ = writeln!(out, "{role} ({fqdn}): {fault}");
        }
        out
    }
}

/// Refuses faults the lab cannot show for a role: the pool speaks plain TCP and is
/// reached by its configured address, not by DNS.
fn check_applicable(role: Role, fault: &Fault) -> Result<(), FaultError> {
    let spec = role.spec();
    if fault.is_handshake() && spec.transport != Transport::Tls {
        return Err(FaultError::NotApplicable {
            role,
            why: "speaks plain TCP in the lab, so it has no TLS handshake to break",
        });
    }
    if matches!(fault, Fault::DnsMissing | Fault::DnsTimeout) && role == Role::Pool {
        return Err(FaultError::NotApplicable {
            role,
            why: "the edge reaches the pool by its configured address ([pool] target), not by DNS",
        });
    }
    Ok(())
}

fn parse_status(args: &[&str]) -> Result<Fault, FaultError> {
    let (code, rest) = args
        .split_first()
        .ok_or_else(|| bad("status", "needs CODE (e.g. status 486)"))?;
    let code: u16 = code
        .parse()
        .ok()
        .filter(|c| (300..=699).contains(c))
        .ok_or_else(|| {
            bad(
                "status",
                format!("CODE `{code}` must be a final error status, 300 to 699"),
            )
        })?;
    let diagnostics = match rest {
        [] => None,
        [flag, text @ ..] if flag.eq_ignore_ascii_case("--diagnostics") && !text.is_empty() => {
            Some(text.join(" "))
        }
        [flag, ..] if flag.eq_ignore_ascii_case("--diagnostics") => {
            return Err(bad("status", "--diagnostics needs TEXT"))
        }
        [other, ..] => {
            return Err(bad(
                "status",
                format!("unknown option `{other}`; valid: --diagnostics TEXT"),
            ))
        }
    };
    Ok(Fault::Status { code, diagnostics })
}

fn no_args(fault: &'static str, args: &[&str], f: Fault) -> Result<Fault, FaultError> {
    match args {
        [] => Ok(f),
        _ => Err(bad(fault, "takes no arguments")),
    }
}

fn bad(fault: &'static str, problem: impl Into<String>) -> FaultError {
    FaultError::BadArgument {
        fault,
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<FaultRequest, FaultError> {
        parse(&line.split(' ').collect::<Vec<_>>())
    }

    #[test]
    fn every_fault_parses_and_prints_back() {
        for (line, fault) in [
            (
                "skype delay 1500",
                Fault::Delay(Duration::from_millis(1500)),
            ),
            ("partner drop", Fault::Drop),
            (
                "hosting status 486",
                Fault::Status {
                    code: 486,
                    diagnostics: None,
                },
            ),
            ("skype refuse-tls", Fault::RefuseHandshake),
            ("Skype WRONG-CERT", Fault::WrongCert),
            ("skype dns-missing", Fault::DnsMissing),
            ("skype dns-timeout", Fault::DnsTimeout),
            ("pool clear", Fault::None),
        ] {
            let r = p(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(r.fault, fault, "{line}");
        }
        let r = parse(&[
            "skype",
            "status",
            "503",
            "--diagnostics",
            "1234;reason=\"busy here\"",
        ])
        .unwrap();
        assert_eq!(
            r.fault,
            Fault::Status {
                code: 503,
                diagnostics: Some("1234;reason=\"busy here\"".into())
            }
        );
        assert_eq!(
            r.fault.to_string(),
            "status 503 --diagnostics \"1234;reason=\\\"busy here\\\"\""
        );
        assert_eq!(
            Fault::Delay(Duration::from_millis(20)).to_string(),
            "delay 20"
        );
    }

    #[test]
    fn errors_name_the_valid_choices() {
        let e = p("gateway drop").unwrap_err().to_string();
        assert!(
            e.contains("unknown role `gateway`") && e.contains(ROLES_HELP),
            "{e}"
        );
        let e = p("skype explode").unwrap_err().to_string();
        assert!(
            e.contains("unknown fault `explode`") && e.contains("dns-timeout"),
            "{e}"
        );
        assert_eq!(p("skype").unwrap_err(), FaultError::Usage);
        assert!(p("skype delay soon")
            .unwrap_err()
            .to_string()
            .contains("milliseconds"));
        assert!(p("skype delay").is_err());
        assert!(p("skype status 200")
            .unwrap_err()
            .to_string()
            .contains("300 to 699"));
        assert!(p("skype status 486 --why x")
            .unwrap_err()
            .to_string()
            .contains("--diagnostics"));
        assert!(p("skype status 486 --diagnostics").is_err());
        assert!(p("skype drop now")
            .unwrap_err()
            .to_string()
            .contains("no arguments"));
        assert!(check_applicable(Role::Pool, &Fault::WrongCert).is_err());
        assert!(check_applicable(Role::Pool, &Fault::DnsMissing).is_err());
        assert!(check_applicable(Role::Pool, &Fault::Drop).is_ok());
        assert!(check_applicable(Role::Skype, &Fault::RefuseHandshake).is_ok());
    }
}
