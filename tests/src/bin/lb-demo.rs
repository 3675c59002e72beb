//! A guided run of lb in a namespace lab: a Horizon-style service (VIP
//! 192.0.2.10:443 over connection servers cs1..cs3), 200 client addresses
//! connecting several times each, a per-backend table, the persistence
//! check and the data path's own counters. Tears the lab down at the end,
//! on error, on panic and on Ctrl-C. Needs root and a built lbd.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use lb_tests::lab::{self, Lab, LabServer, ServiceConfig, SpreadReport};
use lb_userspace::control::format::bytes;

const SERVICE_PORT: u16 = 443;

#[derive(Parser, Debug)]
#[command(about = "Run lb in a network-namespace lab and show what it does")]
struct Args {
    /// Client source addresses (203.0.113.10 on).
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Connection servers behind the VIP.
    #[arg(long, default_value_t = 3)]
    backends: usize,
    /// Connections per client, one after the other.
    #[arg(long, default_value_t = 5)]
    per_client: usize,
    /// Bytes each connection sends and gets echoed back.
    #[arg(long, default_value_t = 16_384)]
    payload: usize,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("\nlb-demo failed: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<()> {
    // Fail before building anything when lbd is not there.
    let lbd_path = lab::binaries::lbd()?;
    banner("lb demo: a Horizon-style service behind an XDP load balancer");

    let started = Instant::now();
    let lab = Arc::new(
        Lab::builder("demo")
            .backends(args.backends)
            .client_addrs(args.clients)
            .build()?,
    );
    tear_down_on_ctrl_c(lab.clone());
    // The Ctrl-C thread holds a second reference, so Drop of the Arc alone
    // would not tear down on an error or panic: this guard does.
    let _guard = TeardownGuard(lab.clone());
    step(&format!(
        "lab {} built in {:.2?}: clients 203.0.113.10-{} | lb1 192.0.2.2 (VIP {}) | backends 198.51.100.11-{}",
        lab.prefix(),
        started.elapsed(),
        lab.client_addrs().last().expect("at least one client"),
        lab.vip(),
        lab.backend_addr(args.backends),
    ));

    let servers = start_connection_servers(&lab, args.backends)?;
    step(&format!(
        "connection servers {} listening on port {SERVICE_PORT}",
        servers
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let mut backends = lab.backend_configs(SERVICE_PORT, &[]);
    for (config, server) in backends.iter_mut().zip(&servers) {
        config.name = server.name.clone();
    }
    let mut service = ServiceConfig::tcp("horizon", lab.vip(), SERVICE_PORT, backends);
    // As in examples/horizon.toml: a client keeps its Connection Server for
    // an hour after its last connection.
    service.persistence_timeout = Some("1h".into());
    let config = lab.lbd_config(vec![service]);
    let config_path = lab.write_config("horizon.toml", &config)?;
    step(&format!("lbd config ({}):", config_path.display()));
    for line in config.render()?.lines() {
        println!("      {line}");
    }

    let mut lbd = lab.start_lbd(1, &config_path)?;
    let vip = SocketAddrV4::new(lab.vip(), SERVICE_PORT);
    let ready = lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))?;
    step(&format!(
        "lbd ({}) is forwarding {vip} after {ready:.2?} (node {}, pid {})",
        lbd_path.display(),
        lbd.node(),
        lbd.pid()
    ));

    let before: Vec<_> = servers
        .iter()
        .map(|s| lab.server_stats(s))
        .collect::<Result<_>>()?;
    step(&format!(
        "traffic: {} clients x {} connections, {} echoed per connection ...",
        args.clients,
        args.per_client,
        bytes(args.payload as u64)
    ));
    let payload = args.payload.to_string();
    let report = lab.spread(vip, args.clients, args.per_client, &["--payload", &payload])?;
    let after: Vec<_> = servers
        .iter()
        .map(|s| lab.server_stats(s))
        .collect::<Result<_>>()?;

    print_table(&report, &servers, &before, &after);
    print_persistence(&report, args.clients);
    print_counters(&lab);

    lbd.check_running()?;
    let stopping = Instant::now();
    let status = lbd.stop(Duration::from_secs(10));
    drop(lbd);
    step(&format!(
        "lbd stopped ({}); the pinned program would keep forwarding without it",
        match status {
            Ok(s) => s.to_string(),
            Err(e) => format!("{e:#}"),
        }
    ));
    let config_arg = config_path.to_string_lossy().into_owned();
    match lab.lbd_command(1, &["stop", "--config", &config_arg, "--detach"]) {
        Ok(_) => step("`lbd stop --detach` removed the data path"),
        Err(e) => step(&format!("`lbd stop --detach` failed: {e:#}")),
    }
    lab.teardown()?;
    step(&format!(
        "lab torn down, {:.2?} after stopping lbd; nothing left behind",
        stopping.elapsed()
    ));
    Ok(())
}

fn start_connection_servers(lab: &Lab, count: usize) -> Result<Vec<LabServer>> {
    (1..=count)
        .map(|n| {
            let addr = SocketAddr::from((lab.backend_addr(n), SERVICE_PORT));
            lab.start_server(&format!("be{n}"), &format!("cs{n}"), addr, false)
        })
        .collect()
}

fn print_table(
    report: &SpreadReport,
    servers: &[LabServer],
    before: &[lab::ServerStats],
    after: &[lab::ServerStats],
) {
    let clients = report.clients_per_backend();
    println!();
    println!(
        "   {:<8} {:<20} {:>11} {:>8} {:>8} {:>12} {:>12}",
        "backend", "address", "connections", "share", "clients", "echoed", "server I/O"
    );
    println!("   {}", "-".repeat(85));
    let total: u64 = report.per_backend.values().map(|t| t.connections).sum();
    for ((server, b), a) in servers.iter().zip(before).zip(after) {
        let tally = report
            .per_backend
            .get(&server.name)
            .cloned()
            .unwrap_or_default();
        let share = if total > 0 {
            100.0 * tally.connections as f64 / total as f64
        } else {
            0.0
        };
        let io = (a.bytes_in + a.bytes_out) - (b.bytes_in + b.bytes_out);
        println!(
            "   {:<8} {:<20} {:>11} {:>7.1}% {:>8} {:>12} {:>12}",
            server.name,
            server.listen.to_string(),
            tally.connections,
            share,
            clients.get(&server.name).copied().unwrap_or(0),
            bytes(tally.bytes),
            bytes(io),
        );
    }
    println!("   {}", "-".repeat(85));
    println!(
        "   {:<29} {:>11} {:>18}   in {:.2} s, {} failed",
        "total",
        total,
        report.per_source.len(),
        report.elapsed_ms as f64 / 1000.0,
        report.errors
    );
    for sample in &report.error_samples {
        println!("   error: {sample}");
    }
}

fn print_persistence(report: &SpreadReport, clients: usize) {
    let wandering = report.wandering_sources();
    let answered = report.per_source.values().filter(|n| !n.is_empty()).count();
    println!();
    println!(
        "   persistence: each of the {clients} clients stayed on one backend: {}",
        if wandering.is_empty() && answered == clients {
            "yes"
        } else {
            "NO"
        }
    );
    if answered != clients {
        println!("     only {answered} of {clients} clients got an answer");
    }
    for (source, backends) in wandering.iter().take(10) {
        println!("     {source} reached {backends:?}");
    }
}

fn print_counters(lab: &Lab) {
    println!();
    let pins = lab.lbd_pin_dir(1);
    let counters = match lab::counters::read_pinned(&pins) {
        Ok(c) => c,
        Err(e) => {
            println!("   data path counters: not available ({e:#})");
            return;
        }
    };
    println!(
        "   data path counters (pinned maps under {}):",
        pins.display()
    );
    println!(
        "   {:<4} {:<20} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "id", "backend", "new flows", "pkts ->", "bytes ->", "pkts <-", "bytes <-"
    );
    for b in &counters.backends {
        println!(
            "   {:<4} {:<20} {:>9} {:>10} {:>10} {:>10} {:>10}",
            b.id,
            b.address.to_string(),
            b.stats.new_flows,
            b.stats.packets_to_backend,
            bytes(b.stats.bytes_to_backend),
            b.stats.packets_to_client,
            bytes(b.stats.bytes_to_client),
        );
    }
    println!(
        "   flow table entries: {} (two per connection; new flows include the readiness probe)",
        counters.flow_entries
    );
    let reasons: BTreeMap<_, _> = counters.reasons.iter().copied().collect();
    if !reasons.is_empty() {
        let text: Vec<String> = reasons.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("   not forwarded: {}", text.join(", "));
    }
}

struct TeardownGuard(Arc<Lab>);

impl Drop for TeardownGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.teardown() {
            eprintln!("{e:#}");
        }
    }
}

/// Ctrl-C: tear the lab down before exiting (Drop would not run).
fn tear_down_on_ctrl_c(lab: Arc<Lab>) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        if runtime.block_on(tokio::signal::ctrl_c()).is_ok() {
            eprintln!("\ninterrupted: tearing the lab down");
            if let Err(e) = lab.teardown() {
                eprintln!("{e:#}");
            }
            std::process::exit(130);
        }
    });
}

fn banner(title: &str) {
    println!(
        "{}\n {title}\n{}",
        "=".repeat(title.len() + 2),
        "=".repeat(title.len() + 2)
    );
}

fn step(text: &str) {
    println!(" * {text}");
}
