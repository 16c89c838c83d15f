//! Property checks for the fuzz targets in `fuzz/`, shared with the corpus replay tests.
//!
//! Each `check_*` function takes one raw fuzz input, decodes it in a small text format (so
//! the seed corpora stay readable), runs the parsers on it and asserts properties: refused
//! input is an error of the right kind whose `Display` works, accepted input survives a
//! render → parse round trip, and the set algebra agrees with a naive model. A failed
//! property panics — that is how libFuzzer sees a finding; valid or invalid input never does.
//!
//! The fuzz targets (`fuzz/fuzz_targets/{ip_ranges,annotations}.rs`) call these functions,
//! and `tests/fuzz_corpus.rs` replays every file of `fuzz/corpus/<target>/` through them, so
//! CI runs the corpora as ordinary tests. Not part of the API.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};

use crate::annotations::{
    self, IpNumber, PodAnnotations, multus_network_for, namespace_default_pools, nic_index,
};
use crate::error::Error;
use crate::range::{IpFamily, IpRange, IpSet, cmp_ip, ip_to_u128};

// ---------------------------------------------------------------------------------------
// IP ranges
// ---------------------------------------------------------------------------------------

/// Largest total size of the entries of one list for which the naive model enumerates every
/// address.
const MODEL_MAX_ADDRESSES: u128 = 2048;
/// Most entries (both lists) for which membership is probed at every entry boundary.
const PROBE_MAX_ENTRIES: usize = 96;

/// Fuzz target `ip_ranges`. Input: Spiderpool entries, one per line (`a-b`, `a`,
/// `net/len`); a line `--` starts the second list. Checks every entry on its own
/// (`IpRange` parse → `Display` → parse), `IpSet::parse_list` of each list, and the set
/// algebra of the two sets of valid entries against identities and a naive model.
pub fn check_ip_ranges(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lists: [Vec<&str>; 2] = [Vec::new(), Vec::new()];
    let mut which = 0;
    for line in text.lines() {
        if line == "--" && which == 0 {
            which = 1;
        } else {
            lists[which].push(line);
        }
    }
    let [a, b] = lists.map(|entries| check_list(&entries));
    check_set(&a.set);
    check_set(&b.set);
    check_algebra(&a, &b);
}

/// The valid entries of one list, and their set.
struct ParsedList {
    ranges: Vec<IpRange>,
    set: IpSet,
}

fn check_list(entries: &[&str]) -> ParsedList {
    let ranges: Vec<IpRange> = entries.iter().filter_map(|e| check_entry(e)).collect();
    let set: IpSet = ranges.iter().copied().collect();
    match IpSet::parse_list(entries) {
        Ok(parsed) => {
            assert_eq!(
                ranges.len(),
                entries.len(),
                "parse_list accepted a bad entry"
            );
            assert_eq!(parsed, set, "parse_list differs from inserting each entry");
        }
        Err(err) => {
            assert!(
                ranges.len() < entries.len(),
                "parse_list refused good entries: {err}"
            );
            check_range_error(&err);
        }
    }
    ParsedList { ranges, set }
}

fn check_entry(entry: &str) -> Option<IpRange> {
    match entry.parse::<IpRange>() {
        Ok(r) => {
            assert_eq!(
                r.start().is_ipv4(),
                r.end().is_ipv4(),
                "{entry:?}: mixed families"
            );
            assert!(
                ip_to_u128(&r.start()) <= ip_to_u128(&r.end()),
                "{entry:?}: start > end"
            );
            assert_ne!(r.len(), 0);
            let shown = r.to_string();
            let back: IpRange = shown
                .parse()
                .unwrap_or_else(|e| panic!("{entry:?} → {shown:?} does not parse: {e}"));
            assert_eq!(back, r, "{entry:?} → {shown:?} → {back}");
            assert_eq!(IpRange::new(r.start(), r.end()).ok(), Some(r));
            Some(r)
        }
        Err(err) => {
            check_range_error(&err);
            None
        }
    }
}

fn check_range_error(err: &Error) {
    assert!(
        matches!(err, Error::InvalidRange { .. }),
        "not InvalidRange: {err:?}"
    );
    let msg = err.to_string();
    assert!(msg.starts_with("invalid IP range "), "{msg}");
}

fn max_of(f: IpFamily) -> u128 {
    match f {
        IpFamily::V4 => u32::MAX as u128,
        IpFamily::V6 => u128::MAX,
    }
}

