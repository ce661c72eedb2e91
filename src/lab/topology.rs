//! The DESIGN lab topology in one table: each simulated role's FQDN, address, port,
//! transport and SIP domains.
//!
//! `sipedge peer --role …` and `sipedge lab` both read it, so the fixed lab addresses are
//! written down once (tests never use them: they bind port 0).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::transport::Transport;

/// A simulated peer of the DESIGN topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The public provider "Skype": the PIC gateway `federation.messenger.msn.com`.
    Skype,
    /// The federated partner's Access Edge `sip.fabrikam.test` (allowed domain with ProxyFqdn).
    Partner,
    /// The discoverable partner's Access Edge `sip.northwind.test`: on no list, reached
    /// through its SRV record only (open federation, discovered-partner limits).
    Discovered,
    /// The Front End pool, the edge's internal next hop.
    Pool,
    /// The hosting provider "LyncOnline" (`sipfed.online.lync.com`).
    Hosting,
    /// The blocked domain's edge `sip.adatum.test`: its SRV record resolves, and the edge
    /// must never contact it. A tripwire: it counts every connection it accepts.
    Blocked,
}

/// Where a role lives in the lab and what it answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleSpec {
    pub role: Role,
    /// The FQDN in its certificate (`certs/<fqdn>.crt`).
    pub fqdn: &'static str,
    pub addr: IpAddr,
    pub port: u16,
    pub transport: Transport,
    /// The SIP domains its users live in; the first is used for the users it invents.
    pub domains: &'static [&'static str],
}

/// Every simulated role, in the order `sipedge lab` prints them.
pub const ROLES: &[RoleSpec] = &[
    RoleSpec {
        role: Role::Pool,
        fqdn: "pool.contoso.test",
        addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        port: 5070,
        transport: Transport::Tcp,
        domains: &["contoso.test"],
    },
    RoleSpec {
        role: Role::Partner,
        fqdn: "sip.fabrikam.test",
        addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
        port: 5061,
        transport: Transport::Tls,
        domains: &["fabrikam.test"],
    },
    RoleSpec {
        role: Role::Discovered,
        fqdn: "sip.northwind.test",
        addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)),
        port: 5061,
        transport: Transport::Tls,
        domains: &["northwind.test"],
    },
    RoleSpec {
        role: Role::Skype,
        fqdn: "federation.messenger.msn.com",
        addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)),
        port: 5061,
        transport: Transport::Tls,
        domains: &["live.com", "msn.com", "hotmail.com", "outlook.com"],
    },
    RoleSpec {
        role: Role::Hosting,
        fqdn: "sipfed.online.lync.com",
        addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)),
        port: 5061,
        transport: Transport::Tls,
        domains: &["tailspin.test"],
    },
    RoleSpec {
        role: Role::Blocked,
        fqdn: "sip.adatum.test",
        addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)),
        port: 5061,
        transport: Transport::Tls,
        domains: &["adatum.test"],
    },
];

impl Role {
    /// The role's row of [`ROLES`].
    pub fn spec(self) -> &'static RoleSpec {
        ROLES
            .iter()
            .find(|r| r.role == self)
            .expect("every role has a row in ROLES")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Skype => "skype",
            Role::Partner => "partner",
            Role::Pool => "pool",
            Role::Hosting => "hosting",
            Role::Discovered => "discovered",
            Role::Blocked => "blocked",
        }
    }

    /// Whether any contact with it is a failure of the edge, reported in the lab's table
    /// and `/health` (the blocked domain's edge).
    pub fn is_tripwire(self) -> bool {
        self == Role::Blocked
    }
}

impl RoleSpec {
    /// The fixed lab address of the role's listener.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

/// The FQDN whose certificate a peer presents while its fault is "wrong-name certificate":
/// a lab leaf that is valid but names another host.
pub const WRONG_NAME_FQDN: &str = "sip.elsewhere.test";

/// Where the lab certificates of a config live: `certs/` beside the config file, or
/// beside its directory (`config/lab.toml` → `certs/`).
pub fn certs_dir_for(config: &Path) -> PathBuf {
    let dir = config.parent().unwrap_or(Path::new("."));
    let beside = dir.join("certs");
    if beside.join("ca.crt").exists() {
        return beside;
    }
    dir.join("..").join("certs")
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "skype" => Ok(Role::Skype),
            "partner" => Ok(Role::Partner),
            "pool" => Ok(Role::Pool),
            "hosting" => Ok(Role::Hosting),
            "discovered" => Ok(Role::Discovered),
            "blocked" => Ok(Role::Blocked),
            other => Err(format!(
                "unknown role `{other}`, expected {}",
                crate::lab::faults::ROLES_HELP
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_has_its_design_row() {
        for role in [
            Role::Skype,
            Role::Partner,
            Role::Discovered,
            Role::Pool,
            Role::Hosting,
            Role::Blocked,
        ] {
            let spec = role.spec();
            assert_eq!(spec.role, role);
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert!(spec.addr.is_loopback());
        }
        assert_eq!(
            Role::Skype.spec().socket_addr(),
            "127.0.0.4:5061".parse().unwrap()
        );
        assert_eq!(Role::Pool.spec().transport, Transport::Tcp);
        for r in ROLES {
            assert!(crate::lab::certs::LAB_FQDNS.contains(&r.fqdn), "{}", r.fqdn);
        }
        assert_eq!(
            Role::Discovered.spec().socket_addr(),
            "127.0.0.6:5061".parse().unwrap()
        );
        assert_eq!(
            Role::Blocked.spec().socket_addr(),
            "127.0.0.7:5061".parse().unwrap()
        );
        assert!(Role::Blocked.is_tripwire() && !Role::Discovered.is_tripwire());
    }
}
