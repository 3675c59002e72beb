//! Forged and malformed adverts (issue 4): lbd on lb1 with keepalived as
//! its real peer on lb2; from the clients' namespace a raw socket
//! (IP_HDRINCL) sends adverts built with lbd's own codec and then broken,
//! with the peer's address as source. Each would cause a transition if
//! accepted: priority 254 against lbd as master, priority 0 (the master
//! resigning) against lbd as backup. Per case: no transition, same state,
//! same VIPs on lb1, and exactly the matching drop counter rose by the
//! number of packets sent (no other counter moved).
//!
//! Modes: VRRPv3 multicast with lbd master (TTL, checksum, VRID,
//! truncation, length, VIP list, version), VRRPv2 PASS with lbd backup
//! (password, auth type, interval, checksum, VIP list; AH toward a PASS
//! instance is not even heard), VRRPv2 AH with lbd master (wrong key,
//! missing AH, cut AH, replayed and old sequence numbers) and with lbd
//! backup (a captured keepalived advert replayed, a resignation with the
//! wrong key). A last test shows the forger's undamaged adverts do move a
//! real peer (keepalived), so the drops above are not vacuous.
//!
//! Drop labels follow `lb_userspace::vrrp::check`: a foreign VRID is
//! counted (`vrid`), not ignored silently; TTL is checked for multicast
//! instances only (as keepalived does), so the TTL case runs in the
//! multicast mode.
//!
//! Run as root after `cargo build -p lb-userspace --bin lbd`:
//! `cargo test -p lb-tests --test lab_vrrp_forged -- --test-threads=1 --nocapture`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lb_tests::lab::keepalived::{Auth, AuthKind, Keepalived, VrrpSetup};
use lb_tests::lab::vrrp::{self, InstanceView};
use lb_tests::lab::{Lab, Lbd, ServiceConfig, assert_nothing_left, bounds};
use lb_userspace::vrrp::ah::{AhOutgoing, PROTO_AH, build_ah_packet};
use lb_userspace::vrrp::ipv4::Ipv4Header;
use lb_userspace::vrrp::packet::{
    Advert, AuthField, MULTICAST_GROUP, PROTO_VRRP, Password, Version,
};

const VIPS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 20)];
const VRID: u8 = 61;
const PASSWORD: &str = "Pass1234";
/// Copies of each forged packet.
const COPIES: u64 = 3;

