//! The auditor's queries, each answered through an index so that none walks the whole
//! log: audit records by child (`audit_by_subject`), by message (`audit_by_message`) or
//! by period (`audit_by_time`), further filtered by peer and event; the per-child access
//! report of NEN 7513; and the consent log of one child (`consent_by_subject`).
//!
//! Two queries have no index of their own and say so: records filtered *only* by peer or
//! event walk the time index over the period given (the whole log if none is given), and
//! the consent log of *all* children walks `consent_events`. Queries read stored fields
//! only; from the consent log they pass on ids, scope, dates, statuses and user ids, never
//! the names, BSNs, evidence or reasons stored there.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::progress::Progress;
use super::{index_run, Actor, AuditError, AuditRecord, AuditTrees, Event, Outcome, Pseudonymiser};
use crate::message::{Bsn, MessageType};
use crate::store::{be, T};

/// Which audit records an auditor asks for. `subject` is a pseudonym: a BSN given on the
/// command line or in a request is turned into one before it gets here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
    /// Inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The index a query went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexUsed {
    Subject,
    Message,
    Time,
}

/// The records a query found, in log order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordPage {
    pub index: IndexUsed,
    /// Records the index led to (before filtering by peer, event, period).
    pub examined: u64,
    /// More records matched than `limit`.
    pub truncated: bool,
    pub records: Vec<AuditRecord>,
}

impl RecordQuery {
    fn check(&self) -> Result<(), AuditError> {
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from >= to {
                return Err(AuditError::EmptyPeriod { from, to });
            }
        }
        Ok(())
    }

    fn matches(&self, r: &AuditRecord) -> bool {
        let e = &r.event;
        self.subject.as_ref().is_none_or(|s| e.concerns_subject(s))
            && self
                .message_id
                .as_ref()
                .is_none_or(|m| e.concerns_message(m))
            && self
                .peer
                .as_ref()
                .is_none_or(|p| e.peer.as_ref() == Some(p))
            && self.event.is_none_or(|ev| e.event == ev)
            && self.from.is_none_or(|f| r.time >= f)
            && self.to.is_none_or(|t| r.time < t)
    }
}

/// Runs a record query through the most selective index it allows: child, then message,
/// then period.
pub fn records(trees: &impl AuditTrees, q: &RecordQuery) -> Result<RecordPage, AuditError> {
    records_with_progress(trees, q, &Progress::hidden())
}

/// The length of the audit chain: its last record's sequence number (0 when empty).
pub fn chain_length(trees: &impl AuditTrees) -> u64 {
    trees
        .tree(T::Audit)
        .last()
        .ok()
        .flatten()
        .and_then(|(k, _)| k.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0)
}

/// [`records`], telling `progress` of each record examined (at most the whole chain).
pub fn records_with_progress(
    trees: &impl AuditTrees,
    q: &RecordQuery,
    progress: &Progress,
) -> Result<RecordPage, AuditError> {
    q.check()?;
    progress.start("exporting", chain_length(trees));
    let (index, seqs): (IndexUsed, Box<dyn Iterator<Item = Result<u64, AuditError>>>) =
        if let Some(subject) = &q.subject {
            (IndexUsed::Subject, subject_seqs(trees, subject))
        } else if let Some(id) = &q.message_id {
            (IndexUsed::Message, message_seqs(trees, id))
        } else {
            (IndexUsed::Time, time_seqs(trees, q.from, q.to))
        };
    let limit = q.limit.unwrap_or(usize::MAX);
    let mut page = RecordPage {
        index,
        examined: 0,
        truncated: false,
        records: Vec::new(),
    };
    for seq in seqs {
        let record = read_record(trees, seq?, index_name(index))?;
        page.examined += 1;
        progress.advance(1);
        if q.matches(&record) {
            if page.records.len() == limit {
                page.truncated = true;
                break;
            }
            page.records.push(record);
        }
    }
    Ok(page)
}

fn index_name(i: IndexUsed) -> &'static str {
    match i {
        IndexUsed::Subject => "audit_by_subject",
        IndexUsed::Message => "audit_by_message",
        IndexUsed::Time => "audit_by_time",
    }
}

