//! The store: one sled database per gateway, its trees, and **the commit point**.
//!
//! Every state change in wijkpoort (a message queued, delivered, received, acknowledged,
//! a consent recorded, a refusal audited) is a *job* handed to [`Store::commit`]. Jobs run
//! one at a time on a single committer thread, so the audit chain has one writer and a job
//! can read the state it is about to change without racing another job. The committer
//! takes every job that is waiting, applies each job's writes and audit records in one
//! sled transaction, and then makes the whole group durable at once:
//!
//! 1. `sled::Db::flush()` — sled writes its log buffers (on Linux with
//!    `sync_file_range`, which neither syncs file metadata nor the disk cache, see
//!    `../shared/STACK.md`);
//! 2. `fdatasync` of sled's log file, and `fsync` of any blob file sled wrote since the
//!    last commit (sled writes those without any sync at all).
//!
//! Only then does any caller hear that its job succeeded. This is group commit: one
//! flush and one fdatasync acknowledge every job that was waiting. `flush_async` is never
//! used: in sled 0.34 it can hang when several callers use it at once.
//!
//! The store owns its trees, their keys and the commit point. What an audit record is
//! and how records are chained is [`crate::chain`]'s (the committer calls it); what the
//! records mean to an auditor is [`crate::audit`]'s, above the store. It knows nothing
//! of messages, consents or peers beyond the bytes it is handed.
//!
//! A group whose durability step fails poisons the store: the gateway can no longer
//! promise anything is on disk (and sled keeps a failed log write's error until the
//! database is reopened), so every later commit fails with [`StoreError::Poisoned`].
//! A panic of the committer thread poisons it the same way. [`Store::failure`] says why,
//! [`Store::failed`] completes when it happens: the gateway then stops and exits
//! non-zero, so that a supervisor restarts it on a reopened store.
//!
//! In debug builds only, `WIJKPOORT_FAULT_COMMIT_PANIC_AFTER=N` makes the committer
//! panic at the commit point of its N+1st group (the tests' fault hook for a committer
//! panic; an environment variable because the tests run the real binary as a child
//! process, where `#[cfg(test)]` code does not exist; release builds do not read it).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use tokio::sync::oneshot;

use crate::chain::{run_value, AuditChain, AuditEvent, ChainError, Sealed};
use crate::seal::{DataKey, SealError, Sealer};
use crate::signing::Signer;

/// The trees of the store. Each is one concept; keys are documented where they are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum T {
    /// Messages this gateway sends: message id → [`crate::outbox::SentMessage`].
    Sent,
    /// The exact signed envelope of each sent message: message id → bytes. Written once,
    /// apart from the record, so that status updates rewrite only a small record.
    SentEnvelopes,
    /// The durable queue: peer id, 0, enqueue number (BE) → message id.
    Outbox,
    /// Messages received from peers: message id → [`crate::inbox::ReceivedMessage`].
    Received,
    /// Received and not yet acknowledged: receive number (BE) → message id.
    Inbox,
    /// Audit records: sequence (BE) → record.
    Audit,
    /// Audit index: subject pseudonym, first sequence (BE) → the run of sequences of one
    /// commit group (format: [`crate::chain::run_value`]).
    AuditBySubject,
    /// Audit index: message id, 0, first sequence (BE) → run of sequences.
    AuditByMessage,
    /// Audit index: unix millis (BE), first sequence (BE) → run of sequences.
    AuditByTime,
    /// Signed audit checkpoints: sequence (BE) → checkpoint.
    Checkpoints,
    /// Consent events, append-only: consent id, 0, event number (BE) → event.
    ConsentEvents,
    /// Consent index: subject pseudonym, 0, consent id → ().
    ConsentBySubject,
    /// Peers that were sent messages under a consent: consent id, 0, peer name → ().
    ConsentRecipients,
    /// Small bookkeeping values.
    Meta,
    /// Every certificate that signed something stored (own, peers', receivers'):
    /// SHA-256 fingerprint (hex) → DER, so a signature can be checked after a renewal.
    Certificates,
    /// Batch signatures, each stored once: SHA-256 of the signature text → the text
    /// (`ALG:FINGERPRINT:HEX`). Every message of a relay batch carries the batch's
    /// signature, and every receipt of a batch the receiver's; their records hold a
    /// reference instead ([`crate::stored_signature`]). Signatures over hashes, no
    /// personal data: not sealed, kept when a record is purged.
    Signatures,
}

impl T {
    /// Every tree, in a fixed order.
    pub const ALL: [T; 16] = [
        T::Sent,
        T::SentEnvelopes,
        T::Outbox,
        T::Received,
        T::Inbox,
        T::Audit,
        T::AuditBySubject,
        T::AuditByMessage,
        T::AuditByTime,
        T::Checkpoints,
        T::ConsentEvents,
        T::ConsentBySubject,
        T::ConsentRecipients,
        T::Meta,
        T::Certificates,
        T::Signatures,
    ];

    /// Whether this tree's values are sealed with the data key ([`crate::seal`]): the
    /// trees that hold what a gateway knows about a child — sent envelopes and their
    /// records (receipts, errors), received messages (envelope and receipt), consent
    /// events (names, evidence). The audit trees hold pseudonyms, never a BSN, name or
    /// free text ([`crate::chain`]), and stay readable to an auditor without the data
    /// key; the queues and indexes hold ids and pseudonyms.
    pub fn is_sealed(self) -> bool {
        matches!(
            self,
            T::Sent | T::SentEnvelopes | T::Received | T::ConsentEvents
        )
    }

