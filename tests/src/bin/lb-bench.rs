//! `cargo xtask bench`: what one packet costs the XDP program `lb`, path by
//! path, and how long a Maglev ring takes to build.
//!
//! Why one BPF_PROG_TEST_RUN call per packet: with `repeat = N` the kernel
//! runs the program N times on the same buffer, and from the second run on
//! `lb` sees its own rewritten output, which is not ours and passes: a repeat
//! loop times the wrong path (docs/architecture.md, "Measuring the XDP program"). So every packet is one call with
//! `repeat = 1`, timed by the kernel (`duration`), and the fixed cost of a
//! call is taken out by timing an empty program the same way. Every timed
//! call's verdict is checked, and the service counters and reason counters
//! must move by exactly what the intended path adds; otherwise the bench
//! stops rather than print a figure for the wrong path.
//!
//! The tables have their production sizes. `established` hits one flow, hot
//! in the caches; `established_10k_flows` cycles through 10,000 connections,
//! closer to a busy node, after an untimed pass that brings every entry's
//! once-a-second refresh up to date (otherwise a large share of the timed
//! calls would do it). New SYNs come from 5-tuples never seen before;
//! half_open is emptied after each batch.
//!
//! Needs root. Runs in a throwaway network namespace (documentation ranges
//! only), removed on every exit path, Ctrl-C included.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use lb_common::{
    FlowKey, IPPROTO_TCP, ServiceInfo, TrafficStats, backend_flags, default_size, local_addr_flags,
    reason, service_flags,
};
use lb_tests::bench::{Row, median, median_f64, percentile, render_table, test_run_rows};
use lb_tests::packet::{FrameSpec, Mac, TcpSpec, tcp_flags};
use lb_tests::xdp_harness::{
    LB_BACKEND_SIDE_IP, LB_CLIENT_SIDE_IP, LB_MAC, NEIGHBOURS, TableSizes, XdpHarness,
    describe_reasons, ip_be, port_be, verdict,
};
use lb_userspace::maglev::{self, MaglevBackend};

/// Timed calls per case and round.
const CALLS: usize = 20_000;
/// Rounds; the cases take turns inside each round.
const ROUNDS: usize = 5;
/// Untimed (but checked) calls per case before the first round.
const WARMUP_CALLS: usize = 2_000;
/// Maglev builds timed per backend count.
const MAGLEV_RUNS: usize = 7;
const MAGLEV_BACKENDS: [u32; 3] = [10, 100, 1000];

/// Production sizes: the ring M, and the flow tables, whose size shows in
/// the figures (a new flow costs about half as much with 4096-entry tables,
/// which stay in the CPU caches).
const RING: u32 = default_size::RING;
const FLOWS_SIZE: u32 = default_size::FLOWS;
/// half_open is emptied after every new-SYN batch; a batch (two entries per
/// SYN) must fit in half of it, far from LRU eviction.
const HALF_OPEN_SIZE: u32 = default_size::HALF_OPEN;
const MAX_CALLS: usize = HALF_OPEN_SIZE as usize / 4;
/// A wide SNAT range: new flows must not run short of ports.
const SNAT_MIN: u16 = 10_000;
const SNAT_MAX: u16 = 59_999;

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const VPORT: u16 = 443;
const SNAT: Ipv4Addr = LB_BACKEND_SIDE_IP;
const SVC_ID: u32 = 1;
/// Backends: the three neighbours of the harness, each on four ports, so the
/// new flows spread over twelve (backend, port) pairs and SNAT port
/// collisions stay rare.
const PORTS_PER_ADDR: u32 = 4;
const BACKEND_PORT: u16 = 8443;
const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0xc1];
/// The client of the established connection (outside the new-SYN clients).
const EST_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 240);
const EST_PORT: u16 = 40_000;
/// The many-flows case: this many established connections, from
/// 192.0.2.230..=239 (outside the new-SYN clients), ports from 20000.
const MANY_FLOWS: u16 = 10_000;
const MANY_ADDRS: u16 = 10;
/// New-SYN clients: 192.0.2.20 up to .218 and every source port from 1024;
/// call i uses address index i mod 199 and port 1024 + i mod 60000 (coprime
/// moduli: no 5-tuple repeats within 199 * 60000 calls).
const SYN_ADDRS: u64 = 199;
const SYN_PORTS: u64 = 60_000;
const PAYLOAD: usize = 64;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// SIGINT/SIGTERM only raise a flag, checked between batches, so the
/// namespace is always removed by the normal unwinding of `run`.
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
            eprintln!("lb-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Options {
    calls: usize,
    rounds: usize,
    /// VRRP mode: the lease enforced (and fresh), VIP and SNAT addresses
    /// gated by it, to time what the lease check costs there.
    vrrp: bool,
    /// A smoke run: every case and check, few calls, no figures kept. It
    /// proves the bench builds and runs (CI), it measures nothing.
    quick: bool,
}

