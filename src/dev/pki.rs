//! The development PKI, made with rcgen: a throw-away CA and certificates for a
//! practice, a wijkteam and an auditor, in one of three shapes ([`Shape`]):
//!
//! - `ecdsa` (the default): one ECDSA P-256 CA that issues every leaf directly, each
//!   leaf naming its organisation in the subject serialNumber (the `dev` rule).
//! - `uzi` and `pkioverheid`: the real shapes, on RSA keys ([`RealPki`]). One RSA-4096
//!   root and domain CA (as the PKIoverheid Private root and "Domein Private Services",
//!   which UZI and PKIoverheid Private Services certificates share) with two issuing CAs
//!   under it: a UZI server CA, whose server certificates carry the URA in the SAN
//!   otherName 2.5.5.5 (card type S) and in a permanentIdentifier, and the UZI number in
//!   the subject serialNumber; and a PKIoverheid issuing CA, whose certificates carry
//!   the OIN in the subject serialNumber.
//!
//! rcgen with ring cannot generate RSA keys: [`RsaKeys`] come from `openssl` (for
//! `wijkpoort certs dev`) or from the test-only fixtures in `tests/fixtures/rsa/`. Used
//! by `wijkpoort certs dev`, by the demo and by the tests, which also use it to make the
//! certificates a gateway must refuse (another CA, expired, unknown organisation).
//! `certs/README.md` explains how production certificates map.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The dev practice's URA-like organisation identifier (8 digits).
pub const DEV_PRACTICE_ID: &str = "90000123";
/// The dev municipality's OIN-like identifier (20 digits).
pub const DEV_WIJKTEAM_ID: &str = "00000001003214345000";
/// The dev auditor's identifier.
pub const DEV_AUDITOR_ID: &str = "00000001823288444000";
/// The dev practice's UZI number (in the UZI shape: the subject serialNumber and the
/// third field of the otherName).
pub const DEV_PRACTICE_UZI_NUMBER: &str = "12345678";
/// The dev practice's OIN in the PKIoverheid shape: `00000003` + an 8-digit KvK number
/// + `0000`, the OIN form of an organisation outside government.
pub const DEV_PRACTICE_OIN: &str = "00000003123456780000";
/// The OID-CA field of the dev UZI server CA's otherNames (the register's example value).
pub const DEV_UZI_OID_CA: &str = "2.16.528.1.1003.1.3.5.5.2";

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
    #[error("generating an RSA key with openssl failed: {0}")]
    Openssl(String),
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate, then the intermediates above it up to (not including) the root:
    /// what `tls.cert` holds.
    pub chain_pem: String,
}

/// What a leaf certificate says and how long it is valid.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// Goes into the subject `serialNumber` (OIN/URA-like), unless `serial_number` is set.
    pub organisation_id: String,
    /// The subject `serialNumber` when it is not the organisation identifier (a UZI
    /// server certificate's holds the UZI number).
    pub serial_number: Option<String>,
    pub organisation: String,
    pub common_name: String,
    /// DNS names and IP addresses the certificate is valid for.
    pub hosts: Vec<String>,
    /// A UZI-style otherName (OID 2.5.5.5) value, for UZI server certificates.
    pub uzi_other_name: Option<String>,
    /// A permanentIdentifier otherName (1.3.6.1.5.5.7.8.3) identifierValue: a UZI
    /// server certificate's URA.
    pub permanent_identifier: Option<String>,
    /// The leaf's private key (PKCS#8 PEM, e.g. RSA); `None` makes a fresh ECDSA P-256 key.
    pub key_pem: Option<String>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl LeafSpec {
    /// Valid from yesterday for a year, for localhost and 127.0.0.1.
    pub fn new(organisation_id: &str, organisation: &str, common_name: &str) -> LeafSpec {
        let now = Utc::now();
        LeafSpec {
            organisation_id: organisation_id.to_string(),
            serial_number: None,
            organisation: organisation.to_string(),
            common_name: common_name.to_string(),
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            uzi_other_name: None,
            permanent_identifier: None,
            key_pem: None,
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(365),
        }
    }

    /// A UZI server certificate in the register's shape: the otherName 2.5.5.5
    /// `<OID CA>-1-<UZI nr>-S-<URA>-00.000-00000000`, a permanentIdentifier with the URA,
    /// and the UZI number in the subject serialNumber.
    pub fn uzi_server(
        ura: &str,
        uzi_number: &str,
        organisation: &str,
        common_name: &str,
    ) -> LeafSpec {
        let mut spec = LeafSpec::new(ura, organisation, common_name);
        spec.serial_number = Some(uzi_number.to_string());
        spec.uzi_other_name = Some(uzi_other_name(DEV_UZI_OID_CA, uzi_number, "S", ura));
        spec.permanent_identifier = Some(ura.to_string());
        spec
    }

    /// With an existing private key (PKCS#8 PEM).
    pub fn with_key(mut self, key_pem: &str) -> LeafSpec {
        self.key_pem = Some(key_pem.to_string());
        self
    }
}

