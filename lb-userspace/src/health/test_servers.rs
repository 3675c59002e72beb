//! Loopback servers for the checker and scheduler tests: plain TCP, HTTP
//! with a switchable status, TLS (self-signed, made at test time), and one
//! that accepts and never answers. Each runs until its handle is dropped.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the server does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Accept and close.
    Close,
    /// Answer any request with an HTTP status (no TLS).
    Http,
    /// Accept and never answer.
    Silent,
    /// TLS handshake, then the HTTP answer.
    Tls,
    /// The same, speaking TLS 1.2 only (like many older Windows servers).
    Tls12,
    /// A TLS server with no certificate for any name: its TLS stack
    /// answers the ClientHello with an alert.
    TlsNoCert,
}

/// A running server; stops when dropped.
pub struct TestServer {
    pub address: SocketAddrV4,
    /// The status HTTP answers carry; change it while running.
    pub status: Arc<AtomicU16>,
    /// Connections accepted, and HTTP answers sent with a 2xx or another status.
    pub accepted: Arc<AtomicU64>,
    pub answered_ok: Arc<AtomicU64>,
    pub answered_bad: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl TestServer {
    /// Stops the server and waits until its port is closed.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// On an ephemeral loopback port.
    pub async fn start(behaviour: Behaviour, status: u16) -> TestServer {
        Self::start_at(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), behaviour, status).await
    }

    /// On a given address (to bring a stopped server back on its port).
    pub async fn start_at(address: SocketAddrV4, behaviour: Behaviour, status: u16) -> TestServer {
        let listener = TcpListener::bind(address)
            .await
            .expect("bind a loopback port");
        let address = match listener.local_addr().unwrap() {
            std::net::SocketAddr::V4(v4) => v4,
            other => panic!("not IPv4: {other}"),
        };
        let status = Arc::new(AtomicU16::new(status));
        let accepted = Arc::new(AtomicU64::new(0));
        let answered_ok = Arc::new(AtomicU64::new(0));
        let answered_bad = Arc::new(AtomicU64::new(0));
        let acceptor = match behaviour {
            Behaviour::Tls => Some(tls_acceptor(&[
                &rustls::version::TLS13,
                &rustls::version::TLS12,
            ])),
            Behaviour::Tls12 => Some(tls_acceptor(&[&rustls::version::TLS12])),
            Behaviour::TlsNoCert => Some(certless_acceptor()),
            _ => None,
        };
        let shared = (
            status.clone(),
            accepted.clone(),
            answered_ok.clone(),
            answered_bad.clone(),
        );
        let task = tokio::spawn(async move {
            let (status, accepted, ok, bad) = shared;
            // Connections are kept in this set so that aborting the server
            // also closes them.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (status, ok, bad, acceptor) =
                    (status.clone(), ok.clone(), bad.clone(), acceptor.clone());
                connections.spawn(async move {
                    let answer = |stream| answer_http(stream, status, ok, bad);
                    match behaviour {
                        Behaviour::Close => drop(stream),
                        Behaviour::Http => answer(Box::new(stream) as Box<dyn Io>).await,
                        Behaviour::Silent => {
                            let _keep_open = stream;
                            std::future::pending::<()>().await;
                        }
                        Behaviour::Tls | Behaviour::Tls12 | Behaviour::TlsNoCert => {
                            if let Ok(tls) = acceptor.unwrap().accept(stream).await {
                                answer(Box::new(tls)).await;
                            }
                        }
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        TestServer {
            address,
            status,
            accepted,
            answered_ok,
            answered_bad,
            task: Some(task),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Reads the request head and answers with the current status.
async fn answer_http(
    mut stream: Box<dyn Io>,
    status: Arc<AtomicU16>,
    ok: Arc<AtomicU64>,
    bad: Arc<AtomicU64>,
) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    // Like real servers, answer 400 at once to bytes that cannot start a
    // request (a TLS ClientHello, say).
    let mut garbage = false;
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if !head[0].is_ascii_uppercase() {
            garbage = true;
            break;
        }
    }
    let status = if garbage {
        400
    } else {
        status.load(Ordering::SeqCst)
    };
    let answer =
        format!("HTTP/1.1 {status} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    if stream.write_all(answer.as_bytes()).await.is_ok() {
        let counter = if (200..300).contains(&status) {
            ok
        } else {
            bad
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
    let _ = stream.shutdown().await;
}

/// A TLS acceptor with a self-signed certificate for `localhost`.
/// Resolves no certificate, whatever the client asks for.
#[derive(Debug)]
struct NoCertificate;

impl rustls::server::ResolvesServerCert for NoCertificate {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
}

fn certless_acceptor() -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCertificate));
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn tls_acceptor(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsAcceptor {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
