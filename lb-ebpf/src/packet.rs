//! Bounds-checked access to the frame and the parsed view of one packet.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use lb_common::headers::{EthHdr, Ipv4Hdr};

/// A pointer to a `T` at `offset` in the frame, if the whole `T` lies inside it.
/// Every access to packet memory goes through here (the verifier's rule).
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// What the program learned about an IPv4 packet with a plain 20-byte header
/// and a valid TCP/UDP/ICMP header. Pointers stay valid until the frame is
/// resized.
pub struct Packet {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    /// Offset of the L4 header (right after the 20-byte IPv4 header). Header
    /// pointers are re-derived through `ptr_at` where they are written: the
    /// verifier does not carry a range across spills and merged paths.
    pub l4_off: usize,
    /// Offset of the IPv4 header in the frame: 14, or 18 with an 802.1Q tag.
    pub l3_off: usize,
    pub saddr: u32,
    pub daddr: u32,
    /// Network order.
    pub sport: u16,
    /// Network order.
    pub dport: u16,
    pub proto: u8,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// IPv4 total length, host order.
    pub tot_len: u16,
    /// Whole frame length in bytes.
    pub frame_len: u64,
    pub ifindex: u32,
}
