//! rustls configurations for mutual TLS, and what a peer's certificate proves.
//!
//! Both interfaces speak mutual TLS (federation in and out, and the link to the Front End
//! pool), so the same [`TlsMaterial`] yields a server config, which asks for and verifies
//! client certificates, and a client config, which presents our certificate. Failures are
//! turned into the short reasons the listener logs and into the 1010/1047 diagnostics the
//! Access Edge reports for outbound connections.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, InconsistentKeys, RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::extensions::GeneralName;

use crate::transport::PeerIdentity;

/// Why TLS material could not be loaded or turned into a rustls configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A configured file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// A file is not well-formed PEM.
    #[error("{}: malformed pem: {source}", path.display())]
    Pem { path: PathBuf, source: pem::Error },
    /// Our end-entity certificate cannot be parsed.
    #[error("{}: unusable certificate: {source}", path.display())]
    BadCertificate {
        path: PathBuf,
        source: rustls::Error,
    },
    /// A certificate or trust anchor file holds no `CERTIFICATE` section.
    #[error("{}: no certificate found", path.display())]
    NoCertificate { path: PathBuf },
    /// The key file holds no private key (PKCS#8, PKCS#1 or SEC1 PEM).
    #[error("{}: no private key found", path.display())]
    NoPrivateKey { path: PathBuf },
    /// The private key is of a type or curve the crypto provider cannot sign with.
    #[error("{}: unsupported private key: {source}", path.display())]
    UnsupportedKey {
        path: PathBuf,
        source: rustls::Error,
    },
    /// The private key does not belong to the first certificate of the chain.
    #[error("{} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    /// A trust anchor file holds a certificate that cannot serve as a root.
    #[error("{}: unusable trust anchor: {source}", path.display())]
    BadTrustAnchor {
        path: PathBuf,
        source: rustls::Error,
    },
    /// No trust anchor was configured; mutual TLS cannot verify any peer without one.
    #[error("no trust anchors configured")]
    NoTrustAnchors,
    /// A CRL file holds no CRL, or one that cannot be parsed.
    #[error("{}: bad crl: {reason}", path.display())]
    BadCrl { path: PathBuf, reason: String },
    /// The certificate verifier could not be built from the trust anchors and CRLs.
    #[error("cannot build certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    /// rustls refused the configuration (for example no usable protocol version).
    #[error("invalid tls configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The expected peer name is neither a DNS name nor an IP address.
    #[error("`{name}` is not a valid tls server name")]
    InvalidServerName { name: String },
}

/// One interface's certificate, key, trust anchors and CRLs, parsed and checked.
///
/// Loading is separate from building configs so a reload can fail on bad files before
/// anything is swapped.
pub struct TlsMaterial {
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
}

/// Why an outbound TLS connection failed, as the Access Edge reports it to the internal
/// client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundTlsFailure {
    /// We refused the peer's certificate (name, chain, validity, revocation): the proxy
    /// answers 504 with ms-diagnostics 1010.
    CertTrust {
        /// The `ErrorType` text, e.g. "The peer certificate does not contain a matching FQDN".
        error_type: String,
        /// The `HRESULT` value, e.g. "0x80090322(SEC_E_WRONG_PRINCIPAL)".
        hresult: &'static str,
    },
    /// The connection or the negotiation failed for any other reason, typically because the
    /// peer refused our certificate: the proxy answers 504 with ms-diagnostics 1047.
    Handshake {
        /// The `WinsockFailureCode` value, e.g. "10054(WSAECONNRESET)".
        detail: String,
    },
}

/// A server config that can be replaced while the listener runs.
///
/// Each accepted connection takes the config current at accept time, so after
/// [`reload`](Self::reload) new handshakes use the new material and open connections keep
/// the one they were made with.
pub struct ReloadableServerConfig {
    current: ArcSwap<ServerConfig>,
    require_client_cert: bool,
}

/// A client config that can be replaced while the connection pool runs; see
/// [`ReloadableServerConfig`] for what a reload affects.
pub struct ReloadableClientConfig {
    current: ArcSwap<ClientConfig>,
}

// === impl TlsMaterial ===

