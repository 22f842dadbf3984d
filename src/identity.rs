//! Who a certificate says its holder is. The identity of a peer is its organisation
//! identifier: the URA from a UZI server certificate's subjectAltName otherName
//! (OID 2.5.5.5), or else the subject `serialNumber` (an OIN in PKIoverheid
//! certificates, the dev PKI's numbers). Trust in the certificate (chain, validity) is
//! the TLS layer's job; this module only reads what a trusted certificate says.

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
    pub uzi_number: String,
    pub card_type: String,
    pub ura: String,
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

/// Parses `<OID CA>-<version>-<UZI nr>-<card type>-<URA>-<role>-<AGB>`.
pub fn parse_uzi(text: &str) -> Result<UziName, IdentityError> {
    let parts: Vec<&str> = text.split('-').collect();
    if parts.len() != 7 {
        return Err(IdentityError::BadUziName(format!(
            "expected 7 fields separated by '-', found {}",
            parts.len()
        )));
    }
    let ura = parts[4];
    if ura.is_empty() || !ura.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdentityError::BadUziName(
            "the URA field is not a number".into(),
        ));
    }
    Ok(UziName {
        uzi_number: parts[2].to_string(),
        card_type: parts[3].to_string(),
        ura: ura.to_string(),
        agb: parts[6].to_string(),
    })
}

/// When a DER certificate stops being valid (`None` if it cannot be read).
pub fn not_after(cert_der: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
}
