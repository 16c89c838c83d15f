//! The engine: allocate, release, reconcile applications, garbage-collect — on any [`Store`].
//!
//! The engine holds no state that matters for correctness: everything it knows is re-read from
//! the store, and every decision is written with the version it was based on as precondition.
//! There is no atomicity across objects, so writes are ordered such that stopping after any of
//! them leaves at worst an unused claim or record (which a retry reuses or GC frees), never one
//! IP with two holders:
//!
//! - an IP is held when its record is in the pool's status; the pod's SpiderEndpoint is written
//!   after the pool, and removed after the pool record is gone;
//! - a pool's IPs are claimed in its SpiderSubnet before the pool gets them, and the claim is
//!   trimmed only after the pool gave them back;
//! - a pool is removed (its finalizer dropped) only when no record is left, and only then is its
//!   claim released.
//!
//! A change of one object goes through `Engine::modify` (see `modify`): it re-reads and redoes
//! the change on a conflict, a bounded number of times with jittered backoff, and merges
//! concurrent changes of one object into one write (`queue`). Allocations and releases on one
//! pool are merged the same way by `batch`, which writes only the records that changed.
//!
//! # Auto pools
//!
//! An application (a Deployment or StatefulSet; in a cluster, any controller) that names
//! SpiderSubnets in its pod template's `ipam.spidernet.io/subnets` annotation gets an *auto
//! pool* per NIC and family, carved from the subnet and sized `replicas + N`
//! (`ipam.spidernet.io/ippool-ip-number: "+N"`) or `N`. Applying the application creates
//! them; scaling it grows or shrinks them (shrinking only by free IPs); deleting it reclaims
//! them, their IPs going back to the subnet once the last pod released its own. The pods of
//! the application then allocate from them. Two NICs of a pod get an IP each from the seed's
//! two subnets:
//!
//! ```
//! use ipam_core::store::MemStore;
//! use ipam_core::{
//!     AllocateRequest, AppRef, Deployment, Engine, NicRequest, PodContext, SpiderSubnet, Workload,
//!     WorkloadKind, ips,
//! };
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let engine = Engine::new(MemStore::new());
//! for (name, net, range, gw) in [
//!     ("subnet-test-ens192", "10.6.0.1/16", "10.6.168.171-10.6.168.180", "10.6.0.1"),
//!     ("subnet-test-ens224", "10.7.0.1/16", "10.7.168.171-10.7.168.180", "10.7.0.1"),
//! ] {
//!     let s = SpiderSubnet::new(name, net.parse()?, ips![range], Some(gw.parse()?));
//!     engine.apply(s).await?;
//! }
//! let annotations = [
//!     ("ipam.spidernet.io/subnets", r#"[{"interface":"eth0","ipv4":["subnet-test-ens192"]},
//!                                       {"interface":"net1","ipv4":["subnet-test-ens224"]}]"#),
//!     ("ipam.spidernet.io/ippool-ip-number", "+1"),
//! ];
//! let app = Workload::new(WorkloadKind::Deployment, "default", "test-app", 2,
//!     annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
//! engine.apply(Deployment(app.clone())).await?;
//!
//! let request = AllocateRequest {
//!     pod: PodContext {
//!         namespace: "default".into(),
//!         name: "test-app-6f4594ff67-fkqbw".into(),
//!         annotations: app.pod_annotations().clone(),
//!         app: Some(AppRef::of(&app)),
//!         ..Default::default()
//!     },
//!     pod_uid: "pod-uid-1".into(),
//!     container_id: "c1".into(),
//!     nics: ["eth0", "net1"].map(|i| NicRequest { interface: i.into(), ..Default::default() }).into(),
//!     ..Default::default()
//! };
//! let got = engine.allocate(&request).await?;
//! assert_eq!(got.nics[0].ips[0].address.to_string(), "10.6.168.171/16");
//! assert_eq!(got.nics[1].ips[0].address.to_string(), "10.7.168.171/16");
//! assert_eq!(engine.allocate(&request).await?, got, "a retried ADD gets the same IPs");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! What the engine does is in `apply` (apply, scale, delete), `apps` (the auto pools of
//! applications), `allocate` (allocate, release), `reserve` (IPs the controller records for
//! pods before their ADD), `claims` (subnet claims and the finalizers
//! that wait for them) and `gc`; `modify`, `queue`, `batch`, `cache` and `retry` are how it
//! reads and writes, and `config` what it is given.

mod allocate;
mod apply;
mod apps;
mod batch;
mod cache;
mod claims;
mod config;
mod gc;
mod modify;
mod queue;
mod request;
mod reserve;
mod retry;
mod stats;

use crate::error::Error;
use crate::store::{Store, TypedStore};
use crate::workload::{AppRef, Deployment, StatefulSet, Workload, WorkloadKind};

