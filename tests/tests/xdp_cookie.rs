//! SYN cookies in the XDP program `lb` (docs/architecture.md, "SYN
//! cookies"), through BPF_PROG_TEST_RUN on crafted frames: the SYN-ACK the
//! program answers with, the ACK that proves a cookie, the backend
//! handshake the program completes itself, and the sequence translation of
//! the connection that follows.
//!
//! The cookie itself is the kernel's secret: a test cannot compute it, so a
//! SYN-ACK's cookie is proven by the ACK that carries it back being
//! accepted, and a wrong one by that ACK being refused.
//!
//! Needs root: `cargo test -p lb-tests --test xdp_cookie -- --test-threads=1`.

use anyhow::{Context, Result, ensure};
use lb_common::hash::{flow_hash, snat_port_candidate};
use lb_common::{
    Flow, FlowKey, IPPROTO_TCP, ServiceInfo, Settings, backend_flags, direction, flow_state,
    local_addr_flags, reason, service_flags, settings_flags,
};
use lb_tests::packet::*;
use lb_tests::xdp_addresses::{
    BACKEND_ISN, BPORT, CLIENT, CLIENT_ISN, CLIENT_MAC, CPORT, SNAT, SNAT_MAX, SNAT_MIN, VIP, VPORT,
};
use lb_tests::xdp_harness::*;
use std::net::Ipv4Addr;

const SVC_ID: u32 = 1;
const BE_ID: u32 = 1;
/// The client's window in its ACK: the SYN we send the backend carries it.
const CLIENT_WINDOW: u16 = 29200;

fn service() -> ServiceInfo {
    ServiceInfo {
        id: SVC_ID,
        flags: service_flags::ACTIVE,
        snat_ip: ip_be(SNAT),
        ring_offset: 0,
        ring_size: RING_SIZE,
        _pad: 0,
        persist_timeout_ns: 0,
    }
}

fn backend() -> (Ipv4Addr, Mac) {
    NEIGHBOURS[0]
}

fn settings(flags: u32, rate: u32, max: u16) -> Settings {
    Settings {
        snat_port_min: SNAT_MIN,
        snat_port_max: max,
        flags,
        syn_cookie_rate: rate,
        ..Default::default()
    }
}

/// One TCP service on VIP:443, every slot backend 1, with `s` as settings.
fn lab(s: Settings) -> Result<XdpHarness> {
    lab_sized(s, TableSizes::default())
}

fn lab_sized(s: Settings, sizes: TableSizes) -> Result<XdpHarness> {
    let mut h = XdpHarness::with_sizes(sizes)?;
    h.settings.set(0, s, 0)?;
    h.add_local_addr(VIP, local_addr_flags::VIP | local_addr_flags::SNAT)?;
    h.add_local_addr(SNAT, local_addr_flags::SNAT)?;
    let (ip, _) = backend();
    h.set_backend(
        BE_ID,
        ip,
        BPORT,
        backend_flags::IN_USE | backend_flags::PERSIST_OK,
    )?;
    h.set_service(VIP, VPORT, IPPROTO_TCP, service())?;
    h.fill_ring(&service(), &[BE_ID])?;
    Ok(h)
}

fn always() -> Result<XdpHarness> {
    lab(settings(settings_flags::SYN_COOKIES_ALWAYS, 0, SNAT_MAX))
}

fn key(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        src_ip: ip_be(src),
        dst_ip: ip_be(dst),
        src_port: port_be(sport),
        dst_port: port_be(dport),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    }
}

/// The SNAT port the client's connection gets (the first candidate).
fn snat_port() -> u16 {
    let h = flow_hash(
        ip_be(CLIENT),
        ip_be(VIP),
        port_be(CPORT),
        port_be(VPORT),
        IPPROTO_TCP,
    );
    snat_port_candidate(h, 0, SNAT_MIN, SNAT_MAX)
}

fn client(flags: u8) -> FrameSpec {
    FrameSpec::tcp(CLIENT_MAC, LB_MAC, CLIENT, CPORT, VIP, VPORT, flags)
}

fn from_backend(flags: u8) -> FrameSpec {
    let (ip, mac) = backend();
    let mut f = FrameSpec::tcp(mac, LB_MAC, ip, BPORT, SNAT, snat_port(), flags);
    f.ip_mut().ttl = 64;
    f
}

fn syn(options: Vec<u8>) -> FrameSpec {
    let mut f = client(tcp_flags::SYN);
    f.tcp_mut().seq = CLIENT_ISN;
    f.tcp_mut().options = options;
    f
}

