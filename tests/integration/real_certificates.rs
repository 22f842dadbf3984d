//! The whole flow on real-shaped certificates: a practice on a UZI-shaped RSA-4096 chain
//! (root → domain CA → UZI server CA → server certificate) and a wijkteam on a
//! PKIoverheid-shaped RSA chain, and a practice on the UZI chain with a wijkteam on the
//! ECDSA dev PKI. Consent, referral, feedback, the withdrawal's consent update, the
//! receipts, each stored envelope's proof under its batch signature, and `audit verify`
//! at both ends.

use std::path::Path;

use serde_json::json;
use wijkpoort::dev::pki::{write_real_pki, RsaKeys, Shape, DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};
use wijkpoort::envelope_batch::verify_stored;
use wijkpoort::signing;
use wijkpoort::store::T;

use crate::util::*;

/// How the two gateways' certificates are made.
#[derive(Clone, Copy)]
enum Pair {
    /// Practice on UZI (RSA-4096), wijkteam on PKIoverheid (RSA).
    UziAndPkioverheid,
    /// Practice on UZI (RSA-4096), wijkteam on the ECDSA P-256 dev PKI.
    UziAndEcdsa,
}

/// Puts the real shapes over the setup's dev kit; for [`Pair::UziAndEcdsa`] the wijkteam
/// keeps its ECDSA certificate and both gateways trust both roots.
fn certificates(setup: &Setup, pair: Pair) {
    let dir = setup.dir.path();
    let ecdsa_wijkteam = setup.credentials(Role::Wijkteam);
    let ecdsa_anchors = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let fixtures = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rsa"));
    let keys = RsaKeys::read_dir(fixtures).unwrap();
    write_real_pki(dir, Shape::Uzi, &keys).unwrap();
    let mut section = std::fs::read_to_string(dir.join("issuing_cas.toml")).unwrap();
    if let Pair::UziAndEcdsa = pair {
        std::fs::write(dir.join("wijkteam.pem"), &ecdsa_wijkteam.cert_pem).unwrap();
        std::fs::write(dir.join("wijkteam.key"), &ecdsa_wijkteam.key_pem).unwrap();
        let end = "-----END CERTIFICATE-----";
        let dev_ca = ecdsa_anchors.split_inclusive(end).next().unwrap();
        std::fs::write(dir.join("dev-ca.pem"), dev_ca).unwrap();
        let rsa_root = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        std::fs::write(dir.join("ca.pem"), format!("{rsa_root}\n{ecdsa_anchors}")).unwrap();
        section.push_str("\n[[issuing_cas]]\ncert = \"dev-ca.pem\"\nrule = \"dev\"\n");
    }
    for role in [Role::Practice, Role::Wijkteam] {
        let path = setup.config_path(role);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push('\n');
        text.push_str(&section);
        std::fs::write(&path, text).unwrap();
    }
}

/// The key type of a gateway's own certificate.
fn key_type(setup: &Setup, role: Role) -> signing::KeyType {
    signing::certificate_key(&setup.credentials(role).cert_der())
        .unwrap()
        .0
}

