//! What `lab-client` prints and `lab-server` reports, as JSON. Shared by the
//! programs that write it and the tests and demo that read it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Keep at most this many error messages in a report.
pub const MAX_ERROR_SAMPLES: usize = 10;

/// Connections and echoed payload bytes that one backend answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendTally {
    pub connections: u64,
    /// Payload bytes sent and echoed back (each byte counted once).
    pub bytes: u64,
}

/// `lab-client churn`: connections opened and closed back to back by several
/// workers, from one or more source addresses, for a fixed time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChurnReport {
    pub target: String,
    /// Client addresses the workers used.
    pub sources: usize,
    pub workers: usize,
    pub attempts: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Backend name -> connections it answered.
    pub per_backend: BTreeMap<String, u64>,
    pub elapsed_ms: u64,
}

impl ChurnReport {
    /// Connections that succeeded.
    pub fn succeeded(&self) -> u64 {
        self.per_backend.values().sum()
    }

    /// Successful connections per second over the run.
    pub fn rate(&self) -> f64 {
        self.succeeded() as f64 * 1000.0 / self.elapsed_ms.max(1) as f64
    }
}

/// `lab-client spread`: K sequential connections from each source address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpreadReport {
    pub target: String,
    pub protocol: String,
    /// Source address -> backend names, in the order the connections ran.
    /// A failed connection leaves no entry.
    pub per_source: BTreeMap<String, Vec<String>>,
    pub per_backend: BTreeMap<String, BackendTally>,
    pub attempts: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub elapsed_ms: u64,
}

impl SpreadReport {
    /// Sources whose answers came from more than one backend.
    pub fn wandering_sources(&self) -> Vec<(&str, BTreeSet<&str>)> {
        self.per_source
            .iter()
            .map(|(src, names)| (src.as_str(), names.iter().map(String::as_str).collect()))
            .filter(|(_, set): &(&str, BTreeSet<&str>)| set.len() > 1)
            .collect()
    }

    /// Source -> the backend that answered its first connection.
    pub fn backend_of_each_source(&self) -> BTreeMap<String, String> {
        self.per_source
            .iter()
            .filter_map(|(source, names)| Some((source.clone(), names.first()?.clone())))
            .collect()
    }

    /// Panics, naming `what`, unless all `sources` sources connected without
    /// an error and each stayed on one backend.
    pub fn assert_all_ok_and_sticky(&self, sources: usize, what: &str) {
        assert_eq!(
            self.errors, 0,
            "{what}: failed connections: {:?}",
            self.error_samples
        );
        assert_eq!(self.per_source.len(), sources, "{what}: sources missing");
        let wandering = self.wandering_sources();
        assert!(
            wandering.is_empty(),
            "{what}: sources that changed backend: {wandering:?}"
        );
    }

    /// Backend -> number of distinct sources that reached it.
    pub fn clients_per_backend(&self) -> BTreeMap<String, u64> {
        let mut clients = BTreeMap::new();
        for names in self.per_source.values() {
            let distinct: BTreeSet<&String> = names.iter().collect();
            for name in distinct {
                *clients.entry(name.clone()).or_insert(0) += 1;
            }
        }
        clients
    }
}

/// `lab-client hold`: N connections open at once, then an echo on each.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldReport {
    pub target: String,
    pub total: u64,
    /// Connections that answered a name, stayed open, and echoed a line.
    pub successes: u64,
    pub failures: u64,
    /// Successful connections by the backend name they answered.
    pub per_backend: BTreeMap<String, u64>,
    /// How many connections were open at the same time.
    pub peak_open: u64,
    pub connect_ms: u64,
    pub echo_ms: u64,
    pub elapsed_ms: u64,
    pub error_samples: Vec<String>,
}

/// Counters of one `lab-server`, served as JSON on its stats address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStats {
    pub name: String,
    /// TCP connections accepted since start.
    pub accepted: u64,
    /// TCP connections open now.
    pub open: u64,
    /// Most TCP connections open at once since start.
    pub peak_open: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// UDP datagrams answered.
    pub datagrams: u64,
}

/// The backend named `name` of the first service in an `lbd status --json`
/// answer; panics when it is missing.
pub fn status_backend<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["services"][0]["backends"]
        .as_array()
        .expect("the status lists backends")
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the status: {status}"))
}

/// Collects up to [`MAX_ERROR_SAMPLES`] distinct-enough error messages.
#[derive(Debug, Default)]
pub struct ErrorSamples {
    pub count: u64,
    pub samples: Vec<String>,
}

impl ErrorSamples {
    pub fn push(&mut self, message: String) {
        self.count += 1;
        if self.samples.len() < MAX_ERROR_SAMPLES {
            self.samples.push(message);
        }
    }

    /// Adds another collector's count and as many of its samples as fit.
    pub fn merge(&mut self, other: ErrorSamples) {
        self.count += other.count;
        let room = MAX_ERROR_SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.into_iter().take(room));
    }
}

/// `lab-client http`: HTTP/1.1 GETs for a fixed time from many source
/// addresses, one connection per worker (kept alive, or one per request).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpReport {
    pub target: String,
    pub sources: u64,
    pub connections: u64,
    /// Whether every request had its own connection (`Connection: close`).
    pub close: bool,
    /// Requests answered 200 with the whole body.
    pub ok: u64,
    /// Answers with another status.
    pub not_ok: u64,
    /// Connects, writes or reads that failed or timed out.
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// The run's duration: answers after it are not counted.
    pub elapsed_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(per_source: &[(&str, &[&str])]) -> SpreadReport {
        SpreadReport {
            per_source: per_source
                .iter()
                .map(|(s, names)| (s.to_string(), names.iter().map(|n| n.to_string()).collect()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn sticky_sources_are_not_reported_as_wandering() {
        let r = report(&[
            ("a", &["be1", "be1"]),
            ("b", &["be2", "be3"]),
            ("c", &["be2"]),
        ]);
        let wandering = r.wandering_sources();
        assert_eq!(wandering.len(), 1);
        assert_eq!(wandering[0].0, "b");
    }

    #[test]
    fn clients_are_counted_once_per_backend() {
        let r = report(&[
            ("a", &["be1", "be1"]),
            ("b", &["be2", "be3"]),
            ("c", &["be2"]),
        ]);
        let clients = r.clients_per_backend();
        assert_eq!(clients["be1"], 1);
        assert_eq!(clients["be2"], 2);
        assert_eq!(clients["be3"], 1);
    }

    #[test]
    fn reports_survive_a_json_round_trip() {
        let r = report(&[("203.0.113.10", &["be1"])]);
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<SpreadReport>(&text).unwrap(), r);
    }

    #[test]
    fn error_samples_are_bounded_but_all_counted() {
        let mut e = ErrorSamples::default();
        for i in 0..25 {
            e.push(format!("e{i}"));
        }
        assert_eq!(e.count, 25);
        assert_eq!(e.samples.len(), MAX_ERROR_SAMPLES);
    }
}
