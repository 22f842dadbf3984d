//! Tests of the minimisation engine: golden messages per type, the scrubber, policy
//! loading errors, age bands, the receive-side check, and properties over arbitrary
//! content. The allowlists in the properties are written out here on purpose, apart from
//! the shipped policy file: widening that file must make a test fail and be looked at.

use super::*;
use crate::message::elfproef;
use actions::{age_band, parse_date};
use proptest::prelude::*;
use serde_json::json;

const KEY: &[u8] = b"test pseudonym key, 32 bytes ...";

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

// ---------------------------------------------------------------- golden messages

const GOLDEN: [(&str, &str); 4] = [
    (
        include_str!("../../tests/golden/referral.input.json"),
        include_str!("../../tests/golden/referral.expected.json"),
    ),
    (
        include_str!("../../tests/golden/consultation.input.json"),
        include_str!("../../tests/golden/consultation.expected.json"),
    ),
    (
        include_str!("../../tests/golden/feedback.input.json"),
        include_str!("../../tests/golden/feedback.expected.json"),
    ),
    (
        include_str!("../../tests/golden/consent_update.input.json"),
        include_str!("../../tests/golden/consent_update.expected.json"),
    ),
];

#[test]
fn golden_messages() {
    let m = minimiser();
    let mut seen = Vec::new();
    for (input, expected) in GOLDEN {
        let input: Value = serde_json::from_str(input).unwrap();
        let expected: Value = serde_json::from_str(expected).unwrap();
        let t: MessageType = serde_json::from_value(input["type"].clone()).unwrap();
        seen.push(t);
        let on = date(input["on"].as_str().unwrap());
        let original = obj(input["content"].clone());

        // The receiver refuses the raw input …
        assert!(
            m.check(t, &original).is_err(),
            "{t:?}: raw input passed check"
        );

        let mut content = original.clone();
        let changes = m.apply(t, &mut content, on).unwrap();
        assert_eq!(
            Value::Object(content.clone()),
            expected["content"],
            "{t:?} content"
        );

        // Order-independent comparison: serde_json may be built with preserve_order.
        let mut got: Vec<Change> = changes.changed.clone();
        got.sort_by(|a, b| a.path.cmp(&b.path));
        let want: Vec<Change> = serde_json::from_value(expected["changes"].clone()).unwrap();
        assert_eq!(got, want, "{t:?} changes");

        // … accepts the output, and a second pass changes nothing.
        m.check(t, &content).unwrap();
        let mut again = content.clone();
        assert!(
            m.apply(t, &mut again, on).unwrap().is_empty(),
            "{t:?} not idempotent"
        );
        assert_eq!(again, content);
    }
    seen.sort();
    assert_eq!(seen, MessageType::ALL.to_vec());
}

#[test]
fn changes_never_hold_values() {
    let m = minimiser();
    for (input, _) in GOLDEN {
        let input: Value = serde_json::from_str(input).unwrap();
        let t: MessageType = serde_json::from_value(input["type"].clone()).unwrap();
        let mut content = obj(input["content"].clone());
        let changes = m.apply(t, &mut content, date("2024-06-15")).unwrap();
        let text = serde_json::to_string(&changes).unwrap();
        for needle in [
            "111222333",
            "123456782",
            "Jan de Vries",
            "06-",
            "@",
            "ADHD",
            "3511",
        ] {
            assert!(
                !text.contains(needle),
                "{t:?} changes leak {needle:?}: {text}"
            );
        }
    }
}

// ---------------------------------------------------------------- scrubber

fn scrubbed(s: &str) -> String {
    scrub(s).0
}

#[test]
fn scrub_bsn_forms() {
    assert!(elfproef("111222333") && elfproef("123456782"));
    assert_eq!(scrubbed("bsn 111222333."), "bsn [bsn].");
    assert_eq!(scrubbed("123456782"), "[bsn]");
    assert_eq!(scrubbed("(123 456 782)"), "([bsn])");
    assert_eq!(scrubbed("123.456.782, ok"), "[bsn], ok");
    assert_eq!(scrubbed("nr 1234.56.782"), "nr [bsn]");
    assert_eq!(scrubbed("a 123-456-782 b"), "a [bsn] b");
    let (_, counts) = scrub("111222333 en 123456782");
    assert_eq!(
        counts,
        ScrubCounts {
            bsn: 2,
            phone: 0,
            email: 0
        }
    );
}

