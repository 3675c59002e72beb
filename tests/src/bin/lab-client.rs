//! Traffic for labs, from many source addresses, with a JSON report on
//! stdout (types in `lb_tests::lab::report`).
//!
//! - `spread`: from each source address, K sequential connections (bind to
//!   the source, connect, read the server's name line, optionally echo a
//!   payload, close). Shows which backend each source reached.
//! - `hold`: N concurrent connections spread over the sources; all stay
//!   open until every one has answered its name, then each echoes a line,
//!   then all close.
//! - `http`: HTTP/1.1 GETs for a fixed time, each worker bound to one
//!   source address, kept alive or one connection per request (the peer
//!   bench's many-clients rows; see `lb_tests::lab::http_load`).
//!
//! Every socket operation has a timeout and every run a deadline, so it
//! never hangs; failures are counted and sampled, not fatal.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use lb_tests::lab::http_load::{self, HttpLoad};
use lb_tests::lab::report::{ChurnReport, ErrorSamples, HoldReport, SpreadReport};
use lb_tests::lab::sources::parse_sources;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::timeout;

/// A server's name line is short; more means it is not a lab server.
const MAX_NAME_LINE: usize = 256;

#[derive(Parser, Debug)]
#[command(about = "Lab traffic from many client addresses, JSON report on stdout")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// K sequential connections from every source address.
    Spread {
        #[command(flatten)]
        common: Common,
        /// Connections per source address, one after the other.
        #[arg(long, default_value_t = 1)]
        per_source: usize,
        /// Bytes to send and read back on each connection after the name.
        #[arg(long, default_value_t = 0)]
        payload: usize,
        /// Source addresses served at the same time.
        #[arg(long, default_value_t = 32)]
        parallel: usize,
        /// One datagram per "connection" instead of TCP.
        #[arg(long)]
        udp: bool,
    },
    /// Connections opened and closed back to back by `workers` tasks for
    /// `seconds`, worker i using source address i mod the sources (one
    /// address: every connection from it): connect, read the name, read the
    /// server's close, close. The server should close first
    /// (`lab-server --close-first`), as HTTP servers do, or the client's own
    /// TIME_WAIT sockets limit the rate instead of the load balancer.
    Churn {
        #[arg(long)]
        vip: SocketAddrV4,
        /// `A-B`, `A`, or a comma-separated list of these.
        #[arg(long)]
        sources: String,
        #[arg(long, default_value_t = 32)]
        workers: usize,
        /// How long to keep opening connections.
        #[arg(long)]
        seconds: u64,
        /// Timeout of every single operation (connect, read).
        #[arg(long, default_value = "10", value_name = "SECONDS")]
        timeout: u64,
    },
    /// N connections open at the same time, then an echo on each.
    Hold {
        #[command(flatten)]
        common: Common,
        /// Connections to hold open together.
        #[arg(long)]
        total: usize,
        /// Connection attempts in flight at once (the rest wait their turn).
        #[arg(long, default_value_t = 256)]
        parallel: usize,
    },
    /// HTTP/1.1 GETs for a fixed time from every source address.
    Http {
        #[command(flatten)]
        common: Common,
        /// Connections at once; worker i sends from source i mod the count.
        #[arg(long, default_value_t = 200)]
        connections: usize,
        /// How long to send requests.
        #[arg(long, default_value = "5", value_name = "SECONDS")]
        seconds: f64,
        /// A new connection per request (`Connection: close`).
        #[arg(long)]
        close: bool,
    },
}

#[derive(clap::Args, Debug)]
struct Common {
    /// Where to connect (the VIP and port, or any server).
    #[arg(long)]
    vip: SocketAddrV4,
    /// Source addresses: `A-B`, `A`, or a comma-separated list of these.
    #[arg(long)]
    sources: String,
    /// Timeout of every single operation (connect, read, write).
    #[arg(long, default_value = "10", value_name = "SECONDS")]
    timeout: u64,
    /// Whole run: attempts not started by then count as failures.
    #[arg(long, default_value = "120", value_name = "SECONDS")]
    deadline: u64,
}

