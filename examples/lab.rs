//! The seed lab: the article's network built in network namespaces, its YAML applied with
//! Berth, its two NetworkAttachmentDefinition configs run verbatim by Debian's macvlan with
//! `berth-ipam` installed as `spiderpool` and `berth-route` installed as `veth`, and the
//! article's commands printed: `ip a`, `ip r`, `ip rule`, `ip route show table 100`, the
//! pools; then the pods restarted, the Deployment scaled to 3, and everything torn down.
//!
//! ```text
//! sudo -E cargo run --example lab        # root: it creates namespaces
//! ```
//!
//! Needs root, `ip`, `ping`, `iptables` and Debian's `containernetworking-plugins`
//! (`/usr/lib/cni/macvlan`). Everything happens inside namespaces the lab creates — the
//! node, the gateway, the client and the pods — and in a temporary dir; both are removed at
//! the end, also when a step fails, and when the lab is interrupted: SIGINT (Ctrl-C, which
//! reaches the whole process group) or SIGTERM, sent to the lab alone or to its group, stops
//! it at the next step and tears down as a failure does, then it exits 130 or 143. (`cargo
//! run` execs the lab on Unix, so a signal to cargo's pid is one to the lab.)
//!
//! The lab binary is its own CNI plugins: it links itself as `spiderpool` and `veth` into
//! the temporary plugin dir and, started under those names, runs `berth-ipam`'s and
//! `berth-route`'s plugin code (`cni_plugin::BerthIpam`, `netns_routing::BerthRoute`). The
//! seed's config names no data dir, so `berth-ipam` falls back to its defaults; the lab's
//! `spiderpool` sets those defaults (`ModeDefaults`) to the lab's temporary store instead of
//! `/run/berth/agent.sock` and `/var/lib/berth`, and both plugins log into the lab's dir.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};

use berth::core::engine::Engine;
use berth::core::store::TypedStore;
use berth::core::{SpiderIPPool, SpiderSubnet, WorkloadKind};
use berth::{manifest, table};
use berth_cni::logging::{init_file_logging, level_filter};
use berth_test_support::is_root;
use berth_test_support::netns::Ns;
use berth_test_support::seed::addr::*;
use berth_test_support::seed::{Chain, ChainArgs, SeedTopology};
use cni_plugin::ipam::ModeDefaults;
use serde_json::Value;

const SUBNETS: &str = include_str!("seed/subnets.yaml");
const DEPLOYMENT: &str = include_str!("seed/deployment.yaml");
/// The seed's two NetworkAttachmentDefinition configs, verbatim (shell variables filled).
const NAD_ENS192: &str = include_str!("seed/macvlan-conf-ens192.json");
const NAD_ENS224: &str = include_str!("seed/macvlan-conf-ens224.json");

/// Tells the plugin personalities where the lab's dir is.
const LAB_DIR_VAR: &str = "BERTH_LAB_DIR";
const DEBIAN_CNI: &str = "/usr/lib/cni";

type Res<T> = Result<T, Box<dyn Error>>;

/// The signal that interrupted the lab (SIGINT 2, SIGTERM 15), or 0.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// Catches SIGINT and SIGTERM from now on: a thread records the signal, and the lab stops at
/// its next step ([`interrupted`]) and tears down on the way out. Killed by the default
/// action instead, it would leave its namespaces and its temporary dir behind.
fn catch_signals() -> Res<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut int, mut term) = {
        let _entered = rt.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    std::thread::spawn(move || {
        rt.block_on(async {
            loop {
                let (signo, name) = tokio::select! {
                    _ = int.recv() => (2, "SIGINT"),
                    _ = term.recv() => (15, "SIGTERM"),
                };
                if INTERRUPTED.swap(signo, Ordering::SeqCst) == 0 {
                    eprintln!("\n# {name}: stopping at the next step, then tearing down");
                } else {
                    eprintln!("\n# {name}: already tearing down");
                }
            }
        })
    });
    Ok(())
}

/// An error once a signal came: every step starts with it.
fn interrupted() -> Res<()> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => Ok(()),
        2 => Err("interrupted by SIGINT".into()),
        _ => Err("interrupted by SIGTERM".into()),
    }
}

