//! `KubeStore` against a real API server (crates/kube-testbed): ipam-core's conformance suite,
//! a watch that reports another client's writes, conflicts between two clients, Berth's own
//! fields kept, apps/v1 workloads read but not written, a pool write on a known version in one
//! request, and the engine allocating and releasing on it. (An unreachable or frozen API server, and a watch whose history is gone: in
//! `unavailable.rs`, on a cluster of their own.)
//!
//! The tests share one cluster. The conformance suite wants a fresh, empty store per check;
//! [`Scoped`] gives each check its own slice of the cluster instead (names and namespaces with
//! a prefix of its own, which it adds on the way in and takes off on the way out).

mod support;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use ipam_core::store::{Deleted, RecordsDelta, Store, TypedStore, WatchEvent, WatchStream};
use ipam_core::{
    AllocateRequest, Engine, Error, Kind, LabelSelector, NicRequest, ObjectKey, PodContext,
    ReleaseRequest, SpiderIPPool, ips,
};
use ipam_store_k8s::KubeStore;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_testbed::{Cluster, Identity, Options, SharedCluster, unique_name};
use serde_json::{Value, json};
use support::{LIMIT, installed, next_event, pool, record, store};

static CLUSTER: SharedCluster = SharedCluster::new(Options::default);

async fn cluster() -> &'static Cluster {
    installed(&CLUSTER).await
}

/// A slice of the shared cluster that looks like an empty store: cluster-scoped objects are
/// named `<scope>-<name>` and namespaced ones live in namespace `<scope>-<namespace>` (made on
/// first use); everything else is hidden. Keys, documents, errors and watch events are
/// translated both ways; nothing else is touched.
struct Scoped {
    store: KubeStore,
    /// Makes the namespaces (the store itself may not).
    admin: kube::Client,
    scope: String,
    namespaces: Mutex<BTreeSet<String>>,
}

impl Scoped {
    fn new(store: &KubeStore, admin: &kube::Client) -> Self {
        Scoped {
            store: store.clone(),
            admin: admin.clone(),
            scope: unique_name("c"),
            namespaces: Mutex::new(BTreeSet::new()),
        }
    }

    fn prefixed(&self, s: &str) -> String {
        format!("{}-{s}", self.scope)
    }

    fn unprefixed(&self, s: &str) -> Option<String> {
        s.strip_prefix(&format!("{}-", self.scope))
            .map(str::to_string)
    }

    fn key_in(&self, key: &ObjectKey) -> ObjectKey {
        let mut key = key.clone();
        match &mut key.namespace {
            Some(ns) => *ns = self.prefixed(ns),
            None => key.name = self.prefixed(&key.name),
        }
        key
    }

    /// The key as the suite knows it, or `None` if it is not of this scope.
    fn key_out(&self, key: &ObjectKey) -> Option<ObjectKey> {
        let mut key = key.clone();
        match &mut key.namespace {
            Some(ns) => *ns = self.unprefixed(ns)?,
            None => key.name = self.unprefixed(&key.name)?,
        }
        Some(key)
    }

