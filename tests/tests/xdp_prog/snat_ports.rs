//! SNAT ports: the search for a free one, collisions with entries in
//! either table, and taking over the port of a closed connection.

use super::support::*;
use anyhow::{Result, ensure};
use lb_common::{IPPROTO_TCP, flow_state, reason};
use lb_tests::packet::*;
use lb_tests::xdp_harness::*;

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
fn a_taken_snat_port_makes_the_syn_pick_the_next_candidate() {
    assert_rows_pass(
        [
            ("snat_port_taken_in_flows_picks_the_next_candidate", false),
            (
                "snat_port_taken_in_half_open_picks_the_next_candidate",
                true,
            ),
        ]
        .into_iter()
        .map(|(name, in_half_open)| (name, outcome_of(|| collision_case(in_half_open))))
        .collect(),
    );
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
