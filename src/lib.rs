//! wijkpoort — a gateway through which a Dutch GP practice and the municipal wijkteam
//! exchange information about children who need youth care, with mutual TLS, consent,
//! data minimisation and a tamper-evident audit log. See `DESIGN.md` in the team's
//! shared folder and the README.
//!
//! # The data path
//!
//! ```text
//! server::local_api ─▶ send ─────────────────────────▶ outbox ─▶ relay ══mTLS══▶ server::listener ─▶ receive ─────────────────▶ inbox ─▶ server::local_api
//!                      validate, consent, minimise       (commit)  (batches, one    (peer known?)       verify, validate, policy,  (commit)
//!                                                                  signature each,                      consent, receipt
//!                                                                  retry)
//! ```
//!
//! Every step commits its state change and its audit records together through the
//! store's single commit point ([`store`]), which is on disk before anyone hears
//! "accepted".
//!
//! # The parts, from the top down
//!
//! Nothing imports a module above it; the servers are on top and nothing below them
//! imports them.
//!
//! - [`cli`]: the command line (with [`check_config`], [`migrate`], [`logging`] and
//!   [`output`], its answers on stdout, where a reader that closed the pipe ends it cleanly);
//!   [`gateway`]: builds each part from the [`Config`] with only the handles it needs,
//!   starts and stops them, and applies a [`reload`] (its table says who holds what).
//! - [`server`]: the local API, the mTLS listener, the auditor's routes, the ops listener
//!   (metrics, health) and the listeners' limits — the only place where a refusal
//!   [`error::Code`] becomes an HTTP status.
//! - [`consent_desk`]: record, withdraw (queues a `consent_update` through the send
//!   path), list a child's consents.
//! - [`send`] and [`receive`]: the two halves of the data path, each in its order;
//!   [`relay`]: one task per peer delivering its outbox; [`wire`]: the batch format the
//!   relay and the listener share.
//! - [`audit`]: the auditor's side — queries, verification, FHIR export, the CLI and
//!   the online client — reading what the store holds.
//! - [`consent`]: what a consent is, the WGBO rules, derived state, the coverage check,
//!   and [`consent::registry`] where consent events live in the store.
//! - [`outbox`], [`inbox`], [`receipt`]: durable delivery, exactly once in effect;
//!   [`envelope_batch`]: the sender's one signature per relay batch, each envelope
//!   with its path; [`merkle`]: the tree both the receipts and that signature use;
//!   [`stats`] and [`metrics`]: counters for `/v1/stats` and `/metrics`.
//! - [`backup`]: a consistent copy of the store taken between two group commits (or of
//!   a stopped gateway's store), and its checked restore.
//! - [`retention`]: how long each kind is kept and the purge (daily, and `store
//!   purge`); [`compact`]: `store compact` and `store rotate-key` on a stopped store.
//! - [`store`]: sled, its trees and keys, and the commit point; [`stored_signature`]:
//!   each batch and receipt signature written once, the records referring to it; [`seal`]: the data key
//!   that seals the trees holding personal data (AES-256-GCM, bound to tree and key);
//!   [`chain`]: the audit hash chain the store's committer seals records into (records,
//!   checkpoints, index runs).
//! - [`local`]: who this gateway is (role, identity, signing key, certificate, clock);
//!   [`config`]: the TOML file, validated once at start (and again on a reload);
//!   [`live`]: a value a reload swaps whole; [`tls`]: rustls configs; [`revocation`]:
//!   the CAs' revocation lists; [`issuers`]: which CA issued a peer's certificate and how
//!   its certificates name an organisation; [`caller`]: who is on the other end of an
//!   mTLS connection; [`identity`]: what a certificate says; [`minimise`]: the
//!   data-minimisation policy; [`message`]: the envelope, the four message types,
//!   validation; [`signing`]: RSA and ECDSA signatures that name their algorithm and
//!   certificate; [`pseudonym`]: the keyed pseudonym of a BSN; [`clock`]: "now" and
//!   "today"; [`der`]: a DER tag-length-value; [`cpu`]: a batch's checks spread over the cores; [`client`]: a local API
//!   client; [`error`]: refusals and start-up errors.
//! - `dev` (the default-on `dev` feature): the development PKI (ECDSA, and the UZI and
//!   PKIoverheid shapes), dev kit and network, [`demo`] and benchmark — `cargo run --
//!   demo` and `bench` — left out of a production build.
//! - `fuzzing` (hidden): what the fuzz targets in `tests/fuzz/` drive and nothing else
//!   calls.
//!
//! [`demo`]: crate::dev::demo

#![forbid(unsafe_code)]

pub mod audit;
pub mod backup;
pub mod caller;
pub mod chain;
pub mod check_config;
pub mod cli;
pub mod client;
pub mod clock;
pub mod compact;
pub mod config;
pub mod consent;
pub mod consent_desk;
pub mod cpu;
pub mod der;
#[cfg(feature = "dev")]
pub mod dev;
pub mod envelope_batch;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod identity;
pub mod inbox;
pub mod issuers;
pub mod live;
pub mod local;
pub mod logging;
pub mod merkle;
pub mod message;
pub mod metrics;
pub mod migrate;
pub mod minimise;
pub mod outbox;
pub mod output;
pub mod pseudonym;
pub mod receipt;
pub mod receive;
pub mod relay;
pub mod reload;
pub mod retention;
pub mod revocation;
pub mod seal;
pub mod send;
pub mod server;
pub mod signing;
pub mod stats;
pub mod store;
pub mod stored_signature;
#[cfg(test)]
mod test_parts;
pub mod tls;
pub mod wire;

pub use config::Config;
pub use error::{Refusal, StartError};
pub use gateway::{Gateway, Listeners, RunningGateway};
