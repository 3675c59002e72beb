//! lbd speaks systemd's notify protocol (what `Type=notify` and
//! `WatchdogSec=` in packaging/lbd.service rely on), checked against a
//! datagram socket this test holds as `NOTIFY_SOCKET`: READY=1 comes only
//! once the XDP program is attached and pinned, WATCHDOG=1 keeps coming at
//! half of `WATCHDOG_USEC`, SIGHUP gives RELOADING=1 then READY=1, SIGTERM
//! gives STOPPING=1 and a clean exit.
//!
//! Needs root and lbd built next to this test. Fails, not skips, without.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use lb_tests::lab::{Lab, ServiceConfig, assert_nothing_left, binaries, bounds};

/// The watchdog timeout handed to lbd: pings every 200 ms.
const WATCHDOG_USEC: u64 = 400_000;

/// Kills lbd if the test ends early.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The next datagram within `timeout`, as text.
fn receive(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Messages until one that is not a watchdog ping, which is returned;
/// fails after `timeout`. `pings` counts the pings passed over.
fn next_event(socket: &UnixDatagram, timeout: Duration, pings: &mut usize, log: &Path) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(message) = receive(socket, left.max(Duration::from_millis(1))) else {
            panic!(
                "no notification within {timeout:?}; lbd log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        };
        if message == "WATCHDOG=1\n" {
            *pings += 1;
            continue;
        }
        return message;
    }
}

/// Whether a pinned XDP link exists under `pin_dir` (`<node>/v<N>/link`).
fn link_pinned(pin_dir: &Path) -> bool {
    std::fs::read_dir(pin_dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|entry| entry.path().join("link").exists())
        })
        .unwrap_or(false)
}

#[test]
fn lab_systemd_notify() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_systemd_notify must run as root"
    );
    let lab = Lab::datapath("sn", 2, 1).expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);
    let both = lab.backend_configs(80, &[1, 1]);
    let one = lab.lbd_config(vec![ServiceConfig::tcp(
        "web",
        lab.vip(),
        80,
        both[..1].to_vec(),
    )]);
    let config = lab.write_config("lbd.toml", &one).unwrap();

    let socket_path = lab.dir().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("the notify socket binds");
    let log = lab.dir().join("lb1-lbd.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut command = lab
        .command_in("lb1", binaries::lbd().expect("lbd is built"))
        .unwrap();
    command
        .args(["run", "--config"])
        .arg(&config)
        .args(["--node", &lab.lb_node_name(1)])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let mut agent = Agent(command.spawn().expect("lbd starts"));
    let pid = agent.0.id() as libc::pid_t;

    // READY=1 first, and only with the program attached and pinned.
    let mut pings = 0;
    let ready = next_event(&socket, Duration::from_secs(30), &mut pings, &log);
    assert_eq!(pings, 0, "no watchdog ping may come before READY=1");
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first notification: {ready:?}"
    );
    assert!(
        link_pinned(&pin_dir),
        "READY=1 came before the XDP link was pinned in {}",
        pin_dir.display()
    );
    let links = lab
        .exec_in("lb1", &["ip", "-d", "link", "show", "eth0"])
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        links.contains("prog/xdp"),
        "READY=1 came before XDP was attached to eth0:\n{links}"
    );
    assert!(
        ready.contains("STATUS=forwarding 1 services, 1 backends on eth0"),
        "READY=1 carries a status: {ready:?}"
    );

    // WATCHDOG=1 every WATCHDOG_USEC/2, counted: seven pings, none later
    // than the bound of one period after the one before, all seven within
    // the bound of seven periods, and on average no faster than three
    // quarters of the period (what a doubled rate breaks).
    let period = Duration::from_micros(WATCHDOG_USEC / 2);
    let watch = Instant::now();
    for pings in 0..7 {
        match receive(&socket, bounds::protocol(period)) {
            Some(message) if message == "WATCHDOG=1\n" => {}
            Some(other) => panic!("unexpected notification while idle: {other:?}"),
            None => panic!(
                "the watchdog pings stopped (after {pings}, none within {:?})",
                bounds::protocol(period)
            ),
        }
    }
    let took = watch.elapsed();
    assert!(
        took >= 6 * period * 3 / 4 && took <= bounds::protocol(7 * period),
        "7 pings in {took:?} at a {period:?} period"
    );

    // SIGHUP: RELOADING=1, then READY=1 with the new status.
    let two = lab.lbd_config(vec![ServiceConfig::tcp("web", lab.vip(), 80, both)]);
    lab.write_config("lbd.toml", &two).unwrap();
    // SAFETY: our own child, still running.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let mut pings = 0;
    let reloading = next_event(&socket, Duration::from_secs(10), &mut pings, &log);
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1"),
        "after SIGHUP: {reloading:?}"
    );
    assert!(
        reloading.contains("MONOTONIC_USEC="),
        "RELOADING=1 names its time: {reloading:?}"
    );
    let ready = next_event(&socket, Duration::from_secs(10), &mut pings, &log);
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "after the reload: {ready:?}"
    );
    assert!(
        ready.contains("1 services, 2 backends"),
        "the status follows the reload: {ready:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("config reloaded"),
        "READY=1 after a reload that happened:\n{text}"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    // SAFETY: our own child, still running.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let stopping = next_event(&socket, Duration::from_secs(10), &mut pings, &log);
    assert!(
        stopping.lines().any(|l| l == "STOPPING=1"),
        "after SIGTERM: {stopping:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = agent.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "lbd did not exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "lbd exited with {status}");
    assert_eq!(
        receive(&socket, Duration::from_millis(300)),
        None,
        "nothing after STOPPING=1"
    );

    drop(agent);
    lab.lbd_command(
        1,
        &["stop", "--detach", "--config", config.to_str().unwrap()],
    )
    .expect("lbd stop --detach");
    lab.teardown().expect("lab tears down");
    assert_nothing_left(&prefix, &pin_dir);
}
