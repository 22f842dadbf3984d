//! The auditor's side of the audit log: everything that reads what the store's
//! committer sealed ([`crate::chain`]), shared by the offline CLI and the mTLS listener's
//! audit routes ([`crate::server::audit`]):
//!
//! - [`verify`]: recompute the chain and check the signed checkpoints;
//! - [`query`]: records by child, message or period, the per-child access report, the
//!   consent log — always through an index;
//! - [`fhir`]: FHIR R4 `AuditEvent` and `Consent` resources in a `Bundle`;
//! - [`request`]: what an auditor can ask, executed the same way offline and online;
//! - [`render`]: table, CSV and JSON output;
//! - [`online`]: the auditor's mTLS client for the listener's audit routes;
//! - [`cli`]: `wijkpoort audit …`.
//!
//! It reads the store's trees and never writes them (its own `audit_read` records go
//! through the store's commit point like every other record); it knows nothing of the
//! send and receive paths or the servers.

use chrono::{DateTime, Utc};

use crate::store::{ReadOnlyStore, Store, StoreError, T};

pub use crate::chain::{
    checkpoint_bytes, index_run, Actor, AuditEvent, AuditRecord, Checkpoint, Event, Outcome,
    CHECKPOINT_EVERY, GENESIS_HASH,
};
pub use crate::pseudonym::Pseudonymiser;

pub mod cli;
pub mod evidence;
pub mod fhir;
pub mod online;
pub mod progress;
pub mod prove;
pub mod query;
pub mod render;
pub mod request;
pub mod verify;

/// Read access to the trees the audit log and the consent log live in: a running
/// gateway's [`Store`] or a stopped one's [`ReadOnlyStore`]. Everything an auditor asks
/// is answered through this, so the offline CLI and the listener share one code path.
pub trait AuditTrees: crate::store::Reader {
    fn tree(&self, tree: T) -> &sled::Tree;
    /// A value read from `tree`, opened with the data key if the tree is sealed.
    fn open_value(&self, tree: T, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StoreError>;
}

impl AuditTrees for Store {
    fn tree(&self, tree: T) -> &sled::Tree {
        Store::tree(self, tree)
    }
    fn open_value(&self, tree: T, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        Store::open_value(self, tree, key, stored)
    }
}

impl AuditTrees for ReadOnlyStore {
    fn tree(&self, tree: T) -> &sled::Tree {
        ReadOnlyStore::tree(self, tree)
    }
    fn open_value(&self, tree: T, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        ReadOnlyStore::open_value(self, tree, key, stored)
    }
}

/// Why an auditor's query could not be answered. (A log that fails verification is not
/// an error: it is the answer, see [`verify::VerifyReport`].)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("reading the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("audit record {seq} cannot be read ({problem}); run `wijkpoort audit verify`")]
    UnreadableRecord { seq: u64, problem: String },
    #[error("the index {index} points at audit record {seq}, which is missing; run `wijkpoort audit verify`")]
    DanglingIndex { index: &'static str, seq: u64 },
    #[error("an entry of the {tree} tree has a malformed key")]
    MalformedKey { tree: &'static str },
    #[error("consent event {number} of consent {consent_id:?} cannot be read: {problem}")]
    UnreadableConsentEvent {
        consent_id: String,
        number: u64,
        problem: String,
    },
    #[error(transparent)]
    UnknownEvent(#[from] crate::chain::UnknownEvent),
    #[error("the period is empty: `from` ({from}) is not before `to` ({to})")]
    EmptyPeriod {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    #[error("{field}: not a valid BSN (9 digits passing the elfproef)")]
    InvalidBsn { field: &'static str },
    #[error("{field}: {problem}")]
    InvalidParameter { field: String, problem: String },
    #[error("a query by BSN needs the gateway's secret: pass --config, or ask the gateway online")]
    NoSecret,
}

impl AuditError {
    /// Which parameter a refused query got wrong, as one of the known names — never the
    /// value, nor a name the caller made up (either could be a BSN), so it may go into
    /// an audit record.
    pub fn parameter(&self) -> &'static str {
        const KNOWN: [&str; 9] = [
            "bsn",
            "message_id",
            "peer",
            "event",
            "from",
            "to",
            "limit",
            "expect",
            "format",
        ];
        match self {
            AuditError::InvalidBsn { .. } => "bsn",
            AuditError::UnknownEvent(_) => "event",
            AuditError::EmptyPeriod { .. } => "period",
            AuditError::InvalidParameter { field, .. } => KNOWN
                .iter()
                .find(|k| field.trim_start_matches('-').replace('-', "_") == **k)
                .copied()
                .unwrap_or("parameter"),
            _ => "query",
        }
    }
}

impl From<sled::Error> for AuditError {
    fn from(e: sled::Error) -> AuditError {
        AuditError::Store(StoreError::Sled(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_parameter_is_named_without_its_value_or_a_made_up_name() {
        let made_up = AuditError::InvalidParameter {
            field: "111222333".into(),
            problem: "unknown parameter".into(),
        };
        assert_eq!(made_up.parameter(), "parameter");
        let from = AuditError::InvalidParameter {
            field: "--from".into(),
            problem: "\"111222333\" is neither a time nor a date".into(),
        };
        assert_eq!(from.parameter(), "from");
        assert_eq!(
            AuditError::UnknownEvent(crate::chain::UnknownEvent("111222333".into())).parameter(),
            "event"
        );
    }
}
