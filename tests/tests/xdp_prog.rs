//! Correctness of the XDP program `lb`, case by case, against the behaviour
//! spec (docs/architecture.md, "The path of a packet"), through BPF_PROG_TEST_RUN on crafted frames.
//!
//! Needs root: run with
//! `cargo test -p lb-tests --test xdp_prog -- --test-threads=1` (each case has
//! its own namespace, so parallel runs work too).
//! Every case loads a fresh program in a fresh namespace, writes the maps it
//! needs, runs frames and asserts the verdict, every field of the frame that
//! comes back (against a frame built independently), its checksums, and every
//! map the case may touch.

use anyhow::{Context, Result, ensure};
use lb_common::hash::{flow_hash, snat_port_candidate, source_hash};
use lb_common::{
    Flow, FlowKey, IPPROTO_TCP, IPPROTO_UDP, Persist, PersistKey, ServiceInfo, backend_flags,
    direction, fin_flags, flow_state, local_addr_flags, reason, service_flags,
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
    Backend {
        id,
        ip,
        port: BPORT,
        mac,
    }
}

fn udp_backend() -> Backend {
    Backend {
        id: UDP_BE,
        ip: NEIGHBOURS[0].0,
        port: UDP_BPORT,
        mac: NEIGHBOURS[0].1,
    }
}

/// The standard lab: TCP service VIP:443 (SNAT 198.51.100.2, ring all
/// backend 1), UDP service VIP:53 (SNAT = VIP, ring all backend 11).
fn lab() -> Result<XdpHarness> {
    lab_with(TableSizes::default())
}

fn lab_with(sizes: TableSizes) -> Result<XdpHarness> {
    let mut h = XdpHarness::with_sizes(sizes)?;
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
        key(
            self.backend.ip,
            self.snat,
            self.backend.port,
            self.snat_port,
            self.proto,
        )
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
            fin: 0,
            _pad: 0,
            expect_ack: 0,
            seq_offset: 0,
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
            fin: 0,
            _pad: 0,
            expect_ack: 0,
            seq_offset: 0,
            last_seen_ns: 0,
        }
    }

    /// Both entries, sorted like the harness sorts them.
    fn pair(&self, state: u8) -> Vec<(FlowKey, Flow)> {
        let mut v = vec![
            (self.fwd_key(), self.fwd_flow(state)),
            (self.rev_key(), self.rev_flow(state)),
        ];
        v.sort_by_key(|(k, _)| (k.src_ip, k.dst_ip, k.src_port, k.dst_port, k.proto));
        v
    }

    /// A packet from the client, as it arrives.
    fn client_packet(&self, flags: u8) -> FrameSpec {
        let mut f = match self.proto {
            IPPROTO_TCP => FrameSpec::tcp(
                CLIENT_MAC,
                LB_MAC,
                self.client,
                self.cport,
                self.vip,
                self.vport,
                flags,
            ),
            _ => FrameSpec::udp(
                CLIENT_MAC,
                LB_MAC,
                self.client,
                self.cport,
                self.vip,
                self.vport,
                b"client says hi",
            ),
        };
        f.src_mac = self.client_mac;
        f
    }

    /// A packet from the backend, as it arrives.
    fn backend_packet(&self, flags: u8) -> FrameSpec {
        let b = self.backend;
        let mut f = match self.proto {
            IPPROTO_TCP => FrameSpec::tcp(
                b.mac,
                LB_MAC,
                b.ip,
                b.port,
                self.snat,
                self.snat_port,
                flags,
            ),
            _ => FrameSpec::udp(
                b.mac,
                LB_MAC,
                b.ip,
                b.port,
                self.snat,
                self.snat_port,
                b"backend answers",
            ),
        };
        f.ip_mut().ttl = 64;
        f.ip_mut().id = 0x4321;
        f
    }

    /// What a client packet must look like on its way to the backend.
    fn toward_backend(&self, input: &FrameSpec) -> FrameSpec {
        rewrite(
            input,
            self.egress_mac,
            self.backend.mac,
            self.snat,
            self.snat_port,
            self.backend.ip,
            self.backend.port,
        )
    }

    /// What a backend packet must look like on its way to the client.
    fn toward_client(&self, input: &FrameSpec) -> FrameSpec {
        rewrite(
            input,
            LB_MAC,
            self.client_mac,
            self.vip,
            self.vport,
            self.client,
            self.cport,
        )
    }
}

fn key(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src_ip: ip_be(src),
        dst_ip: ip_be(dst),
        src_port: port_be(sport),
        dst_port: port_be(dport),
        proto,
        _pad: [0; 3],
    }
}

/// `input` with new MACs, addresses and ports, nothing else changed.
fn rewrite(
    input: &FrameSpec,
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
) -> FrameSpec {
    let mut f = input.clone();
    f.src_mac = src_mac;
    f.dst_mac = dst_mac;
    let Payload::Ipv4(ip, l4) = &mut f.payload else {
        panic!("not IPv4")
    };
    ip.src = src;
    ip.dst = dst;
    // Relayed with router semantics: one hop less.
    ip.ttl -= 1;
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
fn snat_candidate(
    client: Ipv4Addr,
    cport: u16,
    vip: Ipv4Addr,
    vport: u16,
    proto: u8,
    attempt: u32,
) -> u16 {
    let h = flow_hash(
        ip_be(client),
        ip_be(vip),
        port_be(cport),
        port_be(vport),
        proto,
    );
    snat_port_candidate(h, attempt, SNAT_MIN, SNAT_MAX)
}

/// The standard TCP connection of CLIENT:CPORT to VIP:443 on `backend`.
fn tcp_conn(h: &XdpHarness, client: Ipv4Addr, cport: u16, backend: Backend) -> Conn {
    let (egress, egress_mac) = if backend.id == BE_ETH1 {
        (h.eth1, LB_MAC1)
    } else {
        (h.eth0, LB_MAC)
    };
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

/// The client's ISN in [`syn`] and the backend's in [`syn_ack`].
const CLIENT_ISN: u32 = 0x0a0b_0c0d;
const BACKEND_ISN: u32 = 0x7000_0000;

fn syn(conn: &Conn) -> FrameSpec {
    let mut f = conn.client_packet(tcp_flags::SYN);
    let t = f.tcp_mut();
    t.seq = CLIENT_ISN;
    t.options = TcpSpec::syn_options();
    f
}

#[test]
fn a_full_half_open_table_refuses_new_syns_and_evicts_no_handshake() -> Result<()> {
    // Two handshakes, two entries each, fill a table of four. Without SYN
    // cookies (with them the SYN gets one: xdp_cookie.rs).
    let mut h = lab_with(TableSizes {
        half_open: 4,
        ..TableSizes::default()
    })?;
    h.settings.set(
        0,
        lb_common::Settings {
            snat_port_min: SNAT_MIN,
            snat_port_max: SNAT_MAX,
            flags: lb_common::settings_flags::SYN_COOKIES_NEVER,
            ..Default::default()
        },
        0,
    )?;
    for cport in [5001, 5002] {
        let conn = tcp_conn(&h, CLIENT, cport, tcp_backend(1));
        let r = h.run(&syn(&conn).build())?;
        ensure!(
            r.verdict == verdict::TX,
            "SYN {cport} was not forwarded: {}",
            describe_reasons(&h.reasons()?)
        );
    }
    let before = h.half_open_all()?;
    ensure!(before.len() == 4, "{} half-open entries", before.len());
    let conn = tcp_conn(&h, CLIENT, 5003, tcp_backend(1));
    expect_verdict_only(
        &h,
        &syn(&conn).build(),
        verdict::DROP,
        reason::DROP_HALF_OPEN_FULL,
    )?;
    ensure!(
        h.half_open_all()? == before,
        "a refused SYN changed the handshakes in progress"
    );
    ensure!(h.flows_all()?.is_empty(), "a refused SYN opened a flow");
    Ok(())
}

/// The backend's answer to [`syn`], with ISN `isn`.
fn syn_ack(conn: &Conn, isn: u32) -> FrameSpec {
    let mut f = conn.backend_packet(tcp_flags::SYN | tcp_flags::ACK);
    let t = f.tcp_mut();
    t.seq = isn;
    t.ack = CLIENT_ISN.wrapping_add(1);
    t.options = TcpSpec::syn_options();
    f
}

/// The client's third segment of the handshake, acknowledging `ack`.
fn handshake_ack(conn: &Conn, ack: u32) -> FrameSpec {
    let mut f = conn.client_packet(tcp_flags::ACK);
    f.tcp_mut().seq = CLIENT_ISN.wrapping_add(1);
    f.tcp_mut().ack = ack;
    f
}

/// The half-open pair once the SYN-ACK with `isn` passed: the client's entry
/// expects the ACK of it.
fn syn_acked_pair(conn: &Conn, isn: u32) -> Vec<(FlowKey, Flow)> {
    let mut v = conn.pair(flow_state::SYN);
    for (k, f) in &mut v {
        if *k == conn.fwd_key() {
            f.state = flow_state::SYN_ACKED;
            f.expect_ack = isn.wrapping_add(1);
        }
    }
    v
}

/// SYN, SYN-ACK and ACK of `conn`, each checked on its way.
fn open_connection(h: &XdpHarness, conn: &Conn) -> Result<()> {
    let s = syn(conn);
    expect_frame(h, &s, verdict::TX, &conn.toward_backend(&s))?;
    let sa = syn_ack(conn, BACKEND_ISN);
    expect_frame(h, &sa, verdict::TX, &conn.toward_client(&sa))?;
    let a = handshake_ack(conn, BACKEND_ISN.wrapping_add(1));
    expect_frame(h, &a, verdict::TX, &conn.toward_backend(&a))?;
    Ok(())
}

// --------------------------------------------------------------- assertions

/// Runs `input` and asserts the verdict, that the frame that comes back
/// equals `expected` field by field, and that its checksums are right.
fn expect_frame(
    h: &XdpHarness,
    input: &FrameSpec,
    verdict: u32,
    expected: &FrameSpec,
) -> Result<Vec<u8>> {
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
fn expect_verdict_only(
    h: &XdpHarness,
    frame: &[u8],
    verdict: u32,
    reason: u32,
) -> Result<RunResult> {
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
    ensure!(
        after == want,
        "maps changed:\n after:    {after:?}\n expected: {want:?}"
    );
    Ok(r)
}

/// A pass must hand the frame to the host byte for byte.
fn expect_pass_untouched(h: &XdpHarness, frame: &[u8], reason: u32) -> Result<()> {
    let r = expect_verdict_only(h, frame, verdict::PASS, reason)?;
    ensure!(
        r.frame == frame,
        "a passed frame was modified:\n in:  {frame:02x?}\n out: {:02x?}",
        r.frame
    );
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
    ensure!(
        r.iter().all(|n| *n == 0),
        "forwarded packets must count no reason; counted {}",
        describe_reasons(&r)
    );
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
        expect_frame(&h, &input, verdict::TX, &conn.toward_backend(&input))?;
        all_entries.extend(conn.pair(flow_state::SYN));
        let s = &mut stats_by_be[id as usize];
        s.0 += 1;
        s.1 += len;
        s.2 += 1;
    }
    ensure!(
        picked.len() > 1,
        "the chosen clients all hash to one backend: the test would not discriminate"
    );
    all_entries.sort_by_key(|(k, _)| (k.src_ip, k.dst_ip, k.src_port, k.dst_port, k.proto));
    let half = h.half_open_all()?;
    assert_fresh(&half)?;
    assert_eq!(without_times(half), all_entries, "half_open after the SYNs");
    assert!(
        h.flows_all()?.is_empty(),
        "a SYN must not create established flows"
    );
    assert!(
        h.persist_all()?.is_empty(),
        "no persistence on this service"
    );
    for id in 1..=3u32 {
        let (p, b, n) = stats_by_be[id as usize];
        let got = h.backend_stats(id)?;
        assert_eq!(got, stats((p, b), (0, 0), n), "backend {id} stats");
    }
    let total: (u64, u64, u64) = stats_by_be
        .iter()
        .fold((0, 0, 0), |a, s| (a.0 + s.0, a.1 + s.1, a.2 + s.2));
    assert_eq!(
        h.service_stats(TCP_SVC_ID)?,
        stats((total.0, total.1), (0, 0), total.2)
    );
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
            let hsh = flow_hash(
                ip_be(CLIENT),
                ip_be(VIP),
                port_be(p),
                port_be(FLOW_VPORT),
                IPPROTO_TCP,
            );
            (p, h.ring_slot(&svc, hsh % RING_SIZE).unwrap())
        })
        .find(|(_, id)| *id != by_source)
        .expect("some port hashes elsewhere");
    let mut conn = tcp_conn(&h, CLIENT, cport, tcp_backend(id));
    conn.vport = FLOW_VPORT;
    conn.service_id = FLOW_SVC_ID;
    conn.snat_port = snat_candidate(CLIENT, cport, VIP, FLOW_VPORT, IPPROTO_TCP, 0);
    let input = syn(&conn);
    expect_frame(&h, &input, verdict::TX, &conn.toward_backend(&input))?;
    assert_eq!(
        without_times(h.half_open_all()?),
        conn.pair(flow_state::SYN)
    );
    let len = input.build().len() as u64;
    expect_stats(&h, FLOW_SVC_ID, id, stats((1, len), (0, 0), 1))?;
    reasons_none(&h)
}

