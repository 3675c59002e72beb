//! The VRRP advertisement codec for IPv4: RFC 3768 (v2) and RFC 5798 (v3).
//!
//! ```text
//!  0               1               2               3
//! |ver|type(1)| VRID          | Priority      | Count IPvX    |
//! v2: | Auth Type | Adver Int (s, 8 bits) | Checksum        |
//! v3: |rsvd(4)| Max Adver Int (cs, 12 bits) | Checksum      |
//! | IPv4 address 1 ... n                                     |
//! v2 only: | Authentication Data (8 bytes)                     |
//! ```
//!
//! Checksums: v2 covers the VRRP packet only; v3 adds the IPv4
//! pseudo-header (source, destination, zero, protocol 112, VRRP length).
//! The destination is the address the packet was actually sent to: the
//! multicast group or the unicast peer. keepalived 2.2 does it this way
//! (captured: the same advert to 224.0.0.18 and to a peer carries different
//! checksums).
//!
//! Decoding checks only what the bytes say on their own; everything that
//! depends on our configuration lives in `check`.

use std::net::Ipv4Addr;

use super::ipv4::{be16, checksum};

/// IP protocol number of VRRP.
pub const PROTO_VRRP: u8 = 112;
/// The IPv4 multicast group of VRRP.
pub const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Fixed part of the VRRP header.
pub const HEADER_LEN: usize = 8;
/// v2 authentication data after the addresses (also the password length).
pub const AUTH_DATA_LEN: usize = 8;
/// Largest v3 interval: 12 bits of centiseconds.
pub const MAX_V3_INTERVAL_CS: u16 = 0x0fff;
/// The only VRRP packet type.
const TYPE_ADVERTISEMENT: u8 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// A v2 password: keepalived keeps at most 8 bytes, zero padded, and uses
/// those same 8 bytes both as the PASS authentication data and as the AH
/// HMAC key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Password([u8; AUTH_DATA_LEN]);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// A password longer than the 8 bytes VRRPv2 can carry; keepalived would
/// silently truncate it, we refuse so that both sides surely agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordTooLong {
    pub len: usize,
}

impl Password {
    pub fn new(text: &str) -> Result<Self, PasswordTooLong> {
        let bytes = text.as_bytes();
        if bytes.len() > AUTH_DATA_LEN {
            return Err(PasswordTooLong { len: bytes.len() });
        }
        let mut padded = [0u8; AUTH_DATA_LEN];
        padded[..bytes.len()].copy_from_slice(bytes);
        Ok(Password(padded))
    }

    pub fn from_wire(bytes: [u8; AUTH_DATA_LEN]) -> Self {
        Password(bytes)
    }

    /// The 8 zero-padded bytes.
    pub fn bytes(&self) -> &[u8; AUTH_DATA_LEN] {
        &self.0
    }
}

/// The v2 authentication field of an advert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthField {
    /// Type 0. v3 adverts always carry this.
    None,
    /// Type 1, the password in clear in the authentication data.
    Pass(Password),
    /// Type 2: the real authentication is in the IPsec AH header in front;
    /// the authentication data is sent as zeros.
    Ah,
}

impl AuthField {
    pub fn type_code(&self) -> u8 {
        match self {
            AuthField::None => 0,
            AuthField::Pass(_) => 1,
            AuthField::Ah => 2,
        }
    }
}

/// One VRRP advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// Advertisement interval in centiseconds. v2 carries whole seconds, so
    /// a v2 interval is a multiple of 100.
    pub interval_cs: u16,
    /// Always `AuthField::None` for v3.
    pub auth: AuthField,
    pub addrs: Vec<Ipv4Addr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// v2: 1..=255 whole seconds; v3: 1..=4095 centiseconds.
    Interval { interval_cs: u16 },
    /// The count field is 8 bits.
    TooManyAddresses { count: usize },
    /// Authentication exists only in v2.
    AuthNeedsV2,
}

/// Why an advert cannot be decoded; each is counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer than the 8 fixed bytes.
    Truncated { len: usize },
    /// Neither 2 nor 3.
    Version { version: u8 },
    /// Not an advertisement (1).
    Type { kind: u8 },
    /// The length does not match the address count (keepalived wants it exact).
    Length {
        count: u8,
        expected: usize,
        got: usize,
    },
    /// v2 authentication type other than 0, 1 and 2.
    AuthType { code: u8 },
    /// The checksum does not verify.
    Checksum { field: u16 },
}

/// Length of a VRRP packet with `count` IPv4 addresses.
pub fn packet_len(version: Version, count: usize) -> usize {
    let auth = match version {
        Version::V2 => AUTH_DATA_LEN,
        Version::V3 => 0,
    };
    HEADER_LEN + 4 * count + auth
}