impl TlsMaterial {
    /// Reads the PEM certificate chain (end entity first), its PEM private key, PEM trust
    /// anchors and CRLs (PEM or DER), and checks that the key matches the certificate.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        trust_anchor_paths: &[PathBuf],
        crl_paths: &[PathBuf],
    ) -> Result<TlsMaterial, TlsError> {
        let cert_chain = read_certs(cert_path)?;
        let key = read_key(key_path)?;
        check_key_matches(&cert_chain, &key, cert_path, key_path)?;

        let mut roots = RootCertStore::empty();
        for path in trust_anchor_paths {
            for anchor in read_certs(path)? {
                roots
                    .add(anchor)
                    .map_err(|source| TlsError::BadTrustAnchor {
                        path: path.clone(),
                        source,
                    })?;
            }
        }
        if roots.is_empty() {
            return Err(TlsError::NoTrustAnchors);
        }

        let mut crls = Vec::new();
        for path in crl_paths {
            crls.extend(read_crls(path)?);
        }

        Ok(TlsMaterial {
            cert_chain,
            key,
            roots: Arc::new(roots),
            crls,
        })
    }

    /// Our certificate chain, end entity first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.cert_chain
    }

    /// The names our own certificate carries (what peers will see us as).
    pub fn identity(&self) -> PeerIdentity {
        peer_identity(&self.cert_chain)
    }
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
            crls: self.crls.clone(),
        }
    }
}

impl fmt::Debug for TlsMaterial {
    /// Leaves the private key out so it never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("identity", &self.identity())
            .field("chain_len", &self.cert_chain.len())
            .field("trust_anchors", &self.roots.len())
            .field("crls", &self.crls.len())
            .finish_non_exhaustive()
    }
}

// === configs ===

/// The inbound config: presents our certificate and verifies client certificates against
/// the trust anchors and CRLs.
///
/// With `require_client_cert` false a client may connect without a certificate (its
/// identity is then empty), but a certificate it does present must still verify. A
/// certificate not covered by any CRL is accepted, since the lab has no CRL for most CAs.
pub fn server_config(
    material: &TlsMaterial,
    require_client_cert: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(material.roots.clone(), provider.clone())
            .with_crls(material.crls.iter().cloned())
            .allow_unknown_revocation_status();
    if !require_client_cert {
        verifier = verifier.allow_unauthenticated();
    }
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier.build()?)
        .with_single_cert(material.cert_chain.clone(), material.key.clone_key())?;
    Ok(Arc::new(config))
}

/// The outbound config: verifies the server chain against the trust anchors and CRLs and
/// presents our certificate as the client certificate.
///
/// The name checked is the [`ServerName`] given to `TlsConnector::connect` (see
/// [`server_name`]): standard RFC 6125 matching on DNS SANs, a wildcard covering exactly
/// one label.
pub fn client_config(material: &TlsMaterial) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiServerVerifier::builder_with_provider(material.roots.clone(), provider.clone())
            .with_crls(material.crls.iter().cloned())
            .allow_unknown_revocation_status()
            .build()?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(material.cert_chain.clone(), material.key.clone_key())?;
    Ok(Arc::new(config))
}

/// The name to verify the server against: the SRV target or the configured proxy FQDN.
pub fn server_name(fqdn: &str) -> Result<ServerName<'static>, TlsError> {
    let name = fqdn.trim_end_matches('.');
    ServerName::try_from(name.to_string()).map_err(|_| TlsError::InvalidServerName {
        name: fqdn.to_string(),
    })
}

// === impl ReloadableServerConfig ===

impl ReloadableServerConfig {
    /// A config built from `material`; `require_client_cert` is kept for every reload.
    pub fn new(
        material: &TlsMaterial,
        require_client_cert: bool,
    ) -> Result<ReloadableServerConfig, TlsError> {
        Ok(ReloadableServerConfig {
            current: ArcSwap::new(server_config(material, require_client_cert)?),
            require_client_cert,
        })
    }

    /// The config new handshakes use now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// An acceptor for one new connection, bound to the current config.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current())
    }

    /// Swaps in a config built from `material`. On error the old config stays in use.
    pub fn reload(&self, material: &TlsMaterial) -> Result<(), TlsError> {
        let config = server_config(material, self.require_client_cert)?;
        self.current.store(config);
        Ok(())
    }
}

// === impl ReloadableClientConfig ===

impl ReloadableClientConfig {
    /// A config built from `material`.
    pub fn new(material: &TlsMaterial) -> Result<ReloadableClientConfig, TlsError> {
        Ok(ReloadableClientConfig {
            current: ArcSwap::new(client_config(material)?),
        })
    }

    /// The config new outbound handshakes use now.
    pub fn current(&self) -> Arc<ClientConfig> {
        self.current.load_full()
    }

    /// A connector for one new connection, bound to the current config.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.current())
    }

    /// Swaps in a config built from `material`. On error the old config stays in use.
    pub fn reload(&self, material: &TlsMaterial) -> Result<(), TlsError> {
        self.current.store(client_config(material)?);
        Ok(())
    }
}

// === peer identity ===

