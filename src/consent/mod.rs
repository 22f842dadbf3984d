//! Consent domain logic: what a consent is, when the gateway accepts one, how its current
//! state follows from an append-only event log, and whether it covers a message. (Its FHIR
//! R4 `Consent`, as the auditor may see it, is [`crate::audit::fhir`]'s.)
//!
//! No personal data about a child leaves the practice without a recorded, valid consent
//! that covers this kind of message to this recipient, and a withdrawn consent stops the
//! flow both ways. Sharing medical data about a patient needs the patient's consent
//! (WGBO, art. 7:457 with 7:450 BW); for minors the WGBO decides whose consent counts by
//! the child's age on the day it is given: under 12 a parent or guardian (art. 7:465),
//! from 12 to 15 the child *and* a parent or guardian (art. 7:450 lid 2, with an exception
//! to prevent serious harm), from 16 the child alone (art. 7:447). See [`wgbo`] for the
//! rules themselves.
//!
//! This module owns that logic, and [`registry`] owns where consent events are kept in
//! the store (appending, reading, and a cache of folded states); the use cases of the
//! local API (record, withdraw, list) are [`crate::consent_desk`]'s, above the send path.
//! Apart from the registry nothing here does I/O. [`ConsentState::from_events`] folds
//! the events; the local API validates with [`ConsentRecord::from_request`]; the
//! practice, the relay and the wijkteam all ask [`covers`] with an [`Exchange`], so there
//! is exactly one coverage rule. Error texts never contain a BSN, a name or a birth date,
//! because they end up in logs and HTTP responses.

pub mod registry;
mod state;
pub mod wgbo;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::message::{Bsn, MessageType};

pub use state::{
    check_covers, check_covers_at_recipient, check_withdrawable, covers, needs_consent,
    withdrawal_event, ConsentEvent, ConsentOrigin, ConsentRefusal, ConsentState, ConsentStatus,
    ConsentSummary, Exchange, Withdrawal, Withdrawer,
};
pub use wgbo::{age_on, basis_ends_on, birthday, wgbo_basis, MissingPerformer, WgboBasis};

/// How far the practice's records of consent may stretch in time; `[consent]` in the
/// config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentRules {
    /// `given_on` may lie at most this many days before the day the consent is recorded.
    /// The WGBO basis is judged on `given_on`, so an open-ended back-dating would let a
    /// consent be filed under the age band of years ago (a 13-year-old's consent recorded
    /// as a parent's alone, dated to when the child was 11). A form signed on paper is
    /// normally entered within days; two weeks covers a holiday or a locum.
    pub given_on_max_days_back: u32,
    /// A consent covers messages at most this many days after it was given, however long
    /// a period the request names: consent is asked for a referral and what follows from
    /// it, not for ever, and a family whose situation changed is asked again.
    pub max_validity_days: u32,
}

impl ConsentRules {
    /// Two weeks back; a year (366 days, so a consent given today may run to the same
    /// date next year, also across 29 February).
    pub const DEFAULT: ConsentRules = ConsentRules {
        given_on_max_days_back: 14,
        max_validity_days: 366,
    };
}

impl Default for ConsentRules {
    fn default() -> ConsentRules {
        ConsentRules::DEFAULT
    }
}

/// Longest accepted name (of the child, a performer or a recording user), in characters.
pub const NAME_MAX: usize = 200;
/// Longest accepted evidence text, in characters.
pub const EVIDENCE_MAX: usize = 500;
/// Longest accepted exception reason or withdrawal reason, in characters.
pub const REASON_MAX: usize = 500;
/// Longest accepted consent id; ids are also FHIR resource ids, which allow 64.
pub const ID_MAX: usize = 64;
/// Longest accepted recipient (organisation identifier).
pub const RECIPIENT_MAX: usize = 200;

/// Who gave consent, in the WGBO's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerformerRole {
    Child,
    Parent,
    Guardian,
}

impl PerformerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PerformerRole::Child => "child",
            PerformerRole::Parent => "parent",
            PerformerRole::Guardian => "guardian",
        }
    }
}

