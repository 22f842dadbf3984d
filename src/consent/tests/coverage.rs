//! Coverage: whether a consent covers a message, at the sender and (for a mirror) at the
//! recipient, and the refusal codes.

use super::*;

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
