//! The command line: `serve`, `check-config`, `audit …`, and with the default `dev` feature `demo`,
//! `bench` and `certs dev`. `main.rs` only parses and calls this.

use crate::output::outln;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::StartError;

#[derive(Debug, Parser)]
#[command(
    name = "wijkpoort",
    version,
    about = "Safe information exchange between a GP practice and the wijkteam"
)]
pub struct Cli {
    /// How log lines on stderr are written: `text` (colour only on a terminal) or
    /// `json` (one object per line). The level comes from RUST_LOG.
    #[arg(long, global = true, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log filter when `RUST_LOG` names none. The demo narrates on stdout; its log
    /// lines would only repeat that, so it logs warnings.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            #[cfg(feature = "dev")]
            Command::Demo => "warn",
            _ => "info",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a gateway until SIGINT or SIGTERM, then drain and stop.
    Serve {
        /// The gateway's config file (see config/practice.toml, config/wijkteam.toml).
        #[arg(long)]
        config: PathBuf,
        /// Skip the fdatasync at the commit point. For benchmark comparison ONLY: an
        /// accepted message can be lost on power failure.
        #[arg(long)]
        unsafe_no_fsync: bool,
    },
    /// Validate a config file as `serve` would (files, keys, certificates and their
    /// expiry, policy, peers) without binding ports or opening the store, and print a
    /// summary. Exit 64 on a config error, with the message `serve` would give.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Show the whole flow on this machine: two gateways, a referral, feedback, receipts.
    #[cfg(feature = "dev")]
    Demo,
    /// Benchmark: two gateways as child processes, N concurrent submitters, end to end.
    #[cfg(feature = "dev")]
    Bench(crate::dev::bench::BenchOptions),
    /// The auditor's commands: query, report, verify and export the audit and consent logs,
    /// offline on a stopped gateway's store or online over mTLS.
    Audit(Box<crate::audit::cli::AuditArgs>),
    /// Ask a running gateway to reload its config file (peers, auditors, relay settings,
    /// minimisation policy), as SIGHUP does; prints what changed, or why nothing did.
    Reload {
        /// The running gateway's config file (its local API address and token are read
        /// from it).
        #[arg(long)]
        config: PathBuf,
    },
    /// The store: migrate (stopped gateway), back up (running or stopped), restore.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Certificates.
    #[cfg(feature = "dev")]
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Bring a store of format 1 or 2 to format 3 (batch signatures, still plaintext), in
    /// place (stop the gateway and back the store up first); `store compact` then seals
    /// it into this build's format 5. A gateway refuses to start on an older store and
    /// names the command to run.
    Migrate {
        #[arg(long)]
        config: PathBuf,
    },
    /// Back the store up into a new directory: online through the running gateway of
    /// `--config` (its local API and token; the gateway's commits wait while it copies the
    /// store into memory), or offline from the stopped gateway's store `--store DIR`.
    /// The backup is a store that `wijkpoort audit --store OUT verify` checks. The data
    /// key and secrets are not in it: back them up on their own.
    Backup {
        /// Online: the running gateway's config file.
        #[arg(long, conflicts_with = "store", required_unless_present = "store")]
        config: Option<PathBuf>,
        /// Offline: a stopped gateway's store directory.
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
        /// The backup directory (new or empty).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Restore a backup into a store directory of a stopped gateway, after checking the
    /// backup's format, audit chain and content. Refuses a directory that holds anything
    /// unless `--replace` (which moves it aside to DIR.before-restore-TIME).
    Restore {
        /// The backup directory (made by `store backup`).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The gateway's config: its certificate and trust anchors check the backup's
        /// checkpoints, its store_dir is the target unless --store names another.
        #[arg(long, required_unless_present = "cert")]
        config: Option<PathBuf>,
        /// The store directory to restore into (default: the config's store_dir).
        #[arg(long, value_name = "DIR", required_unless_present = "config")]
        store: Option<PathBuf>,
        /// The gateway's certificate (PEM), instead of the config's.
        #[arg(long, value_name = "PEM")]
        cert: Option<PathBuf>,
        /// Move what the target directory holds aside instead of refusing.
        #[arg(long)]
        replace: bool,
    },
    /// Copy the store into a fresh directory, sealing every value that holds personal
    /// data (the only way to a store without the remains of removed values, and how a
    /// plaintext store of format 2 or 3 becomes a sealed one). Stop the gateway first; then
    /// point store_dir at the new directory and destroy the old one.
    Compact {
        /// The stopped gateway's store.
        #[arg(long)]
        from: PathBuf,
        /// A directory that does not exist yet (or is empty).
        #[arg(long)]
        to: PathBuf,
        /// The data key file the store is sealed with (or, for a plaintext store, will be).
        #[arg(long)]
        data_key: PathBuf,
        /// Seal the copy with this key instead (then point data_key_file at it).
        #[arg(long)]
        new_data_key: Option<PathBuf>,
    },
    /// Re-seal every sealed value under a new data key, in place, on a STOPPED gateway
    /// (the gateway holds the store locked; this is not done online). Then point
    /// data_key_file at the new key and destroy the old one. An interrupted rotation is
    /// resumed by running it again with the same keys.
    RotateKey {
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        old_key: PathBuf,
        #[arg(long)]
        new_key: PathBuf,
    },
    /// Remove what the retention rules say is due (a running gateway does this daily)
    /// on a stopped gateway's store, and audit what was removed.
    Purge {
        /// The gateway's config file (retention rules, data key, signing key).
        #[arg(long)]
        config: PathBuf,
        /// The store (default: the config's store_dir).
        #[arg(long)]
        store: Option<PathBuf>,
    },
}

#[cfg(feature = "dev")]
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a development PKI (CA, practice, wijkteam, auditor; PEM) and dev secrets
    /// and API tokens for the two gateways.
    Dev {
        #[arg(long)]
        out: PathBuf,
        /// ecdsa: one ECDSA P-256 CA (as before). uzi: RSA, the practice on a UZI server
        /// certificate, wijkteam and auditor on PKIoverheid ones. pkioverheid: RSA, all
        /// three on PKIoverheid certificates. The RSA keys are made fresh with `openssl`.
        #[arg(long, value_enum, default_value_t = crate::dev::pki::Shape::Ecdsa)]
        shape: crate::dev::pki::Shape,
    },
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<(), StartError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Other(format!("cannot start the async runtime: {e}")))?;
    match cli.command {
        Command::Serve {
            config,
            unsafe_no_fsync,
        } => runtime.block_on(serve(config, unsafe_no_fsync)),
        Command::Audit(args) => {
            // The audit commands have exit codes of their own (verify: 0/1/2).
            let code = runtime.block_on(crate::audit::cli::run(*args));
            drop(runtime);
            std::process::exit(code)
        }
        Command::Store {
            command: StoreCommand::Migrate { config },
        } => migrate(&config),
        Command::Store {
            command: StoreCommand::Backup { config, store, out },
        } => runtime.block_on(backup(config, store, out)),
        Command::Store {
            command:
                StoreCommand::Restore {
                    from,
                    config,
                    store,
                    cert,
                    replace,
                },
        } => restore(&from, config, store, cert, replace),
        Command::Store {
            command:
                StoreCommand::Compact {
                    from,
                    to,
                    data_key,
                    new_data_key,
                },
        } => compact(&from, &to, &data_key, new_data_key.as_deref()),
        Command::Store {
            command:
                StoreCommand::RotateKey {
                    store,
                    old_key,
                    new_key,
                },
        } => rotate_key(&store, &old_key, &new_key),
        Command::Store {
            command: StoreCommand::Purge { config, store },
        } => runtime.block_on(purge(&config, store)),
        Command::Reload { config } => runtime.block_on(reload(config)),
        Command::CheckConfig { config } => runtime.block_on(crate::check_config::run(&config)),
        #[cfg(feature = "dev")]
        Command::Bench(options) => runtime.block_on(crate::dev::bench::run(options)),
        #[cfg(feature = "dev")]
        Command::Demo => runtime.block_on(crate::dev::demo::run()),
        #[cfg(feature = "dev")]
        Command::Certs {
            command: CertsCommand::Dev { out, shape },
        } => crate::dev::certs_dev(&out, shape).map_err(|e| StartError::Other(e.to_string())),
    }
}

