//! Counters for operators and the benchmark (`GET /v1/stats`): how often the commit point
//! ran, handshakes made and taken, what waits in the outbox and the inbox, how long the
//! audit chain is. Reads the store's trees and counters; changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::store::{Store, T};

/// TLS handshakes, counted by the relays and the mTLS listener.
#[derive(Debug, Default)]
pub struct Counters {
    /// TLS handshakes this gateway's relays made (connections to peers).
    pub handshakes_out: AtomicU64,
    /// TLS handshakes the mTLS listener completed.
    pub handshakes_in: AtomicU64,
    /// Connections the mTLS listener accepted (bounded by the handshake rate limit).
    pub accepts_in: Arc<AtomicU64>,
    /// Accepts of the mTLS listener that failed (EMFILE: out of file descriptors), each
    /// followed by a short back-off.
    pub accept_failures_in: Arc<AtomicU64>,
}

/// What `/v1/stats` reports, read when asked.
#[derive(Clone)]
pub struct Stats {
    pub store: Store,
    pub counters: Arc<Counters>,
}

impl Stats {
    pub fn snapshot(&self) -> serde_json::Value {
        let c = self.store.stats();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "commit_groups": load(&c.groups),
            "commit_jobs": load(&c.jobs),
            "commit_syncs": load(&c.syncs),
            "handshakes_in": load(&self.counters.handshakes_in),
            "accepts_in": load(&self.counters.accepts_in),
            "accept_failures_in": load(&self.counters.accept_failures_in),
            "handshakes_out": load(&self.counters.handshakes_out),
            // The queue and the inbox hold only what is waiting, so counting them is
            // cheap; the totals come from a counter and the head of the audit chain.
            "outbox_queued": self.store.tree(T::Outbox).len(),
            "received_total": crate::inbox::received_total(&self.store).ok(),
            "inbox_unacknowledged": self.store.tree(T::Inbox).len(),
            "audit_records": self.audit_records(),
        })
    }

    /// The sequence number of the last audit record: the chain is numbered from 1 with
    /// no gaps, so this is how many there are.
    fn audit_records(&self) -> Option<u64> {
        let (key, _) = self.store.tree(T::Audit).last().ok()??;
        key.as_ref().try_into().ok().map(u64::from_be_bytes)
    }
}
