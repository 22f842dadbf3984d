//! Tampering with a stopped gateway's store, offline with sled, and finding it: each kind
//! at the right sequence number, through the library and through the binary's exit codes.

use wijkpoort::audit::verify::{self, KnownCheckpoint, Tamper, TamperKind, VerifyReport};
use wijkpoort::audit::Outcome;
use wijkpoort::store::Store;
use wijkpoort::Config;

use crate::util::*;

/// A practice gateway that started, committed 2,500 records and stopped: records 1
/// (started) to 2,502 (stopped), checkpoints at 1000, 2000 and 2502 (the closing one).
async fn populated() -> Setup {
    let mut s = Setup::new().await;
    let gw = s.start_practice().await;
    fill(&gw, 2500).await;
    gw.stop().await.unwrap();
    s
}

fn check(s: &Setup, expect: Option<&KnownCheckpoint>) -> VerifyReport {
    let config = s.config(Role::Practice);
    let store = retry_open(|| Store::open_read_only(&s.store_dir(Role::Practice)));
    verify::verify(&store, &config.cert_chain[0], expect).unwrap()
}

fn tamper(s: &Setup) -> Tamper {
    let report = check(s, None);
    report.tamper.expect("tampering must be detected")
}

/// Gives records `from..=to` fresh hashes, each chained to the one before: what a
/// tamperer who knows the hash scheme (but not the signing key) can do.
fn rehash(raw: &Raw, from: u64, to: u64) {
    let mut prev = if from == 1 {
        wijkpoort::audit::GENESIS_HASH.to_string()
    } else {
        raw.record(from - 1).hash
    };
    for seq in from..=to {
        let mut r = raw.record(seq);
        r.prev_hash = prev;
        r.hash = r.compute_hash();
        prev = r.hash.clone();
        raw.put(seq, &r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_log_is_intact_with_its_checkpoints() {
    let s = populated().await;
    let raw = Raw::open(&s.store_dir(Role::Practice));
    assert_eq!(raw.last_seq(), 2502);
    assert_eq!(raw.checkpoint_seqs(), vec![1000, 2000, 2502]);
    raw.close();
    let report = check(&s, None);
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, 2502);
    assert_eq!(report.checkpoints, 3);
    assert_eq!(report.unsigned_tail, 0);
    assert_eq!(report.last_checkpoint.unwrap().seq, 2502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_record_is_found_at_its_seq() {
    let s = populated().await;
    let raw = Raw::open(&s.store_dir(Role::Practice));
    let mut r = raw.record(1234);
    r.event.outcome = Outcome::Refused;
    raw.put(1234, &r);
    raw.close();
    let t = tamper(&s);
    assert_eq!((t.seq, t.kind), (1234, TamperKind::Altered), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_added_to_a_record_counts_as_altered() {
    let s = populated().await;
    let raw = Raw::open(&s.store_dir(Role::Practice));
    // Same fields, same order, same hash — plus one the record never had.
    let bytes = raw
        .audit
        .get(55u64.to_be_bytes())
        .unwrap()
        .unwrap()
        .to_vec();
    let text = String::from_utf8(bytes).unwrap();
    let added = format!("{},\"note\":\"added later\"}}", &text[..text.len() - 1]);
    let parsed: wijkpoort::audit::AuditRecord = serde_json::from_str(&added).unwrap();
    assert_eq!(
        parsed.compute_hash(),
        parsed.hash,
        "the hash alone cannot see it"
    );
    raw.audit
        .insert(55u64.to_be_bytes(), added.as_bytes())
        .unwrap();
    raw.close();
    let t = tamper(&s);
    assert_eq!((t.seq, t.kind), (55, TamperKind::Altered), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_record_is_found_at_its_seq() {
    let s = populated().await;
    let raw = Raw::open(&s.store_dir(Role::Practice));
    raw.audit.remove(777u64.to_be_bytes()).unwrap();
    raw.close();
    let t = tamper(&s);
    assert_eq!((t.seq, t.kind), (777, TamperKind::Removed), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_swapped_records_are_found_at_the_first() {
    let s = populated().await;
    let raw = Raw::open(&s.store_dir(Role::Practice));
    let (a, b) = (raw.record(1500), raw.record(1501));
    raw.put(1500, &b);
    raw.put(1501, &a);
    raw.close();
    let t = tamper(&s);
    assert_eq!((t.seq, t.kind), (1500, TamperKind::OutOfPlace), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_and_renumbered_records_are_found_at_the_first() {
    let s = populated().await;
    let raw = Raw::open(&s.store_dir(Role::Practice));
    let (mut a, mut b) = (raw.record(1500), raw.record(1501));
    std::mem::swap(&mut a.seq, &mut b.seq);
    raw.put(1500, &b);
    raw.put(1501, &a);
    raw.close();
    let t = tamper(&s);
    assert_eq!(t.seq, 1500, "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_and_rehashed_record_is_found_by_its_successors_link() {
    let s = populated().await;
    let raw = Raw::open(&s.store_dir(Role::Practice));
    let mut r = raw.record(42);
    r.event.reason = Some("nothing happened here".into());
    raw.put(42, &r);
    rehash(&raw, 42, 42);
    raw.close();
    let t = tamper(&s);
    assert_eq!((t.seq, t.kind), (42, TamperKind::BrokenLink), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_rewritten_to_the_end_is_caught_by_the_next_checkpoint() {
    let s = populated().await;
    let raw = Raw::open(&s.store_dir(Role::Practice));
    let mut r = raw.record(1200);
    r.event.outcome = Outcome::Failure;
    raw.put(1200, &r);
    let last = raw.last_seq();
    rehash(&raw, 1200, last);
    raw.close();
    let t = tamper(&s);
    assert_eq!(
        (t.seq, t.kind),
        (2000, TamperKind::CheckpointMismatch),
        "{t:?}"
    );
    assert!(t.detail.contains("after checkpoint 1000"), "{}", t.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_back_behind_its_last_checkpoint_is_found_at_the_first_missing_seq() {
    let s = populated().await;
    let raw = Raw::open(&s.store_dir(Role::Practice));
    for seq in 2101..=raw.last_seq() {
        raw.audit.remove(seq.to_be_bytes()).unwrap();
    }
    raw.close();
    let t = tamper(&s);
    assert_eq!((t.seq, t.kind), (2101, TamperKind::Truncated), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_back_with_its_checkpoints_is_found_with_a_kept_checkpoint() {
    let s = populated().await;
    let kept = check(&s, None).last_checkpoint.unwrap();
    let raw = Raw::open(&s.store_dir(Role::Practice));
    for seq in 1501..=raw.last_seq() {
        raw.audit.remove(seq.to_be_bytes()).unwrap();
        raw.checkpoints.remove(seq.to_be_bytes()).unwrap();
    }
    raw.close();
    // Without the kept checkpoint this is indistinguishable from an older log …
    assert!(check(&s, None).intact());
    // … with it, the cut is found where it starts.
    let t = check(&s, Some(&kept)).tamper.unwrap();
    assert_eq!((t.seq, t.kind), (1501, TamperKind::Truncated), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_checkpoint_fails_its_signature() {
    let s = populated().await;
    let raw = Raw::open(&s.store_dir(Role::Practice));
    let mut cp: wijkpoort::audit::Checkpoint =
        serde_json::from_slice(&raw.checkpoints.get(1000u64.to_be_bytes()).unwrap().unwrap())
            .unwrap();
    cp.hash = raw.record(999).hash;
    raw.checkpoints
        .insert(1000u64.to_be_bytes(), serde_json::to_vec(&cp).unwrap())
        .unwrap();
    raw.close();
    let t = tamper(&s);
    assert_eq!(
        (t.seq, t.kind),
        (1000, TamperKind::CheckpointSignature),
        "{t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_signed_by_another_key_do_not_verify() {
    let s = populated().await;
    let wijkteam_cert = Config::load(&s.kit.wijkteam_config).unwrap().cert_chain[0].clone();
    let store = retry_open(|| Store::open_read_only(&s.store_dir(Role::Practice)));
    let t = verify::verify(&store, &wijkteam_cert, None)
        .unwrap()
        .tamper
        .unwrap();
    assert_eq!((t.seq, t.kind), (1000, TamperKind::CheckpointSignature));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_exit_codes_through_the_binary() {
    let s = populated().await;
    let store = path(&s.store_dir(Role::Practice));
    let cert = path(&s.kit.pki.cert("practice"));

    // Intact: 0, offline with the config (the read is recorded, the log stays sealed).
    let mut a = vec!["audit".to_string()];
    a.extend(s.offline_args());
    a.push("verify".into());
    let out = wijkpoort(a.clone()).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).starts_with("intact: 2502 record(s)"),
        "{}",
        stdout(&out)
    );
    let again = wijkpoort(a.clone()).await;
    assert_eq!(again.status.code(), Some(0), "{}", stdout(&again));
    assert!(
        stdout(&again).contains("intact: 2503 record(s)"),
        "{}",
        stdout(&again)
    );

    // Read-only with --cert: 0, and it says the read was not recorded.
    let ro = wijkpoort(args(&[
        "audit", "--store", &store, "--cert", &cert, "verify",
    ]))
    .await;
    assert_eq!(ro.status.code(), Some(0), "{}", stderr(&ro));
    assert!(stderr(&ro).contains("not recorded"), "{}", stderr(&ro));

    // Tampered: 1, naming the first bad seq.
    let raw = Raw::open(&s.store_dir(Role::Practice));
    raw.audit.remove(600u64.to_be_bytes()).unwrap();
    raw.close();
    let out = wijkpoort(a.clone()).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("first bad sequence number 600"),
        "{}",
        stdout(&out)
    );
    let json_out = wijkpoort(args(&[
        "audit", "--store", &store, "--cert", &cert, "verify", "--format", "json",
    ]))
    .await;
    assert_eq!(json_out.status.code(), Some(1));
    let report: VerifyReport = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(report.tamper.unwrap().seq, 600);

    // Could not check: 2 (no certificate to check checkpoints against; no store).
    let out = wijkpoort(args(&["audit", "--store", &store, "verify"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    let nowhere = s.dir.path().join("no-such-store");
    let out = wijkpoort(args(&[
        "audit",
        "--store",
        &path(&nowhere),
        "--cert",
        &cert,
        "verify",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!nowhere.exists(), "verify must not create a store");
}
