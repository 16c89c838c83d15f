//! Kubernetes mode under the things a cluster does to it, on the cluster lab of
//! `examples/cluster` (a real control plane, `berth controller --webhook` and one `berth
//! agent` per simulated node under their RBAC, the kubelet stand-ins calling the IPAM plugin
//! through the CNI protocol):
//!
//! - a rolling update with `+1`: the new pods get IPs while the old ones still hold theirs;
//! - an agent SIGKILLed in the middle of ADDs and restarted: the runtime's retried ADDs
//!   succeed, nothing is held twice, nothing leaks;
//! - a node deleted with its pods while its agent is down: GC frees exactly their IPs, and a
//!   replacement that reused one of them keeps it.
//!
//! Each test starts its own control plane (they delete nodes and kill agents); they run one
//! at a time.

#[path = "../examples/cluster/lab.rs"]
mod lab;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use lab::{DEPLOYMENT, Lab, PodView, Res, check, check_inside, wait_for};

/// One control plane at a time: 2 cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A lab with the controller, an agent per node, and the seed's networks.
fn lab(nodes: usize) -> Lab {
    let mut lab = Lab::start(&support::example("cluster"), nodes).expect("start the lab");
    lab.start_controller().expect("start the controller");
    for node in lab.nodes() {
        lab.start_agent(&node).expect("start an agent");
    }
    lab.apply_seed_networks()
        .expect("apply the seed's networks");
    lab
}

/// Runs `story`; on failure, panics with its error and the lab's logs.
fn run(lab: &mut Lab, story: impl FnOnce(&mut Lab) -> Res<()>) {
    if let Err(e) = story(lab) {
        panic!(
            "{e}\n{}\n{}\nkubelet errors: {:?}",
            lab.logs(),
            lab.cluster.log_tails(10),
            lab.cluster.kubelet_stats().errors
        );
    }
}

/// The seed's Deployment with `replicas`.
fn deployment(replicas: u32) -> String {
    DEPLOYMENT.replace("replicas: 2", &format!("replicas: {replicas}"))
}

/// Every IP the pods hold (both NICs), with the pod.
fn held_by(pods: &[PodView]) -> BTreeMap<IpAddr, String> {
    pods.iter()
        .flat_map(|p| {
            p.nics
                .values()
                .flatten()
                .map(move |ip| (ip.parse().expect("an IP"), format!("default/{}", p.name)))
        })
        .collect()
}

/// The pools record exactly the IPs the running pods hold, each for its pod: nothing is held
/// twice, and nothing by a pod that is gone.
fn pools_match_pods(lab: &Lab, pods: &[PodView]) -> Res<bool> {
    let recorded: BTreeMap<IpAddr, String> = lab
        .holders()?
        .into_iter()
        .map(|(ip, (pod, _))| (ip, pod))
        .collect();
    Ok(recorded == held_by(pods))
}

#[test]
fn a_rolling_update_takes_the_spare_ip_while_the_old_pods_hold_theirs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = lab(2);
    run(&mut lab, |lab| {
        lab.apply(DEPLOYMENT, &[])?;
        let old = lab.wait_pods("test-app", 2)?;
        let pools = lab.wait_pool_size("test-app", 3)?;
        check_inside(&old, &pools)?;
        let old_names: BTreeSet<String> = old.iter().map(|p| p.name.clone()).collect();
        let old_ips: BTreeSet<String> = old.iter().map(|p| p.ip("eth0")).collect();
        let spare: Vec<String> = pools["eth0"]
            .1
            .iter()
            .map(|ip| ip.to_string())
            .filter(|ip| !old_ips.contains(ip))
            .collect();
        check(spare.len() == 1, || format!("one spare IP: {spare:?}"))?;

        // A new template: maxSurge 1, maxUnavailable 0 for 2 replicas, so the first new pod
        // starts while both old ones run.
        lab.kubectl(&[
            "patch",
            "deployment",
            "test-app",
            "--type=merge",
            "-p",
            r#"{"spec":{"template":{"metadata":{"annotations":{"example.com/rev":"2"}}}}}"#,
        ])?;
        lab.kubectl(&["rollout", "status", "deployment/test-app", "--timeout=120s"])?;
        let new = lab.wait_pods("test-app", 2)?;
        check(new.iter().all(|p| !old_names.contains(&p.name)), || {
            format!("old pods are left: {new:?}")
        })?;
        let pools_after = lab.wait_pool_size("test-app", 3)?;
        check(pools_after == pools, || {
            format!("the pools changed: {pools:?} → {pools_after:?}")
        })?;
        check_inside(&new, &pools_after)?;
        check(new.iter().any(|p| p.ip("eth0") == spare[0]), || {
            format!("no new pod took the spare {}: {new:?}", spare[0])
        })?;
        let stats = lab.cluster.kubelet_stats();
        check(stats.cni_errors == 0, || {
            format!("CNI errors (an exhausted pool?): {:?}", stats.errors)
        })?;
        wait_for("the pools to record exactly the new pods", || {
            pools_match_pods(lab, &new)
        })
    });
}

