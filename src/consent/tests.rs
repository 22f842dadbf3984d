use super::*;
use chrono::TimeZone;

const BSN: &str = "111222333";
const OTHER_BSN: &str = "123456782";
const WIJKTEAM: &str = "urn:oid:2.16.528.1.1007.3.3.1234567";
const PRACTICE: &str = "ura:87654321";

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn ts(s: &str) -> DateTime<Utc> {
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    Utc.from_utc_datetime(&naive)
}

fn bsn(s: &str) -> Bsn {
    Bsn::try_from(s.to_owned()).unwrap()
}

fn performer(role: Role) -> Performer {
    let name = match role {
        Role::Child => "Sanne de Vries",
        Role::Parent => "Marieke de Vries",
        Role::Guardian => "Jan Jansen",
    };
    Performer {
        role,
        name: name.into(),
    }
}

fn request(birth: &str, given: &str, roles: &[Role], exception: Option<&str>) -> ConsentRequest {
    let given = d(given);
    ConsentRequest {
        child: Child {
            bsn: bsn(BSN),
            birth_date: d(birth),
            name: Some("Sanne de Vries".into()),
        },
        performers: roles.iter().copied().map(performer).collect(),
        scope: Scope {
            types: vec![MessageType::Referral, MessageType::Feedback],
            recipient: WIJKTEAM.into(),
        },
        valid_from: given,
        valid_until: given + chrono::Days::new(365),
        given_on: Some(given),
        evidence: "mondeling tijdens consult".into(),
        exception: exception.map(str::to_owned),
    }
}

/// A valid request for a 13-year-old with child and parent.
fn good_request() -> ConsentRequest {
    request(
        "2013-01-15",
        "2026-03-01",
        &[Role::Child, Role::Parent],
        None,
    )
}

const TODAY: &str = "2026-03-10";

// ---------------------------------------------------------------------------------------
// WGBO
// ---------------------------------------------------------------------------------------

/// What each performer combination yields, per age band: Ok(basis) or the missing role.
type Expect = Result<WgboBasis, MissingPerformer>;

fn expected_for(age: u32, roles: &[Role]) -> Expect {
    use MissingPerformer as M;
    use Role::{Child as C, Guardian as G, Parent as P};
    // Literal tables, written from the law rather than from the implementation.
    let under_12: &[(&[Role], Expect)] = &[
        (&[], Err(M::ParentOrGuardian)),
        (&[C], Err(M::ParentOrGuardian)),
        (&[P], Ok(WgboBasis::ParentOrGuardian)),
        (&[G], Ok(WgboBasis::ParentOrGuardian)),
        (&[C, P], Ok(WgboBasis::ParentOrGuardian)),
        (&[G, C], Ok(WgboBasis::ParentOrGuardian)),
        (&[P, P], Ok(WgboBasis::ParentOrGuardian)),
    ];
    let from_12: &[(&[Role], Expect)] = &[
        (&[], Err(M::ChildAndParentOrGuardian)),
        (&[C], Err(M::ParentOrGuardian)),
        (&[P], Err(M::Child)),
        (&[G], Err(M::Child)),
        (&[C, P], Ok(WgboBasis::ChildAndParent)),
        (&[G, C], Ok(WgboBasis::ChildAndParent)),
        (&[P, P], Err(M::Child)),
    ];
    let from_16: &[(&[Role], Expect)] = &[
        (&[], Err(M::Child)),
        (&[C], Ok(WgboBasis::Child)),
        (&[P], Err(M::Child)),
        (&[G], Err(M::Child)),
        (&[C, P], Ok(WgboBasis::Child)),
        (&[G, C], Ok(WgboBasis::Child)),
        (&[P, P], Err(M::Child)),
    ];
    let table = match age {
        0..=11 => under_12,
        12..=15 => from_12,
        _ => from_16,
    };
    table
        .iter()
        .find(|(r, _)| *r == roles)
        .map(|(_, e)| e.clone())
        .unwrap()
}

