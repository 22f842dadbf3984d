//! Consent events, the state derived from them, and the one coverage check.
//!
//! Consent is never updated in place: the store appends events and the current state is
//! folded from them, so that the log shows every grant, mirror and withdrawal and can be
//! hash-chained like the audit log. Withdrawal is final: no later event reactivates a
//! consent; a renewed consent is a new record with a new id.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{
    check_consent_id, check_len, check_recipient, check_text, check_types, ConsentError,
    ConsentRecord, WgboBasis, NAME_MAX, REASON_MAX,
};
use crate::config::Role;
use crate::identity::OrgId;
use crate::message::{Bsn, MessageType};

/// Where a consent stands on a given day.
///
/// `NotYetValid` is a status of its own rather than folded into `Active` or `Expired`:
/// a consent recorded today for a period starting next month must not cover a referral
/// today, and the user should be told *that* rather than "expired".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    Active,
    NotYetValid,
    Withdrawn,
    Expired,
}

impl ConsentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Active => "active",
            ConsentStatus::NotYetValid => "not_yet_valid",
            ConsentStatus::Withdrawn => "withdrawn",
            ConsentStatus::Expired => "expired",
        }
    }
}

/// What travels with a referral in the envelope's `consent` field, and what the wijkteam
/// mirrors: enough to check coverage, nothing about who consented or why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentSummary {
    pub id: String,
    pub subject_bsn: Bsn,
    pub types: Vec<MessageType>,
    pub recipient: String,
    pub valid_from: NaiveDate,
    pub valid_until: NaiveDate,
    pub status: ConsentStatus,
}

impl ConsentSummary {
    /// Checks a summary that arrived from a peer before it is mirrored: the same id, scope
    /// and period rules the practice applied when recording. Field paths are given under
    /// `consent.` (the envelope field).
    pub fn validate(&self) -> Result<(), ConsentError> {
        check_consent_id("consent.id", &self.id)?;
        check_types("consent.types", &self.types)?;
        check_recipient("consent.recipient", &self.recipient)?;
        if self.valid_until < self.valid_from {
            return Err(ConsentError::ValidityReversed {
                field: "consent.valid_until",
                valid_from: self.valid_from,
                valid_until: self.valid_until,
            });
        }
        Ok(())
    }
}

/// One entry in the append-only consent log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ConsentEvent {
    /// At the practice: a consent was recorded through the local API.
    Recorded { record: ConsentRecord },
    /// At the practice: a local user withdrew the consent. `reason` may be empty: nobody
    /// has to explain why they withdraw consent.
    Withdrawn {
        consent_id: String,
        at: DateTime<Utc>,
        by: String,
        reason: String,
    },
    /// At the wijkteam: the summary arrived with a referral.
    Mirrored {
        summary: ConsentSummary,
        from_peer: String,
        at: DateTime<Utc>,
    },
    /// At the wijkteam: a `consent_update` arrived.
    UpdatedFromPeer {
        consent_id: String,
        status: ConsentStatus,
        at: DateTime<Utc>,
        from_peer: String,
    },
}

impl ConsentEvent {
    /// The consent this event belongs to (the store's index key).
    pub fn consent_id(&self) -> &str {
        match self {
            ConsentEvent::Recorded { record } => &record.id,
            ConsentEvent::Mirrored { summary, .. } => &summary.id,
            ConsentEvent::Withdrawn { consent_id, .. }
            | ConsentEvent::UpdatedFromPeer { consent_id, .. } => consent_id,
        }
    }

    /// When the event happened (for recorded consents: when it was recorded).
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            ConsentEvent::Recorded { record } => record.recorded_at,
            ConsentEvent::Withdrawn { at, .. }
            | ConsentEvent::Mirrored { at, .. }
            | ConsentEvent::UpdatedFromPeer { at, .. } => *at,
        }
    }

    /// The stable name of the event kind (the serde tag), for audit records.
    pub fn kind(&self) -> &'static str {
        match self {
            ConsentEvent::Recorded { .. } => "recorded",
            ConsentEvent::Withdrawn { .. } => "withdrawn",
            ConsentEvent::Mirrored { .. } => "mirrored",
            ConsentEvent::UpdatedFromPeer { .. } => "updated_from_peer",
        }
    }
}

/// How this gateway came to know the consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConsentOrigin {
    /// Recorded here, at the practice.
    Recorded {
        recorded_by: String,
        recorded_at: DateTime<Utc>,
        basis: WgboBasis,
    },
    /// A mirror of the practice's consent, held at the wijkteam; `from_peer` is the
    /// practice that holds the original.
    Mirrored {
        from_peer: String,
        at: DateTime<Utc>,
    },
}

