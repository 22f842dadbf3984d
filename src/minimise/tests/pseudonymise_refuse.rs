//! Pseudonymise, refuse: the keyed pseudonym, refusing unnamed fields, and odd keys, shapes
//! and arrays.

use super::*;
use serde_json::json;

#[test]
fn pseudonymise_is_keyed_hmac_sha256() {
    // RFC 4231 test case 2.
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
    assert_eq!(
        actions::pseudonym(&key, "what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let text = DEFAULT_TEXT.replace(
        "\"subject.bsn\"       = \"keep\"\n\"body.consent_id\"",
        "\"subject.bsn\"       = \"pseudonymise\"\n\"body.consent_id\"",
    );
    let run = |key: &[u8]| {
        let m = Minimiser::new(Policy::parse(&text, "p.toml").unwrap(), key);
        let mut c = obj(json!({"subject": {"bsn": "111222333"}}));
        let ch = m
            .apply(MessageType::ConsentUpdate, &mut c, date("2024-06-15"))
            .unwrap();
        assert_eq!(
            ch.changed,
            vec![Change {
                path: "subject.bsn".into(),
                action: "pseudonymise".into()
            }]
        );
        m.check(MessageType::ConsentUpdate, &c).unwrap();
        c["subject"]["bsn"].as_str().unwrap().to_string()
    };
    let a = run(KEY);
    assert_eq!(a.len(), 64);
    assert_eq!(a, run(KEY), "stable per key");
    assert_ne!(a, run(b"another key"), "depends on the key");
    let m = Minimiser::new(Policy::parse(&text, "p.toml").unwrap(), KEY);
    let err = m
        .check(
            MessageType::ConsentUpdate,
            &obj(json!({"subject": {"bsn": "111222333"}})),
        )
        .unwrap_err();
    assert_eq!(err.violations[0].kind, ViolationKind::NotPseudonymised);
}

#[test]
fn refuse_unnamed_leaves_content_untouched() {
    let text = DEFAULT_TEXT.replacen(
        "[feedback]\nunknown = \"drop\"",
        "[feedback]\nunknown = \"refuse\"",
        1,
    );
    let m = Minimiser::new(Policy::parse(&text, "p.toml").unwrap(), KEY);
    let original = obj(json!({
        "subject": {"bsn": "111222333", "name": "Sanne"},
        "body": {"status": "closed", "case_notes": "x", "note": "bel 0612345678", "extra": {"a": 1}}
    }));
    let mut content = original.clone();
    let err = m
        .apply(MessageType::Feedback, &mut content, date("2024-06-15"))
        .unwrap_err();
    assert_eq!(err.reason, RefusalReason::UnnamedFields);
    let mut paths = err.paths.clone();
    paths.sort();
    // case_notes is named (drop), so it does not cause the refusal.
    assert_eq!(paths, vec!["body.extra", "subject.name"]);
    assert_eq!(content, original, "refusal must not change the content");
    let msg = err.to_string();
    assert!(
        msg.contains("feedback") && msg.contains("body.extra") && msg.contains("subject.name"),
        "{msg}"
    );
    assert!(!msg.contains("Sanne"));

    // Without unnamed fields, refuse mode still drops and scrubs.
    let mut ok =
        obj(json!({"body": {"status": "closed", "case_notes": "x", "note": "bel 0612345678"}}));
    m.apply(MessageType::Feedback, &mut ok, date("2024-06-15"))
        .unwrap();
    assert_eq!(
        Value::Object(ok),
        json!({"body": {"status": "closed", "note": "bel [telefoon]"}})
    );
}

#[test]
fn odd_keys_and_shapes() {
    let m = minimiser();
    let mut c = obj(json!({
        "subject.bsn": "111222333",
        "body": {
            "parent_contact": "Petra, 0612345678",
            "gp_contact": {"": 1, "a.b": 2, "123456782": 3},
            "urgency": "urgent"
        },
        "subject": []
    }));
    let ch = m
        .apply(MessageType::Referral, &mut c, date("2024-06-15"))
        .unwrap();
    // A dotted key never matches a path; a value where a group is expected goes; keys
    // that could be data are not shown.
    assert_eq!(Value::Object(c), json!({"body": {"urgency": "urgent"}}));
    let mut paths: Vec<&str> = ch.changed.iter().map(|c| c.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "<key>",
            "body.gp_contact.<key>",
            "body.gp_contact.<key>",
            "body.gp_contact.<key>",
            "body.parent_contact",
            "subject"
        ]
    );
    // Each value in the place of a group is dropped as the wrong type.
    for path in ["body.parent_contact", "subject"] {
        assert!(
            ch.changed
                .iter()
                .any(|c| c.path == path && c.action == "drop:wrong_type"),
            "{path}: {ch:?}"
        );
    }
}

#[test]
fn arrays_report_indices() {
    let text = DEFAULT_TEXT.replace(
        "\"body.diagnoses\"                    = \"drop\"",
        "\"body.diagnoses\" = \"list\"\n\"body.diagnoses[]\" = \"scrub\"",
    );
    let m = Minimiser::new(Policy::parse(&text, "p.toml").unwrap(), KEY);
    let mut c = obj(json!({"body": {"diagnoses": ["ok", "bel 0612345678", {"x": 1}, null]}}));
    let ch = m
        .apply(MessageType::Referral, &mut c, date("2024-06-15"))
        .unwrap();
    assert_eq!(
        Value::Object(c.clone()),
        json!({"body": {"diagnoses": ["ok", "bel [telefoon]", null]}})
    );
    assert_eq!(
        ch.changed,
        vec![
            Change {
                path: "body.diagnoses[1]".into(),
                action: "scrub".into()
            },
            Change {
                path: "body.diagnoses[2]".into(),
                action: "drop:wrong_type".into()
            },
        ]
    );
    m.check(MessageType::Referral, &c).unwrap();
}