#[test]
fn retransmitted_syn_reuses_backend_and_snat_port() -> Result<()> {
    let mut h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let input = syn(&conn);
    let first = expect_frame(&h, &input, verdict::TX, &conn.toward_backend(&input))?;
    let half_before = without_times(h.half_open_all()?);
    // A re-pick would now choose backend 2: the retransmission must not.
    h.fill_ring(&tcp_service(), &[2])?;
    let second = expect_frame(&h, &input, verdict::TX, &conn.toward_backend(&input))?;
    assert_eq!(
        first, second,
        "the retransmitted SYN must be rewritten exactly like the first"
    );
    assert_eq!(
        without_times(h.half_open_all()?),
        half_before,
        "half_open must not change"
    );
    assert!(h.flows_all()?.is_empty());
    let len = input.build().len() as u64;
    expect_stats(&h, TCP_SVC_ID, 1, stats((2, 2 * len), (0, 0), 1))?;
    assert_eq!(h.backend_stats(2)?, stats((0, 0), (0, 0), 0));
    reasons_none(&h)
}

#[test]
fn syn_ack_from_backend_is_translated_back_via_half_open() -> Result<()> {
    let h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let s = syn(&conn);
    expect_frame(&h, &s, verdict::TX, &conn.toward_backend(&s))?;
    let synack = syn_ack(&conn, BACKEND_ISN);
    expect_frame(&h, &synack, verdict::TX, &conn.toward_client(&synack))?;
    assert_eq!(
        without_times(h.half_open_all()?),
        syn_acked_pair(&conn, BACKEND_ISN),
        "half_open stays until the ACK, which must acknowledge the backend's ISN"
    );
    assert!(h.flows_all()?.is_empty());
    let (l1, l2) = (s.build().len() as u64, synack.build().len() as u64);
    expect_stats(&h, TCP_SVC_ID, 1, stats((1, l1), (1, l2), 1))?;
    reasons_none(&h)
}

#[test]
fn handshake_ack_promotes_the_pair_into_flows() -> Result<()> {
    let h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let s = syn(&conn);
    expect_frame(&h, &s, verdict::TX, &conn.toward_backend(&s))?;
    let sa = syn_ack(&conn, BACKEND_ISN);
    expect_frame(&h, &sa, verdict::TX, &conn.toward_client(&sa))?;
    let ack = handshake_ack(&conn, BACKEND_ISN + 1);
    expect_frame(&h, &ack, verdict::TX, &conn.toward_backend(&ack))?;
    assert!(
        h.half_open_all()?.is_empty(),
        "the promoted pair must leave half_open"
    );
    let flows = h.flows_all()?;
    assert_fresh(&flows)?;
    assert_eq!(without_times(flows), conn.pair(flow_state::ESTABLISHED));
    // Both directions now hit flows.
    let mut data = conn.backend_packet(tcp_flags::ACK | tcp_flags::PSH);
    data.tcp_mut().payload = b"220 hello from the backend\r\n".to_vec();
    expect_frame(&h, &data, verdict::TX, &conn.toward_client(&data))?;
    let (l1, l2, l3, l4) = (
        s.build().len() as u64,
        ack.build().len() as u64,
        data.build().len() as u64,
        sa.build().len() as u64,
    );
    expect_stats(&h, TCP_SVC_ID, 1, stats((2, l1 + l2), (2, l3 + l4), 1))?;
    reasons_none(&h)
}

#[test]
fn rst_on_a_half_open_flow_is_forwarded_without_promotion() -> Result<()> {
    let h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let s = syn(&conn);
    expect_frame(&h, &s, verdict::TX, &conn.toward_backend(&s))?;
    let rst = conn.client_packet(tcp_flags::RST | tcp_flags::ACK);
    expect_frame(&h, &rst, verdict::TX, &conn.toward_backend(&rst))?;
    assert!(h.flows_all()?.is_empty(), "a RST must not promote the pair");
    assert_eq!(h.half_open_all()?.len(), 2);
    reasons_none(&h)
}

#[test]
fn established_packets_hit_flows_in_both_directions() -> Result<()> {
    let mut h = lab()?;
    let mut conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(2));
    // MACs the fib would not give: the rewrite must take them from the flow.
    conn.backend.mac = [0x02, 0, 0, 0, 0x0a, 0xaa];
    conn.client_mac = [0x02, 0, 0, 0, 0x0b, 0xbb];
    insert_pair(&mut h, &conn, flow_state::ESTABLISHED)?;
    let before = without_times(h.flows_all()?);
    let mut req = conn.client_packet(tcp_flags::ACK | tcp_flags::PSH);
    req.tcp_mut().payload = vec![0x5a; 300];
    req.tcp_mut().options = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    req.ip_mut().ttl = 7;
    req.ip_mut().tos = 0xb8;
    req.ip_mut().flags_frag = 0;
    expect_frame(&h, &req, verdict::TX, &conn.toward_backend(&req))?;
    let mut resp = conn.backend_packet(tcp_flags::ACK);
    resp.tcp_mut().payload = vec![0xa5; 999];
    expect_frame(&h, &resp, verdict::TX, &conn.toward_client(&resp))?;
    assert_eq!(
        without_times(h.flows_all()?),
        before,
        "an established hit changes no entry"
    );
    assert!(h.half_open_all()?.is_empty());
    let (l1, l2) = (req.build().len() as u64, resp.build().len() as u64);
    expect_stats(&h, TCP_SVC_ID, 2, stats((1, l1), (1, l2), 0))?;
    reasons_none(&h)
}

#[test]
fn flow_to_another_device_is_redirected() -> Result<()> {
    let mut h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(BE_ETH1));
    h.fill_ring(&tcp_service(), &[BE_ETH1])?;
    let s = syn(&conn);
    expect_frame(&h, &s, verdict::REDIRECT, &conn.toward_backend(&s))?;
    assert_eq!(
        without_times(h.half_open_all()?),
        conn.pair(flow_state::SYN)
    );
    assert_eq!(conn.fwd_flow(flow_state::SYN).ifindex, h.eth1);
    reasons_none(&h)
}