/// A UZI otherName value: `<OID CA>-1-<UZI nr>-<card type>-<URA>-00.000-00000000`.
pub fn uzi_other_name(oid_ca: &str, uzi_number: &str, card_type: &str, ura: &str) -> String {
    format!("{oid_ca}-1-{uzi_number}-{card_type}-{ura}-00.000-00000000")
}

/// What a CA certificate says and how long it is valid.
#[derive(Debug, Clone)]
pub struct CaSpec {
    pub organisation: String,
    pub common_name: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl CaSpec {
    /// `O=name, CN=name CA`, valid from yesterday for ten years.
    pub fn new(name: &str) -> CaSpec {
        let now = Utc::now();
        CaSpec {
            organisation: name.to_string(),
            common_name: format!("{name} CA"),
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(3650),
        }
    }

    fn params(&self) -> Result<CertificateParams, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "NL");
        dn.push(DnType::OrganizationName, self.organisation.as_str());
        dn.push(DnType::CommonName, self.common_name.as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = to_offset(self.not_before)?;
        params.not_after = to_offset(self.not_after)?;
        Ok(params)
    }
}

/// A key pair from a PEM key, or a fresh ECDSA P-256 one.
fn key_pair(key_pem: Option<&str>) -> Result<KeyPair, PkiError> {
    Ok(match key_pem {
        // rcgen with ring reads PKCS#8 (RSA keys sign with PKCS#1 v1.5 SHA-256).
        Some(pem) => KeyPair::from_pem(pem)?,
        None => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
    })
}

/// A certificate authority that can issue leaf certificates and intermediate CAs.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub key_pem: String,
    /// This CA's certificate and the intermediates above it, not the root (empty for a
    /// root): what follows a leaf it issues in a certificate chain file.
    pub intermediates_pem: String,
}

impl Authority {
    /// A self-signed ECDSA P-256 root, valid from yesterday for ten years.
    pub fn new(name: &str) -> Result<Authority, PkiError> {
        Authority::root(&CaSpec::new(name), None)
    }

    /// A self-signed root with `key_pem` (e.g. an RSA key), or a fresh ECDSA P-256 key.
    pub fn root(spec: &CaSpec, key_pem: Option<&str>) -> Result<Authority, PkiError> {
        let key = key_pair(key_pem)?;
        let params = spec.params()?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Authority {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
            intermediates_pem: String::new(),
        })
    }

    /// An intermediate CA issued by this one.
    pub fn intermediate(
        &self,
        spec: &CaSpec,
        key_pem: Option<&str>,
    ) -> Result<Authority, PkiError> {
        let key = key_pair(key_pem)?;
        let params = spec.params()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_pem = key.serialize_pem();
        let cert_pem = cert.pem();
        Ok(Authority {
            issuer: Issuer::new(params, key),
            intermediates_pem: format!("{cert_pem}{}", self.intermediates_pem),
            cert_pem,
            key_pem,
        })
    }

    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, PkiError> {
        let key = key_pair(spec.key_pem.as_deref())?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        let serial_number = spec.serial_number.as_ref().unwrap_or(&spec.organisation_id);
        dn.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            DnValue::PrintableString(serial_number.as_str().try_into()?),
        );
        dn.push(DnType::OrganizationName, spec.organisation.as_str());
        dn.push(DnType::CommonName, spec.common_name.as_str());
        dn.push(DnType::CountryName, "NL");
        params.distinguished_name = dn;
        if spec.uzi_other_name.is_some() || spec.permanent_identifier.is_some() {
            // rcgen writes otherNames only as UTF8String and cannot write a
            // permanentIdentifier (a SEQUENCE): the whole SAN is written here.
            params.custom_extensions.push(san_extension(spec)?);
        } else {
            for host in &spec.hosts {
                params.subject_alt_names.push(match host.parse() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(host.as_str().try_into()?),
                });
            }
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = to_offset(spec.not_before)?;
        params.not_after = to_offset(spec.not_after)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_pem = cert.pem();
        Ok(Issued {
            chain_pem: format!("{cert_pem}{}", self.intermediates_pem),
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }
}

