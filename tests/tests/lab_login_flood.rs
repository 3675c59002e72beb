//! A login flood must not starve the agent: while the client namespace
//! floods the admin page (on the VIP, port 8404) with wrong passwords, over
//! many concurrent connections, both as `POST /login` forms and as HTTP
//! basic auth, the health checks keep their rhythm (checks counted as
//! connections at the backend servers, in a quiet window and in a flood
//! window of the same length) and the VRRP master keeps advertising every
//! second (`adverts_sent` on the master, `adverts_received` on the backup,
//! over each window), so the backup never takes over.
//!
//! `cargo build -p lb-userspace --bin lbd && cargo test -p lb-tests --test lab_login_flood -- --test-threads=1`

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lb_tests::lab::admin_http::{
    ADMIN_PORT, AdminUser, HttpRequest, admin_config, basic_auth, send,
};
use lb_tests::lab::browser::tell;
use lb_tests::lab::{CheckConfig, Lab, LabServer, ServiceConfig, assert_nothing_left};

/// Health checks every 200 ms from each of the two nodes.
const CHECK_INTER: Duration = Duration::from_millis(200);
const WINDOW: Duration = Duration::from_secs(6);
/// Concurrent flooding connections.
const FLOOD_WORKERS: usize = 64;

/// What the flood got back.
#[derive(Debug, Default)]
struct FloodTally {
    by_status: BTreeMap<u16, u64>,
    failures: u64,
}

/// One VRRP instance as `lbd status --json` reports it.
#[derive(Debug)]
struct Vrrp {
    state: String,
    adverts_sent: u64,
    adverts_received: u64,
    transitions: u64,
}

fn try_vrrp(lab: &Lab, node: usize) -> anyhow::Result<Vrrp> {
    use anyhow::Context;
    let out = lab.lbd_command(node, &["status", "--json"])?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let vrrp = &status["vrrp"][0];
    let number = |key: &str| vrrp[key].as_u64().with_context(|| format!("no {key}"));
    Ok(Vrrp {
        state: vrrp["state"].as_str().context("no VRRP state")?.to_string(),
        adverts_sent: number("adverts_sent")?,
        adverts_received: number("adverts_received")?,
        transitions: number("transitions")?,
    })
}

fn vrrp(lab: &Lab, node: usize) -> Vrrp {
    try_vrrp(lab, node).unwrap_or_else(|e| panic!("lb{node} VRRP status: {e:#}"))
}

/// Connections the backend servers accepted: the health checks of both
/// nodes, as nothing else talks to them during the windows.
fn checks_seen(lab: &Lab, servers: &[LabServer]) -> u64 {
    servers
        .iter()
        .map(|s| lab.server_stats(s).expect("server stats").accepted)
        .sum()
}

/// Checks and adverts counted over one window.
#[derive(Debug)]
struct Window {
    checks: u64,
    /// Adverts the master (lb1) sent.
    adverts: u64,
    /// Adverts the backup (lb2) received from it.
    heard: u64,
    /// From the first reading's start to the last reading's end: at least
    /// [`WINDOW`], more when the readings themselves were slow.
    elapsed: Duration,
    /// The slowest `lbd status` answer seen at the window's edges.
    slowest_status: Duration,
}

/// Counts checks and adverts over [`WINDOW`].
fn measure(lab: &Lab, servers: &[LabServer]) -> Window {
    let start = Instant::now();
    let checks = checks_seen(lab, servers);
    let asked = Instant::now();
    let adverts = vrrp(lab, 1).adverts_sent;
    let heard = vrrp(lab, 2).adverts_received;
    let first_status = asked.elapsed();
    std::thread::sleep(WINDOW);
    let asked = Instant::now();
    let adverts_after = vrrp(lab, 1).adverts_sent;
    let heard_after = vrrp(lab, 2).adverts_received;
    let last_status = asked.elapsed();
    let checks_after = checks_seen(lab, servers);
    Window {
        checks: checks_after - checks,
        adverts: adverts_after - adverts,
        heard: heard_after - heard,
        elapsed: start.elapsed(),
        slowest_status: first_status.max(last_status),
    }
}

