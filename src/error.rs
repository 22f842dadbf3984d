//! Errors the gateway reports. A [`Refusal`] is the one shape every refusal takes on
//! both HTTP interfaces: a [`Code`] (a stable machine code), a sentence for a person, and
//! the field it concerns; which HTTP status a code gets is decided in `server/` only.
//! Start-up errors are [`StartError`]. Nothing here knows HTTP.

use serde::Serialize;

use crate::store::StoreError;

/// Why the gateway refused a request: one variant per reason a caller can act on. The
/// wire name ([`Code::as_str`]) is the stable machine code in the refusal's JSON; the HTTP
/// status is chosen by the servers alone (`crate::server::status`). A few variants share
/// a wire name because callers have always seen one code for them, while the gateway
/// answers them with different statuses (noted on each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Code {
    /// The request or submission is not the JSON expected.
    Malformed,
    /// A field fails validation (BSN elfproef, dates, lengths).
    InvalidField,
    /// The body or message is larger than allowed.
    TooLarge,
    /// A relay batch holds more messages than allowed.
    BatchTooLarge,
    /// No valid bearer token (local API).
    Unauthorised,
    /// A call that changes state names no acting user (local API).
    MissingUser,
    /// A consent query names no child (local API).
    MissingBsn,
    /// A BSN was asked for in a URL (`GET /v1/consents?bsn=`); it goes in a POST body.
    BsnInUrl,
    NoSuchEndpoint,
    MethodNotAllowed,
    /// No message or consent with that id.
    NotFound,
    /// A submission names no configured peer (wire: `unknown_peer`, like [`Code::UnknownPeer`]).
    UnknownRecipient,
    /// This gateway's role does not send that message type.
    TypeNotSentHere,
    /// Consents are recorded at the practice only.
    ConsentRecordedAtPractice,
    /// The caller's certificate is not of a configured peer.
    UnknownPeer,
    /// The envelope's `from` is not the certificate's organisation.
    FromMismatch,
    /// The envelope is addressed to someone else.
    WrongRecipient,
    /// The peer may not send this message type.
    TypeNotAllowed,
    MissingSignature,
    /// The signature is not hex (wire: `bad_signature`, like [`Code::BadSignature`]).
    SignatureNotHex,
    /// The signature does not verify against the sender's certificate.
    BadSignature,
    /// The message's path does not lead to its batch signature's root (altered, or the
    /// message taken from another batch), or is malformed.
    BatchPathInvalid,
    /// The message carries fields its policy does not name.
    PolicyUnnamedFields,
    /// The message carries more than its policy allows.
    PolicyViolation,
    /// The message holds an object or list where its policy keeps a single value (a
    /// string, number, boolean or null), or a group of the wrong shape.
    PolicyNestedValue,
    /// The envelope's consent block carries a field its type's policy does not name.
    PolicyConsentBlock,
    /// The policy removes a field the message type requires.
    PolicyRemovesRequiredField,
    /// An anonymous message type names a consent.
    ConsentNotApplicable,
    /// A message with personal data names no consent (also [`crate::consent::ConsentRefusal::NoConsent`]).
    ConsentMissing,
    /// A referral's consent summary is not valid.
    ConsentInvalid,
    /// A consent update's body names another consent than its envelope.
    ConsentMismatch,
    /// The consent does not cover the message.
    Consent(crate::consent::ConsentRefusal),
    /// A consent request or withdrawal fails validation; the code is the error's own.
    ConsentRequest(&'static str),
    /// A different message with this id came before.
    DuplicateId,
    NotAnAuditor,
    InvalidAuditQuery,
    AuditQueryFailed,
    /// The store could not commit: nothing was accepted.
    StoreUnavailable,
    SigningFailed,
    Internal,
    /// The certificate of a kept-alive connection expired since its handshake.
    CertificateExpired,
    /// The certificate of a kept-alive connection is on a revocation list loaded since.
    CertificateRevoked,
    /// A configuration reload was refused; the running configuration stays.
    ReloadRefused,
    /// The store's filesystem is down to its free-space reserve: nothing new is accepted
    /// until space is freed; reads go on.
    DiskFull,
    /// The caller already has as many requests in progress as it may.
    TooManyRequests,
    /// The request (its body, or the whole of it) took longer than allowed.
    RequestTimeout,
}

