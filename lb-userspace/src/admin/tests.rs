//! The admin page against an in-process fake agent: a task answering the
//! same `Pending` requests the real agent loop answers, with the real
//! status builder and admin view, so a test sees exactly what changed.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, to_bytes},
    http::{HeaderMap, Method, Request as HttpRequest, StatusCode, header},
};
use base64::Engine;
use lb_common::TrafficStats;
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::{
    agent_link::AgentLink,
    app_state::{AppState, Shared},
    metrics, passwd,
    pool::HashPool,
    server::router,
};
use crate::agent::{
    admin_view::AdminView,
    desired_state::{Ids, map_sizes},
    health_view::HealthView,
    observed::{self, Observed},
    status_report,
};
use crate::config::{Admin, AdminUser, Config, Role};
use crate::control::{AdminState, Answer, NodeStatus, Pending, Request};
use crate::health::BackendKey;

const ADMIN_PW: &str = "admin-pw";
const VIEW_PW: &str = "view-pw";
const HOST: &str = "192.0.2.250:8404";

fn users() -> Vec<AdminUser> {
    static HASHES: OnceLock<(String, String)> = OnceLock::new();
    let (admin, view) = HASHES.get_or_init(|| {
        (
            passwd::hash_password(ADMIN_PW).unwrap(),
            passwd::hash_password(VIEW_PW).unwrap(),
        )
    });
    vec![
        AdminUser {
            name: "admin".into(),
            role: Role::Admin,
            password_hash: admin.clone(),
        },
        AdminUser {
            name: "monitor".into(),
            role: Role::Readonly,
            password_hash: view.clone(),
        },
    ]
}

fn admin_config(users: Vec<AdminUser>) -> Admin {
    Admin {
        listen: HOST.parse().unwrap(),
        refresh: Duration::from_secs(30),
        users,
    }
}

fn horizon() -> Config {
    let text = include_str!("../../../examples/horizon.toml");
    crate::config::parse(text, "horizon.toml").unwrap()
}

/// Counters the fake data path reports for backend/service `id`: distinct
/// per id and per field, so a metric taken from the wrong row shows.
fn fake_stats(id: u32) -> TrafficStats {
    let id = u64::from(id);
    TrafficStats {
        packets_to_backend: 1000 * id + 1,
        bytes_to_backend: 1_000_000 * id + 2,
        packets_to_client: 1000 * id + 3,
        bytes_to_client: 2_000_000 * id + 4,
        new_flows: 10 * id + 5,
        rst_no_backend: 7 * id,
    }
}

/// The fake agent: answers status and set-state like the agent loop does.
fn fake_agent(config: Config) -> (mpsc::UnboundedSender<Pending>, Arc<Mutex<AdminView>>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
    let admin = Arc::new(Mutex::new(AdminView::all_ready()));
    let view = admin.clone();
    let mut ids = Ids::new(&map_sizes(&config));
    ids.sync(&config, 0).unwrap();
    let down = BackendKey::new(
        &config.services[1].name,
        &config.services[1].backends[1].name,
    );
    let health = HealthView::with_down([down]);
    let mut seen = Observed::new("0123456789ab".into());
    seen.active = Some((
        std::time::SystemTime::now(),
        BTreeMap::from([(1, 3), (2, 4)]),
    ));
    tokio::spawn(async move {
        while let Some(pending) = rx.recv().await {
            let answer = match pending.request {
                Request::Status => {
                    let admin = view.lock().unwrap().clone();
                    let mut status =
                        status_report::status("lb1", &config, &ids, &health, &admin, |_| true);
                    let stats = |id: u32| Some(fake_stats(id));
                    let check = |_: &BackendKey| None;
                    let readings = observed::Readings {
                        backend_stats: &stats,
                        service_stats: &stats,
                        reasons: vec![("pass_not_ours", 11), ("drop_no_backend", 2)],
                        check: &check,
                    };
                    observed::enrich(&mut status, &seen, &readings);
                    Answer {
                        status: Some(status),
                        ..Answer::ok("status")
                    }
                }
                Request::SetState {
                    service,
                    backend,
                    state,
                } => match (
                    status_report::find_backend(&config, &service, &backend),
                    state.parse::<AdminState>(),
                ) {
                    (Ok(key), Ok(state)) => {
                        let mut view = view.lock().unwrap();
                        let old = view.state(&service, &backend);
                        view.set(key.clone(), state);
                        Answer::ok(format!("{key}: {old} -> {state}"))
                    }
                    (Err(e), _) | (_, Err(e)) => Answer::error(e),
                },
            };
            let _ = pending.reply.send(answer);
        }
    });
    (tx, admin)
}

