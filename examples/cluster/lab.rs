//! The cluster lab: a real control plane with simulated nodes, Berth installed the way
//! `deploy/` installs it (CRDs, RBAC), `berth controller --webhook` and one `berth agent` per
//! node as local processes under their service accounts, and the kubelet stand-ins calling
//! the IPAM plugin of each NIC through the CNI protocol (kube-testbed's Multus stand-in).
//!
//! Shared by `examples/cluster` and the cluster tests (`tests/kube_lab.rs`, which include
//! this file). Both run one multi-call executable, the example's: started as `berth` it is
//! the command line, as `spiderpool` it is `berth-ipam` with the default socket of the node
//! whose directory it sits in.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kube_testbed::multus::{Multus, NAD_CRD, nad_yaml};
use kube_testbed::pki::Identity;
use kube_testbed::{Cluster, Options};
use serde_json::Value;

/// The seed's YAML and configs, verbatim.
pub const SUBNETS: &str = include_str!("../seed/subnets.yaml");
pub const DEPLOYMENT: &str = include_str!("../seed/deployment.yaml");
pub const STATEFULSET: &str = include_str!("../seed/statefulset.yaml");
pub const NAD_ENS192: &str = include_str!("../seed/macvlan-conf-ens192.json");
pub const NAD_ENS224: &str = include_str!("../seed/macvlan-conf-ens224.json");
const RBAC: &str = include_str!("../../deploy/rbac.yaml");
/// `deploy/crds/`, as `kubectl apply -f deploy/crds/` reads it.
const CRDS: [&str; 4] = [
    include_str!("../../deploy/crds/spiderpool.spidernet.io_spiderendpoints.yaml"),
    include_str!("../../deploy/crds/spiderpool.spidernet.io_spiderippools.yaml"),
    include_str!("../../deploy/crds/spiderpool.spidernet.io_spiderreservedips.yaml"),
    include_str!("../../deploy/crds/spiderpool.spidernet.io_spidersubnets.yaml"),
];

/// How long any one wait may take.
pub const STEP: Duration = Duration::from_secs(120);

pub type Res<T> = Result<T, Box<dyn Error>>;

