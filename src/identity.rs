//! Who a certificate says its holder is: the organisation identifier (URA, OIN), the
//! types that carry it, and the reasons a certificate names no usable one.
//!
//! A *peer's* (or auditor's) certificate is read by [`crate::issuers::Issuers::identify`],
//! the way the rule of the CA that issued it says. [`identify`] here is the tolerant
//! reader of the gateway's *own* certificate, which config validation compares with the
//! configured `identity`: the URA from a UZI otherName (OID 2.5.5.5), or else the subject
//! `serialNumber`. Trust in a certificate (chain, validity) is the TLS layer's job.

use x509_parser::der_parser::oid;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::OID_X509_SERIALNUMBER;
use x509_parser::prelude::*;

use serde::{Deserialize, Serialize};

/// The OID of the UZI register's otherName in subjectAltName.
const UZI_OTHER_NAME: x509_parser::der_parser::Oid<'static> = oid!(2.5.5 .5);

/// An organisation identifier (URA, OIN or AGB) as a certificate carries it: who a
/// peer, an auditor or this gateway is. Distinct from a peer's configured name
/// ([`crate::config::PeerName`]), which is only the local system's short word for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrgId(String);

impl OrgId {
    pub fn new(id: impl Into<String>) -> OrgId {
        OrgId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OrgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for OrgId {
    fn from(id: String) -> OrgId {
        OrgId(id)
    }
}

impl From<&str> for OrgId {
    fn from(id: &str) -> OrgId {
        OrgId(id.to_string())
    }
}

impl PartialEq<str> for OrgId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for OrgId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl AsRef<str> for OrgId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What a certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The organisation identifier (URA, OIN or AGB): the peer's identity.
    pub organisation_id: OrgId,
    pub organisation: Option<String>,
    pub common_name: Option<String>,
    /// The certificate's serial number (hex, colon-separated), for audit records.
    pub serial: String,
    /// The parsed UZI otherName, for UZI server certificates.
    pub uzi: Option<UziName>,
}

/// The UZI otherName: `<OID CA>-<version>-<UZI nr>-<card type>-<URA>-<role>-<AGB>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UziName {
    /// The OID of the CA that issued the certificate (dotted).
    pub oid_ca: String,
    pub version: String,
    pub uzi_number: String,
    pub card_type: String,
    pub ura: String,
    /// The role code (`00.000` for server certificates).
    pub role: String,
    pub agb: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the certificate names no organisation identifier (no UZI otherName with a URA, no subject serialNumber)")]
    NoOrganisationId,
    #[error("the certificate's UZI otherName is malformed: {0}")]
    BadUziName(String),
    #[error("the certificate's issuer ({issuer}) is not a configured issuing CA")]
    UnknownIssuer { issuer: String },
    #[error("the certificate names the issuing CA {issuer}, but its signature does not verify with that CA's key")]
    IssuerSignature { issuer: String },
    #[error("the certificate's subject holds {found} serialNumber attributes; {allowed}")]
    SerialNumberCount { found: usize, allowed: &'static str },
    #[error("the certificate's subject serialNumber is in a multi-valued RDN with {others} other attribute(s)")]
    SerialNumberInMultiValuedRdn { others: usize },
    #[error("the certificate's subject serialNumber {value:?} {problem}")]
    BadSerialNumber {
        value: String,
        problem: &'static str,
    },
    #[error("the certificate's subjectAltName cannot be parsed: {0}")]
    BadSubjectAltName(String),
    #[error("the certificate has no UZI otherName (2.5.5.5) in its subjectAltName")]
    NoUziName,
    #[error("the certificate's subjectAltName holds {0} UZI otherNames (2.5.5.5); exactly one is allowed")]
    UziNameCount(usize),
    #[error("the certificate's UZI card type is {0:?}; only server certificates (S) are accepted")]
    UziCardType(String),
    #[error("the certificate's UZI otherName names CA {found}, not {expected} as configured")]
    UziOidCa { found: String, expected: String },
    #[error("the certificate's permanentIdentifier otherName is malformed: {0}")]
    BadPermanentIdentifier(String),
    #[error("the certificate's permanentIdentifier {found:?} is not its URA {ura}")]
    PermanentIdentifierMismatch { found: String, ura: String },
    #[error("the certificate's subject serialNumber {serial_number:?} is not the UZI number {uzi_number} of its UZI otherName")]
    UziNumberMismatch {
        serial_number: String,
        uzi_number: String,
    },
}

/// Reads the identity from a DER certificate.
pub fn identify(cert_der: &[u8]) -> Result<CertIdentity, IdentityError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let subject = cert.subject();
    let first = |mut it: Box<dyn Iterator<Item = &AttributeTypeAndValue> + '_>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
    };
    let serial_number = first(Box::new(subject.iter_by_oid(&OID_X509_SERIALNUMBER)));
    let organisation = first(Box::new(subject.iter_organization()));
    let common_name = first(Box::new(subject.iter_common_name()));
    let uzi = uzi_name(&cert)?;
    let organisation_id = match (&uzi, serial_number) {
        (Some(u), _) => OrgId(u.ura.clone()),
        (None, Some(s)) if !s.trim().is_empty() => OrgId(s.trim().to_string()),
        _ => return Err(IdentityError::NoOrganisationId),
    };
    Ok(CertIdentity {
        organisation_id,
        organisation,
        common_name,
        serial: cert.raw_serial_as_string(),
        uzi,
    })
}