/// `--quick`: calls per case and round, and warm-up calls.
const QUICK_CALLS: usize = 200;

fn options() -> Result<Options> {
    let mut o = Options {
        calls: CALLS,
        rounds: ROUNDS,
        vrrp: false,
        quick: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> Result<usize> {
            let v = args
                .next()
                .with_context(|| format!("{name} needs a number"))?;
            let n: usize = v
                .parse()
                .with_context(|| format!("{name} needs a number, not {v:?}"))?;
            ensure!(n > 0, "{name} must be at least 1");
            ensure!(
                n <= MAX_CALLS,
                "{name} must be at most {MAX_CALLS} (the SYNs of one batch must fit in half_open)"
            );
            Ok(n)
        };
        match a.as_str() {
            "--calls" => o.calls = value("--calls")?,
            "--rounds" => o.rounds = value("--rounds")?,
            "--vrrp" => o.vrrp = true,
            "--quick" => {
                o.quick = true;
                o.calls = QUICK_CALLS;
                o.rounds = 1;
            }
            "-h" | "--help" => {
                println!(
                    "lb-bench [--calls N (per case and round, default {CALLS})] [--rounds N (default {ROUNDS})] [--vrrp (lease enforced and fresh)] [--quick (a smoke run: {QUICK_CALLS} calls, 1 round, no results written; measures nothing)]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; try --help"),
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
        "the benchmark needs root (it creates a network namespace and loads BPF programs); run `cargo xtask bench` as root (euid is {euid})"
    );
    catch_signals();

    let mut lab = Lab::new(opts.vrrp).context("could not set up the benchmark lab")?;
    let info = lab
        .h
        .program()?
        .info()
        .context("could not read the loaded program's info")?;
    let cases = Case::ALL;
    let mut round_medians: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut all_calls: BTreeMap<&str, Vec<u32>> = BTreeMap::new();

    let warmup = if opts.quick {
        QUICK_CALLS
    } else {
        WARMUP_CALLS
    };
    for case in cases {
        lab.batch(case, warmup)
            .with_context(|| format!("warm-up of case {}", case.name()))?;
    }
    for round in 0..opts.rounds {
        // Rotate the order so no case always runs first (right after the
        // setup, or the half_open cleanup of the new-SYN batch).
        for i in 0..cases.len() {
            let case = cases[(i + round) % cases.len()];
            let mut durations = lab
                .batch(case, opts.calls)
                .with_context(|| format!("case {} in round {}", case.name(), round + 1))?;
            let m = median(&mut durations).context("no timed calls")?;
            round_medians.entry(case.name()).or_default().push(m);
            all_calls.entry(case.name()).or_default().extend(durations);
        }
    }

    let method = format!(
        "BPF_PROG_TEST_RUN repeat=1, kernel-timed; median of {} calls, median of {} interleaved rounds; ratio = ns/packet / baseline ns/packet (raw, both with the call's fixed cost)",
        opts.calls, opts.rounds
    );
    let raw: Vec<(String, f64)> = cases
        .iter()
        .map(|c| {
            let m = median_f64(&round_medians[c.name()]).expect("every case ran");
            (c.name().to_string(), m)
        })
        .collect();
    let mut rows = test_run_rows(&raw, Case::Empty.name(), Case::Baseline.name(), &method);
    drop(lab);

    let (maglev_sizes, maglev_runs) = if opts.quick {
        (&MAGLEV_BACKENDS[..1], 1)
    } else {
        (&MAGLEV_BACKENDS[..], MAGLEV_RUNS)
    };
    for &n in maglev_sizes {
        rows.push(Row {
            case: format!("maglev_build_{n}"),
            ns_per_packet: maglev_build_ns(n, maglev_runs),
            ns_net: None,
            ratio_to_baseline: None,
            method: format!("wall clock, median of {maglev_runs} builds (M = {RING}, weights 1)"),
        });
    }

    for v in all_calls.values_mut() {
        v.sort_unstable();
    }
    print_report(&rows, &round_medians, &all_calls, &cases, &method, &info);
    if opts.quick {
        println!(
            "Quick run: every case ran and was checked, but {QUICK_CALLS} calls in one round \
             measure nothing; no results written."
        );
        return Ok(());
    }
    write_json(&rows)
}

fn print_report(
    rows: &[Row],
    round_medians: &BTreeMap<&str, Vec<f64>>,
    all_calls: &BTreeMap<&str, Vec<u32>>,
    cases: &[Case],
    method: &str,
    info: &aya::programs::ProgramInfo,
) {
    // The table's method column stays short; the full sentence follows it.
    let short: Vec<Row> = rows
        .iter()
        .map(|r| Row {
            method: if r.ns_net.is_some() {
                "test_run x1, median".into()
            } else {
                r.method.clone()
            },
            ..r.clone()
        })
        .collect();
    println!();
    print!("{}", render_table(&short));
    println!();
    println!(
        "Method: {method}. Each packet is one call (a repeat loop would re-run on the rewritten \
         frame and time the pass path); ns/packet includes the fixed cost of a call, \"net of \
         empty\" subtracts the empty XDP_PASS program's figure, and the ratio divides the raw figure \
         by the baseline's raw figure (parse eth/vlan/ipv4/tcp, XDP_TX): the baseline costs about \
         as little as the empty program, so a ratio of net figures would divide by the clock's \
         resolution. Every timed call was checked: \
         its verdict, and the service and reason counters moved by exactly the intended path's \
         count. established hits one flow (hot in the caches); established_10k_flows cycles \
         through 10,000 connections, after an untimed pass that does their once-a-second \
         refresh. new_syn inserts into half_open, a preallocated hash (no LRU free-list \
         refill), and the half-open entries are removed between rounds. Maglev builds are timed with the wall clock, in ns per build."
    );
    println!(
        "Per case: the median of each round; over all timed calls the mean and percentiles (ns):"
    );
    let width = cases.iter().map(|c| c.name().len()).max().unwrap_or(0);
    for c in cases {
        let v: Vec<String> = round_medians[c.name()]
            .iter()
            .map(|m| format!("{m:.0}"))
            .collect();
        let calls = &all_calls[c.name()];
        let p = |q: f64| percentile(calls, q).map_or("-".into(), |v| v.to_string());
        let mean = calls.iter().map(|&d| d as f64).sum::<f64>() / calls.len().max(1) as f64;
        println!(
            "  {:<width$}  rounds {:<24} mean {:>5.0}  p10 {:>5}  p90 {:>5}  p99 {:>6}",
            c.name(),
            v.join(" "),
            mean,
            p(10.0),
            p(90.0),
            p(99.0)
        );
    }
    if let (Some(xlated), Some(verified)) =
        (info.size_translated(), info.verified_instruction_count())
    {
        println!(
            "Program lb: {} translated instructions, {verified} instructions processed by the verifier.",
            xlated / 8
        );
    }
}

/// Writes `bench/xdp.json` in the target directory this program was built
/// in (`target/release/lb-bench` -> `target/bench/`).
fn write_json(rows: &[Row]) -> Result<()> {
    let exe = std::env::current_exe().context("could not find the running executable")?;
    let target = exe
        .parent()
        .and_then(|profile| profile.parent())
        .context("the running executable is not in a target/<profile> directory")?;
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let path = dir.join("xdp.json").display().to_string();
    let json = serde_json::to_string_pretty(rows).context("could not encode the results")?;
    std::fs::write(&path, json + "\n").with_context(|| format!("could not write {path}"))?;
    let shown = std::fs::canonicalize(&path).map_or(path, |p| p.display().to_string());
    println!("Wrote {shown}");
    Ok(())
}

/// Median wall-clock time of building a ring of `n` backends of weight 1.
fn maglev_build_ns(n: u32, runs: usize) -> f64 {
    let names: Vec<String> = (1..=n).map(|i| format!("backend-{i}")).collect();
    let backends: Vec<MaglevBackend<'_>> = names
        .iter()
        .zip(1..)
        .map(|(name, id)| MaglevBackend {
            id,
            name,
            weight: 1,
        })
        .collect();
    let mut times: Vec<u64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let table = maglev::build(std::hint::black_box(&backends), RING);
            std::hint::black_box(table);
            t.elapsed().as_nanos() as u64
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2] as f64
}

// ------------------------------------------------------------------ cases

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// `lab_pass`: the fixed cost of a test-run call.
    Empty,
    /// `bench_baseline`: parse the same headers, XDP_TX.
    Baseline,
    /// A SYN of a 5-tuple never seen before: Maglev pick, SNAT port, FIB
    /// lookup, two half_open entries.
    NewSyn,
    /// A data packet from the client of an established connection.
    Established,
    /// The same, from 10,000 established connections in turn: the flow
    /// entries no longer all sit in the CPU caches.
    EstablishedMany,
    /// A data packet from the backend back to the SNAT address and port.
    Reply,
    /// TCP to the LB's own address (ssh): not a service, not a flow.
    NotOurs,
    /// A SYN of a 5-tuple never seen before, answered with a SYN cookie
    /// (`syn_cookies = "always"` for the batch): no entry, no port.
    SynCookie,
    /// A data packet from the client of a connection opened with a SYN
    /// cookie: the established path plus the sequence translation.
    EstablishedCookie,
}

