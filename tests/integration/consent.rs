//! Consent (issue 3) end to end: no personal data about a child leaves a gateway without
//! a recorded, valid consent that covers this kind of message to this recipient; the
//! wijkteam checks the consent again on arrival and on its own feedback; a withdrawal
//! stops what still waits in the outbox and reaches the wijkteam, even one that is down;
//! the consent log only grows; the WGBO rules hold at the local API.

use chrono::{Duration, Months, NaiveDate};
use serde_json::{json, Value};
use wijkpoort::audit::{Actor, AuditRecord, Event, Outcome};
use wijkpoort::client::LocalApiClient;
use wijkpoort::consent::{registry, ConsentEvent, WgboBasis};
use wijkpoort::dev::pki::{DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};
use wijkpoort::store::{Store, T};
use wijkpoort::RunningGateway;

use crate::util::*;

/// An organisation that is not the wijkteam.
const OTHER_ORGANISATION: &str = "00009999";

/// The practice alone: nothing here needs delivery, so the wijkteam stays down.
async fn practice_alone() -> (Setup, RunningGateway) {
    let mut setup = Setup::new().await;
    setup.release(Role::Wijkteam);
    let practice = setup.start(Role::Practice).await;
    (setup, practice)
}

/// The parents' consent for the fictitious child, with scope and period as given.
fn consent_request(
    bsn: &str,
    types: &[&str],
    recipient: &str,
    valid_from: NaiveDate,
    valid_until: NaiveDate,
) -> Value {
    json!({
        "child": {"bsn": bsn, "birth_date": birth_date()},
        "performers": [{"role": "parent", "name": "M. de Vries"}],
        "scope": {"types": types, "recipient": recipient},
        "valid_from": valid_from,
        "valid_until": valid_until,
        // Given yesterday, as a consent must be recorded within days of being given
        // (an expired period is still recordable, to test refusals under it).
        "given_on": today() - Duration::days(1),
        "evidence": "mondeling tijdens consult"
    })
}

/// Records `request` at the practice; returns the consent id.
async fn record(his: &mut LocalApiClient, request: &Value) -> String {
    let (code, answer) = his.post("/v1/consents", request).await.unwrap();
    assert_eq!(code, 201, "consent refused: {answer}");
    answer["consent_id"].as_str().unwrap().to_string()
}

