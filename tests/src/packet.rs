//! Test frames built byte by byte, and a parser for the frames the XDP program
//! hands back.
//!
//! Checksums here are computed by the plainest reference code (sum of 16-bit
//! big-endian words, end-around carry, complement), on purpose independent of
//! `lb_common::csum`: a bug shared by the program and the tests would
//! otherwise go unnoticed.

use anyhow::{Context, Result, bail, ensure};
use std::net::Ipv4Addr;

pub type Mac = [u8; 6];

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// IPv4 flags/fragment-offset field values.
pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;

/// TCP flag bits (byte 13 of the header).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// The Internet checksum of `bytes` (RFC 1071), the reference way: add up
/// big-endian 16-bit words (a trailing odd byte padded with zero), fold the
/// carries back in, complement.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    !ones_complement_sum(bytes)
}

/// The folded one's-complement sum of `bytes` (not complemented).
pub fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        let hi = pair[0] as u64;
        let lo = if pair.len() == 2 { pair[1] as u64 } else { 0 };
        sum += (hi << 8) | lo;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The IPv4 pseudo-header followed by the L4 segment, as TCP and UDP sum it.
fn with_pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + segment.len());
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.push(0);
    v.push(proto);
    v.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    v.extend_from_slice(segment);
    v
}

/// The IPv4 header of a frame to build. `ihl` and `tot_len` override the
/// computed values to build malformed packets.
#[derive(Clone, Debug)]
pub struct Ipv4Spec {
    pub version: u8,
    pub ihl: Option<u8>,
    pub tos: u8,
    pub tot_len: Option<u16>,
    pub id: u16,
    pub flags_frag: u16,
    pub ttl: u8,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Options bytes, a multiple of 4 long.
    pub options: Vec<u8>,
}

impl Ipv4Spec {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Ipv4Spec {
            version: 4,
            ihl: None,
            tos: 0x10,
            tot_len: None,
            id: 0x1234,
            flags_frag: IP_DF,
            ttl: 61,
            proto,
            src,
            dst,
            options: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TcpSpec {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub urg: u16,
    /// Options bytes, a multiple of 4 long.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
    /// Overrides the data offset (in 32-bit words) to build malformed headers.
    pub doff: Option<u8>,
}

impl TcpSpec {
    pub fn new(sport: u16, dport: u16, flags: u8) -> Self {
        TcpSpec {
            sport,
            dport,
            seq: 0x1000_0001,
            ack: if flags & tcp_flags::ACK != 0 {
                0x2000_0002
            } else {
                0
            },
            flags,
            window: 64240,
            urg: 0,
            options: Vec::new(),
            payload: Vec::new(),
            doff: None,
        }
    }

