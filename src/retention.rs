//! Retention: how long a gateway keeps what it stores, per kind, and the purge that
//! removes what is due (GDPR art. 5(1)(e), storage limitation).
//!
//! A purge removes *contents* and keeps the *proof* that an exchange happened:
//!
//! | kind | removed when due | kept |
//! | --- | --- | --- |
//! | delivered outbox message | its envelope | record: id, type, peer, status, signature, receipt, envelope SHA-256 |
//! | acknowledged inbox message | its envelope | record: id, sender, signature, receipt, envelope SHA-256 |
//! | refused, expired, withheld outbox message | its envelope | as for a delivered one |
//! | consent, after its end | every event (names, evidence) and its indexes | the audit records of its grant and withdrawal (pseudonyms) |
//! | audit records | the oldest, up to a signed checkpoint | that checkpoint, which pins the chain's new start |
//!
//! Each purge writes an audit record ([`crate::chain::Event::RecordsPurged`]) with the
//! counts and the audit range it removed, never a value. Audit records go only in whole
//! checkpoint spans: the checkpoint at the end of the removed range stays, and signs the
//! hash that the oldest kept record names as its predecessor, so `audit verify` checks
//! the rest of the chain from there (and requires a purge record naming that start).
//!
//! The purge runs daily in a running gateway ([`crate::gateway`]) and on demand with
//! `wijkpoort store purge` on a stopped one. Removal is logical: sled keeps removed
//! values in old log segments until they are rewritten (sealed, so readable only with the
//! data key); `wijkpoort store compact` ([`crate::compact`]) writes a store without them.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};

use crate::chain::{index_run, run_value, Actor, AuditEvent, AuditRecord, Event, Outcome};
use crate::chain::{Checkpoint, PurgeSummary};
pub use crate::config::retention::Retention;
use crate::consent::registry;
use crate::outbox::{SentMessage, Status};
use crate::pseudonym::Pseudonymiser;
use crate::store::{be, key, Store, StoreError, Tx, T};

/// Most audit records one purge commit removes, so that a first purge of a large log
/// does not hold the committer for long; the purge goes on in further commits.
const AUDIT_RECORDS_PER_COMMIT: u64 = 20_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PurgeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a stored {what} cannot be read: {detail}")]
    Unreadable { what: &'static str, detail: String },
}

/// What is due, found outside the committer; the job checks each again.
#[derive(Debug, Default)]
struct Due {
    sent: Vec<(String, bool)>,
    received: Vec<Vec<u8>>,
    consents: Vec<(String, String)>,
}

/// Removes what is due at `now` / `today` under `rules`, in as many commits as the audit
/// span needs, each with its purge record by `actor`. Returns what was removed in all.
pub async fn purge(
    store: &Store,
    rules: &Retention,
    now: DateTime<Utc>,
    today: NaiveDate,
    pseudonymiser: &Pseudonymiser,
    actor: Actor,
) -> Result<PurgeSummary, PurgeError> {
    let due = find_due(store, rules, now, today, pseudonymiser)?;
    let spans = audit_spans(store, now - rules.audit)?;
    let mut total = PurgeSummary::default();
    let mut spans = spans.into_iter();
    let mut first = Some(due);
    loop {
        let span = spans.next();
        let contents = first.take();
        if span.is_none() && contents.as_ref().is_none_or(Due::is_empty) {
            break;
        }
        let removed = commit_purge(store, contents.unwrap_or_default(), span, now, &actor).await?;
        add(&mut total, &removed);
    }
    Ok(total)
}

impl Due {
    fn is_empty(&self) -> bool {
        self.sent.is_empty() && self.received.is_empty() && self.consents.is_empty()
    }
}

fn add(total: &mut PurgeSummary, s: &PurgeSummary) {
    total.delivered_bodies += s.delivered_bodies;
    total.acknowledged_bodies += s.acknowledged_bodies;
    total.undelivered_bodies += s.undelivered_bodies;
    total.consents += s.consents;
    total.consent_events += s.consent_events;
    total.audit_records += s.audit_records;
    if s.audit_records > 0 {
        if total.audit_from == 0 {
            total.audit_from = s.audit_from;
        }
        total.audit_to = s.audit_to;
    }
}

fn unreadable(what: &'static str) -> impl Fn(serde_json::Error) -> PurgeError {
    move |e| PurgeError::Unreadable {
        what,
        detail: e.to_string(),
    }
}

fn sent_due(msg: &SentMessage, rules: &Retention, now: DateTime<Utc>) -> Option<bool> {
    if msg.body_purged.is_some() {
        return None;
    }
    let (period, delivered) = match msg.status {
        Status::Delivered => (rules.delivered_body, true),
        Status::Refused | Status::Expired | Status::Withheld => (rules.undelivered_body, false),
        Status::Queued => return None,
    };
    (msg.updated_at + period <= now).then_some(delivered)
}

