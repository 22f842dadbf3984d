//! What only the audit tests need, on top of the shared [`crate::fixture`]: a gateway
//! whose start is on record before the test's own records, audit records committed
//! through a running gateway's store, the auditor's CLI (the real binary), and direct
//! sled access for tampering with a stopped gateway's store.

#![allow(dead_code)]

use std::path::Path;
use std::process::Output;

use wijkpoort::audit::{Actor, AuditEvent, AuditRecord, Event, Outcome};
use wijkpoort::message::MessageType;
use wijkpoort::RunningGateway;

pub use crate::fixture::*;

/// Two fictitious children.
pub use crate::fixture::{BSN as BSN_A, OTHER_BSN as BSN_B};

/// The audit tests' ways of starting a gateway and of pointing the CLI at one.
pub trait AuditSetup {
    /// Starts the practice gateway, once its start is on record.
    async fn start_practice(&mut self) -> RunningGateway;
    /// Starts the wijkteam gateway, once its start is on record.
    async fn start_wijkteam(&mut self) -> RunningGateway;
    /// `--gateway URL --cert R.pem --key R.key --ca ca.pem` for credentials of `role`.
    fn online_args(&self, gw: &RunningGateway, role: &str) -> Vec<String>;
    /// `--config` of the practice, for offline reads of its store.
    fn offline_args(&self) -> Vec<String>;
}

impl AuditSetup for Setup {
    async fn start_practice(&mut self) -> RunningGateway {
        let gw = self.start(Role::Practice).await;
        started(&gw).await;
        gw
    }

    async fn start_wijkteam(&mut self) -> RunningGateway {
        let gw = self.start(Role::Wijkteam).await;
        started(&gw).await;
        gw
    }

    fn online_args(&self, gw: &RunningGateway, role: &str) -> Vec<String> {
        vec![
            "--gateway".into(),
            format!("https://127.0.0.1:{}", gw.listener.port()),
            "--cert".into(),
            path(&self.kit.pki.cert(role)),
            "--key".into(),
            path(&self.kit.pki.key(role)),
            "--ca".into(),
            path(&self.kit.pki.ca()),
        ]
    }

    fn offline_args(&self) -> Vec<String> {
        vec!["--config".into(), path(&self.kit.practice_config)]
    }
}

/// Waits until the gateway has recorded its start, so that the tests' own records follow it.
async fn started(gw: &RunningGateway) {
    wait_until("the gateway to record its start", || {
        let last = last_audit_record(store(gw));
        let is_start = last.is_some_and(|r: AuditRecord| r.event.event == Event::GatewayStarted);
        async move { is_start.then_some(()) }
    })
    .await
}

pub fn path(p: &Path) -> String {
    p.display().to_string()
}

/// An event a local user caused about a child.
pub fn user_event(
    user: &str,
    event: Event,
    subject: Option<String>,
    msg: Option<&str>,
) -> AuditEvent {
    let mut e = AuditEvent::new(event, Outcome::Success, Actor::User { id: user.into() })
        .on_behalf_of(wijkpoort::dev::pki::DEV_PRACTICE_ID)
        .subject(subject)
        .peer(wijkpoort::dev::pki::DEV_WIJKTEAM_ID);
    if let Some(id) = msg {
        e = e
            .message(id, MessageType::Referral)
            .consent(Some("consent-1"));
    }
    e
}

/// Commits `n` filler records (no child) through the running gateway, in jobs of 500.
pub async fn fill(gw: &RunningGateway, n: usize) {
    let mut left = n;
    while left > 0 {
        let batch = left.min(500);
        let events = (0..batch)
            .map(|i| {
                AuditEvent::new(Event::MessageQueued, Outcome::Success, Actor::Gateway)
                    .on_behalf_of(wijkpoort::dev::pki::DEV_PRACTICE_ID)
                    .reason(format!("filler {i}"))
            })
            .collect();
        store(gw).commit_audit(events).await.unwrap();
        left -= batch;
    }
}

/// Runs the real binary with `args`.
pub async fn wijkpoort(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wijkpoort"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

pub fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The stopped gateway's store, opened with sled directly (as a tamperer would).
pub struct Raw {
    pub db: sled::Db,
    pub audit: sled::Tree,
    pub checkpoints: sled::Tree,
}

impl Raw {
    pub fn open(dir: &Path) -> Raw {
        let db = retry_open(|| sled::open(dir));
        Raw {
            audit: db.open_tree("audit").unwrap(),
            checkpoints: db.open_tree("checkpoints").unwrap(),
            db,
        }
    }

    pub fn record(&self, seq: u64) -> AuditRecord {
        serde_json::from_slice(&self.audit.get(seq.to_be_bytes()).unwrap().unwrap()).unwrap()
    }

    pub fn put(&self, seq: u64, r: &AuditRecord) {
        self.audit
            .insert(seq.to_be_bytes(), serde_json::to_vec(r).unwrap())
            .unwrap();
    }

    pub fn last_seq(&self) -> u64 {
        let (k, _) = self.audit.last().unwrap().unwrap();
        u64::from_be_bytes(k.as_ref().try_into().unwrap())
    }

    pub fn checkpoint_seqs(&self) -> Vec<u64> {
        self.checkpoints
            .iter()
            .keys()
            .map(|k| u64::from_be_bytes(k.unwrap().as_ref().try_into().unwrap()))
            .collect()
    }

    pub fn close(self) {
        self.db.flush().unwrap();
    }
}