/// Reads one record by sequence number.
pub fn read_record(
    trees: &impl AuditTrees,
    seq: u64,
    via: &'static str,
) -> Result<AuditRecord, AuditError> {
    let bytes = trees
        .tree(T::Audit)
        .get(be(seq))?
        .ok_or(AuditError::DanglingIndex { index: via, seq })?;
    serde_json::from_slice(&bytes).map_err(|e| AuditError::UnreadableRecord {
        seq,
        problem: e.to_string(),
    })
}

/// The sequence numbers of one index entry whose key ends in a sequence number (BE).
fn entry_seqs(
    key: &[u8],
    value: &[u8],
    name: &'static str,
) -> Box<dyn Iterator<Item = Result<u64, AuditError>>> {
    let run = key
        .len()
        .checked_sub(8)
        .and_then(|at| key[at..].try_into().ok())
        .map(u64::from_be_bytes)
        .and_then(|first| index_run(first, value));
    match run {
        Some(seqs) => Box::new(seqs.into_iter().map(Ok)),
        None => Box::new(std::iter::once(Err(AuditError::MalformedKey {
            tree: name,
        }))),
    }
}

/// Sequence numbers under `prefix` whose key is `prefix ++ seq BE` exactly.
fn suffix_seqs<'a>(
    tree: &sled::Tree,
    prefix: Vec<u8>,
    name: &'static str,
) -> Box<dyn Iterator<Item = Result<u64, AuditError>> + 'a> {
    let len = prefix.len();
    Box::new(
        tree.scan_prefix(&prefix)
            // A longer key with the same prefix belongs to another id (ids differ in length).
            .filter(move |item| !matches!(item, Ok((k, _)) if k.len() != len + 8))
            .flat_map(move |item| match item {
                Err(e) => Box::new(std::iter::once(Err(AuditError::from(e)))),
                Ok((k, v)) => entry_seqs(&k, &v, name),
            }),
    )
}

fn subject_seqs<'a>(
    trees: &'a impl AuditTrees,
    subject: &str,
) -> Box<dyn Iterator<Item = Result<u64, AuditError>> + 'a> {
    suffix_seqs(
        trees.tree(T::AuditBySubject),
        subject.as_bytes().to_vec(),
        "audit_by_subject",
    )
}

fn message_seqs<'a>(
    trees: &'a impl AuditTrees,
    id: &str,
) -> Box<dyn Iterator<Item = Result<u64, AuditError>> + 'a> {
    let mut prefix = id.as_bytes().to_vec();
    prefix.push(0);
    suffix_seqs(trees.tree(T::AuditByMessage), prefix, "audit_by_message")
}

fn millis(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

fn time_seqs<'a>(
    trees: &'a impl AuditTrees,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Box<dyn Iterator<Item = Result<u64, AuditError>> + 'a> {
    let start = [be(from.map_or(0, millis)), be(0)].concat();
    let end = [be(to.map_or(u64::MAX, millis)), be(0)].concat();
    Box::new(
        trees
            .tree(T::AuditByTime)
            .range(start..end)
            .flat_map(|item| match item {
                Err(e) => Box::new(std::iter::once(Err(AuditError::from(e)))),
                Ok((k, v)) if k.len() == 16 => entry_seqs(&k, &v, "audit_by_time"),
                Ok(_) => Box::new(std::iter::once(Err(AuditError::MalformedKey {
                    tree: "audit_by_time",
                }))),
            }),
    )
}

// ---------------------------------------------------------------------------------------
// The per-child access report (NEN 7513)
// ---------------------------------------------------------------------------------------

/// One line of the access report: when, who (organisation, user), what, which action,
/// under which consent, with what outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessEntry {
    pub seq: u64,
    pub time: DateTime<Utc>,
    /// `user`, `peer`, `auditor`, `gateway` or `unknown`.
    pub actor: String,
    pub organisation: Option<String>,
    pub user: Option<String>,
    pub action: Event,
    pub outcome: Outcome,
    pub message_type: Option<MessageType>,
    pub message_id: Option<String>,
    pub peer: Option<String>,
    pub consent_id: Option<String>,
    pub reason: Option<String>,
    /// For a read of personal data (`personal_data_read`): the messages it returned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_messages: Vec<String>,
}

