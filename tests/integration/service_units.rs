//! The systemd service units in `config/systemd/`: the hardening they promise, and
//! `systemd-analyze verify` on them (with the built binary put in for `ExecStart`)
//! where systemd is installed.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_wijkpoort");

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/systemd");
    let names = ["wijkpoort-practice.service", "wijkpoort-wijkteam.service"];
    for name in names {
        let text = std::fs::read_to_string(units.join(name)).unwrap();
        for needed in [
            "User=wijkpoort",
            "Type=exec",
            "Restart=on-failure",
            "RestartPreventExitStatus=64",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "UMask=0077",
            "LimitNOFILE=",
            "ReadWritePaths=/var/lib/wijkpoort/",
            "CapabilityBoundingSet=\n",
            "SystemCallFilter=@system-service",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "check-config --config",
        ] {
            assert!(text.contains(needed), "{name} lacks {needed:?}");
        }
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed (Debian's `systemd` package): skipping `systemd-analyze verify`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        let text = std::fs::read_to_string(units.join(name))
            .unwrap()
            .replace("/usr/local/bin/wijkpoort", BIN);
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(names.iter().map(|n| dir.path().join(n)))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify:\n{said}");
    // verify warns without failing on some mistakes: none about our units.
    for name in names {
        assert!(
            !said.contains(name),
            "systemd-analyze verify has something to say:\n{said}"
        );
    }
}
