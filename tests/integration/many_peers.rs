//! A network of several practices and wijkteams: what arrives where, and only there.
//! Messages from different senders are kept apart (even under the same id), a
//! withdrawal tells only the peer that was sent something under the consent, a peer
//! that is down holds up nobody else, and the inbox pages through many senders.

use serde_json::{json, Value};

use wijkpoort::audit::{AuditRecord, Event};
use wijkpoort::client::LocalApiClient;
use wijkpoort::outbox;
use wijkpoort::receipt::Receipt;
use wijkpoort::store::Store;

use crate::util::*;

/// One page of the inbox (`query` is what follows `/v1/inbox`): its messages and
/// `next_cursor`.
async fn inbox(client: &mut LocalApiClient, query: &str) -> (Vec<Value>, Value) {
    let (code, page) = client.get(&format!("/v1/inbox{query}")).await.unwrap();
    assert_eq!(code, 200, "inbox{query}: {page}");
    let messages = page["messages"].as_array().unwrap().clone();
    (messages, page["next_cursor"].clone())
}

/// Acknowledges the message `id` from `from`.
async fn ack(client: &mut LocalApiClient, from: &str, id: &str) {
    let (code, answer) = client
        .post(&format!("/v1/inbox/{from}/{id}/ack"), &json!({}))
        .await
        .unwrap();
    assert_eq!(code, 200, "ack {from}/{id}: {answer}");
}

