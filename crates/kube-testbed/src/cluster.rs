//! [`Cluster`]: a whole control plane in a temporary directory, and its fault hooks.

use std::ffi::OsString;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use nix::sys::signal::Signal;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cni::{NoIpam, PodNetwork};
use crate::error::kube_error;
use crate::kubelet::{self, KubeletStats, Kubelets};
use crate::pki::{Identity, Pki, PkiFiles};
use crate::process::{Process, Reaper};
use crate::proxy::Proxy;
use crate::{Error, binaries, io_error};

/// How to start a [`Cluster`].
#[derive(Clone)]
pub struct Options {
    nodes: usize,
    network: Arc<dyn PodNetwork>,
    pods_in_flight: usize,
    max_pods_per_node: u32,
    start_timeout: Duration,
    apiserver_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 1,
            network: Arc::new(NoIpam),
            pods_in_flight: 4,
            max_pods_per_node: 110,
            start_timeout: Duration::from_secs(120),
            apiserver_args: Vec::new(),
        }
    }
}

impl Options {
    /// The number of simulated nodes (default 1), named `kwok-node-0`, `kwok-node-1`, ...
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// What the kubelet stand-ins call for each pod (default [`NoIpam`]: `/bin/true`, no IP).
    /// [`Cluster::set_pod_network`] overrides it per namespace.
    pub fn network(mut self, network: impl PodNetwork) -> Self {
        self.network = Arc::new(network);
        self
    }

    /// How many pods one node's stand-in sets up or tears down at once (default 4).
    pub fn pods_in_flight(mut self, pods: usize) -> Self {
        self.pods_in_flight = pods;
        self
    }

    /// The pods a node takes (`status.allocatable.pods`, default 110 as a kubelet's).
    pub fn max_pods_per_node(mut self, pods: u32) -> Self {
        self.max_pods_per_node = pods;
        self
    }

    /// How long the whole start may take before it fails (default 120 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// An extra kube-apiserver flag (`--audit-log-path=...`); later flags win.
    pub fn apiserver_arg(mut self, flag: impl Into<String>) -> Self {
        self.apiserver_args.push(flag.into());
        self
    }
}

/// A simulated node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimNode {
    /// Its name (`kwok-node-0`).
    pub name: String,
    /// Its InternalIP: an address of 127.0.0.0/8, so that nothing that dials a node ever
    /// leaves the machine's loopback.
    pub ip: String,
}

/// The annotation by which kwok knows the nodes it keeps alive.
const KWOK_NODE: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

/// The component processes of one cluster, in start order, and the reaper that leads their
/// process group. Dropping it ends them all.
struct Plane {
    reaper: Mutex<Reaper>,
    processes: Mutex<Vec<Arc<Process>>>,
    dir: PathBuf,
    stopped: AtomicBool,
}

impl Plane {
    fn spawn(&self, name: &str, program: &Path, args: Vec<String>) -> Result<Arc<Process>, Error> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let process = Arc::new(Process::spawn(
            name,
            program,
            args.into_iter().map(OsString::from).collect(),
            log,
            &self.reaper.lock().expect("reaper"),
        )?);
        self.processes
            .lock()
            .expect("processes")
            .push(process.clone());
        Ok(process)
    }

    fn processes(&self) -> Vec<Arc<Process>> {
        self.processes.lock().expect("processes").clone()
    }

    fn group(&self) -> i32 {
        self.reaper.lock().expect("reaper").group()
    }

    fn start_again(&self, process: &Process) -> Result<(), Error> {
        process.start(&self.reaper.lock().expect("reaper"))
    }

    /// The first component that exited, as an error carrying its log.
    fn exited(&self) -> Option<Error> {
        self.processes().iter().find_map(|p| {
            p.exited().map(|status| Error::Exited {
                component: p.name().to_owned(),
                status: status.to_string(),
                log_tail: p.log_tail(40),
            })
        })
    }

    /// The end of every component's log.
    fn log_tails(&self, lines: usize) -> String {
        let mut text = String::new();
        for p in self.processes() {
            text.push_str(&format!(
                "----- {} ({}) -----\n{}\n",
                p.name(),
                p.log().display(),
                p.log_tail(lines)
            ));
        }
        text
    }

    /// Ends every component (SIGKILL: the cluster's data is thrown away, and a graceful stop of
    /// etcd and the API server takes seconds) and lets the reaper remove the directory.
    fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        for p in self.processes().iter().rev() {
            p.kill();
        }
        self.reaper.lock().expect("reaper").finish();
        // The reaper removes the directory; if it could not, do it here.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok
/// with simulated nodes, a kubelet stand-in per node, and a fault proxy.
///
/// Everything listens on 127.0.0.1, on free ports, and lives in one temporary directory. Dropping
/// the cluster (or [`Cluster::stop`]) ends every process and removes the directory; if the test
/// process dies first, the reaper does it (see the crate root).
pub struct Cluster {
    plane: Plane,
    bin: PathBuf,
    pki: Arc<Pki>,
    etcd: Arc<Process>,
    apiserver: Arc<Process>,
    etcd_client_port: u16,
    apiserver_addr: SocketAddr,
    admin_kubeconfig: PathBuf,
    config: kube::Config,
    nodes: Vec<SimNode>,
    kubelets: Arc<Kubelets>,
    proxy: Proxy,
    runtime: Option<tokio::runtime::Runtime>,
    started_in: Duration,
}

/// Free ports of 127.0.0.1: bound, read, released. A port handed out once is not handed out
/// again by this process, so two clusters of one test binary never collide.
fn free_port() -> Result<u16, Error> {
    static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| io_error("bind", Path::new("127.0.0.1:0"), e))?;
        let port = listener
            .local_addr()
            .map_err(|e| io_error("read the address of", Path::new("127.0.0.1:0"), e))?
            .port();
        let mut taken = TAKEN.lock().expect("taken ports");
        if !taken.contains(&port) {
            taken.push(port);
            return Ok(port);
        }
    }
}