    /// The sled tree's name (also part of a sealed value's associated data).
    pub fn name(self) -> &'static str {
        match self {
            T::Sent => "sent",
            T::SentEnvelopes => "sent_envelopes",
            T::Outbox => "outbox",
            T::Received => "received",
            T::Inbox => "inbox",
            T::Audit => "audit",
            T::AuditBySubject => "audit_by_subject",
            T::AuditByMessage => "audit_by_message",
            T::AuditByTime => "audit_by_time",
            T::Checkpoints => "checkpoints",
            T::ConsentEvents => "consent_events",
            T::ConsentBySubject => "consent_by_subject",
            T::ConsentRecipients => "consent_recipients",
            T::Meta => "meta",
            T::Certificates => "certificates",
            T::Signatures => "signatures",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("the store at {0} is in use by another process (is the gateway running? use the online audit endpoint instead)")]
    Locked(PathBuf),
    #[error("cannot open the store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("store I/O failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("making the store durable failed: {0}")]
    Sync(#[from] std::io::Error),
    #[error(
        "the store refused further writes after an earlier durability failure; restart the gateway"
    )]
    Poisoned,
    #[error("the store's committer has stopped")]
    Closed,
    #[error("a stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("the audit chain: {0}")]
    Chain(#[from] ChainError),
    #[error("the store at {path} was written by an older wijkpoort (store format {found}; this build uses {FORMAT_VERSION}){}", old_format_advice(path, *found))]
    OldFormat { path: PathBuf, found: u32 },
    #[error("the store at {path} is sealed with data key {store_key}, but the data key file given is key {given}: name the store's key (after a `store rotate-key`, the new one)")]
    WrongDataKey {
        path: PathBuf,
        store_key: String,
        given: String,
    },
    #[error("sealing at rest: {0}")]
    Seal(#[from] SealError),
    #[error("the {0} tree is sealed: open the store with its data key (give --config)")]
    Sealed(&'static str),
    #[error("the store at {path} was written by a newer wijkpoort (store format {found}; this build reads {FORMAT_VERSION}); run that version")]
    NewerFormat { path: PathBuf, found: u32 },
}

/// The store's format version, kept under [`FORMAT_KEY`] in the meta tree.
///
/// - 1 (no key): received messages keyed by message id; consent recipients by peer name.
/// - 2: received messages keyed by sender, 0, message id (ids are the sender's own);
///   consent recipients by the peer's organisation identifier.
/// - 3: envelopes are signed once per relay batch ([`crate::envelope_batch`]): a sent or
///   received message's `signature` is the batch signature, beside its path (`batch`);
///   a sent message is unsigned until the relay sends it. Messages stored before keep
///   their signature over their own bytes and no path, and still verify. An older
///   build would check a batch signature as a per-message one and call it forged, so it
///   must not open this format.
/// - 4: the values of the trees that hold personal data ([`T::is_sealed`]) are sealed
///   with the data key named under [`DATA_KEY_ID`]. An older store holds plaintext: it is
///   sealed by `wijkpoort store compact` into a fresh directory (never in place, since
///   sled would keep the plaintext in its old log segments).
/// - 5: a sent or received record names its batch's signature and its receipt's by
///   reference, the signature itself stored once in [`T::Signatures`]. Records of
///   format 4 hold them inline and read as they are, so a gateway marks a store of
///   format 4 as 5 when it opens it; an older build would take a reference for a
///   signature and call it forged, so it must not open this format.
pub const FORMAT_VERSION: u32 = 5;
/// The first format whose personal data is sealed ([`T::is_sealed`]).
pub const SEALED_FROM: u32 = 4;
/// The meta key of the format version (u32, big-endian).
pub const FORMAT_KEY: &[u8] = b"format_version";
/// The meta key of the id of the data key the store is sealed with (8 bytes).
pub const DATA_KEY_ID: &[u8] = b"data_key_id";

/// The meta key of the count of seals made under the data key with `id` (u64, BE).
pub fn seals_key(id: &[u8]) -> Vec<u8> {
    [b"seals/".as_slice(), hex::encode(id).as_bytes()].concat()
}

/// What to run on a store of an older format.
fn old_format_advice(path: &Path, found: u32) -> String {
    let dir = path.display();
    match found {
        1 => format!(": stop the gateway, back the store up, run `wijkpoort store migrate --config FILE`, then `wijkpoort store compact --from {dir} --to NEWDIR --data-key FILE` and point store_dir at NEWDIR"),
        _ => format!(": it holds plaintext; stop the gateway and run `wijkpoort store compact --from {dir} --to NEWDIR --data-key FILE`, which seals it into NEWDIR, then point store_dir at NEWDIR and destroy the old directory"),
    }
}

/// Seals made under the key with `id`, as the store's meta tree counts them.
pub fn seals_made(meta: &sled::Tree, id: &[u8]) -> Result<u64, StoreError> {
    match meta.get(seals_key(id))? {
        None => Ok(0),
        Some(v) => v
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt("a seal count is not a u64".into())),
    }
}

/// The format version a store's trees say they are in: the recorded one, 1 for a store
/// written before versions were recorded, `None` for an empty store.
pub fn format_of(trees: &[sled::Tree]) -> Result<Option<u32>, StoreError> {
    if let Some(v) = trees[T::Meta.index()].get(FORMAT_KEY)? {
        let bytes: [u8; 4] = v
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::Corrupt("the format version is not a u32".into()))?;
        return Ok(Some(u32::from_be_bytes(bytes)));
    }
    let empty = T::ALL.iter().all(|t| trees[t.index()].is_empty());
    Ok((!empty).then_some(1))
}

/// One pending write: a tree, a key, and the new value (`None` removes the key).
pub type Write = (T, Vec<u8>, Option<Vec<u8>>);

/// A value sealed before its commit ([`Store::preseal`]), so that the committer thread
/// does not spend the AES-GCM pass on it: its place, its plaintext (what reads in the
/// same group see) and its sealed bytes (what is written).
#[derive(Debug)]
pub struct Presealed {
    tree: T,
    key: Vec<u8>,
    plain: Vec<u8>,
    sealed: Vec<u8>,
}

impl Presealed {
    /// Whether this is the value for record `key` of `tree` with plaintext `plain`.
    pub fn is_for(&self, tree: T, key: &[u8], plain: &[u8]) -> bool {
        self.tree == tree && self.key == key && self.plain == plain
    }
}
/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Writes and audit records a job wants committed, plus read access to current state.
///
/// Reads see everything committed before, including earlier jobs of the same group,
/// because the committer keeps the group's pending writes in an overlay.
pub struct Tx<'a> {
    trees: &'a [sled::Tree],
    sealer: &'a Sealer,
    generations: &'a Generations,
    /// The writes of the group's earlier jobs, and where in them the last write of each
    /// key is (so that a value is not copied to be readable).
    group: &'a [Write],
    overlay: &'a HashMap<(T, Vec<u8>), usize>,
    writes: Vec<Write>,
    /// Writes (by index into `writes`) sealed before the commit.
    presealed: Vec<(usize, Vec<u8>)>,
    audit: Vec<AuditEvent>,
    db: &'a sled::Db,
}

