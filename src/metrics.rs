//! Metrics for operators, in the Prometheus text format (`GET /metrics` on the ops
//! listener, [`crate::server::ops`]), with the `prometheus-client` crate.
//!
//! Two kinds of source, so that the data path is touched in as few places as possible:
//!
//! - **Events, counted where they happen.** [`Metrics`] is one handle the gateway builds
//!   and hands to the parts that count. The store's committer tells it of every audit
//!   record it commits ([`crate::store::CommitObserver`]) — messages accepted, refused,
//!   delivered, received, withheld, expired are exactly what the audit log records, so
//!   the two cannot disagree — and of each group commit's duration; the relays count
//!   their attempts and failures ([`crate::relay::Relay::with_metrics`]).
//! - **State, read at scrape time** ([`Sources`]): outbox backlog and its oldest
//!   message's age per peer, the committer's and the TLS counters (handshakes, failures by
//!   reason), the time to the own certificate's expiry and to each peer's last presented
//!   one, the audit chain's length and its last checkpoint's age, the store's size on
//!   disk.
//!
//! Labels carry message types, refusal codes, peer names and directions only — never a
//! message id, a BSN or anything a person typed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::chain::{Actor, AuditEvent, Event};
use crate::config::{PeerName, Peers};
use crate::live::Live;
use crate::stats::Counters;
use crate::store::{CommitObserver, Store, T};

type Labels = Vec<(&'static str, String)>;

/// The counters the gateway's parts increment. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    inner: Arc<Families>,
}

struct Families {
    accepted: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    delivered: Family<Labels, Counter>,
    undelivered: Family<Labels, Counter>,
    received: Family<Labels, Counter>,
    relay_attempts: Family<Labels, Counter>,
    relay_failures: Family<Labels, Counter>,
    relay_failing: Family<Labels, Gauge>,
    commit_seconds: Histogram,
    fdatasync_seconds: Histogram,
    /// Unix milliseconds of the last group commit that succeeded (0: none yet).
    last_commit_ms: AtomicI64,
    /// The configured peers, to name a peer by its configured name in labels (the audit
    /// records name it by organisation identifier).
    peers: OnceLock<Live<Peers>>,
    observed: AtomicU64,
}

impl std::fmt::Debug for Families {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Families").finish_non_exhaustive()
    }
}

impl Default for Families {
    fn default() -> Families {
        Families {
            accepted: Family::default(),
            refused: Family::default(),
            delivered: Family::default(),
            undelivered: Family::default(),
            received: Family::default(),
            relay_attempts: Family::default(),
            relay_failures: Family::default(),
            relay_failing: Family::default(),
            // 100 µs to ~3.3 s.
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            // 25 µs to ~0.8 s: a raw fdatasync here is 0.2-0.25 ms.
            fdatasync_seconds: Histogram::new(exponential_buckets(0.000025, 2.0, 16)),
            last_commit_ms: AtomicI64::new(0),
            peers: OnceLock::new(),
            observed: AtomicU64::new(0),
        }
    }
}

/// How a relay's last attempt went, for `/readyz`'s body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayState {
    pub attempts: u64,
    pub failures: u64,
    /// Failed attempts since the last one that worked.
    pub failing_in_a_row: i64,
}

impl Metrics {
    /// Names peers in labels by their configured name, as `peers` says after each reload.
    pub fn watch_peers(&self, peers: Live<Peers>) {
        let _ = self.inner.peers.set(peers);
    }

    /// A relay attempt that sent something; `ok` when it did not end in a retry.
    pub fn relay_attempt(&self, peer: &PeerName, ok: bool) {
        let labels = peer_label(peer.as_str());
        self.inner.relay_attempts.get_or_create(&labels).inc();
        let failing = self.inner.relay_failing.get_or_create(&labels);
        if ok {
            failing.set(0);
        } else {
            failing.inc();
            self.inner.relay_failures.get_or_create(&labels).inc();
        }
    }

    /// The relay counts of `peer` (all zero before its first attempt).
    pub fn relay_state(&self, peer: &PeerName) -> RelayState {
        let labels = peer_label(peer.as_str());
        RelayState {
            attempts: self.inner.relay_attempts.get_or_create(&labels).get(),
            failures: self.inner.relay_failures.get_or_create(&labels).get(),
            failing_in_a_row: self.inner.relay_failing.get_or_create(&labels).get(),
        }
    }

