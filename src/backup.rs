//! Backup and restore of a gateway's store (`wijkpoort store backup`, `store restore`).
//!
//! sled has no snapshot, so a consistent copy of a running gateway's store is taken
//! **between two group commits**: the copy runs as a job on the store's committer
//! ([`Store::between_commits`]), which sees the database exactly as the last durable
//! commit left it, and every other commit waits until the copy has been read into
//! memory. Writing the copy out, syncing it and checking it happen after commits have
//! resumed. So a backup holds every message, consent and audit record that was accepted
//! before it began, nothing half-committed, and its audit chain ends where the live
//! chain stood at that moment. A stopped gateway's store is copied the same way
//! without a committer.
//!
//! The copy travels as a [`stream`](encode) (every tree of the sled database, keys in
//! order, and sled's id counter, sealed with a SHA-256) from the gateway's local API to
//! the command, which writes it as a fresh sled store with a manifest
//! ([`MANIFEST`]). A backup is therefore a store like any other:
//! `wijkpoort audit --store BACKUP verify` checks it. A restore checks the manifest's
//! format, the backup's store format, its audit chain (against the gateway's
//! certificate) and that its content is unchanged since it was written, before it
//! writes anything; it never writes into a directory that holds something unless told
//! to move that aside.
//!
//! The data key and the secrets are not in the store and so not in a backup: they are
//! backed up on their own (see the README's "Backup and restore").

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::audit::verify::{self, VerifyError};
use crate::store::{self, Store, StoreError, FORMAT_KEY, FORMAT_VERSION, T};