#[test]
fn scrub_leaves_non_bsns() {
    assert!(!elfproef("123456789"));
    for s in [
        "order 123456789",
        "123 456 789",
        "1234567820",             // ten digits: not a BSN
        "X123456782",             // part of a token
        "123456782b",             // part of a token
        "NL91ABNA0417164300",     // IBAN, compact
        "NL91 ABNA 0417 1643 00", // IBAN, grouped: not a phone either
        "000000000",
        "12345678",
        "geboren 06-12-2023 om 14:00",
        "prijs 1.234.567",
    ] {
        assert_eq!(scrubbed(s), s, "{s:?} was changed");
        assert_eq!(scrub(s).1.total(), 0, "{s:?}");
    }
}

#[test]
fn scrub_phones() {
    for p in [
        "06-12345678",
        "0612345678",
        "06 12 34 56 78",
        "06 - 1234 5678",
        "+31 6 12345678",
        "+31612345678",
        "+31 (0)6 12345678",
        "0031 6 12345678",
        "0031612345678",
        "030-1234567",
        "020 123 4567",
        "(030) 123 45 67",
        "020/1234567",
    ] {
        let (out, c) = scrub(&format!("bel {p} vandaag"));
        assert_eq!(out, "bel [telefoon] vandaag", "{p:?}");
        assert_eq!(
            c,
            ScrubCounts {
                bsn: 0,
                phone: 1,
                email: 0
            },
            "{p:?}"
        );
        assert_eq!(
            scrubbed(&format!("{p}.")),
            "[telefoon].",
            "{p:?} at end of sentence"
        );
    }
    // A phone number wins over a BSN hidden in it: "612345678" passes the elfproef.
    assert!(elfproef("612345671"));
    assert_eq!(scrubbed("+31 612345671"), "[telefoon]");
    // Ten digits are a phone number, never a BSN.
    assert_eq!(scrubbed("0612345678"), "[telefoon]");
    // A date followed by a time is not a phone number, but a phone number written like a
    // date with an implausible year still is.
    assert_eq!(scrubbed("op 06-12-2023 14:00"), "op 06-12-2023 14:00");
    assert_eq!(scrubbed("bel 06-12-3456 78"), "bel [telefoon]");
    // Not phones: too long, too short, inside a token.
    for s in ["06123456789", "061234567", "a0612345678", "0012345678"] {
        assert_eq!(scrubbed(s), s);
    }
}

#[test]
fn scrub_emails() {
    assert_eq!(
        scrubbed("mail jan.de-vries+x@example.nl."),
        "mail [e-mail]."
    );
    assert_eq!(scrubbed("<a_b@sub.domain.org>"), "<[e-mail]>");
    assert_eq!(scrubbed("0612345678@sms.example.nl"), "[e-mail]");
    for s in ["twitter @handle", "a@b", "x@y.1"] {
        assert_eq!(scrubbed(s), s);
    }
    let (_, c) = scrub("a@b.nl, c@d.com; 111222333 en 06-12345678");
    assert_eq!(
        c,
        ScrubCounts {
            bsn: 1,
            phone: 1,
            email: 2
        }
    );
}

#[test]
fn scrub_unicode_and_plain_text() {
    assert_eq!(scrubbed(""), "");
    assert_eq!(
        scrubbed("geen nummers hier — één"),
        "geen nummers hier — één"
    );
    assert_eq!(scrubbed("é 111222333 ü"), "é [bsn] ü");
    assert_eq!(scrubbed("é111222333"), "é111222333");
}

// ---------------------------------------------------------------- age bands and dates

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

