//! Benchmarks of the hot pieces of the data path, one by one, so that the end-to-end
//! figure of `wijkpoort bench` can be taken apart: envelope parse + validate, envelope
//! sign + verify, receipt issue + verify, sealing an audit record into the chain, and
//! sealing and opening a stored envelope with the data key (encryption at rest).
//! Run with `cargo bench --bench hot_paths`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use wijkpoort::chain::{Actor, AuditChain, AuditEvent, Event, Outcome, Sealed};
use wijkpoort::dev::pki::{Authority, LeafSpec};
use wijkpoort::message::{self, Envelope, MessageType};
use wijkpoort::receipt::{self, Receipt};
use wijkpoort::signing::{self, Signer};

fn envelope_bytes() -> Vec<u8> {
    let text = "Ouders vragen hulp bij slaapproblemen en angst. ".repeat(20);
    serde_json::to_vec(&json!({
        "id": "msg-0123456789abcdef01234567", "type": "referral", "schema_version": 1,
        "created_at": "2026-11-23T10:00:00Z", "from": "90000123", "to": "00000001003214345000",
        "consent": {"id": "consent-1"},
        "subject": {"bsn": "111222333", "name": "Sanne de Vries", "birth_date": "2014-03-02"},
        "body": {"request_for_help": text, "urgency": "soon", "postcode": "3511",
                 "parent_contact": {"name": "M. de Vries", "relationship": "mother", "phone": "06-12345678"}}
    }))
    .unwrap()
}

fn credentials() -> (Signer, Vec<u8>) {
    let ca = Authority::new("bench").unwrap();
    let issued = ca
        .issue(&LeafSpec::new("90000123", "bench", "bench"))
        .unwrap();
    use rustls::pki_types::pem::PemObject;
    let key =
        rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let cert =
        rustls::pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
    (
        Signer::from_pkcs8(key.secret_pkcs8_der()).unwrap(),
        cert.to_vec(),
    )
}

fn benches(c: &mut Criterion) {
    let bytes = envelope_bytes();
    c.bench_function("envelope parse + validate (1 KB referral)", |b| {
        b.iter(|| {
            let env: Envelope = serde_json::from_slice(black_box(&bytes)).unwrap();
            message::validate(&env).unwrap();
            env
        })
    });

    let (signer, cert) = credentials();
    c.bench_function("envelope sign (ECDSA P-256)", |b| {
        b.iter(|| signer.sign(black_box(&bytes)).unwrap())
    });
    let signature = signer.sign_encoded(&bytes).unwrap();
    c.bench_function("envelope verify against the sender's certificate", |b| {
        b.iter(|| {
            signing::verify(black_box(&cert), black_box(&bytes), black_box(&signature)).unwrap()
        })
    });
    c.bench_function("receipt issue + verify (a batch of one)", |b| {
        b.iter(|| {
            let r = Receipt::issue("msg-1", black_box(&bytes), "00000001003214345000", &signer)
                .unwrap();
            r.verify("msg-1", &bytes, &cert).unwrap();
        })
    });
    // What a full relay batch costs: one signature, 256 paths, the signature checked once
    // (as the relay does: receipts of one batch share their signed statement).
    let ids: Vec<String> = (0..256).map(|i| format!("msg-{i:04}")).collect();
    let stored: Vec<(&str, &[u8])> = ids.iter().map(|id| (id.as_str(), &bytes[..])).collect();
    c.bench_function(
        "receipts for a batch of 256: issue + verify, whole batch",
        |b| {
            b.iter(|| {
                let receipts =
                    Receipt::issue_batch(black_box(&stored), "00000001003214345000", &signer)
                        .unwrap();
                let mut checked: Option<Vec<u8>> = None;
                for (r, id) in receipts.iter().zip(&ids) {
                    let statement = r.statement_for(id, &bytes).unwrap();
                    if checked.as_ref() != Some(&statement) {
                        receipt::verify_statement(&statement, &r.signature, &cert).unwrap();
                        checked = Some(statement);
                    }
                }
            })
        },
    );

    let mut chain = AuditChain::resume(None, 0).unwrap();
    let event = AuditEvent::new(
        Event::MessageAccepted,
        Outcome::Success,
        Actor::User {
            id: "dr.jansen".into(),
        },
    )
    .message("msg-0123456789abcdef01234567", MessageType::Referral)
    .subject(Some("9f".repeat(32)))
    .peer("00000001003214345000")
    .consent(Some("consent-1"));
    c.bench_function(
        "audit record: seal into the chain (hash + indexes, no I/O)",
        |b| {
            b.iter(|| {
                let mut sealed = Sealed::default();
                chain.append(black_box(event.clone()), &mut sealed).unwrap();
                sealed
            })
        },
    );

    let sealer = wijkpoort::seal::Sealer::new(
        std::sync::Arc::new(wijkpoort::seal::DataKey::random().unwrap()),
        0,
    );
    let id = b"msg-0123456789abcdef01234567";
    c.bench_function("at rest: seal the envelope (AES-256-GCM)", |b| {
        b.iter(|| {
            sealer
                .seal("sent_envelopes", id, black_box(&bytes))
                .unwrap()
        })
    });
    let stored = sealer.seal("sent_envelopes", id, &bytes).unwrap();
    c.bench_function("at rest: open the envelope", |b| {
        b.iter(|| {
            sealer
                .open("sent_envelopes", id, black_box(&stored))
                .unwrap()
        })
    });
}

criterion_group!(hot_paths, benches);
criterion_main!(hot_paths);
