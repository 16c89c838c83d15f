//! Crash safety on the Kubernetes store: the crash-injection script of
//! `ipam-core/tests/crash.rs`, run on [`KubeStore`] against a real API server, with its writes
//! failing in the network, through the test control plane's fault proxy.
//!
//! For every N, the engine's N-th store write is either lost on the way (the proxy resets the
//! connection before the API server sees it) or done with its acknowledgement lost (the API
//! server answers, the proxy resets the connection instead of passing the answer on). Then the
//! "process" is dead: the proxy refuses its every later request. At the crash no IP may have two
//! holders. After a restart (a new store and engine, with empty caches), a retry of the
//! interrupted step, the rest of the script and GC, every invariant holds and the outcome equals
//! that of a run without a crash.
//!
//! The script is the core's. On a cluster the workloads are apps/v1 objects, which the store
//! only reads: where the core's script applies, scales or deletes one through the engine, here
//! a user does it through the API (never failed) and the controller's reconcile of that
//! application follows ([`Engine::reconcile`], failing like every engine write). Each run
//! starts from an empty cluster (every Spider* object and the workloads removed) and creates
//! the workloads anew.
//!
//! `BERTH_CRASH_EVERY=K` tries every K-th write point only (default 1: all of them).

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ipam_core::engine::{AllocateRequest, AnyObject, Engine, Liveness, ReleaseRequest};
use ipam_core::store::{Store, TypedStore};
use ipam_core::{
    AppRef, Error, IpRecord, Kind, NicRequest, ObjectKey, PodContext, SpiderIPPool, SpiderSubnet,
    Workload, ips,
};
use ipam_store_k8s::KubeStore;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube_testbed::{Cluster, Options, SharedCluster};
use serde_json::{Value, json};
use support::{Hooked, WriteHook};

// No nodes: the workloads' pods stay pending, which is all the engine needs of them.
static CLUSTER: SharedCluster = SharedCluster::new(|| Options::default().nodes(0));

const SUBNETS_ANNOTATION: &str = r#"[{"interface":"eth0","ipv4":["subnet-test-ens192"]},{"interface":"net1","ipv4":["subnet-test-ens224"]}]"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The write never reaches the API server.
    Lost,
    /// The write is done; its answer is lost.
    AckLost,
}

/// The engine's store's hook: counts writes, arms the proxy's fault for the `fail_at`-th, and
/// cuts the process off the cluster after it.
struct Faulty {
    cluster: &'static Cluster,
    fail_at: usize,
    fault: Fault,
    writes: AtomicUsize,
    armed: std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<kube_testbed::LostAck>>>,
    dead: AtomicBool,
}

impl WriteHook for Faulty {
    fn before(&self, _kind: Kind) -> Option<Error> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.dead.load(Ordering::SeqCst) {
            return Some(Error::backend("crashed", "the process is dead"));
        }
        if n == self.fail_at {
            let proxy = self.cluster.proxy();
            *self.armed.lock().unwrap() = Some(match self.fault {
                Fault::Lost => proxy.drop_next_mutation(),
                Fault::AckLost => proxy.drop_next_mutation_response(),
            });
        }
        None
    }

    fn after(&self, _kind: Kind, result: Result<(), &Error>) {
        let Some(mut fired) = self.armed.lock().unwrap().take() else {
            return;
        };
        // The process dies here: nothing it sends later reaches the API server.
        self.dead.store(true, Ordering::SeqCst);
        let proxy = self.cluster.proxy();
        proxy.set_refuse(true);
        proxy.reset_connections();
        // The proxy reports the request before it resets the connection.
        let lost = fired.try_recv().expect("the proxy met the write");
        assert!(
            result.is_err(),
            "write {}: the client saw an answer the proxy withheld ({lost:?})",
            self.fail_at
        );
    }
}

/// Containers alive at the end of the script (web-c is never deleted: it died).
const ALIVE: [&str; 2] = ["cd2", "cm"];

struct Live;

#[async_trait]
impl Liveness for Live {
    async fn alive(&self, record: &IpRecord) -> Result<bool, Error> {
        Ok(record
            .container_id
            .as_deref()
            .is_some_and(|c| ALIVE.contains(&c)))
    }
}

