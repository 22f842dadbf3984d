//! The send path on a real store: what is queued, what is refused and how both are
//! audited.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use super::*;
use crate::chain::AuditEvent;
use crate::consent::ConsentRefusal;
use crate::store::StoreError;
use crate::test_parts::{
    raw, referral_submission, Parts, Pki, BSN, OTHER_BSN, OTHER_WIJKTEAM_ID, PRACTICE_ID, USER,
    WIJKTEAM_ID,
};

fn user() -> Actor {
    Actor::User { id: USER.into() }
}

/// A practice with consent `c-1` for [`BSN`] to the wijkteam.
async fn practice_with_consent() -> Parts {
    let parts = Parts::practice(&Pki::new());
    parts.record_consent("c-1", BSN, WIJKTEAM_ID).await;
    parts
}

fn events(records: &[AuditEvent]) -> Vec<Event> {
    records.iter().map(|r| r.event).collect()
}

fn assert_nothing_queued(parts: &Parts, id: &str) {
    assert!(outbox::get(&parts.store, id).unwrap().is_none());
    assert_eq!(outbox::queued_for_peer(&parts.store, "wijkteam"), 0);
    assert_eq!(outbox::queued_for_peer(&parts.store, "other-wijkteam"), 0);
}

/// Submits `submission`, expects it refused with `code`, one `message_refused` record
/// about it and nothing queued; returns the refusal.
async fn assert_refused(parts: &Parts, submission: Value, code: Code) -> Refusal {
    let id = submission["id"].as_str().unwrap().to_string();
    let refusal = parts
        .send_path()
        .submit(USER, &raw(&submission))
        .await
        .unwrap_err();
    assert_eq!(refusal.code, code, "{refusal}");
    let audit = parts.audit_of(&id);
    assert_eq!(events(&audit), [Event::MessageRefused], "{audit:?}");
    assert_eq!(audit[0].outcome, Outcome::Refused);
    assert_eq!(audit[0].actor, user());
    assert_eq!(audit[0].on_behalf_of.as_deref(), Some(PRACTICE_ID));
    let reason = audit[0].reason.as_deref().unwrap();
    assert!(
        reason.starts_with(&format!("{}: ", code.as_str())),
        "{reason}"
    );
    assert_nothing_queued(parts, &id);
    refusal
}

/// Polls `fut` once: far enough for an `async fn` to run up to its first wait.
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

#[tokio::test]
async fn a_covered_referral_is_queued_once_with_its_audit_records() {
    let parts = practice_with_consent().await;
    let mut submission = referral_submission("msg-1", "c-1");
    submission["body"]["diagnoses"] = json!(["slaapstoornis"]);

    let accepted = parts
        .send_path()
        .submit(USER, &raw(&submission))
        .await
        .unwrap();

    assert_eq!((accepted.id.as_str(), accepted.status), ("msg-1", "queued"));
    let queued = outbox::get(&parts.store, "msg-1").unwrap().unwrap();
    assert_eq!(queued.status, Status::Queued);
    assert_eq!(queued.attempts, 0);
    assert_eq!(queued.peer, *"wijkteam");
    assert_eq!(queued.peer_identity, WIJKTEAM_ID);
    assert_eq!(queued.submitted_by, USER);
    assert_eq!(queued.consent_id.as_deref(), Some("c-1"));
    assert_eq!(queued.subject, Some(parts.pseudonym(BSN)));
    assert_eq!(outbox::queued_for_peer(&parts.store, "wijkteam"), 1);
    // A status query reads the same record without opening the envelope.
    let status = outbox::get_without_envelope(&parts.store, "msg-1")
        .unwrap()
        .unwrap();
    assert_eq!(
        (status.id.as_str(), status.status, status.created_at),
        ("msg-1", Status::Queued, queued.created_at)
    );
    assert!(status.envelope.is_empty() && !queued.envelope.is_empty());
    // What goes out: minimised, with the consent's summary. Not signed yet: the relay
    // signs each batch it sends, once, so accepting costs no signature.
    assert_eq!(queued.signature, None);
    assert_eq!(queued.batch, None);
    let envelope: Envelope = serde_json::from_str(&queued.envelope).unwrap();
    assert_eq!(
        (envelope.from.as_str(), envelope.to.as_str()),
        (PRACTICE_ID, WIJKTEAM_ID)
    );
    assert!(!envelope.body.contains_key("diagnoses"));
    let summary: consent::ConsentSummary =
        serde_json::from_value(envelope.consent.clone().unwrap()).unwrap();
    assert_eq!(summary.id, "c-1");
    assert_eq!(summary.status, consent::ConsentStatus::Active);

    let audit = parts.audit_of("msg-1");
    assert_eq!(
        events(&audit),
        [
            Event::MessageAccepted,
            Event::MessageFiltered,
            Event::MessageQueued
        ]
    );
    for record in &audit {
        assert_eq!(record.outcome, Outcome::Success);
        assert_eq!(record.actor, user());
        assert_eq!(record.on_behalf_of.as_deref(), Some(PRACTICE_ID));
        assert_eq!(record.peer.as_deref(), Some(WIJKTEAM_ID));
        assert_eq!(record.subject, Some(parts.pseudonym(BSN)));
        assert_eq!(record.consent_id.as_deref(), Some("c-1"));
    }
    assert_eq!(audit[1].changed_fields, ["body.diagnoses (drop)"]);
    let stored = format!("{:?}", parts.audit());
    assert!(!stored.contains(BSN), "the audit log holds no BSN");
}

