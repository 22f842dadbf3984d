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
//! | [`Relay`] (per peer) | its peer, relay settings, TLS client config, issuing CAs, store, waker, local |
//! | [`AuditService`] | auditors, pseudonymiser, store, local, own certificate |
//! | [`LocalApi`] | API token, send path, consent desk, store, stats |
//! | [`Listener`] | TLS server config, issuing CAs, receive path, audit service, store, local |
//! | [`Ops`] (if `[ops]`) | the metrics registry, store, peers, own certificate's validity |
//!
//! One [`Metrics`] handle counts events: the store's committer tells it of the audit
//! records it commits and how long each group took, and the relays of their attempts.
//!
//! A reload ([`crate::reload`]: SIGHUP, `POST /v1/reload`, `wijkpoort reload`) reads and
//! validates the whole config file again; only if all of it is good does it replace the
//! peers (relays are started for new peers, stopped for removed ones, restarted for
//! changed ones), the auditors, the relay settings and the minimisation policy. What
//! cannot change in a running gateway (its role and identity, store, secret, addresses,
//! token, limits) makes the reload refuse with the field named. New own credentials are
//! kept in the store before the shared signer switches to them, and every relay restarts
//! to connect with them. New trust anchors, issuing CAs and revocation lists take effect
//! as new TLS configs (and issuers), swapped whole: new connections use them, and a
//! kept-alive connection whose certificate a new list revokes is refused at its next
//! request. The same happens when a list fetched from a CA's URL
//! ([`crate::revocation::fetch`]) arrives, and a watch of the config's files asks for a
//! reload when one changes. A removed peer's queued messages stay queued and visible; they are
//! delivered if the peer is configured again.
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
use crate::config::{Config, Peer, PeerName, Peers, RelaySettings};
use crate::consent_desk::ConsentDesk;
use crate::error::StartError;
use crate::identity::OrgId;
use crate::issuers::Issuers;
use crate::live::Live;
use crate::local::Local;
use crate::message::Bsn;
use crate::metrics::{Metrics, Sources};
use crate::minimise::Minimiser;
use crate::outbox::Wakers;
use crate::pseudonym::Pseudonymiser;
use crate::receive::ReceivePath;
use crate::relay::{Relay, RelayTls};
use crate::reload::{ReloadError, ReloadRequest, Reloaded, Reloader};
use crate::revocation::CrlSet;
use crate::send::SendPath;
use crate::server::audit::{AuditService, Verifying};
use crate::server::limits::Bounds;
use crate::server::listener::Listener;
use crate::server::local_api::LocalApi;
use crate::server::ops::{Ops, Readiness};
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
    relays: RelaySet,
    /// What a reload may replace, and the running config it is checked against.
    live: LiveParts,
    reloader: Reloader,
    reloads: tokio::sync::mpsc::Receiver<ReloadRequest>,
    ops: Ops,
    ops_listener: Option<TcpListener>,
    /// The watched files as they were when the config was read, so that a change made
    /// before the watch starts is still seen.
    watched_at_open: Vec<FileState>,
}

/// The parts of the config a reload replaces, shared with the parts that read them.
struct LiveParts {
    config: Config,
    peers: Live<Peers>,
    auditors: Live<Vec<OrgId>>,
    minimiser: Live<Minimiser>,
    server_tls: Live<Arc<rustls::ServerConfig>>,
    client_tls: Live<Arc<rustls::ClientConfig>>,
    crls: Live<CrlSet>,
    issuers: Live<Issuers>,
    /// The own TLS certificate's validity, for `/readyz` and the metrics.
    cert_validity: Live<(i64, i64)>,
    /// The signing certificate and trust anchors the auditor's online verify uses.
    verifying: Live<Verifying>,
    /// What the file watch looks at.
    watched: Live<Watched>,
    /// The commit point: a reload keeps new own certificates here before they sign.
    store: Store,
}

/// The files the watch looks at, and how often.
#[derive(Clone)]
struct Watched {
    files: Vec<std::path::PathBuf>,
    interval: Option<Duration>,
}

impl Watched {
    fn of(config: &Config) -> Watched {
        Watched {
            files: config.watched_files.clone(),
            interval: config.watch_interval,
        }
    }
}

