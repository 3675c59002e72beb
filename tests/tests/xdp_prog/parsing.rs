//! Parsing: frames the program must refuse as malformed, and frames that
//! are not its business, which reach the host byte for byte.

use super::support::*;
use lb_common::reason;
use lb_tests::packet::*;
use lb_tests::xdp_harness::{LB_CLIENT_SIDE_IP, LB_MAC};

/// Frames a parser must not trust: each dropped with the reason that names
/// the broken layer.
fn malformed_rows() -> Vec<Row> {
    vec![
        ethernet_header_only_frames(),
        Row::new(
            "malformed_truncated_vlan_tag",
            vec![Step::dropped(
                {
                    let mut f = to_vip_tcp().build();
                    f.truncate(12);
                    f.extend_from_slice(&[0x81, 0x00, 0x00]);
                    f
                },
                reason::DROP_MALFORMED_L2,
            )],
        ),
        Row::new(
            "malformed_truncated_ip_header",
            vec![Step::dropped(
                {
                    let mut f = to_vip_tcp().build();
                    f.truncate(14 + 19);
                    f
                },
                reason::DROP_MALFORMED_IP,
            )],
        ),
        Row::new(
            "malformed_ip_version_not_4",
            vec![Step::dropped(
                tcp_with(|f| f.ip_mut().version = 6),
                reason::DROP_MALFORMED_IP,
            )],
        ),
        Row::new(
            "malformed_ihl_below_5",
            vec![Step::dropped(
                tcp_with(|f| f.ip_mut().ihl = Some(4)),
                reason::DROP_MALFORMED_IP,
            )],
        ),
        Row::new(
            "malformed_ihl_beyond_the_packet",
            vec![Step::dropped(
                udp_with(|f| {
                    f.ip_mut().ihl = Some(15);
                    f.ip_mut().tot_len = Some(29);
                }),
                reason::DROP_MALFORMED_IP,
            )],
        ),
        Row::new(
            "malformed_tot_len_below_header",
            vec![Step::dropped(
                tcp_with(|f| f.ip_mut().tot_len = Some(19)),
                reason::DROP_MALFORMED_IP,
            )],
        ),
        Row::new(
            "malformed_tot_len_beyond_the_frame",
            vec![Step::dropped(
                tcp_with(|f| f.ip_mut().tot_len = Some(41)),
                reason::DROP_MALFORMED_IP,
            )],
        ),
        Row::new(
            "ip_options_to_the_vip_are_dropped",
            vec![Step::dropped(
                tcp_with(|f| f.ip_mut().options = vec![1, 1, 1, 0]),
                reason::DROP_IP_OPTIONS,
            )],
        ),
        Row::new(
            "fragment_with_mf_to_the_vip_is_dropped",
            vec![Step::dropped(
                udp_with(|f| f.ip_mut().flags_frag = IP_MF),
                reason::DROP_FRAGMENT,
            )],
        ),
        Row::new(
            "fragment_with_offset_to_the_vip_is_dropped",
            vec![Step::dropped(
                // Offset 1480 bytes, last fragment.
                udp_with(|f| f.ip_mut().flags_frag = 185),
                reason::DROP_FRAGMENT,
            )],
        ),
        Row::new(
            "malformed_truncated_tcp_header",
            vec![Step::dropped(
                {
                    let full = to_vip_tcp().build();
                    tcp_with(|f| *l4_mut(f) = L4Spec::Raw(full[34..34 + 19].to_vec()))
                },
                reason::DROP_MALFORMED_L4,
            )],
        ),
        Row::new(
            "malformed_tcp_doff_below_5",
            vec![Step::dropped(
                tcp_with(|f| f.tcp_mut().doff = Some(4)),
                reason::DROP_MALFORMED_L4,
            )],
        ),
        Row::new(
            "malformed_tcp_doff_beyond_the_packet",
            vec![Step::dropped(
                tcp_with(|f| {
                    f.tcp_mut().doff = Some(6);
                    f.pad_to = 60; // bytes in the frame, but beyond tot_len
                }),
                reason::DROP_MALFORMED_L4,
            )],
        ),
        Row::new(
            "malformed_truncated_udp_header",
            vec![Step::dropped(
                udp_with(|f| *l4_mut(f) = L4Spec::Raw(vec![0x13, 0x88, 0, 53, 0, 8, 0])),
                reason::DROP_MALFORMED_L4,
            )],
        ),
        Row::new(
            "malformed_udp_len_too_small",
            vec![Step::dropped(
                udp_with(|f| f.udp_mut().len = Some(7)),
                reason::DROP_MALFORMED_L4,
            )],
        ),
        Row::new(
            "malformed_udp_len_too_large",
            vec![Step::dropped(
                udp_with(|f| {
                    f.udp_mut().len = Some(10);
                    f.pad_to = 60;
                }),
                reason::DROP_MALFORMED_L4,
            )],
        ),
        Row::new(
            "malformed_truncated_icmp_header",
            vec![Step::dropped(
                {
                    let mut f = FrameSpec::icmp(
                        CLIENT_MAC,
                        LB_MAC,
                        CLIENT,
                        VIP,
                        IcmpSpec::echo_request(1, 1, b""),
                    );
                    *l4_mut(&mut f) = L4Spec::Raw(vec![8, 0, 0, 0, 0, 1, 0]);
                    f.build()
                },
                reason::DROP_MALFORMED_L4,
            )],
        ),
    ]
}

