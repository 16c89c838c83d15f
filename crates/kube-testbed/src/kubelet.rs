//! The kubelet stand-in: one per simulated node, it runs the pods the scheduler binds there.
//!
//! kwok keeps the nodes alive (Ready, Lease renewed) but is given no pod stages, because its pods
//! would get IPs from kwok's own CIDR and hide the IPAM under test. Instead this stand-in does
//! what a kubelet and its container runtime do with the network:
//!
//! 1. It watches the pods bound to its node (`spec.nodeName`, a field selector, as the kubelet's
//!    own watch).
//! 2. For a new pod it runs CNI ADD for each of the pod's NICs ([`PodNetwork`]), one process per
//!    call with `K8S_POD_*` in `CNI_ARGS`, at most [`crate::Options::pods_in_flight`] pods at once.
//!    A failed ADD is undone with DEL and retried with a new sandbox id, with backoff, as a
//!    runtime retries a failed sandbox.
//! 3. It writes the pod status: `Running`, Ready, the primary NIC's IPs in `status.podIPs` (one
//!    per family), and every NIC's in the `k8s.v1.cni.cncf.io/network-status` annotation, as
//!    Multus does.
//! 4. When the pod is deleted gracefully it runs DEL for each NIC (in reverse order) and then
//!    removes the pod with grace period 0, as the kubelet does; a pod removed outright (force
//!    delete, pod GC of a deleted node) still gets its DEL.
//!
//! `hostNetwork` pods get no CNI call and the node's IP, as on a real node.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::cni::{self, Attachment, NicResult, PodArgs, PodNetwork};

/// What the stand-ins have done, for tests and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct KubeletStats {
    /// Pods brought to Running.
    pub pods_started: u64,
    /// Pods torn down (DEL done).
    pub pods_stopped: u64,
    /// Successful CNI ADD calls, one per NIC.
    pub adds: u64,
    /// Successful CNI DEL calls, one per NIC.
    pub dels: u64,
    /// Failed CNI calls (ADD or DEL), and failures to decide a pod's NICs.
    pub cni_errors: u64,
    /// The duration of each successful ADD call, in the order they finished.
    pub add_latencies: Vec<Duration>,
    /// The duration of each successful DEL call.
    pub del_latencies: Vec<Duration>,
    /// The last errors (at most 100), newest last: `namespace/pod: message`.
    pub errors: Vec<String>,
}

/// How the stand-ins behave.
#[derive(Clone)]
pub(crate) struct Options {
    pub network: Arc<dyn PodNetwork>,
    pub pods_in_flight: usize,
    pub process_group: i32,
    pub netns_dir: PathBuf,
}

/// The shared state of every node's stand-in.
pub(crate) struct Kubelets {
    stats: Mutex<KubeletStats>,
    networks: Mutex<HashMap<String, Arc<dyn PodNetwork>>>,
    options: Options,
}

impl Kubelets {
    pub(crate) fn new(options: Options) -> Arc<Self> {
        Arc::new(Self {
            stats: Mutex::new(KubeletStats::default()),
            networks: Mutex::new(HashMap::new()),
            options,
        })
    }

    pub(crate) fn stats(&self) -> KubeletStats {
        self.stats.lock().expect("kubelet stats").clone()
    }

    /// Pods of `namespace` use `network` from now on, instead of the cluster's default.
    pub(crate) fn set_network(&self, namespace: &str, network: Arc<dyn PodNetwork>) {
        self.networks
            .lock()
            .expect("kubelet networks")
            .insert(namespace.to_owned(), network);
    }

    fn network(&self, namespace: &str) -> Arc<dyn PodNetwork> {
        self.networks
            .lock()
            .expect("kubelet networks")
            .get(namespace)
            .cloned()
            .unwrap_or_else(|| self.options.network.clone())
    }

    fn record(&self, f: impl FnOnce(&mut KubeletStats)) {
        f(&mut self.stats.lock().expect("kubelet stats"));
    }

    fn error(&self, pod: &str, message: String) {
        tracing::warn!(pod, "{message}");
        self.record(|s| {
            s.cni_errors += 1;
            if s.errors.len() == 100 {
                s.errors.remove(0);
            }
            s.errors.push(format!("{pod}: {message}"));
        });
    }

