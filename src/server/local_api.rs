//! The local API: plain HTTP on loopback for the system next to the gateway (the HIS at
//! the practice, the case system at the wijkteam). Every call needs the bearer token;
//! every call that changes state or reads personal data names the acting user in
//! `X-Wijkpoort-User`, who goes into the audit record.
//!
//! Reads of personal data are audited (NEN 7513: who looked at which child's data,
//! when): `GET /v1/inbox`, `GET /v1/inbox/{from}/{id}` and `POST /v1/consents/query`
//! each write one `personal_data_read` record per request, naming the messages it
//! returned and the pseudonyms of the children they are about, committed before the
//! answer leaves — a case system that polls the inbox costs one record per page, not one
//! per message. An inbox page that returns nothing writes no record: it showed no one's
//! data. A consent query always writes one, since asking about a child is itself a look
//! at that child. `GET /v1/messages/{id}` is not audited and needs no user: it shows the
//! status, peer, attempts, refusal text and receipt (hashes and a signature), none of
//! which is personal data. The BSN of a consent query travels in the POST body, never in
//! the URL, so that it does not end up in access logs or proxies.
//!
//! | call | does |
//! | --- | --- |
//! | `POST /v1/messages` | submit a message for a peer; `202` once durably queued |
//! | `GET /v1/messages/{id}` | status, attempts, last error, receipt |
//! | `GET /v1/inbox?after=&limit=&from=&type=` | received, unacknowledged messages, a page at a time (audited) |
//! | `GET /v1/inbox/{from}/{id}` | one received message, by its sender and the sender's id (audited) |
//! | `POST /v1/inbox/{from}/{id}/ack` | acknowledge a received message |
//! | `POST /v1/consents` | record a consent (practice) |
//! | `POST /v1/consents/{id}/withdraw` | withdraw it; peers are told |
//! | `POST /v1/consents/query` | a child's consents and their status; `{"bsn": …}` in the body (audited) |
//! | `GET /v1/stats` | counters: commits, syncs, handshakes, queue depths |
//! | `POST /v1/reload` | reload the config file (peers, auditors, relay, policy), as SIGHUP does |
//! | `POST /v1/store/backup` | a consistent copy of the store, taken between two group commits (`wijkpoort store backup`) |
//! | `GET /healthz` | liveness: 200 `ok`, or 503 `store_failed` once the store refuses writes |
//! | `GET /v1/openapi.json` | the OpenAPI 3.1 document of this API ([`OPENAPI`]), no token needed |
//!
//! The limits ([`super::limits`]): at most `local_api_max_connections` open connections,
//! the header, body, idle and request timeouts, and the disk reserve (a submission or a
//! consent is answered 503 `disk_full` below it; reads and acknowledgements go on).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request};
use ring::hmac;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::limits::{self, Bounds, DiskGuard};
use super::{json, refusal, Reply};
use crate::chain::{Actor, Event, Outcome};
use crate::config::Limits;
use crate::consent::ConsentRequest;
use crate::consent_desk::ConsentDesk;
use crate::error::{Code, Refusal};
use crate::identity::OrgId;
use crate::local::Local;
use crate::message::Bsn;
use crate::message::MAX_MESSAGE_BYTES;
use crate::reload::Reloader;
use crate::send::SendPath;
use crate::stats::Stats;
use crate::store::Store;
use crate::{inbox, outbox};

/// The OpenAPI 3.1 document of the local API (`config/openapi.json`); a test checks real
/// responses against it.
pub const OPENAPI: &str = include_str!("../../config/openapi.json");

fn openapi() -> Reply {
    hyper::Response::builder()
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            OPENAPI.as_bytes(),
        )))
        .unwrap_or_else(|_| hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new())))
}

/// A binary answer (the backup stream).
fn octets(bytes: Vec<u8>) -> Reply {
    hyper::Response::builder()
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
        .body(http_body_util::Full::new(bytes::Bytes::from(bytes)))
        .unwrap_or_else(|_| hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new())))
}

/// The header that names the acting local user.
pub const USER_HEADER: &str = "x-wijkpoort-user";

/// The local API of one gateway: the token it checks, the send path and the consent
/// desk it calls, the store it reads the outbox and inbox from, and the stats it shows.
#[derive(Clone)]
pub struct LocalApi {
    token: Arc<Token>,
    send: SendPath,
    desk: ConsentDesk,
    store: Store,
    local: Arc<Local>,
    stats: Stats,
    reloader: Reloader,
    limits: Limits,
    disk: DiskGuard,
}

