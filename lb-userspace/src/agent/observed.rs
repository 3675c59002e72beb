//! What the agent observes besides the config and the states it holds: the
//! data path's counters, the active flows of the last flow collection, new
//! flows per second, the last health check of each backend and when each
//! backend last changed state. It fills those into the [`NodeStatus`] that
//! `lbd status`, the stats page, its API and `/metrics` all read.
//!
//! Pure: the agent hands in what it read from the maps and the scheduler,
//! so the arithmetic is tested without BPF.

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hasher,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use lb_common::TrafficStats;

use crate::control::{LastCheck, NodeStatus, Traffic};
use crate::health::{self, BackendKey};

/// Unix milliseconds of `at` (0 before 1970, which does not happen).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A short, stable name for a config file's contents: the page header shows
/// it so two nodes can be seen to run the same file.
pub fn config_version(text: &[u8]) -> String {
    let mut hasher = siphasher::sip::SipHasher24::new_with_keys(0x6c62_6366, 0x6776_6572);
    hasher.write(text);
    format!("{:012x}", hasher.finish() >> 16)
}

/// New flows per second of each backend id, from the `new_flows` counter
/// sampled at each flow collection.
#[derive(Debug, Default)]
pub struct FlowRates {
    last: HashMap<u32, (Instant, u64)>,
    rates: HashMap<u32, f64>,
}

impl FlowRates {
    /// Records the counters read at `now`; the rate of an id is the
    /// increase since its previous sample over the time between them. A
    /// counter that went down (the id was reused and zeroed) counts as 0.
    pub fn sample(&mut self, now: Instant, counters: impl IntoIterator<Item = (u32, u64)>) {
        let mut last = HashMap::new();
        let mut rates = HashMap::new();
        for (id, count) in counters {
            if let Some(&(then, before)) = self.last.get(&id) {
                let secs = now.saturating_duration_since(then).as_secs_f64();
                if secs > 0.0 {
                    rates.insert(id, count.saturating_sub(before) as f64 / secs);
                }
            }
            last.insert(id, (now, count));
        }
        self.last = last;
        self.rates = rates;
    }

    pub fn rate(&self, id: u32) -> f64 {
        self.rates.get(&id).copied().unwrap_or(0.0)
    }
}

/// What the agent keeps between status requests.
#[derive(Debug)]
pub struct Observed {
    pub started_at: SystemTime,
    pub config_version: String,
    /// Active flows per backend id of the last flow collection, and when.
    pub active: Option<(SystemTime, BTreeMap<u32, u64>)>,
    /// SNAT ports and handshakes of the last flow collection.
    pub ports: crate::dataplane::gc::PortUsage,
    /// `drop_snat_exhausted`, for its rate-limited log line.
    pub snat_exhausted: super::pressure::LimitWatch,
    pub rates: FlowRates,
    /// Last health or admin state change per backend.
    pub changed_at: HashMap<BackendKey, SystemTime>,
}

impl Observed {
    pub fn new(config_version: String) -> Self {
        Observed {
            started_at: SystemTime::now(),
            config_version,
            active: None,
            ports: Default::default(),
            snat_exhausted: Default::default(),
            rates: FlowRates::default(),
            changed_at: HashMap::new(),
        }
    }

    /// A backend's health or admin state changed at `at`.
    pub fn changed(&mut self, key: BackendKey, at: SystemTime) {
        self.changed_at.insert(key, at);
    }
}

/// What the data path and the checks say right now, read by the agent.
pub struct Readings<'a> {
    pub backend_stats: &'a dyn Fn(u32) -> Option<TrafficStats>,
    pub service_stats: &'a dyn Fn(u32) -> Option<TrafficStats>,
    pub reasons: Vec<(&'static str, u64)>,
    pub check: &'a dyn Fn(&BackendKey) -> Option<health::CheckRecord>,
}