impl Tx<'_> {
    pub fn get(&self, tree: T, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some((_, _, v)) = self
            .writes
            .iter()
            .rev()
            .find(|(t, k, _)| *t == tree && k == key)
        {
            return Ok(v.clone());
        }
        if let Some(&i) = self.overlay.get(&(tree, key.to_vec())) {
            return Ok(self.group[i].2.clone());
        }
        match self.trees[tree.index()].get(key)? {
            None => Ok(None),
            Some(v) => opened(self.sealer, tree, key, &v).map(Some),
        }
    }

    /// Entries whose key starts with `prefix`, in key order, as this job would see them.
    /// The generation of `tree` as this job sees it, as [`Store::generation`]; `None` if
    /// this group has written the tree, so that the job sees values not yet committed.
    pub fn generation(&self, tree: T) -> Option<Generation> {
        let written = |w: &Write| w.0 == tree;
        if self.group.iter().any(written) || self.writes.iter().any(written) {
            return None;
        }
        Some(self.generations.of(tree))
    }

    pub fn scan_prefix(&self, tree: T, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let mut found = std::collections::BTreeMap::new();
        for entry in self.trees[tree.index()].scan_prefix(prefix) {
            let (k, v) = entry?;
            let v = opened(self.sealer, tree, &k, &v)?;
            found.insert(k.to_vec(), Some(v));
        }
        for ((t, k), &i) in self.overlay.iter() {
            if *t == tree && k.starts_with(prefix) {
                found.insert(k.clone(), self.group[i].2.clone());
            }
        }
        for (t, k, v) in &self.writes {
            if *t == tree && k.starts_with(prefix) {
                found.insert(k.clone(), v.clone());
            }
        }
        Ok(found
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    pub fn insert(&mut self, tree: T, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.push((tree, key.into(), Some(value.into())));
    }

    /// Writes a value sealed before the commit; reads in this group see its plaintext.
    pub fn insert_presealed(&mut self, value: Presealed) {
        self.presealed.push((self.writes.len(), value.sealed));
        self.writes.push((value.tree, value.key, Some(value.plain)));
    }

    pub fn remove(&mut self, tree: T, key: impl Into<Vec<u8>>) {
        self.writes.push((tree, key.into(), None));
    }

    /// Appends an audit record in the same commit as the state change.
    pub fn audit(&mut self, event: AuditEvent) {
        self.audit.push(event);
    }

    /// A fresh, strictly increasing number (sled's persistent id generator).
    pub fn next_number(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }
}

/// What a job returns from its closure: its result, and whether to keep its writes.
type JobFn = Box<dyn FnOnce(&mut Tx<'_>) -> Finisher + Send>;
/// What tells a job's caller how its commit ended.
type Finisher = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Counters for the benchmark: how often the commit point ran and what it synced, and
/// where a group commit's time went (nanoseconds, summed over all groups: an `fdatasync`
/// on a RAM disk takes well under a microsecond): running its
/// jobs and sealing what they wrote, sled's transaction, sled's `flush` (which writes
/// the log and waits for the device), and the `fdatasync` that makes it durable.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub groups: AtomicU64,
    pub jobs: AtomicU64,
    pub syncs: AtomicU64,
    pub jobs_ns: AtomicU64,
    pub transaction_ns: AtomicU64,
    pub flush_ns: AtomicU64,
    pub fdatasync_ns: AtomicU64,
    /// Told of every audit record a group commits and of how long each group took
    /// (the gateway's metrics); set once, after the store is open.
    pub observer: std::sync::OnceLock<Arc<dyn CommitObserver>>,
}

/// What the committer tells an observer (the metrics), on its own thread: keep it cheap.
pub trait CommitObserver: Send + Sync + std::fmt::Debug {
    /// An audit record going into the group being committed (before its commit point;
    /// a failing commit poisons the store, so at most that one group is over-counted).
    fn audited(&self, event: &AuditEvent);
    /// A group commit finished (applied, flushed and synced), `took` from its start.
    fn committed(&self, took: std::time::Duration);
    /// The commit point's fdatasync (and any blob fsyncs) of one commit took `took`.
    fn synced(&self, took: std::time::Duration) {
        let _ = took;
    }
}

/// The gateway's sled database and its committer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    trees: Vec<sled::Tree>,
    sealer: Arc<Sealer>,
    generations: Arc<Generations>,
    jobs: std::sync::Mutex<Option<mpsc::Sender<JobFn>>>,
    committer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    poisoned: Arc<AtomicBool>,
    failure: Arc<tokio::sync::watch::Sender<Option<String>>>,
    stats: Arc<CommitStats>,
}

/// Reads one value, opened if its tree is sealed: what a record's decoder needs to
/// follow a reference to another tree ([`crate::stored_signature`]), inside a job, on a
/// running store or on a stopped one alike.
pub trait Reader {
    fn value(&self, tree: T, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
}

impl Reader for Store {
    fn value(&self, tree: T, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get(tree, key)?.map(|v| v.to_vec()))
    }
}

impl Reader for Tx<'_> {
    fn value(&self, tree: T, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(tree, key)
    }
}

impl Reader for ReadOnlyStore {
    fn value(&self, tree: T, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.tree(tree)
            .get(key)?
            .map(|v| self.open_value(tree, key, &v))
            .transpose()
    }
}

/// Which version of a tree a reader saw: the store it read (every opened store has a
/// number of its own in the process) and how many commits had written the tree since
/// that store was opened. Two equal generations mean the tree did not change in between,
/// so a value derived from it can be used again without reading the tree (the consent
/// registry's folded states, [`crate::consent::registry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    store: u64,
    writes: u64,
}

/// The committer's count of commits per tree. It counts a commit after sled has applied
/// it, so a reader that sees the new count reads the new values.
struct Generations {
    store: u64,
    trees: [AtomicU64; T::ALL.len()],
}

