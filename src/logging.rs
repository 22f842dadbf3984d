//! Logging: `tracing` to stderr, in one of two formats an operator picks with the global
//! `--log-format` option.
//!
//! - `text` (the default): one line per event; ANSI colour only when stderr is a
//!   terminal, so that a log written to a file or read by journald holds plain
//!   `message_id=msg-…` that `grep` finds.
//! - `json`: one JSON object per line, the event's fields as top-level fields
//!   (`{"timestamp":…,"level":"INFO","message":"message delivered","message_id":"msg-…",
//!   "target":…}`), for log shippers.
//!
//! The level comes from `RUST_LOG` (e.g. `RUST_LOG=debug`, `RUST_LOG=wijkpoort=trace`),
//! else from the command's default (see [`crate::cli::Cli::default_log_filter`]). No
//! level logs personal data: the gateway logs message ids, peer names, organisation
//! identifiers, codes and counts — never a BSN, a name or free text (a test runs the
//! whole flow at `trace` and scans every line).

use std::io::IsTerminal;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; colour only on a terminal.
    #[default]
    Text,
    /// One JSON object per line, fields as fields.
    Json,
}

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG` is unset or
/// cannot be parsed. Calling it twice is harmless (the second call changes nothing).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}