/// (birth date, day consent is given, age on that day)
const BOUNDARIES: &[(&str, &str, u32)] = &[
    ("2014-03-02", "2026-03-01", 11), // day before the 12th birthday
    ("2014-03-01", "2026-03-01", 12), // 12th birthday
    ("2010-03-02", "2026-03-01", 15), // day before the 16th birthday
    ("2010-03-01", "2026-03-01", 16), // 16th birthday
    ("2014-12-31", "2026-12-30", 11),
    ("2014-12-31", "2026-12-31", 12),
    ("2012-02-29", "2024-02-28", 11),
    ("2012-02-29", "2024-02-29", 12),
    ("2008-02-29", "2024-02-28", 15),
    ("2008-02-29", "2024-02-29", 16),
    ("2012-02-29", "2025-02-28", 12), // 13th birthday not yet: it counts on 1 March
    ("2012-02-29", "2025-03-01", 13),
    ("2084-02-29", "2100-02-28", 15), // 2100 is no leap year: 16 only on 1 March
    ("2084-02-29", "2100-03-01", 16),
    ("2026-03-01", "2026-03-01", 0), // consent on the day of birth
];

#[test]
fn wgbo_boundary_table() {
    use Role::{Child as C, Guardian as G, Parent as P};
    let combos: &[&[Role]] = &[&[], &[C], &[P], &[G], &[C, P], &[G, C], &[P, P]];
    for &(birth, given, age) in BOUNDARIES {
        for &roles in combos {
            let req = request(birth, given, roles, None);
            let got = validate_request(&req, d(given));
            let ctx = format!("born {birth}, given {given}, performers {roles:?}");
            match expected_for(age, roles) {
                Ok(basis) => assert_eq!(got, Ok(basis), "{ctx}"),
                Err(missing) => {
                    let want = ConsentError::WgboMissingPerformer {
                        age,
                        given_on: d(given),
                        missing,
                    };
                    assert_eq!(got, Err(want), "{ctx}");
                    let err = got.unwrap_err();
                    assert_eq!(err.code(), "wgbo_missing_performer");
                    assert_eq!(err.field(), Some("performers"));
                    assert!(
                        err.to_string().contains(&format!("missing: {missing}")),
                        "{ctx}: {err}"
                    );
                }
            }
        }
    }
}

#[test]
fn wgbo_message_names_the_missing_performer_and_no_personal_data() {
    let req = request("2013-01-15", "2026-03-01", &[Role::Parent], None);
    let err = validate_request(&req, d(TODAY)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the child is 13 on the day of consent (2026-03-01): WGBO requires the consent of \
         the child and of a parent or guardian; missing: the child"
    );

    let mut messages = Vec::new();
    for (birth, roles, needle) in [
        (
            "2013-01-15",
            &[Role::Child][..],
            "missing: a parent or guardian (or, where",
        ),
        (
            "2020-06-01",
            &[Role::Child][..],
            "is 5 on the day of consent (2026-03-01)",
        ),
        (
            "2009-06-01",
            &[Role::Parent][..],
            "does not replace it); missing: the child",
        ),
    ] {
        let req = request(birth, "2026-03-01", roles, None);
        let msg = validate_request(&req, d(TODAY)).unwrap_err().to_string();
        assert!(msg.contains(needle), "{msg}");
        assert!(!msg.contains(birth), "{msg}");
        messages.push(msg);
    }
    assert!(messages[1].ends_with("missing: a parent or guardian"));
    for m in &messages {
        assert!(!m.contains(BSN) && !m.contains("Vries"), "{m}");
    }
}

#[test]
fn given_on_defaults_to_valid_from_for_the_age() {
    // Born 2014-03-01: 11 on 2026-02-28, 12 on 2026-03-01.
    let mut req = request("2014-03-01", "2026-02-28", &[Role::Parent], None);
    req.given_on = None;
    assert_eq!(
        validate_request(&req, d(TODAY)),
        Ok(WgboBasis::ParentOrGuardian)
    );
    req.valid_from = d("2026-03-01");
    let err = validate_request(&req, d(TODAY)).unwrap_err();
    assert!(matches!(
        err,
        ConsentError::WgboMissingPerformer {
            age: 12,
            missing: MissingPerformer::Child,
            ..
        }
    ));
    // An explicit given_on wins over valid_from.
    req.given_on = Some(d("2026-02-28"));
    assert_eq!(
        validate_request(&req, d(TODAY)),
        Ok(WgboBasis::ParentOrGuardian)
    );
}

