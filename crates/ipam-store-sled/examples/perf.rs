//! Measures the sled store on this machine's disk: the latency of one durable write, the
//! throughput of 64 concurrent writers with group commit and with one flush per write, the
//! time to open an empty store and one holding 10,000 objects, and the engine's allocate and
//! release on it as the pool fills (0, 1,000, 5,000 records).
//!
//! ```text
//! cargo run --release -p ipam-store-sled --example perf [-- DIR]
//! ```
//!
//! DIR (default: a fresh directory under the system temp dir, removed afterwards; a DIR given is
//! left in place) must be on the file system to measure: a tmpfs makes every fsync free.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipam_core::engine::{AllocateRequest, AnyObject, Engine, ReleaseRequest};
use ipam_core::store::{Store, TypedStore};
use ipam_core::{Kind, SpiderIPPool, ips};
use ipam_core::{NicRequest, PodContext};
use ipam_store_sled::{FlushPolicy, OpenOptions, SledStore};
use serde_json::json;

const LATENCY_WRITES: usize = 200;
const WRITERS: usize = 64;
const WRITES_EACH: usize = 20;
const OBJECTS: usize = 10_000;
const OPENS: usize = 5;
const ENGINE_OPS: usize = 200;
const ENGINE_FILLS: [usize; 3] = [0, 1_000, 5_000];

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn pool(name: &str) -> SpiderIPPool {
    SpiderIPPool::new(
        name,
        "10.6.0.0/16".parse().unwrap(),
        ips!["10.6.168.171-10.6.168.180"],
    )
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// `LATENCY_WRITES` creates, one after the other; each returns once flushed.
async fn write_latency(dir: &Path) -> Result<()> {
    let store = SledStore::open(dir, OpenOptions::new())?;
    let mut times = Vec::with_capacity(LATENCY_WRITES);
    for i in 0..LATENCY_WRITES {
        let p = pool(&format!("latency-{i}"));
        let start = Instant::now();
        store.create_as(&p).await?;
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "one durable write ({LATENCY_WRITES} sequential creates): p50 {}  p90 {}  p99 {}  max {}",
        ms(percentile(&times, 50)),
        ms(percentile(&times, 90)),
        ms(percentile(&times, 99)),
        ms(*times.last().unwrap()),
    );
    Ok(())
}

/// `WRITERS` tasks each updating the status of their own pool `WRITES_EACH` times.
async fn concurrent_writers(dir: &Path, policy: FlushPolicy) -> Result<()> {
    let store = std::sync::Arc::new(SledStore::open(
        dir,
        OpenOptions::new().flush_policy(policy),
    )?);
    for w in 0..WRITERS {
        store.create_as(&pool(&format!("writer-{w}"))).await?;
    }
    let before = store.stats();
    let start = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut current = store
                    .get(&ipam_core::ObjectKey::cluster(
                        Kind::SpiderIPPool,
                        format!("writer-{w}"),
                    ))
                    .await?
                    .expect("created above");
                for n in 0..WRITES_EACH {
                    current["status"] = json!({"allocatedIPCount": n});
                    current = store.update_status(Kind::SpiderIPPool, current).await?;
                }
                Ok::<_, ipam_core::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed();
    let stats = store.stats();
    let (writes, flushes) = (stats.writes - before.writes, stats.flushes - before.flushes);
    println!(
        "{WRITERS} concurrent writers, {policy:?}: {writes} writes in {} = {:.0} writes/s, {flushes} flushes ({:.1} writes per flush)",
        ms(elapsed),
        writes as f64 / elapsed.as_secs_f64(),
        writes as f64 / flushes as f64,
    );
    Ok(())
}

/// Median time of `OPENS` opens of `dir`, each after the previous store was dropped and sled's
/// threads had a moment to let go (so the time is sled's recovery, not the reopen retry).
fn open_time(dir: &Path) -> Result<Duration> {
    let mut times = Vec::with_capacity(OPENS);
    for _ in 0..OPENS {
        std::thread::sleep(Duration::from_millis(100));
        let start = Instant::now();
        let store = SledStore::open(dir, OpenOptions::new())?;
        times.push(start.elapsed());
        drop(store);
    }
    times.sort();
    Ok(times[OPENS / 2])
}

fn du(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => du(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

async fn open_times(root: &Path) -> Result<()> {
    let empty = root.join("open-empty");
    let start = Instant::now();
    drop(SledStore::open(&empty, OpenOptions::new())?);
    println!("open, creating an empty store: {}", ms(start.elapsed()));
    println!(
        "open an empty store: median of {OPENS}: {}",
        ms(open_time(&empty)?)
    );

    let full = root.join("open-full");
    let store = std::sync::Arc::new(SledStore::open(&full, OpenOptions::new())?);
    let start = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..OBJECTS).step_by(WRITERS) {
                    store.create_as(&pool(&format!("pool-{i:05}"))).await?;
                }
                Ok::<_, ipam_core::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    println!(
        "filled {OBJECTS} pools with {WRITERS} writers in {}",
        ms(start.elapsed())
    );
    let start = Instant::now();
    let listed = store.list(Kind::SpiderIPPool, None, None).await?.len();
    println!("list {listed} pools: {}", ms(start.elapsed()));
    drop(store);
    println!(
        "open a store of {OBJECTS} objects ({:.1} MiB on disk): median of {OPENS}: {}",
        du(&full) as f64 / (1 << 20) as f64,
        ms(open_time(&full)?)
    );
    Ok(())
}

/// A container of its own pod asking for one IPv4 address of the pool `bench`.
fn allocate_request(id: &str) -> AllocateRequest {
    AllocateRequest {
        pod: PodContext {
            namespace: "default".into(),
            name: id.into(),
            ..Default::default()
        },
        pod_uid: format!("uid-{id}"),
        container_id: id.into(),
        netns: None,
        nics: vec![NicRequest {
            interface: "eth0".into(),
            default_ipv4_pools: vec!["bench".into()],
            ..Default::default()
        }],
    }
}

/// The engine on the store, as the agent runs it: `ENGINE_OPS` allocations then their
/// releases, one after the other (each ends with an fsync), with the pool already holding
/// 0, 1,000 and 5,000 records.
async fn engine_ops(dir: &Path) -> Result<()> {
    let engine = Engine::new(SledStore::open(dir, OpenOptions::new())?);
    engine
        .apply(AnyObject::Pool(SpiderIPPool::new(
            "bench",
            "10.201.0.0/16".parse()?,
            ips!["10.201.0.0/16"],
        )))
        .await?;
    let mut filled = 0;
    for fill in ENGINE_FILLS {
        // Many at once: the engine merges them into few pool writes.
        for chunk in (filled..fill).collect::<Vec<_>>().chunks(250) {
            let requests: Vec<_> = chunk
                .iter()
                .map(|i| allocate_request(&format!("fill{i}")))
                .collect();
            for r in futures::future::join_all(requests.iter().map(|r| engine.allocate(r))).await {
                r?;
            }
        }
        filled = fill;
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        for i in 0..ENGINE_OPS {
            let request = allocate_request(&format!("op{fill}-{i}"));
            let start = Instant::now();
            engine.allocate(&request).await?;
            adds.push(start.elapsed());
        }
        for i in 0..ENGINE_OPS {
            let id = format!("op{fill}-{i}");
            let request = ReleaseRequest {
                namespace: "default".into(),
                name: id.clone(),
                pod_uid: format!("uid-{id}"),
                container_id: id,
                interfaces: None,
                app: None,
            };
            let start = Instant::now();
            engine.release(&request).await?;
            dels.push(start.elapsed());
        }
        adds.sort();
        dels.sort();
        println!(
            "engine, pool holding {fill} records: allocate p50 {}  p99 {};  release p50 {}  p99 {}",
            ms(percentile(&adds, 50)),
            ms(percentile(&adds, 99)),
            ms(percentile(&dels, 50)),
            ms(percentile(&dels, 99)),
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let tmp;
    let root: PathBuf = match std::env::args_os().nth(1) {
        Some(dir) => dir.into(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    println!("data dirs under {}", root.display());
    write_latency(&root.join("latency")).await?;
    concurrent_writers(&root.join("group"), FlushPolicy::Group).await?;
    concurrent_writers(&root.join("each"), FlushPolicy::EachWrite).await?;
    open_times(&root).await?;
    engine_ops(&root.join("engine")).await?;
    Ok(())
}
