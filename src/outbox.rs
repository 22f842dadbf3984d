//! The outbox: messages this gateway sends, and the durable per-peer queue the relay
//! works through. A message enters it only as a whole (record, queue entry and audit
//! records in one commit) and leaves the queue only in the commit that records its
//! final status, so a crash at any moment leaves it either queued or finished.
//!
//! It owns the sent-message record, its queue keys and the relays' wakers; deciding
//! what may be queued is the send path's, delivering it the relay's.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::chain::{Actor, AuditEvent, Event, Outcome};
use crate::config::PeerName;
use crate::envelope_batch::EnvelopeProof;
use crate::identity::OrgId;
use crate::message::MessageType;
use crate::receipt::{PurgedBody, Receipt};
use crate::store::{be, key, Presealed, Reader, StoreError, Tx, T};
use crate::stored_signature;

/// Where a sent message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In the outbox, waiting for (another) delivery attempt.
    Queued,
    /// The peer stored it and returned a valid receipt.
    Delivered,
    /// The peer refused it; it will not be retried.
    Refused,
    /// Not delivered within the configured maximum age.
    Expired,
    /// Not sent because its consent was withdrawn or expired while it waited.
    Withheld,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Delivered => "delivered",
            Status::Refused => "refused",
            Status::Expired => "expired",
            Status::Withheld => "withheld",
        }
    }
}

/// A message this gateway sends, as stored in the `sent` tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SentMessage {
    pub id: String,
    pub message_type: MessageType,
    /// The peer's local name and organisation identifier.
    pub peer: PeerName,
    pub peer_identity: OrgId,
    /// The exact envelope bytes (JSON text) that were signed and are relayed. Stored in
    /// its own tree ([`T::SentEnvelopes`]), once; filled in on every read.
    #[serde(skip)]
    pub envelope: String,
    /// The signature it was last sent under: the batch signature (`ALG:FINGERPRINT:HEX`)
    /// of the relay batch it went out in, with its path in `batch`. None while it has
    /// not been sent; a message queued before batch signatures holds a signature over
    /// its own bytes and no path ([`crate::envelope_batch::verify_stored`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Its path to the root that `signature` covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<EnvelopeProof>,
    pub status: Status,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    pub submitted_by: String,
    /// Hash of what the local system submitted, to recognise a retried submission.
    pub submitted_hash: String,
    /// The child's pseudonym, for audit records of later steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The key of its queue entry while it is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_key: Option<Vec<u8>>,
    /// Set once a retention purge removed the envelope (then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_purged: Option<PurgedBody>,
}

impl SentMessage {
    pub fn audit(&self, event: Event, outcome: Outcome, actor: Actor) -> AuditEvent {
        AuditEvent::new(event, outcome, actor)
            .message(&self.id, self.message_type)
            .subject(self.subject.clone())
            .peer(&self.peer_identity)
            .consent(self.consent_id.as_deref())
    }
}

/// A sent-message record as stored (inside a job): the batch's signature and the
/// receipt's by reference ([`stored_signature`]).
fn encode(tx: &mut Tx<'_>, m: &mut SentMessage) -> Result<Vec<u8>, StoreError> {
    // On an error the job fails and `m` is dropped with it.
    let batch_signature = match (&m.batch, m.signature.as_mut()) {
        (Some(_), Some(s)) => Some(stored_signature::refer(tx, s)?),
        _ => None,
    };
    let receipt_signature = match m.receipt.as_mut() {
        Some(r) if r.batch.is_some() => Some(stored_signature::refer(tx, &mut r.signature)?),
        _ => None,
    };
    let encoded =
        serde_json::to_vec(m).map_err(|e| StoreError::Corrupt(format!("sent message: {e}")));
    if let (Some(text), Some(s)) = (batch_signature, m.signature.as_mut()) {
        *s = text;
    }
    if let (Some(text), Some(r)) = (receipt_signature, m.receipt.as_mut()) {
        r.signature = text;
    }
    encoded
}

/// A sent-message record exactly as stored, without its envelope (left empty).
fn parse_record(bytes: &[u8]) -> Result<SentMessage, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("sent message: {e}")))
}