#[test]
fn exception_accepted_for_12_to_15_with_reason() {
    for (birth, given) in [("2014-03-01", "2026-03-01"), ("2010-03-02", "2026-03-01")] {
        let req = request(birth, given, &[Role::Child], Some("vader is pleger"));
        assert_eq!(
            validate_request(&req, d(TODAY)),
            Ok(WgboBasis::ExceptionSeriousHarm {
                reason: "vader is pleger".into()
            }),
            "born {birth}"
        );
    }
}

#[test]
fn exception_refused_without_reason() {
    for exception in [None, Some(""), Some("  \t ")] {
        let req = request("2013-01-15", "2026-03-01", &[Role::Child], exception);
        let err = validate_request(&req, d(TODAY)).unwrap_err();
        match exception {
            None => assert!(matches!(
                err,
                ConsentError::WgboMissingPerformer {
                    missing: MissingPerformer::ParentOrGuardian,
                    ..
                }
            )),
            Some(_) => assert_eq!(err, ConsentError::Empty { field: "exception" }),
        }
    }
}

#[test]
fn exception_refused_at_11_and_16() {
    for (birth, age, roles) in [
        ("2014-03-02", 11, &[Role::Child][..]),
        ("2014-03-02", 11, &[Role::Parent][..]),
        ("2010-03-01", 16, &[Role::Child][..]),
    ] {
        let req = request(birth, "2026-03-01", roles, Some("ernstig nadeel"));
        let err = validate_request(&req, d(TODAY)).unwrap_err();
        assert_eq!(
            err,
            ConsentError::WgboExceptionOutsideAge {
                age,
                given_on: d("2026-03-01")
            }
        );
        assert_eq!(err.code(), "wgbo_exception_outside_age");
        assert_eq!(err.field(), Some("exception"));
    }
}

#[test]
fn exception_refused_when_parent_consented_and_does_not_replace_the_child() {
    let req = request(
        "2013-01-15",
        "2026-03-01",
        &[Role::Child, Role::Parent],
        Some("x"),
    );
    let err = validate_request(&req, d(TODAY)).unwrap_err();
    assert_eq!(err.code(), "wgbo_exception_with_parent");

    let req = request("2013-01-15", "2026-03-01", &[Role::Parent], Some("x"));
    assert!(matches!(
        validate_request(&req, d(TODAY)),
        Err(ConsentError::WgboMissingPerformer {
            missing: MissingPerformer::Child,
            ..
        })
    ));
}

// ---------------------------------------------------------------------------------------
// Field validation
// ---------------------------------------------------------------------------------------

fn refused(edit: impl FnOnce(&mut ConsentRequest)) -> ConsentError {
    let mut req = good_request();
    edit(&mut req);
    validate_request(&req, d(TODAY)).unwrap_err()
}

#[test]
fn good_request_is_accepted() {
    assert_eq!(
        validate_request(&good_request(), d(TODAY)),
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
            refused(|r| r.performers.push(performer(Role::Child))),
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
    assert!(validate_request(&req, d(TODAY)).is_ok());
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
        validate_request(&req, d(TODAY)),
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
    );
    assert_eq!(bad_id.unwrap_err().code(), "identifier_invalid");
    let no_user = ConsentRecord::from_request(
        "c-1".into(),
        good_request(),
        " ".into(),
        ts("2026-03-10 09:00"),
        d(TODAY),
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
        d(TODAY)
    )
    .is_err());
}

// ---------------------------------------------------------------------------------------
// Events and state
// ---------------------------------------------------------------------------------------

