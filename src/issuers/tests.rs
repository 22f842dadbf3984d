//! Every identity case of an issuing CA's rule, accepted or refused with its reason, on
//! certificates made here: ECDSA from the dev PKI for most, certificates whose subject or
//! subjectAltName rcgen cannot write (two serialNumbers, a multi-valued RDN, two UZI
//! otherNames, a SAN that does not parse) built byte by byte and signed with the CA's
//! key, and the real RSA shapes from the test-only keys in `tests/fixtures/rsa/`.

use std::sync::OnceLock;

use chrono::{TimeZone, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::*;

use super::*;
use crate::dev::pki::{
    der_oid, der_other_name, der_tlv, uzi_other_name, Authority, LeafSpec, RealPki, RsaKeys,
    DEV_UZI_OID_CA,
};

const URA: &str = "90000123";
const UZI_NR: &str = "12345678";
const OIN: &str = "00000001003214345000";
const SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];
const ORGANISATION: &[u64] = &[2, 5, 4, 10];
const COMMON_NAME: &[u64] = &[2, 5, 4, 3];

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .to_vec()
}

fn ca_der(ca: &Authority) -> Vec<u8> {
    der(&ca.cert_pem)
}

fn issuers(cas: &[(&Authority, Rule)]) -> Issuers {
    Issuers::new(
        cas.iter()
            .map(|(ca, rule)| IssuingCa::new(ca_der(ca), *rule).expect("a CA"))
            .collect(),
    )
}

fn leaf(ca: &Authority, spec: &LeafSpec) -> Vec<u8> {
    der(&ca.issue(spec).expect("a leaf").cert_pem)
}

/// A UZI server certificate spec (otherName, permanentIdentifier, serialNumber = UZI nr).
fn uzi_spec() -> LeafSpec {
    LeafSpec::uzi_server(URA, UZI_NR, "Huisartsenpraktijk De Linde", "linde.test")
}

/// A certificate built byte by byte: `subject` as RDNs of (type, PrintableString value),
/// `san` the DER of a GeneralNames SEQUENCE (or anything else), signed by `ca`'s
/// ECDSA P-256 key with `ca`'s subject as its issuer.
fn raw_leaf(ca: &Authority, subject: &[&[(&[u64], &str)]], san: Option<Vec<u8>>) -> Vec<u8> {
    let ca_cert = ca_der(ca);
    let (_, parsed) = X509Certificate::from_der(&ca_cert).unwrap();
    let sig_alg = der_tlv(0x30, &der_oid(&[1, 2, 840, 10045, 4, 3, 2]));
    let mut name = Vec::new();
    for rdn in subject {
        let mut set = Vec::new();
        for (oid, value) in rdn.iter() {
            let mut atv = der_oid(oid);
            atv.extend(der_tlv(0x13, value.as_bytes()));
            set.extend(der_tlv(0x30, &atv));
        }
        name.extend(der_tlv(0x31, &set));
    }
    let mut validity = der_tlv(0x17, b"240101000000Z");
    validity.extend(der_tlv(0x17, b"491231000000Z"));
    let mut tbs = der_tlv(0xa0, &der_tlv(0x02, &[2]));
    tbs.extend(der_tlv(0x02, &[0x01, 0x23, 0x45, 0x67]));
    tbs.extend(&sig_alg);
    tbs.extend(parsed.subject().as_raw());
    tbs.extend(der_tlv(0x30, &validity));
    tbs.extend(der_tlv(0x30, &name));
    tbs.extend(parsed.public_key().raw);
    if let Some(san) = san {
        let mut ext = der_oid(&[2, 5, 29, 17]);
        ext.extend(der_tlv(0x04, &san));
        tbs.extend(der_tlv(0xa3, &der_tlv(0x30, &der_tlv(0x30, &ext))));
    }
    let tbs = der_tlv(0x30, &tbs);
    let key = PrivatePkcs8KeyDer::from_pem_slice(ca.key_pem.as_bytes()).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        key.secret_pkcs8_der(),
        &rng,
    )
    .unwrap();
    let signature = signer.sign(&rng, &tbs).unwrap();
    let mut bits = vec![0];
    bits.extend_from_slice(signature.as_ref());
    let mut cert = tbs;
    cert.extend(sig_alg);
    cert.extend(der_tlv(0x03, &bits));
    der_tlv(0x30, &cert)
}

