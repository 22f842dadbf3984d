//! FHIR R4 output for auditors: audit records as `AuditEvent` resources and consent
//! histories as `Consent` resources, each set in a `Bundle` of type `collection`.
//!
//! Built to the R4 cardinalities: `AuditEvent` has `type` (Coding, DICOM codes),
//! `recorded`, `agent` 1..* each with `who` and `requestor`, and `source.observer`;
//! optional `subtype`, `action` (C/R/U/D/E), `outcome` (0/4/8), `outcomeDesc`, and
//! `entity` for the message (`what` = message id), the child (`what` = pseudonym, role
//! Patient) and the consent. For an IHE ATNA repository each event also has
//! `purposeOfEvent`, Export and Import events their Source (DICOM 110153) and
//! Destination (110152) agents, every agent whose address is on record `agent.network`,
//! and security alerts a DICOM subtype (110126, 110132). `Consent` has `status`,
//! `scope`, `category`, `patient` (ppc-2), `policy` (ppc-1), a permit `provision`, and
//! for a consent recorded here `organization`, `performer` (by relationship),
//! `policyRule` and `sourceAttachment` (title and hash). The child is named by pseudonym
//! only and nobody by name: no BSN, name or free text leaves through an export (the
//! identified `Consent` for systems that may see the child is [`crate::consent`]'s).
//!
//! Independent check: `java -jar validator_cli.jar bundle.json -version 4.0.1` (the HL7
//! FHIR validator) validates the output; the tests check the required elements.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::query::ConsentHistory;
use super::{Actor, AuditRecord, Event, Outcome};

/// Identifier system of the child's pseudonym.
pub const PSEUDONYM_SYSTEM: &str = "urn:wijkpoort:subject-pseudonym";
/// Identifier system of message ids.
pub const MESSAGE_ID_SYSTEM: &str = "urn:wijkpoort:message-id";
/// Identifier system of consent ids.
pub const CONSENT_ID_SYSTEM: &str = "urn:wijkpoort:consent-id";
/// Identifier system of local users (named in the local API's header).
pub const LOCAL_USER_SYSTEM: &str = "urn:wijkpoort:local-user";
/// Code system of wijkpoort's own event names (in `subtype`).
pub const EVENT_SYSTEM: &str = "urn:wijkpoort:audit-event";
/// Code system of message types.
pub const MESSAGE_TYPE_SYSTEM: &str = "urn:wijkpoort:message-type";
/// The Dutch NamingSystem of URA numbers (8 digits).
pub const URA_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/ura";
/// Organisation identifiers other than URA numbers (OIN, AGB).
pub const ORGANISATION_SYSTEM: &str = "urn:wijkpoort:organisation-id";

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

fn instant(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn organisation(id: &str) -> Value {
    let system = if id.len() == 8 && id.bytes().all(|b| b.is_ascii_digit()) {
        URA_SYSTEM
    } else {
        ORGANISATION_SYSTEM
    };
    json!({ "type": "Organization", "identifier": { "system": system, "value": id } })
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "system": system, "code": code, "display": display })
}

/// DICOM event type and FHIR action for an event.
fn kind(e: Event) -> (&'static str, &'static str, &'static str) {
    use Event::*;
    match e {
        MessageAccepted | MessageQueued => ("110106", "Export", "C"),
        MessageFiltered => ("110106", "Export", "U"),
        MessageDelivered | MessageWithheld | MessageExpired => ("110106", "Export", "E"),
        MessageReceived => ("110107", "Import", "C"),
        MessageAcknowledged => ("110107", "Import", "U"),
        PersonalDataRead => ("110110", "Patient Record", "R"),
        ConsentRecorded | ConsentMirrored => ("110110", "Patient Record", "C"),
        ConsentWithdrawn | ConsentUpdated => ("110110", "Patient Record", "U"),
        AuditRead => ("110101", "Audit Log Used", "R"),
        MessageRefused | CertificateRefused | CredentialsReloaded => {
            ("110113", "Security Alert", "E")
        }
        GatewayStarted | GatewayStopped => ("110100", "Application Activity", "E"),
        RecordsPurged => ("110110", "Patient Record", "D"),
    }
}