fn record(id: &str) -> ConsentRecord {
    // Valid 2026-03-01 ..= 2027-03-01.
    ConsentRecord::from_request(
        id.into(),
        good_request(),
        "dr. Bakker".into(),
        ts("2026-03-01 10:00"),
        d("2026-03-01"),
    )
    .unwrap()
}

fn recorded(id: &str) -> ConsentEvent {
    ConsentEvent::Recorded { record: record(id) }
}

fn withdrawn(id: &str, at: &str) -> ConsentEvent {
    ConsentEvent::Withdrawn {
        consent_id: id.into(),
        at: ts(at),
        by: "dr. Bakker".into(),
        reason: "ouders trekken toestemming in".into(),
    }
}

fn summary(status: ConsentStatus) -> ConsentSummary {
    ConsentSummary {
        id: "c-1".into(),
        subject_bsn: bsn(BSN),
        types: vec![MessageType::Referral, MessageType::Feedback],
        recipient: WIJKTEAM.into(),
        valid_from: d("2026-03-01"),
        valid_until: d("2027-03-01"),
        status,
    }
}

fn mirrored(status: ConsentStatus) -> ConsentEvent {
    ConsentEvent::Mirrored {
        summary: summary(status),
        from_peer: PRACTICE.into(),
        at: ts("2026-03-02 08:00"),
    }
}

fn update(status: ConsentStatus, at: &str) -> ConsentEvent {
    ConsentEvent::UpdatedFromPeer {
        consent_id: "c-1".into(),
        status,
        at: ts(at),
        from_peer: PRACTICE.into(),
    }
}

#[test]
fn recorded_is_active_within_period_inclusive() {
    let s = ConsentState::from_events(&[recorded("c-1")]).unwrap();
    assert_eq!(s.status_on(d("2026-02-28")), ConsentStatus::NotYetValid);
    assert_eq!(s.status_on(d("2026-03-01")), ConsentStatus::Active);
    assert_eq!(s.status_on(d("2027-03-01")), ConsentStatus::Active);
    assert_eq!(s.status_on(d("2027-03-02")), ConsentStatus::Expired);
    assert!(!s.is_mirror());
    assert_eq!(s.subject, bsn(BSN));
    assert!(matches!(
        s.origin,
        ConsentOrigin::Recorded {
            basis: WgboBasis::ChildAndParent,
            ..
        }
    ));
}

#[test]
fn withdrawal_is_final() {
    let events = [
        recorded("c-1"),
        withdrawn("c-1", "2026-04-01 12:00"),
        update(ConsentStatus::Active, "2026-04-02 12:00"),
        recorded("c-1"),
        mirrored(ConsentStatus::Active),
        withdrawn("c-1", "2026-05-01 12:00"),
    ];
    let s = ConsentState::from_events(&events).unwrap();
    assert_eq!(s.status_on(d("2026-04-15")), ConsentStatus::Withdrawn);
    // Withdrawn beats expired and not-yet-valid: it is the stronger fact.
    assert_eq!(s.status_on(d("2030-01-01")), ConsentStatus::Withdrawn);
    let w = s.withdrawn.as_ref().unwrap();
    assert_eq!(w.at, ts("2026-04-01 12:00"), "first withdrawal stands");
    assert_eq!(
        w.by,
        Withdrawer::LocalUser {
            name: "dr. Bakker".into()
        }
    );
    assert_eq!(w.reason.as_deref(), Some("ouders trekken toestemming in"));
}

#[test]
fn events_of_other_consents_are_ignored() {
    let events = [
        recorded("c-1"),
        recorded("c-2"),
        withdrawn("c-2", "2026-04-01 12:00"),
    ];
    let s = ConsentState::from_events(&events).unwrap();
    assert_eq!(s.id, "c-1");
    assert_eq!(s.status_on(d("2026-05-01")), ConsentStatus::Active);
    assert_eq!(ConsentState::from_events(&[]), None);
    assert_eq!(
        ConsentState::from_events(&[withdrawn("c-1", "2026-04-01 12:00")]),
        None
    );
}