/// The names a verified peer certificate proves: the DNS SAN names of the end-entity
/// certificate, or its subject CN only when it has no SAN extension at all (RFC 6125 §6.4.4;
/// Lync accepts CN-only partner certificates). An unparsable certificate proves nothing.
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> PeerIdentity {
    let Some(end_entity) = certs.first() else {
        return PeerIdentity::anonymous();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(end_entity) else {
        return PeerIdentity::anonymous();
    };
    match cert.subject_alternative_name() {
        Ok(Some(san)) => {
            PeerIdentity::new(
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(dns) => Some(*dns),
                        _ => None,
                    }),
            )
        }
        Ok(None) => PeerIdentity::new(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok()),
        ),
        // A duplicated SAN extension is malformed; trusting either copy would be a guess.
        Err(_) => PeerIdentity::anonymous(),
    }
}

// === failure classification ===

impl OutboundTlsFailure {
    /// The ms-diagnostics code the proxy reports: 1010 for certificate trust, 1047 for a
    /// failed negotiation.
    pub fn diagnostics_code(&self) -> u16 {
        match self {
            OutboundTlsFailure::CertTrust { .. } => 1010,
            OutboundTlsFailure::Handshake { .. } => 1047,
        }
    }
}

/// Classifies an error from an outbound TCP connect, `TlsConnector::connect`, or the first
/// read after it.
///
/// With TLS 1.3 the client finishes its handshake before the server has checked our
/// certificate, so "the partner does not trust us" usually shows up on the first read, as
/// an alert: the pool should classify that error too.
pub fn classify_outbound_failure(err: &io::Error) -> OutboundTlsFailure {
    let cert_trust = |error_type: &str, hresult| OutboundTlsFailure::CertTrust {
        error_type: error_type.to_string(),
        hresult,
    };
    match rustls_error(err) {
        Some(rustls::Error::InvalidCertificate(cert_err)) => {
            let (error_type, hresult) = cert_trust_reason(cert_err);
            cert_trust(error_type, hresult)
        }
        Some(rustls::Error::NoCertificatesPresented) => cert_trust(
            "The peer did not present a certificate",
            "0x8009030e(SEC_E_NO_CREDENTIALS)",
        ),
        Some(rustls::Error::InvalidCertRevocationList(_)) => cert_trust(
            "The revocation status of the peer certificate could not be checked",
            "0x80092012(CRYPT_E_NO_REVOCATION_CHECK)",
        ),
        _ => OutboundTlsFailure::Handshake {
            detail: winsock_code(err).to_string(),
        },
    }
}

/// A short reason for the one log line the listener writes when an inbound handshake
/// fails, e.g. "no client certificate", "unknown CA", "certificate revoked", "timeout".
pub fn handshake_failure_reason(err: &io::Error) -> String {
    if let Some(tls_err) = rustls_error(err) {
        return match tls_err {
            rustls::Error::NoCertificatesPresented => "no client certificate".to_string(),
            rustls::Error::InvalidCertificate(cert_err) => cert_reason(cert_err).to_string(),
            rustls::Error::AlertReceived(alert) => format!("peer sent alert {alert:?}"),
            rustls::Error::PeerIncompatible(why) => format!("incompatible peer: {why:?}"),
            rustls::Error::InvalidMessage(_) => "not a tls handshake".to_string(),
            other => format!("tls error: {other}"),
        };
    }
    match err.kind() {
        io::ErrorKind::TimedOut => "timeout".to_string(),
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => "connection closed by peer".to_string(),
        _ => err.to_string(),
    }
}

/// Everything uses ring (DEPENDENCIES.md §4: faster to build and to handshake here).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// tokio-rustls wraps `rustls::Error` in an `io::Error`; callers may wrap it again, so the
/// whole source chain is searched.
/// The reason we refused a server's certificate, when that is why an outbound handshake
/// failed (`check-partner` tells names, chain and validity apart with it).
pub fn refused_certificate(err: &io::Error) -> Option<&CertificateError> {
    match rustls_error(err) {
        Some(rustls::Error::InvalidCertificate(e)) => Some(e),
        _ => None,
    }
}

