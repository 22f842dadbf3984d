//! Queries against real gateways: by BSN (exactly that child, never the BSN itself), the
//! access report, consents, FHIR export; online with the auditor's certificate, refused
//! for anyone else, and offline on the stopped store — every read leaving a record.

use serde_json::{json, Value};
use wijkpoort::audit::query::{AccessReport, IndexUsed, RecordPage};
use wijkpoort::audit::{Actor, AuditRecord, Event, Outcome};
use wijkpoort::dev::pki::{DEV_AUDITOR_ID, DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};
use wijkpoort::store::T;
use wijkpoort::RunningGateway;

use crate::util::*;

fn last_record(gw: &RunningGateway) -> AuditRecord {
    last_audit_record(store(gw)).expect("an audit record")
}

/// Records about child A (3, one message), child B (2) and no child (filler), interleaved.
/// Returns the sequence numbers of A's and B's records.
async fn two_children(gw: &RunningGateway) -> (Vec<u64>, Vec<u64>) {
    let pa = Some(pseudonym(gw, BSN_A));
    let pb = Some(pseudonym(gw, BSN_B));
    let steps = [
        (pa.clone(), Event::MessageAccepted, Some("msg-a")),
        (pb.clone(), Event::MessageAccepted, Some("msg-b")),
        (None, Event::MessageQueued, None),
        (pa.clone(), Event::MessageQueued, Some("msg-a")),
        (pb.clone(), Event::MessageQueued, Some("msg-b")),
        (pa.clone(), Event::MessageDelivered, Some("msg-a")),
    ];
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (subject, event, msg) in steps {
        let is_a = subject == pa && subject.is_some();
        let is_b = subject == pb && subject.is_some();
        store(gw)
            .commit_audit(vec![user_event("dr.jansen", event, subject, msg)])
            .await
            .unwrap();
        let seq = last_record(gw).seq;
        if is_a {
            a.push(seq);
        }
        if is_b {
            b.push(seq);
        }
    }
    (a, b)
}

