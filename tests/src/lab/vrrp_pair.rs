//! A two-node VRRP pair of lbd agents in a lab, for tests that kill,
//! restart and disturb them again and again: lb1 (192.0.2.2, priority 101)
//! and lb2 (192.0.2.3, priority 100), one instance over unicast with 1 s
//! adverts, holding the lab's VIP, whose TCP service on port 80 spreads
//! over every backend (`lab-server`s, which echo).

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::lbd::{Lbd, ServiceConfig};
use super::setup::Lab;
use super::vrrp::{self, InstanceView, instance, master_down};
use crate::packet::Mac;

/// The instance name in both configs.
pub const PAIR_INSTANCE: &str = "lb_vip";
pub const PAIR_VRID: u8 = 52;
/// lb1's and lb2's priorities.
pub const PAIR_PRIORITY: [u8; 2] = [101, 100];
pub const PAIR_ADVERT: Duration = Duration::from_secs(1);
pub const PAIR_PORT: u16 = 80;
/// How long an agent may take from its start to answering status with its
/// instance (loading and attaching the XDP program included).
pub const AGENT_START: Duration = Duration::from_secs(20);

/// The lab and its two agents.
pub struct VrrpPair {
    /// First, so the agents die (and print their logs on a panic) before
    /// the lab removes their directory.
    agents: [Option<Lbd>; 2],
    pub lab: Lab,
    configs: [PathBuf; 2],
    /// lb1's and lb2's MACs, as ARP answers name them.
    pub macs: [Mac; 2],
}

impl VrrpPair {
    /// Builds the lab (`clients` client addresses), starts the backend
    /// servers and writes both configs; no agent runs yet.
    pub fn new(hint: &str, clients: usize, preempt: bool) -> Result<VrrpPair> {
        let lab = Lab::builder(hint)
            .lb_nodes(2)
            .add_vips(false)
            .client_addrs(clients)
            .build()?;
        lab.start_backend_servers(PAIR_PORT)?;
        let vip = lab.vip();
        let service =
            ServiceConfig::tcp("web", vip, PAIR_PORT, lab.backend_configs(PAIR_PORT, &[]));
        let mut instance = lab.vrrp_config(PAIR_INSTANCE, PAIR_VRID, &[vip], &PAIR_PRIORITY);
        instance.preempt = preempt;
        let mut config = lab.lbd_config(vec![service]);
        config.vrrp.push(instance);
        // One file would do; two keep each agent's config next to its log.
        let configs = [
            lab.write_config("lb1.toml", &config)?,
            lab.write_config("lb2.toml", &config)?,
        ];
        let macs = [lab.mac("lb1")?, lab.mac("lb2")?];
        Ok(VrrpPair {
            agents: [None, None],
            lab,
            configs,
            macs,
        })
    }

    /// The VIP's service.
    pub fn target(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.lab.vip(), PAIR_PORT)
    }

    /// lbd's node name for `n` (1 or 2).
    pub fn node(&self, n: usize) -> String {
        self.lab.lb_node_name(n)
    }

    /// Starts node `n`'s agent and waits until its status shows the
    /// instance; returns that view and how long it took.
    pub fn start(&mut self, n: usize) -> Result<(InstanceView, Duration)> {
        let started = Instant::now();
        self.agents[n - 1] = Some(self.lab.start_lbd(n, &self.configs[n - 1])?);
        let node = self.node(n);
        let agent = self.agents[n - 1].as_mut().expect("just started");
        let (view, _) = vrrp::poll(
            &format!("the status of {node}"),
            AGENT_START,
            Duration::from_millis(20),
            || match instance(&node, PAIR_INSTANCE) {
                Ok(view) => Ok(Some(view)),
                Err(e) => {
                    agent.check_running()?;
                    Err(e)
                }
            },
        )
        .with_context(|| format!("lb{n}'s log ends with:\n{}", agent.log_tail(30)))?;
        Ok((view, started.elapsed()))
    }

    /// Node `n`'s instance as its agent reports it.
    pub fn view(&self, n: usize) -> Result<InstanceView> {
        instance(&self.node(n), PAIR_INSTANCE)
    }

    /// The running agent of node `n`.
    pub fn agent(&mut self, n: usize) -> Result<&mut Lbd> {
        self.agents[n - 1]
            .as_mut()
            .with_context(|| format!("lb{n}'s agent does not run"))
    }

    /// The log of node `n`'s current (or last killed) agent run.
    pub fn log(&self, n: usize) -> String {
        self.agents[n - 1]
            .as_ref()
            .map(Lbd::log)
            .unwrap_or_else(|| {
                std::fs::read_to_string(self.lab.dir().join(format!("lb{n}-lbd.log")))
                    .unwrap_or_default()
            })
    }

    /// Waits until node `n`'s instance satisfies `done`; fails quoting the
    /// agent's log.
    pub fn wait(
        &mut self,
        n: usize,
        what: &str,
        bound: Duration,
        done: impl Fn(&InstanceView) -> bool,
    ) -> Result<(InstanceView, Duration)> {
        let node = self.node(n);
        vrrp::wait_for_instance(&node, PAIR_INSTANCE, bound, done).with_context(|| {
            format!(
                "lb{n}: {what}; its log ends with:\n{}",
                self.agents[n - 1]
                    .as_ref()
                    .map(|a| a.log_tail(30))
                    .unwrap_or_default()
            )
        })
    }

    /// lb1 first, lb2 once lb1's VRRP runs, so lb1's master-down timer
    /// runs out first and it is elected; waits until lb1 is master and lb2
    /// its backup.
    pub fn elect(&mut self) -> Result<()> {
        self.start(1)?;
        self.start(2)?;
        let bound = 2 * master_down(PAIR_PRIORITY[0], PAIR_ADVERT) + Duration::from_secs(1);
        self.wait(1, "becomes master", bound, InstanceView::is_master)?;
        let lb1 = super::topology::lb_front_addr(1);
        self.wait(2, "backup of lb1", bound, |v| {
            v.is_backup() && v.master == Some(lb1)
        })?;
        Ok(())
    }

    /// The one node whose agent says master; fails when none or both do.
    pub fn master(&self) -> Result<usize> {
        let masters: Vec<usize> = (1..=2)
            .filter(|&n| self.agents[n - 1].is_some())
            .filter(|&n| self.view(n).is_ok_and(|v| v.is_master()))
            .collect();
        match masters.as_slice() {
            [one] => Ok(*one),
            _ => bail!("expected one master, found {masters:?}"),
        }
    }

    /// SIGKILL to node `n`'s agent, reaped at once; returns when it was
    /// sent. The pinned XDP program stays, answering for the VIP until the
    /// dead agent's lease runs out.
    pub fn kill(&mut self, n: usize) -> Result<Instant> {
        let agent = self.agent(n)?;
        // SAFETY: our own child, not yet reaped (the slot still holds it).
        if unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) } != 0 {
            bail!(
                "could not kill lb{n}'s agent: {}",
                std::io::Error::last_os_error()
            );
        }
        let at = Instant::now();
        agent.stop(Duration::from_secs(5))?;
        Ok(at)
    }

    /// Stops both agents and tears the lab down; fails when anything is
    /// left behind.
    pub fn finish(mut self) -> Result<()> {
        let prefix = self.lab.prefix().to_string();
        let pins = [self.lab.lbd_pin_dir(1), self.lab.lbd_pin_dir(2)];
        self.agents = [None, None];
        self.lab.teardown()?;
        for pin in &pins {
            super::assert_nothing_left(&prefix, pin);
        }
        Ok(())
    }
}
