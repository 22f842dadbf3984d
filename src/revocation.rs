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
//!
//! A list comes from a file (`tls.crls`) or from its CA's distribution point over plain
//! HTTP (`tls.crl_urls`, fetched and refreshed by [`fetch`]). Plain HTTP is how CAs
//! publish CRLs: a list's integrity comes from its CA's signature, so every list, from a
//! file or a URL, must be signed by a configured CA (a trust anchor, an issuing CA or an
//! intermediate of the own chain) whose subject is the list's issuer — checked here with
//! x509-parser and ring, and again by rustls when it uses the list. A fetched list older
//! than the one held (an attacker on the path replaying an old, still signed list) is
//! refused. The last good list from each URL is kept on disk ([`fetch::write_cache`]) and
//! read at the next start, so an unreachable CA does not leave the gateway without it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateRevocationListDer;
use x509_parser::prelude::*;

pub mod fetch;

/// Where a revocation list comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CrlSource {
    File(PathBuf),
    Url(String),
}

impl std::fmt::Display for CrlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CrlSource::File(p) => write!(f, "{}", p.display()),
            CrlSource::Url(u) => f.write_str(u),
        }
    }
}

/// What a CRL says, as checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CrlState {
    pub source: CrlSource,
    pub issuer: String,
    pub this_update: DateTime<Utc>,
    pub next_update: Option<DateTime<Utc>>,
    pub revoked: usize,
}

/// How fetching the list of one `tls.crl_urls` entry goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FetchState {
    pub url: String,
    /// Where its last good list is kept.
    pub cache: PathBuf,
    /// The last attempt, whatever its outcome.
    pub last_fetch: Option<DateTime<Utc>>,
    /// The last attempt that brought a good list.
    pub last_success: Option<DateTime<Utc>>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// Failed attempts since the gateway started.
    pub failures: u64,
    /// Whether the list held is the cached copy read at start (nothing fetched since).
    pub from_cache: bool,
}

/// One list as held.
#[derive(Debug, Clone)]
struct List {
    der: CertificateRevocationListDer<'static>,
    state: CrlState,
    /// (issuer name DER, serial) of every certificate it revokes.
    revoked: Vec<(Vec<u8>, Vec<u8>)>,
    issuer_raw: Vec<u8>,
}

/// The configured revocation lists.
#[derive(Debug, Clone, Default)]
pub struct CrlSet {
    lists: Vec<List>,
    /// Every revoked certificate of every list: looked up on each request.
    revoked: HashSet<(Vec<u8>, Vec<u8>)>,
    grace: Duration,
    fetches: Vec<FetchState>,
    /// The CA certificates (DER) a list must be signed by one of.
    cas: Arc<Vec<Vec<u8>>>,
}

impl CrlSet {
    /// Reads every file (PEM or DER, one or more CRLs each), each list signed by one of
    /// `cas`. `Err` names the file.
    pub fn load(files: &[PathBuf], grace: Duration, cas: Vec<Vec<u8>>) -> Result<CrlSet, String> {
        let mut set = CrlSet {
            grace,
            cas: Arc::new(cas),
            ..CrlSet::default()
        };
        for file in files {
            let bytes = std::fs::read(file)
                .map_err(|e| format!("{}: cannot read the CRL: {e}", file.display()))?;
            let source = CrlSource::File(file.clone());
            let lists = set
                .read(&source, &bytes)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            set.lists.extend(lists);
        }
        set.index();
        Ok(set)
    }

