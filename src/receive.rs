//! The receive path, in its documented order: the peer is known by its certificate, the
//! signature over the exact bytes verifies against that certificate, the envelope parses
//! and validates, `from` is the certificate's organisation, the message is addressed to
//! us and of a type this peer may send. Then it is stored once in the inbox and answered
//! with a signed receipt. Every refusal is answered with its reason and audited.
//!
//! [`ReceivePath`] holds what these checks need: who this gateway is ([`Local`]), its
//! peers and what each may send, the minimiser (the receive-side policy check), the
//! pseudonymiser and the store. The listener (`crate::server::listener`) hands it a
//! [`Caller`] and the batch; it knows nothing of HTTP, and never sees the API token, the
//! outbox or the relays.

use std::sync::Arc;

use crate::caller::Caller;
use crate::chain::{Actor, AuditEvent, Event, Outcome};
use crate::config::{Peer, Peers};
use crate::consent::{
    self, registry, ConsentEvent, ConsentRefusal, ConsentStatus, ConsentSummary, Exchange,
};
use crate::envelope_batch::{BatchSignature, EnvelopeProof, EnvelopeProofError};
use crate::error::{Code, Refusal};
use crate::identity::OrgId;
use crate::inbox::{self, ReceivedMessage};
use crate::live::Live;
use crate::local::Local;
use crate::merkle::BatchProof;
use crate::message::{self, Envelope, MessageType};
use crate::minimise::Minimiser;
use crate::pseudonym::Pseudonymiser;
use crate::receipt::Receipt;
use crate::signing::SigningError;
use crate::store::{Store, StoreError, Tx};

/// One relayed message as it arrived: its path under the batch signature (or, from a
/// sender before batch signatures, its own signature) and the exact envelope bytes.
pub struct Relayed {
    pub batch: Option<BatchProof>,
    pub signature: Option<String>,
    pub envelope: Vec<u8>,
}

/// A batch's signature as checked once for all its messages.
type BatchCheck = Option<Result<BatchSignature, Refusal>>;

/// A message's signature as kept: the signature and, under a batch signature, its path.
type Signed = (String, Option<EnvelopeProof>);

/// The receive path: what checking and storing a relayed batch needs.
#[derive(Clone)]
pub struct ReceivePath {
    local: Arc<Local>,
    peers: Live<Peers>,
    store: Store,
    minimiser: Live<Minimiser>,
    pseudonymiser: Pseudonymiser,
}

/// A message that passed every check, on its way into the batch's commit.
struct Checked {
    envelope: Envelope,
    /// The exact bytes received: what the receipt's hash covers and the inbox keeps.
    bytes: Vec<u8>,
    signature: String,
    /// Its path under the batch signature, kept with it.
    batch: Option<EnvelopeProof>,
    hash: String,
    effect: ConsentEffect,
}

type CheckResult = Result<Box<Checked>, Box<(Refusal, AuditEvent)>>;

impl ReceivePath {
    pub fn new(
        local: Arc<Local>,
        peers: Live<Peers>,
        store: Store,
        minimiser: Live<Minimiser>,
        pseudonymiser: Pseudonymiser,
    ) -> ReceivePath {
        ReceivePath {
            local,
            peers,
            store,
            minimiser,
            pseudonymiser,
        }
    }

    /// Whether the caller's certificate names a configured peer: the listener asks this
    /// before it reads a batch.
    pub fn knows(&self, caller: &Caller) -> bool {
        caller
            .organisation()
            .is_some_and(|org| self.peers.current().by_identity(org).is_some())
    }

