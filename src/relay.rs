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

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use crate::audit::{Actor, Event, Outcome};
use crate::config::Peer;
use crate::consent::registry;
use crate::gateway::Gateway;
use crate::message::Envelope;
use crate::outbox::{self, SentMessage, Status};
use crate::receipt::Receipt;

/// How a delivery attempt ended, short of success.
#[derive(Debug)]
enum Failure {
    /// Worth retrying: the network, the peer's availability, a bad receipt.
    Transient(String),
    /// The peer refused the message for good (a 4xx answer).
    Refused(String),
}

/// A live connection to the peer, reused for every message while it works.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    peer_cert: Vec<u8>,
}

/// Delivers `peer`'s outbox until `stop` is signalled.
pub async fn run(
    gw: Arc<Gateway>,
    peer: Peer,
    tls: Arc<rustls::ClientConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let wakeup = gw.relay_wakeup(&peer.name);
    let connector = TlsConnector::from(tls);
    let mut conn: Option<Connection> = None;
    let mut failures: u32 = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        let next = match outbox::next_for_peer(&gw.store, &peer.name) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(peer = %peer.name, error = %e, "cannot read the outbox");
                None
            }
        };
        let Some(msg) = next else {
            tokio::select! {
                _ = wakeup.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = stop.changed() => return,
            }
            continue;
        };

        if let Err(e) = attempt(&gw, &peer, &connector, &mut conn, msg).await {
            failures += 1;
            let delay = backoff(&gw.config.relay, failures);
            tracing::info!(peer = %peer.name, error = %e, retry_in_ms = delay.as_millis() as u64, "delivery will be retried");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
        } else {
            failures = 0;
        }
    }
}

/// One step for the message at the head of the queue. `Err` means: wait, then retry.
async fn attempt(
    gw: &Arc<Gateway>,
    peer: &Peer,
    connector: &TlsConnector,
    conn: &mut Option<Connection>,
    msg: SentMessage,
) -> Result<(), String> {
    let age = Utc::now().signed_duration_since(msg.created_at);
    if age.to_std().unwrap_or_default() > gw.config.relay.max_age {
        let reason = format!(
            "not delivered within the maximum age of {} s",
            gw.config.relay.max_age.as_secs()
        );
        finish(
            gw,
            msg,
            Status::Expired,
            Event::MessageExpired,
            Outcome::Failure,
            reason,
            None,
        )
        .await?;
        return Ok(());
    }

    if let Some(reason) = consent_withholds(gw, peer, &msg)? {
        let id = msg.id.clone();
        finish(
            gw,
            msg,
            Status::Withheld,
            Event::MessageWithheld,
            Outcome::Refused,
            reason,
            None,
        )
        .await?;
        tracing::info!(message_id = %id, peer = %peer.name, "message withheld: consent no longer covers it");
        return Ok(());
    }

    match deliver(gw, peer, connector, conn, &msg).await {
        Ok(receipt) => {
            let id = msg.id.clone();
            finish(
                gw,
                msg,
                Status::Delivered,
                Event::MessageDelivered,
                Outcome::Success,
                String::new(),
                Some(receipt),
            )
            .await?;
            tracing::info!(message_id = %id, peer = %peer.name, "message delivered");
            Ok(())
        }
        Err(Failure::Refused(reason)) => {
            let id = msg.id.clone();
            finish(
                gw,
                msg,
                Status::Refused,
                Event::MessageRefused,
                Outcome::Refused,
                reason,
                None,
            )
            .await?;
            tracing::warn!(message_id = %id, peer = %peer.name, "the peer refused the message");
            Ok(())
        }
        Err(Failure::Transient(reason)) => {
            *conn = None;
            let mut msg = msg;
            msg.attempts += 1;
            msg.last_error = Some(reason.clone());
            gw.store
                .commit(move |tx| outbox::save(tx, msg).map(|_| ()))
                .await
                .map_err(|e: crate::store::StoreError| e.to_string())?;
            Err(reason)
        }
    }
}

/// Consent is checked once more just before sending: a consent withdrawn or expired
/// while the message waited in the outbox stops it here. `Ok(Some(reason))`: withhold;
/// `Err`: the check itself failed (the store), try again later.
fn consent_withholds(
    gw: &Gateway,
    peer: &Peer,
    msg: &SentMessage,
) -> Result<Option<String>, String> {
    let Some(consent_id) = &msg.consent_id else {
        return Ok(None);
    };
    let envelope: Envelope = serde_json::from_str(&msg.envelope)
        .map_err(|e| format!("the queued envelope cannot be read: {e}"))?;
    let Some(bsn) = envelope.bsn() else {
        return Ok(None);
    };
    let state = registry::state(&gw.store, consent_id).map_err(|e| e.to_string())?;
    Ok(registry::covers(
        gw.config.role,
        &gw.config.identity,
        &peer.identity,
        state.as_ref(),
        &bsn,
        msg.message_type,
        registry::today(),
    )
    .err()
    .map(|r| format!("{}: {r}", r.code())))
}