/// Polls `check` every 100 ms until it says yes, a component exits, or `deadline` passes.
async fn wait_for<F, Fut>(
    plane: &Plane,
    what: &str,
    deadline: Instant,
    mut check: F,
) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, String>>,
{
    let started = Instant::now();
    let mut last = String::new();
    loop {
        if let Some(exited) = plane.exited() {
            return Err(exited);
        }
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            let what = if last.is_empty() {
                what.to_owned()
            } else {
                format!("{what} (last error: {last})")
            };
            return Err(Error::Timeout {
                what,
                waited: started.elapsed(),
                log_tail: plane.log_tails(15),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /health` of etcd's client URL, over plain HTTP on loopback.
async fn etcd_healthy(port: u16) -> Result<bool, String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer.contains(r#""health":"true""#))
}

async fn apiserver_ready(client: &kube::Client) -> Result<bool, String> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .expect("a static request is valid");
    match client.request_text(request).await {
        Ok(text) => Ok(text.trim() == "ok"),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads a kubeconfig file into a kube [`kube::Config`].
pub async fn config_from(path: &Path) -> Result<kube::Config, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error("read", path, e))?;
    let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))
}

fn write_file(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|e| io_error("write", path, e))
}

impl Cluster {
    /// Starts a control plane and waits until it serves: the API server's `/readyz` answers ok,
    /// the controller-manager and the scheduler hold their leases, every node is Ready, and the
    /// `default` namespace has its service account.
    ///
    /// The first call of a process builds the components if they are missing or stale
    /// (`scripts/kube-testbin`); that takes minutes once per machine, seconds after.
    pub async fn start(options: Options) -> Result<Cluster, Error> {
        let started = Instant::now();
        let bin = tokio::task::spawn_blocking(binaries::dir)
            .await
            .expect("the build thread does not panic")?;
        let deadline = Instant::now() + options.start_timeout;

        let dir = tempfile::Builder::new()
            .prefix("kube-testbed-")
            .tempdir()
            .map_err(|e| io_error("create", &std::env::temp_dir(), e))?
            .keep();
        for sub in ["logs", "kubeconfigs", "netns"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| io_error("create", &path, e))?;
        }
        let plane = Plane {
            reaper: Mutex::new(Reaper::start(&dir)?),
            processes: Mutex::new(Vec::new()),
            dir: dir.clone(),
            stopped: AtomicBool::new(false),
        };
        let (pki, files) = Pki::create(&dir.join("pki"))?;

        // etcd, with fsync as in production.
        let etcd_client_port = free_port()?;
        let peer = format!("http://127.0.0.1:{}", free_port()?);
        let client_url = format!("http://127.0.0.1:{etcd_client_port}");
        let etcd = plane.spawn(
            "etcd",
            &bin.join("etcd"),
            vec![
                "--name=kube-testbed".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=kube-testbed={peer}"),
                "--log-level=warn".into(),
            ],
        )?;
        wait_for(&plane, "etcd answering /health", deadline, || {
            etcd_healthy(etcd_client_port)
        })
        .await?;

        let apiserver_port = free_port()?;
        let apiserver_addr = SocketAddr::from(([127, 0, 0, 1], apiserver_port));
        let apiserver = plane.spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            apiserver_args(
                &dir,
                &files,
                &client_url,
                apiserver_port,
                &options.apiserver_args,
            ),
        )?;
        let server = format!("https://{apiserver_addr}");
        let admin_kubeconfig = dir.join("kubeconfigs/admin.yaml");
        write_file(
            &admin_kubeconfig,
            &pki.kubeconfig(&server, &Identity::admin("kube-testbed-admin"))?,
        )?;
        let config = config_from(&admin_kubeconfig).await?;
        let client = kube::Client::try_from(config.clone())
            .map_err(kube_error("build a client for the API server"))?;
        wait_for(&plane, "kube-apiserver answering /readyz", deadline, || {
            apiserver_ready(&client)
        })
        .await?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kube-testbed")
            .enable_all()
            .build()
            .map_err(|e| io_error("start the runtime of", &dir, e))?;
        let proxy = runtime
            .spawn(Proxy::start(pki.clone(), apiserver_addr))
            .await
            .expect("the proxy's start does not panic")?;

        // The controller-manager and the scheduler, each under its own user name, so that an
        // audit log tells their requests apart; both are in system:masters.
        for (component, user) in [
            ("kube-controller-manager", "system:kube-controller-manager"),
            ("kube-scheduler", "system:kube-scheduler"),
        ] {
            let kubeconfig = dir.join(format!("kubeconfigs/{component}.yaml"));
            write_file(
                &kubeconfig,
                &pki.kubeconfig(&server, &Identity::admin(user))?,
            )?;
            let mut args = vec![
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
                format!("--cert-dir={}", dir.join(component).display()),
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics".into(),
                "--leader-elect=true".into(),
            ];
            if component == "kube-controller-manager" {
                args.extend([
                    format!(
                        "--service-account-private-key-file={}",
                        files.sa_key.display()
                    ),
                    format!("--root-ca-file={}", files.ca.display()),
                    "--use-service-account-credentials=false".into(),
                    "--cluster-name=kube-testbed".into(),
                    "--controllers=*".into(),
                ]);
            }
            plane.spawn(component, &bin.join(component), args)?;
        }

        // The nodes, then kwok to keep them alive.
        let nodes: Vec<SimNode> = (0..options.nodes)
            .map(|i| SimNode {
                name: format!("kwok-node-{i}"),
                ip: format!("127.0.1.{}", i + 1),
            })
            .collect();
        let node_api: Api<Node> = Api::all(client.clone());
        for node in &nodes {
            let object: Node = serde_json::from_value(node_object(node, options.max_pods_per_node))
                .expect("the node object matches the Node type");
            node_api
                .create(&PostParams::default(), &object)
                .await
                .map_err(kube_error(format!("create node {}", node.name)))?;
        }
        let stages = Command::new(bin.join("kube-testbin"))
            .arg("kwok-stages")
            .output()
            .map_err(|source| Error::Spawn {
                program: "kube-testbin kwok-stages".into(),
                source,
            })?;
        let stages_path = dir.join("kwok-stages.yaml");
        write_file(&stages_path, &String::from_utf8_lossy(&stages.stdout))?;
        let kwok_kubeconfig = dir.join("kubeconfigs/kwok.yaml");
        write_file(
            &kwok_kubeconfig,
            &pki.kubeconfig(&server, &Identity::admin("kwok"))?,
        )?;
        plane.spawn(
            "kwok",
            &bin.join("kwok"),
            vec![
                format!("--kubeconfig={}", kwok_kubeconfig.display()),
                format!("--config={}", stages_path.display()),
                "--manage-all-nodes=false".into(),
                format!(
                    "--manage-nodes-with-annotation-selector={}={}",
                    KWOK_NODE.0, KWOK_NODE.1
                ),
                "--manage-nodes-with-label-selector=".into(),
                "--manage-single-node=".into(),
                "--node-lease-duration-seconds=40".into(),
            ],
        )?;

        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
        for lease in ["kube-controller-manager", "kube-scheduler"] {
            wait_for(
                &plane,
                &format!("{lease} holding its lease"),
                deadline,
                || {
                    let leases = leases.clone();
                    async move {
                        let held = leases
                            .get_opt(lease)
                            .await
                            .map_err(|e| e.to_string())?
                            .and_then(|l| l.spec?.holder_identity)
                            .is_some();
                        Ok(held)
                    }
                },
            )
            .await?;
        }
        wait_for(&plane, "every node Ready", deadline, || {
            let node_api = node_api.clone();
            let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
            async move {
                for name in names {
                    let node = node_api.get(&name).await.map_err(|e| e.to_string())?;
                    if !is_ready(&node) {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        })
        .await?;
        wait_for_service_account(&plane, &client, "default", deadline).await?;

        let kubelets = Kubelets::new(kubelet::Options {
            network: options.network.clone(),
            pods_in_flight: options.pods_in_flight,
            process_group: plane.group(),
            netns_dir: dir.join("netns"),
        });
        for node in &nodes {
            let kubelets = kubelets.clone();
            let config = config.clone();
            let node = node.clone();
            runtime.spawn(async move {
                match kube::Client::try_from(config) {
                    Ok(client) => kubelets.run_node(client, node.name, node.ip).await,
                    Err(e) => tracing::error!("kubelet stand-in of {}: {e}", node.name),
                }
            });
        }

        Ok(Cluster {
            plane,
            bin,
            pki,
            etcd,
            apiserver,
            etcd_client_port,
            apiserver_addr,
            admin_kubeconfig,
            config,
            nodes,
            kubelets,
            proxy,
            runtime: Some(runtime),
            started_in: started.elapsed(),
        })
    }

    /// How long [`Cluster::start`] took, building included.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// A new admin client (`system:masters`) talking to the API server directly. Call it from the
    /// runtime that will use it: a kube client's connections belong to the runtime it was made on.
    pub fn client(&self) -> Result<kube::Client, Error> {
        kube::Client::try_from(self.config.clone()).map_err(kube_error("build a client"))
    }

    /// The admin client's configuration, to change (timeouts, say) before building a client.
    pub fn config(&self) -> kube::Config {
        self.config.clone()
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// Writes a kubeconfig for `identity` against the API server directly and returns its path.
    pub fn kubeconfig_for(&self, identity: &Identity) -> Result<PathBuf, Error> {
        self.write_kubeconfig(&self.apiserver_url(), identity, "direct")
    }

    /// Writes a kubeconfig for `identity` that goes through the fault [`Proxy`].
    pub fn proxy_kubeconfig(&self, identity: &Identity) -> Result<PathBuf, Error> {
        self.write_kubeconfig(&self.proxy.url(), identity, "proxy")
    }

    /// The admin configuration through the fault proxy.
    pub async fn proxy_config(&self) -> Result<kube::Config, Error> {
        config_from(&self.proxy_kubeconfig(&Identity::admin("kube-testbed-admin"))?).await
    }

    fn write_kubeconfig(
        &self,
        server: &str,
        identity: &Identity,
        via: &str,
    ) -> Result<PathBuf, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let user: String = identity
            .user
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self
            .plane
            .dir
            .join(format!("kubeconfigs/{user}-{via}-{n}.yaml"));
        write_file(&path, &self.pki.kubeconfig(server, identity)?)?;
        Ok(path)
    }

    /// The certificates: to issue client or serving certificates (a webhook's) from the cluster CA.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// `https://127.0.0.1:<port>` of the API server.
    pub fn apiserver_url(&self) -> String {
        format!("https://{}", self.apiserver_addr)
    }

    /// `http://127.0.0.1:<port>` of etcd.
    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_client_port)
    }

    /// The directory of the control plane's executables.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The cluster's temporary directory (logs in `logs/`, kubeconfigs in `kubeconfigs/`).
    pub fn dir(&self) -> &Path {
        &self.plane.dir
    }

    /// A `kubectl` command with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.bin.join("kubectl"));
        command.arg("--kubeconfig").arg(&self.admin_kubeconfig);
        command
    }

    /// The simulated nodes.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// The fault proxy in front of the API server.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The pids of the running components, by name (for tests of the clean-up).
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.plane
            .processes()
            .iter()
            .filter_map(|p| Some((p.name().to_owned(), p.pid()?)))
            .collect()
    }

    /// The pods of `namespace` use `network` from now on instead of the cluster's default.
    pub fn set_pod_network(&self, namespace: &str, network: impl PodNetwork) {
        self.kubelets.set_network(namespace, Arc::new(network));
    }

    /// What the kubelet stand-ins have done so far.
    pub fn kubelet_stats(&self) -> KubeletStats {
        self.kubelets.stats()
    }

    /// Freezes the API server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause_apiserver(&self) -> Result<(), Error> {
        self.apiserver.signal(Signal::SIGSTOP)
    }

    /// Lets a paused API server go on (SIGCONT).
    pub fn resume_apiserver(&self) -> Result<(), Error> {
        self.apiserver.signal(Signal::SIGCONT)
    }

    /// Kills the API server (SIGKILL), as a crash would.
    pub fn kill_apiserver(&self) {
        self.apiserver.kill();
    }

    /// Starts the API server again, on the same port, and waits until it is ready.
    pub async fn restart_apiserver(&self) -> Result<(), Error> {
        self.plane.start_again(&self.apiserver)?;
        self.wait_apiserver_ready().await
    }

    /// Kills etcd (SIGKILL). The API server stays up and fails what needs storage.
    pub fn kill_etcd(&self) {
        self.etcd.kill();
    }

    /// Starts etcd again on its data, and waits until the API server is ready again.
    pub async fn restart_etcd(&self) -> Result<(), Error> {
        self.plane.start_again(&self.etcd)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = self.etcd_client_port;
        wait_for(&self.plane, "etcd answering /health", deadline, || {
            etcd_healthy(port)
        })
        .await?;
        self.wait_apiserver_ready().await
    }

    async fn wait_apiserver_ready(&self) -> Result<(), Error> {
        let client = self.client()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        wait_for(
            &self.plane,
            "kube-apiserver answering /readyz",
            deadline,
            || apiserver_ready(&client),
        )
        .await
    }

    /// Creates a namespace `<prefix>-<pid>-<n>` for one test, and waits for its default service
    /// account (pods are refused until it exists). The namespace is deleted when the guard drops.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace<'_>, Error> {
        let name = unique_name(prefix);
        let client = self.client()?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))
            .expect("a namespace object");
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .map_err(kube_error(format!("create namespace {name}")))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        wait_for_service_account(&self.plane, &client, &name, deadline).await?;
        Ok(TestNamespace {
            name,
            cluster: self,
        })
    }

    /// The last `lines` lines of every component's log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.plane.log_tails(lines)
    }

    /// Copies every component's log to `target/kube/logs/<cluster directory name>/` and returns
    /// that directory: logs outlive the cluster's directory, which stopping removes.
    pub fn keep_logs(&self) -> Result<PathBuf, Error> {
        let name = self
            .plane
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kept = binaries::repository().join("target/kube/logs").join(name);
        std::fs::create_dir_all(&kept).map_err(|e| io_error("create", &kept, e))?;
        for p in self.plane.processes() {
            let to = kept.join(format!("{}.log", p.name()));
            std::fs::copy(p.log(), &to).map_err(|e| io_error("copy", p.log(), e))?;
        }
        Ok(kept)
    }

    /// Prints the end of every log and keeps the whole logs, when the current thread panics.
    fn report_if_panicking(&self) {
        if std::thread::panicking() {
            let kept = match self.keep_logs() {
                Ok(path) => format!("whole logs kept in {}", path.display()),
                Err(e) => format!("logs not kept: {e}"),
            };
            eprintln!(
                "kube-testbed: the test failed; the end of each component's log ({kept}):\n{}",
                self.log_tails(30)
            );
        }
    }

    /// Ends every process of the cluster and removes its directory.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        self.plane.stop();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.report_if_panicking();
        self.shutdown();
    }
}