/// How a forged datagram is wrapped.
#[derive(Clone, Copy, Debug)]
enum Wrap {
    /// IPv4 + VRRP with this TTL.
    Plain { ttl: u8 },
    /// IPv4 + AH (keyed with this password, this sequence number) + VRRP.
    Ah { password: &'static str, seq: u32 },
}

/// One forged advert: the fields a peer would send, then the damage.
#[derive(Clone, Debug)]
struct Forgery {
    advert: Advert,
    wrap: Wrap,
    /// Applied to the encoded VRRP bytes (before AH is computed).
    damage: fn(&mut Vec<u8>),
}

fn no_damage(_: &mut Vec<u8>) {}

/// The lab with lbd on lb1 (config written, not started) and keepalived
/// on lb2, and what the forger needs to know.
struct Bench {
    lab: Lab,
    setup: VrrpSetup,
    config: PathBuf,
    /// The address of the real peer, used as the forged source.
    peer: Ipv4Addr,
    /// Where adverts go: lb1 (unicast) or the VRRP group.
    dst: Ipv4Addr,
    /// The priority that would cause a transition if accepted.
    hostile_priority: u8,
}

fn bench(version: u8, auth: Option<Auth>, unicast: bool, lbd_master: bool) -> Bench {
    let lab = Lab::builder("kadf")
        .lb_nodes(2)
        .backends(1)
        .client_addrs(1)
        .vips(&VIPS)
        .add_vips(false)
        .build()
        .expect("the lab builds (root, iproute2, bpffs)");
    let interval = if version == 2 {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(500)
    };
    let priorities = if lbd_master { [200, 100] } else { [100, 200] };
    let setup = VrrpSetup::for_lab(&lab, VRID, version, auth, interval, unicast, &priorities);
    let service = ServiceConfig::tcp("web", VIPS[0], 80, lab.backend_configs(80, &[]));
    let text = lab.lbd_config(vec![service]).render().unwrap() + &setup.lbd_toml();
    let config = lab.dir().join("lbd.toml");
    std::fs::write(&config, text).unwrap();
    // The forger sends multicast from a namespace without a default route.
    lab.exec_in("cl", &["ip", "route", "add", "224.0.0.0/4", "dev", "eth0"])
        .unwrap();
    let peer = setup.member(&lab.lb_node_name(2)).unwrap().addr;
    let me = setup.member(&lab.lb_node_name(1)).unwrap().addr;
    Bench {
        dst: if unicast { me } else { MULTICAST_GROUP },
        hostile_priority: if lbd_master { 254 } else { 0 },
        lab,
        setup,
        config,
        peer,
    }
}

impl Bench {
    /// A correct advert of this instance from the peer, as `lbd` would
    /// accept it (before damage).
    fn genuine(&self, priority: u8) -> Advert {
        let version = if self.setup.version == 2 {
            Version::V2
        } else {
            Version::V3
        };
        let auth = match &self.setup.auth {
            None => AuthField::None,
            Some(a) if a.kind == AuthKind::Pass => {
                AuthField::Pass(Password::new(&a.password).unwrap())
            }
            Some(_) => AuthField::Ah,
        };
        Advert {
            version,
            vrid: self.setup.vrid,
            priority,
            interval_cs: (self.setup.advert_interval.as_millis() / 10) as u16,
            auth,
            addrs: self.setup.vips.clone(),
        }
    }

    /// The wrapping a correct advert of this instance has.
    fn genuine_wrap(&self, seq: u32) -> Wrap {
        match &self.setup.auth {
            Some(a) if a.kind == AuthKind::Ah => Wrap::Ah {
                password: PASSWORD,
                seq,
            },
            _ => Wrap::Plain { ttl: 255 },
        }
    }

    fn datagram(&self, f: &Forgery, ip_id: u16) -> Vec<u8> {
        let mut vrrp = f
            .advert
            .encode(self.peer, self.dst)
            .expect("encodable advert");
        (f.damage)(&mut vrrp);
        match f.wrap {
            Wrap::Plain { ttl } => {
                let mut ip = Ipv4Header::advert(self.peer, self.dst, PROTO_VRRP, ip_id, vrrp.len());
                ip.ttl = ttl;
                [&ip.encode()[..], &vrrp].concat()
            }
            Wrap::Ah { password, seq } => build_ah_packet(&AhOutgoing {
                src: self.peer,
                dst: self.dst,
                ip_id,
                unicast: self.setup.unicast,
                seq,
                password: &Password::new(password).unwrap(),
                vrrp: &vrrp,
            }),
        }
    }

    fn status(&self) -> InstanceView {
        vrrp::first_instance(&self.lab.lb_node_name(1)).unwrap()
    }

    /// Sends `datagrams`, then checks that exactly `label` rose by their
    /// number and nothing else changed.
    fn expect_dropped(&self, case: &str, label: &str, datagrams: &[Vec<u8>], lbd: &mut Lbd) {
        self.expect_no_effect(case, Some(label), datagrams, lbd);
    }

