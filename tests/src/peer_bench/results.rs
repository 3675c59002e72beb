//! The peer bench's arithmetic and report, pure: runs in, table rows, the
//! issue's target and the JSON out. The binary does the measuring.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::bench::median_f64;

/// What stands between the client and the backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Setup {
    /// The client talks to one backend; no balancer on the path.
    Direct,
    /// DNAT + masquerade + conntrack in the balancer's namespace.
    Nftables,
    /// lbd's XDP program on the balancer's interface.
    Lbd,
}

impl Setup {
    pub const ALL: [Setup; 3] = [Setup::Direct, Setup::Nftables, Setup::Lbd];

    pub fn name(self) -> &'static str {
        match self {
            Setup::Direct => "direct",
            Setup::Nftables => "nftables",
            Setup::Lbd => "lbd",
        }
    }
}

/// How the load is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// wrk, one client address, connections kept alive.
    KeepAlive,
    /// wrk with `Connection: close`, one client address: the worst case,
    /// which `balance source` pins to one backend.
    CloseOneClient,
    /// lab-client, a new connection per request from each of 200 addresses.
    CloseManyClients,
}

impl Shape {
    pub const ALL: [Shape; 3] = [
        Shape::KeepAlive,
        Shape::CloseOneClient,
        Shape::CloseManyClients,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::KeepAlive => "keep-alive, 1 client address",
            Shape::CloseOneClient => "conn per request, 1 client address",
            Shape::CloseManyClients => "conn per request, 200 client addresses",
        }
    }

    /// Whether each request has its own connection.
    pub fn per_request_connections(self) -> bool {
        !matches!(self, Shape::KeepAlive)
    }
}

/// One measured run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Run {
    pub round: usize,
    pub setup: Setup,
    pub shape: Shape,
    /// Requests answered 200 in full.
    pub ok: u64,
    /// Failed connects, reads, writes, timeouts and non-200 answers.
    pub errors: u64,
    pub seconds: f64,
    /// CPU of the bench's processes plus ksoftirqd, ns.
    pub cpu_ns: u64,
    /// CPU of the whole machine (other users included), ns.
    pub machine_cpu_ns: u64,
    /// SYNs the clients had to send again: each is a connection that
    /// waited at least a second for its handshake.
    pub syn_retransmits: u64,
}

impl Run {
    pub fn req_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn cpu_us_per_req(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.cpu_ns as f64 / 1000.0 / self.ok as f64)
    }

    /// Cores the bench's processes kept busy on average.
    pub fn cores(&self) -> f64 {
        if self.seconds > 0.0 {
            self.cpu_ns as f64 / 1e9 / self.seconds
        } else {
            0.0
        }
    }

    pub fn machine_cpu_us_per_req(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.machine_cpu_ns as f64 / 1000.0 / self.ok as f64)
    }
}

/// One line of the table: medians over the rounds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub shape: Shape,
    pub setup: Setup,
    pub req_per_s: f64,
    /// Median over rounds of req/s divided by direct's in the same round.
    pub ratio_to_direct: Option<f64>,
    pub cpu_us_per_req: Option<f64>,
    /// Median over rounds of direct's CPU per request in the same round
    /// divided by this one's: requests per CPU second relative to direct.
    /// Unlike req/s it does not move with the share of a busy machine a run
    /// happened to get.
    pub cpu_ratio_to_direct: Option<f64>,
    pub machine_cpu_us_per_req: Option<f64>,
    /// Median cores busy with the bench: on a shared machine, how much of
    /// it the run got.
    pub cores: f64,
    /// Errors summed over the rounds.
    pub errors: u64,
    /// Client SYN retransmissions summed over the rounds.
    pub syn_retransmits: u64,
    pub req_per_s_by_round: Vec<f64>,
}

