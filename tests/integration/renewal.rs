//! Signatures outlive certificates: after the practice's certificate is renewed (a new
//! key), the audit log's earlier checkpoints, and the envelopes the wijkteam stored
//! before, still verify — each against the certificate that was current when it signed,
//! which the stores kept by fingerprint.

use wijkpoort::dev::pki::DEV_PRACTICE_ID;
use wijkpoort::envelope_batch::verify_stored;
use wijkpoort::signing;
use wijkpoort::store::{Store, T};

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_leaves_earlier_signatures_verifiable() {
    let mut setup = Setup::new().await;
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let before = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &before).await;
    practice.stop().await.unwrap();
    let old_cert = setup.credentials(Role::Practice).cert_der();

    // Renewal: a new key and certificate from the CA, same organisation.
    let renewed = setup.issue(&practice_spec());
    std::fs::write(setup.kit.pki.cert("practice"), &renewed.cert_pem).unwrap();
    std::fs::write(setup.kit.pki.key("practice"), &renewed.key_pem).unwrap();
    assert_ne!(renewed.cert_der(), old_cert);
    let practice = setup.start(Role::Practice).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let after = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &after).await;
    practice.stop().await.unwrap();

    // The practice's log: checkpoints signed with both keys verify, with the renewed
    // certificate and the trust anchors the config names.
    let config = setup.config(Role::Practice);
    let dir = setup.store_dir(Role::Practice);
    let log = retry_open(|| Store::open_read_only(&dir));
    let report = wijkpoort::audit::verify::verify_with_anchors(
        &log,
        &config.cert_chain[0],
        &config.trust_anchors,
        None,
    )
    .unwrap();
    assert!(report.intact(), "{report:?}");
    assert!(report.checkpoints >= 2, "{report:?}");
    // Without the anchors, the old certificate is not taken on the store's word.
    let alone = wijkpoort::audit::verify::verify(&log, &config.cert_chain[0], None).unwrap();
    assert!(!alone.intact());
    drop(log);

    // The wijkteam's copy of the first referral names the old certificate, which it kept.
    let at_wijkteam = store(&wijkteam);
    let kept = wijkpoort::inbox::get(at_wijkteam, &DEV_PRACTICE_ID.into(), &before)
        .unwrap()
        .unwrap();
    let fp = signing::named_certificate(&kept.signature).expect("a named certificate");
    assert_eq!(fp, signing::fingerprint(&old_cert));
    let cert = at_wijkteam
        .get(T::Certificates, fp.as_bytes())
        .unwrap()
        .expect("the old certificate, kept");
    let proof = kept.batch.as_ref();
    assert!(proof.is_some(), "sent under a batch signature");
    verify_stored(&cert, kept.envelope.as_bytes(), &kept.signature, proof).unwrap();
    assert!(verify_stored(
        &renewed.cert_der(),
        kept.envelope.as_bytes(),
        &kept.signature,
        proof
    )
    .is_err());
    wijkteam.stop().await.unwrap();
}

/// Writes the practice's certificate and key files.
fn install(setup: &Setup, cert_pem: &str, key_pem: &str) {
    std::fs::write(setup.kit.pki.cert("practice"), cert_pem).unwrap();
    std::fs::write(setup.kit.pki.key("practice"), key_pem).unwrap();
}

