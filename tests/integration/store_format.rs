//! The store records its format version: a store of format 1 is refused at start with a
//! message naming `wijkpoort store migrate` and then `wijkpoort store compact`; after the
//! migration (to format 3: batch signatures, still plaintext) it is refused naming
//! `wijkpoort store compact` alone, which seals it (this build's format) into a fresh directory;
//! then every message received before is found by its sender and id. An envelope a
//! format-2 store kept under a signature over its own bytes still proves at format 3
//! and, sealed, at this build's format.

use serde_json::json;
use wijkpoort::dev::pki::DEV_PRACTICE_ID;
use wijkpoort::gateway::{bind, Listeners, RunningGateway};
use wijkpoort::migrate::MIGRATES_TO;
use wijkpoort::store::{Durability, FORMAT_KEY, FORMAT_VERSION};

use crate::util::*;

/// Rewrites a sealed store as a format-1 store would look: plaintext, received messages
/// keyed by id alone, no format version.
fn downgrade_to_format_1(dir: &std::path::Path, key: std::sync::Arc<wijkpoort::seal::DataKey>) {
    crate::at_rest::unseal_to_plaintext(dir, key, 2);
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

/// The format version recorded in the stopped store at `dir`.
fn stored_format(dir: &std::path::Path) -> u32 {
    let db = retry_open(|| sled::open(dir));
    let v = db
        .open_tree("meta")
        .unwrap()
        .get(FORMAT_KEY)
        .unwrap()
        .unwrap();
    u32::from_be_bytes(v.as_ref().try_into().unwrap())
}

/// Why a gateway on `role`'s store does not start.
async fn refused_start(setup: &Setup, role: Role) -> String {
    let listeners = Listeners {
        local_api: bind("127.0.0.1:0".parse().unwrap()).await.unwrap(),
        listener: bind("127.0.0.1:0".parse().unwrap()).await.unwrap(),
    };
    RunningGateway::start(setup.config(role), listeners, Durability::Synced)
        .await
        .err()
        .expect("the store is refused")
        .to_string()
}

/// Seals `role`'s stopped store with `wijkpoort store compact` (the command, as an
/// operator runs it) into a fresh directory that then takes its place; the format it
/// was in.
fn compact_in_place_of(setup: &Setup, role: Role) -> u32 {
    let dir = setup.store_dir(role);
    let from = stored_format(&dir);
    let sealed = dir.with_extension("sealed");
    let key_file = setup.kit.dir.join(format!("{}.datakey", role.name()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wijkpoort"))
        .args(["store", "compact", "--from"])
        .arg(&dir)
        .arg("--to")
        .arg(&sealed)
        .arg("--data-key")
        .arg(&key_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("(format {from}) copied into")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("(format {FORMAT_VERSION}): ")),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::rename(&sealed, &dir).unwrap();
    assert_eq!(stored_format(&dir), FORMAT_VERSION);
    from
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

    // Format 1: migrate first, then compact.
    let text = refused_start(&setup, Role::Wijkteam).await;
    assert!(text.contains("older wijkpoort"), "{text}");
    assert!(text.contains("store format 1"), "{text}");
    let migrate = text.find("wijkpoort store migrate").expect(&text);
    let compact = text.find("wijkpoort store compact").expect(&text);
    assert!(migrate < compact, "migrate, then compact: {text}");

    let done = wijkpoort::migrate::migrate(&setup.config(Role::Wijkteam)).unwrap();
    assert_eq!(done.from_version, 1);
    assert_eq!(done.received_messages, 1);
    assert_eq!(stored_format(&dir), MIGRATES_TO);
    let again = wijkpoort::migrate::migrate(&setup.config(Role::Wijkteam)).unwrap_err();
    assert!(again.to_string().contains("store compact"), "{again}");

    // Format 3 is still plaintext: refused, naming compact alone.
    let text = refused_start(&setup, Role::Wijkteam).await;
    assert!(text.contains("store format 3"), "{text}");
    assert!(text.contains("wijkpoort store compact"), "{text}");
    assert!(!text.contains("store migrate"), "{text}");
    assert_eq!(compact_in_place_of(&setup, Role::Wijkteam), MIGRATES_TO);

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

/// Rewrites a sealed store as format 2 stored it: plaintext, each received envelope
/// under a signature over its own bytes (made here with the sender's key, naming its
/// certificate), no batch path, format version 2.
fn downgrade_to_format_2(
    dir: &std::path::Path,
    key: std::sync::Arc<wijkpoort::seal::DataKey>,
    sender: &Credentials,
) {
    use rustls::pki_types::pem::PemObject;
    crate::at_rest::unseal_to_plaintext(dir, key, 2);
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(sender.key_pem.as_bytes()).unwrap();
    let signer = wijkpoort::signing::Signer::from_key(&key)
        .unwrap()
        .for_certificate(&sender.cert_der());
    let db = retry_open(|| sled::open(dir));
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
    downgrade_to_format_2(
        &dir,
        setup.config(Role::Wijkteam).data_key.clone(),
        &setup.credentials(Role::Practice),
    );
    // Format 2 is plaintext: refused, naming the command that seals it.
    let text = refused_start(&setup, Role::Wijkteam).await;
    assert!(text.contains("store format 2"), "{text}");
    assert!(text.contains("wijkpoort store compact"), "{text}");

    let done = wijkpoort::migrate::migrate(&setup.config(Role::Wijkteam)).unwrap();
    assert_eq!((done.from_version, done.signed_alone), (2, 1), "{done:?}");
    assert_eq!(stored_format(&dir), MIGRATES_TO);
    let config = setup.config_path(Role::Wijkteam).display().to_string();
    let prove = |id: String| {
        let config = config.clone();
        async move {
            wijkpoort::audit::cli::run_words(["--config", &config, "prove", "--message", &id]).await
        }
    };
    assert_eq!(
        prove(id.clone()).await,
        0,
        "the envelope signed on its own proves at format 3"
    );

    // Format 3 is still plaintext: refused, naming compact; compacted, it is sealed.
    let text = refused_start(&setup, Role::Wijkteam).await;
    assert!(text.contains("store format 3"), "{text}");
    assert!(text.contains("wijkpoort store compact"), "{text}");
    assert_eq!(compact_in_place_of(&setup, Role::Wijkteam), MIGRATES_TO);
    assert_eq!(
        prove(id.clone()).await,
        0,
        "the envelope signed on its own proves once sealed"
    );

    // Started on the sealed store, the old message is kept as it was and new messages
    // arrive under batch signatures.
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let kept = wijkpoort::inbox::get(store(&wijkteam), &DEV_PRACTICE_ID.into(), &id)
        .unwrap()
        .expect("the format-2 message is kept");
    assert!(kept.batch.is_none(), "still under its own signature");
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let later = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &later).await;
    let kept = wijkpoort::inbox::get(store(&wijkteam), &DEV_PRACTICE_ID.into(), &later)
        .unwrap()
        .unwrap();
    assert!(kept.batch.is_some());
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
    for id in [id, later] {
        assert_eq!(prove(id.clone()).await, 0, "prove {id} after the restart");
    }
}