    /// Runs the receive path for a batch (`POST /v1/relay/batch`): the batch signature is
    /// checked once, then every message on its own (its path to the signed root, or its
    /// own signature from an older sender; the checks spread over the cores), then all
    /// of them are committed together — stored messages with their receipts, refusals
    /// with their audit records — and each gets its own answer, in order.
    pub async fn receive_batch(
        &self,
        caller: &Caller,
        batch_signature: Option<BatchSignature>,
        items: Vec<Relayed>,
    ) -> Result<Vec<Result<Receipt, Refusal>>, Refusal> {
        let batch: Arc<BatchCheck> =
            Arc::new(batch_signature.map(|b| self.check_batch_signature(caller, b)));
        let checked = {
            let path = self.clone();
            let caller = Arc::new(caller.clone());
            crate::cpu::map_batch(items, move |item| path.check_item(&caller, &batch, item))
                .await
                .map_err(|e| Refusal::internal(format!("checking the batch failed: {e}")))?
        };
        let actor = caller.actor();
        // The certificates that may have signed the batch's messages, and the
        // intermediates presented with them: kept with what they signed.
        let mut sender_certs = caller.signing_keys();
        for c in &caller.intermediates {
            if !sender_certs.contains(c) {
                sender_certs.push(c.clone());
            }
        }
        let sender_certs: Arc<[Vec<u8>]> = sender_certs.into();
        let by = Arc::new(StoreAs {
            local: self.local.clone(),
            pseudonymiser: self.pseudonymiser.clone(),
        });
        // The receipts are signed off the single committer (an RSA-4096 signature costs
        // ~5 ms, which would stall every writer), for the messages a read pass finds new.
        // The commit decides again; if it finds another set (a resend racing its
        // original), it writes nothing and names the set, which is signed for, again
        // off the committer, and committed anew.
        let mut new = self.new_in(&checked)?;
        let checked = Arc::new(std::sync::Mutex::new(Some(checked)));
        for _ in 0..RECEIPT_ROUNDS {
            let receipts = self.sign_receipts(&new, &actor).await?;
            let presigned = Presigned {
                stored: new.clone(),
                receipts,
            };
            let (checked, actor, sender_certs, by) = (
                checked.clone(),
                actor.clone(),
                sender_certs.clone(),
                by.clone(),
            );
            let outcome = self
                .store
                .commit(move |tx| {
                    let mut slot = checked.lock().map_err(|_| {
                        BatchCommitError::Refused(Refusal::internal("the batch's checks were lost"))
                    })?;
                    let items = slot.take().ok_or_else(|| {
                        BatchCommitError::Refused(Refusal::internal(
                            "the batch was committed twice",
                        ))
                    })?;
                    store_batch(tx, items, &actor, &sender_certs, &by, presigned).map_err(
                        |(e, items)| {
                            *slot = items;
                            e
                        },
                    )
                })
                .await;
            match outcome {
                Ok(results) => {
                    for r in results.iter().flatten() {
                        tracing::info!(message_id = %r.message_id, "message received");
                    }
                    return Ok(results);
                }
                Err(BatchCommitError::NewSetChanged(now_new)) => {
                    tracing::info!("a batch's new messages changed before its commit; signing its receipts again");
                    new = now_new;
                }
                Err(BatchCommitError::Refused(r)) => return Err(r),
            }
        }
        Err(Refusal::new(
            Code::StoreUnavailable,
            "the batch's messages were stored by other batches while it was committed; nothing of it was accepted: send it again",
        ))
    }

    /// Checks the batch signature once for all the batch's messages: it must be the
    /// caller's, addressed to this gateway, and verify against the caller's certificate.
    fn check_batch_signature(
        &self,
        caller: &Caller,
        b: BatchSignature,
    ) -> Result<BatchSignature, Refusal> {
        if let Some(org) = caller.organisation() {
            if b.from != org.as_str() {
                return Err(Refusal::new(
                    Code::BadSignature,
                    format!(
                        "the batch signature says it is from {} but the certificate is of {org}",
                        b.from
                    ),
                ));
            }
        }
        if b.to != self.local.identity.as_str() {
            return Err(Refusal::new(
                Code::WrongRecipient,
                format!(
                    "the batch signature is addressed to {}, not to this gateway",
                    b.to
                ),
            ));
        }
        // The TLS certificate, or the signing certificate the signature names (see
        // crate::caller).
        let signed_by = crate::caller::certificate_for(&caller.cert, &caller.signing, &b.signature)
            .map_err(|why| Refusal::new(Code::BadSignature, why))?;
        b.verify(signed_by).map_err(|e| match e {
            EnvelopeProofError::RootNotHex
            | EnvelopeProofError::Signature(
                SigningError::BadEncoding | SigningError::UnknownAlgorithm(_),
            ) => Refusal::new(
                Code::SignatureNotHex,
                format!("the batch signature is not usable: {e}"),
            ),
            EnvelopeProofError::Signature(
                e @ (SigningError::AlgorithmMismatch { .. } | SigningError::UnsupportedKey(_)),
            ) => Refusal::new(Code::BadSignature, format!("the batch signature: {e}")),
            _ => Refusal::new(
                Code::BadSignature,
                "the batch signature does not verify against the sender's certificate",
            ),
        })?;
        Ok(b)
    }