    /// When the last group commit succeeded, in Unix milliseconds (`None`: not yet).
    pub fn last_commit_ms(&self) -> Option<i64> {
        match self.inner.last_commit_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    /// How many audit records the committer has reported (for tests).
    pub fn observed_records(&self) -> u64 {
        self.inner.observed.load(Ordering::Relaxed)
    }

    fn peer_name(&self, identity: &str) -> String {
        self.inner
            .peers
            .get()
            .and_then(|p| {
                p.current()
                    .by_identity(identity)
                    .map(|p| p.name.to_string())
            })
            .unwrap_or_else(|| identity.to_string())
    }

    /// Registers these counters and the scrape-time `sources` in a new registry.
    pub fn registry(&self, sources: Sources) -> Registry {
        let f = &self.inner;
        let mut r = Registry::default();
        r.register(
            "wijkpoort_messages_accepted",
            "Messages accepted into the outbox (durably queued), by type",
            f.accepted.clone(),
        );
        r.register(
            "wijkpoort_messages_refused",
            "Messages refused, by type, refusal code and stage (submit: by this gateway's send path; receive: sent to us by a peer; relay: our message refused by the peer)",
            f.refused.clone(),
        );
        r.register(
            "wijkpoort_messages_delivered",
            "Messages delivered to a peer with a valid receipt, by peer",
            f.delivered.clone(),
        );
        r.register(
            "wijkpoort_messages_undelivered",
            "Messages that left the outbox undelivered, by peer and reason (withheld: consent withdrawn or expired; expired: too old)",
            f.undelivered.clone(),
        );
        r.register(
            "wijkpoort_messages_received",
            "Messages received and stored, by type and peer",
            f.received.clone(),
        );
        r.register(
            "wijkpoort_relay_attempts",
            "Relay attempts that sent a batch, by peer",
            f.relay_attempts.clone(),
        );
        r.register(
            "wijkpoort_relay_failures",
            "Relay attempts that failed and will be retried, by peer",
            f.relay_failures.clone(),
        );
        r.register(
            "wijkpoort_relay_consecutive_failures",
            "Failed relay attempts since the last one that worked, by peer",
            f.relay_failing.clone(),
        );
        r.register(
            "wijkpoort_commit_duration_seconds",
            "Duration of a group commit: applying the group's writes, flush and fdatasync",
            f.commit_seconds.clone(),
        );
        r.register(
            "wijkpoort_fdatasync_duration_seconds",
            "Duration of the commit point's fdatasync of the store's log (and fsync of new blob files), part of a group commit",
            f.fdatasync_seconds.clone(),
        );
        r.register_collector(Box::new(sources));
        r
    }
}

fn peer_label(name: &str) -> Labels {
    vec![("peer", name.to_string())]
}

impl CommitObserver for Metrics {
    fn audited(&self, e: &AuditEvent) {
        let f = &self.inner;
        f.observed.fetch_add(1, Ordering::Relaxed);
        let kind = || {
            e.message_type
                .map(|t| t.as_str().to_string())
                .unwrap_or_else(|| "unknown".into())
        };
        let peer = || self.peer_name(e.peer.as_deref().unwrap_or("unknown"));
        match e.event {
            Event::MessageQueued => {
                f.accepted.get_or_create(&vec![("type", kind())]).inc();
            }
            Event::MessageRefused => {
                let stage = match e.actor {
                    Actor::User { .. } => "submit",
                    Actor::Gateway => "relay",
                    _ => "receive",
                };
                let code = match stage {
                    "relay" => "refused_by_peer".to_string(),
                    _ => refusal_code(e.reason.as_deref()),
                };
                f.refused
                    .get_or_create(&vec![
                        ("type", kind()),
                        ("code", code),
                        ("stage", stage.to_string()),
                    ])
                    .inc();
            }
            Event::MessageDelivered => {
                f.delivered.get_or_create(&vec![("peer", peer())]).inc();
            }
            Event::MessageWithheld | Event::MessageExpired => {
                let reason = if e.event == Event::MessageWithheld {
                    "withheld"
                } else {
                    "expired"
                };
                f.undelivered
                    .get_or_create(&vec![("peer", peer()), ("reason", reason.to_string())])
                    .inc();
            }
            Event::MessageReceived => {
                f.received
                    .get_or_create(&vec![("type", kind()), ("peer", peer())])
                    .inc();
            }
            _ => {}
        }
    }

    fn synced(&self, took: Duration) {
        self.inner.fdatasync_seconds.observe(took.as_secs_f64());
    }

