//! What the command line's cluster tests (`kube_get`, `webhook`) share: kubectl, the CRDs
//! installed the way a user installs them, and a one-NIC allocation request.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use berth::core::engine::AllocateRequest;
use berth::{NicRequest, PodContext};
use kube_testbed::{Cluster, SharedCluster};

/// Runs kubectl on `cluster` and returns its standard output; panics if it fails.
pub fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.kubectl().args(args).output().expect("run kubectl");
    assert!(out.status.success(), "kubectl {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `shared`, started, with `deploy/crds/` applied by kubectl (once per test binary) and
/// established.
pub async fn with_crds(shared: &'static SharedCluster) -> &'static Cluster {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cluster = shared.get().await;
    INSTALLED
        .get_or_init(|| async {
            let crds = format!("{}/deploy/crds", env!("CARGO_MANIFEST_DIR"));
            kubectl(cluster, &["apply", "-f", &crds]);
            kubectl(
                cluster,
                &[
                    "wait",
                    "--for=condition=established",
                    "--timeout=60s",
                    "crd",
                    "--all",
                ],
            );
        })
        .await;
    cluster
}

/// An ADD of one NIC, `eth0`, from `pool`, for the pod `default/<pod>` (uid `uid-<pod>`,
/// container `c-<pod>`).
pub fn one_nic(pool: &str, pod: &str) -> AllocateRequest {
    AllocateRequest {
        pod: PodContext {
            namespace: "default".into(),
            name: pod.into(),
            ..Default::default()
        },
        pod_uid: format!("uid-{pod}"),
        container_id: format!("c-{pod}"),
        nics: vec![NicRequest {
            interface: "eth0".into(),
            default_ipv4_pools: vec![pool.into()],
            ..Default::default()
        }],
        ..Default::default()
    }
}
