//! Crash test of the embedded store: a child process allocates, releases and scales on a sled
//! data dir until it is killed with SIGKILL at a random moment (a quarter of the time before it
//! even finished opening the store and applying its objects); then the store must open, hold
//! every allocation the child saw acknowledged (unless a release of it had started), have no IP
//! with two holders, and converge under GC to a settled state. The journal is kept small, so
//! that kills also land in checkpoints. Hundreds of runs on one data dir
//! (`BERTH_KILL_RUNS`, default 200; `BERTH_KILL_VERBOSE=1` prints each run).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ipam_core::engine::{AllocateRequest, AnyObject, Engine, Liveness, ReleaseRequest};
use ipam_core::store::TypedStore;
use ipam_core::{
    AppRef, Deployment, Error, IpRecord, SpiderIPPool, SpiderSubnet, Workload, WorkloadKind, ips,
};
use ipam_core::{NicRequest, PodContext};
use ipam_store_sled::{OpenOptions, SledStore};

const CHILD_ENV: &str = "BERTH_KILL_TEST_CHILD_DIR";

/// A small journal: checkpoints run every few writes (in the child's background, and at the
/// parent's open), so kills land in them too, not only between journal syncs.
fn options() -> OpenOptions {
    OpenOptions::default().journal_limit(8 << 10)
}

fn app(replicas: i32) -> Workload {
    let annotations = [
        (
            "ipam.spidernet.io/subnets",
            r#"[{"interface":"eth0","ipv4":["s-eth0"]},{"interface":"net1","ipv4":["s-net1"]}]"#,
        ),
        ("ipam.spidernet.io/ippool-ip-number", "+2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Workload::new(
        WorkloadKind::Deployment,
        "default",
        "web",
        replicas,
        annotations,
    )
}

/// A tiny deterministic generator (the child seeds it from its pid).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The child: works until killed, printing each acknowledged write on stdout.
#[test]
fn child_process() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // Only meaningful when the parent test runs this binary as its child.
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = SledStore::open(Path::new(&dir), options()).unwrap();
        let engine = Engine::new(store);
        for (name, net, range) in [
            ("s-eth0", "10.6.0.0/16", "10.6.1.1-10.6.1.40"),
            ("s-net1", "10.7.0.0/16", "10.7.1.1-10.7.1.40"),
        ] {
            let s = SpiderSubnet::new(name, net.parse().unwrap(), ips![range], None);
            engine.apply(AnyObject::Subnet(s)).await.unwrap();
        }
        engine
            .apply(AnyObject::Deployment(Deployment(app(4))))
            .await
            .unwrap();
        println!("@@ ready");
        let mut rng = Lcg(std::process::id() as u64);
        let mut pods: Vec<(String, String)> = Vec::new();
        for n in 0u64.. {
            match rng.next(10) {
                0..=4 => {
                    let pod = format!("web-{}-{n}", std::process::id());
                    let c = format!("c{}x{n}", std::process::id());
                    let w = engine
                        .workload(&AppRef::of(&app(0)))
                        .await
                        .unwrap()
                        .unwrap();
                    let req = AllocateRequest {
                        pod: PodContext {
                            namespace: "default".into(),
                            name: pod.clone(),
                            annotations: w.pod_annotations().clone(),
                            app: Some(AppRef::of(&w)),
                            ..Default::default()
                        },
                        pod_uid: c.clone(),
                        container_id: c.clone(),
                        netns: Some(format!("/nonexistent/{c}")),
                        nics: ["eth0", "net1"]
                            .map(|i| NicRequest {
                                interface: i.into(),
                                ..Default::default()
                            })
                            .into(),
                    };
                    if let Ok(a) = engine.allocate(&req).await {
                        let ip = a.nics[0].ips[0].address.addr();
                        let versions: Vec<String> = engine
                            .store()
                            .list_as::<SpiderIPPool>(None)
                            .await
                            .unwrap()
                            .iter()
                            .map(|p| {
                                format!(
                                    "{}={}",
                                    p.metadata.name,
                                    p.metadata.resource_version.clone().unwrap_or_default()
                                )
                            })
                            .collect();
                        println!("@@ alloc default/{pod} {c} {ip} {}", versions.join(","));
                        pods.push((pod, c));
                    }
                }
                5..=7 if !pods.is_empty() => {
                    let (pod, c) = pods.remove(rng.next(pods.len() as u64) as usize);
                    // Announced first: a release killed half-way may have freed some IPs.
                    println!("@@ releasing default/{pod} {c}");
                    engine
                        .release(&ReleaseRequest {
                            namespace: "default".into(),
                            name: pod.clone(),
                            pod_uid: c.clone(),
                            container_id: c.clone(),
                            interfaces: None,
                            app: Some(AppRef::of(&app(0))),
                        })
                        .await
                        .unwrap();
                    println!("@@ release default/{pod} {c}");
                }
                _ => {
                    let replicas = 1 + rng.next(8) as u32;
                    if engine
                        .scale(WorkloadKind::Deployment, "default", "web", replicas)
                        .await
                        .is_ok()
                    {
                        println!("@@ scale {replicas}");
                    }
                }
            }
            // The live process checks itself too: a loss it sees is the engine's, not sled's.
            {
                let recs = engine.records().await.unwrap();
                for (pod, _) in &pods {
                    let k = recs
                        .values()
                        .flat_map(|r| r.values())
                        .filter(|r| r.pod == format!("default/{pod}"))
                        .count();
                    if k != 2 {
                        println!("@@ LOST {pod} after op {n}");
                        eprintln!("LOST {pod} after op {n}: {recs:?}");
                        std::process::exit(3);
                    }
                }
            }
        }
    });
}

