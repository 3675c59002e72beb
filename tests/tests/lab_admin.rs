//! Admin states end to end in a namespace lab: lbd on lb1 balancing a VIP
//! over three backends with a `tcp` check and a persistence timeout of 1h,
//! and 240 client addresses in three ranges of 80: range A (the known
//! clients), then B and C, each used for the first time when it must show
//! where NEW clients go.
//!
//! (a) `lbd backend set-state web/be2 drain`: a connection to be2 opened
//!     before keeps working, every client of A stays where it was (be2's
//!     persistent clients too), no new client (range B) lands on be2, and
//!     be2 is still health checked;
//! (b) bad requests (unknown backend, bad state word, forged lines on the
//!     socket) are refused with a clear error and change nothing;
//! (c) `maint`: be2's persistent clients go elsewhere, nobody reaches be2,
//!     and its health checks stop (its server accepts nothing);
//! (d) `ready`: new clients (range C) land on be2 again;
//! (e) `maint` survives an agent restart (SIGTERM, start again): `lbd
//!     status` shows it with the same ids, and no client of A reaches be2;
//!     while no agent runs, `set-state` says so;
//! (e') be1 removed from the config while no agent runs: after a restart
//!     be2 and be3 keep their ids (from the state file) and be2 its maint,
//!     also across a reload (SIGHUP);
//! (f) nothing is left behind.
//!
//! Needs root and lbd built next to this test (`cargo build -p lb-userspace
//! --bin lbd` with the same profile). Fails, not skips, without either.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use lb_tests::lab::{
    CheckConfig, Lab, LabServer, ServiceConfig, SpreadReport, binaries, bounds, netns,
};

/// Client addresses per range; three ranges.
const RANGE: usize = 80;
const CLIENTS: usize = 3 * RANGE;
const PER_SOURCE: usize = 2;
const SERVICE: &str = "web";
const TARGET: &str = "web/be2";
const INTER: Duration = Duration::from_millis(200);

