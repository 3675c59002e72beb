//! SYN cookies: under a SYN flood the program answers SYNs itself, with the
//! kernel's cookie as its ISN, and spends a half-open entry and a SNAT port
//! only on a client that proves, by acknowledging the cookie, that it owns
//! its address. Then it opens the backend connection with the client's ISN,
//! completes the backend's handshake itself, and translates sequence numbers
//! for the life of the connection (docs/architecture.md, "SYN cookies").
//!
//! The cookie is the kernel's (`bpf_tcp_raw_gen_syncookie_ipv4`, 6.0+), so
//! its secret, clock and MSS table are the kernel's own. The client is not
//! offered SACK, timestamps or window scaling: a cookie cannot remember them,
//! and the backend, whose SYN comes from us, must not be offered them either.

use aya_ebpf::{
    bindings::{iphdr, tcphdr},
    helpers::generated::{
        bpf_ktime_get_coarse_ns, bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv4,
        bpf_xdp_adjust_tail,
    },
    programs::XdpContext,
};
use lb_common::{
    Flow, FlowKey, IPPROTO_TCP, csum, direction, flow_state,
    headers::{EthHdr, Ipv4Hdr, TCP_ACK, TCP_RST, TCP_SYN, TcpHdr},
    reason, settings_flags,
};

use crate::{
    counters,
    egress::transmit,
    flowkey::flow_key,
    maps::{FLOWS, HALF_OPEN, SCRATCH, SETTINGS},
    packet::{Packet, ptr_at},
};

/// The kernel's cookie MSS table (net/ipv4/syncookies.c, `msstab`), indexed
/// by the value a cookie encodes in its low bits.
const MSSTAB: [u16; 4] = [536, 1300, 1440, 1460];
/// The low bits of a cookie that hold hash + MSS index (`COOKIEBITS`); the
/// high bits hold the minute counter.
const COOKIE_MASK: u32 = (1 << 24) - 1;
/// RFC 9293's default MSS, for a cookie whose index cannot be recovered.
const DEFAULT_MSS: u16 = 536;
/// Our receive window in the SYN-ACK: no window scaling is offered, so the
/// largest unscaled one. The backend's own window takes over with its first
/// segment.
const SYNACK_WINDOW: u16 = 65535;
const TTL: u8 = 64;
const IP_DF: u16 = 0x4000;
const ONE_SECOND_NS: u64 = 1_000_000_000;