/// The client's third segment, acknowledging `cookie`.
fn cookie_ack(cookie: u32) -> FrameSpec {
    let mut f = client(tcp_flags::ACK);
    f.tcp_mut().seq = CLIENT_ISN.wrapping_add(1);
    f.tcp_mut().ack = cookie.wrapping_add(1);
    f.tcp_mut().window = CLIENT_WINDOW;
    f.pad_to = 60;
    f
}

/// A segment the program originates: TTL 64, id 0, DF, no TOS.
fn originated(
    src_mac: Mac,
    dst_mac: Mac,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    tcp: (u32, u32, u8, u16),
    mss: Option<u16>,
) -> FrameSpec {
    let mut ip = Ipv4Spec::new(src.0, dst.0, PROTO_TCP);
    ip.tos = 0;
    ip.id = 0;
    ip.flags_frag = IP_DF;
    ip.ttl = 64;
    let (seq, ack, flags, window) = tcp;
    let t = TcpSpec {
        sport: src.1,
        dport: dst.1,
        seq,
        ack,
        flags,
        window,
        urg: 0,
        options: mss.map_or(vec![], |m| {
            let b = m.to_be_bytes();
            vec![2, 4, b[0], b[1]]
        }),
        payload: vec![],
        doff: None,
    };
    FrameSpec::ipv4(src_mac, dst_mac, ip, L4Spec::Tcp(t))
}

/// The SYN-ACK that must answer [`syn`], whatever its cookie (`seq`).
fn cookie_syn_ack(seq: u32, mss: u16) -> FrameSpec {
    originated(
        LB_MAC,
        CLIENT_MAC,
        (VIP, VPORT),
        (CLIENT, CPORT),
        (
            seq,
            CLIENT_ISN.wrapping_add(1),
            tcp_flags::SYN | tcp_flags::ACK,
            65535,
        ),
        Some(mss),
    )
}

/// The SYN the program sends the backend for the client's cookie ACK.
fn backend_syn(mss: u16) -> FrameSpec {
    let (ip, mac) = backend();
    originated(
        LB_MAC,
        mac,
        (SNAT, snat_port()),
        (ip, BPORT),
        (CLIENT_ISN, 0, tcp_flags::SYN, CLIENT_WINDOW),
        Some(mss),
    )
}

fn check_frame(r: &RunResult, verdict: u32, expected: &FrameSpec) -> Result<()> {
    ensure!(
        r.verdict == verdict,
        "verdict {}, expected {}",
        verdict::name(r.verdict),
        verdict::name(verdict)
    );
    let got = parse(&r.frame)?;
    let want = parse(&expected.build())?;
    ensure!(
        got.without_checksums() == want.without_checksums(),
        "frame differs\n got:      {got:?}\n expected: {want:?}"
    );
    verify_checksums(&r.frame).context("checksums of the frame sent")
}

/// Runs `f` and checks the frame; returns it parsed.
fn expect(h: &XdpHarness, f: &FrameSpec, verdict: u32, want: &FrameSpec) -> Result<ParsedFrame> {
    let r = h.run(&f.build())?;
    check_frame(&r, verdict, want)?;
    parse(&r.frame)
}

/// Sends the SYN and returns the cookie of the SYN-ACK, checking the whole
/// frame and that nothing but `tx_syn_cookie` moved.
fn cookie_for(h: &XdpHarness, options: Vec<u8>, mss: u16) -> Result<u32> {
    let before = h.snapshot()?;
    let r = h.run(&syn(options).build())?;
    let got = parse(&r.frame)?;
    let cookie = got.tcp().seq;
    check_frame(&r, verdict::TX, &cookie_syn_ack(cookie, mss))?;
    let mut want = before;
    want.reasons[reason::TX_SYN_COOKIE as usize] += 1;
    let after = h.snapshot()?;
    ensure!(
        after == want,
        "a cookie SYN-ACK must change nothing but tx_syn_cookie:\n after: {after:?}\n want:  {want:?}"
    );
    Ok(cookie)
}

fn reasons_are(h: &XdpHarness, want: &[(u32, u64)]) -> Result<()> {
    let mut v = vec![0u64; reason::COUNT as usize];
    for (r, n) in want {
        v[*r as usize] = *n;
    }
    let got = h.reasons()?;
    ensure!(
        got == v,
        "reasons {}, expected {}",
        describe_reasons(&got),
        describe_reasons(&v)
    );
    Ok(())
}