#[test]
fn lab_admin() {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::geteuid() }, 0, "lab_admin must run as root");
    let lab = Lab::datapath("adm", 3, CLIENTS).expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);
    let node = lab.lb_node_name(1);
    let socket = Path::new("/run/lbd").join(format!("{node}.sock"));
    let state_file = Path::new("/var/lib/lbd").join(format!("{node}.state"));

    let servers = lab
        .start_backend_servers(80)
        .expect("backend servers start");
    let be2_server: LabServer = servers
        .iter()
        .find(|s| s.name == "be2")
        .expect("be2 has a server")
        .clone();

    let vip = SocketAddrV4::new(lab.vip(), 80);
    let mut service = ServiceConfig::tcp(SERVICE, lab.vip(), 80, lab.backend_configs(80, &[]));
    service.persistence_timeout = Some("1h".into());
    service.check = Some(CheckConfig {
        inter: Some(format!("{}ms", INTER.as_millis())),
        ..CheckConfig::tcp()
    });
    let config = lab
        .write_config("lbd.toml", &lab.lbd_config(vec![service.clone()]))
        .unwrap();
    let config_arg = config.to_str().expect("utf-8 path").to_string();
    let set_state = |state: &str| -> Output {
        lbd_cli(
            &lab,
            &[
                "backend",
                "set-state",
                TARGET,
                state,
                "--config",
                &config_arg,
            ],
        )
    };
    let status = || -> serde_json::Value {
        let out = lbd_cli(&lab, &["status", "--json", "--config", &config_arg]);
        assert!(out.status.success(), "lbd status failed: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("lbd status prints JSON")
    };

    let mut lbd = lab.start_lbd(1, &config).expect("lbd starts");
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers through lbd");
    assert!(socket.exists(), "no control socket {}", socket.display());
    let mode = std::fs::metadata(&socket).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o660,
        "the control socket is root-only"
    );
    let initial = status();
    assert_eq!(be2(&initial)["admin"], "ready");
    assert!(
        state_file.exists(),
        "no state file {}",
        state_file.display()
    );

    // Before: range A spreads over all three, each source on one backend.
    let before = spread_ok(&lab, vip, range(0), "before");
    let first = backend_of_each_source(&before);
    let be2_clients: Vec<Ipv4Addr> = first
        .iter()
        .filter(|(_, b)| *b == "be2")
        .map(|(s, _)| s.parse().unwrap())
        .collect();
    println!(
        "before: range A per backend {:?}",
        before.clients_per_backend()
    );
    assert!(
        before.clients_per_backend().len() == 3,
        "range A does not reach all three backends: {:?}",
        before.clients_per_backend()
    );
    // A long-lived connection from one of be2's clients.
    let mut held = open_from(&lab, be2_clients[0], vip);
    let name = read_line(&mut held);
    assert_eq!(
        name, "be2",
        "a client of be2 reached {name} on a new connection"
    );
    echo(&mut held, "before drain");

    // (a) drain.
    let out = set_state("drain");
    assert!(out.status.success(), "drain failed: {}", text(&out));
    println!("(a) lbd backend set-state {TARGET} drain: {}", text(&out));
    assert_eq!(be2(&status())["admin"], "drain");
    echo(&mut held, "after drain");
    let drained = spread_ok(&lab, vip, range(0), "(a) known clients during drain");
    assert_eq!(
        backend_of_each_source(&drained),
        first,
        "clients moved on drain (persistent clients of be2 must stay)"
    );
    let new_b = spread_ok(&lab, vip, range(1), "(a) new clients during drain");
    let per_backend_b = new_b.clients_per_backend();
    println!(
        "(a) held connection to be2 still echoes; {} persistent clients of be2 stayed; new clients (range B): {per_backend_b:?}",
        be2_clients.len()
    );
    assert!(
        !per_backend_b.contains_key("be2"),
        "new clients reached the drained be2: {per_backend_b:?}"
    );
    // Counted, not timed: two checks of be2 while drained, waited for up to
    // the bound of two check intervals.
    let checks_before = lab.server_stats(&be2_server).unwrap().accepted;
    let drain_checks = || lab.server_stats(&be2_server).unwrap().accepted - checks_before;
    wait_for(
        "two checks of be2 while drained",
        bounds::protocol(INTER * 2),
        || drain_checks() >= 2,
    );
    let checks_during_drain = drain_checks();

    // (b) bad requests change nothing.
    // What a request could change: ids, weights, health and admin states
    // (the status also carries counters and check times that move anyway).
    let states = |status: serde_json::Value| -> Vec<String> {
        status["services"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|svc| svc["backends"].as_array().cloned().unwrap_or_default())
            .map(|b| {
                format!(
                    "{} id {} weight {} health {} admin {}",
                    b["name"], b["id"], b["weight"], b["health"], b["admin"]
                )
            })
            .collect()
    };
    let snapshot = states(status());
    let out = lbd_cli(
        &lab,
        &[
            "backend",
            "set-state",
            "web/be9",
            "maint",
            "--config",
            &config_arg,
        ],
    );
    assert!(!out.status.success(), "an unknown backend was accepted");
    assert!(
        text(&out).contains("no backend be9 in service web; backends: be1, be2, be3"),
        "unclear error for an unknown backend: {}",
        text(&out)
    );
    let out = set_state("sleepy");
    assert!(!out.status.success(), "a bad state word was accepted");
    assert!(
        text(&out).contains("unknown admin state `sleepy`"),
        "unclear error for a bad state: {}",
        text(&out)
    );
    for forged in [
        r#"{"request":"set-state","service":"web","backend":"be2"}"#,
        r#"{"request":"set-state","service":"web","backend":"be2","state":"MAINT"}"#,
        r#"{"request":"shutdown"}"#,
        "maint web/be2",
    ] {
        let answer = raw_request(&socket, forged);
        assert_eq!(answer["ok"], false, "{forged} was accepted: {answer}");
        println!("(b) {forged} -> {}", answer["error"]);
    }
    assert_eq!(
        states(status()),
        snapshot,
        "a refused request changed the status"
    );

    // (c) maint: persistent clients of be2 move; checks stop.
    let out = set_state("maint");
    assert!(out.status.success(), "maint failed: {}", text(&out));
    let st = be2(&status()).clone();
    assert_eq!(st["admin"], "maint");
    assert_eq!(st["health"], "unchecked", "be2 is still checked in maint");
    let during_maint = spread_ok(&lab, vip, range(0), "(c) known clients in maint");
    let now = backend_of_each_source(&during_maint);
    for (source, was) in &first {
        if was == "be2" {
            assert_ne!(now[source], "be2", "{source} still reaches be2 in maint");
        } else {
            assert_eq!(&now[source], was, "{source} moved though {was} is ready");
        }
    }
    let accepted = lab.server_stats(&be2_server).unwrap().accepted;
    std::thread::sleep(INTER * 5);
    let checks_in_maint = lab.server_stats(&be2_server).unwrap().accepted - accepted;
    assert_eq!(
        checks_in_maint,
        0,
        "be2 got {checks_in_maint} connections in {:?} of maint",
        INTER * 5
    );
    let held_alive = try_echo(&mut held, "in maint");
    println!(
        "(c) maint: {} clients of be2 moved to {:?}; be2 accepted nothing in {:?} (checks {checks_during_drain} in drain); held connection {}",
        be2_clients.len(),
        during_maint.clients_per_backend(),
        INTER * 5,
        if held_alive {
            "still echoes"
        } else {
            "was cut"
        }
    );

    // (d) ready again: new clients may land on be2.
    let out = set_state("ready");
    assert!(out.status.success(), "ready failed: {}", text(&out));
    assert_eq!(be2(&status())["admin"], "ready");
    let new_c = spread_ok(&lab, vip, range(2), "(d) new clients after ready");
    let per_backend_c = new_c.clients_per_backend();
    println!("(d) ready: new clients (range C): {per_backend_c:?}");
    assert!(
        per_backend_c.get("be2").copied().unwrap_or(0) > 0,
        "no new client reached be2 once ready: {per_backend_c:?}"
    );

    // (e) maint survives a restart; ids stay.
    let out = set_state("maint");
    assert!(out.status.success(), "maint failed: {}", text(&out));
    let before_restart = status();
    lbd.stop(Duration::from_secs(10))
        .expect("lbd stops on SIGTERM");
    drop(lbd);
    assert!(
        !socket.exists(),
        "the control socket outlived the agent: {}",
        socket.display()
    );
    let out = set_state("ready");
    assert!(
        !out.status.success(),
        "set-state without an agent succeeded"
    );
    assert!(
        text(&out).contains(&format!("no lbd is running for node {node}")),
        "unclear error without an agent: {}",
        text(&out)
    );
    let mut lbd = lab.start_lbd(1, &config).expect("lbd starts again");
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers after the restart");
    wait_for(
        "the control socket after the restart",
        bounds::AGENT_NOTICES,
        || socket.exists(),
    );
    let after_restart = status();
    assert_eq!(be2(&after_restart)["admin"], "maint", "maint was forgotten");
    assert_eq!(
        ids(&after_restart),
        ids(&before_restart),
        "ids changed across the restart"
    );
    let after = spread_ok(&lab, vip, range(0), "(e) after the restart");
    assert!(
        !after.clients_per_backend().contains_key("be2"),
        "clients reach be2 in maint after the restart: {:?}",
        after.clients_per_backend()
    );
    println!(
        "(e) after a restart be2 is still maint with the same ids {:?}; range A: {:?}",
        ids(&after_restart),
        after.clients_per_backend()
    );

    // (e') be1 leaves the config while no agent runs: be2 and be3 keep
    // their ids (assigned afresh from the config they would become 1 and 2).
    lbd.stop(Duration::from_secs(10))
        .expect("lbd stops on SIGTERM");
    drop(lbd);
    let mut without_be1 = service.clone();
    without_be1.backends.retain(|b| b.name != "be1");
    lab.write_config("lbd.toml", &lab.lbd_config(vec![without_be1]))
        .unwrap();
    let mut lbd = lab.start_lbd(1, &config).expect("lbd starts a third time");
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers after the restart without be1");
    // The pinned program answers before the agent is up: wait for its socket.
    wait_for(
        "the control socket after the restart",
        bounds::AGENT_NOTICES,
        || socket.exists(),
    );
    let shrunk = status();
    let (svc_id, kept) = ids(&before_restart);
    let expected: BTreeSet<(String, u64)> = kept.into_iter().filter(|(b, _)| b != "be1").collect();
    assert_eq!(
        ids(&shrunk),
        (svc_id, expected),
        "ids were renumbered when be1 left the config"
    );
    assert_eq!(be2(&shrunk)["admin"], "maint", "maint was forgotten");
    println!(
        "(e') restarted without be1: ids {:?}, be2 still maint",
        ids(&shrunk)
    );
    // A reload keeps maint, and keeps be2 unchecked.
    // SAFETY: signalling our own lbd child.
    assert_eq!(unsafe { libc::kill(lbd.pid() as i32, libc::SIGHUP) }, 0);
    wait_for("the reload logged", bounds::AGENT_NOTICES, || {
        let log = lbd.log();
        log.contains("config reloaded") || log.contains("reload refused")
    });
    assert!(
        !lbd.log().contains("reload refused"),
        "the reload was refused: {}",
        lbd.log_tail(10)
    );
    let reloaded = be2(&status()).clone();
    assert_eq!(
        (reloaded["admin"].as_str(), reloaded["health"].as_str()),
        (Some("maint"), Some("unchecked")),
        "a reload changed be2 in maint"
    );
    println!("(e') after a reload be2 is still maint and unchecked");

    // (f) nothing is left behind.
    drop(held);
    lbd.check_running().expect("lbd is still running");
    lbd.stop(Duration::from_secs(10))
        .expect("lbd stops on SIGTERM");
    drop(lbd);
    lab.teardown().expect("teardown is clean");
    let left: Vec<String> = netns::list()
        .unwrap()
        .into_iter()
        .filter(|name| name.starts_with(&format!("{prefix}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!pin_dir.exists(), "pins left in {}", pin_dir.display());
    assert!(!state_file.exists(), "state file left behind");
    println!("(f) namespaces, pins, socket and state file of lab {prefix} are gone");
}

/// `lbd ARGS... --node <lb1's node>` in lb1's namespace, whatever its exit
/// status (the refusals are what some steps test).
fn lbd_cli(lab: &Lab, args: &[&str]) -> Output {
    let lbd = binaries::lbd().expect("lbd is built");
    let mut cmd = lab.command_in("lb1", &lbd).expect("lb1 exists");
    cmd.args(args)
        .args(["--node", &lab.lb_node_name(1)])
        .stdin(std::process::Stdio::null());
    cmd.output().expect("lbd runs")
}

/// `first-last` of client range `n` (0, 1, 2).
fn range(n: usize) -> String {
    let addrs: Vec<Ipv4Addr> = lb_tests::lab::topology::client_addrs(CLIENTS).collect();
    let chunk = &addrs[n * RANGE..(n + 1) * RANGE];
    format!("{}-{}", chunk[0], chunk[RANGE - 1])
}

/// `lab-client spread` from `sources`; every connection must succeed and
/// every source stay on one backend.
fn spread_ok(lab: &Lab, vip: SocketAddrV4, sources: String, what: &str) -> SpreadReport {
    let client = binaries::lab_client().expect("lab-client is built");
    let args = [
        client.to_string_lossy().into_owned(),
        "spread".into(),
        "--vip".into(),
        vip.to_string(),
        "--sources".into(),
        sources,
        "--per-source".into(),
        PER_SOURCE.to_string(),
    ];
    let out = lab
        .exec_in("cl", &args)
        .unwrap_or_else(|e| panic!("{what}: spread did not run: {e:#}"));
    let report: SpreadReport = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: no spread report ({e}): {}", text(&out)));
    report.assert_all_ok_and_sticky(RANGE, what);
    report
}

fn backend_of_each_source(report: &SpreadReport) -> BTreeMap<String, String> {
    report.backend_of_each_source()
}

/// A TCP connection from `source` (any port) to `vip`, opened inside the
/// client namespace; the socket keeps working from any thread after.
fn open_from(lab: &Lab, source: Ipv4Addr, vip: SocketAddrV4) -> TcpStream {
    let stream = lab
        .run_in("cl", move || -> std::io::Result<TcpStream> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::from((source, 0)))?;
                let stream = tokio::time::timeout(
                    Duration::from_secs(5),
                    socket.connect(SocketAddr::V4(vip)),
                )
                .await
                .map_err(|_| std::io::Error::other("connect timed out"))??;
                let stream = stream.into_std()?;
                stream.set_nonblocking(false)?;
                Ok(stream)
            })
        })
        .expect("the client namespace runs code")
        .unwrap_or_else(|e| panic!("no connection from {source} to {vip}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream
}

fn read_line(stream: &mut TcpStream) -> String {
    let mut line = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut line)
        .expect("the server sends its name");
    line.trim_end().to_string()
}

