//! Identity per issuing CA: which CA issued a peer's certificate decides how that
//! certificate names an organisation.
//!
//! UZI server certificates and PKIoverheid Private Services certificates chain to the
//! same PKIoverheid root, so a rule keyed on the trust anchor cannot tell them apart.
//! Each `[[issuing_cas]]` entry of the config names a CA that issues leaf certificates
//! and the rule its leaves follow:
//!
//! - `uzi`: the URA from the subjectAltName otherName 2.5.5.5
//!   (`<OID CA>-<version>-<UZI nr>-<card type>-<URA>-<role>-<AGB>`), card type `S` only,
//!   never from the subject. A `permanentIdentifier` otherName (1.3.6.1.5.5.7.8.3), if
//!   present, must equal the URA; a subject serialNumber, if present, must be the UZI
//!   number (the register's profile puts the UZI number there). Other otherNames are
//!   ignored.
//! - `pkioverheid`: the OIN from exactly one subject serialNumber, 20 digits.
//! - `dev`: the dev PKI's rule — exactly one subject serialNumber, digits.
//!
//! Several CAs may share a rule. Without an `[[issuing_cas]]` section, every trust
//! anchor is an issuing CA with the `dev` rule: leaves issued *directly* by a trust
//! anchor are identified as the dev PKI's are, and a leaf under an intermediate is
//! refused.
//!
//! [`Issuers::identify`] runs after rustls has verified the chain: the leaf's issuer must
//! be one of the configured CAs by name (the raw issuer DN equals the CA's subject) and by
//! signature (the leaf verifies with that CA's key, x509-parser with ring). Ambiguous or
//! malformed certificates are refused with a reason naming what is wrong; nothing is
//! trimmed or guessed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use x509_parser::der_parser::oid;
use x509_parser::der_parser::Oid;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::OID_X509_SERIALNUMBER;
use x509_parser::prelude::*;

use crate::identity::{is_dotted_oid, parse_uzi, CertIdentity, IdentityError, OrgId, UziName};

/// The UZI register's otherName in subjectAltName.
const UZI_OTHER_NAME: Oid<'static> = oid!(2.5.5 .5);
/// RFC 4043 permanentIdentifier.
const PERMANENT_IDENTIFIER: Oid<'static> = oid!(1.3.6 .1 .5 .5 .7 .8 .3);

/// How the leaves of an issuing CA name their organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// UZI server certificates: the URA from the otherName 2.5.5.5, card type S.
    Uzi,
    /// PKIoverheid certificates: the OIN (20 digits) from the subject serialNumber.
    Pkioverheid,
    /// The dev PKI: one subject serialNumber of digits.
    Dev,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rule::Uzi => "uzi",
            Rule::Pkioverheid => "pkioverheid",
            Rule::Dev => "dev",
        })
    }
}

/// One `[[issuing_cas]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuingCa {
    /// PEM: the issuing CA's certificate (exactly one).
    pub cert: PathBuf,
    pub rule: Rule,
    /// `uzi` only: the OID the otherName's first field must carry (the UZI server CA's
    /// OID). Without it any well-formed OID is accepted there.
    #[serde(default)]
    pub oid_ca: Option<String>,
}

/// A CA whose leaves are identified by `rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuingCa {
    der: Vec<u8>,
    rule: Rule,
    oid_ca: Option<String>,
    /// The CA's subject, for messages.
    name: String,
}

impl IssuingCa {
    /// An issuing CA from its certificate (DER); it must parse and be a CA.
    pub fn new(der: Vec<u8>, rule: Rule) -> Result<IssuingCa, String> {
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|e| format!("not a readable certificate: {e}"))?;
        match cert.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            _ => {
                return Err(format!(
                    "{} is not a CA certificate (basicConstraints cA is not set)",
                    cert.subject()
                ))
            }
        }
        let name = cert.subject().to_string();
        Ok(IssuingCa {
            der,
            rule,
            oid_ca: None,
            name,
        })
    }

    /// `uzi` only: the OID the otherName's first field must name.
    pub fn with_oid_ca(mut self, oid_ca: impl Into<String>) -> IssuingCa {
        self.oid_ca = Some(oid_ca.into());
        self
    }

    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// The CA's certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.der
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The issuing CAs whose leaves this gateway accepts, and how it reads each one's
/// identities. Cheap to clone; the listener and every relay hold one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuers {
    cas: Arc<Vec<IssuingCa>>,
}

