//! Who is on the other end of an mTLS connection, as the listener established it after
//! the handshake: the verified leaf certificate, what [`crate::identity`] reads from it,
//! and how it appears in an audit record.
//!
//! A gateway may sign with a certificate other than its TLS certificate: a separate
//! signing certificate (`[signing]`; newer PKIoverheid generations issue single-purpose
//! certificates), or an earlier own certificate whose key signed messages still queued
//! after a renewal. It presents those after its TLS chain in the TLS Certificate message
//! (TLS 1.3 allows extra certificates; the path validation ignores what it does not
//! need), and the other side takes each one as a [`Presented`] signing certificate only
//! if it is a leaf of a configured issuing CA (by name and signature), names the same
//! organisation as the TLS certificate, is valid now and is not revoked. A signature
//! names its certificate by fingerprint ([`certificate_for`] picks it).

use chrono::{DateTime, Utc};
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::*;

use crate::chain::Actor;
use crate::identity::{CertIdentity, IdentityError, OrgId};
use crate::issuers::Issuers;
use crate::revocation::CrlSet;

/// A signing certificate presented after the TLS chain, and whether it is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// It may verify this peer's signatures (DER).
    Accepted(Vec<u8>),
    /// It may not, and why.
    Refused { fingerprint: String, reason: String },
}

/// The signing certificates among the certificates after `chain[0]` (CA certificates
/// are the TLS chain's intermediates and are skipped), each checked to be usable for
/// `organisation`'s signatures at `now`.
pub fn signing_certificates(
    chain: &[CertificateDer<'_>],
    organisation: &OrgId,
    issuers: &Issuers,
    crls: &CrlSet,
    now: DateTime<Utc>,
) -> Vec<Presented> {
    chain
        .iter()
        .skip(1)
        .filter_map(|der| {
            let (_, cert) = X509Certificate::from_der(der).ok()?;
            if cert
                .basic_constraints()
                .ok()
                .flatten()
                .is_some_and(|bc| bc.value.ca)
            {
                return None;
            }
            let fingerprint = crate::signing::fingerprint(der);
            let refused = |reason: String| {
                Some(Presented::Refused {
                    fingerprint: fingerprint.clone(),
                    reason,
                })
            };
            let identity = match issuers.identify(der) {
                Ok(id) => id,
                Err(e) => return refused(format!("it names no organisation: {e}")),
            };
            if identity.organisation_id != *organisation {
                return refused(format!(
                    "it names organisation {}, not {} as the TLS certificate does",
                    identity.organisation_id, organisation
                ));
            }
            let v = cert.validity();
            let ts = now.timestamp();
            if ts < v.not_before.timestamp() || ts > v.not_after.timestamp() {
                return refused(format!(
                    "it is not valid now (valid {} to {})",
                    v.not_before, v.not_after
                ));
            }
            if crls.is_revoked(der) {
                return refused("it has been revoked".into());
            }
            Some(Presented::Accepted(der.to_vec()))
        })
        .collect()
}

/// The certificate `signature` must verify with: the TLS leaf, or the accepted signing
/// certificate it names. `Err` says why not when it names a refused one; a signature
/// naming a certificate not presented at all is checked against the leaf, whose check
/// then says that it names another certificate.
pub fn certificate_for<'a>(
    leaf: &'a [u8],
    presented: &'a [Presented],
    signature: &str,
) -> Result<&'a [u8], String> {
    let Some(named) = crate::signing::named_certificate(signature) else {
        return Ok(leaf);
    };
    for p in presented {
        match p {
            Presented::Accepted(der) if crate::signing::fingerprint(der) == named => {
                return Ok(der)
            }
            Presented::Refused {
                fingerprint,
                reason,
            } if *fingerprint == named => {
                return Err(format!(
                    "the signing certificate {fingerprint} it names is refused: {reason}"
                ))
            }
            _ => {}
        }
    }
    Ok(leaf)
}

/// Who is on the other end of an mTLS connection, as established after the handshake:
/// the verified leaf certificate and what it says, or why it says nothing usable.
#[derive(Debug, Clone)]
pub struct Caller {
    pub remote: std::net::SocketAddr,
    /// The verified leaf certificate (DER).
    pub cert: Vec<u8>,
    /// The intermediates the caller presented with it (DER): kept in the store with the
    /// leaf of a sender whose envelopes are stored, so that `audit prove` can chain the
    /// signer's certificate to a trust anchor offline.
    pub intermediates: Vec<Vec<u8>>,
    pub identity: Result<CertIdentity, IdentityError>,
    /// The signing certificates it presented after its TLS chain.
    pub signing: Vec<Presented>,
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

    /// The certificates that verify its signatures: the leaf and the accepted signing
    /// certificates (kept in the store with what they signed).
    pub fn signing_keys(&self) -> Vec<Vec<u8>> {
        std::iter::once(self.cert.clone())
            .chain(self.signing.iter().filter_map(|p| match p {
                Presented::Accepted(der) => Some(der.clone()),
                Presented::Refused { .. } => None,
            }))
            .collect()
    }

    /// The organisation its certificate names, if any.
    pub fn organisation(&self) -> Option<&OrgId> {
        self.identity.as_ref().ok().map(|i| &i.organisation_id)
    }
}
