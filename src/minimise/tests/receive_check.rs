//! Receive-side check: what the receiver refuses when it slipped past minimisation, and what
//! it accepts.

use super::*;
use serde_json::json;

#[test]
fn check_refuses_what_slipped_past() {
    let m = minimiser();
    let crafted = obj(json!({
        "subject": {"bsn": "111222333"},
        "body": {
            "request_for_help": "Graag contact, moeder 06 12 34 56 78, bsn 123.456.782",
            "postcode": "3511 AB",
            "urgency": "soon",
            "diagnoses": ["F90.0"],
            "hobby": "voetbal"
        }
    }));
    let err = m.check(MessageType::Referral, &crafted).unwrap_err();
    assert_eq!(err.reason, RefusalReason::PolicyViolation);
    let mut v = err.violations.clone();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(
        v,
        vec![
            Violation {
                path: "body.diagnoses".into(),
                kind: ViolationKind::Dropped
            },
            Violation {
                path: "body.hobby".into(),
                kind: ViolationKind::NotNamed
            },
            Violation {
                path: "body.postcode".into(),
                kind: ViolationKind::TooLong { max: 4 }
            },
            Violation {
                path: "body.request_for_help".into(),
                kind: ViolationKind::IdentifiersInText {
                    bsn: 1,
                    phone: 1,
                    email: 0
                }
            },
        ]
    );
    let msg = err.to_string();
    for p in [
        "body.diagnoses",
        "body.hobby",
        "body.postcode",
        "body.request_for_help",
    ] {
        assert!(msg.contains(p), "{msg}");
    }
    for leak in ["123.456.782", "06 12", "3511", "voetbal", "F90"] {
        assert!(!msg.contains(leak), "{msg}");
    }

    // Consultation: any identifying subject is refused, an exact date is not generalised.
    let err = m
        .check(
            MessageType::Consultation,
            &obj(json!({"subject": {"name": "x"}, "body": {"child_age": "2012-01-01"}})),
        )
        .unwrap_err();
    let kinds: Vec<_> = err
        .violations
        .iter()
        .map(|v| (v.path.as_str(), v.kind))
        .collect();
    assert!(
        kinds.contains(&("subject", ViolationKind::Dropped)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("body.child_age", ViolationKind::NotGeneralised)),
        "{kinds:?}"
    );
}

#[test]
fn check_accepts_minimised_message() {
    let m = minimiser();
    let good = obj(json!({
        "subject": {"bsn": "111222333", "name": "Sanne", "birth_date": "2014-03-02"},
        "body": {
            "request_for_help": "Graag contact met moeder, nummer [telefoon]. Order 123456789.",
            "postcode": "3511",
            "urgency": "routine",
            "parent_contact": {"name": "Petra", "phone": "0612345678"}
        }
    }));
    m.check(MessageType::Referral, &good).unwrap();
    m.check(
        MessageType::Consultation,
        &obj(json!({"body": {"question": "Hoe?", "child_age": "12-15"}})),
    )
    .unwrap();
    m.check(MessageType::Feedback, &Map::new()).unwrap();
}
