//! The two HTTP faces of a gateway: the local API for the system next to it, and the
//! mTLS listener for peers and auditors (with the auditor's routes in [`audit`]). Both
//! answer refusals in one JSON shape (`{"error": code, "message": text, "field": path}`)
//! with the HTTP status that [`status`] gives each refusal code — the only place where a
//! refusal becomes a status — and read bodies with a size cap. The servers sit on top:
//! nothing below them imports them.

pub mod audit;
pub mod limits;
pub mod listener;
pub mod local_api;
pub mod ops;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Response, StatusCode};

use crate::error::{Code, Refusal};
use crate::message::MAX_MESSAGE_BYTES;

pub type Reply = Response<Full<Bytes>>;

pub fn json<T: serde::Serialize>(status: u16, value: &T) -> Reply {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// The HTTP status of a refusal.
pub fn status(code: Code) -> StatusCode {
    match code {
        Code::Malformed
        | Code::InvalidField
        | Code::MissingUser
        | Code::MissingBsn
        | Code::BsnInUrl
        | Code::MissingSignature
        | Code::SignatureNotHex
        | Code::InvalidAuditQuery => StatusCode::BAD_REQUEST,
        Code::Unauthorised => StatusCode::UNAUTHORIZED,
        Code::UnknownPeer
        | Code::FromMismatch
        | Code::TypeNotAllowed
        | Code::NotAnAuditor
        | Code::CertificateExpired
        | Code::CertificateRevoked => StatusCode::FORBIDDEN,
        Code::NotFound | Code::NoSuchEndpoint => StatusCode::NOT_FOUND,
        Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Code::DuplicateId => StatusCode::CONFLICT,
        Code::TooLarge | Code::BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Code::UnknownRecipient
        | Code::TypeNotSentHere
        | Code::ConsentRecordedAtPractice
        | Code::WrongRecipient
        | Code::BadSignature
        | Code::BatchPathInvalid
        | Code::PolicyUnnamedFields
        | Code::PolicyViolation
        | Code::PolicyNestedValue
        | Code::PolicyConsentBlock
        | Code::PolicyRemovesRequiredField
        | Code::ConsentNotApplicable
        | Code::ConsentMissing
        | Code::ConsentInvalid
        | Code::ConsentMismatch
        | Code::Consent(_)
        | Code::ConsentRequest(_)
        | Code::ReloadRefused => StatusCode::UNPROCESSABLE_ENTITY,
        Code::StoreUnavailable | Code::DiskFull => StatusCode::SERVICE_UNAVAILABLE,
        Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        Code::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        Code::SigningFailed | Code::Internal | Code::AuditQueryFailed => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

pub fn refusal(r: &Refusal) -> Reply {
    Response::builder()
        .status(status(r.code))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(r.to_json())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Reads a request body of at most [`MAX_MESSAGE_BYTES`]; more is a 413 refusal.
pub async fn read_body(body: Incoming) -> Result<Bytes, Refusal> {
    read_body_limited(body, MAX_MESSAGE_BYTES).await
}

/// Reads a request body of at most `limit` bytes; more is a 413 refusal.
pub async fn read_body_limited(body: Incoming, limit: usize) -> Result<Bytes, Refusal> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::too_large(limit)),
        Err(e) => Err(Refusal::malformed(format!(
            "the request body could not be read: {e}"
        ))),
    }
}

/// Binds a listening socket; the error names the address.
pub async fn bind(
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, crate::error::StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::error::StartError::Bind { addr, source })
}