    /// The (id, hash) of the messages of `checked` that the committed store does not
    /// hold yet, in order: the read pass before the commit.
    fn new_in(&self, checked: &[CheckResult]) -> Result<Vec<(String, String)>, Refusal> {
        let mut new: Vec<(OrgId, String, String)> = Vec::new();
        for c in checked.iter().flatten() {
            let (from, id) = (&c.envelope.from, &c.envelope.id);
            if new.iter().any(|(f, i, _)| f == from && i == id)
                || inbox::get(&self.store, from, id)?.is_some()
            {
                continue;
            }
            new.push((from.clone(), id.clone(), c.hash.clone()));
        }
        Ok(new.into_iter().map(|(_, id, h)| (id, h)).collect())
    }

    /// Receipts for `new` (id, hash), signed once over their root on the blocking pool.
    async fn sign_receipts(
        &self,
        new: &[(String, String)],
        actor: &Actor,
    ) -> Result<Vec<Receipt>, Refusal> {
        let stored = new.to_vec();
        let local = self.local.clone();
        let sender = actor_org(actor);
        tokio::task::spawn_blocking(move || {
            let hashed: Vec<(&str, String)> = stored
                .iter()
                .map(|(id, h)| (id.as_str(), h.clone()))
                .collect();
            Receipt::issue_batch_hashed(
                sender.as_deref(),
                &hashed,
                local.identity.as_str(),
                &local.signer,
            )
        })
        .await
        .map_err(|e| Refusal::internal(format!("signing the receipts: {e}")))?
        .map_err(|e| Refusal::new(Code::SigningFailed, e.to_string()))
    }

    /// Checks one relayed message; a refusal comes with its audit record.
    fn check_item(&self, caller: &Caller, batch: &BatchCheck, item: Relayed) -> CheckResult {
        let mut about: Option<(String, MessageType)> = None;
        match self.check(caller, batch, &item, &mut about) {
            Ok((envelope, effect, (signature, batch))) => Ok(Box::new(Checked {
                envelope,
                hash: crate::receipt::sha256_hex(&item.envelope),
                bytes: item.envelope,
                signature,
                batch,
                effect,
            })),
            Err(refusal) => {
                let event = self.refusal_event(caller, &refusal, about.as_ref());
                tracing::warn!(code = %refusal.code, remote = %caller.remote, "relayed message refused");
                Err(Box::new((refusal, event)))
            }
        }
    }

    fn refusal_event(
        &self,
        caller: &Caller,
        refusal: &Refusal,
        about: Option<&(String, MessageType)>,
    ) -> AuditEvent {
        let event = if refusal.code == Code::UnknownPeer {
            Event::CertificateRefused
        } else {
            Event::MessageRefused
        };
        let mut audit = self
            .local
            .event(event, Outcome::Refused, caller.actor())
            .reason(refusal.reason());
        if let Some((id, t)) = about {
            audit = audit.message(id, *t);
        }
        if let Some(org) = caller.organisation() {
            audit = audit.peer(org);
        }
        audit
    }