/// The child the consent is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Child {
    pub bsn: Bsn,
    pub birth_date: NaiveDate,
    #[serde(default)]
    pub name: Option<String>,
}

/// Someone who gave consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Performer {
    pub role: PerformerRole,
    pub name: String,
}

/// What the consent allows: these message types, to this peer organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Only `referral` and `feedback` carry data under a consent.
    pub types: Vec<MessageType>,
    /// The peer's organisation identifier, exactly as its certificate identity reads.
    pub recipient: String,
}

/// A consent as the local API receives it (`POST /v1/consents`). Unknown fields are
/// refused so that a misspelt `exception` or `given_on` cannot silently vanish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    pub child: Child,
    pub performers: Vec<Performer>,
    pub scope: Scope,
    pub valid_from: NaiveDate,
    /// Inclusive: the consent still covers messages on this day.
    pub valid_until: NaiveDate,
    /// The day consent was given; absent means `valid_from`.
    #[serde(default)]
    pub given_on: Option<NaiveDate>,
    pub evidence: String,
    /// The documented reason for accepting a child of 12–15 alone (serious harm).
    #[serde(default)]
    pub exception: Option<String>,
}

impl ConsentRequest {
    /// The day the WGBO age is taken on.
    pub fn effective_given_on(&self) -> NaiveDate {
        self.given_on.unwrap_or(self.valid_from)
    }
}

/// A validated, recorded consent. Immutable once recorded: a change is a withdrawal plus
/// a new record with a new id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub id: String,
    pub child: Child,
    pub performers: Vec<Performer>,
    /// `types` sorted and without duplicates.
    pub scope: Scope,
    pub valid_from: NaiveDate,
    pub valid_until: NaiveDate,
    /// Resolved: the request's `given_on`, or `valid_from` when it had none.
    pub given_on: NaiveDate,
    pub evidence: String,
    pub exception: Option<String>,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
    pub basis: WgboBasis,
}

impl ConsentRecord {
    /// Validates `req` (see [`validate_request`]) and the recording metadata, and builds
    /// the record. `id` is chosen by the caller (e.g. a UUID) and must be a valid FHIR id:
    /// 1–64 of `A-Z a-z 0-9 - .`. `today` is the practice's local date, passed in rather
    /// than read from the clock so that the rules stay testable.
    pub fn from_request(
        id: String,
        req: ConsentRequest,
        recorded_by: String,
        recorded_at: DateTime<Utc>,
        today: NaiveDate,
        rules: &ConsentRules,
    ) -> Result<ConsentRecord, ConsentError> {
        check_consent_id("id", &id)?;
        check_text("recorded_by", &recorded_by, NAME_MAX)?;
        let basis = validate_request(&req, today, rules)?;
        let given_on = req.effective_given_on();
        let mut scope = req.scope;
        scope.types.sort();
        scope.types.dedup();
        Ok(ConsentRecord {
            id,
            child: req.child,
            performers: req.performers,
            scope,
            valid_from: req.valid_from,
            valid_until: req.valid_until,
            given_on,
            evidence: req.evidence,
            exception: req.exception,
            recorded_by,
            recorded_at,
            basis,
        })
    }

    /// The last day this consent covers messages: its `valid_until`, or earlier the last
    /// day its WGBO basis carries it ([`basis_ends_on`]). This is the end date that
    /// travels in the summary; the birth date it follows from stays at the practice.
    pub fn effective_until(&self) -> NaiveDate {
        match basis_ends_on(&self.basis, self.child.birth_date) {
            Some(lapse) if lapse < self.valid_until => lapse,
            _ => self.valid_until,
        }
    }
}