#[tokio::test]
async fn a_referral_the_policy_leaves_alone_is_not_audited_as_filtered() {
    let parts = practice_with_consent().await;
    let submission = referral_submission("msg-1", "c-1");
    parts
        .send_path()
        .submit(USER, &raw(&submission))
        .await
        .unwrap();
    assert_eq!(
        events(&parts.audit_of("msg-1")),
        [Event::MessageAccepted, Event::MessageQueued]
    );
}

#[tokio::test]
async fn the_same_submission_again_is_accepted_once() {
    let parts = practice_with_consent().await;
    let submission = raw(&referral_submission("msg-1", "c-1"));
    let send = parts.send_path();

    let first = send.submit(USER, &submission).await.unwrap();
    let again = send.submit(USER, &submission).await.unwrap();

    assert_eq!(
        (again.id.as_str(), again.status),
        (first.id.as_str(), "queued")
    );
    assert_eq!(outbox::queued_for_peer(&parts.store, "wijkteam"), 1);
    assert_eq!(
        events(&parts.audit_of("msg-1")),
        [Event::MessageAccepted, Event::MessageQueued],
        "the retry adds no record"
    );
}

#[tokio::test]
async fn a_different_submission_with_a_used_id_is_refused_as_duplicate_id() {
    let parts = practice_with_consent().await;
    let send = parts.send_path();
    let first = referral_submission("msg-1", "c-1");
    send.submit(USER, &raw(&first)).await.unwrap();
    let queued = outbox::get(&parts.store, "msg-1").unwrap().unwrap();

    let mut other = first.clone();
    other["body"]["urgency"] = json!("urgent");
    let refusal = send.submit(USER, &raw(&other)).await.unwrap_err();

    assert_eq!(refusal.code, Code::DuplicateId);
    assert_eq!(refusal.field.as_deref(), Some("id"));
    let audit = parts.audit_of("msg-1");
    assert_eq!(
        events(&audit),
        [
            Event::MessageAccepted,
            Event::MessageQueued,
            Event::MessageRefused
        ]
    );
    assert!(audit[2]
        .reason
        .as_deref()
        .unwrap()
        .starts_with("duplicate_id: "));
    let still = outbox::get(&parts.store, "msg-1").unwrap().unwrap();
    assert_eq!(still.envelope, queued.envelope, "the first message stands");
    assert_eq!(outbox::queued_for_peer(&parts.store, "wijkteam"), 1);
}

#[tokio::test]
async fn a_submission_to_an_unknown_peer_is_refused() {
    let parts = practice_with_consent().await;
    let mut submission = referral_submission("msg-1", "c-1");
    submission["to"] = json!("nobody");
    let refusal = assert_refused(&parts, submission, Code::UnknownRecipient).await;
    assert_eq!(refusal.field.as_deref(), Some("to"));
    assert_eq!(refusal.code.as_str(), "unknown_peer");
}

