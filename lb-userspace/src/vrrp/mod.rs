//! VRRP (RFC 5798 v3, RFC 3768 v2) for the virtual IPs, interoperable with
//! keepalived 2.2. This is the pure core: codec, AH, receive checks, the
//! state machine and tracking. The edges (raw sockets, rtnetlink VIPs,
//! gratuitous ARP, the agent's VRRP thread, the lease) call into it.
//!
//! The lease (DESIGN.md, "Agent death and restart"): the agent refreshes a
//! timestamp in a map every advertisement interval while VRRP runs; the XDP
//! program treats the VIPs as inactive (no forwarding, no ARP answers) once
//! the lease is older than the master-down interval, which is when the peer
//! takes over. `Machine::master_down_interval` gives that bound. A restarted
//! agent that finds a fresh lease should resume as master without a
//! failover; that start path belongs to the agent wiring, not to this core.

pub mod ah;
pub mod check;
pub mod ipv4;
pub mod packet;
pub mod state;
pub mod track;

#[cfg(test)]
mod captured;
#[cfg(test)]
mod pair_tests;
