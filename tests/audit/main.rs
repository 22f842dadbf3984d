//! Integration tests of the audit log and the auditor's CLI: real gateways on loopback
//! with the dev kit's certificates, real sled stores in temp dirs, the real binary.
//!
//! - `tamper`: each kind of tampering, made offline with sled, found at the right seq;
//!   `verify`'s exit codes.
//! - `queries`: by BSN exactly one child's records, never the BSN; the access report;
//!   consents; FHIR export; auditors only (403 and audited otherwise); offline reads
//!   recorded; a locked store pointing to the online way.
//!
//! Set-up shared with the other integration tests lives in `fixture` (`tests/fixture/`).

#[path = "../fixture/mod.rs"]
mod fixture;

mod queries;
mod tamper;
mod util;
