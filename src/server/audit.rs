//! The auditor's routes on the mTLS listener: `GET /v1/audit/{records,consents,report,
//! verify,export}?…`. Only callers whose certificate identity is listed under
//! `[[auditors]]` are served; anyone else gets 403 and leaves an `audit_read` record
//! with outcome `refused`. Every answered read first commits its own `audit_read`
//! record (who, which query, the child as pseudonym): if that cannot be stored, no data
//! goes out. Query strings may carry a BSN; they are never logged.
//!
//! The [`AuditService`] holds the auditors' identities, the pseudonymiser (to find a
//! child by BSN), the store, and who this gateway is; the queries themselves are
//! [`crate::audit::request`]'s, shared with the offline CLI.

use std::sync::Arc;

use hyper::{Method, Uri};

use super::{json, refusal, Reply};
use crate::audit::request::{self, AuditAnswer, Command, Context, Params, RequestError};
use crate::audit::AuditError;
use crate::caller::Caller;
use crate::chain::{Actor, Event, Outcome};
use crate::error::{Code, Refusal};
use crate::identity::OrgId;
use crate::live::Live;
use crate::local::Local;
use crate::pseudonym::Pseudonymiser;
use crate::store::Store;

pub use crate::wire::AUDIT_PREFIX as PREFIX;

/// The auditor's routes of one gateway.
#[derive(Clone)]
pub struct AuditService {
    auditors: Live<Vec<OrgId>>,
    pseudonymiser: Pseudonymiser,
    store: Store,
    local: Arc<Local>,
    /// What the gateway's checkpoints are verified with; a reload replaces it.
    verifying: Live<Verifying>,
}

/// The certificates an online `audit verify` checks the gateway's checkpoints with.
pub struct Verifying {
    /// This gateway's signing certificate (DER).
    pub certificate: Option<Vec<u8>>,
    /// To trust the gateway's earlier certificates the store kept.
    pub trust_anchors: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl AuditService {
    pub fn new(
        auditors: Live<Vec<OrgId>>,
        pseudonymiser: Pseudonymiser,
        store: Store,
        local: Arc<Local>,
        verifying: Live<Verifying>,
    ) -> AuditService {
        AuditService {
            auditors,
            pseudonymiser,
            store,
            local,
            verifying,
        }
    }

    /// Whether the caller's certificate is an auditor's: the listener asks this before
    /// it serves anything under [`PREFIX`].
    pub fn is_auditor(&self, caller: &Caller) -> bool {
        caller
            .organisation()
            .is_some_and(|org| self.auditors.current().contains(org))
    }

    /// Answers one request under [`PREFIX`].
    pub async fn handle(&self, caller: &Caller, method: &Method, uri: &Uri) -> Reply {
        let auditor = match &caller.identity {
            Ok(id) if self.is_auditor(caller) => Actor::Auditor {
                organisation: id.organisation_id.to_string(),
                certificate_serial: id.serial.clone(),
                remote: Some(caller.remote.to_string()),
            },
            _ => return self.refuse_non_auditor(caller, uri).await,
        };
        let segment = uri.path().strip_prefix(PREFIX).unwrap_or_default();
        let Some(command) = Command::from_path(segment) else {
            return refusal(&Refusal::new(
                Code::NoSuchEndpoint,
                format!(
                    "{} is not an audit endpoint (records, consents, report, verify, export)",
                    uri.path()
                ),
            ));
        };
        if method != Method::GET {
            return refusal(&Refusal::new(
                Code::MethodNotAllowed,
                "audit endpoints answer GET only",
            ));
        }
        let request = match Params::from_query(uri.query().unwrap_or_default())
            .and_then(|p| p.into_request(command, Some(&self.pseudonymiser)))
        {
            Ok(r) => r,
            Err(e) => {
                let event = self
                    .local
                    .event(Event::AuditRead, Outcome::Failure, auditor)
                    .reason(format!(
                        "audit {}: request refused: invalid {}",
                        command.as_str(),
                        e.parameter()
                    ));
                if let Err(e) = self.store.commit_audit(vec![event]).await {
                    tracing::error!(error = %e, "could not audit a refused audit request");
                }
                return refusal(&Refusal::new(Code::InvalidAuditQuery, e.to_string()));
            }
        };

        let worker = self.clone();
        let worker_request = request.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let verifying = worker.verifying.current();
            let ctx = Context {
                observer: worker.local.identity.as_str(),
                certificate: verifying.certificate.as_deref(),
                trust_anchors: &verifying.trust_anchors,
                pseudonymiser: Some(&worker.pseudonymiser),
                today: worker.local.clock.today(),
                progress: &crate::audit::progress::Progress::hidden(),
            };
            request::execute(&worker.store, &worker_request, &ctx)
        })
        .await
        .map_err(|e| {
            RequestError::Query(AuditError::InvalidParameter {
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
        let record = request.audit_event(auditor, &self.local.identity, outcome);
        if let Err(e) = self.store.commit_audit(vec![record]).await {
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
            Err(e) => refusal(&Refusal::new(Code::AuditQueryFailed, e.to_string())),
        }
    }

    async fn refuse_non_auditor(&self, caller: &Caller, uri: &Uri) -> Reply {
        let who = caller
            .identity
            .as_ref()
            .map(|i| i.organisation_id.clone())
            .unwrap_or_else(|_| "unidentified".into());
        tracing::warn!(organisation = %who, path = uri.path(), "audit endpoint refused: not an auditor");
        let mut event = self
            .local
            .event(Event::AuditRead, Outcome::Refused, caller.actor())
            .reason(format!(
                "{}: the caller's certificate is not listed as an auditor",
                uri.path()
            ));
        if let Ok(id) = &caller.identity {
            event = event.peer(&id.organisation_id);
        }
        if let Err(e) = self.store.commit_audit(vec![event]).await {
            tracing::error!(error = %e, "could not audit a refused audit request");
        }
        refusal(&Refusal::new(
            Code::NotAnAuditor,
            "the audit log is served to the auditors listed in this gateway's configuration only",
        ))
    }
}

fn fhir_json(v: &serde_json::Value) -> Reply {
    let mut reply = json(200, v);
    if let Ok(ct) = hyper::header::HeaderValue::from_str("application/fhir+json") {
        reply.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
    }
    reply
}
