//! Shared helpers of the engine tests: the seed's objects, request builders, a liveness set, a
//! store that crashes on the N-th write, and the invariants every state must satisfy.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use ipam_core::engine::{AllocateRequest, AnyObject, Engine, Liveness, ReleaseRequest};
use ipam_core::select::{NicConfig, PodContext};
use ipam_core::store::{Deleted, MemStore, Store, TypedStore, WatchStream};
use ipam_core::{
    AppRef, Deployment, Error, IpRecord, IpSet, Kind, LabelSelector, ObjectKey, SpiderEndpoint,
    SpiderIPPool, SpiderSubnet, StatefulSet, Workload, WorkloadKind, ips,
};
use serde_json::Value;

pub const SUBNETS_ANNOTATION: &str = r#"[{"interface":"eth0","ipv4":["subnet-test-ens192"]},{"interface":"net1","ipv4":["subnet-test-ens224"]}]"#;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

pub fn seed_subnets() -> Vec<SpiderSubnet> {
    vec![
        SpiderSubnet::new(
            "subnet-test-ens192",
            "10.6.0.1/16".parse().unwrap(),
            ips!["10.6.168.171-10.6.168.180"],
            Some("10.6.0.1".parse().unwrap()),
        ),
        SpiderSubnet::new(
            "subnet-test-ens224",
            "10.7.0.1/16".parse().unwrap(),
            ips!["10.7.168.171-10.7.168.180"],
            Some("10.7.0.1".parse().unwrap()),
        ),
    ]
}

pub fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The seed's Deployment (or a StatefulSet of the same shape).
pub fn seed_app(kind: WorkloadKind, name: &str, replicas: i32, number: &str) -> Workload {
    Workload::new(
        kind,
        "default",
        name,
        replicas,
        annotations(&[
            ("ipam.spidernet.io/subnets", SUBNETS_ANNOTATION),
            ("ipam.spidernet.io/ippool-ip-number", number),
        ]),
    )
}

pub fn any_workload(w: Workload) -> AnyObject {
    match WorkloadKind::parse(&w.kind).unwrap() {
        WorkloadKind::Deployment => AnyObject::Deployment(Deployment(w)),
        WorkloadKind::StatefulSet => AnyObject::StatefulSet(StatefulSet(w)),
    }
}

pub async fn setup_seed<S: Store>(engine: &Engine<S>) {
    for s in seed_subnets() {
        engine.apply(AnyObject::Subnet(s)).await.unwrap();
    }
}

/// A request for `pod` of `app` (whose template annotations the pod carries) on the given NICs.
pub fn request(
    app: &Workload,
    pod: &str,
    uid: &str,
    container: &str,
    nics: &[&str],
) -> AllocateRequest {
    AllocateRequest {
        pod: PodContext {
            namespace: app.namespace().to_string(),
            name: pod.into(),
            annotations: app.pod_annotations().clone(),
            app: Some(AppRef::of(app)),
            node: "node1".into(),
            ..Default::default()
        },
        pod_uid: uid.into(),
        container_id: container.into(),
        netns: Some(format!("/var/run/netns/{container}")),
        nics: nics
            .iter()
            .map(|n| NicConfig {
                interface: n.to_string(),
                network: Some(format!("net-{n}")),
                ..Default::default()
            })
            .collect(),
    }
}

pub fn release(app: Option<&Workload>, pod: &str, uid: &str, container: &str) -> ReleaseRequest {
    ReleaseRequest {
        namespace: "default".into(),
        name: pod.into(),
        pod_uid: uid.into(),
        container_id: container.into(),
        interfaces: None,
        app: app.map(AppRef::of),
    }
}

/// Containers that are alive.
#[derive(Default)]
pub struct LiveSet(pub Mutex<HashSet<String>>);

impl LiveSet {
    pub fn add(&self, c: &str) {
        self.0.lock().unwrap().insert(c.to_string());
    }
    pub fn remove(&self, c: &str) {
        self.0.lock().unwrap().remove(c);
    }
}

#[async_trait]
impl Liveness for LiveSet {
    async fn alive(&self, record: &IpRecord) -> Result<bool, Error> {
        Ok(record
            .container_id
            .as_ref()
            .is_some_and(|c| self.0.lock().unwrap().contains(c)))
    }
}

/// How an injected failure behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The write does not happen, and the process is dead: every later write fails too.
    Crash,
    /// The write happens but its acknowledgement is lost, then the process is dead.
    AckLost,
}

/// A store that fails its N-th write (1-based) and every write after it.
pub struct FaultyStore {
    pub inner: Arc<MemStore>,
    pub fail_at: usize,
    pub fault: Fault,
    pub writes: AtomicUsize,
}

