//! The audit log: what happened, who did it, about whom, and whether it worked — after
//! NEN 7513. Records are appended only by the store's committer, in the same sled
//! transaction as the state change they describe, and are hash-chained: each record's
//! hash is SHA-256 over the previous record's hash and this record's canonical bytes.
//! Every [`CHECKPOINT_EVERY`] records, and when the gateway stops, the committer signs a
//! checkpoint (sequence, hash, time) with the gateway's key, so that a verifier can prove
//! that nothing was altered and the log was not cut back.
//!
//! The log never holds a BSN, a name or free text: the child appears as a *pseudonym*,
//! a keyed HMAC-SHA256 of the BSN, so an auditor can still find a child's records by BSN.
//!
//! This module owns the record, the chain and the pseudonym; the auditor's side lives in
//! its submodules, shared by the offline CLI and the mTLS listener:
//!
//! - [`verify`]: recompute the chain and check the signed checkpoints;
//! - [`query`]: records by child, message or period, the per-child access report, the
//!   consent log — always through an index;
//! - [`fhir`]: FHIR R4 `AuditEvent` and `Consent` resources in a `Bundle`;
//! - [`request`]: what an auditor can ask, executed the same way offline and online;
//! - [`render`]: table, CSV and JSON output;
//! - [`service`]: the `/v1/audit/*` routes of the mTLS listener (auditors only);
//! - [`online`]: the auditor's mTLS client for those routes;
//! - [`cli`]: `wijkpoort audit …`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ring::{digest, hmac};
use serde::{Deserialize, Serialize};

use crate::message::{Bsn, MessageType};
use crate::signing::Signer;
use crate::store::{be, key, ReadOnlyStore, Store, StoreError, Write, T};

pub mod cli;
pub mod fhir;
pub mod online;
pub mod query;
pub mod render;
pub mod request;
pub mod service;
pub mod verify;

/// A checkpoint is signed after this many records.
pub const CHECKPOINT_EVERY: u64 = 1000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    MessageAccepted,
    MessageFiltered,
    MessageQueued,
    MessageSent,
    MessageDelivered,
    MessageRefused,
    MessageWithheld,
    MessageExpired,
    MessageReceived,
    MessageAcknowledged,
    ConsentRecorded,
    ConsentWithdrawn,
    ConsentMirrored,
    ConsentUpdated,
    AuditRead,
    GatewayStarted,
    GatewayStopped,
    CertificateRefused,
    RequestRefused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Refused,
    Failure,
}

/// Who acted: a local user (named in the local API's header), a peer organisation
/// (from its certificate), an auditor, or the gateway itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    User {
        id: String,
    },
    Peer {
        organisation: String,
        certificate_serial: String,
    },
    Auditor {
        organisation: String,
        certificate_serial: String,
    },
    Gateway,
    Unknown {
        remote: String,
    },
}

impl Event {
    /// The event's name as stored (`message_sent`, `audit_read`, …).
    pub fn name(self) -> String {
        serde_name(&self)
    }
}

impl std::str::FromStr for Event {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<Event, AuditError> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| AuditError::UnknownEvent(s.to_string()))
    }
}

impl Outcome {
    /// The outcome's name as stored (`success`, `refused`, `failure`).
    pub fn name(self) -> String {
        serde_name(&self)
    }
}

/// The name a unit enum variant serialises to.
fn serde_name<S: Serialize>(value: &S) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Read access to the trees the audit log and the consent log live in: a running
/// gateway's [`Store`] or a stopped one's [`ReadOnlyStore`]. Everything an auditor asks
/// is answered through this, so the offline CLI and the listener share one code path.
pub trait AuditTrees {
    fn tree(&self, tree: T) -> &sled::Tree;
}

impl AuditTrees for Store {
    fn tree(&self, tree: T) -> &sled::Tree {
        Store::tree(self, tree)
    }
}

impl AuditTrees for ReadOnlyStore {
    fn tree(&self, tree: T) -> &sled::Tree {
        ReadOnlyStore::tree(self, tree)
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
    #[error("unknown audit event {0:?} (e.g. message_sent, message_received, consent_recorded, audit_read)")]
    UnknownEvent(String),
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

/// What a caller records; the committer adds sequence, time and hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub event: Event,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub actor: Actor,
    /// The organisation on whose behalf the actor acted (this gateway's for local users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<MessageType>,
    /// The child as a pseudonym, never as a BSN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_id: Option<String>,
    /// Field paths the minimisation removed or changed (never their values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_fields: Vec<String>,
}

impl AuditEvent {
    pub fn new(event: Event, outcome: Outcome, actor: Actor) -> AuditEvent {
        AuditEvent {
            event,
            outcome,
            reason: None,
            actor,
            on_behalf_of: None,
            message_id: None,
            message_type: None,
            subject: None,
            peer: None,
            consent_id: None,
            changed_fields: Vec::new(),
        }
    }
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
    pub fn message(mut self, id: &str, t: MessageType) -> Self {
        self.message_id = Some(id.to_string());
        self.message_type = Some(t);
        self
    }
    pub fn subject(mut self, pseudonym: Option<String>) -> Self {
        self.subject = pseudonym;
        self
    }
    pub fn peer(mut self, peer: &str) -> Self {
        self.peer = Some(peer.to_string());
        self
    }
    pub fn consent(mut self, consent_id: Option<&str>) -> Self {
        self.consent_id = consent_id.map(str::to_string);
        self
    }
    pub fn on_behalf_of(mut self, org: &str) -> Self {
        self.on_behalf_of = Some(org.to_string());
        self
    }
    pub fn changed(mut self, paths: Vec<String>) -> Self {
        self.changed_fields = paths;
        self
    }
}

/// A sealed audit record as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub time: DateTime<Utc>,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// The part of a record its hash covers: everything but the hash itself.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    time: &'a DateTime<Utc>,
    #[serde(flatten)]
    event: &'a AuditEvent,
    prev_hash: &'a str,
}