/// Fills the observed values into `status` (built by `status_report::status`).
pub fn enrich(status: &mut NodeStatus, observed: &Observed, readings: &Readings) {
    status.started_at_ms = unix_ms(observed.started_at);
    status.config_version = observed.config_version.clone();
    status.flows_counted_at_ms = observed.active.as_ref().map(|(at, _)| unix_ms(*at));
    status.datapath_events = readings
        .reasons
        .iter()
        .map(|(label, count)| (label.to_string(), *count))
        .collect();
    status.handshakes_in_progress = observed.ports.handshakes;
    for service in &mut status.services {
        if let Some(stats) = (readings.service_stats)(service.id) {
            service.rst_no_backend = stats.rst_no_backend;
        }
        for backend in &mut service.backends {
            let key = BackendKey::new(&service.name, &backend.name);
            if let Some(stats) = (readings.backend_stats)(backend.id) {
                backend.traffic = Traffic {
                    packets_to_backend: stats.packets_to_backend,
                    bytes_to_backend: stats.bytes_to_backend,
                    packets_to_client: stats.packets_to_client,
                    bytes_to_client: stats.bytes_to_client,
                    new_flows: stats.new_flows,
                };
            }
            backend.active_flows = observed
                .active
                .as_ref()
                .and_then(|(_, per_backend)| per_backend.get(&backend.id).copied())
                .unwrap_or(0);
            backend.snat_ports_in_use = observed
                .ports
                .per_backend
                .get(&backend.id)
                .copied()
                .unwrap_or(0);
            backend.new_flows_per_second = observed.rates.rate(backend.id);
            if backend.health != "unchecked" {
                backend.last_check = (readings.check)(&key).and_then(|check| {
                    let result = check.last_result?;
                    Some(LastCheck {
                        ok: result.is_ok(),
                        result: result.reason(),
                        duration_us: result.duration.as_micros() as u64,
                        at_ms: check.last_check_at.map_or(0, unix_ms),
                    })
                });
            }
            backend.since_ms = observed.changed_at.get(&key).copied().map(unix_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::agent::{
        admin_view::AdminView,
        desired_state::{Ids, map_sizes},
        health_view::HealthView,
        status_report::status,
    };
    use crate::config::{CheckKind, Config, HealthCheck};
    use crate::control::AdminState;
    use crate::health::CheckResult;

    fn horizon() -> Config {
        let text = include_str!("../../../examples/horizon.toml");
        crate::config::parse(text, "horizon.toml").unwrap()
    }

    #[test]
    fn rates_are_the_increase_over_the_time_between_samples() {
        let mut rates = FlowRates::default();
        let t0 = Instant::now();
        rates.sample(t0, [(1, 100), (2, 50)]);
        assert_eq!(rates.rate(1), 0.0, "one sample gives no rate yet");
        rates.sample(t0 + Duration::from_secs(5), [(1, 150), (2, 40), (3, 7)]);
        assert_eq!(rates.rate(1), 10.0);
        assert_eq!(rates.rate(2), 0.0, "a counter reset is no negative rate");
        assert_eq!(rates.rate(3), 0.0, "a new id has no rate yet");
        rates.sample(t0 + Duration::from_secs(7), [(3, 11)]);
        assert_eq!(rates.rate(3), 2.0);
        assert_eq!(rates.rate(1), 0.0, "ids gone from the sample are forgotten");
    }

    #[test]
    fn config_versions_differ_with_the_text_and_are_short() {
        let a = config_version(b"a = 1\n");
        assert_eq!(a, config_version(b"a = 1\n"));
        assert_ne!(a, config_version(b"a = 2\n"));
        assert_eq!(a.len(), 12);
    }

    #[test]
    fn enrich_fills_counters_checks_and_changes() {
        let config = horizon();
        let mut ids = Ids::new(&map_sizes(&config));
        ids.sync(&config, 0).unwrap();
        let svc = &config.services[0];
        let (first, second) = (&svc.backends[0].name, &svc.backends[1].name);
        let admin = AdminView::with([(BackendKey::new(&svc.name, second), AdminState::Maint)]);
        let mut node = status("lb1", &config, &ids, &HealthView::all_up(), &admin, |k| {
            k.backend != *second
        });
        let first_id = node.services[0].backends[0].id;
        let service_id = node.services[0].id;

        let mut observed = Observed::new("abc".into());
        let t0 = Instant::now();
        observed.rates.sample(t0, [(first_id, 10)]);
        observed
            .rates
            .sample(t0 + Duration::from_secs(5), [(first_id, 35)]);
        let counted = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        observed.active = Some((counted, BTreeMap::from([(first_id, 4)])));
        let changed = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        observed.changed(BackendKey::new(&svc.name, first), changed);

        let stats = |id: u32| {
            (id == first_id).then_some(TrafficStats {
                packets_to_backend: 1,
                bytes_to_backend: 2,
                packets_to_client: 3,
                bytes_to_client: 4,
                new_flows: 35,
                rst_no_backend: 0,
            })
        };
        let service_stats = |id: u32| {
            (id == service_id).then_some(TrafficStats {
                rst_no_backend: 9,
                ..TrafficStats::default()
            })
        };
        let checked_at = UNIX_EPOCH + Duration::from_secs(1_700_000_200);
        let check = |key: &BackendKey| {
            (key.backend == *first).then(|| health::CheckRecord {
                address: "198.51.100.21:443".parse().unwrap(),
                check: HealthCheck::new(CheckKind::TlsHello),
                up: true,
                health: 5,
                last_result: Some(CheckResult {
                    kind: CheckKind::TlsHello,
                    outcome: Ok("server hello".into()),
                    duration: Duration::from_micros(1500),
                }),
                last_check_at: Some(checked_at),
                last_change: None,
                checks: 1,
                failures: 0,
            })
        };
        let readings = Readings {
            backend_stats: &stats,
            service_stats: &service_stats,
            reasons: vec![("no_service", 7)],
            check: &check,
        };
        enrich(&mut node, &observed, &readings);

        assert_eq!(node.config_version, "abc");
        assert_eq!(node.flows_counted_at_ms, Some(1_700_000_000_000));
        assert_eq!(node.datapath_events.get("no_service"), Some(&7));
        let service = &node.services[0];
        assert_eq!(service.rst_no_backend, 9);
        let b0 = &service.backends[0];
        assert_eq!(b0.traffic.bytes_to_client, 4);
        assert_eq!(b0.traffic.new_flows, 35);
        assert_eq!(b0.active_flows, 4);
        assert_eq!(b0.new_flows_per_second, 5.0);
        let last = b0.last_check.as_ref().unwrap();
        assert!(last.ok);
        assert_eq!(last.duration_us, 1500);
        assert_eq!(last.at_ms, 1_700_000_200_000);
        assert!(last.result.contains("server hello"), "{}", last.result);
        assert_eq!(b0.since_ms, Some(1_700_000_100_000));
        let b1 = &service.backends[1];
        assert_eq!(b1.summary(), "MAINT");
        assert_eq!((b1.active_flows, b1.last_check.is_none()), (0, true));
        assert_eq!(b1.since_ms, None);
    }
}