fn addr(f: IpFamily, n: u128) -> IpAddr {
    match f {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).expect("an IPv4 number"))),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Invariants of one set: canonical spans, counts, and its three renderings.
fn check_set(s: &IpSet) {
    let ranges: Vec<IpRange> = s.ranges().collect();
    assert_eq!(ranges.len(), s.span_count());
    for w in ranges.windows(2) {
        let (p, q) = (w[0], w[1]);
        if p.family() == q.family() {
            assert!(
                ip_to_u128(&q.start()) > ip_to_u128(&p.end()) + 1,
                "spans {p} and {q} overlap, touch or are out of order"
            );
        } else {
            assert!(p.family() == IpFamily::V4 && q.family() == IpFamily::V6);
        }
    }
    for f in IpFamily::BOTH {
        let sum = ranges
            .iter()
            .filter(|r| r.family() == f)
            .fold(0u128, |acc, r| acc.saturating_add(r.len()));
        assert_eq!(s.len_of(f), sum);
    }
    assert_eq!(
        s.len(),
        s.len_of(IpFamily::V4)
            .saturating_add(s.len_of(IpFamily::V6))
    );
    assert_eq!(s.is_empty(), ranges.is_empty());
    let families: Vec<IpFamily> = IpFamily::BOTH
        .into_iter()
        .filter(|f| ranges.iter().any(|r| r.family() == *f))
        .collect();
    assert_eq!(s.families(), families);
    assert_eq!(
        s.of_family(IpFamily::V4).union(&s.of_family(IpFamily::V6)),
        *s
    );

    // Spiderpool's list form, the comma-joined Display, serde and Debug.
    let strings = s.to_strings();
    assert_eq!(
        IpSet::parse_list(&strings).ok().as_ref(),
        Some(s),
        "{strings:?}"
    );
    let shown = s.to_string();
    let entries: Vec<&str> = if shown.is_empty() {
        Vec::new()
    } else {
        shown.split(',').collect()
    };
    assert_eq!(IpSet::parse_list(entries).ok().as_ref(), Some(s), "{shown}");
    let json = serde_json::to_string(s).expect("an IpSet serializes");
    assert_eq!(
        serde_json::from_str::<IpSet>(&json).ok().as_ref(),
        Some(s),
        "{json}"
    );
    let _ = format!("{s:?}");

    // nth / first_n / last_n, at the edges.
    let total = s.len();
    assert_eq!(s.nth(0), ranges.first().map(IpRange::start));
    if total < u128::MAX {
        assert_eq!(s.nth(total), None);
        if total > 0 {
            assert_eq!(s.nth(total - 1), ranges.last().map(IpRange::end));
        }
    }
    for k in [
        0,
        1,
        2,
        total / 2,
        total.saturating_sub(1),
        total,
        total.saturating_add(1),
    ] {
        let first = s.first_n(k);
        let last = s.last_n(k);
        assert_eq!(first.len(), k.min(total), "first_n({k})");
        assert_eq!(last.len(), k.min(total), "last_n({k})");
        assert!(first.is_subset(s) && last.is_subset(s));
        let rest = s.difference(&first);
        if let (Some(hi), Some(lo)) = (first.ranges().last(), rest.ranges().next()) {
            assert!(
                cmp_ip(&hi.end(), &lo.start()).is_lt(),
                "first_n({k}) is not lowest"
            );
        }
        let rest = s.difference(&last);
        if let (Some(lo), Some(hi)) = (last.ranges().next(), rest.ranges().last()) {
            assert!(
                cmp_ip(&hi.end(), &lo.start()).is_lt(),
                "last_n({k}) is not highest"
            );
        }
    }
    if let Some(x) = s.nth(0) {
        let mut removed = s.clone();
        assert!(removed.remove(x));
        assert!(!removed.contains(&x) && !removed.remove(x));
        if total < u128::MAX {
            assert_eq!(removed.len() + 1, total);
        }
        removed.insert(x);
        assert_eq!(removed, *s);
    }
}

/// Whether any entry holds `n` of family `f` (the naive model of a set).
fn model_contains(ranges: &[IpRange], f: IpFamily, n: u128) -> bool {
    ranges
        .iter()
        .any(|r| r.family() == f && ip_to_u128(&r.start()) <= n && n <= ip_to_u128(&r.end()))
}