/// The running relays, one per configured peer, and what each is built from.
struct RelaySet {
    running: Vec<RunningRelay>,
    settings: RelaySettings,
    tls: RelayTls,
    store: Store,
    wakers: Wakers,
    local: Arc<Local>,
    counters: Arc<Counters>,
    metrics: Metrics,
    tasks: JoinSet<()>,
}

struct RunningRelay {
    peer: Peer,
    stop: watch::Sender<bool>,
}

impl RelaySet {
    fn start(&mut self, peer: Peer) {
        let (stop, stopped) = watch::channel(false);
        let relay = Relay::new(
            peer.clone(),
            self.settings.clone(),
            self.tls.clone(),
            self.store.clone(),
            self.wakers.waker(&peer.name),
            self.local.clone(),
            self.counters.clone(),
        )
        .with_metrics(self.metrics.clone());
        self.tasks.spawn(relay.run(stopped));
        self.running.push(RunningRelay { peer, stop });
    }

    /// Stops the relay of `name`; it records its last round's outcomes on the way out.
    fn stop(&mut self, name: &PeerName) {
        if let Some(i) = self.running.iter().position(|r| r.peer.name == *name) {
            let _ = self.running.remove(i).stop.send(true);
        }
    }

    fn stop_all(&mut self) {
        for r in self.running.drain(..) {
            let _ = r.stop.send(true);
        }
    }

    /// Brings the relays in line with `peers` and `settings`; with `reconnect` (new own
    /// credentials) every relay is restarted, so that it connects with the new client
    /// certificate rather than keep its connection of the old one.
    fn apply(&mut self, peers: &Peers, settings: &RelaySettings, reconnect: bool) -> Reloaded {
        let mut done = Reloaded {
            relay_settings_changed: *settings != self.settings,
            ..Reloaded::default()
        };
        self.settings = settings.clone();
        let names: Vec<PeerName> = self.running.iter().map(|r| r.peer.name.clone()).collect();
        for name in names {
            let old = self
                .running
                .iter()
                .find(|r| r.peer.name == name)
                .map(|r| r.peer.clone());
            match (old, peers.by_name(name.as_str())) {
                (Some(_), None) => {
                    self.stop(&name);
                    done.peers_removed.push(name);
                }
                (Some(old), Some(new))
                    if old != *new || done.relay_settings_changed || reconnect =>
                {
                    self.stop(&name);
                    self.start(new.clone());
                    if old != *new {
                        done.peers_changed.push(name);
                    }
                }
                _ => {}
            }
        }
        for peer in peers.iter() {
            if !self.running.iter().any(|r| r.peer.name == peer.name) {
                self.start(peer.clone());
                done.peers_added.push(peer.name.clone());
            }
        }
        while self.tasks.try_join_next().is_some() {}
        done
    }
}

impl Gateway {
    /// Opens the store and builds every part from `config`.
    pub fn open(config: Config, durability: Durability) -> Result<Gateway, StartError> {
        Gateway::open_with_clock(config, durability, Clock::system())
    }

