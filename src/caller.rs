//! Who is on the other end of an mTLS connection, as the listener established it after
//! the handshake: the verified leaf certificate, what [`crate::identity`] reads from it,
//! and how it appears in an audit record.

use crate::chain::Actor;
use crate::identity::{CertIdentity, IdentityError, OrgId};

/// Who is on the other end of an mTLS connection, as established after the handshake:
/// the verified leaf certificate and what it says, or why it says nothing usable.
#[derive(Debug, Clone)]
pub struct Caller {
    pub remote: std::net::SocketAddr,
    /// The verified leaf certificate (DER).
    pub cert: Vec<u8>,
    pub identity: Result<CertIdentity, IdentityError>,
}

impl Caller {
    /// The caller as an audit record's actor.
    pub fn actor(&self) -> Actor {
        match &self.identity {
            Ok(id) => Actor::Peer {
                organisation: id.organisation_id.to_string(),
                certificate_serial: id.serial.clone(),
                remote: Some(self.remote.to_string()),
            },
            Err(_) => Actor::Unknown {
                remote: self.remote.to_string(),
            },
        }
    }

    /// Whether the certificate it presented has expired by `now`: checked on every
    /// request, because a kept-alive connection outlives the handshake that checked it.
    pub fn expired(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        crate::identity::not_after(&self.cert).is_none_or(|end| end < now)
    }

    /// The organisation its certificate names, if any.
    pub fn organisation(&self) -> Option<&OrgId> {
        self.identity.as_ref().ok().map(|i| &i.organisation_id)
    }
}
