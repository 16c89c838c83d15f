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

use std::collections::BTreeMap;
use std::error::Error;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_cni::logging::{init_file_logging, level_filter};
use cni_plugin::ipam::ModeDefaults;
use kube_testbed::multus::{Multus, NAD_CRD, nad_yaml};
use kube_testbed::pki::Identity;
use kube_testbed::{Cluster, Options};
use serde_json::Value;

const SUBNETS: &str = include_str!("seed/subnets.yaml");
const DEPLOYMENT: &str = include_str!("seed/deployment.yaml");
const STATEFULSET: &str = include_str!("seed/statefulset.yaml");
const NAD_ENS192: &str = include_str!("seed/macvlan-conf-ens192.json");
const NAD_ENS224: &str = include_str!("seed/macvlan-conf-ens224.json");
const RBAC: &str = include_str!("../deploy/rbac.yaml");
const CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crds");

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(120);

type Res<T> = Result<T, Box<dyn Error>>;

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

/// The control plane and Berth's processes, stopped when dropped.
struct Lab {
    cluster: Cluster,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run() -> Res<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let _entered = runtime.enter();
    let dir = tempfile::Builder::new()
        .prefix("berth-cluster-")
        .tempdir()?;
    say("starting the control plane: etcd, kube-apiserver, controller-manager, scheduler, 2 nodes");
    let cluster = runtime.block_on(Cluster::start(Options::default().nodes(2)))?;
    println!("up in {:.1?}", cluster.started_in());
    let mut lab = Lab {
        cluster,
        dir,
        children: Vec::new(),
    };
    let result = story(&mut lab);
    if result.is_err() {
        eprintln!("{}", lab.cluster.log_tails(20));
        for (name, log) in lab.logs() {
            eprintln!("--- {name} (last lines)\n{log}");
        }
    }
    result
}

impl Lab {
    /// Runs kubectl with `args`; its stdout, or an error with its stderr.
    fn kubectl(&self, args: &[&str]) -> Res<String> {
        self.kubectl_in(args, None)
    }

    fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> Res<String> {
        let mut child = self
            .cluster
            .kubectl()
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(text.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `kubectl apply -f -` of `yaml`, printed as the article's `kubectl apply` prints.
    fn apply(&self, yaml: &str, extra: &[&str]) -> Res<()> {
        let mut args = vec!["apply", "-f", "-"];
        args.extend_from_slice(extra);
        print!("{}", self.kubectl_in(&args, Some(yaml))?);
        Ok(())
    }

    /// Prints and runs a kubectl command, as the article shows it.
    fn show(&self, args: &[&str]) -> Res<()> {
        say(&format!("kubectl {}", args.join(" ")));
        print!("{}", self.kubectl(args)?);
        Ok(())
    }

    /// `kubectl get ... -o json`.
    fn json(&self, args: &[&str]) -> Res<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl(&all)?)?)
    }

    /// Links this executable as `path` (a personality of it).
    fn link_self(&self, path: &Path) -> Res<()> {
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        std::os::unix::fs::symlink(std::env::current_exe()?, path)?;
        Ok(())
    }

    /// Starts `berth args...` as `user` (a service account of kube-system); waits until it
    /// prints a line starting with `ready`.
    fn start_berth(&mut self, log: &str, user: &str, args: &[&str], ready: &str) -> Res<()> {
        let identity = Identity::new(
            &format!("system:serviceaccount:kube-system:{user}"),
            Some("system:serviceaccounts"),
        );
        let kubeconfig = self.cluster.kubeconfig_for(&identity)?;
        let berth = self.dir.path().join("bin/berth");
        let stderr = std::fs::File::create(self.dir.path().join(log))?;
        let mut child = Command::new(&berth)
            .env_remove("KUBECONFIG")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .arg(args[0])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(&args[1..])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        self.children.push(child);
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    println!("{line}");
                    if line.starts_with(ready) {
                        break;
                    }
                }
                Err(_) => return Err(format!("berth {} did not say {ready:?}", args[0]).into()),
            }
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || while lines.recv().is_ok() {});
        Ok(())
    }

    /// The last lines of the processes' logs.
    fn logs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut files = vec![self.dir.path().join("controller.log")];
        for node in self.cluster.nodes() {
            files.push(self.dir.path().join(format!("agent-{}.log", node.name)));
            files.push(
                self.dir
                    .path()
                    .join(format!("nodes/{}/berth-ipam.log", node.name)),
            );
        }
        for file in files {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                out.push((file.display().to_string(), tail));
            }
        }
        out
    }
}