/// The seed's Deployment at 2, then scaled to 8: returns, once the burst's first ADDs have
/// run, the first node (whose agent the caller then stops).
fn start_a_burst(lab: &Lab) -> Res<String> {
    lab.apply(&deployment(2), &[])?;
    lab.wait_pods("test-app", 2)?;
    lab.kubectl(&["scale", "deployment", "test-app", "--replicas", "8"])?;
    wait_for("ADDs to start", || Ok(lab.cluster.kubelet_stats().adds > 4))?;
    Ok(lab.nodes()[0].clone())
}

#[test]
fn an_agent_killed_in_the_middle_of_adds_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = lab(2);
    run(&mut lab, |lab| {
        // Crash the agent under the ADDs of the burst.
        let node = start_a_burst(lab)?;
        lab.kill(&format!("agent-{node}"));
        std::thread::sleep(Duration::from_millis(500));
        lab.start_agent(&node)?;
        let pods = lab.wait_pods("test-app", 8)?;
        let pools = lab.wait_pool_size("test-app", 9)?;
        check_inside(&pods, &pools)?;
        wait_for("the pools to record exactly the running pods", || {
            pools_match_pods(lab, &pods)
        })
    });
}

#[test]
fn gc_frees_exactly_the_ips_of_a_deleted_node_whose_agent_is_down() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = lab(2);
    run(&mut lab, |lab| {
        lab.apply(&deployment(4), &[])?;
        let pods = lab.wait_pods("test-app", 4)?;
        let nodes = lab.nodes();
        let gone_node = nodes[1].clone();
        let on_it: Vec<&PodView> = pods.iter().filter(|p| p.node == gone_node).collect();
        if on_it.is_empty() {
            // The scheduler put all four on one node; the story needs one on each.
            return Err(format!("no pod on {gone_node}: {pods:?}").into());
        }
        // The node dies: its agent first, then the node object (as a cloud controller
        // deletes a vanished machine). Kubernetes' pod GC deletes its pods; no DEL reaches
        // an agent, so only Berth's GC can free their IPs.
        lab.kill(&format!("agent-{gone_node}"));
        lab.kubectl(&["delete", "node", &gone_node])?;
        // Kubernetes' pod GC waits 40 s before it deletes the pods of a missing node.
        let mut after = Vec::new();
        wait_for("the deleted node's pods replaced", || {
            let list = lab.json(&["get", "pods", "-l", "app=test-app"])?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let running: Vec<PodView> = items.iter().filter_map(PodView::running).collect();
            let done = items.len() == 4
                && running.len() == 4
                && running.iter().all(|p| p.node != gone_node);
            if done {
                after = running;
            }
            Ok(done)
        })?;
        let pools = lab.wait_pool_size("test-app", 5)?;
        check_inside(&after, &pools)?;
        // The pool has 5 IPs for 4 pods and the dead pods held 2 per NIC, so at least one
        // replacement reused an IP GC freed.
        let dead: BTreeSet<String> = on_it.iter().map(|p| p.ip("eth0")).collect();
        check(after.iter().any(|p| dead.contains(&p.ip("eth0"))), || {
            format!("no replacement reused an IP of {dead:?}: {after:?}")
        })?;
        wait_for("the pools to record exactly the running pods", || {
            pools_match_pods(lab, &after)
        })?;
        // Another GC period (10 s) later, the reused IPs are still with their new pods.
        std::thread::sleep(Duration::from_secs(12));
        check(pools_match_pods(lab, &after)?, || {
            format!("GC took IPs from live pods: {:?}", lab.holders())
        })?;
        Ok(())
    });
}

