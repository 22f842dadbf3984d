//! wijkpoort — a gateway through which a Dutch GP practice and the municipal wijkteam
//! exchange information about children who need youth care, with mutual TLS, consent,
//! data minimisation and a tamper-evident audit log. See `DESIGN.md` in the team's
//! shared folder and the README.
//!
//! # The data path
//!
//! ```text
//! local API ─▶ send ─────────────────────────────▶ outbox ─▶ relay ══mTLS══▶ listener ─▶ receive ──────────────────────▶ inbox ─▶ local API
//!              validate, consent, minimise, sign    (commit)  (batches,        (server::   verify, validate, policy,   (commit)
//!                                                             retry)            listener)  consent
//! ```
//!
//! Every step commits its state change and its audit records together through the
//! store's single commit point ([`store`]), which is on disk before anyone hears
//! "accepted".
//!
//! # The parts
//!
//! - [`config`]: the TOML file, validated once at start.
//! - [`identity`]: who a certificate says its holder is; [`tls`]: rustls configs;
//!   [`signing`]: ECDSA signatures on envelopes, receipts and checkpoints.
//! - [`message`]: the envelope, the four message types, validation.
//! - [`consent`]: records, the WGBO rules, derived state, the coverage check, and
//!   [`consent::registry`] where consent events live in the store.
//! - [`minimise`]: the data-minimisation policy and its actions.
//! - [`send`] and [`receive`]: the two halves of the data path, each in its order.
//! - [`outbox`], [`relay`], [`inbox`], [`receipt`]: durable delivery, exactly once in effect.
//! - [`audit`]: records, hash chain, checkpoints, pseudonyms, and the auditor's queries,
//!   verification, FHIR export, online service and CLI; [`store`]: sled and the commit point.
//! - [`gateway`]: starting and stopping the tasks; [`server`]: the HTTP faces;
//!   [`cpu`]: a batch's signature checks spread over the cores.
//! - [`cli`]: the command line; [`client`]: a local API client; [`pki`] and [`devkit`]: the
//!   development PKI and set-up; [`demo`] and [`mod@bench`]: the whole flow, shown and measured.

#![forbid(unsafe_code)]

pub mod audit;
pub mod bench;
pub mod chain;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod consent;
pub mod consent_desk;
pub mod cpu;
pub mod demo;
pub mod devkit;
pub mod error;
pub mod gateway;
pub mod identity;
pub mod inbox;
pub mod local;
pub mod message;
pub mod minimise;
pub mod outbox;
pub mod pki;
pub mod pseudonym;
pub mod receipt;
pub mod receive;
pub mod relay;
pub mod send;
pub mod server;
pub mod signing;
pub mod stats;
pub mod store;
#[cfg(test)]
mod test_parts;
pub mod tls;
pub mod wire;

pub use config::Config;
pub use error::{Refusal, StartError};
pub use gateway::{Gateway, Listeners, RunningGateway};