impl LocalApi {
    // One argument per part it holds (the table in `gateway.rs`), plus its bounds.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        api_token: &str,
        send: SendPath,
        desk: ConsentDesk,
        store: Store,
        local: Arc<Local>,
        stats: Stats,
        reloader: Reloader,
        bounds: Bounds,
    ) -> LocalApi {
        let Bounds { limits, disk } = bounds;
        LocalApi {
            token: Arc::new(Token::new(api_token)),
            send,
            desk,
            store,
            local,
            stats,
            reloader,
            limits,
            disk,
        }
    }

    /// Accepts local API connections until `stop`, then lets open requests finish.
    pub async fn serve(self, listener: TcpListener, stop: watch::Receiver<bool>) {
        let cap = Arc::new(Semaphore::new(self.limits.local_api_max_connections));
        let limits = self.limits.clone();
        let api = Arc::new(self);
        let conn_stop = stop.clone();
        limits::accept_loop(
            "local_api",
            listener,
            cap,
            None,
            limits::AcceptCounts::default(),
            stop,
            move |tcp, _remote, permit| {
                let api = api.clone();
                let limits = limits.clone();
                let stop = conn_stop.clone();
                async move {
                    let _permit = permit;
                    limits::serve_http(tcp, &limits, stop, move |req| {
                        let api = api.clone();
                        async move { api.handle(req).await }
                    })
                    .await;
                }
            },
        )
        .await;
    }

    /// A body of at most [`MAX_MESSAGE_BYTES`], read within the body timeout.
    async fn body(&self, req: Request<Incoming>) -> Result<bytes::Bytes, Refusal> {
        limits::read_body(req, MAX_MESSAGE_BYTES, self.limits.body_read_timeout).await
    }

    async fn handle(&self, req: Request<Incoming>) -> Reply {
        match self.route(req).await {
            Ok(reply) => reply,
            Err(r) => refusal(&r),
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Reply, Refusal> {
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if req.method() == Method::GET && segments == ["healthz"] {
            if let Some(reason) = self.store.failure() {
                return Ok(json(
                    503,
                    &json!({"status": "store_failed", "reason": reason, "identity": self.local.identity}),
                ));
            }
            return Ok(json(
                200,
                &json!({"status": "ok", "identity": self.local.identity, "accepting": !self.disk.is_low()}),
            ));
        }
        if req.method() == Method::GET && segments == ["v1", "openapi.json"] {
            return Ok(openapi());
        }
        self.token.check(&req)?;
        match (req.method().clone(), segments.as_slice()) {
            (Method::POST, ["v1", "messages"]) => {
                let user = user(&req)?;
                self.disk.check()?;
                let body = self.body(req).await?;
                let accepted = self.send.submit(&user, &body).await?;
                Ok(json(202, &accepted))
            }
            (Method::GET, ["v1", "messages", id]) => {
                let msg = outbox::get_without_envelope(&self.store, id)?
                    .ok_or_else(|| Refusal::not_found("message"))?;
                Ok(json(200, &status_view(&msg)))
            }
            (Method::POST, ["v1", "consents"]) => {
                let user = user(&req)?;
                self.disk.check()?;
                let body = self.body(req).await?;
                let request: ConsentRequest = serde_json::from_slice(&body)
                    .map_err(|e| Refusal::malformed(format!("the consent is not valid: {e}")))?;
                let recorded = self.desk.record(&user, request).await?;
                Ok(json(
                    201,
                    &json!({ "consent_id": recorded.consent_id, "effective_until": recorded.effective_until }),
                ))
            }
            (Method::POST, ["v1", "consents", id, "withdraw"]) => {
                let user = user(&req)?;
                let body = self.body(req).await?;
                let request: Withdrawal = if body.is_empty() {
                    Withdrawal::default()
                } else {
                    serde_json::from_slice(&body).map_err(|e| {
                        Refusal::malformed(format!("the withdrawal is not valid: {e}"))
                    })?
                };
                let updates = self.desk.withdraw(&user, id, request.reason).await?;
                Ok(json(
                    200,
                    &json!({ "consent_id": id, "status": "withdrawn", "consent_updates": updates }),
                ))
            }
            (Method::POST, ["v1", "consents", "query"]) => {
                let user = user(&req)?;
                let body = self.body(req).await?;
                let query: ConsentQuery = serde_json::from_slice(&body).map_err(|e| {
                    Refusal::new(
                        Code::MissingBsn,
                        format!(
                            "name the child: {{\"bsn\": \"…\"}} ({})",
                            crate::error::describe_json_error(&e)
                        ),
                    )
                    .field("bsn")
                })?;
                let bsn = Bsn::try_from(query.bsn)
                    .map_err(|e| Refusal::new(Code::InvalidField, e).field("bsn"))?;
                let listed = self.desk.list_for_child(&bsn)?;
                let ids: Vec<String> = listed
                    .consents
                    .iter()
                    .filter_map(|c| c["consent_id"].as_str().map(str::to_string))
                    .collect();
                let reason = format!(
                    "POST /v1/consents/query: {} consent(s){}{}",
                    ids.len(),
                    if ids.is_empty() { "" } else { ": " },
                    ids.join(", ")
                );
                self.audit_read(&user, reason, Vec::new(), vec![listed.pseudonym])
                    .await?;
                Ok(json(200, &json!({ "consents": listed.consents })))
            }
            (Method::GET, ["v1", "consents"]) => Err(Refusal::new(
                Code::BsnInUrl,
                "a child's consents are asked with POST /v1/consents/query and {\"bsn\": \"…\"} in the body, so that the BSN stays out of URLs and access logs",
            )),
            (Method::GET, ["v1", "stats"]) => Ok(json(200, &self.stats.snapshot())),
            (Method::POST, ["v1", "reload"]) => {
                let user = user(&req)?;
                match self.reloader.reload().await {
                    Ok(done) => {
                        tracing::info!(user = %user, "reload asked through the local API");
                        Ok(json(200, &json!({ "status": "reloaded", "changes": done })))
                    }
                    Err(e) => Err(Refusal::new(Code::ReloadRefused, e.to_string())),
                }
            }
            (Method::POST, ["v1", "store", "backup"]) => {
                let user = user(&req)?;
                let stream = crate::backup::take_online(&self.store)
                    .await
                    .map_err(|e| Refusal::new(Code::StoreUnavailable, e.to_string()))?;
                tracing::info!(
                    user = %user,
                    bytes = stream.bytes.len(),
                    commits_paused_ms = stream.commits_paused.as_secs_f64() * 1000.0,
                    "store copied for a backup"
                );
                Ok(octets(stream.bytes))
            }
            (Method::GET, ["v1", "inbox"]) => {
                let user = user(&req)?;
                let query = inbox_query(req.uri().query())?;
                let page = inbox::page(&self.store, &query)?;
                if !page.messages.is_empty() {
                    let ids = page.messages.iter().map(|(_, m)| m.id.clone()).collect();
                    let subjects = page
                        .messages
                        .iter()
                        .filter_map(|(_, m)| m.subject.clone())
                        .collect();
                    let reason = format!("GET /v1/inbox: {} message(s)", page.messages.len());
                    self.audit_read(&user, reason, ids, subjects).await?;
                }
                let view: Vec<_> = page
                    .messages
                    .iter()
                    .map(|(cursor, m)| inbox_view(*cursor, m))
                    .collect();
                Ok(json(
                    200,
                    &json!({ "messages": view, "next_cursor": page.next.map(|c| c.to_string()) }),
                ))
            }
            (Method::GET, ["v1", "inbox", from, id]) => {
                let user = user(&req)?;
                let from = OrgId::new(*from);
                let msg = inbox::get(&self.store, &from, id)?
                    .ok_or_else(|| Refusal::not_found("received message"))?;
                self.audit_read(
                    &user,
                    format!("GET /v1/inbox/{{from}}/{{id}}: one {} message", msg.message_type),
                    vec![msg.id.clone()],
                    msg.subject.iter().cloned().collect(),
                )
                .await?;
                let cursor = msg
                    .inbox_key
                    .as_deref()
                    .and_then(|k| k.try_into().ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or_default();
                let mut view = inbox_view(cursor, &msg);
                view["acknowledged_at"] = json!(msg.acknowledged_at);
                view["acknowledged_by"] = json!(msg.acknowledged_by);
                view["receipt"] = json!(msg.receipt);
                view["body_purged"] = json!(msg.body_purged);
                Ok(json(200, &view))
            }
            (Method::POST, ["v1", "inbox", from, id, "ack"]) => {
                let user = user(&req)?;
                let from = OrgId::new(*from);
                self.acknowledge(&from, id, &user).await?;
                Ok(json(
                    200,
                    &json!({"from": from, "id": id, "status": "acknowledged"}),
                ))
            }
            _ => Err(Refusal::new(
                Code::NoSuchEndpoint,
                format!(
                    "{} {} is not an endpoint of the local API",
                    req.method(),
                    path
                ),
            )),
        }
    }

    /// Writes the one audit record of a read of personal data, and waits until it is on
    /// disk: the answer is not sent before the read is accounted for.
    async fn audit_read(
        &self,
        user: &str,
        reason: String,
        messages: Vec<String>,
        subjects: Vec<String>,
    ) -> Result<(), Refusal> {
        let event = self
            .local
            .event(
                Event::PersonalDataRead,
                Outcome::Success,
                Actor::User {
                    id: user.to_string(),
                },
            )
            .reason(reason)
            .read(messages, subjects);
        self.store.commit_audit(vec![event]).await?;
        Ok(())
    }

    async fn acknowledge(&self, from: &OrgId, id: &str, user: &str) -> Result<(), Refusal> {
        let id = id.to_string();
        let from = from.clone();
        let user = user.to_string();
        let local = self.local.clone();
        self.store
            .commit(move |tx| {
                let msg = inbox::load(tx, &from, &id)?
                    .ok_or_else(|| Refusal::not_found("received message"))?;
                if msg.acknowledged_at.is_some() {
                    return Ok(());
                }
                tx.audit(
                    local
                        .event(
                            Event::MessageAcknowledged,
                            Outcome::Success,
                            Actor::User { id: user.clone() },
                        )
                        .message(&msg.id, msg.message_type)
                        .subject(msg.subject.clone())
                        .peer(&msg.from)
                        .consent(msg.consent_id.as_deref()),
                );
                inbox::acknowledge(tx, msg, &user, local.clock.now())?;
                Ok(())
            })
            .await
    }
}

/// The bearer token, kept as an HMAC tag under a random key: checking a presented token
/// is `hmac::verify`, which compares in constant time, and the token itself is not kept.
struct Token {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl Token {
    fn new(token: &str) -> Token {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, b"wijkpoort local api token"));
        let tag = hmac::sign(&key, token.as_bytes());
        Token { key, tag }
    }

    fn check(&self, req: &Request<Incoming>) -> Result<(), Refusal> {
        let presented = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Refusal::new(
                    Code::Unauthorised,
                    "an Authorization: Bearer token is required",
                )
            })?;
        hmac::verify(&self.key, presented.trim().as_bytes(), self.tag.as_ref())
            .map_err(|_| Refusal::new(Code::Unauthorised, "the bearer token is not valid"))
    }
}