    /// As [`Gateway::open`], with the clock every part reads "now" and "today" from.
    pub fn open_with_clock(
        mut config: Config,
        durability: Durability,
        clock: Clock,
    ) -> Result<Gateway, StartError> {
        crate::server::limits::check_descriptors(&config.limits).map_err(|problem| {
            crate::config::ConfigError {
                file: config.path.clone(),
                field: "limits.max_connections".into(),
                problem,
            }
        })?;
        let bounds = Bounds::new(&config.limits, config.store_dir.clone());
        let store = Store::open_with(
            &config.store_dir,
            config.signer.clone(),
            config.data_key.clone(),
            durability,
        )?;
        config.earlier_certificates = earlier_own_certificates(
            &config,
            store
                .tree(crate::store::T::Certificates)
                .iter()
                .flatten()
                .map(|(_, der)| der.to_vec()),
            clock.now(),
        );
        let server_tls = Live::new(crate::tls::server_config(&config)?);
        let client_tls = Live::new(crate::tls::client_config(&config)?);
        let crls = Live::new(config.crls.clone());
        let issuers = Live::new(config.issuers.clone());
        let cert_validity = Live::new(
            config
                .cert_chain
                .first()
                .map(|c| crate::server::ops::validity(c))
                .unwrap_or_default(),
        );
        let verifying = Live::new(Verifying {
            certificate: config.signing_chain.first().map(|c| c.to_vec()),
            trust_anchors: config.trust_anchors.clone(),
        });
        warn_about_revocation(&config);
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
        let minimiser = Live::new(Minimiser::new(
            config.policy.clone(),
            minimisation_key.as_ref(),
        ));
        let pseudonymiser = Pseudonymiser::new(&config.secret);
        let peers = Live::new(config.peers.clone());
        let auditors = Live::new(config.auditors.clone());
        let wakers = Wakers::for_peers(config.peers.iter().map(|p| &p.name));
        let (reloader, reloads) = Reloader::new();
        let metrics = Metrics::default();
        metrics.watch_peers(peers.clone());
        let observer: Arc<dyn crate::store::CommitObserver> = Arc::new(metrics.clone());
        let _ = store.stats().observer.set(observer);
        let watched_at_open = file_states(&config.watched_files);
        let ops = Ops::new(
            metrics.registry(Sources {
                store: store.clone(),
                store_dir: config.store_dir.clone(),
                counters: counters.clone(),
                peers: peers.clone(),
                cert_validity: cert_validity.clone(),
                crls: crls.clone(),
            }),
            Readiness {
                store: store.clone(),
                metrics: metrics.clone(),
                peers: peers.clone(),
                crls: crls.clone(),
                cert_validity: cert_validity.clone(),
            },
        );

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
            config.consent_rules,
        );
        let receive = ReceivePath::new(
            local.clone(),
            peers.clone(),
            store.clone(),
            minimiser.clone(),
            pseudonymiser.clone(),
        );
        let relays = RelaySet {
            running: Vec::new(),
            settings: config.relay.clone(),
            tls: RelayTls {
                config: client_tls.clone(),
                crls: crls.clone(),
                issuers: issuers.clone(),
            },
            store: store.clone(),
            wakers,
            local: local.clone(),
            counters: counters.clone(),
            metrics,
            tasks: JoinSet::new(),
        };
        let audit = AuditService::new(
            auditors.clone(),
            pseudonymiser.clone(),
            store.clone(),
            local.clone(),
            verifying.clone(),
        );
        let local_api = LocalApi::new(
            &config.api_token,
            send,
            desk,
            store.clone(),
            local.clone(),
            stats.clone(),
            reloader.clone(),
            bounds.clone(),
        );
        let listener = Listener::new(
            server_tls.clone(),
            crls.clone(),
            issuers.clone(),
            receive,
            audit,
            store.clone(),
            local.clone(),
            counters,
            bounds,
        );
        Ok(Gateway {
            local,
            store: store.clone(),
            pseudonymiser,
            stats,
            local_api,
            listener,
            relays,
            live: LiveParts {
                watched: Live::new(Watched::of(&config)),
                config,
                peers,
                auditors,
                minimiser,
                server_tls,
                client_tls,
                crls,
                issuers,
                cert_validity,
                verifying,
                store: store.clone(),
            },
            reloader,
            reloads,
            ops,
            ops_listener: None,
            watched_at_open,
        })
    }

    /// Serves the ops listener on `listener` (bound early by `serve`); without one, the
    /// gateway binds `[ops] listen` itself when it starts, if configured.
    pub fn with_ops_listener(mut self, listener: Option<TcpListener>) -> Gateway {
        self.ops_listener = listener;
        self
    }

    /// The handle that asks this gateway to reload its configuration.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
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
            pseudonymiser,
            local_api,
            listener,
            mut relays,
            mut live,
            mut reloads,
            reloader,
            ops,
            ops_listener,
            watched_at_open,
            ..
        } = self;
        let ops_listener = match ops_listener {
            Some(l) => Some(l),
            None => match &live.config.ops {
                Some(o) => Some(bind(o.listen).await?),
                None => None,
            },
        };
        // The own certificate goes into the store before anything is signed with its key.
        let started = local.own_event(Event::GatewayStarted, Outcome::Success);
        let own = own_certificates(&live.config);
        store
            .commit(move |tx| {
                for cert in &own {
                    crate::store::keep_certificate(tx, cert)?;
                }
                tx.audit(started);
                Ok::<_, crate::store::StoreError>(())
            })
            .await?;
        tracing::info!(
            role = ?local.role,
            identity = %local.identity,
            local_api = %listeners.local_api.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            listener = %listeners.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            peers = live.config.peers.len(),
            "gateway started"
        );

        let (stop_tx, stop_rx) = watch::channel(false);
        let (ops_done_tx, ops_done_rx) = watch::channel(false);
        let ops_task = ops_listener.map(|l| {
            tracing::info!(ops = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "ops listener started");
            tokio::spawn(ops.serve(l, stop_rx.clone(), ops_done_rx))
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(local_api.serve(listeners.local_api, stop_rx.clone()));
        // The CAs' lists from their URLs: fetched before the first mTLS connection is
        // taken or made (bounded by the fetch timeout; an unreachable CA leaves the cached
        // copy in force). The local API already takes submissions meanwhile.
        let (fetched_tx, mut fetched_rx) = tokio::sync::mpsc::channel(16);
        let mut fetchers = Fetchers::start(&live.config.crl_urls, &fetched_tx);
        if !live.config.crl_urls.is_empty() {
            let first_round = async {
                for _ in 0..live.config.crl_urls.len() {
                    match fetched_rx.recv().await {
                        Some(f) => apply_fetched(&mut live, f).await,
                        None => break,
                    }
                }
            };
            let limit = crate::revocation::fetch::FETCH_TIMEOUT + Duration::from_secs(1);
            if tokio::time::timeout(limit, first_round).await.is_err() {
                tracing::warn!("not every revocation list could be fetched at start; the cached copies stay in force");
            }
        }
        for peer in live.config.peers.iter() {
            relays.start(peer.clone());
        }
        tasks.spawn(listener.serve(listeners.listener, stop_rx.clone()));
        tasks.spawn(crate::retention::run_daily(
            store.clone(),
            live.config.retention.clone(),
            local.clock.clone(),
            pseudonymiser,
            stop_rx.clone(),
        ));
        tasks.spawn(watch_files(
            live.watched.clone(),
            watched_at_open,
            reloader.clone(),
            stop_rx.clone(),
        ));

        tokio::pin!(shutdown);
        let failed = store.clone();
        let failed = failed.failed();
        tokio::pin!(failed);
        let mut failure = None;
        // A stale revocation list's grace period ends while the gateway runs: look every
        // minute whether enforcement changed, and rebuild the TLS configs if it did.
        let mut revocation_tick = tokio::time::interval(Duration::from_secs(60));
        let mut enforced = live.config.crls.enforce_expiry(chrono::Utc::now());
        let mut expiry = ExpiryWarnings::default();
        expiry.check(&live.config, chrono::Utc::now());
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                reason = &mut failed => {
                    // The store refuses every write until it is reopened: stop, and exit
                    // non-zero so that a supervisor restarts the gateway.
                    tracing::error!(reason = %reason, "the store failed; stopping the gateway");
                    failure = Some(reason);
                    break;
                }
                _ = revocation_tick.tick() => {
                    expiry.check(&live.config, chrono::Utc::now());
                    let now_enforced = live.config.crls.enforce_expiry(chrono::Utc::now());
                    if now_enforced != enforced {
                        match (crate::tls::server_config(&live.config), crate::tls::client_config(&live.config)) {
                            (Ok(server), Ok(client)) => {
                                tracing::warn!("a revocation list's grace period ended: its CA's certificates are refused until a fresh list is loaded");
                                live.server_tls.replace(server);
                                live.client_tls.replace(client);
                                enforced = now_enforced;
                            }
                            (Err(e), _) | (_, Err(e)) => tracing::error!(error = %e, "cannot rebuild the TLS configs"),
                        }
                    }
                }
                Some(fetched) = fetched_rx.recv() => apply_fetched(&mut live, fetched).await,
                Some(request) = reloads.recv() => {
                    let outcome = reload(&mut live, &mut relays).await;
                    match &outcome {
                        Ok(done) => {
                            tracing::info!(
                                added = done.peers_added.len(),
                                removed = done.peers_removed.len(),
                                changed = done.peers_changed.len(),
                                credentials = done.credentials_reloaded,
                                "configuration reloaded"
                            );
                            // A reload also fetches the URLs' lists at once (new ones if
                            // the URLs changed).
                            if fetchers.urls != live.config.crl_urls {
                                fetchers.stop();
                                fetchers = Fetchers::start(&live.config.crl_urls, &fetched_tx);
                            } else {
                                fetchers.now.notify_waiters();
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "reload refused; the running configuration and credentials stay"),
                    }
                    let _ = request.reply.send(outcome);
                }
            }
        }
        tracing::info!("stopping: draining connections and relays");
        let _ = stop_tx.send(true);
        fetchers.stop();
        relays.stop_all();
        // A failed store can commit nothing more: a short drain, then out.
        let grace = if failure.is_some() {
            Duration::from_secs(1)
        } else {
            GRACE
        };
        let drained = tokio::time::timeout(grace, async {
            while tasks.join_next().await.is_some() {}
            while relays.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "some tasks did not stop in time; aborting them"
            );
            tasks.abort_all();
            relays.tasks.abort_all();
        }
        let _ = ops_done_tx.send(true);
        if let Some(task) = ops_task {
            let _ = tokio::time::timeout(GRACE, task).await;
        }
        if let Some(reason) = failure {
            let closing = store.clone();
            let _ = tokio::task::spawn_blocking(move || closing.close()).await;
            return Err(StartError::Other(format!(
                "the store failed ({reason}); restart the gateway (nothing accepted before is lost)"
            )));
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

/// The own certificates a signature or handshake may name: the TLS chain and the
/// signing chain, each once.
fn own_certificates(config: &Config) -> Vec<Vec<u8>> {
    let mut own: Vec<Vec<u8>> = Vec::new();
    for cert in config.cert_chain.iter().chain(&config.signing_chain) {
        if !own.iter().any(|c| c.as_slice() == cert.as_ref()) {
            own.push(cert.to_vec());
        }
    }
    own
}

/// The own certificates among `candidates` that are not `config`'s current ones, name
/// its organisation and are still valid at `now`: their keys may have signed messages
/// still queued, so the gateway presents them (see `crate::caller`).
fn earlier_own_certificates(
    config: &Config,
    candidates: impl Iterator<Item = Vec<u8>>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let current = own_certificates(config);
    let mut earlier: Vec<rustls::pki_types::CertificateDer<'static>> = Vec::new();
    for der in candidates {
        if current.contains(&der) || earlier.iter().any(|e| e.as_ref() == der.as_slice()) {
            continue;
        }
        let ours =
            crate::identity::identify(&der).is_ok_and(|id| id.organisation_id == config.identity);
        let valid = crate::identity::not_after(&der).is_some_and(|end| end > now)
            && crate::identity::not_before(&der).is_some_and(|start| start <= now);
        if ours && valid {
            earlier.push(der.into());
        }
    }
    earlier
}

/// Reads the config file again and, if all of it is valid and only what may change did,
/// applies it; otherwise changes nothing. New own credentials (TLS or signing
/// certificate and key) are kept in the store — on disk — before the signer switches to
/// them, so that everything signed afterwards can be verified by its certificate's
/// fingerprint.
async fn reload(live: &mut LiveParts, relays: &mut RelaySet) -> Result<Reloaded, ReloadError> {
    let mut new = Config::load(&live.config.path)?;
    let old = &live.config;
    // What a running gateway cannot change: its role and identity (the organisation
    // its certificates must keep naming), where its store is and what keys it, and the
    // sockets it holds.
    let fixed: [(&'static str, bool); 12] = [
        ("role", new.role == old.role),
        ("identity", new.identity == old.identity),
        ("store_dir", new.store_dir == old.store_dir),
        ("secret_key_file", new.secret == old.secret),
        ("data_key_file", new.data_key.id() == old.data_key.id()),
        ("retention", new.retention == old.retention),
        ("local_api.listen", new.local_api == old.local_api),
        ("local_api.token_file", new.api_token == old.api_token),
        ("listener.listen", new.listener == old.listener),
        ("limits", new.limits == old.limits),
        ("ops.listen", new.ops == old.ops),
        // The consent desk holds its bounds from the start.
        ("consent", new.consent_rules == old.consent_rules),
    ];
    if let Some((field, _)) = fixed.iter().find(|(_, same)| !same) {
        return Err(ReloadError::NeedsRestart { field });
    }
    // The certificates being replaced may have signed messages still queued: they are
    // presented too while they are valid.
    new.earlier_certificates = earlier_own_certificates(
        &new,
        old.earlier_certificates
            .iter()
            .map(|c| c.to_vec())
            .chain(old.cert_chain.first().map(|c| c.to_vec()))
            .chain(old.signing_chain.first().map(|c| c.to_vec())),
        chrono::Utc::now(),
    );
    // Own credentials, trust anchors and revocation lists: new TLS configs, built before
    // anything is swapped, so that a failure leaves the running ones in place.
    let server_tls = crate::tls::server_config(&new).map_err(ReloadError::Tls)?;
    let client_tls = crate::tls::client_config(&new).map_err(ReloadError::Tls)?;
    let credentials_changed = new.cert_chain != old.cert_chain
        || new.signing_chain != old.signing_chain
        || new.signer.public_key() != old.signer.public_key();
    if credentials_changed {
        let own = own_certificates(&new);
        let tls_fp = new
            .cert_chain
            .first()
            .map(|c| crate::signing::fingerprint(c))
            .unwrap_or_default();
        let signing_fp = new.signer.certificate().unwrap_or_default();
        let event = crate::chain::AuditEvent::new(
            Event::CredentialsReloaded,
            Outcome::Success,
            crate::chain::Actor::Gateway,
        )
        .on_behalf_of(new.identity.as_str())
        .reason(format!(
            "TLS certificate {tls_fp}, signing certificate {signing_fp}"
        ));
        live.store
            .commit(move |tx| {
                for cert in &own {
                    crate::store::keep_certificate(tx, cert)?;
                }
                tx.audit(event);
                Ok::<_, crate::store::StoreError>(())
            })
            .await
            .map_err(ReloadError::Store)?;
    }
    warn_about_revocation(&new);
    // The fetch history of the URLs' lists carries over (their lists were read again
    // from the cache, where every good fetch is kept).
    new.crls = new.crls.with_history_of(&old.crls);
    // One signer, shared by every part that signs: it takes the new key and certificate.
    old.signer.replace_with(&new.signer);
    new.signer = old.signer.clone();
    live.server_tls.replace(server_tls);
    live.client_tls.replace(client_tls);
    live.crls.replace(new.crls.clone());
    live.issuers.replace(new.issuers.clone());
    live.cert_validity.replace(
        new.cert_chain
            .first()
            .map(|c| crate::server::ops::validity(c))
            .unwrap_or_default(),
    );
    live.verifying.replace(Verifying {
        certificate: new.signing_chain.first().map(|c| c.to_vec()),
        trust_anchors: new.trust_anchors.clone(),
    });
    live.watched.replace(Watched::of(&new));
    let root = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &new.secret);
    let minimisation_key = ring::hmac::sign(&root, b"wijkpoort minimisation pseudonym v1");
    live.minimiser.replace(Minimiser::new(
        new.policy.clone(),
        minimisation_key.as_ref(),
    ));
    live.peers.replace(new.peers.clone());
    live.auditors.replace(new.auditors.clone());
    let mut done = relays.apply(&new.peers, &new.relay, credentials_changed);
    done.auditors = new.auditors.len();
    done.credentials_reloaded = credentials_changed;
    if credentials_changed {
        tracing::info!(
            certificate = %new.cert_chain.first().map(|c| crate::signing::fingerprint(c)).unwrap_or_default(),
            signing_certificate = %new.signer.certificate().unwrap_or_default(),
            "own credentials reloaded: new connections and signatures use them"
        );
    }
    live.config = new;
    Ok(done)
}

/// The fetch task of each `tls.crl_urls` entry.
struct Fetchers {
    urls: Vec<String>,
    /// Asks every task to fetch at once.
    now: Arc<tokio::sync::Notify>,
    stop: watch::Sender<bool>,
}

impl Fetchers {
    fn start(
        urls: &[String],
        to: &tokio::sync::mpsc::Sender<crate::revocation::fetch::Fetched>,
    ) -> Fetchers {
        let now = Arc::new(tokio::sync::Notify::new());
        let (stop, stopped) = watch::channel(false);
        for url in urls {
            tokio::spawn(crate::revocation::fetch::run(
                url.clone(),
                to.clone(),
                now.clone(),
                stopped.clone(),
            ));
        }
        Fetchers {
            urls: urls.to_vec(),
            now,
            stop,
        }
    }

    fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Takes what a fetch brought: a good list is kept on disk and put in force (new TLS
/// configs; a kept-alive connection whose certificate it revokes is refused at its next
/// request, as after a reload); a bad one or a failure is noted and the list held stays.
async fn apply_fetched(live: &mut LiveParts, fetched: crate::revocation::fetch::Fetched) {
    let crate::revocation::fetch::Fetched { url, at, outcome } = fetched;
    if !live.config.crl_urls.contains(&url) {
        return; // from a URL a reload removed
    }
    let bytes = match outcome {
        Ok(bytes) => bytes,
        Err(e) => {
            let set = live.config.crls.with_failure(&url, at, &e);
            live.config.crls = set.clone();
            live.crls.replace(set);
            return;
        }
    };
    let set = match live.config.crls.with_fetched(&url, &bytes, at) {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!(url = %url, error = %e, "a fetched revocation list is refused; the list held stays in force");
            let set = live.config.crls.with_failure(&url, at, &e);
            live.config.crls = set.clone();
            live.crls.replace(set);
            return;
        }
    };
    if let Some(f) = set.fetches().iter().find(|f| f.url == url) {
        let cache = f.cache.clone();
        let write = tokio::task::spawn_blocking(move || {
            crate::revocation::fetch::write_cache(&cache, &bytes).map_err(|e| (cache, e))
        })
        .await;
        match write {
            Ok(Ok(())) => {}
            Ok(Err((cache, e))) => {
                tracing::error!(url = %url, cache = %cache.display(), error = %e, "cannot keep the revocation list on disk; it is in force but the next start will not have it")
            }
            Err(e) => tracing::error!(url = %url, error = %e, "writing the revocation list cache"),
        }
    }
    let previous = std::mem::replace(&mut live.config.crls, set.clone());
    match (
        crate::tls::server_config(&live.config),
        crate::tls::client_config(&live.config),
    ) {
        (Ok(server), Ok(client)) => {
            live.server_tls.replace(server);
            live.client_tls.replace(client);
            live.crls.replace(set.clone());
            for s in set
                .states()
                .into_iter()
                .filter(|s| s.source == crate::revocation::CrlSource::Url(url.clone()))
            {
                tracing::info!(url = %url, issuer = %s.issuer, this_update = %s.this_update, next_update = ?s.next_update, revoked = s.revoked, "revocation list fetched");
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(url = %url, error = %e, "cannot build the TLS configs with the fetched revocation list; the list held stays in force");
            live.config.crls = previous;
        }
    }
}

/// Looks at the watched files every interval and asks for a reload once a change has
/// held still for one interval (so that a certificate and its key, written one after
/// the other, reload together). The reload itself says what it did or why it refused.
async fn watch_files(
    watched: Live<Watched>,
    mut last: Vec<FileState>,
    reloader: Reloader,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mut interval) = watched.current().interval else {
        return;
    };
    let mut pending: Option<Vec<FileState>> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let files = watched.current().files.clone();
        let now = tokio::task::spawn_blocking(move || file_states(&files))
            .await
            .unwrap_or_default();
        if now == last {
            pending = None;
            continue;
        }
        if pending.as_ref() != Some(&now) {
            pending = Some(now);
            continue;
        }
        pending = None;
        tracing::info!("a file of the configuration changed; reloading");
        // The outcome is logged by the serve loop. What the reload read is (at least)
        // what was seen here; a change made meanwhile is seen at the next look.
        let _ = reloader.reload().await;
        last = now;
        interval = watched.current().interval.unwrap_or(interval);
    }
}

/// What the watch compares of a file: its modification time, size and SHA-256 (`None`:
/// it cannot be read).
type FileState = Option<(std::time::SystemTime, u64, Vec<u8>)>;

fn file_states(files: &[std::path::PathBuf]) -> Vec<FileState> {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok()?;
            let bytes = std::fs::read(f).ok()?;
            let hash = ring::digest::digest(&ring::digest::SHA256, &bytes);
            Some((meta.modified().ok()?, meta.len(), hash.as_ref().to_vec()))
        })
        .collect()
}