/// The DICOM Security Alert subtype of a refusal: a caller whose certificate or
/// identity failed is Node Authentication (110126); a message refused for what it
/// carries (consent, policy, limits) is Use of Restricted Function (110132).
fn alert_subtype(e: &super::AuditEvent) -> (&'static str, &'static str) {
    const NODE_AUTHENTICATION: (&str, &str) = ("110126", "Node Authentication");
    const RESTRICTED: (&str, &str) = ("110132", "Use of Restricted Function");
    if e.event == Event::CertificateRefused {
        return NODE_AUTHENTICATION;
    }
    // A local user's refused submission is about what it carries, whatever its code.
    if matches!(e.actor, Actor::User { .. }) {
        return RESTRICTED;
    }
    let code = e
        .reason
        .as_deref()
        .and_then(|r| r.split_once(':'))
        .map_or("", |(c, _)| c.trim());
    match code {
        "unknown_peer"
        | "from_mismatch"
        | "bad_signature"
        | "missing_signature"
        | "certificate_expired"
        | "certificate_revoked"
        | "not_an_auditor" => NODE_AUTHENTICATION,
        _ => RESTRICTED,
    }
}

/// Why the event happened (`purposeOfEvent`, v3 PurposeOfUse): an exchange or consent
/// about a child is for its care (TREAT), reading the audit log is compliance (HCOMPL),
/// the gateway's own events and refused connections are system administration.
fn purpose_of_event(dicom_type: &str) -> (&'static str, &'static str) {
    match dicom_type {
        "110106" | "110107" | "110110" => ("TREAT", "treatment"),
        "110101" => ("HCOMPL", "health compliance"),
        _ => ("HSYSADMIN", "health system administration"),
    }
}

/// `agent.network` for an address as stored (`IP:PORT`, `[IPv6]:PORT`): the IP, type
/// 2 (IP address).
fn network(remote: &str) -> Value {
    let address = remote
        .rsplit_once(':')
        .map_or(remote, |(ip, _)| ip)
        .trim_matches(['[', ']']);
    json!({ "address": address, "type": "2" })
}

/// Whether an agent's `who` is the organisation `org`.
fn names_organisation(agent: &Value, org: &str) -> bool {
    agent["who"]["type"] == "Organization" && agent["who"]["identifier"]["value"] == org
}

