//! The store records its format version: a store of format 1 is refused at start with a
//! message naming `wijkpoort store migrate`; after the migration (to format 2, plaintext)
//! it is refused naming `wijkpoort store compact`, which seals it (format 3) into a fresh
//! directory; then every message received before is found by its sender and id.

use serde_json::json;
use wijkpoort::dev::pki::DEV_PRACTICE_ID;
use wijkpoort::gateway::{bind, Listeners, RunningGateway};
use wijkpoort::store::{Durability, FORMAT_KEY};

use crate::util::*;

/// Rewrites a sealed store as a format-1 store would look: plaintext, received messages
/// keyed by id alone, no format version.
fn downgrade_to_format_1(dir: &std::path::Path, key: std::sync::Arc<wijkpoort::seal::DataKey>) {
    crate::at_rest::unseal_to_format_2(dir, key);
    let db = retry_open(|| sled::open(dir));
    let received = db.open_tree("received").unwrap();
    let inbox = db.open_tree("inbox").unwrap();
    for entry in received.iter() {
        let (k, v) = entry.unwrap();
        let id = k.split(|b| *b == 0).nth(1).unwrap().to_vec();
        received.remove(&k).unwrap();
        received.insert(id, v).unwrap();
    }
    for entry in inbox.iter() {
        let (k, v) = entry.unwrap();
        let id = v.split(|b| *b == 0).nth(1).unwrap().to_vec();
        inbox.insert(k, id).unwrap();
    }
    db.open_tree("meta").unwrap().remove(FORMAT_KEY).unwrap();
    db.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_store_is_refused_until_migrated_and_keeps_its_messages() {
    let (mut setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let id = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &id).await;
    wijkteam.stop().await.unwrap();
    practice.stop().await.unwrap();

    let dir = setup.store_dir(Role::Wijkteam);
    downgrade_to_format_1(&dir, setup.config(Role::Wijkteam).data_key.clone());

    let listeners = Listeners {
        local_api: bind("127.0.0.1:0".parse().unwrap()).await.unwrap(),
        listener: bind("127.0.0.1:0".parse().unwrap()).await.unwrap(),
    };
    let refused =
        RunningGateway::start(setup.config(Role::Wijkteam), listeners, Durability::Synced)
            .await
            .err()
            .expect("a format-1 store is refused");
    let text = refused.to_string();
    assert!(text.contains("older wijkpoort"), "{text}");
    assert!(text.contains("wijkpoort store migrate"), "{text}");

    let done = wijkpoort::migrate::migrate(&setup.config(Role::Wijkteam)).unwrap();
    assert_eq!(done.from_version, 1);
    assert_eq!(done.received_messages, 1);
    let again = wijkpoort::migrate::migrate(&setup.config(Role::Wijkteam)).unwrap_err();
    assert!(again.to_string().contains("store compact"), "{again}");

    let listeners = Listeners {
        local_api: bind("127.0.0.1:0".parse().unwrap()).await.unwrap(),
        listener: bind("127.0.0.1:0".parse().unwrap()).await.unwrap(),
    };
    let refused =
        RunningGateway::start(setup.config(Role::Wijkteam), listeners, Durability::Synced)
            .await
            .err()
            .expect("a plaintext format-2 store is refused");
    let text = refused.to_string();
    assert!(text.contains("wijkpoort store compact"), "{text}");
    let sealed = dir.with_extension("sealed");
    let key = setup.config(Role::Wijkteam).data_key.clone();
    let done = retry_open(|| wijkpoort::compact::compact(&dir, &sealed, key.clone(), None));
    assert_eq!(done.from_version, 2);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::rename(&sealed, &dir).unwrap();

    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut case_system = setup.client(Role::Wijkteam, "j.bakker");
    let (code, inbox) = case_system.get("/v1/inbox").await.unwrap();
    assert_eq!(code, 200, "{inbox}");
    assert_eq!(inbox["messages"][0]["id"], id.as_str());
    assert_eq!(inbox["messages"][0]["from"], DEV_PRACTICE_ID);
    let (code, _) = case_system
        .post(&format!("/v1/inbox/{DEV_PRACTICE_ID}/{id}/ack"), &json!({}))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let (_, inbox) = case_system.get("/v1/inbox").await.unwrap();
    assert_eq!(inbox["messages"].as_array().unwrap().len(), 0);
    wijkteam.stop().await.unwrap();
}
