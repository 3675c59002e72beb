//! Managed neighbour entries for the backends' next hops.
//!
//! bpf_fib_lookup never resolves a neighbour: without an entry it answers
//! NO_NEIGH and the packet is dropped. A *managed* entry (NTF_EXT_MANAGED,
//! kernel >= 5.16) is one the kernel keeps resolved by itself, re-probing
//! when it goes stale, which is what `ip neigh replace IP dev DEV managed`
//! creates. netlink-packet-route expresses it (`NeighbourExtFlags::Managed`,
//! sent as NDA_FLAGS_EXT), so this talks rtnetlink directly.
//!
//! For each backend: ask the kernel for its route (gateway or on-link), add a
//! managed entry for that next hop on the output interface, and delete the
//! entries this agent made once no backend needs them.
//!
//! A backend without a route, or whose next hop does not answer ARP, is no
//! error of the agent's: [`ManagedNeighbours::sync`] reports it as
//! [`Reach::Down`] with the reason, the agent holds that backend DOWN and
//! asks again at the next sync, so the backend returns when the path does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result, bail};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};

/// Where packets to a backend go first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NextHop {
    /// The gateway, or the backend itself when it is on-link.
    pub ip: Ipv4Addr,
    pub ifindex: u32,
}

/// Whether packets can reach one backend address right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    Via(NextHop),
    /// Why not, as an operator reads it: "no route to 198.51.100.21
    /// (Network is unreachable)".
    Down(String),
}

impl Reach {
    /// The reason it cannot be reached; `None` when it can.
    pub fn problem(&self) -> Option<&str> {
        match self {
            Reach::Via(_) => None,
            Reach::Down(reason) => Some(reason),
        }
    }
}

/// Whether a next hop counts as not answering ARP, from its neighbour
/// state and what the last sync said. A managed entry that fails is
/// re-probed by the kernel, passing through INCOMPLETE each time: that
/// state keeps the previous verdict, so the backend does not flap between
/// probes, while an entry being resolved for the first time is not a
/// failure yet.
pub fn neighbour_failed(was_failed: bool, state: NeighbourState) -> bool {
    match state {
        NeighbourState::Failed => true,
        NeighbourState::Incomplete | NeighbourState::None => was_failed,
        _ => false,
    }
}

/// The operator's sentence for a failed route lookup.
fn route_problem(dst: Ipv4Addr, err: &rtnetlink::Error) -> String {
    match err {
        rtnetlink::Error::NetlinkError(e) => {
            format!("no route to {dst} ({})", e.to_io())
        }
        other => format!("no route to {dst} ({other})"),
    }
}

/// Reads the next hop out of a `route get` answer.
pub fn next_hop_of(dst: Ipv4Addr, route: &RouteMessage) -> Result<NextHop> {
    if route.header.kind != RouteType::Unicast {
        bail!(
            "the route to backend {dst} is of type {:?}, not unicast: it cannot be reached",
            route.header.kind
        );
    }
    let mut gateway = None;
    let mut oif = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Gateway(RouteAddress::Inet(gw)) => gateway = Some(*gw),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let ifindex =
        oif.with_context(|| format!("the route to backend {dst} names no output interface"))?;
    Ok(NextHop {
        ip: gateway.unwrap_or(dst),
        ifindex,
    })
}

/// Next hops that were in use and no longer are.
pub fn unused_hops(
    before: &BTreeMap<Ipv4Addr, NextHop>,
    after: &BTreeMap<Ipv4Addr, NextHop>,
) -> BTreeSet<NextHop> {
    let keep: BTreeSet<NextHop> = after.values().copied().collect();
    before
        .values()
        .copied()
        .filter(|h| !keep.contains(h))
        .collect()
}

/// Whether an entry is one this agent may leave alone: permanent (static,
/// never needs resolving) or already managed.
fn already_fine(msg: &NeighbourMessage) -> bool {
    msg.header.state == NeighbourState::Permanent
        || msg.attributes.iter().any(|a| matches!(a, NeighbourAttribute::ExtFlags(f) if f.contains(NeighbourExtFlags::Managed)))
}

/// The managed neighbour entries of the backends' next hops.
pub struct ManagedNeighbours {
    handle: Handle,
    /// Backend address -> its next hop, as of the last sync.
    hops: BTreeMap<Ipv4Addr, NextHop>,
    /// Entries this agent created (or found managed), and so may delete.
    owned: BTreeSet<NextHop>,
    /// Next hops judged not to answer ARP at the last sync.
    failed: BTreeSet<NextHop>,
}

