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

pub mod bench;
pub mod demo;
pub mod devkit;
pub mod pki;

/// What `wijkpoort certs dev --out DIR` writes, and a summary of it on stdout.
pub fn certs_dev(out: &std::path::Path) -> Result<(), pki::PkiError> {
    devkit::write_secrets(out)?;
    println!("dev PKI written to {}:", out.display());
    println!("  ca.pem                      trust anchor (the CA key is not kept)");
    println!(
        "  practice.pem/.key           {} (practice, URA-like)",
        pki::DEV_PRACTICE_ID
    );
    println!(
        "  wijkteam.pem/.key           {} (municipality, OIN-like)",
        pki::DEV_WIJKTEAM_ID
    );
    println!(
        "  auditor.pem/.key            {} (auditor)",
        pki::DEV_AUDITOR_ID
    );
    println!("  practice/wijkteam.secret    pseudonym and HMAC key");
    println!("  practice/wijkteam.token     local API bearer token");
    Ok(())
}
