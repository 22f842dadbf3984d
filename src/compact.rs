//! `wijkpoort store compact` and `wijkpoort store rotate-key`, on a stopped gateway's
//! store: the two ways everything sealed is sealed again.
//!
//! sled is log-structured: a value that is removed (a purge) or overwritten (a re-seal)
//! stays in the log segment that held it until sled happens to rewrite that segment.
//! So neither a purge nor a rotation makes a store *physically* clean by itself:
//!
//! - **compact** copies every live entry into a fresh directory (sealing, with the
//!   store's key or a new one, what a sealed tree holds) and nothing else: the new
//!   directory holds no remains of removed values. It is also how a store written before
//!   encryption at rest (format 2 or 3, plaintext) becomes a sealed one (format 5). The old
//!   directory is then destroyed by the operator.
//! - **rotate-key** re-seals every sealed value in place under a new key. The old
//!   ciphertexts that sled keeps in old segments are under the old key; once it is
//!   destroyed they are noise. An interrupted rotation is resumed by running it again
//!   with the same two keys: values already under the new key are left as they are, and
//!   the store names the new key only when every value is under it.
//!
//! The audit chain, signatures and receipts are untouched: they prove the plaintext
//! bytes, which neither command changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::seal::{key_id_of, DataKey, SealError, Sealer};
use crate::store::{
    seals_key, seals_made, StoreError, Upgrade, DATA_KEY_ID, FORMAT_KEY, FORMAT_VERSION,
    SEALED_FROM, T,
};

/// Entries written per sled batch.
const BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompactError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("{0} holds no wijkpoort store")]
    Empty(PathBuf),
    #[error("the store at {0} is in format 1: run `wijkpoort store migrate --config FILE` first")]
    NeedsMigration(PathBuf),
    #[error("the store at {path} is in format {found}, newer than this build's {FORMAT_VERSION}")]
    Newer { path: PathBuf, found: u32 },
    #[error(
        "the store at {path} is sealed with data key {store_key}, not with the key given ({given})"
    )]
    WrongKey {
        path: PathBuf,
        store_key: String,
        given: String,
    },
    #[error("--from and --to are the same directory; compact writes a fresh one")]
    SameDirectory,
    #[error("the store at {0} is already sealed with the new key")]
    AlreadyRotated(PathBuf),
    #[error("the old and the new key are the same key")]
    SameKey,
}

/// What a compaction or rotation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    pub from_version: u32,
    /// Entries copied (compact) or visited (rotate), over all trees.
    pub entries: usize,
    /// Values sealed under the new key.
    pub sealed: usize,
    /// The id of the key the store is now sealed with.
    pub key_id: String,
}

/// Copies the store in `from` into the fresh directory `to`, sealed with `new_key`
/// (`key`, the store's own, when none). `key` opens a sealed store; a format-2 or -3
/// store is plaintext and needs it only to seal.
pub fn compact(
    from: &Path,
    to: &Path,
    key: Arc<DataKey>,
    new_key: Option<Arc<DataKey>>,
) -> Result<Resealed, CompactError> {
    if let (Ok(a), Ok(b)) = (from.canonicalize(), to.canonicalize()) {
        if a == b {
            return Err(CompactError::SameDirectory);
        }
    }
    let old = Upgrade::open(from)?;
    let version = match old.format()? {
        None => return Err(CompactError::Empty(from.to_path_buf())),
        Some(1) => return Err(CompactError::NeedsMigration(from.to_path_buf())),
        Some(v) if v > FORMAT_VERSION => {
            return Err(CompactError::Newer {
                path: from.to_path_buf(),
                found: v,
            })
        }
        Some(v) => v,
    };
    let opener = if version >= SEALED_FROM {
        check_key(from, &old, &key)?;
        Some(Sealer::new(key.clone(), 0))
    } else {
        None
    };
    let target = new_key.unwrap_or(key);
    let meta = old.tree(T::Meta);
    let earlier = seals_made(meta, &target.id())?;
    let sealer = Sealer::new(target.clone(), earlier);
    let new = Upgrade::create(to)?;
    let mut report = Resealed {
        from_version: version,
        key_id: target.id_hex(),
        ..Resealed::default()
    };
    for t in T::ALL {
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for entry in old.tree(t).iter() {
            let (k, v) = entry.map_err(StoreError::from)?;
            if t == T::Meta && (k.as_ref() == FORMAT_KEY || k.as_ref() == DATA_KEY_ID) {
                continue;
            }
            if t == T::Meta && k.starts_with(b"seals/") {
                continue;
            }
            let value = if t.is_sealed() {
                let plain = match &opener {
                    Some(o) => o.open(t.name(), &k, &v)?,
                    None => v.to_vec(),
                };
                report.sealed += 1;
                sealer.seal(t.name(), &k, &plain)?
            } else {
                v.to_vec()
            };
            batch.insert(k.as_ref(), value);
            report.entries += 1;
            in_batch += 1;
            if in_batch == BATCH {
                new.tree(t)
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(StoreError::from)?;
                in_batch = 0;
            }
        }
        new.tree(t).apply_batch(batch).map_err(StoreError::from)?;
    }
    // Queue keys and event numbers come from sled's id generator: the new store's must
    // go on after the old one's, or a new entry could take an old one's key.
    let next = old.generate_id()?;
    while new.generate_id()? < next {}
    // Written last: a compaction that did not finish leaves a store without a format
    // version, which no gateway opens.
    let meta = new.tree(T::Meta);
    meta.insert(seals_key(&target.id()), &sealer.seals().to_be_bytes())
        .map_err(StoreError::from)?;
    meta.insert(DATA_KEY_ID, &target.id())
        .map_err(StoreError::from)?;
    new.sync()?;
    new.finish(Vec::new(), FORMAT_VERSION)?;
    Ok(report)
}

