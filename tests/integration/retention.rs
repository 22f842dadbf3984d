//! Retention with the clock moved forward: each rule removes what is due and only that,
//! keeps what proves the exchange (records, receipts, hashes), and audits what it
//! removed; `audit verify` passes after the oldest audit records are purged, checking
//! the chain from the signed checkpoint that pins its start, and fails when the purged
//! range or the pin is tampered with.

use std::path::Path;

use serde_json::json;
use wijkpoort::audit::verify::{self, TamperKind, VerifyReport};
use wijkpoort::chain::{Actor, AuditEvent, Event, Outcome, PurgeSummary};
use wijkpoort::clock::Clock;
use wijkpoort::dev::pki::DEV_PRACTICE_ID;
use wijkpoort::gateway::RunningGateway;
use wijkpoort::store::{Store, T};

use crate::util::*;

async fn withdraw(his: &mut wijkpoort::client::LocalApiClient, consent: &str) {
    let (code, answer) = his
        .post(&format!("/v1/consents/{consent}/withdraw"), &json!({}))
        .await
        .unwrap();
    assert_eq!(code, 200, "{answer}");
}

async fn purge(gw: &RunningGateway, setup: &Setup, role: Role) -> PurgeSummary {
    gw.purge(&setup.config(role).retention).await.unwrap()
}

fn last_checkpoint(store: &Store) -> u64 {
    let (k, _) = store.tree(T::Checkpoints).last().unwrap().unwrap();
    u64::from_be_bytes(k.as_ref().try_into().unwrap())
}

fn first_record(store: &Store) -> u64 {
    let (k, _) = store.tree(T::Audit).first().unwrap().unwrap();
    u64::from_be_bytes(k.as_ref().try_into().unwrap())
}

fn verify_dir(setup: &Setup, dir: &Path) -> VerifyReport {
    let config = setup.config(Role::Practice);
    let store = retry_open(|| Store::open_read_only(dir));
    verify::verify(&store, &config.cert_chain[0], None).unwrap()
}