/// Why a consent (or a withdrawal) was refused. Texts name fields, roles and dates, never
/// a BSN or a person's name. [`ConsentError::code`] and [`ConsentError::field`] feed the
/// HTTP layer's `{"error", "message", "field"}` answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is too long: {len} characters, at most {max} allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} is not a valid identifier: {rule}")]
    InvalidIdentifier {
        field: &'static str,
        rule: &'static str,
    },
    /// `position` counts from 1, as a user reads the list; the name itself is not shown.
    #[error("performer {position} has an empty name")]
    PerformerNameEmpty { position: usize },
    #[error("performer {position} has a name of {len} characters, at most {max} allowed")]
    PerformerNameTooLong {
        position: usize,
        len: usize,
        max: usize,
    },
    #[error("more than one performer has the role child; a consent concerns one child")]
    DuplicateChildPerformer,
    #[error("{field} lists {}, which no consent can cover: only referral and feedback carry personal data under a consent", .message_type.as_str())]
    TypeNotConsentable {
        field: &'static str,
        message_type: MessageType,
    },
    #[error("the child's birth date is after today ({today})")]
    BirthDateInFuture { today: NaiveDate },
    #[error("the consent was given on {given_on}{}, which is after today ({today})", defaulted_note(*.defaulted))]
    GivenOnInFuture {
        given_on: NaiveDate,
        today: NaiveDate,
        defaulted: bool,
    },
    #[error("the consent was given on {given_on}{}, which is before the child's birth date", defaulted_note(*.defaulted))]
    GivenOnBeforeBirth {
        given_on: NaiveDate,
        defaulted: bool,
    },
    #[error("the consent was given on {given_on}{}, more than {max_days} days before today ({today}); a consent is recorded when it is given, or the WGBO age it is judged by would be that of long ago", defaulted_note(*.defaulted))]
    GivenOnTooLongAgo {
        given_on: NaiveDate,
        today: NaiveDate,
        max_days: u32,
        defaulted: bool,
    },
    #[error("valid_until ({valid_until}) is more than {max_days} days after the consent was given ({given_on}); ask for consent again when the period ends")]
    ValidityTooLong {
        given_on: NaiveDate,
        valid_until: NaiveDate,
        max_days: u32,
    },
    #[error("a parent's or guardian's consent alone lapses the day before the child's 12th birthday, and that is before valid_from ({valid_from}): from 12 the child consents too (WGBO art. 7:450 lid 2); record it with the child and a parent or guardian")]
    WgboBasisLapsesBeforeStart { valid_from: NaiveDate },
    #[error("{field} ({valid_until}) is before valid_from ({valid_from})")]
    ValidityReversed {
        field: &'static str,
        valid_from: NaiveDate,
        valid_until: NaiveDate,
    },
    #[error("the child is {age} on the day of consent ({given_on}): WGBO requires {}; missing: {missing}{}", wgbo::requirement_text(.age), wgbo::missing_hint(.age, .missing))]
    WgboMissingPerformer {
        age: u32,
        given_on: NaiveDate,
        missing: MissingPerformer,
    },
    #[error("the child is {age} on the day of consent ({given_on}): the serious-harm exception applies only to a child of 12 to 15; remove the exception reason")]
    WgboExceptionOutsideAge { age: u32, given_on: NaiveDate },
    #[error("the child is {age} on the day of consent ({given_on}) and a parent or guardian consented: the serious-harm exception applies only when the child consents without them; remove the exception reason")]
    WgboExceptionWithParent { age: u32, given_on: NaiveDate },
    #[error("the consent was already withdrawn at {}", .withdrawn_at.to_rfc3339_opts(SecondsFormat::Secs, true))]
    AlreadyWithdrawn { withdrawn_at: DateTime<Utc> },
    #[error("this consent is a mirror of the practice's consent; only the practice can withdraw it (it then sends a consent_update)")]
    MirrorNotWithdrawable,
}

fn defaulted_note(defaulted: bool) -> &'static str {
    if defaulted {
        " (given_on is absent, so valid_from was taken)"
    } else {
        ""
    }
}

