//! The acceptance policy's pure parts: what a host's own stack would refuse,
//! decided from header fields alone. The XDP program applies them in its
//! parsing module; the agent and the tests use the same definitions.

use crate::headers::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// Whether `mac` is a group (broadcast or multicast) address: the I/G bit.
#[inline(always)]
pub const fn mac_is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

#[inline(always)]
pub const fn mac_is_zero(mac: &[u8; 6]) -> bool {
    mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5] == 0
}

/// A source MAC a real sender can have: unicast and not all-zero.
#[inline(always)]
pub const fn source_mac_ok(mac: &[u8; 6]) -> bool {
    !mac_is_group(mac) && !mac_is_zero(mac)
}

/// Whether an IPv4 source address (network order, as in the packet) lies in
/// a range no host may send from (RFC 1122 3.2.1.3, RFC 5735): "this
/// network" 0/8, loopback 127/8, multicast 224/4, class E 240/4 and the
/// limited broadcast (inside 240/4). Addresses the node itself owns are
/// another check (`local_addrs`), as they depend on the node.
#[inline(always)]
pub const fn martian_source_range(saddr_be: u32) -> bool {
    let first = u32::from_be(saddr_be) >> 24;
    first == 0 || first == 127 || first >= 224
}

/// Whether a TCP flag combination is one a host's TCP takes any notice of
/// (RFC 9293 3.10.7; Linux's tcp_rcv_state_process and tcp_validate_incoming
/// discard the rest silently): SYN with FIN or RST is never valid, and a
/// segment with none of SYN, ACK and RST (no flags, FIN, PSH or URG alone,
/// "Xmas") is dropped in every state.
#[inline(always)]
pub const fn tcp_flags_valid(flags: u8) -> bool {
    if flags & TCP_SYN != 0 {
        return flags & (TCP_FIN | TCP_RST) == 0;
    }
    flags & (TCP_ACK | TCP_RST) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::TCP_PSH;

    const URG: u8 = 0x20;

    fn be(a: [u8; 4]) -> u32 {
        u32::from_ne_bytes(a)
    }

    #[test]
    fn group_and_zero_macs_are_no_senders() {
        assert!(!source_mac_ok(&[0xff; 6]));
        assert!(!source_mac_ok(&[0x01, 0, 0x5e, 0, 0, 0xfb]));
        assert!(!source_mac_ok(&[0x33, 0x33, 0, 0, 0, 1]));
        assert!(!source_mac_ok(&[0; 6]));
        assert!(source_mac_ok(&[0x02, 0, 0, 0, 0, 1]));
        assert!(source_mac_ok(&[0x00, 0x16, 0x3e, 0, 0, 0]));
    }

    #[test]
    fn martian_ranges() {
        for a in [
            [0, 0, 0, 0],
            [0, 1, 2, 3],
            [127, 0, 0, 1],
            [224, 0, 0, 251],
            [239, 255, 255, 250],
            [240, 0, 0, 1],
            [255, 255, 255, 255],
        ] {
            assert!(martian_source_range(be(a)), "{a:?}");
        }
        for a in [
            [192, 0, 2, 1],
            [198, 51, 100, 7],
            [203, 0, 113, 255],
            [1, 0, 0, 0],
            [223, 255, 255, 255],
            [126, 255, 255, 255],
            [128, 0, 0, 0],
        ] {
            assert!(!martian_source_range(be(a)), "{a:?}");
        }
    }

    #[test]
    fn tcp_flag_combinations() {
        let valid = [
            TCP_SYN,
            TCP_SYN | TCP_ACK,
            TCP_ACK,
            TCP_ACK | TCP_PSH,
            TCP_ACK | TCP_FIN,
            TCP_ACK | TCP_RST,
            TCP_RST,
            TCP_RST | TCP_FIN,
            TCP_ACK | URG | TCP_PSH,
        ];
        for f in valid {
            assert!(tcp_flags_valid(f), "{f:#04x}");
        }
        let invalid = [
            0,
            TCP_FIN,
            TCP_PSH,
            URG,
            TCP_FIN | TCP_PSH | URG,
            TCP_SYN | TCP_FIN,
            TCP_SYN | TCP_RST,
            TCP_SYN | TCP_FIN | TCP_RST,
            TCP_SYN | TCP_FIN | TCP_ACK,
            TCP_SYN | TCP_RST | TCP_ACK,
        ];
        for f in invalid {
            assert!(!tcp_flags_valid(f), "{f:#04x}");
        }
    }
}
