//! IP ranges and IP sets in Spiderpool's syntax.
//!
//! Spiderpool writes address lists as strings: a range `10.6.168.171-10.6.168.180`, a single
//! address `10.6.168.171`, and (we also accept) a CIDR `10.6.0.0/16`. An [`IpSet`] holds any
//! number of such entries of both families as sorted, disjoint, non-adjacent spans, so two sets
//! that contain the same addresses are equal whatever way they were written, and every operation
//! is linear in the number of spans, never in the number of addresses: a /64 costs one span.
//!
//! Addresses are handled as integers: IPv4 as `u32` widened to `u128`, IPv6 as `u128`. The two
//! families never mix; an IPv4 address and the IPv4-mapped IPv6 address are different members.

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// The IP version of an address, a pool or a subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// Spiderpool's `ipVersion` number: 4 or 6.
    pub fn version(self) -> i64 {
        match self {
            IpFamily::V4 => 4,
            IpFamily::V6 => 6,
        }
    }

    /// The family for an `ipVersion` number.
    pub fn from_version(v: i64) -> Option<Self> {
        match v {
            4 => Some(IpFamily::V4),
            6 => Some(IpFamily::V6),
            _ => None,
        }
    }

    /// Both families, IPv4 first.
    pub const BOTH: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    fn addr(self, n: u128) -> IpAddr {
        match self {
            IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(n)),
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpFamily::V4 => f.write_str("IPv4"),
            IpFamily::V6 => f.write_str("IPv6"),
        }
    }
}

/// An address as an integer within its family.
pub(crate) fn ip_to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(*a) as u128,
        IpAddr::V6(a) => u128::from(*a),
    }
}

/// An inclusive range of addresses of one family, `start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    start: IpAddr,
    end: IpAddr,
}

impl IpRange {
    /// A range from `start` to `end` inclusive; both of one family and in order.
    pub fn new(start: IpAddr, end: IpAddr) -> Result<Self, Error> {
        if IpFamily::of(&start) != IpFamily::of(&end) {
            return Err(Error::InvalidRange {
                input: format!("{start}-{end}"),
                reason: "the two ends are of different IP versions".into(),
            });
        }
        if ip_to_u128(&start) > ip_to_u128(&end) {
            return Err(Error::InvalidRange {
                input: format!("{start}-{end}"),
                reason: "the start is after the end".into(),
            });
        }
        Ok(IpRange { start, end })
    }

    /// A range holding one address.
    pub fn single(ip: IpAddr) -> Self {
        IpRange { start: ip, end: ip }
    }

    /// Every address of a network, host bits of `net` ignored (`10.6.0.1/16` is 10.6.0.0/16).
    pub fn from_net(net: &IpNet) -> Self {
        let net = net.trunc();
        IpRange {
            start: net.network(),
            end: net.broadcast(),
        }
    }

    /// First address.
    pub fn start(&self) -> IpAddr {
        self.start
    }

    /// Last address.
    pub fn end(&self) -> IpAddr {
        self.end
    }

    /// The family of both ends.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.start)
    }

    /// Number of addresses, saturating at `u128::MAX` (only `::/0` saturates).
    pub fn len(&self) -> u128 {
        (ip_to_u128(&self.end) - ip_to_u128(&self.start)).saturating_add(1)
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for IpRange {
    /// Spiderpool's form: `a-b`, or `a` when the range holds one address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for IpRange {
    type Err = Error;

    /// Parses `a-b`, `a` or `net/len` (surrounding spaces allowed).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidRange {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(bad("empty entry"));
        }
        if t.contains('/') {
            let net: IpNet = t
                .parse()
                .map_err(|_| bad("not a CIDR (expected e.g. 10.6.0.0/16)"))?;
            return Ok(IpRange::from_net(&net));
        }
        // An IPv6 address contains no '-', so the first '-' splits a range of either family.
        if let Some((a, b)) = t.split_once('-') {
            let start: IpAddr = a
                .trim()
                .parse()
                .map_err(|_| bad("the start is not an IP address"))?;
            let end: IpAddr = b
                .trim()
                .parse()
                .map_err(|_| bad("the end is not an IP address"))?;
            return IpRange::new(start, end).map_err(|e| match e {
                Error::InvalidRange { reason, .. } => bad(&reason),
                other => other,
            });
        }
        let ip: IpAddr = t
            .parse()
            .map_err(|_| bad("not an IP address, a range a-b or a CIDR"))?;
        Ok(IpRange::single(ip))
    }
}