    fn committed(&self, took: Duration) {
        self.inner.commit_seconds.observe(took.as_secs_f64());
        self.inner
            .last_commit_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }
}

/// The machine code at the start of a refusal's audit reason (`"code: sentence"`);
/// `other` when the reason has none.
fn refusal_code(reason: Option<&str>) -> String {
    let code = reason
        .and_then(|r| r.split_once(':'))
        .map(|(c, _)| c.trim())
        .unwrap_or("");
    if !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        code.to_string()
    } else {
        "other".into()
    }
}

/// What is read when the metrics are scraped.
pub struct Sources {
    pub store: Store,
    pub store_dir: PathBuf,
    pub counters: Arc<Counters>,
    pub peers: Live<Peers>,
    /// The own certificate's validity (notBefore, notAfter), Unix seconds.
    pub cert_validity: Live<(i64, i64)>,
    /// The revocation lists in force, and how fetching them goes.
    pub crls: Live<crate::revocation::CrlSet>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("store_dir", &self.store_dir)
            .finish_non_exhaustive()
    }
}

impl Sources {
    /// Seconds since the last signed checkpoint was made (`None`: none yet).
    pub fn last_checkpoint_age(&self) -> Option<f64> {
        let (_, bytes) = self.store.tree(T::Checkpoints).last().ok()??;
        let cp: crate::chain::Checkpoint = serde_json::from_slice(&bytes).ok()?;
        Some((chrono::Utc::now() - cp.time).num_milliseconds() as f64 / 1000.0)
    }

    /// The sequence number of the last audit record: the chain's length.
    pub fn audit_records(&self) -> u64 {
        self.store
            .tree(T::Audit)
            .last()
            .ok()
            .flatten()
            .and_then(|(k, _)| k.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0)
    }
}

/// Days from now until `not_after` (Unix seconds); negative once it has passed.
pub fn days_until(not_after: i64) -> f64 {
    (not_after - chrono::Utc::now().timestamp()) as f64 / 86_400.0
}

