//! Reads of pools from the API server's watch cache (`KubeStore::caching_pool_lists`), on a
//! cluster of their own: the test counts the reads the API server asks etcd for, which any
//! other test on the cluster would add to.

mod support;

use ipam_core::Error;
use ipam_core::SpiderIPPool;
use ipam_core::store::{RecordsDelta, Store, TypedStore};
use kube_testbed::{Cluster, Options, SharedCluster, unique_name};
use support::{installed, pool, record, store};

static CLUSTER: SharedCluster = SharedCluster::new(Options::default);

/// How many reads of pools the API server has asked etcd for so far.
async fn etcd_pool_reads(cluster: &Cluster) -> u64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let metrics = cluster
        .client()
        .unwrap()
        .request_text(request)
        .await
        .unwrap();
    let series = r#"etcd_request_duration_seconds_count{group="spiderpool.spidernet.io",operation="get",resource="spiderippools"}"#;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// With `caching_pool_lists`, a read of a pool the store knows names its version, so the API
/// server answers from its watch cache and etcd is not asked; the answer is never older than
/// the store's own last write, and after a conflict it has the write that won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_known_pools_come_from_the_watch_cache_yet_see_what_the_store_knows() {
    let cluster = installed(&CLUSTER).await;
    let cached = store(cluster).await.caching_pool_lists();
    let other = store(cluster).await;
    let name = unique_name("cached-read");
    let version = |p: &SpiderIPPool| p.metadata.resource_version.clone().unwrap();
    let read = || async {
        cached
            .get_as::<SpiderIPPool>(None, &name)
            .await
            .unwrap()
            .unwrap()
    };
    let delta = |ip: &str, pod: &str, count: i64| RecordsDelta {
        set: vec![(ip.parse().unwrap(), record(pod))],
        allocated_ip_count: count,
        total_ip_count: 11,
        ..Default::default()
    };
    let v1 = version(&cached.create_as(&pool(&name)).await.unwrap());

    // Its own write, read back at once.
    let v2 = cached
        .update_pool_records(&name, &v1, &delta("10.9.0.10", "a", 1))
        .await
        .unwrap();
    assert_eq!(version(&read().await), v2);

    // Forty reads: the controller-manager may read a pool meanwhile, but not nearly as often.
    let before = etcd_pool_reads(cluster).await;
    for _ in 0..40 {
        assert_eq!(version(&read().await), v2);
    }
    let asked = etcd_pool_reads(cluster).await - before;
    assert!(asked < 20, "etcd was asked {asked} times for 40 reads");

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
    assert_eq!(version(&read().await), v3);
}