/// Withdraws a consent at the practice; returns the ids of the consent updates queued.
async fn withdraw(his: &mut LocalApiClient, consent_id: &str) -> Vec<String> {
    let (code, answer) = his
        .post(
            &format!("/v1/consents/{consent_id}/withdraw"),
            &json!({"reason": "ouders willen het zelf regelen"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "withdrawal refused: {answer}");
    answer["consent_updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// A child's consents as `POST /v1/consents/query` lists them.
async fn consents_of(client: &mut LocalApiClient, bsn: &str) -> Vec<Value> {
    let (code, answer) = client
        .post("/v1/consents/query", &json!({ "bsn": bsn }))
        .await
        .unwrap();
    assert_eq!(code, 200, "{answer}");
    answer["consents"].as_array().unwrap().clone()
}

fn event_kinds(consent: &Value) -> Vec<&str> {
    consent["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

/// Submits `submission` under the explicit id `id` and asserts what a consent refusal
/// must look like: 422 with `code`, nothing queued (the status view does not know the
/// id, the outbox did not grow), and a refusal audit record naming the message, the
/// code and the acting user.
async fn assert_refused(
    gw: &RunningGateway,
    client: &mut LocalApiClient,
    user: &str,
    id: &str,
    mut submission: Value,
    code: &str,
) {
    let store = store(gw);
    let queued_before = store.tree(T::Outbox).len();
    submission["id"] = json!(id);

    let (status, answer) = client.post("/v1/messages", &submission).await.unwrap();

    assert_eq!(status, 422, "{id}: {answer}");
    assert_eq!(answer["error"], code, "{id}: {answer}");
    let (status, _) = client.get(&format!("/v1/messages/{id}")).await.unwrap();
    assert_eq!(status, 404, "{id} must not be queued");
    assert_eq!(store.tree(T::Outbox).len(), queued_before, "{id}: outbox");
    let refusals: Vec<AuditRecord> = audit_records(store)
        .into_iter()
        .filter(|r| r.event.event == Event::MessageRefused)
        .filter(|r| r.event.message_id.as_deref() == Some(id))
        .collect();
    assert_eq!(refusals.len(), 1, "{id}: one refusal audit record");
    let refusal = &refusals[0].event;
    assert_eq!(refusal.outcome, Outcome::Refused);
    assert!(
        refusal
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with(&format!("{code}: "))),
        "{id}: {refusal:?}"
    );
    assert_eq!(refusal.actor, Actor::User { id: user.into() });
}

fn with_subject_bsn(mut submission: Value, bsn: &str) -> Value {
    submission["subject"]["bsn"] = json!(bsn);
    submission
}

fn without_consent(mut submission: Value) -> Value {
    submission.as_object_mut().unwrap().remove("consent_id");
    submission
}

// ---------------------------------------------------------------------------------
// At the practice

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_not_covered_by_a_valid_consent_is_refused_with_the_reason_and_nothing_is_queued(
) {
    let (setup, practice) = practice_alone().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let year = Duration::days(365);
    let (t, wijkteam) = (today(), DEV_WIJKTEAM_ID);
    let both = ["referral", "feedback"];

    let valid = record(
        &mut his,
        &consent_request(BSN, &both, wijkteam, t, t + year),
    )
    .await;
    let withdrawn = record(
        &mut his,
        &consent_request(BSN, &both, wijkteam, t, t + year),
    )
    .await;
    withdraw(&mut his, &withdrawn).await;
    let expired = record(
        &mut his,
        &consent_request(BSN, &both, wijkteam, t - year, t - Duration::days(1)),
    )
    .await;
    let not_yet_valid = record(
        &mut his,
        &consent_request(BSN, &both, wijkteam, t + Duration::days(7), t + year),
    )
    .await;
    let other_child = record(
        &mut his,
        &consent_request(OTHER_BSN, &both, wijkteam, t, t + year),
    )
    .await;
    let other_recipient = record(
        &mut his,
        &consent_request(BSN, &both, OTHER_ORGANISATION, t, t + year),
    )
    .await;
    let feedback_only = record(
        &mut his,
        &consent_request(BSN, &["feedback"], wijkteam, t, t + year),
    )
    .await;

    let cases = [
        (
            "no-consent-id",
            without_consent(referral_submission(&valid)),
            "consent_missing",
        ),
        (
            "unknown-consent",
            referral_submission("consent-nobody-recorded"),
            "consent_missing",
        ),
        (
            "withdrawn",
            referral_submission(&withdrawn),
            "consent_withdrawn",
        ),
        ("expired", referral_submission(&expired), "consent_expired"),
        (
            "not-yet-valid",
            referral_submission(&not_yet_valid),
            "consent_not_yet_valid",
        ),
        (
            "other-child",
            referral_submission(&other_child),
            "consent_other_child",
        ),
        (
            // The consent is for this child, the referral about another one.
            "other-child-in-message",
            with_subject_bsn(referral_submission(&valid), OTHER_BSN),
            "consent_other_child",
        ),
        (
            "other-recipient",
            referral_submission(&other_recipient),
            "consent_other_recipient",
        ),
        (
            "other-type",
            referral_submission(&feedback_only),
            "consent_other_type",
        ),
    ];
    for (id, submission, code) in cases {
        assert_refused(&practice, &mut his, "dr.jansen", id, submission, code).await;
    }
    assert_eq!(store(&practice).tree(T::Sent).len(), 0, "sent tree");

    // The one consent that covers the referral lets it through: the refusals above
    // were about consent, not about the submission.
    submit(&mut his, &referral_submission(&valid)).await;

    practice.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------
// At the wijkteam

/// Both gateways, with a referral delivered under a fresh consent of `types`: the
/// wijkteam holds the mirror. Returns the consent id and the referral id.
async fn delivered_referral(his: &mut LocalApiClient, types: &[&str]) -> (String, String) {
    let t = today();
    let consent = record(
        his,
        &consent_request(BSN, types, DEV_WIJKTEAM_ID, t, t + Duration::days(365)),
    )
    .await;
    let referral = submit(his, &referral_submission(&consent)).await;
    wait_delivered(his, &referral).await;
    (consent, referral)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_not_covered_by_the_mirrored_consent_is_refused_at_the_wijkteam_with_the_reason() {
    let (setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let mut case_system = setup.client(Role::Wijkteam, "k.bakker");
    let (consent, referral) = delivered_referral(&mut his, &["referral", "feedback"]).await;
    let (referral_only, referral2) = delivered_referral(&mut his, &["referral"]).await;

    let cases = [
        (
            "fb-no-consent-id",
            without_consent(feedback_submission(&referral, &consent)),
            "consent_missing",
        ),
        (
            "fb-unknown-consent",
            feedback_submission(&referral, "consent-never-mirrored"),
            "consent_missing",
        ),
        (
            "fb-other-child",
            with_subject_bsn(feedback_submission(&referral, &consent), OTHER_BSN),
            "consent_other_child",
        ),
        (
            "fb-other-type",
            feedback_submission(&referral2, &referral_only),
            "consent_other_type",
        ),
    ];
    for (id, submission, code) in cases {
        assert_refused(
            &wijkteam,
            &mut case_system,
            "k.bakker",
            id,
            submission,
            code,
        )
        .await;
    }

    // Under the mirrored consent itself, feedback goes.
    let ok = submit(&mut case_system, &feedback_submission(&referral, &consent)).await;
    wait_delivered(&mut case_system, &ok).await;

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

/// Relays a referral envelope whose consent summary `edit` has spoilt, signed with the
/// practice's own key and presented with its certificate, and asserts the refusal.
async fn assert_summary_refused(
    setup: &Setup,
    wijkteam: &RunningGateway,
    id: &str,
    edit: impl FnOnce(&mut Value),
    code: &str,
) {
    let mut envelope = referral_envelope(id);
    let mut summary = envelope.consent.take().unwrap();
    edit(&mut summary);
    envelope.consent = Some(summary);

    let answer = relay_signed(
        setup,
        Role::Wijkteam,
        &setup.credentials(Role::Practice),
        &envelope.to_bytes(),
    )
    .await
    .unwrap();

    assert_eq!(answer.status, 422, "{id}: {:?}", answer.body);
    assert_eq!(answer.body["error"], code, "{id}: {:?}", answer.body);
    let store = store(wijkteam);
    assert_nothing_stored(store);
    assert_eq!(
        store.tree(T::ConsentEvents).len(),
        0,
        "{id}: nothing mirrored"
    );
    let refusal = wait_for_refusal(store, Event::MessageRefused, code).await;
    assert_eq!(refusal.event.peer.as_deref(), Some(DEV_PRACTICE_ID));
    assert_eq!(audit_count(store, Event::MessageRefused, id), 1, "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_whose_consent_summary_does_not_cover_it_is_refused_and_nothing_is_mirrored() {
    let mut setup = Setup::new().await;
    let wijkteam = setup.start(Role::Wijkteam).await;

    assert_summary_refused(
        &setup,
        &wijkteam,
        "ref-summary-other-child",
        |s| s["subject_bsn"] = json!(OTHER_BSN),
        "consent_other_child",
    )
    .await;
    assert_summary_refused(
        &setup,
        &wijkteam,
        "ref-summary-withdrawn",
        |s| s["status"] = json!("withdrawn"),
        "consent_withdrawn",
    )
    .await;
    assert_summary_refused(
        &setup,
        &wijkteam,
        "ref-summary-other-recipient",
        |s| s["recipient"] = json!(OTHER_ORGANISATION),
        "consent_other_recipient",
    )
    .await;
    assert_summary_refused(
        &setup,
        &wijkteam,
        "ref-summary-feedback-only",
        |s| s["types"] = json!(["feedback"]),
        "consent_other_type",
    )
    .await;
    assert_summary_refused(
        &setup,
        &wijkteam,
        "ref-summary-expired",
        |s| {
            s["valid_from"] = json!(today() - Duration::days(365));
            s["valid_until"] = json!(today() - Duration::days(1));
        },
        "consent_expired",
    )
    .await;
    assert_summary_refused(
        &setup,
        &wijkteam,
        "ref-summary-absent",
        |s| *s = Value::Null,
        "consent_missing",
    )
    .await;

    // The same envelope with its summary intact is stored and mirrored.
    let bytes = referral_envelope("ref-summary-intact").to_bytes();
    let answer = relay_signed(
        &setup,
        Role::Wijkteam,
        &setup.credentials(Role::Practice),
        &bytes,
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let store = store(&wijkteam);
    assert_eq!(inbox_entries(store), vec!["ref-summary-intact".to_string()]);
    let mirror = registry::state(store, "consent-test-1").unwrap().unwrap();
    assert!(mirror.is_mirror());

    wijkteam.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------
// Withdrawal

/// Waits until a sent message has left the queue, whatever the outcome.
async fn wait_settled(client: &mut LocalApiClient, id: &str) -> Value {
    wait_for_status(client, id, "a final status", |s| s["status"] != "queued").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_whose_consent_is_withdrawn_while_it_waits_in_the_outbox_is_withheld_and_never_delivered(
) {
    let mut setup = Setup::new().await;
    setup.release(Role::Wijkteam); // down: the referral stays in the outbox
    let practice = setup.start(Role::Practice).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let id = submit(&mut his, &referral_submission(&consent)).await;
    let waiting = wait_for_status(&mut his, &id, "a failed attempt", |s| {
        s["attempts"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(waiting["status"], "queued", "{waiting}");

    let updates = withdraw(&mut his, &consent).await;

    let withheld = wait_settled(&mut his, &id).await;
    assert_eq!(withheld["status"], "withheld", "{withheld}");
    let reason = withheld["last_error"].as_str().unwrap_or_default();
    assert!(reason.starts_with("consent_withdrawn"), "{withheld}");
    assert!(withheld["receipt"].is_null(), "{withheld}");
    let practice_store = store(&practice);
    let audit = wait_for_audit(practice_store, "a withheld audit record", |r| {
        r.event.event == Event::MessageWithheld && r.event.message_id.as_deref() == Some(&*id)
    })
    .await;
    assert_eq!(audit.event.outcome, Outcome::Refused);
    assert_eq!(audit.event.consent_id.as_deref(), Some(&*consent));
    assert!(
        audit
            .event
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("consent_withdrawn")),
        "{audit:?}"
    );

    // The referral never reached the wijkteam, so the withdrawal tells it nothing: a
    // consent_update would name a child the wijkteam never heard of (regression: the
    // recipient used to be noted when the referral was queued, not when it was sent).
    assert!(
        updates.is_empty(),
        "consent_update queued for a peer that received nothing: {updates:?}"
    );
    let wijkteam = setup.start(Role::Wijkteam).await;
    for update in &updates {
        wait_settled(&mut his, update).await;
    }
    // A consultation (it needs no consent) submitted now is delivered: the relay has
    // had a round with the wijkteam up, and the withheld referral was not in it.
    let consultation = submit(
        &mut his,
        &json!({"type": "consultation", "to": "wijkteam", "body": {"question": "Hoe verwijs ik?"}}),
    )
    .await;
    wait_delivered(&mut his, &consultation).await;
    let again = status(&mut his, &id).await;
    assert_eq!(again["status"], "withheld", "{again}");
    assert_eq!(again["attempts"], withheld["attempts"], "no attempt after");
    let received = store(&wijkteam);
    assert!(
        !received_ids(received).contains(&id),
        "the referral arrived"
    );
    assert_eq!(audit_count(received, Event::MessageReceived, &id), 0);
    assert!(received_ids(received).contains(&consultation));
    let mirrored = registry::state(received, &consent).unwrap();
    assert!(
        mirrored.as_ref().is_none_or(|m| m.withdrawn.is_some()),
        "the wijkteam holds an active mirror: {mirrored:?}"
    );

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

/// The wijkteam's view of the mirrored consent after the withdrawal reached it, and the
/// refusal of feedback under it.
async fn assert_withdrawal_arrived(
    wijkteam: &RunningGateway,
    case_system: &mut LocalApiClient,
    consent: &str,
    referral: &str,
    update: &str,
) {
    let store = store(wijkteam);
    assert!(received_ids(store).contains(&update.to_string()));
    let listed = consents_of(case_system, BSN).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["consent_id"], consent);
    assert_eq!(listed[0]["mirror"], true);
    assert_eq!(listed[0]["status"], "withdrawn", "{listed:?}");
    assert_eq!(event_kinds(&listed[0]), ["mirrored", "updated_from_peer"]);
    let updated = wait_for_audit(store, "a consent_updated audit record", |r| {
        r.event.event == Event::ConsentUpdated
    })
    .await;
    assert_eq!(updated.event.consent_id.as_deref(), Some(consent));
    assert_eq!(updated.event.peer.as_deref(), Some(DEV_PRACTICE_ID));

    assert_refused(
        wijkteam,
        case_system,
        "k.bakker",
        "fb-after-withdrawal",
        feedback_submission(referral, consent),
        "consent_withdrawn",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawing_after_delivery_tells_the_wijkteam_which_then_refuses_feedback_under_the_consent(
) {
    let (setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let mut case_system = setup.client(Role::Wijkteam, "k.bakker");
    let consent = record_consent(&mut his).await;
    let referral = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &referral).await;
    // Before the withdrawal, feedback under the consent goes through.
    let before = submit(&mut case_system, &feedback_submission(&referral, &consent)).await;
    wait_delivered(&mut case_system, &before).await;

    let updates = withdraw(&mut his, &consent).await;

    assert_eq!(updates.len(), 1, "one consent_update, to the wijkteam");
    let delivered = wait_delivered(&mut his, &updates[0]).await;
    assert_eq!(delivered["type"], "consent_update");
    assert_withdrawal_arrived(
        &wijkteam,
        &mut case_system,
        &consent,
        &referral,
        &updates[0],
    )
    .await;

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_made_while_the_wijkteam_is_down_reaches_it_when_it_starts() {
    let (mut setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let referral = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &referral).await;
    wijkteam.stop().await.unwrap();

    let updates = withdraw(&mut his, &consent).await;

    assert_eq!(updates.len(), 1, "one consent_update, to the wijkteam");
    let waiting = wait_for_status(&mut his, &updates[0], "a failed attempt", |s| {
        s["attempts"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(waiting["status"], "queued", "{waiting}");

    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut case_system = setup.client(Role::Wijkteam, "k.bakker");
    wait_delivered(&mut his, &updates[0]).await;
    assert_withdrawal_arrived(
        &wijkteam,
        &mut case_system,
        &consent,
        &referral,
        &updates[0],
    )
    .await;

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------
// The consent log

fn consent_log(store: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .tree(T::ConsentEvents)
        .iter()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consent_log_only_grows_and_records_who_recorded_and_who_withdrew() {
    let (setup, practice) = practice_alone().await;
    let mut gp = setup.client(Role::Practice, "dr.jansen");
    let mut poh = setup.client(Role::Practice, "poh.de.boer");
    let store = store(&practice);

    let consent = record_consent(&mut gp).await;
    let after_recording = consent_log(store);
    withdraw(&mut poh, &consent).await;
    let after_withdrawal = consent_log(store);

    // The child's consent is listed as withdrawn, with both events in order.
    let listed = consents_of(&mut gp, BSN).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["consent_id"], consent.as_str());
    assert_eq!(listed[0]["status"], "withdrawn");
    assert_eq!(listed[0]["mirror"], false);
    assert_eq!(event_kinds(&listed[0]), ["recorded", "withdrawn"]);
    assert!(consents_of(&mut gp, OTHER_BSN).await.is_empty());

    // The withdrawal was appended; the recorded event is byte for byte as it was.
    assert_eq!(after_recording.len(), 1);
    assert_eq!(after_withdrawal.len(), 2);
    assert_eq!(after_withdrawal[0], after_recording[0]);
    let events = registry::events(store, &consent).unwrap();
    match &events[1] {
        ConsentEvent::Withdrawn { by, reason, .. } => {
            assert_eq!(by, "poh.de.boer");
            assert_eq!(reason, "ouders willen het zelf regelen");
        }
        other => panic!("second event is not the withdrawal: {other:?}"),
    }

    // A second withdrawal is refused and changes nothing.
    let (code, answer) = poh
        .post(
            &format!("/v1/consents/{consent}/withdraw"),
            &json!({"reason": "nogmaals"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 422, "{answer}");
    assert_eq!(answer["error"], "consent_already_withdrawn");
    assert_eq!(consent_log(store), after_withdrawal);

    // The audit log names the acting users and the consent, and holds no BSN.
    let records = audit_records(store);
    let find = |event: Event| {
        records
            .iter()
            .find(|r| r.event.event == event && r.event.outcome == Outcome::Success)
            .unwrap_or_else(|| panic!("no {event:?} audit record"))
    };
    let recorded = find(Event::ConsentRecorded);
    assert_eq!(
        recorded.event.actor,
        Actor::User {
            id: "dr.jansen".into()
        }
    );
    assert_eq!(recorded.event.consent_id.as_deref(), Some(&*consent));
    let withdrawn = find(Event::ConsentWithdrawn);
    assert_eq!(
        withdrawn.event.actor,
        Actor::User {
            id: "poh.de.boer".into()
        }
    );
    assert_eq!(withdrawn.event.consent_id.as_deref(), Some(&*consent));
    assert!(recorded.event.subject.is_some());
    assert_eq!(recorded.event.subject, withdrawn.event.subject);
    let all = serde_json::to_string(&records).unwrap();
    assert!(!all.contains(BSN), "a BSN in the audit log");

    practice.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------
// WGBO at the local API

/// A birth date that makes the child 13 today (and on every day of the test).
fn thirteen_years_ago() -> NaiveDate {
    today()
        .checked_sub_months(Months::new(13 * 12 + 3))
        .unwrap()
}

fn child_alone(birth: NaiveDate, exception: Option<&str>) -> Value {
    let mut request = json!({
        "child": {"bsn": BSN, "birth_date": birth},
        "performers": [{"role": "child", "name": "Sanne (fictitious)"}],
        "scope": {"types": ["referral", "feedback"], "recipient": DEV_WIJKTEAM_ID},
        "valid_from": today(),
        "valid_until": today() + Duration::days(365),
        "evidence": "gesprek met de jongere alleen"
    });
    if let Some(reason) = exception {
        request["exception"] = json!(reason);
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirteen_year_olds_consent_without_a_parent_is_refused_naming_the_missing_performer() {
    let (setup, practice) = practice_alone().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");

    let (code, answer) = his
        .post("/v1/consents", &child_alone(thirteen_years_ago(), None))
        .await
        .unwrap();

    assert_eq!(code, 422, "{answer}");
    assert_eq!(answer["error"], "wgbo_missing_performer");
    assert_eq!(answer["field"], "performers");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("missing: a parent or guardian"),
        "{message}"
    );
    assert!(
        !message.contains(BSN) && !message.contains("Sanne"),
        "{message}"
    );
    assert!(consents_of(&mut his, BSN).await.is_empty());
    let store = store(&practice);
    assert_eq!(store.tree(T::ConsentEvents).len(), 0);
    let refusal = wait_for_refusal(store, Event::ConsentRecorded, "wgbo_missing_performer").await;
    assert_eq!(
        refusal.event.actor,
        Actor::User {
            id: "dr.jansen".into()
        }
    );

    practice.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirteen_year_old_alone_is_accepted_with_a_documented_exception_marked_in_record_and_audit(
) {
    let (setup, practice) = practice_alone().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let reason = "betrekken van de ouders brengt het kind in ernstig gevaar";

    let consent = record(&mut his, &child_alone(thirteen_years_ago(), Some(reason))).await;

    let listed = consents_of(&mut his, BSN).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["status"], "active");
    let store = store(&practice);
    match &registry::events(store, &consent).unwrap()[0] {
        ConsentEvent::Recorded { record } => assert_eq!(
            record.basis,
            WgboBasis::ExceptionSeriousHarm {
                reason: reason.into()
            }
        ),
        other => panic!("not a recorded consent: {other:?}"),
    }
    let audit = wait_for_audit(store, "the consent_recorded audit record", |r| {
        r.event.event == Event::ConsentRecorded && r.event.consent_id.as_deref() == Some(&*consent)
    })
    .await;
    assert_eq!(audit.event.outcome, Outcome::Success);
    assert!(
        audit
            .event
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("exception")),
        "{audit:?}"
    );
    // The documented reason is free text: it stays in the consent record, out of the log.
    let all = serde_json::to_string(&audit_records(store)).unwrap();
    assert!(!all.contains(reason), "the exception text in the audit log");

    // And the consent works: a referral under it is queued.
    submit(&mut his, &referral_submission(&consent)).await;

    practice.stop().await.unwrap();
}
