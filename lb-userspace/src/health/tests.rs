//! The checkers and the scheduler against real loopback servers.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::test_servers::{Behaviour, TestServer};
use super::*;
use crate::config::{CheckKind, HealthCheck, StatusMatch};

const SHORT: Duration = Duration::from_millis(300);

fn check(kind: CheckKind) -> HealthCheck {
    HealthCheck {
        timeout: Duration::from_secs(2),
        ..HealthCheck::new(kind)
    }
}

async fn run(check: &HealthCheck, address: SocketAddrV4) -> CheckResult {
    let result = Checker::new().unwrap().run(check, address).await;
    println!("{address}: {} in {:?}", result.reason(), result.duration);
    result
}

/// A loopback port nothing listens on: bound once, then released.
async fn closed_port() -> SocketAddrV4 {
    let server = TestServer::start(Behaviour::Close, 200).await;
    let address = server.address;
    server.stop().await;
    address
}

#[tokio::test]
async fn tcp_passes_when_the_port_accepts() {
    let server = TestServer::start(Behaviour::Close, 200).await;
    let result = run(&check(CheckKind::Tcp), server.address).await;
    assert_eq!(result.outcome, Ok("connected".to_string()));
}

#[tokio::test]
async fn tcp_fails_when_refused() {
    let result = run(&check(CheckKind::Tcp), closed_port().await).await;
    assert_eq!(
        result.outcome,
        Err(Failure::Connect("connection refused".to_string()))
    );
    assert_eq!(result.reason(), "tcp connection refused");
}

#[tokio::test]
async fn port_override_is_used() {
    let server = TestServer::start(Behaviour::Close, 200).await;
    let elsewhere = SocketAddrV4::new(Ipv4Addr::LOCALHOST, closed_port().await.port());
    let mut tcp = check(CheckKind::Tcp);
    assert!(!run(&tcp, elsewhere).await.is_ok());
    tcp.port = Some(server.address.port());
    assert!(run(&tcp, elsewhere).await.is_ok());
}

#[tokio::test]
async fn tls_hello_passes_against_a_tls_server() {
    let server = TestServer::start(Behaviour::Tls, 200).await;
    let result = run(&check(CheckKind::TlsHello), server.address).await;
    let seen = result.outcome.expect("a ServerHello");
    assert!(seen.starts_with("ServerHello"), "{seen}");
}

#[tokio::test]
async fn tls_hello_passes_against_a_tls_1_2_server() {
    let server = TestServer::start(Behaviour::Tls12, 200).await;
    let result = run(&check(CheckKind::TlsHello), server.address).await;
    assert_eq!(result.outcome, Ok("ServerHello (TLSv1_2)".to_string()));
}

#[tokio::test]
async fn tls_hello_passes_when_the_server_answers_with_an_alert() {
    // A real TLS stack (rustls) without a certificate refuses the hello
    // with an access_denied alert (49): alive, as HAProxy's ssl-hello-chk
    // says.
    let server = TestServer::start(Behaviour::TlsNoCert, 200).await;
    let result = run(&check(CheckKind::TlsHello), server.address).await;
    assert_eq!(result.outcome, Ok("TLS alert 49".to_string()));
}

#[test]
fn only_tls_alert_records_read_as_alerts() {
    use super::check::tls_alert_answer;
    let alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
    assert_eq!(tls_alert_answer(&alert), Some("TLS alert 40".into()));
    assert_eq!(tls_alert_answer(&alert[..3]), Some("TLS alert".into()));
    assert_eq!(tls_alert_answer(&[0x16, 0x03, 0x03, 0x00, 0x7a]), None);
    assert_eq!(tls_alert_answer(b"HTTP/1.1 400 Bad Request\r\n"), None);
    assert_eq!(tls_alert_answer(&[]), None);
}

