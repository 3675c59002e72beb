//! Network-namespace labs for the system tests, the demo and the benches.
//!
//! A lab is a bridge in namespace `<prefix>-sw` with one veth per node:
//! LB nodes `<prefix>-lb1..` (192.0.2.2/24 and 198.51.100.2/24, VIP
//! 192.0.2.10/32), the clients `<prefix>-cl` (203.0.113.10.. as many
//! addresses as asked), backends `<prefix>-be1..` (198.51.100.11..). Every
//! bridge port runs the native XDP_PASS program `lab_pass` so XDP_TX on a
//! node's veth works, and every veth has checksum/segmentation offloads off.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use lb_tests::lab::{Lab, ServiceConfig};
//! let lab = Lab::datapath("dp", 3, 200)?;
//! lab.start_backend_servers(80)?;
//! let svc = ServiceConfig::tcp("web", lab.vip(), 80, lab.backend_configs(80, &[1, 2, 3]));
//! let config = lab.write_config("lbd.toml", &lab.lbd_config(vec![svc]))?;
//! let mut lbd = lab.start_lbd(1, &config)?;
//! let vip = std::net::SocketAddrV4::new(lab.vip(), 80);
//! lab.wait_for_service(&mut lbd, vip, std::time::Duration::from_secs(10))?;
//! let report = lab.spread(vip, 200, 3, &[])?;
//! # Ok(()) }
//! ```
//!
//! Time bounds of every test live in [`bounds`] (its doc says the rule);
//! tests of one node's I/O that need no switch use [`veth_pair::VethPair`]
//! and, to pin, [`bpffs::PrivateBpffs`].
//!
//! keepalived ([`keepalived`]) and HAProxy ([`haproxy`]) run in LB node
//! namespaces as the pair an operator migrates from; [`arp`] samples who
//! answers ARP for a VIP over a whole test.
//!
//! Two-node labs for VRRP: `Lab::builder("fo").lb_nodes(2).add_vips(false)`
//! (lb2 is 192.0.2.3 / 198.51.100.3; backends then reach the VIP network
//! on the link, so whichever node holds a VIP answers for it).
//!
//! lbd runs as node `<prefix>-lb<n>` (its namespace name), so pins, control
//! sockets and state files of concurrent labs never collide; it is looked
//! up next to the running executable (see [`binaries`]): build it first
//! with `cargo build -p lb-userspace`. Teardown (Drop, also on panic) kills
//! every process in the lab's namespaces, detaches `lab_pass`, removes
//! `/sys/fs/bpf/lb/<node>`, `/run/lbd/<node>.sock`, `.lock` and `.health`, `/var/lib/lbd/<node>.state`,
//! the namespaces and the scratch directory. A new lab removes leftovers of
//! labs whose process died.

pub mod admin_http;
mod apps;
pub mod arp;
pub mod binaries;
pub mod bounds;
pub mod bpffs;
pub mod browser;
pub mod child;
pub mod client_load;
pub mod counters;
pub mod flood;
pub mod haproxy;
pub mod http_load;
pub mod keepalived;
mod lbd;
pub mod names;
pub mod netns;
pub mod prometheus;
pub mod report;
pub mod rlimit;
mod setup;
pub mod sources;
pub mod topology;
pub mod veth_pair;
pub mod vrrp;
pub mod vrrp_pair;
mod xdp_peer;

pub use apps::{LabServer, connect_from, echo_all, echo_line, fetch_name, read_line};
pub use lbd::{
    AdminConfig, AdminUserConfig, BackendConfig, CheckConfig, LAB_SNAT_PORTS, Lbd, LbdConfig,
    NodeConfig, RedirectConfig, ServiceConfig, lab_snat_ports,
};
pub use report::{BackendTally, ChurnReport, HoldReport, HttpReport, ServerStats, SpreadReport};
pub use setup::{BPFFS_LB_DIR, Lab, LabBuilder};
pub use xdp_peer::SwitchPrograms;

/// Panics unless no namespace of lab `prefix` and no pin directory
/// `pin_dir` remain: the end of every lab test, after its teardown.
pub fn assert_nothing_left(prefix: &str, pin_dir: &std::path::Path) {
    let left: Vec<String> = netns::list()
        .expect("listing network namespaces")
        .into_iter()
        .filter(|name| name.starts_with(&format!("{prefix}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(
        !pin_dir.exists(),
        "pins left behind in {}",
        pin_dir.display()
    );
}