impl AuditRecord {
    /// Recomputes this record's hash from its content and `prev_hash`.
    pub fn compute_hash(&self) -> String {
        record_hash(self.seq, &self.time, &self.event, &self.prev_hash)
    }
}

fn record_hash(seq: u64, time: &DateTime<Utc>, event: &AuditEvent, prev_hash: &str) -> String {
    let canonical = serde_json::to_vec(&Hashed {
        seq,
        time,
        event,
        prev_hash,
    })
    .unwrap_or_default();
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(&canonical);
    hex::encode(ctx.finish().as_ref())
}

/// The hash before the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A signed statement that the log had `hash` at `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub time: DateTime<Utc>,
    /// ECDSA P-256 signature (hex) over `checkpoint_bytes(seq, hash, time)`.
    pub signature: String,
}

/// The bytes a checkpoint signature covers.
pub fn checkpoint_bytes(seq: u64, hash: &str, time: &DateTime<Utc>) -> Vec<u8> {
    format!(
        "wijkpoort-audit-checkpoint\n{seq}\n{hash}\n{}",
        time.to_rfc3339()
    )
    .into_bytes()
}

type Writes = Vec<Write>;

/// The index entries of one commit group.
///
/// Each index key names a child, a message or a millisecond, then a sequence number. A
/// group commit holds many records about the same message (accepted, filtered, queued)
/// and many in the same millisecond, so instead of one key per record the group writes
/// one key per child, per message and per millisecond: the key carries the first
/// sequence number of that run and the value lists all of them. Every sled key costs
/// the committer a tree insert; this cuts the audit's share of them by more than half.
///
/// Value format: empty when the run is the key's own sequence number alone (which is
/// also how stores written before grouping look), otherwise the sequence numbers as
/// big-endian u64s, ascending, the first equal to the key's. [`index_run`] reads it.
#[derive(Debug, Default)]
pub struct GroupIndex {
    by_subject: BTreeMap<String, Vec<u64>>,
    by_message: BTreeMap<String, Vec<u64>>,
    by_time: BTreeMap<u64, Vec<u64>>,
}

impl GroupIndex {
    fn add(&mut self, rec: &AuditRecord) {
        if let Some(p) = &rec.event.subject {
            self.by_subject.entry(p.clone()).or_default().push(rec.seq);
        }
        if let Some(id) = &rec.event.message_id {
            self.by_message.entry(id.clone()).or_default().push(rec.seq);
        }
        let millis = u64::try_from(rec.time.timestamp_millis()).unwrap_or(0);
        self.by_time.entry(millis).or_default().push(rec.seq);
    }

    /// Adds the group's index keys to `writes`; call once, after the group's last append.
    pub fn write_into(self, writes: &mut Writes) {
        for (subject, seqs) in self.by_subject {
            let k = [subject.as_bytes(), &be(seqs[0])].concat();
            writes.push((T::AuditBySubject, k, Some(run_value(&seqs))));
        }
        for (id, seqs) in self.by_message {
            let k = key(&[id.as_bytes(), &be(seqs[0])]);
            writes.push((T::AuditByMessage, k, Some(run_value(&seqs))));
        }
        for (millis, seqs) in self.by_time {
            let k = [be(millis), be(seqs[0])].concat();
            writes.push((T::AuditByTime, k, Some(run_value(&seqs))));
        }
    }
}

fn run_value(seqs: &[u64]) -> Vec<u8> {
    if seqs.len() == 1 {
        return Vec::new();
    }
    seqs.iter().flat_map(|s| s.to_be_bytes()).collect()
}

/// The sequence numbers one index entry stands for, given the sequence number at the end
/// of its key and its value. `None` if the value is malformed.
pub fn index_run(key_seq: u64, value: &[u8]) -> Option<Vec<u64>> {
    if value.is_empty() {
        return Some(vec![key_seq]);
    }
    if value.len() % 8 != 0 {
        return None;
    }
    let seqs: Vec<u64> = value
        .chunks_exact(8)
        .filter_map(|c| c.try_into().ok().map(u64::from_be_bytes))
        .collect();
    let ascending = seqs.windows(2).all(|w| w[0] < w[1]);
    (seqs.first() == Some(&key_seq) && ascending).then_some(seqs)
}

