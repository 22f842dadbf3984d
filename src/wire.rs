//! The listener's wire format, shared by both ends: the auditor's path prefix, and what the sending gateway's relay posts
//! to `POST /v1/relay/batch` and what the receiving gateway's listener answers. Each
//! envelope travels as its exact signed bytes (a raw JSON value), so neither side
//! re-encodes what the signature covers. Types and limits only: no I/O, no checks.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::receipt::Receipt;

/// The path prefix of the auditor's routes on the listener.
pub const AUDIT_PREFIX: &str = "/v1/audit/";
/// The path the relay posts batches to.
pub const BATCH_PATH: &str = "/v1/relay/batch";
/// Most messages in one batch.
pub const MAX_BATCH: usize = 256;
/// Largest batch request the listener reads.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// `POST /v1/relay/batch`: several signed envelopes.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchRequest<'a> {
    #[serde(borrow)]
    pub messages: Vec<BatchItem<'a>>,
}

/// One signed envelope of a batch.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchItem<'a> {
    /// The sender's signature over the envelope's bytes (hex). A missing one is refused
    /// for that message alone, with `missing_signature`.
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