/// A copy of the stopped practice's store, to tamper with.
fn copy_of(setup: &Setup, name: &str) -> std::path::PathBuf {
    let from = setup.store_dir(Role::Practice);
    let to = setup.kit.dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for entry in walk(&from) {
        let rel = entry.strip_prefix(&from).unwrap();
        let target = to.join(rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &target).unwrap();
    }
    to
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_retention_rule_removes_what_is_due_and_only_that_and_the_audit_chain_still_verifies()
{
    let clock = Clock::system();
    let mut setup = Setup::new().await;
    setup.release(Role::Wijkteam);
    let mut practice = setup.start_with_clock(Role::Practice, clock.clone()).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");

    // A referral withheld: its consent was withdrawn while the wijkteam was down.
    let withdrawn = record_consent(&mut his).await;
    let withheld = submit(&mut his, &referral_submission(&withdrawn)).await;
    wait_for_status(&mut his, &withheld, "a failed attempt", |s| {
        s["attempts"].as_u64() >= Some(1)
    })
    .await;
    withdraw(&mut his, &withdrawn).await;
    wait_for_status(&mut his, &withheld, "withheld", |s| {
        s["status"] == "withheld"
    })
    .await;

    // A referral delivered and acknowledged, under a consent that stays valid for a year.
    let mut wijkteam = setup.start_with_clock(Role::Wijkteam, clock.clone()).await;
    let consent = record_consent(&mut his).await;
    let delivered = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &delivered).await;
    let mut case_system = setup.client(Role::Wijkteam, "j.bakker");
    let detail = format!("/v1/inbox/{DEV_PRACTICE_ID}/{delivered}");
    let (code, _) = case_system
        .post(&format!("{detail}/ack"), &json!({}))
        .await
        .unwrap();
    assert_eq!(code, 200);

    // Today nothing is due.
    assert_eq!(
        purge(&practice, &setup, Role::Practice).await,
        PurgeSummary::default()
    );
    assert_eq!(
        purge(&wijkteam, &setup, Role::Wijkteam).await,
        PurgeSummary::default()
    );

    // After 31 days: the bodies of the delivered and of the acknowledged message.
    clock.advance(chrono::Duration::days(31));
    let p = purge(&practice, &setup, Role::Practice).await;
    assert_eq!(
        p,
        PurgeSummary {
            delivered_bodies: 1,
            ..PurgeSummary::default()
        }
    );
    let w = purge(&wijkteam, &setup, Role::Wijkteam).await;
    assert_eq!(
        w,
        PurgeSummary {
            acknowledged_bodies: 1,
            ..PurgeSummary::default()
        }
    );
    let sent = status(&mut his, &delivered).await;
    assert_eq!(sent["status"], "delivered");
    assert_eq!(sent["receipt"]["message_id"], delivered.as_str(), "{sent}");
    let hash = sent["body_purged"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(sent["receipt"]["stored_hash"], hash.as_str(), "{sent}");
    let store_p = store(&practice);
    assert!(store_p
        .get(T::SentEnvelopes, delivered.as_bytes())
        .unwrap()
        .is_none());
    assert!(store_p
        .get(T::SentEnvelopes, withheld.as_bytes())
        .unwrap()
        .is_some());
    let (code, received) = case_system.get(&detail).await.unwrap();
    assert_eq!(code, 200, "{received}");
    assert!(received["envelope"].is_null(), "{received}");
    assert_eq!(
        received["body_purged"]["sha256"],
        hash.as_str(),
        "{received}"
    );
    assert_eq!(
        received["receipt"]["stored_hash"],
        hash.as_str(),
        "{received}"
    );
    let audited = last_audit_record(store_p).unwrap();
    assert_eq!(audited.event.event, Event::RecordsPurged);
    assert_eq!(audited.event.purged, Some(p));

    // After 91 days: the withheld message's body.
    clock.advance(chrono::Duration::days(60));
    assert_eq!(
        purge(&practice, &setup, Role::Practice).await,
        PurgeSummary {
            undelivered_bodies: 1,
            ..PurgeSummary::default()
        }
    );
    assert_eq!(
        purge(&wijkteam, &setup, Role::Wijkteam).await,
        PurgeSummary::default()
    );
    assert_eq!(status(&mut his, &withheld).await["status"], "withheld");

    // A stop signs a checkpoint of the log's head: the span a purge may cut.
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
    practice = setup.start_with_clock(Role::Practice, clock.clone()).await;
    wijkteam = setup.start_with_clock(Role::Wijkteam, clock.clone()).await;
    let pin = last_checkpoint(store(&practice));
    let pin_w = last_checkpoint(store(&wijkteam));

    // After five years and a day: the withdrawn consent (ended on day 0) and the audit
    // records up to the checkpoint; the consent valid for a year is not due yet.
    clock.advance(chrono::Duration::days(1827 + 1 - 91));
    let p = purge(&practice, &setup, Role::Practice).await;
    assert_eq!(
        p,
        PurgeSummary {
            consents: 1,
            consent_events: 2,
            audit_records: pin,
            audit_from: 1,
            audit_to: pin,
            ..PurgeSummary::default()
        }
    );
    let w = purge(&wijkteam, &setup, Role::Wijkteam).await;
    assert_eq!(
        w,
        PurgeSummary {
            audit_records: pin_w,
            audit_from: 1,
            audit_to: pin_w,
            ..PurgeSummary::default()
        }
    );
    let (code, consents) = his
        .post("/v1/consents/query", &json!({ "bsn": BSN }))
        .await
        .unwrap();
    assert_eq!(code, 200, "{consents}");
    let listed: Vec<&str> = consents["consents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["consent_id"].as_str())
        .collect();
    assert_eq!(listed, vec![consent.as_str()], "{consents}");
    assert_eq!(first_record(store(&practice)), pin + 1);
    let cert = setup.config(Role::Practice).cert_chain[0].clone();
    let report = verify::verify(store(&practice), &cert, None).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.pinned_at, Some(pin));
    // A thousand records more, so that a later checkpoint is signed with records after
    // it.
    for _ in 0..10 {
        let events = (0..100)
            .map(|_| AuditEvent::new(Event::AuditRead, Outcome::Success, Actor::Gateway))
            .collect();
        store(&practice).commit_audit(events).await.unwrap();
    }
    let later = wait_until("a checkpoint after the pin", || async {
        let cp = last_checkpoint(store(&practice));
        (cp > pin).then_some(cp)
    })
    .await;
    store(&practice)
        .commit_audit(vec![AuditEvent::new(
            Event::AuditRead,
            Outcome::Success,
            Actor::Gateway,
        )])
        .await
        .unwrap();
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();

    let intact = verify_dir(&setup, &setup.store_dir(Role::Practice));
    assert!(intact.intact(), "{intact:?}");
    assert_eq!(intact.pinned_at, Some(pin));

    // The first kept record removed: the pin no longer meets the chain.
    let dir = copy_of(&setup, "cut-one");
    {
        let db = retry_open(|| sled::open(&dir));
        db.open_tree("audit").unwrap().remove(be(pin + 1)).unwrap();
        db.flush().unwrap();
    }
    let r = verify_dir(&setup, &dir);
    assert!(!r.intact(), "a removed first record must be found: {r:?}");

    // The pinning checkpoint altered: its signature fails.
    let dir = copy_of(&setup, "forged-pin");
    {
        let db = retry_open(|| sled::open(&dir));
        let cps = db.open_tree("checkpoints").unwrap();
        let v = cps.get(be(pin)).unwrap().unwrap();
        let mut cp: serde_json::Value = serde_json::from_slice(&v).unwrap();
        cp["hash"] = json!("0".repeat(64));
        cps.insert(be(pin), serde_json::to_vec(&cp).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let r = verify_dir(&setup, &dir);
    assert!(!r.intact(), "a forged pin must be found: {r:?}");
    assert_eq!(r.pinned_at, None, "a forged checkpoint pins nothing: {r:?}");

    // More records cut by hand, up to a later signed checkpoint, with the purge record
    // among them: no purge record accounts for the new start.
    let dir = copy_of(&setup, "cut-to-later");
    {
        let db = retry_open(|| sled::open(&dir));
        let audit = db.open_tree("audit").unwrap();
        for seq in pin + 1..=later {
            audit.remove(be(seq)).unwrap();
        }
        let cps = db.open_tree("checkpoints").unwrap();
        cps.remove(be(pin)).unwrap();
        db.flush().unwrap();
    }
    let r = verify_dir(&setup, &dir);
    let t = r.tamper.expect("a cut beyond the purge must be found");
    assert_eq!(t.kind, TamperKind::Removed, "{t:?}");
    assert!(t.detail.contains("no purge record"), "{t:?}");
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

#[test]
fn audit_retention_below_five_years_or_above_twenty_is_refused() {
    use wijkpoort::config::retention::RawRetention;
    for days in [365, 1826, 7306] {
        let raw = RawRetention {
            audit_days: days,
            ..RawRetention::default()
        };
        let (field, problem) = raw.validate().unwrap_err();
        assert_eq!(field, "audit_days");
        assert!(problem.contains("NEN 7513"), "{problem}");
    }
    let raw = RawRetention {
        audit_days: 1827,
        consent_after_end_days: 2000,
        ..RawRetention::default()
    };
    assert_eq!(raw.validate().unwrap_err().0, "consent_after_end_days");
    assert!(RawRetention::default().validate().is_ok());
}
