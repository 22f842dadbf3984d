//! A complete development set-up in one directory: the dev PKI, a secret and an API
//! token per gateway, and a practice and a wijkteam config that point at each other —
//! or a dev network of several practices and wijkteams ([`write_network`]).
//! The demo, the benchmark and the tests all start from this, so they exercise exactly
//! the configuration path a real installation uses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::dev::pki::{self, DevPki, PkiError, DEV_AUDITOR_ID, DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};

/// Paths and secrets of a written dev kit.
#[derive(Debug, Clone)]
pub struct DevKit {
    pub dir: PathBuf,
    pub pki: DevPki,
    pub practice_config: PathBuf,
    pub wijkteam_config: PathBuf,
    pub practice_token: String,
    pub wijkteam_token: String,
}

/// Where each gateway listens.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub practice_api: SocketAddr,
    pub practice_listener: SocketAddr,
    pub wijkteam_api: SocketAddr,
    pub wijkteam_listener: SocketAddr,
}

/// Writes PKI, secrets and tokens for practice, wijkteam and auditor into `dir`.
pub fn write_secrets(dir: &Path) -> Result<DevPki, PkiError> {
    let pki = pki::write_dev_pki(dir)?;
    write_tokens(dir)?;
    Ok(pki)
}

/// As [`write_secrets`], with the PKI in `shape`; the uzi and pkioverheid shapes make
/// fresh RSA keys with `openssl`. Returns the identities of practice, wijkteam and
/// auditor.
pub fn write_secrets_shaped(dir: &Path, shape: pki::Shape) -> Result<[String; 3], PkiError> {
    let ids = match shape {
        pki::Shape::Ecdsa => {
            pki::write_dev_pki(dir)?;
            [DEV_PRACTICE_ID, DEV_WIJKTEAM_ID, DEV_AUDITOR_ID].map(str::to_string)
        }
        shape => {
            let keys = pki::RsaKeys::generate_with_openssl()?;
            pki::write_real_pki(dir, shape, &keys)?.1
        }
    };
    write_tokens(dir)?;
    Ok(ids)
}

fn write_tokens(dir: &Path) -> Result<(), PkiError> {
    for role in ["practice", "wijkteam"] {
        pki::write(&dir.join(format!("{role}.secret")), &random_hex(32), true)?;
        pki::write(&dir.join(format!("{role}.datakey")), &random_hex(32), true)?;
        pki::write(&dir.join(format!("{role}.token")), &random_hex(24), true)?;
    }
    Ok(())
}

/// Writes a whole dev kit: secrets in `dir`, stores under `dir/store-*`, configs
/// `dir/practice.toml` and `dir/wijkteam.toml`.
pub fn write(dir: &Path, addrs: Addresses, policy: Option<&Path>) -> Result<DevKit, PkiError> {
    let pki = write_secrets(dir)?;
    let practice = NodeSpec {
        name: "practice".into(),
        role: Role::Practice,
        identity: DEV_PRACTICE_ID.into(),
        api: addrs.practice_api,
        listener: addrs.practice_listener,
    };
    let wijkteam = NodeSpec {
        name: "wijkteam".into(),
        role: Role::Wijkteam,
        identity: DEV_WIJKTEAM_ID.into(),
        api: addrs.wijkteam_api,
        listener: addrs.wijkteam_listener,
    };
    let practice_config = dir.join("practice.toml");
    let wijkteam_config = dir.join("wijkteam.toml");
    pki::write(
        &practice_config,
        &config_text(&practice, &[&wijkteam], policy),
        false,
    )?;
    pki::write(
        &wijkteam_config,
        &config_text(&wijkteam, &[&practice], policy),
        false,
    )?;
    Ok(DevKit {
        dir: dir.to_path_buf(),
        pki,
        practice_config,
        wijkteam_config,
        practice_token: read_trimmed(&dir.join("practice.token"))?,
        wijkteam_token: read_trimmed(&dir.join("wijkteam.token"))?,
    })
}

/// Which side a gateway of a dev network is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Practice,
    Wijkteam,
}

/// One gateway of a dev network: its name (file names, and how its peers call it), its
/// organisation identifier and its two addresses.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub role: Role,
    pub identity: String,
    pub api: SocketAddr,
    pub listener: SocketAddr,
}

/// A written gateway of a dev network.
#[derive(Debug, Clone)]
pub struct Node {
    pub spec: NodeSpec,
    pub config: PathBuf,
    pub token: String,
    pub store_dir: PathBuf,
}

/// A dev network: every practice has every wijkteam as a peer and the other way round,
/// all under one dev CA, with one auditor.
#[derive(Debug, Clone)]
pub struct Network {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub nodes: Vec<Node>,
}

impl Network {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.spec.name == name)
    }
}

