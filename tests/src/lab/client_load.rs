//! New connections without pause while a test breaks something: one thread
//! per client address in the client namespace, each opening connection after
//! connection (connect, the server's name line, one echoed line, close) and
//! noting when each started and ended, so a soak can tell which of its
//! cycles (or which failover window) a connection belonged to.
//!
//! The threads stop when asked ([`ClientLoad::finish`]), when dropped (also
//! while a test unwinds), or at the latest after the load's own time limit.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::apps::{connect_from, echo_line, read_line};
use super::netns;
use super::setup::Lab;

/// How the load runs.
#[derive(Clone, Debug)]
pub struct LoadShape {
    /// Pause after each connection of one thread: the rate is about
    /// `sources / (pause + connection time)`.
    pub pause: Duration,
    /// Connect, read and write timeout of each connection.
    pub timeout: Duration,
    /// The threads stop by themselves after this long, whatever the test
    /// does.
    pub limit: Duration,
}

/// One connection of the load.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub source: Ipv4Addr,
    pub started: Instant,
    pub ended: Instant,
    /// The backend that answered, or why the connection failed.
    pub outcome: Result<String, String>,
}

impl Attempt {
    /// Whether the connection was under way at some time in `[from, to]`.
    pub fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.started <= to && self.ended >= from
    }
}

/// Running client threads; [`ClientLoad::finish`] collects their attempts.
pub struct ClientLoad {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Result<Vec<Attempt>>>>,
}

impl Lab {
    /// Starts one connection thread per address in `sources` (addresses of
    /// the client namespace) against `target`, a `lab-server` that echoes.
    pub fn start_client_load(
        &self,
        sources: &[Ipv4Addr],
        target: SocketAddrV4,
        shape: LoadShape,
    ) -> Result<ClientLoad> {
        let netns = self.netns("cl")?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let threads = sources
            .iter()
            .map(|&source| {
                let (netns, stop, done, shape) =
                    (netns.clone(), stop.clone(), done.clone(), shape.clone());
                std::thread::Builder::new()
                    .name(format!("load-{source}"))
                    .spawn(move || {
                        netns::run_in(&netns, || {
                            connect_loop(source, target, &shape, &stop, &done)
                        })
                    })
                    .context("could not start a client load thread")
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ClientLoad {
            stop,
            done,
            threads,
        })
    }
}

impl ClientLoad {
    /// Connections finished so far, successful or not.
    pub fn finished_so_far(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Stops the threads (each ends its connection first) and returns
    /// every attempt, in the order they started.
    pub fn finish(mut self) -> Result<Vec<Attempt>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut attempts = Vec::new();
        for thread in self.threads.drain(..) {
            let from_thread = thread
                .join()
                .map_err(|_| anyhow::anyhow!("a client load thread panicked"))??;
            attempts.extend(from_thread);
        }
        attempts.sort_by_key(|a| a.started);
        Ok(attempts)
    }
}

impl Drop for ClientLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn connect_loop(
    source: Ipv4Addr,
    target: SocketAddrV4,
    shape: &LoadShape,
    stop: &AtomicBool,
    done: &AtomicU64,
) -> Vec<Attempt> {
    let begin = Instant::now();
    let mut attempts = Vec::new();
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) && begin.elapsed() < shape.limit {
        sequence += 1;
        let started = Instant::now();
        let outcome =
            one_connection(source, target, shape.timeout, sequence).map_err(|e| format!("{e:#}"));
        attempts.push(Attempt {
            source,
            started,
            ended: Instant::now(),
            outcome,
        });
        done.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(shape.pause);
    }
    attempts
}

/// Connect, name, echo, close: the stream is dropped here, so we close
/// first and the TIME_WAIT stays on the client.
fn one_connection(
    source: Ipv4Addr,
    target: SocketAddrV4,
    timeout: Duration,
    sequence: u64,
) -> Result<String> {
    let mut stream = connect_from(source, target, timeout)?;
    let name = read_line(&mut stream).context("no name line")?;
    echo_line(&mut stream, &format!("load-{source}-{sequence}"))?;
    Ok(name)
}

/// The failed attempts, as `source: why` lines (at most `limit`).
pub fn failures(attempts: &[Attempt], limit: usize) -> Vec<String> {
    attempts
        .iter()
        .filter_map(|a| {
            a.outcome
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", a.source))
        })
        .take(limit)
        .collect()
}