struct Fixture {
    state: Shared,
    admin: Arc<Mutex<AdminView>>,
    pool: HashPool,
}

impl Fixture {
    fn new() -> Self {
        Fixture::with_pool(HashPool::start(2, 8).unwrap())
    }

    fn with_pool(pool: HashPool) -> Self {
        let (requests, admin) = fake_agent(horizon());
        let state = Arc::new(AppState::new(
            AgentLink::new(requests),
            &admin_config(users()),
            pool.clone(),
            Duration::from_millis(150),
        ));
        Fixture { state, admin, pool }
    }

    fn not_ready(&self) -> Vec<(BackendKey, AdminState)> {
        self.admin
            .lock()
            .unwrap()
            .not_ready()
            .map(|(k, s)| (k.clone(), s))
            .collect()
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = HttpRequest::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, HOST);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(Body::from(body.to_string())).unwrap();
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), 1 << 22).await.unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    /// Signs in through the form; returns the cookie header and CSRF token.
    async fn login(&self, user: &str, password: &str) -> (String, String) {
        let (status, headers, _) = self
            .send(
                Method::POST,
                "/login",
                &[
                    (
                        "content-type",
                        "application/x-www-form-urlencoded".to_string(),
                    ),
                    ("origin", format!("http://{HOST}")),
                ],
                &format!("user={user}&password={password}"),
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "login of {user}");
        let set = headers[header::SET_COOKIE].to_str().unwrap().to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_string();
        let (_, headers, page) = self
            .send(Method::GET, "/stats", &[("cookie", cookie.clone())], "")
            .await;
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        let token = page
            .split("name=\"csrf-token\" content=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the page carries the session's CSRF token")
            .to_string();
        (cookie, token)
    }
}

fn basic(user: &str, password: &str) -> (&'static str, String) {
    let raw = format!("{user}:{password}");
    (
        "authorization",
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ),
    )
}

fn form() -> (&'static str, String) {
    (
        "content-type",
        "application/x-www-form-urlencoded".to_string(),
    )
}

fn same_origin() -> (&'static str, String) {
    ("origin", format!("http://{HOST}"))
}

fn json() -> (&'static str, String) {
    ("content-type", "application/json".to_string())
}