impl Case {
    const ALL: [Case; 9] = [
        Case::Empty,
        Case::Baseline,
        Case::NewSyn,
        Case::Established,
        Case::EstablishedMany,
        Case::Reply,
        Case::NotOurs,
        Case::SynCookie,
        Case::EstablishedCookie,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::Empty => "empty",
            Case::Baseline => "baseline",
            Case::NewSyn => "new_syn",
            Case::Established => "established",
            Case::EstablishedMany => "established_10k_flows",
            Case::Reply => "reply",
            Case::NotOurs => "not_ours",
            Case::SynCookie => "syn_cookie",
            Case::EstablishedCookie => "established_cookie",
        }
    }
}

/// What a batch must have added to the service's counters and the reasons,
/// and the verdict of every call.
struct Expected {
    verdict: u32,
    service: TrafficStats,
    reasons: Vec<u64>,
}

impl Expected {
    fn new(verdict: u32) -> Expected {
        Expected {
            verdict,
            service: TrafficStats::default(),
            reasons: vec![0; reason::COUNT as usize],
        }
    }

    /// Every call forwarded toward a backend (`new` of them new flows).
    fn to_backend(n: u64, bytes: u64, new: u64) -> Expected {
        let mut e = Expected::new(verdict::TX);
        e.service.packets_to_backend = n;
        e.service.bytes_to_backend = bytes;
        e.service.new_flows = new;
        e
    }
}