fn uzi_name(cert: &X509Certificate<'_>) -> Result<Option<UziName>, IdentityError> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Ok(None);
    };
    for name in &san.value.general_names {
        if let GeneralName::OtherName(oid, value) = name {
            if *oid == UZI_OTHER_NAME {
                let text = der_string(value)
                    .ok_or_else(|| IdentityError::BadUziName("value is not a DER string".into()))?;
                return parse_uzi(&text).map(Some);
            }
        }
    }
    Ok(None)
}

/// The string inside an otherName value, which may or may not still carry its
/// `[0] EXPLICIT` wrapper: the innermost IA5String, UTF8String or PrintableString.
fn der_string(bytes: &[u8]) -> Option<String> {
    for start in 0..bytes.len().saturating_sub(1) {
        let tag = bytes[start];
        let len = usize::from(bytes[start + 1]);
        if matches!(tag, 0x16 | 0x0c | 0x13) && len < 0x80 && start + 2 + len == bytes.len() {
            return std::str::from_utf8(&bytes[start + 2..])
                .ok()
                .map(str::to_string);
        }
    }
    None
}

/// Parses `<OID CA>-<version>-<UZI nr>-<card type>-<URA>-<role>-<AGB>`, strictly: seven
/// fields, no whitespace anywhere; the OID CA dotted numbers; version, UZI number and
/// AGB digits; the card type one capital letter; the URA eight digits; the role digits
/// and dots (`00.000`). Which card types are acceptable is the caller's rule.
pub fn parse_uzi(text: &str) -> Result<UziName, IdentityError> {
    let bad = |what: String| Err(IdentityError::BadUziName(what));
    if text.chars().any(char::is_whitespace) {
        return bad(format!("{text:?} contains whitespace"));
    }
    let parts: Vec<&str> = text.split('-').collect();
    let [oid_ca, version, uzi_number, card_type, ura, role, agb] = parts.as_slice() else {
        return bad(format!(
            "expected 7 fields separated by '-', found {}",
            parts.len()
        ));
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !is_dotted_oid(oid_ca) {
        return bad(format!("the OID CA field {oid_ca:?} is not a dotted OID"));
    }
    if !digits(version) {
        return bad(format!("the version field {version:?} is not a number"));
    }
    if !digits(uzi_number) {
        return bad(format!(
            "the UZI number field {uzi_number:?} is not a number"
        ));
    }
    if card_type.len() != 1 || !card_type.bytes().all(|b| b.is_ascii_uppercase()) {
        return bad(format!(
            "the card type field {card_type:?} is not one capital letter"
        ));
    }
    if ura.len() != 8 || !digits(ura) {
        return bad(format!("the URA field {ura:?} is not a number of 8 digits"));
    }
    if role.is_empty() || !role.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return bad(format!("the role field {role:?} is not a role code"));
    }
    if !digits(agb) {
        return bad(format!("the AGB field {agb:?} is not a number"));
    }
    Ok(UziName {
        oid_ca: oid_ca.to_string(),
        version: version.to_string(),
        uzi_number: uzi_number.to_string(),
        card_type: card_type.to_string(),
        ura: ura.to_string(),
        role: role.to_string(),
        agb: agb.to_string(),
    })
}

/// When a DER certificate stops being valid (`None` if it cannot be read).
pub fn not_after(cert_der: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
}

/// When a DER certificate's validity begins.
pub fn not_before(cert_der: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    chrono::DateTime::from_timestamp(cert.validity().not_before.timestamp(), 0)
}

/// `2.16.528.1…`: two or more numbers separated by single dots.
pub(crate) fn is_dotted_oid(s: &str) -> bool {
    s.split('.').count() >= 2
        && s.split('.')
            .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()))
}