    /// Sends `datagrams`, then checks that the drop counter `label` rose by
    /// their number (`None`: no counter moved, lbd never heard them) and
    /// that state, transitions and lb1's VIPs did not change.
    fn expect_no_effect(
        &self,
        case: &str,
        label: Option<&str>,
        datagrams: &[Vec<u8>],
        lbd: &mut Lbd,
    ) {
        let before = self.status();
        let vips_before = self.lab.vips_held("lb1", &VIPS).unwrap();
        send_raw(&self.lab, "cl", self.dst, datagrams);
        let counted = |s: &InstanceView| label.map_or(s.total_drops(), |l| s.dropped(l));
        let sent = if label.is_some() {
            datagrams.len() as u64
        } else {
            0
        };
        let want = counted(&before) + sent;
        let start = Instant::now();
        let mut after = self.status();
        while counted(&after) < want && start.elapsed() < bounds::FRAME_ARRIVES {
            std::thread::sleep(Duration::from_millis(20));
            after = self.status();
        }
        // Time for a transition to show if a packet had been accepted: a
        // backup takes over a resigning master after its skew time.
        let lbd_priority = self.setup.member(lbd.node()).unwrap().priority;
        std::thread::sleep(self.setup.skew(lbd_priority) + Duration::from_millis(400));
        lbd.check_running().unwrap();
        let after = self.status();
        let vips_after = self.lab.vips_held("lb1", &VIPS).unwrap();
        let label = label.unwrap_or("(any)");
        println!(
            "{case}: {label} {} -> {}, state {}, transitions {}",
            counted(&before),
            counted(&after),
            after.state,
            after.transitions
        );
        assert_eq!(
            counted(&after),
            want,
            "{case}: drop counter {label} should rise by {sent}: before {:?}, after {:?}",
            before.drops,
            after.drops
        );
        assert_eq!(
            after.total_drops() - before.total_drops(),
            sent,
            "{case}: only {label} may rise: before {:?}, after {:?}",
            before.drops,
            after.drops
        );
        assert_eq!(after.state, before.state, "{case}: state changed");
        assert_eq!(
            after.transitions, before.transitions,
            "{case}: a transition happened"
        );
        assert_eq!(vips_after, vips_before, "{case}: lb1's VIPs changed");
    }

    /// `COPIES` copies of a forgery (AH ones with rising sequence numbers
    /// from `seq`, so only the damage can be the reason to drop them).
    fn copies(&self, f: &Forgery) -> Vec<Vec<u8>> {
        (0..COPIES as u32)
            .map(|i| {
                let mut f = f.clone();
                if let Wrap::Ah { seq, .. } = &mut f.wrap {
                    *seq += i;
                }
                self.datagram(&f, 0x4000 + i as u16)
            })
            .collect()
    }