/// A GeneralNames SEQUENCE of the given names (each a GeneralName's DER).
fn general_names(names: &[Vec<u8>]) -> Vec<u8> {
    der_tlv(0x30, &names.concat())
}

fn uzi_name(value: &str) -> Vec<u8> {
    der_other_name(&[2, 5, 5, 5], &der_tlv(0x16, value.as_bytes()))
}

fn permanent_identifier(value: &str) -> Vec<u8> {
    der_other_name(
        &[1, 3, 6, 1, 5, 5, 7, 8, 3],
        &der_tlv(0x30, &der_tlv(0x0c, value.as_bytes())),
    )
}

fn uzi_value() -> String {
    uzi_other_name(DEV_UZI_OID_CA, UZI_NR, "S", URA)
}

fn reason(result: Result<CertIdentity, IdentityError>) -> String {
    result.expect_err("refused").to_string()
}

// ---------------------------------------------------------------------------------
// Which CA issued it

#[test]
fn without_a_section_a_leaf_issued_directly_by_a_trust_anchor_follows_the_dev_rule() {
    let ca = Authority::new("anchor").unwrap();
    let anchors = [CertificateDer::from(ca_der(&ca))];
    let issuers = Issuers::from_trust_anchors(&anchors).unwrap();
    let id = issuers
        .identify(&leaf(&ca, &LeafSpec::new(URA, "De Linde", "linde.test")))
        .unwrap();
    assert_eq!(id.organisation_id, URA);
    assert_eq!(id.organisation.as_deref(), Some("De Linde"));
    assert!(id.uzi.is_none());
}

#[test]
fn without_a_section_a_leaf_under_an_intermediate_is_refused() {
    let root = Authority::new("anchor").unwrap();
    let intermediate = root
        .intermediate(&crate::dev::pki::CaSpec::new("intermediate"), None)
        .unwrap();
    let anchors = [CertificateDer::from(ca_der(&root))];
    let issuers = Issuers::from_trust_anchors(&anchors).unwrap();
    let r = issuers.identify(&leaf(&intermediate, &LeafSpec::new(URA, "x", "x")));
    assert!(
        matches!(r, Err(IdentityError::UnknownIssuer { .. })),
        "{r:?}"
    );
    assert!(reason(r).contains("is not a configured issuing CA"));
}

#[test]
fn a_leaf_of_a_ca_that_is_not_configured_is_refused_naming_its_issuer() {
    let configured = Authority::new("configured").unwrap();
    let other = Authority::new("other").unwrap();
    let r =
        issuers(&[(&configured, Rule::Dev)]).identify(&leaf(&other, &LeafSpec::new(URA, "x", "x")));
    let text = reason(r);
    assert!(text.contains("CN=other CA"), "{text}");
    assert!(text.contains("not a configured issuing CA"), "{text}");
}

#[test]
fn a_leaf_naming_a_configured_ca_but_signed_by_another_key_is_refused() {
    // Same name, other key: the name alone does not make it the configured CA.
    let configured = Authority::new("twin").unwrap();
    let impostor = Authority::new("twin").unwrap();
    let r = issuers(&[(&configured, Rule::Dev)])
        .identify(&leaf(&impostor, &LeafSpec::new(URA, "x", "x")));
    assert!(
        matches!(r, Err(IdentityError::IssuerSignature { .. })),
        "{r:?}"
    );
    assert!(reason(r).contains("does not verify with that CA's key"));
}

#[test]
fn of_two_cas_with_one_name_the_one_whose_key_signed_it_decides_the_rule() {
    let old = Authority::new("renewed").unwrap();
    let new = Authority::new("renewed").unwrap();
    let issuers = issuers(&[(&old, Rule::Pkioverheid), (&new, Rule::Dev)]);
    let id = issuers
        .identify(&leaf(&new, &LeafSpec::new(URA, "x", "x")))
        .unwrap();
    assert_eq!(
        id.organisation_id, URA,
        "the dev rule of the CA that signed"
    );
}

