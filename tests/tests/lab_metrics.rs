//! `/metrics` against the data path's own counters: after traffic through
//! the VIP, the pinned maps are read, then `/metrics` (basic auth, from the
//! client namespace), then the maps again; every backend's packets, bytes
//! and new flows in `/metrics` must lie between the two map readings (the
//! data path may count stray packets between the reads, never fewer).
//!
//! `cargo build -p lb-userspace --bin lbd && cargo test -p lb-tests --test lab_metrics -- --test-threads=1`

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::Duration;

use lb_common::TrafficStats;
use lb_tests::lab::admin_http::{ADMIN_PORT, AdminUser, HttpRequest, admin_config, basic_auth};
use lb_tests::lab::counters::read_pinned;
use lb_tests::lab::prometheus;
use lb_tests::lab::{Lab, ServiceConfig, assert_nothing_left, topology};

const SOURCES: usize = 50;
const BACKENDS: usize = 3;

/// A metric, its labels, and the map values read before and after it.
type Bracket<'a> = (&'a str, Vec<(&'a str, &'a str)>, u64, u64);

/// Backend name -> summed counters, from the pinned maps.
fn map_counters(lab: &Lab) -> BTreeMap<String, TrafficStats> {
    let counters = read_pinned(&lab.lbd_pin_dir(1)).expect("reading the pinned maps");
    counters
        .backends
        .into_iter()
        .map(|b| {
            let n = (1..=BACKENDS)
                .find(|n| lab.backend_addr(*n) == *b.address.ip())
                .unwrap_or_else(|| panic!("the maps hold an unknown backend {}", b.address));
            (format!("be{n}"), b.stats)
        })
        .collect()
}

#[test]
fn metrics_match_the_pinned_maps_after_traffic() {
    let lab = Lab::datapath("metric", BACKENDS, SOURCES).expect("building the lab");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);
    lab.start_backend_servers(80).expect("starting backends");
    let reader = AdminUser::new("prom", "readonly", "scrape-me").expect("hashing");
    let page = SocketAddrV4::new(topology::lb_front_addr(1), ADMIN_PORT);
    let svc = ServiceConfig::tcp("web", lab.vip(), 80, lab.backend_configs(80, &[1, 1, 1]));
    let mut lbd_config = lab.lbd_config(vec![svc]);
    lbd_config.admin = Some(admin_config(page, "30s", std::slice::from_ref(&reader)));
    let config = lab.write_config("lbd.toml", &lbd_config).unwrap();
    let mut lbd = lab.start_lbd(1, &config).expect("starting lbd");
    let vip = SocketAddrV4::new(lab.vip(), 80);
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(20))
        .expect("service up");
    lab.wait_for_admin(&mut lbd, "cl", page, Duration::from_secs(20))
        .expect("admin page up");

    let spread = lab
        .spread(vip, SOURCES, 3, &["--payload", "2000"])
        .expect("traffic");
    assert_eq!(spread.errors, 0, "{:?}", spread.error_samples);

    // The unauthenticated scrape is refused and reveals nothing.
    let refused = lab
        .http(
            "cl",
            page,
            &HttpRequest::get("/metrics"),
            Duration::from_secs(10),
        )
        .expect("scrape without auth");
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(!refused.body.contains("lb_backend"), "{}", refused.body);
    let wrong = lab
        .http(
            "cl",
            page,
            &HttpRequest::get("/metrics").header("Authorization", &basic_auth("prom", "guess")),
            Duration::from_secs(10),
        )
        .expect("scrape with a wrong password");
    assert_eq!(wrong.status, 401, "{}", wrong.body);

    let first = map_counters(&lab);
    let scrape = lab
        .http(
            "cl",
            page,
            &HttpRequest::get("/metrics").header("Authorization", &reader.basic_auth()),
            Duration::from_secs(10),
        )
        .expect("scraping /metrics");
    let second = map_counters(&lab);
    assert_eq!(scrape.status, 200, "{}", scrape.body);
    let metrics = prometheus::parse(&scrape.body).unwrap_or_else(|e| {
        panic!(
            "/metrics is not valid Prometheus text: {e:#}\n{}",
            scrape.body
        )
    });

    assert_eq!(first.len(), BACKENDS, "maps: {first:?}");
    let mut total_new_flows = 0.0;
    for (backend, low) in &first {
        let high = &second[backend];
        let labels = |direction: &'static str| {
            vec![
                ("service", "web"),
                ("backend", backend.as_str()),
                ("direction", direction),
            ]
        };
        let checks: [Bracket; 5] = [
            (
                "lb_backend_packets_total",
                labels("to_backend"),
                low.packets_to_backend,
                high.packets_to_backend,
            ),
            (
                "lb_backend_packets_total",
                labels("to_client"),
                low.packets_to_client,
                high.packets_to_client,
            ),
            (
                "lb_backend_bytes_total",
                labels("to_backend"),
                low.bytes_to_backend,
                high.bytes_to_backend,
            ),
            (
                "lb_backend_bytes_total",
                labels("to_client"),
                low.bytes_to_client,
                high.bytes_to_client,
            ),
            (
                "lb_backend_new_flows_total",
                vec![("service", "web"), ("backend", backend.as_str())],
                low.new_flows,
                high.new_flows,
            ),
        ];
        for (name, labels, low, high) in checks {
            let value = metrics
                .value(name, &labels)
                .unwrap_or_else(|e| panic!("{e:#}\n{}", scrape.body));
            assert!(
                (low as f64) <= value && value <= (high as f64),
                "{name}{labels:?} = {value}, but the maps said {low} before and {high} after"
            );
            if name == "lb_backend_new_flows_total" {
                total_new_flows += value;
            }
        }
        let up = metrics
            .value("lb_backend_up", &[("service", "web"), ("backend", backend)])
            .expect("lb_backend_up");
        assert_eq!(up, 1.0, "{backend} is up");
    }
    // Every connection of the spread was one new flow on some backend.
    assert!(
        total_new_flows >= spread.attempts as f64,
        "{total_new_flows} new flows in /metrics for {} connections",
        spread.attempts
    );
    let bytes_to_backend: f64 = metrics
        .find("lb_backend_bytes_total", &[("direction", "to_backend")])
        .map(|s| s.value)
        .sum();
    assert!(
        bytes_to_backend >= (spread.attempts * 2000) as f64,
        "{bytes_to_backend} bytes to backends for {} connections of 2000 bytes",
        spread.attempts
    );

    lbd.stop(Duration::from_secs(10)).expect("stopping lbd");
    drop(lbd);
    lab.teardown().expect("teardown");
    drop(lab);
    assert_nothing_left(&prefix, &pin_dir);
}
