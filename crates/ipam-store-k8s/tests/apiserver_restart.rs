//! The API server dies in the middle of a burst: four engines (four "nodes") allocate 64 IPs
//! each, all at once, from one shared pool, and the API server is killed (SIGKILL) once the
//! first ADDs are answered, then started again.
//!
//! Every ADD either succeeds or fails with an error the runtime retries (unavailable: CNI code
//! 11, or a conflict); none hangs. Retrying the failed ones succeeds, a pod whose pool write
//! landed before its ADD failed gets the IP that write gave it, and an ADD repeated for a pod
//! that succeeded returns the same IP. After GC: 256 records, one per pod, no IP twice, the
//! counts exact.
//!
//! Its own test binary: killing the API server would fail the other tests of a shared cluster.
//! `cargo test -p ipam-store-k8s --test apiserver_restart -- --nocapture` prints the figures.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ipam_core::engine::{AllocateRequest, AnyObject, Engine, Liveness};
use ipam_core::store::TypedStore;
use ipam_core::{Error, IpRecord, SpiderIPPool, ips};
use kube_testbed::{Options, SharedCluster};

static CLUSTER: SharedCluster = SharedCluster::new(|| Options::default().nodes(0));

const NODES: usize = 4;
const PER_NODE: usize = 64;
const POOL: &str = "restart-burst";

fn request(node: usize, i: usize) -> AllocateRequest {
    support::one_nic(POOL, &format!("node{node}-pod{i}"), &format!("node{node}"))
}

/// Every container lives: GC must free nothing.
struct AllAlive;

#[async_trait]
impl Liveness for AllAlive {
    async fn alive(&self, _record: &IpRecord) -> Result<bool, Error> {
        Ok(true)
    }
}

fn retryable(e: &Error) -> bool {
    e.is_unavailable() || e.is_conflict()
}

async fn allocate(
    engine: &Engine<ipam_store_k8s::KubeStore>,
    node: usize,
    i: usize,
) -> Result<IpAddr, Error> {
    engine
        .allocate(&request(node, i))
        .await
        .map(|a| a.nics[0].ips[0].address.addr())
}

/// The shared pool, as stored.
async fn pool(cluster: &kube_testbed::Cluster) -> SpiderIPPool {
    support::store(cluster)
        .await
        .get_as(None, POOL)
        .await
        .unwrap()
        .unwrap()
}

