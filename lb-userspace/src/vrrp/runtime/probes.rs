//! The conditions the VRRP thread observes itself: whether the interface is
//! up and running (FAULT when not), whether our XDP program is still
//! attached, and track scripts.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::dataplane::load::pinned_link_ifindex;

/// True while the pinned XDP link is attached to `ifindex`. A link detached
/// (`bpftool link detach`) reports interface 0; a removed pin is an error;
/// both mean the program no longer serves the interface.
pub fn xdp_attached(link_pin: &Path, ifindex: u32) -> bool {
    match pinned_link_ifindex(link_pin) {
        Ok(attached_to) => attached_to == ifindex,
        Err(e) => {
            tracing::debug!("xdp-attached: {e:#}");
            false
        }
    }
}

/// True while `interface` exists, is up and has a carrier (IFF_UP and
/// IFF_RUNNING), as keepalived judges it. Read with getifaddrs, which asks
/// netlink in the calling thread's network namespace (sysfs would answer
/// for the namespace it was mounted in).
pub fn link_running(interface: &str) -> bool {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        // Cannot tell: keep the current state rather than flap.
        return true;
    }
    let wanted = libc::IFF_UP as u32 | libc::IFF_RUNNING as u32;
    let mut running = false;
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        if name.to_bytes() == interface.as_bytes() && entry.ifa_flags & wanted == wanted {
            running = true;
            break;
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: the list came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    running
}

/// Runs `command` with `sh -c`; true when it exits 0 within `timeout`. A
/// command still running at the timeout is killed and counts as failed.
pub async fn run_script(command: &str, timeout: Duration) -> bool {
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!("track script `{command}` could not start: {e}");
            return false;
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status.success(),
        Ok(Err(e)) => {
            tracing::warn!("track script `{command}`: waiting for it failed: {e}");
            false
        }
        Err(_) => {
            tracing::warn!(
                "track script `{command}` ran longer than {} and was killed",
                humantime::format_duration(timeout)
            );
            let _ = child.kill().await;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_pass_fail_and_time_out() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let second = Duration::from_secs(1);
            assert!(run_script("exit 0", second).await);
            assert!(!run_script("exit 3", second).await);
            let started = std::time::Instant::now();
            assert!(!run_script("sleep 5", Duration::from_millis(200)).await);
            // Killed at the timeout, not waited for: the script alone
            // would take 5 s (25 times the timeout, so a slow machine
            // cannot make this fail).
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the script ran to its end instead of being killed at the timeout"
            );
        });
    }

    #[test]
    fn loopback_runs_and_a_missing_interface_does_not() {
        assert!(link_running("lo"));
        assert!(!link_running("lbd-no-such-if0"));
    }

    #[test]
    fn a_missing_link_pin_is_not_attached() {
        assert!(!xdp_attached(Path::new("/nonexistent/lb/link"), 1));
    }
}
