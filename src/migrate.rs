//! `wijkpoort store migrate`: brings a stopped gateway's store of format 1 or 2 to
//! format 3 ([`MIGRATES_TO`]), in place; from there `wijkpoort store compact`
//! ([`crate::compact`]) seals it into this build's format
//! ([`crate::store::FORMAT_VERSION`]) in a fresh directory. A gateway refuses to start on a store of an older
//! format and names this command, so that a change of layout is always a deliberate
//! step the operator takes after a backup, never something done silently at start.
//!
//! From format 1 to 2 (sender-scoped message ids):
//! - each received message moves from key `id` to `sender, 0, id`, and its inbox entry
//!   points at the new key;
//! - each consent recipient moves from `consent, 0, peer name` to `consent, 0, peer
//!   organisation identifier`, by the peers in the config; a name the config no longer
//!   lists is kept as it was and reported (its peer can no longer be told).
//!
//! From format 2 to 3 (one envelope signature per relay batch): nothing moves. The
//! envelopes stored so far keep their signature over their own bytes, which
//! `envelope_batch::verify_stored` (and `wijkpoort audit prove`) still check; messages
//! still queued are signed by the relay when it sends them, like every new one. The
//! migration counts those envelopes and records the new format, so that an older build
//! refuses the store from now on.
//!
//! Everything moves in one transaction, then the store is flushed and synced; the audit
//! chain is not touched, so `audit verify` gives the same answer before and after.

use std::collections::HashMap;

use crate::config::Config;
use crate::store::{key, StoreError, Upgrade, Write, T};

/// The format this command brings a store to: plaintext, batch signatures. Format 4
/// (sealed) is reached by `wijkpoort store compact` ([`crate::compact`]), into a fresh
/// directory, never in place (sled would keep the plaintext in its old log segments).
pub const MIGRATES_TO: u32 = 3;

/// What a migration did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    pub from_version: u32,
    pub received_messages: usize,
    pub consent_recipients: usize,
    /// Consent recipients whose peer name the config no longer lists.
    pub unknown_recipients: Vec<String>,
    /// Stored envelopes (sent and received) that keep a signature over their own bytes.
    pub signed_alone: usize,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store is in format {0}, which this command does not change: from format {MIGRATES_TO} on, `wijkpoort store compact --from DIR --to NEWDIR --data-key FILE` brings it to format {current}", current = crate::store::FORMAT_VERSION)]
    Current(u32),
    #[error(
        "the store is empty; a gateway starting on it writes format {}",
        crate::store::FORMAT_VERSION
    )]
    Empty,
}

/// Migrates the store of `config` (its gateway must be stopped).
pub fn migrate(config: &Config) -> Result<Migrated, MigrateError> {
    let store = Upgrade::open(&config.store_dir)?;
    let from_version = match store.format()? {
        None => return Err(MigrateError::Empty),
        Some(v) if v >= MIGRATES_TO => return Err(MigrateError::Current(v)),
        Some(v) => v,
    };
    let mut writes: Vec<Write> = Vec::new();
    let mut report = Migrated {
        from_version,
        ..Migrated::default()
    };

    if from_version < 2 {
        to_format_2(&store, config, &mut writes, &mut report)?;
    }
    // Format 3: nothing moves; count what keeps a per-message signature.
    for entry in store.tree(T::Received).iter() {
        let (_, value) = entry.map_err(StoreError::from)?;
        if crate::inbox::decode(&value)?.batch.is_none() {
            report.signed_alone += 1;
        }
    }
    for entry in store.tree(T::Sent).iter() {
        let (_, value) = entry.map_err(StoreError::from)?;
        let sent: Signed = serde_json::from_slice(&value)
            .map_err(|e| StoreError::Corrupt(format!("sent message: {e}")))?;
        if sent.signature.is_some() && sent.batch.is_none() {
            report.signed_alone += 1;
        }
    }
    store.finish(writes, MIGRATES_TO)?;
    Ok(report)
}

/// The signature fields of a sent-message record.
#[derive(serde::Deserialize)]
struct Signed {
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    batch: Option<serde::de::IgnoredAny>,
}

/// Format 1 to 2: messages and consent recipients re-keyed.
fn to_format_2(
    store: &Upgrade,
    config: &Config,
    writes: &mut Vec<Write>,
    report: &mut Migrated,
) -> Result<(), MigrateError> {
    // Received messages: id → sender, 0, id.
    let mut moved: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for entry in store.tree(T::Received).iter() {
        let (old, value) = entry.map_err(StoreError::from)?;
        if old.contains(&0) {
            continue; // already scoped by sender
        }
        let msg = crate::inbox::decode(&value)?;
        let new = key(&[msg.from.as_str().as_bytes(), msg.id.as_bytes()]);
        writes.push((T::Received, old.to_vec(), None));
        writes.push((T::Received, new.clone(), Some(value.to_vec())));
        moved.insert(old.to_vec(), new);
        report.received_messages += 1;
    }
    for entry in store.tree(T::Inbox).iter() {
        let (k, target) = entry.map_err(StoreError::from)?;
        if let Some(new) = moved.get(target.as_ref()) {
            writes.push((T::Inbox, k.to_vec(), Some(new.clone())));
        }
    }

    // Consent recipients: consent, 0, peer name → consent, 0, organisation identifier.
    for entry in store.tree(T::ConsentRecipients).iter() {
        let (k, _) = entry.map_err(StoreError::from)?;
        let Some(split) = k.iter().position(|b| *b == 0) else {
            continue;
        };
        let (consent, peer) = (&k[..split], &k[split + 1..]);
        let peer = String::from_utf8_lossy(peer).into_owned();
        if config.peers.by_identity(&peer).is_some() {
            continue; // already an identifier
        }
        match config.peers.by_name(&peer) {
            Some(p) => {
                writes.push((T::ConsentRecipients, k.to_vec(), None));
                writes.push((
                    T::ConsentRecipients,
                    key(&[consent, p.identity.as_str().as_bytes()]),
                    Some(Vec::new()),
                ));
                report.consent_recipients += 1;
            }
            None => report.unknown_recipients.push(peer),
        }
    }
    Ok(())
}
