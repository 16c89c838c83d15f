//! Choosing a free address inside one pool in O(log n).
//!
//! The allocatable addresses of a pool (its `ips` minus `excludeIPs`, reserved IPs and, for IPv4,
//! the network and broadcast addresses) are numbered densely `0..N`: the `i`-th allocatable
//! address is found by a binary search over the span prefix sums, whatever the gaps between
//! spans. The allocated indices are kept as maximal runs in a `BTreeMap<start, end>`, so memory
//! follows what is allocated (and shrinks when neighbours are allocated together), never the
//! size of the range: an IPv6 /64 with a million allocations is a few runs.
//!
//! Freed addresses are handed out last, so a stale ARP entry or firewall rule does not hit a new
//! pod:
//! - addresses never released during this allocator's life are *fresh*; they are handed out
//!   round robin from a cursor (the last address handed out), like host-local: the next fresh
//!   index after the cursor, wrapping once. A run containing the candidate is skipped in one
//!   step, and because runs are maximal the index after a run is free, so an allocation is two
//!   `BTreeMap` look-ups;
//! - a released address *cools*: it stays in the runs (so round robin skips it) and joins a FIFO
//!   queue; only when no fresh address is left is the longest-cooled one handed out (Calico and
//!   Kube-OVN do the same).
//!
//! The cursor is stored with the pool (`status.lastAllocatedIP`), so across processes the order
//! stays round robin; the cooling queue lives as long as the allocator (the agent keeps it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use crate::range::{IpFamily, IpSet, cmp_ip, ip_to_u128};

/// The pool has no free address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no free IP address left")
    }
}

impl std::error::Error for Exhausted {}

/// How many released addresses the FIFO queue remembers; beyond it the oldest become fresh
/// again (they are the next in line anyway), so memory stays bounded.
pub const DEFAULT_COOLING_LIMIT: usize = 4096;

/// One span of allocatable addresses with the dense index of its first address.
#[derive(Debug, Clone, Copy)]
struct IndexedSpan {
    family: IpFamily,
    lo: u128,
    hi: u128,
    first_index: u128,
}

/// The allocation state of one pool.
///
/// ```
/// use ipam_core::{Allocator, ips};
/// let mut a = Allocator::new(ips!["10.0.0.1-10.0.0.3"]);
/// let x = a.allocate().unwrap();
/// let y = a.allocate().unwrap();
/// a.release(&x);
/// // The released address is reused last: 10.0.0.3 is still fresh.
/// assert_eq!(a.allocate().unwrap().to_string(), "10.0.0.3");
/// assert_eq!(a.allocate().unwrap(), x);
/// assert!(a.allocate().is_err());
/// # let _ = y;
/// ```
#[derive(Debug, Clone)]
pub struct Allocator {
    spans: Vec<IndexedSpan>,
    total: u128,
    /// Maximal runs of occupied (allocated or cooling) indices: start -> end (inclusive).
    runs: BTreeMap<u128, u128>,
    /// Number of occupied indices.
    occupied: u128,
    allocated_in_range: u128,
    /// Released indices in release order (sequence number -> index), and the reverse map.
    cooling: BTreeMap<u64, u128>,
    cooling_seq: HashMap<u128, u64>,
    next_seq: u64,
    cooling_limit: usize,
    /// Allocated addresses that are not allocatable any more (excluded or reserved after the
    /// fact). They are still owned and still counted, never handed out again.
    outside: BTreeSet<IpAddr>,
    /// Index of the last address handed out.
    cursor: Option<u128>,
}

impl Allocator {
    /// An allocator over `allocatable`, nothing allocated, starting at its first address.
    pub fn new(allocatable: IpSet) -> Self {
        let mut spans = Vec::with_capacity(allocatable.span_count());
        let mut total: u128 = 0;
        for f in IpFamily::BOTH {
            for (lo, hi) in allocatable.spans_of(f) {
                spans.push(IndexedSpan {
                    family: f,
                    lo,
                    hi,
                    first_index: total,
                });
                total = total.saturating_add((hi - lo).saturating_add(1));
            }
        }
        Allocator {
            spans,
            total,
            runs: BTreeMap::new(),
            occupied: 0,
            allocated_in_range: 0,
            cooling: BTreeMap::new(),
            cooling_seq: HashMap::new(),
            next_seq: 0,
            cooling_limit: DEFAULT_COOLING_LIMIT,
            outside: BTreeSet::new(),
            cursor: None,
        }
    }

