//! The lb XDP program: full-NAT layer-4 load balancing with a consistent hash
//! of the client's address. See docs/architecture.md, "The path of a packet";
//! the outline of one packet's life is in `process`.
#![no_std]
#![no_main]

mod counters;
mod fib;
mod flowkey;
mod forward;
mod icmp;
mod lease;
mod maps;
mod newflow;
mod packet;
mod rst;

use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_ktime_get_coarse_ns, macros::xdp,
    programs::XdpContext,
};
use lb_common::{
    IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, ServiceKey,
    headers::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, EthHdr, IP_MF, IP_OFFSET,
        IPV4_MIN_HLEN, Ipv4Hdr, TCP_MIN_HLEN, TcpHdr, UDP_HLEN, UdpHdr, VLAN_HLEN, VlanHdr,
    },
    local_addr_flags, reason,
};

use crate::{
    flowkey::flow_key,
    maps::{FLOWS, HALF_OPEN, LOCAL_ADDRS, SERVICES, SETTINGS},
    packet::{Packet, ptr_at},
};

#[xdp]
pub fn lb(ctx: XdpContext) -> u32 {
    process(&ctx)
}

#[inline(always)]
fn process(ctx: &XdpContext) -> u32 {
    // L2: Ethernet and at most one VLAN tag, which stays in place.
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return counters::drop(reason::DROP_MALFORMED_L2);
    };
    // SAFETY: bounds-checked by ptr_at.
    let mut ether_type = unsafe { (*eth).proto };
    let mut l3_off = ETH_HLEN;
    if ether_type == ETH_P_8021Q.to_be() || ether_type == ETH_P_8021AD.to_be() {
        let Some(vlan) = ptr_at::<VlanHdr>(ctx, ETH_HLEN) else {
            return counters::drop(reason::DROP_MALFORMED_L2);
        };
        ether_type = unsafe { (*vlan).proto };
        l3_off = ETH_HLEN + VLAN_HLEN;
    }
    if ether_type != ETH_P_IP.to_be() {
        if ether_type == ETH_P_ARP.to_be() {
            // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
            let now = unsafe { bpf_ktime_get_coarse_ns() };
            return lease::arp(ctx, l3_off, SETTINGS.get(0), now);
        }
        return counters::pass(reason::PASS_NOT_IPV4);
    }

    // L3: validate before trusting anything; the kernel would drop these too.
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3_off) else {
        return counters::drop(reason::DROP_MALFORMED_IP);
    };
    // SAFETY: bounds-checked by ptr_at.
    let iph = unsafe { &*ip };
    let frame_len = ctx.data_end() - ctx.data();
    let l3_avail = frame_len - l3_off;
    let ihl = iph.header_len();
    let tot_len = u16::from_be(iph.tot_len) as usize;
    if iph.version() != 4
        || ihl < IPV4_MIN_HLEN
        || ihl > l3_avail
        || tot_len < ihl
        || tot_len > l3_avail
    {
        return counters::drop(reason::DROP_MALFORMED_IP);
    }
    // The agent's lease (VRRP mode): once over, the addresses that move with
    // VRRP are the peer's; nothing to them is served or passed, fragments
    // and ICMP included.
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if lease::expired(SETTINGS.get(0), now) && lease::moves_with_vrrp(iph.daddr) {
        return counters::drop(reason::LEASE_EXPIRED);
    }

    let frag = u16::from_be(iph.frag_off);
    if frag & (IP_MF | IP_OFFSET) != 0 {
        return ours_or_pass(iph.daddr, reason::DROP_FRAGMENT);
    }
    if ihl != IPV4_MIN_HLEN {
        return ours_or_pass(iph.daddr, reason::DROP_IP_OPTIONS);
    }

    // L4.
    let l4_off = l3_off + IPV4_MIN_HLEN;
    let l4_len = tot_len - IPV4_MIN_HLEN;
    let (sport, dport, tcp_flags) = match iph.proto {
        IPPROTO_TCP => {
            let Some(th) = ptr_at::<TcpHdr>(ctx, l4_off) else {
                return counters::drop(reason::DROP_MALFORMED_L4);
            };
            // SAFETY: bounds-checked by ptr_at.
            let th = unsafe { &*th };
            let doff = th.header_len();
            if doff < TCP_MIN_HLEN || doff > l4_len {
                return counters::drop(reason::DROP_MALFORMED_L4);
            }
            (th.source, th.dest, th.flags)
        }
        IPPROTO_UDP => {
            let Some(uh) = ptr_at::<UdpHdr>(ctx, l4_off) else {
                return counters::drop(reason::DROP_MALFORMED_L4);
            };
            // SAFETY: bounds-checked by ptr_at.
            let uh = unsafe { &*uh };
            let ulen = u16::from_be(uh.len) as usize;
            if ulen < UDP_HLEN || ulen > l4_len {
                return counters::drop(reason::DROP_MALFORMED_L4);
            }
            (uh.source, uh.dest, 0)
        }
        IPPROTO_ICMP => (0, 0, 0),
        _ => return counters::pass(reason::PASS_NOT_OURS),
    };
    let pkt = Packet {
        eth,
        ip,
        l4_off,
        l3_off,
        saddr: iph.saddr,
        daddr: iph.daddr,
        sport,
        dport,
        proto: iph.proto,
        tcp_flags,
        tot_len: tot_len as u16,
        frame_len: frame_len as u64,
        ifindex: ctx.ingress_ifindex() as u32,
    };
    if pkt.proto == IPPROTO_ICMP {
        return icmp::handle(ctx, &pkt);
    }

    // 1. A known flow, either direction: one lookup.
    let key = flow_key(pkt.saddr, pkt.daddr, sport, dport, pkt.proto);
    if let Some(entry) = FLOWS.get_ptr_mut(&key) {
        return forward::established(ctx, &pkt, entry, now);
    }

    // 2. Addressed to a service: new connection, handshake, or stray segment.
    let skey = ServiceKey {
        vip: pkt.daddr,
        port: dport,
        proto: pkt.proto,
        _pad: 0,
    };
    // SAFETY: map values stay valid for the whole program run (RCU); the
    // agent replaces a service row whole, never in place.
    if let Some(svc) = unsafe { SERVICES.get(&skey) } {
        return newflow::to_service(ctx, &pkt, &key, svc, now);
    }

    // 3. A backend answering inside the SNAT port range: a handshake reply, or
    // nothing we know, which must not reach the host's stack (it would RST).
    // Looked up again rather than kept from the lease check: holding the
    // pointer across the flow and service lookups costs spills on every path.
    if let Some(s) = SETTINGS.get(0) {
        let port = u16::from_be(dport);
        if port >= s.snat_port_min && port <= s.snat_port_max {
            if pkt.proto == IPPROTO_TCP {
                if let Some(h) = HALF_OPEN.get_ptr(&key) {
                    return forward::send_copy(ctx, &pkt, h);
                }
            }
            // SAFETY: lookups only compare keys.
            if let Some(flags) = unsafe { LOCAL_ADDRS.get(&pkt.daddr) } {
                if *flags & local_addr_flags::SNAT != 0 {
                    return counters::drop(reason::DROP_REPLY_NO_FLOW);
                }
            }
        }
    }
    counters::pass(reason::PASS_NOT_OURS)
}

/// Fragments and IP options: dropped when addressed to one of our VIP/SNAT
/// addresses (we cannot steer them and the host must not see them), else the
/// host's business (an address that only moves with VRRP is the host's).
#[inline(always)]
fn ours_or_pass(daddr: u32, drop_reason: u32) -> u32 {
    // SAFETY: lookups only compare keys.
    if unsafe { LOCAL_ADDRS.get(&daddr) }.is_some_and(|f| *f & SERVED != 0) {
        counters::drop(drop_reason)
    } else {
        counters::pass(reason::PASS_NOT_OURS)
    }
}

/// `local_addrs` flags of the addresses the program serves itself.
const SERVED: u32 = local_addr_flags::VIP | local_addr_flags::SNAT;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[allow(unused)]
const _: u32 = xdp_action::XDP_PASS;
