//! The commands' answers on stdout when the reader stops early (`| head -1`, `| head -0`):
//! the command ends cleanly — exit 0, no panic, no error message — and what it had done
//! before printing stays done.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_wijkpoort");

/// Runs the binary with `args`, its stdout piped to a reader that takes `lines` lines
/// (0: none) and then closes the pipe; returns how it ended (stdout empty: it went to
/// the reader) and the lines read. Bounded: a process still running after two minutes
/// fails the test.
fn run_into_closing_reader(args: &[&str], lines: usize) -> (Output, Vec<String>) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut read = Vec::new();
    {
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        for _ in 0..lines {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            read.push(line);
        }
        // The reader goes away here, closing the pipe's read end.
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("wijkpoort {args:?} did not exit after its reader closed"))
        .unwrap();
    (out, read)
}

fn assert_clean(args: &[&str], out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.to_lowercase().contains("broken pipe"),
        "wijkpoort {args:?} on a closed stdout:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "wijkpoort {args:?}: {stderr}");
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_closes_stdout_early_ends_the_command_cleanly() {
    let (setup, practice, wijkteam) = pair().await;
    let mut his = setup.client(Role::Practice, "dr.jansen");
    let consent = record_consent(&mut his).await;
    let mut last = String::new();
    for _ in 0..40 {
        last = submit(&mut his, &referral_submission(&consent)).await;
    }
    wait_delivered(&mut his, &last).await;
    practice.stop().await.unwrap();
    wijkteam.stop().await.unwrap();
    let config = s(&setup.config_path(Role::Practice));

    tokio::task::spawn_blocking(move || {
        // `audit … export | head -1`: an answer far larger than a pipe holds (64 KiB),
        // so the write after the reader left fails.
        let export = ["audit", "--config", &config, "export", "--format", "fhir"];
        let whole = Command::new(BIN).args(export).output().unwrap();
        assert!(whole.status.success(), "{whole:?}");
        assert!(
            whole.stdout.len() > 256 * 1024,
            "the export is too small to fill the pipe: {} bytes",
            whole.stdout.len()
        );
        let (out, read) = run_into_closing_reader(&export, 1);
        assert_eq!(read, ["{\n"], "the first line of the export");
        assert_clean(&export, &out);

        // `store backup … | head -0`: nobody reads the summary, the backup is written.
        let backup_dir = tempfile::tempdir().unwrap();
        let backup = backup_dir.path().join("backup");
        let store = s(&setup.store_dir(Role::Practice));
        let backup_args = ["store", "backup", "--store", &store, "--out", &s(&backup)];
        let (out, _) = run_into_closing_reader(&backup_args, 0);
        assert_clean(&backup_args, &out);
        let verify = Command::new(BIN)
            .args([
                "audit",
                "--config",
                &config,
                "--store",
                &s(&backup),
                "verify",
            ])
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "the backup written behind a closed stdout does not verify: {verify:?}"
        );

        // `check-config | head -1` and `certs dev | head -0`, the other printing commands.
        let check = ["check-config", "--config", &config];
        let (out, read) = run_into_closing_reader(&check, 1);
        assert!(read[0].contains(": OK"), "{read:?}");
        assert_clean(&check, &out);
        let certs_dir = tempfile::tempdir().unwrap();
        let certs = ["certs", "dev", "--out", &s(&certs_dir.path().join("pki"))];
        let (out, _) = run_into_closing_reader(&certs, 0);
        assert_clean(&certs, &out);
        assert!(certs_dir.path().join("pki/ca.pem").exists());
    })
    .await
    .unwrap();
}
