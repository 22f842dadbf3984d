//! Privacy in depth, the policy side (issue 13), end to end: each bypass of the
//! minimisation is cleaned or refused at the practice and refused at the wijkteam when a
//! real peer signs it anyway; a parents' consent stops at the child's 12th birthday at
//! both gateways, exact to the day; and every local-API read of personal data is audited
//! once per request and shows in the child's access report.

use chrono::{Duration, Months, NaiveDate};
use serde_json::{json, Value};
use wijkpoort::audit::{Event, Outcome};
use wijkpoort::client::LocalApiClient;
use wijkpoort::clock::Clock;
use wijkpoort::dev::pki::{DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};
use wijkpoort::message::Envelope;
use wijkpoort::store::T;
use wijkpoort::RunningGateway;

use crate::util::*;

/// Relays `envelope` to `to`, signed by `from`'s own key and presented with its own
/// certificate, as a real peer past its own filter would.
async fn relay_as(setup: &Setup, from: Role, to: Role, envelope: &Envelope) -> Answer {
    relay_signed(setup, to, &setup.credentials(from), &envelope.to_bytes())
        .await
        .unwrap()
}

/// Asserts a relayed message was refused with `code` naming `path`, and nothing of it
/// was stored or mirrored.
fn assert_refused_and_nothing_stored(gw: &RunningGateway, answer: &Answer, code: &str, path: &str) {
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(answer.body["error"], code, "{:?}", answer.body);
    let named = answer.body["field"].as_str().unwrap_or_default();
    assert!(named.contains(path), "{path} not named: {:?}", answer.body);
    assert_nothing_stored(store(gw));
    assert_eq!(
        store(gw).tree(T::ConsentEvents).len(),
        0,
        "nothing mirrored"
    );
}

/// The envelope of received message `id` as the case system or HIS reads it.
async fn inbox_envelope(client: &mut LocalApiClient, from: &str, id: &str) -> Value {
    let (code, msg) = client.get(&format!("/v1/inbox/{from}/{id}")).await.unwrap();
    assert_eq!(code, 200, "{msg}");
    msg["envelope"].clone()
}

