//! What an auditor can ask, in one place for both ways of reaching the log.
//!
//! The CLI collects [`Params`] (a BSN, a message id, a period, …). Offline, it turns them
//! into an [`AuditRequest`] itself, pseudonymising the BSN with the secret from the
//! gateway's config; online, it sends them as a query string to `/v1/audit/<command>`
//! and the gateway turns them into the same [`AuditRequest`] with its own secret. Either
//! way [`execute`] answers it from the store's trees, and [`AuditRequest::audit_event`]
//! describes the read for the `audit_read` record that every read leaves — with the
//! child as pseudonym and never the BSN.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::query::{self, AccessReport, ConsentHistory, ConsentQuery, RecordPage, RecordQuery};
use super::verify::{self, KnownCheckpoint, VerifyError, VerifyReport};
use super::{Actor, AuditError, AuditEvent, AuditTrees, Event, Outcome, Pseudonymiser};
use crate::message::Bsn;

/// The auditor's commands, as path segments under `/v1/audit/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Records,
    Consents,
    Report,
    Verify,
    Export,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Records => "records",
            Command::Consents => "consents",
            Command::Report => "report",
            Command::Verify => "verify",
            Command::Export => "export",
        }
    }

    pub fn from_path(segment: &str) -> Option<Command> {
        [
            Command::Records,
            Command::Consents,
            Command::Report,
            Command::Verify,
            Command::Export,
        ]
        .into_iter()
        .find(|c| c.as_str() == segment)
    }
}

/// The parameters of a command, before any BSN is pseudonymised. Its `Debug` hides the BSN.
#[derive(Clone, Default, PartialEq)]
pub struct Params {
    pub bsn: Option<Bsn>,
    pub message_id: Option<String>,
    pub peer: Option<String>,
    pub event: Option<Event>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: Option<usize>,
    /// `verify`: a checkpoint seen before, `SEQ:HASH`.
    pub expect: Option<KnownCheckpoint>,
    /// `consents`: FHIR `Consent` resources instead of histories.
    pub fhir: bool,
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Params")
            .field("bsn", &self.bsn.as_ref().map(|_| "*********"))
            .field("message_id", &self.message_id)
            .field("peer", &self.peer)
            .field("event", &self.event)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("limit", &self.limit)
            .field("expect", &self.expect)
            .field("fhir", &self.fhir)
            .finish()
    }
}

/// A time given as RFC 3339 (`2026-11-23T10:00:00Z`) or as a date (`2026-11-23`, UTC):
/// a date as `from` means its start, as `to` the end of that day (the next midnight).
pub fn parse_time(field: &str, s: &str, is_end: bool) -> Result<DateTime<Utc>, AuditError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || AuditError::InvalidParameter {
        field: field.to_string(),
        problem: format!("{s:?} is neither an RFC 3339 time nor a date (YYYY-MM-DD)"),
    };
    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad())?;
    let date = if is_end {
        date.succ_opt().ok_or_else(bad)?
    } else {
        date
    };
    Ok(date.and_time(NaiveTime::MIN).and_utc())
}

