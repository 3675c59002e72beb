//! The hashes the data path uses to pick a Maglev slot and a SNAT port.
//!
//! Fixed seeds and a fixed function: both nodes of a pair compute the same slot
//! for a client, so a client keeps its backend across a failover. Inputs are
//! network-order values loaded natively (the nodes share an architecture).

pub const SOURCE_SEED: u32 = 0x9e37_79b9;
pub const FLOW_SEED: u32 = 0x85eb_ca6b;
pub const PORT_SEED: u32 = 0xc2b2_ae35;

/// MurmurHash3's 32-bit finalizer: a cheap, well-mixed bijection.
#[inline(always)]
pub const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// `scheduler = "source"`: the client address alone (HAProxy `balance source`).
#[inline(always)]
pub const fn source_hash(src_ip: u32) -> u32 {
    fmix32(src_ip ^ SOURCE_SEED)
}

/// `scheduler = "flow"`: the 5-tuple.
#[inline(always)]
pub const fn flow_hash(src_ip: u32, dst_ip: u32, src_port: u16, dst_port: u16, proto: u8) -> u32 {
    let mut h = fmix32(src_ip ^ FLOW_SEED);
    h = fmix32(h ^ dst_ip);
    h = fmix32(h ^ ((src_port as u32) << 16 | dst_port as u32));
    fmix32(h ^ proto as u32)
}

/// The `attempt`-th candidate SNAT port for a new flow, in `[min, max]`.
#[inline(always)]
pub const fn snat_port_candidate(flow_hash: u32, attempt: u32, min: u16, max: u16) -> u16 {
    let span = (max as u32).wrapping_sub(min as u32).wrapping_add(1);
    if span == 0 || max < min {
        return min;
    }
    let h = fmix32(flow_hash ^ PORT_SEED ^ attempt.wrapping_mul(0x9e37_79b9));
    (min as u32 + h % span) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_values_never_change() {
        // Both nodes (and every release) must agree: pin the function.
        assert_eq!(fmix32(0), 0);
        assert_eq!(
            source_hash(u32::from_ne_bytes([203, 0, 113, 7])),
            source_hash(u32::from_ne_bytes([203, 0, 113, 7]))
        );
        assert_eq!(fmix32(1), 0x514e_28b7);
    }

    #[test]
    fn source_hash_spreads_a_slash_24_evenly() {
        let m = 65537u32;
        let buckets = 4u32;
        let mut count = [0u32; 4];
        for i in 0..=255u8 {
            let ip = u32::from_ne_bytes([203, 0, 113, i]);
            count[((source_hash(ip) % m) % buckets) as usize] += 1;
        }
        for c in count {
            // 64 expected; 3 sigma is about 21.
            assert!((40..=88).contains(&c), "{count:?}");
        }
    }

    #[test]
    fn snat_candidates_stay_in_range_and_differ() {
        let (min, max) = (20000u16, 29999u16);
        let mut seen = [0u16; 8];
        for a in 0..8 {
            let p = snat_port_candidate(0xdead_beef, a, min, max);
            assert!((min..=max).contains(&p));
            seen[a as usize] = p;
        }
        seen.sort();
        assert!(seen.windows(2).filter(|w| w[0] == w[1]).count() <= 1);
        assert_eq!(snat_port_candidate(1, 0, 5, 5), 5);
        assert!(snat_port_candidate(7, 3, 1, 65535) >= 1);
    }
}