// ---------------------------------------------------------------- pseudonymise, refuse

const DEFAULT_TEXT: &str = include_str!("../../config/minimisation.toml");

#[test]
fn pseudonymise_is_keyed_hmac_sha256() {
    // RFC 4231 test case 2.
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
    assert_eq!(
        actions::pseudonym(&key, "what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let text = DEFAULT_TEXT.replace(
        "\"subject.bsn\"       = \"keep\"\n\"body.consent_id\"",
        "\"subject.bsn\"       = \"pseudonymise\"\n\"body.consent_id\"",
    );
    let run = |key: &[u8]| {
        let m = Minimiser::new(Policy::parse(&text, "p.toml").unwrap(), key);
        let mut c = obj(json!({"subject": {"bsn": "111222333"}}));
        let ch = m
            .apply(MessageType::ConsentUpdate, &mut c, date("2024-06-15"))
            .unwrap();
        assert_eq!(
            ch.changed,
            vec![Change {
                path: "subject.bsn".into(),
                action: "pseudonymise".into()
            }]
        );
        m.check(MessageType::ConsentUpdate, &c).unwrap();
        c["subject"]["bsn"].as_str().unwrap().to_string()
    };
    let a = run(KEY);
    assert_eq!(a.len(), 64);
    assert_eq!(a, run(KEY), "stable per key");
    assert_ne!(a, run(b"another key"), "depends on the key");
    let m = Minimiser::new(Policy::parse(&text, "p.toml").unwrap(), KEY);
    let err = m
        .check(
            MessageType::ConsentUpdate,
            &obj(json!({"subject": {"bsn": "111222333"}})),
        )
        .unwrap_err();
    assert_eq!(err.violations[0].kind, ViolationKind::NotPseudonymised);
}

#[test]
fn refuse_unnamed_leaves_content_untouched() {
    let text = DEFAULT_TEXT.replacen(
        "[feedback]\nunknown = \"drop\"",
        "[feedback]\nunknown = \"refuse\"",
        1,
    );
    let m = Minimiser::new(Policy::parse(&text, "p.toml").unwrap(), KEY);
    let original = obj(json!({
        "subject": {"bsn": "111222333", "name": "Sanne"},
        "body": {"status": "closed", "case_notes": "x", "note": "bel 0612345678", "extra": {"a": 1}}
    }));
    let mut content = original.clone();
    let err = m
        .apply(MessageType::Feedback, &mut content, date("2024-06-15"))
        .unwrap_err();
    assert_eq!(err.reason, RefusalReason::UnnamedFields);
    let mut paths = err.paths.clone();
    paths.sort();
    // case_notes is named (drop), so it does not cause the refusal.
    assert_eq!(paths, vec!["body.extra", "subject.name"]);
    assert_eq!(content, original, "refusal must not change the content");
    let msg = err.to_string();
    assert!(
        msg.contains("feedback") && msg.contains("body.extra") && msg.contains("subject.name"),
        "{msg}"
    );
    assert!(!msg.contains("Sanne"));

    // Without unnamed fields, refuse mode still drops and scrubs.
    let mut ok =
        obj(json!({"body": {"status": "closed", "case_notes": "x", "note": "bel 0612345678"}}));
    m.apply(MessageType::Feedback, &mut ok, date("2024-06-15"))
        .unwrap();
    assert_eq!(
        Value::Object(ok),
        json!({"body": {"status": "closed", "note": "bel [telefoon]"}})
    );
}

#[test]
fn odd_keys_and_shapes() {
    let m = minimiser();
    let mut c = obj(json!({
        "subject.bsn": "111222333",
        "body": {
            "parent_contact": "Petra, 0612345678",
            "gp_contact": {"": 1, "a.b": 2, "123456782": 3},
            "urgency": "urgent"
        },
        "subject": []
    }));
    let ch = m
        .apply(MessageType::Referral, &mut c, date("2024-06-15"))
        .unwrap();
    // A dotted key never matches a path; a value where a group is expected goes; keys
    // that could be data are not shown.
    assert_eq!(
        Value::Object(c),
        json!({"body": {"urgency": "urgent"}, "subject": []})
    );
    let mut paths: Vec<&str> = ch.changed.iter().map(|c| c.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "<key>",
            "body.gp_contact.<key>",
            "body.gp_contact.<key>",
            "body.gp_contact.<key>",
            "body.parent_contact"
        ]
    );
}