    /// Runs the stand-in of `node` (whose InternalIP is `node_ip`) until the task is aborted.
    pub(crate) async fn run_node(
        self: Arc<Self>,
        client: kube::Client,
        node: String,
        node_ip: String,
    ) {
        let node = Arc::new(Node {
            name: node,
            ip: node_ip,
            kubelets: self.clone(),
            client: client.clone(),
            slots: Semaphore::new(self.options.pods_in_flight.max(1)),
        });
        let pods: Api<Pod> = Api::all(client);
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", node.name));
        let mut events = watcher(pods, config).default_backoff().boxed();
        let mut known: HashMap<String, watch::Sender<Desired>> = HashMap::new();
        let mut listed: Option<HashSet<String>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
                Ok(watcher::Event::InitApply(pod)) => {
                    if let (Some(listed), Some(uid)) = (listed.as_mut(), pod.metadata.uid.clone()) {
                        listed.insert(uid);
                    }
                    node.apply(&mut known, pod);
                }
                Ok(watcher::Event::InitDone) => {
                    // A pod that vanished while the watch was down gets its DEL now.
                    if let Some(listed) = listed.take() {
                        known.retain(|uid, desired| {
                            let keep = listed.contains(uid);
                            if !keep {
                                let _ = desired.send(Desired::Gone);
                            }
                            keep
                        });
                    }
                }
                Ok(watcher::Event::Apply(pod)) => node.apply(&mut known, pod),
                Ok(watcher::Event::Delete(pod)) => {
                    if let Some(desired) =
                        pod.metadata.uid.as_ref().and_then(|uid| known.remove(uid))
                    {
                        let _ = desired.send(Desired::Gone);
                    }
                }
                Err(e) => tracing::debug!(node = %node.name, "pod watch: {e}"),
            }
        }
    }
}

/// What the API server wants of a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Desired {
    /// Run it.
    Running,
    /// It has a deletionTimestamp: tear down, then remove it.
    Terminating,
    /// It is gone from the API: tear down.
    Gone,
}

struct Node {
    name: String,
    ip: String,
    kubelets: Arc<Kubelets>,
    client: kube::Client,
    slots: Semaphore,
}

/// One sandbox of a pod: its id and what ADD gave each NIC.
struct Sandbox {
    container_id: String,
    netns: PathBuf,
    nics: Vec<(Attachment, NicResult)>,
}

impl Node {
    fn apply(self: &Arc<Self>, known: &mut HashMap<String, watch::Sender<Desired>>, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let desired = if pod.metadata.deletion_timestamp.is_some() {
            Desired::Terminating
        } else {
            Desired::Running
        };
        if let Some(sender) = known.get(&uid) {
            if desired == Desired::Terminating {
                let _ = sender.send(Desired::Terminating);
            }
            return;
        }
        let (sender, receiver) = watch::channel(desired);
        known.insert(uid, sender);
        tokio::spawn(self.clone().run_pod(pod, receiver));
    }

