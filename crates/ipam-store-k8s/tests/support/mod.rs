//! What the store's test binaries share: a cluster with Berth's CRDs installed, a store on it,
//! and small fixtures.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use ipam_core::engine::AllocateRequest;
use ipam_core::store::{Deleted, RecordsDelta, Store, WatchEvent, WatchStream};
use ipam_core::{
    IpRecord, Kind, LabelSelector, NicRequest, ObjectKey, PodContext, SpiderIPPool, ips,
};
use ipam_store_k8s::KubeStore;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube_testbed::{Cluster, SharedCluster};
use serde_json::Value;

/// How long a test waits for something the cluster does by itself.
pub const LIMIT: Duration = Duration::from_secs(60);

/// `shared`, started, with Berth's CRDs installed (through the API, once per test binary) and
/// established.
pub async fn installed(shared: &'static SharedCluster) -> &'static Cluster {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cluster = shared.get().await;
    INSTALLED
        .get_or_init(|| async {
            let crds: Api<CustomResourceDefinition> = Api::all(cluster.client().unwrap());
            for crd in ipam_store_k8s::crds::all() {
                crds.create(&PostParams::default(), &crd).await.unwrap();
            }
            established(cluster).await;
        })
        .await;
    cluster
}

/// Waits, up to [`LIMIT`], until the API server serves every one of Berth's CRDs.
pub async fn established(cluster: &Cluster) {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client().unwrap());
    for crd in ipam_store_k8s::crds::all() {
        let name = crd.metadata.name.unwrap();
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(LIMIT, established)
            .await
            .unwrap_or_else(|_| panic!("{name} not established within {LIMIT:?}"))
            .unwrap();
    }
}

/// A store with an admin client of its own (a separate process, as the API server sees it).
pub async fn store(cluster: &Cluster) -> KubeStore {
    KubeStore::new(cluster.client().unwrap()).await.unwrap()
}

pub fn pool(name: &str) -> SpiderIPPool {
    SpiderIPPool::new(
        name,
        "10.9.0.0/24".parse().unwrap(),
        ips!["10.9.0.10-10.9.0.20"],
    )
}

pub fn record(pod: &str) -> IpRecord {
    IpRecord {
        pod: format!("default/{pod}"),
        pod_uid: format!("uid-{pod}"),
        container_id: Some(format!("c-{pod}")),
        interface: Some("eth0".into()),
        network: None,
        netns: None,
    }
}

/// The next event, within [`LIMIT`].
pub async fn next_event(events: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(LIMIT, events.next())
        .await
        .expect("no watch event within the limit")
        .expect("the watch ended")
}

/// What a [`Hooked`] store calls around each of its writes.
pub trait WriteHook: Send + Sync {
    /// Before a write of `kind`: `Some(error)` fails it without sending it.
    fn before(&self, kind: Kind) -> Option<ipam_core::Error> {
        let _ = kind;
        None
    }
    /// After a write of `kind` that was sent, with whether it succeeded or its error.
    fn after(&self, kind: Kind, result: Result<(), &ipam_core::Error>);
}

/// A [`KubeStore`] whose writes go through a [`WriteHook`]: counting them, or failing them.
pub struct Hooked<H> {
    pub inner: KubeStore,
    pub hook: H,
}

impl<H: WriteHook> Hooked<H> {
    async fn write<T>(
        &self,
        kind: Kind,
        write: impl std::future::Future<Output = Result<T, ipam_core::Error>>,
    ) -> Result<T, ipam_core::Error> {
        if let Some(e) = self.hook.before(kind) {
            return Err(e);
        }
        let result = write.await;
        self.hook.after(kind, result.as_ref().map(|_| ()));
        result
    }
}

#[async_trait::async_trait]
impl<H: WriteHook> Store for Hooked<H> {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, ipam_core::Error> {
        self.inner.get(key).await
    }
    async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, ipam_core::Error> {
        self.inner.list(kind, namespace, selector).await
    }
    async fn list_current(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, ipam_core::Error> {
        self.inner.list_current(kind, namespace, selector).await
    }
    async fn create(&self, kind: Kind, object: Value) -> Result<Value, ipam_core::Error> {
        self.write(kind, self.inner.create(kind, object)).await
    }
    async fn update(&self, kind: Kind, object: Value) -> Result<Value, ipam_core::Error> {
        self.write(kind, self.inner.update(kind, object)).await
    }
    async fn update_status(&self, kind: Kind, object: Value) -> Result<Value, ipam_core::Error> {
        self.write(kind, self.inner.update_status(kind, object))
            .await
    }
    async fn delete(
        &self,
        key: &ObjectKey,
        precondition: Option<&str>,
    ) -> Result<Deleted, ipam_core::Error> {
        self.write(key.kind, self.inner.delete(key, precondition))
            .await
    }
    async fn update_pool_records(
        &self,
        name: &str,
        version: &str,
        delta: &RecordsDelta,
    ) -> Result<String, ipam_core::Error> {
        self.write(
            Kind::SpiderIPPool,
            self.inner.update_pool_records(name, version, delta),
        )
        .await
    }
    async fn sync(&self) -> Result<(), ipam_core::Error> {
        self.inner.sync().await
    }
    fn watch(&self, kind: Kind) -> WatchStream {
        self.inner.watch(kind)
    }
    fn writes(&self, kind: Kind) -> bool {
        self.inner.writes(kind)
    }
    fn watches_every_write(&self) -> bool {
        self.inner.watches_every_write()
    }
}

/// An ADD of one NIC, `eth0`, from `pool`, for the pod `default/<pod>` (uid `uid-<pod>`,
/// container `c-<pod>`) on `node`.
pub fn one_nic(pool: &str, pod: &str, node: &str) -> AllocateRequest {
    AllocateRequest {
        pod: PodContext {
            namespace: "default".into(),
            name: pod.into(),
            node: node.into(),
            ..Default::default()
        },
        pod_uid: format!("uid-{pod}"),
        container_id: format!("c-{pod}"),
        nics: vec![NicRequest {
            interface: "eth0".into(),
            default_ipv4_pools: vec![pool.into()],
            ..Default::default()
        }],
        ..Default::default()
    }
}
