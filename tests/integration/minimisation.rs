//! Data minimisation (issue 4) end to end: what the policy removes never leaves the
//! practice and never sits in its outbox; the filtering is audited by path, never by
//! value; the wijkteam refuses a message that carries more than its policy allows even
//! when it was signed by a real peer; an anonymous consultation arrives anonymous; and a
//! gateway with a broken policy file does not start.

use std::path::Path;

use serde_json::{json, Value};
use wijkpoort::audit::{Event, Outcome};
use wijkpoort::dev::devkit::{self, Addresses};
use wijkpoort::dev::pki::DEV_PRACTICE_ID;
use wijkpoort::store::T;
use wijkpoort::Config;

use crate::util::*;

/// A second fictitious BSN (elfproef-valid), written into free text.
const BSN_IN_TEXT: &str = "123456782";
const PHONE: &str = "06-12345678";
const EMAIL: &str = "m.devries@example.nl";

/// What the wijkteam's case system sees of a received message.
async fn inbox_envelope(setup: &Setup, id: &str) -> Value {
    let mut case_system = setup.client(Role::Wijkteam, "k.bakker");
    let (code, inbox) = case_system.get("/v1/inbox").await.unwrap();
    assert_eq!(code, 200, "{inbox}");
    inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not in the inbox: {inbox}"))["envelope"]
        .clone()
}