fn apiserver_args(
    dir: &Path,
    files: &PkiFiles,
    etcd: &str,
    port: u16,
    extra: &[String],
) -> Vec<String> {
    let mut args = vec![
        format!("--etcd-servers={etcd}"),
        "--bind-address=127.0.0.1".into(),
        // Loopback is not a valid address for the `kubernetes` Service's endpoints; with no
        // endpoint reconciler there are none, and nothing in the cluster dials the API server
        // through a ClusterIP.
        "--advertise-address=127.0.0.1".into(),
        "--endpoint-reconciler-type=none".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", dir.join("kube-apiserver").display()),
        format!("--tls-cert-file={}", files.apiserver.0.display()),
        format!("--tls-private-key-file={}", files.apiserver.1.display()),
        format!("--client-ca-file={}", files.ca.display()),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", files.sa_pub.display()),
        format!(
            "--service-account-signing-key-file={}",
            files.sa_key.display()
        ),
        "--service-cluster-ip-range=10.96.0.0/12".into(),
        "--authorization-mode=RBAC".into(),
        "--allow-privileged=true".into(),
        // The fault proxy is a front proxy: it passes on who its client is.
        format!(
            "--requestheader-client-ca-file={}",
            files.front_proxy_ca.display()
        ),
        format!(
            "--requestheader-allowed-names={}",
            crate::pki::FRONT_PROXY_CLIENT
        ),
        "--requestheader-username-headers=X-Remote-User".into(),
        "--requestheader-group-headers=X-Remote-Group".into(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
    ];
    args.extend(extra.iter().cloned());
    args
}

/// A node as a real one looks to the scheduler: the usual labels, an InternalIP, capacity.
fn node_object(node: &SimNode, max_pods: u32) -> serde_json::Value {
    let resources = json!({"cpu": "64", "memory": "256Gi", "pods": max_pods.to_string()});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "kube-testbed",
                "type": "kwok",
            },
            "annotations": {
                KWOK_NODE.0: KWOK_NODE.1,
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {"providerID": format!("kwok://{}", node.name)},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.ip},
                {"type": "Hostname", "address": node.name},
            ],
            "allocatable": resources,
            "capacity": resources,
        },
    })
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_for_service_account(
    plane: &Plane,
    client: &kube::Client,
    namespace: &str,
    deadline: Instant,
) -> Result<(), Error> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    wait_for(
        plane,
        &format!("the default service account of namespace {namespace}"),
        deadline,
        || {
            let accounts = accounts.clone();
            async move {
                Ok(accounts
                    .get_opt("default")
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some())
            }
        },
    )
    .await
}

