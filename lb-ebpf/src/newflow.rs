//! Packets addressed to a service that match no established flow: new
//! connections pick a backend and a SNAT port; handshakes in progress live in
//! `half_open` until the client's ACK promotes them.

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::generated::bpf_get_prandom_u32, programs::XdpContext,
};
use lb_common::{
    Flow, FlowKey, IPPROTO_TCP, NO_BACKEND, Persist, PersistKey, SNAT_TAKEOVER_AGE_NS, ServiceInfo,
    backend_flags, direction, flow_state,
    hash::{flow_hash, snat_port_candidate, source_hash},
    headers::{TCP_ACK, TCP_RST, TCP_SYN, TcpHdr},
    reason, service_flags,
};

use crate::{
    counters, fib,
    flowkey::flow_key,
    forward::{reply_entry, send, send_copy},
    maps::{BACKENDS, FLOWS, HALF_OPEN, MAGLEV, PERSIST, SCRATCH, SETTINGS},
    packet::{Packet, ptr_at},
    rst, syncookie,
};

/// SNAT ports tried per new flow before giving up. Ports are per backend, so
/// a range half full for one backend fails a flow after 32 misses about once
/// in 4 billion tries, and a range 90% full still finds a port 97% of the time.
const SNAT_TRIES: u32 = 32;
/// The first tries are a function of the 5-tuple (reproducible); the rest mix
/// in a random number, so a retransmitted SYN that found no port gets fresh
/// candidates instead of failing the same way again.
const SNAT_HASHED_TRIES: u32 = 16;

/// A TCP/UDP packet to `svc` that missed `flows`.
#[inline(always)]
pub fn to_service(
    ctx: &XdpContext,
    pkt: &Packet,
    key: &FlowKey,
    svc: &ServiceInfo,
    now: u64,
) -> u32 {
    if svc.flags & service_flags::ACTIVE == 0 {
        return counters::drop(reason::DROP_INACTIVE);
    }
    // One call of `open` for everything that opens a flow: the verifier
    // walks a function once per call site, and `open` is the largest.
    if pkt.proto == IPPROTO_TCP {
        // The entry is copied by the callees, in their own frames: a copy
        // here would sit in the program's main frame, which every call
        // chain pays.
        if let Some(h) = HALF_OPEN.get_ptr_mut(key) {
            if pkt.tcp_flags & (TCP_SYN | TCP_RST) == 0 {
                return promote(ctx, pkt, key, h, now);
            }
            // A retransmitted SYN, or a client aborting its handshake.
            return send_copy(ctx, pkt, h);
        }
        if pkt.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
            if pkt.tcp_flags & TCP_RST != 0 {
                return counters::drop(reason::DROP_RST_NO_FLOW);
            }
            // The third segment of a handshake answered with a SYN cookie
            // matches nothing either: checked before a RST answers it.
            if pkt.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_ACK || !syncookie::check_ack(ctx, pkt) {
                return rst::answer(ctx, pkt, reason::TX_RST_NO_FLOW);
            }
        } else if syncookie::pressure(now) {
            return syncookie::answer_syn(ctx, pkt);
        }
    }
    open(ctx, pkt, key, svc, now)
}

