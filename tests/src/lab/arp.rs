//! ARP and raw Ethernet in a lab: each node's MAC, what its ARP cache
//! holds, and who answers ARP for an address, seen from another lab host:
//! the network's view of which node holds a VIP. Address lists alone cannot
//! tell after a `kill -9` (the dead agent's VIPs stay on its interface and
//! only its XDP lease keeps them quiet), and this is what a client's next
//! ARP request would get.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::setup::Lab;
use crate::packet::{ETHERTYPE_ARP, Mac};

impl Lab {
    /// The MAC address of `node`'s eth0.
    pub fn mac(&self, node: &str) -> Result<Mac> {
        let out = self.exec_in(node, &["ip", "-j", "link", "show", "dev", "eth0"])?;
        let links: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("ip -j link in {node} printed no JSON"))?;
        links[0]["address"]
            .as_str()
            .and_then(parse_mac)
            .with_context(|| format!("no MAC for eth0 in {node}: {links}"))
    }

    /// The link-layer address `node`'s ARP cache holds for `ip`, if any
    /// (entries in state FAILED or INCOMPLETE have none).
    pub fn neigh(&self, node: &str, ip: Ipv4Addr) -> Result<Option<Mac>> {
        let ip = ip.to_string();
        let out = self.exec_in(
            node,
            &["ip", "-j", "-4", "neigh", "show", &ip, "dev", "eth0"],
        )?;
        let entries: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("ip -j neigh in {node} printed no JSON"))?;
        Ok(entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["dst"].as_str() == Some(ip.as_str()))
            .find_map(|e| e["lladdr"].as_str().and_then(parse_mac)))
    }

    /// Sends one ARP request "who has `target`, tell `sender`" from
    /// `node`'s eth0 and returns the MACs that answered within `listen`
    /// (replies addressed to `node`, for `target`, in arrival order).
    pub fn arp_who_has(
        &self,
        node: &str,
        sender: Ipv4Addr,
        target: Ipv4Addr,
        listen: Duration,
    ) -> Result<Vec<Mac>> {
        let own = self.mac(node)?;
        self.run_in(node, move || -> Result<Vec<Mac>> {
            let socket = PacketSocket::open("eth0", ETHERTYPE_ARP)?;
            socket.send(&arp_request(own, sender, target))?;
            let deadline = Instant::now() + listen;
            let mut answers = Vec::new();
            while let Some(frame) = socket.recv_until(deadline)? {
                if let Some(mac) = arp_reply_from(&frame, own, sender, target) {
                    answers.push(mac);
                }
            }
            Ok(answers)
        })?
    }

    /// Sends raw Ethernet frames out of `node`'s eth0.
    pub fn send_frames(&self, node: &str, frames: &[Vec<u8>]) -> Result<()> {
        self.run_in(node, || -> Result<()> {
            // Protocol 0: this socket sends only.
            let socket = PacketSocket::open("eth0", 0)?;
            for frame in frames {
                socket.send(frame)?;
            }
            Ok(())
        })?
    }
}

/// One probe of an [`ArpSampler`]: when it was sent and the MACs that
/// answered before the next one (distinct, in arrival order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArpSample {
    pub at: Instant,
    pub answers: Vec<Mac>,
}

/// Asks "who has the VIP" from a lab host at a fixed period on its own
/// thread, for as long as a test runs: the network's view of the VIP over
/// time, where single probes would see only chosen instants.
pub struct ArpSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Vec<ArpSample>>>>,
}

/// A sampler gives up after this long even if never stopped, so a test
/// that loses it cannot leave it running.
const SAMPLER_LIMIT: Duration = Duration::from_secs(600);

impl Lab {
    /// Starts sampling who answers ARP for `target` from `node`'s eth0
    /// (asking as `sender`), one request every `period`; each probe's
    /// answers are those that arrive before the next probe.
    pub fn sample_arp(
        &self,
        node: &str,
        sender: Ipv4Addr,
        target: Ipv4Addr,
        period: Duration,
    ) -> Result<ArpSampler> {
        let own = self.mac(node)?;
        let netns = self.netns(node)?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("arp-sampler-{node}"))
            .spawn(move || {
                super::netns::run_in(&netns, move || {
                    let socket = PacketSocket::open("eth0", ETHERTYPE_ARP)?;
                    let request = arp_request(own, sender, target);
                    let started = Instant::now();
                    let mut samples = Vec::new();
                    while !stop_flag.load(Ordering::Relaxed) && started.elapsed() < SAMPLER_LIMIT {
                        let at = Instant::now();
                        socket.send(&request)?;
                        let mut answers: Vec<Mac> = Vec::new();
                        while let Some(frame) = socket.recv_until(at + period)? {
                            if let Some(mac) = arp_reply_from(&frame, own, sender, target)
                                && !answers.contains(&mac)
                            {
                                answers.push(mac);
                            }
                        }
                        samples.push(ArpSample { at, answers });
                    }
                    Ok(samples)
                })?
            })
            .context("could not start the ARP sampler thread")?;
        Ok(ArpSampler {
            stop,
            thread: Some(thread),
        })
    }
}

impl ArpSampler {
    /// Stops sampling and returns every sample, oldest first.
    pub fn finish(mut self) -> Result<Vec<ArpSample>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finish runs once");
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the ARP sampler thread panicked"))?
    }
}

impl Drop for ArpSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

/// The samples at which more than one MAC answered: two nodes claiming the
/// address at once.
pub fn contested(samples: &[ArpSample]) -> Vec<&ArpSample> {
    samples.iter().filter(|s| s.answers.len() > 1).collect()
}

