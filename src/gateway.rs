//! A gateway: the place where its parts are built from the validated [`Config`] and
//! started together — the local API, the mTLS listener, one relay per peer — and stopped
//! together. Each part gets only the handles it needs:
//!
//! | part | holds |
//! | --- | --- |
//! | [`Local`] | role, identity, signing key, clock |
//! | [`SendPath`] | local, peers, store, minimiser, pseudonymiser, relay wakers |
//! | [`ConsentDesk`] | local, store, pseudonymiser, the send path |
//! | [`ReceivePath`] | local, peers, store, minimiser, pseudonymiser |
//! | [`Relay`] (per peer) | its peer, relay settings, TLS client config, store, waker, local |
//! | [`AuditService`] | auditors, pseudonymiser, store, local, own certificate |
//! | [`LocalApi`] | API token, send path, consent desk, store, stats |
//! | [`Listener`] | TLS server config, receive path, audit service, store, local |
//!
//! Shutdown follows mini-redis: a `watch` signal reaches every task; servers stop
//! accepting and let open connections finish their request; relays stop between
//! attempts. The drain is bounded by [`GRACE`]. Last, the gateway audits its own stop and
//! closes the store, whose committer writes a signed checkpoint before it exits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::chain::{Event, Outcome};
use crate::clock::Clock;
use crate::config::Config;
use crate::consent_desk::ConsentDesk;
use crate::error::StartError;
use crate::local::Local;
use crate::message::Bsn;
use crate::minimise::Minimiser;
use crate::outbox::Wakers;
use crate::pseudonym::Pseudonymiser;
use crate::receive::ReceivePath;
use crate::relay::Relay;
use crate::send::SendPath;
use crate::server::audit::AuditService;
use crate::server::listener::Listener;
use crate::server::local_api::LocalApi;
use crate::stats::{Counters, Stats};
use crate::store::{Durability, Store};

/// How long open connections and relay attempts get to finish at shutdown.
pub const GRACE: Duration = Duration::from_secs(10);

/// A gateway's parts, built and ready to start.
pub struct Gateway {
    local: Arc<Local>,
    store: Store,
    pseudonymiser: Pseudonymiser,
    stats: Stats,
    local_api: LocalApi,
    listener: Listener,
    relays: Vec<Relay>,
    peers: usize,
}

impl Gateway {
    /// Opens the store and builds every part from `config`.
    pub fn open(config: Config, durability: Durability) -> Result<Gateway, StartError> {
        Gateway::open_with_clock(config, durability, Clock::system())
    }

    /// As [`Gateway::open`], with the clock every part reads "now" and "today" from.
    pub fn open_with_clock(
        config: Config,
        durability: Durability,
        clock: Clock,
    ) -> Result<Gateway, StartError> {
        let store = Store::open_with(&config.store_dir, config.signer.clone(), durability)?;
        let server_tls = crate::tls::server_config(&config)?;
        let client_tls = crate::tls::client_config(&config)?;
        let local = Arc::new(Local {
            role: config.role,
            identity: config.identity.clone(),
            signer: config.signer.clone(),
            clock,
        });
        let counters = Arc::new(Counters::default());
        let stats = Stats {
            store: store.clone(),
            counters: counters.clone(),
        };
        // The minimisation HMAC gets its own key, derived from the gateway's secret.
        let root = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &config.secret);
        let minimisation_key = ring::hmac::sign(&root, b"wijkpoort minimisation pseudonym v1");
        let minimiser = Arc::new(Minimiser::new(
            config.policy.clone(),
            minimisation_key.as_ref(),
        ));
        let pseudonymiser = Pseudonymiser::new(&config.secret);
        let peers = Arc::new(config.peers.clone());
        let wakers = Wakers::for_peers(peers.iter().map(|p| &p.name));

