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

/// Issue 13: a field whose action is `keep` accepted any JSON value, so
/// `subject.name: {"diagnosis": …}` passed on both ends.
#[test]
fn an_object_or_list_under_keep_is_dropped_at_the_sender_and_refused_at_the_receiver() {
    let m = minimiser();
    let crafted = obj(json!({
        "subject": {
            "bsn": "111222333",
            "name": {"diagnosis": "F90.0", "case_notes": "moeder drinkt"},
            "birth_date": ["2014-03-02", "extra"]
        },
        "body": {
            "request_for_help": "Graag contact",
            "urgency": "soon",
            "parent_contact": {"name": {"first": "Petra", "notes": "x"}, "phone": "0612345678"},
            "gp_contact": ["dr. Jansen"]
        }
    }));
    // Receiver: refused, naming each path, with the code of a nested value.
    let err = m.check(MessageType::Referral, &crafted).unwrap_err();
    let mut v: Vec<(String, ViolationKind)> = err
        .violations
        .iter()
        .map(|v| (v.path.clone(), v.kind))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        v,
        vec![
            ("body.gp_contact".into(), ViolationKind::NotAGroup),
            (
                "body.parent_contact.name".into(),
                ViolationKind::NestedValue
            ),
            ("subject.birth_date".into(), ViolationKind::NestedValue),
            ("subject.name".into(), ViolationKind::NestedValue),
        ]
    );
    let refusal = crate::error::Refusal::from(err.clone());
    assert_eq!(refusal.code.as_str(), "policy_nested_value");
    for p in [
        "subject.name",
        "subject.birth_date",
        "body.parent_contact.name",
    ] {
        assert!(refusal.message.contains(p), "{}", refusal.message);
    }
    for leak in ["F90", "drinkt", "Petra", "Jansen"] {
        assert!(!refusal.message.contains(leak), "{}", refusal.message);
    }

    // Sender: each is removed (audited by path as the wrong type), what is left passes.
    let mut content = crafted.clone();
    let changes = m
        .apply(MessageType::Referral, &mut content, date("2024-06-15"))
        .unwrap();
    assert_eq!(
        Value::Object(content.clone()),
        json!({
            "subject": {"bsn": "111222333"},
            "body": {
                "request_for_help": "Graag contact",
                "urgency": "soon",
                "parent_contact": {"phone": "0612345678"}
            }
        })
    );
    let mut got: Vec<(&str, &str)> = changes
        .changed
        .iter()
        .map(|c| (c.path.as_str(), c.action.as_str()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("body.gp_contact", "drop:wrong_type"),
            ("body.parent_contact.name", "drop:wrong_type"),
            ("subject.birth_date", "drop:wrong_type"),
            ("subject.name", "drop:wrong_type"),
        ]
    );
    m.check(MessageType::Referral, &content).unwrap();

    // A list declared as one passes only its single values.
    let err = m
        .check(
            MessageType::ConsentUpdate,
            &obj(json!({"body": {"scope_types": ["referral", {"x": 1}]}})),
        )
        .unwrap_err();
    assert_eq!(err.paths, vec!["body.scope_types[1]"]);
    m.check(
        MessageType::ConsentUpdate,
        &obj(json!({"body": {"scope_types": ["referral", "feedback"]}})),
    )
    .unwrap();
}

/// Under `unknown = "refuse"` a nested value is refused at the sender too, untouched.
#[test]
fn a_nested_value_is_refused_at_a_sender_that_refuses_unnamed_fields() {
    let text = DEFAULT_TEXT.replacen(
        "[referral]\nunknown = \"drop\"",
        "[referral]\nunknown = \"refuse\"",
        1,
    );
    let m = Minimiser::new(Policy::parse(&text, "p.toml").unwrap(), KEY);
    let original = obj(json!({"subject": {"bsn": "111222333", "name": {"case_notes": "x"}}}));
    let mut content = original.clone();
    let err = m
        .apply(MessageType::Referral, &mut content, date("2024-06-15"))
        .unwrap_err();
    assert_eq!(err.paths, vec!["subject.name"]);
    assert_eq!(
        crate::error::Refusal::from(err).code.as_str(),
        "policy_nested_value"
    );
    assert_eq!(content, original);
}

/// Issue 13: the envelope's consent block was not held to the policy (an "anonymous"
/// consultation could carry one with a BSN).
#[test]
fn the_consent_block_carries_only_what_the_policy_names() {
    let m = minimiser();
    let summary = json!({
        "id": "consent-1", "subject_bsn": "111222333", "types": ["referral"],
        "recipient": "00000001003214345000", "valid_from": "2026-01-01",
        "valid_until": "2026-12-31", "status": "active"
    });
    m.check_consent(MessageType::Referral, Some(&summary))
        .unwrap();
    m.check_consent(MessageType::Feedback, Some(&json!({"id": "consent-1"})))
        .unwrap();
    m.check_consent(MessageType::Consultation, None).unwrap();

    let refused = |t, block: Value| {
        let e = m.check_consent(t, Some(&block)).unwrap_err();
        assert_eq!(e.reason, RefusalReason::ConsentBlock);
        (
            crate::error::Refusal::from(e.clone()).code.as_str(),
            e.paths,
        )
    };
    // A consultation carries none at all, whatever is in it.
    assert_eq!(
        refused(
            MessageType::Consultation,
            json!({"id": "c", "subject_bsn": "111222333"})
        ),
        ("consent_not_applicable", vec!["consent".to_string()])
    );
    assert_eq!(
        refused(MessageType::Consultation, json!({})),
        ("consent_not_applicable", vec!["consent".to_string()])
    );
    // Feedback names its consent, and nothing more.
    assert_eq!(
        refused(
            MessageType::Feedback,
            json!({"id": "c", "subject_bsn": "111222333"})
        ),
        (
            "policy_consent_block",
            vec!["consent.subject_bsn".to_string()]
        )
    );
    let mut extra = summary.clone();
    extra["birth_date"] = json!("2014-03-02");
    assert_eq!(
        refused(MessageType::Referral, extra),
        (
            "policy_consent_block",
            vec!["consent.birth_date".to_string()]
        )
    );
    let mut nested = summary.clone();
    nested["recipient"] = json!({"name": "x"});
    assert_eq!(
        refused(MessageType::Referral, nested),
        (
            "policy_consent_block",
            vec!["consent.recipient".to_string()]
        )
    );
    assert_eq!(
        refused(MessageType::Feedback, json!("consent-1")),
        ("policy_consent_block", vec!["consent".to_string()])
    );
}
