//! WGBO: which performers a consent needs at each age, and the exception for 12 to 15.

use super::*;

/// What each performer combination yields, per age band: Ok(basis) or the missing role.
type Expect = Result<WgboBasis, MissingPerformer>;

fn expected_for(age: u32, roles: &[PerformerRole]) -> Expect {
    use MissingPerformer as M;
    use PerformerRole::{Child as C, Guardian as G, Parent as P};
    // Literal tables, written from the law rather than from the implementation.
    let under_12: &[(&[PerformerRole], Expect)] = &[
        (&[], Err(M::ParentOrGuardian)),
        (&[C], Err(M::ParentOrGuardian)),
        (&[P], Ok(WgboBasis::ParentOrGuardian)),
        (&[G], Ok(WgboBasis::ParentOrGuardian)),
        (&[C, P], Ok(WgboBasis::ParentOrGuardian)),
        (&[G, C], Ok(WgboBasis::ParentOrGuardian)),
        (&[P, P], Ok(WgboBasis::ParentOrGuardian)),
    ];
    let from_12: &[(&[PerformerRole], Expect)] = &[
        (&[], Err(M::ChildAndParentOrGuardian)),
        (&[C], Err(M::ParentOrGuardian)),
        (&[P], Err(M::Child)),
        (&[G], Err(M::Child)),
        (&[C, P], Ok(WgboBasis::ChildAndParent)),
        (&[G, C], Ok(WgboBasis::ChildAndParent)),
        (&[P, P], Err(M::Child)),
    ];
    let from_16: &[(&[PerformerRole], Expect)] = &[
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
    use PerformerRole::{Child as C, Guardian as G, Parent as P};
    let combos: &[&[PerformerRole]] = &[&[], &[C], &[P], &[G], &[C, P], &[G, C], &[P, P]];
    for &(birth, given, age) in BOUNDARIES {
        for &roles in combos {
            let req = request(birth, given, roles, None);
            let got = validate_request(&req, d(given), &crate::consent::ConsentRules::DEFAULT);
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
    let req = request("2013-01-15", "2026-03-01", &[PerformerRole::Parent], None);
    let err = validate_request(&req, d(TODAY), &crate::consent::ConsentRules::DEFAULT).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the child is 13 on the day of consent (2026-03-01): WGBO requires the consent of \
         the child and of a parent or guardian; missing: the child"
    );

    let mut messages = Vec::new();
    for (birth, roles, needle) in [
        (
            "2013-01-15",
            &[PerformerRole::Child][..],
            "missing: a parent or guardian (or, where",
        ),
        (
            "2020-06-01",
            &[PerformerRole::Child][..],
            "is 5 on the day of consent (2026-03-01)",
        ),
        (
            "2009-06-01",
            &[PerformerRole::Parent][..],
            "does not replace it); missing: the child",
        ),
    ] {
        let req = request(birth, "2026-03-01", roles, None);
        let msg = validate_request(&req, d(TODAY), &crate::consent::ConsentRules::DEFAULT)
            .unwrap_err()
            .to_string();
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
    let mut req = request("2014-03-01", "2026-02-28", &[PerformerRole::Parent], None);
    req.given_on = None;
    assert_eq!(
        validate_request(&req, d(TODAY), &crate::consent::ConsentRules::DEFAULT),
        Ok(WgboBasis::ParentOrGuardian)
    );
    req.valid_from = d("2026-03-01");
    let err = validate_request(&req, d(TODAY), &crate::consent::ConsentRules::DEFAULT).unwrap_err();
    assert!(matches!(
        err,
        ConsentError::WgboMissingPerformer {
            age: 12,
            missing: MissingPerformer::Child,
            ..
        }
    ));
    // An explicit given_on wins over valid_from: on 2026-02-28 the child is 11, so a
    // parent alone consents — but that basis ends that same day, before a period that
    // starts on the 12th birthday.
    req.given_on = Some(d("2026-02-28"));
    assert_eq!(
        validate_request(&req, d(TODAY), &crate::consent::ConsentRules::DEFAULT),
        Err(ConsentError::WgboBasisLapsesBeforeStart {
            valid_from: d("2026-03-01")
        })
    );
    req.valid_from = d("2026-02-28");
    assert_eq!(
        validate_request(&req, d(TODAY), &crate::consent::ConsentRules::DEFAULT),
        Ok(WgboBasis::ParentOrGuardian)
    );
}

#[test]
fn exception_accepted_for_12_to_15_with_reason() {
    for (birth, given) in [("2014-03-01", "2026-03-01"), ("2010-03-02", "2026-03-01")] {
        let req = request(
            birth,
            given,
            &[PerformerRole::Child],
            Some("vader is pleger"),
        );
        assert_eq!(
            validate_request(&req, d(TODAY), &crate::consent::ConsentRules::DEFAULT),
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
        let req = request(
            "2013-01-15",
            "2026-03-01",
            &[PerformerRole::Child],
            exception,
        );
        let err =
            validate_request(&req, d(TODAY), &crate::consent::ConsentRules::DEFAULT).unwrap_err();
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
        ("2014-03-02", 11, &[PerformerRole::Child][..]),
        ("2014-03-02", 11, &[PerformerRole::Parent][..]),
        ("2010-03-01", 16, &[PerformerRole::Child][..]),
    ] {
        let req = request(birth, "2026-03-01", roles, Some("ernstig nadeel"));
        let err =
            validate_request(&req, d(TODAY), &crate::consent::ConsentRules::DEFAULT).unwrap_err();
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
        &[PerformerRole::Child, PerformerRole::Parent],
        Some("x"),
    );
    let err = validate_request(&req, d(TODAY), &crate::consent::ConsentRules::DEFAULT).unwrap_err();
    assert_eq!(err.code(), "wgbo_exception_with_parent");

    let req = request(
        "2013-01-15",
        "2026-03-01",
        &[PerformerRole::Parent],
        Some("x"),
    );
    assert!(matches!(
        validate_request(&req, d(TODAY), &crate::consent::ConsentRules::DEFAULT),
        Err(ConsentError::WgboMissingPerformer {
            missing: MissingPerformer::Child,
            ..
        })
    ));
}

// ---------------------------------------------------------------------------------------
// WGBO over time (issue 13): the basis lapses as the child grows older.
// ---------------------------------------------------------------------------------------

/// A recorded consent for `roles`, given on `given` (and valid from then for 365 days),
/// recorded on `today`.
fn recorded(birth: &str, given: &str, roles: &[PerformerRole], today: &str) -> ConsentRecord {
    ConsentRecord::from_request(
        "consent-1".into(),
        request(birth, given, roles, None),
        "dr. Bakker".into(),
        ts(&format!("{today} 10:00")),
        d(today),
        &crate::consent::ConsentRules::DEFAULT,
    )
    .unwrap()
}

/// Whether the consent covers a referral to the wijkteam on `day`.
fn covers_on(record: &ConsentRecord, day: &str) -> Result<(), ConsentRefusal> {
    let state = ConsentState::from_events(&[ConsentEvent::Recorded {
        record: record.clone(),
    }]);
    check_covers(
        state.as_ref(),
        &bsn(BSN),
        MessageType::Referral,
        WIJKTEAM,
        d(day),
    )
}

#[test]
fn a_parents_consent_alone_ends_the_day_before_the_12th_birthday() {
    // Born 2014-03-01: 11 until 2026-02-28, 12 from 2026-03-01.
    let record = recorded(
        "2014-03-01",
        "2026-02-20",
        &[PerformerRole::Parent],
        "2026-02-20",
    );
    assert_eq!(record.basis, WgboBasis::ParentOrGuardian);
    assert_eq!(
        record.valid_until,
        d("2027-02-20"),
        "the request is kept as given"
    );
    assert_eq!(record.effective_until(), d("2026-02-28"));
    assert_eq!(covers_on(&record, "2026-02-28"), Ok(()), "the day before");
    assert_eq!(
        covers_on(&record, "2026-03-01"),
        Err(ConsentRefusal::Expired),
        "the 12th birthday"
    );
    // The summary that travels ends then, and holds no birth date.
    let state = ConsentState::from_events(&[ConsentEvent::Recorded { record }]).unwrap();
    let summary = state.summary(d("2026-02-28"));
    assert_eq!(summary.valid_until, d("2026-02-28"));
    assert_eq!(summary.status, ConsentStatus::Active);
    assert_eq!(
        state.summary(d("2026-03-01")).status,
        ConsentStatus::Expired
    );
    let text = serde_json::to_string(&summary).unwrap();
    assert!(!text.contains("2014"), "{text}");

    // Renewed with the child on the birthday: child and parent, which runs its period.
    let renewed = recorded(
        "2014-03-01",
        "2026-03-01",
        &[PerformerRole::Child, PerformerRole::Parent],
        "2026-03-01",
    );
    assert_eq!(renewed.basis, WgboBasis::ChildAndParent);
    assert_eq!(renewed.effective_until(), renewed.valid_until);
    assert_eq!(covers_on(&renewed, "2026-03-01"), Ok(()));
}

#[test]
fn a_parents_consent_alone_for_a_29_february_child_ends_on_28_february() {
    let record = recorded(
        "2016-02-29",
        "2028-02-20",
        &[PerformerRole::Parent],
        "2028-02-20",
    );
    assert_eq!(record.effective_until(), d("2028-02-28"));
    assert_eq!(covers_on(&record, "2028-02-28"), Ok(()));
    assert_eq!(
        covers_on(&record, "2028-02-29"),
        Err(ConsentRefusal::Expired)
    );
}

#[test]
fn a_period_shorter_than_the_basis_keeps_its_own_end() {
    let mut req = request("2014-03-01", "2026-01-10", &[PerformerRole::Parent], None);
    req.valid_until = d("2026-02-01");
    let record = ConsentRecord::from_request(
        "c".into(),
        req,
        "dr. Bakker".into(),
        ts("2026-01-10 10:00"),
        d("2026-01-10"),
        &crate::consent::ConsentRules::DEFAULT,
    )
    .unwrap();
    assert_eq!(record.effective_until(), d("2026-02-01"));
}

#[test]
fn a_child_and_parent_consent_runs_on_past_the_16th_birthday() {
    // Born 2010-03-01: 15 until 2026-02-28, 16 from 2026-03-01.
    let record = recorded(
        "2010-03-01",
        "2026-02-20",
        &[PerformerRole::Child, PerformerRole::Parent],
        "2026-02-20",
    );
    assert_eq!(record.basis, WgboBasis::ChildAndParent);
    assert_eq!(record.effective_until(), record.valid_until);
    assert_eq!(covers_on(&record, "2026-02-28"), Ok(()), "the day before");
    assert_eq!(
        covers_on(&record, "2026-03-01"),
        Ok(()),
        "the 16th birthday"
    );
    assert_eq!(covers_on(&record, "2027-02-20"), Ok(()), "the last day");
    assert_eq!(
        covers_on(&record, "2027-02-21"),
        Err(ConsentRefusal::Expired)
    );
    // And the serious-harm exception (the child alone at 12-15) likewise.
    let mut req = request(
        "2010-03-01",
        "2026-02-20",
        &[PerformerRole::Child],
        Some("gevaar"),
    );
    req.valid_until = d("2026-12-31");
    let record = ConsentRecord::from_request(
        "c".into(),
        req,
        "dr. Bakker".into(),
        ts("2026-02-20 10:00"),
        d("2026-02-20"),
        &crate::consent::ConsentRules::DEFAULT,
    )
    .unwrap();
    assert_eq!(record.effective_until(), d("2026-12-31"));
}

#[test]
fn given_on_may_lie_at_most_the_configured_days_back() {
    let rules = crate::consent::ConsentRules::DEFAULT;
    assert_eq!(rules.given_on_max_days_back, 14);
    let roles = [PerformerRole::Child, PerformerRole::Parent];
    // 14 days before 2026-03-10 is 2026-02-24.
    let ok = request("2013-01-15", "2026-02-24", &roles, None);
    assert!(validate_request(&ok, d(TODAY), &rules).is_ok());
    let late = request("2013-01-15", "2026-02-23", &roles, None);
    let err = validate_request(&late, d(TODAY), &rules).unwrap_err();
    assert_eq!(
        (err.code(), err.field()),
        ("given_on_too_long_ago", Some("given_on"))
    );
    // The case: a 13-year-old's consent back-dated to when the child was 11 is
    // not filed as a parent's alone.
    let back = request("2013-01-15", "2024-12-01", &[PerformerRole::Parent], None);
    assert_eq!(
        validate_request(&back, d(TODAY), &rules)
            .unwrap_err()
            .code(),
        "given_on_too_long_ago"
    );
    // A wider window is a setting.
    let wide = crate::consent::ConsentRules {
        given_on_max_days_back: 30,
        ..rules
    };
    assert!(validate_request(&late, d(TODAY), &wide).is_ok());
}

#[test]
fn a_consent_runs_at_most_the_configured_days_after_it_was_given() {
    let rules = crate::consent::ConsentRules::DEFAULT;
    let roles = [PerformerRole::Child, PerformerRole::Parent];
    let mut req = request("2013-01-15", "2026-03-01", &roles, None);
    req.valid_until = d("2027-03-02"); // 366 days
    assert!(validate_request(&req, d(TODAY), &rules).is_ok());
    req.valid_until = d("2027-03-03");
    let err = validate_request(&req, d(TODAY), &rules).unwrap_err();
    assert_eq!(
        (err.code(), err.field()),
        ("validity_too_long", Some("valid_until"))
    );
    let short = crate::consent::ConsentRules {
        max_validity_days: 90,
        ..rules
    };
    req.valid_until = d("2026-05-31"); // 91 days
    assert_eq!(
        validate_request(&req, d(TODAY), &short).unwrap_err().code(),
        "validity_too_long"
    );
}
