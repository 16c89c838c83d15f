//! Four engines (four "nodes", each with a client of its own) allocate 64 IPs each, all at once,
//! from one shared pool on a real API server: 256 distinct IPs, the counts exact, no IP with
//! two holders. The same burst with the engine's batching turned off, on another pool, for
//! comparison: pool status writes per allocated IP and 409s, printed side by side.
//!
//! `cargo test -p ipam-store-k8s --test burst -- --nocapture` prints the figures.

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ipam_core::engine::{AnyObject, Engine, EngineConfig};
use ipam_core::store::TypedStore;
use ipam_core::{Error, Kind, SpiderIPPool, ips};
use kube_testbed::{Options, SharedCluster, unique_name};
use support::{Hooked, WriteHook};

static CLUSTER: SharedCluster = SharedCluster::new(Options::default);

const NODES: usize = 4;
const PER_NODE: usize = 64;

/// Pool writes and their conflicts, counted at the store's boundary.
#[derive(Default)]
struct Counts {
    pool_writes: AtomicU64,
    conflicts: AtomicU64,
}

impl WriteHook for Arc<Counts> {
    fn after(&self, kind: Kind, result: Result<(), &Error>) {
        if kind != Kind::SpiderIPPool {
            return;
        }
        self.pool_writes.fetch_add(1, Ordering::Relaxed);
        if matches!(result, Err(Error::Conflict(_))) {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A store that counts the pool writes going through it (the engines under test write pools'
/// status only), and the 409s they get.
type Counting = Hooked<Arc<Counts>>;

/// What each node's pods got: an IP, or an error that says to try again.
type Got = Vec<Vec<Result<IpAddr, String>>>;

/// One burst on a fresh pool: the pool's name, what each node's pods got, and the counts.
async fn burst(batching: bool) -> (String, Got, u64, u64) {
    let cluster = support::installed(&CLUSTER).await;
    let name = unique_name(if batching { "burst" } else { "burst-unbatched" });
    // 510 IPs for 256 pods: the pool never runs dry, so every allocation must succeed.
    let admin = Engine::new(support::store(cluster).await);
    let (cidr, range) = if batching {
        ("10.30.0.0/23", ips!["10.30.0.1-10.30.1.254"])
    } else {
        ("10.32.0.0/23", ips!["10.32.0.1-10.32.1.254"])
    };
    admin
        .apply(AnyObject::Pool(SpiderIPPool::new(
            &name,
            cidr.parse().unwrap(),
            range,
        )))
        .await
        .unwrap();
    let counts = Arc::new(Counts::default());
    let config = EngineConfig {
        batching,
        ..EngineConfig::default()
    };
    let mut nodes = Vec::new();
    for node in 0..NODES {
        let store = Counting {
            inner: support::store(cluster).await,
            hook: Arc::clone(&counts),
        };
        let engine = Arc::new(Engine::with_config(store, config.clone()));
        let pool = name.clone();
        nodes.push(tokio::spawn(async move {
            let pods = (0..PER_NODE).map(|i| {
                let engine = Arc::clone(&engine);
                let pool = pool.clone();
                async move {
                    // Pods of their own: the same pod again would get its IP back.
                    let pod = pod_name(&pool, node, i);
                    engine
                        .allocate(&support::one_nic(&pool, &pod, &format!("node{node}")))
                        .await
                        .map(|allocation| allocation.nics[0].ips[0].address.addr())
                        .map_err(|e| {
                            // Only ever "try again": the runtime retries the ADD.
                            assert!(e.is_conflict(), "{pod}: {e}");
                            e.to_string()
                        })
                }
            });
            futures::future::join_all(pods).await
        }));
    }
    let mut got = Vec::new();
    for node in nodes {
        got.push(node.await.unwrap());
    }
    (
        name,
        got,
        counts.pool_writes.load(Ordering::Relaxed),
        counts.conflicts.load(Ordering::Relaxed),
    )
}

fn pod_name(pool: &str, node: usize, i: usize) -> String {
    format!("{pool}-node{node}-pod{i}")
}

/// Checks the pool against what the pods were told: every IP given is held by its pod, no IP
/// twice, no IP held for a pod that was told to try again, the counts exact. Returns how many
/// pods got an IP.
async fn check(name: &str, got: &Got) -> usize {
    let cluster = support::installed(&CLUSTER).await;
    let given: Vec<IpAddr> = got
        .iter()
        .flatten()
        .filter_map(|r| r.clone().ok())
        .collect();
    let distinct: BTreeSet<IpAddr> = given.iter().copied().collect();
    assert_eq!(distinct.len(), given.len(), "an IP was given twice");
    let pool: SpiderIPPool = support::store(cluster)
        .await
        .get_as(None, name)
        .await
        .unwrap()
        .unwrap();
    let records = pool.records();
    assert_eq!(records.len(), given.len(), "records of {name}");
    assert_eq!(
        pool.status.as_ref().unwrap().allocated_ip_count,
        Some(given.len() as i64)
    );
    for (node, pods) in got.iter().enumerate() {
        for (i, result) in pods.iter().enumerate() {
            if let Ok(ip) = result {
                assert_eq!(
                    records[ip].pod,
                    format!("default/{}", pod_name(name, node, i))
                );
            }
        }
    }
    given.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_allocate_256_ips_from_one_pool_with_far_fewer_writes_than_ips() {
    let (batched, got, writes, conflicts) = burst(true).await;
    let ips = NODES * PER_NODE;
    assert_eq!(
        check(&batched, &got).await,
        ips,
        "batched, every pod gets an IP"
    );
    let (unbatched, got_u, writes_u, conflicts_u) = burst(false).await;
    let given_u = check(&unbatched, &got_u).await;
    println!(
        "{NODES} nodes x {PER_NODE} pods at once, one pool: batched {writes} pool writes for \
         {ips} IPs ({:.3} per IP), {conflicts} of them 409; unbatched {writes_u} pool writes for \
         {given_u} IPs ({:.3} per IP), {conflicts_u} of them 409, {} pods told to try again",
        writes as f64 / ips as f64,
        writes_u as f64 / given_u.max(1) as f64,
        ips - given_u,
    );
    // Unbatched, every IP is at least one write of its own; batched, many share one.
    assert!(writes_u >= given_u as u64);
    assert!(
        writes < ips as u64,
        "batched: {writes} pool writes for {ips} IPs"
    );
    assert!(
        writes < writes_u,
        "batching saved nothing: {writes} writes against {writes_u}"
    );
}

/// One allocation at a time, then one release at a time, from one engine: what one CNI ADD or
/// DEL waits for against the API server (printed; never asserted). Measured: p50 ~11 ms. It was
/// ~100 ms while the engine listed the SpiderReservedIPs on every allocation: right after a
/// write, the API server serves a consistent list from its watch cache only once the cache has
/// caught up with etcd, which for a kind nobody wrote takes a progress notification (every
/// 100 ms). The engine now keeps them, kept current by the store's watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_allocation_at_a_time() {
    let cluster = support::installed(&CLUSTER).await;
    let name = unique_name("one-at-a-time");
    let counts = Arc::new(Counts::default());
    let engine = Engine::new(Counting {
        inner: support::store(cluster).await,
        hook: Arc::clone(&counts),
    });
    engine
        .apply(AnyObject::Pool(SpiderIPPool::new(
            &name,
            "10.34.0.0/24".parse().unwrap(),
            ips!["10.34.0.1-10.34.0.254"],
        )))
        .await
        .unwrap();
    let request = |i: usize| support::one_nic(&name, &format!("{name}-pod{i}"), "");
    let n = 100;
    let mut add = Vec::new();
    for i in 0..n {
        let started = std::time::Instant::now();
        engine.allocate(&request(i)).await.unwrap();
        add.push(started.elapsed());
    }
    let mut del = Vec::new();
    for i in 0..n {
        let r = request(i);
        let started = std::time::Instant::now();
        engine
            .release(&ipam_core::engine::ReleaseRequest {
                namespace: r.pod.namespace.clone(),
                name: r.pod.name.clone(),
                pod_uid: r.pod_uid.clone(),
                container_id: r.container_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        del.push(started.elapsed());
    }
    let q = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() * 99 / 100 - 1])
    };
    let ((a50, a99), (d50, d99)) = (q(&mut add), q(&mut del));
    println!(
        "one engine, {n} allocations one at a time: p50 {a50:.2?} p99 {a99:.2?}; \
         releases: p50 {d50:.2?} p99 {d99:.2?}; {} pool writes, {} of them 409",
        counts.pool_writes.load(Ordering::Relaxed),
        counts.conflicts.load(Ordering::Relaxed),
    );
    let pool: SpiderIPPool = support::store(cluster)
        .await
        .get_as(None, &name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pool.records().len(), 0, "every release freed its IP");
}
