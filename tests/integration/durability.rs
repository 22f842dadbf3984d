//! Nothing accepted is lost, nothing is delivered twice: across a peer that is down,
//! a gateway killed with SIGKILL, and a clean stop on SIGTERM.

use wijkpoort::audit::Event;
use wijkpoort::dev::pki::{DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};
use wijkpoort::store::{Store, T};

use crate::util::*;

/// Asserts that the wijkteam stored each of `ids` exactly once, and nothing else.
fn assert_received_exactly_once(store: &wijkpoort::store::Store, ids: &[String]) {
    let mut entries = inbox_entries(store);
    entries.sort();
    let mut expected = ids.to_vec();
    expected.sort();
    assert_eq!(entries, expected, "one inbox entry per message, no more");
    for id in ids {
        assert_eq!(
            audit_count(store, Event::MessageReceived, id),
            1,
            "message {id} received more than once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_submitted_while_the_wijkteam_is_down_stays_queued_and_is_delivered_once_it_starts(
) {
    let mut setup = Setup::new().await;
    setup.release(Role::Wijkteam); // its port now refuses connections
    let practice = setup.start(Role::Practice).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");

    let id = submit_referrals(&mut his, 1).await.remove(0);

    // The relay keeps trying: still queued, attempts counted, the reason recorded.
    let waiting = wait_for_status(&mut his, &id, "two failed attempts", |s| {
        s["attempts"].as_u64() >= Some(2)
    })
    .await;
    assert_eq!(waiting["status"], "queued", "{waiting}");
    let last_error = waiting["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("connect"), "{waiting}");
    let before = waiting["attempts"].as_u64().unwrap();
    let later = wait_for_status(&mut his, &id, "more attempts", |s| {
        s["attempts"].as_u64() > Some(before)
    })
    .await;
    assert_eq!(later["status"], "queued");

    // The wijkteam comes up on the port the practice is configured with.
    let wijkteam = setup.start(Role::Wijkteam).await;
    let delivered = wait_delivered(&mut his, &id).await;
    assert!(delivered["receipt"].is_object(), "{delivered}");
    assert_received_exactly_once(store(&wijkteam), std::slice::from_ref(&id));
    assert_eq!(
        wijkpoort::outbox::queued_for_peer(store(&practice), "wijkteam"),
        0
    );

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_practice_killed_with_a_full_outbox_delivers_everything_exactly_once_after_restart() {
    let mut setup = Setup::new().await;
    setup.release(Role::Wijkteam);
    let mut practice = setup.spawn(Role::Practice, 1).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");

    let ids = submit_referrals(&mut his, 5).await;
    // The relay has tried and failed: the outbox is on disk, not delivered.
    let last = ids.last().unwrap().clone();
    wait_for_status(&mut his, &ids[0], "a failed attempt", |s| {
        s["attempts"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(status(&mut his, &last).await["status"], "queued");

    practice.kill9();
    let mut practice = setup.spawn(Role::Practice, 2).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    // Still there after the kill, still queued.
    for id in &ids {
        assert_eq!(status(&mut his, id).await["status"], "queued");
    }
    let wijkteam = setup.start(Role::Wijkteam).await;

    for id in &ids {
        wait_delivered(&mut his, id).await;
    }
    assert_received_exactly_once(store(&wijkteam), &ids);

    practice.signal("TERM");
    assert!(practice.wait_exit().await.success(), "{}", practice.log());
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_practice_killed_in_the_middle_of_delivering_resends_without_duplicates() {
    let mut setup = Setup::new().await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut practice = setup.spawn(Role::Practice, 1).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");

    // Kill it while the relay is busy: right after the last submission is accepted.
    let ids = submit_referrals(&mut his, 20).await;
    practice.kill9();
    let delivered_before_restart = inbox_entries(store(&wijkteam)).len();

    let mut practice = setup.spawn(Role::Practice, 2).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    for id in &ids {
        wait_delivered(&mut his, id).await;
    }
    assert_received_exactly_once(store(&wijkteam), &ids);
    eprintln!(
        "{delivered_before_restart} of {} arrived before the kill",
        ids.len()
    );

    practice.signal("TERM");
    assert!(practice.wait_exit().await.success(), "{}", practice.log());
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_wijkteam_stored_just_before_the_practice_was_killed_is_not_stored_twice() {
    let mut setup = Setup::new().await;
    setup.release(Role::Wijkteam);
    let mut practice = setup.spawn(Role::Practice, 1).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let id = submit_referrals(&mut his, 1).await.remove(0);
    practice.kill9();

    // The practice's first attempt reached the wijkteam, but the practice died before
    // it read the receipt: the wijkteam holds the message, the practice's outbox too.
    let sent = {
        let store = wijkpoort::store::Store::open_read_only_with_key(
            &setup.store_dir(Role::Practice),
            setup.config(Role::Practice).data_key.clone(),
        )
        .unwrap();
        let opened = |t: T| {
            let stored = store.tree(t).get(id.as_bytes()).unwrap().unwrap();
            store.open_value(t, id.as_bytes(), &stored).unwrap()
        };
        let envelope = opened(T::SentEnvelopes);
        wijkpoort::outbox::decode(&opened(T::Sent), Some(&envelope)).unwrap()
    };
    assert_eq!(sent.status, wijkpoort::outbox::Status::Queued);
    let wijkteam = setup.start(Role::Wijkteam).await;
    // Not yet signed: the relay signs each batch as it sends it; here, as it would have.
    assert_eq!(sent.signature, None);
    let first = answer_for_one(
        relay_batch(
            &setup,
            Role::Wijkteam,
            &setup.credentials(Role::Practice),
            (DEV_PRACTICE_ID, DEV_WIJKTEAM_ID),
            &[sent.envelope.as_bytes()],
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(first.status, 200, "{:?}", first.body);

    // Restarted, the practice sends it again and is answered with the first receipt.
    let mut practice = setup.spawn(Role::Practice, 2).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let delivered = wait_delivered(&mut his, &id).await;
    assert_eq!(delivered["receipt"], first.body);
    assert_received_exactly_once(store(&wijkteam), std::slice::from_ref(&id));

    practice.signal("TERM");
    assert!(practice.wait_exit().await.success(), "{}", practice.log());
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_cleanly_on_sigterm_and_its_store_reopens_with_the_queue_intact() {
    let mut setup = Setup::new().await;
    setup.release(Role::Wijkteam);
    let mut child = setup.spawn(Role::Practice, 1).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let id = submit_referrals(&mut his, 1).await.remove(0);
    drop(his); // an idle keep-alive connection must not hold up the stop

    child.signal("TERM");
    let exit = child.wait_exit().await;
    assert_eq!(exit.code(), Some(0), "{}", child.log());
    assert!(child.log().contains("gateway stopped"), "{}", child.log());

    // The store opens again; its audit log is an intact chain that ends with the
    // stop, sealed by a checkpoint at its last record.
    {
        let config = setup.config(Role::Practice);
        let store = open_store(&setup.store_dir(Role::Practice), &config);
        let records = audit_records(&store);
        let mut prev = wijkpoort::audit::GENESIS_HASH.to_string();
        for r in &records {
            assert_eq!(
                r.prev_hash, prev,
                "record {} links to its predecessor",
                r.seq
            );
            assert_eq!(r.compute_hash(), r.hash, "record {} is intact", r.seq);
            prev = r.hash.clone();
        }
        let last = records.last().unwrap();
        assert_eq!(last.event.event, Event::GatewayStopped);
        let (checkpoint, _) = store.tree(T::Checkpoints).last().unwrap().unwrap();
        assert_eq!(checkpoint.as_ref(), last.seq.to_be_bytes());
        assert_eq!(wijkpoort::outbox::queued_for_peer(&store, "wijkteam"), 1);
        store.close();
    }

    // And a gateway on it carries on where the stopped one left off.
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    wait_delivered(&mut his, &id).await;
    assert_received_exactly_once(store(&wijkteam), std::slice::from_ref(&id));
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_not_delivered_within_the_maximum_age_expires_and_is_never_sent() {
    let mut setup = Setup::new().await;
    let config = setup.config_path(Role::Practice);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[relay]\n", "[relay]\nmax_age_secs = 1\n"),
    )
    .unwrap();
    setup.release(Role::Wijkteam);
    let practice = setup.start(Role::Practice).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");

    let id = submit_referrals(&mut his, 1).await.remove(0);
    let expired = wait_for_status(&mut his, &id, "expiry", |s| s["status"] != "queued").await;
    assert_eq!(expired["status"], "expired", "{expired}");
    assert!(
        expired["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("maximum age"),
        "{expired}"
    );
    assert_eq!(audit_count(store(&practice), Event::MessageExpired, &id), 1);
    assert_eq!(
        wijkpoort::outbox::queued_for_peer(store(&practice), "wijkteam"),
        0
    );

    // The wijkteam comes up: the expired message does not follow. A referral submitted
    // after it came up is delivered (within the maximum age of 1 s: it waits for
    // nothing), so the relay has had a round with the wijkteam up; only that referral
    // arrived.
    let wijkteam = setup.start(Role::Wijkteam).await;
    let later = submit_referrals(&mut his, 1).await.remove(0);
    wait_delivered(&mut his, &later).await;
    assert_eq!(received_ids(store(&wijkteam)), vec![later]);
    assert_eq!(status(&mut his, &id).await["status"], "expired");

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

/// The relay commits a round's outcomes with the next round's admission; a gateway
/// stopped just after a delivery must still have recorded it, with its receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_practice_stopped_right_after_a_delivery_has_recorded_it() {
    let (setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let ids = submit_referrals(&mut his, 5).await;
    // Stop the practice the moment the wijkteam has applied the batch — before its
    // fdatasync and its answer — so that the stop lands while the practice's relay
    // waits for that answer, and the outcomes can only be recorded on the way out.
    let store = store(&wijkteam).clone();
    let started = std::time::Instant::now();
    while !ids.iter().all(|id| {
        store
            .get(
                T::Received,
                &[DEV_PRACTICE_ID.as_bytes(), &[0], id.as_bytes()].concat(),
            )
            .ok()
            .flatten()
            .is_some()
    }) {
        assert!(
            started.elapsed() < WAIT,
            "the wijkteam never had every referral"
        );
        tokio::task::yield_now().await;
    }
    practice.stop().await.unwrap();

    let config = setup.config(Role::Practice);
    let dir = setup.store_dir(Role::Practice);
    let store = wait_until("the stopped practice's store opens", || {
        let opened = Store::open(&dir, config.signer.clone(), config.data_key.clone()).ok();
        async move { opened }
    })
    .await;
    for id in &ids {
        let sent = wijkpoort::outbox::get(&store, id).unwrap().unwrap();
        assert_eq!(sent.status.as_str(), "delivered", "{id}");
        assert!(sent.receipt.is_some(), "{id}");
    }
    assert_eq!(wijkpoort::outbox::queued_for_peer(&store, "wijkteam"), 0);
    store.close();
    wijkteam.stop().await.unwrap();
}