/// The rows, shapes in [`Shape::ALL`] order and setups in [`Setup::ALL`]
/// order within each, for every (shape, setup) that ran.
pub fn rows(runs: &[Run]) -> Vec<Row> {
    let mut by_key: BTreeMap<(Shape, Setup), Vec<&Run>> = BTreeMap::new();
    for run in runs {
        by_key.entry((run.shape, run.setup)).or_default().push(run);
    }
    let direct_run = |shape: Shape, round: usize| {
        runs.iter()
            .find(|r| r.shape == shape && r.setup == Setup::Direct && r.round == round)
    };
    let direct_in = |shape: Shape, round: usize| {
        direct_run(shape, round)
            .map(Run::req_per_s)
            .filter(|rps| *rps > 0.0)
    };
    let mut out = Vec::new();
    for shape in Shape::ALL {
        for setup in Setup::ALL {
            let Some(list) = by_key.get(&(shape, setup)) else {
                continue;
            };
            let rates: Vec<f64> = list.iter().map(|r| r.req_per_s()).collect();
            let ratios: Vec<f64> = list
                .iter()
                .filter_map(|r| Some(r.req_per_s() / direct_in(shape, r.round)?))
                .collect();
            let cpu: Vec<f64> = list.iter().filter_map(|r| r.cpu_us_per_req()).collect();
            let efficiency: Vec<f64> = list
                .iter()
                .filter_map(|r| {
                    let direct = direct_run(shape, r.round)?.cpu_us_per_req()?;
                    Some(direct / r.cpu_us_per_req().filter(|c| *c > 0.0)?)
                })
                .collect();
            let machine: Vec<f64> = list
                .iter()
                .filter_map(|r| r.machine_cpu_us_per_req())
                .collect();
            out.push(Row {
                shape,
                setup,
                req_per_s: median_f64(&rates).unwrap_or(0.0),
                ratio_to_direct: median_f64(&ratios),
                cpu_us_per_req: median_f64(&cpu),
                cpu_ratio_to_direct: median_f64(&efficiency),
                machine_cpu_us_per_req: median_f64(&machine),
                cores: median_f64(&list.iter().map(|r| r.cores()).collect::<Vec<_>>())
                    .unwrap_or(0.0),
                errors: list.iter().map(|r| r.errors).sum(),
                syn_retransmits: list.iter().map(|r| r.syn_retransmits).sum(),
                req_per_s_by_round: rates,
            });
        }
    }
    out
}

/// The target for one connection-per-request shape: lbd's ratio to
/// direct at least nftables', with no SYN dropped for want of a SNAT port.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    pub shape: Shape,
    pub lbd_ratio: Option<f64>,
    pub nftables_ratio: Option<f64>,
    /// The same comparison per CPU second (not part of the target; steadier
    /// on a shared machine).
    pub lbd_cpu_ratio: Option<f64>,
    pub nftables_cpu_ratio: Option<f64>,
    pub drop_snat_exhausted: u64,
    pub met: bool,
}

pub fn targets(rows: &[Row], drop_snat_exhausted: u64) -> Vec<Target> {
    let row =
        |shape: Shape, setup: Setup| rows.iter().find(|r| r.shape == shape && r.setup == setup);
    let ratio = |shape: Shape, setup: Setup| row(shape, setup).and_then(|r| r.ratio_to_direct);
    let cpu_ratio =
        |shape: Shape, setup: Setup| row(shape, setup).and_then(|r| r.cpu_ratio_to_direct);
    Shape::ALL
        .into_iter()
        .filter(|s| s.per_request_connections())
        .filter_map(|shape| {
            let lbd = ratio(shape, Setup::Lbd);
            let nft = ratio(shape, Setup::Nftables);
            if lbd.is_none() && nft.is_none() {
                return None;
            }
            Some(Target {
                shape,
                lbd_ratio: lbd,
                nftables_ratio: nft,
                lbd_cpu_ratio: cpu_ratio(shape, Setup::Lbd),
                nftables_cpu_ratio: cpu_ratio(shape, Setup::Nftables),
                drop_snat_exhausted,
                met: drop_snat_exhausted == 0 && matches!((lbd, nft), (Some(l), Some(n)) if l >= n),
            })
        })
        .collect()
}