    fn doc_in(&self, kind: Kind, mut v: Value) -> Value {
        let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) else {
            return v;
        };
        if kind.is_namespaced() {
            let ns = meta
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("default");
            let ns = self.prefixed(ns);
            meta.insert("namespace".into(), Value::from(ns));
        } else if let Some(name) = meta.get("name").and_then(Value::as_str)
            && !name.is_empty()
        {
            let name = self.prefixed(name);
            meta.insert("name".into(), Value::from(name));
        }
        v
    }

    /// A listing of the store behind, as the suite sees it: this scope's objects only.
    fn listed_out(&self, listed: Result<Vec<Value>, Error>) -> Result<Vec<Value>, Error> {
        Ok(listed
            .map_err(|e| self.error_out(e))?
            .into_iter()
            .filter(|v| self.in_scope(v))
            .map(|v| self.doc_out(v))
            .collect())
    }

    fn doc_out(&self, mut v: Value) -> Value {
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in ["namespace", "name"] {
                if let Some(s) = meta.get(field).and_then(Value::as_str)
                    && let Some(bare) = self.unprefixed(s)
                {
                    meta.insert(field.into(), Value::from(bare));
                    break;
                }
            }
        }
        v
    }

    fn error_out(&self, e: Error) -> Error {
        let out = |k: ObjectKey| self.key_out(&k).unwrap_or(k);
        match e {
            Error::NotFound(k) => Error::NotFound(out(k)),
            Error::Conflict(k) => Error::Conflict(out(k)),
            Error::AlreadyExists(k) => Error::AlreadyExists(out(k)),
            Error::Malformed { kind, name, reason } => Error::Malformed {
                kind,
                name: self.unprefixed(&name).unwrap_or(name),
                reason,
            },
            other => other,
        }
    }

    fn in_scope(&self, v: &Value) -> bool {
        let meta = &v["metadata"];
        let s = meta["namespace"]
            .as_str()
            .or(meta["name"].as_str())
            .unwrap_or_default();
        self.unprefixed(s).is_some()
    }

    async fn ensure_namespace(&self, kind: Kind, doc: &Value) {
        if !kind.is_namespaced() {
            return;
        }
        let Some(ns) = doc["metadata"]["namespace"].as_str() else {
            return;
        };
        if !self.namespaces.lock().unwrap().insert(ns.to_string()) {
            return;
        }
        let namespaces: Api<Namespace> = Api::all(self.admin.clone());
        let object = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        match namespaces.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => panic!("namespace {ns}: {e}"),
        }
    }
}

#[async_trait]
impl Store for Scoped {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, Error> {
        let got = self.store.get(&self.key_in(key)).await;
        got.map(|v| v.map(|v| self.doc_out(v)))
            .map_err(|e| self.error_out(e))
    }

    async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, Error> {
        let namespace = namespace.map(|ns| self.prefixed(ns));
        let listed = self.store.list(kind, namespace.as_deref(), selector).await;
        self.listed_out(listed)
    }

    async fn list_current(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, Error> {
        let namespace = namespace.map(|ns| self.prefixed(ns));
        let listed = self
            .store
            .list_current(kind, namespace.as_deref(), selector)
            .await;
        self.listed_out(listed)
    }

    async fn create(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        let object = self.doc_in(kind, object);
        self.ensure_namespace(kind, &object).await;
        let created = self.store.create(kind, object).await;
        created
            .map(|v| self.doc_out(v))
            .map_err(|e| self.error_out(e))
    }

    async fn update(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        let updated = self.store.update(kind, self.doc_in(kind, object)).await;
        updated
            .map(|v| self.doc_out(v))
            .map_err(|e| self.error_out(e))
    }

    async fn update_status(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        let updated = self
            .store
            .update_status(kind, self.doc_in(kind, object))
            .await;
        updated
            .map(|v| self.doc_out(v))
            .map_err(|e| self.error_out(e))
    }

    async fn delete(&self, key: &ObjectKey, precondition: Option<&str>) -> Result<Deleted, Error> {
        let deleted = self.store.delete(&self.key_in(key), precondition).await;
        match deleted.map_err(|e| self.error_out(e))? {
            Deleted::Terminating(v) => Ok(Deleted::Terminating(self.doc_out(v))),
            Deleted::Gone => Ok(Deleted::Gone),
        }
    }

    async fn update_pool_records(
        &self,
        name: &str,
        version: &str,
        delta: &RecordsDelta,
    ) -> Result<String, Error> {
        let written = self
            .store
            .update_pool_records(&self.prefixed(name), version, delta)
            .await;
        written.map_err(|e| self.error_out(e))
    }

    fn watch(&self, kind: Kind) -> WatchStream {
        let scope = Scoped {
            store: self.store.clone(),
            admin: self.admin.clone(),
            scope: self.scope.clone(),
            namespaces: Mutex::new(BTreeSet::new()),
        };
        Box::pin(self.store.watch(kind).filter_map(move |event| {
            let event = match event {
                WatchEvent::Changed { key, version } => scope
                    .key_out(&key)
                    .map(|key| WatchEvent::Changed { key, version }),
                WatchEvent::Lost => Some(WatchEvent::Lost),
            };
            std::future::ready(event)
        }))
    }

    fn watches_every_write(&self) -> bool {
        self.store.watches_every_write()
    }

    fn writes(&self, kind: Kind) -> bool {
        self.store.writes(kind)
    }
}

/// The permissions the crate documentation lists, for a user of its own (its name).
async fn documented_permissions(cluster: &Cluster) -> String {
    let user = unique_name("berth-store");
    let rules = json!([
        {
            "apiGroups": ["spiderpool.spidernet.io"],
            "resources": ["spidersubnets", "spiderippools", "spiderendpoints", "spiderreservedips"],
            "verbs": ["get", "list", "watch", "create", "update", "delete"],
        },
        {
            "apiGroups": ["spiderpool.spidernet.io"],
            "resources": ["spidersubnets/status", "spiderippools/status"],
            "verbs": ["update"],
        },
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "statefulsets"],
            "verbs": ["get", "list", "watch"],
        },
    ]);
    let admin = cluster.client().unwrap();
    let pp = PostParams::default();
    let role: ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": user}, "rules": rules})).unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&pp, &role)
        .await
        .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin)
        .create(&pp, &binding)
        .await
        .unwrap();
    user
}