impl Params {
    /// The query string the online client sends (BSN included: it travels over mTLS to
    /// the gateway that pseudonymises it, and the gateway never logs query strings).
    pub fn to_query(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(b) = &self.bsn {
            pairs.push(("bsn", b.as_str().to_string()));
        }
        if let Some(m) = &self.message_id {
            pairs.push(("message_id", m.clone()));
        }
        if let Some(p) = &self.peer {
            pairs.push(("peer", p.clone()));
        }
        if let Some(e) = self.event {
            pairs.push(("event", e.name()));
        }
        if let Some(t) = self.from {
            pairs.push(("from", t.to_rfc3339()));
        }
        if let Some(t) = self.to {
            pairs.push(("to", t.to_rfc3339()));
        }
        if let Some(l) = self.limit {
            pairs.push(("limit", l.to_string()));
        }
        if let Some(k) = &self.expect {
            pairs.push(("expect", format!("{}:{}", k.seq, k.hash)));
        }
        if self.fhir {
            pairs.push(("format", "fhir".into()));
        }
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={}", encode(&v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Parses a query string; unknown parameters are refused rather than ignored, so that
    /// a misspelt filter cannot silently widen a query.
    pub fn from_query(query: &str) -> Result<Params, AuditError> {
        let mut map: HashMap<String, String> = HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k).ok_or_else(|| invalid("query", "bad percent-encoding"))?;
            let v = decode(v).ok_or_else(|| invalid(&k, "bad percent-encoding"))?;
            if map.insert(k.clone(), v).is_some() {
                return Err(invalid(&k, "given twice"));
            }
        }
        let mut p = Params::default();
        for (k, v) in map {
            match k.as_str() {
                "bsn" => {
                    p.bsn = Some(
                        Bsn::try_from(v).map_err(|_| AuditError::InvalidBsn { field: "bsn" })?,
                    )
                }
                "message_id" => p.message_id = Some(v),
                "peer" => p.peer = Some(v),
                "event" => p.event = Some(v.parse()?),
                "from" => p.from = Some(parse_time("from", &v, false)?),
                "to" => p.to = Some(parse_time("to", &v, true)?),
                "limit" => p.limit = Some(v.parse().map_err(|_| invalid("limit", "not a number"))?),
                "expect" => {
                    p.expect = Some(
                        v.parse()
                            .map_err(|e: VerifyError| invalid("expect", &e.to_string()))?,
                    )
                }
                "format" if v == "fhir" => p.fhir = true,
                "format" if v == "json" => p.fhir = false,
                "format" => return Err(invalid("format", "the gateway answers json or fhir")),
                other => return Err(invalid(other, "unknown parameter")),
            }
        }
        Ok(p)
    }

    /// Builds the request, pseudonymising the BSN with `pseudonymiser`.
    pub fn into_request(
        self,
        command: Command,
        pseudonymiser: Option<&Pseudonymiser>,
    ) -> Result<AuditRequest, AuditError> {
        let subject = match &self.bsn {
            None => None,
            Some(b) => Some(pseudonymiser.ok_or(AuditError::NoSecret)?.pseudonym(b)),
        };
        let records = RecordQuery {
            subject: subject.clone(),
            message_id: self.message_id,
            peer: self.peer,
            event: self.event,
            from: self.from,
            to: self.to,
            limit: self.limit,
        };
        Ok(match command {
            Command::Records => AuditRequest::Records(records),
            Command::Export => AuditRequest::Export(records),
            Command::Report => AuditRequest::Report {
                subject: subject
                    .ok_or_else(|| invalid("bsn", "the report is about one child: give its BSN"))?,
                from: self.from,
                to: self.to,
            },
            Command::Consents => AuditRequest::Consents {
                query: ConsentQuery {
                    subject,
                    from: self.from,
                    to: self.to,
                },
                fhir: self.fhir,
            },
            Command::Verify => AuditRequest::Verify {
                expect: self.expect,
            },
        })
    }
}

