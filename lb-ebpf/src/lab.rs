//! Programs for labs and benchmarks, never loaded by `lbd`.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::headers::{
    ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, EthHdr, IPV4_MIN_HLEN, Ipv4Hdr, TcpHdr,
    VLAN_HLEN, VlanHdr,
};

/// Attached in native mode to the bridge-side peer of a lab veth: XDP_TX on a
/// veth only reaches the peer when the peer runs a native XDP program.
#[xdp]
pub fn lab_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Benchmark baseline: parses the same headers as `lb` (Ethernet, one VLAN
/// tag, IPv4, the L4 ports) and bounces the frame with XDP_TX, so the
/// benchmark can report lb's cost relative to "parse and send".
#[xdp]
pub fn bench_baseline(ctx: XdpContext) -> u32 {
    match parse(&ctx) {
        Some(()) => xdp_action::XDP_TX,
        None => xdp_action::XDP_DROP,
    }
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    if ctx.data() + offset + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((ctx.data() + offset) as *const T)
}

#[inline(always)]
fn parse(ctx: &XdpContext) -> Option<()> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    let mut l3 = ETH_HLEN;
    // SAFETY: bounds-checked by ptr_at.
    let mut proto = unsafe { (*eth).proto };
    if proto == ETH_P_8021Q.to_be() || proto == ETH_P_8021AD.to_be() {
        let vlan = ptr_at::<VlanHdr>(ctx, ETH_HLEN)?;
        proto = unsafe { (*vlan).proto };
        l3 += VLAN_HLEN;
    }
    if proto != ETH_P_IP.to_be() {
        return None;
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, l3)?;
    if unsafe { (*ip).ver_ihl } != 0x45 {
        return None;
    }
    let th = ptr_at::<TcpHdr>(ctx, l3 + IPV4_MIN_HLEN)?;
    // Touch the ports like lb does for its flow key.
    let ports = unsafe { (*th).source ^ (*th).dest };
    core::hint::black_box(ports);
    Some(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