    /// The message's signature, as it will be kept: the batch signature (checked once,
    /// before) and the message's path under it, or (from a sender before batch
    /// signatures) its own signature, checked here against the sender's certificate.
    fn check_signature(
        &self,
        caller: &Caller,
        batch: &BatchCheck,
        item: &Relayed,
    ) -> Result<Signed, Refusal> {
        match (&item.batch, batch) {
            (Some(proof), Some(Ok(signed))) => {
                signed
                    .check_member(&item.envelope, proof)
                    .map_err(|e| Refusal::new(Code::BatchPathInvalid, e.to_string()))?;
                Ok((
                    signed.signature.clone(),
                    Some(signed.proof_for(proof.clone())),
                ))
            }
            (Some(_), Some(Err(refusal))) => Err(refusal.clone()),
            (Some(_), None) => Err(Refusal::new(
                Code::MissingSignature,
                "the message carries a batch path but its batch carries no batch signature",
            )),
            (None, _) => {
                let own = item.signature.as_deref().ok_or_else(|| {
                    Refusal::new(
                        Code::MissingSignature,
                        "the message carries no signature (neither a path under a batch signature nor its own)",
                    )
                })?;
                // The TLS certificate, or the signing certificate the signature names
                // (see crate::caller).
                let signed_by = crate::caller::certificate_for(&caller.cert, &caller.signing, own)
                    .map_err(|why| Refusal::new(Code::BadSignature, why))?;
                crate::signing::verify(signed_by, &item.envelope, own).map_err(|e| match e {
                    SigningError::BadEncoding | SigningError::UnknownAlgorithm(_) => Refusal::new(
                        Code::SignatureNotHex,
                        format!("the signature is not usable: {e}"),
                    ),
                    SigningError::AlgorithmMismatch { .. } | SigningError::UnsupportedKey(_) => {
                        Refusal::new(Code::BadSignature, e.to_string())
                    }
                    _ => Refusal::new(
                        Code::BadSignature,
                        "the envelope's signature does not verify against the sender's certificate",
                    ),
                })?;
                Ok((own.to_string(), None))
            }
        }
    }

