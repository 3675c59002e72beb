//! The checkers: one probe of one backend, bounded by the check's timeout,
//! ending in a result with a short reason an operator can read in a log
//! line ("tls-hello timeout after 2s", "http status 500").

use std::fmt;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{CheckKind, HealthCheck};

/// Why a check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The check did not finish within its timeout.
    Timeout(Duration),
    /// The TCP connection could not be opened (refused, unreachable).
    Connect(String),
    /// The connection broke, or closed before an answer.
    Connection(String),
    /// No TLS answer: an alert, a failed handshake, a rejected certificate,
    /// or a peer that does not speak TLS at all.
    Tls(String),
    /// The answer is not an HTTP status line.
    Http(String),
    /// An HTTP status outside the expected set.
    Status(u16),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout(after) => {
                write!(f, "timeout after {}", humantime::format_duration(*after))
            }
            Failure::Connect(why) => f.write_str(why),
            Failure::Connection(why) => f.write_str(why),
            Failure::Tls(why) => f.write_str(why),
            Failure::Http(why) => write!(f, "bad answer: {why}"),
            Failure::Status(status) => write!(f, "status {status}"),
        }
    }
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub kind: CheckKind,
    /// What was seen when healthy ("status 200"), or why not.
    pub outcome: Result<String, Failure>,
    pub duration: Duration,
}

impl CheckResult {
    pub fn is_ok(&self) -> bool {
        self.outcome.is_ok()
    }

    /// "tcp connection refused", "http status 200".
    pub fn reason(&self) -> String {
        match &self.outcome {
            Ok(seen) => format!("{} {seen}", self.kind),
            Err(failure) => format!("{} {failure}", self.kind),
        }
    }
}

/// Runs checks; holds the TLS client settings, built once and shared.
#[derive(Clone)]
pub struct Checker {
    /// Any certificate: tls-hello, and https without `verify`.
    trusting: Arc<ClientConfig>,
    /// The web PKI roots: https with `verify = true`.
    verifying: Arc<ClientConfig>,
}

impl Checker {
    pub fn new() -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let trusting = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider.clone())))
            .with_no_client_auth();
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let verifying = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Checker {
            trusting: Arc::new(trusting),
            verifying: Arc::new(verifying),
        })
    }

    /// Checks `backend` (its port, or the check's `port`) once.
    pub async fn run(&self, check: &HealthCheck, backend: SocketAddrV4) -> CheckResult {
        let target = SocketAddrV4::new(*backend.ip(), check.port.unwrap_or(backend.port()));
        let start = Instant::now();
        let outcome = match tokio::time::timeout(check.timeout, self.probe(check, target)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Timeout(check.timeout)),
        };
        CheckResult {
            kind: check.kind,
            outcome,
            duration: start.elapsed(),
        }
    }

    async fn probe(&self, check: &HealthCheck, target: SocketAddrV4) -> Result<String, Failure> {
        let stream = TcpStream::connect(SocketAddr::V4(target))
            .await
            .map_err(|e| Failure::Connect(e.kind().to_string()))?;
        let server_name = || server_name(check.sni.as_deref(), target);
        match check.kind {
            CheckKind::Tcp => Ok("connected".to_string()),
            CheckKind::TlsHello => tls_hello(stream, self.trusting.clone(), server_name()?).await,
            CheckKind::Http => http_get(stream, check, target).await,
            CheckKind::Https => {
                let config = if check.verify {
                    &self.verifying
                } else {
                    &self.trusting
                };
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(server_name()?, stream)
                    .await
                    .map_err(|e| Failure::Tls(format!("TLS handshake failed: {e}")))?;
                http_get(stream, check, target).await
            }
        }
    }
}

/// The name the TLS client sends and verifies: the configured SNI, else the
/// backend's address (then no SNI is sent).
fn server_name(sni: Option<&str>, target: SocketAddrV4) -> Result<ServerName<'static>, Failure> {
    match sni {
        Some(name) => ServerName::try_from(name.to_string())
            .map_err(|e| Failure::Tls(format!("invalid server name `{name}`: {e}"))),
        None => Ok(ServerName::IpAddress(IpAddr::V4(*target.ip()).into())),
    }
}

/// Whether the first bytes a server answered are a TLS alert record
/// (content type 21, major version 3), described for the check's result:
/// "TLS alert 40". `None` for anything else.
pub fn tls_alert_answer(bytes: &[u8]) -> Option<String> {
    match bytes {
        [0x15, 0x03, _, _, _, _level, description, ..] => Some(format!("TLS alert {description}")),
        [0x15, 0x03, ..] => Some("TLS alert".to_string()),
        _ => None,
    }
}

/// Sends a real ClientHello and waits for the server's first flight:
/// healthy once rustls has read a ServerHello (it then knows the protocol
/// version), or when the server answers with a TLS alert (HAProxy's
/// ssl-hello-chk takes any TLS record). Certificates are not looked at.
async fn tls_hello(
    mut stream: TcpStream,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
) -> Result<String, Failure> {
    let broken = |e: std::io::Error| Failure::Connection(e.kind().to_string());
    let mut tls =
        ClientConnection::new(config, server_name).map_err(|e| Failure::Tls(e.to_string()))?;
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let mut outgoing = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut outgoing).map_err(broken)?;
        }
        stream.write_all(&outgoing).await.map_err(broken)?;
        let read = stream.read(&mut buffer).await.map_err(broken)?;
        if read == 0 {
            return Err(Failure::Connection(
                "connection closed before a ServerHello".to_string(),
            ));
        }
        // HAProxy's ssl-hello-chk: any TLS record in answer is a TLS server
        // alive. An alert (it refuses our hello: no certificate for the
        // name, no common cipher) counts as healthy, not only a ServerHello.
        if let Some(alert) = tls_alert_answer(&buffer[..read]) {
            return Ok(alert);
        }
        let mut incoming = &buffer[..read];
        while !incoming.is_empty() {
            tls.read_tls(&mut incoming).map_err(broken)?;
            let processed = tls.process_new_packets();
            if let Some(version) = tls.protocol_version() {
                return Ok(format!("ServerHello ({version:?})"));
            }
            if let Err(error) = processed {
                return Err(Failure::Tls(match error {
                    rustls::Error::InvalidMessage(_)
                    | rustls::Error::InappropriateMessage { .. } => {
                        format!("not a TLS server ({error})")
                    }
                    other => format!("TLS handshake failed: {other}"),
                }));
            }
        }
    }
}

