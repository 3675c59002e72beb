//! Replies: packets to a SNAT address that no flow is waiting for.

use super::support::*;
use lb_common::reason;
use lb_tests::packet::*;
use lb_tests::xdp_harness::*;

fn unexpected_reply_rows() -> Vec<Row> {
    let b = tcp_backend(1);
    let to_snat = |port, flags| FrameSpec::tcp(b.mac, LB_MAC, b.ip, BPORT, SNAT, port, flags);
    vec![
        Row::new(
            "reply_to_the_snat_range_without_flow_is_dropped",
            vec![
                Step::dropped(
                    to_snat(40123, tcp_flags::SYN | tcp_flags::ACK).build(),
                    reason::DROP_REPLY_NO_FLOW,
                ),
                Step::dropped(
                    to_snat(SNAT_MAX, tcp_flags::ACK).build(),
                    reason::DROP_REPLY_NO_FLOW,
                ),
                Step::dropped(
                    FrameSpec::udp(
                        b.mac,
                        LB_MAC,
                        b.ip,
                        UDP_BPORT,
                        VIP,
                        SNAT_MIN,
                        b"late answer",
                    )
                    .build(),
                    reason::DROP_REPLY_NO_FLOW,
                ),
                // Just outside the range: the host's business.
                Step::passed(
                    to_snat(SNAT_MAX + 1, tcp_flags::ACK).build(),
                    reason::PASS_NOT_OURS,
                ),
            ],
        ),
        Row::new(
            "fragments_and_options_to_a_snat_address_are_dropped",
            vec![
                Step::dropped(
                    {
                        let mut f = to_snat(40123, tcp_flags::ACK);
                        f.ip_mut().flags_frag = IP_MF;
                        f.build()
                    },
                    reason::DROP_FRAGMENT,
                ),
                Step::dropped(
                    {
                        let mut f = to_snat(40123, tcp_flags::ACK);
                        f.ip_mut().options = vec![1, 1, 1, 0];
                        f.build()
                    },
                    reason::DROP_IP_OPTIONS,
                ),
            ],
        ),
    ]
}

#[test]
fn replies_no_flow_waits_for_are_dropped() {
    run_rows(&unexpected_reply_rows());
}