    fn check(
        &self,
        caller: &Caller,
        batch: &BatchCheck,
        item: &Relayed,
        about: &mut Option<(String, MessageType)>,
    ) -> Result<(Envelope, ConsentEffect, Signed), Refusal> {
        let body = item.envelope.as_slice();
        let identity = caller.identity.as_ref().map_err(|e| {
            Refusal::new(
                Code::UnknownPeer,
                format!("the client certificate names no organisation: {e}"),
            )
        })?;
        let peers = self.peers.current();
        let peer = peers
            .by_identity(&identity.organisation_id)
            .ok_or_else(|| {
                Refusal::new(
                    Code::UnknownPeer,
                    format!(
                        "organisation {} is not a configured peer of this gateway",
                        identity.organisation_id
                    ),
                )
            })?;
        // Every message of a batch is held to the limit a single message has.
        if body.len() > message::MAX_MESSAGE_BYTES {
            return Err(Refusal::too_large(message::MAX_MESSAGE_BYTES));
        }
        let signed = self.check_signature(caller, batch, item)?;
        let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
            Refusal::malformed(format!(
                "the envelope is not valid: {}",
                crate::error::describe_json_error(&e)
            ))
        })?;
        *about = Some((envelope.id.clone(), envelope.message_type));
        if envelope.from != identity.organisation_id {
            return Err(Refusal::new(
                Code::FromMismatch,
                format!(
                    "the envelope says it is from {} but the certificate is of {}",
                    envelope.from, identity.organisation_id
                ),
            )
            .field("from"));
        }
        if envelope.to != self.local.identity {
            return Err(Refusal::new(
                Code::WrongRecipient,
                format!(
                    "the envelope is addressed to {}, not to this gateway",
                    envelope.to
                ),
            )
            .field("to"));
        }
        if !peer.may_send.contains(&envelope.message_type) {
            return Err(Refusal::new(
                Code::TypeNotAllowed,
                format!(
                    "peer {} may not send {} messages to this gateway",
                    peer.name, envelope.message_type
                ),
            )
            .field("type"));
        }
        message::validate(&envelope).map_err(Refusal::invalid)?;
        let minimiser = self.minimiser.current();
        minimiser
            .check_consent(envelope.message_type, envelope.consent.as_ref())
            .map_err(Refusal::from)?;
        minimiser
            .check(envelope.message_type, &envelope.content())
            .map_err(Refusal::from)?;
        message::check_anonymous(&envelope)
            .map_err(|e| Refusal::new(Code::PolicyViolation, e.to_string()).field(e.field))?;
        let effect = self.consent_effect(peer, &envelope)?;
        Ok((envelope, effect, signed))
    }

    /// Checks a received message against consent — a withdrawn consent stops the flow in
    /// both directions — and says what it changes in the registry.
    fn consent_effect(&self, peer: &Peer, envelope: &Envelope) -> Result<ConsentEffect, Refusal> {
        let t = envelope.message_type;
        if !consent::needs_consent(t) {
            return Ok(ConsentEffect::None);
        }
        let bsn = envelope.bsn().ok_or_else(|| {
            Refusal::new(Code::InvalidField, "subject.bsn: is required").field("subject.bsn")
        })?;
        let consent = envelope.consent.clone().ok_or_else(|| {
            Refusal::new(
                Code::ConsentMissing,
                format!("a {t} must travel under a consent"),
            )
            .field("consent")
        })?;
        let exchange = Exchange {
            role: self.local.role,
            own: &self.local.identity,
            peer: &peer.identity,
            bsn: &bsn,
            message_type: t,
            today: self.local.clock.today(),
        };
        match t {
            MessageType::Referral => {
                let summary: ConsentSummary = serde_json::from_value(consent).map_err(|e| {
                    Refusal::new(
                        Code::ConsentInvalid,
                        format!(
                            "the consent summary is not valid: {}",
                            crate::error::describe_json_error(&e)
                        ),
                    )
                    .field("consent")
                })?;
                summary.validate()?;
                let mirrored = ConsentEvent::Mirrored {
                    summary: summary.clone(),
                    from_peer: peer.identity.to_string(),
                    at: self.local.clock.now(),
                };
                let state = registry::state_with(&self.store, &summary.id, &mirrored)?;
                consent::covers(state.as_ref(), &exchange)?;
                match summary.status {
                    ConsentStatus::Active => {}
                    ConsentStatus::Withdrawn => return Err(ConsentRefusal::Withdrawn.into()),
                    ConsentStatus::Expired => return Err(ConsentRefusal::Expired.into()),
                    ConsentStatus::NotYetValid => return Err(ConsentRefusal::NotYetValid.into()),
                }
                Ok(ConsentEffect::Mirror(summary))
            }
            MessageType::ConsentUpdate => {
                let consent_id = envelope
                    .consent_id()
                    .ok_or_else(|| {
                        Refusal::new(Code::ConsentMissing, "the consent update names no consent")
                            .field("consent.id")
                    })?
                    .to_string();
                if envelope.body.get("consent_id").and_then(|v| v.as_str())
                    != Some(consent_id.as_str())
                {
                    return Err(Refusal::new(
                        Code::ConsentMismatch,
                        "body.consent_id differs from the envelope's consent",
                    )
                    .field("body.consent_id"));
                }
                let status: ConsentStatus = envelope
                    .body
                    .get("status")
                    .cloned()
                    .and_then(|v| serde_json::from_value(v).ok())
                    .ok_or_else(|| {
                        Refusal::new(Code::InvalidField, "body.status: not a consent status")
                            .field("body.status")
                    })?;
                if let Some(state) = registry::state(&self.store, &consent_id)? {
                    consent::covers(Some(&state), &exchange)?;
                }
                Ok(ConsentEffect::Update { consent_id, status })
            }
            _ => {
                let consent_id = envelope.consent_id().ok_or_else(|| {
                    Refusal::new(Code::ConsentMissing, format!("a {t} must name its consent"))
                        .field("consent.id")
                })?;
                let state = registry::state(&self.store, consent_id)?;
                consent::covers(state.as_ref(), &exchange)?;
                Ok(ConsentEffect::None)
            }
        }
    }
}

/// What a received message does to the consent registry.
enum ConsentEffect {
    None,
    /// A referral's consent summary, to mirror at the wijkteam.
    Mirror(ConsentSummary),
    /// A consent update from the practice.
    Update {
        consent_id: String,
        status: ConsentStatus,
    },
}

