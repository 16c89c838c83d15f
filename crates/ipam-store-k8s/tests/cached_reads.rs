//! Reads from the API server's watch cache (`KubeStore::cached_reads`), on a cluster of their
//! own: the tests count the reads the API server asks etcd for, which any other test on the
//! cluster would add to. They run one after the other, for the same reason.

mod support;

use ipam_core::store::{RecordsDelta, Store, TypedStore};
use ipam_core::{Error, Kind, ObjectKey, SpiderIPPool};
use kube_testbed::{Cluster, Options, SharedCluster, unique_name};
use serde_json::{Value, json};
use support::{installed, pool, record, store};

static CLUSTER: SharedCluster = SharedCluster::new(Options::default);

/// One test at a time: each counts the cluster's reads.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How many reads of `resource` (one of Spiderpool's) the API server has asked etcd for.
async fn etcd_reads(cluster: &Cluster, resource: &str) -> u64 {
    etcd_reads_in(cluster, "spiderpool.spidernet.io", resource).await
}

/// The API server's `/metrics`.
async fn metrics(cluster: &Cluster) -> String {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    cluster
        .client()
        .unwrap()
        .request_text(request)
        .await
        .unwrap()
}

/// How many reads of `group`'s `resource` the API server has asked etcd for.
async fn etcd_reads_in(cluster: &Cluster, group: &str, resource: &str) -> u64 {
    let series = format!(
        r#"etcd_request_duration_seconds_count{{group="{group}",operation="get",resource="{resource}"}}"#
    );
    metrics(cluster)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// How many LISTs of SpiderIPPools the API server has answered.
async fn pool_lists(cluster: &Cluster) -> u64 {
    metrics(cluster)
        .await
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains(r#"resource="spiderippools""#)
                && l.contains(r#"verb="LIST""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn version(document: &Value) -> String {
    document["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A read of a pool the store knows names its version, so the API server answers from its
/// watch cache and etcd is not asked; the answer is never older than the store's own last
/// write, and after a conflict it has the write that won. Without `cached_reads`, every read
/// asks etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_known_pools_come_from_the_watch_cache_yet_see_what_the_store_knows() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = installed(&CLUSTER).await;
    let cached = store(cluster).await.cached_reads();
    let other = store(cluster).await;
    let name = unique_name("cached-read");
    let key = ObjectKey::cluster(Kind::SpiderIPPool, &name);
    let read = |store: &ipam_store_k8s::KubeStore| {
        let (store, key) = (store.clone(), key.clone());
        async move { version(&store.get(&key).await.unwrap().unwrap()) }
    };
    let delta = |ip: &str, pod: &str, count: i64| RecordsDelta {
        set: vec![(ip.parse().unwrap(), record(pod))],
        allocated_ip_count: count,
        total_ip_count: 11,
        ..Default::default()
    };
    let created: SpiderIPPool = cached.create_as(&pool(&name)).await.unwrap();
    let v1 = created.metadata.resource_version.unwrap();

    // Its own write, read back at once.
    let v2 = cached
        .update_pool_records(&name, &v1, &delta("10.9.0.10", "a", 1))
        .await
        .unwrap();
    assert_eq!(read(&cached).await, v2);

    // Forty reads each way: the controller-manager may read a pool meanwhile, but not nearly
    // as often.
    let before = etcd_reads(cluster, "spiderippools").await;
    for _ in 0..40 {
        assert_eq!(read(&cached).await, v2);
    }
    let asked = etcd_reads(cluster, "spiderippools").await - before;
    assert!(
        asked < 20,
        "etcd was asked {asked} times for 40 cached reads"
    );
    let before = etcd_reads(cluster, "spiderippools").await;
    for _ in 0..40 {
        assert_eq!(read(&other).await, v2);
    }
    let asked = etcd_reads(cluster, "spiderippools").await - before;
    assert!(
        asked >= 40,
        "etcd was asked {asked} times for 40 quorum reads"
    );

    // Another client writes; this store's write on what it knew conflicts, and its next read
    // has the winner.
    let v3 = other
        .update_pool_records(&name, &v2, &delta("10.9.0.11", "b", 2))
        .await
        .unwrap();
    let stale = cached
        .update_pool_records(&name, &v2, &delta("10.9.0.12", "c", 2))
        .await;
    assert!(matches!(stale, Err(Error::Conflict(_))), "{stale:?}");
    assert_eq!(read(&cached).await, v3);
}

/// An endpoint, as the agent keeps one per pod: the first read of one it has never seen asks
/// etcd (and finds nothing); once it has created it, its reads come from the watch cache and
/// show its own writes; once deleted, it reads as gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_an_endpoint_the_store_wrote_come_from_the_watch_cache() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = installed(&CLUSTER).await;
    let ns = cluster.namespace("cached-endpoint").await.unwrap();
    let cached = store(cluster).await.cached_reads();
    let key = ObjectKey::namespaced(Kind::SpiderEndpoint, ns.name(), "web-0");

    let before = etcd_reads(cluster, "spiderendpoints").await;
    assert!(cached.get(&key).await.unwrap().is_none());
    assert!(etcd_reads(cluster, "spiderendpoints").await > before);

    let endpoint = json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderEndpoint",
        "metadata": {"name": "web-0", "namespace": ns.name()},
        "status": {
            "current": {"uid": "u1", "node": "n1", "ips": []},
            "ownerControllerType": "Pod",
            "ownerControllerName": "web-0",
        },
    });
    let created = cached.create(Kind::SpiderEndpoint, endpoint).await.unwrap();
    let mut changed = created.clone();
    changed["status"]["current"]["node"] = json!("n2");
    let written = cached
        .update_status(Kind::SpiderEndpoint, changed)
        .await
        .unwrap();

    let before = etcd_reads(cluster, "spiderendpoints").await;
    for _ in 0..20 {
        let got = cached.get(&key).await.unwrap().unwrap();
        assert_eq!(version(&got), version(&written));
        assert_eq!(got["status"]["current"]["node"], "n2");
    }
    let asked = etcd_reads(cluster, "spiderendpoints").await - before;
    assert!(
        asked < 10,
        "etcd was asked {asked} times for 20 cached reads"
    );

    cached.delete(&key, None).await.unwrap();
    assert!(cached.get(&key).await.unwrap().is_none());
}

/// A Deployment, which the store only reads, is read from etcd every time, cached reads or
/// not: what a workload keeps (a StatefulSet's replicas) must be read as it is now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_are_read_from_etcd_every_time() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = installed(&CLUSTER).await;
    let ns = cluster.namespace("cached-workload").await.unwrap();
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": ns.name()},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web"}]},
            },
        },
    }))
    .unwrap();
    kube::Api::namespaced(cluster.client().unwrap(), ns.name())
        .create(&kube::api::PostParams::default(), &deployment)
        .await
        .unwrap();
    let cached = store(cluster).await.cached_reads();
    let key = ObjectKey::namespaced(Kind::Deployment, ns.name(), "web");

    let before = etcd_reads_in(cluster, "apps", "deployments").await;
    for _ in 0..10 {
        assert!(cached.get(&key).await.unwrap().is_some());
    }
    let asked = etcd_reads_in(cluster, "apps", "deployments").await - before;
    assert!(asked >= 10, "etcd was asked {asked} times for 10 reads");
}

