//! What a certificate says about its holder: the organisation identifier from the
//! subject serialNumber, or the URA from a UZI server certificate's otherName.

use wijkpoort::dev::pki::{Authority, LeafSpec};
use wijkpoort::identity::{identify, parse_uzi, IdentityError};

use crate::util::der;

/// The UZI otherName value of a server certificate for URA 90000123.
const UZI: &str = "2.16.528.1.1003.1.3.5.5.2-1-12345678-S-90000123-00.000-00000000";

fn issue(spec: &LeafSpec) -> Vec<u8> {
    let ca = Authority::new("identity test").unwrap();
    der(&ca.issue(spec).unwrap().cert_pem)
}

#[test]
fn the_subject_serial_number_organisation_and_common_name_are_read() {
    let cert = issue(&LeafSpec::new(
        "00000001003214345000",
        "Gemeente Voorbeeldstad",
        "wijkteam.voorbeeldstad.test",
    ));

    let id = identify(&cert).unwrap();

    assert_eq!(id.organisation_id, "00000001003214345000");
    assert_eq!(id.organisation.as_deref(), Some("Gemeente Voorbeeldstad"));
    assert_eq!(
        id.common_name.as_deref(),
        Some("wijkteam.voorbeeldstad.test")
    );
    assert!(id.uzi.is_none());
    assert!(!id.serial.is_empty());
}

#[test]
fn a_uzi_server_certificate_is_identified_by_the_ura_in_its_other_name() {
    // The subject serialNumber says something else: the UZI otherName wins.
    let mut spec = LeafSpec::new("11111111", "Huisartsenpraktijk De Linde", "linde.test");
    spec.uzi_other_name = Some(UZI.to_string());
    let cert = issue(&spec);

    let id = identify(&cert).unwrap();

    assert_eq!(id.organisation_id, "90000123");
    let uzi = id.uzi.unwrap();
    assert_eq!(uzi.ura, "90000123");
    assert_eq!(uzi.uzi_number, "12345678");
    assert_eq!(uzi.card_type, "S");
    assert_eq!(uzi.agb, "00000000");
    assert_eq!(
        id.organisation.as_deref(),
        Some("Huisartsenpraktijk De Linde")
    );
}

#[test]
fn a_certificate_with_a_malformed_uzi_other_name_has_no_identity() {
    let mut spec = LeafSpec::new("11111111", "Elders", "elders.test");
    spec.uzi_other_name = Some("2.16.528.1.1003.1.3.5.5.2-1-12345678-S-NOTANURA-00.000-0".into());
    assert!(matches!(
        identify(&issue(&spec)),
        Err(IdentityError::BadUziName(_))
    ));
}

#[test]
fn a_certificate_with_an_empty_serial_number_has_no_identity() {
    let cert = issue(&LeafSpec::new(" ", "Naamloos", "naamloos.test"));
    assert_eq!(identify(&cert), Err(IdentityError::NoOrganisationId));
}

#[test]
fn garbage_is_not_a_certificate() {
    assert!(matches!(
        identify(b"not a certificate"),
        Err(IdentityError::Unparsable(_))
    ));
}

#[test]
fn uzi_values_are_parsed_field_by_field_and_checked() {
    let u = parse_uzi(UZI).unwrap();
    assert_eq!(u.ura, "90000123");
    assert!(parse_uzi("2.16.528.1.1003.1.3.5.5.2-1-12345678-S-90000123").is_err());
    assert!(parse_uzi("a-b-c-d--f-g").is_err(), "an empty URA");
}
