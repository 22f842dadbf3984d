//! The audit log's figures: append rate through the real commit point (group commit,
//! fdatasync), verify rate in records/s, and a query by child over a large log.
//!
//! `cargo bench --bench audit` (set `WIJKPOORT_BENCH_RECORDS` for another log size than
//! 1,000,000). The large log is built through the same committer (jobs of 1,000 audit
//! records, durability off for the build only); every record names one of 10,000
//! children, so a child has about 100 records, spread over the whole log.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use wijkpoort::audit::query::{self, RecordQuery};
use wijkpoort::audit::{verify, Actor, AuditEvent, Event, Outcome, Pseudonymiser};
use wijkpoort::message::{Bsn, MessageType};
use wijkpoort::signing::Signer;
use wijkpoort::store::{Durability, Store};

const CHILDREN: u64 = 10_000;

/// The n-th fictitious BSN that passes the elfproef.
fn bsn(n: u64) -> Bsn {
    let mut base = 100_000_000 + n * 37;
    loop {
        let s = format!("{base:09}");
        if let Ok(b) = Bsn::try_from(s) {
            return b;
        }
        base += 1;
    }
}

fn event(i: u64, subject: &str) -> AuditEvent {
    AuditEvent::new(
        Event::MessageDelivered,
        Outcome::Success,
        Actor::User {
            id: "dr.jansen".into(),
        },
    )
    .on_behalf_of("90000123")
    .message(&format!("msg-{i:010}"), MessageType::Referral)
    .subject(Some(subject.to_string()))
    .peer("00000001003214345000")
    .consent(Some("consent-1"))
}

fn rate(n: u64, d: Duration) -> String {
    format!("{:.0}/s", n as f64 / d.as_secs_f64())
}

fn signer_and_cert(dir: &Path) -> (Arc<Signer>, Vec<u8>) {
    let pki = wijkpoort::dev::pki::write_dev_pki(dir).expect("dev PKI");
    let key = PrivateKeyDer::from_pem_file(pki.key("practice")).expect("key");
    let PrivateKeyDer::Pkcs8(k) = key else {
        panic!("dev keys are PKCS#8")
    };
    let signer = Signer::from_pkcs8(k.secret_pkcs8_der()).expect("signer");
    let cert = CertificateDer::pem_file_iter(pki.cert("practice"))
        .expect("cert")
        .next()
        .expect("one cert")
        .expect("pem")
        .to_vec();
    (Arc::new(signer), cert)
}

fn main() {
    let total: u64 = std::env::var("WIJKPOORT_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (signer, cert) = signer_and_cert(tmp.path());
    let pseudonymiser = Pseudonymiser::new(b"bench secret, 32 bytes or more....");
    let children: Vec<String> = (0..CHILDREN)
        .map(|n| pseudonymiser.pseudonym(&bsn(n)))
        .collect();

    println!("wijkpoort audit benchmark ({total} records)");

    // 1. Append through the commit point, durable: 64 writers, one record per commit.
    runtime.block_on(async {
        let dir = tmp.path().join("append");
        let store = Store::open(&dir, signer.clone(), data_key()).expect("store");
        let n: u64 = 20_000;
        let writers = 64;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store = store.clone();
            let children = children.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..n).step_by(writers as usize) {
                    let subject = &children[(i % CHILDREN) as usize];
                    store
                        .commit_audit(vec![event(i, subject)])
                        .await
                        .expect("commit");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        let took = started.elapsed();
        let syncs = store
            .stats()
            .syncs
            .load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "append, durable, {writers} writers, 1 record/commit: {n} records in {:.2} s = {} ({syncs} fdatasyncs)",
            took.as_secs_f64(),
            rate(n, took)
        );
        store.close();
    });

    // 2. Build the large log: jobs of 1,000 records through the same committer.
    let dir = tmp.path().join("large");
    runtime.block_on(async {
        let store =
            Store::open_with(&dir, signer.clone(), data_key(), Durability::Off).expect("store");
        let started = Instant::now();
        let mut i = 0u64;
        while i < total {
            let batch: Vec<AuditEvent> = (i..(i + 1000).min(total))
                .map(|j| event(j, &children[(j % CHILDREN) as usize]))
                .collect();
            i += batch.len() as u64;
            store.commit_audit(batch).await.expect("commit");
        }
        let took = started.elapsed();
        println!(
            "append, batched (1,000 records/commit, no fdatasync): {total} records in {:.1} s = {}",
            took.as_secs_f64(),
            rate(total, took)
        );
        let store2 = store.clone();
        tokio::task::spawn_blocking(move || store2.close())
            .await
            .expect("close");
    });
    let size: u64 = walk_size(&dir);
    println!("store size: {:.0} MiB", size as f64 / (1024.0 * 1024.0));

    // 3. Verify the whole log.
    let store = Store::open_read_only(&dir).expect("read-only store");
    let started = Instant::now();
    let report = verify::verify(&store, &cert, None).expect("verify");
    let took = started.elapsed();
    assert!(report.intact(), "{report:?}");
    println!(
        "verify: {} records, {} checkpoints in {:.1} s = {}",
        report.records,
        report.checkpoints,
        took.as_secs_f64(),
        rate(report.records, took)
    );

    // 4. Query by child (index audit_by_subject), 100 different children.
    let mut times = Vec::new();
    let mut found = 0usize;
    for c in (0..CHILDREN).step_by((CHILDREN / 100) as usize) {
        let q = RecordQuery {
            subject: Some(children[c as usize].clone()),
            ..RecordQuery::default()
        };
        let started = Instant::now();
        let page = query::records(&store, &q).expect("query");
        times.push(started.elapsed());
        found += page.records.len();
    }
    times.sort();
    println!(
        "query by child: {} records per child on average; median {:.2} ms, max {:.2} ms (100 children)",
        found / times.len(),
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0
    );

    // 5. The access report of one child (records + consents).
    let started = Instant::now();
    let report = query::report(
        &store,
        &children[4242],
        None,
        None,
        chrono::Utc::now().date_naive(),
    )
    .expect("report");
    println!(
        "access report of one child: {} entries in {:.2} ms",
        report.entries.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
}

fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A fresh data key for a benchmark store.
fn data_key() -> std::sync::Arc<wijkpoort::seal::DataKey> {
    std::sync::Arc::new(wijkpoort::seal::DataKey::random().expect("a data key"))
}