/// The bytes of the files under `dir` (the store's size on disk).
pub fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.store.stats();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counters: [(&str, &str, u64); 3] = [
            (
                "wijkpoort_commit_groups",
                "Group commits of the store's commit point",
                load(&stats.groups),
            ),
            (
                "wijkpoort_commit_jobs",
                "Jobs (state changes) committed",
                load(&stats.jobs),
            ),
            (
                "wijkpoort_fdatasync",
                "fdatasync calls at the commit point",
                load(&stats.syncs),
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }

        let mut handshakes = encoder.encode_descriptor(
            "wijkpoort_tls_handshakes",
            "TLS handshakes completed, by direction (in: the mTLS listener; out: the relays)",
            None,
            MetricType::Counter,
        )?;
        for (direction, value) in [
            ("in", load(&self.counters.handshakes_in)),
            ("out", load(&self.counters.handshakes_out)),
        ] {
            let labels = [("direction", direction)];
            ConstCounter::new(value).encode(handshakes.encode_family(&labels)?)?;
        }

        let failures: Vec<((&str, &str), u64)> = match self.counters.handshake_failures.lock() {
            Ok(m) => m.iter().map(|(k, v)| (*k, *v)).collect(),
            Err(_) => Vec::new(),
        };
        let mut failed = encoder.encode_descriptor(
            "wijkpoort_tls_handshake_failures",
            "TLS handshakes that failed, by direction (in: the mTLS listener; out: the relays) and reason",
            None,
            MetricType::Counter,
        )?;
        for ((direction, reason), value) in failures {
            let labels = [("direction", direction), ("reason", reason)];
            ConstCounter::new(value).encode(failed.encode_family(&labels)?)?;
        }

        let peers = self.peers.current();
        let seen: std::collections::HashMap<String, i64> =
            match self.counters.peer_certificates.lock() {
                Ok(m) => m.clone(),
                Err(_) => Default::default(),
            };
        let now = chrono::Utc::now();
        let mut peer_expiry = encoder.encode_descriptor(
            "wijkpoort_peer_certificate_expiry_seconds",
            "Seconds until the certificate each peer presented last (to the listener or a relay) expires; divide by 86400 for days",
            None,
            MetricType::Gauge,
        )?;
        for peer in peers.iter() {
            if let Some(not_after) = seen.get(peer.identity.as_str()) {
                let labels = [("peer", peer.name.as_str())];
                ConstGauge::new(not_after - now.timestamp())
                    .encode(peer_expiry.encode_family(&labels)?)?;
            }
        }

        let mut oldest = encoder.encode_descriptor(
            "wijkpoort_outbox_oldest_age_seconds",
            "Age of the oldest message waiting in the outbox, by configured peer (0: none waiting)",
            None,
            MetricType::Gauge,
        )?;
        for peer in peers.iter() {
            let labels = [("peer", peer.name.as_str())];
            let age = crate::outbox::oldest_queued_for_peer(&self.store, peer.name.as_str())
                .ok()
                .flatten()
                .map_or(0.0, |t| {
                    ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0)
                });
            ConstGauge::new(age).encode(oldest.encode_family(&labels)?)?;
        }

        if let Some(age) = self.last_checkpoint_age() {
            let g = ConstGauge::new(age);
            g.encode(encoder.encode_descriptor(
                "wijkpoort_audit_last_checkpoint_age_seconds",
                "Seconds since the audit chain's last signed checkpoint",
                None,
                g.metric_type(),
            )?)?;
        }

        let failures = ConstCounter::new(load(&self.counters.accept_failures_in));
        failures.encode(encoder.encode_descriptor(
            "wijkpoort_accept_failures",
            "Accepts of the mTLS listener that failed (out of file descriptors), each followed by a 100 ms back-off",
            None,
            failures.metric_type(),
        )?)?;

        let mut backlog = encoder.encode_descriptor(
            "wijkpoort_outbox_backlog",
            "Messages queued in the outbox, by configured peer",
            None,
            MetricType::Gauge,
        )?;
        for peer in peers.iter() {
            let labels = [("peer", peer.name.as_str())];
            let n = crate::outbox::queued_for_peer(&self.store, peer.name.as_str()) as i64;
            ConstGauge::new(n).encode(backlog.encode_family(&labels)?)?;
        }

        let gauges: [(&str, &str, i64); 3] = [
            (
                "wijkpoort_inbox_unacknowledged",
                "Received messages not yet acknowledged",
                self.store.tree(T::Inbox).len() as i64,
            ),
            (
                "wijkpoort_audit_records",
                "Length of the audit hash chain (its last sequence number)",
                self.audit_records() as i64,
            ),
            (
                "wijkpoort_store_size_bytes",
                "Size of the store's files on disk",
                dir_size(&self.store_dir) as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let now = chrono::Utc::now();
        let crls = self.crls.current();
        let mut next_update = encoder.encode_descriptor(
            "wijkpoort_crl_next_update_seconds",
            "Seconds until each revocation list's nextUpdate (negative: stale), by source (file or URL)",
            None,
            MetricType::Gauge,
        )?;
        for state in crls.states() {
            let source = state.source.to_string();
            let labels = [("crl", source.as_str())];
            let left = state
                .next_update
                .map(|n| (n - now).num_seconds())
                .unwrap_or(0);
            ConstGauge::new(left).encode(next_update.encode_family(&labels)?)?;
        }
        let mut failures = encoder.encode_descriptor(
            "wijkpoort_crl_fetch_failures",
            "Failed fetches of each tls.crl_urls entry since the gateway started",
            None,
            MetricType::Counter,
        )?;
        for fetch in crls.fetches() {
            let labels = [("crl", fetch.url.as_str())];
            ConstCounter::new(fetch.failures).encode(failures.encode_family(&labels)?)?;
        }
        let mut last_success = encoder.encode_descriptor(
            "wijkpoort_crl_last_success_seconds",
            "Seconds since each tls.crl_urls entry was last fetched successfully (-1: not since start)",
            None,
            MetricType::Gauge,
        )?;
        for fetch in crls.fetches() {
            let labels = [("crl", fetch.url.as_str())];
            let ago = fetch
                .last_success
                .map(|t| (now - t).num_seconds())
                .unwrap_or(-1);
            ConstGauge::new(ago).encode(last_success.encode_family(&labels)?)?;
        }
        let (_, cert_not_after) = *self.cert_validity.current();
        let expiry = ConstGauge::new(cert_not_after - now.timestamp());
        expiry.encode(encoder.encode_descriptor(
            "wijkpoort_certificate_expiry_seconds",
            "Seconds until the gateway's own TLS certificate expires (negative: expired); divide by 86400 for days",
            None,
            expiry.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Encodes `registry` in the Prometheus text format (version 0.0.4).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::error!(error = %e, "cannot encode the metrics");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_codes_come_from_the_reason() {
        assert_eq!(
            refusal_code(Some("consent_withdrawn: the consent was withdrawn")),
            "consent_withdrawn"
        );
        assert_eq!(refusal_code(Some("refused by wijkteam (422): x")), "other");
        assert_eq!(refusal_code(None), "other");
    }
}