#[test]
fn arrays_report_indices() {
    let text = DEFAULT_TEXT.replace(
        "\"body.diagnoses\"                    = \"drop\"",
        "\"body.diagnoses[]\" = \"scrub\"",
    );
    let m = Minimiser::new(Policy::parse(&text, "p.toml").unwrap(), KEY);
    let mut c = obj(json!({"body": {"diagnoses": ["ok", "bel 0612345678", {"x": 1}, null]}}));
    let ch = m
        .apply(MessageType::Referral, &mut c, date("2024-06-15"))
        .unwrap();
    assert_eq!(
        Value::Object(c.clone()),
        json!({"body": {"diagnoses": ["ok", "bel [telefoon]", null]}})
    );
    assert_eq!(
        ch.changed,
        vec![
            Change {
                path: "body.diagnoses[1]".into(),
                action: "scrub".into()
            },
            Change {
                path: "body.diagnoses[2]".into(),
                action: "drop:wrong_type".into()
            },
        ]
    );
    m.check(MessageType::Referral, &c).unwrap();
}

// ---------------------------------------------------------------- receive-side check

#[test]
fn check_refuses_what_slipped_past() {
    let m = minimiser();
    let crafted = obj(json!({
        "subject": {"bsn": "111222333"},
        "body": {
            "request_for_help": "Graag contact, moeder 06 12 34 56 78, bsn 123.456.782",
            "postcode": "3511 AB",
            "urgency": "soon",
            "diagnoses": ["F90.0"],
            "hobby": "voetbal"
        }
    }));
    let err = m.check(MessageType::Referral, &crafted).unwrap_err();
    assert_eq!(err.reason, RefusalReason::PolicyViolation);
    let mut v = err.violations.clone();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(
        v,
        vec![
            Violation {
                path: "body.diagnoses".into(),
                kind: ViolationKind::Dropped
            },
            Violation {
                path: "body.hobby".into(),
                kind: ViolationKind::NotNamed
            },
            Violation {
                path: "body.postcode".into(),
                kind: ViolationKind::TooLong { max: 4 }
            },
            Violation {
                path: "body.request_for_help".into(),
                kind: ViolationKind::IdentifiersInText {
                    bsn: 1,
                    phone: 1,
                    email: 0
                }
            },
        ]
    );
    let msg = err.to_string();
    for p in [
        "body.diagnoses",
        "body.hobby",
        "body.postcode",
        "body.request_for_help",
    ] {
        assert!(msg.contains(p), "{msg}");
    }
    for leak in ["123.456.782", "06 12", "3511", "voetbal", "F90"] {
        assert!(!msg.contains(leak), "{msg}");
    }

    // Consultation: any identifying subject is refused, an exact date is not generalised.
    let err = m
        .check(
            MessageType::Consultation,
            &obj(json!({"subject": {"name": "x"}, "body": {"child_age": "2012-01-01"}})),
        )
        .unwrap_err();
    let kinds: Vec<_> = err
        .violations
        .iter()
        .map(|v| (v.path.as_str(), v.kind))
        .collect();
    assert!(
        kinds.contains(&("subject", ViolationKind::Dropped)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("body.child_age", ViolationKind::NotGeneralised)),
        "{kinds:?}"
    );
}

#[test]
fn check_accepts_minimised_message() {
    let m = minimiser();
    let good = obj(json!({
        "subject": {"bsn": "111222333", "name": "Sanne", "birth_date": "2014-03-02"},
        "body": {
            "request_for_help": "Graag contact met moeder, nummer [telefoon]. Order 123456789.",
            "postcode": "3511",
            "urgency": "routine",
            "parent_contact": {"name": "Petra", "phone": "0612345678"}
        }
    }));
    m.check(MessageType::Referral, &good).unwrap();
    m.check(
        MessageType::Consultation,
        &obj(json!({"body": {"question": "Hoe?", "child_age": "12-15"}})),
    )
    .unwrap();
    m.check(MessageType::Feedback, &Map::new()).unwrap();
}