#[test]
fn stale_flow_is_refreshed_and_its_missing_peer_recreated() -> Result<()> {
    let mut h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let mut fwd = conn.fwd_flow(flow_state::ESTABLISHED);
    fwd.last_seen_ns = now_coarse_ns().saturating_sub(5_000_000_000);
    h.flows.insert(conn.fwd_key(), fwd, 0)?;
    let req = conn.client_packet(tcp_flags::ACK);
    expect_frame(&h, &req, verdict::TX, &conn.toward_backend(&req))?;
    let flows = h.flows_all()?;
    assert_fresh(&flows)?;
    assert_eq!(
        without_times(flows),
        conn.pair(flow_state::ESTABLISHED),
        "the reverse entry must be re-created"
    );
    Ok(())
}

#[test]
fn fin_marks_the_entry_closing() -> Result<()> {
    let mut h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    insert_pair(&mut h, &conn, flow_state::ESTABLISHED)?;
    let mut fin = conn.client_packet(tcp_flags::FIN | tcp_flags::ACK);
    fin.tcp_mut().seq = 0x1000;
    fin.tcp_mut().payload = b"bye".to_vec();
    expect_frame(&h, &fin, verdict::TX, &conn.toward_backend(&fin))?;
    let got = h.flows.get(&conn.fwd_key(), 0)?;
    let mut want = conn.fwd_flow(flow_state::CLOSING);
    want.fin = fin_flags::SENT;
    want.last_seen_ns = got.last_seen_ns;
    assert_eq!(
        got, want,
        "FIN marks its own direction's entry, nothing else"
    );
    let got = h.flows.get(&conn.rev_key(), 0)?;
    let mut want = conn.rev_flow(flow_state::CLOSING);
    want.fin = fin_flags::PEER_SENT;
    want.expect_ack = 0x1000 + 3 + 1;
    want.last_seen_ns = got.last_seen_ns;
    assert_eq!(
        got, want,
        "the other direction learns the sequence number after the FIN"
    );
    reasons_none(&h)
}

#[test]
fn rst_on_an_established_flow_closes_the_pair() -> Result<()> {
    let mut h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    insert_pair(&mut h, &conn, flow_state::ESTABLISHED)?;
    let rst = conn.backend_packet(tcp_flags::RST | tcp_flags::ACK);
    expect_frame(&h, &rst, verdict::TX, &conn.toward_client(&rst))?;
    let flows = h.flows_all()?;
    assert_fresh(&flows)?;
    assert_eq!(
        without_times(flows),
        conn.pair(flow_state::CLOSED),
        "RST closes both directions, nothing else changes"
    );
    reasons_none(&h)
}

#[test]
fn snat_ports_all_taken_is_dropped_without_syn_cookies() -> Result<()> {
    // A two-port range with both ports held by established flows to the
    // same backend: every candidate (hashed or random) is taken. (With SYN
    // cookies allowed the SYN gets one instead: xdp_cookie.rs.)
    let mut h = lab()?;
    h.settings.set(
        0,
        lb_common::Settings {
            snat_port_min: SNAT_MIN,
            snat_port_max: SNAT_MIN + 1,
            flags: lb_common::settings_flags::SYN_COOKIES_NEVER,
            ..Default::default()
        },
        0,
    )?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let mut other = tcp_conn(&h, ROUTER, 1234, tcp_backend(1)).rev_flow(flow_state::ESTABLISHED);
    other.last_seen_ns = now_coarse_ns();
    for p in [SNAT_MIN, SNAT_MIN + 1] {
        h.flows
            .insert(key(conn.backend.ip, SNAT, BPORT, p, IPPROTO_TCP), other, 0)?;
    }
    expect_verdict_only(
        &h,
        &syn(&conn).build(),
        verdict::DROP,
        reason::DROP_SNAT_EXHAUSTED,
    )?;
    Ok(())
}

#[test]
fn snat_port_search_finds_the_last_free_port() -> Result<()> {
    // One port of two is free; the 32 candidates miss it with probability
    // 2^-32. The first 8 hashed candidates alone would miss it 1 time in 256
    // per tuple, and always for that tuple.
    for cport in [CPORT, CPORT + 1, CPORT + 2, CPORT + 3] {
        let mut h = lab()?;
        h.set_settings(SNAT_MIN, SNAT_MIN + 1)?;
        let conn = tcp_conn(&h, CLIENT, cport, tcp_backend(1));
        let mut other =
            tcp_conn(&h, ROUTER, 1234, tcp_backend(1)).rev_flow(flow_state::ESTABLISHED);
        other.last_seen_ns = now_coarse_ns();
        h.flows.insert(
            key(conn.backend.ip, SNAT, BPORT, SNAT_MIN, IPPROTO_TCP),
            other,
            0,
        )?;
        let out = h.run(&syn(&conn).build())?;
        assert_eq!(
            out.verdict,
            verdict::TX,
            "client port {cport}: {}",
            describe_reasons(&h.reasons()?)
        );
        let sport = parse(&out.frame)?.tcp().sport;
        assert_eq!(sport, SNAT_MIN + 1, "the only free port");
    }
    Ok(())
}

#[test]
fn udp_first_datagram_opens_flows_and_reply_returns() -> Result<()> {
    let h = lab()?;
    let conn = udp_conn(&h);
    let q = conn.client_packet(0);
    expect_frame(&h, &q, verdict::TX, &conn.toward_backend(&q))?;
    let flows = h.flows_all()?;
    assert_fresh(&flows)?;
    assert_eq!(without_times(flows), conn.pair(flow_state::UDP));
    assert!(
        h.half_open_all()?.is_empty(),
        "UDP never goes through half_open"
    );
    let a = conn.backend_packet(0);
    expect_frame(&h, &a, verdict::TX, &conn.toward_client(&a))?;
    let (l1, l2) = (q.build().len() as u64, a.build().len() as u64);
    expect_stats(&h, UDP_SVC_ID, UDP_BE, stats((1, l1), (1, l2), 1))?;
    reasons_none(&h)
}

#[test]
fn udp_zero_checksum_stays_zero() -> Result<()> {
    let h = lab()?;
    let conn = udp_conn(&h);
    let mut q = conn.client_packet(0);
    q.udp_mut().no_checksum = true;
    let out = expect_frame(&h, &q, verdict::TX, &conn.toward_backend(&q))?;
    assert_eq!(
        parse(&out)?.udp().checksum,
        0,
        "checksum 0 (none) must stay 0 toward the backend"
    );
    let mut a = conn.backend_packet(0);
    a.udp_mut().no_checksum = true;
    let r = h.run(&a.build())?;
    check_frame(&r, verdict::TX, &conn.toward_client(&a))?;
    assert_eq!(
        parse(&r.frame)?.udp().checksum,
        0,
        "checksum 0 (none) must stay 0 toward the client"
    );
    Ok(())
}

/// An ICMP error from `src` (MAC `src_mac`) to `dst`, quoting `quoted`
/// (first `quote_len` bytes).
fn icmp_error(
    src_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    quoted: &FrameSpec,
    quote_len: usize,
) -> (FrameSpec, Vec<u8>) {
    let Payload::Ipv4(ip, l4) = &quoted.payload else {
        panic!()
    };
    let q = quote(ip, l4, quote_len);
    let mut f = FrameSpec::icmp(
        src_mac,
        LB_MAC,
        src,
        dst,
        IcmpSpec::frag_needed(1400, q.clone()),
    );
    f.ip_mut().ttl = 250;
    (f, q)
}

fn with_icmp_body(f: &FrameSpec, body: Vec<u8>) -> FrameSpec {
    let mut f = f.clone();
    if let Payload::Ipv4(_, L4Spec::Icmp(i)) = &mut f.payload {
        i.body = body;
    }
    f
}

#[test]
fn icmp_frag_needed_from_backend_side_is_translated_to_the_client() -> Result<()> {
    let mut h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    insert_pair(&mut h, &conn, flow_state::ESTABLISHED)?;
    // What the LB sent toward the backend, quoted back by the backend.
    let mut sent = conn.toward_backend(&conn.client_packet(tcp_flags::ACK | tcp_flags::PSH));
    sent.tcp_mut().payload = vec![1; 1500];
    let (input, q) = icmp_error(conn.backend.mac, conn.backend.ip, SNAT, &sent, 28);
    let inner = rewrite_quote(&q, CLIENT, VIP, CPORT, VPORT)?;
    let mut want = with_icmp_body(&input, inner);
    want.ip_mut().ttl -= 1; // relayed: router semantics
    want.src_mac = LB_MAC;
    want.dst_mac = CLIENT_MAC;
    want.ip_mut().src = VIP;
    want.ip_mut().dst = CLIENT;
    let before = without_times(h.flows_all()?);
    let r = h.run(&input.build())?;
    check_frame(&r, verdict::TX, &want)?;
    assert_eq!(
        h.reasons()?,
        only_reason(reason::TX_ICMP_TRANSLATED, 1),
        "{}",
        describe_reasons(&h.reasons()?)
    );
    assert_eq!(without_times(h.flows_all()?), before);
    Ok(())
}

#[test]
fn icmp_frag_needed_from_client_side_is_translated_to_the_backend() -> Result<()> {
    let mut h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    insert_pair(&mut h, &conn, flow_state::ESTABLISHED)?;
    // What the LB sent toward the client, quoted by a router on the way.
    let mut sent = conn.toward_client(&conn.backend_packet(tcp_flags::ACK));
    sent.tcp_mut().payload = vec![2; 1400];
    let (mut input, q) = icmp_error(CLIENT_MAC, ROUTER, VIP, &sent, 68);
    input.src_mac = CLIENT_MAC;
    let inner = rewrite_quote(&q, conn.backend.ip, SNAT, BPORT, conn.snat_port)?;
    let mut want = with_icmp_body(&input, inner);
    want.ip_mut().ttl -= 1; // relayed: router semantics
    want.src_mac = LB_MAC;
    want.dst_mac = conn.backend.mac;
    want.ip_mut().src = SNAT;
    want.ip_mut().dst = conn.backend.ip;
    let r = h.run(&input.build())?;
    check_frame(&r, verdict::TX, &want)?;
    assert_eq!(
        h.reasons()?,
        only_reason(reason::TX_ICMP_TRANSLATED, 1),
        "{}",
        describe_reasons(&h.reasons()?)
    );
    Ok(())
}

