//! The control plane behaves as Kubernetes does: workloads become pods that run on the simulated
//! nodes through the kubelet stand-in, and the API server's semantics for custom resources hold.
//! One cluster, shared by the tests of this binary; each test has its own namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    PropagationPolicy, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube_testbed::{Attachment, Options, SharedCluster};
use serde_json::{Value, json};

static CLUSTER: SharedCluster = SharedCluster::new(|| Options::default().nodes(2));

const LIMIT: Duration = Duration::from_secs(90);

/// Follows the objects `api` lists under `config` until `done` holds for them (by name).
async fn watch_until<K>(
    api: Api<K>,
    config: watcher::Config,
    what: &str,
    done: impl Fn(&BTreeMap<String, K>) -> bool,
) -> BTreeMap<String, K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut objects = BTreeMap::new();
    let mut events = watcher(api, config).default_backoff().boxed();
    let follow = async {
        while let Some(event) = events.try_next().await.expect("the watch goes on") {
            // Judge only whole states: after a listing is complete, or a change to one.
            let whole = match event {
                watcher::Event::Apply(o) => {
                    objects.insert(o.meta().name.clone().unwrap_or_default(), o);
                    true
                }
                watcher::Event::InitApply(o) => {
                    objects.insert(o.meta().name.clone().unwrap_or_default(), o);
                    false
                }
                watcher::Event::Delete(o) => {
                    objects.remove(o.meta().name.as_deref().unwrap_or_default());
                    true
                }
                watcher::Event::Init => {
                    objects.clear();
                    false
                }
                watcher::Event::InitDone => true,
            };
            if whole && done(&objects) {
                return;
            }
        }
    };
    if tokio::time::timeout(LIMIT, follow).await.is_err() {
        panic!(
            "{what}: not reached within {LIMIT:?}; last seen: {:#?}",
            objects.keys()
        );
    }
    objects
}

fn running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// A CNI "plugin": a shell script that logs each call's command and `CNI_ARGS`, and prints
/// `result` for ADD.
fn recording_plugin(dir: &Path, name: &str, result: &str) -> PathBuf {
    let path = dir.join(name);
    let log = dir.join(format!("{name}.calls"));
    let script = format!(
        "#!/bin/sh\ncat >/dev/null\necho \"$CNI_COMMAND $CNI_IFNAME $CNI_ARGS\" >> '{}'\n[ \"$CNI_COMMAND\" = ADD ] && printf '%s' '{result}'\nexit 0\n",
        log.display()
    );
    std::fs::write(&path, script).unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&path)
        .status()
        .unwrap();
    path
}

fn calls(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(format!("{name}.calls")))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn deployment(namespace: &str, name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn a_deployment_becomes_pods_that_the_kubelet_stand_in_runs_and_tears_down() {
    let cluster = CLUSTER.get().await;
    let ns = cluster.namespace("deploy").await.unwrap();
    let scripts = tempfile::tempdir().unwrap();
    // No IPAM: the plugin sets nothing up and prints nothing, as /bin/true; it only logs.
    let plugin = recording_plugin(scripts.path(), "none", "");
    cluster.set_pod_network(ns.name(), move |_node: &str, _pod: &Pod| {
        Ok(vec![Attachment {
            network: "none".into(),
            interface: "eth0".into(),
            plugin: plugin.clone(),
            config: json!({"cniVersion": "1.0.0", "name": "none", "type": "none"}),
        }])
    });
    let client = cluster.client().unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    deployments
        .create(&PostParams::default(), &deployment(ns.name(), "web", 3))
        .await
        .unwrap();

    // The controller-manager makes a ReplicaSet owned by the Deployment, and three pods.
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns.name());
    let owned = watch_until(sets, watcher::Config::default(), "a ReplicaSet", |sets| {
        sets.values().any(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "Deployment" && o.name == "web")
        })
    })
    .await;
    assert_eq!(owned.len(), 1);

    // The scheduler binds them to the kwok nodes; the stand-in brings them to Running.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let ran = watch_until(
        pods.clone(),
        watcher::Config::default(),
        "3 pods Running",
        |pods| pods.len() == 3 && pods.values().all(running),
    )
    .await;
    let node_names: Vec<&str> = cluster.nodes().iter().map(|n| n.name.as_str()).collect();
    for pod in ran.values() {
        let node = pod.spec.as_ref().unwrap().node_name.as_deref().unwrap();
        assert!(node_names.contains(&node), "{node} is not a simulated node");
        let status = pod.status.as_ref().unwrap();
        assert!(status.pod_ips.is_none(), "no IPAM sets no IP: {status:?}");
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(ready, "{:?}", status.conditions);
    }
    let adds = calls(scripts.path(), "none");
    assert_eq!(adds.len(), 3, "{adds:#?}");
    for pod in ran.values() {
        let name = pod.metadata.name.as_deref().unwrap();
        let uid = pod.metadata.uid.as_deref().unwrap();
        let expected = format!("K8S_POD_NAMESPACE={};K8S_POD_NAME={name};", ns.name());
        assert!(
            adds.iter().any(|c| c.starts_with("ADD eth0 ")
                && c.contains(&expected)
                && c.contains(&format!("K8S_POD_UID={uid}"))
                && c.contains("K8S_POD_INFRA_CONTAINER_ID=")),
            "no ADD for {name} in {adds:#?}"
        );
    }

    // Deleting the Deployment deletes the pods; each gets its DEL before it is gone.
    let foreground = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    deployments.delete("web", &foreground).await.unwrap();
    watch_until(
        pods,
        watcher::Config::default(),
        "every pod gone",
        BTreeMap::is_empty,
    )
    .await;
    let all = calls(scripts.path(), "none");
    let dels: Vec<&String> = all.iter().filter(|c| c.starts_with("DEL ")).collect();
    assert_eq!(dels.len(), 3, "{all:#?}");
    for pod in ran.values() {
        let name = pod.metadata.name.as_deref().unwrap();
        assert!(
            dels.iter()
                .any(|c| c.contains(&format!("K8S_POD_NAME={name};"))),
            "no DEL for {name} in {all:#?}"
        );
    }
}