fn rustls_error(err: &io::Error) -> Option<&rustls::Error> {
    let mut source = err
        .get_ref()
        .map(|e| e as &(dyn std::error::Error + 'static));
    while let Some(e) = source {
        if let Some(tls_err) = e.downcast_ref::<rustls::Error>() {
            return Some(tls_err);
        }
        source = e.source();
    }
    None
}

/// `ErrorType` and `HRESULT` for a refused server certificate, in the words Schannel uses.
fn cert_trust_reason(err: &CertificateError) -> (&'static str, &'static str) {
    match err {
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => (
            "The peer certificate does not contain a matching FQDN",
            "0x80090322(SEC_E_WRONG_PRINCIPAL)",
        ),
        CertificateError::UnknownIssuer => (
            "The certificate chain is not trusted",
            "0x800b0109(CERT_E_UNTRUSTEDROOT)",
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
            "The peer certificate has expired",
            "0x80090328(SEC_E_CERT_EXPIRED)",
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
            "The peer certificate is not yet valid",
            "0x800b0101(CERT_E_EXPIRED)",
        ),
        CertificateError::Revoked => (
            "The peer certificate has been revoked",
            "0x80092010(CRYPT_E_REVOKED)",
        ),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => (
            "The peer certificate is not valid for server authentication",
            "0x800b0110(CERT_E_WRONG_USAGE)",
        ),
        CertificateError::BadSignature
        | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => (
            "The peer certificate signature is not valid",
            "0x80096004(TRUST_E_CERT_SIGNATURE)",
        ),
        CertificateError::UnknownRevocationStatus
        | CertificateError::ExpiredRevocationList
        | CertificateError::ExpiredRevocationListContext { .. } => (
            "The revocation status of the peer certificate could not be checked",
            "0x80092012(CRYPT_E_NO_REVOCATION_CHECK)",
        ),
        _ => (
            "The peer certificate is not valid",
            "0x80090327(SEC_E_CERT_UNKNOWN)",
        ),
    }
}

/// A refused client certificate, in the listener's log words.
fn cert_reason(err: &CertificateError) -> &'static str {
    match err {
        CertificateError::UnknownIssuer => "unknown CA",
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "certificate expired"
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate not yet valid"
        }
        CertificateError::Revoked => "certificate revoked",
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "certificate not valid for client authentication"
        }
        CertificateError::BadSignature => "bad certificate signature",
        CertificateError::BadEncoding => "malformed certificate",
        CertificateError::UnknownRevocationStatus
        | CertificateError::ExpiredRevocationList
        | CertificateError::ExpiredRevocationListContext { .. } => {
            "certificate revocation status unknown"
        }
        _ => "invalid certificate",
    }
}

/// The `WinsockFailureCode` Lync would report for a failed connection. Alerts and
/// unexpected closes look like a reset to the Windows edge, hence the default.
fn winsock_code(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::TimedOut => "10060(WSAETIMEDOUT)",
        io::ErrorKind::ConnectionRefused => "10061(WSAECONNREFUSED)",
        io::ErrorKind::ConnectionAborted => "10053(WSAECONNABORTED)",
        io::ErrorKind::HostUnreachable => "10065(WSAEHOSTUNREACH)",
        io::ErrorKind::NetworkUnreachable => "10051(WSAENETUNREACH)",
        _ => "10054(WSAECONNRESET)",
    }
}

// === loading ===

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        source => TlsError::Pem {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// CRLs are published as DER by most CAs and as PEM by some; accept both, and parse them
/// now so a bad file is reported by name rather than by the verifier builder.
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let bad = |reason: String| TlsError::BadCrl {
        path: path.to_path_buf(),
        reason,
    };
    let crls = if bytes.starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err(bad("no crl found".to_string()));
    }
    for crl in &crls {
        webpki::OwnedCertRevocationList::from_der(crl).map_err(|e| bad(format!("{e:?}")))?;
    }
    Ok(crls)
}

