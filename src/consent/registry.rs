//! The consent registry: where consent events are kept in the store. It reads and
//! appends; what a consent means (its state, whether it covers a message) is the parent
//! module's, and the use cases that record and withdraw consents are
//! [`crate::consent_desk`]'s.
//!
//! Events are append-only (consent id, 0, event number → event); the current state is
//! always folded from them. A subject index (pseudonym, 0, consent id) lets the local
//! API and the auditor find a child's consents without a scan, and a recipients index
//! (consent id, 0, peer organisation identifier) remembers which peers were sent messages
//! under a consent, so that a withdrawal reaches each of them — by identifier, so a peer
//! renamed in the config is still told.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use super::{ConsentEvent, ConsentState};
use crate::identity::OrgId;
use crate::store::{be, key, Generation, Store, StoreError, Tx, T};

fn decode(bytes: &[u8]) -> Result<ConsentEvent, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("consent event: {e}")))
}

/// Appends an event (inside a job) and indexes its consent under the child's pseudonym.
pub fn append(tx: &mut Tx<'_>, pseudonym: &str, event: &ConsentEvent) -> Result<(), StoreError> {
    let id = event.consent_id().as_bytes().to_vec();
    let bytes = serde_json::to_vec(event)
        .map_err(|e| StoreError::Corrupt(format!("consent event: {e}")))?;
    tx.insert(T::ConsentEvents, key(&[&id, &be(tx.next_number()?)]), bytes);
    tx.insert(
        T::ConsentBySubject,
        key(&[pseudonym.as_bytes(), &id]),
        Vec::new(),
    );
    Ok(())
}

fn decode_all(raw: &[Vec<u8>]) -> Result<Vec<ConsentEvent>, StoreError> {
    raw.iter().map(|v| decode(v)).collect()
}

