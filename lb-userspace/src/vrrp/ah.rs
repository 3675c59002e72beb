//! VRRPv2 `auth_type AH`: IPsec AH (RFC 2402 layout) as keepalived 2.2
//! builds and checks it, so that an lbd node and a keepalived node can
//! authenticate each other.
//!
//! Facts, from keepalived's vrrp.c / vrrp_ipsecah.[ch] (v2.2.7) and
//! confirmed by captures of keepalived 2.2.7 (see `captured.rs`):
//!
//! - Datagram: IPv4 header (20 bytes, no options, protocol 51) | AH (24
//!   bytes) | VRRPv2 packet. The IP total length includes the AH.
//! - AH: next header 112 (VRRP), payload length 4 (32-bit words minus 2 for
//!   a 96-bit ICV), reserved 0, SPI = the sender's IPv4 source address (as
//!   the same 4 bytes, network order), sequence number, 12-byte ICV.
//! - The VRRP packet inside says auth type 2 and carries 8 zero bytes of
//!   authentication data; its checksum is the ordinary v2 one.
//! - ICV = the first 12 bytes of HMAC-MD5 (RFC 2104) keyed with the
//!   password as keepalived stores it: exactly 8 bytes, zero padded (longer
//!   passwords are truncated to 8 by keepalived's parser).
//! - HMAC input: the IP header with TOS, flags/fragment offset and header
//!   checksum set to zero, and TTL set to zero only for unicast instances
//!   (multicast keeps TTL 255 inside the hash); then the AH header with the
//!   ICV zeroed; then the VRRP packet. Total length, id, protocol and the
//!   addresses are hashed as sent, so the sender must write the header
//!   itself (IP_HDRINCL) with a nonzero id, or the kernel would pick one.
//!   keepalived numbers the id from 1 upwards per instance.
//! - Sequence number: keepalived keeps ONE counter per instance for sending
//!   and receiving. It starts at 0; each advert sent increments it first
//!   (the first advert carries 1). A received advert is accepted only if its
//!   sequence number is strictly greater than the counter, which then takes
//!   that value; so after hearing a peer, the next own advert continues
//!   above the peer's numbers. A master that hears a lower-priority advert
//!   sets the counter to its number + 1 (either way our next advert is
//!   above the peer's). The receiver also requires SPI == IP source.
//!   `SeqCounter` follows these rules so each side accepts the other's
//!   adverts after a takeover.

use std::net::Ipv4Addr;

use hmac::{Hmac, Mac};
use md5::Md5;

use super::ipv4::{HEADER_LEN as IP_HEADER_LEN, Ipv4Header, be32};
use super::packet::{PROTO_VRRP, Password};

/// IP protocol number of AH.
pub const PROTO_AH: u8 = 51;
/// Length of the AH header with a 96-bit ICV.
pub const AH_LEN: usize = 24;
/// The AH payload length field for a 96-bit ICV.
pub const AH_PAYLOAD_LEN: u8 = 4;
/// HMAC-MD5-96: the truncated digest length.
pub const ICV_LEN: usize = 12;
/// keepalived stops counting here (it then stops sending as master).
pub const SEQ_LIMIT: u32 = 0xffff_fffd;

/// What goes into one AH-authenticated advert.
#[derive(Clone, Copy, Debug)]
pub struct AhOutgoing<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP identification; nonzero (see the module docs).
    pub ip_id: u16,
    /// True for unicast peers: TTL is then left out of the ICV.
    pub unicast: bool,
    pub seq: u32,
    pub password: &'a Password,
    /// The encoded VRRPv2 packet (auth type 2).
    pub vrrp: &'a [u8],
}

/// The full IPv4 datagram (header + AH + VRRP), ready for a raw socket with
/// IP_HDRINCL; the IP header checksum is filled in too.
pub fn build_ah_packet(out: &AhOutgoing<'_>) -> Vec<u8> {
    let ip = Ipv4Header::advert(
        out.src,
        out.dst,
        PROTO_AH,
        out.ip_id,
        AH_LEN + out.vrrp.len(),
    );
    let mut ah = [0u8; AH_LEN];
    ah[0] = PROTO_VRRP;
    ah[1] = AH_PAYLOAD_LEN;
    ah[4..8].copy_from_slice(&out.src.octets());
    ah[8..12].copy_from_slice(&out.seq.to_be_bytes());
    let masked = masked_ip_header(&ip.encode_with_checksum(0), out.unicast);
    let icv = icv(out.password, &[&masked, &ah, out.vrrp]);
    ah[12..].copy_from_slice(&icv);

    let mut datagram = Vec::with_capacity(IP_HEADER_LEN + AH_LEN + out.vrrp.len());
    datagram.extend_from_slice(&ip.encode());
    datagram.extend_from_slice(&ah);
    datagram.extend_from_slice(out.vrrp);
    datagram
}

