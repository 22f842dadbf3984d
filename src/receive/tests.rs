//! The receive path at the wijkteam on a real store: what a properly signed message from
//! the practice becomes, and how each refusal is answered and audited.

use chrono::Days;
use serde_json::{json, Map, Value};

use super::*;
use crate::identity::{identify, IdentityError, OrgId};
use crate::message::SCHEMA_VERSION;
use crate::store::T;
use crate::test_parts::{bsn, Parts, Party, Pki, BSN, PRACTICE_ID, STRANGER_ID, WIJKTEAM_ID};

/// The wijkteam that receives, the practice that sends, and a stranger with a
/// certificate from the same CA.
struct Scene {
    wijkteam: Parts,
    practice: Party,
    stranger: Party,
}

fn scene() -> Scene {
    let pki = Pki::new();
    Scene {
        wijkteam: Parts::wijkteam(&pki),
        practice: pki.party(PRACTICE_ID),
        stranger: pki.party(STRANGER_ID),
    }
}

fn practice_org() -> OrgId {
    OrgId::new(PRACTICE_ID)
}

/// The messages waiting in the inbox (a first page of up to 10).
fn waiting(store: &Store) -> Vec<ReceivedMessage> {
    let query = inbox::InboxQuery {
        limit: 10,
        ..Default::default()
    };
    inbox::page(store, &query)
        .unwrap()
        .messages
        .into_iter()
        .map(|(_, m)| m)
        .collect()
}

