//! Messages: the envelope that travels between gateways, the four message types, and
//! their validation (BSN elfproef, real dates, length and size limits).
//!
//! The envelope's header (id, type, version, time, from, to, consent reference) is typed;
//! its `subject` and `body` stay JSON objects, because the minimisation policy works on
//! field paths in them and a privacy officer may allow or remove fields without a code
//! change. Validation checks the fields each type needs and leaves the rest to the policy.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::identity::OrgId;

/// Largest envelope accepted, in bytes, on the local API and on the relay listener.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest free-text field (characters).
pub const MAX_TEXT_CHARS: usize = 4000;
/// Longest short field: names, ids, codes (characters).
pub const MAX_SHORT_CHARS: usize = 200;
/// The envelope schema version this build writes and accepts.
pub const SCHEMA_VERSION: u32 = 1;

/// The four kinds of message of DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    Referral,
    Consultation,
    Feedback,
    ConsentUpdate,
}

impl MessageType {
    pub const ALL: [MessageType; 4] = [
        MessageType::Referral,
        MessageType::Consultation,
        MessageType::Feedback,
        MessageType::ConsentUpdate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Referral => "referral",
            MessageType::Consultation => "consultation",
            MessageType::Feedback => "feedback",
            MessageType::ConsentUpdate => "consent_update",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        MessageType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!("unknown message type {s:?} (known: referral, consultation, feedback, consent_update)")
            })
    }
}

/// The elfproef (11-test) for a BSN: 9 digits, 9·d1 + 8·d2 + … + 2·d8 − d9 divisible by
/// 11, and not all zeros.
pub fn elfproef(bsn: &str) -> bool {
    let b = bsn.as_bytes();
    if b.len() != 9 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut sum: i32 = 0;
    for (i, d) in b[..8].iter().enumerate() {
        sum += (9 - i as i32) * i32::from(d - b'0');
    }
    sum -= i32::from(b[8] - b'0');
    sum % 11 == 0 && b != b"000000000"
}

/// A BSN (burgerservicenummer) that passed the elfproef. Serialises as its 9 digits.
/// Its `Debug` hides the digits so that a stray `{:?}` never puts a BSN in a log line.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Bsn(String);

impl Bsn {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Bsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bsn(*********)")
    }
}

impl TryFrom<String> for Bsn {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if elfproef(&s) {
            Ok(Bsn(s))
        } else {
            Err("not a valid BSN (9 digits passing the elfproef)".into())
        }
    }
}

impl From<Bsn> for String {
    fn from(b: Bsn) -> String {
        b.0
    }
}

/// The message envelope, as signed by the sender and stored by both gateways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub id: String,
    #[serde(rename = "type")]
    pub message_type: MessageType,
    pub schema_version: u32,
    pub created_at: DateTime<Utc>,
    /// Organisation identifier of the sender (URA, AGB or OIN).
    pub from: OrgId,
    /// Organisation identifier of the recipient.
    pub to: OrgId,
    /// The consent under which personal data travels (summary; see the consent module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Value>,
    /// The child: `bsn`, `name`, `birth_date`, as far as the type and policy allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Map<String, Value>>,
    pub body: Map<String, Value>,
}

impl Envelope {
    /// The child's BSN, if the envelope carries one (validated by [`validate`]).
    pub fn bsn(&self) -> Option<Bsn> {
        let s = self.subject.as_ref()?.get("bsn")?.as_str()?;
        Bsn::try_from(s.to_string()).ok()
    }

    /// The consent id the envelope travels under, if any.
    pub fn consent_id(&self) -> Option<&str> {
        self.consent.as_ref()?.get("id")?.as_str()
    }

    /// The content the minimisation policy works on: `{"subject": …, "body": …}`.
    pub fn take_content(&mut self) -> Map<String, Value> {
        let mut content = Map::new();
        if let Some(subject) = self.subject.take() {
            content.insert("subject".into(), Value::Object(subject));
        }
        content.insert("body".into(), Value::Object(std::mem::take(&mut self.body)));
        content
    }

    /// Puts minimised content back; a subject left empty by the policy disappears.
    pub fn put_content(&mut self, mut content: Map<String, Value>) {
        self.subject = match content.remove("subject") {
            Some(Value::Object(s)) if !s.is_empty() => Some(s),
            _ => None,
        };
        self.body = match content.remove("body") {
            Some(Value::Object(b)) => b,
            _ => Map::new(),
        };
    }

    /// A copy of the content, for checking without changing.
    pub fn content(&self) -> Map<String, Value> {
        let mut content = Map::new();
        if let Some(subject) = &self.subject {
            content.insert("subject".into(), Value::Object(subject.clone()));
        }
        content.insert("body".into(), Value::Object(self.body.clone()));
        content
    }

