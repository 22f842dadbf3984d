//! The value-level actions of the policy: what pseudonymise, generalise, truncate and scrub
//! do to one JSON value on the send side, and what a value that went through them must
//! look like on the receive side.
//!
//! Both directions live here side by side so that "what `apply` produces" and "what
//! `check` accepts" cannot drift apart. A value an action cannot handle (an object where
//! text was expected, a birth date that is not a date) is dropped rather than passed on:
//! when in doubt, less data leaves.

use chrono::{Datelike, NaiveDate};
use ring::hmac;
use serde_json::Value;

use super::policy::Action;
use super::scrub::{scrub, ScrubCounts};

/// The age bands of `generalise:age_band`. They follow the WGBO age limits for minors
/// (under 12, 12–15, 16–17) with the youngest children split off.
pub(crate) const AGE_BANDS: [&str; 5] = ["0-3", "4-11", "12-15", "16-17", "18+"];

/// What a transform did to a value.
pub(crate) enum Outcome {
    Unchanged,
    Replaced(Value),
    /// The value could not be transformed and must go; the reason is an action name for
    /// the change list (`drop:wrong_type`, `drop:invalid`).
    Remove(&'static str),
}

/// Applies a transform action (not keep or drop) to one value. `null` stays `null`: it
/// carries nothing to minimise.
pub(crate) fn transform(action: Action, value: &Value, key: &hmac::Key, on: NaiveDate) -> Outcome {
    if value.is_null() {
        return Outcome::Unchanged;
    }
    if action == Action::GeneraliseAgeBand {
        if let Some(age) = value.as_u64() {
            return Outcome::Replaced(Value::from(band_for_age(age)));
        }
    }
    let Some(s) = value.as_str() else {
        return Outcome::Remove("drop:wrong_type");
    };
    let new = match action {
        Action::Keep | Action::Drop | Action::Group | Action::List => return Outcome::Unchanged,
        Action::Pseudonymise => pseudonym(key, s),
        Action::Scrub => scrub(s).0,
        Action::Truncate(n) => s.chars().filter(|c| !c.is_whitespace()).take(n).collect(),
        Action::GeneraliseYear => {
            if is_year(s) {
                return Outcome::Unchanged;
            }
            match date_prefix(s) {
                Some(d) => format!("{:04}", d.year()),
                None => return Outcome::Remove("drop:invalid"),
            }
        }
        Action::GeneraliseAgeBand => {
            if AGE_BANDS.contains(&s) {
                return Outcome::Unchanged;
            }
            match parse_date(s).and_then(|birth| age_band(birth, on)) {
                Some(band) => band.to_string(),
                None => return Outcome::Remove("drop:invalid"),
            }
        }
    };
    if new == s {
        Outcome::Unchanged
    } else {
        Outcome::Replaced(Value::String(new))
    }
}

/// Why a value does not look like the output of its action (receive side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nonconformity {
    WrongType,
    Identifiers(ScrubCounts),
    TooLong(usize),
    NotPseudonym,
    NotGeneralised,
}

/// Checks that a value could have come out of `action` (keep and drop are not checked
/// here). `null` always conforms.
pub(crate) fn conforms(action: Action, value: &Value) -> Result<(), Nonconformity> {
    if value.is_null() || matches!(action, Action::Keep | Action::Drop) {
        return Ok(());
    }
    let Some(s) = value.as_str() else {
        return Err(Nonconformity::WrongType);
    };
    match action {
        Action::Keep | Action::Drop | Action::Group | Action::List => Ok(()),
        Action::Scrub => {
            let counts = scrub(s).1;
            if counts.total() == 0 {
                Ok(())
            } else {
                Err(Nonconformity::Identifiers(counts))
            }
        }
        Action::Truncate(n) if s.chars().count() > n => Err(Nonconformity::TooLong(n)),
        Action::Truncate(_) => Ok(()),
        Action::Pseudonymise
            if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(())
        }
        Action::Pseudonymise => Err(Nonconformity::NotPseudonym),
        Action::GeneraliseYear if is_year(s) => Ok(()),
        Action::GeneraliseAgeBand if AGE_BANDS.contains(&s) => Ok(()),
        Action::GeneraliseYear | Action::GeneraliseAgeBand => Err(Nonconformity::NotGeneralised),
    }
}

/// Keyed HMAC-SHA256 of the value as lowercase hex: the same input and key always give the
/// same pseudonym (so records stay linkable), and without the key it cannot be reversed
/// by trying all 10^9 BSNs.
pub(crate) fn pseudonym(key: &hmac::Key, value: &str) -> String {
    hex::encode(hmac::sign(key, value.as_bytes()).as_ref())
}

fn is_year(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A strict `YYYY-MM-DD` date (chrono alone would also take `2014-5-3`).
pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// The date at the start of a date or an RFC 3339 timestamp (`2024-03-01T10:00:00Z`).
fn date_prefix(s: &str) -> Option<NaiveDate> {
    let head = s.get(..10)?;
    let rest = &s[10..];
    if rest.is_empty() || rest.starts_with(['T', 't', ' ']) {
        parse_date(head)
    } else {
        None
    }
}

/// Age in whole years on `on`, or `None` for a birth date after `on`.
///
/// The birthday is compared as (month, day), so a 29 February birthday is reached on
/// 1 March in a year without 29 February (no date lies between 28 February and 1 March).
pub(crate) fn age_on(birth: NaiveDate, on: NaiveDate) -> Option<u32> {
    if on < birth {
        return None;
    }
    let years = u32::try_from(on.year() - birth.year()).ok()?;
    let before_birthday = (on.month(), on.day()) < (birth.month(), birth.day());
    Some(if before_birthday {
        years.saturating_sub(1)
    } else {
        years
    })
}

/// The age band on `on` of a child born on `birth`.
pub(crate) fn age_band(birth: NaiveDate, on: NaiveDate) -> Option<&'static str> {
    age_on(birth, on).map(|a| band_for_age(u64::from(a)))
}

fn band_for_age(age: u64) -> &'static str {
    match age {
        0..=3 => AGE_BANDS[0],
        4..=11 => AGE_BANDS[1],
        12..=15 => AGE_BANDS[2],
        16..=17 => AGE_BANDS[3],
        _ => AGE_BANDS[4],
    }
}
