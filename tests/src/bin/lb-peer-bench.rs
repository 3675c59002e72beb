//! `cargo xtask bench`, second part: HTTP through the balancer in a
//! namespace lab, against nftables and against no balancer at all.
//!
//! The lab (`lb_tests::lab`): a client namespace with 200 addresses
//! (203.0.113.10-209), the balancer's namespace lb1 (VIP 192.0.2.10), and
//! three backends be1-be3 (198.51.100.11-13), each running Debian's nginx
//! with one small static page, all joined by a bridge. Three setups take
//! turns for each load shape in every round (the order rotates), so the runs
//! a ratio compares are seconds apart:
//!
//! - direct: the client talks to be1; the balancer is not on the path;
//! - nftables: DNAT of the VIP by a hash of the client address,
//!   masquerade, conntrack (`lb_tests::peer_bench::nftables`);
//! - lbd: a fresh agent for each run, `scheduler = "source"`, default
//!   timeouts, the lab's SNAT range, XDP in native mode on lb1's eth0;
//!   stopped and detached (`lbd stop --detach`) after its run, so the
//!   nftables runs see a plain kernel.
//!
//! Each setup runs three load shapes: wrk keep-alive and wrk with
//! `Connection: close` from one client address (the worst case: `balance
//! source` pins it to one backend), and `lab-client http` with a new
//! connection per request from each of the 200 addresses (wrk cannot bind
//! source addresses). CPU per request comes from a cgroup holding every
//! process the bench starts, plus ksoftirqd (`lb_tests::peer_bench::cpu`).
//! Speed is never asserted; a setup that serves nothing fails the bench.
//!
//! Needs root, nginx and wrk (`cargo xtask bench` installs them).

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use lb_tests::lab::{HttpReport, Lab, Lbd, ServiceConfig, binaries, netns};
use lb_tests::peer_bench::cpu::{BenchCgroup, CpuMeter};
use lb_tests::peer_bench::results::{self, PeerResults, Run, Setup, Shape};
use lb_tests::peer_bench::{netstat, nftables, nginx, wrk};

const ROUNDS: usize = 3;
const SECONDS: f64 = 5.0;
const QUICK_SECONDS: f64 = 1.0;
/// At most this many rounds and seconds: the whole bench stays bounded.
const MAX_ROUNDS: usize = 20;
const MAX_SECONDS: f64 = 60.0;
const CLIENT_ADDRS: usize = 200;
const BACKENDS: usize = 3;
const PORT: u16 = 80;
/// wrk: one thread (two cores carry client, balancer and servers), 32
/// connections in flight.
const WRK_THREADS: &str = "1";
const WRK_CONNECTIONS: &str = "32";
/// lab-client: one connection at a time from each client address.
const MANY_CONNECTIONS: usize = CLIENT_ADDRS;
/// Bound on each operation of the load generators.
const OP_TIMEOUT_SECS: u64 = 5;
/// A load generator still running this long after its run should have
/// ended is killed and the bench fails.
const OVERRUN: Duration = Duration::from_secs(20);
const LBD_START_TIMEOUT: Duration = Duration::from_secs(20);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// SIGINT/SIGTERM only raise a flag, checked between runs, so the lab is
/// always removed by the normal unwinding of `run`. (The load generators,
/// nginx and lbd get the terminal's SIGINT themselves and end.)
fn catch_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-peer-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Options {
    rounds: usize,
    seconds: f64,
    /// Every setup and shape once, briefly, checked to work; no figures.
    quick: bool,
}

fn options() -> Result<Options> {
    let mut o = Options {
        rounds: ROUNDS,
        seconds: SECONDS,
        quick: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> Result<String> {
            args.next().with_context(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--rounds" => {
                let v = value("--rounds")?;
                o.rounds = v
                    .parse()
                    .with_context(|| format!("--rounds needs a number, not {v:?}"))?;
                ensure!(
                    (1..=MAX_ROUNDS).contains(&o.rounds),
                    "--rounds must be 1 to {MAX_ROUNDS}"
                );
            }
            "--seconds" => {
                let v = value("--seconds")?;
                o.seconds = v
                    .parse()
                    .with_context(|| format!("--seconds needs a number, not {v:?}"))?;
                ensure!(
                    o.seconds >= 1.0 && o.seconds <= MAX_SECONDS,
                    "--seconds must be 1 to {MAX_SECONDS} (wrk counts whole seconds)"
                );
            }
            "--quick" => {
                o.quick = true;
                o.rounds = 1;
                o.seconds = QUICK_SECONDS;
            }
            "-h" | "--help" => {
                println!(
                    "lb-peer-bench [--rounds N (default {ROUNDS})] [--seconds S per run (default {SECONDS})] [--quick (every setup and shape once for {QUICK_SECONDS} s, checked, nothing written; measures nothing)]"
                );
                std::process::exit(0);
            }
            other => bail!(
                "unknown argument {other:?}; try --help (options of the XDP timings go to `cargo xtask bench -- xdp ...`)"
            ),
        }
    }
    Ok(o)
}