/// The control plane and Berth's processes, stopped when dropped.
pub struct Lab {
    pub cluster: Cluster,
    /// Binaries, node dirs and every process's log (`<role>.log`). Kept after the run when
    /// `BERTH_KEEP_LAB` is set, to read the logs of a failure.
    pub dir: tempfile::TempDir,
    /// Running processes by role (`controller`, `agent-<node>`).
    children: BTreeMap<String, Child>,
    /// The multi-call executable, linked as `bin/berth` and `nodes/<node>/spiderpool`.
    exe: PathBuf,
    // Last: the cluster's tasks run on it.
    runtime: tokio::runtime::Runtime,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Lab {
    /// Starts a control plane with `nodes` simulated nodes and installs Berth's CRDs, its RBAC
    /// and the NetworkAttachmentDefinition CRD; the pods of namespace `default` get their
    /// NICs from their Multus annotations. `exe` is the multi-call executable. Nothing of
    /// Berth runs yet: [`Lab::start_controller`], [`Lab::start_agent`].
    pub fn start(exe: &Path, nodes: usize) -> Res<Lab> {
        Self::start_with(exe, Options::default().nodes(nodes))
    }

    /// [`Lab::start`] on a control plane started with `options` (nodes, pods in flight per
    /// node, API server flags).
    pub fn start_with(exe: &Path, options: Options) -> Res<Lab> {
        let runtime = tokio::runtime::Runtime::new()?;
        let cluster = runtime.block_on(Cluster::start(options))?;
        let dir = tempfile::Builder::new()
            .prefix("berth-cluster-")
            .disable_cleanup(std::env::var_os("BERTH_KEEP_LAB").is_some())
            .tempdir()?;
        let lab = Lab {
            cluster,
            dir,
            children: BTreeMap::new(),
            exe: exe.to_path_buf(),
            runtime,
        };
        lab.apply(&CRDS.join("\n---\n"), &[])?;
        lab.apply(NAD_CRD, &[])?;
        lab.apply(RBAC, &["-n", "kube-system"])?;
        lab.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/spidersubnets.spiderpool.spidernet.io",
            "crd/spiderippools.spiderpool.spidernet.io",
            "crd/spiderendpoints.spiderpool.spidernet.io",
            "crd/spiderreservedips.spiderpool.spidernet.io",
            "crd/network-attachment-definitions.k8s.cni.cncf.io",
        ])?;
        std::fs::create_dir_all(lab.dir.path().join("bin"))?;
        std::os::unix::fs::symlink(&lab.exe, lab.dir.path().join("bin/berth"))?;
        lab.install_plugin("spiderpool", &lab.exe)?;
        lab.multus("default")?;
        Ok(lab)
    }

    /// The pods of `namespace` get their NICs from their Multus annotations, each NIC's IPAM
    /// plugin the executable of its `type` in the node's directory (other namespaces' pods get
    /// one NIC and no IPAM, the floor).
    pub fn multus(&self, namespace: &str) -> Res<()> {
        let nodes_dir = self.dir.path().join("nodes");
        let _entered = self.runtime.enter();
        self.cluster.set_pod_network(
            namespace,
            Multus::new(self.cluster.client()?, move |node, ipam| {
                nodes_dir.join(node).join(ipam)
            }),
        );
        Ok(())
    }

    /// Installs `path` as IPAM plugin `name` on every node (a link in each node's directory).
    pub fn install_plugin(&self, name: &str, path: &Path) -> Res<()> {
        for node in self.nodes() {
            let link = self.node_dir(&node).join(name);
            std::fs::create_dir_all(self.node_dir(&node))?;
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(path, &link)?;
        }
        Ok(())
    }

    /// The pids of Berth's processes (controller and agents), by role.
    pub fn pids(&self) -> BTreeMap<String, u32> {
        self.children
            .iter()
            .map(|(role, child)| (role.clone(), child.id()))
            .collect()
    }

    /// The tokio runtime the control plane's tasks run on.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// The simulated nodes' names.
    pub fn nodes(&self) -> Vec<String> {
        self.cluster
            .nodes()
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }

    /// A node's `/opt/cni/bin` and run dir: its IPAM plugin, its agent's socket and logs.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join("nodes").join(node)
    }

    /// Applies the seed's subnets and its two NetworkAttachmentDefinitions (in kube-system).
    pub fn apply_seed_networks(&self) -> Res<()> {
        self.apply(SUBNETS, &[])?;
        for (name, config) in [
            ("macvlan-conf-ens192", NAD_ENS192),
            ("macvlan-conf-ens224", NAD_ENS224),
        ] {
            self.apply(&nad_yaml("kube-system", name, config), &[])?;
        }
        Ok(())
    }

    /// `berth controller --webhook` as the controller's service account; returns once the
    /// API server calls its webhook.
    pub fn start_controller(&mut self) -> Res<()> {
        self.start_berth(
            "controller",
            "berth-controller",
            &[
                "controller",
                "--lease",
                "kube-system/berth-controller",
                // The pod name a Deployment's controller pod keeps across container restarts.
                "--identity",
                "berth-controller-0",
                "--gc-period",
                "10s",
                "--webhook",
                "--listen",
                "127.0.0.1:0",
            ],
            "berth webhook: ready",
        )
    }

    /// `berth agent --node NODE` as the agent's service account, on the node's socket.
    pub fn start_agent(&mut self, node: &str) -> Res<()> {
        let socket = self.node_dir(node).join("agent.sock");
        let socket = socket.to_str().ok_or("a UTF-8 temporary dir")?.to_string();
        self.start_berth(
            &format!("agent-{node}"),
            "berth-agent",
            &["agent", "--node", node, "--socket", &socket],
            "berth agent: serving node",
        )
    }

    /// SIGKILLs the process of `role` (`controller`, `agent-<node>`), as a crash would.
    pub fn kill(&mut self, role: &str) {
        if let Some(mut child) = self.children.remove(role) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs the process of `role`, as a DaemonSet rollout does, and waits for it to exit.
    pub fn terminate(&mut self, role: &str) -> Res<()> {
        if let Some(mut child) = self.children.remove(role) {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Runs node `node`'s IPAM plugin once, as a runtime does: `command` with `K8S_POD_*` in
    /// `CNI_ARGS` and the seed's `macvlan-conf-ens192` config on stdin. Its exit status and
    /// stdout (the result, or the CNI error).
    pub fn cni(
        &self,
        node: &str,
        command: &str,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Res<(bool, Value)> {
        let config = kube_testbed::multus::ipam_config(NAD_ENS192)?;
        let mut child = Command::new(self.node_dir(node).join("spiderpool"))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", format!("/var/run/netns/{container}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.node_dir(node))
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};\
                     K8S_POD_INFRA_CONTAINER_ID={container}"
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(config.to_string().as_bytes())?;
        let out = child.wait_with_output()?;
        Ok((out.status.success(), serde_json::from_slice(&out.stdout)?))
    }

    /// Starts `berth args...` as `user` (a service account of kube-system), its log in
    /// `<role>.log`; waits until it prints a line starting with `ready`.
    fn start_berth(&mut self, role: &str, user: &str, args: &[&str], ready: &str) -> Res<()> {
        let identity = Identity::new(
            &format!("system:serviceaccount:kube-system:{user}"),
            Some("system:serviceaccounts"),
        );
        let kubeconfig = self.cluster.kubeconfig_for(&identity)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{role}.log")))?;
        let mut child = Command::new(self.dir.path().join("bin/berth"))
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
            .stderr(log)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        self.children.insert(role.to_string(), child);
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

    /// Runs kubectl with `args`; its stdout, or an error with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Res<String> {
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

    /// `kubectl apply -f -` of `yaml`; kubectl's output.
    pub fn apply(&self, yaml: &str, extra: &[&str]) -> Res<String> {
        let mut args = vec!["apply", "-f", "-"];
        args.extend_from_slice(extra);
        self.kubectl_in(&args, Some(yaml))
    }

    /// `kubectl get ... -o json`.
    pub fn json(&self, args: &[&str]) -> Res<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl(&all)?)?)
    }

    /// The running pods labelled `app=<app>` with IPs on `eth0` and `net1`, once there are
    /// exactly `n` of them and no other pod of the app is left (terminating ones included).
    pub fn wait_pods(&self, app: &str, n: usize) -> Res<Vec<PodView>> {
        let deadline = Instant::now() + STEP;
        loop {
            let list = self.json(&["get", "pods", "-l", &format!("app={app}")])?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let mut views: Vec<PodView> = items.iter().filter_map(PodView::running).collect();
            if items.len() == n && views.len() == n {
                views.sort_by(|a, b| a.name.cmp(&b.name));
                return Ok(views);
            }
            if Instant::now() > deadline {
                let stats = self.cluster.kubelet_stats();
                return Err(format!(
                    "{app}: {} pods, {} running with IPs, after {STEP:?} (wanted {n}); \
                     CNI errors: {:?}",
                    items.len(),
                    views.len(),
                    stats.errors
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The auto pools of application `app`, by interface: `(name, IPs)`.
    pub fn auto_pools(&self, app: &str) -> Res<BTreeMap<String, (String, Vec<Ipv4Addr>)>> {
        let list = self.json(&["get", "spiderippools"])?;
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

    /// Waits until `app`'s two auto pools hold `size` IPs each; returns them.
    pub fn wait_pool_size(
        &self,
        app: &str,
        size: usize,
    ) -> Res<BTreeMap<String, (String, Vec<Ipv4Addr>)>> {
        let deadline = Instant::now() + STEP;
        loop {
            let pools = self.auto_pools(app)?;
            if pools.len() == 2 && pools.values().all(|(_, ips)| ips.len() == size) {
                return Ok(pools);
            }
            if Instant::now() > deadline {
                return Err(
                    format!("{app}'s auto pools are not {size} IPs each: {pools:?}").into(),
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Every IP the pools record as allocated, with its holder (`namespace/pod`, uid).
    pub fn holders(&self) -> Res<BTreeMap<IpAddr, (String, String)>> {
        let list = self.json(&["get", "spiderippools"])?;
        let mut out = BTreeMap::new();
        for item in list["items"].as_array().cloned().unwrap_or_default() {
            let pool: berth::SpiderIPPool = serde_json::from_value(item)?;
            for (ip, record) in pool.records() {
                if let Some(other) = out.insert(ip, (record.pod.clone(), record.pod_uid.clone())) {
                    return Err(format!("{ip} is recorded twice: {other:?} and {record:?}").into());
                }
            }
        }
        Ok(out)
    }

    /// The last lines of the processes' logs and of the plugins' logs.
    pub fn logs(&self) -> String {
        let mut files = vec![self.dir.path().join("controller.log")];
        for node in self.nodes() {
            files.push(self.dir.path().join(format!("agent-{node}.log")));
            files.push(self.node_dir(&node).join("berth-ipam.log"));
        }
        let mut out = String::new();
        for file in files {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                out.push_str(&format!("--- {} (last lines)\n{tail}\n", file.display()));
            }
        }
        out
    }
}

/// What a test knows of a pod: name, uid, node and every NIC's IPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub uid: String,
    pub node: String,
    pub nics: BTreeMap<String, Vec<String>>,
}

impl PodView {
    /// A pod that runs with IPs on both NICs, read from its network-status annotation.
    pub fn running(pod: &Value) -> Option<PodView> {
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

    /// `POD <name> <nic>=<ip> ...`.
    pub fn line(&self) -> String {
        let nics: Vec<String> = self
            .nics
            .iter()
            .flat_map(|(nic, ips)| ips.iter().map(move |ip| format!("{nic}={ip}")))
            .collect();
        format!("POD {} {}", self.name, nics.join(" "))
    }

    /// The first IP of `nic`.
    pub fn ip(&self, nic: &str) -> String {
        self.nics
            .get(nic)
            .and_then(|ips| ips.first())
            .cloned()
            .unwrap_or_default()
    }
}

/// The IPv4 addresses of `a.b.c.d` or `a.b.c.d-e.f.g.h`.
pub fn expand(range: &str) -> Res<Vec<Ipv4Addr>> {
    let (first, last) = range.split_once('-').unwrap_or((range, range));
    let (first, last): (Ipv4Addr, Ipv4Addr) = (first.trim().parse()?, last.trim().parse()?);
    Ok((u32::from(first)..=u32::from(last))
        .map(Ipv4Addr::from)
        .collect())
}

/// Each pod's IPs lie in its app's pool of that NIC, and no IP has two pods.
pub fn check_inside(
    pods: &[PodView],
    pools: &BTreeMap<String, (String, Vec<Ipv4Addr>)>,
) -> Res<()> {
    let mut seen = BTreeMap::new();
    for pod in pods {
        for nic in ["eth0", "net1"] {
            let ip: Ipv4Addr = pod.ip(nic).parse()?;
            let (pool, ips) = pools
                .get(nic)
                .ok_or_else(|| format!("no auto pool for {nic}"))?;
            if !ips.contains(&ip) {
                return Err(
                    format!("{} {nic}={ip} is outside pool {pool} {ips:?}", pod.name).into(),
                );
            }
            if let Some(other) = seen.insert(ip, pod.name.clone()) {
                return Err(format!("{ip} is held by both {other} and {}", pod.name).into());
            }
        }
    }
    Ok(())
}

/// Fails with `message` unless `ok`.
pub fn check(ok: bool, message: impl FnOnce() -> String) -> Res<()> {
    if ok { Ok(()) } else { Err(message().into()) }
}

/// Waits up to [`STEP`] for `done` to say `Ok(true)`; `what` names it in the error.
pub fn wait_for(what: &str, mut done: impl FnMut() -> Res<bool>) -> Res<()> {
    let deadline = Instant::now() + STEP;
    loop {
        if done()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {STEP:?}").into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