/// Whether a SYN that would open a handshake must get a cookie instead:
/// `syn_cookies = "always"`, or (auto) more handshakes this CPU saw begin
/// in the current one-second window are still incomplete than
/// `syn_cookie_rate`. A busy real client completes its handshakes within a
/// round trip, so however fast it connects it never trips this; spoofed
/// SYNs never complete and do. Per CPU, so a flood costs no shared cache
/// line (RSS keeps a connection's SYN and ACK on one queue, and spreads a
/// spoofed flood over them). Not inlined: its branches would multiply the states
/// the verifier walks through the rest of `open` (about 550,000
/// instructions more).
#[inline(never)]
pub fn pressure(now: u64) -> bool {
    let Some(s) = SETTINGS.get(0) else {
        return false;
    };
    if s.flags & settings_flags::SYN_COOKIES_ALWAYS != 0 {
        return true;
    }
    let rate = s.syn_cookie_rate;
    if s.flags & settings_flags::SYN_COOKIES_NEVER != 0 || rate == 0 {
        return false;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch row.
    let sc = unsafe { &mut *scratch };
    if now.wrapping_sub(sc.window_start_ns) >= ONE_SECOND_NS {
        sc.window_start_ns = now;
        sc.window_pending = 0;
    }
    sc.window_pending += 1;
    sc.window_pending > rate
}

/// A handshake completed (the client's ACK promoted it, or carried a valid
/// cookie): it no longer counts towards [`pressure`].
#[inline(always)]
pub fn handshake_completed() {
    if let Some(scratch) = SCRATCH.get_ptr_mut(0) {
        // SAFETY: this CPU's scratch row.
        let sc = unsafe { &mut *scratch };
        sc.window_pending = sc.window_pending.saturating_sub(1);
    }
}

/// Whether cookies may be sent at all (not `syn_cookies = "never"`): the
/// fallback when no SNAT port is free.
#[inline(always)]
pub fn allowed() -> bool {
    SETTINGS
        .get(0)
        .is_some_and(|s| s.flags & settings_flags::SYN_COOKIES_NEVER == 0)
}

/// Answers the SYN `pkt` with a SYN-ACK whose ISN is a SYN cookie, built in
/// place: no entry, no SNAT port.
#[inline(never)]
pub fn answer_syn(ctx: &XdpContext, pkt: &Packet) -> u32 {
    // Unlike `rst::answer`, the checksum is not verified: its loop costs
    // the verifier more than the rest of this path, and a SYN-ACK to a
    // corrupted SYN is ignored by its receiver (a wrong address or ACK).
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return counters::drop(reason::DROP_TABLE_FULL);
    };
    // SAFETY: this CPU's scratch row.
    let sc = unsafe { &mut *scratch };
    let (Some(eth), Some(ip), Some(th)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<Ipv4Hdr>(ctx, pkt.l3_off),
        ptr_at::<TcpHdr>(ctx, pkt.l4_off),
    ) else {
        return counters::drop(reason::DROP_MALFORMED_L4);
    };
    // SAFETY: bounds-checked by ptr_at.
    let (hlen, client_isn, eth) = unsafe {
        sc.cookie_ip = *ip;
        ((*th).header_len(), u32::from_be((*th).seq), *eth)
    };
    // The helper parses the SYN's options for the MSS: copy the whole
    // header, word by word (parse checked 20 <= hlen <= the segment), and
    // pad it with end-of-options to the largest header, 60 bytes, so the
    // length handed to the helper is a constant: 6.1's verifier refuses a
    // computed one ("unbounded memory access") whatever its checks. The
    // cookie hashes addresses, ports and sequence number, never the offset.
    let mut i = 0;
    while i < 15 {
        if 4 * i < hlen {
            let Some(w) = ptr_at::<u32>(ctx, pkt.l4_off + 4 * i) else {
                return counters::drop(reason::DROP_MALFORMED_L4);
            };
            // SAFETY: bounds-checked by ptr_at.
            sc.cookie_tcp[i] = unsafe { *w };
        } else {
            sc.cookie_tcp[i] = 0;
        }
        i += 1;
    }
    // SAFETY: the first 20 bytes of the copy are a TCP header.
    unsafe {
        let t = &mut *(sc.cookie_tcp.as_mut_ptr() as *mut TcpHdr);
        t.doff_res = (15 << 4) | (t.doff_res & 0x0f);
    }
    // SAFETY: both point into this CPU's scratch row, 60 bytes of header.
    let r = unsafe {
        bpf_tcp_raw_gen_syncookie_ipv4(
            &mut sc.cookie_ip as *mut Ipv4Hdr as *mut iphdr,
            sc.cookie_tcp.as_mut_ptr() as *mut tcphdr,
            60,
        )
    };
    if r < 0 {
        // The kernel has no SYN cookies (CONFIG_SYN_COOKIES off).
        return counters::drop(reason::DROP_SYN_COOKIE_BAD);
    }
    let seg = Segment {
        src_mac: eth.dst,
        dst_mac: eth.src,
        saddr: pkt.daddr,
        daddr: pkt.saddr,
        sport: pkt.dport,
        dport: pkt.sport,
        seq: r as u32,
        ack: client_isn.wrapping_add(1),
        flags: TCP_SYN | TCP_ACK,
        window: SYNACK_WINDOW,
        mss: (r >> 32) as u16,
    };
    if !emit(ctx, pkt, &seg) {
        return counters::drop(reason::DROP_MALFORMED_L4);
    }
    counters::count(reason::TX_SYN_COOKIE);
    aya_ebpf::bindings::xdp_action::XDP_TX
}