#[test]
fn garbage_is_not_a_certificate() {
    let ca = Authority::new("ca").unwrap();
    assert!(matches!(
        issuers(&[(&ca, Rule::Dev)]).identify(b"not a certificate"),
        Err(IdentityError::Unparsable(_))
    ));
}

#[test]
fn an_issuing_ca_must_be_a_ca_certificate() {
    let ca = Authority::new("ca").unwrap();
    let not_a_ca = leaf(&ca, &LeafSpec::new(URA, "x", "x"));
    let e = IssuingCa::new(not_a_ca, Rule::Dev).unwrap_err();
    assert!(e.contains("not a CA certificate"), "{e}");
}

// ---------------------------------------------------------------------------------
// The subject serialNumber (dev and pkioverheid)

#[test]
fn the_dev_rule_takes_one_serial_number_of_any_digits() {
    let ca = Authority::new("ca").unwrap();
    let issuers = issuers(&[(&ca, Rule::Dev)]);
    for id in ["1", URA, OIN] {
        let got = issuers.identify(&leaf(&ca, &LeafSpec::new(id, "x", "x")));
        assert_eq!(got.unwrap().organisation_id, id);
    }
}

#[test]
fn a_serial_number_that_is_not_digits_or_has_whitespace_is_refused_not_trimmed() {
    let ca = Authority::new("ca").unwrap();
    for rule in [Rule::Dev, Rule::Pkioverheid] {
        let issuers = issuers(&[(&ca, rule)]);
        for (value, problem) in [
            (" 00000001003214345000", "contains whitespace"),
            ("00000001003214345000 ", "contains whitespace"),
            ("0000000100321434 5000", "contains whitespace"),
            ("NL0000000100321434500", "is not all digits"),
            (" ", "contains whitespace"),
        ] {
            let r = issuers.identify(&leaf(&ca, &LeafSpec::new(value, "x", "x")));
            assert_eq!(
                r,
                Err(IdentityError::BadSerialNumber {
                    value: value.into(),
                    problem
                }),
                "{rule} {value:?}"
            );
        }
    }
}

#[test]
fn two_serial_numbers_are_refused_whichever_comes_first() {
    let ca = Authority::new("ca").unwrap();
    let cert = raw_leaf(
        &ca,
        &[
            &[(SERIAL_NUMBER, OIN)],
            &[(SERIAL_NUMBER, "00000001000000002000")],
            &[(COMMON_NAME, "x")],
        ],
        None,
    );
    for rule in [Rule::Dev, Rule::Pkioverheid] {
        let r = issuers(&[(&ca, rule)]).identify(&cert);
        assert!(
            matches!(r, Err(IdentityError::SerialNumberCount { found: 2, .. })),
            "{rule}: {r:?}"
        );
        assert!(reason(r).contains("exactly one is required"));
    }
}

#[test]
fn a_certificate_without_a_serial_number_is_refused() {
    let ca = Authority::new("ca").unwrap();
    let cert = raw_leaf(&ca, &[&[(ORGANISATION, "x")], &[(COMMON_NAME, "x")]], None);
    let r = issuers(&[(&ca, Rule::Pkioverheid)]).identify(&cert);
    assert!(
        matches!(r, Err(IdentityError::SerialNumberCount { found: 0, .. })),
        "{r:?}"
    );
}

#[test]
fn a_serial_number_in_a_multi_valued_rdn_is_refused() {
    let ca = Authority::new("ca").unwrap();
    let cert = raw_leaf(
        &ca,
        &[
            &[(SERIAL_NUMBER, OIN), (ORGANISATION, "Gemeente")],
            &[(COMMON_NAME, "x")],
        ],
        None,
    );
    for rule in [Rule::Dev, Rule::Pkioverheid, Rule::Uzi] {
        let r = issuers(&[(&ca, rule)]).identify(&cert);
        assert_eq!(
            r,
            Err(IdentityError::SerialNumberInMultiValuedRdn { others: 1 }),
            "{rule}"
        );
    }
}

