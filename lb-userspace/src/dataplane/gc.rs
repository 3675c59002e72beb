//! Flow garbage collection. The data path only ever refreshes `last_seen_ns`
//! (at most once a second); LRU eviction is a last resort. The agent deletes
//! pairs of entries that have been idle longer than their service's timeout
//! for the connection's state, ages out persistence entries, and counts the
//! active flows per backend on the way.
//!
//! Both directions of a translated connection have an entry; each is only
//! refreshed by its own direction's packets, so a pair is idle only when both
//! are: idle = now - max(entry.last_seen, peer.last_seen). The decision is the
//! pure [`expired`]; walking the maps is the edge ([`Maps::collect_garbage`]).

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use lb_common::{Flow, FlowKey, IPPROTO_UDP, Persist, direction, flow_state};

use super::maps::{Maps, ignore_missing};

/// Idle timeouts of one service, in nanoseconds of CLOCK_MONOTONIC_COARSE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTimeouts {
    /// Handshake not complete.
    pub syn_ns: u64,
    pub established_ns: u64,
    /// Half-closed: a FIN seen one way only.
    pub closing_ns: u64,
    /// Closed by FIN both ways (acknowledged) or RST: only late
    /// retransmissions are left to carry.
    pub closed_ns: u64,
    pub udp_ns: u64,
    /// Persistence entries; 0 when the service has no persistence (its
    /// entries, if any, go at once).
    pub persist_ns: u64,
}

impl Default for FlowTimeouts {
    /// HAProxy-like defaults for a Horizon-style deployment: long established
    /// timeout (desktop sessions idle for a long time), short closing one.
    fn default() -> Self {
        const S: u64 = 1_000_000_000;
        FlowTimeouts {
            syn_ns: 10 * S,
            established_ns: 3600 * S,
            closing_ns: 10 * S,
            closed_ns: 2 * S,
            udp_ns: 30 * S,
            persist_ns: 0,
        }
    }
}

/// Timeouts per service id; `fallback` covers flows of services that are no
/// longer configured (their replies still match until they idle out).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcPolicy {
    pub per_service: HashMap<u32, FlowTimeouts>,
    pub fallback: FlowTimeouts,
}

impl GcPolicy {
    pub fn timeouts(&self, service_id: u32) -> &FlowTimeouts {
        self.per_service.get(&service_id).unwrap_or(&self.fallback)
    }
}

/// What one collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Entries looked at in `flows` and `half_open`.
    pub scanned: usize,
    pub flows_deleted: usize,
    pub half_open_deleted: usize,
    pub persist_deleted: usize,
    /// Client-to-backend entries of `flows` still alive, per backend id.
    pub active_per_backend: BTreeMap<u32, u64>,
    pub ports: PortUsage,
}

/// How much of the SNAT port space and the handshake table is taken, at
/// the moment of a collection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortUsage {
    /// SNAT ports held per backend id: every reply-direction entry (its key
    /// is the port) in `flows` or `half_open`, closed ones included until
    /// they are taken over or collected.
    pub per_backend: BTreeMap<u32, u64>,
    /// TCP handshakes in progress (client-side entries of `half_open`).
    pub handshakes: u64,
}

/// Counts the ports and handshakes in a snapshot.
pub fn port_usage(snap: &FlowSnapshot) -> PortUsage {
    let mut usage = PortUsage::default();
    for entry in snap.flows.values().chain(snap.half_open.values()) {
        if entry.direction == direction::TO_CLIENT {
            *usage.per_backend.entry(entry.backend_id).or_insert(0) += 1;
        }
    }
    usage.handshakes = snap
        .half_open
        .values()
        .filter(|e| e.direction == direction::TO_BACKEND)
        .count() as u64;
    usage
}

/// Key of the entry for the other direction: its packets come from where
/// this entry sends to, and go to the address this entry rewrites from.
pub fn peer_key(key: &FlowKey, entry: &Flow) -> FlowKey {
    FlowKey {
        src_ip: entry.nat_dst_ip,
        dst_ip: entry.nat_src_ip,
        src_port: entry.nat_dst_port,
        dst_port: entry.nat_src_port,
        proto: key.proto,
        _pad: [0; 3],
    }
}

