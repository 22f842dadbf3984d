//! The send path, in its documented order:
//!
//! 1. parse the submission and address it to a configured peer;
//! 2. validate the envelope (BSN elfproef, dates, lengths);
//! 3. check consent: a message with personal data must name a consent that covers its
//!    type, this child and this peer today (referral and feedback), and a referral
//!    carries the consent's summary so that the wijkteam can mirror it;
//! 4. minimise by the policy;
//! 5. commit to the outbox — consent is checked once more inside the commit, so a
//!    withdrawal that lands in between wins.
//!
//! Nothing is signed here: the relay signs each batch it sends, once, over the root of
//! its envelopes' Merkle tree ([`crate::envelope_batch`]), so that an RSA-4096 key
//! (~5 ms a signature) adds nothing to "accepted".
//!
//! Only after that commit is durable does the caller hear "queued"; every refusal on
//! the way is explained and audited.
//!
//! [`SendPath`] holds what these steps need and nothing more: who this gateway is
//! ([`Local`]), the peers it may address, the minimiser, the pseudonymiser, the store
//! and the relays' wakers. It knows nothing of HTTP (the local API calls it) nor of how
//! messages are delivered (the relay reads the outbox it fills); it never sees the API
//! token, the TLS configs or the inbox.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::chain::{Actor, Event, Outcome};
use crate::config::{Peer, PeerName, Peers};
use crate::consent::{self, registry, Exchange};
use crate::error::{Code, Refusal};
use crate::live::Live;
use crate::local::Local;
use crate::message::{self, Bsn, Envelope, MessageType, SCHEMA_VERSION};
use crate::minimise::Minimiser;
use crate::outbox::{self, SentMessage, Status, Wakers};
use crate::pseudonym::Pseudonymiser;
use crate::receipt::sha256_hex;
use crate::store::{Presealed, Store, Tx, T};

/// What the local system submits (`POST /v1/messages`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// Optional: a retried submission with the same id and content is accepted once.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub message_type: MessageType,
    /// The peer's name (or organisation identifier) from the config.
    pub to: String,
    /// The consent the message is sent under (referral, feedback).
    #[serde(default)]
    pub consent_id: Option<String>,
    #[serde(default)]
    pub subject: Option<Map<String, Value>>,
    #[serde(default)]
    pub body: Map<String, Value>,
}

/// The answer to an accepted submission.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Accepted {
    pub id: String,
    pub status: &'static str,
}

/// The send path: everything a submission needs on its way into the outbox.
#[derive(Clone)]
pub struct SendPath {
    local: Arc<Local>,
    peers: Live<Peers>,
    store: Store,
    minimiser: Live<Minimiser>,
    pseudonymiser: Pseudonymiser,
    wakers: Wakers,
}

impl SendPath {
    pub fn new(
        local: Arc<Local>,
        peers: Live<Peers>,
        store: Store,
        minimiser: Live<Minimiser>,
        pseudonymiser: Pseudonymiser,
        wakers: Wakers,
    ) -> SendPath {
        SendPath {
            local,
            peers,
            store,
            minimiser,
            pseudonymiser,
            wakers,
        }
    }

    /// The configured peers, as the last reload left them.
    pub fn peers(&self) -> Arc<Peers> {
        self.peers.current()
    }

    /// Tells the relay for `peer` (by name) that its outbox has work.
    pub fn wake(&self, peer: &PeerName) {
        self.wakers.wake(peer);
    }

    /// Runs the send path for one submission by local user `user`.
    pub async fn submit(&self, user: &str, raw: &[u8]) -> Result<Accepted, Refusal> {
        let actor = Actor::User {
            id: user.to_string(),
        };
        let prepared = serde_json::from_slice::<Submission>(raw)
            .map_err(|e| {
                (
                    Refusal::malformed(format!(
                        "the submission is not valid: {}",
                        crate::error::describe_json_error(&e)
                    )),
                    None,
                )
            })
            .and_then(|sub| self.prepare(sub));
        let prepared = match prepared {
            Ok(p) => p,
            Err((refusal, about)) => return Err(self.audit_refusal(actor, refusal, about).await),
        };
        let submitted_hash = sha256_hex(raw);
        let peer = prepared.peer.name.clone();
        let about = Some((prepared.envelope.id.clone(), prepared.envelope.message_type));
        let queued_actor = actor.clone();
        let result = self
            .store
            .commit(move |tx| queue(tx, prepared, queued_actor, submitted_hash))
            .await;
        match result {
            Ok(accepted) => {
                self.wake(&peer);
                Ok(accepted)
            }
            Err(refusal) if refusal.code.is_gateway_failure() => Err(refusal),
            Err(refusal) => Err(self.audit_refusal(actor, refusal, about).await),
        }
    }

