//! Unit tests of the consent module, one submodule per area, in this order: `wgbo` (who
//! must consent at which age), `fields` (validation of a request), `events` (folding events
//! into a state), `coverage` (does a consent cover a message) and `store` (derived state
//! through a real store). The helpers the areas share are here. (The FHIR `Consent` is
//! tested with its builder, in `audit::fhir`.)

use super::*;
use chrono::TimeZone;

mod coverage;
mod events;
mod fields;
mod store;
mod wgbo;

const BSN: &str = "111222333";
const OTHER_BSN: &str = "123456782";
const WIJKTEAM: &str = "urn:oid:2.16.528.1.1007.3.3.1234567";
const PRACTICE: &str = "ura:87654321";

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn ts(s: &str) -> DateTime<Utc> {
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    Utc.from_utc_datetime(&naive)
}

fn bsn(s: &str) -> Bsn {
    Bsn::try_from(s.to_owned()).unwrap()
}

fn performer(role: PerformerRole) -> Performer {
    let name = match role {
        PerformerRole::Child => "Sanne de Vries",
        PerformerRole::Parent => "Marieke de Vries",
        PerformerRole::Guardian => "Jan Jansen",
    };
    Performer {
        role,
        name: name.into(),
    }
}

fn request(
    birth: &str,
    given: &str,
    roles: &[PerformerRole],
    exception: Option<&str>,
) -> ConsentRequest {
    let given = d(given);
    ConsentRequest {
        child: Child {
            bsn: bsn(BSN),
            birth_date: d(birth),
            name: Some("Sanne de Vries".into()),
        },
        performers: roles.iter().copied().map(performer).collect(),
        scope: Scope {
            types: vec![MessageType::Referral, MessageType::Feedback],
            recipient: WIJKTEAM.into(),
        },
        valid_from: given,
        valid_until: given + chrono::Days::new(365),
        given_on: Some(given),
        evidence: "mondeling tijdens consult".into(),
        exception: exception.map(str::to_owned),
    }
}

/// A valid request for a 13-year-old with child and parent.
fn good_request() -> ConsentRequest {
    request(
        "2013-01-15",
        "2026-03-01",
        &[PerformerRole::Child, PerformerRole::Parent],
        None,
    )
}

const TODAY: &str = "2026-03-10";

// ---------------------------------------------------------------------------------------
// Events, shared by `events`, `coverage` and `store`
// ---------------------------------------------------------------------------------------

fn record(id: &str) -> ConsentRecord {
    // Valid 2026-03-01 ..= 2027-03-01.
    ConsentRecord::from_request(
        id.into(),
        good_request(),
        "dr. Bakker".into(),
        ts("2026-03-01 10:00"),
        d("2026-03-01"),
        &crate::consent::ConsentRules::DEFAULT,
    )
    .unwrap()
}

fn recorded(id: &str) -> ConsentEvent {
    ConsentEvent::Recorded { record: record(id) }
}

fn withdrawn(id: &str, at: &str) -> ConsentEvent {
    ConsentEvent::Withdrawn {
        consent_id: id.into(),
        at: ts(at),
        by: "dr. Bakker".into(),
        reason: "ouders trekken toestemming in".into(),
    }
}

fn summary(status: ConsentStatus) -> ConsentSummary {
    ConsentSummary {
        id: "c-1".into(),
        subject_bsn: bsn(BSN),
        types: vec![MessageType::Referral, MessageType::Feedback],
        recipient: WIJKTEAM.into(),
        valid_from: d("2026-03-01"),
        valid_until: d("2027-03-01"),
        status,
    }
}

fn mirrored(status: ConsentStatus) -> ConsentEvent {
    ConsentEvent::Mirrored {
        summary: summary(status),
        from_peer: PRACTICE.into(),
        at: ts("2026-03-02 08:00"),
    }
}

fn update(status: ConsentStatus, at: &str) -> ConsentEvent {
    ConsentEvent::UpdatedFromPeer {
        consent_id: "c-1".into(),
        status,
        at: ts(at),
        from_peer: PRACTICE.into(),
    }
}