impl ConsentError {
    /// A stable machine code for the HTTP layer and for tests.
    pub fn code(&self) -> &'static str {
        match self {
            ConsentError::Empty { .. } | ConsentError::PerformerNameEmpty { .. } => "field_empty",
            ConsentError::TooLong { .. } | ConsentError::PerformerNameTooLong { .. } => {
                "field_too_long"
            }
            ConsentError::InvalidIdentifier { .. } => "identifier_invalid",
            ConsentError::DuplicateChildPerformer => "performer_child_duplicate",
            ConsentError::TypeNotConsentable { .. } => "scope_type_not_allowed",
            ConsentError::BirthDateInFuture { .. } => "birth_date_in_future",
            ConsentError::GivenOnInFuture { .. } => "given_on_in_future",
            ConsentError::GivenOnBeforeBirth { .. } => "given_on_before_birth",
            ConsentError::ValidityReversed { .. } => "validity_period_reversed",
            ConsentError::GivenOnTooLongAgo { .. } => "given_on_too_long_ago",
            ConsentError::ValidityTooLong { .. } => "validity_too_long",
            ConsentError::WgboBasisLapsesBeforeStart { .. } => "wgbo_basis_lapses_before_start",
            ConsentError::WgboMissingPerformer { .. } => "wgbo_missing_performer",
            ConsentError::WgboExceptionOutsideAge { .. } => "wgbo_exception_outside_age",
            ConsentError::WgboExceptionWithParent { .. } => "wgbo_exception_with_parent",
            ConsentError::AlreadyWithdrawn { .. } => "consent_already_withdrawn",
            ConsentError::MirrorNotWithdrawable => "consent_is_mirror",
        }
    }

    /// The JSON path of the offending request field, where the error concerns one. When
    /// `given_on` was absent and defaulted to `valid_from`, the path is `valid_from`,
    /// since that is the value the user actually sent.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ConsentError::Empty { field }
            | ConsentError::TooLong { field, .. }
            | ConsentError::InvalidIdentifier { field, .. }
            | ConsentError::TypeNotConsentable { field, .. }
            | ConsentError::ValidityReversed { field, .. } => Some(field),
            ConsentError::PerformerNameEmpty { .. } | ConsentError::PerformerNameTooLong { .. } => {
                Some("performers.name")
            }
            ConsentError::DuplicateChildPerformer | ConsentError::WgboMissingPerformer { .. } => {
                Some("performers")
            }
            ConsentError::BirthDateInFuture { .. } => Some("child.birth_date"),
            ConsentError::ValidityTooLong { .. } => Some("valid_until"),
            ConsentError::WgboBasisLapsesBeforeStart { .. } => Some("valid_from"),
            ConsentError::GivenOnInFuture { defaulted, .. }
            | ConsentError::GivenOnTooLongAgo { defaulted, .. }
            | ConsentError::GivenOnBeforeBirth { defaulted, .. } => {
                Some(if *defaulted { "valid_from" } else { "given_on" })
            }
            ConsentError::WgboExceptionOutsideAge { .. }
            | ConsentError::WgboExceptionWithParent { .. } => Some("exception"),
            ConsentError::AlreadyWithdrawn { .. } | ConsentError::MirrorNotWithdrawable => None,
        }
    }
}