/// Warnings that the gateway's own certificate or a trust anchor is about to expire: at
/// start when either ends within 30 days, and again when one comes within 30 and within
/// 7 days — once per certificate and threshold, not every minute.
#[derive(Default)]
struct ExpiryWarnings {
    warned: std::collections::HashSet<(String, i64)>,
}

impl ExpiryWarnings {
    const THRESHOLDS: [i64; 2] = [30, 7];

    fn check(&mut self, config: &Config, now: chrono::DateTime<chrono::Utc>) {
        let own = config
            .cert_chain
            .first()
            .map(|c| ("own certificate", c.as_ref()));
        let anchors = config
            .trust_anchors
            .iter()
            .map(|c| ("trust anchor", c.as_ref()));
        for (what, der) in own.into_iter().chain(anchors) {
            if let Some(days) = self.due(der, now) {
                tracing::warn!(certificate = what, fingerprint = %crate::signing::fingerprint(der), days_left = days, "certificate expires soon; renew it and reload");
            }
        }
    }

    /// The days left on `der` when a threshold was newly crossed, once per threshold.
    fn due(&mut self, der: &[u8], now: chrono::DateTime<chrono::Utc>) -> Option<i64> {
        let days = (crate::identity::not_after(der)? - now).num_days();
        let fp = crate::signing::fingerprint(der);
        let mut newly = false;
        for threshold in Self::THRESHOLDS.into_iter().filter(|t| days <= *t) {
            newly |= self.warned.insert((fp.clone(), threshold));
        }
        newly.then_some(days)
    }
}

