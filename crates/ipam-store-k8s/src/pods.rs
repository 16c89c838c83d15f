//! What the node agent knows of a pod in Kubernetes mode: the facts an allocation needs
//! ([`PodContext`]), read from the API server.
//!
//! [`NodePods`] keeps three caches current with watches (kube-runtime reflectors): the pods
//! bound to its node (a field selector on `spec.nodeName`), the namespaces (their labels and
//! annotations select pools, as Spiderpool's namespace defaults do), and its own node (node
//! labels select pools too). A pod the cache does not hold yet, because the runtime calls
//! the plugin a moment after the scheduler binds it, is read directly.
//!
//! The pod's application is its top owner, found through controller ownerReferences as
//! Spiderpool's agent finds it: Pod → ReplicaSet → Deployment, Pod → Job → CronJob, Pod →
//! StatefulSet or DaemonSet, a bare Pod its own, a third party's controller by its kind. The
//! references carry the owners' uids; only the middle links (a ReplicaSet, a Job) are read,
//! once each, since whom they belong to never changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ipam_core::{AppKind, AppRef, PodContext};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::Error;

/// The pods of one node, their namespaces and the node, from the API server.
pub struct NodePods {
    client: kube::Client,
    node: String,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    nodes: Store<Node>,
    owners: Owners,
    deadline: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for NodePods {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts a reflector of `api` (narrowed by `config`) and returns its store.
fn reflect<K: crate::wire::Watched>(
    api: Api<K>,
    config: watcher::Config,
) -> (Store<K>, tokio::task::JoinHandle<()>) {
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::debug!(error = %e, "a watch of the node agent's caches failed; it restarts");
            }
        }
    });
    (reader, task)
}

/// The controller reference of an object, if any.
fn controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

fn app_ref(reference: &OwnerReference, namespace: &str) -> AppRef {
    let (group, version) = match reference.api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), reference.api_version.clone()),
    };
    AppRef {
        group,
        version,
        kind: AppKind::from(reference.kind.as_str()),
        namespace: namespace.to_string(),
        name: reference.name.clone(),
    }
}

/// Runs one request under `deadline` (a refusal is asked again a moment: see `wire::ask`).
async fn timed<T, Fut>(
    deadline: Duration,
    action: impl Fn() -> String,
    request: impl Fn() -> Fut,
) -> Result<T, Error>
where
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    match crate::wire::ask(deadline, request).await {
        Some(result) => result.map_err(|source| Error::Api {
            action: action(),
            source,
        }),
        None => Err(Error::DeadlineExceeded(deadline)),
    }
}

/// Finds pods' applications: their top owners through controller ownerReferences (see the
/// module documentation). The node agent and the controller each keep one.
pub struct Owners {
    client: kube::Client,
    deadline: Duration,
    /// The controller of a ReplicaSet or Job, by its uid (`None`: it has none).
    known: Mutex<HashMap<String, Option<OwnerReference>>>,
}