fn say(cmd: &str) {
    println!("\n~# {cmd}");
}

fn step(title: &str) {
    println!("\n==== {title}");
}

/// Fails the story with `message` unless `ok`.
fn check(ok: bool, message: impl FnOnce() -> String) -> Res<()> {
    if ok { Ok(()) } else { Err(message().into()) }
}

/// What the story knows of a pod: name, uid, node and every NIC's IPs.
#[derive(Clone, Debug)]
struct PodView {
    name: String,
    uid: String,
    node: String,
    nics: BTreeMap<String, Vec<String>>,
}

impl PodView {
    fn line(&self) -> String {
        let nics: Vec<String> = self
            .nics
            .iter()
            .flat_map(|(nic, ips)| ips.iter().map(move |ip| format!("{nic}={ip}")))
            .collect();
        format!("POD {} {}", self.name, nics.join(" "))
    }

    fn ip(&self, nic: &str) -> String {
        self.nics
            .get(nic)
            .and_then(|ips| ips.first())
            .cloned()
            .unwrap_or_default()
    }
}

/// The running pods labelled `app=<app>` with IPs on `eth0` and `net1`, once there are exactly
/// `n` of them and no other pod of the app is left (terminating ones included).
fn wait_pods(lab: &Lab, app: &str, n: usize) -> Res<Vec<PodView>> {
    let deadline = Instant::now() + STEP;
    loop {
        let list = lab.json(&["get", "pods", "-l", &format!("app={app}")])?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let views: Vec<PodView> = items.iter().filter_map(running_view).collect();
        if items.len() == n && views.len() == n {
            return Ok(views);
        }
        if Instant::now() > deadline {
            let stats = lab.cluster.kubelet_stats();
            return Err(format!(
                "{app}: {} pods, {} running with IPs, after {STEP:?} (wanted {n}); CNI errors: {:?}",
                items.len(),
                views.len(),
                stats.errors
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A pod that runs with IPs on both NICs, read from its network-status annotation.
fn running_view(pod: &Value) -> Option<PodView> {
    if !pod["metadata"]["deletionTimestamp"].is_null() || pod["status"]["phase"] != "Running" {
        return None;
    }
    let status: Value = serde_json::from_str(
        pod["metadata"]["annotations"][kube_testbed::kubelet::NETWORK_STATUS].as_str()?,
    )
    .ok()?;
    let mut nics = BTreeMap::new();
    for nic in status.as_array()? {
        let ips: Vec<String> = nic["ips"]
            .as_array()?
            .iter()
            .filter_map(|ip| ip.as_str().map(str::to_string))
            .collect();
        nics.insert(nic["interface"].as_str()?.to_string(), ips);
    }
    if ["eth0", "net1"]
        .iter()
        .any(|n| nics.get(*n).is_none_or(Vec::is_empty))
    {
        return None;
    }
    Some(PodView {
        name: pod["metadata"]["name"].as_str()?.to_string(),
        uid: pod["metadata"]["uid"].as_str()?.to_string(),
        node: pod["spec"]["nodeName"].as_str()?.to_string(),
        nics,
    })
}

/// The auto pools of application `app` (`Deployment`/`StatefulSet` name), by interface:
/// `(name, IPs)`.
fn auto_pools(lab: &Lab, app: &str) -> Res<BTreeMap<String, (String, Vec<Ipv4Addr>)>> {
    let list = lab.json(&["get", "spiderippools"])?;
    let mut out = BTreeMap::new();
    for pool in list["items"].as_array().cloned().unwrap_or_default() {
        let labels = &pool["metadata"]["labels"];
        if labels["ipam.spidernet.io/owner-application-name"] != app {
            continue;
        }
        let nic = labels["ipam.spidernet.io/interface"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ips = pool["spec"]["ips"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .map(expand)
            .collect::<Res<Vec<Vec<Ipv4Addr>>>>()?
            .concat();
        let name = pool["metadata"]["name"].as_str().unwrap_or_default();
        out.insert(nic, (name.to_string(), ips));
    }
    Ok(out)
}

/// The IPv4 addresses of `a.b.c.d` or `a.b.c.d-e.f.g.h`.
fn expand(range: &str) -> Res<Vec<Ipv4Addr>> {
    let (first, last) = range.split_once('-').unwrap_or((range, range));
    let (first, last): (Ipv4Addr, Ipv4Addr) = (first.trim().parse()?, last.trim().parse()?);
    Ok((u32::from(first)..=u32::from(last))
        .map(Ipv4Addr::from)
        .collect())
}

/// Waits until `app`'s two auto pools hold `size` IPs each; returns them.
fn wait_pool_size(
    lab: &Lab,
    app: &str,
    size: usize,
) -> Res<BTreeMap<String, (String, Vec<Ipv4Addr>)>> {
    let deadline = Instant::now() + STEP;
    loop {
        let pools = auto_pools(lab, app)?;
        if pools.len() == 2 && pools.values().all(|(_, ips)| ips.len() == size) {
            return Ok(pools);
        }
        if Instant::now() > deadline {
            return Err(format!("{app}'s auto pools are not {size} IPs each: {pools:?}").into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Each pod's IPs lie in its app's pool of that NIC, and no IP has two pods.
fn check_inside(pods: &[PodView], pools: &BTreeMap<String, (String, Vec<Ipv4Addr>)>) -> Res<()> {
    let mut seen = BTreeMap::new();
    for pod in pods {
        for nic in ["eth0", "net1"] {
            let ip: Ipv4Addr = pod.ip(nic).parse()?;
            let (pool, ips) = pools
                .get(nic)
                .ok_or_else(|| format!("no auto pool for {nic}"))?;
            check(ips.contains(&ip), || {
                format!("{} {nic}={ip} is outside pool {pool} {ips:?}", pod.name)
            })?;
            if let Some(other) = seen.insert(ip, pod.name.clone()) {
                return Err(format!("{ip} is held by both {other} and {}", pod.name).into());
            }
        }
    }
    Ok(())
}

/// The article's views, then one `POD` line per pod of `apps`.
fn report(lab: &Lab, apps: &[&str]) -> Res<()> {
    lab.show(&["get", "po", "-o", "wide"])?;
    lab.show(&["get", "spiderippool"])?;
    lab.show(&[
        "get",
        "spiderippool",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{\": \"}{.spec.ips}{\"\\n\"}{end}",
    ])?;
    lab.show(&["get", "spidersubnet"])?;
    println!();
    for app in apps {
        let list = lab.json(&["get", "pods", "-l", &format!("app={app}")])?;
        let mut views: Vec<PodView> = list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(running_view)
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
    print!("{}", lab.kubectl(&["apply", "-f", CRDS])?);
    lab.apply(NAD_CRD, &[])?;
    lab.apply(RBAC, &["-n", "kube-system"])?;
    for crd in [
        "spidersubnets.spiderpool.spidernet.io",
        "spiderippools.spiderpool.spidernet.io",
        "spiderendpoints.spiderpool.spidernet.io",
        "spiderreservedips.spiderpool.spidernet.io",
        "network-attachment-definitions.k8s.cni.cncf.io",
    ] {
        lab.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{crd}"),
        ])?;
    }
    let bin = lab.dir.path().join("bin/berth");
    lab.link_self(&bin)?;
    lab.start_berth(
        "controller.log",
        "berth-controller",
        &[
            "controller",
            "--lease",
            "kube-system/berth-controller",
            "--gc-period",
            "10s",
            "--webhook",
            "--listen",
            "127.0.0.1:0",
        ],
        "berth webhook: ready",
    )?;
    let nodes: Vec<String> = lab.cluster.nodes().iter().map(|n| n.name.clone()).collect();
    for node in &nodes {
        let node_dir = lab.dir.path().join("nodes").join(node);
        lab.link_self(&node_dir.join("spiderpool"))?;
        let socket = node_dir.join("agent.sock");
        lab.start_berth(
            &format!("agent-{node}.log"),
            "berth-agent",
            &[
                "agent",
                "--node",
                node,
                "--socket",
                socket.to_str().ok_or("a UTF-8 temporary dir")?,
            ],
            "berth agent: serving node",
        )?;
    }
    let nodes_dir = lab.dir.path().join("nodes");
    lab.cluster.set_pod_network(
        "default",
        Multus::new(lab.cluster.client()?, move |node, ipam| {
            nodes_dir.join(node).join(ipam)
        }),
    );

    step("the seed: subnets, NetworkAttachmentDefinitions, the two-NIC Deployment");
    say("kubectl apply -f subnets.yaml");
    lab.apply(SUBNETS, &[])?;
    say("kubectl apply -f macvlan-conf-ens192.yaml -f macvlan-conf-ens224.yaml");
    for (name, config) in [
        ("macvlan-conf-ens192", NAD_ENS192),
        ("macvlan-conf-ens224", NAD_ENS224),
    ] {
        lab.apply(&nad_yaml("kube-system", name, config), &[])?;
    }
    say("kubectl apply -f deployment.yaml");
    lab.apply(DEPLOYMENT, &[])?;
    let pods = wait_pods(lab, "test-app", 2)?;
    let pools = wait_pool_size(lab, "test-app", 3)?;
    check_inside(&pods, &pools)?;
    report(lab, &["test-app"])?;

    step("delete a pod: its replacement stays inside the pools");
    let victim = pods[0].clone();
    delete_pod(lab, &victim.name)?;
    let after = wait_pods(lab, "test-app", 2)?;
    check(after.iter().all(|p| p.name != victim.name), || {
        format!("{} is still there: {after:?}", victim.name)
    })?;
    let pools_after = wait_pool_size(lab, "test-app", 3)?;
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
    let pools = wait_pool_size(lab, "test-app", 4)?;
    let scaled = wait_pods(lab, "test-app", 3)?;
    check_inside(&scaled, &pools)?;
    report(lab, &["test-app"])?;

    step("a StatefulSet pod restarted keeps its IPs");
    say("kubectl apply -f statefulset.yaml");
    lab.apply(STATEFULSET, &[])?;
    let sts = wait_pods(lab, "test-sts", 2)?;
    let sts_pools = wait_pool_size(lab, "test-sts", 3)?;
    check_inside(&sts, &sts_pools)?;
    let before = sts
        .iter()
        .find(|p| p.name == "test-sts-0")
        .cloned()
        .ok_or("no test-sts-0")?;
    println!("{}  (before the restart)", before.line());
    delete_pod(lab, "test-sts-0")?;
    let again = wait_pods(lab, "test-sts", 2)?;
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
    let deadline = Instant::now() + STEP;
    loop {
        let pods = lab.json(&["get", "pods"])?["items"]
            .as_array()
            .map_or(0, Vec::len);
        let pools = auto_pools(lab, "test-app")?.len() + auto_pools(lab, "test-sts")?.len();
        let subnets = lab.json(&["get", "spidersubnets"])?;
        let allocated: Vec<(String, u64)> = subnets["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                (
                    s["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    s["status"]["allocatedIPCount"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        if pods == 0 && pools == 0 && allocated.iter().all(|(_, n)| *n == 0) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "after {STEP:?}: {pods} pods, {pools} auto pools, subnets' allocated IPs \
                 {allocated:?}\n{}",
                lab.kubectl(&["get", "spiderippools,spidersubnets", "-o", "yaml"])?
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    lab.show(&["get", "spiderippool"])?;
    lab.show(&["get", "spidersubnet"])?;
    let stats = lab.cluster.kubelet_stats();
    println!(
        "\nkubelet stand-ins: {} pods started, {} stopped, {} ADDs, {} DELs, {} CNI errors",
        stats.pods_started, stats.pods_stopped, stats.adds, stats.dels, stats.cni_errors
    );
    Ok(())
}
