//! A real headless Chromium in a lab namespace, driven over WebDriver.
//!
//! Debian's `chromedriver` (package chromium-driver) runs inside the node's
//! namespace through `ip netns exec`, so Chromium's traffic leaves from that
//! node's addresses, as a browser on that network would. The driver listens
//! on loopback there, which the test process cannot reach from its own
//! namespace: every connection to it is opened by a short thread that has
//! entered the namespace (see [`NetnsConnector`]), so the async WebDriver
//! client (fantoccini) runs on any runtime.
//!
//! Every browser gets a fresh, empty profile in the lab directory; dropping
//! [`Browser`] kills the driver and every browser process under it, so a
//! failed test leaves no Chromium behind (the lab's teardown would kill
//! stragglers in its namespaces too).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::netns;
use super::setup::Lab;

/// Debian's driver and browser.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The driver's port on loopback inside the namespace (private to it).
const DRIVER_PORT: u16 = 9515;
/// How long the driver may take to listen.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long Chromium may take to start and open a session.
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Page loads and scripts the driver gives up on.
const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// Chromium's command line: headless, no sandbox (we are root in a
/// namespace), and nothing that would phone home or add background traffic
/// to the lab's counters.
const CHROMIUM_ARGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,960",
];

/// A chromedriver (and the Chromium it starts) in one lab namespace.
pub struct Browser {
    driver: Option<Child>,
    netns: String,
    /// Profile, HOME and logs of this browser, inside the lab directory.
    dir: PathBuf,
    /// Sessions opened so far: each gets its own empty profile.
    sessions: std::sync::atomic::AtomicUsize,
}

impl Browser {
    /// Starts chromedriver in `node`'s namespace of `lab` and waits until it
    /// listens. Fails (never skips) when Chromium or its driver is missing.
    pub fn start(lab: &Lab, node: &str) -> Result<Browser> {
        for program in [CHROMEDRIVER, CHROMIUM] {
            if !Path::new(program).exists() {
                bail!(
                    "{program} is missing: install Debian's chromium and chromium-driver \
                     (`cargo xtask setup` does)"
                );
            }
        }
        let netns = lab.netns(node)?.to_string();
        let dir = lab.dir().join(format!("browser-{node}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("could not clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
        let log = dir.join("chromedriver.log");
        let stderr = std::fs::File::create(dir.join("chromedriver.stderr"))
            .context("could not create the chromedriver stderr file")?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &netns, CHROMEDRIVER])
            .arg(format!("--port={DRIVER_PORT}"))
            .arg(format!("--log-path={}", log.display()))
            .env("HOME", &dir)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // Its own process group, so Drop can reach Chromium's helpers too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd
            .spawn()
            .with_context(|| format!("could not start {CHROMEDRIVER} in {netns}"))?;
        let mut browser = Browser {
            driver: Some(driver),
            netns,
            dir,
            sessions: Default::default(),
        };
        browser.wait_until_listening()?;
        Ok(browser)
    }

