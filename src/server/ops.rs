//! The ops listener: plain HTTP for the operations team's monitoring, on its own address
//! (`[ops] listen`, loopback by default; no ops listener when the section is absent).
//! No token and no personal data: it shows counts, codes, peer names and checks.
//!
//! | call | answers |
//! | --- | --- |
//! | `GET /metrics` | the metrics ([`crate::metrics`]), Prometheus text format 0.0.4 |
//! | `GET /healthz` | `200 {"status":"alive"}` while the process serves |
//! | `GET /readyz` | `200`/`503` with each check and the peers' state |
//!
//! Ready means: the store commits (a group commit succeeded in the last few seconds, or
//! a trivial commit does now), the own certificate is within its validity, and the
//! gateway is not shutting down. A peer that is down does not make the gateway unready
//! (a practice would go unready whenever its wijkteam is down): the peers' state is in
//! the body and in the metrics. The ops listener keeps answering while the gateway
//! drains, so that `/readyz` says `shutting_down` then.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{json, Reply};
use crate::config::{Config, Peers};
use crate::error::StartError;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::revocation::CrlSet;
use crate::store::{Store, StoreError};

/// How recent a successful group commit must be for `/readyz` not to commit itself.
const RECENT_COMMIT: Duration = Duration::from_secs(5);
/// How long `/readyz`'s own trivial commit may take.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the ops listener of `config`, if it has one (before the gateway starts, so that
/// a taken port stops the start).
pub async fn bind(config: &Config) -> Result<Option<TcpListener>, StartError> {
    match &config.ops {
        Some(ops) => Ok(Some(super::bind(ops.listen).await?)),
        None => Ok(None),
    }
}

/// What the ops listener reads.
#[derive(Clone)]
pub struct Ops {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// The readiness checks and what they read.
#[derive(Clone)]
pub struct Readiness {
    pub store: Store,
    pub metrics: Metrics,
    pub peers: Live<Peers>,
    /// The revocation lists in force.
    pub crls: Live<CrlSet>,
    /// The own certificate's validity (notBefore, notAfter), Unix seconds; a reload of
    /// the own credentials replaces it.
    pub cert_validity: Live<(i64, i64)>,
}

impl Ops {
    pub fn new(registry: Registry, readiness: Readiness) -> Ops {
        Ops {
            registry: Arc::new(registry),
            readiness,
        }
    }

    /// Serves until `done`; `/readyz` reports `shutting_down` once `stopping` is set.
    pub async fn serve(
        self,
        listener: TcpListener,
        stopping: watch::Receiver<bool>,
        mut done: watch::Receiver<bool>,
    ) {
        let ops = Arc::new(self);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { continue };
                    let ops = ops.clone();
                    let stopping = stopping.clone();
                    let mut done = done.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| {
                            let ops = ops.clone();
                            let stopping = *stopping.borrow();
                            async move { Ok::<_, Infallible>(ops.handle(req, stopping).await) }
                        });
                        let conn = http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = done.changed() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
                }
                _ = done.changed() => break,
            }
            while connections.try_join_next().is_some() {}
        }
        while connections.join_next().await.is_some() {}
    }

    async fn handle(&self, req: Request<Incoming>, stopping: bool) -> Reply {
        if req.method() != Method::GET {
            return json(
                405,
                &json!({"error": "method_not_allowed", "message": "the ops listener answers GET only"}),
            );
        }
        match req.uri().path() {
            "/metrics" => Response::builder()
                .header(
                    hyper::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )
                .body(Full::new(Bytes::from(crate::metrics::encode(
                    &self.registry,
                ))))
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
            "/healthz" => json(200, &json!({"status": "alive"})),
            "/readyz" => {
                let (ready, body) = self.readiness.check(stopping).await;
                json(if ready { 200 } else { 503 }, &body)
            }
            path => json(
                404,
                &json!({"error": "no_such_endpoint", "message": format!("{path} is not an endpoint of the ops listener (/metrics, /healthz, /readyz)")}),
            ),
        }
    }
}

