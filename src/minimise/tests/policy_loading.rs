//! Policy loading: reading the policy file, and load errors that name the file, the line
//! and the setting.

use super::*;
use serde_json::json;

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
    const GROUP: &str = "\"body.gp_contact\"                   = \"group\"";
    let text = DEFAULT_TEXT
        .replace(GROUP, "\"body.gp_contact\" = \"scrub\"")
        .replace("\"body.gp_contact.name\"              = \"keep\"\n", "")
        .replace("\"body.gp_contact.phone\"             = \"keep\"\n", "")
        .replace("\"body.gp_contact.agb\"               = \"keep\"\n", "");
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::ActionOnGroup { .. }), "{e:?}");
    names(
        &msg,
        line_of(&text, "\"body.gp_contact\" = \"scrub\""),
        &["body.gp_contact", "scrub", "group"],
    );

    // A group kept whole would let anything through: keep is for single values.
    let text = DEFAULT_TEXT.replace(GROUP, "\"body.gp_contact\" = \"keep\"");
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::ActionOnGroup { .. }), "{e:?}");
    names(
        &msg,
        line_of(&text, "\"body.gp_contact\" = \"keep\""),
        &["body.gp_contact", "keep", "single value"],
    );

    // Nothing may be named inside a dropped group.
    let text = DEFAULT_TEXT.replace(GROUP, "\"body.gp_contact\" = \"drop\"");
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::Overlap { .. }), "{e:?}");
    let inner = line_of(&text, "\"body.gp_contact.name\"");
    names(
        &msg,
        inner,
        &[
            "body.gp_contact.name",
            "`body.gp_contact`",
            &format!("line {}", line_of(&text, "\"body.gp_contact\" = \"drop\"")),
        ],
    );
}

#[test]
fn error_groups_must_be_declared_with_their_shape_and_fields() {
    const GROUP: &str = "\"body.gp_contact\"                   = \"group\"\n";
    // A field inside an undeclared group.
    let text = DEFAULT_TEXT.replace(GROUP, "");
    let (e, msg) = load_err(&text);
    assert!(
        matches!(e, PolicyError::UndeclaredContainer { .. }),
        "{e:?}"
    );
    names(
        &msg,
        line_of(&text, "\"body.gp_contact.name\""),
        &["`body.gp_contact`", "\"body.gp_contact\" = \"group\""],
    );

    // A list declared where the schema has an object, and the other way round.
    let text = DEFAULT_TEXT.replace(GROUP, "\"body.gp_contact\" = \"list\"\n");
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::WrongContainer { .. }), "{e:?}");
    names(
        &msg,
        line_of(&text, "\"body.gp_contact\" = \"list\""),
        &["body.gp_contact", "declare it \"group\""],
    );
    let text = DEFAULT_TEXT.replace(
        "\"body.scope_types\"  = \"list\"",
        "\"body.scope_types\"  = \"group\"",
    );
    let (e, _) = load_err(&text);
    assert!(matches!(e, PolicyError::WrongContainer { .. }), "{e:?}");
    // A single value declared a group.
    let text = with_field("feedback", "\"body.note\" = \"group\"")
        .replace("\"body.note\"           = \"scrub\"\n", "");
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::WrongContainer { .. }), "{e:?}");
    assert!(msg.contains("a single value"), "{msg}");

    // A declared group with nothing named inside it.
    let text = DEFAULT_TEXT
        .replace("\"body.gp_contact.name\"              = \"keep\"\n", "")
        .replace("\"body.gp_contact.phone\"             = \"keep\"\n", "")
        .replace("\"body.gp_contact.agb\"               = \"keep\"\n", "");
    let (e, msg) = load_err(&text);
    assert!(matches!(e, PolicyError::EmptyContainer { .. }), "{e:?}");
    names(
        &msg,
        line_of(&text, "\"body.gp_contact\""),
        &["body.gp_contact", "no field inside it"],
    );
}

#[test]
fn error_consent_block_fields() {
    // A field the type's consent block does not carry.
    let text = DEFAULT_TEXT.replace(
        "[feedback]\nunknown = \"drop\"\nconsent = [\"id\"]",
        "[feedback]\nunknown = \"drop\"\nconsent = [\"id\", \"subject_bsn\"]",
    );
    let (e, msg) = load_err(&text);
    assert!(
        matches!(e, PolicyError::UnknownConsentField { .. }),
        "{e:?}"
    );
    names(
        &msg,
        line_of(&text, "consent = [\"id\", \"subject_bsn\"]"),
        &["[feedback]", "`subject_bsn`"],
    );
    // A consultation carries no consent block at all.
    let text = DEFAULT_TEXT.replace("consent = []", "consent = [\"id\"]");
    let (e, msg) = load_err(&text);
    assert!(
        matches!(e, PolicyError::UnknownConsentField { .. }),
        "{e:?}"
    );
    assert!(msg.contains("anonymous"), "{msg}");
    // The summary the wijkteam mirrors needs every one of its fields.
    let text = DEFAULT_TEXT.replace(" \"valid_until\",", "");
    let (e, msg) = load_err(&text);
    assert!(
        matches!(e, PolicyError::MissingConsentField { .. }),
        "{e:?}"
    );
    names(
        &msg,
        line_of(&text, "consent = [\"id\", \"subject_bsn\""),
        &["`valid_until`", "[referral]"],
    );
    // Absent means none, which only a consultation may have.
    let text = DEFAULT_TEXT.replace("consent = [\"id\"]\n", "");
    let (e, _) = load_err(&text);
    assert!(
        matches!(e, PolicyError::MissingConsentField { .. }),
        "{e:?}"
    );
    let text = DEFAULT_TEXT.replace("consent = []\n", "");
    Policy::parse(&text, FILE).unwrap();
    // Not a list of names.
    let text = DEFAULT_TEXT.replace("consent = []", "consent = \"none\"");
    let (e, _) = load_err(&text);
    assert!(matches!(e, PolicyError::WrongShape { .. }), "{e:?}");
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
