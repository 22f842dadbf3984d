//! The local API: plain HTTP on loopback for the system next to the gateway (the HIS at
//! the practice, the case system at the wijkteam). Every call needs the bearer token;
//! every call that changes state names the acting user in `X-Wijkpoort-User`, who goes
//! into the audit record.
//!
//! | call | does |
//! | --- | --- |
//! | `POST /v1/messages` | submit a message for a peer; `202` once durably queued |
//! | `GET /v1/messages/{id}` | status, attempts, last error, receipt |
//! | `GET /v1/inbox` | received, unacknowledged messages |
//! | `POST /v1/inbox/{id}/ack` | acknowledge a received message |
//! | `POST /v1/consents` | record a consent (practice) |
//! | `POST /v1/consents/{id}/withdraw` | withdraw it; peers are told |
//! | `GET /v1/consents?bsn=…` | a child's consents and their status |
//! | `GET /healthz` | liveness |

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{json, read_body, refusal, Reply};
use crate::audit::{Actor, AuditEvent, Event, Outcome};
use crate::consent::{registry, ConsentRequest};
use crate::error::Refusal;
use crate::gateway::Gateway;
use crate::message::Bsn;
use crate::{inbox, outbox};

/// The header that names the acting local user.
pub const USER_HEADER: &str = "x-wijkpoort-user";

/// Accepts local API connections until `stop`, then lets open requests finish.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let gw = gw.clone();
                let mut stop = stop.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let gw = gw.clone();
                        async move { Ok::<_, Infallible>(handle(&gw, req).await) }
                    });
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            _ = stop.changed() => break,
        }
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

async fn handle(gw: &Arc<Gateway>, req: Request<Incoming>) -> Reply {
    match route(gw, req).await {
        Ok(reply) => reply,
        Err(r) => refusal(&r),
    }
}

async fn route(gw: &Arc<Gateway>, req: Request<Incoming>) -> Result<Reply, Refusal> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if req.method() == Method::GET && segments == ["healthz"] {
        return Ok(json(
            200,
            &json!({"status": "ok", "identity": gw.config.identity}),
        ));
    }
    authorise(gw, &req)?;
    match (req.method().clone(), segments.as_slice()) {
        (Method::POST, ["v1", "messages"]) => {
            let user = user(&req)?;
            let body = read_body(req.into_body()).await?;
            let accepted = crate::send::submit(gw, &user, &body).await?;
            Ok(json(202, &accepted))
        }
        (Method::GET, ["v1", "messages", id]) => {
            let msg = outbox::get(&gw.store, id)?.ok_or_else(|| Refusal::not_found("message"))?;
            Ok(json(200, &status_view(&msg)))
        }
        (Method::POST, ["v1", "consents"]) => {
            let user = user(&req)?;
            let body = read_body(req.into_body()).await?;
            let request: ConsentRequest = serde_json::from_slice(&body)
                .map_err(|e| Refusal::malformed(format!("the consent is not valid: {e}")))?;
            let consent_id = registry::record(gw, &user, request).await?;
            Ok(json(201, &json!({ "consent_id": consent_id })))
        }
        (Method::POST, ["v1", "consents", id, "withdraw"]) => {
            let user = user(&req)?;
            let body = read_body(req.into_body()).await?;
            let request: Withdrawal = if body.is_empty() {
                Withdrawal::default()
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| Refusal::malformed(format!("the withdrawal is not valid: {e}")))?
            };
            let updates = registry::withdraw(gw, &user, id, request.reason).await?;
            Ok(json(
                200,
                &json!({ "consent_id": id, "status": "withdrawn", "consent_updates": updates }),
            ))
        }
        (Method::GET, ["v1", "consents"]) => {
            let bsn = query_param(req.uri().query(), "bsn").ok_or_else(|| {
                Refusal::new(400, "missing_bsn", "name the child: ?bsn=…").field("bsn")
            })?;
            let bsn = Bsn::try_from(bsn)
                .map_err(|e| Refusal::new(400, "invalid_field", e).field("bsn"))?;
            let consents = registry::list_for_child(gw, &bsn)?;
            Ok(json(200, &json!({ "consents": consents })))
        }
        (Method::GET, ["v1", "inbox"]) => {
            let messages = inbox::unacknowledged(&gw.store, 1000)?;
            let view: Vec<_> = messages.iter().map(inbox_view).collect();
            Ok(json(200, &json!({ "messages": view })))
        }
        (Method::POST, ["v1", "inbox", id, "ack"]) => {
            let user = user(&req)?;
            acknowledge(gw, id, &user).await?;
            Ok(json(200, &json!({"id": id, "status": "acknowledged"})))
        }
        _ => Err(Refusal::new(
            404,
            "no_such_endpoint",
            format!(
                "{} {} is not an endpoint of the local API",
                req.method(),
                path
            ),
        )),
    }
}

