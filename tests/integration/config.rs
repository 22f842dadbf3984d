//! A configuration mistake stops the start with one clear line naming the file and the
//! field, and the binary exits with 64 (EX_USAGE).

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{Duration, Utc};
use wijkpoort::config::ConfigError;
use wijkpoort::dev::devkit::{self, Addresses, DevKit};
use wijkpoort::dev::pki::{Authority, LeafSpec, DEV_AUDITOR_ID, DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};
use wijkpoort::Config;

/// A dev kit on fixed loopback addresses (nothing is started, nothing binds).
fn kit() -> (tempfile::TempDir, DevKit) {
    let dir = tempfile::tempdir().unwrap();
    let addr = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let addrs = Addresses {
        practice_api: addr(18081),
        practice_listener: addr(18443),
        wijkteam_api: addr(18082),
        wijkteam_listener: addr(18444),
    };
    let kit = devkit::write(dir.path(), addrs, None).unwrap();
    (dir, kit)
}

/// Replaces `from` by `to` in the file; the text must be there.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Makes a file readable by its owner only, as a private key must be.
fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn load_err(path: &Path) -> ConfigError {
    match Config::load(path) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => e,
    }
}

/// The error names the config file and `field`, in one line.
fn assert_names(e: &ConfigError, path: &Path, field: &str) {
    assert_eq!(e.file, path);
    assert_eq!(e.field, field, "{e}");
    let line = e.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(
        line.starts_with(&format!("{}: {field}: ", path.display())),
        "{line}"
    );
}

#[test]
fn the_dev_kit_configs_are_valid() {
    let (_dir, kit) = kit();
    let practice = Config::load(&kit.practice_config).unwrap();
    assert_eq!(practice.identity, DEV_PRACTICE_ID);
    assert_eq!(practice.peers.len(), 1);
    Config::load(&kit.wijkteam_config).unwrap();
}

#[test]
fn a_missing_config_file_is_named() {
    let (dir, _kit) = kit();
    let path = dir.path().join("nowhere.toml");
    let e = load_err(&path);
    assert_eq!(e.file, path);
    assert!(e.problem.contains("cannot read"), "{e}");
}

