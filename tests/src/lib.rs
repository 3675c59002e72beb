//! Root-only integration helpers: network-namespace labs and the programs
//! that run in them, packet builders, the XDP test-run harness, and the
//! benchmark's report.

pub mod bench;
pub mod lab;
pub mod packet;
pub mod xdp_harness;
