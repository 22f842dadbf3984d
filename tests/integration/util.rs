//! Shared set-up: a dev kit in a temporary directory, gateways started in this process
//! (or as child processes of the real binary), a relay client that presents any
//! certificate, hand-made signed envelopes, and bounded waits.

#![allow(dead_code)] // not every test file uses every helper

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use wijkpoort::audit::{AuditRecord, Event, Outcome};
use wijkpoort::client::LocalApiClient;
use wijkpoort::devkit::{self, Addresses, DevKit};
use wijkpoort::gateway::{bind, Listeners, RunningGateway};
use wijkpoort::message::Envelope;
use wijkpoort::pki::{Authority, LeafSpec, DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};
use wijkpoort::signing::Signer;
use wijkpoort::store::{Durability, Store, T};
use wijkpoort::Config;

/// The longest any single wait in a test may take. Generous for a loaded 2-core
/// machine; a healthy run needs a fraction of it.
pub const WAIT: Duration = Duration::from_secs(20);

/// A fictitious child's BSN that passes the elfproef.
pub const BSN: &str = "111222333";

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Credentials {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Credentials {
    pub fn cert_der(&self) -> Vec<u8> {
        der(&self.cert_pem)
    }
}

pub fn der(cert_pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .expect("a PEM certificate")
        .to_vec()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Practice,
    Wijkteam,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Practice => "practice",
            Role::Wijkteam => "wijkteam",
        }
    }
}

/// A dev kit for a practice and a wijkteam that point at each other, in a temp dir.
///
/// Besides the dev CA (whose key `devkit` does not keep), the kit trusts a second CA
/// whose key the tests hold, so that they can make trusted certificates that the
/// gateway must still refuse: expired ones, ones of an unknown organisation.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub kit: DevKit,
    pub addrs: Addresses,
    pub trusted_ca: Authority,
    practice_ports: Option<Ports>,
    wijkteam_ports: Option<Ports>,
}

/// A gateway's two ports while no gateway of the test serves on them.
enum Ports {
    /// Listening: a connection waits until a gateway starts on them.
    Held(Listeners),
    /// Bound but not listening: a connection is refused.
    Down {
        local_api: TcpSocket,
        listener: TcpSocket,
    },
}

fn bound_not_listening(addr: SocketAddr) -> TcpSocket {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket
}

impl Setup {
    /// Binds four loopback ports and writes a dev kit that uses them. The sockets stay
    /// bound (so no other process takes the ports) until a gateway starts on them or
    /// [`Setup::release`] closes them.
    pub async fn new() -> Setup {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let sockets = |_| async move {
            Listeners {
                local_api: bind(any).await.unwrap(),
                listener: bind(any).await.unwrap(),
            }
        };
        let practice = sockets(()).await;
        let wijkteam = sockets(()).await;
        let addrs = Addresses {
            practice_api: practice.local_api.local_addr().unwrap(),
            practice_listener: practice.listener.local_addr().unwrap(),
            wijkteam_api: wijkteam.local_api.local_addr().unwrap(),
            wijkteam_listener: wijkteam.listener.local_addr().unwrap(),
        };
        let dir = tempfile::tempdir().unwrap();
        let kit = devkit::write(dir.path(), addrs, None).unwrap();
        let trusted_ca = Authority::new("wijkpoort test").unwrap();
        let ca_path = kit.pki.ca();
        let mut anchors = std::fs::read_to_string(&ca_path).unwrap();
        anchors.push_str(&trusted_ca.cert_pem);
        std::fs::write(&ca_path, anchors).unwrap();
        Setup {
            dir,
            kit,
            addrs,
            trusted_ca,
            practice_ports: Some(Ports::Held(practice)),
            wijkteam_ports: Some(Ports::Held(wijkteam)),
        }
    }

    pub fn config_path(&self, role: Role) -> PathBuf {
        match role {
            Role::Practice => self.kit.practice_config.clone(),
            Role::Wijkteam => self.kit.wijkteam_config.clone(),
        }
    }

    pub fn config(&self, role: Role) -> Config {
        Config::load(&self.config_path(role)).unwrap()
    }

    pub fn token(&self, role: Role) -> &str {
        match role {
            Role::Practice => &self.kit.practice_token,
            Role::Wijkteam => &self.kit.wijkteam_token,
        }
    }

    pub fn api_addr(&self, role: Role) -> SocketAddr {
        match role {
            Role::Practice => self.addrs.practice_api,
            Role::Wijkteam => self.addrs.wijkteam_api,
        }
    }

    pub fn listener_addr(&self, role: Role) -> SocketAddr {
        match role {
            Role::Practice => self.addrs.practice_listener,
            Role::Wijkteam => self.addrs.wijkteam_listener,
        }
    }

