//! The seed article, replayed: two SpiderSubnets, a Deployment whose two NICs get fixed IPs from
//! auto pools sized replicas + 1, pods restarted inside their pools, a scale to 3, a StatefulSet
//! pod that keeps its IPs, a manual pool, and the application's deletion returning its IPs.
//!
//! Pods are "created" by allocating through the library API, exactly as the CNI plugin does for
//! each NIC. The objects are applied from the YAML in `examples/seed/`, the seed's own, to the
//! embedded sled store in a fresh temporary data dir (removed at the end; run with
//! `BERTH_DATA_DIR=/some/new/dir` to keep the store and look at it with `berth get`).
//!
//! ```text
//! cargo run --release --example seed_walkthrough
//! ```

use std::collections::BTreeMap;
use std::error::Error;

use berth::core::engine::{AllocateRequest, Allocation, Engine, ReleaseRequest};
use berth::core::store::{Store, TypedStore};
use berth::core::{
    AppRef, Deployment, Kind, ObjectKey, SpiderEndpoint, SpiderIPPool, SpiderSubnet, StatefulSet,
    Workload, WorkloadKind,
};
use berth::core::{NicRequest, PodContext};
use berth::{manifest, table};

const SUBNETS: &str = include_str!("seed/subnets.yaml");
const DEPLOYMENT: &str = include_str!("seed/deployment.yaml");
const STATEFULSET: &str = include_str!("seed/statefulset.yaml");
const MANUAL: &str = include_str!("seed/manual-pool.yaml");

type Res<T> = Result<T, Box<dyn Error>>;

/// A pod of the walkthrough: its identity and the IPs of its NICs.
struct Pod {
    name: String,
    uid: String,
    container: String,
    app: Workload,
    ips: Allocation,
}

struct Walk<S> {
    engine: Engine<S>,
    serial: u32,
}

fn say(cmd: &str) {
    println!("\n~# {cmd}");
}

impl<S: Store> Walk<S> {
    async fn apply(&self, name: &str, yaml: &str) -> Res<()> {
        for obj in manifest::parse(name, yaml)? {
            let key = obj.key();
            let outcome = self.engine.apply(obj).await?;
            println!("{}", table::applied(&key, outcome));
        }
        Ok(())
    }

    async fn subnets(&self) -> Res<()> {
        say("kubectl get spidersubnet");
        let items: Vec<SpiderSubnet> = self.engine.store().list_as(None).await?;
        print!("{}", table::subnets(&items));
        Ok(())
    }

    async fn pools(&self) -> Res<Vec<SpiderIPPool>> {
        say("kubectl get spiderippool");
        let items: Vec<SpiderIPPool> = self.engine.store().list_as(None).await?;
        print!("{}", table::pools(&items, false));
        Ok(items)
    }

    async fn pool_ips(&self) -> Res<()> {
        let items: Vec<SpiderIPPool> = self.engine.store().list_as(None).await?;
        for p in items {
            say(&format!(
                "kubectl get spiderippool {} -o jsonpath='{{.spec.ips}}'",
                p.metadata.name
            ));
            println!("{}", serde_json::to_string(&p.spec.ips)?);
        }
        Ok(())
    }

    async fn workload(&self, kind: WorkloadKind, name: &str) -> Res<Workload> {
        let app = AppRef::apps_v1(kind, "default", name);
        Ok(self
            .engine
            .workload(&app)
            .await?
            .ok_or("the workload is missing")?)
    }

