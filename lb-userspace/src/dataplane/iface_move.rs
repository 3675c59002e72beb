//! Moving live connections to a re-created interface. Each flow entry
//! names its egress interface; those of the old device would be sent to an
//! interface that no longer exists. The data path re-learns the way to a
//! backend by itself (FIB lookup, once a second), but the way to a client
//! is where the client's first packet came in and is never looked up again,
//! so the agent rewrites every entry once, when the device changes.

use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData, MapError};
use lb_common::{Flow, FlowKey};

use super::maps::Maps;

/// Only rewrite an entry that still exists: one the data path or the GC
/// removed meanwhile stays removed.
const BPF_EXIST: u64 = 2;

impl Maps {
    /// Points every flow and handshake entry that leaves through interface
    /// `from` at interface `to`; returns how many were moved.
    pub fn move_flows(&mut self, from: u32, to: u32) -> Result<usize> {
        Ok(move_in(&mut self.flows, "flows", from, to)?
            + move_in(&mut self.half_open, "half_open", from, to)?)
    }
}

fn move_in(
    map: &mut HashMap<MapData, FlowKey, Flow>,
    name: &str,
    from: u32,
    to: u32,
) -> Result<usize> {
    let keys: Vec<FlowKey> = map.keys().filter_map(Result::ok).collect();
    let mut moved = 0;
    for key in keys {
        let mut flow = match map.get(&key, 0) {
            Ok(flow) => flow,
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {key:?} from {name}")),
        };
        if flow.ifindex != from {
            continue;
        }
        flow.ifindex = to;
        match map.insert(key, flow, BPF_EXIST) {
            Ok(()) => moved += 1,
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("rewriting {key:?} in {name}")),
        }
    }
    Ok(moved)
}