    pub fn store_dir(&self, role: Role) -> PathBuf {
        self.dir.path().join(format!("store-{}", role.name()))
    }

    /// A local API client acting as `user`.
    pub fn client(&self, role: Role, user: &str) -> LocalApiClient {
        LocalApiClient::new(self.api_addr(role), self.token(role), user)
    }

    /// The gateway's own certificate and key from the dev kit.
    pub fn credentials(&self, role: Role) -> Credentials {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        Credentials {
            cert_pem: read(self.kit.pki.cert(role.name())),
            key_pem: read(self.kit.pki.key(role.name())),
        }
    }

    /// The trust anchors the gateways use, PEM (dev CA and the test CA).
    pub fn anchors_pem(&self) -> String {
        std::fs::read_to_string(self.kit.pki.ca()).unwrap()
    }

    /// A certificate from the trusted test CA.
    pub fn issue(&self, spec: &LeafSpec) -> Credentials {
        let issued = self.trusted_ca.issue(spec).unwrap();
        Credentials {
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        }
    }

    fn ports(&mut self, role: Role) -> &mut Option<Ports> {
        match role {
            Role::Practice => &mut self.practice_ports,
            Role::Wijkteam => &mut self.wijkteam_ports,
        }
    }

    /// Takes `role` down: its ports stay bound to this test but stop listening, so they
    /// refuse connections, as if that gateway were down, until a gateway is started on
    /// them — and no other test can take them meanwhile.
    pub fn release(&mut self, role: Role) {
        *self.ports(role) = None;
        let (api, listener) = (self.api_addr(role), self.listener_addr(role));
        *self.ports(role) = Some(Ports::Down {
            local_api: bound_not_listening(api),
            listener: bound_not_listening(listener),
        });
    }

    /// Starts `role` in this process on its ports (held, down, or bound anew).
    pub async fn start(&mut self, role: Role) -> RunningGateway {
        let listeners = match self.ports(role).take() {
            Some(Ports::Held(l)) => l,
            Some(Ports::Down {
                local_api,
                listener,
            }) => Listeners {
                local_api: local_api.listen(1024).unwrap(),
                listener: listener.listen(1024).unwrap(),
            },
            None => Listeners {
                local_api: bind(self.api_addr(role)).await.unwrap(),
                listener: bind(self.listener_addr(role)).await.unwrap(),
            },
        };
        RunningGateway::start(self.config(role), listeners, Durability::Synced)
            .await
            .unwrap()
    }

