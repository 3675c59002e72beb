//! The data path end to end in a namespace lab: lbd on lb1 balancing a VIP
//! over three weighted backends for 240 client addresses.
//!
//! (a) every connection completes and each source always reaches the same
//!     backend (source-hash persistence);
//! (b) the shares of sources per backend follow the weights within 3 sigma;
//! (c) 10,000 concurrent connections through the VIP: no failure, and each
//!     backend accepted exactly the connections the clients saw answered by
//!     it (no SNAT collision, nothing lost or doubled);
//! (d) a non-VIP connection to the LB node (ssh-like) works while the
//!     program is attached;
//! (e) after the lab nothing is left: no namespaces, no pins.
//!
//! Needs root and lbd built next to this test (`cargo build -p lb-userspace`
//! with the same profile; `cargo xtask test` does it). Fails, not skips,
//! without either.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use lb_tests::lab::{Lab, ServiceConfig, topology};

const WEIGHTS: [u32; 3] = [1, 2, 3];
const CLIENTS: usize = 240;
const PER_SOURCE: usize = 3;
const CONCURRENT: usize = 10_000;

#[test]
fn lab_datapath() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_datapath must run as root"
    );
    let lab = Lab::datapath("dp", WEIGHTS.len(), CLIENTS).expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);

    let servers = lab
        .start_backend_servers(80)
        .expect("backend servers start");
    let ssh_addr = SocketAddrV4::new(topology::lb_front_addr(1), 2222);
    lab.start_server("lb1", "ssh", SocketAddr::V4(ssh_addr), false)
        .expect("the ssh-like server on lb1 starts");

    let vip = SocketAddrV4::new(lab.vip(), 80);
    let service = ServiceConfig::tcp("web", lab.vip(), 80, lab.backend_configs(80, &WEIGHTS));
    let config = lab
        .write_config("lbd.toml", &lab.lbd_config(vec![service]))
        .unwrap();
    let mut lbd = lab.start_lbd(1, &config).expect("lbd starts");
    let ready = lab
        .wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers through lbd");
    println!("lbd answered on {vip} {ready:.2?} after start");
    assert!(
        pin_dir.exists(),
        "lbd pins nothing under {} (docs/architecture.md: /sys/fs/bpf/lb/<node>/v<layout>/)",
        pin_dir.display()
    );

    // (a) every connection completes; every source sticks to one backend.
    let spread = lab
        .spread(vip, CLIENTS, PER_SOURCE, &[])
        .expect("spread runs");
    println!(
        "(a) {} sources x {PER_SOURCE} connections: {} errors, {} ms",
        spread.per_source.len(),
        spread.errors,
        spread.elapsed_ms
    );
    assert_eq!(
        spread.errors, 0,
        "failed connections: {:?}",
        spread.error_samples
    );
    assert_eq!(spread.per_source.len(), CLIENTS);
    assert!(
        spread
            .per_source
            .values()
            .all(|names| names.len() == PER_SOURCE)
    );
    let wandering = spread.wandering_sources();
    assert!(
        wandering.is_empty(),
        "sources that changed backend: {wandering:?}"
    );

    // (b) sources per backend follow the weights (binomial, 3 sigma).
    let clients = spread.clients_per_backend();
    let total_weight: u32 = WEIGHTS.iter().sum();
    let n = CLIENTS as f64;
    println!("(b) backend  weight  clients  expected  sigma");
    let mut outside = Vec::new();
    for (i, weight) in WEIGHTS.iter().enumerate() {
        let name = format!("be{}", i + 1);
        let got = clients.get(&name).copied().unwrap_or(0) as f64;
        let p = f64::from(*weight) / f64::from(total_weight);
        let expected = n * p;
        let sigma = (n * p * (1.0 - p)).sqrt();
        println!("    {name:7}  {weight:6}  {got:7}  {expected:8.1}  {sigma:5.2}");
        if (got - expected).abs() > 3.0 * sigma {
            outside.push(format!(
                "{name}: {got} clients, expected {expected:.1} +- {:.1}",
                3.0 * sigma
            ));
        }
    }
    assert!(outside.is_empty(), "shares outside 3 sigma: {outside:?}");

    // (c) 10,000 concurrent connections, counted on both ends.
    let before: Vec<_> = servers
        .iter()
        .map(|s| lab.server_stats(s).unwrap())
        .collect();
    let hold = lab.hold(vip, CONCURRENT, &[]).expect("hold runs");
    let after: Vec<_> = servers
        .iter()
        .map(|s| lab.server_stats(s).unwrap())
        .collect();
    println!(
        "(c) {} of {} connections open together; connect {} ms, echo {} ms, total {} ms",
        hold.successes, hold.total, hold.connect_ms, hold.echo_ms, hold.elapsed_ms
    );
    let counters = lb_tests::lab::counters::read_pinned(&pin_dir);
    let reasons = match &counters {
        Ok(c) => format!("{:?}, flow table entries {}", c.reasons, c.flow_entries),
        Err(e) => format!("unreadable: {e:#}"),
    };
    println!("    data path reasons: {reasons}");
    assert_eq!(
        hold.successes, CONCURRENT as u64,
        "errors: {:?}; data path reasons: {reasons}",
        hold.error_samples
    );
    assert_eq!(hold.peak_open, CONCURRENT as u64);
    for ((server, b), a) in servers.iter().zip(&before).zip(&after) {
        let seen_by_clients = hold.per_backend.get(&server.name).copied().unwrap_or(0);
        let accepted = a.accepted - b.accepted;
        println!(
            "    {}: clients counted {seen_by_clients}, server accepted {accepted}, peak open {}",
            server.name, a.peak_open
        );
        assert_eq!(
            accepted, seen_by_clients,
            "{} accepted {accepted} connections but clients saw {seen_by_clients} answered by it",
            server.name
        );
        assert!(
            a.peak_open >= seen_by_clients,
            "{} never held all its connections",
            server.name
        );
    }
    assert_eq!(hold.per_backend.values().sum::<u64>(), CONCURRENT as u64);

    // (d) the LB node's own services still work while XDP is attached.
    let ssh = lab
        .spread(ssh_addr, 20, 1, &["--payload", "2000"])
        .expect("ssh-like spread runs");
    assert_eq!(
        ssh.errors, 0,
        "connections to the LB node failed: {:?}",
        ssh.error_samples
    );
    assert!(ssh.per_source.values().all(|names| names == &["ssh"]));
    println!("(d) 20 connections to {ssh_addr} on the LB node: all answered, payload echoed");

    lbd.check_running()
        .expect("lbd is still running after the tests");
    let stop = Instant::now();
    let status = lbd.stop(Duration::from_secs(10));
    println!("lbd stopped in {:.2?}: {status:?}", stop.elapsed());
    drop(lbd);
    // The pinned program keeps forwarding after the agent exits, by
    // design; `lbd stop --detach` removes it.
    let config_arg = config.to_string_lossy().into_owned();
    lab.lbd_command(1, &["stop", "--config", &config_arg, "--detach"])
        .expect("lbd stop --detach succeeds");
    let left = pins_under(&pin_dir);
    assert!(left.is_empty(), "lbd stop --detach left pins: {left:?}");

    // (e) nothing is left behind.
    lab.teardown().expect("teardown is clean");
    lb_tests::lab::assert_nothing_left(&prefix, &pin_dir);
    assert!(
        !Path::new(&format!("/run/lbd/{prefix}-lb1.sock")).exists(),
        "control socket left behind"
    );
    println!("(e) namespaces and pins of lab {prefix} are gone");
}

