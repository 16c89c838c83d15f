//! [`KubeStore`]: the `Store` trait on the Kubernetes API server.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ipam_core::store::{Deleted, RecordsDelta, Store, WatchStream, semantics};
use ipam_core::{Error as CoreError, Kind, LabelSelector, ObjectKey};
use kube::api::{
    Api, DeleteParams, DynamicObject, GetParams, ListParams, PostParams, Preconditions,
};
use kube::runtime::reflector;
use serde_json::Value;

use crate::error::Error;
use crate::wire::{self, Op};

/// The longest a store method waits for the API server, by default.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(8);

/// How long a refused request (403) is asked again: long enough for an API server that has
/// just started to read its roles, short enough that a real RBAC gap shows at once.
pub const FORBIDDEN_GRACE: Duration = Duration::from_secs(5);

/// A [`Store`] whose objects are the API server's: Spiderpool's custom resources, and the
/// cluster's Deployments and StatefulSets (read only). See the crate documentation.
///
/// Cheap to clone (the clones share the client, the version record and the pool documents);
/// cloning or wrapping it in an `Arc` are both fine.
#[derive(Clone)]
pub struct KubeStore {
    client: kube::Client,
    deadline: Duration,
    /// The newest resourceVersion (an etcd revision) any answer carried: where watches start.
    seen: Arc<AtomicU64>,
    /// The last document of each pool the store read or wrote. A resourceVersion names one
    /// state of one object, so when `update_pool_records` is given the version of the document
    /// here, that document is the stored pool and the read before the write can be skipped.
    pools: Arc<Mutex<HashMap<String, Value>>>,
    /// Listings of every pool, from a watch (see [`KubeStore::caching_pool_lists`]).
    pool_lists: Option<PoolLists>,
    /// With [`KubeStore::cached_reads`]: what the store knows of the version of each object
    /// it read or wrote, which its next read names.
    versions: Option<Arc<Mutex<HashMap<ObjectKey, Noted>>>>,
}

/// What a store with cached reads knows of one object's version.
#[derive(Clone, Copy)]
enum Noted {
    /// The newest version it read or wrote.
    At(u64),
    /// Its last write conflicted: the next read asks etcd, not the watch cache, which may not
    /// have the write that won yet.
    Contested,
}

/// A watch-fed copy of the pools that `list` serves once the watch has listed them.
#[derive(Clone)]
struct PoolLists {
    reader: kube::runtime::reflector::Store<DynamicObject>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    _task: Arc<AbortOnDrop>,
}

