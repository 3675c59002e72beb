//! Next hop toward a backend from the kernel's FIB. The lookup never resolves
//! neighbours: the agent keeps managed neighbour entries for backends and
//! gateways so NO_NEIGH stays an exception.

use core::mem::size_of;

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams},
    helpers::generated::bpf_fib_lookup,
    programs::XdpContext,
};
use lb_common::{Flow, REFRESH_NS, reason};

use crate::{
    maps::{HOP_CACHE, SCRATCH},
    packet::Packet,
};

const AF_INET: u8 = 2;

/// Looks up the route from `src` to `dst` (network order) for a packet like
/// `pkt` (protocol, length for the MTU check) entering on the ingress interface,
/// and stores the next hop's MACs and the egress interface in `out`. Returns
/// 0, or the drop reason (a plain u32: BPF calls take at most five registers).
#[inline(never)]
pub fn next_hop(ctx: &XdpContext, src: u32, dst: u32, pkt: &Packet, out: &mut Flow) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return reason::DROP_FIB_FAILED;
    };
    // SAFETY: this CPU's scratch row; a plain C struct of integers.
    let p: &mut FibParams = unsafe { &mut (*scratch).fib };
    zero(p);
    p.family = AF_INET;
    p.l4_protocol = pkt.proto;
    p.__bindgen_anon_1.tot_len = pkt.tot_len;
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.__bindgen_anon_3.ipv4_src = src;
    p.__bindgen_anon_4.ipv4_dst = dst;
    // SAFETY: `p` is a valid, writable bpf_fib_lookup of the size passed.
    let ret = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            p as *mut FibParams,
            size_of::<FibParams>() as i32,
            0,
        )
    };
    if ret == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        out.dst_mac = p.dmac;
        out.src_mac = p.smac;
        out.ifindex = p.ifindex;
        0
    } else if ret == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        reason::DROP_FIB_NO_NEIGH
    } else {
        reason::DROP_FIB_FAILED
    }
}

/// Clears the request with 32-bit stores (its alignment is 4). `zeroed()` would be a call
/// to `memset` in BPF: a frame below `next_hop`, which the 6.1 verifier
/// charges 32 bytes of the 512-byte stack of the whole call chain.
#[inline(always)]
fn zero(p: &mut FibParams) {
    const WORDS: usize = size_of::<FibParams>() / 4;
    const _: () = assert!(size_of::<FibParams>() == WORDS * 4);
    const _: () = assert!(core::mem::align_of::<FibParams>() >= 4);
    let words = (p as *mut FibParams).cast::<u32>();
    for i in 0..WORDS {
        // SAFETY: within the request, which is plain integers. Volatile so
        // the stores are not merged back into a `memset` call.
        unsafe { words.add(i).write_volatile(0) };
    }
}

/// [`next_hop`] toward backend `backend_id`, answered from this CPU's cache
/// while it is younger than `REFRESH_NS`.
#[inline(never)]
pub fn next_hop_cached(
    ctx: &XdpContext,
    backend_id: u32,
    dst: u32,
    pkt: &Packet,
    out: &mut Flow,
) -> u32 {
    let now = out.last_seen_ns;
    let Some(entry) = HOP_CACHE.get_ptr_mut(backend_id) else {
        return next_hop(ctx, out.nat_src_ip, dst, pkt, out);
    };
    // SAFETY: this CPU's slot.
    let c = unsafe { &mut *entry };
    if c.expires_ns > now && c.src_ip == out.nat_src_ip && c.ifindex != 0 {
        out.dst_mac = c.dst_mac;
        out.src_mac = c.src_mac;
        out.ifindex = c.ifindex;
        return 0;
    }
    let err = next_hop(ctx, out.nat_src_ip, dst, pkt, out);
    if err == 0 {
        c.dst_mac = out.dst_mac;
        c.src_mac = out.src_mac;
        c.ifindex = out.ifindex;
        c.src_ip = out.nat_src_ip;
        c.expires_ns = now + REFRESH_NS;
    } else {
        c.ifindex = 0;
    }
    err
}