/// Sends a line on the held connection and expects it echoed.
fn echo(stream: &mut TcpStream, when: &str) {
    assert!(
        try_echo(stream, when),
        "the held connection stopped working {when}"
    );
}

fn try_echo(stream: &mut TcpStream, when: &str) -> bool {
    let line = format!("ping {when}\n");
    if stream.write_all(line.as_bytes()).is_err() {
        return false;
    }
    let mut back = vec![0u8; line.len()];
    stream.read_exact(&mut back).is_ok() && back == line.as_bytes()
}

/// One raw line on the control socket, its JSON answer.
fn raw_request(socket: &Path, line: &str) -> serde_json::Value {
    let mut stream = UnixStream::connect(socket).expect("the control socket accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("unreadable answer {answer:?}: {e}"))
}

/// web/be2 in a status.
fn be2(status: &serde_json::Value) -> &serde_json::Value {
    status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == SERVICE))
        .and_then(|s| s["backends"].as_array())
        .and_then(|b| b.iter().find(|b| b["name"] == "be2"))
        .unwrap_or_else(|| panic!("no web/be2 in the status: {status}"))
}

/// (service id, {backend: id}) of a status.
fn ids(status: &serde_json::Value) -> (u64, BTreeSet<(String, u64)>) {
    let svc = &status["services"][0];
    let backends = svc["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["id"].as_u64().unwrap(),
            )
        })
        .collect();
    (svc["id"].as_u64().unwrap(), backends)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits for `what` (`done`) up to `bound`, one of [`bounds`].
fn wait_for(what: &str, bound: Duration, done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
