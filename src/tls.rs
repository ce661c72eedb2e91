//! rustls configurations for mutual TLS, and the identity a verified certificate proves.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::transport::PeerIdentity;

/// Why TLS material could not be loaded or turned into a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// rustls refused the material (key does not match, unsupported algorithm…).
    #[error("invalid TLS material: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built (no trust anchors, bad CRL).
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(String),
}

/// Certificate chain, key, trust anchors and CRLs of one interface.
#[derive(Debug)]
pub struct TlsMaterial {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub roots: Arc<RootCertStore>,
    pub crls: Vec<CertificateRevocationListDer<'static>>,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
            crls: self.crls.clone(),
        }
    }
}

impl TlsMaterial {
    /// Loads PEM files; each error names the file.
    pub fn load(
        cert: &Path,
        key: &Path,
        anchors: &[PathBuf],
        crls: &[PathBuf],
    ) -> Result<TlsMaterial, TlsError> {
        let file_err = |p: &Path, r: String| TlsError::File {
            path: p.to_path_buf(),
            reason: r,
        };
        let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| file_err(cert, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(file_err(cert, "no certificate found".into()));
        }
        let key_der =
            PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for a in anchors {
            let certs: Vec<_> = CertificateDer::pem_file_iter(a)
                .map_err(|e| file_err(a, e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_err(a, e.to_string()))?;
            if certs.is_empty() {
                return Err(file_err(a, "no CA certificate found".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| file_err(a, e.to_string()))?;
            }
        }
        let mut crl_list = Vec::new();
        for c in crls {
            let bytes = std::fs::read(c).map_err(|e| file_err(c, e.to_string()))?;
            if bytes.starts_with(b"-----") {
                for crl in CertificateRevocationListDer::pem_slice_iter(&bytes) {
                    crl_list.push(crl.map_err(|e| file_err(c, e.to_string()))?);
                }
            } else {
                crl_list.push(CertificateRevocationListDer::from(bytes));
            }
        }
        Ok(TlsMaterial {
            chain,
            key: key_der,
            roots: Arc::new(roots),
            crls: crl_list,
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration that asks for (and, when `require_client_cert`, requires) a
/// client certificate chaining to the trust anchors, honouring the CRLs.
pub fn server_config(
    m: &TlsMaterial,
    require_client_cert: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut verifier = WebPkiClientVerifier::builder_with_provider(m.roots.clone(), provider())
        .with_crls(m.crls.clone())
        .allow_unknown_revocation_status();
    if !require_client_cert {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.chain.clone(), m.key.clone_key())?;
    Ok(Arc::new(config))
}

/// A client configuration that verifies the server against the trust anchors (its name
/// must match the SNI, RFC 6125, a wildcard standing for one label) and presents our
/// certificate, because federation peers require one.
pub fn client_config(m: &TlsMaterial) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(m.roots.clone())
        .with_client_auth_cert(m.chain.clone(), m.key.clone_key())?;
    Ok(Arc::new(config))
}

/// The DNS SAN names of the end-entity certificate; the subject CN only when the
/// certificate has no SAN extension.
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> PeerIdentity {
    let Some(ee) = certs.first() else {
        return PeerIdentity::anonymous();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(ee.as_ref()) else {
        return PeerIdentity::anonymous();
    };
    match cert.subject_alternative_name() {
        Ok(Some(san)) => {
            PeerIdentity::new(san.value.general_names.iter().filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(*d),
                _ => None,
            }))
        }
        _ => PeerIdentity::new(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok()),
        ),
    }
}

/// A short reason for a failed inbound handshake, for the one log line.
pub fn handshake_failure_reason(err: &std::io::Error) -> String {
    let Some(inner) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return err.to_string();
    };
    match inner {
        rustls::Error::NoCertificatesPresented => "no client certificate".into(),
        rustls::Error::InvalidCertificate(c) => match c {
            rustls::CertificateError::UnknownIssuer => "unknown CA".into(),
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => {
                "certificate expired".into()
            }
            rustls::CertificateError::Revoked => "certificate revoked".into(),
            other => format!("invalid certificate: {other:?}"),
        },
        rustls::Error::AlertReceived(a) => format!("alert from peer: {a:?}"),
        other => other.to_string(),
    }
}