impl Code {
    /// The stable machine code callers see.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Malformed => "malformed",
            Code::InvalidField => "invalid_field",
            Code::TooLarge => "too_large",
            Code::BatchTooLarge => "batch_too_large",
            Code::Unauthorised => "unauthorised",
            Code::MissingUser => "missing_user",
            Code::MissingBsn => "missing_bsn",
            Code::BsnInUrl => "bsn_in_url",
            Code::NoSuchEndpoint => "no_such_endpoint",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::NotFound => "not_found",
            Code::UnknownRecipient | Code::UnknownPeer => "unknown_peer",
            Code::TypeNotSentHere => "type_not_sent_here",
            Code::ConsentRecordedAtPractice => "consent_recorded_at_practice",
            Code::FromMismatch => "from_mismatch",
            Code::WrongRecipient => "wrong_recipient",
            Code::TypeNotAllowed => "type_not_allowed",
            Code::MissingSignature => "missing_signature",
            Code::SignatureNotHex | Code::BadSignature => "bad_signature",
            Code::BatchPathInvalid => "batch_path_invalid",
            Code::PolicyUnnamedFields => "policy_unnamed_fields",
            Code::PolicyViolation => "policy_violation",
            Code::PolicyNestedValue => "policy_nested_value",
            Code::PolicyConsentBlock => "policy_consent_block",
            Code::PolicyRemovesRequiredField => "policy_removes_required_field",
            Code::ConsentNotApplicable => "consent_not_applicable",
            Code::ConsentMissing => "consent_missing",
            Code::ConsentInvalid => "consent_invalid",
            Code::ConsentMismatch => "consent_mismatch",
            Code::Consent(r) => r.code(),
            Code::ConsentRequest(code) => code,
            Code::DuplicateId => "duplicate_id",
            Code::NotAnAuditor => "not_an_auditor",
            Code::InvalidAuditQuery => "invalid_audit_query",
            Code::AuditQueryFailed => "audit_query_failed",
            Code::StoreUnavailable => "store_unavailable",
            Code::SigningFailed => "signing_failed",
            Code::Internal => "internal",
            Code::ReloadRefused => "reload_refused",
            Code::CertificateExpired => "certificate_expired",
            Code::CertificateRevoked => "certificate_revoked",
            Code::DiskFull => "disk_full",
            Code::TooManyRequests => "too_many_requests",
            Code::RequestTimeout => "request_timeout",
        }
    }

    /// A failure of the gateway itself rather than a refusal of the request: nothing
    /// about the request was wrong, so it is not audited as refused and may be retried.
    pub fn is_gateway_failure(self) -> bool {
        matches!(
            self,
            Code::StoreUnavailable
                | Code::SigningFailed
                | Code::Internal
                | Code::DiskFull
                | Code::TooManyRequests
                | Code::RequestTimeout
        )
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A request the gateway will not carry out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    #[serde(rename = "error")]
    pub code: Code,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Refusal {
    pub fn new(code: Code, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            field: None,
        }
    }
    pub fn field(mut self, field: impl Into<String>) -> Refusal {
        self.field = Some(field.into());
        self
    }
    pub fn malformed(message: impl Into<String>) -> Refusal {
        Refusal::new(Code::Malformed, message)
    }
    pub fn invalid(e: crate::message::InvalidField) -> Refusal {
        Refusal::new(Code::InvalidField, e.to_string()).field(e.field)
    }
    pub fn too_large(limit: usize) -> Refusal {
        Refusal::new(
            Code::TooLarge,
            format!("the message is larger than {limit} bytes"),
        )
    }
    pub fn not_found(what: &str) -> Refusal {
        Refusal::new(Code::NotFound, format!("no {what} with that id"))
    }
    pub fn internal(message: impl Into<String>) -> Refusal {
        Refusal::new(Code::Internal, message)
    }
    /// `code: message`, as audit records give a refusal's reason.
    pub fn reason(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        tracing::error!(error = %e, "store failure");
        Refusal::new(
            Code::StoreUnavailable,
            "the gateway could not store the request; nothing was accepted, try again",
        )
    }
}

/// Describes why input is not the JSON we expect without quoting the input: serde's own
/// messages quote offending values (`invalid type: string "111222333"`) and unknown keys,
/// and refusal reasons go into the audit log, which must never hold a BSN or a name.
/// Only a missing field, whose name comes from our own schema, is named.
pub fn describe_json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = match e.classify() {
        serde_json::error::Category::Data if text.starts_with("missing field `") => text
            .split(" at line")
            .next()
            .unwrap_or("a required field is missing"),
        serde_json::error::Category::Data => "a value or field of the wrong kind",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Eof => "JSON that ends too early",
        serde_json::error::Category::Io => "unreadable input",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// Why a gateway could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl StartError {
    /// Exit code: 64 (EX_USAGE) for configuration mistakes, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => 64,
            _ => 1,
        }
    }
}

impl From<crate::consent::ConsentRefusal> for Refusal {
    fn from(r: crate::consent::ConsentRefusal) -> Refusal {
        Refusal::new(Code::Consent(r), r.to_string()).field("consent_id")
    }
}

impl From<crate::consent::ConsentError> for Refusal {
    fn from(e: crate::consent::ConsentError) -> Refusal {
        let r = Refusal::new(Code::ConsentRequest(e.code()), e.to_string());
        match e.field() {
            Some(f) => r.field(f),
            None => r,
        }
    }
}

impl From<crate::minimise::PolicyRefusal> for Refusal {
    fn from(r: crate::minimise::PolicyRefusal) -> Refusal {
        use crate::minimise::{RefusalReason, ViolationKind};
        let code = match r.reason {
            RefusalReason::ConsentBlock
                if r.violations
                    .iter()
                    .any(|v| v.kind == ViolationKind::ConsentNotCarried) =>
            {
                Code::ConsentNotApplicable
            }
            RefusalReason::ConsentBlock => Code::PolicyConsentBlock,
            _ if r.has_nested_value() => Code::PolicyNestedValue,
            RefusalReason::UnnamedFields => Code::PolicyUnnamedFields,
            RefusalReason::PolicyViolation => Code::PolicyViolation,
        };
        Refusal::new(code, r.to_string()).field(r.paths.join(", "))
    }
}
