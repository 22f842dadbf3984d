//! The WGBO rules for minors: whose consent counts, decided by the child's age on the day
//! consent is given.
//!
//! The WGBO (Book 7, title 7, section 5 of the Civil Code) lets a patient of 16 or older
//! decide alone (art. 7:447); from 12 to 15 the consent of the child *and* of the parents
//! with authority or the guardian is needed (art. 7:450 lid 2), with an exception when
//! going ahead without the parents is clearly necessary to prevent serious harm to the
//! child; under 12 the parents or guardian act for the child (art. 7:465 lid 1). These
//! functions are pure so that the boundary cases can be tested to the day.
//!
//! The basis is judged on the day consent is given, but the child grows older while the
//! consent runs, so [`basis_ends_on`] says when a basis stops carrying it:
//!
//! - **parent or guardian alone** (given under 12): ends the day before the 12th
//!   birthday. From 12 the child's own consent is needed as well (art. 7:450 lid 2); the
//!   parents' consent alone no longer suffices, so the practice renews it with the child.
//! - **child and parent** (given at 12–15): runs on after the 16th birthday. The child
//!   consented; the parents' consent was needed *in addition* only until 16
//!   (art. 7:450 lid 2), and from 16 the child decides alone (art. 7:447) and the
//!   parents' own rights under the WGBO end (art. 7:465 lid 2 reaches only to 16). Nothing
//!   in the WGBO voids a consent the child itself gave; what ends is the parents' part,
//!   which a consent of the child alone does not need. The child may withdraw it alone
//!   from then on, as any patient may.
//! - **child alone** (from 16, or 12–15 under the serious-harm exception): never lapses
//!   by age; from 16 the child decides alone anyway.
//!
//! Whatever the basis, the consent's own period and the configured maximum validity
//! still end it.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use super::{ConsentError, Performer, PerformerRole};

/// On what legal ground a recorded consent stands. Stored with the record so that an
/// auditor sees *why* the gateway accepted it, not only that it did.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WgboBasis {
    /// Child under 12: a parent or guardian consented (art. 7:465 lid 1).
    ParentOrGuardian,
    /// Child of 12 to 15: the child and a parent or guardian consented (art. 7:450 lid 2).
    ChildAndParent,
    /// Child of 16 or older: the child consented (art. 7:447).
    Child,
    /// Child of 12 to 15 consented alone because involving the parents would cause serious
    /// harm to the child (art. 7:450 lid 2, second sentence); `reason` is the documented
    /// reason, trimmed.
    ExceptionSeriousHarm { reason: String },
}

impl WgboBasis {
    /// A stable machine name for the basis (the serde tag).
    pub fn as_str(&self) -> &'static str {
        match self {
            WgboBasis::ParentOrGuardian => "parent_or_guardian",
            WgboBasis::ChildAndParent => "child_and_parent",
            WgboBasis::Child => "child",
            WgboBasis::ExceptionSeriousHarm { .. } => "exception_serious_harm",
        }
    }

    /// The rule as a sentence naming its article and who consented, for the auditor's
    /// FHIR `Consent.policyRule`. An exception's documented reason is free text about the
    /// family and is left out: the sentence only says that one was recorded.
    pub fn rule(&self) -> &'static str {
        match self {
            WgboBasis::ParentOrGuardian => {
                "WGBO (art. 7:465 lid 1 BW): child under 12, consent of a parent or guardian"
            }
            WgboBasis::ChildAndParent => "WGBO (art. 7:450 lid 2 BW): child aged 12 to 15, consent of the child and of a parent or guardian",
            WgboBasis::Child => "WGBO (art. 7:447 BW): child aged 16 or older, consent of the child",
            WgboBasis::ExceptionSeriousHarm { .. } => "WGBO (art. 7:450 lid 2 BW): child aged 12 to 15 consented without a parent or guardian, to prevent serious harm to the child (reason recorded with the consent)",
        }
    }
}

/// Whose consent is missing when the WGBO rule is not met. Names roles, never people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingPerformer {
    Child,
    ParentOrGuardian,
    ChildAndParentOrGuardian,
}