/// Records a final outcome; the message leaves the queue in the same commit.
async fn finish(
    gw: &Arc<Gateway>,
    mut msg: SentMessage,
    status: Status,
    event: Event,
    outcome: Outcome,
    reason: String,
    receipt: Option<Receipt>,
) -> Result<(), String> {
    msg.status = status;
    msg.receipt = receipt;
    if status != Status::Delivered {
        msg.last_error = Some(reason.clone());
    } else {
        msg.attempts += 1;
    }
    let org = gw.config.identity.clone();
    gw.store
        .commit(move |tx| {
            let mut audit = msg.audit(event, outcome, Actor::Gateway).on_behalf_of(&org);
            if !reason.is_empty() {
                audit = audit.reason(reason);
            }
            tx.audit(audit);
            outbox::save(tx, msg).map(|_| ())
        })
        .await
        .map_err(|e: crate::store::StoreError| e.to_string())
}

async fn deliver(
    gw: &Arc<Gateway>,
    peer: &Peer,
    connector: &TlsConnector,
    conn: &mut Option<Connection>,
    msg: &SentMessage,
) -> Result<Receipt, Failure> {
    if conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
        *conn = Some(
            connect(gw, peer, connector)
                .await
                .map_err(Failure::Transient)?,
        );
    }
    let Some(c) = conn.as_mut() else {
        return Err(Failure::Transient("no connection".into()));
    };
    let request = hyper::Request::post("/v1/relay")
        .header(hyper::header::HOST, format!("{}:{}", peer.host, peer.port))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("x-wijkpoort-signature", &msg.signature)
        .body(Full::new(Bytes::from(msg.envelope.clone())))
        .map_err(|e| Failure::Transient(format!("building the request: {e}")))?;
    let timeout = gw.config.relay.request_timeout;
    let exchange = async {
        c.sender
            .ready()
            .await
            .map_err(|e| format!("connection to {}: {e}", peer.name))?;
        let response = c
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("sending to {}: {e}", peer.name))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {}: {e}", peer.name))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            Failure::Transient(format!(
                "{} did not answer within {} ms",
                peer.name,
                timeout.as_millis()
            ))
        })?
        .map_err(Failure::Transient)?;

    if status.is_success() {
        let receipt: Receipt = serde_json::from_slice(&body).map_err(|e| {
            Failure::Transient(format!("{} sent an unreadable receipt: {e}", peer.name))
        })?;
        receipt
            .verify(&msg.id, msg.envelope.as_bytes(), &c.peer_cert)
            .map_err(|e| {
                Failure::Transient(format!("{} sent an invalid receipt: {e}", peer.name))
            })?;
        return Ok(receipt);
    }
    let explained = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .map(|v| {
            format!(
                "{}: {}",
                v.get("error").and_then(|x| x.as_str()).unwrap_or("refused"),
                v.get("message").and_then(|x| x.as_str()).unwrap_or("")
            )
        })
        .unwrap_or_else(|| format!("HTTP {status}"));
    if status.is_client_error()
        && status != hyper::StatusCode::REQUEST_TIMEOUT
        && status != hyper::StatusCode::TOO_MANY_REQUESTS
    {
        Err(Failure::Refused(format!(
            "refused by {} ({}): {explained}",
            peer.name,
            status.as_u16()
        )))
    } else {
        Err(Failure::Transient(format!(
            "{} answered {}: {explained}",
            peer.name,
            status.as_u16()
        )))
    }
}

async fn connect(
    gw: &Arc<Gateway>,
    peer: &Peer,
    connector: &TlsConnector,
) -> Result<Connection, String> {
    let timeout = gw.config.relay.request_timeout;
    let tcp = tokio::time::timeout(timeout, TcpStream::connect((peer.host.as_str(), peer.port)))
        .await
        .map_err(|_| format!("connecting to {}:{} timed out", peer.host, peer.port))?
        .map_err(|e| format!("cannot connect to {}:{}: {e}", peer.host, peer.port))?;
    let _ = tcp.set_nodelay(true);
    let server_name = ServerName::try_from(peer.host.clone())
        .map_err(|e| format!("{:?} is not a valid server name: {e}", peer.host))?;
    let tls = tokio::time::timeout(timeout, connector.connect(server_name, tcp))
        .await
        .map_err(|_| format!("TLS handshake with {} timed out", peer.name))?
        .map_err(|e| format!("TLS handshake with {} failed: {e}", peer.name))?;
    gw.counters.handshakes_out.fetch_add(1, Ordering::Relaxed);
    let peer_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| format!("{} presented no certificate", peer.name))?;
    let identity = crate::identity::identify(&peer_cert)
        .map_err(|e| format!("{}'s certificate: {e}", peer.name))?;
    if identity.organisation_id != peer.identity {
        return Err(format!(
            "the server at {}:{} is organisation {}, not {} as configured for peer {}",
            peer.host, peer.port, identity.organisation_id, peer.identity, peer.name
        ));
    }
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP handshake with {}: {e}", peer.name))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "relay connection closed");
        }
    });
    Ok(Connection { sender, peer_cert })
}

/// Exponential backoff with jitter: a random delay between half and all of
/// `initial · 2^(failures−1)`, capped at the maximum.
fn backoff(settings: &crate::config::RelaySettings, failures: u32) -> Duration {
    let exp = settings
        .initial_backoff
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let ceiling = exp.min(settings.max_backoff);
    let mut byte = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    ceiling / 2 + ceiling / 2 * u32::from(byte[0]) / 255
}