/// Receipts signed before the commit, for these (id, hash) in this order.
struct Presigned {
    stored: Vec<(String, String)>,
    receipts: Vec<Receipt>,
}

/// Who stores a batch: this gateway (its identity, signing key and clock) and its
/// pseudonyms.
struct StoreAs {
    local: Arc<Local>,
    pseudonymiser: Pseudonymiser,
}

/// How many times a batch's receipts are signed before it is given up (each round signs
/// for the new messages the last commit found; only batches racing each other for the
/// same messages need a second).
const RECEIPT_ROUNDS: usize = 4;

/// Why a batch's commit stored nothing.
enum BatchCommitError {
    Refused(Refusal),
    /// The commit found these (id, hash) new, not the ones the receipts were signed for.
    NewSetChanged(Vec<(String, String)>),
}

impl From<StoreError> for BatchCommitError {
    fn from(e: StoreError) -> BatchCommitError {
        BatchCommitError::Refused(Refusal::from(e))
    }
}

/// What the commit decided for one message of a batch.
enum Decision {
    Refused,
    /// Stored by an earlier commit: answered with its first receipt.
    StoredBefore(Box<Receipt>),
    /// Stored by this commit (this item, or the same message earlier in the batch):
    /// answered with the receipt at this place among the batch's new receipts.
    Stored(usize),
    /// New to this commit: stored, and answered with the receipt at this place.
    New(usize),
    /// Its id was used before for other content.
    Duplicate,
}

type StoreBatchError = (BatchCommitError, Option<Vec<CheckResult>>);

/// Stores a checked batch inside its commit. A message stored before is answered with
/// its first receipt; an id reused for other content is refused. The decisions are
/// made first, without writing; the receipts were signed before the commit for the
/// messages a read pass found new, and are used only if this commit finds exactly
/// those new — so the signed batch covers exactly what this commit stores, and no
/// receipt (or Merkle path) can be made for a message that was refused. If it finds
/// another set, it writes nothing and hands the batch back with that set, to be signed
/// for off the committer: no signature is ever made here.
fn store_batch(
    tx: &mut Tx<'_>,
    checked: Vec<CheckResult>,
    actor: &Actor,
    sender_certs: &[Vec<u8>],
    by: &StoreAs,
    presigned: Presigned,
) -> Result<Vec<Result<Receipt, Refusal>>, StoreBatchError> {
    let mut decisions = Vec::with_capacity(checked.len());
    let mut new: Vec<(&OrgId, &str, &str)> = Vec::new();
    for item in &checked {
        let Ok(c) = item else {
            decisions.push(Decision::Refused);
            continue;
        };
        let (from, id, hash) = (&c.envelope.from, c.envelope.id.as_str(), c.hash.as_str());
        let earlier = new.iter().position(|(f, i, _)| *i == id && *f == from);
        let existing = inbox::load(tx, from, id).map_err(|e| (e.into(), None))?;
        decisions.push(match (earlier, existing) {
            (Some(i), _) if new[i].2 == hash => Decision::Stored(i),
            (Some(_), _) => Decision::Duplicate,
            (None, Some(existing))
                if existing.from == *from && existing.receipt.stored_hash == hash =>
            {
                Decision::StoredBefore(Box::new(existing.receipt))
            }
            (None, Some(_)) => Decision::Duplicate,
            (None, None) => {
                new.push((from, id, hash));
                Decision::New(new.len() - 1)
            }
        });
    }
    let found: Vec<(String, String)> = new
        .iter()
        .map(|(_, id, h)| (id.to_string(), h.to_string()))
        .collect();
    if found != presigned.stored {
        // Another batch stored one of these in between (a resend racing its original).
        return Err((BatchCommitError::NewSetChanged(found), Some(checked)));
    }
    let receipts = presigned.receipts;
    if !found.is_empty() {
        // The sender's certificate (and its intermediates), so that what it signed can be
        // checked, and chained, after it renews.
        for cert in sender_certs {
            crate::store::keep_certificate(tx, cert).map_err(|e| (e.into(), None))?;
        }
    }
    let mut answers = Vec::with_capacity(decisions.len());
    for (item, decision) in checked.into_iter().zip(decisions) {
        let receipt_at = |i: usize| {
            receipts
                .get(i)
                .cloned()
                .ok_or_else(|| Refusal::internal("a receipt is missing"))
        };
        answers.push(match (item, decision) {
            (Err(refused), _) => {
                let (refusal, event) = *refused;
                tx.audit(event);
                Err(refusal)
            }
            (Ok(c), Decision::New(i)) => {
                let receipt = receipt_at(i);
                if let Ok(r) = &receipt {
                    store_new(tx, *c, r.clone(), actor, by).map_err(|e| (e.into(), None))?;
                }
                receipt
            }
            (Ok(_), Decision::Stored(i)) => receipt_at(i),
            (Ok(_), Decision::StoredBefore(receipt)) => Ok(*receipt),
            (Ok(c), Decision::Duplicate | Decision::Refused) => {
                let refusal = Refusal::new(
                    Code::DuplicateId,
                    "a different message with this id was received before",
                )
                .field("id");
                tx.audit(
                    by.local
                        .event(Event::MessageRefused, Outcome::Refused, actor.clone())
                        .message(&c.envelope.id, c.envelope.message_type)
                        .peer(&c.envelope.from)
                        .reason(refusal.reason()),
                );
                Err(refusal)
            }
        });
    }
    Ok(answers)
}

