//! Sealing at rest: what the store keeps about a child (envelopes, received messages,
//! consent events) is encrypted with the gateway's **data key**, an AES-256-GCM key
//! (ring's AEAD) of its own in its own file — not the HMAC secret, so that the key that
//! makes pseudonyms searchable can be kept for years while the data key is rotated and
//! the old one destroyed.
//!
//! A sealed value is `version (1) ‖ key id (8) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`.
//! The key id (the first 8 bytes of SHA-256 of the key) names the key a value was sealed
//! with, so a value under another key is refused by name instead of failing as
//! "tampered". The associated data binds the value to its place: the header, the tree's
//! name and the record's key. A value copied to another record, or another tree, does
//! not open.
//!
//! Nonces are 96 random bits from ring's `SystemRandom`. NIST SP 800-38D (§8.3) allows
//! at most 2^32 invocations of one key with random 96-bit nonces; the store counts the
//! seals made under each key ([`Sealer::seals`], kept in its meta tree with every commit
//! that seals) and this module refuses the seal that would pass [`MAX_SEALS`]: rotate the
//! key (`wijkpoort store rotate-key`) long before, which starts a fresh count.
//!
//! This module knows bytes, keys and places; which trees are sealed is the store's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// The first byte of every sealed value.
pub const SEAL_VERSION: u8 = 1;
/// Bytes of the key id in a sealed value's header.
pub const KEY_ID_LEN: usize = 8;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// Most seals one key may make: NIST SP 800-38D's bound for random 96-bit nonces.
pub const MAX_SEALS: u64 = 1 << 32;

/// Why a value could not be sealed or opened, or a key not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error("cannot read the data key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the data key file {0} must hold exactly 32 bytes as 64 hex digits (make one with `openssl rand -hex 32 > FILE; chmod 600 FILE`)")]
    KeyFormat(PathBuf),
    #[error("a stored value in {tree} is not sealed (a store written before encryption at rest? run `wijkpoort store compact`)")]
    NotSealed { tree: String },
    #[error("a stored value in {tree} was sealed with data key {found}, not with this store's key {expected}")]
    OtherKey {
        tree: String,
        found: String,
        expected: String,
    },
    #[error("a stored value in {tree} does not open: altered, or moved from another record")]
    Tampered { tree: String },
    #[error("data key {key} has made {count} seals, the most one key may make with random nonces (NIST SP 800-38D): rotate it with `wijkpoort store rotate-key`")]
    Exhausted { key: String, count: u64 },
    #[error("no randomness for a nonce")]
    Random,
}

/// A data key and its id.
pub struct DataKey {
    id: [u8; KEY_ID_LEN],
    key: LessSafeKey,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id_hex())
            .finish_non_exhaustive()
    }
}

impl DataKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<DataKey> {
        if bytes.len() != 32 {
            return None;
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).ok()?);
        Some(DataKey { id, key })
    }

    /// Reads a key file: 64 hex digits (surrounding white space ignored).
    pub fn load(path: &Path) -> Result<DataKey, SealError> {
        let text = std::fs::read_to_string(path).map_err(|source| SealError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        hex::decode(text.trim())
            .ok()
            .and_then(|b| DataKey::from_bytes(&b))
            .ok_or_else(|| SealError::KeyFormat(path.to_path_buf()))
    }

    /// A fresh random key as a key file's text (64 hex digits and a newline).
    pub fn generate_hex() -> Result<String, SealError> {
        Ok(format!("{}\n", hex::encode(random_bytes()?)))
    }

    /// A fresh random key (tests, benchmarks).
    pub fn random() -> Result<DataKey, SealError> {
        DataKey::from_bytes(&random_bytes()?).ok_or(SealError::Random)
    }

    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }

    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

fn random_bytes() -> Result<[u8; 32], SealError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SealError::Random)?;
    Ok(bytes)
}

/// The key id a sealed value names, if it is a sealed value at all.
pub fn key_id_of(stored: &[u8]) -> Option<[u8; KEY_ID_LEN]> {
    if stored.len() < HEADER_LEN + AES_256_GCM.tag_len() || stored[0] != SEAL_VERSION {
        return None;
    }
    stored[1..1 + KEY_ID_LEN].try_into().ok()
}

/// Seals and opens values with one data key, counting its seals.
#[derive(Debug)]
pub struct Sealer {
    key: Arc<DataKey>,
    rng: SystemRandom,
    seals: AtomicU64,
}

impl Sealer {
    /// A sealer for `key` that has made `seals` seals before (as the store counted).
    pub fn new(key: Arc<DataKey>, seals: u64) -> Sealer {
        Sealer {
            key,
            rng: SystemRandom::new(),
            seals: AtomicU64::new(seals),
        }
    }

