//! The receive checks: a received IPv4 datagram either becomes an advert
//! the state machine may act on, or a `DropReason` the agent counts. A
//! dropped packet never causes a transition.
//!
//! What keepalived 2.2.7 checks (vrrp.c, `vrrp_check_packet`), and so do we:
//! - AH present exactly when we use AH; then the ICV, SPI and the sequence
//!   number (replays).
//! - TTL 255, but only for multicast instances: keepalived does not check
//!   TTL for unicast peers (it even hashes TTL as 0 in AH for unicast), so
//!   neither do we. keepalived itself sends TTL 255 in both cases.
//! - Exact length, version equal to ours, type, v2 auth type equal to ours,
//!   PASS password equal, v2 interval equal to ours (v3 adopts the master's).
//! - Checksum (v3: pseudo-header with the destination actually used).
//! - Multicast destination for a multicast instance, unicast for a unicast
//!   one; with `check_unicast_src`, the source must be a configured peer.
//! - Address count and list: every one of our VIPs must be in the advert
//!   and the counts equal. `vrrp_skip_check_adv_addr` skips exactly this
//!   (count, list, and the unicast source check) for adverts from the
//!   master we already follow as backup: a new master's first advert, and
//!   every advert seen while we are master, are still checked in full.

use std::net::Ipv4Addr;

use super::ah::{AhError, PROTO_AH, verify_ah};
use super::ipv4::{Ipv4Error, Ipv4Header};
use super::packet::{Advert, AuthField, DecodeError, PROTO_VRRP, Password, Version};

/// How our instance authenticates (v2 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    Pass(Password),
    Ah(Password),
}

/// The configuration the checks compare against.
#[derive(Clone, Debug)]
pub struct RxPolicy {
    pub version: Version,
    pub vrid: u8,
    pub auth: Auth,
    /// Our advertisement interval in centiseconds (compared in v2).
    pub interval_cs: u16,
    pub vips: Vec<Ipv4Addr>,
    /// Empty for a multicast instance.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// keepalived's `vrrp_skip_check_adv_addr`.
    pub skip_check_adv_addr: bool,
    /// keepalived's `check_unicast_src`.
    pub check_unicast_src: bool,
}

impl RxPolicy {
    fn unicast(&self) -> bool {
        !self.unicast_peers.is_empty()
    }
}

/// Per-packet context from the agent's state.
#[derive(Clone, Copy, Debug, Default)]
pub struct RxContext {
    /// The AH counter (`SeqCounter::value`).
    pub ah_seq: u32,
    /// While backup: the master we follow (`Machine::followed_master`).
    pub followed_master: Option<Ipv4Addr>,
}

/// An advert that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub advert: Advert,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// AH sequence number, to record with `SeqCounter::observe`.
    pub ah_seq: Option<u32>,
}

/// Why a packet was dropped; `label` names the counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    Ip(Ipv4Error),
    /// Neither VRRP nor AH.
    Protocol {
        protocol: u8,
    },
    /// AH received without AH configured, or the reverse.
    AhPresence {
        got_ah: bool,
    },
    Ah(AhError),
    AhReplay {
        seq: u32,
        last: u32,
    },
    Ttl {
        ttl: u8,
    },
    Decode(DecodeError),
    Version {
        got: Version,
    },
    Vrid {
        vrid: u8,
    },
    AuthType {
        code: u8,
    },
    Password,
    Interval {
        got_cs: u16,
        ours_cs: u16,
    },
    /// Multicast received on a unicast instance or the reverse.
    Cast {
        dst: Ipv4Addr,
    },
    UnicastSource {
        src: Ipv4Addr,
    },
    AddressCount {
        got: usize,
        ours: usize,
    },
    AddressList {
        missing: Ipv4Addr,
    },
}

impl DropReason {
    /// A stable counter name.
    pub fn label(&self) -> &'static str {
        match self {
            DropReason::Ip(_) => "ip_malformed",
            DropReason::Protocol { .. } => "protocol",
            DropReason::AhPresence { .. } => "auth_type",
            DropReason::Ah(AhError::Icv) => "ah_icv",
            DropReason::Ah(AhError::Spi { .. }) => "ah_spi",
            DropReason::Ah(_) => "ah_malformed",
            DropReason::AhReplay { .. } => "ah_replay",
            DropReason::Ttl { .. } => "ttl",
            DropReason::Decode(DecodeError::Truncated { .. }) => "truncated",
            DropReason::Decode(DecodeError::Length { .. }) => "length",
            DropReason::Decode(DecodeError::Checksum { .. }) => "checksum",
            DropReason::Decode(DecodeError::Type { .. }) => "type",
            DropReason::Decode(DecodeError::Version { .. }) | DropReason::Version { .. } => {
                "version"
            }
            DropReason::Decode(DecodeError::AuthType { .. }) | DropReason::AuthType { .. } => {
                "auth_type"
            }
            DropReason::Vrid { .. } => "vrid",
            DropReason::Password => "password",
            DropReason::Interval { .. } => "interval",
            DropReason::Cast { .. } => "cast",
            DropReason::UnicastSource { .. } => "unicast_source",
            DropReason::AddressCount { .. } | DropReason::AddressList { .. } => "address_list",
        }
    }
}