impl Generations {
    fn new() -> Generations {
        static OPENED: AtomicU64 = AtomicU64::new(0);
        Generations {
            store: OPENED.fetch_add(1, Ordering::Relaxed),
            trees: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn of(&self, tree: T) -> Generation {
        Generation {
            store: self.store,
            writes: self.trees[tree.index()].load(Ordering::Acquire),
        }
    }

    fn written(&self, writes: &[Write]) {
        let mut seen = [false; T::ALL.len()];
        for (t, _, _) in writes {
            if !std::mem::replace(&mut seen[t.index()], true) {
                self.trees[t.index()].fetch_add(1, Ordering::Release);
            }
        }
    }
}

/// Whether the commit point syncs to disk. `Off` exists only so that the benchmark can
/// show what durability costs; no configuration file can select it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Synced,
    Off,
}

impl Store {
    /// Opens (or creates) the store in `dir`. `signer` signs audit checkpoints;
    /// `data_key` seals and opens what the store holds about children.
    pub fn open(
        dir: &Path,
        signer: Arc<Signer>,
        data_key: Arc<DataKey>,
    ) -> Result<Store, StoreError> {
        Store::open_with(dir, signer, data_key, Durability::Synced)
    }

    pub fn open_with(
        dir: &Path,
        signer: Arc<Signer>,
        data_key: Arc<DataKey>,
        durability: Durability,
    ) -> Result<Store, StoreError> {
        let db = open_db(dir)?;
        let trees = T::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()?;
        match format_of(&trees)? {
            None => {
                trees[T::Meta.index()].insert(DATA_KEY_ID, &data_key.id())?;
                trees[T::Meta.index()].insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
            }
            Some(FORMAT_VERSION) => check_data_key(dir, &trees, &data_key)?,
            Some(found) if (SEALED_FROM..FORMAT_VERSION).contains(&found) => {
                check_data_key(dir, &trees, &data_key)?;
                // Format 4 records read as they are (see FORMAT_VERSION): only the mark
                // changes, made durable with the first commit.
                trees[T::Meta.index()].insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
            }
            Some(found) if found < SEALED_FROM => {
                return Err(StoreError::OldFormat {
                    path: dir.to_path_buf(),
                    found,
                })
            }
            Some(found) => {
                return Err(StoreError::NewerFormat {
                    path: dir.to_path_buf(),
                    found,
                })
            }
        }
        let chain = resume_chain(&trees)?;
        let seals = seals_made(&trees[T::Meta.index()], &data_key.id())?;
        let sealer = Arc::new(Sealer::new(data_key, seals));
        let log_file = File::open(dir.join("db"))?;
        let blobs = open_blobs_dir(&dir.join("blobs"))?;
        // The directory entry of a freshly created store must be durable too.
        File::open(dir)?.sync_all()?;
        let poisoned = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(tokio::sync::watch::Sender::new(None));
        let stats = Arc::new(CommitStats::default());
        let generations = Arc::new(Generations::new());
        let (tx, rx) = mpsc::channel::<JobFn>();
        let (to_sign, sign_requests) = mpsc::channel::<(u64, String)>();
        let (signed_tx, signed) = mpsc::channel::<(u64, Vec<u8>)>();
        let checkpoint_signer = signer.clone();
        // The checkpointer: signs due checkpoints off the committer thread. It ends when
        // the committer (the only sender) does.
        std::thread::Builder::new()
            .name("wijkpoort-checkpointer".into())
            .spawn(move || {
                for (seq, hash) in sign_requests {
                    match crate::chain::sign_checkpoint(&checkpoint_signer, seq, &hash) {
                        Ok(bytes) => {
                            if signed_tx.send((seq, bytes)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, seq, "could not sign an audit checkpoint")
                        }
                    }
                }
            })?;
        let committer = Committer {
            db: db.clone(),
            trees: trees.clone(),
            sealer: sealer.clone(),
            generations: generations.clone(),
            chain,
            signer,
            to_sign,
            signed,
            durability,
            log_file,
            blobs_dir: dir.join("blobs"),
            blobs,
            synced_blobs: HashSet::new(),
            poisoned: poisoned.clone(),
            failure: failure.clone(),
            stats: stats.clone(),
            #[cfg(debug_assertions)]
            panic_after: std::env::var("WIJKPOORT_FAULT_COMMIT_PANIC_AFTER")
                .ok()
                .and_then(|v| v.parse().ok()),
        };
        let handle = std::thread::Builder::new()
            .name("wijkpoort-committer".into())
            .spawn(move || committer.run(rx))?;
        Ok(Store {
            inner: Arc::new(Inner {
                trees,
                sealer,
                generations,
                jobs: std::sync::Mutex::new(Some(tx)),
                committer: std::sync::Mutex::new(Some(handle)),
                poisoned,
                failure,
                stats,
            }),
        })
    }

    /// Why the store refuses every write, if it does: a failed commit or a committer
    /// panic. It stays so until the gateway is restarted.
    pub fn failure(&self) -> Option<String> {
        self.inner.failure.borrow().clone()
    }

    /// Completes (with the reason) once the store has failed; see [`Store::failure`].
    pub async fn failed(&self) -> String {
        let mut rx = self.inner.failure.subscribe();
        let reason = rx.wait_for(|f| f.is_some()).await.map(|f| f.clone());
        match reason {
            Ok(f) => f.unwrap_or_default(),
            // The sender lives as long as the store: not reached while `self` exists.
            Err(_) => std::future::pending().await,
        }
    }

    /// Opens a stopped gateway's store for reading (the auditor's offline mode). Any format
    /// version: the audit trees read the same in every one. Without a data key the
    /// sealed trees (consent events) cannot be read: see
    /// [`Store::open_read_only_with_key`].
    pub fn open_read_only(dir: &Path) -> Result<ReadOnlyStore, StoreError> {
        let (db, trees) = open_existing(dir)?;
        Ok(ReadOnlyStore {
            _db: db,
            trees,
            sealer: None,
        })
    }

    /// As [`Store::open_read_only`], able to open sealed values with `data_key`. A store
    /// of an older format holds plaintext, which reads as it is (the key is not needed).
    pub fn open_read_only_with_key(
        dir: &Path,
        data_key: Arc<DataKey>,
    ) -> Result<ReadOnlyStore, StoreError> {
        let (db, trees) = open_existing(dir)?;
        let sealer = match format_of(&trees)? {
            Some(found) if found < SEALED_FROM => None,
            format => {
                if matches!(format, Some(f) if f <= FORMAT_VERSION) {
                    check_data_key(dir, &trees, &data_key)?;
                }
                let seals = seals_made(&trees[T::Meta.index()], &data_key.id())?;
                Some(Sealer::new(data_key, seals))
            }
        };
        Ok(ReadOnlyStore {
            _db: db,
            trees,
            sealer,
        })
    }

