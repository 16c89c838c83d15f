//! 1,000 pods on 10 simulated nodes: Berth against the floor and whereabouts, side by side on
//! one real control plane (issue 14).
//!
//! ```text
//! cargo bench -p berth-benches --bench cluster
//! BERTH_BENCH_PODS=50 BERTH_BENCH_NODES=2 cargo bench -p berth-benches --bench cluster
//! BERTH_BENCH_CONTENDERS=floor,berth cargo bench -p berth-benches --bench cluster
//! ```
//!
//! The cluster lab of `examples/cluster` (its `lab.rs`) runs the control plane with the
//! kubelet stand-in on each node, at most 4 pods at once per node, each NIC's IPAM plugin one
//! process per ADD or DEL with `K8S_POD_*` in `CNI_ARGS`. `berth controller --webhook` and one
//! `berth agent` per node run under their RBAC, built in release mode. Each contender gets
//! namespaces of its own, then Deployments of 10 replicas (two NICs per pod, as in the seed),
//! one after the other:
//!
//! - `floor`: no IPAM, the stand-in runs `/bin/true`: what the control plane itself costs;
//! - `berth`: an auto pool per Deployment and NIC (the seed's way);
//! - `berth-shared`: one pool per NIC for every pod, the shape of whereabouts' single range;
//! - `whereabouts`: v0.9.2 from its Go module (`scripts/whereabouts-bin`), one range per NIC.
//!
//! For each: the time from the first Deployment's creation until every pod runs with its IPs
//! and the time to delete them all, ADD latency p50/p99 (every NIC's ADD, as the stand-in
//! timed it), the API server requests of the IPAM's own users from the audit log (writes per
//! pod, by verb and resource, 409 conflicts), CNI errors, IPs held twice, IPs left held after
//! the deletion, and the CPU seconds of Berth's daemons. The table goes to stdout, the numbers
//! to `target/bench/cluster.json`. Each contender gets at most 20 minutes
//! (`BERTH_BENCH_LIMIT_SECS`).
//!
//! Under `cargo test` (no `--bench` argument, as CI runs every target) it is the CI-sized
//! check instead: 50 pods on 2 nodes, the floor and Berth, asserting correctness only.
//!
//! `berth-faults` is the fault run: Berth as `berth`, but when a quarter of the pods run,
//! two agents and the controller are SIGKILLed and started again, and at half the API
//! server is killed and started again. One GC period after every pod runs, the pools, the
//! endpoints and the pods are audited against each other.
//!
//! The picture, pods with IPs over time per contender, goes to `target/bench/cluster.png`
//! (it needs a TrueType font, such as Debian's `fonts-dejavu-core`).
//!
//! CPU: `daemon s` is what Berth's agents and controller used during the contender's run
//! (whereabouts has no daemon), `plugin ms` the CPU per pod of the IPAM plugin processes of
//! the ADD phase (every NIC), from `getrusage(RUSAGE_CHILDREN)`: the floor's is `/bin/true`.

#[path = "../examples/cluster/lab.rs"]
mod lab;

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kube_testbed::Options;
use kube_testbed::multus::nad_yaml;
use kube_testbed::pki::Identity;
use lab::{Lab, Res};
use serde_json::{Value, json};

