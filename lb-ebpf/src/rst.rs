//! Answering a TCP segment with a RST built in place (RFC 793, "Reset
//! Generation"): for a SYN with no backend up, and for a mid-stream segment we
//! hold no flow for. The host must not answer these itself: it owns the VIP and
//! would, but only after we dropped the packet, which we never pass.

use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_xdp_adjust_tail, programs::XdpContext,
};
use lb_common::{
    IPPROTO_TCP, csum,
    headers::{IPV4_MIN_HLEN, TCP_ACK, TCP_FIN, TCP_MIN_HLEN, TCP_RST, TCP_SYN, TcpHdr},
    reason,
};

use crate::{
    counters,
    packet::{Packet, ptr_at},
    verify,
};

const IP_DF: u16 = 0x4000;
const RST_TTL: u8 = 64;

/// Turns the packet into the RST that answers it and sends it back out.
#[inline(never)]
pub fn answer(ctx: &XdpContext, pkt: &Packet, reason: u32) -> u32 {
    // A host's TCP checks the checksum before it answers anything.
    if !segment_checksum_ok(ctx, pkt) {
        return counters::drop(reason::DROP_TCP_CHECKSUM);
    }
    // SAFETY: headers bounds-checked at parse time; the frame is resized only
    // after the last access through these pointers.
    unsafe {
        let ip = &mut *pkt.ip;
        let Some(th) = ptr_at::<TcpHdr>(ctx, pkt.l4_off) else {
            return counters::drop(reason);
        };
        let th = &mut *th;
        let in_flags = th.flags;
        let in_seq = u32::from_be(th.seq);
        let in_ack = th.ack_seq;
        let payload = (pkt.tot_len as u32)
            .wrapping_sub(IPV4_MIN_HLEN as u32)
            .wrapping_sub(th.header_len() as u32);

        let (seq, ack, flags) = if in_flags & TCP_ACK != 0 {
            (in_ack, 0u32, TCP_RST)
        } else {
            let mut len = payload;
            if in_flags & TCP_SYN != 0 {
                len += 1;
            }
            if in_flags & TCP_FIN != 0 {
                len += 1;
            }
            (0u32, in_seq.wrapping_add(len).to_be(), TCP_RST | TCP_ACK)
        };

        let eth = &mut *pkt.eth;
        let mac = eth.src;
        eth.src = eth.dst;
        eth.dst = mac;

        // Field by field: a struct literal would be built on the stack first.
        ip.ver_ihl = 0x45;
        ip.tos = 0;
        ip.tot_len = 40u16.to_be();
        ip.id = 0;
        ip.frag_off = IP_DF.to_be();
        ip.ttl = RST_TTL;
        ip.proto = IPPROTO_TCP;
        ip.check = 0;
        ip.saddr = pkt.daddr;
        ip.daddr = pkt.saddr;
        ip.check = !csum::fold(csum::sum_words(0, &*(pkt.ip as *const [u16; 10])));

        th.source = pkt.dport;
        th.dest = pkt.sport;
        th.seq = seq;
        th.ack_seq = ack;
        th.doff_res = ((TCP_MIN_HLEN / 4) as u8) << 4;
        th.flags = flags;
        th.window = 0;
        th.check = 0;
        th.urg_ptr = 0;
        let pseudo = csum::add32(csum::add32(0, pkt.daddr), pkt.saddr)
            + (IPPROTO_TCP as u16).to_be() as u64
            + (TCP_MIN_HLEN as u16).to_be() as u64;
        th.check = !csum::fold(csum::sum_words(
            pseudo,
            &*(th as *const TcpHdr as *const [u16; 10]),
        ));
    }

    let want = (pkt.l3_off + IPV4_MIN_HLEN + TCP_MIN_HLEN) as u64;
    if pkt.frame_len > want {
        let delta = (pkt.frame_len - want) as i32;
        // SAFETY: shrinking the frame; no packet pointer is used afterwards.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx as *mut _, -delta) } != 0 {
            return counters::drop(reason);
        }
    }
    counters::count(reason);
    xdp_action::XDP_TX
}

/// Whether the TCP checksum of `pkt` (pseudo-header included) is right.
#[inline(always)]
fn segment_checksum_ok(ctx: &XdpContext, pkt: &Packet) -> bool {
    let seg_len = (pkt.tot_len as usize).wrapping_sub(IPV4_MIN_HLEN);
    let pseudo = csum::add32(csum::add32(0, pkt.saddr), pkt.daddr)
        + (IPPROTO_TCP as u16).to_be() as u64
        + (seg_len as u16).to_be() as u64;
    verify::sums_to_ones(ctx, pkt.l4_off, seg_len, pseudo)
}