fn caller(party: &Party) -> Caller {
    Caller {
        intermediates: Vec::new(),
        remote: "127.0.0.1:40000".parse().unwrap(),
        cert: party.cert.clone(),
        identity: identify(&party.cert),
        signing: Vec::new(),
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

impl Scene {
    /// A referral from the practice about [`BSN`], under consent `c-1` for this wijkteam,
    /// as the practice's send path makes it.
    fn referral(&self, id: &str) -> Envelope {
        let today = self.wijkteam.today();
        let summary = ConsentSummary {
            id: "c-1".into(),
            subject_bsn: bsn(BSN),
            types: vec![MessageType::Referral, MessageType::Feedback],
            recipient: WIJKTEAM_ID.into(),
            valid_from: today - Days::new(1),
            valid_until: today + Days::new(365),
            status: ConsentStatus::Active,
        };
        Envelope {
            id: id.into(),
            message_type: MessageType::Referral,
            schema_version: SCHEMA_VERSION,
            created_at: self.wijkteam.local.clock.now(),
            from: PRACTICE_ID.into(),
            to: WIJKTEAM_ID.into(),
            consent: Some(serde_json::to_value(summary).unwrap()),
            subject: Some(object(json!({"bsn": BSN, "name": "Sanne de Vries"}))),
            body: object(json!({"request_for_help": "Ouders vragen hulp.", "urgency": "soon"})),
        }
    }

    /// The envelope's bytes, signed by the practice.
    fn signed(&self, envelope: &Envelope) -> Relayed {
        signed_by(&self.practice, envelope)
    }

    async fn receive(&self, from: &Caller, items: Vec<Relayed>) -> Vec<Result<Receipt, Refusal>> {
        self.wijkteam
            .receive_path()
            .receive_batch(from, None, items)
            .await
            .unwrap()
    }

    /// Receives one message from `from`, expects it refused with `code`, audited as
    /// `event`, and nothing stored; returns the audit record.
    async fn assert_refused(
        &self,
        from: &Caller,
        item: Relayed,
        code: Code,
        event: Event,
    ) -> AuditEvent {
        let results = self.receive(from, vec![item]).await;
        let [result] = <[_; 1]>::try_from(results).unwrap();
        let refusal = result.unwrap_err();
        assert_eq!(refusal.code, code, "{refusal}");
        let audit = self.wijkteam.audit();
        assert_eq!(audit.len(), 1, "{audit:?}");
        let record = audit.into_iter().next().unwrap();
        assert_eq!((record.event, record.outcome), (event, Outcome::Refused));
        assert_eq!(record.on_behalf_of.as_deref(), Some(WIJKTEAM_ID));
        let reason = record.reason.clone().unwrap();
        assert!(
            reason.starts_with(&format!("{}: ", code.as_str())),
            "{reason}"
        );
        assert_nothing_stored(&self.wijkteam);
        record
    }
}

fn signed_by(party: &Party, envelope: &Envelope) -> Relayed {
    let bytes = envelope.to_bytes();
    Relayed {
        batch: None,
        signature: Some(hex::encode(party.signer.sign(&bytes).unwrap())),
        envelope: bytes,
    }
}

fn assert_nothing_stored(parts: &Parts) {
    assert_eq!(parts.store.tree(T::Received).len(), 0);
    assert_eq!(parts.store.tree(T::Inbox).len(), 0);
    assert_eq!(inbox::received_total(&parts.store).unwrap(), 0);
}

fn received_records(parts: &Parts, id: &str) -> usize {
    parts
        .audit_of(id)
        .iter()
        .filter(|r| r.event == Event::MessageReceived)
        .count()
}

#[tokio::test]
async fn a_signed_referral_from_a_peer_is_stored_once_with_a_verifiable_receipt() {
    let s = scene();
    let item = s.signed(&s.referral("msg-1"));
    let bytes = item.envelope.clone();

    let results = s.receive(&caller(&s.practice), vec![item]).await;

    let [result] = <[_; 1]>::try_from(results).unwrap();
    let receipt = result.unwrap();
    receipt
        .verify("msg-1", &bytes, &s.wijkteam.me.cert)
        .expect("the receipt verifies against the wijkteam's certificate");
    assert_eq!(receipt.receiver, WIJKTEAM_ID);
    let stored = inbox::get(&s.wijkteam.store, &practice_org(), "msg-1")
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.envelope.as_bytes(),
        bytes.as_slice(),
        "the exact bytes"
    );
    assert_eq!(stored.from, PRACTICE_ID);
    assert_eq!(stored.receipt, receipt);
    assert_eq!(stored.subject, Some(s.wijkteam.pseudonym(BSN)));
    assert_eq!(stored.consent_id.as_deref(), Some("c-1"));
    let waiting = waiting(&s.wijkteam.store);
    assert_eq!(waiting.len(), 1);
    assert_eq!(inbox::received_total(&s.wijkteam.store).unwrap(), 1);
    // The consent travels with it and is mirrored here.
    let mirror = registry::state(&s.wijkteam.store, "c-1").unwrap().unwrap();
    assert!(mirror.is_mirror());

    let audit = s.wijkteam.audit_of("msg-1");
    let kinds: Vec<Event> = audit.iter().map(|r| r.event).collect();
    assert_eq!(kinds, [Event::ConsentMirrored, Event::MessageReceived]);
    let received = &audit[1];
    assert_eq!(received.outcome, Outcome::Success);
    assert_eq!(received.peer.as_deref(), Some(PRACTICE_ID));
    assert_eq!(received.on_behalf_of.as_deref(), Some(WIJKTEAM_ID));
    assert_eq!(received.subject, Some(s.wijkteam.pseudonym(BSN)));
    assert!(matches!(
        &received.actor,
        Actor::Peer { organisation, .. } if organisation == PRACTICE_ID
    ));
}

#[tokio::test]
async fn the_same_bytes_again_get_the_first_receipt_and_are_not_stored_twice() {
    let s = scene();
    let envelope = s.referral("msg-1");
    let practice = caller(&s.practice);

    let first = s.receive(&practice, vec![s.signed(&envelope)]).await;
    let again = s.receive(&practice, vec![s.signed(&envelope)]).await;

    let first = first.into_iter().next().unwrap().unwrap();
    let again = again.into_iter().next().unwrap().unwrap();
    assert_eq!(again, first, "the first receipt, not a new one");
    assert_eq!(inbox::received_total(&s.wijkteam.store).unwrap(), 1);
    assert_eq!(waiting(&s.wijkteam.store).len(), 1);
    assert_eq!(received_records(&s.wijkteam, "msg-1"), 1);
}

#[tokio::test]
async fn other_content_under_a_received_id_is_refused_as_duplicate_id() {
    let s = scene();
    let practice = caller(&s.practice);
    let first = s.signed(&s.referral("msg-1"));
    let first_bytes = first.envelope.clone();
    s.receive(&practice, vec![first]).await;

    let mut other = s.referral("msg-1");
    other.body.insert("urgency".into(), json!("urgent"));
    let results = s.receive(&practice, vec![s.signed(&other)]).await;

    let refusal = results.into_iter().next().unwrap().unwrap_err();
    assert_eq!(refusal.code, Code::DuplicateId);
    let stored = inbox::get(&s.wijkteam.store, &practice_org(), "msg-1")
        .unwrap()
        .unwrap();
    assert_eq!(stored.envelope.as_bytes(), first_bytes.as_slice());
    let refused = s
        .wijkteam
        .audit_of("msg-1")
        .into_iter()
        .filter(|r| r.event == Event::MessageRefused)
        .count();
    assert_eq!(refused, 1);
}

#[tokio::test]
async fn a_caller_whose_certificate_names_no_organisation_is_refused_as_unknown_peer() {
    let s = scene();
    let nameless = Caller {
        intermediates: Vec::new(),
        identity: Err(IdentityError::NoOrganisationId),
        ..caller(&s.practice)
    };
    let item = s.signed(&s.referral("msg-1"));

    let record = s
        .assert_refused(
            &nameless,
            item,
            Code::UnknownPeer,
            Event::CertificateRefused,
        )
        .await;

    assert!(matches!(record.actor, Actor::Unknown { .. }));
    assert_eq!(record.peer, None);
}

#[tokio::test]
async fn a_caller_that_is_not_a_configured_peer_is_refused_as_unknown_peer() {
    let s = scene();
    let mut envelope = s.referral("msg-1");
    envelope.from = STRANGER_ID.into();
    let item = signed_by(&s.stranger, &envelope);

    let record = s
        .assert_refused(
            &caller(&s.stranger),
            item,
            Code::UnknownPeer,
            Event::CertificateRefused,
        )
        .await;

    assert_eq!(record.peer.as_deref(), Some(STRANGER_ID));
    assert_eq!(Code::UnknownPeer.as_str(), "unknown_peer");
}

#[tokio::test]
async fn a_message_without_a_signature_is_refused() {
    let s = scene();
    let mut item = s.signed(&s.referral("msg-1"));
    item.signature = None;
    s.assert_refused(
        &caller(&s.practice),
        item,
        Code::MissingSignature,
        Event::MessageRefused,
    )
    .await;
}

#[tokio::test]
async fn a_signature_that_does_not_verify_against_the_callers_certificate_is_refused() {
    let s = scene();
    // Signed by someone else's key, sent over the practice's connection.
    let item = signed_by(&s.stranger, &s.referral("msg-1"));
    s.assert_refused(
        &caller(&s.practice),
        item,
        Code::BadSignature,
        Event::MessageRefused,
    )
    .await;
}

#[tokio::test]
async fn a_message_changed_after_signing_is_refused() {
    let s = scene();
    let mut item = s.signed(&s.referral("msg-1"));
    let text = String::from_utf8(item.envelope).unwrap();
    item.envelope = text.replace("soon", "urgent").into_bytes();
    s.assert_refused(
        &caller(&s.practice),
        item,
        Code::BadSignature,
        Event::MessageRefused,
    )
    .await;
}

#[tokio::test]
async fn a_message_whose_from_is_not_the_certificates_organisation_is_refused() {
    let s = scene();
    let mut envelope = s.referral("msg-1");
    envelope.from = STRANGER_ID.into();
    let record = s
        .assert_refused(
            &caller(&s.practice),
            s.signed(&envelope),
            Code::FromMismatch,
            Event::MessageRefused,
        )
        .await;
    assert_eq!(record.message_id.as_deref(), Some("msg-1"));
    assert_eq!(record.peer.as_deref(), Some(PRACTICE_ID));
}

#[tokio::test]
async fn a_message_addressed_to_another_organisation_is_refused() {
    let s = scene();
    let mut envelope = s.referral("msg-1");
    envelope.to = STRANGER_ID.into();
    s.assert_refused(
        &caller(&s.practice),
        s.signed(&envelope),
        Code::WrongRecipient,
        Event::MessageRefused,
    )
    .await;
}

#[tokio::test]
async fn a_type_the_peer_may_not_send_is_refused() {
    let s = scene();
    let mut envelope = s.referral("msg-1");
    envelope.message_type = MessageType::Feedback;
    envelope.body = object(json!({"referral_id": "msg-0", "status": "received"}));
    let record = s
        .assert_refused(
            &caller(&s.practice),
            s.signed(&envelope),
            Code::TypeNotAllowed,
            Event::MessageRefused,
        )
        .await;
    assert_eq!(record.message_type, Some(MessageType::Feedback));
}

#[tokio::test]
async fn a_message_carrying_more_than_the_policy_allows_is_refused() {
    let s = scene();
    let mut envelope = s.referral("msg-1");
    envelope
        .body
        .insert("diagnoses".into(), json!(["slaapstoornis"]));
    s.assert_refused(
        &caller(&s.practice),
        s.signed(&envelope),
        Code::PolicyViolation,
        Event::MessageRefused,
    )
    .await;
}

#[tokio::test]
async fn a_message_in_a_batch_is_held_to_the_single_message_size_limit() {
    let s = scene();
    let mut envelope = s.referral("msg-big");
    let text = "x".repeat(crate::message::MAX_MESSAGE_BYTES);
    envelope.body.insert("request_for_help".into(), json!(text));
    s.assert_refused(
        &caller(&s.practice),
        s.signed(&envelope),
        Code::TooLarge,
        Event::MessageRefused,
    )
    .await;
}

#[tokio::test]
async fn a_batch_is_answered_in_order_and_only_its_good_messages_are_stored() {
    let s = scene();
    let good_1 = s.signed(&s.referral("msg-1"));
    let mut unsigned = s.signed(&s.referral("msg-2"));
    unsigned.signature = None;
    let good_3 = s.signed(&s.referral("msg-3"));
    let mut misaddressed = s.referral("msg-4");
    misaddressed.to = STRANGER_ID.into();
    let misaddressed = s.signed(&misaddressed);
    let bytes_1 = good_1.envelope.clone();
    let bytes_3 = good_3.envelope.clone();

    let results = s
        .receive(
            &caller(&s.practice),
            vec![good_1, unsigned, good_3, misaddressed],
        )
        .await;

    let [r1, r2, r3, r4] = <[_; 4]>::try_from(results).unwrap();
    let cert = &s.wijkteam.me.cert;
    r1.unwrap().verify("msg-1", &bytes_1, cert).unwrap();
    assert_eq!(r2.unwrap_err().code, Code::MissingSignature);
    r3.unwrap().verify("msg-3", &bytes_3, cert).unwrap();
    assert_eq!(r4.unwrap_err().code, Code::WrongRecipient);

    let store = &s.wijkteam.store;
    assert!(inbox::get(store, &practice_org(), "msg-1")
        .unwrap()
        .is_some());
    assert!(inbox::get(store, &practice_org(), "msg-2")
        .unwrap()
        .is_none());
    assert!(inbox::get(store, &practice_org(), "msg-3")
        .unwrap()
        .is_some());
    assert!(inbox::get(store, &practice_org(), "msg-4")
        .unwrap()
        .is_none());
    assert_eq!(inbox::received_total(store).unwrap(), 2);
    assert_eq!(received_records(&s.wijkteam, "msg-1"), 1);
    assert_eq!(received_records(&s.wijkteam, "msg-3"), 1);
    let refused: Vec<Event> = s
        .wijkteam
        .audit()
        .iter()
        .filter(|r| r.outcome == Outcome::Refused)
        .map(|r| r.event)
        .collect();
    assert_eq!(refused, [Event::MessageRefused, Event::MessageRefused]);
}
