//! The relay: one task per peer that works through that peer's outbox in order, over
//! one reused (keep-alive) mTLS connection. A message leaves the outbox only in the
//! commit that records its outcome: delivered (with the peer's verified receipt),
//! refused by the peer, withheld, or expired after the configured maximum age. Network
//! and server errors are retried with exponential backoff and jitter; the message keeps
//! its place, so per-peer order holds.
//!
//! Because the outbox is on disk and the peer stores each message id once, a gateway
//! killed at any moment and restarted delivers everything it accepted, exactly once in
//! effect: a message sent but not yet marked delivered is sent again and answered with
//! the first receipt.
//!
//! One batch is in flight at a time, and the next goes out only once the peer has
//! answered the one before, so order holds across batches too. While a batch is with
//! the peer, the next one is read and admitted (with the outcomes of the round before,
//! in one commit), so that the peer's durable commit and this gateway's overlap instead
//! of waiting for each other; that batch is dropped and admitted afresh if a consent
//! committed meanwhile no longer covers one of its messages, or one of them grew too
//! old (`Ahead`).
//!
//! A [`Relay`] owns what delivering to its one peer needs: the peer, the relay
//! settings, the TLS client config, the store, its waker, who this gateway is and the
//! handshake counter. It cannot see the HMAC secret or the API token.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use tokio::sync::Notify;

use crate::chain::{Actor, Event, Outcome as AuditOutcome};
use crate::config::{Peer, PeerName, RelaySettings};
use crate::consent::{self, registry, Exchange};
use crate::envelope_batch::{self, BatchSignature, EnvelopeProof};
use crate::identity::OrgId;
use crate::issuers::Issuers;
use crate::live::Live;
use crate::local::Local;
use crate::merkle::BatchProof;
use crate::message::{Bsn, Envelope};
use crate::outbox::{self, SentMessage, Status};
use crate::receipt::{verify_statement, Receipt};
use crate::revocation::CrlSet;
use crate::stats::Counters;
use crate::store::{Store, T};
use crate::wire::{
    BatchAnswer, BatchItem, BatchRequest, ItemAnswer, BATCH_PATH, MAX_BATCH, MAX_BATCH_BYTES,
};

/// The relay stops adding messages to a batch past this size.
const SEND_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Why a delivery did not happen. Each is recorded as a message's last error and, for a
/// refusal, in its audit record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    #[error("connecting to {addr} timed out")]
    ConnectTimeout { addr: String },
    #[error("cannot connect to {addr}: {detail}")]
    Connect { addr: String, detail: String },
    #[error("{host:?} is not a valid server name: {detail}")]
    ServerName { host: String, detail: String },
    #[error("TLS handshake with {peer} timed out")]
    HandshakeTimeout { peer: PeerName },
    #[error("TLS handshake with {peer} failed: {detail}")]
    Handshake { peer: PeerName, detail: String },
    #[error("{peer} presented no certificate")]
    NoCertificate { peer: PeerName },
    /// rustls checks nothing while no revocation list is held at all (a CA's URL has
    /// brought none yet): the relay refuses such a connection itself.
    #[error(
        "{peer}'s certificate cannot be checked for revocation: no list of its CA is held yet"
    )]
    RevocationUnknown { peer: PeerName },
    #[error("{peer}'s certificate: {source}")]
    Identity {
        peer: PeerName,
        source: crate::identity::IdentityError,
    },
    #[error("the server at {addr} is organisation {found}, not {expected} as configured for peer {peer}")]
    WrongPeer {
        addr: String,
        found: OrgId,
        expected: OrgId,
        peer: PeerName,
    },
    #[error("HTTP with {peer}: {detail}")]
    Http { peer: PeerName, detail: String },
    #[error("{peer} did not answer within {ms} ms")]
    Timeout { peer: PeerName, ms: u128 },
    #[error("{peer} answered the batch with {status}: {explanation}")]
    BatchStatus {
        peer: PeerName,
        status: u16,
        explanation: String,
    },
    #[error("{peer} sent an unreadable answer: {detail}")]
    UnreadableAnswer { peer: PeerName, detail: String },
    #[error("{peer} answered {got} results for {sent} messages")]
    ResultCount {
        peer: PeerName,
        got: usize,
        sent: usize,
    },
    #[error("{peer} gave no answer for {id}")]
    NoAnswer { peer: PeerName, id: String },
    #[error("{peer} sent an invalid receipt: {source}")]
    InvalidReceipt {
        peer: PeerName,
        source: crate::receipt::ReceiptError,
    },
    /// The peer refused the message for good (a 4xx answer other than 408 and 429).
    #[error("refused by {peer} ({status}): {explanation}")]
    Refused {
        peer: PeerName,
        status: u16,
        explanation: String,
    },
    /// The peer could not take the message now (5xx, 408, 429).
    #[error("{peer} answered {status}: {explanation}")]
    NotNow {
        peer: PeerName,
        status: u16,
        explanation: String,
    },
    #[error("the queued envelope {id} cannot be read: {detail}")]
    QueuedEnvelope { id: String, detail: String },
    #[error("no connection")]
    NoConnection,
    #[error("{0}")]
    Local(String),
}

