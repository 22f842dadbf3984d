//! For the unit tests of the data path (`send::tests`, `receive::tests`, `relay::tests`):
//! the parts of one gateway on a real sled store in a temporary directory, certificates
//! from one throw-away CA, consents written through the registry, and the audit records
//! read back from the store. Nothing here replaces a part of the gateway; it only builds
//! the real ones.

use std::sync::Arc;

use chrono::{Days, Months, NaiveDate};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

use crate::chain::{AuditEvent, AuditRecord};
use crate::clock::Clock;
use crate::config::{Peer, PeerName, Peers, Role};
use crate::consent::{
    registry, Child, ConsentEvent, ConsentRecord, ConsentRequest, Performer, PerformerRole, Scope,
};
use crate::dev::pki::{Authority, LeafSpec};
use crate::identity::OrgId;
use crate::live::Live;
use crate::local::Local;
use crate::message::{Bsn, MessageType};
use crate::minimise::{Minimiser, Policy};
use crate::outbox::Wakers;
use crate::pseudonym::Pseudonymiser;
use crate::receive::ReceivePath;
use crate::send::SendPath;
use crate::signing::Signer;
use crate::store::{Store, T};

pub(crate) const PRACTICE_ID: &str = crate::dev::pki::DEV_PRACTICE_ID;
pub(crate) const WIJKTEAM_ID: &str = crate::dev::pki::DEV_WIJKTEAM_ID;
/// A second wijkteam the practice is configured to reach.
pub(crate) const OTHER_WIJKTEAM_ID: &str = "00000001000000002000";
/// An organisation with a certificate from the same CA that no gateway here knows.
pub(crate) const STRANGER_ID: &str = "90000999";
pub(crate) const BSN: &str = "111222333";
pub(crate) const OTHER_BSN: &str = "123456782";
/// The local user who submits messages.
pub(crate) const USER: &str = "dr-bakker";
const SECRET: &[u8] = b"unit-test secret of at least thirty-two bytes";

/// One organisation: its identifier, certificate (DER) and signing key.
pub(crate) struct Party {
    pub identity: OrgId,
    pub cert: Vec<u8>,
    pub signer: Arc<Signer>,
    key: Vec<u8>,
}

/// A throw-away CA that issues the parties' certificates.
pub(crate) struct Pki {
    authority: Authority,
}

impl Pki {
    pub fn new() -> Pki {
        Pki {
            authority: Authority::new("unit test").expect("a test CA"),
        }
    }

    pub fn party(&self, organisation_id: &str) -> Party {
        let issued = self
            .authority
            .issue(&LeafSpec::new(organisation_id, "test", "test"))
            .expect("a test certificate");
        let key = PrivatePkcs8KeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key pem");
        let cert = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("cert pem");
        let signer = Signer::from_pkcs8(key.secret_pkcs8_der()).expect("signer");
        Party {
            identity: OrgId::new(organisation_id),
            cert: cert.to_vec(),
            signer: Arc::new(signer),
            key: key.secret_pkcs8_der().to_vec(),
        }
    }

    /// The issuing CAs of a gateway that trusts this CA (the `dev` rule, as without an
    /// `[[issuing_cas]]` section).
    pub fn issuers(&self) -> crate::issuers::Issuers {
        let ca = CertificateDer::from_pem_slice(self.authority.cert_pem.as_bytes()).expect("ca");
        crate::issuers::Issuers::from_trust_anchors(&[ca]).expect("issuers")
    }

    /// A relay's client config for `party`, trusting this CA.
    pub fn client_config(&self, party: &Party) -> Arc<rustls::ClientConfig> {
        let ca = CertificateDer::from_pem_slice(self.authority.cert_pem.as_bytes()).expect("ca");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("a CA root");
        crate::tls::client_config_from(
            Arc::new(roots),
            vec![CertificateDer::from(party.cert.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(party.key.clone())),
        )
        .expect("a client config")
    }
}

/// A loopback port that nothing listens on (bound once by us, then released).
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

pub(crate) fn peer(name: &str, identity: &str, may_send: &[MessageType]) -> Peer {
    Peer {
        name: PeerName::new(name),
        identity: OrgId::new(identity),
        host: "127.0.0.1".into(),
        port: closed_port(),
        may_send: may_send.to_vec(),
    }
}

pub(crate) fn bsn(s: &str) -> Bsn {
    Bsn::try_from(s.to_string()).expect("a valid BSN")
}

/// The parts of one gateway, on a store in its own temporary directory.
pub(crate) struct Parts {
    pub me: Party,
    pub local: Arc<Local>,
    pub peers: Live<Peers>,
    pub store: Store,
    pub minimiser: Live<Minimiser>,
    pub pseudonymiser: Pseudonymiser,
    pub wakers: Wakers,
    _dir: tempfile::TempDir,
}

impl Parts {
    pub fn new(role: Role, me: Party, peers: Vec<Peer>) -> Parts {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let key = Arc::new(crate::seal::DataKey::random().expect("a data key"));
        let store = Store::open(dir.path(), me.signer.clone(), key).expect("a store");
        let local = Arc::new(Local {
            role,
            identity: me.identity.clone(),
            signer: me.signer.clone(),
            clock: Clock::system(),
        });
        let wakers = Wakers::for_peers(peers.iter().map(|p| &p.name));
        Parts {
            me,
            local,
            peers: Live::new(Peers::new(peers)),
            store,
            minimiser: Live::new(Minimiser::new(Policy::default_policy(), SECRET)),
            pseudonymiser: Pseudonymiser::new(SECRET),
            wakers,
            _dir: dir,
        }
    }

