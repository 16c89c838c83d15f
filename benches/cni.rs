//! Whole-process CNI benchmark: `berth-ipam` (agent mode and embedded mode) against Debian's
//! `host-local`, each invoked as a container runtime invokes an IPAM plugin — one process per
//! ADD or DEL, config on stdin, `CNI_*` in the environment.
//!
//! For each scenario (an empty store, then a store already holding 5,000 allocations) it runs N
//! ADDs of distinct containers, then their N DELs, rotating through the contenders
//! invocation by invocation so that they share the machine's state, and prints the median time
//! of one invocation per contender and the ratios to host-local. Nothing is asserted.
//!
//! ```text
//! cargo build --release -p cni-plugin -p berth
//! scripts/build-plugins                               # optional: the static plugin too
//! cargo bench -p berth-benches --bench cni            # N = 200; BERTH_BENCH_N=500 for more
//! ```
//!
//! When `scripts/build-plugins` has built the static `berth-ipam`, it runs beside the ordinary
//! one in agent mode. A last row, `/bin/true` fed the same way, is the floor: what starting any
//! process costs here, which no plugin can go below.
//!
//! host-local keeps one file per IP and, on every ADD and DEL, reads every file of its data dir
//! to look for the container (`GetByID`); Berth looks up one pool. Embedded mode also opens the
//! sled store in every process (a few milliseconds); agent mode sends one HTTP request to the
//! `berth agent` that holds it open.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipam_core::engine::{AllocateRequest, AnyObject, Engine};
use ipam_core::{NicRequest, PodContext};
use ipam_core::{SpiderIPPool, ips};
use ipam_store_sled::{OpenOptions, SledStore};

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
/// Allocations already in the store in the second scenario (50 in the `cargo test` smoke run).
const PRELOAD: u32 = 5_000;
const PRELOAD_SMOKE: u32 = 50;

/// The directory holding the workspace's release binaries (this bench runs from
/// `<target>/release/deps/`).
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/release")
        .to_path_buf()
}

struct Contender {
    name: &'static str,
    binary: PathBuf,
    config: String,
}

