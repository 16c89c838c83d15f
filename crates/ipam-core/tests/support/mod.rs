//! Shared helpers of the engine tests: the seed's objects, request builders, a liveness set, a
//! store that crashes on the N-th write, and the invariants every state must satisfy.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use ipam_core::engine::{AllocateRequest, AnyObject, Engine, Liveness, ReleaseRequest};
use ipam_core::store::{Deleted, MemStore, Store, WatchStream};
use ipam_core::{
    AppRef, Deployment, Error, IpRecord, Kind, LabelSelector, ObjectKey, SpiderSubnet, StatefulSet,
    Workload, WorkloadKind, ips,
};
use ipam_core::{NicRequest, PodContext};
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
            .map(|n| NicRequest {
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

/// A store that fails its N-th write (1-based) and every write after it; or, made with
/// [`FaultyStore::lagging_watch`], whose watch holds its events back.
pub struct FaultyStore {
    pub inner: Arc<MemStore>,
    pub fail_at: usize,
    pub fault: Fault,
    pub writes: AtomicUsize,
    /// Whether the watch delivers its events (see [`FaultyStore::lagging_watch`]).
    watch_open: tokio::sync::watch::Sender<bool>,
    /// Pools that listings leave out (see [`FaultyStore::hide_from_lists`]).
    hidden: Mutex<HashSet<String>>,
    /// What listings of the pools show instead of the store (see [`FaultyStore::list_instead`]).
    frozen: Mutex<Option<Vec<Value>>>,
    /// Whether the next status write of a pool fails as a conflict, without happening.
    conflict_next: std::sync::atomic::AtomicBool,
    /// The names of the pools read one by one, in order (see [`FaultyStore::pool_reads`]).
    pool_reads: Mutex<Vec<String>>,
    /// Whether reads yield to other tasks first (see [`FaultyStore::yield_on_reads`]).
    yielding: std::sync::atomic::AtomicBool,
    /// Reads and listings of any kind so far.
    pub reads: AtomicUsize,
    /// Reads of one SpiderEndpoint so far.
    pub endpoint_reads: AtomicUsize,
    /// Calls of `list_current`, which shows the store as it is, whatever the listings hide.
    pub current_listings: AtomicUsize,
}

impl FaultyStore {
    pub fn new(inner: Arc<MemStore>, fail_at: usize, fault: Fault) -> Self {
        FaultyStore {
            inner,
            fail_at,
            fault,
            writes: AtomicUsize::new(0),
            watch_open: tokio::sync::watch::Sender::new(true),
            hidden: Mutex::new(HashSet::new()),
            frozen: Mutex::new(None),
            conflict_next: std::sync::atomic::AtomicBool::new(false),
            pool_reads: Mutex::new(Vec::new()),
            yielding: std::sync::atomic::AtomicBool::new(false),
            reads: AtomicUsize::new(0),
            endpoint_reads: AtomicUsize::new(0),
            current_listings: AtomicUsize::new(0),
        }
    }

    /// Every read and listing from now on lets the other tasks run first, as a round trip to
    /// an API server does: callers running side by side then interleave between their reads
    /// and their writes (an in-memory store answers at once, and they would not).
    pub fn yield_on_reads(&self) {
        self.yielding.store(true, Ordering::SeqCst);
    }

    async fn maybe_yield(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.yielding.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
    }

    /// The names of the pools read one by one (not listed) so far, in order.
    pub fn pool_reads(&self) -> Vec<String> {
        self.pool_reads.lock().unwrap().clone()
    }

    /// Listings of every pool leave `pools` out from now on, while reads and the watch show
    /// them: what a Kubernetes agent's watch-fed listing does for a moment, when it lags the
    /// direct reads that put the pools in the engine's cache.
    pub fn hide_from_lists(&self, pools: impl IntoIterator<Item = String>) {
        self.hidden.lock().unwrap().extend(pools);
    }

    /// Listings of the pools show `pools` from now on, whatever the store holds: a listing
    /// that lags behind the writes the watch and reads already show.
    pub fn list_instead(&self, pools: Vec<ipam_core::SpiderIPPool>) {
        let docs = pools
            .iter()
            .map(|p| ipam_core::store::encode(p).expect("a pool encodes"))
            .collect();
        *self.frozen.lock().unwrap() = Some(docs);
    }

    /// The next status write of a pool fails as a conflict (another writer got there first)
    /// and does not happen.
    pub fn conflict_next_pool_write(&self) {
        self.conflict_next.store(true, Ordering::SeqCst);
    }

    /// A store that fails no write, and whose watch holds its events back until
    /// [`FaultyStore::catch_up`]: what a Kubernetes store's watch does for a moment, while its
    /// listings (served from a watch of their own, or from the API server) already show the
    /// write.
    pub fn lagging_watch(inner: Arc<MemStore>) -> Self {
        let store = Self::new(inner, 0, Fault::Crash);
        store.watch_open.send_replace(false);
        store
    }

    /// Delivers every held event, and every later one at once.
    pub fn catch_up(&self) {
        self.watch_open.send_replace(true);
    }

    /// Runs a write through the gate: done, done but reported failed, or not done.
    async fn gated<T, F: std::future::Future<Output = Result<T, Error>>>(
        &self,
        write: impl FnOnce() -> F,
    ) -> Result<T, Error> {
        match self.gate() {
            (true, None) => write().await,
            (perform, Some(e)) => {
                if perform {
                    let _ = write().await;
                }
                Err(e)
            }
            (false, None) => unreachable!("a write that succeeds is performed"),
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
        match key.kind {
            Kind::SpiderIPPool => self.pool_reads.lock().unwrap().push(key.name.clone()),
            Kind::SpiderEndpoint => {
                self.endpoint_reads.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        self.maybe_yield().await;
        self.inner.get(key).await
    }
    async fn list(
        &self,
        kind: Kind,
        ns: Option<&str>,
        sel: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, Error> {
        self.maybe_yield().await;
        let frozen = self.frozen.lock().unwrap().clone();
        let mut listed = match frozen {
            Some(docs) if kind == Kind::SpiderIPPool && sel.is_none() => docs,
            _ => self.inner.list(kind, ns, sel).await?,
        };
        if kind == Kind::SpiderIPPool {
            let hidden = self.hidden.lock().unwrap();
            listed.retain(|p| {
                !p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| hidden.contains(n))
            });
        }
        Ok(listed)
    }
    async fn list_current(
        &self,
        kind: Kind,
        ns: Option<&str>,
        sel: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, Error> {
        self.maybe_yield().await;
        self.current_listings.fetch_add(1, Ordering::SeqCst);
        self.inner.list(kind, ns, sel).await
    }
    async fn create(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        self.gated(|| self.inner.create(kind, object)).await
    }
    async fn update(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        self.gated(|| self.inner.update(kind, object)).await
    }
    async fn update_status(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        if kind == Kind::SpiderIPPool && self.conflict_next.swap(false, Ordering::SeqCst) {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            return Err(Error::Conflict(ObjectKey::cluster(kind, name)));
        }
        self.gated(|| self.inner.update_status(kind, object)).await
    }
    async fn delete(&self, key: &ObjectKey, pre: Option<&str>) -> Result<Deleted, Error> {
        self.gated(|| self.inner.delete(key, pre)).await
    }
    fn watch(&self, kind: Kind) -> WatchStream {
        let open = self.watch_open.subscribe();
        Box::pin(futures::StreamExt::then(
            self.inner.watch(kind),
            move |event| {
                let mut open = open.clone();
                async move {
                    let _ = open.wait_for(|o| *o).await;
                    event
                }
            },
        ))
    }
    fn watches_every_write(&self) -> bool {
        self.inner.watches_every_write()
    }
}

/// A memory store, an engine on it (an admin's, or the controller's), and a [`FaultyStore`]
/// over it that fails no write, for an agent whose view of the store the test then bends.
pub fn store_and_faulty_view() -> (Arc<MemStore>, Engine<Arc<MemStore>>, Arc<FaultyStore>) {
    let mem = Arc::new(MemStore::new());
    let engine = Engine::new(mem.clone());
    let faulty = Arc::new(FaultyStore::new(mem.clone(), 0, Fault::Crash));
    (mem, engine, faulty)
}

/// Checks what must hold between operations (see `ipam_core::audit`).
pub async fn check_invariants(store: &impl Store) -> Result<(), String> {
    let v = ipam_core::audit::consistency(store)
        .await
        .map_err(|e| e.to_string())?;
    if v.is_empty() {
        Ok(())
    } else {
        Err(v.join("; "))
    }
}

/// Checks what must hold once nothing is in flight and GC ran (see `ipam_core::audit`).
pub async fn check_quiescent(store: &impl Store, default_extra: u32) -> Result<(), String> {
    let number = ipam_core::annotations::IpNumber::Flexible(default_extra);
    let v = ipam_core::audit::settled(store, number)
        .await
        .map_err(|e| e.to_string())?;
    if v.is_empty() {
        Ok(())
    } else {
        Err(v.join("; "))
    }
}