// ---------------------------------------------------------------- policy loading

const FILE: &str = "test-policy.toml";

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

fn load_err(text: &str) -> (PolicyError, String) {
    let e = Policy::parse(text, FILE).unwrap_err();
    let msg = e.to_string();
    (e, msg)
}

/// Asserts the message names the file and line (`file:line:`) and everything in `also`.
fn names(msg: &str, line: usize, also: &[&str]) {
    assert!(
        msg.starts_with(&format!("{FILE}:{line}:")),
        "no {FILE}:{line}: in {msg:?}"
    );
    for a in also {
        assert!(msg.contains(a), "{a:?} not in {msg:?}");
    }
}

/// The default policy with one extra line appended to the fields of `section`.
fn with_field(section: &str, line: &str) -> String {
    DEFAULT_TEXT.replacen(
        &format!("[{section}.fields]\n"),
        &format!("[{section}.fields]\n{line}\n"),
        1,
    )
}

#[test]
fn default_policy_parses_and_load_reads_files() {
    let p = Policy::default_policy();
    assert!(p.source().contains("minimisation.toml"));
    let path = std::env::temp_dir().join(format!("wijkpoort-minimise-{}.toml", std::process::id()));
    std::fs::write(&path, DEFAULT_TEXT).unwrap();
    let loaded = Policy::load(&path).unwrap();
    assert_eq!(loaded.source(), path.display().to_string());
    std::fs::remove_file(&path).unwrap();
    let e = Policy::load(&path).unwrap_err();
    assert!(matches!(e, PolicyError::Io { .. }));
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

#[test]
fn error_syntax() {
    let text = with_field("feedback", "\"body.note\" = scrub");
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::Syntax { .. }), "{e:?}");
    names(&msg, line_of(&text, "\"body.note\" = scrub"), &["TOML"]);
}

#[test]
fn error_unknown_section() {
    let text = format!("{DEFAULT_TEXT}\n[referal]\nunknown = \"drop\"\n");
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::UnknownSection { .. }), "{e:?}");
    names(&msg, line_of(&text, "[referal]"), &["referal"]);
}

#[test]
fn error_missing_section() {
    let cut = DEFAULT_TEXT.find("[consent_update]").unwrap();
    let (e, msg) = load_err(&DEFAULT_TEXT[..cut]);
    assert!(matches!(e, PolicyError::MissingSection { .. }), "{e:?}");
    assert!(
        msg.starts_with(FILE) && msg.contains("[consent_update]"),
        "{msg}"
    );
}

#[test]
fn error_missing_and_invalid_unknown() {
    let text = DEFAULT_TEXT.replacen("[feedback]\nunknown = \"drop\"\n", "[feedback]\n", 1);
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::MissingUnknown { .. }), "{e:?}");
    names(&msg, line_of(&text, "[feedback]"), &["feedback", "unknown"]);

    let text = DEFAULT_TEXT.replacen(
        "[feedback]\nunknown = \"drop\"",
        "[feedback]\nunknown = \"keep\"",
        1,
    );
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::InvalidUnknown { .. }), "{e:?}");
    names(
        &msg,
        line_of(&text, "unknown = \"keep\""),
        &["feedback", "keep"],
    );
}

#[test]
fn error_unknown_setting_and_wrong_shape() {
    let text = DEFAULT_TEXT.replacen("[feedback]\n", "[feedback]\nunkown = \"drop\"\n", 1);
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::UnknownSetting { .. }), "{e:?}");
    names(&msg, line_of(&text, "unkown"), &["unkown", "feedback"]);

    let text = with_field("feedback", "\"body.note\" = 4");
    let (e, msg) = load_err(&text.replace("\"body.note\"           = \"scrub\"\n", ""));
    assert!(matches!(e, PolicyError::WrongShape { .. }), "{e:?}");
    names(&msg, line_of(&text, "\"body.note\" = 4"), &["body.note"]);
}