#[tokio::test]
async fn the_primary_nic_gives_the_pod_ips_and_every_nic_is_in_the_network_status() {
    let cluster = CLUSTER.get().await;
    let ns = cluster.namespace("nics").await.unwrap();
    let scripts = tempfile::tempdir().unwrap();
    let eth0 = recording_plugin(
        scripts.path(),
        "eth0",
        r#"{"cniVersion":"1.0.0","ips":[{"address":"10.6.168.172/16","gateway":"10.6.0.1"},{"address":"fd00:6::172/64"}]}"#,
    );
    let net1 = recording_plugin(
        scripts.path(),
        "net1",
        r#"{"cniVersion":"1.0.0","ips":[{"address":"10.7.168.173/16"}]}"#,
    );
    cluster.set_pod_network(ns.name(), move |_node: &str, _pod: &Pod| {
        Ok(vec![
            Attachment {
                network: "kube-system/macvlan-ens192".into(),
                interface: "eth0".into(),
                plugin: eth0.clone(),
                config: json!({"cniVersion": "1.0.0", "name": "macvlan-ens192", "type": "eth0"}),
            },
            Attachment {
                network: "kube-system/macvlan-ens224".into(),
                interface: "net1".into(),
                plugin: net1.clone(),
                config: json!({"cniVersion": "1.0.0", "name": "macvlan-ens224", "type": "net1"}),
            },
        ])
    });
    let pods: Api<Pod> = Api::namespaced(cluster.client().unwrap(), ns.name());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "two-nics"},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let ran = watch_until(
        pods.clone(),
        watcher::Config::default(),
        "the pod Running",
        |p| p.values().any(running),
    )
    .await;
    let pod = &ran["two-nics"];
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some("10.6.168.172"));
    let ips: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .collect();
    assert_eq!(ips, ["10.6.168.172", "fd00:6::172"]);
    let node = cluster
        .nodes()
        .iter()
        .find(|n| Some(n.name.as_str()) == pod.spec.as_ref().unwrap().node_name.as_deref())
        .unwrap();
    assert_eq!(status.host_ip.as_deref(), Some(node.ip.as_str()));
    let annotation =
        &pod.metadata.annotations.as_ref().unwrap()[kube_testbed::kubelet::NETWORK_STATUS];
    let network_status: Value = serde_json::from_str(annotation).unwrap();
    assert_eq!(
        network_status,
        json!([
            {"name": "kube-system/macvlan-ens192", "interface": "eth0",
             "ips": ["10.6.168.172", "fd00:6::172"], "default": true, "dns": {}},
            {"name": "kube-system/macvlan-ens224", "interface": "net1",
             "ips": ["10.7.168.173"], "default": false, "dns": {}},
        ])
    );

    // DEL goes NIC by NIC in reverse order, each with its ADD's result as prevResult.
    pods.delete("two-nics", &DeleteParams::default())
        .await
        .unwrap();
    watch_until(
        pods,
        watcher::Config::default(),
        "the pod gone",
        BTreeMap::is_empty,
    )
    .await;
    assert_eq!(calls(scripts.path(), "eth0").len(), 2);
    assert_eq!(calls(scripts.path(), "net1").len(), 2);
    assert!(calls(scripts.path(), "net1")[1].starts_with("DEL net1 "));
}

