//! The VRRP lease: with an expired lease the program drops traffic (and
//! ARP requests) for addresses that move with VRRP, and only those.

use super::support::*;
use anyhow::{Result, ensure};
use lb_common::{flow_state, local_addr_flags, reason};
use lb_tests::lab::bounds;
use lb_tests::lab::bpffs::PrivateBpffs;
use lb_tests::packet::*;
use lb_tests::xdp_harness::*;
use std::net::Ipv4Addr;

/// Settings of the VRRP-mode lab: the lease enforced (`enforced`) with
/// `deadline_ns` (CLOCK_MONOTONIC, the clock the agent's `Lease` writes).
fn set_lease(h: &mut XdpHarness, enforced: bool, deadline_ns: u64) -> Result<()> {
    let s = lb_common::Settings {
        snat_port_min: SNAT_MIN,
        snat_port_max: SNAT_MAX,
        flags: if enforced {
            lb_common::settings_flags::LEASE
        } else {
            0
        },
        lease_deadline_ns: deadline_ns,
        ..Default::default()
    };
    h.settings.set(0, s, 0)?;
    Ok(())
}

/// A deadline `ms` milliseconds from now (negative: in the past), far enough
/// from now that the program's coarse clock (a tick behind) cannot disagree.
fn deadline_in(ms: i64) -> u64 {
    let now = lb_userspace::dataplane::lease::monotonic_ns();
    now.saturating_add_signed(ms * 1_000_000)
}

/// The standard lab in VRRP mode: the VIP (also the UDP service's SNAT
/// address) moves with VRRP; the TCP service's SNAT address does not.
fn vrrp_lab(enforced: bool, deadline_ns: u64) -> Result<XdpHarness> {
    let mut h = lab()?;
    h.add_local_addr(
        VIP,
        local_addr_flags::VIP | local_addr_flags::SNAT | local_addr_flags::VRRP,
    )?;
    set_lease(&mut h, enforced, deadline_ns)?;
    Ok(h)
}

#[test]
fn fresh_lease_forwards_vip_traffic() -> Result<()> {
    let h = vrrp_lab(true, deadline_in(60_000))?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let s = syn(&conn);
    expect_frame(&h, &s, verdict::TX, &conn.toward_backend(&s))?;
    assert_eq!(
        without_times(h.half_open_all()?),
        conn.pair(flow_state::SYN)
    );
    reasons_none(&h)
}

#[test]
fn expired_lease_drops_traffic_to_vrrp_addresses_only() -> Result<()> {
    let mut h = vrrp_lab(true, deadline_in(-1_000))?;
    // A new connection to the VIP: no half-open entry, no RST, nothing.
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    expect_verdict_only(
        &h,
        &syn(&conn).build(),
        verdict::DROP,
        reason::LEASE_EXPIRED,
    )?;
    // An established UDP flow: both the client's datagram to the VIP and the
    // backend's reply to the VIP's SNAT port are dropped, entries untouched.
    let udp = udp_conn(&h);
    insert_pair(&mut h, &udp, flow_state::UDP)?;
    let request = udp.client_packet(0).build();
    expect_verdict_only(&h, &request, verdict::DROP, reason::LEASE_EXPIRED)?;
    let reply = udp.backend_packet(0).build();
    expect_verdict_only(&h, &reply, verdict::DROP, reason::LEASE_EXPIRED)?;
    // Fragments and ICMP to the VIP are no exception.
    let mut frag = to_vip_udp();
    frag.ip_mut().flags_frag = IP_MF;
    expect_verdict_only(&h, &frag.build(), verdict::DROP, reason::LEASE_EXPIRED)?;
    let ping = FrameSpec::icmp(
        CLIENT_MAC,
        LB_MAC,
        CLIENT,
        VIP,
        IcmpSpec::echo_request(7, 1, b"ping"),
    );
    expect_verdict_only(&h, &ping.build(), verdict::DROP, reason::LEASE_EXPIRED)?;
    // The node's own address is the host's, lease or not.
    let ssh = FrameSpec::tcp(
        CLIENT_MAC,
        LB_MAC,
        CLIENT,
        50123,
        LB_CLIENT_SIDE_IP,
        22,
        tcp_flags::SYN,
    );
    expect_pass_untouched(&h, &ssh.build(), reason::PASS_NOT_OURS)?;
    // A SNAT address that does not move with VRRP keeps translating replies.
    let tcp = tcp_conn(&h, CLIENT, CPORT + 1, tcp_backend(2));
    insert_pair(&mut h, &tcp, flow_state::ESTABLISHED)?;
    let resp = tcp.backend_packet(tcp_flags::ACK);
    expect_frame(&h, &resp, verdict::TX, &tcp.toward_client(&resp))?;
    Ok(())
}

