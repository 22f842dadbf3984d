//! The mTLS listener: peers relay batches of messages to `POST /v1/relay/batch`;
//! auditors read the audit log under `/v1/audit/` ([`super::audit`]). The TLS layer has
//! already refused anyone without a certificate chaining to a trust anchor; here the
//! certificate's organisation is looked up — a caller that is no configured peer is
//! refused before its batch is read — and a failed handshake is logged and audited with
//! its reason: by the certificate's organisation and serial if a configured issuing CA
//! issued it (a revoked or expired peer), else summarised under a flood (see
//! [`super::limits::Refusals`]).
//!
//! The [`Listener`] holds the TLS server config, the issuing CAs by which a caller's
//! certificate is identified ([`Issuers`]), the receive path, the audit service, and
//! what it needs to audit refusals itself (the store, who this gateway is, the
//! handshake counter), and the limits it enforces ([`super::limits`]): the connection
//! caps, the unidentified connections' gate, the handshake rate, the timeouts, the
//! per-peer request slots and the disk reserve.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::audit::{AuditService, PREFIX as AUDIT_PREFIX};
use super::limits::{
    self, Bounds, DiskGuard, Gate, IdentifiedRefusal, PeerSlots, Refusals, TokenBucket,
};
use super::{json, refusal, status, Reply};
use crate::caller::Caller;
use crate::chain::{Event, Outcome};
use crate::config::Limits;
use crate::error::{Code, Refusal};
use crate::issuers::Issuers;
use crate::live::Live;
use crate::local::Local;
use crate::receive::{ReceivePath, Relayed};
use crate::revocation::CrlSet;
use crate::stats::Counters;
use crate::store::Store;
use crate::tls;
use crate::wire::{BatchAnswer, BatchRequest, ItemAnswer, BATCH_PATH, MAX_BATCH, MAX_BATCH_BYTES};

/// The mTLS listener of one gateway.
#[derive(Clone)]
pub struct Listener {
    /// Swapped whole by a reload (new trust anchors or revocation lists).
    tls: Live<Arc<rustls::ServerConfig>>,
    crls: Live<CrlSet>,
    /// The issuing CAs by which a caller's certificate is identified; swapped with the TLS
    /// config.
    issuers: Live<Issuers>,
    receive: ReceivePath,
    audit: AuditService,
    store: Store,
    local: Arc<Local>,
    counters: Arc<Counters>,
    guards: Arc<Guards>,
}

/// The limits of one listener and what enforces them.
struct Guards {
    limits: Limits,
    connections: Arc<Semaphore>,
    handshakes: Arc<TokenBucket>,
    gate: Arc<Gate>,
    refusals: Arc<Refusals>,
    slots: PeerSlots,
    disk: DiskGuard,
}

