//! The lab every case starts from, the connection model that says what
//! the program must write, the assertions, and the table runner.

use anyhow::{Result, ensure};
use lb_common::hash::{flow_hash, snat_port_candidate};
use lb_common::{
    Flow, FlowKey, IPPROTO_TCP, IPPROTO_UDP, ServiceInfo, backend_flags, direction, flow_state,
    local_addr_flags, service_flags,
};
use lb_tests::packet::*;
pub use lb_tests::xdp_addresses::*;
use lb_tests::xdp_harness::*;
use std::net::Ipv4Addr;

pub const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const FLOW_VPORT: u16 = 444;
pub const UDP_VPORT: u16 = 53;
pub const UDP_BPORT: u16 = 5353;

pub const TCP_SVC_ID: u32 = 1;
pub const UDP_SVC_ID: u32 = 2;
pub const FLOW_SVC_ID: u32 = 3;
/// Backend ids: 1..3 the neighbours on eth0, 4 no neighbour, 5 no route,
/// 6 behind eth1, 7 a row not in use; 11/12 UDP backends.
pub const BE_NO_NEIGH: u32 = 4;
pub const BE_NO_ROUTE: u32 = 5;
pub const BE_ETH1: u32 = 6;
pub const BE_NOT_IN_USE: u32 = 7;
pub const UDP_BE: u32 = 11;

pub const OK: u16 = backend_flags::IN_USE | backend_flags::PERSIST_OK;