    /// The practice, with peers `wijkteam` and `other-wijkteam` (which may send feedback).
    pub fn practice(pki: &Pki) -> Parts {
        Parts::new(
            Role::Practice,
            pki.party(PRACTICE_ID),
            vec![
                peer("wijkteam", WIJKTEAM_ID, &[MessageType::Feedback]),
                peer(
                    "other-wijkteam",
                    OTHER_WIJKTEAM_ID,
                    &[MessageType::Feedback],
                ),
            ],
        )
    }

    /// The wijkteam, with peer `practice` (which may send referrals, consultations and
    /// consent updates).
    pub fn wijkteam(pki: &Pki) -> Parts {
        Parts::new(
            Role::Wijkteam,
            pki.party(WIJKTEAM_ID),
            vec![peer(
                "practice",
                PRACTICE_ID,
                &[
                    MessageType::Referral,
                    MessageType::Consultation,
                    MessageType::ConsentUpdate,
                ],
            )],
        )
    }

    pub fn send_path(&self) -> SendPath {
        SendPath::new(
            self.local.clone(),
            self.peers.clone(),
            self.store.clone(),
            self.minimiser.clone(),
            self.pseudonymiser.clone(),
            self.wakers.clone(),
        )
    }

    pub fn receive_path(&self) -> ReceivePath {
        ReceivePath::new(
            self.local.clone(),
            self.peers.clone(),
            self.store.clone(),
            self.minimiser.clone(),
            self.pseudonymiser.clone(),
        )
    }

    pub fn peer(&self, name: &str) -> Peer {
        self.peers
            .current()
            .by_name(name)
            .expect("a configured peer")
            .clone()
    }

    pub fn today(&self) -> NaiveDate {
        self.local.clock.today()
    }

    pub fn pseudonym(&self, bsn_digits: &str) -> String {
        self.pseudonymiser.pseudonym(&bsn(bsn_digits))
    }

    /// Every audit record in the store, in chain order.
    pub fn audit(&self) -> Vec<AuditEvent> {
        self.store
            .tree(T::Audit)
            .iter()
            .map(|entry| {
                let (_, bytes) = entry.expect("an audit record");
                serde_json::from_slice::<AuditRecord>(&bytes)
                    .expect("a readable audit record")
                    .event
            })
            .collect()
    }

    /// The audit records about message `id`, in chain order.
    pub fn audit_of(&self, id: &str) -> Vec<AuditEvent> {
        self.audit()
            .into_iter()
            .filter(|e| e.message_id.as_deref() == Some(id))
            .collect()
    }

    /// Records (as the consent desk does) a consent about `child` for `recipient`,
    /// covering referral and feedback from yesterday for a year.
    pub async fn record_consent(&self, id: &str, child: &str, recipient: &str) {
        let today = self.today();
        let yesterday = today - Days::new(1);
        let request = ConsentRequest {
            child: Child {
                bsn: bsn(child),
                birth_date: today - Months::new(13 * 12),
                name: Some("Sanne de Vries".into()),
            },
            performers: vec![
                Performer {
                    role: PerformerRole::Child,
                    name: "Sanne de Vries".into(),
                },
                Performer {
                    role: PerformerRole::Parent,
                    name: "Marieke de Vries".into(),
                },
            ],
            scope: Scope {
                types: vec![MessageType::Referral, MessageType::Feedback],
                recipient: recipient.into(),
            },
            valid_from: yesterday,
            valid_until: today + Days::new(365),
            given_on: Some(yesterday),
            evidence: "mondeling tijdens consult".into(),
            exception: None,
        };
        let record = ConsentRecord::from_request(
            id.into(),
            request,
            "dr. Bakker".into(),
            self.local.clock.now(),
            today,
            &crate::consent::ConsentRules::DEFAULT,
        )
        .expect("a valid consent");
        self.append_consent(child, ConsentEvent::Recorded { record })
            .await;
    }

    /// The withdrawal of consent `id`, as the consent desk records it.
    pub fn withdrawal(&self, id: &str) -> ConsentEvent {
        ConsentEvent::Withdrawn {
            consent_id: id.into(),
            at: self.local.clock.now(),
            by: "dr. Bakker".into(),
            reason: "ouders trekken toestemming in".into(),
        }
    }

    pub async fn append_consent(&self, child: &str, event: ConsentEvent) {
        let pseudonym = self.pseudonym(child);
        self.store
            .commit(move |tx| registry::append(tx, &pseudonym, &event))
            .await
            .expect("the consent event is committed");
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        // Let the committer finish before the directory goes.
        self.store.close();
    }
}

/// What the practice's local system submits for a referral of [`BSN`] to `wijkteam`
/// under `consent_id`.
pub(crate) fn referral_submission(id: &str, consent_id: &str) -> Value {
    json!({
        "id": id,
        "type": "referral",
        "to": "wijkteam",
        "consent_id": consent_id,
        "subject": {"bsn": BSN, "name": "Sanne de Vries", "birth_date": "2013-01-15"},
        "body": {"request_for_help": "Ouders vragen hulp bij slaapproblemen.", "urgency": "soon"}
    })
}

pub(crate) fn raw(submission: &Value) -> Vec<u8> {
    serde_json::to_vec(submission).expect("JSON")
}