/// Files (pins) below `dir`, at any depth; empty directories do not count.
fn pins_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(pins_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// The configs the lab writes (one and two LB nodes, weights, persistence)
/// are what lbd accepts: `lbd check` finds no error. No root needed.
#[test]
fn lab_configs_pass_lbd_check() {
    use lb_tests::lab::{BackendConfig, LbdConfig};

    let lbd = lb_tests::lab::binaries::lbd().expect("lbd is built");
    let backends: Vec<BackendConfig> = (1..=3)
        .map(|n| BackendConfig {
            name: format!("be{n}"),
            address: SocketAddrV4::new(topology::backend_addr(n), 80),
            weight: n as u32,
        })
        .collect();
    let mut sticky = ServiceConfig::tcp("horizon", topology::DEFAULT_VIP, 443, backends.clone());
    sticky.persistence_timeout = Some("1h".into());
    let plain = ServiceConfig::tcp("web", topology::DEFAULT_VIP, 80, backends);
    for nodes in [
        vec!["chk1-lb1".to_string()],
        vec!["chk1-lb1".into(), "chk1-lb2".into()],
    ] {
        let config = LbdConfig::for_lab_nodes(&nodes, vec![plain.clone(), sticky.clone()]);
        let path = std::env::temp_dir().join(format!(
            "lb-lab-check-{}-{}.toml",
            std::process::id(),
            nodes.len()
        ));
        config.write(&path).unwrap();
        let out = std::process::Command::new(&lbd)
            .arg("check")
            .arg(&path)
            .output();
        let _ = std::fs::remove_file(&path);
        let out = out.expect("lbd check runs");
        assert!(
            out.status.success(),
            "lbd check refused the lab config:\n{}\n{}{}",
            config.render().unwrap(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
