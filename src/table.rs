//! What kubectl prints: `kubectl get`-style tables of Berth's objects, with the columns
//! Spiderpool's CRDs print, and the resource names `kubectl apply` and friends report.

use ipam_core::engine::Applied;
use ipam_core::{
    Deployment, IpSet, Kind, ObjectKey, ObjectMeta, SpiderEndpoint, SpiderIPPool, SpiderReservedIP,
    SpiderSubnet, StatefulSet, Workload,
};

/// kubectl's resource name of a kind: `spiderippool.spiderpool.spidernet.io`, `deployment.apps`.
pub fn resource(kind: Kind) -> String {
    let group = kind.api_version().rsplit_once('/').map_or("", |(g, _)| g);
    format!("{}.{group}", kind.name().to_lowercase())
}

/// The kind a kubectl-style name means: the kind's name in any case, its plural, or its short
/// name (`SpiderIPPool`, `spiderippools`, `sp`). Objects and the agent's wire use the exact
/// name only ([`Kind`]'s `FromStr`).
pub fn kind_named(s: &str) -> Option<Kind> {
    let l = s.to_ascii_lowercase();
    Kind::ALL
        .into_iter()
        .find(|k| l == k.name().to_ascii_lowercase() || l == k.plural() || l == k.short_name())
}

/// What `kubectl apply` prints for one object: `deployment.apps/test-app created`.
pub fn applied(key: &ObjectKey, outcome: Applied) -> String {
    let verb = match outcome {
        Applied::Created => "created",
        Applied::Configured => "configured",
        Applied::Unchanged => "unchanged",
    };
    format!("{}/{} {verb}", resource(key.kind), key.name)
}

/// Lays out rows like kubectl's tabwriter: each column as wide as its widest cell plus 3.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}", w = widths[i] + 3));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// kubectl shows an object that is being deleted as `Terminating` in a `STATUS` column. Here
/// the column comes last and only when some listed object is terminating, so that a table of
/// live objects keeps Spiderpool's columns exactly.
fn status_column(header: &mut Vec<&str>, rows: &mut [Vec<String>], terminating: &[bool]) {
    if !terminating.contains(&true) {
        return;
    }
    header.push("STATUS");
    for (row, t) in rows.iter_mut().zip(terminating) {
        row.push(if *t {
            "Terminating".into()
        } else {
            String::new()
        });
    }
}

fn count(c: Option<i64>) -> String {
    c.unwrap_or(0).to_string()
}

fn version(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// `kubectl get spidersubnet`: `NAME VERSION SUBNET ALLOCATED-IP-COUNT TOTAL-IP-COUNT`, and
/// `STATUS` when one is terminating.
pub fn subnets(items: &[SpiderSubnet]) -> String {
    let mut rows: Vec<Vec<String>> = items
        .iter()
        .map(|s| {
            let st = s.status.clone().unwrap_or_default();
            vec![
                s.metadata.name.clone(),
                version(s.spec.ip_version),
                s.spec.subnet.to_string(),
                count(st.allocated_ip_count),
                count(st.total_ip_count),
            ]
        })
        .collect();
    let mut header = vec![
        "NAME",
        "VERSION",
        "SUBNET",
        "ALLOCATED-IP-COUNT",
        "TOTAL-IP-COUNT",
    ];
    let terminating: Vec<bool> = items.iter().map(|s| s.metadata.is_terminating()).collect();
    status_column(&mut header, &mut rows, &terminating);
    render(&header, &rows)
}

/// `kubectl get spiderippool`: `NAME VERSION SUBNET ALLOCATED-IP-COUNT TOTAL-IP-COUNT DEFAULT
/// DISABLE`; `wide` adds `NODENAME MULTUSNAME APP-NAMESPACE`; `STATUS` comes last when one is
/// terminating.
pub fn pools(items: &[SpiderIPPool], wide: bool) -> String {
    let mut rows: Vec<Vec<String>> = items
        .iter()
        .map(|p| {
            let st = p.status.clone().unwrap_or_default();
            let mut row = vec![
                p.metadata.name.clone(),
                version(p.spec.ip_version),
                p.spec.subnet.to_string(),
                count(st.allocated_ip_count),
                count(st.total_ip_count),
                p.spec.default.unwrap_or(false).to_string(),
                p.spec.disable.unwrap_or(false).to_string(),
            ];
            if wide {
                let list = |v: &[String]| {
                    if v.is_empty() {
                        "<none>".into()
                    } else {
                        format!("[{}]", v.join(","))
                    }
                };
                row.push(list(&p.spec.node_name));
                row.push(list(&p.spec.multus_name));
                row.push(
                    p.spec
                        .pod_affinity
                        .as_ref()
                        .and_then(|a| a.match_labels.get(ipam_core::APP_NAMESPACE).cloned())
                        .unwrap_or_else(|| "<none>".into()),
                );
            }
            row
        })
        .collect();
    let mut header = vec![
        "NAME",
        "VERSION",
        "SUBNET",
        "ALLOCATED-IP-COUNT",
        "TOTAL-IP-COUNT",
        "DEFAULT",
        "DISABLE",
    ];
    if wide {
        header.extend(["NODENAME", "MULTUSNAME", "APP-NAMESPACE"]);
    }
    let terminating: Vec<bool> = items.iter().map(|p| p.metadata.is_terminating()).collect();
    status_column(&mut header, &mut rows, &terminating);
    render(&header, &rows)
}

/// `kubectl get spiderendpoint`: one row per NIC, `NAME INTERFACE IPV4POOL IPV4 IPV6POOL IPV6
/// NODE`.
pub fn endpoints(items: &[SpiderEndpoint]) -> String {
    let none = || "<none>".to_string();
    let mut rows = Vec::new();
    for e in items {
        let cur = e.current();
        if cur.ips.is_empty() {
            rows.push(vec![
                e.metadata.name.clone(),
                none(),
                none(),
                none(),
                none(),
                none(),
                cur.node.clone(),
            ]);
        }
        for n in &cur.ips {
            rows.push(vec![
                e.metadata.name.clone(),
                n.interface.clone(),
                n.ipv4_pool.clone().unwrap_or_else(none),
                n.ipv4.map(|a| a.to_string()).unwrap_or_else(none),
                n.ipv6_pool.clone().unwrap_or_else(none),
                n.ipv6.map(|a| a.to_string()).unwrap_or_else(none),
                if cur.node.is_empty() {
                    none()
                } else {
                    cur.node.clone()
                },
            ]);
        }
    }
    render(
        &[
            "NAME",
            "INTERFACE",
            "IPV4POOL",
            "IPV4",
            "IPV6POOL",
            "IPV6",
            "NODE",
        ],
        &rows,
    )
}

/// `kubectl get spiderreservedip`: `NAME VERSION`.
pub fn reserved_ips(items: &[SpiderReservedIP]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| vec![r.metadata.name.clone(), version(r.spec.ip_version)])
        .collect();
    render(&["NAME", "VERSION"], &rows)
}

