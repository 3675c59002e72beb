//! What the acceptance policy needs to know of the host: the interface's MAC
//! (the `ifaces` map: the only unicast destination the program forwards or
//! answers frames to) and the node's own addresses and subnet broadcasts
//! (`local_addrs` flags NODE and BROADCAST: never a client's source).
//!
//! The pure parts (MAC text, broadcast arithmetic, merging) are unit-tested;
//! reading sysfs and getifaddrs is the thin I/O around them.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use aya::maps::{Array, MapData};
use lb_common::{IFACE_SLOTS, Iface, local_addr_flags};

/// Writes `ifindex`'s row: its MAC, at `ifindex % IFACE_SLOTS`. A slot held by
/// another interface is an error (the program would check the wrong MAC).
pub fn write(map: &mut Array<MapData, Iface>, ifindex: u32, mac: [u8; 6]) -> Result<()> {
    let slot = ifindex % IFACE_SLOTS;
    let old = map
        .get(&slot, 0)
        .with_context(|| format!("reading ifaces[{slot}]"))?;
    if old.ifindex != 0 && old.ifindex != ifindex {
        bail!(
            "interfaces {} and {ifindex} share slot {slot} of the ifaces map; the program can describe only one of them",
            old.ifindex
        );
    }
    let row = Iface {
        ifindex,
        mac,
        _pad: [0; 2],
    };
    map.set(slot, row, 0)
        .with_context(|| format!("writing ifaces[{slot}] for ifindex {ifindex}"))
}

/// The MAC of `iface`, from getifaddrs (netlink: it follows the calling
/// thread's network namespace, which sysfs does not).
pub fn mac_of(iface: &str) -> Result<[u8; 6]> {
    let mut mac = None;
    for_each_addr(
        iface,
        |sa| {
            // SAFETY: the family says this is a sockaddr_ll.
            let ll = unsafe { &*(sa as *const libc::sockaddr_ll) };
            if ll.sll_family as i32 == libc::AF_PACKET && ll.sll_halen == 6 {
                let mut m = [0u8; 6];
                m.copy_from_slice(&ll.sll_addr[..6]);
                mac = Some(m);
            }
        },
        |_, _| {},
    )?;
    mac.with_context(|| format!("{iface} has no 6-byte Ethernet address (is it an Ethernet interface in this namespace?)"))
}

/// `aa:bb:cc:dd:ee:ff` to bytes; an interface without a 6-byte Ethernet
/// address cannot carry the data path.
pub fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts
            .next()
            .context("not an Ethernet address (fewer than 6 bytes)")?;
        if part.len() != 2 {
            bail!("not an Ethernet address ({part:?} is not two hex digits)");
        }
        *byte = u8::from_str_radix(part, 16)
            .with_context(|| format!("not an Ethernet address ({part:?} is not hex)"))?;
    }
    if parts.next().is_some() {
        bail!("not an Ethernet address (more than 6 bytes)");
    }
    Ok(mac)
}

/// `local_addrs` rows (network order address, flags) for the IPv4 addresses
/// of an interface, each with its netmask: the address itself (NODE) and,
/// for prefixes up to /30, the subnet's broadcast (BROADCAST). /31 and /32
/// have none (RFC 3021).
pub fn node_addrs(addrs: &[(Ipv4Addr, Ipv4Addr)]) -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    for (addr, mask) in addrs {
        let a = u32::from(*addr);
        let m = u32::from(*mask);
        *out.entry(a.to_be()).or_default() |= local_addr_flags::NODE;
        if m.leading_ones() <= 30 && m.count_zeros() == m.trailing_zeros() {
            *out.entry((a | !m).to_be()).or_default() |= local_addr_flags::BROADCAST;
        }
    }
    out
}

/// `desired` with the host's rows merged in (flags or-ed): a VIP the
/// interface carries stays a VIP and becomes a NODE address too.
pub fn merge(desired: &[(u32, u32)], host: &BTreeMap<u32, u32>) -> Vec<(u32, u32)> {
    let mut all: BTreeMap<u32, u32> = desired.iter().copied().collect();
    for (addr, flags) in host {
        *all.entry(*addr).or_default() |= flags;
    }
    all.into_iter().collect()
}

