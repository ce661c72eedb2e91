//! What `sipedge run` would refuse at start that the config loader cannot see: files it
//! reads (certificates, keys, the lab zone, the topology key file) and addresses two
//! listeners would share. `sipedge check-config` runs it after a clean load, so one run
//! shows every problem with its key and line.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::config::{line_of_key, Problem, Snapshot};
use crate::peer::{Interface, Transport};

/// Every start problem of `snap`, in the order `run` would meet them.
pub fn check(snap: &Snapshot) -> Vec<Problem> {
    let text = snap
        .source
        .as_deref()
        .and_then(|p| std::fs::read_to_string(p).ok());
    let mut problems = Vec::new();
    let mut problem = |key: String, message: String| {
        let line = text.as_deref().and_then(|t| line_of_key(t, &key));
        problems.push(Problem { key, line, message });
    };
    for iface in [Interface::External, Interface::Internal] {
        if let Some(t) = &snap.interface(iface).tls {
            if let Err(e) =
                crate::tls::TlsMaterial::load(&t.cert, &t.key, &t.trust_anchors, &t.crls)
            {
                problem(format!("interfaces.{iface}.tls"), e.to_string());
            }
        }
    }
    if let Some(path) = &snap.dns.zone_file {
        let checked = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|text| {
                crate::dns::check_zone(&text).map_err(|e| format!("{}: {e}", path.display()))
            });
        if let Err(message) = checked {
            problem("dns.zone_file".into(), message);
        }
    }
    if let Some(path) = &snap.topology.key_file {
        // A missing file is created at start; one that exists must hold keys.
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if let Err(e) = crate::proxy::topology::key_file::parse(&text, path) {
                    problem("topology.key_file".into(), e.to_string());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                if dir.is_some_and(|d| !d.is_dir()) {
                    problem(
                        "topology.key_file".into(),
                        format!(
                            "{} cannot be created: its folder does not exist",
                            path.display()
                        ),
                    );
                }
            }
            Err(e) => problem(
                "topology.key_file".into(),
                format!("cannot read {}: {e}", path.display()),
            ),
        }
    }
    for (key, message) in shared_listeners(snap) {
        problem(key, message);
    }
    problems
}

/// Listeners of the interfaces, the lab zone and the admin endpoint that would bind the
/// same transport, address and port (port 0 is ephemeral, never shared).
fn shared_listeners(snap: &Snapshot) -> Vec<(String, String)> {
    let mut listeners: Vec<(String, Transport, SocketAddr)> = Vec::new();
    for iface in [Interface::External, Interface::Internal] {
        let s = snap.interface(iface);
        for (name, transport, port) in [
            ("udp_port", Transport::Udp, s.udp_port),
            ("tcp_port", Transport::Tcp, s.tcp_port),
            ("tls_port", Transport::Tls, s.tls_port),
        ] {
            if let Some(p) = port {
                let key = format!("interfaces.{iface}.{name}");
                listeners.push((key, transport, SocketAddr::new(s.address, p)));
            }
        }
    }
    if let Some(a) = snap.dns.zone_listen {
        listeners.push(("dns.zone_listen".into(), Transport::Udp, a));
        listeners.push(("dns.zone_listen".into(), Transport::Tcp, a));
    }
    if let Some(a) = &snap.admin {
        listeners.push(("admin.listen".into(), Transport::Tcp, a.listen));
    }
    // TCP and TLS listeners both take a TCP port.
    let socket_kind = |t: Transport| if t == Transport::Udp { "udp" } else { "tcp" };
    let mut first: HashMap<(&str, SocketAddr), &str> = HashMap::new();
    let mut out = Vec::new();
    for (key, transport, addr) in &listeners {
        if addr.port() == 0 {
            continue;
        }
        match first.get(&(socket_kind(*transport), *addr)) {
            Some(other) if other != key => out.push((
                key.clone(),
                format!(
                    "{} {addr} is also `{other}`'s: two listeners cannot share it; use another port or address",
                    socket_kind(*transport).to_uppercase()
                ),
            )),
            Some(_) => {}
            None => {
                first.insert((socket_kind(*transport), *addr), key);
            }
        }
    }
    out
}
