//! Revocation: a certificate on its CA's revocation list is refused in the handshake, a
//! kept-alive connection whose certificate a reloaded list revokes is refused at its next
//! request, and a list past its nextUpdate refuses its CA's certificates (hard fail)
//! unless a grace period is configured.

use chrono::{Duration, Utc};
use wijkpoort::audit::Event;
use wijkpoort::dev::pki::{LeafSpec, DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};

use crate::util::*;

/// Re-issues the practice's certificate from the test CA (whose key the test holds, so
/// it can revoke it), and points the wijkteam at a CRL file of that CA.
fn practice_under_test_ca(setup: &Setup, grace_hours: u64) -> (Credentials, std::path::PathBuf) {
    under_test_ca(setup, Role::Practice, &practice_spec(), grace_hours)
}

/// Re-issues `whose` certificate from the test CA by `spec`, and points the other
/// gateway (the one that checks it) at a CRL file of that CA.
fn under_test_ca(
    setup: &Setup,
    whose: Role,
    spec: &LeafSpec,
    grace_hours: u64,
) -> (Credentials, std::path::PathBuf) {
    let issued = setup.issue(spec);
    std::fs::write(setup.kit.pki.cert(whose.name()), &issued.cert_pem).unwrap();
    std::fs::write(setup.kit.pki.key(whose.name()), &issued.key_pem).unwrap();
    let crl = setup.kit.dir.join("test-ca.crl.pem");
    let checker = match whose {
        Role::Practice => Role::Wijkteam,
        Role::Wijkteam => Role::Practice,
    };
    let path = setup.config_path(checker);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "trust_anchors = \"ca.pem\"",
        &format!(
            "trust_anchors = \"ca.pem\"\ncrls = [\"test-ca.crl.pem\"]\ncrl_grace_hours = {grace_hours}"
        ),
    );
    std::fs::write(&path, text).unwrap();
    (issued, crl)
}