/// The users whose requests are the IPAM's own, per contender.
const BERTH_USERS: [&str; 2] = [
    "system:serviceaccount:kube-system:berth-agent",
    "system:serviceaccount:kube-system:berth-controller",
];
const WHEREABOUTS_USER: &str = "whereabouts";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one contender did.
#[derive(Debug, Default, serde::Serialize)]
struct Outcome {
    name: String,
    pods: usize,
    pods_with_ips: usize,
    seconds_to_all_ips: Option<f64>,
    seconds_to_delete: Option<f64>,
    add_p50_ms: Option<f64>,
    add_p99_ms: Option<f64>,
    add_calls: usize,
    api_writes_per_pod: Option<f64>,
    /// Of those, the writes while the pods were made (ADD) and while they were deleted (DEL).
    api_writes_per_pod_add: Option<f64>,
    api_writes_per_pod_del: Option<f64>,
    api_requests: BTreeMap<String, u64>,
    conflicts: u64,
    cni_errors: u64,
    duplicates: usize,
    leaks: usize,
    daemon_cpu_seconds: Option<f64>,
    /// CPU seconds of the plugin processes of the ADD phase (user + system), per pod: the
    /// children the bench waited for from the first Deployment until every pod ran, which
    /// are the stand-ins' plugin calls only. Not for the fault run, whose killed processes
    /// are children too.
    plugin_cpu_ms_per_pod: Option<f64>,
    /// The last CNI errors the stand-ins saw (at most 10).
    errors: Vec<String>,
    /// Pods with their IPs over time: (seconds since the first Deployment, pods).
    curve: Vec<(f64, usize)>,
    /// The faults injected, with when (the fault run).
    faults: Vec<String>,
    /// What the audit of pools, endpoints and pods found wrong (the fault run).
    audit: Vec<String>,
    note: String,
}

/// The multi-call executable of `examples/cluster`, built in release mode (in the debug
/// profile for the CI-sized check).
fn example(release: bool) -> Res<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = vec!["build", "--example", "cluster", "--message-format", "json"];
    if release {
        args.push("--release");
    }
    let out = Command::new(cargo)
        .args(&args)
        .current_dir(&root)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err("cargo build --release --example cluster failed".into());
    }
    String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["target"]["name"] == "cluster")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo named no executable for the example".into())
}

/// `scripts/whereabouts-bin`: the plugin and its CRD directory.
fn whereabouts() -> Res<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/whereabouts-bin"))
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err("scripts/whereabouts-bin failed".into());
    }
    let text = String::from_utf8(out.stdout)?;
    let mut lines = text.lines();
    match (lines.next(), lines.next()) {
        (Some(bin), Some(crds)) => Ok((bin.into(), crds.into())),
        _ => Err(format!("scripts/whereabouts-bin printed {text:?}").into()),
    }
}

/// CPU seconds (user + system) of the children this process has waited for so far.
fn children_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn daemons_cpu(lab: &Lab) -> f64 {
    lab.pids().values().filter_map(|p| cpu_seconds(*p)).sum()
}

fn percentile(sorted: &[Duration], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i].as_secs_f64() * 1000.0)
}

/// The Deployments of a contender: `pods` pods in Deployments of up to 10 replicas, their pod
/// template carrying `annotations`.
fn deployments(namespace: &str, pods: usize, annotations: &Value) -> String {
    let mut out = String::new();
    let mut left = pods;
    let mut i = 0;
    while left > 0 {
        let replicas = left.min(10);
        left -= replicas;
        let name = format!("app-{i:03}");
        i += 1;
        let doc = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name, "bench": namespace}, "annotations": annotations},
                    "spec": {"containers": [{"name": "main", "image": "nginx"}]},
                },
            },
        });
        out.push_str(&serde_json::to_string(&doc).expect("JSON"));
        out.push_str("\n---\n");
    }
    out
}

/// The contender's pods' IPs by pod, from their network-status annotation.
fn pod_ips(lab: &Lab, namespace: &str) -> Res<BTreeMap<String, Vec<String>>> {
    let list = lab.json(&["get", "pods", "-n", namespace])?;
    let mut out = BTreeMap::new();
    for pod in list["items"].as_array().cloned().unwrap_or_default() {
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if pod["status"]["phase"] == "Running" {
            out.insert(name, pod_status_ips(&pod));
        }
    }
    Ok(out)
}

