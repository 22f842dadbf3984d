//! Configuration in two steps: the TOML file as written ([`RawConfig`]), and the
//! validated [`Config`] that the rest of the gateway uses. Validation reads and checks
//! every file the config names (certificates, key, trust anchors, token, secret, data
//! key) once,
//! at start, so that nothing downstream re-checks and a mistake stops the start with one
//! line naming the file and the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::*;

use crate::identity::{self, OrgId};
use crate::message::MessageType;
use crate::signing::Signer;

pub mod limits;
pub mod retention;
pub use limits::Limits;

/// A configuration mistake: which file, which field, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {problem}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub field: String,
    pub problem: String,
}

/// Which side of the exchange this gateway is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Practice,
    Wijkteam,
}

impl Role {
    /// The message types this role may originate (DESIGN.md, Deployment).
    pub fn sends(self) -> &'static [MessageType] {
        match self {
            Role::Practice => &[
                MessageType::Referral,
                MessageType::Consultation,
                MessageType::ConsentUpdate,
            ],
            Role::Wijkteam => &[MessageType::Feedback],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Development only: accept private key, secret and token files that group or others
    /// can read. Off by default, as ssh refuses such keys.
    #[serde(default)]
    pub allow_readable_secrets: bool,
    pub role: Role,
    /// This gateway's organisation identifier; must match its certificate.
    pub identity: String,
    pub store_dir: PathBuf,
    /// 32 or more random bytes (hex) that key the audit pseudonyms and minimisation HMACs.
    pub secret_key_file: PathBuf,
    /// 32 random bytes (64 hex digits): the AES-256-GCM key that seals what the store
    /// holds about children ([`crate::seal`]). Its own file, so that it can be rotated
    /// and destroyed apart from the secret.
    pub data_key_file: PathBuf,
    /// How long each kind of stored data is kept ([`crate::retention`]).
    #[serde(default)]
    pub retention: retention::RawRetention,
    #[serde(default)]
    pub minimisation_policy: Option<PathBuf>,
    pub tls: RawTls,
    pub local_api: RawLocalApi,
    pub listener: RawListener,
    #[serde(default)]
    pub relay: RawRelay,
    #[serde(default)]
    pub peers: Vec<RawPeer>,
    #[serde(default)]
    pub auditors: Vec<RawAuditor>,
    #[serde(default)]
    pub limits: limits::RawLimits,
    /// The CAs that issue peers' and auditors' certificates, each with the rule by which
    /// its leaves name their organisation ([`crate::issuers`]). Absent: the trust
    /// anchors, with the dev rule, for leaves they issue directly.
    #[serde(default)]
    pub issuing_cas: Option<Vec<crate::issuers::RawIssuingCa>>,
    /// The ops listener (metrics, health); none when the section is absent.
    #[serde(default)]
    pub ops: Option<RawOps>,
    /// How far consents may stretch in time (practice); defaults when absent.
    #[serde(default)]
    pub consent: RawConsent,
    /// A signing key and certificate apart from the TLS ones; absent: the TLS ones sign.
    #[serde(default)]
    pub signing: Option<RawSigning>,
}

/// `[signing]`: newer PKIoverheid generations issue single-purpose certificates, one for
/// TLS and one for signatures.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigning {
    /// PEM: the signing certificate, then any intermediates.
    pub certificate: PathBuf,
    /// PEM: its private key (the same forms as `tls.key`).
    pub key: PathBuf,
}

/// `[consent]`: see [`crate::consent::ConsentRules`] for what each bound is for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsent {
    /// Days `given_on` may lie before the day the consent is recorded (default 14).
    #[serde(default)]
    pub given_on_max_days_back: Option<u32>,
    /// Days after `given_on` a consent may run at most (default 366).
    #[serde(default)]
    pub max_validity_days: Option<u32>,
}

/// Highest `consent.given_on_max_days_back` accepted: back-dating a consent by more than
/// a quarter defeats the bound's purpose.
const GIVEN_ON_MAX_DAYS_BACK_LIMIT: u32 = 90;
/// Highest `consent.max_validity_days` accepted (five years).
const MAX_VALIDITY_DAYS_LIMIT: u32 = 1827;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOps {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (plain HTTP).
    #[serde(default = "default_ops_listen")]
    pub listen: String,
}