/// `(id, from)` of each message.
fn ids_and_senders(messages: &[Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| (str_of(&m["id"]), str_of(&m["from"])))
        .collect()
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// The audit records of `event` about message `id`.
fn audit_of(store: &Store, event: Event, id: &str) -> Vec<AuditRecord> {
    audit_records(store)
        .into_iter()
        .filter(|r| r.event.event == event && r.event.message_id.as_deref() == Some(id))
        .collect()
}

/// The peer named by the one `message_received` record of message `id`.
fn received_from(store: &Store, id: &str) -> String {
    let records = audit_of(store, Event::MessageReceived, id);
    assert_eq!(
        records.len(),
        1,
        "one message_received for {id}: {records:?}"
    );
    records[0]
        .event
        .peer
        .clone()
        .expect("the record names the peer")
}

/// Withdraws a consent at the practice; returns the ids of the consent updates queued.
async fn withdraw(his: &mut LocalApiClient, consent: &str) -> Vec<String> {
    let (code, answer) = his
        .post(
            &format!("/v1/consents/{consent}/withdraw"),
            &json!({"reason": "op verzoek van moeder"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "withdrawal of {consent}: {answer}");
    answer["consent_updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(str_of)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wijkteam_with_three_practices_keeps_their_referrals_apart_and_sends_each_only_its_own_feedback(
) {
    let mut net = Net::new(3, 1).await;
    let wijkteam = net.start("wijkteam-1").await;
    let names = ["practice-1", "practice-2", "practice-3"];
    let mut practices = Vec::new();
    for name in names {
        practices.push(net.start(name).await);
    }
    let mut case_system = net.client("wijkteam-1", "k.bakker");

    // Each practice refers its own child.
    let mut sent = Vec::new();
    for (name, bsn) in names.into_iter().zip([BSN, OTHER_BSN, THIRD_BSN]) {
        let mut his = net.client(name, "dr.jansen");
        let consent = net.record_consent(&mut his, bsn, "wijkteam-1").await;
        let referral = submit(&mut his, &net.referral("wijkteam-1", &consent, bsn)).await;
        sent.push((name, bsn, consent, referral));
    }
    for (name, _, _, referral) in &sent {
        wait_delivered(&mut net.client(name, "dr.jansen"), referral).await;
    }

    // The wijkteam holds three referrals, each from its own practice, about its child.
    let (messages, _) = inbox(&mut case_system, "").await;
    let mut got = ids_and_senders(&messages);
    got.sort();
    let mut expected: Vec<_> = sent
        .iter()
        .map(|(name, _, _, referral)| (referral.clone(), net.identity(name)))
        .collect();
    expected.sort();
    assert_eq!(got, expected, "{messages:?}");
    let at_wijkteam = store(&wijkteam);
    for (name, bsn, _, referral) in &sent {
        let m = messages
            .iter()
            .find(|m| m["id"] == referral.as_str())
            .unwrap();
        assert_eq!(m["type"], "referral");
        assert_eq!(m["envelope"]["subject"]["bsn"], *bsn, "{m}");
        assert_eq!(m["envelope"]["from"], net.identity(name), "{m}");
        // The audit log names the practice that sent it, and its child.
        assert_eq!(received_from(at_wijkteam, referral), net.identity(name));
        let record = &audit_of(at_wijkteam, Event::MessageReceived, referral)[0];
        assert_eq!(record.event.subject, Some(pseudonym(&wijkteam, bsn)));
    }
    assert_eq!(inbox_entries(at_wijkteam).len(), 3);

    // A mirrored consent covers feedback to the practice it came from, and to no other.
    let (_, bsn1, consent1, referral1) = &sent[0];
    let mut misdirected = net.feedback("practice-2", referral1, consent1, bsn1);
    misdirected["id"] = json!("fb-misdirected");
    let (code, answer) = case_system
        .post("/v1/messages", &misdirected)
        .await
        .unwrap();
    assert_eq!(code, 422, "{answer}");
    assert_eq!(answer["error"], "consent_other_recipient", "{answer}");
    assert_eq!(
        audit_of(at_wijkteam, Event::MessageRefused, "fb-misdirected").len(),
        1
    );

    // Feedback to each practice under its mirrored consent.
    let mut feedback = Vec::new();
    for (name, bsn, consent, referral) in &sent {
        let id = submit(
            &mut case_system,
            &net.feedback(name, referral, consent, bsn),
        )
        .await;
        feedback.push(id);
    }
    for id in &feedback {
        wait_delivered(&mut case_system, id).await;
    }

    // Each practice holds exactly its own feedback, and nothing else.
    for (i, (name, bsn, _, referral)) in sent.iter().enumerate() {
        let mut his = net.client(name, "dr.jansen");
        let (messages, _) = inbox(&mut his, "").await;
        assert_eq!(messages.len(), 1, "{name}: {messages:?}");
        let m = &messages[0];
        assert_eq!(m["id"], feedback[i].as_str(), "{name}: {m}");
        assert_eq!(m["type"], "feedback");
        assert_eq!(m["from"], net.identity("wijkteam-1"));
        assert_eq!(m["envelope"]["body"]["referral_id"], referral.as_str());
        assert_eq!(m["envelope"]["subject"]["bsn"], *bsn);
        let at_practice = store(&practices[i]);
        assert_eq!(inbox_entries(at_practice), vec![feedback[i].clone()]);
        assert_eq!(
            received_from(at_practice, &feedback[i]),
            net.identity("wijkteam-1")
        );
    }

    for gw in practices {
        gw.stop().await.unwrap();
    }
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_id_from_two_practices_is_two_messages_at_the_wijkteam() {
    let mut net = Net::new(2, 1).await;
    let wijkteam = net.start("wijkteam-1").await;
    let practices = [
        ("practice-1", BSN, net.start("practice-1").await),
        ("practice-2", OTHER_BSN, net.start("practice-2").await),
    ];
    let mut case_system = net.client("wijkteam-1", "k.bakker");

    for (name, bsn, _) in &practices {
        let mut his = net.client(name, "dr.jansen");
        let consent = net.record_consent(&mut his, bsn, "wijkteam-1").await;
        let mut referral = net.referral("wijkteam-1", &consent, bsn);
        referral["id"] = json!("ref-1");
        assert_eq!(submit(&mut his, &referral).await, "ref-1");
    }

    // Each sender's ref-1 is delivered, with a receipt for that sender's message.
    let wijkteam_cert =
        der(&std::fs::read_to_string(net.dir.path().join("wijkteam-1.pem")).unwrap());
    let mut envelopes = Vec::new();
    for (name, _, gw) in &practices {
        let delivered = wait_delivered(&mut net.client(name, "dr.jansen"), "ref-1").await;
        let receipt: Receipt = serde_json::from_value(delivered["receipt"].clone()).unwrap();
        assert_eq!(
            receipt.sender.as_deref(),
            Some(&*net.identity(name)),
            "{delivered}"
        );
        assert_eq!(receipt.message_id, "ref-1");
        assert_eq!(receipt.receiver, net.identity("wijkteam-1"));
        let envelope = outbox::get(store(gw), "ref-1").unwrap().unwrap().envelope;
        receipt
            .verify("ref-1", envelope.as_bytes(), &wijkteam_cert)
            .unwrap();
        envelopes.push(envelope);
    }
    assert_ne!(envelopes[0], envelopes[1]);

    // The wijkteam stored both, apart.
    let p1 = net.identity("practice-1");
    let p2 = net.identity("practice-2");
    let (messages, _) = inbox(&mut case_system, "").await;
    let mut got = ids_and_senders(&messages);
    got.sort();
    let mut expected = vec![
        ("ref-1".to_string(), p1.clone()),
        ("ref-1".to_string(), p2.clone()),
    ];
    expected.sort();
    assert_eq!(got, expected, "{messages:?}");
    let at_wijkteam = store(&wijkteam);
    assert_eq!(inbox_entries(at_wijkteam), ["ref-1", "ref-1"]);
    let mut peers: Vec<_> = audit_of(at_wijkteam, Event::MessageReceived, "ref-1")
        .into_iter()
        .map(|r| r.event.peer.unwrap())
        .collect();
    peers.sort();
    let mut both = vec![p1.clone(), p2.clone()];
    both.sort();
    assert_eq!(peers, both);

    // Each is read by its sender and id, with its own envelope.
    for ((name, bsn, _), envelope) in practices.iter().zip(&envelopes) {
        let from = net.identity(name);
        let (code, m) = case_system
            .get(&format!("/v1/inbox/{from}/ref-1"))
            .await
            .unwrap();
        assert_eq!(code, 200, "{m}");
        assert_eq!(m["from"], from.as_str());
        assert_eq!(
            m["envelope"],
            serde_json::from_str::<Value>(envelope).unwrap()
        );
        assert_eq!(m["envelope"]["subject"]["bsn"], *bsn);
    }

    // Acknowledging practice-1's leaves practice-2's in the inbox.
    ack(&mut case_system, &p1, "ref-1").await;
    let (messages, _) = inbox(&mut case_system, "").await;
    assert_eq!(
        ids_and_senders(&messages),
        [("ref-1".to_string(), p2.clone())]
    );
    let (_, acked) = case_system
        .get(&format!("/v1/inbox/{p1}/ref-1"))
        .await
        .unwrap();
    assert_eq!(acked["acknowledged_by"], "k.bakker", "{acked}");
    let (_, waiting) = case_system
        .get(&format!("/v1/inbox/{p2}/ref-1"))
        .await
        .unwrap();
    assert!(waiting["acknowledged_at"].is_null(), "{waiting}");
    let acks = audit_of(at_wijkteam, Event::MessageAcknowledged, "ref-1");
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0].event.peer.as_deref(), Some(&*p1));

    for (_, _, gw) in practices {
        gw.stop().await.unwrap();
    }
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_tells_only_the_wijkteam_that_was_sent_something_under_that_consent() {
    let mut net = Net::new(1, 3).await;
    let practice = net.start("practice-1").await;
    let w1 = net.start("wijkteam-1").await;
    let w2 = net.start("wijkteam-2").await;
    let w3 = net.start("wijkteam-3").await;
    let mut his = net.client("practice-1", "dr.jansen");
    let p = net.identity("practice-1");

    // One child, a consent per wijkteam; referrals under A (wijkteam-1) and B
    // (wijkteam-2), nothing under C (wijkteam-3).
    let a = net.record_consent(&mut his, BSN, "wijkteam-1").await;
    let b = net.record_consent(&mut his, BSN, "wijkteam-2").await;
    let c = net.record_consent(&mut his, BSN, "wijkteam-3").await;
    let ref_a = submit(&mut his, &net.referral("wijkteam-1", &a, BSN)).await;
    let ref_b = submit(&mut his, &net.referral("wijkteam-2", &b, BSN)).await;
    wait_delivered(&mut his, &ref_a).await;
    wait_delivered(&mut his, &ref_b).await;

    // C was never used: withdrawing it tells nobody.
    assert_eq!(withdraw(&mut his, &c).await, Vec::<String>::new());
    assert_eq!(outbox::queued_for_peer(store(&practice), "wijkteam-3"), 0);

    // A was used with wijkteam-1: one update, to wijkteam-1.
    let updates = withdraw(&mut his, &a).await;
    assert_eq!(updates.len(), 1, "{updates:?}");
    let delivered = wait_delivered(&mut his, &updates[0]).await;
    assert_eq!(delivered["type"], "consent_update");
    assert_eq!(delivered["peer"], "wijkteam-1");
    let mut at_w1 = net.client("wijkteam-1", "k.bakker");
    let (told, _) = inbox(&mut at_w1, "?type=consent_update").await;
    assert_eq!(ids_and_senders(&told), [(updates[0].clone(), p.clone())]);
    assert_eq!(told[0]["envelope"]["body"]["consent_id"], a.as_str());
    assert_eq!(told[0]["envelope"]["body"]["status"], "withdrawn");
    let updated: Vec<_> = audit_records(store(&w1))
        .into_iter()
        .filter(|r| r.event.event == Event::ConsentUpdated)
        .collect();
    assert_eq!(updated.len(), 1, "{updated:?}");
    assert_eq!(updated[0].event.consent_id.as_deref(), Some(&*a));
    assert_eq!(updated[0].event.peer.as_deref(), Some(&*p));

    // Now that the update has arrived, the others have heard nothing of it; wijkteam-3
    // has heard nothing of the child at all.
    for (name, gw) in [("wijkteam-2", &w2), ("wijkteam-3", &w3)] {
        let (told, _) = inbox(&mut net.client(name, "k.bakker"), "?type=consent_update").await;
        assert!(told.is_empty(), "{name}: {told:?}");
        assert!(
            audit_records(store(gw))
                .iter()
                .all(|r| r.event.event != Event::ConsentUpdated),
            "{name} recorded a consent update"
        );
    }
    assert_nothing_stored(store(&w3));

    // B still covers: another referral to wijkteam-2, and feedback back from it.
    let ref_b2 = submit(&mut his, &net.referral("wijkteam-2", &b, BSN)).await;
    wait_delivered(&mut his, &ref_b2).await;
    let mut at_w2 = net.client("wijkteam-2", "k.bakker");
    let (referrals, _) = inbox(&mut at_w2, "?type=referral").await;
    assert_eq!(
        ids_and_senders(&referrals),
        [(ref_b.clone(), p.clone()), (ref_b2.clone(), p.clone())]
    );
    let (code, answer) = at_w2
        .post("/v1/messages", &net.feedback("practice-1", &ref_b, &b, BSN))
        .await
        .unwrap();
    assert_eq!(code, 202, "{answer}");
    let fb_b = str_of(&answer["id"]);
    wait_delivered(&mut at_w2, &fb_b).await;
    let (at_practice, _) = inbox(&mut his, "").await;
    assert_eq!(
        ids_and_senders(&at_practice),
        [(fb_b.clone(), net.identity("wijkteam-2"))]
    );
    assert_eq!(at_practice[0]["envelope"]["consent"]["id"], b.as_str());

    // Under A, wijkteam-1's mirror is withdrawn: its feedback is refused there.
    let mut fb_a = net.feedback("practice-1", &ref_a, &a, BSN);
    fb_a["id"] = json!("fb-under-a");
    let (code, answer) = at_w1.post("/v1/messages", &fb_a).await.unwrap();
    assert_eq!(code, 422, "{answer}");
    assert_eq!(answer["error"], "consent_withdrawn", "{answer}");
    let refused = audit_of(store(&w1), Event::MessageRefused, "fb-under-a");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0]
        .event
        .reason
        .as_deref()
        .is_some_and(|r| r.starts_with("consent_withdrawn")));
    assert_eq!(inbox_entries(store(&practice)), vec![fb_b]);

    practice.stop().await.unwrap();
    for gw in [w1, w2, w3] {
        gw.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wijkteam_that_is_down_holds_up_no_other_and_gets_its_messages_in_order_when_it_starts() {
    let mut net = Net::new(1, 2).await;
    net.take_down("wijkteam-2"); // its ports refuse connections
    let practice = net.start("practice-1").await;
    let w1 = net.start("wijkteam-1").await;
    let mut his = net.client("practice-1", "dr.jansen");

    let c1 = net.record_consent(&mut his, BSN, "wijkteam-1").await;
    let c2 = net.record_consent(&mut his, BSN, "wijkteam-2").await;
    let mut to_w2 = Vec::new();
    for _ in 0..3 {
        to_w2.push(submit(&mut his, &net.referral("wijkteam-2", &c2, BSN)).await);
    }
    let mut to_w1 = Vec::new();
    for _ in 0..3 {
        to_w1.push(submit(&mut his, &net.referral("wijkteam-1", &c1, BSN)).await);
    }

    // Those to wijkteam-1 are delivered while those to wijkteam-2 wait and are retried.
    for id in &to_w1 {
        wait_delivered(&mut his, id).await;
    }
    let mut at_w1 = net.client("wijkteam-1", "k.bakker");
    let (arrived, _) = inbox(&mut at_w1, "").await;
    let p = net.identity("practice-1");
    let in_order: Vec<_> = to_w1.iter().map(|id| (id.clone(), p.clone())).collect();
    assert_eq!(ids_and_senders(&arrived), in_order);
    let w2_port = net.node("wijkteam-2").spec.listener.port();
    for id in &to_w2 {
        assert_eq!(status(&mut his, id).await["status"], "queued");
        let waiting = wait_for_status(&mut his, id, "a failed attempt", |s| {
            s["attempts"].as_u64() >= Some(1)
        })
        .await;
        assert_eq!(waiting["status"], "queued", "{waiting}");
        let error = waiting["last_error"].as_str().unwrap_or_default();
        assert!(
            error.contains("connect") && error.contains(&format!(":{w2_port}")),
            "{waiting}"
        );
    }

    // wijkteam-2 comes up: its three arrive once each, in the order they were submitted.
    let w2 = net.start("wijkteam-2").await;
    for id in &to_w2 {
        wait_delivered(&mut his, id).await;
    }
    let (arrived, _) = inbox(&mut net.client("wijkteam-2", "k.bakker"), "").await;
    let in_order: Vec<_> = to_w2.iter().map(|id| (id.clone(), p.clone())).collect();
    assert_eq!(ids_and_senders(&arrived), in_order);
    let cursors: Vec<u64> = arrived
        .iter()
        .map(|m| str_of(&m["cursor"]).parse().unwrap())
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    assert_eq!(inbox_entries(store(&w2)), to_w2);
    for id in &to_w2 {
        assert_eq!(received_from(store(&w2), id), p);
    }
    assert_eq!(inbox_entries(store(&w1)), to_w1);

    practice.stop().await.unwrap();
    w1.stop().await.unwrap();
    w2.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_pages_through_two_senders_with_acknowledgements_in_between() {
    let mut net = Net::new(2, 1).await;
    let wijkteam = net.start("wijkteam-1").await;
    let practices = [net.start("practice-1").await, net.start("practice-2").await];
    let mut case_system = net.client("wijkteam-1", "k.bakker");
    let mut his = [
        net.client("practice-1", "dr.jansen"),
        net.client("practice-2", "dr.visser"),
    ];
    let consents = [
        net.record_consent(&mut his[0], BSN, "wijkteam-1").await,
        net.record_consent(&mut his[1], OTHER_BSN, "wijkteam-1")
            .await,
    ];
    let bsns = [BSN, OTHER_BSN];

    // Seven referrals, alternating practice-1 and practice-2, each delivered before the
    // next is sent: the receive order is this order.
    let mut sent = Vec::new();
    for n in 0..7 {
        let i = n % 2;
        let referral = net.referral("wijkteam-1", &consents[i], bsns[i]);
        let id = submit(&mut his[i], &referral).await;
        wait_delivered(&mut his[i], &id).await;
        sent.push((id, net.identity(&format!("practice-{}", i + 1))));
    }

    // Pages of three, acknowledging the first of each page before the next.
    let mut seen = Vec::new();
    let mut cursors = Vec::new();
    let mut acked = Vec::new();
    let mut query = "?limit=3".to_string();
    let mut pages = 0;
    loop {
        let (messages, next) = inbox(&mut case_system, &query).await;
        pages += 1;
        assert!(!messages.is_empty() && messages.len() <= 3, "{messages:?}");
        seen.extend(ids_and_senders(&messages));
        cursors.extend(
            messages
                .iter()
                .map(|m| str_of(&m["cursor"]).parse::<u64>().unwrap()),
        );
        if next.is_null() {
            break;
        }
        assert!(pages < 3, "a page after the seventh message: {next}");
        let (id, from) = ids_and_senders(&messages).remove(0);
        ack(&mut case_system, &from, &id).await;
        acked.push(id);
        query = format!("?limit=3&after={}", str_of(&next));
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, sent, "every message once, in receive order");
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    assert_eq!(acked, [sent[0].0.clone(), sent[3].0.clone()]);
    for id in &acked {
        let acks = audit_of(store(&wijkteam), Event::MessageAcknowledged, id);
        assert_eq!(acks.len(), 1, "{id}: {acks:?}");
    }

    // Filters: practice-2's unacknowledged messages (2nd and 6th; the 4th is acknowledged).
    let p2 = net.identity("practice-2");
    let (from_p2, next) = inbox(&mut case_system, &format!("?from={p2}")).await;
    assert_eq!(
        ids_and_senders(&from_p2),
        [sent[1].clone(), sent[5].clone()]
    );
    assert!(next.is_null());
    let (consultations, _) = inbox(&mut case_system, "?type=consultation").await;
    assert!(consultations.is_empty(), "{consultations:?}");
    let consultation = submit(
        &mut his[1],
        &json!({"type": "consultation", "to": "wijkteam-1",
                "body": {"question": "Hoe verwijs ik?", "child_age": 8}}),
    )
    .await;
    wait_delivered(&mut his[1], &consultation).await;
    let (consultations, _) = inbox(&mut case_system, "?type=consultation").await;
    assert_eq!(
        ids_and_senders(&consultations),
        [(consultation, p2.clone())]
    );
    let (referrals, _) = inbox(&mut case_system, &format!("?type=referral&from={p2}")).await;
    assert_eq!(
        ids_and_senders(&referrals),
        [sent[1].clone(), sent[5].clone()]
    );

    // A page size must be 1 to 1000.
    for bad in ["?limit=0", "?limit=abc"] {
        let (code, answer) = case_system.get(&format!("/v1/inbox{bad}")).await.unwrap();
        assert_eq!(code, 400, "{bad}: {answer}");
        assert_eq!(answer["error"], "invalid_field", "{bad}: {answer}");
        assert_eq!(answer["field"], "limit", "{bad}: {answer}");
    }

    for gw in practices {
        gw.stop().await.unwrap();
    }
    wijkteam.stop().await.unwrap();
}