// ---------------------------------------------------------------------------------------
// Closed minimisation
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_under_a_kept_field_is_removed_at_the_practice_and_refused_at_the_wijkteam() {
    let (setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let mut case_system = setup.client(Role::Wijkteam, "k.bakker");
    let consent = record_consent(&mut his).await;

    // The practice: the name that is an object goes, audited by path as the wrong type.
    let mut submission = referral_submission(&consent);
    submission["subject"]["name"] =
        json!({"diagnosis": "ADHD-vermoeden", "case_notes": "vader drinkt"});
    submission["body"]["parent_contact"] =
        json!({"name": ["M. de Vries", "moeder"], "phone": "0612345678"});
    let id = submit(&mut his, &submission).await;
    wait_delivered(&mut his, &id).await;
    let arrived = inbox_envelope(&mut case_system, DEV_PRACTICE_ID, &id).await;
    assert!(arrived["subject"].get("name").is_none(), "{arrived}");
    assert_eq!(
        arrived["body"]["parent_contact"],
        json!({"phone": "0612345678"})
    );
    let text = arrived.to_string();
    assert!(!text.contains("ADHD") && !text.contains("drinkt"), "{text}");
    let filtered = audit_records(store(&practice))
        .into_iter()
        .find(|r| {
            r.event.event == Event::MessageFiltered && r.event.message_id.as_deref() == Some(&id)
        })
        .expect("a filtering audit record");
    for change in [
        "subject.name (drop:wrong_type)",
        "body.parent_contact.name (drop:wrong_type)",
    ] {
        assert!(
            filtered.event.changed_fields.iter().any(|c| c == change),
            "{:?}",
            filtered.event.changed_fields
        );
    }

    // The wijkteam: the same, signed by the practice past its filter, is refused.
    wijkteam.stop().await.unwrap();
    practice.stop().await.unwrap();
    let mut setup = Setup::new().await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut envelope = referral_envelope("ref-nested-name");
    envelope
        .subject
        .as_mut()
        .unwrap()
        .insert("name".into(), json!({"diagnosis": "ADHD-vermoeden"}));
    let answer = relay_as(&setup, Role::Practice, Role::Wijkteam, &envelope).await;
    assert_refused_and_nothing_stored(&wijkteam, &answer, "policy_nested_value", "subject.name");
    let refusal = wait_for_refusal(
        store(&wijkteam),
        Event::MessageRefused,
        "policy_nested_value",
    )
    .await;
    assert!(!serde_json::to_string(&refusal).unwrap().contains("ADHD"));

    // The consent block: a field the policy does not name is refused too.
    let mut envelope = referral_envelope("ref-consent-extra");
    envelope.consent.as_mut().unwrap()["birth_date"] = json!(birth_date());
    let answer = relay_as(&setup, Role::Practice, Role::Wijkteam, &envelope).await;
    assert_refused_and_nothing_stored(
        &wijkteam,
        &answer,
        "policy_consent_block",
        "consent.birth_date",
    );
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consultation_with_a_consent_block_is_refused_at_both_ends() {
    let mut setup = Setup::new().await;
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;

    // The practice never sends one under a consent.
    let (code, answer) = his
        .post(
            "/v1/messages",
            &json!({"type": "consultation", "to": "wijkteam", "consent_id": consent,
                    "body": {"question": "Hoe pak ik dit aan?", "child_age": "12-15"}}),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, answer["error"].as_str()),
        (422, Some("consent_not_applicable")),
        "{answer}"
    );

    // The wijkteam refuses an "anonymous" consultation that names a child in its block.
    let envelope: Envelope = serde_json::from_value(json!({
        "id": "consult-with-consent", "type": "consultation", "schema_version": 1,
        "created_at": "2026-11-23T10:00:00Z", "from": DEV_PRACTICE_ID, "to": DEV_WIJKTEAM_ID,
        "consent": {"id": "consent-test-1", "subject_bsn": BSN},
        "body": {"question": "Hoe pak ik dit aan?", "child_age": "12-15"}
    }))
    .unwrap();
    let answer = relay_as(&setup, Role::Practice, Role::Wijkteam, &envelope).await;
    assert_refused_and_nothing_stored(&wijkteam, &answer, "consent_not_applicable", "consent");
    let text = serde_json::to_string(&audit_records(store(&wijkteam))).unwrap();
    assert!(
        !text.contains(BSN),
        "the BSN of the block reached the audit log"
    );

    // Without the block it is accepted: the refusal was the block's.
    let mut plain = envelope.clone();
    plain.id = "consult-plain".into();
    plain.consent = None;
    let answer = relay_as(&setup, Role::Practice, Role::Wijkteam, &plain).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// The scrubber
// ---------------------------------------------------------------------------------------

/// Identifiers as pasted text spells them: Unicode spaces and dashes, fullwidth digits,
/// glued to a word.
const PASTED: [&str; 6] = [
    "123\u{00A0}456\u{00A0}782",
    "06\u{2011}12\u{202F}34\u{2009}56\u{2007}78",
    "bsn123456782",
    "tel:0612345678",
    "BSN:123456782abc",
    "０６－１２３４５６７８",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_in_pasted_spellings_are_scrubbed_at_the_practice_and_refused_at_the_wijkteam()
{
    let (setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let mut case_system = setup.client(Role::Wijkteam, "k.bakker");
    let consent = record_consent(&mut his).await;
    let mut submission = referral_submission(&consent);
    submission["body"]["request_for_help"] =
        json!(format!("Gegevens broertje: {}.", PASTED.join(" en ")));
    let id = submit(&mut his, &submission).await;
    wait_delivered(&mut his, &id).await;
    let arrived = inbox_envelope(&mut case_system, DEV_PRACTICE_ID, &id).await;
    let text = arrived["body"]["request_for_help"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        text,
        "Gegevens broertje: [bsn] en [telefoon] en bsn[bsn] en tel:[telefoon] en BSN:[bsn]abc en [telefoon]."
    );
    practice.stop().await.unwrap();

    // Each spelling, signed by the practice past its filter, is refused at the wijkteam.
    for (i, pasted) in PASTED.iter().enumerate() {
        let mut envelope = referral_envelope(&format!("ref-pasted-{i}"));
        envelope
            .body
            .insert("request_for_help".into(), json!(format!("Zusje: {pasted}")));
        let answer = relay_as(&setup, Role::Practice, Role::Wijkteam, &envelope).await;
        assert_eq!(answer.status, 422, "{pasted:?}: {:?}", answer.body);
        assert_eq!(answer.body["error"], "policy_violation", "{pasted:?}");
        assert_eq!(answer.body["field"], "body.request_for_help", "{pasted:?}");
    }
    let stored = received_ids(store(&wijkteam));
    assert_eq!(stored, vec![id], "only the scrubbed referral was stored");
    wijkteam.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// WGBO over time
// ---------------------------------------------------------------------------------------

/// Records a parents' consent (given today) for a child whose 12th birthday is
/// `birthday`; returns the consent id and the effective end the practice answered.
async fn record_parent_consent(his: &mut LocalApiClient, birthday: NaiveDate) -> (String, String) {
    let birth = birthday - Months::new(12 * 12);
    let (code, answer) = his
        .post(
            "/v1/consents",
            &json!({
                "child": {"bsn": BSN, "birth_date": birth},
                "performers": [{"role": "parent", "name": "M. de Vries"}],
                "scope": {"types": ["referral", "feedback"], "recipient": DEV_WIJKTEAM_ID},
                "valid_from": today(),
                "valid_until": today() + Duration::days(365),
                "evidence": "mondeling tijdens consult"
            }),
        )
        .await
        .unwrap();
    assert_eq!(code, 201, "{answer}");
    (
        answer["consent_id"].as_str().unwrap().to_string(),
        answer["effective_until"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parents_consent_alone_stops_at_the_12th_birthday_at_both_gateways() {
    let mut setup = Setup::new().await;
    // One clock for both gateways, so that "today" moves for both at once.
    let clock = Clock::system();
    let practice = setup.start_with_clock(Role::Practice, clock.clone()).await;
    let wijkteam = setup.start_with_clock(Role::Wijkteam, clock.clone()).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let mut case_system = setup.client(Role::Wijkteam, "k.bakker");

    let birthday = today() + Duration::days(2);
    let (consent, effective_until) = record_parent_consent(&mut his, birthday).await;
    let last_day = birthday - Duration::days(1);
    assert_eq!(effective_until, last_day.to_string());

    // Today: the referral travels with the capped end, and no birth date in its block.
    let first = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &first).await;
    let arrived = inbox_envelope(&mut case_system, DEV_PRACTICE_ID, &first).await;
    assert_eq!(
        arrived["consent"]["valid_until"],
        json!(last_day),
        "{arrived}"
    );
    let block = arrived["consent"].to_string();
    let birth = (birthday - Months::new(144)).to_string();
    assert!(!block.contains(&birth), "{block}");

    // The day before the birthday: still covered both ways.
    clock.advance(Duration::days(1));
    let referral = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &referral).await;
    let feedback = submit(&mut case_system, &feedback_submission(&first, &consent)).await;
    wait_delivered(&mut case_system, &feedback).await;

    // The 12th birthday: the practice refuses to send, the wijkteam refuses feedback.
    clock.advance(Duration::days(1));
    let (code, answer) = his
        .post("/v1/messages", &referral_submission(&consent))
        .await
        .unwrap();
    assert_eq!(
        (code, answer["error"].as_str()),
        (422, Some("consent_expired")),
        "{answer}"
    );
    let (code, answer) = case_system
        .post("/v1/messages", &feedback_submission(&first, &consent))
        .await
        .unwrap();
    assert_eq!(
        (code, answer["error"].as_str()),
        (422, Some("consent_expired")),
        "{answer}"
    );

    // And each refuses what a peer sends past its own check: a referral under the
    // summary the practice sent, and feedback under the consent.
    // The auditor's view of the practice's consent log ends it on the same day.
    let history = wijkpoort::audit::query::consents(
        store(&practice),
        &wijkpoort::audit::query::ConsentQuery {
            subject: Some(pseudonym(&practice, BSN)),
            from: None,
            to: None,
        },
        None,
        clock.today(),
    )
    .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].valid_until, Some(last_day.to_string()));
    assert_eq!(history[0].status, "expired");

    let mut late = referral_envelope("ref-on-the-birthday");
    late.consent = Some(arrived["consent"].clone());
    let answer = relay_as(&setup, Role::Practice, Role::Wijkteam, &late).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (422, Some("consent_expired")),
        "{:?}",
        answer.body
    );
    let mut late = feedback_envelope("fb-on-the-birthday");
    late.consent = Some(json!({"id": consent}));
    let answer = relay_as(&setup, Role::Wijkteam, Role::Practice, &late).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (422, Some("consent_expired")),
        "{:?}",
        answer.body
    );

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_back_dated_beyond_the_window_or_running_too_long_is_refused_naming_the_field() {
    let mut setup = Setup::new().await;
    let practice = setup.start(Role::Practice).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = |given_on: NaiveDate, valid_until: NaiveDate| {
        json!({
            "child": {"bsn": BSN, "birth_date": today() - Months::new(13 * 12)},
            "performers": [{"role": "parent", "name": "M. de Vries"}],
            "scope": {"types": ["referral"], "recipient": DEV_WIJKTEAM_ID},
            "valid_from": given_on, "valid_until": valid_until, "given_on": given_on,
            "evidence": "formulier"
        })
    };
    // The case: a 13-year-old's consent back-dated to when the child was 11.
    let (code, answer) = his
        .post(
            "/v1/consents",
            &consent(today() - Months::new(24), today() + Duration::days(30)),
        )
        .await
        .unwrap();
    assert_eq!(code, 422, "{answer}");
    assert_eq!(
        (answer["error"].as_str(), answer["field"].as_str()),
        (Some("given_on_too_long_ago"), Some("given_on"))
    );
    let (code, answer) = his
        .post(
            "/v1/consents",
            &consent(today(), today() + Duration::days(367)),
        )
        .await
        .unwrap();
    assert_eq!(code, 422, "{answer}");
    assert_eq!(
        (answer["error"].as_str(), answer["field"].as_str()),
        (Some("validity_too_long"), Some("valid_until"))
    );
    practice.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Audited reads
// ---------------------------------------------------------------------------------------

/// The `personal_data_read` records of a store, in chain order.
fn reads(gw: &RunningGateway) -> Vec<wijkpoort::audit::AuditRecord> {
    audit_records(store(gw))
        .into_iter()
        .filter(|r| r.event.event == Event::PersonalDataRead)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_personal_data_are_audited_once_per_request_and_show_in_the_childs_report() {
    let (setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let mut case_system = setup.client(Role::Wijkteam, "k.bakker");
    let consent = record_consent(&mut his).await;
    let mut sent = Vec::new();
    for _ in 0..3 {
        let id = submit(&mut his, &referral_submission(&consent)).await;
        wait_delivered(&mut his, &id).await;
        sent.push(id);
    }
    let child = pseudonym(&wijkteam, BSN);

    // A page of three messages: one record naming all three and the child once.
    let (code, page) = case_system.get("/v1/inbox").await.unwrap();
    assert_eq!(code, 200, "{page}");
    assert_eq!(page["messages"].as_array().unwrap().len(), 3);
    let after = reads(&wijkteam);
    assert_eq!(after.len(), 1, "one record per request");
    let r = &after[0].event;
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(
        r.actor,
        wijkpoort::audit::Actor::User {
            id: "k.bakker".into()
        }
    );
    assert_eq!(r.read_messages, sent);
    assert_eq!(r.read_subjects, vec![child.clone()]);
    assert!(!serde_json::to_string(r).unwrap().contains(BSN));

    // An empty page writes nothing; a read without a user is refused and writes nothing.
    let cursor = page["next_cursor"].as_str().map(str::to_string);
    assert!(cursor.is_none(), "one page");
    let last = page["messages"][2]["cursor"].as_str().unwrap();
    let (code, empty) = case_system
        .get(&format!("/v1/inbox?after={last}"))
        .await
        .unwrap();
    assert_eq!(
        (code, empty["messages"].as_array().unwrap().len()),
        (200, 0)
    );
    let token = format!("Bearer {}", setup.token(Role::Wijkteam));
    for path in [
        "/v1/inbox".to_string(),
        format!("/v1/inbox/{DEV_PRACTICE_ID}/{}", sent[0]),
    ] {
        let (code, body) = case_system
            .call_raw(
                hyper::Method::GET,
                &path,
                &[("authorization", &token)],
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(
            (code, body["error"].as_str()),
            (400, Some("missing_user")),
            "{path}: {body}"
        );
        assert_eq!(body["field"], "X-Wijkpoort-User");
    }
    assert_eq!(
        reads(&wijkteam).len(),
        1,
        "no record for an empty page or a refused read"
    );

    // One message by id: one record naming it.
    inbox_envelope(&mut case_system, DEV_PRACTICE_ID, &sent[1]).await;
    let after = reads(&wijkteam);
    assert_eq!(after.len(), 2);
    assert_eq!(after[1].event.read_messages, vec![sent[1].clone()]);
    assert_eq!(after[1].event.read_subjects, vec![child.clone()]);

    // The consent query at the practice: by POST body, audited under the child.
    let (code, answer) = his
        .post("/v1/consents/query", &json!({"bsn": BSN}))
        .await
        .unwrap();
    assert_eq!(code, 200, "{answer}");
    let at_practice = reads(&practice);
    assert_eq!(at_practice.len(), 1);
    assert_eq!(
        at_practice[0].event.read_subjects,
        vec![pseudonym(&practice, BSN)]
    );
    assert!(at_practice[0]
        .event
        .reason
        .as_deref()
        .unwrap_or_default()
        .contains(&consent));
    // A child without consents is still a look at that child.
    let (code, answer) = his
        .post("/v1/consents/query", &json!({"bsn": OTHER_BSN}))
        .await
        .unwrap();
    assert_eq!(
        (code, answer["consents"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    assert_eq!(reads(&practice).len(), 2);
    assert_eq!(
        reads(&practice)[1].event.read_subjects,
        vec![pseudonym(&practice, OTHER_BSN)]
    );
    // The BSN in a URL is refused.
    let (code, answer) = his.get(&format!("/v1/consents?bsn={BSN}")).await.unwrap();
    assert_eq!(
        (code, answer["error"].as_str()),
        (400, Some("bsn_in_url")),
        "{answer}"
    );

    // The child's access report at the wijkteam shows who read what.
    let report =
        wijkpoort::audit::query::report(store(&wijkteam), &child, None, None, today()).unwrap();
    let read_entries: Vec<_> = report
        .entries
        .iter()
        .filter(|e| e.action == Event::PersonalDataRead)
        .collect();
    assert_eq!(read_entries.len(), 2, "{:?}", report.entries);
    assert_eq!(read_entries[0].user.as_deref(), Some("k.bakker"));
    assert_eq!(read_entries[0].read_messages, sent);
    let table = wijkpoort::audit::render::report(&report, wijkpoort::audit::render::Format::Table);
    assert!(table.contains("personal_data_read"), "{table}");
    // And the reads of one message are found by its id.
    let by_message = wijkpoort::audit::query::records(
        store(&wijkteam),
        &wijkpoort::audit::query::RecordQuery {
            message_id: Some(sent[1].clone()),
            event: Some(Event::PersonalDataRead),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(by_message.records.len(), 2, "the page and the single read");

    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}