fn main() -> ExitCode {
    let name = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    match name.as_str() {
        "spiderpool" => return plugin_ipam(),
        "veth" => return plugin_route(),
        _ => {}
    }
    if !is_root() {
        eprintln!(
            "the lab creates network namespaces: run it as root (sudo -E cargo run --example lab)"
        );
        return ExitCode::from(2);
    }
    if !Path::new(DEBIAN_CNI).join("macvlan").exists() {
        eprintln!("{DEBIAN_CNI}/macvlan is missing: apt-get install containernetworking-plugins");
        return ExitCode::from(2);
    }
    if let Err(e) = catch_signals() {
        eprintln!("cannot catch SIGINT and SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    // Guards inside `run` tear everything down while unwinding, also after a panic.
    let outcome = std::panic::catch_unwind(run);
    // A signal to the whole group also kills the step's commands, which then fail: report
    // the signal, not their failure.
    let signo = INTERRUPTED.load(Ordering::SeqCst);
    if signo != 0 {
        eprintln!("\nlab interrupted: namespaces and the temporary store removed");
        return ExitCode::from(128 + signo as u8);
    }
    match outcome {
        Ok(Ok(())) => {
            println!("\n# lab done: namespaces and the temporary store removed");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("\nlab failed: {e}\n(namespaces and the temporary store removed)");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("\nlab failed (panic above); namespaces and the temporary store removed");
            ExitCode::FAILURE
        }
    }
}

/// `spiderpool`: berth-ipam with its fallback data dir set to the lab's store.
fn plugin_ipam() -> ExitCode {
    let dir = PathBuf::from(std::env::var_os(LAB_DIR_VAR).unwrap_or_default());
    init_file_logging(&dir.join("log/berth-ipam.log"), level_filter(Some("debug")));
    berth_cni::run_process(&cni_plugin::BerthIpam::with_defaults(ModeDefaults {
        agent_socket: dir.join("run/agent.sock"),
        data_dir: dir.join("data"),
    }))
}

/// `veth`: berth-route, logging into the lab's dir.
fn plugin_route() -> ExitCode {
    let dir = PathBuf::from(std::env::var_os(LAB_DIR_VAR).unwrap_or_default());
    init_file_logging(
        &dir.join("log/berth-route.log"),
        level_filter(Some("debug")),
    );
    berth_cni::run_process(&netns_routing::BerthRoute::new())
}

fn say(cmd: &str) {
    println!("\n~# {cmd}");
}

/// A pod of the Deployment: its namespace, its sandbox id, and the results of its two NICs.
struct Pod {
    name: String,
    id: String,
    ns: Ns,
    args: String,
    results: BTreeMap<&'static str, Value>,
}

/// The lab: topology, store dir, the two networks and the pods; `Drop` deletes the pods
/// through their chains (what the runtime does), then the namespaces go with their guards.
struct Lab {
    dir: tempfile::TempDir,
    topo: SeedTopology,
    networks: [(&'static str, Chain); 2],
    pods: Vec<Pod>,
    serial: u32,
}

impl Lab {
    fn new() -> Res<Lab> {
        let dir = tempfile::Builder::new().prefix("berth-lab-").tempdir()?;
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin)?;
        let me = std::env::current_exe()?;
        for name in ["spiderpool", "veth"] {
            std::os::unix::fs::symlink(&me, bin.join(name))?;
        }
        let topo = SeedTopology::new(false);
        topo.add_cluster_ip(CLUSTER_IP, NODE_ENS192);
        let chain = |nad: &str| -> Res<Chain> {
            let mut chain = Chain::new(
                serde_json::from_str(nad)?,
                vec![bin.clone(), PathBuf::from(DEBIAN_CNI)],
                &topo.node,
            );
            chain
                .env
                .push((LAB_DIR_VAR.into(), dir.path().display().to_string()));
            Ok(chain)
        };
        // Multus: the default network is eth0, `k8s.v1.cni.cncf.io/networks` adds net1.
        let networks = [("eth0", chain(NAD_ENS192)?), ("net1", chain(NAD_ENS224)?)];
        Ok(Lab {
            dir,
            topo,
            networks,
            pods: Vec::new(),
            serial: 0,
        })
    }

    /// Runs `f` on the lab's store, opened for the call only (the plugins open it between).
    fn store<T>(
        &self,
        f: impl AsyncFnOnce(&Engine<ipam_store_sled::SledStore>) -> Res<T>,
    ) -> Res<T> {
        interrupted()?;
        let store = ipam_store_sled::SledStore::open(
            self.dir.path().join("data"),
            ipam_store_sled::OpenOptions::default(),
        )?;
        let engine = Engine::new(store);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(f(&engine))
    }

    fn apply(&self, name: &str, yaml: &str) -> Res<()> {
        let objects = manifest::parse(name, yaml)?;
        self.store(async |engine| {
            for object in objects {
                let key = object.key();
                let outcome = engine.apply(object).await?;
                println!("{}", table::applied(&key, outcome));
            }
            Ok(())
        })
    }

    fn subnets(&self) -> Res<()> {
        say("kubectl get spidersubnet");
        let items: Vec<SpiderSubnet> = self.store(async |e| Ok(e.store().list_as(None).await?))?;
        print!("{}", table::subnets(&items));
        Ok(())
    }

    fn pools(&self, with_ips: bool) -> Res<()> {
        say("kubectl get spiderippool");
        let items: Vec<SpiderIPPool> = self.store(async |e| Ok(e.store().list_as(None).await?))?;
        print!("{}", table::pools(&items, false));
        if with_ips {
            for p in &items {
                say(&format!(
                    "kubectl get spiderippool {} -o jsonpath='{{.spec.ips}}'",
                    p.metadata.name
                ));
                println!("{}", serde_json::to_string(&p.spec.ips)?);
            }
        }
        Ok(())
    }

    /// A pod of `test-app`: a namespace, then both networks added like Multus adds them.
    fn start_pod(&mut self) -> Res<()> {
        interrupted()?;
        self.serial += 1;
        let serial = self.serial;
        let name = format!("test-app-6f4594ff67-{}", suffix(serial));
        let id = format!("{:08x}{serial:03x}{}", std::process::id(), "0".repeat(53));
        let uid = format!("{:08x}-0000-4000-8000-{serial:012x}", std::process::id());
        let mut pod = Pod {
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};\
                 K8S_POD_UID={uid};K8S_POD_INFRA_CONTAINER_ID={id};BERTH_OWNER=Deployment/test-app"
            ),
            name,
            id,
            ns: Ns::new("pod"),
            results: BTreeMap::new(),
        };
        let netns = pod.ns.path();
        for (ifname, chain) in &self.networks {
            let a = ChainArgs {
                container_id: &pod.id,
                ifname,
                netns: Some(&netns),
                args: &pod.args,
            };
            match chain.add(&a) {
                Ok(result) => {
                    pod.results.insert(ifname, result);
                }
                Err((plugin, run)) => {
                    // What a runtime does after a failed ADD: DEL what was added.
                    self.pods.push(pod);
                    return Err(format!(
                        "ADD {ifname}: {plugin} failed: {}{}",
                        run.stdout_text(),
                        run.stderr
                    )
                    .into());
                }
            }
        }
        self.pods.push(pod);
        Ok(())
    }

    /// DEL of both networks (net1's first, each chain in reverse), then the namespace.
    fn stop_pod(&mut self, index: usize) -> Res<()> {
        let pod = self.pods.remove(index);
        let netns = pod.ns.path();
        let mut failures = Vec::new();
        for (ifname, chain) in self.networks.iter().rev() {
            let a = ChainArgs {
                container_id: &pod.id,
                ifname,
                netns: Some(&netns),
                args: &pod.args,
            };
            for (plugin, run) in chain.del(&a, pod.results.get(ifname)) {
                failures.push(format!(
                    "DEL {ifname}: {plugin}: {}{}",
                    run.stdout_text(),
                    run.stderr
                ));
            }
        }
        drop(pod);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; ").into())
        }
    }

    fn pods_table(&self) {
        say("kubectl get po -l app=test-app -o wide");
        let rows: Vec<Vec<String>> = self
            .pods
            .iter()
            .map(|p| {
                let ip = |nic| {
                    p.results
                        .get(nic)
                        .and_then(|r| r["ips"][0]["address"].as_str())
                        .and_then(|a| a.split('/').next())
                        .unwrap_or("<none>")
                        .to_owned()
                };
                vec![
                    p.name.clone(),
                    "1/1".into(),
                    "Running".into(),
                    ip("eth0"),
                    ip("net1"),
                    self.topo.node.name().to_owned(),
                ]
            })
            .collect();
        print!(
            "{}",
            table::render(&["NAME", "READY", "STATUS", "IP", "NET1-IP", "NODE"], &rows)
        );
    }

    fn show_pod(&self, index: usize) {
        let pod = &self.pods[index];
        for (cmd, args) in [
            ("ip a", vec!["a"]),
            ("ip r show", vec!["r", "show"]),
            ("ip rule show", vec!["rule", "show"]),
            (
                "ip route show table 100",
                vec!["route", "show", "table", "100"],
            ),
        ] {
            say(&format!("kubectl exec -ti {} -- {cmd}", pod.name));
            print!("{}", pod.ns.ip(&args));
        }
        let node_routes = self.topo.node.ip(&["route", "show"]);
        let host = netns_routing::plan::host_veth_name(&pod.id);
        say(&format!("ip route show | grep {host}    # on the node"));
        for line in node_routes.lines().filter(|l| l.contains(&host)) {
            println!("{line}");
        }
    }

    /// The article's claims, by traffic.
    fn prove(&self, index: usize) -> Res<()> {
        interrupted()?;
        let pod = &self.pods[index];
        let ip = |nic: &str| -> String {
            pod.results[nic]["ips"][0]["address"]
                .as_str()
                .and_then(|a| a.split('/').next())
                .unwrap_or_default()
                .to_owned()
        };
        let (eth0, net1) = (ip("eth0"), ip("net1"));
        let checks = [
            (
                format!("client {CLIENT} → {net1} (net1; gateway with rp_filter=1)"),
                self.topo.client.ping(&net1, None),
            ),
            (
                format!("client {CLIENT} → {eth0} (eth0)"),
                self.topo.client.ping(&eth0, None),
            ),
            (
                format!("pod → node {NODE_ENS192} (health checks, via veth0)"),
                pod.ns.ping(NODE_ENS192, None),
            ),
            (
                format!("node → pod {net1}"),
                self.topo.node.ping(&net1, None),
            ),
            (
                format!("pod → ClusterIP {CLUSTER_IP} (DNAT on the node, like kube-proxy)"),
                pod.ns.ping(CLUSTER_IP, None),
            ),
        ];
        println!("\n# by traffic:");
        let mut failed = Vec::new();
        for (what, ok) in checks {
            println!("  {} {what}", if ok { "ok  " } else { "FAIL" });
            if !ok {
                failed.push(what);
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!("unreachable: {}", failed.join(", ")).into())
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        while !self.pods.is_empty() {
            if let Err(e) = self.stop_pod(0) {
                eprintln!("teardown: {e}");
            }
        }
    }
}

fn suffix(n: u32) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = n.wrapping_mul(2_654_435_761) ^ std::process::id();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u32) as usize] as char;
            x /= ALPHABET.len() as u32;
            c
        })
        .collect()
}

