//! One sender signature per relay batch: a batch of one and a batch of 256 are each
//! stored under one signature that proves every envelope on its own (`audit prove`);
//! a tampered path, a tampered root signature and an envelope moved between batches are
//! refused with a code that says so, and nothing refused is stored.

use serde_json::Value;
use wijkpoort::dev::pki::{DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};
use wijkpoort::envelope_batch::verify_stored;
use wijkpoort::merkle::BatchProof;
use wijkpoort::store::T;

use crate::util::*;

const PAIR: (&str, &str) = (DEV_PRACTICE_ID, DEV_WIJKTEAM_ID);

fn envelopes(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| referral_envelope(&format!("{prefix}-{i}")).to_bytes())
        .collect()
}

/// Each message's answer in a batch answer: `Ok(receipt)` or `Err((status, code))`.
fn answers(batch: &Answer) -> Vec<Result<Value, (u64, String)>> {
    assert_eq!(batch.status, 200, "{}", batch.body);
    batch.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| match r.get("receipt") {
            Some(receipt) => Ok(receipt.clone()),
            None => Err((
                r["status"].as_u64().unwrap(),
                r["refusal"]["error"].as_str().unwrap().to_string(),
            )),
        })
        .collect()
}

async fn post(
    setup: &Setup,
    signature: Option<&wijkpoort::envelope_batch::BatchSignature>,
    items: &[(Option<&BatchProof>, &[u8])],
) -> Answer {
    post_to_listener(
        setup.listener_addr(Role::Wijkteam),
        RELAY_BATCH,
        &setup.anchors_pem(),
        Some(&setup.credentials(Role::Practice)),
        batch_body(signature, items),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_one_and_a_batch_of_256_are_each_stored_under_one_provable_signature() {
    let mut setup = Setup::new().await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let practice = setup.credentials(Role::Practice);
    for (prefix, n) in [("one", 1usize), ("full", 256)] {
        let batch = envelopes(prefix, n);
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let answer = relay_batch(&setup, Role::Wijkteam, &practice, PAIR, &refs)
            .await
            .unwrap();
        let results = answers(&answer);
        assert_eq!(results.len(), n);
        assert!(results.iter().all(Result::is_ok), "{}", answer.body);

        let mut signatures = std::collections::HashSet::new();
        for (i, bytes) in batch.iter().enumerate() {
            let id = format!("{prefix}-{i}");
            let kept = wijkpoort::inbox::get(store(&wijkteam), &DEV_PRACTICE_ID.into(), &id)
                .unwrap()
                .unwrap();
            assert_eq!(kept.envelope.as_bytes(), bytes.as_slice());
            let proof = kept.batch.as_ref().expect("kept with its path");
            assert_eq!(
                (proof.proof.size as usize, proof.proof.index as usize),
                (n, i)
            );
            verify_stored(&practice.cert_der(), bytes, &kept.signature, Some(proof)).unwrap();
            signatures.insert(kept.signature.clone());
        }
        assert_eq!(signatures.len(), 1, "one signature for the whole batch");
        // Stored once: each record holds a reference to the batch's signature and to its
        // receipt's, and the texts are in the signatures tree, one of each per batch.
        for (_, value) in store(&wijkteam).scan_prefix(T::Received, b"").unwrap() {
            let as_stored = wijkpoort::inbox::decode(&value).unwrap();
            assert!(as_stored.signature.starts_with("stored:sha256:"));
            assert!(as_stored.receipt.signature.starts_with("stored:sha256:"));
            let text = signatures.iter().next().unwrap();
            assert!(!String::from_utf8_lossy(&value).contains(text.as_str()));
        }
        let batches = if prefix == "one" { 1 } else { 2 };
        assert_eq!(store(&wijkteam).tree(T::Signatures).len(), 2 * batches);
    }
    // The practice's certificate is kept by the fingerprint the signature names.
    let fp = wijkpoort::signing::fingerprint(&practice.cert_der());
    assert!(store(&wijkteam)
        .get(T::Certificates, fp.as_bytes())
        .unwrap()
        .is_some());
    wijkteam.stop().await.unwrap();

    // Offline, one envelope at a time, with the config's trust anchors.
    let config = setup.config_path(Role::Wijkteam).display().to_string();
    for id in ["one-0", "full-0", "full-137", "full-255"] {
        let code =
            wijkpoort::audit::cli::run_words(["--config", &config, "prove", "--message", id]).await;
        assert_eq!(code, 0, "prove {id}");
    }
    let code =
        wijkpoort::audit::cli::run_words(["--config", &config, "prove", "--message", "never-sent"])
            .await;
    assert_eq!(code, 2, "an unknown message cannot be proven");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_path_or_root_signature_or_a_moved_envelope_is_refused_with_its_code() {
    let mut setup = Setup::new().await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let practice = setup.credentials(Role::Practice);

    // A tampered path: that envelope alone is refused; the others are stored.
    let batch = envelopes("path", 3);
    let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
    let (signed, proofs) = sign_batch(&practice, PAIR.0, PAIR.1, &refs);
    let mut bad = proofs[1].clone();
    bad.path[0] = "00".repeat(32);
    let answer = post(
        &setup,
        Some(&signed),
        &[
            (Some(&proofs[0]), refs[0]),
            (Some(&bad), refs[1]),
            (Some(&proofs[2]), refs[2]),
        ],
    )
    .await;
    let results = answers(&answer);
    assert!(results[0].is_ok() && results[2].is_ok(), "{}", answer.body);
    assert_eq!(results[1], Err((422, "batch_path_invalid".into())));
    assert_eq!(received_ids(store(&wijkteam)).len(), 2);

    // A tampered root signature: the whole batch is refused, nothing stored.
    let batch = envelopes("sig", 2);
    let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
    let (mut signed, proofs) = sign_batch(&practice, PAIR.0, PAIR.1, &refs);
    let last = signed.signature.pop().unwrap();
    signed.signature.push(if last == '0' { '1' } else { '0' });
    let items = [(Some(&proofs[0]), refs[0]), (Some(&proofs[1]), refs[1])];
    let results = answers(&post(&setup, Some(&signed), &items).await);
    assert_eq!(results, vec![Err((422, "bad_signature".into())); 2]);
    // The same with the root replaced (the signature no longer covers it).
    let (mut signed, _) = sign_batch(&practice, PAIR.0, PAIR.1, &refs);
    signed.root = "11".repeat(32);
    let results = answers(&post(&setup, Some(&signed), &items).await);
    assert_eq!(results, vec![Err((422, "bad_signature".into())); 2]);
    // A path without any batch signature.
    let results = answers(&post(&setup, None, &items).await);
    assert_eq!(results, vec![Err((400, "missing_signature".into())); 2]);
    assert_eq!(received_ids(store(&wijkteam)).len(), 2);

    // Moved: an envelope of batch A, with its path, sent inside batch B (same size).
    let a = envelopes("a", 4);
    let b = envelopes("b", 4);
    let a_refs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
    let b_refs: Vec<&[u8]> = b.iter().map(Vec::as_slice).collect();
    let (_, a_proofs) = sign_batch(&practice, PAIR.0, PAIR.1, &a_refs);
    let (b_signed, b_proofs) = sign_batch(&practice, PAIR.0, PAIR.1, &b_refs);
    let results = answers(
        &post(
            &setup,
            Some(&b_signed),
            &[
                (Some(&b_proofs[0]), b_refs[0]),
                (Some(&a_proofs[2]), a_refs[2]),
            ],
        )
        .await,
    );
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(results[1], Err((422, "batch_path_invalid".into())));
    // With the path of B's own slot, A's envelope still does not fit B's root.
    let results = answers(&post(&setup, Some(&b_signed), &[(Some(&b_proofs[2]), a_refs[2])]).await);
    assert_eq!(results, vec![Err((422, "batch_path_invalid".into()))]);
    let ids = received_ids(store(&wijkteam));
    assert!(!ids.contains(&"a-2".to_string()), "{ids:?}");

    // The refusal is audited with its code.
    wait_for_refusal(
        store(&wijkteam),
        wijkpoort::audit::Event::MessageRefused,
        "batch_path_invalid",
    )
    .await;
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_resent_in_another_batch_is_stored_once_with_the_proof_it_first_came_with() {
    let mut setup = Setup::new().await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let practice = setup.credentials(Role::Practice);
    let first = envelopes("resent", 2);
    let again = envelopes("resent", 3);
    let first_refs: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
    let again_refs: Vec<&[u8]> = again.iter().map(Vec::as_slice).collect();
    let a = answers(
        &relay_batch(&setup, Role::Wijkteam, &practice, PAIR, &first_refs)
            .await
            .unwrap(),
    );
    let b = answers(
        &relay_batch(&setup, Role::Wijkteam, &practice, PAIR, &again_refs)
            .await
            .unwrap(),
    );
    // The resent two are answered with their first receipts; the new one with its own.
    assert_eq!(b[0], a[0]);
    assert_eq!(b[1], a[1]);
    assert!(b[2].is_ok());
    assert_eq!(received_ids(store(&wijkteam)).len(), 3);
    let kept = wijkpoort::inbox::get(store(&wijkteam), &DEV_PRACTICE_ID.into(), "resent-1")
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.batch.as_ref().unwrap().proof.size,
        2,
        "the first batch's proof"
    );
    verify_stored(
        &practice.cert_der(),
        &first[1],
        &kept.signature,
        kept.batch.as_ref(),
    )
    .unwrap();
    wijkteam.stop().await.unwrap();
}