fn migrate(path: &std::path::Path) -> Result<(), StartError> {
    let config = crate::Config::load(path)?;
    let done = crate::migrate::migrate(&config).map_err(|e| StartError::Other(e.to_string()))?;
    outln!(
        "store {} migrated from format {} to {}: {} received message(s) keyed by sender, {} consent recipient(s) by organisation identifier, {} envelope(s) keep their own signature (new ones are signed per relay batch)",
        config.store_dir.display(),
        done.from_version,
        crate::migrate::MIGRATES_TO,
        done.received_messages,
        done.consent_recipients,
        done.signed_alone
    );
    for name in &done.unknown_recipients {
        outln!("  consent recipient {name:?} is no configured peer; kept as it was");
    }
    outln!(
        "the store is still plaintext: seal it with `wijkpoort store compact --from {} --to NEWDIR --data-key FILE` (format {}), then point store_dir at NEWDIR",
        config.store_dir.display(),
        crate::store::FORMAT_VERSION
    );
    Ok(())
}

/// `wijkpoort store backup`: online through the gateway of `config`, or offline from
/// the stopped gateway's `store`.
async fn backup(
    config: Option<PathBuf>,
    store: Option<PathBuf>,
    out: PathBuf,
) -> Result<(), StartError> {
    use crate::backup::{self, Taken};
    let failed = |e: backup::BackupError| StartError::Other(e.to_string());
    // Refuse a used directory before the gateway is asked for anything.
    if std::fs::read_dir(&out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(failed(backup::BackupError::OutNotEmpty(out)));
    }
    let (stream, taken) = match (config, store) {
        (Some(path), _) => {
            let config = crate::Config::load(&path)?;
            let mut client = crate::client::LocalApiClient::new(
                config.local_api,
                &config.api_token,
                "wijkpoort store backup",
            );
            let (code, bytes) = client
                .post_for_bytes("/v1/store/backup", &serde_json::json!({}))
                .await
                .map_err(|e| {
                    StartError::Other(format!(
                        "cannot reach the gateway's local API at {} (for a stopped gateway use --store DIR): {e}",
                        config.local_api
                    ))
                })?;
            if code != 200 {
                let why = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "no reason given".into());
                return Err(StartError::Other(format!(
                    "the gateway refused the backup ({code}): {why}"
                )));
            }
            let stream = backup::Stream {
                bytes: bytes.to_vec(),
                commits_paused: std::time::Duration::ZERO,
            };
            (stream, Taken::Online)
        }
        (None, Some(dir)) => (backup::take_offline(&dir).map_err(failed)?, Taken::Offline),
        (None, None) => {
            return Err(StartError::Other(
                "say which store: --config FILE (running gateway) or --store DIR (stopped)".into(),
            ))
        }
    };
    let m = backup::write_backup(&stream, &out, taken).map_err(failed)?;
    let paused = m
        .commits_paused_ms
        .map(|ms| format!("; the gateway's commits waited {ms:.1} ms"))
        .unwrap_or_default();
    outln!(
        "backup written to {}: {} entries in {} trees, audit chain of {} records, store format {}{paused}",
        out.display(),
        m.entries,
        m.trees,
        m.audit_records,
        m.store_format.map_or("none (empty)".into(), |f| f.to_string()),
    );
    outln!(
        "check it with: wijkpoort audit --store {} --cert CERT verify",
        out.display()
    );
    Ok(())
}

