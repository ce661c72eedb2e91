//! TLS secrets for Wireshark: rustls's `KeyLog`, written in the NSS key log format.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::peer::{Interface, PeerIdentity};
use crate::transport::TlsSource;

/// Appends `LABEL CLIENT_RANDOM SECRET` lines (hex) to a file, as NSS and Wireshark read
/// them (`CLIENT_RANDOM` for TLS 1.2, `CLIENT_HANDSHAKE_TRAFFIC_SECRET` … for TLS 1.3).
#[derive(Debug)]
pub struct NssKeyLog {
    file: Mutex<std::fs::File>,
}

impl NssKeyLog {
    pub fn open(path: &Path) -> std::io::Result<NssKeyLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(NssKeyLog {
            file: Mutex::new(file),
        })
    }
}

impl rustls::KeyLog for NssKeyLog {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let mut line =
            String::with_capacity(label.len() + 2 * (client_random.len() + secret.len()) + 3);
        line.push_str(label);
        line.push(' ');
        for b in client_random {
            let _ = write!(line, "{b:02x}");
        }
        line.push(' ');
        for b in secret {
            let _ = write!(line, "{b:02x}");
        }
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "key log write failed");
        }
    }
}

/// The key log `[trace] keylog` names, else rustls's reader of `SSLKEYLOGFILE` when that
/// variable is set; `None` when neither.
pub fn key_log(path: Option<&Path>) -> std::io::Result<Option<Arc<dyn rustls::KeyLog>>> {
    match path {
        Some(p) => Ok(Some(Arc::new(NssKeyLog::open(p)?))),
        None if std::env::var_os("SSLKEYLOGFILE").is_some() => {
            Ok(Some(Arc::new(rustls::KeyLogFile::new())))
        }
        None => Ok(None),
    }
}

/// A TLS source whose configurations log their secrets; every handshake asks anew, so a
/// reloaded certificate keeps logging.
pub struct KeyLogging {
    inner: Arc<dyn TlsSource>,
    log: Arc<dyn rustls::KeyLog>,
}

impl KeyLogging {
    pub fn wrap(inner: Arc<dyn TlsSource>, log: Arc<dyn rustls::KeyLog>) -> Arc<dyn TlsSource> {
        Arc::new(KeyLogging { inner, log })
    }
}

impl TlsSource for KeyLogging {
    fn server(&self, interface: Interface) -> Option<Arc<rustls::ServerConfig>> {
        let mut c = (*self.inner.server(interface)?).clone();
        c.key_log = self.log.clone();
        Some(Arc::new(c))
    }
    fn client(&self, interface: Interface) -> Option<Arc<rustls::ClientConfig>> {
        let mut c = (*self.inner.client(interface)?).clone();
        c.key_log = self.log.clone();
        Some(Arc::new(c))
    }
    fn identity(&self, certs: &[rustls_pki_types::CertificateDer<'_>]) -> PeerIdentity {
        self.inner.identity(certs)
    }
    fn failure_reason(&self, err: &std::io::Error) -> String {
        self.inner.failure_reason(err)
    }
}