impl From<crate::store::StoreError> for DeliveryError {
    fn from(e: crate::store::StoreError) -> DeliveryError {
        DeliveryError::Local(format!("the store: {e}"))
    }
}

impl DeliveryError {
    /// Whether the message must not be retried: the peer refused it for good.
    fn is_refusal(&self) -> bool {
        matches!(self, DeliveryError::Refused { .. })
    }
}

/// A live connection to the peer, reused for every batch while it works.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    peer_cert: Vec<u8>,
    /// The signing certificates the peer presented after its TLS chain (see
    /// `crate::caller`): its receipts may name one of them.
    signing: Vec<crate::caller::Presented>,
}

/// How the relays authenticate peers: the TLS client config and the revocation lists,
/// both swapped whole by a reload; each new connection takes the current config, and a
/// kept-alive one is dropped once a current list revokes its peer.
#[derive(Clone)]
pub struct RelayTls {
    pub config: Live<Arc<rustls::ClientConfig>>,
    pub crls: Live<CrlSet>,
    /// The issuing CAs by which the server's certificate is identified.
    pub issuers: Live<Issuers>,
}

/// The relay for one peer.
pub struct Relay {
    peer: Peer,
    settings: RelaySettings,
    tls: RelayTls,
    store: Store,
    waker: Arc<Notify>,
    local: Arc<Local>,
    counters: Arc<Counters>,
    metrics: crate::metrics::Metrics,
}