/// The version of the backup's own layout (stream and manifest).
pub const BACKUP_FORMAT: u32 = 1;
/// The file in a backup directory that says what it is.
pub const MANIFEST: &str = "wijkpoort-backup.json";
/// The first bytes of a backup stream.
const MAGIC: &[u8] = b"wijkpoort-backup/1\n";
/// Frame tags: a tree begins, an entry of it, the end of the trees.
const TREE: u8 = b'T';
const ENTRY: u8 = b'E';
const END: u8 = b'Z';
/// Entry count (u64) and SHA-256 after the frames.
const TRAILER: usize = 8 + 32;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} exists and is not empty: a backup goes into a new or empty directory", .0.display())]
    OutNotEmpty(PathBuf),
    #[error("{} already holds files: restore into a new or empty directory, or pass --replace to move what is there aside first", .0.display())]
    TargetNotEmpty(PathBuf),
    #[error("{} is not a wijkpoort backup: it has no {MANIFEST}", .0.display())]
    NotABackup(PathBuf),
    #[error("{path}: the backup manifest cannot be read: {problem}", path = .path.display())]
    BadManifest { path: PathBuf, problem: String },
    #[error("{path} is in backup format {found}; this build reads backup format {BACKUP_FORMAT}: restore it with the wijkpoort version that made it", path = .path.display())]
    BackupFormat { path: PathBuf, found: u32 },
    #[error("{path} holds a store in format {found}; this build uses {FORMAT_VERSION}: restore it with the wijkpoort version that made it", path = .path.display())]
    NewerStore { path: PathBuf, found: u32 },
    #[error("the backup stream is damaged: {0}")]
    Damaged(String),
    #[error("{path}: the backup's content differs from what was written (its SHA-256 is not the manifest's): it was altered or damaged after the backup", path = .path.display())]
    Changed { path: PathBuf },
    #[error("{path}: the backup's audit chain cannot be checked: {source}", path = .path.display())]
    Unverifiable { path: PathBuf, source: VerifyError },
    #[error("{path}: the backup's audit chain is not intact at record {seq}: {detail}", path = .path.display())]
    ChainBroken {
        path: PathBuf,
        seq: u64,
        detail: String,
    },
    #[error("{path}: the backup's audit chain ends at record {found}, its manifest says {expected}: the backup is incomplete", path = .path.display())]
    Incomplete {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A copy of every tree, encoded, with how long commits waited for it.
#[derive(Debug)]
pub struct Stream {
    pub bytes: Vec<u8>,
    /// How long the committer was held (zero for a stopped gateway's store).
    pub commits_paused: Duration,
}

/// Copies a running gateway's store between two group commits; commits wait only while
/// the trees are read into memory.
pub async fn take_online(store: &Store) -> Result<Stream, BackupError> {
    let (bytes, paused) = store
        .between_commits(|db| {
            let started = Instant::now();
            let encoded = encode(db);
            (encoded, started.elapsed())
        })
        .await?;
    let mut bytes = bytes?;
    set_paused(&mut bytes, paused);
    Ok(Stream {
        bytes,
        commits_paused: paused,
    })
}

/// Copies a stopped gateway's store. A running gateway holds its store's lock: then the
/// error says so ([`StoreError::Locked`]) and the online way is the one to use.
pub fn take_offline(dir: &Path) -> Result<Stream, BackupError> {
    let db = store::open_existing_db(dir)?;
    Ok(Stream {
        bytes: encode(&db)?,
        commits_paused: Duration::ZERO,
    })
}

/// Encodes every tree of `db`, by name and in key order, and sled's id counter:
/// `MAGIC`, next id (u64), paused µs (u64), frames, entry count (u64), SHA-256 of the
/// frames. The frames are the same for the same content, so a restore can tell whether
/// a backup still holds what was written.
fn encode(db: &sled::Db) -> Result<Vec<u8>, BackupError> {
    // Sequence numbers (outbox, inbox, consent events) come from sled's id counter, which
    // lives outside the trees: a copy must not hand out numbers already used.
    let next_id = db.generate_id().map_err(StoreError::from)?;
    let mut out = Vec::with_capacity(db.size_on_disk().unwrap_or(0) as usize / 2);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&next_id.to_be_bytes());
    out.extend_from_slice(&0u64.to_be_bytes());
    let frames_start = out.len();
    let mut names = db.tree_names();
    names.sort();
    let mut entries = 0u64;
    for name in names {
        let tree = db.open_tree(&name).map_err(StoreError::from)?;
        out.push(TREE);
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(&name);
        for item in tree.iter() {
            let (k, v) = item.map_err(StoreError::from)?;
            out.push(ENTRY);
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(&k);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(&v);
            entries += 1;
        }
    }
    out.push(END);
    let digest = ring::digest::digest(&ring::digest::SHA256, &out[frames_start..]);
    out.extend_from_slice(&entries.to_be_bytes());
    out.extend_from_slice(digest.as_ref());
    Ok(out)
}

fn set_paused(bytes: &mut [u8], paused: Duration) {
    let at = MAGIC.len() + 8;
    if bytes.len() >= at + 8 {
        let micros = u64::try_from(paused.as_micros()).unwrap_or(u64::MAX);
        bytes[at..at + 8].copy_from_slice(&micros.to_be_bytes());
    }
}

/// A decoded stream: its header, its frames (checked against their SHA-256) and counts.
struct Decoded<'a> {
    next_id: u64,
    paused: Duration,
    frames: &'a [u8],
    entries: u64,
    sha256: String,
}

fn decode(bytes: &[u8]) -> Result<Decoded<'_>, BackupError> {
    let damaged = |what: &str| BackupError::Damaged(what.to_string());
    let header = MAGIC.len() + 16;
    if bytes.len() < header + 1 + TRAILER || !bytes.starts_with(MAGIC) {
        return Err(damaged(
            "it does not begin as a wijkpoort backup (format 1)",
        ));
    }
    let u64_at = |at: usize| {
        bytes[at..at + 8]
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| damaged("a number is cut short"))
    };
    let next_id = u64_at(MAGIC.len())?;
    let paused = Duration::from_micros(u64_at(MAGIC.len() + 8)?);
    let trailer = bytes.len() - TRAILER;
    let frames = &bytes[header..trailer];
    let entries = u64_at(trailer)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, frames);
    if digest.as_ref() != &bytes[trailer + 8..] {
        return Err(damaged(
            "its SHA-256 does not match its content (cut short or altered on the way)",
        ));
    }
    Ok(Decoded {
        next_id,
        paused,
        frames,
        entries,
        sha256: hex::encode(digest.as_ref()),
    })
}