#[tokio::test]
async fn a_type_this_role_does_not_send_is_refused() {
    let parts = practice_with_consent().await;
    let feedback = json!({
        "id": "msg-1", "type": "feedback", "to": "wijkteam", "consent_id": "c-1",
        "subject": {"bsn": BSN},
        "body": {"referral_id": "msg-0", "status": "received"}
    });
    let refusal = assert_refused(&parts, feedback, Code::TypeNotSentHere).await;
    assert_eq!(refusal.field.as_deref(), Some("type"));
}

#[tokio::test]
async fn a_referral_naming_no_consent_is_refused() {
    let parts = practice_with_consent().await;
    let mut submission = referral_submission("msg-1", "c-1");
    submission.as_object_mut().unwrap().remove("consent_id");
    assert_refused(&parts, submission, Code::ConsentMissing).await;
}

#[tokio::test]
async fn a_referral_under_a_consent_that_does_not_exist_is_refused() {
    let parts = practice_with_consent().await;
    let submission = referral_submission("msg-1", "c-unknown");
    assert_refused(&parts, submission, Code::Consent(ConsentRefusal::NoConsent)).await;
}

#[tokio::test]
async fn a_consent_for_another_child_does_not_cover_the_referral() {
    let parts = Parts::practice(&Pki::new());
    parts
        .record_consent("c-other", OTHER_BSN, WIJKTEAM_ID)
        .await;
    let submission = referral_submission("msg-1", "c-other");
    assert_refused(
        &parts,
        submission,
        Code::Consent(ConsentRefusal::OtherChild),
    )
    .await;
}

#[tokio::test]
async fn a_consent_for_another_recipient_does_not_cover_the_referral() {
    let parts = practice_with_consent().await;
    let mut submission = referral_submission("msg-1", "c-1");
    submission["to"] = json!("other-wijkteam");
    assert_refused(
        &parts,
        submission,
        Code::Consent(ConsentRefusal::OtherRecipient),
    )
    .await;
    // And the other way round: a consent for the other wijkteam does not reach this one.
    parts.record_consent("c-2", BSN, OTHER_WIJKTEAM_ID).await;
    let submission = referral_submission("msg-2", "c-2");
    assert_refused(
        &parts,
        submission,
        Code::Consent(ConsentRefusal::OtherRecipient),
    )
    .await;
}

#[tokio::test]
async fn a_withdrawn_consent_covers_nothing() {
    let parts = practice_with_consent().await;
    parts.append_consent(BSN, parts.withdrawal("c-1")).await;
    let submission = referral_submission("msg-1", "c-1");
    assert_refused(&parts, submission, Code::Consent(ConsentRefusal::Withdrawn)).await;
}

#[tokio::test]
async fn a_consent_withdrawn_between_prepare_and_queue_wins() {
    let parts = practice_with_consent().await;
    let send = parts.send_path();
    let submission = raw(&referral_submission("msg-1", "c-1"));

    // Hold the committer, so that what follows is ordered in its queue: first the
    // withdrawal, then the submission's commit. The submission is prepared (consent
    // checked) against the committed state, which does not hold the withdrawal yet.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let mut hold = pin!(parts.store.commit(move |_| {
        held.recv().ok();
        Ok::<_, StoreError>(())
    }));
    assert!(poll_once(hold.as_mut()).await.is_pending());
    let pseudonym = parts.pseudonym(BSN);
    let withdrawal = parts.withdrawal("c-1");
    let mut withdraw =
        pin!(parts
            .store
            .commit(move |tx| registry::append(tx, &pseudonym, &withdrawal)));
    assert!(poll_once(withdraw.as_mut()).await.is_pending());
    let mut submit = pin!(send.submit(USER, &submission));
    assert!(
        poll_once(submit.as_mut()).await.is_pending(),
        "prepared, and waiting for its commit"
    );
    assert!(
        registry::state(&parts.store, "c-1")
            .unwrap()
            .unwrap()
            .withdrawn
            .is_none(),
        "the submission was prepared before the withdrawal was committed"
    );

    release.send(()).unwrap();
    hold.await.unwrap();
    withdraw.await.unwrap();
    let refusal = submit.await.unwrap_err();

    assert_eq!(refusal.code, Code::Consent(ConsentRefusal::Withdrawn));
    let audit = parts.audit_of("msg-1");
    assert_eq!(events(&audit), [Event::MessageRefused], "{audit:?}");
    assert!(audit[0]
        .reason
        .as_deref()
        .unwrap()
        .starts_with("consent_withdrawn: "));
    assert_nothing_queued(&parts, "msg-1");
}