/// DER: a tag, a definite length and the content.
pub fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    crate::der::tlv(tag, content)
}

/// DER: an OBJECT IDENTIFIER from its arcs.
pub fn der_oid(arcs: &[u64]) -> Vec<u8> {
    let mut content = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &arc in &arcs[2..] {
        let mut chunk = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            chunk.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        chunk.reverse();
        content.extend(chunk);
    }
    der_tlv(0x06, &content)
}

/// A GeneralName otherName: `[0] { type-id, [0] EXPLICIT value }`.
pub fn der_other_name(arcs: &[u64], value_der: &[u8]) -> Vec<u8> {
    let mut content = der_oid(arcs);
    content.extend(der_tlv(0xa0, value_der));
    der_tlv(0xa0, &content)
}

/// The subjectAltName of `spec`, DER: its hosts, the UZI otherName (IA5String) and the
/// permanentIdentifier (`SEQUENCE { identifierValue UTF8String }`).
fn san_extension(spec: &LeafSpec) -> Result<CustomExtension, PkiError> {
    let mut names = Vec::new();
    for host in &spec.hosts {
        names.extend(match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => der_tlv(0x87, &ip.octets()),
            Ok(std::net::IpAddr::V6(ip)) => der_tlv(0x87, &ip.octets()),
            Err(_) => der_tlv(0x82, host.as_bytes()),
        });
    }
    if let Some(uzi) = &spec.uzi_other_name {
        names.extend(der_other_name(
            &[2, 5, 5, 5],
            &der_tlv(0x16, uzi.as_bytes()),
        ));
    }
    if let Some(id) = &spec.permanent_identifier {
        let value = der_tlv(0x30, &der_tlv(0x0c, id.as_bytes()));
        names.extend(der_other_name(&[1, 3, 6, 1, 5, 5, 7, 8, 3], &value));
    }
    Ok(CustomExtension::from_oid_content(
        &[2, 5, 29, 17],
        der_tlv(0x30, &names),
    ))
}

/// The RSA keys of a PKI in the real shapes (PKCS#8 PEM): four CAs and three leaves.
#[derive(Clone)]
pub struct RsaKeys {
    pub root: String,
    pub domain_ca: String,
    pub uzi_server_ca: String,
    pub pkio_issuing_ca: String,
    pub practice: String,
    pub wijkteam: String,
    pub auditor: String,
}

impl std::fmt::Debug for RsaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaKeys(..)")
    }
}

