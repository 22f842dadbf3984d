//! `wijkpoort audit …`: the auditor's commands, offline on a stopped gateway's store or
//! online against a running gateway's mTLS listener, with one set of options for both.
//!
//! Offline with `--config`, the store is opened as the gateway would open it (the
//! config's key keeps the log's checkpoints signed) and the read is recorded as an
//! `audit_read` record before anything is printed; with `--store` alone it is opened
//! read-only and the read cannot be recorded, which the command says on stderr. A store
//! that is locked belongs to a running gateway: the command says so in one line and
//! names the online way.
//!
//! Exit codes: 0 done (for `verify`: intact), 1 `verify` found tampering, 2 could not
//! answer or check.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::online::{Credentials, OnlineAuditor, OnlineError};
use super::progress::Progress;
use super::query::{AccessReport, ConsentHistory, RecordPage};
use super::render::{self, Format};
use super::request::{self, AuditAnswer, Command, Context, Params, RequestError};
use super::verify::VerifyReport;
use super::{Actor, AuditError, Event, Outcome, Pseudonymiser};
use crate::config::{Config, ConfigError};
use crate::message::Bsn;
use crate::store::{Store, StoreError};

/// Exit code: done, or `verify` found the log intact.
pub const EXIT_OK: i32 = 0;
/// Exit code: `verify` found the log tampered with.
pub const EXIT_TAMPERED: i32 = 1;
/// Exit code: the question could not be answered (or the log could not be checked).
pub const EXIT_FAILED: i32 = 2;

#[derive(Debug, Args)]
#[command(
    after_help = "Offline:  wijkpoort audit --config practice.toml report --bsn 111222333\n\
Online:   wijkpoort audit --gateway https://host:8443 --cert auditor.pem --key auditor.key --ca ca.pem verify\n\
Exit codes: 0 done / intact, 1 tampered (verify), 2 could not answer or check."
)]
pub struct AuditArgs {
    /// Offline: the sled store directory of a stopped gateway (default: the config's store_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Offline: the gateway's config — its secret pseudonymises --bsn, its certificate checks
    /// checkpoints, its key lets the read be recorded in the log, its data key opens what
    /// is sealed at rest (the consent log; for `prove`, the envelopes).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Online: the gateway's mTLS listener, https://host:port.
    #[arg(long, global = true, value_name = "URL")]
    pub gateway: Option<String>,
    /// Online: the auditor's certificate (PEM). Offline `verify`: the gateway's certificate
    /// (instead of the config's tls.cert).
    #[arg(long, global = true, value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// Online: the auditor's private key (PEM, PKCS#8).
    #[arg(long, global = true, value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// Online: the CA certificate(s) the gateway's certificate chains to.
    #[arg(long, global = true, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Offline: who is reading, for the audit record (default: $USER).
    #[arg(long, global = true)]
    pub user: Option<String>,
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// A BSN from the command line; `-` reads it from standard input (keeps it out of `ps`).
/// Its `Debug` hides the digits.
#[derive(Clone)]
pub struct BsnArg(String);

impl std::str::FromStr for BsnArg {
    type Err = String;
    fn from_str(s: &str) -> Result<BsnArg, String> {
        Ok(BsnArg(s.to_string()))
    }
}

impl std::fmt::Debug for BsnArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BsnArg(*********)")
    }
}

impl BsnArg {
    fn resolve(&self) -> Result<Bsn, AuditCliError> {
        let text = if self.0 == "-" {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(AuditCliError::Stdin)?;
            line.trim().to_string()
        } else {
            self.0.trim().to_string()
        };
        Bsn::try_from(text).map_err(|_| AuditError::InvalidBsn { field: "--bsn" }.into())
    }
}

