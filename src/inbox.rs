//! The inbox: messages received from peers, kept until the local system acknowledges
//! them. A message is known by its sender and the id the sender chose — two practices
//! may use the same id — and is stored once per (sender, id); a second delivery of the
//! same message is answered with the first receipt, which is what makes the relay
//! idempotent.
//!
//! The waiting messages are read in pages: each has a cursor (its receive number, which
//! only grows), and a page starts after a cursor, so acknowledging a message between two
//! pages never makes the next page skip or repeat one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope_batch::EnvelopeProof;
use crate::identity::OrgId;
use crate::message::MessageType;
use crate::receipt::{PurgedBody, Receipt};
use crate::store::{be, key, Reader, Store, StoreError, Tx, T};
use crate::stored_signature;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceivedMessage {
    pub id: String,
    pub message_type: MessageType,
    /// The sending peer's organisation identifier (from its certificate).
    pub from: OrgId,
    /// The exact envelope bytes as received and verified.
    pub envelope: String,
    /// The sender's signature it first arrived under: the batch signature of its relay
    /// batch, with its path in `batch`; from a sender before batch signatures, a
    /// signature over the envelope's own bytes and no path
    /// ([`crate::envelope_batch::verify_stored`]).
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<EnvelopeProof>,
    pub receipt: Receipt,
    pub received_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_id: Option<String>,
    /// The key of its inbox entry while unacknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox_key: Option<Vec<u8>>,
    /// Set once a retention purge removed the envelope (then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_purged: Option<PurgedBody>,
}

/// A received-message record as stored (inside a job): the batch's signature and the
/// receipt's by reference ([`stored_signature`]).
fn encode(tx: &mut Tx<'_>, m: &mut ReceivedMessage) -> Result<Vec<u8>, StoreError> {
    // On an error the job fails and `m` is dropped with it.
    let batch_signature = match m.batch {
        Some(_) => Some(stored_signature::refer(tx, &mut m.signature)?),
        None => None,
    };
    let receipt_signature = match m.receipt.batch {
        Some(_) => Some(stored_signature::refer(tx, &mut m.receipt.signature)?),
        None => None,
    };
    let encoded =
        serde_json::to_vec(m).map_err(|e| StoreError::Corrupt(format!("received message: {e}")));
    if let Some(text) = batch_signature {
        m.signature = text;
    }
    if let Some(text) = receipt_signature {
        m.receipt.signature = text;
    }
    encoded
}

/// A received-message record exactly as stored: a shared signature is a reference
/// there ([`stored_signature`]), which [`decode_in`] follows.
pub fn decode(bytes: &[u8]) -> Result<ReceivedMessage, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("received message: {e}")))
}

/// A received-message record back into a [`ReceivedMessage`], its signatures read from
/// `store` where the record refers to them.
pub fn decode_in(store: &dyn Reader, bytes: &[u8]) -> Result<ReceivedMessage, StoreError> {
    let mut msg = decode(bytes)?;
    stored_signature::resolve(store, &mut msg.signature)?;
    stored_signature::resolve(store, &mut msg.receipt.signature)?;
    Ok(msg)
}

/// The key of a received message: its sender, 0, its id.
fn received_key(from: &OrgId, id: &str) -> Vec<u8> {
    key(&[from.as_str().as_bytes(), id.as_bytes()])
}

pub fn load(tx: &Tx<'_>, from: &OrgId, id: &str) -> Result<Option<ReceivedMessage>, StoreError> {
    tx.get(T::Received, &received_key(from, id))?
        .map(|b| decode_in(tx, &b))
        .transpose()
}

/// Meta key: how many messages this gateway has received, ever (u64, big-endian). It is
/// kept in the commit that stores each message, so that `/v1/stats` (which monitoring
/// polls) need not walk every message ever received.
const RECEIVED_TOTAL: &[u8] = b"received_total";

fn count(bytes: &[u8]) -> Result<u64, StoreError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("meta received_total is not a u64".into()))
}

