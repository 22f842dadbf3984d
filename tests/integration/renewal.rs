//! Signatures outlive certificates: after the practice's certificate is renewed (a new
//! key), the audit log's earlier checkpoints, and the envelopes the wijkteam stored
//! before, still verify — each against the certificate that was current when it signed,
//! which the stores kept by fingerprint.

use wijkpoort::dev::pki::DEV_PRACTICE_ID;
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
    signing::verify(&cert, kept.envelope.as_bytes(), &kept.signature).unwrap();
    assert!(signing::verify(
        &renewed.cert_der(),
        kept.envelope.as_bytes(),
        &kept.signature
    )
    .is_err());
    wijkteam.stop().await.unwrap();
}