fn received_due(
    msg: &crate::inbox::ReceivedMessage,
    rules: &Retention,
    now: DateTime<Utc>,
) -> bool {
    msg.body_purged.is_none()
        && msg
            .acknowledged_at
            .is_some_and(|at| at + rules.acknowledged_body <= now)
}

/// The last day a consent was in force: the first of its end, its withdrawal, and the
/// day its holder reported it expired.
pub fn consent_end(state: &crate::consent::ConsentState) -> NaiveDate {
    let mut end = state.valid_until;
    if let Some(w) = &state.withdrawn {
        end = end.min(w.at.date_naive());
    }
    if let Some(at) = state.expired_by_peer {
        end = end.min(at.date_naive());
    }
    end
}

fn find_due(
    store: &Store,
    rules: &Retention,
    now: DateTime<Utc>,
    today: NaiveDate,
    pseudonymiser: &Pseudonymiser,
) -> Result<Due, PurgeError> {
    let mut due = Due::default();
    for entry in store.tree(T::Sent).iter() {
        let (k, v) = entry.map_err(StoreError::from)?;
        let plain = store.open_value(T::Sent, &k, &v)?;
        let msg: SentMessage =
            serde_json::from_slice(&plain).map_err(unreadable("sent message"))?;
        if let Some(delivered) = sent_due(&msg, rules, now) {
            due.sent.push((msg.id, delivered));
        }
    }
    for entry in store.tree(T::Received).iter() {
        let (k, v) = entry.map_err(StoreError::from)?;
        let msg = crate::inbox::decode(&store.open_value(T::Received, &k, &v)?)?;
        if received_due(&msg, rules, now) {
            due.received.push(k.to_vec());
        }
    }
    for id in registry::all_ids(store)? {
        let Some(state) = registry::state(store, &id)? else {
            continue;
        };
        if consent_end(&state) + rules.consent_after_end < today {
            let pseudonym = pseudonymiser.pseudonym(&state.subject);
            due.consents.push((id, pseudonym));
        }
    }
    Ok(due)
}

/// The audit records due: `(from, to)` spans ending at signed checkpoints, every record
/// of which is older than `cutoff`, each at most [`AUDIT_RECORDS_PER_COMMIT`] long
/// unless one checkpoint span alone is longer.
fn audit_spans(store: &Store, cutoff: DateTime<Utc>) -> Result<Vec<(u64, u64)>, PurgeError> {
    let Some((first, _)) = store.tree(T::Audit).first().map_err(StoreError::from)? else {
        return Ok(Vec::new());
    };
    let mut from = seq_of(&first)?;
    let mut ends = Vec::new();
    for entry in store.tree(T::Checkpoints).range(be(from).to_vec()..) {
        let (k, v) = entry.map_err(StoreError::from)?;
        let cp: Checkpoint = serde_json::from_slice(&v).map_err(unreadable("checkpoint"))?;
        let Some(rec) = store.tree(T::Audit).get(k).map_err(StoreError::from)? else {
            break;
        };
        let rec: AuditRecord = serde_json::from_slice(&rec).map_err(unreadable("audit record"))?;
        if rec.time >= cutoff || rec.hash != cp.hash {
            break;
        }
        ends.push(cp.seq);
    }
    let mut spans = Vec::new();
    let mut last_end = None;
    for end in ends {
        if end - from + 1 > AUDIT_RECORDS_PER_COMMIT {
            if let Some(e) = last_end.take() {
                spans.push((from, e));
                from = e + 1;
            }
        }
        last_end = Some(end);
    }
    if let Some(e) = last_end {
        spans.push((from, e));
    }
    Ok(spans)
}

fn seq_of(k: &[u8]) -> Result<u64, PurgeError> {
    k.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| PurgeError::Store(StoreError::Corrupt("an audit key is not a u64".into())))
}

/// What the index entries of the removed records are found by.
#[derive(Default)]
struct Indexed {
    subjects: BTreeSet<String>,
    messages: BTreeSet<String>,
    millis: BTreeSet<u64>,
}

