//! The consent desk: the local API's consent use cases — record a consent, withdraw it
//! (and tell the peer that was sent data under it), list a child's consents. It sits
//! above the send path because a withdrawal queues a `consent_update` through it; what a
//! consent means is [`crate::consent`]'s, where its events are kept is
//! [`crate::consent::registry`]'s.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::chain::{Actor, Event, Outcome};
use crate::config::{PeerName, Role};
use crate::consent::{
    check_withdrawable, registry, withdrawal_event, ConsentEvent, ConsentRecord, ConsentRequest,
    ConsentRules, ConsentState, WgboBasis,
};
use crate::error::{Code, Refusal};
use crate::local::Local;
use crate::message::{Bsn, MessageType};
use crate::pseudonym::Pseudonymiser;
use crate::send::{self, SendPath, Submission};
use crate::store::{Store, StoreError};

#[derive(Clone)]
pub struct ConsentDesk {
    local: Arc<Local>,
    store: Store,
    pseudonymiser: Pseudonymiser,
    send: SendPath,
    rules: ConsentRules,
}

/// A consent just recorded: its id and the last day it covers messages (its
/// `valid_until`, or earlier where its WGBO basis lapses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub consent_id: String,
    pub effective_until: chrono::NaiveDate,
}

impl ConsentDesk {
    pub fn new(
        local: Arc<Local>,
        store: Store,
        pseudonymiser: Pseudonymiser,
        send: SendPath,
        rules: ConsentRules,
    ) -> ConsentDesk {
        ConsentDesk {
            local,
            store,
            pseudonymiser,
            send,
            rules,
        }
    }

    /// `POST /v1/consents`: validates a consent against the WGBO rules and the
    /// configured bounds in time, and records it.
    pub async fn record(&self, user: &str, request: ConsentRequest) -> Result<Recorded, Refusal> {
        if self.local.role != Role::Practice {
            return Err(Refusal::new(
                Code::ConsentRecordedAtPractice,
                "consents are recorded at the practice; the wijkteam keeps mirrors of them",
            ));
        }
        let id = crate::message::new_id("consent");
        let actor = Actor::User {
            id: user.to_string(),
        };
        let clock = &self.local.clock;
        // A refused consent's record still names the child (by pseudonym), so that the
        // child's access report and an audit repository show the refusal too.
        let refused_subject = self.pseudonymiser.pseudonym(&request.child.bsn);
        let record = match ConsentRecord::from_request(
            id.clone(),
            request,
            user.to_string(),
            clock.now(),
            clock.today(),
            &self.rules,
        ) {
            Ok(r) => r,
            Err(e) => {
                let refusal = Refusal::from(e);
                self.store
                    .commit_audit(vec![self
                        .local
                        .event(Event::ConsentRecorded, Outcome::Refused, actor)
                        .subject(Some(refused_subject))
                        .reason(refusal.reason())])
                    .await?;
                return Err(refusal);
            }
        };
        let pseudonym = self.pseudonymiser.pseudonym(&record.child.bsn);
        let effective_until = record.effective_until();
        let mut basis = match &record.basis {
            WgboBasis::ExceptionSeriousHarm { .. } => {
                "WGBO exception for a child of 12-15 alone (serious harm), reason recorded with the consent".to_string()
            }
            other => format!("WGBO basis: {other:?}"),
        };
        if effective_until < record.valid_until {
            // No date: the end follows from the birth date, which the log must not hold.
            basis.push_str(
                "; ends the day before the child's 12th birthday, before valid_until (renew with the child)",
            );
        }
        let event = ConsentEvent::Recorded { record };
        let audit = self
            .local
            .event(Event::ConsentRecorded, Outcome::Success, actor)
            .subject(Some(pseudonym.clone()))
            .consent(Some(event.consent_id()))
            .reason(basis);
        self.store
            .commit(move |tx| {
                registry::append(tx, &pseudonym, &event)?;
                tx.audit(audit);
                Ok::<_, Refusal>(())
            })
            .await?;
        tracing::info!(consent_id = %id, "consent recorded");
        Ok(Recorded {
            consent_id: id,
            effective_until,
        })
    }

