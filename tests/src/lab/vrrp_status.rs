//! lbd's VRRP status as the labs read it: the `"vrrp"` field of
//! `lbd status` (one object per instance: state, priority, master,
//! transitions, drops by reason, ...), polled through the control socket.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{Lab, Lbd};

/// The status of LB node `n`'s first VRRP instance, per `lbd status`.
pub fn instance_status(lab: &Lab, n: usize, config: &Path) -> Result<Value> {
    let config = config.to_str().context("the config path is not UTF-8")?;
    let out = lab.lbd_command(n, &["status", "--config", config])?;
    let status: Value =
        serde_json::from_slice(&out.stdout).context("lbd status did not print JSON")?;
    let instance = status["vrrp"][0].clone();
    if instance.is_null() {
        bail!("lbd status has no VRRP instance: {status}");
    }
    Ok(instance)
}

/// Polls node `n`'s status until its instance is in `state` (`master`,
/// `backup`); returns how long that took and the status then. Fails
/// quoting the last status and lbd's log when lbd exits or time runs out.
pub fn wait_for_state(
    lab: &Lab,
    n: usize,
    lbd: &mut Lbd,
    config: &Path,
    state: &str,
    timeout: Duration,
) -> Result<(Duration, Value)> {
    let start = Instant::now();
    loop {
        let last = match instance_status(lab, n, config) {
            Ok(s) if s["state"] == state => return Ok((start.elapsed(), s)),
            Ok(s) => s.to_string(),
            Err(e) => format!("{e:#}"),
        };
        lbd.check_running()?;
        if start.elapsed() > timeout {
            bail!(
                "lbd not {state} within {timeout:?}; last status: {last}\nlbd log ends with:\n{}",
                lbd.log_tail(25)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The drop counter `label` of an instance status (0 when absent).
pub fn drops(status: &Value, label: &str) -> u64 {
    status["drops"][label].as_u64().unwrap_or(0)
}

/// The sum of all drop counters of an instance status.
pub fn total_drops(status: &Value) -> u64 {
    status["drops"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}
