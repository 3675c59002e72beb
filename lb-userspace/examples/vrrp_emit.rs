//! Prints one VRRP advert built by lb's codec as a hex IPv4 datagram, for
//! the keepalived interop check (`src/vrrp/testdata/interop-keepalived.sh`),
//! which sends it from a raw socket to a real keepalived.
//!
//! Usage: vrrp_emit ah|pass|v3 PRIORITY SEQ DST  (password from $PW, default
//! Pass1234; source 192.0.2.2, VRID 11, 1 s, the three lab VIPs).

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use lb_userspace::vrrp::ah::{AhOutgoing, build_ah_packet};
use lb_userspace::vrrp::ipv4::Ipv4Header;
use lb_userspace::vrrp::packet::{Advert, AuthField, PROTO_VRRP, Password, Version};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, priority, seq, dst] = args.as_slice() else {
        bail!("usage: vrrp_emit ah|pass|v3 PRIORITY SEQ DST");
    };
    let priority: u8 = priority.parse().context("PRIORITY is 0..=255")?;
    let seq: u32 = seq.parse().context("SEQ is a 32-bit number")?;
    let dst: Ipv4Addr = dst.parse().context("DST is an IPv4 address")?;
    let src = Ipv4Addr::new(192, 0, 2, 2);
    let text = std::env::var("PW").unwrap_or_else(|_| "Pass1234".into());
    let password = Password::new(&text).map_err(|e| anyhow::anyhow!("password: {e:?}"))?;
    let (version, auth) = match kind.as_str() {
        "ah" => (Version::V2, AuthField::Ah),
        "pass" => (Version::V2, AuthField::Pass(password)),
        "v3" => (Version::V3, AuthField::None),
        other => bail!("unknown kind {other}: use ah, pass or v3"),
    };
    let advert = Advert {
        version,
        vrid: 11,
        priority,
        interval_cs: 100,
        auth,
        addrs: vec![
            Ipv4Addr::new(192, 0, 2, 250),
            Ipv4Addr::new(192, 0, 2, 20),
            Ipv4Addr::new(192, 0, 2, 30),
        ],
    };
    let vrrp = advert
        .encode(src, dst)
        .map_err(|e| anyhow::anyhow!("encoding: {e:?}"))?;
    let ip_id = (seq % 0xffff + 1) as u16;
    let datagram = if auth == AuthField::Ah {
        build_ah_packet(&AhOutgoing {
            src,
            dst,
            ip_id,
            unicast: !dst.is_multicast(),
            seq,
            password: &password,
            vrrp: &vrrp,
        })
    } else {
        let header = Ipv4Header::advert(src, dst, PROTO_VRRP, ip_id, vrrp.len());
        [header.encode().as_slice(), &vrrp].concat()
    };
    println!(
        "{}",
        datagram
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    Ok(())
}
