//! Talking to lbd's admin listener from a lab namespace: the `[admin]`
//! config section with users whose hashes `lbd passwd` made, and a small
//! blocking HTTP/1.1 client (one request per connection) for `/metrics`,
//! `/api/v1/status` and login floods. Browsers use [`super::browser`].

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;

use super::binaries;
use super::lbd::{AdminConfig, AdminUserConfig};
use super::setup::Lab;

/// The port of the stats page in the seed (HAProxy's `stats` listener).
pub const ADMIN_PORT: u16 = 8404;

/// One `[[admin.user]]`, with its password in clear for the test's side.
#[derive(Clone, Debug)]
pub struct AdminUser {
    pub name: String,
    /// `admin` or `readonly`.
    pub role: String,
    pub password: String,
    /// The argon2 PHC string `lbd passwd` printed for `password`.
    pub hash: String,
}

impl AdminUser {
    /// A user whose hash is made by the `lbd` under test.
    pub fn new(name: &str, role: &str, password: &str) -> Result<AdminUser> {
        Ok(AdminUser {
            name: name.to_string(),
            role: role.to_string(),
            password: password.to_string(),
            hash: lbd_passwd(password)?,
        })
    }

    /// `Authorization` header value for HTTP basic auth.
    pub fn basic_auth(&self) -> String {
        basic_auth(&self.name, &self.password)
    }
}

/// Runs `lbd passwd` with `password` on standard input and returns the hash
/// it prints.
pub fn lbd_passwd(password: &str) -> Result<String> {
    let lbd = binaries::lbd()?;
    let mut child = std::process::Command::new(&lbd)
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {} passwd", lbd.display()))?;
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(format!("{password}\n").as_bytes())
        .context("could not hand the password to lbd passwd")?;
    let output = child
        .wait_with_output()
        .context("lbd passwd did not finish")?;
    if !output.status.success() {
        bail!(
            "lbd passwd failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let hash = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !hash.starts_with("$argon2") {
        bail!("lbd passwd printed {hash:?}, not an argon2 hash");
    }
    Ok(hash)
}

/// `[admin]` serving on `listen` for `users`, the page refreshing every
/// `refresh` (e.g. "30s").
pub fn admin_config(listen: SocketAddrV4, refresh: &str, users: &[AdminUser]) -> AdminConfig {
    AdminConfig {
        listen,
        refresh: Some(refresh.to_string()),
        users: users
            .iter()
            .map(|u| AdminUserConfig {
                name: u.name.clone(),
                role: u.role.clone(),
                password_hash: u.hash.clone(),
            })
            .collect(),
    }
}

/// `Basic base64(user:password)`.
pub fn basic_auth(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// `application/x-www-form-urlencoded` body of `pairs`.
pub fn form_body(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One HTTP request.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn get(path: &str) -> Self {
        HttpRequest {
            method: "GET".into(),
            path: path.into(),
            headers: vec![],
            body: vec![],
        }
    }

    /// A form POST (`application/x-www-form-urlencoded`).
    pub fn post_form(path: &str, pairs: &[(&str, &str)]) -> Self {
        HttpRequest {
            method: "POST".into(),
            path: path.into(),
            headers: vec![(
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: form_body(pairs).into_bytes(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A complete response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` to `addr` on a fresh connection (`Connection: close`) and
/// reads the whole response. Runs in the calling thread's namespace: call
/// it inside [`Lab::run_in`] or use [`Lab::http`].
pub fn send(addr: SocketAddrV4, request: &HttpRequest, timeout: Duration) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr.into(), timeout)
        .with_context(|| format!("could not connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        request.method,
        request.path,
        request.body.len()
    );
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&request.body))
        .with_context(|| {
            format!(
                "could not send {} {} to {addr}",
                request.method, request.path
            )
        })?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).with_context(|| {
        format!(
            "no complete answer to {} {} from {addr}",
            request.method, request.path
        )
    })?;
    parse_response(&raw)
        .with_context(|| format!("{addr} answered {} {} badly", request.method, request.path))
}

impl Lab {
    /// Writes a config given as text into the lab directory (a rendered
    /// [`super::LbdConfig`] plus sections it does not model, like
    /// [`admin_section`]); returns its path.
    pub fn write_config_text(&self, file_name: &str, text: &str) -> Result<std::path::PathBuf> {
        let path = self.dir().join(file_name);
        std::fs::write(&path, text)
            .with_context(|| format!("could not write {}", path.display()))?;
        Ok(path)
    }

    /// Waits until the admin listener at `addr` answers `GET /login` with
    /// 200 from `node`'s namespace; fails quoting lbd's log otherwise.
    pub fn wait_for_admin(
        &self,
        lbd: &mut super::Lbd,
        node: &str,
        addr: SocketAddrV4,
        timeout: Duration,
    ) -> Result<()> {
        let start = std::time::Instant::now();
        let mut last = String::from("no attempt");
        while start.elapsed() < timeout {
            lbd.check_running()?;
            match self.http(
                node,
                addr,
                &HttpRequest::get("/login"),
                Duration::from_secs(2),
            ) {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => last = format!("status {}", r.status),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "the admin page at {addr} did not answer within {timeout:?} (last: {last}); lbd log ends with:\n{}",
            lbd.log_tail(30)
        )
    }

    /// [`send`] from `node`'s namespace.
    pub fn http(
        &self,
        node: &str,
        addr: SocketAddrV4,
        request: &HttpRequest,
        timeout: Duration,
    ) -> Result<HttpResponse> {
        let request = request.clone();
        self.run_in(node, move || send(addr, &request, timeout))?
    }
}

/// Parses a complete HTTP/1.1 response (body to the end of the stream,
/// de-chunked when the server chunked it).
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (k, v) = line.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size without CRLF")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("chunk cut short");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_rfc7617_base64() {
        // RFC 7617's example.
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn forms_are_url_encoded() {
        assert_eq!(
            form_body(&[("user", "a b"), ("password", "x&y=z/é")]),
            "user=a%20b&password=x%26y%3Dz%2F%C3%A9"
        );
    }

    #[test]
    fn responses_parse_plain_and_chunked() {
        let plain = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"lbd\"\r\nContent-Length: 2\r\n\r\nno";
        let r = parse_response(plain).unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"lbd\""));
        assert_eq!(r.body, "no");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap().body, "abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
