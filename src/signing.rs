//! Signatures with the gateway's own key (ring): envelopes, receipts and audit
//! checkpoints are signed by whoever vouches for them and verified against the public
//! key in the signer's certificate.
//!
//! The key may be RSA (2048–8192 bits; PKCS#8 or PKCS#1 PEM, as UZI server and
//! PKIoverheid certificates have) or ECDSA P-256 / P-384 (PKCS#8 or SEC1). An RSA key
//! does not say which padding a signature used, so every signature names its algorithm:
//! it travels and is stored as `ALG:HEX` ([`Algorithm`]: `RS256`, `PS256`, `ES256`,
//! `ES384`), and a verifier accepts an algorithm only from that allow-list and only when
//! it fits the certificate's key type (ring signs P-384 with SHA-384 only). A bare hex
//! string is an ES256 signature from before signatures named their algorithm.
//!
//! Signatures outlive certificates (a UZI certificate lasts three years and is renewed),
//! so a signature also names the SHA-256 fingerprint of the certificate whose key made it:
//! `ALG:FINGERPRINT:HEX`. The store keeps every certificate that signed something it
//! holds (`T::Certificates`), and a verifier of a stored record picks the certificate by
//! that fingerprint rather than whatever certificate is current.
//!
//! A [`Signer`] is shared by every part that signs in the gateway's name (send path,
//! receive path, the store's checkpointer) and a reload of the own credentials swaps its
//! key and certificate in place ([`Signer::replace_with`]): every holder signs with the
//! new key from its next signature on, and each signature names the certificate of the
//! key that made it, so old and new signatures both verify.

use std::sync::{Arc, RwLock};

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};
use rustls::pki_types::PrivateKeyDer;
use x509_parser::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    #[error("the private key is not usable: {0}")]
    BadKey(String),
    #[error("signing failed")]
    Sign,
    #[error("the certificate cannot be read: {0}")]
    BadCertificate(String),
    #[error("the certificate's key is of a type wijkpoort does not verify ({0}); use RSA 2048-8192 or ECDSA P-256/P-384")]
    UnsupportedKey(String),
    #[error("the signature is not ALG:HEX")]
    BadEncoding,
    #[error("unknown signature algorithm {0:?} (accepted: RS256, PS256, ES256, ES384)")]
    UnknownAlgorithm(String),
    #[error("a {alg} signature does not fit the certificate's {key} key")]
    AlgorithmMismatch { alg: Algorithm, key: KeyType },
    #[error(
        "the signature names certificate {named}, not the one it is checked against ({given})"
    )]
    OtherCertificate { named: String, given: String },
    #[error("the signature does not verify against the certificate's key")]
    BadSignature,
}

/// The signature algorithms wijkpoort makes and accepts (names as in JOSE, RFC 7518).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// ECDSA P-256 with SHA-256 (ASN.1 DER signature).
    ES256,
    /// ECDSA P-384 with SHA-384 (ASN.1 DER signature).
    ES384,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::PS256 => "PS256",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
        }
    }

    fn parse(s: &str) -> Result<Algorithm, SigningError> {
        match s {
            "RS256" => Ok(Algorithm::RS256),
            "PS256" => Ok(Algorithm::PS256),
            "ES256" => Ok(Algorithm::ES256),
            "ES384" => Ok(Algorithm::ES384),
            other => Err(SigningError::UnknownAlgorithm(
                other.chars().take(16).collect(),
            )),
        }
    }

    /// The key type this algorithm needs.
    fn key_type(self) -> KeyType {
        match self {
            Algorithm::RS256 | Algorithm::PS256 => KeyType::Rsa,
            Algorithm::ES256 => KeyType::P256,
            Algorithm::ES384 => KeyType::P384,
        }
    }

    fn verification(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            Algorithm::ES256 => &signature::ECDSA_P256_SHA256_ASN1,
            Algorithm::ES384 => &signature::ECDSA_P384_SHA384_ASN1,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type of a certificate's public key, as far as signatures are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    P256,
    P384,
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyType::Rsa => "RSA",
            KeyType::P256 => "ECDSA P-256",
            KeyType::P384 => "ECDSA P-384",
        })
    }
}

