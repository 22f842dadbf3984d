//! Counters for operators and the benchmark (`GET /v1/stats`): how often the commit point
//! ran, handshakes made and taken (and, for the metrics, failed, and the certificates
//! peers presented), what waits in the outbox and the inbox, how long the audit chain
//! is. Reads the store's trees and counters; changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    /// Failed TLS handshakes by direction (`in`, `out`) and reason (a fixed word, see
    /// [`handshake_failure_reason`]), for the metrics.
    pub handshake_failures: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// The notAfter (Unix seconds) of the certificate each peer presented last, by its
    /// organisation identifier: seen by the listener (the peer as client) and the relays
    /// (the peer as server), whichever came later.
    pub peer_certificates: Mutex<HashMap<String, i64>>,
}

impl Counters {
    /// Counts a failed handshake.
    pub fn handshake_failed(&self, direction: &'static str, reason: &'static str) {
        if let Ok(mut m) = self.handshake_failures.lock() {
            *m.entry((direction, reason)).or_default() += 1;
        }
    }

    /// Notes the certificate a peer (by organisation identifier) just presented.
    pub fn peer_certificate_seen(&self, organisation: &str, cert_der: &[u8]) {
        let Some(not_after) = crate::identity::not_after(cert_der) else {
            return;
        };
        if let Ok(mut m) = self.peer_certificates.lock() {
            m.insert(organisation.to_string(), not_after.timestamp());
        }
    }
}

/// Why a TLS handshake failed, as a metric label: a fixed word, never the error's text
/// (which may name a host or carry a certificate's subject).
pub fn handshake_failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe => return "closed_early",
        std::io::ErrorKind::TimedOut => return "timeout",
        _ => {}
    }
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no_certificate",
        Some(Error::InvalidCertificate(c)) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate_expired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate_not_yet_valid"
            }
            CertificateError::Revoked => "certificate_revoked",
            CertificateError::UnknownIssuer => "unknown_issuer",
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "wrong_name"
            }
            _ => "bad_certificate",
        },
        Some(Error::AlertReceived(_)) => "alert_received",
        Some(Error::PeerIncompatible(_)) => "incompatible",
        Some(Error::PeerMisbehaved(_) | Error::InvalidMessage(_)) => "protocol_error",
        Some(_) => "tls_error",
        None => "io_error",
    }
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
            "commit_jobs_ns": load(&c.jobs_ns),
            "commit_transaction_ns": load(&c.transaction_ns),
            "commit_flush_ns": load(&c.flush_ns),
            "commit_fdatasync_ns": load(&c.fdatasync_ns),
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
