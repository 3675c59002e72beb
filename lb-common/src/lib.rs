//! Types and pure helpers shared by the XDP program (`lb-ebpf`) and the agent
//! (`lbd`). Everything here is `#![no_std]`, `#[repr(C)]` and plain data so the
//! same definitions describe the BPF maps on both sides, and so the packet
//! arithmetic (checksums, hashes) is unit-tested on the host.
//!
//! Byte order: addresses and ports inside map keys and values are kept in
//! network byte order, exactly as they sit in the packet, so the data path never
//! swaps bytes. The agent converts at the edge (`u32::from(Ipv4Addr).to_be()`).
#![no_std]

pub mod csum;
pub mod hash;
pub mod headers;
pub mod maps;
pub mod policy;
pub mod reason;

pub use maps::*;

/// Bumped whenever a map's key/value layout or meaning changes. Pins live under
/// `/sys/fs/bpf/lb/<node>/v<LAYOUT_VERSION>/`, so an agent never adopts maps of
/// another layout (aya does not check an existing pin's layout).
pub const LAYOUT_VERSION: u32 = 3;
