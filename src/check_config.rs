//! `wijkpoort check-config --config FILE`: validates a config file as `serve` does —
//! every file it names, the key against the certificate, the certificate's validity
//! period and identity, the trust anchors, the token, the secret, the minimisation
//! policy, the peers, the relay settings, the addresses — and builds the TLS configs,
//! but binds no port and does not open the store (a running gateway holds its lock).
//! It fetches each `tls.crl_urls` list once (without writing the cache) to show whether
//! the CA's distribution point answers with a good list. Prints a one-screen summary; a
//! mistake is the same one line and exit code 64 that `serve` gives.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::Config;
use crate::error::StartError;

/// Checks `path` and prints the summary on stdout.
pub async fn run(path: &Path) -> Result<(), StartError> {
    let mut config = Config::load(path)?;
    crate::tls::server_config(&config)?;
    crate::tls::client_config(&config)?;
    for url in config.crl_urls.clone() {
        let at = chrono::Utc::now();
        let fetched = crate::revocation::fetch::fetch(
            &url,
            crate::revocation::fetch::FETCH_TIMEOUT,
            crate::revocation::fetch::MAX_CRL_BYTES,
        )
        .await
        .map_err(|e| e.to_string())
        .and_then(|bytes| config.crls.with_fetched(&url, &bytes, at));
        config.crls = match fetched {
            Ok(set) => set,
            Err(e) => config.crls.with_failure(&url, at, &e),
        };
    }
    crate::output::write(&summary(&config));
    Ok(())
}

/// The summary `check-config` prints for a valid `config`.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: OK", config.path.display());
    let role = match config.role {
        crate::config::Role::Practice => "practice",
        crate::config::Role::Wijkteam => "wijkteam",
    };
    let _ = writeln!(out, "role:       {role}");
    let leaf = config.cert_chain.first().map(|c| c.as_ref()).unwrap_or(&[]);
    let (_, not_after) = crate::server::ops::validity(leaf);
    let days = crate::metrics::days_until(not_after);
    let until = chrono::DateTime::from_timestamp(not_after, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    let name = crate::identity::identify(leaf)
        .ok()
        .and_then(|i| i.organisation.or(i.common_name))
        .unwrap_or_default();
    let _ = writeln!(out, "identity:   {} ({name})", config.identity);
    let warn = if days < 30.0 {
        "  WARNING: renew it"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "certificate: valid until {until} ({days:.0} days left){warn}"
    );
    let _ = writeln!(out, "local API:  http://{}", config.local_api);
    let _ = writeln!(out, "listener:   {} (mTLS)", config.listener);
    match &config.ops {
        Some(ops) => {
            let _ = writeln!(
                out,
                "ops:        http://{} (/metrics, /healthz, /readyz)",
                ops.listen
            );
        }
        None => {
            let _ = writeln!(out, "ops:        none (no [ops] section)");
        }
    }
    let _ = writeln!(out, "peers ({}):", config.peers.len());
    for p in config.peers.iter() {
        let types: Vec<&str> = p.may_send.iter().map(|t| t.as_str()).collect();
        let _ = writeln!(
            out,
            "  {:<12} {:<22} https://{}:{}  may send: {}",
            p.name.as_str(),
            p.identity.as_str(),
            p.host,
            p.port,
            if types.is_empty() {
                "nothing".to_string()
            } else {
                types.join(", ")
            }
        );
    }
    let auditors: Vec<&str> = config.auditors.iter().map(|a| a.as_str()).collect();
    let _ = writeln!(
        out,
        "auditors ({}): {}",
        auditors.len(),
        if auditors.is_empty() {
            "none".to_string()
        } else {
            auditors.join(", ")
        }
    );
    let types: Vec<&str> = config.policy.types().map(|t| t.as_str()).collect();
    let _ = writeln!(
        out,
        "policy:     {} ({})",
        config.policy.source(),
        types.join(", ")
    );
    let _ = writeln!(
        out,
        "data key:   {} ({}); retention: bodies {}/{} days (delivered/acknowledged), undelivered {}, consents {} after their end, audit {}",
        config.data_key.id_hex(),
        crate::seal::ALGORITHM,
        config.retention.delivered_body.num_days(),
        config.retention.acknowledged_body.num_days(),
        config.retention.undelivered_body.num_days(),
        config.retention.consent_after_end.num_days(),
        config.retention.audit.num_days()
    );
    revocation(&mut out, config);
    let store = &config.store_dir;
    if store.join("db").exists() {
        let _ = writeln!(
            out,
            "store:      {} ({})",
            store.display(),
            human_bytes(crate::metrics::dir_size(store))
        );
    } else {
        let _ = writeln!(
            out,
            "store:      {} (no store yet: serve creates it)",
            store.display()
        );
    }
    out
}

/// The revocation lists in force and how fetching each URL's went.
fn revocation(out: &mut String, config: &Config) {
    let crls = &config.crls;
    if crls.is_empty() {
        let _ = writeln!(
            out,
            "revocation: none configured (tls.crls, tls.crl_urls): revoked certificates are not refused"
        );
        return;
    }
    let now = chrono::Utc::now();
    let day = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    let states = crls.states();
    let _ = writeln!(out, "revocation lists ({}):", states.len());
    for s in &states {
        let next = s.next_update.map(day).unwrap_or_else(|| "-".into());
        let stale = if s.next_update.is_some_and(|n| n < now) {
            "  STALE"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {}\n    issuer {}; thisUpdate {}, nextUpdate {next}; {} revoked{stale}",
            s.source,
            s.issuer,
            day(s.this_update),
            s.revoked
        );
    }
    for f in crls.fetches() {
        let fetched = match (&f.last_error, f.last_fetch) {
            (Some(e), Some(at)) => format!("fetch at {} FAILED: {e}", day(at)),
            (Some(e), None) => format!("FAILED: {e}"),
            (None, Some(at)) => format!("fetched at {}", day(at)),
            (None, None) => "not fetched".into(),
        };
        let cache = if f.from_cache {
            "in force from the cache"
        } else if f.cache.exists() {
            "cached"
        } else {
            "no cached copy"
        };
        let _ = writeln!(
            out,
            "  url {}: {fetched}; {cache} ({})",
            f.url,
            f.cache.display()
        );
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
