//! The client, service and SNAT addresses and ports every XDP test-run
//! suite (xdp_prog, xdp_cookie, xdp_hostile) builds its frames with, beside
//! the harness's own next hops (`xdp_harness`): one client of VIP:443
//! translated to a backend's port 8443 from the LB's backend-side address.

use std::net::Ipv4Addr;

use crate::packet::Mac;
use crate::xdp_harness::LB_BACKEND_SIDE_IP;

pub const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0xc1];
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);
pub const CPORT: u16 = 51000;
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const VPORT: u16 = 443;
/// SNAT address of the TCP service: the LB's backend-side address.
pub const SNAT: Ipv4Addr = LB_BACKEND_SIDE_IP;
pub const BPORT: u16 = 8443;
pub const SNAT_MIN: u16 = 40000;
pub const SNAT_MAX: u16 = 40999;
/// The client's ISN in a suite's SYN, and the backend's in its SYN-ACK.
pub const CLIENT_ISN: u32 = 0x0a0b_0c0d;
pub const BACKEND_ISN: u32 = 0x7000_0000;
