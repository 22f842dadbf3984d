//! The receipt: the receiving gateway's signed statement that it stored a message
//! (its id, the SHA-256 of the exact bytes it stored, when, and who it is). The sender
//! keeps it with the message as proof of delivery.
//!
//! A relay batch holds up to 256 messages, and an ECDSA signature costs the receiver
//! ~22 µs to make and the sender ~75 µs to check. So the receiver signs once for the
//! messages a batch stored (and only those: a read pass decides which are new, the
//! signature is made off the store's committer, and the commit re-checks that it stores
//! exactly those): each message's statement is a leaf of a Merkle tree, the signature
//! covers the root, and each receipt carries its leaf's path to that root
//! ([`BatchProof`]). A receipt
//! still stands on its own: with the receiver's certificate, anyone can check that this
//! message id and hash were in what the receiver signed. A receipt without a batch proof
//! (from an older receiver) is signed on its own and still verifies.
//!
//! The tree is [`crate::merkle`]'s, shared with the sender's batch signature over the
//! envelopes it relays.

use chrono::{DateTime, Utc};
use ring::digest;
use serde::{Deserialize, Serialize};

use crate::merkle::{self, Hash, PathError};
use crate::signing::{self, Signer, SigningError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub message_id: String,
    /// SHA-256 (hex) of the envelope bytes the receiver stored.
    pub stored_hash: String,
    pub received_at: DateTime<Utc>,
    /// The receiver's organisation identifier.
    pub receiver: String,
    /// The sender's organisation identifier: message ids are the sender's own, so a
    /// receipt names whose message it is. In the signed leaf when present; receipts of
    /// receivers before sender-scoped ids have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Where this message sits in the batch the signature covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchProof>,
    /// The receiver's signature over [`Receipt::signed_bytes`], `ALG:HEX`
    /// ([`crate::signing`]).
    pub signature: String,
}

pub use crate::merkle::BatchProof;

/// What is left of a message whose body a retention purge removed
/// ([`crate::retention`]): when, and the SHA-256 of the envelope that was there, so the
/// record still proves which bytes were exchanged (its signature and receipt cover them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgedBody {
    pub at: DateTime<Utc>,
    pub sha256: String,
}