impl Relay {
    pub fn new(
        peer: Peer,
        settings: RelaySettings,
        tls: RelayTls,
        store: Store,
        waker: Arc<Notify>,
        local: Arc<Local>,
        counters: Arc<Counters>,
    ) -> Relay {
        Relay {
            peer,
            settings,
            tls,
            store,
            waker,
            local,
            counters,
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// Counts this relay's attempts and failures in `metrics` (the gateway's).
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Relay {
        self.metrics = metrics;
        self
    }

    /// Delivers the peer's outbox until `stop` is signalled.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        run(&self, stop).await
    }
}

async fn run(relay: &Relay, mut stop: watch::Receiver<bool>) {
    let peer = &relay.peer;
    let wakeup = relay.waker.clone();
    let mut conn: Option<Connection> = None;
    let mut failures: u32 = 0;
    // Outcomes of the last exchange, committed together with the next admission: one
    // commit per round instead of two. Their messages are still in the outbox until
    // then, so the next batch skips them. Outcomes lost to a crash (or to an error
    // before that commit) cost nothing but a resend: the messages are still queued, and
    // the peer answers a message it stored with its first receipt.
    let mut unrecorded: Vec<Step> = Vec::new();
    // The next batch, admitted while the one before it was in flight ([`Ahead`]).
    let mut ahead: Option<Ahead> = None;
    loop {
        if *stop.borrow() {
            if let Err(e) = record(relay, std::mem::take(&mut unrecorded)).await {
                tracing::error!(peer = %peer.name, error = %e, "cannot record delivery outcomes");
            }
            return;
        }
        let to_send = match ahead.take().filter(|a| a.still_holds(relay)) {
            Some(admitted) => Ok(admitted.msgs),
            None => {
                let skip = unrecorded.iter().map(|s| s.msg.id.clone()).collect();
                let batch = read_head(relay, &skip);
                if batch.is_empty() && unrecorded.is_empty() {
                    tokio::select! {
                        _ = wakeup.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
                let outcomes = std::mem::take(&mut unrecorded);
                admit_head(relay, &mut conn, batch, outcomes).await
            }
        };
        let result = match to_send {
            Ok(to_send) if to_send.is_empty() => Ok(Vec::new()),
            Ok(to_send) => {
                // While this batch is with the peer, the next one is read and admitted,
                // with this round's predecessor's outcomes: the peer's durable commit
                // and ours overlap instead of waiting for each other.
                let mut skip: std::collections::HashSet<String> =
                    unrecorded.iter().map(|s| s.msg.id.clone()).collect();
                skip.extend(to_send.iter().map(|m| m.id.clone()));
                let outcomes = std::mem::take(&mut unrecorded);
                let (sent, next) = tokio::join!(
                    send(relay, &mut conn, to_send),
                    admit_ahead(relay, outcomes, skip)
                );
                match next {
                    Ok(next) => ahead = next,
                    Err(e) => {
                        tracing::error!(peer = %peer.name, error = %e, "cannot admit the next batch")
                    }
                }
                sent
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(delivered) => {
                if !delivered.is_empty() {
                    relay.metrics.relay_attempt(&peer.name, true);
                }
                failures = 0;
                unrecorded = delivered;
            }
            Err(e) => {
                // A batch admitted ahead waits behind the one that failed: it is read
                // again, in order, once that one has gone.
                ahead = None;
                relay.metrics.relay_attempt(&peer.name, false);
                failures += 1;
                let delay = backoff(&relay.settings, failures);
                tracing::info!(peer = %peer.name, error = %e, retry_in_ms = delay.as_millis() as u64, "delivery will be retried");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// What happens to one message after an attempt.
struct Step {
    msg: SentMessage,
    status: Status,
    event: Option<(Event, AuditOutcome)>,
    reason: Option<String>,
    /// The peer's receipt, with the certificate whose key signed it (kept in the store,
    /// so the receipt can be checked after the peer renews).
    receipt: Option<(Receipt, Arc<[u8]>)>,
    /// The batch signature it was sent under, and its path to that signature's root.
    signed: Option<(Arc<str>, EnvelopeProof)>,
    /// The peer's address the message was sent to, for its audit record (none for a
    /// message that was not sent: expired, withheld, or waiting for a retry).
    sent_to: Option<String>,
}

/// A message that may go in the next batch, with the child's BSN for its consent check.
type Candidate = (SentMessage, Option<Bsn>);

/// A batch admitted while the one before it was in flight. It goes out as admitted
/// unless something its admission decided on has changed since: one of its messages
/// passed its maximum age, or a commit wrote consent events (a withdrawal, an expiry
/// from the peer, or only another child's new consent) and a message's consent no
/// longer covers it. Then it is dropped and read and admitted afresh (which withholds
/// that message), so a message never goes out on a consent check older than the last
/// consent change.
struct Ahead {
    msgs: Vec<SentMessage>,
    consent_events: crate::store::Generation,
}

impl Ahead {
    fn still_holds(&self, relay: &Relay) -> bool {
        let now = relay.local.clock.now();
        if self.msgs.iter().any(|m| too_old(relay, m, now)) {
            return false;
        }
        relay.store.generation(T::ConsentEvents) == self.consent_events
            || self.msgs.iter().all(|m| still_covered(relay, m))
    }
}

/// Whether `msg`'s consent covers it now, as the store has it (a message that needs no
/// consent is covered; one whose consent cannot be read is not).
fn still_covered(relay: &Relay, msg: &SentMessage) -> bool {
    let Some(consent_id) = &msg.consent_id else {
        return true;
    };
    let (Ok(Some(bsn)), Ok(state)) = (queued_bsn(msg), registry::state(&relay.store, consent_id))
    else {
        return false;
    };
    let exchange = exchange_for(&relay.local, &relay.peer, &bsn, msg);
    consent::covers(state.as_ref(), &exchange).is_ok()
}

/// The child's BSN in a queued message's envelope, for its consent check (`None` for a
/// message under no consent).
fn queued_bsn(msg: &SentMessage) -> Result<Option<Bsn>, DeliveryError> {
    if msg.consent_id.is_none() {
        return Ok(None);
    }
    let envelope = serde_json::from_str::<Envelope>(&msg.envelope).map_err(|e| {
        DeliveryError::QueuedEnvelope {
            id: msg.id.clone(),
            detail: e.to_string(),
        }
    })?;
    Ok(envelope.bsn())
}

/// The exchange a consent must cover for `msg` to go from this gateway to `peer`.
fn exchange_for<'a>(
    local: &'a Local,
    peer: &'a Peer,
    bsn: &'a Bsn,
    msg: &SentMessage,
) -> Exchange<'a> {
    Exchange {
        role: local.role,
        own: &local.identity,
        peer: &peer.identity,
        bsn,
        message_type: msg.message_type,
        today: local.clock.today(),
    }
}

/// A message that stays queued after a failed attempt, with why.
fn requeued(msg: SentMessage, reason: String) -> Step {
    Step {
        msg,
        status: Status::Queued,
        event: None,
        reason: Some(reason),
        receipt: None,
        signed: None,
        sent_to: None,
    }
}

fn too_old(relay: &Relay, msg: &SentMessage, now: chrono::DateTime<chrono::Utc>) -> bool {
    let age = now.signed_duration_since(msg.created_at);
    age.to_std().unwrap_or_default() > relay.settings.max_age
}

/// Up to a batch of the messages at the head of the queue, leaving out `skip`.
fn read_head(relay: &Relay, skip: &std::collections::HashSet<String>) -> Vec<SentMessage> {
    match outbox::next_batch(&relay.store, &relay.peer.name, MAX_BATCH, skip) {
        Ok(batch) => batch,
        Err(e) => {
            tracing::error!(peer = %relay.peer.name, error = %e, "cannot read the outbox");
            Vec::new()
        }
    }
}

/// Splits messages read from the queue into those past their maximum age (as steps)
/// and the candidates for one batch (with the child's BSN for the consent check), up
/// to the batch's byte limit.
fn prepare(
    relay: &Relay,
    queued: Vec<SentMessage>,
) -> Result<(Vec<Step>, Vec<Candidate>), DeliveryError> {
    let max_age = relay.settings.max_age;
    let now = relay.local.clock.now();
    let mut expired = Vec::new();
    let mut candidates = Vec::with_capacity(queued.len());
    let mut bytes = 0;
    for msg in queued {
        if too_old(relay, &msg, now) {
            let reason = format!(
                "not delivered within the maximum age of {} s",
                max_age.as_secs()
            );
            expired.push(Step {
                msg,
                status: Status::Expired,
                event: Some((Event::MessageExpired, AuditOutcome::Failure)),
                reason: Some(reason),
                receipt: None,
                signed: None,
                sent_to: None,
            });
        } else if bytes + msg.envelope.len() > SEND_BATCH_BYTES && !candidates.is_empty() {
            break;
        } else {
            bytes += msg.envelope.len();
            let bsn = queued_bsn(&msg)?;
            candidates.push((msg, bsn));
        }
    }
    Ok((expired, candidates))
}

/// Drops a kept-alive connection whose peer certificate has expired or that a current
/// revocation list names (the new handshake then refuses it), and connects if there is
/// none. `Err` says why the peer cannot be reached.
async fn ensure_connection(
    relay: &Relay,
    conn: &mut Option<Connection>,
) -> Result<(), DeliveryError> {
    let now = relay.local.clock.now();
    let crls = relay.tls.crls.current();
    if conn.as_ref().is_some_and(|c| {
        crate::identity::not_after(&c.peer_cert).is_none_or(|end| end < now)
            || crls.is_revoked(&c.peer_cert)
    }) {
        *conn = None;
    }
    if conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
        *conn = Some(connect(relay).await?);
    }
    Ok(())
}

/// The messages at the head of the queue, admitted with the last round's outcomes
/// (`last_round`) in one commit; when the peer cannot be reached, that commit counts a
/// failed attempt for each and `Err` means: wait, then retry.
async fn admit_head(
    relay: &Relay,
    conn: &mut Option<Connection>,
    queued: Vec<SentMessage>,
    last_round: Vec<Step>,
) -> Result<Vec<SentMessage>, DeliveryError> {
    let (expired, candidates) = prepare(relay, queued)?;
    // A peer is noted as a recipient only once there is a connection to send on: a
    // peer we cannot reach has been sent nothing.
    let unreachable = if candidates.is_empty() {
        None
    } else {
        ensure_connection(relay, conn).await.err()
    };
    let mut settled = last_round;
    settled.extend(expired);
    let to_send = admit(relay, settled, candidates, unreachable.clone()).await?;
    match unreachable {
        Some(reason) => Err(reason),
        None => Ok(to_send),
    }
}

/// The next batch, read (leaving out `skip`: the batch in flight and the outcomes not
/// yet committed) and admitted with `outcomes` while the current batch is in flight, on
/// the connection that batch is using. `None` when there is nothing to send next.
async fn admit_ahead(
    relay: &Relay,
    outcomes: Vec<Step>,
    skip: std::collections::HashSet<String>,
) -> Result<Option<Ahead>, DeliveryError> {
    let consent_events = relay.store.generation(T::ConsentEvents);
    let queued = read_head(relay, &skip);
    let (expired, candidates) = match prepare(relay, queued) {
        Ok(split) => split,
        Err(e) => {
            // Outcomes are recorded even when the next batch cannot be read.
            record(relay, outcomes).await?;
            return Err(e);
        }
    };
    let mut settled = outcomes;
    settled.extend(expired);
    let msgs = admit(relay, settled, candidates, None).await?;
    Ok((!msgs.is_empty()).then_some(Ahead {
        msgs,
        consent_events,
    }))
}

/// Sends an admitted batch and returns each message's outcome, for the next round's
/// commit, when all were delivered or refused. When some must be retried, the outcomes
/// are committed at once and `Err` means: wait, then retry.
async fn send(
    relay: &Relay,
    conn: &mut Option<Connection>,
    to_send: Vec<SentMessage>,
) -> Result<Vec<Step>, DeliveryError> {
    if let Err(reason) = ensure_connection(relay, conn).await {
        let steps = to_send
            .into_iter()
            .map(|msg| requeued(msg, reason.to_string()))
            .collect();
        record(relay, steps).await?;
        return Err(reason);
    }
    let mut steps = Vec::with_capacity(to_send.len());
    let mut retry = None;
    let receiver: Option<(Vec<u8>, Vec<crate::caller::Presented>)> = conn
        .as_ref()
        .map(|c| (c.peer_cert.clone(), c.signing.clone()));
    // The certificate a receipt's signature names (checked in `deliver`), kept with it.
    let receiver_cert = |receipt: &Receipt| -> Option<Arc<[u8]>> {
        let (leaf, signing) = receiver.as_ref()?;
        let cert =
            crate::caller::certificate_for(leaf, signing, &receipt.signature).unwrap_or(leaf);
        Some(Arc::from(cert))
    };
    let sent_to = Some(peer_address(&relay.peer));
    match deliver(relay, conn, &to_send).await {
        Ok(results) => {
            for (msg, (result, signed)) in to_send.into_iter().zip(results) {
                let signed = Some(signed);
                steps.push(match result {
                    Ok(receipt) => Step { msg, status: Status::Delivered, event: Some((Event::MessageDelivered, AuditOutcome::Success)), reason: None, receipt: receiver_cert(&receipt).map(|cert| (receipt, cert)), signed, sent_to: sent_to.clone() },
                    Err(refused) if refused.is_refusal() => {
                        tracing::warn!(message_id = %msg.id, peer = %relay.peer.name, "the peer refused the message");
                        Step { msg, status: Status::Refused, event: Some((Event::MessageRefused, AuditOutcome::Refused)), reason: Some(refused.to_string()), receipt: None, signed, sent_to: sent_to.clone() }
                    }
                    Err(transient) => {
                        let reason = transient.to_string();
                        retry = Some(transient);
                        Step { msg, status: Status::Queued, event: None, reason: Some(reason), receipt: None, signed, sent_to: None }
                    }
                });
            }
        }
        Err(failed) => {
            *conn = None;
            let reason = failed.to_string();
            retry = Some(failed);
            steps.extend(to_send.into_iter().map(|msg| requeued(msg, reason.clone())));
        }
    }
    match retry {
        Some(reason) => {
            record(relay, steps).await?;
            Err(reason)
        }
        None => Ok(steps),
    }
}

/// Admission, in one commit before anything goes out, which also records `settled`:
/// the last round's outcomes and the messages that expired. Consent is checked once
/// more, against the state this commit sees: a consent withdrawn or expired while the
/// message waited withholds it here. For what may go, the peer is noted as a recipient
/// of its consent *before* it is sent, so that a withdrawal committed after this point
/// finds the peer and tells it — and one committed before withholds the message instead.
/// When the peer is `unreachable`, what may go counts a failed attempt instead and
/// nothing is returned. Returns what may be sent.
async fn admit(
    relay: &Relay,
    settled: Vec<Step>,
    candidates: Vec<Candidate>,
    unreachable: Option<DeliveryError>,
) -> Result<Vec<SentMessage>, DeliveryError> {
    if unreachable.is_none()
        && settled.is_empty()
        && candidates.iter().all(|(m, _)| m.consent_id.is_none())
    {
        return Ok(candidates.into_iter().map(|(m, _)| m).collect());
    }
    let delivered = delivered_ids(&settled);
    let local = relay.local.clone();
    let org = local.identity.clone();
    let peer = relay.peer.clone();
    let admitted = relay
        .store
        .commit(move |tx| {
            for step in settled {
                apply(tx, step, &org)?;
            }
            let mut admitted = Vec::with_capacity(candidates.len());
            for (msg, bsn) in candidates {
                let covered = match (&msg.consent_id, bsn) {
                    (Some(consent_id), Some(bsn)) => {
                        let state = registry::state_in(tx, consent_id)?;
                        let exchange = exchange_for(&local, &peer, &bsn, &msg);
                        consent::covers(state.as_ref(), &exchange).map(|()| Some(consent_id.clone()))
                    }
                    _ => Ok(None),
                };
                match covered {
                    Ok(consent) => match &unreachable {
                        Some(reason) => {
                            apply(tx, requeued(msg, reason.to_string()), &org)?;
                        }
                        None => {
                            if let Some(consent_id) = consent {
                                registry::note_recipient(tx, &consent_id, &peer.identity)?;
                            }
                            admitted.push(msg);
                        }
                    },
                    Err(refusal) => {
                        tracing::info!(message_id = %msg.id, peer = %peer.name, "message withheld: consent no longer covers it");
                        let reason = format!("{}: {refusal}", refusal.code());
                        apply(tx, Step { msg, status: Status::Withheld, event: Some((Event::MessageWithheld, AuditOutcome::Refused)), reason: Some(reason), receipt: None, signed: None, sent_to: None }, &org)?;
                    }
                }
            }
            Ok(admitted)
        })
        .await
        .map_err(|e: crate::store::StoreError| DeliveryError::from(e))?;
    log_delivered(delivered);
    Ok(admitted)
}

fn delivered_ids(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .filter(|s| s.status == Status::Delivered)
        .map(|s| s.msg.id.clone())
        .collect()
}

fn log_delivered(ids: Vec<String>) {
    for id in ids {
        tracing::info!(message_id = %id, "message delivered");
    }
}

/// Records outcomes in a commit of their own (a round that will be retried, or the
/// last round before the relay stops).
async fn record(relay: &Relay, steps: Vec<Step>) -> Result<(), DeliveryError> {
    if steps.is_empty() {
        return Ok(());
    }
    let org = relay.local.identity.clone();
    let delivered = delivered_ids(&steps);
    relay
        .store
        .commit(move |tx| {
            for step in steps {
                apply(tx, step, &org)?;
            }
            Ok(())
        })
        .await
        .map_err(|e: crate::store::StoreError| DeliveryError::from(e))?;
    log_delivered(delivered);
    Ok(())
}

/// Applies one outcome inside a job. Delivered, refused, withheld and expired messages
/// leave the queue; the rest count an attempt and stay.
fn apply(
    tx: &mut crate::store::Tx<'_>,
    step: Step,
    org: &OrgId,
) -> Result<(), crate::store::StoreError> {
    let mut msg = step.msg;
    msg.status = step.status;
    if matches!(
        step.status,
        Status::Delivered | Status::Refused | Status::Queued
    ) {
        msg.attempts += 1;
    }
    if let Some((signature, proof)) = step.signed {
        msg.signature = Some(signature.to_string());
        msg.batch = Some(proof);
    }
    if let Some((receipt, cert)) = step.receipt {
        crate::store::keep_certificate(tx, &cert)?;
        msg.receipt = Some(receipt);
        msg.last_error = None;
    } else {
        msg.last_error = step.reason.clone();
    }
    if let Some((event, outcome)) = step.event {
        let mut audit = msg
            .audit(event, outcome, Actor::Gateway)
            .on_behalf_of(org)
            .peer_address(step.sent_to);
        if let Some(reason) = step.reason {
            audit = audit.reason(reason);
        }
        tx.audit(audit);
    }
    outbox::save(tx, msg).map(|_| ())
}

/// The peer's address as configured and connected to, `HOST:PORT` (an IPv6 address in
/// brackets), for the audit records of what was sent there.
fn peer_address(peer: &Peer) -> String {
    if peer.host.contains(':') && !peer.host.starts_with('[') {
        format!("[{}]:{}", peer.host, peer.port)
    } else {
        format!("{}:{}", peer.host, peer.port)
    }
}

/// One result per message of a delivered batch, with the batch signature it went out
/// under and its path.
type Delivered = (Result<Receipt, DeliveryError>, (Arc<str>, EnvelopeProof));

/// Signs the batch (one signature over its envelopes' root), sends it and checks each
/// receipt. `Err` is a failure of the whole exchange.
async fn deliver(
    relay: &Relay,
    conn: &mut Option<Connection>,
    msgs: &[SentMessage],
) -> Result<Vec<Delivered>, DeliveryError> {
    let peer = &relay.peer;
    let name = || peer.name.clone();
    let http = |e: &dyn std::fmt::Display| DeliveryError::Http {
        peer: name(),
        detail: e.to_string(),
    };
    let Some(c) = conn.as_mut() else {
        return Err(DeliveryError::NoConnection);
    };
    let (batch_signature, proofs) = sign_batch(relay, msgs).await?;
    let mut items = Vec::with_capacity(msgs.len());
    for (m, proof) in msgs.iter().zip(&proofs) {
        let envelope: &serde_json::value::RawValue =
            serde_json::from_str(&m.envelope).map_err(|e| DeliveryError::QueuedEnvelope {
                id: m.id.clone(),
                detail: e.to_string(),
            })?;
        items.push(BatchItem {
            batch: Some(proof.clone()),
            signature: None,
            envelope,
        });
    }
    let body = serde_json::to_vec(&BatchRequest {
        messages: items,
        batch_signature: Some(batch_signature.clone()),
    })
    .map_err(|e| DeliveryError::Local(format!("encoding the batch: {e}")))?;
    let request = hyper::Request::post(BATCH_PATH)
        .header(hyper::header::HOST, format!("{}:{}", peer.host, peer.port))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| DeliveryError::Local(format!("building the request: {e}")))?;
    let timeout = relay.settings.request_timeout;
    let exchange = async {
        c.sender.ready().await.map_err(|e| http(&e))?;
        let response = c.sender.send_request(request).await.map_err(|e| http(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BATCH_BYTES)
            .collect()
            .await
            .map_err(|e| http(&e))?
            .to_bytes();
        Ok::<_, DeliveryError>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| DeliveryError::Timeout {
            peer: name(),
            ms: timeout.as_millis(),
        })??;
    if !status.is_success() {
        return Err(DeliveryError::BatchStatus {
            peer: name(),
            status: status.as_u16(),
            explanation: explain(&body),
        });
    }
    let answer: BatchAnswer =
        serde_json::from_slice(&body).map_err(|e| DeliveryError::UnreadableAnswer {
            peer: name(),
            detail: e.to_string(),
        })?;
    if answer.results.len() != msgs.len() {
        return Err(DeliveryError::ResultCount {
            peer: name(),
            got: answer.results.len(),
            sent: msgs.len(),
        });
    }
    // Each receipt must be for exactly the message sent; the receipts of one batch share
    // one signed statement (see crate::receipt), so each statement's signature is checked
    // once, the distinct ones spread over the cores.
    let mut statements: Vec<(Vec<u8>, String)> = Vec::new();
    let mut outcomes = Vec::with_capacity(msgs.len());
    for (m, a) in msgs.iter().zip(answer.results) {
        let o = outcome(&peer.name, &relay.local.identity, m, a);
        if let Ok((receipt, statement)) = &o {
            if !statements
                .iter()
                .any(|(st, sig)| st == statement && *sig == receipt.signature)
            {
                statements.push((statement.clone(), receipt.signature.clone()));
            }
        }
        outcomes.push(o);
    }
    let peer_cert: Arc<[u8]> = c.peer_cert.clone().into();
    let signing = Arc::new(c.signing.clone());
    let checked = crate::cpu::map_batch(statements, move |(statement, signature)| {
        let valid = crate::caller::certificate_for(&peer_cert, &signing, &signature)
            .map_err(crate::receipt::ReceiptError::RefusedCertificate)
            .and_then(|cert| verify_statement(&statement, &signature, cert));
        (statement, signature, valid)
    })
    .await
    .map_err(|e| DeliveryError::Local(format!("checking the receipts failed: {e}")))?;
    let signature: Arc<str> = Arc::from(batch_signature.signature.as_str());
    Ok(outcomes
        .into_iter()
        .map(|o| {
            let (receipt, statement) = o?;
            let (_, _, valid) = checked
                .iter()
                .find(|(st, sig, _)| *st == statement && *sig == receipt.signature)
                .ok_or_else(|| DeliveryError::Local("a receipt was not checked".into()))?;
            valid
                .clone()
                .map(|()| receipt)
                .map_err(|source| DeliveryError::InvalidReceipt {
                    peer: name(),
                    source,
                })
        })
        .zip(proofs)
        .map(|(result, proof)| {
            (
                result,
                (signature.clone(), batch_signature.proof_for(proof)),
            )
        })
        .collect())
}

/// The batch signature over exactly the envelopes about to be sent, made on the
/// blocking pool (an RSA-4096 signature is ~5 ms of CPU): one per sent batch, so a
/// resend after a failure, which may hold another set of messages, is signed anew.
async fn sign_batch(
    relay: &Relay,
    msgs: &[SentMessage],
) -> Result<(BatchSignature, Vec<BatchProof>), DeliveryError> {
    let envelopes: Vec<String> = msgs.iter().map(|m| m.envelope.clone()).collect();
    let local = relay.local.clone();
    let to = relay.peer.identity.to_string();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&[u8]> = envelopes.iter().map(|e| e.as_bytes()).collect();
        envelope_batch::sign(&local.signer, local.identity.as_str(), &to, &refs)
    })
    .await
    .map_err(|e| DeliveryError::Local(format!("signing the batch failed: {e}")))?
    .map_err(|e| DeliveryError::Local(format!("signing the batch: {e}")))
}

/// What the peer's answer for one message means: a receipt for exactly this message,
/// with the statement its signature must cover (checked by the caller); a refusal; or
/// something to retry.
fn outcome(
    peer: &PeerName,
    own: &OrgId,
    m: &SentMessage,
    a: ItemAnswer,
) -> Result<(Receipt, Vec<u8>), DeliveryError> {
    let peer = peer.clone();
    match (a.receipt, a.refusal) {
        (Some(receipt), _) => match receipt
            .check_sender(own.as_str())
            .and_then(|()| receipt.statement_for(&m.id, m.envelope.as_bytes()))
        {
            Ok(statement) => Ok((receipt, statement)),
            Err(source) => Err(DeliveryError::InvalidReceipt { peer, source }),
        },
        (None, Some(refusal)) => {
            let status = a.status.unwrap_or(422);
            let explanation = explain(refusal.to_string().as_bytes());
            if (400..500).contains(&status) && status != 408 && status != 429 {
                Err(DeliveryError::Refused {
                    peer,
                    status,
                    explanation,
                })
            } else {
                Err(DeliveryError::NotNow {
                    peer,
                    status,
                    explanation,
                })
            }
        }
        (None, None) => Err(DeliveryError::NoAnswer {
            peer,
            id: m.id.clone(),
        }),
    }
}

/// `code: message` from a refusal body, or a short note.
fn explain(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .map(|v| {
            format!(
                "{}: {}",
                v.get("error").and_then(|x| x.as_str()).unwrap_or("refused"),
                v.get("message").and_then(|x| x.as_str()).unwrap_or("")
            )
        })
        .unwrap_or_else(|| "no explanation".into())
}

async fn connect(relay: &Relay) -> Result<Connection, DeliveryError> {
    let peer = &relay.peer;
    let addr = || format!("{}:{}", peer.host, peer.port);
    let timeout = relay.settings.request_timeout;
    let tcp = tokio::time::timeout(timeout, TcpStream::connect((peer.host.as_str(), peer.port)))
        .await
        .map_err(|_| DeliveryError::ConnectTimeout { addr: addr() })?
        .map_err(|e| DeliveryError::Connect {
            addr: addr(),
            detail: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let server_name =
        ServerName::try_from(peer.host.clone()).map_err(|e| DeliveryError::ServerName {
            host: peer.host.clone(),
            detail: e.to_string(),
        })?;
    let connector = TlsConnector::from(relay.tls.config.current().as_ref().clone());
    let counters = &relay.counters;
    let tls = tokio::time::timeout(timeout, connector.connect(server_name, tcp))
        .await
        .map_err(|_| {
            counters.handshake_failed("out", "timeout");
            DeliveryError::HandshakeTimeout {
                peer: peer.name.clone(),
            }
        })?
        .map_err(|e| {
            counters.handshake_failed("out", crate::stats::handshake_failure_reason(&e));
            DeliveryError::Handshake {
                peer: peer.name.clone(),
                detail: e.to_string(),
            }
        })?;
    relay
        .counters
        .handshakes_out
        .fetch_add(1, Ordering::Relaxed);
    let presented = tls.get_ref().1.peer_certificates().unwrap_or_default();
    let peer_cert = presented.first().map(|c| c.to_vec()).ok_or_else(|| {
        counters.handshake_failed("out", "no_certificate");
        DeliveryError::NoCertificate {
            peer: peer.name.clone(),
        }
    })?;
    let issuers = relay.tls.issuers.current();
    let identity = issuers.identify(&peer_cert).map_err(|source| {
        counters.handshake_failed("out", "unidentified");
        DeliveryError::Identity {
            peer: peer.name.clone(),
            source,
        }
    })?;
    if identity.organisation_id != peer.identity {
        counters.handshake_failed("out", "wrong_peer");
        return Err(DeliveryError::WrongPeer {
            addr: addr(),
            found: identity.organisation_id,
            expected: peer.identity.clone(),
            peer: peer.name.clone(),
        });
    }
    counters.peer_certificate_seen(peer.identity.as_str(), &peer_cert);
    if relay.tls.crls.current().is_revoked(&peer_cert) {
        counters.handshake_failed("out", "revocation_unknown");
        return Err(DeliveryError::RevocationUnknown {
            peer: peer.name.clone(),
        });
    }
    let signing = crate::caller::signing_certificates(
        presented,
        &identity.organisation_id,
        &issuers,
        &relay.tls.crls.current(),
        relay.local.clock.now(),
    );
    for p in &signing {
        if let crate::caller::Presented::Refused {
            fingerprint,
            reason,
        } = p
        {
            tracing::warn!(peer = %peer.name, certificate = %fingerprint, reason = %reason, "a signing certificate the peer presented is refused");
        }
    }
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| DeliveryError::Http {
            peer: peer.name.clone(),
            detail: e.to_string(),
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "relay connection closed");
        }
    });
    Ok(Connection {
        sender,
        peer_cert,
        signing,
    })
}

/// Exponential backoff with jitter: a random delay between half and all of
/// `initial · 2^(failures−1)`, capped at the maximum.
fn backoff(settings: &RelaySettings, failures: u32) -> Duration {
    let exp = settings
        .initial_backoff
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let ceiling = exp.min(settings.max_backoff);
    let mut byte = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    ceiling / 2 + ceiling / 2 * u32::from(byte[0]) / 255
}

#[cfg(test)]
mod tests;