/// Reads the frames of a checked stream into `db`, one batch per tree; returns the trees
/// and entries written.
fn write_frames(d: &Decoded<'_>, db: &sled::Db) -> Result<(usize, u64), BackupError> {
    let damaged = |what: &str| BackupError::Damaged(what.to_string());
    let f = d.frames;
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], BackupError> {
        let end = at.checked_add(n).filter(|&e| e <= f.len());
        let end = end.ok_or_else(|| damaged("a frame is cut short"))?;
        let slice = &f[*at..end];
        *at = end;
        Ok(slice)
    };
    let len =
        |bytes: &[u8]| -> usize { bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b)) };
    let mut tree: Option<(sled::Tree, sled::Batch)> = None;
    let (mut trees, mut entries) = (0usize, 0u64);
    loop {
        let tag = take(&mut at, 1)?[0];
        if tag == TREE || tag == END {
            if let Some((t, batch)) = tree.take() {
                t.apply_batch(batch).map_err(StoreError::from)?;
            }
        }
        match tag {
            TREE => {
                let n = len(take(&mut at, 2)?);
                let name = take(&mut at, n)?;
                tree = Some((
                    db.open_tree(name).map_err(StoreError::from)?,
                    sled::Batch::default(),
                ));
                trees += 1;
            }
            ENTRY => {
                let n = len(take(&mut at, 4)?);
                let k = take(&mut at, n)?.to_vec();
                let n = len(take(&mut at, 4)?);
                let v = take(&mut at, n)?.to_vec();
                let (_, batch) = tree
                    .as_mut()
                    .ok_or_else(|| damaged("an entry comes before any tree"))?;
                batch.insert(k, v);
                entries += 1;
            }
            END if at == f.len() => break,
            END => return Err(damaged("there is more after its end")),
            _ => return Err(damaged("an unknown frame")),
        }
    }
    if entries != d.entries {
        return Err(damaged("it holds another number of entries than it says"));
    }
    // The copy hands out sequence numbers after the last one the original used.
    while db.generate_id().map_err(StoreError::from)? < d.next_id {}
    Ok((trees, entries))
}

/// Writes a checked stream as a fresh store in `dir` (which must be new or empty) and
/// makes it durable: sled's flush, then fdatasync of its log, fsync of its blob files
/// and of the directory, as at the store's commit point.
fn write_store(d: &Decoded<'_>, dir: &Path) -> Result<(usize, u64), BackupError> {
    let db = store::open_db(dir)?;
    let written = write_frames(d, &db)?;
    db.flush().map_err(StoreError::from)?;
    let log = dir.join("db");
    File::open(&log)
        .and_then(|f| f.sync_data())
        .map_err(io(&log))?;
    let blobs = dir.join("blobs");
    if let Ok(entries) = std::fs::read_dir(&blobs) {
        for entry in entries.flatten() {
            let path = entry.path();
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(&path))?;
        }
        File::open(&blobs)
            .and_then(|f| f.sync_all())
            .map_err(io(&blobs))?;
    }
    drop(db);
    sync_dir(dir)?;
    Ok(written)
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))
}

/// Whether `dir` is missing or an empty directory.
fn is_new_or_empty(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io(dir)(e)),
    }
}

/// How a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Taken {
    /// From a running gateway, between two of its group commits.
    Online,
    /// From a stopped gateway's store.
    Offline,
}

/// What a backup directory says about itself ([`MANIFEST`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub backup_format: u32,
    /// The store format of the copy (`None`: an empty store).
    pub store_format: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub taken: Taken,
    /// How long the gateway's commits waited for the copy (online only), milliseconds.
    pub commits_paused_ms: Option<f64>,
    pub trees: usize,
    pub entries: u64,
    /// The last audit record's sequence number: the chain's length at the backup.
    pub audit_records: u64,
    /// SHA-256 of the copy's content as encoded (see [`encode`]): a restore re-encodes
    /// the backup and compares.
    pub content_sha256: String,
}

