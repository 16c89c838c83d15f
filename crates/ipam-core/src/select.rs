//! Which pools a NIC may take its IPs from, in which order.
//!
//! The first rule that names pools for the NIC wins (Spiderpool's precedence):
//! `subnets` > `subnet` (auto pools) > `ippools` > `ippool` > namespace defaults > CNI config
//! defaults > pools with `spec.default`. The named pools are then filtered (terminating,
//! disabled, node, namespace, pod and Multus affinity) and ordered by how specific their
//! affinity is, keeping the order the user wrote among equals (Spiderpool's order among equals
//! is random).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::annotations::{
    self, NS_DEFAULT_IPV4_IPPOOL, NS_DEFAULT_IPV6_IPPOOL, PodAnnotations, PoolItem,
};
use crate::engine::{NicRequest, PodContext};
use crate::error::Error;
use crate::meta::{Kind, LabelSelector};
use crate::pool::SpiderIPPool;
use crate::range::IpFamily;
use crate::workload::AppRef;
use crate::{
    APP_API_GROUP, APP_API_VERSION, APP_KIND, APP_NAME, APP_NAMESPACE, LABEL_INTERFACE,
    LABEL_IP_VERSION, LABEL_OWNER_APP_KIND, LABEL_OWNER_APP_NAME, LABEL_OWNER_APP_NAMESPACE,
    LABEL_OWNER_APP_UID,
};

/// Which rule chose the pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `ipam.spidernet.io/subnets` or `subnet`: the application's auto pools.
    AutoPool,
    /// `ipam.spidernet.io/ippools`.
    PodIpPools,
    /// `ipam.spidernet.io/ippool`.
    PodIpPool,
    /// The namespace's default-pool annotations.
    Namespace,
    /// The CNI configuration's default pools.
    CniConfig,
    /// Pools with `spec.default: true`.
    ClusterDefault,
}

impl Source {
    fn describe(self) -> &'static str {
        match self {
            Source::AutoPool => "the pod's ipam.spidernet.io/subnets annotation",
            Source::PodIpPools => "the pod's ipam.spidernet.io/ippools annotation",
            Source::PodIpPool => "the pod's ipam.spidernet.io/ippool annotation",
            Source::Namespace => "the namespace's default-ipv4/ipv6-ippool annotations",
            Source::CniConfig => "the CNI config's default_ipv4/ipv6_ippool",
            Source::ClusterDefault => "the pools with spec.default: true",
        }
    }
}

/// The outcome of selection for one NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The rule that applied.
    pub source: Source,
    /// Per family, the pools to try in order (families the rule does not name are absent).
    pub families: Vec<(IpFamily, Vec<String>)>,
    /// No default route through this NIC's gateway.
    pub clean_gateway: bool,
}

impl Selection {
    /// The candidate pools of one family.
    #[cfg(test)]
    fn pools(&self, f: IpFamily) -> Option<&[String]> {
        self.families
            .iter()
            .find(|(g, _)| *g == f)
            .map(|(_, p)| p.as_slice())
    }
}

/// The auto pool of `app` for one NIC and family, if it exists and belongs to this incarnation
/// of the application (or was retained with `ippool-reclaim: "false"`).
pub fn find_auto_pool<'a>(
    pools: &'a [Arc<SpiderIPPool>],
    app: &AppRef,
    app_uid: Option<&str>,
    nic: &str,
    family: IpFamily,
) -> Option<&'a SpiderIPPool> {
    let version = family.to_string();
    let mut matching = pools.iter().filter(|p| {
        let l = &p.metadata;
        l.label(LABEL_OWNER_APP_KIND) == Some(app.kind.as_str())
            && l.label(LABEL_OWNER_APP_NAMESPACE) == Some(app.namespace.as_str())
            && l.label(LABEL_OWNER_APP_NAME) == Some(app.name.as_str())
            && l.label(LABEL_INTERFACE) == Some(nic)
            && l.label(LABEL_IP_VERSION) == Some(version.as_str())
    });
    // Prefer the pool of this incarnation; a pool of a former one is found too (retained pools
    // are adopted by the reconcile, reclaimable ones are on their way out).
    let all: Vec<&'a SpiderIPPool> = matching.by_ref().map(|p| p.as_ref()).collect();
    let first = all.first().copied();
    all.into_iter()
        .find(|p| app_uid.is_none() || p.metadata.label(LABEL_OWNER_APP_UID) == app_uid)
        .or(first)
}