/// The run's workloads, as the store reads them (with their uids).
struct Apps {
    web: Workload,
    db: Workload,
    bare: Workload,
    /// The users' client: scales and deletes the Deployment as kubectl would.
    client: kube::Client,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Subnets,
    /// What the controller does when an application changes.
    Reconcile(&'static str),
    Add(&'static str, &'static str, &'static str),
    Del(&'static str, &'static str, &'static str),
    /// A user scales the Deployment `web` (kubectl), then the controller reconciles it.
    Scale(u32),
    ManualPool,
    /// A user deletes the Deployment `web`, then the controller reconciles it.
    DeleteWeb,
    Gc,
}

fn script() -> Vec<Step> {
    vec![
        Step::Subnets,
        Step::Reconcile("web"),
        Step::Reconcile("db"),
        Step::Add("web", "web-a", "ca"),
        Step::Add("web", "web-b", "cb"),
        Step::Add("db", "db-0", "cd1"),
        Step::Scale(3),
        Step::Del("web", "web-a", "ca"),
        Step::Del("db", "db-0", "cd1"),
        Step::Add("db", "db-0", "cd2"),
        Step::Add("web", "web-c", "cc"),
        Step::Scale(1),
        Step::ManualPool,
        Step::Add("bare", "bare-0", "cm"),
        Step::DeleteWeb,
        Step::Del("web", "web-b", "cb"),
        Step::Gc,
    ]
}

impl Apps {
    fn get(&self, name: &str) -> &Workload {
        match name {
            "web" => &self.web,
            "db" => &self.db,
            _ => &self.bare,
        }
    }
}

async fn run_step<S: Store>(engine: &Engine<S>, apps: &Apps, step: Step) -> Result<(), Error> {
    match step {
        Step::Subnets => {
            for (name, cidr, range, gw) in [
                (
                    "subnet-test-ens192",
                    "10.6.0.1/16",
                    "10.6.168.171-10.6.168.180",
                    "10.6.0.1",
                ),
                (
                    "subnet-test-ens224",
                    "10.7.0.1/16",
                    "10.7.168.171-10.7.168.180",
                    "10.7.0.1",
                ),
            ] {
                let s = SpiderSubnet::new(
                    name,
                    cidr.parse().unwrap(),
                    ipam_core::IpSet::parse_list([range]).unwrap(),
                    Some(gw.parse().unwrap()),
                );
                engine.apply(AnyObject::Subnet(s)).await?;
            }
        }
        Step::Add(app, pod, c) => {
            let w = apps.get(app);
            let request = AllocateRequest {
                pod: PodContext {
                    namespace: w.namespace().to_string(),
                    name: pod.into(),
                    annotations: w.pod_annotations().clone(),
                    app: Some(AppRef::of(w)),
                    app_uid: w.metadata.uid.clone(),
                    node: "node1".into(),
                    ..Default::default()
                },
                pod_uid: format!("uid-{c}"),
                container_id: c.into(),
                netns: Some(format!("/var/run/netns/{c}")),
                nics: ["eth0", "net1"]
                    .iter()
                    .map(|n| NicRequest {
                        interface: n.to_string(),
                        network: Some(format!("net-{n}")),
                        ..Default::default()
                    })
                    .collect(),
            };
            engine.allocate(&request).await?;
        }
        Step::Del(app, pod, c) => {
            let w = apps.get(app);
            engine
                .release(&ReleaseRequest {
                    namespace: w.namespace().to_string(),
                    name: pod.into(),
                    pod_uid: format!("uid-{c}"),
                    container_id: c.into(),
                    interfaces: None,
                    app: Some(AppRef::of(w)),
                })
                .await?;
        }
        Step::Reconcile(app) => engine.reconcile(&AppRef::of(apps.get(app))).await?,
        Step::Scale(replicas) => {
            let web = &apps.web;
            let api: Api<DynamicObject> = Api::namespaced_with(
                apps.client.clone(),
                web.namespace(),
                &apps_v1(Kind::Deployment),
            );
            let scale = Patch::Merge(json!({"spec": {"replicas": replicas}}));
            api.patch(&web.metadata.name, &PatchParams::default(), &scale)
                .await
                .unwrap();
            engine.reconcile(&AppRef::of(web)).await?;
        }
        Step::DeleteWeb => {
            let web = &apps.web;
            let api: Api<DynamicObject> = Api::namespaced_with(
                apps.client.clone(),
                web.namespace(),
                &apps_v1(Kind::Deployment),
            );
            match api
                .delete(&web.metadata.name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                // A retry: the user's delete went through before the crash.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => panic!("delete the Deployment: {e}"),
            }
            engine.reconcile(&AppRef::of(web)).await?;
        }
        Step::ManualPool => {
            let p = SpiderIPPool::new(
                "manual",
                "10.6.0.0/16".parse().unwrap(),
                ips!["10.6.168.179-10.6.168.180"],
            );
            engine.apply(AnyObject::Pool(p)).await?;
        }
        Step::Gc => {
            engine.gc(&Live).await?;
        }
    }
    Ok(())
}

/// Per pool (named without its uid suffix): its size, its allocated count, its holders (pod
/// names without the namespace).
type Outcome = BTreeMap<String, (u128, usize, Vec<String>)>;

async fn outcome(store: &impl Store) -> Outcome {
    let pools: Vec<SpiderIPPool> = store.list_as(None).await.unwrap();
    pools
        .into_iter()
        .map(|p| {
            let name = p
                .metadata
                .name
                .rsplit_once('-')
                .map_or(p.metadata.name.clone(), |(a, _)| a.to_string());
            let mut holders: Vec<String> = p
                .records()
                .values()
                .map(|r| r.pod.rsplit('/').next().unwrap_or_default().to_string())
                .collect();
            holders.sort();
            (name, (p.spec.ips.len(), p.allocated_count(), holders))
        })
        .collect()
}

async fn db0_ips(store: &impl Store) -> Vec<IpAddr> {
    let pools: Vec<SpiderIPPool> = store.list_as(None).await.unwrap();
    let mut v: Vec<IpAddr> = pools
        .iter()
        .flat_map(|p| {
            p.records()
                .into_iter()
                .filter(|(_, r)| r.pod.ends_with("/db-0"))
                .map(|(ip, _)| ip)
        })
        .collect();
    v.sort();
    v
}

async fn violations(store: &impl Store, settled: bool) -> Vec<String> {
    if settled {
        ipam_core::audit::settled(store, ipam_core::annotations::IpNumber::Flexible(1))
            .await
            .unwrap()
    } else {
        ipam_core::audit::safety(store).await.unwrap()
    }
}

/// Removes every Spider* object (finalizers first) and the namespace's workloads, and waits
/// until they are gone.
async fn wipe(cluster: &Cluster, namespace: &str) {
    let client = cluster.client().unwrap();
    let no_finalizers = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    for kind in [
        Kind::SpiderEndpoint,
        Kind::SpiderIPPool,
        Kind::SpiderSubnet,
        Kind::SpiderReservedIP,
        Kind::Deployment,
        Kind::StatefulSet,
    ] {
        let resource = kube::api::ApiResource {
            group: kind.api_version().split_once('/').unwrap().0.into(),
            version: kind.api_version().split_once('/').unwrap().1.into(),
            api_version: kind.api_version().into(),
            kind: kind.name().into(),
            plural: kind.plural().into(),
        };
        let api: Api<DynamicObject> = if kind.is_namespaced() {
            Api::namespaced_with(client.clone(), namespace, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        for o in api.list(&ListParams::default()).await.unwrap() {
            let name = o.metadata.name.unwrap();
            if o.metadata.finalizers.is_some_and(|f| !f.is_empty()) {
                let _ = api
                    .patch(&name, &PatchParams::default(), &no_finalizers)
                    .await;
            }
            let _ = api.delete(&name, &DeleteParams::default()).await;
        }
        for _ in 0..200 {
            if api
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Creates the run's Deployments and StatefulSet and reads them back as the store sees them.
/// The API resource of an apps/v1 kind.
fn apps_v1(kind: Kind) -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "apps".into(),
        version: "v1".into(),
        api_version: "apps/v1".into(),
        kind: kind.name().into(),
        plural: kind.plural().into(),
    }
}

async fn create_apps(cluster: &Cluster, store: &KubeStore, namespace: &str) -> Apps {
    let client = cluster.client().unwrap();
    let resource = apps_v1;
    let make = |kind: Kind, name: &str, replicas: i32, annotations: Value| {
        let mut spec = json!({
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        });
        if kind == Kind::StatefulSet {
            spec["serviceName"] = name.into();
        }
        serde_json::from_value::<DynamicObject>(json!({
            "apiVersion": "apps/v1",
            "kind": kind.name(),
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }))
        .unwrap()
    };
    let subnets = json!({
        "ipam.spidernet.io/subnets": SUBNETS_ANNOTATION,
        "ipam.spidernet.io/ippool-ip-number": "+1",
    });
    for (kind, name, replicas, annotations) in [
        (Kind::Deployment, "web", 2, subnets.clone()),
        (Kind::StatefulSet, "db", 1, subnets.clone()),
        (
            Kind::Deployment,
            "bare",
            1,
            json!({"ipam.spidernet.io/ippool": r#"{"ipv4":["manual"]}"#}),
        ),
    ] {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &resource(kind));
        api.create(
            &PostParams::default(),
            &make(kind, name, replicas, annotations),
        )
        .await
        .unwrap();
    }
    let read = |kind: Kind, name: &'static str| async move {
        let v = store
            .get(&ObjectKey::namespaced(kind, namespace, name))
            .await
            .unwrap()
            .unwrap();
        match kind {
            Kind::StatefulSet => {
                ipam_core::store::decode::<ipam_core::StatefulSet>(v)
                    .unwrap()
                    .0
            }
            _ => {
                ipam_core::store::decode::<ipam_core::Deployment>(v)
                    .unwrap()
                    .0
            }
        }
    };
    Apps {
        web: read(Kind::Deployment, "web").await,
        db: read(Kind::StatefulSet, "db").await,
        bare: read(Kind::Deployment, "bare").await,
        client,
    }
}

/// A store and an engine on the cluster through the proxy, failing at `fail_at` (0: never).
async fn faulty_engine(
    cluster: &'static Cluster,
    fail_at: usize,
    fault: Fault,
) -> Engine<Hooked<Faulty>> {
    let client = kube::Client::try_from(cluster.proxy_config().await.unwrap()).unwrap();
    Engine::new(Hooked {
        inner: KubeStore::new(client).await.unwrap(),
        hook: Faulty {
            cluster,
            fail_at,
            fault,
            writes: AtomicUsize::new(0),
            armed: std::sync::Mutex::new(None),
            dead: AtomicBool::new(false),
        },
    })
}

/// One run: the script with a crash at write `fail_at` (0: none). Returns the writes made and
/// the outcome.
async fn run(
    cluster: &'static Cluster,
    ns: &str,
    fail_at: usize,
    fault: Fault,
) -> (usize, Outcome) {
    wipe(cluster, ns).await;
    cluster.proxy().heal();
    let direct = KubeStore::new(cluster.client().unwrap()).await.unwrap();
    let apps = create_apps(cluster, &direct, ns).await;
    let engine = faulty_engine(cluster, fail_at, fault).await;
    let steps = script();
    let mut crashed = None;
    let mut db0_before = None;
    for (i, step) in steps.iter().enumerate() {
        if matches!(step, Step::Del(_, "db-0", _)) {
            db0_before = Some(db0_ips(&direct).await);
        }
        if let Err(e) = run_step(&engine, &apps, *step).await {
            assert!(
                fail_at > 0 && e.is_unavailable() || matches!(e, Error::Backend { .. }),
                "write {fail_at} ({fault:?}): step {i} ({step:?}) failed with {e}"
            );
            crashed = Some(i);
            break;
        }
    }
    let writes = engine.store().hook.writes.load(Ordering::SeqCst);
    drop(engine);
    cluster.proxy().heal();
    let Some(k) = crashed else {
        assert_eq!(fail_at, 0, "write {fail_at} ({fault:?}) was never reached");
        let v = violations(&direct, true).await;
        assert!(v.is_empty(), "a run without a crash: {v:?}");
        return (writes, outcome(&direct).await);
    };
    let v = violations(&direct, false).await;
    assert!(
        v.is_empty(),
        "write {fail_at} ({fault:?}), step {k}: at the crash: {v:?}"
    );

    // Restart: a new store (empty caches) and engine; retry the step and go on.
    let engine = Engine::new(KubeStore::new(cluster.client().unwrap()).await.unwrap());
    for step in &steps[k..] {
        if matches!(step, Step::Del(_, "db-0", _)) && db0_before.is_none() {
            db0_before = Some(db0_ips(&direct).await);
        }
        run_step(&engine, &apps, *step).await.unwrap_or_else(|e| {
            panic!("write {fail_at} ({fault:?}), step {k}: retry of {step:?} failed: {e}")
        });
        let v = violations(&direct, false).await;
        assert!(
            v.is_empty(),
            "write {fail_at} ({fault:?}) after {step:?}: {v:?}"
        );
    }
    engine.gc(&Live).await.unwrap();
    let v = violations(&direct, true).await;
    assert!(
        v.is_empty(),
        "write {fail_at} ({fault:?}), crash in step {k}: after recovery: {v:?}"
    );
    if let Some(before) = db0_before {
        assert_eq!(
            db0_ips(&direct).await,
            before,
            "write {fail_at} ({fault:?}): db-0 lost its IPs"
        );
    }
    (writes, outcome(&direct).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_can_fail_in_the_network_and_recovery_converges() {
    let cluster = support::installed(&CLUSTER).await;
    let ns = cluster.namespace("crash").await.unwrap();
    let every: usize = std::env::var("BERTH_CRASH_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let started = std::time::Instant::now();
    let (writes, expected) = run(cluster, ns.name(), 0, Fault::Lost).await;
    let clean = started.elapsed();
    assert!(writes > 20, "the script writes {writes} times");
    let mut runs = 0;
    for fault in [Fault::Lost, Fault::AckLost] {
        for n in (1..=writes).step_by(every) {
            let (_, got) = run(cluster, ns.name(), n, fault).await;
            assert_eq!(got, expected, "write {n} ({fault:?})");
            runs += 1;
        }
    }
    eprintln!(
        "crash test on the API server: {writes} write points, {runs} crashed runs recovered \
         ({:?} for a clean run, {:?} in all)",
        clean,
        started.elapsed()
    );
}
