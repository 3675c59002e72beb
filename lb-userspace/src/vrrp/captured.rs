//! Real keepalived adverts as test vectors.
//!
//! Captured from Debian's keepalived 2.2.7 by `testdata/capture-keepalived.sh`:
//! keepalived as MASTER in a network namespace (192.0.2.1, unicast peer
//! 192.0.2.2 or multicast), `virtual_router_id 11`, `priority 101`,
//! `advert_int 1`, VIPs 192.0.2.250, 192.0.2.20, 192.0.2.30, auth AH or
//! PASS with `auth_pass Pass1234`, or `vrrp_version 3`; tcpdump in the
//! peer's namespace. Each vector is the IPv4 datagram from the header on.
//! The `_STOP` vectors are the priority 0 advert sent on SIGTERM.
//!
//! What they show: TOS 0xc0, TTL 255 for unicast too, IP id counting from
//! 1, no DF; AH next header 112, payload length 4, SPI = source address,
//! sequence numbers from 1, VRRP auth type 2 with zero auth data; v3
//! interval 0x064 (100 cs); the v3 checksum differs between the multicast
//! and the unicast capture, so the pseudo-header uses the real destination.

use std::net::Ipv4Addr;

use super::ah::{AhOutgoing, PROTO_AH, build_ah_packet, verify_ah};
use super::check::{Auth, RxContext, RxPolicy, check_advert};
use super::ipv4::Ipv4Header;
use super::packet::{
    Advert, AuthField, DecodeError, MULTICAST_GROUP, PROTO_VRRP, Password, Version,
};

const V2_AH_UNICAST: &str = "45c0004800010000ff3336bec0000201c000020270040000c00002010000000149154f729ef954d965be77ad210b6503020130c2c00002fac0000214c000021e0000000000000000";
const V2_AH_UNICAST_STOP: &str = "45c0004800040000ff3336bbc0000201c000020270040000c00002010000000442d44538c737c0e71020f559210b0003020195c2c00002fac0000214c000021e0000000000000000";
const V2_AH_MULTICAST: &str = "45c0004800010000ff3318aec0000201e000001270040000c0000201000000012f4f74f6d43ff5c7911609b6210b6503020130c2c00002fac0000214c000021e0000000000000000";
const V2_AH_MULTICAST_STOP: &str = "45c0004800040000ff3318abc0000201e000001270040000c0000201000000042ef48edd8f1bb36f6b366568210b0003020195c2c00002fac0000214c000021e0000000000000000";
const V2_PASS_UNICAST: &str = "45c0003000010000ff703699c0000201c0000202210b650301010987c00002fac0000214c000021e5061737331323334";
const V2_PASS_UNICAST_STOP: &str = "45c0003000040000ff703696c0000201c0000202210b000301016e87c00002fac0000214c000021e5061737331323334";
const V3_MULTICAST: &str =
    "45c0002800010000ff701891c0000201e0000012310b650300647fc6c00002fac0000214c000021e";
const V3_MULTICAST_STOP: &str =
    "45c0002800040000ff70188ec0000201e0000012310b00030064e4c6c00002fac0000214c000021e";
const V3_UNICAST: &str =
    "45c0002800010000ff7036a1c0000201c0000202310b650300649dd6c00002fac0000214c000021e";
const V3_UNICAST_STOP: &str =
    "45c0002800040000ff70369ec0000201c0000202310b0003006402d7c00002fac0000214c000021e";

const KEEPALIVED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const US: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

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

fn expected(version: Version, priority: u8, auth: AuthField) -> Advert {
    Advert {
        version,
        vrid: 11,
        priority,
        interval_cs: 100,
        auth,
        addrs: vips(),
    }
}

/// Our side of the keepalived pair, as `check_advert` sees it.
fn policy(version: Version, auth: Auth, unicast: bool) -> RxPolicy {
    RxPolicy {
        version,
        vrid: 11,
        auth,
        interval_cs: 100,
        vips: vips(),
        unicast_peers: if unicast { vec![KEEPALIVED] } else { vec![] },
        skip_check_adv_addr: true,
        check_unicast_src: true,
    }
}

fn assert_keepalived_ip_header(ip: &Ipv4Header, id: u16, protocol: u8, dst: Ipv4Addr) {
    assert_eq!((ip.tos, ip.ttl, ip.flags_fragment), (0xc0, 255, 0));
    assert_eq!((ip.id, ip.protocol), (id, protocol));
    assert_eq!((ip.src, ip.dst), (KEEPALIVED, dst));
}