/// Runs every check on `datagram` (IPv4 header onwards) and decodes it.
pub fn check_advert(
    datagram: &[u8],
    policy: &RxPolicy,
    ctx: RxContext,
) -> Result<Received, DropReason> {
    let ip = Ipv4Header::parse(datagram).map_err(DropReason::Ip)?;
    let got_ah = match ip.protocol {
        PROTO_AH => true,
        PROTO_VRRP => false,
        protocol => return Err(DropReason::Protocol { protocol }),
    };
    if got_ah != matches!(policy.auth, Auth::Ah(_)) {
        return Err(DropReason::AhPresence { got_ah });
    }
    let (vrrp_offset, ah_seq) = match &policy.auth {
        Auth::Ah(password) => {
            let v = verify_ah(datagram, password, policy.unicast()).map_err(DropReason::Ah)?;
            if v.seq <= ctx.ah_seq {
                return Err(DropReason::AhReplay {
                    seq: v.seq,
                    last: ctx.ah_seq,
                });
            }
            (v.vrrp_offset, Some(v.seq))
        }
        _ => (ip.header_len, None),
    };
    if !policy.unicast() && ip.ttl != 255 {
        return Err(DropReason::Ttl { ttl: ip.ttl });
    }
    let advert =
        Advert::decode(&datagram[vrrp_offset..], ip.src, ip.dst).map_err(DropReason::Decode)?;
    if advert.version != policy.version {
        return Err(DropReason::Version {
            got: advert.version,
        });
    }
    if advert.vrid != policy.vrid {
        return Err(DropReason::Vrid { vrid: advert.vrid });
    }
    if advert.version == Version::V2 {
        check_v2_auth(&advert.auth, &policy.auth)?;
        if advert.interval_cs != policy.interval_cs {
            return Err(DropReason::Interval {
                got_cs: advert.interval_cs,
                ours_cs: policy.interval_cs,
            });
        }
    }
    if ip.dst.is_multicast() == policy.unicast() {
        return Err(DropReason::Cast { dst: ip.dst });
    }
    let skip_addr_checks = policy.skip_check_adv_addr && ctx.followed_master == Some(ip.src);
    if !skip_addr_checks {
        check_addresses(&advert.addrs, &policy.vips)?;
        if policy.unicast() && policy.check_unicast_src && !policy.unicast_peers.contains(&ip.src) {
            return Err(DropReason::UnicastSource { src: ip.src });
        }
    }
    Ok(Received {
        advert,
        src: ip.src,
        dst: ip.dst,
        ah_seq,
    })
}

fn check_v2_auth(got: &AuthField, ours: &Auth) -> Result<(), DropReason> {
    match (got, ours) {
        (AuthField::None, Auth::None) | (AuthField::Ah, Auth::Ah(_)) => Ok(()),
        (AuthField::Pass(theirs), Auth::Pass(mine)) => {
            let diff = theirs
                .bytes()
                .iter()
                .zip(mine.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                Ok(())
            } else {
                Err(DropReason::Password)
            }
        }
        (got, _) => Err(DropReason::AuthType {
            code: got.type_code(),
        }),
    }
}

