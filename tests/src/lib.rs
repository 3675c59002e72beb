//! Root-only integration helpers: packet builders, the XDP test-run harness,
//! and the benchmark's report.

pub mod bench;
pub mod packet;
pub mod xdp_harness;