/// `<prefix>-<pid>-<n>`: unique within the machine while this process lives, and a valid name
/// for any Kubernetes object.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A namespace of one test on a (possibly shared) cluster. Dropping it deletes the namespace in
/// the background, and, when the test is failing, prints the end of the components' logs.
pub struct TestNamespace<'a> {
    name: String,
    cluster: &'a Cluster,
}

impl TestNamespace<'_> {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for TestNamespace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for TestNamespace<'_> {
    fn drop(&mut self) {
        self.cluster.report_if_panicking();
        let Some(runtime) = self.cluster.runtime.as_ref() else {
            return;
        };
        let config = self.cluster.config.clone();
        let name = self.name.clone();
        runtime.spawn(async move {
            if let Ok(client) = kube::Client::try_from(config) {
                let namespaces: Api<Namespace> = Api::all(client);
                let _ = namespaces.delete(&name, &DeleteParams::default()).await;
            }
        });
    }
}

/// A cluster shared by the tests of one test binary, started by the first test that asks for it.
///
/// ```no_run
/// use kube_testbed::{Options, SharedCluster};
///
/// static CLUSTER: SharedCluster = SharedCluster::new(|| Options::default().nodes(2));
///
/// #[tokio::test]
/// async fn pods_run() {
///     let cluster = CLUSTER.get().await;
///     let ns = cluster.namespace("pods-run").await.unwrap();
///     // ... create objects in `ns` with `cluster.client()` ...
/// }
/// ```
///
/// A `static` is never dropped: the cluster's reaper ends it when the test process exits, however
/// it exits. Tests that share it use a namespace each ([`Cluster::namespace`]) and name prefixes
/// ([`unique_name`]) for cluster-scoped objects.
pub struct SharedCluster {
    cell: tokio::sync::OnceCell<Result<Cluster, String>>,
    options: fn() -> Options,
}

impl SharedCluster {
    /// A cluster that will be started with `options()` on first use.
    pub const fn new(options: fn() -> Options) -> Self {
        Self {
            cell: tokio::sync::OnceCell::const_new(),
            options,
        }
    }

    /// The cluster, started on the first call. Panics if it could not start: every test that
    /// shares it fails with the same message, without trying again.
    pub async fn get(&'static self) -> &'static Cluster {
        let started = self
            .cell
            .get_or_init(|| async {
                Cluster::start((self.options)())
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        match started {
            Ok(cluster) => cluster,
            Err(e) => panic!("the shared test cluster did not start: {e}"),
        }
    }
}
