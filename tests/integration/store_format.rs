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

/// Rewrites a format-3 store's received messages as format 2 stored them: each envelope
/// under a signature over its own bytes (made here with the sender's key, naming its
/// certificate), no batch path, format version 2.
fn downgrade_to_format_2(dir: &std::path::Path, sender: &Credentials) {
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(sender.key_pem.as_bytes()).unwrap();
    let signer = wijkpoort::signing::Signer::from_key(&key)
        .unwrap()
        .for_certificate(&sender.cert_der());
    let db = sled::open(dir).unwrap();
    let received = db.open_tree("received").unwrap();
    for entry in received.iter() {
        let (k, v) = entry.unwrap();
        let mut record: serde_json::Value = serde_json::from_slice(&v).unwrap();
        let envelope = record["envelope"].as_str().unwrap().to_string();
        record["signature"] = json!(signer.sign_encoded(envelope.as_bytes()).unwrap());
        record.as_object_mut().unwrap().remove("batch");
        received
            .insert(k, serde_json::to_vec(&record).unwrap())
            .unwrap();
    }
    db.open_tree("meta")
        .unwrap()
        .insert(FORMAT_KEY, &2u32.to_be_bytes())
        .unwrap();
    db.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_2_store_is_migrated_and_its_per_message_signatures_still_prove() {
    let (mut setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let id = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &id).await;
    wijkteam.stop().await.unwrap();
    practice.stop().await.unwrap();

    let dir = setup.store_dir(Role::Wijkteam);
    downgrade_to_format_2(&dir, &setup.credentials(Role::Practice));
    let listeners = Listeners {
        local_api: bind("127.0.0.1:0".parse().unwrap()).await.unwrap(),
        listener: bind("127.0.0.1:0".parse().unwrap()).await.unwrap(),
    };
    let refused =
        RunningGateway::start(setup.config(Role::Wijkteam), listeners, Durability::Synced)
            .await
            .err()
            .expect("a format-2 store is refused");
    assert!(
        refused.to_string().contains("wijkpoort store migrate"),
        "{refused}"
    );

    let done = wijkpoort::migrate::migrate(&setup.config(Role::Wijkteam)).unwrap();
    assert_eq!((done.from_version, done.signed_alone), (2, 1), "{done:?}");
    let config = setup.config_path(Role::Wijkteam).display().to_string();
    let code =
        wijkpoort::audit::cli::run_words(["--config", &config, "prove", "--message", &id]).await;
    assert_eq!(code, 0, "the envelope signed on its own still proves");

    // Started on the migrated store, new messages arrive under batch signatures.
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let later = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &later).await;
    let kept = wijkpoort::inbox::get(store(&wijkteam), &DEV_PRACTICE_ID.into(), &later)
        .unwrap()
        .unwrap();
    assert!(kept.batch.is_some());
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}
