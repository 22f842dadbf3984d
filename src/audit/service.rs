//! The auditor's routes on the mTLS listener: `GET /v1/audit/{records,consents,report,
//! verify,export}?…`. Only callers whose certificate identity is listed under
//! `[[auditors]]` are served; anyone else gets 403 and leaves an `audit_read` record
//! with outcome `refused`. Every answered read first commits its own `audit_read`
//! record (who, which query, the child as pseudonym): if that cannot be stored, no data
//! goes out. Query strings may carry a BSN; they are never logged.

use std::sync::Arc;

use chrono::Utc;
use hyper::{Method, Uri};

use super::request::{self, AuditAnswer, Command, Context, Params, RequestError};
use super::{Actor, AuditEvent, Event, Outcome};
use crate::error::Refusal;
use crate::gateway::Gateway;
use crate::receive::Caller;
use crate::server::{json, refusal, Reply};

/// The path prefix of the auditor's routes.
pub const PREFIX: &str = "/v1/audit/";

/// Answers one request under [`PREFIX`].
pub async fn handle(gw: &Arc<Gateway>, caller: &Caller, method: &Method, uri: &Uri) -> Reply {
    let auditor = match &caller.identity {
        Ok(id) if gw.config.auditors.contains(&id.organisation_id) => Actor::Auditor {
            organisation: id.organisation_id.clone(),
            certificate_serial: id.serial.clone(),
        },
        _ => return refuse_non_auditor(gw, caller, uri).await,
    };
    let segment = uri.path().strip_prefix(PREFIX).unwrap_or_default();
    let Some(command) = Command::from_path(segment) else {
        return refusal(&Refusal::new(
            404,
            "no_such_endpoint",
            format!(
                "{} is not an audit endpoint (records, consents, report, verify, export)",
                uri.path()
            ),
        ));
    };
    if method != Method::GET {
        return refusal(&Refusal::new(
            405,
            "method_not_allowed",
            "audit endpoints answer GET only",
        ));
    }
    let request = match Params::from_query(uri.query().unwrap_or_default())
        .and_then(|p| p.into_request(command, Some(&gw.pseudonymiser)))
    {
        Ok(r) => r,
        Err(e) => {
            let event = AuditEvent::new(Event::AuditRead, Outcome::Failure, auditor)
                .on_behalf_of(&gw.config.identity)
                .reason(format!(
                    "audit {}: request refused: invalid {}",
                    command.as_str(),
                    e.parameter()
                ));
            if let Err(e) = gw.store.commit_audit(vec![event]).await {
                tracing::error!(error = %e, "could not audit a refused audit request");
            }
            return refusal(&Refusal::new(400, "invalid_audit_query", e.to_string()));
        }
    };

    let worker_gw = gw.clone();
    let worker_request = request.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let gw = worker_gw;
        let ctx = Context {
            observer: &gw.config.identity,
            certificate: gw.config.cert_chain.first().map(|c| c.as_ref()),
            pseudonymiser: Some(&gw.pseudonymiser),
            today: Utc::now().date_naive(),
        };
        request::execute(&gw.store, &worker_request, &ctx)
    })
    .await
    .map_err(|e| {
        RequestError::Query(super::AuditError::InvalidParameter {
            field: "-".into(),
            problem: format!("the query task failed: {e}"),
        })
    })
    .and_then(|r| r);

    let outcome = if answer.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let record = request.audit_event(auditor, &gw.config.identity, outcome);
    if let Err(e) = gw.store.commit_audit(vec![record]).await {
        tracing::error!(error = %e, "could not audit an audit read; nothing was answered");
        return refusal(&Refusal::from(e));
    }
    tracing::info!(
        auditor = %caller.identity.as_ref().map(|i| i.organisation_id.as_str()).unwrap_or("?"),
        command = command.as_str(),
        ok = answer.is_ok(),
        "audit log read"
    );
    match answer {
        Ok(AuditAnswer::Fhir(bundle)) => fhir_json(&bundle),
        Ok(a) => json(200, &a),
        Err(e) => refusal(&Refusal::new(500, "audit_query_failed", e.to_string())),
    }
}

fn fhir_json(v: &serde_json::Value) -> Reply {
    let mut reply = json(200, v);
    if let Ok(ct) = hyper::header::HeaderValue::from_str("application/fhir+json") {
        reply.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
    }
    reply
}

async fn refuse_non_auditor(gw: &Gateway, caller: &Caller, uri: &Uri) -> Reply {
    let who = caller
        .identity
        .as_ref()
        .map(|i| i.organisation_id.clone())
        .unwrap_or_else(|_| "unidentified".into());
    tracing::warn!(organisation = %who, path = uri.path(), "audit endpoint refused: not an auditor");
    let mut event = AuditEvent::new(Event::AuditRead, Outcome::Refused, caller.actor())
        .on_behalf_of(&gw.config.identity)
        .reason(format!(
            "{}: the caller's certificate is not listed as an auditor",
            uri.path()
        ));
    if let Ok(id) = &caller.identity {
        event = event.peer(&id.organisation_id);
    }
    if let Err(e) = gw.store.commit_audit(vec![event]).await {
        tracing::error!(error = %e, "could not audit a refused audit request");
    }
    refusal(&Refusal::new(
        403,
        "not_an_auditor",
        "the audit log is served to the auditors listed in this gateway's configuration only",
    ))
}
