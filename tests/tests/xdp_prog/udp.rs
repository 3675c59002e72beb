//! UDP: no handshake, the first datagram opens both entries.

use super::support::*;
use anyhow::Result;
use lb_common::flow_state;
use lb_tests::packet::*;
use lb_tests::xdp_harness::*;

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
