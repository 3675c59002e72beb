//! ICMP errors quoting one of our translated packets are translated back along
//! the flow, so path-MTU discovery and unreachables reach the real endpoint
//! (a dropped "fragmentation needed" black-holes the connection).

use aya_ebpf::programs::XdpContext;
use lb_common::{
    Flow, IPPROTO_TCP, IPPROTO_UDP, csum, direction, flow_state,
    headers::{ICMP_HLEN, IPV4_MIN_HLEN, IcmpHdr, Ipv4Hdr},
    reason,
};

use crate::{
    counters,
    egress::{relay_ipv4, transmit},
    flowkey::flow_key,
    maps::{FLOWS, HALF_OPEN, LOCAL_ADDRS},
    packet::{Packet, ptr_at},
    parse::{SERVED, martian_source},
    verify,
};

#[inline(never)]
pub fn handle(ctx: &XdpContext, pkt: &Packet) -> u32 {
    let l4_off = pkt.l4_off;
    // Only errors addressed to a VIP or SNAT address are ours to translate;
    // everything else (an address that only moves with VRRP included) is
    // the host's, untouched.
    // SAFETY: lookups only compare keys.
    let ours = unsafe { LOCAL_ADDRS.get(&pkt.daddr) }.is_some_and(|f| *f & SERVED != 0);
    if !ours {
        return counters::pass(reason::PASS_NOT_OURS);
    }
    let Some(icmp) = ptr_at::<IcmpHdr>(ctx, l4_off) else {
        return counters::drop(reason::DROP_MALFORMED_L4);
    };
    // SAFETY: bounds-checked above.
    if !unsafe { (*icmp).is_error() } {
        return counters::pass(reason::PASS_NOT_OURS);
    }
    if martian_source(pkt.saddr) {
        return counters::drop(reason::DROP_MARTIAN_SOURCE);
    }
    // Conntrack's NAT checks an error's checksum before it translates one;
    // so do we, or the rewrite would hand a corrupt message a valid-looking
    // outer header. Bounded by the outer total length, never the padding.
    let icmp_len = (pkt.tot_len as usize).wrapping_sub(IPV4_MIN_HLEN);
    if !verify::sums_to_ones(ctx, l4_off, icmp_len, 0) {
        return counters::drop(reason::DROP_ICMP_CHECKSUM);
    }
    let inner_off = l4_off + ICMP_HLEN;
    // The quoted header and ports must lie inside the outer packet, not in
    // Ethernet padding after it.
    if inner_off + IPV4_MIN_HLEN + 8 > pkt.l3_off + pkt.tot_len as usize {
        return truncated(ours);
    }
    let (Some(inner), Some(ports)) = (
        ptr_at::<Ipv4Hdr>(ctx, inner_off),
        ptr_at::<[u16; 4]>(ctx, inner_off + IPV4_MIN_HLEN),
    ) else {
        return truncated(ours);
    };
    // SAFETY: bounds-checked above.
    let (inner_ip, inner_ports) = unsafe { (*inner, *ports) };
    if inner_ip.ver_ihl != 0x45 {
        return truncated(ours);
    }
    if inner_ip.proto != IPPROTO_TCP && inner_ip.proto != IPPROTO_UDP {
        return not_ours(ours);
    }
    // The quoted packet went one way; its flow entry for the other way says
    // how to translate toward whoever sent that quoted packet.
    let key = flow_key(
        inner_ip.daddr,
        inner_ip.saddr,
        inner_ports[1],
        inner_ports[0],
        inner_ip.proto,
    );
    // SAFETY: the value is copied out at once.
    let flow: Flow = match unsafe { FLOWS.get(&key) } {
        Some(f) => *f,
        None => match unsafe { HALF_OPEN.get(&key) } {
            Some(f) => *f,
            None => return not_ours(ours),
        },
    };

    // SAFETY: every pointer below was bounds-checked above and the frame is
    // not resized.
    unsafe {
        let q = &mut *inner;
        let qp = &mut *ports;
        let q_addr_diff = csum::diff32(
            csum::diff32(0, q.saddr, flow.nat_dst_ip),
            q.daddr,
            flow.nat_src_ip,
        );
        let q_check = csum::apply(q.check, q_addr_diff);
        // A quote of a segment we sent a client of a SYN cookie connection
        // carries our sequence number; the backend ignores an error whose
        // quoted number is outside its own window (Linux: "out of window
        // ICMP"), so it gets its own.
        let mut seq_diff = 0;
        // (A SYN_COOKIE half-open entry keeps another value there.)
        if flow.seq_offset != 0
            && flow.direction == direction::TO_BACKEND
            && flow.state != flow_state::SYN_COOKIE
        {
            // The sequence number is the quote's words 2 and 3, in network
            // order: as a native u32 (little-endian), word 2 is its low half.
            let old = qp[2] as u32 | (qp[3] as u32) << 16;
            let new = u32::from_be(old).wrapping_add(flow.seq_offset).to_be();
            qp[2] = new as u16;
            qp[3] = (new >> 16) as u16;
            seq_diff = csum::diff32(0, old, new);
        }
        let icmp_diff = csum::diff16(
            csum::diff16(
                csum::diff16(q_addr_diff + seq_diff, q.check, q_check),
                qp[0],
                flow.nat_dst_port,
            ),
            qp[1],
            flow.nat_src_port,
        );
        q.saddr = flow.nat_dst_ip;
        q.daddr = flow.nat_src_ip;
        q.check = q_check;
        qp[0] = flow.nat_dst_port;
        qp[1] = flow.nat_src_port;
        let ic = &mut *icmp;
        ic.check = csum::apply(ic.check, icmp_diff);

        let ip = &mut *pkt.ip;
        // Relayed like any packet of the flow: router semantics.
        if ip.ttl <= 1 {
            return counters::drop(reason::DROP_TTL_EXPIRED);
        }
        relay_ipv4(ip, &flow);

        let eth = &mut *pkt.eth;
        eth.dst = flow.dst_mac;
        eth.src = flow.src_mac;
    }
    counters::count(reason::TX_ICMP_TRANSLATED);
    transmit(flow.ifindex, pkt.ifindex)
}

#[inline(always)]
fn truncated(ours: bool) -> u32 {
    if ours {
        counters::drop(reason::DROP_MALFORMED_L4)
    } else {
        counters::pass(reason::PASS_NOT_OURS)
    }
}

#[inline(always)]
fn not_ours(ours: bool) -> u32 {
    if ours {
        counters::drop(reason::DROP_ICMP_NO_FLOW)
    } else {
        counters::pass(reason::PASS_NOT_OURS)
    }
}