fn mss_option(mss: u16) -> Vec<u8> {
    let b = mss.to_be_bytes();
    vec![2, 4, b[0], b[1]]
}

// ------------------------------------------------------------------ cases

#[test]
fn syn_gets_a_cookie_syn_ack_and_costs_no_entry_and_no_port() -> Result<()> {
    let h = always()?;
    let cookie = cookie_for(&h, TcpSpec::syn_options(), 1460)?;
    ensure!(h.half_open_all()?.is_empty() && h.flows_all()?.is_empty());
    // The same SYN again (a retransmission) gets the same cookie.
    ensure!(cookie_for(&h, TcpSpec::syn_options(), 1460)? == cookie);
    Ok(())
}

/// The MSS option of the SYN-ACK is the largest of the kernel's cookie MSS
/// values (536, 1300, 1440, 1460) not above the client's, and the SYN to the
/// backend carries the same one, recovered from the cookie.
#[test]
fn the_cookie_mss_reaches_the_client_and_the_backend() -> Result<()> {
    let table: [(&str, Vec<u8>, u16); 6] = [
        ("MSS 1460, SACK, wscale", TcpSpec::syn_options(), 1460),
        ("MSS 1450", mss_option(1450), 1440),
        ("MSS 1400", mss_option(1400), 1300),
        ("MSS 1000", mss_option(1000), 536),
        ("MSS 8960 (jumbo)", mss_option(8960), 1460),
        ("no options", vec![], 536),
    ];
    for (what, options, mss) in table {
        let h = always()?;
        let cookie = cookie_for(&h, options, mss).with_context(|| what.to_string())?;
        expect(&h, &cookie_ack(cookie), verdict::TX, &backend_syn(mss))
            .with_context(|| format!("{what}: the SYN to the backend"))?;
    }
    Ok(())
}

#[test]
fn a_wrong_cookie_is_answered_with_a_rst_and_opens_nothing() -> Result<()> {
    // As the kernel does for an ACK to a listener that carries no valid
    // cookie (tcp_v4_do_rcv: reset), and as before cookies for any segment
    // matching nothing: RST with the ACK number as sequence number.
    let h = always()?;
    let cookie = cookie_for(&h, TcpSpec::syn_options(), 1460)?;
    let mut wrong_ack = cookie_ack(cookie.wrapping_add(1));
    wrong_ack.pad_to = 0;
    // The kernel's cookie adds the client's ISN to its MSS index, so a
    // sequence number a few above the right one reads as a valid cookie of
    // a smaller MSS (the kernel accepts it too); far off, it is refused.
    let mut wrong_seq = cookie_ack(cookie);
    wrong_seq.tcp_mut().seq = CLIENT_ISN.wrapping_add(0x1000);
    wrong_seq.pad_to = 0;
    for (what, f, ack) in [
        ("wrong ACK number", wrong_ack, cookie.wrapping_add(2)),
        ("wrong sequence number", wrong_seq, cookie.wrapping_add(1)),
    ] {
        let want = originated(
            LB_MAC,
            CLIENT_MAC,
            (VIP, VPORT),
            (CLIENT, CPORT),
            (ack, 0, tcp_flags::RST, 0),
            None,
        );
        expect(&h, &f, verdict::TX, &want).with_context(|| what.to_string())?;
        ensure!(
            h.half_open_all()?.is_empty() && h.flows_all()?.is_empty(),
            "{what}"
        );
    }
    reasons_are(
        &h,
        &[(reason::TX_SYN_COOKIE, 1), (reason::TX_RST_NO_FLOW, 2)],
    )
}

#[test]
fn never_mode_sends_and_accepts_no_cookie() -> Result<()> {
    // A two-port range, both ports held: with cookies the SYN would get one.
    let mut h = lab(settings(settings_flags::SYN_COOKIES_NEVER, 1, SNAT_MIN + 1))?;
    let (bip, _) = backend();
    let mut other = Flow {
        nat_src_ip: ip_be(VIP),
        nat_dst_ip: ip_be(Ipv4Addr::new(192, 0, 2, 1)),
        direction: direction::TO_CLIENT,
        state: flow_state::ESTABLISHED,
        ..Default::default()
    };
    other.last_seen_ns = now_coarse_ns();
    for p in [SNAT_MIN, SNAT_MIN + 1] {
        h.flows.insert(key(bip, SNAT, BPORT, p), other, 0)?;
    }
    let r = h.run(&syn(TcpSpec::syn_options()).build())?;
    ensure!(r.verdict == verdict::DROP);
    // A cookie made while cookies were on is refused once they are off.
    let mut h2 = always()?;
    let cookie = cookie_for(&h2, TcpSpec::syn_options(), 1460)?;
    h2.settings.set(
        0,
        settings(settings_flags::SYN_COOKIES_NEVER, 0, SNAT_MAX),
        0,
    )?;
    let r = h2.run(&cookie_ack(cookie).build())?;
    ensure!(r.verdict == verdict::TX && parse(&r.frame)?.tcp().flags == tcp_flags::RST);
    reasons_are(&h, &[(reason::DROP_SNAT_EXHAUSTED, 1)])?;
    reasons_are(
        &h2,
        &[(reason::TX_SYN_COOKIE, 1), (reason::TX_RST_NO_FLOW, 1)],
    )
}

