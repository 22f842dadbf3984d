//! Export of a consent as a FHIR R4 `Consent` resource, for auditors and for systems that
//! speak FHIR. Built to satisfy the R4 cardinalities (status, scope, category 1..*,
//! provision.actor role and reference) and invariants: ppc-1 (policy or policyRule: a
//! `policy` pointing at the WGBO is always present) and ppc-2 (privacy scope needs a
//! patient: always present, identified by BSN). ppc-3..5 concern other scopes.

use chrono::{NaiveDate, SecondsFormat};
use serde_json::{json, Value};

use super::{
    check_consent_id, ConsentEvent, ConsentRecord, ConsentState, ConsentStatus, PerformerRole,
    WgboBasis,
};
use crate::message::MessageType;

/// The Dutch NamingSystem for the BSN.
pub const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
/// The identifier system under which wijkpoort consent ids are published.
pub const CONSENT_ID_SYSTEM: &str = "urn:wijkpoort:consent-id";
/// The code system for wijkpoort message types in `provision.action`.
pub const MESSAGE_TYPE_SYSTEM: &str = "urn:wijkpoort:message-type";

const WGBO_POLICY_URI: &str = "https://wetten.overheid.nl/BWBR0005290";
const WGBO_AUTHORITY: &str = "https://wetten.overheid.nl";

/// The FHIR R4 `Consent` for `state`. `events` are the consent's log entries: the
/// `Recorded` event among them supplies performers, evidence and the WGBO basis (a
/// wijkteam mirror has none of those, and the resource then simply omits them).
///
/// `status` is `active` while the consent is active or not yet valid (the provision's
/// period says when it starts) and `inactive` once withdrawn or expired on `today`:
/// an auditor reading `active` for a consent that no longer covers anything would be
/// misled.
pub fn fhir_consent(state: &ConsentState, events: &[ConsentEvent], today: NaiveDate) -> Value {
    let record = events.iter().find_map(|e| match e {
        ConsentEvent::Recorded { record } if record.id == state.id => Some(record),
        _ => None,
    });
    let status = match state.status_on(today) {
        ConsentStatus::Active | ConsentStatus::NotYetValid => "active",
        ConsentStatus::Withdrawn | ConsentStatus::Expired => "inactive",
    };
    let patient_identifier = json!({ "system": BSN_SYSTEM, "value": state.subject.as_str() });
    let date_time = match &state.origin {
        super::ConsentOrigin::Recorded { recorded_at, .. } => *recorded_at,
        super::ConsentOrigin::Mirrored { at, .. } => *at,
    };

    let mut consent = json!({
        "resourceType": "Consent",
        "identifier": [{ "system": CONSENT_ID_SYSTEM, "value": state.id }],
        "status": status,
        "scope": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
            "code": "patient-privacy",
            "display": "Privacy Consent"
        }]},
        "category": [{ "coding": [{
            "system": "http://loinc.org",
            "code": "59284-0",
            "display": "Patient Consent"
        }]}],
        "patient": { "type": "Patient", "identifier": patient_identifier },
        "dateTime": date_time.to_rfc3339_opts(SecondsFormat::Secs, true),
        "policy": [{ "authority": WGBO_AUTHORITY, "uri": WGBO_POLICY_URI }],
        "provision": {
            "type": "permit",
            "period": {
                "start": state.valid_from.to_string(),
                "end": state.valid_until.to_string()
            },
            "actor": [{
                "role": { "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP",
                    "display": "information recipient"
                }]},
                "reference": {
                    "type": "Organization",
                    "identifier": { "value": state.recipient }
                }
            }],
            "action": state.types.iter().map(|t| action(*t)).collect::<Vec<_>>()
        }
    });

    let Some(obj) = consent.as_object_mut() else {
        return consent;
    };
    // A mirror's id came from a peer; publish it as the resource id only if FHIR allows it
    // (it is in `identifier` either way).
    if check_consent_id("id", &state.id).is_ok() {
        obj.insert("id".into(), Value::String(state.id.clone()));
    }
    if let Some(record) = record {
        let (contained, performers) = performers(record, &patient_identifier);
        if !contained.is_empty() {
            obj.insert("contained".into(), Value::Array(contained));
        }
        if !performers.is_empty() {
            obj.insert("performer".into(), Value::Array(performers));
        }
        obj.insert(
            "policyRule".into(),
            json!({ "text": wgbo_rule(&record.basis, true) }),
        );
        obj.insert(
            "sourceAttachment".into(),
            json!({
                "contentType": "text/plain; charset=utf-8",
                "title": "Evidence of consent",
                "data": base64(record.evidence.as_bytes()),
                "creation": record.given_on.to_string()
            }),
        );
    }
    consent
}

fn action(t: MessageType) -> Value {
    json!({ "coding": [{ "system": MESSAGE_TYPE_SYSTEM, "code": t.as_str() }], "text": t.as_str() })
}

/// The child is referenced as the patient; parents and guardians become contained
/// `RelatedPerson`s with their relationship coded, since a bare display name would lose
/// the role the WGBO rule depends on.
fn performers(record: &ConsentRecord, patient_identifier: &Value) -> (Vec<Value>, Vec<Value>) {
    let mut contained = Vec::new();
    let mut refs = Vec::new();
    for (i, p) in record.performers.iter().enumerate() {
        match p.role {
            PerformerRole::Child => refs.push(json!({
                "type": "Patient",
                "identifier": patient_identifier,
                "display": p.name
            })),
            PerformerRole::Parent | PerformerRole::Guardian => {
                let (code, display) = if p.role == PerformerRole::Parent {
                    ("PRN", "parent")
                } else {
                    ("GUARD", "guardian")
                };
                let id = format!("performer-{}", i + 1);
                contained.push(json!({
                    "resourceType": "RelatedPerson",
                    "id": id,
                    "patient": { "type": "Patient", "identifier": patient_identifier },
                    "relationship": [{ "coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                        "code": code,
                        "display": display
                    }]}],
                    "name": [{ "text": p.name }]
                }));
                refs.push(json!({ "reference": format!("#{id}"), "display": p.name }));
            }
        }
    }
    (contained, refs)
}

/// The WGBO rule a consent stands on, as text; `with_reason` adds an exception's
/// documented reason (free text: never in the auditor's export).
pub fn wgbo_rule(basis: &WgboBasis, with_reason: bool) -> String {
    match basis {
        WgboBasis::ParentOrGuardian => {
            "WGBO (art. 7:465 lid 1 BW): child under 12, consent of a parent or guardian".into()
        }
        WgboBasis::ChildAndParent => "WGBO (art. 7:450 lid 2 BW): child aged 12 to 15, consent of the child and of a parent or guardian".into(),
        WgboBasis::Child => {
            "WGBO (art. 7:447 BW): child aged 16 or older, consent of the child".into()
        }
        WgboBasis::ExceptionSeriousHarm { reason } if with_reason => format!(
            "WGBO (art. 7:450 lid 2 BW): child aged 12 to 15 consented without a parent or guardian, to prevent serious harm to the child: {reason}"
        ),
        WgboBasis::ExceptionSeriousHarm { .. } => "WGBO (art. 7:450 lid 2 BW): child aged 12 to 15 consented without a parent or guardian, to prevent serious harm to the child (reason recorded with the consent)".into(),
    }
}

/// Standard base64 with padding (RFC 4648), as FHIR `base64Binary` requires.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }
}
