//! The inbox: messages received from peers, kept until the local system acknowledges
//! them. Stored once per message id; a second delivery of the same message is answered
//! with the first receipt, which is what makes the relay idempotent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::identity::OrgId;
use crate::message::MessageType;
use crate::receipt::Receipt;
use crate::store::{be, Store, StoreError, Tx, T};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceivedMessage {
    pub id: String,
    pub message_type: MessageType,
    /// The sending peer's organisation identifier (from its certificate).
    pub from: OrgId,
    /// The exact envelope bytes as received and verified.
    pub envelope: String,
    pub signature: String,
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
}

fn encode(m: &ReceivedMessage) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(m).map_err(|e| StoreError::Corrupt(format!("received message: {e}")))
}

pub fn decode(bytes: &[u8]) -> Result<ReceivedMessage, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("received message: {e}")))
}

pub fn load(tx: &Tx<'_>, id: &str) -> Result<Option<ReceivedMessage>, StoreError> {
    tx.get(T::Received, id.as_bytes())?
        .map(|b| decode(&b))
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
    tx.insert(T::Inbox, inbox_key.clone(), msg.id.as_bytes());
    msg.inbox_key = Some(inbox_key);
    tx.insert(T::Received, msg.id.as_bytes(), encode(&msg)?);
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
) -> Result<(), StoreError> {
    if let Some(k) = msg.inbox_key.take() {
        tx.remove(T::Inbox, k);
    }
    msg.acknowledged_at = Some(Utc::now());
    msg.acknowledged_by = Some(user.to_string());
    tx.insert(T::Received, msg.id.as_bytes(), encode(&msg)?);
    Ok(())
}

/// Unacknowledged messages, oldest first.
pub fn unacknowledged(store: &Store, limit: usize) -> Result<Vec<ReceivedMessage>, StoreError> {
    let mut out = Vec::new();
    for entry in store.tree(T::Inbox).iter().take(limit) {
        let (_, id) = entry?;
        if let Some(bytes) = store.get(T::Received, &id)? {
            out.push(decode(&bytes)?);
        }
    }
    Ok(out)
}

pub fn get(store: &Store, id: &str) -> Result<Option<ReceivedMessage>, StoreError> {
    store
        .get(T::Received, id.as_bytes())?
        .map(|b| decode(&b))
        .transpose()
}
