//! Shared helpers of the `berth-ipam` tests: running the binary like a runtime does, a
//! scratch dir per test, the seed's objects, the store opened in-process between plugin
//! calls, and the agent as a child process.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipam_core::engine::{AnyObject, Engine};
use ipam_core::store::TypedStore;
use ipam_core::{IpRecord, SpiderIPPool, ips};
use ipam_store_sled::{OpenOptions, SledStore};
use serde_json::{Value, json};

/// The plugin binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_berth-ipam");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique in this machine's current runs: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

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

/// What one plugin run printed and how it exited.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Outcome {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?}; stderr: {}",
                String::from_utf8_lossy(&self.stdout),
                self.stderr
            )
        })
    }

    /// The JSON of a successful run (panics with the error otherwise).
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.code,
            0,
            "plugin failed: {}; stderr: {}",
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        );
        if self.stdout.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// The CNI error of a failed run.
    pub fn err(&self) -> Value {
        assert_eq!(
            self.code,
            1,
            "expected a CNI error, got {}",
            String::from_utf8_lossy(&self.stdout)
        );
        let v = self.json();
        assert!(v["code"].is_u64(), "not a CNI error: {v}");
        v
    }

    /// The first address of an ADD result.
    pub fn ip(&self) -> IpAddr {
        let v = self.ok();
        let a = v["ips"][0]["address"].as_str().unwrap();
        a.split('/').next().unwrap().parse().unwrap()
    }
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
    let mut c = Command::new(BIN);
    c.env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Starts the plugin and feeds it stdin.
pub fn spawn(env: &[(&str, &str)], stdin: &[u8]) -> Child {
    let mut child = command(env).spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    // A killed child closes the pipe early: ignore the error.
    let _ = pipe.write_all(stdin);
    drop(pipe);
    child
}

/// Waits for a plugin started with [`spawn`].
pub fn finish(child: Child) -> Outcome {
    let out = child.wait_with_output().unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the plugin once, like a runtime.
pub fn run(env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
    finish(spawn(env, stdin))
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
        cni_plugin::agent::serve_data_dir(Path::new(&dir), Path::new(&socket), shutdown)
            .await
            .unwrap();
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
        let child = Command::new(std::env::current_exe().unwrap())
            .args([entry, "--exact", "--nocapture", "--test-threads=1"])
            .env(AGENT_DATA_DIR_VAR, data_dir)
            .env(AGENT_SOCKET_VAR, socket)
            .env(AGENT_LOG_VAR, log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut agent = AgentProcess {
            child: Some(child),
            socket: socket.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // The agent writes its record once its socket listens.
        let record = cni_plugin::agent::record::read_record;
        while record(data_dir).as_deref() != Some(socket)
            || !cni_plugin::agent::record::socket_is_live(socket)
        {
            if let Some(status) = agent.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the agent exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "the agent did not start");
            std::thread::sleep(Duration::from_millis(5));
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

/// Whether this process runs as root (netns tests need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
