//! Debian's HAProxy (2.6) in an LB node's namespace: the proxy half of the
//! keepalived + HAProxy pair that the migration lab replaces with lbd.
//!
//! HAProxy runs in master-worker mode in the foreground (`-W`, no `-D`):
//! the master is our child, so its exit status and its stderr (the
//! config's `log stderr` and HAProxy's own notices) land in
//! `<lab dir>/lb<n>-haproxy.log`, and it writes the pid file a keepalived
//! `vrrp_script` checks, which `-db` would not. SIGTERM to the master is
//! `systemctl stop haproxy`: a hard stop that closes every connection.
//! Dropping [`Haproxy`] kills the master; the worker exits with it, and the
//! lab's teardown kills whatever is left in the namespace anyway.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Lab;
use super::child;

/// What the master prints once its listeners are bound and the worker runs.
const READY: &str = "Loading success.";

/// A running HAProxy master (and its worker) in an LB node's namespace.
pub struct Haproxy {
    child: Child,
    short: String,
    log: PathBuf,
    pid_file: PathBuf,
    started: Instant,
}

impl Lab {
    /// Where HAProxy on LB node `n` writes its pid file: known before it
    /// starts, since keepalived's track script names it.
    pub fn haproxy_pid_file(&self, n: usize) -> PathBuf {
        self.dir().join(format!("lb{n}-haproxy.pid"))
    }

    /// `haproxy -c`: fails with HAProxy's complaints when it would refuse
    /// `config`.
    pub fn check_haproxy_config(&self, config: &Path) -> Result<()> {
        let out = std::process::Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(config)
            .output()
            .context("could not run haproxy -c (apt-get install haproxy)")?;
        if !out.status.success() {
            bail!(
                "haproxy refuses {}:\n{}{}",
                config.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts HAProxy with `config` in LB node `n`'s namespace and waits
    /// until it has bound its listeners (or fails quoting its log).
    pub fn start_haproxy(&self, n: usize, config: &Path, timeout: Duration) -> Result<Haproxy> {
        let short = format!("lb{n}");
        let log = self.dir().join(format!("{short}-haproxy.log"));
        let pid_file = self.haproxy_pid_file(n);
        std::fs::remove_file(&pid_file).ok();
        let out = std::fs::File::create(&log)
            .with_context(|| format!("could not create {}", log.display()))?;
        let mut cmd = self.command_in(&short, "haproxy")?;
        cmd.arg("-W")
            .arg("-f")
            .arg(config)
            .arg("-p")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd
            .spawn()
            .context("could not start haproxy (apt-get install haproxy)")?;
        let mut haproxy = Haproxy {
            child,
            short,
            log,
            pid_file,
            started: Instant::now(),
        };
        haproxy.wait_ready(timeout)?;
        Ok(haproxy)
    }
}

impl Haproxy {
    pub fn pid_file(&self) -> &Path {
        &self.pid_file
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        child::last_lines(&self.log(), lines)
    }

    /// Fails, quoting the log, when the master has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("could not poll haproxy")? {
            bail!(
                "haproxy in {} exited with {status} after {:.1?}; its log ends with:\n{}",
                self.short,
                self.started.elapsed(),
                self.log_tail(20)
            );
        }
        Ok(())
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        loop {
            if self.log().contains(READY) && self.pid_file.exists() {
                return Ok(());
            }
            self.check_running()?;
            if self.started.elapsed() > timeout {
                bail!(
                    "haproxy in {} not ready within {timeout:?}; its log ends with:\n{}",
                    self.short,
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to the master, as `systemctl stop haproxy`; waits for the
    /// exit, then kills.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        child::send_sigterm(&mut self.child)?;
        if let Some(status) = child::wait_exit(&mut self.child, timeout)? {
            return Ok(status);
        }
        self.child.kill().ok();
        self.child.wait().ok();
        bail!(
            "haproxy in {} did not stop within {timeout:?} of SIGTERM and was killed",
            self.short
        )
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // The worker notices its master's death and exits; the lab's
            // teardown kills it if it has not yet.
            self.child.kill().ok();
            self.child.wait().ok();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- haproxy {} log (last lines of {}) ---\n{}",
                self.short,
                self.log.display(),
                self.log_tail(30)
            );
        }
    }
}