    /// Rebuilds the state of a stored pool: `allocated` are taken, and the round robin resumes
    /// after `last` (the pool's last allocated address, if recorded).
    pub fn restore<'a>(
        allocatable: IpSet,
        allocated: impl IntoIterator<Item = &'a IpAddr>,
        last: Option<IpAddr>,
    ) -> Self {
        let mut a = Allocator::new(allocatable);
        for ip in allocated {
            a.take(*ip);
        }
        a.cursor = last.and_then(|ip| a.index_floor(&ip));
        a
    }

    /// Sets how many released addresses the FIFO queue remembers.
    pub fn with_cooling_limit(mut self, limit: usize) -> Self {
        self.cooling_limit = limit;
        self
    }

    /// Number of allocatable addresses (saturating at `u128::MAX`).
    pub fn capacity(&self) -> u128 {
        self.total
    }

    /// Number of allocated addresses, those outside the allocatable set included.
    pub fn allocated(&self) -> u128 {
        self.allocated_in_range + self.outside.len() as u128
    }

    /// Number of addresses that can still be handed out.
    pub fn free(&self) -> u128 {
        self.total - self.allocated_in_range
    }

    /// The last address handed out by [`Allocator::allocate`], the round-robin cursor.
    pub fn last_allocated(&self) -> Option<IpAddr> {
        self.cursor.map(|i| self.address(i))
    }

    /// Number of runs kept in memory (for memory accounting).
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// Number of released addresses waiting in the FIFO queue.
    pub fn cooling(&self) -> usize {
        self.cooling.len()
    }

    fn address(&self, index: u128) -> IpAddr {
        let k = self.spans.partition_point(|s| s.first_index <= index) - 1;
        let s = &self.spans[k];
        let n = s.lo + (index - s.first_index);
        match s.family {
            IpFamily::V4 => IpAddr::V4((n as u32).into()),
            IpFamily::V6 => IpAddr::V6(n.into()),
        }
    }

    /// The span index whose range holds or precedes `ip` (same family), if any.
    fn span_floor(&self, ip: &IpAddr) -> Option<usize> {
        let key = (IpFamily::of(ip), ip_to_u128(ip));
        let k = self.spans.partition_point(|s| (s.family, s.lo) <= key);
        (k > 0).then(|| k - 1)
    }

    /// The dense index of an allocatable address.
    fn index(&self, ip: &IpAddr) -> Option<u128> {
        let s = &self.spans[self.span_floor(ip)?];
        let n = ip_to_u128(ip);
        (s.family == IpFamily::of(ip) && n <= s.hi).then(|| s.first_index + (n - s.lo))
    }

    /// The index of `ip` or of the allocatable address just below it.
    fn index_floor(&self, ip: &IpAddr) -> Option<u128> {
        let k = self.span_floor(ip)?;
        let s = &self.spans[k];
        let n = ip_to_u128(ip);
        Some(s.first_index + (n.min(s.hi) - s.lo))
    }

    /// Whether `ip` is allocated.
    pub fn is_allocated(&self, ip: &IpAddr) -> bool {
        match self.index(ip) {
            Some(i) => self.run_containing(i).is_some() && !self.cooling_seq.contains_key(&i),
            None => self.outside.contains(ip),
        }
    }

    /// Whether `ip` can be handed out by this pool at all (allocated or not).
    pub fn is_allocatable(&self, ip: &IpAddr) -> bool {
        self.index(ip).is_some()
    }

    fn run_containing(&self, i: u128) -> Option<(u128, u128)> {
        let (&s, &e) = self.runs.range(..=i).next_back()?;
        (e >= i).then_some((s, e))
    }

    /// Marks `ip` as allocated (an existing record); returns false if it already was.
    pub fn take(&mut self, ip: IpAddr) -> bool {
        let Some(i) = self.index(&ip) else {
            return self.outside.insert(ip);
        };
        if self.run_containing(i).is_some() {
            let Some(seq) = self.cooling_seq.remove(&i) else {
                return false;
            };
            self.cooling.remove(&seq);
            self.allocated_in_range += 1;
            return true;
        }
        self.occupy(i);
        self.allocated_in_range += 1;
        true
    }

    fn occupy(&mut self, i: u128) {
        let left = i.checked_sub(1).and_then(|p| self.run_containing(p));
        let right = self.runs.get(&(i + 1)).copied();
        match (left, right) {
            (Some((ls, _)), Some(re)) => {
                self.runs.remove(&(i + 1));
                self.runs.insert(ls, re);
            }
            (Some((ls, _)), None) => {
                self.runs.insert(ls, i);
            }
            (None, Some(re)) => {
                self.runs.remove(&(i + 1));
                self.runs.insert(i, re);
            }
            (None, None) => {
                self.runs.insert(i, i);
            }
        }
        self.occupied += 1;
    }

    fn vacate(&mut self, i: u128) {
        let (s, e) = self.run_containing(i).expect("occupied index");
        self.runs.remove(&s);
        if s < i {
            self.runs.insert(s, i - 1);
        }
        if i < e {
            self.runs.insert(i + 1, e);
        }
        self.occupied -= 1;
    }

    /// Frees `ip`; returns false if it was not allocated.
    pub fn release(&mut self, ip: &IpAddr) -> bool {
        let Some(i) = self.index(ip) else {
            return self.outside.remove(ip);
        };
        if self.run_containing(i).is_none() || self.cooling_seq.contains_key(&i) {
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.cooling.insert(seq, i);
        self.cooling_seq.insert(i, seq);
        self.allocated_in_range -= 1;
        while self.cooling.len() > self.cooling_limit {
            let (_, oldest) = self.cooling.pop_first().expect("non-empty");
            self.cooling_seq.remove(&oldest);
            self.vacate(oldest);
        }
        true
    }

    /// The first free index at or after `from`, without wrapping.
    fn free_from(&self, from: u128) -> Option<u128> {
        let c = match self.run_containing(from) {
            Some((_, e)) => e.checked_add(1)?,
            None => from,
        };
        (c < self.total).then_some(c)
    }

    /// Hands out the next fresh address after the cursor (round robin), or when none is left the
    /// address released longest ago.
    pub fn allocate(&mut self) -> Result<IpAddr, Exhausted> {
        if self.occupied == self.total {
            let (_, i) = self.cooling.pop_first().ok_or(Exhausted)?;
            self.cooling_seq.remove(&i);
            self.allocated_in_range += 1;
            self.cursor = Some(i);
            return Ok(self.address(i));
        }
        let start = match self.cursor {
            Some(c) if c + 1 < self.total => c + 1,
            _ => 0,
        };
        let i = self
            .free_from(start)
            .or_else(|| self.free_from(0))
            .expect("occupied < total means some index is free");
        self.occupy(i);
        self.allocated_in_range += 1;
        self.cursor = Some(i);
        Ok(self.address(i))
    }

    /// The allocated addresses, in address order (allocatable ones, then the others).
    pub fn allocated_ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let mut outside: Vec<IpAddr> = self.outside.iter().copied().collect();
        outside.sort_by(cmp_ip);
        self.runs
            .iter()
            .flat_map(move |(&s, &e)| (s..=e).filter(move |i| !self.cooling_seq.contains_key(i)))
            .map(move |i| self.address(i))
            .chain(outside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ips;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn round_robin_skips_gaps_between_spans() {
        let mut a = Allocator::new(ips!["10.0.0.1", "10.0.0.5-10.0.0.6", "10.0.1.0"]);
        let got: Vec<_> = (0..4).map(|_| a.allocate().unwrap().to_string()).collect();
        assert_eq!(got, ["10.0.0.1", "10.0.0.5", "10.0.0.6", "10.0.1.0"]);
        assert_eq!(a.allocate(), Err(Exhausted));
        assert_eq!(a.run_count(), 1, "all four indices form one run");
    }

    #[test]
    fn released_addresses_are_reused_last_in_release_order() {
        let mut a = Allocator::new(ips!["10.0.0.1-10.0.0.5"]);
        for _ in 0..5 {
            a.allocate().unwrap();
        }
        assert!(a.release(&ip("10.0.0.4")));
        assert!(a.release(&ip("10.0.0.2")));
        assert!(!a.release(&ip("10.0.0.2")), "released twice");
        assert_eq!(
            a.allocate().unwrap(),
            ip("10.0.0.4"),
            "released first, reused first"
        );
        assert_eq!(a.allocate().unwrap(), ip("10.0.0.2"));
        assert_eq!(a.allocate(), Err(Exhausted));

        let mut b = Allocator::new(ips!["10.0.0.1-10.0.0.5"]);
        let x = b.allocate().unwrap();
        b.release(&x);
        assert_eq!(
            b.allocate().unwrap(),
            ip("10.0.0.2"),
            "fresh addresses go before released ones"
        );
    }

    #[test]
    fn restore_resumes_after_the_recorded_cursor() {
        let taken = [ip("10.0.0.1"), ip("10.0.0.2")];
        let mut a = Allocator::restore(ips!["10.0.0.1-10.0.0.4"], &taken, Some(ip("10.0.0.3")));
        assert_eq!(a.allocate().unwrap(), ip("10.0.0.4"));
        assert_eq!(a.allocate().unwrap(), ip("10.0.0.3"));
        // A cursor that is not allocatable any more resumes after its floor.
        let mut b = Allocator::restore(ips!["10.0.0.1-10.0.0.4"], &[], Some(ip("10.0.0.200")));
        assert_eq!(b.allocate().unwrap(), ip("10.0.0.1"));
    }

    #[test]
    fn addresses_outside_the_allocatable_set_are_owned_not_reused() {
        let mut a = Allocator::new(ips!["10.0.0.1-10.0.0.2"]);
        assert!(
            a.take(ip("10.0.0.9")),
            "an excluded address still held by a pod"
        );
        assert!(!a.take(ip("10.0.0.9")));
        assert_eq!((a.allocated(), a.free()), (1, 2));
        assert!(a.is_allocated(&ip("10.0.0.9")));
        assert!(!a.is_allocatable(&ip("10.0.0.9")));
        assert!(a.release(&ip("10.0.0.9")));
        assert_eq!((a.allocated(), a.free()), (0, 2));
    }

    #[test]
    fn ipv6_slash_64_costs_runs_not_addresses() {
        let mut a = Allocator::new(ips!["fd00::/64"]);
        for _ in 0..10_000 {
            a.allocate().unwrap();
        }
        assert_eq!(a.run_count(), 1);
        assert_eq!(a.allocated(), 10_000);
        assert_eq!(a.free(), (1u128 << 64) - 10_000);
        assert_eq!(a.last_allocated(), Some(ip("fd00::270f")));
    }

    #[test]
    fn the_cooling_queue_is_bounded() {
        let mut a = Allocator::new(ips!["10.0.0.0/24"]).with_cooling_limit(2);
        let got: Vec<_> = (0..4).map(|_| a.allocate().unwrap()).collect();
        for x in &got {
            a.release(x);
        }
        assert_eq!(a.cooling(), 2);
        assert_eq!(a.free(), 256);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        Release(u8),
        Take(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Allocate),
            3 => any::<u8>().prop_map(Op::Release),
            1 => any::<u8>().prop_map(Op::Take),
        ]
    }

    /// The allocation order spelt out naively over a 256-address block with holes.
    #[derive(Default)]
    struct Model {
        fresh: BTreeSet<u8>,
        cooling: VecDeque<u8>,
        allocated: BTreeSet<u8>,
        outside: BTreeSet<u8>,
        cursor: Option<u8>,
        limit: usize,
    }

    impl Model {
        fn allocate(&mut self) -> Option<u8> {
            let after = self.cursor.map_or(0u16, |c| c as u16 + 1);
            let next = self
                .fresh
                .range(after.min(256) as u8..)
                .next()
                .filter(|_| after < 256)
                .or_else(|| self.fresh.iter().next())
                .copied();
            let x = match next {
                Some(x) => {
                    self.fresh.remove(&x);
                    x
                }
                None => self.cooling.pop_front()?,
            };
            self.allocated.insert(x);
            self.cursor = Some(x);
            Some(x)
        }

        fn release(&mut self, x: u8) -> bool {
            if self.outside.remove(&x) {
                return true;
            }
            if !self.allocated.remove(&x) {
                return false;
            }
            self.cooling.push_back(x);
            while self.cooling.len() > self.limit {
                let y = self.cooling.pop_front().unwrap();
                self.fresh.insert(y);
            }
            true
        }

        fn take(&mut self, x: u8, allocatable: bool) -> bool {
            if !allocatable {
                return self.outside.insert(x);
            }
            if self.allocated.contains(&x) {
                return false;
            }
            self.fresh.remove(&x);
            self.cooling.retain(|y| *y != x);
            self.allocated.insert(x)
        }
    }

    proptest! {
        /// Against the naive model: the same address for every allocation (round robin over
        /// fresh addresses, then the released ones in release order), the same counts.
        #[test]
        fn matches_a_naive_model(
            holes in prop::collection::vec(any::<u8>(), 0..40),
            ops in prop::collection::vec(op(), 0..400),
            limit in 1usize..12,
        ) {
            let addr = |o: u8| IpAddr::from([10, 0, 0, o]);
            let holes: BTreeSet<u8> = holes.into_iter().collect();
            let allocatable: IpSet = (0..=255u8).filter(|o| !holes.contains(o)).map(addr).collect();
            let mut a = Allocator::new(allocatable.clone()).with_cooling_limit(limit);
            let mut m = Model {
                fresh: (0..=255u8).filter(|o| !holes.contains(o)).collect(),
                limit,
                ..Default::default()
            };
            for op in ops {
                match op {
                    Op::Allocate => prop_assert_eq!(a.allocate().ok(), m.allocate().map(addr)),
                    Op::Release(o) => prop_assert_eq!(a.release(&addr(o)), m.release(o)),
                    Op::Take(o) => prop_assert_eq!(a.take(addr(o)), m.take(o, !holes.contains(&o))),
                }
                prop_assert_eq!(a.allocated(), (m.allocated.len() + m.outside.len()) as u128);
                prop_assert_eq!(a.free(), allocatable.len() - m.allocated.len() as u128);
                let mut want: Vec<IpAddr> = m.allocated.iter().map(|o| addr(*o)).collect();
                want.extend(m.outside.iter().map(|o| addr(*o)));
                prop_assert_eq!(a.allocated_ips().collect::<Vec<_>>(), want);
                prop_assert_eq!(a.cooling(), m.cooling.len());
            }
        }
    }
}
