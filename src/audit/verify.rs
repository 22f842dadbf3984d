//! Verifying the audit log: recompute the hash chain from the first record to the last
//! and check every signed checkpoint against the gateway's certificate, then name the
//! *first* sequence number at which the log is not what the gateway wrote.
//!
//! What is detected, and at which sequence number:
//!
//! | tampering | found as | reported seq |
//! | --- | --- | --- |
//! | a record's content changed | its hash no longer matches ([`TamperKind::Altered`]) | that record |
//! | a record changed *and* rehashed | the next record's `prev_hash` ([`TamperKind::BrokenLink`]) | that record |
//! | a record removed | a gap in the sequence ([`TamperKind::Removed`]) | the missing seq |
//! | two records swapped | a record under another seq's key ([`TamperKind::OutOfPlace`]) | the first of the two |
//! | the chain rewritten from some record on | the next checkpoint's hash ([`TamperKind::CheckpointMismatch`]) | that checkpoint |
//! | a checkpoint forged or altered | its signature ([`TamperKind::CheckpointSignature`]) | that checkpoint |
//! | the log cut back behind its last checkpoint | a checkpoint beyond the end ([`TamperKind::Truncated`]) | the first missing seq |
//!
//! A retention purge ([`crate::retention`]) removes the oldest records up to a signed
//! checkpoint and keeps that checkpoint: a log whose first record is `N + 1` is checked
//! from the checkpoint at `N` (its hash must be record `N + 1`'s `prev_hash`), and only
//! if a kept purge record names exactly `1..=N`, or `M..=N` after earlier purges, ending
//! at `N` ([`VerifyReport::pinned_at`]). Without both, the missing start is
//! [`TamperKind::Removed`].
//!
//! A log cut back *together with* its later checkpoints looks like an older, intact log;
//! only a checkpoint the auditor kept from an earlier check ([`KnownCheckpoint`]) catches
//! that. Records after the last checkpoint (a gateway that crashed) are chained but not
//! yet signed: they are reported as [`VerifyReport::unsigned_tail`], not as tampering.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::progress::Progress;
use super::{checkpoint_bytes, AuditRecord, AuditTrees, Checkpoint, GENESIS_HASH};
use crate::signing::SigningError;
use crate::store::{StoreError, T};
use rustls::pki_types::{CertificateDer, UnixTime};

/// Whether `stored` may stand in for `current` as the gateway's certificate at `at`.
fn trusted(
    trees: &impl AuditTrees,
    stored: &[u8],
    current: &[u8],
    anchors: &[CertificateDer<'static>],
    at: &chrono::DateTime<chrono::Utc>,
) -> bool {
    let same_org = match (
        crate::identity::identify(stored),
        crate::identity::identify(current),
    ) {
        (Ok(a), Ok(b)) => a.organisation_id == b.organisation_id,
        _ => false,
    };
    same_org && chains_to_anchor(trees, stored, anchors, at)
}

/// Whether the certificate `cert_der` chains to one of `anchors` at `at`, with the
/// store's kept certificates as intermediates.
pub fn chains_to_anchor(
    trees: &impl AuditTrees,
    cert_der: &[u8],
    anchors: &[CertificateDer<'static>],
    at: &chrono::DateTime<chrono::Utc>,
) -> bool {
    if anchors.is_empty() {
        return false;
    }
    let mut roots = rustls::RootCertStore::empty();
    for anchor in anchors {
        if roots.add(anchor.clone()).is_err() {
            return false;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let Ok(verifier) = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider,
    )
    .build() else {
        return false;
    };
    let intermediates: Vec<CertificateDer<'static>> = trees
        .tree(T::Certificates)
        .iter()
        .filter_map(|e| e.ok())
        .map(|(_, der)| CertificateDer::from(der.to_vec()))
        .collect();
    let Ok(secs) = u64::try_from(at.timestamp()) else {
        return false;
    };
    verifier
        .verify_client_cert(
            &CertificateDer::from(cert_der.to_vec()),
            &intermediates,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
        )
        .is_ok()
}

/// Why verification could not be carried out at all (exit code 2, "could not check").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("reading the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the gateway's certificate cannot be used to check checkpoints: {0}")]
    Certificate(#[from] SigningError),
    #[error("{0:?} is not a checkpoint: expected SEQ:HASH (a number, a colon, 64 hex digits)")]
    BadKnownCheckpoint(String),
}

impl From<sled::Error> for VerifyError {
    fn from(e: sled::Error) -> VerifyError {
        VerifyError::Store(StoreError::Sled(e))
    }
}

/// How the log was found to differ from what the gateway wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TamperKind {
    /// The record's content does not match its own hash.
    Altered,
    /// The record is consistent in itself but is not the one its successor was chained to.
    BrokenLink,
    /// No record under this sequence number, though later ones exist.
    Removed,
    /// The record stored under this sequence number says it is another one.
    OutOfPlace,
    /// The bytes under this sequence number are not a record at all.
    Unreadable,
    /// A signed checkpoint names a hash the recomputed chain does not reach.
    CheckpointMismatch,
    /// A checkpoint's signature does not verify against the gateway's certificate.
    CheckpointSignature,
    /// The log ends before a sequence number a checkpoint vouches for.
    Truncated,
}

/// The first place the log fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tamper {
    pub seq: u64,
    pub kind: TamperKind,
    pub detail: String,
}

/// A checkpoint the auditor saw earlier (`SEQ:HASH`), to catch a log cut back together
/// with its later checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownCheckpoint {
    pub seq: u64,
    pub hash: String,
}

