//! HTTP/1.1 load from many source addresses for a fixed time
//! (`lab-client http`), for the peer bench's many-clients rows: wrk cannot
//! bind a source address, and one wrk per address would be 200 processes
//! fighting for two cores. Each worker is bound to one source address (in
//! turn over the list) and sends GETs one after the other, on one kept-alive
//! connection or on a new connection per request.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use super::report::{ErrorSamples, HttpReport};

/// An answer's head larger than this is not the small static page we serve.
const MAX_HEAD: usize = 8192;
/// Nor is a body larger than this.
const MAX_BODY: usize = 1 << 20;
/// After a failure a worker waits this long, so a refused connection cannot
/// spin a core for the whole run.
const PAUSE_AFTER_ERROR: Duration = Duration::from_millis(10);

/// What to send, from where, for how long.
#[derive(Clone, Debug)]
pub struct HttpLoad {
    pub target: SocketAddrV4,
    pub sources: Vec<Ipv4Addr>,
    pub connections: usize,
    pub duration: Duration,
    /// A new connection per request (`Connection: close`).
    pub close: bool,
    /// Bound on every connect, write and read.
    pub op_timeout: Duration,
}

/// One worker's tally.
#[derive(Default)]
struct Tally {
    ok: u64,
    not_ok: u64,
    errors: ErrorSamples,
}

/// Runs the load and reports what came back. Workers start no request after
/// `duration`; one in flight then ends within `op_timeout` per operation,
/// and its answer is not counted.
pub async fn run(load: &HttpLoad) -> Result<HttpReport> {
    if load.sources.is_empty() || load.connections == 0 {
        bail!("an HTTP load needs at least one source address and one connection");
    }
    let request = request(load.target, load.close);
    let start = Instant::now();
    let end = start + load.duration;
    let mut workers = Vec::with_capacity(load.connections);
    for i in 0..load.connections {
        let source = load.sources[i % load.sources.len()];
        let (target, close, op, request) =
            (load.target, load.close, load.op_timeout, request.clone());
        workers.push(tokio::spawn(async move {
            worker(source, target, close, op, request, end).await
        }));
    }
    let mut report = HttpReport {
        target: load.target.to_string(),
        sources: load.sources.len() as u64,
        connections: load.connections as u64,
        close: load.close,
        ..Default::default()
    };
    let mut errors = ErrorSamples::default();
    for handle in workers {
        let tally = handle.await.context("an HTTP load worker panicked")?;
        report.ok += tally.ok;
        report.not_ok += tally.not_ok;
        errors.count += tally.errors.count;
        for sample in tally.errors.samples {
            if errors.samples.len() < super::report::MAX_ERROR_SAMPLES {
                errors.samples.push(sample);
            }
        }
    }
    report.errors = errors.count;
    report.error_samples = errors.samples;
    report.elapsed_ms = load.duration.as_millis() as u64;
    Ok(report)
}

async fn worker(
    source: Ipv4Addr,
    target: SocketAddrV4,
    close: bool,
    op: Duration,
    request: Vec<u8>,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(1024);
    while Instant::now() < end {
        let outcome = async {
            let conn = match stream.as_mut() {
                Some(conn) => conn,
                None => stream.insert(connect_from(source, target, op).await?),
            };
            exchange(conn, &request, &mut buf, op).await
        }
        .await;
        match outcome {
            // An answer that came after the end is not counted: the rate is
            // taken over the run's duration, as wrk does.
            Ok(_) if Instant::now() > end => break,
            Ok(status) => {
                if status == 200 {
                    tally.ok += 1;
                } else {
                    tally.not_ok += 1;
                }
                if close {
                    stream = None;
                }
            }
            Err(e) => {
                tally.errors.push(format!("{source}: {e:#}"));
                stream = None;
                tokio::time::sleep(PAUSE_AFTER_ERROR).await;
            }
        }
    }
    tally
}

/// `GET /` with the Host header, and `Connection: close` when asked.
pub fn request(target: SocketAddrV4, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!("GET / HTTP/1.1\r\nHost: {target}\r\n{connection}\r\n").into_bytes()
}

/// Binds to `source` with the port left to connect(): the port is then
/// chosen for the whole 4-tuple, so one address can open far more than the
/// ephemeral range's worth of connections to several targets, and
/// `tcp_tw_reuse` applies as it does to an unbound socket (wrk's).
async fn connect_from(source: Ipv4Addr, target: SocketAddrV4, op: Duration) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4().context("could not create a socket")?;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a pointer to a c_int of the
    // size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .context("could not set IP_BIND_ADDRESS_NO_PORT");
    }
    socket
        .bind(SocketAddr::from((source, 0)))
        .with_context(|| format!("could not bind to {source}"))?;
    let stream = timeout(op, socket.connect(target.into()))
        .await
        .context("connect timed out")?
        .context("connect failed")?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends one request and reads its whole answer; returns the status.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
    op: Duration,
) -> Result<u16> {
    timeout(op, stream.write_all(request))
        .await
        .context("sending the request timed out")?
        .context("sending the request failed")?;
    buf.clear();
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(head) = parse_head(buf)? {
            let want = head.head_len + head.content_length;
            if buf.len() >= want {
                return Ok(head.status);
            }
        }
        let n = timeout(op, stream.read(&mut chunk))
            .await
            .context("reading the answer timed out")?
            .context("reading the answer failed")?;
        if n == 0 {
            bail!(
                "the server closed after {} bytes, before the whole answer",
                buf.len()
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The parts of an answer's head we need.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: usize,
    /// Bytes up to and including the blank line.
    pub head_len: usize,
}

/// Parses the status line and Content-Length once the whole head is in
/// `buf`; `None` while it is not. Answers without a length (chunked) are
/// refused: the bench's servers send a static file.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            bail!("no end of the answer's head in {MAX_HEAD} bytes");
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).context("the answer's head is not text")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("not an HTTP/1.x status line: {status_line:?}"))?;
    let content_length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse::<usize>())
        .transpose()
        .context("the Content-Length is not a number")?
        .context("the answer has no Content-Length")?;
    if content_length > MAX_BODY {
        bail!("the answer's body of {content_length} bytes is not a small static page");
    }
    Ok(Some(Head {
        status,
        content_length,
        head_len: end + 4,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_head_gives_status_and_length() {
        let answer = b"HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length: 5\r\n\r\nhello";
        let head = parse_head(answer).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                status: 200,
                content_length: 5,
                head_len: answer.len() - 5
            }
        );
    }

    #[test]
    fn a_partial_head_asks_for_more() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
    }

    #[test]
    fn answers_we_cannot_measure_are_refused() {
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert_eq!(
            parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .unwrap()
                .status,
            404
        );
    }

    #[test]
    fn the_request_asks_to_close_only_when_told() {
        let target: SocketAddrV4 = "192.0.2.10:80".parse().unwrap();
        let keep = String::from_utf8(request(target, false)).unwrap();
        assert_eq!(keep, "GET / HTTP/1.1\r\nHost: 192.0.2.10:80\r\n\r\n");
        let close = String::from_utf8(request(target, true)).unwrap();
        assert!(close.contains("\r\nConnection: close\r\n\r\n"), "{close}");
    }
}