fn default_ops_listen() -> String {
    "127.0.0.1:9464".into()
}

/// The validated `[ops]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsSettings {
    pub listen: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM: this gateway's certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM: its private key — RSA (PKCS#8 or PKCS#1) or ECDSA P-256/P-384 (PKCS#8 or SEC1).
    pub key: PathBuf,
    /// PEM: the CA certificates that peers' and auditors' certificates must chain to.
    pub trust_anchors: PathBuf,
    /// The issuing CAs' certificate revocation lists (PEM or DER files). When any is
    /// given, every peer's and auditor's issuer needs one (see `crate::revocation`).
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// How long a CRL past its nextUpdate stays in force before its CA's certificates
    /// are refused (0: refused at once).
    #[serde(default)]
    pub crl_grace_hours: u64,
    /// The CAs' CRL distribution points (`http://…`), fetched at start and refreshed
    /// before each list's nextUpdate (see `crate::revocation::fetch`).
    #[serde(default)]
    pub crl_urls: Vec<String>,
    /// Where the last good list from each URL is kept for the next start (default:
    /// `crl-cache` in the store directory).
    #[serde(default)]
    pub crl_cache_dir: Option<PathBuf>,
    /// How often the files this config names are looked at for changes, which reload
    /// the config (0: only SIGHUP, `POST /v1/reload` and `wijkpoort reload` do).
    #[serde(default = "default_watch_secs")]
    pub watch_interval_secs: u64,
}