/// Go's `filepath.Match` on a pool name (`*`, `?`, `[a-z]`, `[^a-z]`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, chars consumed including ']').
        let mut i = 0;
        let negate = matches!(p.first(), Some('^') | Some('!'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let lo = p[i];
            if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                if lo <= c && c <= p[i + 2] {
                    matched = true;
                }
                i += 3;
            } else {
                if lo == c {
                    matched = true;
                }
                i += 1;
            }
        }
        None
    }
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => match (n.first(), class(&p[1..], *n.first().unwrap_or(&'\0'))) {
                (Some(_), Some((true, used))) => go(&p[1 + used..], &n[1..]),
                _ => false,
            },
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expands names and patterns into pool names of `family`, keeping the written order and
/// sorting each pattern's matches by name.
fn expand(
    names: &[String],
    family: IpFamily,
    pools: &[Arc<SpiderIPPool>],
    referrer: &str,
) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if is_pattern(n) {
            let mut hits: Vec<&str> = pools
                .iter()
                .filter(|p| p.family() == family && glob_match(n, &p.metadata.name))
                .map(|p| p.metadata.name.as_str())
                .collect();
            hits.sort_unstable();
            for h in hits {
                if !out.iter().any(|o| o == h) {
                    out.push(h.to_string());
                }
            }
        } else {
            if !pools.iter().any(|p| &p.metadata.name == n) {
                return Err(Error::UnknownReference {
                    kind: Kind::SpiderIPPool,
                    name: n.clone(),
                    referrer: referrer.to_string(),
                });
            }
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
    }
    Ok(out)
}

/// A pool's limit to some nodes or namespaces: a list of names, which takes precedence, or
/// a label selector.
struct Scope {
    /// `node` or `namespace`.
    what: &'static str,
    /// The spec key of the names.
    names_key: &'static str,
    /// The spec key of the selector.
    selector_key: &'static str,
}