fn enumerate(ranges: &[IpRange]) -> Option<BTreeSet<(IpFamily, u128)>> {
    let size = ranges
        .iter()
        .fold(0u128, |acc, r| acc.saturating_add(r.len()));
    if size > MODEL_MAX_ADDRESSES {
        return None;
    }
    let mut out = BTreeSet::new();
    for r in ranges {
        for n in ip_to_u128(&r.start())..=ip_to_u128(&r.end()) {
            out.insert((r.family(), n));
        }
    }
    Some(out)
}

fn elements(s: &IpSet) -> BTreeSet<(IpFamily, u128)> {
    s.iter()
        .map(|ip| (IpFamily::of(&ip), ip_to_u128(&ip)))
        .collect()
}

fn check_algebra(a: &ParsedList, b: &ParsedList) {
    let (sa, sb) = (&a.set, &b.set);
    let union = sa.union(sb);
    let inter = sa.intersection(sb);
    let diff = sa.difference(sb);
    let rdiff = sb.difference(sa);
    for s in [&union, &inter, &diff, &rdiff] {
        check_set(s);
    }

    // Identities.
    assert_eq!(union, sb.union(sa), "union is not commutative");
    assert_eq!(
        inter,
        sb.intersection(sa),
        "intersection is not commutative"
    );
    assert_eq!(diff.union(&inter), *sa, "(a - b) ∪ (a ∩ b) != a");
    assert!(diff.intersection(sb).is_empty(), "(a - b) ∩ b is not empty");
    assert!(diff.intersection(&inter).is_empty());
    assert_eq!(diff.union(&rdiff).union(&inter), union);
    assert!(sa.is_subset(&union) && sb.is_subset(&union));
    assert!(inter.is_subset(sa) && inter.is_subset(sb) && diff.is_subset(sa));
    assert_eq!(sa.overlaps(sb), !inter.is_empty());
    assert_eq!(sa.is_subset(sb), diff.is_empty());
    assert_eq!(sa.union(sa), *sa);
    assert_eq!(sa.intersection(sa), *sa);
    assert!(sa.difference(sa).is_empty());
    assert_eq!(sa.union(&IpSet::new()), *sa);
    for f in IpFamily::BOTH {
        let (la, lb) = (sa.len_of(f), sb.len_of(f));
        let (lu, li, ld) = (union.len_of(f), inter.len_of(f), diff.len_of(f));
        if let (Some(x), Some(y)) = (lu.checked_add(li), la.checked_add(lb))
            && ![la, lb, lu].contains(&u128::MAX)
        {
            assert_eq!(x, y, "{f}: |a ∪ b| + |a ∩ b| != |a| + |b|");
        }
        if la < u128::MAX {
            assert_eq!(ld + li, la, "{f}: |a - b| + |a ∩ b| != |a|");
        }
    }

    // Membership at every boundary of every entry, against the entries themselves: both
    // sides are unions of intervals with ends among these points, so they agree everywhere.
    if a.ranges.len() + b.ranges.len() <= PROBE_MAX_ENTRIES {
        let mut probes = BTreeSet::new();
        for r in a.ranges.iter().chain(&b.ranges) {
            let (f, lo, hi) = (r.family(), ip_to_u128(&r.start()), ip_to_u128(&r.end()));
            probes.extend([lo, hi].map(|n| (f, n)));
            if lo > 0 {
                probes.insert((f, lo - 1));
            }
            if hi < max_of(f) {
                probes.insert((f, hi + 1));
            }
        }
        for (f, n) in probes {
            let ip = addr(f, n);
            let (ma, mb) = (
                model_contains(&a.ranges, f, n),
                model_contains(&b.ranges, f, n),
            );
            assert_eq!(sa.contains(&ip), ma, "a ∋ {ip}");
            assert_eq!(sb.contains(&ip), mb, "b ∋ {ip}");
            assert_eq!(union.contains(&ip), ma || mb, "a ∪ b ∋ {ip}");
            assert_eq!(inter.contains(&ip), ma && mb, "a ∩ b ∋ {ip}");
            assert_eq!(diff.contains(&ip), ma && !mb, "a - b ∋ {ip}");
            let mut with = sa.clone();
            with.insert(ip);
            assert!(with.contains(&ip));
            assert_eq!(with.len_of(f), sa.len_of(f).saturating_add(u128::from(!ma)));
        }
    }

    // Small sets: every address, against BTreeSets built from the entries.
    if let (Some(ma), Some(mb)) = (enumerate(&a.ranges), enumerate(&b.ranges)) {
        assert_eq!(elements(sa), ma);
        assert_eq!(sa.len(), ma.len() as u128);
        assert_eq!(elements(&union), ma.union(&mb).copied().collect());
        assert_eq!(elements(&inter), ma.intersection(&mb).copied().collect());
        assert_eq!(elements(&diff), ma.difference(&mb).copied().collect());
        for (k, &(f, n)) in ma.iter().enumerate().take(64) {
            assert_eq!(sa.nth(k as u128), Some(addr(f, n)), "nth({k})");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Annotations
// ---------------------------------------------------------------------------------------

/// The IPAM annotations [`PodAnnotations::parse`] reads.
const POD_KEYS: [&str; 8] = [
    annotations::SUBNETS,
    annotations::SUBNET,
    annotations::IPPOOL_IP_NUMBER,
    annotations::IPPOOL_RECLAIM,
    annotations::IPPOOLS,
    annotations::IPPOOL,
    annotations::ROUTES,
    annotations::DEFAULT_ROUTE_NIC,
];

/// Short names accepted in `@name` headers of the `annotations` input.
const ALIASES: [(&str, &str); 12] = [
    ("subnets", annotations::SUBNETS),
    ("subnet", annotations::SUBNET),
    ("ippool-ip-number", annotations::IPPOOL_IP_NUMBER),
    ("ippool-reclaim", annotations::IPPOOL_RECLAIM),
    ("ippools", annotations::IPPOOLS),
    ("ippool", annotations::IPPOOL),
    ("routes", annotations::ROUTES),
    ("default-route-nic", annotations::DEFAULT_ROUTE_NIC),
    ("default-ipv4-ippool", annotations::NS_DEFAULT_IPV4_IPPOOL),
    ("default-ipv6-ippool", annotations::NS_DEFAULT_IPV6_IPPOOL),
    ("default-network", annotations::MULTUS_DEFAULT_NETWORK),
    ("networks", annotations::MULTUS_NETWORKS),
];

/// A decoded `annotations` input.
struct AnnotationInput {
    annotations: BTreeMap<String, String>,
    pod_namespace: String,
    nic: Option<String>,
}

impl AnnotationInput {
    /// Records `@name` followed by the value's lines (`name`: an alias from [`ALIASES`], a
    /// full key, or `pod-namespace` / `nic` for `multus_network_for`'s other arguments).
    fn decode(data: &[u8]) -> Self {
        let text = String::from_utf8_lossy(data);
        let mut records: Vec<(&str, Vec<&str>)> = Vec::new();
        for line in text.split('\n') {
            match line.strip_prefix('@') {
                Some(name) => records.push((name, Vec::new())),
                None => {
                    if let Some((_, lines)) = records.last_mut() {
                        lines.push(line);
                    }
                }
            }
        }
        let mut input = AnnotationInput {
            annotations: BTreeMap::new(),
            pod_namespace: "default".into(),
            nic: None,
        };
        for (name, mut lines) in records {
            if lines.last() == Some(&"") {
                lines.pop();
            }
            let value = lines.join("\n");
            match name {
                "pod-namespace" => input.pod_namespace = value,
                "nic" => input.nic = Some(value),
                _ => {
                    let key = ALIASES
                        .iter()
                        .find(|(alias, _)| *alias == name)
                        .map_or(name, |(_, key)| key);
                    input.annotations.insert(key.to_owned(), value);
                }
            }
        }
        input
    }
}

/// Fuzz target `annotations`. Input: records, each a line `@name` followed by the lines of
/// its value, e.g. `@subnets` / `[{"interface":"eth0","ipv4":["s"]}]` / `@ippool-ip-number`
/// / `+1` (the name is a short alias such as `subnets` or a full key; `@pod-namespace` and
/// `@nic` feed `multus_network_for`). Checks `PodAnnotations::parse` of the whole map and of each key
/// alone (the keys are independent), the invariants of what it accepts and a render → parse
/// round trip, `IpNumber`, `namespace_default_pools` and `multus_network_for`.
pub fn check_annotations(data: &[u8]) {
    let input = AnnotationInput::decode(data);
    let map = &input.annotations;

    let whole = PodAnnotations::parse(map);
    match &whole {
        Ok(parsed) => check_pod_annotations(parsed, input.nic.as_deref()),
        Err(err) => check_annotation_error(err, &POD_KEYS),
    }
    let mut all_alone_ok = true;
    for key in POD_KEYS {
        let Some(value) = map.get(key) else { continue };
        let alone = BTreeMap::from([(key.to_owned(), value.clone())]);
        let shadowed = key == annotations::SUBNET && map.contains_key(annotations::SUBNETS);
        match PodAnnotations::parse(&alone) {
            Ok(parsed) => {
                check_pod_annotations(&parsed, input.nic.as_deref());
                if let (Ok(w), false) = (&whole, shadowed) {
                    assert_eq!(
                        pick(w, key),
                        pick(&parsed, key),
                        "{key} reads differently alone"
                    );
                }
            }
            Err(err) => {
                check_annotation_error(&err, &[key]);
                all_alone_ok &= shadowed;
                assert!(
                    shadowed || whole.is_err(),
                    "{key} fails alone but not with the others"
                );
            }
        }
    }
    assert!(
        !all_alone_ok || whole.is_ok(),
        "every key parses alone but not together: {:?}",
        whole.err()
    );

    if let Some(v) = map.get(annotations::IPPOOL_IP_NUMBER) {
        check_ip_number(v);
    }
    for key in [
        annotations::NS_DEFAULT_IPV4_IPPOOL,
        annotations::NS_DEFAULT_IPV6_IPPOOL,
    ] {
        if let Some(v) = map.get(key) {
            match namespace_default_pools(key, v) {
                Ok(pools) => {
                    let back = serde_json::to_string(&pools).expect("strings serialize");
                    assert_eq!(namespace_default_pools(key, &back).ok(), Some(pools));
                }
                Err(err) => check_annotation_error(&err, &[key]),
            }
        }
    }
    check_multus(&input);
}

/// One annotation's part of a parse.
fn pick(p: &PodAnnotations, key: &str) -> String {
    match key {
        annotations::SUBNETS | annotations::SUBNET => format!("{:?}", p.subnets),
        annotations::IPPOOL_IP_NUMBER => format!("{:?}", p.ip_number),
        annotations::IPPOOL_RECLAIM => format!("{:?}", p.reclaim),
        annotations::IPPOOLS => format!("{:?}", p.ippools),
        annotations::IPPOOL => format!("{:?}", p.ippool),
        annotations::ROUTES => format!("{:?}", p.routes),
        _ => format!("{:?}", p.default_route_nic),
    }
}

fn check_annotation_error(err: &Error, keys: &[&str]) {
    let Error::Annotation { key, reason } = err else {
        panic!("not an annotation error: {err:?}");
    };
    assert!(
        keys.contains(&key.as_str()),
        "error names {key}, not one of {keys:?}"
    );
    assert!(!reason.is_empty());
    assert_eq!(err.to_string(), format!("annotation {key}: {reason}"));
}

fn check_ip_number(v: &str) {
    match IpNumber::parse(v) {
        Ok(n) => {
            assert_eq!(IpNumber::parse(&n.to_annotation()).ok(), Some(n), "{v:?}");
            for replicas in [0, 1, u32::MAX] {
                let desired = n.desired(replicas);
                if let IpNumber::Flexible(_) = n {
                    assert!(desired >= replicas);
                }
            }
        }
        Err(err) => check_annotation_error(&err, &[annotations::IPPOOL_IP_NUMBER]),
    }
}

/// NICs every input is asked about, besides the input's own `@nic`.
const NICS: [&str; 5] = ["eth0", "net1", "net2", "net3", "ext0"];

fn check_pod_annotations(p: &PodAnnotations, nic: Option<&str>) {
    if let Some(items) = &p.subnets {
        assert!(!items.is_empty());
        let mut interfaces = BTreeSet::new();
        let mut subnets = BTreeSet::new();
        for it in items {
            assert!(!it.interface.is_empty());
            assert!(interfaces.insert(&it.interface), "{} twice", it.interface);
            assert!(it.ipv4.is_some() || it.ipv6.is_some());
            for s in it.ipv4.iter().chain(&it.ipv6) {
                assert!(subnets.insert(s), "subnet {s} twice");
            }
            assert_eq!(p.subnet_for(&it.interface), Some(it));
        }
    }
    if let Some(items) = &p.ippools {
        assert!(!items.is_empty());
        let named = items.iter().filter(|i| i.interface.is_some()).count();
        assert!(named == 0 || named == items.len());
        let mut interfaces = BTreeSet::new();
        for it in items {
            assert!(!it.ipv4.is_empty() || !it.ipv6.is_empty());
            if let Some(i) = &it.interface {
                assert!(interfaces.insert(i), "{i} twice");
                assert_eq!(p.ippools_for(i).ok().flatten(), Some(it));
            }
        }
        for nic in NICS.iter().copied().chain(nic) {
            let got = p.ippools_for(nic);
            if let Err(err) = &got {
                check_annotation_error(err, &[annotations::IPPOOLS]);
            }
            let expected = if named == 0 {
                nic_index(nic).and_then(|i| items.get(i))
            } else {
                items.iter().find(|i| i.interface.as_deref() == Some(nic))
            };
            assert_eq!(got.ok().flatten(), expected, "ippools_for({nic})");
        }
    } else {
        assert_eq!(p.ippools_for("eth0").ok(), Some(None));
    }
    if let Some(item) = &p.ippool {
        assert!(item.interface.is_none());
        assert!(!item.ipv4.is_empty() || !item.ipv6.is_empty());
    }
    if let Some(nic) = &p.default_route_nic {
        assert!(!nic.is_empty() && nic.trim() == nic);
    }
    if let Some(n) = p.ip_number {
        assert_eq!(IpNumber::parse(&n.to_annotation()).ok(), Some(n));
    }

    let rendered = render_annotations(p);
    match PodAnnotations::parse(&rendered) {
        Ok(back) => assert_eq!(&back, p, "render → parse differs; rendered {rendered:?}"),
        Err(err) => panic!("rendered annotations {rendered:?} are refused: {err}"),
    }
}

/// The annotations that say what `p` holds, written the canonical way.
fn render_annotations(p: &PodAnnotations) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |key: &str, value: String| {
        out.insert(key.to_owned(), value);
    };
    if let Some(items) = &p.subnets {
        let items: Vec<Value> = items
            .iter()
            .map(|s| {
                let mut o = serde_json::Map::new();
                o.insert("interface".into(), json!(s.interface));
                if let Some(v4) = &s.ipv4 {
                    o.insert("ipv4".into(), json!([v4]));
                }
                if let Some(v6) = &s.ipv6 {
                    o.insert("ipv6".into(), json!([v6]));
                }
                Value::Object(o)
            })
            .collect();
        put(annotations::SUBNETS, Value::Array(items).to_string());
    }
    if let Some(n) = p.ip_number {
        put(annotations::IPPOOL_IP_NUMBER, n.to_annotation());
    }
    if let Some(r) = p.reclaim {
        put(annotations::IPPOOL_RECLAIM, r.to_string());
    }
    let pool_item = |i: &annotations::PoolItem| {
        let mut v = json!({"ipv4": i.ipv4, "ipv6": i.ipv6});
        let o = v.as_object_mut().expect("an object");
        if let Some(name) = &i.interface {
            o.insert("interface".into(), json!(name));
        }
        if let Some(c) = i.clean_gateway {
            o.insert("cleangateway".into(), json!(c));
        }
        v
    };
    if let Some(items) = &p.ippools {
        let items: Vec<Value> = items.iter().map(pool_item).collect();
        put(annotations::IPPOOLS, Value::Array(items).to_string());
    }
    if let Some(item) = &p.ippool {
        put(annotations::IPPOOL, pool_item(item).to_string());
    }
    if !p.routes.is_empty() {
        put(
            annotations::ROUTES,
            serde_json::to_string(&p.routes).expect("routes serialize"),
        );
    }
    if let Some(nic) = &p.default_route_nic {
        put(annotations::DEFAULT_ROUTE_NIC, nic.clone());
    }
    out
}

fn check_multus(input: &AnnotationInput) {
    let map = &input.annotations;
    let ns = input.pod_namespace.as_str();
    for nic in NICS.iter().copied().chain(input.nic.as_deref()) {
        match multus_network_for(map, ns, nic) {
            Ok(Some(net)) => {
                assert!(net.contains('/'), "{nic} → {net:?} has no namespace");
            }
            Ok(None) => {}
            Err(err) => {
                assert_ne!(nic, "eth0", "eth0 reads only the default network");
                check_annotation_error(&err, &[annotations::MULTUS_NETWORKS]);
                assert!(map[annotations::MULTUS_NETWORKS].trim().starts_with('['));
            }
        }
    }
}

/// Runs `check` on every file of `fuzz/corpus/<target>/` (relative to the workspace root) and
/// panics naming the files whose check panicked: the fuzz corpora replayed as ordinary tests.
pub fn replay_corpus(workspace_root: &std::path::Path, target: &str, check: fn(&[u8])) {
    let dir = workspace_root.join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("a readable corpus file");
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: failing inputs {failed:#?}");
}
