//! TLS credentials and configs: rustls with the ring provider, TLS 1.3 only, client
//! certificates required and verified against the configured trust anchors. Kept apart
//! from identity (what a trusted certificate says) and from routing (what a peer may do).
//!
//! The listener's client-certificate verifier notes the certificate it refused, so that
//! the listener can audit a revoked or expired peer by name after the failed handshake
//! ([`noting_refused_certificate`]).

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("a trust anchor is not a usable CA certificate: {0}")]
    TrustAnchor(rustls::Error),
    #[error("building the client-certificate verifier failed: {0}")]
    Verifier(String),
    #[error("the gateway's own certificate or key is unusable: {0}")]
    Credentials(rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(config: &Config) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for anchor in &config.trust_anchors {
        roots.add(anchor.clone()).map_err(TlsError::TrustAnchor)?;
    }
    Ok(Arc::new(roots))
}

/// The mTLS listener's config: a client certificate chaining to a trust anchor, and not
/// revoked by a configured CRL, is required.
pub fn server_config(config: &Config) -> Result<Arc<ServerConfig>, TlsError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots(config)?, provider());
    let crls = config.crls.ders();
    if !crls.is_empty() {
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
        if config.crls.enforce_expiry(chrono::Utc::now()) {
            builder = builder.enforce_revocation_expiration();
        }
    }
    let verifier = builder
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier = Arc::new(NotingVerifier { inner: verifier });
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Credentials)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(config.presented_chain(), config.key.clone_key())
        .map_err(TlsError::Credentials)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No resumption: a resumed session skips the certificate check, so a client whose
    // certificate expired (or was revoked) since it was issued a ticket would still get
    // in. Every connection is a full handshake; the relays keep theirs alive, so this
    // costs one handshake per peer per connection, not per message.
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    Ok(Arc::new(server))
}

/// A client certificate that the verifier refused during a handshake, and why.
#[derive(Debug, Clone)]
pub struct RefusedCertificate {
    /// The end-entity certificate as the client sent it (DER). The client has not proven
    /// that it holds the certificate's key: rustls checks the certificate before the
    /// client's CertificateVerify, and stops at the first error.
    pub end_entity: Vec<u8>,
    pub error: rustls::Error,
}

tokio::task_local! {
    /// The refusal noted during the handshake that the current task drives. rustls calls
    /// the verifier of a shared `ServerConfig` with no connection at hand, but always
    /// from within the poll of that connection's handshake, so a task-local scoped around
    /// the handshake ties the refusal to its connection, with no shared map to match on
    /// and nothing left behind when the connection goes.
    static REFUSED: RefCell<Option<RefusedCertificate>>;
}

/// Drives `handshake` and returns its outcome together with the client certificate that
/// the listener's verifier refused during it, if it refused one.
pub async fn noting_refused_certificate<F: Future>(
    handshake: F,
) -> (F::Output, Option<RefusedCertificate>) {
    REFUSED
        .scope(RefCell::new(None), async move {
            let outcome = handshake.await;
            let refused = REFUSED.with(|r| r.borrow_mut().take());
            (outcome, refused)
        })
        .await
}

/// The webpki client verifier, noting what it refuses for [`noting_refused_certificate`].
/// Every decision is the inner verifier's.
#[derive(Debug)]
struct NotingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for NotingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|error| {
                // Outside a noting scope (none today) there is nobody to tell.
                let _ = REFUSED.try_with(|r| {
                    *r.borrow_mut() = Some(RefusedCertificate {
                        end_entity: end_entity.to_vec(),
                        error: error.clone(),
                    })
                });
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

/// The relay's client config: our certificate for client auth; the peer's server
/// certificate must chain to a trust anchor.
pub fn client_config(config: &Config) -> Result<Arc<ClientConfig>, TlsError> {
    let mut builder = WebPkiServerVerifier::builder_with_provider(roots(config)?, provider());
    let crls = config.crls.ders();
    if !crls.is_empty() {
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
        if config.crls.enforce_expiry(chrono::Utc::now()) {
            builder = builder.enforce_revocation_expiration();
        }
    }
    let verifier = builder
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    client_config_with(verifier, config.presented_chain(), config.key.clone_key())
}

/// A client config from explicit parts (the auditor's CLI has no gateway config).
pub fn client_config_from(
    roots: Arc<RootCertStore>,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    client_config_with(verifier, chain, key)
}

fn client_config_with(
    verifier: Arc<WebPkiServerVerifier>,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Credentials)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(TlsError::Credentials)?;
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No resumption either way (see `server_config`).
    client.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(client))
}
