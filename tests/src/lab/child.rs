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

/// The last `lines` lines of a daemon's log, for error messages that say
/// why it failed.
pub fn last_lines(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn the_tail_of_a_log_is_its_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\nb", 5), "a\nb");
        assert_eq!(last_lines("", 3), "");
    }
}
