//! The envelope parser and validation, as the receive path runs them on a relayed
//! message's bytes: parse, validate, the anonymity check, the BSN and consent getters;
//! and what the sender signs (`to_bytes`) must parse back to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wijkpoort::message::{check_anonymous, validate, Envelope};

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(data) else {
        return;
    };
    let _ = validate(&envelope);
    let _ = check_anonymous(&envelope);
    let _ = envelope.bsn();
    let _ = envelope.consent_id();
    let content = envelope.content();
    let mut copy = envelope.clone();
    let taken = copy.take_content();
    assert_eq!(content, taken);
    copy.put_content(taken);
    let bytes = envelope.to_bytes();
    let again: Envelope = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("the signed bytes of a parsed envelope do not parse: {e}"));
    assert_eq!(again.to_bytes(), bytes, "to_bytes is not stable");
});
