//! The addressing plan of a lab: which namespaces exist, which veth joins
//! each to the switch, and which addresses and routes each node gets. Pure
//! data, so the plan is unit-tested without root and the setup code only
//! executes it.

use std::net::Ipv4Addr;

use anyhow::{Result, bail};

/// Client-side network: the clients and the LB's front address.
pub const FRONT_NET: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 0);
/// Backend network: the servers and the LB's back address.
pub const BACK_NET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 0);
/// Where the clients' source addresses come from.
pub const CLIENT_NET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 0);
/// The first VIP a lab gets unless told otherwise.
pub const DEFAULT_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// First client address (203.0.113.10); the others follow.
const FIRST_CLIENT_HOST: u8 = 10;
/// First backend address (198.51.100.11); the others follow.
const FIRST_BACKEND_HOST: u8 = 11;
/// The LB nodes take .2, .3, ... on both the front and the back network.
const FIRST_LB_HOST: u8 = 2;
/// Highest host number we hand out in a /24 (255 is the broadcast).
const LAST_HOST: u8 = 254;

/// The role of a node; decides its addresses and routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Holds the bridge `br0` and the switch-side end of every veth.
    Switch,
    /// A load-balancer node (1-based index).
    Lb(usize),
    /// The namespace that owns every client source address.
    Clients,
    /// A backend server (1-based index).
    Backend(usize),
}

/// One namespace of the lab and how it is wired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub role: Role,
    /// Namespace name, `<prefix>-<short>`.
    pub netns: String,
    /// The short name: `sw`, `lb1`, `cl`, `be3`.
    pub short: String,
    /// Name of the veth end inside the switch namespace (the bridge port).
    pub switch_port: String,
    /// `ip address add` arguments for the node's `eth0`, CIDR notation.
    pub addresses: Vec<String>,
    /// `ip route add` arguments (after `route add`).
    pub routes: Vec<String>,
}

/// What a lab should contain; see [`Plan::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    pub lb_nodes: usize,
    pub backends: usize,
    pub client_addrs: usize,
    pub vips: Vec<Ipv4Addr>,
    /// Whether the lab itself puts the VIPs on lb1's eth0 (a single-node lab
    /// without VRRP); with VRRP the agent adds them.
    pub add_vips: bool,
}

/// The complete plan of a lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub prefix: String,
    pub shape: Shape,
    pub nodes: Vec<Node>,
}

impl Plan {
    /// Lays out a lab. Fails when the counts do not fit the /24 networks.
    pub fn new(prefix: &str, shape: Shape) -> Result<Plan> {
        if shape.lb_nodes == 0 || shape.lb_nodes > 8 {
            bail!("a lab needs 1 to 8 LB nodes, not {}", shape.lb_nodes);
        }
        if shape.backends == 0 || shape.backends > usize::from(LAST_HOST - FIRST_BACKEND_HOST) + 1 {
            bail!("a lab needs 1 to 244 backends, not {}", shape.backends);
        }
        if shape.client_addrs == 0
            || shape.client_addrs > usize::from(LAST_HOST - FIRST_CLIENT_HOST) + 1
        {
            bail!(
                "a lab has 1 to 245 client addresses, not {}",
                shape.client_addrs
            );
        }
        for vip in &shape.vips {
            let host = vip.octets()[3];
            let on_front = vip.octets()[..3] == FRONT_NET.octets()[..3];
            let clashes_lb = (FIRST_LB_HOST..FIRST_LB_HOST + shape.lb_nodes as u8).contains(&host);
            if !on_front || clashes_lb || host == 0 || host == 255 {
                bail!("VIP {vip} must be a free host address of 192.0.2.0/24");
            }
        }
        let mut nodes = vec![node(prefix, Role::Switch, "sw", vec![], vec![])];
        for lb in 1..=shape.lb_nodes {
            let mut addresses = vec![
                format!("{}/24", lb_front_addr(lb)),
                format!("{}/24", lb_back_addr(lb)),
            ];
            if lb == 1 && shape.add_vips {
                addresses.extend(shape.vips.iter().map(|vip| format!("{vip}/32")));
            }
            let routes = vec![format!("{CLIENT_NET}/24 dev eth0")];
            nodes.push(node(
                prefix,
                Role::Lb(lb),
                &format!("lb{lb}"),
                addresses,
                routes,
            ));
        }
        let addresses = client_addrs(shape.client_addrs)
            .map(|a| format!("{a}/24"))
            .collect();
        let routes = vec![format!("{FRONT_NET}/24 dev eth0")];
        nodes.push(node(prefix, Role::Clients, "cl", addresses, routes));
        // With one LB node the backends send replies for the VIP network to
        // it; with several, whichever node holds a VIP answers ARP for it.
        let backend_route = if shape.lb_nodes == 1 {
            format!("{FRONT_NET}/24 via {}", lb_back_addr(1))
        } else {
            format!("{FRONT_NET}/24 dev eth0")
        };
        for be in 1..=shape.backends {
            let addresses = vec![format!("{}/24", backend_addr(be))];
            nodes.push(node(
                prefix,
                Role::Backend(be),
                &format!("be{be}"),
                addresses,
                vec![backend_route.clone()],
            ));
        }
        Ok(Plan {
            prefix: prefix.to_string(),
            shape,
            nodes,
        })
    }

