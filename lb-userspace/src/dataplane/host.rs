//! Host settings the data path depends on (docs/architecture.md, "Rules that are easy
//! to get wrong"). All of them are per network namespace, which labs rely on.
//!
//! - `net.ipv4.conf.<dev>.forwarding=1`: bpf_fib_lookup answers FWD_DISABLED
//!   without it. Per device, never `ip_forward`, which resets every device.
//! - Forwarding makes the node a router for whatever reaches its stack on that
//!   device, so an nftables table `inet lbd_<node>` drops forwarded packets
//!   arriving there.
//! - The SNAT port range must not overlap `ip_local_port_range` (the kernel
//!   would pick the same ports for its own connections), and it goes into
//!   `ip_local_reserved_ports` so nothing binds it by accident.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

use super::pins::check_node_name;

const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// An inclusive port range, host byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn new(first: u16, last: u16) -> Result<Self> {
        ensure!(
            first <= last,
            "port range {first}-{last} is empty: the first port is above the last"
        );
        Ok(PortRange { first, last })
    }

    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Parses `ip_local_port_range` ("32768\t60999").
pub fn parse_local_port_range(text: &str) -> Result<PortRange> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), None) => PortRange::new(a, b),
        _ => bail!("cannot read {LOCAL_PORT_RANGE}: expected two ports, got {text:?}"),
    }
}

/// Refuses a SNAT range the kernel could also hand to local connections.
pub fn check_snat_range(snat: PortRange, local: PortRange) -> Result<()> {
    if snat.overlaps(&local) {
        bail!(
            "the SNAT port range {snat} overlaps the kernel's local port range {local} \
             (net.ipv4.ip_local_port_range): choose a SNAT range outside it, or move the \
             local range, e.g. `sysctl -w net.ipv4.ip_local_port_range=\"{} {}\"`",
            local.first,
            local.last,
        );
    }
    Ok(())
}

/// Parses `ip_local_reserved_ports` ("8404,40000-59999"; empty when none).
pub fn parse_reserved_ports(text: &str) -> Result<Vec<PortRange>> {
    text.trim()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let item = item.trim();
            let port = |s: &str| {
                s.parse::<u16>()
                    .with_context(|| format!("{item:?} in {RESERVED_PORTS} is not a port or range"))
            };
            match item.split_once('-') {
                Some((a, b)) => PortRange::new(port(a)?, port(b)?),
                None => port(item).map(|p| PortRange { first: p, last: p }),
            }
        })
        .collect()
}

/// The reserved ports with `add` merged in, others kept, in the kernel's
/// own normalized form (sorted, overlapping and adjacent ranges joined).
pub fn merge_reserved_ports(existing: &str, add: PortRange) -> Result<String> {
    let mut ranges = parse_reserved_ports(existing)?;
    ranges.push(add);
    ranges.sort();
    let mut merged: Vec<PortRange> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if u32::from(r.first) <= u32::from(last.last) + 1 => {
                last.last = last.last.max(r.last)
            }
            _ => merged.push(r),
        }
    }
    Ok(merged
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(","))
}

fn read_sysctl(path: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value:?} to {path} (needs root)"))
}

/// Checks the SNAT range against this namespace's `ip_local_port_range`.
pub fn check_snat_against_host(snat: PortRange) -> Result<()> {
    check_snat_range(
        snat,
        parse_local_port_range(&read_sysctl(LOCAL_PORT_RANGE)?)?,
    )
}

/// Adds the SNAT range to `ip_local_reserved_ports`, keeping other entries.
pub fn reserve_ports(snat: PortRange) -> Result<()> {
    let before = read_sysctl(RESERVED_PORTS)?;
    let after = merge_reserved_ports(&before, snat)?;
    if before.trim() == after {
        tracing::debug!(ports = %after, "SNAT ports already reserved");
        return Ok(());
    }
    write_sysctl(RESERVED_PORTS, &after)?;
    tracing::info!(snat = %snat, reserved = %after, "reserved the SNAT ports (net.ipv4.ip_local_reserved_ports)");
    Ok(())
}

/// Interface names end up in a /proc path and an nft string.
pub fn check_dev_name(dev: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    ensure!(
        !dev.is_empty() && dev.len() <= 15 && dev != "." && dev != ".." && dev.chars().all(ok),
        "{dev:?} is not a usable interface name"
    );
    Ok(())
}

fn forwarding_path(dev: &str) -> Result<PathBuf> {
    check_dev_name(dev)?;
    Ok(PathBuf::from(format!(
        "/proc/sys/net/ipv4/conf/{dev}/forwarding"
    )))
}

/// Sets `net.ipv4.conf.<dev>.forwarding` (never the global `ip_forward`).
pub fn set_forwarding(dev: &str, on: bool) -> Result<()> {
    let path = forwarding_path(dev)?;
    let path = path.to_str().expect("ascii path");
    let want = if on { "1" } else { "0" };
    if read_sysctl(path)?.trim() == want {
        tracing::debug!(dev, on, "forwarding already set");
        return Ok(());
    }
    write_sysctl(path, want)?;
    if on {
        tracing::info!(
            dev,
            "forwarding enabled on {dev} (net.ipv4.conf.{dev}.forwarding=1, bpf_fib_lookup needs it)"
        );
    } else {
        tracing::info!(dev, "forwarding disabled on {dev}");
    }
    Ok(())
}

