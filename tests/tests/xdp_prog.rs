//! Correctness of the XDP program `lb`, case by case, against the behaviour
//! spec (notes/xdp-spec.md), through BPF_PROG_TEST_RUN on crafted frames.
//!
//! Needs root: run with
//! `cargo test -p lb-tests --test xdp_prog -- --test-threads=1`.
//! Every case loads a fresh program in a fresh namespace, writes the maps it
//! needs, runs frames and asserts the verdict, every field of the frame that
//! comes back (against a frame built independently), its checksums, and every
//! map the case may touch.

use anyhow::{Result, ensure};
use lb_common::hash::{flow_hash, snat_port_candidate, source_hash};
use lb_common::{
    Flow, FlowKey, IPPROTO_TCP, IPPROTO_UDP, Persist, PersistKey, ServiceInfo, backend_flags, direction, flow_state,
    local_addr_flags, reason, service_flags,
};
use lb_tests::packet::*;
use lb_tests::xdp_harness::*;
use std::net::Ipv4Addr;

// ------------------------------------------------------------------ fixture

const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0xc1];
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);
const CPORT: u16 = 51000;
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const VPORT: u16 = 443;
const FLOW_VPORT: u16 = 444;
const UDP_VPORT: u16 = 53;
/// SNAT address of the TCP service: the LB's backend-side address.
const SNAT: Ipv4Addr = LB_BACKEND_SIDE_IP;
const BPORT: u16 = 8443;
const UDP_BPORT: u16 = 5353;
const SNAT_MIN: u16 = 40000;
const SNAT_MAX: u16 = 40999;

const TCP_SVC_ID: u32 = 1;
const UDP_SVC_ID: u32 = 2;
const FLOW_SVC_ID: u32 = 3;
/// Backend ids: 1..3 the neighbours on eth0, 4 no neighbour, 5 no route,
/// 6 behind eth1, 7 a row not in use; 11/12 UDP backends.
const BE_NO_NEIGH: u32 = 4;
const BE_NO_ROUTE: u32 = 5;
const BE_ETH1: u32 = 6;
const BE_NOT_IN_USE: u32 = 7;
const UDP_BE: u32 = 11;

const OK: u16 = backend_flags::IN_USE | backend_flags::PERSIST_OK;

fn tcp_service() -> ServiceInfo {
    ServiceInfo {
        id: TCP_SVC_ID,
        flags: service_flags::ACTIVE,
        snat_ip: ip_be(SNAT),
        ring_offset: 0,
        ring_size: RING_SIZE,
        _pad: 0,
        persist_timeout_ns: 0,
    }
}

fn udp_service() -> ServiceInfo {
    ServiceInfo {
        id: UDP_SVC_ID,
        flags: service_flags::ACTIVE,
        snat_ip: ip_be(VIP),
        ring_offset: 2 * RING_SIZE,
        ring_size: RING_SIZE,
        _pad: 0,
        persist_timeout_ns: 0,
    }
}

fn flow_service() -> ServiceInfo {
    ServiceInfo {
        id: FLOW_SVC_ID,
        flags: service_flags::ACTIVE | service_flags::SCHED_FLOW,
        snat_ip: ip_be(SNAT),
        ring_offset: 4 * RING_SIZE,
        ring_size: RING_SIZE,
        _pad: 0,
        persist_timeout_ns: 0,
    }
}

/// A backend as the tests know it.
#[derive(Clone, Copy, Debug)]
struct Backend {
    id: u32,
    ip: Ipv4Addr,
    port: u16,
    mac: Mac,
}

fn tcp_backend(id: u32) -> Backend {
    let (ip, mac) = match id {
        1..=3 => NEIGHBOURS[id as usize - 1],
        BE_ETH1 => ETH1_NEIGHBOUR,
        _ => panic!("backend {id} has no known next hop"),
    };
    Backend { id, ip, port: BPORT, mac }
}

fn udp_backend() -> Backend {
    Backend { id: UDP_BE, ip: NEIGHBOURS[0].0, port: UDP_BPORT, mac: NEIGHBOURS[0].1 }
}