impl Issuers {
    pub fn new(cas: Vec<IssuingCa>) -> Issuers {
        Issuers { cas: Arc::new(cas) }
    }

    /// Without an `[[issuing_cas]]` section: every trust anchor issues with the `dev`
    /// rule, and only leaves it issued directly are accepted.
    pub fn from_trust_anchors(anchors: &[CertificateDer<'_>]) -> Result<Issuers, String> {
        anchors
            .iter()
            .map(|a| IssuingCa::new(a.to_vec(), Rule::Dev))
            .collect::<Result<Vec<_>, _>>()
            .map(Issuers::new)
    }

    pub fn cas(&self) -> &[IssuingCa] {
        &self.cas
    }

    /// Who a verified leaf certificate (DER) says its holder is, read the way its
    /// issuing CA's rule says; or why it is refused.
    pub fn identify(&self, leaf_der: &[u8]) -> Result<CertIdentity, IdentityError> {
        let (_, leaf) = X509Certificate::from_der(leaf_der)
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let issuer_raw = leaf.issuer().as_raw();
        let mut named = false;
        for ca in self.cas.iter() {
            let Ok((_, ca_cert)) = X509Certificate::from_der(&ca.der) else {
                continue; // checked in IssuingCa::new
            };
            if ca_cert.subject().as_raw() != issuer_raw {
                continue;
            }
            named = true;
            if leaf.verify_signature(Some(ca_cert.public_key())).is_ok() {
                return read(&leaf, ca);
            }
        }
        let issuer = leaf.issuer().to_string();
        Err(if named {
            IdentityError::IssuerSignature { issuer }
        } else {
            IdentityError::UnknownIssuer { issuer }
        })
    }
}

/// Reads the identity of a certificate (DER) by `rule` as if a CA of that rule had
/// issued it, without the issuer checks: what the fuzz targets drive
/// ([`crate::fuzzing`]), since a fuzzer cannot forge a CA's signature to get past them.
pub(crate) fn read_by_rule(der: &[u8], rule: Rule) -> Result<CertIdentity, IdentityError> {
    let (_, leaf) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let ca = IssuingCa {
        der: Vec::new(),
        rule,
        oid_ca: None,
        name: String::new(),
    };
    read(&leaf, &ca)
}

/// Reads the identity of `leaf`, issued by `ca`, by `ca`'s rule.
fn read(leaf: &X509Certificate<'_>, ca: &IssuingCa) -> Result<CertIdentity, IdentityError> {
    // A SAN that cannot be read is refused under every rule: nothing falls back.
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| IdentityError::BadSubjectAltName(e.to_string()))?;
    let names: &[GeneralName<'_>] = san
        .as_ref()
        .map(|s| s.value.general_names.as_slice())
        .unwrap_or(&[]);
    let serials = serial_numbers(leaf)?;
    let (organisation_id, uzi) = match ca.rule {
        Rule::Dev => {
            let s = exactly_one(&serials)?;
            digits(s, None)?;
            (OrgId::new(s), None)
        }
        Rule::Pkioverheid => {
            let s = exactly_one(&serials)?;
            digits(s, Some(20))?;
            (OrgId::new(s), None)
        }
        Rule::Uzi => {
            let uzi = uzi_name(names, ca.oid_ca.as_deref())?;
            match serials.as_slice() {
                [] => {}
                [s] if *s == uzi.uzi_number => {}
                [s] => {
                    return Err(IdentityError::UziNumberMismatch {
                        serial_number: s.clone(),
                        uzi_number: uzi.uzi_number.clone(),
                    })
                }
                _ => {
                    return Err(IdentityError::SerialNumberCount {
                        found: serials.len(),
                        allowed: "at most one (the UZI number) is allowed",
                    })
                }
            }
            (OrgId::new(uzi.ura.clone()), Some(uzi))
        }
    };
    let first = |mut it: Box<dyn Iterator<Item = &AttributeTypeAndValue> + '_>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
    };
    Ok(CertIdentity {
        organisation_id,
        organisation: first(Box::new(leaf.subject().iter_organization())),
        common_name: first(Box::new(leaf.subject().iter_common_name())),
        serial: leaf.raw_serial_as_string(),
        uzi,
    })
}

