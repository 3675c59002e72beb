//! Running the lab programs: `lab-server` on a node (with its stats
//! listener) and `lab-client` in the client namespace, parsing its JSON.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::binaries;
use super::lbd::Lbd;
use super::report::{ChurnReport, HoldReport, ServerStats, SpreadReport};
use super::setup::Lab;

/// How long a server may take to print `ready`.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `lab-server` the lab started (and kills at teardown).
#[derive(Clone, Debug)]
pub struct LabServer {
    pub name: String,
    /// Short node name it runs on.
    pub node: String,
    pub listen: SocketAddr,
    pub udp: bool,
    /// `127.0.0.1:<port>` inside the node's namespace.
    pub stats_addr: SocketAddr,
    pub pid: u32,
}

impl Lab {
    /// Starts `lab-server --name NAME --listen LISTEN [--udp]` on `node`
    /// and waits until it listens.
    pub fn start_server(
        &self,
        node: &str,
        name: &str,
        listen: SocketAddr,
        udp: bool,
    ) -> Result<LabServer> {
        self.start_server_with(node, name, listen, udp, &[])
    }

    /// [`Lab::start_server`] with more `lab-server` flags (`--close-first`).
    pub fn start_server_with(
        &self,
        node: &str,
        name: &str,
        listen: SocketAddr,
        udp: bool,
        extra: &[&str],
    ) -> Result<LabServer> {
        let program = binaries::lab_server()?;
        let stats_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.next_stats_port()));
        let log = self.log_file(node, format!("lab-server-{name}").as_ref())?;
        let mut cmd = self.command_in(node, &program)?;
        cmd.args(["--name", name, "--listen", &listen.to_string()])
            .args(["--stats", &stats_addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if udp {
            cmd.arg("--udp");
        }
        cmd.args(extra);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start lab-server {name} on {node}"))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let pid = child.id();
        self.adopt(child);
        // Read the first line on a helper thread so a silent server cannot
        // hang us.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(SERVER_START_TIMEOUT) {
            Ok(line) if line.trim() == "ready" => {}
            Ok(line) => bail!(
                "lab-server {name} on {node} did not start (said {:?}); see {}",
                line.trim(),
                self.dir().display()
            ),
            Err(_) => bail!(
                "lab-server {name} on {node} did not report ready within {SERVER_START_TIMEOUT:?}"
            ),
        }
        Ok(LabServer {
            name: name.to_string(),
            node: node.to_string(),
            listen,
            udp,
            stats_addr,
            pid,
        })
    }

    /// Starts a TCP `lab-server` named `be<n>` on every backend, port `port`.
    pub fn start_backend_servers(&self, port: u16) -> Result<Vec<LabServer>> {
        (1..=self.backends())
            .map(|n| {
                let addr = SocketAddr::from((self.backend_addr(n), port));
                self.start_server(&format!("be{n}"), &format!("be{n}"), addr, false)
            })
            .collect()
    }

    /// Like [`Lab::start_backend_servers`], but every server closes first
    /// after its name, as an HTTP server answering `Connection: close`.
    pub fn start_backend_servers_closing_first(&self, port: u16) -> Result<Vec<LabServer>> {
        (1..=self.backends())
            .map(|n| {
                let addr = SocketAddr::from((self.backend_addr(n), port));
                self.start_server_with(
                    &format!("be{n}"),
                    &format!("be{n}"),
                    addr,
                    false,
                    &["--close-first"],
                )
            })
            .collect()
    }

    /// `lab-client churn` from the client namespace's first `sources`
    /// addresses: `workers` tasks open and close connections back to back
    /// for `seconds`.
    pub fn churn(
        &self,
        target: SocketAddrV4,
        sources: usize,
        workers: usize,
        seconds: u64,
    ) -> Result<ChurnReport> {
        let range = super::topology::client_range(sources.min(self.plan.shape.client_addrs));
        let args = vec![
            "churn".to_string(),
            "--vip".into(),
            target.to_string(),
            "--sources".into(),
            range,
            "--workers".into(),
            workers.to_string(),
            "--seconds".into(),
            seconds.to_string(),
        ];
        self.client_json(&args)
    }

    /// The counters of a server started by [`Lab::start_server`].
    pub fn server_stats(&self, server: &LabServer) -> Result<ServerStats> {
        let addr = server.stats_addr;
        let text = self
            .run_in(&server.node, move || -> std::io::Result<String> {
                let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut text = String::new();
                stream.read_to_string(&mut text)?;
                Ok(text)
            })?
            .with_context(|| format!("could not read the stats of lab-server {}", server.name))?;
        serde_json::from_str(&text)
            .with_context(|| format!("lab-server {} sent unreadable stats: {text}", server.name))
    }

    /// `lab-client spread` from the client namespace: `per_source`
    /// sequential connections from each of the first `sources` client
    /// addresses. `extra` goes to the command line (e.g. `--payload 4096`).
    pub fn spread(
        &self,
        target: SocketAddrV4,
        sources: usize,
        per_source: usize,
        extra: &[&str],
    ) -> Result<SpreadReport> {
        let range = super::topology::client_range(sources.min(self.plan.shape.client_addrs));
        let mut args = vec![
            "spread".to_string(),
            "--vip".into(),
            target.to_string(),
            "--sources".into(),
            range,
            "--per-source".into(),
            per_source.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.client_json(&args)
    }

    /// [`Lab::spread`] that must fully succeed, every source on one backend;
    /// panics naming `what` otherwise.
    pub fn spread_ok(
        &self,
        target: SocketAddrV4,
        sources: usize,
        per_source: usize,
        what: &str,
    ) -> SpreadReport {
        let report = self
            .spread(target, sources, per_source, &[])
            .unwrap_or_else(|e| panic!("{what}: spread did not run: {e:#}"));
        report.assert_all_ok_and_sticky(sources, what);
        report
    }

    /// `lab-client hold`: `total` concurrent connections over all client
    /// addresses.
    pub fn hold(&self, target: SocketAddrV4, total: usize, extra: &[&str]) -> Result<HoldReport> {
        let mut args = vec![
            "hold".to_string(),
            "--vip".into(),
            target.to_string(),
            "--sources".into(),
            self.client_range(),
            "--total".into(),
            total.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.client_json(&args)
    }

    fn client_json<T: serde::de::DeserializeOwned>(&self, args: &[String]) -> Result<T> {
        let program = binaries::lab_client()?;
        let mut full = vec![program.to_string_lossy().into_owned()];
        full.extend(args.iter().cloned());
        let output = self.exec_in("cl", &full)?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(&stdout)
            .with_context(|| format!("lab-client {} printed no report: {stdout}", args.join(" ")))
    }

    /// One TCP connection from the client namespace (primary address):
    /// connect, read the server's name line. For probes and small checks.
    pub fn fetch_name(&self, target: SocketAddrV4, timeout: Duration) -> Result<String> {
        self.run_in("cl", move || fetch_name(target, timeout))?
    }

    /// Waits until `target` answers a name through the LB, checking that
    /// `lbd` keeps running; returns how long it took.
    pub fn wait_for_service(
        &self,
        lbd: &mut Lbd,
        target: SocketAddrV4,
        timeout: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        let mut last_error = String::from("no attempt");
        while start.elapsed() < timeout {
            lbd.check_running()?;
            match self.fetch_name(target, Duration::from_secs(2)) {
                Ok(_) => return Ok(start.elapsed()),
                Err(e) => last_error = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{target} did not answer through lbd within {timeout:?} (last error: {last_error}); lbd log ends with:\n{}",
            lbd.log_tail(30)
        )
    }
}

/// Connects to `target`, reads one line (the server's name), closes.
pub fn fetch_name(target: SocketAddrV4, timeout: Duration) -> Result<String> {
    let stream = TcpStream::connect_timeout(&target.into(), timeout)
        .with_context(|| format!("could not connect to {target}"))?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .with_context(|| format!("{target} sent no name line"))?;
    if !line.ends_with('\n') {
        bail!("{target} closed before sending its name (got {line:?})");
    }
    Ok(line.trim_end().to_string())
}

/// Opens a TCP connection from `source` to `target` and hands it back as a
/// blocking std stream, for tests that hold a connection across an event or
/// need a chosen client address. `source` must be an address of the calling
/// thread's namespace: call it inside [`Lab::run_in`].
pub fn connect_from(
    source: Ipv4Addr,
    target: SocketAddrV4,
    timeout: Duration,
) -> Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("could not build a runtime to connect with")?;
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().context("could not create a socket")?;
        socket
            .bind(SocketAddr::from((source, 0)))
            .with_context(|| format!("could not bind to {source}"))?;
        tokio::time::timeout(timeout, socket.connect(target.into()))
            .await
            .with_context(|| format!("connecting from {source} to {target} timed out"))?
            .with_context(|| format!("could not connect from {source} to {target}"))
    })?;
    let stream = stream
        .into_std()
        .context("could not take the connection out of the runtime")?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Lab {
    /// One connection from each of `sources` (client namespace addresses)
    /// to `target`, past the server's name line, held open for a test to
    /// echo on across some event ([`echo_all`]).
    pub fn open_held(
        &self,
        sources: Vec<Ipv4Addr>,
        target: SocketAddrV4,
        timeout: Duration,
    ) -> Result<Vec<(Ipv4Addr, TcpStream)>> {
        self.run_in("cl", move || -> Result<Vec<(Ipv4Addr, TcpStream)>> {
            sources
                .into_iter()
                .map(|source| {
                    let mut stream = connect_from(source, target, timeout)?;
                    read_line(&mut stream)?;
                    Ok((source, stream))
                })
                .collect()
        })?
    }
}