/// The standard lab: TCP service VIP:443 (SNAT 198.51.100.2, ring all
/// backend 1), UDP service VIP:53 (SNAT = VIP, ring all backend 11).
fn lab() -> Result<XdpHarness> {
    let mut h = XdpHarness::new()?;
    h.set_settings(SNAT_MIN, SNAT_MAX)?;
    h.add_local_addr(VIP, local_addr_flags::VIP | local_addr_flags::SNAT)?;
    h.add_local_addr(SNAT, local_addr_flags::SNAT)?;
    for id in 1..=3 {
        h.set_backend(id, NEIGHBOURS[id as usize - 1].0, BPORT, OK)?;
    }
    h.set_backend(BE_NO_NEIGH, NO_NEIGH_IP, BPORT, OK)?;
    h.set_backend(BE_NO_ROUTE, NO_ROUTE_IP, BPORT, OK)?;
    h.set_backend(BE_ETH1, ETH1_NEIGHBOUR.0, BPORT, OK)?;
    h.set_backend(BE_NOT_IN_USE, NEIGHBOURS[2].0, BPORT, 0)?;
    h.set_backend(UDP_BE, NEIGHBOURS[0].0, UDP_BPORT, backend_flags::IN_USE)?;
    h.set_service(VIP, VPORT, IPPROTO_TCP, tcp_service())?;
    h.set_service(VIP, UDP_VPORT, IPPROTO_UDP, udp_service())?;
    h.fill_ring(&tcp_service(), &[1])?;
    h.fill_ring(&udp_service(), &[UDP_BE])?;
    Ok(h)
}

/// One translated connection: what both entries and both rewrites must be.
#[derive(Clone, Copy, Debug)]
struct Conn {
    proto: u8,
    client: Ipv4Addr,
    cport: u16,
    client_mac: Mac,
    vip: Ipv4Addr,
    vport: u16,
    snat: Ipv4Addr,
    snat_port: u16,
    backend: Backend,
    service_id: u32,
    /// Egress toward the backend, and the MAC we send from there.
    egress: u32,
    egress_mac: Mac,
    ingress: u32,
}

impl Conn {
    fn fwd_key(&self) -> FlowKey {
        key(self.client, self.vip, self.cport, self.vport, self.proto)
    }

    fn rev_key(&self) -> FlowKey {
        key(self.backend.ip, self.snat, self.backend.port, self.snat_port, self.proto)
    }

    fn fwd_flow(&self, state: u8) -> Flow {
        Flow {
            nat_src_ip: ip_be(self.snat),
            nat_dst_ip: ip_be(self.backend.ip),
            nat_src_port: port_be(self.snat_port),
            nat_dst_port: port_be(self.backend.port),
            dst_mac: self.backend.mac,
            src_mac: self.egress_mac,
            ifindex: self.egress,
            backend_id: self.backend.id,
            service_id: self.service_id,
            direction: direction::TO_BACKEND,
            state,
            _pad: [0; 2],
            last_seen_ns: 0,
        }
    }

    fn rev_flow(&self, state: u8) -> Flow {
        Flow {
            nat_src_ip: ip_be(self.vip),
            nat_dst_ip: ip_be(self.client),
            nat_src_port: port_be(self.vport),
            nat_dst_port: port_be(self.cport),
            dst_mac: self.client_mac,
            src_mac: LB_MAC,
            ifindex: self.ingress,
            backend_id: self.backend.id,
            service_id: self.service_id,
            direction: direction::TO_CLIENT,
            state,
            _pad: [0; 2],
            last_seen_ns: 0,
        }
    }

    /// Both entries, sorted like the harness sorts them.
    fn pair(&self, state: u8) -> Vec<(FlowKey, Flow)> {
        let mut v = vec![(self.fwd_key(), self.fwd_flow(state)), (self.rev_key(), self.rev_flow(state))];
        v.sort_by_key(|(k, _)| (k.src_ip, k.dst_ip, k.src_port, k.dst_port, k.proto));
        v
    }

    /// A packet from the client, as it arrives.
    fn from_client(&self, flags: u8) -> FrameSpec {
        let mut f = match self.proto {
            IPPROTO_TCP => FrameSpec::tcp(CLIENT_MAC, LB_MAC, self.client, self.cport, self.vip, self.vport, flags),
            _ => FrameSpec::udp(CLIENT_MAC, LB_MAC, self.client, self.cport, self.vip, self.vport, b"client says hi"),
        };
        f.src_mac = self.client_mac;
        f
    }

