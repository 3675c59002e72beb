//! packaging/lbd.service passes `systemd-analyze verify` (the unit as
//! `cargo xtask install` writes it, with the binary path pointed at the lbd
//! built here, since verify checks that ExecStart= exists), and keeps the
//! settings the agent relies on.
//!
//! Needs systemd-analyze (Debian package systemd) and lbd built next to
//! this test. Fails, not skips, without.

use std::path::Path;
use std::process::Command;

use lb_tests::lab::binaries;

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/lbd.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn the_unit_verifies_clean() {
    let lbd = binaries::lbd().expect("lbd is built");
    let dir = std::env::temp_dir().join(format!("lb-unit-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("lbd.service");
    let text = unit_text().replace("/usr/local/sbin/lbd", lbd.to_str().unwrap());
    std::fs::write(&unit, text).unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let output = output.expect("systemd-analyze runs (Debian package systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify complained:\n{said}"
    );
}

#[test]
fn the_unit_keeps_what_the_agent_needs() {
    let text = unit_text();
    let settings: Vec<(&str, &str)> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .collect();
    let value = |key: &str| {
        settings
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(value("Type"), "notify");
    assert_eq!(value("NotifyAccess"), "main");
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert!(value("ExecStopPost").starts_with("/usr/local/sbin/lbd stop"));
    assert!(!value("WatchdogSec").is_empty());
    assert_eq!(value("ProtectSystem"), "strict");
    // /sys and /proc/sys are read-only, but the pins and the sysctls lbd
    // writes must stay writable; ProtectKernelTunables would make bpffs
    // read-only for good (ReadWritePaths cannot undo it: seen in the VM).
    assert_eq!(
        value("ProtectKernelTunables"),
        "",
        "it would make /sys/fs/bpf read-only"
    );
    let readonly = value("ReadOnlyPaths");
    for path in ["/sys", "/proc/sys"] {
        assert!(
            readonly.split_whitespace().any(|p| p == path),
            "{path} must be read-only"
        );
    }
    let writable = value("ReadWritePaths");
    for path in ["/sys/fs/bpf", "/proc/sys/net"] {
        assert!(
            writable.split_whitespace().any(|p| p == path),
            "{path} must stay writable"
        );
    }
    assert_eq!(
        value("RuntimeDirectory"),
        "lbd",
        "the control socket lives in /run/lbd"
    );
    assert_eq!(
        value("StateDirectory"),
        "lbd",
        "the state file lives in /var/lib/lbd"
    );
    let caps = value("CapabilityBoundingSet");
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_NET_RAW"] {
        assert!(caps.split_whitespace().any(|c| c == cap), "{cap} is needed");
    }
    assert!(
        !caps.contains("CAP_SYS_ADMIN"),
        "CAP_SYS_ADMIN is not needed (VM probe)"
    );
    for family in ["AF_NETLINK", "AF_INET", "AF_UNIX", "AF_PACKET"] {
        assert!(
            value("RestrictAddressFamilies").contains(family),
            "{family} is needed"
        );
    }
}