impl Owners {
    /// Owners read from the cluster `client` talks to, each request within `deadline`.
    pub fn new(client: kube::Client, deadline: Duration) -> Self {
        Owners {
            client,
            deadline,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The controller of a ReplicaSet or Job (`kind`), read once.
    async fn owner_of(
        &self,
        kind: &str,
        namespace: &str,
        reference: &OwnerReference,
    ) -> Result<Option<OwnerReference>, Error> {
        if let Some(known) = self.known.lock().expect("owners").get(&reference.uid) {
            return Ok(known.clone());
        }
        let name = &reference.name;
        let action = || format!("read the {kind} {namespace}/{name}");
        let meta = match kind {
            "ReplicaSet" => {
                let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
                timed(self.deadline, action, || api.get_opt(name))
                    .await?
                    .map(|o| o.metadata)
            }
            _ => {
                let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
                timed(self.deadline, action, || api.get_opt(name))
                    .await?
                    .map(|o| o.metadata)
            }
        };
        // Gone already: the pod is what is left of it; it is its own application.
        let Some(meta) = meta else {
            return Ok(None);
        };
        if meta.uid.as_deref() != Some(reference.uid.as_str()) {
            return Ok(None);
        }
        let owner = controller(&meta).cloned();
        self.known
            .lock()
            .expect("owners")
            .insert(reference.uid.clone(), owner.clone());
        Ok(owner)
    }

    /// What the pod itself tells an allocation: its namespace (`namespace`), name, labels,
    /// annotations and application. The node's and the namespace's facts are the caller's.
    pub async fn context(&self, pod: &Pod, namespace: &str) -> Result<PodContext, Error> {
        let (app, app_uid) = self.application(pod, namespace).await?;
        Ok(PodContext {
            namespace: namespace.to_string(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            annotations: pod.metadata.annotations.clone().unwrap_or_default(),
            app: Some(app),
            app_uid: Some(app_uid).filter(|u| !u.is_empty()),
            ..PodContext::default()
        })
    }

    /// The pod's application and its uid: its top owner (see the module documentation).
    pub async fn application(&self, pod: &Pod, namespace: &str) -> Result<(AppRef, String), Error> {
        let Some(first) = controller(&pod.metadata) else {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let app = AppRef {
                group: String::new(),
                version: "v1".into(),
                kind: AppKind::Pod,
                namespace: namespace.to_string(),
                name,
            };
            return Ok((app, pod.metadata.uid.clone().unwrap_or_default()));
        };
        let middle = match (first.api_version.as_str(), first.kind.as_str()) {
            ("apps/v1", "ReplicaSet") => Some("ReplicaSet"),
            ("batch/v1", "Job") => Some("Job"),
            _ => None,
        };
        if let Some(kind) = middle
            && let Some(top) = self.owner_of(kind, namespace, first).await?
        {
            return Ok((app_ref(&top, namespace), top.uid.clone()));
        }
        Ok((app_ref(first, namespace), first.uid.clone()))
    }
}

impl NodePods {
    /// Starts the caches of `node`'s pods, the namespaces and the node, and waits up to
    /// `deadline` for them to be filled (a cache that is not ready yet still works: lookups
    /// then read the API server).
    pub async fn start(client: kube::Client, node: &str, deadline: Duration) -> Self {
        let on_node = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let (pods, pods_task) = reflect(Api::<Pod>::all(client.clone()), on_node);
        let (namespaces, ns_task) = reflect(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        );
        let this_node = watcher::Config::default().fields(&format!("metadata.name={node}"));
        let (nodes, node_task) = reflect(Api::<Node>::all(client.clone()), this_node);
        let ready = async {
            let _ = pods.wait_until_ready().await;
            let _ = namespaces.wait_until_ready().await;
            let _ = nodes.wait_until_ready().await;
        };
        if tokio::time::timeout(deadline, ready).await.is_err() {
            tracing::warn!(
                node,
                "the node agent's pod caches are not filled yet; reading pods directly meanwhile"
            );
        }
        NodePods {
            owners: Owners::new(client.clone(), deadline),
            client,
            node: node.to_string(),
            pods,
            namespaces,
            nodes,
            deadline,
            tasks: vec![pods_task, ns_task, node_task],
        }
    }

    /// The node this serves.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Runs one request under the deadline (see [`timed`]).
    async fn timed<T, Fut>(
        &self,
        action: impl Fn() -> String,
        request: impl Fn() -> Fut,
    ) -> Result<T, Error>
    where
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        timed(self.deadline, action, request).await
    }

    /// The pod, from the cache or else the API server.
    async fn pod(&self, namespace: &str, name: &str) -> Result<Option<Arc<Pod>>, Error> {
        if let Some(pod) = self.pods.get(&ObjectRef::new(name).within(namespace)) {
            return Ok(Some(pod));
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        Ok(self
            .timed(
                || format!("read the pod {namespace}/{name}"),
                || api.get_opt(name),
            )
            .await?
            .map(Arc::new))
    }

    /// The facts of the pod `namespace/name` for an allocation on this node.
    ///
    /// Whether the pod `namespace/name` (incarnation `uid` when given) is going away: there
    /// is no such pod, another pod has its name now, or it is terminating. A DEL for it
    /// releases all its NICs at once.
    pub async fn leaving(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<bool, Error> {
        let Some(pod) = self.pod(namespace, name).await? else {
            return Ok(true);
        };
        let replaced =
            uid.is_some_and(|uid| !uid.is_empty() && pod.metadata.uid.as_deref() != Some(uid));
        Ok(replaced || pod.metadata.deletion_timestamp.is_some())
    }

    /// Fails with [`Error::UnknownPod`] when the pod does not exist, or is another
    /// incarnation than `uid` (when given), or is bound to another node; with an API error
    /// when the API server cannot say.
    pub async fn context(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<PodContext, Error> {
        let unknown = |reason: String| Error::UnknownPod {
            pod: format!("{namespace}/{name}"),
            reason,
        };
        let Some(pod) = self.pod(namespace, name).await? else {
            return Err(unknown("no such pod".into()));
        };
        if let Some(uid) = uid.filter(|u| !u.is_empty())
            && pod.metadata.uid.as_deref() != Some(uid)
        {
            return Err(unknown(format!(
                "it is another pod of that name now (uid {} where the runtime says {uid})",
                pod.metadata.uid.as_deref().unwrap_or("none")
            )));
        }
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if bound != self.node {
            return Err(unknown(format!(
                "it is bound to node {bound:?}, and this agent serves {:?}",
                self.node
            )));
        }
        let own = self.owners.context(&pod, namespace).await?;
        let ns = self.namespaces.get(&ObjectRef::new(namespace));
        let ns = match ns {
            Some(ns) => Some(ns),
            None => {
                let api: Api<Namespace> = Api::all(self.client.clone());
                self.timed(
                    || format!("read the namespace {namespace}"),
                    || api.get_opt(namespace),
                )
                .await?
                .map(Arc::new)
            }
        };
        let node_labels = self
            .nodes
            .get(&ObjectRef::new(&self.node))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        Ok(PodContext {
            name: name.to_string(),
            node: self.node.clone(),
            node_labels,
            namespace_labels: ns
                .as_ref()
                .and_then(|n| n.metadata.labels.clone())
                .unwrap_or_default(),
            namespace_annotations: ns
                .as_ref()
                .and_then(|n| n.metadata.annotations.clone())
                .unwrap_or_default(),
            ..own
        })
    }
}