impl AccessEntry {
    pub fn from_record(r: &AuditRecord) -> AccessEntry {
        let e = &r.event;
        let (actor, organisation, user) = match &e.actor {
            Actor::User { id } => ("user", e.on_behalf_of.clone(), Some(id.clone())),
            Actor::Peer { organisation, .. } => ("peer", Some(organisation.clone()), None),
            Actor::Auditor { organisation, .. } => ("auditor", Some(organisation.clone()), None),
            Actor::Gateway => ("gateway", e.on_behalf_of.clone(), None),
            Actor::Unknown { .. } => ("unknown", None, None),
        };
        AccessEntry {
            seq: r.seq,
            time: r.time,
            actor: actor.to_string(),
            organisation,
            user,
            action: e.event,
            outcome: e.outcome,
            message_type: e.message_type,
            message_id: e.message_id.clone(),
            peer: e.peer.clone(),
            consent_id: e.consent_id.clone(),
            reason: e.reason.clone(),
            read_messages: e.read_messages.clone(),
        }
    }
}

/// Everything the gateway recorded about one child, chronologically, with the child's
/// consents and their current status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessReport {
    /// The child's pseudonym (never the BSN).
    pub subject: String,
    pub generated_at: DateTime<Utc>,
    pub entries: Vec<AccessEntry>,
    pub consents: Vec<ConsentHistory>,
}

/// The access report for the child with pseudonym `subject`.
pub fn report(
    trees: &impl AuditTrees,
    subject: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    today: NaiveDate,
) -> Result<AccessReport, AuditError> {
    let page = records(
        trees,
        &RecordQuery {
            subject: Some(subject.to_string()),
            from,
            to,
            ..RecordQuery::default()
        },
    )?;
    let consents = consents(
        trees,
        &ConsentQuery {
            subject: Some(subject.to_string()),
            from: None,
            to: None,
        },
        None,
        today,
    )?;
    Ok(AccessReport {
        subject: subject.to_string(),
        generated_at: Utc::now(),
        entries: page.records.iter().map(AccessEntry::from_record).collect(),
        consents,
    })
}

// ---------------------------------------------------------------------------------------
// The consent log
// ---------------------------------------------------------------------------------------

/// Which consents an auditor asks for: one child's (by pseudonym), or all with an event
/// in the period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
}

/// One event of a consent, reduced to what an auditor needs (no names, no BSN, no
/// evidence or reason texts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEventView {
    pub number: u64,
    /// `recorded`, `withdrawn`, `mirrored`, `updated_from_peer`.
    pub event: String,
    pub at: Option<String>,
    /// The local user who recorded or withdrew it.
    pub by: Option<String>,
    pub from_peer: Option<String>,
    /// The status an event reports (mirror, update from the peer).
    pub status: Option<String>,
    /// The WGBO basis of a recorded consent (`child_and_parent`, …).
    pub basis: Option<String>,
}

/// A consent's events and the status they add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentHistory {
    pub consent_id: String,
    /// The child's pseudonym, when known.
    pub subject: Option<String>,
    /// `active`, `not_yet_valid`, `expired`, `withdrawn`, or `unknown`.
    pub status: String,
    pub types: Vec<String>,
    pub recipient: Option<String>,
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
    pub events: Vec<ConsentEventView>,
    /// What the auditor may see of a recorded consent's particulars (none for a mirror):
    /// never a name, the evidence text or an exception's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub particulars: Option<ConsentParticulars>,
}

/// A recorded consent's particulars as the auditor's export discloses them: who gave it
/// by relationship only, the WGBO rule it stands on, and the evidence by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentParticulars {
    /// `parent`, `guardian`, `child`, one per performer, in order.
    pub performer_roles: Vec<String>,
    /// The WGBO rule (article and who consented), without an exception's reason.
    pub wgbo_rule: Option<String>,
    /// SHA-1 of the evidence text, base64 (FHIR `Attachment.hash`).
    pub evidence_sha1: Option<String>,
    /// The day consent was given.
    pub given_on: Option<String>,
}

