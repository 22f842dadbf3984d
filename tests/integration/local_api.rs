//! The local API lets in only the bearer of the token, requires a named user for
//! calls that change state, and refuses invalid submissions naming the field, before
//! anything is queued.

use hyper::Method;
use serde_json::json;
use wijkpoort::audit::{Actor, Event};
use wijkpoort::store::T;

use crate::util::*;

/// The practice gateway alone (its peer down: nothing here needs delivery).
async fn practice() -> (Setup, wijkpoort::RunningGateway) {
    let mut setup = Setup::new().await;
    setup.release(Role::Wijkteam);
    let practice = setup.start(Role::Practice).await;
    (setup, practice)
}

fn body() -> Vec<u8> {
    serde_json::to_vec(&referral_submission("consent-unknown")).unwrap()
}

fn nothing_queued(practice: &wijkpoort::RunningGateway) {
    let store = store(practice);
    assert_eq!(store.tree(T::Sent).len(), 0, "sent tree");
    assert_eq!(store.tree(T::Outbox).len(), 0, "outbox tree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_token_is_refused_with_401() {
    let (setup, practice) = practice().await;
    let mut raw = setup.client(Role::Practice, "unused");

    for (method, path) in [
        (Method::POST, "/v1/messages"),
        (Method::GET, "/v1/inbox"),
        (Method::GET, "/v1/messages/anything"),
    ] {
        let (code, answer) = raw
            .call_raw(
                method.clone(),
                path,
                &[
                    ("x-wijkpoort-user", "dr.jansen"),
                    ("content-type", "application/json"),
                ],
                body(),
            )
            .await
            .unwrap();
        assert_eq!(code, 401, "{method} {path}: {answer}");
        assert_eq!(answer["error"], "unauthorised");
    }
    nothing_queued(&practice);
    practice.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_a_wrong_token_is_refused_with_401() {
    let (setup, practice) = practice().await;
    let mut wrong = wijkpoort::client::LocalApiClient::new(
        setup.api_addr(Role::Practice),
        "not-the-token-not-the-token",
        "dr.jansen",
    );
    // The wijkteam's token is a real token, but not this gateway's.
    let mut other_gateways = wijkpoort::client::LocalApiClient::new(
        setup.api_addr(Role::Practice),
        setup.token(Role::Wijkteam),
        "dr.jansen",
    );

    for client in [&mut wrong, &mut other_gateways] {
        let (code, answer) = client
            .post("/v1/messages", &referral_submission("consent-unknown"))
            .await
            .unwrap();
        assert_eq!(code, 401, "{answer}");
        let (code, _) = client.get("/v1/inbox").await.unwrap();
        assert_eq!(code, 401);
    }
    // A non-Bearer scheme with the right token is no better.
    let mut raw = setup.client(Role::Practice, "unused");
    let basic = format!("Basic {}", setup.token(Role::Practice));
    let (code, _) = raw
        .call_raw(
            Method::GET,
            "/v1/inbox",
            &[("authorization", basic.as_str())],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(code, 401);

    // The right token works, so the 401s above were about the token.
    let mut right = setup.client(Role::Practice, "dr.jansen");
    let (code, _) = right.get("/v1/inbox").await.unwrap();
    assert_eq!(code, 200);

    nothing_queued(&practice);
    practice.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_without_the_user_header_is_refused_with_400_naming_the_header() {
    let (setup, practice) = practice().await;
    let mut raw = setup.client(Role::Practice, "unused");
    let auth = format!("Bearer {}", setup.token(Role::Practice));

    for user in [None, Some(""), Some("   ")] {
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        if let Some(u) = user {
            headers.push(("x-wijkpoort-user", u));
        }
        let (code, answer) = raw
            .call_raw(Method::POST, "/v1/messages", &headers, body())
            .await
            .unwrap();
        assert_eq!(code, 400, "user {user:?}: {answer}");
        assert_eq!(answer["error"], "missing_user");
        assert_eq!(answer["field"], "X-Wijkpoort-User");
    }
    nothing_queued(&practice);
    practice.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_with_an_invalid_bsn_is_refused_with_400_naming_subject_bsn_and_audited() {
    let (setup, practice) = practice().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let mut submission = referral_submission(&consent);
    submission["subject"]["bsn"] = json!("123456789"); // fails the elfproef

    let (code, answer) = his.post("/v1/messages", &submission).await.unwrap();

    assert_eq!(code, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_field");
    assert_eq!(answer["field"], "subject.bsn");
    nothing_queued(&practice);
    let store = store(&practice);
    let record = wait_for_refusal(store, Event::MessageRefused, "invalid_field").await;
    assert_eq!(
        record.event.actor,
        Actor::User {
            id: "dr.jansen".into()
        }
    );
    // The audit log never holds the BSN, valid or not.
    for r in audit_records(store) {
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("123456789"), "{text}");
    }
    practice.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_submission_is_accepted_only_once_it_is_durably_queued() {
    let (setup, practice) = practice().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");

    let id = submit_referrals(&mut his, 1).await.remove(0);

    // By the time the 202 arrived the message, its queue entry and its audit records
    // were committed.
    let store = store(&practice);
    let sent = wijkpoort::outbox::get(store, &id).unwrap().unwrap();
    assert_eq!(sent.submitted_by, "dr.jansen");
    assert_eq!(wijkpoort::outbox::queued_for_peer(store, "wijkteam"), 1);
    assert_eq!(audit_count(store, Event::MessageAccepted, &id), 1);
    assert_eq!(audit_count(store, Event::MessageQueued, &id), 1);
    let s = status(&mut his, &id).await;
    assert_eq!(s["status"], "queued");
    assert_eq!(s["type"], "referral");

    practice.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_the_status_of_an_unknown_message_is_a_404() {
    let (setup, practice) = practice().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let (code, answer) = his.get("/v1/messages/msg-unknown").await.unwrap();
    assert_eq!(code, 404, "{answer}");
    assert_eq!(answer["error"], "not_found");
    let (code, _) = his
        .post("/v1/inbox/00000001003214345000/msg-unknown/ack", &json!({}))
        .await
        .unwrap();
    assert_eq!(code, 404);
    practice.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_without_a_token() {
    let (setup, practice) = practice().await;
    let mut raw = setup.client(Role::Practice, "unused");
    let (code, answer) = raw
        .call_raw(Method::GET, "/healthz", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(answer["status"], "ok");
    practice.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_submission_is_refused_with_400_without_its_content_in_the_audit_log() {
    let (setup, practice) = practice().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let mut submission = referral_submission("consent-unknown");
    submission["type"] = json!(BSN); // not a message type; serde would quote it

    let (code, answer) = his.post("/v1/messages", &submission).await.unwrap();

    assert_eq!(code, 400, "{answer}");
    assert_eq!(answer["error"], "malformed");
    nothing_queued(&practice);
    let store = store(&practice);
    wait_for_refusal(store, Event::MessageRefused, "malformed").await;
    for r in audit_records(store) {
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains(BSN), "the audit log holds a BSN: {text}");
    }
    practice.stop().await.unwrap();
}

/// `/v1/stats` says where the group commits' time went (what the bench reports per
/// group): each phase's total grows as messages are committed, and together they are
/// no more than the time that passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_split_the_commits_time_into_its_phases() {
    let started = std::time::Instant::now();
    let (setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let phases = [
        "commit_jobs_ns",
        "commit_transaction_ns",
        "commit_flush_ns",
        "commit_fdatasync_ns",
    ];
    let read = |v: &serde_json::Value, k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("{k} is not a count: {v}"))
    };
    let (code, before) = his.get("/v1/stats").await.unwrap();
    assert_eq!(code, 200, "{before}");
    for id in submit_referrals(&mut his, 3).await {
        wait_delivered(&mut his, &id).await;
    }
    let (_, after) = his.get("/v1/stats").await.unwrap();
    for k in phases {
        assert!(
            read(&after, k) > read(&before, k),
            "{k} did not grow: {after}"
        );
    }
    let total: u64 = phases.iter().map(|k| read(&after, k)).sum();
    let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap();
    assert!(
        total <= elapsed,
        "{total} ns of commits in {elapsed} ns: {after}"
    );
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

/// `/v1/stats` counts from a counter kept with each received message and from the head
/// of the audit chain, not by walking the store; a store from before the counter is
/// counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_received_messages_and_audit_records() {
    let (setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let mut case_system = setup.client(Role::Wijkteam, "k.bakker");
    let stats = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(u64::MAX);

    for id in submit_referrals(&mut his, 3).await {
        wait_delivered(&mut his, &id).await;
    }
    let (code, s) = case_system.get("/v1/stats").await.unwrap();
    assert_eq!(code, 200, "{s}");
    assert_eq!(stats(&s, "received_total"), 3, "{s}");
    assert_eq!(stats(&s, "inbox_unacknowledged"), 3, "{s}");
    let store = store(&wijkteam);
    assert_eq!(
        stats(&s, "audit_records"),
        audit_records(store).len() as u64,
        "{s}"
    );

    // As if the store had been written before the counter existed.
    store
        .commit(|tx| {
            tx.remove(T::Meta, b"received_total".to_vec());
            Ok::<(), wijkpoort::store::StoreError>(())
        })
        .await
        .unwrap();
    let (_, s) = case_system.get("/v1/stats").await.unwrap();
    assert_eq!(stats(&s, "received_total"), 3, "{s}");
    let id = submit_referrals(&mut his, 1).await.remove(0);
    wait_delivered(&mut his, &id).await;
    let (_, s) = case_system.get("/v1/stats").await.unwrap();
    assert_eq!(stats(&s, "received_total"), 4, "{s}");

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}