/// Commits one purge: the contents due (checked again) and one audit span.
async fn commit_purge(
    store: &Store,
    due: Due,
    span: Option<(u64, u64)>,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<PurgeSummary, PurgeError> {
    let mut indexed = Indexed::default();
    if let Some((from, to)) = span {
        for entry in store
            .tree(T::Audit)
            .range(be(from).to_vec()..=be(to).to_vec())
        {
            let (_, v) = entry.map_err(StoreError::from)?;
            let rec: AuditRecord =
                serde_json::from_slice(&v).map_err(unreadable("audit record"))?;
            if let Some(s) = rec.event.subject {
                indexed.subjects.insert(s);
            }
            if let Some(m) = rec.event.message_id {
                indexed.messages.insert(m);
            }
            indexed
                .millis
                .insert(u64::try_from(rec.time.timestamp_millis()).unwrap_or(0));
        }
    }
    let actor = actor.clone();
    store
        .commit(move |tx| {
            let mut summary = PurgeSummary::default();
            remove_contents(tx, &due, now, &mut summary)?;
            if let Some((from, to)) = span {
                remove_audit(tx, from, to, &indexed)?;
                summary.audit_records = to - from + 1;
                summary.audit_from = from;
                summary.audit_to = to;
            }
            let mut event = AuditEvent::new(Event::RecordsPurged, Outcome::Success, actor)
                .reason("retention purge");
            event.purged = Some(summary.clone());
            tx.audit(event);
            Ok::<PurgeSummary, PurgeError>(summary)
        })
        .await
}

fn remove_contents(
    tx: &mut Tx<'_>,
    due: &Due,
    now: DateTime<Utc>,
    summary: &mut PurgeSummary,
) -> Result<(), PurgeError> {
    for (id, delivered) in &due.sent {
        let Some(msg) = crate::outbox::load(tx, id)? else {
            continue;
        };
        if msg.body_purged.is_some() || msg.status == Status::Queued {
            continue;
        }
        crate::outbox::purge_body(tx, msg, now)?;
        if *delivered {
            summary.delivered_bodies += 1;
        } else {
            summary.undelivered_bodies += 1;
        }
    }
    for k in &due.received {
        let Some(bytes) = tx.get(T::Received, k)? else {
            continue;
        };
        let msg = crate::inbox::decode_in(tx, &bytes)?;
        if msg.body_purged.is_some() || msg.acknowledged_at.is_none() {
            continue;
        }
        crate::inbox::purge_body(tx, msg, now)?;
        summary.acknowledged_bodies += 1;
    }
    for (id, pseudonym) in &due.consents {
        let events = registry::remove(tx, id, pseudonym)?;
        if events > 0 {
            summary.consents += 1;
            summary.consent_events += events as u64;
        }
    }
    Ok(())
}

/// Removes records `from..=to`, their index entries and the checkpoints before `to`
/// (the one at `to` stays: it pins the chain).
fn remove_audit(tx: &mut Tx<'_>, from: u64, to: u64, indexed: &Indexed) -> Result<(), PurgeError> {
    for seq in from..=to {
        tx.remove(T::Audit, be(seq).to_vec());
    }
    for (k, _) in tx.scan_prefix(T::Checkpoints, b"")? {
        if seq_of(&k)? < to {
            tx.remove(T::Checkpoints, k);
        }
    }
    for s in &indexed.subjects {
        trim_runs(tx, T::AuditBySubject, s.as_bytes(), to)?;
    }
    for m in &indexed.messages {
        trim_runs(tx, T::AuditByMessage, &key(&[m.as_bytes(), b""]), to)?;
    }
    for ms in &indexed.millis {
        trim_runs(tx, T::AuditByTime, &be(*ms), to)?;
    }
    Ok(())
}

/// Takes the sequence numbers up to `to` out of the index runs under `prefix`: a run
/// entirely removed goes, a run that straddles `to` is keyed anew by its first kept one.
fn trim_runs(tx: &mut Tx<'_>, tree: T, prefix: &[u8], to: u64) -> Result<(), PurgeError> {
    for (k, v) in tx.scan_prefix(tree, prefix)? {
        if k.len() != prefix.len() + 8 {
            continue; // another subject or message whose name extends this one
        }
        let key_seq = seq_of(&k[prefix.len()..])?;
        let Some(seqs) = index_run(key_seq, &v) else {
            return Err(StoreError::Corrupt(format!("an index run in {}", tree.name())).into());
        };
        if seqs.iter().all(|s| *s > to) {
            continue;
        }
        tx.remove(tree, k.clone());
        let kept: Vec<u64> = seqs.into_iter().filter(|s| *s > to).collect();
        if let Some(first) = kept.first() {
            tx.insert(tree, [prefix, &be(*first)].concat(), run_value(&kept));
        }
    }
    Ok(())
}

/// How often a running gateway looks whether a new day began (by its clock).
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The running gateway's purge: an hour after start, then once a day (at the first
/// hourly look in a new local day, by the gateway's clock), until `stop` turns true. Not
/// at start itself: a gateway restarted in a loop would purge each time, and the
/// start-up stays as quick as before. A failed purge is logged and tried again at the
/// next look; nothing it would remove is lost by waiting.
pub async fn run_daily(
    store: Store,
    rules: Retention,
    clock: crate::clock::Clock,
    pseudonymiser: Pseudonymiser,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut done_on: Option<NaiveDate> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let today = clock.today();
        if done_on != Some(today) {
            match purge(
                &store,
                &rules,
                clock.now(),
                today,
                &pseudonymiser,
                Actor::Gateway,
            )
            .await
            {
                Ok(s) => {
                    done_on = Some(today);
                    tracing::info!(
                        delivered_bodies = s.delivered_bodies,
                        acknowledged_bodies = s.acknowledged_bodies,
                        undelivered_bodies = s.undelivered_bodies,
                        consents = s.consents,
                        audit_records = s.audit_records,
                        "retention purge done"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "retention purge failed; trying again in an hour")
                }
            }
        }
    }
}