/// Every audit record of a store, as one JSON text (to look for values that must not
/// be there).
fn audit_text(store: &wijkpoort::store::Store) -> String {
    serde_json::to_string(&audit_records(store)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_arrives_without_what_the_policy_removes_and_the_filtering_is_audited_by_path_only(
) {
    let (setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let mut submission = referral_submission(&consent);
    let body = submission["body"].as_object_mut().unwrap();
    body.insert(
        "request_for_help".into(),
        json!(format!(
            "Moeder belt op {PHONE} of mailt {EMAIL}; broertje heeft BSN {BSN_IN_TEXT}. Slaapt slecht."
        )),
    );
    body.insert("postcode".into(), json!("3511 AB"));
    body.insert("medication".into(), json!(["Methylfenidaat 10 mg"]));
    body.insert(
        "diagnoses".into(),
        json!([{"code": "F90.0", "text": "ADHD"}]),
    );
    body.insert("support_profile".into(), json!({"estimate": "intensief"}));
    body.insert("huisbezoek_notitie".into(), json!("vader werkloos"));
    body.insert(
        "parent_contact".into(),
        json!({"name": "M. de Vries", "phone": PHONE}),
    );

    let id = submit(&mut his, &submission).await;
    wait_delivered(&mut his, &id).await;

    // What arrived: the purpose's fields, scrubbed and truncated; nothing medical, no
    // support-profile estimate, nothing unnamed.
    let arrived = inbox_envelope(&setup, &id).await;
    let body = arrived["body"].as_object().unwrap();
    let mut fields: Vec<&str> = body.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(
        fields,
        ["parent_contact", "postcode", "request_for_help", "urgency"],
        "{arrived}"
    );
    assert_eq!(body["postcode"], "3511");
    let text = body["request_for_help"].as_str().unwrap();
    assert_eq!(
        text,
        "Moeder belt op [telefoon] of mailt [e-mail]; broertje heeft BSN [bsn]. Slaapt slecht."
    );
    // The contact of the parents is there for the wijkteam to use: kept, not scrubbed.
    assert_eq!(body["parent_contact"]["phone"], PHONE);
    assert_eq!(arrived["subject"]["bsn"], BSN);

    // The outbox never held what was removed.
    let sent = wijkpoort::outbox::get(store(&practice), &id)
        .unwrap()
        .unwrap();
    for value in ["Methylfenidaat", "ADHD", "intensief", "werkloos", "3511 AB"] {
        assert!(!sent.envelope.contains(value), "{value} in the outbox");
    }
    assert!(!sent.envelope.contains(BSN_IN_TEXT));

    // The audit record of the step names every removed or changed path and no value.
    let store = store(&practice);
    let filtered = wait_for_audit(store, "a message_filtered audit record", |r| {
        r.event.event == Event::MessageFiltered && r.event.message_id.as_deref() == Some(&*id)
    })
    .await;
    assert_eq!(filtered.event.outcome, Outcome::Success);
    let mut changed = filtered.event.changed_fields.clone();
    changed.sort();
    assert_eq!(
        changed,
        [
            "body.diagnoses (drop)",
            "body.huisbezoek_notitie (drop:unnamed)",
            "body.medication (drop)",
            "body.postcode (truncate:4)",
            "body.request_for_help (scrub)",
            "body.support_profile (drop)",
        ]
    );
    let log = audit_text(store);
    for value in [
        "Methylfenidaat",
        "F90.0",
        "ADHD",
        "intensief",
        "werkloos",
        "3511 AB",
        PHONE,
        EMAIL,
        BSN_IN_TEXT,
        BSN,
    ] {
        assert!(!log.contains(value), "{value} in the practice's audit log");
    }

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

/// Relays a referral signed with the practice's own key and presented with its own
/// certificate, carrying what the practice's filter would have removed, and asserts
/// that the wijkteam refuses it naming `paths`, stores nothing, and audits the paths
/// without the values.
async fn assert_crafted_referral_refused(
    setup: &Setup,
    wijkteam: &wijkpoort::RunningGateway,
    id: &str,
    extra: Value,
    paths: &[&str],
    secret: &str,
) {
    let mut envelope = referral_envelope(id);
    for (k, v) in extra.as_object().unwrap() {
        envelope.body.insert(k.clone(), v.clone());
    }

    let answer = relay_signed(
        setup,
        Role::Wijkteam,
        &setup.credentials(Role::Practice),
        &envelope.to_bytes(),
    )
    .await
    .unwrap();

    assert_eq!(answer.status, 422, "{id}: {:?}", answer.body);
    assert_eq!(
        answer.body["error"], "policy_violation",
        "{:?}",
        answer.body
    );
    let named = answer.body["field"].as_str().unwrap_or_default();
    for path in paths {
        assert!(
            named.contains(path),
            "{id}: {path} not named: {:?}",
            answer.body
        );
    }
    let store = store(wijkteam);
    assert_nothing_stored(store);
    assert_eq!(store.tree(T::ConsentEvents).len(), 0, "nothing mirrored");
    let refusal = audit_records(store)
        .into_iter()
        .find(|r| {
            r.event.event == Event::MessageRefused && r.event.message_id.as_deref() == Some(id)
        })
        .unwrap_or_else(|| panic!("{id}: no refusal audit record"));
    assert_eq!(refusal.event.peer.as_deref(), Some(DEV_PRACTICE_ID));
    let reason = refusal.event.reason.unwrap_or_default();
    assert!(reason.starts_with("policy_violation: "), "{reason}");
    for path in paths {
        assert!(reason.contains(path), "{id}: {path} not audited: {reason}");
    }
    assert!(
        !audit_text(store).contains(secret),
        "{secret} in the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wijkteam_refuses_a_referral_crafted_past_the_senders_filter() {
    let mut setup = Setup::new().await;
    let wijkteam = setup.start(Role::Wijkteam).await;

    assert_crafted_referral_refused(
        &setup,
        &wijkteam,
        "ref-with-medication",
        json!({"medication": ["Methylfenidaat 10 mg"]}),
        &["body.medication"],
        "Methylfenidaat",
    )
    .await;
    assert_crafted_referral_refused(
        &setup,
        &wijkteam,
        "ref-with-phone-in-text",
        json!({"request_for_help": format!("Bel moeder op {PHONE}")}),
        &["body.request_for_help"],
        PHONE,
    )
    .await;
    assert_crafted_referral_refused(
        &setup,
        &wijkteam,
        "ref-with-bsn-in-text-and-a-full-postcode",
        json!({"request_for_help": format!("Zusje {BSN_IN_TEXT} ook"), "postcode": "3511 AB"}),
        &["body.request_for_help", "body.postcode"],
        BSN_IN_TEXT,
    )
    .await;
    assert_crafted_referral_refused(
        &setup,
        &wijkteam,
        "ref-with-an-unnamed-field",
        json!({"school_report": "onvoldoende"}),
        &["body.school_report"],
        "onvoldoende",
    )
    .await;

    // The same envelope without the extras is accepted: the refusals were the policy's.
    let answer = relay_signed(
        &setup,
        Role::Wijkteam,
        &setup.credentials(Role::Practice),
        &referral_envelope("ref-within-policy").to_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);

    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consultation_arrives_without_any_subject_and_with_an_age_band_for_the_age() {
    let (setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let submission = json!({
        "type": "consultation",
        "to": "wijkteam",
        "subject": {"bsn": BSN, "name": "Sanne (fictitious)", "birth_date": birth_date()},
        "body": {
            "question": format!("Hoe verwijs ik een kind met slaapproblemen? Moeder: {PHONE}"),
            "child_age": birth_date(),
            "address": "Domplein 1, 3512 JE Utrecht"
        }
    });

    let id = submit(&mut his, &submission).await;
    wait_delivered(&mut his, &id).await;

    let arrived = inbox_envelope(&setup, &id).await;
    assert!(arrived.get("subject").is_none(), "{arrived}");
    assert!(arrived.get("consent").is_none(), "{arrived}");
    assert_eq!(
        arrived["body"],
        json!({
            "question": "Hoe verwijs ik een kind met slaapproblemen? Moeder: [telefoon]",
            "child_age": "4-11"
        })
    );
    let store = store(&wijkteam);
    let received = audit_records(store)
        .into_iter()
        .find(|r| {
            r.event.event == Event::MessageReceived && r.event.message_id.as_deref() == Some(&*id)
        })
        .expect("a message_received audit record");
    assert_eq!(
        received.event.subject, None,
        "the wijkteam can link it to a child"
    );
    assert_eq!(store.tree(T::ConsentEvents).len(), 0);
    let log = audit_text(store);
    for value in [BSN, "Sanne", "Domplein", PHONE] {
        assert!(!log.contains(value), "{value} in the wijkteam's audit log");
    }

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------
// A broken policy file

const SHIPPED_POLICY: &str = include_str!("../../config/minimisation.toml");

/// A dev kit (nothing bound, nothing started) whose configs use `policy` as their
/// minimisation policy; returns the dir, the practice config and the policy path.
fn kit_with_policy(policy: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("minimisation.toml");
    std::fs::write(&path, policy).unwrap();
    let addr = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let addrs = Addresses {
        practice_api: addr(18091),
        practice_listener: addr(18493),
        wijkteam_api: addr(18092),
        wijkteam_listener: addr(18494),
    };
    let kit = devkit::write(dir.path(), addrs, Some(&path)).unwrap();
    (dir, kit.practice_config, path)
}

/// The shipped policy with `from` replaced by `to`, and the line `to` is on.
fn broken(from: &str, to: &str) -> (String, usize) {
    assert!(SHIPPED_POLICY.contains(from), "{from:?} not in the policy");
    let text = SHIPPED_POLICY.replacen(from, to, 1);
    let line = text[..text.find(to).unwrap()].lines().count() + 1;
    (text, line)
}

fn load_error(config: &Path) -> wijkpoort::config::ConfigError {
    match Config::load(config) {
        Ok(_) => panic!("a gateway with a broken policy would start"),
        Err(e) => e,
    }
}

#[test]
fn a_gateway_whose_policy_file_is_broken_does_not_start_and_names_file_line_and_path() {
    let cases = [
        (
            "unknown action",
            r#""body.urgency"                      = "keep""#,
            r#""body.urgency" = "blur""#,
            "body.urgency",
        ),
        (
            "path no message type has",
            r#""body.urgency"                      = "keep""#,
            r#""body.shoe_size" = "keep""#,
            "body.shoe_size",
        ),
        (
            "malformed TOML",
            r#""body.urgency"                      = "keep""#,
            r#""body.urgency" = keep"#,
            "",
        ),
    ];
    for (what, from, to, field_path) in cases {
        let (text, line) = broken(from, to);
        let (_dir, config, policy) = kit_with_policy(&text);

        let e = load_error(&config);

        assert_eq!(e.file, config, "{what}: {e}");
        assert_eq!(e.field, "minimisation_policy", "{what}: {e}");
        let at = format!("{}:{line}:", policy.display());
        assert!(e.problem.starts_with(&at), "{what}: expected {at} in {e}");
        assert!(e.problem.contains(field_path), "{what}: {e}");
    }
}

#[test]
fn serve_with_a_broken_policy_file_exits_64_naming_file_line_and_path() {
    let (text, line) = broken(
        r#""body.medication"                   = "drop""#,
        r#""body.medication" = "shred""#,
    );
    let (_dir, config, policy) = kit_with_policy(&text);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wijkpoort"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("wijkpoort: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(
        error.contains(&format!("{}:{line}:", policy.display())),
        "{error}"
    );
    assert!(error.contains("body.medication"), "{error}");
    assert!(error.contains("shred"), "{error}");
}
