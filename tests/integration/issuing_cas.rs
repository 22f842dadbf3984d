//! Identity per issuing CA at the two ends of a connection: with an `[[issuing_cas]]`
//! section, a certificate that chains to a trust anchor is still refused when its
//! issuer is not a configured issuing CA — at the listener (the refusal audited with
//! its reason) and at the relay (the message stays queued, the reason its last error).

use std::path::Path;

use wijkpoort::audit::{Actor, Event};

use crate::util::*;

/// Writes the first certificate of the kit's `ca.pem` (the dev CA, which issued the
/// gateways' own certificates; the test CA follows it) to `dev-ca.pem`, and the
/// second (the test CA) to `test-ca.pem`.
fn split_anchors(setup: &Setup) {
    let anchors = setup.anchors_pem();
    let end = "-----END CERTIFICATE-----\n";
    let first = anchors.find(end).unwrap() + end.len();
    let dir = setup.dir.path();
    std::fs::write(dir.join("dev-ca.pem"), &anchors[..first]).unwrap();
    std::fs::write(dir.join("test-ca.pem"), &anchors[first..]).unwrap();
}

/// Appends an `[[issuing_cas]]` entry to a config file.
fn add_issuing_ca(config: &Path, cert: &str, rule: &str) {
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(&format!(
        "\n[[issuing_cas]]\ncert = {cert:?}\nrule = {rule:?}\n"
    ));
    std::fs::write(config, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_leaf_whose_issuer_is_not_a_configured_issuing_ca_is_refused_at_the_listener() {
    let mut setup = Setup::new().await;
    split_anchors(&setup);
    add_issuing_ca(&setup.config_path(Role::Wijkteam), "dev-ca.pem", "dev");
    let wijkteam = setup.start(Role::Wijkteam).await;

    // The test CA is a trust anchor, so the handshake succeeds; the certificate even
    // claims the practice's identity. Its issuer is no issuing CA of the wijkteam.
    let impostor = setup.issue(&practice_spec());
    let bytes = referral_envelope("ref-wrong-issuer").to_bytes();
    let answer = relay_signed(&setup, Role::Wijkteam, &impostor, &bytes)
        .await
        .unwrap();

    assert_eq!(answer.status, 403, "{:?}", answer.body);
    assert_eq!(answer.body["error"], "unknown_peer", "{:?}", answer.body);
    let store = store(&wijkteam);
    let record = wait_for_refusal(
        store,
        Event::CertificateRefused,
        "not a configured issuing CA",
    )
    .await;
    let reason = record.event.reason.unwrap();
    assert!(
        reason.contains("CN=wijkpoort test CA"),
        "names the issuer: {reason}"
    );
    assert!(
        matches!(record.event.actor, Actor::Unknown { .. }),
        "no identity was read: {:?}",
        record.event.actor
    );
    assert_nothing_stored(store);

    // The practice's own certificate, from the configured dev CA, is identified: its
    // message gets past the identity (and is refused only for the type it may not send).
    let mut feedback = feedback_envelope("fb-from-practice");
    feedback.from = wijkpoort::dev::pki::DEV_PRACTICE_ID.into();
    feedback.to = wijkpoort::dev::pki::DEV_WIJKTEAM_ID.into();
    let answer = relay_signed(
        &setup,
        Role::Wijkteam,
        &setup.credentials(Role::Practice),
        &feedback.to_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(
        answer.body["error"], "type_not_allowed",
        "{:?}",
        answer.body
    );
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_issuing_ca_configured_at_both_ends_a_referral_is_delivered() {
    let mut setup = Setup::new().await;
    split_anchors(&setup);
    for role in [Role::Practice, Role::Wijkteam] {
        add_issuing_ca(&setup.config_path(role), "dev-ca.pem", "dev");
    }
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let id = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &id).await;
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_refuses_a_server_whose_issuer_is_not_a_configured_issuing_ca() {
    let mut setup = Setup::new().await;
    split_anchors(&setup);
    // The practice accepts only leaves of the test CA; the wijkteam's is the dev CA's.
    add_issuing_ca(&setup.config_path(Role::Practice), "test-ca.pem", "dev");
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let id = submit(&mut his, &referral_submission(&consent)).await;

    let s = wait_for_status(&mut his, &id, "a last error", |s| {
        s["last_error"].as_str().is_some()
    })
    .await;
    assert_eq!(s["status"], "queued", "{s}");
    let error = s["last_error"].as_str().unwrap();
    assert!(error.contains("not a configured issuing CA"), "{error}");
    assert!(error.contains("CN=wijkpoort dev CA"), "{error}");
    assert_nothing_stored(store(&wijkteam));
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_practice_on_a_uzi_chain_and_a_wijkteam_on_a_pkioverheid_chain_exchange_messages() {
    use wijkpoort::dev::pki::{write_real_pki, RsaKeys, Shape};
    let mut setup = Setup::new().await;
    // The real shapes over the kit's files: ca.pem (the RSA root), practice.pem (UZI
    // server certificate, UZI server CA, domain CA), wijkteam.pem and auditor.pem
    // (PKIoverheid), their RSA test-only keys, and the [[issuing_cas]] section.
    let fixtures = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rsa"));
    let keys = RsaKeys::read_dir(fixtures).unwrap();
    write_real_pki(setup.dir.path(), Shape::Uzi, &keys).unwrap();
    let section = std::fs::read_to_string(setup.dir.path().join("issuing_cas.toml")).unwrap();
    for role in [Role::Practice, Role::Wijkteam] {
        let path = setup.config_path(role);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push('\n');
        text.push_str(&section);
        std::fs::write(&path, text).unwrap();
    }
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;

    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let referral = submit(&mut his, &referral_submission(&consent)).await;
    let delivered = wait_delivered(&mut his, &referral).await;
    assert!(delivered["receipt"].is_object(), "{delivered}");
    assert_eq!(
        received_ids(store(&wijkteam)),
        vec![referral.clone()],
        "the wijkteam identified the practice by the URA in its UZI otherName"
    );

    let mut case_system = setup.client(Role::Wijkteam, "consulent");
    let feedback = submit(&mut case_system, &feedback_submission(&referral, &consent)).await;
    wait_delivered(&mut case_system, &feedback).await;
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}
