//! wijkpoort's integration tests: real gateways on loopback, real mutual TLS with
//! certificates made at test time, real sled stores in temporary directories.
//!
//! One test binary (so the crate is linked once); each file covers one area and reads
//! as a specification of it. Shared set-up lives in `util`.

mod config;
mod consent;
mod durability;
mod identity;
mod listener_refusals;
mod local_api;
mod minimisation;
mod relay;
mod util;