        let send = SendPath::new(
            local.clone(),
            peers.clone(),
            store.clone(),
            minimiser.clone(),
            pseudonymiser.clone(),
            wakers.clone(),
        );
        let desk = ConsentDesk::new(
            local.clone(),
            store.clone(),
            pseudonymiser.clone(),
            send.clone(),
        );
        let receive = ReceivePath::new(
            local.clone(),
            peers.clone(),
            store.clone(),
            minimiser,
            pseudonymiser.clone(),
        );
        let relays = peers
            .iter()
            .map(|peer| {
                Relay::new(
                    peer.clone(),
                    config.relay.clone(),
                    client_tls.clone(),
                    store.clone(),
                    wakers.waker(&peer.name),
                    local.clone(),
                    counters.clone(),
                )
            })
            .collect();
        let audit = AuditService::new(
            config.auditors.clone(),
            pseudonymiser.clone(),
            store.clone(),
            local.clone(),
            config.cert_chain.first().map(|c| c.to_vec()),
        );
        let local_api = LocalApi::new(
            &config.api_token,
            send,
            desk,
            store.clone(),
            local.clone(),
            stats.clone(),
        );
        let listener = Listener::new(
            server_tls,
            receive,
            audit,
            store.clone(),
            local.clone(),
            counters,
        );
        Ok(Gateway {
            local,
            store,
            pseudonymiser,
            stats,
            local_api,
            listener,
            relays,
            peers: peers.len(),
        })
    }

    /// Serves until `shutdown` completes, then drains and stops.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartError> {
        let Gateway {
            local,
            store,
            local_api,
            listener,
            relays,
            peers,
            ..
        } = self;
        store
            .commit_audit(vec![
                local.own_event(Event::GatewayStarted, Outcome::Success)
            ])
            .await?;
        tracing::info!(
            role = ?local.role,
            identity = %local.identity,
            local_api = %listeners.local_api.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            listener = %listeners.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            peers,
            "gateway started"
        );

        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for relay in relays {
            tasks.spawn(relay.run(stop_rx.clone()));
        }
        tasks.spawn(local_api.serve(listeners.local_api, stop_rx.clone()));
        tasks.spawn(listener.serve(listeners.listener, stop_rx.clone()));

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
        store
            .commit_audit(vec![
                local.own_event(Event::GatewayStopped, Outcome::Success)
            ])
            .await?;
        let closing = store.clone();
        tokio::task::spawn_blocking(move || closing.close())
            .await
            .map_err(|e| StartError::Other(format!("closing the store: {e}")))?;
        tracing::info!("gateway stopped");
        Ok(())
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
    Gateway::open(config, durability)?
        .serve(listeners, shutdown)
        .await
}

/// A gateway started in this process, for the demo, the benchmark and the tests: its
/// addresses, and read access to its store and pseudonyms.
pub struct RunningGateway {
    pub local_api: SocketAddr,
    pub listener: SocketAddr,
    store: Store,
    pseudonymiser: Pseudonymiser,
    stats: Stats,
    clock: Clock,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), StartError>>,
}

impl RunningGateway {
    pub async fn start(
        config: Config,
        listeners: Listeners,
        durability: Durability,
    ) -> Result<RunningGateway, StartError> {
        RunningGateway::start_with_clock(config, listeners, durability, Clock::system()).await
    }

    /// As [`RunningGateway::start`], on a clock the caller can move.
    pub async fn start_with_clock(
        config: Config,
        listeners: Listeners,
        durability: Durability,
        clock: Clock,
    ) -> Result<RunningGateway, StartError> {
        let gateway = Gateway::open_with_clock(config, durability, clock.clone())?;
        let local_api = listeners
            .local_api
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?;
        let listener = listeners
            .listener
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?;
        let store = gateway.store.clone();
        let pseudonymiser = gateway.pseudonymiser.clone();
        let stats = gateway.stats.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(listeners, async move {
            let _ = stopped.await;
        }));
        Ok(RunningGateway {
            local_api,
            listener,
            store,
            pseudonymiser,
            stats,
            clock,
            stop: Some(stop),
            task,
        })
    }

    /// The gateway's store (to read it, or to commit audit records in tests).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The pseudonym the gateway gives a child's BSN.
    pub fn pseudonym(&self, bsn: Option<&Bsn>) -> Option<String> {
        bsn.map(|b| self.pseudonymiser.pseudonym(b))
    }

    /// What `/v1/stats` would answer.
    pub fn stats(&self) -> serde_json::Value {
        self.stats.snapshot()
    }

    /// The clock every part of this gateway reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
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