#[test]
fn ah_adverts_verify_decode_and_rebuild_byte_for_byte() {
    for (vector, id, priority, unicast) in [
        (V2_AH_UNICAST, 1, 101, true),
        (V2_AH_UNICAST_STOP, 4, 0, true),
        (V2_AH_MULTICAST, 1, 101, false),
        (V2_AH_MULTICAST_STOP, 4, 0, false),
    ] {
        let d = hex(vector);
        let dst = if unicast { US } else { MULTICAST_GROUP };
        let ip = Ipv4Header::parse(&d).unwrap();
        assert_keepalived_ip_header(&ip, id, PROTO_AH, dst);
        let v = verify_ah(&d, &pw(), unicast).expect("keepalived's ICV verifies");
        assert_eq!(v.seq, u32::from(id), "one advert per sequence number");
        let advert = Advert::decode(&d[v.vrrp_offset..], ip.src, ip.dst).unwrap();
        assert_eq!(advert, expected(Version::V2, priority, AuthField::Ah));

        let vrrp = advert.encode(ip.src, ip.dst).unwrap();
        let rebuilt = build_ah_packet(&AhOutgoing {
            src: ip.src,
            dst: ip.dst,
            ip_id: ip.id,
            unicast,
            seq: v.seq,
            password: &pw(),
            vrrp: &vrrp,
        });
        assert_eq!(rebuilt, d, "we build what keepalived builds");

        let got = check_advert(
            &d,
            &policy(Version::V2, Auth::Ah(pw()), unicast),
            RxContext::default(),
        )
        .unwrap();
        assert_eq!(got.ah_seq, Some(v.seq));
    }
}

#[test]
fn ah_hashes_ttl_for_multicast_and_not_for_unicast() {
    // Verifying with the other cast mode must fail for the multicast
    // capture (TTL 255 was hashed); for unicast TTL was hashed as 0.
    let multicast = hex(V2_AH_MULTICAST);
    assert!(verify_ah(&multicast, &pw(), true).is_err());
    let unicast = hex(V2_AH_UNICAST);
    assert!(verify_ah(&unicast, &pw(), false).is_err());
    assert!(verify_ah(&unicast, &Password::new("Pass1235").unwrap(), true).is_err());
}

#[test]
fn ah_replay_of_a_captured_advert_is_refused() {
    let d = hex(V2_AH_UNICAST_STOP);
    let p = policy(Version::V2, Auth::Ah(pw()), true);
    let seen = RxContext {
        ah_seq: 4,
        ..RxContext::default()
    };
    assert_eq!(check_advert(&d, &p, seen).unwrap_err().label(), "ah_replay");
}

#[test]
fn plain_adverts_decode_and_rebuild_byte_for_byte() {
    let pass = AuthField::Pass(pw());
    for (vector, id, version, auth, priority, dst) in [
        (V2_PASS_UNICAST, 1, Version::V2, pass, 101, US),
        (V2_PASS_UNICAST_STOP, 4, Version::V2, pass, 0, US),
        (
            V3_MULTICAST,
            1,
            Version::V3,
            AuthField::None,
            101,
            MULTICAST_GROUP,
        ),
        (
            V3_MULTICAST_STOP,
            4,
            Version::V3,
            AuthField::None,
            0,
            MULTICAST_GROUP,
        ),
        (V3_UNICAST, 1, Version::V3, AuthField::None, 101, US),
        (V3_UNICAST_STOP, 4, Version::V3, AuthField::None, 0, US),
    ] {
        let d = hex(vector);
        let ip = Ipv4Header::parse(&d).unwrap();
        assert_keepalived_ip_header(&ip, id, PROTO_VRRP, dst);
        let advert = Advert::decode(&d[20..], ip.src, ip.dst).unwrap();
        assert_eq!(advert, expected(version, priority, auth));

        let vrrp = advert.encode(ip.src, ip.dst).unwrap();
        let header = Ipv4Header::advert(ip.src, ip.dst, PROTO_VRRP, ip.id, vrrp.len());
        assert_eq!([header.encode().as_slice(), &vrrp].concat(), d);

        let our_auth = match auth {
            AuthField::Pass(p) => Auth::Pass(p),
            _ => Auth::None,
        };
        let p = policy(version, our_auth, dst == US);
        assert!(check_advert(&d, &p, RxContext::default()).is_ok());
    }
}

#[test]
fn v3_unicast_checksum_uses_the_unicast_destination() {
    let d = hex(V3_UNICAST);
    assert!(matches!(
        Advert::decode(&d[20..], KEEPALIVED, MULTICAST_GROUP),
        Err(DecodeError::Checksum { .. })
    ));
    let m = hex(V3_MULTICAST);
    assert!(matches!(
        Advert::decode(&m[20..], KEEPALIVED, US),
        Err(DecodeError::Checksum { .. })
    ));
}

#[test]
fn pass_advert_with_another_password_is_dropped() {
    let d = hex(V2_PASS_UNICAST);
    let p = policy(
        Version::V2,
        Auth::Pass(Password::new("Pass123").unwrap()),
        true,
    );
    assert_eq!(
        check_advert(&d, &p, RxContext::default())
            .unwrap_err()
            .label(),
        "password"
    );
}