    async fn audit_refusal(
        &self,
        actor: Actor,
        refusal: Refusal,
        about: Option<(String, MessageType)>,
    ) -> Refusal {
        let mut event = self
            .local
            .event(Event::MessageRefused, Outcome::Refused, actor)
            .reason(refusal.reason());
        if let Some((id, t)) = about {
            event = event.message(&id, t);
        }
        if let Err(e) = self.store.commit_audit(vec![event]).await {
            return Refusal::from(e);
        }
        tracing::info!(code = %refusal.code, field = ?refusal.field, "submission refused");
        refusal
    }

    /// Steps 1–4 of the send path; everything but the commit.
    pub fn prepare(&self, sub: Submission) -> Result<Prepared, PrepareError> {
        let local = &self.local;
        let id = sub.id.clone().unwrap_or_else(|| message::new_id("msg"));
        let about = Some((id.clone(), sub.message_type));
        let fail = |r: Refusal| (r, about.clone());

        let peers = self.peers.current();
        let peer = peers
            .by_name(&sub.to)
            .or_else(|| peers.by_identity(&sub.to))
            .cloned()
            .ok_or_else(|| {
                fail(
                    Refusal::new(
                        Code::UnknownRecipient,
                        format!("no peer {:?} is configured", sub.to),
                    )
                    .field("to"),
                )
            })?;
        if !local.role.sends().contains(&sub.message_type) {
            return Err(fail(
                Refusal::new(
                    Code::TypeNotSentHere,
                    format!(
                        "a {:?} gateway does not send {} messages",
                        local.role, sub.message_type
                    ),
                )
                .field("type"),
            ));
        }
        let mut envelope = Envelope {
            id,
            message_type: sub.message_type,
            schema_version: SCHEMA_VERSION,
            created_at: local.clock.now(),
            from: local.identity.clone(),
            to: peer.identity.clone(),
            consent: None,
            subject: sub.subject,
            body: sub.body,
        };
        message::validate(&envelope).map_err(|e| fail(Refusal::invalid(e)))?;
        let bsn = envelope.bsn();

        envelope.consent = self
            .consent_for(&peer, sub.consent_id.as_deref(), &envelope)
            .map_err(fail)?;

        let minimiser = self.minimiser.current();
        minimiser
            .check_consent(envelope.message_type, envelope.consent.as_ref())
            .map_err(|r| fail(r.into()))?;
        let mut content = envelope.take_content();
        let changes = minimiser
            .apply(
                envelope.message_type,
                &mut content,
                envelope.created_at.date_naive(),
            )
            .map_err(|r| fail(r.into()))?;
        envelope.put_content(content);
        // The record and its audit trail name the child only if the child is still
        // named in what leaves: an anonymous consultation, whose subject the policy
        // drops, is filed under no one.
        let subject = envelope.bsn().map(|b| self.pseudonymiser.pseudonym(&b));
        message::validate(&envelope)
        .and_then(|()| message::check_anonymous(&envelope))
        .map_err(|e| {
            fail(Refusal::new(
                Code::PolicyRemovesRequiredField,
                format!("after minimisation the message is no longer valid ({e}); check the minimisation policy"),
            ))
        })?;
        let changed_fields: Vec<String> = changes
            .changed
            .iter()
            .map(|c| format!("{} ({})", c.path, c.action))
            .collect();

        let bytes = envelope.to_bytes();
        if bytes.len() > message::MAX_MESSAGE_BYTES {
            return Err(fail(Refusal::too_large(message::MAX_MESSAGE_BYTES)));
        }
        let sealed_envelope = self
            .store
            .preseal(T::SentEnvelopes, envelope.id.as_bytes(), bytes.clone())
            .map_err(|e| fail(Refusal::from(e)))?;
        Ok(Prepared {
            sealed_envelope,
            subject,
            bsn,
            envelope,
            bytes,
            peer,
            changed_fields,
            local: self.local.clone(),
        })
    }

