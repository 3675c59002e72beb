//! Running things inside a named network namespace (`/run/netns/NAME`).
//!
//! Commands go through `nsenter --net=...` rather than `ip netns exec`: the
//! latter remounts /sys, which hides /sys/fs/bpf from anything that pins.
//! Rust code runs in a dedicated thread that has entered the namespace, so
//! the caller's own namespace never changes.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// Where `ip netns add` creates the namespace files.
pub const NETNS_DIR: &str = "/run/netns";

pub fn netns_path(netns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(netns)
}

/// A command that runs `program` inside `netns`.
pub fn command_in(netns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path(netns).display()))
        .arg("--")
        .arg(program);
    cmd
}

/// Runs a command to completion; fails with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start {}", describe(cmd)))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}",
            describe(cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// Feeds `lines` to `ip [-n NETNS] -batch -`, one command per line: one
/// process for hundreds of addresses instead of hundreds of processes.
pub fn ip_batch(netns: Option<&str>, lines: &[String]) -> Result<()> {
    use std::io::Write;
    if lines.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("could not start ip -batch (is iproute2 installed?)")?;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let script = lines.join("\n") + "\n";
    stdin
        .write_all(script.as_bytes())
        .context("could not feed commands to ip -batch")?;
    drop(stdin);
    let output = child
        .wait_with_output()
        .context("ip -batch did not finish")?;
    if !output.status.success() {
        bail!(
            "ip {}-batch failed: {} (script starts with: {})",
            netns.map(|n| format!("-n {n} ")).unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr).trim(),
            lines.first().map(String::as_str).unwrap_or("")
        );
    }
    Ok(())
}

/// Runs `f` on a fresh thread that has entered `netns`, and returns its
/// result. Sockets created there stay in that namespace after the thread
/// ends; BPF links attached there use that namespace's ifindexes.
pub fn run_in<F, R>(netns: &str, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let path = netns_path(netns);
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<R> {
                enter(&path)?;
                Ok(f())
            })
            .join()
            .map_err(|panic| {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                anyhow::anyhow!("the thread running in namespace {netns} panicked: {msg}")
            })?
    })
}

/// Like [`run_in`], but returns at once: `f` runs on its own thread inside
/// `netns` while the caller goes on (a receiver that must be listening
/// before the sender in another namespace starts). [`join`] waits for it.
pub fn spawn_in<F, R>(netns: &str, f: F) -> std::thread::JoinHandle<Result<R>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let path = netns_path(netns);
    std::thread::spawn(move || -> Result<R> {
        enter(&path)?;
        Ok(f())
    })
}

/// Waits for a thread of [`spawn_in`]; a panic there goes on in the caller,
/// with the thread's own message.
pub fn join<R>(handle: std::thread::JoinHandle<Result<R>>) -> Result<R> {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &Path) -> Result<()> {
    let file =
        File::open(path).with_context(|| format!("could not open namespace {}", path.display()))?;
    // SAFETY: setns only reads the fd; CLONE_NEWNET affects this thread only.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("could not enter namespace {}", path.display()));
    }
    Ok(())
}

/// Names of the namespaces under /run/netns.
pub fn list() -> Result<Vec<String>> {
    let dir = match std::fs::read_dir(NETNS_DIR) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).context("could not list /run/netns"),
    };
    let mut names = Vec::new();
    for entry in dir {
        let entry = entry.context("could not list /run/netns")?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Pids of the processes whose network namespace is `netns` (what
/// `ip netns pids` prints): everything a lab started there, however it was
/// started, and nothing else.
pub fn pids(netns: &str) -> Vec<i32> {
    let Ok(target) = std::fs::metadata(netns_path(netns)) else {
        return vec![];
    };
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    proc_dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
        })
        .collect()
}

/// Kills every process left in `netns` (SIGKILL): deleting a namespace does
/// not end the processes in it.
pub fn kill_all_in(netns: &str) {
    for pid in pids(netns) {
        // SAFETY: plain syscall; the pid was seen inside a lab namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Deletes a namespace; a missing one is not an error.
pub fn delete(netns: &str) -> Result<()> {
    if !netns_path(netns).exists() {
        return Ok(());
    }
    run(Command::new("ip").args(["netns", "delete", netns]))?;
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}
