//! The smallest lab: two namespaces joined by one veth, for tests of one
//! node's I/O (maps, XDP attach and adopt, sysctls, nftables, neighbours,
//! raw VRRP and ARP sockets) that need no switch, clients or backends.
//!
//! Namespace `<prefix>-a` holds `veth0` (192.0.2.1/24), `<prefix>-b` holds
//! `veth1` (192.0.2.2/24); both links and `lo` are up. Drop kills whatever
//! runs in them and deletes them, also when the test panics; a new pair
//! removes the pairs of its hint whose process died.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{names, netns};

/// `veth0`, the interface of namespace `a`.
pub const A_IFACE: &str = "veth0";
/// `veth1`, the interface of namespace `b`.
pub const B_IFACE: &str = "veth1";
pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

pub struct VethPair {
    /// The name prefix of both namespaces, for [`super::assert_nothing_left`].
    pub prefix: String,
    pub a: String,
    pub b: String,
}

impl VethPair {
    /// Creates the pair; `hint` (lowercase letters, at most 6) names it.
    pub fn new(hint: &str) -> Result<VethPair> {
        if !names::valid_hint(hint) {
            bail!("lab hint {hint:?} must be 1 to 6 lowercase letters");
        }
        let prefix = names::fresh_prefix(hint);
        remove_stale_pairs(hint, &prefix);
        let pair = VethPair {
            a: format!("{prefix}-a"),
            b: format!("{prefix}-b"),
            prefix,
        };
        pair.build()
            .with_context(|| format!("could not build the veth pair {}", pair.prefix))?;
        Ok(pair)
    }

    fn build(&self) -> Result<()> {
        for ns in [&self.a, &self.b] {
            netns::run(Command::new("ip").args(["netns", "add", ns]))?;
        }
        netns::run(Command::new("ip").args([
            "-n", &self.a, "link", "add", A_IFACE, "type", "veth", "peer", "name", B_IFACE,
            "netns", &self.b,
        ]))?;
        for (ns, dev, addr) in [(&self.a, A_IFACE, A_ADDR), (&self.b, B_IFACE, B_ADDR)] {
            let cidr = format!("{addr}/24");
            netns::run(Command::new("ip").args(["-n", ns, "addr", "add", &cidr, "dev", dev]))?;
            netns::run(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]))?;
            netns::run(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
        }
        Ok(())
    }

    /// Routes `net` (CIDR) from `a` through `b`, so `a` has a gateway to
    /// resolve for addresses behind it.
    pub fn route_from_a_via_b(&self, net: &str) -> Result<()> {
        netns::run(Command::new("ip").args([
            "-n",
            &self.a,
            "route",
            "add",
            net,
            "via",
            &B_ADDR.to_string(),
        ]))?;
        Ok(())
    }

    /// Runs `program args..` inside `a` and returns its standard output.
    pub fn exec_in_a(&self, program: &str, args: &[&str]) -> Result<String> {
        let output = netns::run(netns::command_in(&self.a, program).args(args))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// A sysctl's value as namespace `a` sees it.
    pub fn sysctl_in_a(&self, key: &str) -> Result<String> {
        Ok(self.exec_in_a("sysctl", &["-n", key])?.trim().to_owned())
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            netns::kill_all_in(ns);
            if let Err(e) = netns::delete(ns) {
                eprintln!("could not delete namespace {ns}: {e:#}");
            }
        }
    }
}

/// Deletes the namespaces of pairs made with `hint` by a process that is
/// gone (killed before its teardown).
fn remove_stale_pairs(hint: &str, our_prefix: &str) {
    for name in netns::list().unwrap_or_default() {
        let Some((prefix, pid)) = names::parse(hint, &name) else {
            continue;
        };
        if names::is_stale(&prefix, pid, our_prefix) {
            eprintln!("removing namespace {name}, left behind by process {pid}, which is gone");
            netns::kill_all_in(&name);
            netns::delete(&name).ok();
        }
    }
}
