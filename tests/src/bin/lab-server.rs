//! A backend for labs: says who it is, then echoes.
//!
//! TCP: on every accepted connection writes `NAME\n` at once, then echoes
//! whatever arrives until EOF, so a client can hold a connection open and
//! check that it still works. UDP (`--udp`): answers every datagram with
//! `NAME\n`. With `--stats ADDR`, a connection to ADDR receives the
//! counters as JSON (see `lb_tests::lab::ServerStats`). Prints `ready` on
//! stdout once it listens.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use clap::Parser;
use lb_tests::lab::ServerStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

/// Enough for a burst of thousands of connections through the LB.
const LISTEN_BACKLOG: u32 = 8192;

#[derive(Parser, Debug)]
#[command(about = "Lab backend: answers its name, then echoes")]
struct Args {
    /// Name sent as the first line of every connection (or UDP answer).
    #[arg(long)]
    name: String,
    /// Address and port to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Serve UDP instead of TCP.
    #[arg(long)]
    udp: bool,
    /// Where to serve the counters as JSON (one connection, one report).
    #[arg(long)]
    stats: Option<SocketAddr>,
    /// TCP: close right after the name, as an HTTP server does after a
    /// `Connection: close` answer, so the server side holds TIME_WAIT (the
    /// case that matters when a load balancer reuses SNAT ports).
    #[arg(long)]
    close_first: bool,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    datagrams: AtomicU64,
}

impl Counters {
    fn snapshot(&self, name: &str) -> ServerStats {
        ServerStats {
            name: name.to_string(),
            accepted: self.accepted.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            peak_open: self.peak_open.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            datagrams: self.datagrams.load(Ordering::Relaxed),
        }
    }

    fn opened(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let now = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_open.fetch_max(now, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    lb_tests::lab::rlimit::raise_fd_limit();
    let counters = Arc::new(Counters::default());
    let greeting: Arc<[u8]> = format!("{}\n", args.name).into_bytes().into();

    if let Some(addr) = args.stats {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("could not listen for stats on {addr}"))?;
        tokio::spawn(serve_stats(listener, counters.clone(), args.name.clone()));
    }
    if args.udp {
        let socket = UdpSocket::bind(args.listen)
            .await
            .with_context(|| format!("could not bind UDP {}", args.listen))?;
        announce_ready()?;
        serve_udp(socket, counters, greeting).await
    } else {
        let listener = listen_tcp(args.listen)?;
        announce_ready()?;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: keep serving the others.
                    eprintln!("lab-server {}: accept failed: {e}", args.name);
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            counters.opened();
            let counters = counters.clone();
            let greeting = greeting.clone();
            let close_first = args.close_first;
            tokio::spawn(async move {
                let _ = if close_first {
                    greet_and_close(stream, &counters, &greeting).await
                } else {
                    echo(stream, &counters, &greeting).await
                };
                counters.open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}

fn listen_tcp(addr: SocketAddr) -> Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("could not bind TCP {addr}"))?;
    socket
        .listen(LISTEN_BACKLOG)
        .with_context(|| format!("could not listen on {addr}"))
}

fn announce_ready() -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    Ok(())
}

async fn echo(mut stream: TcpStream, counters: &Counters, greeting: &[u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.write_all(greeting).await?;
    counters
        .bytes_out
        .fetch_add(greeting.len() as u64, Ordering::Relaxed);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        stream.write_all(&buf[..n]).await?;
        counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Sends the name and closes first; then reads what is left until the
/// client's own close, so the close is a FIN both ways, not a RST.
async fn greet_and_close(
    mut stream: TcpStream,
    counters: &Counters,
    greeting: &[u8],
) -> std::io::Result<()> {
    stream.write_all(greeting).await?;
    counters
        .bytes_out
        .fetch_add(greeting.len() as u64, Ordering::Relaxed);
    stream.shutdown().await?;
    let mut buf = [0u8; 256];
    // Bounded: the client closes once it has the name and our FIN.
    let drain = async {
        while stream.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), drain).await;
    Ok(())
}

async fn serve_udp(socket: UdpSocket, counters: Arc<Counters>, greeting: Arc<[u8]>) -> Result<()> {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, peer) = socket
            .recv_from(&mut buf)
            .await
            .context("UDP receive failed")?;
        counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        counters.datagrams.fetch_add(1, Ordering::Relaxed);
        if socket.send_to(&greeting, peer).await.is_ok() {
            counters
                .bytes_out
                .fetch_add(greeting.len() as u64, Ordering::Relaxed);
        }
    }
}

async fn serve_stats(listener: TcpListener, counters: Arc<Counters>, name: String) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let json = serde_json::to_string(&counters.snapshot(&name)).unwrap_or_default();
        let _ = stream.write_all(json.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}
