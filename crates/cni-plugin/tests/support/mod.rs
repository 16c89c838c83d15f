//! Shared helpers of the `berth-ipam` tests: running the binary like a runtime does, a
//! scratch dir per test, the seed's objects, the store opened in-process between plugin
//! calls, and the agent as a child process.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use berth_test_support::plugin::{self, Outcome};

use ipam_core::engine::{AnyObject, Engine};
use ipam_core::store::TypedStore;
use ipam_core::{IpRecord, SpiderIPPool, ips};
use ipam_store_sled::{OpenOptions, SledStore};
use serde_json::{Value, json};

/// The plugin binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_berth-ipam");

/// A scratch dir: data dir, log file, fake netns files, sockets. Removed when dropped.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("berth-ipam-test")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("log/berth-ipam.log")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/agent.sock")
    }

    /// A file standing for a container's netns (alive while it exists).
    pub fn fake_netns(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join("netns");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, b"").unwrap();
        p
    }

    /// The `ipam` object of embedded mode in this scratch dir.
    pub fn embedded_ipam(&self) -> Value {
        json!({
            "type": "spiderpool",
            "data_dir": self.data_dir(),
            "log_file_path": self.log(),
            "log_level": "DEBUG",
        })
    }

    /// The `ipam` object of agent mode on this scratch dir's socket.
    pub fn agent_ipam(&self) -> Value {
        json!({
            "type": "spiderpool",
            "ipam_unix_socket_path": self.socket(),
            "log_file_path": self.log(),
            "log_level": "DEBUG",
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

/// A network config for the IPAM plugin as macvlan forwards it.
pub fn conf(version: &str, network: &str, ipam: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "cniVersion": version,
        "name": network,
        "type": "macvlan",
        "master": "ens192",
        "mode": "bridge",
        "ipam": ipam,
    }))
    .unwrap()
}

/// Adds keys to a JSON object config.
pub fn with(conf: &[u8], extra: Value) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(conf).unwrap();
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::to_vec(&v).unwrap()
}

/// The environment of an attachment command.
pub fn attach_env<'a>(
    command: &'a str,
    container: &'a str,
    ifname: &'a str,
    netns: &'a str,
    args: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", container),
        ("CNI_IFNAME", ifname),
        ("CNI_NETNS", netns),
        ("CNI_PATH", "/opt/cni/bin"),
    ];
    if !args.is_empty() {
        env.push(("CNI_ARGS", args));
    }
    env
}

/// A command running the plugin with exactly `env` (nothing inherited) and piped stdio.
pub fn command(env: &[(&str, &str)]) -> Command {
    plugin::command(BIN.as_ref(), env)
}

/// Starts the plugin and feeds it stdin.
pub fn spawn(env: &[(&str, &str)], stdin: &[u8]) -> Child {
    plugin::spawn(command(env), stdin)
}

/// Runs the plugin once, like a runtime.
pub fn run(env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
    plugin::run(command(env), stdin)
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Opens the data dir's store in this process, runs `f` on an engine over it, and closes
/// it (plugins wait for the lock meanwhile).
pub fn with_engine<T>(data_dir: &Path, f: impl AsyncFnOnce(&Engine<SledStore>) -> T) -> T {
    let store = SledStore::open(data_dir, OpenOptions::new()).unwrap();
    let engine = Engine::new(store);
    rt().block_on(f(&engine))
}

/// Every record of every pool, by pool.
pub fn records(data_dir: &Path) -> BTreeMap<String, BTreeMap<IpAddr, IpRecord>> {
    with_engine(data_dir, async |e| e.records().await.unwrap())
}

/// Every allocated IP (with its holder's container id), whatever the pool.
pub fn held(data_dir: &Path) -> BTreeMap<IpAddr, String> {
    records(data_dir)
        .into_values()
        .flatten()
        .map(|(ip, r)| (ip, r.container_id.unwrap_or_default()))
        .collect()
}

/// The violations of `ipam_core::audit::safety` (no IP with two holders, …).
pub fn safety(data_dir: &Path) -> Vec<String> {
    with_engine(data_dir, async |e| {
        ipam_core::audit::safety(e.store()).await.unwrap()
    })
}

/// The documents of a YAML file of `examples/seed/`.
pub fn seed_objects(file: &str) -> Vec<AnyObject> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/seed")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            AnyObject::from_value(v).unwrap()
        })
        .collect()
}