impl std::fmt::Display for MissingPerformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MissingPerformer::Child => "the child",
            MissingPerformer::ParentOrGuardian => "a parent or guardian",
            MissingPerformer::ChildAndParentOrGuardian => "the child and a parent or guardian",
        })
    }
}

/// The child's age in whole years on `day`, counted exactly to the day; `None` when `day`
/// is before the birth date.
///
/// A birthday on 29 February counts on 1 March in years without a 29 February, as in
/// Dutch civil law: someone born on 2012-02-29 is still 12 on 2025-02-28 and turns 13 on
/// 2025-03-01. Comparing (month, day) pairs gives exactly that, because (2, 28) comes
/// before (2, 29) and (3, 1) after it.
pub fn age_on(birth: NaiveDate, day: NaiveDate) -> Option<u32> {
    if day < birth {
        return None;
    }
    let mut years = day.year() - birth.year();
    if (day.month(), day.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    u32::try_from(years).ok()
}

/// The n-th birthday of a child born on `birth`: the same day and month n years on, or
/// 1 March in a year without 29 February (as [`age_on`] counts it).
pub fn birthday(birth: NaiveDate, n: u32) -> Option<NaiveDate> {
    let year = birth.year().checked_add(i32::try_from(n).ok()?)?;
    birth
        .with_year(year)
        .or_else(|| NaiveDate::from_ymd_opt(year, 3, 1))
}

/// The last day on which `basis` carries a consent about a child born on `birth`, or
/// `None` when growing older does not end it (see the module text for the rule and its
/// sources).
pub fn basis_ends_on(basis: &WgboBasis, birth: NaiveDate) -> Option<NaiveDate> {
    match basis {
        WgboBasis::ParentOrGuardian => birthday(birth, 12).and_then(|d| d.pred_opt()),
        WgboBasis::ChildAndParent | WgboBasis::Child | WgboBasis::ExceptionSeriousHarm { .. } => {
            None
        }
    }
}

/// The three age bands the WGBO distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgeBand {
    Under12,
    From12To15,
    From16,
}

fn band(age: u32) -> AgeBand {
    match age {
        0..=11 => AgeBand::Under12,
        12..=15 => AgeBand::From12To15,
        _ => AgeBand::From16,
    }
}

/// What the WGBO asks for at this age, in words (used in error messages).
pub(super) fn requirement_text(age: &u32) -> &'static str {
    match band(*age) {
        AgeBand::Under12 => {
            "the consent of a parent or guardian (a child under 12 does not consent)"
        }
        AgeBand::From12To15 => "the consent of the child and of a parent or guardian",
        AgeBand::From16 => {
            "the consent of the child (a parent's or guardian's consent does not replace it)"
        }
    }
}

/// A hint appended to the "missing" message where a way out exists: a child of 12 to 15
/// alone is accepted with a documented serious-harm exception.
pub(super) fn missing_hint(age: &u32, missing: &MissingPerformer) -> &'static str {
    if band(*age) == AgeBand::From12To15 && *missing == MissingPerformer::ParentOrGuardian {
        " (or, where involving the parents would seriously harm the child, a documented exception reason)"
    } else {
        ""
    }
}

