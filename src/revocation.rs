//! Certificate revocation: the CAs' revocation lists (CRLs) the config names, read and
//! checked at start and on every reload, handed to rustls for every handshake in both
//! directions, and consulted again on every request of a kept-alive connection — so a
//! certificate revoked after its key was stolen stops working at its next request, not
//! when it expires.
//!
//! rustls checks only the end-entity certificate here (`only_check_end_entity_revocation`):
//! the CRLs an operator configures are the issuing CAs' (UZI server CA, PKIoverheid
//! issuing CAs); the roots' and domain CAs' revocation lists change rarely, and requiring
//! them would make every handshake fail for a missing list rather than for a revoked
//! certificate. A leaf whose issuer has no configured CRL is refused (unknown status),
//! once any CRL is configured.
//!
//! A CRL past its `nextUpdate` is stale: by default its CA's certificates are refused
//! (hard fail). With `crl_grace_hours` the stale list is kept in force, without enforcing
//! its expiry, until the grace ends; then hard fail again. [`CrlSet::states`] says for
//! each list when it was issued, when the next is due, and whether it is stale.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateRevocationListDer;
use x509_parser::prelude::*;

/// What a CRL file says, as checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CrlState {
    pub file: PathBuf,
    pub issuer: String,
    pub this_update: DateTime<Utc>,
    pub next_update: Option<DateTime<Utc>>,
    pub revoked: usize,
}

/// The configured revocation lists.
#[derive(Debug, Clone, Default)]
pub struct CrlSet {
    ders: Vec<CertificateRevocationListDer<'static>>,
    states: Vec<CrlState>,
    /// (issuer name DER, serial) of every revoked certificate.
    revoked: HashSet<(Vec<u8>, Vec<u8>)>,
    grace: Duration,
}

impl CrlSet {
    /// Reads every file (PEM or DER, one or more CRLs each). `Err` names the file.
    pub fn load(files: &[PathBuf], grace: Duration) -> Result<CrlSet, String> {
        let mut set = CrlSet {
            grace,
            ..CrlSet::default()
        };
        for file in files {
            let bytes = std::fs::read(file)
                .map_err(|e| format!("{}: cannot read the CRL: {e}", file.display()))?;
            let ders: Vec<CertificateRevocationListDer<'static>> = if bytes.starts_with(b"-----") {
                CertificateRevocationListDer::pem_slice_iter(&bytes)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{}: bad PEM CRL: {e}", file.display()))?
            } else {
                vec![CertificateRevocationListDer::from(bytes)]
            };
            if ders.is_empty() {
                return Err(format!("{}: holds no CRL", file.display()));
            }
            for der in ders {
                set.add(file, der)?;
            }
        }
        Ok(set)
    }

    fn add(
        &mut self,
        file: &Path,
        der: CertificateRevocationListDer<'static>,
    ) -> Result<(), String> {
        let (_, crl) = parse_x509_crl(der.as_ref())
            .map_err(|e| format!("{}: not a CRL: {e}", file.display()))?;
        let time = |t: ASN1Time| DateTime::from_timestamp(t.timestamp(), 0);
        let issuer = crl.issuer().as_raw().to_vec();
        let mut revoked = 0;
        for entry in crl.iter_revoked_certificates() {
            self.revoked
                .insert((issuer.clone(), entry.raw_serial().to_vec()));
            revoked += 1;
        }
        self.states.push(CrlState {
            file: file.to_path_buf(),
            issuer: crl.issuer().to_string(),
            this_update: time(crl.last_update())
                .ok_or_else(|| format!("{}: thisUpdate out of range", file.display()))?,
            next_update: crl.next_update().and_then(time),
            revoked,
        });
        self.ders.push(der);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.ders.is_empty()
    }

    /// The lists for rustls.
    pub fn ders(&self) -> Vec<CertificateRevocationListDer<'static>> {
        self.ders.clone()
    }

    pub fn states(&self) -> &[CrlState] {
        &self.states
    }

    /// Whether rustls should refuse certificates whose CRL is past its nextUpdate: always,
    /// unless every stale list is still within the grace period.
    pub fn enforce_expiry(&self, now: DateTime<Utc>) -> bool {
        self.states
            .iter()
            .filter_map(|s| s.next_update)
            .any(|next| next < now && now >= next + self.grace)
            || self.grace.is_zero()
    }

    /// The stale lists whose grace (if any) has ended at `now`: their CAs' certificates
    /// are refused.
    pub fn refusing(&self, now: DateTime<Utc>) -> Vec<&CrlState> {
        self.states
            .iter()
            .filter(|s| {
                s.next_update
                    .is_some_and(|n| n < now && now >= n + self.grace)
            })
            .collect()
    }

    /// The lists past their nextUpdate at `now`.
    pub fn stale(&self, now: DateTime<Utc>) -> Vec<&CrlState> {
        self.states
            .iter()
            .filter(|s| s.next_update.is_some_and(|n| n < now))
            .collect()
    }

    /// Whether `cert_der` is on one of the lists (by issuer and serial number).
    pub fn is_revoked(&self, cert_der: &[u8]) -> bool {
        match X509Certificate::from_der(cert_der) {
            Ok((_, cert)) => self
                .revoked
                .contains(&(cert.issuer().as_raw().to_vec(), cert.raw_serial().to_vec())),
            Err(_) => false,
        }
    }
}