impl std::str::FromStr for KnownCheckpoint {
    type Err = VerifyError;
    fn from_str(s: &str) -> Result<KnownCheckpoint, VerifyError> {
        let bad = || VerifyError::BadKnownCheckpoint(s.to_string());
        let (seq, hash) = s.split_once(':').ok_or_else(bad)?;
        let seq = seq.trim().parse::<u64>().map_err(|_| bad())?;
        let hash = hash.trim().to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(KnownCheckpoint { seq, hash })
    }
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Records read.
    pub records: u64,
    /// The last sequence number in the log (0 when empty).
    pub last_seq: u64,
    /// The recomputed hash at `last_seq` (as far as the chain held).
    pub last_hash: String,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// The last signed checkpoint, `SEQ:HASH`; keep it to pass as `--expect` next time.
    pub last_checkpoint: Option<KnownCheckpoint>,
    /// Records after the last checkpoint: chained, not yet signed.
    pub unsigned_tail: u64,
    /// When the oldest records were purged: the signed checkpoint the chain was checked
    /// from (the last purged sequence number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_at: Option<u64>,
    /// `None` when the log is intact.
    pub tamper: Option<Tamper>,
}

impl VerifyReport {
    pub fn intact(&self) -> bool {
        self.tamper.is_none()
    }
}

/// Verifies the whole log in `trees` against the gateway certificate `cert_der` alone.
pub fn verify(
    trees: &impl AuditTrees,
    cert_der: &[u8],
    known: Option<&KnownCheckpoint>,
) -> Result<VerifyReport, VerifyError> {
    verify_with_anchors(trees, cert_der, &[], known)
}