/// The organisation identifier of the `i`-th dev practice (URA-like, 8 digits); the
/// first is [`DEV_PRACTICE_ID`].
pub fn practice_id(i: usize) -> String {
    format!("{:08}", 90_000_123 + i)
}

/// The organisation identifier of the `i`-th dev wijkteam (OIN-like, 20 digits); the
/// first is [`DEV_WIJKTEAM_ID`].
pub fn wijkteam_id(i: usize) -> String {
    format!("000000010032143{:05}", 45_000 + i)
}

/// Writes a dev network into `dir`: `ca.pem`, and per node `NAME.pem/.key/.secret/.datakey/
/// .token/.toml` with its store under `store-NAME`. Each config lists every node of the
/// other role as a peer, by its name.
pub fn write_network(
    dir: &Path,
    nodes: &[NodeSpec],
    policy: Option<&Path>,
) -> Result<Network, PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca = pki::Authority::new("wijkpoort dev network")?;
    let ca_path = dir.join("ca.pem");
    pki::write(&ca_path, &ca.cert_pem, false)?;
    let auditor = ca.issue(&pki::LeafSpec::new(
        DEV_AUDITOR_ID,
        "Functionaris gegevensbescherming (dev)",
        "auditor.wijkpoort.test",
    ))?;
    pki::write(&dir.join("auditor.pem"), &auditor.cert_pem, false)?;
    pki::write(&dir.join("auditor.key"), &auditor.key_pem, true)?;
    let mut written = Vec::new();
    for node in nodes {
        let issued = ca.issue(&pki::LeafSpec::new(
            &node.identity,
            &format!("{} (dev)", node.name),
            &format!("{}.wijkpoort.test", node.name),
        ))?;
        let file = |ext: &str| dir.join(format!("{}.{ext}", node.name));
        pki::write(&file("pem"), &issued.cert_pem, false)?;
        pki::write(&file("key"), &issued.key_pem, true)?;
        pki::write(&file("secret"), &random_hex(32), true)?;
        pki::write(&file("datakey"), &random_hex(32), true)?;
        pki::write(&file("token"), &random_hex(24), true)?;
        let peers: Vec<&NodeSpec> = nodes.iter().filter(|n| n.role != node.role).collect();
        pki::write(&file("toml"), &config_text(node, &peers, policy), false)?;
        written.push(Node {
            spec: node.clone(),
            config: file("toml"),
            token: read_trimmed(&file("token"))?,
            store_dir: dir.join(format!("store-{}", node.name)),
        });
    }
    Ok(Network {
        dir: dir.to_path_buf(),
        ca: ca_path,
        nodes: written,
    })
}

/// The config of `node`, with `peers` as its peers. File names follow the node's name.
fn config_text(node: &NodeSpec, peers: &[&NodeSpec], policy: Option<&Path>) -> String {
    let name = &node.name;
    let role = match node.role {
        Role::Practice => "practice",
        Role::Wijkteam => "wijkteam",
    };
    let policy_line = policy
        .map(|p| format!("minimisation_policy = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    let mut text = format!(
        r#"role = "{role}"
identity = "{identity}"
store_dir = "store-{name}"
secret_key_file = "{name}.secret"
data_key_file = "{name}.datakey"
{policy_line}
[tls]
cert = "{name}.pem"
key = "{name}.key"
trust_anchors = "ca.pem"

[local_api]
listen = "{api}"
token_file = "{name}.token"

[listener]
listen = "{listener}"

[relay]
initial_backoff_ms = 50
max_backoff_ms = 1000
"#,
        identity = node.identity,
        api = node.api,
        listener = node.listener,
    );
    for peer in peers {
        let may_send = match peer.role {
            Role::Practice => r#"["referral", "consultation", "consent_update"]"#,
            Role::Wijkteam => r#"["feedback"]"#,
        };
        text.push_str(&format!(
            r#"
[[peers]]
name = "{}"
url = "https://127.0.0.1:{}"
identity = "{}"
may_send = {may_send}
"#,
            peer.name,
            peer.listener.port(),
            peer.identity
        ));
    }
    text.push_str(&format!(
        r#"
[[auditors]]
identity = "{DEV_AUDITOR_ID}"
"#
    ));
    text
}

fn read_trimmed(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| PkiError::Write {
            path: path.to_path_buf(),
            source,
        })
}

fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; n];
    // Without OS randomness no key can be made at all; an all-zero dev secret would be
    // worse than failing, so fall back to time-seeded digest material and say so.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        tracing::warn!("no OS randomness; dev secrets derived from the clock");
        let seed = format!("{:?}", std::time::SystemTime::now());
        let d = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
        bytes = d.as_ref().iter().cycle().take(n).copied().collect();
    }
    hex::encode(bytes)
}