/// An inclusive span of integers within one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Span {
    lo: u128,
    hi: u128,
}

impl Span {
    fn len(self) -> u128 {
        (self.hi - self.lo).saturating_add(1)
    }
}

/// A set of IP addresses of both families, stored as sorted disjoint spans.
///
/// ```
/// use ipam_core::IpSet;
/// let pool: IpSet = IpSet::parse_list(["10.6.168.171-10.6.168.180"]).unwrap();
/// let excluded = IpSet::parse_list(["10.6.168.175"]).unwrap();
/// let free = pool.difference(&excluded);
/// assert_eq!(free.len(), 9);
/// assert_eq!(free.to_strings(), ["10.6.168.171-10.6.168.174", "10.6.168.176-10.6.168.180"]);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct IpSet {
    v4: Vec<Span>,
    v6: Vec<Span>,
}

impl IpSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a list of Spiderpool entries (`a-b`, `a`, `net/len`) and merges them.
    pub fn parse_list<I, S>(entries: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = IpSet::new();
        for e in entries {
            set.insert_range(e.as_ref().parse()?);
        }
        Ok(set)
    }

    /// The set of one range.
    pub fn from_range(r: IpRange) -> Self {
        let mut s = IpSet::new();
        s.insert_range(r);
        s
    }

    /// The set of every address of `net` (host bits ignored).
    pub fn from_net(net: &IpNet) -> Self {
        Self::from_range(IpRange::from_net(net))
    }

    fn spans(&self, f: IpFamily) -> &Vec<Span> {
        match f {
            IpFamily::V4 => &self.v4,
            IpFamily::V6 => &self.v6,
        }
    }

    fn spans_mut(&mut self, f: IpFamily) -> &mut Vec<Span> {
        match f {
            IpFamily::V4 => &mut self.v4,
            IpFamily::V6 => &mut self.v6,
        }
    }

    /// Adds one address.
    pub fn insert(&mut self, ip: IpAddr) {
        self.insert_range(IpRange::single(ip));
    }

    /// Adds every address of `r`, merging with overlapping and adjacent spans.
    pub fn insert_range(&mut self, r: IpRange) {
        let f = r.family();
        let new = Span {
            lo: ip_to_u128(&r.start),
            hi: ip_to_u128(&r.end),
        };
        let spans = self.spans_mut(f);
        // First span that could touch `new`: the first whose hi + 1 >= new.lo.
        let i = spans.partition_point(|s| s.hi.saturating_add(1) < new.lo);
        let mut merged = new;
        let mut j = i;
        while j < spans.len() && spans[j].lo <= new.hi.saturating_add(1) {
            merged.lo = merged.lo.min(spans[j].lo);
            merged.hi = merged.hi.max(spans[j].hi);
            j += 1;
        }
        spans.splice(i..j, [merged]);
    }

    /// Removes one address; returns whether it was present.
    pub fn remove(&mut self, ip: IpAddr) -> bool {
        if !self.contains(&ip) {
            return false;
        }
        *self = self.difference(&IpSet::from_range(IpRange::single(ip)));
        true
    }

    /// Whether `ip` is a member.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let n = ip_to_u128(ip);
        let spans = self.spans(IpFamily::of(ip));
        let i = spans.partition_point(|s| s.hi < n);
        i < spans.len() && spans[i].lo <= n
    }

    /// Whether every address of `self` is in `other`.
    pub fn is_subset(&self, other: &IpSet) -> bool {
        self.difference(other).is_empty()
    }

    /// Whether the two sets share an address.
    pub fn overlaps(&self, other: &IpSet) -> bool {
        !self.intersection(other).is_empty()
    }

    /// Whether the set has no address.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Number of addresses, saturating at `u128::MAX`.
    pub fn len(&self) -> u128 {
        self.len_of(IpFamily::V4)
            .saturating_add(self.len_of(IpFamily::V6))
    }

    /// Number of addresses of one family, saturating at `u128::MAX`.
    pub fn len_of(&self, f: IpFamily) -> u128 {
        self.spans(f)
            .iter()
            .fold(0u128, |acc, s| acc.saturating_add(s.len()))
    }

    /// The families present in the set.
    pub fn families(&self) -> Vec<IpFamily> {
        IpFamily::BOTH
            .into_iter()
            .filter(|f| !self.spans(*f).is_empty())
            .collect()
    }

    /// The addresses of one family only.
    pub fn of_family(&self, f: IpFamily) -> IpSet {
        let mut s = IpSet::new();
        *s.spans_mut(f) = self.spans(f).clone();
        s
    }

    /// Addresses in either set.
    pub fn union(&self, other: &IpSet) -> IpSet {
        let mut out = self.clone();
        for r in other.ranges() {
            out.insert_range(r);
        }
        out
    }

    /// Addresses in `self` and not in `other`.
    pub fn difference(&self, other: &IpSet) -> IpSet {
        let mut out = IpSet::new();
        for f in IpFamily::BOTH {
            let sub = other.spans(f);
            let dst = out.spans_mut(f);
            let mut j = 0;
            for &s in self.spans(f) {
                let mut lo = s.lo;
                let mut done = false;
                while j < sub.len() && sub[j].hi < lo {
                    j += 1;
                }
                let mut k = j;
                while k < sub.len() && sub[k].lo <= s.hi {
                    if sub[k].lo > lo {
                        dst.push(Span {
                            lo,
                            hi: sub[k].lo - 1,
                        });
                    }
                    if sub[k].hi >= s.hi {
                        done = true;
                        break;
                    }
                    lo = sub[k].hi + 1;
                    k += 1;
                }
                if !done {
                    dst.push(Span { lo, hi: s.hi });
                }
            }
        }
        out
    }

    /// Addresses in both sets.
    pub fn intersection(&self, other: &IpSet) -> IpSet {
        let mut out = IpSet::new();
        for f in IpFamily::BOTH {
            let (a, b) = (self.spans(f), other.spans(f));
            let dst = out.spans_mut(f);
            let (mut i, mut j) = (0, 0);
            while i < a.len() && j < b.len() {
                let lo = a[i].lo.max(b[j].lo);
                let hi = a[i].hi.min(b[j].hi);
                if lo <= hi {
                    dst.push(Span { lo, hi });
                }
                if a[i].hi < b[j].hi {
                    i += 1;
                } else {
                    j += 1;
                }
            }
        }
        out
    }

    /// The ranges of the set, IPv4 first, each ascending.
    pub fn ranges(&self) -> impl Iterator<Item = IpRange> + '_ {
        IpFamily::BOTH.into_iter().flat_map(move |f| {
            self.spans(f).iter().map(move |s| IpRange {
                start: f.addr(s.lo),
                end: f.addr(s.hi),
            })
        })
    }

    /// Every address, IPv4 first, ascending. Lazy: a /64 is fine to start iterating.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        IpFamily::BOTH.into_iter().flat_map(move |f| {
            self.spans(f)
                .iter()
                .flat_map(move |s| (s.lo..=s.hi).map(move |n| f.addr(n)))
        })
    }

    /// The `n`-th address (0-based) in the order of [`IpSet::iter`]; O(spans).
    pub fn nth(&self, mut n: u128) -> Option<IpAddr> {
        for f in IpFamily::BOTH {
            for s in self.spans(f) {
                if n < s.len() {
                    return Some(f.addr(s.lo + n));
                }
                n -= s.len();
            }
        }
        None
    }

    /// The lowest `n` addresses as a set (fewer if the set is smaller).
    pub fn first_n(&self, mut n: u128) -> IpSet {
        let mut out = IpSet::new();
        for f in IpFamily::BOTH {
            for s in self.spans(f) {
                if n == 0 {
                    return out;
                }
                let take = n.min(s.len());
                out.spans_mut(f).push(Span {
                    lo: s.lo,
                    hi: s.lo + (take - 1),
                });
                n -= take;
            }
        }
        out
    }

    /// The highest `n` addresses as a set (fewer if the set is smaller).
    pub fn last_n(&self, mut n: u128) -> IpSet {
        let mut out = IpSet::new();
        for f in [IpFamily::V6, IpFamily::V4] {
            for s in self.spans(f).iter().rev() {
                if n == 0 {
                    return out;
                }
                let take = n.min(s.len());
                out.spans_mut(f).insert(
                    0,
                    Span {
                        lo: s.hi - (take - 1),
                        hi: s.hi,
                    },
                );
                n -= take;
            }
        }
        out
    }

    /// Spiderpool's list form (`MergeIPRanges`): `a-b` per span, `a` for a single address.
    pub fn to_strings(&self) -> Vec<String> {
        self.ranges().map(|r| r.to_string()).collect()
    }

    /// Number of spans (for tests and memory accounting).
    pub fn span_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// The spans of one family as inclusive integer bounds, ascending (for the allocator).
    pub(crate) fn spans_of(&self, f: IpFamily) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.spans(f).iter().map(|s| (s.lo, s.hi))
    }
}