/// The consent log: of one child through `consent_by_subject`, or of all children with
/// an event in the period (walking `consent_events`). `pseudonymiser` lets the second
/// form name each consent's child by pseudonym.
pub fn consents(
    trees: &impl AuditTrees,
    q: &ConsentQuery,
    pseudonymiser: Option<&Pseudonymiser>,
    today: NaiveDate,
) -> Result<Vec<ConsentHistory>, AuditError> {
    if let (Some(from), Some(to)) = (q.from, q.to) {
        if from >= to {
            return Err(AuditError::EmptyPeriod { from, to });
        }
    }
    let events = trees.tree(T::ConsentEvents);
    let mut out = Vec::new();
    if let Some(subject) = &q.subject {
        let mut prefix = subject.as_bytes().to_vec();
        prefix.push(0);
        for item in trees.tree(T::ConsentBySubject).scan_prefix(&prefix) {
            let (k, _) = item?;
            let id = String::from_utf8(k[prefix.len()..].to_vec()).map_err(|_| {
                AuditError::MalformedKey {
                    tree: "consent_by_subject",
                }
            })?;
            let mut id_prefix = id.as_bytes().to_vec();
            id_prefix.push(0);
            let mut raw = Vec::new();
            for item in events.scan_prefix(&id_prefix) {
                let (k, v) = item?;
                let v = trees.open_value(T::ConsentEvents, &k, &v)?;
                raw.push((event_number(&k, id_prefix.len(), &id)?, v));
            }
            let h = history(&id, Some(subject.clone()), &raw, None, today)?;
            if in_period(&h, q) {
                out.push(h);
            }
        }
    } else {
        let mut current: Option<(String, RawEvents)> = None;
        for item in events.iter() {
            let (k, v) = item?;
            let split = k
                .iter()
                .position(|b| *b == 0)
                .ok_or(AuditError::MalformedKey {
                    tree: "consent_events",
                })?;
            let id =
                String::from_utf8(k[..split].to_vec()).map_err(|_| AuditError::MalformedKey {
                    tree: "consent_events",
                })?;
            let number = event_number(&k, split + 1, &id)?;
            let v = trees.open_value(T::ConsentEvents, &k, &v)?;
            match &mut current {
                Some((cur, raw)) if *cur == id => raw.push((number, v)),
                _ => {
                    if let Some((cur, raw)) = current.take() {
                        let h = history(&cur, None, &raw, pseudonymiser, today)?;
                        if in_period(&h, q) {
                            out.push(h);
                        }
                    }
                    current = Some((id, vec![(number, v)]));
                }
            }
        }
        if let Some((cur, raw)) = current {
            let h = history(&cur, None, &raw, pseudonymiser, today)?;
            if in_period(&h, q) {
                out.push(h);
            }
        }
    }
    Ok(out)
}

/// A consent's stored events: (event number, JSON bytes).
type RawEvents = Vec<(u64, Vec<u8>)>;

fn event_number(key: &[u8], at: usize, id: &str) -> Result<u64, AuditError> {
    key.get(at..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| AuditError::UnreadableConsentEvent {
            consent_id: id.to_string(),
            number: 0,
            problem: "malformed key".into(),
        })
}

fn in_period(h: &ConsentHistory, q: &ConsentQuery) -> bool {
    if q.from.is_none() && q.to.is_none() {
        return true;
    }
    h.events.iter().any(|e| {
        let Some(at) =
            e.at.as_deref()
                .and_then(|a| a.parse::<DateTime<Utc>>().ok())
        else {
            return false;
        };
        q.from.is_none_or(|f| at >= f) && q.to.is_none_or(|t| at < t)
    })
}

