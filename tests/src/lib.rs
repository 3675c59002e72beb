//! Root-only integration helpers: packet builders, the XDP test-run harness.

pub mod packet;
pub mod xdp_harness;
