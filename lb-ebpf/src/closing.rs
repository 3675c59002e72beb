//! Following the close of a translated TCP connection, so its SNAT port is
//! free again as soon as the TCP state says so rather than after a timeout.
//!
//! A connection is closed once each direction has sent its FIN and the other
//! direction has acknowledged it (the last ACK of the close), or once a RST
//! passed. Each entry of the pair records its own direction's view
//! (`fin_flags`); the entry of the other direction is looked up only on the
//! few segments that move the close forward (a FIN, the ACK of the other
//! side's FIN, a RST), never on the segments of an open connection.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    Flow, direction, fin_flags, flow_state,
    headers::{IPV4_MIN_HLEN, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TcpHdr},
};

use crate::{
    flowkey::flow_key,
    maps::FLOWS,
    packet::{Packet, ptr_at},
};

/// Whether a segment on an established entry needs [`track`]: it carries FIN
/// or RST, or the connection is already closing. An open connection's
/// segments pay this one test.
#[inline(always)]
pub fn concerns(flags: u8, f: &Flow) -> bool {
    flags & (TCP_FIN | TCP_RST) != 0 || f.state != flow_state::ESTABLISHED
}

/// Moves the close of `f`'s connection forward for the segment `pkt`.
#[inline(always)]
pub fn track(ctx: &XdpContext, pkt: &Packet, f: &mut Flow, now: u64) {
    let Some(th) = ptr_at::<TcpHdr>(ctx, pkt.l4_off) else {
        return;
    };
    // SAFETY: bounds-checked by ptr_at; copied out here so the work below,
    // in its own frame, sees plain values (a packet pointer's bounds do not
    // survive the call).
    let th = unsafe { *th };
    step(pkt, f, &th, now);
}

#[inline(never)]
fn step(pkt: &Packet, f: &mut Flow, th: &TcpHdr, now: u64) {
    let flags = th.flags;
    if flags & TCP_RST != 0 {
        set_pair(pkt, f, flow_state::CLOSED, now);
        return;
    }
    if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        // The client opens a new connection on the same 5-tuple (as a host
        // may once its TIME_WAIT allows): the pair is open again, and its
        // SNAT port no longer free for a takeover. It is the backend's
        // handshake now, not ours: no sequence offset.
        f.seq_offset = 0;
        if let Some(peer) = FLOWS.get_ptr_mut(&peer_key(pkt, f)) {
            // SAFETY: a live map value, one field written.
            unsafe { (*peer).seq_offset = 0 };
        }
        set_pair(pkt, f, flow_state::ESTABLISHED, now);
        return;
    }
    if f.state == flow_state::CLOSED {
        // Late retransmissions change nothing.
        return;
    }
    let new_fin = flags & TCP_FIN != 0 && f.fin & fin_flags::SENT == 0;
    // `expect_ack` is in the peer's sequence space; a client of a SYN cookie
    // connection acknowledges in ours (`Flow::seq_offset`, 0 otherwise).
    let ack = if f.direction == direction::TO_BACKEND {
        u32::from_be(th.ack_seq).wrapping_add(f.seq_offset)
    } else {
        u32::from_be(th.ack_seq)
    };
    let acks_peer_fin = flags & TCP_ACK != 0
        && f.fin & (fin_flags::PEER_SENT | fin_flags::PEER_ACKED) == fin_flags::PEER_SENT
        && (ack.wrapping_sub(f.expect_ack) as i32) >= 0;
    if !new_fin && !acks_peer_fin {
        return;
    }
    let Some(peer) = FLOWS.get_ptr_mut(&peer_key(pkt, f)) else {
        return;
    };
    // SAFETY: a live map value; another CPU may write the same fields, and
    // at worst one close step is seen late (the agent's timeouts remain).
    let p = unsafe { &mut *peer };
    if new_fin {
        let payload = (pkt.tot_len as u32)
            .wrapping_sub(IPV4_MIN_HLEN as u32)
            .wrapping_sub(th.header_len() as u32);
        f.fin |= fin_flags::SENT;
        f.state = flow_state::CLOSING;
        p.expect_ack = u32::from_be(th.seq).wrapping_add(payload).wrapping_add(1);
        p.fin |= fin_flags::PEER_SENT;
        if p.state == flow_state::ESTABLISHED {
            p.state = flow_state::CLOSING;
        }
    }
    if acks_peer_fin {
        f.fin |= fin_flags::PEER_ACKED;
        if p.fin & fin_flags::PEER_ACKED != 0 {
            f.state = flow_state::CLOSED;
            p.state = flow_state::CLOSED;
            f.last_seen_ns = now;
            p.last_seen_ns = now;
        }
    }
}

/// Puts both entries of the pair into `state` (CLOSED after a RST,
/// ESTABLISHED again for a new connection on the same tuple).
#[inline(always)]
fn set_pair(pkt: &Packet, f: &mut Flow, state: u8, now: u64) {
    if f.state == state && state == flow_state::CLOSED {
        return;
    }
    f.state = state;
    f.fin = 0;
    f.last_seen_ns = now;
    if let Some(peer) = FLOWS.get_ptr_mut(&peer_key(pkt, f)) {
        // SAFETY: a live map value, fields written individually.
        let p = unsafe { &mut *peer };
        p.state = state;
        p.fin = 0;
        p.last_seen_ns = now;
    }
}

/// The key of the other direction's entry: its packets come from where this
/// entry sends to, and go to the address this entry rewrites from.
#[inline(always)]
fn peer_key(pkt: &Packet, f: &Flow) -> lb_common::FlowKey {
    flow_key(
        f.nat_dst_ip,
        f.nat_src_ip,
        f.nat_dst_port,
        f.nat_src_port,
        pkt.proto,
    )
}