fn run() -> Result<()> {
    let opts = options()?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    ensure!(
        euid == 0,
        "the peer bench needs root (network namespaces, XDP, nftables, cgroups); run `cargo xtask bench` as root (euid is {euid})"
    );
    for (program, package) in [("nginx", "nginx"), ("wrk", "wrk"), ("nft", "nftables")] {
        ensure!(
            on_path(program),
            "{program} is not installed; `cargo xtask bench` installs it, or `apt-get install {package}`"
        );
    }
    catch_signals();
    lb_tests::lab::rlimit::raise_fd_limit();

    // Before anything is started, so every process of the lab is counted.
    let group = BenchCgroup::enter(&format!("lb-peer-bench-{}", std::process::id()))
        .context("could not set up CPU accounting")?;
    let meter = CpuMeter::new(group)?;
    // Declared after the meter: dropped first, so the lab's processes are
    // gone before the cgroup is removed.
    let lab =
        Lab::datapath("pb", BACKENDS, CLIENT_ADDRS).context("could not build the peer lab")?;
    let bench = PeerLab::prepare(&lab, &meter, &opts)?;

    let mut runs = Vec::new();
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    let started = Instant::now();
    // The setups take turns per shape, so the runs compared in a ratio are
    // seconds apart, not minutes: on a shared machine what else runs
    // changes in between. The order rotates so none is always first.
    for round in 0..opts.rounds {
        for (s, shape) in Shape::ALL.into_iter().enumerate() {
            for i in 0..Setup::ALL.len() {
                let setup = Setup::ALL[(i + round + s) % Setup::ALL.len()];
                check_interrupted()?;
                let slot = bench.slot(setup, shape, round).with_context(|| {
                    format!("{} / {} in round {}", setup.name(), shape.name(), round + 1)
                })?;
                runs.push(slot.run);
                for (reason, count) in slot.lbd_events {
                    *events.entry(reason).or_default() += count;
                }
            }
        }
    }
    let took = started.elapsed();
    drop(bench);
    lab.teardown()?;
    drop(lab);

    let rows = results::rows(&runs);
    let snat_exhausted = events.get("drop_snat_exhausted").copied().unwrap_or(0);
    let targets = results::targets(&rows, snat_exhausted);
    let method = format!(
        "{} interleaved rounds (the setups take turns per shape, order rotating), {} s per run, medians over rounds; ratio = req/s over direct's in the same round; \
         CPU us/req = CPU time of the bench's cgroup ({}) plus ksoftirqd over the run, divided by the requests answered 200; \
         req/CPU vs direct = direct's CPU us/req in the same round over this one's; cores = the run's CPU time over its duration \
         (the machine is shared: req/s follows the cores a run got); SYN retrans = the clients' TCPSynRetrans over the run",
        opts.rounds,
        opts.seconds,
        meter.describe()
    );
    print_report(&rows, &targets, &events, &method, took);
    if opts.quick {
        println!(
            "Quick run: every setup and shape served requests, but {QUICK_SECONDS} s runs in one round measure nothing; no results written."
        );
        return Ok(());
    }
    write_json(&PeerResults {
        method,
        rounds: opts.rounds,
        seconds_per_run: opts.seconds,
        rows,
        lbd_datapath_events: events,
        targets,
        runs,
    })
}

