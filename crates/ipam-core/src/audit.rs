//! Checks of a store's state against what Berth promises: for tests, crash tests, and operators
//! who want to know that their data is sound.
//!
//! Three levels, each including the one before:
//! - [`safety`]: what holds even in the middle of an operation or right after a crash — no IP
//!   has two holders or is in two pools, every record is an IP of its pool, every pool IP is
//!   claimed for that pool in its subnet (so no second pool can be carved it), claims are
//!   disjoint and inside their subnet;
//! - [`consistency`]: what holds between operations — the stored counts equal the records and
//!   claims (a crash between a spec write and the status write after it breaks this until GC);
//! - [`settled`]: what holds once GC has run and nothing is in flight — auto pools have their
//!   desired size (or every IP is held), claims equal their pools' IPs, no claim without a pool,
//!   no auto pool without its application, every endpoint is backed by records.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::annotations::IpNumber;
use crate::endpoint::SpiderEndpoint;
use crate::error::Error;
use crate::pool::SpiderIPPool;
use crate::range::IpSet;
use crate::store::{Store, TypedStore};
use crate::subnet::SpiderSubnet;
use crate::workload::{Deployment, StatefulSet, Workload};
use crate::{LABEL_IPPOOL_RECLAIM, LABEL_OWNER_APP_KIND, LABEL_OWNER_APP_NAME, LABEL_OWNER_SUBNET};

struct World {
    pools: Vec<SpiderIPPool>,
    subnets: Vec<SpiderSubnet>,
}

async fn load(store: &(impl Store + ?Sized)) -> Result<World, Error> {
    Ok(World {
        pools: store.list_as(None).await?,
        subnets: store.list_as(None).await?,
    })
}

fn check_safety(w: &World, out: &mut Vec<String>) {
    let mut holders: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut in_pool: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for p in &w.pools {
        let name = p.metadata.name.as_str();
        let usable = p.usable_ips();
        // A pool's IPs are few (they are carved or listed by hand); iterate them.
        for ip in usable.iter().take(1 << 20) {
            if let Some(other) = in_pool.insert(ip, name) {
                out.push(format!("{ip} is in pools {other} and {name}"));
            }
        }
        if !p.spec.ips.is_subset(&IpSet::from_net(&p.spec.subnet)) {
            out.push(format!(
                "pool {name}: spec.ips outside its subnet {}",
                p.spec.subnet
            ));
        }
        for (ip, r) in p.records() {
            if !usable.contains(&ip) {
                out.push(format!(
                    "pool {name}: {ip} is held by {} but is not an IP of the pool",
                    r.pod
                ));
            }
            if let Some(prev) = holders.insert(ip, format!("{} (pool {name})", r.pod)) {
                out.push(format!(
                    "{ip} has two holders: {prev} and {} (pool {name})",
                    r.pod
                ));
            }
        }
        if let Some(owner) = p.metadata.label(LABEL_OWNER_SUBNET) {
            let Some(s) = w.subnets.iter().find(|s| s.metadata.name == owner) else {
                out.push(format!(
                    "pool {name}: its SpiderSubnet {owner} does not exist"
                ));
                continue;
            };
            if !usable.is_subset(&s.usable_ips()) {
                out.push(format!(
                    "pool {name}: IPs {} are not IPs of SpiderSubnet {owner}",
                    usable.difference(&s.usable_ips())
                ));
            }
            let claim = s
                .claims()
                .get(name)
                .map(|c| c.ips.clone())
                .unwrap_or_default();
            if !usable.is_subset(&claim) {
                out.push(format!(
                    "pool {name}: IPs {} are not claimed for it in SpiderSubnet {owner}",
                    usable.difference(&claim)
                ));
            }
        }
    }
    for s in &w.subnets {
        let mut union = IpSet::new();
        for (pool, c) in s.claims() {
            if union.overlaps(&c.ips) {
                out.push(format!(
                    "subnet {}: the claim of {pool} overlaps another claim",
                    s.metadata.name
                ));
            }
            union = union.union(&c.ips);
        }
        if !union.is_subset(&s.usable_ips()) {
            out.push(format!(
                "subnet {}: claims {} outside its IPs",
                s.metadata.name,
                union.difference(&s.usable_ips())
            ));
        }
    }
}