/// `wijkpoort store restore`.
fn restore(
    from: &std::path::Path,
    config: Option<PathBuf>,
    store: Option<PathBuf>,
    cert: Option<PathBuf>,
    replace: bool,
) -> Result<(), StartError> {
    use rustls::pki_types::pem::PemObject;
    let config = config.as_deref().map(crate::Config::load).transpose()?;
    let target = store
        .or_else(|| config.as_ref().map(|c| c.store_dir.clone()))
        .ok_or_else(|| StartError::Other("say where to restore to: --store DIR".into()))?;
    let cert_der = match (&cert, &config) {
        (Some(path), _) => rustls::pki_types::CertificateDer::from_pem_file(path)
            .map_err(|e| StartError::Other(format!("{}: not a PEM certificate: {e}", path.display())))?
            .to_vec(),
        (None, Some(c)) => c
            .cert_chain
            .first()
            .map(|c| c.to_vec())
            .ok_or_else(|| StartError::Other("the config's certificate chain is empty".into()))?,
        (None, None) => {
            return Err(StartError::Other(
                "the backup's checkpoints are checked against the gateway's certificate: pass --config FILE or --cert PEM".into(),
            ))
        }
    };
    let anchors = config
        .as_ref()
        .map(|c| c.trust_anchors.clone())
        .unwrap_or_default();
    let done = crate::backup::restore(from, &target, replace, &cert_der, &anchors)
        .map_err(|e| StartError::Other(e.to_string()))?;
    if let Some(aside) = &done.moved_aside {
        outln!(
            "what {} held was moved to {}",
            target.display(),
            aside.display()
        );
    }
    outln!(
        "restored {} into {}: {} entries in {} trees; audit chain of {} records intact ({} signed checkpoints); backup taken {} ({:?})",
        from.display(),
        target.display(),
        done.entries,
        done.trees,
        done.manifest.audit_records,
        done.checkpoints,
        done.manifest.created_at.to_rfc3339(),
        done.manifest.taken,
    );
    outln!("start the gateway on it; messages still in its outbox are delivered again (a receiver that has one already answers with its stored receipt)");
    Ok(())
}