fn raw_events_in(tx: &Tx<'_>, consent_id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
    Ok(tx
        .scan_prefix(T::ConsentEvents, &key(&[consent_id.as_bytes(), b""]))?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

/// A consent's state as a job sees it.
pub fn state_in(tx: &Tx<'_>, consent_id: &str) -> Result<Option<ConsentState>, StoreError> {
    let generation = tx.generation(T::ConsentEvents);
    if let Some(state) = generation.and_then(|g| unchanged(consent_id, g)) {
        return Ok(state);
    }
    derived_state(consent_id, raw_events_in(tx, consent_id)?, generation)
}

/// A consent's events as committed.
pub fn events(store: &Store, consent_id: &str) -> Result<Vec<ConsentEvent>, StoreError> {
    decode_all(&raw_events(store, consent_id)?)
}

fn raw_events(store: &Store, consent_id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
    Ok(store
        .scan_prefix(T::ConsentEvents, &key(&[consent_id.as_bytes(), b""]))?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

/// Removes a consent whole (inside a job; a retention purge after its end): its events,
/// its subject index entry and its recipients. Returns how many events it had.
pub fn remove(tx: &mut Tx<'_>, consent_id: &str, pseudonym: &str) -> Result<usize, StoreError> {
    let prefix = key(&[consent_id.as_bytes(), b""]);
    let events = tx.scan_prefix(T::ConsentEvents, &prefix)?;
    for (k, _) in &events {
        tx.remove(T::ConsentEvents, k.clone());
    }
    for (k, _) in tx.scan_prefix(T::ConsentRecipients, &prefix)? {
        tx.remove(T::ConsentRecipients, k);
    }
    tx.remove(
        T::ConsentBySubject,
        key(&[pseudonym.as_bytes(), consent_id.as_bytes()]),
    );
    Ok(events.len())
}

/// The ids of every consent in the store, in key order.
pub fn all_ids(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut ids: Vec<String> = Vec::new();
    for entry in store.tree(T::ConsentEvents).iter() {
        let (k, _) = entry?;
        let id = k.split(|b| *b == 0).next().unwrap_or_default();
        let id = String::from_utf8_lossy(id);
        if ids.last().map(String::as_str) != Some(id.as_ref()) {
            ids.push(id.into_owned());
        }
    }
    Ok(ids)
}

/// A consent's state as committed.
pub fn state(store: &Store, consent_id: &str) -> Result<Option<ConsentState>, StoreError> {
    let generation = store.generation(T::ConsentEvents);
    if let Some(state) = unchanged(consent_id, generation) {
        return Ok(state);
    }
    derived_state(consent_id, raw_events(store, consent_id)?, Some(generation))
}

/// The state a consent would have with `event` appended to its committed events (a
/// mirror of the consent a referral arrives under, before it is stored).
pub fn state_with(
    store: &Store,
    consent_id: &str,
    event: &ConsentEvent,
) -> Result<Option<ConsentState>, StoreError> {
    // Folding is in event order from the first event that establishes the consent, so
    // one more event applies to the folded state of those before it, once there is one.
    if let Some(mut state) = state(store, consent_id)? {
        state.apply(event);
        return Ok(Some(state));
    }
    let mut events = events(store, consent_id)?;
    events.push(event.clone());
    Ok(ConsentState::from_events(&events))
}

/// States already folded from their events, keyed by consent id.
///
/// Every message is checked against its consent three times (on submit, inside the
/// commit that queues it, before it is sent), and decoding the JSON events each time was
/// a tenth of the practice's CPU under load. A state is a pure function of the bytes of
/// its events, so an entry is used when the events just read are byte for byte the ones
/// it was folded from: a consent that gained an event (a withdrawal, an update) is
/// folded afresh, and there is nothing to invalidate. The cache is shared by every store
/// in the process, which is safe for the same reason.
///
/// Reading and opening the events was still ~4% of the practice's CPU and ~8% of the
/// wijkteam's, so an entry also remembers the generation of the events tree it was read
/// at ([`Store::generation`]): while no commit has written that tree since, in that
/// store, the events are the same ones and are not read again.
static DERIVED: LazyLock<Mutex<HashMap<String, Derived>>> = LazyLock::new(Mutex::default);

/// Entries kept at most; past this the cache starts over.
const DERIVED_MAX: usize = 4096;

struct Derived {
    events: Vec<Vec<u8>>,
    state: Option<ConsentState>,
    /// The events tree's generation when `events` were read, if known.
    read_at: Option<Generation>,
}

/// The cached state of a consent whose events tree has not changed since it was read.
fn unchanged(consent_id: &str, generation: Generation) -> Option<Option<ConsentState>> {
    let cache = DERIVED.lock().ok()?;
    let hit = cache.get(consent_id)?;
    (hit.read_at == Some(generation)).then(|| hit.state.clone())
}

/// `read_at` is the generation read *before* `events` were: a commit in between leaves
/// the entry at the older generation, which the next reader no longer sees.
fn derived_state(
    consent_id: &str,
    events: Vec<Vec<u8>>,
    read_at: Option<Generation>,
) -> Result<Option<ConsentState>, StoreError> {
    if let Ok(mut cache) = DERIVED.lock() {
        if let Some(hit) = cache.get_mut(consent_id) {
            if hit.events == events {
                hit.read_at = read_at;
                return Ok(hit.state.clone());
            }
        }
    }
    let state = ConsentState::from_events(&decode_all(&events)?);
    if let Ok(mut cache) = DERIVED.lock() {
        if cache.len() >= DERIVED_MAX {
            cache.clear();
        }
        cache.insert(
            consent_id.to_string(),
            Derived {
                events,
                state: state.clone(),
                read_at,
            },
        );
    }
    Ok(state)
}

/// The ids of every consent about the child with this pseudonym.
pub fn ids_for_subject(store: &Store, pseudonym: &str) -> Result<Vec<String>, StoreError> {
    let prefix = key(&[pseudonym.as_bytes(), b""]);
    store
        .tree(T::ConsentBySubject)
        .scan_prefix(&prefix)
        .map(|entry| {
            entry
                .map_err(StoreError::from)
                .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
        })
        .collect()
}

/// Remembers (inside a job) that the peer with organisation identifier `peer` is about
/// to be sent a message under `consent_id`: the relay calls this in the commit just
/// before it sends, so that a withdrawal knows whom to tell — and tells no one a message
/// never reached.
pub fn note_recipient(tx: &mut Tx<'_>, consent_id: &str, peer: &OrgId) -> Result<(), StoreError> {
    let k = key(&[consent_id.as_bytes(), peer.as_str().as_bytes()]);
    if tx.get(T::ConsentRecipients, &k)?.is_none() {
        tx.insert(T::ConsentRecipients, k, Vec::new());
    }
    Ok(())
}

/// The peers (organisation identifiers) that may have been sent messages under
/// `consent_id`, as a job sees them.
pub fn recipients_in(tx: &Tx<'_>, consent_id: &str) -> Result<Vec<OrgId>, StoreError> {
    let prefix = key(&[consent_id.as_bytes(), b""]);
    Ok(tx
        .scan_prefix(T::ConsentRecipients, &prefix)?
        .into_iter()
        .map(|(k, _)| OrgId::new(String::from_utf8_lossy(&k[prefix.len()..])))
        .collect())
}