impl fmt::Debug for IpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.ranges().map(|r| r.to_string()))
            .finish()
    }
}

impl fmt::Display for IpSet {
    /// Comma-separated Spiderpool entries, e.g. `10.6.168.171-10.6.168.173,10.6.168.180`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for r in self.ranges() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromIterator<IpAddr> for IpSet {
    fn from_iter<T: IntoIterator<Item = IpAddr>>(iter: T) -> Self {
        let mut s = IpSet::new();
        for ip in iter {
            s.insert(ip);
        }
        s
    }
}

impl FromIterator<IpRange> for IpSet {
    fn from_iter<T: IntoIterator<Item = IpRange>>(iter: T) -> Self {
        let mut s = IpSet::new();
        for r in iter {
            s.insert_range(r);
        }
        s
    }
}

impl Serialize for IpSet {
    /// As Spiderpool stores it: a list of range strings.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.ranges().map(|r| r.to_string()))
    }
}

impl<'de> Deserialize<'de> for IpSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(d)?;
        IpSet::parse_list(&entries).map_err(serde::de::Error::custom)
    }
}

/// Builds an [`IpSet`] from Spiderpool entries; panics on a malformed entry (tests and docs).
///
/// ```
/// use ipam_core::ips;
/// assert_eq!(ips!["10.0.0.1-10.0.0.2", "10.0.0.3"], ips!["10.0.0.1-10.0.0.3"]);
/// ```
#[macro_export]
macro_rules! ips {
    () => { $crate::IpSet::new() };
    ($($e:expr),+ $(,)?) => {
        $crate::IpSet::parse_list([$($e),+]).expect("valid IP entries")
    };
}