/// An AH header whose ICV and SPI verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AhVerified {
    pub seq: u32,
    /// Offset of the VRRP packet in the datagram.
    pub vrrp_offset: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AhError {
    /// Too short for the IP header plus AH.
    Truncated { len: usize },
    /// AH for some other protocol than VRRP (keepalived ignores those).
    NextHeader { next: u8 },
    /// Not the 96-bit ICV layout keepalived uses.
    PayloadLen { value: u8 },
    /// HMAC mismatch: wrong password or a modified packet.
    Icv,
    /// SPI is not the IP source address.
    Spi { spi: u32, src: Ipv4Addr },
}

/// Verifies the AH of a received datagram (IPv4 header + AH + VRRP) with
/// our password. The sequence number is returned, not judged: replays are
/// `SeqCounter::accepts`' business.
pub fn verify_ah(
    datagram: &[u8],
    password: &Password,
    unicast: bool,
) -> Result<AhVerified, AhError> {
    let ihl = usize::from(datagram.first().copied().unwrap_or(0) & 0x0f) * 4;
    let vrrp_offset = ihl + AH_LEN;
    if ihl < IP_HEADER_LEN || datagram.len() < vrrp_offset {
        return Err(AhError::Truncated {
            len: datagram.len(),
        });
    }
    let (ip, rest) = datagram.split_at(ihl);
    let (ah, vrrp) = rest.split_at(AH_LEN);
    if ah[0] != PROTO_VRRP {
        return Err(AhError::NextHeader { next: ah[0] });
    }
    if ah[1] != AH_PAYLOAD_LEN {
        return Err(AhError::PayloadLen { value: ah[1] });
    }
    let mut ip_masked = ip.to_vec();
    ip_masked[10..12].copy_from_slice(&[0, 0]);
    let ip_masked = masked_ip_header(&ip_masked, unicast);
    let mut ah_zeroed = [0u8; AH_LEN];
    ah_zeroed[..12].copy_from_slice(&ah[..12]);
    let expected = icv(password, &[&ip_masked, &ah_zeroed, vrrp]);
    // Constant time, as keepalived compares.
    let diff = expected
        .iter()
        .zip(&ah[12..])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(AhError::Icv);
    }
    let spi = be32(&ah[4..8]);
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    if spi != u32::from(src) {
        return Err(AhError::Spi { spi, src });
    }
    Ok(AhVerified {
        seq: be32(&ah[8..12]),
        vrrp_offset,
    })
}

/// keepalived's per-instance sequence counter, shared by sending and
/// receiving (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqCounter {
    value: u32,
}

impl SeqCounter {
    /// A counter starting at `value`; keepalived starts at 0. An agent that
    /// restarts while a peer remembers higher numbers may want to start
    /// higher (its first adverts would otherwise be taken as replays until
    /// the peer's own advert resynchronises both sides).
    pub fn starting_at(value: u32) -> Self {
        SeqCounter { value }
    }

    pub fn value(&self) -> u32 {
        self.value
    }

    /// The sequence number for the next advert sent. At keepalived's limit
    /// the number stays put (keepalived then gives up mastership).
    pub fn next_for_send(&mut self) -> u32 {
        if self.value <= SEQ_LIMIT {
            self.value += 1;
        }
        self.value
    }

    /// Whether a verified advert with `seq` is new; keepalived drops any
    /// sequence number not above the counter.
    pub fn accepts(&self, seq: u32) -> bool {
        seq > self.value
    }

    /// Records an accepted advert's sequence number.
    pub fn observe(&mut self, seq: u32) {
        self.value = self.value.max(seq);
    }
}

/// The IP header bytes as AH hashes them: mutable fields zeroed. The caller
/// has already zeroed the header checksum.
fn masked_ip_header(header: &[u8], unicast: bool) -> Vec<u8> {
    let mut h = header.to_vec();
    h[1] = 0; // TOS
    h[6] = 0; // flags and fragment offset
    h[7] = 0;
    if unicast {
        h[8] = 0; // TTL
    }
    h
}

