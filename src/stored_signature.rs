//! Batch signatures stored once. Every message of a relay batch carries the batch's
//! signature, and every receipt of a batch the receiver's one signature over it: the
//! same text (~0.2 KB with ECDSA P-256, ~1.1 KB with RSA-4096) in each of up to 256
//! records. The store writes that text once, in [`T::Signatures`] under its SHA-256,
//! and a record holds a reference in its place: `stored:sha256:HEX`.
//!
//! Only the storage encoding changes. A record read back holds the signature itself
//! ([`resolve`]), so what is verified, shown, proven and sent is exactly what was
//! signed; a record stored before (format 4) holds the text and reads as it is. A
//! signature over one message's own bytes (from a sender before batch signatures) is
//! not shared and stays inline.

use ring::digest;

use crate::store::{Reader, StoreError, Tx, T};

/// What a reference starts with. No signature does: they start with their algorithm.
const PREFIX: &str = "stored:sha256:";

/// Stores `signature` once (inside a job) and puts its reference in its place; returns
/// the text it replaced, to be put back once the record is encoded.
pub fn refer(tx: &mut Tx<'_>, signature: &mut String) -> Result<String, StoreError> {
    // A record read as stored (not resolved) and saved again keeps its reference.
    if signature.starts_with(PREFIX) {
        return Ok(signature.clone());
    }
    let digest = digest::digest(&digest::SHA256, signature.as_bytes());
    let key = digest.as_ref();
    if tx.get(T::Signatures, key)?.is_none() {
        tx.insert(T::Signatures, key, signature.as_bytes());
    }
    let reference = format!("{PREFIX}{}", hex::encode(key));
    Ok(std::mem::replace(signature, reference))
}

/// Replaces a reference in `signature` with the signature it names; leaves a signature
/// as it is. A reference to no stored signature is a corrupt record.
pub fn resolve(store: &dyn Reader, signature: &mut String) -> Result<(), StoreError> {
    let Some(hex_key) = signature.strip_prefix(PREFIX) else {
        return Ok(());
    };
    let key = hex::decode(hex_key)
        .map_err(|_| StoreError::Corrupt(format!("a signature reference is not hex: {hex_key}")))?;
    let text = store
        .value(T::Signatures, &key)?
        .ok_or_else(|| StoreError::Corrupt(format!("no stored signature has SHA-256 {hex_key}")))?;
    let text = String::from_utf8(text)
        .map_err(|_| StoreError::Corrupt(format!("the stored signature {hex_key} is not text")))?;
    if digest::digest(&digest::SHA256, text.as_bytes()).as_ref() != key.as_slice() {
        return Err(StoreError::Corrupt(format!(
            "the stored signature {hex_key} does not have that SHA-256"
        )));
    }
    *signature = text;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::seal::DataKey;
    use crate::store::{Store, Upgrade, FORMAT_KEY, FORMAT_VERSION};

    fn open(dir: &std::path::Path, key: &Arc<DataKey>) -> Store {
        let (signer, _) = crate::dev::pki::test_credentials();
        Store::open(dir, Arc::new(signer), key.clone()).unwrap()
    }

    /// Commits a job that refers to `signature` and returns the reference it stored.
    async fn referred(store: &Store, signature: &str) -> String {
        let mut field = signature.to_string();
        store
            .commit(move |tx| {
                let text = refer(tx, &mut field)?;
                Ok::<_, StoreError>((text, field))
            })
            .await
            .map(|(text, field)| {
                assert_eq!(text, signature, "refer returns the text it replaced");
                field
            })
            .unwrap()
    }

    #[tokio::test]
    async fn a_signature_is_stored_once_and_its_reference_reads_back_as_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(DataKey::random().unwrap());
        let store = open(dir.path(), &key);
        let text = "ECDSA_P256_SHA256:ab12:3045022100ff";
        let first = referred(&store, text).await;
        let second = referred(&store, text).await;
        assert!(first.starts_with(PREFIX));
        assert_eq!(first, second);
        // A reference referred to again stays the same reference.
        assert_eq!(referred(&store, &first).await, first);
        assert_eq!(store.tree(T::Signatures).len(), 1);
        for reference in [first, second] {
            let mut field = reference;
            resolve(&store, &mut field).unwrap();
            assert_eq!(field, text);
        }
        // A signature stored inline (format 4) is left as it is.
        let mut inline = text.to_string();
        resolve(&store, &mut inline).unwrap();
        assert_eq!(inline, text);
        store.close();
    }

    #[tokio::test]
    async fn a_reference_to_no_signature_or_to_altered_text_is_a_corrupt_record() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(DataKey::random().unwrap());
        let store = open(dir.path(), &key);
        let mut unknown = format!("{PREFIX}{}", "00".repeat(32));
        let err = resolve(&store, &mut unknown).unwrap_err().to_string();
        assert!(err.contains("no stored signature"), "{err}");
        let mut not_hex = format!("{PREFIX}zz");
        let err = resolve(&store, &mut not_hex).unwrap_err().to_string();
        assert!(err.contains("not hex"), "{err}");

        let reference = referred(&store, "ECDSA_P256_SHA256:ab12:30").await;
        store.close();
        drop(store);
        let raw = Upgrade::open(dir.path()).unwrap();
        let (k, _) = raw.tree(T::Signatures).first().unwrap().unwrap();
        raw.tree(T::Signatures)
            .insert(k, b"ECDSA_P256_SHA256:ab12:31".as_slice())
            .unwrap();
        raw.sync().unwrap();
        drop(raw);
        let store = open(dir.path(), &key);
        let mut field = reference;
        let err = resolve(&store, &mut field).unwrap_err().to_string();
        assert!(err.contains("does not have that SHA-256"), "{err}");
        store.close();
    }

    #[tokio::test]
    async fn a_store_of_format_4_opens_as_this_format() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(DataKey::random().unwrap());
        open(dir.path(), &key).close();
        let raw = Upgrade::open(dir.path()).unwrap();
        raw.tree(T::Meta)
            .insert(FORMAT_KEY, &4u32.to_be_bytes())
            .unwrap();
        raw.sync().unwrap();
        drop(raw);
        let store = open(dir.path(), &key);
        let format = store.tree(T::Meta).get(FORMAT_KEY).unwrap().unwrap();
        assert_eq!(format.as_ref(), FORMAT_VERSION.to_be_bytes());
        store.close();
    }
}
