//! New flows: how a SYN (or a first datagram) picks its backend, what it
//! writes, persistence, and the new flows the program must refuse.

use super::support::*;
use anyhow::{Result, ensure};
use lb_common::hash::{flow_hash, source_hash};
use lb_common::{IPPROTO_TCP, IPPROTO_UDP, Persist, PersistKey, ServiceInfo, backend_flags};
use lb_common::{flow_state, reason, service_flags};
use lb_tests::packet::*;
use lb_tests::xdp_harness::*;
use std::net::Ipv4Addr;

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

/// New flows the program cannot or must not open: each dropped with its
/// reason and nothing written.
fn refused_rows() -> Vec<Row> {
    let conn = tcp_frames(CLIENT, CPORT, tcp_backend(1));
    let syn = || syn(&conn).build();
    vec![
        Row::with_setup(
            "fib_without_neighbour_is_dropped",
            |h| h.fill_ring(&tcp_service(), &[BE_NO_NEIGH]),
            vec![Step::dropped(syn(), reason::DROP_FIB_NO_NEIGH)],
        ),
        Row::with_setup(
            "fib_without_route_is_dropped",
            |h| h.fill_ring(&tcp_service(), &[BE_NO_ROUTE]),
            vec![Step::dropped(syn(), reason::DROP_FIB_FAILED)],
        ),
        Row::with_setup(
            "ring_pointing_at_an_unused_backend_row_is_dropped",
            |h| h.fill_ring(&tcp_service(), &[BE_NOT_IN_USE]),
            vec![Step::dropped(syn(), reason::DROP_BAD_BACKEND)],
        ),
        Row::with_setup(
            "udp_without_backend_is_dropped",
            |h| h.fill_ring(&udp_service(), &[0]),
            vec![Step::dropped(
                udp_frames().client_packet(0).build(),
                reason::DROP_NO_BACKEND,
            )],
        ),
        Row::with_setup(
            "inactive_vip_is_dropped",
            |h| {
                let mut svc = tcp_service();
                svc.flags &= !service_flags::ACTIVE;
                h.set_service(VIP, VPORT, IPPROTO_TCP, svc)?;
                let mut usvc = udp_service();
                usvc.flags &= !service_flags::ACTIVE;
                h.set_service(VIP, UDP_VPORT, IPPROTO_UDP, usvc)
            },
            vec![
                Step::dropped(syn(), reason::DROP_INACTIVE),
                Step::dropped(
                    conn.client_packet(tcp_flags::ACK).build(),
                    reason::DROP_INACTIVE,
                ),
                Step::dropped(udp_frames().client_packet(0).build(), reason::DROP_INACTIVE),
            ],
        ),
    ]
}

#[test]
fn refused_new_flows_are_dropped_with_their_reason() {
    run_rows(&refused_rows());
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

/// A SYN of CLIENT to the TCP service made persistent.
struct PersistenceRow {
    name: &'static str,
    timeout_ns: u64,
    /// Backend 2 may no longer be a persistence target.
    backend_2_without_persist_ok: bool,
    /// An entry of CLIENT pointing at backend 2, last seen this long ago.
    entry_age_ns: Option<u64>,
    /// The backend the SYN must reach (and the entry point at after it).
    lands_on: u32,
}

const HOUR_NS: u64 = 3_600_000_000_000;

fn persistence_rows() -> Vec<PersistenceRow> {
    vec![
        PersistenceRow {
            name: "persistence_hit_overrides_the_ring",
            timeout_ns: HOUR_NS,
            backend_2_without_persist_ok: false,
            entry_age_ns: Some(0),
            lands_on: 2,
        },
        PersistenceRow {
            name: "new_client_of_a_persistent_service_gets_an_entry",
            timeout_ns: HOUR_NS,
            backend_2_without_persist_ok: false,
            entry_age_ns: None,
            lands_on: 1,
        },
        PersistenceRow {
            name: "persistence_to_a_backend_without_persist_ok_falls_back_to_the_ring",
            timeout_ns: HOUR_NS,
            backend_2_without_persist_ok: true,
            entry_age_ns: Some(0),
            lands_on: 1,
        },
        PersistenceRow {
            name: "expired_persistence_falls_back_to_the_ring",
            timeout_ns: 10_000_000_000,
            backend_2_without_persist_ok: false,
            entry_age_ns: Some(20_000_000_000),
            lands_on: 1,
        },
    ]
}

fn run_persistence_row(row: &PersistenceRow) -> Result<()> {
    let mut h = lab()?;
    h.set_service(VIP, VPORT, IPPROTO_TCP, persistent_service(row.timeout_ns))?;
    if row.backend_2_without_persist_ok {
        h.set_backend(2, NEIGHBOURS[1].0, BPORT, backend_flags::IN_USE)?;
    }
    if let Some(age_ns) = row.entry_age_ns {
        h.persist.insert(
            persist_key(),
            Persist {
                backend_id: 2,
                _pad: 0,
                last_seen_ns: now_coarse_ns().saturating_sub(age_ns),
            },
            0,
        )?;
    }
    syn_lands_on(&h, row.lands_on)
}

#[test]
fn persistence_picks_the_remembered_backend_while_it_may() {
    assert_rows_pass(
        persistence_rows()
            .iter()
            .map(|row| (row.name, outcome_of(|| run_persistence_row(row))))
            .collect(),
    );
}