#[tokio::test]
async fn without_credentials_browsers_go_to_the_login_and_scripts_get_401() {
    let f = Fixture::new();
    let (status, headers, _) = f
        .send(
            Method::GET,
            "/stats",
            &[("accept", "text/html,*/*".into())],
            "",
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login");
    for uri in ["/stats", "/metrics", "/api/v1/status"] {
        let (status, headers, _) = f.send(Method::GET, uri, &[], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(
            headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
    }
    let (status, _, page) = f.send(Method::GET, "/login", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("name=\"password\"") && page.contains("id=\"login\""));
}

#[tokio::test]
async fn wrong_passwords_are_refused_after_a_delay() {
    let f = Fixture::new();
    for (user, pw) in [
        ("admin", "nope"),
        ("nobody", ADMIN_PW),
        ("monitor", ADMIN_PW),
    ] {
        let started = Instant::now();
        let (status, _, _) = f
            .send(Method::GET, "/api/v1/status", &[basic(user, pw)], "")
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{user}");
        assert!(started.elapsed() >= Duration::from_millis(150), "{user}");
    }
    let started = Instant::now();
    let (status, headers, page) = f
        .send(
            Method::POST,
            "/login",
            &[form(), same_origin()],
            "user=admin&password=wrong",
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(headers.get(header::SET_COOKIE).is_none());
    assert!(page.contains("Wrong user name or password"));
    let (status, _, _) = f
        .send(
            Method::GET,
            "/stats",
            &[("authorization", "Bearer x".into())],
            "",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn readonly_users_see_everything_but_no_controls() {
    let f = Fixture::new();
    let (status, _, page) = f
        .send(Method::GET, "/stats", &[basic("monitor", VIEW_PW)], "")
        .await;
    assert_eq!(status, StatusCode::OK);
    for word in [
        "horizon",
        "appvolumes",
        "cs1",
        "cs2",
        "avm1",
        "avm2",
        "DOWN",
        "UP",
    ] {
        assert!(page.contains(word), "page lacks {word}");
    }
    assert!(page.contains("lbd on lb1") && page.contains("0123456789ab"));
    assert!(
        page.contains("per node"),
        "the page says admin states are per node"
    );
    assert!(page.contains("http-equiv=\"refresh\" content=\"30; url=/stats\""));
    assert!(
        !page.contains("name=\"backend\""),
        "no checkboxes for readonly"
    );
    assert!(!page.contains("set-drain"), "no buttons for readonly");

    let (status, _, page) = f
        .send(Method::GET, "/stats", &[basic("admin", ADMIN_PW)], "")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("value=\"horizon/cs1\" id=\"sel-horizon-cs1\""));
    assert!(page.contains("id=\"set-drain\"") && page.contains("id=\"set-maint\""));
    assert_eq!(
        page.matches("id=\"set-drain\"").count(),
        1,
        "ids are unique"
    );
}

#[tokio::test]
async fn readonly_posts_are_forbidden_and_change_nothing() {
    let f = Fixture::new();
    let (status, _, _) = f
        .send(
            Method::POST,
            "/stats/state",
            &[basic("monitor", VIEW_PW), form()],
            "backend=horizon/cs1&state=maint",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = f
        .send(
            Method::POST,
            "/api/v1/backends/horizon/cs1/state",
            &[basic("monitor", VIEW_PW), json()],
            r#"{"state":"maint"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (cookie, token) = f.login("monitor", VIEW_PW).await;
    let (status, _, _) = f
        .send(
            Method::POST,
            "/stats/state",
            &[("cookie", cookie), form(), same_origin()],
            &format!("csrf={token}&backend=horizon/cs1&state=drain"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(f.not_ready().is_empty(), "nothing changed");
}

#[tokio::test]
async fn cross_site_posts_are_refused_and_change_nothing() {
    let f = Fixture::new();
    let (cookie, token) = f.login("admin", ADMIN_PW).await;
    let body = format!("csrf={token}&backend=horizon/cs1&state=maint");
    let forged: [Vec<(&str, String)>; 5] = [
        vec![("origin", "http://evil.example".into())],
        vec![("sec-fetch-site", "cross-site".into())],
        vec![("referer", "http://evil.example/page".into())],
        // No header telling where it came from: a browser session must say.
        vec![],
        // Same origin, but without the session's token.
        vec![same_origin()],
    ];
    for (i, extra) in forged.into_iter().enumerate() {
        let mut headers = vec![("cookie", cookie.clone()), form()];
        headers.extend(extra);
        let body = if i == 4 {
            "backend=horizon/cs1&state=maint".to_string()
        } else {
            body.clone()
        };
        let (status, _, _) = f.send(Method::POST, "/stats/state", &headers, &body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "case {i}");
    }
    // Basic auth from a browser on another site: the origin check applies.
    let (status, _, _) = f
        .send(
            Method::POST,
            "/api/v1/backends/horizon/cs1/state",
            &[
                basic("admin", ADMIN_PW),
                json(),
                ("origin", "http://evil.example".into()),
            ],
            r#"{"state":"maint"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // API with the cookie but without the token header.
    let (status, _, _) = f
        .send(
            Method::POST,
            "/api/v1/backends/horizon/cs1/state",
            &[("cookie", cookie.clone()), json(), same_origin()],
            r#"{"state":"maint"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A cross-site login is refused too.
    let (status, _, _) = f
        .send(
            Method::POST,
            "/login",
            &[form(), ("origin", "http://evil.example".into())],
            &format!("user=admin&password={ADMIN_PW}"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(f.not_ready().is_empty(), "nothing changed");
}

#[tokio::test]
async fn admins_set_several_backends_from_the_page() {
    let f = Fixture::new();
    let (cookie, token) = f.login("admin", ADMIN_PW).await;
    let (status, headers, _) = f
        .send(
            Method::POST,
            "/stats/state",
            &[("cookie", cookie.clone()), form(), same_origin()],
            &format!("csrf={token}&backend=horizon%2Fcs1&backend=appvolumes/avm2&state=drain"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/stats");
    assert_eq!(
        f.not_ready(),
        vec![
            (BackendKey::new("appvolumes", "avm2"), AdminState::Drain),
            (BackendKey::new("horizon", "cs1"), AdminState::Drain),
        ]
    );
    let (_, _, page) = f
        .send(Method::GET, "/stats", &[("cookie", cookie.clone())], "")
        .await;
    assert!(
        page.contains("horizon/cs1: ready -&gt; drain"),
        "flash shown"
    );
    assert!(page.contains("id=\"row-horizon-cs1\" data-state=\"DRAIN\""));
    let (_, _, page) = f
        .send(Method::GET, "/stats", &[("cookie", cookie.clone())], "")
        .await;
    assert!(!page.contains("ready -&gt; drain"), "flash shown once");

    // The API with the session's token header, and with basic auth.
    let (status, _, body) = f
        .send(
            Method::POST,
            "/api/v1/backends/horizon/cs1/state",
            &[
                ("cookie", cookie),
                ("x-csrf-token", token),
                json(),
                ("sec-fetch-site", "same-origin".into()),
            ],
            r#"{"state":"maint"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("drain -> maint"), "{body}");
    let (status, _, body) = f
        .send(
            Method::POST,
            "/api/v1/backends/appvolumes/avm2/state",
            &[basic("admin", ADMIN_PW), json()],
            r#"{"state":"ready"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        f.not_ready(),
        vec![(BackendKey::new("horizon", "cs1"), AdminState::Maint)]
    );
}

#[tokio::test]
async fn malformed_requests_and_unknown_backends_are_4xx_and_change_nothing() {
    let f = Fixture::new();
    let admin = basic("admin", ADMIN_PW);
    let forms = [
        ("backend=horizon/cs1&state=bogus", StatusCode::BAD_REQUEST),
        ("backend=horizon/cs1", StatusCode::BAD_REQUEST),
        ("state=drain", StatusCode::BAD_REQUEST),
        ("backend=horizon&state=drain", StatusCode::BAD_REQUEST),
        (
            "backend=horizon/cs1&state=drain&extra=1",
            StatusCode::BAD_REQUEST,
        ),
        (
            "backend=horizon/cs1&backend=horizon/cs9&state=drain",
            StatusCode::NOT_FOUND,
        ),
        ("backend=nosuch/cs1&state=drain", StatusCode::NOT_FOUND),
    ];
    for (body, want) in forms {
        let (status, _, page) = f
            .send(Method::POST, "/stats/state", &[admin.clone(), form()], body)
            .await;
        assert_eq!(status, want, "{body}: {page}");
        assert!(page.contains("Nothing was changed"), "{body}");
    }
    let api = [
        (
            "/api/v1/backends/horizon/cs1/state",
            "{",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/backends/horizon/cs1/state",
            r#"{"state":1}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/backends/horizon/cs1/state",
            r#"{"state":"drain","now":true}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/backends/horizon/cs1/state",
            r#"{"state":"down"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/backends/horizon/cs9/state",
            r#"{"state":"drain"}"#,
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/backends/nosuch/cs1/state",
            r#"{"state":"drain"}"#,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (uri, body, want) in api {
        let (status, _, answer) = f
            .send(Method::POST, uri, &[admin.clone(), json()], body)
            .await;
        assert_eq!(status, want, "{uri} {body}: {answer}");
        let parsed: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(parsed["ok"], false);
        assert!(parsed["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert!(f.not_ready().is_empty(), "nothing changed");
}

#[tokio::test]
async fn sessions_and_remembered_credentials_spare_the_hash_pool() {
    let f = Fixture::new();
    let before = f.pool.accepted();
    let (cookie, _) = f.login("monitor", VIEW_PW).await;
    assert_eq!(f.pool.accepted(), before + 1, "one check for the login");
    for _ in 0..5 {
        let (status, _, _) = f
            .send(
                Method::GET,
                "/api/v1/status",
                &[("cookie", cookie.clone())],
                "",
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(f.pool.accepted(), before + 1, "the cookie needs no check");
    for _ in 0..3 {
        let (status, _, _) = f
            .send(Method::GET, "/metrics", &[basic("monitor", VIEW_PW)], "")
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(f.pool.accepted(), before + 2, "basic auth is checked once");
    // A forged cookie is no session.
    let (status, _, _) = f
        .send(
            Method::GET,
            "/api/v1/status",
            &[("cookie", "lbd_session=00".into())],
            "",
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // After logout the cookie is dead.
    let (cookie, token) = f.login("admin", ADMIN_PW).await;
    let (status, _, _) = f
        .send(
            Method::POST,
            "/logout",
            &[("cookie", cookie.clone()), form(), same_origin()],
            &format!("csrf={token}"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, _) = f
        .send(Method::GET, "/api/v1/status", &[("cookie", cookie)], "")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "current_thread")]
async fn a_login_flood_is_bounded_and_the_page_keeps_answering() {
    let f = Fixture::with_pool(HashPool::start(1, 2).unwrap());
    let (cookie, _) = f.login("monitor", VIEW_PW).await;
    let f = Arc::new(f);
    let flood: Vec<_> = (0..24)
        .map(|i| {
            let f = f.clone();
            tokio::spawn(async move {
                let password = if i % 2 == 0 { ADMIN_PW } else { "wrong" };
                f.send(
                    Method::POST,
                    "/login",
                    &[form(), same_origin()],
                    &format!("user=admin&password={password}"),
                )
                .await
                .0
            })
        })
        .collect();
    // While the flood waits on the pool, a signed-in page still loads fast
    // on this single-threaded runtime.
    // Counted, not timed: the page answers while the admitted logins are
    // still hashing (a runtime blocked by the hashes would answer only
    // after every one of them).
    tokio::task::yield_now().await;
    let (status, _, _) = f
        .send(Method::GET, "/stats", &[("cookie", cookie)], "")
        .await;
    assert_eq!(status, StatusCode::OK);
    let hashing = flood.iter().filter(|task| !task.is_finished()).count();
    assert!(hashing > 0, "the page waited for every login of the flood");
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for task in flood {
        *counts.entry(task.await.unwrap().as_u16()).or_default() += 1;
    }
    let busy = counts.get(&503).copied().unwrap_or(0);
    assert!(busy >= 24 - 3, "at most 1 running + 2 queued: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 24);
    assert!(
        counts.keys().all(|c| [303, 401, 503].contains(c)),
        "{counts:?}"
    );
}

/// A tiny Prometheus text parser: `name{labels} value` lines, comments and
/// `# EOF` skipped; every sample line must parse.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut saw_eof = false;
    for line in text.lines() {
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line.is_empty() {
            continue;
        }
        assert!(!saw_eof, "a line after # EOF: {line}");
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels in {line}");
            for pair in series[name_end + 1..series.len() - 1].split(',') {
                let (label, quoted) = pair.split_once('=').expect("label=value");
                assert!(!label.is_empty() && quoted.starts_with('"') && quoted.ends_with('"'));
            }
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    assert!(saw_eof, "OpenMetrics text ends with # EOF");
    samples
}

#[tokio::test]
async fn metrics_parse_and_equal_the_status() {
    let f = Fixture::new();
    f.admin
        .lock()
        .unwrap()
        .set(BackendKey::new("horizon", "cs2"), AdminState::Maint);
    let (status, headers, text) = f
        .send(Method::GET, "/metrics", &[basic("monitor", VIEW_PW)], "")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let samples = parse_prometheus(&text);
    let (_, _, json) = f
        .send(
            Method::GET,
            "/api/v1/status",
            &[basic("monitor", VIEW_PW)],
            "",
        )
        .await;
    let snapshot: NodeStatus = serde_json::from_str(&json).unwrap();
    let get = |series: String| {
        *samples
            .get(&series)
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    };
    let mut backends = 0;
    for service in &snapshot.services {
        let s = &service.name;
        assert_eq!(
            get(format!(
                "lb_service_rst_no_backend_total{{service=\"{s}\"}}"
            )),
            service.rst_no_backend as f64
        );
        assert_eq!(
            service.rst_no_backend,
            fake_stats(service.id).rst_no_backend
        );
        for backend in &service.backends {
            backends += 1;
            let b = &backend.name;
            let labels = format!("service=\"{s}\",backend=\"{b}\"");
            assert_eq!(
                get(format!("lb_backend_up{{{labels}}}")),
                f64::from(u8::from(backend.is_up()))
            );
            for state in ["ready", "drain", "maint"] {
                let want = backend.admin.to_string() == state;
                assert_eq!(
                    get(format!(
                        "lb_backend_admin_state{{{labels},state=\"{state}\"}}"
                    )),
                    f64::from(u8::from(want))
                );
            }
            let t = &backend.traffic;
            let expected = fake_stats(backend.id);
            assert_eq!(
                t.bytes_to_client, expected.bytes_to_client,
                "status = the maps"
            );
            for (direction, packets, bytes) in [
                ("to_backend", t.packets_to_backend, t.bytes_to_backend),
                ("to_client", t.packets_to_client, t.bytes_to_client),
            ] {
                let l = format!("{labels},direction=\"{direction}\"");
                assert_eq!(
                    get(format!("lb_backend_packets_total{{{l}}}")),
                    packets as f64
                );
                assert_eq!(get(format!("lb_backend_bytes_total{{{l}}}")), bytes as f64);
            }
            assert_eq!(
                get(format!("lb_backend_new_flows_total{{{labels}}}")),
                t.new_flows as f64
            );
            assert_eq!(
                get(format!("lb_backend_active_flows{{{labels}}}")),
                backend.active_flows as f64
            );
        }
    }
    assert_eq!(backends, 4);
    assert_eq!(
        get("lb_backend_up{service=\"appvolumes\",backend=\"avm2\"}".into()),
        0.0
    );
    assert_eq!(
        get("lb_backend_admin_state{service=\"horizon\",backend=\"cs2\",state=\"maint\"}".into()),
        1.0
    );
    assert_eq!(
        get("lb_datapath_events_total{reason=\"pass_not_ours\"}".into()),
        11.0
    );
    let start = get("lb_agent_start_time_seconds".into());
    assert_eq!(start, snapshot.started_at_ms as f64 / 1000.0);
    assert!(start > 1.6e9);
}

#[test]
fn vrrp_instances_show_on_the_page_and_in_the_metrics() {
    let json = serde_json::json!({
        "node": "lb2",
        "services": [],
        "vrrp": [{"name": "lb_vip", "state": "backup", "priority": 100, "base_priority": 100,
                  "master": "192.0.2.251", "since_ms": 65000, "vips": ["192.0.2.250"]}]
    });
    let snapshot: NodeStatus = serde_json::from_value(json).unwrap();
    let page = super::page::stats(
        &snapshot,
        &super::page::Viewer {
            user: "monitor",
            role: Role::Readonly,
            csrf: None,
            refresh: Duration::from_secs(5),
            flash: &[],
            now: std::time::SystemTime::now(),
        },
    );
    assert!(page.contains("lb_vip <span class=\"backup\">BACKUP</span>, priority 100"));
    assert!(page.contains("master 192.0.2.251") && page.contains("for 1m 05s"));
    let samples = parse_prometheus(&metrics::render(&snapshot));
    assert_eq!(
        samples["lb_vrrp_state{instance=\"lb_vip\",state=\"backup\"}"],
        1.0
    );
    assert_eq!(
        samples["lb_vrrp_state{instance=\"lb_vip\",state=\"master\"}"],
        0.0
    );
    assert_eq!(samples["lb_vrrp_priority{instance=\"lb_vip\"}"], 100.0);
}

#[tokio::test]
async fn the_served_page_works_over_tcp_with_a_session() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = Fixture::new();
    let listener = super::listener::bind_freebind("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(super::server::serve(listener, f.state.clone()));
    let exchange = |request: String| async move {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    };
    let body = format!("user=admin&password={ADMIN_PW}");
    let reply = exchange(format!(
        "POST /login HTTP/1.1\r\nHost: {address}\r\nOrigin: http://{address}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    ))
    .await;
    assert!(reply.starts_with("HTTP/1.1 303"), "{reply}");
    let cookie = reply
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let reply = exchange(format!(
        "GET /stats HTTP/1.1\r\nHost: {address}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("id=\"set-drain\"") && reply.contains("row-horizon-cs1"));
    server.abort();
}

/// The issue's "a flood of logins cannot starve the agent": the admin page
/// runs on its own thread and pool, so a runtime standing in for the agent
/// loop (answering the page's requests, ticking like the health checks)
/// keeps its timing while dozens of clients hammer the login form.
#[test]
fn a_login_flood_leaves_the_agent_runtime_on_time() {
    use std::io::{Read, Write};
    let agent = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: std::net::SocketAddrV4 = format!("127.0.0.1:{port}").parse().unwrap();
    let admin = crate::config::Admin {
        listen,
        refresh: Duration::from_secs(30),
        users: users(),
    };
    let (lateness, codes) = agent.block_on(async {
        let (requests, _) = fake_agent(horizon());
        let servers = super::start(Some(&admin), &[], requests).unwrap().unwrap();
        let flood = std::thread::spawn(move || {
            let clients: Vec<_> = (0..16)
                .map(|i| {
                    std::thread::spawn(move || {
                        let mut codes = Vec::new();
                        for _ in 0..4 {
                            let body = format!("user=admin&password=guess{i}");
                            let Ok(mut stream) = std::net::TcpStream::connect(listen) else {
                                continue;
                            };
                            let _ = write!(
                                stream,
                                "POST /login HTTP/1.1\r\nHost: {listen}\r\n\
                                 Content-Type: application/x-www-form-urlencoded\r\n\
                                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let mut reply = String::new();
                            let _ = stream.read_to_string(&mut reply);
                            codes.push(reply.get(9..12).unwrap_or("").to_string());
                        }
                        codes
                    })
                })
                .collect();
            clients
                .into_iter()
                .flat_map(|c| c.join().unwrap())
                .collect::<Vec<String>>()
        });
        // The "agent loop": a 20 ms tick, like a fast health check interval.
        let mut worst = Duration::ZERO;
        let period = Duration::from_millis(20);
        let mut next = tokio::time::Instant::now() + period;
        while !flood.is_finished() {
            tokio::time::sleep_until(next).await;
            worst = worst.max(tokio::time::Instant::now() - next);
            next += period;
        }
        drop(servers);
        (worst, flood.join().unwrap())
    });
    let busy = codes.iter().filter(|c| *c == "503").count();
    let refused = codes.iter().filter(|c| *c == "401").count();
    println!("flood: {busy} busy, {refused} refused; worst tick lateness {lateness:?}");
    assert_eq!(busy + refused, codes.len(), "only 401 and 503: {codes:?}");
    assert!(busy > 0, "the flood filled the pool: {codes:?}");
    assert!(
        lateness < Duration::from_millis(250),
        "the agent's tick was {lateness:?} late under the flood"
    );
}

#[tokio::test]
async fn a_reload_changes_users_and_ends_their_old_sessions() {
    let f = Fixture::new();
    let (monitor_cookie, _) = f.login("monitor", VIEW_PW).await;
    let (admin_cookie, _) = f.login("admin", ADMIN_PW).await;
    let (status, _, _) = f
        .send(
            Method::GET,
            "/api/v1/status",
            &[basic("admin", ADMIN_PW)],
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // The admin's password changes, monitor goes, the page refreshes faster.
    let new_password = "rotated-pw";
    let mut reloaded = admin_config(vec![AdminUser {
        name: "admin".into(),
        role: Role::Admin,
        password_hash: passwd::hash_password(new_password).unwrap(),
    }]);
    reloaded.refresh = Duration::from_secs(7);
    f.state.update(&reloaded);

    let (status, _, _) = f
        .send(
            Method::GET,
            "/api/v1/status",
            &[basic("admin", ADMIN_PW)],
            "",
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old password is forgotten"
    );
    let (status, _, _) = f
        .send(
            Method::GET,
            "/api/v1/status",
            &[("cookie", monitor_cookie)],
            "",
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a removed user's session ends"
    );
    let (status, _, page) = f
        .send(Method::GET, "/stats", &[("cookie", admin_cookie)], "")
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a user kept with the same role stays in"
    );
    assert!(page.contains("content=\"7; url=/stats\""));
    let (status, _, _) = f
        .send(Method::GET, "/metrics", &[basic("admin", new_password)], "")
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// Collects what tracing writes, for log assertions.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_logins_are_logged_with_user_and_peer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let f = Fixture::new();
    let listener = super::listener::bind_freebind("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(super::server::serve(listener, f.state.clone()));
    // tracing caches per callsite whether anybody listens, process-wide; a
    // test on another thread can race our rebuild of that cache, so a
    // refused login is tried up to three times before the test gives up.
    let mut found = None;
    for _ in 0..3 {
        tracing::callsite::rebuild_interest_cache();
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let client = stream.local_addr().unwrap();
        let body = "user=mallory&password=guess";
        stream
            .write_all(
                format!(
                    "POST /login HTTP/1.1\r\nHost: {address}\r\n\
                     Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        if let Some(line) = text.lines().find(|l| l.contains("login refused")) {
            found = Some((line.to_string(), client));
            break;
        }
    }
    server.abort();
    let (line, client) = found.unwrap_or_else(|| panic!("no refusal logged in 3 tries"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("user=mallory"), "{line}");
    assert!(line.contains(&format!("peer={client}")), "{line}");
    assert!(
        !line.contains("guess"),
        "the password is never logged: {line}"
    );
}

#[test]
fn started_servers_take_reloaded_users_and_keep_their_listener() {
    use std::io::{Read, Write};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: std::net::SocketAddrV4 = format!("127.0.0.1:{port}").parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let (requests, _) = runtime.block_on(async { fake_agent(horizon()) });
    let mut first = admin_config(users());
    first.listen = listen;
    let mut servers = super::start(Some(&first), &[], requests).unwrap().unwrap();
    let status_of = |user: &str, password: &str| -> String {
        let (name, value) = basic(user, password);
        // The fake agent answers on `runtime`; drive it while the client waits.
        let request = format!(
            "GET /api/v1/status HTTP/1.1\r\nHost: {listen}\r\n{name}: {value}\r\n\
             Connection: close\r\n\r\n"
        );
        runtime.block_on(async {
            tokio::task::spawn_blocking(move || {
                let mut stream = std::net::TcpStream::connect(listen).unwrap();
                stream.write_all(request.as_bytes()).unwrap();
                let mut reply = String::new();
                stream.read_to_string(&mut reply).unwrap();
                reply.get(9..12).unwrap_or("").to_string()
            })
            .await
            .unwrap()
        })
    };
    assert_eq!(status_of("admin", ADMIN_PW), "200");
    assert_eq!(status_of("ops", "ops-pw"), "401");

    let mut second = first.clone();
    second.users.push(AdminUser {
        name: "ops".into(),
        role: Role::Readonly,
        password_hash: passwd::hash_password("ops-pw").unwrap(),
    });
    servers.update(Some(&second), &[]);
    assert_eq!(
        status_of("ops", "ops-pw"),
        "200",
        "a new user works at once"
    );

    // A new listen address needs a restart: the old listener keeps serving.
    let mut moved = second.clone();
    moved.listen = "127.0.0.1:1".parse().unwrap();
    servers.update(Some(&moved), &[]);
    assert_eq!(status_of("ops", "ops-pw"), "200");
    drop(servers);
}