enum Key {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// The gateway's signing key, shared; a reload may swap it whole ([`Signer::replace_with`]).
pub struct Signer {
    current: RwLock<Arc<Bound>>,
}

/// A key and the certificate it signs for, never changed once made: a signature takes
/// the key, its algorithm and its certificate's fingerprint from the same one.
struct Bound {
    key: Arc<SigningKey>,
    /// The fingerprint of the certificate for this key, named in every signature.
    certificate: Option<String>,
}

struct SigningKey {
    key: Key,
    algorithm: Algorithm,
    rng: SystemRandom,
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

impl Signer {
    /// From a PKCS#8 (DER) private key: RSA, ECDSA P-256 or P-384.
    pub fn from_pkcs8(der: &[u8]) -> Result<Signer, SigningError> {
        let rng = SystemRandom::new();
        if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
        {
            return Ok(Signer::ecdsa(k, Algorithm::ES256));
        }
        if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, der, &rng)
        {
            return Ok(Signer::ecdsa(k, Algorithm::ES384));
        }
        RsaKeyPair::from_pkcs8(der).map(Signer::rsa).map_err(|e| {
            SigningError::BadKey(format!(
                "not an RSA or ECDSA P-256/P-384 key in PKCS#8 form: {e}"
            ))
        })
    }

    /// From a private key as rustls reads PEM files: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub fn from_key(key: &PrivateKeyDer<'_>) -> Result<Signer, SigningError> {
        match key {
            PrivateKeyDer::Pkcs8(k) => Signer::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der())
                .map(Signer::rsa)
                .map_err(|e| SigningError::BadKey(format!("not an RSA key in PKCS#1 form: {e}"))),
            PrivateKeyDer::Sec1(k) => Signer::from_pkcs8(&sec1_to_pkcs8(k.secret_sec1_der())?),
            _ => Err(SigningError::BadKey("an unknown private key format".into())),
        }
    }

    fn ecdsa(key: EcdsaKeyPair, algorithm: Algorithm) -> Signer {
        Signer::holding(SigningKey {
            key: Key::Ecdsa(key),
            algorithm,
            rng: SystemRandom::new(),
        })
    }

    /// RSA keys sign with PSS (RFC 8017's recommendation for new applications).
    fn rsa(key: RsaKeyPair) -> Signer {
        Signer::holding(SigningKey {
            key: Key::Rsa(key),
            algorithm: Algorithm::PS256,
            rng: SystemRandom::new(),
        })
    }

    fn holding(key: SigningKey) -> Signer {
        Signer::bound(Bound {
            key: Arc::new(key),
            certificate: None,
        })
    }

    fn bound(bound: Bound) -> Signer {
        Signer {
            current: RwLock::new(Arc::new(bound)),
        }
    }

    fn current(&self) -> Arc<Bound> {
        match self.current.read() {
            Ok(k) => k.clone(),
            // A writer panicked while swapping: the key itself is whole either way.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Names `cert_der` (whose key this must be) in every signature from now on.
    pub fn for_certificate(self, cert_der: &[u8]) -> Signer {
        Signer::bound(Bound {
            key: self.current().key.clone(),
            certificate: Some(fingerprint(cert_der)),
        })
    }

    /// Takes `other`'s key and certificate: every holder of this signer signs with them
    /// from its next signature on. A reload calls this only after the new certificate is
    /// kept in the store, so that whatever it signs can be verified later.
    pub fn replace_with(&self, other: &Signer) {
        let key = other.current();
        match self.current.write() {
            Ok(mut k) => *k = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.current().key.algorithm
    }

    /// The fingerprint of the certificate named in this signer's signatures, if any.
    pub fn certificate(&self) -> Option<String> {
        self.current().certificate.clone()
    }

    /// The public key as a certificate's subjectPublicKey holds it (an uncompressed EC
    /// point, or an RSA public key in PKCS#1 DER), to compare with a certificate's.
    pub fn public_key(&self) -> Vec<u8> {
        match &self.current().key.key {
            Key::Ecdsa(k) => k.public_key().as_ref().to_vec(),
            Key::Rsa(k) => k.public_key().as_ref().to_vec(),
        }
    }

    /// A raw signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SigningError> {
        self.current().key.sign(msg)
    }

    /// A signature over `msg` as it travels and is stored: `ALG:FINGERPRINT:HEX`
    /// (`ALG:HEX` for a key not bound to a certificate).
    pub fn sign_encoded(&self, msg: &[u8]) -> Result<String, SigningError> {
        let bound = self.current();
        let sig = bound.key.sign(msg)?;
        let algorithm = bound.key.algorithm;
        Ok(match &bound.certificate {
            Some(fp) => format!("{algorithm}:{fp}:{}", hex::encode(sig)),
            None => encode(algorithm, &sig),
        })
    }
}

impl SigningKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SigningError> {
        match &self.key {
            Key::Ecdsa(k) => k
                .sign(&self.rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SigningError::Sign),
            Key::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                let padding: &'static dyn signature::RsaEncoding = match self.algorithm {
                    Algorithm::RS256 => &signature::RSA_PKCS1_SHA256,
                    _ => &signature::RSA_PSS_SHA256,
                };
                k.sign(padding, &self.rng, msg, &mut sig)
                    .map_err(|_| SigningError::Sign)?;
                Ok(sig)
            }
        }
    }
}