#[test]
fn auto_mode_answers_with_cookies_when_no_snat_port_is_free() -> Result<()> {
    let mut h = lab(settings(0, 0, SNAT_MIN + 1))?;
    let (bip, _) = backend();
    let other = Flow {
        nat_src_ip: ip_be(VIP),
        nat_dst_ip: ip_be(Ipv4Addr::new(192, 0, 2, 1)),
        direction: direction::TO_CLIENT,
        state: flow_state::ESTABLISHED,
        last_seen_ns: now_coarse_ns(),
        ..Default::default()
    };
    for p in [SNAT_MIN, SNAT_MIN + 1] {
        h.flows.insert(key(bip, SNAT, BPORT, p), other, 0)?;
    }
    cookie_for(&h, TcpSpec::syn_options(), 1460)?;
    ensure!(h.half_open_all()?.is_empty(), "no half-open entry, no port");
    reasons_are(&h, &[(reason::TX_SYN_COOKIE, 1)])
}

#[test]
fn auto_mode_answers_with_cookies_when_half_open_is_full() -> Result<()> {
    // Two handshakes (two entries each) fill a table of four: a third SYN
    // evicts none of them and costs nothing, it gets a cookie.
    let h = lab_sized(
        settings(0, 0, SNAT_MAX),
        TableSizes {
            half_open: 4,
            ..TableSizes::default()
        },
    )?;
    for cport in [5001, 5002] {
        let mut f = syn(TcpSpec::syn_options());
        f.tcp_mut().sport = cport;
        let r = h.run(&f.build())?;
        ensure!(r.verdict == verdict::TX, "SYN {cport} was not forwarded");
    }
    let before = h.half_open_all()?;
    ensure!(before.len() == 4, "{} half-open entries", before.len());
    cookie_for(&h, TcpSpec::syn_options(), 1460)?;
    ensure!(
        h.half_open_all()? == before,
        "the cookie SYN changed the handshakes in progress"
    );
    reasons_are(&h, &[(reason::TX_SYN_COOKIE, 1)])
}

/// Pins this thread (and the threads the harness spawns from it) to one
/// CPU: the SYN rate is counted per CPU.
fn pin_to_one_cpu() -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity
    // only touch it and this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let cpu = libc::sched_getcpu().max(0) as usize;
        libc::CPU_SET(cpu, &mut set);
        ensure!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[test]
fn auto_mode_answers_with_cookies_over_the_syn_rate() -> Result<()> {
    pin_to_one_cpu()?;
    let h = lab(settings(0, 3, SNAT_MAX))?;
    // Three SYNs from other clients open handshakes as usual (the window
    // starts with the first); the fourth, over the rate, gets a cookie.
    for last in 100..103u8 {
        let mut f = syn(TcpSpec::syn_options());
        f.ip_mut().src = Ipv4Addr::new(192, 0, 2, last);
        let r = h.run(&f.build())?;
        ensure!(
            r.verdict == verdict::TX && parse(&r.frame)?.ipv4().dst == backend().0,
            "SYN from .{last} must go to the backend"
        );
    }
    ensure!(h.half_open_all()?.len() == 6);
    cookie_for(&h, TcpSpec::syn_options(), 1460)?;
    ensure!(
        h.half_open_all()?.len() == 6,
        "the cookie SYN adds no entry"
    );
    reasons_are(&h, &[(reason::TX_SYN_COOKIE, 1)])
}

