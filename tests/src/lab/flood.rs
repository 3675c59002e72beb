//! Spoofed SYN floods from a lab host: SYNs from addresses nobody in the lab
//! owns, written straight onto the host's eth0 with a packet socket, so they
//! reach the LB node as a flood from the Internet would, and nothing answers
//! the SYN-ACKs (they go to the flooding host, whose stack drops them: the
//! addresses are not its own).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::arp::PacketSocket;
use super::setup::Lab;
use crate::packet::{FrameSpec, TcpSpec, tcp_flags};

/// Distinct frames built before the flood starts and sent round and round:
/// building them costs more than sending, and 65,536 tuples from a few
/// hundred addresses are far more than any table the test looks at.
const DISTINCT_FRAMES: usize = 65_536;

/// How long a flood may run and how many frames it may send, whichever ends
/// it first (or `stop`).
#[derive(Clone, Copy, Debug)]
pub struct FloodLimits {
    pub duration: Duration,
    pub max_frames: u64,
    /// Frames per second at most; None: as fast as one thread can.
    pub per_second: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct FloodReport {
    pub sent: u64,
    pub elapsed: Duration,
}

impl FloodReport {
    pub fn per_second(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }
}

/// The spoofed source addresses: the upper halves of the lab's client and
/// front networks (documentation ranges; the lab's own hosts sit in the
/// lower halves), without the subnet broadcasts a host would refuse.
pub fn spoofed_sources() -> Vec<Ipv4Addr> {
    [
        super::topology::CLIENT_NET.octets(),
        super::topology::FRONT_NET.octets(),
    ]
    .into_iter()
    .flat_map(|[a, b, c, _]| (128..=254).map(move |d| Ipv4Addr::new(a, b, c, d)))
    .collect()
}

/// Whether `addr` is one of [`spoofed_sources`].
pub fn is_spoofed(addr: Ipv4Addr) -> bool {
    let [a, b, c, d] = addr.octets();
    let net = Ipv4Addr::new(a, b, c, 0);
    (net == super::topology::CLIENT_NET || net == super::topology::FRONT_NET) && d >= 128
}

impl Lab {
    /// Floods `target` (a VIP and port on LB node `lb`) with SYNs from
    /// [`spoofed_sources`], random ports and sequence numbers (from `seed`),
    /// sent from the client namespace as fast as one thread can, until
    /// `limits` or `stop` end it.
    pub fn syn_flood(
        &self,
        lb: usize,
        target: SocketAddrV4,
        seed: u64,
        limits: FloodLimits,
        stop: &AtomicBool,
    ) -> Result<FloodReport> {
        let src_mac = self.mac("cl")?;
        let dst_mac = self.mac(&self.lb_node_name(lb))?;
        let sources = spoofed_sources();
        let mut random = XorShift(seed | 1);
        let frames: Vec<Vec<u8>> = (0..DISTINCT_FRAMES)
            .map(|_| {
                let r = random.next();
                let source = sources[(r % sources.len() as u64) as usize];
                let port = 1024 + ((r >> 16) % 64_000) as u16;
                let mut f = FrameSpec::tcp(
                    src_mac,
                    dst_mac,
                    source,
                    port,
                    *target.ip(),
                    target.port(),
                    tcp_flags::SYN,
                );
                let t = f.tcp_mut();
                t.seq = (r >> 32) as u32;
                t.options = TcpSpec::syn_options();
                f.build()
            })
            .collect();
        self.run_in("cl", move || -> Result<FloodReport> {
            let socket = PacketSocket::open("eth0", 0)?;
            let start = Instant::now();
            let mut sent = 0u64;
            let mut next = 0usize;
            // The clock and `stop` are read once per batch, not per frame.
            'flood: while start.elapsed() < limits.duration && !stop.load(Ordering::Relaxed) {
                for _ in 0..256 {
                    if sent >= limits.max_frames {
                        break 'flood;
                    }
                    // A full queue (ENOBUFS) is the lab's limit, not an error.
                    if socket.send(&frames[next]).is_ok() {
                        sent += 1;
                    }
                    next = (next + 1) % frames.len();
                }
                if let Some(rate) = limits.per_second {
                    let due = Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
                    if let Some(ahead) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(ahead);
                    }
                }
            }
            Ok(FloodReport {
                sent,
                elapsed: start.elapsed(),
            })
        })?
    }
}

/// Marsaglia's xorshift64: reproducible from the seed, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoofed_sources_are_recognised_and_no_lab_host_is_one() {
        let sources = spoofed_sources();
        assert_eq!(sources.len(), 254);
        assert!(sources.iter().all(|s| is_spoofed(*s)));
        for host in super::super::topology::client_addrs(118).chain([
            super::super::topology::lb_front_addr(1),
            super::super::topology::DEFAULT_VIP,
        ]) {
            assert!(!is_spoofed(host), "{host} is a lab host");
        }
    }
}
