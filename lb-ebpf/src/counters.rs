//! Per-CPU counters: one increment per packet at most, no locks.

use aya_ebpf::bindings::xdp_action;
use lb_common::{Flow, direction};

use crate::maps::{BACKEND_STATS, REASONS, SERVICE_STATS};

#[inline(always)]
pub fn count(reason: u32) {
    if let Some(c) = REASONS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU slot is only touched by this CPU.
        unsafe { *c += 1 };
    }
}

/// Counts `reason` and lets the host have the packet.
#[inline(always)]
pub fn pass(reason: u32) -> u32 {
    count(reason);
    xdp_action::XDP_PASS
}

/// Counts `reason` and drops the packet.
#[inline(always)]
pub fn drop(reason: u32) -> u32 {
    count(reason);
    xdp_action::XDP_DROP
}

/// Accounts a forwarded packet to its service and backend.
#[inline(always)]
pub fn account(flow: &Flow, bytes: u64) {
    let to_backend = flow.direction == direction::TO_BACKEND;
    if let Some(s) = SERVICE_STATS.get_ptr_mut(flow.service_id) {
        // SAFETY: per-CPU slot.
        let s = unsafe { &mut *s };
        if to_backend {
            s.packets_to_backend += 1;
            s.bytes_to_backend += bytes;
        } else {
            s.packets_to_client += 1;
            s.bytes_to_client += bytes;
        }
    }
    if let Some(b) = BACKEND_STATS.get_ptr_mut(flow.backend_id) {
        // SAFETY: per-CPU slot.
        let b = unsafe { &mut *b };
        if to_backend {
            b.packets_to_backend += 1;
            b.bytes_to_backend += bytes;
        } else {
            b.packets_to_client += 1;
            b.bytes_to_client += bytes;
        }
    }
}

#[inline(always)]
pub fn new_flow(service_id: u32, backend_id: u32) {
    if let Some(s) = SERVICE_STATS.get_ptr_mut(service_id) {
        unsafe { (*s).new_flows += 1 };
    }
    if let Some(b) = BACKEND_STATS.get_ptr_mut(backend_id) {
        unsafe { (*b).new_flows += 1 };
    }
}

#[inline(always)]
pub fn rst_no_backend(service_id: u32) {
    if let Some(s) = SERVICE_STATS.get_ptr_mut(service_id) {
        unsafe { (*s).rst_no_backend += 1 };
    }
}
