//! Mints the lab CA, leaf certificates and CRLs with rcgen.
//!
//! `sipedge certs --out DIR` writes the committed lab set with [`write_lab_set`]; tests call
//! [`LabCa::generate`] and [`LabCa::issue`] to mint fresh material, so no test depends on
//! files that can expire.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;

/// Every FQDN of the DESIGN topology that gets a leaf in the lab set.
pub const LAB_FQDNS: &[&str] = &[
    "accessedge.contoso.test",
    "edge-int.contoso.test",
    "pool.contoso.test",
    "sip.fabrikam.test",
    "sip.northwind.test",
    "federation.messenger.msn.com",
    "sipfed.online.lync.com",
    "sip.adatum.test",
    "sip.elsewhere.test",
];

/// The lab's topology key file beside the certificates (`[topology] key_file` of
/// `config/lab.toml`).
pub const TOPOLOGY_KEY_FILE: &str = "topology.key";

/// Common name of the CA in the committed lab set.
pub const LAB_CA_NAME: &str = "sipedge lab CA";

/// Validity of the committed lab set: long, so the checked-in files rarely need regenerating.
pub const LAB_VALIDITY_YEARS: u32 = 10;

/// Extra SANs some lab leaves carry besides their FQDN.
///
/// The external edge also answers for the SIP domain's federation name, and the pool is
/// reached by address in the lab, so it carries its loopback IP as well.
const EXTRA_SANS: &[(&str, &[&str])] = &[
    ("accessedge.contoso.test", &["sip.contoso.test"]),
    ("pool.contoso.test", &["127.0.0.1"]),
];

/// Start certificates an hour in the past so small clock skew between lab machines does
/// not make a fresh certificate "not yet valid".
const BACKDATE: Duration = Duration::from_secs(3600);

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Why minting or writing lab certificates failed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A leaf was requested without any name; the first name becomes the subject CN.
    #[error("a leaf certificate needs at least one name")]
    NoNames,
    /// A name cannot be encoded as a DNS SAN (not IA5, or otherwise rejected by rcgen).
    #[error("invalid certificate name `{name}`: {source}")]
    InvalidName { name: String, source: rcgen::Error },
    /// Key generation, signing or encoding failed inside rcgen.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The lab's topology key file could not be created or read.
    #[error("{0}")]
    TopologyKey(#[from] crate::proxy::topology::KeyFileError),
    /// A name asked for with `sipedge certs --name` is not a DNS name.
    #[error("`{0}` is not a DNS name; expected labels of letters, digits and '-', e.g. \"sip.partner.test\"")]
    NotDnsName(String),
    /// An output file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How long a leaf is valid, counted from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Valid from (nearly) now for this many 365-day years.
    Years(u32),
    /// Expired yesterday, to test that peers with stale certificates are refused.
    Expired,
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    /// DNS names (or IP literals) for the SAN extension; the first is also the subject CN.
    pub names: Vec<String>,
    /// Validity window; default [`LAB_VALIDITY_YEARS`].
    pub validity: Validity,
    /// Leave out the SAN extension (CN only), to test the CN fallback of peer identity.
    pub no_san: bool,
    /// Serial number; `None` picks a random one. Set it to revoke the leaf in a CRL.
    pub serial: Option<u64>,
}

/// A minted leaf: certificate and its private key (PKCS#8), in PEM and DER.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    /// PKCS#8 DER of the private key.
    pub key_der: Vec<u8>,
    /// The serial number, as given to [`LabCa::crl`] to revoke this leaf.
    pub serial: u64,
}

/// A self-signed lab certificate authority that issues leaves and CRLs.
#[derive(Debug)]
pub struct LabCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// CRLs need a monotonically increasing number per issuer (RFC 5280 §5.2.3).
    next_crl_number: AtomicU64,
}

// === impl LeafSpec ===

impl LeafSpec {
    /// A leaf for `names` with the lab defaults: SAN present, long validity, random serial.
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        LeafSpec {
            names: names.into_iter().map(Into::into).collect(),
            validity: Validity::Years(LAB_VALIDITY_YEARS),
            no_san: false,
            serial: None,
        }
    }

    /// The same spec with another validity.
    pub fn validity(mut self, validity: Validity) -> Self {
        self.validity = validity;
        self
    }

    /// The same spec without a SAN extension (CN only).
    pub fn no_san(mut self) -> Self {
        self.no_san = true;
        self
    }

    /// The same spec with a fixed serial number.
    pub fn serial(mut self, serial: u64) -> Self {
        self.serial = Some(serial);
        self
    }
}

// === impl LabCa ===

