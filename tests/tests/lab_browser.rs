//! The browser harness itself: headless Chromium, driven from the test,
//! runs inside the lab's client namespace, loads a page served on lb1's
//! front address, ticks a checkbox, clicks a button, and sees the page the
//! server answers with. Needs root, Debian's chromium and chromium-driver.
//!
//! `cargo test -p lb-tests --test lab_browser -- --test-threads=1`

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fantoccini::Locator;
use lb_tests::lab::browser::{
    Browser, artifact_path, bounded, close, save_screenshot, tell, wait_for_text,
};
use lb_tests::lab::{Lab, assert_nothing_left, topology};

/// The most one browser flow may take.
const FLOW_LIMIT: Duration = Duration::from_secs(120);
const PAGE_PORT: u16 = 8080;

/// What the little page server saw: backend states and the peers that
/// submitted the form.
#[derive(Default)]
struct PageState {
    states: BTreeMap<String, String>,
    posters: Vec<SocketAddr>,
}

/// A minimal HTTP/1.1 server on a std listener: `GET /` shows a form with
/// one checkbox per backend and a `drain` button; `POST /set` applies the
/// form and redirects back (post/redirect/get, like an admin page).
struct PageServer {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<PageState>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PageServer {
    fn start(listener: TcpListener) -> Result<PageServer> {
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut initial = PageState::default();
        for be in ["be1", "be2"] {
            initial.states.insert(be.into(), "READY".into());
        }
        let state = Arc::new(Mutex::new(initial));
        let thread = {
            let (stop, state) = (stop.clone(), state.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            if let Err(e) = serve(stream, peer, &state) {
                                eprintln!("page server: {e:#}");
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        Ok(PageServer {
            stop,
            state,
            thread: Some(thread),
        })
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

fn serve(stream: TcpStream, peer: SocketAddr, state: &Mutex<PageState>) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().context("bad Content-Length")?;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let response = match (method, path) {
        ("GET", "/") => {
            let state = state.lock().unwrap();
            let rows: String = state
                .states
                .iter()
                .map(|(be, st)| {
                    format!(
                        "<tr><td><input type=checkbox name=pick value={be} id=pick-{be}></td>\
                         <td>{be}</td><td id=state-{be}>{st}</td></tr>"
                    )
                })
                .collect();
            let html = format!(
                "<!doctype html><title>lab page</title><form method=post action=/set>\
                 <table>{rows}</table><button name=action value=DRAIN id=drain>drain</button>\
                 </form>"
            );
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            )
        }
        ("POST", "/set") => {
            let form = String::from_utf8_lossy(&body).into_owned();
            let mut state = state.lock().unwrap();
            state.posters.push(peer);
            let action = form
                .split('&')
                .find_map(|kv| kv.strip_prefix("action="))
                .unwrap_or("")
                .to_string();
            for kv in form.split('&') {
                if let Some(be) = kv.strip_prefix("pick=")
                    && let Some(st) = state.states.get_mut(be)
                {
                    *st = action.clone();
                }
            }
            "HTTP/1.1 303 See Other\r\nLocation: /\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_string()
        }
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    };
    (&stream).write_all(response.as_bytes())?;
    Ok(())
}

#[test]
fn chromium_in_the_client_namespace_drives_a_lab_page() {
    let lab = Lab::builder("brw")
        .backends(1)
        .client_addrs(1)
        .build()
        .expect("building the lab");
    let prefix = lab.prefix().to_string();
    let lb1 = topology::lb_front_addr(1);
    let listen = SocketAddr::from((lb1, PAGE_PORT));
    let listener = lab
        .run_in("lb1", move || TcpListener::bind(listen))
        .expect("entering lb1")
        .expect("binding the page server on lb1");
    let server = PageServer::start(listener).expect("starting the page server");
    let browser =
        Browser::start(&lab, "cl").expect("starting chromedriver in the client namespace");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shot = artifact_path("browser-selftest.png").unwrap();
    let result: Result<()> = runtime.block_on(async {
        let client = browser.session().await?;
        let outcome = bounded("the page flow", FLOW_LIMIT, async {
            client.goto(&format!("http://{listen}/")).await?;
            let before = wait_for_text(&client, "#state-be2", Duration::from_secs(10), |t| {
                t == "READY"
            })
            .await?;
            assert_eq!(before, "READY");
            client
                .find(Locator::Css("#pick-be2"))
                .await?
                .click()
                .await?;
            client.find(Locator::Css("#drain")).await?.click().await?;
            wait_for_text(&client, "#state-be2", Duration::from_secs(10), |t| {
                t == "DRAIN"
            })
            .await?;
            let be1 = client
                .find(Locator::Css("#state-be1"))
                .await?
                .text()
                .await?;
            if be1 != "READY" {
                bail!("be1 was not ticked but shows {be1}");
            }
            save_screenshot(&client, &shot).await?;
            Ok(())
        })
        .await;
        close(client).await;
        outcome
    });
    if let Err(e) = &result {
        panic!("{e:#}\nchromedriver log:\n{}", browser.log_tail(30));
    }
    tell(&format!("screenshot: {}", shot.display()));
    let posters = server.state.lock().unwrap().posters.clone();
    let client_addr: Ipv4Addr = topology::client_addrs(1).next().unwrap();
    assert_eq!(posters.len(), 1, "one form submission: {posters:?}");
    assert_eq!(
        posters[0].ip(),
        client_addr,
        "the form must come from the client namespace"
    );
    let states = server.state.lock().unwrap().states.clone();
    assert_eq!(states["be2"], "DRAIN");
    assert_eq!(states["be1"], "READY");

    drop(browser);
    drop(server);
    let pin_dir = lab.lbd_pin_dir(1);
    lab.teardown().expect("tearing the lab down");
    drop(lab);
    assert_nothing_left(&prefix, &pin_dir);
    assert!(
        !chromium_runs_for(&prefix),
        "Chromium processes left behind"
    );
}

/// Whether any process of this lab's browser still runs (its profile lives
/// in the lab's scratch directory, named by the prefix).
fn chromium_runs_for(prefix: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            let mut cmdline = String::new();
            std::fs::File::open(format!("/proc/{pid}/cmdline"))
                .and_then(|mut f| f.read_to_string(&mut cmdline))
                .is_ok()
                && cmdline.contains("chrom")
                && cmdline.contains(prefix)
        })
}
