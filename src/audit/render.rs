//! Output for people and for other programs: each answer as an aligned table, as CSV
//! (RFC 4180 quoting, one header line) or as JSON. Only what the answer holds is printed,
//! so a BSN can never appear: answers name the child by pseudonym.

use std::fmt::Write as _;

use super::query::{AccessEntry, AccessReport, ConsentHistory, RecordPage};
use super::verify::VerifyReport;
use super::{Actor, AuditRecord};

/// How to print an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    /// FHIR R4 JSON (`export`, `consents`).
    Fhir,
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

/// An aligned text table with a header row.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(l, "{cell:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

/// CSV with a header line; fields with a comma, quote or line break are quoted.
pub fn csv(headers: &[&str], rows: &[Vec<String>]) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let mut out = String::new();
    let join = |cells: Vec<String>| cells.join(",") + "\r\n";
    out.push_str(&join(headers.iter().map(|h| field(h)).collect()));
    for row in rows {
        out.push_str(&join(row.iter().map(|c| field(c)).collect()));
    }
    out
}

fn tabular(format: Format, headers: &[&str], rows: &[Vec<String>]) -> String {
    match format {
        Format::Csv => csv(headers, rows),
        _ => table(headers, rows),
    }
}

fn actor(a: &Actor) -> String {
    match a {
        Actor::User { id } => format!("user {id}"),
        Actor::Peer { organisation, .. } => format!("peer {organisation}"),
        Actor::Auditor { organisation, .. } => format!("auditor {organisation}"),
        Actor::Gateway => "gateway".into(),
        Actor::Unknown { remote } => format!("unknown {remote}"),
    }
}

const RECORD_HEADERS: [&str; 13] = [
    "seq",
    "time",
    "event",
    "outcome",
    "actor",
    "on_behalf_of",
    "message_type",
    "message_id",
    "subject",
    "peer",
    "consent_id",
    "changed_fields",
    "reason",
];