/// Who withdrew a consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Withdrawer {
    LocalUser { name: String },
    Peer { identity: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub at: DateTime<Utc>,
    pub by: Withdrawer,
    /// `None` when no reason was given (or the withdrawal came from a peer).
    pub reason: Option<String>,
}

/// The current state of one consent, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentState {
    pub id: String,
    pub subject: Bsn,
    pub types: Vec<MessageType>,
    pub recipient: String,
    pub valid_from: NaiveDate,
    /// Inclusive: the effective end. At the practice the record's `valid_until`, or the
    /// day before its WGBO basis lapses if that comes first
    /// ([`ConsentRecord::effective_until`]); at the wijkteam the summary's, which the
    /// practice set the same way.
    pub valid_until: NaiveDate,
    pub origin: ConsentOrigin,
    pub withdrawn: Option<Withdrawal>,
    /// Set when the holding practice reported the consent expired (in a summary or a
    /// `consent_update`) before our own dates say so, e.g. because our clock is behind.
    /// The stricter view wins: the consent counts as expired from then on.
    pub expired_by_peer: Option<DateTime<Utc>>,
}

impl ConsentState {
    /// Folds the events of one consent, in log order, into its current state.
    ///
    /// The first `Recorded` or `Mirrored` event establishes the consent; every other event
    /// of the same id then applies, also one stored before it (a withdrawal that overtook
    /// the mirror still stops the consent). Events about another consent id are ignored,
    /// so passing a longer slice of the log is harmless. A later `Recorded`/`Mirrored` with the same id does not change the
    /// scope or period (consents are immutable), but a later summary that reports the
    /// consent withdrawn or expired is applied. Returns `None` when nothing establishes a
    /// consent.
    ///
    /// A withdrawal is applied whoever reports it (local user or peer): stopping the flow
    /// is the safe direction. Authenticating the peer is the caller's job before it
    /// appends an `UpdatedFromPeer`. The first withdrawal wins; repeats do not move its
    /// time. `Active` or `NotYetValid` from a peer never undo a withdrawal or expiry.
    pub fn from_events(events: &[ConsentEvent]) -> Option<ConsentState> {
        let (first, mut state) = events
            .iter()
            .enumerate()
            .find_map(|(i, e)| Self::establish(e).map(|s| (i, s)))?;
        // Every other event applies, also one stored before the consent was established:
        // a withdrawal that overtook the mirror must still stop the consent.
        for (i, event) in events.iter().enumerate() {
            if i != first {
                state.apply(event);
            }
        }
        Some(state)
    }

    fn establish(event: &ConsentEvent) -> Option<ConsentState> {
        match event {
            ConsentEvent::Recorded { record } => Some(ConsentState {
                id: record.id.clone(),
                subject: record.child.bsn.clone(),
                types: record.scope.types.clone(),
                recipient: record.scope.recipient.clone(),
                valid_from: record.valid_from,
                // Capped where the WGBO basis lapses, also for records stored before
                // the cap existed: the birth date is in the record.
                valid_until: record.effective_until(),
                origin: ConsentOrigin::Recorded {
                    recorded_by: record.recorded_by.clone(),
                    recorded_at: record.recorded_at,
                    basis: record.basis.clone(),
                },
                withdrawn: None,
                expired_by_peer: None,
            }),
            ConsentEvent::Mirrored {
                summary,
                from_peer,
                at,
            } => {
                let mut state = ConsentState {
                    id: summary.id.clone(),
                    subject: summary.subject_bsn.clone(),
                    types: summary.types.clone(),
                    recipient: summary.recipient.clone(),
                    valid_from: summary.valid_from,
                    valid_until: summary.valid_until,
                    origin: ConsentOrigin::Mirrored {
                        from_peer: from_peer.clone(),
                        at: *at,
                    },
                    withdrawn: None,
                    expired_by_peer: None,
                };
                state.apply_peer_status(summary.status, *at, from_peer);
                Some(state)
            }
            ConsentEvent::Withdrawn { .. } | ConsentEvent::UpdatedFromPeer { .. } => None,
        }
    }