    /// The node with the given short name (`lb1`, `cl`, `be2`).
    pub fn node(&self, short: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.short == short)
    }

    /// Every namespace except the switch: those with an `eth0`.
    pub fn hosts(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role != Role::Switch)
    }

    pub fn switch(&self) -> &Node {
        &self.nodes[0]
    }
}

fn node(
    prefix: &str,
    role: Role,
    short: &str,
    addresses: Vec<String>,
    routes: Vec<String>,
) -> Node {
    Node {
        role,
        netns: format!("{prefix}-{short}"),
        short: short.to_string(),
        switch_port: format!("p-{short}"),
        addresses,
        routes,
    }
}

/// LB node `n`'s address on the client side (192.0.2.2 for lb1).
pub fn lb_front_addr(n: usize) -> Ipv4Addr {
    host(FRONT_NET, FIRST_LB_HOST as usize + n - 1)
}

/// LB node `n`'s address on the backend side (198.51.100.2 for lb1).
pub fn lb_back_addr(n: usize) -> Ipv4Addr {
    host(BACK_NET, FIRST_LB_HOST as usize + n - 1)
}

/// Backend `n`'s address (198.51.100.11 for be1).
pub fn backend_addr(n: usize) -> Ipv4Addr {
    host(BACK_NET, FIRST_BACKEND_HOST as usize + n - 1)
}

/// The first `count` client source addresses, from 203.0.113.10 on.
pub fn client_addrs(count: usize) -> impl Iterator<Item = Ipv4Addr> {
    (0..count).map(|i| host(CLIENT_NET, FIRST_CLIENT_HOST as usize + i))
}

/// `first-last` in the form `lab-client --sources` takes.
pub fn client_range(count: usize) -> String {
    let first = host(CLIENT_NET, FIRST_CLIENT_HOST as usize);
    let last = host(CLIENT_NET, FIRST_CLIENT_HOST as usize + count - 1);
    format!("{first}-{last}")
}

fn host(net: Ipv4Addr, n: usize) -> Ipv4Addr {
    let [a, b, c, _] = net.octets();
    Ipv4Addr::new(
        a,
        b,
        c,
        u8::try_from(n).expect("host number checked by Plan::new"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            lb_nodes: 1,
            backends: 3,
            client_addrs: 200,
            vips: vec![DEFAULT_VIP],
            add_vips: true,
        }
    }

    #[test]
    fn single_node_plan_matches_the_documented_addresses() {
        let plan = Plan::new("t1", shape()).unwrap();
        let names: Vec<_> = plan.nodes.iter().map(|n| n.netns.as_str()).collect();
        assert_eq!(
            names,
            ["t1-sw", "t1-lb1", "t1-cl", "t1-be1", "t1-be2", "t1-be3"]
        );
        let lb = plan.node("lb1").unwrap();
        assert_eq!(
            lb.addresses,
            ["192.0.2.2/24", "198.51.100.2/24", "192.0.2.10/32"]
        );
        assert_eq!(lb.routes, ["203.0.113.0/24 dev eth0"]);
        let cl = plan.node("cl").unwrap();
        assert_eq!(cl.addresses.len(), 200);
        assert_eq!(cl.addresses[0], "203.0.113.10/24");
        assert_eq!(cl.addresses[199], "203.0.113.209/24");
        assert_eq!(cl.routes, ["192.0.2.0/24 dev eth0"]);
        let be3 = plan.node("be3").unwrap();
        assert_eq!(be3.addresses, ["198.51.100.13/24"]);
        assert_eq!(be3.routes, ["192.0.2.0/24 via 198.51.100.2"]);
        assert_eq!(be3.switch_port, "p-be3");
        assert_eq!(client_range(200), "203.0.113.10-203.0.113.209");
    }

    #[test]
    fn two_node_plan_routes_backends_on_link_and_leaves_vips_to_the_agent() {
        let plan = Plan::new(
            "t2",
            Shape {
                lb_nodes: 2,
                add_vips: false,
                ..shape()
            },
        )
        .unwrap();
        let lb2 = plan.node("lb2").unwrap();
        assert_eq!(lb2.addresses, ["192.0.2.3/24", "198.51.100.3/24"]);
        assert_eq!(plan.node("lb1").unwrap().addresses.len(), 2);
        assert_eq!(plan.node("be1").unwrap().routes, ["192.0.2.0/24 dev eth0"]);
    }

    #[test]
    fn plans_that_do_not_fit_are_refused() {
        assert!(
            Plan::new(
                "t",
                Shape {
                    client_addrs: 246,
                    ..shape()
                }
            )
            .is_err()
        );
        assert!(
            Plan::new(
                "t",
                Shape {
                    client_addrs: 245,
                    ..shape()
                }
            )
            .is_ok()
        );
        assert!(
            Plan::new(
                "t",
                Shape {
                    backends: 0,
                    ..shape()
                }
            )
            .is_err()
        );
        let vip_on_lb = Shape {
            vips: vec![Ipv4Addr::new(192, 0, 2, 2)],
            ..shape()
        };
        assert!(Plan::new("t", vip_on_lb).is_err());
        let vip_elsewhere = Shape {
            vips: vec![Ipv4Addr::new(198, 51, 100, 10)],
            ..shape()
        };
        assert!(Plan::new("t", vip_elsewhere).is_err());
    }
}