/// Re-seals every sealed value of the store in `dir` from `old_key` to `new_key`, in
/// place.
pub fn rotate_key(
    dir: &Path,
    old_key: Arc<DataKey>,
    new_key: Arc<DataKey>,
) -> Result<Resealed, CompactError> {
    if old_key.id() == new_key.id() {
        return Err(CompactError::SameKey);
    }
    let store = Upgrade::open(dir)?;
    let version = match store.format()? {
        None => return Err(CompactError::Empty(dir.to_path_buf())),
        Some(1) => return Err(CompactError::NeedsMigration(dir.to_path_buf())),
        Some(v) if (SEALED_FROM..=FORMAT_VERSION).contains(&v) => v,
        Some(v) if v > FORMAT_VERSION => {
            return Err(CompactError::Newer {
                path: dir.to_path_buf(),
                found: v,
            })
        }
        // Formats 2 and 3 are plaintext: there is nothing to rotate, only to seal.
        Some(found) => {
            return Err(StoreError::OldFormat {
                path: dir.to_path_buf(),
                found,
            }
            .into())
        }
    };
    let named = store
        .tree(T::Meta)
        .get(DATA_KEY_ID)
        .map_err(StoreError::from)?;
    if named.as_deref() == Some(&new_key.id()[..]) {
        return Err(CompactError::AlreadyRotated(dir.to_path_buf()));
    }
    check_key(dir, &store, &old_key)?;
    let opener = Sealer::new(old_key, 0);
    let earlier = seals_made(store.tree(T::Meta), &new_key.id())?;
    let sealer = Sealer::new(new_key.clone(), earlier);
    let mut report = Resealed {
        from_version: version,
        key_id: new_key.id_hex(),
        ..Resealed::default()
    };
    for t in T::ALL.into_iter().filter(|t| t.is_sealed()) {
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for entry in store.tree(t).iter() {
            let (k, v) = entry.map_err(StoreError::from)?;
            report.entries += 1;
            // Resuming an interrupted rotation: this one is done already.
            if key_id_of(&v) == Some(new_key.id()) {
                continue;
            }
            let plain = opener.open(t.name(), &k, &v)?;
            batch.insert(k.as_ref(), sealer.seal(t.name(), &k, &plain)?);
            report.sealed += 1;
            in_batch += 1;
            if in_batch == BATCH {
                store
                    .tree(t)
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(StoreError::from)?;
                store
                    .tree(T::Meta)
                    .insert(seals_key(&new_key.id()), &sealer.seals().to_be_bytes())
                    .map_err(StoreError::from)?;
                in_batch = 0;
            }
        }
        store.tree(t).apply_batch(batch).map_err(StoreError::from)?;
    }
    let meta = store.tree(T::Meta);
    meta.insert(seals_key(&new_key.id()), &sealer.seals().to_be_bytes())
        .map_err(StoreError::from)?;
    // Every value is under the new key and durable before the store names it.
    store.sync()?;
    meta.insert(DATA_KEY_ID, &new_key.id())
        .map_err(StoreError::from)?;
    store.sync()?;
    Ok(report)
}

fn check_key(dir: &Path, store: &Upgrade, key: &DataKey) -> Result<(), CompactError> {
    let named = store
        .tree(T::Meta)
        .get(DATA_KEY_ID)
        .map_err(StoreError::from)?;
    if named.as_deref() == Some(&key.id()[..]) {
        return Ok(());
    }
    Err(CompactError::WrongKey {
        path: dir.to_path_buf(),
        store_key: named.map_or("(none)".into(), hex::encode),
        given: key.id_hex(),
    })
}