/// Stores a new received message and puts it in the inbox (inside a job).
pub fn store(tx: &mut Tx<'_>, mut msg: ReceivedMessage) -> Result<(), StoreError> {
    let total = match tx.get(T::Meta, RECEIVED_TOTAL)? {
        Some(v) => count(&v)?,
        // A store written before the count existed: count once, here.
        None => tx.scan_prefix(T::Received, b"")?.len() as u64,
    };
    tx.insert(T::Meta, RECEIVED_TOTAL, be(total + 1));
    let inbox_key = be(tx.next_number()?).to_vec();
    let received = received_key(&msg.from, &msg.id);
    tx.insert(T::Inbox, inbox_key.clone(), received.clone());
    msg.inbox_key = Some(inbox_key);
    let record = encode(tx, &mut msg)?;
    tx.insert(T::Received, received, record);
    Ok(())
}

/// How many messages this gateway has received, ever, as committed.
pub fn received_total(store: &Store) -> Result<u64, StoreError> {
    match store.get(T::Meta, RECEIVED_TOTAL)? {
        Some(v) => count(&v),
        None => Ok(store.tree(T::Received).len() as u64),
    }
}

/// Marks a message acknowledged and takes it out of the inbox (inside a job).
pub fn acknowledge(
    tx: &mut Tx<'_>,
    mut msg: ReceivedMessage,
    user: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    if let Some(k) = msg.inbox_key.take() {
        tx.remove(T::Inbox, k);
    }
    msg.acknowledged_at = Some(at);
    msg.acknowledged_by = Some(user.to_string());
    let record = encode(tx, &mut msg)?;
    tx.insert(T::Received, received_key(&msg.from, &msg.id), record);
    Ok(())
}

/// Removes an acknowledged message's envelope (inside a job; a retention purge): the
/// record keeps its id, sender, signature, receipt and the envelope's SHA-256.
pub fn purge_body(
    tx: &mut Tx<'_>,
    mut msg: ReceivedMessage,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    msg.body_purged = Some(PurgedBody::take(&mut msg.envelope, at));
    let record = encode(tx, &mut msg)?;
    tx.insert(T::Received, received_key(&msg.from, &msg.id), record);
    Ok(())
}

/// Which waiting messages a page holds.
#[derive(Debug, Clone, Default)]
pub struct InboxQuery {
    /// Start after this cursor (none: from the oldest).
    pub after: Option<u64>,
    /// At most this many messages.
    pub limit: usize,
    /// Only messages from this sender.
    pub from: Option<OrgId>,
    /// Only messages of this type.
    pub message_type: Option<MessageType>,
}

/// One page of waiting messages, oldest first, each with its cursor.
#[derive(Debug, Default)]
pub struct InboxPage {
    pub messages: Vec<(u64, ReceivedMessage)>,
    /// Where the next page starts, when there may be more.
    pub next: Option<u64>,
}

/// Unacknowledged messages, oldest first, a page at a time.
pub fn page(store: &Store, q: &InboxQuery) -> Result<InboxPage, StoreError> {
    let start = q.after.map_or(0, |a| a.saturating_add(1));
    let mut page = InboxPage::default();
    for entry in store.tree(T::Inbox).range(be(start)..) {
        let (k, received) = entry?;
        let cursor = k
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt("an inbox key is not a u64".into()))?;
        let Some(bytes) = store.get(T::Received, &received)? else {
            continue;
        };
        let msg = decode_in(store, &bytes)?;
        if q.from.as_ref().is_some_and(|f| *f != msg.from)
            || q.message_type.is_some_and(|t| t != msg.message_type)
        {
            continue;
        }
        if page.messages.len() == q.limit {
            page.next = page.messages.last().map(|(c, _)| *c);
            break;
        }
        page.messages.push((cursor, msg));
    }
    Ok(page)
}

/// A received message by its sender and id.
pub fn get(store: &Store, from: &OrgId, id: &str) -> Result<Option<ReceivedMessage>, StoreError> {
    store
        .get(T::Received, &received_key(from, id))?
        .map(|b| decode_in(store, &b))
        .transpose()
}
