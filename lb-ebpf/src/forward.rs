//! Sending a packet along a known flow: rewrite addresses, ports and MACs,
//! fix checksums incrementally, and transmit.

use aya_ebpf::{bindings::BPF_NOEXIST, programs::XdpContext};
use lb_common::{
    Flow, IPPROTO_TCP, IPPROTO_UDP, REFRESH_NS, csum, direction,
    headers::{TcpHdr, UdpHdr},
    reason,
};

use crate::{
    closing, counters,
    egress::{relay_ipv4, transmit},
    fib,
    flowkey::flow_key,
    maps::FLOWS,
    packet::{Packet, ptr_at},
    syncookie,
};

/// Forwards a packet that hit `flows`. Follows the connection's close and,
/// about once a second, refreshes the entry's freshness, next hop and peer
/// entry.
#[inline(always)]
pub fn established(ctx: &XdpContext, pkt: &Packet, entry: *mut Flow, now: u64) -> u32 {
    // SAFETY: a live map value; fields are read and written individually, a
    // racing CPU can at worst write the same value.
    let f = unsafe { &mut *entry };
    if pkt.proto == IPPROTO_TCP && closing::concerns(pkt.tcp_flags, f) {
        closing::track(ctx, pkt, f, now);
    }
    if now.wrapping_sub(f.last_seen_ns) > REFRESH_NS {
        f.last_seen_ns = now;
        refresh(ctx, pkt, f, now);
    }
    // A connection accepted with a SYN cookie; every other pays this test.
    if f.seq_offset != 0 {
        syncookie::translate(ctx, pkt, f);
    }
    send(ctx, pkt, f)
}

/// The once-a-second upkeep of an established entry: re-learn the next hop
/// toward the backend, and re-create the peer entry if LRU evicted it (one of
/// a pair can go; without its peer the other direction would be cut).
#[inline(never)]
fn refresh(ctx: &XdpContext, pkt: &Packet, f: &mut Flow, now: u64) {
    if f.direction == direction::TO_BACKEND {
        // On failure the entry keeps its last good next hop.
        let _ = fib::next_hop(ctx, f.nat_src_ip, f.nat_dst_ip, pkt, f);
    }
    let peer_key = flow_key(
        f.nat_dst_ip,
        f.nat_src_ip,
        f.nat_dst_port,
        f.nat_src_port,
        pkt.proto,
    );
    // SAFETY: lookups only compare keys.
    if unsafe { FLOWS.get(&peer_key) }.is_some() {
        return;
    }
    // The peer carries packets back to this packet's sender.
    let mut peer = reply_entry(pkt, f.backend_id, f.service_id, f.state, now);
    peer.seq_offset = f.seq_offset;
    if f.direction == direction::TO_CLIENT {
        // Toward the backend the next hop comes from the FIB, not from the
        // frame (which came from the backend's side).
        peer.direction = direction::TO_BACKEND;
        if fib::next_hop(ctx, pkt.daddr, pkt.saddr, pkt, &mut peer) != 0 {
            return;
        }
    }
    let _ = FLOWS.insert(&peer_key, &peer, BPF_NOEXIST as u64);
}

/// [`send`] along a copy of the map entry at `entry`, taken at once (a
/// half-open entry, which a promotion on another CPU may remove). Not
/// inlined: the copy then lives in this frame, not in the program's main
/// frame that every call chain pays for (the 6.1 verifier sums them).
#[inline(never)]
pub fn send_copy(ctx: &XdpContext, pkt: &Packet, entry: *const Flow) -> u32 {
    // SAFETY: a live map value (RCU keeps it readable for this run).
    let f = unsafe { *entry };
    send(ctx, pkt, &f)
}

/// The TO_CLIENT entry answering the client packet `pkt`: replies go back to
/// the MAC the client's packet came from, out of the interface it came in on.
#[inline(always)]
pub fn reply_entry(pkt: &Packet, backend_id: u32, service_id: u32, state: u8, now: u64) -> Flow {
    // SAFETY: `eth` was bounds-checked at parse time and the frame not resized.
    let eth = unsafe { &*pkt.eth };
    Flow {
        nat_src_ip: pkt.daddr,
        nat_dst_ip: pkt.saddr,
        nat_src_port: pkt.dport,
        nat_dst_port: pkt.sport,
        dst_mac: eth.src,
        src_mac: eth.dst,
        ifindex: pkt.ifindex,
        backend_id,
        service_id,
        direction: direction::TO_CLIENT,
        state,
        fin: 0,
        _pad: 0,
        expect_ack: 0,
        seq_offset: 0,
        last_seen_ns: now,
    }
}

/// Rewrites the packet per `f` and transmits it: XDP_TX when it leaves by the
/// interface it came in on, else a redirect.
#[inline(always)]
pub fn send(ctx: &XdpContext, pkt: &Packet, f: &Flow) -> u32 {
    // SAFETY: all header pointers were bounds-checked at parse time and the
    // frame has not been resized since.
    unsafe {
        let ip = &mut *pkt.ip;
        // A relayed packet's TTL goes down by one, and none leaves with 0.
        if ip.ttl <= 1 {
            return counters::drop(reason::DROP_TTL_EXPIRED);
        }
        let addr_diff = relay_ipv4(ip, f);

        let l4_diff = csum::diff16(
            csum::diff16(addr_diff, pkt.sport, f.nat_src_port),
            pkt.dport,
            f.nat_dst_port,
        );
        if pkt.proto == IPPROTO_TCP {
            let Some(th) = ptr_at::<TcpHdr>(ctx, pkt.l4_off) else {
                return counters::drop(reason::DROP_MALFORMED_L4);
            };
            let th = &mut *th;
            th.source = f.nat_src_port;
            th.dest = f.nat_dst_port;
            th.check = csum::apply(th.check, l4_diff);
        } else if pkt.proto == IPPROTO_UDP {
            let Some(uh) = ptr_at::<UdpHdr>(ctx, pkt.l4_off) else {
                return counters::drop(reason::DROP_MALFORMED_L4);
            };
            let uh = &mut *uh;
            uh.source = f.nat_src_port;
            uh.dest = f.nat_dst_port;
            uh.check = csum::apply_udp(uh.check, l4_diff);
        }
        let eth = &mut *pkt.eth;
        eth.dst = f.dst_mac;
        eth.src = f.src_mac;
    }
    counters::account(f, pkt.frame_len);
    transmit(f.ifindex, pkt.ifindex)
}
