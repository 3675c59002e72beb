//! The lab itself, without lbd: wiring, addresses, offloads, the switch-side
//! XDP programs, the lab programs, and a clean teardown. Needs root; fails
//! (does not skip) without it.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use lb_tests::lab::{Lab, fetch_name, netns, topology};

fn text(output: std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn lab_selftest() {
    let started = Instant::now();
    let lab = Lab::datapath("st", 3, 200).expect("lab builds");
    let prefix = lab.prefix().to_string();
    let built = started.elapsed();

    // Wiring: every node exists; every bridge port carries an XDP program
    // (native mode shows as "xdp", generic would be "xdpgeneric").
    let names = netns::list().unwrap();
    for node in &lab.plan().nodes {
        assert!(
            names.contains(&node.netns),
            "namespace {} missing",
            node.netns
        );
    }
    for host in lab.plan().hosts() {
        let link = text(
            lab.exec_in("sw", &["ip", "-d", "link", "show", &host.switch_port])
                .unwrap(),
        );
        assert!(
            link.contains("prog/xdp "),
            "no native XDP program on {}: {link}",
            host.switch_port
        );
        assert!(
            link.contains("master br0"),
            "{} is not on the bridge: {link}",
            host.switch_port
        );
    }
    // Offloads are off on both ends.
    for (node, dev) in [("cl", "eth0"), ("lb1", "eth0"), ("sw", "p-lb1")] {
        let features = text(lab.exec_in(node, &["ethtool", "-k", dev]).unwrap());
        for feature in [
            "tx-checksumming: off",
            "tcp-segmentation-offload: off",
            "generic-segmentation-offload: off",
            "generic-receive-offload: off",
        ] {
            assert!(
                features.contains(feature),
                "{node}/{dev}: {feature} expected"
            );
        }
    }
    // Addresses: all client addresses, the VIP on lb1.
    let cl_addrs = text(
        lab.exec_in("cl", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
            .unwrap(),
    );
    assert_eq!(cl_addrs.lines().count(), 200, "{cl_addrs}");
    let lb_addrs = text(
        lab.exec_in("lb1", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
            .unwrap(),
    );
    assert!(lb_addrs.contains("192.0.2.10/32"), "{lb_addrs}");

    // Lab servers answer with their names.
    let backends = lab.start_backend_servers(80).unwrap();
    for (n, server) in backends.iter().enumerate() {
        let target = SocketAddrV4::new(lab.backend_addr(n + 1), 80);
        let name = lab
            .run_in("lb1", move || fetch_name(target, Duration::from_secs(5)))
            .unwrap()
            .unwrap();
        assert_eq!(name, server.name);
    }

    // Backends reach lb1 through their route for 192.0.2.0/24.
    let ssh = SocketAddrV4::new(topology::lb_front_addr(1), 2222);
    let lb_server = lab
        .start_server("lb1", "lb1-ssh", SocketAddr::V4(ssh), false)
        .unwrap();
    for n in 1..=3 {
        let name = lab
            .run_in(&format!("be{n}"), move || {
                fetch_name(ssh, Duration::from_secs(5))
            })
            .unwrap()
            .unwrap();
        assert_eq!(name, "lb1-ssh");
    }

    // Every client address works: spread to a server on lb1 (the way an
    // ssh session to the LB node goes), with a payload echo.
    let spread = lab.spread(ssh, 200, 2, &["--payload", "3000"]).unwrap();
    println!(
        "spread: {} sources x 2 connections in {} ms, {} errors",
        spread.per_source.len(),
        spread.elapsed_ms,
        spread.errors
    );
    assert_eq!(spread.errors, 0, "{:?}", spread.error_samples);
    assert_eq!(spread.per_source.len(), 200);
    assert!(
        spread
            .per_source
            .values()
            .all(|names| names == &["lb1-ssh", "lb1-ssh"])
    );
    assert_eq!(spread.per_backend["lb1-ssh"].connections, 400);
    assert_eq!(spread.per_backend["lb1-ssh"].bytes, 400 * 3000);

    // Many concurrent connections, counted on both ends.
    let before = lab.server_stats(&lb_server).unwrap();
    let hold = lab.hold(ssh, 2000, &[]).unwrap();
    let after = lab.server_stats(&lb_server).unwrap();
    println!(
        "hold: {} of {} connections open together, connect {} ms, echo {} ms",
        hold.successes, hold.total, hold.connect_ms, hold.echo_ms
    );
    assert_eq!(hold.successes, 2000, "{:?}", hold.error_samples);
    assert_eq!(hold.peak_open, 2000);
    assert_eq!(after.accepted - before.accepted, 2000);
    assert!(
        after.peak_open >= 2000,
        "server saw at most {} open",
        after.peak_open
    );

    // UDP servers answer too.
    let udp_addr = SocketAddrV4::new(lab.backend_addr(1), 53);
    lab.start_server("be1", "be1-udp", SocketAddr::V4(udp_addr), true)
        .unwrap();
    let dgram = lab
        .run_in("lb1", move || -> std::io::Result<String> {
            let socket = std::net::UdpSocket::bind("198.51.100.2:0")?;
            socket.set_read_timeout(Some(Duration::from_secs(5)))?;
            socket.send_to(b"who\n", udp_addr)?;
            let mut buf = [0u8; 64];
            let n = socket.recv(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .unwrap()
        .unwrap();
    assert_eq!(dgram, "be1-udp\n");

    // UDP from every client address.
    let dns = SocketAddrV4::new(topology::lb_front_addr(1), 5353);
    lab.start_server("lb1", "lb1-udp", SocketAddr::V4(dns), true)
        .unwrap();
    let udp = lab.spread(dns, 200, 1, &["--udp"]).unwrap();
    assert_eq!(udp.errors, 0, "{:?}", udp.error_samples);
    assert_eq!(udp.protocol, "udp");
    assert!(udp.per_source.values().all(|names| names == &["lb1-udp"]));
    assert_eq!(udp.per_source.len(), 200);

    // Teardown leaves nothing behind, processes included.
    let server_pid = lb_server.pid;
    let dir = lab.dir().to_path_buf();
    let teardown = Instant::now();
    lab.teardown().expect("teardown is clean");
    let left: Vec<String> = netns::list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!dir.exists(), "lab directory left behind");
    assert!(
        !std::path::Path::new(&format!("/proc/{server_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{server_pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "lab-server still running"
    );
    println!(
        "lab built in {built:.2?}, torn down in {:.2?}",
        teardown.elapsed()
    );
}

/// The pitfall the lab exists to avoid: a frame sent with XDP_TX on a node's
/// veth must reach the bridge. `bench_baseline` bounces every IPv4 frame
/// with XDP_TX; with `lab_pass` on the bridge port, each bounced frame shows
/// up in that port's receive counter.
#[test]
fn lab_xdp_tx_reaches_the_bridge() {
    use aya::programs::{Xdp, XdpMode};

    const DATAGRAMS: u64 = 100;
    let lab = Lab::datapath("tx", 1, 2).expect("lab builds");
    let mut ebpf = aya::Ebpf::load(lb_userspace::objects::LAB).unwrap();
    let program: &mut Xdp = ebpf
        .program_mut("bench_baseline")
        .unwrap()
        .try_into()
        .unwrap();
    program.load().unwrap();
    lab.run_in("lb1", || program.attach("eth0", XdpMode::Driver))
        .unwrap()
        .expect("bench_baseline attaches natively to lb1's eth0");

    // The program drops ARP: give the client lb1's MAC up front.
    let link = text(
        lab.exec_in("lb1", &["ip", "-j", "link", "show", "eth0"])
            .unwrap(),
    );
    let link: serde_json::Value = serde_json::from_str(&link).unwrap();
    let mac = link[0]["address"].as_str().unwrap().to_string();
    let lb_front = topology::lb_front_addr(1).to_string();
    lab.exec_in(
        "cl",
        &[
            "ip", "neigh", "replace", &lb_front, "lladdr", &mac, "dev", "eth0",
        ],
    )
    .unwrap();

    let rx_packets = || -> u64 {
        let out = text(
            lab.exec_in("sw", &["ip", "-s", "-j", "link", "show", "p-lb1"])
                .unwrap(),
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["stats64"]["rx"]["packets"].as_u64().unwrap()
    };
    let before = rx_packets();
    let target = SocketAddrV4::new(topology::lb_front_addr(1), 9);
    lab.run_in("cl", move || -> std::io::Result<()> {
        let socket = std::net::UdpSocket::bind("203.0.113.10:0")?;
        for _ in 0..DATAGRAMS {
            socket.send_to(&[0u8; 32], target)?;
        }
        Ok(())
    })
    .unwrap()
    .unwrap();
    // Counters settle within a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut bounced = 0;
    while Instant::now() < deadline {
        bounced = rx_packets() - before;
        if bounced >= DATAGRAMS {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("{bounced} frames came back to the bridge port (sent {DATAGRAMS})");
    assert!(
        bounced >= DATAGRAMS,
        "only {bounced} of {DATAGRAMS} XDP_TX frames reached the bridge"
    );
    drop(ebpf);
}

/// A two-node lab (for VRRP and failover tests): both LB nodes wired, no
/// VIP added by the lab, backends reach either node on the link.
#[test]
fn lab_two_lb_nodes() {
    let lab = Lab::builder("two")
        .lb_nodes(2)
        .backends(1)
        .client_addrs(4)
        .add_vips(false)
        .build()
        .unwrap();
    for n in 1..=2 {
        let node = format!("lb{n}");
        let addrs = text(
            lab.exec_in(&node, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
                .unwrap(),
        );
        assert!(
            addrs.contains(&format!("{}/24", topology::lb_front_addr(n))),
            "{addrs}"
        );
        assert!(
            !addrs.contains("192.0.2.10"),
            "the lab added a VIP: {addrs}"
        );
        let listen = SocketAddrV4::new(topology::lb_front_addr(n), 2222);
        lab.start_server(&node, &node, SocketAddr::V4(listen), false)
            .unwrap();
        let name = lab
            .run_in("be1", move || fetch_name(listen, Duration::from_secs(5)))
            .unwrap()
            .unwrap();
        assert_eq!(name, node);
        assert_eq!(
            lab.fetch_name(listen, Duration::from_secs(5)).unwrap(),
            node
        );
    }
    let config = lab.lbd_config(vec![]);
    assert_eq!(config.nodes.len(), 2);
    let ranges: Vec<&str> = config
        .nodes
        .values()
        .map(|n| n.snat_ports.as_str())
        .collect();
    assert_ne!(ranges[0], ranges[1]);
}