/// A sent-message record without its envelope (left empty), its signatures read from
/// `store` where the record refers to them.
fn decode_record(store: &dyn Reader, bytes: &[u8]) -> Result<SentMessage, StoreError> {
    let mut msg = parse_record(bytes)?;
    if let Some(s) = msg.signature.as_mut() {
        stored_signature::resolve(store, s)?;
    }
    if let Some(r) = msg.receipt.as_mut() {
        stored_signature::resolve(store, &mut r.signature)?;
    }
    Ok(msg)
}

/// A sent-message record and its envelope exactly as stored: a shared signature is a
/// reference there ([`stored_signature`]), which [`decode_in`] follows.
pub fn decode(bytes: &[u8], envelope: Option<&[u8]>) -> Result<SentMessage, StoreError> {
    with_envelope(parse_record(bytes)?, envelope)
}

/// A sent-message record and its envelope back into a [`SentMessage`], its signatures
/// read from `store` where the record refers to them.
pub fn decode_in(
    store: &dyn Reader,
    bytes: &[u8],
    envelope: Option<&[u8]>,
) -> Result<SentMessage, StoreError> {
    with_envelope(decode_record(store, bytes)?, envelope)
}

fn with_envelope(mut msg: SentMessage, envelope: Option<&[u8]>) -> Result<SentMessage, StoreError> {
    msg.envelope = match (envelope, &msg.body_purged) {
        (Some(envelope), _) => String::from_utf8_lossy(envelope).into_owned(),
        (None, Some(_)) => String::new(),
        (None, None) => {
            return Err(StoreError::Corrupt(format!(
                "sent message {} has no envelope",
                msg.id
            )))
        }
    };
    Ok(msg)
}

/// Reads a sent message inside a job.
pub fn load(tx: &Tx<'_>, id: &str) -> Result<Option<SentMessage>, StoreError> {
    match tx.get(T::Sent, id.as_bytes())? {
        None => Ok(None),
        Some(record) => {
            let envelope = tx.get(T::SentEnvelopes, id.as_bytes())?;
            decode_in(tx, &record, envelope.as_deref()).map(Some)
        }
    }
}

/// Puts a new message in the outbox (inside a job; the caller adds the audit records).
/// `envelope` is `msg.envelope` sealed before the commit ([`crate::store::Store::preseal`]).
pub fn enqueue(
    tx: &mut Tx<'_>,
    mut msg: SentMessage,
    envelope: Presealed,
) -> Result<SentMessage, StoreError> {
    let queue_key = key(&[msg.peer.as_str().as_bytes(), &be(tx.next_number()?)]);
    tx.insert(T::Outbox, queue_key.clone(), msg.id.as_bytes());
    msg.queue_key = Some(queue_key);
    msg.status = Status::Queued;
    if !envelope.is_for(T::SentEnvelopes, msg.id.as_bytes(), msg.envelope.as_bytes()) {
        return Err(StoreError::Corrupt(format!(
            "the sealed envelope handed to the outbox is not message {}'s",
            msg.id
        )));
    }
    tx.insert_presealed(envelope);
    let record = encode(tx, &mut msg)?;
    tx.insert(T::Sent, msg.id.as_bytes(), record);
    Ok(msg)
}

/// Removes a finished message's envelope (inside a job; a retention purge): the record
/// keeps its id, status, signature, receipt and the envelope's SHA-256.
pub fn purge_body(
    tx: &mut Tx<'_>,
    mut msg: SentMessage,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    msg.body_purged = Some(PurgedBody::take(&mut msg.envelope, at));
    tx.remove(T::SentEnvelopes, msg.id.as_bytes());
    let record = encode(tx, &mut msg)?;
    tx.insert(T::Sent, msg.id.as_bytes(), record);
    Ok(())
}

/// Saves a changed message; a message that is no longer queued leaves the queue.
pub fn save(tx: &mut Tx<'_>, mut msg: SentMessage) -> Result<SentMessage, StoreError> {
    msg.updated_at = Utc::now();
    if msg.status != Status::Queued {
        if let Some(k) = msg.queue_key.take() {
            tx.remove(T::Outbox, k);
        }
    }
    let record = encode(tx, &mut msg)?;
    tx.insert(T::Sent, msg.id.as_bytes(), record);
    Ok(msg)
}