/// A pod's IPs on every NIC, from its network-status annotation.
fn pod_status_ips(pod: &Value) -> Vec<String> {
    let status = pod["metadata"]["annotations"][kube_testbed::kubelet::NETWORK_STATUS]
        .as_str()
        .and_then(|s| serde_json::from_str::<Value>(s).ok());
    status
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|nic| nic["ips"].as_array().cloned().unwrap_or_default())
        .filter_map(|ip| ip.as_str().map(str::to_string))
        .collect()
}

/// The audit log's length now: where the next requests' lines start.
fn audit_offset(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// What the audit log says the `users` asked of the API server between bytes `from` and `to`:
/// writes, requests by verb and resource, 409 conflicts.
fn audit(
    path: &Path,
    from: u64,
    to: u64,
    users: &[&str],
) -> Res<(u64, BTreeMap<String, u64>, u64)> {
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(from))?;
    let (mut writes, mut by, mut conflicts) = (0, BTreeMap::new(), 0);
    for line in std::io::BufReader::new(file.take(to.saturating_sub(from))).lines() {
        let Ok(event) = serde_json::from_str::<Value>(&line?) else {
            continue;
        };
        if event["stage"] != "ResponseComplete" {
            continue;
        }
        let user = event["user"]["username"].as_str().unwrap_or_default();
        if !users.contains(&user) {
            continue;
        }
        let verb = event["verb"].as_str().unwrap_or_default();
        let resource = event["objectRef"]["resource"].as_str().unwrap_or_default();
        let sub = event["objectRef"]["subresource"]
            .as_str()
            .unwrap_or_default();
        let resource = if sub.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{sub}")
        };
        *by.entry(format!("{verb} {resource}")).or_insert(0) += 1;
        if matches!(verb, "create" | "update" | "patch" | "delete") {
            writes += 1;
        }
        if event["responseStatus"]["code"] == 409 {
            conflicts += 1;
        }
    }
    Ok((writes, by, conflicts))
}

/// A contender: its name, namespace, pod annotations and the API users that are its own.
struct Contender<'a> {
    name: &'a str,
    namespace: String,
    annotations: Value,
    users: Vec<&'a str>,
    /// The pods get their NICs from Multus annotations (all but the floor).
    multus: bool,
}

/// The faults of the fault run, each injected once when this share of the pods runs.
const AGENTS_AND_CONTROLLER_KILLED_AT: f64 = 0.25;
const APISERVER_RESTARTED_AT: f64 = 0.5;