/// The timeout that applies to a pair: CLOSED if either side says the
/// connection is over (the data path marks both), else CLOSING if either
/// side saw a FIN, else UDP, else ESTABLISHED if either side got there, else
/// SYN (a handshake in progress, SYN-ACK seen or not, or a SYN cookie's
/// backend handshake).
pub fn pair_timeout(key: &FlowKey, entry: &Flow, peer: Option<&Flow>, t: &FlowTimeouts) -> u64 {
    let any = |s: u8| entry.state == s || peer.is_some_and(|p| p.state == s);
    if any(flow_state::CLOSED) {
        t.closed_ns
    } else if any(flow_state::CLOSING) {
        t.closing_ns
    } else if key.proto == IPPROTO_UDP || any(flow_state::UDP) {
        t.udp_ns
    } else if (any(flow_state::SYN) || any(flow_state::SYN_ACKED) || any(flow_state::SYN_COOKIE))
        && !any(flow_state::ESTABLISHED)
    {
        t.syn_ns
    } else {
        // ESTABLISHED, or a state this agent does not know: the longest wait.
        t.established_ns
    }
}

/// Whether a pair (or an entry whose peer is gone) has idled out at `now_ns`.
pub fn expired(
    key: &FlowKey,
    entry: &Flow,
    peer: Option<&Flow>,
    now_ns: u64,
    t: &FlowTimeouts,
) -> bool {
    let last = peer.map_or(entry.last_seen_ns, |p| {
        p.last_seen_ns.max(entry.last_seen_ns)
    });
    now_ns.saturating_sub(last) > pair_timeout(key, entry, peer, t)
}

/// Whether a persistence entry has idled out.
pub fn persist_expired(p: &Persist, now_ns: u64, timeout_ns: u64) -> bool {
    timeout_ns == 0 || now_ns.saturating_sub(p.last_seen_ns) > timeout_ns
}

/// CLOCK_MONOTONIC_COARSE in ns: the clock of `bpf_ktime_get_coarse_ns`.
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; this clock id always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The flow tables at one moment.
#[derive(Clone, Debug, Default)]
pub struct FlowSnapshot {
    pub flows: HashMap<FlowKey, Flow>,
    pub half_open: HashMap<FlowKey, Flow>,
}

impl FlowSnapshot {
    fn get(&self, key: &FlowKey) -> Option<&Flow> {
        self.flows.get(key).or_else(|| self.half_open.get(key))
    }
}

/// The pure half of a collection: which pairs look expired (each pair once,
/// as (entry, peer) keys) and the live client-to-backend flows per backend.
pub fn sweep(
    snap: &FlowSnapshot,
    now_ns: u64,
    policy: &GcPolicy,
) -> (Vec<(FlowKey, FlowKey)>, BTreeMap<u32, u64>) {
    let mut doomed = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut active = BTreeMap::new();
    for (key, entry) in snap.flows.iter().chain(snap.half_open.iter()) {
        let peer_k = peer_key(key, entry);
        let peer = snap.get(&peer_k);
        if expired(key, entry, peer, now_ns, policy.timeouts(entry.service_id)) {
            if seen.insert(*key) && seen.insert(peer_k) {
                doomed.push((*key, peer_k));
            }
        } else if entry.direction == direction::TO_BACKEND && snap.flows.contains_key(key) {
            *active.entry(entry.backend_id).or_insert(0) += 1;
        }
    }
    (doomed, active)
}

impl Maps {
    /// Reads both flow tables.
    pub fn snapshot_flows(&self) -> Result<FlowSnapshot> {
        let mut snap = FlowSnapshot::default();
        for item in self.flows.iter() {
            let (k, v) = item.context("walking the flows map")?;
            snap.flows.insert(k, v);
        }
        for item in self.half_open.iter() {
            let (k, v) = item.context("walking the half_open map")?;
            snap.half_open.insert(k, v);
        }
        Ok(snap)
    }

    /// Writes one entry into `flows`, as the data path would (flow-state
    /// sync between nodes will restore flows this way; tests seed the GC).
    pub fn insert_flow(&mut self, key: &FlowKey, flow: &Flow) -> Result<()> {
        self.flows
            .insert(key, flow, 0)
            .with_context(|| format!("writing {key:?} to flows"))
    }

