//! `berth agent --kubeconfig PATH --node NAME` against a real control plane (crates/kube-testbed):
//! the agent serves `berth-ipam`'s socket protocol for the pods the scheduler bound to its
//! node, learning each pod's annotations and application from the API server.
//!
//! A Deployment with the seed's `ipam.spidernet.io/subnets` annotation gets two pods on
//! `kwok-node-0`; ADDs for them through the agent's socket get IPs from the Deployment's auto
//! pool (the first ADD waits for the controller to make it), their SpiderEndpoints are written, a repeated ADD is
//! idempotent, and DEL releases. A pod that does not exist, a pod of another incarnation and a
//! pod of another node are refused with code 109, and change nothing.

use std::process::Child;
use std::time::{Duration, Instant};

use berth::core::engine::{AnyObject, Engine};
use berth::core::store::TypedStore;
use berth::k8s::KubeStore;
use berth::{SpiderEndpoint, SpiderIPPool, SpiderSubnet};
use cni_plugin::agent::AgentClient;
use cni_plugin::agent::protocol::{AddArgs, DelArgs};
use kube_testbed::{Cluster, Options, SharedCluster};
use serde_json::Value;
use support::kubectl;

mod support;

static CLUSTER: SharedCluster = SharedCluster::new(|| Options::default().nodes(2));

/// A running `berth agent` in Kubernetes mode, killed when dropped.
struct Agent {
    child: Child,
    socket: std::path::PathBuf,
    /// Where its /metrics is served.
    metrics: String,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(cluster: &Cluster, node: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let metrics = support::free_local_addr();
        let (child, lines) = support::spawn_berth(&[
            "agent".as_ref(),
            "--kubeconfig".as_ref(),
            cluster.kubeconfig().as_os_str(),
            "--node".as_ref(),
            node.as_ref(),
            "--socket".as_ref(),
            socket.as_os_str(),
            "--metrics-listen".as_ref(),
            metrics.as_ref(),
        ]);
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("berth agent said nothing in 60 s");
        assert!(line.starts_with("berth agent: serving node"), "{line}");
        Agent {
            child,
            socket,
            metrics,
            _dir: dir,
        }
    }

    fn client(&self) -> AgentClient {
        AgentClient::new(&self.socket)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pods of `app` in `namespace` once all `n` are bound: (name, uid, node).
fn bound_pods(
    cluster: &Cluster,
    namespace: &str,
    app: &str,
    n: usize,
) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list: Value = serde_json::from_str(&kubectl(
            cluster,
            &[
                "get",
                "pods",
                "-n",
                namespace,
                "-l",
                &format!("app={app}"),
                "-o",
                "json",
            ],
        ))
        .unwrap();
        let pods: Vec<(String, String, String)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| {
                Some((
                    p["metadata"]["name"].as_str()?.to_string(),
                    p["metadata"]["uid"].as_str()?.to_string(),
                    p["spec"]["nodeName"].as_str()?.to_string(),
                ))
            })
            .collect();
        if pods.len() == n {
            return pods;
        }
        assert!(
            Instant::now() < deadline,
            "{app}: {} of {n} pods bound",
            pods.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn add_args(namespace: &str, pod: &str, uid: &str, container: &str) -> AddArgs {
    AddArgs {
        container_id: container.into(),
        if_name: "eth0".into(),
        net_namespace: format!("/var/run/netns/{container}"),
        pod_namespace: namespace.into(),
        pod_name: pod.into(),
        pod_uid: uid.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_its_nodes_pods_from_the_cluster() {
    let cluster = support::with_crds(&CLUSTER).await;
    let ns = cluster.namespace("agent").await.unwrap();
    let engine = Engine::new(KubeStore::new(cluster.client().unwrap()).await.unwrap());
    engine
        .apply(AnyObject::Subnet(SpiderSubnet::new(
            "agent-subnet",
            "10.50.0.0/16".parse().unwrap(),
            berth::core::IpSet::parse_list(["10.50.1.1-10.50.1.20"]).unwrap(),
            Some("10.50.0.1".parse().unwrap()),
        )))
        .await
        .unwrap();
    // The Deployment's pods land on both nodes.
    support::apply_yaml(
        cluster,
        &support::deployment(ns.name(), "web", "agent-subnet", 4),
    );
    let pods = bound_pods(cluster, ns.name(), "web", 4);
    // The agent serves the node of the first pod; a pod pinned to the other node is never its.
    let node = pods[0].2.as_str();
    let other = if node == "kwok-node-0" {
        "kwok-node-1"
    } else {
        "kwok-node-0"
    };
    let pinned = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: elsewhere, namespace: {ns}, labels: {{app: elsewhere}}}}\n\
         spec: {{nodeName: {other}, containers: [{{name: c, image: nginx}}]}}\n",
        ns = ns.name()
    );
    support::apply_yaml(cluster, &pinned);
    let elsewhere = bound_pods(cluster, ns.name(), "elsewhere", 1).remove(0);
    let agent = Agent::start(cluster, node);
    let client = agent.client();

    // The controller's part: it makes the Deployment's auto pool a moment after the first
    // ADD, which waits for it on a watch.
    let controller = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let app = berth::AppRef::apps_v1(berth::WorkloadKind::Deployment, ns.name(), "web");
        engine.reconcile(&app).await.unwrap();
    };
    let adds = async {
        let mut given = Vec::new();
        for (i, (pod, uid, on)) in pods.iter().enumerate() {
            let args = add_args(ns.name(), pod, uid, &format!("c{i}"));
            let answer = client.add(&args).await;
            if on != node {
                let e = answer.expect_err("a pod of another node is refused");
                assert_eq!(e.code(), 109, "{e}");
                assert!(e.to_string().contains("bound to node"), "{e}");
                continue;
            }
            let answer = answer.unwrap_or_else(|e| panic!("ADD of {pod}: {e}"));
            let ip = &answer.ips[0];
            assert!(ip.ip_pool.starts_with("auto4-web-eth0"), "{ip:?}");
            assert_eq!(ip.gateway, Some("10.50.0.1".parse().unwrap()));
            // The runtime retries an ADD: the same IP.
            let again = client.add(&args).await.unwrap();
            assert_eq!(again.ips[0].address, ip.address);
            let endpoint: SpiderEndpoint = engine
                .store()
                .get_as(Some(ns.name()), pod)
                .await
                .unwrap()
                .expect("the pod's SpiderEndpoint");
            let status = endpoint.status.expect("an endpoint status");
            assert_eq!(status.owner_controller_type, "Deployment");
            assert_eq!(status.owner_controller_name, "web");
            given.push((pod.clone(), uid.clone(), format!("c{i}"), ip.clone()));
        }
        given
    };
    let ((), given) = tokio::join!(controller, adds);
    assert!(!given.is_empty(), "no pod of web landed on {node}");
    println!(
        "{} of {} pods on {node} got IPs; the others, on {other}, were refused",
        given.len(),
        pods.len()
    );