impl Common {
    fn op_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
    fn deadline(&self, start: Instant) -> Instant {
        start + Duration::from_secs(self.deadline)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    lb_tests::lab::rlimit::raise_fd_limit();
    let json = match cli.command {
        Command::Spread {
            common,
            per_source,
            payload,
            parallel,
            udp,
        } => {
            let report = spread(&common, per_source, payload, parallel.max(1), udp).await?;
            serde_json::to_string_pretty(&report)?
        }
        Command::Churn {
            vip,
            sources,
            workers,
            seconds,
            timeout,
        } => {
            let report = churn(
                vip,
                parse_sources(&sources)?,
                workers.max(1),
                Duration::from_secs(seconds),
                Duration::from_secs(timeout),
            )
            .await?;
            serde_json::to_string_pretty(&report)?
        }
        Command::Hold {
            common,
            total,
            parallel,
        } => {
            let report = hold(&common, total, parallel.max(1)).await?;
            serde_json::to_string_pretty(&report)?
        }
        Command::Http {
            common,
            connections,
            seconds,
            close,
        } => {
            if !(seconds > 0.0 && seconds <= common.deadline as f64) {
                bail!(
                    "--seconds must be above 0 and at most the run's --deadline ({} s), not {seconds}",
                    common.deadline
                );
            }
            let load = HttpLoad {
                target: common.vip,
                sources: parse_sources(&common.sources)?,
                connections,
                duration: Duration::from_secs_f64(seconds),
                close,
                op_timeout: common.op_timeout(),
            };
            serde_json::to_string_pretty(&http_load::run(&load).await?)?
        }
    };
    println!("{json}");
    Ok(())
}

async fn churn(
    vip: SocketAddrV4,
    sources: Vec<Ipv4Addr>,
    workers: usize,
    run: Duration,
    op: Duration,
) -> Result<ChurnReport> {
    let start = Instant::now();
    let stop = start + run;
    if sources.is_empty() {
        bail!("churn needs at least one source address");
    }
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let source = sources[worker % sources.len()];
        tasks.push(tokio::spawn(async move {
            let mut answers: BTreeMap<String, u64> = BTreeMap::new();
            let mut errors = ErrorSamples::default();
            let mut attempts = 0u64;
            while Instant::now() < stop {
                attempts += 1;
                match churn_once(source, vip, op).await {
                    Ok(name) => *answers.entry(name).or_default() += 1,
                    Err(e) => errors.push(format!("{source} #{attempts}: {e:#}")),
                }
            }
            (attempts, answers, errors)
        }));
    }
    let mut report = ChurnReport {
        target: vip.to_string(),
        sources: sources.len(),
        workers,
        ..Default::default()
    };
    let mut errors = ErrorSamples::default();
    for task in tasks {
        let (attempts, answers, worker_errors) = task.await.context("a churn task panicked")?;
        report.attempts += attempts;
        for (name, n) in answers {
            *report.per_backend.entry(name).or_default() += n;
        }
        errors.merge(worker_errors);
    }
    report.errors = errors.count;
    report.error_samples = errors.samples;
    report.elapsed_ms = start.elapsed().as_millis() as u64;
    Ok(report)
}

/// One connection of `churn`: the name, then the server's close, then ours.
async fn churn_once(source: Ipv4Addr, vip: SocketAddrV4, op: Duration) -> Result<String> {
    let mut stream = connect_from(source, vip, op).await?;
    let name = read_name(&mut stream, op).await?;
    let mut rest = [0u8; 64];
    let n = timeout(op, stream.read(&mut rest))
        .await
        .context("the server did not close after its name")?
        .context("reading the server's close failed")?;
    if n != 0 {
        bail!("{name} sent more than its name; is it running with --close-first?");
    }
    Ok(name)
}