/// The table, the per-round figures, lbd's events and the target verdicts.
fn print_report(
    rows: &[results::Row],
    targets: &[results::Target],
    events: &BTreeMap<String, u64>,
    method: &str,
    took: Duration,
) {
    println!();
    println!("Peer lab: HTTP GET of a small page, nginx backends");
    print!("{}", results::render(rows));
    println!();
    println!(
        "Method: {method}. Shapes: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} (keep-alive, and -H \"Connection: close\") from one client address; lab-client http, one connection per request from each of {CLIENT_ADDRS} addresses at once. Runs took {:.0} s in all.",
        took.as_secs_f64()
    );
    println!("req/s per round:");
    for row in rows {
        let v: Vec<String> = row
            .req_per_s_by_round
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect();
        println!(
            "  {:<40} {:<9} {}",
            row.shape.name(),
            row.setup.name(),
            v.join(" ")
        );
    }
    let shown: Vec<String> = events
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    println!(
        "lbd data-path events (`lbd status` after each of its runs, summed; a fresh agent each run; the others are 0): {}",
        if shown.is_empty() {
            "none".to_string()
        } else {
            shown.join(", ")
        }
    );
    for t in targets {
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
        println!(
            "Target ({}: lbd's ratio at least nftables', no drop_snat_exhausted): lbd {}, nftables {}, drop_snat_exhausted {}: {} (per CPU second: lbd {}, nftables {})",
            t.shape.name(),
            f(t.lbd_ratio),
            f(t.nftables_ratio),
            t.drop_snat_exhausted,
            if t.met { "met" } else { "NOT met" },
            f(t.lbd_cpu_ratio),
            f(t.nftables_cpu_ratio),
        );
    }
}

fn check_interrupted() -> Result<()> {
    ensure!(
        !INTERRUPTED.load(Ordering::Relaxed),
        "interrupted; the lab is being removed"
    );
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|dir| PathBuf::from(dir).join(program).is_file())
}

/// The lab with its servers, routes and configs in place.
struct PeerLab<'a> {
    lab: &'a Lab,
    meter: &'a CpuMeter,
    seconds: f64,
    vip: SocketAddrV4,
    direct: SocketAddrV4,
    lbd_config: PathBuf,
}

/// What one setup's turn produced.
struct Slot {
    run: Run,
    lbd_events: Vec<(String, u64)>,
}

