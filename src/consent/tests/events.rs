//! Events and state: folding consent events into a state, withdrawal, summaries and the
//! serialised events.

use super::*;

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