/// A client segment on a handshake in progress. It completes the handshake
/// only if it acknowledges the backend's SYN-ACK (ACK number = the backend's
/// ISN + 1, recorded when the SYN-ACK passed); then the pair moves into
/// `flows`, inserted before the half-open entries are removed so a SNAT port
/// is never free in both. Anything else (an ACK before the SYN-ACK, a wrong
/// number: what a blind spoofer sends) is dropped, not forwarded: the backend
/// has nothing to learn from it, and answering would reflect traffic to a
/// forged source. A real client that lost the SYN-ACK retransmits its SYN.
#[inline(never)]
fn promote(ctx: &XdpContext, pkt: &Packet, key: &FlowKey, h: *const Flow, now: u64) -> u32 {
    // SAFETY: a live map value, copied out at once.
    let half = &unsafe { *h };
    let Some(th) = ptr_at::<TcpHdr>(ctx, pkt.l4_off) else {
        return counters::drop(reason::DROP_MALFORMED_L4);
    };
    // SAFETY: bounds-checked by ptr_at.
    let ack = u32::from_be(unsafe { (*th).ack_seq });
    if half.state != flow_state::SYN_ACKED || pkt.tcp_flags & TCP_ACK == 0 || ack != half.expect_ack
    {
        return counters::drop(reason::DROP_HANDSHAKE_ACK);
    }
    syncookie::handshake_completed();
    let mut fwd = *half;
    fwd.state = flow_state::ESTABLISHED;
    fwd.expect_ack = 0;
    fwd.last_seen_ns = now;
    let rev = reply_entry(
        pkt,
        half.backend_id,
        half.service_id,
        flow_state::ESTABLISHED,
        now,
    );
    let rev_key = flow_key(
        half.nat_dst_ip,
        half.nat_src_ip,
        half.nat_dst_port,
        half.nat_src_port,
        key.proto,
    );
    let _ = FLOWS.insert(&rev_key, &rev, BPF_NOEXIST as u64);
    let _ = FLOWS.insert(key, &fwd, BPF_NOEXIST as u64);
    let _ = HALF_OPEN.remove(key);
    let _ = HALF_OPEN.remove(&rev_key);
    // The packet itself rides on what we just computed, not another lookup.
    send(ctx, pkt, &fwd)
}

/// A backend's segment to a SNAT port whose connection is still opening
/// (`h`, the backend-to-client half-open entry). Its SYN-ACK is recorded in
/// the client's half-open entry, whose ACK must then acknowledge it; every
/// segment is translated to the client as before.
#[inline(never)]
pub fn handshake_reply(ctx: &XdpContext, pkt: &Packet, h: *const Flow) -> u32 {
    // SAFETY: a live map value (RCU keeps it readable for this run), copied.
    let f = unsafe { *h };
    if f.state == flow_state::SYN_COOKIE {
        return syncookie::complete(ctx, pkt, &f);
    }
    if pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN | TCP_ACK {
        if let Some(th) = ptr_at::<TcpHdr>(ctx, pkt.l4_off) {
            // SAFETY: bounds-checked by ptr_at.
            let isn = u32::from_be(unsafe { (*th).seq });
            let client_key = flow_key(
                f.nat_dst_ip,
                f.nat_src_ip,
                f.nat_dst_port,
                f.nat_src_port,
                pkt.proto,
            );
            if let Some(c) = HALF_OPEN.get_ptr_mut(&client_key) {
                // SAFETY: a live map value; a retransmitted SYN-ACK on
                // another CPU writes the same values.
                unsafe {
                    (*c).expect_ack = isn.wrapping_add(1);
                    (*c).state = flow_state::SYN_ACKED;
                }
            }
        }
    }
    send(ctx, pkt, &f)
}

// `flows` and `half_open` differ in size, hence in type: pick by protocol.
#[inline(always)]
fn insert_new(tcp: bool, key: &FlowKey, value: &Flow) -> Result<(), i32> {
    if tcp {
        HALF_OPEN.insert(key, value, BPF_NOEXIST as u64)
    } else {
        FLOWS.insert(key, value, BPF_NOEXIST as u64)
    }
}

#[inline(always)]
fn remove_new(tcp: bool, key: &FlowKey) {
    let _ = if tcp {
        HALF_OPEN.remove(key)
    } else {
        FLOWS.remove(key)
    };
}

/// Copies the entry under `key` into `out`; false when there is none.
#[inline(always)]
fn copy_existing(tcp: bool, key: &FlowKey, out: &mut Flow) -> bool {
    // SAFETY: the value is copied out at once.
    let found = unsafe {
        if tcp {
            HALF_OPEN.get(key)
        } else {
            FLOWS.get(key)
        }
    };
    match found {
        Some(f) => {
            *out = *f;
            true
        }
        None => false,
    }
}

