//! The state file's faults in a single-node namespace lab: lbd on lb1
//! balancing a VIP over three backends.
//!
//! (a) a corrupt `/var/lib/lbd/<node>.state` at start: lbd serves anyway,
//!     the file is moved aside to `<node>.state.corrupt-<secs>` with a
//!     warning naming it, and a fresh state file is written;
//! (b) the state file cannot be written (a directory stands where its
//!     temp file goes: root ignores mode bits): `set-state be2 drain` is
//!     answered ok but says NOT SAVED, the drain is in effect (of 60 new
//!     client sources none reaches be2), and the file still holds the old
//!     state;
//! (c) once writable again, the next change is saved;
//! (d) nothing is left behind.
//!
//! Needs root and lbd built next to this test. Fails, not skips, without
//! either.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_tests::lab::{Lab, ServiceConfig, binaries};

const CLIENTS: usize = 60;

/// Removes what this test adds beside the state file, also on panic.
struct Leftovers(Vec<PathBuf>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
        }
    }
}

#[test]
fn lab_state_file() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_state_file must run as root"
    );
    let lab = Lab::datapath("sf", 3, CLIENTS).expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);
    let node = lab.lb_node_name(1);
    let state = Path::new("/var/lib/lbd").join(format!("{node}.state"));
    let tmp = state.with_extension("state.tmp");
    let mut leftovers = Leftovers(vec![tmp.clone()]);

    // (a) a corrupt state file.
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(&state, "{\"version\": 1, \"admin\": {\"web/be").unwrap();
    lab.start_backend_servers(80)
        .expect("backend servers start");
    let vip = SocketAddrV4::new(lab.vip(), 80);
    let service = ServiceConfig::tcp("web", lab.vip(), 80, lab.backend_configs(80, &[]));
    let config = lab
        .write_config("lbd.toml", &lab.lbd_config(vec![service]))
        .unwrap();
    let config_arg = config.display().to_string();
    let mut lbd = lab.start_lbd(1, &config).expect("lbd starts");
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers although the state file was corrupt");
    let log = lbd.log();
    let warning = log
        .lines()
        .find(|l| l.contains("is not a valid lbd state file") && l.contains("moved to"))
        .unwrap_or_else(|| panic!("no warning about the corrupt file:\n{log}"));
    println!("(a) {warning}");
    let aside: Vec<PathBuf> = std::fs::read_dir(state.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{node}.state.corrupt-"))
        })
        .collect();
    leftovers.0.extend(aside.iter().cloned());
    assert_eq!(aside.len(), 1, "one file set aside: {aside:?}");
    assert!(
        std::fs::read_to_string(&aside[0])
            .unwrap()
            .contains("\"web/be"),
        "the corrupt file is kept as it was"
    );
    let fresh = std::fs::read_to_string(&state).expect("a fresh state file");
    assert!(fresh.contains("\"version\": 1"), "{fresh}");

    // (b) unwritable: the change serves and says it is not saved.
    std::fs::create_dir(&tmp).unwrap();
    let out = set_state(&lab, "drain", &config_arg);
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    println!("(b) set-state drain with the state file unwritable: {said}");
    assert!(out.status.success(), "{said}");
    assert!(said.contains("NOT SAVED"), "{said}");
    assert!(
        !std::fs::read_to_string(&state).unwrap().contains("drain"),
        "the file kept the old state"
    );
    let report = lab.spread(vip, CLIENTS, 1, &[]).expect("spread runs");
    report.assert_all_ok_and_sticky(CLIENTS, "(b) be2 drained");
    let on_be2 = report.per_backend.get("be2").map_or(0, |t| t.connections);
    assert_eq!(on_be2, 0, "(b) the drain is in effect");
    lbd.check_running().expect("lbd still runs");

    // (c) writable again: the next change is saved.
    std::fs::remove_dir(&tmp).unwrap();
    let out = set_state(&lab, "maint", &config_arg);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && !said.contains("NOT SAVED"),
        "{said}"
    );
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains("\"web/be2\": \"maint\""), "{saved}");

    lbd.stop(Duration::from_secs(10)).expect("lbd stops");
    drop(lbd);
    lab.teardown().expect("teardown");
    drop(lab);
    drop(leftovers);
    lb_tests::lab::assert_nothing_left(&prefix, &pin_dir);
    assert!(!state.exists(), "state file left behind");
}

fn set_state(lab: &Lab, state: &str, config: &str) -> std::process::Output {
    let lbd = binaries::lbd().expect("lbd is built");
    let mut cmd = lab.command_in("lb1", &lbd).expect("lb1 exists");
    cmd.args(["backend", "set-state", "web/be2", state, "--config", config])
        .args(["--node", &lab.lb_node_name(1)])
        .stdin(std::process::Stdio::null());
    cmd.output().expect("lbd runs")
}