#[test]
fn the_pkioverheid_rule_takes_an_oin_of_twenty_digits_only() {
    let ca = Authority::new("ca").unwrap();
    let issuers = issuers(&[(&ca, Rule::Pkioverheid)]);
    let id = issuers
        .identify(&leaf(&ca, &LeafSpec::new(OIN, "Gemeente", "gemeente.test")))
        .unwrap();
    assert_eq!(id.organisation_id, OIN);
    for short_or_long in [URA, "000000010032143450001"] {
        let r = issuers.identify(&leaf(&ca, &LeafSpec::new(short_or_long, "x", "x")));
        assert_eq!(
            reason(r),
            format!("the certificate's subject serialNumber {short_or_long:?} is not an OIN of 20 digits")
        );
    }
}

#[test]
fn the_pkioverheid_rule_ignores_a_uzi_other_name() {
    let ca = Authority::new("ca").unwrap();
    let mut spec = LeafSpec::new(OIN, "Gemeente", "gemeente.test");
    spec.uzi_other_name = Some(uzi_value());
    let id = issuers(&[(&ca, Rule::Pkioverheid)])
        .identify(&leaf(&ca, &spec))
        .unwrap();
    assert_eq!(id.organisation_id, OIN);
    assert!(id.uzi.is_none());
}

// ---------------------------------------------------------------------------------
// The UZI rule

#[test]
fn a_uzi_server_certificate_is_identified_by_its_ura() {
    let ca = Authority::new("uzi").unwrap();
    let id = issuers(&[(&ca, Rule::Uzi)])
        .identify(&leaf(&ca, &uzi_spec()))
        .unwrap();
    assert_eq!(id.organisation_id, URA);
    let uzi = id.uzi.unwrap();
    assert_eq!(
        (
            uzi.oid_ca.as_str(),
            uzi.uzi_number.as_str(),
            uzi.card_type.as_str(),
            uzi.ura.as_str()
        ),
        (DEV_UZI_OID_CA, UZI_NR, "S", URA)
    );
    assert_eq!(
        (uzi.role.as_str(), uzi.agb.as_str()),
        ("00.000", "00000000")
    );
}

#[test]
fn the_uzi_rule_never_reads_the_subject() {
    // The URA in the serialNumber, no otherName: no identity.
    let ca = Authority::new("uzi").unwrap();
    let r = issuers(&[(&ca, Rule::Uzi)]).identify(&leaf(&ca, &LeafSpec::new(URA, "x", "x")));
    assert_eq!(r, Err(IdentityError::NoUziName));
}

#[test]
fn without_permanent_identifier_or_serial_number_the_other_name_suffices() {
    let ca = Authority::new("uzi").unwrap();
    let cert = raw_leaf(
        &ca,
        &[&[(COMMON_NAME, "linde.test")]],
        Some(general_names(&[uzi_name(&uzi_value())])),
    );
    let id = issuers(&[(&ca, Rule::Uzi)]).identify(&cert).unwrap();
    assert_eq!(id.organisation_id, URA);
}

#[test]
fn other_other_names_are_ignored() {
    let ca = Authority::new("uzi").unwrap();
    let cert = raw_leaf(
        &ca,
        &[&[(SERIAL_NUMBER, UZI_NR)]],
        Some(general_names(&[
            der_other_name(&[1, 2, 3, 4], &der_tlv(0x0c, b"something else")),
            uzi_name(&uzi_value()),
            permanent_identifier(URA),
        ])),
    );
    let id = issuers(&[(&ca, Rule::Uzi)]).identify(&cert).unwrap();
    assert_eq!(id.organisation_id, URA);
}

