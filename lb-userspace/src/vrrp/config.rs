//! From a validated `[[vrrp]]` instance to what one node's VRRP runtime
//! needs: the state machine's config, the receive policy, the send
//! destinations and the gratuitous ARP bursts. Pure: the one fact the file
//! cannot give (the interface's primary address, for multicast instances)
//! is passed in.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::check::{Auth, RxPolicy};
use super::garp::Burst;
use super::packet::{Password, Version};
use super::socket::VRRP_GROUP;
use super::state::{self, GarpBurst};
use crate::config::{self, AuthType, Track, Vrrp, VrrpVersion};

/// One instance as run on one node.
#[derive(Clone, Debug)]
pub struct NodeInstance {
    pub name: String,
    pub interface: String,
    /// The source of our adverts: `unicast_src`, else the interface's
    /// primary address.
    pub src: Ipv4Addr,
    /// Where adverts go: the unicast peers other than ourselves, or the
    /// VRRP group.
    pub destinations: Vec<Ipv4Addr>,
    pub machine: state::Config,
    pub rx: RxPolicy,
    /// First burst on becoming master.
    pub garp: Burst,
    /// A second burst this long after the first; `None`: no second burst.
    pub garp_again_after: Option<Duration>,
    pub track: Vec<Track>,
}

impl NodeInstance {
    /// True when the adverts carry AH, so the AH socket must be open too.
    pub fn uses_ah(&self) -> bool {
        matches!(self.rx.auth, Auth::Ah(_))
    }
}

/// The instances of `config` as node `node` runs them. `interface_address`
/// is the primary IPv4 address of the node's VRRP interface, needed only by
/// multicast instances (unicast ones use their `unicast_src`).
pub fn for_node(
    config: &config::Config,
    node: &str,
    interface_address: Option<Ipv4Addr>,
) -> Result<Vec<NodeInstance>> {
    let Some(node_config) = config.nodes.get(node) else {
        bail!("node `{node}` is not in the config");
    };
    config
        .vrrp
        .iter()
        .map(|vrrp| instance(vrrp, node, &node_config.interface, interface_address))
        .collect()
}

fn instance(
    vrrp: &Vrrp,
    node: &str,
    node_interface: &str,
    interface_address: Option<Ipv4Addr>,
) -> Result<NodeInstance> {
    let priority = *vrrp
        .priority
        .get(node)
        .with_context(|| format!("VRRP instance `{}` has no priority for `{node}`", vrrp.name))?;
    let src = match vrrp.unicast_src.get(node) {
        Some(&src) => src,
        None => interface_address.with_context(|| {
            format!(
                "VRRP instance `{}` is multicast and the interface has no IPv4 address to \
                 send from; add one, or configure unicast_src",
                vrrp.name
            )
        })?,
    };
    let peers: Vec<Ipv4Addr> = vrrp
        .unicast_peers
        .iter()
        .copied()
        .filter(|&peer| peer != src)
        .collect();
    let destinations = match vrrp.unicast_peers.is_empty() {
        true => vec![VRRP_GROUP],
        false => peers.clone(),
    };
    let version = match vrrp.version {
        VrrpVersion::V2 => Version::V2,
        VrrpVersion::V3 => Version::V3,
    };
    let auth = match &vrrp.auth {
        None => Auth::None,
        Some(auth) => {
            let password = Password::new(&auth.password).map_err(|_| {
                anyhow::anyhow!("the password of VRRP instance `{}` is too long", vrrp.name)
            })?;
            match auth.kind {
                AuthType::Pass => Auth::Pass(password),
                AuthType::Ah => Auth::Ah(password),
            }
        }
    };
    let interval_cs = u16::try_from(vrrp.advert_interval.as_millis() / 10)
        .context("the advert interval does not fit VRRP's 12-bit field")?;
    let garp = Burst {
        count: vrrp.garp.count,
        interval: vrrp.garp.interval,
    };
    Ok(NodeInstance {
        name: vrrp.name.clone(),
        interface: vrrp
            .interface
            .clone()
            .unwrap_or_else(|| node_interface.to_string()),
        src,
        destinations,
        machine: state::Config {
            version,
            priority,
            advert_interval: vrrp.advert_interval,
            preempt: vrrp.preempt,
            preempt_delay: vrrp.preempt_delay,
            primary_addr: src,
            garp: GarpBurst {
                count: garp.count,
                repeat_delay: garp.interval,
            },
        },
        rx: RxPolicy {
            version,
            vrid: vrrp.virtual_router_id,
            auth,
            interval_cs,
            vips: vrrp.vips.clone(),
            unicast_peers: peers,
            // keepalived's defaults for both.
            skip_check_adv_addr: false,
            check_unicast_src: false,
        },
        garp,
        garp_again_after: (!vrrp.garp.delay.is_zero()).then_some(vrrp.garp.delay),
        track: vrrp.track.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> config::Config {
        let text = include_str!("../../../examples/horizon.toml");
        config::parse(text, "horizon.toml").expect("example parses")
    }

    #[test]
    fn unicast_ah_instance_for_each_node() {
        let config = example();
        let [lb1] = &for_node(&config, "lb1", None).unwrap()[..] else {
            panic!("one instance")
        };
        let [lb2] = &for_node(&config, "lb2", None).unwrap()[..] else {
            panic!("one instance")
        };
        assert_eq!(lb1.src, Ipv4Addr::new(192, 0, 2, 251));
        assert_eq!(lb1.destinations, [Ipv4Addr::new(192, 0, 2, 252)]);
        assert_eq!(lb2.destinations, [Ipv4Addr::new(192, 0, 2, 251)]);
        assert_eq!(lb1.rx.unicast_peers, lb1.destinations);
        assert_eq!((lb1.machine.priority, lb2.machine.priority), (101, 100));
        assert_eq!(lb1.machine.primary_addr, lb1.src);
        assert_eq!(lb1.machine.version, Version::V2);
        assert!(lb1.uses_ah());
        assert_eq!(lb1.rx.auth, Auth::Ah(Password::new("Pass1234").unwrap()));
        assert_eq!((lb1.rx.vrid, lb1.rx.interval_cs), (11, 100));
        assert_eq!(lb1.interface, "eth0");
        assert_eq!(lb1.garp.count, 5);
        assert_eq!(lb1.garp_again_after, Some(Duration::from_secs(5)));
    }

    #[test]
    fn multicast_instance_sends_to_the_group_from_the_interface_address() {
        let text = include_str!("../../../examples/horizon.toml")
            .replace("auth = {", "# auth = {")
            .replace("unicast_peers =", "# unicast_peers =")
            .replace("unicast_src =", "# unicast_src =");
        let config = config::parse(&text, "horizon.toml").expect("parses");
        let me = Ipv4Addr::new(192, 0, 2, 7);
        let [lb1] = &for_node(&config, "lb1", Some(me)).unwrap()[..] else {
            panic!("one instance")
        };
        assert_eq!(lb1.destinations, [VRRP_GROUP]);
        assert_eq!((lb1.src, lb1.machine.version), (me, Version::V3));
        assert!(lb1.rx.unicast_peers.is_empty() && !lb1.uses_ah());
        let error = for_node(&config, "lb1", None).unwrap_err().to_string();
        assert!(error.contains("no IPv4 address"), "{error}");
    }

    #[test]
    fn unknown_node_is_an_error() {
        assert!(for_node(&example(), "lb9", None).is_err());
    }
}
