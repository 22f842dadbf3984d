//! The audit hash chain: what an audit record is, how records are sealed into a chain
//! and signed checkpoints, and the index runs one commit group adds — after NEN 7513
//! (who, what, about whom, when, from where, outcome).
//!
//! Each record's hash is SHA-256 over the previous record's hash and this record's
//! canonical bytes. Every [`CHECKPOINT_EVERY`] records, and when the gateway stops, the
//! committer signs a checkpoint (sequence, hash, time) with the gateway's key, so that a
//! verifier can prove that nothing was altered and the log was not cut back.
//!
//! This module owns the record format and the chain's arithmetic, and nothing of where
//! records live: the store ([`crate::store`]) calls [`AuditChain::append`] on its single
//! committer and writes what comes back in the same transaction as the state change; the
//! auditor's side ([`crate::audit`]) reads and verifies it. It may not import either.
//!
//! A record never holds a BSN, a name or free text: the child appears as a pseudonym
//! ([`crate::pseudonym`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ring::digest;
use serde::{Deserialize, Serialize};

use crate::message::MessageType;
use crate::signing::Signer;

/// A checkpoint is signed after this many records.
pub const CHECKPOINT_EVERY: u64 = 1000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    MessageAccepted,
    MessageFiltered,
    MessageQueued,
    MessageDelivered,
    MessageRefused,
    MessageWithheld,
    MessageExpired,
    MessageReceived,
    MessageAcknowledged,
    /// A local user read personal data through the local API (the inbox, a received
    /// message, a child's consents): one record per request, naming what it returned.
    PersonalDataRead,
    ConsentRecorded,
    ConsentWithdrawn,
    ConsentMirrored,
    ConsentUpdated,
    AuditRead,
    GatewayStarted,
    GatewayStopped,
    CertificateRefused,
    /// A reload brought new own credentials (TLS or signing certificate and key).
    CredentialsReloaded,
    /// A retention purge removed what was due ([`PurgeSummary`]).
    RecordsPurged,
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
        /// The address it connected from (records before this field have none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remote: Option<String>,
    },
    Auditor {
        organisation: String,
        certificate_serial: String,
        /// The address it connected from (records before this field have none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remote: Option<String>,
    },
    Gateway,
    Unknown {
        remote: String,
    },
}

impl Event {
    /// The event's name as stored (`message_queued`, `audit_read`, …).
    pub fn name(self) -> String {
        serde_name(&self)
    }
}

/// A name that is no [`Event`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit event {0:?} (e.g. message_queued, message_received, consent_recorded, audit_read)")]
pub struct UnknownEvent(pub String);

impl std::str::FromStr for Event {
    type Err = UnknownEvent;
    fn from_str(s: &str) -> Result<Event, UnknownEvent> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| UnknownEvent(s.to_string()))
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
    /// For a message the relay sent: the peer's configured address it connected to
    /// (`HOST:PORT`). Optional like an actor's `remote`, so records written before it
    /// have none and read and hash exactly as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_id: Option<String>,
    /// Field paths the minimisation removed or changed (never their values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_fields: Vec<String>,
    /// A read of personal data: the ids of the messages it returned, in the order shown.
    /// Left out when empty, so records written before reads were audited hash the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_messages: Vec<String>,
    /// A read of personal data: the pseudonyms of the children it showed, each once. The
    /// record is indexed under each, so the per-child report shows who looked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_subjects: Vec<String>,
    /// What a retention purge removed: counts and the audit range, never values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<PurgeSummary>,
}