    /// Step 3: the consent block the envelope carries, after checking that the consent
    /// covers this message. A referral carries the consent's summary (for the wijkteam's
    /// mirror); feedback and consent updates carry the consent id.
    fn consent_for(
        &self,
        peer: &Peer,
        consent_id: Option<&str>,
        envelope: &Envelope,
    ) -> Result<Option<Value>, Refusal> {
        let t = envelope.message_type;
        if !consent::needs_consent(t) {
            return match consent_id {
                None => Ok(None),
                Some(_) => Err(Refusal::new(
                    Code::ConsentNotApplicable,
                    format!("a {t} is anonymous and is not sent under a consent"),
                )
                .field("consent_id")),
            };
        }
        let consent_id = consent_id.ok_or_else(|| {
            Refusal::new(
                Code::ConsentMissing,
                format!("a {t} carries personal data and must name the consent it is sent under"),
            )
            .field("consent_id")
        })?;
        let bsn = envelope.bsn().ok_or_else(|| {
            Refusal::invalid(message::InvalidField {
                field: "subject.bsn".into(),
                reason: "is required".into(),
            })
        })?;
        let today = self.local.clock.today();
        let state = registry::state(&self.store, consent_id)?;
        consent::covers(
            state.as_ref(),
            &Exchange {
                role: self.local.role,
                own: &self.local.identity,
                peer: &peer.identity,
                bsn: &bsn,
                message_type: t,
                today,
            },
        )?;
        match (t, state) {
            (MessageType::Referral, Some(state)) => {
                let summary = state.summary(today);
                Ok(Some(serde_json::to_value(summary).map_err(|e| {
                    Refusal::internal(format!("consent summary: {e}"))
                })?))
            }
            _ => Ok(Some(json!({ "id": consent_id }))),
        }
    }
}

/// A submission that passed every check, ready to be queued.
pub struct Prepared {
    envelope: Envelope,
    bytes: Vec<u8>,
    peer: Peer,
    changed_fields: Vec<String>,
    subject: Option<String>,
    bsn: Option<Bsn>,
    local: Arc<Local>,
    /// The envelope sealed for the outbox here, off the committer thread.
    sealed_envelope: Presealed,
}

impl Prepared {
    pub fn id(&self) -> &str {
        &self.envelope.id
    }
    /// The peer it is for.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

type PrepareError = (Refusal, Option<(String, MessageType)>);

/// Step 5, inside a store job: check consent again against the state this commit sees,
/// recognise a retried submission, audit, and put the message in the outbox.
pub fn queue(
    tx: &mut Tx<'_>,
    p: Prepared,
    actor: Actor,
    submitted_hash: String,
) -> Result<Accepted, Refusal> {
    let consent_id = p.envelope.consent_id().map(str::to_string);
    if let (Some(id), Some(bsn)) = (&consent_id, &p.bsn) {
        let state = registry::state_in(tx, id)?;
        consent::covers(
            state.as_ref(),
            &Exchange {
                role: p.local.role,
                own: &p.local.identity,
                peer: &p.peer.identity,
                bsn,
                message_type: p.envelope.message_type,
                today: p.local.clock.today(),
            },
        )?;
    }
    if let Some(existing) = outbox::load(tx, &p.envelope.id)? {
        if existing.submitted_hash == submitted_hash {
            return Ok(Accepted {
                id: existing.id,
                status: existing.status.as_str(),
            });
        }
        return Err(Refusal::new(
            Code::DuplicateId,
            "a different message with this id was submitted before",
        )
        .field("id"));
    }
    let now = p.local.clock.now();
    let msg = SentMessage {
        id: p.envelope.id.clone(),
        message_type: p.envelope.message_type,
        peer: p.peer.name.clone(),
        peer_identity: p.peer.identity.clone(),
        envelope: String::from_utf8_lossy(&p.bytes).into_owned(),
        signature: None,
        batch: None,
        status: Status::Queued,
        attempts: 0,
        last_error: None,
        receipt: None,
        submitted_by: match &actor {
            Actor::User { id } => id.clone(),
            _ => "gateway".into(),
        },
        submitted_hash,
        subject: p.subject.clone(),
        consent_id: consent_id.clone(),
        created_at: now,
        updated_at: now,
        queue_key: None,
        body_purged: None,
    };
    let org = &p.local.identity;
    tx.audit(
        msg.audit(Event::MessageAccepted, Outcome::Success, actor.clone())
            .on_behalf_of(org),
    );
    if !p.changed_fields.is_empty() {
        tx.audit(
            msg.audit(Event::MessageFiltered, Outcome::Success, actor.clone())
                .on_behalf_of(org)
                .changed(p.changed_fields.clone()),
        );
    }
    tx.audit(
        msg.audit(Event::MessageQueued, Outcome::Success, actor)
            .on_behalf_of(org),
    );
    let queued = outbox::enqueue(tx, msg, p.sealed_envelope)?;
    tracing::info!(
        message_id = %queued.id,
        message_type = %queued.message_type,
        peer = %queued.peer,
        "message queued"
    );
    Ok(Accepted {
        id: queued.id,
        status: Status::Queued.as_str(),
    })
}

#[cfg(test)]
mod tests;