async fn records(cluster: &kube_testbed::Cluster) -> BTreeMap<IpAddr, IpRecord> {
    pool(cluster).await.records()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_add_succeeds_or_fails_retryably_when_the_api_server_dies() {
    let cluster = support::installed(&CLUSTER).await;
    let admin = Engine::new(support::store(cluster).await);
    admin
        .apply(AnyObject::Pool(SpiderIPPool::new(
            POOL,
            "10.36.0.0/23".parse().unwrap(),
            ips!["10.36.0.1-10.36.1.254"],
        )))
        .await
        .unwrap();
    let mut engines = Vec::new();
    for _ in 0..NODES {
        engines.push(Arc::new(Engine::new(support::store(cluster).await)));
    }

    let started = Instant::now();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut bursts = Vec::new();
    for (node, engine) in engines.iter().enumerate() {
        let engine = Arc::clone(engine);
        let answered = Arc::clone(&answered);
        bursts.push(tokio::spawn(async move {
            let pods = (0..PER_NODE).map(|i| {
                let engine = Arc::clone(&engine);
                let answered = Arc::clone(&answered);
                async move {
                    let t = Instant::now();
                    let got = allocate(&engine, node, i).await;
                    answered.fetch_add(1, Ordering::SeqCst);
                    (got, t.elapsed())
                }
            });
            futures::future::join_all(pods).await
        }));
    }
    // Kill the API server once the first ADDs are answered.
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no ADD was answered in 30 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    cluster.kill_apiserver();
    let killed_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart_apiserver().await.unwrap();
    let back_at = started.elapsed();

    let mut first: Vec<Vec<Result<IpAddr, Error>>> = Vec::new();
    let mut slowest = Duration::ZERO;
    for burst in bursts {
        let results = burst.await.unwrap();
        first.push(
            results
                .into_iter()
                .map(|(r, took)| {
                    slowest = slowest.max(took);
                    r
                })
                .collect(),
        );
    }
    for (node, results) in first.iter().enumerate() {
        for (i, r) in results.iter().enumerate() {
            if let Err(e) = r {
                assert!(retryable(e), "node{node}-pod{i}: not retryable: {e}");
            }
        }
    }
    let failed: Vec<(usize, usize)> = first
        .iter()
        .enumerate()
        .flat_map(|(node, rs)| {
            rs.iter()
                .enumerate()
                .filter(|(_, r)| r.is_err())
                .map(move |(i, _)| (node, i))
        })
        .collect();
    assert!(
        !failed.is_empty(),
        "the API server died after the burst ended: nothing was tested"
    );

    // What the store holds for the pods told to try again: writes whose answers were lost.
    let held = records(cluster).await;
    let held_by: BTreeMap<String, IpAddr> =
        held.iter().map(|(ip, r)| (r.pod.clone(), *ip)).collect();
    let mut landed = 0;
    let mut attempts = 0;
    let mut finally: BTreeMap<(usize, usize), IpAddr> = BTreeMap::new();
    for &(node, i) in &failed {
        let engine = &engines[node];
        let mut tries = 0;
        let ip = loop {
            tries += 1;
            match allocate(engine, node, i).await {
                Ok(ip) => break ip,
                Err(e) if retryable(&e) && tries < 20 => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("node{node}-pod{i}: retry {tries} failed: {e}"),
            }
        };
        attempts += tries;
        if let Some(before) = held_by.get(&format!("default/node{node}-pod{i}")) {
            assert_eq!(*before, ip, "node{node}-pod{i}: its retry moved it");
            landed += 1;
        }
        finally.insert((node, i), ip);
    }
    // An ADD repeated for a pod that succeeded returns its IP.
    for (node, results) in first.iter().enumerate() {
        for (i, r) in results.iter().enumerate() {
            if let Ok(ip) = r {
                let again = allocate(&engines[node], node, i).await.unwrap();
                assert_eq!(again, *ip, "node{node}-pod{i}: a repeated ADD moved it");
                finally.insert((node, i), *ip);
            }
        }
    }

    // GC (everyone alive) frees nothing and leaves exact counts; no IP twice, none leaked.
    admin.gc(&AllAlive).await.unwrap();
    let held = records(cluster).await;
    assert_eq!(held.len(), NODES * PER_NODE, "records after GC");
    let ips: BTreeSet<IpAddr> = finally.values().copied().collect();
    assert_eq!(ips.len(), NODES * PER_NODE, "an IP was given twice");
    for ((node, i), ip) in &finally {
        assert_eq!(
            held.get(ip).map(|r| r.pod.as_str()),
            Some(format!("default/node{node}-pod{i}").as_str()),
            "{ip}"
        );
    }
    let pool = pool(cluster).await;
    assert_eq!(
        pool.status.as_ref().unwrap().allocated_ip_count,
        Some((NODES * PER_NODE) as i64)
    );
    let store = support::store(cluster).await;
    let violations = ipam_core::audit::consistency(&store).await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    println!(
        "{NODES} nodes x {PER_NODE} pods at once; API server killed at {killed_at:.2?}, ready again \
         at {back_at:.2?}: {} ADDs told to try again (slowest first answer {slowest:.2?}), {landed} \
         of them already holding an IP in the pool (written before their ADD failed); \
         {attempts} retries made all {} succeed; after GC {} records, no IP twice",
        failed.len(),
        failed.len(),
        held.len(),
    );
}