fn workloads<'a>(items: impl Iterator<Item = &'a Workload>) -> String {
    let rows: Vec<Vec<String>> = items
        .map(|w| {
            vec![
                w.metadata.name.clone(),
                w.replicas().to_string(),
                w.pod_annotations()
                    .get(ipam_core::annotations::IPPOOL_IP_NUMBER)
                    .cloned()
                    .unwrap_or_else(|| "<none>".into()),
            ]
        })
        .collect();
    render(&["NAME", "REPLICAS", "IPPOOL-IP-NUMBER"], &rows)
}

/// Deployments on record: `NAME REPLICAS IPPOOL-IP-NUMBER`.
pub fn deployments(items: &[Deployment]) -> String {
    workloads(items.iter().map(|d| &d.0))
}

/// StatefulSets on record: `NAME REPLICAS IPPOOL-IP-NUMBER`.
pub fn statefulsets(items: &[StatefulSet]) -> String {
    workloads(items.iter().map(|d| &d.0))
}

/// `Field:` lines of `kubectl describe`, values aligned; a multi-line value is indented.
fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0) + 2;
    let mut out = String::new();
    for (key, value) in rows {
        let mut lines = value.lines();
        let first = lines.next().unwrap_or("");
        out.push_str(format!("{:<width$}{first}", format!("{key}:")).trim_end());
        out.push('\n');
        for line in lines {
            out.push_str(&format!("{:width$}{line}\n", ""));
        }
    }
    out
}

/// A set as Spiderpool writes it, with its size: `10.6.168.172-10.6.168.173 (2)`.
fn set_with_count(set: &IpSet) -> String {
    if set.is_empty() {
        "<none>".into()
    } else {
        format!("{set} ({})", set.len())
    }
}

