//! FHIR R4 output for auditors: audit records as `AuditEvent` resources and consent
//! histories as `Consent` resources, each set in a `Bundle` of type `collection`.
//!
//! One builder per resource, and one disclosure: the auditor's. [`audit_event`] and
//! [`consent`] are the only places a FHIR resource is made, and [`patient`] the only
//! place the child is referenced (in an `AuditEvent`'s entity, a `Consent`'s `patient`,
//! a `RelatedPerson`'s `patient`): by pseudonym. Nobody is named: performers appear by
//! relationship, the evidence by title and hash, an exception's reason not at all — so
//! no BSN, name or free text leaves through an export. (An identified builder for the
//! practice's own records once stood beside this one; nothing in the product used it, so
//! it was removed rather than left to drift and leak. The local API answers the system
//! next to the gateway, which holds the identified data already, in its own JSON.)
//!
//! Built to the R4 cardinalities: `AuditEvent` has `type` (Coding, DICOM codes),
//! `recorded`, `agent` 1..* each with `who` and `requestor`, and `source.observer`;
//! optional `subtype`, `action` (C/R/U/D/E), `outcome` (0/4/8), `outcomeDesc`, and
//! `entity` for the message (`what` = message id), the child (`what` = pseudonym, role
//! Patient) and the consent. For an IHE ATNA repository each event also has
//! `purposeOfEvent`, Export and Import events their Source (DICOM 110153) and
//! Destination (110152) agents, every agent whose address is on record `agent.network`
//! (a caller's address it connected from; for a message the relay sent, the peer's
//! configured address it connected to), and security alerts a DICOM subtype (110126,
//! 110132). `Consent` has `status`, `scope`, `category`, `patient` (ppc-2), `policy`
//! (ppc-1), a permit `provision`, and for a consent recorded here `organization` (the
//! practice), `performer` (by relationship), `policyRule` (the WGBO rule) and
//! `sourceAttachment` (title and hash).
//!
//! Independent check: `java -jar validator_cli.jar bundle.json -version 4.0.1` (the HL7
//! FHIR validator) validates the output; the tests check the required elements, and
//! `tests/integration/fhir_export.rs` parses real exports with the `fhir.resources` R4
//! models.

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

/// `agent.network` for an address as stored (`HOST:PORT`, `[IPv6]:PORT`): the host
/// without the port, of type 2 (IP address) when it is one, else 1 (machine name), as
/// the R4 `network-type` value set has them.
fn network(stored: &str) -> Value {
    let host = match stored.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => stored,
    };
    let host = host.trim_matches(['[', ']']);
    let kind = if host.parse::<std::net::IpAddr>().is_ok() {
        "2"
    } else {
        "1"
    };
    json!({ "address": host, "type": kind })
}

