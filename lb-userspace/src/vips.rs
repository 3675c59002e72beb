//! Virtual IPs as /32 addresses on the data-path interface. The kernel must
//! own a VIP so it answers ARP for it (and so the admin page and redirect can
//! listen on it); the XDP program takes the VIP's service traffic before the
//! kernel sees it. In single-node mode the agent adds them at start; with VRRP
//! the master adds them and the backup removes them.

use std::{collections::BTreeSet, net::IpAddr, net::Ipv4Addr};

use anyhow::{Context, Result};
use futures_util::TryStreamExt;
use rtnetlink::{
    Handle,
    packet_route::address::{AddressAttribute, AddressMessage},
};

pub struct VipAddresses {
    handle: Handle,
    ifindex: u32,
    iface: String,
}

impl VipAddresses {
    /// Opens a netlink connection in the calling thread's network namespace;
    /// needs a tokio runtime, on which the connection task is spawned.
    pub fn new(iface: &str, ifindex: u32) -> Result<Self> {
        let (conn, handle, _) =
            rtnetlink::new_connection().context("opening a route netlink socket")?;
        tokio::spawn(conn);
        Ok(VipAddresses {
            handle,
            ifindex,
            iface: iface.to_string(),
        })
    }

    /// The /32 addresses on the interface, with their netlink messages.
    async fn host_routes(&self) -> Result<Vec<(Ipv4Addr, AddressMessage)>> {
        let mut out = Vec::new();
        let mut dump = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.ifindex)
            .execute();
        while let Some(msg) = dump
            .try_next()
            .await
            .with_context(|| format!("listing the addresses of {}", self.iface))?
        {
            if msg.header.prefix_len != 32 {
                continue;
            }
            for attr in &msg.attributes {
                if let AddressAttribute::Local(IpAddr::V4(a))
                | AddressAttribute::Address(IpAddr::V4(a)) = attr
                {
                    out.push((*a, msg.clone()));
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The interface's first IPv4 address that is not a /32 (not a VIP):
    /// the source of multicast VRRP adverts.
    pub async fn primary_address(&self) -> Result<Option<Ipv4Addr>> {
        let mut dump = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.ifindex)
            .execute();
        // Read the dump to its end: netlink complains about answers nobody
        // reads.
        let mut first = None;
        while let Some(msg) = dump
            .try_next()
            .await
            .with_context(|| format!("listing the addresses of {}", self.iface))?
        {
            if msg.header.prefix_len == 32 || first.is_some() {
                continue;
            }
            first = msg.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(IpAddr::V4(a)) => Some(*a),
                _ => None,
            });
        }
        Ok(first)
    }

    /// VIPs (from `vips`) currently on the interface.
    pub async fn present(&self, vips: &BTreeSet<Ipv4Addr>) -> Result<BTreeSet<Ipv4Addr>> {
        Ok(self
            .host_routes()
            .await?
            .into_iter()
            .map(|(a, _)| a)
            .filter(|a| vips.contains(a))
            .collect())
    }

    /// Adds each VIP not yet there; logs each one added.
    pub async fn add_all(&self, vips: &BTreeSet<Ipv4Addr>) -> Result<()> {
        let have = self.present(vips).await?;
        for vip in vips.difference(&have) {
            self.handle
                .address()
                .add(self.ifindex, IpAddr::V4(*vip), 32)
                .execute()
                .await
                .with_context(|| format!("adding VIP {vip}/32 to {}", self.iface))?;
            tracing::info!(%vip, iface = %self.iface, "VIP added");
        }
        Ok(())
    }

    /// Removes each of `vips` that is on the interface; logs each one removed.
    pub async fn remove_all(&self, vips: &BTreeSet<Ipv4Addr>) -> Result<()> {
        for (addr, msg) in self.host_routes().await? {
            if !vips.contains(&addr) {
                continue;
            }
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .with_context(|| format!("removing VIP {addr}/32 from {}", self.iface))?;
            tracing::info!(vip = %addr, iface = %self.iface, "VIP removed");
        }
        Ok(())
    }
}