    // The auto pool is the Deployment's: 4 replicas + 1.
    let pools: Vec<SpiderIPPool> = engine.store().list_as(None).await.unwrap();
    let auto: Vec<&SpiderIPPool> = pools
        .iter()
        .filter(|p| p.metadata.name.starts_with("auto4-web-eth0"))
        .collect();
    assert_eq!(auto.len(), 1, "{pools:?}");
    assert_eq!(auto[0].spec.ips.len(), 5);
    assert_eq!(auto[0].allocated_count(), given.len());

    // Pods the agent cannot serve: code 109, nothing written.
    let (pod, _, _, _) = &given[0];
    for (args, why) in [
        (add_args(ns.name(), "no-such-pod", "", "cx"), "no such pod"),
        (
            add_args(ns.name(), &elsewhere.0, &elsewhere.1, "cz"),
            "bound to node",
        ),
        (
            add_args(ns.name(), pod, "00000000-0000-4000-8000-000000000000", "cy"),
            "another pod of that name",
        ),
    ] {
        let e = client.add(&args).await.expect_err(why);
        assert_eq!(e.code(), 109, "{e}");
        assert!(e.to_string().contains(why), "{e}");
    }
    let auto_name = auto[0].metadata.name.clone();
    let held = || async {
        let pool: SpiderIPPool = engine
            .store()
            .get_as(None, &auto_name)
            .await
            .unwrap()
            .unwrap();
        pool.allocated_count()
    };
    assert_eq!(held().await, given.len());

