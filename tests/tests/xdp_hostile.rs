//! Hostile and malformed frames through the XDP program (BPF_PROG_TEST_RUN):
//! a named corpus with the verdict and reason each must get, and a seeded
//! fuzz run of random and mutated frames. The rule under test: nothing a
//! host's own stack would refuse is forwarded, answered or opens a flow.

use anyhow::{Context, Result, ensure};
use lb_common::{
    IPPROTO_TCP, ServiceInfo, backend_flags, local_addr_flags, policy, reason, service_flags,
};
use lb_tests::packet::{FrameSpec, internet_checksum, tcp_flags, verify_checksums};
use lb_tests::xdp_addresses::{CLIENT, CLIENT_MAC, SNAT, SNAT_MAX, SNAT_MIN, VIP, VPORT};
use lb_tests::xdp_harness::{
    LB_CLIENT_SIDE_IP, LB_MAC, NEIGHBOURS, XdpHarness, describe_reasons, verdict,
};
use std::net::Ipv4Addr;

const URG: u8 = 0x20;

fn lab() -> Result<XdpHarness> {
    let mut h = XdpHarness::new()?;
    h.set_settings(SNAT_MIN, SNAT_MAX)?;
    h.add_local_addr(VIP, local_addr_flags::VIP)?;
    h.add_local_addr(SNAT, local_addr_flags::SNAT)?;
    // What lbd adds from the interface: its address and subnet broadcast.
    h.add_local_addr(LB_CLIENT_SIDE_IP, local_addr_flags::NODE)?;
    h.add_local_addr(Ipv4Addr::new(192, 0, 2, 255), local_addr_flags::BROADCAST)?;
    h.set_backend(1, NEIGHBOURS[0].0, 8443, backend_flags::IN_USE)?;
    let svc = ServiceInfo {
        id: 1,
        snat_ip: lb_tests::xdp_harness::ip_be(SNAT),
        flags: service_flags::ACTIVE,
        ring_offset: 0,
        ring_size: 7,
        ..Default::default()
    };
    h.set_service(VIP, VPORT, IPPROTO_TCP, svc)?;
    h.fill_ring(&svc, &[1])?;
    Ok(h)
}

fn syn() -> FrameSpec {
    FrameSpec::tcp(
        CLIENT_MAC,
        LB_MAC,
        CLIENT,
        51000,
        VIP,
        VPORT,
        tcp_flags::SYN,
    )
}

fn with(f: impl FnOnce(&mut FrameSpec)) -> Vec<u8> {
    let mut s = syn();
    f(&mut s);
    s.build()
}

fn from(src: Ipv4Addr) -> Vec<u8> {
    with(|s| s.ip_mut().src = src)
}

fn flags(fl: u8) -> Vec<u8> {
    with(|s| {
        s.tcp_mut().flags = fl;
        s.tcp_mut().ack = if fl & tcp_flags::ACK != 0 { 7 } else { 0 };
    })
}

/// One corpus row: a name, the frame, the verdict and the one reason counted.
struct Row {
    name: &'static str,
    frame: Vec<u8>,
    verdict: u32,
    reason: u32,
}

fn row(name: &'static str, frame: Vec<u8>, verdict: u32, reason: u32) -> Row {
    Row {
        name,
        frame,
        verdict,
        reason,
    }
}