/// What one source address saw in `spread`.
struct SourceResult {
    source: Ipv4Addr,
    answers: Vec<(String, u64)>,
    errors: Vec<String>,
}

async fn spread(
    common: &Common,
    per_source: usize,
    payload: usize,
    parallel: usize,
    udp: bool,
) -> Result<SpreadReport> {
    let sources = parse_sources(&common.sources)?;
    let start = Instant::now();
    let deadline = common.deadline(start);
    let op = common.op_timeout();
    let vip = common.vip;
    let permits = Arc::new(Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(sources.len());
    for source in sources {
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            let mut result = SourceResult {
                source,
                answers: vec![],
                errors: vec![],
            };
            for attempt in 0..per_source {
                if Instant::now() > deadline {
                    result
                        .errors
                        .push(format!("{source} #{attempt}: run deadline passed"));
                    continue;
                }
                let outcome = if udp {
                    udp_exchange(source, vip, op).await.map(|name| (name, 0))
                } else {
                    tcp_exchange(source, vip, payload, op).await
                };
                match outcome {
                    Ok(answer) => result.answers.push(answer),
                    Err(e) => result.errors.push(format!("{source} #{attempt}: {e:#}")),
                }
            }
            result
        }));
    }
    let mut report = SpreadReport {
        target: vip.to_string(),
        protocol: if udp { "udp" } else { "tcp" }.into(),
        ..Default::default()
    };
    let mut errors = ErrorSamples::default();
    for task in tasks {
        let result = task.await.context("a spread task panicked")?;
        report.attempts += per_source as u64;
        for message in result.errors {
            errors.push(message);
        }
        let names = report
            .per_source
            .entry(result.source.to_string())
            .or_default();
        for (name, bytes) in result.answers {
            let tally = report.per_backend.entry(name.clone()).or_default();
            tally.connections += 1;
            tally.bytes += bytes;
            names.push(name);
        }
    }
    report.errors = errors.count;
    report.error_samples = errors.samples;
    report.elapsed_ms = start.elapsed().as_millis() as u64;
    Ok(report)
}

/// One TCP connection from `source`: name line, optional payload echo.
/// Returns the name and the payload bytes echoed.
async fn tcp_exchange(
    source: Ipv4Addr,
    vip: SocketAddrV4,
    payload: usize,
    op: Duration,
) -> Result<(String, u64)> {
    let mut stream = connect_from(source, vip, op).await?;
    let name = read_name(&mut stream, op).await?;
    if payload > 0 {
        let sent: Vec<u8> = (0..payload).map(|i| b'a' + (i % 26) as u8).collect();
        let mut back = vec![0u8; payload];
        timeout(op, async {
            // Write and read at once: a payload larger than the socket
            // buffers would otherwise deadlock against the echo.
            let (mut rd, mut wr) = stream.split();
            tokio::try_join!(wr.write_all(&sent), rd.read_exact(&mut back))
        })
        .await
        .context("payload echo timed out")?
        .context("payload echo failed")?;
        if back != sent {
            bail!("{name} echoed different bytes than were sent");
        }
    }
    Ok((name, payload as u64))
}

async fn udp_exchange(source: Ipv4Addr, vip: SocketAddrV4, op: Duration) -> Result<String> {
    let socket = UdpSocket::bind(SocketAddr::from((source, 0)))
        .await
        .with_context(|| format!("could not bind UDP to {source}"))?;
    socket.connect(vip).await?;
    socket.send(b"who\n").await.context("UDP send failed")?;
    let mut buf = [0u8; MAX_NAME_LINE];
    let n = timeout(op, socket.recv(&mut buf))
        .await
        .context("no UDP answer in time")?
        .context("UDP receive failed")?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim_end().to_string())
}

