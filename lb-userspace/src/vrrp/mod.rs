//! VRRP (RFC 5798 v3, RFC 3768 v2) for the virtual IPs, interoperable with
//! keepalived 2.2. The pure core: codec, AH, receive checks, the state
//! machine and tracking. The edges: raw sockets (`socket`), gratuitous ARP
//! (`garp`), and `runtime`, the agent's VRRP thread that drives it all
//! (timers, adverts, VIPs, tracking probes, the lease, resume).
//!
//! The lease (docs/architecture.md, "The lease"): the agent refreshes a
//! timestamp in a map every advertisement interval while VRRP runs; the XDP
//! program treats the VIPs as inactive (no forwarding, no ARP answers) once
//! the lease is older than the master-down interval, which is when the peer
//! takes over. `Machine::master_down_interval` gives that bound. A restarted
//! agent that finds a fresh lease resumes as master without a failover
//! (`runtime::resume`, `state::Event::Resume`).
//!
//! How `runtime` uses the core:
//! - Encode once per destination: the v3 checksum covers the destination
//!   (each unicast peer, or 224.0.0.18), and so does the AH ICV.
//! - AH adverts go out whole through a raw socket with IP_HDRINCL and a
//!   nonzero IP id (`ah::build_ah_packet`); plain ones may too
//!   (`ipv4::Ipv4Header::advert`), or use TTL 255 and TOS 0xc0 socket options.
//! - Receive with raw sockets for protocol 112 and, with AH, 51; pass every
//!   datagram through `check::check_advert`, count `DropReason::label`, and
//!   feed only `Ok` ones to `state::Machine` (`AdvertSeen::from`), then call
//!   `ah::SeqCounter::observe` with the AH sequence number.
//! - A restarted agent that resumes as master with AH must not start its
//!   sequence numbers at 0: the peer remembers the last one it accepted and
//!   would drop ours as replays until it takes over. `runtime::seq` floors
//!   them with the clock.

pub mod ah;
pub mod check;
pub mod config;
pub mod garp;
pub mod ipv4;
pub mod packet;
pub mod runtime;
pub mod socket;
pub mod state;
pub mod track;

#[cfg(test)]
mod captured;
#[cfg(test)]
mod pair_tests;