#[test]
fn icmp_error_quoting_no_flow_is_dropped() -> Result<()> {
    let h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let sent = conn.toward_backend(&conn.client_packet(tcp_flags::ACK));
    let (input, _) = icmp_error(conn.backend.mac, conn.backend.ip, SNAT, &sent, 28);
    expect_verdict_only(&h, &input.build(), verdict::DROP, reason::DROP_ICMP_NO_FLOW)?;
    Ok(())
}

#[test]
fn icmp_error_with_a_bad_checksum_quoting_a_live_flow_is_dropped() -> Result<()> {
    let mut h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    insert_pair(&mut h, &conn, flow_state::ESTABLISHED)?;
    let sent = conn.toward_backend(&conn.client_packet(tcp_flags::ACK));
    let (input, _) = icmp_error(conn.backend.mac, conn.backend.ip, SNAT, &sent, 28);
    let mut frame = input.build();
    let last = frame.len() - 1; // a quoted byte no other check reads
    frame[last] ^= 0x10;
    expect_verdict_only(&h, &frame, verdict::DROP, reason::DROP_ICMP_CHECKSUM)?;
    Ok(())
}

#[test]
fn icmp_error_with_truncated_quote_to_us_is_dropped() -> Result<()> {
    let h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let sent = conn.toward_backend(&conn.client_packet(tcp_flags::ACK));
    let (input, _) = icmp_error(conn.backend.mac, conn.backend.ip, SNAT, &sent, 24);
    expect_verdict_only(&h, &input.build(), verdict::DROP, reason::DROP_MALFORMED_L4)?;
    Ok(())
}

#[test]
fn icmp_echo_to_the_vip_passes() -> Result<()> {
    let h = lab()?;
    let f = FrameSpec::icmp(
        CLIENT_MAC,
        LB_MAC,
        CLIENT,
        VIP,
        IcmpSpec::echo_request(7, 1, b"ping payload"),
    );
    expect_pass_untouched(&h, &f.build(), reason::PASS_NOT_OURS)
}

#[test]
fn ssh_to_the_lb_address_passes_byte_identical() -> Result<()> {
    let h = lab()?;
    let mut f = FrameSpec::tcp(
        CLIENT_MAC,
        LB_MAC,
        CLIENT,
        50123,
        LB_CLIENT_SIDE_IP,
        22,
        tcp_flags::SYN,
    );
    f.tcp_mut().options = TcpSpec::syn_options();
    expect_pass_untouched(&h, &f.build(), reason::PASS_NOT_OURS)?;
    let ack = FrameSpec::tcp(
        CLIENT_MAC,
        LB_MAC,
        CLIENT,
        50123,
        LB_CLIENT_SIDE_IP,
        22,
        tcp_flags::ACK,
    );
    expect_pass_untouched(&h, &ack.build(), reason::PASS_NOT_OURS)
}

#[test]
fn arp_passes() -> Result<()> {
    let h = lab()?;
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&CLIENT.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&VIP.octets());
    let f = FrameSpec {
        dst_mac: [0xff; 6],
        src_mac: CLIENT_MAC,
        vlan: None,
        ethertype: ETHERTYPE_ARP,
        payload: Payload::Raw(arp),
        pad_to: 60,
    };
    expect_pass_untouched(&h, &f.build(), reason::PASS_NOT_IPV4)
}

#[test]
fn ipv6_passes() -> Result<()> {
    let h = lab()?;
    // A minimal IPv6 header (no next header, documentation prefix 2001:db8::).
    let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 59, 64];
    v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    let f = FrameSpec {
        dst_mac: LB_MAC,
        src_mac: CLIENT_MAC,
        vlan: Some((ETHERTYPE_VLAN, 5)),
        ethertype: ETHERTYPE_IPV6,
        payload: Payload::Raw(v6),
        pad_to: 0,
    };
    expect_pass_untouched(&h, &f.build(), reason::PASS_NOT_IPV4)
}

#[test]
fn vip_port_not_served_passes() -> Result<()> {
    let h = lab()?;
    let f = FrameSpec::tcp(CLIENT_MAC, LB_MAC, CLIENT, CPORT, VIP, 8080, tcp_flags::SYN);
    expect_pass_untouched(&h, &f.build(), reason::PASS_NOT_OURS)
}

/// The RST the program must answer `input` with.
fn expected_rst(input: &FrameSpec, seq: u32, ack: u32, flags: u8) -> FrameSpec {
    let Payload::Ipv4(ip, L4Spec::Tcp(t)) = &input.payload else {
        panic!("not TCP")
    };
    let mut rip = Ipv4Spec::new(ip.dst, ip.src, PROTO_TCP);
    rip.tos = 0;
    rip.id = 0;
    rip.flags_frag = IP_DF;
    rip.ttl = 64;
    let rtcp = TcpSpec {
        sport: t.dport,
        dport: t.sport,
        seq,
        ack,
        flags,
        window: 0,
        urg: 0,
        options: vec![],
        payload: vec![],
        doff: None,
    };
    let mut f = FrameSpec::ipv4(input.dst_mac, input.src_mac, rip, L4Spec::Tcp(rtcp));
    f.vlan = input.vlan;
    f
}

fn expect_rst(h: &XdpHarness, input: &FrameSpec, want: &FrameSpec, reason: u32) -> Result<()> {
    let before = h.snapshot()?;
    let r = h.run(&input.build())?;
    check_frame(&r, verdict::TX, want)?;
    assert_eq!(
        r.frame.len(),
        input.l2_len() + 40,
        "the RST frame must be shrunk to L2 + 40 bytes"
    );
    let after = h.snapshot()?;
    let mut exp = before;
    exp.reasons[reason as usize] += 1;
    if reason == lb_common::reason::TX_RST_NO_BACKEND {
        exp.service_stats[TCP_SVC_ID as usize].rst_no_backend += 1;
    }
    ensure!(
        after == exp,
        "maps after the RST:\n {after:?}\n expected:\n {exp:?}"
    );
    Ok(())
}

#[test]
fn midstream_miss_without_ack_is_dropped_unanswered() -> Result<()> {
    // A listening host's TCP drops a segment with none of SYN, ACK and RST
    // without a word (RFC 9293 3.10.7.2): so do we, whatever it carries.
    let h = lab()?;
    for flags in [tcp_flags::PSH, tcp_flags::FIN, 0] {
        let mut f = FrameSpec::tcp(CLIENT_MAC, LB_MAC, CLIENT, CPORT, VIP, VPORT, flags);
        f.tcp_mut().seq = 1000;
        f.tcp_mut().payload = b"abc".to_vec();
        f.pad_to = 60;
        expect_verdict_only(&h, &f.build(), verdict::DROP, reason::DROP_TCP_FLAGS)
            .with_context(|| format!("flags {flags:#04x}"))?;
    }
    Ok(())
}

#[test]
fn midstream_miss_with_ack_answers_rst_with_its_ack_as_seq() -> Result<()> {
    let h = lab()?;
    let mut f = FrameSpec::tcp(
        CLIENT_MAC,
        LB_MAC,
        CLIENT,
        CPORT,
        VIP,
        VPORT,
        tcp_flags::ACK | tcp_flags::PSH,
    );
    f.vlan = Some((ETHERTYPE_VLAN, 0x2064));
    f.tcp_mut().seq = 5555;
    f.tcp_mut().ack = 0xdead_beef;
    f.tcp_mut().payload = vec![7; 100];
    f.tcp_mut().options = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    expect_rst(
        &h,
        &f,
        &expected_rst(&f, 0xdead_beef, 0, tcp_flags::RST),
        reason::TX_RST_NO_FLOW,
    )
}

#[test]
fn midstream_rst_without_flow_is_dropped() -> Result<()> {
    let h = lab()?;
    let f = FrameSpec::tcp(
        CLIENT_MAC,
        LB_MAC,
        CLIENT,
        CPORT,
        VIP,
        VPORT,
        tcp_flags::RST | tcp_flags::ACK,
    );
    expect_verdict_only(&h, &f.build(), verdict::DROP, reason::DROP_RST_NO_FLOW)?;
    let f = FrameSpec::tcp(
        CLIENT_MAC,
        LB_MAC,
        CLIENT,
        CPORT,
        VIP,
        VPORT,
        tcp_flags::RST,
    );
    expect_verdict_only(&h, &f.build(), verdict::DROP, reason::DROP_RST_NO_FLOW)?;
    Ok(())
}

#[test]
fn syn_without_backend_answers_rst_and_counts_it() -> Result<()> {
    let mut h = lab()?;
    h.fill_ring(&tcp_service(), &[0])?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let mut s = syn(&conn);
    s.tcp_mut().payload = b"hello".to_vec(); // TFO-style data counts too
    s.pad_to = 64; // Ethernet padding does not
    let seq = s.tcp_mut().seq;
    expect_rst(
        &h,
        &s,
        &expected_rst(&s, 0, seq + 1 + 5, tcp_flags::RST | tcp_flags::ACK),
        reason::TX_RST_NO_BACKEND,
    )?;
    assert_eq!(h.service_stats(TCP_SVC_ID)?.rst_no_backend, 1);
    Ok(())
}