    /// Starts `serve --config` of the real binary as a child process for `role`.
    /// Its log goes to `<role>-<n>.log` in the kit directory.
    pub async fn spawn(&mut self, role: Role, n: u32) -> ChildGateway {
        // The child binds the ports itself.
        *self.ports(role) = None;
        let log = self.dir.path().join(format!("{}-{n}.log", role.name()));
        let child = Command::new(env!("CARGO_BIN_EXE_wijkpoort"))
            .arg("serve")
            .arg("--config")
            .arg(self.config_path(role))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut gw = ChildGateway { child, log };
        let mut client = self.client(role, "healthcheck");
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = client.get("/healthz").await {
                return gw;
            }
            if let Some(status) = gw.child.try_wait().unwrap() {
                panic!("the gateway exited during start ({status}):\n{}", gw.log());
            }
            assert!(
                started.elapsed() < WAIT,
                "the gateway did not answer /healthz within {WAIT:?}:\n{}",
                gw.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A gateway running as a child process; killed if the test ends without stopping it.
pub struct ChildGateway {
    pub child: Child,
    pub log: PathBuf,
}

impl ChildGateway {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < WAIT,
                "the gateway did not exit within {WAIT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Both gateways running in this process.
pub async fn pair() -> (Setup, RunningGateway, RunningGateway) {
    let mut setup = Setup::new().await;
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    (setup, practice, wijkteam)
}

/// Polls `f` until it yields `Some`, at most [`WAIT`]; panics naming `what` otherwise.
pub async fn wait_until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(started.elapsed() < WAIT, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------
// Local API

/// The day consents are judged on (the gateway's local date).
pub fn today() -> chrono::NaiveDate {
    chrono::Local::now().date_naive()
}

/// The fictitious child's birth date: ten years old, so the parents consent alone.
pub fn birth_date() -> chrono::NaiveDate {
    today() - chrono::Duration::days(10 * 365 + 100)
}

/// Records, at the practice, the parents' consent to referral and feedback with the
/// wijkteam for the fictitious child; returns the consent id.
pub async fn record_consent(his: &mut LocalApiClient) -> String {
    let consent = json!({
        "child": {"bsn": BSN, "birth_date": birth_date()},
        "performers": [{"role": "parent", "name": "M. de Vries"}],
        "scope": {"types": ["referral", "feedback"], "recipient": DEV_WIJKTEAM_ID},
        "valid_from": today(),
        "valid_until": today() + chrono::Duration::days(365),
        "evidence": "mondeling tijdens consult"
    });
    let (code, answer) = his.post("/v1/consents", &consent).await.unwrap();
    assert_eq!(code, 201, "consent refused: {answer}");
    answer["consent_id"].as_str().unwrap().to_string()
}

/// A referral submission under `consent_id` for the practice's local API.
pub fn referral_submission(consent_id: &str) -> Value {
    json!({
        "type": "referral",
        "to": "wijkteam",
        "consent_id": consent_id,
        "subject": {"bsn": BSN, "name": "Sanne (fictitious)", "birth_date": birth_date()},
        "body": {"request_for_help": "Ouders vragen hulp bij slaapproblemen.", "urgency": "soon"}
    })
}

/// A feedback submission under `consent_id` for the wijkteam's local API.
pub fn feedback_submission(referral_id: &str, consent_id: &str) -> Value {
    json!({
        "type": "feedback",
        "to": "practice",
        "consent_id": consent_id,
        "subject": {"bsn": BSN},
        "body": {"referral_id": referral_id, "status": "intake_planned", "date": "2026-12-01"}
    })
}

/// Records a consent and submits `n` referrals under it; returns their ids.
pub async fn submit_referrals(his: &mut LocalApiClient, n: usize) -> Vec<String> {
    let consent = record_consent(his).await;
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(submit(his, &referral_submission(&consent)).await);
    }
    ids
}

/// Submits a message; asserts the 202 "queued" answer and returns the id.
pub async fn submit(client: &mut LocalApiClient, submission: &Value) -> String {
    let (code, answer) = client.post("/v1/messages", submission).await.unwrap();
    assert_eq!(code, 202, "submission refused: {answer}");
    assert_eq!(answer["status"], "queued", "{answer}");
    answer["id"].as_str().unwrap().to_string()
}

/// The local API's status view of a sent message.
pub async fn status(client: &mut LocalApiClient, id: &str) -> Value {
    let (code, answer) = client.get(&format!("/v1/messages/{id}")).await.unwrap();
    assert_eq!(code, 200, "status of {id}: {answer}");
    answer
}

/// Waits until the status view of a sent message satisfies `pred`, and returns it.
pub async fn wait_for_status(
    client: &mut LocalApiClient,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let s = status(client, id).await;
        if pred(&s) {
            return s;
        }
        assert!(
            started.elapsed() < WAIT,
            "timed out waiting for {what} of {id}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a sent message is delivered and returns its status view. Fails at once
/// if it ends in any other final state.
pub async fn wait_delivered(client: &mut LocalApiClient, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let s = status(client, id).await;
        match s["status"].as_str() {
            Some("delivered") => return s,
            Some("queued") => {}
            _ => panic!("message {id} was not delivered: {s}"),
        }
        assert!(
            started.elapsed() < WAIT,
            "message {id} not delivered within {WAIT:?}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------
// Hand-made relay requests

/// A valid referral envelope from the practice to the wijkteam.
pub fn referral_envelope(id: &str) -> Envelope {
    serde_json::from_value(json!({
        "id": id, "type": "referral", "schema_version": 1,
        "created_at": "2026-11-23T10:00:00Z",
        "from": DEV_PRACTICE_ID, "to": DEV_WIJKTEAM_ID,
        "consent": {
            "id": "consent-test-1", "subject_bsn": BSN,
            "types": ["referral", "feedback"], "recipient": DEV_WIJKTEAM_ID,
            "valid_from": today(), "valid_until": today() + chrono::Duration::days(365),
            "status": "active"
        },
        "subject": {"bsn": BSN, "birth_date": birth_date()},
        "body": {"request_for_help": "help at home", "urgency": "soon"}
    }))
    .unwrap()
}

/// A valid feedback envelope (from the wijkteam to the practice).
pub fn feedback_envelope(id: &str) -> Envelope {
    serde_json::from_value(json!({
        "id": id, "type": "feedback", "schema_version": 1,
        "created_at": "2026-11-23T10:00:00Z",
        "from": DEV_WIJKTEAM_ID, "to": DEV_PRACTICE_ID,
        "consent": {"id": "consent-test-1"},
        "subject": {"bsn": BSN},
        "body": {"referral_id": "ref-1", "status": "received"}
    }))
    .unwrap()
}

/// Hex ECDSA P-256 signature over `bytes` with a PEM (PKCS#8) key.
pub fn sign(key_pem: &str, bytes: &[u8]) -> String {
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let PrivateKeyDer::Pkcs8(pkcs8) = key else {
        panic!("test keys are PKCS#8")
    };
    let signer = Signer::from_pkcs8(pkcs8.secret_pkcs8_der()).unwrap();
    hex::encode(signer.sign(bytes).unwrap())
}

/// The answer of the mTLS listener to one relay request.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// Posts `body` to `POST /v1/relay` at `addr` over a fresh TLS 1.3 connection that
/// trusts `anchors_pem` and presents `client` (or no certificate at all). `Err` is a
/// failure below HTTP: connection, handshake, or an alert in place of an answer.
pub async fn relay(
    addr: SocketAddr,
    anchors_pem: &str,
    client: Option<&Credentials>,
    signature: Option<&str>,
    body: Vec<u8>,
) -> Result<Answer, String> {
    post_to_listener(addr, "/v1/relay", anchors_pem, client, signature, body).await
}

/// Posts `body` to `path` on a gateway's mTLS listener, as [`relay`] does.
pub async fn post_to_listener(
    addr: SocketAddr,
    path: &str,
    anchors_pem: &str,
    client: Option<&Credentials>,
    signature: Option<&str>,
    body: Vec<u8>,
) -> Result<Answer, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(anchors_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(c.cert_der())],
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));

    let exchange = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("http handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = hyper::Request::post(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(sig) = signature {
            request = request.header("x-wijkpoort-signature", sig);
        }
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("response body: {e}"))?
            .to_bytes();
        let body = serde_json::from_slice(&bytes)
            .map_err(|e| format!("answer is not JSON ({e}): {bytes:?}"))?;
        Ok(Answer { status, body })
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .map_err(|_| "no answer in time".to_string())?
}

/// Relays `envelope` as `sender` would: the sender's certificate, its signature over
/// the exact bytes.
pub async fn relay_signed(
    setup: &Setup,
    to: Role,
    sender: &Credentials,
    bytes: &[u8],
) -> Result<Answer, String> {
    let sig = sign(&sender.key_pem, bytes);
    relay(
        setup.listener_addr(to),
        &setup.anchors_pem(),
        Some(sender),
        Some(&sig),
        bytes.to_vec(),
    )
    .await
}

// ---------------------------------------------------------------------------------
// Looking into a store

pub fn audit_records(store: &Store) -> Vec<AuditRecord> {
    store
        .tree(T::Audit)
        .iter()
        .map(|e| serde_json::from_slice(&e.unwrap().1).unwrap())
        .collect()
}

/// Waits until the audit log holds a record matching `pred` and returns it. (A
/// refused handshake is audited after the client has seen the alert.)
pub async fn wait_for_audit(
    store: &Store,
    what: &str,
    pred: impl Fn(&AuditRecord) -> bool,
) -> AuditRecord {
    wait_until(what, || {
        let found = audit_records(store).into_iter().find(|r| pred(r));
        async move { found }
    })
    .await
}

/// A refusal audit record: `event`, outcome refused, reason containing `reason`.
pub async fn wait_for_refusal(store: &Store, event: Event, reason: &str) -> AuditRecord {
    wait_for_audit(
        store,
        &format!("a {event:?} audit record with reason containing {reason:?}"),
        |r| {
            r.event.event == event
                && r.event.outcome == Outcome::Refused
                && r.event
                    .reason
                    .as_deref()
                    .is_some_and(|x| x.contains(reason))
        },
    )
    .await
}

/// How many audit records of `event` name message `id`.
pub fn audit_count(store: &Store, event: Event, id: &str) -> usize {
    audit_records(store)
        .iter()
        .filter(|r| r.event.event == event && r.event.message_id.as_deref() == Some(id))
        .count()
}

/// Received messages (acknowledged or not), by id.
pub fn received_ids(store: &Store) -> Vec<String> {
    store
        .tree(T::Received)
        .iter()
        .map(|e| String::from_utf8(e.unwrap().0.to_vec()).unwrap())
        .collect()
}

/// The message ids the inbox queue points at, one per stored arrival: a message
/// stored twice would appear twice here.
pub fn inbox_entries(store: &Store) -> Vec<String> {
    store
        .tree(T::Inbox)
        .iter()
        .map(|e| String::from_utf8(e.unwrap().1.to_vec()).unwrap())
        .collect()
}

/// Asserts that the receiving store holds nothing received.
pub fn assert_nothing_stored(store: &Store) {
    assert_eq!(received_ids(store), Vec::<String>::new(), "received tree");
    assert_eq!(inbox_entries(store), Vec::<String>::new(), "inbox tree");
}

/// A store directory of a stopped gateway, opened for inspection.
pub fn open_store(dir: &Path, config: &Config) -> Store {
    Store::open(dir, config.signer.clone()).unwrap()
}

/// The default leaf spec for a certificate that claims the practice's identity.
pub fn practice_spec() -> LeafSpec {
    LeafSpec::new(
        DEV_PRACTICE_ID,
        "Huisartsenpraktijk (test)",
        "practice.test",
    )
}
