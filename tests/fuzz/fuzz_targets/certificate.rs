//! Identity extraction from arbitrary DER certificates: the peer's (by each issuing-CA
//! rule, and through `Issuers::identify` with the dev CA), the tolerant reader of the
//! gateway's own certificate, the expiry date, and the signing key.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wijkpoort::issuers::{Issuers, IssuingCa, Rule};

fn issuers() -> &'static Issuers {
    static I: OnceLock<Issuers> = OnceLock::new();
    I.get_or_init(|| {
        let ca = wijkpoort::dev::pki::Authority::new("fuzzing").expect("a dev CA");
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(ca.cert_pem.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
            .expect("the CA's PEM");
        Issuers::new(vec![IssuingCa::new(der, Rule::Dev).expect("a CA")])
    })
}

fuzz_target!(|data: &[u8]| {
    for rule in [Rule::Uzi, Rule::Pkioverheid, Rule::Dev] {
        if let Ok(id) = wijkpoort::fuzzing::identify_by_rule(data, rule) {
            assert!(
                !id.organisation_id.as_str().is_empty(),
                "{rule}: an empty identity"
            );
        }
    }
    let _ = issuers().identify(data);
    let _ = wijkpoort::identity::identify(data);
    let _ = wijkpoort::identity::not_after(data);
    let _ = wijkpoort::signing::certificate_key(data);
});
