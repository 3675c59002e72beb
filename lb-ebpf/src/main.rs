//! The lb XDP program: full-NAT layer-4 load balancing with a consistent hash
//! of the client's address. See docs/architecture.md, "The path of a packet";
//! the outline of one packet's life is in `process`.
#![no_std]
#![no_main]

mod closing;
mod counters;
mod egress;
mod fib;
mod flowkey;
mod forward;
mod icmp;
mod lease;
mod maps;
mod newflow;
mod packet;
mod parse;
mod rst;
mod syncookie;
mod verify;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{IPPROTO_ICMP, IPPROTO_TCP, ServiceKey, local_addr_flags, reason};

use crate::{
    flowkey::flow_key,
    maps::{FLOWS, HALF_OPEN, LOCAL_ADDRS, SERVICES, SETTINGS},
    packet::Packet,
};

#[xdp]
pub fn lb(ctx: XdpContext) -> u32 {
    process(&ctx)
}

/// One packet's life: [`parse::parse`] applies the acceptance policy, then
/// the packet is dispatched by what it is for.
#[inline(always)]
fn process(ctx: &XdpContext) -> u32 {
    let (pkt, now) = match parse::parse(ctx) {
        Ok(p) => p,
        Err(verdict) => return verdict,
    };
    if pkt.proto == IPPROTO_ICMP {
        return icmp::handle(ctx, &pkt);
    }

    // 1. A known flow, either direction: one lookup. Its tuple passed the
    // source checks when it opened; flags are checked per segment.
    let key = flow_key(pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, pkt.proto);
    if let Some(entry) = FLOWS.get_ptr_mut(&key) {
        if parse::bad_tcp_flags(&pkt) {
            return counters::drop(reason::DROP_TCP_FLAGS);
        }
        return forward::established(ctx, &pkt, entry, now);
    }

    // 2. Addressed to a service: new connection, handshake, or stray segment.
    let skey = ServiceKey {
        vip: pkt.daddr,
        port: pkt.dport,
        proto: pkt.proto,
        _pad: 0,
    };
    // SAFETY: map values stay valid for the whole program run (RCU); the
    // agent replaces a service row whole, never in place.
    if let Some(svc) = unsafe { SERVICES.get(&skey) } {
        if let Some(r) = refuse_new(&pkt) {
            return counters::drop(r);
        }
        return newflow::to_service(ctx, &pkt, &key, svc, now);
    }

    // 3. A backend answering inside the SNAT port range: a handshake reply, or
    // nothing we know, which must not reach the host's stack (it would RST).
    // Looked up again rather than kept from the lease check: holding the
    // pointer across the flow and service lookups costs spills on every path.
    if let Some(s) = SETTINGS.get(0) {
        let port = u16::from_be(pkt.dport);
        if port >= s.snat_port_min && port <= s.snat_port_max {
            if pkt.proto == IPPROTO_TCP {
                if let Some(h) = HALF_OPEN.get_ptr(&key) {
                    if parse::bad_tcp_flags(&pkt) {
                        return counters::drop(reason::DROP_TCP_FLAGS);
                    }
                    return newflow::handshake_reply(ctx, &pkt, h);
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

/// Why a packet to a service that matches no flow must be neither relayed
/// nor answered, if it must not: it could open a flow, be answered with a
/// RST, or promote a handshake, and each wants a real client. A TTL that
/// would expire is refused here too, before any table grows.
#[inline(always)]
fn refuse_new(pkt: &Packet) -> Option<u32> {
    if parse::bad_tcp_flags(pkt) {
        return Some(reason::DROP_TCP_FLAGS);
    }
    // SAFETY: the IPv4 header was bounds-checked at parse time.
    if unsafe { (*pkt.ip).ttl } <= 1 {
        return Some(reason::DROP_TTL_EXPIRED);
    }
    if parse::martian_source(pkt.saddr) {
        return Some(reason::DROP_MARTIAN_SOURCE);
    }
    None
}

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
