//! The receipt: the receiving gateway's signed statement that it stored a message
//! (its id, the SHA-256 of the exact bytes it stored, when, and who it is). The sender
//! keeps it with the message as proof of delivery.

use chrono::{DateTime, Utc};
use ring::digest;
use serde::{Deserialize, Serialize};

use crate::signing::{self, Signer, SigningError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub message_id: String,
    /// SHA-256 (hex) of the envelope bytes the receiver stored.
    pub stored_hash: String,
    pub received_at: DateTime<Utc>,
    /// The receiver's organisation identifier.
    pub receiver: String,
    /// ECDSA P-256 signature (hex) over [`Receipt::signed_bytes`].
    pub signature: String,
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

impl Receipt {
    pub fn issue(
        message_id: &str,
        stored: &[u8],
        receiver: &str,
        signer: &Signer,
    ) -> Result<Receipt, SigningError> {
        let mut r = Receipt {
            message_id: message_id.to_string(),
            stored_hash: sha256_hex(stored),
            received_at: Utc::now(),
            receiver: receiver.to_string(),
            signature: String::new(),
        };
        r.signature = hex::encode(signer.sign(&r.signed_bytes())?);
        Ok(r)
    }

    /// The bytes the signature covers: a fixed, line-based form that does not depend on
    /// how JSON happens to be serialised.
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "wijkpoort-receipt-v1\n{}\n{}\n{}\n{}",
            self.message_id,
            self.stored_hash,
            self.received_at.to_rfc3339(),
            self.receiver
        )
        .into_bytes()
    }

    /// Checks that this receipt is for exactly `sent` and signed by the holder of
    /// `receiver_cert`.
    pub fn verify(
        &self,
        message_id: &str,
        sent: &[u8],
        receiver_cert: &[u8],
    ) -> Result<(), String> {
        if self.message_id != message_id {
            return Err(format!("the receipt is for message {}", self.message_id));
        }
        if self.stored_hash != sha256_hex(sent) {
            return Err("the receipt's hash does not match the message sent".into());
        }
        let sig = hex::decode(&self.signature)
            .map_err(|_| "the receipt's signature is not hex".to_string())?;
        signing::verify(receiver_cert, &self.signed_bytes(), &sig).map_err(|e| e.to_string())
    }
}