/// Applies the WGBO rule for a child of `age` on `given_on` to the performers and the
/// optional exception reason, returning the basis on which the consent stands.
///
/// A blank exception counts as none: the exception must be *explicitly* documented. An
/// exception given where it cannot apply (under 12, from 16, or when a parent or guardian
/// consented as well) is refused rather than ignored, so that no record carries an
/// exception reason that was never the ground for accepting it.
pub fn wgbo_basis(
    age: u32,
    given_on: NaiveDate,
    performers: &[Performer],
    exception: Option<&str>,
) -> Result<WgboBasis, ConsentError> {
    let has_child = performers.iter().any(|p| p.role == PerformerRole::Child);
    let has_parent = performers
        .iter()
        .any(|p| matches!(p.role, PerformerRole::Parent | PerformerRole::Guardian));
    let exception = exception.map(str::trim).filter(|r| !r.is_empty());
    let missing = |missing| ConsentError::WgboMissingPerformer {
        age,
        given_on,
        missing,
    };
    match band(age) {
        AgeBand::Under12 | AgeBand::From16 if exception.is_some() => {
            Err(ConsentError::WgboExceptionOutsideAge { age, given_on })
        }
        AgeBand::Under12 if has_parent => Ok(WgboBasis::ParentOrGuardian),
        AgeBand::Under12 => Err(missing(MissingPerformer::ParentOrGuardian)),
        AgeBand::From16 if has_child => Ok(WgboBasis::Child),
        AgeBand::From16 => Err(missing(MissingPerformer::Child)),
        AgeBand::From12To15 => match (has_child, has_parent, exception) {
            (true, true, None) => Ok(WgboBasis::ChildAndParent),
            (true, true, Some(_)) => Err(ConsentError::WgboExceptionWithParent { age, given_on }),
            (true, false, Some(reason)) => Ok(WgboBasis::ExceptionSeriousHarm {
                reason: reason.to_owned(),
            }),
            (true, false, None) => Err(missing(MissingPerformer::ParentOrGuardian)),
            // The exception can stand in for the parents, never for the child.
            (false, true, _) | (false, false, Some(_)) => Err(missing(MissingPerformer::Child)),
            (false, false, None) => Err(missing(MissingPerformer::ChildAndParentOrGuardian)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn age_is_exact_to_the_day() {
        let cases = [
            ("2014-03-01", "2026-02-28", Some(11)),
            ("2014-03-01", "2026-03-01", Some(12)),
            ("2010-03-01", "2026-02-28", Some(15)),
            ("2010-03-01", "2026-03-01", Some(16)),
            ("2010-12-31", "2026-12-30", Some(15)),
            ("2010-12-31", "2026-12-31", Some(16)),
            ("2026-01-01", "2026-01-01", Some(0)),
            ("2026-01-02", "2026-01-01", None),
            // 29 February births.
            ("2012-02-29", "2024-02-28", Some(11)),
            ("2012-02-29", "2024-02-29", Some(12)),
            ("2008-02-29", "2024-02-28", Some(15)),
            ("2008-02-29", "2024-02-29", Some(16)),
            ("2012-02-29", "2025-02-28", Some(12)),
            ("2012-02-29", "2025-03-01", Some(13)),
            ("2010-02-28", "2026-02-28", Some(16)),
            ("2010-03-01", "2024-02-29", Some(13)),
        ];
        for (birth, day, want) in cases {
            assert_eq!(age_on(d(birth), d(day)), want, "born {birth}, on {day}");
        }
    }

    /// The n-th birthday as a date, written independently of `age_on`: the same day and
    /// month n years on, or 1 March when that year has no 29 February.
    fn birthday(birth: NaiveDate, n: i32) -> NaiveDate {
        birth
            .with_year(birth.year() + n)
            .unwrap_or_else(|| NaiveDate::from_ymd_opt(birth.year() + n, 3, 1).unwrap())
    }

    #[test]
    fn age_agrees_with_birthdays_for_every_day() {
        // Every birth date across two leap cycles, against every day around its 12th and
        // 16th birthday (and the 13th, which falls in a year without 29 February for leap-day
        // births): the age is n exactly from the n-th birthday on.
        let mut birth = d("2007-01-01");
        while birth <= d("2012-12-31") {
            for n in [12, 13, 16] {
                let bday = birthday(birth, n);
                for offset in -2i64..=2 {
                    let day = bday + chrono::Duration::days(offset);
                    let want = if offset < 0 { n - 1 } else { n };
                    assert_eq!(age_on(birth, day), Some(want as u32), "{birth} on {day}");
                }
            }
            birth = birth.succ_opt().unwrap();
        }
    }

    #[test]
    fn exception_reason_is_trimmed_and_blank_counts_as_none() {
        let child = [Performer {
            role: PerformerRole::Child,
            name: "K".into(),
        }];
        let day = d("2026-01-01");
        assert_eq!(
            wgbo_basis(13, day, &child, Some("  reden  ")),
            Ok(WgboBasis::ExceptionSeriousHarm {
                reason: "reden".into()
            })
        );
        assert_eq!(
            wgbo_basis(13, day, &child, Some("   ")),
            Err(ConsentError::WgboMissingPerformer {
                age: 13,
                given_on: day,
                missing: MissingPerformer::ParentOrGuardian
            })
        );
    }
}
