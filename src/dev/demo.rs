//! `wijkpoort demo`: the whole flow on one machine with no set-up. It writes a
//! throw-away dev network into a temporary directory, starts two practices and a wijkteam
//! gateway on loopback, and walks through the exchange, narrating each step. The child
//! in the demo is fictitious; the narration shows ids and statuses, and the one place it
//! shows message content is the inbox, to show what actually arrived.

use crate::output::outln;
use std::time::Duration;

use serde_json::{json, Value};

use crate::client::LocalApiClient;
use crate::dev::devkit::{self, NodeSpec, Role};
use crate::dev::pki::{DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};
use crate::gateway::{bind, Listeners, RunningGateway};
use crate::store::Durability;
use crate::{Config, StartError};

/// A fictitious child: a BSN that passes the elfproef and belongs to no one we know of.
pub const DEMO_BSN: &str = "111222333";

fn step(n: &mut u32, text: &str) {
    *n += 1;
    outln!("\n[{n}] {text}");
}

fn err(e: impl std::fmt::Display) -> StartError {
    StartError::Other(e.to_string())
}

/// Runs the demo to the end.
pub async fn run() -> Result<(), StartError> {
    let mut n = 0;
    let dir = tempfile::tempdir().map_err(err)?;
    step(
        &mut n,
        "Generating a throw-away dev PKI, secrets and configs",
    );
    let any = "127.0.0.1:0".parse().map_err(err)?;
    let mut sockets = Vec::new();
    let mut nodes = Vec::new();
    for (name, role, identity) in [
        ("practice", Role::Practice, devkit::practice_id(0)),
        ("practice-2", Role::Practice, devkit::practice_id(1)),
        ("wijkteam", Role::Wijkteam, devkit::wijkteam_id(0)),
    ] {
        let (api, tls) = (bind(any).await?, bind(any).await?);
        nodes.push(NodeSpec {
            name: name.into(),
            role,
            identity,
            api: api.local_addr().map_err(err)?,
            listener: tls.local_addr().map_err(err)?,
        });
        sockets.push(Listeners {
            local_api: api,
            listener: tls,
        });
    }
    let net = devkit::write_network(dir.path(), &nodes, None).map_err(err)?;
    outln!("    dev network in {}", net.dir.display());
    outln!(
        "    practice    {} (URA-like, certificate serialNumber)",
        DEV_PRACTICE_ID
    );
    outln!(
        "    practice-2  {} (a second practice in the same municipality)",
        devkit::practice_id(1)
    );
    outln!(
        "    wijkteam    {} (OIN-like, certificate serialNumber)",
        DEV_WIJKTEAM_ID
    );

    step(
        &mut n,
        "Starting two practice gateways and the wijkteam gateway on loopback",
    );
    let mut running = Vec::new();
    for (node, listeners) in net.nodes.iter().zip(sockets) {
        let gw = RunningGateway::start(Config::load(&node.config)?, listeners, Durability::Synced)
            .await?;
        outln!(
            "    {}: local API http://{}, mTLS https://{}",
            node.spec.name,
            gw.local_api,
            gw.listener
        );
        running.push(gw);
    }
    let wijkteam = running.pop().ok_or_else(|| err("no wijkteam"))?;
    let practice_2 = running.pop().ok_or_else(|| err("no second practice"))?;
    let practice = running.pop().ok_or_else(|| err("no practice"))?;
    let token = |name: &str| {
        net.node(name)
            .map(|n| n.token.clone())
            .ok_or_else(|| err(format!("no node {name}")))
    };

    let mut his = LocalApiClient::new(practice.local_api, &token("practice")?, "dr.jansen");
    let mut his_2 = LocalApiClient::new(practice_2.local_api, &token("practice-2")?, "dr.smit");
    let mut case_system = LocalApiClient::new(wijkteam.local_api, &token("wijkteam")?, "k.bakker");

    step(
        &mut n,
        "The GP records the consent of the child (13) and her mother for referral and feedback",
    );
    let today = chrono::Local::now().date_naive();
    let birth = today - chrono::Duration::days(13 * 365 + 100);
    let consent = json!({
        "child": {"bsn": DEMO_BSN, "birth_date": birth, "name": "Sanne de Vries (fictitious)"},
        "performers": [
            {"role": "child", "name": "Sanne de Vries"},
            {"role": "parent", "name": "M. de Vries"}
        ],
        "scope": {"types": ["referral", "feedback"], "recipient": crate::dev::pki::DEV_WIJKTEAM_ID},
        "valid_from": today,
        "valid_until": today + chrono::Duration::days(365),
        "evidence": "mondeling tijdens consult"
    });
    let (code, answer) = his.post("/v1/consents", &consent).await.map_err(err)?;
    if code != 201 {
        return Err(err(format!("consent refused ({code}): {answer}")));
    }
    let consent_id = answer["consent_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    outln!(
        "    consent {consent_id} recorded (WGBO 12-15: child and parent), covering messages until {}",
        answer["effective_until"].as_str().unwrap_or("?")
    );

    step(
        &mut n,
        "The HIS looks up the child's consents: the BSN goes in the POST body, and the read is audited",
    );
    let (code, answer) = his
        .post("/v1/consents/query", &json!({ "bsn": DEMO_BSN }))
        .await
        .map_err(err)?;
    if code != 200 {
        return Err(err(format!("consent query refused ({code}): {answer}")));
    }
    for c in answer["consents"].as_array().cloned().unwrap_or_default() {
        outln!(
            "    {} {} until {}",
            c["consent_id"].as_str().unwrap_or(""),
            c["status"].as_str().unwrap_or(""),
            c["valid_until"].as_str().unwrap_or("")
        );
    }

    step(
        &mut n,
        "A parent's consent alone for a child turning 12 next week would end the day before that birthday",
    );
    let mut turning_12 = consent.clone();
    // Another fictitious child, so that the demo's child keeps one consent.
    turning_12["child"] = json!({"bsn": "999999990"});
    turning_12["child"]["birth_date"] =
        json!((today + chrono::Duration::days(7)) - chrono::Months::new(12 * 12));
    turning_12["performers"] = json!([{"role": "parent", "name": "M. de Vries"}]);
    turning_12["scope"]["types"] = json!(["referral"]);
    let (code, answer) = his.post("/v1/consents", &turning_12).await.map_err(err)?;
    outln!(
        "    {code}: effective until {} (the wijkteam is sent this end date, never the birth date)",
        answer["effective_until"].as_str().unwrap_or("?")
    );

    step(
        &mut n,
        "Consent of the child alone would be refused: at 13 the WGBO also asks a parent",
    );
    let mut child_only = consent.clone();
    child_only["performers"] = json!([{"role": "child", "name": "Sanne de Vries"}]);
    let (code, answer) = his.post("/v1/consents", &child_only).await.map_err(err)?;
    outln!(
        "    {code} {}: {}",
        answer["error"].as_str().unwrap_or(""),
        answer["message"].as_str().unwrap_or("")
    );

    step(
        &mut n,
        "The GP (user dr.jansen) submits a referral under that consent",
    );
    let referral = json!({
        "type": "referral",
        "to": "wijkteam",
        "consent_id": consent_id,
        "subject": {"bsn": DEMO_BSN, "name": "Sanne de Vries (fictitious)", "birth_date": birth},
        "body": {
            "request_for_help": "Ouders vragen hulp bij slaapproblemen en angst. Moeder is bereikbaar op 06-12345678.",
            "urgency": "soon",
            "postcode": "3511 AB",
            "parent_contact": {"name": "M. de Vries", "relationship": "mother", "phone": "06-12345678"},
            "medication": ["melatonine 1 mg"],
            "support_profile": {"estimate": "intensief"}
        }
    });
    outln!(
        "    submitted with fields: {}",
        field_paths(&referral).join(", ")
    );
    let referral_id = submit(&mut his, &referral).await?;

    step(
        &mut n,
        "The practice relays it over mutual TLS; waiting for the wijkteam's receipt",
    );
    let status = wait_delivered(&mut his, &referral_id).await?;
    print_receipt(&status);

    step(
        &mut n,
        "The wijkteam's case system (user k.bakker) reads its inbox: what actually arrived",
    );
    let inbox = show_inbox(&mut case_system).await?;
    if let Some(arrived) = inbox.iter().find(|m| m["id"] == json!(referral_id)) {
        let body = &arrived["envelope"]["body"];
        outln!("      request_for_help: {}", body["request_for_help"]);
        outln!("      postcode: {} (policy: truncate:4)", body["postcode"]);
        let removed = body.get("medication").is_none() && body.get("support_profile").is_none();
        outln!(
            "      medication, support_profile: {}",
            if removed {
                "removed by the practice's minimisation policy"
            } else {
                "PRESENT"
            }
        );
        if !removed {
            return Err(err(
                "the minimisation policy did not remove the medical fields",
            ));
        }
    }
    if !inbox.iter().any(|m| m["id"] == json!(referral_id)) {
        return Err(err("the referral did not arrive in the wijkteam inbox"));
    }
    acknowledge(&mut case_system, DEV_PRACTICE_ID, &referral_id).await?;

    step(
        &mut n,
        "The wijkteam sends feedback (intake planned) back to the practice",
    );
    let feedback = json!({
        "type": "feedback",
        "to": "practice",
        "consent_id": consent_id,
        "subject": {"bsn": DEMO_BSN},
        "body": {
            "referral_id": referral_id,
            "status": "intake_planned",
            "date": "2026-12-01",
            "contact": {"name": "K. Bakker", "phone": "030-1234567"},
            "note": "Intake gepland met ouders."
        }
    });
    let feedback_id = submit(&mut case_system, &feedback).await?;
    let status = wait_delivered(&mut case_system, &feedback_id).await?;
    print_receipt(&status);

    step(&mut n, "The practice's HIS reads its inbox");
    let inbox = show_inbox(&mut his).await?;
    if !inbox.iter().any(|m| m["id"] == json!(feedback_id)) {
        return Err(err("the feedback did not arrive in the practice inbox"));
    }
    acknowledge(&mut his, DEV_WIJKTEAM_ID, &feedback_id).await?;

    step(
        &mut n,
        "A second practice (user dr.smit) refers another child to the same wijkteam",
    );
    let other_bsn = "123456782";
    let other_birth = today - chrono::Duration::days(8 * 365);
    let consent_2 = json!({
        "child": {"bsn": other_bsn, "birth_date": other_birth},
        "performers": [{"role": "parent", "name": "J. Jansen"}],
        "scope": {"types": ["referral", "feedback"], "recipient": DEV_WIJKTEAM_ID},
        "valid_from": today,
        "valid_until": today + chrono::Duration::days(365),
        "evidence": "schriftelijk"
    });
    let (code, answer) = his_2.post("/v1/consents", &consent_2).await.map_err(err)?;
    if code != 201 {
        return Err(err(format!("consent refused ({code}): {answer}")));
    }
    let consent_2 = answer["consent_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    outln!("    consent {consent_2} recorded at practice-2 (WGBO under 12: parent)");
    let referral_2 = json!({
        "type": "referral",
        "to": "wijkteam",
        "consent_id": consent_2,
        "subject": {"bsn": other_bsn, "birth_date": other_birth},
        "body": {"request_for_help": "Zorgen over gedrag op school.", "urgency": "routine"}
    });
    let referral_2_id = submit(&mut his_2, &referral_2).await?;
    wait_delivered(&mut his_2, &referral_2_id).await?;
    let inbox = show_inbox(&mut case_system).await?;
    let practice_2_id = devkit::practice_id(1);
    if !inbox
        .iter()
        .any(|m| m["id"] == json!(referral_2_id) && m["from"] == json!(practice_2_id))
    {
        return Err(err("practice-2's referral did not arrive at the wijkteam"));
    }
    acknowledge(&mut case_system, &practice_2_id, &referral_2_id).await?;

    step(
        &mut n,
        "The wijkteam's feedback goes to the practice that referred, and only there",
    );
    let feedback_2 = json!({
        "type": "feedback",
        "to": "practice-2",
        "consent_id": consent_2,
        "subject": {"bsn": other_bsn},
        "body": {"referral_id": referral_2_id, "status": "received", "date": "2026-12-01"}
    });
    let feedback_2_id = submit(&mut case_system, &feedback_2).await?;
    wait_delivered(&mut case_system, &feedback_2_id).await?;
    let at_2 = show_inbox(&mut his_2).await?;
    let at_1 = show_inbox(&mut his).await?;
    if !at_2.iter().any(|m| m["id"] == json!(feedback_2_id)) {
        return Err(err("the feedback did not arrive at practice-2"));
    }
    if at_1.iter().any(|m| m["id"] == json!(feedback_2_id)) {
        return Err(err("practice-2's feedback arrived at the other practice"));
    }
    outln!("    practice-2 has its feedback; the first practice's inbox holds nothing new");
    acknowledge(&mut his_2, DEV_WIJKTEAM_ID, &feedback_2_id).await?;

    step(
        &mut n,
        "The mother withdraws the consent; the practice tells the wijkteam",
    );
    let (code, answer) = his
        .post(
            &format!("/v1/consents/{consent_id}/withdraw"),
            &json!({"reason": "op verzoek van moeder"}),
        )
        .await
        .map_err(err)?;
    if code != 200 {
        return Err(err(format!("withdrawal refused ({code}): {answer}")));
    }
    for update in answer["consent_updates"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let id = update.as_str().unwrap_or_default().to_string();
        outln!("    consent_update {id} queued");
        wait_delivered(&mut his, &id).await?;
    }

    step(
        &mut n,
        "The wijkteam tries to send more feedback under the withdrawn consent",
    );
    let mut more = feedback.clone();
    more["body"]["status"] = json!("help_started");
    let (code, answer) = case_system.post("/v1/messages", &more).await.map_err(err)?;
    outln!(
        "    refused: {code} {}: {}",
        answer["error"].as_str().unwrap_or(""),
        answer["message"].as_str().unwrap_or("")
    );
    if code != 422 {
        return Err(err("feedback under a withdrawn consent was not refused"));
    }

    step(&mut n, "Shutting the three gateways down cleanly");
    practice.stop().await?;
    practice_2.stop().await?;
    wijkteam.stop().await?;
    outln!("    every store closed with a signed audit checkpoint");

    step(
        &mut n,
        "The practice's privacy officer reads the audit log of the stopped gateway",
    );
    let cfg = net
        .node("practice")
        .map(|n| n.config.display().to_string())
        .ok_or_else(|| err("no practice"))?;
    outln!("    $ wijkpoort audit --config practice.toml report --bsn {DEMO_BSN}");
    let report = [
        "--config",
        &cfg,
        "--user",
        "demo-auditor",
        "report",
        "--bsn",
        DEMO_BSN,
    ];
    if crate::audit::cli::run_words(report).await != 0 {
        return Err(err("the audit report failed"));
    }
    outln!("    $ wijkpoort audit --config practice.toml verify");
    if crate::audit::cli::run_words(["--config", &cfg, "verify"]).await != 0 {
        return Err(err("the audit log of the practice does not verify"));
    }
    outln!("\nDemo complete.");
    Ok(())
}

async fn submit(client: &mut LocalApiClient, message: &Value) -> Result<String, StartError> {
    let (code, answer) = client.post("/v1/messages", message).await.map_err(err)?;
    if code != 202 {
        return Err(err(format!("submission refused ({code}): {answer}")));
    }
    let id = answer["id"].as_str().unwrap_or_default().to_string();
    outln!(
        "    accepted: {} {} → status {}",
        message["type"].as_str().unwrap_or(""),
        id,
        answer["status"]
    );
    Ok(id)
}

async fn wait_delivered(client: &mut LocalApiClient, id: &str) -> Result<Value, StartError> {
    for _ in 0..200 {
        let (code, status) = client
            .get(&format!("/v1/messages/{id}"))
            .await
            .map_err(err)?;
        if code == 200 && status["status"] == "delivered" {
            outln!(
                "    {id}: delivered after {} attempt(s)",
                status["attempts"]
            );
            return Ok(status);
        }
        if code == 200 && status["status"] != "queued" {
            return Err(err(format!(
                "message {id} ended as {}: {}",
                status["status"], status["last_error"]
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(err(format!("message {id} was not delivered within 10 s")))
}

fn print_receipt(status: &Value) {
    let r = &status["receipt"];
    outln!(
        "    receipt: signed by {} at {}, stored hash {}…",
        r["receiver"].as_str().unwrap_or("?"),
        r["received_at"].as_str().unwrap_or("?"),
        r["stored_hash"]
            .as_str()
            .unwrap_or("?")
            .get(..16)
            .unwrap_or("?")
    );
}

async fn show_inbox(client: &mut LocalApiClient) -> Result<Vec<Value>, StartError> {
    let (_, inbox) = client.get("/v1/inbox").await.map_err(err)?;
    let messages = inbox["messages"].as_array().cloned().unwrap_or_default();
    for m in &messages {
        outln!(
            "    inbox: {} {} from {}",
            m["type"].as_str().unwrap_or(""),
            m["id"].as_str().unwrap_or(""),
            m["from"].as_str().unwrap_or("")
        );
        let env = &m["envelope"];
        outln!("      fields that arrived: {}", field_paths(env).join(", "));
    }
    Ok(messages)
}

async fn acknowledge(client: &mut LocalApiClient, from: &str, id: &str) -> Result<(), StartError> {
    let (code, _) = client
        .post(&format!("/v1/inbox/{from}/{id}/ack"), &json!({}))
        .await
        .map_err(err)?;
    outln!("    acknowledged {id} ({code})");
    Ok(())
}

/// The field paths under `subject` and `body` (names only, no values).
fn field_paths(env: &Value) -> Vec<String> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => map
                .iter()
                .for_each(|(k, v)| walk(&format!("{prefix}.{k}"), v, out)),
            _ => out.push(prefix.to_string()),
        }
    }
    let mut out = Vec::new();
    for part in ["subject", "body"] {
        if let Some(v) = env.get(part) {
            walk(part, v, &mut out);
        }
    }
    out
}
