//! A configured interface that does not exist: `lbd run` in a lab node
//! whose config names `eth9` exits at once with an error naming the
//! interface, the node and the config file, and leaves nothing set up
//! (no pins, no nftables table, forwarding untouched).
//!
//! Needs root and lbd built next to this test. Fails, not skips, without
//! either.

use std::time::{Duration, Instant};

use lb_tests::lab::{Lab, ServiceConfig, bounds};

#[test]
fn lab_missing_interface() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_missing_interface must run as root"
    );
    let lab = Lab::datapath("mi", 1, 1).expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);
    let node = lab.lb_node_name(1);
    let service = ServiceConfig::tcp("web", lab.vip(), 80, lab.backend_configs(80, &[]));
    let mut config = lab.lbd_config(vec![service]);
    config.nodes.get_mut(&node).expect("lb1's node").interface = "eth9".into();
    let path = lab.write_config("lbd.toml", &config).unwrap();

    let mut lbd = lab.start_lbd(1, &path).expect("lbd starts");
    let start = Instant::now();
    while lbd.check_running().is_ok() {
        assert!(
            start.elapsed() < bounds::AGENT_NOTICES,
            "lbd kept running {:?} without its interface",
            bounds::AGENT_NOTICES
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = lbd.log();
    println!("lbd said: {}", log.trim());
    let wanted = format!(
        "interface eth9 (`interface` of [node.{node}] in {}) does not exist",
        path.display()
    );
    assert!(log.contains(&wanted), "{log}");
    assert!(!pin_dir.exists(), "pins were created");
    let tables = lab.exec_in("lb1", &["nft", "list", "tables"]).unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout).to_string();
    assert!(
        !tables.contains("lbd_"),
        "an nftables table was made: {tables}"
    );
    let forwarding = lab
        .exec_in("lb1", &["sysctl", "-n", "net.ipv4.conf.eth0.forwarding"])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&forwarding.stdout).trim(), "0");

    drop(lbd);
    lab.teardown().expect("teardown");
    drop(lab);
    lb_tests::lab::assert_nothing_left(&prefix, &pin_dir);
}