fn labels(meta: &ObjectMeta) -> String {
    if meta.labels.is_empty() {
        return "<none>".into();
    }
    meta.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Terminating (since when, and what it waits for), or `Active`.
fn state(meta: &ObjectMeta, waits_for: impl FnOnce() -> String) -> String {
    match &meta.deletion_timestamp {
        Some(since) => format!("Terminating since {since}: {}", waits_for()),
        None => "Active".into(),
    }
}

/// `berth describe spiderippool NAME`: the pool's IPs, what of them is free, and who holds
/// the rest (pod, container, NIC). `reserved` are the SpiderReservedIPs' IPs, never handed out.
pub fn describe_pool(pool: &SpiderIPPool, reserved: &IpSet) -> String {
    let usable = pool.usable_ips();
    let reserved = usable.intersection(reserved);
    let allocated = pool.allocated_ips();
    let free = usable.difference(&reserved).difference(&allocated);
    let mut status = state(&pool.metadata, || {
        format!(
            "it goes when its {} held IPs are released",
            pool.allocated_count()
        )
    });
    if pool.spec.disable == Some(true) {
        status.push_str(" (disabled: no new allocations)");
    }
    let mut out = fields(&[
        ("Name", pool.metadata.name.clone()),
        ("Labels", labels(&pool.metadata)),
        ("Subnet", pool.spec.subnet.to_string()),
        (
            "Gateway",
            pool.spec.gateway.map_or("<none>".into(), |g| g.to_string()),
        ),
        ("IPs", set_with_count(&usable)),
        ("Excluded IPs", set_with_count(&pool.spec.exclude_ips)),
        ("Reserved IPs", set_with_count(&reserved)),
        (
            "Allocated",
            format!("{} of {}", allocated.len(), usable.len()),
        ),
        ("Free", set_with_count(&free)),
        ("Status", status),
    ]);
    let none = || "<none>".to_string();
    let rows: Vec<Vec<String>> = pool
        .iter_records()
        .map(|(ip, r)| {
            vec![
                ip.to_string(),
                r.pod.clone(),
                r.container_id.clone().unwrap_or_else(none),
                r.interface.clone().unwrap_or_else(none),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str(&fields(&[("Holders", none())]));
    } else {
        out.push_str("Holders:\n");
        for line in render(&["IP", "POD", "CONTAINER", "NIC"], &rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

/// `berth describe spidersubnet NAME`: the subnet's IPs, what no pool holds, and the pools
/// that hold the rest (with how many of them their pods hold; `pools` are the pools on
/// record).
pub fn describe_subnet(subnet: &SpiderSubnet, pools: &[SpiderIPPool], reserved: &IpSet) -> String {
    let usable = subnet.usable_ips();
    let reserved = usable.intersection(reserved);
    let claims = subnet.claims();
    let claimed = subnet.claimed_ips();
    let free = subnet.free_ips(&reserved);
    let names: Vec<&str> = claims.keys().map(String::as_str).collect();
    let mut out = fields(&[
        ("Name", subnet.metadata.name.clone()),
        ("Labels", labels(&subnet.metadata)),
        ("Subnet", subnet.spec.subnet.to_string()),
        (
            "Gateway",
            subnet
                .spec
                .gateway
                .map_or("<none>".into(), |g| g.to_string()),
        ),
        ("IPs", set_with_count(&usable)),
        ("Excluded IPs", set_with_count(&subnet.spec.exclude_ips)),
        ("Reserved IPs", set_with_count(&reserved)),
        ("Claimed", format!("{} of {}", claimed.len(), usable.len())),
        ("Free", set_with_count(&free)),
        (
            "Status",
            state(&subnet.metadata, || {
                format!("it goes when pools {names:?} return its IPs")
            }),
        ),
    ]);
    let rows: Vec<Vec<String>> = claims
        .iter()
        .map(|(name, claim)| {
            let pool = pools.iter().find(|p| &p.metadata.name == name);
            vec![
                name.clone(),
                claim.ips.to_string(),
                claim.ips.len().to_string(),
                pool.map_or("<pool missing>".into(), |p| p.allocated_count().to_string()),
                claim
                    .application
                    .as_ref()
                    .map_or("<none>".into(), |a| a.to_string()),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str(&fields(&[("Pools", "<none>".into())]));
    } else {
        out.push_str("Pools:\n");
        for line in render(&["POOL", "IPS", "COUNT", "ALLOCATED", "APPLICATION"], &rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_kubectl_names() {
        assert_eq!(kind_named("sp"), Some(Kind::SpiderIPPool));
        assert_eq!(kind_named("SpiderSubnets"), Some(Kind::SpiderSubnet));
        assert_eq!(kind_named("spidersubnet"), Some(Kind::SpiderSubnet));
        assert_eq!(kind_named("deploy"), Some(Kind::Deployment));
        assert_eq!(kind_named("statefulset"), Some(Kind::StatefulSet));
        assert_eq!(kind_named("pods"), None);
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_plus_three() {
        let mut s = SpiderSubnet::new(
            "subnet-test-ens192",
            "10.6.0.1/16".parse().unwrap(),
            ipam_core::ips!["10.6.168.171-10.6.168.180"],
            None,
        );
        s.mutate();
        assert_eq!(
            subnets(&[s]),
            "NAME                 VERSION   SUBNET        ALLOCATED-IP-COUNT   TOTAL-IP-COUNT\n\
             subnet-test-ens192   4         10.6.0.1/16   0                    10\n"
        );
    }

    #[test]
    fn terminating_objects_get_a_status_column() {
        let subnet = |name: &str, cidr: &str, range: &str| {
            let mut s =
                SpiderSubnet::new(name, cidr.parse().unwrap(), ipam_core::ips![range], None);
            s.mutate();
            s
        };
        let live = subnet("a", "10.6.0.0/16", "10.6.0.10");
        let mut going = subnet("b", "10.7.0.0/16", "10.7.0.10");
        going.metadata.deletion_timestamp = Some("2026-12-06T00:00:00Z".into());
        assert_eq!(
            subnets(&[live.clone(), going]),
            "NAME   VERSION   SUBNET        ALLOCATED-IP-COUNT   TOTAL-IP-COUNT   STATUS\n\
             a      4         10.6.0.0/16   0                    1\n\
             b      4         10.7.0.0/16   0                    1                Terminating\n"
        );
        assert!(!subnets(&[live]).contains("STATUS"));
    }
}