/// Checks the ACK `pkt` (no flow, no half-open entry) as the third segment
/// of a cookie handshake. A valid cookie leaves its MSS in scratch for
/// [`connect`] and returns true; otherwise the segment is what it was
/// before cookies: a stray segment the caller answers with a RST.
///
/// Inlined: a function whose only use of `ctx` is reading `data` and
/// `data_end` gets them as integers from LLVM, which the verifier refuses as
/// packet pointers. The copy and the MSS recovery are a call of their own.
#[inline(always)]
pub fn check_ack(ctx: &XdpContext, pkt: &Packet) -> bool {
    if !allowed() {
        return false;
    }
    let (Some(ip), Some(th)) = (
        ptr_at::<Ipv4Hdr>(ctx, pkt.l3_off),
        ptr_at::<TcpHdr>(ctx, pkt.l4_off),
    ) else {
        return false;
    };
    // SAFETY: two bounds-checked fixed-size headers, read only.
    if unsafe { bpf_tcp_raw_check_syncookie_ipv4(ip as *mut iphdr, th as *mut tcphdr) } != 0 {
        return false;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch row; the headers were bounds-checked.
    unsafe {
        (*scratch).cookie_ip = *ip;
        *((*scratch).cookie_tcp.as_mut_ptr() as *mut TcpHdr) = *th;
    }
    recover_mss(scratch);
    true
}

/// Leaves what `open` needs of the ACK copied to scratch there: the MSS the
/// cookie encodes in `cookie_mss`, our ISN, the client's window and the
/// state of the entries. The kernel's check does not say it: regenerating the
/// cookie of the SYN this ACK answers, without options (MSS index 0), gives
/// a cookie that differs from the real one by the real index in the low
/// bits, when both come from the same minute.
#[inline(never)]
fn recover_mss(scratch: *mut crate::maps::Scratch) {
    // SAFETY: this CPU's scratch row.
    let sc = unsafe { &mut *scratch };
    let cookie = unsafe {
        let t = &mut *(sc.cookie_tcp.as_mut_ptr() as *mut TcpHdr);
        sc.cookie_window = u16::from_be(t.window) as u32;
        t.seq = u32::from_be(t.seq).wrapping_sub(1).to_be();
        t.doff_res = 5 << 4;
        u32::from_be(t.ack_seq).wrapping_sub(1)
    };
    sc.cookie_isn = cookie;
    sc.cookie_state = flow_state::SYN_COOKIE;
    // SAFETY: as in `answer_syn`, 20 bytes of header.
    let r = unsafe {
        bpf_tcp_raw_gen_syncookie_ipv4(
            &mut sc.cookie_ip as *mut Ipv4Hdr as *mut iphdr,
            sc.cookie_tcp.as_mut_ptr() as *mut tcphdr,
            20,
        )
    };
    let index = cookie.wrapping_sub(r as u32) & COOKIE_MASK;
    // Another minute than the cookie's (it is valid for two): the index is
    // lost, and the smallest MSS is safe.
    sc.cookie_mss = if r >= 0 && index < 4 {
        MSSTAB[index as usize]
    } else {
        DEFAULT_MSS
    };
}

/// The half-open pair of a cookie connection is in place (`fwd` the client's
/// entry, state `SYN_COOKIE`; the SNAT port claimed): turn the client's ACK
/// into the SYN the client would have sent the backend, with the client's
/// ISN and the cookie's MSS, and send it.
#[inline(never)]
pub fn connect(ctx: &XdpContext, pkt: &Packet, fwd: &Flow) -> u32 {
    let Some(th) = ptr_at::<TcpHdr>(ctx, pkt.l4_off) else {
        return counters::drop(reason::DROP_MALFORMED_L4);
    };
    // SAFETY: bounds-checked by ptr_at.
    let (seq, window) = unsafe { (u32::from_be((*th).seq), (*th).window) };
    let client_isn = seq.wrapping_sub(1);
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return counters::drop(reason::DROP_TABLE_FULL);
    };
    // SAFETY: this CPU's scratch row.
    let mss = unsafe { (*scratch).cookie_mss };
    // The backend's SYN-ACK must acknowledge the client's ISN (checked by
    // `complete`, on the backend-side entry).
    let rev_key = flow_key(
        fwd.nat_dst_ip,
        fwd.nat_src_ip,
        fwd.nat_dst_port,
        fwd.nat_src_port,
        IPPROTO_TCP,
    );
    if let Some(rev) = HALF_OPEN.get_ptr_mut(&rev_key) {
        // SAFETY: a live map value, written before the backend can answer.
        unsafe { (*rev).expect_ack = seq };
    }
    let seg = Segment {
        src_mac: fwd.src_mac,
        dst_mac: fwd.dst_mac,
        saddr: fwd.nat_src_ip,
        daddr: fwd.nat_dst_ip,
        sport: fwd.nat_src_port,
        dport: fwd.nat_dst_port,
        seq: client_isn,
        ack: 0,
        flags: TCP_SYN,
        window: u16::from_be(window),
        mss,
    };
    if !emit(ctx, pkt, &seg) {
        return counters::drop(reason::DROP_MALFORMED_L4);
    }
    counters::count(reason::SYN_COOKIE_OK);
    handshake_completed();
    counters::new_flow(fwd.service_id, fwd.backend_id);
    counters::account(fwd, (pkt.l3_off + 44) as u64);
    transmit(fwd.ifindex, pkt.ifindex)
}