/// A data key file, checked as the config checks it (owner-only, 32 bytes of hex).
fn data_key(path: &std::path::Path) -> Result<std::sync::Arc<crate::seal::DataKey>, StartError> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StartError::Other(format!(
                "{} is readable by group or others (mode {mode:04o}); it holds a secret: run `chmod 600 {}`",
                path.display(),
                path.display()
            )));
        }
    }
    crate::seal::DataKey::load(path)
        .map(std::sync::Arc::new)
        .map_err(|e| StartError::Other(e.to_string()))
}

fn compact(
    from: &std::path::Path,
    to: &std::path::Path,
    key: &std::path::Path,
    new_key: Option<&std::path::Path>,
) -> Result<(), StartError> {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let key = data_key(key)?;
    let new_key = new_key.map(data_key).transpose()?;
    let done = crate::compact::compact(from, to, key, new_key)
        .map_err(|e| StartError::Other(e.to_string()))?;
    outln!(
        "store {} (format {}) copied into {} (format {}): {} entries, {} sealed with data key {}; point store_dir at {} and destroy {}",
        from.display(),
        done.from_version,
        to.display(),
        crate::store::FORMAT_VERSION,
        done.entries,
        done.sealed,
        done.key_id,
        to.display(),
        from.display()
    );
    Ok(())
}

fn rotate_key(
    store: &std::path::Path,
    old_key: &std::path::Path,
    new_key: &std::path::Path,
) -> Result<(), StartError> {
    let done = crate::compact::rotate_key(store, data_key(old_key)?, data_key(new_key)?)
        .map_err(|e| StartError::Other(e.to_string()))?;
    outln!(
        "store {}: {} value(s) re-sealed under data key {}; point data_key_file at {} and destroy the old key (its old ciphertexts left in sled's log are unreadable without it)",
        store.display(),
        done.sealed,
        done.key_id,
        new_key.display()
    );
    Ok(())
}