impl PurgedBody {
    /// Empties `envelope` (a retention purge) and returns what stays of it: when it went
    /// and its SHA-256, so the receipt and the chain still prove which bytes they were.
    pub fn take(envelope: &mut String, at: DateTime<Utc>) -> PurgedBody {
        let sha256 = sha256_hex(envelope.as_bytes());
        envelope.clear();
        PurgedBody { at, sha256 }
    }
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

fn leaf_hash(sender: Option<&str>, message_id: &str, stored_hash: &str) -> Hash {
    match sender {
        None => merkle::leaf(&[
            b"wijkpoort-receipt-leaf\n",
            message_id.as_bytes(),
            b"\n",
            stored_hash.as_bytes(),
        ]),
        Some(sender) => merkle::leaf(&[
            b"wijkpoort-receipt-leaf-v2\n",
            sender.as_bytes(),
            b"\n",
            message_id.as_bytes(),
            b"\n",
            stored_hash.as_bytes(),
        ]),
    }
}

/// Why a receipt does not prove what it should.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    #[error("the receipt's {0}")]
    Path(#[from] PathError),
    #[error("the receipt is for message {0}")]
    OtherMessage(String),
    #[error("the receipt's hash does not match the message sent")]
    HashMismatch,
    #[error("the receipt is for a message of {0}")]
    OtherSender(String),
    #[error("the receipt's signature is not ALG:HEX")]
    SignatureNotHex,
    #[error(transparent)]
    Signature(#[from] SigningError),
    /// It names a signing certificate the receiver presented that was refused.
    #[error("{0}")]
    RefusedCertificate(String),
}

fn batch_bytes(root: &Hash, size: u32, received_at: &DateTime<Utc>, receiver: &str) -> Vec<u8> {
    format!(
        "wijkpoort-receipt-batch-v1\n{}\n{size}\n{}\n{receiver}",
        hex::encode(root),
        received_at.to_rfc3339()
    )
    .into_bytes()
}

impl Receipt {
    /// Receipts for a batch of stored messages (id, exact bytes), in order, with one
    /// signature over the root of their Merkle tree.
    pub fn issue_batch(
        stored: &[(&str, &[u8])],
        receiver: &str,
        signer: &Signer,
    ) -> Result<Vec<Receipt>, SigningError> {
        Receipt::issue_batch_from(None, stored, receiver, signer)
    }

    /// As [`Receipt::issue_batch`], for messages of `sender` (named in each receipt and
    /// in its signed leaf).
    pub fn issue_batch_from(
        sender: Option<&str>,
        stored: &[(&str, &[u8])],
        receiver: &str,
        signer: &Signer,
    ) -> Result<Vec<Receipt>, SigningError> {
        let hashed: Vec<(&str, String)> = stored
            .iter()
            .map(|(id, bytes)| (*id, sha256_hex(bytes)))
            .collect();
        Receipt::issue_batch_hashed(sender, &hashed, receiver, signer)
    }

    /// As [`Receipt::issue_batch_from`], for messages given by id and the SHA-256 (hex)
    /// of their stored bytes.
    pub fn issue_batch_hashed(
        sender: Option<&str>,
        stored: &[(&str, String)],
        receiver: &str,
        signer: &Signer,
    ) -> Result<Vec<Receipt>, SigningError> {
        if stored.is_empty() {
            return Ok(Vec::new());
        }
        let hashes: Vec<String> = stored.iter().map(|(_, h)| h.clone()).collect();
        let leaves: Vec<Hash> = stored
            .iter()
            .map(|(id, h)| leaf_hash(sender, id, h))
            .collect();
        let (root, paths) = merkle::tree(&leaves);
        u32::try_from(stored.len()).map_err(|_| SigningError::BadSignature)?;
        let proofs = merkle::proofs(paths);
        let size = proofs.first().map_or(0, |p| p.size);
        let received_at = Utc::now();
        let signature = signer.sign_encoded(&batch_bytes(&root, size, &received_at, receiver))?;
        Ok(stored
            .iter()
            .zip(hashes)
            .zip(proofs)
            .map(|(((id, _), stored_hash), proof)| Receipt {
                message_id: id.to_string(),
                stored_hash,
                received_at,
                receiver: receiver.to_string(),
                sender: sender.map(str::to_string),
                batch: Some(proof),
                signature: signature.clone(),
            })
            .collect())
    }

    /// The receipt for one stored message: a batch of one.
    pub fn issue(
        message_id: &str,
        stored: &[u8],
        receiver: &str,
        signer: &Signer,
    ) -> Result<Receipt, SigningError> {
        Receipt::issue_batch(&[(message_id, stored)], receiver, signer)?
            .pop()
            .ok_or(SigningError::BadSignature)
    }

    /// The bytes the signature covers: a fixed, line-based form that does not depend on
    /// how JSON happens to be serialised. For a batch receipt, the batch statement with
    /// the root this receipt's path leads to.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, ReceiptError> {
        match &self.batch {
            Some(proof) => {
                let leaf = leaf_hash(self.sender.as_deref(), &self.message_id, &self.stored_hash);
                let root = merkle::root_from_path(leaf, proof)?;
                Ok(batch_bytes(
                    &root,
                    proof.size,
                    &self.received_at,
                    &self.receiver,
                ))
            }
            None => Ok(format!(
                "wijkpoort-receipt-v1\n{}\n{}\n{}\n{}",
                self.message_id,
                self.stored_hash,
                self.received_at.to_rfc3339(),
                self.receiver
            )
            .into_bytes()),
        }
    }

    /// Checks that this receipt is for exactly `sent` and returns the statement its
    /// signature must cover; [`Receipt::verify`] checks that signature too. Receipts of
    /// one batch share their statement, so a sender checks the signature once per batch.
    pub fn statement_for(&self, message_id: &str, sent: &[u8]) -> Result<Vec<u8>, ReceiptError> {
        if self.message_id != message_id {
            return Err(ReceiptError::OtherMessage(self.message_id.clone()));
        }
        if self.stored_hash != sha256_hex(sent) {
            return Err(ReceiptError::HashMismatch);
        }
        self.signed_bytes()
    }

    /// Checks that a receipt that names a sender names `sender`.
    pub fn check_sender(&self, sender: &str) -> Result<(), ReceiptError> {
        match &self.sender {
            Some(s) if s != sender => Err(ReceiptError::OtherSender(s.clone())),
            _ => Ok(()),
        }
    }

    /// Checks that this receipt is for exactly `sent` and signed by the holder of
    /// `receiver_cert`.
    pub fn verify(
        &self,
        message_id: &str,
        sent: &[u8],
        receiver_cert: &[u8],
    ) -> Result<(), ReceiptError> {
        let statement = self.statement_for(message_id, sent)?;
        verify_statement(&statement, &self.signature, receiver_cert)
    }
}

/// Checks a receipt signature (hex) over `statement` against the receiver's certificate.
pub fn verify_statement(
    statement: &[u8],
    signature: &str,
    receiver_cert: &[u8],
) -> Result<(), ReceiptError> {
    signing::verify(receiver_cert, statement, signature).map_err(|e| match e {
        SigningError::BadEncoding => ReceiptError::SignatureNotHex,
        other => ReceiptError::Signature(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> (Signer, Vec<u8>) {
        crate::dev::pki::test_credentials()
    }

    #[test]
    fn a_receipt_signed_on_its_own_by_an_older_receiver_still_verifies() {
        let (signer, cert) = signer();
        let mut r = Receipt {
            sender: None,
            message_id: "msg-1".into(),
            stored_hash: sha256_hex(b"envelope"),
            received_at: Utc::now(),
            receiver: "wijkteam".into(),
            batch: None,
            signature: String::new(),
        };
        r.signature = hex::encode(signer.sign(&r.signed_bytes().unwrap()).unwrap());
        r.verify("msg-1", b"envelope", &cert).unwrap();
        r.received_at += chrono::Duration::seconds(1);
        assert!(r.verify("msg-1", b"envelope", &cert).is_err());
    }

    #[test]
    fn every_receipt_of_every_batch_size_verifies_and_only_for_its_own_message() {
        let (signer, cert) = signer();
        for n in [1usize, 2, 3, 5, 8, 13, 256] {
            let bodies: Vec<Vec<u8>> = (0..n)
                .map(|i| format!("envelope {i}").into_bytes())
                .collect();
            let ids: Vec<String> = (0..n).map(|i| format!("msg-{i}")).collect();
            let stored: Vec<(&str, &[u8])> = ids
                .iter()
                .zip(&bodies)
                .map(|(i, b)| (i.as_str(), b.as_slice()))
                .collect();
            let receipts = Receipt::issue_batch(&stored, "wijkteam", &signer).unwrap();
            assert_eq!(receipts.len(), n);
            for (i, r) in receipts.iter().enumerate() {
                r.verify(&ids[i], &bodies[i], &cert).unwrap();
                let other = (i + 1) % n;
                if other != i {
                    assert!(r.verify(&ids[i], &bodies[other], &cert).is_err());
                    let mut moved = r.clone();
                    moved.message_id = ids[other].clone();
                    moved.stored_hash = sha256_hex(&bodies[other]);
                    assert!(
                        moved.verify(&ids[other], &bodies[other], &cert).is_err(),
                        "a path proves only its own leaf"
                    );
                }
            }
        }
    }

    #[test]
    fn a_damaged_path_or_position_does_not_verify() {
        let (signer, cert) = signer();
        let bodies: Vec<Vec<u8>> = (0..5).map(|i| vec![i as u8; 10]).collect();
        let stored: Vec<(&str, &[u8])> = ["a", "b", "c", "d", "e"]
            .into_iter()
            .zip(&bodies)
            .map(|(i, b)| (i, b.as_slice()))
            .collect();
        let r = Receipt::issue_batch(&stored, "wijkteam", &signer)
            .unwrap()
            .remove(1);
        r.verify("b", &bodies[1], &cert).unwrap();
        let mut bad = r.clone();
        bad.batch.as_mut().unwrap().path[0] = "00".repeat(32);
        assert!(bad.verify("b", &bodies[1], &cert).is_err());
        let mut bad = r.clone();
        bad.batch.as_mut().unwrap().path.pop();
        assert!(bad.verify("b", &bodies[1], &cert).is_err());
        let mut bad = r.clone();
        bad.batch.as_mut().unwrap().index = 0;
        assert!(bad.verify("b", &bodies[1], &cert).is_err());
        let mut bad = r.clone();
        bad.batch.as_mut().unwrap().index = 9;
        assert!(bad.verify("b", &bodies[1], &cert).is_err());
        let mut bad = r;
        bad.received_at += chrono::Duration::seconds(1);
        assert!(bad.verify("b", &bodies[1], &cert).is_err());
    }
}