impl Advert {
    /// The VRRP packet bytes with the checksum filled in. `src` and `dst`
    /// are the IPv4 addresses it will be sent from and to (v3 checksum).
    pub fn encode(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Result<Vec<u8>, EncodeError> {
        let count = u8::try_from(self.addrs.len()).map_err(|_| EncodeError::TooManyAddresses {
            count: self.addrs.len(),
        })?;
        let mut b = Vec::with_capacity(packet_len(self.version, self.addrs.len()));
        b.push((self.version.number() << 4) | TYPE_ADVERTISEMENT);
        b.push(self.vrid);
        b.push(self.priority);
        b.push(count);
        let bad_interval = EncodeError::Interval {
            interval_cs: self.interval_cs,
        };
        match self.version {
            Version::V2 => {
                let secs = self.interval_cs / 100;
                if !self.interval_cs.is_multiple_of(100) || secs == 0 || secs > 255 {
                    return Err(bad_interval);
                }
                b.push(self.auth.type_code());
                b.push(secs as u8);
            }
            Version::V3 => {
                if self.auth != AuthField::None {
                    return Err(EncodeError::AuthNeedsV2);
                }
                if self.interval_cs == 0 || self.interval_cs > MAX_V3_INTERVAL_CS {
                    return Err(bad_interval);
                }
                b.extend_from_slice(&self.interval_cs.to_be_bytes());
            }
        }
        b.extend_from_slice(&[0, 0]);
        for a in &self.addrs {
            b.extend_from_slice(&a.octets());
        }
        if self.version == Version::V2 {
            match &self.auth {
                AuthField::Pass(p) => b.extend_from_slice(p.bytes()),
                AuthField::None | AuthField::Ah => b.extend_from_slice(&[0; AUTH_DATA_LEN]),
            }
        }
        let sum = self.checksum_over(&b, src, dst);
        b[6..8].copy_from_slice(&sum.to_be_bytes());
        Ok(b)
    }

    /// Decodes a VRRP packet (the bytes after the IPv4 header, or after AH)
    /// received from `src` addressed to `dst`, verifying its checksum.
    pub fn decode(bytes: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<Advert, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Truncated { len: bytes.len() });
        }
        let version = match bytes[0] >> 4 {
            2 => Version::V2,
            3 => Version::V3,
            version => return Err(DecodeError::Version { version }),
        };
        let kind = bytes[0] & 0x0f;
        if kind != TYPE_ADVERTISEMENT {
            return Err(DecodeError::Type { kind });
        }
        let count = bytes[3];
        let expected = packet_len(version, usize::from(count));
        if bytes.len() != expected {
            return Err(DecodeError::Length {
                count,
                expected,
                got: bytes.len(),
            });
        }
        let addrs_end = HEADER_LEN + 4 * usize::from(count);
        let addrs = bytes[HEADER_LEN..addrs_end]
            .chunks_exact(4)
            .map(super::ipv4::addr)
            .collect();
        let (interval_cs, auth) = match version {
            Version::V2 => {
                let auth = match bytes[4] {
                    0 => AuthField::None,
                    1 => {
                        let mut data = [0u8; AUTH_DATA_LEN];
                        data.copy_from_slice(&bytes[addrs_end..]);
                        AuthField::Pass(Password::from_wire(data))
                    }
                    2 => AuthField::Ah,
                    code => return Err(DecodeError::AuthType { code }),
                };
                (u16::from(bytes[5]) * 100, auth)
            }
            // The 4 reserved bits are ignored on receipt (RFC 5798 5.2.7).
            Version::V3 => (be16(&bytes[4..6]) & MAX_V3_INTERVAL_CS, AuthField::None),
        };
        let advert = Advert {
            version,
            vrid: bytes[1],
            priority: bytes[2],
            interval_cs,
            auth,
            addrs,
        };
        if advert.checksum_over(bytes, src, dst) != 0 {
            return Err(DecodeError::Checksum {
                field: be16(&bytes[6..8]),
            });
        }
        Ok(advert)
    }

    /// The checksum of `packet` as it stands: the value to write when its
    /// checksum field is zero, 0 when the field is correct.
    fn checksum_over(&self, packet: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
        match self.version {
            Version::V2 => checksum(&[packet]),
            Version::V3 => {
                let len = (packet.len() as u16).to_be_bytes();
                let pseudo = [0, PROTO_VRRP, len[0], len[1]];
                checksum(&[&src.octets(), &dst.octets(), &pseudo, packet])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

    fn vips(n: u8) -> Vec<Ipv4Addr> {
        (0..n).map(|i| Ipv4Addr::new(192, 0, 2, 10 + i)).collect()
    }

    fn advert(version: Version, n: u8, auth: AuthField) -> Advert {
        Advert {
            version,
            vrid: 11,
            priority: 101,
            interval_cs: 100,
            auth,
            addrs: vips(n),
        }
    }

    #[test]
    fn round_trips_v2_and_v3_with_one_and_three_vips() {
        let pass = AuthField::Pass(Password::new("Pass1234").unwrap());
        for n in [1, 3] {
            for a in [
                advert(Version::V2, n, AuthField::None),
                advert(Version::V2, n, pass),
                advert(Version::V2, n, AuthField::Ah),
                advert(Version::V3, n, AuthField::None),
            ] {
                for dst in [MULTICAST_GROUP, PEER] {
                    let bytes = a.encode(SRC, dst).unwrap();
                    assert_eq!(bytes.len(), packet_len(a.version, n.into()));
                    assert_eq!(Advert::decode(&bytes, SRC, dst).unwrap(), a);
                }
            }
        }
    }

    #[test]
    fn v2_checksum_known_answer() {
        // Computed independently (RFC 1071 sum in Python): the words
        // 210b 6501 0101 0000 c000 020a 5061 7373 3132 3334 fold to 0x7153,
        // whose complement is 0x8eac.
        let a = advert(
            Version::V2,
            1,
            AuthField::Pass(Password::new("Pass1234").unwrap()),
        );
        let a = Advert {
            priority: 0x65,
            ..a
        };
        let b = a.encode(SRC, PEER).unwrap();
        assert_eq!(
            b,
            [
                0x21, 0x0b, 0x65, 0x01, 0x01, 0x01, 0x8e, 0xac, 192, 0, 2, 10, b'P', b'a', b's',
                b's', b'1', b'2', b'3', b'4'
            ]
        );
    }

    #[test]
    fn v3_checksum_depends_on_the_destination() {
        let a = advert(Version::V3, 1, AuthField::None);
        let to_group = a.encode(SRC, MULTICAST_GROUP).unwrap();
        let to_peer = a.encode(SRC, PEER).unwrap();
        assert_ne!(to_group[6..8], to_peer[6..8]);
        assert_eq!(
            Advert::decode(&to_group, SRC, PEER),
            Err(DecodeError::Checksum {
                field: be16(&to_group[6..8])
            })
        );
        // Known answer, computed independently (Python): pseudo-header
        // c000 0201 e000 0012 0070 000c plus 310b 6501 0064 0000 c000 020a
        // folds to 0xfb0b, complement 0x04f4.
        assert_eq!(to_group[6..8], [0x04, 0xf4]);
    }

    #[test]
    fn decode_reports_each_failure() {
        let good = advert(Version::V2, 3, AuthField::None)
            .encode(SRC, PEER)
            .unwrap();
        let d = |b: &[u8]| Advert::decode(b, SRC, PEER);
        assert_eq!(d(&good[..5]), Err(DecodeError::Truncated { len: 5 }));
        let mut v = good.clone();
        v[0] = 0x41;
        assert_eq!(d(&v), Err(DecodeError::Version { version: 4 }));
        let mut t = good.clone();
        t[0] = 0x22;
        assert_eq!(d(&t), Err(DecodeError::Type { kind: 2 }));
        let mut c = good.clone();
        c[3] = 2;
        assert_eq!(
            d(&c),
            Err(DecodeError::Length {
                count: 2,
                expected: 24,
                got: 28
            })
        );
        assert!(matches!(d(&good[..27]), Err(DecodeError::Length { .. })));
        let mut a = good.clone();
        a[4] = 3;
        assert_eq!(d(&a), Err(DecodeError::AuthType { code: 3 }));
        let mut s = good.clone();
        s[9] ^= 1;
        assert!(matches!(d(&s), Err(DecodeError::Checksum { .. })));
    }

    #[test]
    fn encode_refuses_what_the_wire_cannot_carry() {
        let half_second = Advert {
            interval_cs: 50,
            ..advert(Version::V2, 1, AuthField::None)
        };
        assert_eq!(
            half_second.encode(SRC, PEER),
            Err(EncodeError::Interval { interval_cs: 50 })
        );
        let v3_too_long = Advert {
            interval_cs: 4096,
            ..advert(Version::V3, 1, AuthField::None)
        };
        assert!(v3_too_long.encode(SRC, PEER).is_err());
        let v3_auth = advert(Version::V3, 1, AuthField::Ah);
        assert_eq!(v3_auth.encode(SRC, PEER), Err(EncodeError::AuthNeedsV2));
        assert_eq!(
            Password::new("longer than 8"),
            Err(PasswordTooLong { len: 13 })
        );
    }

    #[test]
    fn v3_reserved_bits_are_ignored() {
        let a = advert(Version::V3, 1, AuthField::None);
        let mut b = a.encode(SRC, PEER).unwrap();
        // Set a reserved bit and recompute the checksum over the result.
        b[4] |= 0x10;
        b[6..8].copy_from_slice(&[0, 0]);
        let pseudo = [0, PROTO_VRRP, 0, b.len() as u8];
        let sum = checksum(&[&SRC.octets(), &PEER.octets(), &pseudo, &b]);
        b[6..8].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(Advert::decode(&b, SRC, PEER).unwrap().interval_cs, 100);
    }
}
