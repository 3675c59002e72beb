//! `lbd reload` end to end: it validates the config itself, signals the
//! running agent only when the config is valid (the agent then logs "config
//! reloaded"), reports every error of a broken config without touching the
//! agent, and says so plainly when no agent runs.
//!
//! Needs root and lbd built next to this test. Fails, not skips, without.

use std::net::SocketAddrV4;
use std::time::Duration;

use lb_tests::lab::{Lab, ServiceConfig};

#[test]
fn lab_reload_command() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_reload_command must run as root"
    );
    let lab = Lab::datapath("rc", 2, 4).expect("lab builds");
    lab.start_backend_servers(80)
        .expect("backend servers start");
    let vip = SocketAddrV4::new(lab.vip(), 80);
    let one = lab.lbd_config(vec![ServiceConfig::tcp(
        "web",
        lab.vip(),
        80,
        lab.backend_configs(80, &[1]),
    )]);
    let config = lab.write_config("lbd.toml", &one).unwrap();
    let config_arg = config.to_str().unwrap().to_string();
    let mut lbd = lab.start_lbd(1, &config).expect("lbd starts");
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers through lbd");

    // A valid change: the agent reloads.
    let two = lab.lbd_config(vec![ServiceConfig::tcp(
        "web",
        lab.vip(),
        80,
        lab.backend_configs(80, &[1, 1]),
    )]);
    lab.write_config("lbd.toml", &two).unwrap();
    let out = lab
        .lbd_command(1, &["reload", "--config", &config_arg])
        .expect("lbd reload succeeds");
    println!(
        "lbd reload: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let took = lbd
        .wait_for_log(Duration::from_secs(3), |log| {
            log.contains("config reloaded")
        })
        .expect("the agent reloads");
    println!("the agent logged the reload {took:?} after `lbd reload` returned");

    // A broken config: refused by the command, the agent is not signalled.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\nbogus_key = 1\n")).unwrap();
    let err = lab
        .lbd_command(1, &["reload", "--config", &config_arg])
        .expect_err("a broken config is refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("bogus_key") && msg.contains("lbd.toml:"),
        "{msg}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = lbd.log();
    assert_eq!(
        log.matches("config reloaded").count(),
        1,
        "one reload only:\n{log}"
    );
    assert!(
        !log.contains("reload refused"),
        "the agent was not signalled:\n{log}"
    );

    // No agent: a plain sentence.
    std::fs::write(&config, text).unwrap();
    lbd.stop(Duration::from_secs(5)).expect("lbd stops");
    let err = lab
        .lbd_command(1, &["reload", "--config", &config_arg])
        .expect_err("no agent runs");
    let msg = format!("{err:#}");
    assert!(msg.contains("no lbd is running"), "{msg}");
    lab.lbd_command(1, &["stop", "--detach", "--config", &config_arg])
        .expect("lbd stop --detach");
}