fn default_watch_secs() -> u64 {
    5
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocalApi {
    pub listen: String,
    pub token_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRelay {
    pub max_age_secs: u64,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub request_timeout_ms: u64,
}

impl Default for RawRelay {
    fn default() -> Self {
        RawRelay {
            max_age_secs: 7 * 24 * 3600,
            initial_backoff_ms: 200,
            max_backoff_ms: 60_000,
            request_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    /// A short local name for the peer, used in the local API (`"to": "wijkteam"`).
    pub name: String,
    #[serde(default)]
    pub url: Option<String>,
    /// The organisation identifier its certificate must carry.
    pub identity: String,
    /// The message types this peer may send to us.
    #[serde(default)]
    pub may_send: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuditor {
    pub identity: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// A peer's short local name from the config (`"to": "wijkteam"` in the local API); the
/// outbox queues and the relays are keyed by it. Who the peer *is* is its [`OrgId`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerName(String);

impl PeerName {
    pub fn new(name: impl Into<String>) -> PeerName {
        PeerName(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PeerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for PeerName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// A peer gateway, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: PeerName,
    pub identity: OrgId,
    /// Where its mTLS listener is.
    pub host: String,
    pub port: u16,
    pub may_send: Vec<MessageType>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySettings {
    pub max_age: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub request_timeout: Duration,
}

/// The validated configuration.
pub struct Config {
    pub path: PathBuf,
    pub role: Role,
    pub identity: OrgId,
    pub store_dir: PathBuf,
    pub secret: Vec<u8>,
    /// The store's data key (read from `data_key_file`).
    pub data_key: Arc<crate::seal::DataKey>,
    pub retention: retention::Retention,
    /// The validated minimisation policy (the shipped default when the config names none).
    pub policy: crate::minimise::Policy,
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Signs envelopes, receipts and checkpoints: the `[signing]` key, or the TLS key.
    pub signer: Arc<Signer>,
    /// The signing certificate and its intermediates: `[signing] certificate`, or the
    /// TLS chain. Its leaf is the one each signature names.
    pub signing_chain: Vec<CertificateDer<'static>>,
    /// Own certificates from before a renewal, still valid, whose keys signed messages
    /// that may still be queued: presented after the TLS chain (with a separate signing
    /// certificate) so that the peer can verify them. Not from the file: the gateway
    /// fills this from its store at start and from the old config on a reload.
    pub earlier_certificates: Vec<CertificateDer<'static>>,
    pub trust_anchors: Vec<CertificateDer<'static>>,
    /// The revocation lists, read and parsed (from files, and the cached copies of the
    /// URLs' lists).
    pub crls: crate::revocation::CrlSet,
    /// `tls.crl_urls`, checked to be `http://` URLs.
    pub crl_urls: Vec<String>,
    /// Every file this config names (and the config file itself): a change to one
    /// reloads the config when `watch_interval` is set.
    pub watched_files: Vec<PathBuf>,
    pub watch_interval: Option<Duration>,
    pub local_api: SocketAddr,
    pub api_token: String,
    pub listener: SocketAddr,
    pub relay: RelaySettings,
    pub peers: Peers,
    pub auditors: Vec<OrgId>,
    pub limits: Limits,
    /// The ops listener, if `[ops]` is configured.
    pub ops: Option<OpsSettings>,
    /// How a peer's or auditor's certificate is identified, per issuing CA.
    pub issuers: crate::issuers::Issuers,
    /// How far the consents recorded here may stretch in time.
    pub consent_rules: crate::consent::ConsentRules,
}

/// The configured peers, found by the name the local system uses or by the
/// organisation identifier a certificate carries.
#[derive(Debug, Clone, Default)]
pub struct Peers(Vec<Peer>);

impl Peers {
    pub fn new(peers: Vec<Peer>) -> Peers {
        Peers(peers)
    }

    pub fn by_name(&self, name: &str) -> Option<&Peer> {
        self.0.iter().find(|p| p.name == *name)
    }

    pub fn by_identity(&self, identity: impl AsRef<str>) -> Option<&Peer> {
        let identity = identity.as_ref();
        self.0.iter().find(|p| p.identity == *identity)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Peer> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Config {
    /// What the gateway presents in the TLS Certificate message: its TLS chain, then
    /// its signing certificate and intermediates if they are others, then its earlier
    /// certificates (see `crate::caller`), each once.
    pub fn presented_chain(&self) -> Vec<CertificateDer<'static>> {
        let mut chain = self.cert_chain.clone();
        let extra = if self.signing_chain.first() == self.cert_chain.first() {
            &[][..]
        } else {
            &self.signing_chain[..]
        };
        for cert in extra.iter().chain(&self.earlier_certificates) {
            if !chain.contains(cert) {
                chain.push(cert.clone());
            }
        }
        chain
    }

    /// Reads, parses and validates a config file. Relative paths in it are relative to
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            field: "-".into(),
            problem: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates the text of the config file at `path` (which names the file
    /// in errors and is where relative paths start).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            field: "-".into(),
            problem: format!("not valid wijkpoort TOML: {}", e.to_string().trim()),
        })?;
        raw.validate(path)
    }
}

impl RawConfig {
    pub fn validate(self, path: &Path) -> Result<Config, ConfigError> {
        let base = path.parent().unwrap_or(Path::new("."));
        let err = |field: &str, problem: String| ConfigError {
            file: path.to_path_buf(),
            field: field.to_string(),
            problem,
        };
        let resolve = |p: &Path| base.join(p);

        if self.identity.trim().is_empty() {
            return Err(err("identity", "must not be empty".into()));
        }

        // Own certificate chain and key: readable, matching, currently valid, ours.
        let cert_path = resolve(&self.tls.cert);
        let cert_chain = read_certs(&cert_path).map_err(|p| err("tls.cert", p))?;
        let leaf = &cert_chain[0];
        let key_path = resolve(&self.tls.key);
        let private = |field: &str, path: &Path| {
            if self.allow_readable_secrets {
                return Ok(());
            }
            private_file(path).map_err(|p| err(field, p))
        };
        private("tls.key", &key_path)?;
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
            err(
                "tls.key",
                format!("{}: cannot read a PEM private key: {e}", key_path.display()),
            )
        })?;
        let signer = Signer::from_key(&key)
            .map_err(|e| err("tls.key", format!("{}: {e}", key_path.display())))?
            .for_certificate(leaf);
        let cert_key = crate::signing::certificate_public_key(leaf)
            .map_err(|e| err("tls.cert", e.to_string()))?;
        if cert_key != signer.public_key() {
            return Err(err(
                "tls.key",
                format!(
                    "{} does not belong to the certificate {}",
                    key_path.display(),
                    cert_path.display()
                ),
            ));
        }
        check_validity(leaf)
            .map_err(|p| err("tls.cert", format!("{}: {p}", cert_path.display())))?;
        let own = identity::identify(leaf).map_err(|e| err("tls.cert", e.to_string()))?;
        let mut watched_files = vec![path.to_path_buf(), cert_path.clone(), key_path.clone()];
        // A separate signing key and certificate, held to the same checks as the TLS ones
        // and naming the same organisation.
        let (signer, signing_chain) = match &self.signing {
            None => (signer, cert_chain.clone()),
            Some(s) => {
                let cert_path = resolve(&s.certificate);
                let chain = read_certs(&cert_path).map_err(|p| err("signing.certificate", p))?;
                let key_path = resolve(&s.key);
                private("signing.key", &key_path)?;
                let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
                    err(
                        "signing.key",
                        format!("{}: cannot read a PEM private key: {e}", key_path.display()),
                    )
                })?;
                let signer = Signer::from_key(&key)
                    .map_err(|e| err("signing.key", format!("{}: {e}", key_path.display())))?
                    .for_certificate(&chain[0]);
                let cert_key = crate::signing::certificate_public_key(&chain[0])
                    .map_err(|e| err("signing.certificate", e.to_string()))?;
                if cert_key != signer.public_key() {
                    return Err(err(
                        "signing.key",
                        format!(
                            "{} does not belong to the certificate {}",
                            key_path.display(),
                            cert_path.display()
                        ),
                    ));
                }
                check_validity(&chain[0]).map_err(|p| {
                    err(
                        "signing.certificate",
                        format!("{}: {p}", cert_path.display()),
                    )
                })?;
                let named = identity::identify(&chain[0])
                    .map_err(|e| err("signing.certificate", e.to_string()))?;
                if named.organisation_id != own.organisation_id {
                    return Err(err(
                        "signing.certificate",
                        format!(
                            "{} names organisation {:?}, not {:?} as the TLS certificate does; both must be this gateway's",
                            cert_path.display(),
                            named.organisation_id,
                            own.organisation_id
                        ),
                    ));
                }
                watched_files.push(cert_path);
                watched_files.push(key_path);
                (signer, chain)
            }
        };
        if own.organisation_id != *self.identity {
            return Err(err(
                "identity",
                format!(
                    "is {:?} but the certificate {} names {:?}",
                    self.identity,
                    cert_path.display(),
                    own.organisation_id
                ),
            ));
        }
        let anchors_path = resolve(&self.tls.trust_anchors);
        let trust_anchors = read_certs(&anchors_path).map_err(|p| err("tls.trust_anchors", p))?;
        watched_files.push(anchors_path.clone());

        let secret_path = resolve(&self.secret_key_file);
        private("secret_key_file", &secret_path)?;
        let secret = std::fs::read_to_string(&secret_path)
            .map_err(|e| err("secret_key_file", format!("{}: {e}", secret_path.display())))
            .and_then(|s| {
                hex::decode(s.trim()).map_err(|e| {
                    err(
                        "secret_key_file",
                        format!("{}: not hex: {e}", secret_path.display()),
                    )
                })
            })?;
        if secret.len() < 32 {
            return Err(err(
                "secret_key_file",
                format!(
                    "{}: needs at least 32 bytes (64 hex digits)",
                    secret_path.display()
                ),
            ));
        }

        let data_key_path = resolve(&self.data_key_file);
        private("data_key_file", &data_key_path)?;
        let data_key = crate::seal::DataKey::load(&data_key_path)
            .map_err(|e| err("data_key_file", e.to_string()))?;
        let retention = self
            .retention
            .validate()
            .map_err(|(field, problem)| err(&format!("retention.{field}"), problem))?;

        let local_api: SocketAddr = self.local_api.listen.parse().map_err(|e| {
            err(
                "local_api.listen",
                format!("{:?}: {e}", self.local_api.listen),
            )
        })?;
        if !local_api.ip().is_loopback() {
            return Err(err(
                "local_api.listen",
                format!(
                    "{local_api} is not a loopback address; the local API has no TLS and must \
                     stay on this machine (127.0.0.1 or ::1)"
                ),
            ));
        }
        let token_path = resolve(&self.local_api.token_file);
        private("local_api.token_file", &token_path)?;
        let api_token = std::fs::read_to_string(&token_path)
            .map_err(|e| {
                err(
                    "local_api.token_file",
                    format!("{}: {e}", token_path.display()),
                )
            })?
            .trim()
            .to_string();
        if api_token.len() < 16 {
            return Err(err(
                "local_api.token_file",
                format!(
                    "{}: the token must be at least 16 characters",
                    token_path.display()
                ),
            ));
        }
        let listener: SocketAddr = self.listener.listen.parse().map_err(|e| {
            err(
                "listener.listen",
                format!("{:?}: {e}", self.listener.listen),
            )
        })?;

        let mut peers = Vec::new();
        for (i, p) in self.peers.into_iter().enumerate() {
            let field = |f: &str| format!("peers[{i}].{f}");
            if p.name.trim().is_empty() {
                return Err(err(&field("name"), "must not be empty".into()));
            }
            if p.identity.trim().is_empty() {
                return Err(err(&field("identity"), "must not be empty".into()));
            }
            let url = p
                .url
                .ok_or_else(|| err(&field("url"), format!("peer {:?} has no url", p.name)))?;
            let (host, port) = parse_peer_url(&url).map_err(|e| err(&field("url"), e))?;
            let may_send = p
                .may_send
                .iter()
                .map(|t| t.parse::<MessageType>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(&field("may_send"), e))?;
            if peers
                .iter()
                .any(|q: &Peer| q.name == *p.name || q.identity == *p.identity)
            {
                return Err(err(
                    &field("name"),
                    "a peer with this name or identity is listed twice".into(),
                ));
            }
            peers.push(Peer {
                name: PeerName(p.name),
                identity: OrgId::new(p.identity),
                host,
                port,
                may_send,
            });
        }
        let auditors: Vec<OrgId> = self
            .auditors
            .into_iter()
            .map(|a| OrgId::new(a.identity))
            .collect();
        let issuing_ca_files: Vec<PathBuf> = self
            .issuing_cas
            .iter()
            .flatten()
            .map(|c| resolve(&c.cert))
            .collect();
        let issuers = crate::issuers::validate(
            self.issuing_cas,
            &trust_anchors,
            &self.identity,
            &peers
                .iter()
                .map(|p| (p.name.as_str(), &p.identity))
                .collect::<Vec<_>>(),
            &auditors,
            base,
            &err,
        )?;
        // Revocation lists: each must be signed by a CA this config names.
        let cas: Vec<Vec<u8>> = trust_anchors
            .iter()
            .map(|c| c.to_vec())
            .chain(issuers.cas().iter().map(|c| c.certificate().to_vec()))
            .chain(cert_chain.iter().skip(1).map(|c| c.to_vec()))
            .chain(signing_chain.iter().skip(1).map(|c| c.to_vec()))
            .collect();
        let crl_files: Vec<PathBuf> = self.tls.crls.iter().map(|p| resolve(p)).collect();
        for (i, url) in self.tls.crl_urls.iter().enumerate() {
            crate::revocation::fetch::check_url(url)
                .map_err(|e| err(&format!("tls.crl_urls[{i}]"), e.to_string()))?;
        }
        let store_dir = resolve(&self.store_dir);
        let crl_cache_dir = match &self.tls.crl_cache_dir {
            Some(d) => resolve(d),
            None => store_dir.join("crl-cache"),
        };
        let crls = crate::revocation::CrlSet::load(
            &crl_files,
            // At most ten years: a longer grace is no revocation check at all.
            chrono::Duration::hours(self.tls.crl_grace_hours.min(24 * 365 * 10) as i64),
            cas,
        )
        .map_err(|p| err("tls.crls", p))?
        .with_urls(&self.tls.crl_urls, &crl_cache_dir);
        watched_files.extend(crl_files);
        watched_files.extend(issuing_ca_files);
        watched_files.push(secret_path.clone());
        watched_files.push(token_path.clone());
        if let Some(p) = &self.minimisation_policy {
            watched_files.push(resolve(p));
        }
        let policy = match &self.minimisation_policy {
            None => crate::minimise::Policy::default_policy(),
            Some(p) => crate::minimise::Policy::load(&resolve(p))
                .map_err(|e| err("minimisation_policy", e.to_string()))?,
        };
        let ops = match &self.ops {
            None => None,
            Some(o) => Some(OpsSettings {
                listen: o
                    .listen
                    .parse()
                    .map_err(|e| err("ops.listen", format!("{:?}: {e}", o.listen)))?,
            }),
        };
        let r = &self.relay;
        if r.initial_backoff_ms == 0 || r.max_backoff_ms < r.initial_backoff_ms {
            return Err(err(
                "relay.initial_backoff_ms",
                "must be positive and not above relay.max_backoff_ms".into(),
            ));
        }
        let limits = self
            .limits
            .validate()
            .map_err(|(field, problem)| err(&format!("limits.{field}"), problem))?;
        let defaults = crate::consent::ConsentRules::DEFAULT;
        let consent_rules = crate::consent::ConsentRules {
            given_on_max_days_back: self
                .consent
                .given_on_max_days_back
                .unwrap_or(defaults.given_on_max_days_back),
            max_validity_days: self
                .consent
                .max_validity_days
                .unwrap_or(defaults.max_validity_days),
        };
        if consent_rules.given_on_max_days_back > GIVEN_ON_MAX_DAYS_BACK_LIMIT {
            return Err(err(
                "consent.given_on_max_days_back",
                format!("{} is more than {GIVEN_ON_MAX_DAYS_BACK_LIMIT} days: a consent is recorded when it is given", consent_rules.given_on_max_days_back),
            ));
        }
        if consent_rules.max_validity_days == 0
            || consent_rules.max_validity_days > MAX_VALIDITY_DAYS_LIMIT
        {
            return Err(err(
                "consent.max_validity_days",
                format!(
                    "{} must be 1 to {MAX_VALIDITY_DAYS_LIMIT} days",
                    consent_rules.max_validity_days
                ),
            ));
        }
        Ok(Config {
            path: path.to_path_buf(),
            role: self.role,
            identity: OrgId::new(self.identity),
            store_dir,
            secret,
            data_key: Arc::new(data_key),
            retention,
            policy,
            cert_chain,
            key,
            signer: Arc::new(signer),
            signing_chain,
            earlier_certificates: Vec::new(),
            trust_anchors,
            crls,
            crl_urls: self.tls.crl_urls.clone(),
            watched_files,
            watch_interval: (self.tls.watch_interval_secs > 0)
                .then(|| Duration::from_secs(self.tls.watch_interval_secs)),
            local_api,
            api_token,
            listener,
            relay: RelaySettings {
                max_age: Duration::from_secs(r.max_age_secs),
                initial_backoff: Duration::from_millis(r.initial_backoff_ms),
                max_backoff: Duration::from_millis(r.max_backoff_ms),
                request_timeout: Duration::from_millis(r.request_timeout_ms.max(100)),
            },
            peers: Peers::new(peers),
            auditors,
            limits,
            ops,
            consent_rules,
            issuers,
        })
    }
}

/// A private key, secret or token file must not be readable by group or others.
fn private_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(()); // reading it names the problem
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by group or others (mode {mode:04o}); it holds a secret: run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: cannot read PEM certificates: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no certificate", path.display()));
    }
    Ok(certs)
}

fn check_validity(cert_der: &[u8]) -> Result<(), String> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| e.to_string())?;
    let v = cert.validity();
    let now = ASN1Time::now();
    if now > v.not_after {
        return Err(format!("the certificate expired on {}", v.not_after));
    }
    if now < v.not_before {
        return Err(format!(
            "the certificate is not valid before {}",
            v.not_before
        ));
    }
    Ok(())
}

/// `https://host:port` → (host, port). Only https: peers speak mTLS.
fn parse_peer_url(url: &str) -> Result<(String, u16), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("{url:?} must start with https://"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("{url:?} has no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    Ok((host, uri.port_u16().unwrap_or(443)))
}