impl Readiness {
    /// Runs the checks; returns whether the gateway is ready and the body to answer.
    pub async fn check(&self, stopping: bool) -> (bool, serde_json::Value) {
        let store = self.store_commits().await;
        let now = chrono::Utc::now().timestamp();
        let (cert_not_before, cert_not_after) = *self.cert_validity.current();
        let days_left = crate::metrics::days_until(cert_not_after);
        let certificate = if now < cert_not_before {
            Err("the certificate is not valid yet".to_string())
        } else if now > cert_not_after {
            Err("the certificate has expired".to_string())
        } else {
            Ok(())
        };
        let crls = self.crls.current();
        let refusing = crls.refusing(chrono::Utc::now());
        let missing = crls.missing();
        let revocation = if !refusing.is_empty() {
            Err(format!(
                "{} revocation list(s) past their nextUpdate and grace: their CAs' certificates are refused",
                refusing.len()
            ))
        } else if !missing.is_empty() {
            Err(format!(
                "no revocation list could be fetched yet from {}: certificates of CAs without a list are refused",
                missing.join(", ")
            ))
        } else {
            Ok(())
        };
        let shutting_down = if stopping {
            Err("the gateway is shutting down".to_string())
        } else {
            Ok(())
        };
        let view = |r: &Result<(), String>| match r {
            Ok(()) => json!({"ok": true}),
            Err(why) => json!({"ok": false, "reason": why}),
        };
        let mut failed = Vec::new();
        for (name, r) in [
            ("store", &store),
            ("certificate", &certificate),
            ("revocation", &revocation),
            ("shutting_down", &shutting_down),
        ] {
            if r.is_err() {
                failed.push(name);
            }
        }
        let mut cert = view(&certificate);
        cert["days_left"] = json!((days_left * 10.0).round() / 10.0);
        let peers: Vec<_> = self
            .peers
            .current()
            .iter()
            .map(|p| {
                let relay = self.metrics.relay_state(&p.name);
                json!({
                    "name": p.name,
                    "identity": p.identity,
                    "backlog": crate::outbox::queued_for_peer(&self.store, p.name.as_str()),
                    "relay_attempts": relay.attempts,
                    "relay_failures": relay.failures,
                    "consecutive_failures": relay.failing_in_a_row,
                    "reachable": if relay.attempts == 0 { None } else { Some(relay.failing_in_a_row == 0) },
                })
            })
            .collect();
        let ready = failed.is_empty();
        (
            ready,
            json!({
                "status": if ready { "ready" } else { "not_ready" },
                "failed": failed,
                "checks": {
                    "store": view(&store),
                    "certificate": cert,
                    "revocation": {
                        "ok": revocation.is_ok(),
                        "reason": revocation.as_ref().err(),
                        "lists": crls.states().iter().map(|s| json!({
                            "source": s.source.to_string(),
                            "issuer": s.issuer,
                            "this_update": s.this_update,
                            "next_update": s.next_update,
                            "revoked": s.revoked,
                            "stale": s.next_update.is_some_and(|n| n < chrono::Utc::now()),
                        })).collect::<Vec<_>>(),
                        "fetches": crls.fetches().iter().map(|f| json!({
                            "url": f.url,
                            "last_fetch": f.last_fetch,
                            "last_success": f.last_success,
                            "last_error": f.last_error,
                            "failures": f.failures,
                            "from_cache": f.from_cache,
                        })).collect::<Vec<_>>(),
                    },
                    "shutting_down": view(&shutting_down),
                },
                "peers": peers,
            }),
        )
    }

    /// Whether the store commits: a group commit succeeded recently, or a trivial one
    /// (no writes: flush and fdatasync) does within [`COMMIT_TIMEOUT`].
    async fn store_commits(&self) -> Result<(), String> {
        let recent = self.metrics.last_commit_ms().is_some_and(|ms| {
            chrono::Utc::now().timestamp_millis() - ms < RECENT_COMMIT.as_millis() as i64
        });
        if recent {
            return Ok(());
        }
        let commit = self.store.commit(|_tx| Ok::<(), StoreError>(()));
        match tokio::time::timeout(COMMIT_TIMEOUT, commit).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the store does not commit: {e}")),
            Err(_) => Err(format!(
                "a commit did not finish within {} s",
                COMMIT_TIMEOUT.as_secs()
            )),
        }
    }
}