impl Scope {
    /// Why `name` (with `labels`) is outside the pool's `names` or `selector`, if it is.
    fn refuses(
        &self,
        names: &[String],
        selector: Option<&LabelSelector>,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<String> {
        let Scope {
            what,
            names_key,
            selector_key,
        } = self;
        if !names.is_empty() {
            return (!names.iter().any(|n| n == name))
                .then(|| format!("{names_key} {names:?} does not include {what} {name:?}"));
        }
        let sel = selector?;
        (!sel.matches(labels))
            .then(|| format!("{selector_key} {sel} does not match {what} {name:?}"))
    }
}

/// Why a pool cannot serve this NIC, if it cannot.
fn filter_reason(
    pool: &SpiderIPPool,
    family: IpFamily,
    ctx: &PodContext,
    nic_network: Option<&str>,
) -> Option<String> {
    if pool.metadata.is_terminating() {
        return Some("terminating".into());
    }
    if pool.spec.disable == Some(true) {
        return Some("disabled".into());
    }
    if pool.family() != family {
        return Some(format!("is {}, not {family}", pool.family()));
    }
    let node = Scope {
        what: "node",
        names_key: "nodeName",
        selector_key: "nodeAffinity",
    };
    if let Some(reason) = node.refuses(
        &pool.spec.node_name,
        pool.spec.node_affinity.as_ref(),
        &ctx.node,
        &ctx.node_labels,
    ) {
        return Some(reason);
    }
    let namespace = Scope {
        what: "namespace",
        names_key: "namespaceName",
        selector_key: "namespaceAffinity",
    };
    if let Some(reason) = namespace.refuses(
        &pool.spec.namespace_name,
        pool.spec.namespace_affinity.as_ref(),
        &ctx.namespace,
        &ctx.namespace_labels,
    ) {
        return Some(reason);
    }
    if let Some(sel) = &pool.spec.pod_affinity {
        if pool.is_auto() {
            let app_labels: BTreeMap<String, String> = match &ctx.app {
                Some(app) => [
                    (APP_API_GROUP, app.group.as_str()),
                    (APP_API_VERSION, app.version.as_str()),
                    (APP_KIND, app.kind.as_str()),
                    (APP_NAMESPACE, app.namespace.as_str()),
                    (APP_NAME, app.name.as_str()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                None => BTreeMap::new(),
            };
            if !sel.matches(&app_labels) {
                return Some(match &ctx.app {
                    Some(app) => format!("an auto pool of another application, not of {app}"),
                    None => "an auto pool, and the pod has no application".into(),
                });
            }
        } else if !sel.matches(&ctx.labels) {
            return Some(format!("podAffinity {sel} does not match the pod's labels"));
        }
    }
    if !pool.spec.multus_name.is_empty() {
        let want = |m: &str| -> bool {
            let Some(net) = nic_network else {
                return false;
            };
            let full = |s: &str| {
                if s.contains('/') {
                    s.to_string()
                } else {
                    format!("kube-system/{s}")
                }
            };
            full(m) == full(net) || (!net.contains('/') && m.rsplit('/').next() == Some(net))
        };
        if !pool.spec.multus_name.iter().any(|m| want(m)) {
            return Some(format!(
                "multusName {:?} does not include the NIC's network {}",
                pool.spec.multus_name,
                nic_network.unwrap_or("(none)")
            ));
        }
    }
    None
}

/// Spiderpool's `ByPoolPriority`: more specific affinity first.
fn priority(p: &SpiderIPPool) -> u8 {
    let s = &p.spec;
    let mut score = 0;
    if s.pod_affinity.is_some() {
        score += 32;
    }
    if !s.node_name.is_empty() {
        score += 16;
    } else if s.node_affinity.is_some() {
        score += 8;
    }
    if !s.namespace_name.is_empty() {
        score += 4;
    } else if s.namespace_affinity.is_some() {
        score += 2;
    }
    if !s.multus_name.is_empty() {
        score += 1;
    }
    score
}

/// Filters and orders the named pools of one family, or explains why none is left.
fn finish(
    names: Vec<String>,
    family: IpFamily,
    source: Source,
    ctx: &PodContext,
    nic: &NicRequest,
    pools: &[Arc<SpiderIPPool>],
) -> Result<Vec<String>, Error> {
    let nic_network =
        annotations::multus_network_for(&ctx.annotations, &ctx.namespace, &nic.interface)?
            .or_else(|| nic.network.clone());
    let mut kept: Vec<&SpiderIPPool> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    for n in &names {
        let pool: &SpiderIPPool = pools
            .iter()
            .find(|p| &p.metadata.name == n)
            .expect("expanded names exist");
        match filter_reason(pool, family, ctx, nic_network.as_deref()) {
            None => kept.push(pool),
            Some(r) => reasons.push(format!("{n}: {r}")),
        }
    }
    if kept.is_empty() {
        let reason = if names.is_empty() {
            format!("{} names no {family} pool", source.describe())
        } else {
            format!(
                "every pool from {} was filtered out: {}",
                source.describe(),
                reasons.join("; ")
            )
        };
        return Err(Error::NoPool {
            nic: nic.interface.clone(),
            family,
            reason,
        });
    }
    kept.sort_by_key(|p| std::cmp::Reverse(priority(p)));
    Ok(kept.into_iter().map(|p| p.metadata.name.clone()).collect())
}

fn from_item(
    item: &PoolItem,
    source: Source,
    referrer: &str,
    ctx: &PodContext,
    nic: &NicRequest,
    pools: &[Arc<SpiderIPPool>],
    clean_default: bool,
) -> Result<Selection, Error> {
    let mut families = Vec::new();
    for (f, names) in [(IpFamily::V4, &item.ipv4), (IpFamily::V6, &item.ipv6)] {
        if names.is_empty() {
            continue;
        }
        let expanded = expand(names, f, pools, referrer)?;
        families.push((f, finish(expanded, f, source, ctx, nic, pools)?));
    }
    Ok(Selection {
        source,
        families,
        clean_gateway: item.clean_gateway.unwrap_or(clean_default),
    })
}

/// Chooses the candidate pools of one NIC.
///
/// `pools` is every pool in the store. Errors name the rule that applied and why each of its
/// pools was refused.
pub fn select(
    ctx: &PodContext,
    parsed: &PodAnnotations,
    nic: &NicRequest,
    pools: &[Arc<SpiderIPPool>],
) -> Result<Selection, Error> {
    let clean_default = nic.clean_gateway.unwrap_or(false);
    let iface = nic.interface.as_str();
    if let Some(item) = parsed.subnet_for(iface) {
        let Some(app) = &ctx.app else {
            return Err(Error::Annotation {
                key: annotations::SUBNETS.into(),
                reason: format!(
                    "pod {}/{} has no application (Deployment or StatefulSet) to size auto pools for; \
                     use ipam.spidernet.io/ippool(s) for bare pods",
                    ctx.namespace, ctx.name
                ),
            });
        };
        let mut families = Vec::new();
        for (f, subnet) in [(IpFamily::V4, &item.ipv4), (IpFamily::V6, &item.ipv6)] {
            let Some(subnet) = subnet else { continue };
            let pool = find_auto_pool(pools, app, ctx.app_uid.as_deref(), iface, f).ok_or_else(
                || Error::NoPool {
                    nic: iface.into(),
                    family: f,
                    reason: format!(
                        "the auto pool of {app} from SpiderSubnet {subnet:?} does not exist yet; \
                         apply the application so its pools are created"
                    ),
                },
            )?;
            let names = vec![pool.metadata.name.clone()];
            families.push((f, finish(names, f, Source::AutoPool, ctx, nic, pools)?));
        }
        return Ok(Selection {
            source: Source::AutoPool,
            families,
            clean_gateway: clean_default,
        });
    }
    if let Some(item) = parsed.ippools_for(iface)? {
        return from_item(
            item,
            Source::PodIpPools,
            annotations::IPPOOLS,
            ctx,
            nic,
            pools,
            clean_default,
        );
    }
    if let Some(item) = &parsed.ippool {
        return from_item(
            item,
            Source::PodIpPool,
            annotations::IPPOOL,
            ctx,
            nic,
            pools,
            clean_default,
        );
    }
    let ns_v4 = ctx.namespace_annotations.get(NS_DEFAULT_IPV4_IPPOOL);
    let ns_v6 = ctx.namespace_annotations.get(NS_DEFAULT_IPV6_IPPOOL);
    if ns_v4.is_some() || ns_v6.is_some() {
        let item = PoolItem {
            interface: None,
            ipv4: ns_v4
                .map(|v| annotations::namespace_default_pools(NS_DEFAULT_IPV4_IPPOOL, v))
                .transpose()?
                .unwrap_or_default(),
            ipv6: ns_v6
                .map(|v| annotations::namespace_default_pools(NS_DEFAULT_IPV6_IPPOOL, v))
                .transpose()?
                .unwrap_or_default(),
            clean_gateway: None,
        };
        if !item.ipv4.is_empty() || !item.ipv6.is_empty() {
            let referrer = format!("namespace {:?} default pools", ctx.namespace);
            return from_item(
                &item,
                Source::Namespace,
                &referrer,
                ctx,
                nic,
                pools,
                clean_default,
            );
        }
    }
    if !nic.default_ipv4_pools.is_empty() || !nic.default_ipv6_pools.is_empty() {
        let item = PoolItem {
            interface: None,
            ipv4: nic.default_ipv4_pools.clone(),
            ipv6: nic.default_ipv6_pools.clone(),
            clean_gateway: None,
        };
        return from_item(
            &item,
            Source::CniConfig,
            "the CNI config",
            ctx,
            nic,
            pools,
            clean_default,
        );
    }
    let mut families = Vec::new();
    for f in IpFamily::BOTH {
        let names: Vec<String> = pools
            .iter()
            .filter(|p| p.spec.default == Some(true) && p.family() == f)
            .map(|p| p.metadata.name.clone())
            .collect();
        if names.is_empty() {
            continue;
        }
        families.push((
            f,
            finish(names, f, Source::ClusterDefault, ctx, nic, pools)?,
        ));
    }
    if families.is_empty() {
        return Err(Error::NoPool {
            nic: iface.into(),
            family: IpFamily::V4,
            reason: "no rule names a pool: no ipam.spidernet.io annotation, no namespace or CNI \
                     config default, and no pool has spec.default: true"
                .into(),
        });
    }
    Ok(Selection {
        source: Source::ClusterDefault,
        families,
        clean_gateway: clean_default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::{IPPOOL, IPPOOLS};
    use crate::ips;
    use crate::meta::LabelSelector;
    use crate::workload::WorkloadKind;

    fn pool(name: &str, cidr: &str) -> SpiderIPPool {
        let ips = if cidr.contains(':') {
            ips!["fd00::10-fd00::20"]
        } else {
            ips!["10.0.0.10-10.0.0.20"]
        };
        let mut p = SpiderIPPool::new(name, cidr.parse().unwrap(), ips);
        p.mutate(&[]);
        p
    }

    fn ctx() -> PodContext {
        PodContext {
            namespace: "default".into(),
            name: "pod-1".into(),
            node: "node1".into(),
            ..Default::default()
        }
    }

    fn nic(iface: &str) -> NicRequest {
        NicRequest {
            interface: iface.into(),
            ..Default::default()
        }
    }

    fn sel(ctx: &PodContext, nic: &NicRequest, pools: &[SpiderIPPool]) -> Result<Selection, Error> {
        let parsed = PodAnnotations::parse(&ctx.annotations)?;
        let pools: Vec<Arc<SpiderIPPool>> = pools.iter().cloned().map(Arc::new).collect();
        select(ctx, &parsed, nic, &pools)
    }

    #[test]
    fn globs_follow_go_filepath_match() {
        assert!(glob_match("pool-*", "pool-a"));
        assert!(glob_match("pool-?", "pool-b"));
        assert!(!glob_match("pool-?", "pool-bb"));
        assert!(glob_match("v4-[a-c]", "v4-b"));
        assert!(!glob_match("v4-[^a-c]", "v4-b"));
        assert!(glob_match("v4-[^a-c]", "v4-x"));
        assert!(
            !glob_match("v4-[a-c", "v4-a"),
            "unterminated class matches nothing"
        );
        assert!(glob_match("*", ""));
    }

    #[test]
    fn precedence_pod_annotations_over_namespace_over_cni_over_default() {
        let mut pools = vec![
            pool("ann", "10.0.0.0/24"),
            pool("ns", "10.0.1.0/24"),
            pool("cni", "10.0.2.0/24"),
            pool("dflt", "10.0.3.0/24"),
        ];
        pools[3].spec.default = Some(true);
        let mut c = ctx();
        let mut n = nic("eth0");
        assert_eq!(
            sel(&c, &n, &pools).unwrap().pools(IpFamily::V4).unwrap(),
            ["dflt"]
        );
        n.default_ipv4_pools = vec!["cni".into()];
        let s = sel(&c, &n, &pools).unwrap();
        assert_eq!(
            (s.source, s.pools(IpFamily::V4).unwrap()),
            (Source::CniConfig, &["cni".to_string()][..])
        );
        c.namespace_annotations
            .insert(NS_DEFAULT_IPV4_IPPOOL.into(), r#"["ns"]"#.into());
        assert_eq!(sel(&c, &n, &pools).unwrap().source, Source::Namespace);
        c.annotations
            .insert(IPPOOL.into(), r#"{"ipv4":["ann"]}"#.into());
        assert_eq!(sel(&c, &n, &pools).unwrap().source, Source::PodIpPool);
        c.annotations.insert(
            IPPOOLS.into(),
            r#"[{"interface":"eth0","ipv4":["ns"],"cleangateway":true}]"#.into(),
        );
        let s = sel(&c, &n, &pools).unwrap();
        assert_eq!((s.source, s.clean_gateway), (Source::PodIpPools, true));
        assert_eq!(s.pools(IpFamily::V4).unwrap(), ["ns"]);
    }

    #[test]
    fn user_order_is_kept_among_equals_and_specific_affinity_goes_first() {
        let mut pools = vec![
            pool("c", "10.0.0.0/24"),
            pool("a", "10.0.1.0/24"),
            pool("b", "10.0.2.0/24"),
        ];
        let mut c = ctx();
        c.annotations
            .insert(IPPOOL.into(), r#"{"ipv4":["b","c","a"]}"#.into());
        assert_eq!(
            sel(&c, &nic("eth0"), &pools)
                .unwrap()
                .pools(IpFamily::V4)
                .unwrap(),
            ["b", "c", "a"]
        );
        pools[1].spec.node_name = vec!["node1".into()];
        assert_eq!(
            sel(&c, &nic("eth0"), &pools)
                .unwrap()
                .pools(IpFamily::V4)
                .unwrap(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn wildcards_expand_by_name_and_unknown_pools_are_named() {
        let pools = vec![
            pool("v4-b", "10.0.0.0/24"),
            pool("v4-a", "10.0.1.0/24"),
            pool("v6-a", "fd00::/64"),
        ];
        let mut c = ctx();
        c.annotations
            .insert(IPPOOL.into(), r#"{"ipv4":["v4-*"],"ipv6":["v6-?"]}"#.into());
        let s = sel(&c, &nic("eth0"), &pools).unwrap();
        assert_eq!(s.pools(IpFamily::V4).unwrap(), ["v4-a", "v4-b"]);
        assert_eq!(s.pools(IpFamily::V6).unwrap(), ["v6-a"]);
        c.annotations
            .insert(IPPOOL.into(), r#"{"ipv4":["v4-a","missing"]}"#.into());
        let err = sel(&c, &nic("eth0"), &pools).unwrap_err().to_string();
        assert_eq!(
            err,
            r#"ipam.spidernet.io/ippool refers to SpiderIPPool "missing", which does not exist"#
        );
    }

    #[test]
    fn filters_explain_every_refusal() {
        let mut pools = vec![
            pool("off", "10.0.0.0/24"),
            pool("far", "10.0.1.0/24"),
            pool("ns", "10.0.2.0/24"),
            pool("pods", "10.0.3.0/24"),
            pool("multus", "10.0.4.0/24"),
        ];
        pools[0].spec.disable = Some(true);
        pools[1].spec.node_name = vec!["node9".into()];
        pools[2].spec.namespace_affinity = Some(LabelSelector::eq([("team", "a")]));
        pools[3].spec.pod_affinity = Some(LabelSelector::eq([("app", "x")]));
        pools[4].spec.multus_name = vec!["kube-system/other".into()];
        let mut c = ctx();
        c.annotations.insert(
            IPPOOL.into(),
            r#"{"ipv4":["off","far","ns","pods","multus"]}"#.into(),
        );
        let err = sel(&c, &nic("eth0"), &pools).unwrap_err().to_string();
        for want in [
            "off: disabled",
            "far: nodeName",
            "ns: namespaceAffinity team=a",
            "pods: podAffinity app=x",
            "multus: multusName",
        ] {
            assert!(err.contains(want), "{want} missing in {err}");
        }
        c.labels.insert("app".into(), "x".into());
        c.namespace_labels.insert("team".into(), "a".into());
        c.annotations.insert(
            annotations::MULTUS_DEFAULT_NETWORK.into(),
            "kube-system/other".into(),
        );
        let s = sel(&c, &nic("eth0"), &pools).unwrap();
        assert_eq!(s.pools(IpFamily::V4).unwrap(), ["pods", "ns", "multus"]);
    }

    #[test]
    fn auto_pools_need_their_application() {
        let mut p = pool("auto4-web-eth0-abcde", "10.0.0.0/24");
        for (k, v) in [
            (LABEL_OWNER_APP_KIND, "Deployment"),
            (LABEL_OWNER_APP_NAMESPACE, "default"),
            (LABEL_OWNER_APP_NAME, "web"),
            (LABEL_OWNER_APP_UID, "u1"),
            (LABEL_INTERFACE, "eth0"),
            (LABEL_IP_VERSION, "IPv4"),
        ] {
            p.metadata.labels.insert(k.into(), v.into());
        }
        let app = AppRef::apps_v1(WorkloadKind::Deployment, "default", "web");
        p.spec.pod_affinity = Some(LabelSelector::eq([
            (APP_API_GROUP, "apps"),
            (APP_API_VERSION, "v1"),
            (APP_KIND, "Deployment"),
            (APP_NAMESPACE, "default"),
            (APP_NAME, "web"),
        ]));
        let pools = vec![p];
        let mut c = ctx();
        c.annotations.insert(
            annotations::SUBNETS.into(),
            r#"[{"interface":"eth0","ipv4":["s"]}]"#.into(),
        );
        assert!(
            sel(&c, &nic("eth0"), &pools)
                .unwrap_err()
                .to_string()
                .contains("no application")
        );
        c.app = Some(app);
        c.app_uid = Some("u1".into());
        let s = sel(&c, &nic("eth0"), &pools).unwrap();
        assert_eq!(
            (s.source, s.pools(IpFamily::V4).unwrap()),
            (Source::AutoPool, &["auto4-web-eth0-abcde".to_string()][..])
        );
        c.app = Some(AppRef::apps_v1(
            WorkloadKind::Deployment,
            "default",
            "other",
        ));
        assert!(
            sel(&c, &nic("eth0"), &pools)
                .unwrap_err()
                .to_string()
                .contains("does not exist yet")
        );
    }
}
