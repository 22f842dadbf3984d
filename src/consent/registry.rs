//! The consent registry: where consent events are kept in the store, and the one place
//! the gateway decides whether a consent covers a message between it and a peer.
//!
//! Events are append-only (consent id, 0, event number → event); the current state is
//! always folded from them. A subject index (pseudonym, 0, consent id) lets the local
//! API and the auditor find a child's consents without a scan, and a recipients index
//! (consent id, 0, peer name) remembers which peers were sent messages under a consent,
//! so that a withdrawal reaches each of them.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use chrono::NaiveDate;

use super::{check_covers, check_covers_at_recipient, ConsentEvent, ConsentRefusal, ConsentState};
use crate::config::Role;
use crate::message::{Bsn, MessageType};
use crate::store::{be, key, Store, StoreError, Tx, T};

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

/// A consent's events as a job sees them (including earlier jobs of its group).
pub fn events_in(tx: &Tx<'_>, consent_id: &str) -> Result<Vec<ConsentEvent>, StoreError> {
    decode_all(&raw_events_in(tx, consent_id)?)
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
    derived_state(consent_id, raw_events_in(tx, consent_id)?)
}

/// A consent's events as committed.
pub fn events(store: &Store, consent_id: &str) -> Result<Vec<ConsentEvent>, StoreError> {
    decode_all(&raw_events(store, consent_id)?)
}

fn raw_events(store: &Store, consent_id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
    store
        .tree(T::ConsentEvents)
        .scan_prefix(key(&[consent_id.as_bytes(), b""]))
        .map(|entry| entry.map(|(_, v)| v.to_vec()).map_err(StoreError::from))
        .collect()
}

/// A consent's state as committed.
pub fn state(store: &Store, consent_id: &str) -> Result<Option<ConsentState>, StoreError> {
    derived_state(consent_id, raw_events(store, consent_id)?)
}

/// States already folded from their events, keyed by consent id.
///
/// Every message is checked against its consent three times (on submit, inside the
/// commit that queues it, before it is sent), and decoding the JSON events each time was
/// a tenth of the practice's CPU under load. A state is a pure function of the bytes of
/// its events, so an entry is used only when the events just read are byte for byte the
/// ones it was folded from: a consent that gained an event (a withdrawal, an update) is
/// folded afresh, and there is nothing to invalidate. The cache is shared by every store
/// in the process, which is safe for the same reason.
static DERIVED: LazyLock<Mutex<HashMap<String, Derived>>> = LazyLock::new(Mutex::default);

/// Entries kept at most; past this the cache starts over.
const DERIVED_MAX: usize = 4096;

struct Derived {
    events: Vec<Vec<u8>>,
    state: Option<ConsentState>,
}