#[test]
fn lease_deadline_is_ignored_without_the_lease_flag() -> Result<()> {
    for deadline in [0, deadline_in(-1_000)] {
        let h = vrrp_lab(false, deadline)?;
        let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
        let s = syn(&conn);
        expect_frame(&h, &s, verdict::TX, &conn.toward_backend(&s))?;
        reasons_none(&h)?;
    }
    Ok(())
}

#[test]
fn vrrp_only_address_is_gated_but_otherwise_the_hosts() -> Result<()> {
    // 203.0.113.50 moves with VRRP but fronts no service (an admin address).
    let moving = Ipv4Addr::new(203, 0, 113, 50);
    let mut h = vrrp_lab(true, deadline_in(60_000))?;
    h.add_local_addr(moving, local_addr_flags::VRRP)?;
    let mut frag = FrameSpec::udp(CLIENT_MAC, LB_MAC, CLIENT, 5000, moving, 53, b"q");
    frag.ip_mut().flags_frag = IP_MF;
    expect_pass_untouched(&h, &frag.build(), reason::PASS_NOT_OURS)?;
    let tcp = FrameSpec::tcp(CLIENT_MAC, LB_MAC, CLIENT, 5001, moving, 80, tcp_flags::SYN);
    expect_pass_untouched(&h, &tcp.build(), reason::PASS_NOT_OURS)?;
    set_lease(&mut h, true, 0)?;
    expect_verdict_only(&h, &tcp.build(), verdict::DROP, reason::LEASE_EXPIRED)?;
    Ok(())
}

const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// An Ethernet/IPv4 ARP frame (RFC 826), optionally 802.1Q-tagged.
fn arp_frame(op: u16, sender: (Mac, Ipv4Addr), target: Ipv4Addr, vlan: Option<u16>) -> Vec<u8> {
    let dst: Mac = if op == ARP_REQUEST { [0xff; 6] } else { LB_MAC };
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sender.0);
    if let Some(tci) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sender.0);
    f.extend_from_slice(&sender.1.octets());
    let tha: Mac = if op == ARP_REQUEST { [0; 6] } else { LB_MAC };
    f.extend_from_slice(&tha);
    f.extend_from_slice(&target.octets());
    f.resize(f.len().max(60), 0); // minimum Ethernet frame, as on the wire
    f
}

fn who_has(target: Ipv4Addr) -> Vec<u8> {
    arp_frame(ARP_REQUEST, (CLIENT_MAC, CLIENT), target, None)
}

#[test]
fn arp_requests_for_vrrp_addresses_follow_the_lease() -> Result<()> {
    let mut h = vrrp_lab(true, deadline_in(60_000))?;
    expect_pass_untouched(&h, &who_has(VIP), reason::PASS_NOT_IPV4)?;
    set_lease(&mut h, true, deadline_in(-1_000))?;
    expect_verdict_only(&h, &who_has(VIP), verdict::DROP, reason::ARP_LEASE_EXPIRED)?;
    let tagged = arp_frame(ARP_REQUEST, (CLIENT_MAC, CLIENT), VIP, Some(42));
    expect_verdict_only(&h, &tagged, verdict::DROP, reason::ARP_LEASE_EXPIRED)?;
    // Without the LEASE flag the same expired deadline changes nothing.
    set_lease(&mut h, false, deadline_in(-1_000))?;
    expect_pass_untouched(&h, &who_has(VIP), reason::PASS_NOT_IPV4)?;
    Ok(())
}