/// The body of a withdrawal; the acting user is the one who withdraws.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Withdrawal {
    #[serde(default)]
    reason: String,
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn authorise(gw: &Gateway, req: &Request<Incoming>) -> Result<(), Refusal> {
    let presented = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Refusal::new(
                401,
                "unauthorised",
                "an Authorization: Bearer token is required",
            )
        })?;
    let expected = ring::digest::digest(&ring::digest::SHA256, gw.config.api_token.as_bytes());
    let given = ring::digest::digest(&ring::digest::SHA256, presented.trim().as_bytes());
    // Compare digests, so the comparison takes the same time wherever they differ.
    if expected.as_ref() != given.as_ref() {
        return Err(Refusal::new(
            401,
            "unauthorised",
            "the bearer token is not valid",
        ));
    }
    Ok(())
}

fn user(req: &Request<Incoming>) -> Result<String, Refusal> {
    let user = req
        .headers()
        .get(USER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    if user.is_empty() || user.len() > 100 || user.chars().any(char::is_control) {
        return Err(Refusal::new(
            400,
            "missing_user",
            "calls that change state must name the acting user in the X-Wijkpoort-User header (1-100 printable characters)",
        )
        .field("X-Wijkpoort-User"));
    }
    Ok(user.to_string())
}

async fn acknowledge(gw: &Arc<Gateway>, id: &str, user: &str) -> Result<(), Refusal> {
    let id = id.to_string();
    let user = user.to_string();
    let org = gw.config.identity.clone();
    gw.store
        .commit(move |tx| {
            let msg =
                inbox::load(tx, &id)?.ok_or_else(|| Refusal::not_found("received message"))?;
            if msg.acknowledged_at.is_some() {
                return Ok(());
            }
            tx.audit(
                AuditEvent::new(
                    Event::MessageAcknowledged,
                    Outcome::Success,
                    Actor::User { id: user.clone() },
                )
                .on_behalf_of(&org)
                .message(&msg.id, msg.message_type)
                .subject(msg.subject.clone())
                .peer(&msg.from)
                .consent(msg.consent_id.as_deref()),
            );
            inbox::acknowledge(tx, msg, &user)?;
            Ok(())
        })
        .await
}

fn status_view(msg: &outbox::SentMessage) -> serde_json::Value {
    json!({
        "id": msg.id,
        "type": msg.message_type,
        "peer": msg.peer,
        "status": msg.status,
        "attempts": msg.attempts,
        "last_error": msg.last_error,
        "receipt": msg.receipt,
        "created_at": msg.created_at,
        "updated_at": msg.updated_at,
    })
}

fn inbox_view(msg: &inbox::ReceivedMessage) -> serde_json::Value {
    let envelope: serde_json::Value =
        serde_json::from_str(&msg.envelope).unwrap_or(serde_json::Value::Null);
    json!({
        "id": msg.id,
        "type": msg.message_type,
        "from": msg.from,
        "received_at": msg.received_at,
        "envelope": envelope,
    })
}