    /// Creates a pod of `app`: one allocation per NIC, as Multus calls the IPAM once per NIC.
    async fn start_pod(&mut self, app: &Workload, name: Option<&str>) -> Res<Pod> {
        self.serial += 1;
        let name = match name {
            Some(n) => n.to_string(),
            None => format!(
                "{}-6f4594ff67-{}",
                app.metadata.name,
                pod_suffix(self.serial)
            ),
        };
        let uid = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            self.serial * 7919,
            self.serial
        );
        let container = format!("{:064x}", u128::from(self.serial) * 0x9e37_79b9_7f4a_7c15);
        let mut nics = Vec::new();
        // Multus adds net1 only to pods that ask for a second network.
        let second = app
            .pod_annotations()
            .contains_key("k8s.v1.cni.cncf.io/networks");
        let wanted: &[(&str, &str)] = if second {
            &[
                ("eth0", "macvlan-conf-ens192"),
                ("net1", "macvlan-conf-ens224"),
            ]
        } else {
            &[("eth0", "macvlan-conf-ens192")]
        };
        for &(nic, network) in wanted {
            let request = AllocateRequest {
                pod: PodContext {
                    namespace: "default".into(),
                    name: name.clone(),
                    labels: app.spec.template.metadata.labels.clone(),
                    annotations: app.pod_annotations().clone(),
                    app: Some(AppRef::of(app)),
                    node: "node1".into(),
                    ..Default::default()
                },
                pod_uid: uid.clone(),
                container_id: container.clone(),
                netns: None,
                nics: vec![NicRequest {
                    interface: nic.into(),
                    network: Some(network.into()),
                    ..Default::default()
                }],
            };
            nics.extend(self.engine.allocate(&request).await?.nics);
        }
        Ok(Pod {
            name,
            uid,
            container,
            app: app.clone(),
            ips: Allocation { nics },
        })
    }

    async fn stop_pod(&self, pod: &Pod) -> Res<()> {
        self.engine
            .release(&ReleaseRequest {
                namespace: "default".into(),
                name: pod.name.clone(),
                pod_uid: pod.uid.clone(),
                container_id: pod.container.clone(),
                interfaces: None,
                app: Some(AppRef::of(&pod.app)),
            })
            .await?;
        Ok(())
    }

    async fn endpoints(&self) -> Res<()> {
        say("kubectl get spiderendpoint");
        let items: Vec<SpiderEndpoint> = self.engine.store().list_as(None).await?;
        print!("{}", table::endpoints(&items));
        Ok(())
    }
}

fn pod_suffix(n: u32) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = n.wrapping_mul(2_654_435_761);
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u32) as usize] as char;
            x /= ALPHABET.len() as u32;
            c
        })
        .collect()
}

