//! The listeners hold under floods, slow clients, full disks and hostile peers: the
//! `[limits]` section's caps and timeouts, refusing a stranger before its body is read,
//! a bounded audit log under a flood of bare connects, the disk reserve, and a store
//! that fails (a full disk at the commit point, a committer panic) stopping the gateway
//! with nothing accepted lost.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use wijkpoort::audit::Event;
use wijkpoort::dev::pki::LeafSpec;

use crate::util::*;

/// Appends a `[limits]` section to `role`'s config file.
fn set_limits(setup: &Setup, role: Role, limits: &str) {
    let path = setup.config_path(role);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n[limits]\n");
    text.push_str(limits);
    std::fs::write(&path, text).unwrap();
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// A TLS 1.3 connection to a gateway's listener presenting `client`.
async fn tls_connect(setup: &Setup, to: SocketAddr, client: &Credentials) -> TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(setup.anchors_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(client.cert_der())],
            PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(to).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// How long until the server closes `stream` (a read that ends or fails), while
/// `trickle` (if any) is written every 100 ms; `None` if not within [`WAIT`].
async fn time_until_closed<S>(mut stream: S, trickle: Option<&[u8]>) -> Option<Duration>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while started.elapsed() < WAIT {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Some(started.elapsed()),
                Ok(_) => {} // an answer (a 408) before the close
            },
            _ = tick.tick() => {
                if let Some(bytes) = trickle {
                    if stream.write_all(bytes).await.is_err() || stream.flush().await.is_err() {
                        return Some(started.elapsed());
                    }
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_and_silent_clients_are_closed_within_the_configured_timeouts() {
    let mut setup = Setup::new().await;
    set_limits(
        &setup,
        Role::Wijkteam,
        "handshake_timeout_ms = 500\nheader_read_timeout_ms = 500\nidle_timeout_ms = 500\n",
    );
    let wijkteam = setup.start(Role::Wijkteam).await;
    let addr = setup.listener_addr(Role::Wijkteam);
    let practice = setup.credentials(Role::Practice);

    // Silent before TLS: the handshake timeout.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let silent_tcp = time_until_closed(tcp, None).await.expect("closed");
    // Silent after the handshake, with a peer's certificate: the idle timeout.
    let tls = tls_connect(&setup, addr, &practice).await;
    let silent_tls = time_until_closed(tls, None).await.expect("closed");
    // Slowloris with a peer's certificate: a request head, one header line at a time.
    let mut tls = tls_connect(&setup, addr, &practice).await;
    tls.write_all(b"POST /v1/relay/batch HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let slowloris = time_until_closed(tls, Some(b"X-Slow: 1\r\n"))
        .await
        .expect("closed");

    eprintln!("closed after: silent TCP {silent_tcp:?}, silent TLS {silent_tls:?}, slowloris {slowloris:?}");
    for (what, took) in [
        ("silent TCP", silent_tcp),
        ("silent TLS", silent_tls),
        ("slowloris", slowloris),
    ] {
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(2_000),
            "{what} closed after {took:?} (limit 500 ms)"
        );
    }
    // The silent TCP client could not be identified: its refusal is audited.
    wait_for_refusal(store(&wijkteam), Event::CertificateRefused, "timed out").await;
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_unidentified_cap_full_a_peer_and_the_local_api_are_still_served() {
    let mut setup = Setup::new().await;
    set_limits(
        &setup,
        Role::Wijkteam,
        "max_connections = 64\nmax_unidentified = 16\nmax_unidentified_per_source = 8\n\
         handshakes_per_sec = 100\nhandshake_burst = 20\nhandshake_timeout_ms = 30000\n",
    );
    let wijkteam = setup.start(Role::Wijkteam).await;
    let addr = setup.listener_addr(Role::Wijkteam);

    // 120 idle clients from four other loopback addresses: more than the
    // unidentified cap (16), so the oldest are closed as new ones come.
    let started = Instant::now();
    let mut idle = Vec::new();
    for i in 0..120u8 {
        let from = IpAddr::from([127, 0, 0, 2 + i % 4]);
        idle.push(connect_from(from, addr).await.unwrap());
    }
    let accepts = |gw: &wijkpoort::RunningGateway| gw.stats()["accepts_in"].as_u64().unwrap();
    wait_until("the idle clients to be accepted", || {
        let n = accepts(&wijkteam);
        async move { (n >= 120).then_some(()) }
    })
    .await;
    let took = started.elapsed();
    // Rate limited: after the burst of 20, 100 accepts a second.
    let rate = (accepts(&wijkteam) - 20) as f64 / took.as_secs_f64();
    eprintln!("120 idle clients accepted in {took:?}: {rate:.0} accepts/s after the burst");
    assert!(
        took >= Duration::from_millis(900),
        "accepted in {took:?}: not rate limited"
    );

    // The cap is full of idle clients; a peer's request and the local API are served.
    let t = Instant::now();
    let answer = relay_signed(
        &setup,
        Role::Wijkteam,
        &setup.credentials(Role::Practice),
        &referral_envelope("ref-under-flood").to_bytes(),
    )
    .await
    .unwrap();
    let peer_latency = t.elapsed();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let t = Instant::now();
    let (code, _) = setup
        .client(Role::Wijkteam, "health")
        .get("/healthz")
        .await
        .unwrap();
    let api_latency = t.elapsed();
    assert_eq!(code, 200);
    eprintln!("with the unidentified cap full: peer relay {peer_latency:?}, local API /healthz {api_latency:?}");
    assert!(peer_latency < Duration::from_secs(3), "{peer_latency:?}");
    assert_eq!(
        accepts(&wijkteam),
        121,
        "one accept for the peer, no spinning"
    );
    drop(idle);
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_bare_connects_add_a_bounded_number_of_audit_records() {
    let mut setup = Setup::new().await;
    set_limits(
        &setup,
        Role::Wijkteam,
        "handshakes_per_sec = 20000\nhandshake_burst = 5000\n",
    );
    let wijkteam = setup.start(Role::Wijkteam).await;
    let addr = setup.listener_addr(Role::Wijkteam);
    let before = audit_records(store(&wijkteam)).len();

    let started = Instant::now();
    for _ in 0..5_000 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        drop(tcp);
    }
    wait_until("5,000 accepts", || {
        let n = wijkteam.stats()["accepts_in"].as_u64().unwrap();
        async move { (n >= 5_000).then_some(()) }
    })
    .await;
    let took = started.elapsed();
    let live = wijkteam.store().clone();
    wijkteam.stop().await.unwrap(); // the last summary is written at the stop
    let records = audit_records(&live);
    let added = records.len() - before;
    let refusals: Vec<_> = records[before..]
        .iter()
        .filter(|r| r.event.event == Event::CertificateRefused)
        .collect();
    for r in &refusals {
        eprintln!("  {}", r.event.reason.as_deref().unwrap_or_default());
    }
    eprintln!(
        "5,000 bare connects in {took:?}: {added} audit records added ({} refusals)",
        refusals.len()
    );
    assert!(!refusals.is_empty(), "the refusals are audited");
    assert!(added <= 20, "{added} records for 5,000 connects");
    let summarised: u64 = refusals
        .iter()
        .filter_map(|r| {
            let reason = r.event.reason.as_deref()?;
            let n = reason.split("(summary: ").nth(1)?.split(' ').next()?;
            n.parse::<u64>().ok()
        })
        .sum();
    assert!(
        summarised + refusals.len() as u64 >= 4_900,
        "the summaries count the refusals: {summarised}"
    );
    drop(live);

    // The chain is intact.
    let config = setup.config_path(Role::Wijkteam);
    let out = retry_open(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_wijkpoort"))
            .args(["audit", "--config"])
            .arg(&config)
            .arg("verify")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        if text.contains("in use") {
            Err("locked".to_string())
        } else {
            Ok(out)
        }
    });
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends a batch's request head announcing `length` bytes and only its first KiB, and
/// returns the answer (which must come without the rest of the body).
async fn announce_batch(setup: &Setup, client: &Credentials, length: usize) -> String {
    let mut tls = tls_connect(setup, setup.listener_addr(Role::Wijkteam), client).await;
    let head = format!(
        "POST /v1/relay/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&[b' '; 1024]).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "no answer without the body: the listener read it"
    );
    String::from_utf8_lossy(&answer).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_batch_over_the_size_limit_is_refused_before_it_is_read() {
    let mut setup = Setup::new().await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let practice = setup.credentials(Role::Practice);
    let answer = announce_batch(&setup, &practice, wijkpoort::wire::MAX_BATCH_BYTES + 1).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("too_large"), "{answer}");
    let record = wait_for_refusal(store(&wijkteam), Event::MessageRefused, "too_large").await;
    assert_eq!(
        record.event.peer.as_deref(),
        Some(wijkpoort::dev::pki::DEV_PRACTICE_ID)
    );
    assert_nothing_stored(store(&wijkteam));
    wijkteam.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_peers_large_batch_is_refused_before_it_is_read() {
    let mut setup = Setup::new().await;
    let wijkteam = setup.start(Role::Wijkteam).await;
    let stranger = setup.issue(&LeafSpec::new(
        "90000999",
        "Huisartsenpraktijk Elders",
        "elders.test",
    ));
    // Announce a 7.9 MiB batch and send only its first KiB: a listener that read the
    // body would wait for the rest.
    let answer = announce_batch(&setup, &stranger, 8_280_000).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("unknown_peer"), "{answer}");
    assert!(
        answer.to_lowercase().contains("connection: close"),
        "{answer}"
    );
    let refusals = audit_records(store(&wijkteam))
        .into_iter()
        .filter(|r| r.event.peer.as_deref() == Some("90000999"))
        .count();
    assert_eq!(refusals, 1, "one record for the refused batch");
    assert_nothing_stored(store(&wijkteam));
    wijkteam.stop().await.unwrap();
}

/// A referral the practice accepts; `None` when the gateway answers otherwise.
async fn try_submit(
    his: &mut wijkpoort::client::LocalApiClient,
    consent: &str,
) -> Result<String, (u16, String)> {
    match his
        .post("/v1/messages", &referral_submission(consent))
        .await
    {
        Ok((202, answer)) => Ok(answer["id"].as_str().unwrap().to_string()),
        Ok((code, answer)) => Err((
            code,
            answer["error"].as_str().unwrap_or_default().to_string(),
        )),
        Err(e) => Err((0, e)),
    }
}

/// Asserts that every id in `accepted` is in the stopped practice's store.
fn assert_all_kept(setup: &Setup, accepted: &[String]) {
    let config = setup.config(Role::Practice);
    let store = retry_open(|| {
        wijkpoort::store::Store::open(
            &config.store_dir,
            config.signer.clone(),
            config.data_key.clone(),
        )
    });
    for id in accepted {
        assert!(
            wijkpoort::outbox::get(&store, id).unwrap().is_some(),
            "accepted message {id} was lost"
        );
    }
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_disk_reserve_submissions_get_503_reads_go_on_and_space_freed_accepts_again() {
    let mut setup = Setup::new().await;
    set_limits(&setup, Role::Practice, "disk_reserve_mb = 64\n");
    let free = setup.dir.path().join("free-bytes");
    std::fs::write(&free, (1u64 << 40).to_string()).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_wijkpoort"));
    command
        .arg("serve")
        .arg("--config")
        .arg(setup.config_path(Role::Practice))
        .env("WIJKPOORT_FAULT_FREE_BYTES_FILE", &free);
    let mut practice = setup.spawn_command(Role::Practice, 1, command).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let first = try_submit(&mut his, &consent).await.unwrap();

    std::fs::write(&free, (10u64 << 20).to_string()).unwrap(); // 10 MiB left
    assert_eq!(
        try_submit(&mut his, &consent).await,
        Err((503, "disk_full".to_string()))
    );
    let (code, status) = his.get(&format!("/v1/messages/{first}")).await.unwrap();
    assert_eq!(code, 200, "reads go on: {status}");
    let (code, health) = his.get("/healthz").await.unwrap();
    assert_eq!(
        (code, &health["accepting"]),
        (200, &serde_json::json!(false))
    );

    std::fs::write(&free, (1u64 << 40).to_string()).unwrap();
    let again = try_submit(&mut his, &consent).await.unwrap();
    practice.signal("TERM");
    assert!(practice.wait_exit().await.success(), "{}", practice.log());
    assert_all_kept(&setup, &[first, again]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_error_at_the_commit_point_stops_the_gateway_and_nothing_accepted_is_lost() {
    let mut setup = Setup::new().await;
    // A file-size limit with SIGXFSZ ignored: writes past it fail with EFBIG, as on a
    // full disk. sled's log grows with every commit until it hits the limit.
    let command_line = format!(
        "trap '' XFSZ; ulimit -f 4096; exec '{}' serve --config '{}'",
        env!("CARGO_BIN_EXE_wijkpoort"),
        setup.config_path(Role::Practice).display()
    );
    let mut command = Command::new("sh");
    command.arg("-c").arg(command_line);
    let mut practice = setup.spawn_command(Role::Practice, 1, command).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let mut accepted = Vec::new();
    let refused = loop {
        match try_submit(&mut his, &consent).await {
            Ok(id) => accepted.push(id),
            Err(e) => break e,
        }
        assert!(
            accepted.len() < 20_000,
            "the file-size limit was never reached"
        );
    };
    let status = practice.wait_exit().await;
    eprintln!(
        "{} referrals accepted before the write error; then {refused:?}; exit {status}",
        accepted.len()
    );
    assert!(!status.success(), "{}", practice.log());
    assert!(
        practice.log().contains("the store failed"),
        "{}",
        practice.log()
    );
    assert_all_kept(&setup, &accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committer_panic_stops_the_gateway_health_says_so_and_nothing_accepted_is_lost() {
    let mut setup = Setup::new().await;
    let mut command = Command::new(env!("CARGO_BIN_EXE_wijkpoort"));
    command
        .arg("serve")
        .arg("--config")
        .arg(setup.config_path(Role::Practice))
        .env("WIJKPOORT_FAULT_COMMIT_PANIC_AFTER", "8");
    let mut practice = setup.spawn_command(Role::Practice, 1, command).await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let mut accepted = Vec::new();
    let refused = loop {
        match try_submit(&mut his, &consent).await {
            Ok(id) => accepted.push(id),
            Err(e) => break e,
        }
        assert!(accepted.len() < 100, "the fault hook never fired");
    };
    assert_eq!(refused.0, 503, "{refused:?}");
    // Until it has exited, health says the store failed.
    // (An error is a gateway already gone.)
    if let Ok((code, health)) = his.get("/healthz").await {
        assert_eq!(
            (code, health["status"].as_str()),
            (503, Some("store_failed"))
        );
    }
    let status = practice.wait_exit().await;
    assert!(!status.success(), "{}", practice.log());
    assert!(practice.log().contains("committer"), "{}", practice.log());
    assert_all_kept(&setup, &accepted);
}

/// Points the wijkteam at a revocation list of the test CA that revokes `revoked`.
fn revoke_at_wijkteam(setup: &Setup, revoked: &Credentials) {
    let now = chrono::Utc::now();
    let crl = setup
        .trusted_ca
        .crl(
            &[&revoked.cert_der()],
            now - chrono::Duration::hours(1),
            now + chrono::Duration::days(1),
        )
        .unwrap();
    std::fs::write(setup.kit.dir.join("test-ca.crl.pem"), crl).unwrap();
    let path = setup.config_path(Role::Wijkteam);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "trust_anchors = \"ca.pem\"",
        "trust_anchors = \"ca.pem\"\ncrls = [\"test-ca.crl.pem\"]",
    );
    std::fs::write(&path, text).unwrap();
}

/// Tries a relayed batch with `client`'s certificate; the handshake must be refused.
async fn refused_in_the_handshake(setup: &Setup, client: &Credentials, id: &str) {
    let bytes = referral_envelope(id).to_bytes();
    let sig = sign(&client.key_pem, &bytes);
    let answer = relay(
        setup.listener_addr(Role::Wijkteam),
        &setup.anchors_pem(),
        Some(client),
        Some(&sig),
        bytes,
    )
    .await;
    assert!(answer.is_err(), "{id}: {answer:?}");
}

fn serial_of(c: &Credentials) -> String {
    let der = c.cert_der();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.raw_serial_as_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_and_an_expired_peer_refused_in_the_handshake_each_get_a_record_by_name() {
    use wijkpoort::dev::pki::DEV_PRACTICE_ID;
    let mut setup = Setup::new().await;
    let revoked = setup.issue(&practice_spec());
    let mut expired_spec = practice_spec();
    expired_spec.not_before = chrono::Utc::now() - chrono::Duration::days(400);
    expired_spec.not_after = chrono::Utc::now() - chrono::Duration::days(2);
    let expired = setup.issue(&expired_spec);
    // The same organisation's identifier in certificates anyone could make: one from an
    // untrusted CA, and an expired one from it (rustls checks the dates first).
    let untrusted_ca = wijkpoort::dev::pki::Authority::new("not trusted").unwrap();
    let forged = |spec: &LeafSpec| {
        let issued = untrusted_ca.issue(spec).unwrap();
        Credentials {
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        }
    };
    let untrusted = forged(&practice_spec());
    let forged_expired = forged(&expired_spec);
    revoke_at_wijkteam(&setup, &revoked);
    // One summary interval for the whole test, however slow the machine.
    set_limits(
        &setup,
        Role::Wijkteam,
        "audit_summary_interval_ms = 600000\n",
    );
    let wijkteam = setup.start(Role::Wijkteam).await;

    refused_in_the_handshake(&setup, &revoked, "ref-revoked").await;
    refused_in_the_handshake(&setup, &expired, "ref-expired").await;
    refused_in_the_handshake(&setup, &untrusted, "ref-untrusted").await;
    refused_in_the_handshake(&setup, &forged_expired, "ref-forged").await;
    let by_serial = |c: &Credentials| {
        let serial = serial_of(c);
        move |r: &wijkpoort::audit::AuditRecord| {
            r.event.event == Event::CertificateRefused
                && matches!(&r.event.actor,
                    wijkpoort::audit::Actor::Peer { certificate_serial, .. } if *certificate_serial == serial)
        }
    };
    let on_revoked =
        wait_for_audit(store(&wijkteam), "the revoked peer", by_serial(&revoked)).await;
    let on_expired =
        wait_for_audit(store(&wijkteam), "the expired peer", by_serial(&expired)).await;
    for (record, why) in [
        (&on_revoked, "the certificate is revoked"),
        (&on_expired, "the certificate has expired"),
    ] {
        assert_eq!(record.event.peer.as_deref(), Some(DEV_PRACTICE_ID));
        let reason = record.event.reason.as_deref().unwrap();
        assert!(reason.starts_with("TLS handshake refused: "), "{reason}");
        assert!(reason.contains(why), "{reason}");
    }
    // The untrusted and forged certificates are no organisation's: they are summarised
    // by address, never recorded under the practice's name.
    wait_for_refusal(store(&wijkteam), Event::CertificateRefused, "UnknownIssuer").await;

    // A replayed revoked certificate (rustls refuses it before the client proves it
    // holds the key) adds no record per attempt: the repeats are counted.
    for i in 0..20 {
        refused_in_the_handshake(&setup, &revoked, &format!("ref-replay-{i}")).await;
    }
    let live = wijkteam.store().clone();
    wijkteam.stop().await.unwrap(); // writes the interval's summaries
    let records = audit_records(&live);
    let named: Vec<_> = records
        .iter()
        .filter(|r| r.event.peer.as_deref() == Some(DEV_PRACTICE_ID))
        .collect();
    for r in &named {
        eprintln!(
            "  {:?}: {}",
            r.event.actor,
            r.event.reason.as_deref().unwrap_or_default()
        );
    }
    let revoked_records = records.iter().filter(|r| by_serial(&revoked)(r)).count();
    assert_eq!(
        revoked_records, 2,
        "one record, one summary of the 20 repeats"
    );
    assert_eq!(records.iter().filter(|r| by_serial(&expired)(r)).count(), 1);
    assert_eq!(
        named.len(),
        3,
        "only the trusted CA's certificates are named"
    );
    assert!(records.iter().any(|r| r
        .event
        .reason
        .as_deref()
        .is_some_and(|x| x.contains("summary: 20 more within 600 s"))));
    drop(live);

    // `audit records` shows each by organisation, serial and reason.
    let config = setup.config_path(Role::Wijkteam);
    let out = retry_open(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_wijkpoort"))
            .args(["audit", "--config"])
            .arg(&config)
            .args(["records", "--event", "certificate_refused"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if text.contains("in use") {
            Err("locked".to_string())
        } else {
            Ok(text)
        }
    });
    for c in [&revoked, &expired] {
        let serial = serial_of(c);
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("peer {DEV_PRACTICE_ID}"))
                    && l.contains(&serial)
                    && l.contains("TLS handshake refused")),
            "{serial} not in:\n{out}"
        );
    }
}

/// The mTLS listener's accepts and failed accepts, from `/v1/stats`.
async fn counts(ops: &mut wijkpoort::client::LocalApiClient, gw: &ChildGateway) -> (u64, u64) {
    let (code, stats) = ops
        .get("/v1/stats")
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", gw.log()));
    assert_eq!(code, 200, "{stats}");
    (
        stats["accepts_in"].as_u64().unwrap(),
        stats["accept_failures_in"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_accept_loop_backs_off_logs_once_and_recovers() {
    const BACKING_OFF: &str = "accept failed; backing off";
    let mut setup = Setup::new().await;
    // Caps that claim the whole descriptor limit (no reserve), so that idle connections
    // can run the process out of descriptors before the connection cap stops accepting.
    set_limits(
        &setup,
        Role::Wijkteam,
        "max_connections = 248\nmax_unidentified = 247\nmax_unidentified_per_source = 247\n\
         local_api_max_connections = 8\nfd_reserve = 0\n\
         handshakes_per_sec = 10000\nhandshake_burst = 1000\nhandshake_timeout_ms = 120000\n",
    );
    let command_line = format!(
        "ulimit -n 256; exec '{}' serve --config '{}'",
        env!("CARGO_BIN_EXE_wijkpoort"),
        setup.config_path(Role::Wijkteam).display()
    );
    let mut command = Command::new("sh");
    command.arg("-c").arg(command_line);
    let mut wijkteam = setup.spawn_command(Role::Wijkteam, 1, command).await;
    let addr = setup.listener_addr(Role::Wijkteam);
    // A kept-alive local API connection, opened now: it needs no accept later.
    let mut ops = setup.client(Role::Wijkteam, "ops");
    assert_eq!(counts(&mut ops, &wijkteam).await, (0, 0));

    // Idle connections, ten at a time, until an accept fails.
    let mut idle = Vec::new();
    loop {
        for _ in 0..10 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let opened = idle.len() as u64;
        let (accepted, failed) = {
            let started = Instant::now();
            loop {
                let (a, f) = counts(&mut ops, &wijkteam).await;
                if a >= opened || f > 0 {
                    break (a, f);
                }
                assert!(started.elapsed() < WAIT, "{a} of {opened} accepted");
                tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
            }
        };
        if failed > 0 {
            eprintln!("out of descriptors after {accepted} accepted connections ({opened} opened)");
            break;
        }
        assert!(
            idle.len() < 300,
            "no accept failed with {} connections open:\n{}",
            idle.len(),
            wijkteam.log()
        );
    }

    // While out of descriptors: a bounded number of accept attempts a second.
    let (_, f0) = counts(&mut ops, &wijkteam).await;
    let t0 = Instant::now();
    let f1 = loop {
        let (_, f) = counts(&mut ops, &wijkteam).await;
        if f >= f0 + 10 {
            break f;
        }
        assert!(t0.elapsed() < WAIT, "{} failed accepts in {WAIT:?}", f - f0);
        tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
    };
    let took = t0.elapsed();
    let rate = (f1 - f0) as f64 / took.as_secs_f64();
    eprintln!("{} failed accepts in {took:?}: {rate:.1} a second", f1 - f0);
    assert!(rate < 15.0, "{rate:.1} failed accepts a second: spinning");
    assert_eq!(
        wijkteam.log().matches(BACKING_OFF).count(),
        1,
        "logged once per episode:\n{}",
        wijkteam.log()
    );

    // Still out of descriptors, the store commits: a malformed submission's refusal is
    // audited before it is answered (a failed commit would answer 503). The commit
    // point once listed sled's blob directory anew at every commit, so it failed here
    // with EMFILE and stopped the gateway.
    let audited = |stats: &serde_json::Value| stats["audit_records"].as_u64().unwrap();
    let (_, stats) = ops.get("/v1/stats").await.unwrap();
    let before = audited(&stats);
    let (code, refused) = ops
        .post("/v1/messages", &serde_json::json!({}))
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", wijkteam.log()));
    assert_eq!(code, 400, "{refused}:\n{}", wijkteam.log());
    let (_, stats) = ops.get("/v1/stats").await.unwrap();
    assert!(audited(&stats) > before, "the refusal is audited");
    assert!(
        wijkteam.child.try_wait().unwrap().is_none(),
        "{}",
        wijkteam.log()
    );

    // The clients close: it accepts again, says so once, and a peer is served.
    drop(idle);
    wait_until("accepting again", || {
        let log = wijkteam.log();
        async move { log.contains("accepting connections again").then_some(()) }
    })
    .await;
    let t = Instant::now();
    let answer = relay_signed(
        &setup,
        Role::Wijkteam,
        &setup.credentials(Role::Practice),
        &referral_envelope("ref-after-emfile").to_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    eprintln!(
        "a peer's relayed batch after the episode: {:?}",
        t.elapsed()
    );
    let log = wijkteam.log();
    assert_eq!(log.matches(BACKING_OFF).count(), 1, "{log}");
    let again = log
        .lines()
        .find(|l| l.contains("accepting connections again"))
        .unwrap();
    eprintln!("{again}");
    wijkteam.signal("TERM");
    assert!(wijkteam.wait_exit().await.success(), "{}", wijkteam.log());
}