async fn connect_from(source: Ipv4Addr, vip: SocketAddrV4, op: Duration) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4().context("could not create a socket")?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .with_context(|| format!("could not bind to {source}"))?;
    let stream = timeout(op, socket.connect(vip.into()))
        .await
        .context("connect timed out")?
        .context("connect failed")?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads the server's `NAME\n` line without reading past it.
async fn read_name(stream: &mut TcpStream, op: Duration) -> Result<String> {
    let mut line = Vec::with_capacity(16);
    let mut byte = [0u8; 1];
    timeout(op, async {
        loop {
            let n = stream
                .read(&mut byte)
                .await
                .context("reading the name failed")?;
            if n == 0 {
                bail!(
                    "closed before sending a name (got {:?})",
                    String::from_utf8_lossy(&line)
                );
            }
            if byte[0] == b'\n' {
                return Ok(());
            }
            if line.len() == MAX_NAME_LINE {
                bail!("name line longer than {MAX_NAME_LINE} bytes");
            }
            line.push(byte[0]);
        }
    })
    .await
    .context("no name line in time")??;
    Ok(String::from_utf8_lossy(&line).into_owned())
}

async fn hold(common: &Common, total: usize, parallel: usize) -> Result<HoldReport> {
    let sources = parse_sources(&common.sources)?;
    let start = Instant::now();
    let deadline = common.deadline(start);
    let op = common.op_timeout();
    let vip = common.vip;
    let mut errors = ErrorSamples::default();

    // Phase 1: open everything; keep every stream.
    let permits = Arc::new(Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let source = sources[i % sources.len()];
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            if Instant::now() > deadline {
                bail!("{source}: run deadline passed before connecting");
            }
            let mut stream = connect_from(source, vip, op)
                .await
                .with_context(|| format!("{source}"))?;
            let name = read_name(&mut stream, op)
                .await
                .with_context(|| format!("{source}"))?;
            Ok((stream, name))
        }));
    }
    let mut open = Vec::with_capacity(total);
    for task in tasks {
        match task.await.context("a hold task panicked")? {
            Ok(conn) => open.push(conn),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let connect_ms = start.elapsed().as_millis() as u64;
    let peak_open = open.len() as u64;

    // Phase 2: every connection is still open; each must echo a line.
    let echo_start = Instant::now();
    let mut tasks = Vec::with_capacity(open.len());
    for (i, (mut stream, name)) in open.into_iter().enumerate() {
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            let line = format!("still there {i}\n");
            let mut back = vec![0u8; line.len()];
            let echoed = timeout(op, async {
                stream.write_all(line.as_bytes()).await?;
                stream.read_exact(&mut back).await
            })
            .await;
            let result = match echoed {
                Ok(Ok(_)) if back == line.as_bytes() => Ok(name.clone()),
                Ok(Ok(_)) => Err(format!("{name}: echo differs from what was sent")),
                Ok(Err(e)) => Err(format!("{name}: echo failed: {e}")),
                Err(_) => Err(format!("{name}: echo timed out")),
            };
            // Returned, not dropped: everything closes together in phase 3.
            (stream, result)
        }));
    }
    let mut streams = Vec::with_capacity(tasks.len());
    let mut per_backend: BTreeMap<String, u64> = BTreeMap::new();
    let mut successes = 0;
    for task in tasks {
        let (stream, result) = task.await.context("an echo task panicked")?;
        streams.push(stream);
        match result {
            Ok(name) => {
                successes += 1;
                *per_backend.entry(name).or_default() += 1;
            }
            Err(message) => errors.push(message),
        }
    }
    let echo_ms = echo_start.elapsed().as_millis() as u64;

    // Phase 3: close all.
    drop(streams);
    Ok(HoldReport {
        target: vip.to_string(),
        total: total as u64,
        successes,
        failures: total as u64 - successes,
        per_backend,
        peak_open,
        connect_ms,
        echo_ms,
        elapsed_ms: start.elapsed().as_millis() as u64,
        error_samples: errors.samples,
    })
}
