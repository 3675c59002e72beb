//! Stopping a lab daemon (lbd, keepalived, HAProxy) as a service manager
//! does: SIGTERM, then a bounded wait for it to exit; what happens after
//! that wait is the caller's (each kills in its own way and says why).

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::Result;

/// How often a wait looks whether the daemon has exited.
const POLL: Duration = Duration::from_millis(20);

/// Sends SIGTERM to `child` unless it has exited already.
pub fn send_sigterm(child: &mut Child) -> Result<()> {
    if child.try_wait()?.is_none() {
        // SAFETY: our own child, not yet reaped, so the pid is still ours.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    Ok(())
}

/// Waits up to `timeout` for `child` to exit: its status, or `None` when
/// it still runs at the deadline.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}