/// One contender's run. With `faults`, two agents and the controller are SIGKILLed and
/// started again during the burst, then the API server is restarted; once every pod runs,
/// and one GC period later, pools, endpoints and pods are audited against each other.
fn run(
    lab: &mut Lab,
    contender: &Contender<'_>,
    pods: usize,
    audit_log: &Path,
    limit: Duration,
    faults: bool,
) -> Res<Outcome> {
    let (name, namespace) = (contender.name, contender.namespace.as_str());
    let (annotations, users) = (&contender.annotations, &contender.users);
    let mut outcome = Outcome {
        name: name.into(),
        pods,
        ..Default::default()
    };
    lab.kubectl(&["create", "namespace", namespace])?;
    if contender.multus {
        lab.multus(namespace)?;
    }
    let base = lab.cluster.kubelet_stats();
    let audit_from = audit_offset(audit_log);
    let cpu_before = daemons_cpu(lab);
    let started = Instant::now();
    lab.apply(&deployments(namespace, pods, annotations), &[])?;
    let children_before = children_cpu();
    let mut all_in = None;
    let mut injected = 0;
    let mut cpu_of_killed = 0.0;
    while started.elapsed() < limit {
        let now = lab.cluster.kubelet_stats();
        let running = (now.pods_started - base.pods_started) as usize;
        if outcome.curve.last().is_none_or(|(_, n)| *n != running) {
            outcome
                .curve
                .push((started.elapsed().as_secs_f64(), running));
        }
        if running >= pods {
            all_in = Some(started.elapsed());
            if !faults {
                let ms = (children_cpu() - children_before) * 1000.0;
                outcome.plugin_cpu_ms_per_pod = Some(ms / pods as f64);
            }
            break;
        }
        if faults {
            let share = running as f64 / pods as f64;
            if injected == 0 && share >= AGENTS_AND_CONTROLLER_KILLED_AT {
                injected += 1;
                let nodes = lab.nodes();
                let mut roles: Vec<String> =
                    nodes.iter().take(2).map(|n| format!("agent-{n}")).collect();
                roles.push("controller".into());
                let at = started.elapsed();
                for role in &roles {
                    cpu_of_killed += lab
                        .pids()
                        .get(role)
                        .and_then(|p| cpu_seconds(*p))
                        .unwrap_or(0.0);
                    lab.kill(role);
                }
                for node in nodes.iter().take(2) {
                    lab.start_agent(node)?;
                }
                lab.start_controller()?;
                outcome.faults.push(format!(
                    "{at:.1?}: SIGKILL {} at {running} pods; all back in {:.1?}",
                    roles.join(", "),
                    started.elapsed() - at
                ));
            } else if injected == 1 && share >= APISERVER_RESTARTED_AT {
                injected += 1;
                let at = started.elapsed();
                lab.cluster.kill_apiserver();
                lab.runtime().block_on(lab.cluster.restart_apiserver())?;
                outcome.faults.push(format!(
                    "{at:.1?}: API server SIGKILLed and started again at {running} pods; ready in {:.1?}",
                    started.elapsed() - at
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    outcome.seconds_to_all_ips = all_in.map(|d| d.as_secs_f64());
    let ips = pod_ips(lab, namespace)?;
    outcome.pods_with_ips = if contender.multus {
        ips.values().filter(|v| v.len() >= 2).count()
    } else {
        ips.len()
    };
    let mut holders: BTreeMap<&String, usize> = BTreeMap::new();
    for ip in ips.values().flatten() {
        *holders.entry(ip).or_insert(0) += 1;
    }
    outcome.duplicates = holders.values().filter(|n| **n > 1).count();
    if all_in.is_none() {
        outcome.note = format!("{} of {pods} pods in {limit:?}", outcome.pods_with_ips);
    }
    if faults {
        // One GC period (the lab's controller runs GC every 10 s), then the audit.
        std::thread::sleep(Duration::from_secs(15));
        outcome.audit = audit_holdings(lab, namespace)?;
    }

    let stats = lab.cluster.kubelet_stats();
    let mut adds = stats.add_latencies[base.add_latencies.len()..].to_vec();
    adds.sort();
    outcome.add_calls = adds.len();
    outcome.add_p50_ms = percentile(&adds, 0.50);
    outcome.add_p99_ms = percentile(&adds, 0.99);

    let audit_at_delete = audit_offset(audit_log);
    let deleting = Instant::now();
    lab.kubectl(&[
        "delete",
        "deployments",
        "--all",
        "-n",
        namespace,
        "--wait=false",
    ])?;
    let started_pods = stats.pods_started - base.pods_started;
    let mut gone = None;
    while deleting.elapsed() < limit {
        let now = lab.cluster.kubelet_stats();
        if now.pods_stopped - base.pods_stopped >= started_pods
            && lab.json(&["get", "pods", "-n", namespace])?["items"]
                .as_array()
                .is_none_or(Vec::is_empty)
        {
            gone = Some(deleting.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    outcome.seconds_to_delete = gone.map(|d| d.as_secs_f64());
    let end = lab.cluster.kubelet_stats();
    outcome.cni_errors = end.cni_errors - base.cni_errors;
    let fresh = (outcome.cni_errors as usize).min(end.errors.len()).min(10);
    outcome.errors = end.errors[end.errors.len() - fresh..].to_vec();
    outcome.leaks = leaks(lab, name, namespace)?;
    if !users.is_empty() {
        let audit_end = audit_offset(audit_log);
        let (writes, by, conflicts) = audit(audit_log, audit_from, audit_end, users)?;
        let (add_writes, _, _) = audit(audit_log, audit_from, audit_at_delete, users)?;
        let per_pod = |w: u64| Some(w as f64 / pods as f64);
        outcome.api_writes_per_pod = per_pod(writes);
        outcome.api_writes_per_pod_add = per_pod(add_writes);
        outcome.api_writes_per_pod_del = per_pod(writes - add_writes);
        outcome.api_requests = by;
        outcome.conflicts = conflicts;
    }
    if name.starts_with("berth") {
        outcome.daemon_cpu_seconds = Some(daemons_cpu(lab) + cpu_of_killed - cpu_before);
    }
    Ok(outcome)
}

/// Pools, endpoints and pods of `namespace` against each other, once every pod runs: every
/// IP the pools record for a pod of the namespace is held by that pod (same uid) and in its
/// network status, every IP of a pod's status is recorded for it, and every endpoint's IPs
/// are recorded for its pod. What does not hold, in words.
fn audit_holdings(lab: &Lab, namespace: &str) -> Res<Vec<String>> {
    let mut problems = Vec::new();
    let holders = match lab.holders() {
        Ok(h) => h,
        Err(e) => return Ok(vec![e.to_string()]),
    };
    let mut running: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for pod in lab.json(&["get", "pods", "-n", namespace])?["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let ips = pod_status_ips(&pod);
        running.insert(format!("{namespace}/{name}"), (uid.to_string(), ips));
    }
    let prefix = format!("{namespace}/");
    for (ip, (pod, uid)) in holders.iter().filter(|(_, (p, _))| p.starts_with(&prefix)) {
        match running.get(pod) {
            None => problems.push(format!("{ip} is held by {pod}, which does not exist")),
            Some((live, _)) if live != uid => problems.push(format!(
                "{ip} is held by {pod} uid {uid}, but the pod's uid is {live}"
            )),
            Some((_, ips)) if !ips.contains(&ip.to_string()) => problems.push(format!(
                "{ip} is held by {pod}, but is not in its network status {ips:?}"
            )),
            Some(_) => {}
        }
    }
    // Who the pools say holds an IP written as text.
    let holder = |ip: &str| {
        ip.parse()
            .ok()
            .and_then(|ip: std::net::IpAddr| holders.get(&ip))
    };
    for (pod, (_, ips)) in &running {
        for ip in ips {
            let held = holder(ip);
            if held.is_none_or(|(p, _)| p != pod) {
                problems.push(format!(
                    "{pod} has {ip}, which the pools record for {held:?}"
                ));
            }
        }
    }
    let endpoints = lab.json(&["get", "spiderendpoints", "-n", namespace])?;
    for ep in endpoints["items"].as_array().cloned().unwrap_or_default() {
        let pod = format!(
            "{namespace}/{}",
            ep["metadata"]["name"].as_str().unwrap_or_default()
        );
        for nic in ep["status"]["current"]["ips"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            for key in ["ipv4", "ipv6"] {
                let Some(cidr) = nic[key].as_str() else {
                    continue;
                };
                let ip = cidr.split('/').next().unwrap_or(cidr);
                let held = holder(ip);
                if held.is_none_or(|(p, _)| *p != pod) {
                    problems.push(format!(
                        "the endpoint of {pod} names {ip}, which the pools record for {held:?}"
                    ));
                }
            }
        }
    }
    Ok(problems)
}

/// IPs still held for the contender's pods after they are all gone.
fn leaks(lab: &Lab, name: &str, namespace: &str) -> Res<usize> {
    let prefix = format!("{namespace}/");
    if name.starts_with("berth") {
        return Ok(lab
            .holders()?
            .values()
            .filter(|(pod, _)| pod.starts_with(&prefix))
            .count());
    }
    if name == "whereabouts" {
        let pools = lab.json(&["get", "ippools.whereabouts.cni.cncf.io", "-A"])?;
        let mut held = 0;
        for pool in pools["items"].as_array().cloned().unwrap_or_default() {
            for (_, a) in pool["spec"]["allocations"]
                .as_object()
                .cloned()
                .unwrap_or_default()
            {
                if a["podref"].as_str().is_some_and(|p| p.starts_with(&prefix)) {
                    held += 1;
                }
            }
        }
        return Ok(held);
    }
    Ok(0)
}

fn main() -> Res<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` (CI) does not: then the
    // CI-sized check, 50 pods on 2 nodes, Berth and the floor, which asserts correctness
    // only (every pod gets its IPs, none held twice, none left, no CNI error), never time.
    let testing = !std::env::args().any(|a| a == "--bench");
    let (default_pods, default_nodes, default_contenders) = if testing {
        (50, 2, "floor,berth,berth-faults")
    } else {
        (
            1000,
            10,
            "floor,berth,berth-shared,whereabouts,berth-faults",
        )
    };
    let pods = env_usize("BERTH_BENCH_PODS", default_pods);
    let nodes = env_usize("BERTH_BENCH_NODES", default_nodes);
    let limit = Duration::from_secs(env_usize("BERTH_BENCH_LIMIT_SECS", 1200) as u64);
    let contenders: Vec<String> = std::env::var("BERTH_BENCH_CONTENDERS")
        .unwrap_or_else(|_| default_contenders.into())
        .split(',')
        .map(str::to_string)
        .collect();
    let exe = example(!testing)?;
    let work = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
    let policy = work.path().join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
    )?;
    let audit_log = work.path().join("audit.log");
    let options = Options::default()
        .nodes(nodes)
        .pods_in_flight(4)
        .max_pods_per_node(110)
        .apiserver_arg(format!("--audit-policy-file={}", policy.display()))
        .apiserver_arg(format!("--audit-log-path={}", audit_log.display()))
        .apiserver_arg("--audit-log-maxsize=0")
        .apiserver_arg("--audit-log-format=json");
    println!("cluster bench: {pods} pods on {nodes} nodes; contenders {contenders:?}");
    let mut lab = Lab::start_with(&exe, options)?;
    lab.start_controller()?;
    for node in lab.nodes() {
        lab.start_agent(&node)?;
    }
    // Room for every contender: 2,046 IPs per subnet, auto pools of 11 per 10 pods.
    let mut setup = String::new();
    for (nic, octet) in [("eth0", 110), ("net1", 111)] {
        setup.push_str(&format!(
            "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderSubnet\nmetadata: {{name: bench-{nic}}}\n\
             spec: {{subnet: 10.{octet}.0.0/16, ips: [10.{octet}.0.1-10.{octet}.7.254], gateway: 10.{octet}.255.254}}\n---\n\
             apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata: {{name: bench-shared-{nic}}}\n\
             spec: {{subnet: 10.{}.0.0/16, ips: [10.{}.0.1-10.{}.7.254]}}\n---\n",
            octet + 10,
            octet + 10,
            octet + 10,
        ));
        let berth = json!({"cniVersion": "0.3.1", "name": format!("bench-{nic}"), "type": "macvlan",
            "master": "ens192", "ipam": {"type": "spiderpool"}});
        setup.push_str(&nad_yaml(
            "kube-system",
            &format!("bench-{nic}"),
            &berth.to_string(),
        ));
        setup.push_str("\n---\n");
    }
    lab.apply(&setup, &[])?;
    let berth_networks = |pools: Value| {
        let mut a = json!({
            "v1.multus-cni.io/default-network": "kube-system/bench-eth0",
            "k8s.v1.cni.cncf.io/networks": "kube-system/bench-net1",
        });
        for (k, v) in pools.as_object().cloned().unwrap_or_default() {
            a[k] = v;
        }
        a
    };
    let mut outcomes = Vec::new();
    for (i, name) in contenders.iter().enumerate() {
        let namespace = format!("bench-{i}-{name}");
        let (annotations, users): (Value, Vec<&str>) = match name.as_str() {
            "floor" => (json!({}), Vec::new()),
            "berth" | "berth-faults" => (
                berth_networks(json!({
                    "ipam.spidernet.io/subnets": r#"[{"interface":"eth0","ipv4":["bench-eth0"]},{"interface":"net1","ipv4":["bench-net1"]}]"#,
                    "ipam.spidernet.io/ippool-ip-number": "+1",
                })),
                BERTH_USERS.to_vec(),
            ),
            "berth-shared" => (
                berth_networks(json!({
                    "ipam.spidernet.io/ippools": r#"[{"interface":"eth0","ipv4":["bench-shared-eth0"]},{"interface":"net1","ipv4":["bench-shared-net1"]}]"#,
                })),
                BERTH_USERS.to_vec(),
            ),
            "whereabouts" => {
                let (bin, crds) = whereabouts()?;
                lab.kubectl(&[
                    "apply",
                    "-f",
                    crds.join("whereabouts.cni.cncf.io_ippools.yaml")
                        .to_str()
                        .ok_or("path")?,
                ])?;
                lab.kubectl(&[
                    "apply",
                    "-f",
                    crds.join("whereabouts.cni.cncf.io_overlappingrangeipreservations.yaml")
                        .to_str()
                        .ok_or("path")?,
                ])?;
                lab.install_plugin("whereabouts", &bin)?;
                let kubeconfig = lab
                    .cluster
                    .kubeconfig_for(&Identity::new(WHEREABOUTS_USER, Some("system:masters")))?;
                // whereabouts insists on a flat configuration file besides the NAD's.
                let flat = work.path().join("whereabouts.conf");
                std::fs::write(
                    &flat,
                    json!({"datastore": "kubernetes", "log_level": "error",
                        "kubernetes": {"kubeconfig": kubeconfig.display().to_string()}})
                    .to_string(),
                )?;
                let mut nads = String::new();
                for (nic, octet) in [("eth0", 130), ("net1", 131)] {
                    let config = json!({"cniVersion": "0.3.1", "name": format!("wa-{nic}"), "type": "macvlan",
                        "master": "ens192", "ipam": {"type": "whereabouts", "range": format!("10.{octet}.0.0/16"),
                        "range_end": format!("10.{octet}.7.254"),
                        "kubernetes": {"kubeconfig": kubeconfig.display().to_string()},
                        "configuration_path": flat.display().to_string(),
                        "log_level": "error"}});
                    nads.push_str(&nad_yaml(
                        "kube-system",
                        &format!("wa-{nic}"),
                        &config.to_string(),
                    ));
                    nads.push_str("\n---\n");
                }
                lab.apply(&nads, &[])?;
                (
                    json!({
                        "v1.multus-cni.io/default-network": "kube-system/wa-eth0",
                        "k8s.v1.cni.cncf.io/networks": "kube-system/wa-net1",
                    }),
                    vec![WHEREABOUTS_USER],
                )
            }
            other => return Err(format!("unknown contender {other:?}").into()),
        };
        println!("-- {name}: {pods} pods in {namespace}");
        let contender = Contender {
            name,
            namespace,
            annotations,
            users,
            multus: name != "floor",
        };
        let faults = name == "berth-faults";
        match run(&mut lab, &contender, pods, &audit_log, limit, faults) {
            Ok(o) => {
                println!("{}", serde_json::to_string(&o)?);
                outcomes.push(o);
            }
            Err(e) => {
                eprintln!("{name} failed: {e}\n{}", lab.logs());
                outcomes.push(Outcome {
                    name: name.clone(),
                    pods,
                    note: format!("failed: {e}"),
                    ..Default::default()
                });
            }
        }
    }
    let floor = outcomes
        .iter()
        .find(|o| o.name == "floor")
        .and_then(|o| o.seconds_to_all_ips);
    println!(
        "\n{:<14} {:>6} {:>10} {:>9} {:>8} {:>8} {:>8} {:>17} {:>6} {:>6} {:>5} {:>5} {:>9} {:>9}  note",
        "contender",
        "pods",
        "all IPs s",
        "× floor",
        "delete s",
        "ADD p50",
        "ADD p99",
        "writes/pod a+d",
        "409s",
        "errors",
        "dups",
        "leaks",
        "daemon s",
        "plugin ms",
    );
    let num =
        |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    for o in &outcomes {
        let ratio = o.seconds_to_all_ips.zip(floor).map(|(s, f)| s / f);
        let writes = match (o.api_writes_per_pod_add, o.api_writes_per_pod_del) {
            (Some(a), Some(d)) => format!("{a:.2}+{d:.2}"),
            _ => "-".into(),
        };
        println!(
            "{:<14} {:>6} {:>10} {:>9} {:>8} {:>8} {:>8} {:>17} {:>6} {:>6} {:>5} {:>5} {:>9} {:>9}  {}",
            o.name,
            o.pods_with_ips,
            num(o.seconds_to_all_ips, 1),
            num(ratio, 2),
            num(o.seconds_to_delete, 1),
            num(o.add_p50_ms, 1),
            num(o.add_p99_ms, 1),
            writes,
            o.conflicts,
            o.cni_errors,
            o.duplicates,
            o.leaks,
            num(o.daemon_cpu_seconds, 1),
            num(o.plugin_cpu_ms_per_pod, 1),
            o.note
        );
        for line in o.faults.iter().chain(&o.audit) {
            println!("  {}: {line}", o.name);
        }
    }
    if testing {
        let wrong: Vec<String> = outcomes
            .iter()
            .filter(|o| {
                o.pods_with_ips != o.pods
                    || o.duplicates > 0
                    || o.leaks > 0
                    || o.cni_errors > 0
                    || !o.audit.is_empty()
                    || !o.note.is_empty()
            })
            .map(|o| format!("{}: {o:?}", o.name))
            .collect();
        if !wrong.is_empty() {
            return Err(format!("the cluster check failed:\n{}", wrong.join("\n")).into());
        }
        println!(
            "cluster check: every pod got its IPs; no duplicate, leak or CNI error; \
             the fault run recovered and its audit is clean"
        );
        return Ok(());
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let report = json!({
        "pods": pods,
        "nodes": nodes,
        "machine": std::fs::read_to_string("/proc/cpuinfo").map(|c| c.matches("processor").count()).unwrap_or(0),
        "contenders": outcomes,
    });
    std::fs::write(
        dir.join("cluster.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("\nwritten: target/bench/cluster.json");
    match plot(&outcomes, pods, nodes, &dir.join("cluster.png")) {
        Ok(()) => println!("written: target/bench/cluster.png"),
        Err(e) => println!("no picture: {e}"),
    }
    Ok(())
}

/// Fonts the picture can use, in order.
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Pods with IPs over time, one line per contender.
fn plot(outcomes: &[Outcome], pods: usize, nodes: usize, path: &Path) -> Res<()> {
    use plotters::prelude::*;
    let font = FONTS
        .iter()
        .find_map(|f| std::fs::read(f).ok())
        .ok_or("no TrueType font found (apt-get install fonts-dejavu-core)")?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "the font could not be read")?;
    let end = outcomes
        .iter()
        .filter_map(|o| o.curve.last().map(|(t, _)| *t))
        .fold(1.0, f64::max);
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{pods} pods (2 NICs each) on {nodes} simulated nodes: pods with their IPs"),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end * 1.05, 0usize..pods + pods / 20)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the Deployments were created")
        .y_desc("pods running with their IPs")
        .draw()?;
    for (i, o) in outcomes.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                std::iter::once((0.0, 0)).chain(o.curve.iter().copied()),
                colour.stroke_width(2),
            ))?
            .label(o.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
