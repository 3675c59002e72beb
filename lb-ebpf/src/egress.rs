//! The last steps of relaying a packet, shared by every path that forwards
//! (flows, ICMP errors, SYN cookie handshakes), so none of them depends on
//! another: the IPv4 header as a router leaves it (TTL down by one, the new
//! addresses, the checksum updated incrementally), then the frame sent back
//! out of the device it came in on (XDP_TX, the cheap case) or redirected.

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_redirect};
use lb_common::{Flow, csum, headers::Ipv4Hdr};

/// Rewrites `ip` for relaying on `flow` (to its `nat_src_ip` ->
/// `nat_dst_ip`): TTL down by one and the addresses replaced, the header
/// checksum updated for both. Returns the addresses' checksum difference, which a TCP or UDP
/// checksum needs too (the pseudo-header). The caller has refused a TTL of
/// 1 or 0 already (router semantics: README, "Data path"): it knows which
/// reason to count.
#[inline(always)]
pub fn relay_ipv4(ip: &mut Ipv4Hdr, flow: &Flow) -> u64 {
    let ttl_word = u16::from_ne_bytes([ip.ttl, ip.proto]);
    ip.ttl -= 1;
    let addr_diff = csum::diff32(
        csum::diff32(0, ip.saddr, flow.nat_src_ip),
        ip.daddr,
        flow.nat_dst_ip,
    );
    ip.saddr = flow.nat_src_ip;
    ip.daddr = flow.nat_dst_ip;
    ip.check = csum::apply(
        ip.check,
        csum::diff16(addr_diff, ttl_word, u16::from_ne_bytes([ip.ttl, ip.proto])),
    );
    addr_diff
}

#[inline(always)]
pub fn transmit(egress: u32, ingress: u32) -> u32 {
    if egress == ingress {
        xdp_action::XDP_TX
    } else {
        // SAFETY: plain helper call.
        unsafe { bpf_redirect(egress, 0) as u32 }
    }
}
