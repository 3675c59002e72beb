//! Weighted Maglev lookup table (after Eisenbud et al., "Maglev: A Fast and
//! Reliable Software Network Load Balancer", NSDI 2016).
//!
//! The data path picks a backend with `table[hash(client) % M]`. The table must
//! (a) give each backend a share of slots proportional to its weight, (b) move
//! few slots when a backend comes or goes, so established clients keep their
//! backend, and (c) come out identical on both nodes of a pair, so a client
//! keeps its backend across a failover.
//!
//! How it is built:
//! - As in Maglev, each backend has a preference list over the slots,
//!   `(offset + j * skip) mod M`, with `offset` and `skip` from two fixed-key
//!   SipHashes of its name. With `M` prime the list visits every slot once.
//! - Each backend is owed `M * w / W` slots: it claims the whole part of that
//!   (stage 1), and backends with a fractional part compete for the slots left
//!   over, one each at most (stage 2). Every share is so within one slot of the
//!   weights, whatever the backend count.
//! - Who claims next is decided by "virtual time": entry `j` of a backend's list
//!   comes up at `-ln(1 - (j + 1/2) / M) / w`. A slot's position in a list is
//!   uniform, so these times are exponential with rate `w`, and the first
//!   backend to reach a slot is backend `b` with probability `w_b / W` (weighted
//!   rendezvous). A backend that has its quota stops; the others go on.
//!
//! Why not Maglev's round robin (each backend in turn claims its next free
//! slot)? Its shares are exact too, but its last rounds are a scramble for the
//! few free slots, and removing one backend reshuffled up to 1.4% of M beyond
//! the removed backend's slots (1000 backends, M = 65537, weights 1..5 and one
//! of 10, removing the heavy one). With virtual times, slots change hands only
//! along short chains at the end; the same case moves about 0.7% of M beyond
//! the removed backend's slots. The extra grows with the removed backend's
//! share: removing one of 7x the average weight among 1000 moved 0.9% of M
//! beyond its slots, still inside the spec's bound (its slots + 1% of M), which
//! the tests assert.
//!
//! Everything depends only on `(name, weight, id)` of the backends: the input is
//! sorted by name first, the hash keys are constants and the logarithm is the
//! pure-Rust `libm` one, so both nodes compute the same bits.

