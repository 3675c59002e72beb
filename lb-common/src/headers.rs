//! Wire layouts of the headers the data path parses (IEEE 802.3/802.1Q,
//! RFC 791, RFC 793, RFC 768, RFC 792). Multi-byte fields are network order as
//! in the packet.

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network order.
    pub proto: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VlanHdr {
    pub tci: u16,
    /// Network order: the encapsulated EtherType.
    pub proto: u16,
}

/// ARP for IPv4 over Ethernet (RFC 826): the only kind the program reads.
pub const ARP_ETH_IPV4_LEN: usize = 28;
pub const ARPHRD_ETHER: u16 = 1;
pub const ARPOP_REQUEST: u16 = 1;
pub const ARPOP_REPLY: u16 = 2;

/// RFC 826 with 6-byte hardware and 4-byte protocol addresses. Addresses are
/// byte arrays: the IPv4 ones sit at offsets 14 and 24, not 4-byte aligned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ArpEthIpv4 {
    /// Network order: `ARPHRD_ETHER`.
    pub htype: u16,
    /// Network order: `ETH_P_IP`.
    pub ptype: u16,
    pub hlen: u8,
    pub plen: u8,
    /// Network order: `ARPOP_REQUEST`, `ARPOP_REPLY`.
    pub op: u16,
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

impl ArpEthIpv4 {
    /// Whether this is an IPv4-over-Ethernet request, whose target address
    /// (`tpa`) is what the sender asks the owner of.
    #[inline(always)]
    pub const fn is_ipv4_request(&self) -> bool {
        self.htype == ARPHRD_ETHER.to_be()
            && self.ptype == ETH_P_IP.to_be()
            && self.hlen == 6
            && self.plen == 4
            && self.op == ARPOP_REQUEST.to_be()
    }

    /// The target protocol address as the data path keys addresses
    /// (network order in a `u32`).
    #[inline(always)]
    pub const fn target_ip(&self) -> u32 {
        u32::from_ne_bytes(self.tpa)
    }
}

pub const IPV4_MIN_HLEN: usize = 20;
/// `frag_off` masks, host order after `u16::from_be`.
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET: u16 = 0x1fff;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Ipv4Hdr {
    /// Version (high nibble) and IHL (low nibble, in 32-bit words).
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

impl Ipv4Hdr {
    #[inline(always)]
    pub const fn version(&self) -> u8 {
        self.ver_ihl >> 4
    }
    /// Header length in bytes.
    #[inline(always)]
    pub const fn header_len(&self) -> usize {
        ((self.ver_ihl & 0x0f) as usize) * 4
    }
}

pub const TCP_MIN_HLEN: usize = 20;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpHdr {
    pub source: u16,
    pub dest: u16,
    pub seq: u32,
    pub ack_seq: u32,
    /// Data offset (high nibble, in 32-bit words) and reserved bits.
    pub doff_res: u8,
    pub flags: u8,
    pub window: u16,
    pub check: u16,
    pub urg_ptr: u16,
}

impl TcpHdr {
    /// Header length in bytes.
    #[inline(always)]
    pub const fn header_len(&self) -> usize {
        ((self.doff_res >> 4) as usize) * 4
    }
}

pub const UDP_HLEN: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpHdr {
    pub source: u16,
    pub dest: u16,
    pub len: u16,
    pub check: u16,
}

pub const ICMP_HLEN: usize = 8;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETERPROB: u8 = 12;
pub const ICMP_FRAG_NEEDED: u8 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: u16,
    /// Type-specific (for "fragmentation needed": unused + next-hop MTU).
    pub rest: u32,
}

impl IcmpHdr {
    /// Error messages that quote the offending packet's headers.
    #[inline(always)]
    pub const fn is_error(&self) -> bool {
        matches!(
            self.kind,
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn wire_sizes() {
        assert_eq!(size_of::<EthHdr>(), ETH_HLEN);
        assert_eq!(size_of::<VlanHdr>(), VLAN_HLEN);
        assert_eq!(size_of::<Ipv4Hdr>(), IPV4_MIN_HLEN);
        assert_eq!(size_of::<TcpHdr>(), TCP_MIN_HLEN);
        assert_eq!(size_of::<UdpHdr>(), UDP_HLEN);
        assert_eq!(size_of::<IcmpHdr>(), ICMP_HLEN);
        assert_eq!(size_of::<ArpEthIpv4>(), ARP_ETH_IPV4_LEN);
        assert_eq!(core::mem::align_of::<ArpEthIpv4>(), 2);
    }

    #[test]
    fn arp_request_and_its_target() {
        // who-has 192.0.2.10 tell 192.0.2.1, as on the wire.
        let wire: [u8; 28] = [
            0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 192, 0, 2, 10,
        ];
        // SAFETY: 28 bytes, and the type is valid for any bit pattern.
        let arp: ArpEthIpv4 = unsafe { core::ptr::read_unaligned(wire.as_ptr().cast()) };
        assert!(arp.is_ipv4_request());
        assert_eq!(arp.target_ip(), u32::from_be_bytes([192, 0, 2, 10]).to_be());
        let mut reply = arp;
        reply.op = ARPOP_REPLY.to_be();
        assert!(!reply.is_ipv4_request());
        let mut other_hw = arp;
        other_hw.hlen = 8;
        assert!(!other_hw.is_ipv4_request());
    }
}