    pub(super) fn apply(&mut self, event: &ConsentEvent) {
        if event.consent_id() != self.id {
            return;
        }
        match event {
            ConsentEvent::Recorded { .. } => {}
            ConsentEvent::Mirrored {
                summary,
                from_peer,
                at,
            } => self.apply_peer_status(summary.status, *at, from_peer),
            ConsentEvent::UpdatedFromPeer {
                status,
                at,
                from_peer,
                ..
            } => self.apply_peer_status(*status, *at, from_peer),
            ConsentEvent::Withdrawn { at, by, reason, .. } => self.withdraw(Withdrawal {
                at: *at,
                by: Withdrawer::LocalUser { name: by.clone() },
                reason: Some(reason.trim())
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned),
            }),
        }
    }

    fn apply_peer_status(&mut self, status: ConsentStatus, at: DateTime<Utc>, peer: &str) {
        match status {
            ConsentStatus::Withdrawn => self.withdraw(Withdrawal {
                at,
                by: Withdrawer::Peer {
                    identity: peer.to_owned(),
                },
                reason: None,
            }),
            ConsentStatus::Expired => {
                self.expired_by_peer.get_or_insert(at);
            }
            ConsentStatus::Active | ConsentStatus::NotYetValid => {}
        }
    }

    fn withdraw(&mut self, withdrawal: Withdrawal) {
        if self.withdrawn.is_none() {
            self.withdrawn = Some(withdrawal);
        }
    }

    /// The status on `day` (the local date), as far as known now. A withdrawal counts
    /// whatever the day (it is what we know now, and this is asked about today); then an
    /// expiry reported by the peer; then the validity period, both ends inclusive.
    pub fn status_on(&self, day: NaiveDate) -> ConsentStatus {
        if self.withdrawn.is_some() {
            ConsentStatus::Withdrawn
        } else if self.expired_by_peer.is_some() || day > self.valid_until {
            ConsentStatus::Expired
        } else if day < self.valid_from {
            ConsentStatus::NotYetValid
        } else {
            ConsentStatus::Active
        }
    }

    /// The summary to put in a referral's `consent` field.
    pub fn summary(&self, today: NaiveDate) -> ConsentSummary {
        ConsentSummary {
            id: self.id.clone(),
            subject_bsn: self.subject.clone(),
            types: self.types.clone(),
            recipient: self.recipient.clone(),
            valid_from: self.valid_from,
            valid_until: self.valid_until,
            status: self.status_on(today),
        }
    }

    /// True for a wijkteam mirror of a practice's consent.
    pub fn is_mirror(&self) -> bool {
        matches!(self.origin, ConsentOrigin::Mirrored { .. })
    }
}

/// Why a message is not covered by consent. The texts are meant for the user at the HIS or
/// case system and for logs: plain words, no BSN, no names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ConsentRefusal {
    #[error("there is no consent for this child to refer to")]
    NoConsent,
    #[error("the consent has been withdrawn; nothing more may be sent under it")]
    Withdrawn,
    #[error("the consent has expired: its validity period has ended")]
    Expired,
    #[error("the consent is not yet valid: its validity period has not started")]
    NotYetValid,
    #[error("the consent concerns another child than this message")]
    OtherChild,
    #[error("the consent does not allow sharing with this organisation")]
    OtherRecipient,
    #[error("the consent does not cover this kind of message")]
    OtherType,
}

impl ConsentRefusal {
    /// A stable machine code.
    pub fn code(self) -> &'static str {
        match self {
            ConsentRefusal::NoConsent => "consent_missing",
            ConsentRefusal::Withdrawn => "consent_withdrawn",
            ConsentRefusal::Expired => "consent_expired",
            ConsentRefusal::NotYetValid => "consent_not_yet_valid",
            ConsentRefusal::OtherChild => "consent_other_child",
            ConsentRefusal::OtherRecipient => "consent_other_recipient",
            ConsentRefusal::OtherType => "consent_other_type",
        }
    }
}

