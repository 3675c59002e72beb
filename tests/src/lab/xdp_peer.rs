//! The XDP_PASS program on the switch side of every lab veth.
//!
//! A frame an XDP program sends with XDP_TX on a veth is delivered only when
//! the peer end runs a native-mode XDP program (measured here: GRO on the
//! peer queues frames for seconds, and a generic-mode program does not do
//! it). The bridge ports therefore carry `lab_pass` from
//! `lb_userspace::objects::LAB`. The links belong to this process: they live
//! as long as the [`SwitchPrograms`] value and detach when it is dropped (or
//! when the namespace goes).

use anyhow::{Context, Result};
use aya::Ebpf;
use aya::programs::{Xdp, XdpMode};

use super::netns;

const PROGRAM: &str = "lab_pass";

/// The loaded `lab_pass` and its links to the bridge ports.
pub struct SwitchPrograms {
    ebpf: Ebpf,
    ports: Vec<String>,
}

impl SwitchPrograms {
    /// Loads `lab_pass` and attaches it in native mode to each of `ports`,
    /// interfaces of namespace `switch_netns`.
    pub fn attach(switch_netns: &str, ports: &[String]) -> Result<SwitchPrograms> {
        let mut ebpf = Ebpf::load(lb_userspace::objects::LAB)
            .context("could not load the lab eBPF object (lb_userspace::objects::LAB)")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .with_context(|| format!("the lab object has no program {PROGRAM}"))?
            .try_into()
            .with_context(|| format!("{PROGRAM} is not an XDP program"))?;
        lb_userspace::dataplane::load::load_program(program)
            .with_context(|| format!("the kernel refused to load {PROGRAM}"))?;
        // Interface names resolve in the calling thread's namespace: attach
        // from a thread inside the switch namespace.
        netns::run_in(switch_netns, || -> Result<()> {
            for port in ports {
                program.attach(port, XdpMode::Driver).with_context(|| {
                    format!("could not attach {PROGRAM} in native mode to {port} in {switch_netns}")
                })?;
            }
            Ok(())
        })??;
        Ok(SwitchPrograms {
            ebpf,
            ports: ports.to_vec(),
        })
    }

    /// The bridge ports that carry the program.
    pub fn ports(&self) -> &[String] {
        &self.ports
    }

    /// Detaches every link now (dropping does the same).
    pub fn detach(self) {
        drop(self.ebpf);
    }
}
