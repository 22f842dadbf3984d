//! The sender's signature over a relay batch of envelopes: one signature per batch the
//! relay sends, over the root of a Merkle tree ([`crate::merkle`]) whose leaves are the
//! SHA-256 hashes of the exact envelope bytes, and for each envelope its path to that
//! root ([`EnvelopeProof`]).
//!
//! Why not a signature per envelope: with a UZI key (RSA-4096) a signature costs ~5 ms of
//! CPU, so signing each envelope when the local system submits it would put 5 ms into
//! every "accepted" and cap a practice at a few hundred messages a second. The relay
//! signs instead, once per batch, just before it sends (on the blocking pool, never on
//! the accept path nor on the store's committer), and the receiver checks one signature
//! per batch plus a path per envelope (a few hashes).
//!
//! A batch that is sent again after a failure may hold another set of messages, so the
//! signature is per *sent* batch: each attempt signs what it sends. The receiver stores
//! a message once and keeps the proof it first arrived with; a resend in another batch
//! is answered with the first receipt, as before.
//!
//! What one stored envelope proves on its own: with its [`EnvelopeProof`], the batch
//! signature and the sender's certificate (kept in the store by the fingerprint the
//! signature names), anyone can check offline that the holder of that certificate's key
//! signed a batch, from `from` to `to`, that contained exactly these envelope bytes.
//! Envelopes stored before batch signatures carry a signature over their own bytes and
//! still verify ([`verify_stored`]).

use serde::{Deserialize, Serialize};

use crate::merkle::{self, BatchProof, Hash, PathError};
use crate::receipt::sha256_hex;
use crate::signing::{self, Signer, SigningError};

/// The batch-wide part: what the sender signed and its signature. It travels once per
/// batch (`POST /v1/relay/batch`, field `batch_signature`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSignature {
    /// The tree's root, hex.
    pub root: String,
    /// How many envelopes the tree holds.
    pub size: u32,
    /// The sender's and the receiver's organisation identifiers.
    pub from: String,
    pub to: String,
    /// The sender's signature over [`statement`], `ALG:FINGERPRINT:HEX`
    /// ([`crate::signing`]).
    pub signature: String,
}

/// One envelope's place in its signed batch, as kept with the stored envelope: enough,
/// with the batch signature stored beside it, to rebuild the signed statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeProof {
    pub from: String,
    pub to: String,
    #[serde(flatten)]
    pub proof: BatchProof,
}

/// Why an envelope is not proven by a batch signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeProofError {
    #[error("the envelope's {0}")]
    Path(#[from] PathError),
    #[error("the envelope's batch path does not lead to the batch's signed root (altered, or taken from another batch)")]
    NotInBatch,
    #[error(
        "the envelope's batch position names a batch of {path}, the signed batch holds {signed}"
    )]
    SizeMismatch { path: u32, signed: u32 },
    #[error("the batch signature's root is not 32-byte hex")]
    RootNotHex,
    #[error(transparent)]
    Signature(#[from] SigningError),
}

/// An envelope's leaf: the SHA-256 of its exact bytes, under a label of its own.
pub fn leaf(envelope: &[u8]) -> Hash {
    merkle::leaf(&[
        b"wijkpoort-envelope-leaf-v1\n",
        sha256_hex(envelope).as_bytes(),
    ])
}

/// The bytes the batch signature covers: a fixed, line-based form.
pub fn statement(root: &Hash, size: u32, from: &str, to: &str) -> Vec<u8> {
    format!(
        "wijkpoort-envelope-batch-v1\n{}\n{size}\n{from}\n{to}",
        hex::encode(root)
    )
    .into_bytes()
}

/// Signs a batch of envelopes (exact bytes, in the order they are sent) from `from` to
/// `to`: one signature, and each envelope's path.
pub fn sign(
    signer: &Signer,
    from: &str,
    to: &str,
    envelopes: &[&[u8]],
) -> Result<(BatchSignature, Vec<BatchProof>), SigningError> {
    let size = u32::try_from(envelopes.len()).map_err(|_| SigningError::Sign)?;
    let leaves: Vec<Hash> = envelopes.iter().map(|e| leaf(e)).collect();
    let (root, paths) = merkle::tree(&leaves);
    let signature = signer.sign_encoded(&statement(&root, size, from, to))?;
    Ok((
        BatchSignature {
            root: hex::encode(root),
            size,
            from: from.to_string(),
            to: to.to_string(),
            signature,
        },
        merkle::proofs(paths),
    ))
}

impl BatchSignature {
    /// The signed root.
    pub fn root(&self) -> Result<Hash, EnvelopeProofError> {
        let mut root = [0u8; 32];
        hex::decode_to_slice(&self.root, &mut root).map_err(|_| EnvelopeProofError::RootNotHex)?;
        Ok(root)
    }

    /// Checks the signature over the batch statement against the sender's certificate.
    pub fn verify(&self, sender_cert: &[u8]) -> Result<(), EnvelopeProofError> {
        let root = self.root()?;
        signing::verify(
            sender_cert,
            &statement(&root, self.size, &self.from, &self.to),
            &self.signature,
        )?;
        Ok(())
    }

