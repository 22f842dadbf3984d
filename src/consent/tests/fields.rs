//! Field validation: the rules per field of a consent request, strict request JSON, and
//! turning a request into a record.

use super::*;

fn refused(edit: impl FnOnce(&mut ConsentRequest)) -> ConsentError {
    let mut req = good_request();
    edit(&mut req);
    validate_request(&req, d(TODAY), &crate::consent::ConsentRules::DEFAULT).unwrap_err()
}

#[test]
fn good_request_is_accepted() {
    assert_eq!(
        validate_request(
            &good_request(),
            d(TODAY),
            &crate::consent::ConsentRules::DEFAULT
        ),
        Ok(WgboBasis::ChildAndParent)
    );
}

#[test]
fn field_rules() {
    let cases: Vec<(ConsentError, &str, Option<&str>)> = vec![
        (
            refused(|r| r.valid_until = d("2026-02-28")),
            "validity_period_reversed",
            Some("valid_until"),
        ),
        (
            refused(|r| r.given_on = Some(d("2026-03-11"))),
            "given_on_in_future",
            Some("given_on"),
        ),
        (
            refused(|r| {
                r.given_on = None;
                r.valid_from = d("2026-04-01");
                r.valid_until = d("2026-12-31");
            }),
            "given_on_in_future",
            Some("valid_from"),
        ),
        (
            refused(|r| r.given_on = Some(d("2013-01-14"))),
            "given_on_before_birth",
            Some("given_on"),
        ),
        (
            refused(|r| r.child.birth_date = d("2026-03-11")),
            "birth_date_in_future",
            Some("child.birth_date"),
        ),
        (
            refused(|r| r.scope.types.clear()),
            "field_empty",
            Some("scope.types"),
        ),
        (
            refused(|r| r.scope.types.push(MessageType::Consultation)),
            "scope_type_not_allowed",
            Some("scope.types"),
        ),
        (
            refused(|r| r.scope.types = vec![MessageType::ConsentUpdate]),
            "scope_type_not_allowed",
            Some("scope.types"),
        ),
        (
            refused(|r| r.scope.recipient.clear()),
            "field_empty",
            Some("scope.recipient"),
        ),
        (
            refused(|r| r.scope.recipient = format!(" {WIJKTEAM}")),
            "identifier_invalid",
            Some("scope.recipient"),
        ),
        (
            refused(|r| r.performers[1].name = " ".into()),
            "field_empty",
            Some("performers.name"),
        ),
        (
            refused(|r| r.performers[0].name = "é".repeat(201)),
            "field_too_long",
            Some("performers.name"),
        ),
        (
            refused(|r| r.performers.push(performer(PerformerRole::Child))),
            "performer_child_duplicate",
            Some("performers"),
        ),
        (
            refused(|r| r.evidence = String::new()),
            "field_empty",
            Some("evidence"),
        ),
        (
            refused(|r| r.evidence = "x".repeat(501)),
            "field_too_long",
            Some("evidence"),
        ),
        (
            refused(|r| r.child.name = Some(String::new())),
            "field_empty",
            Some("child.name"),
        ),
    ];
    for (err, code, field) in cases {
        assert_eq!((err.code(), err.field()), (code, field), "{err}");
        let msg = err.to_string();
        assert!(!msg.contains(BSN) && !msg.contains("Vries") && !msg.contains("2013-01-15"));
    }
    // Limits are inclusive and counted in characters, not bytes.
    let mut req = good_request();
    req.performers[0].name = "é".repeat(200);
    req.evidence = "x".repeat(500);
    req.valid_until = req.valid_from;
    assert!(validate_request(&req, d(TODAY), &crate::consent::ConsentRules::DEFAULT).is_ok());
}

#[test]
fn defaulted_given_on_is_explained() {
    let err = refused(|r| {
        r.given_on = None;
        r.valid_from = d("2026-04-01");
        r.valid_until = d("2026-12-31");
    });
    assert_eq!(
        err.to_string(),
        "the consent was given on 2026-04-01 (given_on is absent, so valid_from was taken), \
         which is after today (2026-03-10)"
    );
}

#[test]
fn request_json_is_strict_and_bsn_checked() {
    let json = serde_json::json!({
        "child": { "bsn": BSN, "birth_date": "2013-01-15" },
        "performers": [{ "role": "child", "name": "S" }, { "role": "guardian", "name": "G" }],
        "scope": { "types": ["referral"], "recipient": WIJKTEAM },
        "valid_from": "2026-03-01", "valid_until": "2027-03-01",
        "evidence": "schriftelijk"
    });
    let req: ConsentRequest = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(req.given_on, None);
    assert_eq!(
        validate_request(&req, d(TODAY), &crate::consent::ConsentRules::DEFAULT),
        Ok(WgboBasis::ChildAndParent)
    );

    let mut typo = json.clone();
    typo["exeption"] = "x".into();
    assert!(serde_json::from_value::<ConsentRequest>(typo).is_err());
    let mut bad_bsn = json;
    bad_bsn["child"]["bsn"] = "111222334".into();
    assert!(serde_json::from_value::<ConsentRequest>(bad_bsn).is_err());
}

#[test]
fn record_from_request_resolves_and_normalises() {
    let mut req = good_request();
    req.given_on = None;
    req.scope.types = vec![
        MessageType::Feedback,
        MessageType::Referral,
        MessageType::Feedback,
    ];
    let rec = ConsentRecord::from_request(
        "c-1".into(),
        req,
        "dr. Bakker".into(),
        ts("2026-03-10 09:00"),
        d(TODAY),
        &crate::consent::ConsentRules::DEFAULT,
    )
    .unwrap();
    assert_eq!(rec.given_on, d("2026-03-01"));
    assert_eq!(
        rec.scope.types,
        vec![MessageType::Referral, MessageType::Feedback]
    );
    assert_eq!(rec.basis, WgboBasis::ChildAndParent);

    let bad_id = ConsentRecord::from_request(
        "c 1".into(),
        good_request(),
        "u".into(),
        ts("2026-03-10 09:00"),
        d(TODAY),
        &crate::consent::ConsentRules::DEFAULT,
    );
    assert_eq!(bad_id.unwrap_err().code(), "identifier_invalid");
    let no_user = ConsentRecord::from_request(
        "c-1".into(),
        good_request(),
        " ".into(),
        ts("2026-03-10 09:00"),
        d(TODAY),
        &crate::consent::ConsentRules::DEFAULT,
    );
    assert_eq!(
        no_user.unwrap_err(),
        ConsentError::Empty {
            field: "recorded_by"
        }
    );
    // Invalid requests never become records.
    let mut req = good_request();
    req.performers.remove(0);
    assert!(ConsentRecord::from_request(
        "c-1".into(),
        req,
        "u".into(),
        ts("2026-03-10 09:00"),
        d(TODAY),
        &crate::consent::ConsentRules::DEFAULT
    )
    .is_err());
}
