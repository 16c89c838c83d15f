//! The seed on a real control plane: the article's Spiderpool story, with Berth in Kubernetes
//! mode on the test control plane of `crates/kube-testbed`.
//!
//! ```text
//! cargo run --example cluster
//! ```
//!
//! It starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and two simulated
//! nodes (kwok), each with the kubelet stand-in; installs Berth's CRDs, a minimal
//! NetworkAttachmentDefinition CRD and Berth's RBAC (`deploy/rbac.yaml`); and starts, as local
//! processes under their own service-account identities, `berth controller --webhook` and one
//! `berth agent --node` per node. Then, through the API server only:
//!
//! 1. the seed's two SpiderSubnets, its two NetworkAttachmentDefinitions (`macvlan-conf-ens192`
//!    and `macvlan-conf-ens224`, their configs verbatim) and its two-NIC Deployment `test-app`
//!    are applied; the controller-manager makes the pods, the scheduler binds them, and each
//!    node's stand-in reads their Multus annotations and calls the IPAM plugin of each NIC
//!    (`eth0`, `net1`) through the CNI protocol, one process per call, with `K8S_POD_*` args;
//! 2. a pod is deleted: its replacement gets IPs inside the same auto pools;
//! 3. the Deployment is scaled to 3: the pools grow to 4 IPs (`+1`);
//! 4. a StatefulSet pod is deleted and comes back with the same IPs;
//! 5. both workloads are deleted: their pools are reclaimed and every IP is back in its subnet.
//!
//! After each step it prints what the article prints (`kubectl get po -o wide`, `spiderippool`,
//! the pools' `.spec.ips`, `spidersubnet`) and one line per pod, `POD <name> <nic>=<ip> ...`,
//! and checks what the step promises; a broken promise ends it with exit code 1.
//!
//! The example is its own `berth` and its own IPAM plugin: it links itself into a temporary
//! dir as `bin/berth` and, for each node, as `nodes/<node>/spiderpool` (the seed's NADs say
//! `"ipam": {"type": "spiderpool"}`; that dir is the node's `/opt/cni/bin`). Started under the
//! name `spiderpool`, it runs `berth-ipam` with the default agent socket of its node,
//! `nodes/<node>/agent.sock`, where that node's agent listens: two simulated nodes share one
//! machine, and each plugin must reach its own node's agent.
//!
//! Needs Go 1.26 and the Go module proxy the first time (the control plane is built by
//! `scripts/kube-testbin`); no root, no network namespaces. Everything listens on 127.0.0.1
//! and lives in a temporary dir, removed at the end.

mod lab;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use berth_cni::logging::{init_file_logging, level_filter};
use cni_plugin::ipam::ModeDefaults;
use lab::{DEPLOYMENT, Lab, PodView, Res, STATEFULSET, check, check_inside, wait_for};