    /// Adds the lists of `tls.crl_urls`: the cached copy of each, if one is on disk and
    /// still good. A cached copy that is not (damaged, or no longer signed by a
    /// configured CA) is left out with a warning; the fetch replaces it.
    pub fn with_urls(mut self, urls: &[String], cache_dir: &Path) -> CrlSet {
        for url in urls {
            let cache = fetch::cache_file(cache_dir, url);
            let mut state = FetchState {
                url: url.clone(),
                cache: cache.clone(),
                last_fetch: None,
                last_success: None,
                last_error: None,
                failures: 0,
                from_cache: false,
            };
            match std::fs::read(&cache) {
                Ok(bytes) => match self.read(&CrlSource::Url(url.clone()), &bytes) {
                    Ok(lists) => {
                        self.lists.extend(lists);
                        state.from_cache = true;
                    }
                    Err(e) => {
                        tracing::warn!(url = %url, cache = %cache.display(), error = %e, "the cached revocation list is not usable; fetching a new one");
                        state.last_error = Some(format!("the cached copy is not usable: {e}"));
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    state.last_error = Some(format!(
                        "cannot read the cached copy {}: {e}",
                        cache.display()
                    ));
                }
            }
            self.fetches.push(state);
        }
        self.index();
        self
    }

    /// This set with the list fetched from `url` at `at` in place of the one held from
    /// there. `Err` says why `bytes` is not taken (the set stays as it was).
    pub fn with_fetched(
        &self,
        url: &str,
        bytes: &[u8],
        at: DateTime<Utc>,
    ) -> Result<CrlSet, String> {
        let source = CrlSource::Url(url.to_string());
        let fresh = self.read(&source, bytes)?;
        for new in &fresh {
            let held = self
                .lists
                .iter()
                .find(|l| l.state.source == source && l.issuer_raw == new.issuer_raw);
            if let Some(held) = held {
                if new.state.this_update < held.state.this_update {
                    return Err(format!(
                        "the list is older (thisUpdate {}) than the one held (thisUpdate {}): refused as a replay",
                        new.state.this_update, held.state.this_update
                    ));
                }
            }
        }
        let mut set = self.clone();
        set.lists.retain(|l| l.state.source != source);
        set.lists.extend(fresh);
        if let Some(f) = set.fetches.iter_mut().find(|f| f.url == url) {
            f.last_fetch = Some(at);
            f.last_success = Some(at);
            f.last_error = None;
            f.from_cache = false;
        }
        set.index();
        Ok(set)
    }

    /// This set (read again by a reload) with the fetch history of `old` for the URLs
    /// both have.
    pub fn with_history_of(mut self, old: &CrlSet) -> CrlSet {
        for f in self.fetches.iter_mut() {
            if let Some(o) = old.fetches.iter().find(|o| o.url == f.url) {
                f.last_fetch = o.last_fetch;
                f.last_success = o.last_success;
                f.last_error = o.last_error.clone();
                f.failures = o.failures;
                f.from_cache = o.from_cache;
            }
        }
        self
    }

    /// This set with a failed fetch of `url` noted; the lists held stay in force.
    pub fn with_failure(&self, url: &str, at: DateTime<Utc>, error: &str) -> CrlSet {
        let mut set = self.clone();
        if let Some(f) = set.fetches.iter_mut().find(|f| f.url == url) {
            f.last_fetch = Some(at);
            f.last_error = Some(error.to_string());
            f.failures += 1;
        }
        set
    }

    /// The CRLs in `bytes` (PEM or DER), each checked to be signed by a configured CA.
    fn read(&self, source: &CrlSource, bytes: &[u8]) -> Result<Vec<List>, String> {
        let ders: Vec<CertificateRevocationListDer<'static>> = if bytes.starts_with(b"-----") {
            CertificateRevocationListDer::pem_slice_iter(bytes)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("bad PEM CRL: {e}"))?
        } else {
            vec![CertificateRevocationListDer::from(bytes.to_vec())]
        };
        if ders.is_empty() {
            return Err("holds no CRL".into());
        }
        ders.into_iter()
            .map(|der| self.check(source, der))
            .collect()
    }

    fn check(
        &self,
        source: &CrlSource,
        der: CertificateRevocationListDer<'static>,
    ) -> Result<List, String> {
        let (_, crl) = parse_x509_crl(der.as_ref()).map_err(|e| format!("not a CRL: {e}"))?;
        let issuer_raw = crl.issuer().as_raw().to_vec();
        self.check_signature(&crl)?;
        let time = |t: ASN1Time| DateTime::from_timestamp(t.timestamp(), 0);
        let revoked: Vec<(Vec<u8>, Vec<u8>)> = crl
            .iter_revoked_certificates()
            .map(|entry| (issuer_raw.clone(), entry.raw_serial().to_vec()))
            .collect();
        let state = CrlState {
            source: source.clone(),
            issuer: crl.issuer().to_string(),
            this_update: time(crl.last_update()).ok_or("thisUpdate out of range")?,
            next_update: crl.next_update().and_then(time),
            revoked: revoked.len(),
        };
        Ok(List {
            der,
            state,
            revoked,
            issuer_raw,
        })
    }

    /// The list must be signed by a configured CA named as its issuer.
    fn check_signature(&self, crl: &CertificateRevocationList<'_>) -> Result<(), String> {
        let issuer = crl.issuer();
        let mut named = false;
        for ca in self.cas.iter() {
            let Ok((_, cert)) = X509Certificate::from_der(ca) else {
                continue;
            };
            if cert.subject().as_raw() != issuer.as_raw() {
                continue;
            }
            named = true;
            if crl.verify_signature(cert.public_key()).is_ok() {
                return Ok(());
            }
        }
        Err(if named {
            format!("the list's signature does not verify with the key of its issuer {issuer}: refused (not signed by that CA)")
        } else {
            format!("the list's issuer {issuer} is not a configured CA (trust anchor, issuing CA or intermediate of the own chain): refused")
        })
    }

    /// Rebuilds the lookup of revoked certificates.
    fn index(&mut self) {
        self.revoked = self
            .lists
            .iter()
            .flat_map(|l| l.revoked.iter().cloned())
            .collect();
    }

    /// Whether any list is configured (from a file or a URL).
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.fetches.is_empty()
    }

    /// The lists for rustls.
    pub fn ders(&self) -> Vec<CertificateRevocationListDer<'static>> {
        self.lists.iter().map(|l| l.der.clone()).collect()
    }

    pub fn states(&self) -> Vec<&CrlState> {
        self.lists.iter().map(|l| &l.state).collect()
    }

    /// How fetching each `tls.crl_urls` entry goes.
    pub fn fetches(&self) -> &[FetchState] {
        &self.fetches
    }

    /// The URLs from which no list is held at all (never fetched, no cached copy): their
    /// CAs' certificates cannot be checked.
    pub fn missing(&self) -> Vec<&str> {
        self.fetches
            .iter()
            .filter(|f| {
                !self
                    .lists
                    .iter()
                    .any(|l| l.state.source == CrlSource::Url(f.url.clone()))
            })
            .map(|f| f.url.as_str())
            .collect()
    }

    /// Whether rustls should refuse certificates whose CRL is past its nextUpdate: always,
    /// unless every stale list is still within the grace period.
    pub fn enforce_expiry(&self, now: DateTime<Utc>) -> bool {
        self.lists
            .iter()
            .filter_map(|l| l.state.next_update)
            .any(|next| next < now && now >= next + self.grace)
            || self.grace.is_zero()
    }

    /// The stale lists whose grace (if any) has ended at `now`: their CAs' certificates
    /// are refused.
    pub fn refusing(&self, now: DateTime<Utc>) -> Vec<&CrlState> {
        self.lists
            .iter()
            .map(|l| &l.state)
            .filter(|s| {
                s.next_update
                    .is_some_and(|n| n < now && now >= n + self.grace)
            })
            .collect()
    }

    /// The lists past their nextUpdate at `now`.
    pub fn stale(&self, now: DateTime<Utc>) -> Vec<&CrlState> {
        self.lists
            .iter()
            .map(|l| &l.state)
            .filter(|s| s.next_update.is_some_and(|n| n < now))
            .collect()
    }

    /// Whether a certificate must be refused for its revocation status: it is on one of
    /// the lists (by issuer and serial number), or no list of its issuer is held while a
    /// configured URL has brought none yet (rustls checks nothing when it holds no list
    /// at all, so this covers that case too).
    pub fn is_revoked(&self, cert_der: &[u8]) -> bool {
        match X509Certificate::from_der(cert_der) {
            Ok((_, cert)) => {
                self.revoked
                    .contains(&(cert.issuer().as_raw().to_vec(), cert.raw_serial().to_vec()))
                    || self.unchecked(cert_der)
            }
            Err(_) => false,
        }
    }

    /// Whether `cert_der` cannot be checked: no list of its issuer is held while a
    /// configured URL has brought none yet.
    pub fn unchecked(&self, cert_der: &[u8]) -> bool {
        match X509Certificate::from_der(cert_der) {
            Ok((_, cert)) => {
                !self.missing().is_empty()
                    && !self
                        .lists
                        .iter()
                        .any(|l| l.issuer_raw == cert.issuer().as_raw())
            }
            Err(_) => false,
        }
    }
}

