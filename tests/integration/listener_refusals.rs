//! The mTLS listener refuses whoever is not a configured peer sending what it may send,
//! stores nothing, and audits each refusal with its reason.

use chrono::{Duration, Utc};
use wijkpoort::audit::{Actor, Event};
use wijkpoort::pki::{Authority, LeafSpec, DEV_PRACTICE_ID};

use crate::util::*;

/// The wijkteam gateway alone, ready to receive.
async fn receiver() -> (Setup, wijkpoort::RunningGateway) {
    let mut setup = Setup::new().await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    (setup, wijkteam)
}

/// Relays a valid, properly signed referral presenting `client`.
async fn relay_referral_as(setup: &Setup, client: Option<&Credentials>) -> Result<Answer, String> {
    let bytes = referral_envelope("ref-refused").to_bytes();
    let sig = sign(&setup.credentials(Role::Practice).key_pem, &bytes);
    relay(
        setup.listener_addr(Role::Wijkteam),
        &setup.anchors_pem(),
        client,
        Some(&sig),
        bytes,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_in_the_handshake_and_audited() {
    let (setup, wijkteam) = receiver().await;

    // TLS 1.3: the handshake "succeeds" for the client; the refusal arrives as an alert
    // on its first request.
    let answer = relay_referral_as(&setup, None).await;

    let err = answer.expect_err("a client without a certificate gets no answer");
    assert!(err.starts_with("request:"), "{err}");
    let store = &wijkteam.gateway.store;
    let record = wait_for_refusal(store, Event::CertificateRefused, "TLS handshake refused").await;
    let reason = record.event.reason.unwrap();
    assert!(reason.contains("no certificate"), "{reason}");
    assert!(matches!(record.event.actor, Actor::Unknown { .. }));
    assert_nothing_stored(store);
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_in_the_handshake_and_audited() {
    let (setup, wijkteam) = receiver().await;
    let other_ca = Authority::new("somebody else").unwrap();
    let issued = other_ca.issue(&practice_spec()).unwrap();
    let impostor = Credentials {
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
    };

    let err = relay_referral_as(&setup, Some(&impostor))
        .await
        .expect_err("an untrusted certificate gets no answer");

    assert!(err.starts_with("request:"), "{err}");
    let store = &wijkteam.gateway.store;
    let record = wait_for_refusal(store, Event::CertificateRefused, "TLS handshake refused").await;
    let reason = record.event.reason.unwrap();
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert_nothing_stored(store);
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_in_the_handshake_and_audited() {
    let (setup, wijkteam) = receiver().await;
    let mut spec = practice_spec();
    spec.not_before = Utc::now() - Duration::days(30);
    spec.not_after = Utc::now() - Duration::days(1);
    let expired = setup.issue(&spec);

    let err = relay_referral_as(&setup, Some(&expired))
        .await
        .expect_err("an expired certificate gets no answer");

    assert!(err.starts_with("request:"), "{err}");
    let store = &wijkteam.gateway.store;
    let record = wait_for_refusal(store, Event::CertificateRefused, "TLS handshake refused").await;
    let reason = record.event.reason.unwrap().to_lowercase();
    assert!(reason.contains("expired"), "{reason}");
    assert_nothing_stored(store);
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_certificate_of_an_unknown_organisation_is_refused_with_403_and_audited() {
    let (setup, wijkteam) = receiver().await;
    let stranger = setup.issue(&LeafSpec::new(
        "90000999",
        "Huisartsenpraktijk Elders",
        "elders.test",
    ));
    let mut env = referral_envelope("ref-stranger");
    env.from = "90000999".into();
    let bytes = env.to_bytes();

    let answer = relay_signed(&setup, Role::Wijkteam, &stranger, &bytes)
        .await
        .unwrap();

    assert_eq!(answer.status, 403, "{:?}", answer.body);
    assert_eq!(answer.body["error"], "unknown_peer");
    let store = &wijkteam.gateway.store;
    let record = wait_for_refusal(store, Event::CertificateRefused, "unknown_peer").await;
    assert_eq!(record.event.peer.as_deref(), Some("90000999"));
    assert_nothing_stored(store);
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_peer_sending_a_type_it_may_not_send_is_refused_with_403_and_audited() {
    let (setup, wijkteam) = receiver().await;
    // The practice may send referrals, consultations and consent updates, not feedback.
    let mut env = feedback_envelope("fb-from-practice");
    env.from = DEV_PRACTICE_ID.into();
    env.to = wijkpoort::pki::DEV_WIJKTEAM_ID.into();

    let answer = relay_signed(
        &setup,
        Role::Wijkteam,
        &setup.credentials(Role::Practice),
        &env.to_bytes(),
    )
    .await
    .unwrap();

    assert_eq!(answer.status, 403, "{:?}", answer.body);
    assert_eq!(answer.body["error"], "type_not_allowed");
    assert_eq!(answer.body["field"], "type");
    let store = &wijkteam.gateway.store;
    let record = wait_for_refusal(store, Event::MessageRefused, "type_not_allowed").await;
    assert_eq!(record.event.message_id.as_deref(), Some("fb-from-practice"));
    assert_eq!(record.event.peer.as_deref(), Some(DEV_PRACTICE_ID));
    assert_nothing_stored(store);
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_whose_from_is_not_the_certificate_holder_is_refused_and_audited() {
    let (setup, wijkteam) = receiver().await;
    let mut env = referral_envelope("ref-spoofed");
    env.from = "90000777".into();

    let answer = relay_signed(
        &setup,
        Role::Wijkteam,
        &setup.credentials(Role::Practice),
        &env.to_bytes(),
    )
    .await
    .unwrap();

    assert_eq!(answer.status, 403, "{:?}", answer.body);
    assert_eq!(answer.body["error"], "from_mismatch");
    assert_eq!(answer.body["field"], "from");
    let store = &wijkteam.gateway.store;
    let record = wait_for_refusal(store, Event::MessageRefused, "from_mismatch").await;
    assert_eq!(record.event.message_id.as_deref(), Some("ref-spoofed"));
    assert_nothing_stored(store);
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_with_a_bad_signature_is_refused_and_audited() {
    let (setup, wijkteam) = receiver().await;
    let practice = setup.credentials(Role::Practice);
    let bytes = referral_envelope("ref-badsig").to_bytes();
    // Signed by the wijkteam's key, presented with the practice's certificate.
    let wrong_key = sign(&setup.credentials(Role::Wijkteam).key_pem, &bytes);
    // The practice's signature, but over other bytes than those sent.
    let other_bytes = sign(&practice.key_pem, b"something else");

    for sig in [wrong_key, other_bytes] {
        let answer = relay(
            setup.listener_addr(Role::Wijkteam),
            &setup.anchors_pem(),
            Some(&practice),
            Some(&sig),
            bytes.clone(),
        )
        .await
        .unwrap();
        assert_eq!(answer.status, 422, "{:?}", answer.body);
        assert_eq!(answer.body["error"], "bad_signature");
    }

    let store = &wijkteam.gateway.store;
    wait_for_refusal(store, Event::MessageRefused, "bad_signature").await;
    let refusals = audit_records(store)
        .into_iter()
        .filter(|r| {
            r.event.event == Event::MessageRefused
                && r.event
                    .reason
                    .as_deref()
                    .unwrap_or("")
                    .contains("bad_signature")
        })
        .count();
    assert_eq!(refusals, 2, "each refusal is audited");
    assert_nothing_stored(store);
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_without_a_signature_is_refused_and_audited() {
    let (setup, wijkteam) = receiver().await;
    let answer = relay(
        setup.listener_addr(Role::Wijkteam),
        &setup.anchors_pem(),
        Some(&setup.credentials(Role::Practice)),
        None,
        referral_envelope("ref-unsigned").to_bytes(),
    )
    .await
    .unwrap();

    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert_eq!(answer.body["error"], "missing_signature");
    let store = &wijkteam.gateway.store;
    wait_for_refusal(store, Event::MessageRefused, "missing_signature").await;
    assert_nothing_stored(store);
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_64_kib_is_refused_with_413_and_audited() {
    let (setup, wijkteam) = receiver().await;
    let mut env = referral_envelope("ref-huge");
    // Many short strings: each within the text limit, together far over the size limit.
    for i in 0..40 {
        env.body
            .insert(format!("note{i}"), serde_json::json!("x".repeat(2000)));
    }
    let bytes = env.to_bytes();
    assert!(bytes.len() > 64 * 1024);

    let answer = relay_signed(
        &setup,
        Role::Wijkteam,
        &setup.credentials(Role::Practice),
        &bytes,
    )
    .await
    .unwrap();

    assert_eq!(answer.status, 413, "{:?}", answer.body);
    assert_eq!(answer.body["error"], "too_large");
    let store = &wijkteam.gateway.store;
    let record = wait_for_refusal(store, Event::MessageRefused, "too_large").await;
    assert_eq!(record.event.peer.as_deref(), Some(DEV_PRACTICE_ID));
    assert_nothing_stored(store);
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_refused_with_400_and_audited() {
    let (setup, wijkteam) = receiver().await;
    let bytes = br#"{"id": "ref-broken", "type": "referral", "#.to_vec();

    let answer = relay_signed(
        &setup,
        Role::Wijkteam,
        &setup.credentials(Role::Practice),
        &bytes,
    )
    .await
    .unwrap();

    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert_eq!(answer.body["error"], "malformed");
    let store = &wijkteam.gateway.store;
    wait_for_refusal(store, Event::MessageRefused, "malformed").await;
    assert_nothing_stored(store);
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_with_an_invalid_bsn_is_refused_on_arrival_naming_the_field() {
    let (setup, wijkteam) = receiver().await;
    let mut env = referral_envelope("ref-badbsn");
    env.subject
        .as_mut()
        .unwrap()
        .insert("bsn".into(), serde_json::json!("123456789"));

    let answer = relay_signed(
        &setup,
        Role::Wijkteam,
        &setup.credentials(Role::Practice),
        &env.to_bytes(),
    )
    .await
    .unwrap();

    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert_eq!(answer.body["field"], "subject.bsn");
    let store = &wijkteam.gateway.store;
    wait_for_refusal(store, Event::MessageRefused, "invalid_field").await;
    assert_nothing_stored(store);
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_envelope_does_not_put_its_content_in_the_audit_log() {
    let (setup, wijkteam) = receiver().await;
    let mut env = serde_json::to_value(referral_envelope("ref-leaky")).unwrap();
    env["schema_version"] = serde_json::json!(BSN); // a string where a number belongs
    let bytes = serde_json::to_vec(&env).unwrap();

    let answer = relay_signed(
        &setup,
        Role::Wijkteam,
        &setup.credentials(Role::Practice),
        &bytes,
    )
    .await
    .unwrap();

    assert_eq!(answer.status, 400, "{:?}", answer.body);
    let store = &wijkteam.gateway.store;
    wait_for_refusal(store, Event::MessageRefused, "malformed").await;
    for r in audit_records(store) {
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains(BSN), "the audit log holds a BSN: {text}");
    }
    wijkteam.stop().await.unwrap();
}