/// Checks the envelope `id` as both ends stored it: under a batch signature that names
/// the sender's certificate (kept in both stores), with a path that proves it.
fn assert_proven(
    sender: &wijkpoort::RunningGateway,
    receiver: &wijkpoort::RunningGateway,
    from: &str,
    id: &str,
) {
    let sent = wijkpoort::outbox::get(store(sender), id).unwrap().unwrap();
    let received = wijkpoort::inbox::get(store(receiver), &from.into(), id)
        .unwrap()
        .unwrap();
    assert_eq!(sent.envelope, received.envelope);
    for (what, signature, proof, kept_by) in [
        (
            "sent",
            sent.signature.clone().unwrap(),
            sent.batch.clone(),
            store(sender),
        ),
        (
            "received",
            received.signature.clone(),
            received.batch.clone(),
            store(receiver),
        ),
    ] {
        let proof = proof.unwrap_or_else(|| panic!("the {what} envelope has no batch path"));
        let fp = signing::named_certificate(&signature).expect("a named certificate");
        let cert = kept_by
            .get(T::Certificates, fp.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("the {what} side keeps the signer's certificate"));
        verify_stored(&cert, sent.envelope.as_bytes(), &signature, Some(&proof)).unwrap();
        assert!(
            verify_stored(&cert, b"{\"id\":\"other\"}", &signature, Some(&proof)).is_err(),
            "the proof holds for these bytes only"
        );
    }
    // The receiver's receipt, kept by the sender, verifies against the receiver's
    // certificate.
    let receipt = sent.receipt.expect("a receipt");
    let fp = signing::named_certificate(&receipt.signature).unwrap();
    let receiver_cert = store(sender)
        .get(T::Certificates, fp.as_bytes())
        .unwrap()
        .unwrap();
    receipt
        .verify(id, sent.envelope.as_bytes(), &receiver_cert)
        .unwrap();
}

async fn whole_flow(pair: Pair) {
    let mut setup = Setup::new().await;
    certificates(&setup, pair);
    assert_eq!(key_type(&setup, Role::Practice), signing::KeyType::Rsa);
    let expected_wijkteam_key = match pair {
        Pair::UziAndPkioverheid => signing::KeyType::Rsa,
        Pair::UziAndEcdsa => signing::KeyType::P256,
    };
    assert_eq!(key_type(&setup, Role::Wijkteam), expected_wijkteam_key);
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;

    // Consent and referral.
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let referral = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &referral).await;
    assert_proven(&practice, &wijkteam, DEV_PRACTICE_ID, &referral);

    // Feedback back to the practice.
    let mut case_system = setup.client(Role::Wijkteam, "consulent");
    let feedback = submit(&mut case_system, &feedback_submission(&referral, &consent)).await;
    wait_delivered(&mut case_system, &feedback).await;
    assert_proven(&wijkteam, &practice, DEV_WIJKTEAM_ID, &feedback);

    // The withdrawal travels as a consent update; the wijkteam's feedback then stops.
    let (code, answer) = his
        .post(
            &format!("/v1/consents/{consent}/withdraw"),
            &json!({"reason": "ouders willen het zelf regelen"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{answer}");
    let updates: Vec<String> = answer["consent_updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(updates.len(), 1, "{answer}");
    wait_delivered(&mut his, &updates[0]).await;
    assert_proven(&practice, &wijkteam, DEV_PRACTICE_ID, &updates[0]);
    let (code, refused) = case_system
        .post("/v1/messages", &feedback_submission(&referral, &consent))
        .await
        .unwrap();
    assert_eq!(code, 422, "{refused}");
    assert_eq!(refused["error"], "consent_withdrawn", "{refused}");

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();

    // Offline, at both ends: the audit log is intact, and each envelope is proven on its
    // own by `audit prove` (the chain checked against the config's trust anchors).
    for (role, ids) in [
        (
            Role::Practice,
            vec![referral.clone(), feedback.clone(), updates[0].clone()],
        ),
        (
            Role::Wijkteam,
            vec![referral.clone(), feedback.clone(), updates[0].clone()],
        ),
    ] {
        let config = setup.config_path(role).display().to_string();
        let code = wijkpoort::audit::cli::run_words(["--config", &config, "verify"]).await;
        assert_eq!(code, 0, "audit verify at the {}", role.name());
        for id in &ids {
            let code =
                wijkpoort::audit::cli::run_words(["--config", &config, "prove", "--message", id])
                    .await;
            assert_eq!(code, 0, "audit prove {id} at the {}", role.name());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_between_a_uzi_rsa_practice_and_a_pkioverheid_rsa_wijkteam() {
    whole_flow(Pair::UziAndPkioverheid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_between_a_uzi_rsa_practice_and_an_ecdsa_wijkteam() {
    whole_flow(Pair::UziAndEcdsa).await;
}
