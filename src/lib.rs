//! wijkpoort — a gateway through which a Dutch GP practice and the municipal wijkteam
//! exchange information about children who need youth care, with mutual TLS, consent,
//! data minimisation and a tamper-evident audit log. See `DESIGN.md` in the team's
//! shared folder and the README.
//!
//! # The data path
//!
//! ```text
//! local API ─▶ send ─▶ outbox ─▶ relay ══mTLS══▶ listener ─▶ receive ─▶ inbox ─▶ local API
//!  (server::   (validate,  (store,     (per peer,          (server::    (verify,       (store)
//!   local_api)  sign)       commit)     retry)              listener)    check)
//! ```
//!
//! Every step commits its state change and its audit record together through the
//! store's single commit point ([`store`]), which is on disk before anyone hears
//! "accepted".
//!
//! # The parts
//!
//! - [`config`]: the TOML file, validated once at start.
//! - [`identity`]: who a certificate says its holder is; [`tls`]: rustls configs;
//!   [`signing`]: ECDSA signatures on envelopes, receipts and checkpoints.
//! - [`message`]: the envelope, the four message types, validation.
//! - [`send`] and [`receive`]: the two halves of the data path, each in its order.
//! - [`outbox`], [`relay`], [`inbox`], [`receipt`]: durable delivery, exactly once in effect.
//! - [`audit`]: records, hash chain, checkpoints, pseudonyms; [`store`]: sled and the commit point.
//! - [`gateway`]: starting and stopping the tasks; [`server`]: the HTTP faces.
//! - [`pki`]: the development PKI; [`demo`]: the whole flow on one machine.

#![forbid(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod client;
pub mod config;
pub mod consent;
pub mod demo;
pub mod devkit;
pub mod error;
pub mod gateway;
pub mod identity;
pub mod inbox;
pub mod message;
pub mod minimise;
pub mod outbox;
pub mod pki;
pub mod receipt;
pub mod receive;
pub mod relay;
pub mod send;
pub mod server;
pub mod signing;
pub mod store;
pub mod tls;

pub use config::Config;
pub use error::{Refusal, StartError};
pub use gateway::{Gateway, Listeners, RunningGateway};
