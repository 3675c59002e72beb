//! The acceptance policy, in one place: what a frame must be before the
//! program forwards or answers it. Everything a host's own stack would refuse
//! is refused here, with its own reason counter, before any table is read:
//!
//! - L2: the destination MAC is the ingress interface's own (`ifaces`, which
//!   the agent writes before it attaches); another host's unicast frame goes
//!   to the host untouched (it drops it, or a macvlan/bridge port owns it),
//!   and a broadcast/multicast frame too unless it is for a VIP or SNAT
//!   address, where it is dropped (a host's TCP drops those). The source MAC
//!   must be unicast and not zero. So every frame past this point came to
//!   this node, and swapping its MACs answers from our own MAC to a real
//!   sender.
//! - L3: IPv4 with a sane header (version, IHL, total length within the
//!   frame) and a correct header checksum. Fragments and options are dropped
//!   when for us, else passed (we cannot steer them).
//! - L4: TCP data offset and UDP length within the packet.
//!
//! Checks that depend on where the packet goes sit at the dispatch in
//! `main.rs`, on the paths that need them: a martian source only matters for
//! a packet that would open a flow or be answered (an established flow's
//! tuple was checked when it opened), and TCP flag combinations only for
//! packets we relay or answer (the host judges its own). TTL is checked
//! where a packet is relayed (`forward::send`, `icmp`).

use aya_ebpf::{helpers::generated::bpf_ktime_get_coarse_ns, programs::XdpContext};
use lb_common::{
    IFACE_SLOTS, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, csum,
    headers::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, EthHdr, IP_MF, IP_OFFSET,
        IPV4_MIN_HLEN, Ipv4Hdr, TCP_MIN_HLEN, TcpHdr, UDP_HLEN, UdpHdr, VLAN_HLEN, VlanHdr,
    },
    local_addr_flags, policy, reason,
};

use crate::{
    counters, lease,
    maps::{IFACES, LOCAL_ADDRS, SETTINGS},
    packet::{Packet, ptr_at},
};