/// What one retention purge removed ([`Event::RecordsPurged`]).
///
/// When audit records were removed, `audit_to` is the sequence number of the signed
/// checkpoint that now pins the chain: the oldest kept record is `audit_to + 1`, whose
/// `prev_hash` that checkpoint signs. A verifier accepts a log that starts after 1 only
/// if a kept purge record names exactly that start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeSummary {
    /// Bodies of delivered outbox messages removed (record, signature, receipt kept).
    pub delivered_bodies: u64,
    /// Bodies of acknowledged inbox messages removed (record and receipt kept).
    pub acknowledged_bodies: u64,
    /// Bodies of refused, expired and withheld outbox messages removed.
    pub undelivered_bodies: u64,
    /// Consents removed, all their events with them, after their end.
    pub consents: u64,
    pub consent_events: u64,
    /// Audit records removed: sequence numbers `audit_from..=audit_to` (none: 0, 0).
    pub audit_records: u64,
    pub audit_from: u64,
    pub audit_to: u64,
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
            peer_address: None,
            consent_id: None,
            changed_fields: Vec::new(),
            read_messages: Vec::new(),
            read_subjects: Vec::new(),
            purged: None,
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
    pub fn peer(mut self, peer: impl AsRef<str>) -> Self {
        self.peer = Some(peer.as_ref().to_string());
        self
    }
    pub fn peer_address(mut self, address: Option<String>) -> Self {
        self.peer_address = address;
        self
    }
    pub fn consent(mut self, consent_id: Option<&str>) -> Self {
        self.consent_id = consent_id.map(str::to_string);
        self
    }
    pub fn on_behalf_of(mut self, org: impl AsRef<str>) -> Self {
        self.on_behalf_of = Some(org.as_ref().to_string());
        self
    }
    pub fn changed(mut self, paths: Vec<String>) -> Self {
        self.changed_fields = paths;
        self
    }
    /// What a read returned: message ids, and children's pseudonyms (kept once each, in
    /// first-seen order).
    pub fn read(mut self, messages: Vec<String>, subjects: Vec<String>) -> Self {
        self.read_messages = messages;
        let mut seen = Vec::with_capacity(subjects.len());
        for s in subjects {
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
        self.read_subjects = seen;
        self
    }

    /// Whether the record is about the child with this pseudonym: its subject, or one of
    /// the children a read showed.
    pub fn concerns_subject(&self, pseudonym: &str) -> bool {
        self.subject.as_deref() == Some(pseudonym)
            || self.read_subjects.iter().any(|s| s == pseudonym)
    }

    /// Whether the record is about this message: its message, or one a read returned.
    pub fn concerns_message(&self, id: &str) -> bool {
        self.message_id.as_deref() == Some(id) || self.read_messages.iter().any(|m| m == id)
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
    /// The gateway's signature over `checkpoint_bytes(seq, hash, time)`, `ALG:HEX`
    /// ([`crate::signing`]; bare hex in logs written before signatures named their
    /// algorithm).
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

/// The index entries of one commit group.
///
/// Each index key names a child, a message or a millisecond, then a sequence number. A
/// group commit holds many records about the same message (accepted, filtered, queued)
/// and many in the same millisecond, so instead of one key per record the group writes
/// one key per child, per message and per millisecond: the key carries the first
/// sequence number of that run and the value lists all of them. Every sled key costs
/// the committer a tree insert; this cuts the audit's share of them by more than half.
///
/// The store turns these runs into keys ([`crate::store`] knows the trees); the value of
/// each is [`run_value`], which [`index_run`] reads back.
#[derive(Debug, Default)]
pub struct GroupIndex {
    pub by_subject: BTreeMap<String, Vec<u64>>,
    pub by_message: BTreeMap<String, Vec<u64>>,
    pub by_time: BTreeMap<u64, Vec<u64>>,
}

impl GroupIndex {
    fn add(&mut self, rec: &AuditRecord) {
        // A record is listed once under each child and message it concerns: a read of
        // many messages about many children is found from each of them.
        let e = &rec.event;
        let mut subjects: Vec<&String> = e.subject.iter().chain(&e.read_subjects).collect();
        subjects.sort();
        subjects.dedup();
        for p in subjects {
            self.by_subject.entry(p.clone()).or_default().push(rec.seq);
        }
        let mut messages: Vec<&String> = e.message_id.iter().chain(&e.read_messages).collect();
        messages.sort();
        messages.dedup();
        for id in messages {
            self.by_message.entry(id.clone()).or_default().push(rec.seq);
        }
        let millis = u64::try_from(rec.time.timestamp_millis()).unwrap_or(0);
        self.by_time.entry(millis).or_default().push(rec.seq);
    }
}

/// The value of one index entry: empty when the run is the key's own sequence number
/// alone (which is also how stores written before grouping look), otherwise the
/// sequence numbers as big-endian u64s, ascending, the first equal to the key's.
pub fn run_value(seqs: &[u64]) -> Vec<u8> {
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

/// Why the chain could not seal a record or a checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    #[error("the last audit record cannot be read: {0}")]
    UnreadableHead(String),
    #[error("an audit record cannot be encoded: {0}")]
    Encode(String),
    #[error("signing a checkpoint failed: {0}")]
    Sign(String),
}

/// What one commit group adds to the log: sealed records and checkpoints as
/// (sequence, bytes), and the group's index runs. The store writes them.
#[derive(Debug, Default)]
pub struct Sealed {
    pub records: Vec<(u64, Vec<u8>)>,
    pub checkpoints: Vec<(u64, Vec<u8>)>,
    pub index: GroupIndex,
    /// A checkpoint that is due, (sequence, hash), to be signed off the committer and
    /// stored in a later group (see `crate::store`).
    pub due: Option<(u64, String)>,
}

/// The committer's view of the chain's head.
pub struct AuditChain {
    next_seq: u64,
    last_hash: String,
    last_checkpoint: u64,
}

impl AuditChain {
    /// Resumes the chain from the bytes of the last stored record (none for an empty
    /// log) and the sequence number of the last checkpoint (0 for none).
    pub fn resume(
        last_record: Option<&[u8]>,
        last_checkpoint: u64,
    ) -> Result<AuditChain, ChainError> {
        match last_record {
            None => Ok(AuditChain {
                next_seq: 1,
                last_hash: GENESIS_HASH.to_string(),
                last_checkpoint: 0,
            }),
            Some(bytes) => {
                let rec: AuditRecord = serde_json::from_slice(bytes)
                    .map_err(|e| ChainError::UnreadableHead(e.to_string()))?;
                Ok(AuditChain {
                    next_seq: rec.seq + 1,
                    last_hash: rec.hash,
                    last_checkpoint,
                })
            }
        }
    }

    /// Seals `event` as the next record into `sealed`; when [`CHECKPOINT_EVERY`] records
    /// have passed since the last checkpoint, marks one due (`sealed.due`) rather than
    /// signing it here: a signature (~5 ms with RSA-4096) would stall every writer.
    pub fn append(&mut self, event: AuditEvent, sealed: &mut Sealed) -> Result<(), ChainError> {
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
        let bytes = serde_json::to_vec(&rec).map_err(|e| ChainError::Encode(e.to_string()))?;
        sealed.records.push((seq, bytes));
        sealed.index.add(&rec);
        self.last_hash = hash;
        self.next_seq = seq + 1;
        if seq - self.last_checkpoint >= CHECKPOINT_EVERY {
            sealed.due = Some((seq, self.last_hash.clone()));
            self.last_checkpoint = seq;
        }
        Ok(())
    }

    /// Signs the current head into `sealed`, unless it was signed already.
    pub fn checkpoint(&mut self, signer: &Signer, sealed: &mut Sealed) -> Result<(), ChainError> {
        let seq = self.next_seq - 1;
        if seq == 0 || seq == self.last_checkpoint {
            return Ok(());
        }
        sealed
            .checkpoints
            .push((seq, sign_checkpoint(signer, seq, &self.last_hash)?));
        self.last_checkpoint = seq;
        Ok(())
    }
}

/// A signed checkpoint of (`seq`, `hash`) now, as stored.
pub fn sign_checkpoint(signer: &Signer, seq: u64, hash: &str) -> Result<Vec<u8>, ChainError> {
    let time = Utc::now();
    let signature = signer
        .sign_encoded(&checkpoint_bytes(seq, hash, &time))
        .map_err(|e| ChainError::Sign(e.to_string()))?;
    let cp = Checkpoint {
        seq,
        hash: hash.to_string(),
        time,
        signature,
    };
    serde_json::to_vec(&cp).map_err(|e| ChainError::Encode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip() {
        for name in ["message_queued", "audit_read", "consent_withdrawn"] {
            assert_eq!(name.parse::<Event>().unwrap().name(), name);
        }
        assert!("sent".parse::<Event>().is_err());
    }

    #[test]
    fn a_read_is_indexed_once_under_each_child_and_message_it_names() {
        let event = AuditEvent::new(
            Event::PersonalDataRead,
            Outcome::Success,
            Actor::User {
                id: "k.bakker".into(),
            },
        )
        .read(
            vec!["m1".into(), "m2".into()],
            vec!["child-a".into(), "child-b".into(), "child-a".into()],
        );
        assert_eq!(
            event.read_subjects,
            ["child-a", "child-b"],
            "each child once"
        );
        assert!(event.concerns_subject("child-b") && !event.concerns_subject("child-c"));
        assert!(event.concerns_message("m2") && !event.concerns_message("m3"));
        let time = Utc::now();
        let rec = AuditRecord {
            seq: 7,
            time,
            hash: record_hash(7, &time, &event, GENESIS_HASH),
            event: event.clone(),
            prev_hash: GENESIS_HASH.into(),
        };
        let mut index = GroupIndex::default();
        index.add(&rec);
        assert_eq!(index.by_subject.len(), 2);
        assert!(index.by_subject.values().all(|seqs| seqs == &[7]));
        assert_eq!(index.by_message.keys().collect::<Vec<_>>(), ["m1", "m2"]);
        // The hash covers what was read; a record without reads hashes as before.
        let mut other = event.clone();
        other.read_messages.pop();
        assert_ne!(rec.hash, record_hash(7, &time, &other, GENESIS_HASH));
        let plain = AuditEvent::new(Event::MessageAccepted, Outcome::Success, Actor::Gateway);
        let text = serde_json::to_string(&plain).unwrap();
        assert!(!text.contains("read_"), "{text}");
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

    /// Records written before `peer_address` (and every record without one) keep their
    /// stored form and hash: the field is left out when empty, and read as empty when
    /// absent.
    #[test]
    fn a_record_without_a_peer_address_reads_and_hashes_as_before() {
        let time = Utc::now();
        let event = AuditEvent::new(Event::MessageDelivered, Outcome::Success, Actor::Gateway)
            .peer("00000002");
        let mut record = AuditRecord {
            seq: 3,
            time,
            event,
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        let stored = serde_json::to_string(&record).unwrap();
        assert!(!stored.contains("peer_address"), "{stored}");
        let old: AuditRecord = serde_json::from_str(&stored).unwrap();
        assert_eq!(old.event.peer_address, None);
        assert_eq!(old.compute_hash(), record.hash);

        let mut sent = record.clone();
        sent.event = sent.event.peer_address(Some("127.0.0.1:8443".into()));
        assert_ne!(
            sent.compute_hash(),
            record.hash,
            "the address is covered by the hash"
        );
        let back: AuditRecord =
            serde_json::from_str(&serde_json::to_string(&sent).unwrap()).unwrap();
        assert_eq!(back.event.peer_address.as_deref(), Some("127.0.0.1:8443"));
    }
}