/// The table as printed.
pub fn render(rows: &[Row]) -> String {
    let fmt =
        |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    let header = [
        "shape",
        "setup",
        "req/s",
        "ratio to direct",
        "CPU us/req",
        "req/CPU vs direct",
        "cores",
        "errors",
        "SYN retrans",
    ];
    let lines: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.shape.name().to_string(),
                r.setup.name().to_string(),
                format!("{:.0}", r.req_per_s),
                fmt(r.ratio_to_direct, 2),
                fmt(r.cpu_us_per_req, 1),
                fmt(r.cpu_ratio_to_direct, 2),
                format!("{:.2}", r.cores),
                r.errors.to_string(),
                r.syn_retransmits.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut push = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i < 2 {
                text.push_str(&format!("{cell:<w$}  "));
            } else {
                text.push_str(&format!("{cell:>w$}  "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    push(&header);
    let mut last_shape = None;
    for (row, line) in rows.iter().zip(&lines) {
        let shape = if last_shape == Some(row.shape) {
            ""
        } else {
            line[0].as_str()
        };
        last_shape = Some(row.shape);
        let cells: Vec<&str> = std::iter::once(shape)
            .chain(line[1..].iter().map(String::as_str))
            .collect();
        push(&cells);
    }
    out
}

/// `target/bench/peer.json`.
#[derive(Clone, Debug, Serialize)]
pub struct PeerResults {
    pub method: String,
    pub rounds: usize,
    pub seconds_per_run: f64,
    pub rows: Vec<Row>,
    /// lbd's reason counters after each run, summed over the runs (a fresh
    /// agent each).
    pub lbd_datapath_events: BTreeMap<String, u64>,
    pub targets: Vec<Target>,
    pub runs: Vec<Run>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: usize, setup: Setup, shape: Shape, ok: u64) -> Run {
        Run {
            round,
            setup,
            shape,
            ok,
            errors: 0,
            seconds: 1.0,
            cpu_ns: ok * 100_000,
            machine_cpu_ns: ok * 150_000,
            syn_retransmits: 0,
        }
    }

    #[test]
    fn ratios_are_taken_within_a_round_then_the_median() {
        let shape = Shape::CloseOneClient;
        let runs = vec![
            run(0, Setup::Direct, shape, 1000),
            run(0, Setup::Lbd, shape, 900),
            run(1, Setup::Direct, shape, 500),
            run(1, Setup::Lbd, shape, 400),
            run(2, Setup::Direct, shape, 800),
            run(2, Setup::Lbd, shape, 720),
        ];
        let rows = rows(&runs);
        assert_eq!(rows.len(), 2);
        let lbd = &rows[1];
        assert_eq!(lbd.setup, Setup::Lbd);
        assert_eq!(lbd.req_per_s, 720.0);
        // 0.9, 0.8, 0.9: the median of the per-round ratios, not 720/800.
        assert!((lbd.ratio_to_direct.unwrap() - 0.9).abs() < 1e-9);
        assert!((lbd.cpu_us_per_req.unwrap() - 100.0).abs() < 1e-9);
        // The same CPU per request as direct in every round.
        assert!((lbd.cpu_ratio_to_direct.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(rows[0].ratio_to_direct, Some(1.0));
    }

    #[test]
    fn the_target_needs_the_ratio_and_no_snat_exhaustion() {
        let shape = Shape::CloseOneClient;
        let runs = vec![
            run(0, Setup::Direct, shape, 1000),
            run(0, Setup::Nftables, shape, 700),
            run(0, Setup::Lbd, shape, 800),
        ];
        let rows = rows(&runs);
        let met = targets(&rows, 0);
        assert_eq!(met.len(), 1);
        assert!(met[0].met);
        assert!(!targets(&rows, 1)[0].met, "a SNAT drop fails the target");
        let slower = vec![
            run(0, Setup::Direct, shape, 1000),
            run(0, Setup::Nftables, shape, 700),
            run(0, Setup::Lbd, shape, 600),
        ];
        assert!(!targets(&super::rows(&slower), 0)[0].met);
    }

    #[test]
    fn the_table_names_each_shape_once() {
        let runs: Vec<Run> = Setup::ALL
            .into_iter()
            .map(|s| run(0, s, Shape::KeepAlive, 100))
            .collect();
        let text = render(&rows(&runs));
        assert_eq!(text.matches("keep-alive").count(), 1, "{text}");
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.lines().nth(3).unwrap().contains("lbd"), "{text}");
    }
}