/// Regression: a withdrawal stored before the event that establishes the consent (an
/// update that overtook the mirror at the wijkteam) used to be ignored, so a mirror
/// arriving after it came up active.
#[test]
fn a_withdrawal_stored_before_the_consent_was_established_still_stops_it() {
    let events = [withdrawn("c-1", "2026-02-01 12:00"), recorded("c-1")];
    let s = ConsentState::from_events(&events).unwrap();
    assert_eq!(s.status_on(d("2026-05-01")), ConsentStatus::Withdrawn);
    let overtaken = [
        update(ConsentStatus::Withdrawn, "2026-02-01 12:00"),
        mirrored(ConsentStatus::Active),
    ];
    let s = ConsentState::from_events(&overtaken).unwrap();
    assert!(s.is_mirror());
    assert_eq!(s.status_on(d("2026-05-01")), ConsentStatus::Withdrawn);
}

#[test]
fn mirror_then_update_from_peer_withdraws() {
    let s = ConsentState::from_events(&[mirrored(ConsentStatus::Active)]).unwrap();
    assert!(s.is_mirror());
    assert_eq!(s.status_on(d("2026-03-05")), ConsentStatus::Active);

    let s = ConsentState::from_events(&[
        mirrored(ConsentStatus::Active),
        update(ConsentStatus::Withdrawn, "2026-04-01 12:00"),
        update(ConsentStatus::Active, "2026-04-02 12:00"),
    ])
    .unwrap();
    assert_eq!(s.status_on(d("2026-04-05")), ConsentStatus::Withdrawn);
    assert_eq!(
        s.withdrawn.unwrap().by,
        Withdrawer::Peer {
            identity: PRACTICE.into()
        }
    );

    // A mirror that arrives already withdrawn, and a peer-reported expiry.
    let s = ConsentState::from_events(&[mirrored(ConsentStatus::Withdrawn)]).unwrap();
    assert_eq!(s.status_on(d("2026-03-05")), ConsentStatus::Withdrawn);
    let s = ConsentState::from_events(&[
        mirrored(ConsentStatus::Active),
        update(ConsentStatus::Expired, "2026-06-01 12:00"),
    ])
    .unwrap();
    assert_eq!(s.status_on(d("2026-06-01")), ConsentStatus::Expired);
}

#[test]
fn summary_reflects_state_and_round_trips() {
    let s = ConsentState::from_events(&[recorded("c-1")]).unwrap();
    assert_eq!(s.summary(d("2026-03-05")), summary(ConsentStatus::Active));
    assert_eq!(s.summary(d("2028-01-01")).status, ConsentStatus::Expired);
    let json = serde_json::to_value(s.summary(d("2026-03-05"))).unwrap();
    assert_eq!(json["subject_bsn"], BSN);
    assert_eq!(json["status"], "active");
    assert_eq!(json["types"], serde_json::json!(["referral", "feedback"]));
    let back: ConsentSummary = serde_json::from_value(json).unwrap();
    assert_eq!(back.validate(), Ok(()));

    let mut bad = summary(ConsentStatus::Active);
    bad.types = vec![MessageType::Consultation];
    assert_eq!(bad.validate().unwrap_err().field(), Some("consent.types"));
    bad = summary(ConsentStatus::Active);
    bad.id = "../etc".into();
    assert_eq!(bad.validate().unwrap_err().code(), "identifier_invalid");
}

#[test]
fn events_serialise_with_event_tag_and_round_trip() {
    let events = vec![
        recorded("c-1"),
        withdrawn("c-1", "2026-04-01 12:00"),
        mirrored(ConsentStatus::Active),
        update(ConsentStatus::Withdrawn, "2026-04-01 12:00"),
    ];
    let tags: Vec<String> = events
        .iter()
        .map(|e| {
            serde_json::to_value(e).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        tags,
        ["recorded", "withdrawn", "mirrored", "updated_from_peer"]
    );
    for e in &events {
        assert_eq!(serde_json::to_value(e).unwrap()["event"], e.kind());
        assert_eq!(e.consent_id(), "c-1");
    }
    let json = serde_json::to_string(&events).unwrap();
    let back: Vec<ConsentEvent> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, events);
    let rec = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(rec["record"]["basis"]["kind"], "child_and_parent");
}

