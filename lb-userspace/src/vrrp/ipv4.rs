//! The IPv4 header around a VRRP advert, and the Internet checksum.
//!
//! The agent reads adverts from raw sockets, which hand over the whole IPv4
//! datagram: the receive checks need its TTL, addresses and length, and AH
//! authenticates the header itself. With AH the sender writes the header
//! itself (IP_HDRINCL), because the ICV covers it.

use std::net::Ipv4Addr;

/// Length of an IPv4 header without options (what keepalived and we send).
pub const HEADER_LEN: usize = 20;

/// TOS keepalived sets on adverts: precedence "internetwork control" (0xc0).
pub const TOS_NETWORK_CONTROL: u8 = 0xc0;

/// The fields of an IPv4 header that VRRP cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Header length in bytes (IHL * 4), 20 unless options are present.
    pub header_len: usize,
    pub tos: u8,
    pub total_len: u16,
    pub id: u16,
    /// Flags and fragment offset, as on the wire.
    pub flags_fragment: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub checksum: u16,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

/// Why a datagram is not a usable IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv4Error {
    /// Shorter than the header (or than the header length it announces).
    Truncated { len: usize },
    /// The version nibble is not 4.
    NotIpv4 { version: u8 },
    /// IHL below 5.
    BadHeaderLength { ihl: u8 },
    /// The total length field disagrees with the bytes received.
    TotalLength { field: u16, received: usize },
}

impl Ipv4Header {
    /// Parses the header of `datagram` and checks that its total length is
    /// exactly the number of bytes received (keepalived does the same).
    pub fn parse(datagram: &[u8]) -> Result<Self, Ipv4Error> {
        if datagram.len() < HEADER_LEN {
            return Err(Ipv4Error::Truncated {
                len: datagram.len(),
            });
        }
        let version = datagram[0] >> 4;
        if version != 4 {
            return Err(Ipv4Error::NotIpv4 { version });
        }
        let ihl = datagram[0] & 0x0f;
        if ihl < 5 {
            return Err(Ipv4Error::BadHeaderLength { ihl });
        }
        let header_len = usize::from(ihl) * 4;
        if datagram.len() < header_len {
            return Err(Ipv4Error::Truncated {
                len: datagram.len(),
            });
        }
        let total_len = be16(&datagram[2..4]);
        if usize::from(total_len) != datagram.len() {
            return Err(Ipv4Error::TotalLength {
                field: total_len,
                received: datagram.len(),
            });
        }
        Ok(Ipv4Header {
            header_len,
            tos: datagram[1],
            total_len,
            id: be16(&datagram[4..6]),
            flags_fragment: be16(&datagram[6..8]),
            ttl: datagram[8],
            protocol: datagram[9],
            checksum: be16(&datagram[10..12]),
            src: addr(&datagram[12..16]),
            dst: addr(&datagram[16..20]),
        })
    }

    /// A header without options, as keepalived builds it for an advert.
    pub fn advert(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, id: u16, payload_len: usize) -> Self {
        Ipv4Header {
            header_len: HEADER_LEN,
            tos: TOS_NETWORK_CONTROL,
            total_len: (HEADER_LEN + payload_len) as u16,
            id,
            flags_fragment: 0,
            ttl: 255,
            protocol,
            checksum: 0,
            src,
            dst,
        }
    }

    /// The 20 header bytes with the header checksum computed (options are
    /// never written).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = self.encode_with_checksum(0);
        let sum = checksum(&[&b]);
        b[10..12].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// The 20 header bytes with the given checksum field (AH hashes the
    /// header with a zero checksum).
    pub fn encode_with_checksum(&self, checksum: u16) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = 0x45;
        b[1] = self.tos;
        b[2..4].copy_from_slice(&self.total_len.to_be_bytes());
        b[4..6].copy_from_slice(&self.id.to_be_bytes());
        b[6..8].copy_from_slice(&self.flags_fragment.to_be_bytes());
        b[8] = self.ttl;
        b[9] = self.protocol;
        b[10..12].copy_from_slice(&checksum.to_be_bytes());
        b[12..16].copy_from_slice(&self.src.octets());
        b[16..20].copy_from_slice(&self.dst.octets());
        b
    }
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`; odd
/// part lengths are handled as if the parts were one buffer. Over data that
/// already holds a correct checksum the result is 0.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut pending: Option<u8> = None;
    for part in parts {
        for &byte in *part {
            match pending.take() {
                Some(high) => sum += u64::from(u16::from_be_bytes([high, byte])),
                None => pending = Some(byte),
            }
        }
    }
    if let Some(high) = pending {
        sum += u64::from(u16::from_be_bytes([high, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub(crate) fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

pub(crate) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

pub(crate) fn addr(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: the one's complement sum of these words is
        // 0xddf2, so the checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&data]), !0xddf2);
    }

    #[test]
    fn checksum_is_split_invariant_across_odd_parts() {
        let data = [0x45, 0xc0, 0x00, 0x28, 0x00, 0x01, 0x00];
        let whole = checksum(&[&data]);
        assert_eq!(checksum(&[&data[..3], &data[3..]]), whole);
        assert_eq!(checksum(&[&data[..1], &data[1..5], &data[5..]]), whole);
    }

    #[test]
    fn encoded_header_verifies_and_parses_back() {
        let src = Ipv4Addr::new(192, 0, 2, 1);
        let dst = Ipv4Addr::new(224, 0, 0, 18);
        let h = Ipv4Header::advert(src, dst, 112, 7, 20);
        let mut datagram = h.encode().to_vec();
        assert_eq!(checksum(&[&datagram]), 0);
        datagram.extend_from_slice(&[0; 20]);
        let parsed = Ipv4Header::parse(&datagram).unwrap();
        assert_eq!(parsed.ttl, 255);
        assert_eq!(parsed.tos, 0xc0);
        assert_eq!((parsed.src, parsed.dst, parsed.id), (src, dst, 7));
        assert_eq!(parsed.total_len, 40);
    }

    #[test]
    fn parse_rejects_bad_lengths() {
        let h = Ipv4Header::advert(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 112, 1, 8);
        let mut d = h.encode().to_vec();
        assert_eq!(
            Ipv4Header::parse(&d[..10]),
            Err(Ipv4Error::Truncated { len: 10 })
        );
        assert_eq!(
            Ipv4Header::parse(&d),
            Err(Ipv4Error::TotalLength {
                field: 28,
                received: 20
            })
        );
        d[0] = 0x65;
        assert_eq!(
            Ipv4Header::parse(&d),
            Err(Ipv4Error::NotIpv4 { version: 6 })
        );
    }
}