    /// Checks that `envelope` is a member of this batch along `proof` (the signature
    /// itself is checked once per batch, by [`BatchSignature::verify`]).
    pub fn check_member(
        &self,
        envelope: &[u8],
        proof: &BatchProof,
    ) -> Result<(), EnvelopeProofError> {
        if proof.size != self.size {
            return Err(EnvelopeProofError::SizeMismatch {
                path: proof.size,
                signed: self.size,
            });
        }
        if merkle::root_from_path(leaf(envelope), proof)? != self.root()? {
            return Err(EnvelopeProofError::NotInBatch);
        }
        Ok(())
    }

    /// What to keep with a member envelope.
    pub fn proof_for(&self, proof: BatchProof) -> EnvelopeProof {
        EnvelopeProof {
            from: self.from.clone(),
            to: self.to.clone(),
            proof,
        }
    }
}

impl EnvelopeProof {
    /// The root this proof leads to from `envelope`.
    pub fn root_for(&self, envelope: &[u8]) -> Result<Hash, PathError> {
        merkle::root_from_path(leaf(envelope), &self.proof)
    }

    /// The statement the batch signature must cover for `envelope` to be in it.
    pub fn statement_for(&self, envelope: &[u8]) -> Result<Vec<u8>, PathError> {
        Ok(statement(
            &self.root_for(envelope)?,
            self.proof.size,
            &self.from,
            &self.to,
        ))
    }
}

/// Checks a stored envelope's signature against the certificate that made it: a batch
/// signature with the envelope's path, or (stored before batch signatures) a signature
/// over the envelope's own bytes.
pub fn verify_stored(
    signer_cert: &[u8],
    envelope: &[u8],
    signature: &str,
    proof: Option<&EnvelopeProof>,
) -> Result<(), EnvelopeProofError> {
    match proof {
        Some(p) => signing::verify(signer_cert, &p.statement_for(envelope)?, signature)?,
        None => signing::verify(signer_cert, envelope, signature)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("{{\"id\":\"msg-{i}\"}}").into_bytes())
            .collect()
    }

    #[test]
    fn one_signature_proves_every_envelope_of_a_batch_of_one_and_of_256() {
        let (signer, cert) = crate::dev::pki::test_credentials();
        for n in [1usize, 2, 3, 256] {
            let envelopes = batch(n);
            let refs: Vec<&[u8]> = envelopes.iter().map(Vec::as_slice).collect();
            let (signed, proofs) = sign(&signer, "practice", "wijkteam", &refs).unwrap();
            assert_eq!((signed.size as usize, proofs.len()), (n, n));
            signed.verify(&cert).unwrap();
            for (e, p) in envelopes.iter().zip(&proofs) {
                signed.check_member(e, p).unwrap();
                let kept = signed.proof_for(p.clone());
                verify_stored(&cert, e, &signed.signature, Some(&kept)).unwrap();
                assert!(verify_stored(&cert, b"{}", &signed.signature, Some(&kept)).is_err());
            }
        }
    }

    #[test]
    fn a_tampered_path_root_or_signature_or_a_moved_envelope_is_refused() {
        let (signer, cert) = crate::dev::pki::test_credentials();
        let envelopes = batch(5);
        let refs: Vec<&[u8]> = envelopes.iter().map(Vec::as_slice).collect();
        let (a, proofs_a) = sign(&signer, "practice", "wijkteam", &refs).unwrap();
        let mut path = proofs_a[1].clone();
        path.path[0] = "00".repeat(32);
        assert_eq!(
            a.check_member(&envelopes[1], &path),
            Err(EnvelopeProofError::NotInBatch)
        );
        let mut other_root = a.clone();
        other_root.root = "11".repeat(32);
        assert!(matches!(
            other_root.verify(&cert),
            Err(EnvelopeProofError::Signature(SigningError::BadSignature))
        ));
        let mut forged = a.clone();
        forged.to = "someone-else".into();
        assert!(forged.verify(&cert).is_err());
        // Moved: envelope 1 of batch A, with its path, into batch B.
        let (b, _) = sign(&signer, "practice", "wijkteam", &refs[2..]).unwrap();
        assert!(matches!(
            b.check_member(&envelopes[1], &proofs_a[1]),
            Err(EnvelopeProofError::SizeMismatch { .. })
        ));
        let (c, _) = sign(&signer, "practice", "wijkteam", &[refs[3]; 5]).unwrap();
        assert_eq!(
            c.check_member(&envelopes[1], &proofs_a[1]),
            Err(EnvelopeProofError::NotInBatch)
        );
    }

    #[test]
    fn an_envelope_signed_on_its_own_before_batch_signatures_still_verifies() {
        let (signer, cert) = crate::dev::pki::test_credentials();
        let sig = signer.sign_encoded(b"{\"id\":\"old\"}").unwrap();
        verify_stored(&cert, b"{\"id\":\"old\"}", &sig, None).unwrap();
        assert!(verify_stored(&cert, b"{\"id\":\"new\"}", &sig, None).is_err());
    }
}