/// Run with only the permissions the crate documentation lists, so that they are enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    let cluster = cluster().await;
    let user = documented_permissions(cluster).await;
    let kubeconfig = cluster.kubeconfig_for(&Identity::new(&user, None)).unwrap();
    // RBAC takes effect as the API server's informers see the binding: retry a moment.
    let store = tokio::time::timeout(LIMIT, async {
        loop {
            match KubeStore::from_kubeconfig(&kubeconfig).await {
                Ok(store) => return store,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("the store's permissions did not take effect");
    let admin = cluster.client().unwrap();
    ipam_core::store::conformance::run_all(|| Scoped::new(&store, &admin)).await;
}

/// The agent's store (pool listings from a watch, reads from the API server's watch cache)
/// keeps the same contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_with_the_agents_caches() {
    let cluster = cluster().await;
    let store = store(cluster).await.caching_pool_lists().cached_reads();
    let admin = cluster.client().unwrap();
    ipam_core::store::conformance::run_all(|| Scoped::new(&store, &admin)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_reports_writes_of_another_client() {
    let cluster = cluster().await;
    let ours = store(cluster).await;
    // Another process, as far as the API server can tell: its own client and connections.
    let theirs = store(cluster).await;
    let name = unique_name("watched");
    let key = ObjectKey::cluster(Kind::SpiderIPPool, &name);
    let mut events = ours.watch(Kind::SpiderIPPool);

    let created = theirs.create_as(&pool(&name)).await.unwrap();
    let mut changed = created.clone();
    changed.spec.gateway = Some("10.9.0.1".parse().unwrap());
    let changed = theirs.update_as(&changed).await.unwrap();
    let delta = RecordsDelta {
        set: vec![("10.9.0.10".parse().unwrap(), record("a"))],
        allocated_ip_count: 1,
        total_ip_count: 11,
        ..Default::default()
    };
    let allocated = theirs
        .update_pool_records(
            &name,
            changed.metadata.resource_version.as_ref().unwrap(),
            &delta,
        )
        .await
        .unwrap();
    theirs.delete(&key, None).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 4 {
        match next_event(&mut events).await {
            WatchEvent::Changed { key: k, version } if k == key => seen.push(version),
            WatchEvent::Changed { .. } => {} // another test's pool
            WatchEvent::Lost => panic!("the watch lost events on a healthy cluster"),
        }
    }
    assert_eq!(
        seen,
        [
            created.metadata.resource_version,
            changed.metadata.resource_version,
            Some(allocated),
            None,
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_writing_one_pool_conflict_and_nothing_is_lost() {
    let cluster = cluster().await;
    let (a, b) = (store(cluster).await, store(cluster).await);
    let name = unique_name("contended");
    let created = a.create_as(&pool(&name)).await.unwrap();
    let v1 = created.metadata.resource_version.clone().unwrap();
    let one = |ip: &str, pod: &str| RecordsDelta {
        set: vec![(ip.parse().unwrap(), record(pod))],
        allocated_ip_count: 1,
        total_ip_count: 11,
        last_allocated_ip: Some(ip.parse().unwrap()),
        ..Default::default()
    };

    // Both read v1; a writes first; b's write under v1 is refused, not applied blindly.
    let v2 = a
        .update_pool_records(&name, &v1, &one("10.9.0.10", "a"))
        .await
        .unwrap();
    let stale = b
        .update_pool_records(&name, &v1, &one("10.9.0.11", "b"))
        .await;
    assert!(matches!(stale, Err(Error::Conflict(_))), "{stale:?}");
    let mut stale_status: SpiderIPPool = created.clone();
    stale_status.set_records([("10.9.0.12".parse().unwrap(), record("c"))].into());
    let stale = b.update_status_as(&stale_status).await;
    assert!(matches!(stale, Err(Error::Conflict(_))), "{stale:?}");
    let stale = b.update_as(&created).await;
    assert!(matches!(stale, Err(Error::Conflict(_))), "{stale:?}");
    let key = ObjectKey::cluster(Kind::SpiderIPPool, &name);
    let stale = b.delete(&key, Some(&v1)).await;
    assert!(matches!(stale, Err(Error::Conflict(_))), "{stale:?}");

    // b re-reads and retries on top of a's record; both records and Berth's own field stay.
    let mut both = one("10.9.0.11", "b");
    both.allocated_ip_count = 2;
    b.update_pool_records(&name, &v2, &both).await.unwrap();
    let got: SpiderIPPool = a.get_as(None, &name).await.unwrap().unwrap();
    let records = got.records();
    assert_eq!(
        records.keys().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        ["10.9.0.10", "10.9.0.11"]
    );
    assert_eq!(records[&"10.9.0.11".parse().unwrap()], record("b"));
    let status = got.status.unwrap();
    assert_eq!(status.allocated_ip_count, Some(2));
    assert_eq!(status.last_allocated_ip, Some("10.9.0.11".parse().unwrap()));

    // AlreadyExists, and NotFound once gone.
    let again = b.create_as(&pool(&name)).await;
    assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");
    assert_eq!(a.delete(&key, None).await.unwrap(), Deleted::Gone);
    let gone = b.update_pool_records(&name, &v2, &both).await;
    assert!(matches!(gone, Err(Error::NotFound(_))), "{gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_keeps_its_container_id() {
    let cluster = cluster().await;
    let ns = cluster.namespace("endpoint").await.unwrap();
    let store = store(cluster).await;
    let endpoint = json!({
        "metadata": {"name": "web-0", "namespace": ns.name()},
        "status": {
            "current": {
                "uid": "u-0", "node": "node1", "containerID": "c-0",
                "ips": [{"interface": "eth0", "ipv4": "10.9.0.10/24", "ipv4Pool": "p", "vlan": 0}],
            },
            "ownerControllerType": "StatefulSet",
            "ownerControllerName": "web",
        },
    });
    let created = store.create(Kind::SpiderEndpoint, endpoint).await.unwrap();
    assert_eq!(created["status"]["current"]["containerID"], "c-0");
    // update_status of a kind without the subresource: the status, written whole.
    let mut next = created.clone();
    next["status"]["current"]["containerID"] = json!("c-1");
    next["metadata"]["labels"] = json!({"ignored": "yes"});
    let written = store
        .update_status(Kind::SpiderEndpoint, next.clone())
        .await
        .unwrap();
    assert_eq!(written["status"]["current"]["containerID"], "c-1");
    assert!(written["metadata"].get("labels").is_none(), "{written}");
    let stale = store.update_status(Kind::SpiderEndpoint, next).await;
    assert!(matches!(stale, Err(Error::Conflict(_))), "{stale:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_are_read_not_written() {
    let cluster = cluster().await;
    let ns = cluster.namespace("apps").await.unwrap();
    // The constructor `berth ... --kubeconfig PATH` uses.
    let store = KubeStore::from_kubeconfig(cluster.kubeconfig())
        .await
        .unwrap();
    assert!(!store.writes(Kind::Deployment) && !store.writes(Kind::StatefulSet));
    assert!(store.writes(Kind::SpiderIPPool));

    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app", "labels": {"app": "x"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {
                    "labels": {"app": "x"},
                    "annotations": {"ipam.spidernet.io/ippool-ip-number": "+2"},
                },
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }))
    .unwrap();
    let api: Api<Deployment> = Api::namespaced(cluster.client().unwrap(), ns.name());
    let made = api
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let mut events = store.watch(Kind::Deployment);
    let got: ipam_core::Deployment = store.get_as(Some(ns.name()), "app").await.unwrap().unwrap();
    assert_eq!(got.0.metadata.uid, made.metadata.uid);
    assert_eq!(got.0.spec.replicas, Some(0));
    let listed = store
        .list(
            Kind::Deployment,
            Some(ns.name()),
            Some(&LabelSelector::eq([("app", "x")])),
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    // Listed items decode as the engine reads them (the API server leaves out their kind).
    let decoded: Vec<ipam_core::Deployment> = store.list_as(None).await.unwrap();
    assert!(
        decoded
            .iter()
            .any(|d| d.0.metadata.uid == made.metadata.uid)
    );
    assert_eq!(listed[0]["kind"], "Deployment");
    assert_eq!(listed[0]["apiVersion"], "apps/v1");

    let refused = store
        .update(Kind::Deployment, serde_json::to_value(&got).unwrap())
        .await;
    assert!(
        matches!(&refused, Err(e @ Error::Backend { .. }) if !e.is_unavailable()),
        "{refused:?}"
    );
    let key = ObjectKey {
        kind: Kind::Deployment,
        namespace: Some(ns.name().into()),
        name: "app".into(),
    };
    assert!(store.delete(&key, None).await.is_err());

    // Its users' writes are reported (a patch: the deployment controller writes it too).
    let scale = json!({"spec": {"replicas": 1}});
    let scaled = api
        .patch("app", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    loop {
        match next_event(&mut events).await {
            WatchEvent::Changed { key: k, version } if k == key => {
                if version == scaled.metadata.resource_version {
                    break;
                }
            }
            WatchEvent::Changed { .. } => {}
            WatchEvent::Lost => panic!("lost events on a healthy cluster"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_allocates_and_releases_on_the_cluster() {
    let cluster = cluster().await;
    let ns = cluster.namespace("engine").await.unwrap();
    let engine = Engine::new(store(cluster).await);
    let name = unique_name("engine");
    let pool = SpiderIPPool::new(
        &name,
        "192.168.77.0/24".parse().unwrap(),
        ips!["192.168.77.10-192.168.77.12"],
    );
    engine.apply(pool).await.unwrap();
    let request = |pod: &str| AllocateRequest {
        pod: PodContext {
            namespace: ns.name().into(),
            name: pod.into(),
            node: "node1".into(),
            ..Default::default()
        },
        pod_uid: format!("uid-{pod}"),
        container_id: format!("c-{pod}"),
        netns: None,
        nics: vec![NicRequest {
            interface: "eth0".into(),
            default_ipv4_pools: vec![name.clone()],
            ..Default::default()
        }],
    };
    let address = |a: &ipam_core::Allocation| a.nics[0].ips[0].address.to_string();
    let a = engine.allocate(&request("a")).await.unwrap();
    let b = engine.allocate(&request("b")).await.unwrap();
    assert_eq!(
        [address(&a), address(&b)],
        ["192.168.77.10/24", "192.168.77.11/24"]
    );
    // A retried ADD finds its IP by the container id the endpoint keeps.
    let again = engine.allocate(&request("a")).await.unwrap();
    assert_eq!(address(&again), address(&a));

    engine
        .release(&ReleaseRequest {
            namespace: ns.name().into(),
            name: "a".into(),
            pod_uid: "uid-a".into(),
            container_id: "c-a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Round robin resumes after the last IP handed out, which the pool keeps.
    let c = engine.allocate(&request("c")).await.unwrap();
    assert_eq!(address(&c), "192.168.77.12/24");
    let stored: SpiderIPPool = engine.store().get_as(None, &name).await.unwrap().unwrap();
    let holders: Vec<String> = stored.records().values().map(|r| r.pod.clone()).collect();
    assert_eq!(
        holders,
        [format!("{}/b", ns.name()), format!("{}/c", ns.name())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_write_on_a_version_the_store_saw_is_one_request() {
    let cluster = cluster().await;
    // Through the fault proxy (no fault set), which counts requests.
    let client = kube::Client::try_from(cluster.proxy_config().await.unwrap()).unwrap();
    let counted = KubeStore::new(client).await.unwrap();
    let requests = || cluster.proxy().counts().1;
    let name = unique_name("one-request");
    let created = counted.create_as(&pool(&name)).await.unwrap();
    let delta = |ip: &str, pod: &str, count: i64| RecordsDelta {
        set: vec![(ip.parse().unwrap(), record(pod))],
        allocated_ip_count: count,
        total_ip_count: 11,
        ..Default::default()
    };

    let before = requests();
    let v1 = created.metadata.resource_version.unwrap();
    let v2 = counted
        .update_pool_records(&name, &v1, &delta("10.9.0.10", "a", 1))
        .await
        .unwrap();
    assert_eq!(
        requests() - before,
        1,
        "the store wrote what it had created"
    );

    // Someone else writes: the store has not seen v3, so it reads before it writes.
    let other = store(cluster).await;
    let v3 = other
        .update_pool_records(&name, &v2, &delta("10.9.0.11", "b", 2))
        .await
        .unwrap();
    let before = requests();
    counted
        .update_pool_records(&name, &v3, &delta("10.9.0.12", "c", 3))
        .await
        .unwrap();
    assert_eq!(requests() - before, 2, "a read, then the write");
    let got: SpiderIPPool = other.get_as(None, &name).await.unwrap().unwrap();
    assert_eq!(got.records().len(), 3, "nobody's record was lost");

    // A version it saw, but no longer the stored one: a conflict.
    let stale = counted
        .update_pool_records(&name, &v2, &delta("10.9.0.13", "d", 4))
        .await;
    assert!(matches!(stale, Err(Error::Conflict(_))), "{stale:?}");
}

/// With `caching_pool_lists`, listings of every pool come from a watch: another client's new
/// pool shows once the watch has it, a deleted one goes, and a listing with a label selector
/// still asks the API server (so it sees what it asks for at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_of_every_pool_can_come_from_a_watch() {
    let cluster = cluster().await;
    let cached = store(cluster).await.caching_pool_lists();
    let other = store(cluster).await;
    let name = unique_name("listed");
    let mut made = pool(&name);
    made.metadata.labels.insert("bench".into(), name.clone());
    let listed = |name: String| {
        let cached = cached.clone();
        async move {
            let started = std::time::Instant::now();
            loop {
                let pools: Vec<SpiderIPPool> = cached.list_as(None).await.unwrap();
                if pools.iter().any(|p| p.metadata.name == name) {
                    return true;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    other.create_as(&made).await.unwrap();
    assert!(listed(name.clone()).await, "the new pool never showed");
    let selector: LabelSelector =
        serde_json::from_value(json!({"matchLabels": {"bench": name}})).unwrap();
    let by_label = cached
        .list(Kind::SpiderIPPool, None, Some(&selector))
        .await
        .unwrap();
    assert_eq!(by_label.len(), 1);
    other
        .delete(&ObjectKey::cluster(Kind::SpiderIPPool, &name), None)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let pools: Vec<SpiderIPPool> = cached.list_as(None).await.unwrap();
        if pools.iter().all(|p| p.metadata.name != name) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the deleted pool stayed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
