//! Model-based test of the engine: random sequences of applications being applied, scaled and
//! deleted, subnets deleted while pools hold their IPs, pods added, deleted, restarted and
//! killed, GC, and bursts of pods racing on one store from several threads. After every step the
//! store must satisfy the invariants (no IP with two holders, counts equal to the records, pools
//! and claims inside their subnets, auto pools at their desired size, a terminating subnet or
//! pool never lending or handing out more than it did when its deletion began), and the outcome
//! of every step must agree with a simple model.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipam_core::engine::{Engine, EngineConfig};
use ipam_core::store::{MemStore, TypedStore};
use ipam_core::{
    Error, IpSet, Kind, ObjectKey, SpiderIPPool, SpiderSubnet, Workload, WorkloadKind, ips,
};
use proptest::prelude::*;
use support::*;

const APPS: [(&str, WorkloadKind); 2] = [
    ("web", WorkloadKind::Deployment),
    ("db", WorkloadKind::StatefulSet),
];

/// The subnets of the world; deleting one while pools hold its IPs leaves it terminating.
const SUBNETS: [&str; 3] = ["subnet-test-ens192", "subnet-test-ens224", "v6"];

#[derive(Debug, Clone)]
enum Op {
    Apply { app: usize, replicas: i32 },
    DeleteApp { app: usize },
    DeleteSubnet { subnet: usize },
    Add { app: usize, slot: u8 },
    Del { app: usize, slot: u8 },
    Restart { app: usize, slot: u8 },
    Kill { app: usize, slot: u8 },
    Gc,
    Race(Vec<(bool, usize, u8)>),
}

fn op() -> impl Strategy<Value = Op> {
    let app = 0usize..2;
    let slot = 0u8..5;
    prop_oneof![
        3 => (app.clone(), 0i32..5).prop_map(|(app, replicas)| Op::Apply { app, replicas }),
        1 => app.clone().prop_map(|app| Op::DeleteApp { app }),
        1 => (0usize..3).prop_map(|subnet| Op::DeleteSubnet { subnet }),
        6 => (app.clone(), slot.clone()).prop_map(|(app, slot)| Op::Add { app, slot }),
        3 => (app.clone(), slot.clone()).prop_map(|(app, slot)| Op::Del { app, slot }),
        2 => (app.clone(), slot.clone()).prop_map(|(app, slot)| Op::Restart { app, slot }),
        1 => (app.clone(), slot.clone()).prop_map(|(app, slot)| Op::Kill { app, slot }),
        1 => Just(Op::Gc),
        2 => prop::collection::vec((any::<bool>(), app, slot), 2..8).prop_map(Op::Race),
    ]
}

/// A pod the model knows about.
#[derive(Debug, Clone)]
struct Pod {
    uid: String,
    container: String,
    /// The incarnation of its application when it got its IPs.
    generation: u64,
    /// The addresses of its NICs, when its ADD succeeded and no DEL ran since.
    ips: Option<Vec<IpAddr>>,
}

struct World {
    engine: Arc<Engine<MemStore>>,
    live: Arc<LiveSet>,
    apps: [Option<i32>; 2],
    /// Incremented when an application is deleted: a StatefulSet pod of a later incarnation
    /// gets that incarnation's pools.
    generations: [u64; 2],
    pods: BTreeMap<String, Pod>,
    /// IPs a StatefulSet pod had when its DEL kept them.
    kept: BTreeMap<String, Vec<IpAddr>>,
    serial: u64,
    /// What each deleted subnet lent its pools when its deletion began.
    lent: BTreeMap<&'static str, IpSet>,
    /// Who held each IP of a terminating pool when the pool was first seen terminating.
    holders: BTreeMap<String, BTreeSet<(IpAddr, String)>>,
}

fn workload(app: usize, replicas: i32) -> Workload {
    let (name, kind) = APPS[app];
    let mut w = seed_app(kind, name, replicas, "+1");
    if kind == WorkloadKind::StatefulSet {
        w.spec.template.metadata.annotations.insert(
            "ipam.spidernet.io/subnets".into(),
            r#"[{"interface":"eth0","ipv4":["subnet-test-ens192"],"ipv6":["v6"]},{"interface":"net1","ipv4":["subnet-test-ens224"]}]"#.into(),
        );
    }
    w
}

fn pod_name(app: usize, slot: u8) -> String {
    format!("{}-{slot}", APPS[app].0)
}

fn addresses(a: &ipam_core::engine::Allocation) -> Vec<IpAddr> {
    a.nics
        .iter()
        .flat_map(|n| n.ips.iter().map(|i| i.address.addr()))
        .collect()
}

