//! The mTLS listener: peers relay messages to `POST /v1/relay`; auditors read the audit
//! log under `/v1/audit/` (see [`crate::audit::service`]). The TLS layer has already refused anyone without a certificate chaining to a
//! trust anchor; here the certificate's organisation is looked up in the config, and a
//! failed handshake is logged and audited with its reason.

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

use super::{json, read_body, read_body_limited, refusal, Reply};
use crate::audit::{Actor, AuditEvent, Event, Outcome};
use crate::error::Refusal;
use crate::gateway::Gateway;
use crate::receive::{self, Caller};

/// `POST /v1/relay/batch`: several signed envelopes, each kept as its exact bytes.
#[derive(serde::Deserialize)]
struct RelayBatch<'a> {
    #[serde(borrow)]
    messages: Vec<BatchItem<'a>>,
}

#[derive(serde::Deserialize)]
struct BatchItem<'a> {
    signature: String,
    #[serde(borrow)]
    envelope: &'a serde_json::value::RawValue,
}

/// How long a client gets to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn serve(
    gw: Arc<Gateway>,
    tls: Arc<rustls::ServerConfig>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, remote)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                connections.spawn(connection(gw.clone(), acceptor.clone(), tcp, remote, stop.clone()));
            }
            _ = stop.changed() => break,
        }
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

async fn connection(
    gw: Arc<Gateway>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            refuse_handshake(&gw, remote, &e.to_string()).await;
            return;
        }
        Err(_) => {
            refuse_handshake(&gw, remote, "the TLS handshake timed out").await;
            return;
        }
    };
    gw.counters.handshakes_in.fetch_add(1, Ordering::Relaxed);
    // Take the verified certificate before hyper owns the stream.
    let Some(cert) = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
    else {
        refuse_handshake(&gw, remote, "no client certificate").await;
        return;
    };
    let caller = Arc::new(Caller {
        remote,
        identity: crate::identity::identify(&cert),
        cert,
    });
    let service = service_fn(move |req| {
        let gw = gw.clone();
        let caller = caller.clone();
        async move { Ok::<_, Infallible>(handle(&gw, &caller, req).await) }
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
async fn refuse_handshake(gw: &Gateway, remote: SocketAddr, reason: &str) {
    tracing::warn!(remote = %remote, reason, "TLS handshake refused");
    let event = AuditEvent::new(
        Event::CertificateRefused,
        Outcome::Refused,
        Actor::Unknown {
            remote: remote.to_string(),
        },
    )
    .on_behalf_of(&gw.config.identity)
    .reason(format!("TLS handshake refused: {reason}"));
    if let Err(e) = gw.store.commit_audit(vec![event]).await {
        tracing::error!(error = %e, "could not audit a refused handshake");
    }
}

async fn handle(gw: &Arc<Gateway>, caller: &Caller, req: Request<Incoming>) -> Reply {
    match route(gw, caller, req).await {
        Ok(reply) => reply,
        Err(r) => refusal(&r),
    }
}

async fn route(
    gw: &Arc<Gateway>,
    caller: &Caller,
    req: Request<Incoming>,
) -> Result<Reply, Refusal> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/v1/relay") => {
            let signature = req
                .headers()
                .get("x-wijkpoort-signature")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = match read_body(req.into_body()).await {
                Ok(body) => body,
                Err(r) => return Err(audited(gw, caller, r).await),
            };
            let receipt = receive::relay(gw, caller, signature.as_deref(), &body).await?;
            Ok(json(200, &receipt))
        }
        (Method::POST, "/v1/relay/batch") => {
            let body = match read_body_limited(req.into_body(), crate::relay::MAX_BATCH_BYTES).await
            {
                Ok(body) => body,
                Err(r) => return Err(audited(gw, caller, r).await),
            };
            let batch: RelayBatch<'_> = match serde_json::from_slice(&body) {
                Ok(batch) => batch,
                Err(e) => {
                    let r = Refusal::malformed(format!(
                        "the batch is not valid: {}",
                        crate::error::describe_json_error(&e)
                    ));
                    return Err(audited(gw, caller, r).await);
                }
            };
            if batch.messages.len() > crate::relay::MAX_BATCH {
                let r = Refusal::new(
                    413,
                    "batch_too_large",
                    format!("a batch holds at most {} messages", crate::relay::MAX_BATCH),
                );
                return Err(audited(gw, caller, r).await);
            }
            let items = batch
                .messages
                .into_iter()
                .map(|m| receive::Relayed {
                    signature: Some(m.signature),
                    envelope: m.envelope.get().as_bytes().to_vec(),
                })
                .collect();
            let results = receive::relay_batch(gw, caller, items).await?;
            let answers: Vec<serde_json::Value> = results
                .into_iter()
                .map(|r| match r {
                    Ok(receipt) => serde_json::json!({ "receipt": receipt }),
                    Err(refusal) => {
                        serde_json::json!({ "refusal": refusal, "status": refusal.status })
                    }
                })
                .collect();
            Ok(json(200, &serde_json::json!({ "results": answers })))
        }
        (method, p) if p.starts_with(crate::audit::service::PREFIX) => {
            Ok(crate::audit::service::handle(gw, caller, &method, req.uri()).await)
        }
        _ => Err(Refusal::new(
            404,
            "no_such_endpoint",
            format!(
                "{} {} is not an endpoint of the mTLS listener",
                req.method(),
                path
            ),
        )),
    }
}

/// Audits a refusal that happened before the receive path could look at the message.
async fn audited(gw: &Gateway, caller: &Caller, r: Refusal) -> Refusal {
    let mut event = AuditEvent::new(Event::MessageRefused, Outcome::Refused, caller.actor())
        .on_behalf_of(&gw.config.identity)
        .reason(format!("{}: {}", r.code, r.message));
    if let Ok(id) = &caller.identity {
        event = event.peer(&id.organisation_id);
    }
    if let Err(e) = gw.store.commit_audit(vec![event]).await {
        tracing::error!(error = %e, "could not audit a refusal");
    }
    r
}