/// The two entries of the cookie connection, with `offset` in both.
fn cookie_pair(h: &XdpHarness, state: u8, offset: u32) -> Vec<(FlowKey, Flow)> {
    let (bip, bmac) = backend();
    let fwd = Flow {
        nat_src_ip: ip_be(SNAT),
        nat_dst_ip: ip_be(bip),
        nat_src_port: port_be(snat_port()),
        nat_dst_port: port_be(BPORT),
        dst_mac: bmac,
        src_mac: LB_MAC,
        ifindex: h.eth0,
        backend_id: BE_ID,
        service_id: SVC_ID,
        direction: direction::TO_BACKEND,
        state,
        fin: 0,
        _pad: 0,
        expect_ack: 0,
        seq_offset: offset,
        last_seen_ns: 0,
    };
    let rev = Flow {
        nat_src_ip: ip_be(VIP),
        nat_dst_ip: ip_be(CLIENT),
        nat_src_port: port_be(VPORT),
        nat_dst_port: port_be(CPORT),
        dst_mac: CLIENT_MAC,
        src_mac: LB_MAC,
        direction: direction::TO_CLIENT,
        ..fwd
    };
    let mut v = vec![
        (key(CLIENT, VIP, CPORT, VPORT), fwd),
        (key(bip, SNAT, BPORT, snat_port()), rev),
    ];
    v.sort_by_key(|(k, _)| (k.src_ip, k.dst_ip, k.src_port, k.dst_port, k.proto));
    v
}

fn without_times(mut v: Vec<(FlowKey, Flow)>) -> Vec<(FlowKey, Flow)> {
    for (_, f) in &mut v {
        f.last_seen_ns = 0;
    }
    v
}

/// SYN, cookie SYN-ACK, the client's ACK (SYN to the backend), the
/// backend's SYN-ACK (ACK to the backend): returns the cookie.
fn open_cookie_connection(h: &XdpHarness) -> Result<u32> {
    let cookie = cookie_for(h, TcpSpec::syn_options(), 1460)?;
    expect(h, &cookie_ack(cookie), verdict::TX, &backend_syn(1460))
        .context("the SYN to the backend")?;
    // Half-open: the client entry keeps our ISN and the client's window,
    // the backend entry the ACK number the backend's SYN-ACK must carry.
    let mut want = cookie_pair(h, flow_state::SYN_COOKIE, 0);
    for (_, f) in &mut want {
        if f.direction == direction::TO_BACKEND {
            f.expect_ack = cookie;
            f.seq_offset = CLIENT_WINDOW as u32;
        } else {
            f.expect_ack = CLIENT_ISN.wrapping_add(1);
        }
    }
    ensure!(
        without_times(h.half_open_all()?) == want,
        "half_open after the cookie ACK:\n {:?}\n want {want:?}",
        h.half_open_all()?
    );
    ensure!(h.flows_all()?.is_empty());

    // Data the client sends before the backend answered is dropped (it
    // retransmits), as is a copy of its ACK.
    let mut early = cookie_ack(cookie);
    early.tcp_mut().flags |= tcp_flags::PSH;
    early.tcp_mut().payload = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    ensure!(h.run(&early.build())?.verdict == verdict::DROP);
    ensure!(h.run(&cookie_ack(cookie).build())?.verdict == verdict::DROP);

    let mut sa = from_backend(tcp_flags::SYN | tcp_flags::ACK);
    sa.tcp_mut().seq = BACKEND_ISN;
    sa.tcp_mut().ack = CLIENT_ISN.wrapping_add(1);
    sa.tcp_mut().options = TcpSpec::syn_options();
    let (bip, bmac) = backend();
    let ack = originated(
        LB_MAC,
        bmac,
        (SNAT, snat_port()),
        (bip, BPORT),
        (
            CLIENT_ISN.wrapping_add(1),
            BACKEND_ISN.wrapping_add(1),
            tcp_flags::ACK,
            CLIENT_WINDOW,
        ),
        None,
    );
    expect(h, &sa, verdict::TX, &ack).context("the ACK that completes the backend handshake")?;
    ensure!(h.half_open_all()?.is_empty(), "the pair left half_open");
    let offset = BACKEND_ISN.wrapping_sub(cookie);
    ensure!(
        without_times(h.flows_all()?) == cookie_pair(h, flow_state::ESTABLISHED, offset),
        "flows after the backend handshake: {:?}",
        h.flows_all()?
    );
    reasons_are(
        h,
        &[
            (reason::TX_SYN_COOKIE, 1),
            (reason::SYN_COOKIE_OK, 1),
            (reason::DROP_HANDSHAKE_ACK, 2),
        ],
    )?;
    Ok(cookie)
}

