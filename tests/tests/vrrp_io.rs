//! Root tests of VRRP's I/O edge (lb-userspace's `vrrp`): the raw advert
//! sockets and the gratuitous ARP sender, across the lab library's veth pair
//! (192.0.2.1 on `a`'s veth0, 192.0.2.2 on `b`'s veth1), deleted also when an
//! assertion fails. Without root this fails.
//!
//! `cargo test -p lb-tests --test vrrp_io -- --test-threads=1`.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use lb_tests::lab::veth_pair::{A_ADDR, A_IFACE, B_ADDR, B_IFACE, VethPair};
use lb_tests::lab::{assert_nothing_left, bounds, netns};
use lb_userspace::vrrp::ah::{AhOutgoing, PROTO_AH, build_ah_packet, verify_ah};
use lb_userspace::vrrp::check::{Auth, RxContext, RxPolicy, check_advert};
use lb_userspace::vrrp::garp::{Burst, ETHERTYPE_ARP, FRAME_LEN, GarpSender};
use lb_userspace::vrrp::packet::{Advert, AuthField, PROTO_VRRP, Password, Version};
use lb_userspace::vrrp::socket::{VRRP_GROUP, VrrpSocket};

const VIPS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 250)];

/// Runs `f` to completion on its own thread inside `netns`, with a tokio
/// runtime of its own; [`netns::join`] waits for it.
fn spawn_async_in<T: Send + 'static>(
    netns: &str,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> std::thread::JoinHandle<anyhow::Result<T>> {
    netns::spawn_in(netns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    })
}

fn join<T>(handle: std::thread::JoinHandle<anyhow::Result<T>>) -> T {
    netns::join(handle).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Tears `pair` down and checks none of its namespaces is left.
fn tear_down(pair: VethPair) {
    let prefix = pair.prefix.clone();
    drop(pair);
    assert_nothing_left(&prefix, std::path::Path::new("/nonexistent"));
}

fn advert(version: Version, auth: AuthField) -> Advert {
    Advert {
        version,
        vrid: 11,
        priority: 101,
        interval_cs: 100,
        auth,
        addrs: VIPS.to_vec(),
    }
}

fn policy(version: Version, auth: Auth, peers: Vec<Ipv4Addr>) -> RxPolicy {
    RxPolicy {
        version,
        vrid: 11,
        auth,
        interval_cs: 100,
        vips: VIPS.to_vec(),
        unicast_peers: peers,
        skip_check_adv_addr: false,
        check_unicast_src: true,
    }
}

#[test]
fn adverts_cross_the_veth_multicast_v3_and_unicast_v2_ah() {
    let pair = VethPair::new("vrradv").unwrap();
    let password = Password::new("Pass1234").unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();

    let receiver = spawn_async_in(&pair.b, async move {
        let socket = VrrpSocket::open(B_IFACE, true).expect("open on b");
        ready_tx.send(()).unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            let d = tokio::time::timeout(bounds::FRAME_ARRIVES, socket.recv())
                .await
                .unwrap_or_else(|_| panic!("no advert within {:?}", bounds::FRAME_ARRIVES))
                .expect("recv");
            if d.src == A_ADDR {
                got.push(d);
            }
        }
        got
    });
    ready_rx
        .recv_timeout(bounds::FRAME_ARRIVES)
        .expect("receiver ready");

    let sender = spawn_async_in(&pair.a, async move {
        let socket = VrrpSocket::open(A_IFACE, true).expect("open on a");
        let v3 = advert(Version::V3, AuthField::None)
            .encode(A_ADDR, VRRP_GROUP)
            .unwrap();
        socket
            .send_advert(A_ADDR, VRRP_GROUP, 1, &v3)
            .await
            .expect("send v3");
        let v2 = advert(Version::V2, AuthField::Ah)
            .encode(A_ADDR, B_ADDR)
            .unwrap();
        let datagram = build_ah_packet(&AhOutgoing {
            src: A_ADDR,
            dst: B_ADDR,
            ip_id: 2,
            unicast: true,
            seq: 7,
            password: &password,
            vrrp: &v2,
        });
        socket
            .send_datagram(B_ADDR, &datagram)
            .await
            .expect("send AH");
        // Multicast loop is off: our own advert must not come back to us.
        let own = tokio::time::timeout(Duration::from_millis(300), socket.recv()).await;
        assert!(own.is_err(), "the sender received {own:?}");
    });
    join(sender);
    let got = join(receiver);

    let multicast = got.iter().find(|d| d.protocol == PROTO_VRRP).expect("v3");
    assert_eq!((multicast.dst, multicast.ttl), (VRRP_GROUP, 255));
    let checked = check_advert(
        &multicast.bytes,
        &policy(Version::V3, Auth::None, vec![]),
        RxContext::default(),
    )
    .expect("the v3 advert passes every check");
    assert_eq!(checked.advert, advert(Version::V3, AuthField::None));

    let ah = got.iter().find(|d| d.protocol == PROTO_AH).expect("AH");
    assert_eq!((ah.dst, ah.ttl), (B_ADDR, 255));
    assert_eq!(verify_ah(&ah.bytes, &password, true).unwrap().seq, 7);
    let checked = check_advert(
        &ah.bytes,
        &policy(Version::V2, Auth::Ah(password), vec![A_ADDR]),
        RxContext::default(),
    )
    .expect("the AH advert passes every check");
    assert_eq!(checked.ah_seq, Some(7));
    assert_eq!(checked.advert, advert(Version::V2, AuthField::Ah));
    tear_down(pair);
}

