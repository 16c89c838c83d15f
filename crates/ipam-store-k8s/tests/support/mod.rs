//! What the store's test binaries share: a cluster with Berth's CRDs installed, a store on it,
//! and small fixtures.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use ipam_core::store::{WatchEvent, WatchStream};
use ipam_core::{IpRecord, SpiderIPPool, ips};
use ipam_store_k8s::KubeStore;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube_testbed::{Cluster, SharedCluster};

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
