//! Development tooling, apart from the gateway: the throw-away dev PKI ([`pki`]), a
//! complete dev set-up in one directory ([`devkit`]), the narrated demo ([`demo`]) and
//! the end-to-end benchmark ([`mod@bench`]).
//!
//! It is behind the default-on `dev` feature, so that `wijkpoort demo` and
//! `wijkpoort bench` work from a plain `cargo run`, while a production build
//! (`cargo build --release --no-default-features`) leaves out this tree and with it
//! the crates only it needs (rcgen, which makes certificates, and tempfile). A feature
//! rather than a second crate keeps the one-crate layout and lets the tests and the
//! demo drive the real gateway through the same library. Nothing in the gateway imports
//! this module.

use crate::output::outln;
pub mod bench;
pub mod demo;
pub mod devkit;
pub mod pki;

/// What `wijkpoort certs dev --out DIR [--shape SHAPE]` writes, and a summary of it on
/// stdout.
pub fn certs_dev(out: &std::path::Path, shape: pki::Shape) -> Result<(), pki::PkiError> {
    if shape != pki::Shape::Ecdsa {
        outln!("making fresh RSA keys with `openssl genpkey` (4096 and 2048 bits) …");
    }
    let [practice, wijkteam, auditor] = devkit::write_secrets_shaped(out, shape)?;
    let (kind, practice_kind) = match shape {
        pki::Shape::Ecdsa => ("ECDSA P-256, one CA", "URA-like, serialNumber"),
        pki::Shape::Uzi => (
            "RSA, UZI and PKIoverheid shapes",
            "URA in the UZI otherName",
        ),
        pki::Shape::Pkioverheid => ("RSA, PKIoverheid shape", "OIN in serialNumber"),
    };
    outln!("dev PKI ({kind}) written to {}:", out.display());
    outln!("  ca.pem                      trust anchor (the CA keys are not kept)");
    if shape != pki::Shape::Ecdsa {
        outln!("  uzi-server-ca.pem           issuing CA, rule uzi");
        outln!("  pkio-issuing-ca.pem         issuing CA, rule pkioverheid");
        outln!("  issuing_cas.toml            the [[issuing_cas]] section naming them");
    }
    outln!("  practice.pem/.key           {practice} (practice, {practice_kind})");
    outln!("  wijkteam.pem/.key           {wijkteam} (municipality, OIN in serialNumber)");
    outln!("  auditor.pem/.key            {auditor} (auditor)");
    outln!("  practice/wijkteam.secret    pseudonym and HMAC key");
    outln!("  practice/wijkteam.datakey   data key: seals what the store holds (AES-256-GCM)");
    outln!("  practice/wijkteam.token     local API bearer token");
    Ok(())
}