/// `GET path HTTP/1.1` and the status of the answer; reads the status line
/// only.
async fn http_get<S>(
    mut stream: S,
    check: &HealthCheck,
    target: SocketAddrV4,
) -> Result<String, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let broken = |e: std::io::Error| Failure::Connection(e.kind().to_string());
    let host = check
        .host
        .clone()
        .unwrap_or_else(|| default_host(check.kind, target));
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lbd-health-check\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n",
        check.path
    );
    stream.write_all(request.as_bytes()).await.map_err(broken)?;
    stream.flush().await.map_err(broken)?;
    let status = read_status(&mut stream).await?;
    // Best effort: a polite close (FIN, or TLS close_notify).
    let _ = stream.shutdown().await;
    if check.expect.iter().any(|m| m.matches(status)) {
        Ok(format!("status {status}"))
    } else {
        Err(Failure::Status(status))
    }
}

/// The Host header when none is configured: the address checked, with the
/// port unless it is the scheme's default.
fn default_host(kind: CheckKind, target: SocketAddrV4) -> String {
    let default_port = if kind == CheckKind::Https { 443 } else { 80 };
    if target.port() == default_port {
        target.ip().to_string()
    } else {
        target.to_string()
    }
}

/// Reads up to the end of the status line and returns its code.
async fn read_status<S: AsyncRead + Unpin>(stream: &mut S) -> Result<u16, Failure> {
    const LONGEST: usize = 1024;
    let mut line = Vec::new();
    let mut chunk = [0u8; 512];
    while !line.contains(&b'\n') {
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|e| Failure::Connection(e.kind().to_string()))?;
        if read == 0 {
            return Err(match line.is_empty() {
                true => Failure::Connection("connection closed without an answer".to_string()),
                false => Failure::Http("connection closed inside the status line".to_string()),
            });
        }
        line.extend_from_slice(&chunk[..read]);
        if line.len() > LONGEST && !line[..LONGEST].contains(&b'\n') {
            return Err(Failure::Http(
                "no status line in the first 1024 bytes".to_string(),
            ));
        }
    }
    parse_status_line(&line)
}

/// `HTTP/1.x NNN reason`.
fn parse_status_line(bytes: &[u8]) -> Result<u16, Failure> {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let line = String::from_utf8_lossy(&bytes[..end]);
    let line = line.trim_end();
    let mut words = line.splitn(3, ' ');
    let version = words.next().unwrap_or_default();
    let code = words.next().unwrap_or_default();
    let shown: String = line.chars().take(40).collect();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(Failure::Http(format!(
            "not an HTTP/1.x status line: {shown:?}"
        )));
    }
    code.parse::<u16>()
        .ok()
        .filter(|c| (100..=599).contains(c))
        .ok_or_else(|| Failure::Http(format!("bad status code in {shown:?}")))
}

/// tls-hello asks only whether the server speaks TLS, and https checks
/// without `verify` only whether the application answers: backends often
/// present certificates for the public name, not their own address.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Ok(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Ok(503)
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 204\r\n"), Ok(204));
        assert!(matches!(
            parse_status_line(b"SSH-2.0-OpenSSH\r\n"),
            Err(Failure::Http(_))
        ));
        assert!(matches!(
            parse_status_line(b"HTTP/1.1 2000 OK\r\n"),
            Err(Failure::Http(_))
        ));
        assert!(matches!(
            parse_status_line(b"HTTP/1.1 099 x\r\n"),
            Err(Failure::Http(_))
        ));
    }

    #[test]
    fn reasons_read_like_a_log_line() {
        let result = |kind, outcome| CheckResult {
            kind,
            outcome,
            duration: Duration::ZERO,
        };
        let timeout = Failure::Timeout(Duration::from_secs(2));
        assert_eq!(
            result(CheckKind::TlsHello, Err(timeout)).reason(),
            "tls-hello timeout after 2s"
        );
        assert_eq!(
            result(CheckKind::Http, Err(Failure::Status(500))).reason(),
            "http status 500"
        );
        let refused = Failure::Connect(std::io::ErrorKind::ConnectionRefused.to_string());
        assert_eq!(
            result(CheckKind::Tcp, Err(refused)).reason(),
            "tcp connection refused"
        );
    }

    #[test]
    fn host_header_omits_the_default_port() {
        let at = |port| SocketAddrV4::new([198, 51, 100, 21].into(), port);
        assert_eq!(default_host(CheckKind::Https, at(443)), "198.51.100.21");
        assert_eq!(default_host(CheckKind::Http, at(80)), "198.51.100.21");
        assert_eq!(
            default_host(CheckKind::Http, at(8080)),
            "198.51.100.21:8080"
        );
    }
}