fn write_crl(
    setup: &Setup,
    path: &std::path::Path,
    revoked: &[&[u8]],
    this: chrono::DateTime<Utc>,
    next: chrono::DateTime<Utc>,
) {
    let pem = setup.trusted_ca.crl(revoked, this, next).unwrap();
    std::fs::write(path, pem).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_practice_is_refused_in_the_handshake_and_on_its_kept_alive_connection() {
    let mut setup = Setup::new().await;
    let (issued, crl) = practice_under_test_ca(&setup, 0);
    let now = Utc::now();
    write_crl(
        &setup,
        &crl,
        &[],
        now - Duration::hours(1),
        now + Duration::days(1),
    );
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let first = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &first).await;

    // The practice's key is stolen: its CA revokes the certificate, and the wijkteam
    // reloads the list.
    write_crl(
        &setup,
        &crl,
        &[&issued.cert_der()],
        now,
        now + Duration::days(1),
    );
    let reloaded = wijkteam.reload().await.unwrap();
    assert!(reloaded.peers_added.is_empty());

    // The relay's kept-alive connection is refused at its next request, the new
    // handshake is refused, and nothing more arrives.
    let second = submit(&mut his, &referral_submission(&consent)).await;
    let refused = wait_for_refusal(
        store(&wijkteam),
        Event::MessageRefused,
        "certificate_revoked",
    )
    .await;
    assert_eq!(refused.event.peer.as_deref(), Some(DEV_PRACTICE_ID));
    let handshake = wait_for_refusal(
        store(&wijkteam),
        Event::CertificateRefused,
        "TLS handshake refused",
    )
    .await;
    let reason = handshake.event.reason.unwrap();
    assert!(reason.contains("Revoked"), "{reason}");
    let waiting = status(&mut his, &second).await;
    assert_eq!(waiting["status"], "queued", "{waiting}");
    assert_eq!(
        audit_count(store(&wijkteam), Event::MessageReceived, &second),
        0
    );

    // A fresh client with the revoked certificate is refused too.
    let bytes = referral_envelope("ref-revoked").to_bytes();
    let sig = sign(&issued.key_pem, &bytes);
    let answer = relay(
        setup.listener_addr(Role::Wijkteam),
        &setup.anchors_pem(),
        Some(&issued),
        Some(&sig),
        bytes,
    )
    .await;
    assert!(answer.is_err(), "{answer:?}");

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_wijkteam_is_dropped_by_the_relay_on_its_kept_alive_connection() {
    let mut setup = Setup::new().await;
    // The other direction: the wijkteam's certificate is the test CA's, and the
    // practice (its relay is the TLS client) checks the CA's list.
    let (issued, crl) = under_test_ca(
        &setup,
        Role::Wijkteam,
        &LeafSpec::new(DEV_WIJKTEAM_ID, "Wijkteam (test)", "wijkteam.test"),
        0,
    );
    let now = Utc::now();
    write_crl(
        &setup,
        &crl,
        &[],
        now - Duration::hours(1),
        now + Duration::days(1),
    );
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let first = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &first).await;

    // The wijkteam's key is stolen: its CA revokes the certificate, and the practice
    // reloads the list. The relay drops its kept-alive connection before the next
    // request and the new handshake refuses the certificate: nothing more is sent.
    write_crl(
        &setup,
        &crl,
        &[&issued.cert_der()],
        now,
        now + Duration::days(1),
    );
    practice.reload().await.unwrap();
    let second = submit(&mut his, &referral_submission(&consent)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let reason = loop {
        let s = status(&mut his, &second).await;
        assert_eq!(s["status"], "queued", "{s}");
        if let Some(r) = s["last_error"].as_str() {
            if r.to_lowercase().contains("revoked") {
                break r.to_string();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay did not report the revoked certificate: {s}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(reason.contains("wijkteam"), "{reason}");
    assert_eq!(
        audit_count(store(&wijkteam), Event::MessageReceived, &second),
        0
    );
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_revocation_list_refuses_its_cas_certificates_unless_within_the_grace() {
    for (grace_hours, served) in [(0, false), (48, true)] {
        let mut setup = Setup::new().await;
        let (issued, crl) = practice_under_test_ca(&setup, grace_hours);
        let now = Utc::now();
        // Issued three days ago, due again yesterday: stale.
        write_crl(
            &setup,
            &crl,
            &[],
            now - Duration::days(3),
            now - Duration::days(1),
        );
        let wijkteam = setup.start(Role::Wijkteam).await;
        let bytes = referral_envelope(&format!("ref-stale-{grace_hours}")).to_bytes();
        let sig = sign(&issued.key_pem, &bytes);
        let answer = relay(
            setup.listener_addr(Role::Wijkteam),
            &setup.anchors_pem(),
            Some(&issued),
            Some(&sig),
            bytes,
        )
        .await;
        if served {
            let answer = answer.unwrap();
            assert_eq!(answer.status, 200, "grace {grace_hours}: {:?}", answer.body);
        } else {
            assert!(answer.is_err(), "grace {grace_hours}: {answer:?}");
            let refused = wait_for_refusal(
                store(&wijkteam),
                Event::CertificateRefused,
                "TLS handshake refused",
            )
            .await;
            let reason = refused.event.reason.unwrap();
            assert!(
                reason.to_lowercase().contains("expired") || reason.contains("Crl"),
                "{reason}"
            );
        }
        wijkteam.stop().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------
// Lists from the CA's distribution point (tls.crl_urls)

/// A CA's CRL distribution point on loopback: plain HTTP, serving whatever list the test
/// puts in it, until it is stopped.
struct CrlServer {
    url: String,
    list: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CrlServer {
    async fn start(list: Vec<u8>) -> CrlServer {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/test-ca.crl", listener.local_addr().unwrap());
        let served = std::sync::Arc::new(std::sync::Mutex::new(list));
        let list = served.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let list = list.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let body = list.lock().unwrap().clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        CrlServer {
            url,
            list: served,
            task,
        }
    }

    fn serve(&self, list: Vec<u8>) {
        *self.list.lock().unwrap() = list;
    }

    /// The distribution point goes away: connections are refused from now on.
    fn stop(self) {
        self.task.abort();
    }
}

/// Re-issues the practice's certificate from the test CA, and points the wijkteam at the
/// test CA's distribution point `url` (no CRL files).
fn practice_under_test_ca_by_url(setup: &Setup, url: &str, grace_hours: u64) -> Credentials {
    let issued = setup.issue(&practice_spec());
    std::fs::write(setup.kit.pki.cert("practice"), &issued.cert_pem).unwrap();
    std::fs::write(setup.kit.pki.key("practice"), &issued.key_pem).unwrap();
    let path = setup.config_path(Role::Wijkteam);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "trust_anchors = \"ca.pem\"",
        &format!(
            "trust_anchors = \"ca.pem\"\ncrl_urls = [\"{url}\"]\ncrl_grace_hours = {grace_hours}\nwatch_interval_secs = 0"
        ),
    );
    std::fs::write(&path, text).unwrap();
    issued
}

fn crl_of(
    setup: &Setup,
    revoked: &[&[u8]],
    this: chrono::DateTime<Utc>,
    next: chrono::DateTime<Utc>,
) -> Vec<u8> {
    setup
        .trusted_ca
        .crl(revoked, this, next)
        .unwrap()
        .into_bytes()
}

/// Waits until the wijkteam holds a list from `url` whose thisUpdate is `this`.
async fn wait_for_list(gw: &wijkpoort::gateway::RunningGateway, this: chrono::DateTime<Utc>) {
    wait_until("the fetched revocation list in force", || async {
        gw.revocation_lists()
            .states()
            .iter()
            .any(|s| s.this_update.timestamp() == this.timestamp())
            .then_some(())
    })
    .await;
}

async fn relay_as(setup: &Setup, issued: &Credentials, id: &str) -> Result<Answer, String> {
    let bytes = referral_envelope(id).to_bytes();
    let sig = sign(&issued.key_pem, &bytes);
    relay(
        setup.listener_addr(Role::Wijkteam),
        &setup.anchors_pem(),
        Some(issued),
        Some(&sig),
        bytes,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_from_the_cas_url_revokes_and_its_cached_copy_serves_the_next_start() {
    let mut setup = Setup::new().await;
    let now = Utc::now();
    let first = now - Duration::hours(1);
    let server = CrlServer::start(Vec::new()).await;
    let issued = practice_under_test_ca_by_url(&setup, &server.url, 0);
    server.serve(crl_of(&setup, &[], first, now + Duration::days(1)));
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    // Fetched at start (the listener takes its first connection after this).
    wait_for_list(&wijkteam, first).await;
    let lists = wijkteam.revocation_lists();
    assert_eq!(lists.states().len(), 1, "{:?}", lists.states());
    let fetch = &lists.fetches()[0];
    assert!(
        fetch.last_success.is_some() && fetch.last_error.is_none(),
        "{fetch:?}"
    );
    let cache = fetch.cache.clone();
    assert!(
        cache.starts_with(setup.store_dir(Role::Wijkteam)),
        "{cache:?}"
    );
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let delivered = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &delivered).await;

    // The CA revokes the practice's certificate and publishes a new list; a reload
    // fetches it at once (otherwise the next scheduled fetch would).
    let revoking = now;
    let published = crl_of(
        &setup,
        &[&issued.cert_der()],
        revoking,
        now + Duration::days(1),
    );
    server.serve(published.clone());
    wijkteam.reload().await.unwrap();
    wait_for_list(&wijkteam, revoking).await;
    // Kept on disk, whole and private.
    assert_eq!(std::fs::read(&cache).unwrap(), published);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The relay's kept-alive connection is refused at its next request …
    let queued = submit(&mut his, &referral_submission(&consent)).await;
    let refused = wait_for_refusal(
        store(&wijkteam),
        Event::MessageRefused,
        "certificate_revoked",
    )
    .await;
    assert_eq!(refused.event.peer.as_deref(), Some(DEV_PRACTICE_ID));
    assert_eq!(
        audit_count(store(&wijkteam), Event::MessageReceived, &queued),
        0
    );
    // … and a new handshake with the revoked certificate too.
    let answer = relay_as(&setup, &issued, "ref-revoked-url").await;
    assert!(answer.is_err(), "{answer:?}");

    // The distribution point goes down; the wijkteam restarts on the cached copy.
    server.stop();
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
    let wijkteam = setup.start(Role::Wijkteam).await;
    wait_until("the fetch at start done", || async {
        wijkteam.revocation_lists().fetches()[0]
            .last_fetch
            .map(|_| ())
    })
    .await;
    let lists = wijkteam.revocation_lists();
    let fetch = &lists.fetches()[0];
    assert!(fetch.from_cache, "{fetch:?}");
    assert!(
        fetch.last_error.is_some(),
        "the fetch at start failed: {fetch:?}"
    );
    assert_eq!(fetch.failures, 1, "{fetch:?}");
    assert_eq!(lists.states()[0].revoked, 1, "{:?}", lists.states());
    let answer = relay_as(&setup, &issued, "ref-revoked-after-restart").await;
    assert!(answer.is_err(), "{answer:?}");
    let handshake = wait_for_refusal(
        store(&wijkteam),
        Event::CertificateRefused,
        "TLS handshake refused",
    )
    .await;
    let reason = handshake.event.reason.unwrap();
    assert!(reason.contains("Revoked"), "{reason}");
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_list_not_signed_by_its_ca_is_refused_and_the_good_one_stays() {
    let mut setup = Setup::new().await;
    let now = Utc::now();
    let server = CrlServer::start(Vec::new()).await;
    let issued = practice_under_test_ca_by_url(&setup, &server.url, 0);
    let good = now - Duration::hours(1);
    server.serve(crl_of(&setup, &[], good, now + Duration::days(1)));
    let wijkteam = setup.start(Role::Wijkteam).await;
    wait_for_list(&wijkteam, good).await;
    assert_eq!(
        relay_as(&setup, &issued, "ref-before-forgery")
            .await
            .unwrap()
            .status,
        200
    );

    // Someone on the path serves a list in the CA's name, signed with another key, that
    // would revoke the practice.
    let impostor = wijkpoort::dev::pki::Authority::new("wijkpoort test").unwrap();
    server.serve(
        impostor
            .crl(&[&issued.cert_der()], now, now + Duration::days(1))
            .unwrap()
            .into_bytes(),
    );
    wijkteam.reload().await.unwrap();
    let error = wait_until("the forged list refused", || async {
        wijkteam.revocation_lists().fetches()[0].last_error.clone()
    })
    .await;
    assert!(error.contains("does not verify"), "{error}");
    let lists = wijkteam.revocation_lists();
    assert_eq!(
        lists.states()[0].revoked,
        0,
        "the good list stays: {:?}",
        lists.states()
    );
    assert_eq!(
        relay_as(&setup, &issued, "ref-after-forgery")
            .await
            .unwrap()
            .status,
        200
    );
    server.stop();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_list_from_the_url_refuses_its_cas_certificates_unless_within_the_grace() {
    for (grace_hours, served) in [(0, false), (48, true)] {
        let mut setup = Setup::new().await;
        let now = Utc::now();
        let server = CrlServer::start(Vec::new()).await;
        let issued = practice_under_test_ca_by_url(&setup, &server.url, grace_hours);
        // The CA's server still hands out a list that was due again yesterday.
        let issued_at = now - Duration::days(3);
        server.serve(crl_of(&setup, &[], issued_at, now - Duration::days(1)));
        let wijkteam = setup.start(Role::Wijkteam).await;
        wait_for_list(&wijkteam, issued_at).await;
        assert_eq!(wijkteam.revocation_lists().stale(now).len(), 1);
        let answer = relay_as(&setup, &issued, &format!("ref-url-stale-{grace_hours}")).await;
        if served {
            assert_eq!(answer.unwrap().status, 200, "grace {grace_hours}");
        } else {
            assert!(answer.is_err(), "grace {grace_hours}: {answer:?}");
            let refused = wait_for_refusal(
                store(&wijkteam),
                Event::CertificateRefused,
                "TLS handshake refused",
            )
            .await;
            let reason = refused.event.reason.unwrap();
            assert!(
                reason.to_lowercase().contains("expired") || reason.contains("Crl"),
                "{reason}"
            );
        }
        server.stop();
        wijkteam.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_of_each_fetched_list_shows_in_check_config_readyz_and_metrics() {
    use crate::operations::{add_ops, http_get};
    let mut setup = Setup::new().await;
    let now = Utc::now();
    let server = CrlServer::start(Vec::new()).await;
    practice_under_test_ca_by_url(&setup, &server.url, 0);
    let this = now - Duration::hours(1);
    server.serve(crl_of(&setup, &[], this, now + Duration::days(1)));
    let ops = add_ops(&setup, Role::Wijkteam);

    // check-config fetches the list once and names it.
    let path = setup.config_path(Role::Wijkteam);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wijkpoort"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("revocation lists (1):"), "{text}");
    assert!(
        text.contains(&server.url) && text.contains("fetched at"),
        "{text}"
    );
    assert!(text.contains("0 revoked"), "{text}");

    let wijkteam = setup.start(Role::Wijkteam).await;
    wait_for_list(&wijkteam, this).await;
    let (code, _, body) = http_get(ops, "/readyz").await;
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 200, "{ready}");
    let revocation = &ready["checks"]["revocation"];
    assert_eq!(revocation["ok"], true, "{ready}");
    assert_eq!(
        revocation["lists"][0]["source"],
        server.url.as_str(),
        "{ready}"
    );
    assert_eq!(revocation["fetches"][0]["failures"], 0, "{ready}");
    assert!(
        revocation["fetches"][0]["last_success"].is_string(),
        "{ready}"
    );
    let (_, _, metrics) = http_get(ops, "/metrics").await;
    let label = format!("{{crl=\"{}\"}}", server.url);
    assert!(
        metrics.contains(&format!("wijkpoort_crl_next_update_seconds{label}")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("wijkpoort_crl_fetch_failures_total{label} 0")),
        "{metrics}"
    );
    if let Some((ok, said)) = crate::operations::promtool(&metrics) {
        assert!(ok, "promtool check metrics:\n{said}\n{metrics}");
    }

    // The distribution point goes away: the next fetch fails, the list held stays in
    // force, and the failure shows.
    server.stop();
    wijkteam.reload().await.unwrap();
    let fetch = wait_until("the failed fetch noted", || async {
        let (_, _, body) = http_get(ops, "/readyz").await;
        let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
        let fetch = ready["checks"]["revocation"]["fetches"][0].clone();
        (fetch["failures"] == 1).then_some(fetch)
    })
    .await;
    assert!(
        fetch["last_error"].as_str().unwrap().contains("connect"),
        "{fetch}"
    );
    let (_, _, metrics) = http_get(ops, "/metrics").await;
    assert!(
        metrics.contains(&format!("wijkpoort_crl_fetch_failures_total{label} 1")),
        "{metrics}"
    );
    assert_eq!(wijkteam.revocation_lists().states().len(), 1);
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_list_fetched_yet_peers_are_refused_in_both_directions() {
    let mut setup = Setup::new().await;
    // A distribution point that refuses connections, and no cached copy.
    let url = "http://127.0.0.1:1/never.crl";
    for role in [Role::Practice, Role::Wijkteam] {
        let path = setup.config_path(role);
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "trust_anchors = \"ca.pem\"",
            &format!("trust_anchors = \"ca.pem\"\ncrl_urls = [\"{url}\"]\nwatch_interval_secs = 0"),
        );
        std::fs::write(&path, text).unwrap();
    }
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    assert_eq!(practice.revocation_lists().missing(), vec![url]);

    // The practice's relay does not send to a wijkteam it cannot check …
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let id = submit(&mut his, &referral_submission(&consent)).await;
    let waiting = wait_until("the relay's refusal", || {
        let mut his = setup.client(Role::Practice, "dr.jansen");
        let id = id.clone();
        async move {
            let s = status(&mut his, &id).await;
            s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot be checked for revocation"))
                .then_some(s)
        }
    })
    .await;
    assert_eq!(waiting["status"], "queued", "{waiting}");
    assert_eq!(
        audit_count(store(&wijkteam), Event::MessageReceived, &id),
        0
    );

    // … and the wijkteam refuses a practice it cannot check.
    let issued = setup.credentials(Role::Practice);
    let answer = relay_as(&setup, &issued, "ref-unchecked").await.unwrap();
    assert_eq!(answer.status, 403, "{:?}", answer.body);
    assert_eq!(
        answer.body["error"], "certificate_revoked",
        "{:?}",
        answer.body
    );
    let message = answer.body["message"].as_str().unwrap();
    assert!(message.contains("cannot be checked"), "{message}");
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}
