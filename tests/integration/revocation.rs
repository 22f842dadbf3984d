//! Revocation: a certificate on its CA's revocation list is refused in the handshake, a
//! kept-alive connection whose certificate a reloaded list revokes is refused at its next
//! request, and a list past its nextUpdate refuses its CA's certificates (hard fail)
//! unless a grace period is configured.

use chrono::{Duration, Utc};
use wijkpoort::audit::Event;
use wijkpoort::dev::pki::DEV_PRACTICE_ID;

use crate::util::*;

/// Re-issues the practice's certificate from the test CA (whose key the test holds, so
/// it can revoke it), and points the wijkteam at a CRL file of that CA.
fn practice_under_test_ca(setup: &Setup, grace_hours: u64) -> (Credentials, std::path::PathBuf) {
    let issued = setup.issue(&practice_spec());
    std::fs::write(setup.kit.pki.cert("practice"), &issued.cert_pem).unwrap();
    std::fs::write(setup.kit.pki.key("practice"), &issued.key_pem).unwrap();
    let crl = setup.kit.dir.join("test-ca.crl.pem");
    let path = setup.config_path(Role::Wijkteam);
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
