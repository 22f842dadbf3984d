//! A separate signing certificate (`[signing]`; newer PKIoverheid generations issue
//! single-purpose certificates): each side signs envelopes, receipts and checkpoints
//! with it and presents it after its TLS chain; the other side takes it only when a
//! configured CA issued it for the same organisation, verifies with it, and keeps it by
//! fingerprint, so `audit verify` and the receipts check on both sides.

use std::os::unix::fs::PermissionsExt;

use wijkpoort::dev::pki::{LeafSpec, DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};
use wijkpoort::receipt::Receipt;
use wijkpoort::signing::{self, Signer};
use wijkpoort::store::{Store, T};

use crate::util::*;

/// Gives `role` a signing certificate of `organisation_id` from the test CA and the
/// `[signing]` section naming it; returns it.
fn give_signing_certificate(setup: &Setup, role: Role, organisation_id: &str) -> Credentials {
    let issued = setup.issue(&LeafSpec::new(
        organisation_id,
        "Ondertekening (test)",
        "signing.test",
    ));
    let name = role.name();
    let cert = setup.kit.dir.join(format!("{name}-signing.pem"));
    let key = setup.kit.dir.join(format!("{name}-signing.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = setup.config_path(role);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[signing]\ncertificate = \"{name}-signing.pem\"\nkey = \"{name}-signing.key\"\n"
    ));
    std::fs::write(&path, text).unwrap();
    issued
}

fn verify_log(setup: &Setup, role: Role, signing_cert: &[u8]) {
    let config = setup.config(role);
    let dir = setup.store_dir(role);
    let log = retry_open(|| Store::open_read_only(&dir));
    let report = wijkpoort::audit::verify::verify_with_anchors(
        &log,
        signing_cert,
        &config.trust_anchors,
        None,
    )
    .unwrap();
    assert!(report.intact(), "{}: {report:?}", role.name());
    assert!(report.checkpoints >= 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_signing_certificate_signs_envelopes_receipts_and_checkpoints_on_both_sides() {
    let mut setup = Setup::new().await;
    let practice_signing = give_signing_certificate(&setup, Role::Practice, DEV_PRACTICE_ID);
    let wijkteam_signing = give_signing_certificate(&setup, Role::Wijkteam, DEV_WIJKTEAM_ID);
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let mut case_system = setup.client(Role::Wijkteam, "medewerker");
    let consent = record_consent(&mut his).await;
    let referral = submit(&mut his, &referral_submission(&consent)).await;
    let delivered = wait_delivered(&mut his, &referral).await;

    // The wijkteam verified the envelope with the practice's signing certificate, which
    // it was shown after the TLS chain and kept.
    let kept = wijkpoort::inbox::get(store(&wijkteam), &DEV_PRACTICE_ID.into(), &referral)
        .unwrap()
        .unwrap();
    let fp = signing::named_certificate(&kept.signature).unwrap();
    assert_eq!(fp, signing::fingerprint(&practice_signing.cert_der()));
    assert_ne!(
        fp,
        signing::fingerprint(&setup.credentials(Role::Practice).cert_der())
    );
    let cert = store(&wijkteam)
        .get(T::Certificates, fp.as_bytes())
        .unwrap()
        .expect("the signing certificate, kept");
    wijkpoort::envelope_batch::verify_stored(
        &cert,
        kept.envelope.as_bytes(),
        &kept.signature,
        kept.batch.as_ref(),
    )
    .unwrap();

    // The receipt is signed with the wijkteam's signing certificate, which the practice
    // kept.
    let receipt: Receipt = serde_json::from_value(delivered["receipt"].clone()).unwrap();
    let sent = wijkpoort::outbox::get(store(&practice), &referral)
        .unwrap()
        .unwrap();
    receipt
        .verify(
            &referral,
            sent.envelope.as_bytes(),
            &wijkteam_signing.cert_der(),
        )
        .unwrap();
    assert!(receipt
        .verify(
            &referral,
            sent.envelope.as_bytes(),
            &setup.credentials(Role::Wijkteam).cert_der()
        )
        .is_err());
    let receipt_fp = signing::named_certificate(&receipt.signature).unwrap();
    assert!(store(&practice)
        .get(T::Certificates, receipt_fp.as_bytes())
        .unwrap()
        .is_some());

    // And the other way: feedback signed by the wijkteam's signing certificate.
    let feedback = submit(&mut case_system, &feedback_submission(&referral, &consent)).await;
    wait_delivered(&mut case_system, &feedback).await;
    let kept = wijkpoort::inbox::get(store(&practice), &DEV_WIJKTEAM_ID.into(), &feedback)
        .unwrap()
        .unwrap();
    wijkpoort::envelope_batch::verify_stored(
        &wijkteam_signing.cert_der(),
        kept.envelope.as_bytes(),
        &kept.signature,
        kept.batch.as_ref(),
    )
    .unwrap();

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
    // Both logs' checkpoints verify with the signing certificates.
    verify_log(&setup, Role::Practice, &practice_signing.cert_der());
    verify_log(&setup, Role::Wijkteam, &wijkteam_signing.cert_der());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_certificate_of_another_organisation_is_refused_with_its_reason() {
    let mut setup = Setup::new().await;
    // In the gateway's own config: refused at start, naming the field and both
    // organisations.
    let path = setup.config_path(Role::Practice);
    let original = std::fs::read_to_string(&path).unwrap();
    give_signing_certificate(&setup, Role::Practice, "90000999");
    let e = wijkpoort::config::Config::load(&path)
        .err()
        .expect("refused");
    assert_eq!(e.field, "signing.certificate", "{e}");
    assert!(
        e.problem.contains("90000999") && e.problem.contains(DEV_PRACTICE_ID),
        "{e}"
    );
    std::fs::write(&path, original).unwrap();

    // From a peer: a caller presents, after its TLS certificate, a signing certificate
    // of another organisation and signs with it; the wijkteam refuses the message.
    let wijkteam = setup.start(Role::Wijkteam).await;
    let tls = setup.credentials(Role::Practice);
    let foreign = setup.issue(&LeafSpec::new("90000999", "Another practice", "other.test"));
    let presenting = Credentials {
        cert_pem: format!("{}{}", tls.cert_pem, foreign.cert_pem),
        key_pem: tls.key_pem.clone(),
    };
    let bytes = referral_envelope("ref-foreign-signer").to_bytes();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(
        rustls::pki_types::pem::PemObject::from_pem_slice(foreign.key_pem.as_bytes())
            .map(|k: rustls::pki_types::PrivatePkcs8KeyDer<'_>| k.secret_pkcs8_der().to_vec())
            .unwrap(),
    );
    let signature = Signer::from_pkcs8(key.secret_pkcs8_der())
        .unwrap()
        .for_certificate(&foreign.cert_der())
        .sign_encoded(&bytes)
        .unwrap();
    let answer = relay(
        setup.listener_addr(Role::Wijkteam),
        &setup.anchors_pem(),
        Some(&presenting),
        Some(&signature),
        bytes,
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(answer.body["error"], "bad_signature", "{:?}", answer.body);
    let message = answer.body["message"].as_str().unwrap();
    assert!(
        message.contains("is refused") && message.contains("90000999"),
        "{message}"
    );
    wijkteam.stop().await.unwrap();
}