/// The harness (program `lb`, its maps, the namespace), the lab programs,
/// and the frames of every case.
struct Lab {
    h: XdpHarness,
    lab: Ebpf,
    established: Vec<u8>,
    /// A data frame of the connection opened with a SYN cookie.
    established_cookie: Vec<u8>,
    reply: Vec<u8>,
    not_ours: Vec<u8>,
    /// A data frame of each of the [`MANY_FLOWS`] connections.
    many: Vec<Vec<u8>>,
    /// Index of the next new-SYN 5-tuple.
    next_syn: u64,
}

fn data_frame(src_mac: Mac, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FrameSpec {
    let mut f = FrameSpec::tcp(
        src_mac,
        LB_MAC,
        src,
        sport,
        dst,
        dport,
        tcp_flags::ACK | tcp_flags::PSH,
    );
    f.tcp_mut().payload = vec![0x5a; PAYLOAD];
    f
}

fn syn_frame(client: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut f = FrameSpec::tcp(CLIENT_MAC, LB_MAC, client, port, VIP, VPORT, tcp_flags::SYN);
    f.tcp_mut().options = TcpSpec::syn_options();
    f.build()
}

fn ack_frame(client: Ipv4Addr, port: u16) -> Vec<u8> {
    FrameSpec::tcp(CLIENT_MAC, LB_MAC, client, port, VIP, VPORT, tcp_flags::ACK).build()
}

/// The ISN every backend answers with: [`ack_frame`] acknowledges it.
const BACKEND_ISN: u32 = 0x2000_0001;

/// Runs the backends' SYN-ACKs of every handshake in half_open (one per
/// backend-to-client entry) through the program: a connection is promoted
/// only once its SYN-ACK passed.
fn answer_handshakes(h: &XdpHarness) -> Result<usize> {
    let mut answered = 0;
    let entries: Vec<(FlowKey, lb_common::Flow)> = h
        .half_open
        .iter()
        .collect::<Result<_, _>>()
        .context("could not list half_open")?;
    for (k, f) in entries {
        if f.direction != lb_common::direction::TO_CLIENT {
            continue;
        }
        let ip = |v: u32| Ipv4Addr::from(v.to_ne_bytes());
        let mut sa = FrameSpec::tcp(
            NEIGHBOURS[0].1,
            LB_MAC,
            ip(k.src_ip),
            u16::from_be(k.src_port),
            ip(k.dst_ip),
            u16::from_be(k.dst_port),
            tcp_flags::SYN | tcp_flags::ACK,
        );
        sa.tcp_mut().seq = BACKEND_ISN;
        sa.tcp_mut().options = TcpSpec::syn_options();
        let r = h.run(&sa.build())?;
        ensure!(
            r.verdict == verdict::TX,
            "a backend's SYN-ACK got {}",
            verdict::name(r.verdict)
        );
        answered += 1;
    }
    Ok(answered)
}

fn backend_id(addr_index: u32, port_index: u32) -> u32 {
    1 + addr_index * PORTS_PER_ADDR + port_index
}

fn total_len(frames: &[Vec<u8>], calls: usize) -> u64 {
    (0..calls)
        .map(|i| frames[i % frames.len()].len() as u64)
        .sum()
}

impl Lab {
    fn new(vrrp: bool) -> Result<Lab> {
        let mut h = XdpHarness::with_sizes(TableSizes {
            maglev: 2 * RING,
            flows: FLOWS_SIZE,
            half_open: HALF_OPEN_SIZE,
            persist: default_size::PERSIST,
        })?;
        h.set_settings(SNAT_MIN, SNAT_MAX)?;
        h.add_local_addr(VIP, local_addr_flags::VIP | local_addr_flags::SNAT)?;
        h.add_local_addr(SNAT, local_addr_flags::SNAT)?;
        if vrrp {
            let lease = lb_common::Settings {
                snat_port_min: SNAT_MIN,
                snat_port_max: SNAT_MAX,
                flags: lb_common::settings_flags::LEASE,
                lease_deadline_ns: u64::MAX,
                ..Default::default()
            };
            h.settings.set(0, lease, 0)?;
            let gated = local_addr_flags::VRRP;
            h.add_local_addr(VIP, local_addr_flags::VIP | local_addr_flags::SNAT | gated)?;
            h.add_local_addr(SNAT, local_addr_flags::SNAT | gated)?;
            println!("VRRP mode: lease enforced and fresh, VIP and SNAT address gated");
        }
        let mut names = Vec::new();
        for (a, (addr, _)) in NEIGHBOURS.iter().enumerate() {
            for p in 0..PORTS_PER_ADDR {
                let id = backend_id(a as u32, p);
                h.set_backend(
                    id,
                    *addr,
                    BACKEND_PORT + p as u16,
                    backend_flags::IN_USE | backend_flags::PERSIST_OK,
                )?;
                names.push((id, format!("{addr}:{}", BACKEND_PORT + p as u16)));
            }
        }
        let backends: Vec<MaglevBackend<'_>> = names
            .iter()
            .map(|(id, name)| MaglevBackend {
                id: *id,
                name,
                weight: 1,
            })
            .collect();
        for (slot, id) in maglev::build(&backends, RING).into_iter().enumerate() {
            h.maglev
                .set(slot as u32, id, 0)
                .context("could not write the Maglev ring")?;
        }
        let svc = ServiceInfo {
            id: SVC_ID,
            flags: service_flags::ACTIVE,
            snat_ip: ip_be(SNAT),
            ring_offset: 0,
            ring_size: RING,
            _pad: 0,
            persist_timeout_ns: 0,
        };
        h.set_service(VIP, VPORT, IPPROTO_TCP, svc)?;

        let mut lab = EbpfLoader::new()
            .load(lb_userspace::objects::LAB)
            .context("could not load the lab eBPF object")?;
        for name in ["lab_pass", "bench_baseline"] {
            let prog: &mut Xdp = lab
                .program_mut(name)
                .with_context(|| format!("the lab object has no program {name}"))?
                .try_into()
                .with_context(|| format!("{name} is not an XDP program"))?;
            prog.load()
                .with_context(|| format!("the kernel refused to load {name}"))?;
        }

        let (established, reply) = establish(&h)?;
        let established_cookie = establish_with_cookie(&mut h)
            .context("could not open the connection of the established_cookie case")?;
        let not_ours = FrameSpec::tcp(
            CLIENT_MAC,
            LB_MAC,
            EST_CLIENT,
            50_123,
            LB_CLIENT_SIDE_IP,
            22,
            tcp_flags::ACK,
        )
        .build();
        let mut lab = Lab {
            h,
            lab,
            established,
            established_cookie,
            reply,
            not_ours,
            many: Vec::new(),
            next_syn: 0,
        };
        lab.open_many()
            .context("could not open the connections of the many-flows case")?;
        Ok(lab)
    }

    /// Opens [`MANY_FLOWS`] connections (SYN, then the handshake ACK) and
    /// keeps a data frame of each.
    fn open_many(&mut self) -> Result<()> {
        let clients: Vec<(Ipv4Addr, u16)> = (0..MANY_FLOWS)
            .map(|i| {
                (
                    Ipv4Addr::new(192, 0, 2, 230 + (i % MANY_ADDRS) as u8),
                    20_000 + i / MANY_ADDRS,
                )
            })
            .collect();
        let n = clients.len();
        let syns: Vec<Vec<u8>> = clients.iter().map(|(c, p)| syn_frame(*c, *p)).collect();
        let acks: Vec<Vec<u8>> = clients.iter().map(|(c, p)| ack_frame(*c, *p)).collect();
        let prog = self.h.program()?;
        let want = Expected::to_backend(n as u64, total_len(&syns, n), n as u64);
        self.checked_run("the SYNs of the many flows", prog, &syns, n, &want)?;
        let answered = answer_handshakes(&self.h)?;
        ensure!(
            answered == n,
            "{answered} SYN-ACKs answered {n} SYNs of the many flows"
        );
        let want = Expected::to_backend(n as u64, total_len(&acks, n), 0);
        self.checked_run(
            "the handshake ACKs of the many flows",
            prog,
            &acks,
            n,
            &want,
        )?;
        let left = self.h.half_open.keys().count();
        ensure!(
            left == 0,
            "{left} half_open entries are left after the handshakes: some ACKs did not promote their connection"
        );
        self.many = clients
            .iter()
            .map(|(c, p)| data_frame(CLIENT_MAC, *c, *p, VIP, VPORT).build())
            .collect();
        Ok(())
    }

    fn lab_program(&self, name: &str) -> Result<&Xdp> {
        self.lab
            .program(name)
            .with_context(|| format!("lab program {name} vanished"))?
            .try_into()
            .with_context(|| format!("{name} is not XDP"))
    }

    fn new_syn(&mut self) -> Vec<u8> {
        let i = self.next_syn;
        self.next_syn += 1;
        let client = Ipv4Addr::new(192, 0, 2, 20 + (i % SYN_ADDRS) as u8);
        syn_frame(client, 1024 + (i % SYN_PORTS) as u16)
    }

    /// Runs `calls` timed calls of `case`, checks that each took the
    /// intended path, and returns the kernel-reported ns of each call.
    fn batch(&mut self, case: Case, calls: usize) -> Result<Vec<u32>> {
        ensure!(
            !INTERRUPTED.load(Ordering::Relaxed),
            "interrupted; the namespace is being removed"
        );
        let frames: Vec<Vec<u8>> = match case {
            Case::NewSyn | Case::SynCookie => (0..calls).map(|_| self.new_syn()).collect(),
            Case::EstablishedCookie => vec![self.established_cookie.clone()],
            Case::Empty | Case::Baseline | Case::Established => vec![self.established.clone()],
            Case::EstablishedMany => self.many.clone(),
            Case::Reply => vec![self.reply.clone()],
            Case::NotOurs => vec![self.not_ours.clone()],
        };
        let bytes = total_len(&frames, calls);
        let n = calls as u64;
        let expected = match case {
            Case::Empty => Expected::new(verdict::PASS),
            Case::Baseline => Expected::new(verdict::TX),
            Case::NewSyn => Expected::to_backend(n, bytes, n),
            Case::Established | Case::EstablishedMany | Case::EstablishedCookie => {
                Expected::to_backend(n, bytes, 0)
            }
            Case::SynCookie => {
                let mut e = Expected::new(verdict::TX);
                e.reasons[reason::TX_SYN_COOKIE as usize] = n;
                e
            }
            Case::Reply => {
                let mut e = Expected::new(verdict::TX);
                e.service.packets_to_client = n;
                e.service.bytes_to_client = bytes;
                e
            }
            Case::NotOurs => {
                let mut e = Expected::new(verdict::PASS);
                e.reasons[reason::PASS_NOT_OURS as usize] = n;
                e
            }
        };
        if case == Case::SynCookie {
            set_syn_cookies(&mut self.h, lb_common::settings_flags::SYN_COOKIES_ALWAYS)?;
        }
        let prog = match case {
            Case::Empty => self.lab_program("lab_pass")?,
            Case::Baseline => self.lab_program("bench_baseline")?,
            _ => self.h.program()?,
        };
        if case == Case::EstablishedMany {
            // Entries refresh (FIB lookup, peer check) on their first packet
            // after a second; 10,000 flows would refresh on a large share of
            // the timed calls, unlike a busy flow in production (once per
            // second). An untimed pass first brings every entry up to date.
            let m = frames.len();
            let want = Expected::to_backend(m as u64, total_len(&frames, m), 0);
            self.checked_run(
                "the refresh pass of established_10k_flows",
                prog,
                &frames,
                m,
                &want,
            )?;
        }
        let run = self.checked_run(case.name(), prog, &frames, calls, &expected);
        if case == Case::SynCookie {
            set_syn_cookies(&mut self.h, 0)?;
        }
        let durations = run?;
        if case == Case::NewSyn {
            self.forget_half_open(2 * n)?;
        }
        Ok(durations)
    }

    /// Runs `prog` `calls` times, one call per frame (cycling through
    /// `frames`), inside the namespace; checks every verdict and the
    /// counters against `want`, and returns the kernel-reported ns of each
    /// call.
    fn checked_run(
        &self,
        what: &str,
        prog: &Xdp,
        frames: &[Vec<u8>],
        calls: usize,
        want: &Expected,
    ) -> Result<Vec<u32>> {
        let before_stats = self.h.service_stats(SVC_ID)?;
        let before_reasons = self.h.reasons()?;
        let (durations, verdicts) = self.h.ns.run_in(|| {
            let mut durations = Vec::with_capacity(calls);
            let mut verdicts: BTreeMap<u32, u64> = BTreeMap::new();
            for i in 0..calls {
                let frame = &frames[i % frames.len()];
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
                // rx_queue_index, egress_ifindex.
                let ctx: Vec<u8> = [0u32, frame.len() as u32, 0, self.h.eth0, 0, 0]
                    .iter()
                    .flat_map(|v| v.to_ne_bytes())
                    .collect();
                let r = prog
                    .test_run(TestRunOptions {
                        data_in: Some(frame),
                        ctx_in: Some(&ctx),
                        repeat: 1,
                        ..Default::default()
                    })
                    .context("BPF_PROG_TEST_RUN failed")?;
                durations.push(u32::try_from(r.duration.as_nanos()).unwrap_or(u32::MAX));
                *verdicts.entry(r.return_value).or_default() += 1;
            }
            Ok((durations, verdicts))
        })?;
        let service = delta(&self.h.service_stats(SVC_ID)?, &before_stats);
        let reasons: Vec<u64> = self
            .h
            .reasons()?
            .iter()
            .zip(&before_reasons)
            .map(|(a, b)| a - b)
            .collect();

        if verdicts.get(&want.verdict) != Some(&(calls as u64)) {
            let seen: Vec<String> = verdicts
                .iter()
                .map(|(v, c)| format!("{} {c}", verdict::name(*v)))
                .collect();
            bail!(
                "{what}: all {calls} calls should have returned {}, but the verdicts were: {} (reasons: {}); the figure would time another path",
                verdict::name(want.verdict),
                seen.join(", "),
                describe_reasons(&reasons)
            );
        }
        ensure!(
            service == want.service,
            "{what}: the service counters moved by {service:?}, expected {:?}: some calls took another path",
            want.service
        );
        ensure!(
            reasons == want.reasons,
            "{what}: the reason counters moved by {} (expected {}): some calls took another path",
            describe_reasons(&reasons),
            describe_reasons(&want.reasons)
        );
        Ok(durations)
    }

    /// Empties half_open after a new-SYN batch, so every batch starts from
    /// the same table, and checks each SYN left its pair (none evicted).
    fn forget_half_open(&mut self, expected: u64) -> Result<()> {
        let keys: Vec<FlowKey> = self
            .h
            .half_open
            .keys()
            .collect::<Result<_, _>>()
            .context("could not list half_open")?;
        ensure!(
            keys.len() as u64 == expected,
            "half_open holds {} entries after the new-SYN batch, expected {expected} (two per SYN): entries were evicted or a SYN took another path",
            keys.len()
        );
        for k in keys {
            self.h
                .half_open
                .remove(&k)
                .context("could not clear half_open")?;
        }
        Ok(())
    }
}

fn delta(after: &TrafficStats, before: &TrafficStats) -> TrafficStats {
    TrafficStats {
        packets_to_backend: after.packets_to_backend - before.packets_to_backend,
        bytes_to_backend: after.bytes_to_backend - before.bytes_to_backend,
        packets_to_client: after.packets_to_client - before.packets_to_client,
        bytes_to_client: after.bytes_to_client - before.bytes_to_client,
        new_flows: after.new_flows - before.new_flows,
        rst_no_backend: after.rst_no_backend - before.rst_no_backend,
    }
}

/// Writes the SYN cookie flags of `settings[0]`, keeping the rest.
fn set_syn_cookies(h: &mut XdpHarness, flags: u32) -> Result<()> {
    let mut s = h.settings.get(&0, 0).context("could not read settings")?;
    s.flags = (s.flags & lb_common::settings_flags::LEASE) | flags;
    h.settings.set(0, s, 0).context("could not write settings")
}

/// The client of the SYN cookie connection (outside the new-SYN clients).
const COOKIE_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 241);
const COOKIE_PORT: u16 = 40_001;
const COOKIE_CLIENT_ISN: u32 = 0x0100_0000;