/// `input` relayed: new MACs, addresses, ports, TTL - 1, and sequence
/// numbers `seq`, `ack`.
#[allow(clippy::too_many_arguments)]
fn relayed(
    input: &FrameSpec,
    macs: (Mac, Mac),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
) -> FrameSpec {
    let mut f = input.clone();
    f.src_mac = macs.0;
    f.dst_mac = macs.1;
    f.ip_mut().src = src.0;
    f.ip_mut().dst = dst.0;
    f.ip_mut().ttl -= 1;
    let t = f.tcp_mut();
    t.sport = src.1;
    t.dport = dst.1;
    t.seq = seq;
    t.ack = ack;
    f
}

fn to_backend(input: &FrameSpec, seq: u32, ack: u32) -> FrameSpec {
    let (bip, bmac) = backend();
    relayed(
        input,
        (LB_MAC, bmac),
        (SNAT, snat_port()),
        (bip, BPORT),
        seq,
        ack,
    )
}

fn to_client(input: &FrameSpec, seq: u32, ack: u32) -> FrameSpec {
    relayed(
        input,
        (LB_MAC, CLIENT_MAC),
        (VIP, VPORT),
        (CLIENT, CPORT),
        seq,
        ack,
    )
}

#[test]
fn full_round_trip_translates_sequence_numbers_both_ways() -> Result<()> {
    let h = always()?;
    let cookie = open_cookie_connection(&h)?;
    let request = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n".to_vec();
    let c_seq = CLIENT_ISN.wrapping_add(1);
    // Client to backend: the acknowledgement moves into the backend's space.
    let mut req = client(tcp_flags::ACK | tcp_flags::PSH);
    req.tcp_mut().seq = c_seq;
    req.tcp_mut().ack = cookie.wrapping_add(1);
    req.tcp_mut().payload = request.clone();
    expect(
        &h,
        &req,
        verdict::TX,
        &to_backend(&req, c_seq, BACKEND_ISN.wrapping_add(1)),
    )?;
    // Backend to client: the sequence number moves into ours.
    let c_next = c_seq.wrapping_add(request.len() as u32);
    let mut resp = from_backend(tcp_flags::ACK | tcp_flags::PSH);
    resp.tcp_mut().seq = BACKEND_ISN.wrapping_add(1);
    resp.tcp_mut().ack = c_next;
    resp.tcp_mut().payload = vec![0xa5; 700];
    expect(
        &h,
        &resp,
        verdict::TX,
        &to_client(&resp, cookie.wrapping_add(1), c_next),
    )?;
    // Wrapping around 2^32 in the middle of a connection changes nothing.
    let mut late = from_backend(tcp_flags::ACK);
    late.tcp_mut().seq = cookie
        .wrapping_sub(5)
        .wrapping_add(BACKEND_ISN.wrapping_sub(cookie));
    late.tcp_mut().ack = c_next;
    expect(
        &h,
        &late,
        verdict::TX,
        &to_client(&late, cookie.wrapping_sub(5), c_next),
    )?;
    let stats = h.service_stats(SVC_ID)?;
    ensure!(
        stats.new_flows == 1 && stats.packets_to_backend == 2 && stats.packets_to_client == 2,
        "service stats {stats:?}: the cookie SYN counts as the new flow's first packet"
    );
    Ok(())
}

#[test]
fn fin_close_is_tracked_on_a_cookie_connection() -> Result<()> {
    let h = always()?;
    let cookie = open_cookie_connection(&h)?;
    let offset = BACKEND_ISN.wrapping_sub(cookie);
    let (c_seq, b_seq) = (CLIENT_ISN.wrapping_add(1), BACKEND_ISN.wrapping_add(1));
    // The backend closes first: FIN with its sequence number.
    let mut bfin = from_backend(tcp_flags::FIN | tcp_flags::ACK);
    bfin.tcp_mut().seq = b_seq;
    bfin.tcp_mut().ack = c_seq;
    expect(
        &h,
        &bfin,
        verdict::TX,
        &to_client(&bfin, cookie.wrapping_add(1), c_seq),
    )?;
    // The client acknowledges it in our space, and closes too.
    let mut cfin = client(tcp_flags::FIN | tcp_flags::ACK);
    cfin.tcp_mut().seq = c_seq;
    cfin.tcp_mut().ack = cookie.wrapping_add(2);
    expect(
        &h,
        &cfin,
        verdict::TX,
        &to_backend(&cfin, c_seq, b_seq.wrapping_add(1)),
    )?;
    let states: Vec<u8> = h.flows_all()?.iter().map(|(_, f)| f.state).collect();
    ensure!(
        states == [flow_state::CLOSING, flow_state::CLOSING],
        "after both FINs, one acknowledged: {states:?}"
    );
    // The backend's last ACK closes the pair.
    let mut last = from_backend(tcp_flags::ACK);
    last.tcp_mut().seq = b_seq.wrapping_add(1);
    last.tcp_mut().ack = c_seq.wrapping_add(1);
    expect(
        &h,
        &last,
        verdict::TX,
        &to_client(&last, cookie.wrapping_add(2), c_seq.wrapping_add(1)),
    )?;
    let flows = h.flows_all()?;
    ensure!(
        flows
            .iter()
            .all(|(_, f)| f.state == flow_state::CLOSED && f.seq_offset == offset),
        "FIN both ways, both acknowledged: CLOSED, offset kept: {flows:?}"
    );
    Ok(())
}