/// Picks the backend for a new connection: the client's persistence entry if
/// it is fresh and its backend may take it, else the Maglev ring.
#[inline(always)]
fn pick_backend(pkt: &Packet, svc: &ServiceInfo, hash: u32, now: u64) -> u32 {
    if svc.flags & service_flags::PERSISTENCE != 0 {
        let pk = PersistKey {
            service_id: svc.id,
            client_ip: pkt.saddr,
        };
        // SAFETY: the value is copied out at once.
        if let Some(p) = unsafe { PERSIST.get(&pk) } {
            let p = *p;
            if now.wrapping_sub(p.last_seen_ns) < svc.persist_timeout_ns {
                if let Some(b) = BACKENDS.get(p.backend_id) {
                    if b.flags & backend_flags::PERSIST_OK != 0 {
                        return p.backend_id;
                    }
                }
            }
        }
    }
    if svc.ring_size == 0 {
        return NO_BACKEND;
    }
    let slot = svc.ring_offset.wrapping_add(hash % svc.ring_size);
    match MAGLEV.get(slot) {
        Some(id) => *id,
        None => NO_BACKEND,
    }
}

/// A new connection (TCP SYN), first datagram (UDP), or the ACK of a valid
/// SYN cookie (`syncookie::check_ack`), which opens the backend connection
/// the cookie's SYN-ACK stood for.
#[inline(never)]
fn open(ctx: &XdpContext, pkt: &Packet, key: &FlowKey, svc: &ServiceInfo, now: u64) -> u32 {
    // One call site for the cookie SYN-ACK (the verifier walks a function
    // once per call site).
    match open_flow(ctx, pkt, key, svc, now) {
        ANSWER_WITH_COOKIE => syncookie::answer_syn(ctx, pkt),
        verdict => verdict,
    }
}

/// Whether the flow `open` is opening is a SYN cookie's, read back from the
/// entry in scratch memory rather than kept in a register: a register
/// holding it would split every state the verifier walks through the port
/// claim in two (about 170,000 verified instructions more).
#[inline(always)]
fn accepted_cookie(fwd: &Flow) -> bool {
    // SAFETY: a field of a live reference.
    unsafe { core::ptr::read_volatile(&fwd.state) == flow_state::SYN_COOKIE }
}

/// What [`open_flow`] returns for a SYN that gets a SYN cookie instead.
const ANSWER_WITH_COOKIE: u32 = u32::MAX;