fn main() -> ExitCode {
    let name = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(OsStr::to_os_string))
        .unwrap_or_default();
    match name.to_str() {
        Some("berth") => berth::cli::main(),
        Some("spiderpool") => plugin_ipam(),
        _ => match run() {
            Ok(()) => {
                println!("\ncluster: every step held");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("\ncluster failed: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `spiderpool` in `nodes/<node>/`: berth-ipam whose default socket is that node's agent's.
fn plugin_ipam() -> ExitCode {
    let exe = PathBuf::from(std::env::args_os().next().unwrap_or_default());
    let node_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    init_file_logging(&node_dir.join("berth-ipam.log"), level_filter(Some("info")));
    berth_cni::run_process(&cni_plugin::BerthIpam::with_defaults(ModeDefaults {
        agent_socket: node_dir.join("agent.sock"),
        data_dir: node_dir.join("data"),
    }))
}

fn run() -> Res<()> {
    say("starting the control plane: etcd, kube-apiserver, controller-manager, scheduler, 2 nodes");
    let mut lab = Lab::start(&std::env::current_exe()?, 2)?;
    println!("up in {:.1?}", lab.cluster.started_in());
    let result = story(&mut lab);
    if result.is_err() {
        eprintln!("{}", lab.cluster.log_tails(20));
        eprintln!("{}", lab.logs());
    }
    result
}

fn say(cmd: &str) {
    println!("\n~# {cmd}");
}

fn step(title: &str) {
    println!("\n==== {title}");
}

/// Prints and runs a kubectl command, as the article shows it.
fn show(lab: &Lab, args: &[&str]) -> Res<()> {
    say(&format!("kubectl {}", args.join(" ")));
    print!("{}", lab.kubectl(args)?);
    Ok(())
}

/// The article's views, then one `POD` line per pod of `apps`.
fn report(lab: &Lab, apps: &[&str]) -> Res<()> {
    show(lab, &["get", "po", "-o", "wide"])?;
    show(lab, &["get", "spiderippool"])?;
    show(
        lab,
        &[
            "get",
            "spiderippool",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\": \"}{.spec.ips}{\"\\n\"}{end}",
        ],
    )?;
    show(lab, &["get", "spidersubnet"])?;
    println!();
    for app in apps {
        let list = lab.json(&["get", "pods", "-l", &format!("app={app}")])?;
        let mut views: Vec<PodView> = list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(PodView::running)
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        for view in views {
            println!("{}  (node {})", view.line(), view.node);
        }
    }
    Ok(())
}

/// Deletes pod `name` and waits until it is gone (its DELs done).
fn delete_pod(lab: &Lab, name: &str) -> Res<()> {
    say(&format!("kubectl delete pod {name}"));
    print!(
        "{}",
        lab.kubectl(&["delete", "pod", name, "--timeout=120s"])?
    );
    Ok(())
}

fn story(lab: &mut Lab) -> Res<()> {
    step("install: CRDs, the NetworkAttachmentDefinition CRD, RBAC; then controller and agents");
    lab.start_controller()?;
    for node in lab.nodes() {
        lab.start_agent(&node)?;
    }

    step("the seed: subnets, NetworkAttachmentDefinitions, the two-NIC Deployment");
    say("kubectl apply -f subnets.yaml -f macvlan-conf-ens192.yaml -f macvlan-conf-ens224.yaml");
    lab.apply_seed_networks()?;
    say("kubectl apply -f deployment.yaml");
    print!("{}", lab.apply(DEPLOYMENT, &[])?);
    let pods = lab.wait_pods("test-app", 2)?;
    let pools = lab.wait_pool_size("test-app", 3)?;
    check_inside(&pods, &pools)?;
    report(lab, &["test-app"])?;

    step("delete a pod: its replacement stays inside the pools");
    let victim = pods[0].clone();
    delete_pod(lab, &victim.name)?;
    let after = lab.wait_pods("test-app", 2)?;
    check(after.iter().all(|p| p.name != victim.name), || {
        format!("{} is still there: {after:?}", victim.name)
    })?;
    let pools_after = lab.wait_pool_size("test-app", 3)?;
    check(pools_after == pools, || {
        format!("the pools changed: {pools:?} → {pools_after:?}")
    })?;
    check_inside(&after, &pools_after)?;
    report(lab, &["test-app"])?;

    step("scale to 3: the pools grow to 4 IPs");
    say("kubectl scale deployment test-app --replicas 3");
    print!(
        "{}",
        lab.kubectl(&["scale", "deployment", "test-app", "--replicas", "3"])?
    );
    let pools = lab.wait_pool_size("test-app", 4)?;
    let scaled = lab.wait_pods("test-app", 3)?;
    check_inside(&scaled, &pools)?;
    report(lab, &["test-app"])?;

    step("a StatefulSet pod restarted keeps its IPs");
    say("kubectl apply -f statefulset.yaml");
    print!("{}", lab.apply(STATEFULSET, &[])?);
    let sts = lab.wait_pods("test-sts", 2)?;
    let sts_pools = lab.wait_pool_size("test-sts", 3)?;
    check_inside(&sts, &sts_pools)?;
    let before = sts
        .iter()
        .find(|p| p.name == "test-sts-0")
        .cloned()
        .ok_or("no test-sts-0")?;
    println!("{}  (before the restart)", before.line());
    delete_pod(lab, "test-sts-0")?;
    let again = lab.wait_pods("test-sts", 2)?;
    let restarted = again
        .iter()
        .find(|p| p.name == "test-sts-0")
        .ok_or("no test-sts-0 after the restart")?;
    check(restarted.uid != before.uid, || {
        "test-sts-0 was not replaced".into()
    })?;
    check(restarted.nics == before.nics, || {
        format!(
            "test-sts-0 had {} and came back with {}",
            before.line(),
            restarted.line()
        )
    })?;
    report(lab, &["test-app", "test-sts"])?;

    step("delete both workloads: their pools are reclaimed, every IP back in its subnet");
    say("kubectl delete deployment test-app; kubectl delete statefulset test-sts");
    print!(
        "{}",
        lab.kubectl(&["delete", "deployment/test-app", "statefulset/test-sts"])?
    );
    let mut left = String::new();
    let all_back = wait_for("the pools reclaimed and every IP back", || {
        let pods = lab.json(&["get", "pods"])?["items"]
            .as_array()
            .map_or(0, Vec::len);
        let pools = lab.auto_pools("test-app")?.len() + lab.auto_pools("test-sts")?.len();
        let subnets = lab.json(&["get", "spidersubnets"])?;
        let allocated: Vec<u64> = subnets["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| s["status"]["allocatedIPCount"].as_u64().unwrap_or(0))
            .collect();
        left = format!("{pods} pods, {pools} auto pools, subnets' allocated IPs {allocated:?}");
        Ok(pods == 0 && pools == 0 && allocated.iter().all(|n| *n == 0))
    });
    if let Err(e) = all_back {
        return Err(format!(
            "{e}: {left}\n{}",
            lab.kubectl(&["get", "spiderippools,spidersubnets", "-o", "yaml"])?
        )
        .into());
    }
    show(lab, &["get", "spiderippool"])?;
    show(lab, &["get", "spidersubnet"])?;
    let stats = lab.cluster.kubelet_stats();
    println!(
        "\nkubelet stand-ins: {} pods started, {} stopped, {} ADDs, {} DELs, {} CNI errors",
        stats.pods_started, stats.pods_stopped, stats.adds, stats.dels, stats.cni_errors
    );
    Ok(())
}
