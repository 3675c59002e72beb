//! Gratuitous ARP for the VIPs of a new master, so that the routers and
//! clients of the segment repoint their ARP caches at once instead of when
//! their entries expire.
//!
//! Each frame is an ARP request from the interface's MAC with sender IP =
//! target IP = the VIP, to the Ethernet broadcast address (the form
//! keepalived sends and RFC 5227 calls an announcement). A burst of `count`
//! frames per VIP, `interval` apart, survives a lost frame or a switch that
//! is still learning the port.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::socket::interface_index;

/// Ethernet header + ARP for IPv4 over Ethernet.
pub const FRAME_LEN: usize = 14 + 28;
/// Ethernet type of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// ARP operation: request.
pub const ARP_REQUEST: u16 = 1;
const BROADCAST: [u8; 6] = [0xff; 6];

/// A MAC address.
pub type Mac = [u8; 6];

/// The announcement frame for `vip` from `mac`.
pub fn announcement(mac: Mac, vip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    // Target hardware address stays zero: unknown, as in any request.
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// How many announcements per VIP and how far apart (keepalived's
/// `vrrp_garp_master_repeat` and `vrrp_garp_interval`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burst {
    pub count: u32,
    pub interval: Duration,
}

/// An AF_PACKET socket that sends announcements out of one interface.
pub struct GarpSender {
    fd: OwnedFd,
    ifindex: i32,
    mac: Mac,
    iface: String,
}

impl GarpSender {
    /// Opens the socket on `iface` in the calling thread's namespace and
    /// reads the interface's MAC. Needs CAP_NET_RAW.
    pub fn open(iface: &str) -> Result<Self> {
        let ifindex = interface_index(iface)?.get() as i32;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETHERTYPE_ARP.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error()).with_context(|| {
                format!("opening a packet socket on {iface} for gratuitous ARP (needs CAP_NET_RAW)")
            });
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mac = hardware_address(&fd, iface)?;
        Ok(GarpSender {
            fd,
            ifindex,
            mac,
            iface: iface.to_string(),
        })
    }

    /// The interface's MAC, which the frames carry.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// Sends one announcement for every VIP.
    pub fn announce(&self, vips: &[Ipv4Addr]) -> Result<()> {
        for &vip in vips {
            self.send(&announcement(self.mac, vip))
                .with_context(|| format!("sending a gratuitous ARP for {vip} on {}", self.iface))?;
        }
        Ok(())
    }

    /// `burst.count` rounds of `announce`, `burst.interval` apart.
    pub async fn announce_burst(&self, vips: &[Ipv4Addr], burst: Burst) -> Result<()> {
        for round in 0..burst.count {
            if round > 0 {
                tokio::time::sleep(burst.interval).await;
            }
            self.announce(vips)?;
        }
        Ok(())
    }

    fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = ETHERTYPE_ARP.to_be();
        to.sll_ifindex = self.ifindex;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&BROADCAST);
        // SAFETY: the buffer and address pointers are valid for their lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error().into());
        }
        if sent as usize != frame.len() {
            bail!("the kernel sent {sent} of {} bytes", frame.len());
        }
        Ok(())
    }
}

/// The MAC of `iface` (SIOCGIFHWADDR), in the socket's namespace.
fn hardware_address(fd: &OwnedFd, iface: &str) -> Result<Mac> {
    // SAFETY: ifreq is plain data; all-zero is a valid start.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = iface.as_bytes();
    if name.len() >= req.ifr_name.len() {
        bail!("the interface name {iface} is longer than the kernel allows");
    }
    for (dst, &src) in req.ifr_name.iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq the ioctl fills in.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("reading the MAC address of {iface}"));
    }
    // SAFETY: SIOCGIFHWADDR filled the hardware-address member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (dst, &src) in mac.iter_mut().zip(&data) {
        *dst = src as u8;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_layout() {
        let mac = [0x02, 0, 0x5e, 1, 2, 3];
        let vip = Ipv4Addr::new(192, 0, 2, 10);
        let f = announcement(mac, vip);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[22..28], &mac, "sender MAC");
        assert_eq!(&f[28..32], &vip.octets(), "sender IP");
        assert_eq!(&f[32..38], &[0; 6], "target MAC");
        assert_eq!(&f[38..42], &vip.octets(), "target IP");
    }
}