/// The child, as every resource here references it: a `Patient` by pseudonym, or by a
/// display saying it is not named when the pseudonym is unknown (a consent history read
/// without the gateway's secret).
pub fn patient(pseudonym: Option<&str>) -> Value {
    match pseudonym {
        Some(p) => {
            json!({ "type": "Patient", "identifier": { "system": PSEUDONYM_SYSTEM, "value": p } })
        }
        None => json!({ "type": "Patient", "display": "child not named (pseudonym unavailable)" }),
    }
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
    // The peer's address the relay connected to, for a message sent to it.
    if let (Some(peer), Some(address)) = (&e.peer, &e.peer_address) {
        if let Some(agent) = agents.iter_mut().find(|a| names_organisation(a, peer)) {
            agent["network"] = network(address);
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
            "what": patient(Some(p)),
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
    let patient = patient(h.subject.as_deref());
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

#[cfg(test)]
mod tests {
    //! The builders, fed from consent events as the registry stores them and read back
    //! through the consent log's own reader, so the path is the export's.

    use chrono::{NaiveDate, NaiveDateTime, TimeZone};

    use super::*;
    use crate::audit::evidence::{attachment_hash, base64};
    use crate::audit::query::history;
    use crate::audit::AuditEvent;
    use crate::consent::{
        Child, ConsentEvent, ConsentRecord, ConsentRequest, ConsentStatus, ConsentSummary,
        Performer, PerformerRole, Scope,
    };
    use crate::message::{Bsn, MessageType};

    const BSN: &str = "111222333";
    const PSEUDONYM: &str = "pseudonym-of-the-child";
    const PRACTICE: &str = "87654321";
    const WIJKTEAM: &str = "urn:oid:2.16.528.1.1007.3.3.1234567";
    const CHILD_NAME: &str = "Sanne de Vries";
    const PARENT_NAME: &str = "Marieke de Vries";
    const EVIDENCE: &str = "mondeling tijdens consult";
    const REASON: &str = "thuissituatie onveilig volgens de POH-Jeugd";

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn ts(s: &str) -> DateTime<Utc> {
        Utc.from_utc_datetime(&NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap())
    }

    /// A consent for a 13-year-old, valid 2026-03-01 ..= 2027-03-01: by the child and a
    /// parent, or (with `exception`) by the child alone.
    fn recorded(id: &str, exception: Option<&str>) -> ConsentEvent {
        let mut performers = vec![Performer {
            role: PerformerRole::Child,
            name: CHILD_NAME.into(),
        }];
        if exception.is_none() {
            performers.push(Performer {
                role: PerformerRole::Parent,
                name: PARENT_NAME.into(),
            });
        }
        let request = ConsentRequest {
            child: Child {
                bsn: Bsn::try_from(BSN.to_string()).unwrap(),
                birth_date: d("2013-01-15"),
                name: Some(CHILD_NAME.into()),
            },
            performers,
            scope: Scope {
                types: vec![MessageType::Referral, MessageType::Feedback],
                recipient: WIJKTEAM.into(),
            },
            valid_from: d("2026-03-01"),
            valid_until: d("2027-03-01"),
            given_on: Some(d("2026-03-01")),
            evidence: EVIDENCE.into(),
            exception: exception.map(str::to_string),
        };
        let record = ConsentRecord::from_request(
            id.into(),
            request,
            "dr. Bakker".into(),
            ts("2026-03-01 10:00"),
            d("2026-03-01"),
            &crate::consent::ConsentRules::DEFAULT,
        )
        .unwrap();
        ConsentEvent::Recorded { record }
    }

    fn withdrawn(id: &str) -> ConsentEvent {
        ConsentEvent::Withdrawn {
            consent_id: id.into(),
            at: ts("2026-04-01 12:00"),
            by: "dr. Bakker".into(),
            reason: "ouders trekken toestemming in".into(),
        }
    }

    fn mirrored(id: &str) -> ConsentEvent {
        ConsentEvent::Mirrored {
            summary: ConsentSummary {
                id: id.into(),
                subject_bsn: Bsn::try_from(BSN.to_string()).unwrap(),
                types: vec![MessageType::Referral, MessageType::Feedback],
                recipient: WIJKTEAM.into(),
                valid_from: d("2026-03-01"),
                valid_until: d("2027-03-01"),
                status: ConsentStatus::Active,
            },
            from_peer: PRACTICE.into(),
            at: ts("2026-03-02 08:00"),
        }
    }

    /// The auditor's `Consent` for `events` (stored as the registry stores them) on `today`.
    fn exported(id: &str, events: &[ConsentEvent], today: &str) -> Value {
        let raw: Vec<(u64, Vec<u8>)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64, serde_json::to_vec(e).unwrap()))
            .collect();
        let h = history(id, Some(PSEUDONYM.into()), &raw, None, d(today)).unwrap();
        consent(&h, PRACTICE)
    }

    #[test]
    fn consent_has_the_required_r4_elements_and_the_auditors_particulars() {
        let r = exported("c-1", &[recorded("c-1", None)], "2026-05-01");
        assert_eq!(r["resourceType"], "Consent");
        assert_eq!(r["id"], "c-1");
        assert_eq!(r["identifier"][0]["value"], "c-1");
        assert_eq!(r["status"], "active");
        assert_eq!(r["scope"]["coding"][0]["code"], "patient-privacy");
        assert_eq!(r["category"][0]["coding"][0]["code"], "59284-0");
        // ppc-2: privacy scope needs a patient — the child by pseudonym.
        assert_eq!(r["patient"]["identifier"]["system"], PSEUDONYM_SYSTEM);
        assert_eq!(r["patient"]["identifier"]["value"], PSEUDONYM);
        // ppc-1: policy or policyRule; both are here.
        assert_eq!(
            r["policy"][0]["uri"],
            "https://wetten.overheid.nl/BWBR0005290"
        );
        assert!(r["policyRule"]["text"]
            .as_str()
            .unwrap()
            .contains("7:450 lid 2"));
        assert_eq!(r["dateTime"], "2026-03-01T10:00:00Z");
        let p = &r["provision"];
        assert_eq!(p["type"], "permit");
        assert_eq!(p["period"]["start"], "2026-03-01");
        assert_eq!(p["period"]["end"], "2027-03-01");
        assert_eq!(p["actor"][0]["role"]["coding"][0]["code"], "IRCP");
        assert_eq!(p["actor"][0]["reference"]["identifier"]["value"], WIJKTEAM);
        let actions: Vec<&str> = p["action"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["coding"][0]["code"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["referral", "feedback"]);
        // organization: the practice that recorded it.
        assert_eq!(r["organization"][0]["identifier"]["system"], URA_SYSTEM);
        assert_eq!(r["organization"][0]["identifier"]["value"], PRACTICE);
        // Performers: the child as the patient (by pseudonym), the parent as a contained
        // RelatedPerson by relationship, referenced (dom-3), without a name.
        let perf = r["performer"].as_array().unwrap();
        assert_eq!(perf.len(), 2);
        assert_eq!(perf[0]["identifier"]["value"], PSEUDONYM);
        assert_eq!(perf[1]["reference"], "#performer-2");
        let related = &r["contained"][0];
        assert_eq!(related["resourceType"], "RelatedPerson");
        assert_eq!(related["id"], "performer-2");
        assert_eq!(related["relationship"][0]["coding"][0]["code"], "PRN");
        assert_eq!(related["patient"]["identifier"]["value"], PSEUDONYM);
        assert!(related.get("name").is_none());
        // Evidence: title and SHA-1 hash (base64), never its text.
        let a = &r["sourceAttachment"];
        assert_eq!(a["hash"], attachment_hash(EVIDENCE));
        assert!(a["title"].is_string());
        assert!(a.get("data").is_none());
        assert_eq!(a["creation"], "2026-03-01");
    }

    #[test]
    fn the_auditors_consent_names_nobody_and_carries_no_free_text() {
        for (id, events) in [
            ("c-1", vec![recorded("c-1", None), withdrawn("c-1")]),
            ("c-2", vec![recorded("c-2", Some(REASON))]),
        ] {
            let text = exported(id, &events, "2026-05-01").to_string();
            for secret in [BSN, CHILD_NAME, PARENT_NAME, "de Vries", EVIDENCE, REASON] {
                assert!(!text.contains(secret), "{secret:?} in {text}");
            }
            assert!(
                !text.contains(&base64(EVIDENCE.as_bytes())),
                "evidence as base64"
            );
        }
        // The exception is stated, its reason is not.
        let r = exported("c-2", &[recorded("c-2", Some(REASON))], "2026-05-01");
        assert!(r["policyRule"]["text"]
            .as_str()
            .unwrap()
            .contains("serious harm"));
        assert_eq!(r["performer"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn consent_status_follows_withdrawal_and_period() {
        let one = [recorded("c-1", None)];
        let both = [recorded("c-1", None), withdrawn("c-1")];
        let status =
            |events: &[ConsentEvent], day: &str| exported("c-1", events, day)["status"].clone();
        assert_eq!(status(&one, "2026-05-01"), "active");
        assert_eq!(status(&one, "2026-02-01"), "active"); // not yet valid: period says so
        assert_eq!(status(&one, "2027-03-02"), "inactive"); // expired
        assert_eq!(status(&both, "2026-05-01"), "inactive"); // withdrawn
    }

    #[test]
    fn a_mirrors_consent_still_satisfies_the_invariants() {
        let r = exported("c-1", &[mirrored("c-1")], "2026-05-01");
        assert_eq!(r["status"], "active");
        assert!(r["policy"][0]["uri"].is_string());
        assert_eq!(r["patient"]["identifier"]["value"], PSEUDONYM);
        assert_eq!(r["dateTime"], "2026-03-02T08:00:00Z");
        // A mirror knows nothing of who consented or on what evidence.
        for absent in [
            "performer",
            "organization",
            "policyRule",
            "sourceAttachment",
        ] {
            assert!(r.get(absent).is_none(), "{absent}");
        }
        assert!(!r.to_string().contains(BSN));

        let odd = exported("not a fhir id", &[mirrored("not a fhir id")], "2026-05-01");
        assert!(odd.get("id").is_none());
        assert_eq!(odd["identifier"][0]["value"], "not a fhir id");
    }

    #[test]
    fn the_child_is_referenced_one_way_in_every_resource() {
        let record = AuditRecord {
            seq: 7,
            time: ts("2026-03-01 10:00"),
            event: AuditEvent::new(Event::MessageAccepted, Outcome::Success, Actor::Gateway)
                .subject(Some(PSEUDONYM.into())),
            prev_hash: String::new(),
            hash: "ab".repeat(32),
        };
        let event = audit_event(&record, PRACTICE);
        let consent = exported("c-1", &[recorded("c-1", None)], "2026-05-01");
        assert_eq!(event["entity"][0]["what"], patient(Some(PSEUDONYM)));
        assert_eq!(consent["patient"], patient(Some(PSEUDONYM)));
        assert_eq!(consent["contained"][0]["patient"], patient(Some(PSEUDONYM)));
    }

    #[test]
    fn a_sent_messages_destination_has_the_peers_address() {
        let sent = |address: &str| AuditRecord {
            seq: 8,
            time: ts("2026-03-01 10:00"),
            event: AuditEvent::new(Event::MessageDelivered, Outcome::Success, Actor::Gateway)
                .on_behalf_of(PRACTICE)
                .peer(WIJKTEAM)
                .peer_address(Some(address.into())),
            prev_hash: String::new(),
            hash: "cd".repeat(32),
        };
        let destination = |address: &str| {
            audit_event(&sent(address), PRACTICE)["agent"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["type"]["coding"][0]["code"] == "110152")
                .cloned()
                .unwrap()
        };
        let by_ip = destination("127.0.0.1:8443");
        assert_eq!(by_ip["who"]["identifier"]["value"], WIJKTEAM);
        assert_eq!(
            by_ip["network"],
            json!({ "address": "127.0.0.1", "type": "2" })
        );
        let by_name = destination("wijkteam.gemeente.example:443");
        assert_eq!(
            by_name["network"],
            json!({ "address": "wijkteam.gemeente.example", "type": "1" })
        );
        let v6 = destination("[::1]:8443");
        assert_eq!(v6["network"], json!({ "address": "::1", "type": "2" }));
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }
}