/// With `caching_pool_lists`, `list` serves the pools from the store's watch, and
/// `list_current` still asks the API server, so it shows a pool another client created just
/// before (what the webhook's check of a new pool against the others relies on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_listings_ask_the_api_server_even_with_a_pool_watch() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = installed(&CLUSTER).await;
    let watching = store(cluster).await.caching_pool_lists();
    let other = store(cluster).await;
    // Until the watch has listed the pools, listings still go to the API server.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let before = pool_lists(cluster).await;
        watching.list(Kind::SpiderIPPool, None, None).await.unwrap();
        if pool_lists(cluster).await == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pool watch never served a listing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let before = pool_lists(cluster).await;
    for _ in 0..10 {
        watching.list(Kind::SpiderIPPool, None, None).await.unwrap();
    }
    let from_watch = pool_lists(cluster).await - before;

    let before = pool_lists(cluster).await;
    for _ in 0..10 {
        let name = unique_name("current");
        other.create_as(&pool(&name)).await.unwrap();
        let listed = watching
            .list_current(Kind::SpiderIPPool, None, None)
            .await
            .unwrap();
        assert!(
            listed
                .iter()
                .any(|p| p["metadata"]["name"] == name.as_str()),
            "a current listing lacks {name}, created just before"
        );
    }
    let current = pool_lists(cluster).await - before;
    assert!(
        from_watch < 10,
        "10 listings from the watch made {from_watch} LISTs"
    );
    assert!(current >= 10, "10 current listings made {current} LISTs");
}
