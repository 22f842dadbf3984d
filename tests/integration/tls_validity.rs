//! A certificate is checked on every request, not once per connection: sessions are
//! never resumed (a resumed session would skip the certificate check), and a kept-alive
//! connection whose client certificate has expired since its handshake is refused at its
//! next request.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use wijkpoort::audit::Event;
use wijkpoort::clock::Clock;

use crate::util::*;

/// A TLS client config for the practice's credentials, with rustls' default session
/// cache (so it would resume if the server let it).
fn practice_client(setup: &Setup) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(setup.anchors_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let c = setup.credentials(Role::Practice);
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from(c.cert_der())],
        PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn connect(
    setup: &Setup,
    config: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(setup.listener_addr(Role::Wijkteam))
        .await
        .unwrap();
    TlsConnector::from(config)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_is_a_full_handshake_not_a_resumed_session() {
    let mut setup = Setup::new().await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let config = practice_client(&setup);
    for _ in 0..2 {
        let tls = connect(&setup, config.clone()).await;
        assert_eq!(
            tls.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Full)
        );
        // One request, so that whatever the server sends after the handshake (where a
        // session ticket would be) is read before the next connection.
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        let driver = tokio::spawn(conn.without_shutdown());
        let request = hyper::Request::get("/v1/audit/records")
            .header(hyper::header::HOST, "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = sender.send_request(request).await.unwrap();
        assert_eq!(answer.status(), 403); // the practice is no auditor
        let _ = answer.into_body().collect().await.unwrap();
        drop(sender);
        driver.await.unwrap().unwrap();
    }
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_refused_once_its_certificate_has_expired() {
    let mut setup = Setup::new().await;
    let clock = Clock::system();
    let wijkteam = setup.start_with_clock(Role::Wijkteam, clock.clone()).await;
    let tls = connect(&setup, practice_client(&setup)).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let bytes = referral_envelope("ref-kept-alive").to_bytes();
    let sig = sign(&setup.credentials(Role::Practice).key_pem, &bytes);
    let post = |id: &str| {
        let _ = id;
        hyper::Request::post(RELAY_BATCH)
            .header(hyper::header::HOST, "127.0.0.1")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(batch_of_one(Some(&sig), &bytes))))
            .unwrap()
    };
    let first = sender.send_request(post("first")).await.unwrap();
    assert_eq!(first.status(), 200);
    let _ = first.into_body().collect().await.unwrap();

    // The dev certificate is valid for a year; the wijkteam's clock moves past it.
    clock.advance(chrono::Duration::days(400));
    sender.ready().await.unwrap();
    let second = sender.send_request(post("second")).await.unwrap();
    assert_eq!(second.status(), 403);
    let body = second.into_body().collect().await.unwrap().to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["error"], "certificate_expired", "{answer}");
    wait_for_refusal(
        store(&wijkteam),
        Event::MessageRefused,
        "certificate_expired",
    )
    .await;
    assert_eq!(
        audit_count(store(&wijkteam), Event::MessageReceived, "ref-kept-alive"),
        1
    );
    wijkteam.stop().await.unwrap();
}