#[test]
fn a_card_type_other_than_s_is_refused() {
    let ca = Authority::new("uzi").unwrap();
    let issuers = issuers(&[(&ca, Rule::Uzi)]);
    for card in ["Z", "N", "M"] {
        let mut spec = uzi_spec();
        spec.uzi_other_name = Some(uzi_other_name(DEV_UZI_OID_CA, UZI_NR, card, URA));
        let r = issuers.identify(&leaf(&ca, &spec));
        assert_eq!(r, Err(IdentityError::UziCardType(card.into())));
        assert!(reason(r).contains("only server certificates (S)"));
    }
}

#[test]
fn two_uzi_other_names_are_refused() {
    let ca = Authority::new("uzi").unwrap();
    let cert = raw_leaf(
        &ca,
        &[&[(SERIAL_NUMBER, UZI_NR)]],
        Some(general_names(&[
            uzi_name(&uzi_value()),
            uzi_name(&uzi_other_name(DEV_UZI_OID_CA, UZI_NR, "S", "90000999")),
        ])),
    );
    let r = issuers(&[(&ca, Rule::Uzi)]).identify(&cert);
    assert_eq!(r, Err(IdentityError::UziNameCount(2)));
}

#[test]
fn a_uzi_other_name_that_does_not_parse_is_refused_with_what_is_wrong() {
    let ca = Authority::new("uzi").unwrap();
    let issuers = issuers(&[(&ca, Rule::Uzi)]);
    let cases = [
        (
            "2.16.528.1.1003.1.3.5.5.2-1-12345678-S-90000123",
            "expected 7 fields",
        ),
        (
            "2.16.528.1.1003.1.3.5.5.2-1-12345678-S-NOTANURA-00.000-00000000",
            "URA field",
        ),
        (
            "2.16.528.1.1003.1.3.5.5.2-1-12345678-S-9000012-00.000-00000000",
            "URA field",
        ),
        (
            "2.16.528.1.1003.1.3.5.5.2-1-12345678-S- 90000123-00.000-00000000",
            "whitespace",
        ),
        (
            "2.16.528.1.1003.1.3.5.5.2-1-12345678-S-90000123-00.000-00000000 ",
            "whitespace",
        ),
        ("CIBG-1-12345678-S-90000123-00.000-00000000", "OID CA field"),
        (
            "2.16.528.1.1003.1.3.5.5.2-1-1234X678-S-90000123-00.000-00000000",
            "UZI number field",
        ),
        (
            "2.16.528.1.1003.1.3.5.5.2-1-12345678-SS-90000123-00.000-00000000",
            "card type field",
        ),
        (
            "2.16.528.1.1003.1.3.5.5.2-1-12345678-S-90000123--00000000",
            "role field",
        ),
        (
            "2.16.528.1.1003.1.3.5.5.2-1-12345678-S-90000123-00.000-",
            "AGB field",
        ),
    ];
    for (value, what) in cases {
        let mut spec = uzi_spec();
        spec.uzi_other_name = Some(value.into());
        let r = issuers.identify(&leaf(&ca, &spec));
        assert!(
            matches!(r, Err(IdentityError::BadUziName(_))),
            "{value}: {r:?}"
        );
        let text = reason(r);
        assert!(text.contains(what), "{value}: {text}");
    }
}

#[test]
fn a_uzi_other_name_that_is_no_string_is_refused() {
    let ca = Authority::new("uzi").unwrap();
    let cert = raw_leaf(
        &ca,
        &[&[(SERIAL_NUMBER, UZI_NR)]],
        Some(general_names(&[der_other_name(
            &[2, 5, 5, 5],
            &der_tlv(0x02, &[1, 2, 3]),
        )])),
    );
    let r = issuers(&[(&ca, Rule::Uzi)]).identify(&cert);
    assert!(
        reason(r).contains("not a DER IA5String, UTF8String or PrintableString"),
        "refused as not a string"
    );
}

#[test]
fn a_permanent_identifier_that_disagrees_with_the_ura_is_refused() {
    let ca = Authority::new("uzi").unwrap();
    let mut spec = uzi_spec();
    spec.permanent_identifier = Some("90000999".into());
    let r = issuers(&[(&ca, Rule::Uzi)]).identify(&leaf(&ca, &spec));
    assert_eq!(
        r,
        Err(IdentityError::PermanentIdentifierMismatch {
            found: "90000999".into(),
            ura: URA.into()
        })
    );
}