/// Says at start and on reload what revocation checking does: nothing without CRLs, and
/// which lists are stale.
fn warn_about_revocation(config: &Config) {
    if config.crls.is_empty() {
        tracing::warn!(
            "no revocation lists configured (tls.crls): revoked certificates are not refused"
        );
        return;
    }
    for url in config.crls.missing() {
        tracing::warn!(url = %url, "no revocation list from this URL yet (no cached copy): certificates of CAs without a list are refused until one is fetched");
    }
    for state in config.crls.stale(chrono::Utc::now()) {
        tracing::warn!(source = %state.source, issuer = %state.issuer, next_update = ?state.next_update, "revocation list is past its nextUpdate");
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

pub use crate::server::bind;

/// A gateway started in this process, for the demo, the benchmark and the tests: its
/// addresses, and read access to its store and pseudonyms.
pub struct RunningGateway {
    pub local_api: SocketAddr,
    pub listener: SocketAddr,
    store: Store,
    clock: Clock,
    pseudonymiser: Pseudonymiser,
    stats: Stats,
    reloader: Reloader,
    crls: Live<CrlSet>,
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
        let ops = crate::server::ops::bind(&config).await?;
        let gateway =
            Gateway::open_with_clock(config, durability, clock.clone())?.with_ops_listener(ops);
        let local_api = listeners
            .local_api
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?;
        let listener = listeners
            .listener
            .local_addr()
            .map_err(|e| StartError::Other(e.to_string()))?;
        let store = gateway.store.clone();
        let clock = gateway.local.clock.clone();
        let pseudonymiser = gateway.pseudonymiser.clone();
        let stats = gateway.stats.clone();
        let reloader = gateway.reloader();
        let crls = gateway.live.crls.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(listeners, async move {
            let _ = stopped.await;
        }));
        Ok(RunningGateway {
            local_api,
            listener,
            store,
            clock,
            pseudonymiser,
            stats,
            reloader,
            crls,
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

    /// Runs the retention purge now, by the gateway's clock (as its daily run does).
    pub async fn purge(
        &self,
        rules: &crate::retention::Retention,
    ) -> Result<crate::chain::PurgeSummary, crate::retention::PurgeError> {
        crate::retention::purge(
            &self.store,
            rules,
            self.clock.now(),
            self.clock.today(),
            &self.pseudonymiser,
            crate::chain::Actor::Gateway,
        )
        .await
    }

    /// Reloads the gateway's configuration from its file (as SIGHUP does).
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        self.reloader.reload().await
    }

    /// The revocation lists in force and how fetching each URL's goes (as `/readyz`
    /// shows them).
    pub fn revocation_lists(&self) -> Arc<CrlSet> {
        self.crls.current()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_warned_once_at_30_days_and_once_at_7() {
        let (_, cert) = crate::dev::pki::test_credentials();
        let end = crate::identity::not_after(&cert).unwrap();
        let mut w = ExpiryWarnings::default();
        assert_eq!(w.due(&cert, end - chrono::Duration::days(60)), None);
        assert_eq!(w.due(&cert, end - chrono::Duration::days(20)), Some(20));
        assert_eq!(w.due(&cert, end - chrono::Duration::days(19)), None);
        assert_eq!(w.due(&cert, end - chrono::Duration::days(5)), Some(5));
        assert_eq!(w.due(&cert, end - chrono::Duration::days(4)), None);
        // Starting within 7 days: one warning, not two.
        let mut fresh = ExpiryWarnings::default();
        assert_eq!(fresh.due(&cert, end - chrono::Duration::days(3)), Some(3));
        assert_eq!(fresh.due(&cert, end - chrono::Duration::days(3)), None);
    }
}
