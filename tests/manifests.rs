//! `deploy/` (kustomize) against a real API server: `kubectl apply --dry-run=server -k deploy/`
//! is accepted whole, so every object is valid as the API server sees it (schemas, RBAC rules,
//! the webhook configurations). The manifests are never applied for real here: the API server
//! would call a Service-based webhook on a ClusterIP, which a test control plane cannot reach.

use kube_testbed::{Options, SharedCluster};
use support::kubectl;

mod support;

// No nodes: nothing is scheduled by a dry run anyway.
static CLUSTER: SharedCluster = SharedCluster::new(|| Options::default().nodes(0));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_pass_a_server_dry_run() {
    let cluster = CLUSTER.get().await;
    let deploy = format!("{}/deploy", env!("CARGO_MANIFEST_DIR"));
    let out = kubectl(cluster, &["apply", "--dry-run=server", "-k", &deploy]);
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/spiderippools.spiderpool.spidernet.io",
        "customresourcedefinition.apiextensions.k8s.io/spidersubnets.spiderpool.spidernet.io",
        "serviceaccount/berth-agent",
        "serviceaccount/berth-controller",
        "role.rbac.authorization.k8s.io/berth-controller",
        "clusterrole.rbac.authorization.k8s.io/berth-agent",
        "clusterrole.rbac.authorization.k8s.io/berth-controller",
        "service/berth-webhook",
        "deployment.apps/berth-controller",
        "daemonset.apps/berth-agent",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/berth-webhook",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/berth-webhook",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{object} created"))),
            "{object} missing from the dry run:\n{out}"
        );
    }
    // Everything namespaced lands in kube-system, with the image set once.
    let rendered = kubectl(cluster, &["kustomize", &deploy]);
    assert!(!rendered.contains("namespace: default"), "{rendered}");
    assert_eq!(
        rendered
            .matches("image: ghcr.io/berth-ipam/berth:0.1.0")
            .count(),
        3,
        "the agent, its init container and the controller"
    );
    // Nothing was stored.
    let services = kubectl(
        cluster,
        &["get", "service", "-n", "kube-system", "-o", "name"],
    );
    assert!(!services.contains("berth-webhook"), "{services}");
}