fn check_addresses(got: &[Ipv4Addr], ours: &[Ipv4Addr]) -> Result<(), DropReason> {
    if got.len() != ours.len() {
        return Err(DropReason::AddressCount {
            got: got.len(),
            ours: ours.len(),
        });
    }
    match ours.iter().find(|vip| !got.contains(vip)) {
        Some(&missing) => Err(DropReason::AddressList { missing }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::ah::{AhOutgoing, build_ah_packet};
    use crate::vrrp::packet::MULTICAST_GROUP;

    const ME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const OTHER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);

    fn vips() -> Vec<Ipv4Addr> {
        vec![
            Ipv4Addr::new(192, 0, 2, 250),
            Ipv4Addr::new(192, 0, 2, 20),
            Ipv4Addr::new(192, 0, 2, 30),
        ]
    }

    fn pw() -> Password {
        Password::new("Pass1234").unwrap()
    }

    fn policy(version: Version, auth: Auth, unicast: bool) -> RxPolicy {
        RxPolicy {
            version,
            vrid: 11,
            auth,
            interval_cs: 100,
            vips: vips(),
            unicast_peers: if unicast { vec![PEER] } else { vec![] },
            skip_check_adv_addr: false,
            check_unicast_src: false,
        }
    }

    fn advert_from(p: &RxPolicy) -> Advert {
        Advert {
            version: p.version,
            vrid: p.vrid,
            priority: 101,
            interval_cs: p.interval_cs,
            auth: match p.auth {
                Auth::None => AuthField::None,
                Auth::Pass(pw) => AuthField::Pass(pw),
                Auth::Ah(_) => AuthField::Ah,
            },
            addrs: p.vips.clone(),
        }
    }

    /// What `p`'s peer would send, wrapped as it arrives.
    fn wire(p: &RxPolicy, a: &Advert, src: Ipv4Addr, ttl: u8, seq: u32) -> Vec<u8> {
        let dst = if p.unicast_peers.is_empty() {
            MULTICAST_GROUP
        } else {
            ME
        };
        let vrrp = a.encode(src, dst).unwrap();
        let mut d = match p.auth {
            Auth::Ah(password) => build_ah_packet(&AhOutgoing {
                src,
                dst,
                ip_id: 1,
                unicast: !p.unicast_peers.is_empty(),
                seq,
                password: &password,
                vrrp: &vrrp,
            }),
            _ => {
                let ip = Ipv4Header::advert(src, dst, PROTO_VRRP, 1, vrrp.len());
                [ip.encode().as_slice(), &vrrp].concat()
            }
        };
        d[8] = ttl;
        d
    }

    fn ctx() -> RxContext {
        RxContext::default()
    }

    #[test]
    fn accepts_well_formed_adverts_of_every_kind() {
        for (version, auth, unicast) in [
            (Version::V2, Auth::Ah(pw()), true),
            (Version::V2, Auth::Pass(pw()), true),
            (Version::V2, Auth::None, false),
            (Version::V3, Auth::None, false),
            (Version::V3, Auth::None, true),
        ] {
            let p = policy(version, auth, unicast);
            let a = advert_from(&p);
            let got = check_advert(&wire(&p, &a, PEER, 255, 5), &p, ctx()).unwrap();
            assert_eq!(got.advert, a);
            assert_eq!(got.src, PEER);
            assert_eq!(got.ah_seq, matches!(auth, Auth::Ah(_)).then_some(5));
        }
    }

    #[test]
    fn ttl_is_checked_for_multicast_only() {
        let m = policy(Version::V3, Auth::None, false);
        let d = wire(&m, &advert_from(&m), PEER, 254, 0);
        assert_eq!(
            check_advert(&d, &m, ctx()),
            Err(DropReason::Ttl { ttl: 254 })
        );
        let u = policy(Version::V3, Auth::None, true);
        let d = wire(&u, &advert_from(&u), PEER, 64, 0);
        assert!(check_advert(&d, &u, ctx()).is_ok());
    }

    #[test]
    fn forged_adverts_are_dropped_with_their_reason() {
        let p = policy(Version::V2, Auth::Pass(pw()), true);
        let a = advert_from(&p);
        let check = |a: &Advert| check_advert(&wire(&p, a, PEER, 255, 0), &p, ctx());
        let wrong_pw = Advert {
            auth: AuthField::Pass(Password::new("guess").unwrap()),
            ..a.clone()
        };
        assert_eq!(check(&wrong_pw), Err(DropReason::Password));
        let no_auth = Advert {
            auth: AuthField::None,
            ..a.clone()
        };
        assert_eq!(check(&no_auth), Err(DropReason::AuthType { code: 0 }));
        let vrid = Advert {
            vrid: 12,
            ..a.clone()
        };
        assert_eq!(check(&vrid), Err(DropReason::Vrid { vrid: 12 }));
        let slow = Advert {
            interval_cs: 300,
            ..a.clone()
        };
        assert_eq!(
            check(&slow),
            Err(DropReason::Interval {
                got_cs: 300,
                ours_cs: 100
            })
        );
        let v3 = Advert {
            version: Version::V3,
            auth: AuthField::None,
            ..a.clone()
        };
        assert_eq!(check(&v3), Err(DropReason::Version { got: Version::V3 }));
        let two = Advert {
            addrs: vips()[..2].to_vec(),
            ..a.clone()
        };
        assert_eq!(
            check(&two),
            Err(DropReason::AddressCount { got: 2, ours: 3 })
        );
        let mut other_list = vips();
        other_list[1] = Ipv4Addr::new(192, 0, 2, 21);
        let other = Advert {
            addrs: other_list,
            ..a.clone()
        };
        assert_eq!(
            check(&other),
            Err(DropReason::AddressList {
                missing: Ipv4Addr::new(192, 0, 2, 20)
            })
        );
        let mut reordered = vips();
        reordered.reverse();
        let reordered = Advert {
            addrs: reordered,
            ..a.clone()
        };
        assert!(check(&reordered).is_ok(), "order does not matter");

        let mut bad_sum = wire(&p, &a, PEER, 255, 0);
        bad_sum[26] ^= 0x40;
        assert!(matches!(
            check_advert(&bad_sum, &p, ctx()),
            Err(DropReason::Decode(DecodeError::Checksum { .. }))
        ));
        let d = wire(&p, &a, PEER, 255, 0);
        let mut short = d[..d.len() - 4].to_vec();
        short[3] -= 4;
        assert!(matches!(
            check_advert(&short, &p, ctx()),
            Err(DropReason::Decode(DecodeError::Length { .. }))
        ));
        assert!(matches!(
            check_advert(&d[..d.len() - 4], &p, ctx()),
            Err(DropReason::Ip(Ipv4Error::TotalLength { .. }))
        ));
    }

    #[test]
    fn ah_is_required_verified_and_replays_refused() {
        let p = policy(Version::V2, Auth::Ah(pw()), true);
        let a = advert_from(&p);
        let d = wire(&p, &a, PEER, 255, 10);
        let at = |last| RxContext {
            ah_seq: last,
            ..ctx()
        };
        assert!(check_advert(&d, &p, at(9)).is_ok());
        assert_eq!(
            check_advert(&d, &p, at(10)),
            Err(DropReason::AhReplay { seq: 10, last: 10 })
        );
        let wrong = RxPolicy {
            auth: Auth::Ah(Password::new("other").unwrap()),
            ..p.clone()
        };
        assert_eq!(
            check_advert(&d, &wrong, at(0)),
            Err(DropReason::Ah(AhError::Icv))
        );
        let pass = policy(Version::V2, Auth::Pass(pw()), true);
        assert_eq!(
            check_advert(&d, &pass, at(0)),
            Err(DropReason::AhPresence { got_ah: true })
        );
        let plain = wire(&pass, &advert_from(&pass), PEER, 255, 0);
        assert_eq!(
            check_advert(&plain, &p, at(0)),
            Err(DropReason::AhPresence { got_ah: false })
        );
    }

    #[test]
    fn cast_and_unicast_source() {
        let m = policy(Version::V3, Auth::None, false);
        let u = RxPolicy {
            check_unicast_src: true,
            ..policy(Version::V3, Auth::None, true)
        };
        let to_group = wire(&m, &advert_from(&m), PEER, 255, 0);
        assert_eq!(
            check_advert(&to_group, &u, ctx()),
            Err(DropReason::Cast {
                dst: MULTICAST_GROUP
            })
        );
        let from_other = wire(&u, &advert_from(&u), OTHER, 255, 0);
        assert_eq!(
            check_advert(&from_other, &u, ctx()),
            Err(DropReason::UnicastSource { src: OTHER })
        );
    }

    #[test]
    fn skip_check_adv_addr_only_exempts_the_followed_master() {
        let p = RxPolicy {
            skip_check_adv_addr: true,
            ..policy(Version::V3, Auth::None, false)
        };
        let a = Advert {
            addrs: vec![Ipv4Addr::new(192, 0, 2, 99)],
            ..advert_from(&p)
        };
        let d = wire(&p, &a, PEER, 255, 0);
        let following = |m| RxContext {
            followed_master: m,
            ..ctx()
        };
        assert!(check_advert(&d, &p, following(Some(PEER))).is_ok());
        assert!(matches!(
            check_advert(&d, &p, following(Some(OTHER))),
            Err(DropReason::AddressCount { .. })
        ));
        assert!(check_advert(&d, &p, following(None)).is_err());
        let strict = RxPolicy {
            skip_check_adv_addr: false,
            ..p.clone()
        };
        assert!(check_advert(&d, &strict, following(Some(PEER))).is_err());
    }
}