#[test]
fn udp_without_backend_is_dropped() -> Result<()> {
    let mut h = lab()?;
    h.fill_ring(&udp_service(), &[0])?;
    let conn = udp_conn(&h);
    expect_verdict_only(
        &h,
        &conn.client_packet(0).build(),
        verdict::DROP,
        reason::DROP_NO_BACKEND,
    )?;
    Ok(())
}

#[test]
fn inactive_vip_is_dropped() -> Result<()> {
    let mut h = lab()?;
    let mut svc = tcp_service();
    svc.flags &= !service_flags::ACTIVE;
    h.set_service(VIP, VPORT, IPPROTO_TCP, svc)?;
    let mut usvc = udp_service();
    usvc.flags &= !service_flags::ACTIVE;
    h.set_service(VIP, UDP_VPORT, IPPROTO_UDP, usvc)?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    expect_verdict_only(
        &h,
        &syn(&conn).build(),
        verdict::DROP,
        reason::DROP_INACTIVE,
    )?;
    expect_verdict_only(
        &h,
        &conn.client_packet(tcp_flags::ACK).build(),
        verdict::DROP,
        reason::DROP_INACTIVE,
    )?;
    expect_verdict_only(
        &h,
        &udp_conn(&h).client_packet(0).build(),
        verdict::DROP,
        reason::DROP_INACTIVE,
    )?;
    Ok(())
}

fn persistent_service(timeout_ns: u64) -> ServiceInfo {
    let mut s = tcp_service();
    s.flags |= service_flags::PERSISTENCE;
    s.persist_timeout_ns = timeout_ns;
    s
}

fn persist_key() -> PersistKey {
    PersistKey {
        service_id: TCP_SVC_ID,
        client_ip: ip_be(CLIENT),
    }
}

/// Sends a SYN expected to go to backend `to`, and checks the persistence
/// entry points there afterwards.
fn syn_lands_on(h: &XdpHarness, to: u32) -> Result<()> {
    let conn = tcp_conn(h, CLIENT, CPORT, tcp_backend(to));
    let s = syn(&conn);
    expect_frame(h, &s, verdict::TX, &conn.toward_backend(&s))?;
    assert_eq!(
        without_times(h.half_open_all()?),
        conn.pair(flow_state::SYN)
    );
    let p = h.persist.get(&persist_key(), 0)?;
    assert_eq!(
        p.backend_id, to,
        "persistence must point at the backend used"
    );
    ensure!(
        p.last_seen_ns.abs_diff(now_coarse_ns()) < 2_000_000_000,
        "persistence entry not refreshed: {p:?}"
    );
    assert_eq!(h.persist_all()?.len(), 1);
    reasons_none(h)
}

#[test]
fn persistence_hit_overrides_the_ring() -> Result<()> {
    let mut h = lab()?;
    h.set_service(
        VIP,
        VPORT,
        IPPROTO_TCP,
        persistent_service(3_600_000_000_000),
    )?;
    h.persist.insert(
        persist_key(),
        Persist {
            backend_id: 2,
            _pad: 0,
            last_seen_ns: now_coarse_ns(),
        },
        0,
    )?;
    syn_lands_on(&h, 2)
}

#[test]
fn new_client_of_a_persistent_service_gets_an_entry() -> Result<()> {
    let mut h = lab()?;
    h.set_service(
        VIP,
        VPORT,
        IPPROTO_TCP,
        persistent_service(3_600_000_000_000),
    )?;
    syn_lands_on(&h, 1)
}

#[test]
fn persistence_to_a_backend_without_persist_ok_falls_back_to_the_ring() -> Result<()> {
    let mut h = lab()?;
    h.set_service(
        VIP,
        VPORT,
        IPPROTO_TCP,
        persistent_service(3_600_000_000_000),
    )?;
    h.set_backend(2, NEIGHBOURS[1].0, BPORT, backend_flags::IN_USE)?;
    h.persist.insert(
        persist_key(),
        Persist {
            backend_id: 2,
            _pad: 0,
            last_seen_ns: now_coarse_ns(),
        },
        0,
    )?;
    syn_lands_on(&h, 1)
}

#[test]
fn expired_persistence_falls_back_to_the_ring() -> Result<()> {
    let mut h = lab()?;
    h.set_service(VIP, VPORT, IPPROTO_TCP, persistent_service(10_000_000_000))?;
    let old = now_coarse_ns().saturating_sub(20_000_000_000);
    h.persist.insert(
        persist_key(),
        Persist {
            backend_id: 2,
            _pad: 0,
            last_seen_ns: old,
        },
        0,
    )?;
    syn_lands_on(&h, 1)
}

#[test]
fn fib_without_neighbour_is_dropped() -> Result<()> {
    let mut h = lab()?;
    h.fill_ring(&tcp_service(), &[BE_NO_NEIGH])?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    expect_verdict_only(
        &h,
        &syn(&conn).build(),
        verdict::DROP,
        reason::DROP_FIB_NO_NEIGH,
    )?;
    Ok(())
}

#[test]
fn fib_without_route_is_dropped() -> Result<()> {
    let mut h = lab()?;
    h.fill_ring(&tcp_service(), &[BE_NO_ROUTE])?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    expect_verdict_only(
        &h,
        &syn(&conn).build(),
        verdict::DROP,
        reason::DROP_FIB_FAILED,
    )?;
    Ok(())
}

#[test]
fn ring_pointing_at_an_unused_backend_row_is_dropped() -> Result<()> {
    let mut h = lab()?;
    h.fill_ring(&tcp_service(), &[BE_NOT_IN_USE])?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    expect_verdict_only(
        &h,
        &syn(&conn).build(),
        verdict::DROP,
        reason::DROP_BAD_BACKEND,
    )?;
    Ok(())
}

#[test]
fn reply_to_the_snat_range_without_flow_is_dropped() -> Result<()> {
    let h = lab()?;
    let b = tcp_backend(1);
    let f = FrameSpec::tcp(
        b.mac,
        LB_MAC,
        b.ip,
        BPORT,
        SNAT,
        40123,
        tcp_flags::SYN | tcp_flags::ACK,
    );
    expect_verdict_only(&h, &f.build(), verdict::DROP, reason::DROP_REPLY_NO_FLOW)?;
    let f = FrameSpec::tcp(b.mac, LB_MAC, b.ip, BPORT, SNAT, SNAT_MAX, tcp_flags::ACK);
    expect_verdict_only(&h, &f.build(), verdict::DROP, reason::DROP_REPLY_NO_FLOW)?;
    let f = FrameSpec::udp(
        b.mac,
        LB_MAC,
        b.ip,
        UDP_BPORT,
        VIP,
        SNAT_MIN,
        b"late answer",
    );
    expect_verdict_only(&h, &f.build(), verdict::DROP, reason::DROP_REPLY_NO_FLOW)?;
    // Just outside the range: the host's business.
    let f = FrameSpec::tcp(
        b.mac,
        LB_MAC,
        b.ip,
        BPORT,
        SNAT,
        SNAT_MAX + 1,
        tcp_flags::ACK,
    );
    expect_pass_untouched(&h, &f.build(), reason::PASS_NOT_OURS)
}

#[test]
fn vlan_tagged_syn_is_forwarded_with_its_tag() -> Result<()> {
    let h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let mut s = syn(&conn);
    s.vlan = Some((ETHERTYPE_VLAN, 0x3005));
    s.pad_to = 100; // padding after the IP packet stays as it was
    let out = expect_frame(&h, &s, verdict::TX, &conn.toward_backend(&s))?;
    assert_eq!(
        &out[12..16],
        &[0x81, 0x00, 0x30, 0x05],
        "the 802.1Q tag must stay in place"
    );
    assert_eq!(
        without_times(h.half_open_all()?),
        conn.pair(flow_state::SYN)
    );
    let len = s.build().len() as u64;
    expect_stats(&h, TCP_SVC_ID, 1, stats((1, len), (0, 0), 1))?;
    reasons_none(&h)
}

fn collision_case(in_half_open: bool) -> Result<()> {
    let mut h = lab()?;
    let mut conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let p0 = snat_candidate(CLIENT, CPORT, VIP, VPORT, IPPROTO_TCP, 0);
    let p1 = snat_candidate(CLIENT, CPORT, VIP, VPORT, IPPROTO_TCP, 1);
    ensure!(
        p0 != p1,
        "candidates 0 and 1 coincide for this client; pick another port"
    );
    // Another connection already owns (backend -> SNAT:p0).
    let other_key = key(conn.backend.ip, SNAT, BPORT, p0, IPPROTO_TCP);
    let mut other = tcp_conn(&h, ROUTER, 1234, tcp_backend(1)).rev_flow(flow_state::ESTABLISHED);
    other.last_seen_ns = now_coarse_ns();
    if in_half_open {
        h.half_open.insert(other_key, other, 0)?;
    } else {
        h.flows.insert(other_key, other, 0)?;
    }
    conn.snat_port = p1;
    let s = syn(&conn);
    let out = expect_frame(&h, &s, verdict::TX, &conn.toward_backend(&s))?;
    let sport = parse(&out)?.tcp().sport;
    assert!(
        (SNAT_MIN..=SNAT_MAX).contains(&sport),
        "SNAT port {sport} outside the range"
    );
    let mut want = conn.pair(flow_state::SYN);
    if in_half_open {
        want.push((other_key, other));
        want.sort_by_key(|(k, _)| (k.src_ip, k.dst_ip, k.src_port, k.dst_port, k.proto));
        let mut got = h.half_open_all()?;
        for (k, f) in &mut got {
            if *k != other_key {
                f.last_seen_ns = 0;
            }
        }
        want.iter_mut()
            .filter(|(k, _)| *k != other_key)
            .for_each(|(_, f)| f.last_seen_ns = 0);
        assert_eq!(got, want);
    } else {
        assert_eq!(without_times(h.half_open_all()?), want);
        assert_eq!(
            h.flows_all()?,
            vec![(other_key, other)],
            "the existing flow must be untouched"
        );
    }
    reasons_none(&h)
}