/// Whether `net.ipv4.conf.<dev>.forwarding` is on.
pub fn forwarding(dev: &str) -> Result<bool> {
    let path = forwarding_path(dev)?;
    Ok(read_sysctl(path.to_str().expect("ascii path"))?.trim() == "1")
}

/// `lbd_<node>`, with characters nft identifiers do not take replaced.
pub fn nft_table_name(node: &str) -> Result<String> {
    check_node_name(node)?;
    Ok(format!("lbd_{}", node.replace(['-', '.'], "_")))
}

/// The nft script that (re)creates the node's table: one atomic transaction
/// (declare, delete, create) so a rerun replaces rather than duplicates.
pub fn forward_drop_ruleset(node: &str, dev: &str) -> Result<String> {
    check_dev_name(dev)?;
    let table = nft_table_name(node)?;
    Ok(format!(
        "table inet {table}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{dev}\" counter drop comment \"lbd: forwarding is on for XDP only\"\n\
         \t}}\n\
         }}\n"
    ))
}

fn run_nft(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (install the nftables package)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .context("writing to nft")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft rejected the ruleset: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Installs (or replaces) the forward-drop table for `dev`.
pub fn install_forward_drop(node: &str, dev: &str) -> Result<()> {
    run_nft(&forward_drop_ruleset(node, dev)?)
        .with_context(|| format!("installing the forward-drop policy for {dev}"))?;
    tracing::info!(dev, table = %nft_table_name(node)?, "forwarded packets from {dev} are dropped (nftables)");
    Ok(())
}

/// Deletes the node's table; a missing table is not an error.
pub fn remove_forward_drop(node: &str) -> Result<()> {
    let table = nft_table_name(node)?;
    run_nft(&format!("table inet {table}\ndelete table inet {table}\n"))
        .with_context(|| format!("deleting the nftables table inet {table}"))?;
    tracing::info!(table, "removed the forward-drop policy");
    Ok(())
}

/// Everything above, in order, for an agent about to attach to `dev`.
pub fn prepare(node: &str, dev: &str, snat: PortRange) -> Result<()> {
    check_snat_against_host(snat)?;
    reserve_ports(snat)?;
    // the drop policy goes in before forwarding is switched on
    install_forward_drop(node, dev)?;
    set_forwarding(dev, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: u16, b: u16) -> PortRange {
        PortRange::new(a, b).unwrap()
    }

    #[test]
    fn overlap_is_refused_with_both_ranges_named() {
        let local = parse_local_port_range("32768\t60999\n").unwrap();
        assert_eq!(local, r(32768, 60999));
        let err = check_snat_range(r(40000, 49999), local)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("40000-49999") && err.contains("32768-60999"),
            "{err}"
        );
        assert!(err.contains("net.ipv4.ip_local_port_range"), "{err}");
        // touching edges overlap, neighbours do not
        assert!(check_snat_range(r(60999, 61000), local).is_err());
        assert!(check_snat_range(r(20000, 32768), local).is_err());
        check_snat_range(r(61000, 65535), local).unwrap();
        check_snat_range(r(10000, 32767), local).unwrap();
    }

    #[test]
    fn local_port_range_parse_errors() {
        assert!(parse_local_port_range("").is_err());
        assert!(parse_local_port_range("1 2 3").is_err());
        assert!(parse_local_port_range("9 1").is_err());
        assert!(PortRange::new(5, 4).is_err());
    }

    #[test]
    fn reserved_ports_merge_keeps_others() {
        assert_eq!(
            merge_reserved_ports("\n", r(61000, 65000)).unwrap(),
            "61000-65000"
        );
        assert_eq!(
            merge_reserved_ports("8404,3389\n", r(61000, 65000)).unwrap(),
            "3389,8404,61000-65000"
        );
        // overlapping and adjacent ranges join, as the kernel prints them
        assert_eq!(
            merge_reserved_ports("60000-61500,65001", r(61000, 65000)).unwrap(),
            "60000-65001"
        );
        assert_eq!(
            merge_reserved_ports("61000-65000", r(61000, 65000)).unwrap(),
            "61000-65000"
        );
        assert_eq!(
            merge_reserved_ports("65535", r(65534, 65535)).unwrap(),
            "65534-65535"
        );
        assert!(merge_reserved_ports("80,http", r(1, 2)).is_err());
    }

    #[test]
    fn ruleset_names_table_and_device() {
        let s = forward_drop_ruleset("lb-1.a", "veth0").unwrap();
        assert!(s.contains("table inet lbd_lb_1_a {"), "{s}");
        assert!(s.contains("delete table inet lbd_lb_1_a\n"), "{s}");
        assert!(s.contains("hook forward"), "{s}");
        assert!(s.contains("iifname \"veth0\""), "{s}");
        assert!(s.contains("drop"), "{s}");
        assert!(forward_drop_ruleset("lb1", "eth0\" accept").is_err());
        assert!(forward_drop_ruleset("lb1", "../all").is_err());
        assert!(forward_drop_ruleset("a/b", "eth0").is_err());
    }
}