fn corpus() -> Vec<Row> {
    use reason::*;
    use verdict::{DROP, PASS};
    let mut bad_ip_csum = syn().build();
    bad_ip_csum[14 + 10] ^= 0x55;
    let mut bad_tcp_csum_ack = flags(tcp_flags::ACK);
    let n = bad_tcp_csum_ack.len();
    bad_tcp_csum_ack[n - 1] ^= 0x01; // the urgent pointer: no other check sees it
    vec![
        // L2
        row(
            "dst MAC broadcast",
            with(|s| s.dst_mac = [0xff; 6]),
            DROP,
            DROP_MAC_GROUP,
        ),
        row(
            "dst MAC multicast",
            with(|s| s.dst_mac = [1, 0, 0x5e, 0, 0, 0xfb]),
            DROP,
            DROP_MAC_GROUP,
        ),
        row(
            "dst MAC another host's",
            with(|s| s.dst_mac = [2, 0, 0, 0, 9, 9]),
            PASS,
            PASS_MAC_OTHER_HOST,
        ),
        row(
            "src MAC broadcast",
            with(|s| s.src_mac = [0xff; 6]),
            DROP,
            DROP_BAD_SOURCE_MAC,
        ),
        row(
            "src MAC multicast",
            with(|s| s.src_mac = [1, 0, 0x5e, 0, 0, 1]),
            DROP,
            DROP_BAD_SOURCE_MAC,
        ),
        row(
            "src MAC zero",
            with(|s| s.src_mac = [0; 6]),
            DROP,
            DROP_BAD_SOURCE_MAC,
        ),
        // L3
        row(
            "IP header checksum wrong",
            bad_ip_csum,
            DROP,
            DROP_IP_CHECKSUM,
        ),
        row(
            "IHL 4",
            with(|s| s.ip_mut().ihl = Some(4)),
            DROP,
            DROP_MALFORMED_IP,
        ),
        row(
            "total length past the frame",
            with(|s| s.ip_mut().tot_len = Some(1400)),
            DROP,
            DROP_MALFORMED_IP,
        ),
        row(
            "fragment to the VIP",
            with(|s| s.ip_mut().flags_frag = 0x2000),
            DROP,
            DROP_FRAGMENT,
        ),
        row(
            "IP options to the VIP",
            with(|s| s.ip_mut().options = vec![1, 1, 1, 0]),
            DROP,
            DROP_IP_OPTIONS,
        ),
        row(
            "TTL 0",
            with(|s| s.ip_mut().ttl = 0),
            DROP,
            DROP_TTL_EXPIRED,
        ),
        row(
            "TTL 1",
            with(|s| s.ip_mut().ttl = 1),
            DROP,
            DROP_TTL_EXPIRED,
        ),
        // Martian sources
        row(
            "source 0.0.0.0",
            from(Ipv4Addr::UNSPECIFIED),
            DROP,
            DROP_MARTIAN_SOURCE,
        ),
        row(
            "source 0/8",
            from(Ipv4Addr::new(0, 1, 2, 3)),
            DROP,
            DROP_MARTIAN_SOURCE,
        ),
        row(
            "source loopback",
            from(Ipv4Addr::LOCALHOST),
            DROP,
            DROP_MARTIAN_SOURCE,
        ),
        row(
            "source multicast",
            from(Ipv4Addr::new(224, 0, 0, 251)),
            DROP,
            DROP_MARTIAN_SOURCE,
        ),
        row(
            "source class E",
            from(Ipv4Addr::new(240, 0, 0, 1)),
            DROP,
            DROP_MARTIAN_SOURCE,
        ),
        row(
            "source limited broadcast",
            from(Ipv4Addr::BROADCAST),
            DROP,
            DROP_MARTIAN_SOURCE,
        ),
        row(
            "source subnet broadcast",
            from(Ipv4Addr::new(192, 0, 2, 255)),
            DROP,
            DROP_MARTIAN_SOURCE,
        ),
        row(
            "source the node",
            from(LB_CLIENT_SIDE_IP),
            DROP,
            DROP_MARTIAN_SOURCE,
        ),
        row(
            "source the SNAT address",
            from(SNAT),
            DROP,
            DROP_MARTIAN_SOURCE,
        ),
        row(
            "LAND (VIP:443 to itself)",
            with(|s| {
                s.ip_mut().src = VIP;
                s.tcp_mut().sport = VPORT;
            }),
            DROP,
            DROP_MARTIAN_SOURCE,
        ),
        // TCP flags
        row(
            "SYN+FIN",
            flags(tcp_flags::SYN | tcp_flags::FIN),
            DROP,
            DROP_TCP_FLAGS,
        ),
        row(
            "SYN+RST",
            flags(tcp_flags::SYN | tcp_flags::RST),
            DROP,
            DROP_TCP_FLAGS,
        ),
        row(
            "SYN+FIN+RST",
            flags(tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST),
            DROP,
            DROP_TCP_FLAGS,
        ),
        row("no flags", flags(0), DROP, DROP_TCP_FLAGS),
        row("FIN only", flags(tcp_flags::FIN), DROP, DROP_TCP_FLAGS),
        row("PSH only", flags(tcp_flags::PSH), DROP, DROP_TCP_FLAGS),
        row("URG only", flags(URG), DROP, DROP_TCP_FLAGS),
        row(
            "Xmas",
            flags(tcp_flags::FIN | tcp_flags::PSH | URG),
            DROP,
            DROP_TCP_FLAGS,
        ),
        row(
            "RST without a flow",
            flags(tcp_flags::RST),
            DROP,
            DROP_RST_NO_FLOW,
        ),
        row(
            "ACK with a bad TCP checksum",
            bad_tcp_csum_ack,
            DROP,
            DROP_TCP_CHECKSUM,
        ),
        row(
            "ACK without a flow",
            flags(tcp_flags::ACK),
            verdict::TX,
            TX_RST_NO_FLOW,
        ),
        // L4
        row(
            "TCP data offset 4",
            with(|s| s.tcp_mut().doff = Some(4)),
            DROP,
            DROP_MALFORMED_L4,
        ),
        row(
            "truncated TCP header",
            with(|s| s.ip_mut().tot_len = Some(30)),
            DROP,
            DROP_MALFORMED_L4,
        ),
    ]
}