#[test]
fn snat_port_taken_in_flows_picks_the_next_candidate() -> Result<()> {
    collision_case(false)
}

#[test]
fn snat_port_taken_in_half_open_picks_the_next_candidate() -> Result<()> {
    collision_case(true)
}

// ------------------------------------------------------------ malformed

/// A TCP segment to the VIP:443 from the client.
fn to_vip_tcp() -> FrameSpec {
    FrameSpec::tcp(
        CLIENT_MAC,
        LB_MAC,
        CLIENT,
        CPORT,
        VIP,
        VPORT,
        tcp_flags::SYN,
    )
}

fn to_vip_udp() -> FrameSpec {
    FrameSpec::udp(CLIENT_MAC, LB_MAC, CLIENT, 5000, VIP, UDP_VPORT, b"q")
}

fn dropped(frame: Vec<u8>, reason: u32) -> Result<()> {
    let h = lab()?;
    expect_verdict_only(&h, &frame, verdict::DROP, reason)?;
    Ok(())
}

fn passed(frame: Vec<u8>, reason: u32) -> Result<()> {
    let h = lab()?;
    expect_pass_untouched(&h, &frame, reason)
}

/// Frames of exactly an Ethernet header. (Shorter frames cannot be tested:
/// BPF_PROG_TEST_RUN refuses input whose packet part is under 14 bytes, even
/// behind XDP metadata, and no driver hands XDP such a frame either.)
#[test]
fn ethernet_header_only_frames() -> Result<()> {
    let h = lab()?;
    let mut f = to_vip_tcp().build();
    f.truncate(14);
    expect_verdict_only(&h, &f, verdict::DROP, reason::DROP_MALFORMED_IP)?;
    f[12..14].copy_from_slice(&[0x81, 0x00]);
    expect_verdict_only(&h, &f, verdict::DROP, reason::DROP_MALFORMED_L2)?;
    f[12..14].copy_from_slice(&[0x88, 0xa8]);
    expect_verdict_only(&h, &f, verdict::DROP, reason::DROP_MALFORMED_L2)?;
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    expect_pass_untouched(&h, &f, reason::PASS_NOT_IPV4)
}

#[test]
fn malformed_truncated_vlan_tag() -> Result<()> {
    let mut f = to_vip_tcp().build();
    f.truncate(12);
    f.extend_from_slice(&[0x81, 0x00, 0x00]);
    dropped(f, reason::DROP_MALFORMED_L2)
}

#[test]
fn malformed_truncated_ip_header() -> Result<()> {
    let mut f = to_vip_tcp().build();
    f.truncate(14 + 19);
    dropped(f, reason::DROP_MALFORMED_IP)
}

#[test]
fn malformed_ip_version_not_4() -> Result<()> {
    let mut f = to_vip_tcp();
    f.ip_mut().version = 6;
    dropped(f.build(), reason::DROP_MALFORMED_IP)
}

#[test]
fn malformed_ihl_below_5() -> Result<()> {
    let mut f = to_vip_tcp();
    f.ip_mut().ihl = Some(4);
    dropped(f.build(), reason::DROP_MALFORMED_IP)
}

#[test]
fn malformed_ihl_beyond_the_packet() -> Result<()> {
    let mut f = to_vip_udp();
    f.ip_mut().ihl = Some(15);
    f.ip_mut().tot_len = Some(29);
    dropped(f.build(), reason::DROP_MALFORMED_IP)
}

#[test]
fn malformed_tot_len_below_header() -> Result<()> {
    let mut f = to_vip_tcp();
    f.ip_mut().tot_len = Some(19);
    dropped(f.build(), reason::DROP_MALFORMED_IP)
}

#[test]
fn malformed_tot_len_beyond_the_frame() -> Result<()> {
    let mut f = to_vip_tcp();
    f.ip_mut().tot_len = Some(41);
    dropped(f.build(), reason::DROP_MALFORMED_IP)
}

#[test]
fn ip_options_to_the_vip_are_dropped() -> Result<()> {
    let mut f = to_vip_tcp();
    f.ip_mut().options = vec![1, 1, 1, 0];
    dropped(f.build(), reason::DROP_IP_OPTIONS)
}

#[test]
fn ip_options_not_ours_pass() -> Result<()> {
    let mut f = FrameSpec::tcp(
        CLIENT_MAC,
        LB_MAC,
        CLIENT,
        50123,
        LB_CLIENT_SIDE_IP,
        22,
        tcp_flags::SYN,
    );
    f.ip_mut().options = vec![1, 1, 1, 0];
    passed(f.build(), reason::PASS_NOT_OURS)
}

#[test]
fn fragment_with_mf_to_the_vip_is_dropped() -> Result<()> {
    let mut f = to_vip_udp();
    f.ip_mut().flags_frag = IP_MF;
    dropped(f.build(), reason::DROP_FRAGMENT)
}

#[test]
fn fragment_with_offset_to_the_vip_is_dropped() -> Result<()> {
    let mut f = to_vip_udp();
    f.ip_mut().flags_frag = 185; // offset 1480 bytes, last fragment
    dropped(f.build(), reason::DROP_FRAGMENT)
}

#[test]
fn fragment_not_ours_passes() -> Result<()> {
    let mut f = FrameSpec::udp(
        CLIENT_MAC,
        LB_MAC,
        CLIENT,
        5000,
        LB_CLIENT_SIDE_IP,
        53,
        b"q",
    );
    f.ip_mut().flags_frag = IP_MF;
    passed(f.build(), reason::PASS_NOT_OURS)
}

#[test]
fn malformed_truncated_tcp_header() -> Result<()> {
    let full = to_vip_tcp().build();
    let mut f = to_vip_tcp();
    let Payload::Ipv4(_, l4) = &mut f.payload else {
        unreachable!()
    };
    *l4 = L4Spec::Raw(full[34..34 + 19].to_vec());
    dropped(f.build(), reason::DROP_MALFORMED_L4)
}

#[test]
fn malformed_tcp_doff_below_5() -> Result<()> {
    let mut f = to_vip_tcp();
    f.tcp_mut().doff = Some(4);
    dropped(f.build(), reason::DROP_MALFORMED_L4)
}

#[test]
fn malformed_tcp_doff_beyond_the_packet() -> Result<()> {
    let mut f = to_vip_tcp();
    f.tcp_mut().doff = Some(6);
    f.pad_to = 60; // bytes in the frame, but beyond tot_len
    dropped(f.build(), reason::DROP_MALFORMED_L4)
}

#[test]
fn malformed_truncated_udp_header() -> Result<()> {
    let mut f = to_vip_udp();
    let Payload::Ipv4(_, l4) = &mut f.payload else {
        unreachable!()
    };
    *l4 = L4Spec::Raw(vec![0x13, 0x88, 0, 53, 0, 8, 0]);
    dropped(f.build(), reason::DROP_MALFORMED_L4)
}

#[test]
fn malformed_udp_len_too_small() -> Result<()> {
    let mut f = to_vip_udp();
    f.udp_mut().len = Some(7);
    dropped(f.build(), reason::DROP_MALFORMED_L4)
}

#[test]
fn malformed_udp_len_too_large() -> Result<()> {
    let mut f = to_vip_udp();
    f.udp_mut().len = Some(10);
    f.pad_to = 60;
    dropped(f.build(), reason::DROP_MALFORMED_L4)
}

#[test]
fn malformed_truncated_icmp_header() -> Result<()> {
    let mut f = FrameSpec::icmp(
        CLIENT_MAC,
        LB_MAC,
        CLIENT,
        VIP,
        IcmpSpec::echo_request(1, 1, b""),
    );
    let Payload::Ipv4(_, l4) = &mut f.payload else {
        unreachable!()
    };
    *l4 = L4Spec::Raw(vec![8, 0, 0, 0, 0, 1, 0]);
    dropped(f.build(), reason::DROP_MALFORMED_L4)
}

#[test]
fn icmp_time_exceeded_quoting_a_udp_flow_is_translated() -> Result<()> {
    let mut h = lab()?;
    let conn = udp_conn(&h);
    insert_pair(&mut h, &conn, flow_state::UDP)?;
    // A router between LB and backend quotes the datagram the LB sent.
    let sent = conn.toward_backend(&conn.client_packet(0));
    let Payload::Ipv4(ip, l4) = &sent.payload else {
        unreachable!()
    };
    let q = quote(ip, l4, 36);
    let icmp = IcmpSpec {
        typ: 11,
        code: 0,
        rest: [0; 4],
        body: q.clone(),
    };
    let router = Ipv4Addr::new(198, 51, 100, 1);
    let input = FrameSpec::icmp(NEIGHBOURS[1].1, LB_MAC, router, VIP, icmp);
    let inner = rewrite_quote(&q, CLIENT, VIP, conn.cport, UDP_VPORT)?;
    let mut want = with_icmp_body(&input, inner);
    want.ip_mut().ttl -= 1; // relayed: router semantics
    want.src_mac = LB_MAC;
    want.dst_mac = CLIENT_MAC;
    want.ip_mut().src = VIP;
    want.ip_mut().dst = CLIENT;
    let r = h.run(&input.build())?;
    check_frame(&r, verdict::TX, &want)?;
    assert_eq!(
        h.reasons()?,
        only_reason(reason::TX_ICMP_TRANSLATED, 1),
        "{}",
        describe_reasons(&h.reasons()?)
    );
    Ok(())
}

#[test]
fn icmp_error_not_addressed_to_us_passes() -> Result<()> {
    let h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let sent = conn.client_packet(tcp_flags::ACK);
    let (input, _) = icmp_error(
        NEIGHBOURS[0].1,
        NEIGHBOURS[0].0,
        LB_CLIENT_SIDE_IP,
        &sent,
        28,
    );
    expect_pass_untouched(&h, &input.build(), reason::PASS_NOT_OURS)
}

