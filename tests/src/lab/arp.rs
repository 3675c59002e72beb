//! Who answers ARP for an address, seen from another lab host: the
//! network's view of which node holds a VIP. Address lists alone cannot
//! tell after a `kill -9` (the dead agent's VIPs stay on its interface and
//! only its XDP lease keeps them quiet), and this is what a client's next
//! ARP request would get.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Lab, netns};

/// A MAC address as `ip link` prints it (lowercase, colon separated).
pub type Mac = String;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const FRAME_LEN: usize = 42;

/// `node`'s (short name) eth0 MAC address.
pub fn eth0_mac(lab: &Lab, node: &str) -> Result<Mac> {
    let out = netns::run(Command::new("ip").args([
        "-n",
        lab.netns(node)?,
        "-o",
        "link",
        "show",
        "dev",
        "eth0",
    ]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words
        .find(|w| *w == "link/ether")
        .and_then(|_| words.next())
        .map(str::to_string)
        .with_context(|| format!("no MAC address for eth0 of {node} in: {text}"))
}

/// Broadcasts an ARP request for `target` from `from`'s (short name) eth0,
/// sender address `sender`, and returns the MACs that answered within
/// `listen` (sorted, each once).
pub fn who_has(
    lab: &Lab,
    from: &str,
    sender: Ipv4Addr,
    target: Ipv4Addr,
    listen: Duration,
) -> Result<Vec<Mac>> {
    let own = eth0_mac(lab, from)?;
    let own = parse_mac(&own)?;
    lab.run_in(from, move || probe(own, sender, target, listen))?
}

fn probe(own: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr, listen: Duration) -> Result<Vec<Mac>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain syscall; the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("could not open a packet socket");
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) } as i32;
    if ifindex == 0 {
        bail!("this namespace has no eth0");
    }
    // SAFETY: sockaddr_ll is plain old data; all zeros is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ARP.to_be();
    addr.sll_ifindex = ifindex;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 20_000,
    };
    // SAFETY: valid fd, pointer and length of a live timeval.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as u32,
        )
    };
    let frame = request(own, sender, target);
    // SAFETY: valid fd, buffer and sockaddr_ll of the right length.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error()).context("could not send the ARP request");
    }
    let mut macs = Vec::new();
    let deadline = Instant::now() + listen;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        // SAFETY: valid fd and buffer.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            continue;
        }
        if let Some(mac) = reply_from(&buf[..n as usize], target)
            && !macs.contains(&mac)
        {
            macs.push(mac);
        }
    }
    macs.sort();
    Ok(macs)
}

/// An Ethernet broadcast ARP request.
fn request(own: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&own);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    f[22..28].copy_from_slice(&own);
    f[28..32].copy_from_slice(&sender.octets());
    // Target hardware address stays zero.
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// The sender MAC of an ARP reply that says who has `target`.
fn reply_from(frame: &[u8], target: Ipv4Addr) -> Option<Mac> {
    if frame.len() < FRAME_LEN
        || frame[12..14] != ETH_P_ARP.to_be_bytes()
        || frame[20..22] != ARP_REPLY.to_be_bytes()
        || frame[28..32] != target.octets()
    {
        return None;
    }
    Some(format_mac(&frame[22..28]))
}

fn format_mac(b: &[u8]) -> Mac {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let parts: Vec<u8> = text
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{text:?} is not a MAC address"))?;
    match <[u8; 6]>::try_from(parts) {
        Ok(mac) => Ok(mac),
        Err(_) => bail!("{text:?} is not a MAC address"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_to_our_request_is_recognised() {
        let own = [2, 0, 0, 0, 0, 1];
        let vip = Ipv4Addr::new(192, 0, 2, 10);
        let mut reply = request(own, Ipv4Addr::new(203, 0, 113, 10), vip);
        // Turn it into the holder's answer.
        reply[20..22].copy_from_slice(&ARP_REPLY.to_be_bytes());
        reply[22..28].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        reply[28..32].copy_from_slice(&vip.octets());
        assert_eq!(
            reply_from(&reply, vip).as_deref(),
            Some("02:00:00:00:00:09")
        );
        assert_eq!(reply_from(&reply, Ipv4Addr::new(192, 0, 2, 11)), None);
        let req = request(own, Ipv4Addr::new(203, 0, 113, 10), vip);
        assert_eq!(reply_from(&req, vip), None, "a request is no answer");
        assert_eq!(parse_mac("02:00:00:00:00:01").unwrap(), own);
        assert!(parse_mac("02:00").is_err());
    }
}
