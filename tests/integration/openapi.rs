//! The local API's OpenAPI document (`config/openapi.json`, served at
//! `GET /v1/openapi.json`) against the running gateway: every route is called, every
//! answer — successes and refusals — is validated with a JSON Schema validator against
//! the schema the document gives for that route and status, and every documented
//! route and success status is exercised. The schemas refuse unknown fields, so a field
//! added to a response without the document fails here.

use std::collections::BTreeSet;

use hyper::Method;
use serde_json::{json, Value};

use wijkpoort::dev::pki::{DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};

use crate::operations::http_get;
use crate::util::*;

struct Doc {
    doc: Value,
    seen: BTreeSet<(String, String, u16)>,
}

impl Doc {
    fn load() -> Doc {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/openapi.json");
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        Doc {
            doc,
            seen: BTreeSet::new(),
        }
    }

    /// Validates `body`, the answer `status` to `method template`, against the document.
    fn check(&mut self, method: &str, template: &str, status: u16, body: &Value) {
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the document");
        let mut response = op["responses"][status.to_string()].clone();
        assert!(
            response.is_object(),
            "{method} {template} answered {status}, which the document does not list: {body}"
        );
        if let Some(r) = response["$ref"].as_str() {
            let pointer = r.trim_start_matches('#');
            response = self.doc.pointer(pointer).unwrap().clone();
        }
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template} {status}: no schema"
        );
        // Validate against the schema in place, so that its $refs resolve in the document.
        let pointer = format!(
            "#/paths/{}/{}/responses/{status}",
            template
                .replace('~', "~0")
                .replace('/', "~1")
                .replace('{', "%7B")
                .replace('}', "%7D"),
            method.to_lowercase()
        );
        let pointer = match op["responses"][status.to_string()]["$ref"].as_str() {
            Some(r) => r.to_string(),
            None => pointer,
        };
        let mut root = self.doc.clone();
        root["$ref"] = json!(format!("{pointer}/content/application~1json/schema"));
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("{method} {template} {status}: bad schema: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {status} does not match the document:\n{}\nbody: {body}",
            errors.join("\n")
        );
        self.seen
            .insert((method.to_string(), template.to_string(), status));
    }

    /// Notes a binary answer: the document must list `status` with `content_type`.
    fn check_binary(&mut self, method: &str, template: &str, status: u16, content_type: &str) {
        let op = &self.doc["paths"][template][method.to_lowercase()];
        let content = &op["responses"][status.to_string()]["content"];
        assert!(
            content[content_type].is_object(),
            "{method} {template} {status} answered {content_type}, which the document does not list"
        );
        self.seen
            .insert((method.to_string(), template.to_string(), status));
    }

    /// Every documented route's success statuses were seen.
    fn all_successes_seen(&self) {
        let mut missing = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for status in op["responses"].as_object().unwrap().keys() {
                    let code: u16 = status.parse().unwrap();
                    let key = (method.to_uppercase(), path.clone(), code);
                    if code < 300 && !self.seen.contains(&key) {
                        missing.push(format!("{} {path} {code}", method.to_uppercase()));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "never exercised: {missing:?}");
    }
}