#[tokio::test]
async fn tls_hello_fails_against_plain_servers() {
    // An HTTP server answers the ClientHello with bytes that are not TLS.
    let http = TestServer::start(Behaviour::Http, 400).await;
    let result = run(&check(CheckKind::TlsHello), http.address).await;
    match &result.outcome {
        Err(Failure::Tls(why)) => assert!(why.starts_with("not a TLS server"), "{why}"),
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    // A server that accepts and closes gives no ServerHello either.
    let closing = TestServer::start(Behaviour::Close, 200).await;
    let result = run(&check(CheckKind::TlsHello), closing.address).await;
    assert!(
        matches!(result.outcome, Err(Failure::Connection(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn tls_hello_times_out_on_a_silent_server() {
    let server = TestServer::start(Behaviour::Silent, 200).await;
    let hello = HealthCheck {
        timeout: SHORT,
        ..check(CheckKind::TlsHello)
    };
    let result = run(&hello, server.address).await;
    assert_eq!(result.outcome, Err(Failure::Timeout(SHORT)));
    assert_eq!(result.reason(), "tls-hello timeout after 300ms");
}

fn http_expecting_200() -> HealthCheck {
    HealthCheck {
        path: "/favicon.ico".to_string(),
        expect: vec![StatusMatch::Code(200)],
        ..check(CheckKind::Http)
    }
}

#[tokio::test]
async fn http_expecting_200_passes_on_200_and_fails_on_500() {
    let server = TestServer::start(Behaviour::Http, 200).await;
    let result = run(&http_expecting_200(), server.address).await;
    assert_eq!(result.outcome, Ok("status 200".to_string()));
    server.status.store(500, Ordering::SeqCst);
    let result = run(&http_expecting_200(), server.address).await;
    assert_eq!(result.outcome, Err(Failure::Status(500)));
    assert_eq!(result.reason(), "http status 500");
}

#[tokio::test]
async fn http_default_expects_2xx_and_3xx() {
    let server = TestServer::start(Behaviour::Http, 302).await;
    assert!(run(&check(CheckKind::Http), server.address).await.is_ok());
    server.status.store(404, Ordering::SeqCst);
    let result = run(&check(CheckKind::Http), server.address).await;
    assert_eq!(result.outcome, Err(Failure::Status(404)));
}

#[tokio::test]
async fn http_times_out_on_a_silent_server() {
    let server = TestServer::start(Behaviour::Silent, 200).await;
    let silent = HealthCheck {
        timeout: SHORT,
        ..http_expecting_200()
    };
    let result = run(&silent, server.address).await;
    assert_eq!(result.outcome, Err(Failure::Timeout(SHORT)));
}

#[tokio::test]
async fn https_without_verification_accepts_a_self_signed_server() {
    let server = TestServer::start(Behaviour::Tls, 200).await;
    let https = HealthCheck {
        sni: Some("localhost".to_string()),
        ..check(CheckKind::Https)
    };
    let result = run(&https, server.address).await;
    assert_eq!(result.outcome, Ok("status 200".to_string()));
    server.status.store(503, Ordering::SeqCst);
    assert_eq!(
        run(&https, server.address).await.outcome,
        Err(Failure::Status(503))
    );
}

#[tokio::test]
async fn https_with_verification_rejects_a_self_signed_server() {
    let server = TestServer::start(Behaviour::Tls, 200).await;
    let https = HealthCheck {
        sni: Some("localhost".to_string()),
        verify: true,
        ..check(CheckKind::Https)
    };
    let result = run(&https, server.address).await;
    match &result.outcome {
        Err(Failure::Tls(why)) => assert!(why.contains("invalid peer certificate"), "{why}"),
        other => panic!("expected a certificate failure, got {other:?}"),
    }
    assert_eq!(
        server.answered_ok.load(Ordering::SeqCst),
        0,
        "no request may be sent"
    );
}

// --- Scheduler -------------------------------------------------------------------

const FAST: Duration = Duration::from_millis(50);
const INTER: Duration = Duration::from_millis(300);
const DOWNINTER: Duration = Duration::from_millis(200);

/// A check with short intervals: after an event the next check is at least
/// 200 ms away, so a test can read the server's counters in peace.
fn quick(kind: CheckKind, rise: u32, fall: u32) -> HealthCheck {
    HealthCheck {
        inter: INTER,
        fastinter: Some(FAST),
        downinter: Some(DOWNINTER),
        rise,
        fall,
        timeout: SHORT,
        ..check(kind)
    }
}

/// The next event, or a failure after `within`.
async fn next_event(
    events: &mut mpsc::UnboundedReceiver<HealthEvent>,
    within: Duration,
) -> HealthEvent {
    tokio::time::timeout(within, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no health event within {within:?}"))
        .expect("the scheduler is alive")
}

/// Waits until the backend's counter is at the top (fully UP).
async fn wait_fully_up(scheduler: &Scheduler, key: &BackendKey, check: &HealthCheck) {
    let top = check.rise + check.fall - 1;
    let deadline = Instant::now() + Duration::from_secs(5);
    while scheduler.status(key).unwrap().health != top {
        assert!(Instant::now() < deadline, "{key} never became fully UP");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Nominal time to a decision: the first check after the change comes at most
/// one `first` interval later, the rest `FAST` apart. Bound: 2x + 1 s.
fn bound(first: Duration, checks: u32) -> Duration {
    2 * (first + FAST * (checks - 1)) + Duration::from_secs(1)
}

#[tokio::test]
async fn http_backend_goes_down_after_exactly_fall_and_up_after_exactly_rise() {
    let (rise, fall) = (3, 4);
    let server = TestServer::start(Behaviour::Http, 200).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut scheduler = Scheduler::new(Checker::new().unwrap(), tx);
    let key = BackendKey::new("horizon", "cs1");
    let check = HealthCheck {
        expect: vec![StatusMatch::Code(200)],
        ..quick(CheckKind::Http, rise, fall)
    };
    scheduler.start(key.clone(), server.address, check.clone());
    wait_fully_up(&scheduler, &key, &check).await;
    assert!(events.try_recv().is_err(), "a healthy start sends no event");

    server.status.store(500, Ordering::SeqCst);
    let broken = Instant::now();
    let down = next_event(&mut events, bound(INTER, fall)).await;
    let failed = server.answered_bad.load(Ordering::SeqCst);
    println!(
        "DOWN after {:?} and {failed} answers of 500: {down}",
        broken.elapsed()
    );
    assert!(!down.up);
    assert_eq!(
        failed,
        u64::from(fall),
        "DOWN after exactly `fall` failed checks"
    );
    assert_eq!(down.checks, (fall, fall));
    assert_eq!(down.reason, "http status 500");
    assert_eq!(
        down.to_string(),
        "horizon/cs1 DOWN: http status 500, 4/4 failed"
    );
    assert_eq!(scheduler.is_up(&key), Some(false));

    let ok_before = server.answered_ok.load(Ordering::SeqCst);
    server.status.store(200, Ordering::SeqCst);
    let repaired = Instant::now();
    let up = next_event(&mut events, bound(DOWNINTER, rise)).await;
    let succeeded = server.answered_ok.load(Ordering::SeqCst) - ok_before;
    println!(
        "UP after {:?} and {succeeded} answers of 200: {up}",
        repaired.elapsed()
    );
    assert!(up.up);
    assert_eq!(
        succeeded,
        u64::from(rise),
        "UP after exactly `rise` successes"
    );
    assert_eq!(
        up.to_string(),
        "horizon/cs1 UP: http status 200, 3/3 succeeded"
    );
    let status = scheduler.status(&key).unwrap();
    assert!(status.up);
    assert!(status.last_change.is_some());
    assert_eq!(
        status.last_result.unwrap().outcome,
        Ok("status 200".to_string())
    );
}

#[tokio::test]
async fn stopped_tcp_server_goes_down_and_comes_back() {
    let (rise, fall) = (2, 3);
    let server = TestServer::start(Behaviour::Close, 200).await;
    let address = server.address;
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut scheduler = Scheduler::new(Checker::new().unwrap(), tx);
    let key = BackendKey::new("horizon", "cs2");
    let check = quick(CheckKind::Tcp, rise, fall);
    scheduler.start(key.clone(), address, check.clone());
    wait_fully_up(&scheduler, &key, &check).await;

    let checks_before = scheduler.status(&key).unwrap().checks;
    server.stop().await;
    let stopped = Instant::now();
    let down = next_event(&mut events, bound(INTER, fall)).await;
    let status = scheduler.status(&key).unwrap();
    println!("DOWN after {:?}: {down}", stopped.elapsed());
    assert_eq!(down.reason, "tcp connection refused");
    assert_eq!(down.checks, (fall, fall));
    assert_eq!(status.failures, u64::from(fall));
    assert_eq!(status.checks - checks_before, u64::from(fall));

    let server = TestServer::start_at(address, Behaviour::Close, 200).await;
    let restarted = Instant::now();
    let up = next_event(&mut events, bound(DOWNINTER, rise)).await;
    let accepted = server.accepted.load(Ordering::SeqCst);
    println!(
        "UP after {:?} and {accepted} connections: {up}",
        restarted.elapsed()
    );
    assert!(up.up);
    assert_eq!(
        accepted,
        u64::from(rise),
        "UP after exactly `rise` successes"
    );
}

#[tokio::test]
async fn a_hanging_backend_does_not_slow_the_others() {
    let silent = TestServer::start(Behaviour::Silent, 200).await;
    let healthy = TestServer::start(Behaviour::Http, 200).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut scheduler = Scheduler::new(Checker::new().unwrap(), tx);
    let fast_check = HealthCheck {
        inter: FAST,
        timeout: Duration::from_secs(2),
        ..quick(CheckKind::Http, 2, 3)
    };
    let hanging = BackendKey::new("svc", "hangs");
    let fine = BackendKey::new("svc", "fine");
    scheduler.start(
        hanging.clone(),
        silent.address,
        quick(CheckKind::Http, 2, 3),
    );
    scheduler.start(fine.clone(), healthy.address, fast_check);
    let started = Instant::now();
    let down = next_event(&mut events, Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    let fine_checks = healthy.answered_ok.load(Ordering::SeqCst);
    println!("{down} after {elapsed:?}; meanwhile {fine_checks} checks of the healthy backend");
    assert_eq!(down.key(), hanging);
    assert_eq!(down.reason, "http timeout after 300ms");
    // One check every 50 ms at most: at least half of them must have run
    // while the other backend sat in its 300 ms timeout.
    let expected = elapsed.as_millis() as u64 / 50;
    assert!(fine_checks >= expected / 2, "{fine_checks} < {expected}/2");
    assert_eq!(scheduler.is_up(&fine), Some(true));
}

#[tokio::test]
async fn sync_follows_the_desired_set_and_keeps_state_across_a_change() {
    let server = TestServer::start(Behaviour::Http, 500).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut scheduler = Scheduler::new(Checker::new().unwrap(), tx);
    let key = BackendKey::new("horizon", "cs1");
    let other = BackendKey::new("horizon", "cs2");
    let check = quick(CheckKind::Http, 2, 3);
    scheduler.sync(vec![
        (key.clone(), server.address, check.clone()),
        (other.clone(), server.address, check.clone()),
    ]);
    assert_eq!(scheduler.keys(), [key.clone(), other.clone()]);
    // Both start UP and go DOWN on their first failed check.
    for _ in 0..2 {
        assert!(!next_event(&mut events, Duration::from_secs(2)).await.up);
    }
    // A changed check replaces the task but keeps it DOWN; cs2 is removed.
    let changed = HealthCheck {
        path: "/health".to_string(),
        ..check
    };
    scheduler.sync(vec![(key.clone(), server.address, changed.clone())]);
    assert_eq!(scheduler.keys(), std::slice::from_ref(&key));
    let status = scheduler.status(&key).unwrap();
    assert!(!status.up);
    assert_eq!(status.check, changed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        events.try_recv().is_err(),
        "no new event while it stays DOWN"
    );
    assert!(scheduler.stop(&key));
    assert!(scheduler.keys().is_empty());
}

#[tokio::test]
async fn desired_checks_come_from_the_config() {
    let text = r#"
[node.lb1]
interface = "eth0"
snat_ports = "20000-24999"

[[service]]
name = "horizon"
vip = "192.0.2.20"
port = 443
[service.check]
kind = "tls-hello"
rise = 3

[[service.backend]]
name = "cs1"
address = "198.51.100.21:443"

[[service.backend]]
name = "cs2"
address = "198.51.100.22:443"
check = { port = 8443 }

[[service]]
name = "plain"
vip = "192.0.2.30"
port = 80

[[service.backend]]
name = "web1"
address = "198.51.100.31:80"
"#;
    let config = crate::config::parse(text, "lbd.toml").unwrap();
    let desired = desired_checks(&config);
    let keys: Vec<String> = desired.iter().map(|(key, _, _)| key.to_string()).collect();
    assert_eq!(keys, ["horizon/cs1", "horizon/cs2"], "web1 has no check");
    assert_eq!(desired[0].2.kind, CheckKind::TlsHello);
    assert_eq!(desired[0].2.rise, 3);
    assert_eq!(desired[1].2.port, Some(8443));
}