    /// Runs `job` on the committer and returns its result once the commit that holds its
    /// writes is durable. If the job returns `Err`, its writes and audit records are
    /// discarded, but audit records it added with [`Tx::audit`] before failing are not:
    /// use [`Store::commit_audit`] for refusals instead.
    pub async fn commit<R, E, F>(&self, job: F) -> Result<R, E>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel::<Result<R, E>>();
        let wrapped: JobFn = Box::new(move |tx: &mut Tx<'_>| {
            let result = job(tx);
            if result.is_err() {
                tx.writes.clear();
                tx.presealed.clear();
                tx.audit.clear();
            }
            Box::new(move |durable: Result<(), StoreError>| {
                let outcome = match durable {
                    Ok(()) => result,
                    Err(e) => Err(E::from(e)),
                };
                // The caller may have gone away (client disconnected); the commit stands.
                let _ = done_tx.send(outcome);
            })
        });
        self.submit(wrapped).map_err(E::from)?;
        done_rx.await.map_err(|_| E::from(StoreError::Closed))?
    }

    /// Runs `f` on the committer thread between two group commits, so that it sees the
    /// database exactly as the last durable commit left it and nothing changes while it
    /// runs: every other commit waits until `f` returns (the online backup,
    /// [`crate::backup`]). Keep `f` short; its result arrives once its group is durable.
    pub async fn between_commits<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&sled::Db) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.commit(move |tx: &mut Tx<'_>| Ok::<R, StoreError>(f(tx.db)))
            .await
    }

    /// Commits audit records alone (a refusal: nothing else changes).
    pub async fn commit_audit(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        self.commit(move |tx| {
            for e in events {
                tx.audit(e);
            }
            Ok::<(), StoreError>(())
        })
        .await
    }

    fn submit(&self, job: JobFn) -> Result<(), StoreError> {
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        let guard = self.inner.jobs.lock().map_err(|_| StoreError::Closed)?;
        match guard.as_ref() {
            Some(sender) => sender.send(job).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    /// Reads one value (opened, if its tree is sealed).
    pub fn get(&self, tree: T, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        match self.inner.trees[tree.index()].get(key)? {
            None => Ok(None),
            Some(v) if !tree.is_sealed() => Ok(Some(v)),
            Some(v) => opened(&self.inner.sealer, tree, key, &v).map(|v| Some(v.into())),
        }
    }

    /// A value read from `tree` directly ([`Store::tree`]), opened if the tree is sealed.
    pub fn open_value(&self, tree: T, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        opened(&self.inner.sealer, tree, key, stored)
    }

    /// Entries whose key starts with `prefix`, in key order, values opened.
    pub fn scan_prefix(&self, tree: T, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.inner.trees[tree.index()]
            .scan_prefix(prefix)
            .map(|entry| {
                let (k, v) = entry?;
                let v = opened(&self.inner.sealer, tree, &k, &v)?;
                Ok((k.to_vec(), v))
            })
            .collect()
    }

    /// Seals `plain` for record `key` of `tree` now, on the caller's thread, for
    /// [`Tx::insert_presealed`]: the committer then only writes it.
    pub fn preseal(
        &self,
        tree: T,
        key: impl Into<Vec<u8>>,
        plain: Vec<u8>,
    ) -> Result<Presealed, StoreError> {
        let key = key.into();
        let sealed = if tree.is_sealed() {
            self.inner.sealer.seal(tree.name(), &key, &plain)?
        } else {
            plain.clone()
        };
        Ok(Presealed {
            tree,
            key,
            plain,
            sealed,
        })
    }

    /// Seals made under the data key so far.
    pub fn seals(&self) -> u64 {
        self.inner.sealer.seals()
    }

    pub fn tree(&self, tree: T) -> &sled::Tree {
        &self.inner.trees[tree.index()]
    }

    /// The generation of `tree` now: read it before reading the tree.
    pub fn generation(&self, tree: T) -> Generation {
        self.inner.generations.of(tree)
    }

    pub fn stats(&self) -> &CommitStats {
        &self.inner.stats
    }

    /// Stops the committer after the jobs already handed to it are durable.
    pub fn close(&self) {
        if let Ok(mut jobs) = self.inner.jobs.lock() {
            jobs.take();
        }
        let handle = self.inner.committer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// A store opened for reading only: no committer, no writes.
pub struct ReadOnlyStore {
    _db: sled::Db,
    trees: Vec<sled::Tree>,
    sealer: Option<Sealer>,
}

impl ReadOnlyStore {
    pub fn tree(&self, tree: T) -> &sled::Tree {
        &self.trees[tree.index()]
    }

    /// A value read from `tree`, opened if the tree is sealed; a sealed value needs
    /// the store opened with its data key.
    pub fn open_value(&self, tree: T, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        match &self.sealer {
            Some(s) => opened(s, tree, key, stored),
            None if tree.is_sealed() && crate::seal::key_id_of(stored).is_some() => {
                Err(StoreError::Sealed(tree.name()))
            }
            None => Ok(stored.to_vec()),
        }
    }
}

/// `stored` as its tree's reader sees it: opened with the data key if the tree is
/// sealed, else as it is.
fn opened(sealer: &Sealer, tree: T, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StoreError> {
    if tree.is_sealed() {
        Ok(sealer.open(tree.name(), key, stored)?)
    } else {
        Ok(stored.to_vec())
    }
}

/// Refuses a data key that is not the one the store is sealed with.
fn check_data_key(dir: &Path, trees: &[sled::Tree], key: &DataKey) -> Result<(), StoreError> {
    let stored = trees[T::Meta.index()].get(DATA_KEY_ID)?;
    if stored.as_deref() == Some(&key.id()[..]) {
        return Ok(());
    }
    Err(StoreError::WrongDataKey {
        path: dir.to_path_buf(),
        store_key: stored.map_or("(none)".into(), hex::encode),
        given: key.id_hex(),
    })
}

/// A stopped gateway's store opened for a format migration: the raw trees, written
/// directly (no committer, no audit chain), then made durable with [`Upgrade::finish`].
pub struct Upgrade {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    dir: PathBuf,
}

impl Upgrade {
    pub fn open(dir: &Path) -> Result<Upgrade, StoreError> {
        let (db, trees) = open_existing(dir)?;
        Ok(Upgrade {
            db,
            trees,
            dir: dir.to_path_buf(),
        })
    }

    /// Creates a fresh store in `dir`, which must not exist or be empty (the target of
    /// a compaction).
    pub fn create(dir: &Path) -> Result<Upgrade, StoreError> {
        let occupied = std::fs::read_dir(dir)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false);
        if occupied {
            return Err(StoreError::Open {
                path: dir.to_path_buf(),
                source: sled::Error::Unsupported(
                    "the directory is not empty; give a new one".into(),
                ),
            });
        }
        let db = open_db(dir)?;
        let trees = T::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Upgrade {
            db,
            trees,
            dir: dir.to_path_buf(),
        })
    }

    /// sled's id generator (the numbers behind queue keys and event numbers).
    pub fn generate_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Flushes and syncs what was written so far (log and directory).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        File::open(self.dir.join("db"))?.sync_data()?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    pub fn tree(&self, tree: T) -> &sled::Tree {
        &self.trees[tree.index()]
    }

    /// The store's format version (see [`format_of`]).
    pub fn format(&self) -> Result<Option<u32>, StoreError> {
        format_of(&self.trees)
    }

    /// Applies `writes` and the format version `version` in one transaction, then makes
    /// the store durable (flush, fdatasync of the log).
    pub fn finish(self, mut writes: Vec<Write>, version: u32) -> Result<(), StoreError> {
        writes.push((
            T::Meta,
            FORMAT_KEY.to_vec(),
            Some(version.to_be_bytes().to_vec()),
        ));
        apply_writes(&self.trees, &writes)?;
        self.db.flush()?;
        File::open(self.dir.join("db"))?.sync_data()?;
        Ok(())
    }
}

/// Resumes the audit chain from the last stored record and checkpoint.
fn resume_chain(trees: &[sled::Tree]) -> Result<AuditChain, StoreError> {
    let last_checkpoint = match trees[T::Checkpoints.index()].last()? {
        Some((k, _)) => u64::from_be_bytes(
            k.as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("checkpoint key".into()))?,
        ),
        None => 0,
    };
    let last = trees[T::Audit.index()].last()?;
    Ok(AuditChain::resume(
        last.as_ref().map(|(_, v)| v.as_ref()),
        last_checkpoint,
    )?)
}

/// The writes for what the chain sealed in one group: records, checkpoints, and one
/// index entry per child, message and millisecond (key: the run's first sequence).
fn sealed_writes(sealed: Sealed, writes: &mut Vec<Write>) {
    for (seq, bytes) in sealed.records {
        writes.push((T::Audit, be(seq).to_vec(), Some(bytes)));
    }
    for (seq, bytes) in sealed.checkpoints {
        writes.push((T::Checkpoints, be(seq).to_vec(), Some(bytes)));
    }
    let index = sealed.index;
    for (subject, seqs) in index.by_subject {
        let k = [subject.as_bytes(), &be(seqs[0])].concat();
        writes.push((T::AuditBySubject, k, Some(run_value(&seqs))));
    }
    for (id, seqs) in index.by_message {
        let k = key(&[id.as_bytes(), &be(seqs[0])]);
        writes.push((T::AuditByMessage, k, Some(run_value(&seqs))));
    }
    for (millis, seqs) in index.by_time {
        let k = [be(millis), be(seqs[0])].concat();
        writes.push((T::AuditByTime, k, Some(run_value(&seqs))));
    }
}

/// Opens the trees of a store that must exist already (for reading, or a migration).
fn open_existing(dir: &Path) -> Result<(sled::Db, Vec<sled::Tree>), StoreError> {
    if !dir.join("db").exists() {
        return Err(StoreError::Open {
            path: dir.to_path_buf(),
            source: sled::Error::Unsupported("no wijkpoort store in this directory".into()),
        });
    }
    let db = open_db(dir)?;
    let trees = T::ALL
        .iter()
        .map(|t| db.open_tree(t.name()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((db, trees))
}

/// Opens the sled database of a store that must exist already, as a whole (the
/// backup copies every tree in it).
pub(crate) fn open_existing_db(dir: &Path) -> Result<sled::Db, StoreError> {
    open_existing(dir).map(|(db, _)| db)
}

/// sled's page cache, in bytes (sled's default is 1 GiB). Writes go to the right edge of
/// the trees (sequence numbers, time-ordered ids), so the pages that are read and written
/// again are few: at 16 MiB the bench's peak RSS fell from ~237 to ~150 MB at the practice
/// and ~200 to ~120 MB at the wijkteam, with no CPU or throughput change it could resolve
/// (README, Performance).
const CACHE_CAPACITY: u64 = 16 * 1024 * 1024;

/// Opens (creating it 0700 if need be) the sled database in `dir`; a lock held by
/// another process is [`StoreError::Locked`].
pub(crate) fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
        path: dir.to_path_buf(),
        source: e.into(),
    })?;
    if created {
        // What the store holds is about children: its directory is the gateway's alone.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            StoreError::Open {
                path: dir.to_path_buf(),
                source: e.into(),
            }
        })?;
    }
    let config = sled::Config::new().path(dir).cache_capacity(CACHE_CAPACITY);
    config.open().map_err(|e| match e {
        sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => {
            StoreError::Locked(dir.to_path_buf())
        }
        sled::Error::Io(ref io) if io.to_string().contains("lock") => {
            StoreError::Locked(dir.to_path_buf())
        }
        other => StoreError::Open {
            path: dir.to_path_buf(),
            source: other,
        },
    })
}

