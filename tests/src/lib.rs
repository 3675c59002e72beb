//! Root-only integration helpers: network-namespace labs and the programs
//! that run in them, packet builders, the XDP test-run harness, the
//! benchmark's report, and the systemd VM.

pub mod bench;
pub mod lab;
pub mod packet;
pub mod peer_bench;
pub mod vm;
pub mod xdp_addresses;
pub mod xdp_harness;