/// Filters for `records` and `export`.
#[derive(Debug, Args)]
pub struct Filter {
    /// The child's BSN (pseudonymised before it is looked up; `-` reads it from stdin).
    #[arg(long)]
    pub bsn: Option<BsnArg>,
    #[arg(long)]
    pub message_id: Option<String>,
    /// A peer's organisation identifier.
    #[arg(long)]
    pub peer: Option<String>,
    /// An event name: message_sent, message_received, consent_recorded, audit_read, …
    #[arg(long)]
    pub event: Option<String>,
    #[command(flatten)]
    pub period: Period,
    /// At most this many records.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// A period: RFC 3339 times or dates (UTC); `--to` is exclusive, a date as `--to` includes that day.
#[derive(Debug, Args)]
pub struct Period {
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub to: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Audit records by child (--bsn), message, peer, event and period.
    Records {
        #[command(flatten)]
        filter: Filter,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// The consent log of one child (--bsn), or of all children with an event in the period.
    Consents {
        #[arg(long)]
        bsn: Option<BsnArg>,
        #[command(flatten)]
        period: Period,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// The NEN 7513 access report of one child: who did what, when, under which consent.
    Report {
        #[arg(long)]
        bsn: BsnArg,
        #[command(flatten)]
        period: Period,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Recompute the hash chain and check the signed checkpoints. Exit 0 intact, 1 tampered, 2 could not check.
    Verify {
        /// A checkpoint you kept from an earlier check, SEQ:HASH (catches a log cut back with its checkpoints).
        #[arg(long)]
        expect: Option<String>,
        /// table (text) or json.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Offline: prove one stored envelope on its own — its path to the signed batch root,
    /// the sender's batch signature, the signer's certificate (and, with --ca or --config,
    /// its chain). Exit 0 valid, 1 not valid, 2 could not check.
    Prove {
        /// The message id.
        #[arg(long)]
        message: String,
        /// The sender's organisation identifier, when several senders used that id.
        #[arg(long)]
        from: Option<String>,
        /// table (text) or json.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Audit records as FHIR R4 AuditEvent resources in a Bundle.
    Export {
        #[command(flatten)]
        filter: Filter,
        #[arg(long, value_enum)]
        format: Format,
    },
}

/// Why an audit command could not answer (exit code 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditCliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}: no wijkpoort store in this directory")]
    NoStore(PathBuf),
    #[error("the store at {dir} is locked by its running gateway; ask the gateway online instead: wijkpoort audit --gateway {url} --cert auditor.pem --key auditor.key --ca ca.pem …", dir = .dir.display())]
    Locked { dir: PathBuf, url: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Query(#[from] AuditError),
    #[error(transparent)]
    Online(#[from] OnlineError),
    #[error("{path}: {problem}", path = .path.display())]
    Certificate { path: PathBuf, problem: String },
    #[error("reading the BSN from standard input: {0}")]
    Stdin(std::io::Error),
    #[error("the read could not be recorded in the audit log, so nothing is shown: {0}")]
    NotRecorded(StoreError),
}

/// Runs an audit command; returns the exit code.
pub async fn run(args: AuditArgs) -> i32 {
    match run_inner(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wijkpoort audit: {e}");
            EXIT_FAILED
        }
    }
}

/// Runs `wijkpoort audit <words…>` in this process (the demo ends with `report` and
/// `verify` this way); returns the exit code.
pub async fn run_words<I, S>(words: I) -> i32
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    #[derive(clap::Parser)]
    #[command(name = "wijkpoort audit")]
    struct Words {
        #[command(flatten)]
        args: AuditArgs,
    }
    let argv = std::iter::once(std::ffi::OsString::from("wijkpoort audit"))
        .chain(words.into_iter().map(Into::into));
    match <Words as clap::Parser>::try_parse_from(argv) {
        Ok(w) => run(w.args).await,
        Err(e) => {
            eprintln!("{e}");
            EXIT_FAILED
        }
    }
}

async fn run_inner(args: AuditArgs) -> Result<i32, AuditCliError> {
    if let AuditCommand::Prove {
        message,
        from,
        format,
    } = &args.command
    {
        return prove_offline(&args, message, from.as_deref(), *format);
    }
    let (command, params, format) = parse(&args.command)?;
    let answer = if let Some(url) = &args.gateway {
        online(&args, url, command, &params).await?
    } else {
        offline(&args, command, params).await?
    };
    let (text, code) = match &answer {
        AuditAnswer::Records(page) => (render::records(page, format), EXIT_OK),
        AuditAnswer::Report(r) => (render::report(r, format), EXIT_OK),
        AuditAnswer::Consents { consents } => (render::consents(consents, format), EXIT_OK),
        AuditAnswer::Fhir(v) => (render::json(v), EXIT_OK),
        AuditAnswer::Verify(r) => (
            render::verify(r, format),
            if r.intact() { EXIT_OK } else { EXIT_TAMPERED },
        ),
    };
    crate::output::write(&text);
    Ok(code)
}

/// A period's two ends, either open.
type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn period(p: &Period) -> Result<Bounds, AuditError> {
    Ok((
        p.from
            .as_deref()
            .map(|s| request::parse_time("--from", s, false))
            .transpose()?,
        p.to.as_deref()
            .map(|s| request::parse_time("--to", s, true))
            .transpose()?,
    ))
}

fn filter_params(f: &Filter) -> Result<Params, AuditCliError> {
    let (from, to) = period(&f.period)?;
    Ok(Params {
        bsn: f.bsn.as_ref().map(BsnArg::resolve).transpose()?,
        message_id: f.message_id.clone(),
        peer: f.peer.clone(),
        event: f
            .event
            .as_deref()
            .map(str::parse::<Event>)
            .transpose()
            .map_err(AuditError::from)?,
        from,
        to,
        limit: f.limit,
        ..Params::default()
    })
}

fn parse(c: &AuditCommand) -> Result<(Command, Params, Format), AuditCliError> {
    Ok(match c {
        AuditCommand::Prove { .. } => {
            return Err(AuditCliError::Usage(
                "prove is answered offline, from the store".into(),
            ))
        }
        AuditCommand::Records { filter, format } => {
            let command = if *format == Format::Fhir {
                Command::Export
            } else {
                Command::Records
            };
            (command, filter_params(filter)?, *format)
        }
        AuditCommand::Export { filter, format } => {
            if *format != Format::Fhir {
                return Err(AuditCliError::Usage(
                    "export writes FHIR only: --format fhir (use `records` for table, json or csv)"
                        .into(),
                ));
            }
            (Command::Export, filter_params(filter)?, *format)
        }
        AuditCommand::Consents {
            bsn,
            period: p,
            format,
        } => {
            let (from, to) = period(p)?;
            let params = Params {
                bsn: bsn.as_ref().map(BsnArg::resolve).transpose()?,
                from,
                to,
                fhir: *format == Format::Fhir,
                ..Params::default()
            };
            (Command::Consents, params, *format)
        }
        AuditCommand::Report {
            bsn,
            period: p,
            format,
        } => {
            let (from, to) = period(p)?;
            let params = Params {
                bsn: Some(bsn.resolve()?),
                from,
                to,
                ..Params::default()
            };
            (Command::Report, params, *format)
        }
        AuditCommand::Verify { expect, format } => {
            let expect = expect
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e: super::verify::VerifyError| AuditCliError::Usage(e.to_string()))?;
            let params = Params {
                expect,
                ..Params::default()
            };
            (Command::Verify, params, *format)
        }
    })
}

async fn online(
    args: &AuditArgs,
    url: &str,
    command: Command,
    params: &Params,
) -> Result<AuditAnswer, AuditCliError> {
    let missing = |what: &str| {
        AuditCliError::Usage(format!(
            "--gateway needs --cert, --key and --ca (the auditor's certificate and key, the CA): {what} is missing"
        ))
    };
    if args.store.is_some() || args.config.is_some() {
        return Err(AuditCliError::Usage(
            "choose one way: --gateway (online) or --store/--config (offline)".into(),
        ));
    }
    let creds = Credentials {
        cert: args.cert.clone().ok_or_else(|| missing("--cert"))?,
        key: args.key.clone().ok_or_else(|| missing("--key"))?,
        ca: args.ca.clone().ok_or_else(|| missing("--ca"))?,
    };
    let mut client = OnlineAuditor::connect(url, &creds).await?;
    let body = client.ask(command, params).await?;
    let bad = |e: serde_json::Error| AuditCliError::Online(OnlineError::BadAnswer(e.to_string()));
    Ok(match command {
        Command::Records => {
            AuditAnswer::Records(serde_json::from_slice::<RecordPage>(&body).map_err(bad)?)
        }
        Command::Report => {
            AuditAnswer::Report(serde_json::from_slice::<AccessReport>(&body).map_err(bad)?)
        }
        Command::Verify => {
            AuditAnswer::Verify(serde_json::from_slice::<VerifyReport>(&body).map_err(bad)?)
        }
        Command::Consents if !params.fhir => {
            #[derive(serde::Deserialize)]
            struct Consents {
                consents: Vec<ConsentHistory>,
            }
            let c: Consents = serde_json::from_slice(&body).map_err(bad)?;
            AuditAnswer::Consents {
                consents: c.consents,
            }
        }
        Command::Consents | Command::Export => {
            AuditAnswer::Fhir(serde_json::from_slice(&body).map_err(bad)?)
        }
    })
}

/// Opens a store, retrying for a second while it is locked: sled releases the lock of a
/// gateway that has just stopped a moment after the process let go of it. A running
/// gateway's lock outlasts the retries.
fn retry_locked<S>(open: impl Fn() -> Result<S, StoreError>) -> Result<S, StoreError> {
    let mut tries = 0;
    loop {
        match open() {
            Err(StoreError::Locked(_)) if tries < 10 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn read_certificate(path: &Path) -> Result<Vec<u8>, AuditCliError> {
    let problem = |p: String| AuditCliError::Certificate {
        path: path.to_path_buf(),
        problem: p,
    };
    let first = CertificateDer::pem_file_iter(path)
        .map_err(|e| problem(format!("cannot read PEM certificates: {e}")))?
        .next()
        .ok_or_else(|| problem("holds no certificate".into()))?
        .map_err(|e| problem(format!("bad PEM certificate: {e}")))?;
    Ok(first.to_vec())
}

/// `prove`: the offline proof of one stored envelope, from the store opened read-only.
fn prove_offline(
    args: &AuditArgs,
    message: &str,
    from: Option<&str>,
    format: Format,
) -> Result<i32, AuditCliError> {
    if args.gateway.is_some() || args.key.is_some() {
        return Err(AuditCliError::Usage(
            "prove works offline on a store: --store DIR and/or --config FILE (with --ca for trust anchors)"
                .into(),
        ));
    }
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let dir = offline_store(
        args,
        config.as_ref(),
        "say where the envelope is: --store DIR and/or --config FILE",
    )?;
    let anchors: Vec<CertificateDer<'static>> = match (&args.ca, &config) {
        (Some(path), _) => CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| AuditCliError::Certificate {
                path: path.clone(),
                problem: format!("cannot read PEM certificates: {e}"),
            })?,
        (None, Some(c)) => c.trust_anchors.clone(),
        (None, None) => Vec::new(),
    };
    // The envelopes are sealed at rest: the config's data key opens them (in its own
    // store, or a backup of it).
    let data_key = config.as_ref().map(|c| c.data_key.clone());
    let store = retry_locked(|| match &data_key {
        Some(k) => Store::open_read_only_with_key(&dir, k.clone()),
        None => Store::open_read_only(&dir),
    })
    .map_err(|e| match e {
        StoreError::Locked(dir) => AuditCliError::Usage(format!(
            "the store at {} is locked by its running gateway; prove reads a stopped gateway's store or a copy of it (wijkpoort store backup)",
            dir.display()
        )),
        other => AuditCliError::Store(other),
    })?;
    let reports = super::prove::prove(&store, message, from, &anchors).map_err(|e| match e {
        super::prove::ProveError::Store(StoreError::Sealed(tree)) => AuditCliError::Usage(format!(
            "the envelopes in the store at {} are sealed at rest (the {tree} tree): give --config FILE of the gateway that wrote it, whose data key opens them",
            dir.display()
        )),
        other => AuditCliError::Usage(other.to_string()),
    })?;
    let text = if matches!(format, Format::Json | Format::Fhir) {
        render::json(&reports)
    } else {
        super::prove::render(&reports)
    };
    eprintln!("note: this read is not recorded in the audit log (prove opens the store read-only)");
    crate::output::write(&text);
    Ok(if reports.iter().all(|r| r.valid) {
        EXIT_OK
    } else {
        EXIT_TAMPERED
    })
}

/// The store an offline command reads: `--store`, else the config's `store_dir`; it
/// must hold a sled database. `missing` says what to give when neither is.
fn offline_store(
    args: &AuditArgs,
    config: Option<&Config>,
    missing: &str,
) -> Result<PathBuf, AuditCliError> {
    let dir = match (&args.store, config) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => c.store_dir.clone(),
        (None, None) => return Err(AuditCliError::Usage(missing.into())),
    };
    if !dir.join("db").exists() {
        return Err(AuditCliError::NoStore(dir));
    }
    Ok(dir)
}

async fn offline(
    args: &AuditArgs,
    command: Command,
    params: Params,
) -> Result<AuditAnswer, AuditCliError> {
    if args.key.is_some() || args.ca.is_some() {
        return Err(AuditCliError::Usage(
            "--key and --ca are for the online way (--gateway); offline takes --store and --config"
                .into(),
        ));
    }
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let dir = offline_store(
        args,
        config.as_ref(),
        "say where the log is: --store DIR and/or --config FILE (offline), or --gateway URL (online)",
    )?;
    let certificate = match (&args.cert, &config) {
        (Some(path), _) => Some(read_certificate(path)?),
        // The certificate the gateway signs its checkpoints with.
        (None, Some(c)) => c.signing_chain.first().map(|c| c.to_vec()),
        (None, None) => None,
    };
    let pseudonymiser = config.as_ref().map(|c| Pseudonymiser::new(&c.secret));
    let observer = config
        .as_ref()
        .map_or(String::new(), |c| c.identity.to_string());
    let request = params.into_request(command, pseudonymiser.as_ref())?;
    let anchors = config
        .as_ref()
        .map(|c| c.trust_anchors.clone())
        .unwrap_or_default();
    // The long commands show a bar on a terminal (and nothing when piped).
    let progress = match command {
        Command::Verify | Command::Export => Progress::on_terminal(),
        _ => Progress::hidden(),
    };
    let ctx = Context {
        observer: &observer,
        certificate: certificate.as_deref(),
        trust_anchors: &anchors,
        pseudonymiser: pseudonymiser.as_ref(),
        today: Utc::now().date_naive(),
        progress: &progress,
    };
    let locked = |e: StoreError, config: Option<&Config>| match e {
        StoreError::Locked(dir) => AuditCliError::Locked {
            dir,
            url: config.map_or("https://HOST:PORT".into(), |c| {
                format!("https://{}", c.listener)
            }),
        },
        other => AuditCliError::Store(other),
    };

    // Recording the read appends to the log and signs a checkpoint with the config's key:
    // only on the config's own store, never on another gateway's.
    let own_store =
        config
            .as_ref()
            .is_some_and(|c| match (dir.canonicalize(), c.store_dir.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            });
    // The config's data key opens the sealed trees (the consent log) of its store.
    let data_key = config.as_ref().map(|c| c.data_key.clone());
    let config = if own_store { config } else { None };
    let Some(config) = config.as_ref() else {
        // Another gateway's store is sealed with its own key: its audit log reads without
        // one, its consent log does not.
        let store = retry_locked(|| match &data_key {
            Some(k) => match Store::open_read_only_with_key(&dir, k.clone()) {
                Err(StoreError::WrongDataKey { .. }) => Store::open_read_only(&dir),
                other => other,
            },
            None => Store::open_read_only(&dir),
        })
        .map_err(|e| locked(e, None))?;
        let answer = request::execute(&store, &request, &ctx);
        progress.finish();
        let answer = answer?;
        eprintln!(
            "note: this read is not recorded in the audit log (the store was opened read-only: no --config, or --store is not the config's store_dir)"
        );
        return Ok(answer);
    };

    let store = retry_locked(|| Store::open(&dir, config.signer.clone(), config.data_key.clone()))
        .map_err(|e| locked(e, Some(config)))?;
    let answer = request::execute(&store, &request, &ctx);
    progress.finish();
    let user = args
        .user
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "unknown".into());
    let outcome = if answer.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let mut event = request.audit_event(Actor::User { id: user }, &config.identity, outcome);
    event.reason = event
        .reason
        .map(|r| format!("{r} (offline, on the stopped gateway's store)"));
    let recorded = store.commit_audit(vec![event]).await;
    let closing = store.clone();
    // Closing seals the log with a signed checkpoint, as a gateway's stop does.
    let _ = tokio::task::spawn_blocking(move || closing.close()).await;
    recorded.map_err(AuditCliError::NotRecorded)?;
    Ok(answer?)
}
