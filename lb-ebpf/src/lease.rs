//! The agent's lease on the addresses that move with VRRP. An agent killed
//! with -9 leaves this program running and the VIPs on the interface; once
//! its lease (renewed by its VRRP thread) runs out, the peer has taken over,
//! and this node must stop answering for those addresses: their IPv4 traffic
//! and the ARP requests for them are dropped here, so neither the program
//! nor the host's stack serves them any more.
//!
//! Cost on the common path: `settings[0]` is an array row (the JIT inlines
//! the lookup) and a compare; `local_addrs` is consulted only while the
//! lease is enforced and expired.

use aya_ebpf::programs::XdpContext;
use lb_common::{Settings, headers::ArpEthIpv4, local_addr_flags, reason};

use crate::{counters, maps::LOCAL_ADDRS, packet::ptr_at};

/// Whether the lease is enforced and over at `now` (no settings row: no).
#[inline(always)]
pub fn expired(settings: Option<&Settings>, now: u64) -> bool {
    match settings {
        Some(s) => s.lease_expired(now),
        None => false,
    }
}

/// Whether `addr` (network order) moves with VRRP.
#[inline(always)]
pub fn moves_with_vrrp(addr: u32) -> bool {
    // SAFETY: lookups only compare keys; the value is read at once.
    match unsafe { LOCAL_ADDRS.get(&addr) } {
        Some(flags) => *flags & local_addr_flags::VRRP != 0,
        None => false,
    }
}

/// An ARP frame whose ARP header starts at `l3_off`. Only requests for a
/// VRRP address are dropped while the lease is expired; replies, other
/// targets and anything that is not IPv4-over-Ethernet ARP go to the host
/// as before. A frame too short for the 28-byte header is passed too: the
/// kernel's ARP code drops truncated frames itself, so the host never
/// answers one.
#[inline(always)]
pub fn arp(ctx: &XdpContext, l3_off: usize, settings: Option<&Settings>, now: u64) -> u32 {
    if !expired(settings, now) {
        return counters::pass(reason::PASS_NOT_IPV4);
    }
    let Some(arp) = ptr_at::<ArpEthIpv4>(ctx, l3_off) else {
        return counters::pass(reason::PASS_NOT_IPV4);
    };
    // SAFETY: bounds-checked by ptr_at.
    let arp = unsafe { &*arp };
    if arp.is_ipv4_request() && moves_with_vrrp(arp.target_ip()) {
        return counters::drop(reason::ARP_LEASE_EXPIRED);
    }
    counters::pass(reason::PASS_NOT_IPV4)
}