/// Floods `page` from the client namespace until `stop`: each worker sends
/// wrong-password logins and wrong basic-auth requests, one after another.
fn flood(lab: &Lab, page: SocketAddrV4, stop: &AtomicBool) -> FloodTally {
    let tally = Mutex::new(FloodTally::default());
    lab.run_in("cl", || {
        // Threads started here inherit the client namespace.
        std::thread::scope(|scope| {
            for worker in 0..FLOOD_WORKERS {
                let tally = &tally;
                scope.spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let guess = format!("guess-{worker}-{n}");
                        let request = if n.is_multiple_of(2) {
                            HttpRequest::post_form(
                                "/login",
                                &[("user", "admin"), ("password", &guess)],
                            )
                        } else {
                            HttpRequest::get("/api/v1/status")
                                .header("Authorization", &basic_auth("admin", &guess))
                        };
                        n += 1;
                        let result = send(page, &request, Duration::from_secs(15));
                        let mut tally = tally.lock().unwrap();
                        match result {
                            Ok(r) => *tally.by_status.entry(r.status).or_default() += 1,
                            Err(_) => tally.failures += 1,
                        }
                        drop(tally);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                });
            }
        });
    })
    .expect("flooding from the client namespace");
    tally.into_inner().unwrap()
}

#[test]
fn login_flood_leaves_health_checks_and_vrrp_adverts_on_time() {
    let lab = Lab::builder("flood")
        .lb_nodes(2)
        .backends(2)
        .client_addrs(4)
        .add_vips(false)
        .build()
        .expect("building the lab");
    let prefix = lab.prefix().to_string();
    let pins = [lab.lbd_pin_dir(1), lab.lbd_pin_dir(2)];
    let servers = lab.start_backend_servers(80).expect("starting backends");
    let vip = lab.vip();
    let page = SocketAddrV4::new(vip, ADMIN_PORT);
    let admin = AdminUser::new("admin", "admin", "the real one").expect("hashing");
    let mut svc = ServiceConfig::tcp("web", vip, 80, lab.backend_configs(80, &[]));
    svc.check = Some(CheckConfig {
        inter: Some(format!("{}ms", CHECK_INTER.as_millis())),
        ..CheckConfig::tcp()
    });
    let mut lbd_config = lab.lbd_config(vec![svc]);
    lbd_config.admin = Some(admin_config(page, "30s", std::slice::from_ref(&admin)));
    lbd_config
        .vrrp
        .push(lab.vrrp_config("vip", 52, &[vip], &[101, 100]));
    let config = lab.write_config("lbd.toml", &lbd_config).unwrap();
    let mut lb1 = lab.start_lbd(1, &config).expect("starting lbd on lb1");
    let mut lb2 = lab.start_lbd(2, &config).expect("starting lbd on lb2");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !try_vrrp(&lab, 1).is_ok_and(|v| v.state == "master") {
        lb1.check_running().expect("lb1 runs");
        lb2.check_running().expect("lb2 runs");
        assert!(Instant::now() < deadline, "lb1 never became VRRP master");
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.wait_for_service(
        &mut lb1,
        SocketAddrV4::new(vip, 80),
        Duration::from_secs(20),
    )
    .expect("service up through lb1");
    lab.wait_for_admin(&mut lb1, "cl", page, Duration::from_secs(20))
        .expect("admin page up on the VIP");
    let transitions_before = vrrp(&lab, 1).transitions;

    let quiet = measure(&lab, &servers);
    let stop = AtomicBool::new(false);
    let (flooded, tally, flood_time) = std::thread::scope(|scope| {
        let started = Instant::now();
        let flooding = scope.spawn(|| flood(&lab, page, &stop));
        // Let every worker get its first request in.
        std::thread::sleep(Duration::from_millis(1500));
        let window = measure(&lab, &servers);
        stop.store(true, Ordering::Relaxed);
        let tally = flooding.join().expect("the flood thread");
        (window, tally, started.elapsed())
    });
    let requests: u64 = tally.by_status.values().sum::<u64>() + tally.failures;
    tell(&format!(
        "quiet: {quiet:?}\nflood: {flooded:?}\nflood: {requests} requests in {flood_time:.1?} \
         over {FLOOD_WORKERS} connections, answers {:?}, {} failed",
        tally.by_status, tally.failures
    ));
    let (quiet_checks, quiet_adverts) = (quiet.checks, quiet.adverts);
    let (flood_checks, flood_adverts) = (flooded.checks, flooded.adverts);
    // Slow readings would stretch the window and hide missing checks.
    assert!(
        flooded.elapsed < WINDOW + Duration::from_secs(2),
        "reading the counters took {:?} under the flood (window {WINDOW:?}); \
         the slowest lbd status took {:?}",
        flooded.elapsed,
        flooded.slowest_status
    );

    // The flood was real and got nowhere.
    assert!(
        requests >= FLOOD_WORKERS as u64,
        "the flood sent only {requests} requests"
    );
    assert_eq!(
        tally.by_status.get(&200).copied().unwrap_or(0)
            + tally.by_status.get(&303).copied().unwrap_or(0),
        0,
        "a wrong password got in: {:?}",
        tally.by_status
    );
    // Health checks: 2 nodes x 2 backends every 200 ms = 120 in 6 s. Generous:
    // at least 70% of the nominal count and of the quiet window's.
    let nominal = 2 * 2 * (WINDOW.as_millis() / CHECK_INTER.as_millis()) as u64;
    assert!(
        quiet_checks * 10 >= nominal * 7,
        "even the quiet window saw only {quiet_checks} of {nominal} checks"
    );
    assert!(
        flood_checks * 10 >= nominal * 7 && flood_checks * 10 >= quiet_checks * 7,
        "under the flood only {flood_checks} checks ran (quiet: {quiet_checks}, nominal {nominal})"
    );
    // VRRP: one advert a second; allow one missing at the window's edges.
    let nominal_adverts = WINDOW.as_secs();
    assert!(
        flood_adverts + 1 >= nominal_adverts,
        "the master sent {flood_adverts} adverts in {WINDOW:?} under the flood (quiet: {quiet_adverts})"
    );
    assert!(
        flooded.heard + 1 >= nominal_adverts,
        "the backup heard {} adverts in {WINDOW:?} under the flood (quiet: {})",
        flooded.heard,
        quiet.heard
    );
    let (lb1_vrrp, lb2_vrrp) = (vrrp(&lab, 1), vrrp(&lab, 2));
    let (state1, transitions_after) = (lb1_vrrp.state, lb1_vrrp.transitions);
    let state2 = lb2_vrrp.state;
    assert_eq!(
        (state1.as_str(), state2.as_str()),
        ("master", "backup"),
        "the flood moved VRRP"
    );
    assert_eq!(
        transitions_after, transitions_before,
        "lb1 changed VRRP state during the flood"
    );
    let table = lab
        .lbd_command(1, &["status", "--table"])
        .expect("lbd status --table");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("vrrp vip MASTER  priority 101"),
        "lbd status does not show the master:\n{table}"
    );
    // The agent still answers its rightful admin at once.
    let ok = lab
        .http(
            "cl",
            page,
            &HttpRequest::get("/api/v1/status").header("Authorization", &admin.basic_auth()),
            Duration::from_secs(10),
        )
        .expect("admin after the flood");
    assert_eq!(ok.status, 200, "{}", ok.body);

    lb1.stop(Duration::from_secs(10)).expect("stopping lb1");
    lb2.stop(Duration::from_secs(10)).expect("stopping lb2");
    drop((lb1, lb2));
    lab.teardown().expect("teardown");
    drop(lab);
    for pin in &pins {
        assert_nothing_left(&prefix, pin);
    }
}