    /// The directory holding the profile and the driver's log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens a WebDriver session: starts a headless Chromium with a new,
    /// empty profile (no cookies of earlier sessions). Close it with
    /// [`Client::close`] (Drop of the `Browser` ends everything anyway).
    pub async fn session(&self) -> Result<Client> {
        let n = self
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = self.dir.join(format!("profile-{n}"));
        std::fs::create_dir_all(&profile)
            .with_context(|| format!("could not create {}", profile.display()))?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let page_load = PAGE_LOAD_TIMEOUT.as_millis() as u64;
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": { "pageLoad": page_load, "script": page_load, "implicit": 0 },
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("a json! object literal is an object")
        };
        let connector = NetnsConnector {
            netns: self.netns.clone(),
        };
        let url = format!("http://{}:{DRIVER_PORT}", Ipv4Addr::LOCALHOST);
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(capabilities);
        let client = tokio::time::timeout(SESSION_TIMEOUT, builder.connect(&url))
            .await
            .with_context(|| {
                format!(
                    "Chromium did not start within {SESSION_TIMEOUT:?}; see {}",
                    self.dir.display()
                )
            })?
            .with_context(|| {
                format!(
                    "chromedriver in {} could not open a session; its log ends with:\n{}",
                    self.netns,
                    self.log_tail(20)
                )
            })?;
        Ok(client)
    }

    /// The last `lines` lines of chromedriver's log and stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        for name in ["chromedriver.log", "chromedriver.stderr"] {
            let content = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            text.push_str(&super::child::last_lines(&content, lines));
            text.push('\n');
        }
        text
    }

    fn wait_until_listening(&mut self) -> Result<()> {
        let start = Instant::now();
        let driver_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, DRIVER_PORT));
        loop {
            if let Some(status) = self
                .driver
                .as_mut()
                .and_then(|d| d.try_wait().ok().flatten())
            {
                bail!(
                    "chromedriver exited at start ({status}):\n{}",
                    self.log_tail(20)
                );
            }
            let reachable = netns::run_in(&self.netns, || {
                TcpStream::connect_timeout(&driver_addr, Duration::from_millis(200)).is_ok()
            })?;
            if reachable {
                return Ok(());
            }
            if start.elapsed() > DRIVER_START_TIMEOUT {
                bail!(
                    "chromedriver did not listen on {driver_addr} in {} within {DRIVER_START_TIMEOUT:?}:\n{}",
                    self.netns,
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the driver and every process below it (Chromium, its zygote,
    /// renderers, crashpad), children first collected so none escapes by
    /// being re-parented.
    fn kill(&mut self) {
        let Some(mut driver) = self.driver.take() else {
            return;
        };
        let root = driver.id() as i32;
        let mut doomed = descendants(root);
        doomed.push(root);
        // SAFETY: plain syscalls on pids we started (and their group).
        unsafe {
            libc::kill(-root, libc::SIGKILL);
            for pid in &doomed {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        driver.wait().ok();
        let deadline = Instant::now() + Duration::from_secs(5);
        while doomed.iter().any(|pid| is_alive(*pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// Waits up to `timeout` for an element matching `css` whose text
/// satisfies `accept`; returns that text. On timeout the error quotes the
/// last text seen, so a failed wait says what the page showed.
pub async fn wait_for_text(
    client: &Client,
    css: &str,
    timeout: Duration,
    accept: impl Fn(&str) -> bool,
) -> Result<String> {
    let start = Instant::now();
    let mut last = String::from("(no such element)");
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if accept(&text) {
                return Ok(text);
            }
            last = text;
        }
        if start.elapsed() > timeout {
            bail!("`{css}` did not show the expected text within {timeout:?}; it showed {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits up to `timeout` for an element matching `css` whose attribute
/// `attr` satisfies `accept`; returns the value. Reloads nothing: pages
/// that refresh themselves or a click's redirect bring the change.
pub async fn wait_for_attr(
    client: &Client,
    css: &str,
    attr: &str,
    timeout: Duration,
    accept: impl Fn(&str) -> bool,
) -> Result<String> {
    let start = Instant::now();
    let mut last = String::from("(no such element)");
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(value) = element.attr(attr).await
        {
            let value = value.unwrap_or_default();
            if accept(&value) {
                return Ok(value);
            }
            last = value;
        }
        if start.elapsed() > timeout {
            bail!(
                "`{css}` [{attr}] did not take the expected value within {timeout:?}; it was {last:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `flow` within `limit`: a hung driver or page fails the test, naming
/// `what`, instead of hanging it (single WebDriver commands have no timeout
/// of their own).
pub async fn bounded<T>(
    what: &str,
    limit: Duration,
    flow: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, flow)
        .await
        .with_context(|| format!("{what} did not finish within {limit:?}"))?
}

/// Ends a session, giving the driver a few seconds at most (Drop of the
/// [`Browser`] kills whatever is left).
pub async fn close(client: Client) {
    let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
}

/// Saves a PNG screenshot of the current page to `path` (directories are
/// created) and returns the path.
pub async fn save_screenshot(client: &Client, path: &Path) -> Result<PathBuf> {
    let png = client
        .screenshot()
        .await
        .context("Chromium could not take a screenshot")?;
    if !png.starts_with(b"\x89PNG") {
        bail!("the screenshot is not a PNG ({} bytes)", png.len());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("could not create {}", parent.display()))?;
    }
    std::fs::write(path, &png).with_context(|| format!("could not write {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// `target/test-artifacts/<name>`: kept after the test for a human to look
/// at (the lab directory is removed at teardown).
pub fn artifact_path(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("could not find the running executable")?;
    let target = exe
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .context("the test does not run from a cargo target directory")?;
    Ok(target.join("test-artifacts").join(name))
}

/// Says `text` on the test's stderr even when libtest captures output
/// (capture only covers the print macros): artifact paths and measured
/// numbers belong in every test log.
pub fn tell(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// A hyper connector that opens every TCP connection from inside a network
/// namespace: a short thread enters it, connects, and hands the socket back
/// (a socket keeps the namespace it was created in).
#[derive(Clone, Debug)]
pub struct NetnsConnector {
    netns: String,
}

impl NetnsConnector {
    pub fn new(netns: &str) -> Self {
        NetnsConnector {
            netns: netns.to_string(),
        }
    }
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = std::io::Result<TokioIo<tokio::net::TcpStream>>> + Send>>;

impl tower_service::Service<http::Uri> for NetnsConnector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let netns = self.netns.clone();
        Box::pin(async move {
            let addr = uri_addr(&uri)?;
            let stream = tokio::task::spawn_blocking(move || {
                netns::run_in(&netns, || {
                    TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                })
                .map_err(std::io::Error::other)?
            })
            .await
            .map_err(std::io::Error::other)??;
            stream.set_nonblocking(true)?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(tokio::net::TcpStream::from_std(stream)?))
        })
    }
}

/// The socket address of an `http://IP:PORT/...` URI (the driver is always
/// addressed by IP: no name lookups inside the namespace).
fn uri_addr(uri: &http::Uri) -> std::io::Result<SocketAddr> {
    let host = uri.host().unwrap_or_default();
    let ip: Ipv4Addr = host.parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the WebDriver URL {uri} must name an IPv4 address"),
        )
    })?;
    Ok(SocketAddr::from((ip, uri.port_u16().unwrap_or(80))))
}

/// Pids of every process below `root`, from /proc's parent links.
fn descendants(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|pid| Some((pid, parent_of(pid)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// The parent pid from `/proc/PID/stat` (the field after the `(comm)`).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

fn is_alive(pid: i32) -> bool {
    // A zombie still has /proc/PID; its state field is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_comm = stat[stat.rfind(')')? + 1..].to_string();
            after_comm.split_whitespace().next().map(|s| s != "Z")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_addr_takes_ip_and_port() {
        let uri: http::Uri = "http://127.0.0.1:9515/session".parse().unwrap();
        assert_eq!(uri_addr(&uri).unwrap(), "127.0.0.1:9515".parse().unwrap());
        let uri: http::Uri = "http://localhost:9515/".parse().unwrap();
        assert!(uri_addr(&uri).is_err());
    }

    #[test]
    fn descendants_of_this_process_include_a_child() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let below = descendants(std::process::id() as i32);
        child.kill().ok();
        child.wait().ok();
        assert!(below.contains(&(child.id() as i32)), "{below:?}");
    }
}