/// The fingerprint the wijkteam's stored copy of `id` names, after checking that the
/// signature verifies with the certificate it kept under that fingerprint.
fn stored_signer(wijkteam: &wijkpoort::gateway::RunningGateway, id: &str) -> String {
    let at_wijkteam = store(wijkteam);
    let kept = wijkpoort::inbox::get(at_wijkteam, &DEV_PRACTICE_ID.into(), id)
        .unwrap()
        .unwrap();
    let fp = signing::named_certificate(&kept.signature).expect("a named certificate");
    let cert = at_wijkteam
        .get(T::Certificates, fp.as_bytes())
        .unwrap()
        .expect("the certificate, kept");
    wijkpoort::envelope_batch::verify_stored(
        &cert,
        kept.envelope.as_bytes(),
        &kept.signature,
        kept.batch.as_ref(),
    )
    .unwrap();
    fp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewed_by_a_reload_signs_at_once_and_earlier_signatures_still_verify() {
    let mut setup = Setup::new().await;
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let before = submit(&mut his, &referral_submission(&consent)).await;
    let first_receipt = wait_delivered(&mut his, &before).await;
    let old = setup.credentials(Role::Practice);

    // Broken files leave the running credentials in place, each with a reason that
    // names the file and what is wrong.
    let renewed = setup.issue(&practice_spec());
    let mut expired_spec = practice_spec();
    expired_spec.not_before = chrono::Utc::now() - chrono::Duration::days(400);
    expired_spec.not_after = chrono::Utc::now() - chrono::Duration::days(1);
    let expired = setup.issue(&expired_spec);
    let other_org = setup.issue(&wijkpoort::dev::pki::LeafSpec::new(
        "90000999",
        "Another practice",
        "other.test",
    ));
    let broken: [(&str, &str, &str, &str); 4] = [
        (
            "a key that is not the certificate's",
            &renewed.cert_pem,
            &old.key_pem,
            "does not belong to the certificate",
        ),
        (
            "bad PEM",
            "-----BEGIN CERTIFICATE-----\nnot base64\n",
            &old.key_pem,
            "tls.cert",
        ),
        (
            "an expired certificate",
            &expired.cert_pem,
            &expired.key_pem,
            "expired",
        ),
        (
            "another organisation's certificate",
            &other_org.cert_pem,
            &other_org.key_pem,
            "90000999",
        ),
    ];
    for (what, cert_pem, key_pem, reason) in broken {
        install(&setup, cert_pem, key_pem);
        let refused = practice.reload().await.expect_err(what).to_string();
        assert!(refused.contains(reason), "{what}: {refused}");
        assert!(
            refused.contains(".pem") || refused.contains("identity"),
            "{what} names the file: {refused}"
        );
        let id = submit(&mut his, &referral_submission(&consent)).await;
        wait_delivered(&mut his, &id).await;
        assert_eq!(
            stored_signer(&wijkteam, &id),
            signing::fingerprint(&old.cert_der()),
            "{what}"
        );
    }

    // The renewed certificate and key: the reload takes them without a restart.
    install(&setup, &renewed.cert_pem, &renewed.key_pem);
    let done = practice.reload().await.unwrap();
    assert!(done.credentials_reloaded, "{done:?}");
    // Kept in the store before anything was signed with it.
    assert!(store(&practice)
        .get(
            T::Certificates,
            signing::fingerprint(&renewed.cert_der()).as_bytes()
        )
        .unwrap()
        .is_some());
    let reloaded = wait_for_audit(store(&practice), "the credentials reload audited", |r| {
        r.event.event == wijkpoort::audit::Event::CredentialsReloaded
    })
    .await;
    assert!(reloaded
        .event
        .reason
        .unwrap()
        .contains(&signing::fingerprint(&renewed.cert_der())));
    // New messages are signed with the new key, over a connection with the new
    // client certificate (the wijkteam keeps the certificate it was shown).
    let after = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &after).await;
    assert_eq!(
        stored_signer(&wijkteam, &after),
        signing::fingerprint(&renewed.cert_der())
    );
    // The envelope from before still verifies with the old certificate, kept.
    assert_eq!(
        stored_signer(&wijkteam, &before),
        signing::fingerprint(&old.cert_der())
    );
    // The receipt of the first message still proves it.
    let receipt: wijkpoort::receipt::Receipt =
        serde_json::from_value(first_receipt["receipt"].clone()).unwrap();
    let sent = wijkpoort::outbox::get(store(&practice), &before)
        .unwrap()
        .unwrap();
    receipt
        .verify(
            &before,
            sent.envelope.as_bytes(),
            &setup.credentials(Role::Wijkteam).cert_der(),
        )
        .unwrap();
    practice.stop().await.unwrap();

    // The practice's log: checkpoints signed with the old key and with the new one
    // (the closing one) verify.
    let config = setup.config(Role::Practice);
    let dir = setup.store_dir(Role::Practice);
    let log = retry_open(|| Store::open_read_only(&dir));
    let report = wijkpoort::audit::verify::verify_with_anchors(
        &log,
        &config.cert_chain[0],
        &config.trust_anchors,
        None,
    )
    .unwrap();
    assert!(report.intact(), "{report:?}");
    drop(log);
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_files_are_noticed_and_reloaded_without_a_signal() {
    let mut setup = Setup::new().await;
    let path = setup.config_path(Role::Practice);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "trust_anchors = \"ca.pem\"",
        "trust_anchors = \"ca.pem\"\nwatch_interval_secs = 1",
    );
    std::fs::write(&path, text).unwrap();
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let renewed = setup.issue(&practice_spec());
    install(&setup, &renewed.cert_pem, &renewed.key_pem);
    // No reload is asked for: the watch sees the files change and reloads them.
    wait_for_audit(
        store(&practice),
        "the credentials reloaded by the watch",
        |r| r.event.event == wijkpoort::audit::Event::CredentialsReloaded,
    )
    .await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let id = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &id).await;
    assert_eq!(
        stored_signer(&wijkteam, &id),
        signing::fingerprint(&renewed.cert_der())
    );
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_queued_before_a_renewal_is_signed_when_sent_with_the_renewed_certificate() {
    let mut setup = Setup::new().await;
    setup.release(Role::Wijkteam);
    let practice = setup.start(Role::Practice).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    // Nothing is signed at accept: the wijkteam is down, so it waits unsigned.
    let queued = submit(&mut his, &referral_submission(&consent)).await;
    assert_eq!(status(&mut his, &queued).await["status"], "queued");
    let old = setup.credentials(Role::Practice);
    let renewed = setup.issue(&practice_spec());
    install(&setup, &renewed.cert_pem, &renewed.key_pem);
    assert!(practice.reload().await.unwrap().credentials_reloaded);
    let after = submit(&mut his, &referral_submission(&consent)).await;

    // The relay signs each batch just before sending it, so the message queued under
    // the old certificate goes out under the renewed one, and the wijkteam keeps that.
    let wijkteam = setup.start(Role::Wijkteam).await;
    wait_delivered(&mut his, &queued).await;
    wait_delivered(&mut his, &after).await;
    assert_eq!(
        stored_signer(&wijkteam, &queued),
        signing::fingerprint(&renewed.cert_der())
    );
    assert_ne!(
        signing::fingerprint(&old.cert_der()),
        signing::fingerprint(&renewed.cert_der())
    );
    assert_eq!(
        stored_signer(&wijkteam, &after),
        signing::fingerprint(&renewed.cert_der())
    );
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}
