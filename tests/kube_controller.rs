//! `berth controller` against a real control plane (crates/kube-testbed): two replicas, one
//! leading through a Lease, size a Deployment's auto pool from its replicas as `kubectl`
//! changes them, and reclaim it when the Deployment goes. The leader is killed (SIGKILL) just
//! before a scale: the other takes the Lease over once it expires and finishes the resize.
//! That one is killed and started again under the same pod name (`$POD_NAME`): it resumes the
//! Lease it holds, with no transition.

use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth::core::engine::{AnyObject, Engine};
use berth::core::store::TypedStore;
use berth::k8s::KubeStore;
use berth::{SpiderIPPool, SpiderSubnet};
use kube_testbed::{Cluster, Options, SharedCluster};
use support::kubectl;

mod support;

// No nodes: the Deployment's pods stay pending; only its replica count matters here.
static CLUSTER: SharedCluster = SharedCluster::new(|| Options::default().nodes(0));

/// How long the test's Lease holds after a renewal.
const LEASE: Duration = Duration::from_secs(3);

/// A running `berth controller`, killed when dropped.
struct Replica {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Replica {
    fn start(cluster: &Cluster, lease: &str, identity: &str, extra: &[&str]) -> Self {
        let extra: Vec<&str> = ["--identity", identity]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        Self::start_with(cluster, lease, &extra, &[])
    }

    /// A replica named by `$POD_NAME`, as the manifest names it (the Downward API).
    fn start_as_pod(cluster: &Cluster, lease: &str, pod: &str, extra: &[&str]) -> Self {
        Self::start_with(cluster, lease, extra, &[("POD_NAME", pod)])
    }

    fn start_with(cluster: &Cluster, lease: &str, extra: &[&str], envs: &[(&str, &str)]) -> Self {
        let duration = format!("{}s", LEASE.as_secs());
        let extra: Vec<&std::ffi::OsStr> = extra.iter().map(|a| a.as_ref()).collect();
        let (child, lines) = support::spawn_berth_with(
            &[
                "controller".as_ref(),
                "--kubeconfig".as_ref(),
                cluster.kubeconfig().as_os_str(),
                "--lease".as_ref(),
                lease.as_ref(),
                "--lease-duration".as_ref(),
                duration.as_ref(),
                "--gc-period".as_ref(),
                "1s".as_ref(),
            ]
            .into_iter()
            .chain(extra)
            .collect::<Vec<_>>(),
            envs,
        );
        Replica { child, lines }
    }

