//! Our adverts as datagrams: encoded once per destination (the v3 checksum
//! and the AH ICV both cover the destination), IP header included, with
//! keepalived's per-instance IP id numbering and the AH sequence counter.
//! Pure: the instance task sends what this builds.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};

use super::seq::next_seq;
use crate::vrrp::ah::{AhOutgoing, SeqCounter, build_ah_packet};
use crate::vrrp::check::Auth;
use crate::vrrp::config::NodeInstance;
use crate::vrrp::ipv4::Ipv4Header;
use crate::vrrp::packet::{Advert, AuthField, PROTO_VRRP};

pub struct Advertiser {
    template: Advert,
    src: Ipv4Addr,
    destinations: Vec<Ipv4Addr>,
    auth: Auth,
    unicast: bool,
    ip_id: u16,
    /// Shared by sending and receiving, as keepalived does.
    pub seq: SeqCounter,
}

impl Advertiser {
    pub fn new(instance: &NodeInstance) -> Self {
        let auth = instance.rx.auth;
        Advertiser {
            template: Advert {
                version: instance.rx.version,
                vrid: instance.rx.vrid,
                priority: instance.machine.priority,
                interval_cs: instance.rx.interval_cs,
                auth: match auth {
                    Auth::None => AuthField::None,
                    Auth::Pass(password) => AuthField::Pass(password),
                    Auth::Ah(_) => AuthField::Ah,
                },
                addrs: instance.rx.vips.clone(),
            },
            src: instance.src,
            destinations: instance.destinations.clone(),
            auth,
            unicast: !instance.rx.unicast_peers.is_empty(),
            ip_id: 0,
            seq: SeqCounter::default(),
        }
    }

    /// One datagram per destination for an advert with `priority`; AH
    /// sequence numbers are floored by the clock at `unix_ms`.
    pub fn datagrams(&mut self, priority: u8, unix_ms: u64) -> Result<Vec<(Ipv4Addr, Vec<u8>)>> {
        let advert = Advert {
            priority,
            ..self.template.clone()
        };
        let mut out = Vec::with_capacity(self.destinations.len());
        for &dst in &self.destinations {
            let vrrp = advert
                .encode(self.src, dst)
                .map_err(|e| anyhow::anyhow!("{e:?}"))
                .with_context(|| format!("encoding a VRRP advert for {dst}"))?;
            self.ip_id = self.ip_id.checked_add(1).unwrap_or(1);
            let datagram = match &self.auth {
                Auth::Ah(password) => build_ah_packet(&AhOutgoing {
                    src: self.src,
                    dst,
                    ip_id: self.ip_id,
                    unicast: self.unicast,
                    seq: next_seq(&mut self.seq, unix_ms),
                    password,
                    vrrp: &vrrp,
                }),
                _ => {
                    let ip = Ipv4Header::advert(self.src, dst, PROTO_VRRP, self.ip_id, vrrp.len());
                    [ip.encode().as_slice(), &vrrp].concat()
                }
            };
            out.push((dst, datagram));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::vrrp::check::{RxContext, check_advert};
    use crate::vrrp::runtime::seq::FLOOR_EPOCH_UNIX_MS;

    fn instances() -> (NodeInstance, NodeInstance) {
        let text = include_str!("../../../../examples/horizon.toml");
        let config = config::parse(text, "horizon.toml").expect("example parses");
        let lb1 = crate::vrrp::config::for_node(&config, "lb1", None).unwrap();
        let lb2 = crate::vrrp::config::for_node(&config, "lb2", None).unwrap();
        (lb1[0].clone(), lb2[0].clone())
    }

    #[test]
    fn the_peer_accepts_our_ah_adverts_and_refuses_a_replay() {
        let (lb1, lb2) = instances();
        let mut a = Advertiser::new(&lb1);
        let now = FLOOR_EPOCH_UNIX_MS + 100_000;
        let sent = a.datagrams(103, now).unwrap();
        assert_eq!(sent.len(), 1);
        let (dst, d) = &sent[0];
        assert_eq!(*dst, lb2.src);
        let got = check_advert(d, &lb2.rx, RxContext::default()).unwrap();
        assert_eq!(got.advert.priority, 103);
        assert_eq!(got.src, lb1.src);
        assert_eq!(got.ah_seq, Some(401), "clock floor 400, plus one");
        let replay = RxContext {
            ah_seq: 401,
            ..RxContext::default()
        };
        assert!(check_advert(d, &lb2.rx, replay).is_err());
        let next = a.datagrams(103, now).unwrap();
        assert_eq!(
            check_advert(&next[0].1, &lb2.rx, replay).unwrap().ah_seq,
            Some(402)
        );
        assert_ne!(d[4..6], next[0].1[4..6], "each datagram has its own IP id");
    }

    #[test]
    fn plain_adverts_pass_the_peers_checks() {
        let (mut lb1, mut lb2) = instances();
        for i in [&mut lb1, &mut lb2] {
            i.rx.auth = Auth::None;
        }
        let mut a = Advertiser::new(&lb1);
        let sent = a.datagrams(0, 0).unwrap();
        let got = check_advert(&sent[0].1, &lb2.rx, RxContext::default()).unwrap();
        assert_eq!((got.advert.priority, got.ah_seq), (0, None));
    }
}