/// The validity of a DER certificate, Unix seconds (`(0, 0)` if it cannot be read; the
/// config has already checked it).
pub fn validity(cert_der: &[u8]) -> (i64, i64) {
    use x509_parser::prelude::*;
    match X509Certificate::from_der(cert_der) {
        Ok((_, cert)) => (
            cert.validity().not_before.timestamp(),
            cert.validity().not_after.timestamp(),
        ),
        Err(_) => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn readiness(dir: &std::path::Path) -> Readiness {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .unwrap();
        let signer = Arc::new(crate::signing::Signer::from_pkcs8(pkcs8.as_ref()).unwrap());
        let key = Arc::new(crate::seal::DataKey::random().unwrap());
        let store = Store::open(dir, signer, key).unwrap();
        let now = chrono::Utc::now().timestamp();
        Readiness {
            store,
            metrics: Metrics::default(),
            peers: Live::new(Peers::default()),
            crls: Live::new(CrlSet::default()),
            cert_validity: Live::new((now - 3600, now + 10 * 86_400)),
        }
    }

    #[tokio::test]
    async fn ready_when_the_store_commits_the_certificate_is_valid_and_not_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let r = readiness(dir.path()).await;
        let (ready, body) = r.check(false).await;
        assert!(ready, "{body}");
        assert_eq!(body["status"], "ready");
        assert_eq!(body["failed"], json!([]));
        assert_eq!(body["checks"]["certificate"]["days_left"], json!(10.0));
    }

    #[tokio::test]
    async fn each_failed_check_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let r = readiness(dir.path()).await;
        let (ready, body) = r.check(true).await;
        assert!(!ready);
        assert_eq!(body["failed"], json!(["shutting_down"]));

        let now = chrono::Utc::now().timestamp();
        r.cert_validity.replace((now - 3600, now - 1));
        let (_, body) = r.check(false).await;
        assert_eq!(body["failed"], json!(["certificate"]));
        assert_eq!(body["checks"]["certificate"]["ok"], json!(false));

        r.store.close();
        let (ready, body) = r.check(false).await;
        assert!(!ready);
        assert_eq!(body["failed"], json!(["store", "certificate"]), "{body}");
        assert_eq!(body["checks"]["store"]["ok"], json!(false));
    }

    #[tokio::test]
    async fn a_stale_revocation_list_past_its_grace_makes_the_gateway_unready() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::dev::pki::Authority::new("readyz").unwrap();
        let now = chrono::Utc::now();
        let file = dir.path().join("ca.crl.pem");
        let pem = ca
            .crl(
                &[],
                now - chrono::Duration::days(3),
                now - chrono::Duration::days(1),
            )
            .unwrap();
        std::fs::write(&file, pem).unwrap();
        let r = readiness(&dir.path().join("store")).await;
        for (grace_hours, ready_expected) in [(0, false), (48, true)] {
            let crls = CrlSet::load(
                std::slice::from_ref(&file),
                chrono::Duration::hours(grace_hours),
                vec![
                    rustls::pki_types::pem::PemObject::from_pem_slice(ca.cert_pem.as_bytes())
                        .map(|c: rustls::pki_types::CertificateDer<'_>| c.to_vec())
                        .unwrap(),
                ],
            )
            .unwrap();
            r.crls.replace(crls);
            let (ready, body) = r.check(false).await;
            assert_eq!(ready, ready_expected, "grace {grace_hours}: {body}");
            let lists = &body["checks"]["revocation"]["lists"];
            assert_eq!(lists[0]["stale"], json!(true), "{body}");
            if !ready_expected {
                assert_eq!(body["failed"], json!(["revocation"]));
            }
        }
    }
}