/// The seed's two-NIC pod template for application `app`, its pools `ip_number`.
fn template(app: &str, ip_number: &str, indent: usize) -> String {
    let text = format!(
        r#"metadata:
  labels:
    app: {app}
  annotations:
    ipam.spidernet.io/subnets: '[{{"interface": "eth0", "ipv4": ["subnet-test-ens192"]}}, {{"interface": "net1", "ipv4": ["subnet-test-ens224"]}}]'
    ipam.spidernet.io/ippool-ip-number: '{ip_number}'
    v1.multus-cni.io/default-network: kube-system/macvlan-conf-ens192
    k8s.v1.cni.cncf.io/networks: kube-system/macvlan-conf-ens224
spec:
  restartPolicy: {restart}
  containers:
  - name: main
    image: busybox
"#,
        restart = if app.starts_with("job") || app.starts_with("cron") {
            "Never"
        } else {
            "Always"
        }
    );
    let pad = " ".repeat(indent);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

#[test]
fn replicasets_daemonsets_jobs_and_cronjobs_get_auto_pools_from_the_controller() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = lab(2);
    run(&mut lab, |lab| {
        let yaml = format!(
            r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: rs-app
spec:
  replicas: 2
  selector:
    matchLabels:
      app: rs-app
  template:
{rs}---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: ds-app
spec:
  selector:
    matchLabels:
      app: ds-app
  template:
{ds}---
apiVersion: batch/v1
kind: Job
metadata:
  name: job-app
spec:
  parallelism: 2
  completions: 2
  template:
{job}---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: cron-app
spec:
  schedule: "0 0 1 1 *"
  jobTemplate:
    spec:
      template:
{cron}"#,
            rs = template("rs-app", "+0", 4),
            ds = template("ds-app", "+1", 4),
            job = template("job-app", "+0", 4),
            cron = template("cron-app", "+0", 8),
        );
        lab.apply(&yaml, &[])?;
        // Pools sized from each kind's own count: replicas, the nodes a DaemonSet runs on
        // (2, plus 1), parallelism; a CronJob's pools exist before its first Job.
        for (app, pods, size) in [("rs-app", 2, 2), ("ds-app", 2, 3), ("job-app", 2, 2)] {
            let pools = lab.wait_pool_size(app, size)?;
            let running = lab.wait_pods(app, pods)?;
            check_inside(&running, &pools)?;
        }
        lab.wait_pool_size("cron-app", 1)?;
        let stats = lab.cluster.kubelet_stats();
        check(stats.cni_errors == 0, || {
            format!("CNI errors: {:?}", stats.errors)
        })?;

        lab.kubectl(&[
            "delete",
            "replicaset/rs-app",
            "daemonset/ds-app",
            "job/job-app",
            "cronjob/cron-app",
        ])?;
        wait_for("every auto pool reclaimed", || {
            let mut left = 0;
            for app in ["rs-app", "ds-app", "job-app", "cron-app"] {
                left += lab.auto_pools(app)?.len();
            }
            Ok(left == 0)
        })
    });
}

/// A DaemonSet rollout of the agent: SIGTERM in the middle of a burst of ADDs, the old agent
/// finishes what it took, the new one starts; the plugins wait for it, so no ADD fails.
#[test]
fn an_agent_rollout_loses_no_add() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = lab(2);
    run(&mut lab, |lab| {
        let node = start_a_burst(lab)?;
        lab.terminate(&format!("agent-{node}"))?;
        lab.start_agent(&node)?;
        let pods = lab.wait_pods("test-app", 8)?;
        let stats = lab.cluster.kubelet_stats();
        check(stats.cni_errors == 0, || {
            format!("an ADD failed across the rollout: {:?}", stats.errors)
        })?;
        wait_for("the pools to record exactly the running pods", || {
            pools_match_pods(lab, &pods)
        })
    });
}

/// Bad input through the plugin binary in Kubernetes mode: the agent's refusal reaches the
/// runtime as a CNI error on stdout (code and message intact), and nothing is written.
#[test]
fn the_plugin_passes_the_agents_refusals_on_as_cni_errors() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = lab(2);
    run(&mut lab, |lab| {
        let nodes = lab.nodes();
        // In namespace `bad` the stand-ins run no IPAM: only this test's calls do.
        lab.kubectl(&["create", "namespace", "bad"])?;
        let pod = |name: &str, node: &str, annotation: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: bad, \
                 annotations: {{ipam.spidernet.io/subnets: '{annotation}'}}}}\n\
                 spec: {{nodeName: {node}, containers: [{{name: c, image: busybox}}]}}\n---\n"
            )
        };
        lab.apply(
            &[
                pod(
                    "elsewhere",
                    &nodes[1],
                    r#"[{"interface":"eth0","ipv4":["subnet-test-ens192"]}]"#,
                ),
                pod(
                    "unknown-subnet",
                    &nodes[0],
                    r#"[{"interface":"eth0","ipv4":["no-such-subnet"]}]"#,
                ),
                pod("malformed", &nodes[0], "not json"),
            ]
            .concat(),
            &[],
        )?;
        for (name, code, says) in [
            ("missing", 109, "no such pod"),
            ("elsewhere", 109, "bound to node"),
            ("malformed", 106, "ipam.spidernet.io/subnets"),
            ("unknown-subnet", 101, "no-such-subnet"),
        ] {
            let (ok, answer) = lab.cni(&nodes[0], "ADD", "bad", name, &format!("c-{name}"))?;
            check(!ok, || format!("{name}: ADD succeeded: {answer}"))?;
            check(answer["code"] == code, || format!("{name}: {answer}"))?;
            let text = format!("{} {}", answer["msg"], answer["details"]);
            check(text.contains(says), || format!("{name}: {answer}"))?;
        }
        check(lab.holders()?.is_empty(), || {
            format!("a refused ADD holds an IP: {:?}", lab.holders())
        })?;
        let endpoints = lab.json(&["get", "spiderendpoints", "-n", "bad"])?;
        check(
            endpoints["items"].as_array().is_none_or(Vec::is_empty),
            || format!("a refused ADD wrote an endpoint: {endpoints}"),
        )
    });
}