/// The organisation of a peer actor: the sender of every message in its batch.
fn actor_org(actor: &Actor) -> Option<String> {
    match actor {
        Actor::Peer { organisation, .. } => Some(organisation.clone()),
        _ => None,
    }
}

/// Writes one new message, its consent effect and its audit records.
fn store_new(
    tx: &mut Tx<'_>,
    c: Checked,
    receipt: Receipt,
    actor: &Actor,
    by: &StoreAs,
) -> Result<(), StoreError> {
    let Checked {
        envelope,
        bytes,
        signature,
        batch,
        effect,
        ..
    } = c;
    let received = ReceivedMessage {
        subject: envelope.bsn().map(|b| by.pseudonymiser.pseudonym(&b)),
        consent_id: envelope.consent_id().map(str::to_string),
        id: envelope.id,
        message_type: envelope.message_type,
        from: envelope.from,
        envelope: String::from_utf8_lossy(&bytes).into_owned(),
        signature,
        batch,
        received_at: receipt.received_at,
        receipt,
        acknowledged_at: None,
        acknowledged_by: None,
        inbox_key: None,
        body_purged: None,
    };
    if let Some(pseudonym) = &received.subject {
        let consent_event = match effect {
            ConsentEffect::None => None,
            ConsentEffect::Mirror(summary) => {
                let known = registry::state_in(tx, &summary.id)?.is_some();
                (!known).then(|| {
                    (
                        Event::ConsentMirrored,
                        ConsentEvent::Mirrored {
                            summary,
                            from_peer: received.from.to_string(),
                            at: by.local.clock.now(),
                        },
                    )
                })
            }
            ConsentEffect::Update { consent_id, status } => Some((
                Event::ConsentUpdated,
                ConsentEvent::UpdatedFromPeer {
                    consent_id,
                    status,
                    at: by.local.clock.now(),
                    from_peer: received.from.to_string(),
                },
            )),
        };
        if let Some((audit_event, consent_event)) = consent_event {
            registry::append(tx, pseudonym, &consent_event)?;
            tx.audit(
                by.local
                    .event(audit_event, Outcome::Success, actor.clone())
                    .message(&received.id, received.message_type)
                    .subject(received.subject.clone())
                    .peer(&received.from)
                    .consent(Some(consent_event.consent_id())),
            );
        }
    }
    tx.audit(
        by.local
            .event(Event::MessageReceived, Outcome::Success, actor.clone())
            .message(&received.id, received.message_type)
            .subject(received.subject.clone())
            .peer(&received.from)
            .consent(received.consent_id.as_deref()),
    );
    inbox::store(tx, received)
}

#[cfg(test)]
mod tests;