    async fn run_pod(self: Arc<Self>, pod: Pod, mut desired: watch::Receiver<Desired>) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let key = format!("{namespace}/{name}");
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);

        let mut sandbox = None;
        let mut backoff = Duration::from_millis(500);
        while *desired.borrow() == Desired::Running {
            if host_network {
                break;
            }
            match self.add(&pod).await {
                Ok(ready) => {
                    sandbox = Some(ready);
                    break;
                }
                Err(message) => {
                    self.kubelets.error(&key, message);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = desired.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        if *desired.borrow() == Desired::Running {
            let nics = sandbox.as_ref().map(|s| s.nics.as_slice()).unwrap_or(&[]);
            // As a kubelet's status manager does, the status is written until it lands (an
            // API server that restarts loses the first attempts).
            let mut backoff = Duration::from_millis(200);
            while let Err(e) = self.write_running(&pod, nics, host_network).await {
                tracing::debug!(pod = %key, "status not written, trying again: {e}");
                if *desired.borrow() != Desired::Running {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            self.kubelets.record(|s| s.pods_started += 1);
            while *desired.borrow() == Desired::Running {
                if desired.changed().await.is_err() {
                    return; // the stand-in ends
                }
            }
        }
        if let Some(sandbox) = sandbox {
            self.del(&pod, &key, sandbox).await;
            self.kubelets.record(|s| s.pods_stopped += 1);
        }
        if *desired.borrow() == Desired::Terminating {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            if let Err(e) = pods.delete(&name, &params).await {
                tracing::debug!(pod = %key, "final delete: {e}");
            }
        }
    }

    /// ADD for every NIC of a new sandbox; on a failure, DEL of what was added.
    async fn add(&self, pod: &Pod) -> Result<Sandbox, String> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let network = self.kubelets.network(namespace);
        let attachments = network.attachments(&self.name, pod).await?;
        let container_id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let netns = self.kubelets.options.netns_dir.join(&container_id);
        std::fs::write(&netns, b"").map_err(|e| format!("cannot make {}: {e}", netns.display()))?;
        let mut sandbox = Sandbox {
            container_id,
            netns,
            nics: Vec::new(),
        };
        let args = pod_args(pod);
        let slot = self
            .slots
            .acquire()
            .await
            .expect("the semaphore is never closed");
        for attachment in attachments {
            match self.call("ADD", &attachment, &sandbox, &args, None).await {
                Ok(nic) => sandbox.nics.push((attachment, nic)),
                Err(failure) => {
                    let message = format!("ADD {}: {failure}", attachment.interface);
                    drop(slot);
                    let key = format!("{namespace}/{}", args.name);
                    // The failed NIC gets its DEL too: a plugin may have half-done it.
                    sandbox.nics.push((attachment, NicResult::default()));
                    self.del(pod, &key, sandbox).await;
                    return Err(message);
                }
            }
        }
        Ok(sandbox)
    }

    /// DEL for every NIC of the sandbox, the last first, each one even if another failed.
    async fn del(&self, pod: &Pod, key: &str, sandbox: Sandbox) {
        let args = pod_args(pod);
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the semaphore is never closed");
        for (attachment, nic) in sandbox.nics.iter().rev() {
            let prev = nic.raw.as_ref();
            if let Err(failure) = self.call("DEL", attachment, &sandbox, &args, prev).await {
                let message = format!("DEL {}: {failure}", attachment.interface);
                self.kubelets.error(key, message);
            }
        }
        let _ = std::fs::remove_file(&sandbox.netns);
    }

    /// One plugin call for the sandbox, counted and timed in the stats when it succeeds.
    async fn call(
        &self,
        command: &str,
        attachment: &Attachment,
        sandbox: &Sandbox,
        args: &PodArgs<'_>,
        prev_result: Option<&Value>,
    ) -> Result<NicResult, cni::CniFailure> {
        let started = Instant::now();
        let result = cni::call(
            command,
            attachment,
            &sandbox.container_id,
            &sandbox.netns,
            args,
            prev_result,
            self.kubelets.options.process_group,
        )
        .await;
        if result.is_ok() {
            let took = started.elapsed();
            self.kubelets.record(|s| {
                if command == "ADD" {
                    s.adds += 1;
                    s.add_latencies.push(took);
                } else {
                    s.dels += 1;
                    s.del_latencies.push(took);
                }
            });
        }
        result
    }

    /// Marks the pod Running and Ready with its IPs, in one status write.
    async fn write_running(
        &self,
        pod: &Pod,
        nics: &[(Attachment, NicResult)],
        host_network: bool,
    ) -> Result<(), kube::Error> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let patch = running_status(pod, nics, &self.ip, host_network, &now());
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

fn pod_args(pod: &Pod) -> PodArgs<'_> {
    PodArgs {
        namespace: pod.metadata.namespace.as_deref().unwrap_or_default(),
        name: pod.metadata.name.as_deref().unwrap_or_default(),
        uid: pod.metadata.uid.as_deref().unwrap_or_default(),
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The annotation Multus writes: every NIC's network, interface and IPs.
pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

/// The merge patch of a pod's status that a kubelet's first "Running" write amounts to, with the
/// network-status annotation in the same write.
fn running_status(
    pod: &Pod,
    nics: &[(Attachment, NicResult)],
    node_ip: &str,
    host_network: bool,
    now: &str,
) -> Value {
    // One IP per family from the primary NIC, as the kubelet reports them.
    let mut pod_ips: Vec<&str> = Vec::new();
    if host_network {
        pod_ips.push(node_ip);
    } else if let Some((_, primary)) = nics.first() {
        let v4 = primary.ips.iter().find(|ip| !ip.contains(':'));
        let v6 = primary.ips.iter().find(|ip| ip.contains(':'));
        pod_ips.extend(v4.into_iter().chain(v6).map(String::as_str));
    }
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let containers: Vec<Value> = pod
        .spec
        .as_ref()
        .map(|spec| {
            spec.containers
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name,
                        "image": c.image.clone().unwrap_or_default(),
                        "imageID": "",
                        "containerID": format!("kube-testbed://{}-{}", pod.metadata.uid.as_deref().unwrap_or_default(), c.name),
                        "ready": true,
                        "started": true,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now}},
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut patch = json!({
        "status": {
            "phase": "Running",
            "hostIP": node_ip,
            "hostIPs": [{"ip": node_ip}],
            "startTime": now,
            "conditions": [
                condition("PodReadyToStartContainers"),
                condition("Initialized"),
                condition("Ready"),
                condition("ContainersReady"),
                condition("PodScheduled"),
            ],
            "containerStatuses": containers,
        }
    });
    if let Some(first) = pod_ips.first() {
        patch["status"]["podIP"] = json!(first);
        patch["status"]["podIPs"] = pod_ips.iter().map(|ip| json!({"ip": ip})).collect();
    }
    if nics.iter().any(|(_, nic)| !nic.ips.is_empty()) {
        let status: Vec<Value> = nics
            .iter()
            .enumerate()
            .map(|(i, (attachment, nic))| {
                let mut entry = json!({
                    "name": attachment.network,
                    "interface": attachment.interface,
                    "ips": nic.ips,
                    "default": i == 0,
                    "dns": {},
                });
                if let Some(mac) = &nic.mac {
                    entry["mac"] = json!(mac);
                }
                entry
            })
            .collect();
        let text = serde_json::to_string_pretty(&status).expect("JSON serializes");
        patch["metadata"] = json!({"annotations": {NETWORK_STATUS: text}});
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(network: &str, interface: &str, ips: &[&str]) -> (Attachment, NicResult) {
        (
            Attachment {
                network: network.into(),
                interface: interface.into(),
                plugin: "/bin/true".into(),
                config: json!({}),
            },
            NicResult {
                ips: ips.iter().map(|s| (*s).to_owned()).collect(),
                mac: None,
                raw: None,
            },
        )
    }

    #[test]
    fn the_primary_nic_gives_pod_ips_and_every_nic_is_in_network_status() {
        let pod = Pod::default();
        let nics = [
            nic(
                "kube-system/macvlan-ens192",
                "eth0",
                &["10.6.168.172", "fd00:6::172", "10.6.168.200"],
            ),
            nic("kube-system/macvlan-ens224", "net1", &["10.7.168.173"]),
        ];
        let patch = running_status(&pod, &nics, "127.0.1.1", false, "2026-12-06T00:00:00Z");
        assert_eq!(patch["status"]["podIP"], "10.6.168.172");
        assert_eq!(
            patch["status"]["podIPs"],
            json!([{"ip": "10.6.168.172"}, {"ip": "fd00:6::172"}])
        );
        let status: Value = serde_json::from_str(
            patch["metadata"]["annotations"][NETWORK_STATUS]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(status[1]["interface"], "net1");
        assert_eq!(status[1]["ips"], json!(["10.7.168.173"]));
        assert_eq!(status[0]["default"], true);
    }

    #[test]
    fn no_ipam_sets_no_ip_and_host_network_gets_the_node_ip() {
        let pod = Pod::default();
        let patch = running_status(&pod, &[nic("none", "eth0", &[])], "127.0.1.1", false, "t");
        assert!(patch["status"].get("podIP").is_none());
        assert!(patch.get("metadata").is_none());
        assert_eq!(patch["status"]["phase"], "Running");
        let host = running_status(&pod, &[], "127.0.1.1", true, "t");
        assert_eq!(host["status"]["podIPs"], json!([{"ip": "127.0.1.1"}]));
    }
}