fn derived_state(
    consent_id: &str,
    events: Vec<Vec<u8>>,
) -> Result<Option<ConsentState>, StoreError> {
    if let Ok(cache) = DERIVED.lock() {
        if let Some(hit) = cache.get(consent_id) {
            if hit.events == events {
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

/// Remembers (inside a job) that `peer` is about to be sent a message under
/// `consent_id`: the relay calls this in the commit just before it sends, so that a
/// withdrawal knows whom to tell — and tells no one a message never reached.
pub fn note_recipient(tx: &mut Tx<'_>, consent_id: &str, peer: &str) -> Result<(), StoreError> {
    let k = key(&[consent_id.as_bytes(), peer.as_bytes()]);
    if tx.get(T::ConsentRecipients, &k)?.is_none() {
        tx.insert(T::ConsentRecipients, k, Vec::new());
    }
    Ok(())
}

/// The peers (local names) that may have been sent messages under `consent_id`, as a
/// job sees them.
pub fn recipients_in(tx: &Tx<'_>, consent_id: &str) -> Result<Vec<String>, StoreError> {
    let prefix = key(&[consent_id.as_bytes(), b""]);
    Ok(tx
        .scan_prefix(T::ConsentRecipients, &prefix)?
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
        .collect())
}

/// Does `state` cover a message of type `t` about `bsn` between this gateway and the
/// peer `peer_identity`, in either direction? At the practice the consent was recorded
/// here with the wijkteam as recipient; at the wijkteam it is the mirror, which must
/// name this wijkteam as recipient and have come from that practice.
pub fn covers(
    role: Role,
    own_identity: &str,
    peer_identity: &str,
    state: Option<&ConsentState>,
    bsn: &Bsn,
    t: MessageType,
    today: NaiveDate,
) -> Result<(), ConsentRefusal> {
    match role {
        Role::Practice => check_covers(state, bsn, t, peer_identity, today),
        Role::Wijkteam => {
            check_covers_at_recipient(state, bsn, t, own_identity, peer_identity, today)
        }
    }
}

/// Whether messages of this type may carry personal data only under a consent.
pub fn needs_consent(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::Referral | MessageType::Feedback | MessageType::ConsentUpdate
    )
}

/// The local date that consent periods are judged by.
pub fn today() -> NaiveDate {
    chrono::Local::now().date_naive()
}

/// `POST /v1/consents`: validates a consent against the WGBO rules and records it.
pub async fn record(
    gw: &std::sync::Arc<crate::gateway::Gateway>,
    user: &str,
    request: super::ConsentRequest,
) -> Result<String, crate::error::Refusal> {
    use crate::audit::{Actor, AuditEvent, Event, Outcome};
    use crate::error::Refusal;
    if gw.config.role != Role::Practice {
        return Err(Refusal::new(
            422,
            "consent_recorded_at_practice",
            "consents are recorded at the practice; the wijkteam keeps mirrors of them",
        ));
    }
    let id = crate::message::new_id("consent");
    let actor = Actor::User {
        id: user.to_string(),
    };
    let record = match super::ConsentRecord::from_request(
        id.clone(),
        request,
        user.to_string(),
        chrono::Utc::now(),
        today(),
    ) {
        Ok(r) => r,
        Err(e) => {
            let refusal = Refusal::from(e);
            gw.store
                .commit_audit(vec![AuditEvent::new(
                    Event::ConsentRecorded,
                    Outcome::Refused,
                    actor,
                )
                .on_behalf_of(&gw.config.identity)
                .reason(format!("{}: {}", refusal.code, refusal.message))])
                .await?;
            return Err(refusal);
        }
    };
    let pseudonym = gw.pseudonymiser.pseudonym(&record.child.bsn);
    let basis = match &record.basis {
        super::WgboBasis::ExceptionSeriousHarm { .. } => {
            "WGBO exception for a child of 12-15 alone (serious harm), reason recorded with the consent".to_string()
        }
        other => format!("WGBO basis: {other:?}"),
    };
    let org = gw.config.identity.clone();
    let event = ConsentEvent::Recorded { record };
    gw.store
        .commit(move |tx| {
            append(tx, &pseudonym, &event)?;
            tx.audit(
                AuditEvent::new(Event::ConsentRecorded, Outcome::Success, actor)
                    .on_behalf_of(&org)
                    .subject(Some(pseudonym.clone()))
                    .consent(Some(event.consent_id()))
                    .reason(basis),
            );
            Ok::<_, Refusal>(())
        })
        .await?;
    tracing::info!(consent_id = %id, "consent recorded");
    Ok(id)
}

/// `POST /v1/consents/{id}/withdraw`: records the withdrawal and, in the same commit,
/// queues a `consent_update` for every peer that was sent messages under the consent.
/// Returns the ids of those updates.
pub async fn withdraw(
    gw: &std::sync::Arc<crate::gateway::Gateway>,
    user: &str,
    consent_id: &str,
    reason: String,
) -> Result<Vec<String>, crate::error::Refusal> {
    use crate::audit::{Actor, AuditEvent, Event, Outcome};
    use crate::error::Refusal;
    let state = state(&gw.store, consent_id)?.ok_or_else(|| Refusal::not_found("consent"))?;
    super::check_withdrawable(&state)?;
    let now = chrono::Utc::now();
    let mut updates = Vec::new();
    // An update is prepared (validated, minimised, signed) for every peer, outside the
    // commit; inside it, only the peers the relay has admitted a message for get theirs.
    for peer in gw.config.peers.iter().map(|p| p.name.clone()) {
        let update = crate::send::Submission {
            id: None,
            message_type: MessageType::ConsentUpdate,
            to: peer,
            consent_id: Some(consent_id.to_string()),
            subject: Some(serde_json::Map::from_iter([(
                "bsn".to_string(),
                serde_json::Value::String(state.subject.as_str().to_string()),
            )])),
            body: serde_json::Map::from_iter([
                ("consent_id".to_string(), serde_json::json!(consent_id)),
                ("status".to_string(), serde_json::json!("withdrawn")),
                ("effective_at".to_string(), serde_json::json!(now)),
                ("scope_types".to_string(), serde_json::json!(state.types)),
            ]),
        };
        updates.push(crate::send::prepare(gw, update).map_err(|(r, _)| r)?);
    }
    let actor = Actor::User {
        id: user.to_string(),
    };
    let pseudonym = gw.pseudonymiser.pseudonym(&state.subject);
    let org = gw.config.identity.clone();
    let id = consent_id.to_string();
    let by = user.to_string();
    let queued = gw
        .store
        .commit(move |tx| {
            let current = state_in(tx, &id)?.ok_or_else(|| Refusal::not_found("consent"))?;
            let event = super::withdrawal_event(&current, by, reason, now)?;
            append(tx, &pseudonym, &event)?;
            tx.audit(
                AuditEvent::new(Event::ConsentWithdrawn, Outcome::Success, actor.clone())
                    .on_behalf_of(&org)
                    .subject(Some(pseudonym.clone()))
                    .consent(Some(&id)),
            );
            let told = recipients_in(tx, &id)?;
            let mut queued = Vec::new();
            for update in updates
                .into_iter()
                .filter(|u| told.iter().any(|p| p == u.peer()))
            {
                let hash = crate::receipt::sha256_hex(update.id().as_bytes());
                let peer = update.peer().to_string();
                let accepted = crate::send::queue(tx, update, actor.clone(), hash)?;
                queued.push((accepted.id, peer));
            }
            Ok::<_, Refusal>(queued)
        })
        .await?;
    for (_, peer) in &queued {
        gw.wake_relay(peer);
    }
    tracing::info!(consent_id = %consent_id, updates = queued.len(), "consent withdrawn");
    Ok(queued.into_iter().map(|(id, _)| id).collect())
}

/// `GET /v1/consents?bsn=…`: the child's consents with their status today.
pub fn list_for_child(
    gw: &crate::gateway::Gateway,
    bsn: &Bsn,
) -> Result<Vec<serde_json::Value>, StoreError> {
    let pseudonym = gw.pseudonymiser.pseudonym(bsn);
    let today = today();
    let mut out = Vec::new();
    for id in ids_for_subject(&gw.store, &pseudonym)? {
        let events = events(&gw.store, &id)?;
        if let Some(state) = ConsentState::from_events(&events) {
            out.push(serde_json::json!({
                "consent_id": id,
                "status": state.status_on(today),
                "types": state.types,
                "recipient": state.recipient,
                "valid_from": state.valid_from,
                "valid_until": state.valid_until,
                "mirror": state.is_mirror(),
                "events": events.iter().map(|e| serde_json::json!({"event": e.kind(), "at": e.at()})).collect::<Vec<_>>(),
            }));
        }
    }
    Ok(out)
}