/// A namespaced custom resource with a status subresource: `widgets.testbed.berth.dev`.
async fn widgets(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.testbed.berth.dev"},
        "spec": {
            "group": "testbed.berth.dev",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                        "status": {"type": "object", "properties": {"seen": {"type": "integer"}}},
                    },
                }},
            }],
        },
    }))
    .unwrap();
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {} // another test made it
        Err(e) => panic!("create the CRD: {e}"),
    }
    let established = kube::runtime::wait::await_condition(
        crds,
        "widgets.testbed.berth.dev",
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(LIMIT, established)
        .await
        .unwrap()
        .unwrap();
    let resource = ApiResource {
        group: "testbed.berth.dev".into(),
        version: "v1".into(),
        api_version: "testbed.berth.dev/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn widget(name: &str, size: i64, labels: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "testbed.berth.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name, "labels": labels},
        "spec": {"size": size},
    }))
    .unwrap()
}

#[tokio::test]
async fn custom_resources_keep_optimistic_concurrency_status_selectors_and_finalizers() {
    let cluster = CLUSTER.get().await;
    let ns = cluster.namespace("crd").await.unwrap();
    let client = cluster.client().unwrap();
    let api = widgets(&client, ns.name()).await;
    let pp = PostParams::default();

    // A write with a stale resourceVersion gets 409.
    let created = api
        .create(&pp, &widget("a", 1, json!({"tier": "gold"})))
        .await
        .unwrap();
    let mut fresh = created.clone();
    fresh.data["spec"]["size"] = json!(2);
    api.replace("a", &pp, &fresh).await.unwrap();
    let mut stale = created.clone();
    stale.data["spec"]["size"] = json!(3);
    match api.replace("a", &pp, &stale).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("a stale write must conflict: {other:?}"),
    }

    // A status write changes status only, and does change the resourceVersion.
    let current = api.get("a").await.unwrap();
    let mut with_status = current.clone();
    with_status.data["status"] = json!({"seen": 7});
    with_status.data["spec"]["size"] = json!(99);
    let after = api.replace_status("a", &pp, &with_status).await.unwrap();
    assert_eq!(after.data["spec"]["size"], 2);
    assert_eq!(after.data["status"]["seen"], 7);
    assert_ne!(
        after.metadata.resource_version,
        current.metadata.resource_version
    );

    // A label selector lists only what matches.
    api.create(&pp, &widget("b", 1, json!({"tier": "silver"})))
        .await
        .unwrap();
    api.create(&pp, &widget("c", 1, json!({"tier": "gold", "zone": "x"})))
        .await
        .unwrap();
    let gold = api
        .list(&ListParams::default().labels("tier=gold"))
        .await
        .unwrap();
    let mut names: Vec<String> = gold
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "c"]);
    let not_gold = api
        .list(&ListParams::default().labels("tier!=gold"))
        .await
        .unwrap();
    assert_eq!(not_gold.items.len(), 1);

    // A watch from a resourceVersion delivers the later writes, in order.
    let from = api
        .get("b")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for size in 10..15 {
        api.patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": size}})),
        )
        .await
        .unwrap();
    }
    let stream = api
        .watch(&WatchParams::default().fields("metadata.name=b"), &from)
        .await
        .unwrap();
    let sizes: Vec<i64> = stream
        .take(5)
        .map(|event| match event.unwrap() {
            WatchEvent::Modified(o) => o.data["spec"]["size"].as_i64().unwrap(),
            other => panic!("expected Modified: {other:?}"),
        })
        .collect()
        .await;
    assert_eq!(sizes, [10, 11, 12, 13, 14]);

    // An object with a finalizer stays, terminating, until the finalizer goes.
    let mut held = widget("held", 1, json!({}));
    held.metadata.finalizers = Some(vec!["testbed.berth.dev/hold".into()]);
    api.create(&pp, &held).await.unwrap();
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let terminating = api.get("held").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    let unchanged = api.get("held").await.unwrap();
    assert_eq!(
        unchanged.metadata.finalizers.as_deref(),
        Some(&["testbed.berth.dev/hold".to_owned()][..])
    );
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let gone = kube::runtime::wait::await_condition(
        api.clone(),
        "held",
        kube::runtime::wait::conditions::is_deleted(terminating.metadata.uid.as_deref().unwrap()),
    );
    tokio::time::timeout(LIMIT, gone).await.unwrap().unwrap();
    assert!(api.get_opt("held").await.unwrap().is_none());
}
