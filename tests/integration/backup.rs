//! Backing a store up and restoring it, as an operator does: `wijkpoort store backup` on
//! a running gateway under load, `wijkpoort audit verify` on the copy, `wijkpoort store
//! restore` into a new directory, and a gateway started on the restored store.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_wijkpoort");

/// Runs the real binary off the runtime's threads (the gateways of the test run on
/// them); returns the exit code, stdout and stderr.
async fn run_bin(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN).args(&args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Points `role`'s config at another store directory.
fn use_store(setup: &Setup, role: Role, dir: &Path) {
    let path = setup.config_path(role);
    let text = std::fs::read_to_string(&path).unwrap();
    let changed: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("store_dir") {
                format!("store_dir = {:?}", s(dir))
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_ne!(
        changed.join("\n"),
        text.trim_end(),
        "no store_dir line in the config"
    );
    std::fs::write(&path, changed.join("\n") + "\n").unwrap();
}

async fn verify(store: &Path, cert: &Path) -> (i32, String, String) {
    run_bin(vec![
        "audit".into(),
        "--store".into(),
        s(store),
        "--cert".into(),
        s(cert),
        "verify".into(),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_message_accepted_before_it_began() {
    let mut setup = Setup::new().await;
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;

    // Four HIS connections submit referrals until told to stop; each id is noted once
    // its 202 has arrived, i.e. once the gateway has accepted it.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for i in 0..4 {
        let mut client = setup.client(Role::Practice, &format!("his-{i}"));
        let submission = referral_submission(&consent);
        let (accepted, stop) = (accepted.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let id = submit(&mut client, &submission).await;
                accepted.lock().unwrap().push(id);
            }
        }));
    }
    wait_until("40 referrals accepted", || {
        let n = accepted.lock().unwrap().len();
        async move { (n >= 40).then_some(()) }
    })
    .await;

    // The backup begins: everything accepted so far must be in it.
    let before: Vec<String> = accepted.lock().unwrap().clone();
    let backup = setup.dir.path().join("backup");
    let (code, out, err) = run_bin(vec![
        "store".into(),
        "backup".into(),
        "--config".into(),
        s(&setup.config_path(Role::Practice)),
        "--out".into(),
        s(&backup),
    ])
    .await;
    assert_eq!(code, 0, "backup failed:\n{out}\n{err}");
    assert!(out.contains("the gateway's commits waited"), "{out}");
    let during = accepted.lock().unwrap().len() - before.len();
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    assert!(
        during > 0,
        "no submission was accepted while the backup ran: no load"
    );
    println!("{}", out.trim());

    // The copy is a store that the auditor's verify accepts.
    let cert = setup.kit.pki.cert("practice");
    let (code, out, err) = verify(&backup, &cert).await;
    assert_eq!(code, 0, "audit verify of the backup:\n{out}\n{err}");

    // Restore into a new directory (the gateway stopped), and not into a used one.
    practice.stop().await.unwrap();
    let restored: PathBuf = setup.dir.path().join("store-practice-restored");
    let restore = |to: &Path| {
        vec![
            "store".to_string(),
            "restore".into(),
            "--from".into(),
            s(&backup),
            "--store".into(),
            s(to),
            "--config".into(),
            s(&setup.config_path(Role::Practice)),
        ]
    };
    let (code, out, err) = run_bin(restore(&restored)).await;
    assert_eq!(code, 0, "restore failed:\n{out}\n{err}");
    assert!(out.contains("intact"), "{out}");
    let (code, _, err) = run_bin(restore(&restored)).await;
    assert_eq!(code, 1, "a restore over a used directory must be refused");
    assert!(err.contains("already holds files"), "{err}");
    let (code, out, err) = verify(&restored, &cert).await;
    assert_eq!(code, 0, "audit verify of the restored store:\n{out}\n{err}");

    // A gateway on the restored store knows every message accepted before the backup.
    use_store(&setup, Role::Practice, &restored);
    let practice = setup.start(Role::Practice).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    for id in &before {
        let (code, answer) = his.get(&format!("/v1/messages/{id}")).await.unwrap();
        assert_eq!(
            code, 200,
            "{id} accepted before the backup is lost: {answer}"
        );
    }
    // … and goes on working: what was queued is delivered, and a new message is too.
    for id in &before {
        wait_delivered(&mut his, id).await;
    }
    let next = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &next).await;
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_backup_needs_the_gateway_stopped_and_a_changed_backup_is_not_restored() {
    let mut setup = Setup::new().await;
    let practice = setup.start(Role::Practice).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let id = submit(&mut his, &referral_submission(&consent)).await;
    let store = setup.store_dir(Role::Practice);
    let backup = setup.dir.path().join("backup");
    let offline = vec![
        "store".to_string(),
        "backup".into(),
        "--store".into(),
        s(&store),
        "--out".into(),
        s(&backup),
    ];

    // The running gateway holds its store: the offline way says so.
    let (code, _, err) = run_bin(offline.clone()).await;
    assert_eq!(code, 1);
    assert!(err.contains("in use by another process"), "{err}");

    practice.stop().await.unwrap();
    let (code, out, err) = run_bin(offline).await;
    assert_eq!(code, 0, "offline backup:\n{out}\n{err}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join("wijkpoort-backup.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["taken"], "offline");
    assert_eq!(
        manifest["store_format"],
        u64::from(wijkpoort::store::FORMAT_VERSION)
    );

    // A backup changed after it was written is refused, naming why.
    {
        let db = sled::open(&backup).unwrap();
        db.open_tree("sent").unwrap().remove(id.as_bytes()).unwrap();
        db.flush().unwrap();
    }
    let target = setup.dir.path().join("restored");
    let (code, _, err) = run_bin(vec![
        "store".into(),
        "restore".into(),
        "--from".into(),
        s(&backup),
        "--store".into(),
        s(&target),
        "--config".into(),
        s(&setup.config_path(Role::Practice)),
    ])
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("differs from what was written"), "{err}");
    assert!(
        !target.exists(),
        "nothing may be written for a refused restore"
    );
}