#[test]
fn expired_lease_leaves_other_arp_to_the_host() -> Result<()> {
    let h = vrrp_lab(true, 0)?;
    // Requests for the node's own address and for a SNAT address that does
    // not move with VRRP.
    expect_pass_untouched(&h, &who_has(LB_CLIENT_SIDE_IP), reason::PASS_NOT_IPV4)?;
    expect_pass_untouched(&h, &who_has(SNAT), reason::PASS_NOT_IPV4)?;
    // A reply about the VIP (the peer, now master, answering us).
    let peer: Mac = [0x02, 0, 0, 0, 0, 0x99];
    let reply = arp_frame(ARP_REPLY, (peer, VIP), LB_CLIENT_SIDE_IP, None);
    expect_pass_untouched(&h, &reply, reason::PASS_NOT_IPV4)?;
    // Not Ethernet/IPv4 ARP (hardware length 8): not ours to judge.
    let mut odd = who_has(VIP);
    odd[18] = 8;
    expect_pass_untouched(&h, &odd, reason::PASS_NOT_IPV4)?;
    Ok(())
}

/// A truncated ARP frame is passed, whatever it asks: the kernel's ARP code
/// drops frames shorter than their header itself, so the host cannot answer
/// it, and the program never reads past the frame.
#[test]
fn truncated_arp_is_passed_safely() -> Result<()> {
    let h = vrrp_lab(true, 0)?;
    let full = who_has(VIP);
    for len in [14, 15, 22, 14 + 27] {
        let mut f = full.clone();
        f.truncate(len);
        expect_pass_untouched(&h, &f, reason::PASS_NOT_IPV4)?;
    }
    // One byte more and the request is whole: dropped.
    let mut f = full.clone();
    f.truncate(14 + 28);
    expect_verdict_only(&h, &f, verdict::DROP, reason::ARP_LEASE_EXPIRED)?;
    Ok(())
}

/// The agent's `Lease` (its own descriptor on the pinned settings map)
/// drives the program: renew serves the VIP, expire stops it, and neither
/// touches the other settings.
#[test]
fn lease_api_renews_and_expires_what_the_program_enforces() -> Result<()> {
    use aya::maps::IterableMap;
    use lb_userspace::dataplane::{Lease, PinDir};
    use std::time::Duration;

    let h = vrrp_lab(true, 0)?;
    let fs = PrivateBpffs::mount("xdp-lease")?;
    let pins = PinDir::new(fs.path(), "lease-test")?;
    pins.create()?;
    h.settings
        .map()
        .pin(pins.map(lb_common::map_names::SETTINGS))?;
    let lease = Lease::open_in(&pins)?;
    assert_eq!(lease.remaining()?, None, "deadline 0 is no lease");
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let s = syn(&conn);
    expect_verdict_only(&h, &s.build(), verdict::DROP, reason::LEASE_EXPIRED)?;

    // Renewed from another thread: the handle is Send + Sync.
    let lease = std::sync::Arc::new(lease);
    let renewer = std::sync::Arc::clone(&lease);
    std::thread::spawn(move || renewer.renew(Duration::from_secs(30)))
        .join()
        .expect("renew thread")?;
    let left = lease.remaining()?.expect("a fresh lease");
    ensure!(
        bounds::lease_left_after_renew(Duration::from_secs(30)).contains(&left),
        "{left:?} left of a 30 s lease"
    );
    expect_frame(&h, &s, verdict::TX, &conn.toward_backend(&s))?;
    let row = h.settings.get(&0, 0)?;
    assert_eq!(
        (row.snat_port_min, row.snat_port_max, row.flags),
        (SNAT_MIN, SNAT_MAX, lb_common::settings_flags::LEASE),
        "renew writes the deadline only"
    );

    lease.expire()?;
    assert_eq!(lease.remaining()?, None);
    let again = syn(&tcp_conn(&h, CLIENT, CPORT + 7, tcp_backend(1)));
    expect_verdict_only(&h, &again.build(), verdict::DROP, reason::LEASE_EXPIRED)?;
    assert_eq!(h.settings.get(&0, 0)?.snat_port_max, SNAT_MAX);

    let missing = PinDir::new(fs.path(), "no-such-node")?;
    let err = format!("{:#}", Lease::open_in(&missing).err().expect("no pin"));
    ensure!(err.contains("no-such-node"), "{err}");
    Ok(())
}
