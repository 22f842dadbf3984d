//! TLS credentials and configs: rustls with the ring provider, TLS 1.3 only, client
//! certificates required and verified against the configured trust anchors. Kept apart
//! from identity (what a trusted certificate says) and from routing (what a peer may do).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

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