    // A bare pod is its own application; a Job's pod is the Job's. Both pinned to the node,
    // both from a manual pool named in their annotation.
    engine
        .apply(AnyObject::Pool(SpiderIPPool::new(
            "agent-manual",
            "10.50.0.0/16".parse().unwrap(),
            berth::ips!["10.50.1.16-10.50.1.20"],
        )))
        .await
        .unwrap();
    let manual = r#"{ipam.spidernet.io/ippool: '{"ipv4":["agent-manual"]}'}"#;
    let others = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: solo, namespace: {ns}, labels: {{app: solo}}, \
         annotations: {manual}}}\nspec: {{nodeName: {node}, containers: [{{name: c, image: nginx}}]}}\n\
         ---\napiVersion: batch/v1\nkind: Job\nmetadata: {{name: batch, namespace: {ns}}}\n\
         spec:\n  template:\n    metadata: {{labels: {{app: batch}}, annotations: {manual}}}\n    \
         spec: {{nodeName: {node}, restartPolicy: Never, containers: [{{name: c, image: nginx}}]}}\n",
        ns = ns.name()
    );
    support::apply_yaml(cluster, &others);
    for (app, kind, name) in [("solo", "Pod", "solo"), ("batch", "Job", "batch")] {
        let (pod, uid, _) = bound_pods(cluster, ns.name(), app, 1).remove(0);
        let answer = client
            .add(&add_args(ns.name(), &pod, &uid, &format!("c-{app}")))
            .await
            .unwrap_or_else(|e| panic!("ADD of {pod}: {e}"));
        assert_eq!(answer.ips[0].ip_pool, "agent-manual");
        let endpoint: SpiderEndpoint = engine
            .store()
            .get_as(Some(ns.name()), &pod)
            .await
            .unwrap()
            .expect("the pod's SpiderEndpoint");
        let status = endpoint.status.unwrap();
        assert_eq!(
            (
                status.owner_controller_type.as_str(),
                status.owner_controller_name.as_str()
            ),
            (kind, name),
            "{pod}"
        );
    }

    // Bad input through the CNI path: a clear CNI error, and nothing written.
    engine
        .apply(AnyObject::Pool(SpiderIPPool::new(
            "agent-tiny",
            "10.50.0.0/16".parse().unwrap(),
            berth::ips!["10.50.1.14"],
        )))
        .await
        .unwrap();
    let bare = |name: &str, annotation: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, \
             labels: {{app: {name}}}, annotations: {{ipam.spidernet.io/ippool: '{annotation}'}}}}\n\
             spec: {{nodeName: {node}, containers: [{{name: c, image: nginx}}]}}\n---\n",
            ns = ns.name()
        )
    };
    let tiny = r#"{"ipv4":["agent-tiny"]}"#;
    support::apply_yaml(
        cluster,
        &[
            bare("malformed", "not json"),
            bare("unknown-pool", r#"{"ipv4":["no-such-pool"]}"#),
            bare("tiny-a", tiny),
            bare("tiny-b", tiny),
        ]
        .concat(),
    );
    let (pod, uid, _) = bound_pods(cluster, ns.name(), "tiny-a", 1).remove(0);
    client
        .add(&add_args(ns.name(), &pod, &uid, "c-tiny-a"))
        .await
        .unwrap_or_else(|e| panic!("ADD of {pod}: {e}"));
    for (name, code, says) in [
        ("malformed", 106, "ipam.spidernet.io/ippool"),
        ("unknown-pool", 101, "no-such-pool"),
        ("tiny-b", 100, "agent-tiny"),
    ] {
        let (pod, uid, _) = bound_pods(cluster, ns.name(), name, 1).remove(0);
        let e = client
            .add(&add_args(ns.name(), &pod, &uid, &format!("c-{name}")))
            .await
            .expect_err(name);
        assert_eq!(e.code(), code, "{name}: {e}");
        assert!(e.to_string().contains(says), "{name}: {e}");
        let endpoint: Option<SpiderEndpoint> =
            engine.store().get_as(Some(ns.name()), &pod).await.unwrap();
        assert!(endpoint.is_none(), "{name}: an endpoint was written");
    }
    let tiny_pool: SpiderIPPool = engine
        .store()
        .get_as(None, "agent-tiny")
        .await
        .unwrap()
        .unwrap();
    let holders: Vec<String> = tiny_pool.records().into_values().map(|r| r.pod).collect();
    assert_eq!(holders, [format!("{}/tiny-a", ns.name())]);

    // Its metrics count what it did: every ADD the engine answered (the retries too), the
    // three bad ones as failures (pods it refused never reach the engine).
    let page = support::http_get(&agent.metrics, "/metrics");
    let allocations = support::metric(&page, "berth_allocations_total");
    assert_eq!(allocations, 2 * given.len() as u64 + 3, "{page}");
    assert_eq!(support::metric(&page, "berth_allocation_failures_total"), 3);
    assert_eq!(
        support::metric(&page, "berth_allocation_duration_seconds_count"),
        allocations + 3
    );
    assert!(
        page.contains("berth_pool_allocated_ips{pool=\"agent-tiny\"} 1"),
        "{page}"
    );

    // DEL releases.
    for (pod, uid, container, _) in &given {
        client
            .del(&DelArgs {
                container_id: container.clone(),
                if_name: "eth0".into(),
                net_namespace: None,
                pod_namespace: ns.name().into(),
                pod_name: pod.clone(),
                pod_uid: uid.clone(),
            })
            .await
            .unwrap();
    }
    assert_eq!(held().await, 0);
}