/// Writes `stream` as a backup in `out` (new or empty): a store, then the manifest.
pub fn write_backup(stream: &Stream, out: &Path, taken: Taken) -> Result<Manifest, BackupError> {
    if !is_new_or_empty(out)? {
        return Err(BackupError::OutNotEmpty(out.to_path_buf()));
    }
    let decoded = decode(&stream.bytes)?;
    let (trees, entries) = write_store(&decoded, out)?;
    let (store_format, audit_records) = {
        let copy = retry_locked(|| Ok(Store::open_read_only(out)?))?;
        (format_version(&copy)?, last_audit_seq(&copy)?)
    };
    let manifest = Manifest {
        backup_format: BACKUP_FORMAT,
        store_format,
        created_at: Utc::now(),
        taken,
        commits_paused_ms: (taken == Taken::Online)
            .then_some(decoded.paused.as_secs_f64() * 1000.0),
        trees,
        entries,
        audit_records,
        content_sha256: decoded.sha256.clone(),
    };
    let path = out.join(MANIFEST);
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Damaged(format!("the manifest cannot be written: {e}")))?;
    let mut file = File::create(&path).map_err(io(&path))?;
    std::io::Write::write_all(&mut file, &text)
        .and_then(|()| file.sync_all())
        .map_err(io(&path))?;
    sync_dir(out)?;
    Ok(manifest)
}

/// Reads and checks a backup's manifest.
pub fn read_manifest(backup: &Path) -> Result<Manifest, BackupError> {
    let path = backup.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::NotABackup(backup.to_path_buf()))
        }
        Err(e) => return Err(io(&path)(e)),
    };
    #[derive(Deserialize)]
    struct Version {
        backup_format: u32,
    }
    let bad = |e: serde_json::Error| BackupError::BadManifest {
        path: path.clone(),
        problem: e.to_string(),
    };
    let version: Version = serde_json::from_slice(&text).map_err(bad)?;
    if version.backup_format != BACKUP_FORMAT {
        return Err(BackupError::BackupFormat {
            path: backup.to_path_buf(),
            found: version.backup_format,
        });
    }
    serde_json::from_slice(&text).map_err(bad)
}

fn format_version(s: &store::ReadOnlyStore) -> Result<Option<u32>, BackupError> {
    match s.tree(T::Meta).get(FORMAT_KEY).map_err(StoreError::from)? {
        Some(v) => {
            let bytes: [u8; 4] = v
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("the format version is not a u32".into()))?;
            Ok(Some(u32::from_be_bytes(bytes)))
        }
        None => Ok(None),
    }
}