    /// One collection over `flows`, `half_open` and `persist`.
    ///
    /// A pair judged expired from the snapshot is read again just before it
    /// is deleted, so a packet that arrived during the walk keeps its flow.
    pub fn collect_garbage(&mut self, policy: &GcPolicy, now_ns: u64) -> Result<GcReport> {
        let snap = self.snapshot_flows()?;
        let (doomed, active) = sweep(&snap, now_ns, policy);
        let mut report = GcReport {
            scanned: snap.flows.len() + snap.half_open.len(),
            active_per_backend: active,
            ports: port_usage(&snap),
            ..GcReport::default()
        };
        for (key, peer_k) in doomed {
            let Some(entry) = self.fresh_flow(&key)? else {
                continue;
            };
            let peer = self.fresh_flow(&peer_k)?;
            if !expired(
                &key,
                &entry,
                peer.as_ref(),
                now_ns,
                policy.timeouts(entry.service_id),
            ) {
                continue;
            }
            for k in [key, peer_k] {
                report.flows_deleted += usize::from(remove_flow(&mut self.flows, &k, "flows")?);
                report.half_open_deleted +=
                    usize::from(remove_flow(&mut self.half_open, &k, "half_open")?);
            }
        }
        report.persist_deleted = self.collect_persist(policy, now_ns)?;
        if report.flows_deleted + report.half_open_deleted + report.persist_deleted > 0 {
            tracing::debug!(?report, "flow gc");
        }
        Ok(report)
    }

    fn fresh_flow(&self, key: &FlowKey) -> Result<Option<Flow>> {
        for (map, name) in [(&self.flows, "flows"), (&self.half_open, "half_open")] {
            match map.get(key, 0) {
                Ok(v) => return Ok(Some(v)),
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e).with_context(|| format!("reading {key:?} from {name}")),
            }
        }
        Ok(None)
    }

    fn collect_persist(&mut self, policy: &GcPolicy, now_ns: u64) -> Result<usize> {
        let mut old = Vec::new();
        for item in self.persist.iter() {
            let (k, v) = item.context("walking the persist map")?;
            if persist_expired(&v, now_ns, policy.timeouts(k.service_id).persist_ns) {
                old.push(k);
            }
        }
        let mut deleted = 0;
        for k in old {
            // re-check: the client may have come back during the walk
            match self.persist.get(&k, 0) {
                Ok(v) if persist_expired(&v, now_ns, policy.timeouts(k.service_id).persist_ns) => {
                    ignore_missing(self.persist.remove(&k)).context("deleting a persist entry")?;
                    deleted += 1;
                }
                _ => {}
            }
        }
        Ok(deleted)
    }
}

