//! FHIR: the R4 Consent resource made from a consent's state.

use super::*;

#[test]
fn fhir_consent_has_required_r4_elements() {
    let events = [recorded("c-1")];
    let s = ConsentState::from_events(&events).unwrap();
    let r = fhir_consent(&s, &events, d("2026-05-01"));
    assert_eq!(r["resourceType"], "Consent");
    assert_eq!(r["id"], "c-1");
    assert_eq!(r["status"], "active");
    assert_eq!(
        r["scope"]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/consentscope"
    );
    assert_eq!(r["scope"]["coding"][0]["code"], "patient-privacy");
    assert_eq!(r["category"][0]["coding"][0]["system"], "http://loinc.org");
    assert_eq!(r["category"][0]["coding"][0]["code"], "59284-0");
    // ppc-2: privacy scope needs a patient.
    assert_eq!(r["patient"]["identifier"]["system"], BSN_SYSTEM);
    assert_eq!(r["patient"]["identifier"]["value"], BSN);
    // ppc-1: policy or policyRule.
    assert!(r["policy"][0]["uri"].is_string());
    assert!(r["policyRule"]["text"]
        .as_str()
        .unwrap()
        .contains("7:450 lid 2"));
    assert_eq!(r["dateTime"], "2026-03-01T10:00:00Z");
    let p = &r["provision"];
    assert_eq!(p["type"], "permit");
    assert_eq!(p["period"]["start"], "2026-03-01");
    assert_eq!(p["period"]["end"], "2027-03-01");
    assert_eq!(p["actor"][0]["role"]["coding"][0]["code"], "IRCP");
    assert_eq!(p["actor"][0]["reference"]["type"], "Organization");
    assert_eq!(p["actor"][0]["reference"]["identifier"]["value"], WIJKTEAM);
    let actions: Vec<&str> = p["action"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["coding"][0]["code"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["referral", "feedback"]);
    for a in p["action"].as_array().unwrap() {
        assert_eq!(a["coding"][0]["system"], MESSAGE_TYPE_SYSTEM);
    }
    // Performers: child as the patient, the parent as a contained RelatedPerson that is
    // referenced (dom-3).
    let perf = r["performer"].as_array().unwrap();
    assert_eq!(perf.len(), 2);
    assert_eq!(perf[0]["type"], "Patient");
    assert_eq!(perf[1]["reference"], "#performer-2");
    assert_eq!(r["contained"][0]["resourceType"], "RelatedPerson");
    assert_eq!(r["contained"][0]["id"], "performer-2");
    assert_eq!(
        r["contained"][0]["relationship"][0]["coding"][0]["code"],
        "PRN"
    );
    assert_eq!(r["contained"][0]["patient"]["identifier"]["value"], BSN);
    // Evidence as base64 text.
    assert_eq!(
        r["sourceAttachment"]["data"],
        "bW9uZGVsaW5nIHRpamRlbnMgY29uc3VsdA=="
    );
    assert_eq!(r["sourceAttachment"]["creation"], "2026-03-01");
}

#[test]
fn fhir_status_mapping() {
    let events = [recorded("c-1"), withdrawn("c-1", "2026-04-01 12:00")];
    let active = ConsentState::from_events(&events[..1]).unwrap();
    let gone = ConsentState::from_events(&events).unwrap();
    let status = |s: &ConsentState, day: &str| fhir_consent(s, &events, d(day))["status"].clone();
    assert_eq!(status(&active, "2026-05-01"), "active");
    assert_eq!(status(&active, "2026-02-01"), "active"); // not yet valid: period says so
    assert_eq!(status(&active, "2027-03-02"), "inactive"); // expired
    assert_eq!(status(&gone, "2026-05-01"), "inactive"); // withdrawn
}

#[test]
fn fhir_for_a_mirror_still_satisfies_invariants() {
    let events = [mirrored(ConsentStatus::Active)];
    let s = ConsentState::from_events(&events).unwrap();
    let r = fhir_consent(&s, &events, d("2026-05-01"));
    assert_eq!(r["status"], "active");
    assert!(r["policy"][0]["uri"].is_string());
    assert_eq!(r["patient"]["identifier"]["value"], BSN);
    assert_eq!(r["dateTime"], "2026-03-02T08:00:00Z");
    assert!(r.get("performer").is_none());
    assert!(r.get("sourceAttachment").is_none());

    let mut odd = s.clone();
    odd.id = "not a fhir id".into();
    let r = fhir_consent(&odd, &events, d("2026-05-01"));
    assert!(r.get("id").is_none());
    assert_eq!(r["identifier"][0]["value"], "not a fhir id");
}