#[test]
fn error_unknown_action() {
    let text = with_field("feedback", "\"body.referral_id\" = \"hash\"")
        .replace("\"body.referral_id\"    = \"keep\"\n", "");
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::UnknownAction { .. }), "{e:?}");
    names(
        &msg,
        line_of(&text, "\"hash\""),
        &["feedback", "body.referral_id", "hash"],
    );
}

#[test]
fn error_invalid_truncate() {
    for bad in [
        "truncate:",
        "truncate:0",
        "truncate:x",
        "truncate",
        "truncate:-1",
        "truncate: 4",
    ] {
        let text = DEFAULT_TEXT.replace("\"truncate:4\"", &format!("\"{bad}\""));
        let (e, msg) = load_err(&text);
        assert!(
            matches!(e, PolicyError::InvalidTruncate { .. }),
            "{bad}: {e:?}"
        );
        names(
            &msg,
            line_of(&text, "\"body.postcode\""),
            &["referral", "body.postcode", bad],
        );
    }
}

#[test]
fn error_unknown_path() {
    // A path of another type is not a path of this one.
    let text = with_field("feedback", "\"body.postcode\" = \"drop\"");
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::UnknownPath { .. }), "{e:?}");
    names(
        &msg,
        line_of(&text, "\"body.postcode\" = \"drop\""),
        &["feedback", "`body.postcode`"],
    );

    // A misspelling, a partial segment, an element of a non-list, a bad root.
    for p in [
        "body.notes",
        "body.no",
        "body.note[]",
        "subjects.bsn",
        "bsn",
        "",
        "body.",
        "body.scope_types[].x",
    ] {
        let text = with_field("consent_update", &format!("\"{p}\" = \"drop\""));
        let (e, msg) = load_err(&text);
        assert!(matches!(e, PolicyError::UnknownPath { .. }), "{p:?}: {e:?}");
        names(
            &msg,
            line_of(&text, &format!("\"{p}\" = \"drop\"")),
            &[&format!("`{p}`")],
        );
    }

    // The unquoted dotted form reads the same and is checked the same.
    let text = with_field("consent_update", "body.nope = \"drop\"");
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::UnknownPath { .. }), "{e:?}");
    names(&msg, line_of(&text, "body.nope"), &["`body.nope`"]);
}

#[test]
fn error_action_on_group_and_overlap() {
    let text = with_field("referral", "\"body.gp_contact\" = \"scrub\"")
        .replace("\"body.gp_contact.name\"              = \"keep\"\n", "")
        .replace("\"body.gp_contact.phone\"             = \"keep\"\n", "")
        .replace("\"body.gp_contact.agb\"               = \"keep\"\n", "");
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::ActionOnGroup { .. }), "{e:?}");
    names(
        &msg,
        line_of(&text, "\"body.gp_contact\" = \"scrub\""),
        &["body.gp_contact", "scrub"],
    );

    let text = with_field("referral", "\"body.gp_contact\" = \"keep\"");
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::Overlap { .. }), "{e:?}");
    let inner = line_of(&text, "\"body.gp_contact.name\"");
    names(
        &msg,
        inner,
        &[
            "body.gp_contact.name",
            "`body.gp_contact`",
            &format!("line {}", line_of(&text, "\"body.gp_contact\" = \"keep\"")),
        ],
    );
}

#[test]
fn dotted_keys_mean_the_same_as_quoted_paths() {
    let text = DEFAULT_TEXT.replace(
        "\"body.note\"           = \"scrub\"",
        "body.note = \"scrub\"",
    );
    let m = Minimiser::new(Policy::parse(&text, "p.toml").unwrap(), KEY);
    let mut c = obj(json!({"body": {"note": "bel 0612345678"}}));
    m.apply(MessageType::Feedback, &mut c, date("2024-06-15"))
        .unwrap();
    assert_eq!(c["body"]["note"], "bel [telefoon]");
}