/// What of a stored consent record the auditor's export shows.
fn particulars(record: &Value) -> ConsentParticulars {
    let performer_roles = record["performers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["role"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let wgbo_rule = serde_json::from_value::<crate::consent::WgboBasis>(record["basis"].clone())
        .ok()
        .map(|b| b.rule().to_string());
    let evidence_sha1 = record["evidence"]
        .as_str()
        .map(super::evidence::attachment_hash);
    ConsentParticulars {
        performer_roles,
        wgbo_rule,
        evidence_sha1,
        given_on: text(record, &[&["given_on"], &["valid_from"]]),
    }
}

/// Looks up the first of several JSON paths that holds a string.
fn text(v: &Value, paths: &[&[&str]]) -> Option<String> {
    paths.iter().find_map(|path| {
        let mut cur = v;
        for p in *path {
            cur = cur.get(p)?;
        }
        cur.as_str().map(str::to_string)
    })
}

/// One consent's history from its stored events (`raw`, in order), as the auditor may
/// see it; `subject` is its pseudonym when the caller knows it, else `pseudonymiser`
/// makes it from the BSN in the events.
pub(super) fn history(
    id: &str,
    subject: Option<String>,
    raw: &[(u64, Vec<u8>)],
    pseudonymiser: Option<&Pseudonymiser>,
    today: NaiveDate,
) -> Result<ConsentHistory, AuditError> {
    let mut h = ConsentHistory {
        consent_id: id.to_string(),
        subject,
        status: "unknown".into(),
        types: Vec::new(),
        recipient: None,
        valid_from: None,
        valid_until: None,
        events: Vec::new(),
        particulars: None,
    };
    for (number, bytes) in raw {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| AuditError::UnreadableConsentEvent {
                consent_id: id.to_string(),
                number: *number,
                problem: e.to_string(),
            })?;
        let event = text(&v, &[&["event"]]).ok_or_else(|| AuditError::UnreadableConsentEvent {
            consent_id: id.to_string(),
            number: *number,
            problem: "no `event` field".into(),
        })?;
        let status = text(&v, &[&["status"], &["summary", "status"]]);
        if h.types.is_empty() {
            if let Some(types) = ["record", "summary"].iter().find_map(|k| {
                let t = v.get(k)?;
                t.get("scope")
                    .and_then(|s| s.get("types"))
                    .or(t.get("types"))?
                    .as_array()
                    .cloned()
            }) {
                h.types = types
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect();
            }
        }
        h.recipient = h.recipient.take().or_else(|| {
            text(
                &v,
                &[&["record", "scope", "recipient"], &["summary", "recipient"]],
            )
        });
        h.valid_from = h
            .valid_from
            .take()
            .or_else(|| text(&v, &[&["record", "valid_from"], &["summary", "valid_from"]]));
        h.valid_until = h.valid_until.take().or_else(|| {
            text(
                &v,
                &[&["record", "valid_until"], &["summary", "valid_until"]],
            )
        });
        // A recorded consent ends where its WGBO basis lapses, as the gateway counts it
        // (`ConsentRecord::effective_until`); the auditor sees the same end.
        if let (Some(basis), Some(birth)) = (
            v.pointer("/record/basis"),
            text(&v, &[&["record", "child", "birth_date"]]),
        ) {
            let basis: Option<crate::consent::WgboBasis> =
                serde_json::from_value(basis.clone()).ok();
            let lapse = basis
                .zip(birth.parse::<NaiveDate>().ok())
                .and_then(|(b, birth)| crate::consent::basis_ends_on(&b, birth));
            let until = h
                .valid_until
                .as_deref()
                .and_then(|d| d.parse::<NaiveDate>().ok());
            if let (Some(lapse), Some(until)) = (lapse, until) {
                if lapse < until {
                    h.valid_until = Some(lapse.to_string());
                }
            }
        }
        if h.subject.is_none() {
            if let Some(p) = pseudonymiser {
                h.subject = text(
                    &v,
                    &[&["record", "child", "bsn"], &["summary", "subject_bsn"]],
                )
                .and_then(|b| Bsn::try_from(b).ok())
                .map(|b| p.pseudonym(&b));
            }
        }
        // Withdrawal is final; otherwise the latest event that states a status wins.
        if h.status != "withdrawn" {
            h.status = match event.as_str() {
                "recorded" => "active".into(),
                "withdrawn" => "withdrawn".into(),
                "mirrored" | "updated_from_peer" => status.clone().unwrap_or("active".into()),
                _ => h.status.clone(),
            };
        }
        if event == "recorded" && h.particulars.is_none() {
            h.particulars = Some(particulars(&v["record"]));
        }
        h.events.push(ConsentEventView {
            number: *number,
            at: text(&v, &[&["at"], &["record", "recorded_at"]]),
            by: text(&v, &[&["by"], &["record", "recorded_by"]]),
            from_peer: text(&v, &[&["from_peer"]]),
            status,
            basis: text(&v, &[&["record", "basis", "kind"]]),
            event,
        });
    }
    if h.status == "active" || h.status == "not_yet_valid" {
        let date = |s: &Option<String>| s.as_deref().and_then(|d| d.parse::<NaiveDate>().ok());
        if date(&h.valid_until).is_some_and(|u| u < today) {
            h.status = "expired".into();
        } else if date(&h.valid_from).is_some_and(|f| f > today) {
            h.status = "not_yet_valid".into();
        } else {
            h.status = "active".into();
        }
    }
    Ok(h)
}