impl LabCa {
    /// A fresh CA with a new P-256 key, valid for [`LAB_VALIDITY_YEARS`] from now.
    pub fn generate(common_name: &str) -> Result<LabCa, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let (not_before, not_after) = window(Validity::Years(LAB_VALIDITY_YEARS));
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(SerialNumber::from(random_serial()));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(LabCa {
            issuer,
            next_crl_number: AtomicU64::new(1),
        })
    }

    /// The CA certificate in PEM, the trust anchor peers are configured with.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA private key in PEM (PKCS#8).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Issues a leaf with serverAuth and clientAuth EKUs, since federation is mutual TLS in
    /// both directions and every lab host is both a server and a client.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Leaf, CertError> {
        let common_name = spec.names.first().ok_or(CertError::NoNames)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        if !spec.no_san {
            params.subject_alt_names = spec
                .names
                .iter()
                .map(|name| san(name))
                .collect::<Result<_, _>>()?;
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let (not_before, not_after) = window(spec.validity);
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let serial = spec.serial.unwrap_or_else(random_serial);
        params.serial_number = Some(SerialNumber::from(serial));

        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
            serial,
        })
    }

    /// A CRL (PEM) revoking the given leaf serials, valid for 30 days from now.
    pub fn crl(&self, revoked_serials: &[u64]) -> Result<String, CertError> {
        let now = SystemTime::now();
        let revoked_certs = revoked_serials
            .iter()
            .map(|&serial| RevokedCertParams {
                serial_number: SerialNumber::from(serial),
                revocation_time: (now - BACKDATE).into(),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: (now - BACKDATE).into(),
            next_update: (now + 30 * DAY).into(),
            crl_number: SerialNumber::from(self.next_crl_number.fetch_add(1, Ordering::Relaxed)),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// Writes a fresh lab CA and one leaf per [`LAB_FQDNS`] entry, then one per name of
/// `extra_fqdns` (a partner's server brought into the lab, `sipedge certs --name`), into
/// `out_dir` as PEM: `ca.crt`, `ca.key`, `<fqdn>.crt`, `<fqdn>.key`, all valid for
/// [`LAB_VALIDITY_YEARS`]. An extra name must be a DNS name (it becomes the leaf's CN, its
/// DNS SAN and its file name); nothing is written when one is not. Also makes sure
/// `topology.key` holds a key: created when missing, kept otherwise, since a new key would
/// end the dialogs of a running lab. Returns the paths written, CA first.
pub fn write_lab_set(out_dir: &Path, extra_fqdns: &[String]) -> Result<Vec<PathBuf>, CertError> {
    let extra = extra_fqdns
        .iter()
        .map(|name| {
            crate::config::values::dns_name(name).map_err(|_| CertError::NotDnsName(name.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    fs::create_dir_all(out_dir).map_err(|source| CertError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let ca = LabCa::generate(LAB_CA_NAME)?;
    let mut written = Vec::with_capacity(3 + 2 * (LAB_FQDNS.len() + extra.len()));
    written.push(write_file(out_dir, "ca.crt", &ca.cert_pem())?);
    written.push(write_file(out_dir, "ca.key", &ca.key_pem())?);
    let lab = LAB_FQDNS.iter().map(|fqdn| {
        let mut names = vec![fqdn.to_string()];
        if let Some((_, more)) = EXTRA_SANS.iter().find(|(f, _)| f == fqdn) {
            names.extend(more.iter().map(|s| s.to_string()));
        }
        names
    });
    let partners = extra
        .iter()
        .filter(|name| !LAB_FQDNS.contains(&name.as_str()))
        .map(|name| vec![name.clone()]);
    for names in lab.chain(partners) {
        let fqdn = names[0].clone();
        let leaf = ca.issue(&LeafSpec::new(names))?;
        written.push(write_file(out_dir, &format!("{fqdn}.crt"), &leaf.cert_pem)?);
        written.push(write_file(out_dir, &format!("{fqdn}.key"), &leaf.key_pem)?);
    }
    let topology_key = out_dir.join(TOPOLOGY_KEY_FILE);
    crate::proxy::topology::key_file::load_or_create(&topology_key)?;
    written.push(topology_key);
    Ok(written)
}

fn write_file(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, CertError> {
    let path = dir.join(name);
    fs::write(&path, contents).map_err(|source| CertError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// An IP literal becomes an IP SAN (the pool is reached by address in the lab), anything
/// else a DNS SAN.
fn san(name: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = name.parse() {
        return Ok(SanType::IpAddress(ip));
    }
    let dns = name.try_into().map_err(|source| CertError::InvalidName {
        name: name.to_string(),
        source,
    })?;
    Ok(SanType::DnsName(dns))
}

fn window(validity: Validity) -> (SystemTime, SystemTime) {
    let now = SystemTime::now();
    match validity {
        Validity::Years(years) => (now - BACKDATE, now + 365 * DAY * years),
        Validity::Expired => (now - 30 * DAY, now - DAY),
    }
}

/// A positive, non-zero serial: the top bit is cleared so the DER integer needs no sign
/// padding and reads back as the same u64.
fn random_serial() -> u64 {
    (rand::random::<u64>() >> 1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateRevocationListDer;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{ASN1Time, CertificateRevocationList, FromDer, X509Certificate};

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).expect("parse").1
    }

    #[test]
    fn leaf_has_names_both_ekus_and_chains_to_ca() {
        let ca = LabCa::generate("test CA").unwrap();
        let leaf = ca
            .issue(&LeafSpec::new(["sip.fabrikam.test", "fabrikam.test"]).serial(42))
            .unwrap();
        let cert = parse(&leaf.cert_der);

        let cn: Vec<_> = cert.subject().iter_common_name().collect();
        assert_eq!(cn[0].as_str().unwrap(), "sip.fabrikam.test");
        let san = cert.subject_alternative_name().unwrap().expect("san");
        let names: Vec<_> = san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(*d),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["sip.fabrikam.test", "fabrikam.test"]);
        let eku = cert.extended_key_usage().unwrap().expect("eku").value;
        assert!(eku.server_auth && eku.client_auth);
        assert_eq!(cert.serial.to_string(), "42");
        assert_eq!(leaf.serial, 42);

        let ca_der = ca.cert_der();
        let ca_cert = parse(&ca_der);
        assert_eq!(cert.issuer(), ca_cert.subject());
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        assert!(ca_cert.is_ca());
    }

    #[test]
    fn no_san_leaf_has_only_a_common_name() {
        let ca = LabCa::generate("test CA").unwrap();
        let leaf = ca
            .issue(&LeafSpec::new(["cn-only.fabrikam.test"]).no_san())
            .unwrap();
        let cert = parse(&leaf.cert_der);
        assert!(cert.subject_alternative_name().unwrap().is_none());
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "cn-only.fabrikam.test"
        );
    }

    #[test]
    fn expired_leaf_ended_in_the_past() {
        let ca = LabCa::generate("test CA").unwrap();
        let leaf = ca
            .issue(&LeafSpec::new(["old.fabrikam.test"]).validity(Validity::Expired))
            .unwrap();
        let cert = parse(&leaf.cert_der);
        assert!(!cert.validity().is_valid());
        assert!(cert.validity().not_after < ASN1Time::now());
    }

    #[test]
    fn leaf_without_names_is_refused() {
        let ca = LabCa::generate("test CA").unwrap();
        let spec = LeafSpec::new(Vec::<String>::new());
        assert!(matches!(ca.issue(&spec), Err(CertError::NoNames)));
    }

    #[test]
    fn crl_lists_the_revoked_serials() {
        let ca = LabCa::generate("test CA").unwrap();
        let pem = ca.crl(&[7, 9]).unwrap();
        let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, crl) = CertificateRevocationList::from_der(&der).unwrap();
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| r.user_certificate.to_string())
            .collect();
        assert_eq!(serials, ["7", "9"]);
        assert_eq!(crl.issuer(), parse(&ca.cert_der()).subject());
    }

    #[test]
    fn a_name_asked_for_gets_a_leaf_of_the_same_ca_naming_it_and_a_bad_one_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_lab_set(dir.path(), &["SIP.Partner.test.".to_string()]).unwrap();
        assert_eq!(written.len(), 3 + 2 * (LAB_FQDNS.len() + 1));
        let crt = fs::read_to_string(dir.path().join("sip.partner.test.crt")).unwrap();
        let der = CertificateDer::from_pem_slice(crt.as_bytes()).unwrap();
        let leaf = parse(&der);
        let san = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .clone();
        assert_eq!(
            san.general_names,
            [GeneralName::DNSName("sip.partner.test")]
        );
        let ca = fs::read_to_string(dir.path().join("ca.crt")).unwrap();
        let ca_der = CertificateDer::from_pem_slice(ca.as_bytes()).unwrap();
        assert_eq!(leaf.issuer(), parse(&ca_der).subject());
        assert!(dir.path().join("sip.partner.test.key").exists());

        let empty = tempfile::tempdir().unwrap();
        for bad in ["../escape", "two words.test", ""] {
            let err = write_lab_set(empty.path(), &[bad.to_string()]).unwrap_err();
            assert!(
                err.to_string().contains("is not a DNS name"),
                "{bad}: {err}"
            );
        }
        assert_eq!(fs::read_dir(empty.path()).unwrap().count(), 0);
    }

    #[test]
    fn lab_set_writes_ca_and_a_pair_per_fqdn() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_lab_set(dir.path(), &[]).unwrap();
        assert_eq!(written.len(), 3 + 2 * LAB_FQDNS.len());
        assert_eq!(written[0], dir.path().join("ca.crt"));
        let topology_key = dir.path().join(TOPOLOGY_KEY_FILE);
        assert_eq!(written.last(), Some(&topology_key));
        let key_text = fs::read_to_string(&topology_key).unwrap();
        for fqdn in LAB_FQDNS {
            let crt = fs::read_to_string(dir.path().join(format!("{fqdn}.crt"))).unwrap();
            let key = fs::read_to_string(dir.path().join(format!("{fqdn}.key"))).unwrap();
            assert!(crt.starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        }
        let edge = fs::read_to_string(dir.path().join("accessedge.contoso.test.crt")).unwrap();
        let der = CertificateDer::from_pem_slice(edge.as_bytes()).unwrap();
        let san = parse(&der)
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .clone();
        assert!(san
            .general_names
            .contains(&GeneralName::DNSName("sip.contoso.test")));
        write_lab_set(dir.path(), &[]).unwrap();
        assert_eq!(
            fs::read_to_string(&topology_key).unwrap(),
            key_text,
            "regenerating the certificates keeps the topology key"
        );
    }
}
