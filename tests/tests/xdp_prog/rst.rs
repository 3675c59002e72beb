//! Segments that find no flow: answered with a RST where a listening host
//! would answer, dropped without a word where it would not.

use super::support::*;
use anyhow::{Result, ensure};
use lb_common::reason;
use lb_tests::packet::*;
use lb_tests::xdp_harness::*;

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

/// Segments without a flow that get no answer.
fn unanswered_rows() -> Vec<Row> {
    // A listening host's TCP drops a segment with none of SYN, ACK and RST
    // without a word (RFC 9293 3.10.7.2): so do we, whatever it carries.
    let without_ack = |flags| {
        let mut f = FrameSpec::tcp(CLIENT_MAC, LB_MAC, CLIENT, CPORT, VIP, VPORT, flags);
        f.tcp_mut().seq = 1000;
        f.tcp_mut().payload = b"abc".to_vec();
        f.pad_to = 60;
        Step::dropped(f.build(), reason::DROP_TCP_FLAGS)
    };
    let rst = |flags| {
        Step::dropped(
            FrameSpec::tcp(CLIENT_MAC, LB_MAC, CLIENT, CPORT, VIP, VPORT, flags).build(),
            reason::DROP_RST_NO_FLOW,
        )
    };
    vec![
        Row::new(
            "midstream_miss_without_ack_is_dropped_unanswered",
            vec![
                without_ack(tcp_flags::PSH),
                without_ack(tcp_flags::FIN),
                without_ack(0),
            ],
        ),
        Row::new(
            "midstream_rst_without_flow_is_dropped",
            vec![rst(tcp_flags::RST | tcp_flags::ACK), rst(tcp_flags::RST)],
        ),
    ]
}

#[test]
fn segments_without_a_flow_that_get_no_answer_are_dropped() {
    run_rows(&unanswered_rows());
}
