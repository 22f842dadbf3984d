//! The relay: what a peer's answer means, how long it waits before a retry, and what it
//! records in the outbox when the peer cannot be reached or a message is too old.

use std::collections::HashSet;

use chrono::Utc;
use serde_json::json;

use super::*;
use crate::receipt::ReceiptError;
use crate::test_parts::{
    closed_port, raw, referral_submission, Parts, Pki, BSN, OTHER_BSN, PRACTICE_ID, USER,
    WIJKTEAM_ID,
};
use crate::wire::ItemAnswer;

/// One round as the relay runs it when no batch was admitted ahead: the head of the
/// queue admitted with `last_round`'s outcomes, then sent.
async fn attempt(
    relay: &Relay,
    conn: &mut Option<Connection>,
    queued: Vec<SentMessage>,
    last_round: Vec<Step>,
) -> Result<Vec<Step>, DeliveryError> {
    let to_send = admit_head(relay, conn, queued, last_round).await?;
    if to_send.is_empty() {
        return Ok(Vec::new());
    }
    send(relay, conn, to_send).await
}

fn settings() -> RelaySettings {
    RelaySettings {
        max_age: Duration::from_secs(7 * 24 * 3600),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        request_timeout: Duration::from_secs(2),
    }
}

fn wijkteam() -> PeerName {
    PeerName::new("wijkteam")
}

/// A sent message as the outbox holds it, for judging answers about it.
fn sent(id: &str, envelope: &str) -> SentMessage {
    SentMessage {
        id: id.into(),
        message_type: crate::message::MessageType::Referral,
        peer: wijkteam(),
        peer_identity: WIJKTEAM_ID.into(),
        envelope: envelope.into(),
        signature: None,
        batch: None,
        status: Status::Queued,
        attempts: 0,
        last_error: None,
        receipt: None,
        submitted_by: USER.into(),
        submitted_hash: String::new(),
        subject: None,
        consent_id: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        queue_key: None,
        body_purged: None,
    }
}

fn receipt_for(id: &str, bytes: &[u8]) -> Receipt {
    let (signer, _) = crate::dev::pki::test_credentials();
    Receipt::issue(id, bytes, WIJKTEAM_ID, &signer).unwrap()
}

fn refused_with(status: Option<u16>) -> ItemAnswer {
    ItemAnswer {
        receipt: None,
        refusal: Some(json!({"error": "consent_withdrawn", "message": "withdrawn"})),
        status,
    }
}

/// A practice with consent `c-1` and referral `msg-1` queued for the wijkteam.
async fn practice_with_a_queued_referral() -> (Pki, Parts) {
    let pki = Pki::new();
    let parts = Parts::practice(&pki);
    parts.record_consent("c-1", BSN, WIJKTEAM_ID).await;
    parts
        .send_path()
        .submit(USER, &raw(&referral_submission("msg-1", "c-1")))
        .await
        .unwrap();
    (pki, parts)
}

/// The practice's relay to the wijkteam, aimed at a loopback port nothing listens on.
fn relay_to_a_closed_port(
    pki: &Pki,
    parts: &Parts,
    settings: RelaySettings,
) -> (Relay, Arc<Counters>) {
    let mut peer = parts.peer("wijkteam");
    peer.port = closed_port();
    let counters = Arc::new(Counters::default());
    let relay = Relay::new(
        peer,
        settings,
        RelayTls {
            config: Live::new(pki.client_config(&parts.me)),
            crls: Live::new(CrlSet::default()),
            issuers: Live::new(pki.issuers()),
        },
        parts.store.clone(),
        parts.wakers.waker(&wijkteam()),
        parts.local.clone(),
        counters.clone(),
    );
    (relay, counters)
}

/// As [`relay_to_a_closed_port`], with messages expiring after an hour.
fn relay_expiring_after_an_hour(pki: &Pki, parts: &Parts) -> (Relay, Arc<Counters>) {
    let settings = RelaySettings {
        max_age: Duration::from_secs(3600),
        ..settings()
    };
    relay_to_a_closed_port(pki, parts, settings)
}

