//! A complete development set-up in one directory: the dev PKI, a secret and an API
//! token per gateway, and a practice and a wijkteam config that point at each other.
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
    for role in ["practice", "wijkteam"] {
        pki::write(&dir.join(format!("{role}.secret")), &random_hex(32), true)?;
        pki::write(&dir.join(format!("{role}.token")), &random_hex(24), true)?;
    }
    Ok(pki)
}

/// Writes a whole dev kit: secrets in `dir`, stores under `dir/store-*`, configs
/// `dir/practice.toml` and `dir/wijkteam.toml`.
pub fn write(dir: &Path, addrs: Addresses, policy: Option<&Path>) -> Result<DevKit, PkiError> {
    let pki = write_secrets(dir)?;
    let policy_line = policy
        .map(|p| format!("minimisation_policy = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    let practice = format!(
        r#"role = "practice"
identity = "{DEV_PRACTICE_ID}"
store_dir = "store-practice"
secret_key_file = "practice.secret"
{policy_line}
[tls]
cert = "practice.pem"
key = "practice.key"
trust_anchors = "ca.pem"

[local_api]
listen = "{practice_api}"
token_file = "practice.token"

[listener]
listen = "{practice_listener}"

[relay]
initial_backoff_ms = 50
max_backoff_ms = 1000

[[peers]]
name = "wijkteam"
url = "https://127.0.0.1:{wijkteam_port}"
identity = "{DEV_WIJKTEAM_ID}"
may_send = ["feedback"]

[[auditors]]
identity = "{DEV_AUDITOR_ID}"
"#,
        practice_api = addrs.practice_api,
        practice_listener = addrs.practice_listener,
        wijkteam_port = addrs.wijkteam_listener.port(),
    );
    let wijkteam = format!(
        r#"role = "wijkteam"
identity = "{DEV_WIJKTEAM_ID}"
store_dir = "store-wijkteam"
secret_key_file = "wijkteam.secret"
{policy_line}
[tls]
cert = "wijkteam.pem"
key = "wijkteam.key"
trust_anchors = "ca.pem"

[local_api]
listen = "{wijkteam_api}"
token_file = "wijkteam.token"

[listener]
listen = "{wijkteam_listener}"

[relay]
initial_backoff_ms = 50
max_backoff_ms = 1000

[[peers]]
name = "practice"
url = "https://127.0.0.1:{practice_port}"
identity = "{DEV_PRACTICE_ID}"
may_send = ["referral", "consultation", "consent_update"]

[[auditors]]
identity = "{DEV_AUDITOR_ID}"
"#,
        wijkteam_api = addrs.wijkteam_api,
        wijkteam_listener = addrs.wijkteam_listener,
        practice_port = addrs.practice_listener.port(),
    );
    let practice_config = dir.join("practice.toml");
    let wijkteam_config = dir.join("wijkteam.toml");
    pki::write(&practice_config, &practice, false)?;
    pki::write(&wijkteam_config, &wijkteam, false)?;
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map(|s| s.trim().to_string())
            .map_err(|source| PkiError::Write {
                path: dir.join(name),
                source,
            })
    };
    Ok(DevKit {
        dir: dir.to_path_buf(),
        pki,
        practice_config,
        wijkteam_config,
        practice_token: read("practice.token")?,
        wijkteam_token: read("wijkteam.token")?,
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
