//! `TlsStore`: the edge's TLS configurations per interface, reloadable on SIGHUP.
//!
//! Each handshake asks the store for the current configuration, so a reload changes new
//! handshakes while open connections go on with the certificates they started with.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls_pki_types::CertificateDer;

use crate::config::{Snapshot, TlsSettings};
use crate::tls::{self, TlsError, TlsMaterial};
use crate::transport::{Interface, PeerIdentity, TlsSource};

/// Server and client configurations of both interfaces.
#[derive(Debug, Default)]
pub struct TlsStore {
    external: Slot,
    internal: Slot,
}

#[derive(Debug, Default)]
struct Slot {
    server: ArcSwapOption<rustls::ServerConfig>,
    client: ArcSwapOption<rustls::ClientConfig>,
}

impl TlsStore {
    /// Loads the material of every interface that has a `tls` table; `None` when none has.
    pub fn from_snapshot(snap: &Snapshot) -> Result<Option<Arc<TlsStore>>, TlsError> {
        if snap.external.tls.is_none() && snap.internal.tls.is_none() {
            return Ok(None);
        }
        let store = TlsStore::default();
        store.reload(snap)?;
        Ok(Some(Arc::new(store)))
    }

    /// Loads new material for every interface; on any error nothing changes.
    pub fn reload(&self, snap: &Snapshot) -> Result<(), TlsError> {
        let ext = snap.external.tls.as_ref().map(build).transpose()?;
        let int = snap.internal.tls.as_ref().map(build).transpose()?;
        for (slot, cfg) in [(&self.external, ext), (&self.internal, int)] {
            let (server, client) = match cfg {
                Some((s, c)) => (Some(s), Some(c)),
                None => (None, None),
            };
            slot.server.store(server);
            slot.client.store(client);
        }
        Ok(())
    }

    fn slot(&self, i: Interface) -> &Slot {
        match i {
            Interface::External => &self.external,
            Interface::Internal => &self.internal,
        }
    }
}

type Configs = (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>);

fn build(t: &TlsSettings) -> Result<Configs, TlsError> {
    let material = TlsMaterial::load(&t.cert, &t.key, &t.trust_anchors, &t.crls)?;
    Ok((
        tls::server_config(&material, t.require_client_cert)?,
        tls::client_config(&material)?,
    ))
}

impl TlsSource for TlsStore {
    fn server(&self, interface: Interface) -> Option<Arc<rustls::ServerConfig>> {
        self.slot(interface).server.load_full()
    }

    fn client(&self, interface: Interface) -> Option<Arc<rustls::ClientConfig>> {
        self.slot(interface).client.load_full()
    }

    fn identity(&self, certs: &[CertificateDer<'_>]) -> PeerIdentity {
        tls::peer_identity(certs)
    }

    fn failure_reason(&self, err: &std::io::Error) -> String {
        tls::handshake_failure_reason(err)
    }
}
