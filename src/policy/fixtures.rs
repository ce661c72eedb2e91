//! The DESIGN lab as the policy sees it, for the tests of the policy and of the cmdlets
//! that change it: the snapshot, its DNS answers and the peers.

use std::net::SocketAddr;
use std::path::Path;

use super::{DnsFacts, SrvAnswer, SrvTarget};
use crate::config::Snapshot;
use crate::peer::{Interface, Peer, PeerIdentity, Transport};

/// The lab with `extra` TOML after its federation sections.
pub(crate) fn lab_with(extra: &str) -> Snapshot {
    let text = format!(
        "{}\n{}\n{extra}",
        crate::config::TCP_EDGE,
        crate::config::lab_federation_sections()
    );
    Snapshot::from_toml(&text, Path::new(".")).unwrap_or_else(|e| panic!("{e}"))
}

/// The lab: a TCP edge with the shipped federation sections.
pub(crate) fn lab() -> Snapshot {
    lab_with("")
}

/// DESIGN's `_sipfederationtls._tcp` records.
pub(crate) fn lab_dns() -> DnsFacts {
    let srv = |t: &str| SrvAnswer::Records(vec![SrvTarget::new(0, 0, 5061, t)]);
    DnsFacts::none()
        .with_srv("fabrikam.test", srv("sip.fabrikam.test"))
        .with_srv("northwind.test", srv("sip.northwind.test"))
        .with_srv("adatum.test", srv("sip.adatum.test"))
        .with_srv("msn.com", srv("federation.messenger.msn.com"))
        .with_srv("live.com", srv("federation.messenger.msn.com"))
        .with_srv("hotmail.com", srv("federation.messenger.msn.com"))
        .with_srv("outlook.com", srv("federation.messenger.msn.com"))
        .with_srv("tailspin.test", srv("sipfed.online.lync.com"))
        .with_srv("badsrv.test", srv("sip.elsewhere.test"))
        .with_srv("nowhere.test", SrvAnswer::NoRecords)
}

/// A peer on `interface` that proved `names` (none: no certificate).
pub(crate) fn peer(interface: Interface, names: &[&str]) -> Peer {
    Peer {
        interface,
        transport: Transport::Tls,
        addr: "127.0.0.9:40000".parse::<SocketAddr>().unwrap(),
        identity: PeerIdentity::new(names),
    }
}

/// The Front End pool, on the internal interface.
pub(crate) fn pool() -> Peer {
    peer(Interface::Internal, &["pool.contoso.test"])
}