#[test]
fn a_malformed_or_repeated_permanent_identifier_is_refused() {
    let ca = Authority::new("uzi").unwrap();
    let issuers = issuers(&[(&ca, Rule::Uzi)]);
    let no_value = der_other_name(&[1, 3, 6, 1, 5, 5, 7, 8, 3], &der_tlv(0x30, &[]));
    let not_a_sequence = der_other_name(&[1, 3, 6, 1, 5, 5, 7, 8, 3], &der_tlv(0x0c, b"x"));
    for (extra, what) in [
        (vec![no_value], "no identifierValue"),
        (vec![not_a_sequence], "not a SEQUENCE"),
        (
            vec![permanent_identifier(URA), permanent_identifier(URA)],
            "holds 2 of them",
        ),
    ] {
        let mut names = vec![uzi_name(&uzi_value())];
        names.extend(extra);
        let cert = raw_leaf(
            &ca,
            &[&[(SERIAL_NUMBER, UZI_NR)]],
            Some(general_names(&names)),
        );
        let r = issuers.identify(&cert);
        assert!(
            matches!(r, Err(IdentityError::BadPermanentIdentifier(_))),
            "{what}: {r:?}"
        );
        assert!(reason(r).contains(what));
    }
}

#[test]
fn a_serial_number_that_is_not_the_uzi_number_is_refused() {
    let ca = Authority::new("uzi").unwrap();
    let mut spec = uzi_spec();
    spec.serial_number = Some(URA.into()); // the URA, not the UZI number
    let r = issuers(&[(&ca, Rule::Uzi)]).identify(&leaf(&ca, &spec));
    assert_eq!(
        r,
        Err(IdentityError::UziNumberMismatch {
            serial_number: URA.into(),
            uzi_number: UZI_NR.into()
        })
    );
}

#[test]
fn two_serial_numbers_in_a_uzi_certificate_are_refused() {
    let ca = Authority::new("uzi").unwrap();
    let cert = raw_leaf(
        &ca,
        &[&[(SERIAL_NUMBER, UZI_NR)], &[(SERIAL_NUMBER, UZI_NR)]],
        Some(general_names(&[uzi_name(&uzi_value())])),
    );
    let r = issuers(&[(&ca, Rule::Uzi)]).identify(&cert);
    assert!(reason(r).contains("2 serialNumber attributes; at most one"));
}

#[test]
fn a_configured_oid_ca_must_be_the_one_in_the_other_name() {
    let ca = Authority::new("uzi").unwrap();
    let configured = |oid: &str| {
        Issuers::new(vec![IssuingCa::new(ca_der(&ca), Rule::Uzi)
            .unwrap()
            .with_oid_ca(oid)])
    };
    let cert = leaf(&ca, &uzi_spec());
    assert!(configured(DEV_UZI_OID_CA).identify(&cert).is_ok());
    assert_eq!(
        configured("2.16.528.1.1003.1.3.5.5.9").identify(&cert),
        Err(IdentityError::UziOidCa {
            found: DEV_UZI_OID_CA.into(),
            expected: "2.16.528.1.1003.1.3.5.5.9".into()
        })
    );
}

#[test]
fn a_subject_alt_name_that_does_not_parse_is_refused_under_every_rule() {
    let ca = Authority::new("ca").unwrap();
    // A GeneralNames SEQUENCE whose one element claims more bytes than there are.
    let cert = raw_leaf(
        &ca,
        &[&[(SERIAL_NUMBER, OIN)]],
        Some(vec![0x30, 0x04, 0x82, 0x09, b'a', b'b']),
    );
    for rule in [Rule::Dev, Rule::Pkioverheid, Rule::Uzi] {
        let r = issuers(&[(&ca, rule)]).identify(&cert);
        assert!(
            matches!(r, Err(IdentityError::BadSubjectAltName(_))),
            "{rule}: {r:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// The real shapes, on the RSA test-only keys

/// The RSA test PKI, made once: fixture keys, certificates with explicit dates.
fn real() -> &'static (RealPki, RsaKeys) {
    static REAL: OnceLock<(RealPki, RsaKeys)> = OnceLock::new();
    REAL.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rsa");
        let keys = RsaKeys::read_dir(std::path::Path::new(dir)).expect("the RSA test keys");
        let from = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let until = Utc.with_ymd_and_hms(2049, 12, 31, 0, 0, 0).unwrap();
        let pki = RealPki::new(&keys, from, until).expect("the RSA test PKI");
        (pki, keys)
    })
}