#[test]
fn other_ip_protocol_to_the_vip_passes() -> Result<()> {
    let h = lab()?;
    let mut ipspec = Ipv4Spec::new(CLIENT, VIP, 47);
    ipspec.ttl = 30;
    let f = FrameSpec::ipv4(
        CLIENT_MAC,
        LB_MAC,
        ipspec,
        L4Spec::Raw(vec![0, 0, 0x08, 0, 1, 2, 3, 4]),
    );
    expect_pass_untouched(&h, &f.build(), reason::PASS_NOT_OURS)
}

#[test]
fn fragments_and_options_to_a_snat_address_are_dropped() -> Result<()> {
    let h = lab()?;
    let b = tcp_backend(1);
    let mut f = FrameSpec::tcp(b.mac, LB_MAC, b.ip, BPORT, SNAT, 40123, tcp_flags::ACK);
    f.ip_mut().flags_frag = IP_MF;
    expect_verdict_only(&h, &f.build(), verdict::DROP, reason::DROP_FRAGMENT)?;
    let mut f = FrameSpec::tcp(b.mac, LB_MAC, b.ip, BPORT, SNAT, 40123, tcp_flags::ACK);
    f.ip_mut().options = vec![1, 1, 1, 0];
    expect_verdict_only(&h, &f.build(), verdict::DROP, reason::DROP_IP_OPTIONS)?;
    Ok(())
}

#[test]
fn new_flows_use_a_cached_next_hop_until_it_expires() -> Result<()> {
    // New flows ask the FIB once per backend, CPU and second: the answer is
    // kept in the per-CPU `hop_cache`. Plant an entry on every CPU and check
    // that SYNs use it while it is fresh, and ask the FIB again once expired.
    let mut h = lab()?;
    let planted_mac = [0x02, 0, 0, 0, 0x09, 0x99];
    let plant = |h: &mut XdpHarness, expires_ns: u64| -> Result<()> {
        let entries: Vec<lb_common::HopCache> = h
            .hop_cache
            .get(&1, 0)?
            .iter()
            .map(|_| lb_common::HopCache {
                dst_mac: planted_mac,
                src_mac: [0x02, 0, 0, 0, 0x09, 0x98],
                ifindex: h.eth0,
                src_ip: ip_be(SNAT),
                expires_ns,
            })
            .collect();
        h.hop_cache
            .set(1, aya::maps::PerCpuValues::try_from(entries)?, 0)?;
        Ok(())
    };
    plant(&mut h, now_coarse_ns() + 60_000_000_000)?;
    let first = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let out = h.run(&syn(&first).build())?;
    assert_eq!(out.verdict, verdict::TX);
    assert_eq!(
        parse(&out.frame)?.eth.dst,
        planted_mac,
        "a fresh cache entry is used"
    );

    plant(&mut h, 0)?;
    let second = tcp_conn(&h, CLIENT, CPORT + 1, tcp_backend(1));
    let out = h.run(&syn(&second).build())?;
    assert_eq!(out.verdict, verdict::TX);
    assert_eq!(
        parse(&out.frame)?.eth.dst,
        NEIGHBOURS[0].1,
        "an expired entry asks the FIB again"
    );
    let after = h.hop_cache.get(&1, 0)?;
    assert!(
        after
            .iter()
            .any(|c| c.dst_mac == NEIGHBOURS[0].1 && c.expires_ns > now_coarse_ns()),
        "the FIB answer is cached again"
    );
    Ok(())
}

// ------------------------------------------------------------------ lease

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

/// A private bpffs instance, unmounted (with its pins) on drop.
struct PrivateBpffs(std::path::PathBuf);

impl PrivateBpffs {
    fn mount() -> Result<PrivateBpffs> {
        let dir = std::env::temp_dir().join(format!("lbt-xdp-bpffs-{}", std::process::id()));
        lb_userspace::dataplane::pins::ensure_bpffs(&dir)?;
        Ok(PrivateBpffs(dir))
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        if let Ok(c) = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.0);
    }
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
    let fs = PrivateBpffs::mount()?;
    let pins = PinDir::new(&fs.0, "lease-test")?;
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
        left > Duration::from_secs(29) && left <= Duration::from_secs(30),
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

    let missing = PinDir::new(&fs.0, "no-such-node")?;
    let err = format!("{:#}", Lease::open_in(&missing).err().expect("no pin"));
    ensure!(err.contains("no-such-node"), "{err}");
    Ok(())
}

// ------------------------------------------------------ handshake and close

/// Asserts `conn`'s pair is still half-open as `want` and nothing is in
/// `flows`.
fn expect_not_promoted(h: &XdpHarness, want: &[(FlowKey, Flow)]) -> Result<()> {
    ensure!(
        h.flows_all()?.is_empty(),
        "nothing may be promoted: flows holds {:?}",
        h.flows_all()?
    );
    ensure!(
        without_times(h.half_open_all()?) == want,
        "half_open changed: {:?}",
        h.half_open_all()?
    );
    Ok(())
}

#[test]
fn syn_and_ack_spoof_pairs_promote_nothing() -> Result<()> {
    // A blind spoofer sends a SYN and then the ACK it cannot know the number
    // of: with no SYN-ACK seen, and with a guess after one.
    let h = lab()?;
    let mut half = Vec::new();
    for (i, ack) in [0u32, 1, 0x2000_0002, BACKEND_ISN + 1]
        .into_iter()
        .enumerate()
    {
        let client = Ipv4Addr::new(192, 0, 2, 100 + i as u8);
        let conn = tcp_conn(&h, client, CPORT, tcp_backend(1));
        let s = syn(&conn);
        expect_frame(&h, &s, verdict::TX, &conn.toward_backend(&s))?;
        half.extend(conn.pair(flow_state::SYN));
        half.sort_by_key(|(k, _)| (k.src_ip, k.dst_ip, k.src_port, k.dst_port, k.proto));
        let spoof = handshake_ack(&conn, ack);
        expect_verdict_only(
            &h,
            &spoof.build(),
            verdict::DROP,
            reason::DROP_HANDSHAKE_ACK,
        )?;
        // ACK with data and FIN+ACK: the same answer.
        for flags in [
            tcp_flags::ACK | tcp_flags::PSH,
            tcp_flags::FIN | tcp_flags::ACK,
        ] {
            let mut more = spoof.clone();
            more.tcp_mut().flags = flags;
            more.tcp_mut().payload = b"GET / HTTP/1.0\r\n\r\n".to_vec();
            expect_verdict_only(&h, &more.build(), verdict::DROP, reason::DROP_HANDSHAKE_ACK)?;
        }
    }
    expect_not_promoted(&h, &half)
}

#[test]
fn mid_handshake_ack_with_a_wrong_number_is_not_promoted() -> Result<()> {
    let h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let s = syn(&conn);
    expect_frame(&h, &s, verdict::TX, &conn.toward_backend(&s))?;
    let sa = syn_ack(&conn, BACKEND_ISN);
    expect_frame(&h, &sa, verdict::TX, &conn.toward_client(&sa))?;
    let want = syn_acked_pair(&conn, BACKEND_ISN);
    for wrong in [
        BACKEND_ISN,
        BACKEND_ISN + 2,
        BACKEND_ISN.wrapping_sub(1_000_000),
        BACKEND_ISN + 1_000_000,
        0,
    ] {
        expect_verdict_only(
            &h,
            &handshake_ack(&conn, wrong).build(),
            verdict::DROP,
            reason::DROP_HANDSHAKE_ACK,
        )
        .map_err(|e| e.context(format!("ACK {wrong:#x} for ISN {BACKEND_ISN:#x}")))?;
    }
    expect_not_promoted(&h, &want)?;
    // The real ACK still completes it.
    let a = handshake_ack(&conn, BACKEND_ISN + 1);
    expect_frame(&h, &a, verdict::TX, &conn.toward_backend(&a))?;
    assert!(h.half_open_all()?.is_empty());
    assert_eq!(
        without_times(h.flows_all()?),
        conn.pair(flow_state::ESTABLISHED)
    );
    Ok(())
}

#[test]
fn retransmitted_syn_and_syn_ack_keep_the_handshake() -> Result<()> {
    let h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    let s = syn(&conn);
    let first = expect_frame(&h, &s, verdict::TX, &conn.toward_backend(&s))?;
    let sa = syn_ack(&conn, BACKEND_ISN);
    expect_frame(&h, &sa, verdict::TX, &conn.toward_client(&sa))?;
    // The client did not get the SYN-ACK and retransmits its SYN: same
    // port, same backend, the recorded ISN kept.
    let again = expect_frame(&h, &s, verdict::TX, &conn.toward_backend(&s))?;
    assert_eq!(first, again);
    assert_eq!(
        without_times(h.half_open_all()?),
        syn_acked_pair(&conn, BACKEND_ISN)
    );
    // The backend retransmits its SYN-ACK: translated again, same ISN.
    expect_frame(&h, &sa, verdict::TX, &conn.toward_client(&sa))?;
    assert_eq!(
        without_times(h.half_open_all()?),
        syn_acked_pair(&conn, BACKEND_ISN)
    );
    let a = handshake_ack(&conn, BACKEND_ISN + 1);
    expect_frame(&h, &a, verdict::TX, &conn.toward_backend(&a))?;
    assert_eq!(
        without_times(h.flows_all()?),
        conn.pair(flow_state::ESTABLISHED)
    );
    // A SYN-ACK retransmitted once more after the promotion follows flows.
    expect_frame(&h, &sa, verdict::TX, &conn.toward_client(&sa))?;
    assert!(h.half_open_all()?.is_empty());
    reasons_none(&h)
}