/// Frames of exactly an Ethernet header. (Shorter frames cannot be tested:
/// BPF_PROG_TEST_RUN refuses input whose packet part is under 14 bytes, even
/// behind XDP metadata, and no driver hands XDP such a frame either.)
fn ethernet_header_only_frames() -> Row {
    let mut f = to_vip_tcp().build();
    f.truncate(14);
    let with_ethertype = |ethertype: [u8; 2]| {
        let mut f = f.clone();
        f[12..14].copy_from_slice(&ethertype);
        f
    };
    Row::new(
        "ethernet_header_only_frames",
        vec![
            Step::dropped(f.clone(), reason::DROP_MALFORMED_IP),
            Step::dropped(with_ethertype([0x81, 0x00]), reason::DROP_MALFORMED_L2),
            Step::dropped(with_ethertype([0x88, 0xa8]), reason::DROP_MALFORMED_L2),
            Step::passed(with_ethertype([0x08, 0x06]), reason::PASS_NOT_IPV4),
        ],
    )
}

/// Frames that are not for a service: the host gets them untouched.
fn not_ours_rows() -> Vec<Row> {
    let ssh = |flags| {
        FrameSpec::tcp(
            CLIENT_MAC,
            LB_MAC,
            CLIENT,
            50123,
            LB_CLIENT_SIDE_IP,
            22,
            flags,
        )
    };
    vec![
        Row::new(
            "ip_options_not_ours_pass",
            vec![Step::passed(
                {
                    let mut f = ssh(tcp_flags::SYN);
                    f.ip_mut().options = vec![1, 1, 1, 0];
                    f.build()
                },
                reason::PASS_NOT_OURS,
            )],
        ),
        Row::new(
            "fragment_not_ours_passes",
            vec![Step::passed(
                {
                    let mut f = FrameSpec::udp(
                        CLIENT_MAC,
                        LB_MAC,
                        CLIENT,
                        5000,
                        LB_CLIENT_SIDE_IP,
                        53,
                        b"q",
                    );
                    f.ip_mut().flags_frag = IP_MF;
                    f.build()
                },
                reason::PASS_NOT_OURS,
            )],
        ),
        Row::new(
            "icmp_echo_to_the_vip_passes",
            vec![Step::passed(
                FrameSpec::icmp(
                    CLIENT_MAC,
                    LB_MAC,
                    CLIENT,
                    VIP,
                    IcmpSpec::echo_request(7, 1, b"ping payload"),
                )
                .build(),
                reason::PASS_NOT_OURS,
            )],
        ),
        Row::new(
            "ssh_to_the_lb_address_passes_byte_identical",
            vec![
                Step::passed(
                    {
                        let mut f = ssh(tcp_flags::SYN);
                        f.tcp_mut().options = TcpSpec::syn_options();
                        f.build()
                    },
                    reason::PASS_NOT_OURS,
                ),
                Step::passed(ssh(tcp_flags::ACK).build(), reason::PASS_NOT_OURS),
            ],
        ),
        Row::new(
            "arp_passes",
            vec![Step::passed(
                {
                    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
                    arp.extend_from_slice(&CLIENT_MAC);
                    arp.extend_from_slice(&CLIENT.octets());
                    arp.extend_from_slice(&[0; 6]);
                    arp.extend_from_slice(&VIP.octets());
                    FrameSpec {
                        dst_mac: [0xff; 6],
                        src_mac: CLIENT_MAC,
                        vlan: None,
                        ethertype: ETHERTYPE_ARP,
                        payload: Payload::Raw(arp),
                        pad_to: 60,
                    }
                    .build()
                },
                reason::PASS_NOT_IPV4,
            )],
        ),
        Row::new(
            "ipv6_passes",
            vec![Step::passed(
                {
                    // A minimal IPv6 header (no next header, documentation
                    // prefix 2001:db8::).
                    let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 59, 64];
                    v6.extend_from_slice(&[
                        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                    ]);
                    v6.extend_from_slice(&[
                        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
                    ]);
                    FrameSpec {
                        dst_mac: LB_MAC,
                        src_mac: CLIENT_MAC,
                        vlan: Some((ETHERTYPE_VLAN, 5)),
                        ethertype: ETHERTYPE_IPV6,
                        payload: Payload::Raw(v6),
                        pad_to: 0,
                    }
                    .build()
                },
                reason::PASS_NOT_IPV4,
            )],
        ),
        Row::new(
            "vip_port_not_served_passes",
            vec![Step::passed(
                FrameSpec::tcp(CLIENT_MAC, LB_MAC, CLIENT, CPORT, VIP, 8080, tcp_flags::SYN)
                    .build(),
                reason::PASS_NOT_OURS,
            )],
        ),
        Row::new(
            "other_ip_protocol_to_the_vip_passes",
            vec![Step::passed(
                {
                    let mut ipspec = Ipv4Spec::new(CLIENT, VIP, 47);
                    ipspec.ttl = 30;
                    FrameSpec::ipv4(
                        CLIENT_MAC,
                        LB_MAC,
                        ipspec,
                        L4Spec::Raw(vec![0, 0, 0x08, 0, 1, 2, 3, 4]),
                    )
                    .build()
                },
                reason::PASS_NOT_OURS,
            )],
        ),
    ]
}

/// [`to_vip_tcp`] changed by `change`, built.
fn tcp_with(change: impl FnOnce(&mut FrameSpec)) -> Vec<u8> {
    let mut f = to_vip_tcp();
    change(&mut f);
    f.build()
}

/// [`to_vip_udp`] changed by `change`, built.
fn udp_with(change: impl FnOnce(&mut FrameSpec)) -> Vec<u8> {
    let mut f = to_vip_udp();
    change(&mut f);
    f.build()
}

fn l4_mut(f: &mut FrameSpec) -> &mut L4Spec {
    let Payload::Ipv4(_, l4) = &mut f.payload else {
        unreachable!("the frames here are IPv4")
    };
    l4
}

#[test]
fn malformed_frames_are_dropped_with_the_reason_of_their_layer() {
    run_rows(&malformed_rows());
}

#[test]
fn frames_not_ours_reach_the_host_untouched() {
    run_rows(&not_ours_rows());
}