/// A packet socket that sees every ARP frame arriving on the interface.
fn arp_capture(iface: &str) -> OwnedFd {
    // SAFETY: plain socket(2); checked below.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(ETHERTYPE_ARP.to_be()),
        )
    };
    assert!(
        raw >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data.
    let mut at: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    at.sll_family = libc::AF_PACKET as u16;
    at.sll_protocol = ETHERTYPE_ARP.to_be();
    at.sll_ifindex = lb_userspace::vrrp::socket::interface_index(iface)
        .unwrap()
        .get() as i32;
    // SAFETY: valid address of the right length.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&at as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: valid option value.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    fd
}

#[test]
fn gratuitous_arp_burst_reaches_the_peer() {
    let pair = VethPair::new("vrgarp").unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let capture = spawn_async_in(&pair.b, async move {
        let fd = arp_capture(B_IFACE);
        ready_tx.send(()).unwrap();
        let mut frames = Vec::new();
        let mut buf = [0u8; 128];
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            // SAFETY: valid buffer.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                frames.push(buf[..n as usize].to_vec());
            }
        }
        frames
    });
    ready_rx
        .recv_timeout(bounds::FRAME_ARRIVES)
        .expect("capture ready");

    let sender = spawn_async_in(&pair.a, async move {
        let garp = GarpSender::open(A_IFACE).expect("open on a");
        let started = Instant::now();
        garp.announce_burst(
            &VIPS,
            Burst {
                count: 3,
                interval: Duration::from_millis(200),
            },
        )
        .await
        .expect("burst");
        (garp.mac(), started.elapsed())
    });
    let (mac, took) = join(sender);
    let frames = join(capture);

    assert!(
        took >= Duration::from_millis(400),
        "interval kept: {took:?}"
    );
    // Only our announcements: the kernel sends no ARP on an idle veth.
    let ours: Vec<_> = frames
        .iter()
        .filter(|f| f.len() >= FRAME_LEN && f[6..12] == mac)
        .collect();
    assert_eq!(ours.len(), 3 * VIPS.len(), "frames: {frames:?}");
    for (i, f) in ours.iter().enumerate() {
        let vip = VIPS[i % VIPS.len()].octets();
        assert_eq!(&f[0..6], &[0xff; 6], "broadcast");
        assert_eq!(&f[12..14], &[0x08, 0x06], "ethertype ARP");
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[22..28], &mac, "sender MAC");
        assert_eq!(&f[28..32], &vip, "sender IP");
        assert_eq!(&f[38..42], &vip, "target IP");
    }
    tear_down(pair);
}