#[test]
fn withdrawable_once_and_only_at_the_practice() {
    let s = ConsentState::from_events(&[recorded("c-1")]).unwrap();
    assert_eq!(check_withdrawable(&s), Ok(()));
    let ev = withdrawal_event(
        &s,
        "dr. Bakker".into(),
        String::new(),
        ts("2026-04-01 12:00"),
    )
    .unwrap();
    assert_eq!(ev.consent_id(), "c-1");
    let s = ConsentState::from_events(&[recorded("c-1"), ev]).unwrap();
    assert_eq!(s.withdrawn.as_ref().unwrap().reason, None);
    let err = check_withdrawable(&s).unwrap_err();
    assert_eq!(err.code(), "consent_already_withdrawn");
    assert_eq!(err.field(), None);
    assert!(withdrawal_event(&s, "x".into(), String::new(), ts("2026-04-02 12:00")).is_err());

    let mirror = ConsentState::from_events(&[mirrored(ConsentStatus::Active)]).unwrap();
    assert_eq!(
        check_withdrawable(&mirror),
        Err(ConsentError::MirrorNotWithdrawable)
    );

    let s = ConsentState::from_events(&[recorded("c-1")]).unwrap();
    assert_eq!(
        withdrawal_event(&s, " ".into(), String::new(), ts("2026-04-01 12:00")),
        Err(ConsentError::Empty { field: "by" })
    );
    assert_eq!(
        withdrawal_event(&s, "u".into(), "x".repeat(501), ts("2026-04-01 12:00"))
            .unwrap_err()
            .code(),
        "field_too_long"
    );
}

// ---------------------------------------------------------------------------------------
// Coverage
// ---------------------------------------------------------------------------------------

/// state, child, type, recipient, day, expected
type CoverCase<'a> = (
    Option<&'a ConsentState>,
    &'a Bsn,
    MessageType,
    &'a str,
    NaiveDate,
    Result<(), ConsentRefusal>,
);

#[test]
fn check_covers_each_outcome() {
    use ConsentRefusal as R;
    use MessageType::{ConsentUpdate, Consultation, Feedback, Referral};
    let active = ConsentState::from_events(&[recorded("c-1")]).unwrap();
    let referral_only = {
        let mut rec = record("c-1");
        rec.scope.types = vec![Referral];
        ConsentState::from_events(&[ConsentEvent::Recorded { record: rec }]).unwrap()
    };
    let gone = ConsentState::from_events(&[recorded("c-1"), withdrawn("c-1", "2026-04-01 12:00")])
        .unwrap();
    let child = bsn(BSN);
    let other = bsn(OTHER_BSN);
    let on = d("2026-05-01");
    #[rustfmt::skip]
    let cases: Vec<CoverCase> = vec![
        (Some(&active), &child, Referral, WIJKTEAM, on, Ok(())),
        (Some(&active), &child, Feedback, WIJKTEAM, on, Ok(())),
        (None, &child, Referral, WIJKTEAM, on, Err(R::NoConsent)),
        (Some(&gone), &child, Referral, WIJKTEAM, on, Err(R::Withdrawn)),
        (Some(&active), &child, Referral, WIJKTEAM, d("2027-03-02"), Err(R::Expired)),
        (Some(&active), &child, Referral, WIJKTEAM, d("2027-03-01"), Ok(())),
        (Some(&active), &child, Referral, WIJKTEAM, d("2026-02-28"), Err(R::NotYetValid)),
        (Some(&active), &other, Referral, WIJKTEAM, on, Err(R::OtherChild)),
        (Some(&active), &child, Referral, PRACTICE, on, Err(R::OtherRecipient)),
        (Some(&referral_only), &child, Feedback, WIJKTEAM, on, Err(R::OtherType)),
        (Some(&active), &child, Consultation, WIJKTEAM, on, Err(R::OtherType)),
        // The withdrawal notice itself must get through, but only about this child and
        // to the consent's recipient.
        (Some(&gone), &child, ConsentUpdate, WIJKTEAM, on, Ok(())),
        (Some(&gone), &child, ConsentUpdate, PRACTICE, on, Err(R::OtherRecipient)),
        (Some(&gone), &other, ConsentUpdate, WIJKTEAM, on, Err(R::OtherChild)),
        // The child mismatch is reported before the status.
        (Some(&gone), &other, Referral, WIJKTEAM, on, Err(R::OtherChild)),
    ];
    for (i, (state, who, t, to, day, want)) in cases.into_iter().enumerate() {
        assert_eq!(check_covers(state, who, t, to, day), want, "case {i}");
    }
}

