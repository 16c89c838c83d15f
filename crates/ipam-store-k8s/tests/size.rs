//! How many allocation records one pool holds before the API server refuses to store it, and
//! what a write over that limit gets: a clear error naming the pool and the limit, nothing
//! written. `cargo test -p ipam-store-k8s --test size -- --nocapture` prints the figure.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use ipam_core::store::{RecordsDelta, Store, TypedStore};
use ipam_core::{IpRecord, SpiderIPPool, ips};
use kube_testbed::{Options, SharedCluster, unique_name};

static CLUSTER: SharedCluster = SharedCluster::new(Options::default);

fn record(i: u32) -> IpRecord {
    // As long as a real record: a pod name of a Deployment's replica, its uid, the container.
    IpRecord {
        pod: format!("default/web-7d9f6b5c4-{i:05}"),
        pod_uid: format!("0b6b{i:04}-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
        container_id: Some(format!(
            "{i:08}9e1c0c2f7d4b3a1e5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d"
        )),
        interface: Some("eth0".into()),
        network: None,
        netns: None,
    }
}

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(10, 40, 0, 0)) + 1 + i,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_over_the_size_limit_is_refused_whole_with_its_name_and_the_limit() {
    let cluster = support::installed(&CLUSTER).await;
    let store = support::store(cluster).await;
    let name = unique_name("big");
    let created = store
        .create_as(&SpiderIPPool::new(
            &name,
            "10.40.0.0/16".parse().unwrap(),
            ips!["10.40.0.1-10.40.255.254"],
        ))
        .await
        .unwrap();
    let write = |n: u32, version: String| {
        let store = &store;
        let name = name.clone();
        async move {
            let delta = RecordsDelta {
                set: (0..n).map(|i| (ip(i), record(i))).collect(),
                allocated_ip_count: n as i64,
                total_ip_count: 65534,
                ..Default::default()
            };
            store.update_pool_records(&name, &version, &delta).await
        }
    };
    // The largest count that fits, by bisection.
    let mut version = created.metadata.resource_version.unwrap();
    let (mut fits, mut over) = (0u32, 65534u32);
    let mut last_error: Option<ipam_core::Error> = None;
    while over - fits > 50 {
        let n = (fits + over) / 2;
        match write(n, version.clone()).await {
            Ok(v) => {
                version = v;
                fits = n;
            }
            Err(e) => {
                last_error = Some(e);
                over = n;
            }
        }
    }
    let pool: SpiderIPPool = store.get_as(None, &name).await.unwrap().unwrap();
    let bytes = serde_json::to_vec(&pool).unwrap().len();
    println!("one pool holds {fits} records ({bytes} bytes of JSON); {over} are refused");
    assert_eq!(
        pool.records().len(),
        fits as usize,
        "a refused write left something behind"
    );
    let err = last_error.expect("some count was refused");
    assert!(!err.is_unavailable(), "retrying cannot help: {err:?}");
    let ipam_core::Error::Backend { source, .. } = &err else {
        panic!("not a backend error: {err:?}");
    };
    let too_large = source
        .downcast_ref::<ipam_store_k8s::Error>()
        .unwrap_or_else(|| panic!("not TooLarge: {err:?}"));
    let message = too_large.to_string();
    assert!(
        matches!(too_large, ipam_store_k8s::Error::TooLarge { .. })
            && message.contains(&format!("SpiderIPPool \"{name}\""))
            && message.contains("1.5 MiB")
            && message.contains("nothing was written"),
        "{message}"
    );
}
