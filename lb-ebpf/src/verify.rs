//! Verifying a checksum that covers a whole L4 message, for the rare packets
//! the program answers (a RST) or translates (an ICMP error) and a host's
//! stack would check first. Never on the forwarding path: there the endpoint
//! checks, and incremental updates keep a right checksum right.

use aya_ebpf::programs::XdpContext;
use lb_common::csum;

use crate::packet::ptr_at;

/// Longest message verified: a standard MTU's worth. Longer ones are not
/// answered or translated (a stray segment or an ICMP error is no reason to
/// sum jumbo frames; the kernel quotes at most 576 bytes in its errors).
pub const MAX_VERIFIED: usize = 1480;

/// Whether the ones' complement sum of the `len` bytes at `off`, added to
/// `start` (a pseudo-header's sum, or 0), folds to all ones. Word by word in
/// a bounded loop: the verifier is happier with fixed-size loads than with
/// variable-length helper calls.
#[inline(always)]
pub fn sums_to_ones(ctx: &XdpContext, off: usize, len: usize, start: u64) -> bool {
    if len > MAX_VERIFIED {
        return false;
    }
    let mut sum = start;
    let mut i = 0;
    while i < MAX_VERIFIED / 2 {
        if 2 * i + 1 >= len {
            break;
        }
        let Some(w) = ptr_at::<u16>(ctx, off + 2 * i) else {
            return false;
        };
        // SAFETY: bounds-checked by ptr_at.
        sum += unsafe { *w } as u64;
        i += 1;
    }
    if len & 1 == 1 {
        // The loop stopped at the last, odd byte.
        let Some(b) = ptr_at::<u8>(ctx, off + 2 * i) else {
            return false;
        };
        // SAFETY: bounds-checked by ptr_at.
        sum += u16::from_ne_bytes([unsafe { *b }, 0]) as u64;
    }
    csum::fold(sum) == 0xffff
}