    /// `POST /v1/consents/{id}/withdraw`: records the withdrawal and, in the same commit,
    /// queues a `consent_update` for the consent's recipient if the relay ever admitted a
    /// message for it under this consent. Returns the ids of the updates queued.
    ///
    /// A consent names one recipient, so at most one update is prepared (validated,
    /// minimised, signed) outside the commit; none when the recipient is no longer a
    /// configured peer, since nothing can be delivered to it (the withdrawal itself is
    /// recorded all the same, and stops every message still queued under the consent).
    pub async fn withdraw(
        &self,
        user: &str,
        consent_id: &str,
        reason: String,
    ) -> Result<Vec<String>, Refusal> {
        let state = registry::state(&self.store, consent_id)?
            .ok_or_else(|| Refusal::not_found("consent"))?;
        check_withdrawable(&state)?;
        let now = self.local.clock.now();
        let update = match self.send.peers().by_identity(&state.recipient) {
            Some(peer) => Some(
                self.send
                    .prepare(withdrawal_update(&state, &peer.name, consent_id, now))
                    .map_err(|(r, _)| r)?,
            ),
            None => {
                tracing::warn!(consent_id = %consent_id, "the consent's recipient is no longer a configured peer; no consent update is sent");
                None
            }
        };
        let actor = Actor::User {
            id: user.to_string(),
        };
        let pseudonym = self.pseudonymiser.pseudonym(&state.subject);
        let withdrawn = self
            .local
            .event(Event::ConsentWithdrawn, Outcome::Success, actor.clone())
            .subject(Some(pseudonym.clone()))
            .consent(Some(consent_id));
        let id = consent_id.to_string();
        let by = user.to_string();
        let queued = self
            .store
            .commit(move |tx| {
                let current =
                    registry::state_in(tx, &id)?.ok_or_else(|| Refusal::not_found("consent"))?;
                let event = withdrawal_event(&current, by, reason, now)?;
                registry::append(tx, &pseudonym, &event)?;
                tx.audit(withdrawn);
                let told = registry::recipients_in(tx, &id)?;
                let mut queued = Vec::new();
                if let Some(update) = update.filter(|u| told.contains(&u.peer().identity)) {
                    let hash = crate::receipt::sha256_hex(update.id().as_bytes());
                    let peer = update.peer().name.clone();
                    let accepted = send::queue(tx, update, actor, hash)?;
                    queued.push((accepted.id, peer));
                }
                Ok::<_, Refusal>(queued)
            })
            .await?;
        for (_, peer) in &queued {
            self.send.wake(peer);
        }
        tracing::info!(consent_id = %consent_id, updates = queued.len(), "consent withdrawn");
        Ok(queued.into_iter().map(|(id, _)| id).collect())
    }

    /// `POST /v1/consents/query`: the child's consents with their status today, and the
    /// child's pseudonym for the audit record of the read.
    pub fn list_for_child(&self, bsn: &Bsn) -> Result<ChildConsents, StoreError> {
        let pseudonym = self.pseudonymiser.pseudonym(bsn);
        let today = self.local.clock.today();
        let mut out = Vec::new();
        for id in registry::ids_for_subject(&self.store, &pseudonym)? {
            let events = registry::events(&self.store, &id)?;
            if let Some(state) = ConsentState::from_events(&events) {
                out.push(json!({
                    "consent_id": id,
                    "status": state.status_on(today),
                    "types": state.types,
                    "recipient": state.recipient,
                    "valid_from": state.valid_from,
                    "valid_until": state.valid_until,
                    "mirror": state.is_mirror(),
                    "events": events.iter().map(|e| json!({"event": e.kind(), "at": e.at()})).collect::<Vec<_>>(),
                }));
            }
        }
        Ok(ChildConsents {
            pseudonym,
            consents: out,
        })
    }
}

/// A child's consents as the local API shows them.
pub struct ChildConsents {
    /// The child's pseudonym (for the audit record; never shown to the caller).
    pub pseudonym: String,
    pub consents: Vec<Value>,
}

/// The `consent_update` that tells `peer` a consent was withdrawn.
fn withdrawal_update(
    state: &ConsentState,
    peer: &PeerName,
    consent_id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Submission {
    Submission {
        id: None,
        message_type: MessageType::ConsentUpdate,
        to: peer.to_string(),
        consent_id: Some(consent_id.to_string()),
        subject: Some(Map::from_iter([(
            "bsn".to_string(),
            Value::String(state.subject.as_str().to_string()),
        )])),
        body: Map::from_iter([
            ("consent_id".to_string(), json!(consent_id)),
            ("status".to_string(), json!("withdrawn")),
            ("effective_at".to_string(), json!(now)),
            ("scope_types".to_string(), json!(state.types)),
        ]),
    }
}
