//! Internet checksum helpers (RFC 1071 sums, RFC 1624 incremental updates).
//!
//! The one's-complement sum is byte-order independent as long as every word is
//! read the same way, so these work on 16- and 32-bit values loaded natively
//! from packet memory and on the checksum field as it sits in the packet: the
//! data path never swaps bytes.

/// Folds a 64-bit accumulator into 16 bits with end-around carry.
#[inline(always)]
pub const fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Adds both 16-bit halves of a 32-bit field to an accumulator.
#[inline(always)]
pub const fn add32(sum: u64, v: u32) -> u64 {
    sum + (v & 0xffff) as u64 + (v >> 16) as u64
}

/// Accumulates the change of a 32-bit field from `old` to `new` (RFC 1624
/// eqn. 3: add ~m and m').
#[inline(always)]
pub const fn diff32(sum: u64, old: u32, new: u32) -> u64 {
    add32(add32(sum, !old), new)
}

/// Accumulates the change of a 16-bit field from `old` to `new`.
#[inline(always)]
pub const fn diff16(sum: u64, old: u16, new: u16) -> u64 {
    sum + (!old) as u64 + new as u64
}

/// Applies an accumulated difference to a checksum field: HC' = ~(~HC + diff).
#[inline(always)]
pub const fn apply(check: u16, diff: u64) -> u16 {
    !fold((!check) as u64 + diff)
}

/// Like [`apply`] for a UDP checksum: 0 means "no checksum" and stays 0, and a
/// computed 0 is sent as 0xffff (RFC 768).
#[inline(always)]
pub const fn apply_udp(check: u16, diff: u64) -> u16 {
    if check == 0 {
        return 0;
    }
    match apply(check, diff) {
        0 => 0xffff,
        c => c,
    }
}

/// One's-complement sum of 16-bit words (native loads). The checksum of a
/// header whose check field is zero is `!fold(sum_words(..))`.
#[inline(always)]
pub fn sum_words(sum: u64, words: &[u16]) -> u64 {
    let mut s = sum;
    let mut i = 0;
    while i < words.len() {
        s += words[i] as u64;
        i += 1;
    }
    s
}

/// Reference checksum over bytes in network order (host tests and the agent).
/// Returns the value to store big-endian in the packet.
pub fn checksum_bytes(initial: u64, bytes: &[u8]) -> u16 {
    let mut sum = initial;
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += u16::from_be_bytes([*last, 0]) as u64;
    }
    !fold(sum)
}

/// Sum of the IPv4 pseudo-header in network order (for [`checksum_bytes`]).
pub fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u64 {
    u16::from_be_bytes([src[0], src[1]]) as u64
        + u16::from_be_bytes([src[2], src[3]]) as u64
        + u16::from_be_bytes([dst[0], dst[1]]) as u64
        + u16::from_be_bytes([dst[2], dst[3]]) as u64
        + proto as u64
        + l4_len as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1071's worked example: 0001 f203 f4f5 f6f7 sums to ddf2.
    #[test]
    fn rfc1071_example() {
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum_bytes(0, &bytes), !0xddf2);
    }

    #[test]
    fn ipv4_header_known_value() {
        // A well-known header: checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum_bytes(0, &h), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        assert_eq!(checksum_bytes(0, &h), 0, "a valid header sums to zero");
    }

    fn native_u32(b: &[u8]) -> u32 {
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    }
    fn native_u16(b: &[u8]) -> u16 {
        u16::from_ne_bytes([b[0], b[1]])
    }

    /// Incremental updates on native loads agree with a full recomputation,
    /// for many pseudo-random headers and rewrites (addresses and ports).
    #[test]
    fn incremental_matches_full_recompute() {
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..10_000 {
            let mut pkt = [0u8; 24];
            for b in pkt.iter_mut() {
                *b = next() as u8;
            }
            let full = checksum_bytes(0, &pkt);
            // Store the checksum in the first two bytes' place of a copy that
            // carries it, as a packet would: use bytes 22..24 as the field.
            pkt[22] = 0;
            pkt[23] = 0;
            let c = checksum_bytes(0, &pkt);
            pkt[22..24].copy_from_slice(&c.to_be_bytes());
            let _ = full;

            let old_a = native_u32(&pkt[0..4]);
            let old_p = native_u16(&pkt[8..10]);
            let new_a = next();
            let new_p = next() as u16;
            pkt[0..4].copy_from_slice(&new_a.to_ne_bytes());
            pkt[8..10].copy_from_slice(&new_p.to_ne_bytes());
            let diff = diff16(diff32(0, old_a, new_a), old_p, new_p);
            let field = native_u16(&pkt[22..24]);
            let updated = apply(field, diff);
            pkt[22..24].copy_from_slice(&updated.to_ne_bytes());
            // A packet with a correct checksum sums to 0xffff (checks to 0).
            assert_eq!(checksum_bytes(0, &pkt), 0);
        }
    }

    #[test]
    fn udp_zero_checksum_is_kept_and_computed_zero_becomes_ffff() {
        assert_eq!(apply_udp(0, 12345), 0);
        // Find a diff that makes apply() produce 0 and check the substitution.
        let check = 0x1234u16;
        let target_diff = (!0u16 as u64) - (!check) as u64; // ~check + d = 0xffff
        assert_eq!(apply(check, target_diff), 0);
        assert_eq!(apply_udp(check, target_diff), 0xffff);
    }
}