#[inline(always)]
fn open_flow(ctx: &XdpContext, pkt: &Packet, key: &FlowKey, svc: &ServiceInfo, now: u64) -> u32 {
    let tcp = pkt.proto == IPPROTO_TCP;
    // The forward entry is assembled in per-CPU scratch memory (stack limit).
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return counters::drop(reason::DROP_TABLE_FULL);
    };
    // SAFETY: this CPU's scratch row, alive for the whole program run.
    let fwd = unsafe { &mut (*scratch).fwd };
    fwd.state = if tcp {
        flow_state::SYN
    } else {
        flow_state::UDP
    };
    fwd.fin = 0;
    fwd._pad = 0;
    // A SYN cookie's ACK (`syncookie::check_ack`) left its state, our ISN
    // and the client's window in scratch; for anything else they are 0.
    // Taken without a branch (one here would split every state the
    // verifier walks through the port claim in two), and cleared before any
    // way out of `open`.
    // SAFETY: this CPU's scratch row.
    unsafe {
        let sc = &mut *scratch;
        const _: () = assert!(flow_state::SYN | flow_state::SYN_COOKIE == flow_state::SYN_COOKIE);
        fwd.state |= sc.cookie_state;
        fwd.expect_ack = sc.cookie_isn;
        fwd.seq_offset = sc.cookie_window;
        sc.cookie_state = 0;
        sc.cookie_isn = 0;
        sc.cookie_window = 0;
    }
    let tuple_hash = flow_hash(pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, pkt.proto);
    let hash = if svc.flags & service_flags::SCHED_FLOW != 0 {
        tuple_hash
    } else {
        source_hash(pkt.saddr)
    };
    let backend_id = pick_backend(pkt, svc, hash, now);
    if backend_id == NO_BACKEND {
        if tcp {
            counters::rst_no_backend(svc.id);
            return rst::answer(ctx, pkt, reason::TX_RST_NO_BACKEND);
        }
        return counters::drop(reason::DROP_NO_BACKEND);
    }
    let backend = match BACKENDS.get(backend_id) {
        Some(b) if b.flags & backend_flags::IN_USE != 0 => *b,
        _ => return counters::drop(reason::DROP_BAD_BACKEND),
    };
    fwd.nat_src_ip = svc.snat_ip;
    fwd.nat_dst_ip = backend.ip;
    fwd.nat_src_port = 0;
    fwd.nat_dst_port = backend.port;
    fwd.backend_id = backend_id;
    fwd.service_id = svc.id;
    fwd.direction = direction::TO_BACKEND;
    fwd.last_seen_ns = now;
    let fib_err = fib::next_hop_cached(ctx, backend_id, backend.ip, pkt, fwd);
    if fib_err != 0 {
        return counters::drop(fib_err);
    }
    let claimed = claim_snat_port(pkt, fwd, tuple_hash);
    if claimed == 0 || claimed == CLAIM_TABLE_FULL {
        // Ports or handshake entries held by handshakes (a spoofed flood
        // holds them for the handshake timeout): a SYN cookie costs neither.
        if tcp && !accepted_cookie(fwd) && syncookie::allowed() {
            return ANSWER_WITH_COOKIE;
        }
        if claimed == CLAIM_TABLE_FULL {
            return counters::drop(reason::DROP_HALF_OPEN_FULL);
        }
        return counters::drop(reason::DROP_SNAT_EXHAUSTED);
    }
    let snat_port = claimed as u16;
    fwd.nat_src_port = snat_port;
    if insert_new(tcp, key, fwd).is_err() {
        // The flow is already opening: a retransmitted SYN, or another CPU
        // won a race on this very SYN. Follow the existing entry, so one
        // connection never opens two backend connections or two ports.
        let rev_key = flow_key(backend.ip, svc.snat_ip, backend.port, snat_port, pkt.proto);
        remove_new(tcp, &rev_key);
        if accepted_cookie(fwd) {
            // A copy of the ACK, or another CPU's: that one sent the SYN.
            return counters::drop(reason::SYN_ALREADY_OPENING);
        }
        if !copy_existing(tcp, key, fwd) {
            return counters::drop(reason::DROP_TABLE_FULL);
        }
        counters::count(reason::SYN_ALREADY_OPENING);
        return send(ctx, pkt, fwd);
    }
    if svc.flags & service_flags::PERSISTENCE != 0 {
        let pk = PersistKey {
            service_id: svc.id,
            client_ip: pkt.saddr,
        };
        let pv = Persist {
            backend_id,
            _pad: 0,
            last_seen_ns: now,
        };
        let _ = PERSIST.insert(&pk, &pv, 0);
    }
    if accepted_cookie(fwd) {
        return syncookie::connect(ctx, pkt, fwd);
    }
    counters::new_flow(svc.id, backend_id);
    send(ctx, pkt, fwd)
}

/// Claims a SNAT port for the new flow `fwd` (backend, SNAT address, ids and
/// time filled in) by inserting its reverse entry, whose key is the port's
/// identity: a port is only as unique as (backend address and port, SNAT
/// address, protocol). Returns the port, network order.
///
/// The client's own source port comes first when it is inside the range (as
/// conntrack keeps it), then hashed and random candidates. A port held by a
/// closed connection (`flow_state::CLOSED`) is taken over rather than
/// skipped, but not blindly: the backend may still hold the old tuple in
/// TIME_WAIT (when it closed first) or LAST_ACK (when our final ACK was
/// lost), and Linux accepts a new SYN into TIME_WAIT only when its timestamp
/// is newer than the old connection's or its sequence number above it. A
/// client's timestamps are monotonic toward one VIP (Linux offsets them per
/// address pair), so a port the same client closed is taken at once, as is
/// one closed at least [`SNAT_TAKEOVER_AGE_NS`] ago (the backend's first FIN
/// retransmission is over). Other closed ports are kept as a fallback, the
/// one closed longest ago, taken only when no better port turns up.
///
/// Returns the port (network order, never 0: ports start at 1024), 0 when
/// every candidate was taken, or [`CLAIM_TABLE_FULL`] when `half_open` has
/// no room (a port answer in one register: a BPF call returns one value).
#[inline(never)]
fn claim_snat_port(pkt: &Packet, fwd: &Flow, tuple_hash: u32) -> u32 {
    match claim(pkt, fwd, tuple_hash) {
        Ok(port) => u32::from(port),
        Err(full) => full,
    }
}

/// [`claim_snat_port`]'s answer when `half_open` is full.
const CLAIM_TABLE_FULL: u32 = 1 << 16;
/// What a full preallocated hash answers an insert with.
const E2BIG: i32 = 7;