/// Orders addresses across families: IPv4 before IPv6, then numerically.
pub fn cmp_ip(a: &IpAddr, b: &IpAddr) -> Ordering {
    (IpFamily::of(a), ip_to_u128(a)).cmp(&(IpFamily::of(b), ip_to_u128(b)))
}

/// The network and broadcast addresses Berth keeps out of an IPv4 subnet of /30 or wider
/// (RFC 3021: /31 and /32 keep every address). Nothing for IPv6.
pub fn network_and_broadcast(net: &IpNet) -> IpSet {
    match net.trunc() {
        IpNet::V4(n) if n.prefix_len() <= 30 => {
            let mut s = IpSet::new();
            s.insert(IpAddr::V4(n.network()));
            s.insert(IpAddr::V4(n.broadcast()));
            s
        }
        _ => IpSet::new(),
    }
}

/// Parses a CIDR as Spiderpool's `spec.subnet` holds it, host bits allowed (`10.6.0.1/16`),
/// saying what is wrong: ipnet says "invalid IP address syntax" for `/33` and `/banana` alike.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let Some((addr, len)) = text.split_once('/') else {
        return Err("no prefix length: write ADDRESS/LENGTH, e.g. 10.6.0.0/16".into());
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = len
        .parse::<u8>()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| format!("prefix length {len:?} is not a number from 0 to {max}"))?;
    IpNet::new(addr, len).map_err(|e| e.to_string())
}

