//! Benchmark of the send-side `apply` on a referral of about 4 KB, the typical size of a
//! GP referral with a page of free text and the medical fields a sender should not send.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};
use wijkpoort::message::MessageType;
use wijkpoort::minimise::{Minimiser, Policy};

fn referral() -> Map<String, Value> {
    let paragraph = "Moeder maakt zich zorgen over het slapen en de woedeaanvallen van haar zoon \
        sinds de scheiding; school meldt concentratieproblemen. Bereikbaar op 06-12345678 of \
        +31 6 87654321, mail moeder.devries@example.nl, BSN broertje 123.456.782. \
        Ordernummer 123456789, IBAN NL91 ABNA 0417 1643 00. ";
    let text = paragraph.repeat(12);
    let v = json!({
        "subject": {"bsn": "111222333", "name": "Sanne de Vries", "birth_date": "2014-03-02",
                    "address": "Oudegracht 1, Utrecht"},
        "body": {
            "request_for_help": text,
            "urgency": "soon",
            "postcode": "3511 AB",
            "parent_contact": {"name": "Petra de Vries", "relationship": "moeder",
                               "phone": "06-12345678", "email": "moeder.devries@example.nl"},
            "gp_contact": {"name": "Dr. Jansen", "phone": "030-1234567", "agb": "01234567"},
            "diagnoses": [{"code": "F90.0", "text": "ADHD"}, {"code": "R45.1", "text": "onrust"}],
            "medication": ["methylfenidaat 10mg", "melatonine 1mg"],
            "medical_history": "astma sinds 2016",
            "support_profile": {"estimate": "intensief"},
            "internal_note": "vader heeft schulden"
        }
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn bench(c: &mut Criterion) {
    let m = Minimiser::new(Policy::default_policy(), &[7u8; 32]);
    let content = referral();
    let size = serde_json::to_vec(&content).map(|v| v.len()).unwrap_or(0);
    let on = chrono::NaiveDate::from_ymd_opt(2024, 6, 15).unwrap_or_default();
    c.bench_function(&format!("apply referral ({size} bytes)"), |b| {
        b.iter_batched(
            || content.clone(),
            |mut msg| {
                let changes = m.apply(MessageType::Referral, &mut msg, on);
                black_box((msg, changes))
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let mut minimised = content.clone();
    let _ = m.apply(MessageType::Referral, &mut minimised, on);
    c.bench_function(
        &format!("check minimised referral ({size} bytes in)"),
        |b| b.iter(|| black_box(m.check(MessageType::Referral, black_box(&minimised)))),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