/// Stops the watch task when the last clone of the store goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore")
            .field("deadline", &self.deadline)
            .field("seen", &self.seen.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Records `version` in `seen` if it is newer (versions that are not numbers are not recorded:
/// watches then start from a fresh list's version instead).
pub(crate) fn record_version(seen: &AtomicU64, version: &str) {
    if let Ok(v) = version.parse::<u64>() {
        seen.fetch_max(v, Ordering::Relaxed);
    }
}

impl KubeStore {
    /// A store on the cluster `client` talks to.
    ///
    /// It asks the API server once for each of Spiderpool's kinds (a one-item list): this
    /// fails with [`Error::NotServed`] when Berth's CRDs are not installed, and with
    /// [`Error::Connect`] when the server cannot be reached within [`DEFAULT_DEADLINE`]. The
    /// answers also give the version watches start from (see [`Store::watch`]).
    ///
    /// The client's own timeouts do not matter for the store's requests: every store method
    /// gives up after the store's [deadline](KubeStore::deadline).
    pub async fn new(client: kube::Client) -> Result<Self, Error> {
        let store = KubeStore {
            client,
            deadline: DEFAULT_DEADLINE,
            seen: Arc::new(AtomicU64::new(0)),
            pools: Arc::default(),
            pool_lists: None,
            versions: None,
        };
        for kind in [
            Kind::SpiderSubnet,
            Kind::SpiderIPPool,
            Kind::SpiderEndpoint,
            Kind::SpiderReservedIP,
        ] {
            let key = ObjectKey::cluster(kind, "");
            let probe = store.api(kind, None);
            let params = ListParams::default().limit(1);
            let list = store
                .timed(&key, Op::Read, || probe.list_metadata(&params))
                .await;
            match list {
                Ok(list) => {
                    if let Some(v) = &list.metadata.resource_version {
                        store.record(v);
                    }
                }
                Err(CoreError::NotFound(_)) => {
                    return Err(Error::NotServed {
                        kind,
                        api_version: kind.api_version(),
                    });
                }
                Err(e) => return Err(Error::Connect(e)),
            }
        }
        Ok(store)
    }

    /// This store, with its listings of every pool served from a watch of the pools once the
    /// watch has listed them. For long-running callers that list every pool often: the node
    /// agent's selection does for each ADD, and on a cluster with hundreds of pools each ADD
    /// fetched them all from the API server.
    ///
    /// A listing served so may lag the API server by the watch's delay (milliseconds);
    /// [`Store::list_current`] still asks the API server.
    /// Selection tolerates that: every write to a pool still carries the version of a fresh
    /// read, so a stale listing can only make a write conflict and be made again. Listings
    /// with a label selector still ask the API server. With [`KubeStore::cached_reads`] too,
    /// a read of a pool names the newest version the watch has of it. Starts a task on the
    /// current tokio runtime, which ends with the last clone of the store.
    pub fn caching_pool_lists(mut self) -> Self {
        use kube::runtime::{WatchStreamExt, reflector, watcher};
        let resource = wire::resource(Kind::SpiderIPPool);
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let writer = reflector::store::Writer::new(resource);
        let reader = writer.as_reader();
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .applied_objects();
        let (flag, waiting) = (ready.clone(), reader.clone());
        let task = tokio::spawn(async move {
            let follow = async {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = futures::StreamExt::next(&mut stream).await {
                    if let Err(e) = event {
                        tracing::debug!(error = %e, "the watch of the pools failed; it restarts");
                    }
                }
            };
            let mark = async {
                if waiting.wait_until_ready().await.is_ok() {
                    flag.store(true, Ordering::Release);
                }
                std::future::pending::<()>().await
            };
            tokio::join!(follow, mark);
        });
        self.pool_lists = Some(PoolLists {
            reader,
            ready,
            _task: Arc::new(AbortOnDrop(task)),
        });
        self
    }

    /// This store, with each read of an object it has read or written before naming the
    /// version it saw last, which the API server answers from its watch cache instead of a
    /// quorum read of etcd (20 ms a read under a burst of ADDs, and an agent reads a pool or
    /// an endpoint a dozen times per pod). For the node agent, whose engine holds every write
    /// to the version it read.
    ///
    /// Such a read is never older than what this store saw of the object, its own writes
    /// included, but it may miss another client's write of the last milliseconds, which a
    /// quorum read would have. The engine tolerates that as it tolerates its cache: every
    /// write carries the version it was based on, so a stale read costs a conflict, and after
    /// a conflict on an object its next read asks etcd, which has the write that won. A read
    /// of an object the store has not seen (the first of a new pod's endpoint) asks etcd too,
    /// and so does every read of a Deployment or StatefulSet.
    pub fn cached_reads(mut self) -> Self {
        self.versions = Some(Arc::default());
        self
    }

    /// [`Store::list`] from the API server: a consistent list (no `resourceVersion`), in pages
    /// of 500, sorted by namespace and name.
    async fn list_from_server(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, CoreError> {
        let key = ObjectKey {
            kind,
            namespace: namespace
                .filter(|_| kind.is_namespaced())
                .map(str::to_string),
            name: String::new(),
        };
        let mut params = ListParams::default().limit(500);
        if let Some(selector) = selector.filter(|s| !s.is_empty()) {
            match wire::selector_query(selector) {
                Some(query) => params = params.labels(&query),
                None => return Ok(Vec::new()),
            }
        }
        let api = self.api(kind, namespace);
        let work = async {
            let mut objects = Vec::new();
            loop {
                let page = self.timed(&key, Op::Read, || api.list(&params)).await?;
                if let Some(v) = &page.metadata.resource_version {
                    self.record(v);
                }
                // The items of a list of built-in kinds (apps/v1 Deployments) come without
                // their apiVersion and kind, which documents carry.
                objects.extend(page.items.into_iter().map(|mut o| {
                    o.types.get_or_insert_with(|| kube::api::TypeMeta {
                        api_version: kind.api_version().into(),
                        kind: kind.name().into(),
                    });
                    self.document(o)
                }));
                match page.metadata.continue_ {
                    Some(token) if !token.is_empty() => params = params.continue_token(&token),
                    _ => return Ok(objects),
                }
            }
        };
        let mut objects: Vec<Value> = self.within(|| format!("list {key}"), work).await?;
        let order = |o: &Value| {
            let meta = &o["metadata"];
            (
                meta["namespace"].as_str().unwrap_or_default().to_string(),
                meta["name"].as_str().unwrap_or_default().to_string(),
            )
        };
        objects.sort_by_cached_key(order);
        Ok(objects)
    }

    /// Every pool from the watch-fed copy, when there is one and it has listed them.
    fn cached_pool_list(&self) -> Option<Vec<Value>> {
        let lists = self.pool_lists.as_ref()?;
        if !lists.ready.load(Ordering::Acquire) {
            return None;
        }
        Some(
            lists
                .reader
                .state()
                .iter()
                .map(|o| wire::document((**o).clone()))
                .collect(),
        )
    }

    /// A store on the cluster of a kubeconfig file (its current context), as kubectl's
    /// `--kubeconfig PATH` reads it. See [`KubeStore::new`].
    pub async fn from_kubeconfig(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let kubeconfig_error = |source| Error::Kubeconfig {
            path: path.to_path_buf(),
            source,
        };
        let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(kubeconfig_error)?;
        let client = kube::Client::try_from(config).map_err(Error::Client)?;
        Self::new(client).await
    }

    /// A store on the cluster the process runs in, as its pod's service account reaches it
    /// (`KUBERNETES_SERVICE_HOST` and the mounted token). See [`KubeStore::new`].
    pub async fn in_cluster() -> Result<Self, Error> {
        let config = kube::Config::incluster().map_err(Error::InCluster)?;
        let client = kube::Client::try_from(config).map_err(Error::Client)?;
        Self::new(client).await
    }

    /// Sets how long a store method waits for the API server before it fails with an
    /// unavailable error ([`ipam_core::Error::is_unavailable`]); [`DEFAULT_DEADLINE`] by
    /// default. A method that makes two requests (an update without a resourceVersion reads
    /// first) gets one deadline for both.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The client the store uses.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    fn api(&self, kind: Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = wire::resource(kind);
        match namespace.filter(|_| kind.is_namespaced()) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    fn api_of(&self, key: &ObjectKey) -> Api<DynamicObject> {
        self.api(key.kind, key.namespace.as_deref())
    }

    fn record(&self, version: &str) {
        record_version(&self.seen, version);
    }

    /// `object` as a document, its version recorded (and the document, if it is a pool).
    fn document(&self, object: DynamicObject) -> Value {
        if let Some(v) = &object.metadata.resource_version {
            self.record(v);
        }
        let document = wire::document(object);
        if document["kind"] == Kind::SpiderIPPool.name()
            && let Some(name) = document["metadata"]["name"].as_str()
        {
            self.known_pools()
                .insert(name.to_string(), document.clone());
        }
        document
    }

    /// [`KubeStore::document`] of `key`, its version noted for cached reads.
    fn document_of(&self, key: &ObjectKey, object: DynamicObject) -> Value {
        let document = self.document(object);
        self.note(key, Some(&document));
        document
    }

    /// Notes the version of `key`'s document (or that it is gone), for reads from the watch
    /// cache (see [`KubeStore::cached_reads`]). The newest version noted stays: a read that
    /// began before one of the store's writes may answer after it, with an older version.
    fn note(&self, key: &ObjectKey, document: Option<&Value>) {
        let Some(mut versions) = self.versions() else {
            return;
        };
        match document
            .and_then(semantics::version_of)
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(version) => {
                let newest = match versions.get(key) {
                    Some(Noted::At(noted)) => version.max(*noted),
                    _ => version,
                };
                versions.insert(key.clone(), Noted::At(newest));
            }
            None => {
                versions.remove(key);
            }
        }
    }

    fn versions(&self) -> Option<std::sync::MutexGuard<'_, HashMap<ObjectKey, Noted>>> {
        let versions = self.versions.as_ref()?;
        Some(versions.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn known_pools(&self) -> std::sync::MutexGuard<'_, HashMap<String, Value>> {
        // Whole documents only are inserted: a panic elsewhere leaves nothing half-written.
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pool `key` as stored at `version`: the document last seen if it is of that version,
    /// else a fresh read.
    async fn pool_at(&self, key: &ObjectKey, version: &str) -> Result<Value, CoreError> {
        let known = self.known_pools().get(&key.name).cloned();
        if let Some(pool) = known.filter(|p| semantics::version_of(p) == Some(version)) {
            return Ok(pool);
        }
        self.read(key)
            .await?
            .ok_or_else(|| CoreError::NotFound(key.clone()))
    }

    /// One request to the API server, within the deadline, its failure mapped.
    ///
    /// A refusal (403) is asked again for up to [`FORBIDDEN_GRACE`]: an API server that has
    /// just started serves requests before its authorizer has read the roles, and refuses
    /// them meanwhile. A refusal that lasts is returned as it is.
    async fn timed<T, Fut>(
        &self,
        key: &ObjectKey,
        op: Op,
        request: impl Fn() -> Fut,
    ) -> Result<T, CoreError>
    where
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        match wire::ask(self.deadline, request).await {
            Some(answer) => answer.map_err(|e| {
                let e = wire::error(key, op, e);
                if let (CoreError::Conflict(_), Some(mut versions)) = (&e, self.versions()) {
                    versions.insert(key.clone(), Noted::Contested);
                }
                e
            }),
            None => Err(CoreError::unavailable(
                format!("{} {key}", op.verb()),
                Error::DeadlineExceeded(self.deadline),
            )),
        }
    }

    /// A whole store method within the deadline.
    async fn within<T>(
        &self,
        context: impl FnOnce() -> String,
        work: impl Future<Output = Result<T, CoreError>>,
    ) -> Result<T, CoreError> {
        tokio::time::timeout(self.deadline, work)
            .await
            .unwrap_or_else(|_| {
                Err(CoreError::unavailable(
                    context(),
                    Error::DeadlineExceeded(self.deadline),
                ))
            })
    }

    fn refuse_read_only(&self, key: &ObjectKey) -> Result<(), CoreError> {
        if self.writes(key.kind) {
            Ok(())
        } else {
            Err(CoreError::backend(
                format!("write {key}"),
                Error::ReadOnly(key.kind),
            ))
        }
    }

    async fn read(&self, key: &ObjectKey) -> Result<Option<Value>, CoreError> {
        let api = self.api_of(key);
        let params = GetParams {
            resource_version: self.cached_read_version(key),
        };
        let got = self
            .timed(key, Op::Read, || async {
                match api.get_with(&key.name, &params).await {
                    Ok(object) => Ok(Some(object)),
                    Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        if got.is_none() {
            self.note(key, None);
        }
        Ok(got.map(|o| self.document_of(key, o)))
    }

    /// The resourceVersion a read of `key` names (see [`KubeStore::cached_reads`]): the
    /// newest the store knows of it, from its own reads and writes or, for a pool, from the
    /// watch of [`KubeStore::caching_pool_lists`]. None (a quorum read) without cached reads,
    /// for an object never seen, after a conflict on it until a read succeeds, and for the
    /// apps/v1 workloads, which the store never writes: whether a StatefulSet keeps a pod's
    /// IPs must be read as the API server has it now.
    fn cached_read_version(&self, key: &ObjectKey) -> Option<String> {
        if !self.writes(key.kind) {
            return None;
        }
        let known = match self.versions()?.get(key) {
            Some(Noted::Contested) => return None,
            Some(Noted::At(version)) => Some(*version),
            None => None,
        };
        let watched = self
            .pool_lists
            .as_ref()
            .filter(|_| key.kind == Kind::SpiderIPPool)
            .and_then(|lists| {
                lists.reader.get(&reflector::ObjectRef::new_with(
                    &key.name,
                    wire::resource(Kind::SpiderIPPool),
                ))
            })
            .and_then(|o| o.metadata.resource_version.as_deref()?.parse::<u64>().ok());
        known.max(watched).map(|v| v.to_string())
    }

    /// `object` written with PUT (to `/status` when `status`), under the caller's
    /// resourceVersion; without one, under the stored one, again after a conflict (the
    /// caller asked for an unconditional write; the API server has none for custom
    /// resources).
    async fn replace(
        &self,
        key: &ObjectKey,
        object: Value,
        status: bool,
    ) -> Result<Value, CoreError> {
        let api = self.api_of(key);
        let pp = PostParams::default();
        let given = semantics::version_of(&object).map(str::to_string);
        loop {
            let version = match &given {
                Some(v) => v.clone(),
                None => semantics::version_of(
                    &self
                        .read(key)
                        .await?
                        .ok_or_else(|| CoreError::NotFound(key.clone()))?,
                )
                .unwrap_or_default()
                .to_string(),
            };
            let body = wire::request(key, object.clone(), Some(&version))?;
            let put = if status {
                self.timed(key, Op::Write, || api.replace_status(&key.name, &pp, &body))
                    .await
            } else {
                self.timed(key, Op::Write, || api.replace(&key.name, &pp, &body))
                    .await
            };
            match put {
                Err(CoreError::Conflict(_)) if given.is_none() => continue,
                other => return other.map(|o| self.document_of(key, o)),
            }
        }
    }

    /// `update_status` of a kind without a status subresource (SpiderEndpoint,
    /// SpiderReservedIP): the stored object with the new status, written whole.
    async fn replace_status_whole(
        &self,
        key: &ObjectKey,
        object: Value,
    ) -> Result<Value, CoreError> {
        let given = semantics::version_of(&object).map(str::to_string);
        loop {
            let mut stored = self
                .read(key)
                .await?
                .ok_or_else(|| CoreError::NotFound(key.clone()))?;
            let version = semantics::version_of(&stored)
                .unwrap_or_default()
                .to_string();
            if given.as_ref().is_some_and(|g| *g != version) {
                return Err(CoreError::Conflict(key.clone()));
            }
            match object.get("status") {
                Some(s) => stored["status"] = s.clone(),
                None => {
                    if let Some(o) = stored.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            let body = wire::request(key, stored, Some(&version))?;
            let (api, pp) = (self.api_of(key), PostParams::default());
            let put = self
                .timed(key, Op::Write, || api.replace(&key.name, &pp, &body))
                .await;
            match put {
                Err(CoreError::Conflict(_)) if given.is_none() => continue,
                other => return other.map(|o| self.document_of(key, o)),
            }
        }
    }

    /// `update_pool_records`: the delta merged into the pool as stored at `version` (the
    /// document last seen when it is of that version, else a fresh read), written as one status
    /// write under `version`.
    async fn write_records(
        &self,
        key: &ObjectKey,
        version: &str,
        delta: &RecordsDelta,
    ) -> Result<String, CoreError> {
        let mut pool = self.pool_at(key, version).await?;
        if semantics::version_of(&pool) != Some(version) {
            return Err(CoreError::Conflict(key.clone()));
        }
        apply_records(key, &mut pool, delta)?;
        let body = wire::request(key, pool, Some(version))?;
        let (api, pp) = (self.api_of(key), PostParams::default());
        let written = self
            .timed(key, Op::Write, || api.replace_status(&key.name, &pp, &body))
            .await?;
        let written = self.document_of(key, written);
        semantics::version_of(&written)
            .map(str::to_string)
            .ok_or_else(|| {
                CoreError::backend(
                    format!("write {key}"),
                    "the API server returned no resourceVersion",
                )
            })
    }
}

/// Applies `delta` to a pool document's status: its `allocatedIPs` document (records kept as
/// they are stored, whatever keys they carry; absent when empty, as Spiderpool writes it), the
/// counts and `lastAllocatedIP`.
fn apply_records(key: &ObjectKey, pool: &mut Value, delta: &RecordsDelta) -> Result<(), CoreError> {
    let malformed = |reason: String| CoreError::Malformed {
        kind: key.kind,
        name: key.name.clone(),
        reason,
    };
    if !pool.get("status").is_some_and(Value::is_object) {
        pool["status"] = Value::Object(Default::default());
    }
    let status = pool["status"].as_object_mut().expect("status is an object");
    let mut records: BTreeMap<IpAddr, Value> = match status.get("allocatedIPs") {
        Some(Value::String(text)) if !text.is_empty() => serde_json::from_str(text)
            .map_err(|e| malformed(format!("status.allocatedIPs: {e}")))?,
        _ => BTreeMap::new(),
    };
    for ip in &delta.remove {
        records.remove(ip);
    }
    for (ip, record) in &delta.set {
        let record =
            serde_json::to_value(record).map_err(|e| malformed(format!("a record: {e}")))?;
        records.insert(*ip, record);
    }
    if records.is_empty() {
        status.remove("allocatedIPs");
    } else {
        let text = serde_json::to_string(&records).expect("records serialize");
        status.insert("allocatedIPs".into(), Value::from(text));
    }
    status.insert(
        "allocatedIPCount".into(),
        Value::from(delta.allocated_ip_count),
    );
    status.insert("totalIPCount".into(), Value::from(delta.total_ip_count));
    match delta.last_allocated_ip {
        Some(ip) => status.insert("lastAllocatedIP".into(), Value::from(ip.to_string())),
        None => status.remove("lastAllocatedIP"),
    };
    Ok(())
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Create => "create",
            Op::Write => "write",
        }
    }
}

#[async_trait]
impl Store for KubeStore {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, CoreError> {
        self.read(key).await
    }

    /// One server-side `labelSelector` list (in pages of 500, one consistent snapshot),
    /// sorted by namespace and name; every pool, with `caching_pool_lists`, from its watch.
    async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, CoreError> {
        let unselected = selector.is_none_or(LabelSelector::is_empty);
        if kind == Kind::SpiderIPPool
            && unselected
            && let Some(mut pools) = self.cached_pool_list()
        {
            pools.sort_by_cached_key(|o| {
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            });
            return Ok(pools);
        }
        self.list_from_server(kind, namespace, selector).await
    }

    /// Always the API server's consistent list, never the watch of `caching_pool_lists`.
    async fn list_current(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, CoreError> {
        self.list_from_server(kind, namespace, selector).await
    }

    async fn create(&self, kind: Kind, object: Value) -> Result<Value, CoreError> {
        let key = wire::key_to_write(kind, &object)?;
        self.refuse_read_only(&key)?;
        let body = wire::request(&key, object, None)?;
        let (api, pp) = (self.api_of(&key), PostParams::default());
        let created = self
            .timed(&key, Op::Create, || api.create(&pp, &body))
            .await?;
        Ok(self.document_of(&key, created))
    }

    async fn update(&self, kind: Kind, object: Value) -> Result<Value, CoreError> {
        let key = wire::key_to_write(kind, &object)?;
        self.refuse_read_only(&key)?;
        self.within(|| format!("write {key}"), self.replace(&key, object, false))
            .await
    }

    /// Through the status subresource where the kind has one; else (SpiderEndpoint,
    /// SpiderReservedIP) the stored object with the new status, written whole under the
    /// stored version.
    async fn update_status(&self, kind: Kind, object: Value) -> Result<Value, CoreError> {
        let key = wire::key_to_write(kind, &object)?;
        self.refuse_read_only(&key)?;
        let work = async {
            if kind.has_status_subresource() {
                self.replace(&key, object, true).await
            } else {
                self.replace_status_whole(&key, object).await
            }
        };
        self.within(|| format!("write {key}"), work).await
    }

    /// A DELETE with the precondition as the API server's own; the object it returns says
    /// whether finalizers hold it.
    async fn delete(
        &self,
        key: &ObjectKey,
        precondition: Option<&str>,
    ) -> Result<Deleted, CoreError> {
        self.refuse_read_only(key)?;
        let params = DeleteParams {
            preconditions: precondition.map(|v| Preconditions {
                resource_version: Some(v.to_string()),
                uid: None,
            }),
            ..Default::default()
        };
        let api = self.api_of(key);
        let answer = self
            .timed(key, Op::Write, || api.delete(&key.name, &params))
            .await?;
        Ok(match answer.left() {
            Some(object) if wire::is_terminating(&object) => {
                Deleted::Terminating(self.document_of(key, object))
            }
            _ => {
                self.note(key, None);
                if key.kind == Kind::SpiderIPPool {
                    self.known_pools().remove(&key.name);
                }
                Deleted::Gone
            }
        })
    }

    /// One status write of the pool under `version`, the delta merged into the pool as stored
    /// at that version: one request when the store last saw the pool at `version` (it read or
    /// wrote it: the engine's case), else a read first. The API server refuses the write if
    /// anyone wrote the pool since `version` (a conflict, never a blind overwrite).
    async fn update_pool_records(
        &self,
        name: &str,
        version: &str,
        delta: &RecordsDelta,
    ) -> Result<String, CoreError> {
        let key = ObjectKey::cluster(Kind::SpiderIPPool, name);
        self.within(
            || format!("write {key}"),
            self.write_records(&key, version, delta),
        )
        .await
    }

    /// Every change of `kind` by anyone after this call (see the `watch` module): a watch of
    /// the API server from the newest version this store has seen.
    fn watch(&self, kind: Kind) -> WatchStream {
        let from = match self.seen.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v.to_string()),
        };
        crate::watch::stream(
            self.api(kind, None),
            kind,
            from,
            self.seen.clone(),
            self.deadline,
        )
    }

    /// Every write reaches the watch, whoever made it; a gap in the server's history is
    /// reported as `Lost`. Events arrive a moment after their write (a watch is asynchronous),
    /// so a cache kept by them can be briefly stale: the engine's writes carry the version
    /// they were based on, so that costs a conflict and a fresh read, never a wrong write.
    fn watches_every_write(&self) -> bool {
        true
    }

    /// Spiderpool's kinds only: Deployments and StatefulSets are the cluster's, written by
    /// their users; the store reads and watches them.
    fn writes(&self, kind: Kind) -> bool {
        !matches!(kind, Kind::Deployment | Kind::StatefulSet)
    }
}