fn run() -> Res<()> {
    interrupted()?;
    let mut lab = Lab::new()?;
    println!(
        "# the seed's network in namespaces: node {} (ens192 {NODE_ENS192}/16, ens224 {NODE_ENS224}/16), \
         gateway {} ({GW_192}, {GW_224}, rp_filter=1), client {} ({CLIENT})",
        lab.topo.node.name(),
        lab.topo.gateway.name(),
        lab.topo.client.name()
    );
    println!("# store and plugin logs: {}", lab.dir.path().display());

    println!("\n## SpiderSubnets of ens192 and ens224");
    say("kubectl apply -f examples/seed/subnets.yaml");
    lab.apply("subnets.yaml", SUBNETS)?;
    lab.subnets()?;

    println!("\n## The two NetworkAttachmentDefinition configs, verbatim");
    say("cat examples/seed/macvlan-conf-ens192.json");
    print!("{NAD_ENS192}");

    println!("\n## The Deployment: two pods, one fixed IP per NIC from auto pools of replicas + 1");
    say("kubectl create -f examples/seed/deployment.yaml");
    lab.apply("deployment.yaml", DEPLOYMENT)?;
    lab.start_pod()?;
    lab.start_pod()?;
    lab.pods_table();
    lab.pools(true)?;
    lab.subnets()?;
    lab.show_pod(0);
    lab.prove(0)?;

    println!("\n## Pods restarted: their IPs stay inside the pools");
    say("kubectl delete po -l app=test-app");
    while !lab.pods.is_empty() {
        interrupted()?;
        lab.stop_pod(0)?;
    }
    lab.start_pod()?;
    lab.start_pod()?;
    lab.pods_table();
    lab.prove(1)?;

    println!("\n## Scaled to 3: both pools grow from 3 to 4 IPs");
    say("kubectl scale deploy test-app --replicas 3");
    lab.store(async |e| {
        e.scale(WorkloadKind::Deployment, "default", "test-app", 3)
            .await?;
        Ok(())
    })?;
    lab.start_pod()?;
    lab.pods_table();
    lab.pools(false)?;
    lab.prove(2)?;

    println!("\n## Teardown: every pod deleted through its chains");
    while !lab.pods.is_empty() {
        lab.stop_pod(0)?;
    }
    lab.pools(false)?;
    Ok(())
}
