//! The mTLS listener: peers relay batches of messages to `POST /v1/relay/batch`;
//! auditors read the audit log under `/v1/audit/` ([`super::audit`]). The TLS layer has
//! already refused anyone without a certificate chaining to a trust anchor; here the
//! certificate's organisation is looked up — a caller that is no configured peer is
//! refused before its batch is read — and a failed handshake is logged and audited with
//! its reason.
//!
//! The [`Listener`] holds the TLS server config, the receive path, the audit service,
//! and what it needs to audit refusals itself (the store, who this gateway is, the
//! handshake counter).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::audit::{AuditService, PREFIX as AUDIT_PREFIX};
use super::{json, read_body_limited, refusal, status, Reply};
use crate::caller::Caller;
use crate::chain::{Actor, Event, Outcome};
use crate::error::{Code, Refusal};
use crate::live::Live;
use crate::local::Local;
use crate::receive::{ReceivePath, Relayed};
use crate::revocation::CrlSet;
use crate::stats::Counters;
use crate::store::Store;
use crate::wire::{BatchAnswer, BatchRequest, ItemAnswer, BATCH_PATH, MAX_BATCH, MAX_BATCH_BYTES};

/// How long a client gets to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The mTLS listener of one gateway.
#[derive(Clone)]
pub struct Listener {
    /// Swapped whole by a reload (new trust anchors or revocation lists).
    tls: Live<Arc<rustls::ServerConfig>>,
    crls: Live<CrlSet>,
    receive: ReceivePath,
    audit: AuditService,
    store: Store,
    local: Arc<Local>,
    counters: Arc<Counters>,
}

impl Listener {
    pub fn new(
        tls: Live<Arc<rustls::ServerConfig>>,
        crls: Live<CrlSet>,
        receive: ReceivePath,
        audit: AuditService,
        store: Store,
        local: Arc<Local>,
        counters: Arc<Counters>,
    ) -> Listener {
        Listener {
            tls,
            crls,
            receive,
            audit,
            store,
            local,
            counters,
        }
    }

    /// Accepts connections until `stop`, then lets open requests finish.
    pub async fn serve(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((tcp, remote)) = accepted else { continue };
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(self.clone().connection(tcp, remote, stop.clone()));
                }
                _ = stop.changed() => break,
            }
            while connections.try_join_next().is_some() {}
        }
        while connections.join_next().await.is_some() {}
    }

    async fn connection(
        self,
        tcp: tokio::net::TcpStream,
        remote: SocketAddr,
        mut stop: watch::Receiver<bool>,
    ) {
        let acceptor = TlsAcceptor::from(self.tls.current().as_ref().clone());
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                self.refuse_handshake(remote, &e.to_string()).await;
                return;
            }
            Err(_) => {
                self.refuse_handshake(remote, "the TLS handshake timed out")
                    .await;
                return;
            }
        };
        self.counters.handshakes_in.fetch_add(1, Ordering::Relaxed);
        // Take the verified certificate before hyper owns the stream.
        let Some(cert) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
        else {
            self.refuse_handshake(remote, "no client certificate").await;
            return;
        };
        let caller = Arc::new(Caller {
            remote,
            identity: crate::identity::identify(&cert),
            cert,
        });
        let listener = Arc::new(self);
        let service = service_fn(move |req| {
            let listener = listener.clone();
            let caller = caller.clone();
            async move { Ok::<_, Infallible>(listener.handle(&caller, req).await) }
        });
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(tls), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }

    /// A handshake the TLS layer refused: no certificate, an untrusted or expired one.
    async fn refuse_handshake(&self, remote: SocketAddr, reason: &str) {
        tracing::warn!(remote = %remote, reason, "TLS handshake refused");
        let event = self
            .local
            .event(
                Event::CertificateRefused,
                Outcome::Refused,
                Actor::Unknown {
                    remote: remote.to_string(),
                },
            )
            .reason(format!("TLS handshake refused: {reason}"));
        if let Err(e) = self.store.commit_audit(vec![event]).await {
            tracing::error!(error = %e, "could not audit a refused handshake");
        }
    }

    async fn handle(&self, caller: &Caller, req: Request<Incoming>) -> Reply {
        match self.route(caller, req).await {
            Ok(reply) => reply,
            Err(r) => refusal(&r),
        }
    }

    async fn route(&self, caller: &Caller, req: Request<Incoming>) -> Result<Reply, Refusal> {
        if self.crls.current().is_revoked(&caller.cert) {
            tracing::warn!(remote = %caller.remote, "a revoked certificate's connection is closed");
            let r = Refusal::new(
                Code::CertificateRevoked,
                "the client certificate of this connection has been revoked",
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
        let body = match read_body_limited(req.into_body(), MAX_BATCH_BYTES).await {
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
                signature: m.signature.map(|s| s.into_owned()),
                envelope: m.envelope.get().as_bytes().to_vec(),
            })
            .collect();
        let results = self.receive.receive_batch(caller, items).await?;
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
        let mut event = self
            .local
            .event(Event::MessageRefused, Outcome::Refused, caller.actor())
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