impl Listener {
    // One argument per part it holds (the table in `gateway.rs`), plus its bounds.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tls: Live<Arc<rustls::ServerConfig>>,
        crls: Live<CrlSet>,
        issuers: Live<Issuers>,
        receive: ReceivePath,
        audit: AuditService,
        store: Store,
        local: Arc<Local>,
        counters: Arc<Counters>,
        bounds: Bounds,
    ) -> Listener {
        let Bounds { limits, disk } = bounds;
        let limits = &limits;
        let guards = Guards {
            limits: limits.clone(),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            handshakes: Arc::new(TokenBucket::new(
                limits.handshakes_per_sec,
                limits.handshake_burst,
            )),
            gate: Gate::new(limits),
            refusals: Refusals::new(store.clone(), local.clone(), limits),
            slots: PeerSlots::new(limits),
            disk,
        };
        Listener {
            tls,
            crls,
            issuers,
            receive,
            audit,
            store,
            local,
            counters,
            guards: Arc::new(guards),
        }
    }

    /// Accepts connections until `stop`, then lets open requests finish and writes the
    /// last summary of refused clients.
    pub async fn serve(self, listener: TcpListener, stop: watch::Receiver<bool>) {
        let summaries = tokio::spawn(self.guards.refusals.clone().run(stop.clone()));
        let this = self.clone();
        let conn_stop = stop.clone();
        limits::accept_loop(
            "mtls",
            listener,
            self.guards.connections.clone(),
            Some(self.guards.handshakes.clone()),
            limits::AcceptCounts {
                accepted: self.counters.accepts_in.clone(),
                failed: self.counters.accept_failures_in.clone(),
            },
            stop,
            move |tcp, remote, permit| {
                this.clone()
                    .connection(tcp, remote, permit, conn_stop.clone())
            },
        )
        .await;
        let _ = summaries.await;
        // The last summary only once every connection task has finished: a refusal
        // still being recorded at stop would otherwise start a new interval of its own.
        self.guards.refusals.flush().await;
    }

    async fn connection(
        self,
        tcp: TcpStream,
        remote: SocketAddr,
        _permit: OwnedSemaphorePermit,
        stop: watch::Receiver<bool>,
    ) {
        let mut place = match self.guards.gate.admit(remote.ip()) {
            Ok(place) => place,
            Err(why) => {
                self.guards.refusals.refuse(remote, why).await;
                return;
            }
        };
        let acceptor = TlsAcceptor::from(self.tls.current().as_ref().clone());
        let handshake = tls::noting_refused_certificate(tokio::time::timeout(
            self.guards.limits.handshake_timeout,
            acceptor.accept(tcp),
        ));
        let tls = tokio::select! {
            done = handshake => match done {
                (Ok(Ok(tls)), _) => tls,
                (Ok(Err(e)), refused) => {
                    let reason = crate::stats::handshake_failure_reason(&e);
                    self.counters.handshake_failed("in", reason);
                    match refused.and_then(|r| self.identified_refusal(&r)) {
                        Some(refused) => {
                            self.guards.refusals.refuse_identified(remote, refused).await;
                        }
                        None => self.refuse_handshake(remote, &handshake_error(&e)).await,
                    }
                    return;
                }
                (Err(_), _) => {
                    self.counters.handshake_failed("in", "timeout");
                    self.refuse_handshake(remote, "the TLS handshake timed out").await;
                    return;
                }
            },
            _ = place.evicted() => {
                self.guards.refusals.refuse(remote, limits::EVICTED).await;
                return;
            }
        };
        self.counters.handshakes_in.fetch_add(1, Ordering::Relaxed);
        // Take the verified certificate before hyper owns the stream.
        let presented: Vec<Vec<u8>> = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.to_vec()).collect())
            .unwrap_or_default();
        let Some((cert, intermediates)) = presented.split_first() else {
            self.counters.handshake_failed("in", "no_certificate");
            self.refuse_handshake(remote, "no client certificate").await;
            return;
        };
        let cert = cert.clone();
        let issuers = self.issuers.current();
        let identity = issuers.identify(&cert);
        let signing = match &identity {
            Ok(id) => crate::caller::signing_certificates(
                tls.get_ref().1.peer_certificates().unwrap_or_default(),
                &id.organisation_id,
                &issuers,
                &self.crls.current(),
                self.local.clock.now(),
            ),
            Err(_) => Vec::new(),
        };
        for p in &signing {
            if let crate::caller::Presented::Refused {
                fingerprint,
                reason,
            } = p
            {
                tracing::warn!(remote = %remote, certificate = %fingerprint, reason = %reason, "a presented signing certificate is refused");
            }
        }
        let caller = Arc::new(Caller {
            remote,
            intermediates: intermediates.to_vec(),
            identity,
            cert,
            signing,
        });
        // A configured peer or auditor leaves the unidentified connections (and their
        // caps) here; anyone else keeps its place there, and may be closed for a newer one.
        let identified = self.receive.knows(&caller) || self.audit.is_auditor(&caller);
        if let Some(org) = caller
            .organisation()
            .filter(|_| self.receive.knows(&caller))
        {
            self.counters
                .peer_certificate_seen(org.as_str(), &caller.cert);
        }
        let limits = self.guards.limits.clone();
        let listener = Arc::new(self);
        let serve = limits::serve_http(tls, &limits, stop, move |req| {
            let listener = listener.clone();
            let caller = caller.clone();
            async move { listener.handle(&caller, req).await }
        });
        if identified {
            drop(place);
            serve.await;
        } else {
            tokio::select! {
                _ = serve => {}
                _ = place.evicted() => {}
            }
        }
    }

    /// The certificate that the TLS layer refused, as an identified refusal if one of the
    /// configured issuing CAs issued it (issuer name and signature, read by its rule):
    /// then it is a real organisation's certificate (revoked, expired, under a stale
    /// revocation list, sent without its intermediate) and its refusal is audited by
    /// name. Anything else — a certificate anyone could have made — is unidentified.
    fn identified_refusal(&self, refused: &tls::RefusedCertificate) -> Option<IdentifiedRefusal> {
        let identity = self.issuers.current().identify(&refused.end_entity).ok()?;
        Some(IdentifiedRefusal {
            organisation: identity.organisation_id.to_string(),
            serial: identity.serial,
            reason: format!(
                "TLS handshake refused: {}",
                certificate_refusal(&refused.error)
            ),
        })
    }

    /// A handshake the TLS layer refused: no certificate, an untrusted one, a bare
    /// connect. Audited as summaries under a flood.
    async fn refuse_handshake(&self, remote: SocketAddr, reason: &str) {
        self.guards
            .refusals
            .refuse(remote, &format!("TLS handshake refused: {reason}"))
            .await;
    }

    async fn handle(&self, caller: &Caller, req: Request<Incoming>) -> Reply {
        // Per-peer fairness: a configured peer or auditor has a bounded number of
        // requests in progress; others are refused before anything is read anyway.
        let _slot = match caller.organisation() {
            Some(org) if self.receive.knows(caller) || self.audit.is_auditor(caller) => {
                match self.guards.slots.take(org.as_str()) {
                    Ok(slot) => Some(slot),
                    Err(r) => return refusal(&r),
                }
            }
            _ => None,
        };
        match self.route(caller, req).await {
            Ok(reply) => reply,
            // A caller that is no peer is told so once per connection.
            Err(r) if r.code == Code::UnknownPeer => limits::close(refusal(&r)),
            Err(r) => refusal(&r),
        }
    }

    async fn route(&self, caller: &Caller, req: Request<Incoming>) -> Result<Reply, Refusal> {
        let crls = self.crls.current();
        if crls.is_revoked(&caller.cert) {
            tracing::warn!(remote = %caller.remote, "a revoked certificate's connection is closed");
            let r = Refusal::new(
                Code::CertificateRevoked,
                if crls.unchecked(&caller.cert) {
                    "the client certificate cannot be checked for revocation: no list of its CA has been fetched yet"
                } else {
                    "the client certificate of this connection has been revoked"
                },
            );
            return Err(self.audited(caller, r).await);
        }
        if caller.expired(self.local.clock.now()) {
            let r = Refusal::new(
                Code::CertificateExpired,
                "the client certificate of this connection has expired; connect again with a valid one",
            );
            return Err(self.audited(caller, r).await);
        }
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::POST, BATCH_PATH) => self.relay_batch(caller, req).await,
            (method, p) if p.starts_with(AUDIT_PREFIX) => {
                Ok(self.audit.handle(caller, &method, req.uri()).await)
            }
            _ => Err(Refusal::new(
                Code::NoSuchEndpoint,
                format!(
                    "{} {} is not an endpoint of the mTLS listener",
                    req.method(),
                    path
                ),
            )),
        }
    }

    /// `POST /v1/relay/batch`.
    async fn relay_batch(&self, caller: &Caller, req: Request<Incoming>) -> Result<Reply, Refusal> {
        // Refuse before reading: nothing of the body is read for a caller that is no
        // configured peer, nor while the disk is down to its reserve.
        if !self.receive.knows(caller) {
            let r = Refusal::new(
                Code::UnknownPeer,
                match &caller.identity {
                    Ok(id) => format!(
                        "organisation {} is not a configured peer of this gateway",
                        id.organisation_id
                    ),
                    // Why its issuing CA's rule gives it no identity, in the audit record.
                    Err(e) => format!("the client certificate names no organisation: {e}"),
                },
            );
            return Err(self.audited(caller, r).await);
        }
        self.guards.disk.check()?;
        let limit = MAX_BATCH_BYTES;
        let body = match limits::read_body(req, limit, self.guards.limits.body_read_timeout).await {
            Ok(body) => body,
            Err(r) => return Err(self.audited(caller, r).await),
        };
        let batch: BatchRequest<'_> = match serde_json::from_slice(&body) {
            Ok(batch) => batch,
            Err(e) => {
                let r = Refusal::malformed(format!(
                    "the batch is not valid: {}",
                    crate::error::describe_json_error(&e)
                ));
                return Err(self.audited(caller, r).await);
            }
        };
        if batch.messages.len() > MAX_BATCH {
            let r = Refusal::new(
                Code::BatchTooLarge,
                format!("a batch holds at most {MAX_BATCH} messages"),
            );
            return Err(self.audited(caller, r).await);
        }
        let items = batch
            .messages
            .into_iter()
            .map(|m| Relayed {
                batch: m.batch,
                signature: m.signature.map(|s| s.into_owned()),
                envelope: m.envelope.get().as_bytes().to_vec(),
            })
            .collect();
        let results = self
            .receive
            .receive_batch(caller, batch.batch_signature, items)
            .await?;
        let answer = BatchAnswer {
            results: results
                .into_iter()
                .map(|r| match r {
                    Ok(receipt) => ItemAnswer {
                        receipt: Some(receipt),
                        ..ItemAnswer::default()
                    },
                    Err(refusal) => ItemAnswer {
                        status: Some(status(refusal.code).as_u16()),
                        refusal: serde_json::to_value(&refusal).ok(),
                        receipt: None,
                    },
                })
                .collect(),
        };
        Ok(json(200, &answer))
    }

    /// Audits a refusal that happened before the receive path could look at the message.
    async fn audited(&self, caller: &Caller, r: Refusal) -> Refusal {
        let event = if r.code == Code::UnknownPeer {
            Event::CertificateRefused
        } else {
            Event::MessageRefused
        };
        let mut event = self
            .local
            .event(event, Outcome::Refused, caller.actor())
            .reason(r.reason());
        if let Some(org) = caller.organisation() {
            event = event.peer(org);
        }
        if let Err(e) = self.store.commit_audit(vec![event]).await {
            tracing::error!(error = %e, "could not audit a refusal");
        }
        r
    }
}

/// Why the verifier refused a certificate, in words, with rustls' own error.
fn certificate_refusal(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let what = match e {
        rustls::Error::InvalidCertificate(C::Revoked) => "the certificate is revoked",
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the certificate has expired"
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "the certificate is not valid yet"
        }
        rustls::Error::InvalidCertificate(
            C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. },
        ) => "its CA's revocation list is past its next update",
        rustls::Error::InvalidCertificate(C::UnknownRevocationStatus) => {
            "its revocation status is unknown (no revocation list of its CA)"
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "the certificate does not chain to a trust anchor (an intermediate missing?)"
        }
        _ => "the certificate was refused",
    };
    format!("{what} ({e})")
}

/// A failed handshake's reason, as audited: a client that closed before finishing (a
/// bare connect, a port scan) is one reason, whatever the I/O error said.
fn handshake_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe => {
            "the connection closed before the handshake completed".to_string()
        }
        _ => e.to_string(),
    }
}
