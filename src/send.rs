//! The send path, in its documented order: a submission from the local system is
//! parsed, addressed to a configured peer, validated, checked against consent, minimised
//! by the policy, signed, and committed to the outbox. Only after that commit is durable
//! does the caller hear "queued"; every refusal on the way is explained and audited.

use std::sync::Arc;

use chrono::Utc;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::audit::{Actor, AuditEvent, Event, Outcome};
use crate::error::Refusal;
use crate::gateway::Gateway;
use crate::message::{self, Envelope, MessageType, SCHEMA_VERSION};
use crate::outbox::{self, SentMessage, Status};
use crate::receipt::sha256_hex;

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

/// Runs the send path for one submission by local user `user`.
pub async fn submit(gw: &Arc<Gateway>, user: &str, raw: &[u8]) -> Result<Accepted, Refusal> {
    let actor = Actor::User {
        id: user.to_string(),
    };
    match prepare(gw, raw) {
        Ok(prepared) => commit(gw, actor, prepared, sha256_hex(raw)).await,
        Err((refusal, about)) => {
            let mut event = AuditEvent::new(Event::MessageRefused, Outcome::Refused, actor)
                .on_behalf_of(&gw.config.identity)
                .reason(format!("{}: {}", refusal.code, refusal.message));
            if let Some((id, t)) = about {
                event = event.message(&id, t);
            }
            gw.store.commit_audit(vec![event]).await?;
            tracing::info!(code = refusal.code, field = ?refusal.field, "submission refused");
            Err(refusal)
        }
    }
}

/// A submission that passed every check, ready to be queued.
struct Prepared {
    envelope: Envelope,
    bytes: Vec<u8>,
    signature: Vec<u8>,
    peer: crate::config::Peer,
    changed_fields: Vec<String>,
}

type PrepareError = (Refusal, Option<(String, MessageType)>);

fn prepare(gw: &Gateway, raw: &[u8]) -> Result<Prepared, PrepareError> {
    let sub: Submission = serde_json::from_slice(raw).map_err(|e| {
        (
            Refusal::malformed(format!("the submission is not valid: {e}")),
            None,
        )
    })?;
    let id = sub.id.clone().unwrap_or_else(|| message::new_id("msg"));
    let about = Some((id.clone(), sub.message_type));
    let fail = |r: Refusal| (r, about.clone());

    let peer = gw
        .config
        .peer_by_name(&sub.to)
        .or_else(|| gw.config.peer_by_identity(&sub.to))
        .cloned()
        .ok_or_else(|| {
            fail(
                Refusal::new(
                    422,
                    "unknown_peer",
                    format!("no peer {:?} is configured", sub.to),
                )
                .field("to"),
            )
        })?;
    if !gw.config.role.sends().contains(&sub.message_type) {
        return Err(fail(
            Refusal::new(
                422,
                "type_not_sent_here",
                format!(
                    "a {:?} gateway does not send {} messages",
                    gw.config.role, sub.message_type
                ),
            )
            .field("type"),
        ));
    }
    let consent = sub
        .consent_id
        .as_ref()
        .map(|id| serde_json::json!({ "id": id }));
    let envelope = Envelope {
        id,
        message_type: sub.message_type,
        schema_version: SCHEMA_VERSION,
        created_at: Utc::now(),
        from: gw.config.identity.clone(),
        to: peer.identity.clone(),
        consent,
        subject: sub.subject,
        body: sub.body,
    };
    message::validate(&envelope).map_err(|e| fail(Refusal::invalid(e)))?;

    let changed_fields = Vec::new();
    let bytes = envelope.to_bytes();
    if bytes.len() > message::MAX_MESSAGE_BYTES {
        return Err(fail(Refusal::too_large(message::MAX_MESSAGE_BYTES)));
    }
    let signature = gw
        .config
        .signer
        .sign(&bytes)
        .map_err(|e| fail(Refusal::new(500, "signing_failed", e.to_string())))?;
    Ok(Prepared {
        envelope,
        bytes,
        signature,
        peer,
        changed_fields,
    })
}

async fn commit(
    gw: &Arc<Gateway>,
    actor: Actor,
    p: Prepared,
    submitted_hash: String,
) -> Result<Accepted, Refusal> {
    let now = Utc::now();
    let subject = gw.pseudonym(p.envelope.bsn().as_ref());
    let user = match &actor {
        Actor::User { id } => id.clone(),
        _ => String::new(),
    };
    let msg = SentMessage {
        id: p.envelope.id.clone(),
        message_type: p.envelope.message_type,
        peer: p.peer.name.clone(),
        peer_identity: p.peer.identity.clone(),
        envelope: String::from_utf8_lossy(&p.bytes).into_owned(),
        signature: hex::encode(&p.signature),
        status: Status::Queued,
        attempts: 0,
        last_error: None,
        receipt: None,
        submitted_by: user,
        submitted_hash,
        subject,
        consent_id: p.envelope.consent_id().map(str::to_string),
        created_at: now,
        updated_at: now,
        queue_key: None,
    };
    let org = gw.config.identity.clone();
    let changed = p.changed_fields;
    let accepted = gw
        .store
        .commit(move |tx| {
            if let Some(existing) = outbox::load(tx, &msg.id)? {
                if existing.submitted_hash == msg.submitted_hash {
                    return Ok(Accepted {
                        id: existing.id,
                        status: existing.status.as_str(),
                    });
                }
                return Err(Refusal::new(
                    409,
                    "duplicate_id",
                    "a different message with this id was submitted before",
                )
                .field("id"));
            }
            tx.audit(
                msg.audit(Event::MessageAccepted, Outcome::Success, actor.clone())
                    .on_behalf_of(&org),
            );
            if !changed.is_empty() {
                tx.audit(
                    msg.audit(Event::MessageFiltered, Outcome::Success, actor.clone())
                        .on_behalf_of(&org)
                        .changed(changed),
                );
            }
            tx.audit(
                msg.audit(Event::MessageQueued, Outcome::Success, actor)
                    .on_behalf_of(&org),
            );
            let queued = outbox::enqueue(tx, msg)?;
            Ok(Accepted {
                id: queued.id,
                status: Status::Queued.as_str(),
            })
        })
        .await?;
    tracing::info!(
        message_id = %accepted.id,
        message_type = %p.envelope.message_type,
        peer = %p.peer.name,
        "message queued"
    );
    gw.wake_relay(&p.peer.name);
    Ok(accepted)
}