/// The one coverage check: does this consent allow a message of type `t` about the child
/// `bsn`, exchanged with `recipient`, on `today`?
///
/// `recipient` is always compared with the consent's scope recipient, the organisation
/// the consent allows sharing with (the wijkteam). So the practice passes the peer it
/// sends a referral to or receives feedback from, and the wijkteam passes *its own*
/// identity; the wijkteam should use [`check_covers_at_recipient`], which adds that the
/// mirror came from the practice on the other end.
///
/// Checked in this order, so that the most basic mismatch is reported: is there a consent,
/// is it about this child, with this organisation, for this type, and is it in force today.
///
/// `consent_update` is covered whenever a consent exists for this child and recipient,
/// *whatever its status*: it is how a withdrawal reaches the wijkteam, so the withdrawal
/// must not block it. `consultation` is anonymous and never covered by a consent; it must
/// not be sent with a subject at all.
pub fn check_covers(
    state: Option<&ConsentState>,
    bsn: &Bsn,
    t: MessageType,
    recipient: &str,
    today: NaiveDate,
) -> Result<(), ConsentRefusal> {
    let state = state.ok_or(ConsentRefusal::NoConsent)?;
    if &state.subject != bsn {
        return Err(ConsentRefusal::OtherChild);
    }
    if state.recipient != recipient {
        return Err(ConsentRefusal::OtherRecipient);
    }
    if t == MessageType::ConsentUpdate {
        return Ok(());
    }
    if !state.types.contains(&t) {
        return Err(ConsentRefusal::OtherType);
    }
    match state.status_on(today) {
        ConsentStatus::Active => Ok(()),
        ConsentStatus::Withdrawn => Err(ConsentRefusal::Withdrawn),
        ConsentStatus::Expired => Err(ConsentRefusal::Expired),
        ConsentStatus::NotYetValid => Err(ConsentRefusal::NotYetValid),
    }
}

/// The coverage check as the wijkteam does it against its mirror, for a referral that
/// arrives from `practice` or feedback it sends to `practice`: [`check_covers`] with the
/// wijkteam's own identity as recipient, and the mirror must have come from `practice`.
/// Without the second part, a consent a child's parents gave to practice A would let
/// the wijkteam send feedback about that child to practice B.
pub fn check_covers_at_recipient(
    state: Option<&ConsentState>,
    bsn: &Bsn,
    t: MessageType,
    own_identity: &str,
    practice: &str,
    today: NaiveDate,
) -> Result<(), ConsentRefusal> {
    check_covers(state, bsn, t, own_identity, today)?;
    match state.map(|s| &s.origin) {
        Some(ConsentOrigin::Mirrored { from_peer, .. }) if from_peer == practice => Ok(()),
        _ => Err(ConsentRefusal::OtherRecipient),
    }
}

/// One message between this gateway and a peer, as the coverage check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// This gateway's role: the practice checks its own records, the wijkteam its mirrors.
    pub role: Role,
    /// This gateway's organisation identifier.
    pub own: &'a OrgId,
    /// The peer's organisation identifier (the recipient, or the sender of a received message).
    pub peer: &'a OrgId,
    pub bsn: &'a Bsn,
    pub message_type: MessageType,
    pub today: NaiveDate,
}

/// Does `state` cover this exchange, in either direction? At the practice the consent
/// was recorded here with the wijkteam as recipient; at the wijkteam it is the mirror,
/// which must name this wijkteam as recipient and have come from that practice. The
/// one coverage rule of the gateway: send, receive and relay all ask it.
pub fn covers(state: Option<&ConsentState>, x: &Exchange<'_>) -> Result<(), ConsentRefusal> {
    match x.role {
        Role::Practice => check_covers(state, x.bsn, x.message_type, x.peer.as_str(), x.today),
        Role::Wijkteam => check_covers_at_recipient(
            state,
            x.bsn,
            x.message_type,
            x.own.as_str(),
            x.peer.as_str(),
            x.today,
        ),
    }
}

/// Whether messages of this type may carry personal data only under a consent.
pub fn needs_consent(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::Referral | MessageType::Feedback | MessageType::ConsentUpdate
    )
}

/// May a local user withdraw this consent? Not twice (the first withdrawal stands and a
/// second would only blur the log), and not a wijkteam mirror: the consent is held by the
/// practice, which withdraws it and tells the wijkteam.
pub fn check_withdrawable(state: &ConsentState) -> Result<(), ConsentError> {
    if let Some(w) = &state.withdrawn {
        return Err(ConsentError::AlreadyWithdrawn { withdrawn_at: w.at });
    }
    if state.is_mirror() {
        return Err(ConsentError::MirrorNotWithdrawable);
    }
    Ok(())
}

/// Builds the `Withdrawn` event for the local API after [`check_withdrawable`]. `by` (the
/// acting user) must be non-blank; `reason` may be empty, since withdrawing consent needs
/// no justification, but is limited in length. An expired consent may still be withdrawn,
/// so the log shows the wish.
pub fn withdrawal_event(
    state: &ConsentState,
    by: String,
    reason: String,
    at: DateTime<Utc>,
) -> Result<ConsentEvent, ConsentError> {
    check_withdrawable(state)?;
    check_text("by", &by, NAME_MAX)?;
    check_len("reason", &reason, REASON_MAX)?;
    Ok(ConsentEvent::Withdrawn {
        consent_id: state.id.clone(),
        at,
        by,
        reason,
    })
}
