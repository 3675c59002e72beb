//! Established flows: packets that hit `flows` in either direction, and
//! what FIN and RST do to the entries.

use super::support::*;
use anyhow::Result;
use lb_common::{fin_flags, flow_state};
use lb_tests::packet::*;
use lb_tests::xdp_harness::*;

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
