//! The listener's wire format, shared by both ends: the auditor's path prefix, and what the sending gateway's relay posts
//! to `POST /v1/relay/batch` and what the receiving gateway's listener answers. Each
//! envelope travels as its exact signed bytes (a raw JSON value), so neither side
//! re-encodes what the signature covers. Types and limits only: no I/O, no checks.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::envelope_batch::BatchSignature;
use crate::merkle::BatchProof;
use crate::receipt::Receipt;

/// The path prefix of the auditor's routes on the listener.
pub const AUDIT_PREFIX: &str = "/v1/audit/";
/// The path the relay posts batches to.
pub const BATCH_PATH: &str = "/v1/relay/batch";
/// Most messages in one batch.
pub const MAX_BATCH: usize = 256;
/// Largest batch request the listener reads.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// `POST /v1/relay/batch`: several envelopes under one batch signature
/// ([`crate::envelope_batch`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchRequest<'a> {
    #[serde(borrow)]
    pub messages: Vec<BatchItem<'a>>,
    /// The sender's one signature over the root of the batch's envelopes. Absent from
    /// senders that signed each envelope on its own (before batch signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_signature: Option<BatchSignature>,
}

/// One envelope of a batch.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchItem<'a> {
    /// Its path to the batch signature's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchProof>,
    /// From senders before batch signatures: the sender's signature over the envelope's
    /// own bytes. An envelope with neither this nor a path under a batch signature is
    /// refused for that message alone, with `missing_signature`.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub envelope: &'a RawValue,
}

/// The answer to a batch: one result per message, in order.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchAnswer {
    pub results: Vec<ItemAnswer>,
}

/// A receipt for a stored message, or a refusal with its HTTP status.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ItemAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    /// The refusal as the listener shapes it (`{"error", "message", "field"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}
