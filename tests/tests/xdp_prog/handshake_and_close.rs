//! The TCP handshake through `half_open` (promotion only on the ACK of the
//! backend's ISN) and the orderly close.

use super::support::*;
use anyhow::{Result, ensure};
use lb_common::{Flow, FlowKey, flow_state, reason};
use lb_tests::packet::*;
use lb_tests::xdp_harness::*;
use std::net::Ipv4Addr;

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
