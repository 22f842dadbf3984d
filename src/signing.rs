//! Signatures with the gateway's own key (ECDSA P-256, ring): envelopes, receipts and
//! audit checkpoints are signed by whoever vouches for them and verified against the
//! public key in the signer's certificate.

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use x509_parser::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    #[error("the private key is not an ECDSA P-256 key in PKCS#8 form: {0}")]
    BadKey(String),
    #[error("signing failed")]
    Sign,
    #[error("the certificate cannot be read: {0}")]
    BadCertificate(String),
    #[error("the signature does not verify against the certificate's key")]
    BadSignature,
}

/// The gateway's signing key.
pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Signer {
    /// From a PKCS#8 (DER) private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Signer, SigningError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
            .map_err(|e| SigningError::BadKey(e.to_string()))?;
        Ok(Signer { key, rng })
    }

    /// The public key (uncompressed point), to compare with a certificate's.
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SigningError> {
        self.key
            .sign(&self.rng, msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| SigningError::Sign)
    }
}

/// The public key (subjectPublicKey bits) of a DER certificate.
pub fn certificate_public_key(cert_der: &[u8]) -> Result<Vec<u8>, SigningError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| SigningError::BadCertificate(e.to_string()))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// Verifies an ECDSA P-256 signature made by the holder of `cert_der`'s key.
pub fn verify(cert_der: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), SigningError> {
    let public = certificate_public_key(cert_der)?;
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, public)
        .verify(msg, sig)
        .map_err(|_| SigningError::BadSignature)
}