impl World {
    async fn new() -> World {
        let engine = Arc::new(Engine::with_config(
            MemStore::new(),
            EngineConfig {
                claim_grace: std::time::Duration::ZERO,
                ..Default::default()
            },
        ));
        setup_seed(&engine).await;
        let v6 = SpiderSubnet::new(
            "v6",
            "fd00:6::/120".parse().unwrap(),
            ips!["fd00:6::10-fd00:6::19"],
            None,
        );
        engine
            .apply(ipam_core::engine::AnyObject::Subnet(v6))
            .await
            .unwrap();
        World {
            engine,
            live: Arc::new(LiveSet::default()),
            apps: [None, None],
            generations: [0, 0],
            pods: BTreeMap::new(),
            kept: BTreeMap::new(),
            serial: 0,
            lent: BTreeMap::new(),
            holders: BTreeMap::new(),
        }
    }

    fn next(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// Whether a refusal is expected because a subnet was deleted: it is terminating, or gone.
    fn refusable(&self, e: &Error) -> bool {
        match e {
            Error::Terminating { key, .. } => self.lent.contains_key(key.name.as_str()),
            Error::UnknownReference { kind, name, .. } => {
                *kind == Kind::SpiderSubnet && self.lent.contains_key(name.as_str())
            }
            _ => false,
        }
    }

    fn keeps(&self, app: usize, slot: u8) -> bool {
        APPS[app].1 == WorkloadKind::StatefulSet
            && self.apps[app].is_some_and(|r| (slot as i32) < r)
    }

    async fn add(&mut self, app: usize, slot: u8) -> Result<(), TestCaseError> {
        let name = pod_name(app, slot);
        if self.pods.get(&name).is_some_and(|p| p.ips.is_some()) {
            // A retried ADD of a running pod returns what it has.
            let p = self.pods[&name].clone();
            let w = workload(app, self.apps[app].unwrap_or(0));
            let got = self
                .engine
                .allocate(&request(&w, &name, &p.uid, &p.container, &["eth0", "net1"]))
                .await;
            if let Ok(got) = got {
                prop_assert_eq!(
                    Some(addresses(&got)),
                    p.ips,
                    "retried ADD of {} changed its IPs",
                    name
                );
            }
            return Ok(());
        }
        let n = self.next();
        let (uid, container) = (format!("uid-{n}"), format!("c-{n}"));
        let w = workload(app, self.apps[app].unwrap_or(0));
        let result = self
            .engine
            .allocate(&request(&w, &name, &uid, &container, &["eth0", "net1"]))
            .await;
        match result {
            Ok(a) => {
                let got = addresses(&a);
                prop_assert_eq!(
                    got.len(),
                    if APPS[app].1 == WorkloadKind::StatefulSet {
                        3
                    } else {
                        2
                    }
                );
                if let Some(before) = self.kept.get(&name)
                    && self.keeps(app, slot)
                {
                    prop_assert_eq!(
                        &got,
                        before,
                        "StatefulSet pod {} came back with other IPs",
                        name
                    );
                }
                self.kept.remove(&name);
                self.live.add(&container);
                let generation = self.generations[app];
                self.pods.insert(
                    name,
                    Pod {
                        uid,
                        container,
                        generation,
                        ips: Some(got),
                    },
                );
            }
            Err(e) => {
                prop_assert!(
                    matches!(e, Error::PoolsExhausted { .. } | Error::NoPool { .. })
                        || self.refusable(&e),
                    "unexpected failure of {}: {}",
                    name,
                    e
                );
                // All or nothing: the failed pod holds no IP.
                let records = self.engine.records().await.unwrap();
                let pod = format!("default/{name}");
                let held: Vec<_> = records
                    .values()
                    .flat_map(|r| r.values())
                    .filter(|r| {
                        r.pod == pod && r.container_id.as_deref() == Some(container.as_str())
                    })
                    .collect();
                prop_assert!(held.is_empty(), "failed ADD of {} left {:?}", name, held);
                if let Error::PoolsExhausted { .. } = e {
                    // Exhaustion is real: some candidate pool of the app is full.
                    let pools: Vec<SpiderIPPool> = self.engine.store().list_as(None).await.unwrap();
                    let full = pools.iter().any(|p| {
                        p.metadata.name.contains(APPS[app].0)
                            && p.allocated_count() as u128 == p.usable_ips().len()
                    });
                    prop_assert!(full, "{} was refused but no pool of its app is full", name);
                }
            }
        }
        Ok(())
    }

    async fn del(&mut self, app: usize, slot: u8) -> Result<(), TestCaseError> {
        let name = pod_name(app, slot);
        let Some(p) = self.pods.get(&name).cloned() else {
            return Ok(());
        };
        let w = workload(app, self.apps[app].unwrap_or(0));
        let r = self
            .engine
            .release(&release(Some(&w), &name, &p.uid, &p.container))
            .await
            .unwrap();
        self.live.remove(&p.container);
        if let Some(ips) = &p.ips
            && self.keeps(app, slot)
            && p.generation == self.generations[app]
        {
            prop_assert!(
                r.ips.is_empty(),
                "kept StatefulSet pod {} lost IPs {:?}",
                name,
                r.ips
            );
            self.kept.insert(name.clone(), ips.clone());
        }
        self.pods.remove(&name);
        Ok(())
    }

    async fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Apply { app, replicas } => {
                let w = workload(*app, *replicas);
                match self.engine.apply(any_workload(w)).await {
                    Ok(_) => {
                        self.apps[*app] = Some(*replicas);
                        // Scaling below an ordinal frees what was kept for it.
                        let gone: Vec<String> = self
                            .kept
                            .keys()
                            .filter(|k| k.starts_with(APPS[*app].0))
                            .filter(|k| {
                                !self.keeps(*app, k.rsplit('-').next().unwrap().parse().unwrap())
                            })
                            .cloned()
                            .collect();
                        for k in gone {
                            self.kept.remove(&k);
                        }
                    }
                    Err(Error::SubnetExhausted { .. }) => {}
                    Err(e) if self.refusable(&e) => {}
                    Err(e) => prop_assert!(false, "apply: {}", e),
                }
            }
            Op::DeleteApp { app } => {
                if self.apps[*app].take().is_some() {
                    self.generations[*app] += 1;
                    let (name, kind) = APPS[*app];
                    self.engine
                        .delete(&ObjectKey::namespaced(kind.kind(), "default", name))
                        .await
                        .unwrap();
                    self.kept.retain(|k, _| !k.starts_with(name));
                }
            }
            Op::DeleteSubnet { subnet } => {
                let name = SUBNETS[*subnet];
                if !self.lent.contains_key(name) {
                    self.engine
                        .delete(&ObjectKey::cluster(Kind::SpiderSubnet, name))
                        .await
                        .unwrap();
                    let lent = self
                        .engine
                        .store()
                        .get_as::<SpiderSubnet>(None, name)
                        .await
                        .unwrap()
                        .map(|s| {
                            s.claims()
                                .values()
                                .fold(IpSet::new(), |a, c| a.union(&c.ips))
                        })
                        .unwrap_or_default();
                    self.lent.insert(name, lent);
                }
            }
            Op::Add { app, slot } => self.add(*app, *slot).await?,
            Op::Del { app, slot } => self.del(*app, *slot).await?,
            Op::Restart { app, slot } => {
                self.del(*app, *slot).await?;
                self.add(*app, *slot).await?;
            }
            Op::Kill { app, slot } => {
                if let Some(p) = self.pods.remove(&pod_name(*app, *slot)) {
                    self.live.remove(&p.container);
                }
            }
            Op::Gc => {
                self.engine.gc(self.live.as_ref()).await.unwrap();
                // Kept StatefulSet IPs of pods no longer kept are gone.
                let kept: Vec<String> = self.kept.keys().cloned().collect();
                for k in kept {
                    let (app, slot) = if let Some(s) = k.strip_prefix("db-") {
                        (1, s.parse::<u8>().unwrap())
                    } else {
                        continue;
                    };
                    if !self.keeps(app, slot) {
                        self.kept.remove(&k);
                    }
                }
            }
            Op::Race(ops) => {
                // Pods of distinct names race from several threads.
                let mut seen = Vec::new();
                let mut tasks = Vec::new();
                for (add, app, slot) in ops {
                    let name = pod_name(*app, *slot);
                    if seen.contains(&name) {
                        continue;
                    }
                    seen.push(name.clone());
                    let w = workload(*app, self.apps[*app].unwrap_or(0));
                    let engine = self.engine.clone();
                    match (add, self.pods.get(&name).cloned()) {
                        (true, None) => {
                            let n = self.next();
                            let (uid, c) = (format!("uid-{n}"), format!("c-{n}"));
                            tasks.push(tokio::spawn(async move {
                                let r = engine
                                    .allocate(&request(&w, &name, &uid, &c, &["eth0", "net1"]))
                                    .await;
                                (name, uid, c, Some(r.map(|a| addresses(&a))))
                            }));
                        }
                        (false, Some(p)) => {
                            tasks.push(tokio::spawn(async move {
                                engine
                                    .release(&release(Some(&w), &name, &p.uid, &p.container))
                                    .await
                                    .unwrap();
                                (name, p.uid, p.container, None)
                            }));
                        }
                        _ => {}
                    }
                }
                for t in tasks {
                    let (name, uid, c, outcome) = t.await.unwrap();
                    match outcome {
                        Some(Ok(ips)) => {
                            self.live.add(&c);
                            self.kept.remove(&name);
                            let app = APPS.iter().position(|(n, _)| name.starts_with(n)).unwrap();
                            let generation = self.generations[app];
                            self.pods.insert(
                                name,
                                Pod {
                                    uid,
                                    container: c,
                                    generation,
                                    ips: Some(ips),
                                },
                            );
                        }
                        Some(Err(e)) => prop_assert!(
                            matches!(e, Error::PoolsExhausted { .. } | Error::NoPool { .. })
                                || self.refusable(&e),
                            "racing ADD of {}: {}",
                            name,
                            e
                        ),
                        None => {
                            let p = self.pods.remove(&name).unwrap();
                            self.live.remove(&p.container);
                            let app = APPS.iter().position(|(n, _)| name.starts_with(n)).unwrap();
                            let slot: u8 = name.rsplit('-').next().unwrap().parse().unwrap();
                            if self.keeps(app, slot) && p.generation == self.generations[app] {
                                self.kept.insert(name, p.ips.unwrap_or_default());
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn check(&mut self) -> Result<(), TestCaseError> {
        let store = self.engine.store();
        check_quiescent(store, 1)
            .await
            .map_err(TestCaseError::fail)?;
        // Every pod the model has running holds exactly its IPs, with its container.
        let records = self.engine.records().await.unwrap();
        let mut held: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for r in records.values() {
            for (ip, rec) in r {
                if let Some(c) = &rec.container_id {
                    held.entry(c.clone()).or_default().push(*ip);
                }
            }
        }
        for (name, p) in &self.pods {
            if let Some(ips) = &p.ips {
                let mut want = ips.clone();
                want.sort();
                let mut have = held.get(&p.container).cloned().unwrap_or_default();
                have.sort();
                prop_assert_eq!(have, want, "{} holds other IPs than it was given", name);
            }
        }
        // No deployment pool exists without its application (reclaim), except terminating ones.
        let pools: Vec<SpiderIPPool> = store.list_as(None).await.unwrap();
        for p in &pools {
            if let Some(app) = p.metadata.label(ipam_core::LABEL_OWNER_APP_NAME) {
                let i = APPS.iter().position(|(n, _)| *n == app).unwrap();
                if self.apps[i].is_none() {
                    prop_assert!(
                        p.metadata.is_terminating() && p.allocated_count() > 0,
                        "pool {} of deleted app lingers",
                        p.metadata.name
                    );
                }
            }
        }
        // A terminating subnet lends no IP it did not lend when its deletion began, and a
        // terminating pool gives no IP to a new holder.
        let subnets: Vec<SpiderSubnet> = store.list_as(None).await.unwrap();
        for s in subnets.iter().filter(|s| s.metadata.is_terminating()) {
            let now = s
                .claims()
                .values()
                .fold(IpSet::new(), |a, c| a.union(&c.ips));
            let then = self
                .lent
                .get(s.metadata.name.as_str())
                .cloned()
                .unwrap_or_default();
            let more = now.difference(&then);
            prop_assert!(
                more.is_empty(),
                "terminating SpiderSubnet {} lent {} more",
                s.metadata.name,
                more
            );
        }
        for p in pools.iter().filter(|p| p.metadata.is_terminating()) {
            // By pod: the same pod in a new sandbox, or a StatefulSet pod's name, is no new
            // holder.
            let now: BTreeSet<(IpAddr, String)> =
                p.records().into_iter().map(|(ip, r)| (ip, r.pod)).collect();
            let then = self
                .holders
                .entry(p.metadata.name.clone())
                .or_insert_with(|| now.clone());
            let new: Vec<_> = now.difference(then).collect();
            prop_assert!(
                new.is_empty(),
                "terminating pool {} handed out {:?}",
                p.metadata.name,
                new
            );
        }
        Ok(())
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut world = World::new().await;
        for op in &ops {
            world.step(op).await?;
            world.check().await?;
        }
        // In the end: every pod gone, GC, every application deleted → every IP back.
        let names: Vec<String> = world.pods.keys().cloned().collect();
        for name in names {
            let app = APPS.iter().position(|(n, _)| name.starts_with(n)).unwrap();
            let slot: u8 = name.rsplit('-').next().unwrap().parse().unwrap();
            world.step(&Op::Del { app, slot }).await?;
        }
        for app in 0..2 {
            world.step(&Op::DeleteApp { app }).await?;
        }
        world.step(&Op::Gc).await?;
        world.check().await?;
        let pools: Vec<SpiderIPPool> = world.engine.store().list_as(None).await.unwrap();
        prop_assert!(
            pools.is_empty(),
            "pools left: {:?}",
            pools.iter().map(|p| &p.metadata.name).collect::<Vec<_>>()
        );
        let subnets: Vec<SpiderSubnet> = world.engine.store().list_as(None).await.unwrap();
        for s in subnets {
            prop_assert!(
                s.claims().is_empty(),
                "subnet {} still lends IPs",
                s.metadata.name
            );
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("BERTH_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}