/// Reads one line (without its newline) from `stream`, byte by byte so
/// nothing after it is consumed: the server's name, or an echo.
pub fn read_line(stream: &mut TcpStream) -> Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = stream.read(&mut byte).context("reading a line failed")?;
        if n == 0 {
            bail!(
                "the connection closed before a full line (got {:?})",
                String::from_utf8_lossy(&line)
            );
        }
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte[0]);
    }
}

/// Sends `message` as a line on a connection to a `lab-server` (past its
/// name line) and checks that the same line comes back.
pub fn echo_line(stream: &mut TcpStream, message: &str) -> Result<()> {
    use std::io::Write;
    stream
        .write_all(format!("{message}\n").as_bytes())
        .context("sending a line to echo failed")?;
    let echoed = read_line(stream)?;
    if echoed != message {
        bail!("sent {message:?} but {echoed:?} came back");
    }
    Ok(())
}

/// Sends a distinct line (`<tag>-<source>`) on every held connection and
/// expects it back; panics naming every connection that broke.
pub fn echo_all(held: &mut [(Ipv4Addr, TcpStream)], tag: &str) {
    let failures: Vec<String> = held
        .iter_mut()
        .filter_map(|(source, stream)| {
            echo_line(stream, &format!("{tag}-{source}"))
                .err()
                .map(|e| format!("{source}: {e:#}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{tag}: held connections broke: {failures:?}"
    );
}