fn cmd(prefix: &[String], rest: &[&str]) -> Vec<String> {
    let mut v = vec!["audit".to_string()];
    v.extend(prefix.iter().cloned());
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_by_bsn_are_exactly_that_childs_online_and_offline() {
    let mut s = Setup::new().await;
    let gw = s.start_practice().await;
    let (seqs_a, seqs_b) = two_children(&gw).await;
    let pa = pseudonym(&gw, BSN_A);
    let pb = pseudonym(&gw, BSN_B);
    for (p, b) in [(&pa, BSN_A), (&pb, BSN_B)] {
        assert_ne!(p, b);
        assert!(!p.contains(b), "the pseudonym must not contain the BSN");
    }
    let online = s.online_args(&gw, "auditor");

    for (bsn_, pseudonym, expected) in [(BSN_A, &pa, &seqs_a), (BSN_B, &pb, &seqs_b)] {
        let out = wijkpoort(cmd(
            &online,
            &["records", "--bsn", bsn_, "--format", "json"],
        ))
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            !stdout(&out).contains(bsn_),
            "the answer must not hold the BSN"
        );
        let page: RecordPage = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(page.index, IndexUsed::Subject);
        let got: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
        assert_eq!(&got, expected);
        assert!(page
            .records
            .iter()
            .all(|r| r.event.subject.as_deref() == Some(pseudonym.as_str())));
        // The read itself is on record: the auditor, the child, the query.
        let read = last_record(&gw);
        assert_eq!(read.event.event, Event::AuditRead);
        assert_eq!(read.event.outcome, Outcome::Success);
        assert!(
            matches!(&read.event.actor, Actor::Auditor { organisation, .. } if organisation == DEV_AUDITOR_ID)
        );
        assert_eq!(read.event.subject.as_deref(), Some(pseudonym.as_str()));
        assert!(read.event.reason.as_deref().unwrap().contains("by child"));
    }

    // Other filters go through their own index.
    let out = wijkpoort(cmd(
        &online,
        &["records", "--message-id", "msg-b", "--format", "json"],
    ))
    .await;
    let page: RecordPage = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page.index, IndexUsed::Message);
    assert_eq!(
        page.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        seqs_b
    );
    let out = wijkpoort(cmd(
        &online,
        &[
            "records",
            "--bsn",
            BSN_A,
            "--event",
            "message_queued",
            "--format",
            "json",
        ],
    ))
    .await;
    let page: RecordPage = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].event.event, Event::MessageQueued);
    let out = wijkpoort(cmd(
        &online,
        &[
            "records",
            "--from",
            "2000-01-01",
            "--to",
            "2001-01-01",
            "--format",
            "json",
        ],
    ))
    .await;
    let page: RecordPage = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (page.index, page.examined, page.records.len()),
        (IndexUsed::Time, 0, 0)
    );
    let out = wijkpoort(cmd(&online, &["records", "--bsn", "123456789"])).await;
    assert_eq!(out.status.code(), Some(2), "an invalid BSN is refused");
    assert!(!stderr(&out).contains("123456789"), "{}", stderr(&out));

    gw.stop().await.unwrap();

    // Offline, with the config: the same answer, as CSV; the read is recorded too.
    let out = wijkpoort(cmd(
        &s.offline_args(),
        &[
            "--user",
            "fg.de.boer",
            "records",
            "--bsn",
            BSN_B,
            "--format",
            "csv",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("seq,time,event,outcome,actor"));
    // B's two records and the online read of B.
    assert_eq!(lines.len(), 1 + seqs_b.len() + 1, "{text}");
    assert!(!text.contains(BSN_B));

    let raw = Raw::open(&s.store_dir(Role::Practice));
    let last = raw.record(raw.last_seq());
    assert_eq!(last.event.event, Event::AuditRead);
    assert_eq!(
        last.event.actor,
        Actor::User {
            id: "fg.de.boer".into()
        }
    );
    assert!(last.event.reason.unwrap().contains("offline"));
    assert_eq!(
        raw.checkpoint_seqs().last(),
        Some(&raw.last_seq()),
        "closed with a checkpoint"
    );
    // Nowhere in the store — keys or values, any tree — is either BSN.
    for name in raw.db.tree_names() {
        let tree = raw.db.open_tree(&name).unwrap();
        for item in tree.iter() {
            let (k, v) = item.unwrap();
            for b in [BSN_A, BSN_B] {
                let needle = b.as_bytes();
                assert!(!k.windows(9).any(|w| w == needle) && !v.windows(9).any(|w| w == needle));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_auditor_certificate_is_refused_with_403_and_audited() {
    let mut s = Setup::new().await;
    let gw = s.start_practice().await;
    two_children(&gw).await;
    let before = last_record(&gw).seq;
    // The wijkteam's own certificate is trusted (same CA) and a peer, but no auditor.
    let out = wijkpoort(cmd(
        &s.online_args(&gw, "wijkteam"),
        &["records", "--bsn", BSN_A],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("403 not_an_auditor"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "no data for a non-auditor");
    let refused = last_record(&gw);
    assert_eq!(refused.seq, before + 1);
    assert_eq!(refused.event.event, Event::AuditRead);
    assert_eq!(refused.event.outcome, Outcome::Refused);
    assert!(
        matches!(&refused.event.actor, Actor::Peer { organisation, .. } if organisation == DEV_WIJKTEAM_ID)
    );
    assert_eq!(
        refused.event.subject, None,
        "a refused request names no child"
    );
    // The practice's own certificate is no auditor either.
    let out = wijkpoort(cmd(&s.online_args(&gw, "practice"), &["verify"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(last_record(&gw).event.outcome, Outcome::Refused);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_verify_and_a_locked_store_pointing_to_it() {
    let mut s = Setup::new().await;
    let gw = s.start_practice().await;
    fill(&gw, 1200).await;
    // The checkpoint at 1000 is signed off the committer, after its group is durable,
    // and stored a moment later: wait for it.
    let checkpoints = store(&gw).tree(wijkpoort::store::T::Checkpoints).clone();
    wait_until("the signed checkpoint at 1000", || {
        let stored = checkpoints.get(1000u64.to_be_bytes()).ok().flatten();
        async move { stored.map(|_| ()) }
    })
    .await;
    let out = wijkpoort(cmd(&s.online_args(&gw, "auditor"), &["verify"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("intact: 1201 record(s)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("last signed checkpoint: 1000:"),
        "{}",
        stdout(&out)
    );

    // Offline while the gateway runs: one line, naming the online way.
    let out = wijkpoort(cmd(&s.offline_args(), &["verify"])).await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("locked") && err.contains("--gateway https://"),
        "{err}"
    );
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_report_is_chronological_with_who_what_and_consent() {
    let mut s = Setup::new().await;
    let gw = s.start_practice().await;
    let (seqs_a, _) = two_children(&gw).await;
    // A peer acted on the child too.
    let pa = Some(pseudonym(&gw, BSN_A));
    let peer_event = wijkpoort::audit::AuditEvent::new(
        Event::MessageReceived,
        Outcome::Success,
        Actor::Peer {
            organisation: DEV_WIJKTEAM_ID.into(),
            certificate_serial: "01:02".into(),
            remote: None,
        },
    )
    .subject(pa)
    .message("fb-1", wijkpoort::message::MessageType::Feedback)
    .consent(Some("consent-1"));
    store(&gw).commit_audit(vec![peer_event]).await.unwrap();

    let online = s.online_args(&gw, "auditor");
    let out = wijkpoort(cmd(
        &online,
        &["report", "--bsn", BSN_A, "--format", "json"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: AccessReport = serde_json::from_slice(&out.stdout).unwrap();
    let seqs: Vec<u64> = report.entries.iter().map(|e| e.seq).collect();
    assert_eq!(&seqs[..3], &seqs_a[..]);
    assert_eq!(seqs.len(), 4);
    assert!(report
        .entries
        .windows(2)
        .all(|w| w[0].time <= w[1].time && w[0].seq < w[1].seq));
    let first = &report.entries[0];
    assert_eq!(first.organisation.as_deref(), Some(DEV_PRACTICE_ID));
    assert_eq!(first.user.as_deref(), Some("dr.jansen"));
    assert_eq!(first.action, Event::MessageAccepted);
    assert_eq!(
        first.message_type,
        Some(wijkpoort::message::MessageType::Referral)
    );
    assert_eq!(first.consent_id.as_deref(), Some("consent-1"));
    let last = &report.entries[3];
    assert_eq!(
        (last.actor.as_str(), last.organisation.as_deref()),
        ("peer", Some(DEV_WIJKTEAM_ID))
    );

    let table = wijkpoort(cmd(&online, &["report", "--bsn", BSN_A])).await;
    let text = stdout(&table);
    assert!(text.starts_with("Access report (NEN 7513)"), "{text}");
    assert!(
        text.contains("dr.jansen") && !text.contains(BSN_A),
        "{text}"
    );
    // Both reads were about A and show up in A's next report.
    let again: AccessReport = serde_json::from_slice(
        &wijkpoort(cmd(
            &online,
            &["report", "--bsn", BSN_A, "--format", "json"],
        ))
        .await
        .stdout,
    )
    .unwrap();
    assert_eq!(
        again
            .entries
            .iter()
            .filter(|e| e.action == Event::AuditRead)
            .count(),
        2
    );
    let out = wijkpoort(cmd(&online, &["report", "--bsn", "-"])).await;
    assert_eq!(out.status.code(), Some(2), "an empty stdin is no BSN");
    gw.stop().await.unwrap();
}

/// The consent log as the consent module writes it: `consent_events` (id, 0, number BE →
/// event JSON) and `consent_by_subject` (pseudonym, 0, id → ()).
async fn record_consents(gw: &RunningGateway) {
    let pa = pseudonym(gw, BSN_A);
    let pb = pseudonym(gw, BSN_B);
    let recorded = |id: &str, b: &str| {
        json!({"event": "recorded", "record": {
            "id": id,
            "child": {"bsn": b, "birth_date": "2013-01-15", "name": "Sanne de Vries"},
            "performers": [{"role": "child", "name": "Sanne de Vries"}, {"role": "parent", "name": "Marieke de Vries"}],
            "scope": {"types": ["feedback", "referral"], "recipient": DEV_WIJKTEAM_ID},
            "valid_from": "2026-01-01", "valid_until": "2099-12-31", "given_on": "2026-01-01",
            "evidence": "mondeling tijdens consult", "exception": null,
            "recorded_by": "dr.jansen", "recorded_at": "2026-01-01T10:00:00Z",
            "basis": {"kind": "child_and_parent"}
        }})
    };
    let withdrawn = json!({"event": "withdrawn", "consent_id": "c-a1", "at": "2026-02-01T09:00:00Z",
        "by": "dr.jansen", "reason": "ouders trekken toestemming in"});
    let rows: Vec<(&str, u64, Value, String)> = vec![
        ("c-a1", 1, recorded("c-a1", BSN_A), pa.clone()),
        ("c-a1", 2, withdrawn, pa.clone()),
        ("c-a2", 1, recorded("c-a2", BSN_A), pa),
        ("c-b1", 1, recorded("c-b1", BSN_B), pb),
    ];
    store(gw)
        .commit(move |tx| {
            for (id, n, event, subject) in rows {
                let key = [id.as_bytes(), &[0], &n.to_be_bytes()].concat();
                tx.insert(T::ConsentEvents, key, serde_json::to_vec(&event).unwrap());
                let index = [subject.as_bytes(), &[0], id.as_bytes()].concat();
                tx.insert(T::ConsentBySubject, index, Vec::new());
            }
            Ok::<(), wijkpoort::store::StoreError>(())
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consents_of_a_child_with_status_and_no_personal_details() {
    let mut s = Setup::new().await;
    let gw = s.start_practice().await;
    record_consents(&gw).await;
    let pa = pseudonym(&gw, BSN_A);
    let online = s.online_args(&gw, "auditor");

    let out = wijkpoort(cmd(
        &online,
        &["consents", "--bsn", BSN_A, "--format", "json"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for secret in [BSN_A, "Sanne", "Marieke", "mondeling", "ouders trekken"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    let consents = v["consents"].as_array().unwrap();
    let status: Vec<(&str, &str)> = consents
        .iter()
        .map(|c| {
            (
                c["consent_id"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(status, vec![("c-a1", "withdrawn"), ("c-a2", "active")]);
    assert_eq!(consents[0]["events"].as_array().unwrap().len(), 2);
    assert_eq!(consents[0]["events"][0]["basis"], "child_and_parent");
    assert_eq!(consents[0]["subject"], json!(pa));

    // All children: the gateway names each by pseudonym.
    let out = wijkpoort(cmd(&online, &["consents", "--format", "json"])).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["consents"].as_array().unwrap().len(), 3);
    assert!(v["consents"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["subject"].as_str().is_some_and(|p| p.len() == 64)));
    // By period: only c-a1 had an event in February.
    let out = wijkpoort(cmd(
        &online,
        &[
            "consents",
            "--from",
            "2026-02-01",
            "--to",
            "2026-02-28",
            "--format",
            "json",
        ],
    ))
    .await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["consents"].as_array().unwrap().len(), 1);

    // As FHIR Consent resources.
    let out = wijkpoort(cmd(
        &online,
        &["consents", "--bsn", BSN_A, "--format", "fhir"],
    ))
    .await;
    let bundle: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    let resources: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    assert_eq!(resources.len(), 2);
    for (c, status) in resources.iter().zip(["inactive", "active"]) {
        assert_eq!(c["resourceType"], "Consent");
        assert_eq!(c["status"], status);
        assert!(c["scope"]["coding"][0]["code"].is_string());
        assert!(!c["category"].as_array().unwrap().is_empty());
        assert_eq!(c["patient"]["identifier"]["value"], json!(pa));
        assert!(c["policy"][0]["uri"].is_string(), "ppc-1");
        assert_eq!(
            c["provision"]["actor"][0]["reference"]["identifier"]["value"],
            DEV_WIJKTEAM_ID
        );
    }
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_export_has_the_required_r4_elements() {
    let mut s = Setup::new().await;
    let gw = s.start_practice().await;
    two_children(&gw).await;
    let pa = pseudonym(&gw, BSN_A);
    let out = wijkpoort(cmd(
        &s.online_args(&gw, "auditor"),
        &["export", "--format", "fhir", "--bsn", BSN_A],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stdout(&out).contains(BSN_A));
    let bundle: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "collection");
    assert!(chrono::DateTime::parse_from_rfc3339(bundle["timestamp"].as_str().unwrap()).is_ok());
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    let mut urls = std::collections::HashSet::new();
    for entry in entries {
        let url = entry["fullUrl"].as_str().unwrap();
        assert!(url.starts_with("urn:uuid:") && url.len() == 45, "{url}");
        assert!(urls.insert(url.to_string()), "fullUrl must be unique");
        let ev = &entry["resource"];
        assert_eq!(ev["resourceType"], "AuditEvent");
        let id = ev["id"].as_str().unwrap();
        assert!(
            id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        );
        // type: 1..1 Coding
        assert_eq!(
            ev["type"]["system"],
            "http://dicom.nema.org/resources/ontology/DCM"
        );
        assert!(ev["type"]["code"].is_string());
        assert!(["C", "R", "U", "D", "E"].contains(&ev["action"].as_str().unwrap()));
        assert!(chrono::DateTime::parse_from_rfc3339(ev["recorded"].as_str().unwrap()).is_ok());
        assert!(["0", "4", "8", "12"].contains(&ev["outcome"].as_str().unwrap()));
        // agent: 1..*, each with who and requestor
        let agents = ev["agent"].as_array().unwrap();
        assert!(!agents.is_empty());
        for a in agents {
            assert!(a["requestor"].is_boolean());
            assert!(a["who"].is_object());
        }
        assert!(agents
            .iter()
            .any(|a| a["requestor"] == true && a["who"]["identifier"]["value"] == "dr.jansen"));
        // source.observer 1..1
        assert_eq!(
            ev["source"]["observer"]["identifier"]["value"],
            DEV_PRACTICE_ID
        );
        // entity: the message and the patient pseudonym
        let entities = ev["entity"].as_array().unwrap();
        let message = entities
            .iter()
            .find(|e| e["what"]["identifier"]["system"] == "urn:wijkpoort:message-id")
            .unwrap();
        assert_eq!(message["what"]["identifier"]["value"], "msg-a");
        assert_eq!(message["detail"][0]["valueString"], "referral");
        let patient = entities.iter().find(|e| e["role"]["code"] == "1").unwrap();
        assert_eq!(patient["what"]["identifier"]["value"], json!(pa));
        assert_eq!(
            patient["role"]["system"],
            "http://terminology.hl7.org/CodeSystem/object-role"
        );
    }
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_consultation_is_found_by_message_id_on_both_gateways() {
    let mut s = Setup::new().await;
    let practice = s.start_practice().await;
    let wijkteam = s.start_wijkteam().await;
    let mut his = s.client(Role::Practice, "poh.jeugd");
    let id = submit(
        &mut his,
        &json!({"type": "consultation", "to": "wijkteam", "body": {"question": "Hoe verwijzen wij bij slaapproblemen?"}}),
    )
    .await;
    wait_delivered(&mut his, &id).await;
    for (gw, expected) in [
        (&practice, Event::MessageDelivered),
        (&wijkteam, Event::MessageReceived),
    ] {
        let out = wijkpoort(cmd(
            &s.online_args(gw, "auditor"),
            &["records", "--message-id", &id, "--format", "json"],
        ))
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let page: RecordPage = serde_json::from_slice(&out.stdout).unwrap();
        assert!(page
            .records
            .iter()
            .all(|r| r.event.message_id.as_deref() == Some(id.as_str())));
        assert!(
            page.records.iter().any(|r| r.event.event == expected),
            "{:?}",
            page.records
        );
    }
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_epilogue_report_and_verify_run_in_process() {
    let mut s = Setup::new().await;
    let gw = s.start_practice().await;
    two_children(&gw).await;
    gw.stop().await.unwrap();
    let cfg = path(&s.kit.practice_config);
    let report = ["--config", &cfg, "--user", "demo", "report", "--bsn", BSN_A];
    assert_eq!(wijkpoort::audit::cli::run_words(report).await, 0);
    let verify = ["--config", &cfg, "--user", "demo", "verify"];
    assert_eq!(wijkpoort::audit::cli::run_words(verify).await, 0);
    let raw = Raw::open(&s.store_dir(Role::Practice));
    let reads = (1..=raw.last_seq())
        .filter(|q| raw.record(*q).event.event == Event::AuditRead)
        .count();
    assert_eq!(reads, 2, "both in-process reads are on record");
}

/// Regression guard: recording an offline read signs a checkpoint with the config's key,
/// which on another gateway's store would make that store's log fail verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_read_of_another_gateways_store_is_not_written_to_it() {
    let mut s = Setup::new().await;
    let wijkteam = s.start_wijkteam().await;
    wijkteam.stop().await.unwrap();
    let other = path(&s.dir.path().join("store-wijkteam"));
    let out = wijkpoort(cmd(
        &s.offline_args(),
        &["--store", &other, "records", "--limit", "1"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("not recorded"), "{}", stderr(&out));
    let wijkteam_cfg = path(&s.kit.wijkteam_config);
    let out = wijkpoort(args(&["audit", "--config", &wijkteam_cfg, "verify"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Records committed in one group share index entries (one per child, message and
/// millisecond); each must still be found, exactly, by every index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_committed_together_are_each_found_by_child_message_and_period() {
    use wijkpoort::audit::query::{records, RecordQuery};

    let mut s = Setup::new().await;
    let gw = s.start_practice().await;
    let pa = Some(pseudonym(&gw, BSN_A));
    let pb = Some(pseudonym(&gw, BSN_B));
    let before = last_record(&gw).seq;
    let from = chrono::Utc::now();
    let events = vec![
        user_event(
            "dr.jansen",
            Event::MessageAccepted,
            pa.clone(),
            Some("msg-a"),
        ),
        user_event(
            "dr.jansen",
            Event::MessageAccepted,
            pb.clone(),
            Some("msg-b"),
        ),
        user_event("dr.jansen", Event::MessageQueued, pa.clone(), Some("msg-a")),
        user_event("dr.jansen", Event::ConsentRecorded, None, None),
        user_event("dr.jansen", Event::MessageQueued, pb.clone(), Some("msg-b")),
        user_event("dr.jansen", Event::MessageQueued, pa.clone(), Some("msg-a")),
    ];
    store(&gw).commit_audit(events).await.unwrap();
    let seq = |i: u64| before + i;
    let found = |q: RecordQuery| -> Vec<u64> {
        let page = records(store(&gw), &q).unwrap();
        page.records.iter().map(|r| r.seq).collect()
    };

    let by_child = |p: &Option<String>| RecordQuery {
        subject: p.clone(),
        ..Default::default()
    };
    assert_eq!(found(by_child(&pa)), vec![seq(1), seq(3), seq(6)]);
    assert_eq!(found(by_child(&pb)), vec![seq(2), seq(5)]);
    let by_message = |id: &str| RecordQuery {
        message_id: Some(id.into()),
        ..Default::default()
    };
    assert_eq!(found(by_message("msg-a")), vec![seq(1), seq(3), seq(6)]);
    assert_eq!(found(by_message("msg-b")), vec![seq(2), seq(5)]);
    let period = RecordQuery {
        from: Some(from),
        ..Default::default()
    };
    assert_eq!(found(period), (1..=6).map(seq).collect::<Vec<_>>());
    gw.stop().await.unwrap();
}

/// An index entry whose run of sequence numbers is damaged is reported, not skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_index_entry_is_reported_as_malformed() {
    use wijkpoort::audit::query::{records, RecordQuery};
    use wijkpoort::audit::AuditError;

    let mut s = Setup::new().await;
    let gw = s.start_practice().await;
    let pa = Some(pseudonym(&gw, BSN_A));
    let events = vec![
        user_event(
            "dr.jansen",
            Event::MessageAccepted,
            pa.clone(),
            Some("msg-a"),
        ),
        user_event("dr.jansen", Event::MessageQueued, pa.clone(), Some("msg-a")),
    ];
    store(&gw).commit_audit(events).await.unwrap();
    gw.stop().await.unwrap();

    let raw = Raw::open(&s.store_dir(Role::Practice));
    let index = raw.db.open_tree("audit_by_subject").unwrap();
    let key = index
        .scan_prefix(pa.as_deref().unwrap().as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .0;
    index.insert(&key, vec![1u8, 2, 3]).unwrap();
    raw.db.flush().unwrap();
    drop((index, raw));

    let store =
        retry_open(|| wijkpoort::store::Store::open_read_only(&s.store_dir(Role::Practice)));
    let q = RecordQuery {
        subject: pa,
        ..Default::default()
    };
    assert!(matches!(
        records(&store, &q),
        Err(AuditError::MalformedKey {
            tree: "audit_by_subject"
        })
    ));
}