fn invalid(field: &str, problem: &str) -> AuditError {
    AuditError::InvalidParameter {
        field: field.to_string(),
        problem: problem.to_string(),
    }
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` and `+` (space); `None` for a malformed escape or non-UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A request in terms of the log: the child already a pseudonym.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditRequest {
    Records(RecordQuery),
    /// Records as FHIR `AuditEvent`s.
    Export(RecordQuery),
    Report {
        subject: String,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    },
    Consents {
        query: ConsentQuery,
        fhir: bool,
    },
    Verify {
        expect: Option<KnownCheckpoint>,
    },
}

/// The answer, as the gateway sends it (JSON) and the CLI prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AuditAnswer {
    Verify(VerifyReport),
    Report(AccessReport),
    Records(RecordPage),
    Consents {
        consents: Vec<ConsentHistory>,
    },
    /// A FHIR `Bundle`.
    Fhir(Value),
}

/// What [`execute`] needs besides the trees.
pub struct Context<'a> {
    /// This gateway's organisation identifier (FHIR `source.observer`).
    pub observer: &'a str,
    /// The gateway's certificate (DER), to check checkpoint signatures.
    pub certificate: Option<&'a [u8]>,
    /// The trust anchors, to trust an earlier certificate of the gateway that the store
    /// kept (empty: only `certificate` counts).
    pub trust_anchors: &'a [rustls::pki_types::CertificateDer<'static>],
    /// To name children by pseudonym in the all-consents listing.
    pub pseudonymiser: Option<&'a Pseudonymiser>,
    pub today: NaiveDate,
    /// Where `verify` and `export` report how far they are (a bar on the CLI's terminal).
    pub progress: &'a super::progress::Progress,
}

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error(transparent)]
    Query(#[from] AuditError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("checking the checkpoints needs the gateway's certificate: pass --config or --cert")]
    NoCertificate,
}

/// Answers `req` from `trees`.
pub fn execute(
    trees: &impl AuditTrees,
    req: &AuditRequest,
    ctx: &Context<'_>,
) -> Result<AuditAnswer, RequestError> {
    Ok(match req {
        AuditRequest::Records(q) => AuditAnswer::Records(query::records(trees, q)?),
        AuditRequest::Export(q) => {
            let page = query::records_with_progress(trees, q, ctx.progress)?;
            AuditAnswer::Fhir(super::fhir::audit_bundle(&page.records, ctx.observer))
        }
        AuditRequest::Report { subject, from, to } => {
            AuditAnswer::Report(query::report(trees, subject, *from, *to, ctx.today)?)
        }
        AuditRequest::Consents { query: q, fhir } => {
            let consents = query::consents(trees, q, ctx.pseudonymiser, ctx.today)?;
            if *fhir {
                AuditAnswer::Fhir(super::fhir::consent_bundle(&consents, ctx.observer))
            } else {
                AuditAnswer::Consents { consents }
            }
        }
        AuditRequest::Verify { expect } => {
            let cert = ctx.certificate.ok_or(RequestError::NoCertificate)?;
            AuditAnswer::Verify(verify::verify_with_progress(
                trees,
                cert,
                ctx.trust_anchors,
                expect.as_ref(),
                ctx.progress,
            )?)
        }
    })
}

impl AuditRequest {
    pub fn command(&self) -> Command {
        match self {
            AuditRequest::Records(_) => Command::Records,
            AuditRequest::Export(_) => Command::Export,
            AuditRequest::Report { .. } => Command::Report,
            AuditRequest::Consents { .. } => Command::Consents,
            AuditRequest::Verify { .. } => Command::Verify,
        }
    }

    /// The `audit_read` record for this request: who asked, which query (filters by
    /// name and value, the child as the record's subject pseudonym), and how it went.
    pub fn audit_event(
        &self,
        actor: Actor,
        on_behalf_of: impl AsRef<str>,
        outcome: Outcome,
    ) -> AuditEvent {
        let mut parts = vec![format!("audit {}", self.command().as_str())];
        let mut event =
            AuditEvent::new(Event::AuditRead, outcome, actor).on_behalf_of(on_behalf_of);
        let mut period = |from: &Option<DateTime<Utc>>, to: &Option<DateTime<Utc>>| {
            if let Some(f) = from {
                parts.push(format!("from {}", f.to_rfc3339()));
            }
            if let Some(t) = to {
                parts.push(format!("to {}", t.to_rfc3339()));
            }
        };
        match self {
            AuditRequest::Records(q) | AuditRequest::Export(q) => {
                period(&q.from, &q.to);
                if q.subject.is_some() {
                    parts.push("by child".into());
                }
                if q.message_id.is_some() {
                    parts.push("by message".into());
                }
                if let Some(p) = &q.peer {
                    parts.push(format!("peer {p}"));
                }
                if let Some(e) = q.event {
                    parts.push(format!("event {}", e.name()));
                }
                event.subject = q.subject.clone();
                event.message_id = q.message_id.clone();
                event.peer = q.peer.clone();
            }
            AuditRequest::Report { subject, from, to } => {
                period(from, to);
                event.subject = Some(subject.clone());
            }
            AuditRequest::Consents { query: q, fhir } => {
                period(&q.from, &q.to);
                parts.push(if q.subject.is_some() {
                    "of one child".into()
                } else {
                    "of all children".into()
                });
                if *fhir {
                    parts.push("as FHIR".into());
                }
                event.subject = q.subject.clone();
            }
            AuditRequest::Verify { expect } => {
                if let Some(k) = expect {
                    parts.push(format!("expecting checkpoint {}", k.seq));
                }
            }
        }
        event.reason(parts.join(", "))
    }
}