impl Contender {
    fn invoke(&self, command: &str, container: &str, netns: &Path) -> Duration {
        let started = Instant::now();
        let mut child: Child = Command::new(&self.binary)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot run {}: {e}", self.name, self.binary.display()));
        match child
            .stdin
            .take()
            .expect("stdin")
            .write_all(self.config.as_bytes())
        {
            // The floor's /bin/true reads nothing; a plugin that exits early fails below.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.expect("write stdin"),
        }
        let out = child.wait_with_output().expect("wait");
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "{} {command} {container} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        took
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// A data dir with one pool covering a /16 and `preload` allocations in it.
fn berth_data_dir(dir: &Path, preload: u32, rt: &tokio::runtime::Runtime, netns: &Path) {
    rt.block_on(async {
        let store = SledStore::open(dir, OpenOptions::default()).expect("open sled");
        let engine = Engine::new(store);
        let pool = SpiderIPPool::new(
            "bench",
            "10.201.0.0/16".parse().unwrap(),
            ips!["10.201.0.0/16"],
        );
        engine
            .apply(AnyObject::Pool(pool))
            .await
            .expect("apply pool");
        if preload > 0 {
            let requests: Vec<AllocateRequest> = (0..preload)
                .map(|i| AllocateRequest {
                    pod: PodContext {
                        namespace: "default".into(),
                        name: format!("preload-{i}"),
                        ..Default::default()
                    },
                    pod_uid: format!("preload-{i}"),
                    container_id: format!("preload{i}"),
                    netns: Some(netns.display().to_string()),
                    nics: vec![NicRequest {
                        interface: "eth0".into(),
                        network: Some("bench".into()),
                        default_ipv4_pools: vec!["bench".into()],
                        ..Default::default()
                    }],
                })
                .collect();
            // Many at once: the engine merges them into few pool writes.
            for chunk in requests.chunks(250) {
                let all = chunk.iter().map(|r| engine.allocate(r));
                for r in futures::future::join_all(all).await {
                    r.expect("preload allocation");
                }
            }
        }
    });
}

/// host-local's data dir with `preload` allocations in its own format (one file per IP holding
/// `<container id>\r\n<ifname>`, and the last reserved IP).
fn host_local_preload(dir: &Path, network: &str, preload: u32) {
    let d = dir.join(network);
    std::fs::create_dir_all(&d).unwrap();
    let mut last = String::new();
    for i in 0..preload {
        let n = i + 2; // 10.200.0.2 onwards (.1 is the gateway)
        let ip = format!("10.200.{}.{}", n / 256, n % 256);
        std::fs::write(d.join(&ip), format!("preload{i}\r\neth0")).unwrap();
        last = ip;
    }
    std::fs::write(d.join("last_reserved_ip.0"), last).unwrap();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not: then a smoke run of 3.
    let testing = !std::env::args().any(|a| a == "--bench");
    let release = release_dir();
    let ipam = release.join("berth-ipam");
    let berth = release.join("berth");
    if !ipam.exists() || !berth.exists() || !Path::new(HOST_LOCAL).exists() {
        eprintln!(
            "cni bench skipped: needs {}, {} (cargo build --release -p cni-plugin -p berth) and {HOST_LOCAL} \
             (apt-get install containernetworking-plugins)",
            ipam.display(),
            berth.display()
        );
        return;
    }
    // The static plugin of scripts/build-plugins, measured beside the ordinary one when built.
    let static_ipam = release
        .parent()
        .map(|t| {
            t.join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
                .join("release/berth-ipam")
        })
        .filter(|p| p.exists());
    let n: usize = if testing {
        3
    } else {
        std::env::var("BERTH_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let temp = tempfile::Builder::new()
        .prefix("berth-cni-bench-")
        .tempdir()
        .unwrap();
    // Any existing path will do as CNI_NETNS: no plugin here enters it.
    let netns = temp.path().join("netns");
    std::fs::write(&netns, "").unwrap();

    println!("whole-process CNI ADD/DEL, {n} containers per scenario, medians per invocation");
    println!(
        "{:<46} {:>10} {:>10} {:>10} {:>10}",
        "scenario / contender", "ADD", "DEL", "ADD ratio", "DEL ratio"
    );
    let full = if testing { PRELOAD_SMOKE } else { PRELOAD };
    for (scenario, preload) in [
        ("empty store".to_string(), 0),
        (format!("{full} allocations"), full),
    ] {
        let dir = temp.path().join(if preload > 0 { "full" } else { "empty" });
        let embedded_dir = dir.join("embedded");
        let agent_dir = dir.join("agent");
        let host_local_dir = dir.join("host-local");
        berth_data_dir(&embedded_dir, preload, &rt, &netns);
        berth_data_dir(&agent_dir, preload, &rt, &netns);
        if preload > 0 {
            host_local_preload(&host_local_dir, "bench", preload);
        }
        let socket = dir.join("agent.sock");
        let mut agent = Command::new(&berth)
            .arg("--data-dir")
            .arg(&agent_dir)
            .args(["agent", "--socket"])
            .arg(&socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start berth agent");
        // The agent says so once its socket listens.
        let mut said = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(agent.stdout.take().expect("piped")),
            &mut said,
        )
        .expect("read the agent's first line");
        assert!(
            said.starts_with("berth agent: serving "),
            "berth agent did not start: {said:?}"
        );
        let log = dir.join("berth-ipam.log");
        let mut contenders = vec![
            Contender {
                name: "host-local",
                binary: HOST_LOCAL.into(),
                config: format!(
                    r#"{{"cniVersion":"0.3.1","name":"bench","ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"10.200.0.0/16","gateway":"10.200.0.1"}}]]}}}}"#,
                    host_local_dir.display()
                ),
            },
            Contender {
                name: "berth-ipam (agent)",
                binary: ipam.clone(),
                config: format!(
                    r#"{{"cniVersion":"0.3.1","name":"bench","ipam":{{"type":"berth-ipam","ipam_unix_socket_path":"{}","default_ipv4_ippool":["bench"],"log_file_path":"{}","log_level":"warn"}}}}"#,
                    socket.display(),
                    log.display()
                ),
            },
            Contender {
                name: "berth-ipam (embedded)",
                binary: ipam.clone(),
                config: format!(
                    r#"{{"cniVersion":"0.3.1","name":"bench","ipam":{{"type":"berth-ipam","data_dir":"{}","default_ipv4_ippool":["bench"],"log_file_path":"{}","log_level":"warn"}}}}"#,
                    embedded_dir.display(),
                    log.display()
                ),
            },
        ];
        if let Some(static_ipam) = &static_ipam {
            let config = contenders[1].config.clone();
            contenders.insert(
                2,
                Contender {
                    name: "berth-ipam static (agent)",
                    binary: static_ipam.clone(),
                    config,
                },
            );
        }
        contenders.push(Contender {
            name: "floor: /bin/true",
            binary: "/bin/true".into(),
            config: String::new(),
        });
        let mut add: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
        let mut del: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
        for i in 0..n {
            for (k, c) in contenders.iter().enumerate() {
                add[k].push(c.invoke("ADD", &format!("bench{i}"), &netns));
            }
        }
        for i in 0..n {
            for (k, c) in contenders.iter().enumerate() {
                del[k].push(c.invoke("DEL", &format!("bench{i}"), &netns));
            }
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(agent.id().to_string())
            .status();
        let _ = agent.wait();
        let base = (median(&mut add[0].clone()), median(&mut del[0].clone()));
        for (k, c) in contenders.iter().enumerate() {
            let (a, d) = (median(&mut add[k]), median(&mut del[k]));
            println!(
                "{:<46} {:>8.2}ms {:>8.2}ms {:>10.3} {:>10.3}",
                format!("{scenario}: {}", c.name),
                a.as_secs_f64() * 1e3,
                d.as_secs_f64() * 1e3,
                a.as_secs_f64() / base.0.as_secs_f64(),
                d.as_secs_f64() / base.1.as_secs_f64()
            );
        }
    }
}
