//! Age bands and dates: the `generalise` actions at their boundaries and on odd values.

use super::*;
use actions::age_band;
use serde_json::json;

#[test]
fn age_band_boundaries() {
    let band = |birth: &str, on: &str| age_band(date(birth), date(on)).unwrap();
    assert_eq!(band("2020-01-01", "2020-01-01"), "0-3");
    assert_eq!(band("2020-06-15", "2024-06-14"), "0-3");
    assert_eq!(band("2020-06-15", "2024-06-15"), "4-11");
    assert_eq!(band("2012-06-15", "2024-06-14"), "4-11");
    assert_eq!(band("2012-06-15", "2024-06-15"), "12-15");
    assert_eq!(band("2008-06-15", "2024-06-14"), "12-15");
    assert_eq!(band("2008-06-15", "2024-06-15"), "16-17");
    assert_eq!(band("2006-06-15", "2024-06-14"), "16-17");
    assert_eq!(band("2006-06-15", "2024-06-15"), "18+");
    // 29 February: in a year without it, the birthday is 1 March.
    assert_eq!(band("2008-02-29", "2026-02-28"), "16-17");
    assert_eq!(band("2008-02-29", "2026-03-01"), "18+");
    // … and in a leap year, 29 February itself.
    assert_eq!(band("2012-02-29", "2024-02-28"), "4-11");
    assert_eq!(band("2012-02-29", "2024-02-29"), "12-15");
    // Born after the message date: no band.
    assert_eq!(age_band(date("2024-06-16"), date("2024-06-15")), None);
}

#[test]
fn generalise_actions_on_odd_values() {
    let policy = Policy::parse(
        &DEFAULT_TEXT.replace(
            "\"body.child_age\"  = \"generalise:age_band\"",
            "\"body.child_age\"  = \"generalise:age_band\"\n\"subject.birth_date\" = \"generalise:year\"",
        )
        .replace("\"subject\"         = \"drop\"\n", ""),
        "p.toml",
    )
    .unwrap();
    let m = Minimiser::new(policy, KEY);
    let on = date("2024-06-15");
    let run = |content: Value| {
        let mut c = obj(content);
        let ch = m.apply(MessageType::Consultation, &mut c, on).unwrap();
        (Value::Object(c), ch.changed)
    };
    // An age band already, a number of years, a date, an RFC 3339 timestamp.
    assert_eq!(
        run(json!({"body": {"child_age": "12-15"}})).0,
        json!({"body": {"child_age": "12-15"}})
    );
    assert_eq!(
        run(json!({"body": {"child_age": 7}})).0,
        json!({"body": {"child_age": "4-11"}})
    );
    assert_eq!(
        run(json!({"subject": {"birth_date": "2014-03-02T00:00:00Z"}})).0,
        json!({"subject": {"birth_date": "2014"}})
    );
    // Not a date, a loose date, a future birth date, an object: dropped, not passed on.
    for bad in [
        json!("elf jaar"),
        json!("2014-3-2"),
        json!("2025-01-01"),
        json!({"y": 2014}),
    ] {
        let (out, ch) = run(json!({"body": {"child_age": bad}}));
        assert_eq!(out, json!({}), "{bad}");
        assert!(ch[0].action.starts_with("drop:"), "{ch:?}");
    }
}