/// Reads `spec.subnet` with [`parse_cidr`], naming the field in the error: the decoder's own
/// message names neither the field nor the value.
pub(crate) fn deserialize_spec_subnet<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
    let text = String::deserialize(d)?;
    parse_cidr(&text).map_err(|reason| {
        serde::de::Error::custom(format!("spec.subnet: invalid CIDR {text:?}: {reason}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cidrs_say_what_is_wrong() {
        assert_eq!(
            parse_cidr("10.6.0.1/16"),
            Ok("10.6.0.1/16".parse().unwrap())
        );
        assert_eq!(
            parse_cidr("fd00:6::/64"),
            Ok("fd00:6::/64".parse().unwrap())
        );
        assert_eq!(
            parse_cidr("10.6.0.0/33").unwrap_err(),
            "prefix length \"33\" is not a number from 0 to 32"
        );
        assert_eq!(
            parse_cidr("10.6.0.0/banana").unwrap_err(),
            "prefix length \"banana\" is not a number from 0 to 32"
        );
        assert_eq!(
            parse_cidr("fd00::/129").unwrap_err(),
            "prefix length \"129\" is not a number from 0 to 128"
        );
        assert_eq!(
            parse_cidr("10.6.0.300/16").unwrap_err(),
            "\"10.6.0.300\" is not an IP address"
        );
        assert!(
            parse_cidr("10.6.0.0")
                .unwrap_err()
                .starts_with("no prefix length")
        );
    }
    use std::collections::BTreeSet;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_spiderpool_entries() {
        let s = ips!["10.6.168.171-10.6.168.180"];
        assert_eq!(s.len(), 10);
        assert_eq!(ips!["10.6.168.171"].len(), 1);
        assert_eq!(ips!["10.6.0.1/16"], ips!["10.6.0.0-10.6.255.255"]);
        assert_eq!(ips![" fd00::1 - fd00::10 "].len(), 16);
        assert_eq!(ips!["fd00::/64"].len(), 1u128 << 64);
    }

    #[test]
    fn rejects_malformed_entries_with_the_reason() {
        for (input, reason) in [
            ("10.0.0.9-10.0.0.1", "the start is after the end"),
            ("10.0.0.1-fd00::1", "different IP versions"),
            ("10.0.0.300", "not an IP address"),
            ("10.0.0.1-", "the end is not an IP address"),
            ("10.0.0.0/33", "not a CIDR"),
            ("", "empty entry"),
        ] {
            let err = input.parse::<IpRange>().unwrap_err().to_string();
            assert!(err.contains(reason), "{input:?}: {err}");
            assert!(err.contains(input.trim()), "{input:?} not named in {err}");
        }
    }

    #[test]
    fn merges_overlapping_and_adjacent_entries() {
        let s = ips![
            "10.0.0.5-10.0.0.9",
            "10.0.0.1-10.0.0.4",
            "10.0.0.8-10.0.0.12",
            "10.0.0.20"
        ];
        assert_eq!(s.to_strings(), ["10.0.0.1-10.0.0.12", "10.0.0.20"]);
        assert_eq!(s.span_count(), 2);
    }

    #[test]
    fn set_algebra() {
        let a = ips!["10.0.0.1-10.0.0.10", "fd00::1-fd00::4"];
        let b = ips!["10.0.0.5-10.0.0.20", "fd00::3"];
        assert_eq!(a.intersection(&b), ips!["10.0.0.5-10.0.0.10", "fd00::3"]);
        assert_eq!(
            a.difference(&b),
            ips!["10.0.0.1-10.0.0.4", "fd00::1-fd00::2", "fd00::4"]
        );
        assert_eq!(a.union(&b), ips!["10.0.0.1-10.0.0.20", "fd00::1-fd00::4"]);
        assert!(ips!["10.0.0.2"].is_subset(&a));
        assert!(!b.is_subset(&a));
        assert!(a.overlaps(&b));
        assert_eq!(a.families(), [IpFamily::V4, IpFamily::V6]);
        assert_eq!(a.of_family(IpFamily::V6), ips!["fd00::1-fd00::4"]);
    }

    #[test]
    fn nth_first_last_and_iteration() {
        let s = ips!["10.0.0.1-10.0.0.3", "10.0.0.10", "fd00::1"];
        assert_eq!(s.nth(0), Some(ip("10.0.0.1")));
        assert_eq!(s.nth(3), Some(ip("10.0.0.10")));
        assert_eq!(s.nth(4), Some(ip("fd00::1")));
        assert_eq!(s.nth(5), None);
        assert_eq!(s.first_n(4), ips!["10.0.0.1-10.0.0.3", "10.0.0.10"]);
        assert_eq!(s.last_n(2), ips!["10.0.0.10", "fd00::1"]);
        assert_eq!(s.iter().count(), 5);
        let big = ips!["fd00::/64"];
        assert_eq!(big.iter().nth(3), Some(ip("fd00::3")));
        assert_eq!(
            big.nth((1u128 << 64) - 1),
            Some(ip("fd00::ffff:ffff:ffff:ffff"))
        );
    }

    #[test]
    fn whole_spaces_saturate_the_count() {
        assert_eq!(ips!["0.0.0.0/0"].len(), 1u128 << 32);
        assert_eq!(ips!["::/0"].len(), u128::MAX, "2^128 saturates");
        assert_eq!(
            ips!["::/0"].difference(&ips!["::1"]).len(),
            u128::MAX,
            "2^128 - 1 is exact"
        );
        assert_eq!(
            ips!["::/0"].difference(&ips!["::1-::2"]).len(),
            u128::MAX - 1
        );
    }

    #[test]
    fn serde_is_spiderpools_string_list() {
        let s: IpSet = serde_json::from_str(r#"["10.0.0.3","10.0.0.1-10.0.0.2"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"["10.0.0.1-10.0.0.3"]"#
        );
        let err = serde_json::from_str::<IpSet>(r#"["10.0.0.x"]"#).unwrap_err();
        assert!(err.to_string().contains("10.0.0.x"));
    }

    #[test]
    fn network_and_broadcast_follow_rfc3021() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(
            network_and_broadcast(&n("10.6.0.1/16")),
            ips!["10.6.0.0", "10.6.255.255"]
        );
        assert_eq!(
            network_and_broadcast(&n("10.0.0.0/30")),
            ips!["10.0.0.0", "10.0.0.3"]
        );
        assert!(network_and_broadcast(&n("10.0.0.0/31")).is_empty());
        assert!(network_and_broadcast(&n("10.0.0.1/32")).is_empty());
        assert!(network_and_broadcast(&n("fd00::/64")).is_empty());
    }

    // Model: a BTreeSet of small offsets within 10.0.0.0/24 and fd00::/120.
    fn entry() -> impl Strategy<Value = (bool, u8, u8)> {
        (any::<bool>(), any::<u8>(), any::<u8>())
    }

    fn build(entries: &[(bool, u8, u8)]) -> (IpSet, BTreeSet<IpAddr>) {
        let mut set = IpSet::new();
        let mut model = BTreeSet::new();
        for &(v6, a, b) in entries {
            let (lo, hi) = (a.min(b), a.max(b));
            let mk = |o: u8| -> IpAddr {
                if v6 {
                    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, o as u16))
                } else {
                    IpAddr::V4(Ipv4Addr::new(10, 0, 0, o))
                }
            };
            set.insert_range(IpRange::new(mk(lo), mk(hi)).unwrap());
            for o in lo..=hi {
                model.insert(mk(o));
            }
        }
        (set, model)
    }

    proptest! {
        #[test]
        fn operations_match_a_model(
            a in prop::collection::vec(entry(), 0..8),
            b in prop::collection::vec(entry(), 0..8),
            n in 0u128..600,
        ) {
            let (sa, ma) = (build(&a).0, build(&a).1);
            let (sb, mb) = build(&b);
            let elems = |s: &IpSet| s.iter().collect::<BTreeSet<_>>();
            prop_assert_eq!(elems(&sa), ma.clone());
            prop_assert_eq!(sa.len(), ma.len() as u128);
            prop_assert_eq!(elems(&sa.union(&sb)), ma.union(&mb).cloned().collect());
            prop_assert_eq!(elems(&sa.difference(&sb)), ma.difference(&mb).cloned().collect());
            prop_assert_eq!(elems(&sa.intersection(&sb)), ma.intersection(&mb).cloned().collect());
            prop_assert_eq!(sa.nth(n), ma.iter().nth(n as usize).cloned());
            prop_assert_eq!(sa.is_subset(&sb), ma.is_subset(&mb));
            for ip in mb.iter() {
                prop_assert_eq!(sa.contains(ip), ma.contains(ip));
            }
            // Canonical: spans are disjoint and non-adjacent, so equal sets are equal values.
            let rebuilt: IpSet = ma.iter().cloned().collect();
            prop_assert_eq!(&rebuilt, &sa);
            // Round trip through Spiderpool's string form.
            prop_assert_eq!(IpSet::parse_list(sa.to_strings()).unwrap(), sa.clone());
            let mut removed = sa.clone();
            if let Some(x) = ma.iter().next() {
                prop_assert!(removed.remove(*x));
                prop_assert!(!removed.contains(x));
                prop_assert_eq!(removed.len() + 1, sa.len());
            }
            prop_assert_eq!(sa.first_n(n).len(), n.min(sa.len()));
            prop_assert_eq!(sa.last_n(n).len(), n.min(sa.len()));
            prop_assert!(sa.first_n(n).is_subset(&sa) && sa.last_n(n).is_subset(&sa));
        }
    }
}
