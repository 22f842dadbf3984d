//! The batch parser, as the mTLS listener runs it on a relayed batch: the batch, then
//! each message's signature (decoded) and envelope (parsed and validated).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wijkpoort::message::{validate, Envelope};
use wijkpoort::wire::BatchRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = serde_json::from_slice::<BatchRequest<'_>>(data) else {
        return;
    };
    for item in &batch.messages {
        if let Some(signature) = &item.signature {
            let _ = wijkpoort::signing::decode_full(signature);
            let _ = wijkpoort::signing::named_certificate(signature);
        }
        if let Ok(envelope) = serde_json::from_slice::<Envelope>(item.envelope.get().as_bytes()) {
            let _ = validate(&envelope);
        }
    }
});
