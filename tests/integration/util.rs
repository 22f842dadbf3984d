//! What only the integration tests need, on top of the shared [`crate::fixture`]: the
//! fictitious child's consent and messages for the local API, hand-made envelopes for
//! the mTLS listener, and running cases of a table each on its own.

#![allow(dead_code)] // not every test file uses every helper

use std::future::Future;

use serde_json::{json, Value};

use wijkpoort::client::LocalApiClient;
use wijkpoort::dev::pki::{LeafSpec, DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};
use wijkpoort::message::Envelope;

pub use crate::fixture::*;

// ---------------------------------------------------------------------------------
// Local API

/// The day consents are judged on (the gateway's local date).
pub fn today() -> chrono::NaiveDate {
    chrono::Local::now().date_naive()
}

/// The fictitious child's birth date: ten years old, so the parents consent alone.
pub fn birth_date() -> chrono::NaiveDate {
    today() - chrono::Duration::days(10 * 365 + 100)
}

/// Records, at the practice, the parents' consent to referral and feedback with the
/// wijkteam for the fictitious child; returns the consent id.
pub async fn record_consent(his: &mut LocalApiClient) -> String {
    let consent = json!({
        "child": {"bsn": BSN, "birth_date": birth_date()},
        "performers": [{"role": "parent", "name": "M. de Vries"}],
        "scope": {"types": ["referral", "feedback"], "recipient": DEV_WIJKTEAM_ID},
        "valid_from": today(),
        "valid_until": today() + chrono::Duration::days(365),
        "evidence": "mondeling tijdens consult"
    });
    let (code, answer) = his.post("/v1/consents", &consent).await.unwrap();
    assert_eq!(code, 201, "consent refused: {answer}");
    answer["consent_id"].as_str().unwrap().to_string()
}

/// A referral submission under `consent_id` for the practice's local API.
pub fn referral_submission(consent_id: &str) -> Value {
    json!({
        "type": "referral",
        "to": "wijkteam",
        "consent_id": consent_id,
        "subject": {"bsn": BSN, "name": "Sanne (fictitious)", "birth_date": birth_date()},
        "body": {"request_for_help": "Ouders vragen hulp bij slaapproblemen.", "urgency": "soon"}
    })
}

/// A feedback submission under `consent_id` for the wijkteam's local API.
pub fn feedback_submission(referral_id: &str, consent_id: &str) -> Value {
    json!({
        "type": "feedback",
        "to": "practice",
        "consent_id": consent_id,
        "subject": {"bsn": BSN},
        "body": {"referral_id": referral_id, "status": "intake_planned", "date": "2026-12-01"}
    })
}

/// Records a consent and submits `n` referrals under it; returns their ids.
pub async fn submit_referrals(his: &mut LocalApiClient, n: usize) -> Vec<String> {
    let consent = record_consent(his).await;
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(submit(his, &referral_submission(&consent)).await);
    }
    ids
}

// ---------------------------------------------------------------------------------
// Hand-made envelopes

/// A valid referral envelope from the practice to the wijkteam.
pub fn referral_envelope(id: &str) -> Envelope {
    serde_json::from_value(json!({
        "id": id, "type": "referral", "schema_version": 1,
        "created_at": "2026-11-23T10:00:00Z",
        "from": DEV_PRACTICE_ID, "to": DEV_WIJKTEAM_ID,
        "consent": {
            "id": "consent-test-1", "subject_bsn": BSN,
            "types": ["referral", "feedback"], "recipient": DEV_WIJKTEAM_ID,
            "valid_from": today(), "valid_until": today() + chrono::Duration::days(365),
            "status": "active"
        },
        "subject": {"bsn": BSN, "birth_date": birth_date()},
        "body": {"request_for_help": "help at home", "urgency": "soon"}
    }))
    .unwrap()
}

/// A valid feedback envelope (from the wijkteam to the practice).
pub fn feedback_envelope(id: &str) -> Envelope {
    serde_json::from_value(json!({
        "id": id, "type": "feedback", "schema_version": 1,
        "created_at": "2026-11-23T10:00:00Z",
        "from": DEV_WIJKTEAM_ID, "to": DEV_PRACTICE_ID,
        "consent": {"id": "consent-test-1"},
        "subject": {"bsn": BSN},
        "body": {"referral_id": "ref-1", "status": "received"}
    }))
    .unwrap()
}

/// The default leaf spec for a certificate that claims the practice's identity.
pub fn practice_spec() -> LeafSpec {
    LeafSpec::new(
        DEV_PRACTICE_ID,
        "Huisartsenpraktijk (test)",
        "practice.test",
    )
}

// ---------------------------------------------------------------------------------
// Tables of cases

/// Runs each named case as a task of its own, all of them even when some fail, then
/// fails naming every case that failed and why.
pub async fn run_cases<F>(cases: impl IntoIterator<Item = (&'static str, F)>)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut failed = Vec::new();
    for (name, case) in cases {
        if let Err(e) = tokio::spawn(case).await {
            let why = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into()),
                Err(e) => e.to_string(),
            };
            failed.push(format!("case {name}: {why}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