/// Fails early on a key that does not belong to the certificate, which rustls would
/// otherwise only report as an opaque config error.
fn check_key_matches(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), TlsError> {
    let signing_key = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|source| TlsError::UnsupportedKey {
            path: key_path.to_path_buf(),
            source,
        })?;
    match CertifiedKey::new(chain.to_vec(), signing_key).keys_match() {
        Ok(()) => Ok(()),
        // The provider cannot derive this key's public half; rustls decides at build time.
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            key: key_path.to_path_buf(),
            cert: cert_path.to_path_buf(),
        }),
        Err(source) => Err(TlsError::BadCertificate {
            path: cert_path.to_path_buf(),
            source,
        }),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::certs::{LabCa, Leaf, LeafSpec, Validity};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tempfile::TempDir;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_rustls::{client, server};

    type Handshake = (
        io::Result<server::TlsStream<DuplexStream>>,
        io::Result<client::TlsStream<DuplexStream>>,
    );

    /// A lab CA plus a temp dir the tests write PEM files into, so loading is exercised too.
    struct Lab {
        dir: TempDir,
        ca: LabCa,
        ca_path: PathBuf,
        files: AtomicUsize,
    }

    impl Lab {
        fn new() -> Lab {
            Lab::with_ca("test lab CA")
        }

        /// Another CA needs another name: one with the same name as a trust anchor is found
        /// as the issuer and fails on the signature instead ("bad certificate signature").
        fn with_ca(name: &str) -> Lab {
            let dir = tempfile::tempdir().unwrap();
            let ca = LabCa::generate(name).unwrap();
            let ca_path = dir.path().join("ca.crt");
            fs::write(&ca_path, ca.cert_pem()).unwrap();
            Lab {
                dir,
                ca,
                ca_path,
                files: AtomicUsize::new(0),
            }
        }

        fn leaf(&self, names: &[&str]) -> Leaf {
            self.ca
                .issue(&LeafSpec::new(names.iter().copied()))
                .unwrap()
        }

        fn write(&self, suffix: &str, contents: &str) -> PathBuf {
            let n = self.files.fetch_add(1, Ordering::Relaxed);
            let path = self.dir.path().join(format!("{n}.{suffix}"));
            fs::write(&path, contents).unwrap();
            path
        }

        /// `leaf` as our certificate, this lab's CA as the only trust anchor, and `crls`.
        fn material(&self, leaf: &Leaf, crls: &[String]) -> TlsMaterial {
            let cert = self.write("crt", &leaf.cert_pem);
            let key = self.write("key", &leaf.key_pem);
            let crls: Vec<_> = crls.iter().map(|c| self.write("crl", c)).collect();
            TlsMaterial::load(&cert, &key, std::slice::from_ref(&self.ca_path), &crls).unwrap()
        }

        fn material_for(&self, names: &[&str]) -> TlsMaterial {
            self.material(&self.leaf(names), &[])
        }
    }

    /// Runs both sides of a handshake over an in-memory pipe. A side that fails drops its
    /// end, so the other side sees the close instead of hanging.
    async fn handshake(
        acceptor: TlsAcceptor,
        client: Arc<ClientConfig>,
        expected_name: &str,
    ) -> Handshake {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let name = server_name(expected_name).unwrap();
        let run = async {
            tokio::join!(
                acceptor.accept(server_io),
                TlsConnector::from(client).connect(name, client_io)
            )
        };
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("handshake hung")
    }

    fn edge_server(lab: &Lab, require_client_cert: bool, crls: &[String]) -> TlsAcceptor {
        let leaf = lab.leaf(&["accessedge.contoso.test", "sip.contoso.test"]);
        let config = server_config(&lab.material(&leaf, crls), require_client_cert).unwrap();
        TlsAcceptor::from(config)
    }

    /// A client that trusts `lab` but presents no certificate.
    fn anonymous_client(lab: &Lab) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(lab.ca.cert_der()).unwrap();
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    fn server_error(result: Handshake) -> String {
        match result.0 {
            Ok(_) => panic!("server accepted the handshake"),
            Err(err) => handshake_failure_reason(&err),
        }
    }

    fn outbound_failure(result: Handshake) -> OutboundTlsFailure {
        match result.1 {
            Ok(_) => panic!("client accepted the server"),
            Err(err) => classify_outbound_failure(&err),
        }
    }

    fn names(identity: &PeerIdentity) -> Vec<&str> {
        identity.names().iter().map(String::as_str).collect()
    }

    // === handshakes ===

    #[tokio::test]
    async fn mutual_tls_gives_both_sides_the_san_names() {
        let lab = Lab::new();
        let client =
            client_config(&lab.material_for(&["sip.fabrikam.test", "fabrikam.test"])).unwrap();
        let (server, client) = handshake(
            edge_server(&lab, true, &[]),
            client,
            "accessedge.contoso.test",
        )
        .await;
        let server = server.expect("server handshake");
        let client = client.expect("client handshake");

        let seen_by_server = peer_identity(server.get_ref().1.peer_certificates().unwrap());
        assert_eq!(
            names(&seen_by_server),
            ["sip.fabrikam.test", "fabrikam.test"]
        );
        let seen_by_client = peer_identity(client.get_ref().1.peer_certificates().unwrap());
        assert_eq!(
            names(&seen_by_client),
            ["accessedge.contoso.test", "sip.contoso.test"]
        );
    }

    #[tokio::test]
    async fn client_without_certificate_is_refused() {
        let lab = Lab::new();
        let result = handshake(
            edge_server(&lab, true, &[]),
            anonymous_client(&lab),
            "accessedge.contoso.test",
        )
        .await;
        assert_eq!(server_error(result), "no client certificate");
    }

    #[tokio::test]
    async fn optional_client_cert_admits_anonymous_but_still_verifies() {
        let lab = Lab::new();
        let (server, _) = handshake(
            edge_server(&lab, false, &[]),
            anonymous_client(&lab),
            "accessedge.contoso.test",
        )
        .await;
        let server = server.expect("anonymous client admitted");
        assert!(server.get_ref().1.peer_certificates().is_none());

        let other = Lab::with_ca("other CA");
        let stranger = other.leaf(&["sip.fabrikam.test"]);
        // Our side trusts the edge's CA, but its certificate comes from another CA.
        let client = client_config(&lab.material(&stranger, &[])).unwrap();
        let result = handshake(
            edge_server(&lab, false, &[]),
            client,
            "accessedge.contoso.test",
        );
        assert_eq!(server_error(result.await), "unknown CA");
    }

    #[tokio::test]
    async fn client_from_another_ca_is_refused() {
        let lab = Lab::new();
        let other = Lab::with_ca("other CA");
        let client = client_config(&lab.material(&other.leaf(&["sip.fabrikam.test"]), &[]));
        let result = handshake(
            edge_server(&lab, true, &[]),
            client.unwrap(),
            "accessedge.contoso.test",
        )
        .await;
        assert_eq!(server_error(result), "unknown CA");
    }

    #[tokio::test]
    async fn expired_client_is_refused() {
        let lab = Lab::new();
        let expired = lab
            .ca
            .issue(&LeafSpec::new(["sip.fabrikam.test"]).validity(Validity::Expired))
            .unwrap();
        let client = client_config(&lab.material(&expired, &[])).unwrap();
        let result = handshake(
            edge_server(&lab, true, &[]),
            client,
            "accessedge.contoso.test",
        );
        assert_eq!(server_error(result.await), "certificate expired");
    }

    #[tokio::test]
    async fn revoked_client_is_refused_and_others_are_not() {
        let lab = Lab::new();
        let revoked = lab
            .ca
            .issue(&LeafSpec::new(["sip.fabrikam.test"]).serial(0x5eed))
            .unwrap();
        let good = lab
            .ca
            .issue(&LeafSpec::new(["sip.northwind.test"]).serial(0x600d))
            .unwrap();
        let crls = [lab.ca.crl(&[revoked.serial]).unwrap()];

        let client = client_config(&lab.material(&revoked, &[])).unwrap();
        let result = handshake(
            edge_server(&lab, true, &crls),
            client,
            "accessedge.contoso.test",
        );
        assert_eq!(server_error(result.await), "certificate revoked");

        let client = client_config(&lab.material(&good, &[])).unwrap();
        let (server, _) = handshake(
            edge_server(&lab, true, &crls),
            client,
            "accessedge.contoso.test",
        )
        .await;
        server.expect("a certificate the crl does not list is accepted");
    }

    #[tokio::test]
    async fn cn_is_the_identity_only_without_san() {
        let lab = Lab::new();
        let cn_only = lab
            .ca
            .issue(&LeafSpec::new(["sip.fabrikam.test"]).no_san())
            .unwrap();
        let client = client_config(&lab.material(&cn_only, &[])).unwrap();
        let (server, _) = handshake(
            edge_server(&lab, true, &[]),
            client,
            "accessedge.contoso.test",
        )
        .await;
        let server = server.expect("cn-only client accepted");
        let identity = peer_identity(server.get_ref().1.peer_certificates().unwrap());
        assert_eq!(names(&identity), ["sip.fabrikam.test"]);

        // With a SAN, the CN is not a name the peer proves.
        let leaf = lab.leaf(&["sip.fabrikam.test", "fabrikam.test"]);
        assert_eq!(
            names(&peer_identity(&[leaf.cert_der])),
            ["sip.fabrikam.test", "fabrikam.test"]
        );
        assert!(peer_identity(&[]).is_anonymous());
        assert!(peer_identity(&[CertificateDer::from(vec![0x30, 0x00])]).is_anonymous());
    }

    // === outbound ===

    async fn connect_to(lab: &Lab, server_leaf: &Leaf, expected_name: &str) -> Handshake {
        let server = server_config(&lab.material(server_leaf, &[]), true).unwrap();
        let client = client_config(&lab.material_for(&["accessedge.contoso.test"])).unwrap();
        handshake(TlsAcceptor::from(server), client, expected_name).await
    }

    #[tokio::test]
    async fn outbound_name_mismatch_is_cert_trust_wrong_principal() {
        let lab = Lab::new();
        let elsewhere = lab.leaf(&["sip.elsewhere.test"]);
        let result = connect_to(&lab, &elsewhere, "sip.fabrikam.test");
        let failure = outbound_failure(result.await);
        assert_eq!(
            failure,
            OutboundTlsFailure::CertTrust {
                error_type: "The peer certificate does not contain a matching FQDN".into(),
                hresult: "0x80090322(SEC_E_WRONG_PRINCIPAL)",
            }
        );
        assert_eq!(failure.diagnostics_code(), 1010);
    }

    #[tokio::test]
    async fn outbound_untrusted_server_is_cert_trust_untrusted_root() {
        let lab = Lab::new();
        let other = Lab::with_ca("other CA");
        let untrusted = other.leaf(&["sip.fabrikam.test"]);
        let result = connect_to(&lab, &untrusted, "sip.fabrikam.test");
        assert_eq!(
            outbound_failure(result.await),
            OutboundTlsFailure::CertTrust {
                error_type: "The certificate chain is not trusted".into(),
                hresult: "0x800b0109(CERT_E_UNTRUSTEDROOT)",
            }
        );
    }

    #[tokio::test]
    async fn outbound_expired_server_is_cert_trust_expired() {
        let lab = Lab::new();
        let expired = lab
            .ca
            .issue(&LeafSpec::new(["sip.fabrikam.test"]).validity(Validity::Expired))
            .unwrap();
        let failure = outbound_failure(connect_to(&lab, &expired, "sip.fabrikam.test").await);
        assert!(
            matches!(failure, OutboundTlsFailure::CertTrust { hresult, .. } if hresult.contains("SEC_E_CERT_EXPIRED")),
            "{failure:?}"
        );
    }

    #[tokio::test]
    async fn outbound_to_a_peer_that_refuses_us_is_a_handshake_failure() {
        let lab = Lab::new();
        let partner = Lab::with_ca("partner CA");
        // The partner trusts only its own CA; we trust the partner's CA but hold a leaf of ours.
        let server = server_config(&partner.material_for(&["sip.fabrikam.test"]), true).unwrap();
        let ours = lab.leaf(&["accessedge.contoso.test"]);
        let ours = TlsMaterial::load(
            &lab.write("crt", &ours.cert_pem),
            &lab.write("key", &ours.key_pem),
            std::slice::from_ref(&partner.ca_path),
            &[],
        )
        .unwrap();
        let client = client_config(&ours).unwrap();
        let (_, client) = handshake(TlsAcceptor::from(server), client, "sip.fabrikam.test").await;
        // TLS 1.3: the refusal arrives as an alert after our side finished its handshake.
        let err = match client {
            Err(err) => err,
            Ok(mut stream) => {
                let mut buf = [0u8; 1];
                stream.read(&mut buf).await.expect_err("peer refused us")
            }
        };
        let failure = classify_outbound_failure(&err);
        assert_eq!(
            failure,
            OutboundTlsFailure::Handshake {
                detail: "10054(WSAECONNRESET)".into()
            }
        );
        assert_eq!(failure.diagnostics_code(), 1047);
    }

    #[tokio::test]
    async fn wildcard_matches_one_label_only() {
        let lab = Lab::new();
        let wildcard = lab.leaf(&["*.fabrikam.test"]);
        let (_, client) = connect_to(&lab, &wildcard, "sip.fabrikam.test").await;
        client.expect("*.fabrikam.test covers sip.fabrikam.test");

        for name in ["a.sip.fabrikam.test", "fabrikam.test"] {
            let failure = outbound_failure(connect_to(&lab, &wildcard, name).await);
            assert!(
                matches!(failure, OutboundTlsFailure::CertTrust { hresult, .. } if hresult.contains("WRONG_PRINCIPAL")),
                "{name}: {failure:?}"
            );
        }
    }

    #[tokio::test]
    async fn connect_errors_map_to_winsock_codes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(
            classify_outbound_failure(&refused),
            OutboundTlsFailure::Handshake {
                detail: "10061(WSAECONNREFUSED)".into()
            }
        );
        let timed_out = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(
            classify_outbound_failure(&timed_out),
            OutboundTlsFailure::Handshake {
                detail: "10060(WSAETIMEDOUT)".into()
            }
        );
    }

    #[tokio::test]
    async fn handshake_timeout_is_logged_as_timeout() {
        let never = std::future::pending::<()>();
        let elapsed = tokio::time::timeout(Duration::from_millis(1), never)
            .await
            .unwrap_err();
        assert_eq!(handshake_failure_reason(&elapsed.into()), "timeout");
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(handshake_failure_reason(&eof), "connection closed by peer");
    }

    // === reload ===

    #[tokio::test]
    async fn server_reload_affects_new_handshakes_only() {
        let lab = Lab::new();
        let old_leaf = lab.leaf(&["accessedge.contoso.test"]);
        let new_leaf = lab.leaf(&["accessedge.contoso.test"]);
        let reloadable = ReloadableServerConfig::new(&lab.material(&old_leaf, &[]), true).unwrap();
        let client = client_config(&lab.material_for(&["sip.fabrikam.test"])).unwrap();

        let (server, client_stream) = handshake(
            reloadable.acceptor(),
            client.clone(),
            "accessedge.contoso.test",
        )
        .await;
        let (mut open_server, mut open_client) = (server.unwrap(), client_stream.unwrap());
        let seen = open_client.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(seen, old_leaf.cert_der);

        reloadable.reload(&lab.material(&new_leaf, &[])).unwrap();

        let (_, fresh) = handshake(reloadable.acceptor(), client, "accessedge.contoso.test").await;
        let fresh = fresh.unwrap();
        let seen = fresh.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(seen, new_leaf.cert_der);

        open_client.write_all(b"OPTIONS").await.unwrap();
        let mut buf = [0u8; 7];
        open_server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"OPTIONS");
        open_server.write_all(b"200 OK").await.unwrap();
        let mut buf = [0u8; 6];
        open_client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"200 OK");
    }

    #[tokio::test]
    async fn client_reload_presents_the_new_certificate() {
        let lab = Lab::new();
        let reloadable =
            ReloadableClientConfig::new(&lab.material_for(&["old.contoso.test"])).unwrap();
        reloadable
            .reload(&lab.material_for(&["new.contoso.test"]))
            .unwrap();
        let (server, _) = handshake(
            edge_server(&lab, true, &[]),
            reloadable.current(),
            "accessedge.contoso.test",
        )
        .await;
        let identity = peer_identity(server.unwrap().get_ref().1.peer_certificates().unwrap());
        assert_eq!(names(&identity), ["new.contoso.test"]);
    }

    #[test]
    fn failed_reload_keeps_the_old_config() {
        let lab = Lab::new();
        let material = lab.material_for(&["accessedge.contoso.test"]);
        let reloadable = ReloadableServerConfig::new(&material, true).unwrap();
        let before = reloadable.current();
        let mut broken = material.clone();
        broken.roots = Arc::new(RootCertStore::empty());
        assert!(reloadable.reload(&broken).is_err());
        assert!(Arc::ptr_eq(&before, &reloadable.current()));
    }

    // === loading ===

    #[test]
    fn load_errors_name_the_file() {
        let lab = Lab::new();
        let leaf = lab.leaf(&["sip.fabrikam.test"]);
        let cert = lab.write("crt", &leaf.cert_pem);
        let key = lab.write("key", &leaf.key_pem);
        let anchors = std::slice::from_ref(&lab.ca_path);
        let missing = lab.dir.path().join("missing.crt");

        let err = TlsMaterial::load(&missing, &key, anchors, &[]).unwrap_err();
        assert!(matches!(&err, TlsError::Read { path, .. } if *path == missing));
        assert!(err.to_string().contains("missing.crt"), "{err}");

        let err = TlsMaterial::load(&cert, &cert, anchors, &[]).unwrap_err();
        assert!(
            matches!(&err, TlsError::NoPrivateKey { path } if *path == cert),
            "{err}"
        );

        let err = TlsMaterial::load(&key, &key, anchors, &[]).unwrap_err();
        assert!(
            matches!(&err, TlsError::NoCertificate { path } if *path == key),
            "{err}"
        );

        let other_key = lab.write("key", &lab.leaf(&["sip.fabrikam.test"]).key_pem);
        let err = TlsMaterial::load(&cert, &other_key, anchors, &[]).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");

        let err = TlsMaterial::load(&cert, &key, &[], &[]).unwrap_err();
        assert!(matches!(err, TlsError::NoTrustAnchors), "{err}");

        let bad_crl = lab.write("crl", "not a crl");
        let err =
            TlsMaterial::load(&cert, &key, anchors, std::slice::from_ref(&bad_crl)).unwrap_err();
        assert!(
            matches!(&err, TlsError::BadCrl { path, .. } if *path == bad_crl),
            "{err}"
        );
    }

    #[test]
    fn crls_load_from_pem_and_der() {
        let lab = Lab::new();
        let pem = lab.ca.crl(&[1]).unwrap();
        let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
        let der_path = lab.dir.path().join("ca.crl.der");
        fs::write(&der_path, der.as_ref()).unwrap();
        let leaf = lab.leaf(&["sip.fabrikam.test"]);
        let material = TlsMaterial::load(
            &lab.write("crt", &leaf.cert_pem),
            &lab.write("key", &leaf.key_pem),
            std::slice::from_ref(&lab.ca_path),
            &[lab.write("crl", &pem), der_path],
        )
        .unwrap();
        assert_eq!(material.crls.len(), 2);
        assert_eq!(names(&material.identity()), ["sip.fabrikam.test"]);
    }

    #[test]
    fn server_name_accepts_fqdns_and_ips_only() {
        assert!(server_name("sip.fabrikam.test.").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(matches!(
            server_name("not a name"),
            Err(TlsError::InvalidServerName { .. })
        ));
    }
}