/// Applies objects into the data dir through the library.
pub fn apply(data_dir: &Path, objects: Vec<AnyObject>) {
    with_engine(data_dir, async |e| {
        for o in objects {
            e.apply(o).await.unwrap();
        }
    })
}

/// A plain pool of the given range in `10.66.0.0/16` with gateway `10.66.0.1`.
pub fn pool(name: &str, range: &str) -> AnyObject {
    let mut p = SpiderIPPool::new(name, "10.66.0.0/16".parse().unwrap(), ips![range]);
    p.spec.gateway = Some("10.66.0.1".parse().unwrap());
    AnyObject::Pool(p)
}

/// The pools in the store.
pub fn pools(data_dir: &Path) -> BTreeMap<String, SpiderIPPool> {
    with_engine(data_dir, async |e| {
        e.store()
            .list_as::<SpiderIPPool>(None)
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.metadata.name.clone(), p))
            .collect()
    })
}

/// The test binary's entry that runs an agent when [`AgentProcess::start`] re-executes it.
pub const AGENT_DATA_DIR_VAR: &str = "BERTH_TEST_AGENT_DATA_DIR";
/// The socket the re-executed agent listens on.
pub const AGENT_SOCKET_VAR: &str = "BERTH_TEST_AGENT_SOCKET";
/// Its log file.
pub const AGENT_LOG_VAR: &str = "BERTH_TEST_AGENT_LOG";
/// Its detection defaults: `ip_conflict`, `gateway`, or both, comma-separated.
pub const AGENT_DETECTION_VAR: &str = "BERTH_TEST_AGENT_DETECTION";
/// The line the re-executed agent prints once its socket listens.
const LISTENING: &str = "berth-test-agent: listening";

/// Runs the agent if this process was started by [`AgentProcess::start`]; otherwise does
/// nothing. Call it from a test named as `AgentProcess::start` is told.
pub fn agent_entry() {
    let (Some(dir), Some(socket)) = (
        std::env::var_os(AGENT_DATA_DIR_VAR),
        std::env::var_os(AGENT_SOCKET_VAR),
    ) else {
        return;
    };
    if let Some(log) = std::env::var_os(AGENT_LOG_VAR) {
        berth_cni::logging::init_file_logging(
            Path::new(&log),
            berth_cni::logging::level_filter(Some("debug")),
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let shutdown = cni_plugin::agent::termination_signal().unwrap();
        let detection = std::env::var(AGENT_DETECTION_VAR).unwrap_or_default();
        let bound = cni_plugin::agent::bind_data_dir(Path::new(&dir), Path::new(&socket))
            .await
            .unwrap()
            .with_detection(cni_plugin::ipam::probe::Detection {
                ip_conflict: detection.contains("ip_conflict"),
                gateway: detection.contains("gateway"),
            });
        // The parent waits for this line: the socket listens from here on.
        println!("{LISTENING}");
        bound.serve(shutdown).await.unwrap();
    });
    std::process::exit(0);
}

/// An agent serving a data dir, in a child process (this test binary, re-executed to run
/// the test `entry`, which calls [`agent_entry`]). Killed when dropped.
pub struct AgentProcess {
    child: Option<Child>,
    pub socket: PathBuf,
}

impl AgentProcess {
    pub fn start(entry: &str, data_dir: &Path, socket: &Path, log: &Path) -> AgentProcess {
        AgentProcess::start_with(entry, data_dir, socket, log, &[])
    }

    /// [`AgentProcess::start`] with more environment (e.g. [`AGENT_DETECTION_VAR`]).
    pub fn start_with(
        entry: &str,
        data_dir: &Path,
        socket: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> AgentProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([entry, "--exact", "--nocapture", "--test-threads=1"])
            .env(AGENT_DATA_DIR_VAR, data_dir)
            .env(AGENT_SOCKET_VAR, socket)
            .env(AGENT_LOG_VAR, log)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // libtest may print "test ... " on the same line first.
        let listening = lines
            .by_ref()
            .any(|l| l.is_ok_and(|l| l.ends_with(LISTENING)));
        // Keep draining the child's output so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let mut agent = AgentProcess {
            child: Some(child),
            socket: socket.to_path_buf(),
        };
        if !listening {
            let status = agent.child.as_mut().unwrap().wait().unwrap();
            panic!("the agent exited at start: {status}");
        }
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        child.wait().unwrap()
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