/// The first `max` queued messages for `peer`, in the order they were accepted, leaving
/// out those in `skip` (delivered, with the outcome not yet committed).
pub fn next_batch(
    store: &crate::store::Store,
    peer: &PeerName,
    max: usize,
    skip: &std::collections::HashSet<String>,
) -> Result<Vec<SentMessage>, StoreError> {
    let prefix = key(&[peer.as_str().as_bytes(), b""]);
    let mut batch = Vec::new();
    for entry in store.tree(T::Outbox).scan_prefix(&prefix) {
        let (_, id) = entry?;
        let id = String::from_utf8_lossy(&id);
        if skip.contains(id.as_ref()) {
            continue;
        }
        if let Some(msg) = get(store, &id)? {
            if msg.status == Status::Queued {
                batch.push(msg);
                if batch.len() == max {
                    break;
                }
            }
        }
    }
    Ok(batch)
}

/// How many messages are queued for `peer`.
pub fn queued_for_peer(store: &crate::store::Store, peer: &str) -> usize {
    let prefix = key(&[peer.as_bytes(), b""]);
    store.tree(T::Outbox).scan_prefix(&prefix).count()
}

/// When the oldest message still queued for `peer` was accepted (`None`: none queued).
/// The queue is in enqueue order, so that is its first entry's message.
pub fn oldest_queued_for_peer(
    store: &crate::store::Store,
    peer: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let prefix = key(&[peer.as_bytes(), b""]);
    let Some(first) = store.tree(T::Outbox).scan_prefix(&prefix).next() else {
        return Ok(None);
    };
    let (_, id) = first?;
    let id = String::from_utf8_lossy(&id).into_owned();
    Ok(get_without_envelope(store, &id)?.map(|m| m.created_at))
}

/// Reads a sent message's record outside a job without its envelope, which is left
/// empty: for a status query, which shows no envelope. Reading the envelope too would
/// open (and bring into sled's cache) ~1.6 KB more per message for nothing: a system
/// polling the status of 20,000 messages raised the practice's memory by ~45 MB.
pub fn get_without_envelope(
    store: &crate::store::Store,
    id: &str,
) -> Result<Option<SentMessage>, StoreError> {
    store
        .get(T::Sent, id.as_bytes())?
        .map(|record| decode_record(store, &record))
        .transpose()
}

/// Reads a sent message outside a job, with its envelope.
pub fn get(store: &crate::store::Store, id: &str) -> Result<Option<SentMessage>, StoreError> {
    match store.get(T::Sent, id.as_bytes())? {
        None => Ok(None),
        Some(record) => {
            let envelope = store.get(T::SentEnvelopes, id.as_bytes())?;
            decode_in(store, &record, envelope.as_deref()).map(Some)
        }
    }
}

/// The signal that a peer's queue has work: the send path wakes the relay of the peer it
/// queued for, so a relay that found its queue empty does not wait for its next poll.
#[derive(Clone, Default)]
pub struct Wakers {
    by_peer: Arc<RwLock<HashMap<PeerName, Arc<Notify>>>>,
}

impl Wakers {
    /// One waker per peer, by the peer's configured name (the outbox's queue key).
    pub fn for_peers<'a>(names: impl IntoIterator<Item = &'a PeerName>) -> Wakers {
        Wakers {
            by_peer: Arc::new(RwLock::new(
                names
                    .into_iter()
                    .map(|n| (n.clone(), Arc::new(Notify::new())))
                    .collect(),
            )),
        }
    }

    /// Tells the relay for `peer` that its queue has work.
    pub fn wake(&self, peer: &PeerName) {
        let found = match self.by_peer.read() {
            Ok(map) => map.get(peer).cloned(),
            Err(poisoned) => poisoned.into_inner().get(peer).cloned(),
        };
        if let Some(n) = found {
            n.notify_one();
        }
    }

    /// What the relay for `peer` waits on; a peer added by a reload gets one here.
    pub fn waker(&self, peer: &PeerName) -> Arc<Notify> {
        let mut map = match self.by_peer.write() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(peer.clone())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }
}