/// Every subject serialNumber, as written. One in a multi-valued RDN, or one that is
/// not a string, is refused.
fn serial_numbers(leaf: &X509Certificate<'_>) -> Result<Vec<String>, IdentityError> {
    let mut found = Vec::new();
    for rdn in leaf.subject().iter() {
        let attrs: Vec<&AttributeTypeAndValue> = rdn.iter().collect();
        for attr in &attrs {
            if *attr.attr_type() != OID_X509_SERIALNUMBER {
                continue;
            }
            if attrs.len() > 1 {
                return Err(IdentityError::SerialNumberInMultiValuedRdn {
                    others: attrs.len() - 1,
                });
            }
            let value = attr.as_str().map_err(|_| IdentityError::BadSerialNumber {
                value: String::new(),
                problem: "is not a string",
            })?;
            found.push(value.to_string());
        }
    }
    Ok(found)
}

fn exactly_one(serials: &[String]) -> Result<&str, IdentityError> {
    match serials {
        [one] => Ok(one),
        _ => Err(IdentityError::SerialNumberCount {
            found: serials.len(),
            allowed: "exactly one is required",
        }),
    }
}

/// `value` must be ASCII digits only (of `len` digits if given); whitespace is named.
fn digits(value: &str, len: Option<usize>) -> Result<(), IdentityError> {
    let bad = |problem| {
        Err(IdentityError::BadSerialNumber {
            value: value.to_string(),
            problem,
        })
    };
    if value.is_empty() {
        return bad("is empty");
    }
    if value.chars().any(char::is_whitespace) {
        return bad("contains whitespace");
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return bad("is not all digits");
    }
    if len.is_some_and(|n| value.len() != n) {
        return bad("is not an OIN of 20 digits");
    }
    Ok(())
}