async fn purge(path: &std::path::Path, dir: Option<PathBuf>) -> Result<(), StartError> {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let config = crate::Config::load(path)?;
    let dir = dir.unwrap_or_else(|| config.store_dir.clone());
    let store = crate::store::Store::open(&dir, config.signer.clone(), config.data_key.clone())?;
    let clock = crate::clock::Clock::system();
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "unknown".into());
    let done = crate::retention::purge(
        &store,
        &config.retention,
        clock.now(),
        clock.today(),
        &crate::pseudonym::Pseudonymiser::new(&config.secret),
        crate::chain::Actor::User { id: user },
    )
    .await;
    let closing = store.clone();
    // Closing seals the log with a signed checkpoint, as a gateway's stop does.
    let _ = tokio::task::spawn_blocking(move || closing.close()).await;
    let s = done.map_err(|e| StartError::Other(e.to_string()))?;
    outln!(
        "purged from {}: {} delivered and {} refused/expired/withheld outbox bodies, {} acknowledged inbox bodies, {} consent(s) ({} events), {} audit record(s){}",
        dir.display(),
        s.delivered_bodies,
        s.undelivered_bodies,
        s.acknowledged_bodies,
        s.consents,
        s.consent_events,
        s.audit_records,
        if s.audit_records > 0 {
            format!(" ({} to {})", s.audit_from, s.audit_to)
        } else {
            String::new()
        }
    );
    Ok(())
}

async fn serve(path: PathBuf, unsafe_no_fsync: bool) -> Result<(), StartError> {
    // Every file the gateway creates (the store's) is its user's alone.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let config = crate::Config::load(&path)?;
    let listeners = crate::Listeners::bind(&config).await?;
    let ops = crate::server::ops::bind(&config).await?;
    let durability = if unsafe_no_fsync {
        tracing::warn!("--unsafe-no-fsync: accepted messages can be lost on power failure (benchmark comparison only)");
        crate::store::Durability::Off
    } else {
        crate::store::Durability::Synced
    };
    let gateway = crate::gateway::Gateway::open(config, durability)?.with_ops_listener(ops);
    let reloader = gateway.reloader();
    // Both handlers are installed before anything serves: a signal that arrives once the
    // gateway answers must not meet the default action (which ends the process).
    tokio::spawn(reload_on_sighup(reloader));
    let shutdown = shutdown_signal();
    gateway.serve(listeners, shutdown).await
}

/// Reloads the configuration on every SIGHUP; the gateway logs the outcome.
/// Installs the SIGHUP handler now (not when the returned future is first polled).
fn reload_on_sighup(reloader: crate::reload::Reloader) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let hup = signal(SignalKind::hangup());
    async move {
        let mut hup = match hup {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload with `wijkpoort reload`");
                return;
            }
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the configuration");
            let _ = reloader.reload().await;
        }
    }
}

/// `wijkpoort reload`: asks the running gateway of `path` through its local API.
async fn reload(path: PathBuf) -> Result<(), StartError> {
    let config = crate::Config::load(&path)?;
    let mut client =
        crate::client::LocalApiClient::new(config.local_api, &config.api_token, "wijkpoort reload");
    let (code, answer) = client
        .post("/v1/reload", &serde_json::json!({}))
        .await
        .map_err(|e| {
            StartError::Other(format!(
                "cannot reach the gateway's local API at {}: {e}",
                config.local_api
            ))
        })?;
    if code == 200 {
        outln!("reloaded: {}", answer["changes"]);
        Ok(())
    } else {
        Err(StartError::Other(format!(
            "reload refused ({code}): {}",
            answer["message"].as_str().unwrap_or("no reason given")
        )))
    }
}

/// Completes on SIGINT or SIGTERM; the handlers are installed when this is called.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = int.recv() => tracing::info!("SIGINT received"),
                _ = term.recv() => tracing::info!("SIGTERM received"),
            },
            (term, int) => {
                let e = term
                    .err()
                    .or(int.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                tracing::error!(error = %e, "cannot listen for SIGTERM or SIGINT; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
