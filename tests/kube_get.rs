//! `berth get|describe --kubeconfig PATH` against a real API server (crates/kube-testbed):
//! the same objects, written by the same engine, print the same tables from a cluster as from
//! the embedded store; only the flag switches, never a `KUBECONFIG` in the environment.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use berth::core::engine::{AnyObject, Engine};
use berth::core::store::Store;
use berth::k8s::KubeStore;
use berth::sled::{OpenOptions, SledStore};
use berth::{SpiderIPPool, SpiderSubnet, ips};
use kube_testbed::{Options, SharedCluster};

mod support;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

static CLUSTER: SharedCluster = SharedCluster::new(Options::default);

fn berth(args: &[&str], env_kubeconfig: Option<&Path>) -> Output {
    let mut cmd = Command::new(BERTH);
    cmd.args(args).env_remove("KUBECONFIG");
    if let Some(k) = env_kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    cmd.output().expect("run berth")
}

fn stdout(out: Output) -> String {
    assert!(
        out.status.success(),
        "berth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The seed's subnets, a manual pool and one pod's allocation from it.
async fn populate<S: Store>(engine: &Engine<S>) {
    for (name, cidr, range, gw) in [
        (
            "subnet-test-ens192",
            "10.6.0.1/16",
            "10.6.168.171-10.6.168.180",
            "10.6.0.1",
        ),
        (
            "subnet-test-ens224",
            "10.7.0.1/16",
            "10.7.168.171-10.7.168.180",
            "10.7.0.1",
        ),
    ] {
        let s = SpiderSubnet::new(
            name,
            cidr.parse().unwrap(),
            berth::core::IpSet::parse_list([range]).unwrap(),
            Some(gw.parse().unwrap()),
        );
        engine.apply(AnyObject::Subnet(s)).await.unwrap();
    }
    let pool = SpiderIPPool::new(
        "firewall-pool",
        "10.6.0.0/16".parse().unwrap(),
        ips!["10.6.168.178-10.6.168.180"],
    );
    engine.apply(AnyObject::Pool(pool)).await.unwrap();
    engine
        .allocate(&support::one_nic("firewall-pool", "legacy-app-0"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_describe_read_a_cluster_only_when_the_flag_says_so() {
    let cluster = support::with_crds(&CLUSTER).await;
    let kubeconfig = cluster.kubeconfig().to_path_buf();
    let kc = kubeconfig.to_str().unwrap();

    // The same objects, through the same engine, on both stores.
    let cluster_engine = Engine::new(
        KubeStore::new(cluster.client().unwrap())
            .await
            .unwrap()
            .deadline(Duration::from_secs(8)),
    );
    populate(&cluster_engine).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let engine = Engine::new(SledStore::open(&data, OpenOptions::new()).unwrap());
        populate(&engine).await;
    }
    let empty = dir.path().join("empty");
    let d = data.to_str().unwrap();
    let e = empty.to_str().unwrap();

    for args in [
        &["get", "ss"][..],
        &["get", "sp", "-o", "wide"],
        &["get", "se", "-n", "default"],
        &["describe", "sp", "firewall-pool"],
    ] {
        let embedded = stdout(berth(&[&["--data-dir", d], args].concat(), None));
        // The flag after the command, and before it.
        let after = stdout(berth(
            &[&["--data-dir", e], args, &["--kubeconfig", kc]].concat(),
            None,
        ));
        let before = stdout(berth(
            &[&["--kubeconfig", kc, "--data-dir", e], args].concat(),
            None,
        ));
        assert_eq!(after, embedded, "berth {args:?} from the cluster");
        assert_eq!(before, embedded);
        assert!(embedded.contains("firewall-pool") || embedded.contains("subnet-test-ens192"));
    }
    // KUBECONFIG alone does not switch: the (empty) data dir is read.
    let from_env = berth(&["--data-dir", e, "get", "ss"], Some(&kubeconfig));
    assert!(
        !stdout(from_env).contains("subnet-test-ens192"),
        "KUBECONFIG in the environment switched berth to the cluster"
    );
    // Writes go through kubectl (and the admission webhook), not berth.
    let apply = berth(
        &[
            "--kubeconfig",
            kc,
            "apply",
            "-f",
            &format!("{}/examples/seed/subnets.yaml", env!("CARGO_MANIFEST_DIR")),
        ],
        None,
    );
    assert!(!apply.status.success());
    assert!(
        String::from_utf8_lossy(&apply.stderr).contains("--kubeconfig works with get, describe")
    );
    // A kubeconfig that is not there is named.
    let missing = berth(
        &["--kubeconfig", "/nonexistent/kubeconfig", "get", "ss"],
        None,
    );
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/kubeconfig"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}
