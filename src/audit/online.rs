//! The auditor's client for a running gateway: one mTLS connection (TLS 1.3, ring) with
//! the auditor's certificate to the gateway's listener, and `GET /v1/audit/<command>`
//! requests on it. The gateway pseudonymises any BSN, runs the query, records the read,
//! and answers JSON; this client only transports it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::request::{Command, Params};

/// How long connecting, the handshake and one answer may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The auditor's certificate, key and the CA the gateway's certificate chains to.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnlineError {
    #[error("{0:?} is not a gateway address: expected https://host:port")]
    BadUrl(String),
    #[error("{path}: {problem}")]
    Credentials { path: PathBuf, problem: String },
    #[error("TLS set-up: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot connect to {addr}: {problem}")]
    Connect { addr: String, problem: String },
    #[error("the request to the gateway failed: {0}")]
    Http(String),
    #[error("the gateway refused ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the gateway's answer cannot be read: {0}")]
    BadAnswer(String),
}

/// A connection to a gateway's audit endpoints.
pub struct OnlineAuditor {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

fn credential_error(path: &Path, problem: impl std::fmt::Display) -> OnlineError {
    OnlineError::Credentials {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    }
}

impl OnlineAuditor {
    /// Connects to `url` (`https://host:port`) with the auditor's credentials.
    pub async fn connect(url: &str, creds: &Credentials) -> Result<OnlineAuditor, OnlineError> {
        let uri: hyper::Uri = url.parse().map_err(|_| OnlineError::BadUrl(url.into()))?;
        if uri.scheme_str() != Some("https") {
            return Err(OnlineError::BadUrl(url.into()));
        }
        let host = uri
            .host()
            .ok_or_else(|| OnlineError::BadUrl(url.into()))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(443);

        let chain = CertificateDer::pem_file_iter(&creds.cert)
            .map_err(|e| credential_error(&creds.cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| credential_error(&creds.cert, e))?;
        if chain.is_empty() {
            return Err(credential_error(&creds.cert, "holds no certificate"));
        }
        let key = PrivateKeyDer::from_pem_file(&creds.key)
            .map_err(|e| credential_error(&creds.key, e))?;
        let mut roots = RootCertStore::empty();
        for ca in
            CertificateDer::pem_file_iter(&creds.ca).map_err(|e| credential_error(&creds.ca, e))?
        {
            let ca = ca.map_err(|e| credential_error(&creds.ca, e))?;
            roots.add(ca).map_err(|e| credential_error(&creds.ca, e))?;
        }
        let tls = crate::tls::client_config_from(std::sync::Arc::new(roots), chain, key)?;

        let addr = format!("{host}:{port}");
        let connect_error = |problem: String| OnlineError::Connect {
            addr: addr.clone(),
            problem,
        };
        let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| connect_error("timed out".into()))?
            .map_err(|e| connect_error(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let name =
            ServerName::try_from(host.clone()).map_err(|_| OnlineError::BadUrl(url.into()))?;
        let stream = tokio::time::timeout(TIMEOUT, TlsConnector::from(tls).connect(name, tcp))
            .await
            .map_err(|_| connect_error("the TLS handshake timed out".into()))?
            .map_err(|e| connect_error(format!("TLS handshake: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| OnlineError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(OnlineAuditor {
            sender,
            authority: addr,
        })
    }

    /// Asks `command` with `params`; returns the JSON body of a 200 answer.
    pub async fn ask(&mut self, command: Command, params: &Params) -> Result<Bytes, OnlineError> {
        let query = params.to_query();
        let path = if query.is_empty() {
            format!("{}{}", crate::wire::AUDIT_PREFIX, command.as_str())
        } else {
            format!("{}{}?{query}", crate::wire::AUDIT_PREFIX, command.as_str())
        };
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, &self.authority)
            .body(Full::new(Bytes::new()))
            .map_err(|e| OnlineError::Http(e.to_string()))?;
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|e| OnlineError::Http(e.to_string()))?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|e| OnlineError::Http(e.to_string()))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| OnlineError::Http(e.to_string()))?
                .to_bytes();
            Ok::<_, OnlineError>((status, body))
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| OnlineError::Http("the gateway did not answer in time".into()))??;
        if status == 200 {
            return Ok(body);
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Err(OnlineError::Refused {
            status,
            code: v["error"].as_str().unwrap_or("refused").to_string(),
            message: v["message"].as_str().unwrap_or("").to_string(),
        })
    }
}