#[test]
fn hostile_corpus_gets_the_verdict_and_reason_of_each_row() -> Result<()> {
    let h = lab()?;
    let mut failures = Vec::new();
    for r in corpus() {
        let before = h.snapshot()?;
        let out = h.run(&r.frame)?;
        let after = h.snapshot()?;
        let mut want = before.reasons.clone();
        want[r.reason as usize] += 1;
        if out.verdict != r.verdict || after.reasons != want {
            failures.push(format!(
                "{}: {} counting {}, expected {} counting {}",
                r.name,
                verdict::name(out.verdict),
                describe_reasons(
                    &after
                        .reasons
                        .iter()
                        .zip(&before.reasons)
                        .map(|(a, b)| a - b)
                        .collect::<Vec<_>>()
                ),
                verdict::name(r.verdict),
                reason::label(r.reason)
            ));
        }
        if !after.flows.is_empty() || !after.half_open.is_empty() {
            failures.push(format!("{}: opened a flow", r.name));
        }
        if r.verdict == verdict::PASS && out.frame != r.frame {
            failures.push(format!("{}: passed frame was modified", r.name));
        }
    }
    ensure!(
        failures.is_empty(),
        "{} rows wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

/// xorshift64*: reproducible from its seed, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Whether a frame as it came in passes the acceptance policy's header
/// checks (a forwarded or answered frame must have).
fn acceptable_input(f: &[u8]) -> bool {
    if f.len() < 34 {
        return false;
    }
    let dst: [u8; 6] = f[0..6].try_into().unwrap();
    let src: [u8; 6] = f[6..12].try_into().unwrap();
    let l3 = if f[12..14] == [0x81, 0x00] || f[12..14] == [0x88, 0xa8] {
        18
    } else {
        14
    };
    if f.len() < l3 + 20 || dst != LB_MAC || !policy::source_mac_ok(&src) {
        return false;
    }
    let ip = &f[l3..l3 + 20];
    let sum = lb_tests::packet::ones_complement_sum(ip);
    sum == 0xffff
        && ip[8] > 1
        && !policy::martian_source_range(u32::from_ne_bytes(ip[12..16].try_into().unwrap()))
}

fn l4_checksums_ok(f: &[u8]) -> bool {
    verify_checksums(f).is_ok()
}

#[test]
fn fuzzed_frames_get_only_pass_drop_tx_and_forward_only_what_is_acceptable() -> Result<()> {
    let seed: u64 = match std::env::var("LB_FUZZ_SEED") {
        Ok(s) => s.parse().context("LB_FUZZ_SEED must be a u64")?,
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos() as u64
                | 1
        }
    };
    let count: usize = match std::env::var("LB_FUZZ_FRAMES") {
        Ok(s) => s.parse().context("LB_FUZZ_FRAMES must be a count")?,
        Err(_) => 100_000,
    };
    println!("fuzz seed {seed} ({count} frames); rerun with LB_FUZZ_SEED={seed}");
    let h = lab()?;
    let mut rng = Rng(seed);
    let bases: Vec<Vec<u8>> = corpus()
        .into_iter()
        .map(|r| r.frame)
        .chain([
            syn().build(),
            flags(tcp_flags::ACK),
            flags(tcp_flags::ACK | tcp_flags::PSH),
        ])
        .collect();
    let mut forwarded = 0;
    for i in 0..count {
        let mut f = bases[rng.below(bases.len() as u64) as usize].clone();
        match rng.below(4) {
            0 => {
                // Random bytes in place.
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(f.len() as u64) as usize;
                    f[at] = rng.next() as u8;
                }
            }
            1 => {
                // Truncated or extended.
                let len = 14 + rng.below(f.len() as u64 + 40) as usize;
                f.resize(len, rng.next() as u8);
            }
            2 => {
                // Fully random frame.
                let len = 14 + rng.below(200) as usize;
                f = (0..len).map(|_| rng.next() as u8).collect();
            }
            _ => {
                // A header field mutated with its IP checksum kept right.
                let at = 14 + rng.below(20) as usize;
                if at != 24 && at != 25 && f.len() >= 34 {
                    f[at] = rng.next() as u8;
                    f[24] = 0;
                    f[25] = 0;
                    let c = internet_checksum(&f[14..34]);
                    f[24..26].copy_from_slice(&c.to_be_bytes());
                }
            }
        }
        let input_l4_ok = l4_checksums_ok(&f);
        let out = h
            .run(&f)
            .with_context(|| format!("frame {i} (seed {seed})"))?;
        match out.verdict {
            verdict::PASS | verdict::DROP => {}
            verdict::TX => {
                forwarded += 1;
                ensure!(
                    acceptable_input(&f),
                    "frame {i} (seed {seed}) was sent although it fails the policy: {f:02x?}"
                );
                let o = &out.frame;
                ensure!(
                    o.len() >= 38
                        && o[6..12] == LB_MAC
                        && policy::source_mac_ok(&o[0..6].try_into().unwrap()),
                    "frame {i} (seed {seed}) left with bad MACs: {o:02x?}"
                );
                let l3 = if o[12..14] == [0x81, 0x00] || o[12..14] == [0x88, 0xa8] {
                    18
                } else {
                    14
                };
                ensure!(
                    lb_tests::packet::ones_complement_sum(&o[l3..l3 + 20]) == 0xffff
                        && o[l3 + 8] > 0,
                    "frame {i} (seed {seed}) left with a bad IP header: {o:02x?}"
                );
                if input_l4_ok {
                    ensure!(
                        l4_checksums_ok(o),
                        "frame {i} (seed {seed}) had valid checksums and left with a bad one: {o:02x?}"
                    );
                }
            }
            v => anyhow::bail!("frame {i} (seed {seed}) got {}: {f:02x?}", verdict::name(v)),
        }
    }
    let s = h.snapshot()?;
    ensure!(
        s.flows.len() + s.half_open.len() <= 2 * 4096,
        "tables grew past their size"
    );
    println!(
        "{forwarded} frames sent of {count}; reasons {}",
        describe_reasons(&s.reasons)
    );
    Ok(())
}