/// A deterministic `urn:uuid:` from a record hash, so an export is reproducible.
fn urn_uuid(hash: &str) -> String {
    let mut h: Vec<char> = hash
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(32)
        .collect();
    h.resize(32, '0');
    h[12] = '5';
    h[16] = match h[16].to_digit(16).unwrap_or(0) & 0x3 {
        0 => '8',
        1 => '9',
        2 => 'a',
        _ => 'b',
    };
    let s: String = h.into_iter().collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

/// One audit record as a FHIR R4 `AuditEvent`. `observer` is the gateway's identity.
pub fn audit_event(r: &AuditRecord, observer: &str) -> Value {
    let e = &r.event;
    let (code, display, action) = kind(e.event);
    let mut subtype = vec![coding(EVENT_SYSTEM, &e.event.name(), &e.event.name())];
    match e.event {
        Event::GatewayStarted => subtype.push(coding(DCM, "110120", "Application Start")),
        Event::GatewayStopped => subtype.push(coding(DCM, "110121", "Application Stop")),
        Event::MessageRefused | Event::CertificateRefused => {
            let (code, display) = alert_subtype(e);
            subtype.push(coding(DCM, code, display));
        }
        Event::CredentialsReloaded => subtype.push(coding(DCM, "110129", "Security Configuration")),
        _ => {}
    }
    let outcome = match e.outcome {
        Outcome::Success => "0",
        Outcome::Refused => "4",
        Outcome::Failure => "8",
    };

    let mut agents = Vec::new();
    // The organisation that acted, when the actor is one (or acts for one).
    let mut actor_org: Option<&str> = None;
    match &e.actor {
        Actor::User { id } => {
            agents.push(json!({
                "type": { "coding": [coding(
                    "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                    "humanuser", "human user")] },
                "who": { "identifier": { "system": LOCAL_USER_SYSTEM, "value": id } },
                "requestor": true
            }));
            if let Some(org) = &e.on_behalf_of {
                agents.push(json!({ "who": organisation(org), "requestor": false }));
                actor_org = Some(org);
            }
        }
        Actor::Peer {
            organisation: org,
            certificate_serial,
            remote,
        }
        | Actor::Auditor {
            organisation: org,
            certificate_serial,
            remote,
        } => {
            let mut agent = json!({
                "who": organisation(org),
                "altId": format!("certificate serial {certificate_serial}"),
                "requestor": true
            });
            if let Some(remote) = remote {
                agent["network"] = network(remote);
            }
            agents.push(agent);
            actor_org = Some(org);
        }
        Actor::Gateway => {
            let org = e.on_behalf_of.as_deref().unwrap_or(observer);
            agents.push(json!({ "who": organisation(org), "requestor": true }));
            actor_org = Some(org);
        }
        Actor::Unknown { remote } => {
            agents.push(json!({
                "who": { "display": "unidentified client" },
                "requestor": true,
                "network": network(remote)
            }));
        }
    }
    if let Some(peer) = &e.peer {
        if actor_org != Some(peer.as_str()) {
            agents.push(json!({ "who": organisation(peer), "requestor": false }));
        }
    }
    // IHE ATNA: an Export names its Source (this gateway) and Destination (the peer), an
    // Import its Source (the peer, the sender) and Destination (this gateway), each as
    // an agent with the DICOM role code.
    let us = e.on_behalf_of.as_deref().unwrap_or(observer);
    let ends = match code {
        "110106" => Some((Some(us), e.peer.as_deref())),
        "110107" => Some((e.peer.as_deref(), Some(us))),
        _ => None,
    };
    if let Some((source, destination)) = ends {
        for (org, role) in [
            (source, coding(DCM, "110153", "Source Role ID")),
            (destination, coding(DCM, "110152", "Destination Role ID")),
        ] {
            let Some(org) = org else { continue };
            match agents.iter_mut().find(|a| names_organisation(a, org)) {
                Some(agent) => agent["type"] = json!({ "coding": [role] }),
                None => agents.push(json!({
                    "type": { "coding": [role] },
                    "who": organisation(org),
                    "requestor": false
                })),
            }
        }
    }

    let mut entities = Vec::new();
    if let Some(id) = &e.message_id {
        let mut entity = json!({
            "what": { "identifier": { "system": MESSAGE_ID_SYSTEM, "value": id } },
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "4", "Domain Resource")
        });
        let mut details = Vec::new();
        if let Some(t) = e.message_type {
            details.push(json!({ "type": "message-type", "valueString": t.as_str() }));
        }
        if !e.changed_fields.is_empty() {
            details.push(json!({
                "type": "minimisation-changed-fields",
                "valueString": e.changed_fields.join(",")
            }));
        }
        if !details.is_empty() {
            entity["detail"] = Value::Array(details);
        }
        entities.push(entity);
    }
    for id in &e.read_messages {
        entities.push(json!({
            "what": { "identifier": { "system": MESSAGE_ID_SYSTEM, "value": id } },
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "4", "Domain Resource")
        }));
    }
    for p in e.subject.iter().chain(
        e.read_subjects
            .iter()
            .filter(|s| e.subject.as_ref() != Some(*s)),
    ) {
        entities.push(json!({
            "what": { "type": "Patient", "identifier": { "system": PSEUDONYM_SYSTEM, "value": p } },
            "type": coding(ENTITY_TYPE, "1", "Person"),
            "role": coding(OBJECT_ROLE, "1", "Patient")
        }));
    }
    if let Some(c) = &e.consent_id {
        entities.push(json!({
            "what": { "type": "Consent", "identifier": { "system": CONSENT_ID_SYSTEM, "value": c } },
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "4", "Domain Resource")
        }));
    }

    let mut resource = Map::new();
    resource.insert("resourceType".into(), json!("AuditEvent"));
    resource.insert("id".into(), json!(format!("audit-{}", r.seq)));
    resource.insert("type".into(), coding(DCM, code, display));
    resource.insert("subtype".into(), Value::Array(subtype));
    resource.insert("action".into(), json!(action));
    resource.insert("recorded".into(), json!(instant(&r.time)));
    resource.insert("outcome".into(), json!(outcome));
    if let Some(reason) = &e.reason {
        resource.insert("outcomeDesc".into(), json!(reason));
    }
    let (purpose, purpose_display) = purpose_of_event(code);
    resource.insert(
        "purposeOfEvent".into(),
        json!([{ "coding": [coding(ACT_REASON, purpose, purpose_display)] }]),
    );
    resource.insert("agent".into(), Value::Array(agents));
    resource.insert(
        "source".into(),
        json!({
            "site": observer,
            "observer": organisation(observer),
            "type": [coding(SOURCE_TYPE, "4", "Application Server")]
        }),
    );
    if !entities.is_empty() {
        resource.insert("entity".into(), Value::Array(entities));
    }
    Value::Object(resource)
}

fn bundle(entries: Vec<(String, Value)>) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": instant(&Utc::now()),
        "entry": entries
            .into_iter()
            .map(|(url, resource)| json!({ "fullUrl": url, "resource": resource }))
            .collect::<Vec<_>>()
    })
}

/// Audit records as a `Bundle` (type `collection`) of `AuditEvent`s.
pub fn audit_bundle(records: &[AuditRecord], observer: &str) -> Value {
    bundle(
        records
            .iter()
            .map(|r| (urn_uuid(&r.hash), audit_event(r, observer)))
            .collect(),
    )
}