/// Checks a consent request against the field rules and the WGBO rules, in the order a
/// user would fix them (the child, the performers, the scope, the dates, the evidence,
/// then whose consent counts), and returns the WGBO basis on which it stands. Only the
/// first problem is reported.
///
/// `today` is the practice's local date. The age is taken on `given_on` (or `valid_from`
/// when absent), which may lie at most `rules.given_on_max_days_back` days back; the
/// period may run at most `rules.max_validity_days` after it. A child who turns 12
/// during the period ends a parent-only consent the day before (see
/// [`ConsentRecord::effective_until`]); one that would end before it starts is refused.
pub fn validate_request(
    req: &ConsentRequest,
    today: NaiveDate,
    rules: &ConsentRules,
) -> Result<WgboBasis, ConsentError> {
    let birth = req.child.birth_date;
    if birth > today {
        return Err(ConsentError::BirthDateInFuture { today });
    }
    if let Some(name) = &req.child.name {
        check_text("child.name", name, NAME_MAX)?;
    }

    for (i, p) in req.performers.iter().enumerate() {
        let position = i + 1;
        let len = p.name.chars().count();
        if p.name.trim().is_empty() {
            return Err(ConsentError::PerformerNameEmpty { position });
        }
        if len > NAME_MAX {
            return Err(ConsentError::PerformerNameTooLong {
                position,
                len,
                max: NAME_MAX,
            });
        }
    }
    if req
        .performers
        .iter()
        .filter(|p| p.role == PerformerRole::Child)
        .count()
        > 1
    {
        return Err(ConsentError::DuplicateChildPerformer);
    }

    check_types("scope.types", &req.scope.types)?;
    check_recipient("scope.recipient", &req.scope.recipient)?;

    if req.valid_until < req.valid_from {
        return Err(ConsentError::ValidityReversed {
            field: "valid_until",
            valid_from: req.valid_from,
            valid_until: req.valid_until,
        });
    }
    let given_on = req.effective_given_on();
    let defaulted = req.given_on.is_none();
    if given_on > today {
        return Err(ConsentError::GivenOnInFuture {
            given_on,
            today,
            defaulted,
        });
    }
    let age = age_on(birth, given_on).ok_or(ConsentError::GivenOnBeforeBirth {
        given_on,
        defaulted,
    })?;
    if (today - given_on).num_days() > i64::from(rules.given_on_max_days_back) {
        return Err(ConsentError::GivenOnTooLongAgo {
            given_on,
            today,
            max_days: rules.given_on_max_days_back,
            defaulted,
        });
    }
    if (req.valid_until - given_on).num_days() > i64::from(rules.max_validity_days) {
        return Err(ConsentError::ValidityTooLong {
            given_on,
            valid_until: req.valid_until,
            max_days: rules.max_validity_days,
        });
    }

    check_text("evidence", &req.evidence, EVIDENCE_MAX)?;
    if let Some(reason) = &req.exception {
        check_text("exception", reason, REASON_MAX)?;
    }

    let basis = wgbo_basis(age, given_on, &req.performers, req.exception.as_deref())?;
    if basis_ends_on(&basis, birth).is_some_and(|lapse| lapse < req.valid_from) {
        return Err(ConsentError::WgboBasisLapsesBeforeStart {
            valid_from: req.valid_from,
        });
    }
    Ok(basis)
}

/// Non-blank and at most `max` characters (not bytes: names carry diacritics).
fn check_text(field: &'static str, s: &str, max: usize) -> Result<(), ConsentError> {
    if s.trim().is_empty() {
        return Err(ConsentError::Empty { field });
    }
    check_len(field, s, max)
}

fn check_len(field: &'static str, s: &str, max: usize) -> Result<(), ConsentError> {
    let len = s.chars().count();
    if len > max {
        return Err(ConsentError::TooLong { field, len, max });
    }
    Ok(())
}

/// Non-empty, and only `referral` / `feedback`: `consultation` is anonymous and needs no
/// consent, `consent_update` is sent under the consent it concerns.
fn check_types(field: &'static str, types: &[MessageType]) -> Result<(), ConsentError> {
    if types.is_empty() {
        return Err(ConsentError::Empty { field });
    }
    match types
        .iter()
        .find(|t| !matches!(t, MessageType::Referral | MessageType::Feedback))
    {
        Some(&message_type) => Err(ConsentError::TypeNotConsentable {
            field,
            message_type,
        }),
        None => Ok(()),
    }
}

/// A recipient is compared byte for byte with a certificate identity, so whitespace or
/// control characters would make a consent that can never match; refuse them up front.
fn check_recipient(field: &'static str, s: &str) -> Result<(), ConsentError> {
    if s.is_empty() {
        return Err(ConsentError::Empty { field });
    }
    check_len(field, s, RECIPIENT_MAX)?;
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConsentError::InvalidIdentifier {
            field,
            rule: "it must not contain spaces or control characters",
        });
    }
    Ok(())
}

/// Consent ids double as FHIR resource ids: `[A-Za-z0-9\-\.]{1,64}`.
fn check_consent_id(field: &'static str, s: &str) -> Result<(), ConsentError> {
    if s.is_empty() {
        return Err(ConsentError::Empty { field });
    }
    check_len(field, s, ID_MAX)?;
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(ConsentError::InvalidIdentifier {
            field,
            rule: "only letters, digits, '-' and '.' are allowed",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