    fn finish(self, (mut lbd, ka): (Lbd, Keepalived)) {
        lbd.stop(Duration::from_secs(5)).unwrap();
        drop(lbd);
        drop(ka);
        let prefix = self.lab.prefix().to_string();
        let pins = self.lab.lbd_pin_dir(1);
        self.lab.teardown().unwrap();
        drop(self.lab);
        assert_nothing_left(&prefix, &pins);
    }
}

/// Sends whole IPv4 datagrams from `node`'s namespace through a raw socket
/// (IPPROTO_RAW implies IP_HDRINCL; the kernel fills in only the IP total
/// length and header checksum).
fn send_raw(lab: &Lab, node: &str, dst: Ipv4Addr, datagrams: &[Vec<u8>]) {
    let datagrams = datagrams.to_vec();
    lab.run_in(node, move || {
        // SAFETY: plain syscall; the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        for d in &datagrams {
            // SAFETY: valid fd, buffer and sockaddr_in.
            let n = unsafe {
                libc::sendto(
                    fd,
                    d.as_ptr().cast(),
                    d.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                )
            };
            assert_eq!(
                n,
                d.len() as isize,
                "sendto {dst}: {}",
                std::io::Error::last_os_error()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
    })
    .unwrap();
}

/// The next AH datagram that arrives in `node`'s (short name) namespace,
/// read with a raw AH socket there (the VRRP daemon there gets its own
/// copy).
fn sniff_ah(lab: &Lab, node: &str) -> Vec<u8> {
    lab.run_in(node, || {
        // SAFETY: plain syscall; closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, i32::from(PROTO_AH)) };
        assert!(
            fd >= 0,
            "raw AH socket: {}",
            std::io::Error::last_os_error()
        );
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: valid fd and timeval.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        let mut buf = [0u8; 256];
        // SAFETY: valid fd and buffer.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
        assert!(n >= 44, "no AH advert within 5 s");
        buf[..n as usize].to_vec()
    })
    .unwrap()
}

/// The AH sequence number of an IPv4 + AH datagram.
fn ah_seq(datagram: &[u8]) -> u32 {
    let ihl = usize::from(datagram[0] & 0x0f) * 4;
    u32::from_be_bytes(datagram[ihl + 8..ihl + 12].try_into().unwrap())
}

fn start(b: &Bench, lbd_state: &str) -> (Lbd, Keepalived) {
    let mut ka = b.lab.start_keepalived(2, &b.setup).unwrap();
    let mut lbd = b.lab.start_lbd(1, &b.config).unwrap();
    let bound = bounds::AGENT_RESTART + bounds::protocol(b.setup.master_down(100));
    vrrp::wait_for_state(&mut lbd, lbd_state, bound).unwrap();
    let ka_state = if lbd_state == "master" {
        "BACKUP"
    } else {
        "MASTER"
    };
    ka.wait_for_state(ka_state, bound).unwrap();
    // Let the election settle (a preempting lbd, keepalived's answer).
    std::thread::sleep(2 * b.setup.advert_interval);
    let status = b.status();
    assert_eq!(status.state, lbd_state, "{status:?}");
    assert_eq!(
        status.total_drops(),
        0,
        "keepalived's adverts pass: {status:?}"
    );
    (lbd, ka)
}

#[test]
fn forged_multicast_v3_adverts_leave_the_master_alone() {
    let b = bench(3, None, false, true);
    let (mut lbd, ka) = start(&b, "master");
    let p = b.hostile_priority;
    let base = Forgery {
        advert: b.genuine(p),
        wrap: Wrap::Plain { ttl: 255 },
        damage: no_damage,
    };
    let mut vrid = base.clone();
    vrid.advert.vrid = VRID + 1;
    let mut wrong_vip = base.clone();
    wrong_vip.advert.addrs[1] = Ipv4Addr::new(192, 0, 2, 99);
    let mut fewer_vips = base.clone();
    fewer_vips.advert.addrs.truncate(1);
    let mut v2 = base.clone();
    v2.advert.version = Version::V2;
    v2.advert.interval_cs = 100;
    let cases: Vec<(&str, &str, Forgery)> = vec![
        (
            "TTL 64",
            "ttl",
            Forgery {
                wrap: Wrap::Plain { ttl: 64 },
                ..base.clone()
            },
        ),
        (
            "bad checksum",
            "checksum",
            Forgery {
                damage: |v| v[7] ^= 0x5a,
                ..base.clone()
            },
        ),
        ("foreign VRID", "vrid", vrid),
        (
            "truncated to 6 bytes",
            "truncated",
            Forgery {
                damage: |v| v.truncate(6),
                ..base.clone()
            },
        ),
        (
            "one address short of its count",
            "length",
            Forgery {
                damage: |v| v.truncate(v.len() - 4),
                ..base.clone()
            },
        ),
        ("a VIP replaced", "address_list", wrong_vip),
        ("a VIP missing", "address_list", fewer_vips),
        ("VRRPv2 on a v3 instance", "version", v2),
    ];
    for (case, label, forgery) in &cases {
        b.expect_dropped(case, label, &b.copies(forgery), &mut lbd);
    }
    b.finish((lbd, ka));
}

#[test]
fn forged_pass_adverts_leave_the_backup_alone() {
    let pass = Some(Auth {
        kind: AuthKind::Pass,
        password: PASSWORD.into(),
    });
    let b = bench(2, pass, true, false);
    let (mut lbd, ka) = start(&b, "backup");
    let p = b.hostile_priority;
    let base = Forgery {
        advert: b.genuine(p),
        wrap: Wrap::Plain { ttl: 255 },
        damage: no_damage,
    };
    let mut wrong_password = base.clone();
    wrong_password.advert.auth = AuthField::Pass(Password::new("Pass1235").unwrap());
    let mut no_auth = base.clone();
    no_auth.advert.auth = AuthField::None;
    let mut ah_instead = base.clone();
    ah_instead.advert.auth = AuthField::Ah;
    ah_instead.wrap = Wrap::Ah {
        password: PASSWORD,
        seq: 1,
    };
    let mut interval = base.clone();
    interval.advert.interval_cs = 200;
    let mut wrong_vip = base.clone();
    wrong_vip.advert.addrs[0] = Ipv4Addr::new(192, 0, 2, 99);
    let cases: Vec<(&str, &str, Forgery)> = vec![
        ("wrong password", "password", wrong_password),
        ("no authentication", "auth_type", no_auth),
        ("advert interval 2 s", "interval", interval),
        (
            "bad checksum",
            "checksum",
            Forgery {
                damage: |v| v[6] ^= 0x01,
                ..base.clone()
            },
        ),
        ("a VIP replaced", "address_list", wrong_vip),
    ];
    for (case, label, forgery) in &cases {
        b.expect_dropped(case, label, &b.copies(forgery), &mut lbd);
    }
    // Like keepalived, an instance without AH never opens an AH socket:
    // such packets are not even heard, so no counter moves.
    b.expect_no_effect(
        "AH on a PASS instance",
        None,
        &b.copies(&ah_instead),
        &mut lbd,
    );
    b.finish((lbd, ka));
}

#[test]
fn forged_ah_adverts_leave_the_master_alone() {
    let ah = Some(Auth {
        kind: AuthKind::Ah,
        password: PASSWORD.into(),
    });
    let b = bench(2, ah, true, true);
    let (mut lbd, ka) = start(&b, "master");
    let p = b.hostile_priority;
    // Above anything lbd has sent so far: only the damage can be wrong.
    let seq = ah_seq(&sniff_ah(&b.lab, "lb2")) + 1_000;
    let base = Forgery {
        advert: b.genuine(p),
        wrap: b.genuine_wrap(seq),
        damage: no_damage,
    };
    let wrong_key = Forgery {
        wrap: Wrap::Ah {
            password: "Pass1235",
            seq,
        },
        ..base.clone()
    };
    b.expect_dropped(
        "higher priority, wrong AH key",
        "ah_icv",
        &b.copies(&wrong_key),
        &mut lbd,
    );
    let no_ah = Forgery {
        wrap: Wrap::Plain { ttl: 255 },
        ..base.clone()
    };
    b.expect_dropped(
        "higher priority without AH",
        "auth_type",
        &b.copies(&no_ah),
        &mut lbd,
    );
    let mut short = b.datagram(&base, 0x4100);
    short.truncate(20 + 10);
    b.expect_dropped("AH cut short", "ah_malformed", &[short], &mut lbd);

    // A genuine advert (lower priority, so harmless) is accepted once...
    let genuine = Forgery {
        advert: b.genuine(50),
        wrap: b.genuine_wrap(seq + 100),
        damage: no_damage,
    };
    let original = b.datagram(&genuine, 0x4200);
    let before = b.status();
    send_raw(&b.lab, "cl", b.dst, std::slice::from_ref(&original));
    let start = Instant::now();
    let received = |s: &InstanceView| s.adverts_received;
    while received(&b.status()) <= received(&before) && start.elapsed() < bounds::FRAME_ARRIVES {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = b.status();
    assert_eq!(
        after.total_drops(),
        before.total_drops(),
        "the genuine advert is accepted: {after:?}"
    );
    assert_eq!(after.state, "master");
    // ... and its replays, and older numbers with a higher priority, are not.
    let replays = vec![original; COPIES as usize];
    b.expect_dropped("replayed advert", "ah_replay", &replays, &mut lbd);
    let stale = Forgery {
        wrap: b.genuine_wrap(seq + 50),
        ..base.clone()
    };
    b.expect_dropped(
        "higher priority, old sequence number",
        "ah_replay",
        &[b.datagram(&stale, 0x4300)],
        &mut lbd,
    );
    b.finish((lbd, ka));
}

#[test]
fn forged_and_replayed_ah_adverts_leave_the_backup_alone() {
    let ah = Some(Auth {
        kind: AuthKind::Ah,
        password: PASSWORD.into(),
    });
    let b = bench(2, ah, true, false);
    let (mut lbd, ka) = start(&b, "backup");
    // keepalived's own advert to lbd, captured on the way in: lbd has
    // accepted it, so sending it again is a replay.
    let captured = sniff_ah(&b.lab, "lb1");
    assert_eq!(
        &captured[12..16],
        &b.peer.octets(),
        "captured from keepalived"
    );
    let replays = vec![captured.clone(); COPIES as usize];
    b.expect_dropped(
        "replayed keepalived advert",
        "ah_replay",
        &replays,
        &mut lbd,
    );
    // keepalived resigning (priority 0), with the wrong key.
    let resign = Forgery {
        advert: b.genuine(b.hostile_priority),
        wrap: Wrap::Ah {
            password: "Pass1235",
            seq: ah_seq(&captured) + 1_000,
        },
        damage: no_damage,
    };
    b.expect_dropped(
        "priority 0, wrong AH key",
        "ah_icv",
        &b.copies(&resign),
        &mut lbd,
    );
    b.finish((lbd, ka));
}

/// The forger itself: its undamaged adverts are real VRRP to a real peer
/// (keepalived, alone and master, yields to a forged priority 254 master
/// in both the AH unicast and the v3 multicast wrapping), and a damaged
/// one draws keepalived's complaint. Without this, the drop counts above
/// could come from packets nobody would ever accept.
#[test]
fn the_forger_convinces_keepalived() {
    let ah = Some(Auth {
        kind: AuthKind::Ah,
        password: PASSWORD.into(),
    });
    for (version, auth, unicast) in [(2, ah, true), (3, None, false)] {
        let mut b = bench(version, auth, unicast, true);
        let mut ka = b.lab.start_keepalived(2, &b.setup).unwrap();
        ka.wait_for_state("MASTER", Duration::from_secs(10))
            .unwrap();
        // Forge lbd's side (lb1, not running) toward keepalived.
        b.peer = b.setup.member(&b.lab.lb_node_name(1)).unwrap().addr;
        if unicast {
            b.dst = b.setup.member(&b.lab.lb_node_name(2)).unwrap().addr;
        }
        let broken = Forgery {
            advert: b.genuine(254),
            wrap: if unicast {
                Wrap::Ah {
                    password: "Pass1235",
                    seq: 10_000,
                }
            } else {
                Wrap::Plain { ttl: 255 }
            },
            damage: if unicast { no_damage } else { |v| v[7] ^= 0x5a },
        };
        send_raw(&b.lab, "cl", b.dst, &[b.datagram(&broken, 0x4400)]);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(ka.state().as_deref(), Some("MASTER"), "damage is refused");
        assert!(
            !ka.protocol_complaints().is_empty(),
            "keepalived complains about the damaged advert:\n{}",
            ka.log_tail(10)
        );
        let genuine = Forgery {
            advert: b.genuine(254),
            wrap: b.genuine_wrap(10_001),
            damage: no_damage,
        };
        send_raw(&b.lab, "cl", b.dst, &[b.datagram(&genuine, 0x4401)]);
        ka.wait_for_state("BACKUP", Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("v{version}: keepalived ignored the forged master: {e:#}"));
        println!("v{version}: keepalived yielded to the forged advert");
        drop(ka);
        let prefix = b.lab.prefix().to_string();
        let pins = b.lab.lbd_pin_dir(1);
        b.lab.teardown().unwrap();
        drop(b);
        assert_nothing_left(&prefix, &pins);
    }
}