/// The nextUpdate of the first CRL in `bytes` (PEM or DER), if it parses: when the
/// fetcher should look again. Whether the list is any good is checked by [`CrlSet`].
pub fn next_update_of(bytes: &[u8]) -> Option<DateTime<Utc>> {
    let der = if bytes.starts_with(b"-----") {
        CertificateRevocationListDer::pem_slice_iter(bytes)
            .next()?
            .ok()?
    } else {
        CertificateRevocationListDer::from(bytes.to_vec())
    };
    let (_, crl) = parse_x509_crl(der.as_ref()).ok()?;
    DateTime::from_timestamp(crl.next_update()?.timestamp(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::pki::Authority;

    fn der(pem: &str) -> Vec<u8> {
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn a_list_not_signed_by_a_configured_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("crl-ca").unwrap();
        let now = Utc::now();
        let good = dir.path().join("good.crl.pem");
        std::fs::write(&good, ca.crl(&[], now, now + Duration::days(1)).unwrap()).unwrap();
        let cas = vec![der(&ca.cert_pem)];
        let set = CrlSet::load(std::slice::from_ref(&good), Duration::zero(), cas.clone()).unwrap();
        assert_eq!(set.states().len(), 1);

        // Another CA with the same name signs a list: its issuer names a configured CA,
        // but the signature is not that CA's.
        let impostor = Authority::new("crl-ca").unwrap();
        let forged = dir.path().join("forged.crl.pem");
        std::fs::write(
            &forged,
            impostor.crl(&[], now, now + Duration::days(1)).unwrap(),
        )
        .unwrap();
        let e =
            CrlSet::load(std::slice::from_ref(&forged), Duration::zero(), cas.clone()).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        assert!(set
            .with_urls(&[], dir.path())
            .with_fetched(
                "http://x/crl",
                impostor
                    .crl(&[], now, now + Duration::days(1))
                    .unwrap()
                    .as_bytes(),
                now
            )
            .is_err());

        // A CA that is not configured at all.
        let other = Authority::new("other").unwrap();
        let unknown = dir.path().join("unknown.crl.pem");
        std::fs::write(
            &unknown,
            other.crl(&[], now, now + Duration::days(1)).unwrap(),
        )
        .unwrap();
        let e = CrlSet::load(std::slice::from_ref(&unknown), Duration::zero(), cas).unwrap_err();
        assert!(e.contains("not a configured CA"), "{e}");
    }

    #[test]
    fn a_fetched_list_replaces_the_one_held_unless_it_is_older() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("crl-ca").unwrap();
        let leaf = ca
            .issue(&crate::dev::pki::LeafSpec::new("90000123", "t", "t"))
            .unwrap();
        let leaf = der(&leaf.cert_pem);
        let url = "http://ca.test/crl".to_string();
        let set = CrlSet::load(&[], Duration::zero(), vec![der(&ca.cert_pem)])
            .unwrap()
            .with_urls(std::slice::from_ref(&url), dir.path());
        assert_eq!(set.missing(), vec![url.as_str()]);
        // Nothing held for its CA while the URL has brought nothing: refused.
        assert!(set.is_revoked(&leaf));
        let now = Utc::now();
        let first = ca.crl(&[], now, now + Duration::days(1)).unwrap();
        let set = set.with_fetched(&url, first.as_bytes(), now).unwrap();
        assert!(set.missing().is_empty());
        assert!(!set.is_revoked(&leaf));
        let later = now + Duration::hours(1);
        let revoking = ca.crl(&[&leaf], later, later + Duration::days(1)).unwrap();
        let set = set.with_fetched(&url, revoking.as_bytes(), later).unwrap();
        assert!(set.is_revoked(&leaf));
        assert_eq!(set.states().len(), 1);
        // The first list again (a replay): refused, the newer one stays.
        let e = set.with_fetched(&url, first.as_bytes(), later).unwrap_err();
        assert!(e.contains("older"), "{e}");
        let failed = set.with_failure(&url, later, "connection refused");
        assert!(failed.is_revoked(&leaf));
        assert_eq!(failed.fetches()[0].failures, 1);
        assert_eq!(
            failed.fetches()[0].last_error.as_deref(),
            Some("connection refused")
        );
    }
}
