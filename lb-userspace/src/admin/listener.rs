//! Listening sockets for the admin page and the redirects. They bind with
//! IP_FREEBIND: on the VRRP backup the VIP is not on any interface yet, and
//! the listener must already be there when it arrives.
//!
//! Connections are bounded in number and closed when idle: the agent shares
//! its file descriptor limit with them, and health checks and VRRP need
//! sockets of their own whatever clients do to the page.

use std::{
    future::Future,
    io,
    net::{SocketAddr, SocketAddrV4, TcpListener},
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// Pending connections the kernel queues before `accept`.
const BACKLOG: i32 = 128;
/// Open connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection with no byte read or written this long is closed.
pub const IDLE: Duration = Duration::from_secs(60);

/// A listener serving at most `max` connections at once, each closed after
/// `idle` without traffic.
pub struct Bounded {
    listener: tokio::net::TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl Bounded {
    pub fn new(listener: TcpListener, max: usize, idle: Duration) -> Result<Self> {
        Ok(Bounded {
            listener: tokio::net::TcpListener::from_std(listener)
                .context("registering the listener with the runtime")?,
            permits: Arc::new(Semaphore::new(max)),
            idle,
        })
    }
}

impl axum::serve::Listener for Bounded {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        Guarded {
                            stream,
                            idle: self.idle,
                            deadline: Box::pin(tokio::time::sleep(self.idle)),
                            _permit: permit,
                        },
                        peer,
                    );
                }
                Err(e) => {
                    // EMFILE and friends: wait instead of spinning.
                    tracing::warn!("admin listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted connection holding its slot, with an idle deadline.
pub struct Guarded {
    stream: TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Guarded {
    fn progressed(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    fn expired(&mut self, cx: &mut TaskContext<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle too long")
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                self.progressed();
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A non-blocking TCP listener on `address`, which need not be local yet.
pub fn bind_freebind(address: SocketAddrV4) -> Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .context("creating a TCP socket")?;
    socket
        .set_reuse_address(true)
        .context("setting SO_REUSEADDR")?;
    socket
        .set_freebind_v4(true)
        .context("setting IP_FREEBIND")?;
    socket
        .bind(&SocketAddr::V4(address).into())
        .with_context(|| format!("binding {address} (is another program listening there?)"))?;
    socket
        .listen(BACKLOG)
        .with_context(|| format!("listening on {address}"))?;
    socket
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_an_address_this_host_does_not_have() {
        // 203.0.113.0/24 is a documentation range: no interface here has it.
        let address: SocketAddrV4 = "203.0.113.250:0".parse().unwrap();
        let listener = bind_freebind(address).expect("IP_FREEBIND lets it bind");
        let bound = listener.local_addr().unwrap();
        assert_eq!(bound.ip(), std::net::IpAddr::V4(*address.ip()));
        assert_ne!(bound.port(), 0);
    }

    #[tokio::test]
    async fn connections_are_bounded_and_idle_ones_closed() {
        use axum::{Router, routing::get};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let std_listener = bind_freebind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = std_listener.local_addr().unwrap();
        let bounded = Bounded::new(std_listener, 1, Duration::from_millis(300)).unwrap();
        let app = Router::new().route("/", get(|| async { "hi" }));
        let server = tokio::spawn(async move { axum::serve(bounded, app).await });
        // The one slot is taken by a silent client.
        let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let mut second = tokio::net::TcpStream::connect(address).await.unwrap();
        second
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        second.read_to_string(&mut reply).await.unwrap();
        assert!(reply.ends_with("hi"), "{reply}");
        // Served only once the silent one was closed for idling.
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
        let mut rest = Vec::new();
        let n = silent.read_to_end(&mut rest).await.unwrap_or(0);
        assert_eq!(n, 0, "the idle connection was closed");
        server.abort();
    }

    #[test]
    fn a_taken_port_is_an_error_naming_the_address() {
        let first = bind_freebind("127.0.0.1:0".parse().unwrap()).unwrap();
        let SocketAddr::V4(taken) = first.local_addr().unwrap() else {
            unreachable!()
        };
        // SO_REUSEADDR does not allow two listeners on one port.
        let err = bind_freebind(taken).unwrap_err();
        assert!(format!("{err:#}").contains(&taken.to_string()), "{err:#}");
    }
}