/// Verifies the whole log in `trees`. Each checkpoint is checked against the certificate
/// its signature names, as the store kept it, when that certificate is trustworthy: it
/// names the same organisation as `cert_der` and chains to one of `anchors` at the
/// checkpoint's time (the store's other certificates serve as intermediates). So a
/// renewed certificate leaves the old checkpoints checkable, and a certificate slipped
/// into the store by whoever could write it proves nothing. Otherwise `cert_der`.
pub fn verify_with_anchors(
    trees: &impl AuditTrees,
    cert_der: &[u8],
    anchors: &[CertificateDer<'static>],
    known: Option<&KnownCheckpoint>,
) -> Result<VerifyReport, VerifyError> {
    verify_with_progress(trees, cert_der, anchors, known, &Progress::hidden())
}

/// [`verify_with_anchors`], telling `progress` of each record checked (the CLI's bar).
pub fn verify_with_progress(
    trees: &impl AuditTrees,
    cert_der: &[u8],
    anchors: &[CertificateDer<'static>],
    known: Option<&KnownCheckpoint>,
    progress: &Progress,
) -> Result<VerifyReport, VerifyError> {
    // Fails early, naming the problem, if the certificate's key is of no usable type.
    crate::signing::certificate_key(cert_der)?;
    let mut first: Option<Tamper> = None;
    let mut note = |t: Tamper| {
        if first.as_ref().is_none_or(|f| t.seq < f.seq) {
            first = Some(t);
        }
    };

    // Checkpoints first: they were committed before anything we read after them, so a
    // running gateway appending meanwhile cannot make a fresh checkpoint look "beyond
    // the end of the log".
    let mut checkpoints: BTreeMap<u64, Checkpoint> = BTreeMap::new();
    let mut signed = 0u64;
    for item in trees.tree(T::Checkpoints).iter() {
        let (k, v) = item?;
        let Some(seq) = seq_of(&k) else {
            note(Tamper {
                seq: 0,
                kind: TamperKind::CheckpointSignature,
                detail: "a checkpoint is stored under a malformed key".into(),
            });
            continue;
        };
        let cp: Checkpoint = match serde_json::from_slice(&v) {
            Ok(cp) => cp,
            Err(e) => {
                note(Tamper {
                    seq,
                    kind: TamperKind::CheckpointSignature,
                    detail: format!("the checkpoint at {seq} cannot be read: {e}"),
                });
                continue;
            }
        };
        // The certificate that signed it: the one its signature names, as the store kept
        // it (so a renewal leaves old checkpoints checkable), else the one given.
        let stored = crate::signing::named_certificate(&cp.signature)
            .filter(|fp| *fp != crate::signing::fingerprint(cert_der))
            .and_then(|fp| {
                trees
                    .tree(T::Certificates)
                    .get(fp.as_bytes())
                    .ok()
                    .flatten()
            })
            .filter(|stored| trusted(trees, stored, cert_der, anchors, &cp.time));
        let signer_cert = stored.as_deref().unwrap_or(cert_der);
        let signature_ok = cp.seq == seq
            && crate::signing::verify(
                signer_cert,
                &checkpoint_bytes(cp.seq, &cp.hash, &cp.time),
                &cp.signature,
            )
            .is_ok();
        if !signature_ok {
            note(Tamper {
                seq,
                kind: TamperKind::CheckpointSignature,
                detail: format!(
                    "the checkpoint at {seq} is not signed by the gateway's key (forged or altered)"
                ),
            });
            continue;
        }
        signed += 1;
        checkpoints.insert(seq, cp);
    }

    let mut expected = 1u64;
    let mut prev_hash = GENESIS_HASH.to_string();
    // A purged start: the chain goes on from the signed checkpoint just before it.
    let mut pinned_at = None;
    let mut pin_accounted = false;
    if let Some((k, _)) = trees.tree(T::Audit).first()? {
        if let Some(first_seq) = seq_of(&k).filter(|s| *s > 1) {
            if let Some(cp) = checkpoints.get(&(first_seq - 1)) {
                expected = first_seq;
                prev_hash = cp.hash.clone();
                pinned_at = Some(cp.seq);
            }
        }
    }
    let mut records = 0u64;
    let mut last_seq = 0u64;
    let mut last_good_checkpoint = 0u64;
    let mut chain_broken = false;
    let mut hashes_at_known = None;
    progress.start("verifying", super::query::chain_length(trees));
    for item in trees.tree(T::Audit).iter() {
        let (k, v) = item?;
        records += 1;
        progress.advance(1);
        let Some(seq) = seq_of(&k) else {
            note(Tamper {
                seq: expected,
                kind: TamperKind::Unreadable,
                detail: "an audit record is stored under a malformed key".into(),
            });
            chain_broken = true;
            break;
        };
        last_seq = seq;
        if seq != expected {
            note(Tamper {
                seq: expected,
                kind: TamperKind::Removed,
                detail: if seq == expected + 1 {
                    format!("record {expected} is missing (the log goes on at {seq})")
                } else {
                    format!(
                        "records {expected} to {} are missing (the log goes on at {seq})",
                        seq - 1
                    )
                },
            });
            chain_broken = true;
            break;
        }
        let rec: AuditRecord = match serde_json::from_slice(&v) {
            Ok(rec) => rec,
            Err(e) => {
                note(Tamper {
                    seq,
                    kind: TamperKind::Unreadable,
                    detail: format!("record {seq} is not an audit record: {e}"),
                });
                chain_broken = true;
                break;
            }
        };
        if rec.seq != seq {
            note(Tamper {
                seq,
                kind: TamperKind::OutOfPlace,
                detail: format!(
                    "the record stored as {seq} says it is record {} (records moved or swapped)",
                    rec.seq
                ),
            });
            chain_broken = true;
            break;
        }
        let canonical = serde_json::to_vec(&rec).unwrap_or_default();
        if rec.compute_hash() != rec.hash || canonical != v.as_ref() {
            note(Tamper {
                seq,
                kind: TamperKind::Altered,
                detail: format!("record {seq} does not match its hash: its content was changed"),
            });
            chain_broken = true;
            break;
        }
        if rec.prev_hash != prev_hash {
            // The first record's link is to the genesis hash; a wrong one is its own fault.
            let culprit = if seq > 1 { seq - 1 } else { seq };
            note(Tamper {
                seq: culprit,
                kind: TamperKind::BrokenLink,
                detail: format!(
                    "record {seq} was chained to a different record {culprit}: record {culprit} was rewritten (or record {seq}'s link)"
                ),
            });
            chain_broken = true;
            break;
        }
        if let Some(cp) = checkpoints.get(&seq) {
            if cp.hash != rec.hash {
                note(Tamper {
                    seq,
                    kind: TamperKind::CheckpointMismatch,
                    detail: format!(
                        "the checkpoint signed at {seq} names another hash: the log was rewritten after checkpoint {last_good_checkpoint}, at or before {seq}"
                    ),
                });
                chain_broken = true;
                break;
            }
            last_good_checkpoint = seq;
        }
        if known.is_some_and(|k| k.seq == seq) {
            hashes_at_known = Some(rec.hash.clone());
        }
        if let (Some(pin), Some(p)) = (pinned_at, &rec.event.purged) {
            if p.audit_records > 0 && p.audit_to == pin && seq > pin {
                pin_accounted = true;
            }
        }
        prev_hash = rec.hash;
        expected = seq + 1;
    }

    if let (Some(pin), false) = (pinned_at, pin_accounted) {
        note(Tamper {
            seq: 1,
            kind: TamperKind::Removed,
            detail: format!(
                "records 1 to {pin} are missing: a signed checkpoint at {pin} is there, but no purge record names that range (removed by hand, or the purge record too)"
            ),
        });
    }
    if !chain_broken {
        if let Some((&cp_seq, _)) = checkpoints.iter().next_back() {
            if cp_seq > last_seq {
                note(Tamper {
                    seq: last_seq + 1,
                    kind: TamperKind::Truncated,
                    detail: format!(
                        "the log ends at {last_seq} but a signed checkpoint vouches for records up to {cp_seq}: the log was cut back"
                    ),
                });
            }
        }
        if let Some(k) = known {
            match hashes_at_known {
                None => note(Tamper {
                    seq: last_seq + 1,
                    kind: TamperKind::Truncated,
                    detail: format!(
                        "the log ends at {last_seq} but you saw it reach {} before: the log was cut back",
                        k.seq
                    ),
                }),
                Some(h) if h != k.hash => note(Tamper {
                    seq: k.seq,
                    kind: TamperKind::CheckpointMismatch,
                    detail: format!(
                        "record {} does not have the hash you saw before: the log was rewritten at or before it",
                        k.seq
                    ),
                }),
                Some(_) => {}
            }
        }
    }

    let last_checkpoint = checkpoints.values().next_back().map(|cp| KnownCheckpoint {
        seq: cp.seq,
        hash: cp.hash.clone(),
    });
    let unsigned_tail = last_seq.saturating_sub(last_checkpoint.as_ref().map_or(0, |c| c.seq));
    Ok(VerifyReport {
        records,
        last_seq,
        last_hash: prev_hash,
        checkpoints: signed,
        last_checkpoint,
        unsigned_tail,
        pinned_at,
        tamper: first,
    })
}

fn seq_of(key: &[u8]) -> Option<u64> {
    key.try_into().ok().map(u64::from_be_bytes)
}