/// The backend's answer to the SYN [`connect`] sent (`rev`, a copy of the
/// backend-side half-open entry): a SYN-ACK for the client's ISN completes
/// the backend's handshake here, with the ACK the client would have sent;
/// the pair moves into `flows` with the sequence offset between the
/// backend's ISN and ours. A RST for it is passed on to the client.
#[inline(never)]
pub fn complete(ctx: &XdpContext, pkt: &Packet, rev: &Flow) -> u32 {
    let Some(th) = ptr_at::<TcpHdr>(ctx, pkt.l4_off) else {
        return counters::drop(reason::DROP_MALFORMED_L4);
    };
    // SAFETY: bounds-checked by ptr_at.
    let (backend_isn, ack) = unsafe { (u32::from_be((*th).seq), u32::from_be((*th).ack_seq)) };
    let flags = pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST);
    if flags != TCP_SYN | TCP_ACK && flags != TCP_RST | TCP_ACK || ack != rev.expect_ack {
        // Not an answer to our SYN (a blind spoof cannot know its ACK
        // number): the handshake waits for the real one.
        return counters::drop(reason::DROP_SYN_COOKIE_BAD);
    }
    let client_key = flow_key(
        rev.nat_dst_ip,
        rev.nat_src_ip,
        rev.nat_dst_port,
        rev.nat_src_port,
        IPPROTO_TCP,
    );
    let Some(c) = (unsafe { HALF_OPEN.get(&client_key) }) else {
        return counters::drop(reason::DROP_SYN_COOKIE_BAD);
    };
    if flags & TCP_RST != 0 {
        return refused(ctx, pkt, rev, c.expect_ack, &client_key);
    }
    // Both entries are built in scratch memory: two `Flow`s on this frame
    // would take the call chain through `handshake_reply` past 6.1's 512
    // bytes of stack.
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return counters::drop(reason::DROP_TABLE_FULL);
    };
    // SAFETY: this CPU's scratch row; `c` is a live map value, copied at
    // once.
    let sc = unsafe { &mut *scratch };
    sc.fwd = *c;
    sc.rev = *rev;
    let fwd = &mut sc.fwd;
    let back = &mut sc.rev;
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let offset = backend_isn.wrapping_sub(fwd.expect_ack);
    let window = fwd.seq_offset as u16;
    fwd.state = flow_state::ESTABLISHED;
    fwd.expect_ack = 0;
    fwd.seq_offset = offset;
    fwd.last_seen_ns = now;
    back.state = flow_state::ESTABLISHED;
    back.expect_ack = 0;
    back.seq_offset = offset;
    back.last_seen_ns = now;
    let rev_key = flow_key(pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, IPPROTO_TCP);
    // As in `promote`: into flows before out of half_open, so the SNAT port
    // is never free in both.
    let _ = FLOWS.insert(&rev_key, &*back, 0);
    let _ = FLOWS.insert(&client_key, &*fwd, 0);
    let _ = HALF_OPEN.remove(&client_key);
    let _ = HALF_OPEN.remove(&rev_key);
    let egress = fwd.ifindex;
    let seg = Segment {
        src_mac: fwd.src_mac,
        dst_mac: fwd.dst_mac,
        saddr: pkt.daddr,
        daddr: pkt.saddr,
        sport: pkt.dport,
        dport: pkt.sport,
        seq: ack,
        ack: backend_isn.wrapping_add(1),
        flags: TCP_ACK,
        window,
        mss: 0,
    };
    if !emit(ctx, pkt, &seg) {
        return counters::drop(reason::DROP_MALFORMED_L4);
    }
    transmit(egress, pkt.ifindex)
}

/// The backend refused the connection our cookie stood for (a RST to our
/// SYN): the client, which believes itself connected, gets the RST instead,
/// with the sequence number it expects next from us (`cookie` + 1), and the
/// half-open pair goes.
#[inline(always)]
fn refused(ctx: &XdpContext, pkt: &Packet, rev: &Flow, cookie: u32, client_key: &FlowKey) -> u32 {
    let _ = HALF_OPEN.remove(client_key);
    let rev_key = flow_key(pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, IPPROTO_TCP);
    let _ = HALF_OPEN.remove(&rev_key);
    let seg = Segment {
        src_mac: rev.src_mac,
        dst_mac: rev.dst_mac,
        saddr: rev.nat_src_ip,
        daddr: rev.nat_dst_ip,
        sport: rev.nat_src_port,
        dport: rev.nat_dst_port,
        seq: cookie.wrapping_add(1),
        ack: 0,
        flags: TCP_RST,
        window: 0,
        mss: 0,
    };
    if !emit(ctx, pkt, &seg) {
        return counters::drop(reason::DROP_MALFORMED_L4);
    }
    counters::count(reason::TX_RST_COOKIE_REFUSED);
    transmit(rev.ifindex, pkt.ifindex)
}

