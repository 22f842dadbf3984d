//! wijkpoort's integration tests: real gateways on loopback, real mutual TLS with
//! certificates made at test time, real sled stores in temporary directories.
//!
//! One test binary (so the crate is linked once); each file covers one area and reads
//! as a specification of it. Set-up shared with the audit tests lives in `fixture`
//! (`tests/fixture/`); what only these tests need, in `util`.

#[path = "../fixture/mod.rs"]
mod fixture;

mod at_rest;
mod backup;
mod batch_signature;
mod cli_output;
mod config;
mod consent;
mod durability;
mod fhir_export;
mod hardening;
mod identity;
mod issuing_cas;
mod listener_refusals;
mod local_api;
mod many_peers;
mod minimisation;
mod openapi;
mod operations;
mod privacy;
mod real_certificates;
mod relay;
mod reload;
mod renewal;
mod retention;
mod revocation;
mod service_units;
mod signing_certificate;
mod store_format;
mod tls_validity;
mod util;
