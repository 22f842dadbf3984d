//! End to end: messages submitted at one gateway's local API arrive once in the other's
//! inbox, with a receipt the sender can verify; relaying is idempotent.

use wijkpoort::audit::Event;
use wijkpoort::dev::pki::DEV_PRACTICE_ID;
use wijkpoort::receipt::Receipt;

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_from_the_practice_arrives_once_at_the_wijkteam_with_a_verifiable_receipt() {
    let (setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let mut case_system = setup.client(Role::Wijkteam, "k.bakker");

    let id = submit_referrals(&mut his, 1).await.remove(0);
    let delivered = wait_delivered(&mut his, &id).await;

    // The wijkteam has it exactly once, byte for byte what the practice signed.
    let sent = wijkpoort::outbox::get(store(&practice), &id)
        .unwrap()
        .unwrap();
    let at_wijkteam = store(&wijkteam);
    assert_eq!(inbox_entries(at_wijkteam), vec![id.clone()]);
    let received = wijkpoort::inbox::get(at_wijkteam, &DEV_PRACTICE_ID.into(), &id)
        .unwrap()
        .unwrap();
    assert_eq!(received.envelope, sent.envelope);
    assert_eq!(audit_count(at_wijkteam, Event::MessageReceived, &id), 1);

    // The case system sees it in its inbox, with the child it concerns.
    let (code, inbox) = case_system.get("/v1/inbox").await.unwrap();
    assert_eq!(code, 200);
    let messages = inbox["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{inbox}");
    assert_eq!(messages[0]["id"], id.as_str());
    assert_eq!(messages[0]["type"], "referral");
    assert_eq!(messages[0]["envelope"]["subject"]["bsn"], BSN);

    // The receipt is the wijkteam's signature over exactly what was sent, and nobody
    // else's.
    let receipt: Receipt = serde_json::from_value(delivered["receipt"].clone()).unwrap();
    let wijkteam_cert = setup.credentials(Role::Wijkteam).cert_der();
    receipt
        .verify(&id, sent.envelope.as_bytes(), &wijkteam_cert)
        .unwrap();
    assert_eq!(receipt.receiver, wijkpoort::dev::pki::DEV_WIJKTEAM_ID);
    let practice_cert = setup.credentials(Role::Practice).cert_der();
    assert!(receipt
        .verify(&id, sent.envelope.as_bytes(), &practice_cert)
        .is_err());
    assert!(receipt
        .verify(&id, b"some other message", &wijkteam_cert)
        .is_err());
    assert_eq!(delivered["attempts"], 1, "{delivered}");

    // The sender audited the delivery once.
    assert_eq!(
        audit_count(store(&practice), Event::MessageDelivered, &id),
        1
    );

    // Acknowledging takes it out of the inbox, audited with the acting user.
    let (code, _) = case_system
        .post(
            &format!("/v1/inbox/{DEV_PRACTICE_ID}/{id}/ack"),
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(inbox_entries(at_wijkteam).is_empty());
    let ack = audit_records(at_wijkteam)
        .into_iter()
        .find(|r| r.event.event == Event::MessageAcknowledged)
        .expect("an acknowledgement audit record");
    assert_eq!(
        ack.event.actor,
        wijkpoort::audit::Actor::User {
            id: "k.bakker".into()
        }
    );

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_from_the_wijkteam_arrives_once_at_the_practice_with_a_verifiable_receipt() {
    let (setup, practice, wijkteam) = pair().await;
    let mut case_system = setup.client(Role::Wijkteam, "k.bakker");
    let mut his = setup.client(Role::Practice, "dr.jansen");

    // Feedback travels under the consent the referral brought to the wijkteam.
    let consent = record_consent(&mut his).await;
    let referral = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &referral).await;
    let id = submit(&mut case_system, &feedback_submission(&referral, &consent)).await;
    let delivered = wait_delivered(&mut case_system, &id).await;

    let sent = wijkpoort::outbox::get(store(&wijkteam), &id)
        .unwrap()
        .unwrap();
    let store = store(&practice);
    assert_eq!(inbox_entries(store), vec![id.clone()]);
    assert_eq!(audit_count(store, Event::MessageReceived, &id), 1);
    let (_, inbox) = his.get("/v1/inbox").await.unwrap();
    let messages = inbox["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{inbox}");
    assert_eq!(messages[0]["type"], "feedback");
    assert_eq!(
        messages[0]["envelope"]["body"]["referral_id"],
        referral.as_str()
    );

    let receipt: Receipt = serde_json::from_value(delivered["receipt"].clone()).unwrap();
    receipt
        .verify(
            &id,
            sent.envelope.as_bytes(),
            &setup.credentials(Role::Practice).cert_der(),
        )
        .unwrap();
    assert!(receipt
        .verify(
            &id,
            sent.envelope.as_bytes(),
            &setup.credentials(Role::Wijkteam).cert_der()
        )
        .is_err());

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_envelope_relayed_twice_is_stored_once_and_answered_with_the_same_receipt() {
    let mut setup = Setup::new().await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let practice = setup.credentials(Role::Practice);
    let bytes = referral_envelope("ref-twice").to_bytes();

    let first = relay_signed(&setup, Role::Wijkteam, &practice, &bytes)
        .await
        .unwrap();
    let second = relay_signed(&setup, Role::Wijkteam, &practice, &bytes)
        .await
        .unwrap();

    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(
        first.body, second.body,
        "the second answer is the first receipt"
    );
    let receipt: Receipt = serde_json::from_value(first.body).unwrap();
    receipt
        .verify(
            "ref-twice",
            &bytes,
            &setup.credentials(Role::Wijkteam).cert_der(),
        )
        .unwrap();
    let store = store(&wijkteam);
    assert_eq!(inbox_entries(store), vec!["ref-twice".to_string()]);
    assert_eq!(audit_count(store, Event::MessageReceived, "ref-twice"), 1);

    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_message_reusing_a_received_id_is_refused_and_the_first_is_kept() {
    let mut setup = Setup::new().await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let practice = setup.credentials(Role::Practice);
    let first = referral_envelope("ref-reused");
    let mut other = first.clone();
    other
        .body
        .insert("urgency".into(), serde_json::json!("urgent"));

    let a = relay_signed(&setup, Role::Wijkteam, &practice, &first.to_bytes())
        .await
        .unwrap();
    let b = relay_signed(&setup, Role::Wijkteam, &practice, &other.to_bytes())
        .await
        .unwrap();

    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(b.status, 409, "{:?}", b.body);
    assert_eq!(b.body["error"], "duplicate_id");
    let store = store(&wijkteam);
    assert_eq!(inbox_entries(store), vec!["ref-reused".to_string()]);
    let kept = wijkpoort::inbox::get(store, &DEV_PRACTICE_ID.into(), "ref-reused")
        .unwrap()
        .unwrap();
    assert_eq!(kept.envelope.as_bytes(), first.to_bytes().as_slice());
    let refusal = wait_for_refusal(store, Event::MessageRefused, "duplicate_id").await;
    assert_eq!(refusal.event.message_id.as_deref(), Some("ref-reused"));

    wijkteam.stop().await.unwrap();
}

/// Messages that wait for the wijkteam go out as one batch and come back with one
/// signature for the batch; each receipt still proves its own message, and only that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_answered_with_one_signature_and_each_receipt_proves_only_its_message() {
    let mut setup = Setup::new().await;
    setup.release(Role::Wijkteam); // its port refuses connections until it starts
    let practice = setup.start(Role::Practice).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let ids = submit_referrals(&mut his, 7).await;
    let wijkteam = setup.start(Role::Wijkteam).await;

    let wijkteam_cert = setup.credentials(Role::Wijkteam).cert_der();
    let mut receipts = Vec::new();
    for id in &ids {
        let delivered = wait_delivered(&mut his, id).await;
        let receipt: Receipt = serde_json::from_value(delivered["receipt"].clone()).unwrap();
        let sent = wijkpoort::outbox::get(store(&practice), id)
            .unwrap()
            .unwrap();
        receipt
            .verify(id, sent.envelope.as_bytes(), &wijkteam_cert)
            .unwrap();
        receipts.push((receipt, sent));
    }
    let batch = receipts[0].0.batch.clone().expect("a batch receipt");
    assert_eq!(batch.size, 7, "all seven went in one batch");
    assert!(receipts
        .iter()
        .all(|(r, _)| r.signature == receipts[0].0.signature));

    // Another message's receipt, path and all, does not prove this message.
    let (first, first_sent) = &receipts[0];
    let (second, _) = &receipts[1];
    assert!(second
        .verify(
            &first.message_id,
            first_sent.envelope.as_bytes(),
            &wijkteam_cert
        )
        .is_err());
    let mut forged = second.clone();
    forged.message_id = first.message_id.clone();
    forged.stored_hash = first.stored_hash.clone();
    assert!(forged
        .verify(
            &first.message_id,
            first_sent.envelope.as_bytes(),
            &wijkteam_cert
        )
        .is_err());

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

/// Messages queued while the wijkteam was down go out in the order they were accepted,
/// across more than one batch: the relay admits the next batch while the one before it
/// is in flight, but sends it only after that one's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_more_than_one_batch_arrives_in_the_order_it_was_accepted() {
    let mut setup = Setup::new().await;
    setup.release(Role::Wijkteam); // its port refuses connections until it starts
    let practice = setup.start(Role::Practice).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let n = wijkpoort::wire::MAX_BATCH * 2 + 10;
    let ids = submit_referrals(&mut his, n).await;
    let wijkteam = setup.start(Role::Wijkteam).await;

    let arrived = wait_until("the whole backlog at the wijkteam", || {
        let entries = inbox_entries(store(&wijkteam));
        async move { (entries.len() >= n).then_some(entries) }
    })
    .await;
    assert_eq!(arrived, ids, "in the order accepted, each once");
    let first = wait_delivered(&mut his, &ids[0]).await;
    let last = wait_delivered(&mut his, &ids[n - 1]).await;
    let batch_of = |status: &serde_json::Value| status["receipt"]["batch"]["size"].as_u64();
    assert_eq!(batch_of(&first), Some(wijkpoort::wire::MAX_BATCH as u64));
    assert!(
        batch_of(&last) < Some(wijkpoort::wire::MAX_BATCH as u64),
        "three batches"
    );

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

/// The signed batch covers exactly what the wijkteam stored: a message refused in the
/// commit (an id reused for other content) is not in it, so no Merkle path can be made
/// for it from the other receipts; a message sent twice in one batch is stored once and
/// both get its receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_receipt_covers_only_the_messages_stored_from_it() {
    let mut setup = Setup::new().await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let practice = setup.credentials(Role::Practice);
    let wijkteam_cert = setup.credentials(Role::Wijkteam).cert_der();
    let first = referral_envelope("ref-kept");
    let answer = relay_signed(&setup, Role::Wijkteam, &practice, &first.to_bytes())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);

    let mut reused = first.clone();
    reused
        .body
        .insert("urgency".into(), serde_json::json!("urgent"));
    let new = referral_envelope("ref-new");
    // Each envelope goes in as its exact signed bytes (a JSON value re-serialised could
    // reorder its keys and break the signature).
    let item = |e: &wijkpoort::message::Envelope| {
        let bytes = e.to_bytes();
        let sig = sign(&practice.key_pem, &bytes);
        format!(
            r#"{{"signature":"{sig}","envelope":{}}}"#,
            String::from_utf8(bytes).unwrap()
        )
    };
    let batch = format!(
        r#"{{"messages":[{},{},{}]}}"#,
        item(&reused),
        item(&new),
        item(&new)
    );
    let answer = post_to_listener(
        setup.listener_addr(Role::Wijkteam),
        RELAY_BATCH,
        &setup.anchors_pem(),
        Some(&practice),
        batch.into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let results = answer.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["status"], 409, "{:?}", results[0]);
    let r1: Receipt = serde_json::from_value(results[1]["receipt"].clone()).unwrap();
    let r2: Receipt = serde_json::from_value(results[2]["receipt"].clone()).unwrap();
    assert_eq!(r1, r2, "the same message twice gets one receipt");
    r1.verify("ref-new", &new.to_bytes(), &wijkteam_cert)
        .unwrap();
    assert_eq!(
        r1.batch.as_ref().unwrap().size,
        1,
        "only the one stored message is in the signed batch"
    );
    let store = store(&wijkteam);
    assert_eq!(audit_count(store, Event::MessageReceived, "ref-new"), 1);
    let kept = wijkpoort::inbox::get(store, &DEV_PRACTICE_ID.into(), "ref-kept")
        .unwrap()
        .unwrap();
    assert_eq!(kept.envelope.as_bytes(), first.to_bytes().as_slice());

    wijkteam.stop().await.unwrap();
}