#[tokio::test]
async fn queue_checks_consent_against_what_its_own_commit_sees() {
    let parts = practice_with_consent().await;
    let submission = serde_json::from_value(referral_submission("msg-1", "c-1")).unwrap();
    let prepared = parts.send_path().prepare(submission).unwrap();
    assert_eq!(prepared.id(), "msg-1");

    parts.append_consent(BSN, parts.withdrawal("c-1")).await;
    let refusal = parts
        .store
        .commit(move |tx| queue(tx, prepared, user(), "hash".into()))
        .await
        .unwrap_err();

    assert_eq!(refusal.code, Code::Consent(ConsentRefusal::Withdrawn));
    assert_nothing_queued(&parts, "msg-1");
    assert!(
        parts.audit_of("msg-1").is_empty(),
        "a refused queue job keeps no records"
    );
}

/// A consultation as a local system might submit it: with the child named, which the
/// policy must strip.
fn consultation_naming_the_child() -> Value {
    json!({
        "id": "msg-1", "type": "consultation", "to": "wijkteam",
        "subject": {"name": "Sanne de Vries", "bsn": BSN},
        "body": {"question": "Hoe helpen we een kind dat slecht slaapt?", "child_age": "2013-01-15"}
    })
}

#[tokio::test]
async fn a_consultation_goes_without_consent_and_without_subject() {
    let parts = Parts::practice(&Pki::new());

    let accepted = parts
        .send_path()
        .submit(USER, &raw(&consultation_naming_the_child()))
        .await
        .unwrap();

    assert_eq!(accepted.status, "queued");
    let queued = outbox::get(&parts.store, "msg-1").unwrap().unwrap();
    assert_eq!(queued.consent_id, None);
    let envelope: Envelope = serde_json::from_str(&queued.envelope).unwrap();
    assert_eq!(envelope.consent, None);
    assert_eq!(envelope.subject, None);
    assert!(!queued.envelope.contains(BSN) && !queued.envelope.contains("Sanne"));
    assert_eq!(envelope.body["child_age"], json!("12-15"));
    let audit = parts.audit_of("msg-1");
    assert_eq!(
        events(&audit),
        [
            Event::MessageAccepted,
            Event::MessageFiltered,
            Event::MessageQueued
        ]
    );
    assert!(audit[1]
        .changed_fields
        .contains(&"subject (drop)".to_string()));
    assert!(audit.iter().all(|r| r.consent_id.is_none()));
}

#[tokio::test]
async fn a_consultation_leaves_no_pseudonym_of_the_child_in_the_outbox_or_the_audit_log() {
    let parts = Parts::practice(&Pki::new());

    parts
        .send_path()
        .submit(USER, &raw(&consultation_naming_the_child()))
        .await
        .unwrap();

    let queued = outbox::get(&parts.store, "msg-1").unwrap().unwrap();
    assert_eq!(queued.subject, None, "the outbox record names no child");
    let audit = parts.audit_of("msg-1");
    assert!(
        audit.iter().all(|r| r.subject.is_none()),
        "the audit log files the consultation under no child: {audit:?}"
    );
}

#[tokio::test]
async fn a_consultation_naming_a_consent_is_refused() {
    let parts = practice_with_consent().await;
    let consultation = json!({
        "id": "msg-1", "type": "consultation", "to": "wijkteam", "consent_id": "c-1",
        "body": {"question": "Hoe helpen we een kind dat slecht slaapt?"}
    });
    assert_refused(&parts, consultation, Code::ConsentNotApplicable).await;
}

#[tokio::test]
async fn an_accepted_message_wakes_the_relay_of_its_peer() {
    let parts = practice_with_consent().await;
    let woken = parts.wakers.waker(&PeerName::new("wijkteam"));

    parts
        .send_path()
        .submit(USER, &raw(&referral_submission("msg-1", "c-1")))
        .await
        .unwrap();

    tokio::time::timeout(Duration::from_secs(5), woken.notified())
        .await
        .expect("the wijkteam's relay is woken");
}