use std::cmp::{Ordering, Reverse};
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
/// backends with the same name share a preference list, which still gives a full
/// table with the right shares but no stability between the two.
///
/// Each backend of weight > 0 gets `size * w / W` slots, rounded down or up: within
/// one slot of its exact share. A backend whose share is below one slot (a huge
/// weight ratio) may get none.
///
/// A `size` that is not prime is the caller's error (config validation rejects it
/// with [`is_prime`]), but it does not panic: preference lists may then skip slots,
/// and the slots no list reached are handed out in slot order to the backends still
/// owed some. Shares stay as above; stability is not promised.
pub fn build(backends: &[MaglevBackend<'_>], size: u32) -> Vec<u32> {
    let m = size as usize;
    let mut table = vec![NO_BACKEND; m];
    let mut live: Vec<&MaglevBackend<'_>> = backends.iter().filter(|b| b.weight > 0).collect();
    if m == 0 || live.is_empty() {
        return table;
    }
    live.sort_by(|a, b| (a.name, a.id, a.weight).cmp(&(b.name, b.id, b.weight)));

    let clock = Clock::new(size);
    let mut walkers: Vec<Walker> = live.iter().map(|b| Walker::new(b, size)).collect();
    let total: u128 = live.iter().map(|b| u128::from(b.weight)).sum();
    for walker in &mut walkers {
        let exact = u128::from(size) * u128::from(walker.weight);
        // exact / total <= size: fits in u32.
        walker.whole = (exact / total) as u32;
        walker.quota = walker.whole;
        walker.fraction = exact % total != 0;
    }

    // Stage 1: the whole part of every share.
    let whole: usize = walkers.iter().map(|w| w.quota as usize).sum();
    let mut filled = claim_in_time_order(&mut table, &mut walkers, &clock, whole);
    // Stage 2: the slots left by rounding down, one more for some backends with
    // a fractional share (there are always more of those than slots left). Only
    // with a non-prime size can stage 1 fall short; then the fill pass does it all.
    if filled == whole && filled < m {
        for walker in walkers.iter_mut().filter(|w| w.fraction) {
            walker.quota += 1;
        }
        filled += claim_in_time_order(&mut table, &mut walkers, &clock, m - filled);
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
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    // Every prime above 3 is 6k - 1 or 6k + 1.
    let n = u64::from(n);
    let mut d = 5u64;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
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
/// clients a rebuild sends elsewhere, worth logging on every reload. Slots past the
/// end of the shorter table count as changed.
pub fn changed_slots(before: &[u32], after: &[u32]) -> usize {
    let common = before.iter().zip(after).filter(|(a, b)| a != b).count();
    common + before.len().abs_diff(after.len())
}

/// Backends claim their next free preferred slot in virtual-time order until
/// `budget` slots are claimed or no backend is owed more. Returns the count.
fn claim_in_time_order(
    table: &mut [u32],
    walkers: &mut [Walker],
    clock: &Clock,
    budget: usize,
) -> usize {
    let mut queue: BinaryHeap<Reverse<Due>> = BinaryHeap::with_capacity(walkers.len());
    for (rank, walker) in walkers.iter_mut().enumerate() {
        if walker.claimed < walker.quota
            && let Some(due) = walker.next_due(table, clock, rank)
        {
            queue.push(Reverse(due));
        }
    }
    let mut claimed = 0;
    while let Some(Reverse(due)) = queue.pop() {
        let walker = &mut walkers[due.rank];
        if table[due.slot] == NO_BACKEND {
            table[due.slot] = walker.id;
            walker.claimed += 1;
            claimed += 1;
            if claimed == budget {
                break;
            }
            if walker.claimed == walker.quota {
                continue;
            }
        }
        // The slot went to an earlier backend meanwhile, or this one is owed more.
        if let Some(next) = walker.next_due(table, clock, due.rank) {
            queue.push(Reverse(next));
        }
    }
    claimed
}

/// Hands out the slots no preference list reached (non-prime sizes only) in slot
/// order: first to the backends still short of the whole part of their share,
/// then one more each to backends with a fractional share, in name order.
fn fill_unreached(table: &mut [u32], walkers: &mut [Walker]) {
    let mut free = table.iter_mut().filter(|s| **s == NO_BACKEND);
    for pass in [Pass::Whole, Pass::Fraction] {
        for walker in walkers.iter_mut() {
            let owed = match pass {
                Pass::Whole => walker.whole,
                Pass::Fraction => walker.whole + u32::from(walker.fraction),
            };
            while walker.claimed < owed {
                let Some(slot) = free.next() else { return };
                *slot = walker.id;
                walker.claimed += 1;
            }
        }
    }
}

enum Pass {
    Whole,
    Fraction,
}

/// `-ln(1 - (j + 1/2) / M)` for every list position `j`: the virtual time of
/// entry `j` for a backend of weight 1. Computed once per build.
struct Clock {
    times: Vec<f64>,
}

impl Clock {
    fn new(size: u32) -> Clock {
        let m = f64::from(size);
        let times = (0..size)
            .map(|j| -libm::log1p(-(f64::from(j) + 0.5) / m))
            .collect();
        Clock { times }
    }
}

/// One backend walking its preference list.
struct Walker {
    id: u32,
    weight: u32,
    /// Slots it is owed so far: the whole part of its share, plus one in stage 2
    /// if its share has a fractional part.
    quota: u32,
    /// The whole part of its exact share `M * w / W`.
    whole: u32,
    /// Its exact share is not a whole number.
    fraction: bool,
    claimed: u32,
    /// The next slot of the preference list to look at, and its index in the list.
    pos: u32,
    index: u32,
    skip: u32,
}

impl Walker {
    fn new(backend: &MaglevBackend<'_>, size: u32) -> Walker {
        let name = backend.name.as_bytes();
        let offset = SipHasher13::new_with_keys(OFFSET_KEYS.0, OFFSET_KEYS.1).hash(name);
        let skip = SipHasher13::new_with_keys(SKIP_KEYS.0, SKIP_KEYS.1).hash(name);
        let size64 = u64::from(size);
        Walker {
            id: backend.id,
            weight: backend.weight,
            quota: 0,
            whole: 0,
            fraction: false,
            claimed: 0,
            pos: (offset % size64) as u32,
            index: 0,
            // In 1..size: with a prime size every skip is coprime to it.
            skip: if size > 1 {
                (skip % (size64 - 1) + 1) as u32
            } else {
                0
            },
        }
    }

    /// Advances to the next free slot of this backend's preference list and says
    /// when (in virtual time) it comes up; `None` once the list is used up (never
    /// with a prime size while a slot is free).
    fn next_due(&mut self, table: &[u32], clock: &Clock, rank: usize) -> Option<Due> {
        let size = table.len() as u64;
        while (self.index as usize) < table.len() {
            let slot = self.pos as usize;
            let index = self.index;
            self.index += 1;
            // pos + skip < 2 * size <= 2^33: add in u64.
            let next = u64::from(self.pos) + u64::from(self.skip);
            self.pos = if next >= size {
                (next - size) as u32
            } else {
                next as u32
            };
            if table[slot] == NO_BACKEND {
                let time = clock.times[index as usize] / f64::from(self.weight);
                return Some(Due { time, rank, slot });
            }
        }
        None
    }
}

/// A backend's claim on a slot at a virtual time. Earlier time first, then the
/// backend whose name sorts first (`rank`): a total, deterministic order.
struct Due {
    time: f64,
    rank: usize,
    slot: usize,
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        self.time
            .total_cmp(&other.time)
            .then(self.rank.cmp(&other.rank))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Due {}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u32 = 65537;

    /// Names `be-0000`.. with ids 1.. and the given weights.
    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("be-{i:04}")).collect()
    }

    fn backends<'a>(names: &'a [String], weight: impl Fn(usize) -> u32) -> Vec<MaglevBackend<'a>> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| MaglevBackend {
                id: i as u32 + 1,
                name,
                weight: weight(i),
            })
            .collect()
    }

    /// Weights 1..5 in turn, and one backend (the middle one) of weight 10.
    fn mixed(n: usize) -> impl Fn(usize) -> u32 {
        move |i| if i == n / 2 { 10 } else { (i % 5) as u32 + 1 }
    }

    /// A deterministic shuffle (xorshift), so the tests need no rand crate.
    fn shuffled<T: Clone>(items: &[T], mut seed: u64) -> Vec<T> {
        let mut out = items.to_vec();
        for i in (1..out.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            out.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        out
    }

    /// Asserts every backend's slot count is within max(1% relative, 1 slot) of its
    /// exact share, and that no slot is empty.
    fn assert_shares(backends: &[MaglevBackend<'_>], table: &[u32]) {
        let size = table.len() as f64;
        let total: f64 = backends.iter().map(|b| f64::from(b.weight)).sum();
        let counts = slot_counts(table);
        assert_eq!(
            counts.values().map(|&c| c as usize).sum::<usize>(),
            table.len(),
            "a slot is empty"
        );
        for b in backends {
            let exact = size * f64::from(b.weight) / total;
            let got = f64::from(counts.get(&b.id).copied().unwrap_or(0));
            let allowed = (exact * 0.01).max(1.0);
            assert!(
                (got - exact).abs() <= allowed,
                "{} (weight {}) holds {got} slots, exact share {exact:.2}, allowed +-{allowed:.2}",
                b.name,
                b.weight
            );
        }
    }

    #[test]
    fn shares_follow_weights() {
        for n in [3, 10, 100, 1000] {
            let names = names(n);
            for set in [backends(&names, |_| 1), backends(&names, mixed(n))] {
                assert_shares(&set, &build(&set, M));
            }
        }
    }

    #[test]
    fn shares_hold_for_uneven_weights() {
        let names = names(50);
        let set = backends(&names, |i| [1, 7, 100, 3, 1000][i % 5]);
        assert_shares(&set, &build(&set, M));
        let small = build(&set, 251);
        assert_shares(&set, &small);
    }

    /// Removes `removed` from `set` and checks the moved slots against the bound.
    /// Returns the slots moved beyond the removed backend's own.
    fn check_removal(set: &[MaglevBackend<'_>], removed: usize) -> usize {
        let before = build(set, M);
        let mut rest = set.to_vec();
        let gone = rest.remove(removed);
        let after = build(&rest, M);
        let held = slot_counts(&before)[&gone.id] as usize;
        // Every slot of the removed backend changes; count the others too.
        let moved = changed_slots(&before, &after);
        assert!(!after.contains(&gone.id));
        assert!(
            moved * 100 <= held * 100 + M as usize,
            "{} backends, removing {} (weight {}, {held} slots) moved {moved} slots",
            set.len(),
            gone.name,
            gone.weight
        );
        moved - held
    }

    #[test]
    fn removing_a_backend_moves_little_more_than_its_slots() {
        for n in [3, 10, 100, 1000] {
            let names = names(n);
            for set in [backends(&names, |_| 1), backends(&names, mixed(n))] {
                // First, middle (the weight-10 one when mixed), last by name.
                let mut worst = 0;
                for removed in [0, n / 2, n - 1] {
                    worst = worst.max(check_removal(&set, removed));
                }
                println!("{n} backends: at most {worst} slots moved beyond the removed backend's");
            }
        }
    }

    #[test]
    fn adding_a_backend_moves_little_more_than_its_slots() {
        for n in [3, 10, 100, 1000] {
            let names = names(n);
            let set = backends(&names, mixed(n));
            let before = build(&set, M);
            // A name sorting first, one in the middle, one last; weights 1, 3 and 10.
            for (name, weight) in [("a-new", 1), ("be-0001a", 3), ("zz-new", 10)] {
                let mut grown = set.clone();
                grown.push(MaglevBackend {
                    id: 9999,
                    name,
                    weight,
                });
                let after = build(&grown, M);
                let gained = slot_counts(&after)[&9999] as usize;
                let moved = changed_slots(&before, &after);
                assert!(
                    moved * 100 <= gained * 100 + M as usize,
                    "{n} backends, adding {name} (weight {weight}, {gained} slots) moved {moved} slots"
                );
                assert_shares(&grown, &after);
            }
        }
    }

    #[test]
    fn same_backends_build_the_same_table_in_any_order() {
        let names = names(100);
        let set = backends(&names, mixed(100));
        let table = build(&set, M);
        assert_eq!(table, build(&set, M));
        for seed in [1, 7, 0x9e37_79b9] {
            assert_eq!(
                table,
                build(&shuffled(&set, seed), M),
                "input order changed the table"
            );
        }
        let mut reversed = set.clone();
        reversed.reverse();
        assert_eq!(table, build(&reversed, M));
    }

    #[test]
    fn ids_are_written_but_do_not_steer_the_assignment() {
        let names = names(10);
        let set = backends(&names, mixed(10));
        let table = build(&set, M);
        let mut renumbered = set.clone();
        renumbered[3].id = 777;
        let other = build(&renumbered, M);
        let expected: Vec<u32> = table
            .iter()
            .map(|&id| if id == set[3].id { 777 } else { id })
            .collect();
        assert_eq!(other, expected);
    }

    #[test]
    fn weights_and_names_do_steer_the_assignment() {
        let names = names(10);
        let set = backends(&names, |_| 1);
        let table = build(&set, M);
        let mut heavier = set.clone();
        heavier[0].weight = 2;
        assert_ne!(table, build(&heavier, M));
        let mut renamed = set.clone();
        renamed[0].name = "other";
        assert_ne!(table, build(&renamed, M));
    }

    #[test]
    fn no_backends_or_no_weight_leave_every_slot_empty() {
        assert_eq!(build(&[], M), vec![NO_BACKEND; M as usize]);
        let names = names(3);
        let idle = backends(&names, |_| 0);
        assert_eq!(build(&idle, M), vec![NO_BACKEND; M as usize]);
        assert!(slot_counts(&build(&idle, M)).is_empty());
    }

    #[test]
    fn a_zero_weight_backend_gets_no_slot() {
        let names = names(4);
        let set = backends(&names, |i| if i == 2 { 0 } else { 1 });
        let table = build(&set, M);
        let counts = slot_counts(&table);
        assert!(!counts.contains_key(&3));
        assert_eq!(counts.len(), 3);
        // Same table as without it at all.
        let without: Vec<_> = set.iter().copied().filter(|b| b.weight > 0).collect();
        assert_eq!(table, build(&without, M));
    }

    #[test]
    fn one_backend_takes_every_slot() {
        let one = [MaglevBackend {
            id: 42,
            name: "solo",
            weight: 5,
        }];
        assert_eq!(build(&one, M), vec![42; M as usize]);
    }

    #[test]
    fn very_large_weight_ratios_do_not_overflow() {
        let set = [
            MaglevBackend {
                id: 1,
                name: "huge",
                weight: u32::MAX,
            },
            MaglevBackend {
                id: 2,
                name: "tiny",
                weight: 1,
            },
            MaglevBackend {
                id: 3,
                name: "big",
                weight: u32::MAX / 2,
            },
        ];
        let table = build(&set, M);
        assert_shares(&set, &table);
        let counts = slot_counts(&table);
        // tiny's exact share is about 1e-5 slots: rounded down to none.
        assert!(!counts.contains_key(&2));
        assert!(counts[&1].abs_diff(2 * counts[&3]) <= 2);
    }

    #[test]
    fn sizes_that_are_not_prime_do_not_panic() {
        let names = names(7);
        let set = backends(&names, mixed(7));
        for size in [0, 1, 2, 4, 100, 1024, 65536] {
            let table = build(&set, size);
            assert_eq!(table.len(), size as usize);
            if size > 0 {
                assert_shares(&set, &table);
            }
        }
    }

    #[test]
    fn small_prime_rings_are_filled_too() {
        let names = names(5);
        let set = backends(&names, |i| i as u32 + 1);
        for size in [2, 3, 13, 251] {
            let table = build(&set, size);
            assert_shares(&set, &table);
        }
    }

    #[test]
    fn is_prime_knows_small_numbers_and_the_ring_sizes() {
        let primes: Vec<u32> = (0..60).filter(|&n| is_prime(n)).collect();
        assert_eq!(
            primes,
            [
                2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59
            ]
        );
        assert!(is_prime(65537));
        assert!(is_prime(65539));
        assert!(!is_prime(65535));
        assert!(!is_prime(65536));
        assert!(!is_prime(65541)); // 3 * 21847
        assert!(!is_prime(25)); // 5 * 5: the 6k - 1 divisor
        assert!(!is_prime(49)); // 7 * 7: the 6k + 1 divisor
        assert!(is_prime(4_294_967_291)); // the largest u32 prime
        assert!(!is_prime(u32::MAX));
    }

    #[test]
    fn helpers_count_slots_and_changes() {
        let table = [1, 2, 2, NO_BACKEND, 3, 3, 3];
        assert_eq!(
            slot_counts(&table),
            BTreeMap::from([(1, 1), (2, 2), (3, 3)])
        );
        assert_eq!(changed_slots(&table, &table), 0);
        assert_eq!(changed_slots(&table, &[1, 2, 3, NO_BACKEND, 3, 3, 3]), 1);
        assert_eq!(changed_slots(&table, &[1, 2]), 5);
    }
}