/// Parses the frame and applies the policy. `Err` carries the verdict for a
/// frame that ends here (already counted); `Ok` a packet the program may act
/// on, with the coarse clock read for the lease check.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<(Packet, u64), u32> {
    // L2: Ethernet and at most one VLAN tag, which stays in place.
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Err(counters::drop(reason::DROP_MALFORMED_L2));
    };
    // SAFETY: bounds-checked by ptr_at.
    let e = unsafe { &*eth };
    let mut ether_type = e.proto;
    let mut l3_off = ETH_HLEN;
    if ether_type == ETH_P_8021Q.to_be() || ether_type == ETH_P_8021AD.to_be() {
        let Some(vlan) = ptr_at::<VlanHdr>(ctx, ETH_HLEN) else {
            return Err(counters::drop(reason::DROP_MALFORMED_L2));
        };
        // SAFETY: bounds-checked by ptr_at.
        ether_type = unsafe { (*vlan).proto };
        l3_off = ETH_HLEN + VLAN_HLEN;
    }
    if ether_type != ETH_P_IP.to_be() {
        if ether_type == ETH_P_ARP.to_be() {
            // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
            let now = unsafe { bpf_ktime_get_coarse_ns() };
            return Err(lease::arp(ctx, l3_off, SETTINGS.get(0), now));
        }
        return Err(counters::pass(reason::PASS_NOT_IPV4));
    }
    let ifindex = ctx.ingress_ifindex() as u32;
    let group = policy::mac_is_group(&e.dst);
    if !group {
        match IFACES.get(ifindex % IFACE_SLOTS) {
            Some(i) if i.ifindex == ifindex => {
                if e.dst != i.mac {
                    return Err(counters::pass(reason::PASS_MAC_OTHER_HOST));
                }
            }
            _ => return Err(counters::pass(reason::PASS_UNKNOWN_IFACE)),
        }
        if !policy::source_mac_ok(&e.src) {
            return Err(counters::drop(reason::DROP_BAD_SOURCE_MAC));
        }
    }

    // L3: validate before trusting anything; the kernel would drop these too.
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3_off) else {
        return Err(counters::drop(reason::DROP_MALFORMED_IP));
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
        return Err(counters::drop(reason::DROP_MALFORMED_IP));
    }
    if group {
        return Err(ours_or_pass(
            iph.daddr,
            reason::DROP_MAC_GROUP,
            reason::PASS_MAC_GROUP,
        ));
    }
    // The agent's lease (VRRP mode): once over, the addresses that move with
    // VRRP are the peer's; nothing to them is served or passed, fragments
    // and ICMP included.
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if lease::expired(SETTINGS.get(0), now) && lease::moves_with_vrrp(iph.daddr) {
        return Err(counters::drop(reason::LEASE_EXPIRED));
    }

    let frag = u16::from_be(iph.frag_off);
    if frag & (IP_MF | IP_OFFSET) != 0 {
        return Err(ours_or_pass(
            iph.daddr,
            reason::DROP_FRAGMENT,
            reason::PASS_NOT_OURS,
        ));
    }
    if ihl != IPV4_MIN_HLEN {
        return Err(ours_or_pass(
            iph.daddr,
            reason::DROP_IP_OPTIONS,
            reason::PASS_NOT_OURS,
        ));
    }
    // A correct header sums to all ones. The host drops a wrong one too, so
    // it is dropped whoever the packet is for.
    // SAFETY: the 20-byte header was bounds-checked by ptr_at.
    let words = unsafe { &*(ip as *const [u16; 10]) };
    if csum::fold(csum::sum_words(0, words)) != 0xffff {
        return Err(counters::drop(reason::DROP_IP_CHECKSUM));
    }

    // L4.
    let l4_off = l3_off + IPV4_MIN_HLEN;
    let l4_len = tot_len - IPV4_MIN_HLEN;
    let (sport, dport, tcp_flags) = match iph.proto {
        IPPROTO_TCP => {
            let Some(th) = ptr_at::<TcpHdr>(ctx, l4_off) else {
                return Err(counters::drop(reason::DROP_MALFORMED_L4));
            };
            // SAFETY: bounds-checked by ptr_at.
            let th = unsafe { &*th };
            let doff = th.header_len();
            if doff < TCP_MIN_HLEN || doff > l4_len {
                return Err(counters::drop(reason::DROP_MALFORMED_L4));
            }
            (th.source, th.dest, th.flags)
        }
        IPPROTO_UDP => {
            let Some(uh) = ptr_at::<UdpHdr>(ctx, l4_off) else {
                return Err(counters::drop(reason::DROP_MALFORMED_L4));
            };
            // SAFETY: bounds-checked by ptr_at.
            let uh = unsafe { &*uh };
            let ulen = u16::from_be(uh.len) as usize;
            if ulen < UDP_HLEN || ulen > l4_len {
                return Err(counters::drop(reason::DROP_MALFORMED_L4));
            }
            (uh.source, uh.dest, 0)
        }
        IPPROTO_ICMP => (0, 0, 0),
        _ => return Err(counters::pass(reason::PASS_NOT_OURS)),
    };
    Ok((
        Packet {
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
            ifindex,
        },
        now,
    ))
}

/// Whether a packet to us would be relayed or answered with a TCP flag
/// combination no host's TCP accepts. UDP and ICMP carry 0 and pass.
#[inline(always)]
pub fn bad_tcp_flags(pkt: &Packet) -> bool {
    pkt.proto == IPPROTO_TCP && !policy::tcp_flags_valid(pkt.tcp_flags)
}

/// Whether `saddr` (network order) is no client's: a martian range, or an
/// address of this node (anything in `local_addrs`: VIP, SNAT, interface,
/// subnet broadcast). Checked where a packet would open a flow or be
/// answered; costs a hash lookup, so not on the established path.
#[inline(always)]
pub fn martian_source(saddr: u32) -> bool {
    // SAFETY: lookups only compare keys.
    policy::martian_source_range(saddr) || unsafe { LOCAL_ADDRS.get(&saddr) }.is_some()
}

/// Fragments, IP options and group-MAC frames: dropped when addressed to one
/// of our VIP/SNAT addresses (we cannot steer them and the host must not
/// answer for us), else the host's business (an address that only moves with
/// VRRP is the host's).
#[inline(always)]
fn ours_or_pass(daddr: u32, drop_reason: u32, pass_reason: u32) -> u32 {
    // SAFETY: lookups only compare keys.
    if unsafe { LOCAL_ADDRS.get(&daddr) }.is_some_and(|f| *f & SERVED != 0) {
        counters::drop(drop_reason)
    } else {
        counters::pass(pass_reason)
    }
}

/// `local_addrs` flags of the addresses the program serves itself.
pub const SERVED: u32 = local_addr_flags::VIP | local_addr_flags::SNAT;