/// The segments of an orderly close of `conn`: the client's FIN, the
/// backend's FIN+ACK (acknowledging it), and the client's last ACK.
fn close_segments(conn: &Conn) -> [(bool, FrameSpec); 3] {
    let (c_seq, b_seq) = (0x1000u32, 0x9000u32);
    let mut fin = conn.client_packet(tcp_flags::FIN | tcp_flags::ACK);
    fin.tcp_mut().seq = c_seq;
    fin.tcp_mut().ack = b_seq;
    let mut fin_ack = conn.backend_packet(tcp_flags::FIN | tcp_flags::ACK);
    fin_ack.tcp_mut().seq = b_seq;
    fin_ack.tcp_mut().ack = c_seq + 1;
    let mut last = conn.client_packet(tcp_flags::ACK);
    last.tcp_mut().seq = c_seq + 1;
    last.tcp_mut().ack = b_seq + 1;
    [(true, fin), (false, fin_ack), (true, last)]
}

fn send_along(h: &XdpHarness, conn: &Conn, from_client: bool, f: &FrameSpec) -> Result<()> {
    let want = if from_client {
        conn.toward_backend(f)
    } else {
        conn.toward_client(f)
    };
    expect_frame(h, f, verdict::TX, &want)?;
    Ok(())
}

fn pair_states(h: &XdpHarness, conn: &Conn) -> Result<(u8, u8)> {
    Ok((
        h.flows.get(&conn.fwd_key(), 0)?.state,
        h.flows.get(&conn.rev_key(), 0)?.state,
    ))
}

#[test]
fn fin_both_ways_and_the_last_ack_close_the_pair() -> Result<()> {
    let h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    open_connection(&h, &conn)?;
    let [fin, fin_ack, last] = close_segments(&conn);
    send_along(&h, &conn, fin.0, &fin.1)?;
    assert_eq!(
        pair_states(&h, &conn)?,
        (flow_state::CLOSING, flow_state::CLOSING)
    );
    send_along(&h, &conn, fin_ack.0, &fin_ack.1)?;
    assert_eq!(
        pair_states(&h, &conn)?,
        (flow_state::CLOSING, flow_state::CLOSING),
        "the backend's FIN is not acknowledged yet"
    );
    // An ACK short of the FIN does not close it.
    let mut short = last.1.clone();
    short.tcp_mut().ack -= 1;
    send_along(&h, &conn, true, &short)?;
    assert_eq!(
        pair_states(&h, &conn)?,
        (flow_state::CLOSING, flow_state::CLOSING)
    );
    send_along(&h, &conn, last.0, &last.1)?;
    assert_eq!(
        pair_states(&h, &conn)?,
        (flow_state::CLOSED, flow_state::CLOSED)
    );
    // A late retransmission still passes and changes nothing.
    send_along(&h, &conn, fin_ack.0, &fin_ack.1)?;
    assert_eq!(
        pair_states(&h, &conn)?,
        (flow_state::CLOSED, flow_state::CLOSED)
    );
    reasons_none(&h)
}

#[test]
fn half_closed_connection_keeps_its_data_flowing_and_stays_closing() -> Result<()> {
    let h = lab()?;
    let conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    open_connection(&h, &conn)?;
    let [fin, _, _] = close_segments(&conn);
    send_along(&h, &conn, fin.0, &fin.1)?;
    // The backend acknowledges the FIN and keeps sending; the client ACKs.
    for i in 0..3u32 {
        let mut data = conn.backend_packet(tcp_flags::ACK | tcp_flags::PSH);
        data.tcp_mut().seq = 0x9000 + 100 * i;
        data.tcp_mut().ack = 0x1001;
        data.tcp_mut().payload = vec![0x42; 100];
        send_along(&h, &conn, false, &data)?;
        let mut ack = conn.client_packet(tcp_flags::ACK);
        ack.tcp_mut().seq = 0x1001;
        ack.tcp_mut().ack = 0x9000 + 100 * (i + 1);
        send_along(&h, &conn, true, &ack)?;
    }
    assert_eq!(
        pair_states(&h, &conn)?,
        (flow_state::CLOSING, flow_state::CLOSING)
    );
    reasons_none(&h)
}

/// A one-port SNAT range whose port is held by `conn`'s pair, closed or not.
fn one_port_lab(state: u8) -> Result<(XdpHarness, Conn)> {
    let mut h = lab()?;
    // No SYN cookies: a SYN that finds no port is dropped, which is what
    // these cases look for (xdp_cookie.rs has the cookie instead).
    h.settings.set(
        0,
        lb_common::Settings {
            snat_port_min: SNAT_MIN,
            snat_port_max: SNAT_MIN,
            flags: lb_common::settings_flags::SYN_COOKIES_NEVER,
            ..Default::default()
        },
        0,
    )?;
    let mut conn = tcp_conn(&h, CLIENT, CPORT, tcp_backend(1));
    conn.snat_port = SNAT_MIN;
    open_connection(&h, &conn)?;
    match state {
        flow_state::CLOSED => {
            for (from_client, f) in close_segments(&conn) {
                send_along(&h, &conn, from_client, &f)?;
            }
        }
        flow_state::CLOSING => {
            let [fin, _, _] = close_segments(&conn);
            send_along(&h, &conn, fin.0, &fin.1)?;
        }
        _ => {}
    }
    assert_eq!(pair_states(&h, &conn)?, (state, state));
    Ok((h, conn))
}

#[test]
fn closed_connections_port_is_taken_over_at_once() -> Result<()> {
    // By the same client (another source port) and by another client: the
    // latter only after no free port turned up in the whole search.
    for client in [CLIENT, ROUTER] {
        let (h, old) = one_port_lab(flow_state::CLOSED)?;
        let mut new = tcp_conn(&h, client, CPORT + 1, tcp_backend(1));
        new.snat_port = SNAT_MIN;
        let s = syn(&new);
        expect_frame(&h, &s, verdict::TX, &new.toward_backend(&s))?;
        ensure!(
            h.flows_all()?.is_empty(),
            "client {client}: both entries of the closed connection must go, flows: {:?}",
            h.flows_all()?
        );
        assert_eq!(without_times(h.half_open_all()?), new.pair(flow_state::SYN));
        let r = h.reasons()?;
        ensure!(
            r == only_reason(reason::SNAT_PORT_TAKEN_OVER, 1),
            "reasons: {}",
            describe_reasons(&r)
        );
        // The old client's late ACK finds no flow any more: answered as a
        // stray segment, never along the new connection.
        let [_, _, late] = close_segments(&old);
        let r = h.run(&late.1.build())?;
        assert_eq!(r.verdict, verdict::TX);
        assert_eq!(parse(&r.frame)?.tcp().flags, tcp_flags::RST);
    }
    Ok(())
}

#[test]
fn reset_connections_port_is_taken_over() -> Result<()> {
    let (h, conn) = one_port_lab(flow_state::ESTABLISHED)?;
    let rst = conn.backend_packet(tcp_flags::RST | tcp_flags::ACK);
    send_along(&h, &conn, false, &rst)?;
    let mut new = tcp_conn(&h, CLIENT, CPORT + 7, tcp_backend(1));
    new.snat_port = SNAT_MIN;
    let s = syn(&new);
    expect_frame(&h, &s, verdict::TX, &new.toward_backend(&s))?;
    assert!(h.flows_all()?.is_empty());
    Ok(())
}

#[test]
fn open_and_half_closed_connections_ports_are_never_taken() -> Result<()> {
    for state in [flow_state::ESTABLISHED, flow_state::CLOSING] {
        let (h, old) = one_port_lab(state)?;
        let new = tcp_conn(&h, CLIENT, CPORT + 1, tcp_backend(1));
        expect_verdict_only(
            &h,
            &syn(&new).build(),
            verdict::DROP,
            reason::DROP_SNAT_EXHAUSTED,
        )?;
        assert_eq!(pair_states(&h, &old)?, (state, state));
    }
    Ok(())
}

#[test]
fn new_syn_on_a_closed_tuple_reopens_it_on_the_same_port() -> Result<()> {
    // The client reuses its own 5-tuple (it left TIME_WAIT): the SYN follows
    // the closed pair, which is open again and no longer up for takeover.
    let (h, conn) = one_port_lab(flow_state::CLOSED)?;
    let s = syn(&conn);
    expect_frame(&h, &s, verdict::TX, &conn.toward_backend(&s))?;
    assert_eq!(
        pair_states(&h, &conn)?,
        (flow_state::ESTABLISHED, flow_state::ESTABLISHED)
    );
    let other = tcp_conn(&h, ROUTER, CPORT, tcp_backend(1));
    expect_verdict_only(
        &h,
        &syn(&other).build(),
        verdict::DROP,
        reason::DROP_SNAT_EXHAUSTED,
    )?;
    Ok(())
}

#[test]
fn a_client_port_inside_the_snat_range_is_kept_when_free() -> Result<()> {
    let h = lab()?;
    let mut conn = tcp_conn(&h, CLIENT, SNAT_MIN + 123, tcp_backend(1));
    conn.snat_port = SNAT_MIN + 123;
    let s = syn(&conn);
    expect_frame(&h, &s, verdict::TX, &conn.toward_backend(&s))?;
    // Taken already: another client with the same port gets a candidate.
    let mut other = tcp_conn(&h, ROUTER, SNAT_MIN + 123, tcp_backend(1));
    ensure!(
        other.snat_port != SNAT_MIN + 123,
        "pick another client port"
    );
    let s = syn(&other);
    let out = h.run(&s.build())?;
    assert_eq!(out.verdict, verdict::TX);
    other.snat_port = parse(&out.frame)?.tcp().sport;
    assert_ne!(other.snat_port, SNAT_MIN + 123);
    reasons_none(&h)
}
