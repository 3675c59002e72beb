//! Health kept across an agent restart, in a single-node namespace lab: lbd
//! on lb1 balancing a VIP over three backends with a `tcp` check.
//!
//! (a) be2's server is stopped and be2 goes DOWN;
//! (b) lbd is killed (SIGKILL) and started again: it starts with be2 DOWN
//!     (its log says so, `lbd status` shows it before any check could
//!     decide), and of 120 client sources, asked at once, every connection
//!     succeeds and none reaches be2;
//! (c) be2's server is started again: be2 comes UP after exactly `rise`
//!     successful checks, and clients reach it;
//! (d) nothing is left behind.
//!
//! Needs root and lbd built next to this test. Fails, not skips, without
//! either.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use lb_tests::lab::report::status_backend;
use lb_tests::lab::{CheckConfig, Lab, ServiceConfig};

const CLIENTS: usize = 120;
const RISE: u32 = 3;
const FALL: u32 = 2;
const VICTIM: &str = "be2";

#[test]
fn lab_restart_health() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_restart_health must run as root"
    );
    let lab = Lab::datapath("rh", 3, CLIENTS).expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);
    let servers = lab
        .start_backend_servers(80)
        .expect("backend servers start");
    let victim = servers.iter().find(|s| s.name == VICTIM).unwrap().clone();

    let vip = SocketAddrV4::new(lab.vip(), 80);
    let mut service = ServiceConfig::tcp("web", lab.vip(), 80, lab.backend_configs(80, &[]));
    // Slow enough checks that the restarted agent's first spread runs
    // before a check of be2 could have decided anything by itself.
    service.check = Some(CheckConfig {
        inter: Some("300ms".into()),
        fastinter: Some("300ms".into()),
        downinter: Some("300ms".into()),
        rise: Some(RISE),
        fall: Some(FALL),
        timeout: Some("300ms".into()),
        ..CheckConfig::tcp()
    });
    let config = lab
        .write_config("lbd.toml", &lab.lbd_config(vec![service]))
        .unwrap();
    let mut lbd = lab.start_lbd(1, &config).expect("lbd starts");
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers");

    // (a) be2 DOWN.
    // SAFETY: signalling the lab-server the lab started (and still reaps).
    assert_eq!(unsafe { libc::kill(victim.pid as i32, libc::SIGKILL) }, 0);
    let down_line = format!("web/{VICTIM} DOWN");
    lbd.wait_for_log(Duration::from_secs(10), |log| log.contains(&down_line))
        .expect("be2 goes DOWN");
    // The health task logs the change before the agent has taken it in and
    // written the health file: kill only once the file holds be2, or the
    // test would race the agent rather than test the restart.
    let health_file = lb_userspace::agent::health_file::path_for(&lab.lb_node_name(1));
    let saved = (0..200).any(|_| {
        let holds = std::fs::read_to_string(&health_file).is_ok_and(|text| text.contains(VICTIM));
        if !holds {
            std::thread::sleep(Duration::from_millis(50));
        }
        holds
    });
    assert!(saved, "{} never held {VICTIM}", health_file.display());

    // (b) kill -9 and restart.
    lbd.signal(libc::SIGKILL).expect("lbd killed");
    drop(lbd);
    let mut lbd = lab.start_lbd(1, &config).expect("lbd restarts");
    lbd.wait_for_log(Duration::from_secs(15), |log| log.contains("forwarding"))
        .expect("the new lbd forwards");
    let log = lbd.log();
    let kept = log
        .lines()
        .find(|l| l.contains(&format!("web/{VICTIM} stays DOWN")))
        .unwrap_or_else(|| panic!("the new lbd did not keep be2 DOWN:\n{log}"));
    println!("(b) {kept}");
    let status = lab.lbd_status_json(1).expect("lbd status answers");
    assert_eq!(
        status_backend(&status, VICTIM)["health"],
        "down",
        "{status}"
    );
    let report = lab.spread(vip, CLIENTS, 1, &[]).expect("spread runs");
    report.assert_all_ok_and_sticky(CLIENTS, "(b) after the restart");
    let on_victim = report.per_backend.get(VICTIM).map_or(0, |t| t.connections);
    println!(
        "(b) connections per backend after the restart: {:?}",
        report
            .per_backend
            .iter()
            .map(|(b, t)| (b.as_str(), t.connections))
            .collect::<Vec<_>>()
    );
    assert_eq!(on_victim, 0, "new connections reached the DOWN be2");
    assert!(
        !lbd.log().contains(&format!("web/{VICTIM} DOWN")),
        "be2 was DOWN from the start, no new DOWN event"
    );

    // (c) the server returns: UP through `rise` checks.
    let addr = SocketAddr::from((lab.backend_addr(2), 80));
    lab.start_server(VICTIM, VICTIM, addr, false)
        .expect("be2's server restarts");
    let up_line = format!("web/{VICTIM} UP");
    lbd.wait_for_log(Duration::from_secs(10), |log| log.contains(&up_line))
        .expect("be2 comes UP");
    let log = lbd.log();
    let up = log.lines().find(|l| l.contains(&up_line)).unwrap();
    println!("(c) {up}");
    assert!(up.contains(&format!("{RISE}/{RISE} succeeded")), "{up}");
    // The checks log before the agent loop writes the maps; the agent's
    // status answers from that loop, so "up" there means the maps have it.
    let mut polls = 0;
    while status_backend(&lab.lbd_status_json(1).expect("lbd status answers"), VICTIM)["health"]
        != "up"
    {
        polls += 1;
        assert!(polls < 50, "lbd status never showed be2 up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = lab.spread(vip, CLIENTS, 1, &[]).expect("spread runs");
    report.assert_all_ok_and_sticky(CLIENTS, "(c) be2 back");
    assert!(
        report.per_backend.get(VICTIM).map_or(0, |t| t.connections) > 0,
        "no client reaches be2 once UP"
    );

    lbd.stop(Duration::from_secs(10)).expect("lbd stops");
    drop(lbd);
    lab.teardown().expect("teardown");
    drop(lab);
    lb_tests::lab::assert_nothing_left(&prefix, &pin_dir);
}