/// The SHA-256 fingerprint (hex) of a DER certificate.
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref())
}

/// `ALG:HEX`.
pub fn encode(algorithm: Algorithm, sig: &[u8]) -> String {
    format!("{algorithm}:{}", hex::encode(sig))
}

/// An encoded signature, taken apart.
pub struct Decoded {
    pub algorithm: Algorithm,
    /// The fingerprint of the certificate it names, if it names one.
    pub certificate: Option<String>,
    pub signature: Vec<u8>,
}

/// Takes `ALG:FINGERPRINT:HEX`, `ALG:HEX` or bare hex (a legacy ES256 one) apart.
pub fn decode_full(encoded: &str) -> Result<Decoded, SigningError> {
    let parts: Vec<&str> = encoded.split(':').collect();
    let (algorithm, certificate, hex_sig) = match parts.as_slice() {
        [sig] => (Algorithm::ES256, None, *sig),
        [alg, sig] => (Algorithm::parse(alg)?, None, *sig),
        [alg, fp, sig] if fp.len() == 64 && fp.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (Algorithm::parse(alg)?, Some(fp.to_ascii_lowercase()), *sig)
        }
        _ => return Err(SigningError::BadEncoding),
    };
    let signature = hex::decode(hex_sig).map_err(|_| SigningError::BadEncoding)?;
    Ok(Decoded {
        algorithm,
        certificate,
        signature,
    })
}

/// The fingerprint of the certificate an encoded signature names, if any.
pub fn named_certificate(encoded: &str) -> Option<String> {
    decode_full(encoded).ok().and_then(|d| d.certificate)
}

/// The public key (subjectPublicKey bits) of a DER certificate.
pub fn certificate_public_key(cert_der: &[u8]) -> Result<Vec<u8>, SigningError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| SigningError::BadCertificate(e.to_string()))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// The key type and public key bits of a DER certificate.
pub fn certificate_key(cert_der: &[u8]) -> Result<(KeyType, Vec<u8>), SigningError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| SigningError::BadCertificate(e.to_string()))?;
    let spki = cert.public_key();
    let alg = spki.algorithm.algorithm.to_id_string();
    let key_type = if alg == OID_RSA {
        KeyType::Rsa
    } else if alg == OID_EC {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string())
            .unwrap_or_default();
        match curve.as_str() {
            OID_P256 => KeyType::P256,
            OID_P384 => KeyType::P384,
            other => return Err(SigningError::UnsupportedKey(format!("EC curve {other}"))),
        }
    } else {
        return Err(SigningError::UnsupportedKey(alg));
    };
    Ok((key_type, spki.subject_public_key.data.to_vec()))
}