fn pods_table(pods: &[&Pod]) {
    let rows: Vec<Vec<String>> = pods
        .iter()
        .map(|p| {
            let ip = |nic: &str| {
                p.ips
                    .nics
                    .iter()
                    .find(|n| n.interface == nic)
                    .and_then(|n| n.ips.first())
                    .map_or("<none>".to_string(), |i| i.address.addr().to_string())
            };
            vec![
                p.name.clone(),
                "1/1".into(),
                "Running".into(),
                ip("eth0"),
                ip("net1"),
                "node1".into(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["NAME", "READY", "STATUS", "IP", "NET1-IP", "NODE"], &rows)
    );
}

async fn run<S: Store>(engine: Engine<S>) -> Res<()> {
    let mut w = Walk { engine, serial: 0 };

    println!("## Create the SpiderSubnets of ens192 and ens224");
    say("kubectl apply -f examples/seed/subnets.yaml");
    w.apply("subnets.yaml", SUBNETS).await?;
    w.subnets().await?;

    println!(
        "\n## Fixed IPs on two NICs: the Deployment gets one auto pool per NIC, replicas + 1 IPs"
    );
    say("kubectl create -f examples/seed/deployment.yaml");
    w.apply("deployment.yaml", DEPLOYMENT).await?;
    let app = w.workload(WorkloadKind::Deployment, "test-app").await?;
    let mut pods = vec![
        w.start_pod(&app, None).await?,
        w.start_pod(&app, None).await?,
    ];
    say("kubectl get po -l app=test-app -o wide");
    pods_table(&pods.iter().collect::<Vec<_>>());
    w.pools().await?;
    w.pool_ips().await?;
    w.subnets().await?;
    w.endpoints().await?;

    println!("\n## Pods restarted: their IPs stay inside the application's pools");
    say("kubectl delete po -l app=test-app");
    for p in &pods {
        w.stop_pod(p).await?;
    }
    pods = vec![
        w.start_pod(&app, None).await?,
        w.start_pod(&app, None).await?,
    ];
    say("kubectl get po -l app=test-app -o wide");
    pods_table(&pods.iter().collect::<Vec<_>>());

    println!("\n## Scale to 3: both pools grow to 4 IPs");
    say("kubectl scale deploy test-app --replicas 3");
    w.engine
        .scale(WorkloadKind::Deployment, "default", "test-app", 3)
        .await?;
    let app = w.workload(WorkloadKind::Deployment, "test-app").await?;
    pods.push(w.start_pod(&app, None).await?);
    say("kubectl get po -l app=test-app -o wide");
    pods_table(&pods.iter().collect::<Vec<_>>());
    w.pools().await?;
    w.subnets().await?;

    println!("\n## A StatefulSet pod restarts with the same IPs");
    say("kubectl apply -f examples/seed/statefulset.yaml");
    w.apply("statefulset.yaml", STATEFULSET).await?;
    let sts = w.workload(WorkloadKind::StatefulSet, "test-sts").await?;
    let sts0 = w.start_pod(&sts, Some("test-sts-0")).await?;
    let sts1 = w.start_pod(&sts, Some("test-sts-1")).await?;
    say("kubectl get po -l app=test-sts -o wide");
    pods_table(&[&sts0, &sts1]);
    say("kubectl delete po test-sts-1");
    w.stop_pod(&sts1).await?;
    let sts1_again = w.start_pod(&sts, Some("test-sts-1")).await?;
    say("kubectl get po -l app=test-sts -o wide");
    pods_table(&[&sts0, &sts1_again]);
    let same = sts1.ips == sts1_again.ips;
    println!(
        "test-sts-1 uid {} -> {}: same IPs: {same}",
        sts1.uid, sts1_again.uid
    );
    if !same {
        return Err("the StatefulSet pod did not get its IPs back".into());
    }

    println!("\n## A manual pool: the admin picks the IPs, the annotation picks the pool");
    say("kubectl apply -f examples/seed/manual-pool.yaml");
    w.apply("manual-pool.yaml", MANUAL).await?;
    let legacy = w.workload(WorkloadKind::Deployment, "legacy-app").await?;
    let legacy_pod = w.start_pod(&legacy, None).await?;
    say("kubectl get po -l app=legacy-app -o wide");
    pods_table(&[&legacy_pod]);
    w.pools().await?;
    w.subnets().await?;

    println!("\n## Deleting the applications returns their IPs to the subnets");
    say(
        "kubectl delete deploy test-app legacy-app; kubectl delete sts test-sts; kubectl delete spiderippool firewall-pool",
    );
    for p in pods.iter().chain([&sts0, &sts1_again, &legacy_pod]) {
        w.stop_pod(p).await?;
    }
    for (kind, name) in [
        (Kind::Deployment, "test-app"),
        (Kind::Deployment, "legacy-app"),
        (Kind::StatefulSet, "test-sts"),
    ] {
        w.engine
            .delete(&ObjectKey::namespaced(kind, "default", name))
            .await?;
    }
    w.engine
        .delete(&ObjectKey::cluster(Kind::SpiderIPPool, "firewall-pool"))
        .await?;
    let left = w.pools().await?;
    w.subnets().await?;
    let deployments: Vec<Deployment> = w.engine.store().list_as(None).await?;
    let statefulsets: Vec<StatefulSet> = w.engine.store().list_as(None).await?;
    let claimed: BTreeMap<String, usize> = w
        .engine
        .store()
        .list_as::<SpiderSubnet>(None)
        .await?
        .into_iter()
        .map(|s| (s.metadata.name.clone(), s.claims().len()))
        .collect();
    if !left.is_empty()
        || !deployments.is_empty()
        || !statefulsets.is_empty()
        || claimed.values().any(|c| *c > 0)
    {
        return Err("the applications' pools were not all reclaimed".into());
    }
    println!("\nEvery IP is back in its subnet.");
    Ok(())
}

fn main() -> Res<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (dir, temp) = match std::env::var_os("BERTH_DATA_DIR") {
        Some(d) => (std::path::PathBuf::from(d), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("berth-walkthrough-")
                .tempdir()?;
            (t.path().join("data"), Some(t))
        }
    };
    let opened = std::time::Instant::now();
    let store = ipam_store_sled::SledStore::open(&dir, ipam_store_sled::OpenOptions::default())?;
    println!(
        "# store: sled in {} (opened in {:.1} ms; {})",
        dir.display(),
        opened.elapsed().as_secs_f64() * 1e3,
        if temp.is_some() {
            "removed at the end"
        } else {
            "kept"
        }
    );
    let result = rt.block_on(run(Engine::new(store)));
    drop(temp);
    result
}