    pub fn key(&self) -> &DataKey {
        &self.key
    }

    /// Seals made under this key so far (the count the store keeps).
    pub fn seals(&self) -> u64 {
        self.seals.load(Ordering::SeqCst)
    }

    /// Seals `plain` for record `record_key` of tree `tree`.
    pub fn seal(&self, tree: &str, record_key: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let count = self.seals.fetch_add(1, Ordering::SeqCst);
        if count >= MAX_SEALS {
            self.seals.fetch_sub(1, Ordering::SeqCst);
            return Err(SealError::Exhausted {
                key: self.key.id_hex(),
                count,
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + AES_256_GCM.tag_len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&self.key.id);
        out.extend_from_slice(&nonce);
        let aad = associated_data(&out, tree, record_key);
        let mut body = plain.to_vec();
        self.key
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| SealError::Random)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a value sealed for record `record_key` of tree `tree`.
    pub fn open(&self, tree: &str, record_key: &[u8], stored: &[u8]) -> Result<Vec<u8>, SealError> {
        let Some(id) = key_id_of(stored) else {
            return Err(SealError::NotSealed { tree: tree.into() });
        };
        if id != self.key.id {
            return Err(SealError::OtherKey {
                tree: tree.into(),
                found: hex::encode(id),
                expected: self.key.id_hex(),
            });
        }
        let (header, body) = stored.split_at(HEADER_LEN);
        let nonce: [u8; NONCE_LEN] = header[1 + KEY_ID_LEN..]
            .try_into()
            .map_err(|_| SealError::Tampered { tree: tree.into() })?;
        let aad = associated_data(header, tree, record_key);
        let mut body = body.to_vec();
        let plain = self
            .key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| SealError::Tampered { tree: tree.into() })?;
        let len = plain.len();
        body.truncate(len);
        Ok(body)
    }
}

/// The header, then the tree's name and the record's key, each length-prefixed so that
/// no two places share associated data.
fn associated_data(header: &[u8], tree: &str, record_key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + tree.len() + record_key.len() + 16);
    aad.extend_from_slice(header);
    aad.extend_from_slice(&(tree.len() as u32).to_be_bytes());
    aad.extend_from_slice(tree.as_bytes());
    aad.extend_from_slice(&(record_key.len() as u32).to_be_bytes());
    aad.extend_from_slice(record_key);
    aad
}

/// The AEAD in use, for the README and the bench's report.
pub const ALGORITHM: &str = "AES-256-GCM";

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(Arc::new(DataKey::from_bytes(&[7u8; 32]).unwrap()), 0)
    }

    #[test]
    fn a_value_opens_only_in_its_own_place() {
        let s = sealer();
        let sealed = s.seal("received", b"org\0m-1", b"{\"bsn\":\"1\"}").unwrap();
        assert_eq!(
            s.open("received", b"org\0m-1", &sealed).unwrap(),
            b"{\"bsn\":\"1\"}"
        );
        assert!(matches!(
            s.open("received", b"org\0m-2", &sealed),
            Err(SealError::Tampered { .. })
        ));
        assert!(matches!(
            s.open("sent", b"org\0m-1", &sealed),
            Err(SealError::Tampered { .. })
        ));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(s.open("received", b"org\0m-1", &flipped).is_err());
    }

    #[test]
    fn a_value_names_its_key_and_another_key_is_refused_by_name() {
        let s = sealer();
        let sealed = s.seal("sent", b"k", b"x").unwrap();
        assert_eq!(key_id_of(&sealed), Some(s.key().id()));
        let other = Sealer::new(Arc::new(DataKey::from_bytes(&[8u8; 32]).unwrap()), 0);
        assert!(matches!(
            other.open("sent", b"k", &sealed),
            Err(SealError::OtherKey { .. })
        ));
        assert!(matches!(
            s.open("sent", b"k", b"{\"plain\":true}"),
            Err(SealError::NotSealed { .. })
        ));
    }

    #[test]
    fn nonces_differ_and_seals_are_counted_up_to_the_bound() {
        let s = sealer();
        let a = s.seal("t", b"k", b"same").unwrap();
        let b = s.seal("t", b"k", b"same").unwrap();
        assert_ne!(a, b);
        assert_eq!(s.seals(), 2);
        let full = Sealer::new(
            Arc::new(DataKey::from_bytes(&[7u8; 32]).unwrap()),
            MAX_SEALS,
        );
        assert!(matches!(
            full.seal("t", b"k", b"x"),
            Err(SealError::Exhausted { .. })
        ));
        assert_eq!(full.seals(), MAX_SEALS);
    }
}