#[test]
fn a_missing_certificate_file_names_tls_cert_and_the_path() {
    let (_dir, kit) = kit();
    let path = kit.practice_config.clone();
    edit(&path, r#"cert = "practice.pem""#, r#"cert = "missing.pem""#);
    let e = load_err(&path);
    assert_names(&e, &path, "tls.cert");
    assert!(e.problem.contains("missing.pem"), "{e}");
}

#[test]
fn a_key_that_does_not_belong_to_the_certificate_names_tls_key() {
    let (_dir, kit) = kit();
    let path = kit.practice_config.clone();
    edit(&path, r#"key = "practice.key""#, r#"key = "wijkteam.key""#);
    let e = load_err(&path);
    assert_names(&e, &path, "tls.key");
    assert!(e.problem.contains("does not belong"), "{e}");
}

#[test]
fn an_expired_own_certificate_names_tls_cert() {
    let (dir, kit) = kit();
    let ca = Authority::new("config test").unwrap();
    let mut spec = LeafSpec::new(DEV_PRACTICE_ID, "Praktijk", "practice.test");
    spec.not_before = Utc::now() - Duration::days(400);
    spec.not_after = Utc::now() - Duration::days(35);
    let issued = ca.issue(&spec).unwrap();
    std::fs::write(dir.path().join("old.pem"), issued.cert_pem).unwrap();
    std::fs::write(dir.path().join("old.key"), issued.key_pem).unwrap();
    private(&dir.path().join("old.key"));
    let path = kit.practice_config.clone();
    edit(&path, r#"cert = "practice.pem""#, r#"cert = "old.pem""#);
    edit(&path, r#"key = "practice.key""#, r#"key = "old.key""#);

    let e = load_err(&path);

    assert_names(&e, &path, "tls.cert");
    assert!(e.problem.contains("expired"), "{e}");
}

#[test]
fn an_unknown_message_type_in_may_send_names_the_peer_field_and_the_type() {
    let (_dir, kit) = kit();
    let path = kit.practice_config.clone();
    edit(
        &path,
        r#"may_send = ["feedback"]"#,
        r#"may_send = ["feedback", "gossip"]"#,
    );
    let e = load_err(&path);
    assert_names(&e, &path, "peers[0].may_send");
    assert!(e.problem.contains("gossip"), "{e}");
}

#[test]
fn a_peer_without_a_url_names_the_peer_url_field() {
    let (_dir, kit) = kit();
    let path = kit.practice_config.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("url = "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(text, without);
    std::fs::write(&path, without).unwrap();

    let e = load_err(&path);

    assert_names(&e, &path, "peers[0].url");
    assert!(e.problem.contains("wijkteam"), "names the peer: {e}");
}

#[test]
fn a_local_api_on_a_non_loopback_address_is_refused() {
    let (_dir, kit) = kit();
    let path = kit.practice_config.clone();
    for addr in ["0.0.0.0:18081", "192.0.2.10:18081"] {
        let text = std::fs::read_to_string(&path).unwrap();
        let changed = text.replace(
            r#"listen = "127.0.0.1:18081""#,
            &format!(r#"listen = "{addr}""#),
        );
        assert_ne!(text, changed);
        let file = path.with_file_name(format!("exposed-{}.toml", addr.len()));
        std::fs::write(&file, changed).unwrap();

        let e = load_err(&file);

        assert_names(&e, &file, "local_api.listen");
        assert!(e.problem.contains("loopback"), "{e}");
    }
}

fn serve(config: &PathBuf) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wijkpoort"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn serve_with_a_config_mistake_exits_64_with_one_line_naming_file_and_field() {
    let (_dir, kit) = kit();
    let path = kit.practice_config.clone();
    edit(
        &path,
        r#"may_send = ["feedback"]"#,
        r#"may_send = ["gossip"]"#,
    );

    let out = serve(&path);

    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("wijkpoort: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(line.contains("peers[0].may_send"), "{line}");
}

#[test]
fn serve_with_a_missing_config_file_exits_64() {
    let (dir, _kit) = kit();
    let out = serve(&dir.path().join("nowhere.toml"));
    assert_eq!(out.status.code(), Some(64), "{out:?}");
}

#[test]
fn an_auditor_with_a_peers_identity_is_refused_naming_the_auditor() {
    let (_dir, kit) = kit();
    let path = kit.practice_config.clone();
    edit(
        &path,
        &format!("[[auditors]]\nidentity = \"{DEV_AUDITOR_ID}\""),
        &format!("[[auditors]]\nidentity = \"{DEV_WIJKTEAM_ID}\""),
    );

    let e = load_err(&path);
    assert_names(&e, &path, "auditors[0].identity");
    assert!(e.problem.contains("peer \"wijkteam\""), "{e}");

    let out = serve(&path);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("auditors[0].identity"),
        "{out:?}"
    );
}

#[test]
fn an_auditor_with_the_gateways_own_identity_is_refused() {
    let (_dir, kit) = kit();
    let path = kit.practice_config.clone();
    edit(
        &path,
        &format!("[[auditors]]\nidentity = \"{DEV_AUDITOR_ID}\""),
        &format!("[[auditors]]\nidentity = \"{DEV_PRACTICE_ID}\""),
    );
    let e = load_err(&path);
    assert_names(&e, &path, "auditors[0].identity");
    assert!(e.problem.contains("own identity"), "{e}");
}

/// Appends `text` to the config file.
fn append(path: &Path, text: &str) {
    let mut config = std::fs::read_to_string(path).unwrap();
    config.push_str(text);
    std::fs::write(path, config).unwrap();
}

#[test]
fn the_issuing_cas_section_is_validated_entry_by_entry() {
    let cases: &[(&str, &str, &str)] = &[
        ("issuing_cas = []\n", "issuing_cas", "names no CA"),
        (
            "[[issuing_cas]]\ncert = \"practice.pem\"\nrule = \"dev\"\n",
            "issuing_cas[0].cert",
            "not a CA certificate",
        ),
        (
            "[[issuing_cas]]\ncert = \"missing.pem\"\nrule = \"dev\"\n",
            "issuing_cas[0].cert",
            "missing.pem",
        ),
        (
            "[[issuing_cas]]\ncert = \"ca.pem\"\nrule = \"pkioverheid\"\noid_ca = \"2.16.528.1\"\n",
            "issuing_cas[0].oid_ca",
            "only the uzi rule",
        ),
        (
            "[[issuing_cas]]\ncert = \"ca.pem\"\nrule = \"uzi\"\noid_ca = \"CIBG\"\n",
            "issuing_cas[0].oid_ca",
            "not a dotted OID",
        ),
        (
            "[[issuing_cas]]\ncert = \"ca.pem\"\nrule = \"dev\"\n[[issuing_cas]]\ncert = \"ca.pem\"\nrule = \"uzi\"\n",
            "issuing_cas[1].cert",
            "listed twice",
        ),
    ];
    for (section, field, problem) in cases {
        let (_dir, kit) = kit();
        let path = kit.wijkteam_config.clone();
        if section.starts_with("issuing_cas =") {
            // A plain key belongs before the first table.
            edit(&path, "[tls]", &format!("{section}\n[tls]"));
        } else {
            append(&path, &format!("\n{section}"));
        }
        let e = load_err(&path);
        assert_names(&e, &path, field);
        assert!(e.to_string().contains(problem), "{section}: {e}");
    }
    // An unknown rule is a TOML error, naming the rules there are.
    let (_dir, kit) = kit();
    let path = kit.wijkteam_config.clone();
    append(
        &path,
        "\n[[issuing_cas]]\ncert = \"ca.pem\"\nrule = \"agb\"\n",
    );
    let e = load_err(&path);
    assert!(
        e.problem
            .contains("unknown variant `agb`, expected one of `uzi`, `pkioverheid`, `dev`"),
        "{e}"
    );
}

#[test]
fn a_valid_issuing_cas_section_loads() {
    let (_dir, kit) = kit();
    let path = kit.wijkteam_config.clone();
    append(
        &path,
        "\n[[issuing_cas]]\ncert = \"ca.pem\"\nrule = \"uzi\"\noid_ca = \"2.16.528.1.1003.1.3.5.5.2\"\n",
    );
    let config = Config::load(&path).unwrap();
    assert_eq!(config.issuers.cas().len(), 1);
    assert_eq!(
        config.issuers.cas()[0].rule(),
        wijkpoort::issuers::Rule::Uzi
    );
}

#[test]
fn a_key_secret_data_key_or_token_readable_by_others_is_refused_naming_the_file_and_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    for (field, file) in [
        ("tls.key", "practice.key"),
        ("secret_key_file", "practice.secret"),
        ("data_key_file", "practice.datakey"),
        ("local_api.token_file", "practice.token"),
    ] {
        let (dir, kit) = kit();
        let file = dir.path().join(file);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = kit.practice_config.clone();

        let e = load_err(&path);

        assert_names(&e, &path, field);
        assert!(e.problem.contains("readable by group or others"), "{e}");
        assert!(
            e.problem.contains(&format!("chmod 600 {}", file.display())),
            "{e}"
        );

        // The development switch lets it through.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("allow_readable_secrets = true\n{text}")).unwrap();
        Config::load(&path).unwrap();
    }
}

#[test]
fn a_new_store_directory_is_the_gateways_alone() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, kit) = kit();
    let config = Config::load(&kit.practice_config).unwrap();
    let store = wijkpoort::store::Store::open(
        &config.store_dir,
        config.signer.clone(),
        config.data_key.clone(),
    )
    .unwrap();
    let mode = std::fs::metadata(&config.store_dir)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "{:o}", mode);
    store.close();
    drop(dir);
}

#[test]
fn the_consent_section_sets_the_bounds_in_time_and_refuses_what_defeats_them() {
    // Absent: the defaults.
    let (_dir, k) = kit();
    let config = wijkpoort::Config::load(&k.practice_config).unwrap();
    assert_eq!(
        config.consent_rules,
        wijkpoort::consent::ConsentRules::DEFAULT
    );
    // Set.
    let (_dir, k) = kit();
    let path = k.practice_config.clone();
    append(
        &path,
        "\n[consent]\ngiven_on_max_days_back = 7\nmax_validity_days = 180\n",
    );
    let rules = wijkpoort::Config::load(&path).unwrap().consent_rules;
    assert_eq!(
        (rules.given_on_max_days_back, rules.max_validity_days),
        (7, 180)
    );
    // Refused, naming the field.
    for (section, field, problem) in [
        (
            "[consent]\ngiven_on_max_days_back = 400\n",
            "consent.given_on_max_days_back",
            "more than 90 days",
        ),
        (
            "[consent]\nmax_validity_days = 0\n",
            "consent.max_validity_days",
            "1 to 1827",
        ),
        (
            "[consent]\nmax_validity_days = 4000\n",
            "consent.max_validity_days",
            "1 to 1827",
        ),
    ] {
        let (_dir, k) = kit();
        let path = k.practice_config.clone();
        append(&path, &format!("\n{section}"));
        let e = load_err(&path);
        assert_names(&e, &path, field);
        assert!(e.problem.contains(problem), "{section}: {e}");
    }
}