impl RsaKeys {
    /// The file names (`NAME.test-key.pem` in `tests/fixtures/rsa/`) and the key sizes.
    pub const FILES: [(&'static str, u32); 7] = [
        ("root", 4096),
        ("domain-ca", 4096),
        ("uzi-server-ca", 4096),
        ("pkio-issuing-ca", 4096),
        ("practice", 4096),
        ("wijkteam", 2048),
        ("auditor", 2048),
    ];

    fn from_list(mut keys: Vec<String>) -> RsaKeys {
        let mut next = || keys.remove(0);
        RsaKeys {
            root: next(),
            domain_ca: next(),
            uzi_server_ca: next(),
            pkio_issuing_ca: next(),
            practice: next(),
            wijkteam: next(),
            auditor: next(),
        }
    }

    /// Fresh keys from `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:N`
    /// (ring and rcgen with ring cannot generate RSA keys). The seven run at once.
    pub fn generate_with_openssl() -> Result<RsaKeys, PkiError> {
        let children = RsaKeys::FILES
            .iter()
            .map(|(_, bits)| {
                std::process::Command::new("openssl")
                    .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
                    .arg(format!("rsa_keygen_bits:{bits}"))
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| {
                        PkiError::Openssl(if e.kind() == std::io::ErrorKind::NotFound {
                            "`openssl` is not on PATH; the uzi and pkioverheid shapes need it \
                             to make RSA keys (Debian: apt-get install openssl), or use \
                             --shape ecdsa"
                                .to_string()
                        } else {
                            format!("cannot run openssl: {e}")
                        })
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut keys = Vec::new();
        for child in children {
            let out = child
                .wait_with_output()
                .map_err(|e| PkiError::Openssl(e.to_string()))?;
            let pem = String::from_utf8_lossy(&out.stdout).to_string();
            if !out.status.success() || !pem.starts_with("-----BEGIN PRIVATE KEY-----") {
                return Err(PkiError::Openssl(format!(
                    "openssl genpkey exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            keys.push(pem);
        }
        Ok(RsaKeys::from_list(keys))
    }

    /// One fresh RSA key of `bits` from `openssl genpkey` (PKCS#8 PEM).
    pub fn openssl_key(bits: u32) -> Result<String, PkiError> {
        let out = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
            .arg(format!("rsa_keygen_bits:{bits}"))
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| PkiError::Openssl(format!("cannot run openssl: {e}")))?;
        let pem = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() || !pem.starts_with("-----BEGIN PRIVATE KEY-----") {
            return Err(PkiError::Openssl(format!(
                "openssl genpkey exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(pem)
    }

    /// Keys read from `dir/NAME.test-key.pem` (the test fixtures).
    pub fn read_dir(dir: &Path) -> Result<RsaKeys, PkiError> {
        let keys = RsaKeys::FILES
            .iter()
            .map(|(name, _)| {
                let path = dir.join(format!("{name}.test-key.pem"));
                std::fs::read_to_string(&path).map_err(|source| PkiError::Write { path, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RsaKeys::from_list(keys))
    }
}

/// The real shapes on RSA keys: a root and a domain CA, shared (as UZI and PKIoverheid
/// Private Services share theirs), with a UZI server CA and a PKIoverheid issuing CA
/// under the domain CA.
pub struct RealPki {
    pub root: Authority,
    pub domain_ca: Authority,
    pub uzi_server_ca: Authority,
    pub pkio_issuing_ca: Authority,
}

impl RealPki {
    /// The four CAs, valid from `not_before` to `not_after`.
    pub fn new(
        keys: &RsaKeys,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<RealPki, PkiError> {
        let spec = |organisation: &str, common_name: &str| CaSpec {
            organisation: organisation.to_string(),
            common_name: common_name.to_string(),
            not_before,
            not_after,
        };
        let root = Authority::root(
            &spec("wijkpoort dev Staat", "wijkpoort dev Private Root CA"),
            Some(&keys.root),
        )?;
        let domain_ca = root.intermediate(
            &spec(
                "wijkpoort dev Staat",
                "wijkpoort dev Domein Private Services CA",
            ),
            Some(&keys.domain_ca),
        )?;
        let uzi_server_ca = domain_ca.intermediate(
            &spec(
                "wijkpoort dev CIBG",
                "wijkpoort dev UZI-register Private Server CA",
            ),
            Some(&keys.uzi_server_ca),
        )?;
        let pkio_issuing_ca = domain_ca.intermediate(
            &spec(
                "wijkpoort dev TSP",
                "wijkpoort dev PKIoverheid Private Services CA",
            ),
            Some(&keys.pkio_issuing_ca),
        )?;
        Ok(RealPki {
            root,
            domain_ca,
            uzi_server_ca,
            pkio_issuing_ca,
        })
    }
}

/// Which dev PKI `wijkpoort certs dev` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Shape {
    /// One ECDSA P-256 CA issuing every leaf directly (the `dev` rule).
    #[default]
    Ecdsa,
    /// RSA: the practice on a UZI server certificate (root → domain CA → UZI server CA),
    /// the wijkteam and the auditor on PKIoverheid ones (→ PKIoverheid issuing CA).
    Uzi,
    /// RSA: all three on PKIoverheid certificates; the practice by an OIN.
    Pkioverheid,
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
    create_dir(dir)?;
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

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes a dev PKI in the real shapes with `keys` (see [`Shape`]): `ca.pem` (the RSA
/// root, the trust anchor), `uzi-server-ca.pem` and `pkio-issuing-ca.pem` (the issuing
/// CAs), `{practice,wijkteam,auditor}.pem` (each leaf followed by its intermediates)
/// and `.key` (the leaf's RSA key), and `issuing_cas.toml` (the config section naming
/// the issuing CAs). No CA key is written. Returns the three leaves' identities.
pub fn write_real_pki(
    dir: &Path,
    shape: Shape,
    keys: &RsaKeys,
) -> Result<(DevPki, [String; 3]), PkiError> {
    create_dir(dir)?;
    let now = Utc::now();
    let pki = RealPki::new(keys, now - Duration::days(1), now + Duration::days(3650))?;
    write(&dir.join("ca.pem"), &pki.root.cert_pem, false)?;
    write(
        &dir.join("uzi-server-ca.pem"),
        &pki.uzi_server_ca.cert_pem,
        false,
    )?;
    write(
        &dir.join("pkio-issuing-ca.pem"),
        &pki.pkio_issuing_ca.cert_pem,
        false,
    )?;
    let practice_org = "Huisartsenpraktijk De Linde (dev)";
    let (practice_id, practice) = match shape {
        Shape::Pkioverheid => (
            DEV_PRACTICE_OIN,
            pki.pkio_issuing_ca.issue(
                &LeafSpec::new(DEV_PRACTICE_OIN, practice_org, "practice.wijkpoort.test")
                    .with_key(&keys.practice),
            )?,
        ),
        _ => (
            DEV_PRACTICE_ID,
            pki.uzi_server_ca.issue(
                &LeafSpec::uzi_server(
                    DEV_PRACTICE_ID,
                    DEV_PRACTICE_UZI_NUMBER,
                    practice_org,
                    "practice.wijkpoort.test",
                )
                .with_key(&keys.practice),
            )?,
        ),
    };
    let wijkteam = pki.pkio_issuing_ca.issue(
        &LeafSpec::new(
            DEV_WIJKTEAM_ID,
            "Gemeente Voorbeeldstad wijkteam (dev)",
            "wijkteam.wijkpoort.test",
        )
        .with_key(&keys.wijkteam),
    )?;
    let auditor = pki.pkio_issuing_ca.issue(
        &LeafSpec::new(
            DEV_AUDITOR_ID,
            "Functionaris gegevensbescherming (dev)",
            "auditor.wijkpoort.test",
        )
        .with_key(&keys.auditor),
    )?;
    for (role, issued) in [
        ("practice", &practice),
        ("wijkteam", &wijkteam),
        ("auditor", &auditor),
    ] {
        write(&dir.join(format!("{role}.pem")), &issued.chain_pem, false)?;
        write(&dir.join(format!("{role}.key")), &issued.key_pem, true)?;
    }
    write(
        &dir.join("issuing_cas.toml"),
        &format!(
            r#"# The issuing CAs of this dev PKI; paste into both gateways' configs.
[[issuing_cas]]
cert = "uzi-server-ca.pem"
rule = "uzi"
oid_ca = "{DEV_UZI_OID_CA}"

[[issuing_cas]]
cert = "pkio-issuing-ca.pem"
rule = "pkioverheid"
"#
        ),
        false,
    )?;
    Ok((
        DevPki {
            dir: dir.to_path_buf(),
        },
        [
            practice_id.to_string(),
            DEV_WIJKTEAM_ID.to_string(),
            DEV_AUDITOR_ID.to_string(),
        ],
    ))
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