#[tokio::test]
async fn real_responses_match_the_openapi_document() {
    let (setup, practice, wijkteam) = pair().await;
    let mut d = Doc::load();
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let mut case_system = setup.client(Role::Wijkteam, "k.bakker");

    // The document, served as it is in the repository, without a token.
    let (code, head, served) = http_get(setup.api_addr(Role::Practice), "/v1/openapi.json").await;
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let served: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(served, d.doc);
    d.check("GET", "/v1/openapi.json", 200, &served);

    let (code, body) = his.get("/healthz").await.unwrap();
    d.check("GET", "/healthz", code, &body);

    // Consents.
    let consent_id = record_consent(&mut his).await;
    let (code, body) = his
        .post(
            "/v1/consents",
            &json!({
                "child": {"bsn": BSN, "birth_date": birth_date()},
                "performers": [{"role": "parent", "name": "M. de Vries"}],
                "scope": {"types": ["referral"], "recipient": DEV_WIJKTEAM_ID},
                "valid_from": today(), "valid_until": today() + chrono::Duration::days(30),
                "evidence": "schriftelijk"
            }),
        )
        .await
        .unwrap();
    d.check("POST", "/v1/consents", code, &body);
    assert_eq!(code, 201);
    let (code, body) = his
        .post("/v1/consents", &json!({"child": "nobody"}))
        .await
        .unwrap();
    assert_eq!(code, 400);
    d.check("POST", "/v1/consents", code, &body);
    // A child of ten without a parent: the WGBO refuses.
    let (code, body) = his
        .post(
            "/v1/consents",
            &json!({
                "child": {"bsn": BSN, "birth_date": birth_date()},
                "performers": [{"role": "child", "name": "Sanne"}],
                "scope": {"types": ["referral"], "recipient": DEV_WIJKTEAM_ID},
                "valid_from": today(), "valid_until": today() + chrono::Duration::days(30),
                "evidence": "mondeling"
            }),
        )
        .await
        .unwrap();
    assert_eq!(code, 422, "{body}");
    d.check("POST", "/v1/consents", code, &body);

    // Messages.
    let mut referral = referral_submission(&consent_id);
    referral["id"] = json!("ref-openapi-1");
    let (code, body) = his.post("/v1/messages", &referral).await.unwrap();
    assert_eq!(code, 202, "{body}");
    d.check("POST", "/v1/messages", code, &body);
    let id = body["id"].as_str().unwrap().to_string();
    let (code, body) = his.get(&format!("/v1/messages/{id}")).await.unwrap();
    d.check("GET", "/v1/messages/{id}", code, &body);
    let delivered = wait_delivered(&mut his, &id).await;
    d.check("GET", "/v1/messages/{id}", 200, &delivered);
    let (code, body) = his.get("/v1/messages/msg-none").await.unwrap();
    assert_eq!(code, 404);
    d.check("GET", "/v1/messages/{id}", code, &body);

    let mut other = referral.clone();
    other["body"]["urgency"] = json!("urgent");
    let (code, body) = his.post("/v1/messages", &other).await.unwrap();
    assert_eq!(code, 409, "{body}");
    d.check("POST", "/v1/messages", code, &body);
    let mut invalid = referral_submission(&consent_id);
    invalid["subject"]["bsn"] = json!("123456789");
    let (code, body) = his.post("/v1/messages", &invalid).await.unwrap();
    assert_eq!(code, 400);
    assert_eq!(body["field"], "subject.bsn", "{body}");
    d.check("POST", "/v1/messages", code, &body);
    let (code, body) = his
        .post("/v1/messages", &referral_submission("consent-none"))
        .await
        .unwrap();
    assert_eq!(code, 422);
    d.check("POST", "/v1/messages", code, &body);
    let huge = vec![b' '; 70 * 1024];
    let (code, body) = his
        .call_raw(
            Method::POST,
            "/v1/messages",
            &[
                (
                    "authorization",
                    &format!("Bearer {}", setup.token(Role::Practice)),
                ),
                ("x-wijkpoort-user", "dr.jansen"),
            ],
            huge,
        )
        .await
        .unwrap();
    assert_eq!(code, 413);
    d.check("POST", "/v1/messages", code, &body);
    let (code, body) = his
        .call_raw(
            Method::POST,
            "/v1/messages",
            &[("authorization", "Bearer wrong-token-wrong-token")],
            b"{}".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(code, 401);
    d.check("POST", "/v1/messages", code, &body);
    let (code, body) = his
        .call_raw(
            Method::POST,
            "/v1/messages",
            &[(
                "authorization",
                &format!("Bearer {}", setup.token(Role::Practice)),
            )],
            serde_json::to_vec(&referral).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(code, 400);
    assert_eq!(body["field"], "X-Wijkpoort-User");
    d.check("POST", "/v1/messages", code, &body);

    // A second referral, so the inbox pages.
    let second = submit(&mut his, &referral_submission(&consent_id)).await;
    wait_delivered(&mut his, &second).await;

    // The wijkteam's inbox.
    let (code, page) = case_system.get("/v1/inbox?limit=1").await.unwrap();
    d.check("GET", "/v1/inbox", code, &page);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (code, rest) = case_system
        .get(&format!(
            "/v1/inbox?after={cursor}&from={DEV_PRACTICE_ID}&type=referral"
        ))
        .await
        .unwrap();
    d.check("GET", "/v1/inbox", code, &rest);
    assert_eq!(rest["messages"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["next_cursor"], Value::Null);
    let (code, body) = case_system.get("/v1/inbox?limit=0").await.unwrap();
    assert_eq!(code, 400);
    d.check("GET", "/v1/inbox", code, &body);
    // A read of personal data names the acting user.
    let (code, body) = case_system
        .call_raw(
            Method::GET,
            "/v1/inbox",
            &[(
                "authorization",
                &format!("Bearer {}", setup.token(Role::Wijkteam)),
            )],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(code, 400);
    assert_eq!(body["error"], "missing_user", "{body}");
    d.check("GET", "/v1/inbox", code, &body);

    let one = format!("/v1/inbox/{DEV_PRACTICE_ID}/{id}");
    let (code, body) = case_system.get(&one).await.unwrap();
    d.check("GET", "/v1/inbox/{from}/{id}", code, &body);
    let (code, body) = case_system
        .post(&format!("{one}/ack"), &json!({}))
        .await
        .unwrap();
    d.check("POST", "/v1/inbox/{from}/{id}/ack", code, &body);
    let (code, body) = case_system.get(&one).await.unwrap();
    assert!(body["acknowledged_at"].is_string(), "{body}");
    d.check("GET", "/v1/inbox/{from}/{id}", code, &body);
    let (code, body) = case_system
        .get(&format!("/v1/inbox/{DEV_PRACTICE_ID}/msg-none"))
        .await
        .unwrap();
    assert_eq!(code, 404);
    d.check("GET", "/v1/inbox/{from}/{id}", code, &body);
    let (code, body) = case_system
        .post(
            &format!("/v1/inbox/{DEV_PRACTICE_ID}/msg-none/ack"),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(code, 404);
    d.check("POST", "/v1/inbox/{from}/{id}/ack", code, &body);

    // Feedback back, then the consents on both sides.
    let feedback = submit(&mut case_system, &feedback_submission(&id, &consent_id)).await;
    wait_delivered(&mut case_system, &feedback).await;
    for client in [&mut his, &mut case_system] {
        let (code, body) = client
            .post("/v1/consents/query", &json!({"bsn": BSN}))
            .await
            .unwrap();
        d.check("POST", "/v1/consents/query", code, &body);
        assert!(!body["consents"].as_array().unwrap().is_empty());
    }
    let (code, body) = his.post("/v1/consents/query", &json!({})).await.unwrap();
    assert_eq!(code, 400);
    assert_eq!(body["error"], "missing_bsn", "{body}");
    d.check("POST", "/v1/consents/query", code, &body);
    // The BSN in a URL is refused, pointing at the POST.
    let (code, body) = his.get(&format!("/v1/consents?bsn={BSN}")).await.unwrap();
    assert_eq!(code, 400);
    assert_eq!(body["error"], "bsn_in_url", "{body}");
    d.check("GET", "/v1/consents", code, &body);

    let (code, body) = his
        .post(
            &format!("/v1/consents/{consent_id}/withdraw"),
            &json!({"reason": "op verzoek"}),
        )
        .await
        .unwrap();
    d.check("POST", "/v1/consents/{id}/withdraw", code, &body);
    let (code, body) = his
        .post("/v1/consents/consent-none/withdraw", &json!({}))
        .await
        .unwrap();
    assert_eq!(code, 404, "{body}");
    d.check("POST", "/v1/consents/{id}/withdraw", code, &body);
    let (code, body) = his
        .post(
            &format!("/v1/consents/{consent_id}/withdraw"),
            &json!({"why": 1}),
        )
        .await
        .unwrap();
    assert_eq!(code, 400, "{body}");
    d.check("POST", "/v1/consents/{id}/withdraw", code, &body);

    // Stats and reload.
    let (code, body) = his.get("/v1/stats").await.unwrap();
    d.check("GET", "/v1/stats", code, &body);
    let (code, body) = his.post("/v1/reload", &json!({})).await.unwrap();
    d.check("POST", "/v1/reload", code, &body);
    let path = setup.config_path(Role::Practice);
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        good.replace("role = \"practice\"", "role = \"wijkteam\""),
    )
    .unwrap();
    let (code, body) = his.post("/v1/reload", &json!({})).await.unwrap();
    std::fs::write(&path, good).unwrap();
    assert_eq!(code, 422, "{body}");
    d.check("POST", "/v1/reload", code, &body);

    // The backup stream (binary), and a call without the acting user.
    let (code, bytes) = his
        .post_for_bytes("/v1/store/backup", &json!({}))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(bytes.starts_with(b"wijkpoort-backup/1\n"));
    d.check_binary("POST", "/v1/store/backup", code, "application/octet-stream");
    let token = format!("Bearer {}", setup.token(Role::Practice));
    let (code, body) = his
        .call_raw(
            Method::POST,
            "/v1/store/backup",
            &[("authorization", token.as_str())],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(code, 400, "{body}");
    d.check("POST", "/v1/store/backup", code, &body);

    d.all_successes_seen();
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}