/// The one UZI otherName, checked: card type S, the OID CA if configured, and a
/// permanentIdentifier that agrees.
fn uzi_name(names: &[GeneralName<'_>], oid_ca: Option<&str>) -> Result<UziName, IdentityError> {
    let mut uzi_values = Vec::new();
    let mut permanent = Vec::new();
    for name in names {
        if let GeneralName::OtherName(oid, value) = name {
            if *oid == UZI_OTHER_NAME {
                uzi_values.push(*value);
            } else if *oid == PERMANENT_IDENTIFIER {
                permanent.push(*value);
            }
        }
    }
    let value = match uzi_values.as_slice() {
        [] => return Err(IdentityError::NoUziName),
        [one] => *one,
        more => return Err(IdentityError::UziNameCount(more.len())),
    };
    let text = other_name_string(value).ok_or_else(|| {
        IdentityError::BadUziName(
            "the value is not a DER IA5String, UTF8String or PrintableString".into(),
        )
    })?;
    let uzi = parse_uzi(&text)?;
    if uzi.card_type != "S" {
        return Err(IdentityError::UziCardType(uzi.card_type));
    }
    if let Some(expected) = oid_ca {
        if uzi.oid_ca != expected {
            return Err(IdentityError::UziOidCa {
                found: uzi.oid_ca,
                expected: expected.to_string(),
            });
        }
    }
    match permanent.as_slice() {
        [] => {}
        [one] => {
            let found = permanent_identifier(one).map_err(IdentityError::BadPermanentIdentifier)?;
            if found != uzi.ura {
                return Err(IdentityError::PermanentIdentifierMismatch {
                    found,
                    ura: uzi.ura,
                });
            }
        }
        more => {
            return Err(IdentityError::BadPermanentIdentifier(format!(
                "the subjectAltName holds {} of them; at most one is allowed",
                more.len()
            )))
        }
    }
    Ok(uzi)
}

/// One DER TLV: (tag, content, rest). Definite lengths only, as DER has.
fn tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The otherName value without its `[0] EXPLICIT` wrapper (x509-parser leaves it on).
fn unwrap_explicit(value: &[u8]) -> Option<&[u8]> {
    match tlv(value)? {
        (0xa0, inner, []) => Some(inner),
        _ => Some(value),
    }
}

/// The string of an otherName value: one IA5String, UTF8String or PrintableString.
fn other_name_string(value: &[u8]) -> Option<String> {
    match tlv(unwrap_explicit(value)?)? {
        (0x16 | 0x0c | 0x13, text, []) => std::str::from_utf8(text).ok().map(str::to_string),
        _ => None,
    }
}

/// RFC 4043: `SEQUENCE { identifierValue UTF8String OPTIONAL, assigner OID OPTIONAL }`;
/// the identifierValue, which must be there.
fn permanent_identifier(value: &[u8]) -> Result<String, String> {
    let inner = unwrap_explicit(value).ok_or("the value is not DER")?;
    let Some((0x30, mut seq, [])) = tlv(inner) else {
        return Err("the value is not a SEQUENCE".into());
    };
    let mut identifier = None;
    if let Some((0x0c, text, rest)) = tlv(seq) {
        identifier = Some(
            std::str::from_utf8(text)
                .map_err(|_| "the identifierValue is not UTF-8")?
                .to_string(),
        );
        seq = rest;
    }
    if let Some((0x06, _, rest)) = tlv(seq) {
        seq = rest;
    }
    if !seq.is_empty() {
        return Err("the SEQUENCE holds more than identifierValue and assigner".into());
    }
    identifier.ok_or_else(|| "it has no identifierValue".into())
}

/// Validates the `[[issuing_cas]]` section (or, without one, takes the trust anchors
/// with the `dev` rule), and that no auditor has the gateway's own identity or a peer's.
/// `peers` are the configured peers' names and identities; `err` makes the config's
/// error naming the field (config validation calls this; this module does not import
/// the config, which imports it).
pub fn validate<E>(
    raw: Option<Vec<RawIssuingCa>>,
    trust_anchors: &[CertificateDer<'static>],
    own_identity: &str,
    peers: &[(&str, &OrgId)],
    auditors: &[OrgId],
    base: &Path,
    err: &dyn Fn(&str, String) -> E,
) -> Result<Issuers, E> {
    for (i, auditor) in auditors.iter().enumerate() {
        let field = format!("auditors[{i}].identity");
        if *auditor == *own_identity {
            return Err(err(
                &field,
                format!("{auditor} is this gateway's own identity; an auditor must be another organisation"),
            ));
        }
        if let Some((name, _)) = peers.iter().find(|(_, id)| *id == auditor) {
            return Err(err(
                &field,
                format!(
                    "{auditor} is the identity of peer {name:?}; a peer's gateway may not have audit access"
                ),
            ));
        }
    }
    let Some(raw) = raw else {
        return Issuers::from_trust_anchors(trust_anchors).map_err(|p| err("tls.trust_anchors", p));
    };
    if raw.is_empty() {
        return Err(err(
            "issuing_cas",
            "names no CA; leave the section out, or name the CAs that issue peers' certificates"
                .into(),
        ));
    }
    let mut cas: Vec<IssuingCa> = Vec::new();
    for (i, entry) in raw.into_iter().enumerate() {
        let field = |f: &str| format!("issuing_cas[{i}].{f}");
        let path = base.join(&entry.cert);
        let certs = CertificateDer::pem_file_iter(&path)
            .map_err(|e| {
                err(
                    &field("cert"),
                    format!("{}: cannot read PEM certificates: {e}", path.display()),
                )
            })?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                err(
                    &field("cert"),
                    format!("{}: bad PEM certificate: {e}", path.display()),
                )
            })?;
        let [cert] = certs.as_slice() else {
            return Err(err(
                &field("cert"),
                format!(
                    "{}: holds {} certificates; name each issuing CA in an entry of its own",
                    path.display(),
                    certs.len()
                ),
            ));
        };
        let mut ca = IssuingCa::new(cert.to_vec(), entry.rule)
            .map_err(|p| err(&field("cert"), format!("{}: {p}", path.display())))?;
        if let Some(oid_ca) = entry.oid_ca {
            if entry.rule != Rule::Uzi {
                return Err(err(
                    &field("oid_ca"),
                    format!("only the uzi rule has an OID CA, not {}", entry.rule),
                ));
            }
            if !is_dotted_oid(&oid_ca) {
                return Err(err(
                    &field("oid_ca"),
                    format!("{oid_ca:?} is not a dotted OID"),
                ));
            }
            ca = ca.with_oid_ca(oid_ca);
        }
        if cas.iter().any(|c| c.der == ca.der) {
            return Err(err(
                &field("cert"),
                format!("{}: this CA is listed twice", path.display()),
            ));
        }
        cas.push(ca);
    }
    Ok(Issuers::new(cas))
}

#[cfg(all(test, feature = "dev"))]
mod tests;