// ---------------------------------------------------------------- properties

/// What the shipped policy lets through, per type: a path is allowed if one of these is
/// equal to it or above it. Written out independently of the policy file.
fn allowlist(t: MessageType) -> &'static [&'static str] {
    match t {
        MessageType::Referral => &[
            "subject.bsn",
            "subject.name",
            "subject.birth_date",
            "body.request_for_help",
            "body.urgency",
            "body.postcode",
            "body.parent_contact.name",
            "body.parent_contact.relationship",
            "body.parent_contact.phone",
            "body.parent_contact.email",
            "body.gp_contact.name",
            "body.gp_contact.phone",
            "body.gp_contact.agb",
        ],
        MessageType::Consultation => &["body.question", "body.child_age"],
        MessageType::Feedback => &[
            "subject.bsn",
            "body.referral_id",
            "body.status",
            "body.date",
            "body.contact.name",
            "body.contact.phone",
            "body.contact.email",
            "body.note",
        ],
        MessageType::ConsentUpdate => &[
            "subject.bsn",
            "body.consent_id",
            "body.status",
            "body.effective_at",
            "body.scope_types",
        ],
    }
}

const FREE_TEXT: [&str; 3] = ["body.request_for_help", "body.question", "body.note"];

/// Every node of `v` as (policy path, value).
fn nodes<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                nodes(c, p, out);
            }
        }
        Value::Array(a) => {
            for c in a {
                nodes(c, format!("{path}[]"), out);
            }
        }
        _ => {}
    }
    if !path.is_empty() {
        out.push((path, v));
    }
}

fn inside_or_equal(inner: &str, outer: &str) -> bool {
    inner == outer || policy::is_strictly_inside(inner, outer)
}

/// Whole runs of exactly nine ASCII digits, not inside a word, that pass the elfproef.
fn bsn_runs(s: &str) -> Vec<String> {
    let c: Vec<char> = s.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i].is_ascii_digit() {
            let start = i;
            while i < c.len() && c[i].is_ascii_digit() {
                i += 1;
            }
            let before_ok = start == 0 || !c[start - 1].is_alphanumeric();
            let after_ok = i == c.len() || !c[i].is_alphanumeric();
            let run: String = c[start..i].iter().collect();
            if i - start == 9 && before_ok && after_ok && elfproef(&run) {
                found.push(run);
            }
        } else {
            i += 1;
        }
    }
    found
}

fn bsn_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(0u32..10, 8).prop_filter_map("no check digit", |d| {
        let sum: u32 = d.iter().enumerate().map(|(i, x)| (9 - i as u32) * x).sum();
        let check = sum % 11;
        let s: String = d
            .iter()
            .chain(std::iter::once(&check))
            .map(|x| x.to_string())
            .collect();
        (check < 10 && elfproef(&s)).then_some(s)
    })
}

fn phone_strategy() -> impl Strategy<Value = String> {
    ("[0-9]{8}", 0usize..9).prop_map(|(d, form)| match form {
        0 => format!("06-{d}"),
        1 => format!("06{d}"),
        2 => format!("06 {} {} {} {}", &d[..2], &d[2..4], &d[4..6], &d[6..]),
        3 => format!("+31 6 {d}"),
        4 => format!("+316{d}"),
        5 => format!("0031 6{d}"),
        6 => format!("030-{}", &d[..7]),
        7 => format!("020 {} {}", &d[..3], &d[3..7]),
        _ => format!("+31 (0)6 {}-{}", &d[..4], &d[4..]),
    })
}