/// Verifies an encoded signature (`ALG:HEX`) made by the holder of `cert_der`'s key: the
/// algorithm must be on the allow-list and fit the certificate's key type.
pub fn verify(cert_der: &[u8], msg: &[u8], encoded: &str) -> Result<(), SigningError> {
    let d = decode_full(encoded)?;
    if let Some(named) = d.certificate {
        let given = fingerprint(cert_der);
        if named != given {
            return Err(SigningError::OtherCertificate { named, given });
        }
    }
    verify_raw(cert_der, d.algorithm, msg, &d.signature)
}

/// Verifies a raw signature of algorithm `alg`.
pub fn verify_raw(
    cert_der: &[u8],
    alg: Algorithm,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), SigningError> {
    let (key_type, public) = certificate_key(cert_der)?;
    if alg.key_type() != key_type {
        return Err(SigningError::AlgorithmMismatch { alg, key: key_type });
    }
    UnparsedPublicKey::new(alg.verification(), public)
        .verify(msg, sig)
        .map_err(|_| SigningError::BadSignature)
}

/// Wraps a SEC1 `ECPrivateKey` (which names its curve) into PKCS#8, the form ring reads.
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, SigningError> {
    let bad = || SigningError::BadKey("a SEC1 EC key that names no P-256 or P-384 curve".into());
    // The curve OID inside the SEC1 key's [0] parameters.
    let curve = if contains(sec1, P256_OID_DER) {
        P256_OID_DER
    } else if contains(sec1, P384_OID_DER) {
        P384_OID_DER
    } else {
        return Err(bad());
    };
    let mut algorithm = Vec::new();
    algorithm.extend_from_slice(EC_PUBLIC_KEY_OID_DER);
    algorithm.extend_from_slice(curve);
    let mut body = vec![0x02, 0x01, 0x00]; // version 0
    body.extend(crate::der::tlv(0x30, &algorithm));
    body.extend(crate::der::tlv(0x04, sec1));
    Ok(crate::der::tlv(0x30, &body))
}

const EC_PUBLIC_KEY_OID_DER: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256_OID_DER: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID_DER: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ecdsa_signature_names_its_algorithm_and_verifies_only_as_that() {
        let (signer, cert) = crate::dev::pki::test_credentials();
        assert_eq!(signer.algorithm(), Algorithm::ES256);
        let sig = signer.sign_encoded(b"envelope").unwrap();
        assert!(sig.starts_with("ES256:"), "{sig}");
        verify(&cert, b"envelope", &sig).unwrap();
        assert_eq!(
            verify(&cert, b"other", &sig),
            Err(SigningError::BadSignature)
        );
        let as_rsa = sig.replacen("ES256", "RS256", 1);
        assert!(matches!(
            verify(&cert, b"envelope", &as_rsa),
            Err(SigningError::AlgorithmMismatch { .. })
        ));
        let as_p384 = sig.replacen("ES256", "ES384", 1);
        assert!(verify(&cert, b"envelope", &as_p384).is_err());
        assert!(matches!(
            verify(&cert, b"envelope", &sig.replacen("ES256", "HS256", 1)),
            Err(SigningError::UnknownAlgorithm(_))
        ));
    }

    #[test]
    fn a_bare_hex_signature_is_a_legacy_es256_one() {
        let (signer, cert) = crate::dev::pki::test_credentials();
        let raw = signer.sign(b"receipt").unwrap();
        verify(&cert, b"receipt", &hex::encode(raw)).unwrap();
        assert_eq!(
            verify(&cert, b"receipt", "not hex"),
            Err(SigningError::BadEncoding)
        );
    }
}
