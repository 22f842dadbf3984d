//! Errors the gateway reports. A [`Refusal`] is the one shape every refusal takes on
//! both HTTP interfaces: a status, a stable machine code, a sentence for a person, and
//! the field it concerns. Start-up errors are [`StartError`].

use serde::Serialize;

use crate::store::StoreError;

/// A request the gateway will not carry out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    #[serde(skip)]
    pub status: u16,
    #[serde(rename = "error")]
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Refusal {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
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
        Refusal::new(400, "malformed", message)
    }
    pub fn invalid(e: crate::message::InvalidField) -> Refusal {
        Refusal::new(400, "invalid_field", e.to_string()).field(e.field)
    }
    pub fn too_large(limit: usize) -> Refusal {
        Refusal::new(
            413,
            "too_large",
            format!("the message is larger than {limit} bytes"),
        )
    }
    pub fn not_found(what: &str) -> Refusal {
        Refusal::new(404, "not_found", format!("no {what} with that id"))
    }
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        tracing::error!(error = %e, "store failure");
        Refusal::new(
            503,
            "store_unavailable",
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
        Refusal::new(422, r.code(), r.to_string()).field("consent_id")
    }
}

impl From<crate::consent::ConsentError> for Refusal {
    fn from(e: crate::consent::ConsentError) -> Refusal {
        let r = Refusal::new(422, e.code(), e.to_string());
        match e.field() {
            Some(f) => r.field(f),
            None => r,
        }
    }
}

impl From<crate::minimise::Refusal> for Refusal {
    fn from(r: crate::minimise::Refusal) -> Refusal {
        let code = match r.reason {
            crate::minimise::RefusalReason::UnnamedFields => "policy_unnamed_fields",
            crate::minimise::RefusalReason::PolicyViolation => "policy_violation",
        };
        Refusal::new(422, code, r.to_string()).field(r.paths.join(", "))
    }
}
