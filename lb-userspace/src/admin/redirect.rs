//! `[[redirect]]`: answers every HTTP request with `301` to the same host
//! and path over https, as HAProxy's `redirect scheme https` did in front of
//! Horizon.

use std::net::{SocketAddrV4, TcpListener};

use anyhow::{Context, Result};
use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};

/// Where a request for `uri` with `Host: host` goes. Without a usable Host
/// the listen address stands in; a port equal to the listen port is dropped
/// (it is the http port, https has its own).
pub fn location(host: Option<&str>, uri: &Uri, listen: SocketAddrV4) -> String {
    let from_uri = uri.authority().map(|a| a.as_str());
    let host = host
        .or(from_uri)
        .filter(|h| valid_host(h))
        .map(|h| strip_port(h, listen.port()))
        .unwrap_or_else(|| listen.ip().to_string());
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    format!("https://{host}{path}")
}

/// Host header characters of a name, an IPv4 or a bracketed IPv6 with an
/// optional port; anything else could smuggle text into the Location.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
}

fn strip_port(host: &str, port: u16) -> String {
    match host.rsplit_once(':') {
        Some((name, p)) if !name.ends_with(':') && p == port.to_string() => name.to_string(),
        _ => host.to_string(),
    }
}

async fn answer(State(listen): State<SocketAddrV4>, request: Request) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let target = location(host, request.uri(), listen);
    match HeaderValue::from_str(&target) {
        Ok(value) => (
            StatusCode::MOVED_PERMANENTLY,
            [(header::LOCATION, value)],
            format!("moved to {target}\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "unusable request target\n").into_response(),
    }
}

/// The redirect service for one listener.
pub fn router(listen: SocketAddrV4) -> Router {
    Router::new().fallback(answer).with_state(listen)
}

/// Serves redirects on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, listen: SocketAddrV4) -> Result<()> {
    let listener = super::listener::Bounded::new(
        listener,
        super::listener::MAX_CONNECTIONS,
        super::listener::IDLE,
    )
    .context("registering the redirect listener")?;
    axum::serve(listener, router(listen))
        .await
        .with_context(|| format!("serving redirects on {listen}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> SocketAddrV4 {
        "192.0.2.20:80".parse().unwrap()
    }

    fn at(host: Option<&str>, uri: &str) -> String {
        location(host, &uri.parse().unwrap(), listen())
    }

    #[test]
    fn host_path_and_query_are_kept() {
        assert_eq!(
            at(Some("horizon.example.com"), "/"),
            "https://horizon.example.com/"
        );
        assert_eq!(
            at(
                Some("horizon.example.com"),
                "/portal/webclient/index.html?a=1&b=%20"
            ),
            "https://horizon.example.com/portal/webclient/index.html?a=1&b=%20"
        );
        assert_eq!(at(Some("192.0.2.20"), "/x"), "https://192.0.2.20/x");
        assert_eq!(
            at(Some("vdi.example.org:80"), "/"),
            "https://vdi.example.org/"
        );
        assert_eq!(
            at(Some("vdi.example.org:8080"), "/"),
            "https://vdi.example.org:8080/"
        );
    }

    #[test]
    fn without_a_usable_host_the_listen_address_stands_in() {
        assert_eq!(at(None, "/login?next=/"), "https://192.0.2.20/login?next=/");
        assert_eq!(at(Some(""), "/"), "https://192.0.2.20/");
        assert_eq!(at(Some("evil\r\nx: y"), "/"), "https://192.0.2.20/");
        assert_eq!(
            at(None, "http://proxy.example/p?q"),
            "https://proxy.example/p?q"
        );
    }

    #[tokio::test]
    async fn answers_301_over_tcp_for_several_hosts_and_paths() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener =
            crate::admin::listener::bind_freebind("127.0.0.1:0".parse().unwrap()).unwrap();
        let std::net::SocketAddr::V4(bound) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        let server = tokio::spawn(serve(listener, listen()));
        let cases = [
            (
                "GET / HTTP/1.1\r\nHost: horizon.example.com\r\n",
                "https://horizon.example.com/",
            ),
            (
                "GET /a/b?c=d HTTP/1.1\r\nHost: Horizon.Example.com:80\r\n",
                "https://Horizon.Example.com/a/b?c=d",
            ),
            ("HEAD /x HTTP/1.0\r\n", "https://192.0.2.20/x"),
            (
                "POST /broker/xml HTTP/1.1\r\nHost: 192.0.2.20\r\nContent-Length: 0\r\n",
                "https://192.0.2.20/broker/xml",
            ),
        ];
        for (head, want) in cases {
            let mut stream = tokio::net::TcpStream::connect(bound).await.unwrap();
            stream
                .write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut reply = String::new();
            stream.read_to_string(&mut reply).await.unwrap();
            let status_line = reply.lines().next().unwrap_or("");
            assert!(
                status_line.starts_with("HTTP/1.") && status_line.contains(" 301 "),
                "{head}: {reply}"
            );
            let location = reply
                .lines()
                .find_map(|l| l.strip_prefix("location: "))
                .unwrap_or_else(|| panic!("no Location in {reply}"));
            assert_eq!(location, want, "{head}");
        }
        server.abort();
    }
}
