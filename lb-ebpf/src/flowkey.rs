//! Building a `FlowKey` without a call to `memset`.
//!
//! Written as a struct literal, the key's three zero pad bytes (offset 13,
//! unaligned) become a `memset` call in BPF: one more frame in the call
//! chain, which the 6.1 verifier charges 32 bytes of the 512-byte combined
//! stack, and a call on every packet. Here `proto` and the pad are one
//! aligned 32-bit store instead.

use core::mem::{MaybeUninit, offset_of, size_of};

use lb_common::FlowKey;

// The layout the single store relies on: proto then three pad bytes ending
// the key, at a 4-byte boundary; the program is little-endian only.
const _: () = {
    assert!(offset_of!(FlowKey, proto) == 12);
    assert!(offset_of!(FlowKey, _pad) == 13);
    assert!(size_of::<FlowKey>() == 16);
    assert!(cfg!(target_endian = "little"));
};

/// The key of a flow; addresses and ports in network order, as in `FlowKey`.
#[inline(always)]
pub fn flow_key(src_ip: u32, dst_ip: u32, src_port: u16, dst_port: u16, proto: u8) -> FlowKey {
    let mut key = MaybeUninit::<FlowKey>::uninit();
    let p = key.as_mut_ptr();
    // SAFETY: every byte of the key is written below: the four fields by
    // name, then proto and the pad together as the last aligned u32 (a
    // little-endian u32 holding `proto` is proto followed by three zeros).
    unsafe {
        (*p).src_ip = src_ip;
        (*p).dst_ip = dst_ip;
        (*p).src_port = src_port;
        (*p).dst_port = dst_port;
        p.cast::<u8>()
            .add(offset_of!(FlowKey, proto))
            .cast::<u32>()
            .write(proto as u32);
        key.assume_init()
    }
}