fn record_row(r: &AuditRecord, short: bool) -> Vec<String> {
    let e = &r.event;
    let subjects: Vec<&String> = e.subject.iter().chain(&e.read_subjects).collect();
    let subject = subjects
        .iter()
        .map(|s| match short {
            true => format!("{}…", s.get(..12).unwrap_or(s)),
            false => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        r.seq.to_string(),
        r.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        e.event.name(),
        e.outcome.name(),
        actor(&e.actor),
        opt(&e.on_behalf_of),
        e.message_type.map(|t| t.to_string()).unwrap_or_default(),
        message_ids(&e.message_id, &e.read_messages),
        subject,
        opt(&e.peer),
        opt(&e.consent_id),
        e.changed_fields.join(" "),
        opt(&e.reason),
    ]
}

/// Audit records.
pub fn records(page: &RecordPage, format: Format) -> String {
    if matches!(format, Format::Json | Format::Fhir) {
        return json(page);
    }
    let rows: Vec<Vec<String>> = page
        .records
        .iter()
        .map(|r| record_row(r, format == Format::Table))
        .collect();
    let mut out = tabular(format, &RECORD_HEADERS, &rows);
    if format == Format::Table {
        let _ = writeln!(
            out,
            "{} record(s){}",
            page.records.len(),
            if page.truncated {
                " (more match: raise --limit)"
            } else {
                ""
            }
        );
    }
    out
}

const REPORT_HEADERS: [&str; 11] = [
    "time",
    "organisation",
    "user",
    "actor",
    "action",
    "outcome",
    "message_type",
    "message_id",
    "peer",
    "consent_id",
    "seq",
];

/// The message a record is about, or the messages a read returned, space-separated.
fn message_ids(id: &Option<String>, read: &[String]) -> String {
    match id {
        Some(id) => id.clone(),
        None => read.join(" "),
    }
}

fn report_row(e: &AccessEntry) -> Vec<String> {
    vec![
        e.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        opt(&e.organisation),
        opt(&e.user),
        e.actor.clone(),
        e.action.name(),
        e.outcome.name(),
        e.message_type.map(|t| t.to_string()).unwrap_or_default(),
        message_ids(&e.message_id, &e.read_messages),
        opt(&e.peer),
        opt(&e.consent_id),
        e.seq.to_string(),
    ]
}

/// The NEN 7513 access report of one child.
pub fn report(r: &AccessReport, format: Format) -> String {
    if matches!(format, Format::Json | Format::Fhir) {
        return json(r);
    }
    let rows: Vec<Vec<String>> = r.entries.iter().map(report_row).collect();
    if format == Format::Csv {
        return csv(&REPORT_HEADERS, &rows);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Access report (NEN 7513) for the child with pseudonym {}\nGenerated {}; {} event(s), oldest first.\n",
        r.subject,
        r.generated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        r.entries.len()
    );
    out.push_str(&table(&REPORT_HEADERS, &rows));
    out.push('\n');
    out.push_str(&consents(&r.consents, Format::Table));
    out
}

/// Consent histories: one line per consent, then its events.
pub fn consents(list: &[ConsentHistory], format: Format) -> String {
    if matches!(format, Format::Json | Format::Fhir) {
        return json(&serde_json::json!({ "consents": list }));
    }
    let headers = [
        "consent_id",
        "status",
        "types",
        "recipient",
        "valid_from",
        "valid_until",
        "event",
        "number",
        "at",
        "by",
        "from_peer",
        "reported_status",
        "basis",
    ];
    if format == Format::Csv {
        let rows: Vec<Vec<String>> = list
            .iter()
            .flat_map(|h| {
                h.events.iter().map(move |e| {
                    vec![
                        h.consent_id.clone(),
                        h.status.clone(),
                        h.types.join(" "),
                        opt(&h.recipient),
                        opt(&h.valid_from),
                        opt(&h.valid_until),
                        e.event.clone(),
                        e.number.to_string(),
                        opt(&e.at),
                        opt(&e.by),
                        opt(&e.from_peer),
                        opt(&e.status),
                        opt(&e.basis),
                    ]
                })
            })
            .collect();
        return csv(&headers, &rows);
    }
    if list.is_empty() {
        return "No consents recorded.\n".into();
    }
    let mut out = String::new();
    for h in list {
        let _ = writeln!(
            out,
            "Consent {}: {} — {} to {}, valid {} to {}",
            h.consent_id,
            h.status,
            if h.types.is_empty() {
                "?".into()
            } else {
                h.types.join(", ")
            },
            h.recipient.as_deref().unwrap_or("?"),
            h.valid_from.as_deref().unwrap_or("?"),
            h.valid_until.as_deref().unwrap_or("?"),
        );
        let rows: Vec<Vec<String>> = h
            .events
            .iter()
            .map(|e| {
                vec![
                    format!("  {}", e.number),
                    opt(&e.at),
                    e.event.clone(),
                    opt(&e.by),
                    opt(&e.from_peer),
                    opt(&e.status),
                    opt(&e.basis),
                ]
            })
            .collect();
        out.push_str(&table(
            &["  #", "at", "event", "by", "from_peer", "status", "basis"],
            &rows,
        ));
    }
    out
}

/// The outcome of `verify`.
pub fn verify(r: &VerifyReport, format: Format) -> String {
    if format == Format::Json {
        return json(r);
    }
    let mut out = String::new();
    match &r.tamper {
        None => {
            let _ = writeln!(
                out,
                "intact: {} record(s), chain verified to {}, {} signed checkpoint(s)",
                r.records, r.last_seq, r.checkpoints
            );
        }
        Some(t) => {
            let _ = writeln!(
                out,
                "TAMPERED: first bad sequence number {} ({:?})",
                t.seq, t.kind
            );
            let _ = writeln!(out, "  {}", t.detail);
        }
    }
    if let Some(cp) = &r.last_checkpoint {
        let _ = writeln!(
            out,
            "last signed checkpoint: {}:{} (keep it; pass it as --expect next time)",
            cp.seq, cp.hash
        );
    }
    if let Some(pin) = r.pinned_at {
        let _ = writeln!(
            out,
            "note: records 1 to {pin} were removed by a retention purge; the chain is checked from the signed checkpoint at {pin}, which pins record {}'s predecessor",
            pin + 1
        );
    }
    if r.unsigned_tail > 0 {
        let _ = writeln!(
            out,
            "note: the last {} record(s) are chained but not yet covered by a signed checkpoint",
            r.unsigned_tail
        );
    }
    out
}

/// Pretty JSON and a newline.
pub fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}
