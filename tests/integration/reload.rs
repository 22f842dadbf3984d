//! A running gateway reloads its configuration — on SIGHUP, `POST /v1/reload` or
//! `wijkpoort reload` — through one path that validates the whole new file first: a
//! good file swaps (a peer added starts being served, a peer removed keeps its queued
//! messages), a broken one is refused with one line saying why and the running
//! configuration keeps working.

use std::path::Path;

use serde_json::json;
use wijkpoort::audit::Event;

use crate::util::*;

/// The config text without its `[[peers]]` entries.
fn without_peers(text: &str) -> String {
    let (head, rest) = text.split_once("[[peers]]").expect("a peer");
    let auditors = rest.split_once("[[auditors]]").expect("an auditor").1;
    format!("{head}[[auditors]]{auditors}")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Posts `/v1/reload` as the practice's operator.
async fn reload(setup: &Setup) -> (u16, serde_json::Value) {
    setup
        .client(Role::Practice, "beheerder")
        .post("/v1/reload", &json!({}))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_added_by_a_reload_is_served_and_a_broken_file_changes_nothing() {
    let mut setup = Setup::new().await;
    let path = setup.config_path(Role::Practice);
    let with_peer = std::fs::read_to_string(&path).unwrap();
    write(&path, &without_peers(&with_peer));
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;

    // Not a peer yet: the submission is refused.
    let (code, answer) = his
        .post("/v1/messages", &referral_submission(&consent))
        .await
        .unwrap();
    assert_eq!(
        (code, answer["error"].as_str()),
        (422, Some("unknown_peer"))
    );

    // The peer is added: the reload says so, and a referral is delivered.
    write(&path, &with_peer);
    let (code, answer) = reload(&setup).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["changes"]["peers_added"], json!(["wijkteam"]));
    let id = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &id).await;
    assert_eq!(
        audit_count(store(&wijkteam), Event::MessageReceived, &id),
        1
    );

    // A broken file is refused with the reason, and the running configuration stays.
    write(&path, &with_peer.replace("[[peers]]", "[[peers]\n"));
    let (code, answer) = reload(&setup).await;
    assert_eq!(code, 422, "{answer}");
    assert_eq!(answer["error"], "reload_refused");
    let reason = answer["message"].as_str().unwrap();
    assert!(reason.contains("not valid wijkpoort TOML"), "{reason}");
    let id = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &id).await;

    // What cannot change while running is refused by name.
    let other_port = with_peer.replace(
        &format!("listen = \"{}\"", setup.listener_addr(Role::Practice)),
        "listen = \"127.0.0.1:1\"",
    );
    assert_ne!(other_port, with_peer);
    write(&path, &other_port);
    let (code, answer) = reload(&setup).await;
    assert_eq!(code, 422, "{answer}");
    let reason = answer["message"].as_str().unwrap();
    assert!(reason.contains("listener.listen"), "{reason}");
    assert!(reason.contains("restart"), "{reason}");

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_peer_keeps_its_queued_messages_and_gets_them_when_it_returns() {
    let mut setup = Setup::new().await;
    let path = setup.config_path(Role::Practice);
    let with_peer = std::fs::read_to_string(&path).unwrap();
    setup.release(Role::Wijkteam);
    let practice = setup.start(Role::Practice).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let id = submit(&mut his, &referral_submission(&consent)).await;
    // The wijkteam is down: the referral waits, with a failed attempt.
    wait_for_status(&mut his, &id, "a failed attempt", |s| {
        s["attempts"].as_u64() >= Some(1)
    })
    .await;

    write(&path, &without_peers(&with_peer));
    let (code, answer) = reload(&setup).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["changes"]["peers_removed"], json!(["wijkteam"]));
    let kept = status(&mut his, &id).await;
    assert_eq!(kept["status"], "queued", "{kept}");
    assert_eq!(kept["peer"], "wijkteam");

    // The peer returns, configured again: the waiting referral is delivered, once.
    let wijkteam = setup.start(Role::Wijkteam).await;
    write(&path, &with_peer);
    let (code, answer) = reload(&setup).await;
    assert_eq!(code, 200, "{answer}");
    wait_delivered(&mut his, &id).await;
    assert_eq!(
        audit_count(store(&wijkteam), Event::MessageReceived, &id),
        1
    );

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_running_daemon_and_a_broken_file_is_one_log_line() {
    let mut setup = Setup::new().await;
    let path = setup.config_path(Role::Practice);
    let with_peer = std::fs::read_to_string(&path).unwrap();
    write(&path, &without_peers(&with_peer));
    let daemon = setup.spawn(Role::Practice, 1).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;

    write(&path, &with_peer.replace("[[peers]]", "[[peers]\n"));
    daemon.signal("HUP");
    let refused = wait_until("the refused reload in the log", || {
        let log = daemon.log();
        async move {
            log.lines()
                .find(|l| l.contains("reload refused"))
                .map(str::to_string)
        }
    })
    .await;
    assert!(refused.contains("not valid wijkpoort TOML"), "{refused}");

    write(&path, &with_peer);
    daemon.signal("HUP");
    wait_until("the reload in the log", || {
        let log = daemon.log();
        async move { log.contains("configuration reloaded").then_some(()) }
    })
    .await;
    let id = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &id).await;

    daemon.signal("TERM");
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_renamed_by_a_reload_is_still_told_of_a_withdrawal() {
    let mut setup = Setup::new().await;
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let referral = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &referral).await;

    // The operator renames the peer; who was told is kept by organisation identifier.
    let path = setup.config_path(Role::Practice);
    let text = std::fs::read_to_string(&path).unwrap();
    write(
        &path,
        &text.replace("name = \"wijkteam\"", "name = \"wijkteam-utrecht\""),
    );
    let (code, answer) = reload(&setup).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer["changes"]["peers_added"],
        json!(["wijkteam-utrecht"])
    );
    assert_eq!(answer["changes"]["peers_removed"], json!(["wijkteam"]));

    let (code, answer) = his
        .post(
            &format!("/v1/consents/{consent}/withdraw"),
            &json!({"reason": "op verzoek"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{answer}");
    let updates = answer["consent_updates"].as_array().unwrap().clone();
    assert_eq!(updates.len(), 1, "{answer}");
    let update = updates[0].as_str().unwrap().to_string();
    let delivered = wait_delivered(&mut his, &update).await;
    assert_eq!(delivered["peer"], "wijkteam-utrecht");
    assert_eq!(
        audit_count(store(&wijkteam), Event::MessageReceived, &update),
        1
    );
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}