    /// A packet from the backend, as it arrives.
    fn from_backend(&self, flags: u8) -> FrameSpec {
        let b = self.backend;
        let mut f = match self.proto {
            IPPROTO_TCP => FrameSpec::tcp(b.mac, LB_MAC, b.ip, b.port, self.snat, self.snat_port, flags),
            _ => FrameSpec::udp(b.mac, LB_MAC, b.ip, b.port, self.snat, self.snat_port, b"backend answers"),
        };
        f.ip_mut().ttl = 64;
        f.ip_mut().id = 0x4321;
        f
    }

    /// What a client packet must look like on its way to the backend.
    fn to_backend(&self, input: &FrameSpec) -> FrameSpec {
        rewrite(input, self.egress_mac, self.backend.mac, self.snat, self.snat_port, self.backend.ip, self.backend.port)
    }

    /// What a backend packet must look like on its way to the client.
    fn to_client(&self, input: &FrameSpec) -> FrameSpec {
        rewrite(input, LB_MAC, self.client_mac, self.vip, self.vport, self.client, self.cport)
    }
}

fn key(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey { src_ip: ip_be(src), dst_ip: ip_be(dst), src_port: port_be(sport), dst_port: port_be(dport), proto, _pad: [0; 3] }
}

/// `input` with new MACs, addresses and ports, nothing else changed.
fn rewrite(input: &FrameSpec, src_mac: Mac, dst_mac: Mac, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FrameSpec {
    let mut f = input.clone();
    f.src_mac = src_mac;
    f.dst_mac = dst_mac;
    let Payload::Ipv4(ip, l4) = &mut f.payload else { panic!("not IPv4") };
    ip.src = src;
    ip.dst = dst;
    match l4 {
        L4Spec::Tcp(t) => {
            t.sport = sport;
            t.dport = dport;
        }
        L4Spec::Udp(u) => {
            u.sport = sport;
            u.dport = dport;
        }
        _ => panic!("no ports"),
    }
    f
}

/// The SNAT port of the `attempt`-th candidate for a client's packet.
fn snat_candidate(client: Ipv4Addr, cport: u16, vip: Ipv4Addr, vport: u16, proto: u8, attempt: u32) -> u16 {
    let h = flow_hash(ip_be(client), ip_be(vip), port_be(cport), port_be(vport), proto);
    snat_port_candidate(h, attempt, SNAT_MIN, SNAT_MAX)
}

/// The standard TCP connection of CLIENT:CPORT to VIP:443 on `backend`.
fn tcp_conn(h: &XdpHarness, client: Ipv4Addr, cport: u16, backend: Backend) -> Conn {
    let (egress, egress_mac) = if backend.id == BE_ETH1 { (h.eth1, LB_MAC1) } else { (h.eth0, LB_MAC) };
    Conn {
        proto: IPPROTO_TCP,
        client,
        cport,
        client_mac: CLIENT_MAC,
        vip: VIP,
        vport: VPORT,
        snat: SNAT,
        snat_port: snat_candidate(client, cport, VIP, VPORT, IPPROTO_TCP, 0),
        backend,
        service_id: TCP_SVC_ID,
        egress,
        egress_mac,
        ingress: h.eth0,
    }
}

fn udp_conn(h: &XdpHarness) -> Conn {
    Conn {
        proto: IPPROTO_UDP,
        client: CLIENT,
        cport: 5000,
        client_mac: CLIENT_MAC,
        vip: VIP,
        vport: UDP_VPORT,
        snat: VIP,
        snat_port: snat_candidate(CLIENT, 5000, VIP, UDP_VPORT, IPPROTO_UDP, 0),
        backend: udp_backend(),
        service_id: UDP_SVC_ID,
        egress: h.eth0,
        egress_mac: LB_MAC,
        ingress: h.eth0,
    }
}

fn syn(conn: &Conn) -> FrameSpec {
    let mut f = conn.from_client(tcp_flags::SYN);
    let t = f.tcp_mut();
    t.seq = 0x0a0b_0c0d;
    t.options = TcpSpec::syn_options();
    f
}

// --------------------------------------------------------------- assertions

/// Runs `input` and asserts the verdict, that the frame that comes back
/// equals `expected` field by field, and that its checksums are right.
fn expect_frame(h: &XdpHarness, input: &FrameSpec, verdict: u32, expected: &FrameSpec) -> Result<Vec<u8>> {
    let bytes = input.build();
    let r = h.run(&bytes)?;
    check_frame(&r, verdict, expected)?;
    Ok(r.frame)
}

fn check_frame(r: &RunResult, verdict: u32, expected: &FrameSpec) -> Result<()> {
    ensure!(
        r.verdict == verdict,
        "verdict {} ({}), expected {} ({})",
        verdict::name(r.verdict),
        r.verdict,
        verdict::name(verdict),
        verdict
    );
    let want = expected.build();
    let got = parse(&r.frame)?;
    let exp = parse(&want)?;
    ensure!(
        got.without_checksums() == exp.without_checksums(),
        "frame differs from the expected one\n got:      {:?}\n expected: {:?}",
        got,
        exp
    );
    verify_checksums(&r.frame)?;
    Ok(())
}

/// Runs `frame` and asserts the verdict, one count of `reason`, and that no
/// other map changed.
fn expect_verdict_only(h: &XdpHarness, frame: &[u8], verdict: u32, reason: u32) -> Result<RunResult> {
    let before = h.snapshot()?;
    let r = h.run(frame)?;
    ensure!(
        r.verdict == verdict,
        "verdict {}, expected {} (reasons counted: {})",
        verdict::name(r.verdict),
        verdict::name(verdict),
        describe_reasons(&h.reasons()?)
    );
    let after = h.snapshot()?;
    let mut want = before;
    want.reasons[reason as usize] += 1;
    ensure!(
        after.reasons == want.reasons,
        "reasons counted: {}; expected {}",
        describe_reasons(&after.reasons),
        describe_reasons(&want.reasons)
    );
    ensure!(after == want, "maps changed:\n after:    {after:?}\n expected: {want:?}");
    Ok(r)
}

/// A pass must hand the frame to the host byte for byte.
fn expect_pass_untouched(h: &XdpHarness, frame: &[u8], reason: u32) -> Result<()> {
    let r = expect_verdict_only(h, frame, verdict::PASS, reason)?;
    ensure!(r.frame == frame, "a passed frame was modified:\n in:  {frame:02x?}\n out: {:02x?}", r.frame);
    Ok(())
}

fn without_times(mut v: Vec<(FlowKey, Flow)>) -> Vec<(FlowKey, Flow)> {
    for (_, f) in &mut v {
        f.last_seen_ns = 0;
    }
    v
}

/// Every entry's last_seen must be "now" (within 2 s of the coarse clock).
fn assert_fresh(v: &[(FlowKey, Flow)]) -> Result<()> {
    let now = now_coarse_ns();
    for (k, f) in v {
        ensure!(
            f.last_seen_ns.abs_diff(now) < 2_000_000_000,
            "entry {k:?} has last_seen_ns {} but now is {now}",
            f.last_seen_ns
        );
    }
    Ok(())
}

fn reasons_none(h: &XdpHarness) -> Result<()> {
    let r = h.reasons()?;
    ensure!(r.iter().all(|n| *n == 0), "forwarded packets must count no reason; counted {}", describe_reasons(&r));
    Ok(())
}

fn stats(to_backend: (u64, u64), to_client: (u64, u64), new_flows: u64) -> lb_common::TrafficStats {
    lb_common::TrafficStats {
        packets_to_backend: to_backend.0,
        bytes_to_backend: to_backend.1,
        packets_to_client: to_client.0,
        bytes_to_client: to_client.1,
        new_flows,
        rst_no_backend: 0,
    }
}

fn expect_stats(h: &XdpHarness, svc: u32, be: u32, want: lb_common::TrafficStats) -> Result<()> {
    let s = h.service_stats(svc)?;
    ensure!(s == want, "service {svc} stats {s:?}, expected {want:?}");
    let b = h.backend_stats(be)?;
    ensure!(b == want, "backend {be} stats {b:?}, expected {want:?}");
    Ok(())
}

fn insert_pair(h: &mut XdpHarness, conn: &Conn, state: u8) -> Result<()> {
    let now = now_coarse_ns();
    for (k, mut f) in conn.pair(state) {
        f.last_seen_ns = now;
        h.flows.insert(k, f, 0)?;
    }
    Ok(())
}

// ------------------------------------------------------------------- cases

#[test]
fn new_syn_source_scheduler_opens_half_open_pair() -> Result<()> {
    let mut h = lab()?;
    h.fill_ring(&tcp_service(), &[1, 2, 3])?;
    let mut picked = std::collections::BTreeSet::new();
    let mut stats_by_be = [(0u64, 0u64, 0u64); 4];
    let mut all_entries = Vec::new();
    for last in 100..=107u8 {
        let client = Ipv4Addr::new(192, 0, 2, last);
        let slot = source_hash(ip_be(client)) % RING_SIZE;
        let id = h.ring_slot(&tcp_service(), slot)?;
        picked.insert(id);
        let conn = tcp_conn(&h, client, CPORT, tcp_backend(id));
        let input = syn(&conn);
        let len = input.build().len() as u64;
        expect_frame(&h, &input, verdict::TX, &conn.to_backend(&input))?;
        all_entries.extend(conn.pair(flow_state::SYN));
        let s = &mut stats_by_be[id as usize];
        s.0 += 1;
        s.1 += len;
        s.2 += 1;
    }
    ensure!(picked.len() > 1, "the chosen clients all hash to one backend: the test would not discriminate");
    all_entries.sort_by_key(|(k, _)| (k.src_ip, k.dst_ip, k.src_port, k.dst_port, k.proto));
    let half = h.half_open_all()?;
    assert_fresh(&half)?;
    assert_eq!(without_times(half), all_entries, "half_open after the SYNs");
    assert!(h.flows_all()?.is_empty(), "a SYN must not create established flows");
    assert!(h.persist_all()?.is_empty(), "no persistence on this service");
    for id in 1..=3u32 {
        let (p, b, n) = stats_by_be[id as usize];
        let got = h.backend_stats(id)?;
        assert_eq!(got, stats((p, b), (0, 0), n), "backend {id} stats");
    }
    let total: (u64, u64, u64) = stats_by_be.iter().fold((0, 0, 0), |a, s| (a.0 + s.0, a.1 + s.1, a.2 + s.2));
    assert_eq!(h.service_stats(TCP_SVC_ID)?, stats((total.0, total.1), (0, 0), total.2));
    reasons_none(&h)
}

#[test]
fn new_syn_flow_scheduler_hashes_the_five_tuple() -> Result<()> {
    let mut h = lab()?;
    let svc = flow_service();
    h.set_service(VIP, FLOW_VPORT, IPPROTO_TCP, svc)?;
    h.fill_ring(&svc, &[1, 2, 3])?;
    let by_source = h.ring_slot(&svc, source_hash(ip_be(CLIENT)) % RING_SIZE)?;
    // A client port whose 5-tuple hash picks another backend than the
    // source hash would: only the flow scheduler lands there.
    let (cport, id) = (50000u16..50200)
        .map(|p| {
            let hsh = flow_hash(ip_be(CLIENT), ip_be(VIP), port_be(p), port_be(FLOW_VPORT), IPPROTO_TCP);
            (p, h.ring_slot(&svc, hsh % RING_SIZE).unwrap())
        })
        .find(|(_, id)| *id != by_source)
        .expect("some port hashes elsewhere");
    let mut conn = tcp_conn(&h, CLIENT, cport, tcp_backend(id));
    conn.vport = FLOW_VPORT;
    conn.service_id = FLOW_SVC_ID;
    conn.snat_port = snat_candidate(CLIENT, cport, VIP, FLOW_VPORT, IPPROTO_TCP, 0);
    let input = syn(&conn);
    expect_frame(&h, &input, verdict::TX, &conn.to_backend(&input))?;
    assert_eq!(without_times(h.half_open_all()?), conn.pair(flow_state::SYN));
    let len = input.build().len() as u64;
    expect_stats(&h, FLOW_SVC_ID, id, stats((1, len), (0, 0), 1))?;
    reasons_none(&h)
}