    /// MSS 1460, SACK permitted, NOP, window scale 7: what a SYN carries.
    pub fn syn_options() -> Vec<u8> {
        vec![2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7, 1, 1]
    }
}

#[derive(Clone, Debug)]
pub struct UdpSpec {
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
    /// Send checksum 0 ("no checksum").
    pub no_checksum: bool,
    /// Overrides the UDP length field to build malformed headers.
    pub len: Option<u16>,
}

impl UdpSpec {
    pub fn new(sport: u16, dport: u16, payload: &[u8]) -> Self {
        UdpSpec {
            sport,
            dport,
            payload: payload.to_vec(),
            no_checksum: false,
            len: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct IcmpSpec {
    pub typ: u8,
    pub code: u8,
    /// Bytes 4..8: id/seq for echo, unused/MTU for errors.
    pub rest: [u8; 4],
    /// Echo data, or the quoted packet of an error.
    pub body: Vec<u8>,
}

impl IcmpSpec {
    /// Destination unreachable, fragmentation needed (type 3 code 4) with the
    /// next-hop MTU, quoting `quote` (an IP header and at least 8 bytes).
    pub fn frag_needed(mtu: u16, quote: Vec<u8>) -> Self {
        let m = mtu.to_be_bytes();
        IcmpSpec {
            typ: 3,
            code: 4,
            rest: [0, 0, m[0], m[1]],
            body: quote,
        }
    }

    pub fn echo_request(id: u16, seq: u16, data: &[u8]) -> Self {
        let (i, s) = (id.to_be_bytes(), seq.to_be_bytes());
        IcmpSpec {
            typ: 8,
            code: 0,
            rest: [i[0], i[1], s[0], s[1]],
            body: data.to_vec(),
        }
    }
}

#[derive(Clone, Debug)]
pub enum L4Spec {
    Tcp(TcpSpec),
    Udp(UdpSpec),
    Icmp(IcmpSpec),
    /// Bytes as given (no checksum computed).
    Raw(Vec<u8>),
}

/// What follows the Ethernet header.
#[derive(Clone, Debug)]
pub enum Payload {
    Ipv4(Ipv4Spec, L4Spec),
    /// Any other EtherType's bytes.
    Raw(Vec<u8>),
}

/// A whole frame to build.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    /// One tag: (TPID, TCI).
    pub vlan: Option<(u16, u16)>,
    pub ethertype: u16,
    pub payload: Payload,
    /// Pad the frame with zeros up to this length (Ethernet minimum is 60).
    pub pad_to: usize,
}

impl FrameSpec {
    pub fn ipv4(src_mac: Mac, dst_mac: Mac, ip: Ipv4Spec, l4: L4Spec) -> Self {
        FrameSpec {
            dst_mac,
            src_mac,
            vlan: None,
            ethertype: ETHERTYPE_IPV4,
            payload: Payload::Ipv4(ip, l4),
            pad_to: 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn tcp(
        src_mac: Mac,
        dst_mac: Mac,
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
        flags: u8,
    ) -> Self {
        Self::ipv4(
            src_mac,
            dst_mac,
            Ipv4Spec::new(src, dst, PROTO_TCP),
            L4Spec::Tcp(TcpSpec::new(sport, dport, flags)),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn udp(
        src_mac: Mac,
        dst_mac: Mac,
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
        payload: &[u8],
    ) -> Self {
        Self::ipv4(
            src_mac,
            dst_mac,
            Ipv4Spec::new(src, dst, PROTO_UDP),
            L4Spec::Udp(UdpSpec::new(sport, dport, payload)),
        )
    }

    pub fn icmp(src_mac: Mac, dst_mac: Mac, src: Ipv4Addr, dst: Ipv4Addr, icmp: IcmpSpec) -> Self {
        Self::ipv4(
            src_mac,
            dst_mac,
            Ipv4Spec::new(src, dst, PROTO_ICMP),
            L4Spec::Icmp(icmp),
        )
    }

    pub fn ip_mut(&mut self) -> &mut Ipv4Spec {
        match &mut self.payload {
            Payload::Ipv4(ip, _) => ip,
            Payload::Raw(_) => panic!("not an IPv4 frame"),
        }
    }

    pub fn tcp_mut(&mut self) -> &mut TcpSpec {
        match &mut self.payload {
            Payload::Ipv4(_, L4Spec::Tcp(t)) => t,
            _ => panic!("not a TCP frame"),
        }
    }

    pub fn udp_mut(&mut self) -> &mut UdpSpec {
        match &mut self.payload {
            Payload::Ipv4(_, L4Spec::Udp(u)) => u,
            _ => panic!("not a UDP frame"),
        }
    }

    /// The frame's bytes, checksums computed.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        if let Some((tpid, tci)) = self.vlan {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&self.ethertype.to_be_bytes());
        match &self.payload {
            Payload::Ipv4(ip, l4) => f.extend_from_slice(&build_ipv4(ip, l4)),
            Payload::Raw(b) => f.extend_from_slice(b),
        }
        if f.len() < self.pad_to {
            f.resize(self.pad_to, 0);
        }
        f
    }

    /// Length of the L2 header (14, or 18 with a tag).
    pub fn l2_len(&self) -> usize {
        if self.vlan.is_some() { 18 } else { 14 }
    }
}

/// An IPv4 packet (header and L4), checksums computed.
pub fn build_ipv4(ip: &Ipv4Spec, l4: &L4Spec) -> Vec<u8> {
    let l4_bytes = build_l4(ip.src, ip.dst, l4);
    let hlen = 20 + ip.options.len();
    let ihl = ip.ihl.unwrap_or((hlen / 4) as u8);
    let tot_len = ip.tot_len.unwrap_or((hlen + l4_bytes.len()) as u16);
    let mut h = Vec::with_capacity(hlen);
    h.push((ip.version << 4) | (ihl & 0x0f));
    h.push(ip.tos);
    h.extend_from_slice(&tot_len.to_be_bytes());
    h.extend_from_slice(&ip.id.to_be_bytes());
    h.extend_from_slice(&ip.flags_frag.to_be_bytes());
    h.push(ip.ttl);
    h.push(ip.proto);
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&ip.src.octets());
    h.extend_from_slice(&ip.dst.octets());
    h.extend_from_slice(&ip.options);
    let c = internet_checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(&l4_bytes);
    h
}

fn build_l4(src: Ipv4Addr, dst: Ipv4Addr, l4: &L4Spec) -> Vec<u8> {
    match l4 {
        L4Spec::Tcp(t) => {
            let hlen = 20 + t.options.len();
            let doff = t.doff.unwrap_or((hlen / 4) as u8);
            let mut s = Vec::with_capacity(hlen + t.payload.len());
            s.extend_from_slice(&t.sport.to_be_bytes());
            s.extend_from_slice(&t.dport.to_be_bytes());
            s.extend_from_slice(&t.seq.to_be_bytes());
            s.extend_from_slice(&t.ack.to_be_bytes());
            s.push(doff << 4);
            s.push(t.flags);
            s.extend_from_slice(&t.window.to_be_bytes());
            s.extend_from_slice(&[0, 0]);
            s.extend_from_slice(&t.urg.to_be_bytes());
            s.extend_from_slice(&t.options);
            s.extend_from_slice(&t.payload);
            let c = internet_checksum(&with_pseudo_header(src, dst, PROTO_TCP, &s));
            s[16..18].copy_from_slice(&c.to_be_bytes());
            s
        }
        L4Spec::Udp(u) => {
            let len = u.len.unwrap_or((8 + u.payload.len()) as u16);
            let mut s = Vec::with_capacity(8 + u.payload.len());
            s.extend_from_slice(&u.sport.to_be_bytes());
            s.extend_from_slice(&u.dport.to_be_bytes());
            s.extend_from_slice(&len.to_be_bytes());
            s.extend_from_slice(&[0, 0]);
            s.extend_from_slice(&u.payload);
            if !u.no_checksum {
                let mut c = internet_checksum(&with_pseudo_header(src, dst, PROTO_UDP, &s));
                if c == 0 {
                    c = 0xffff;
                }
                s[6..8].copy_from_slice(&c.to_be_bytes());
            }
            s
        }
        L4Spec::Icmp(i) => {
            let mut s = vec![i.typ, i.code, 0, 0];
            s.extend_from_slice(&i.rest);
            s.extend_from_slice(&i.body);
            let c = internet_checksum(&s);
            s[2..4].copy_from_slice(&c.to_be_bytes());
            s
        }
        L4Spec::Raw(b) => b.clone(),
    }
}

/// The first `len` bytes of an IPv4 packet: what an ICMP error quotes.
pub fn quote(ip: &Ipv4Spec, l4: &L4Spec, len: usize) -> Vec<u8> {
    let mut p = build_ipv4(ip, l4);
    p.truncate(len);
    p
}

// ---------------------------------------------------------------- parsing

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EthHeader {
    pub dst: Mac,
    pub src: Mac,
    /// (TPID, TCI) of one tag.
    pub vlan: Option<(u16, u16)>,
    pub ethertype: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    pub version: u8,
    pub ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub flags_frag: u16,
    pub ttl: u8,
    pub proto: u8,
    pub checksum: u16,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub options: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpHeader {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub doff: u8,
    /// The low nibble of byte 12 (reserved bits, AE/NS).
    pub reserved: u8,
    pub flags: u8,
    pub window: u16,
    pub checksum: u16,
    pub urg: u16,
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpHeader {
    pub sport: u16,
    pub dport: u16,
    pub len: u16,
    pub checksum: u16,
    pub payload: Vec<u8>,
}

/// The packet an ICMP error quotes: its IP header and the first 8 L4 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quoted {
    pub ip: Ipv4Header,
    pub sport: u16,
    pub dport: u16,
    /// Every quoted byte after the IP header (the first 8 hold ports and, for
    /// TCP, the sequence number; UDP's checksum is at 6..8).
    pub l4: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpMessage {
    pub typ: u8,
    pub code: u8,
    pub checksum: u16,
    pub rest: [u8; 4],
    pub body: Vec<u8>,
    /// Parsed quote of an error (types 3, 11, 12), when complete.
    pub quoted: Option<Quoted>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4Header {
    Tcp(TcpHeader),
    Udp(UdpHeader),
    Icmp(IcmpMessage),
    Other(Vec<u8>),
}

/// Every field of a frame the program returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedFrame {
    pub len: usize,
    pub eth: EthHeader,
    pub ip: Option<Ipv4Header>,
    pub l4: Option<L4Header>,
    /// Bytes after the IP packet (Ethernet padding).
    pub trailer: Vec<u8>,
}

impl ParsedFrame {
    /// The same frame with every checksum field zeroed: for comparing two
    /// frames field by field while checksums are checked by
    /// [`verify_checksums`].
    pub fn without_checksums(&self) -> ParsedFrame {
        let mut p = self.clone();
        if let Some(ip) = &mut p.ip {
            ip.checksum = 0;
        }
        match &mut p.l4 {
            Some(L4Header::Tcp(t)) => t.checksum = 0,
            Some(L4Header::Udp(u)) => u.checksum = 0,
            Some(L4Header::Icmp(i)) => {
                i.checksum = 0;
                if let Some(q) = &mut i.quoted {
                    q.ip.checksum = 0;
                }
                // The body holds the quoted header (and its checksum) again.
                if i.quoted.is_some() && i.body.len() >= 12 {
                    i.body[10] = 0;
                    i.body[11] = 0;
                }
            }
            _ => {}
        }
        p
    }

    pub fn tcp(&self) -> &TcpHeader {
        match &self.l4 {
            Some(L4Header::Tcp(t)) => t,
            other => panic!("expected TCP, got {other:?}"),
        }
    }

    pub fn udp(&self) -> &UdpHeader {
        match &self.l4 {
            Some(L4Header::Udp(u)) => u,
            other => panic!("expected UDP, got {other:?}"),
        }
    }

    pub fn icmp(&self) -> &IcmpMessage {
        match &self.l4 {
            Some(L4Header::Icmp(i)) => i,
            other => panic!("expected ICMP, got {other:?}"),
        }
    }

    pub fn ipv4(&self) -> &Ipv4Header {
        self.ip.as_ref().expect("expected an IPv4 frame")
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn mac(b: &[u8]) -> Mac {
    let mut m = [0; 6];
    m.copy_from_slice(&b[..6]);
    m
}

fn parse_ipv4_header(b: &[u8]) -> Result<Ipv4Header> {
    ensure!(b.len() >= 20, "IPv4 header truncated: {} bytes", b.len());
    let ihl = b[0] & 0x0f;
    let hlen = ihl as usize * 4;
    ensure!(
        hlen >= 20 && hlen <= b.len(),
        "IPv4 IHL {ihl} does not fit {} bytes",
        b.len()
    );
    Ok(Ipv4Header {
        version: b[0] >> 4,
        ihl,
        tos: b[1],
        tot_len: be16(b, 2),
        id: be16(b, 4),
        flags_frag: be16(b, 6),
        ttl: b[8],
        proto: b[9],
        checksum: be16(b, 10),
        src: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
        dst: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        options: b[20..hlen].to_vec(),
    })
}

/// Parses every header of `frame`. Errors on anything truncated or
/// inconsistent: the program must never emit such a frame.
pub fn parse(frame: &[u8]) -> Result<ParsedFrame> {
    ensure!(
        frame.len() >= 14,
        "frame of {} bytes is shorter than Ethernet",
        frame.len()
    );
    let mut off = 12;
    let mut ethertype = be16(frame, off);
    let mut vlan = None;
    if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        ensure!(frame.len() >= 18, "VLAN tag truncated");
        vlan = Some((ethertype, be16(frame, 14)));
        off += 4;
        ethertype = be16(frame, off);
    }
    off += 2;
    let eth = EthHeader {
        dst: mac(&frame[0..]),
        src: mac(&frame[6..]),
        vlan,
        ethertype,
    };
    if ethertype != ETHERTYPE_IPV4 {
        return Ok(ParsedFrame {
            len: frame.len(),
            eth,
            ip: None,
            l4: None,
            trailer: frame[off..].to_vec(),
        });
    }
    let rest = &frame[off..];
    let ip = parse_ipv4_header(rest)?;
    let tot = ip.tot_len as usize;
    let hlen = ip.ihl as usize * 4;
    ensure!(
        tot >= hlen && tot <= rest.len(),
        "IPv4 tot_len {tot} inconsistent with {} bytes",
        rest.len()
    );
    let seg = &rest[hlen..tot];
    let trailer = rest[tot..].to_vec();
    let l4 = match ip.proto {
        PROTO_TCP => {
            ensure!(seg.len() >= 20, "TCP header truncated");
            let doff = seg[12] >> 4;
            let th = doff as usize * 4;
            ensure!(th >= 20 && th <= seg.len(), "TCP doff {doff} inconsistent");
            L4Header::Tcp(TcpHeader {
                sport: be16(seg, 0),
                dport: be16(seg, 2),
                seq: be32(seg, 4),
                ack: be32(seg, 8),
                doff,
                reserved: seg[12] & 0x0f,
                flags: seg[13],
                window: be16(seg, 14),
                checksum: be16(seg, 16),
                urg: be16(seg, 18),
                options: seg[20..th].to_vec(),
                payload: seg[th..].to_vec(),
            })
        }
        PROTO_UDP => {
            ensure!(seg.len() >= 8, "UDP header truncated");
            let len = be16(seg, 4);
            ensure!(
                len as usize == seg.len(),
                "UDP length {len} but {} bytes",
                seg.len()
            );
            L4Header::Udp(UdpHeader {
                sport: be16(seg, 0),
                dport: be16(seg, 2),
                len,
                checksum: be16(seg, 6),
                payload: seg[8..].to_vec(),
            })
        }
        PROTO_ICMP => {
            ensure!(seg.len() >= 8, "ICMP header truncated");
            let typ = seg[0];
            let body = seg[8..].to_vec();
            let quoted = if matches!(typ, 3 | 11 | 12) {
                parse_quote(&body).ok()
            } else {
                None
            };
            L4Header::Icmp(IcmpMessage {
                typ,
                code: seg[1],
                checksum: be16(seg, 2),
                rest: [seg[4], seg[5], seg[6], seg[7]],
                body,
                quoted,
            })
        }
        _ => L4Header::Other(seg.to_vec()),
    };
    Ok(ParsedFrame {
        len: frame.len(),
        eth,
        ip: Some(ip),
        l4: Some(l4),
        trailer,
    })
}

fn parse_quote(body: &[u8]) -> Result<Quoted> {
    let ip = parse_ipv4_header(body)?;
    let hlen = ip.ihl as usize * 4;
    let l4 = &body[hlen..];
    ensure!(
        l4.len() >= 8,
        "quote holds {} L4 bytes, fewer than 8",
        l4.len()
    );
    Ok(Quoted {
        sport: be16(l4, 0),
        dport: be16(l4, 2),
        l4: l4.to_vec(),
        ip,
    })
}

/// Checks every checksum of `frame`: the IP header; TCP and UDP with the
/// pseudo-header (UDP 0 means none); ICMP over the whole message; and the IP
/// header an ICMP error quotes.
pub fn verify_checksums(frame: &[u8]) -> Result<()> {
    let p = parse(frame)?;
    let Some(ip) = &p.ip else { return Ok(()) };
    let l3 = p.eth.vlan.map_or(14, |_| 18);
    let packet = &frame[l3..l3 + ip.tot_len as usize];
    let hlen = ip.ihl as usize * 4;
    if ones_complement_sum(&packet[..hlen]) != 0xffff {
        bail!(
            "IPv4 header checksum {:#06x} is wrong (sum {:#06x})",
            ip.checksum,
            ones_complement_sum(&packet[..hlen])
        );
    }
    let seg = &packet[hlen..];
    match &p.l4 {
        Some(L4Header::Tcp(t)) => {
            let s = ones_complement_sum(&with_pseudo_header(ip.src, ip.dst, PROTO_TCP, seg));
            ensure!(s == 0xffff, "TCP checksum {:#06x} is wrong", t.checksum);
        }
        // UDP checksum 0 means "none".
        Some(L4Header::Udp(u)) if u.checksum != 0 => {
            let s = ones_complement_sum(&with_pseudo_header(ip.src, ip.dst, PROTO_UDP, seg));
            ensure!(s == 0xffff, "UDP checksum {:#06x} is wrong", u.checksum);
        }
        Some(L4Header::Icmp(i)) => {
            ensure!(
                ones_complement_sum(seg) == 0xffff,
                "ICMP checksum {:#06x} is wrong",
                i.checksum
            );
            if let Some(q) = &i.quoted {
                let qh = &i.body[..q.ip.ihl as usize * 4];
                ensure!(
                    ones_complement_sum(qh) == 0xffff,
                    "quoted IPv4 header checksum {:#06x} is wrong",
                    q.ip.checksum
                );
            }
        }
        _ => {}
    }
    Ok(())
}

/// Rewrites the addresses and ports of a quoted packet the way a translated
/// ICMP error must carry it: inner IP checksum recomputed, inner L4 checksum
/// left as it was (the quote is partial, nobody can verify it).
pub fn rewrite_quote(
    quote: &[u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Result<Vec<u8>> {
    let ip = parse_ipv4_header(quote).context("the quote has no IPv4 header")?;
    let hlen = ip.ihl as usize * 4;
    ensure!(quote.len() >= hlen + 4, "the quote has no ports");
    let mut q = quote.to_vec();
    q[12..16].copy_from_slice(&src.octets());
    q[16..20].copy_from_slice(&dst.octets());
    q[10..12].copy_from_slice(&[0, 0]);
    let c = internet_checksum(&q[..hlen]);
    q[10..12].copy_from_slice(&c.to_be_bytes());
    q[hlen..hlen + 2].copy_from_slice(&sport.to_be_bytes());
    q[hlen + 2..hlen + 4].copy_from_slice(&dport.to_be_bytes());
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(&b), 0xddf2);
        assert_eq!(internet_checksum(&b), !0xddf2);
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // A classic example header (tot_len 0x73, TTL 64, UDP): checksum b861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&h), 0xb861);
    }

    #[test]
    fn built_frames_parse_back_and_verify() {
        let a = Ipv4Addr::new(203, 0, 113, 7);
        let b = Ipv4Addr::new(192, 0, 2, 10);
        let mut f = FrameSpec::tcp(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            a,
            40000,
            b,
            443,
            tcp_flags::SYN,
        );
        f.tcp_mut().options = TcpSpec::syn_options();
        f.tcp_mut().payload = b"hello".to_vec();
        f.vlan = Some((ETHERTYPE_VLAN, 100));
        let bytes = f.build();
        verify_checksums(&bytes).unwrap();
        let p = parse(&bytes).unwrap();
        assert_eq!(p.eth.vlan, Some((ETHERTYPE_VLAN, 100)));
        assert_eq!(p.tcp().payload, b"hello");
        assert_eq!(p.tcp().doff, 8);
        let mut corrupt = bytes.clone();
        let n = corrupt.len();
        corrupt[n - 1] ^= 1;
        assert!(verify_checksums(&corrupt).is_err());

        let u = FrameSpec::udp([2; 6], [4; 6], a, 5000, b, 53, b"odd");
        verify_checksums(&u.build()).unwrap();

        let Payload::Ipv4(ip, l4) = &f.payload else {
            unreachable!()
        };
        let icmp = FrameSpec::icmp(
            [2; 6],
            [4; 6],
            b,
            a,
            IcmpSpec::frag_needed(1400, quote(ip, l4, 28)),
        );
        let bytes = icmp.build();
        verify_checksums(&bytes).unwrap();
        let q = parse(&bytes).unwrap().icmp().quoted.clone().unwrap();
        assert_eq!((q.ip.src, q.sport, q.dport), (a, 40000, 443));
    }
}
