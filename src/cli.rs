//! The command line: `serve`, `demo`, `certs dev`, `audit …`. `main.rs` only parses and
//! calls this.

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
    #[command(subcommand)]
    pub command: Command,
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
    /// Show the whole flow on this machine: two gateways, a referral, feedback, receipts.
    Demo,
    /// Benchmark: two gateways as child processes, N concurrent submitters, end to end.
    Bench(crate::bench::BenchOptions),
    /// The auditor's commands: query, report, verify and export the audit and consent logs,
    /// offline on a stopped gateway's store or online over mTLS.
    Audit(Box<crate::audit::cli::AuditArgs>),
    /// Certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a development PKI (CA, practice, wijkteam, auditor; ECDSA P-256, PEM) and
    /// dev secrets and API tokens for the two gateways.
    Dev {
        #[arg(long)]
        out: PathBuf,
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
        Command::Bench(options) => runtime.block_on(crate::bench::run(options)),
        Command::Demo => runtime.block_on(crate::demo::run()),
        Command::Audit(args) => {
            // The audit commands have exit codes of their own (verify: 0/1/2).
            let code = runtime.block_on(crate::audit::cli::run(*args));
            drop(runtime);
            std::process::exit(code)
        }
        Command::Certs {
            command: CertsCommand::Dev { out },
        } => {
            crate::devkit::write_secrets(&out).map_err(|e| StartError::Other(e.to_string()))?;
            println!("dev PKI written to {}:", out.display());
            println!("  ca.pem                      trust anchor (the CA key is not kept)");
            println!(
                "  practice.pem/.key           {} (practice, URA-like)",
                crate::pki::DEV_PRACTICE_ID
            );
            println!(
                "  wijkteam.pem/.key           {} (municipality, OIN-like)",
                crate::pki::DEV_WIJKTEAM_ID
            );
            println!(
                "  auditor.pem/.key            {} (auditor)",
                crate::pki::DEV_AUDITOR_ID
            );
            println!("  practice/wijkteam.secret    pseudonym and HMAC key");
            println!("  practice/wijkteam.token     local API bearer token");
            Ok(())
        }
    }
}

async fn serve(path: PathBuf, unsafe_no_fsync: bool) -> Result<(), StartError> {
    let config = crate::Config::load(&path)?;
    let listeners = crate::Listeners::bind(&config).await?;
    let durability = if unsafe_no_fsync {
        tracing::warn!("--unsafe-no-fsync: accepted messages can be lost on power failure (benchmark comparison only)");
        crate::store::Durability::Off
    } else {
        crate::store::Durability::Synced
    };
    crate::gateway::run(config, listeners, durability, shutdown_signal()).await
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
