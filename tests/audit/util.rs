//! Helpers for the audit tests: a dev kit with two real gateways on loopback, records
//! committed through a running gateway's store, the real binary, and direct sled access
//! for tampering with a stopped gateway's store.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use tokio::net::TcpListener;
use wijkpoort::audit::{Actor, AuditEvent, AuditRecord, Event, Outcome};
use wijkpoort::devkit::{self, Addresses, DevKit};
use wijkpoort::message::{Bsn, MessageType};
use wijkpoort::store::Durability;
use wijkpoort::{Config, Listeners, RunningGateway};

/// Two fictitious children.
pub const BSN_A: &str = "111222333";
pub const BSN_B: &str = "123456782";

pub fn bsn(s: &str) -> Bsn {
    Bsn::try_from(s.to_string()).unwrap()
}

/// A written dev kit and the sockets each gateway will serve on.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub kit: DevKit,
    practice: Option<Listeners>,
    wijkteam: Option<Listeners>,
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn addr(l: &TcpListener) -> SocketAddr {
    l.local_addr().unwrap()
}

impl Setup {
    pub async fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (pa, pl, wa, wl) = (bind().await, bind().await, bind().await, bind().await);
        let kit = devkit::write(
            dir.path(),
            Addresses {
                practice_api: addr(&pa),
                practice_listener: addr(&pl),
                wijkteam_api: addr(&wa),
                wijkteam_listener: addr(&wl),
            },
            None,
        )
        .unwrap();
        Setup {
            dir,
            kit,
            practice: Some(Listeners {
                local_api: pa,
                listener: pl,
            }),
            wijkteam: Some(Listeners {
                local_api: wa,
                listener: wl,
            }),
        }
    }

    pub fn practice_config(&self) -> Config {
        Config::load(&self.kit.practice_config).unwrap()
    }

    pub fn practice_store(&self) -> PathBuf {
        self.dir.path().join("store-practice")
    }

    /// Starts the practice gateway on its (first) sockets, or on fresh ones after a stop.
    pub async fn start_practice(&mut self) -> RunningGateway {
        let listeners = match self.practice.take() {
            Some(l) => l,
            None => Listeners {
                local_api: bind().await,
                listener: bind().await,
            },
        };
        let gw = RunningGateway::start(self.practice_config(), listeners, Durability::Synced)
            .await
            .unwrap();
        started(&gw).await;
        gw
    }

    pub async fn start_wijkteam(&mut self) -> RunningGateway {
        let listeners = self.wijkteam.take().expect("wijkteam started once");
        let config = Config::load(&self.kit.wijkteam_config).unwrap();
        let gw = RunningGateway::start(config, listeners, Durability::Synced)
            .await
            .unwrap();
        started(&gw).await;
        gw
    }

    /// `--gateway URL --cert R.pem --key R.key --ca ca.pem` for credentials of `role`.
    pub fn online_args(&self, gw: &RunningGateway, role: &str) -> Vec<String> {
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

    pub fn offline_args(&self) -> Vec<String> {
        vec!["--config".into(), path(&self.kit.practice_config)]
    }
}

/// Waits until the gateway has recorded its start, so that the tests' own records follow it.
async fn started(gw: &RunningGateway) {
    let audit = gw.gateway.store.tree(wijkpoort::store::T::Audit);
    for _ in 0..500 {
        let last: Option<AuditRecord> = audit
            .last()
            .unwrap()
            .map(|(_, v)| serde_json::from_slice(&v).unwrap());
        if last.is_some_and(|r| r.event.event == Event::GatewayStarted) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the gateway did not record its start");
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
        .on_behalf_of(wijkpoort::pki::DEV_PRACTICE_ID)
        .subject(subject)
        .peer(wijkpoort::pki::DEV_WIJKTEAM_ID);
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
                    .on_behalf_of(wijkpoort::pki::DEV_PRACTICE_ID)
                    .reason(format!("filler {i}"))
            })
            .collect();
        gw.gateway.store.commit_audit(events).await.unwrap();
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

/// Opens with `open`, retrying while the store is locked: sled lets go of its file lock
/// when its background threads release the log file, shortly after the last handle of
/// the previous opener (a stopped gateway, a test's own handle) is dropped.
pub fn retry_open<S, E: std::fmt::Debug>(open: impl Fn() -> Result<S, E>) -> S {
    for _ in 0..300 {
        match open() {
            Ok(s) => return s,
            Err(e) if format!("{e:?}").contains("ock") => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("cannot open the store: {e:?}"),
        }
    }
    panic!("the store stays locked");
}
