//! Fetching the CAs' revocation lists from their distribution points (`tls.crl_urls`):
//! plain HTTP GET with hyper 1's client over a tokio `TcpStream` (no TLS: a CRL's
//! integrity comes from its CA's signature, checked by [`super::CrlSet`]), bounded in
//! time ([`FETCH_TIMEOUT`]) and size ([`MAX_CRL_BYTES`]).
//!
//! One task per URL ([`run`]) fetches at start and then again before the list's
//! nextUpdate — at half the time left, at most every [`MAX_INTERVAL`] so that a CA's new
//! revocations arrive within the hour, and at least [`MIN_INTERVAL`] apart — and after a
//! failure with a back-off that doubles from [`RETRY_FIRST`] to [`RETRY_MAX`]. A reload
//! asks every task to fetch at once. Each outcome goes to the gateway's serve loop, which
//! checks the list, keeps it on disk ([`write_cache`]) and swaps the TLS configs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};

/// The whole fetch — connect, request, body — must finish within this.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(20);
/// A CRL larger than this is refused (the largest PKIoverheid lists are a few MB).
pub const MAX_CRL_BYTES: usize = 16 * 1024 * 1024;
/// Refresh at most this long after a good fetch.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// … and at least this long after it.
pub const MIN_INTERVAL: Duration = Duration::from_secs(30);
/// The first retry after a failed fetch; doubled on each further failure …
pub const RETRY_FIRST: Duration = Duration::from_secs(15);
/// … up to this.
pub const RETRY_MAX: Duration = Duration::from_secs(15 * 60);

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("{url:?} is not an http:// URL with a host: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("cannot connect to {addr}: {detail}")]
    Connect { addr: String, detail: String },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the server answered {0}, not 200")]
    Status(u16),
    #[error("the list is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("no answer within {0} s")]
    Timeout(u64),
}

/// Checks that `url` is one the fetcher can use: `http://host[:port]/path`.
pub fn check_url(url: &str) -> Result<(), FetchError> {
    target(url).map(|_| ())
}

fn target(url: &str) -> Result<(hyper::Uri, String, u16), FetchError> {
    let bad = |detail: &str| FetchError::BadUrl {
        url: url.to_string(),
        detail: detail.to_string(),
    };
    let uri: hyper::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad(
            "CRLs are fetched over plain http:// (their CA's signature protects them)",
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| bad("no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    Ok((uri, host, port))
}

/// GETs `url`: the body of a 200 answer, at most `max` bytes, within `timeout`.
pub async fn fetch(url: &str, timeout: Duration, max: usize) -> Result<Vec<u8>, FetchError> {
    match tokio::time::timeout(timeout, fetch_inner(url, max)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout(timeout.as_secs())),
    }
}

async fn fetch_inner(url: &str, max: usize) -> Result<Vec<u8>, FetchError> {
    let (uri, host, port) = target(url)?;
    let addr = format!("{host}:{port}");
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| FetchError::Connect {
            addr: addr.clone(),
            detail: e.to_string(),
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let host_header = match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host_header)
        .header(hyper::header::USER_AGENT, "wijkpoort")
        .header(hyper::header::ACCEPT, "application/pkix-crl")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let body = Limited::new(response.into_body(), max)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    FetchError::TooLarge { max }
                } else {
                    FetchError::Http(e.to_string())
                }
            })?;
        Ok(body.to_bytes().to_vec())
    }
    .await;
    driver.abort();
    result
}

/// Where the last good list from `url` is kept in `cache_dir`: a file named by the
/// SHA-256 of the URL, so that any URL makes a safe file name.
pub fn cache_file(cache_dir: &Path, url: &str) -> PathBuf {
    let digest = ring::digest::digest(&ring::digest::SHA256, url.as_bytes());
    cache_dir.join(format!("{}.crl", &hex::encode(digest.as_ref())[..32]))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it (mode 0600), synced,
/// renamed over the old copy, and the directory synced — so a crash leaves the old list
/// or the new one, never half of one. Creates the directory (0700) if needed.
pub fn write_cache(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = path.with_extension("crl.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// When to fetch again after a good fetch at `now` of a list due again at `next_update`.
pub fn after_success(now: DateTime<Utc>, next_update: Option<DateTime<Utc>>) -> Duration {
    let left = next_update
        .and_then(|n| (n - now).to_std().ok())
        .unwrap_or(Duration::ZERO);
    (left / 2).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// When to fetch again after the `failures`-th failure in a row (1 for the first).
pub fn after_failure(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(10);
    (RETRY_FIRST * factor).min(RETRY_MAX)
}

/// What one fetch brought, for the serve loop.
#[derive(Debug)]
pub struct Fetched {
    pub url: String,
    pub at: DateTime<Utc>,
    pub outcome: Result<Vec<u8>, String>,
}

/// Fetches `url` now, then on the schedule above, until `stop` turns true; `now` asks
/// for a fetch at once (a reload). Sends every outcome on `to`.
pub async fn run(
    url: String,
    to: mpsc::Sender<Fetched>,
    now: std::sync::Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    loop {
        let at = Utc::now();
        let outcome = fetch(&url, FETCH_TIMEOUT, MAX_CRL_BYTES)
            .await
            .map_err(|e| e.to_string());
        let wait = match &outcome {
            Ok(bytes) => {
                failures = 0;
                after_success(at, super::next_update_of(bytes))
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(url = %url, error = %e, failures, "fetching a revocation list failed; the list held stays in force");
                after_failure(failures)
            }
        };
        if to
            .send(Fetched {
                url: url.clone(),
                at,
                outcome,
            })
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = now.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_list_is_fetched_again_at_half_its_time_left_within_bounds() {
        let now = Utc::now();
        let in_ = |s: i64| Some(now + chrono::Duration::seconds(s));
        assert_eq!(after_success(now, in_(600)), Duration::from_secs(300));
        assert_eq!(after_success(now, in_(7 * 86_400)), MAX_INTERVAL);
        assert_eq!(after_success(now, in_(10)), MIN_INTERVAL);
        // Stale or without nextUpdate: soon.
        assert_eq!(after_success(now, in_(-100)), MIN_INTERVAL);
        assert_eq!(after_success(now, None), MIN_INTERVAL);
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_maximum() {
        assert_eq!(after_failure(1), RETRY_FIRST);
        assert_eq!(after_failure(2), RETRY_FIRST * 2);
        assert_eq!(after_failure(3), RETRY_FIRST * 4);
        assert_eq!(after_failure(50), RETRY_MAX);
    }

    #[test]
    fn only_http_urls_with_a_host_are_fetched() {
        assert!(check_url("http://crl.example.nl/uzi.crl").is_ok());
        assert!(check_url("https://crl.example.nl/uzi.crl").is_err());
        assert!(check_url("ldap://crl.example.nl/uzi").is_err());
        assert!(check_url("/just/a/path").is_err());
    }

    #[test]
    fn the_cache_is_written_whole_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = cache_file(&dir.path().join("cache"), "http://ca.test/a.crl");
        write_cache(&path, b"first").unwrap();
        write_cache(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(entries.len(), 1, "no temporary file is left");
    }
}
