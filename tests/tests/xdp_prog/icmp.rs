//! ICMP errors quoting a flow are translated along it; any other ICMP
//! error aimed at us is dropped, and one for the host passes.

use super::support::*;
use anyhow::Result;
use lb_common::{flow_state, reason};
use lb_tests::packet::*;
use lb_tests::xdp_harness::*;
use std::net::Ipv4Addr;

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

/// ICMP errors that quote no flow of ours, or quote one badly: one verdict
/// and reason each, nothing else changed.
fn untranslated_rows() -> Vec<Row> {
    let conn = tcp_frames(CLIENT, CPORT, tcp_backend(1));
    let sent = conn.toward_backend(&conn.client_packet(tcp_flags::ACK));
    let from_backend =
        |quote_len| icmp_error(conn.backend.mac, conn.backend.ip, SNAT, &sent, quote_len).0;
    vec![
        Row::new(
            "icmp_error_quoting_no_flow_is_dropped",
            vec![Step::dropped(
                from_backend(28).build(),
                reason::DROP_ICMP_NO_FLOW,
            )],
        ),
        Row::with_setup(
            "icmp_error_with_a_bad_checksum_quoting_a_live_flow_is_dropped",
            |h| {
                let conn = tcp_conn(h, CLIENT, CPORT, tcp_backend(1));
                insert_pair(h, &conn, flow_state::ESTABLISHED)
            },
            vec![Step::dropped(
                {
                    let mut frame = from_backend(28).build();
                    let last = frame.len() - 1; // a quoted byte no other check reads
                    frame[last] ^= 0x10;
                    frame
                },
                reason::DROP_ICMP_CHECKSUM,
            )],
        ),
        Row::new(
            "icmp_error_with_truncated_quote_to_us_is_dropped",
            vec![Step::dropped(
                from_backend(24).build(),
                reason::DROP_MALFORMED_L4,
            )],
        ),
        Row::new(
            "icmp_error_not_addressed_to_us_passes",
            vec![Step::passed(
                icmp_error(
                    NEIGHBOURS[0].1,
                    NEIGHBOURS[0].0,
                    LB_CLIENT_SIDE_IP,
                    &conn.client_packet(tcp_flags::ACK),
                    28,
                )
                .0
                .build(),
                reason::PASS_NOT_OURS,
            )],
        ),
    ]
}

#[test]
fn icmp_errors_not_quoting_a_live_flow_are_not_translated() {
    run_rows(&untranslated_rows());
}