/// Deletes `key` from one flow table; whether it was there.
fn remove_flow(
    map: &mut aya::maps::HashMap<aya::maps::MapData, FlowKey, Flow>,
    key: &FlowKey,
    name: &str,
) -> Result<bool> {
    match map.remove(key) {
        Ok(()) => Ok(true),
        Err(e) => ignore_missing(Err(e))
            .map(|()| false)
            .with_context(|| format!("deleting {key:?} from {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::IPPROTO_TCP;

    const S: u64 = 1_000_000_000;

    fn t() -> FlowTimeouts {
        FlowTimeouts {
            syn_ns: 5 * S,
            established_ns: 100 * S,
            closing_ns: 10 * S,
            closed_ns: 2 * S,
            udp_ns: 30 * S,
            persist_ns: 60 * S,
        }
    }

    /// client 203.0.113.5:cport -> VIP 192.0.2.10:443, rewritten to
    /// 192.0.2.10:snat -> backend 198.51.100.1:443, and the reply entry.
    fn conn(
        state: u8,
        fwd_seen: u64,
        rev_seen: u64,
        cport: u16,
        snat: u16,
    ) -> ((FlowKey, Flow), (FlowKey, Flow)) {
        let ip = |a, b, c, d| u32::from_be_bytes([a, b, c, d]).to_be();
        let (client, vip, backend) = (ip(203, 0, 113, 5), ip(192, 0, 2, 10), ip(198, 51, 100, 1));
        let fk = FlowKey {
            src_ip: client,
            dst_ip: vip,
            src_port: cport.to_be(),
            dst_port: 443u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        let fwd = Flow {
            nat_src_ip: vip,
            nat_dst_ip: backend,
            nat_src_port: snat.to_be(),
            nat_dst_port: 443u16.to_be(),
            backend_id: 7,
            service_id: 1,
            direction: direction::TO_BACKEND,
            state,
            last_seen_ns: fwd_seen,
            ..Flow::default()
        };
        let rk = peer_key(&fk, &fwd);
        let rev = Flow {
            nat_src_ip: vip,
            nat_dst_ip: client,
            nat_src_port: 443u16.to_be(),
            nat_dst_port: cport.to_be(),
            direction: direction::TO_CLIENT,
            last_seen_ns: rev_seen,
            ..fwd
        };
        // the reverse entry's own peer is the forward key
        assert_eq!(peer_key(&rk, &rev), fk);
        ((fk, fwd), (rk, rev))
    }

    fn pair(state: u8, fwd_seen: u64, rev_seen: u64) -> ((FlowKey, Flow), (FlowKey, Flow)) {
        conn(state, fwd_seen, rev_seen, 50000, 40001)
    }

    #[test]
    fn peer_key_is_the_reply_tuple() {
        let ((_, fwd), (rk, _)) = pair(flow_state::ESTABLISHED, 0, 0);
        assert_eq!((rk.src_ip, rk.dst_ip), (fwd.nat_dst_ip, fwd.nat_src_ip));
        assert_eq!(
            (rk.src_port, rk.dst_port),
            (fwd.nat_dst_port, fwd.nat_src_port)
        );
    }

    #[test]
    fn idle_counts_from_the_fresher_side() {
        let ((fk, fwd), (_, rev)) = pair(flow_state::ESTABLISHED, 0, 50 * S);
        // forward idle 120 s, reverse only 70 s: the pair lives
        assert!(!expired(&fk, &fwd, Some(&rev), 120 * S, &t()));
        assert!(expired(&fk, &fwd, Some(&rev), 151 * S, &t()));
        // exactly at the timeout is not yet expired
        assert!(!expired(&fk, &fwd, Some(&rev), 150 * S, &t()));
    }

    #[test]
    fn closing_on_either_side_shortens_the_timeout() {
        let ((fk, fwd), (_, mut rev)) = pair(flow_state::ESTABLISHED, 0, 0);
        rev.state = flow_state::CLOSING;
        assert!(expired(&fk, &fwd, Some(&rev), 11 * S, &t()));
        assert!(
            !expired(&fk, &fwd, None, 11 * S, &t()),
            "alone, the forward entry is established"
        );
    }

    #[test]
    fn a_closed_pair_goes_after_the_short_timeout_a_half_closed_one_waits() {
        let ((fk, mut fwd), (_, mut rev)) = pair(flow_state::CLOSING, 0, 0);
        assert!(!expired(&fk, &fwd, Some(&rev), 3 * S, &t()), "half-closed");
        assert!(expired(&fk, &fwd, Some(&rev), 11 * S, &t()));
        fwd.state = flow_state::CLOSED;
        rev.state = flow_state::CLOSED;
        assert!(!expired(&fk, &fwd, Some(&rev), 2 * S, &t()));
        assert!(expired(&fk, &fwd, Some(&rev), 3 * S, &t()), "closed");
        // A handshake whose SYN-ACK passed is still a handshake.
        let ((fk, mut fwd), (_, rev)) = pair(flow_state::SYN, 0, 0);
        fwd.state = flow_state::SYN_ACKED;
        assert!(expired(&fk, &fwd, Some(&rev), 6 * S, &t()));
        // So is the backend handshake of a SYN cookie connection: its SNAT
        // port must not wait for the established timeout.
        let ((fk, mut fwd), (_, mut rev)) = pair(flow_state::SYN, 0, 0);
        fwd.state = flow_state::SYN_COOKIE;
        rev.state = flow_state::SYN_COOKIE;
        assert!(!expired(&fk, &fwd, Some(&rev), 4 * S, &t()));
        assert!(expired(&fk, &fwd, Some(&rev), 6 * S, &t()));
    }

    #[test]
    fn syn_udp_and_orphans() {
        let ((fk, fwd), _) = pair(flow_state::SYN, 0, 0);
        assert!(expired(&fk, &fwd, None, 6 * S, &t()));
        assert!(!expired(&fk, &fwd, None, 4 * S, &t()));
        let (mut uk, mut udp) = (fk, fwd);
        uk.proto = IPPROTO_UDP;
        udp.state = flow_state::UDP;
        assert!(!expired(&uk, &udp, None, 29 * S, &t()));
        assert!(expired(&uk, &udp, None, 31 * S, &t()));
        // a clock behind the entry (another CPU wrote later) is never expiry
        assert!(!expired(&fk, &fwd, None, 0, &t()));
        let late = Flow {
            last_seen_ns: 10 * S,
            ..fwd
        };
        assert!(!expired(&fk, &late, None, 5 * S, &t()));
    }

    #[test]
    fn persist_entries_age_out() {
        let p = Persist {
            backend_id: 1,
            _pad: 0,
            last_seen_ns: 10 * S,
        };
        assert!(!persist_expired(&p, 70 * S, 60 * S));
        assert!(persist_expired(&p, 71 * S, 60 * S));
        assert!(
            persist_expired(&p, 11 * S, 0),
            "no persistence configured: drop at once"
        );
    }

    #[test]
    fn port_usage_counts_reply_entries_per_backend_and_handshakes() {
        let mut snap = FlowSnapshot::default();
        let ((fk, fwd), (rk, rev)) = conn(flow_state::ESTABLISHED, 0, 0, 50001, 40001);
        snap.flows.insert(fk, fwd);
        snap.flows.insert(rk, rev);
        // A closed connection still holds its port until taken over.
        let ((fk2, fwd2), (rk2, rev2)) = conn(flow_state::CLOSED, 0, 0, 50002, 40002);
        snap.flows.insert(fk2, fwd2);
        snap.flows.insert(rk2, rev2);
        // A handshake holds one port and counts as one handshake.
        let ((hk, hfwd), (hrk, hrev)) = conn(flow_state::SYN, 0, 0, 50003, 40003);
        snap.half_open.insert(
            hk,
            Flow {
                backend_id: 9,
                ..hfwd
            },
        );
        snap.half_open.insert(
            hrk,
            Flow {
                backend_id: 9,
                ..hrev
            },
        );
        let usage = port_usage(&snap);
        assert_eq!(
            usage.per_backend,
            BTreeMap::from([(fwd.backend_id, 2), (9, 1)])
        );
        assert_eq!(usage.handshakes, 1);
    }

    #[test]
    fn sweep_deletes_pairs_once_and_counts_live_flows() {
        let mut snap = FlowSnapshot::default();
        let ((fk, fwd), (rk, rev)) = pair(flow_state::ESTABLISHED, 0, 0);
        snap.flows.insert(fk, fwd);
        snap.flows.insert(rk, rev);
        // a second, live connection to backend 7 and one to backend 9
        let ((fk2, fwd2), (rk2, rev2)) =
            conn(flow_state::ESTABLISHED, 190 * S, 190 * S, 50001, 40002);
        snap.flows.insert(fk2, fwd2);
        snap.flows.insert(rk2, rev2);
        let ((fk3, fwd3), (rk3, rev3)) = conn(flow_state::ESTABLISHED, 190 * S, 0, 50002, 40003);
        snap.flows.insert(
            fk3,
            Flow {
                backend_id: 9,
                ..fwd3
            },
        );
        snap.flows.insert(
            rk3,
            Flow {
                backend_id: 9,
                ..rev3
            },
        );
        // a SYN still in half_open counts as no active flow
        let ((hk, hfwd), _) = conn(flow_state::SYN, 199 * S, 0, 50003, 40004);
        snap.half_open.insert(hk, hfwd);

        let policy = GcPolicy {
            per_service: [(1, t())].into(),
            fallback: FlowTimeouts::default(),
        };
        let (doomed, active) = sweep(&snap, 200 * S, &policy);
        assert_eq!(doomed.len(), 1, "{doomed:?}");
        let (a, b) = doomed[0];
        assert!((a, b) == (fk, rk) || (a, b) == (rk, fk));
        assert_eq!(active, BTreeMap::from([(7, 1), (9, 1)]));
    }

    #[test]
    fn unknown_service_uses_the_fallback() {
        let ((fk, fwd), _) = pair(flow_state::ESTABLISHED, 0, 0);
        let policy = GcPolicy {
            per_service: HashMap::new(),
            fallback: t(),
        };
        assert_eq!(policy.timeouts(fwd.service_id), &t());
        let mut snap = FlowSnapshot::default();
        snap.flows.insert(fk, fwd);
        assert_eq!(sweep(&snap, 101 * S, &policy).0.len(), 1);
        assert_eq!(sweep(&snap, 99 * S, &policy).0.len(), 0);
    }

    #[test]
    fn coarse_clock_moves_forward() {
        let a = monotonic_coarse_ns();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(monotonic_coarse_ns() > a);
    }
}
