//! Tests of the minimisation engine: golden messages per type, the scrubber, policy
//! loading errors, age bands, the receive-side check, and properties over arbitrary
//! content. The allowlists in the properties are written out here on purpose, apart from
//! the shipped policy file: widening that file must make a test fail and be looked at.
//!
//! One submodule per area, in this order: `golden`, `scrubber`, `age_bands`,
//! `pseudonymise_refuse`, `receive_check`, `policy_loading` and `properties`. The helpers
//! the areas share are here.

use super::*;
use actions::parse_date;

mod age_bands;
mod golden;
mod policy_loading;
mod properties;
mod pseudonymise_refuse;
mod receive_check;
mod scrubber;

const KEY: &[u8] = b"test pseudonym key, 32 bytes ...";

/// The shipped policy, as text: the areas derive variants of it.
const DEFAULT_TEXT: &str = include_str!("../../../config/minimisation.toml");

fn minimiser() -> Minimiser {
    Minimiser::new(Policy::default_policy(), KEY)
}

fn date(s: &str) -> NaiveDate {
    parse_date(s).unwrap()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}