struct Committer {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    sealer: Arc<Sealer>,
    generations: Arc<Generations>,
    chain: AuditChain,
    signer: Arc<Signer>,
    /// Due checkpoints go to the checkpointer thread to be signed …
    to_sign: mpsc::Sender<(u64, String)>,
    /// … and come back signed, to be written with the next group.
    signed: mpsc::Receiver<(u64, Vec<u8>)>,
    durability: Durability,
    log_file: File,
    blobs_dir: PathBuf,
    /// sled's `blobs/` directory, opened once with the store: listing it at every
    /// commit then takes no new file descriptor, so a gateway that has run out of them
    /// (EMFILE, under a flood of connections) can still commit. `None` if sled made none.
    blobs: Option<rustix::fs::Dir>,
    synced_blobs: HashSet<PathBuf>,
    poisoned: Arc<AtomicBool>,
    failure: Arc<tokio::sync::watch::Sender<Option<String>>>,
    stats: Arc<CommitStats>,
    /// The fault hook (debug builds): panic at the commit point after this many groups.
    #[cfg(debug_assertions)]
    panic_after: Option<u64>,
}

/// Marks the store failed if the committer thread unwinds.
struct PanicGuard {
    poisoned: Arc<AtomicBool>,
    failure: Arc<tokio::sync::watch::Sender<Option<String>>>,
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("the store's committer panicked; the store refuses further writes");
            self.poisoned.store(true, Ordering::SeqCst);
            self.failure
                .send_replace(Some("the store's committer thread panicked".into()));
        }
    }
}