/// Every container is dead after the kill.
struct AllDead;

#[async_trait]
impl Liveness for AllDead {
    async fn alive(&self, _: &IpRecord) -> Result<bool, Error> {
        Ok(false)
    }
}

#[test]
fn sigkill_at_random_points_never_corrupts_or_duplicates() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let runs: usize = std::env::var("BERTH_KILL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let temp = tempfile::Builder::new()
        .prefix("berth-kill-")
        .tempdir()
        .unwrap();
    let dir = temp.path().join("data");
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = Lcg(0x5eed);
    let mut acked_ops: Vec<usize> = Vec::new();
    let mut before_ready = 0;
    let started = Instant::now();
    for run in 0..runs {
        let run_started = Instant::now();
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest prints its own words on the child's stdout; ours follow "@@ ".
                let Some((_, ours)) = line.split_once("@@ ") else {
                    continue;
                };
                if tx.send(ours.to_string()).is_err() {
                    break;
                }
            }
        });
        // Kill at a random moment: sometimes before the child is even ready.
        let wait = Duration::from_micros(rng.next(60_000));
        let mut saw_ready = false;
        if rng.next(4) != 0 {
            // Usually wait for the child to start working, then a random while.
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(l) if l == "ready" => {
                        saw_ready = true;
                        break;
                    }
                    Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        std::thread::sleep(wait);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let lines: Vec<String> = rx.try_iter().collect();
        if let Some(l) = lines.iter().find(|l| l.starts_with("LOST")) {
            panic!("run {run}: the child saw {l}");
        }
        let ready = saw_ready || lines.iter().any(|l| l == "ready");
        if !ready {
            before_ready += 1;
        }
        acked_ops.push(
            lines
                .iter()
                .filter(|l| l.as_str() != "ready" && !l.starts_with("releasing"))
                .count(),
        );
        if std::env::var_os("BERTH_KILL_VERBOSE").is_some() {
            eprintln!(
                "run {run}: killed after {:?} ({} lines, ready: {ready})",
                run_started.elapsed(),
                lines.len()
            );
        }

        rt.block_on(async {
            let store = SledStore::open(&dir, options()).unwrap_or_else(|e| {
                panic!("run {run}: the store does not open after SIGKILL: {e}")
            });
            // Every acknowledged allocation is there, unless acknowledged as released later.
            let pools: Vec<SpiderIPPool> = store.list_as(None).await.unwrap();
            let mut held: Vec<(String, String, String)> = Vec::new();
            for p in &pools {
                for (ip, r) in p.records() {
                    held.push((
                        r.pod.clone(),
                        r.container_id.clone().unwrap_or_default(),
                        ip.to_string(),
                    ));
                }
            }
            let released: std::collections::HashSet<&str> = lines
                .iter()
                .filter_map(|l| l.strip_prefix("releasing "))
                .filter_map(|r| r.split(' ').next())
                .collect();
            for l in &lines {
                let parts: Vec<&str> = l.split(' ').collect();
                if parts[0] == "alloc" && !released.contains(parts[1]) {
                    let there = held
                        .iter()
                        .any(|(pod, c, ip)| pod == parts[1] && c == parts[2] && ip == parts[3]);
                    if !there {
                        let pos = lines.iter().position(|m| m == l).unwrap();
                        eprintln!(
                            "lines after: {:?}",
                            &lines[pos..(pos + 10).min(lines.len())]
                        );
                        eprintln!("last lines: {:?}", &lines[lines.len().saturating_sub(5)..]);
                        for p in &pools {
                            eprintln!(
                                "{} v={:?} ips={} recs={:?}",
                                p.metadata.name,
                                p.metadata.resource_version,
                                p.spec.ips,
                                p.records()
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), v.pod.clone()))
                                    .collect::<Vec<_>>()
                            );
                        }
                    }
                    assert!(there, "run {run}: acknowledged {l:?} was lost");
                }
            }
            let unsafe_ = ipam_core::audit::safety(&store).await.unwrap();
            assert!(unsafe_.is_empty(), "run {run}: after SIGKILL: {unsafe_:?}");
            let engine = Engine::new(store);
            engine
                .gc(&AllDead)
                .await
                .unwrap_or_else(|e| panic!("run {run}: GC: {e}"));
            let default = ipam_core::annotations::IpNumber::Flexible(1);
            let left = ipam_core::audit::settled(engine.store(), default)
                .await
                .unwrap();
            assert!(left.is_empty(), "run {run}: after GC: {left:?}");
            let records: usize = engine
                .records()
                .await
                .unwrap()
                .values()
                .map(|r| r.len())
                .sum();
            assert_eq!(records, 0, "run {run}: GC left records of dead containers");
        });
    }
    acked_ops.sort_unstable();
    eprintln!(
        "sled kill test: {runs} SIGKILLs in {:.1} s; {before_ready} before the child was ready; \
         acknowledged operations before the kill: min {} median {} max {}",
        started.elapsed().as_secs_f64(),
        acked_ops[0],
        acked_ops[acked_ops.len() / 2],
        acked_ops[acked_ops.len() - 1]
    );
}