/// Moves the sequence space of an established segment of a cookie
/// connection (`f.seq_offset != 0`) to the receiver's: toward the backend
/// its acknowledgement, toward the client its sequence number. Runs after
/// the close tracking, which works in the sender's space. Inlined for the
/// reason given at [`check_ack`]; only cookie connections reach it.
#[inline(always)]
pub fn translate(ctx: &XdpContext, pkt: &Packet, f: &Flow) {
    let Some(th) = ptr_at::<TcpHdr>(ctx, pkt.l4_off) else {
        return;
    };
    // SAFETY: bounds-checked by ptr_at.
    let th = unsafe { &mut *th };
    let diff = if f.direction == direction::TO_BACKEND {
        let old = th.ack_seq;
        th.ack_seq = u32::from_be(old).wrapping_add(f.seq_offset).to_be();
        csum::diff32(0, old, th.ack_seq)
    } else {
        let old = th.seq;
        th.seq = u32::from_be(old).wrapping_sub(f.seq_offset).to_be();
        csum::diff32(0, old, th.seq)
    };
    th.check = csum::apply(th.check, diff);
}

/// A segment the program sends itself, in place of the packet it answers.
/// Addresses and ports network order, the rest host order.
struct Segment {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    /// The MSS option's value; 0: no options.
    mss: u16,
}

/// Rewrites the frame into `seg`: the frame is cut (or grown) to the
/// headers, the VLAN tag stays, both checksums are computed whole.
#[inline(always)]
fn emit(ctx: &XdpContext, pkt: &Packet, seg: &Segment) -> bool {
    let tcp_len: usize = if seg.mss != 0 { 24 } else { 20 };
    let want = (pkt.l3_off + 20 + tcp_len) as u64;
    if pkt.frame_len != want {
        let delta = want as i64 - pkt.frame_len as i64;
        // SAFETY: resizing the frame; every packet pointer is derived anew
        // below.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx as *mut _, delta as i32) } != 0 {
            return false;
        }
    }
    let (Some(eth), Some(ip), Some(th)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<Ipv4Hdr>(ctx, pkt.l3_off),
        ptr_at::<TcpHdr>(ctx, pkt.l4_off),
    ) else {
        return false;
    };
    let pseudo = csum::add32(csum::add32(0, seg.saddr), seg.daddr)
        + (IPPROTO_TCP as u16).to_be() as u64
        + (tcp_len as u16).to_be() as u64;
    let mut option_sum = 0;
    if seg.mss != 0 {
        let Some(opt) = ptr_at::<[u16; 2]>(ctx, pkt.l4_off + 20) else {
            return false;
        };
        // SAFETY: bounds-checked by ptr_at after the resize.
        unsafe {
            // Kind 2 (MSS), length 4, the value.
            (*opt)[0] = u16::from_ne_bytes([2, 4]);
            (*opt)[1] = seg.mss.to_be();
            option_sum = csum::sum_words(0, &*opt);
        }
    }
    // SAFETY: all three bounds-checked by ptr_at after the resize.
    unsafe {
        let eth = &mut *eth;
        eth.src = seg.src_mac;
        eth.dst = seg.dst_mac;

        // Field by field: a struct literal would be built on the stack first.
        let ip = &mut *ip;
        ip.ver_ihl = 0x45;
        ip.tos = 0;
        ip.tot_len = ((20 + tcp_len) as u16).to_be();
        ip.id = 0;
        ip.frag_off = IP_DF.to_be();
        ip.ttl = TTL;
        ip.proto = IPPROTO_TCP;
        ip.check = 0;
        ip.saddr = seg.saddr;
        ip.daddr = seg.daddr;
        ip.check = !csum::fold(csum::sum_words(
            0,
            &*(ip as *const Ipv4Hdr as *const [u16; 10]),
        ));

        let t = &mut *th;
        t.source = seg.sport;
        t.dest = seg.dport;
        t.seq = seg.seq.to_be();
        t.ack_seq = seg.ack.to_be();
        t.doff_res = ((tcp_len / 4) as u8) << 4;
        t.flags = seg.flags;
        t.window = seg.window.to_be();
        t.check = 0;
        t.urg_ptr = 0;
        t.check = !csum::fold(csum::sum_words(
            pseudo + option_sum,
            &*(th as *const TcpHdr as *const [u16; 10]),
        ));
    }
    true
}
