//! Encryption at rest: what a gateway stores about a child is sealed with its data key.
//! No name or BSN can be found in any file under a stopped gateway's store directory, in
//! any encoding the store could hold it in; the same data reads back through the local
//! API after a restart; a value moved to another record does not open; a rotated key
//! re-seals everything; `store compact` seals a plaintext store (format 2 or 3, written
//! before encryption at rest) into a fresh directory, in this build's format.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use wijkpoort::dev::pki::{DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};
use wijkpoort::seal::{key_id_of, DataKey};
use wijkpoort::store::{Store, StoreError, FORMAT_KEY, T};

use crate::util::*;

const CHILD: &str = "Zoë Zwartjes";
const PARENT: &str = "Gerrit Oudewater";
const PARENT_PHONE: &str = "0687654321";
const REQUEST: &str = "Slaapt slecht sinds de verhuizing naar Uithoorn";
const EVIDENCE: &str = "Toestemming mondeling gegeven door Gerrit Oudewater";

/// Every string the test writes that identifies the child or family.
fn needles() -> Vec<&'static str> {
    vec![BSN, CHILD, PARENT, PARENT_PHONE, REQUEST, EVIDENCE]
}

/// `s` in every encoding a store could hold it in: UTF-8 (also what JSON holds for
/// non-ASCII), JSON with `\uXXXX` escapes, UTF-16 in both byte orders.
fn encodings(s: &str) -> Vec<Vec<u8>> {
    let escaped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                format!("\\u{:04x}", c as u32)
            }
        })
        .collect();
    let le: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    let be: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
    vec![s.as_bytes().to_vec(), escaped.into_bytes(), le, be]
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Each (file, needle) where a needle is found in some encoding.
fn found_in(dir: &Path, needles: &[&str]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for file in files_under(dir) {
        let bytes = std::fs::read(&file).unwrap();
        for needle in needles {
            let hit = encodings(needle)
                .iter()
                .any(|enc| bytes.windows(enc.len()).any(|w| w == enc.as_slice()));
            if hit {
                found.push((file.clone(), needle.to_string()));
            }
        }
    }
    found
}

async fn record_named_consent(his: &mut wijkpoort::client::LocalApiClient) -> String {
    let consent = json!({
        "child": {"bsn": BSN, "birth_date": birth_date()},
        "performers": [{"role": "parent", "name": PARENT}],
        "scope": {"types": ["referral", "feedback"], "recipient": DEV_WIJKTEAM_ID},
        "valid_from": today(),
        "valid_until": today() + chrono::Duration::days(365),
        "evidence": EVIDENCE
    });
    let (code, answer) = his.post("/v1/consents", &consent).await.unwrap();
    assert_eq!(code, 201, "{answer}");
    answer["consent_id"].as_str().unwrap().to_string()
}

fn named_referral(consent_id: &str) -> Value {
    json!({
        "type": "referral",
        "to": "wijkteam",
        "consent_id": consent_id,
        "subject": {"bsn": BSN, "name": CHILD, "birth_date": birth_date()},
        "body": {
            "request_for_help": REQUEST,
            "urgency": "soon",
            "parent_contact": {"name": PARENT, "relationship": "vader", "phone": PARENT_PHONE}
        }
    })
}

/// A practice and a wijkteam that exchanged a named referral and its feedback, both
/// stopped: (setup, referral id, consent id).
async fn exchanged_and_stopped() -> (Setup, String, String) {
    let (mut setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_named_consent(&mut his).await;
    let id = submit(&mut his, &named_referral(&consent)).await;
    wait_delivered(&mut his, &id).await;
    let mut case_system = setup.client(Role::Wijkteam, "j.bakker");
    let fb = submit(&mut case_system, &feedback_submission(&id, &consent)).await;
    wait_delivered(&mut case_system, &fb).await;
    wijkteam.stop().await.unwrap();
    practice.stop().await.unwrap();
    setup.release(Role::Practice);
    setup.release(Role::Wijkteam);
    (setup, id, consent)
}

/// What the wijkteam's case system reads of the referral, after a restart.
async fn read_back(setup: &mut Setup, id: &str, consent: &str) {
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut case_system = setup.client(Role::Wijkteam, "j.bakker");
    let (code, inbox) = case_system.get("/v1/inbox").await.unwrap();
    assert_eq!(code, 200, "{inbox}");
    let msg = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("the referral is in the inbox: {inbox}"));
    let envelope = &msg["envelope"];
    assert_eq!(envelope["subject"]["bsn"], BSN);
    assert_eq!(envelope["subject"]["name"], CHILD);
    assert_eq!(envelope["body"]["request_for_help"], REQUEST);
    assert_eq!(envelope["body"]["parent_contact"]["name"], PARENT);
    assert_eq!(envelope["body"]["parent_contact"]["phone"], PARENT_PHONE);

    let mut his = setup.client(Role::Practice, "dr.jansen");
    let sent = status(&mut his, id).await;
    assert_eq!(sent["status"], "delivered", "{sent}");
    assert_eq!(sent["receipt"]["message_id"], id);
    for client in [&mut his, &mut case_system] {
        let (code, consents) = client
            .post("/v1/consents/query", &json!({ "bsn": BSN }))
            .await
            .unwrap();
        assert_eq!(code, 200, "{consents}");
        assert_eq!(consents["consents"][0]["consent_id"], consent, "{consents}");
        assert_eq!(consents["consents"][0]["status"], "active", "{consents}");
    }
    wijkteam.stop().await.unwrap();
    practice.stop().await.unwrap();
}