/// The issuing CAs as a gateway configures them: the UZI server CA and the PKIoverheid
/// issuing CA, under one root and domain CA.
fn real_issuers() -> Issuers {
    let (pki, _) = real();
    issuers(&[
        (&pki.uzi_server_ca, Rule::Uzi),
        (&pki.pkio_issuing_ca, Rule::Pkioverheid),
    ])
}

#[test]
fn the_rsa_uzi_shape_is_identified_by_the_ura_and_the_pkioverheid_shape_by_the_oin() {
    let (pki, keys) = real();
    let issuers = real_issuers();
    let practice = pki
        .uzi_server_ca
        .issue(&uzi_spec().with_key(&keys.practice))
        .unwrap();
    // The chain file holds leaf, UZI server CA, domain CA.
    assert_eq!(practice.chain_pem.matches("BEGIN CERTIFICATE").count(), 3);
    let id = issuers.identify(&der(&practice.cert_pem)).unwrap();
    assert_eq!(id.organisation_id, URA);

    let wijkteam = pki
        .pkio_issuing_ca
        .issue(&LeafSpec::new(OIN, "Gemeente", "gemeente.test").with_key(&keys.wijkteam))
        .unwrap();
    assert_eq!(
        issuers
            .identify(&der(&wijkteam.cert_pem))
            .unwrap()
            .organisation_id,
        OIN
    );
}

#[test]
fn the_same_root_does_not_make_a_uzi_certificate_pass_the_pkioverheid_rule_or_back() {
    let (pki, keys) = real();
    let issuers = real_issuers();
    // A UZI-shaped certificate from the PKIoverheid CA: its serialNumber is a UZI number.
    let from_pkio = pki
        .pkio_issuing_ca
        .issue(&uzi_spec().with_key(&keys.practice))
        .unwrap();
    assert!(
        reason(issuers.identify(&der(&from_pkio.cert_pem))).contains("is not an OIN of 20 digits")
    );
    // A PKIoverheid-shaped certificate from the UZI server CA: no otherName.
    let from_uzi = pki
        .uzi_server_ca
        .issue(&LeafSpec::new(OIN, "Gemeente", "gemeente.test").with_key(&keys.wijkteam))
        .unwrap();
    assert_eq!(
        issuers.identify(&der(&from_uzi.cert_pem)),
        Err(IdentityError::NoUziName)
    );
    // Issued by the domain CA (chains to the same root, but no issuing CA): refused.
    let from_domain = pki
        .domain_ca
        .issue(&LeafSpec::new(OIN, "Gemeente", "gemeente.test").with_key(&keys.wijkteam))
        .unwrap();
    assert!(matches!(
        issuers.identify(&der(&from_domain.cert_pem)),
        Err(IdentityError::UnknownIssuer { .. })
    ));
}

#[test]
fn the_rsa_chains_verify_with_webpki_as_rustls_sees_them() {
    // The shapes are real chains: leaf → issuing CA → domain CA → root verifies.
    let (pki, keys) = real();
    let practice = pki
        .uzi_server_ca
        .issue(&uzi_spec().with_key(&keys.practice))
        .unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(practice.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(der(&pki.root.cert_pem)))
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let now = rustls::pki_types::UnixTime::now();
    verifier
        .verify_client_cert(&chain[0], &chain[1..], now)
        .expect("the UZI-shaped chain verifies");
}