/// The longest time between two answered probes with only unanswered ones
/// in between (zero when no probe went unanswered between the first and
/// the last answer). It overstates the real silence by up to one period.
pub fn longest_silence(samples: &[ArpSample]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut previous_index: Option<usize> = None;
    for (index, sample) in samples.iter().enumerate() {
        if sample.answers.is_empty() {
            continue;
        }
        if let Some(previous) = previous_index
            && index > previous + 1
        {
            longest = longest.max(sample.at - samples[previous].at);
        }
        previous_index = Some(index);
    }
    longest
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// `aa:bb:cc:dd:ee:ff`, for messages.
pub fn mac_text(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A broadcast ARP request, padded to the Ethernet minimum.
pub fn arp_request(from: Mac, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&from);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&from);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(60, 0);
    f
}

/// The answering MAC when `frame` is an ARP reply to `to`/`asker` about
/// `target`; gratuitous announcements (broadcast) do not count.
fn arp_reply_from(frame: &[u8], to: Mac, asker: Ipv4Addr, target: Ipv4Addr) -> Option<Mac> {
    if frame.len() < 42 || frame[0..6] != to || frame[12..14] != ETHERTYPE_ARP.to_be_bytes() {
        return None;
    }
    let arp = &frame[14..42];
    let is_reply = arp[0..8] == [0, 1, 0x08, 0x00, 6, 4, 0, 2];
    let about_target = arp[14..18] == target.octets();
    let for_asker = arp[24..28] == asker.octets();
    (is_reply && about_target && for_asker).then(|| arp[8..14].try_into().expect("6 bytes"))
}

/// An AF_PACKET socket bound to one interface of the calling thread's
/// namespace.
pub(super) struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// `protocol`: the Ethernet type to receive (0: none, send only).
    pub(super) fn open(iface: &str, protocol: u16) -> Result<Self> {
        let name = std::ffi::CString::new(iface)?;
        // SAFETY: a NUL-terminated name; the call only reads it.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {iface} in this namespace");
        }
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol.to_be()),
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error())
                .context("could not open a packet socket (needs root)");
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: all-zero is a valid sockaddr_ll; the fields are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol.to_be();
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("could not bind a packet socket to {iface}"));
        }
        Ok(PacketSocket { fd })
    }

    pub(super) fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n != frame.len() as isize {
            return Err(std::io::Error::last_os_error()).context("could not send a frame");
        }
        Ok(())
    }

    /// The next frame, or None once `deadline` has passed.
    fn recv_until(&self, deadline: Instant) -> Result<Option<Vec<u8>>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("poll on a packet socket failed");
            }
            if rc == 0 {
                continue;
            }
            let mut buf = vec![0u8; 2048];
            // SAFETY: the buffer is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error())
                    .context("recv on a packet socket failed");
            }
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_replies_are_told_from_requests_and_announcements() {
        let client = [2, 0, 0, 0, 0, 1];
        let node = [2, 0, 0, 0, 0, 2];
        let asker = Ipv4Addr::new(203, 0, 113, 10);
        let vip = Ipv4Addr::new(192, 0, 2, 10);
        let request = arp_request(client, asker, vip);
        assert_eq!(request.len(), 60);
        assert_eq!(arp_reply_from(&request, client, asker, vip), None);
        // The reply a kernel sends: swap roles, op 2, unicast to the asker.
        let mut reply = Vec::new();
        reply.extend_from_slice(&client);
        reply.extend_from_slice(&node);
        reply.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        reply.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]);
        reply.extend_from_slice(&node);
        reply.extend_from_slice(&vip.octets());
        reply.extend_from_slice(&client);
        reply.extend_from_slice(&asker.octets());
        assert_eq!(arp_reply_from(&reply, client, asker, vip), Some(node));
        assert_eq!(
            arp_reply_from(&reply, client, asker, Ipv4Addr::new(192, 0, 2, 20)),
            None
        );
        let mut broadcast = reply.clone();
        broadcast[0..6].copy_from_slice(&[0xff; 6]);
        assert_eq!(arp_reply_from(&broadcast, client, asker, vip), None);
    }

    #[test]
    fn silences_are_measured_between_answered_probes_and_contests_found() {
        let t0 = Instant::now();
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let sample = |ms: u64, answers: Vec<Mac>| ArpSample {
            at: t0 + Duration::from_millis(ms),
            answers,
        };
        let samples = vec![
            sample(0, vec![]),
            sample(50, vec![a]),
            sample(100, vec![]),
            sample(150, vec![]),
            sample(200, vec![b]),
            sample(250, vec![b, a]),
            sample(300, vec![b]),
            sample(350, vec![]),
        ];
        // Before the first and after the last answer do not count.
        assert_eq!(longest_silence(&samples), Duration::from_millis(150));
        assert_eq!(contested(&samples), [&samples[5]]);
        assert_eq!(longest_silence(&samples[4..7]), Duration::ZERO);
    }

    #[test]
    fn macs_parse_and_print() {
        let mac = parse_mac("0a:1b:2c:3d:4e:5f").unwrap();
        assert_eq!(mac, [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]);
        assert_eq!(mac_text(&mac), "0a:1b:2c:3d:4e:5f");
        assert_eq!(parse_mac("0a:1b:2c:3d:4e"), None);
        assert_eq!(parse_mac("0a:1b:2c:3d:4e:5f:00"), None);
    }
}