/// (text, identifiers put into it).
fn text_strategy() -> impl Strategy<Value = (String, Vec<String>)> {
    let token = prop_oneof![
        3 => "[a-zA-Zé]{1,8}".prop_map(|w| (w, false)),
        1 => "[0-9]{9}".prop_map(|w| (w, false)),
        1 => Just("NL91 ABNA 0417 1643 00".to_string()).prop_map(|w| (w, false)),
        2 => bsn_strategy().prop_map(|b| (b, true)),
        1 => bsn_strategy().prop_map(|b| (format!("{}.{}.{}", &b[..3], &b[3..6], &b[6..]), true)),
        2 => phone_strategy().prop_map(|p| (p, true)),
        1 => "[a-z]{1,6}@[a-z]{1,6}\\.nl".prop_map(|e| (e, true)),
        1 => "\\PC{0,6}".prop_map(|w| (w, false)),
    ];
    let sep = prop_oneof![
        Just(" "),
        Just(", "),
        Just(" ("),
        Just(") "),
        Just("; "),
        Just(". ")
    ];
    proptest::collection::vec((token, sep), 0..10).prop_map(|parts| {
        let mut text = String::new();
        let mut ids = Vec::new();
        for ((tok, is_id), sep) in parts {
            if is_id {
                ids.push(tok.clone());
            }
            text.push_str(&tok);
            text.push_str(sep);
        }
        (text, ids)
    })
}

fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            "subject", "body", "bsn", "name", "birth_date", "request_for_help", "urgency",
            "postcode", "parent_contact", "gp_contact", "phone", "email", "agb", "relationship",
            "diagnoses", "medication", "medical_history", "support_profile", "question",
            "child_age", "contact", "status", "date", "referral_id", "note", "case_notes",
            "consent_id", "effective_at", "scope_types", "reason",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_]{1,8}",
        1 => "\\PC{0,5}",
    ]
}

fn json_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        3 => text_strategy().prop_map(|(t, _)| Value::String(t)),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => (1990i32..2030, 1u32..13, 1u32..29).prop_map(|(y, m, d)| Value::String(format!("{y:04}-{m:02}-{d:02}"))),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key_strategy(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn content_strategy() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(
        prop_oneof![3 => Just("subject".to_string()), 3 => Just("body".to_string()), 1 => key_strategy()],
        json_strategy(),
        0..4,
    )
    .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever comes in, what goes out holds only allowlisted paths, no free text with a
    /// BSN in it, and passes the receiving side's check.
    #[test]
    fn output_stays_within_allowlist(content in content_strategy(), days in 0i64..40_000) {
        let m = minimiser();
        let on = date("1990-01-01") + chrono::Duration::days(days);
        for t in MessageType::ALL {
            let mut out = content.clone();
            m.apply(t, &mut out, on).unwrap();
            let out = Value::Object(out);
            let mut all = Vec::new();
            nodes(&out, String::new(), &mut all);
            let allowed = allowlist(t);
            for (path, value) in &all {
                let ok = allowed.iter().any(|a| inside_or_equal(path, a) || policy::is_strictly_inside(a, path));
                prop_assert!(ok, "{:?}: {} is not allowed", t, path);
                if FREE_TEXT.contains(&path.as_str()) {
                    if let Some(s) = value.as_str() {
                        prop_assert!(bsn_runs(s).is_empty(), "{:?}: {} holds a BSN", t, path);
                    }
                }
            }
            let Value::Object(out) = out else { unreachable!() };
            prop_assert!(m.check(t, &out).is_ok(), "{:?}: own output refused: {:?}", t, m.check(t, &out));
        }
    }

    /// Scrubbing removes every identifier put into a text, leaves no elfproef-valid
    /// 9-digit run, and is idempotent.
    #[test]
    fn scrub_removes_what_was_put_in((text, ids) in text_strategy()) {
        let (out, counts) = scrub(&text);
        prop_assert!(bsn_runs(&out).is_empty(), "{:?} -> {:?}", text, out);
        for id in &ids {
            prop_assert!(!out.contains(id.as_str()), "{:?} left in {:?}", id, out);
        }
        if !ids.is_empty() {
            prop_assert!(counts.total() > 0);
        }
        prop_assert_eq!(scrub(&out).1.total(), 0, "second pass found more in {:?}", out);
    }
}
