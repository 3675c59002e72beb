//! Who answers ARP for an address, asked again and again from one lab host
//! for as long as a test runs: the network's view of a failover, sample by
//! sample. Two MACs in one sample is two nodes claiming the address at
//! once; a run of empty samples is a time when no node answered.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::arp::{PacketSocket, arp_reply_from, arp_request};
use super::netns;
use super::setup::Lab;
use crate::packet::{ETHERTYPE_ARP, Mac};

/// The answers to one ARP request.
#[derive(Clone, Debug)]
pub struct ArpSample {
    pub at: Instant,
    /// Distinct MACs that answered, in arrival order.
    pub macs: Vec<Mac>,
}

/// A running sampler; [`ArpSampler::finish`] returns its samples.
pub struct ArpSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Result<Vec<ArpSample>>>>>,
}

impl Lab {
    /// Asks "who has `target`, tell `asker`" from `node`'s eth0 every
    /// `every` (each request's answers are those that arrive before the
    /// next one) until finished, dropped, or `limit` has passed.
    pub fn start_arp_sampler(
        &self,
        node: &str,
        asker: Ipv4Addr,
        target: Ipv4Addr,
        every: Duration,
        limit: Duration,
    ) -> Result<ArpSampler> {
        let own = self.mac(node)?;
        let netns = self.netns(node)?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("arp-{target}"))
            .spawn(move || {
                netns::run_in(&netns, || sample(own, asker, target, every, limit, &flag))
            })
            .context("could not start the ARP sampler")?;
        Ok(ArpSampler {
            stop,
            thread: Some(thread),
        })
    }
}

impl ArpSampler {
    /// Stops sampling and returns the samples in order.
    pub fn finish(mut self) -> Result<Vec<ArpSample>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finish runs once");
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the ARP sampler panicked"))??
    }
}

impl Drop for ArpSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sample(
    own: Mac,
    asker: Ipv4Addr,
    target: Ipv4Addr,
    every: Duration,
    limit: Duration,
    stop: &AtomicBool,
) -> Result<Vec<ArpSample>> {
    let socket = PacketSocket::open("eth0", ETHERTYPE_ARP)?;
    let request = arp_request(own, asker, target);
    let begin = Instant::now();
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) && begin.elapsed() < limit {
        let at = Instant::now();
        socket.send(&request)?;
        let mut macs: Vec<Mac> = Vec::new();
        while let Some(frame) = socket.recv_until(at + every)? {
            if let Some(mac) = arp_reply_from(&frame, own, asker, target)
                && !macs.contains(&mac)
            {
                macs.push(mac);
            }
        }
        samples.push(ArpSample { at, macs });
    }
    Ok(samples)
}

/// The longest run of samples nobody answered: its length in samples and
/// the time from its first sample to the next answered one (or the last
/// sample).
pub fn longest_silence(samples: &[ArpSample]) -> (usize, Duration) {
    let mut worst = (0, Duration::ZERO);
    let mut run_start: Option<usize> = None;
    for (i, s) in samples.iter().enumerate() {
        match (s.macs.is_empty(), run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(first)) => {
                let span = (i - first, s.at - samples[first].at);
                worst = worst.max(span);
                run_start = None;
            }
            _ => {}
        }
    }
    if let (Some(first), Some(last)) = (run_start, samples.last()) {
        worst = worst.max((samples.len() - first, last.at - samples[first].at));
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(pattern: &[usize]) -> Vec<ArpSample> {
        let origin = Instant::now();
        pattern
            .iter()
            .enumerate()
            .map(|(i, &answers)| ArpSample {
                at: origin + Duration::from_millis(100 * i as u64),
                macs: (0..answers).map(|n| [2, 0, 0, 0, 0, n as u8]).collect(),
            })
            .collect()
    }

    #[test]
    fn the_longest_unanswered_run_is_measured_to_the_next_answer() {
        let (count, span) = longest_silence(&samples(&[1, 0, 1, 0, 0, 0, 1, 1]));
        assert_eq!(count, 3);
        assert_eq!(span, Duration::from_millis(300));
    }

    #[test]
    fn a_silence_at_the_end_counts_up_to_the_last_sample() {
        let (count, span) = longest_silence(&samples(&[1, 0, 0]));
        assert_eq!(count, 2);
        assert_eq!(span, Duration::from_millis(100));
    }

    #[test]
    fn always_answered_is_no_silence() {
        assert_eq!(longest_silence(&samples(&[1, 2, 1])), (0, Duration::ZERO));
    }
}