#[test]
fn the_scan_finds_a_name_in_each_encoding() {
    let dir = tempfile::tempdir().unwrap();
    for (i, enc) in encodings(CHILD).into_iter().enumerate() {
        let sub = dir.path().join(format!("case-{i}"));
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("f"), [b"xx".as_slice(), &enc, b"yy"].concat()).unwrap();
        assert_eq!(found_in(&sub, &[CHILD]).len(), 1, "encoding {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_name_or_bsn_is_in_any_store_file_and_all_of_it_reads_back_after_a_restart() {
    let (mut setup, id, consent) = exchanged_and_stopped().await;
    for role in [Role::Practice, Role::Wijkteam] {
        let dir = setup.store_dir(role);
        assert!(files_under(&dir).len() > 1, "the store has files");
        let found = found_in(&dir, &needles());
        assert!(found.is_empty(), "{} store: {found:?}", role.name());
        // Every value on disk was counted against the key's bound (NIST SP 800-38D).
        let key = setup.config(role).data_key.clone();
        let values = all_sealed_with(&dir, key.id());
        let db = retry_open(|| sled::open(&dir));
        let meta = db.open_tree("meta").unwrap();
        let counted = wijkpoort::store::seals_made(&meta, &key.id()).unwrap();
        assert!(
            counted as usize >= values && values > 0,
            "{counted} < {values}"
        );
    }
    read_back(&mut setup, &id, &consent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_value_moved_to_another_record_does_not_open() {
    let (setup, id, _) = exchanged_and_stopped().await;
    let config = setup.config(Role::Practice);
    let dir = setup.store_dir(Role::Practice);
    {
        let db = retry_open(|| sled::open(&dir));
        let sent = db.open_tree("sent").unwrap();
        let envelopes = db.open_tree("sent_envelopes").unwrap();
        let record = sent.get(id.as_bytes()).unwrap().unwrap();
        let envelope = envelopes.get(id.as_bytes()).unwrap().unwrap();
        assert_eq!(key_id_of(&record), Some(config.data_key.id()));
        // Same tree, another key; another tree, the same key.
        sent.insert(b"another-message", record).unwrap();
        sent.insert(b"moved-envelope", envelope.clone()).unwrap();
        envelopes.insert(b"moved-envelope", envelope).unwrap();
        db.flush().unwrap();
    }
    let store = retry_open(|| Store::open(&dir, config.signer.clone(), config.data_key.clone()));
    assert!(store.get(T::Sent, id.as_bytes()).unwrap().is_some());
    assert!(store.get(T::SentEnvelopes, b"moved-envelope").is_err());
    for key in [b"another-message".as_slice(), b"moved-envelope"] {
        match store.get(T::Sent, key) {
            Err(StoreError::Seal(e)) => {
                assert!(e.to_string().contains("moved from another record"), "{e}")
            }
            other => panic!("a moved value opened: {other:?}"),
        }
    }
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opened_with_another_data_key_is_refused_naming_both_keys() {
    let (setup, _, _) = exchanged_and_stopped().await;
    let config = setup.config(Role::Practice);
    let other = std::sync::Arc::new(DataKey::random().unwrap());
    let refused =
        retry_open(
            || match Store::open(&config.store_dir, config.signer.clone(), other.clone()) {
                Ok(_) => Ok(None),
                Err(StoreError::Locked(d)) => Err(StoreError::Locked(d)),
                Err(e) => Ok(Some(e)),
            },
        )
        .expect("another key is refused");
    let text = refused.to_string();
    assert!(text.contains(&config.data_key.id_hex()), "{text}");
    assert!(text.contains(&other.id_hex()), "{text}");
}

/// Every sealed value in the stopped store at `dir` names the key `id`.
fn all_sealed_with(dir: &Path, id: [u8; 8]) -> usize {
    let db = retry_open(|| sled::open(dir));
    let mut n = 0;
    for t in T::ALL.into_iter().filter(|t| t.is_sealed()) {
        for entry in db.open_tree(t.name()).unwrap().iter() {
            let (_, v) = entry.unwrap();
            assert_eq!(key_id_of(&v), Some(id), "a value in {}", t.name());
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_key_reseals_everything_and_the_gateway_runs_on_the_new_key() {
    let (mut setup, id, consent) = exchanged_and_stopped().await;
    for role in [Role::Practice, Role::Wijkteam] {
        let config = setup.config(role);
        let key_file = setup.kit.dir.join(format!("{}.datakey", role.name()));
        let new_file = setup.kit.dir.join(format!("{}.datakey.new", role.name()));
        std::fs::write(&new_file, DataKey::generate_hex().unwrap()).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let owner_only = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(&new_file, owner_only).unwrap();
        }
        let new_key = std::sync::Arc::new(DataKey::load(&new_file).unwrap());
        let done = retry_open(|| {
            match wijkpoort::compact::rotate_key(
                &config.store_dir,
                config.data_key.clone(),
                new_key.clone(),
            ) {
                Err(wijkpoort::compact::CompactError::Store(StoreError::Locked(d))) => {
                    Err(StoreError::Locked(d))
                }
                other => Ok(other),
            }
        })
        .unwrap();
        assert!(done.sealed > 0);
        assert_eq!(done.key_id, new_key.id_hex());
        assert_eq!(
            all_sealed_with(&config.store_dir, new_key.id()),
            done.sealed
        );
        // The old key no longer opens the store; the new one, named in the config, does.
        let old = retry_open(|| {
            match Store::open(
                &config.store_dir,
                config.signer.clone(),
                config.data_key.clone(),
            ) {
                Err(StoreError::Locked(d)) => Err(StoreError::Locked(d)),
                other => Ok(other.err()),
            }
        });
        assert!(
            matches!(old, Some(StoreError::WrongDataKey { .. })),
            "{old:?}"
        );
        std::fs::rename(&new_file, &key_file).unwrap();
    }
    read_back(&mut setup, &id, &consent).await;
}

/// Rewrites a sealed store as one written before encryption at rest: every sealed value
/// in plaintext, no data key named, format `format` (3: batch signatures; 2: before
/// them, which `store compact` also takes).
pub fn unseal_to_plaintext(dir: &Path, key: std::sync::Arc<DataKey>, format: u32) {
    let sealer = wijkpoort::seal::Sealer::new(key, 0);
    let db = retry_open(|| sled::open(dir));
    for t in T::ALL.into_iter().filter(|t| t.is_sealed()) {
        let tree = db.open_tree(t.name()).unwrap();
        for entry in tree.iter() {
            let (k, v) = entry.unwrap();
            let plain = sealer.open(t.name(), &k, &v).unwrap();
            tree.insert(k, plain).unwrap();
        }
    }
    let meta = db.open_tree("meta").unwrap();
    meta.insert(FORMAT_KEY, &format.to_be_bytes()).unwrap();
    meta.remove(wijkpoort::store::DATA_KEY_ID).unwrap();
    db.flush().unwrap();
}

/// The format version recorded in the stopped store at `dir`.
fn stored_format(dir: &Path) -> u32 {
    let db = retry_open(|| sled::open(dir));
    let v = db
        .open_tree("meta")
        .unwrap()
        .get(FORMAT_KEY)
        .unwrap()
        .unwrap();
    u32::from_be_bytes(v.as_ref().try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_store_is_refused_naming_compact_which_seals_it_into_a_fresh_directory() {
    let (mut setup, id, consent) = exchanged_and_stopped().await;
    // The practice's store as the previous format (3) left it, the wijkteam's as format 2.
    for (role, format) in [(Role::Practice, 3), (Role::Wijkteam, 2)] {
        let config = setup.config(role);
        let dir = config.store_dir.clone();
        unseal_to_plaintext(&dir, config.data_key.clone(), format);
        // The plaintext is there: the scan would see it.
        assert!(!found_in(&dir, &[BSN]).is_empty());

        let refused = retry_open(|| {
            match Store::open(&dir, config.signer.clone(), config.data_key.clone()) {
                Err(StoreError::Locked(d)) => Err(StoreError::Locked(d)),
                other => Ok(other.err()),
            }
        })
        .expect("a plaintext store is refused");
        let text = refused.to_string();
        assert!(text.contains(&format!("store format {format}")), "{text}");
        assert!(text.contains("wijkpoort store compact"), "{text}");

        let fresh = dir.with_extension("compacted");
        let done =
            wijkpoort::compact::compact(&dir, &fresh, config.data_key.clone(), None).unwrap();
        assert_eq!(done.from_version, format);
        assert!(done.sealed > 0);
        assert_eq!(all_sealed_with(&fresh, config.data_key.id()), done.sealed);
        assert_eq!(stored_format(&fresh), wijkpoort::store::FORMAT_VERSION);
        assert_eq!(found_in(&fresh, &needles()), Vec::new());
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::rename(&fresh, &dir).unwrap();
    }
    read_back(&mut setup, &id, &consent).await;
    // New messages after the compaction take fresh queue keys and event numbers.
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let again = submit(&mut his, &named_referral(&consent)).await;
    wait_delivered(&mut his, &again).await;
    let (code, inbox) = setup
        .client(Role::Wijkteam, "j.bakker")
        .get("/v1/inbox")
        .await
        .unwrap();
    assert_eq!(code, 200);
    let ids: Vec<&str> = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&id.as_str()) && ids.contains(&again.as_str()),
        "{inbox}"
    );
    assert_eq!(inbox["messages"][0]["from"], DEV_PRACTICE_ID);
    wijkteam.stop().await.unwrap();
    practice.stop().await.unwrap();
}

fn wijkpoort(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_wijkpoort"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_commands_compact_purge_and_refuse_a_readable_data_key() {
    use std::os::unix::fs::PermissionsExt;
    let (setup, id, _) = exchanged_and_stopped().await;
    let config_path = setup.config_path(Role::Practice);
    let dir = setup.store_dir(Role::Practice);
    let key_file = setup.kit.dir.join("practice.datakey");
    let fresh = setup.kit.dir.join("store-practice-compacted");

    // Nothing is due today: the purge says so, and leaves the log verifiable.
    let out = wijkpoort(&[
        "store".as_ref(),
        "purge".as_ref(),
        "--config".as_ref(),
        config_path.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 audit record(s)"), "{stdout}");

    // A data key others can read is refused, naming the fix.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let compact = |key: &Path| {
        wijkpoort(&[
            "store".as_ref(),
            "compact".as_ref(),
            "--from".as_ref(),
            dir.as_os_str(),
            "--to".as_ref(),
            fresh.as_os_str(),
            "--data-key".as_ref(),
            key.as_os_str(),
        ])
    };
    let out = compact(&key_file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("chmod 600"), "{stderr}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let out = compact(&key_file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A sealed store copied into a sealed store, both in this build's format.
    let format = wijkpoort::store::FORMAT_VERSION;
    assert!(
        stdout.contains(&format!("(format {format}) copied into")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("(format {format}): ")), "{stdout}");
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(found_in(&fresh, &needles()), Vec::new());

    // The copy verifies as the original does.
    let verify = |store: &Path| {
        wijkpoort(&[
            "audit".as_ref(),
            "--store".as_ref(),
            store.as_os_str(),
            "--cert".as_ref(),
            setup.kit.pki.cert("practice").as_os_str(),
            "verify".as_ref(),
        ])
    };
    for store in [&dir, &fresh] {
        let out = verify(store);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains("intact"), "{stdout}");
    }

    // An envelope is sealed: `audit prove` opens it with the config's data key, in the
    // store and in its copy, and without one says what it needs.
    let prove = |args: &[&std::ffi::OsStr]| {
        let mut all: Vec<&std::ffi::OsStr> = vec!["audit".as_ref()];
        all.extend_from_slice(args);
        let words: [&std::ffi::OsStr; 3] = ["prove".as_ref(), "--message".as_ref(), id.as_ref()];
        all.extend(words);
        wijkpoort(&all)
    };
    for store in [&dir, &fresh] {
        let out = prove(&[
            "--config".as_ref(),
            config_path.as_os_str(),
            "--store".as_ref(),
            store.as_os_str(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("proof             valid"), "{stdout}");
    }
    let out = prove(&["--store".as_ref(), fresh.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sealed at rest"), "{stderr}");
    assert!(stderr.contains("--config"), "{stderr}");
}