fn icv(password: &Password, parts: &[&[u8]]) -> [u8; ICV_LEN] {
    let mut mac = Hmac::<Md5>::new_from_slice(password.bytes()).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    let digest = mac.finalize().into_bytes();
    let mut out = [0u8; ICV_LEN];
    out.copy_from_slice(&digest[..ICV_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::packet::{Advert, AuthField, Version};

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

    fn datagram(seq: u32, unicast: bool, password: &str) -> Vec<u8> {
        let vrrp = Advert {
            version: Version::V2,
            vrid: 11,
            priority: 101,
            interval_cs: 100,
            auth: AuthField::Ah,
            addrs: vec![Ipv4Addr::new(192, 0, 2, 10)],
        }
        .encode(SRC, PEER)
        .unwrap();
        build_ah_packet(&AhOutgoing {
            src: SRC,
            dst: PEER,
            ip_id: 1,
            unicast,
            seq,
            password: &Password::new(password).unwrap(),
            vrrp: &vrrp,
        })
    }

    #[test]
    fn rfc2202_hmac_md5_test_case_2() {
        // RFC 2202 test case 2 exercises the same HMAC with a short key:
        // "Jefe" zero padded to 8 bytes gives the same HMAC as "Jefe" since
        // HMAC pads the key with zeros to the block size anyway.
        let key = Password::new("Jefe").unwrap();
        let mac = icv(&key, &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            mac.to_vec(),
            [
                0x75, 0x0c, 0x78, 0x3e, 0x6a, 0xb0, 0xb5, 0x03, 0xea, 0xa8, 0x6e, 0x31
            ]
        );
    }

    #[test]
    fn layout_matches_keepalived() {
        let d = datagram(7, true, "Pass1234");
        let ip = Ipv4Header::parse(&d).unwrap();
        assert_eq!(ip.protocol, PROTO_AH);
        assert_eq!(usize::from(ip.total_len), 20 + 24 + 20);
        assert_eq!(&d[20..24], &[PROTO_VRRP, AH_PAYLOAD_LEN, 0, 0]);
        assert_eq!(&d[24..28], &SRC.octets());
        assert_eq!(&d[28..32], &7u32.to_be_bytes());
        assert_eq!(super::super::ipv4::checksum(&[&d[..20]]), 0);
    }

    #[test]
    fn verifies_own_packets_and_rejects_tampering() {
        for unicast in [true, false] {
            let d = datagram(7, unicast, "Pass1234");
            let pw = Password::new("Pass1234").unwrap();
            assert_eq!(
                verify_ah(&d, &pw, unicast),
                Ok(AhVerified {
                    seq: 7,
                    vrrp_offset: 44
                })
            );
            assert_eq!(
                verify_ah(&d, &Password::new("Pass1235").unwrap(), unicast),
                Err(AhError::Icv)
            );
            let mut prio = d.clone();
            prio[46] = 200;
            assert_eq!(verify_ah(&prio, &pw, unicast), Err(AhError::Icv));
            let mut seq = d.clone();
            seq[31] = 8;
            assert_eq!(verify_ah(&seq, &pw, unicast), Err(AhError::Icv));
            assert!(matches!(
                verify_ah(&d[..30], &pw, unicast),
                Err(AhError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn mutable_fields_do_not_matter_but_ttl_does_for_multicast() {
        let pw = Password::new("Pass1234").unwrap();
        for unicast in [true, false] {
            let mut d = datagram(1, unicast, "Pass1234");
            d[1] = 0x00; // TOS rewritten on the way
            d[6] = 0x40; // DF set
            d[10] ^= 0xff; // header checksum is not covered
            assert!(verify_ah(&d, &pw, unicast).is_ok());
            d[8] = 64; // a router decremented TTL
            assert_eq!(verify_ah(&d, &pw, unicast).is_ok(), unicast);
        }
    }

    #[test]
    fn sequence_counter_follows_keepalived() {
        let mut c = SeqCounter::default();
        assert_eq!(c.next_for_send(), 1);
        assert_eq!(c.next_for_send(), 2);
        assert!(!c.accepts(2), "a number already used is a replay");
        assert!(c.accepts(40));
        c.observe(40);
        assert!(!c.accepts(40));
        assert_eq!(c.next_for_send(), 41, "continues above the peer");
        let mut end = SeqCounter::starting_at(SEQ_LIMIT);
        assert_eq!(end.next_for_send(), SEQ_LIMIT + 1);
        assert_eq!(end.next_for_send(), SEQ_LIMIT + 1);
    }
}