pub use apply::{AnyObject, Applied};
pub use config::EngineConfig;
pub use gc::{ClaimRemoved, GcReleased, GcReport, Liveness};
pub use request::{
    AllocateRequest, AllocatedIp, Allocation, NicAddresses, NicRequest, PodContext, PoolIp,
    ReleaseRequest, Released,
};
pub use reserve::{Reservation, Reserved};
pub use stats::{EngineStats, LATENCY_BUCKETS};

/// Where applications the store does not hold are read: a cluster's ReplicaSets,
/// DaemonSets, Jobs and CronJobs (`ipam_store_k8s::workloads`). Deployments and StatefulSets
/// are always read from the store.
#[async_trait::async_trait]
pub trait WorkloadSource: Send + Sync {
    /// The application `app` as a [`Workload`] (its replica count and pod template), or
    /// `None` when it does not exist or is not an application of its own (a ReplicaSet a
    /// Deployment owns, a Job a CronJob owns).
    async fn workload(&self, app: &AppRef) -> Result<Option<Workload>, Error>;
}

/// The allocation engine over a store.
pub struct Engine<S> {
    pub(crate) store: S,
    pub(crate) config: EngineConfig,
    pub(crate) batcher: batch::Batcher,
    /// Where concurrent `modify` calls on one object queue, to share its write.
    pub(crate) modifying: modify::ModifyQueues,
    pub(crate) cache: cache::PoolCache,
    pub(crate) reserved: cache::ReservedCache,
    /// Serialises spec writes (apply, reconcile, GC) within this process: their cross-object
    /// validation reads several objects and cannot be made atomic by the store. Each takes it
    /// whole, but for [`Engine::reconcile`], which shares it with the reconciles of other
    /// applications (see `app_locks`).
    pub(crate) spec_lock: tokio::sync::RwLock<()>,
    /// One lock per application, taken by [`Engine::reconcile`] beside a shared `spec_lock`:
    /// reconciles of different applications run side by side (their only common objects are
    /// subnets, whose claims `set_claim` checks inside one versioned write).
    pub(crate) app_locks: queue::KeyedLocks<crate::workload::AppRef>,
    /// One lock per pod (`namespace/name`): its ADDs and DELs take turns in this process. A
    /// record the controller reserved names no container, so a DEL of an old sandbox that
    /// ran beside the ADD of the next one could free what that ADD adopts; in turn, the DEL
    /// finds the endpoint naming the new container and frees nothing.
    pub(crate) pod_locks: queue::KeyedLocks<String>,
    /// Counters for metrics.
    pub(crate) stats: stats::Stats,
    /// Applications of the kinds the store does not hold.
    pub(crate) workloads: Option<std::sync::Arc<dyn WorkloadSource>>,
}

impl<S: Store> Engine<S> {
    /// An engine with default settings.
    pub fn new(store: S) -> Self {
        Self::with_config(store, EngineConfig::default())
    }

    /// An engine with `config`.
    pub fn with_config(store: S, config: EngineConfig) -> Self {
        Engine {
            cache: cache::PoolCache::new(&store),
            reserved: cache::ReservedCache::new(&store),
            store,
            config,
            batcher: batch::Batcher::default(),
            modifying: modify::ModifyQueues::default(),
            spec_lock: tokio::sync::RwLock::new(()),
            app_locks: queue::KeyedLocks::default(),
            pod_locks: queue::KeyedLocks::default(),
            stats: stats::Stats::default(),
            workloads: None,
        }
    }

    /// Reads the applications of other kinds than Deployment and StatefulSet from `source`,
    /// so their pods get auto pools too.
    pub fn with_workload_source(mut self, source: impl WorkloadSource + 'static) -> Self {
        self.workloads = Some(std::sync::Arc::new(source));
        self
    }

    /// What this engine has done since it started: allocations, releases, conflicts, GC,
    /// and the latency of allocations (for metrics).
    pub fn stats(&self) -> EngineStats {
        self.stats.snapshot()
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The workload an application names: a Deployment or StatefulSet on record, or an
    /// application of another kind from the [`WorkloadSource`], if there is one.
    pub async fn workload(&self, app: &AppRef) -> Result<Option<Workload>, Error> {
        Ok(match app.workload_kind() {
            Some(WorkloadKind::Deployment) => self
                .store
                .get_as::<Deployment>(Some(&app.namespace), &app.name)
                .await?
                .map(|d| d.0),
            Some(WorkloadKind::StatefulSet) => self
                .store
                .get_as::<StatefulSet>(Some(&app.namespace), &app.name)
                .await?
                .map(|s| s.0),
            None => match &self.workloads {
                Some(source) => source.workload(app).await?,
                None => None,
            },
        })
    }
}