/// An interface's name for messages, or its index when it has none.
fn if_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname needs.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return format!("ifindex {ifindex}");
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

impl ManagedNeighbours {
    /// Opens a netlink connection in the calling thread's network namespace;
    /// needs a tokio runtime, on which the connection task is spawned.
    pub fn new() -> Result<Self> {
        let (conn, handle, _) =
            rtnetlink::new_connection().context("opening a route netlink socket")?;
        tokio::spawn(conn);
        Ok(ManagedNeighbours {
            handle,
            hops: BTreeMap::new(),
            owned: BTreeSet::new(),
            failed: BTreeSet::new(),
        })
    }

    /// The next hop toward `dst`, from the kernel's routing table, or why
    /// there is none.
    pub async fn next_hop(&self, dst: Ipv4Addr) -> Result<NextHop, String> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, 32)
            .build();
        let route = match self.handle.route().get(query).execute().try_next().await {
            Ok(Some(route)) => route,
            Ok(None) => return Err(format!("no route to {dst}")),
            Err(e) => return Err(route_problem(dst, &e)),
        };
        next_hop_of(dst, &route).map_err(|e| format!("{e:#}"))
    }

    /// Makes sure every backend's next hop has a resolved-by-the-kernel
    /// entry, deletes the entries of next hops no backend uses any more,
    /// and says for each backend whether it can be reached. Only a broken
    /// netlink socket is an error; a backend without a path is a
    /// [`Reach::Down`].
    pub async fn sync(&mut self, backends: &[Ipv4Addr]) -> Result<BTreeMap<Ipv4Addr, Reach>> {
        let mut hops = BTreeMap::new();
        let mut reach = BTreeMap::new();
        for &b in backends {
            match self.next_hop(b).await {
                Ok(hop) => {
                    hops.insert(b, hop);
                }
                Err(problem) => {
                    reach.insert(b, Reach::Down(problem));
                }
            }
        }
        let existing = self.existing().await?;
        let mut failed_hops = BTreeMap::new();
        for hop in hops.values().copied().collect::<BTreeSet<_>>() {
            match existing.get(&hop) {
                Some(msg) if already_fine(msg) => {
                    if msg.header.state != NeighbourState::Permanent {
                        self.owned.insert(hop);
                    }
                    let was = self.failed.contains(&hop);
                    if neighbour_failed(was, msg.header.state) {
                        failed_hops.insert(
                            hop,
                            format!(
                                "next hop {} on {} does not answer ARP (neighbour FAILED)",
                                hop.ip,
                                if_name(hop.ifindex)
                            ),
                        );
                    }
                }
                _ => match self.add_managed(hop).await {
                    Ok(()) => {
                        self.owned.insert(hop);
                    }
                    Err(e) => {
                        failed_hops.insert(hop, format!("{e:#}"));
                    }
                },
            }
        }
        for hop in unused_hops(&self.hops, &hops) {
            if self.owned.remove(&hop)
                && let Err(e) = self.delete(hop).await
            {
                tracing::warn!("{e:#}");
            }
        }
        for (&b, &hop) in &hops {
            let r = match failed_hops.get(&hop) {
                Some(problem) => Reach::Down(problem.clone()),
                None => Reach::Via(hop),
            };
            reach.insert(b, r);
        }
        self.failed = failed_hops.into_keys().collect();
        self.hops = hops;
        Ok(reach)
    }

    /// The current next hop of every synced backend.
    pub fn hops(&self) -> &BTreeMap<Ipv4Addr, NextHop> {
        &self.hops
    }

    async fn existing(&self) -> Result<BTreeMap<NextHop, NeighbourMessage>> {
        let mut out = BTreeMap::new();
        let mut dump = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        while let Some(msg) = dump
            .try_next()
            .await
            .context("listing the neighbour table")?
        {
            let ip = msg.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = ip {
                out.insert(
                    NextHop {
                        ip,
                        ifindex: msg.header.ifindex,
                    },
                    msg,
                );
            }
        }
        Ok(out)
    }

    /// `ip neigh replace IP dev DEV managed`: no link-layer address, state
    /// NONE (the kernel refuses PERMANENT/NOARP with managed), the managed
    /// bit in NDA_FLAGS_EXT; the kernel starts resolving at once.
    async fn add_managed(&self, hop: NextHop) -> Result<()> {
        let mut req = self
            .handle
            .neighbours()
            .add(hop.ifindex, IpAddr::V4(hop.ip))
            .state(NeighbourState::None)
            .replace();
        req.message_mut()
            .attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        req.execute().await.with_context(|| {
            format!(
                "adding a managed neighbour entry for {} on ifindex {}",
                hop.ip, hop.ifindex
            )
        })?;
        tracing::info!(ip = %hop.ip, ifindex = hop.ifindex, "managed neighbour entry added");
        Ok(())
    }

    async fn delete(&self, hop: NextHop) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = hop.ifindex;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                hop.ip,
            )));
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => {
                tracing::info!(ip = %hop.ip, ifindex = hop.ifindex, "managed neighbour entry removed");
                Ok(())
            }
            // Already gone: an admin flushed it (ENOENT), or its interface
            // went away with it (ENODEV, a re-created device).
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc::ENOENT || e.raw_code() == -libc::ENODEV =>
            {
                Ok(())
            }
            Err(e) => {
                Err(e).with_context(|| format!("deleting the neighbour entry for {}", hop.ip))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(kind: RouteType, attrs: Vec<RouteAttribute>) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.kind = kind;
        m.attributes = attrs;
        m
    }

    #[test]
    fn gateway_or_direct() {
        let dst = Ipv4Addr::new(198, 51, 100, 7);
        let gw = Ipv4Addr::new(192, 0, 2, 1);
        let via = route(
            RouteType::Unicast,
            vec![
                RouteAttribute::Gateway(RouteAddress::Inet(gw)),
                RouteAttribute::Oif(3),
            ],
        );
        assert_eq!(
            next_hop_of(dst, &via).unwrap(),
            NextHop { ip: gw, ifindex: 3 }
        );
        let direct = route(RouteType::Unicast, vec![RouteAttribute::Oif(4)]);
        assert_eq!(
            next_hop_of(dst, &direct).unwrap(),
            NextHop {
                ip: dst,
                ifindex: 4
            }
        );
    }

    #[test]
    fn unreachable_routes_are_errors() {
        let dst = Ipv4Addr::new(198, 51, 100, 7);
        let err = next_hop_of(dst, &route(RouteType::Unreachable, vec![]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("198.51.100.7"), "{err}");
        assert!(next_hop_of(dst, &route(RouteType::Unicast, vec![])).is_err());
    }

    #[test]
    fn a_failing_neighbour_stays_failed_between_probes() {
        use NeighbourState::*;
        assert!(!neighbour_failed(false, Incomplete), "first resolution");
        assert!(!neighbour_failed(false, None), "just added");
        assert!(neighbour_failed(false, Failed));
        assert!(
            neighbour_failed(true, Incomplete),
            "re-probing a failed hop"
        );
        assert!(neighbour_failed(true, None));
        for answered in [Reachable, Stale, Delay, Probe, Permanent] {
            assert!(!neighbour_failed(true, answered), "{answered:?}");
        }
    }

    #[test]
    fn reach_names_its_problem() {
        let hop = NextHop {
            ip: Ipv4Addr::new(198, 51, 100, 7),
            ifindex: 2,
        };
        assert_eq!(Reach::Via(hop).problem(), Option::None);
        let down = Reach::Down("no route to 198.51.100.7".into());
        assert_eq!(down.problem(), Some("no route to 198.51.100.7"));
    }

    #[test]
    fn shared_gateway_stays_while_used() {
        let gw = NextHop {
            ip: Ipv4Addr::new(192, 0, 2, 1),
            ifindex: 2,
        };
        let direct = NextHop {
            ip: Ipv4Addr::new(192, 0, 2, 9),
            ifindex: 2,
        };
        let a = Ipv4Addr::new(198, 51, 100, 1);
        let b = Ipv4Addr::new(198, 51, 100, 2);
        let before = BTreeMap::from([(a, gw), (b, gw), (direct.ip, direct)]);
        let after = BTreeMap::from([(b, gw)]);
        assert_eq!(unused_hops(&before, &after), BTreeSet::from([direct]));
        assert!(unused_hops(&before, &before).is_empty());
    }
}
