//! `wijkpoort bench`: the end-to-end benchmark anyone can rerun. It writes a fresh dev
//! kit, starts a practice and a wijkteam gateway as two child processes of this binary
//! (`serve`), so that each one's CPU time and peak memory can be read from `/proc`,
//! records a consent, and drives N concurrent submitters through the practice's local
//! API — consent, minimisation, signing, verification, audit and durable commits all on —
//! until every message is in the wijkteam's inbox.
//!
//! Latencies: submit → accepted is timed by the submitter; submit → delivered is the
//! wijkteam's receipt time minus the submit time (both gateways share this machine's
//! clock).

use crate::output::outln;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::client::LocalApiClient;
use crate::dev::devkit::{self, NodeSpec, Role};
use crate::error::StartError;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Concurrent submitters.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Messages in total.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Approximate size of each referral's free text, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Durable commits (fdatasync) at every gateway. `off` is for comparison only.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub durability: String,
    /// Practice gateways driving the one wijkteam (the submitters are spread over them).
    #[arg(long, default_value_t = 1)]
    pub practices: usize,
    /// The certificates: `ecdsa` (the ECDSA P-256 dev PKI) or `uzi` (RSA-4096 at both
    /// gateways: the practice on a UZI-shaped chain, the wijkteam on a PKIoverheid-shaped
    /// one; fresh keys from `openssl genpkey`, one practice only).
    #[arg(long, default_value = "ecdsa", value_parser = ["ecdsa", "uzi"])]
    pub pki: String,
}

/// Puts RSA-4096 chains over the dev network's ECDSA files: the practice on a UZI-shaped
/// chain (root → domain CA → UZI server CA), the wijkteam on a PKIoverheid-shaped one,
/// both leaf keys RSA-4096, and the issuing CAs in both configs.
fn rsa_chains(dir: &Path) -> Result<(), StartError> {
    use crate::dev::pki::{write_real_pki, RsaKeys, Shape};
    outln!("making RSA-4096 keys with `openssl genpkey` for --pki uzi …");
    let mut keys = RsaKeys::generate_with_openssl().map_err(err)?;
    keys.wijkteam = RsaKeys::openssl_key(4096).map_err(err)?;
    write_real_pki(dir, Shape::Uzi, &keys).map_err(err)?;
    let section = std::fs::read_to_string(dir.join("issuing_cas.toml")).map_err(err)?;
    for name in ["practice", "wijkteam"] {
        let path = dir.join(format!("{name}.toml"));
        let mut text = std::fs::read_to_string(&path).map_err(err)?;
        text.push('\n');
        text.push_str(&section);
        std::fs::write(&path, text).map_err(err)?;
    }
    Ok(())
}

fn err(e: impl std::fmt::Display) -> StartError {
    StartError::Other(e.to_string())
}

/// A gateway child process, killed if the benchmark stops early.
struct Gateway {
    name: String,
    child: Child,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(name: String, config: &Path, durable: bool) -> Result<Gateway, StartError> {
        let exe = std::env::current_exe().map_err(err)?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve").arg("--config").arg(config);
        if !durable {
            cmd.arg("--unsafe-no-fsync");
        }
        cmd.env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().map_err(err)?;
        Ok(Gateway { name, child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds so far.
    fn cpu_seconds(&self, ticks_per_second: f64) -> f64 {
        cpu_seconds(self.pid(), ticks_per_second)
    }

    /// A `/proc/<pid>/status` memory figure in MB (`VmRSS`, `VmHWM`).
    fn memory_mb(&self, key: &str) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }
}

/// User + system CPU seconds of process `pid` so far.
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    (field(11) + field(12)) / ticks_per_second
}

fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn free_port() -> Result<std::net::SocketAddr, StartError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(err)?;
    l.local_addr().map_err(err)
}