/// The IPv4 addresses and netmasks of `iface`, from getifaddrs.
pub fn ipv4_addrs(iface: &str) -> Result<Vec<(Ipv4Addr, Ipv4Addr)>> {
    let mut out = Vec::new();
    for_each_addr(iface, |_| {}, |a, m| out.push((a, m)))?;
    Ok(out)
}

/// Walks getifaddrs for `iface`: `link` sees each AF_PACKET address, `inet`
/// each IPv4 address with its netmask.
fn for_each_addr(
    iface: &str,
    mut link: impl FnMut(*const libc::sockaddr),
    mut inet: impl FnMut(Ipv4Addr, Ipv4Addr),
) -> Result<()> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: head is a valid out-pointer; freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("listing the addresses of {iface} (getifaddrs)"));
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned, alive until freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name, per getifaddrs.
        if unsafe { CStr::from_ptr(ifa.ifa_name) }.to_bytes() != iface.as_bytes() {
            continue;
        }
        // SAFETY: non-null sockaddrs, read as the family says they are.
        unsafe {
            match (*ifa.ifa_addr).sa_family as i32 {
                libc::AF_PACKET => link(ifa.ifa_addr),
                libc::AF_INET if !ifa.ifa_netmask.is_null() => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
                    inet(
                        Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                        Ipv4Addr::from(u32::from_be(m.sin_addr.s_addr)),
                    );
                }
                _ => {}
            }
        }
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network_order(a: [u8; 4]) -> u32 {
        u32::from(Ipv4Addr::from(a)).to_be()
    }

    #[test]
    fn macs_parse_or_say_why_not() {
        assert_eq!(
            parse_mac("02:00:00:00:00:0a").unwrap(),
            [2, 0, 0, 0, 0, 0x0a]
        );
        assert_eq!(parse_mac("FF:ff:00:11:22:33").unwrap()[0], 0xff);
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "2:0:0:0:0:0",
            "zz:00:00:00:00:00",
        ] {
            let e = format!("{:#}", parse_mac(bad).unwrap_err());
            assert!(e.contains("not an Ethernet address"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn node_addresses_and_broadcasts() {
        let rows = node_addrs(&[
            ([192, 0, 2, 2].into(), [255, 255, 255, 0].into()),
            ([203, 0, 113, 2].into(), [255, 255, 255, 128].into()),
            ([198, 51, 100, 7].into(), [255, 255, 255, 254].into()),
            ([198, 51, 100, 9].into(), [255, 255, 255, 255].into()),
        ]);
        let want: BTreeMap<u32, u32> = [
            (network_order([192, 0, 2, 2]), local_addr_flags::NODE),
            (network_order([192, 0, 2, 255]), local_addr_flags::BROADCAST),
            (network_order([203, 0, 113, 2]), local_addr_flags::NODE),
            (
                network_order([203, 0, 113, 127]),
                local_addr_flags::BROADCAST,
            ),
            (network_order([198, 51, 100, 7]), local_addr_flags::NODE),
            (network_order([198, 51, 100, 9]), local_addr_flags::NODE),
        ]
        .into_iter()
        .collect();
        assert_eq!(rows, want);
    }

    #[test]
    fn merge_ors_flags() {
        let vip = network_order([192, 0, 2, 10]);
        let node = network_order([192, 0, 2, 2]);
        let host: BTreeMap<u32, u32> = [
            (vip, local_addr_flags::NODE),
            (node, local_addr_flags::NODE),
        ]
        .into_iter()
        .collect();
        let merged = merge(&[(vip, local_addr_flags::VIP)], &host);
        assert_eq!(
            merged,
            vec![
                (node, local_addr_flags::NODE),
                (vip, local_addr_flags::VIP | local_addr_flags::NODE),
            ]
            .into_iter()
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
    }
}