pub fn tcp_service() -> ServiceInfo {
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

pub fn udp_service() -> ServiceInfo {
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

pub fn flow_service() -> ServiceInfo {
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
pub struct Backend {
    pub id: u32,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub mac: Mac,
}

pub fn tcp_backend(id: u32) -> Backend {
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

pub fn udp_backend() -> Backend {
    Backend {
        id: UDP_BE,
        ip: NEIGHBOURS[0].0,
        port: UDP_BPORT,
        mac: NEIGHBOURS[0].1,
    }
}

/// The standard lab: TCP service VIP:443 (SNAT 198.51.100.2, ring all
/// backend 1), UDP service VIP:53 (SNAT = VIP, ring all backend 11).
pub fn lab() -> Result<XdpHarness> {
    lab_with(TableSizes::default())
}

pub fn lab_with(sizes: TableSizes) -> Result<XdpHarness> {
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
pub struct Conn {
    pub proto: u8,
    pub client: Ipv4Addr,
    pub cport: u16,
    pub client_mac: Mac,
    pub vip: Ipv4Addr,
    pub vport: u16,
    pub snat: Ipv4Addr,
    pub snat_port: u16,
    pub backend: Backend,
    pub service_id: u32,
    /// Egress toward the backend, and the MAC we send from there.
    pub egress: u32,
    pub egress_mac: Mac,
    pub ingress: u32,
}

impl Conn {
    pub fn fwd_key(&self) -> FlowKey {
        key(self.client, self.vip, self.cport, self.vport, self.proto)
    }

    pub fn rev_key(&self) -> FlowKey {
        key(
            self.backend.ip,
            self.snat,
            self.backend.port,
            self.snat_port,
            self.proto,
        )
    }

    pub fn fwd_flow(&self, state: u8) -> Flow {
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

    pub fn rev_flow(&self, state: u8) -> Flow {
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
    pub fn pair(&self, state: u8) -> Vec<(FlowKey, Flow)> {
        let mut v = vec![
            (self.fwd_key(), self.fwd_flow(state)),
            (self.rev_key(), self.rev_flow(state)),
        ];
        v.sort_by_key(|(k, _)| (k.src_ip, k.dst_ip, k.src_port, k.dst_port, k.proto));
        v
    }

    /// A packet from the client, as it arrives.
    pub fn client_packet(&self, flags: u8) -> FrameSpec {
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
    pub fn backend_packet(&self, flags: u8) -> FrameSpec {
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
    pub fn toward_backend(&self, input: &FrameSpec) -> FrameSpec {
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
    pub fn toward_client(&self, input: &FrameSpec) -> FrameSpec {
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

pub fn key(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> FlowKey {
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
pub fn rewrite(
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
pub fn snat_candidate(
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
pub fn tcp_conn(h: &XdpHarness, client: Ipv4Addr, cport: u16, backend: Backend) -> Conn {
    tcp_conn_via(h.eth0, h.eth1, client, cport, backend)
}

/// [`tcp_conn`] before a lab exists, for the frames of a table row: the
/// interface indexes only go into flow entries, never into frames.
pub fn tcp_frames(client: Ipv4Addr, cport: u16, backend: Backend) -> Conn {
    tcp_conn_via(0, 0, client, cport, backend)
}

fn tcp_conn_via(eth0: u32, eth1: u32, client: Ipv4Addr, cport: u16, backend: Backend) -> Conn {
    let (egress, egress_mac) = if backend.id == BE_ETH1 {
        (eth1, LB_MAC1)
    } else {
        (eth0, LB_MAC)
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
        ingress: eth0,
    }
}

pub fn udp_conn(h: &XdpHarness) -> Conn {
    udp_conn_via(h.eth0)
}

/// [`udp_conn`] before a lab exists, for the frames of a table row.
pub fn udp_frames() -> Conn {
    udp_conn_via(0)
}

fn udp_conn_via(eth0: u32) -> Conn {
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
        egress: eth0,
        egress_mac: LB_MAC,
        ingress: eth0,
    }
}

pub fn syn(conn: &Conn) -> FrameSpec {
    let mut f = conn.client_packet(tcp_flags::SYN);
    let t = f.tcp_mut();
    t.seq = CLIENT_ISN;
    t.options = TcpSpec::syn_options();
    f
}

/// The backend's answer to [`syn`], with ISN `isn`.
pub fn syn_ack(conn: &Conn, isn: u32) -> FrameSpec {
    let mut f = conn.backend_packet(tcp_flags::SYN | tcp_flags::ACK);
    let t = f.tcp_mut();
    t.seq = isn;
    t.ack = CLIENT_ISN.wrapping_add(1);
    t.options = TcpSpec::syn_options();
    f
}

/// The client's third segment of the handshake, acknowledging `ack`.
pub fn handshake_ack(conn: &Conn, ack: u32) -> FrameSpec {
    let mut f = conn.client_packet(tcp_flags::ACK);
    f.tcp_mut().seq = CLIENT_ISN.wrapping_add(1);
    f.tcp_mut().ack = ack;
    f
}

/// The half-open pair once the SYN-ACK with `isn` passed: the client's entry
/// expects the ACK of it.
pub fn syn_acked_pair(conn: &Conn, isn: u32) -> Vec<(FlowKey, Flow)> {
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
pub fn open_connection(h: &XdpHarness, conn: &Conn) -> Result<()> {
    let s = syn(conn);
    expect_frame(h, &s, verdict::TX, &conn.toward_backend(&s))?;
    let sa = syn_ack(conn, BACKEND_ISN);
    expect_frame(h, &sa, verdict::TX, &conn.toward_client(&sa))?;
    let a = handshake_ack(conn, BACKEND_ISN.wrapping_add(1));
    expect_frame(h, &a, verdict::TX, &conn.toward_backend(&a))?;
    Ok(())
}

/// The segments of an orderly close of `conn`: the client's FIN, the
/// backend's FIN+ACK (acknowledging it), and the client's last ACK.
pub fn close_segments(conn: &Conn) -> [(bool, FrameSpec); 3] {
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

pub fn send_along(h: &XdpHarness, conn: &Conn, from_client: bool, f: &FrameSpec) -> Result<()> {
    let want = if from_client {
        conn.toward_backend(f)
    } else {
        conn.toward_client(f)
    };
    expect_frame(h, f, verdict::TX, &want)?;
    Ok(())
}

pub fn pair_states(h: &XdpHarness, conn: &Conn) -> Result<(u8, u8)> {
    Ok((
        h.flows.get(&conn.fwd_key(), 0)?.state,
        h.flows.get(&conn.rev_key(), 0)?.state,
    ))
}

/// A TCP segment to the VIP:443 from the client.
pub fn to_vip_tcp() -> FrameSpec {
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

pub fn to_vip_udp() -> FrameSpec {
    FrameSpec::udp(CLIENT_MAC, LB_MAC, CLIENT, 5000, VIP, UDP_VPORT, b"q")
}

// --------------------------------------------------------------- assertions

/// Runs `input` and asserts the verdict, that the frame that comes back
/// equals `expected` field by field, and that its checksums are right.
pub fn expect_frame(
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

pub fn check_frame(r: &RunResult, verdict: u32, expected: &FrameSpec) -> Result<()> {
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
pub fn expect_verdict_only(
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
pub fn expect_pass_untouched(h: &XdpHarness, frame: &[u8], reason: u32) -> Result<()> {
    let r = expect_verdict_only(h, frame, verdict::PASS, reason)?;
    ensure!(
        r.frame == frame,
        "a passed frame was modified:\n in:  {frame:02x?}\n out: {:02x?}",
        r.frame
    );
    Ok(())
}

pub fn without_times(mut v: Vec<(FlowKey, Flow)>) -> Vec<(FlowKey, Flow)> {
    for (_, f) in &mut v {
        f.last_seen_ns = 0;
    }
    v
}

/// Every entry's last_seen must be "now" (within 2 s of the coarse clock).
pub fn assert_fresh(v: &[(FlowKey, Flow)]) -> Result<()> {
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

pub fn reasons_none(h: &XdpHarness) -> Result<()> {
    let r = h.reasons()?;
    ensure!(
        r.iter().all(|n| *n == 0),
        "forwarded packets must count no reason; counted {}",
        describe_reasons(&r)
    );
    Ok(())
}

pub fn stats(
    to_backend: (u64, u64),
    to_client: (u64, u64),
    new_flows: u64,
) -> lb_common::TrafficStats {
    lb_common::TrafficStats {
        packets_to_backend: to_backend.0,
        bytes_to_backend: to_backend.1,
        packets_to_client: to_client.0,
        bytes_to_client: to_client.1,
        new_flows,
        rst_no_backend: 0,
    }
}

pub fn expect_stats(
    h: &XdpHarness,
    svc: u32,
    be: u32,
    want: lb_common::TrafficStats,
) -> Result<()> {
    let s = h.service_stats(svc)?;
    ensure!(s == want, "service {svc} stats {s:?}, expected {want:?}");
    let b = h.backend_stats(be)?;
    ensure!(b == want, "backend {be} stats {b:?}, expected {want:?}");
    Ok(())
}

pub fn insert_pair(h: &mut XdpHarness, conn: &Conn, state: u8) -> Result<()> {
    let now = now_coarse_ns();
    for (k, mut f) in conn.pair(state) {
        f.last_seen_ns = now;
        h.flows.insert(k, f, 0)?;
    }
    Ok(())
}

// ------------------------------------------------------------------- tables

/// One frame of a table row and what the program must make of it.
pub struct Step {
    pub frame: Vec<u8>,
    pub verdict: u32,
    pub reason: u32,
}

impl Step {
    /// Dropped with one count of `reason`, no other map changed.
    pub fn dropped(frame: Vec<u8>, reason: u32) -> Step {
        Step {
            frame,
            verdict: verdict::DROP,
            reason,
        }
    }

    /// Handed to the host byte for byte, one count of `reason`, no other
    /// map changed.
    pub fn passed(frame: Vec<u8>, reason: u32) -> Step {
        Step {
            frame,
            verdict: verdict::PASS,
            reason,
        }
    }
}

/// A case made of frames that each get one verdict and one reason: a
/// fresh standard lab, `setup` on it, then the steps in order on that lab.
pub struct Row {
    /// The case's name, as the report of a failing row shows it.
    pub name: &'static str,
    pub setup: fn(&mut XdpHarness) -> Result<()>,
    pub steps: Vec<Step>,
}

impl Row {
    pub fn new(name: &'static str, steps: Vec<Step>) -> Row {
        Row {
            name,
            setup: |_| Ok(()),
            steps,
        }
    }

    pub fn with_setup(
        name: &'static str,
        setup: fn(&mut XdpHarness) -> Result<()>,
        steps: Vec<Step>,
    ) -> Row {
        Row { name, setup, steps }
    }

    fn run(&self) -> Result<()> {
        let mut h = lab()?;
        (self.setup)(&mut h)?;
        for (index, step) in self.steps.iter().enumerate() {
            let checked = if step.verdict == verdict::PASS {
                expect_pass_untouched(&h, &step.frame, step.reason)
            } else {
                expect_verdict_only(&h, &step.frame, step.verdict, step.reason).map(|_| ())
            };
            checked
                .map_err(|e| e.context(format!("frame {} of {}", index + 1, self.steps.len())))?;
        }
        Ok(())
    }
}

/// Runs every row, each on its own lab, and fails naming every row that
/// failed, so one run shows them all.
pub fn run_rows(rows: &[Row]) {
    let failures = failed_rows(rows.iter().map(|row| (row.name, outcome_of(|| row.run()))));
    assert!(failures.is_empty(), "{}", report(rows.len(), &failures));
}

/// The failing rows of a table run, by name: `(name, outcome)` per row.
pub fn failed_rows(outcomes: impl IntoIterator<Item = (&'static str, Result<()>)>) -> Vec<String> {
    outcomes
        .into_iter()
        .filter_map(|(name, outcome)| outcome.err().map(|e| format!("{name}: {e:#}")))
        .collect()
}

/// What a table run with failures prints.
pub fn report(rows: usize, failures: &[String]) -> String {
    format!(
        "{} of {rows} rows failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    )
}

/// Panics listing every failed row of a table whose rows are not [`Row`]s
/// (`(name, outcome)` per row).
pub fn assert_rows_pass(outcomes: Vec<(&'static str, Result<()>)>) {
    let rows = outcomes.len();
    let failures = failed_rows(outcomes);
    assert!(failures.is_empty(), "{}", report(rows, &failures));
}

/// What one row came to; a panic (an `assert_eq!` in a helper) is its
/// failure, so the rows after it still run.
pub fn outcome_of(row: impl FnOnce() -> Result<()>) -> Result<()> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(row)) {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic without a message");
            Err(anyhow::anyhow!("panicked: {message}"))
        }
    }
}
