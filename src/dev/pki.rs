//! The development PKI: a throw-away CA and certificates for a practice, a wijkteam and
//! an auditor (ECDSA P-256, PEM), made with rcgen. Used by `wijkpoort certs dev`, by the
//! demo and by the tests, which also use it to make the certificates a gateway must
//! refuse (another CA, expired, unknown organisation). Production uses UZI server or
//! PKIoverheid certificates instead; `certs/README.md` explains how they map.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, OtherNameValue, SanType,
};

/// The dev practice's URA-like organisation identifier (8 digits).
pub const DEV_PRACTICE_ID: &str = "90000123";
/// The dev municipality's OIN-like identifier (20 digits).
pub const DEV_WIJKTEAM_ID: &str = "00000001003214345000";
/// The dev auditor's identifier.
pub const DEV_AUDITOR_ID: &str = "00000001823288444000";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("generating a certificate failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid validity period: {0}")]
    Validity(String),
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a leaf certificate says and how long it is valid.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// Goes into the subject `serialNumber` (OIN/URA-like).
    pub organisation_id: String,
    pub organisation: String,
    pub common_name: String,
    /// DNS names and IP addresses the certificate is valid for.
    pub hosts: Vec<String>,
    /// A UZI-style otherName (OID 2.5.5.5) value, for UZI server certificates.
    pub uzi_other_name: Option<String>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl LeafSpec {
    /// Valid from yesterday for a year, for localhost and 127.0.0.1.
    pub fn new(organisation_id: &str, organisation: &str, common_name: &str) -> LeafSpec {
        let now = Utc::now();
        LeafSpec {
            organisation_id: organisation_id.to_string(),
            organisation: organisation.to_string(),
            common_name: common_name.to_string(),
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            uzi_other_name: None,
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(365),
        }
    }
}

/// A certificate authority that can issue leaf certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Authority {
    pub fn new(name: &str) -> Result<Authority, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, name);
        dn.push(DnType::CommonName, format!("{name} CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = Utc::now();
        params.not_before = to_offset(now - Duration::days(1))?;
        params.not_after = to_offset(now + Duration::days(3650))?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Authority {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            DnValue::PrintableString(spec.organisation_id.as_str().try_into()?),
        );
        dn.push(DnType::OrganizationName, spec.organisation.as_str());
        dn.push(DnType::CommonName, spec.common_name.as_str());
        dn.push(DnType::CountryName, "NL");
        params.distinguished_name = dn;
        for host in &spec.hosts {
            params.subject_alt_names.push(match host.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.as_str().try_into()?),
            });
        }
        if let Some(uzi) = &spec.uzi_other_name {
            params.subject_alt_names.push(SanType::OtherName((
                vec![2, 5, 5, 5],
                OtherNameValue::Utf8String(uzi.clone()),
            )));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = to_offset(spec.not_before)?;
        params.not_after = to_offset(spec.not_after)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn to_offset(t: DateTime<Utc>) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .map_err(|e| PkiError::Validity(e.to_string()))
}

/// Where `write_dev_pki` put things.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub dir: PathBuf,
}

impl DevPki {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn cert(&self, role: &str) -> PathBuf {
        self.dir.join(format!("{role}.pem"))
    }
    pub fn key(&self, role: &str) -> PathBuf {
        self.dir.join(format!("{role}.key"))
    }
}

/// Writes `ca.pem` and `{practice,wijkteam,auditor}.{pem,key}` into `dir`. The CA's
/// private key is not written: a dev PKI is made anew rather than extended.
pub fn write_dev_pki(dir: &Path) -> Result<DevPki, PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca = Authority::new("wijkpoort dev")?;
    write(&dir.join("ca.pem"), &ca.cert_pem, false)?;
    let leaves = [
        (
            "practice",
            DEV_PRACTICE_ID,
            "Huisartsenpraktijk De Linde (dev)",
        ),
        (
            "wijkteam",
            DEV_WIJKTEAM_ID,
            "Gemeente Voorbeeldstad wijkteam (dev)",
        ),
        (
            "auditor",
            DEV_AUDITOR_ID,
            "Functionaris gegevensbescherming (dev)",
        ),
    ];
    for (role, id, org) in leaves {
        let issued = ca.issue(&LeafSpec::new(id, org, &format!("{role}.wijkpoort.test")))?;
        write(&dir.join(format!("{role}.pem")), &issued.cert_pem, false)?;
        write(&dir.join(format!("{role}.key")), &issued.key_pem, true)?;
    }
    Ok(DevPki {
        dir: dir.to_path_buf(),
    })
}

/// Writes a file; private keys are readable by the owner only.
pub fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(path, contents).map_err(err)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

/// For unit tests: a fresh leaf certificate (DER) and a signer with its key.
#[cfg(test)]
pub(crate) fn test_credentials() -> (crate::signing::Signer, Vec<u8>) {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivatePkcs8KeyDer};
    let issued = Authority::new("test")
        .and_then(|ca| ca.issue(&LeafSpec::new("90000123", "test", "test")))
        .expect("a test certificate");
    let key = PrivatePkcs8KeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key pem");
    let cert = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("cert pem");
    let signer = crate::signing::Signer::from_pkcs8(key.secret_pkcs8_der()).expect("signer");
    (signer, cert.to_vec())
}

/// Revocation lists for the tests of `crate::revocation`.
impl Authority {
    /// A CRL (PEM) signed by this CA that revokes the certificates (DER) in `revoked`,
    /// issued at `this_update` and due again at `next_update`.
    pub fn crl(
        &self,
        revoked: &[&[u8]],
        this_update: DateTime<Utc>,
        next_update: DateTime<Utc>,
    ) -> Result<String, PkiError> {
        let revoked_certs = revoked
            .iter()
            .map(|der| {
                let (_, cert) = x509_parser::parse_x509_certificate(der)
                    .map_err(|e| PkiError::Validity(format!("not a certificate: {e}")))?;
                Ok(rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(cert.raw_serial()),
                    revocation_time: to_offset(this_update)?,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let params = rcgen::CertificateRevocationListParams {
            this_update: to_offset(this_update)?,
            next_update: to_offset(next_update)?,
            crl_number: rcgen::SerialNumber::from(this_update.timestamp() as u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}