/// Whether `s` may be a FHIR resource id.
fn fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// One consent history as a FHIR R4 `Consent`, as the auditor may see it: the child by
/// pseudonym; for a consent recorded here, `organization` this gateway (the practice),
/// the performers by relationship only (contained `RelatedPerson`s without a name),
/// `policyRule` the WGBO rule, and `sourceAttachment` the evidence's title and hash,
/// never its text. `observer` is the gateway's identity.
pub fn consent(h: &ConsentHistory, observer: &str) -> Value {
    let status = match h.status.as_str() {
        "active" | "not_yet_valid" => "active",
        _ => "inactive",
    };
    let patient = match &h.subject {
        Some(p) => {
            json!({ "type": "Patient", "identifier": { "system": PSEUDONYM_SYSTEM, "value": p } })
        }
        None => json!({ "type": "Patient", "display": "child not named (pseudonym unavailable)" }),
    };
    let mut provision = json!({ "type": "permit" });
    let mut period = Map::new();
    if let Some(f) = &h.valid_from {
        period.insert("start".into(), json!(f));
    }
    if let Some(u) = &h.valid_until {
        period.insert("end".into(), json!(u));
    }
    if !period.is_empty() {
        provision["period"] = Value::Object(period);
    }
    if let Some(r) = &h.recipient {
        provision["actor"] = json!([{
            "role": { "coding": [coding(
                "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                "IRCP", "information recipient")] },
            "reference": organisation(r)
        }]);
    }
    if !h.types.is_empty() {
        provision["action"] = Value::Array(
            h.types
                .iter()
                .map(|t| json!({ "coding": [{ "system": MESSAGE_TYPE_SYSTEM, "code": t }] }))
                .collect(),
        );
    }
    let mut c = json!({
        "resourceType": "Consent",
        "identifier": [{ "system": CONSENT_ID_SYSTEM, "value": h.consent_id }],
        "status": status,
        "scope": { "coding": [coding(
            "http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", "Privacy Consent")] },
        "category": [{ "coding": [coding("http://loinc.org", "59284-0", "Patient Consent")] }],
        "patient": patient,
        "policy": [{ "authority": "https://wetten.overheid.nl", "uri": "https://wetten.overheid.nl/BWBR0005290" }],
        "provision": provision
    });
    if fhir_id(&h.consent_id) {
        c["id"] = json!(h.consent_id);
    }
    if let Some(p) = &h.particulars {
        c["organization"] = json!([organisation(observer)]);
        let mut contained = Vec::new();
        let mut performers = Vec::new();
        for (i, role) in p.performer_roles.iter().enumerate() {
            let code = match role.as_str() {
                "parent" => ("PRN", "parent"),
                "guardian" => ("GUARD", "guardian"),
                _ => {
                    // The child itself: the patient, by pseudonym.
                    performers.push(c["patient"].clone());
                    continue;
                }
            };
            let id = format!("performer-{}", i + 1);
            contained.push(json!({
                "resourceType": "RelatedPerson",
                "id": id,
                "patient": c["patient"].clone(),
                "relationship": [{ "coding": [coding(
                    "http://terminology.hl7.org/CodeSystem/v3-RoleCode", code.0, code.1)] }]
            }));
            performers.push(json!({ "reference": format!("#{id}"), "display": code.1 }));
        }
        if !contained.is_empty() {
            c["contained"] = Value::Array(contained);
        }
        if !performers.is_empty() {
            c["performer"] = Value::Array(performers);
        }
        if let Some(rule) = &p.wgbo_rule {
            c["policyRule"] = json!({ "text": rule });
        }
        if let Some(hash) = &p.evidence_sha1 {
            let mut attachment = json!({
                "contentType": "text/plain; charset=utf-8",
                "title": "Evidence of consent (recorded at the practice; its text is not disclosed)",
                "hash": hash
            });
            if let Some(on) = &p.given_on {
                attachment["creation"] = json!(on);
            }
            c["sourceAttachment"] = attachment;
        }
    }
    if let Some(at) = h.events.first().and_then(|e| e.at.clone()) {
        c["dateTime"] = json!(at);
    }
    c
}

/// Consent histories as a `Bundle` (type `collection`) of `Consent`s.
pub fn consent_bundle(histories: &[ConsentHistory], observer: &str) -> Value {
    bundle(
        histories
            .iter()
            .map(|h| {
                let digest = ring::digest::digest(&ring::digest::SHA256, h.consent_id.as_bytes());
                (
                    urn_uuid(&hex::encode(digest.as_ref())),
                    consent(h, observer),
                )
            })
            .collect(),
    )
}