fn check_counts(w: &World, out: &mut Vec<String>) {
    for p in &w.pools {
        let st = p.status.clone().unwrap_or_default();
        if st.allocated_ip_count.unwrap_or(0) != p.allocated_count() as i64 {
            out.push(format!(
                "pool {}: allocatedIPCount {} but {} IPs are held",
                p.metadata.name,
                st.allocated_ip_count.unwrap_or(0),
                p.allocated_count()
            ));
        }
        let total = p.usable_ips().len();
        if st.total_ip_count.unwrap_or(0) as u128 != total {
            out.push(format!(
                "pool {}: totalIPCount {} but it has {total} IPs",
                p.metadata.name,
                st.total_ip_count.unwrap_or(0)
            ));
        }
    }
    for s in &w.subnets {
        let st = s.status.clone().unwrap_or_default();
        let claimed = s.claimed_ips().len();
        if st.allocated_ip_count.unwrap_or(0) as u128 != claimed {
            out.push(format!(
                "subnet {}: allocatedIPCount {} but {claimed} IPs are claimed",
                s.metadata.name,
                st.allocated_ip_count.unwrap_or(0)
            ));
        }
        let total = s.usable_ips().len();
        if st.total_ip_count.unwrap_or(0) as u128 != total {
            out.push(format!(
                "subnet {}: totalIPCount {} but it has {total} IPs",
                s.metadata.name,
                st.total_ip_count.unwrap_or(0)
            ));
        }
    }
}

/// Violations of what must hold at any instant, even right after a crash.
pub async fn safety(store: &(impl Store + ?Sized)) -> Result<Vec<String>, Error> {
    let w = load(store).await?;
    let mut out = Vec::new();
    check_safety(&w, &mut out);
    Ok(out)
}

/// Violations of what must hold between operations: safety, and counts equal to reality.
pub async fn consistency(store: &(impl Store + ?Sized)) -> Result<Vec<String>, Error> {
    let w = load(store).await?;
    let mut out = Vec::new();
    check_safety(&w, &mut out);
    check_counts(&w, &mut out);
    Ok(out)
}

/// Violations of what must hold once GC ran and nothing is in flight. `default_ip_number` is
/// the engine's size rule for applications without `ippool-ip-number`.
pub async fn settled(
    store: &(impl Store + ?Sized),
    default_ip_number: IpNumber,
) -> Result<Vec<String>, Error> {
    let w = load(store).await?;
    let mut out = Vec::new();
    check_safety(&w, &mut out);
    check_counts(&w, &mut out);
    let mut workloads: Vec<Workload> = Vec::new();
    workloads.extend(
        store
            .list_as::<Deployment>(None)
            .await?
            .into_iter()
            .map(|d| d.0),
    );
    workloads.extend(
        store
            .list_as::<StatefulSet>(None)
            .await?
            .into_iter()
            .map(|s| s.0),
    );
    for p in &w.pools {
        if !p.is_auto() || p.metadata.is_terminating() {
            continue;
        }
        let app = p.metadata.label(LABEL_OWNER_APP_NAME).unwrap_or_default();
        let kind = p.metadata.label(LABEL_OWNER_APP_KIND).unwrap_or_default();
        let Some(wl) = workloads
            .iter()
            .find(|w| w.metadata.name == app && w.kind == kind)
        else {
            if p.metadata.label(LABEL_IPPOOL_RECLAIM) != Some("false") {
                out.push(format!(
                    "auto pool {} outlives its application {kind} {app}",
                    p.metadata.name
                ));
            }
            continue;
        };
        let number = wl
            .pod_annotations()
            .get(crate::annotations::IPPOOL_IP_NUMBER)
            .and_then(|v| IpNumber::parse(v).ok())
            .unwrap_or(default_ip_number);
        let desired = number.desired(wl.replicas()) as u128;
        let want = desired.max(p.allocated_count() as u128);
        if p.spec.ips.len() != want {
            out.push(format!(
                "auto pool {} has {} IPs, wants {want} (desired {desired}, {} held)",
                p.metadata.name,
                p.spec.ips.len(),
                p.allocated_count()
            ));
        }
    }
    for s in &w.subnets {
        for (pool, c) in s.claims() {
            match w.pools.iter().find(|p| p.metadata.name == pool) {
                None => out.push(format!(
                    "subnet {}: claim of {pool}, which does not exist",
                    s.metadata.name
                )),
                Some(p) if c.ips != p.usable_ips() => out.push(format!(
                    "subnet {}: the claim of {pool} is {} but the pool has {}",
                    s.metadata.name,
                    c.ips,
                    p.usable_ips()
                )),
                Some(_) => {}
            }
        }
    }
    let held: BTreeSet<String> = w
        .pools
        .iter()
        .flat_map(|p| p.iter_records().map(|(_, r)| r.pod.clone()))
        .collect();
    for e in store.list_as::<SpiderEndpoint>(None).await? {
        let pod = format!(
            "{}/{}",
            e.metadata.namespace.clone().unwrap_or_default(),
            e.metadata.name
        );
        if !held.contains(&pod) {
            out.push(format!("endpoint {pod} holds nothing"));
        }
    }
    Ok(out)
}