/// The body of a consent query: the child, by BSN.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentQuery {
    bsn: String,
}

/// The body of a withdrawal; the acting user is the one who withdraws.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Withdrawal {
    #[serde(default)]
    reason: String,
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
            Code::MissingUser,
            "calls that change state or read personal data must name the acting user in the X-Wijkpoort-User header (1-100 printable characters)",
        )
        .field("X-Wijkpoort-User"));
    }
    Ok(user.to_string())
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
        "body_purged": msg.body_purged,
    })
}

/// Most messages one inbox page holds, and the page size when the caller names none.
const INBOX_PAGE_MAX: usize = 1000;
const INBOX_PAGE_DEFAULT: usize = 100;

/// `GET /v1/inbox?after=CURSOR&limit=N&from=ORG&type=TYPE`.
fn inbox_query(query: Option<&str>) -> Result<inbox::InboxQuery, Refusal> {
    let bad = |field: &str, why: &str| {
        Refusal::new(Code::InvalidField, format!("{field}: {why}")).field(field.to_string())
    };
    let mut q = inbox::InboxQuery {
        limit: INBOX_PAGE_DEFAULT,
        ..Default::default()
    };
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "after" => {
                q.after = Some(
                    v.parse()
                        .map_err(|_| bad("after", "not a cursor from an earlier page"))?,
                )
            }
            "limit" => {
                let n: usize = v.parse().map_err(|_| bad("limit", "not a number"))?;
                if n == 0 || n > INBOX_PAGE_MAX {
                    return Err(bad("limit", "must be 1 to 1000"));
                }
                q.limit = n;
            }
            "from" => q.from = Some(OrgId::new(v)),
            "type" => {
                q.message_type = Some(v.parse().map_err(|_| bad("type", "not a message type"))?)
            }
            _ => return Err(bad(k, "unknown parameter (after, limit, from, type)")),
        }
    }
    Ok(q)
}

fn inbox_view(cursor: u64, msg: &inbox::ReceivedMessage) -> serde_json::Value {
    let envelope: serde_json::Value =
        serde_json::from_str(&msg.envelope).unwrap_or(serde_json::Value::Null);
    json!({
        "cursor": cursor.to_string(),
        "id": msg.id,
        "type": msg.message_type,
        "from": msg.from,
        "received_at": msg.received_at,
        "envelope": envelope,
    })
}
