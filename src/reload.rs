//! Asking a running gateway to reload its configuration: the request travels to the
//! gateway's serve loop ([`crate::gateway`]), which reads and validates the whole config
//! file again and applies it only if all of it is good — or leaves everything as it was
//! and says why. Sent by SIGHUP (see `cli`), by `POST /v1/reload` on the local API and by
//! `wijkpoort reload`, and by tests through `RunningGateway::reload`.

use tokio::sync::{mpsc, oneshot};

use crate::config::{ConfigError, PeerName};

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reloaded {
    pub peers_added: Vec<PeerName>,
    pub peers_removed: Vec<PeerName>,
    pub peers_changed: Vec<PeerName>,
    pub auditors: usize,
    pub relay_settings_changed: bool,
    /// New own credentials (TLS or signing certificate and key) are in use.
    pub credentials_reloaded: bool,
}

/// Why a reload left the running configuration in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    #[error("the new configuration is not valid: {0}")]
    Invalid(#[from] ConfigError),
    #[error("{field} cannot change while the gateway runs; restart the gateway to change it")]
    NeedsRestart { field: &'static str },
    #[error("the new TLS configuration cannot be built: {0}")]
    Tls(crate::tls::TlsError),
    #[error("the new own certificates cannot be kept in the store: {0}")]
    Store(crate::store::StoreError),
    #[error("the gateway is stopping")]
    Stopping,
}

pub struct ReloadRequest {
    pub reply: oneshot::Sender<Result<Reloaded, ReloadError>>,
}

/// The handle that asks for a reload.
#[derive(Clone)]
pub struct Reloader {
    requests: mpsc::Sender<ReloadRequest>,
}

impl Reloader {
    pub fn new() -> (Reloader, mpsc::Receiver<ReloadRequest>) {
        let (requests, rx) = mpsc::channel(8);
        (Reloader { requests }, rx)
    }

    /// Asks for a reload and waits for its outcome.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(ReloadRequest { reply })
            .await
            .map_err(|_| ReloadError::Stopping)?;
        answer.await.map_err(|_| ReloadError::Stopping)?
    }
}