/// The committer's view of the chain's head.
pub struct AuditChain {
    next_seq: u64,
    last_hash: String,
    last_checkpoint: u64,
}

impl AuditChain {
    /// Reads the head of the chain from the last stored record.
    pub fn resume(audit: &sled::Tree, checkpoints: &sled::Tree) -> Result<AuditChain, StoreError> {
        let last_checkpoint = match checkpoints.last()? {
            Some((k, _)) => u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("checkpoint key".into()))?,
            ),
            None => 0,
        };
        match audit.last()? {
            None => Ok(AuditChain {
                next_seq: 1,
                last_hash: GENESIS_HASH.to_string(),
                last_checkpoint: 0,
            }),
            Some((_, v)) => {
                let rec: AuditRecord = serde_json::from_slice(&v)
                    .map_err(|e| StoreError::Corrupt(format!("last audit record: {e}")))?;
                Ok(AuditChain {
                    next_seq: rec.seq + 1,
                    last_hash: rec.hash,
                    last_checkpoint,
                })
            }
        }
    }

    /// Seals `event` as the next record, adds its write, and notes it in `index`, which
    /// the committer writes once for the whole group (see [`GroupIndex`]).
    pub fn append(
        &mut self,
        event: AuditEvent,
        signer: &Signer,
        writes: &mut Writes,
        index: &mut GroupIndex,
    ) -> Result<(), StoreError> {
        let seq = self.next_seq;
        let time = Utc::now();
        let hash = record_hash(seq, &time, &event, &self.last_hash);
        let rec = AuditRecord {
            seq,
            time,
            event,
            prev_hash: std::mem::take(&mut self.last_hash),
            hash: hash.clone(),
        };
        let bytes = serde_json::to_vec(&rec)
            .map_err(|e| StoreError::Corrupt(format!("audit record: {e}")))?;
        writes.push((T::Audit, be(seq).to_vec(), Some(bytes)));
        index.add(&rec);
        self.last_hash = hash;
        self.next_seq = seq + 1;
        if seq - self.last_checkpoint >= CHECKPOINT_EVERY {
            self.checkpoint(signer, writes)?;
        }
        Ok(())
    }

    /// Signs the current head, unless it was signed already.
    pub fn checkpoint(&mut self, signer: &Signer, writes: &mut Writes) -> Result<(), StoreError> {
        let seq = self.next_seq - 1;
        if seq == 0 || seq == self.last_checkpoint {
            return Ok(());
        }
        let time = Utc::now();
        let signature = signer
            .sign(&checkpoint_bytes(seq, &self.last_hash, &time))
            .map_err(|e| StoreError::Corrupt(format!("signing a checkpoint: {e}")))?;
        let cp = Checkpoint {
            seq,
            hash: self.last_hash.clone(),
            time,
            signature: hex::encode(signature),
        };
        let bytes =
            serde_json::to_vec(&cp).map_err(|e| StoreError::Corrupt(format!("checkpoint: {e}")))?;
        writes.push((T::Checkpoints, be(seq).to_vec(), Some(bytes)));
        self.last_checkpoint = seq;
        Ok(())
    }
}

/// Turns a BSN into the pseudonym the audit log and indexes use.
#[derive(Clone)]
pub struct Pseudonymiser {
    key: hmac::Key,
}

impl Pseudonymiser {
    pub fn new(secret: &[u8]) -> Pseudonymiser {
        // Derive a key for this one purpose, so that the same secret can key other things.
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derived = hmac::sign(&root, b"wijkpoort audit subject pseudonym v1");
        Pseudonymiser {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    pub fn pseudonym(&self, bsn: &Bsn) -> String {
        hex::encode(hmac::sign(&self.key, bsn.as_str().as_bytes()).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonym_is_stable_keyed_and_hides_the_bsn() {
        let bsn = Bsn::try_from("111222333".to_string()).unwrap();
        let a = Pseudonymiser::new(b"key one").pseudonym(&bsn);
        assert_eq!(a, Pseudonymiser::new(b"key one").pseudonym(&bsn));
        assert_ne!(a, Pseudonymiser::new(b"key two").pseudonym(&bsn));
        assert!(!a.contains("111222333"));
        assert_eq!(a.len(), 64);
    }

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
            AuditError::UnknownEvent("111222333".into()).parameter(),
            "event"
        );
    }

    #[test]
    fn event_names_round_trip() {
        for name in ["message_sent", "audit_read", "consent_withdrawn"] {
            assert_eq!(name.parse::<Event>().unwrap().name(), name);
        }
        assert!("sent".parse::<Event>().is_err());
    }

    #[test]
    fn record_hash_covers_content_and_previous_hash() {
        let event = AuditEvent::new(Event::MessageAccepted, Outcome::Success, Actor::Gateway);
        let time = Utc::now();
        let h = record_hash(1, &time, &event, GENESIS_HASH);
        assert_ne!(h, record_hash(2, &time, &event, GENESIS_HASH));
        assert_ne!(h, record_hash(1, &time, &event, &h));
        let mut other = event.clone();
        other.outcome = Outcome::Refused;
        assert_ne!(h, record_hash(1, &time, &other, GENESIS_HASH));
    }
}