/// Most jobs one group commit takes; bounds the latency of the first job in a group.
const MAX_GROUP: usize = 1024;

impl Committer {
    fn run(mut self, jobs: mpsc::Receiver<JobFn>) {
        let _guard = PanicGuard {
            poisoned: self.poisoned.clone(),
            failure: self.failure.clone(),
        };
        loop {
            let first = match jobs.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(job) => job,
                // Idle: store a checkpoint that came back signed, if any, on its own.
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(signed) = self.signed.try_recv() {
                        self.commit_checkpoint(signed);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.commit_group_guarded(group);
        }
        // A failed store writes nothing more: nothing can be made durable there.
        if self.poisoned.load(Ordering::SeqCst) {
            return;
        }
        // All senders are gone: the gateway is stopping. Store what was signed meanwhile,
        // then seal the log with a checkpoint of its head (signed here: nothing waits).
        // Closing the request channel ends the checkpointer once it has signed what it
        // was asked, so this waits for exactly those.
        drop(std::mem::replace(&mut self.to_sign, mpsc::channel().0));
        while let Ok(signed) = self.signed.recv() {
            self.commit_checkpoint(signed);
        }
        let mut sealed = Sealed::default();
        if let Err(e) = self.chain.checkpoint(&self.signer, &mut sealed) {
            tracing::error!(error = %e, "could not write the closing audit checkpoint");
            return;
        }
        let mut writes = Vec::new();
        sealed_writes(sealed, &mut writes);
        if let Err(e) = self.apply(&writes).and_then(|()| self.commit_point()) {
            tracing::error!(error = %e, "could not write the closing audit checkpoint");
        }
    }

    /// Stores one signed checkpoint in a commit of its own.
    fn commit_checkpoint(&mut self, (seq, bytes): (u64, Vec<u8>)) {
        if self.poisoned.load(Ordering::SeqCst) {
            return;
        }
        let writes = vec![(T::Checkpoints, be(seq).to_vec(), Some(bytes))];
        if let Err(e) = self.apply(&writes).and_then(|()| self.commit_point()) {
            tracing::error!(error = %e, "could not store a signed audit checkpoint; the store refuses further writes");
            self.poisoned.store(true, Ordering::SeqCst);
            self.failure
                .send_replace(Some(format!("a commit failed: {e}")));
        }
    }

    /// Commits a group; if that panics, the store is marked failed *before* the
    /// group's callers hear that their jobs are gone (so that health already says so),
    /// and the committer thread goes on unwinding.
    fn commit_group_guarded(&mut self, group: Vec<JobFn>) {
        let mut finishers = Vec::with_capacity(group.len());
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.commit_group(group, &mut finishers)
        }));
        if let Err(panic) = outcome {
            tracing::error!("the store's committer panicked; the store refuses further writes");
            self.poisoned.store(true, Ordering::SeqCst);
            self.failure
                .send_replace(Some("the store's committer thread panicked".into()));
            drop(finishers);
            std::panic::resume_unwind(panic);
        }
    }

    fn commit_group(&mut self, group: Vec<JobFn>, finishers: &mut Vec<Finisher>) {
        let started = std::time::Instant::now();
        let observer = self.stats.observer.get().cloned();
        let mut overlay: HashMap<(T, Vec<u8>), usize> = HashMap::new();
        let mut writes: Vec<Write> = Vec::new();
        let mut presealed: HashMap<usize, Vec<u8>> = HashMap::new();
        // Checkpoints signed since the last group are stored with this one.
        while let Ok((seq, bytes)) = self.signed.try_recv() {
            writes.push((T::Checkpoints, be(seq).to_vec(), Some(bytes)));
        }
        let mut chain_error = None;
        let mut sealed = Sealed::default();
        for job in group {
            let mut tx = Tx {
                trees: &self.trees,
                sealer: &self.sealer,
                generations: &self.generations,
                group: &writes,
                overlay: &overlay,
                writes: Vec::new(),
                presealed: Vec::new(),
                audit: Vec::new(),
                db: &self.db,
            };
            let finish = job(&mut tx);
            let Tx {
                writes: job_writes,
                presealed: job_presealed,
                audit,
                ..
            } = tx;
            let base = writes.len();
            presealed.extend(job_presealed.into_iter().map(|(i, s)| (base + i, s)));
            for event in audit {
                if let Some(o) = &observer {
                    o.audited(&event);
                }
                if let Err(e) = self.chain.append(event, &mut sealed) {
                    chain_error = Some(StoreError::from(e));
                }
            }
            for (t, k, v) in job_writes {
                overlay.insert((t, k.clone()), writes.len());
                writes.push((t, k, v));
            }
            finishers.push(finish);
        }
        let due = sealed.due.take();
        sealed_writes(sealed, &mut writes);
        let result = match chain_error {
            Some(e) => Err(e),
            None => self.seal_writes(&mut writes, presealed).and_then(|()| {
                add_ns(&self.stats.jobs_ns, started.elapsed());
                let applying = std::time::Instant::now();
                self.apply(&writes)?;
                add_ns(&self.stats.transaction_ns, applying.elapsed());
                self.commit_point()
            }),
        };
        self.stats.groups.fetch_add(1, Ordering::Relaxed);
        self.stats
            .jobs
            .fetch_add(finishers.len() as u64, Ordering::Relaxed);
        if let (Some(o), Ok(())) = (&observer, &result) {
            o.committed(started.elapsed());
        }
        match result {
            Ok(()) => {
                // The group holding the checkpoint's record is durable: have it signed.
                if let Some(due) = due {
                    let _ = self.to_sign.send(due);
                }
                finishers.drain(..).for_each(|f| f(Ok(())))
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed; the store refuses further writes");
                self.poisoned.store(true, Ordering::SeqCst);
                self.failure
                    .send_replace(Some(format!("a commit failed: {e}")));
                for f in finishers.drain(..) {
                    f(Err(StoreError::Poisoned));
                }
            }
        }
    }

    /// Seals the values the group writes to sealed trees (jobs hand over plaintext, so
    /// that later jobs of the group read it from the overlay), and records the seal count
    /// with them: a sealed value is never on disk before the count that includes it.
    fn seal_writes(
        &self,
        writes: &mut Vec<Write>,
        mut presealed: HashMap<usize, Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut sealed_any = !presealed.is_empty();
        for (i, (t, k, v)) in writes.iter_mut().enumerate() {
            if let (true, Some(plain)) = (t.is_sealed(), v.as_mut()) {
                *plain = match presealed.remove(&i) {
                    Some(sealed) => sealed,
                    None => self.sealer.seal(t.name(), k, plain)?,
                };
                sealed_any = true;
            }
        }
        if sealed_any {
            writes.push((
                T::Meta,
                seals_key(&self.sealer.key().id()),
                Some(self.sealer.seals().to_be_bytes().to_vec()),
            ));
        }
        Ok(())
    }

    /// Applies a group's writes in one sled transaction across all trees.
    fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        let applied = apply_writes(&self.trees, writes);
        self.generations.written(writes);
        applied
    }

    /// THE COMMIT POINT. Nothing is reported as accepted before this returns `Ok`.
    fn commit_point(&mut self) -> Result<(), StoreError> {
        #[cfg(debug_assertions)]
        if let Some(n) = self.panic_after {
            if self.stats.groups.load(Ordering::Relaxed) >= n {
                panic!("fault hook: WIJKPOORT_FAULT_COMMIT_PANIC_AFTER={n}");
            }
        }
        let flushing = std::time::Instant::now();
        self.db.flush()?;
        add_ns(&self.stats.flush_ns, flushing.elapsed());
        if self.durability == Durability::Off {
            return Ok(());
        }
        // sled's flush used sync_file_range: the data is written but neither the file's
        // metadata (its new length) nor the disk's cache is flushed. fdatasync does both.
        let syncing = std::time::Instant::now();
        self.log_file.sync_data()?;
        self.sync_new_blobs()?;
        let took = syncing.elapsed();
        add_ns(&self.stats.fdatasync_ns, took);
        if let Some(o) = self.stats.observer.get() {
            o.synced(took);
        }
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// sled writes values too large for its log (over a quarter segment, 128 KiB by
    /// default) to files under `blobs/` without syncing them. Our messages are capped at
    /// 64 KiB so this is rare, but a large tree node could still go there.
    fn sync_new_blobs(&mut self) -> Result<(), StoreError> {
        use std::os::unix::ffi::OsStrExt;
        let Some(dir) = self.blobs.as_mut() else {
            return Ok(());
        };
        dir.rewind();
        let mut synced_any = false;
        let mut present = HashSet::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(std::io::Error::from)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let path = self.blobs_dir.join(std::ffi::OsStr::from_bytes(name));
            if !self.synced_blobs.contains(&path) {
                File::open(&path)?.sync_all()?;
                synced_any = true;
            }
            present.insert(path);
        }
        if synced_any {
            rustix::fs::fsync(dir.fd().map_err(std::io::Error::from)?)
                .map_err(std::io::Error::from)?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

/// Adds a phase's duration to its total in [`CommitStats`].
fn add_ns(total: &AtomicU64, took: std::time::Duration) {
    let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
    total.fetch_add(ns, Ordering::Relaxed);
}

/// sled's blob directory, kept open for the committer (see `Committer::blobs`).
fn open_blobs_dir(path: &Path) -> Result<Option<rustix::fs::Dir>, StoreError> {
    match File::open(path) {
        Ok(file) => Ok(Some(
            rustix::fs::Dir::new(file).map_err(std::io::Error::from)?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Applies writes in one sled transaction, spanning only the trees written (a sled
/// transaction costs per tree it spans).
fn apply_writes(trees: &[sled::Tree], writes: &[Write]) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    // A sled transaction costs per tree it spans, so span only the trees written.
    let mut touched: Vec<T> = Vec::new();
    for (t, _, _) in writes {
        if !touched.contains(t) {
            touched.push(*t);
        }
    }
    let spanned: Vec<&sled::Tree> = touched.iter().map(|t| &trees[t.index()]).collect();
    let slot = |t: &T| touched.iter().position(|x| x == t).unwrap_or(0);
    spanned
        .as_slice()
        .transaction(|views| {
            for (t, k, v) in writes {
                let view = &views[slot(t)];
                match v {
                    Some(v) => view.insert(k.as_slice(), v.as_slice())?,
                    None => view.remove(k.as_slice())?,
                };
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        })
        .map_err(|e| match e {
            TransactionError::Storage(e) => StoreError::Sled(e),
            TransactionError::Abort(()) => StoreError::Corrupt("transaction aborted".into()),
        })
}

/// Keeps (inside a job) a certificate that signed something this commit stores.
pub fn keep_certificate(tx: &mut Tx<'_>, cert_der: &[u8]) -> Result<(), StoreError> {
    let fp = crate::signing::fingerprint(cert_der);
    if tx.get(T::Certificates, fp.as_bytes())?.is_none() {
        tx.insert(T::Certificates, fp.into_bytes(), cert_der.to_vec());
    }
    Ok(())
}

/// Big-endian bytes of a sequence number, so that sled's byte order is numeric order.
pub fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Key made of parts joined by a 0 byte (ids never contain one).
pub fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}