#[test]
fn wijkteam_checks_mirror_origin() {
    use ConsentRefusal as R;
    let mirror = ConsentState::from_events(&[mirrored(ConsentStatus::Active)]).unwrap();
    let child = bsn(BSN);
    let on = d("2026-05-01");
    let fb = MessageType::Feedback;
    assert_eq!(
        check_covers_at_recipient(Some(&mirror), &child, fb, WIJKTEAM, PRACTICE, on),
        Ok(())
    );
    assert_eq!(
        check_covers_at_recipient(Some(&mirror), &child, fb, WIJKTEAM, "ura:99999999", on),
        Err(R::OtherRecipient)
    );
    assert_eq!(
        check_covers_at_recipient(None, &child, fb, WIJKTEAM, PRACTICE, on),
        Err(R::NoConsent)
    );
    let local = ConsentState::from_events(&[recorded("c-1")]).unwrap();
    assert_eq!(
        check_covers_at_recipient(Some(&local), &child, fb, WIJKTEAM, PRACTICE, on),
        Err(R::OtherRecipient)
    );
    let gone = ConsentState::from_events(&[
        mirrored(ConsentStatus::Active),
        update(ConsentStatus::Withdrawn, "2026-04-01 12:00"),
    ])
    .unwrap();
    assert_eq!(
        check_covers_at_recipient(Some(&gone), &child, fb, WIJKTEAM, PRACTICE, on),
        Err(R::Withdrawn)
    );
}

#[test]
fn refusal_codes_are_distinct_and_texts_plain() {
    use ConsentRefusal as R;
    let all = [
        R::NoConsent,
        R::Withdrawn,
        R::Expired,
        R::NotYetValid,
        R::OtherChild,
        R::OtherRecipient,
        R::OtherType,
    ];
    let codes: std::collections::BTreeSet<_> = all.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), all.len());
    for r in all {
        assert!(r.code().starts_with("consent_"));
        assert!(!r.to_string().is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// FHIR
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Derived state through a real store (the registry's cache of folded states)
// ---------------------------------------------------------------------------------------

fn test_store(dir: &std::path::Path) -> crate::store::Store {
    let (signer, _) = crate::pki::test_credentials();
    crate::store::Store::open(dir, std::sync::Arc::new(signer)).unwrap()
}

#[tokio::test]
async fn a_state_read_before_a_withdrawal_is_not_served_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = test_store(dir.path());
    let id = "c-cache-1";
    let append = |event: ConsentEvent| {
        let store = store.clone();
        async move {
            store
                .commit(move |tx| registry::append(tx, "pseudonym", &event))
                .await
                .unwrap()
        }
    };
    append(recorded(id)).await;
    // Read twice, so that the second read can come from the cache.
    for _ in 0..2 {
        let s = registry::state(&store, id).unwrap().unwrap();
        assert!(s.withdrawn.is_none());
    }
    append(withdrawn(id, "2026-06-01 09:00")).await;
    let s = registry::state(&store, id).unwrap().unwrap();
    assert!(s.withdrawn.is_some(), "the withdrawal must be seen");
    // Inside a job, the same: the withdrawal is in the events this job reads.
    let in_job = store
        .commit(move |tx| registry::state_in(tx, id))
        .await
        .unwrap()
        .unwrap();
    assert!(in_job.withdrawn.is_some());
    store.close();
}
