//! Reading wrk's summary. wrk prints text only; the bench needs the
//! completed requests, the time they took, and everything that went wrong.

use anyhow::{Context, Result};

/// What one wrk run reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WrkSummary {
    /// Completed requests (any status).
    pub requests: u64,
    pub seconds: f64,
    /// Answers with a status other than 2xx/3xx.
    pub non_2xx: u64,
    /// connect + read + write + timeout socket errors.
    pub socket_errors: u64,
}

impl WrkSummary {
    pub fn ok(&self) -> u64 {
        self.requests.saturating_sub(self.non_2xx)
    }
}

/// Parses `N requests in 5.00s, ...`, `Non-2xx or 3xx responses: N` and
/// `Socket errors: connect A, read B, write C, timeout D`.
pub fn parse(stdout: &str) -> Result<WrkSummary> {
    let mut summary = WrkSummary::default();
    let mut found = false;
    for line in stdout.lines().map(str::trim) {
        if let Some((count, rest)) = line.split_once(" requests in ") {
            summary.requests = count
                .trim()
                .parse()
                .with_context(|| format!("wrk's request count is not a number: {line:?}"))?;
            summary.seconds = duration_seconds(rest.split(',').next().unwrap_or_default())
                .with_context(|| format!("wrk's duration is unreadable: {line:?}"))?;
            found = true;
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            summary.non_2xx = n
                .trim()
                .parse()
                .with_context(|| format!("unreadable line {line:?}"))?;
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            for part in errors.split(',') {
                let n = part.split_whitespace().nth(1).unwrap_or_default();
                summary.socket_errors += n
                    .parse::<u64>()
                    .with_context(|| format!("unreadable socket errors {line:?}"))?;
            }
        }
    }
    anyhow::ensure!(found, "wrk printed no `N requests in T` line:\n{stdout}");
    Ok(summary)
}

/// wrk's durations: `5.00s`, `1.00m`, `800.00ms`, `10.00us`.
fn duration_seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    let units = [
        ("us", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    for (suffix, scale) in units {
        if let Some(n) = text.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|v| v * scale);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_with_errors_is_read_whole() {
        let out = "Running 5s test @ http://192.0.2.10/\n  1 threads and 32 connections\n\
                   \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
                   \x20   Latency     2.01ms  400.00us  10.00ms   90.00%\n\
                   \x20 61234 requests in 5.00s, 14.20MB read\n\
                   \x20 Socket errors: connect 3, read 2, write 0, timeout 1\n\
                   \x20 Non-2xx or 3xx responses: 4\n\
                   Requests/sec:  12246.80\nTransfer/sec:      2.84MB\n";
        let s = parse(out).unwrap();
        assert_eq!(
            s,
            WrkSummary {
                requests: 61234,
                seconds: 5.0,
                non_2xx: 4,
                socket_errors: 6
            }
        );
        assert_eq!(s.ok(), 61230);
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(duration_seconds("1.00m"), Some(60.0));
        assert_eq!(duration_seconds("800.00ms"), Some(0.8));
        assert_eq!(duration_seconds("5.01s"), Some(5.01));
        assert_eq!(duration_seconds("x"), None);
    }

    #[test]
    fn output_without_a_count_is_an_error() {
        assert!(parse("unable to connect to 192.0.2.10:80 Connection refused\n").is_err());
    }
}