impl<'a> PeerLab<'a> {
    fn prepare(lab: &'a Lab, meter: &'a CpuMeter, opts: &Options) -> Result<PeerLab<'a>> {
        // direct: the client reaches the backends on the link, and they it.
        lab.exec_in(
            "cl",
            &["ip", "route", "add", "198.51.100.0/24", "dev", "eth0"],
        )?;
        for n in 1..=BACKENDS {
            lab.exec_in(
                &format!("be{n}"),
                &["ip", "route", "add", "203.0.113.0/24", "dev", "eth0"],
            )?;
        }
        // One address opens tens of thousands of connections per run; the
        // load generator, not the path, would run out of ports while they
        // sit in TIME_WAIT. wrk's usual setting.
        lab.exec_in("cl", &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])?;
        for n in 1..=BACKENDS {
            nginx::start(lab, n, PORT)?;
        }
        let vip = SocketAddrV4::new(lab.vip(), PORT);
        let service = ServiceConfig::tcp("web", lab.vip(), PORT, lab.backend_configs(PORT, &[]));
        let lbd_config = lab.write_config("lbd.toml", &lab.lbd_config(vec![service]))?;
        Ok(PeerLab {
            lab,
            meter,
            seconds: opts.seconds,
            vip,
            direct: SocketAddrV4::new(lab.backend_addr(1), PORT),
            lbd_config,
        })
    }

    /// Sets `setup` up, runs `shape` through it, and takes it down again.
    fn slot(&self, setup: Setup, shape: Shape, round: usize) -> Result<Slot> {
        match setup {
            Setup::Direct => Ok(Slot {
                run: self.measure(setup, shape, round, self.direct)?,
                lbd_events: vec![],
            }),
            Setup::Nftables => {
                self.ensure_vip()?;
                self.lab
                    .exec_in("lb1", &["sysctl", "-qw", "net.ipv4.conf.eth0.forwarding=1"])?;
                nft(
                    self.lab,
                    &nftables::ruleset(
                        self.vip,
                        &(1..=BACKENDS)
                            .map(|n| self.lab.backend_addr(n))
                            .collect::<Vec<_>>(),
                        PORT,
                        "eth0",
                    ),
                )?;
                let run = self
                    .wait_for_page(self.vip, None)
                    .and_then(|()| self.measure(setup, shape, round, self.vip));
                nft(self.lab, &nftables::removal())?;
                Ok(Slot {
                    run: run?,
                    lbd_events: vec![],
                })
            }
            Setup::Lbd => {
                self.ensure_vip()?;
                let mut lbd = self.lab.start_lbd(1, &self.lbd_config)?;
                let measured = self
                    .wait_for_page(self.vip, Some(&mut lbd))
                    .and_then(|()| self.measure(setup, shape, round, self.vip))
                    .and_then(|run| {
                        lbd.check_running()?;
                        Ok((run, self.lbd_events()?))
                    });
                let stopped = lbd.stop(Duration::from_secs(10));
                let detached = self.lab.lbd_command(
                    1,
                    &[
                        "stop",
                        "--detach",
                        "--config",
                        &self.lbd_config.to_string_lossy(),
                    ],
                );
                // An lbd that exited is already reported with its log.
                let (run, lbd_events) = measured.map_err(|e| {
                    if format!("{e:#}").contains("its log ends with") {
                        e
                    } else {
                        e.context(format!("lbd's log ends with:\n{}", lbd.log_tail(20)))
                    }
                })?;
                stopped.context("lbd did not stop")?;
                detached.context("`lbd stop --detach` failed")?;
                Ok(Slot { run, lbd_events })
            }
        }
    }

    /// The VIP on lb1's eth0: the lab puts it there, `lbd stop --detach`
    /// takes it away, and nftables needs it answered by ARP.
    fn ensure_vip(&self) -> Result<()> {
        self.lab.exec_in(
            "lb1",
            &[
                "ip",
                "address",
                "replace",
                &format!("{}/32", self.vip.ip()),
                "dev",
                "eth0",
            ],
        )?;
        Ok(())
    }

    /// Waits until the client gets the page through `target`.
    fn wait_for_page(&self, target: SocketAddrV4, mut lbd: Option<&mut Lbd>) -> Result<()> {
        let deadline = Instant::now() + LBD_START_TIMEOUT;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            if let Some(lbd) = lbd.as_deref_mut() {
                lbd.check_running()?;
            }
            match self.lab.run_in("cl", move || {
                nginx::get_page(target, Duration::from_secs(1))
            })? {
                Ok(_) => return Ok(()),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("{target} did not serve the page within {LBD_START_TIMEOUT:?} (last: {last})")
    }

    /// One run of `shape` against `target`, with its CPU and SYN
    /// retransmissions; fails when no request was answered.
    fn measure(
        &self,
        setup: Setup,
        shape: Shape,
        round: usize,
        target: SocketAddrV4,
    ) -> Result<Run> {
        let retransmits_before = self.syn_retransmits()?;
        let before = self.meter.read()?;
        let (ok, errors, seconds, problem) = match shape {
            Shape::KeepAlive => self.wrk(target, false)?,
            Shape::CloseOneClient => self.wrk(target, true)?,
            Shape::CloseManyClients => self.many_clients(target)?,
        };
        let cpu = self.meter.since(&before)?;
        let syn_retransmits = self.syn_retransmits()?.saturating_sub(retransmits_before);
        if ok == 0 {
            bail!(
                "{} / {}: no request was answered ({errors} errors): {problem}",
                setup.name(),
                shape.name()
            );
        }
        let run = Run {
            round,
            setup,
            shape,
            ok,
            errors,
            seconds,
            cpu_ns: cpu.ours_ns,
            machine_cpu_ns: cpu.machine_ns,
            syn_retransmits,
        };
        eprintln!(
            "round {} {:<8} {:<40} {:>7.0} req/s  {:>5.1} us CPU/req  {:.2} cores  {errors} errors  {syn_retransmits} SYN retransmits",
            round + 1,
            setup.name(),
            shape.name(),
            run.req_per_s(),
            run.cpu_us_per_req().unwrap_or(0.0),
            run.cores(),
        );
        Ok(run)
    }

    /// wrk from the client namespace's first address. Returns the requests
    /// answered 2xx, the errors, the seconds and what went wrong, if anything.
    fn wrk(&self, target: SocketAddrV4, close: bool) -> Result<(u64, u64, f64, String)> {
        let duration = format!("{}s", self.seconds.round() as u64);
        let url = format!("http://{target}/");
        let mut args = vec![
            "-t",
            WRK_THREADS,
            "-c",
            WRK_CONNECTIONS,
            "-d",
            &duration,
            "--timeout",
            "5s",
        ];
        if close {
            args.extend(["-H", "Connection: close"]);
        }
        args.push(&url);
        let mut cmd = self.lab.command_in("cl", "wrk")?;
        cmd.args(&args);
        let output = bounded(&mut cmd, self.seconds)?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let summary = wrk::parse(&stdout).with_context(|| {
            format!(
                "wrk failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })?;
        Ok((
            summary.ok(),
            summary.socket_errors + summary.non_2xx,
            summary.seconds,
            stdout.trim().to_string(),
        ))
    }

    /// `lab-client http --close` from every client address.
    fn many_clients(&self, target: SocketAddrV4) -> Result<(u64, u64, f64, String)> {
        let program = binaries::lab_client()?;
        let mut cmd = self.lab.command_in("cl", &program)?;
        cmd.args(["http", "--close", "--vip", &target.to_string()])
            .args(["--sources", &self.lab.client_range()])
            .args(["--connections", &MANY_CONNECTIONS.to_string()])
            .args(["--seconds", &self.seconds.to_string()])
            .args(["--timeout", &OP_TIMEOUT_SECS.to_string()])
            .args([
                "--deadline",
                &(self.seconds.ceil() as u64 + OP_TIMEOUT_SECS * 4).to_string(),
            ]);
        let output = bounded(&mut cmd, self.seconds)?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let report: HttpReport = serde_json::from_str(&stdout).with_context(|| {
            format!(
                "lab-client http printed no report: {}{}",
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })?;
        Ok((
            report.ok,
            report.errors + report.not_ok,
            report.elapsed_ms as f64 / 1000.0,
            format!("{:?}", report.error_samples),
        ))
    }

    /// SYN retransmissions of the client namespace so far.
    fn syn_retransmits(&self) -> Result<u64> {
        let out = self.lab.exec_in("cl", &["cat", "/proc/net/netstat"])?;
        netstat::counter(
            &String::from_utf8_lossy(&out.stdout),
            "TcpExt",
            "TCPSynRetrans",
        )
        .context("the client namespace's /proc/net/netstat has no TcpExt TCPSynRetrans")
    }

    /// lbd's reason counters, as `lbd status --json` reports them.
    fn lbd_events(&self) -> Result<Vec<(String, u64)>> {
        let out = self.lab.lbd_command(1, &["status", "--json"])?;
        let status: serde_json::Value = serde_json::from_slice(&out.stdout)
            .context("`lbd status --json` did not print JSON")?;
        let events = status["datapath_events"]
            .as_object()
            .context("`lbd status --json` has no datapath_events")?;
        Ok(events
            .iter()
            .filter_map(|(reason, n)| Some((reason.clone(), n.as_u64()?)))
            .collect())
    }
}

/// Runs `cmd` to completion, killing it if it runs [`OVERRUN`] past the
/// `seconds` it was asked to run; fails when it exits non-zero.
fn bounded(cmd: &mut Command, seconds: f64) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {:?}", cmd.get_program()))?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds) + OVERRUN;
    // Small outputs (a summary, a JSON report): the pipes never fill.
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            bail!(
                "{:?} was still running {OVERRUN:?} after its {seconds} s run and was killed",
                cmd.get_args().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_args().collect::<Vec<_>>(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// Feeds an nftables script to `nft -f -` in lb1.
fn nft(lab: &Lab, script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = netns::command_in(lab.netns("lb1")?, "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start nft (install the nftables package)")?;
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(script.as_bytes())
        .context("could not feed nft")?;
    let out = child.wait_with_output().context("nft did not finish")?;
    if !out.status.success() {
        bail!(
            "nft refused the bench's ruleset: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Writes `bench/peer.json` in the target directory this program was built
/// in, beside lb-bench's `xdp.json`.
fn write_json(results: &PeerResults) -> Result<()> {
    let exe = std::env::current_exe().context("could not find the running executable")?;
    let target = exe
        .parent()
        .and_then(|profile| profile.parent())
        .context("the running executable is not in a target/<profile> directory")?;
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let path = dir.join("peer.json");
    let json = serde_json::to_string_pretty(results).context("could not encode the results")?;
    std::fs::write(&path, json + "\n")
        .with_context(|| format!("could not write {}", path.display()))?;
    let shown = std::fs::canonicalize(&path).unwrap_or(path);
    println!("Wrote {}", shown.display());
    Ok(())
}