    /// Serialised form: the exact bytes that are signed, relayed and stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings, numbers and JSON maps always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A field that failed validation, with the path to it (`subject.bsn`, `body.urgency`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: String,
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> InvalidField {
    InvalidField {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// A consultation is anonymous: after minimisation it must not identify the child at
/// all. Checked on both sides, after the policy, whatever the policy says.
pub fn check_anonymous(env: &Envelope) -> Result<(), InvalidField> {
    if env.message_type == MessageType::Consultation && env.subject.is_some() {
        return Err(invalid(
            "subject",
            "a consultation is anonymous and must not carry anything about the child's identity",
        ));
    }
    Ok(())
}

/// Checks what every envelope of its type must hold. Extra fields are not an error
/// here: the minimisation policy decides about them.
pub fn validate(env: &Envelope) -> Result<(), InvalidField> {
    short("id", &env.id)?;
    if env.id.is_empty() {
        return Err(invalid("id", "must not be empty"));
    }
    if !env
        .id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(invalid(
            "id",
            "may hold only letters, digits, '-', '_' and '.'",
        ));
    }
    if env.schema_version != SCHEMA_VERSION {
        return Err(invalid(
            "schema_version",
            format!("unsupported version (this gateway speaks {SCHEMA_VERSION})"),
        ));
    }
    short("from", env.from.as_str())?;
    short("to", env.to.as_str())?;
    if let Some(subject) = &env.subject {
        validate_subject(subject)?;
    }
    check_lengths("body", &env.body)?;
    match env.message_type {
        MessageType::Referral => {
            require_bsn(env)?;
            required_text(&env.body, "body.request_for_help", "request_for_help")?;
            one_of(
                &env.body,
                "body.urgency",
                "urgency",
                &["routine", "soon", "urgent"],
            )?;
        }
        MessageType::Consultation => {
            required_text(&env.body, "body.question", "question")?;
        }
        MessageType::Feedback => {
            require_bsn(env)?;
            required_text(&env.body, "body.referral_id", "referral_id")?;
            one_of(
                &env.body,
                "body.status",
                "status",
                &[
                    "received",
                    "intake_planned",
                    "help_started",
                    "closed",
                    "not_indicated",
                ],
            )?;
            if let Some(d) = env.body.get("date") {
                date("body.date", d)?;
            }
        }
        MessageType::ConsentUpdate => {
            require_bsn(env)?;
            required_text(&env.body, "body.consent_id", "consent_id")?;
            one_of(
                &env.body,
                "body.status",
                "status",
                &["withdrawn", "active", "expired"],
            )?;
        }
    }
    Ok(())
}

fn validate_subject(subject: &Map<String, Value>) -> Result<(), InvalidField> {
    if let Some(bsn) = subject.get("bsn") {
        match bsn.as_str() {
            Some(s) if elfproef(s) => {}
            _ => {
                return Err(invalid(
                    "subject.bsn",
                    "not a valid BSN (9 digits passing the elfproef)",
                ))
            }
        }
    }
    if let Some(d) = subject.get("birth_date") {
        date("subject.birth_date", d)?;
    }
    check_lengths("subject", subject)
}

fn require_bsn(env: &Envelope) -> Result<(), InvalidField> {
    match env.subject.as_ref().and_then(|s| s.get("bsn")) {
        Some(_) => Ok(()),
        None => Err(invalid(
            "subject.bsn",
            format!("a {} must name the child by BSN", env.message_type),
        )),
    }
}

fn required_text(body: &Map<String, Value>, path: &str, key: &str) -> Result<(), InvalidField> {
    match body.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(()),
        Some(_) => Err(invalid(path, "must be a non-empty string")),
        None => Err(invalid(path, "is required")),
    }
}

fn one_of(
    body: &Map<String, Value>,
    path: &str,
    key: &str,
    allowed: &[&str],
) -> Result<(), InvalidField> {
    match body.get(key).and_then(Value::as_str) {
        Some(s) if allowed.contains(&s) => Ok(()),
        _ => Err(invalid(
            path,
            format!("must be one of {}", allowed.join(", ")),
        )),
    }
}

/// A real calendar date, `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

fn date(path: &str, v: &Value) -> Result<(), InvalidField> {
    match v.as_str().and_then(parse_date) {
        Some(_) => Ok(()),
        None => Err(invalid(path, "must be a real date, YYYY-MM-DD")),
    }
}

fn short(path: &str, s: &str) -> Result<(), InvalidField> {
    if s.chars().count() > MAX_SHORT_CHARS {
        Err(invalid(
            path,
            format!("longer than {MAX_SHORT_CHARS} characters"),
        ))
    } else {
        Ok(())
    }
}

/// Every string in the tree is bounded; nesting is bounded so that a hostile body
/// cannot make later tree walks expensive.
fn check_lengths(path: &str, fields: &Map<String, Value>) -> Result<(), InvalidField> {
    fn walk(path: &str, v: &Value, depth: usize) -> Result<(), InvalidField> {
        if depth > 8 {
            return Err(invalid(path, "nested deeper than 8 levels"));
        }
        match v {
            Value::String(s) if s.chars().count() > MAX_TEXT_CHARS => Err(invalid(
                path,
                format!("longer than {MAX_TEXT_CHARS} characters"),
            )),
            Value::Array(items) => items
                .iter()
                .try_for_each(|item| walk(&format!("{path}[]"), item, depth + 1)),
            Value::Object(map) => map
                .iter()
                .try_for_each(|(k, item)| walk(&format!("{path}.{k}"), item, depth + 1)),
            _ => Ok(()),
        }
    }
    fields
        .iter()
        .try_for_each(|(k, item)| walk(&format!("{path}.{k}"), item, 1))
}

/// A new message id: the prefix and 12 random bytes, hex.
pub fn new_id(prefix: &str) -> String {
    use ring::rand::SecureRandom;
    // The creation time first (unix milliseconds, 12 hex digits: ids sort by time), then
    // 80 random bits. The store keys its message trees by id (sent records and envelopes,
    // the audit index by message, received messages at the peer): time-ordered ids land
    // at the right edge of those B-trees, where random ones would touch (and make sled
    // rewrite) a random leaf of the whole tree for every message.
    let millis = Utc::now().timestamp_millis().max(0) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    // SystemRandom only fails if the OS has no randomness; then the time in nanoseconds
    // still makes the id unique enough to be refused as a duplicate rather than lost.
    if ring::rand::SystemRandom::new()
        .fill(&mut bytes[6..])
        .is_err()
    {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        bytes[8..].copy_from_slice(&nanos.to_be_bytes());
    }
    format!("{prefix}-{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_ids_are_unique_and_sort_by_creation_time() {
        let first = new_id("msg");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let ids: Vec<String> = (0..1000).map(|_| new_id("msg")).collect();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|id| id > &first && id.len() == first.len()));
        assert!(ids.iter().all(|id| id.len() == "msg-".len() + 32));
        let mut env = referral();
        env.id = first;
        assert!(validate(&env).is_ok());
    }

    fn referral() -> Envelope {
        serde_json::from_value(json!({
            "id": "ref-1", "type": "referral", "schema_version": 1,
            "created_at": "2026-11-23T10:00:00Z", "from": "00001234", "to": "00000001003214345000",
            "subject": {"bsn": "111222333", "name": "Sanne", "birth_date": "2014-03-02"},
            "body": {"request_for_help": "help", "urgency": "soon"}
        }))
        .unwrap()
    }

    #[test]
    fn elfproef_accepts_valid_and_rejects_invalid_bsns() {
        assert!(elfproef("111222333"));
        assert!(elfproef("123456782"));
        assert!(!elfproef("123456789"));
        assert!(!elfproef("000000000"));
        assert!(!elfproef("12345678"));
        assert!(!elfproef("12345678a"));
    }

    #[test]
    fn a_valid_referral_passes() {
        validate(&referral()).unwrap();
    }

    #[test]
    fn invalid_bsn_names_the_field() {
        let mut env = referral();
        env.subject
            .as_mut()
            .unwrap()
            .insert("bsn".into(), json!("123456789"));
        assert_eq!(validate(&env).unwrap_err().field, "subject.bsn");
    }

    #[test]
    fn impossible_date_is_refused() {
        let mut env = referral();
        env.subject
            .as_mut()
            .unwrap()
            .insert("birth_date".into(), json!("2014-02-30"));
        assert_eq!(validate(&env).unwrap_err().field, "subject.birth_date");
    }

    #[test]
    fn overlong_text_is_refused() {
        let mut env = referral();
        env.body.insert(
            "request_for_help".into(),
            json!("x".repeat(MAX_TEXT_CHARS + 1)),
        );
        assert_eq!(validate(&env).unwrap_err().field, "body.request_for_help");
    }

    #[test]
    fn consultation_must_not_identify_the_child() {
        let mut env = referral();
        env.message_type = MessageType::Consultation;
        env.body.insert("question".into(), json!("q"));
        assert_eq!(check_anonymous(&env).unwrap_err().field, "subject");
        env.subject = None;
        check_anonymous(&env).unwrap();
    }

    #[test]
    fn bsn_debug_hides_digits() {
        let b = Bsn::try_from("111222333".to_string()).unwrap();
        assert!(!format!("{b:?}").contains("111"));
    }
}