#[test]
fn rst_closes_a_cookie_connection_and_a_new_syn_drops_the_offset() -> Result<()> {
    let h = always()?;
    let cookie = open_cookie_connection(&h)?;
    let mut rst = client(tcp_flags::RST | tcp_flags::ACK);
    rst.tcp_mut().seq = CLIENT_ISN.wrapping_add(1);
    rst.tcp_mut().ack = cookie.wrapping_add(1);
    expect(
        &h,
        &rst,
        verdict::TX,
        &to_backend(
            &rst,
            CLIENT_ISN.wrapping_add(1),
            BACKEND_ISN.wrapping_add(1),
        ),
    )?;
    ensure!(
        h.flows_all()?
            .iter()
            .all(|(_, f)| f.state == flow_state::CLOSED),
        "RST closes the pair"
    );
    // The client reuses the tuple: its new SYN goes straight to the
    // backend along the pair, which is no longer ours to translate.
    let mut again = syn(TcpSpec::syn_options());
    again.tcp_mut().seq = 0x5555_0000;
    expect(&h, &again, verdict::TX, &to_backend(&again, 0x5555_0000, 0))?;
    ensure!(
        without_times(h.flows_all()?) == cookie_pair(&h, flow_state::ESTABLISHED, 0),
        "the reopened pair: {:?}",
        h.flows_all()?
    );
    Ok(())
}

#[test]
fn icmp_errors_on_a_cookie_connection_quote_the_receivers_sequence_numbers() -> Result<()> {
    let h = always()?;
    let cookie = open_cookie_connection(&h)?;
    let (bip, bmac) = backend();
    // A router on the client's side cannot take a segment we sent the
    // client (our sequence space): the backend must see its own number.
    let mut sent = to_client(
        &from_backend(tcp_flags::ACK | tcp_flags::PSH),
        cookie.wrapping_add(1),
        CLIENT_ISN.wrapping_add(1),
    );
    sent.tcp_mut().payload = vec![1; 1500];
    let Payload::Ipv4(ip, l4) = &sent.payload else {
        unreachable!()
    };
    let q = quote(ip, l4, 28);
    let mut icmp = FrameSpec::icmp(
        CLIENT_MAC,
        LB_MAC,
        Ipv4Addr::new(192, 0, 2, 1),
        VIP,
        IcmpSpec::frag_needed(1400, q.clone()),
    );
    icmp.ip_mut().ttl = 250;
    let mut inner = rewrite_quote(&q, bip, SNAT, BPORT, snat_port())?;
    inner[24..28].copy_from_slice(&BACKEND_ISN.wrapping_add(1).to_be_bytes());
    let mut want = icmp.clone();
    if let Payload::Ipv4(_, L4Spec::Icmp(i)) = &mut want.payload {
        i.body = inner;
    }
    want.ip_mut().ttl -= 1;
    want.src_mac = LB_MAC;
    want.dst_mac = bmac;
    want.ip_mut().src = SNAT;
    want.ip_mut().dst = bip;
    let r = h.run(&icmp.build())?;
    check_frame(&r, verdict::TX, &want)?;
    // The other way the quote is in the client's space already.
    let mut toward_backend = to_backend(
        &client(tcp_flags::ACK),
        CLIENT_ISN.wrapping_add(1),
        BACKEND_ISN.wrapping_add(1),
    );
    toward_backend.tcp_mut().payload = vec![2; 1500];
    let Payload::Ipv4(ip, l4) = &toward_backend.payload else {
        unreachable!()
    };
    let q = quote(ip, l4, 28);
    let mut icmp = FrameSpec::icmp(
        bmac,
        LB_MAC,
        bip,
        SNAT,
        IcmpSpec::frag_needed(1400, q.clone()),
    );
    icmp.ip_mut().ttl = 250;
    let inner = rewrite_quote(&q, CLIENT, VIP, CPORT, VPORT)?;
    let mut want = icmp.clone();
    if let Payload::Ipv4(_, L4Spec::Icmp(i)) = &mut want.payload {
        i.body = inner;
    }
    want.ip_mut().ttl -= 1;
    want.src_mac = LB_MAC;
    want.dst_mac = CLIENT_MAC;
    want.ip_mut().src = VIP;
    want.ip_mut().dst = CLIENT;
    let r = h.run(&icmp.build())?;
    check_frame(&r, verdict::TX, &want)
}

