//! The lb agent `lbd`: loads the XDP program, keeps its maps in step with the
//! config, and (later) health checks, VRRP and the admin page.

pub mod admin;
pub mod agent;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod health;
pub mod ids;
pub mod import;
pub mod logging;
pub mod maglev;
pub mod paths;
pub mod vips;
pub mod vrrp;

/// The compiled eBPF objects, built by build.rs from the lb-ebpf crate.
pub mod objects {
    /// The production XDP program and its maps.
    pub static LB: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));
    /// Lab and benchmark programs (`lab_pass`, baselines); never loaded by lbd.
    pub static LAB: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-lab"));
}
