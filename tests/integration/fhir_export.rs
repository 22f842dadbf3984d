//! The auditor's FHIR export as an IHE ATNA audit repository reads it: Source and
//! Destination agents with their DICOM role codes on Export and Import events, the
//! network address of every agent that has one (a sent message's Destination: the peer's
//! configured address the relay connected to), DICOM subtypes on security alerts, the
//! child on a refused consent, `purposeOfEvent` — and the bundles accepted by an
//! independent FHIR R4 model library (`fhir.resources` 6.x, R4 4.0.1) where it can be
//! installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use wijkpoort::dev::pki::{DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_wijkpoort");
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";

/// `wijkpoort audit --config CONFIG export --format fhir` on a stopped gateway's store.
fn export(config: &Path) -> Value {
    audit_fhir(config, "export")
}

/// `wijkpoort audit --config CONFIG COMMAND --format fhir`.
fn audit_fhir(config: &Path, command: &str) -> Value {
    let out = Command::new(BIN)
        .args(["audit", "--config"])
        .arg(config)
        .args([command, "--format", "fhir"])
        .output()
        .unwrap();
    assert!(out.status.success(), "export: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `wijkpoort audit --config CONFIG ARGS… --format json`.
fn audit_json(config: &Path, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(["audit", "--config"])
        .arg(config)
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "audit {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn events(bundle: &Value) -> Vec<&Value> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect()
}

fn subtype(ev: &Value, name: &str) -> bool {
    ev["subtype"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["code"] == name)
}

/// The agent of `ev` with the DICOM role `code` (110153 Source, 110152 Destination).
fn agent_with_role<'a>(ev: &'a Value, code: &str) -> &'a Value {
    ev["agent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"]["coding"][0]["system"] == DCM && a["type"]["coding"][0]["code"] == code)
        .unwrap_or_else(|| panic!("no agent with role {code} in {ev:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fhir_export_is_complete_for_an_atna_repository() {
    let (setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let referral = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &referral).await;
    // A consent the WGBO refuses (a ten-year-old alone), and a refused submission.
    let (code, answer) = his
        .post(
            "/v1/consents",
            &json!({
                "child": {"bsn": BSN, "birth_date": birth_date()},
                "performers": [{"role": "child", "name": "Sanne de Vries"}],
                "scope": {"types": ["referral"], "recipient": DEV_WIJKTEAM_ID},
                "valid_from": today(), "valid_until": today() + chrono::Duration::days(30),
                "evidence": "mondeling tijdens consult"
            }),
        )
        .await
        .unwrap();
    assert_eq!(code, 422, "{answer}");
    let mut bad = referral_submission(&consent);
    bad["consent_id"] = json!("consent-that-does-not-exist");
    let (code, answer) = his.post("/v1/messages", &bad).await.unwrap();
    assert!(code >= 400, "{answer}");
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();

    let at_practice = export(&setup.config_path(Role::Practice));
    let at_wijkteam = export(&setup.config_path(Role::Wijkteam));
    let consents = audit_fhir(&setup.config_path(Role::Practice), "consents");
    for text in [
        at_practice.to_string(),
        at_wijkteam.to_string(),
        consents.to_string(),
    ] {
        for personal in [BSN, "Sanne", "de Vries", "mondeling tijdens consult"] {
            assert!(!text.contains(personal), "the export holds {personal:?}");
        }
    }

    for ev in events(&at_practice).into_iter().chain(events(&at_wijkteam)) {
        // Every event says why it happened.
        let purpose = &ev["purposeOfEvent"][0]["coding"][0];
        assert_eq!(
            purpose["system"], "http://terminology.hl7.org/CodeSystem/v3-ActReason",
            "{ev:#}"
        );
        // Every agent with a network address names it, as an IP address (type 2).
        for agent in ev["agent"].as_array().unwrap() {
            if let Some(network) = agent.get("network") {
                assert_eq!(network["type"], "2", "{agent}");
                assert!(
                    network["address"]
                        .as_str()
                        .unwrap()
                        .parse::<std::net::IpAddr>()
                        .is_ok(),
                    "{agent}"
                );
            }
        }
        // Security alerts carry a DICOM subtype besides the gateway's own.
        if ev["type"]["code"] == "110113" {
            let dicom = ev["subtype"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["system"] == DCM);
            assert!(dicom, "a security alert without a DICOM subtype: {ev:#}");
        }
    }

    // Export at the practice: Source is the practice, Destination the wijkteam.
    let delivered = events(&at_practice)
        .into_iter()
        .find(|ev| subtype(ev, "message_delivered"))
        .unwrap();
    assert_eq!(delivered["type"]["code"], "110106");
    assert_eq!(
        agent_with_role(delivered, "110153")["who"]["identifier"]["value"],
        DEV_PRACTICE_ID
    );
    let destination = agent_with_role(delivered, "110152");
    assert_eq!(destination["who"]["identifier"]["value"], DEV_WIJKTEAM_ID);
    // The relay sent it to the wijkteam's configured address: the audit record keeps
    // it (host and port), the export names the host as the Destination's network.
    assert_eq!(
        destination["network"],
        json!({ "address": "127.0.0.1", "type": "2" }),
        "{delivered:#}"
    );
    let stored = audit_json(
        &setup.config_path(Role::Practice),
        &["records", "--message-id", &referral],
    );
    let stored_delivered = stored["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event"] == "message_delivered")
        .unwrap_or_else(|| panic!("no message_delivered record: {stored:#}"));
    assert_eq!(
        stored_delivered["peer_address"],
        format!("127.0.0.1:{}", setup.listener_addr(Role::Wijkteam).port())
    );
    // What was not sent to the peer (accepted, queued) has no address of it.
    for r in stored["records"].as_array().unwrap() {
        if r["event"] != "message_delivered" {
            assert!(r.get("peer_address").is_none(), "{r}");
        }
    }
    assert_eq!(delivered["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");

    // Import at the wijkteam: the sender (the practice, from its address) is Source,
    // the wijkteam Destination.
    let received = events(&at_wijkteam)
        .into_iter()
        .find(|ev| subtype(ev, "message_received"))
        .unwrap();
    assert_eq!(received["type"]["code"], "110107");
    let sender = agent_with_role(received, "110153");
    assert_eq!(sender["who"]["identifier"]["value"], DEV_PRACTICE_ID);
    assert_eq!(sender["network"]["address"], "127.0.0.1");
    assert_eq!(
        agent_with_role(received, "110152")["who"]["identifier"]["value"],
        DEV_WIJKTEAM_ID
    );

    // The refused submission is a Use of Restricted Function; the refused consent names
    // the child by pseudonym.
    let refused = events(&at_practice)
        .into_iter()
        .find(|ev| subtype(ev, "message_refused"))
        .unwrap();
    assert!(subtype(refused, "110132"), "{refused:#}");
    let refused_consent = events(&at_practice)
        .into_iter()
        .find(|ev| subtype(ev, "consent_recorded") && ev["outcome"] == "4")
        .unwrap();
    let patient = refused_consent["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["role"]["code"] == "1")
        .unwrap_or_else(|| panic!("the refused consent names no child: {refused_consent:#}"));
    assert_eq!(
        patient["what"]["identifier"]["system"],
        "urn:wijkpoort:subject-pseudonym"
    );

    // The auditor's Consent: the practice as organization, the parent by relationship
    // (no name), the WGBO rule, the evidence by title and hash only.
    let recorded = events(&consents)
        .into_iter()
        .find(|c| c["identifier"][0]["value"] == json!(consent))
        .unwrap();
    assert_eq!(
        recorded["organization"][0]["identifier"]["value"],
        DEV_PRACTICE_ID
    );
    assert_eq!(recorded["performer"][0]["display"], "parent");
    let parent = &recorded["contained"][0];
    assert_eq!(parent["resourceType"], "RelatedPerson");
    assert_eq!(parent["relationship"][0]["coding"][0]["code"], "PRN");
    assert!(parent.get("name").is_none(), "{parent}");
    assert!(
        recorded["policyRule"]["text"]
            .as_str()
            .unwrap()
            .starts_with("WGBO (art. 7:465 lid 1 BW)"),
        "{recorded:#}"
    );
    let evidence = &recorded["sourceAttachment"];
    assert!(
        evidence["hash"].as_str().is_some_and(|h| h.len() == 28),
        "{evidence}"
    );
    assert!(evidence.get("data").is_none() && evidence["title"].is_string());

    // An independent R4 model library reads the bundles.
    let dir = tempfile::tempdir().unwrap();
    match fhir_resources(dir.path()) {
        Some(python) => {
            for (name, bundle) in [
                ("practice", &at_practice),
                ("wijkteam", &at_wijkteam),
                ("consents", &consents),
            ] {
                let path = dir.path().join(format!("{name}.json"));
                std::fs::write(&path, bundle.to_string()).unwrap();
                let out = Command::new(&python)
                    .args([
                        "-c",
                        "import sys; from fhir.resources.bundle import Bundle; \
                         b = Bundle.parse_file(sys.argv[1]); \
                         print(len(b.entry), 'entries')",
                    ])
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "fhir.resources refuses the {name}'s bundle:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        None => eprintln!(
            "fhir.resources 6.x could not be installed (no python3 venv or no PyPI): the bundles were checked by the Rust assertions only"
        ),
    }
}

/// A Python in a fresh virtual environment with `fhir.resources` 6.x (FHIR R4 4.0.1;
/// it needs pydantic 1), or `None` where that cannot be made.
fn fhir_resources(dir: &Path) -> Option<PathBuf> {
    let venv = dir.join("venv");
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .ok()?;
    if !made.status.success() {
        return None;
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "fhir.resources>=6,<7",
            "pydantic<2",
        ])
        .output()
        .ok()?;
    if !pip.status.success() {
        eprintln!("pip: {}", String::from_utf8_lossy(&pip.stderr));
        return None;
    }
    Some(venv.join("bin/python"))
}