#[test]
fn a_backend_refusing_the_cookie_connection_resets_the_client() -> Result<()> {
    let h = always()?;
    let cookie = cookie_for(&h, TcpSpec::syn_options(), 1460)?;
    expect(&h, &cookie_ack(cookie), verdict::TX, &backend_syn(1460))?;
    // Answers that are not for our SYN (another ACK number: what a blind
    // spoofer sends) are dropped, and the handshake waits.
    let mut sa = from_backend(tcp_flags::SYN | tcp_flags::ACK);
    sa.tcp_mut().seq = BACKEND_ISN;
    sa.tcp_mut().ack = CLIENT_ISN.wrapping_add(7);
    ensure!(h.run(&sa.build())?.verdict == verdict::DROP);
    let mut rst = from_backend(tcp_flags::RST | tcp_flags::ACK);
    rst.tcp_mut().seq = 0;
    rst.tcp_mut().ack = CLIENT_ISN.wrapping_add(7);
    ensure!(h.run(&rst.build())?.verdict == verdict::DROP);
    ensure!(h.flows_all()?.is_empty() && h.half_open_all()?.len() == 2);
    // The backend refuses our SYN: the client, connected in its view, gets
    // a RST with the sequence number it expects from us; the pair goes.
    rst.tcp_mut().ack = CLIENT_ISN.wrapping_add(1);
    let want = originated(
        LB_MAC,
        CLIENT_MAC,
        (VIP, VPORT),
        (CLIENT, CPORT),
        (cookie.wrapping_add(1), 0, tcp_flags::RST, 0),
        None,
    );
    expect(&h, &rst, verdict::TX, &want)?;
    ensure!(h.flows_all()?.is_empty() && h.half_open_all()?.is_empty());
    reasons_are(
        &h,
        &[
            (reason::TX_SYN_COOKIE, 1),
            (reason::SYN_COOKIE_OK, 1),
            (reason::DROP_SYN_COOKIE_BAD, 2),
            (reason::TX_RST_COOKIE_REFUSED, 1),
        ],
    )
}

#[test]
fn a_valid_cookie_without_backend_gets_a_rst_and_leaves_nothing_behind() -> Result<()> {
    let mut h = always()?;
    let cookie = cookie_for(&h, TcpSpec::syn_options(), 1460)?;
    h.fill_ring(&service(), &[0])?;
    let mut ack = cookie_ack(cookie);
    ack.pad_to = 0;
    let want = originated(
        LB_MAC,
        CLIENT_MAC,
        (VIP, VPORT),
        (CLIENT, CPORT),
        (cookie.wrapping_add(1), 0, tcp_flags::RST, 0),
        None,
    );
    expect(&h, &ack, verdict::TX, &want)?;
    ensure!(h.half_open_all()?.is_empty() && h.flows_all()?.is_empty());
    // What the cookie's ACK told `open` must not stick to the next SYN.
    h.fill_ring(&service(), &[BE_ID])?;
    h.settings.set(0, settings(0, 0, SNAT_MAX), 0)?;
    let r = h.run(&syn(TcpSpec::syn_options()).build())?;
    ensure!(r.verdict == verdict::TX && parse(&r.frame)?.ipv4().dst == backend().0);
    let states: Vec<(u8, u32, u32)> = h
        .half_open_all()?
        .iter()
        .map(|(_, f)| (f.state, f.expect_ack, f.seq_offset))
        .collect();
    ensure!(
        states == [(flow_state::SYN, 0, 0), (flow_state::SYN, 0, 0)],
        "a plain handshake after the cookie: {states:?}"
    );
    reasons_are(
        &h,
        &[(reason::TX_SYN_COOKIE, 1), (reason::TX_RST_NO_BACKEND, 1)],
    )
}