/// The head of the queue as a batch admitted ahead now.
fn admitted_now(parts: &Parts) -> Ahead {
    Ahead {
        msgs: outbox::next_batch(&parts.store, &wijkteam(), MAX_BATCH, &HashSet::new()).unwrap(),
        consent_events: parts.store.generation(T::ConsentEvents),
    }
}

/// Waits, at most ten seconds, until sent message `id` satisfies `done`.
async fn wait_for(parts: &Parts, id: &str, done: impl Fn(&SentMessage) -> bool) -> SentMessage {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = outbox::get(&parts.store, id).unwrap().unwrap();
        if done(&msg) {
            return msg;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting; the message is {msg:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn recipients(parts: &Parts, consent_id: &'static str) -> Vec<OrgId> {
    parts
        .store
        .commit(move |tx| registry::recipients_in(tx, consent_id))
        .await
        .unwrap()
}

fn events_of(parts: &Parts, id: &str) -> Vec<Event> {
    parts.audit_of(id).iter().map(|r| r.event).collect()
}

// --- outcome: what an answer means ----------------------------------------------------

#[test]
fn a_receipt_for_exactly_the_message_sent_is_a_delivery() {
    let m = sent("msg-1", "{\"the\":\"envelope\"}");
    let receipt = receipt_for("msg-1", m.envelope.as_bytes());
    let answer = ItemAnswer {
        receipt: Some(receipt.clone()),
        ..ItemAnswer::default()
    };
    let (got, statement) = outcome(&wijkteam(), &OrgId::new(PRACTICE_ID), &m, answer).unwrap();
    assert_eq!(got, receipt);
    assert_eq!(statement, receipt.signed_bytes().unwrap());
}

#[test]
fn a_receipt_for_another_message_is_an_invalid_receipt() {
    let m = sent("msg-1", "{\"the\":\"envelope\"}");
    let answer = ItemAnswer {
        receipt: Some(receipt_for("msg-2", m.envelope.as_bytes())),
        ..ItemAnswer::default()
    };
    assert_eq!(
        outcome(&wijkteam(), &OrgId::new(PRACTICE_ID), &m, answer).unwrap_err(),
        DeliveryError::InvalidReceipt {
            peer: wijkteam(),
            source: ReceiptError::OtherMessage("msg-2".into()),
        }
    );
}

#[test]
fn a_receipt_for_other_bytes_is_an_invalid_receipt() {
    let m = sent("msg-1", "{\"the\":\"envelope\"}");
    let answer = ItemAnswer {
        receipt: Some(receipt_for("msg-1", b"{\"another\":\"envelope\"}")),
        ..ItemAnswer::default()
    };
    assert_eq!(
        outcome(&wijkteam(), &OrgId::new(PRACTICE_ID), &m, answer).unwrap_err(),
        DeliveryError::InvalidReceipt {
            peer: wijkteam(),
            source: ReceiptError::HashMismatch,
        }
    );
}

#[test]
fn a_4xx_refusal_is_final() {
    let m = sent("msg-1", "{}");
    for status in [400, 403, 409, 413, 422] {
        let e = outcome(
            &wijkteam(),
            &OrgId::new(PRACTICE_ID),
            &m,
            refused_with(Some(status)),
        )
        .unwrap_err();
        assert_eq!(
            e,
            DeliveryError::Refused {
                peer: wijkteam(),
                status,
                explanation: "consent_withdrawn: withdrawn".into(),
            }
        );
        assert!(e.is_refusal(), "{status} is not retried");
    }
}

#[test]
fn a_refusal_without_a_status_counts_as_422() {
    let m = sent("msg-1", "{}");
    let e = outcome(
        &wijkteam(),
        &OrgId::new(PRACTICE_ID),
        &m,
        refused_with(None),
    )
    .unwrap_err();
    assert!(
        matches!(e, DeliveryError::Refused { status: 422, .. }),
        "{e:?}"
    );
}

#[test]
fn a_408_429_or_5xx_answer_is_retried() {
    let m = sent("msg-1", "{}");
    for status in [408, 429, 500, 502, 503] {
        let e = outcome(
            &wijkteam(),
            &OrgId::new(PRACTICE_ID),
            &m,
            refused_with(Some(status)),
        )
        .unwrap_err();
        assert_eq!(
            e,
            DeliveryError::NotNow {
                peer: wijkteam(),
                status,
                explanation: "consent_withdrawn: withdrawn".into(),
            }
        );
        assert!(!e.is_refusal(), "{status} is retried");
    }
}

#[test]
fn an_answer_with_neither_receipt_nor_refusal_is_no_answer() {
    let m = sent("msg-1", "{}");
    assert_eq!(
        outcome(
            &wijkteam(),
            &OrgId::new(PRACTICE_ID),
            &m,
            ItemAnswer::default()
        )
        .unwrap_err(),
        DeliveryError::NoAnswer {
            peer: wijkteam(),
            id: "msg-1".into(),
        }
    );
}

#[test]
fn a_refusal_is_explained_by_its_code_and_message() {
    assert_eq!(
        explain(br#"{"error": "bad_signature", "message": "does not verify"}"#),
        "bad_signature: does not verify"
    );
    assert_eq!(explain(b"<html>502</html>"), "no explanation");
}

// --- backoff -------------------------------------------------------------------------

#[test]
fn backoff_stays_between_half_and_all_of_its_ceiling() {
    let s = settings();
    for failures in 1..=8u32 {
        let ceiling = (s.initial_backoff * 2u32.pow(failures - 1)).min(s.max_backoff);
        for _ in 0..50 {
            let delay = backoff(&s, failures);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "after {failures} failures: {delay:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
    }
}

#[test]
fn backoff_is_capped_by_max_backoff() {
    let s = settings();
    for failures in [6, 20, 21, 64, 1000, u32::MAX] {
        let delay = backoff(&s, failures);
        assert!(
            delay >= s.max_backoff / 2 && delay <= s.max_backoff,
            "after {failures} failures: {delay:?}"
        );
    }
}

#[test]
fn backoff_is_jittered() {
    let s = settings();
    let delays: HashSet<Duration> = (0..100).map(|_| backoff(&s, 10)).collect();
    assert!(delays.len() > 1, "always {delays:?}");
}

// --- delivery attempts ---------------------------------------------------------------

#[tokio::test]
async fn a_relay_whose_peer_does_not_listen_counts_failed_attempts_and_keeps_the_message() {
    let (pki, parts) = practice_with_a_queued_referral().await;
    let (relay, counters) = relay_to_a_closed_port(&pki, &parts, settings());
    let addr = format!("127.0.0.1:{}", relay.peer.port);
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(relay.run(stopped));

    let msg = wait_for(&parts, "msg-1", |m| m.attempts >= 2).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the relay stops when told")
        .unwrap();

    assert_eq!(msg.status, Status::Queued);
    let last_error = msg.last_error.clone().unwrap();
    assert!(
        last_error.starts_with(&format!("cannot connect to {addr}: ")),
        "{last_error}"
    );
    let after = outbox::get(&parts.store, "msg-1").unwrap().unwrap();
    assert_eq!(after.status, Status::Queued, "it stays queued");
    assert!(after.attempts >= msg.attempts);
    assert_eq!(outbox::queued_for_peer(&parts.store, "wijkteam"), 1);
    assert!(
        recipients(&parts, "c-1").await.is_empty(),
        "a peer that was sent nothing is not told of a withdrawal"
    );
    assert_eq!(
        events_of(&parts, "msg-1"),
        [Event::MessageAccepted, Event::MessageQueued],
        "a failed attempt is no outcome"
    );
    assert_eq!(counters.handshakes_out.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_message_older_than_max_age_is_expired_and_audited() {
    let (pki, parts) = practice_with_a_queued_referral().await;
    let (relay, counters) = relay_expiring_after_an_hour(&pki, &parts);
    parts.local.clock.advance(chrono::Duration::hours(2));

    let queued = outbox::next_batch(&parts.store, &wijkteam(), MAX_BATCH, &HashSet::new()).unwrap();
    let steps = attempt(&relay, &mut None, queued, Vec::new())
        .await
        .expect("an expired message is not sent, so nothing can fail");

    assert!(steps.is_empty(), "nothing was sent");
    let msg = outbox::get(&parts.store, "msg-1").unwrap().unwrap();
    assert_eq!(msg.status, Status::Expired);
    assert_eq!(msg.attempts, 0);
    assert_eq!(
        msg.last_error.as_deref(),
        Some("not delivered within the maximum age of 3600 s")
    );
    assert_eq!(outbox::queued_for_peer(&parts.store, "wijkteam"), 0);
    let audit = parts.audit_of("msg-1");
    let expired = audit.last().unwrap();
    assert_eq!(
        (expired.event, expired.outcome),
        (Event::MessageExpired, AuditOutcome::Failure)
    );
    assert_eq!(expired.actor, Actor::Gateway);
    assert_eq!(
        expired.reason.as_deref(),
        Some("not delivered within the maximum age of 3600 s")
    );
    assert_eq!(expired.consent_id.as_deref(), Some("c-1"));
    assert_eq!(counters.handshakes_out.load(Ordering::Relaxed), 0);
    assert!(recipients(&parts, "c-1").await.is_empty());
}

#[tokio::test]
async fn a_message_whose_consent_was_withdrawn_while_queued_is_withheld() {
    let (pki, parts) = practice_with_a_queued_referral().await;
    parts.append_consent(BSN, parts.withdrawal("c-1")).await;
    let (relay, _) = relay_to_a_closed_port(&pki, &parts, settings());

    let queued = outbox::next_batch(&parts.store, &wijkteam(), MAX_BATCH, &HashSet::new()).unwrap();
    let result = attempt(&relay, &mut None, queued, Vec::new()).await;

    assert!(
        matches!(result, Err(DeliveryError::Connect { .. })),
        "the peer is still unreachable: {:?}",
        result.err()
    );
    let msg = outbox::get(&parts.store, "msg-1").unwrap().unwrap();
    assert_eq!(msg.status, Status::Withheld);
    assert!(
        msg.last_error
            .as_deref()
            .unwrap()
            .starts_with("consent_withdrawn: "),
        "{:?}",
        msg.last_error
    );
    assert_eq!(outbox::queued_for_peer(&parts.store, "wijkteam"), 0);
    assert_eq!(
        events_of(&parts, "msg-1").last(),
        Some(&Event::MessageWithheld)
    );
    assert!(recipients(&parts, "c-1").await.is_empty());
}

#[tokio::test]
async fn a_batch_admitted_ahead_is_dropped_once_its_consent_is_withdrawn_not_when_another_is_recorded(
) {
    let (pki, parts) = practice_with_a_queued_referral().await;
    let (relay, _) = relay_expiring_after_an_hour(&pki, &parts);
    let ahead = admitted_now(&parts);
    assert_eq!(ahead.msgs.len(), 1);
    assert!(
        ahead.still_holds(&relay),
        "nothing changed since its admission"
    );

    // Another child's consent recorded meanwhile changes nothing this batch decided on.
    parts.record_consent("c-2", OTHER_BSN, WIJKTEAM_ID).await;
    assert!(ahead.still_holds(&relay));

    // Its own consent withdrawn meanwhile: it is admitted afresh, which withholds it.
    parts.append_consent(BSN, parts.withdrawal("c-1")).await;
    assert!(!ahead.still_holds(&relay));
}

#[tokio::test]
async fn a_batch_admitted_ahead_is_dropped_once_a_message_in_it_is_too_old() {
    let (pki, parts) = practice_with_a_queued_referral().await;
    let (relay, _) = relay_expiring_after_an_hour(&pki, &parts);
    let ahead = admitted_now(&parts);
    assert!(ahead.still_holds(&relay));
    parts.local.clock.advance(chrono::Duration::hours(2));
    assert!(!ahead.still_holds(&relay));
}