impl FaultyStore {
    pub fn new(inner: Arc<MemStore>, fail_at: usize, fault: Fault) -> Self {
        FaultyStore {
            inner,
            fail_at,
            fault,
            writes: AtomicUsize::new(0),
        }
    }

    /// Counts a write; returns Some(error) if it must fail, and whether to perform it first.
    fn gate(&self) -> (bool, Option<Error>) {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_at == 0 || n < self.fail_at {
            return (true, None);
        }
        let err = Error::backend(
            "injected",
            format!("write {n} failed (fault at {})", self.fail_at),
        );
        let perform = n == self.fail_at && self.fault == Fault::AckLost;
        (perform, Some(err))
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, Error> {
        self.inner.get(key).await
    }
    async fn list(
        &self,
        kind: Kind,
        ns: Option<&str>,
        sel: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, Error> {
        self.inner.list(kind, ns, sel).await
    }
    async fn create(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        match self.gate() {
            (true, None) => self.inner.create(kind, object).await,
            (perform, Some(e)) => {
                if perform {
                    let _ = self.inner.create(kind, object).await;
                }
                Err(e)
            }
            (false, None) => unreachable!(),
        }
    }
    async fn update(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        match self.gate() {
            (true, None) => self.inner.update(kind, object).await,
            (perform, Some(e)) => {
                if perform {
                    let _ = self.inner.update(kind, object).await;
                }
                Err(e)
            }
            (false, None) => unreachable!(),
        }
    }
    async fn update_status(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        match self.gate() {
            (true, None) => self.inner.update_status(kind, object).await,
            (perform, Some(e)) => {
                if perform {
                    let _ = self.inner.update_status(kind, object).await;
                }
                Err(e)
            }
            (false, None) => unreachable!(),
        }
    }
    async fn delete(&self, key: &ObjectKey, pre: Option<&str>) -> Result<Deleted, Error> {
        match self.gate() {
            (true, None) => self.inner.delete(key, pre).await,
            (perform, Some(e)) => {
                if perform {
                    let _ = self.inner.delete(key, pre).await;
                }
                Err(e)
            }
            (false, None) => unreachable!(),
        }
    }
    fn watch(&self, kind: Kind) -> WatchStream {
        self.inner.watch(kind)
    }
}

/// Checks what must hold in every state, crash or not. Returns the first violation.
pub async fn check_invariants(store: &impl Store) -> Result<(), String> {
    let pools: Vec<SpiderIPPool> = store.list_as(None).await.map_err(|e| e.to_string())?;
    let subnets: Vec<SpiderSubnet> = store.list_as(None).await.map_err(|e| e.to_string())?;
    let mut owners: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut pool_ips: BTreeMap<IpAddr, String> = BTreeMap::new();
    for p in &pools {
        let name = &p.metadata.name;
        let records = p.records();
        let st = p.status.clone().unwrap_or_default();
        if st.allocated_ip_count.unwrap_or(0) != records.len() as i64 {
            return Err(format!(
                "pool {name}: allocatedIPCount {:?} but {} records",
                st.allocated_ip_count,
                records.len()
            ));
        }
        if st.total_ip_count.unwrap_or(0) != p.usable_ips().len() as i64 {
            return Err(format!(
                "pool {name}: totalIPCount {:?} but {} IPs",
                st.total_ip_count,
                p.usable_ips().len()
            ));
        }
        for ip in p.usable_ips().iter() {
            if let Some(other) = pool_ips.insert(ip, name.clone()) {
                return Err(format!("{ip} is in pools {other} and {name}"));
            }
        }
        if !IpSet::from_net(&p.spec.subnet).is_subset(&IpSet::from_net(&p.spec.subnet))
            || !p.spec.ips.is_subset(&IpSet::from_net(&p.spec.subnet))
        {
            return Err(format!("pool {name}: IPs outside its subnet"));
        }
        for (ip, r) in &records {
            if !p.usable_ips().contains(ip) {
                return Err(format!(
                    "pool {name}: record of {ip} outside the pool's IPs"
                ));
            }
            if let Some(prev) = owners.insert(*ip, format!("{name}:{}", r.pod)) {
                return Err(format!("{ip} has two owners: {prev} and {name}:{}", r.pod));
            }
        }
        if let Some(sub) = p.metadata.label(ipam_core::LABEL_OWNER_SUBNET) {
            let Some(s) = subnets.iter().find(|s| s.metadata.name == sub) else {
                return Err(format!("pool {name}: owner subnet {sub} missing"));
            };
            if !p.usable_ips().is_subset(&s.usable_ips()) {
                return Err(format!("pool {name}: IPs outside subnet {sub}'s IPs"));
            }
            let claim = s
                .claims()
                .get(name)
                .map(|c| c.ips.clone())
                .unwrap_or_default();
            if !p.usable_ips().is_subset(&claim) {
                return Err(format!(
                    "pool {name}: IPs {} not claimed in subnet {sub} (claim {})",
                    p.usable_ips().difference(&claim),
                    claim
                ));
            }
        }
    }
    for s in &subnets {
        let name = &s.metadata.name;
        let claims = s.claims();
        let st = s.status.clone().unwrap_or_default();
        let mut union = IpSet::new();
        for (pool, c) in &claims {
            if union.overlaps(&c.ips) {
                return Err(format!(
                    "subnet {name}: claim of {pool} overlaps another claim"
                ));
            }
            union = union.union(&c.ips);
        }
        if !union.is_subset(&s.usable_ips()) {
            return Err(format!("subnet {name}: claims outside its IPs"));
        }
        if st.allocated_ip_count.unwrap_or(0) != union.len() as i64 {
            return Err(format!(
                "subnet {name}: allocatedIPCount {:?} but {} claimed",
                st.allocated_ip_count,
                union.len()
            ));
        }
        if st.total_ip_count.unwrap_or(0) != s.usable_ips().len() as i64 {
            return Err(format!(
                "subnet {name}: totalIPCount {:?}",
                st.total_ip_count
            ));
        }
    }
    Ok(())
}

/// Checks what must hold once nothing is in flight and GC ran: auto pools have their desired
/// size (or all their IPs are held), claims match pools exactly, endpoints are backed.
pub async fn check_quiescent(store: &impl Store, default_extra: u32) -> Result<(), String> {
    check_invariants(store).await?;
    let pools: Vec<SpiderIPPool> = store.list_as(None).await.map_err(|e| e.to_string())?;
    let subnets: Vec<SpiderSubnet> = store.list_as(None).await.map_err(|e| e.to_string())?;
    let mut workloads: Vec<Workload> = Vec::new();
    for d in store
        .list_as::<Deployment>(None)
        .await
        .map_err(|e| e.to_string())?
    {
        workloads.push(d.0);
    }
    for s in store
        .list_as::<StatefulSet>(None)
        .await
        .map_err(|e| e.to_string())?
    {
        workloads.push(s.0);
    }
    for p in &pools {
        if !p.is_auto() || p.metadata.is_terminating() {
            continue;
        }
        let app = p.metadata.label(ipam_core::LABEL_OWNER_APP_NAME).unwrap();
        let kind = p.metadata.label(ipam_core::LABEL_OWNER_APP_KIND).unwrap();
        let Some(w) = workloads
            .iter()
            .find(|w| w.metadata.name == app && w.kind == kind)
        else {
            if p.metadata.label(ipam_core::LABEL_IPPOOL_RECLAIM) == Some("false") {
                continue;
            }
            return Err(format!(
                "auto pool {} outlives its application",
                p.metadata.name
            ));
        };
        let number = w
            .pod_annotations()
            .get("ipam.spidernet.io/ippool-ip-number")
            .map(|v| ipam_core::annotations::IpNumber::parse(v).unwrap())
            .unwrap_or(ipam_core::annotations::IpNumber::Flexible(default_extra));
        let desired = number.desired(w.replicas()) as u128;
        let want = desired.max(p.allocated_count() as u128);
        if p.spec.ips.len() != want {
            return Err(format!(
                "auto pool {} has {} IPs, wants {want} (desired {desired}, {} allocated)",
                p.metadata.name,
                p.spec.ips.len(),
                p.allocated_count()
            ));
        }
    }
    for s in &subnets {
        for (pool, c) in s.claims() {
            let Some(p) = pools.iter().find(|p| p.metadata.name == pool) else {
                return Err(format!(
                    "subnet {}: claim of missing pool {pool}",
                    s.metadata.name
                ));
            };
            if c.ips != p.usable_ips() {
                return Err(format!(
                    "subnet {}: claim of {pool} is {} but the pool has {}",
                    s.metadata.name,
                    c.ips,
                    p.usable_ips()
                ));
            }
        }
    }
    let endpoints: Vec<SpiderEndpoint> = store.list_as(None).await.map_err(|e| e.to_string())?;
    let held: BTreeSet<String> = pools
        .iter()
        .flat_map(|p| p.records().into_values().map(|r| r.pod))
        .collect();
    for e in endpoints {
        let pod = format!(
            "{}/{}",
            e.metadata.namespace.clone().unwrap_or_default(),
            e.metadata.name
        );
        if !held.contains(&pod) {
            return Err(format!("endpoint {pod} holds nothing"));
        }
    }
    Ok(())
}