fn last_audit_seq(s: &store::ReadOnlyStore) -> Result<u64, BackupError> {
    Ok(s.tree(T::Audit)
        .last()
        .map_err(StoreError::from)?
        .and_then(|(k, _)| k.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    pub manifest: Manifest,
    pub trees: usize,
    pub entries: u64,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// Where what the target held before was moved (`--replace`).
    pub moved_aside: Option<PathBuf>,
}

/// Restores the backup in `from` into the store directory `to`, after checking the
/// backup's manifest and store format, its audit chain against the gateway certificate
/// `cert_der` (and the trust anchors, for checkpoints of a renewed certificate) and that
/// its content is what was written. `to` must be new or empty; with `replace`, what it
/// holds is first moved aside (renamed, never deleted).
pub fn restore(
    from: &Path,
    to: &Path,
    replace: bool,
    cert_der: &[u8],
    anchors: &[CertificateDer<'static>],
) -> Result<Restored, BackupError> {
    let manifest = read_manifest(from)?;
    let report = {
        let copy = retry_locked(|| Ok(Store::open_read_only(from)?))?;
        if let Some(found) = format_version(&copy)?.filter(|&f| f > FORMAT_VERSION) {
            return Err(BackupError::NewerStore {
                path: from.to_path_buf(),
                found,
            });
        }
        verify::verify_with_anchors(&copy, cert_der, anchors, None).map_err(|source| {
            BackupError::Unverifiable {
                path: from.to_path_buf(),
                source,
            }
        })?
    };
    if let Some(t) = &report.tamper {
        return Err(BackupError::ChainBroken {
            path: from.to_path_buf(),
            seq: t.seq,
            detail: t.detail.clone(),
        });
    }
    if report.last_seq != manifest.audit_records {
        return Err(BackupError::Incomplete {
            path: from.to_path_buf(),
            found: report.last_seq,
            expected: manifest.audit_records,
        });
    }
    let stream = retry_locked(|| take_offline(from))?;
    let decoded = decode(&stream.bytes)?;
    if decoded.sha256 != manifest.content_sha256 {
        return Err(BackupError::Changed {
            path: from.to_path_buf(),
        });
    }
    let moved_aside = if is_new_or_empty(to)? {
        None
    } else if replace {
        let aside = aside_name(to);
        std::fs::rename(to, &aside).map_err(io(to))?;
        Some(aside)
    } else {
        return Err(BackupError::TargetNotEmpty(to.to_path_buf()));
    };
    let (trees, entries) = write_store(&decoded, to)?;
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(Restored {
        manifest,
        trees,
        entries,
        checkpoints: report.checkpoints,
        moved_aside,
    })
}

/// Opens a store again, for a second at most while it is still locked: sled lets go of
/// a database's lock a moment after the handle is dropped (here: the copy just written,
/// or the checks' read of the backup). A lock held by a running gateway outlasts this.
fn retry_locked<S>(open: impl Fn() -> Result<S, BackupError>) -> Result<S, BackupError> {
    let mut tries = 0;
    loop {
        match open() {
            Err(BackupError::Store(StoreError::Locked(_))) if tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// `DIR.before-restore-<UTC time>`, next to `dir`.
fn aside_name(dir: &Path) -> PathBuf {
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".before-restore-{stamp}"));
    dir.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with(dir: &Path, entries: &[(&str, &[u8], &[u8])]) -> sled::Db {
        let db = store::open_db(dir).unwrap();
        for (tree, k, v) in entries {
            db.open_tree(tree).unwrap().insert(*k, *v).unwrap();
        }
        db
    }

    #[test]
    fn a_stream_round_trips_every_tree_and_the_id_counter() {
        let tmp = tempfile::tempdir().unwrap();
        let db = db_with(
            &tmp.path().join("a"),
            &[
                ("audit", b"k1", b"v1"),
                ("audit", b"k2", b"v2"),
                ("meta", b"m", b""),
            ],
        );
        for _ in 0..10 {
            db.generate_id().unwrap();
        }
        let bytes = encode(&db).unwrap();
        let d = decode(&bytes).unwrap();
        let copy = tmp.path().join("b");
        let (_, entries) = write_store(&d, &copy).unwrap();
        assert_eq!(entries, 3);
        let copy = sled::open(&copy).unwrap();
        assert_eq!(
            copy.open_tree("audit")
                .unwrap()
                .get(b"k2")
                .unwrap()
                .as_deref(),
            Some(&b"v2"[..])
        );
        assert!(
            copy.generate_id().unwrap() > 10,
            "ids are not handed out twice"
        );
        // Re-encoding the copy gives the same content digest.
        assert_eq!(decode(&encode(&copy).unwrap()).unwrap().sha256, d.sha256);
    }

    #[test]
    fn a_damaged_stream_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let db = db_with(tmp.path(), &[("audit", b"k", b"value")]);
        let mut bytes = encode(&db).unwrap();
        let at = bytes.len() - TRAILER - 3;
        bytes[at] ^= 1;
        let e = decode(&bytes).err().unwrap();
        assert!(e.to_string().contains("SHA-256"), "{e}");
        let e = decode(&bytes[..bytes.len() / 2]).err().unwrap();
        assert!(matches!(e, BackupError::Damaged(_)), "{e}");
    }
}