/// Opens a connection through a SYN cookie (SYN, cookie SYN-ACK, ACK, SYN
/// to the backend, its SYN-ACK, ACK to the backend), checking each step,
/// and returns a data frame of its client.
fn establish_with_cookie(h: &mut XdpHarness) -> Result<Vec<u8>> {
    set_syn_cookies(h, lb_common::settings_flags::SYN_COOKIES_ALWAYS)?;
    let mut syn = FrameSpec::tcp(
        CLIENT_MAC,
        LB_MAC,
        COOKIE_CLIENT,
        COOKIE_PORT,
        VIP,
        VPORT,
        tcp_flags::SYN,
    );
    syn.tcp_mut().seq = COOKIE_CLIENT_ISN;
    syn.tcp_mut().options = TcpSpec::syn_options();
    let r = h.run(&syn.build())?;
    set_syn_cookies(h, 0)?;
    let synack = lb_tests::packet::parse(&r.frame)?;
    ensure!(
        r.verdict == verdict::TX && synack.tcp().flags == tcp_flags::SYN | tcp_flags::ACK,
        "the SYN was not answered with a cookie SYN-ACK"
    );
    let cookie = synack.tcp().seq;
    let mut ack = FrameSpec::tcp(
        CLIENT_MAC,
        LB_MAC,
        COOKIE_CLIENT,
        COOKIE_PORT,
        VIP,
        VPORT,
        tcp_flags::ACK,
    );
    ack.tcp_mut().seq = COOKIE_CLIENT_ISN.wrapping_add(1);
    ack.tcp_mut().ack = cookie.wrapping_add(1);
    let r = h.run(&ack.build())?;
    let bsyn = lb_tests::packet::parse(&r.frame)?;
    ensure!(
        r.verdict == verdict::TX && bsyn.tcp().flags == tcp_flags::SYN,
        "the cookie ACK did not open the backend connection"
    );
    let (bip, bport, sport) = (bsyn.ipv4().dst, bsyn.tcp().dport, bsyn.tcp().sport);
    let bmac = NEIGHBOURS
        .iter()
        .find(|(a, _)| *a == bip)
        .map(|(_, m)| *m)
        .context("the backend SYN went to an unknown address")?;
    let mut sa = FrameSpec::tcp(
        bmac,
        LB_MAC,
        bip,
        bport,
        SNAT,
        sport,
        tcp_flags::SYN | tcp_flags::ACK,
    );
    sa.tcp_mut().seq = BACKEND_ISN;
    sa.tcp_mut().ack = COOKIE_CLIENT_ISN.wrapping_add(1);
    let r = h.run(&sa.build())?;
    ensure!(
        r.verdict == verdict::TX
            && lb_tests::packet::parse(&r.frame)?.tcp().flags == tcp_flags::ACK,
        "the backend's SYN-ACK was not answered with the ACK"
    );
    let key = FlowKey {
        src_ip: ip_be(COOKIE_CLIENT),
        dst_ip: ip_be(VIP),
        src_port: port_be(COOKIE_PORT),
        dst_port: port_be(VPORT),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    let f = h
        .flows
        .get(&key, 0)
        .context("the cookie connection is not in flows")?;
    ensure!(f.seq_offset != 0, "the cookie connection has no offset");
    Ok(data_frame(CLIENT_MAC, COOKIE_CLIENT, COOKIE_PORT, VIP, VPORT).build())
}

/// Opens the connection the established and reply cases use (SYN, then the
/// handshake ACK, which moves the pair into flows) and returns a data frame
/// of each direction.
fn establish(h: &XdpHarness) -> Result<(Vec<u8>, Vec<u8>)> {
    let r = h.run(&syn_frame(EST_CLIENT, EST_PORT))?;
    ensure!(
        r.verdict == verdict::TX,
        "the SYN of the established connection got {}",
        verdict::name(r.verdict)
    );
    ensure!(
        answer_handshakes(h)? == 1,
        "the established connection's SYN-ACK was not answered"
    );
    let r = h.run(&ack_frame(EST_CLIENT, EST_PORT))?;
    ensure!(
        r.verdict == verdict::TX,
        "the handshake ACK got {}",
        verdict::name(r.verdict)
    );
    let fwd_key = FlowKey {
        src_ip: ip_be(EST_CLIENT),
        dst_ip: ip_be(VIP),
        src_port: port_be(EST_PORT),
        dst_port: port_be(VPORT),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    let fwd = h
        .flows
        .get(&fwd_key, 0)
        .context("the handshake ACK did not move the connection into flows")?;
    let backend = Ipv4Addr::from(fwd.nat_dst_ip.to_ne_bytes());
    let reply_key = FlowKey {
        src_ip: fwd.nat_dst_ip,
        dst_ip: fwd.nat_src_ip,
        src_port: fwd.nat_dst_port,
        dst_port: fwd.nat_src_port,
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    h.flows
        .get(&reply_key, 0)
        .context("the established connection has no reply entry in flows")?;
    let established = data_frame(CLIENT_MAC, EST_CLIENT, EST_PORT, VIP, VPORT).build();
    let reply = data_frame(
        fwd.dst_mac,
        backend,
        u16::from_be(fwd.nat_dst_port),
        SNAT,
        u16::from_be(fwd.nat_src_port),
    )
    .build();
    Ok((established, reply))
}
