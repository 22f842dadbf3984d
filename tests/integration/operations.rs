//! Running a gateway, as an operations team does: logs, `check-config`, the ops
//! listener (metrics, health, readiness), the service units.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use wijkpoort::dev::pki::{DEV_PRACTICE_ID, DEV_WIJKTEAM_ID};

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_wijkpoort");

/// A plain HTTP/1.1 GET; returns the status, the head and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    // hyper answers a known length, not chunked, for these full bodies.
    (status, head.to_string(), body.to_string())
}

/// A free loopback port (bound, then released for the gateway to take).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Gives `role`'s config an `[ops]` section on a free port; returns its address.
pub fn add_ops(setup: &Setup, role: Role) -> SocketAddr {
    let addr = free_port();
    let path = setup.config_path(role);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("\n[ops]\nlisten = \"{addr}\"\n"));
    std::fs::write(&path, text).unwrap();
    addr
}

// ---------------------------------------------------------------------------------
// Logs

/// What the flow below sends that is personal data: none of it may reach a log line.
const PERSONAL: [&str; 6] = [
    BSN,
    "Sanne",
    "de Vries",
    "mondeling tijdens consult",
    "slaapproblemen",
    "Intake gepland",
];

#[tokio::test]
async fn logs_at_trace_in_json_hold_no_personal_data() {
    let mut setup = Setup::new().await;
    let json_trace = [("RUST_LOG", "trace")];
    let args = ["--log-format", "json"];
    let mut practice = setup
        .spawn_with(Role::Practice, 1, &args, &json_trace)
        .await;
    let mut wijkteam = setup
        .spawn_with(Role::Wijkteam, 1, &args, &json_trace)
        .await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let mut case_system = setup.client(Role::Wijkteam, "k.bakker");

    // Consent, referral, feedback.
    let consent = record_consent(&mut his).await;
    let referral = submit(&mut his, &referral_submission(&consent)).await;
    wait_delivered(&mut his, &referral).await;
    let mut feedback = feedback_submission(&referral, &consent);
    feedback["body"]["note"] = json!("Intake gepland met Sanne de Vries.");
    let feedback = submit(&mut case_system, &feedback).await;
    wait_delivered(&mut case_system, &feedback).await;

    // Inbox reads and acknowledgements on both sides.
    let (code, page) = case_system.get("/v1/inbox").await.unwrap();
    assert_eq!(code, 200, "{page}");
    let path = format!("/v1/inbox/{DEV_PRACTICE_ID}/{referral}");
    assert_eq!(case_system.get(&path).await.unwrap().0, 200);
    let ack = case_system
        .post(&format!("{path}/ack"), &json!({}))
        .await
        .unwrap();
    assert_eq!(ack.0, 200, "{}", ack.1);
    let (code, _) = his.get("/v1/inbox").await.unwrap();
    assert_eq!(code, 200);
    let path = format!("/v1/inbox/{DEV_WIJKTEAM_ID}/{feedback}/ack");
    assert_eq!(his.post(&path, &json!({})).await.unwrap().0, 200);

    // The consent query names the child by BSN; so does a refused submission.
    let (code, _) = his
        .post("/v1/consents/query", &json!({ "bsn": BSN }))
        .await
        .unwrap();
    assert_eq!(code, 200);

    // Withdrawal: the wijkteam is told; its next feedback is refused.
    let (code, answer) = his
        .post(
            &format!("/v1/consents/{consent}/withdraw"),
            &json!({"reason": "op verzoek van moeder (de Vries)"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{answer}");
    for update in answer["consent_updates"].as_array().unwrap() {
        wait_delivered(&mut his, update.as_str().unwrap()).await;
    }
    let (code, _) = case_system
        .post("/v1/messages", &feedback_submission(&referral, &consent))
        .await
        .unwrap();
    assert_eq!(code, 422);

    // An auditor reads the practice's log for the child, online; the BSN on stdin.
    let pki = &setup.kit.pki;
    let mut audit = Command::new(BIN)
        .args(["--log-format", "json", "audit", "--gateway"])
        .arg(format!("https://{}", setup.listener_addr(Role::Practice)))
        .arg("--cert")
        .arg(pki.cert("auditor"))
        .arg("--key")
        .arg(pki.key("auditor"))
        .arg("--ca")
        .arg(pki.ca())
        .args(["report", "--bsn", "-"])
        .env("RUST_LOG", "trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = audit.stdin.take().unwrap();
        writeln!(stdin, "{BSN}").unwrap();
    }
    let audit = audit.wait_with_output().unwrap();
    assert!(
        audit.status.success(),
        "audit report failed: {}",
        String::from_utf8_lossy(&audit.stderr)
    );
    assert!(
        String::from_utf8_lossy(&audit.stdout).contains("message_received")
            || !audit.stdout.is_empty(),
        "the report printed nothing"
    );

    practice.signal("TERM");
    wijkteam.signal("TERM");
    assert!(practice.wait_exit().await.success());
    assert!(wijkteam.wait_exit().await.success());

    let logs = [
        ("practice", practice.log()),
        ("wijkteam", wijkteam.log()),
        (
            "audit client",
            String::from_utf8_lossy(&audit.stderr).into_owned(),
        ),
    ];
    let mut lines = 0;
    let mut message_ids = 0;
    let mut levels = std::collections::BTreeSet::new();
    for (who, log) in &logs {
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            lines += 1;
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{who}: a log line is not JSON ({e}): {line}"));
            assert!(value.is_object(), "{who}: not an object: {line}");
            assert!(!line.contains('\u{1b}'), "{who}: ANSI escape in {line}");
            for needle in PERSONAL {
                assert!(
                    !line.contains(needle),
                    "{who}: a log line holds personal data ({needle:?}): {line}"
                );
            }
            if value["message_id"].is_string() {
                message_ids += 1;
            }
            if let Some(level) = value["level"].as_str() {
                levels.insert(level.to_string());
            }
        }
    }
    eprintln!("scanned {lines} log lines ({message_ids} with message_id, levels {levels:?})");
    assert!(lines > 50, "only {lines} log lines at trace");
    assert!(
        message_ids > 0,
        "no log line has message_id as a JSON field"
    );
    assert!(
        levels.contains("TRACE") || levels.contains("DEBUG"),
        "RUST_LOG=trace logged only {levels:?}"
    );
}

#[tokio::test]
async fn text_logs_to_a_file_have_no_colour() {
    let mut setup = Setup::new().await;
    let mut gw = setup.spawn(Role::Wijkteam, 1).await;
    gw.signal("TERM");
    assert!(gw.wait_exit().await.success());
    let log = gw.log();
    assert!(log.contains("gateway started"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file:\n{log}"
    );
    assert!(
        log.contains("identity=") || log.contains("identity"),
        "{log}"
    );
}

// ---------------------------------------------------------------------------------
// check-config

fn run_bin(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_config_summarises_a_valid_config_without_binding_its_ports() {
    // The set-up holds the gateway's ports: `serve` could not bind them.
    let setup = Setup::new().await;
    let path = setup.config_path(Role::Practice);
    let (code, out, err) = run_bin(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    for expected in [
        ": OK",
        "role:       practice",
        &format!("identity:   {DEV_PRACTICE_ID}"),
        "days left",
        "peers (1):",
        "wijkteam",
        DEV_WIJKTEAM_ID,
        "may send: feedback",
        "auditors (1):",
        "policy:",
        "referral",
        "consent_update",
        "store:",
        "no store yet",
        "ops:        none",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
    assert!(out.lines().count() <= 24, "more than a screen:\n{out}");

    // With a store, its size.
    let mut setup = setup;
    let gw = setup.start(Role::Practice).await;
    gw.stop().await.unwrap();
    let (code, out, _) = run_bin(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    let store_line = out.lines().find(|l| l.starts_with("store:")).unwrap();
    assert!(
        store_line.contains("KiB") || store_line.contains("MiB"),
        "{store_line}"
    );
}

#[tokio::test]
async fn check_config_refuses_what_serve_refuses_with_the_same_line_and_exit_64() {
    let setup = Setup::new().await;
    let path = setup.config_path(Role::Practice);
    let original = std::fs::read_to_string(&path).unwrap();
    type Breakage = Box<dyn Fn(&str) -> String>;
    let breakages: [(&str, Breakage); 4] = [
        (
            "a peer without a url",
            Box::new(|t: &str| {
                t.lines()
                    .filter(|l| !l.starts_with("url = "))
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
        ),
        (
            "a missing key file",
            Box::new(|t: &str| t.replace("key = \"practice.key\"", "key = \"nowhere.key\"")),
        ),
        (
            "an unknown message type",
            Box::new(|t: &str| t.replace("may_send = [\"feedback\"]", "may_send = [\"gossip\"]")),
        ),
        (
            "a bad ops address",
            Box::new(|t: &str| format!("{t}\n[ops]\nlisten = \"localhost\"\n")),
        ),
    ];
    for (what, breakage) in breakages {
        let broken = breakage(&original);
        assert_ne!(broken, original, "{what}: the breakage changed nothing");
        std::fs::write(&path, broken).unwrap();
        let p = path.to_str().unwrap();
        let (check_code, check_out, check_err) = run_bin(&["check-config", "--config", p]);
        let (serve_code, _, serve_err) = run_bin(&["serve", "--config", p]);
        assert_eq!(
            check_code, 64,
            "{what}: check-config: {check_out}{check_err}"
        );
        assert_eq!(serve_code, 64, "{what}: serve: {serve_err}");
        let last = |s: &str| s.lines().last().unwrap_or("").to_string();
        assert!(
            last(&check_err).starts_with("wijkpoort: "),
            "{what}: {check_err}"
        );
        assert_eq!(last(&check_err), last(&serve_err), "{what}");
        assert_eq!(
            check_err.lines().count(),
            1,
            "{what}: one line: {check_err}"
        );
    }
}

// ---------------------------------------------------------------------------------
// The ops listener

/// A Prometheus text-format (0.0.4) exposition, parsed strictly: every sample belongs to
/// the family of the `# TYPE` line before it, names and labels are well-formed, no
/// series appears twice, histogram buckets are cumulative and end in `+Inf` = `_count`.
pub struct Exposition {
    pub types: std::collections::BTreeMap<String, String>,
    pub samples: std::collections::BTreeMap<String, f64>,
}

impl Exposition {
    pub fn parse(text: &str) -> Result<Exposition, String> {
        use std::collections::BTreeMap;
        let name_ok = |n: &str| {
            let mut c = n.chars();
            c.next()
                .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
                && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
        };
        let mut types = BTreeMap::new();
        let mut helps = BTreeMap::new();
        let mut samples = BTreeMap::new();
        let mut family: Option<(String, String)> = None;
        let mut last_bucket: Option<(String, f64)> = None;
        if !text.ends_with('\n') {
            return Err("the exposition does not end in a newline".into());
        }
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if line.is_empty() {
                return Err(format!("line {n}: empty line"));
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let kind = parts.next().unwrap_or("");
                let name = parts.next().ok_or(format!("line {n}: no name"))?;
                let value = parts.next().unwrap_or("");
                if !name_ok(name) {
                    return Err(format!("line {n}: bad metric name {name:?}"));
                }
                match kind {
                    "HELP" => {
                        if helps.insert(name.to_string(), value.to_string()).is_some() {
                            return Err(format!("line {n}: second HELP for {name}"));
                        }
                    }
                    "TYPE" => {
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&value)
                        {
                            return Err(format!("line {n}: bad type {value:?}"));
                        }
                        if types.insert(name.to_string(), value.to_string()).is_some() {
                            return Err(format!("line {n}: second TYPE for {name}"));
                        }
                        family = Some((name.to_string(), value.to_string()));
                    }
                    _ => return Err(format!("line {n}: unknown comment {kind:?}")),
                }
                continue;
            }
            let (series, value) = line.rsplit_once(' ').ok_or(format!("line {n}: no value"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .map_err(|_| format!("line {n}: bad value {v:?}"))?,
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .strip_suffix('}')
                        .ok_or(format!("line {n}: unclosed labels"))?;
                    (name, labels)
                }
                None => (series, ""),
            };
            if !name_ok(name) {
                return Err(format!("line {n}: bad sample name {name:?}"));
            }
            let mut label_map = BTreeMap::new();
            if !labels.is_empty() {
                for pair in labels.split("\",") {
                    let (k, v) = pair
                        .split_once("=\"")
                        .ok_or(format!("line {n}: bad label {pair:?}"))?;
                    let v = v.strip_suffix('"').unwrap_or(v);
                    if !name_ok(k) || k.starts_with("__") {
                        return Err(format!("line {n}: bad label name {k:?}"));
                    }
                    if v.contains('\n') {
                        return Err(format!("line {n}: newline in a label value"));
                    }
                    if label_map.insert(k.to_string(), v.to_string()).is_some() {
                        return Err(format!("line {n}: label {k} twice"));
                    }
                }
            }
            let (fam, kind) = family
                .as_ref()
                .ok_or(format!("line {n}: a sample before any TYPE"))?;
            let suffixes: &[&str] = match kind.as_str() {
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            if !suffixes.iter().any(|s| name == format!("{fam}{s}")) {
                return Err(format!("line {n}: {name} is not of the family {fam}"));
            }
            if kind == "counter" && value < 0.0 {
                return Err(format!("line {n}: negative counter"));
            }
            if name.ends_with("_bucket") && kind == "histogram" {
                label_map
                    .get("le")
                    .ok_or(format!("line {n}: a bucket without le"))?;
                let key = format!("{fam}{labels}");
                let other: String = key.split(",le=").next().unwrap_or("").to_string();
                if let Some((prev_series, prev)) = &last_bucket {
                    if *prev_series == other && value < *prev {
                        return Err(format!("line {n}: buckets not cumulative"));
                    }
                }
                last_bucket = Some((other, value));
            }
            if name.ends_with("_count") && kind == "histogram" {
                let inf = format!("{fam}_bucket{{le=\"+Inf\"}}");
                match samples.get(&inf) {
                    Some(v) if *v == value => {}
                    _ => return Err(format!("line {n}: _count is not the +Inf bucket")),
                }
            }
            let canonical = if label_map.is_empty() {
                name.to_string()
            } else {
                let l: Vec<String> = label_map
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                format!("{name}{{{}}}", l.join(","))
            };
            if samples.insert(canonical.clone(), value).is_some() {
                return Err(format!("line {n}: series {canonical} twice"));
            }
        }
        for name in types.keys() {
            if !helps.contains_key(name) {
                return Err(format!("{name} has a TYPE but no HELP"));
            }
        }
        Ok(Exposition { types, samples })
    }

    /// The value of one series, written with its labels in alphabetical order.
    pub fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in {:#?}", self.samples.keys()))
    }
}

/// `promtool check metrics` on `text`, if promtool is installed (Debian's `prometheus`
/// package); `None` when it is not.
pub fn promtool(text: &str) -> Option<(bool, String)> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return None,
    };
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

async fn scrape(addr: SocketAddr) -> (String, Exposition) {
    let (code, head, body) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let parsed = Exposition::parse(&body)
        .unwrap_or_else(|e| panic!("not valid Prometheus text: {e}\n{body}"));
    (body, parsed)
}

#[tokio::test]
async fn metrics_count_the_flow_and_parse_as_prometheus_text() {
    let mut setup = Setup::new().await;
    let practice_ops = add_ops(&setup, Role::Practice);
    let wijkteam_ops = add_ops(&setup, Role::Wijkteam);
    let practice = setup.start(Role::Practice).await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");

    let ids = submit_referrals(&mut his, 2).await;
    for id in &ids {
        wait_delivered(&mut his, id).await;
    }
    // A refusal: a BSN failing the elfproef.
    let mut bad = referral_submission("consent-none");
    bad["subject"]["bsn"] = json!("123456789");
    let (code, answer) = his.post("/v1/messages", &bad).await.unwrap();
    assert_eq!(code, 400, "{answer}");
    let refused_code = answer["error"].as_str().unwrap().to_string();

    let (text, p) = scrape(practice_ops).await;
    assert_eq!(
        p.get("wijkpoort_messages_accepted_total{type=\"referral\"}"),
        2.0
    );
    assert_eq!(
        p.get(&format!(
            "wijkpoort_messages_refused_total{{code=\"{refused_code}\",stage=\"submit\",type=\"referral\"}}"
        )),
        1.0
    );
    assert_eq!(
        p.get("wijkpoort_messages_delivered_total{peer=\"wijkteam\"}"),
        2.0
    );
    assert_eq!(p.get("wijkpoort_outbox_backlog{peer=\"wijkteam\"}"), 0.0);
    assert!(p.get("wijkpoort_relay_attempts_total{peer=\"wijkteam\"}") >= 1.0);
    assert!(p.get("wijkpoort_tls_handshakes_total{direction=\"out\"}") >= 1.0);
    assert!(p.get("wijkpoort_commit_groups_total") >= 3.0);
    assert!(p.get("wijkpoort_fdatasync_total") >= 3.0);
    assert!(p.get("wijkpoort_commit_duration_seconds_count") >= 3.0);
    assert!(p.get("wijkpoort_commit_duration_seconds_sum") > 0.0);
    // fdatasync on its own, a part of each commit's duration.
    let syncs = p.get("wijkpoort_fdatasync_duration_seconds_count");
    assert!(syncs >= 3.0, "{syncs}");
    assert!(p.get("wijkpoort_fdatasync_duration_seconds_sum") > 0.0);
    assert!(
        p.get("wijkpoort_fdatasync_duration_seconds_sum")
            <= p.get("wijkpoort_commit_duration_seconds_sum")
    );
    assert_eq!(p.types["wijkpoort_fdatasync_duration_seconds"], "histogram");
    // The certificate the wijkteam presented to the practice's relay.
    let expected = |role: Role| {
        let der = setup.credentials(role).cert_der();
        (wijkpoort::identity::not_after(&der).unwrap() - chrono::Utc::now()).num_seconds() as f64
    };
    let seen = p.get("wijkpoort_peer_certificate_expiry_seconds{peer=\"wijkteam\"}");
    assert!((seen - expected(Role::Wijkteam)).abs() < 120.0, "{seen}");
    assert_eq!(
        p.get("wijkpoort_outbox_oldest_age_seconds{peer=\"wijkteam\"}"),
        0.0
    );
    // A fresh store has no checkpoint yet.
    assert!(
        !text.contains("wijkpoort_audit_last_checkpoint_age_seconds "),
        "{text}"
    );
    assert!(p.get("wijkpoort_certificate_expiry_seconds") > 30.0 * 86_400.0);
    assert!(p.get("wijkpoort_audit_records") >= 5.0);
    assert!(p.get("wijkpoort_store_size_bytes") > 0.0);
    assert_eq!(p.types["wijkpoort_commit_duration_seconds"], "histogram");
    assert_eq!(p.types["wijkpoort_messages_accepted_total"], "counter");
    assert_eq!(p.types["wijkpoort_outbox_backlog"], "gauge");
    assert!(!text.contains(BSN) && !text.contains(&ids[0]), "{text}");

    let (_, w) = scrape(wijkteam_ops).await;
    assert_eq!(
        w.get("wijkpoort_messages_received_total{peer=\"practice\",type=\"referral\"}"),
        2.0
    );
    assert!(w.get("wijkpoort_tls_handshakes_total{direction=\"in\"}") >= 1.0);
    assert_eq!(w.get("wijkpoort_inbox_unacknowledged"), 2.0);
    // The certificate the practice presented to the wijkteam's listener.
    let seen = w.get("wijkpoort_peer_certificate_expiry_seconds{peer=\"practice\"}");
    assert!((seen - expected(Role::Practice)).abs() < 120.0, "{seen}");

    // A bare connect to the wijkteam's listener is a failed handshake, by its reason.
    drop(
        tokio::net::TcpStream::connect(setup.listener_addr(Role::Wijkteam))
            .await
            .unwrap(),
    );
    let failed = "wijkpoort_tls_handshake_failures_total{direction=\"in\",reason=\"closed_early\"}";
    wait_until("the bare connect counted as a failed handshake", || async {
        let (_, w) = scrape(wijkteam_ops).await;
        w.samples
            .get(failed)
            .is_some_and(|v| *v >= 1.0)
            .then_some(())
    })
    .await;

    // A stop seals the log with a checkpoint: after a restart its age is shown.
    practice.stop().await.unwrap();
    let practice = setup.start(Role::Practice).await;
    let (text, p) = scrape(practice_ops).await;
    let age = p.get("wijkpoort_audit_last_checkpoint_age_seconds");
    assert!((0.0..60.0).contains(&age), "{age}");

    match promtool(&text) {
        Some((ok, said)) => assert!(ok, "promtool check metrics:\n{said}\n{text}"),
        None => eprintln!(
            "promtool not installed (Debian's `prometheus` package): checked with the test's own parser only"
        ),
    }
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
}

#[tokio::test]
async fn health_and_readiness_with_a_peer_down() {
    let mut setup = Setup::new().await;
    let ops = add_ops(&setup, Role::Practice);
    let practice = setup.start(Role::Practice).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");

    let (code, _, body) = http_get(ops, "/healthz").await;
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "alive"
    );
    let (code, _, body) = http_get(ops, "/readyz").await;
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["failed"], json!([]));
    for check in ["store", "certificate", "shutting_down"] {
        assert_eq!(ready["checks"][check]["ok"], json!(true), "{ready}");
    }
    assert_eq!(ready["peers"][0]["name"], "wijkteam");

    // The wijkteam is down (never started): a referral waits; still ready, and the
    // peer's state says so.
    setup.release(Role::Wijkteam);
    let ids = submit_referrals(&mut his, 1).await;
    let peer = wait_until("a failed relay attempt", || async {
        let (_, _, body) = http_get(ops, "/readyz").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        let peer = v["peers"][0].clone();
        (peer["consecutive_failures"].as_i64() > Some(0)).then_some((v, peer))
    })
    .await;
    let (ready, peer) = peer;
    assert_eq!(
        ready["status"], "ready",
        "a down peer made it unready: {ready}"
    );
    assert_eq!(peer["reachable"], json!(false));
    assert_eq!(peer["backlog"], json!(1));
    let (_, p) = scrape(ops).await;
    assert_eq!(p.get("wijkpoort_outbox_backlog{peer=\"wijkteam\"}"), 1.0);
    assert!(p.get("wijkpoort_relay_failures_total{peer=\"wijkteam\"}") >= 1.0);
    assert!(p.get("wijkpoort_relay_consecutive_failures{peer=\"wijkteam\"}") >= 1.0);
    let age = p.get("wijkpoort_outbox_oldest_age_seconds{peer=\"wijkteam\"}");
    assert!(age > 0.0 && age < 60.0, "the waiting referral's age: {age}");

    let (code, _, _) = http_get(ops, "/nothing").await;
    assert_eq!(code, 404);
    // The local API's /healthz stays.
    let (code, answer) = his.get("/healthz").await.unwrap();
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"], "ok");
    drop(ids);
    practice.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------
// Progress of long commands

/// A stopped practice's store with `n` audit records more than the start leaves.
async fn store_with_records(setup: &Setup, n: usize) -> std::path::PathBuf {
    use wijkpoort::chain::{Actor, AuditEvent, Event, Outcome};
    let dir = setup.store_dir(Role::Practice);
    let store = open_store(&dir, &setup.config(Role::Practice));
    for chunk in 0..n / 1000 {
        let events = (0..1000)
            .map(|i| {
                AuditEvent::new(
                    Event::AuditRead,
                    Outcome::Success,
                    Actor::User {
                        id: "auditor".into(),
                    },
                )
                .reason(format!("load {chunk}-{i}"))
            })
            .collect();
        store.commit_audit(events).await.unwrap();
    }
    tokio::task::spawn_blocking(move || store.close())
        .await
        .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_export_show_progress_on_a_terminal_and_nothing_when_piped() {
    let setup = Setup::new().await;
    let dir = store_with_records(&setup, 3_000).await;
    let cert = setup.kit.pki.cert("practice");
    let store = dir.display().to_string();
    let cert = cert.display().to_string();
    let commands: [Vec<&str>; 2] = [
        vec!["audit", "--store", &store, "--cert", &cert, "verify"],
        vec!["audit", "--store", &store, "export", "--format", "fhir"],
    ];
    // The bar's own words and the terminal controls it draws with.
    let progress_marks = ["audit records (", "\r", "\x1b["];
    for args in &commands {
        // Piped: the answer alone on stdout, and no progress on stderr.
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        for mark in progress_marks {
            assert!(
                !stdout.contains(mark) && !stderr.contains(mark),
                "{args:?} piped wrote {mark:?}:\nstderr: {stderr}"
            );
        }
        if args.last() == Some(&"verify") {
            assert!(stdout.starts_with("intact: 300"), "{stdout}");
        } else {
            let bundle: Value = serde_json::from_str(&stdout).unwrap();
            assert!(bundle["entry"].as_array().unwrap().len() >= 3_000);
        }

        // On a terminal (a pseudo-terminal made by util-linux's `script`): a bar.
        let line = std::iter::once(BIN)
            .chain(args.iter().copied())
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let Ok(tty) = Command::new("script")
            .args(["-qec", &format!("{line} >/dev/null"), "/dev/null"])
            .stdin(Stdio::null())
            .output()
        else {
            eprintln!("`script` (util-linux) is not installed: the terminal case is not checked");
            continue;
        };
        let shown = String::from_utf8_lossy(&tty.stdout);
        assert!(tty.status.success(), "{args:?} on a terminal: {shown}");
        assert!(
            shown.contains("audit records ("),
            "{args:?} showed no progress on a terminal:\n{shown:?}"
        );
    }
}