async fn wait_healthy(addr: std::net::SocketAddr, token: &str) -> Result<(), StartError> {
    let mut client = LocalApiClient::new(addr, token, "bench");
    for _ in 0..200 {
        if let Ok((200, _)) = client.get("/healthz").await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(err(format!("the gateway at {addr} did not come up")))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One practice of the run: its gateway, its address and token, its consents.
struct Practice {
    gateway: Gateway,
    api: std::net::SocketAddr,
    token: String,
    consents: Vec<(&'static str, String)>,
}

pub async fn run(o: BenchOptions) -> Result<(), StartError> {
    let durable = o.durability == "on";
    let practices_n = o.practices.max(1);
    let dir = tempfile::tempdir().map_err(err)?;
    let mut nodes = Vec::new();
    for i in 0..practices_n {
        nodes.push(NodeSpec {
            name: if practices_n == 1 {
                "practice".into()
            } else {
                format!("practice-{}", i + 1)
            },
            role: Role::Practice,
            identity: devkit::practice_id(i),
            api: free_port()?,
            listener: free_port()?,
        });
    }
    nodes.push(NodeSpec {
        name: "wijkteam".into(),
        role: Role::Wijkteam,
        identity: devkit::wijkteam_id(0),
        api: free_port()?,
        listener: free_port()?,
    });
    let net = devkit::write_network(dir.path(), &nodes, None).map_err(err)?;
    if o.pki == "uzi" {
        if practices_n != 1 {
            return Err(err("--pki uzi runs one practice (its UZI-shaped chain)"));
        }
        rsa_chains(dir.path())?;
    }
    let (w_node, p_nodes) = net.nodes.split_last().ok_or_else(|| err("no nodes"))?;
    let wijkteam = Gateway::start("wijkteam".into(), &w_node.config, durable)?;
    let mut practices = Vec::new();
    for node in p_nodes {
        practices.push(Practice {
            gateway: Gateway::start(node.spec.name.clone(), &node.config, durable)?,
            api: node.spec.api,
            token: node.token.clone(),
            consents: Vec::new(),
        });
    }
    wait_healthy(w_node.spec.api, &w_node.token).await?;
    for p in &practices {
        wait_healthy(p.api, &p.token).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss_w = wijkteam.memory_mb("VmRSS:");
    let idle_rss_p: Vec<f64> = practices
        .iter()
        .map(|p| p.gateway.memory_mb("VmRSS:"))
        .collect();

    // One consent per child at each practice; the submitters cycle over a few children.
    let today = chrono::Local::now().date_naive();
    let children = ["111222333", "123456782", "100000009", "999999990"];
    for p in &mut practices {
        let mut his = LocalApiClient::new(p.api, &p.token, "bench");
        for bsn in children {
            let (code, answer) = his
                .post(
                    "/v1/consents",
                    &json!({
                        "child": {"bsn": bsn, "birth_date": today - chrono::Duration::days(8 * 365)},
                        "performers": [{"role": "parent", "name": "ouder"}],
                        "scope": {"types": ["referral", "feedback"], "recipient": w_node.spec.identity},
                        "valid_from": today, "valid_until": today + chrono::Duration::days(30),
                        "evidence": "benchmark"
                    }),
                )
                .await
                .map_err(err)?;
            if code != 201 {
                return Err(err(format!(
                    "recording a consent failed ({code}): {answer}"
                )));
            }
            p.consents.push((
                bsn,
                answer["consent_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
    }

    let ticks = ticks_per_second();
    let cpu_before_w = wijkteam.cpu_seconds(ticks);
    let cpu_before_p: Vec<f64> = practices
        .iter()
        .map(|p| p.gateway.cpu_seconds(ticks))
        .collect();
    let own_cpu_before = cpu_seconds(std::process::id(), ticks);
    let mut his_stats = Vec::new();
    for p in &practices {
        his_stats.push(stats(&mut LocalApiClient::new(p.api, &p.token, "bench")).await?);
    }
    let mut case_system = LocalApiClient::new(w_node.spec.api, &w_node.token, "bench");
    let w_before = stats(&mut case_system).await?;
    let text = "Ouders vragen hulp bij slaapproblemen. ".repeat(o.size / 40 + 1);
    outln!(
        "wijkpoort bench: {} messages, {} concurrent submitters over {} practice(s) into one wijkteam, ~{} B free text, keys {}, durability {}",
        o.messages,
        o.concurrency,
        practices_n,
        text.len(),
        if o.pki == "uzi" {
            "RSA-4096 (UZI and PKIoverheid chains)"
        } else {
            "ECDSA P-256 (dev PKI)"
        },
        if durable {
            "ON (flush + fdatasync at every gateway)"
        } else {
            "OFF (comparison only: NOT durable)"
        }
    );

    let started = Instant::now();
    let start_wall = Utc::now();
    let mut submitters = tokio::task::JoinSet::new();
    for s in 0..o.concurrency {
        let count = o.messages / o.concurrency + usize::from(s < o.messages % o.concurrency);
        let at = s % practices_n;
        let p = &practices[at];
        let mut client = LocalApiClient::new(p.api, &p.token, "bench");
        let (bsn, consent_id) = p.consents[(s / practices_n) % p.consents.len()].clone();
        let text = text.clone();
        submitters.spawn(async move {
            let mut results: Vec<(usize, String, DateTime<Utc>, f64)> = Vec::with_capacity(count);
            for _ in 0..count {
                let message = json!({
                    "type": "referral", "to": "wijkteam", "consent_id": consent_id,
                    "subject": {"bsn": bsn, "name": "Kind", "birth_date": "2018-01-01"},
                    "body": {"request_for_help": text, "urgency": "routine", "postcode": "3511 AB",
                             "medication": ["x"]}
                });
                let submitted = Utc::now();
                let t = Instant::now();
                let (code, answer) = client.post("/v1/messages", &message).await?;
                if code != 202 {
                    return Err(format!("submission refused ({code}): {answer}"));
                }
                let id = answer["id"].as_str().unwrap_or_default().to_string();
                results.push((at, id, submitted, t.elapsed().as_secs_f64() * 1000.0));
            }
            Ok::<_, String>(results)
        });
    }
    let mut accepted = Vec::with_capacity(o.messages);
    while let Some(done) = submitters.join_next().await {
        accepted.extend(done.map_err(err)?.map_err(err)?);
    }
    let accept_phase = started.elapsed();

    // Wait until the wijkteam has every message.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = stats(&mut case_system).await?;
        if s["received_total"].as_u64().unwrap_or(0) as usize >= o.messages {
            break;
        }
        if Instant::now() > deadline {
            return Err(err("not every message arrived within 10 minutes"));
        }
        // Not more often: `/v1/stats` counts the inbox (sled walks the tree), and at
        // every 20 ms that polling was ~5% of the wijkteam's CPU. The figures do not
        // depend on it: throughput is timed to the last receipt, not to this poll.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_delivered = started.elapsed();
    let cpu_after_w = wijkteam.cpu_seconds(ticks);
    let cpu_after_p: Vec<f64> = practices
        .iter()
        .map(|p| p.gateway.cpu_seconds(ticks))
        .collect();
    let own_cpu = cpu_seconds(std::process::id(), ticks) - own_cpu_before;
    // Peak memory of the run itself, before this benchmark reads every message's status
    // back (which makes the practice's sled read every record once more).
    let run_peak_w = wijkteam.memory_mb("VmHWM:");
    let run_peak_p: Vec<f64> = practices
        .iter()
        .map(|p| p.gateway.memory_mb("VmHWM:"))
        .collect();
    let w_stats = stats(&mut case_system).await?;

    // Submit → delivered, from each message's receipt, per practice.
    let mut per: Vec<Figures> = (0..practices_n).map(|_| Figures::default()).collect();
    let mut clients: Vec<LocalApiClient> = practices
        .iter()
        .map(|p| LocalApiClient::new(p.api, &p.token, "bench"))
        .collect();
    for (at, id, submitted, ms) in &accepted {
        let f = &mut per[*at];
        f.accept_ms.push(*ms);
        // The practice may still be recording the receipt; try a few times.
        for _ in 0..100 {
            let (_, status) = clients[*at]
                .get(&format!("/v1/messages/{id}"))
                .await
                .map_err(err)?;
            if let Some(at) = status["receipt"]["received_at"]
                .as_str()
                .and_then(|s| s.parse::<DateTime<Utc>>().ok())
            {
                f.delivered_ms
                    .push((at - *submitted).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                f.last_delivery = Some(f.last_delivery.map_or(at, |l: DateTime<Utc>| l.max(at)));
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut p_stats = Vec::new();
    for c in &mut clients {
        p_stats.push(stats(c).await?);
    }
    let mut total = Figures::default();
    for f in &mut per {
        f.accept_ms.sort_by(f64::total_cmp);
        f.delivered_ms.sort_by(f64::total_cmp);
        total.accept_ms.extend(&f.accept_ms);
        total.delivered_ms.extend(&f.delivered_ms);
        total.last_delivery = total.last_delivery.max(f.last_delivery);
    }
    total.accept_ms.sort_by(f64::total_cmp);
    total.delivered_ms.sort_by(f64::total_cmp);

    let n = o.messages as f64;
    let secs_since_start = |last: Option<DateTime<Utc>>| {
        (last.unwrap_or(start_wall) - start_wall)
            .num_microseconds()
            .unwrap_or(1)
            .max(1) as f64
            / 1e6
    };
    let e2e_secs = secs_since_start(total.last_delivery);
    let delta = |v: &Value, b: &Value, k: &str| {
        v[k].as_u64()
            .unwrap_or(0)
            .saturating_sub(b[k].as_u64().unwrap_or(0))
    };
    outln!();
    outln!(
        "throughput, end to end        {:>10.0} messages/s  ({} messages in {:.2} s, last receipt)",
        n / e2e_secs,
        o.messages,
        e2e_secs
    );
    outln!(
        "  (all in the wijkteam store)  {:>10.2} s wall; accept phase {:.2} s = {:.0} accepted/s",
        all_delivered.as_secs_f64(),
        accept_phase.as_secs_f64(),
        n / accept_phase.as_secs_f64()
    );
    total.print_latencies("");
    let gateway_line = |name: &str,
                        cpu: f64,
                        count: f64,
                        idle: f64,
                        (run_peak, peak): (f64, f64),
                        s: &Value,
                        b: &Value| {
        let syncs = delta(s, b, "commit_syncs");
        let groups = delta(s, b, "commit_groups");
        outln!(
            "{:<9} CPU {:>7.1} µs/message   RSS idle {:>5.1} MB, peak {:>6.1} MB (run) {:>6.1} MB (with status reads)   commit groups {:>6} ({:.1} jobs/group), fdatasync {:.3}/message",
            name,
            cpu / count.max(1.0) * 1e6,
            idle,
            run_peak,
            peak,
            groups,
            delta(s, b, "commit_jobs") as f64 / groups.max(1) as f64,
            syncs as f64 / count.max(1.0),
        );
        let per_group_ms = |key: &str| delta(s, b, key) as f64 / groups.max(1) as f64 / 1e6;
        outln!(
            "{:<9} a commit group on average: jobs {:.2} ms, sled transaction {:.2} ms, sled flush {:.2} ms, fdatasync {:.2} ms",
            "",
            per_group_ms("commit_jobs_ns"),
            per_group_ms("commit_transaction_ns"),
            per_group_ms("commit_flush_ns"),
            per_group_ms("commit_fdatasync_ns"),
        );
    };
    for (i, p) in practices.iter().enumerate() {
        let count = per[i].accept_ms.len() as f64;
        gateway_line(
            &p.gateway.name,
            cpu_after_p[i] - cpu_before_p[i],
            count,
            idle_rss_p[i],
            (run_peak_p[i], p.gateway.memory_mb("VmHWM:")),
            &p_stats[i],
            &his_stats[i],
        );
        if practices_n > 1 {
            outln!(
                "          {:>10.0} messages/s  ({} messages, last receipt at {:.2} s)",
                count / secs_since_start(per[i].last_delivery),
                count,
                secs_since_start(per[i].last_delivery)
            );
            per[i].print_latencies("          ");
        }
    }
    gateway_line(
        "wijkteam",
        cpu_after_w - cpu_before_w,
        n,
        idle_rss_w,
        (run_peak_w, wijkteam.memory_mb("VmHWM:")),
        &w_stats,
        &w_before,
    );
    outln!(
        "load generator (this process, on the same cores) CPU {:>7.1} µs/message",
        own_cpu / n * 1e6
    );
    let handshakes_out: u64 = p_stats
        .iter()
        .map(|s| s["handshakes_out"].as_u64().unwrap_or(0))
        .sum();
    outln!(
        "TLS handshakes: practices → wijkteam {} (relay connections), wijkteam listener accepted {}",
        handshakes_out, w_stats["handshakes_in"]
    );
    drop(practices);
    drop(wijkteam);
    Ok(())
}

/// Latencies and the last receipt of one practice's messages (or of all).
#[derive(Default)]
struct Figures {
    accept_ms: Vec<f64>,
    delivered_ms: Vec<f64>,
    last_delivery: Option<DateTime<Utc>>,
}

impl Figures {
    fn print_latencies(&self, indent: &str) {
        outln!(
            "{indent}submit → accepted   p50 {:>7.2} ms   p95 {:>7.2} ms   p99 {:>7.2} ms",
            percentile(&self.accept_ms, 0.5),
            percentile(&self.accept_ms, 0.95),
            percentile(&self.accept_ms, 0.99)
        );
        outln!(
            "{indent}submit → delivered  p50 {:>7.2} ms   p95 {:>7.2} ms   p99 {:>7.2} ms  ({} receipts)",
            percentile(&self.delivered_ms, 0.5),
            percentile(&self.delivered_ms, 0.95),
            percentile(&self.delivered_ms, 0.99),
            self.delivered_ms.len()
        );
    }
}

async fn stats(client: &mut LocalApiClient) -> Result<Value, StartError> {
    let (code, s) = client.get("/v1/stats").await.map_err(err)?;
    if code != 200 {
        return Err(err(format!("stats failed ({code}): {s}")));
    }
    Ok(s)
}
