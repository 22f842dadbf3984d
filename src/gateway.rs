//! A running gateway: its shared state, and the tasks that serve it — the local API,
//! the mTLS listener, one relay per peer — started together and stopped together.
//!
//! Shutdown follows mini-redis: a `watch` signal reaches every task; servers stop
//! accepting and let open connections finish their request; relays stop between
//! attempts. The drain is bounded by [`GRACE`]. Last, the gateway audits its own stop and
//! closes the store, whose committer writes a signed checkpoint before it exits.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinSet;

use crate::audit::{Actor, AuditEvent, Event, Outcome, Pseudonymiser};
use crate::config::Config;
use crate::error::StartError;
use crate::message::Bsn;
use crate::minimise::Minimiser;
use crate::store::{Durability, Store};

/// How long open connections and relay attempts get to finish at shutdown.
pub const GRACE: Duration = Duration::from_secs(10);

/// Counters the benchmark and tests read.
#[derive(Debug, Default)]
pub struct Counters {
    /// TLS handshakes this gateway's relays made (connections to peers).
    pub handshakes_out: AtomicU64,
    /// TLS handshakes the mTLS listener completed.
    pub handshakes_in: AtomicU64,
}

/// State shared by every task of one gateway.
pub struct Gateway {
    pub config: Config,
    pub store: Store,
    pub pseudonymiser: Pseudonymiser,
    pub minimiser: Minimiser,
    pub counters: Counters,
    relay_wakeups: HashMap<String, Arc<Notify>>,
}

impl Gateway {
    pub fn open(config: Config, durability: Durability) -> Result<Arc<Gateway>, StartError> {
        let store = Store::open_with(&config.store_dir, config.signer.clone(), durability)?;
        let relay_wakeups = config
            .peers
            .iter()
            .map(|p| (p.name.clone(), Arc::new(Notify::new())))
            .collect();
        // The minimisation HMAC gets its own key, derived from the gateway's secret.
        let root = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &config.secret);
        let minimisation_key = ring::hmac::sign(&root, b"wijkpoort minimisation pseudonym v1");
        Ok(Arc::new(Gateway {
            minimiser: Minimiser::new(config.policy.clone(), minimisation_key.as_ref()),
            pseudonymiser: Pseudonymiser::new(&config.secret),
            config,
            store,
            counters: Counters::default(),
            relay_wakeups,
        }))
    }

    /// Tells the relay for `peer` that its outbox has work.
    pub fn wake_relay(&self, peer: &str) {
        if let Some(n) = self.relay_wakeups.get(peer) {
            n.notify_one();
        }
    }

    pub(crate) fn relay_wakeup(&self, peer: &str) -> Arc<Notify> {
        self.relay_wakeups
            .get(peer)
            .cloned()
            .unwrap_or_else(|| Arc::new(Notify::new()))
    }

    pub fn pseudonym(&self, bsn: Option<&Bsn>) -> Option<String> {
        bsn.map(|b| self.pseudonymiser.pseudonym(b))
    }

    /// Counters for operators and the benchmark.
    pub fn stats(&self) -> serde_json::Value {
        let c = self.store.stats();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "commit_groups": load(&c.groups),
            "commit_jobs": load(&c.jobs),
            "commit_syncs": load(&c.syncs),
            "handshakes_in": load(&self.counters.handshakes_in),
            "handshakes_out": load(&self.counters.handshakes_out),
            // The queue and the inbox hold only what is waiting, so counting them is
            // cheap; the totals come from a counter and the head of the audit chain.
            "outbox_queued": self.store.tree(crate::store::T::Outbox).len(),
            "received_total": crate::inbox::received_total(&self.store).ok(),
            "inbox_unacknowledged": self.store.tree(crate::store::T::Inbox).len(),
            "audit_records": self.audit_records(),
        })
    }

    /// The sequence number of the last audit record: the chain is numbered from 1 with
    /// no gaps, so this is how many there are.
    fn audit_records(&self) -> Option<u64> {
        let (key, _) = self.store.tree(crate::store::T::Audit).last().ok()??;
        key.as_ref().try_into().ok().map(u64::from_be_bytes)
    }

    /// An audit event for a step this gateway takes by itself.
    pub fn own_event(&self, event: Event, outcome: Outcome) -> AuditEvent {
        AuditEvent::new(event, outcome, Actor::Gateway).on_behalf_of(&self.config.identity)
    }
}

/// The two sockets a gateway serves on, bound before it starts (so that a test or the
/// demo can bind port 0 and learn the address).
pub struct Listeners {
    pub local_api: TcpListener,
    pub listener: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        Ok(Listeners {
            local_api: bind(config.local_api).await?,
            listener: bind(config.listener).await?,
        })
    }
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Runs a gateway until `shutdown` completes, then drains and stops it.
pub async fn run(
    config: Config,
    listeners: Listeners,
    durability: Durability,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let gateway = Gateway::open(config, durability)?;
    serve(gateway, listeners, shutdown).await
}

/// Serves an opened gateway until `shutdown` completes.
pub async fn serve(
    gateway: Arc<Gateway>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let tls = crate::tls::server_config(&gateway.config)?;
    let client_tls = crate::tls::client_config(&gateway.config)?;
    gateway
        .store
        .commit_audit(vec![
            gateway.own_event(Event::GatewayStarted, Outcome::Success)
        ])
        .await?;
    tracing::info!(
        role = ?gateway.config.role,
        identity = %gateway.config.identity,
        local_api = %listeners.local_api.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        listener = %listeners.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        peers = gateway.config.peers.len(),
        "gateway started"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for peer in gateway.config.peers.clone() {
        tasks.spawn(crate::relay::run(
            gateway.clone(),
            peer,
            client_tls.clone(),
            stop_rx.clone(),
        ));
    }
    tasks.spawn(crate::server::local_api::serve(
        gateway.clone(),
        listeners.local_api,
        stop_rx.clone(),
    ));
    tasks.spawn(crate::server::listener::serve(
        gateway.clone(),
        tls,
        listeners.listener,
        stop_rx.clone(),
    ));

    shutdown.await;
    tracing::info!("stopping: draining connections and relays");
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            grace_secs = GRACE.as_secs(),
            "some tasks did not stop in time; aborting them"
        );
        tasks.abort_all();
    }
    gateway
        .store
        .commit_audit(vec![
            gateway.own_event(Event::GatewayStopped, Outcome::Success)
        ])
        .await?;
    let store = gateway.store.clone();
    tokio::task::spawn_blocking(move || store.close())
        .await
        .map_err(|e| StartError::Other(format!("closing the store: {e}")))?;
    tracing::info!("gateway stopped");
    Ok(())
}

/// A gateway started in this process, for the demo, the benchmark and the tests.
pub struct RunningGateway {
    pub gateway: Arc<Gateway>,
    pub local_api: SocketAddr,
    pub listener: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), StartError>>,
}

impl RunningGateway {
    pub async fn start(
        config: Config,
        listeners: Listeners,
        durability: Durability,
    ) -> Result<RunningGateway, StartError> {
        let gateway = Gateway::open(config, durability)?;
        let local_api = listeners
            .local_api
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?;
        let listener = listeners
            .listener
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(gateway.clone(), listeners, async move {
            let _ = stopped.await;
        }));
        Ok(RunningGateway {
            gateway,
            local_api,
            listener,
            stop: Some(stop),
            task,
        })
    }

    /// Stops the gateway and waits until its store is closed.
    pub async fn stop(mut self) -> Result<(), StartError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| StartError::Other(format!("gateway task: {e}")))?
    }
}