#[inline(always)]
fn claim(pkt: &Packet, fwd: &Flow, tuple_hash: u32) -> Result<u16, u32> {
    let tcp = pkt.proto == IPPROTO_TCP;
    let settings = SETTINGS.get(0).ok_or(0u32)?;
    let (port_min, port_max) = (settings.snat_port_min, settings.snat_port_max);
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(0u32)?;
    // SAFETY: this CPU's scratch row, alive for the whole program run.
    let rev = unsafe { &mut (*scratch).rev };
    *rev = reply_entry(
        pkt,
        fwd.backend_id,
        fwd.service_id,
        fwd.state,
        fwd.last_seen_ns,
    );
    let now = fwd.last_seen_ns;
    let mut rev_key = flow_key(
        fwd.nat_dst_ip,
        fwd.nat_src_ip,
        fwd.nat_dst_port,
        0,
        pkt.proto,
    );
    let own = u16::from_be(pkt.sport);
    let mut fallback: u16 = 0;
    let mut fallback_closed_ns = u64::MAX;
    let mut seed = tuple_hash;
    // Attempt 0 is the client's own port; 1..=SNAT_TRIES the candidates.
    let mut attempt = if own >= port_min && own <= port_max {
        0
    } else {
        1
    };
    while attempt <= SNAT_TRIES {
        rev_key.dst_port = if attempt == 0 {
            pkt.sport
        } else {
            if attempt == SNAT_HASHED_TRIES + 1 {
                // SAFETY: plain helper call.
                seed ^= unsafe { bpf_get_prandom_u32() };
            }
            snat_port_candidate(seed, attempt - 1, port_min, port_max).to_be()
        };
        attempt += 1;
        match insert_new(tcp, &rev_key, rev) {
            Ok(()) => {}
            // No room for any handshake: no other port would do better.
            Err(e) if tcp && e == -E2BIG => return Err(CLAIM_TABLE_FULL),
            Err(_) => continue,
        }
        if !tcp {
            return Ok(rev_key.dst_port);
        }
        // A TCP port is only free if no established flow holds it either;
        // checked after the claim so a concurrent promotion cannot slip by.
        // SAFETY: the value is read at once; the claim above keeps other
        // CPUs from taking the same port over meanwhile.
        let Some(old) = (unsafe { FLOWS.get(&rev_key) }) else {
            return Ok(rev_key.dst_port);
        };
        if old.state == flow_state::CLOSED && old.direction == direction::TO_CLIENT {
            if old.nat_dst_ip == pkt.saddr
                || now.wrapping_sub(old.last_seen_ns) >= SNAT_TAKEOVER_AGE_NS
            {
                take_over(&rev_key, old);
                return Ok(rev_key.dst_port);
            }
            if old.last_seen_ns < fallback_closed_ns {
                fallback = rev_key.dst_port;
                fallback_closed_ns = old.last_seen_ns;
            }
        }
        let _ = HALF_OPEN.remove(&rev_key);
    }
    if fallback == 0 {
        return Err(0);
    }
    rev_key.dst_port = fallback;
    HALF_OPEN
        .insert(&rev_key, rev, BPF_NOEXIST as u64)
        .map_err(|_| 0u32)?;
    // SAFETY: as above.
    match unsafe { FLOWS.get(&rev_key) } {
        None => Ok(fallback),
        Some(old) if old.state == flow_state::CLOSED => {
            take_over(&rev_key, old);
            Ok(fallback)
        }
        Some(_) => {
            let _ = HALF_OPEN.remove(&rev_key);
            Err(0)
        }
    }
}

/// Removes the closed connection whose backend-to-client entry `old` sits
/// under `rev_key`, both directions, so its port serves a new connection.
#[inline(always)]
fn take_over(rev_key: &FlowKey, old: &Flow) {
    let client_key = flow_key(
        old.nat_dst_ip,
        old.nat_src_ip,
        old.nat_dst_port,
        old.nat_src_port,
        rev_key.proto,
    );
    let _ = FLOWS.remove(rev_key);
    let _ = FLOWS.remove(&client_key);
    counters::count(reason::SNAT_PORT_TAKEN_OVER);
}
