//! Sending a rewritten frame on: back out of the device it came in on
//! (XDP_TX, the cheap case) or redirected to the backend's or client's
//! device. Shared by every path that forwards (flows, ICMP errors, SYN
//! cookie handshakes), so none of them depends on another to send.

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_redirect};

#[inline(always)]
pub fn transmit(egress: u32, ingress: u32) -> u32 {
    if egress == ingress {
        xdp_action::XDP_TX
    } else {
        // SAFETY: plain helper call.
        unsafe { bpf_redirect(egress, 0) as u32 }
    }
}
