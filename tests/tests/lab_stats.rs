//! The stats page, its API, `/metrics` and the redirect of a real lbd in a
//! namespace lab, reached from the client namespace through the VIP (the
//! data path leaves those ports to the host):
//!
//! (a) no credentials: 401; a readonly user sees every backend UP and no
//!     controls; the header names the node and the config version;
//! (b) after client traffic, `/metrics` parses and its per-backend packet,
//!     byte and new-flow counters equal the pinned maps;
//! (c) an admin signs in on the form and drains be1 with the page's own
//!     form: `lbd status` and the page show DRAIN, `/metrics` the state;
//! (d) a readonly POST is refused (403) and changes nothing;
//! (e) the redirect answers 301 to https with host, path and query;
//! (f) nothing is left behind.
//!
//! Needs root and lbd built next to this test (`cargo build -p lb-userspace
//! --bin lbd` with the same profile). Fails, not skips, without either.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::time::Duration;

use lb_tests::lab::{
    AdminConfig, AdminUserConfig, CheckConfig, Lab, RedirectConfig, ServiceConfig, counters,
};
use lb_userspace::admin::passwd::hash_password;

const ADMIN_PW: &str = "lab-admin-pw";
const VIEW_PW: &str = "lab-view-pw";

#[test]
fn lab_stats() {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::geteuid() }, 0, "lab_stats must run as root");
    let lab = Lab::datapath("sta", 2, 16).expect("lab builds");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);
    let node = lab.lb_node_name(1);
    lab.start_backend_servers(80)
        .expect("backend servers start");

    let vip = SocketAddrV4::new(lab.vip(), 80);
    let page_at = SocketAddrV4::new(lab.vip(), 8404);
    let redirect_at = SocketAddrV4::new(lab.vip(), 81);
    let mut service = ServiceConfig::tcp("web", lab.vip(), 80, lab.backend_configs(80, &[]));
    service.check = Some(CheckConfig {
        inter: Some("200ms".into()),
        ..CheckConfig::tcp()
    });
    let mut config = lab.lbd_config(vec![service]);
    config.admin = Some(AdminConfig {
        listen: page_at,
        refresh: Some("5s".into()),
        users: vec![
            AdminUserConfig {
                name: "admin".into(),
                role: "admin".into(),
                password_hash: hash_password(ADMIN_PW).unwrap(),
            },
            AdminUserConfig {
                name: "monitor".into(),
                role: "readonly".into(),
                password_hash: hash_password(VIEW_PW).unwrap(),
            },
        ],
    });
    config.redirects = vec![RedirectConfig {
        listen: redirect_at,
    }];
    let config_path = lab.write_config("lbd.toml", &config).unwrap();
    let config_arg = config_path.to_str().unwrap().to_string();
    let mut lbd = lab.start_lbd(1, &config_path).expect("lbd starts");
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers through lbd");

    let http = |to: SocketAddrV4, request: String| -> Reply {
        let text = lab
            .run_in("cl", move || -> std::io::Result<String> {
                let mut stream = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))?;
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                stream.write_all(request.as_bytes())?;
                let mut reply = String::new();
                stream.read_to_string(&mut reply)?;
                Ok(reply)
            })
            .expect("the client namespace runs it")
            .unwrap_or_else(|e| panic!("HTTP to {to} failed: {e}"));
        Reply::parse(&text)
    };
    let get = |path: &str, extra: &str| {
        http(
            page_at,
            format!("GET {path} HTTP/1.1\r\nHost: {page_at}\r\n{extra}Connection: close\r\n\r\n"),
        )
    };
    let view = basic("monitor", VIEW_PW);

    // (a) The page over the VIP.
    assert_eq!(get("/stats", "").status, 401);
    let page = get("/stats", &view);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&format!("lbd on {node}")));
    assert!(
        page.body.contains("id=\"row-web-be1\" data-state=\"UP\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"row-web-be2\" data-state=\"UP\""));
    assert!(
        !page.body.contains("name=\"backend\""),
        "readonly sees no controls"
    );
    assert!(
        page.body.contains("content=\"5; url=/stats\""),
        "refresh from the config"
    );

    // The checks have run: the status carries their last result.
    let status = lbd_status(&lab, &config_arg);
    for backend in status["services"][0]["backends"].as_array().unwrap() {
        let check = &backend["last_check"];
        assert_eq!(check["ok"], true, "{backend}");
        assert!(
            check["result"].as_str().unwrap().starts_with("tcp"),
            "{backend}"
        );
        assert!(check["at_ms"].as_u64().unwrap() > 0, "{backend}");
    }
    assert!(status["started_at_ms"].as_u64().unwrap() > 0);
    assert_eq!(status["config_version"].as_str().unwrap().len(), 12);

    // (b) Traffic, then /metrics against the maps.
    let report = lab.spread(vip, 16, 2, &[]).expect("clients run");
    report.assert_all_ok_and_sticky(16, "clients");
    let status = lbd_status(&lab, &config_arg);
    let ids: BTreeMap<u64, String> = status["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_u64().unwrap(),
                b["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut matched = false;
    for _ in 0..20 {
        let before = counters::read_pinned(&pin_dir).expect("pinned counters");
        let metrics = get("/metrics", &view);
        let after = counters::read_pinned(&pin_dir).expect("pinned counters");
        assert_eq!(metrics.status, 200);
        let samples = parse_metrics(&metrics.body);
        let stable = before
            .backends
            .iter()
            .zip(&after.backends)
            .all(|(a, b)| a.stats == b.stats);
        if !stable {
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        for backend in &after.backends {
            let name = &ids[&u64::from(backend.id)];
            let l = format!("service=\"web\",backend=\"{name}\"");
            let s = &backend.stats;
            let want = [
                (
                    format!("lb_backend_packets_total{{{l},direction=\"to_backend\"}}"),
                    s.packets_to_backend,
                ),
                (
                    format!("lb_backend_bytes_total{{{l},direction=\"to_backend\"}}"),
                    s.bytes_to_backend,
                ),
                (
                    format!("lb_backend_packets_total{{{l},direction=\"to_client\"}}"),
                    s.packets_to_client,
                ),
                (
                    format!("lb_backend_bytes_total{{{l},direction=\"to_client\"}}"),
                    s.bytes_to_client,
                ),
                (format!("lb_backend_new_flows_total{{{l}}}"), s.new_flows),
            ];
            for (series, value) in want {
                assert_eq!(
                    samples.get(&series).copied(),
                    Some(value as f64),
                    "{series} in\n{}",
                    metrics.body
                );
            }
            assert!(s.new_flows > 0, "{name} got traffic");
        }
        matched = true;
        break;
    }
    assert!(
        matched,
        "the counters never held still long enough to compare"
    );

    // (c) An admin drains be1 through the form.
    let body = format!("user=admin&password={ADMIN_PW}");
    let login = http(
        page_at,
        format!(
            "POST /login HTTP/1.1\r\nHost: {page_at}\r\nOrigin: http://{page_at}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(login.status, 303, "{}", login.body);
    let cookie = login
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let page = get("/stats", &format!("Cookie: {cookie}\r\n"));
    assert!(
        page.body.contains("id=\"set-drain\""),
        "admins get the buttons"
    );
    let token = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form carries a token")
        .to_string();
    let form = format!("csrf={token}&backend=web%2Fbe1&state=drain");
    let post = http(
        page_at,
        format!(
            "POST /stats/state HTTP/1.1\r\nHost: {page_at}\r\nCookie: {cookie}\r\n\
             Origin: http://{page_at}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    assert_eq!(post.status, 303, "{}", post.body);
    let status = lbd_status(&lab, &config_arg);
    assert_eq!(status["services"][0]["backends"][0]["admin"], "drain");
    assert!(
        status["services"][0]["backends"][0]["since_ms"]
            .as_u64()
            .is_some()
    );
    let page = get("/stats", &format!("Cookie: {cookie}\r\n"));
    assert!(
        page.body
            .contains("id=\"row-web-be1\" data-state=\"DRAIN\"")
    );
    assert!(
        page.body.contains("web/be1: ready -&gt; drain"),
        "the result is shown"
    );
    let samples = parse_metrics(&get("/metrics", &view).body);
    assert_eq!(
        samples["lb_backend_admin_state{service=\"web\",backend=\"be1\",state=\"drain\"}"],
        1.0
    );

    // (d) A readonly POST changes nothing.
    let post = http(
        page_at,
        format!(
            "POST /api/v1/backends/web/be1/state HTTP/1.1\r\nHost: {page_at}\r\n{view}\
             Content-Type: application/json\r\nContent-Length: 17\r\nConnection: close\r\n\r\n\
             {{\"state\":\"maint\"}}"
        ),
    );
    assert_eq!(post.status, 403, "{}", post.body);
    let status = lbd_status(&lab, &config_arg);
    assert_eq!(status["services"][0]["backends"][0]["admin"], "drain");

    // (e) The redirect.
    let moved = http(
        redirect_at,
        "GET /portal/?a=1 HTTP/1.1\r\nHost: vdi.example.com\r\nConnection: close\r\n\r\n".into(),
    );
    assert_eq!(moved.status, 301);
    assert_eq!(
        moved.header("location"),
        Some("https://vdi.example.com/portal/?a=1")
    );

    lbd.check_running().expect("lbd still runs");
    drop(lbd);
    lab.teardown().expect("teardown is clean");
    drop(lab);
    lb_tests::lab::assert_nothing_left(&prefix, &pin_dir);
}

fn basic(user: &str, password: &str) -> String {
    use std::fmt::Write as _;
    // Base64 by hand: the test needs no extra crate for one header.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    let mut header = String::new();
    let _ = write!(header, "Authorization: Basic {out}\r\n");
    header
}

fn lbd_status(lab: &Lab, config: &str) -> serde_json::Value {
    let out = lab
        .lbd_command(1, &["status", "--json", "--config", config])
        .expect("lbd status runs");
    serde_json::from_slice(&out.stdout).expect("lbd status prints JSON")
}

/// An HTTP/1.1 answer read to its end (`Connection: close`).
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn parse(text: &str) -> Reply {
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text}"));
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        Reply {
            status,
            headers,
            body: body.to_string(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `series -> value` of an OpenMetrics text; every sample line must parse.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.insert(series.to_string(), value);
    }
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    samples
}
