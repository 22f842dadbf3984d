//! The minimisation policy (the example `config/minimisation.toml` and the built-in
//! default) applied to arbitrary JSON content for every message type: `apply` must not
//! panic, and what it produces must pass the receiving side's `check` (the promise in
//! its doc comment).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use wijkpoort::message::MessageType;
use wijkpoort::minimise::{Minimiser, Policy};

fn minimisers() -> &'static [Minimiser] {
    static M: OnceLock<Vec<Minimiser>> = OnceLock::new();
    M.get_or_init(|| {
        let example = Policy::parse(
            include_str!("../../../config/minimisation.toml"),
            "config/minimisation.toml",
        )
        .expect("the example policy parses");
        vec![
            Minimiser::new(example, b"fuzzing key of thirty-two bytes!"),
            Minimiser::new(
                Policy::default_policy(),
                b"fuzzing key of thirty-two bytes!",
            ),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(content) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    let on = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).expect("a date");
    for minimiser in minimisers() {
        for t in MessageType::ALL {
            let mut applied = content.clone();
            match minimiser.apply(t, &mut applied, on) {
                Ok(_) => {
                    if let Err(refusal) = minimiser.check(t, &applied) {
                        panic!(
                            "{t}: content that apply produced fails check: {refusal}\napplied: {}",
                            Value::Object(applied)
                        );
                    }
                }
                Err(_) => assert_eq!(applied, content, "a refusal leaves content untouched"),
            }
        }
    }
});