    /// Whether it said it leads, waiting up to `wait`.
    fn leads_within(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "berth controller: leading" => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The auto pools of `app`: (name, size).
async fn auto_pools(engine: &Engine<KubeStore>, app: &str) -> Vec<(String, u128)> {
    let pools: Vec<SpiderIPPool> = engine.store().list_as(None).await.unwrap();
    pools
        .into_iter()
        .filter(|p| p.metadata.name.starts_with(&format!("auto4-{app}-eth0")))
        .map(|p| (p.metadata.name.clone(), p.spec.ips.len()))
        .collect()
}

/// Asks `probe` every 100 ms until its answer is `want`, for up to 30 s (then fails, naming
/// `what` and the last answer); returns how long it took.
async fn until<T, F>(what: &str, want: T, mut probe: impl FnMut() -> F) -> Duration
where
    T: PartialEq + std::fmt::Debug,
    F: std::future::Future<Output = T>,
{
    let started = Instant::now();
    loop {
        let got = probe().await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits up to 30 s for the auto pools of `app` to have `sizes`; returns how long it took.
async fn until_sized(engine: &Engine<KubeStore>, app: &str, sizes: &[u128]) -> Duration {
    until(&format!("{app}: auto pools"), sizes.to_vec(), || async {
        auto_pools(engine, app)
            .await
            .iter()
            .map(|p| p.1)
            .collect::<Vec<u128>>()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_size_auto_pools_and_the_second_takes_over() {
    let cluster = support::with_crds(&CLUSTER).await;
    let ns = cluster.namespace("controller").await.unwrap();
    let engine = Engine::new(KubeStore::new(cluster.client().unwrap()).await.unwrap());
    engine
        .apply(AnyObject::Subnet(SpiderSubnet::new(
            "controller-subnet",
            "10.60.0.0/16".parse().unwrap(),
            berth::core::IpSet::parse_list(["10.60.1.1-10.60.1.30"]).unwrap(),
            Some("10.60.0.1".parse().unwrap()),
        )))
        .await
        .unwrap();
    let lease = format!("{}/berth-controller", ns.name());
    let a = Replica::start(cluster, &lease, "replica-a", &[]);
    assert!(
        a.leads_within(Duration::from_secs(30)),
        "replica-a never led"
    );
    // replica-b serves its metrics.
    let metrics_at = support::free_local_addr();
    let mut b = Some(Replica::start(
        cluster,
        &lease,
        "replica-b",
        &["--metrics-listen", &metrics_at],
    ));
    let mut a = Some(a);

    // A Deployment of 2 with `+1`: an auto pool of 3, created on the watch event.
    support::apply_yaml(
        cluster,
        &support::deployment(ns.name(), "web", "controller-subnet", 2),
    );
    let created = until_sized(&engine, "web", &[3]).await;
    let scale = |n: u32| {
        kubectl(
            cluster,
            &[
                "scale",
                "-n",
                ns.name(),
                "deployment/web",
                &format!("--replicas={n}"),
            ],
        )
    };
    scale(4);
    let grown = until_sized(&engine, "web", &[5]).await;

    // The leader dies; the scale that follows waits for the other to take over.
    drop(a.take());
    let killed = Instant::now();
    scale(1);
    let follower = b.as_ref().unwrap();
    assert!(
        follower.leads_within(Duration::from_secs(30)),
        "replica-b never took over"
    );
    let took_over = killed.elapsed();
    until_sized(&engine, "web", &[2]).await;
    let resized = killed.elapsed();

    // The leader's container is killed and restarted in its pod: the same name (`$POD_NAME`)
    // resumes the Lease it holds, with no transition, instead of waiting it out.
    let lease_state = || {
        kubectl(
            cluster,
            &[
                "get",
                "lease",
                "-n",
                ns.name(),
                "berth-controller",
                "-o",
                "jsonpath={.spec.holderIdentity} {.spec.leaseTransitions}",
            ],
        )
    };
    let before = lease_state();
    assert!(before.starts_with("replica-b "), "{before}");
    drop(b.take());
    let b = Replica::start_as_pod(
        cluster,
        &lease,
        "replica-b",
        &["--metrics-listen", &metrics_at],
    );
    assert!(
        b.leads_within(Duration::from_secs(30)),
        "the restarted replica-b never led"
    );
    assert_eq!(lease_state(), before, "the restart resumed the Lease");

    // The new leader's /metrics: it leads, and its pool gauges are `kubectl get sp`'s counts.
    for path in ["/healthz", "/readyz"] {
        let answer = support::http_get(&metrics_at, path);
        let status = answer.lines().next().unwrap_or_default();
        assert!(status.contains(" 200 "), "{path}: {answer}");
    }
    let page = support::http_get(&metrics_at, "/metrics");
    assert!(page.contains("\nberth_leader 1\n"), "{page}");
    let counts = kubectl(
        cluster,
        &[
            "get",
            "sp",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.status.totalIPCount} {.status.allocatedIPCount}{"\n"}{end}"#,
        ],
    );
    let mut pools = 0;
    for line in counts.lines() {
        let mut fields = line.split(' ');
        let (name, total, allocated) = (
            fields.next().unwrap(),
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default(),
        );
        let gauge = |metric: &str| {
            page.lines()
                .find_map(|l| l.strip_prefix(&format!("{metric}{{pool=\"{name}\"}} ")))
                .unwrap_or_else(|| panic!("no {metric} for {name}:\n{page}"))
                .to_string()
        };
        if !total.is_empty() {
            assert_eq!(gauge("berth_pool_total_ips"), total, "{name}");
        }
        let allocated = if allocated.is_empty() { "0" } else { allocated };
        assert_eq!(gauge("berth_pool_allocated_ips"), allocated, "{name}");
        pools += 1;
    }
    assert!(pools >= 1, "{counts}");

    // The Deployment goes: its pool is reclaimed and its IPs return to the subnet.
    kubectl(cluster, &["delete", "-n", ns.name(), "deployment/web"]);
    until_sized(&engine, "web", &[]).await;
    // The pool goes (its finalizer dropped) before its claim does, a request later.
    until("the subnet's claims", 0, || async {
        let subnet: SpiderSubnet = engine
            .store()
            .get_as(None, "controller-subnet")
            .await
            .unwrap()
            .unwrap();
        subnet.claims().len()
    })
    .await;
    // GC: the IPs of a deleted pod, and of a pod replaced under its name, are freed; the pod
    // that takes a freed IP keeps it.
    engine
        .apply(AnyObject::Pool(SpiderIPPool::new(
            "gc-pool",
            "10.60.0.0/16".parse().unwrap(),
            berth::ips!["10.60.1.25-10.60.1.27"],
        )))
        .await
        .unwrap();
    let pod = |name: &str| {
        support::apply_yaml(
            cluster,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\n\
                 spec: {{containers: [{{name: c, image: nginx}}]}}\n",
                ns = ns.name()
            ),
        );
        let json: serde_json::Value = serde_json::from_str(&kubectl(
            cluster,
            &["get", "pod", "-n", ns.name(), name, "-o", "json"],
        ))
        .unwrap();
        json["metadata"]["uid"].as_str().unwrap().to_string()
    };
    let allocate = |name: String, uid: String| {
        let engine = &engine;
        let ns = ns.name().to_string();
        async move {
            let mut request = support::one_nic("gc-pool", &name);
            request.pod.namespace = ns;
            request.pod_uid = uid;
            engine.allocate(&request).await.unwrap().nics[0].ips[0]
                .address
                .addr()
        }
    };
    let holders = || async {
        let pool: SpiderIPPool = engine
            .store()
            .get_as(None, "gc-pool")
            .await
            .unwrap()
            .unwrap();
        pool.records()
            .into_iter()
            .map(|(ip, r)| (ip, r.pod))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let until_held = |want: std::collections::BTreeMap<std::net::IpAddr, String>| {
        until("gc-pool holds", want, holders)
    };
    let p1 = allocate("p1".into(), pod("p1")).await;
    let p2 = allocate("p2".into(), pod("p2")).await;
    let p5 = allocate("p5".into(), pod("p5")).await;
    let held_by = |pairs: &[(std::net::IpAddr, &str)]| {
        pairs
            .iter()
            .map(|(ip, p)| (*ip, format!("{}/{p}", ns.name())))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let delete = |name: &str| {
        kubectl(
            cluster,
            &[
                "delete",
                "pod",
                "-n",
                ns.name(),
                name,
                "--grace-period=0",
                "--force",
            ],
        )
    };
    delete("p1");
    let freed = until_held(held_by(&[(p2, "p2"), (p5, "p5")])).await;
    // The pool's one free IP is p1's: p3 takes it.
    let p3 = allocate("p3".into(), pod("p3")).await;
    assert_eq!(p3, p1);
    delete("p5");
    until_held(held_by(&[(p2, "p2"), (p3, "p3")])).await;
    // A record of another incarnation of a live pod (its uid is not the pod's).
    pod("p4");
    allocate("p4".into(), "0e4f1a4e-0000-4000-8000-000000000000".into()).await;
    let stale = until_held(held_by(&[(p2, "p2"), (p3, "p3")])).await;
    // Later passes leave the live pods alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holders().await, held_by(&[(p2, "p2"), (p3, "p3")]));
    println!(
        "controller GC: a deleted pod's IP freed {freed:.2?} after the delete; an IP held for \
         another incarnation of a live pod freed {stale:.2?} after it was taken; live pods, one \
         on a reused IP, kept theirs"
    );

    println!(
        "controller: auto pool created {created:.2?} after the Deployment, grown {grown:.2?} \
         after the scale; leader killed: replica-b led after {took_over:.2?} (lease {LEASE:?}), \
         the pool resized {resized:.2?} after the kill; reclaimed after the delete"
    );
    drop(b);
}

/// The leader reserves the IPs of a Deployment's pods as they are created, before any node
/// runs them (this cluster has none): a record per pod in the pool their `ippools`
/// annotation names, under the pod's uid, naming no container. An ADD of one of them then
/// gets the reserved IP and leaves the pool as it was (its resourceVersion unchanged): its
/// only write is the endpoint. When the Deployment goes, GC frees the reservations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_reserves_new_pods_ips_and_their_add_leaves_the_pool_unwritten() {
    use berth::core::{AllocateRequest, AppRef, NicRequest, PodContext, WorkloadKind};
    let cluster = support::with_crds(&CLUSTER).await;
    let ns = cluster.namespace("reserve").await.unwrap();
    let engine = Engine::new(KubeStore::new(cluster.client().unwrap()).await.unwrap());
    engine
        .apply(AnyObject::Pool(SpiderIPPool::new(
            "reserve-pool",
            "10.61.0.0/16".parse().unwrap(),
            berth::core::IpSet::parse_list(["10.61.1.1-10.61.1.30"]).unwrap(),
        )))
        .await
        .unwrap();
    let annotation = r#"[{"interface":"eth0","ipv4":["reserve-pool"]}]"#;
    let lease = format!("{}/berth-controller", ns.name());
    let leader = Replica::start(cluster, &lease, "replica-r", &[]);
    assert!(leader.leads_within(Duration::from_secs(30)), "never led");
    support::apply_yaml(
        cluster,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: res, namespace: {ns}}}
spec:
  replicas: 5
  selector: {{matchLabels: {{app: res}}}}
  template:
    metadata:
      labels: {{app: res}}
      annotations:
        ipam.spidernet.io/ippools: '{annotation}'
    spec:
      containers: [{{name: c, image: nginx}}]
"#,
            ns = ns.name()
        ),
    );
    let pods = || -> Vec<(String, String)> {
        let json: serde_json::Value = serde_json::from_str(&kubectl(
            cluster,
            &[
                "get",
                "pods",
                "-n",
                ns.name(),
                "-l",
                "app=res",
                "-o",
                "json",
            ],
        ))
        .unwrap();
        let mut v: Vec<(String, String)> = json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let m = &p["metadata"];
                (
                    m["name"].as_str().unwrap().to_string(),
                    m["uid"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    until("pods of res", 5, || async { pods().len() }).await;
    let pods = pods();
    let pool = || async {
        let pools: Vec<SpiderIPPool> = engine.store().list_as(None).await.unwrap();
        pools
            .into_iter()
            .find(|p| p.metadata.name == "reserve-pool")
    };
    // Each pod's uid holds one record, with no container.
    let holders = || async {
        let Some(p) = pool().await else {
            return Vec::new();
        };
        let mut h: Vec<(String, bool)> = p
            .records()
            .values()
            .map(|r| (r.pod_uid.clone(), r.container_id.is_none()))
            .collect();
        h.sort();
        h
    };
    let want: Vec<(String, bool)> = {
        let mut w: Vec<(String, bool)> = pods.iter().map(|(_, uid)| (uid.clone(), true)).collect();
        w.sort();
        w
    };
    until("reserved holders", want, holders).await;

    // The ADD of the first pod.
    let before = pool().await.unwrap();
    let (name, uid) = &pods[0];
    let reserved = before
        .records()
        .into_iter()
        .find(|(_, r)| &r.pod_uid == uid)
        .map(|(ip, _)| ip)
        .unwrap();
    let request = AllocateRequest {
        pod: PodContext {
            namespace: ns.name().to_string(),
            name: name.clone(),
            annotations: [(
                "ipam.spidernet.io/ippools".to_string(),
                annotation.to_string(),
            )]
            .into(),
            app: Some(AppRef::apps_v1(WorkloadKind::Deployment, ns.name(), "res")),
            node: "node-x".into(),
            ..Default::default()
        },
        pod_uid: uid.clone(),
        container_id: "sandbox-1".into(),
        nics: vec![NicRequest {
            interface: "eth0".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let got = engine.allocate(&request).await.unwrap();
    assert_eq!(got.nics[0].ips[0].address.addr(), reserved);
    let after = pool().await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the ADD wrote the pool"
    );

    // The Deployment goes: GC frees its pods' IPs, the reserved and the adopted.
    kubectl(cluster, &["delete", "-n", ns.name(), "deployment/res"]);
    until("records left in reserve-pool", 0, || async {
        pool().await.unwrap().allocated_count()
    })
    .await;
}
